//! Running host programs, and mapping sandbox paths to host paths for them.
//!
//! A program runs only if the plugin declares it in `exec`, the pipeline
//! action grants it and the agent permits it; otherwise [`Command::run`]
//! fails with the host's reason. The program sees only the environment set
//! here (plus host variables granted with `env`), so set `PATH` and `HOME`
//! when the program needs them. Its working directory is a sandbox path that
//! must lie in a writable directory of the action (workspace or an output);
//! arguments are passed as they are, so a path handed to the program must be
//! a host path: see [`host_path`].

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, host};

/// How many trailing lines of stderr a failure message quotes.
const FAILURE_TAIL_LINES: usize = 10;

/// A host program to run, built with chained calls.
///
/// ```no_run
/// use sluice_plugin_sdk::process::Command;
/// # fn f(workspace: &std::path::Path) -> Result<(), sluice_plugin_sdk::Error> {
/// let out = Command::new("git")
///     .args(["rev-parse", "HEAD"])
///     .cwd(workspace)
///     .env("GIT_TERMINAL_PROMPT", "0")
///     .run_checked()?;
/// let commit = out.stdout_text();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    stream_output: bool,
}

impl Command {
    /// A command running `program` (a name looked up in the `PATH` given
    /// with [`Command::env`], or a path) with no arguments.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: lossy(program),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stream_output: false,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(lossy(arg));
        self
    }

    /// Adds arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(lossy));
        self
    }

    /// Sets the working directory, a sandbox path inside the workspace or an
    /// output artifact; the host maps it.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, name: impl Into<String>, value: impl AsRef<OsStr>) -> Self {
        let name = name.into();
        let value = lossy(value);
        match self.env.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = value,
            None => self.env.push((name, value)),
        }
        self
    }

    /// Sets several environment variables.
    pub fn envs<K: Into<String>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (name, value) in vars {
            self = self.env(name, value);
        }
        self
    }

    /// Streams stdout and stderr into the action log as they come (they are
    /// still returned in [`Output`]).
    pub fn stream_output(mut self, stream: bool) -> Self {
        self.stream_output = stream;
        self
    }

    /// The command line, for messages: `git fetch --depth 1 origin main`.
    pub fn display(&self) -> impl fmt::Display + '_ {
        CommandLine(self)
    }

    /// Runs the program to its end.
    ///
    /// `Err` means it could not run at all (not granted, not found, bad
    /// working directory); a program that ran and failed is `Ok` with its
    /// status: see [`Command::run_checked`].
    pub fn run(&self) -> Result<Output, Error> {
        let command = host::Command {
            program: self.program.clone(),
            args: self.args.clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            stream_output: self.stream_output,
        };
        let output = host::run(&command)
            .map_err(|e| Error::new(format!("command \"{}\": {e}", self.display())))?;
        Ok(Output {
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    /// Runs the program and fails unless it exits with status 0:
    /// `command "git fetch origin" exited with status 128: fatal: ...` (the
    /// last lines of stderr, or of stdout when stderr is empty).
    pub fn run_checked(&self) -> Result<Output, Error> {
        let output = self.run()?;
        if output.success() {
            return Ok(output);
        }
        let mut message = match output.status {
            Some(code) => format!("command \"{}\" exited with status {code}", self.display()),
            None => format!("command \"{}\" was killed by a signal", self.display()),
        };
        let tail = tail_lines(&output.stderr, FAILURE_TAIL_LINES);
        let tail = if tail.is_empty() {
            tail_lines(&output.stdout, FAILURE_TAIL_LINES)
        } else {
            tail
        };
        if !tail.is_empty() {
            message.push_str(": ");
            message.push_str(&tail);
        }
        Err(Error::new(message))
    }
}

struct CommandLine<'a>(&'a Command);

impl fmt::Display for CommandLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.program)?;
        for arg in &self.0.args {
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                write!(f, " {arg:?}")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// What a program did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The exit code, or `None` when the program was killed by a signal.
    pub status: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as text (invalid UTF-8 replaced), surrounding whitespace trimmed.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced), surrounding whitespace trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// The host path of a sandbox path, for handing it to a program as an
/// argument or in its environment. Fails for paths outside the directories
/// the host gave the action.
pub fn host_path(path: impl AsRef<Path>) -> Result<PathBuf, Error> {
    let path = path.as_ref().to_string_lossy();
    host::host_path(&path)
        .map(PathBuf::from)
        .map_err(|e| Error::new(format!("host path of \"{path}\": {e}")))
}

fn lossy(s: impl AsRef<OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

/// The last `n` non-blank lines of `bytes`, joined by newlines.
fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_arguments_with_spaces() {
        let cmd = Command::new("git").args(["commit", "-m", "two words", ""]);
        assert_eq!(cmd.display().to_string(), r#"git commit -m "two words" """#);
    }

    #[test]
    fn env_replaces_and_tail_keeps_last_lines() {
        let cmd = Command::new("x").env("A", "1").env("B", "2").env("A", "3");
        assert_eq!(
            cmd.env,
            [
                ("A".to_owned(), "3".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(tail_lines(b"a\n\nb\nc\n", 2), "b\nc");
    }

    #[cfg(unix)]
    #[test]
    fn run_checked_reports_status_and_stderr() {
        let err = Command::new("/bin/sh")
            .args([
                "-c",
                "echo one >&2; echo fatal: no such remote >&2; exit 128",
            ])
            .run_checked()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "command \"/bin/sh -c \"echo one >&2; echo fatal: no such remote >&2; exit 128\"\" exited with status 128: one\nfatal: no such remote"
        );
        let ok = Command::new("/bin/sh")
            .args(["-c", "echo $GREETING"])
            .env("GREETING", "hi")
            .run_checked()
            .unwrap();
        assert_eq!(ok.stdout_text(), "hi");
    }
}
