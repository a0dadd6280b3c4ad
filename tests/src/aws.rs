//! The AWS SDKs the AWS-API tests drive Sluice with: real `boto3` and the
//! AWS CLI (`awscli`) from PyPI, in a virtualenv of their own under the
//! target directory. `.ci/run` creates it; a test run without it creates it
//! once (needs `python3` with `venv` and the package index), so that
//! `cargo test --workspace` works on a fresh machine too.

use anyhow::{Context as _, Result, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages, pinned: a test that passes today passes tomorrow.
pub const PACKAGES: &[&str] = &["boto3==1.44.18", "awscli==1.46.3"];

/// The virtualenv's directory: `SLUICE_AWS_VENV`, else `aws-venv` in the
/// target directory the test runs from.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_AWS_VENV") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test> -> target/
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe.ancestors().nth(3).expect("the test runs from target/<profile>/deps");
    target.join("aws-venv")
}

/// The virtualenv's `python`, with boto3 and awscli installed: made on the
/// first call (one process at a time, under a file lock), found after.
pub fn python() -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    if installed(&python) {
        return Ok(python);
    }
    std::fs::create_dir_all(venv.parent().unwrap_or(Path::new("."))).context("create the target directory")?;
    let lock_path = venv.with_extension("lock");
    let lock = File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock().context("lock the aws virtualenv")?;
    if !installed(&python) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv (needs python3 with venv)")?;
        run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PACKAGES),
            &format!("pip install {}", PACKAGES.join(" ")),
        )?;
    }
    Ok(python)
}

/// The AWS CLI of the virtualenv (`aws`), run with its own `python`.
pub fn aws_cli() -> Result<PathBuf> {
    let python = python()?;
    Ok(python.with_file_name("aws"))
}

fn installed(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import boto3, awscli"])
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// An access key of a cluster's user, as `sluice access-key create` prints it.
#[derive(Debug, Clone)]
pub struct AwsKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub user: String,
}

/// The region the tests' SDK clients sign for (any region is accepted).
pub const REGION: &str = "eu-west-1";

/// Creates `user` with `role` (`operator` or `admin`) unless it exists,
/// then an access key for it, through the CLI.
pub fn access_key(cluster: &crate::Cluster, user: &str, role: &str) -> Result<AwsKey> {
    let users = cluster.sluice_json(&["user", "list"])?;
    let exists = users["users"].as_array().is_some_and(|all| all.iter().any(|u| u["name"] == user));
    if !exists {
        cluster.sluice_json(&["user", "create", user, "--role", role])?;
    }
    let key = cluster.sluice_json(&["access-key", "create", "--user", user])?;
    let field = |name: &str| key[name].as_str().map(str::to_string).with_context(|| format!("{name} in {key}"));
    Ok(AwsKey { access_key_id: field("accessKeyId")?, secret_access_key: field("secretAccessKey")?, user: user.to_string() })
}

/// The environment of an SDK or AWS CLI run against `cluster` as `key`:
/// the key, the region, the endpoint and its CA, and no configuration or credential
/// file, profile or instance metadata that could lend other credentials.
pub fn env(cluster: &crate::Cluster, key: &AwsKey) -> Vec<(String, String)> {
    let nothing = cluster.dir.path().join("no-aws-config");
    [
        ("AWS_ACCESS_KEY_ID", key.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", key.secret_access_key.clone()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
        ("AWS_ENDPOINT_URL", cluster.api.clone()),
        // The SDKs verify the controller's certificate against its CA.
        ("AWS_CA_BUNDLE", cluster.ca_file().display().to_string()),
        ("AWS_CONFIG_FILE", nothing.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", nothing.display().to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        // A failed call fails the test at once, not after retries.
        ("AWS_MAX_ATTEMPTS", "1".to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A command with the environment of [`env`], and no `AWS_*` variable of
/// the test's own environment.
fn command(program: &Path, cluster: &crate::Cluster, key: &AwsKey) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command.envs(env(cluster, key));
    command
}

/// The path of a script under `tests/aws/`.
pub fn script_path(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("aws").join(script)
}

/// Runs `tests/aws/<script>` with the virtualenv's python as `key`.
pub fn run_script(cluster: &crate::Cluster, key: &AwsKey, script: &str, args: &[&str]) -> Result<std::process::Output> {
    let python = python()?;
    command(&python, cluster, key).arg(script_path(script)).args(args).output().with_context(|| format!("run {script}"))
}

/// Runs a script that prints one JSON document last; that document.
/// A script that fails is an error with its output.
pub fn script_json(cluster: &crate::Cluster, key: &AwsKey, script: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = run_script(cluster, key, script, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{script} failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{script} printed no JSON last:\n{stdout}"))
}

/// Runs the AWS CLI (`aws ARGS`) as `key`.
pub fn aws(cluster: &crate::Cluster, key: &AwsKey, args: &[&str]) -> Result<std::process::Output> {
    let cli = aws_cli()?;
    let python = python()?;
    // The `aws` script's shebang names the virtualenv's python; run it
    // with that python explicitly so a relocated virtualenv works too.
    command(&python, cluster, key).arg(cli).args(args).output().context("run the aws CLI")
}
