//! The `sluice` command line: the admin commands that talk to a controller
//! over its HTTP API, and the output and exit-code conventions scripts rely
//! on (0 success, 1 the operation failed, 2 bad usage or invalid input,
//! 3 not permitted). Every command prints prose or, under `--output json`,
//! JSON: one document, or one object per line for `watch` and `logs -f`.
//!
//! One file per noun (`pipeline.rs`, `execution.rs`, `agent.rs`, ...) owns
//! its subcommands and how they print; this one holds the global flags,
//! the argument parsers they share and the dispatch.

mod access;
mod action;
mod agent;
mod client;
mod execution;
mod output;
mod pipeline;
mod plugin;
mod secret;
mod tag;
mod user;
mod webhook;
// Custom action types and job workers.
mod jobs;
// https (issue 15): named controllers (address, CA, token file).
mod profile;
// Notifications (issue 15, notify).
mod notification;
// The audit log (issue 15, gov).
mod audit;
pub use audit::AuditCmd;
// Data lifecycle (issue 17, life).
mod backup;
// The revision flow (issue 16, pages).
mod revision;
pub use revision::RevisionCmd;
// Packaging and doctor (issue 17, ops).
mod doctor;
mod generate;

pub use action::{ActionCmd, RunArgs};
pub use agent::{AgentCmd, AgentTokenCmd};
pub use client::Client;
pub use execution::{
    ApprovalArgs, ApprovalCmd, ExecutionCmd, LogsArgs, RetryMode, StageCmd, StopMode, TransitionCmd, WatchArgs,
    WatchPrinter, follow_logs, wait_for, watch, watch_as,
};
pub use jobs::{ActionTypeCmd, JobCmd};
pub use notification::{NotificationCmd, NotificationRuleCmd, notify_config};
pub use output::{Column, Table, print_table};
pub use pipeline::PipelineCmd;
pub use plugin::{PluginCmd, PublisherCmd};
pub use secret::SecretCmd;
pub use tag::TagCmd;
pub use user::{AccessKeyCmd, TokenCmd, UserCmd};
pub use webhook::WebhookCmd;
// https (issue 15).
pub use profile::{ProfileCmd, Profiles};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_API: &str = "https://127.0.0.1:7400";

/// The address the controller's API binds: the global `--api` (which
/// admin commands use to reach it), without a scheme; port 0 picks a free
/// port.
pub fn api_bind_address(api: Option<&str>) -> Result<std::net::SocketAddr, Failure> {
    let text = api.unwrap_or(DEFAULT_API);
    // Several controllers, one leader (issue 18, reach).
    if text.contains(',') {
        return Err(Failure::new(
            2,
            format!("--api {text:?} lists several addresses: a controller listens on one (set it with --api or SLUICE_API)"),
        ));
    }
    let bare = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")).unwrap_or(text).trim_end_matches('/');
    bare.parse().map_err(|_| Failure::new(2, format!("--api {text:?} is not an address to listen on, e.g. 127.0.0.1:7400")))
}

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Sluice: self-hosted continuous delivery")]
pub struct Cli {
    /// Admin API of the controller; for a cluster, several separated by
    /// commas (requests go to the first that answers; `sluice controller`
    /// listens on one).
    #[arg(long, global = true, env = "SLUICE_API", value_name = "URL[,URL...]")]
    pub api: Option<String>,
    /// API token (the controller writes one to DATA_DIR/admin.token).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) that the controller's certificate must chain
    /// to; without it, the system's roots (DATA_DIR/ca/ca.crt is a
    /// controller's own CA).
    #[arg(long, global = true, env = "SLUICE_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A profile saved with `sluice profile add` (address, CA, token file);
    /// --api, --ca and --token override its parts.
    #[arg(long, global = true, env = "SLUICE_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

// One value per process, parsed once: the controller's many settings make
// its variant large (issue 18, pg's `--store` took it past clippy's bound).
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the controller.
    Controller(ControllerArgs),
    /// Run a demo: a controller, an agent and a pipeline from git to deploy.
    Demo(DemoArgs),
    // Data lifecycle (issue 17, life).
    /// Copy the store, its artifacts and the controller's keys into a new
    /// directory on the controller's host, while it runs (admin only).
    Backup(backup::BackupArgs),
    /// Create, inspect and run pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Follow an execution live, stage by stage.
    Watch(WatchArgs),
    /// Print the logs of an execution.
    Logs(LogsArgs),
    /// Hold executions before a stage, or let them through again.
    #[command(subcommand)]
    Transition(TransitionCmd),
    /// Stages of an execution.
    #[command(subcommand)]
    Stage(StageCmd),
    /// One execution in detail.
    #[command(subcommand)]
    Execution(ExecutionCmd),
    /// The agent fleet.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Join tokens for enrolling agents.
    #[command(name = "agent-token", subcommand)]
    AgentToken(AgentTokenCmd),
    /// Registered plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Publishers whose signed plugins this controller trusts.
    #[command(subcommand)]
    Publisher(PublisherCmd),
    /// Webhooks that start a pipeline on a push (GitHub, GitLab, Gitea, generic).
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Secrets granted to plugins (stored encrypted; values are never shown).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Approve or reject a manual approval action.
    #[command(subcommand)]
    Approval(ApprovalCmd),
    /// Run one action locally, in the sandbox an agent uses (no controller needed).
    #[command(subcommand)]
    Action(ActionCmd),
    /// Named users of the admin API (admin role only).
    #[command(subcommand)]
    User(UserCmd),
    /// API tokens of users (admin role only).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Custom action types: actions of owner Custom that job workers run.
    #[command(name = "action-type", subcommand)]
    ActionType(ActionTypeCmd),
    /// A job worker's calls: poll, acknowledge, show, succeed, fail.
    #[command(subcommand)]
    Job(JobCmd),
    /// Access keys of users for the AWS CLI and SDKs (admin role only).
    #[command(name = "access-key", subcommand)]
    AccessKey(AccessKeyCmd),
    /// Tags of pipelines and webhooks, by ARN.
    #[command(subcommand)]
    Tag(TagCmd),
    // https (issue 15).
    /// Named controllers: address, CA and token file, chosen with --profile.
    #[command(subcommand)]
    Profile(ProfileCmd),
    // Notifications (issue 15, notify).
    /// Rules that send a pipeline's events to webhooks and Slack.
    #[command(name = "notification-rule", subcommand)]
    NotificationRule(NotificationRuleCmd),
    /// Notifications sent, pending and dead-lettered.
    #[command(subcommand)]
    Notification(NotificationCmd),
    // The audit log (issue 15, gov).
    /// The audit log: every call, who made it, from where, and how it ended (admin only).
    #[command(subcommand)]
    Audit(AuditCmd),
    // Permissions (issue 15, policy).
    /// Teams, their members, and the roles they grant other teams.
    #[command(subcommand)]
    Team(access::TeamCmd),
    /// Roles: built-in, and custom ones from a JSON policy file.
    #[command(subcommand)]
    Role(access::RoleCmd),
    /// Who the token is: user, teams, roles and the statements they hold.
    Whoami,
    /// Whether the token may use an operation on a resource (exit 0 yes, 3 no).
    Can(access::CanArgs),
    // The revision flow (issue 16, pages).
    /// Where a source revision went: every pipeline, stage and action it reached.
    #[command(subcommand)]
    Revision(RevisionCmd),
    // Packaging and doctor (issue 17, ops).
    /// Print a shell completion script (bash, zsh or fish).
    Completion(generate::CompletionArgs),
    /// Write the man pages, one per command.
    Man(generate::ManArgs),
    /// Check a controller's or an agent's setup on this host and say what to fix.
    Doctor(doctor::DoctorArgs),
}

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Where the store, artifacts, CA and admin token live; created on first start.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Fleet (QUIC) address for agents.
    #[arg(long, default_value = "0.0.0.0:7443", value_name = "ADDR")]
    pub fleet: std::net::SocketAddr,
    /// Wait for the disk on every commit (survive power loss, not only a killed process).
    #[arg(long)]
    pub fsync: bool,
    /// Lifetime of agent certificates; agents renew theirs at 70-90 % of it.
    #[arg(long, default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    pub agent_cert_lifetime: Duration,
    /// How long an agent may go without reporting a job in a heartbeat
    /// before the job is lost (agents heartbeat six times per lease).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub lease_timeout: Duration,
    /// How often an action that sets `retryOnAgentLost` runs again after
    /// losing its agent, per run of the action.
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_LOST_RETRIES, value_name = "N")]
    pub max_lost_retries: u32,
    /// Bytes of log kept per action attempt (e.g. 512KiB, 16MiB); a log that
    /// grows past it ends with a "log truncated" line.
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_action_log: u64,
    /// How often artifacts that no stored execution refers to are removed;
    /// only those older than this are (a result may still be on its way).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub artifact_gc_interval: Duration,
    /// Accept only plugins signed by a trusted publisher (`sluice publisher add`);
    /// without it unsigned plugins are accepted, signed ones still verified.
    #[arg(long)]
    pub require_signed_plugins: bool,
    /// Slots an agent may claim at most; an agent started with more
    /// `--slots` gets this many.
    #[arg(long, default_value_t = crate::driver::DEFAULT_MAX_AGENT_SLOTS, value_name = "N")]
    pub max_agent_slots: u32,
    /// Bytes of artifacts one agent may have uploaded that no result of
    /// its jobs has named yet; an upload past it is refused.
    #[arg(long, default_value = "16GiB", value_parser = parse_size, value_name = "SIZE")]
    pub agent_upload_quota: u64,
    /// Free space kept on the file system of the artifact store: an upload
    /// that would leave less is refused.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_free_space: u64,
    /// How long a job worker has from polling a job to its result (to
    /// acknowledge it, too); a job past it times out and fails its action.
    #[arg(long, default_value = "20m", value_parser = parse_duration, value_name = "DURATION")]
    pub worker_job_timeout: Duration,
    // https (issue 15): how the API and the webhook listener speak.
    /// A name clients reach the API by (DNS name or IP address; repeatable):
    /// the certificate the controller's CA issues for the API covers these,
    /// the bind address, localhost, 127.0.0.1 and ::1.
    #[arg(long = "api-name", value_name = "NAME")]
    pub api_names: Vec<String>,
    /// The API's certificate chain (PEM, leaf first) instead of one from the
    /// controller's CA; read again whenever it or the key changes.
    #[arg(long, value_name = "FILE", requires = "api_key")]
    pub api_cert: Option<PathBuf>,
    /// The private key (PEM) of --api-cert.
    #[arg(long, value_name = "FILE", requires = "api_cert")]
    pub api_key: Option<PathBuf>,
    /// Serve the API over plain HTTP: only on a loopback address.
    #[arg(long, conflicts_with_all = ["api_cert", "api_names"])]
    pub api_plain_http: bool,
    /// Serve webhook deliveries (POST /v1/webhooks/PIPELINE) and /healthz
    /// on an address of their own; the API then serves no deliveries.
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// Serve --webhook-listen over plain HTTP: only on a loopback address.
    #[arg(long, requires = "webhook_listen")]
    pub webhook_plain_http: bool,
    // Notifications (issue 15, notify).
    /// PEM certificates trusted for notification receivers (HTTPS), besides
    /// the system's root certificates.
    #[arg(long, value_name = "FILE")]
    pub notification_ca: Option<PathBuf>,
    /// Let notification targets be plain http:// URLs (their payloads and
    /// Slack URLs then travel in clear).
    #[arg(long)]
    pub notification_allow_http: bool,
    /// Let notification targets be on loopback and private networks
    /// (10/8, 172.16/12, 192.168/16, 127/8, fc00::/7...). Link-local and
    /// metadata addresses (169.254.0.0/16, fe80::/10) are refused always.
    #[arg(long)]
    pub notification_allow_private: bool,
    /// Attempts of a notification delivery, the first included, before it
    /// is a dead letter (waits 1 s, 2 s, 4 s ... up to 5 min between).
    #[arg(long, default_value_t = crate::notify::retry::DEFAULT_MAX_ATTEMPTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub notification_max_attempts: u32,
    // The audit log (issue 15, gov).
    /// Days audit records are kept; older ones are pruned (the last pruned
    /// record's hash is kept, so the rest still verifies).
    #[arg(long, default_value_t = crate::driver::DEFAULT_AUDIT_RETENTION_DAYS, value_name = "DAYS",
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub audit_retention_days: u64,
    // Data lifecycle (issue 17, life).
    /// Keep the newest N executions of every pipeline (`N`) or of one
    /// (`PIPELINE=N`, which overrides the global N); older ones that ended
    /// go with their logs and the artifacts nothing else refers to.
    /// Repeatable; `PIPELINE=unlimited` exempts a pipeline. Running
    /// executions and each stage's last good run (its rollback target) stay.
    #[arg(long, value_name = "[PIPELINE=]N")]
    pub keep_executions: Vec<String>,
    /// Keep executions that ended within the last D days, of every pipeline
    /// (`D`) or of one (`PIPELINE=D`, `PIPELINE=unlimited`). Repeatable; with
    /// --keep-executions, an execution goes when it falls outside either.
    #[arg(long, value_name = "[PIPELINE=]D")]
    pub keep_days: Vec<String>,
    // Metrics, logs and readiness (issue 17, obs).
    /// Serve /metrics, /readyz and /healthz on this address over plain HTTP
    /// without authentication (any address: they carry no secret). The
    /// API serves /metrics too, to a token allowed sluice:GetMetrics.
    #[arg(long = "metrics", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    // PostgreSQL (issue 18, pg).
    /// Where the state is kept: `sqlite` (sluice.db in the data dir, the
    /// default) or a PostgreSQL database, postgres://USER@HOST:PORT/DATABASE
    /// (no TLS: a unix socket or a trusted network; the password may come
    /// from PGPASSWORD). Several controllers may share one database.
    // Parsed by the controller, not clap: clap's error would print the
    // value, password and all.
    #[arg(long, value_name = "sqlite|URL")]
    pub store: Option<String>,
    /// How the log on stderr is written: `text` (coloured only when stderr
    /// is a terminal) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    // High availability (issue 18, ha).
    /// In a cluster (a PostgreSQL --store): the https:// URL the other
    /// controllers forward API requests to while this one leads. Defaults
    /// to the API's listen address when that is not a wildcard.
    #[arg(long, value_name = "URL")]
    pub advertise_api: Option<String>,
    /// In a cluster: the HOST:PORT agents reach this controller's fleet
    /// port by. Defaults to --fleet when that is not a wildcard.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_fleet: Option<String>,
    // Artifacts in S3 (issue 18, s3).
    /// Where artifacts and plugin components live: `s3://BUCKET/PREFIX` for
    /// S3-compatible object storage; without it, the data dir.
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub artifacts: Option<String>,
    /// The object storage's endpoint (`https://minio.example:9000`); also
    /// AWS_ENDPOINT_URL. Without it, AWS S3 in --s3-region.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region (signed into every request); also AWS_REGION,
    /// else us-east-1.
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address objects as ENDPOINT/BUCKET/KEY rather than BUCKET.ENDPOINT/KEY
    /// (MinIO, Ceph and most servers other than AWS want it).
    #[arg(long)]
    pub s3_path_style: bool,
    /// The access key id; also AWS_ACCESS_KEY_ID.
    #[arg(long, value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// The secret access key; also AWS_SECRET_ACCESS_KEY. In a --config
    /// file only when that file is readable by its owner alone.
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// A session token of temporary credentials; also AWS_SESSION_TOKEN.
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    // Configuration (issue 17, ops): every flag above also comes from a
    // SLUICE_* variable and from this file (`CONTROLLER`, `parse_command_line`).
    /// A TOML file of settings: keys are these flags' long names
    /// (`data-dir = "/var/lib/sluice"`); flags and SLUICE_* variables win over it.
    #[arg(long, env = "SLUICE_CONTROLLER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the settings, print them as they would be used, with where
    /// each came from, and exit without starting.
    #[arg(long)]
    pub check_config: bool,
}

/// Where `sluice controller`'s settings are in the command line: each flag
/// also reads `SLUICE_<FLAG>` (`--data-dir`: `SLUICE_DATA_DIR`) and the key
/// `<flag>` of the `--config` file.
pub const CONTROLLER: sluice_config::Daemon = sluice_config::Daemon {
    name: "sluice controller",
    path: &["controller"],
    env_prefix: "SLUICE_",
    config_flag: "config",
    not_settings: &["check_config"],
    globals: &["api"],
};

/// The whole command line with the controller's variables: what is parsed,
/// completed and documented in man pages.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    sluice_config::with_env(Cli::command(), &CONTROLLER)
}

/// Parses the command line, with the controller's variables and config
/// file when it runs the controller; its effective settings then too.
pub fn parse_command_line(
    argv: Vec<std::ffi::OsString>,
) -> Result<(Cli, Option<sluice_config::Settings>), sluice_config::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let parsed = sluice_config::parse(Cli::command(), argv, &CONTROLLER)?;
    let cli = Cli::from_arg_matches(&parsed.matches)?;
    Ok((cli, parsed.settings))
}

/// A size in bytes: a number with an optional unit B, KiB, MiB or GiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}: expected e.g. 4096, 512KiB, 16MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {s:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Exit after the first execution: 0 if it succeeded, 1 if not.
    #[arg(long)]
    pub once: bool,
    /// Data dir of the demo (default: a fresh `sluice-demo` under the temp dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(1, format!("{e:#}"))
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 15m, 1h, 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration {s:?}: unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// `k=v,k2=v2` into a map.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| format!("label {pair:?} must be KEY=VALUE"))?;
            if k.trim().is_empty() {
                return Err(format!("label {pair:?} has an empty key"));
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `KEY=VALUE` (set) and `KEY-` (remove) arguments of `agent label`.
pub fn parse_label_changes(changes: &[String]) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for change in changes {
        match (change.split_once('='), change.strip_suffix('-')) {
            (Some((k, v)), _) if !k.trim().is_empty() => {
                set.insert(k.trim().to_string(), v.trim().to_string());
            }
            (None, Some(k)) if !k.trim().is_empty() => remove.push(k.trim().to_string()),
            _ => return Err(format!("label change {change:?} must be KEY=VALUE (set) or KEY- (remove)")),
        }
    }
    Ok((set, remove))
}

/// What every admin command is given: where the API is, who calls it,
/// and how to print.
pub struct Ctx {
    api: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
    profile: Option<String>,
    pub output: Output,
}

impl Ctx {
    /// The API client; an admin command without a token is a usage error.
    /// The flags (and their variables) win over the profile's parts.
    pub fn client(&self) -> Result<Client, Failure> {
        let profile = Profiles::load()?.select(self.profile.as_deref())?;
        let api = self.api.clone().or_else(|| profile.as_ref().map(|p| p.api.clone()));
        let token = match (&self.token, &profile) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(p)) => p.token()?,
            (None, None) => None,
        };
        let ca = self.ca.clone().or_else(|| profile.as_ref().and_then(|p| p.ca.clone()));
        let ca = match ca {
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                Failure::new(2, format!("reading the CA file {} (--ca, SLUICE_CA or the profile): {e}", path.display()))
            })?),
            None => None,
        };
        Client::with_ca(api.as_deref(), token.as_deref(), ca.as_deref())
    }
}

/// Runs an admin command; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, Failure> {
    let ctx = Ctx { api: cli.api, token: cli.token, ca: cli.ca, profile: cli.profile, output: cli.output };
    match cli.command {
        Cmd::Controller(_) | Cmd::Demo(_) => unreachable!("handled by main"),
        Cmd::Pipeline(cmd) => pipeline::run(&ctx, cmd).await,
        Cmd::Watch(args) => execution::run_watch(&ctx, args).await,
        Cmd::Logs(args) => execution::run_logs(&ctx, args).await,
        Cmd::Transition(cmd) => execution::run_transition(&ctx, cmd).await,
        Cmd::Stage(cmd) => execution::run_stage(&ctx, cmd).await,
        Cmd::Execution(cmd) => execution::run_execution(&ctx, cmd).await,
        Cmd::Approval(cmd) => execution::run_approval(&ctx, cmd).await,
        Cmd::Agent(cmd) => agent::run(&ctx, cmd).await,
        Cmd::AgentToken(cmd) => agent::run_token(&ctx, cmd).await,
        Cmd::Plugin(cmd) => plugin::run(&ctx, cmd).await,
        Cmd::Publisher(cmd) => plugin::run_publisher(&ctx, cmd).await,
        Cmd::Webhook(cmd) => webhook::run(&ctx, cmd).await,
        Cmd::Secret(cmd) => secret::run(&ctx, cmd).await,
        Cmd::Action(cmd) => action::run(&ctx, cmd).await,
        Cmd::User(cmd) => user::run(&ctx, cmd).await,
        Cmd::Token(cmd) => user::run_token(&ctx, cmd).await,
        Cmd::ActionType(cmd) => jobs::run(&ctx, cmd).await,
        Cmd::Job(cmd) => jobs::run_job(&ctx, cmd).await,
        Cmd::AccessKey(cmd) => user::run_access_key(&ctx, cmd).await,
        Cmd::Tag(cmd) => tag::run(&ctx, cmd).await,
        Cmd::Profile(cmd) => profile::run(&ctx, cmd),
        Cmd::NotificationRule(cmd) => notification::run_rule(&ctx, cmd).await,
        Cmd::Notification(cmd) => notification::run(&ctx, cmd).await,
        Cmd::Audit(cmd) => audit::run(&ctx, cmd).await,
        // Permissions (issue 15, policy).
        Cmd::Team(cmd) => access::run_team(&ctx, cmd).await,
        Cmd::Role(cmd) => access::run_role(&ctx, cmd).await,
        Cmd::Whoami => access::run_whoami(&ctx).await,
        Cmd::Can(args) => access::run_can(&ctx, args).await,
        // Data lifecycle (issue 17, life).
        Cmd::Backup(args) => backup::run(&ctx, args).await,
        // The revision flow (issue 16, pages).
        Cmd::Revision(cmd) => revision::run(&ctx, cmd).await,
        // Packaging and doctor (issue 17, ops).
        Cmd::Completion(args) => generate::completion(args),
        Cmd::Man(args) => generate::man(args),
        Cmd::Doctor(args) => doctor::run(&ctx, args).await,
    }
}

/// Reads a file as text, saying which file failed.
pub fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn every_controller_flag_has_a_variable() {
        let cmd = command();
        let controller = cmd.find_subcommand("controller").unwrap();
        for arg in controller.get_arguments().filter(|a| a.get_id() != "check_config") {
            let env = arg.get_env().unwrap_or_else(|| panic!("{:?} has no variable", arg.get_long()));
            assert!(env.to_string_lossy().starts_with("SLUICE_"), "{env:?}");
        }
        let env = |id: &str| controller.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_env()).unwrap();
        assert_eq!(env("data_dir"), "SLUICE_DATA_DIR");
        assert_eq!(env("api_names"), "SLUICE_API_NAME");
        assert_eq!(env("config"), "SLUICE_CONTROLLER_CONFIG");
    }

    #[test]
    fn the_controller_listens_where_admin_commands_look() {
        assert_eq!(api_bind_address(None).unwrap().to_string(), "127.0.0.1:7400");
        assert_eq!(api_bind_address(Some("http://127.0.0.1:0/")).unwrap().port(), 0);
        assert_eq!(api_bind_address(Some("https://127.0.0.1:7401")).unwrap().port(), 7401);
        assert_eq!(api_bind_address(Some("nope")).unwrap_err().code, 2);
        assert!(api_bind_address(Some("https://a:1,https://b:2")).unwrap_err().message.contains("several addresses"));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("1w").is_err());
        assert_eq!(parse_labels("a=1, b=2").unwrap().len(), 2);
        assert!(parse_labels("a").is_err());
    }

    #[test]
    fn fleet_limits_parse_and_refuse_nonsense() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("16MiB").unwrap(), crate::driver::DEFAULT_MAX_ACTION_LOG);
        assert!(parse_size("3 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("99999999999GiB").unwrap_err().contains("too large"));
    }
}
