//! Runs the built component the way an agent would, from a plugin's own
//! tests (feature `testing`, for `[dev-dependencies]`).
//!
//! Unit tests call `execute` natively, where the host is stood in for;
//! these tests run the real component in the real sandbox: [`build!`]
//! builds the crate for `wasm32-wasip2`, and [`ActionRun`] runs it with
//! `sluice action run --output json` against fixture directories, then
//! answers with the outcome, the output variables, the log and the output
//! files. The `sluice` binary is `SLUICE_BIN` when set, else `sluice` on
//! `PATH`. Python and JavaScript plugins use the same command, whose JSON
//! result is the one [`RunResult`] reads.
//!
//! ```no_run
//! use sluice_plugin_sdk::testing::{self, ActionRun};
//!
//! # fn main() -> Result<(), String> {
//! let wasm = testing::build!()?;
//! let run = ActionRun::new(&wasm)
//!     .config("Name", "world")
//!     .input("src", "tests/fixtures/src")
//!     .output("out")
//!     .run()?;
//! run.assert_succeeded();
//! assert_eq!(run.variable("Greeting"), Some("Hello, world!"));
//! assert!(run.log_contains("Hello, world!"));
//! assert_eq!(run.output_file("out", "greeting.txt")?, "Hello, world!\n");
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Builds the calling crate for `wasm32-wasip2` in release mode and returns
/// the component's path: `build_component(env!("CARGO_MANIFEST_DIR"))`.
///
/// ```no_run
/// let wasm: std::path::PathBuf = sluice_plugin_sdk::testing::build!().unwrap();
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! __testing_build {
    () => {
        $crate::testing::build_component(env!("CARGO_MANIFEST_DIR"))
    };
}

#[doc(inline)]
pub use crate::__testing_build as build;

/// Builds the crate whose manifest is in `manifest_dir` with
/// `cargo build --release --target wasm32-wasip2` (the `CARGO` that runs the
/// tests, its target directory) and returns the `.wasm` it made. The error
/// is cargo's output.
///
/// ```no_run
/// let wasm = sluice_plugin_sdk::testing::build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
/// assert_eq!(wasm.extension().unwrap(), "wasm");
/// ```
pub fn build_component(manifest_dir: impl AsRef<Path>) -> Result<PathBuf, String> {
    let manifest = manifest_dir.as_ref().join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release --target wasm32-wasip2 failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The last cdylib of the package is the component.
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        for file in files.filter_map(Value::as_str) {
            if file.ends_with(".wasm") {
                wasm = Some(PathBuf::from(file));
            }
        }
    }
    wasm.ok_or_else(|| {
        format!(
            "cargo built no .wasm for {}: is the crate a cdylib ([lib] crate-type = [\"cdylib\"])?",
            manifest.display()
        )
    })
}

/// One run of a component under `sluice action run`, built up like a
/// command and started with [`ActionRun::run`].
///
/// ```no_run
/// # use sluice_plugin_sdk::testing::ActionRun;
/// let run = ActionRun::new("target/wasm32-wasip2/release/greeter.wasm")
///     .config("Name", "world")
///     .grant("exec", "git")
///     .secret("TOKEN", "s3cret")
///     .variable("variables.ENV", "test")
///     .run()
///     .unwrap();
/// assert_eq!(run.status(), "Succeeded", "{}", run.message());
/// ```
#[derive(Clone, Debug)]
pub struct ActionRun {
    plugin: PathBuf,
    args: Vec<String>,
    outputs: Vec<String>,
    secrets: Vec<(String, String)>,
}

impl ActionRun {
    /// A run of the component at `plugin`, with no configuration, no
    /// artifacts and no grants.
    pub fn new(plugin: impl AsRef<Path>) -> Self {
        Self {
            plugin: plugin.as_ref().to_path_buf(),
            args: Vec::new(),
            outputs: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// A configuration property (`--config KEY=VALUE`).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.args.extend(["--config".into(), format!("{key}={value}")]);
        self
    }

    /// An input artifact from a fixture directory, mounted read-only. A
    /// relative path is relative to the crate (where `cargo test` runs).
    pub fn input(mut self, name: &str, dir: impl AsRef<Path>) -> Self {
        self.args.extend(["--input".into(), format!("{name}={}", dir.as_ref().display())]);
        self
    }

    /// An output artifact, in a fresh directory [`RunResult::output_file`]
    /// and [`RunResult::output_dir`] read.
    pub fn output(mut self, name: &str) -> Self {
        self.outputs.push(name.to_string());
        self
    }

    /// A grant (`--grant KIND=VALUES`): `exec`, `http`, `secrets`, `env`,
    /// `fs` or `net`, values comma-separated.
    pub fn grant(mut self, kind: &str, values: &str) -> Self {
        self.args.extend(["--grant".into(), format!("{kind}={values}")]);
        self
    }

    /// A secret the run may read, granted with it.
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.push((name.to_string(), value.to_string()));
        self
    }

    /// A variable the plugin sees (`variables.ENV`, `Build.Version`).
    pub fn variable(mut self, name: &str, value: &str) -> Self {
        self.args.extend(["--variable".into(), format!("{name}={value}")]);
        self
    }

    /// Runs it. `Err` when `sluice` could not run it at all (no such binary,
    /// a bad argument, a component it refuses), with what it said; a plugin
    /// that fails is an `Ok` whose [`RunResult::status`] is `Failed`.
    pub fn run(self) -> Result<RunResult, String> {
        let sluice = std::env::var_os("SLUICE_BIN").unwrap_or_else(|| "sluice".into());
        let scratch = scratch_dir()?;
        let mut command = Command::new(&sluice);
        command
            .args(["--output", "json", "action", "run", "--plugin"])
            .arg(&self.plugin)
            .args(&self.args);
        for name in &self.outputs {
            command.arg("--output-dir").arg(format!("{name}={}", scratch.join(name).display()));
        }
        if !self.secrets.is_empty() {
            let names: Vec<&str> = self.secrets.iter().map(|(n, _)| n.as_str()).collect();
            command.arg("--grant").arg(format!("secrets={}", names.join(",")));
        }
        for (name, value) in &self.secrets {
            command.arg("--secret-env").arg(name).env(name, value);
        }
        let out = command.output().map_err(|e| {
            format!("running {sluice:?}: {e} (put sluice on PATH or set SLUICE_BIN)")
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Value>(&stdout) {
            Ok(result) if result.get("status").is_some() => Ok(RunResult { result, scratch }),
            _ => Err(format!(
                "sluice action run did not run the plugin ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
}

/// A directory of its own under the system's temporary directory.
fn scratch_dir() -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "sluice-action-run-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// What `sluice action run --output json` answered: the JSON document
/// (`status`, `summary` or `message`, `outputVariables`, `log`, `outputs`).
#[derive(Clone, Debug)]
pub struct RunResult {
    result: Value,
    scratch: PathBuf,
}

impl RunResult {
    /// `Succeeded` or `Failed`.
    pub fn status(&self) -> &str {
        self.result["status"].as_str().unwrap_or_default()
    }

    /// Panics with the failure message and the log unless the run succeeded.
    pub fn assert_succeeded(&self) {
        assert_eq!(
            self.status(),
            "Succeeded",
            "the action failed: {}\nlog:\n{}",
            self.message(),
            self.log().join("\n")
        );
    }

    /// Panics with the summary unless the run failed, and returns the
    /// failure message.
    pub fn assert_failed(&self) -> &str {
        assert_eq!(self.status(), "Failed", "the action succeeded: {}", self.summary());
        self.message()
    }

    /// The summary of a successful run.
    pub fn summary(&self) -> &str {
        self.result["summary"].as_str().unwrap_or_default()
    }

    /// The failure message of a failed run.
    pub fn message(&self) -> &str {
        self.result["message"].as_str().unwrap_or_default()
    }

    /// Whether a failed run said a retry could succeed.
    pub fn retryable(&self) -> bool {
        self.result["retryable"] == Value::Bool(true)
    }

    /// An output variable of a successful run.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.result["outputVariables"][name].as_str()
    }

    /// The action's log lines, as the pipeline's log would show them.
    pub fn log(&self) -> Vec<&str> {
        let lines = self.result["log"].as_array().into_iter().flatten();
        lines.filter_map(Value::as_str).collect()
    }

    /// Whether any log line contains `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        self.log().iter().any(|line| line.contains(text))
    }

    /// The directory of output artifact `name` (see [`ActionRun::output`]).
    pub fn output_dir(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// The files of output artifact `name`, as paths relative to it, sorted.
    pub fn output_files(&self, name: &str) -> Vec<&str> {
        let files = self.result["outputs"][name]["files"].as_array().into_iter().flatten();
        files.filter_map(Value::as_str).collect()
    }

    /// A file of output artifact `name`, as text.
    pub fn output_file(&self, name: &str, path: &str) -> Result<String, String> {
        let file = self.output_dir(name).join(path);
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))
    }

    /// The whole JSON document.
    pub fn json(&self) -> &Value {
        &self.result
    }
}

impl Drop for RunResult {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
