//! Granted programs run confined: a real `sh`, granted to the `hostile`
//! test plugin, tries every way out of the sandbox (`sluice_runtime::sandbox`)
//! and each attempt fails; the same attempt run unconfined succeeds, which
//! shows that it is the confinement that stops it.
//!
//! The launcher is the `sluice-sandbox` binary of this crate, as the agent
//! and `sluice` are their own launchers.

use sluice_runtime::sandbox::{Confinement, Reaper, Sandbox, writable_cgroup};
use sluice_runtime::{Cancel, Grants, Invocation, LogSink, Outcome, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Job {
    runtime: Arc<Runtime>,
    dir: tempfile::TempDir,
    inv: Invocation,
}

fn confined(reaper: Reaper) -> Confinement {
    Confinement::Confined(Sandbox {
        launcher: PathBuf::from(env!("CARGO_BIN_EXE_sluice-sandbox")),
        reaper,
        extra_read: Vec::new(),
        extra_write: Vec::new(),
    })
}

fn cgroup() -> Confinement {
    confined(Reaper::Cgroup(writable_cgroup().expect("a writable cgroup v2 (tests run as root)")))
}

fn subreaper() -> Confinement {
    confined(Reaper::Subreaper)
}

/// A job laid out as the agent lays it out: the agent's data dir holds a
/// private key and the job's directories; the job sees only its own.
fn job(confinement: Confinement, grants: Grants) -> Job {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("agent.key"), "-----BEGIN PRIVATE KEY----- SECRET-KEY-MATERIAL").unwrap();
    let root = data.join("jobs/job-1");
    let (input, output, workspace) = (root.join("inputs/src"), root.join("outputs/out"), root.join("workspace"));
    for d in [&input, &output, &workspace] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(input.join("file.txt"), "input").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit: 64 << 20,
        cache_dir: Some(dir.path().join("cache")),
        confinement,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let inv = Invocation {
        pipeline: "p".into(),
        execution_id: "e".into(),
        stage: "s".into(),
        action: "a".into(),
        attempt: 1,
        configuration: vec![("Mode".into(), "exec".into())],
        variables: vec![],
        inputs: vec![("src".into(), input)],
        outputs: vec![("out".into(), output, vec![])],
        workspace,
        grants,
        secrets: BTreeMap::new(),
        timeout: Duration::from_secs(30),
        cancel: Cancel::default(),
    };
    Job { runtime, dir, inv }
}

fn sh() -> Grants {
    Grants { exec: vec!["sh".into()], ..Grants::default() }
}

impl Job {
    fn data(&self) -> PathBuf {
        self.dir.path().join("agent-data")
    }
    fn workspace(&self) -> &Path {
        &self.inv.workspace
    }
    fn input(&self) -> &Path {
        &self.inv.inputs[0].1
    }

    /// Runs `Program` with the given `Args` lines through the plugin.
    fn run(&self, program: &str, args: &[&str]) -> (Outcome, Vec<String>) {
        let bytes = std::fs::read(sluice_builtins::test_plugin("hostile")).unwrap();
        let plugin = self.runtime.load(&bytes, None).unwrap();
        let mut inv = self.inv.clone();
        inv.configuration.push(("Program".into(), program.into()));
        inv.configuration.push(("Args".into(), args.join("\n")));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log: Arc<dyn LogSink> = Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string()));
        let outcome = self.runtime.run_action(&plugin, &inv, log);
        let lines = lines.lock().unwrap().clone();
        (outcome, lines)
    }

    /// Runs `sh -c SCRIPT`.
    fn sh(&self, script: &str) -> Outcome {
        self.run("sh", &["-c", script]).0
    }
}

fn succeeded(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Succeeded { summary, .. } => summary,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failed(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn the_agents_data_dir_and_keys_are_unreachable() {
    let job = job(subreaper(), sh());
    let key = job.data().join("agent.key");
    let outcome = job.sh(&format!("cat {}", key.display()));
    let message = failed(&outcome);
    assert!(message.contains("Permission denied"), "{message}");
    assert!(!message.contains("SECRET-KEY"), "{message}");
    // Not even a listing of the data dir (other jobs, the cache).
    assert!(failed(&job.sh(&format!("ls {}", job.data().display()))).contains("Permission denied"));
    // The job's own input is readable; the system's programs run.
    let input = job.input().join("file.txt");
    assert_eq!(succeeded(&job.sh(&format!("cat {} && git --version >/dev/null", input.display()))), "input");

    let unconfined = self::job(Confinement::Unconfined, sh());
    assert!(succeeded(&unconfined.sh(&format!("cat {}", key.display()))).contains("SECRET-KEY"));
}

#[test]
fn writes_reach_only_the_actions_writable_directories() {
    let job = job(cgroup(), sh());
    let outside = job.dir.path().join("planted");
    let message = failed(&job.sh(&format!("echo x > {}", outside.display()))).to_string();
    assert!(message.contains("Permission denied"), "{message}");
    assert!(!outside.exists());
    // Inputs are read-only.
    let message = failed(&job.sh(&format!("echo x > {}/new", job.input().display()))).to_string();
    assert!(message.contains("Permission denied"), "{message}");
    // The workspace, outputs and a private TMPDIR/HOME are writable.
    let out = &job.inv.outputs[0].1;
    let script = format!(
        "echo a > {ws}/a && echo b > {out}/b && echo t > \"$TMPDIR/t\" && test \"$HOME\" = \"$TMPDIR\" && \
         ! ls /tmp >/dev/null 2>&1 && echo \"$TMPDIR\"",
        ws = job.workspace().display(),
        out = out.display()
    );
    let tmp = succeeded(&job.sh(&script)).trim().to_string();
    assert!(job.workspace().join("a").exists() && out.join("b").exists());
    // The private temporary directory goes with the call.
    assert!(!Path::new(&tmp).exists(), "{tmp} was left behind");

    let unconfined = self::job(Confinement::Unconfined, sh());
    succeeded(&unconfined.sh(&format!("echo x > {}", outside.display())));
    assert!(outside.exists());
}

#[test]
fn the_agents_environment_cannot_be_read_through_proc() {
    // The test process stands for the agent: cargo set its environment.
    let pid = std::process::id();
    let job = job(subreaper(), sh());
    let script = format!("cat /proc/{pid}/environ | tr '\\0' '\\n' | grep -c CARGO");
    let message = failed(&job.sh(&script)).to_string();
    assert!(message.contains("Permission denied"), "{message}");
    // Its own process is its own to read.
    succeeded(&job.sh("cat /proc/self/environ >/dev/null"));

    let unconfined = self::job(Confinement::Unconfined, sh());
    let count: u32 = succeeded(&unconfined.sh(&script)).trim().parse().unwrap();
    assert!(count > 0);
}

#[test]
fn tcp_needs_a_net_grant_for_its_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected");

    let job = job(subreaper(), sh());
    let message = failed(&job.sh(&connect)).to_string();
    assert!(message.contains("Permission denied"), "{message}");
    // Nor may it listen.
    let listen = "python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 0))'".to_string();
    assert!(failed(&job.sh(&listen)).contains("Permission denied"));

    // Another port's grant is not this one's.
    let other = Grants { net: vec![format!("tcp:{}", port.wrapping_add(1).max(1))], ..sh() };
    assert!(failed(&self::job(subreaper(), other).sh(&connect)).contains("Permission denied"));

    let granted = Grants { net: vec![format!("tcp:{port}")], ..sh() };
    assert_eq!(succeeded(&self::job(subreaper(), granted).sh(&connect)).trim(), "connected");
    let bind = Grants { net: vec!["tcp-bind:0".into()], ..sh() };
    succeeded(&self::job(cgroup(), bind).sh(&listen));
}

#[test]
fn a_job_cannot_signal_the_agent() {
    let pid = std::process::id();
    let job = job(cgroup(), sh());
    let message = failed(&job.sh(&format!("kill -9 {pid}"))).to_string();
    assert!(message.contains("Operation not permitted") || message.contains("not permitted"), "{message}");
    // Nor the launcher that supervises it.
    let message = failed(&job.sh("kill -9 $PPID")).to_string();
    assert!(message.contains("not permitted"), "{message}");
    // The agent is still here to check; unconfined, the same permission
    // check (signal 0) passes.
    let unconfined = self::job(Confinement::Unconfined, sh());
    succeeded(&unconfined.sh(&format!("kill -0 {pid}")));
}

/// A sleeper that left its session and its parent: the launcher's process
/// group and the program's exit leave it running, unless it is killed.
fn escaped_sleeper(job: &Job) -> u32 {
    let pidfile = job.workspace().join("sleeper.pid");
    let script = format!(
        "setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}' </dev/null >/dev/null 2>&1 & \
         while [ ! -s {pidfile} ]; do sleep 0.05; done; kill -0 $(cat {pidfile}) && echo started",
        pidfile = pidfile.display()
    );
    assert_eq!(succeeded(&job.sh(&script)).trim(), "started");
    std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap()
}

/// Whether a process still runs (a zombie runs nothing).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_secs(2);
    while running(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    !running(pid)
}

#[test]
fn a_setsid_double_forked_sleeper_is_gone_when_the_action_ends_with_a_cgroup() {
    let job = job(cgroup(), sh());
    let pid = escaped_sleeper(&job);
    assert!(!running(pid), "sleeper {pid} outlived the action");
}

#[test]
fn a_setsid_double_forked_sleeper_is_gone_when_the_action_ends_with_the_subreaper() {
    let job = job(subreaper(), sh());
    let pid = escaped_sleeper(&job);
    assert!(!running(pid), "sleeper {pid} outlived the action");
}

#[test]
fn unconfined_a_setsid_sleeper_escapes_which_is_why_the_reapers_exist() {
    let job = job(Confinement::Unconfined, sh());
    let pid = escaped_sleeper(&job);
    let escaped = running(pid);
    let _ = nix_kill(pid);
    assert!(escaped, "the unconfined control run should leave the sleeper behind");
    assert!(wait_gone(pid));
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    let status = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other("kill failed")) }
}

#[test]
fn a_stopped_run_takes_its_escaped_sleepers_along() {
    for confinement in [cgroup(), subreaper()] {
        let mut job = job(confinement, sh());
        job.inv.timeout = Duration::from_secs(2);
        let pidfile = job.workspace().join("sleeper.pid");
        let script = format!(
            "setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}' </dev/null >/dev/null 2>&1 & sleep 60",
            pidfile = pidfile.display()
        );
        let started = Instant::now();
        assert!(failed(&job.sh(&script)).contains("deadline"));
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let pid: u32 = std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
        assert!(wait_gone(pid), "sleeper {pid} outlived the stopped action");
    }
}

#[test]
fn a_bare_grant_never_runs_a_program_of_that_name_from_the_workspace() {
    let job = job(subreaper(), Grants { exec: vec!["git".into()], ..Grants::default() });
    let fake = job.workspace().join("git");
    std::fs::write(&fake, "#!/bin/sh\necho pwned\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (outcome, _) = job.run(fake.to_str().unwrap(), &["--version"]);
    let message = failed(&outcome);
    assert!(message.contains("not permitted"), "{message}");
    // The same name runs the system's git.
    let (outcome, _) = job.run("git", &["--version"]);
    assert!(succeeded(&outcome).starts_with("git version"), "{outcome:?}");
}

#[test]
fn without_landlock_exec_is_refused_unless_allowed() {
    let job = job(Confinement::Refused("landlock is not available (test)".into()), sh());
    let message = failed(&job.sh("echo hi")).to_string();
    assert!(message.contains("refused: landlock is not available (test)"), "{message}");
    let job = self::job(Confinement::Unconfined, sh());
    assert_eq!(succeeded(&job.sh("echo hi")).trim(), "hi");
}

#[test]
fn a_directory_granted_with_fs_is_writable_and_only_it() {
    let site = tempfile::tempdir().unwrap();
    let target = site.path().join("www");
    let grants = Grants { fs: vec![target.to_string_lossy().into_owned()], ..sh() };
    let job = job(cgroup(), grants);
    let script = format!("echo deployed > {}/index.html && cat {}/index.html", target.display(), target.display());
    assert_eq!(succeeded(&job.sh(&script)).trim(), "deployed");
    let beside = site.path().join("beside");
    assert!(failed(&job.sh(&format!("echo x > {}", beside.display()))).contains("Permission denied"));
}
