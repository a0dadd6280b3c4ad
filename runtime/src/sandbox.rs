//! Confinement of granted host programs (`process.run`) with Linux Landlock.
//!
//! A granted program and everything it starts run under a Landlock domain
//! with `no_new_privs`: read and execute on the system directories programs
//! need ([`SYSTEM_READ`]), read, write and execute only on the action's
//! writable directories (workspace, outputs, granted `fs` directories and a
//! private temporary directory), read and execute on its inputs; no TCP
//! bind or connect unless a `net` grant names the port; no signals to, and
//! no abstract unix sockets of, processes outside the domain (Landlock ABI 6
//! scopes), so a job can neither kill nor reach the agent; and without any
//! capability (an agent running as root hands none to its programs), while
//! the agent makes itself non-dumpable, so that its `/proc` entries
//! (environment, memory) need `CAP_SYS_PTRACE` to read.
//!
//! The workspace denies `unsafe_code`, and a forked child of a multithreaded
//! process may only do async-signal-safe work, so nothing is confined
//! between `fork` and `exec`. Instead the runtime starts a launcher: an
//! executable (the agent's or `sluice`'s own binary, re-executed with
//! [`SUPERVISE_ARG`]) that
//!
//! 0. reads what the program may use, and its environment, from its stdin
//!    (the launcher itself runs with an empty environment),
//! 1. moves itself into the run's cgroup when there is one,
//! 2. becomes a child subreaper, so that orphans (`setsid`, double forks)
//!    are re-parented to it rather than to init,
//! 3. starts itself once more with [`CONFINE_ARG`]: that single-threaded
//!    process applies the Landlock ruleset to itself and `exec`s the
//!    program. The supervisor stays outside the domain, so the program
//!    cannot signal it either.
//!
//! Nothing is left behind: with a cgroup (where the agent may create one
//! under a writable cgroup v2 mount), the runtime writes `cgroup.kill` when
//! the program exits or is stopped; otherwise the supervisor, as subreaper,
//! kills and reaps every descendant when the program exits or when its
//! control pipe (its stdin, held by the runtime) closes.
//!
//! This module knows nothing of plugins or WIT: it turns directories,
//! ports and a program into a confined process.

use anyhow::{Context as _, Result, anyhow, bail};
use landlock::{
    ABI, Access as _, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The first argument that turns an executable into the supervisor.
pub const SUPERVISE_ARG: &str = "--sluice-sandbox-supervise";
/// The first argument that turns it into the confining stage, which
/// restricts itself and `exec`s the program.
pub const CONFINE_ARG: &str = "--sluice-sandbox-confine";

/// The Landlock ABI every rule here needs: filesystem (1-5), TCP (4) and
/// scoped signals and abstract unix sockets (6).
const REQUIRED_ABI: ABI = ABI::V6;

/// Exit status of the launcher when it could not start the program
/// (as `env` and `nohup` use 125 and 127).
const LAUNCH_FAILED: i32 = 125;
const EXEC_FAILED: i32 = 127;

/// Read and execute for every program: the system's programs and
/// libraries, the pieces of `/etc` that the C library, TLS and common tools
/// read, and `/proc` (programs read `/proc/self`; another process's
/// environment, memory and files there are guarded by the kernel's ptrace
/// checks, which Landlock makes deny any process outside the domain).
/// Deliberately absent: the rest of `/etc` (host keys, shadow files, agent
/// configuration), `/root`, `/home`, `/var`, `/tmp`, `/run`, `/srv`, `/opt`
/// and `/sys` beyond the CPU topology. Paths missing on a host are skipped.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/gitconfig",
    "/etc/mime.types",
    "/etc/os-release",
    "/proc",
    "/sys/devices/system/cpu",
    "/dev/urandom",
    "/dev/random",
];

/// Device files programs write to as a matter of course.
pub const DEVICES_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// How granted programs run on this host.
#[derive(Debug, Clone)]
pub enum Confinement {
    /// Under Landlock, through the launcher.
    Confined(Sandbox),
    /// As the agent's user with the whole host: only where Landlock is
    /// missing and the operator said so (`--allow-unconfined-exec`).
    Unconfined,
    /// Not at all: `exec` grants are refused, for this reason.
    Refused(String),
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement::Refused("no sandbox for host programs was set up".into())
    }
}

/// What confines programs on a host where Landlock works.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The executable that is re-executed as the launcher: it must call
    /// [`run_launcher_if_asked`] first thing in `main`.
    pub launcher: PathBuf,
    /// How every process of a run is found and killed at its end.
    pub reaper: Reaper,
    /// More directories programs may read and execute (such as `/opt`),
    /// chosen by the operator.
    pub extra_read: Vec<PathBuf>,
    /// More directories programs may also write (such as a shared build
    /// cache), chosen by the operator.
    pub extra_write: Vec<PathBuf>,
    /// Processes (and threads) one run may have at once, through the run
    /// cgroup's `pids.max`; `None` leaves the limit unset.
    pub max_pids: Option<u32>,
}

/// The default of [`Sandbox::max_pids`]: generous for a parallel build,
/// small enough that a fork bomb stops long before the host does.
pub const DEFAULT_MAX_PIDS: u32 = 4096;

/// How the processes a program leaves behind are found and killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaper {
    /// A cgroup v2 per run, created under this directory and killed whole
    /// with `cgroup.kill`.
    Cgroup(PathBuf),
    /// The launcher, a child subreaper, kills and reaps every descendant.
    Subreaper,
}

/// Which reaper the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaperChoice {
    /// A cgroup where this process may create one, else the subreaper.
    #[default]
    Auto,
    /// A cgroup, or an error.
    Cgroup,
    /// The subreaper, even where a cgroup is possible.
    Subreaper,
}

/// Whether programs may run unconfined where Landlock is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unconfined {
    #[default]
    Refuse,
    Allow,
}

impl Confinement {
    /// Confinement for this host: Landlock with the launcher at
    /// `launcher` where the kernel offers [`REQUIRED_ABI`]; otherwise
    /// unconfined if `unconfined` allows it, else refused with the reason.
    pub fn detect(launcher: PathBuf, reaper: ReaperChoice, unconfined: Unconfined) -> Result<Self> {
        if let Err(missing) = landlock_available() {
            return Ok(match unconfined {
                Unconfined::Allow => Confinement::Unconfined,
                Unconfined::Refuse => Confinement::Refused(missing),
            });
        }
        let reaper = match (reaper, writable_cgroup()) {
            // An earlier agent that died left its runs' cgroups (and what
            // ran in them) behind: they go before this one takes work.
            (ReaperChoice::Auto | ReaperChoice::Cgroup, Ok(dir)) => {
                remove_stale_runs(&dir);
                Reaper::Cgroup(dir)
            }
            (ReaperChoice::Subreaper, _) => Reaper::Subreaper,
            (ReaperChoice::Auto, Err(_)) => Reaper::Subreaper,
            (ReaperChoice::Cgroup, Err(e)) => return Err(e.context("a cgroup per run was asked for")),
        };
        Ok(Confinement::Confined(Sandbox {
            launcher,
            reaper,
            extra_read: Vec::new(),
            extra_write: Vec::new(),
            max_pids: Some(DEFAULT_MAX_PIDS),
        }))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Confinement::Confined(s) => match &s.reaper {
                Reaper::Cgroup(dir) => {
                    format!("granted programs run under landlock, each run in its own cgroup under {}", dir.display())
                }
                Reaper::Subreaper => {
                    "granted programs run under landlock, their leftovers killed by a subreaper (no writable cgroup v2)"
                        .to_string()
                }
            },
            Confinement::Unconfined => "landlock is not available: granted programs run UNCONFINED, with the whole \
                                        host (--allow-unconfined-exec)"
                .to_string(),
            Confinement::Refused(why) => {
                format!("exec grants are refused: {why}; pass --allow-unconfined-exec to run programs unconfined")
            }
        }
    }
}

/// Whether the kernel offers every Landlock feature used here.
pub fn landlock_available() -> Result<(), String> {
    let probe = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(REQUIRED_ABI))
        .and_then(|r| r.handle_access(AccessNet::from_all(REQUIRED_ABI)))
        .and_then(|r| r.scope(Scope::from_all(REQUIRED_ABI)))
        .and_then(|r| r.create());
    probe.map(|_| ()).map_err(|e| format!("landlock ABI 6 (filesystem, TCP and scopes) is not available: {e}"))
}

/// The directory under which this process may create cgroups: its own
/// cgroup on the cgroup v2 mount, if creating a child there works and the
/// kernel has `cgroup.kill` (5.14).
pub fn writable_cgroup() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let (mount_root, mount_point) = cgroup2_mount(&mountinfo).ok_or_else(|| anyhow!("no cgroup2 filesystem is mounted"))?;
    let own =
        cgroups.lines().find_map(|l| l.strip_prefix("0::")).ok_or_else(|| anyhow!("this process is in no cgroup v2"))?;
    let relative = Path::new(own)
        .strip_prefix(&mount_root)
        .map_err(|_| anyhow!("this process's cgroup {own} is outside the cgroup2 mount's root {mount_root}"))?;
    // An empty relative path would leave a trailing `/` in messages.
    let dir =
        if relative.as_os_str().is_empty() { PathBuf::from(&mount_point) } else { Path::new(&mount_point).join(relative) };
    let probe = dir.join(format!("sluice-probe-{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir(&probe).with_context(|| format!("creating a cgroup under {}", dir.display()))?;
    let has_kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    if !has_kill {
        bail!("cgroup {} has no cgroup.kill (Linux 5.14 or later is needed)", dir.display());
    }
    Ok(dir)
}

/// Kills and removes the run cgroups under `dir` whose agent (the pid in
/// the name `sluice-run-PID-N`) is gone: an agent that died cannot have
/// cleaned them, and their programs would otherwise run on. Cgroups of
/// agents still running (several may share a cgroup) are left alone.
pub fn remove_stale_runs(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("sluice-run-")) else { continue };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let stale = RunCgroup { dir: entry.path() };
        tracing::warn!(cgroup = %stale.dir.display(), "killing and removing a run cgroup left by an agent that is gone");
        drop(stale);
        removed += 1;
    }
    removed
}

/// Why a directory may not be handed to programs (an `fs` grant, or
/// `--sandbox-read`/`--sandbox-write`): it is `/`, or it equals, holds or
/// lies inside one of `protected` (the agent's data dir, plugin cache and
/// job directories). Returns the directory with every symbolic link
/// resolved, which is what must then be granted, so that a link cannot
/// point the grant elsewhere later. A directory that does not exist yet is
/// judged by its deepest existing ancestor, resolved, plus the rest.
pub fn grantable_dir(dir: &Path, protected: &[PathBuf]) -> Result<PathBuf, String> {
    if !dir.is_absolute() {
        return Err(format!("{} is not an absolute path", dir.display()));
    }
    if dir.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("{} must not contain `..`", dir.display()));
    }
    let mut existing = dir.to_path_buf();
    let mut rest = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(real) => break rest.iter().rev().fold(real, |p: PathBuf, part: &OsString| p.join(part)),
            Err(_) => match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => return Err(format!("cannot resolve {}", dir.display())),
            },
        }
    };
    if resolved == Path::new("/") {
        return Err(format!("{} is the whole filesystem", dir.display()));
    }
    for guarded in protected {
        let guarded = guarded.canonicalize().unwrap_or_else(|_| guarded.clone());
        if resolved.starts_with(&guarded) || guarded.starts_with(&resolved) {
            return Err(format!(
                "{} would expose the agent's own files ({}: its identity, plugin cache and job directories)",
                dir.display(),
                guarded.display()
            ));
        }
    }
    Ok(resolved)
}

/// The root and mount point of the first cgroup2 mount in a mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((unescape(fields.get(3)?), unescape(fields.get(4)?)))
    })
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// TCP access one `net` grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetGrant {
    pub access: NetAccess,
    /// `None`: any port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetAccess {
    /// Outgoing TCP connections (`tcp:PORT`).
    Connect,
    /// Listening on a TCP port (`tcp-bind:PORT`; port 0 is the kernel's
    /// choice of a free port).
    Bind,
}

impl std::str::FromStr for NetGrant {
    type Err = String;

    /// `tcp:443`, `tcp:*`, `tcp-bind:8080`, `tcp-bind:0`, `tcp-bind:*`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, port) = s.split_once(':').ok_or_else(|| format!("net grant {s:?} is not tcp:PORT or tcp-bind:PORT"))?;
        let access = match kind {
            "tcp" => NetAccess::Connect,
            "tcp-bind" => NetAccess::Bind,
            other => return Err(format!("net grant {s:?}: unknown kind {other:?}, expected tcp or tcp-bind")),
        };
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| format!("net grant {s:?}: {p:?} is not a port (0-65535 or *)"))?),
        };
        if access == NetAccess::Connect && port == Some(0) {
            return Err(format!("net grant {s:?}: port 0 cannot be connected to"));
        }
        Ok(NetGrant { access, port })
    }
}

impl NetGrant {
    /// Whether this grant (in a policy) permits `other`.
    pub fn covers(&self, other: &NetGrant) -> bool {
        self.access == other.access && (self.port.is_none() || self.port == other.port)
    }
}

/// Every grant of a list, or the first error.
pub fn parse_net(grants: &[String]) -> Result<Vec<NetGrant>, String> {
    grants.iter().map(|g| g.parse()).collect()
}

/// TCP ports of one kind a run may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Ports {
    #[default]
    None,
    Listed(Vec<u16>),
    Any,
}

impl Ports {
    fn from_grants(grants: &[NetGrant], access: NetAccess) -> Self {
        let mine: Vec<_> = grants.iter().filter(|g| g.access == access).collect();
        if mine.iter().any(|g| g.port.is_none()) {
            return Ports::Any;
        }
        let mut ports: Vec<u16> = mine.iter().filter_map(|g| g.port).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() { Ports::None } else { Ports::Listed(ports) }
    }
}

/// What the launcher is told, as JSON in one argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    /// Read and execute.
    read: Vec<PathBuf>,
    /// Read, write and execute.
    write: Vec<PathBuf>,
    /// Files opened for reading and writing (device files).
    devices: Vec<PathBuf>,
    connect: Ports,
    bind: Ports,
    /// The run's cgroup, which the supervisor joins first.
    cgroup: Option<PathBuf>,
    /// Whether the supervisor kills every descendant itself.
    reap_descendants: bool,
    /// The program's whole environment.
    env: Vec<(String, String)>,
}

/// What one confined run may use, in host paths.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub net: Vec<NetGrant>,
}

/// A cgroup of one run, removed when dropped (after killing what is left).
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl RunCgroup {
    fn create(parent: &Path, max_pids: Option<u32>) -> Result<Self> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("sluice-run-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let cgroup = Self { dir };
        if let Some(max) = max_pids {
            // The pids controller must be enabled for the parent's children;
            // where the operator's setup does not, the run goes unlimited,
            // as it did before, and says so.
            if let Err(e) = std::fs::write(cgroup.dir.join("pids.max"), max.to_string()) {
                tracing::debug!(cgroup = %cgroup.dir.display(), "no pids.max on the run's cgroup: {e}");
            }
        }
        Ok(cgroup)
    }

    /// Kills every process in the cgroup.
    pub fn kill(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            tracing::warn!(cgroup = %self.dir.display(), "cannot kill the run's cgroup: {e}");
        }
    }

    fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|events| events.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }
}

/// How long the end of a run waits for killed processes to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.kill();
        let until = Instant::now() + KILL_WAIT;
        while self.populated() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), "cannot remove the run's cgroup: {e}");
        }
    }
}

/// Starts `program` confined: the launcher with an empty environment, in
/// `cwd`, in its own process group, its stdout and stderr piped. The spec
/// (with the program's environment, which may hold secrets and must not
/// reach the unconfined launcher's own environment, where `LD_PRELOAD`
/// and the like would act on it) goes over the launcher's stdin, which the
/// caller keeps open until the run ends: its closing stops the run.
pub fn spawn(
    sandbox: &Sandbox,
    access: &Access,
    program: &Path,
    args: &[String],
    env: Vec<(String, String)>,
    cwd: &Path,
) -> Result<(Child, Option<RunCgroup>)> {
    let cgroup = match &sandbox.reaper {
        Reaper::Cgroup(parent) => Some(RunCgroup::create(parent, sandbox.max_pids)?),
        Reaper::Subreaper => None,
    };
    let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
    read.extend(sandbox.extra_read.iter().cloned());
    read.extend(access.read.iter().cloned());
    // A program granted by its absolute path may live outside the system
    // directories: it, and only it, is readable and executable.
    read.push(program.to_path_buf());
    let spec = Spec {
        read,
        write: access.write.iter().chain(&sandbox.extra_write).cloned().collect(),
        devices: DEVICES_WRITE.iter().map(PathBuf::from).collect(),
        connect: Ports::from_grants(&access.net, NetAccess::Connect),
        bind: Ports::from_grants(&access.net, NetAccess::Bind),
        cgroup: cgroup.as_ref().map(|c| c.dir.clone()),
        reap_descendants: cgroup.is_none(),
        env,
    };
    let mut line = serde_json::to_vec(&spec).context("encoding the sandbox")?;
    line.push(b'\n');
    let mut child = Command::new(&sandbox.launcher)
        .arg(SUPERVISE_ARG)
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting the launcher {}", sandbox.launcher.display()))?;
    let written = child.stdin.as_mut().expect("piped").write_all(&line);
    if let Err(e) = written {
        let _ = child.kill();
        let _ = child.wait();
        bail!("handing the sandbox to the launcher: {e}");
    }
    Ok((child, cgroup))
}

/// Runs the launcher when this process was started as one (its first
/// argument is [`SUPERVISE_ARG`] or [`CONFINE_ARG`]) and exits; returns
/// otherwise. Binaries that embed the runtime call it first in `main`,
/// before threads or logging start.
pub fn run_launcher_if_asked() {
    let mut args = std::env::args_os().skip(1);
    let Some(mode) = args.next() else { return };
    let stage = if mode == SUPERVISE_ARG {
        Stage::Supervise
    } else if mode == CONFINE_ARG {
        Stage::Confine
    } else {
        return;
    };
    let rest: Vec<OsString> = args.collect();
    let code = match launch(stage, rest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice sandbox: {e:#}");
            LAUNCH_FAILED
        }
    };
    std::process::exit(code);
}

#[derive(Clone, Copy)]
enum Stage {
    Supervise,
    Confine,
}

fn launch(stage: Stage, rest: Vec<OsString>) -> Result<i32> {
    let mut rest = rest.into_iter();
    if rest.next().as_deref() != Some(std::ffi::OsStr::new("--")) {
        bail!("expected -- PROGRAM ARGS...");
    }
    let program: Vec<OsString> = rest.collect();
    let (name, args) = program.split_first().ok_or_else(|| anyhow!("no program"))?;
    // The spec is the first line on stdin; the rest of stdin (until it
    // closes) is the supervisor's stop signal.
    let mut stdin = std::io::BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).context("reading the sandbox spec")?;
    let spec: Spec = serde_json::from_str(&line).context("reading the sandbox spec")?;
    match stage {
        Stage::Supervise => supervise(&spec, &line, stdin, name, args),
        Stage::Confine => {
            confine(&spec)?;
            let e = Command::new(name).args(args).env_clear().envs(spec.env).stdin(Stdio::null()).exec();
            eprintln!("sluice sandbox: cannot run {}: {e}", Path::new(name).display());
            Ok(EXEC_FAILED)
        }
    }
}

/// The supervisor: joins the cgroup, becomes a subreaper, runs the
/// confining stage, and exits as the program did once no descendant is
/// left (or, with a cgroup, as soon as the program exits: the runtime then
/// kills the cgroup).
fn supervise(
    spec: &Spec,
    spec_line: &str,
    mut control: impl std::io::BufRead + Send + 'static,
    program: &OsString,
    args: &[OsString],
) -> Result<i32> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    if let Some(cgroup) = &spec.cgroup {
        std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {}", cgroup.display()))?;
    }
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let exe = std::env::current_exe().context("finding the launcher's own executable")?;
    let mut child = Command::new(exe)
        .arg(CONFINE_ARG)
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .spawn()
        .context("starting the confined program")?;
    let handed = child.stdin.take().expect("piped").write_all(spec_line.as_bytes());
    if let Err(e) = handed {
        let _ = child.kill();
        let _ = child.wait();
        bail!("handing the sandbox to the confining stage: {e}");
    }
    // The runtime closes our stdin to stop the run, and so does the
    // kernel when the agent dies: then everything below us goes, the whole
    // cgroup (this supervisor with it) where there is one.
    let cgroup = spec.cgroup.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut control, &mut std::io::sink());
        if let Some(cgroup) = &cgroup {
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
        }
        loop {
            kill_children();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let status = child.wait().context("waiting for the program")?;
    if spec.reap_descendants {
        // Kill what is left, reap it, and again for what that orphaned,
        // until nothing is below us.
        loop {
            kill_children();
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(nix::errno::Errno::ECHILD) => break,
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
                _ => {}
            }
        }
    }
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(signal) = status.signal() {
        // Die as the program died, so that the runtime sees the signal.
        if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), signal);
        }
        return Ok(128 + signal);
    }
    Ok(status.code().unwrap_or(LAUNCH_FAILED))
}

/// Sends SIGKILL to every direct child of this process (found in `/proc`).
fn kill_children() {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The parent's pid is the second field after the command name,
        // which is in parentheses and may itself hold spaces and ")".
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(me) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Drops every capability, for good: an agent running as root would
/// otherwise hand its programs `CAP_SYS_PTRACE` (and so the agent's
/// environment and memory in `/proc`, which Landlock leaves to the
/// kernel's ptrace checks for reads), `CAP_SYS_MODULE` and the rest. The
/// bounding set goes first, so that `exec` does not give root its
/// capabilities back.
fn drop_capabilities() -> Result<()> {
    use caps::{CapSet, Capability};
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).context("reading capabilities")? {
        caps::clear(None, CapSet::Bounding).context("dropping the capability bounding set")?;
    }
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).with_context(|| format!("dropping {set:?} capabilities"))?;
    }
    Ok(())
}

/// Restricts this process (single-threaded, about to `exec`) to the spec.
fn confine(spec: &Spec) -> Result<()> {
    let abi = REQUIRED_ABI;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?
        .scope(Scope::from_all(abi))?;
    let mut handled_net = AccessNet::ConnectTcp | AccessNet::BindTcp;
    if spec.connect == Ports::Any {
        handled_net.remove(AccessNet::ConnectTcp);
    }
    if spec.bind == Ports::Any {
        handled_net.remove(AccessNet::BindTcp);
    }
    if !handled_net.is_empty() {
        ruleset = ruleset.handle_access(handled_net)?;
    }
    let mut created = ruleset.create()?;
    let read_exec = AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute;
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;
    for (paths, access, required) in
        [(&spec.read, read_exec, false), (&spec.devices, device, false), (&spec.write, AccessFs::from_all(abi), true)]
    {
        for path in paths {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                // System paths differ between hosts; the action's own
                // directories must exist.
                Err(_) if !required => continue,
                Err(e) => return Err(anyhow!("opening {}: {e}", path.display())),
            };
            let access = if path.is_dir() { access } else { access & AccessFs::from_file(abi) };
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    for (ports, access) in [(&spec.connect, AccessNet::ConnectTcp), (&spec.bind, AccessNet::BindTcp)] {
        if let Ports::Listed(ports) = ports {
            for port in ports {
                created = created.add_rule(NetPort::new(*port, access))?;
            }
        }
    }
    drop_capabilities()?;
    let status = created.restrict_self()?;
    if status.ruleset != RulesetStatus::FullyEnforced || !status.no_new_privs {
        bail!("landlock was not fully enforced ({status:?})");
    }
    let net = if spec.connect == Ports::None && spec.bind == Ports::None { NetUse::None } else { NetUse::Granted };
    let filter = socket_filter(net)?;
    seccompiler::apply_filter(&filter).context("installing the socket filter")?;
    Ok(())
}

/// Whether a run has any `net` grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetUse {
    None,
    Granted,
}

/// A seccomp filter for what Landlock (ABI 6) does not govern: it limits
/// TCP and abstract unix sockets only, so UDP (DNS exfiltration), raw and
/// packet sockets, and `connect` to a pathname unix socket (a session bus
/// that starts unconfined services, a container engine's socket) would
/// otherwise be open to every program. Refused calls fail with `EACCES`,
/// so programs report a clear error rather than die.
///
/// - `socket()` of any family but IPv4 and IPv6 is refused: unix sockets
///   (seccomp cannot see the path `connect` is given, so the socket itself
///   is refused; `socketpair`, which shells and git use, is a separate
///   call and stays open), netlink, packet, vsock and the rest. With a
///   `net` grant, netlink is admitted too (the C library asks the kernel
///   for the host's addresses when it resolves names).
/// - IPv4 and IPv6 sockets must be `SOCK_STREAM` with protocol 0 or TCP,
///   which Landlock then governs port by port; with a `net` grant,
///   `SOCK_DGRAM` is admitted too (DNS lookups). Raw, SCTP, MPTCP and the
///   rest are always refused.
/// - `io_uring_setup` is refused: io_uring opens sockets without the
///   `socket` system call.
/// - On x86_64, the x32 `socket` call (the same number with bit 30 set)
///   is refused, since the filter matches numbers, not names.
fn socket_filter(net: NetUse) -> Result<seccompiler::BpfProgram> {
    use nix::libc;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter, SeccompRule,
    };
    let cond = |arg: u8, op: Op, value: u64| Cond::new(arg, Len::Dword, op, value);
    let inet = [libc::AF_INET as u64, libc::AF_INET6 as u64];
    let mut rules = Vec::new();
    // Any other family.
    let mut other = vec![cond(0, Op::Ne, inet[0])?, cond(0, Op::Ne, inet[1])?];
    if net == NetUse::Granted {
        other.push(cond(0, Op::Ne, libc::AF_NETLINK as u64)?);
    }
    rules.push(SeccompRule::new(other)?);
    for family in inet {
        // Any type but a stream (and, with a grant, a datagram); the type
        // shares its word with SOCK_NONBLOCK and SOCK_CLOEXEC.
        for kind in 0..16u64 {
            let admitted = kind == libc::SOCK_STREAM as u64 || (net == NetUse::Granted && kind == libc::SOCK_DGRAM as u64);
            if !admitted {
                rules.push(SeccompRule::new(vec![cond(0, Op::Eq, family)?, cond(1, Op::MaskedEq(0xf), kind)?])?);
            }
        }
        // A stream that is not TCP (SCTP, MPTCP): Landlock's TCP rules
        // would not apply to it.
        let stream = libc::SOCK_STREAM as u64;
        let tcp = libc::IPPROTO_TCP as u64;
        let base = || -> Result<Vec<Cond>> { Ok(vec![cond(0, Op::Eq, family)?, cond(1, Op::MaskedEq(0xf), stream)?]) };
        let mut above = base()?;
        above.push(cond(2, Op::Gt, tcp)?);
        rules.push(SeccompRule::new(above)?);
        // Below TCP but not 0, the family's default (TCP).
        let mut below = base()?;
        below.push(cond(2, Op::Lt, tcp)?);
        below.push(cond(2, Op::Ne, 0)?);
        rules.push(SeccompRule::new(below)?);
    }
    let mut map = std::collections::BTreeMap::new();
    map.insert(libc::SYS_socket, rules);
    map.insert(libc::SYS_io_uring_setup, Vec::new());
    #[cfg(target_arch = "x86_64")]
    map.insert(libc::SYS_socket | 0x4000_0000, Vec::new());
    let arch = std::env::consts::ARCH.try_into().map_err(|e| anyhow!("no seccomp filter for this architecture: {e:?}"))?;
    let filter = SeccompFilter::new(map, SeccompAction::Allow, SeccompAction::Errno(libc::EACCES as u32), arch)?;
    filter.try_into().context("compiling the socket filter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_grants_parse_and_cover() {
        let g: NetGrant = "tcp:5432".parse().unwrap();
        assert_eq!(g, NetGrant { access: NetAccess::Connect, port: Some(5432) });
        assert_eq!("tcp-bind:0".parse::<NetGrant>().unwrap().port, Some(0));
        assert!("tcp:*".parse::<NetGrant>().unwrap().covers(&g));
        assert!(!"tcp-bind:*".parse::<NetGrant>().unwrap().covers(&g));
        for bad in ["5432", "udp:53", "tcp:http", "tcp:70000", "tcp:0", "tcp:"] {
            assert!(bad.parse::<NetGrant>().is_err(), "{bad}");
        }
        assert!(parse_net(&["tcp:1".into(), "x".into()]).unwrap_err().contains("\"x\""));
        let grants = parse_net(&["tcp:443".into(), "tcp:22".into(), "tcp:443".into(), "tcp-bind:*".into()]).unwrap();
        assert_eq!(Ports::from_grants(&grants, NetAccess::Connect), Ports::Listed(vec![22, 443]));
        assert_eq!(Ports::from_grants(&grants, NetAccess::Bind), Ports::Any);
        assert_eq!(Ports::from_grants(&[], NetAccess::Bind), Ports::None);
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(mountinfo), Some(("/".into(), "/sys/fs/cgroup/un ified".into())));
        assert_eq!(cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }
}
