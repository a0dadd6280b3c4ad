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
