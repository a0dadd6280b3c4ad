//! `process.run`: a plugin runs a granted host program.
//!
//! The program runs in its own process group with a cleared environment
//! (only what the plugin passes plus granted `env` names), its working
//! directory inside one of the action's writable mounts, and is killed with
//! its whole group at the action deadline.

use crate::bindings::sluice::plugin::process as wit;
use crate::host::HostState;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Output kept per stream; more is dropped from memory (it still reaches
/// the log when streamed).
const CAPTURE_LIMIT: usize = 16 << 20;
/// How long output may still arrive after the program exited (from
/// something it started), and how long after a kill we wait for its pipes.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Where granted bare program names are looked up.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub(crate) fn run(state: &mut HostState, cmd: wit::Command) -> Result<wit::Output, String> {
    let program = resolve_granted(&state.grants.exec, &cmd.program)?;
    let cwd = match &cmd.cwd {
        Some(dir) => state.host_path(dir, true)?,
        None => state.host_path(crate::host::WORKSPACE, true)?,
    };
    let mut child = Command::new(&program);
    child.args(&cmd.args).current_dir(&cwd).env_clear().env("PATH", SEARCH_PATH);
    for name in &state.grants.env {
        if let Ok(value) = std::env::var(name) {
            child.env(name, value);
        }
    }
    for (k, v) in &cmd.env {
        child.env(k, v);
    }
    child.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = child.spawn().map_err(|e| format!("cannot run {:?}: {e}", cmd.program))?;
    let pid = child.id();

    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let readers: Vec<_> = [
        (false, Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>),
        (true, Box::new(child.stderr.take().expect("piped")) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|(is_err, pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut captured = Vec::new();
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                if captured.len() < CAPTURE_LIMIT {
                    captured.extend_from_slice(&line);
                }
                let text = String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string();
                if tx.send((is_err, text)).is_err() {
                    break;
                }
                line.clear();
            }
            captured
        })
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
                    continue;
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
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            break;
        }
        if Instant::now() >= state.deadline {
            if !killed_at_deadline {
                killed_at_deadline = true;
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            } else if Instant::now() >= state.deadline + PIPE_GRACE {
                break;
            }
        }
    }
    // Whatever the program left running in its group goes with it.
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let status = match exited {
        Some(status) => status,
        None => child.wait().map_err(|e| format!("waiting for {:?}: {e}", cmd.program))?,
    };
    // Readers still blocked on a pipe held by an escaped process are left
    // behind rather than waited for.
    // (Once the pipes are closed the readers have ended and are joined.)
    let mut outputs = readers
        .into_iter()
        .map(|r| if !pipes_open || r.is_finished() { r.join().unwrap_or_default() } else { Vec::new() });
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

/// The program to spawn if it is granted. A bare granted name matches the
/// same bare name (looked up in a fixed PATH) or any path ending in it; a
/// granted path matches only itself.
fn resolve_granted(granted: &[String], program: &str) -> Result<String, String> {
    if granted.is_empty() {
        return Err(format!("running {program:?} is not permitted: the action has no `exec` grant"));
    }
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    let allowed = granted.iter().any(|g| {
        if g.contains('/') { g == program } else { g == program || (program.starts_with('/') && g == name) }
    });
    if !allowed {
        return Err(format!(
            "running {program:?} is not permitted: the action's `exec` grant allows only {}",
            granted.join(", ")
        ));
    }
    if program.contains('/') {
        return Ok(program.to_string());
    }
    SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| format!("program {program:?} was not found in {SEARCH_PATH}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_programs_resolve() {
        let granted = vec!["sh".to_string(), "/usr/bin/env".to_string()];
        assert!(resolve_granted(&granted, "sh").unwrap().ends_with("/sh"));
        assert_eq!(resolve_granted(&granted, "/bin/sh").unwrap(), "/bin/sh");
        assert_eq!(resolve_granted(&granted, "/usr/bin/env").unwrap(), "/usr/bin/env");
        assert!(resolve_granted(&granted, "env").unwrap_err().contains("not permitted"));
        assert!(resolve_granted(&granted, "bash").unwrap_err().contains("allows only sh, /usr/bin/env"));
        assert!(resolve_granted(&[], "sh").unwrap_err().contains("no `exec` grant"));
    }
}
