//! `sluice action run`: one action, locally, in the same sandbox an agent
//! uses (the `sluice-runtime` crate), for plugin authors and for debugging
//! a failed action. No controller, no agent: the plugin is a file or a
//! built-in, inputs and outputs are directories given on the command line,
//! and grants are exactly those given with `--grant` (intersected with what
//! the plugin declares, as the controller does).

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use sluice_runtime::{Grants, Invocation, LogSink, Outcome, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `sluice action run` was asked.
#[derive(Debug, Clone, Default)]
pub struct LocalRun {
    /// A `.wasm` file, or `provider@version` of a built-in.
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub inputs: Vec<(String, PathBuf)>,
    pub outputs: Vec<(String, PathBuf)>,
    pub grants: Grants,
    pub secrets: BTreeMap<String, String>,
    pub variables: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_limit: usize,
    /// Extra certificate authorities (PEM) for the plugin's HTTPS.
    pub http_extra_roots: Vec<u8>,
    /// How granted programs run: as on an agent, confined
    /// ([`sluice_runtime::sandbox::Confinement::detect`]).
    pub confinement: sluice_runtime::sandbox::Confinement,
}

/// `exec=sh,git` to the grant it names.
pub fn add_grant(grants: &mut Grants, spec: &str) -> Result<(), String> {
    let (kind, values) = spec
        .split_once('=')
        .ok_or_else(|| format!("--grant {spec:?} must be KIND=VALUE[,VALUE...] (exec, http, secrets, env, fs, net)"))?;
    let list: Vec<String> = values.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
    let target = match kind {
        "exec" => &mut grants.exec,
        "http" => &mut grants.http,
        "secrets" => &mut grants.secrets,
        "env" => &mut grants.env,
        "fs" => &mut grants.fs,
        "net" => &mut grants.net,
        other => return Err(format!("unknown grant kind {other:?}; kinds are exec, http, secrets, env, fs, net")),
    };
    if kind == "http" {
        sluice_runtime::net::parse_grants(&list)?;
    }
    if kind == "net" {
        sluice_runtime::sandbox::parse_net(&list)?;
    }
    target.extend(list);
    Ok(())
}

/// `NAME=DIR` (or `NAME=VALUE`) pairs.
pub fn pair(flag: &str, spec: &str) -> Result<(String, String), String> {
    spec.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{flag} {spec:?} must be NAME=VALUE"))
}

fn plugin_bytes(plugin: &str) -> Result<Vec<u8>> {
    let path = PathBuf::from(plugin);
    if plugin.ends_with(".wasm") || path.exists() {
        return std::fs::read(&path).with_context(|| format!("reading plugin {}", path.display()));
    }
    let (provider, _version) = plugin.split_once('@').unwrap_or((plugin, "1"));
    match sluice_builtins::BUILTINS.iter().find(|b| b.provider == provider) {
        Some(b) => Ok(b.wasm.to_vec()),
        None => {
            let known: Vec<&str> = sluice_builtins::BUILTINS.iter().map(|b| b.provider).collect();
            bail!("{plugin:?} is neither a .wasm file nor a built-in plugin ({})", known.join(", "))
        }
    }
}

/// Runs the action; log lines go to `log` as they come. Returns the outcome
/// as JSON and whether it succeeded. The JSON also holds the log (`log`,
/// its lines) and the files of each output (`outputs.NAME.files`), so that a
/// plugin's own tests, in any language, can assert on one document.
pub fn run(request: LocalRun, log: Arc<dyn LogSink>) -> Result<(Value, bool)> {
    let bytes = plugin_bytes(&request.plugin)?;
    // The runtime bounds an action's log (8 MiB per call), so keeping it is bounded too.
    let kept = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = kept.clone();
    let log: Arc<dyn LogSink> = Arc::new(move |line: &str| {
        keep.lock().expect("log lock").push(line.to_string());
        log.line(line);
    });
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit: request.memory_limit,
        http_extra_roots: request.http_extra_roots.clone(),
        confinement: request.confinement.clone(),
        // Plugin authors' kit (issue 20, kit): a test loop compiles a component once.
        cache_dir: crate::plugin_check::local_cache_dir(),
        ..Default::default()
    })?;
    let plugin = runtime.load(&bytes, None)?;
    let info = runtime.describe(&plugin)?;
    // The plugin gets what both it declares and the command line grants.
    let grants = sluice_runtime::consent(&info.capabilities, &request.grants);
    for (name, dir) in &request.inputs {
        if !dir.is_dir() {
            bail!("input {name}: {} is not a directory", dir.display());
        }
    }
    let mut outputs = Vec::new();
    for (name, dir) in &request.outputs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating output {name} at {}", dir.display()))?;
        outputs.push((name.clone(), dir.clone(), Vec::new()));
    }
    let scratch = tempfile::Builder::new().prefix("sluice-action-").tempdir().context("creating a workspace")?;
    let invocation = Invocation {
        pipeline: "local".into(),
        execution_id: "local".into(),
        stage: "Local".into(),
        action: info.name.clone(),
        attempt: 1,
        configuration: request.config,
        variables: request.variables,
        inputs: request.inputs,
        outputs,
        workspace: scratch.path().to_path_buf(),
        grants: grants.clone(),
        secrets: request.secrets,
        timeout: request.timeout,
        cancel: Default::default(),
    };
    let outcome = runtime.run_action(&plugin, &invocation, log);
    let granted = json!({ "exec": grants.exec, "http": grants.http, "secrets": grants.secrets, "env": grants.env, "fs": grants.fs, "net": grants.net });
    let (mut result, ok) = outcome_json(outcome, &info, granted);
    result["log"] = json!(std::mem::take(&mut *kept.lock().expect("log lock")));
    let mut files = serde_json::Map::new();
    for (name, dir, _) in &invocation.outputs {
        files.insert(name.clone(), json!({ "dir": dir, "files": relative_files(dir)? }));
    }
    result["outputs"] = Value::Object(files);
    Ok((result, ok))
}

/// The files under `dir` (not directories), as sorted `/`-separated paths
/// relative to it; symbolic links are listed, not followed.
fn relative_files(dir: &std::path::Path) -> Result<Vec<String>> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// The outcome as `action run` prints it, and whether it succeeded.
fn outcome_json(outcome: Outcome, info: &sluice_runtime::ActionInfo, granted: Value) -> (Value, bool) {
    match outcome {
        Outcome::Succeeded { summary, output_variables, external_url } => (
            json!({ "plugin": format!("{}@{}", info.name, info.version), "status": "Succeeded", "summary": summary,
                    "outputVariables": output_variables, "externalUrl": external_url, "grants": granted }),
            true,
        ),
        Outcome::Failed { message, retryable } => (
            json!({ "plugin": format!("{}@{}", info.name, info.version), "status": "Failed", "message": message,
                    "retryable": retryable, "grants": granted }),
            false,
        ),
        Outcome::InProgress { .. } => unreachable!("run_action waits out in-progress outcomes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_plugin_runs_locally_with_exactly_the_grants_given() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(input.join("name.txt"), "world\n").unwrap();
        let out = dir.path().join("out");
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let log: Arc<dyn LogSink> = Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string()));
        let mut grants = Grants::default();
        add_grant(&mut grants, "exec=sh").unwrap();
        let request = LocalRun {
            plugin: "shell@1".into(),
            config: vec![("Commands".into(), "echo hello $(cat name.txt)\nmkdir -p x && echo made > x/file".into())],
            inputs: vec![("src".into(), input.clone())],
            outputs: vec![("made".into(), out.clone())],
            grants,
            timeout: Duration::from_secs(60),
            memory_limit: 256 << 20,
            // Confinement needs the `sluice` binary as its launcher, which
            // a unit test does not have: the runtime's and the cluster's
            // tests cover it.
            confinement: sluice_runtime::sandbox::Confinement::Unconfined,
            ..LocalRun::default()
        };
        let (value, ok) = run(request.clone(), log).unwrap();
        assert!(ok, "{value}");
        assert!(lines.lock().unwrap().iter().any(|l| l.contains("hello world")), "{:?}", lines.lock().unwrap());

        // Without the exec grant the plugin cannot run sh, and says so.
        let quiet: Arc<dyn LogSink> = Arc::new(|_: &str| {});
        let (value, ok) = run(LocalRun { grants: Grants::default(), ..request }, quiet).unwrap();
        assert!(!ok);
        assert!(value["message"].as_str().unwrap().contains("exec"), "{value}");

        assert!(add_grant(&mut Grants::default(), "root=all").unwrap_err().contains("unknown grant kind"));
        assert!(add_grant(&mut Grants::default(), "http=example.com").unwrap_err().contains("not HOST:PORT"));
        add_grant(&mut Grants::default(), "http=api.example.com:443,10.0.0.0/8:*").unwrap();
        assert!(add_grant(&mut Grants::default(), "net=db:5432").unwrap_err().contains("unknown kind \"db\""));
        add_grant(&mut Grants::default(), "net=tcp:5432,tcp-bind:0").unwrap();
        assert!(plugin_bytes("nope@1").unwrap_err().to_string().contains("neither"));
    }
}
