//! `sluice action run`: one plugin run on local directories, in the
//! sandbox an agent uses; no controller needed.

use super::output::s;
use super::{Ctx, Failure, parse_duration};
use crate::action_run::{LocalRun, add_grant, pair};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum ActionCmd {
    /// Run a plugin once on local directories, exactly as an agent would.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A component file (`.wasm`) or a built-in `provider@version`.
    #[arg(long)]
    plugin: String,
    /// Configuration (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// An input artifact directory, mounted read-only (repeatable).
    #[arg(long = "input", value_name = "NAME=DIR")]
    inputs: Vec<String>,
    /// An output artifact directory, created if needed (repeatable).
    /// (`--output` alone is the global output format.)
    #[arg(long = "output-dir", value_name = "NAME=DIR")]
    outputs: Vec<String>,
    /// A grant: exec=PROGRAMS, http=HOST:PORT, secrets=NAMES, env=NAMES, fs=DIRS,
    /// net=tcp:PORT (repeatable).
    #[arg(long = "grant", value_name = "KIND=VALUES")]
    grants: Vec<String>,
    /// A secret value from the environment variable of that name (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_env: Vec<String>,
    /// A variable the plugin sees (repeatable), e.g. variables.ENV=prod.
    #[arg(long = "variable", value_name = "NAME=VALUE")]
    variables: Vec<String>,
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    timeout: Duration,
    /// Linear memory limit in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: usize,
    /// Certificate authorities (PEM) the plugin's HTTPS trusts besides
    /// the Mozilla roots, as `sluice-agent --http-ca`.
    #[arg(long, value_name = "FILE")]
    http_ca: Option<PathBuf>,
    /// Where Landlock is missing, run granted programs unconfined
    /// (with the whole host) instead of refusing them, as
    /// `sluice-agent --allow-unconfined-exec`.
    #[arg(long)]
    allow_unconfined_exec: bool,
}

/// Runs the plugin; exit 0 only if it succeeded.
pub async fn run(ctx: &Ctx, cmd: ActionCmd) -> Result<i32, Failure> {
    let ActionCmd::Run(args) = cmd;
    let request = local_run(args)?;
    let log: std::sync::Arc<dyn sluice_runtime::LogSink> = std::sync::Arc::new(|line: &str| eprintln!("{line}"));
    let (out, ok) = tokio::task::spawn_blocking(move || crate::action_run::run(request, log))
        .await
        .map_err(|e| Failure::new(1, format!("the run crashed: {e}")))?
        .map_err(|e| Failure::new(2, format!("{e:#}")))?;
    ctx.output.print(&out, |out| show_result(out, ok));
    Ok(if ok { 0 } else { 1 })
}

/// A run's result in prose: the summary and output variables, or why it failed.
fn show_result(out: &serde_json::Value, ok: bool) -> String {
    if !ok {
        return format!("Failed: {}\n", s(&out["message"]));
    }
    let mut text = format!("Succeeded: {}\n", s(&out["summary"]));
    for (k, v) in out["outputVariables"].as_object().into_iter().flatten() {
        text.push_str(&format!("  {k} = {}\n", s(v)));
    }
    text
}

/// The run the arguments ask for, checked: bad input is exit code 2.
fn local_run(args: RunArgs) -> Result<LocalRun, Failure> {
    use sluice_runtime::sandbox::{Confinement, ReaperChoice, Unconfined};
    let bad = |m: String| Failure::new(2, m);
    let unconfined = if args.allow_unconfined_exec { Unconfined::Allow } else { Unconfined::Refuse };
    // The `sluice` binary itself is the launcher of confined programs.
    let confinement = std::env::current_exe()
        .map_err(anyhow::Error::from)
        .and_then(|exe| Confinement::detect(exe, ReaperChoice::Auto, unconfined))
        .map_err(|e| Failure::new(1, format!("setting up the sandbox for host programs: {e:#}")))?;
    let http_extra_roots = match &args.http_ca {
        Some(path) => std::fs::read(path).map_err(|e| bad(format!("--http-ca {}: {e}", path.display())))?,
        None => Vec::new(),
    };
    let mut request = LocalRun {
        plugin: args.plugin,
        timeout: args.timeout,
        memory_limit: args.memory_mib << 20,
        http_extra_roots,
        ..LocalRun::default()
    };
    request.confinement = confinement;
    for c in &args.config {
        request.config.push(pair("--config", c).map_err(bad)?);
    }
    for i in &args.inputs {
        let (name, dir) = pair("--input", i).map_err(bad)?;
        request.inputs.push((name, PathBuf::from(dir)));
    }
    for o in &args.outputs {
        let (name, dir) = pair("--output-dir", o).map_err(bad)?;
        request.outputs.push((name, PathBuf::from(dir)));
    }
    for g in &args.grants {
        add_grant(&mut request.grants, g).map_err(bad)?;
    }
    if !request.grants.exec.is_empty() {
        eprintln!("sandbox: {}", request.confinement.describe());
    }
    for name in &args.secret_env {
        let value = std::env::var(name).map_err(|_| bad(format!("--secret-env {name}: the variable is not set")))?;
        request.secrets.insert(name.clone(), value);
    }
    for v in &args.variables {
        request.variables.push(pair("--variable", v).map_err(bad)?);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd, Output};
    use clap::Parser as _;
    use serde_json::{Value, json};

    fn args(extra: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["sluice", "action", "run", "--plugin", "shell@1"], extra].concat()).unwrap();
        let Cmd::Action(ActionCmd::Run(args)) = cli.command else { panic!("not action run") };
        args
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(local_run(args(&["--config", "novalue"])).unwrap_err().code, 2);
        assert_eq!(local_run(args(&["--grant", "teleport=yes"])).unwrap_err().code, 2);
        assert_eq!(local_run(args(&["--secret-env", "SLUICE_TEST_SURELY_UNSET_VARIABLE"])).unwrap_err().code, 2);
        let run = local_run(args(&["--config", "Commands=true", "--variable", "variables.ENV=prod"])).unwrap();
        assert_eq!(run.config, [("Commands".to_string(), "true".to_string())]);
    }

    #[test]
    fn a_result_prints_as_prose_or_json() {
        let out = json!({"summary": "ran 1 command", "outputVariables": {"VERSION": "1.2"}});
        assert_eq!(show_result(&out, true), "Succeeded: ran 1 command\n  VERSION = 1.2\n");
        assert_eq!(show_result(&json!({"message": "exit 1"}), false), "Failed: exit 1\n");
        let printed: Value = serde_json::from_str(&Output::Json.render(&out, |v| show_result(v, true))).unwrap();
        assert_eq!(printed["outputVariables"]["VERSION"], "1.2");
    }
}
