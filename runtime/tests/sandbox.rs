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
        max_pids: Some(sluice_runtime::sandbox::DEFAULT_MAX_PIDS),
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
    job_sized(confinement, grants, 64 << 20)
}

fn job_sized(confinement: Confinement, grants: Grants, memory_limit: usize) -> Job {
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
        memory_limit,
        cache_dir: Some(dir.path().join("cache")),
        confinement,
        // As the agent does: its data dir is no fs grant's to give.
        protected_dirs: vec![data.clone()],
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
        let bytes = std::fs::read(sluice_test_plugins::test_plugin("hostile")).unwrap();
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

#[test]
fn an_fs_grant_cannot_expose_the_agents_data_dir_or_the_root() {
    // The pipeline author (no --policy on the agent) grants the agent's own
    // data dir, a directory above it, one inside it (another job), the
    // cache, or the whole filesystem; each action fails before anything
    // runs, and the key stays unread.
    let mut job = job(cgroup(), sh());
    let data = job.data();
    let cache = job.dir.path().join("cache");
    let other_job = data.join("jobs/job-2/workspace");
    let link = job.dir.path().join("innocent");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    for dir in [
        data.clone(),
        job.dir.path().to_path_buf(),
        other_job.clone(),
        cache.join("x"),
        PathBuf::from("/"),
        link.clone(),
        link.join("jobs"),
    ] {
        job.inv.grants = Grants { fs: vec![dir.to_string_lossy().into_owned()], ..sh() };
        let outcome = job.sh(&format!("cat {}/agent.key", data.display()));
        let message = failed(&outcome).to_string();
        assert!(message.contains("fs grant refused"), "{}: {message}", dir.display());
        assert!(!message.contains("SECRET-KEY"), "{message}");
    }
    // A grant beside the data dir is fine.
    job.inv.grants = Grants { fs: vec![job.dir.path().join("site").to_string_lossy().into_owned()], ..sh() };
    succeeded(&job.sh("true"));
    assert!(!other_job.exists(), "a refused grant created a directory");
    // The operator's flags are held to the same rule: the runtime refuses
    // to start.
    for dir in [PathBuf::from("/"), data.join("jobs")] {
        let Confinement::Confined(mut sandbox) = cgroup() else { unreachable!() };
        sandbox.extra_write = vec![dir.clone()];
        let err = Runtime::new(RuntimeConfig {
            confinement: Confinement::Confined(sandbox),
            protected_dirs: vec![data.clone()],
            ..RuntimeConfig::default()
        })
        .err()
        .expect("refused");
        assert!(format!("{err:#}").contains("sandbox directory refused"), "{}: {err:#}", dir.display());
    }
}

/// A UDP socket of the test, and a script sending one datagram to it.
fn udp_target() -> (std::net::UdpSocket, String) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let port = socket.local_addr().unwrap().port();
    let send = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.sendto(b\"exfiltrated\", (\"127.0.0.1\", {port})); print(\"sent\")'"
    );
    (socket, send)
}

fn received(socket: &std::net::UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    socket.recv(&mut buf).is_ok()
}

#[test]
fn udp_raw_and_unix_sockets_are_refused_without_a_net_grant() {
    for confinement in [cgroup(), subreaper()] {
        let job = job(confinement, sh());
        let (socket, send) = udp_target();
        let message = failed(&job.sh(&send)).to_string();
        assert!(message.contains("Permission denied"), "{message}");
        assert!(!received(&socket), "a datagram got out");
        // Raw and packet sockets, and netlink.
        for (family, kind) in [("AF_INET", "SOCK_RAW"), ("AF_PACKET", "SOCK_RAW"), ("AF_NETLINK", "SOCK_RAW")] {
            let script = format!("python3 -c 'import socket; socket.socket(socket.{family}, socket.{kind})'");
            assert!(failed(&job.sh(&script)).contains("Permission denied"), "{family}");
        }
    }
    // Unconfined, the same datagram arrives.
    let (socket, send) = udp_target();
    succeeded(&self::job(Confinement::Unconfined, sh()).sh(&send));
    assert!(received(&socket));
}

#[test]
fn a_pathname_unix_socket_outside_cannot_be_reached() {
    // Stands for the user's session bus or a container engine's socket.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let connect = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\"); print(\"connected\")'",
        path.display()
    );
    let job = job(subreaper(), sh());
    let message = failed(&job.sh(&connect)).to_string();
    assert!(message.contains("Permission denied"), "{message}");
    assert!(listener.accept().is_err(), "the program reached the socket");
    // Shells, pipes and a local git clone still work (socketpair stays).
    let script = "git init -q src && git -C src -c user.name=a -c user.email=a@b commit -q --allow-empty -m one && \
                  git clone -q src copy && git -C copy log --oneline | wc -l | tr -d ' ' | cat";
    assert_eq!(succeeded(&job.sh(script)).trim(), "1");
    succeeded(&self::job(Confinement::Unconfined, sh()).sh(&connect));
}

#[test]
fn tcp_to_a_granted_port_and_dns_style_udp_work_with_a_net_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let grants = Grants { net: vec![format!("tcp:{port}")], ..sh() };
    let job = job(cgroup(), grants);
    let connect = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected");
    assert_eq!(succeeded(&job.sh(&connect)).trim(), "connected");
    // A net grant admits UDP (name lookups need it); raw sockets stay shut.
    let (socket, send) = udp_target();
    succeeded(&job.sh(&send));
    assert!(received(&socket));
    let raw = "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'";
    assert!(failed(&job.sh(raw)).contains("Permission denied"));
}

/// The peak memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

#[test]
fn an_endless_line_does_not_grow_the_agent() {
    // 400 MB without a newline: read whole, the agent would hold it (and
    // a copy) at once.
    let mut job = job_sized(cgroup(), sh(), 256 << 20);
    job.inv.timeout = Duration::from_secs(20);
    let before = peak_rss();
    let outcome = job.sh("head -c 400000000 /dev/zero | tr '\\0' x");
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 200_000_000, "the agent grew by {grown} bytes");
    // What reaches the plugin is cut at the capture limit (16 MiB).
    let summary = succeeded(&outcome);
    assert!(summary.len() <= (16 << 20) + (64 << 10), "captured {} bytes", summary.len());
}

/// Starts `sh -c SCRIPT` through the launcher the way the runtime does,
/// then "dies" as an agent would: its end of the control pipe closes and
/// nothing of its own clean-up runs (the cgroup is forgotten, not dropped).
/// The cgroup is handed back to be removed once the test has looked.
fn run_and_abandon(
    confinement: Confinement,
    script: &str,
    pidfile: &Path,
) -> (u32, Option<sluice_runtime::sandbox::RunCgroup>) {
    let Confinement::Confined(sandbox) = confinement else { unreachable!() };
    let dir = pidfile.parent().unwrap();
    let access = sluice_runtime::sandbox::Access { read: vec![], write: vec![dir.to_path_buf()], net: vec![] };
    let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
    let (mut child, cgroup) =
        sluice_runtime::sandbox::spawn(&sandbox, &access, Path::new("/bin/sh"), &["-c".into(), script.into()], env, dir)
            .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(pidfile).map(|s| s.trim().is_empty()).unwrap_or(true) {
        assert!(Instant::now() < until, "the program did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: u32 = std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    assert!(running(pid));
    drop(child.stdin.take());
    drop(child.stdout.take());
    drop(child.stderr.take());
    // The launcher is not waited for by anyone but the test.
    std::thread::spawn(move || child.wait());
    (pid, cgroup)
}

#[test]
fn when_the_agent_dies_its_programs_and_their_escapees_die_too() {
    for confinement in [cgroup(), subreaper()] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("sleeper.pid");
        let script = format!(
            "setsid sh -c 'sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {p}' </dev/null >/dev/null 2>&1; sleep 300",
            p = pidfile.display()
        );
        let (pid, cgroup) = run_and_abandon(confinement, &script, &pidfile);
        let gone = wait_gone(pid);
        drop(cgroup);
        assert!(gone, "the escaped sleeper {pid} outlived its agent");
    }
}

#[test]
fn a_restarted_agent_removes_the_run_cgroups_of_a_dead_one() {
    let Reaper::Cgroup(parent) = (match cgroup() {
        Confinement::Confined(s) => s.reaper,
        _ => unreachable!(),
    }) else {
        unreachable!()
    };
    // A pid that is surely gone: a child that has exited and been reaped.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let stale = parent.join(format!("sluice-run-{dead_pid}-0"));
    std::fs::create_dir(&stale).unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(stale.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    // A run of an agent still alive (this test process) is left alone.
    let live = parent.join(format!("sluice-run-{}-999999", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    assert!(sluice_runtime::sandbox::remove_stale_runs(&parent) >= 1);
    let _ = sleeper.wait();
    assert!(!stale.exists(), "the stale cgroup is still there");
    assert!(live.exists(), "a live agent's cgroup was removed");
    std::fs::remove_dir(&live).unwrap();
}
