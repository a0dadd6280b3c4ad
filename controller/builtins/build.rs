//! Builds the plugins workspace (`../../plugins`) for wasm32-wasip2 with a
//! nested cargo, as wasmtime's `crates/test-programs/artifacts/build.rs`
//! does, and copies the components into `OUT_DIR` for `include_bytes!`.
//!
//! The nested build has its own target directory, `<target>/wasm-plugins`,
//! shared by every profile of the outer build and kept across rebuilds so
//! that it is incremental. `git` is built in a second invocation: it enables
//! the SDK's `source` feature, which would otherwise unify into the others.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";

/// Cargo invocations, each a set of packages built together; every package
/// is a component (the `.wasm` file uses `_` for `-`).
const BUILDS: &[&[&str]] = &[
    &[
        "noop",
        "shell",
        "deploy-dir",
        "http",
        "webhook-notify",
        "hostile",
        "other-world",
        "compat-0-1",
    ],
    &["git"],
];


/// Plugins written in Python (`plugins-py/<name>/app.py`), built with
/// componentize-py into `<name>_py.wasm` for the tests.
const PY_PLUGINS: &[&str] = &["wordcount"];

/// The componentize-py release the Python plugins are built with; newer
/// ones may emit component features wasmtime 48 does not take.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// Plugins written in JavaScript (`plugins-js/<name>/plugin.js`), built with
/// componentize-js into `<name>_js.wasm` for the tests.
const JS_PLUGINS: &[&str] = &["semver"];

/// The componentize-js release, from npm.
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.19.3";

/// Variables the outer cargo sets that must not reach the nested one: they
/// describe the host build (flags, target, target directory, wrappers).
/// `CARGO_MAKEFLAGS` stays, so that the nested cargo joins the jobserver.
const LEAKING_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_PATH",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let repo = manifest_dir.join("../..");
    let plugins = repo.join("plugins");

    check_target();
    let mut watched = BTreeSet::new();
    watch_sources(&repo, &plugins, &mut watched);

    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out_dir.join("wasm-plugins"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for packages in BUILDS {
        let mut command = Command::new(&cargo);
        command
            .arg("build")
            .arg("--release")
            .arg("--locked")
            .arg(format!("--target={TARGET}"))
            .arg("--manifest-path")
            .arg(plugins.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        for package in *packages {
            command.arg("--package").arg(package);
        }
        for var in LEAKING_ENV {
            command.env_remove(var);
        }
        eprintln!("running: {command:?}");
        let status = command
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
        if !status.success() {
            fail(&format!(
                "building plugins {packages:?} for {TARGET} failed ({status})"
            ));
        }
    }

    let built = target_dir.join(TARGET).join("release");
    for name in BUILDS.iter().flat_map(|packages| packages.iter()) {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let from = built.join(&file);
        copy_if_changed(&from, &out_dir.join(&file));
        read_deps_of(&from.with_extension("d"), &mut watched);
    }

    let py_dir = target_dir.with_file_name("py-plugins");
    let report = out_dir.join("python-plugins.txt");
    match build_python(&repo, &py_dir, &out_dir) {
        Ok(()) => {
            let _ = fs::remove_file(&report);
        }
        Err(why) => {
            // The Rust plugins are enough to build Sluice; the tests of the
            // Python plugins fail with this reason.
            println!("cargo:warning=Python plugins not built: {why}");
            fs::write(&report, &why).unwrap_or_else(|e| fail(&format!("writing {}: {e}", report.display())));
        }
    }
    for name in PY_PLUGINS {
        println!("cargo:rerun-if-changed={}", repo.join("plugins-py").join(name).display());
    }

    let js_dir = target_dir.with_file_name("js-plugins");
    let report = out_dir.join("js-plugins.txt");
    match build_js(&repo, &js_dir, &out_dir) {
        Ok(()) => {
            let _ = fs::remove_file(&report);
        }
        Err(why) => {
            println!("cargo:warning=JavaScript plugins not built: {why}");
            fs::write(&report, &why).unwrap_or_else(|e| fail(&format!("writing {}: {e}", report.display())));
        }
    }
    println!("cargo:rerun-if-changed={}", repo.join("plugins-js").display());
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

/// Fails with the message users need when the target is not installed.
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).args(["--print", "sysroot"]).output();
    let sysroot = match output {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => return, // Let the nested build report whatever is wrong.
    };
    if !sysroot.join("lib/rustlib").join(TARGET).exists() {
        fail("wasm32-wasip2 target missing: run rustup target add wasm32-wasip2");
    }
}

/// Reruns this script when a plugin, the SDK or the WIT changes. Only
/// sources and manifests are watched: a watched directory is scanned
/// recursively, and the nested target directories change on every build.
fn watch_sources(repo: &Path, plugins: &Path, watched: &mut BTreeSet<String>) {
    let mut watch = |path: PathBuf| {
        let path = path.display().to_string();
        if watched.insert(path.clone()) {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    watch(plugins.join("Cargo.toml"));
    watch(plugins.join("Cargo.lock"));
    let entries = fs::read_dir(plugins)
        .unwrap_or_else(|e| fail(&format!("reading \"{}\": {e}", plugins.display())));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join("Cargo.toml").is_file() {
            watch(path.join("Cargo.toml"));
            watch(path.join("src"));
        }
    }
    watch(repo.join("plugin-sdk/Cargo.toml"));
    watch(repo.join("plugin-sdk/src"));
    watch(repo.join("wit"));
}

/// Watches every file a component was compiled from, as listed in its
/// dep-info (`.d`) file, the Makefile-like format cargo writes.
fn read_deps_of(deps_file: &Path, watched: &mut BTreeSet<String>) {
    let Ok(contents) = fs::read_to_string(deps_file) else {
        return;
    };
    for line in contents.lines() {
        let Some(pos) = line.find(": ") else { continue };
        let mut parts = line[pos + 2..].split_whitespace();
        while let Some(part) = parts.next() {
            let mut file = part.to_owned();
            // A backslash escapes a space inside a path.
            while file.ends_with('\\') {
                file.pop();
                file.push(' ');
                file.push_str(parts.next().unwrap_or_default());
            }
            if watched.insert(file.clone()) {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}

/// Copies `from` to `to` unless `to` already has the same bytes, so that an
/// unchanged plugin does not change this crate's inputs.
fn copy_if_changed(from: &Path, to: &Path) {
    let bytes =
        fs::read(from).unwrap_or_else(|e| fail(&format!("reading \"{}\": {e}", from.display())));
    if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(to, &bytes)
            .unwrap_or_else(|e| fail(&format!("writing \"{}\": {e}", to.display())));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
