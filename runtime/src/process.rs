//! `process.run`: a plugin runs a granted host program.
//!
//! The program runs with a cleared environment (only `PATH`, `HOME` and
//! `TMPDIR`, granted `env` names and what the plugin passes), its working
//! directory inside one of the action's writable mounts, confined by
//! [`crate::sandbox`] (Landlock, and a cgroup or a subreaper that kills
//! whatever it leaves behind), and is stopped with everything it started at
//! the action deadline, on cancel, and when it exits.

use crate::bindings::sluice::plugin::process as wit;
use crate::host::HostState;
use crate::sandbox::{self, Confinement, RunCgroup};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Output kept per stream; more is dropped from memory (it still reaches
/// the log when streamed).
const CAPTURE_LIMIT: usize = 16 << 20;
/// How long output may still arrive after the program exited (from
/// something it started), and how long after a kill we wait for its pipes.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Lines queued between a pipe's reader and the call's loop.
const OUTPUT_QUEUE: usize = 64;

/// Reads a pipe to its end in bounded pieces: each line goes to `send`
/// (without its line ending) as it completes, and a line longer than the
/// log's line limit ([`crate::budget::MAX_LINE_BYTES`]) is split into
/// lines of that size, so that a program writing without a newline
/// (`cat /dev/zero`) holds at most one such piece in memory here. Returns
/// the bytes kept for the plugin, at most [`CAPTURE_LIMIT`] plus a line.
/// Stops early when `send` returns false (nobody listens any more).
fn read_lines(pipe: impl Read, mut send: impl FnMut(String) -> bool) -> Vec<u8> {
    let limit = crate::budget::MAX_LINE_BYTES;
    let mut captured = Vec::new();
    let mut reader = BufReader::with_capacity(limit, pipe);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) if !buf.is_empty() => buf,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = limit - line.len();
        let window = &buf[..buf.len().min(room)];
        let (take, ended) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (window.len(), false),
        };
        line.extend_from_slice(&window[..take]);
        reader.consume(take);
        if ended || line.len() >= limit {
            if captured.len() < CAPTURE_LIMIT {
                captured.extend_from_slice(&line);
            }
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string();
            line.clear();
            if !send(text) {
                return captured;
            }
        }
    }
    if !line.is_empty() {
        if captured.len() < CAPTURE_LIMIT {
            captured.extend_from_slice(&line);
        }
        send(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string());
    }
    captured
}

/// How long a stopped supervisor may take to kill and reap what is left.
const REAP_GRACE: Duration = Duration::from_secs(10);

/// Where granted bare program names are looked up: system directories
/// only, never the job's own.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How a started program is stopped, with everything it started.
struct Stopper {
    pid: u32,
    kind: StopKind,
}

enum StopKind {
    /// Its own process group (what an unconfined program left in it).
    Group,
    /// Its run's cgroup, killed whole.
    Cgroup(RunCgroup),
    /// The supervisor kills and reaps every descendant when this control
    /// pipe closes.
    Supervisor(Option<ChildStdin>),
}

impl Stopper {
    /// Kills the program and everything it started.
    fn stop(&mut self) {
        match &mut self.kind {
            StopKind::Group => {
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            }
            StopKind::Cgroup(cgroup) => cgroup.kill(),
            StopKind::Supervisor(control) => drop(control.take()),
        }
    }

    /// The launcher exited: in a cgroup, whatever is left there is a
    /// leftover of the program, and goes now rather than holding its pipes.
    fn exited(&mut self) {
        if let StopKind::Cgroup(cgroup) = &self.kind {
            cgroup.kill();
        }
    }

    /// Waits for the launcher to be gone, killing it if it does not go.
    fn wait(&mut self, child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
        // A supervisor that was told to stop is killing and reaping the
        // run's descendants: killing it half-way would orphan the rest to
        // init. It gets longer, still bounded.
        let grace = match self.kind {
            StopKind::Supervisor(_) => REAP_GRACE,
            _ => PIPE_GRACE,
        };
        let until = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= until {
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                return child.wait();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub(crate) fn run(state: &mut HostState, cmd: wit::Command) -> Result<wit::Output, String> {
    let program = resolve_granted(&state.grants.exec, &cmd.program)?;
    let sandbox = match &*state.confinement {
        Confinement::Confined(sandbox) => Some(sandbox.clone()),
        Confinement::Unconfined => None,
        Confinement::Refused(why) => {
            return Err(format!("running {:?} is refused: {why}", cmd.program));
        }
    };
    let cwd = match &cmd.cwd {
        Some(dir) => state.host_path(dir, true)?,
        None => state.host_path(crate::host::WORKSPACE, true)?,
    };
    let tmp = state.private_tmp()?;
    // The whole environment: later entries win.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), SEARCH_PATH.into());
    env.insert("HOME".into(), tmp.to_string_lossy().into_owned());
    env.insert("TMPDIR".into(), tmp.to_string_lossy().into_owned());
    for name in &state.grants.env {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.clone(), value);
        }
    }
    env.extend(cmd.env.iter().cloned());
    let (mut child, cgroup) = match &sandbox {
        Some(sandbox) => {
            let access = sandbox::Access {
                read: state.mounts.iter().filter(|m| !m.writable).map(|m| m.host.clone()).collect(),
                write: state.mounts.iter().filter(|m| m.writable).map(|m| m.host.clone()).chain([tmp.clone()]).collect(),
                net: sandbox::parse_net(&state.grants.net)?,
            };
            sandbox::spawn(sandbox, &access, &program, &cmd.args, env.into_iter().collect(), &cwd)
                .map_err(|e| format!("cannot run {:?} confined: {e:#}", cmd.program))?
        }
        None => {
            let child = Command::new(&program)
                .args(&cmd.args)
                .current_dir(&cwd)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot run {:?}: {e}", cmd.program))?;
            (child, None)
        }
    };
    let pid = child.id();
    let mut stopper = Stopper {
        pid,
        kind: match (cgroup, sandbox) {
            (Some(cgroup), _) => StopKind::Cgroup(cgroup),
            (None, Some(_)) => StopKind::Supervisor(child.stdin.take()),
            (None, None) => StopKind::Group,
        },
    };

    // Bounded: a reader waits for the loop below rather than queueing a
    // fast program's whole output in memory.
    let (tx, rx) = mpsc::sync_channel::<(bool, String)>(OUTPUT_QUEUE);
    let readers: Vec<_> = [
        (false, Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>),
        (true, Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|(is_err, pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || read_lines(pipe, |text| tx.send((is_err, text)).is_ok()))
    })
    .collect();
    drop(tx);

    // Read output until the program has exited and its pipes are closed, or
    // the deadline passes. A program may exit while something it started
    // keeps the pipes open (or close them and run on): neither may hold the
    // action past its deadline.
    let mut killed_at_deadline = false;
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut pipes_open = true;
    let mut exited_at: Option<Instant> = None;
    loop {
        if pipes_open {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((is_err, text)) => {
                    if cmd.stream_output {
                        state.emit(&if is_err { format!("stderr: {text}") } else { text });
                    }
                    // No `continue`: a program that never stops writing
                    // must still meet its deadline below.
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => pipes_open = false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        if exited.is_none() {
            exited = child.try_wait().map_err(|e| format!("waiting for {:?}: {e}", cmd.program))?;
            if exited.is_some() {
                exited_at = Some(Instant::now());
                stopper.exited();
            }
        }
        match (exited, pipes_open) {
            (Some(_), false) => break,
            // Exited, but a leftover holds the pipes: give it a moment.
            (Some(_), true) if exited_at.is_some_and(|t| t.elapsed() > PIPE_GRACE) => break,
            _ => {}
        }
        if state.cancel.is_cancelled() && !killed_at_deadline {
            killed_at_deadline = true;
            stopper.stop();
            break;
        }
        if Instant::now() >= state.deadline {
            if !killed_at_deadline {
                killed_at_deadline = true;
                stopper.stop();
            } else if Instant::now() >= state.deadline + PIPE_GRACE {
                break;
            }
        }
    }
    // Whatever the program left running goes with it.
    stopper.stop();
    let status = match exited {
        Some(status) => status,
        None => stopper.wait(&mut child).map_err(|e| format!("waiting for {:?}: {e}", cmd.program))?,
    };
    // A cgroup is removed only once empty.
    drop(stopper);
    // Readers still blocked on a pipe held by an escaped process are left
    // behind rather than waited for.
    // (Once the pipes are closed the readers have ended and are joined.)
    let mut outputs =
        readers.into_iter().map(|r| if !pipes_open || r.is_finished() { r.join().unwrap_or_default() } else { Vec::new() });
    let (stdout, stderr) = (outputs.next().unwrap_or_default(), outputs.next().unwrap_or_default());
    if state.cancel.is_cancelled() {
        return Err(format!("{:?} was killed: the action was cancelled", cmd.program));
    }
    if killed_at_deadline {
        return Err(format!("{:?} was killed at the action deadline", cmd.program));
    }
    if let Some(signal) = status.signal() {
        state.log.line(&format!("{:?} was killed by signal {signal}", cmd.program));
    }
    Ok(wit::Output { status: status.code(), stdout, stderr })
}

/// The program to spawn if it is granted. A bare name is looked up only in
/// [`SEARCH_PATH`]; a bare grant matches that name, or an absolute path
/// that is the same file as the name found there (`/bin/sh` for `sh` where
/// `/bin` is a link to `/usr/bin`), never a program of the same name
/// elsewhere, such as one in the job's workspace. An absolute grant matches
/// only that path. Relative paths are refused: they would resolve against
/// the job's directories.
fn resolve_granted(granted: &[String], program: &str) -> Result<PathBuf, String> {
    if granted.is_empty() {
        return Err(format!("running {program:?} is not permitted: the action has no `exec` grant"));
    }
    let not_permitted =
        || format!("running {program:?} is not permitted: the action's `exec` grant allows only {}", granted.join(", "));
    if !program.contains('/') {
        if !granted.iter().any(|g| g == program) {
            return Err(not_permitted());
        }
        return search(program).ok_or_else(|| format!("program {program:?} was not found in {SEARCH_PATH}"));
    }
    if !program.starts_with('/') {
        return Err(format!("program {program:?} must be a bare name or an absolute path"));
    }
    let same_file = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    let allowed = granted.iter().any(|g| {
        if g.contains('/') { g == program } else { search(g).is_some_and(|found| same_file(&found, Path::new(program))) }
    });
    if !allowed {
        return Err(not_permitted());
    }
    Ok(PathBuf::from(program))
}

/// A bare program name in [`SEARCH_PATH`].
fn search(name: &str) -> Option<PathBuf> {
    SEARCH_PATH.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_line_is_read_in_bounded_pieces() {
        // A real program writing 40 MiB without a newline, then a line.
        let mut child = Command::new("sh")
            .args(["-c", "head -c 41943040 /dev/zero; echo; echo last"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut lines, mut longest, mut last) = (0usize, 0usize, String::new());
        let captured = read_lines(child.stdout.take().unwrap(), |text| {
            lines += 1;
            longest = longest.max(text.len());
            last = text;
            true
        });
        child.wait().unwrap();
        let max = crate::budget::MAX_LINE_BYTES;
        assert_eq!(longest, max, "every piece is at most one log line");
        assert_eq!(lines, (40 << 20) / max + 2, "the long line is split, the rest kept");
        assert_eq!(last, "last");
        assert!(captured.len() <= CAPTURE_LIMIT + max, "{}", captured.len());
    }

    #[test]
    fn only_granted_programs_resolve() {
        let granted = vec!["sh".to_string(), "/usr/bin/env".to_string()];
        assert!(resolve_granted(&granted, "sh").unwrap().ends_with("sh"));
        assert_eq!(resolve_granted(&granted, "/bin/sh").unwrap(), Path::new("/bin/sh"));
        assert_eq!(resolve_granted(&granted, "/usr/bin/env").unwrap(), Path::new("/usr/bin/env"));
        assert!(resolve_granted(&granted, "env").unwrap_err().contains("not permitted"));
        assert!(resolve_granted(&granted, "bash").unwrap_err().contains("allows only sh, /usr/bin/env"));
        assert!(resolve_granted(&[], "sh").unwrap_err().contains("no `exec` grant"));
    }

    #[test]
    fn a_bare_grant_never_matches_a_program_of_that_name_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("sh");
        std::fs::write(&fake, "#!/bin/sh\necho fake\n").unwrap();
        let granted = vec!["sh".to_string()];
        let err = resolve_granted(&granted, fake.to_str().unwrap()).unwrap_err();
        assert!(err.contains("not permitted"), "{err}");
        assert!(resolve_granted(&granted, "./sh").unwrap_err().contains("bare name or an absolute path"));
        // An absolute grant is that path and nothing else.
        let exact = vec![fake.to_string_lossy().into_owned()];
        assert_eq!(resolve_granted(&exact, fake.to_str().unwrap()).unwrap(), fake);
        assert!(resolve_granted(&exact, "sh").unwrap_err().contains("not permitted"));
    }
}
