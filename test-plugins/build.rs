//! Builds the plugins only tests use: the Rust ones of `../plugins`
//! (`hostile`, `other-world`, `compat-0-1`) with a nested cargo, as the
//! built-ins are built, and the Python and JavaScript examples
//! (`../plugins-py`, `../plugins-js`) with componentize-py from PyPI and
//! componentize-js from npm. Only crates that depend on this one (tests, the
//! benchmark) run it, so that building `sluice` and `sluice-agent` needs no
//! network, Python or Node.
//!
//! The Python and JavaScript plugins are built when their toolchain can be
//! had; when not, the reason is written beside them and the tests that use
//! them fail with it.

#[path = "../controller/builtins/nested_build.rs"]
mod nested_build;

use nested_build::{Nested, copy_if_changed, fail};
use std::fs;
use std::path::Path;
use std::process::Command;

/// Cargo invocations of `../plugins`, each a set of packages built together.
const BUILDS: &[&[&str]] = &[&["hostile", "other-world", "compat-0-1"]];

/// Plugins written in Python (`plugins-py/<name>/app.py`), built with
/// componentize-py into `<name>_py.wasm`.
const PY_PLUGINS: &[&str] = &["wordcount"];

/// The componentize-py release the Python plugins are built with; newer
/// ones may emit component features wasmtime 48 does not take.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Plugins written in JavaScript (`plugins-js/<name>/plugin.js`), built with
/// componentize-js into `<name>_js.wasm`.
const JS_PLUGINS: &[&str] = &["semver"];

/// The componentize-js release, from npm.
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.19.3";

fn main() {
    let mut nested = Nested::new("..");
    nested.build(BUILDS);
    let (repo, out_dir) = (&nested.repo, &nested.out_dir);

    let py_dir = nested.target_dir.with_file_name("py-plugins");
    record(out_dir, "python-plugins.txt", "Python", build_python(repo, &py_dir, out_dir));
    for name in PY_PLUGINS {
        // The module, not its directory: componentize-py writes
        // `__pycache__` there, which would rerun this script every time.
        println!("cargo:rerun-if-changed={}", repo.join("plugins-py").join(name).join("app.py").display());
    }

    let js_dir = nested.target_dir.with_file_name("js-plugins");
    record(out_dir, "js-plugins.txt", "JavaScript", build_js(repo, &js_dir, out_dir));
    println!("cargo:rerun-if-changed={}", repo.join("plugins-js").display());
}

/// Writes why plugins of a language were not built into `report` (and
/// warns), or removes an old report once they are.
fn record(out_dir: &Path, report: &str, language: &str, built: Result<(), String>) {
    let report = out_dir.join(report);
    match built {
        Ok(()) => {
            let _ = fs::remove_file(&report);
        }
        Err(why) => {
            println!("cargo:warning={language} plugins not built: {why}");
            fs::write(&report, &why).unwrap_or_else(|e| fail(&format!("writing {}: {e}", report.display())));
        }
    }
}

/// Builds every JavaScript plugin with componentize-js, installed once
/// from npm under the target directory.
fn build_js(repo: &Path, dir: &Path, out_dir: &Path) -> Result<(), String> {
    let module = dir.join("node_modules/@bytecodealliance/componentize-js/package.json");
    if !module.exists() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(dir)
                .arg(COMPONENTIZE_JS),
            &format!("npm install {COMPONENTIZE_JS}"),
        )?;
    }
    let script = dir.join("build.mjs");
    copy_if_changed(&repo.join("plugins-js/build.mjs"), &script);
    for name in JS_PLUGINS {
        let file = format!("{name}_js.wasm");
        let built = dir.join(&file);
        run(
            Command::new("node")
                .arg(&script)
                .arg(repo.join("plugins-js").join(name).join("plugin.js"))
                .arg(repo.join("wit"))
                .arg(&built)
                .current_dir(dir),
            &format!("componentize-js {name}"),
        )?;
        copy_if_changed(&built, &out_dir.join(&file));
    }
    Ok(())
}

/// Builds every Python plugin with componentize-py from a virtualenv of
/// its own (made once, under the target directory).
fn build_python(repo: &Path, dir: &Path, out_dir: &Path) -> Result<(), String> {
    let venv = dir.join("venv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
        run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", COMPONENTIZE_PY]),
            &format!("pip install {COMPONENTIZE_PY}"),
        )?;
    }
    for name in PY_PLUGINS {
        let file = format!("{name}_py.wasm");
        let built = dir.join(&file);
        run(
            Command::new(&tool)
                .arg("-d")
                .arg(repo.join("wit"))
                .args(["-w", "plugin", "componentize", "-p"])
                .arg(repo.join("plugins-py").join(name))
                .arg("app")
                .arg("-o")
                .arg(&built)
                .current_dir(dir),
            &format!("componentize-py {name}"),
        )?;
        copy_if_changed(&built, &out_dir.join(&file));
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}
