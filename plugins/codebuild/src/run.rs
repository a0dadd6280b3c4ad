//! Running the phases with CodeBuild's semantics.
//!
//! Which phases run after a failure ([`plan`], pure): a phase's `on-failure`
//! decides when given (`CONTINUE`: the next phase runs; `ABORT`: nothing
//! more runs); otherwise CodeBuild's transitions hold: after a failed
//! `build`, `post_build` still runs; after a failed `install`, `pre_build`
//! or `post_build`, nothing more does. Either way the build fails, and
//! `CODEBUILD_BUILD_SUCCEEDING` is `0` from the failure on. Within a phase
//! the commands run in order up to the first failure, then the `finally`
//! commands run whatever happened, up to their own first failure.
//!
//! Version 0.2 runs every command "in the same instance" of the shell: a
//! variable set or a directory changed by one command is there for the
//! next. Each command is its own granted `sh -c` (so each gets its own log
//! line and exit status), and the shell state is carried in a file in the
//! workspace: the command's script sources it, runs with `set -a` (so that
//! plain assignments are kept, as in one shell), and writes `export -p` and
//! the working directory back on exit.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use sluice_plugin_sdk::process::{Command, host_path};
use sluice_plugin_sdk::{Error, ResultExt, log};

use crate::buildspec::{OnFailure, Phase, PhaseName};

/// The `PATH` commands start with: the host's environment is not passed through.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Sources the state (`$1`), runs the command appended to it with
/// `set -a`, and saves the state again on exit, keeping the exit status.
const PRELUDE: &str = r#". "$1" || exit 125
cd "$__SLUICE_CWD" || exit 125
__sluice_state=$1
shift
trap 'set -- $? "$__sluice_state"; set +a; export __SLUICE_CWD="$PWD"; export -p > "$2"; exit "$1"' EXIT
set -a
"#;

/// How one phase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed(String),
    Skipped,
}

/// Runs `phases` in order through `run_phase(phase, succeeding)`, which
/// answers `None` for success or the failure's message; returns each
/// phase's status.
pub fn plan(
    phases: &[Phase],
    mut run_phase: impl FnMut(&Phase, bool) -> Result<Option<String>, Error>,
) -> Result<Vec<(PhaseName, Status)>, Error> {
    let mut statuses = Vec::new();
    let mut succeeding = true;
    // After a failure: which phase may still run (None: any, by CONTINUE).
    let mut stopped = false;
    let mut only_post_build = false;
    for phase in phases {
        if stopped || (only_post_build && phase.name != PhaseName::PostBuild) {
            statuses.push((phase.name, Status::Skipped));
            continue;
        }
        only_post_build = false;
        match run_phase(phase, succeeding)? {
            None => statuses.push((phase.name, Status::Succeeded)),
            Some(message) => {
                succeeding = false;
                match (phase.on_failure, phase.name) {
                    (Some(OnFailure::Continue), _) => {}
                    (Some(OnFailure::Abort), _) => stopped = true,
                    (None, PhaseName::Build) => only_post_build = true,
                    (None, _) => stopped = true,
                }
                statuses.push((phase.name, Status::Failed(message)));
            }
        }
    }
    Ok(statuses)
}

/// A shell whose state lasts from one command to the next.
pub struct Session {
    shell: String,
    /// The state file, a sandbox path in the workspace.
    state: PathBuf,
    state_host: PathBuf,
    /// Where commands start, a sandbox path (for `cwd`).
    start: PathBuf,
    home: PathBuf,
}

impl Session {
    /// A session starting in `start` (sandbox path) with `env`; the state
    /// is kept in `state` (a sandbox path in the workspace).
    pub fn new(shell: &str, start: &Path, home: &Path, state: PathBuf, env: &[(String, String)]) -> Result<Self, Error> {
        let start_host = host_path(start)?;
        let mut text = String::new();
        for (name, value) in env {
            let _ = writeln!(text, "export {name}={}", quote(value));
        }
        let _ = writeln!(text, "export __SLUICE_CWD={}", quote(&start_host.display().to_string()));
        fs::write(&state, text).with_context(|| format!("writing \"{}\"", state.display()))?;
        Ok(Self {
            shell: shell.to_owned(),
            state_host: host_path(&state)?,
            state,
            start: start.to_path_buf(),
            home: host_path(home)?,
        })
    }

    /// Sets a variable for the commands that follow.
    pub fn set(&self, name: &str, value: &str) -> Result<(), Error> {
        let mut text = fs::read_to_string(&self.state).with_context(|| format!("reading \"{}\"", self.state.display()))?;
        let _ = writeln!(text, "export {name}={}", quote(value));
        fs::write(&self.state, text).with_context(|| format!("writing \"{}\"", self.state.display()))
    }

    /// Runs one command; `None` when it exited with status 0, else why not.
    pub fn command(&self, line: &str) -> Result<Option<String>, Error> {
        log::info(format!("$ {}", line.trim_end()));
        let script = format!("{PRELUDE}{line}\n");
        let output = Command::new(&self.shell)
            .arg("-c")
            .arg(script)
            .arg("sluice-codebuild")
            .arg(&self.state_host)
            .cwd(&self.start)
            .env("PATH", PATH)
            .env("HOME", &self.home)
            .stream_output(true)
            .run()?;
        let first = line.lines().next().unwrap_or_default();
        let shown = if line.trim_end().contains('\n') { format!("{first} ...") } else { first.to_owned() };
        Ok(match output.status {
            Some(0) => None,
            Some(125) => Some(format!("command \"{shown}\" could not restore the shell's state (status 125)")),
            Some(code) => Some(format!("command \"{shown}\" exited with status {code}")),
            None => Some(format!("command \"{shown}\" was killed by a signal")),
        })
    }

    /// Runs a phase: its commands up to the first failure, then its
    /// `finally` commands up to theirs.
    pub fn phase(&self, phase: &Phase) -> Result<Option<String>, Error> {
        let mut failure = None;
        for line in &phase.commands {
            if let Some(why) = self.command(line)? {
                failure = Some(why);
                break;
            }
        }
        for line in &phase.finally {
            if let Some(why) = self.command(line)? {
                failure.get_or_insert(format!("finally: {why}"));
                break;
            }
        }
        Ok(failure)
    }

    /// The values of `names` (valid shell names) in the final state;
    /// unset ones are empty, as CodeBuild exports them.
    pub fn values(&self, names: &[String]) -> Result<Vec<(String, String)>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut script = String::from(". \"$1\" || exit 125\nprintf '%s\\0'");
        for name in names {
            let _ = write!(script, " \"${{{name}-}}\"");
        }
        let output = Command::new(&self.shell)
            .arg("-c")
            .arg(script)
            .arg("sluice-codebuild")
            .arg(&self.state_host)
            .cwd(&self.start)
            .env("PATH", PATH)
            .run_checked()
            .context("reading the exported variables")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let values: Vec<&str> = text.split('\0').collect();
        Ok(names.iter().zip(values).map(|(n, v)| (n.clone(), v.to_owned())).collect())
    }
}

/// `value` in single quotes for a POSIX shell.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildspec::parse;

    fn statuses(spec: &str, failing: &[PhaseName]) -> (Vec<(PhaseName, Status)>, Vec<bool>) {
        let spec = parse(spec).unwrap();
        let mut seen = Vec::new();
        let out = plan(&spec.phases, |phase, succeeding| {
            seen.push(succeeding);
            Ok(failing.contains(&phase.name).then(|| "boom".to_owned()))
        })
        .unwrap();
        (out, seen)
    }

    const ALL: &str = "version: 0.2\nphases:\n  install: {commands: [a]}\n  pre_build: {commands: [a]}\n  build: {commands: [a]}\n  post_build: {commands: [a]}\n";

    fn failed() -> Status {
        Status::Failed("boom".into())
    }

    #[test]
    fn transitions_follow_codebuild() {
        use PhaseName::*;
        use Status::*;
        let (out, seen) = statuses(ALL, &[]);
        assert_eq!(out, [(Install, Succeeded), (PreBuild, Succeeded), (Build, Succeeded), (PostBuild, Succeeded)]);
        assert_eq!(seen, [true; 4]);
        // A failed build still runs post_build, which sees the failure.
        let (out, seen) = statuses(ALL, &[Build]);
        assert_eq!(out, [(Install, Succeeded), (PreBuild, Succeeded), (Build, failed()), (PostBuild, Succeeded)]);
        assert_eq!(seen, [true, true, true, false]);
        // A failed install or pre_build ends the build.
        let (out, _) = statuses(ALL, &[Install]);
        assert_eq!(out, [(Install, failed()), (PreBuild, Skipped), (Build, Skipped), (PostBuild, Skipped)]);
        let (out, _) = statuses(ALL, &[PreBuild]);
        assert_eq!(out, [(Install, Succeeded), (PreBuild, failed()), (Build, Skipped), (PostBuild, Skipped)]);
    }

    #[test]
    fn on_failure_overrides_the_transitions() {
        use PhaseName::*;
        use Status::*;
        let cont = ALL.replace("pre_build: {", "pre_build: {on-failure: CONTINUE, ");
        let (out, seen) = statuses(&cont, &[PreBuild]);
        assert_eq!(out, [(Install, Succeeded), (PreBuild, failed()), (Build, Succeeded), (PostBuild, Succeeded)]);
        assert_eq!(seen, [true, true, false, false]);
        let abort = ALL.replace("  build: {", "  build: {on-failure: ABORT, ");
        let (out, _) = statuses(&abort, &[Build]);
        assert_eq!(out, [(Install, Succeeded), (PreBuild, Succeeded), (Build, failed()), (PostBuild, Skipped)]);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            fs::create_dir_all(root.join("src/sub")).unwrap();
            Fixture { _dir: dir, root }
        }

        fn session(&self, env: &[(&str, &str)]) -> Session {
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Session::new("sh", &self.root.join("src"), &self.root, self.root.join("state.sh"), &env).unwrap()
        }
    }

    #[test]
    fn variables_and_directory_persist_between_commands() {
        let fx = Fixture::new();
        let session = fx.session(&[("GREETING", "it's \"quoted\" $HOME")]);
        for line in [
            "cd sub",
            "PLAIN=one",
            "export EXPORTED=two",
            "unset GONE",
            "echo \"$GREETING|$PLAIN|$EXPORTED|$(pwd)\" > out.txt",
        ] {
            assert_eq!(session.command(line).unwrap(), None, "{line}");
        }
        let out = fs::read_to_string(fx.root.join("src/sub/out.txt")).unwrap();
        assert_eq!(out.trim(), format!("it's \"quoted\" $HOME|one|two|{}", fx.root.join("src/sub").display()));
        session.set("LATER", "x'y").unwrap();
        let names = ["PLAIN", "LATER", "NEVER_SET"].map(String::from);
        assert_eq!(
            session.values(&names).unwrap(),
            [("PLAIN".into(), "one".into()), ("LATER".into(), "x'y".into()), ("NEVER_SET".into(), String::new())]
        );
    }

    #[test]
    fn a_phase_stops_at_its_first_failure_and_runs_finally() {
        let fx = Fixture::new();
        let session = fx.session(&[]);
        let spec = parse(
            "version: 0.2\nphases:\n  build:\n    commands: [touch a, 'exit 3', touch never]\n    finally: [touch f1, 'false', touch f2]\n",
        )
        .unwrap();
        let failure = session.phase(&spec.phases[0]).unwrap();
        assert_eq!(failure.as_deref(), Some("command \"exit 3\" exited with status 3"));
        let src = fx.root.join("src");
        assert!(src.join("a").exists() && src.join("f1").exists());
        assert!(!src.join("never").exists() && !src.join("f2").exists());
        // A failing finally fails a phase whose commands succeeded.
        let spec = parse("version: 0.2\nphases:\n  build:\n    commands: ['true']\n    finally: ['exit 4']\n").unwrap();
        assert_eq!(
            session.phase(&spec.phases[0]).unwrap().as_deref(),
            Some("finally: command \"exit 4\" exited with status 4")
        );
        assert_eq!(session.command("kill -9 $$").unwrap().as_deref(), Some("command \"kill -9 $$\" was killed by a signal"));
        assert_eq!(
            session.command("echo one\nexit 7\n").unwrap().as_deref(),
            Some("command \"echo one ...\" exited with status 7")
        );
    }

    #[test]
    fn bash_keeps_state_too() {
        if std::process::Command::new("bash").arg("-c").arg("true").status().is_err() {
            return; // no bash on this host: nothing to check
        }
        let fx = Fixture::new();
        let env = vec![("START".to_owned(), "a b".to_owned())];
        let session = Session::new("bash", &fx.root.join("src"), &fx.root, fx.root.join("state.sh"), &env).unwrap();
        // Variables carry over; bash arrays and functions cannot be exported, so they do not.
        for line in ["cd sub", "ARR=(one two); X=\"${ARR[1]} $START\"", "[[ $PWD == */sub ]]", "[[ -z ${ARR[1]} ]]"] {
            assert_eq!(session.command(line).unwrap(), None, "{line}");
        }
        assert_eq!(session.values(&["X".to_owned()]).unwrap(), [("X".into(), "two a b".into())]);
    }
}
