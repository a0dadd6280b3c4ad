//! The plugin authors' kit across real processes (issue 20): a plugin made
//! by `sluice plugin new` in a directory outside the repository, built
//! against the SDK as `cargo package` packs it (the SDK is not on crates.io:
//! `[patch.crates-io]` points at the extracted package, which proves the
//! packaged crate builds a plugin on its own), its own tests (natively, then
//! the component under `sluice action run`), `sluice plugin check`, a push to
//! a real controller and a pipeline running it on a real agent; and `plugin
//! check` refusing what `plugin push` refuses, in the same words.
//!
//! The generated crate builds in `<target>/kit-projects`, kept across runs,
//! so that only the first run compiles its dependencies.

use sluice_tests::{Cluster, bin, git_pipeline, make_repo, output_text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The target directory of this build (`<target>/debug/sluice` is a binary of it).
fn target_dir() -> PathBuf {
    bin("sluice").parent().and_then(Path::parent).expect("the target directory").to_path_buf()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", output_text(&out));
    out
}

/// `cargo package` of the SDK, extracted into `dir`: the crate as crates.io
/// would serve it.
fn packaged_sdk(dir: &Path) -> PathBuf {
    let target = target_dir().join("kit-package");
    let out = cargo()
        .args(["package", "--no-verify", "--allow-dirty", "--manifest-path"])
        .arg(repo().join("plugin-sdk/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    ok(out, "cargo package");
    let manifest = std::fs::read_to_string(repo().join("plugin-sdk/Cargo.toml")).unwrap();
    let version = manifest.lines().find_map(|l| l.strip_prefix("version = \"")).unwrap().trim_end_matches('"');
    let name = format!("sluice-plugin-sdk-{version}");
    let crate_file = target.join(format!("package/{name}.crate"));
    ok(Command::new("tar").arg("xzf").arg(&crate_file).arg("-C").arg(dir).output().unwrap(), "tar xzf");
    // Only what the package holds: no path back into the repository.
    let packaged = dir.join(&name);
    assert!(packaged.join("wit/plugin.wit").exists() && packaged.join("README.md").exists());
    packaged
}

#[test]
fn a_rust_plugin_from_plugin_new_and_the_packaged_sdk_is_tested_checked_pushed_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let sdk = packaged_sdk(dir.path());
    let sluice = bin("sluice");
    let out = Command::new(&sluice).args(["plugin", "new", "greeter"]).current_dir(dir.path()).output().unwrap();
    let out = ok(out, "plugin new");
    assert!(String::from_utf8_lossy(&out.stdout).contains("cargo build --release --target wasm32-wasip2"));
    let project = dir.path().join("greeter");
    let manifest = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("sluice-plugin-sdk = \"0.2\""), "depends on the SDK by version: {text}");
    std::fs::write(&manifest, format!("{text}\n[patch.crates-io]\nsluice-plugin-sdk = {{ path = {:?} }}\n", sdk.display()))
        .unwrap();

    // Its own tests: natively, then the component under `sluice action run`.
    let projects = target_dir().join("kit-projects");
    let out = cargo()
        .arg("test")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &projects)
        .env("SLUICE_BIN", &sluice)
        .output()
        .unwrap();
    let out = ok(out, "cargo test of the new plugin");
    let said = output_text(&out);
    assert!(said.contains("the_component_greets_and_copies_its_input ... ok"), "{said}");
    assert!(said.contains("greets_into_its_output ... ok"), "{said}");
    let wasm = projects.join("wasm32-wasip2/release/greeter.wasm");
    assert!(wasm.exists(), "{said}");

    // What it declares.
    let out = ok(Command::new(&sluice).arg("plugin").arg("check").arg(&wasm).output().unwrap(), "plugin check");
    let prose = String::from_utf8_lossy(&out.stdout).to_string();
    for line in
        ["greeter@1 (Build)", "built against: sluice:plugin@0.2.0 (world plugin)", "artifacts: inputs 0..1, outputs 0..1"]
    {
        assert!(prose.contains(line), "{line:?} in\n{prose}");
    }
    let out = Command::new(&sluice).args(["--output", "json", "plugin", "check"]).arg(&wasm).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&ok(out, "plugin check --output json").stdout).unwrap();
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(report["digest"], hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    assert_eq!(report["size"], bytes.len());
    assert_eq!(report["info"]["configuration"][0]["name"], "Name");
    assert_eq!(report["info"]["configuration"][0]["required"], true);
    assert!(report["imports"].as_array().unwrap().iter().any(|i| i == "sluice:plugin/log@0.2.0"), "{report}");

    push_and_run_in_a_pipeline(&wasm, "greeter", &["README.md", "greeting.txt"]);
}

/// Pushes the component to a real controller and runs it on a real agent
/// in a pipeline (`git` source, then the plugin with `Name` = team and an
/// output artifact); checks the greeting and the artifact's files.
fn push_and_run_in_a_pipeline(wasm: &Path, provider: &str, files: &[&str]) {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let out = ok(cluster.sluice(&["plugin", "push", wasm.to_str().unwrap()]), "plugin push");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{provider}@1 registered")), "{}", output_text(&out));
    let git = cluster.dir.path().join("repo");
    make_repo(&git, &[("README.md", "hello\n")]);
    let stage = format!(
        r#"{{"name": "Greet", "actions": [{{"name": "Hi", "inputArtifacts": [{{"name": "src"}}],
        "outputArtifacts": [{{"name": "greeted"}}],
        "actionTypeId": {{"category": "Build", "owner": "Custom", "provider": "{provider}", "version": "1"}},
        "configuration": {{"Name": "team"}}}}]}}"#
    );
    let id = cluster.create_pipeline("greet", &git_pipeline("greet", "", &git, &stage));
    let end = cluster.execution_end("greet", &id, sluice_tests::WAIT * 3);
    let state = cluster.sluice_json(&["pipeline", "state", "greet"]).unwrap();
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}\n{state}");
    assert!(state.to_string().contains("Hello, team!"), "{state}");
    // The output artifact, as the agent uploaded it.
    let tar = cluster.dir.path().join("greeted.tar");
    ok(cluster.sluice(&["execution", "artifact", "greet", &id, "greeted", "--to", tar.to_str().unwrap()]), "artifact");
    let listing = run_in(cluster.dir.path(), "tar", &["tf", tar.to_str().unwrap()], &[]);
    for file in files {
        assert!(listing.lines().any(|l| l.trim_start_matches("./") == *file), "{file} in the artifact: {listing}");
    }
}

/// Runs `program` in `dir`, failing with its output.
fn run_in(dir: &Path, program: impl AsRef<std::ffi::OsStr>, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(program.as_ref());
    command.args(args).current_dir(dir);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap_or_else(|e| panic!("{:?} {args:?}: {e}", program.as_ref()));
    output_text(&ok(out, &format!("{:?} {args:?}", program.as_ref())))
}

/// `sluice plugin check` of a component: its JSON report.
fn check(wasm: &Path) -> serde_json::Value {
    let out = Command::new(bin("sluice")).args(["--output", "json", "plugin", "check"]).arg(wasm).output().unwrap();
    serde_json::from_slice(&ok(out, "plugin check").stdout).unwrap()
}

#[test]
fn a_python_plugin_from_plugin_new_and_the_kits_wheel_is_built_checked_tested_pushed_and_run() {
    let dir = tempfile::tempdir().unwrap();
    // The kit as a wheel, installed from the file into the virtualenv that
    // test-plugins/build.rs made with componentize-py (the kit's pinned one).
    let venv = target_dir().join("py-plugins/venv");
    assert!(
        venv.join("bin/componentize-py").exists(),
        "{}",
        sluice_test_plugins::try_test_plugin("wordcount-py").unwrap_err()
    );
    let dist = dir.path().join("dist");
    run_in(
        dir.path(),
        venv.join("bin/python"),
        &[
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            dist.to_str().unwrap(),
            repo().join("kits/python").to_str().unwrap(),
        ],
        &[],
    );
    let wheel = dist.join("sluice_plugin-0.2.0-py3-none-any.whl");
    assert!(wheel.exists());
    let sluice = bin("sluice");
    run_in(
        dir.path(),
        &sluice,
        &["plugin", "new", "pygreet", "--lang", "python", "--sdk-path", wheel.to_str().unwrap()],
        &[],
    );
    let project = dir.path().join("pygreet");
    let requirements = std::fs::read_to_string(project.join("requirements.txt")).unwrap();
    assert!(requirements.starts_with("sluice-plugin @ file://"), "{requirements}");
    run_in(
        &project,
        venv.join("bin/python"),
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
            "-r",
            "requirements.txt",
        ],
        &[],
    );
    let said = run_in(&project, venv.join("bin/python"), &["-m", "sluice_plugin", "build"], &[]);
    assert!(said.contains("wrote plugin.wasm"), "{said}");
    let wasm = project.join("plugin.wasm");
    let report = check(&wasm);
    assert_eq!(report["provider"], "pygreet@1", "{report}");
    assert_eq!(report["interfaceVersion"], "0.2.0", "{report}");
    // Its own tests: execute() in plain Python, then plugin.wasm under `sluice action run`.
    let said = run_in(&project, venv.join("bin/python"), &["-m", "unittest", "-v"], &[("SLUICE_BIN", &sluice)]);
    assert!(
        said.contains("test_the_component_under_sluice_action_run") && said.contains("Ran 2 tests") && said.contains("\nOK"),
        "{said}"
    );
    push_and_run_in_a_pipeline(&wasm, "pygreet", &["README.md", "greeting.txt"]);
}

#[test]
fn a_javascript_plugin_from_plugin_new_and_the_kits_tarball_is_built_checked_tested_pushed_and_run() {
    let dir = tempfile::tempdir().unwrap();
    // The kit as `npm pack` makes it, installed from the file.
    let packed = dir.path().join("packed");
    std::fs::create_dir_all(&packed).unwrap();
    run_in(
        &repo().join("kits/javascript"),
        "npm",
        &["pack", "--silent", "--pack-destination", packed.to_str().unwrap()],
        &[],
    );
    let tarball = packed.join("sluice-plugin-0.2.0.tgz");
    assert!(tarball.exists());
    let sluice = bin("sluice");
    run_in(
        dir.path(),
        &sluice,
        &["plugin", "new", "jsgreet", "--lang", "javascript", "--sdk-path", tarball.to_str().unwrap()],
        &[],
    );
    let project = dir.path().join("jsgreet");
    run_in(&project, "npm", &["install", "--no-audit", "--no-fund", "--prefer-offline"], &[]);
    let said = run_in(&project, "npm", &["run", "build"], &[]);
    assert!(said.contains("wrote plugin.wasm"), "{said}");
    let wasm = project.join("plugin.wasm");
    let report = check(&wasm);
    assert_eq!(report["provider"], "jsgreet@1", "{report}");
    let said = run_in(&project, "npm", &["test"], &[("SLUICE_BIN", &sluice)]);
    assert!(said.contains("# pass 2"), "{said}");
    push_and_run_in_a_pipeline(&wasm, "jsgreet", &["README.md"]);
}

/// The smallest binary of a component or module written as text.
fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

#[test]
fn plugin_check_refuses_what_push_refuses_in_the_same_words() {
    let cluster = Cluster::new().start().unwrap();
    let dir = cluster.dir.path().join("attacker");
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("core-module", wat("(module)"), "plugin is a core WebAssembly module, not a component"),
        ("no-world", wat("(component)"), "does not export sluice:plugin/action"),
        (
            "other-world",
            std::fs::read(sluice_test_plugins::test_plugin("other-world")).unwrap(),
            "does not export sluice:plugin/action",
        ),
        (
            "imports-outside",
            wat(r#"(component (import "acme:evil/steal@1.0.0" (instance (export "run" (func)))))"#),
            "acme:evil/steal@1.0.0",
        ),
        ("junk", b"not wasm at all".to_vec(), "not a usable sluice:plugin component"),
    ];
    for (name, bytes, reason) in cases {
        let file = dir.join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).unwrap();
        let checked = Command::new(bin("sluice")).arg("plugin").arg("check").arg(&file).output().unwrap();
        let pushed = cluster.sluice(&["plugin", "push", file.to_str().unwrap()]);
        assert_eq!(checked.status.code(), Some(2), "{name}: {}", output_text(&checked));
        assert_eq!(pushed.status.code(), Some(2), "{name}: {}", output_text(&pushed));
        let said = String::from_utf8_lossy(&checked.stderr).to_string();
        assert!(said.contains("not a usable sluice:plugin component") && said.contains(reason), "{name}: {said}");
        assert_eq!(said, String::from_utf8_lossy(&pushed.stderr), "{name}: check and push must say the same");
    }
    // Nothing was registered.
    let plugins = cluster.sluice_json(&["plugin", "list"]).unwrap();
    assert!(plugins["plugins"].as_array().unwrap().iter().all(|p| p["builtin"] == true), "{plugins}");
}
