//! `sluice-agent`: flags, logging and wiring. Enrolls once with a join token
//! (keeping its identity as PEM files in the data dir), then serves the
//! controller over QUIC with mutual TLS, running every action as a
//! sandboxed WebAssembly component.
//!
//! Must not hold logic of its own: it validates flags, builds the parts
//! (`identity`, `jobs`, `connection`) and connects them.

mod connection;
// One implementation of receiving into a file while hashing (issue 19, perf), shared with the controller.
#[path = "../../controller/src/hashed_file.rs"]
mod hashed_file;
mod identity;
mod jobs;
// The controller's half of it (the server's socket) is unused here.
#[allow(dead_code)]
#[path = "../../controller/src/udp.rs"]
mod udp;
// Metrics, logs and health (issue 17, obs).
mod observe;
mod policy;
mod renewal;
mod transfer;

use anyhow::{Context as _, Result, anyhow};
use identity::Identity;
use sluice_protocol::{FromAgent, JoinToken};
use sluice_runtime::sandbox::{Confinement, ReaperChoice, Unconfined};
use sluice_runtime::{Allocation, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing::info;

/// Control messages waiting for the connection: enough for bursts of log
/// lines from every slot; beyond it, senders wait (a chatty plugin is
/// slowed down rather than its logs dropped).
const OUTBOX: usize = 4096;

#[derive(Debug, clap::Parser)]
#[command(name = "sluice-agent", version, about = "Sluice agent: runs pipeline actions as sandboxed WebAssembly plugins")]
struct Args {
    /// The controller's fleet address; for a cluster, several separated by
    /// commas (the agent connects to the leader, and moves on by itself
    /// when it changes).
    #[arg(long, env = "SLUICE_CONTROLLER", value_name = "HOST:PORT,...", value_delimiter = ',', required = true)]
    controller: Vec<String>,
    /// Join token (`sluice agent-token create`); needed only until the agent
    /// has enrolled.
    #[arg(long, env = "SLUICE_JOIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (what a service should use: a flag's or
    /// a variable's value is visible to other users). Without `--token` and
    /// `--token-file`, the agent reads `$CREDENTIALS_DIRECTORY/join-token`
    /// when it exists (systemd's `LoadCredential=join-token:FILE`).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Where the agent keeps its identity, plugins and job files.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Labels for scheduling, over those of the join token; `os` and `arch`
    /// are added unless given.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Actions run at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Linear memory one action may use.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    runtime_memory_mib: u64,
    /// Bytes one output artifact may hold; an action leaving more fails.
    #[arg(long, value_name = "MIB", default_value_t = sluice_runtime::MAX_OUTPUT_BYTES >> 20, value_parser = clap::value_parser!(u64).range(1..=(sluice_runtime::MAX_OUTPUT_BYTES >> 20)))]
    max_output_mib: u64,
    /// How plugin calls get their memory: `pooling` reserves pools for
    /// `--slots` calls at start (and falls back to `on-demand` where the
    /// address space does not allow it), `on-demand` allocates per call.
    #[arg(long, value_enum, default_value_t = AllocatorFlag::Pooling)]
    allocator: AllocatorFlag,
    /// Compiled plugins; default `<data-dir>/cache`.
    #[arg(long, value_name = "DIR")]
    plugin_cache: Option<PathBuf>,
    /// Certificate authorities (PEM) plugins' HTTPS trusts besides the
    /// Mozilla roots, such as an internal CA.
    #[arg(long, value_name = "FILE")]
    http_ca: Option<PathBuf>,
    /// This host's consent to capabilities (JSON: exec, http, secrets, env,
    /// fs); without it, plugins get what the controller grants.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Where Landlock is missing, run granted programs unconfined (as this
    /// agent's user, with the whole host) instead of refusing `exec`.
    #[arg(long)]
    allow_unconfined_exec: bool,
    /// How the processes a granted program leaves behind are killed: a
    /// cgroup v2 per run where the agent may create one (`auto`), or a
    /// subreaper.
    #[arg(long, value_enum, default_value_t = ReaperFlag::Auto)]
    process_reaper: ReaperFlag,
    /// A directory granted programs may read and execute besides the
    /// system's (such as `/opt/toolchains`; repeatable).
    #[arg(long = "sandbox-read", value_name = "DIR")]
    sandbox_read: Vec<PathBuf>,
    /// A directory granted programs may also write, on every job (such as
    /// a shared build cache; repeatable). Per action, prefer an `fs` grant.
    #[arg(long = "sandbox-write", value_name = "DIR")]
    sandbox_write: Vec<PathBuf>,
    /// Processes and threads one granted program may have at once, with
    /// everything it starts (the run cgroup's `pids.max`; 0: no limit).
    #[arg(long, value_name = "N", default_value_t = sluice_runtime::sandbox::DEFAULT_MAX_PIDS)]
    sandbox_max_pids: u32,
    /// A TOML file of settings: keys are these flags' long names
    /// (`data-dir = "/var/lib/sluice-agent"`); flags and SLUICE_AGENT_*
    /// variables win over it.
    #[arg(long, env = "SLUICE_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the settings, print them as they would be used, with where
    /// each came from, and exit without enrolling or connecting.
    #[arg(long)]
    check_config: bool,
    /// Write this command's man page (sluice-agent.1) into DIR and exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    man: Option<PathBuf>,
    // Metrics, logs and health (issue 17, obs).
    /// Serve /metrics, /healthz and /readyz on this address over plain HTTP
    /// without authentication (they carry no secret).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How the log on stderr is written: `text` (coloured only when stderr
    /// is a terminal) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stderr takes JSON lines only (`--log-format json`).
fn log_is_json() -> bool {
    LOG_JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs to stderr: text, coloured only on a terminal, or JSON lines with
/// the event's fields at the top level.
fn init_log(format: LogFormat) {
    use std::io::IsTerminal as _;
    LOG_JSON.store(format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_ansi(false).init(),
    }
}

/// Where the agent's settings are: each flag also reads
/// `SLUICE_AGENT_<FLAG>` (`--data-dir`: `SLUICE_AGENT_DATA_DIR`; the
/// controller's own flags are `SLUICE_<FLAG>`, so one shell can hold both),
/// except `--controller` and `--token`, which kept their older
/// `SLUICE_CONTROLLER` and `SLUICE_JOIN_TOKEN`; and the key `<flag>` of the
/// `--config` file.
const AGENT: sluice_config::Daemon = sluice_config::Daemon {
    name: "sluice-agent",
    path: &[],
    env_prefix: "SLUICE_AGENT_",
    config_flag: "config",
    not_settings: &["check_config", "man"],
    globals: &[],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReaperFlag {
    Auto,
    Cgroup,
    Subreaper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AllocatorFlag {
    Pooling,
    OnDemand,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("label {text:?} is not k=v"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    Ok((key.to_string(), value.trim().to_string()))
}

/// Usage errors found after clap (they exit 2 like clap's own).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> ExitCode {
    // The agent re-executes itself as the launcher of confined programs:
    // that must happen before anything else (threads, logging).
    sluice_runtime::sandbox::run_launcher_if_asked();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `--man DIR` needs none of the flags the agent requires (clap's
    // `exclusive` lets it parse, but not fill `Args`): answered first.
    if let Some(dir) = man_dir(&argv) {
        return match write_man_page(&dir) {
            Ok(path) => {
                eprintln!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (args, settings) = match parse_command_line(argv) {
        Ok(parsed) => parsed,
        Err(sluice_config::Error::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return match check_config(&args) {
            Ok(()) => {
                // Written, not printed: a closed pipe (`| head`) is no panic.
                let mut text = settings.map(|s| s.to_toml(&AGENT)).unwrap_or_default();
                text.push_str("# the settings are valid\n");
                let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let log_format = args.log_format;
    init_log(log_format);
    for warning in settings.as_ref().map(|s| s.overrides()).unwrap_or_default() {
        tracing::warn!(%warning, "setting overridden");
    }
    // Every TLS configuration names its provider, but quinn and rustls
    // helpers may still ask for the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // One thread for the agent's own tasks (the link, transfers, job
    // bookkeeping): they only wait on the network and the disk, and plugins
    // and packing run on the blocking pool. A multi-threaded scheduler woke
    // its idle worker on most hand-offs, another CPU's wake-up in every
    // action's path: the per-action overhead is 12 to 15 % lower with one.
    // (wasmtime's sync WASI calls `Handle::block_on` from the pool; this
    // thread, inside `block_on` for the agent's whole life, drives their IO
    // and timers.)
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Running jobs were cancelled; their blocking threads get a moment to
    // return, and are not waited for beyond it.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A JSON log is all JSON (issue 17, obs): the reason as an event.
            if log_format == LogFormat::Json {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            if e.is::<Usage>() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// The command line with the agent's variables and config file folded in.
fn parse_command_line(
    argv: Vec<std::ffi::OsString>,
) -> Result<(Args, Option<sluice_config::Settings>), sluice_config::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let parsed = sluice_config::parse(Args::command(), argv, &AGENT)?;
    Ok((Args::from_arg_matches(&parsed.matches)?, parsed.settings))
}

/// DIR of `sluice-agent --man DIR` (or `--man=DIR`), the only argument.
fn man_dir(argv: &[std::ffi::OsString]) -> Option<PathBuf> {
    match argv {
        [_, flag, dir] if flag == "--man" => Some(PathBuf::from(dir)),
        [_, flag] => flag.to_str()?.strip_prefix("--man=").map(PathBuf::from),
        _ => None,
    }
}

/// The man page, made from the flags themselves (with their variables).
fn write_man_page(dir: &Path) -> Result<PathBuf> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let man = clap_mangen::Man::new(sluice_config::with_env(Args::command(), &AGENT));
    man.generate_to(dir).with_context(|| format!("writing the man page into {}", dir.display()))
}

/// The systemd credential `join_token` is read from when no flag gives one.
const TOKEN_CREDENTIAL: &str = "join-token";

/// The join token: `--token`, else the contents of `--token-file`, else the
/// service's credential `join-token` if systemd passed one. Errors name the
/// file, never its contents.
fn join_token(args: &Args) -> Result<Option<String>> {
    if let Some(token) = &args.token {
        return Ok(Some(token.clone()));
    }
    let file = match (&args.token_file, std::env::var_os("CREDENTIALS_DIRECTORY")) {
        (Some(file), _) => file.clone(),
        (None, Some(dir)) if Path::new(&dir).join(TOKEN_CREDENTIAL).exists() => Path::new(&dir).join(TOKEN_CREDENTIAL),
        (None, _) => return Ok(None),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading the join token from {}", file.display()))?;
    Ok(Some(text.trim().to_string()))
}

/// What `--check-config` checks besides the flags' own parsers: the files
/// the settings name, the join token's form and the sandbox directories'
/// form; nothing is created, enrolled or connected.
fn check_config(args: &Args) -> Result<()> {
    if let Some(path) = &args.policy {
        policy::Policy::load(path)?;
    }
    if let Some(path) = &args.http_ca {
        std::fs::metadata(path).with_context(|| format!("--http-ca {}", path.display()))?;
    }
    if let Some(token) = join_token(args)? {
        JoinToken::parse(&token).map_err(|e| anyhow!("--token: {e}"))?;
    }
    for (flag, dirs) in [("--sandbox-read", &args.sandbox_read), ("--sandbox-write", &args.sandbox_write)] {
        if let Some(dir) = dirs.iter().find(|d| !d.is_absolute()) {
            return Err(anyhow!("{flag} {} must be an absolute directory", dir.display()));
        }
    }
    if args.data_dir.as_os_str().is_empty() {
        return Err(anyhow!("--data-dir is empty"));
    }
    connection::Controllers::new(args.controller.clone())?;
    Ok(())
}

/// How long a stopping agent waits for its cancelled jobs to return.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Labels in Hello: the token's, then the command line's over them, then
/// `os` and `arch` as this host observes them, which nothing overrides.
/// The controller decides which count: the operator's (token and `sluice
/// agent label`), the observed ones, and command-line keys the join token
/// allows (`agent-token create --allow-agent-labels`).
fn merged_labels(token: &BTreeMap<String, String>, flags: &[(String, String)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = token.clone();
    labels.extend(flags.iter().cloned());
    labels.insert("os".to_string(), std::env::consts::OS.to_string());
    labels.insert("arch".to_string(), std::env::consts::ARCH.to_string());
    labels
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    // An existing data dir (made by hand, or by an older version) holds the
    // agent's key and other jobs' files: the owner's alone, whatever it was.
    let mode = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making data dir {} private", dir.display()))?;
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data dir had a loose mode; it is now 0700");
    }
    Ok(())
}

async fn run(mut args: Args) -> Result<()> {
    // A bad policy stops the agent before it enrolls or takes any work.
    let policy = args.policy.as_deref().map(policy::Policy::load).transpose()?;
    create_private_dir(&args.data_dir)?;
    let metrics_listener = match args.metrics_listen {
        Some(addr) => Some(observe::bind(addr).await?),
        None => None,
    };
    // Plugins hand host paths to programs that run elsewhere (git runs in
    // the job's workspace): every path the agent builds must be absolute.
    args.data_dir =
        args.data_dir.canonicalize().with_context(|| format!("resolving the data dir {}", args.data_dir.display()))?;
    // Bad --sandbox-* flags stop the agent before it enrolls, too.
    let cache_dir = args.plugin_cache.clone().unwrap_or_else(|| args.data_dir.join("cache"));
    let confinement = confinement(&args, &[args.data_dir.clone(), cache_dir.clone()])?;
    let mut controllers =
        connection::Controllers::new(args.controller.clone()).map_err(|e| anyhow!(Usage(e.to_string())))?;
    let identity = if Identity::exists(&args.data_dir) {
        if args.token.is_some() || args.token_file.is_some() {
            info!("already enrolled; the join token is not used");
        }
        Identity::load(&args.data_dir).context("loading the agent identity")?
    } else {
        let Some(token) = join_token(&args)? else {
            return Err(anyhow!(Usage(format!(
                "{} holds no agent identity: pass a join token with --token-file, --token or SLUICE_JOIN_TOKEN to enroll",
                args.data_dir.display()
            ))));
        };
        // Never echo the token: it is a secret.
        let token = JoinToken::parse(&token).map_err(|e| anyhow!(Usage(e)))?;
        let identity = connection::enroll(&mut controllers, &token, &identity::hostname()).await?;
        identity.save(&args.data_dir).context("saving the agent identity")?;
        info!(agent_id = %identity.agent_id, "enrolled");
        identity
    };

    match &confinement {
        Confinement::Confined(_) => info!("{}", confinement.describe()),
        _ => tracing::warn!("{}", confinement.describe()),
    }
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit: usize::try_from(args.runtime_memory_mib << 20).context("--runtime-memory-mib is too large")?,
        cache_dir: Some(cache_dir),
        max_output_bytes: args.max_output_mib << 20,
        http_extra_roots: match &args.http_ca {
            Some(path) => std::fs::read(path).with_context(|| format!("reading --http-ca {}", path.display()))?,
            None => Vec::new(),
        },
        allocation: match args.allocator {
            // One call at a time per slot, and the source polls that run
            // outside the slots.
            AllocatorFlag::Pooling => Allocation::Pooling { concurrent_calls: args.slots + jobs::POLL_CALLS },
            AllocatorFlag::OnDemand => Allocation::OnDemand,
        },
        confinement,
        // No fs grant may reach the identity, the cache or other jobs.
        protected_dirs: vec![args.data_dir.clone()],
    })
    .context("starting the plugin runtime")?;
    info!(allocation = ?runtime.allocation(), "plugin runtime ready");

    let link = transfer::Link::default();
    let (outbox_tx, outbox_rx) = tokio::sync::mpsc::channel::<FromAgent>(OUTBOX);
    let jobs = jobs::Jobs::new(runtime, &args.data_dir, args.slots, link.clone(), outbox_tx.clone())?;
    match policy {
        Some(policy) => {
            info!("capabilities are limited by the agent's policy");
            if policy.publishers.is_empty() {
                info!("the policy names no publishers: unsigned plugins run");
            } else {
                let names: Vec<&str> = policy.publishers.keys().map(String::as_str).collect();
                info!(publishers = %names.join(","), "only plugins signed by the policy's publishers run");
            }
            jobs.set_policy(policy);
        }
        None => info!("no --policy: plugins get what the controller grants"),
    }
    let presence = connection::Presence { labels: merged_labels(&identity.labels, &args.labels), slots: args.slots };
    let renewal = std::sync::Arc::new(renewal::Renewal::new(args.data_dir.clone(), identity));
    if let Some(listener) = metrics_listener {
        let health = observe::Health { link: link.clone(), jobs: jobs.clone(), slots: args.slots, renewal: renewal.clone() };
        info!(addr = %listener.local_addr()?, "metrics, /healthz and /readyz served without authentication (--metrics)");
        observe::serve(listener, health);
    }
    let fleet = connection::Fleet::new(controllers, renewal.clone(), presence, jobs.clone(), link, outbox_rx)?;

    tokio::spawn(async move { renewal.run(outbox_tx).await });
    let result = tokio::select! {
        result = fleet.run() => result,
        () = shutdown_signal() => {
            info!("shutting down");
            Ok(())
        }
    };
    // Stopping for good (a signal, or a refusal such as a revocation): what
    // still runs here is killed rather than left behind.
    jobs.cancel_all();
    result
}

/// How granted programs run here; this executable is their launcher.
/// `protected` are the agent's own directories, which no `--sandbox-*`
/// directory may expose.
fn confinement(args: &Args, protected: &[PathBuf]) -> Result<Confinement> {
    let exe = std::env::current_exe().context("finding the agent's own executable")?;
    let unconfined = if args.allow_unconfined_exec { Unconfined::Allow } else { Unconfined::Refuse };
    let reaper = match args.process_reaper {
        ReaperFlag::Auto => ReaperChoice::Auto,
        ReaperFlag::Cgroup => ReaperChoice::Cgroup,
        ReaperFlag::Subreaper => ReaperChoice::Subreaper,
    };
    let mut confinement = Confinement::detect(exe, reaper, unconfined).context("setting up the sandbox of host programs")?;
    if let Confinement::Confined(sandbox) = &mut confinement {
        for (flag, dirs) in [("--sandbox-read", &args.sandbox_read), ("--sandbox-write", &args.sandbox_write)] {
            if let Some(dir) = dirs.iter().find(|d| !d.is_absolute()) {
                return Err(anyhow!(Usage(format!("{flag} {} must be an absolute directory", dir.display()))));
            }
        }
        for (flag, dirs, extra) in [
            ("--sandbox-read", &args.sandbox_read, &mut sandbox.extra_read),
            ("--sandbox-write", &args.sandbox_write, &mut sandbox.extra_write),
        ] {
            for dir in dirs {
                let dir = sluice_runtime::sandbox::grantable_dir(dir, protected)
                    .map_err(|e| anyhow!(Usage(format!("{flag} refused: {e}"))))?;
                extra.push(dir);
            }
        }
        sandbox.max_pids = (args.sandbox_max_pids > 0).then_some(args.sandbox_max_pids);
    }
    Ok(confinement)
}

/// SIGINT or SIGTERM: the agent stops; jobs it was running become `Lost`
/// on the controller and are retried where the plugin allows.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn the_data_dir_is_private_whether_new_or_existing() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let new = root.path().join("a/b");
        create_private_dir(&new).unwrap();
        assert_eq!(mode(&new), 0o700);
        let existing = root.path().join("old");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&existing).unwrap();
        assert_eq!(mode(&existing), 0o700);
    }

    #[test]
    fn labels_merge_token_then_flags_then_the_observed_host() {
        let token = BTreeMap::from([("pool".to_string(), "a".to_string()), ("os".to_string(), "custom".to_string())]);
        let flags = vec![
            ("pool".to_string(), "b".to_string()),
            ("gpu".to_string(), "yes".to_string()),
            ("arch".to_string(), "riscv".to_string()),
        ];
        let labels = merged_labels(&token, &flags);
        assert_eq!(labels["pool"], "b");
        assert_eq!(labels["gpu"], "yes");
        assert_eq!(labels["os"], std::env::consts::OS);
        assert_eq!(labels["arch"], std::env::consts::ARCH);
    }

    #[test]
    fn man_is_answered_before_the_required_flags() {
        let argv = |args: &[&str]| args.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(man_dir(&argv(&["sluice-agent", "--man", "/m"])), Some(PathBuf::from("/m")));
        assert_eq!(man_dir(&argv(&["sluice-agent", "--man=/m"])), Some(PathBuf::from("/m")));
        assert_eq!(man_dir(&argv(&["sluice-agent", "--data-dir", "/m"])), None);
        let dir = tempfile::tempdir().unwrap();
        let page = std::fs::read_to_string(write_man_page(dir.path()).unwrap()).unwrap();
        assert!(page.contains("SLUICE_AGENT_DATA_DIR"));
    }

    #[test]
    fn the_join_token_comes_from_a_file_trimmed_and_never_with_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("join-token");
        std::fs::write(&file, "sjt_abc\n").unwrap();
        let base = ["sluice-agent", "--controller", "x:1", "--data-dir", "d"];
        let args = Args::try_parse_from(base.iter().copied().chain(["--token-file", file.to_str().unwrap()])).unwrap();
        assert_eq!(join_token(&args).unwrap().as_deref(), Some("sjt_abc"));
        let both = base.iter().copied().chain(["--token-file", "f", "--token", "t"]);
        assert!(Args::try_parse_from(both).is_err());
        let missing = Args::try_parse_from(base.iter().copied().chain(["--token-file", "/nonexistent/t"])).unwrap();
        assert!(join_token(&missing).unwrap_err().to_string().contains("/nonexistent/t"));
    }

    #[test]
    fn every_flag_has_a_variable() {
        use clap::CommandFactory as _;
        let cmd = sluice_config::with_env(Args::command(), &AGENT);
        for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "check_config" | "man")) {
            assert!(arg.get_env().is_some(), "--{} has no variable", arg.get_long().unwrap_or_default());
        }
        let env = |id: &str| cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_env()).unwrap().to_owned();
        assert_eq!(env("data_dir"), "SLUICE_AGENT_DATA_DIR");
        assert_eq!(env("controller"), "SLUICE_CONTROLLER");
        assert_eq!(env("token"), "SLUICE_JOIN_TOKEN");
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "sluice-agent",
            "--controller",
            "127.0.0.1:7443",
            "--data-dir",
            "/tmp/x",
            "--labels",
            "a=1,b=2",
        ])
        .unwrap();
        assert_eq!(args.slots, 2);
        assert_eq!(args.runtime_memory_mib, 256);
        assert_eq!(args.allocator, AllocatorFlag::Pooling);
        assert_eq!(args.labels, [("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert!(
            Args::try_parse_from(["sluice-agent", "--controller", "x:1", "--data-dir", "d", "--labels", "nokey"]).is_err()
        );
        assert!(Args::try_parse_from(["sluice-agent", "--controller", "x:1", "--data-dir", "d", "--slots", "0"]).is_err());
        // Several controllers, one leader (issue 18, reach).
        let args = Args::try_parse_from(["sluice-agent", "--controller", "a:1,b:2", "--data-dir", "d"]).unwrap();
        assert_eq!(args.controller, ["a:1", "b:2"]);
        assert!(Args::try_parse_from(["sluice-agent", "--data-dir", "d"]).is_err(), "--controller is required");
    }
}
