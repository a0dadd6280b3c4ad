//! The web console's browser tests (issue 16): scenarios written for
//! Node's test runner under `tests/console/`, driving Debian's headless
//! Chromium with Playwright (`playwright-core` from npm, no browser of its
//! own) against a real cluster. The Rust test prepares the cluster (users,
//! tokens, pipelines, runs), runs one scenario file with the cluster's
//! address, CA and tokens in its environment, and fails with the
//! scenario's output when the scenario fails.
//!
//! `.ci/run` installs Chromium and the npm packages (`npm ci`, pinned by
//! `tests/console/package-lock.json`); a test run without them installs
//! the packages once itself (needs `npm` and the package registry) and
//! fails clearly without `npm` or Chromium.

use anyhow::{Context as _, Result, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where Debian installs Chromium; `SLUICE_CHROMIUM` overrides it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one scenario file may run before it is killed and failed.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// The directory of the Node side: `package.json`, the lock file, the
/// scenarios.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// The Chromium the scenarios launch.
pub fn chromium() -> PathBuf {
    std::env::var_os("SLUICE_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from)
}

/// The target directory the test runs from (`CARGO_TARGET_DIR`, else the
/// one above `target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("the test runs from target/<profile>/deps").to_path_buf()
}

/// Where the scenarios save their screenshots:
/// `$CARGO_TARGET_DIR/console-screenshots/`.
pub fn screenshots_dir() -> PathBuf {
    target_dir().join("console-screenshots")
}

/// Makes sure `node`, `npm`, Chromium and the npm packages are there:
/// runs `npm ci` once (one process at a time, under a file lock) when
/// `node_modules` lacks them.
pub fn prepare() -> Result<()> {
    for (tool, why) in [("node", "the console's browser tests run on Node"), ("npm", "npm installs Playwright and axe-core")]
    {
        let found = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            bail!("{tool} is missing: {why} (apt-get install nodejs npm, or run .ci/run)");
        }
    }
    let chromium = chromium();
    if !chromium.exists() {
        bail!(
            "{} is missing: the console's browser tests drive Debian's Chromium (apt-get install chromium, or run .ci/run)",
            chromium.display()
        );
    }
    if installed() {
        return Ok(());
    }
    let target = target_dir();
    std::fs::create_dir_all(&target).context("create the target directory")?;
    let lock_path = target.join("console-npm.lock");
    let lock = File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock().context("lock the console's node_modules")?;
    if !installed() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir())
            .output()
            .context("run npm ci in tests/console")?;
        if !out.status.success() {
            bail!(
                "npm ci in tests/console failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

fn installed() -> bool {
    let modules = dir().join("node_modules");
    modules.join("playwright-core/package.json").exists() && modules.join("axe-core/axe.min.js").exists()
}

/// One browser at a time in this test process: two cores run the
/// controller, the agents and Chromium, and timing-sensitive scenarios
/// (a log followed while it is written) should not starve each other.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// What a scenario needs to reach a cluster: its console's address, the
/// CA its certificate chains to, the CLI and its environment, and the
/// tokens of the users it acts as (`SLUICE_TOKEN_<NAME>`).
pub struct Scenario<'a> {
    cluster: &'a crate::Cluster,
    env: Vec<(String, String)>,
}

impl<'a> Scenario<'a> {
    pub fn new(cluster: &'a crate::Cluster) -> Self {
        Self { cluster, env: Vec::new() }
    }

    /// The token of user `name`, as `SLUICE_TOKEN_<NAME>` (upper case).
    pub fn token(self, name: &str, token: &str) -> Self {
        self.env(&format!("SLUICE_TOKEN_{}", name.to_uppercase()), token)
    }

    /// Any other variable the scenario reads.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs `tests/console/<file>` with Node's test runner; its output
    /// (the spec reporter's) when every test passed, else an error with
    /// that output and the controller's log.
    pub fn run(self, file: &str) -> Result<String> {
        prepare()?;
        let shots = screenshots_dir();
        std::fs::create_dir_all(&shots).with_context(|| format!("create {}", shots.display()))?;
        let cluster = self.cluster;
        let log = cluster.dir.path().join(format!("{file}.out"));
        let _one = ONE_BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut child = Command::new("node")
            .args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
            .arg(format!("--test-timeout={}", (SCENARIO_TIMEOUT - Duration::from_secs(20)).as_millis()))
            .arg(file)
            .current_dir(dir())
            .env("SLUICE_CONSOLE_URL", &cluster.api)
            .env("SLUICE_API", &cluster.api)
            .env("SLUICE_CA", cluster.ca_file())
            .env("SLUICE_TOKEN", &cluster.token)
            .env("SLUICE_TOKEN_ADMIN", &cluster.token)
            .env("SLUICE_CONFIG", cluster.dir.path().join("profiles.json"))
            .env_remove("SLUICE_PROFILE")
            .env("SLUICE_BIN", crate::bin("sluice"))
            .env("SLUICE_CHROMIUM", chromium())
            .env("SLUICE_SCREENSHOTS", &shots)
            .env("SLUICE_WORK_DIR", cluster.dir.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(File::create(&log).context("create the scenario's output file")?)
            .stderr(Stdio::from(File::options().append(true).open(&log)?))
            .spawn()
            .context("start node --test")?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() > SCENARIO_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let where_shots = format!("screenshots: {}", shots.display());
        match status {
            Some(s) if s.success() => Ok(format!("{output}\n{where_shots}")),
            Some(s) => bail!(
                "console scenario {file} failed ({s}):\n{output}\n{where_shots}\n--- controller log (tail) ---\n{}",
                tail(&cluster.controller_log(), 60)
            ),
            None => bail!(
                "console scenario {file} ran over {} s and was killed:\n{output}\n{where_shots}\n--- controller log (tail) ---\n{}",
                SCENARIO_TIMEOUT.as_secs(),
                tail(&cluster.controller_log(), 60)
            ),
        }
    }
}

/// The last `lines` lines of a log, without its colour codes.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    plain(&all[all.len().saturating_sub(lines)..].join("\n"))
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_tail_loses_its_colours_and_keeps_its_text() {
        let log = "one\n\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m started\nthree";
        assert_eq!(super::tail(log, 2), "2026  INFO started\nthree");
    }
}
