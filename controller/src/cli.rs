//! The `sluice` command line: the admin commands that talk to a controller
//! over its HTTP API, and the output and exit-code conventions scripts rely
//! on (0 success, 1 the operation failed, 2 bad usage or invalid input,
//! 3 not permitted).

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_API: &str = "http://127.0.0.1:7400";

/// The address the controller's API binds: the global `--api` (which
/// admin commands use to reach it), without a scheme; port 0 picks a free
/// port.
pub fn api_bind_address(api: Option<&str>) -> Result<std::net::SocketAddr, Failure> {
    let text = api.unwrap_or(DEFAULT_API);
    let bare = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
    bare.parse().map_err(|_| Failure::new(2, format!("--api {text:?} is not an address to listen on, e.g. 127.0.0.1:7400")))
}

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "Sluice: self-hosted continuous delivery")]
pub struct Cli {
    /// Admin API of the controller.
    #[arg(long, global = true, env = "SLUICE_API", value_name = "URL")]
    pub api: Option<String>,
    /// API token (the controller writes one to DATA_DIR/admin.token).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
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

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the controller.
    Controller(ControllerArgs),
    /// Run a demo: a controller, an agent and a pipeline from git to deploy.
    Demo(DemoArgs),
    /// Create, inspect and run pipelines.
    #[command(subcommand)]
    Pipeline(PipelineCmd),
    /// Follow an execution live, stage by stage.
    Watch {
        pipeline: String,
        /// The execution to follow (default: the newest).
        #[arg(long)]
        execution: Option<String>,
    },
    /// Print the logs of an execution.
    Logs {
        pipeline: String,
        /// The execution (default: the newest).
        #[arg(long)]
        execution: Option<String>,
        /// Keep printing lines as they arrive until the execution ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
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
}

#[derive(Subcommand, Debug)]
pub enum ActionCmd {
    /// Run a plugin once on local directories, exactly as an agent would.
    Run {
        /// A component file (`.wasm`) or a built-in `provider@version`.
        #[arg(long)]
        plugin: String,
        /// Configuration (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// An input artifact directory, mounted read-only (repeatable).
        #[arg(long = "input", value_name = "NAME=DIR")]
        inputs: Vec<String>,
        /// An output artifact directory, created if needed (repeatable).
        /// (`--output` alone is the global output format.)
        #[arg(long = "output-dir", value_name = "NAME=DIR")]
        outputs: Vec<String>,
        /// A grant: exec=PROGRAMS, http=HOST:PORT, secrets=NAMES, env=NAMES, fs=DIRS,
        /// net=tcp:PORT (repeatable).
        #[arg(long = "grant", value_name = "KIND=VALUES")]
        grants: Vec<String>,
        /// A secret value from the environment variable of that name (repeatable).
        #[arg(long = "secret-env", value_name = "NAME")]
        secret_env: Vec<String>,
        /// A variable the plugin sees (repeatable), e.g. variables.ENV=prod.
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        #[arg(long, default_value = "60m", value_parser = parse_duration)]
        timeout: Duration,
        /// Linear memory limit in MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: usize,
        /// Certificate authorities (PEM) the plugin's HTTPS trusts besides
        /// the Mozilla roots, as `sluice-agent --http-ca`.
        #[arg(long, value_name = "FILE")]
        http_ca: Option<PathBuf>,
        /// Where Landlock is missing, run granted programs unconfined
        /// (with the whole host) instead of refusing them, as
        /// `sluice-agent --allow-unconfined-exec`.
        #[arg(long)]
        allow_unconfined_exec: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalCmd {
    /// Approve: counts once per user; the user who started the execution cannot.
    Approve(ApprovalArgs),
    /// Reject: the action, and so the execution, fails.
    Reject(ApprovalArgs),
}

#[derive(Args, Debug)]
pub struct ApprovalArgs {
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    #[arg(long, default_value = "")]
    pub comment: String,
    /// The execution (default: the newest waiting at this action).
    #[arg(long)]
    pub execution: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user (role operator unless --role admin).
    Create {
        name: String,
        #[arg(long, default_value = "operator", value_parser = ["operator", "admin"])]
        role: String,
    },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create an API token for a user; prints it alone, once.
    Create {
        #[arg(long)]
        user: String,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token: it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Make (or replace) a pipeline's webhook secret; prints it alone, once.
    /// Deliveries go to POST /v1/webhooks/PIPELINE, signed with it.
    Create { pipeline: String },
    /// Remove a pipeline's webhook: deliveries are refused.
    Delete { pipeline: String },
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Set a secret; the value is read from standard input (or --from-file),
    /// never from the command line, where other users could see it.
    Set {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Pipelines that may grant the secret: names or glob patterns
        /// (`web`, `deploy-*`, `*` for all), comma-separated. Required for a
        /// new secret; an existing one keeps its pipelines when not given.
        #[arg(long, value_name = "PATTERN,...", value_delimiter = ',')]
        pipelines: Option<Vec<String>>,
    },
    /// List secrets (names, pipelines and dates, never values).
    List,
    /// Delete a secret.
    Delete { name: String },
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

#[derive(Subcommand, Debug)]
pub enum PipelineCmd {
    /// Create a pipeline from a JSON or YAML file and start its first execution.
    Create { file: PathBuf },
    /// Check a declaration as `create` would, without creating anything;
    /// exit 0 when valid, 2 with every problem when not.
    Validate {
        file: PathBuf,
        /// Remap AWS/ThirdParty providers first (as `import` does).
        #[arg(long, value_name = "FILE")]
        provider_map: Option<PathBuf>,
    },
    /// Create a pipeline from CodePipeline's `get-pipeline` output, mapping
    /// its providers to Sluice's (built-in defaults, e.g. AWS/CodeBuild -> shell,
    /// overridden by --provider-map).
    Import {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        provider_map: Option<PathBuf>,
        /// Print the converted declaration instead of creating the pipeline.
        #[arg(long)]
        dry_run: bool,
    },
    /// Store a new version of a pipeline from a file; running executions keep theirs.
    Update { file: PathBuf },
    /// Delete a pipeline with its history.
    Delete { name: String },
    /// Print a pipeline's declaration, as `create` accepts it.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// List pipelines.
    List,
    /// Start an execution; prints its id.
    Start {
        name: String,
        /// Override a pipeline variable (repeatable).
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        /// Run a source action at this revision instead of its newest (repeatable).
        #[arg(long = "source-revision", value_name = "ACTION=REVISION")]
        source_revisions: Vec<String>,
        /// Wait for the end; exit 0 only if the execution succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Stop an execution: `wait` lets running actions finish, `abandon` cancels them.
    Stop {
        name: String,
        execution: String,
        #[arg(long, value_enum, default_value_t = StopMode::Wait)]
        mode: StopMode,
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until the execution has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Show the latest state of every stage and action.
    State { name: String },
    /// List recent executions.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        max: usize,
        /// Continue after an earlier page (the `nextToken` it printed).
        #[arg(long)]
        next_token: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExecutionCmd {
    /// Every action of an execution: status, attempt, agent, times, outputs.
    Get { pipeline: String, execution: String },
}

#[derive(Subcommand, Debug)]
pub enum StageCmd {
    /// Run a failed stage of a failed execution again, and go on from it.
    Retry {
        pipeline: String,
        stage: String,
        execution: String,
        #[arg(long, value_enum, default_value_t = RetryMode::Failed)]
        mode: RetryMode,
        /// Wait for the end; exit 0 only if the execution succeeds.
        #[arg(long)]
        wait: bool,
    },
    /// Run a stage again in a new execution with the artifacts of an earlier
    /// one in which it succeeded (by default the newest such execution).
    Rollback {
        pipeline: String,
        stage: String,
        #[arg(long, value_name = "EXECUTION")]
        target: Option<String>,
        /// Wait for the end; exit 0 only if the rollback succeeds.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RetryMode {
    /// Only the actions that failed.
    Failed,
    /// Every action of the stage.
    All,
}

#[derive(Subcommand, Debug)]
pub enum TransitionCmd {
    /// Stop executions from entering STAGE; the newest waits before it.
    Disable {
        pipeline: String,
        stage: String,
        #[arg(long)]
        reason: String,
    },
    /// Let executions enter STAGE again; the waiting one goes on.
    Enable { pipeline: String, stage: String },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopMode {
    /// Let running actions finish; start nothing new.
    Wait,
    /// Cancel running actions on their agents now.
    Abandon,
}

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// List enrolled agents.
    List,
    /// Let the agent finish what it runs and give it nothing new.
    Drain { id: String },
    /// Cut the agent off now; it is refused until enabled again.
    Disable { id: String },
    /// Let a drained or disabled agent take work again.
    Enable { id: String },
    /// Revoke the agent for good: its certificates go on the revocation
    /// list, its live connection is closed and every later handshake is
    /// refused. The host must enroll again with a join token.
    Revoke { id: String },
    /// Set or remove an agent's labels: `KEY=VALUE` sets, `KEY-` removes.
    /// These (and the join token's) are the labels scheduling trusts; `os`
    /// and `arch` are observed from the host and cannot be set. Admin
    /// role only.
    Label {
        id: String,
        #[arg(value_name = "KEY=VALUE|KEY-", required = true)]
        changes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AgentTokenCmd {
    /// Create a join token; prints it alone (admin role only).
    Create {
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many agents may enroll with it (default: unlimited until expiry).
        #[arg(long)]
        uses: Option<u32>,
        /// Labels given to agents enrolled with it (k=v,...).
        #[arg(long, value_name = "K=V,...")]
        labels: Option<String>,
        /// Label keys an agent enrolled with it may set for itself with
        /// `sluice-agent --labels`; other keys it claims are ignored.
        #[arg(long, value_name = "KEY,...", value_delimiter = ',')]
        allow_agent_labels: Vec<String>,
    },
    /// List join tokens (never their secrets).
    List,
    /// Revoke a join token: no agent can enroll with it any more (admin
    /// role only).
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// List registered plugins.
    List,
    /// Register a plugin component (`provider@version` from its own describe()).
    /// A signature FILE.sig beside it is sent with it (see `plugin sign`).
    Push {
        file: PathBuf,
        /// The signature document (default: FILE.sig when it exists).
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
    },
    /// Sign a plugin component with a publisher's private key: writes a
    /// detached signature (FILE.sig) binding the component's sha256 to the key.
    Sign {
        file: PathBuf,
        /// The publisher's ed25519 private key (PKCS#8 PEM, from `plugin keygen`
        /// or `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Where to write the signature (default: FILE.sig).
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
    },
    /// Make a publisher key pair: DIR/NAME.key (private, 0600) and DIR/NAME.pub.
    Keygen {
        /// Directory to write the keys into (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// File name of the pair.
        #[arg(long, default_value = "publisher")]
        name: String,
    },
    /// What a registered plugin says about itself: configuration, artifacts, capabilities.
    Describe {
        /// `provider@version`
        plugin: String,
    },
    /// Remove a pushed plugin version no pipeline uses.
    Delete {
        /// `provider@version`
        plugin: String,
    },
    /// Write a new plugin crate from a template, ready to build and push.
    New {
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublisherCmd {
    /// Trust a publisher's key for `plugin push` (admin role only).
    Add {
        name: String,
        /// The publisher's public key (PEM, e.g. NAME.pub from `plugin keygen`).
        public_key_file: PathBuf,
    },
    /// List trusted publishers.
    List,
    /// Stop trusting a publisher (plugins it signed stay registered).
    Remove { name: String },
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

/// A client of the admin API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(api: Option<&str>, token: Option<&str>) -> Result<Self, Failure> {
        let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            Failure::new(2, "no API token: pass --token or set SLUICE_TOKEN (the controller writes one to DATA_DIR/admin.token)")
        })?;
        let base = api.unwrap_or(DEFAULT_API).trim_end_matches('/').to_string();
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        let http = reqwest::Client::builder().build().map_err(|e| Failure::new(1, e.to_string()))?;
        Ok(Self { base, token: token.trim().to_string(), http })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).body(body)).await
    }

    /// A POST with one extra header.
    pub async fn post_with(&self, path: &str, header: (&str, &str), body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).header(header.0, header.1).body(body)).await
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.put(self.url(path)).body(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.delete(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().unwrap_or("request failed").to_string();
        let diagnostics: Vec<&str> =
            body["error"]["diagnostics"].as_array().map(|d| d.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let mut text = message;
        for d in diagnostics {
            text.push_str("\n  ");
            text.push_str(d);
        }
        let code = match status.as_u16() {
            400 => 2,
            401 | 403 => 3,
            _ => 1,
        };
        Err(Failure::new(code, text))
    }

    fn unreachable(&self, e: reqwest::Error) -> Failure {
        Failure::new(
            1,
            format!("cannot reach the controller at {}: {e} (is `sluice controller` running? set --api or SLUICE_API)", self.base),
        )
    }

    /// Live events of a pipeline.
    pub async fn events(
        &self,
        pipeline: &str,
    ) -> Result<impl futures_util::Stream<Item = Value> + Unpin + use<>, Failure> {
        let response = self
            .http
            .get(self.url(&format!("/events?pipeline={pipeline}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status() == 401 {
            return Err(Failure::new(3, "missing or invalid bearer token"));
        }
        let mut buffer = String::new();
        Ok(Box::pin(response.bytes_stream().flat_map(move |chunk| {
            let mut out = Vec::new();
            if let Ok(bytes) = chunk {
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    for line in event.lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str(data.trim())
                        {
                            out.push(v);
                        }
                    }
                }
            }
            futures_util::stream::iter(out)
        })))
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Who signed a plugin, for tables: built-ins are part of the binary.
fn signer(p: &Value) -> String {
    match (p["signedBy"].as_str(), p["builtin"] == json!(true)) {
        (Some(publisher), _) => publisher.to_string(),
        (None, true) => "(built-in)".into(),
        (None, false) => "unsigned".into(),
    }
}

/// Writes a new publisher key pair into `dir`: `NAME.key` (created 0600,
/// never over an existing file) and `NAME.pub`; returns both paths and the
/// key id.
fn write_key_pair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf, String), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(Failure::new(2, format!("key name {name:?} may contain only A-Z a-z 0-9 . _ -")));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::new(1, format!("cannot create {}: {e}", dir.display())))?;
    let (key_file, pub_file) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    for path in [&key_file, &pub_file] {
        if path.exists() {
            return Err(Failure::new(2, format!("{} exists: a key pair is never overwritten", path.display())));
        }
    }
    let (key, pem) = sluice_runtime::signature::SigningKey::generate().map_err(|e| Failure::new(1, e.to_string()))?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()));
    written.map_err(|e| Failure::new(1, format!("cannot write {}: {e}", key_file.display())))?;
    let public = key.public_key();
    std::fs::write(&pub_file, public.to_pem())
        .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", pub_file.display())))?;
    Ok((key_file, pub_file, public.key_id()))
}

/// A secret's pipeline patterns as one column: `web,deploy-*`.
fn patterns(value: &Value) -> String {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
}

/// Runs an admin command; returns the exit code.
pub async fn run(cli: Cli) -> Result<i32, Failure> {
    let json_out = cli.output == Output::Json;
    let client = || Client::new(cli.api.as_deref(), cli.token.as_deref());
    match cli.command {
        Cmd::Controller(_) | Cmd::Demo(_) => unreachable!("handled by main"),
        Cmd::Pipeline(PipelineCmd::Create { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
            let out = client()?.post("/pipelines", text).await?;
            if json_out {
                print_json(&out);
            } else {
                println!(
                    "pipeline {} created; execution {} started",
                    s(&out["pipeline"]["name"]),
                    s(&out["pipelineExecutionId"])
                );
            }
        }
        Cmd::Pipeline(PipelineCmd::Validate { file, provider_map }) => {
            let text = read_declaration(&file, provider_map.as_deref())?;
            let out = client()?.post("/validate-pipeline", text).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("{}: pipeline {} is valid", file.display(), s(&out["pipelineName"]));
            }
        }
        Cmd::Pipeline(PipelineCmd::Import { file, provider_map, dry_run }) => {
            let text = read_declaration(&file, Some(provider_map.as_deref().unwrap_or(Path::new(""))))?;
            if dry_run {
                println!("{text}");
            } else {
                let out = client()?.post("/pipelines", text).await?;
                if json_out {
                    print_json(&out);
                } else {
                    println!(
                        "pipeline {} imported; execution {} started",
                        s(&out["pipeline"]["name"]),
                        s(&out["pipelineExecutionId"])
                    );
                }
            }
        }
        Cmd::Pipeline(PipelineCmd::Update { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
            // The name comes from the declaration itself.
            let name = crate::pipeline::parse(&text)
                .map(|d| d.pipeline.name)
                .map_err(|d| Failure::new(2, format!("pipeline declaration is invalid:\n{d}")))?;
            let out = client()?.put(&format!("/pipelines/{name}"), text).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("pipeline {name} updated to version {}", s(&out["pipeline"]["version"]));
            }
        }
        Cmd::Pipeline(PipelineCmd::Delete { name }) => {
            let out = client()?.delete(&format!("/pipelines/{name}")).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("pipeline {name} deleted");
            }
        }
        Cmd::Pipeline(PipelineCmd::Get { name, version }) => {
            let path = match version {
                Some(v) => format!("/pipelines/{name}?version={v}"),
                None => format!("/pipelines/{name}"),
            };
            let mut out = client()?.get(&path).await?;
            if !json_out {
                // The table form is the declaration itself, ready for create.
                if let Some(map) = out.as_object_mut() {
                    map.remove("metadata");
                }
                if let Some(p) = out["pipeline"].as_object_mut() {
                    p.remove("version");
                }
            }
            print_json(&out);
        }
        Cmd::Pipeline(PipelineCmd::List) => {
            let out = client()?.get("/pipelines").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["pipelines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| vec![s(&p["name"]), s(&p["version"]), s(&p["updated"])])
                    .collect();
                print_table(&["NAME", "VERSION", "UPDATED"], &rows);
            }
        }
        Cmd::Pipeline(PipelineCmd::Start { name, variables, source_revisions, wait }) => {
            let mut vars = Vec::new();
            for v in &variables {
                let (k, val) =
                    v.split_once('=').ok_or_else(|| Failure::new(2, format!("--variable {v:?} must be NAME=VALUE")))?;
                vars.push(json!({"name": k, "value": val}));
            }
            let mut revisions = Vec::new();
            for r in &source_revisions {
                let (action, revision) = r
                    .split_once('=')
                    .ok_or_else(|| Failure::new(2, format!("--source-revision {r:?} must be ACTION=REVISION")))?;
                revisions.push(json!({"actionName": action, "revisionType": "COMMIT_ID", "revisionValue": revision}));
            }
            let c = client()?;
            let body = json!({ "variables": vars, "sourceRevisions": revisions }).to_string();
            let out = c.post(&format!("/pipelines/{name}/executions"), body).await?;
            let id = s(&out["pipelineExecutionId"]);
            if json_out && !wait {
                print_json(&out);
            } else if !json_out {
                println!("{id}");
            }
            if wait {
                let status = wait_for(&c, &name, &id).await?;
                let execution = c.get(&format!("/pipelines/{name}/executions/{id}")).await?;
                let summary = execution["pipelineExecution"]["statusSummary"].as_str().map(str::to_string);
                if json_out {
                    print_json(&json!({"pipelineExecutionId": id, "status": status, "statusSummary": summary}));
                } else {
                    match summary {
                        Some(summary) => eprintln!("execution {id} {status}: {summary}"),
                        None => eprintln!("execution {id} {status}"),
                    }
                }
                return Ok(if status == "Succeeded" { 0 } else { 1 });
            }
        }
        Cmd::Pipeline(PipelineCmd::Stop { name, execution, mode, reason, wait }) => {
            let c = client()?;
            let body = json!({"abandon": mode == StopMode::Abandon, "reason": reason}).to_string();
            let mut out = c.post(&format!("/pipelines/{name}/executions/{execution}/stop"), body).await?;
            if wait {
                let status = wait_for(&c, &name, &execution).await?;
                out["status"] = json!(status);
            }
            if json_out {
                print_json(&out);
            } else {
                println!("execution {execution} {}", s(&out["status"]));
            }
        }
        Cmd::Pipeline(PipelineCmd::State { name }) => {
            let out = client()?.get(&format!("/pipelines/{name}/state")).await?;
            if json_out {
                print_json(&out);
            } else {
                print_state(&out);
            }
        }
        Cmd::Pipeline(PipelineCmd::History { name, max, next_token }) => {
            let page = next_token.map(|t| format!("&nextToken={t}")).unwrap_or_default();
            let out = client()?.get(&format!("/pipelines/{name}/executions?maxResults={max}{page}")).await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["pipelineExecutionSummaries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let revisions: Vec<String> = e["sourceRevisions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| format!("{}@{}", s(&r["actionName"]), s(&r["revisionId"]).chars().take(7).collect::<String>()))
                            .collect();
                        vec![
                            s(&e["pipelineExecutionId"]),
                            s(&e["status"]),
                            s(&e["trigger"]["triggerType"]),
                            s(&e["startTime"]),
                            revisions.join(" "),
                            s(&e["trigger"]["triggerDetail"]),
                            s(&e["statusSummary"]),
                        ]
                    })
                    .collect();
                print_table(&["EXECUTION", "STATUS", "TRIGGER", "STARTED", "REVISIONS", "WHY", "SUMMARY"], &rows);
                if let Some(token) = out["nextToken"].as_str() {
                    println!("more: sluice pipeline history {name} --max {max} --next-token {token}");
                }
            }
        }
        Cmd::Watch { pipeline, execution } => {
            let c = client()?;
            let id = match execution {
                Some(id) => id,
                None => newest_execution(&c, &pipeline).await?,
            };
            let status = watch(&c, &pipeline, &id, &mut std::io::stdout()).await?;
            return Ok(if status == "Succeeded" { 0 } else { 1 });
        }
        Cmd::Logs { pipeline, execution, follow } => {
            let c = client()?;
            let id = match execution {
                Some(id) => id,
                None => newest_execution(&c, &pipeline).await?,
            };
            if follow {
                follow_logs(&c, &pipeline, &id, json_out, &mut std::io::stdout()).await?;
                return Ok(0);
            }
            let out = c.get(&format!("/pipelines/{pipeline}/executions/{id}/logs")).await?;
            if json_out {
                print_json(&out);
            } else {
                for line in out["lines"].as_array().into_iter().flatten() {
                    print_log_line(&mut std::io::stdout(), line, false);
                }
            }
        }
        Cmd::Agent(AgentCmd::List) => {
            let out = client()?.get("/agents").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["agents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let labels = a["labels"]
                            .as_object()
                            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(","))
                            .unwrap_or_default();
                        vec![
                            s(&a["id"]),
                            s(&a["hostname"]),
                            if a["connected"] == json!(true) { "connected".into() } else { "offline".into() },
                            s(&a["state"]),
                            format!("{}/{}", s(&a["running"]), s(&a["slots"])),
                            labels,
                        ]
                    })
                    .collect();
                print_table(&["ID", "HOSTNAME", "CONNECTION", "STATE", "RUNNING", "LABELS"], &rows);
            }
        }
        Cmd::Execution(ExecutionCmd::Get { pipeline, execution }) => {
            let out = client()?.get(&format!("/pipelines/{pipeline}/executions/{execution}")).await?;
            if json_out {
                print_json(&out);
            } else {
                let e = &out["pipelineExecution"];
                println!(
                    "execution {} of {} (version {}): {}{}",
                    s(&e["pipelineExecutionId"]),
                    s(&e["pipelineName"]),
                    s(&e["pipelineVersion"]),
                    s(&e["status"]),
                    e["statusSummary"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
                );
                println!("trigger: {} ({})", s(&e["trigger"]["triggerType"]), s(&e["trigger"]["triggerDetail"]));
                let mut rows = Vec::new();
                for stage in out["stages"].as_array().into_iter().flatten() {
                    for action in stage["actions"].as_array().into_iter().flatten() {
                        let outputs: Vec<String> = action["outputArtifacts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| format!("{}@{}", s(&a["name"]), s(&a["digest"]).chars().take(12).collect::<String>()))
                            .collect();
                        let detail = if action["errorDetails"].is_null() {
                            s(&action["summary"])
                        } else {
                            s(&action["errorDetails"]["message"])
                        };
                        rows.push(vec![
                            s(&stage["stageName"]),
                            s(&action["actionName"]),
                            s(&action["status"]),
                            s(&action["attempt"]),
                            s(&action["agent"]),
                            s(&action["startTime"]),
                            s(&action["lastUpdateTime"]),
                            outputs.join(","),
                            detail,
                        ]);
                    }
                }
                print_table(&["STAGE", "ACTION", "STATUS", "ATTEMPT", "AGENT", "STARTED", "ENDED", "OUTPUTS", "DETAIL"], &rows);
            }
        }
        Cmd::Stage(StageCmd::Retry { pipeline, stage, execution, mode, wait }) => {
            let c = client()?;
            let retry_mode = if mode == RetryMode::All { "ALL_ACTIONS" } else { "FAILED_ACTIONS" };
            let body = json!({ "pipelineExecutionId": execution, "retryMode": retry_mode }).to_string();
            c.post(&format!("/pipelines/{pipeline}/stages/{stage}/retry"), body).await?;
            if !wait {
                println!("stage {stage} of execution {execution} retried");
                return Ok(0);
            }
            let status = wait_for(&c, &pipeline, &execution).await?;
            println!("execution {execution} {status}");
            return Ok(if status == "Succeeded" { 0 } else { 1 });
        }
        Cmd::Stage(StageCmd::Rollback { pipeline, stage, target, wait }) => {
            let c = client()?;
            let body = json!({ "targetPipelineExecutionId": target }).to_string();
            let out = c.post(&format!("/pipelines/{pipeline}/stages/{stage}/rollback"), body).await?;
            let id = s(&out["pipelineExecutionId"]);
            if !wait {
                if json_out {
                    print_json(&out);
                } else {
                    println!("{id}");
                }
                return Ok(0);
            }
            let status = wait_for(&c, &pipeline, &id).await?;
            println!("rollback {id} {status}");
            return Ok(if status == "Succeeded" { 0 } else { 1 });
        }
        Cmd::Transition(cmd) => {
            let (pipeline, stage, verb, reason) = match cmd {
                TransitionCmd::Disable { pipeline, stage, reason } => (pipeline, stage, "disable", reason),
                TransitionCmd::Enable { pipeline, stage } => (pipeline, stage, "enable", String::new()),
            };
            let body = json!({ "reason": reason }).to_string();
            let out = client()?.post(&format!("/pipelines/{pipeline}/stages/{stage}/transition/{verb}"), body).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("transition into {pipeline}/{stage} {verb}d");
            }
        }
        Cmd::Agent(AgentCmd::Drain { id }) => set_agent_state(&client()?, &id, "drain", json_out).await?,
        Cmd::Agent(AgentCmd::Disable { id }) => set_agent_state(&client()?, &id, "disable", json_out).await?,
        Cmd::Agent(AgentCmd::Enable { id }) => set_agent_state(&client()?, &id, "enable", json_out).await?,
        Cmd::Agent(AgentCmd::Revoke { id }) => set_agent_state(&client()?, &id, "revoke", json_out).await?,
        Cmd::Agent(AgentCmd::Label { id, changes }) => {
            let (set, remove) = parse_label_changes(&changes).map_err(|e| Failure::new(2, e))?;
            let body = json!({ "set": set, "remove": remove }).to_string();
            let out = client()?.post(&format!("/agents/{id}/labels"), body).await?;
            if json_out {
                print_json(&out);
            } else {
                let labels = out["labels"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                println!("agent {id} labels: {labels}");
            }
        }
        Cmd::AgentToken(AgentTokenCmd::List) => {
            let out = client()?.get("/agent-tokens").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["agentTokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| vec![s(&t["id"]), s(&t["state"]), s(&t["usesLeft"]), s(&t["expires"])])
                    .collect();
                print_table(&["ID", "STATE", "USES LEFT", "EXPIRES"], &rows);
            }
        }
        Cmd::AgentToken(AgentTokenCmd::Revoke { id }) => {
            let out = client()?.post(&format!("/agent-tokens/{id}/revoke"), "").await?;
            if json_out {
                print_json(&out);
            } else {
                println!("join token {id} revoked");
            }
        }
        Cmd::AgentToken(AgentTokenCmd::Create { ttl, uses, labels, allow_agent_labels }) => {
            let labels = parse_labels(labels.as_deref().unwrap_or("")).map_err(|e| Failure::new(2, e))?;
            let allow: Vec<String> =
                allow_agent_labels.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
            let body = json!({"ttlSeconds": ttl.as_secs(), "uses": uses, "labels": labels, "allowAgentLabels": allow})
                .to_string();
            let out = client()?.post("/agent-tokens", body).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("{}", s(&out["token"]));
            }
        }
        Cmd::Action(ActionCmd::Run {
            plugin,
            config,
            inputs,
            outputs,
            grants,
            secret_env,
            variables,
            timeout,
            memory_mib,
            http_ca,
            allow_unconfined_exec,
        }) => {
            use crate::action_run::{LocalRun, add_grant, pair};
            use sluice_runtime::sandbox::{Confinement, ReaperChoice, Unconfined};
            let bad = |m: String| Failure::new(2, m);
            let unconfined = if allow_unconfined_exec { Unconfined::Allow } else { Unconfined::Refuse };
            // The `sluice` binary itself is the launcher of confined programs.
            let confinement = std::env::current_exe()
                .map_err(anyhow::Error::from)
                .and_then(|exe| Confinement::detect(exe, ReaperChoice::Auto, unconfined))
                .map_err(|e| Failure::new(1, format!("setting up the sandbox for host programs: {e:#}")))?;
            let http_extra_roots = match &http_ca {
                Some(path) => std::fs::read(path).map_err(|e| bad(format!("--http-ca {}: {e}", path.display())))?,
                None => Vec::new(),
            };
            let mut request =
                LocalRun { plugin, timeout, memory_limit: memory_mib << 20, http_extra_roots, ..LocalRun::default() };
            request.confinement = confinement;
            for c in &config {
                request.config.push(pair("--config", c).map_err(bad)?);
            }
            for i in &inputs {
                let (name, dir) = pair("--input", i).map_err(bad)?;
                request.inputs.push((name, PathBuf::from(dir)));
            }
            for o in &outputs {
                let (name, dir) = pair("--output-dir", o).map_err(bad)?;
                request.outputs.push((name, PathBuf::from(dir)));
            }
            for g in &grants {
                add_grant(&mut request.grants, g).map_err(bad)?;
            }
            if !request.grants.exec.is_empty() {
                eprintln!("sandbox: {}", request.confinement.describe());
            }
            for name in &secret_env {
                let value = std::env::var(name).map_err(|_| bad(format!("--secret-env {name}: the variable is not set")))?;
                request.secrets.insert(name.clone(), value);
            }
            for v in &variables {
                request.variables.push(pair("--variable", v).map_err(bad)?);
            }
            let log: std::sync::Arc<dyn sluice_runtime::LogSink> = std::sync::Arc::new(|line: &str| eprintln!("{line}"));
            let (out, ok) = tokio::task::spawn_blocking(move || crate::action_run::run(request, log))
                .await
                .map_err(|e| Failure::new(1, format!("the run crashed: {e}")))?
                .map_err(|e| Failure::new(2, format!("{e:#}")))?;
            if json_out {
                print_json(&out);
            } else if ok {
                println!("Succeeded: {}", s(&out["summary"]));
                for (k, v) in out["outputVariables"].as_object().into_iter().flatten() {
                    println!("  {k} = {}", s(v));
                }
            } else {
                println!("Failed: {}", s(&out["message"]));
            }
            return Ok(if ok { 0 } else { 1 });
        }
        Cmd::Approval(cmd) => {
            let (approve, args) = match cmd {
                ApprovalCmd::Approve(args) => (true, args),
                ApprovalCmd::Reject(args) => (false, args),
            };
            let body = json!({
                "status": if approve { "Approved" } else { "Rejected" },
                "summary": args.comment,
                "executionId": args.execution,
            });
            let path = format!("/pipelines/{}/stages/{}/actions/{}/approval", args.pipeline, args.stage, args.action);
            let out = client()?.post(&path, body.to_string()).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("{} ({})", s(&out["result"]), s(&out["pipelineExecutionId"]));
            }
        }
        Cmd::User(UserCmd::Create { name, role }) => {
            let out = client()?.post("/users", json!({ "name": name, "role": role }).to_string()).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("user {name} created ({role})");
            }
        }
        Cmd::User(UserCmd::List) => {
            let out = client()?.get("/users").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["users"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|u| vec![s(&u["name"]), s(&u["role"]), s(&u["created"])])
                    .collect();
                print_table(&["NAME", "ROLE", "CREATED"], &rows);
            }
        }
        Cmd::Token(TokenCmd::Create { user }) => {
            let out = client()?.post("/tokens", json!({ "user": user }).to_string()).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("{}", s(&out["token"]));
            }
        }
        Cmd::Token(TokenCmd::List) => {
            let out = client()?.get("/tokens").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| vec![s(&t["id"]), s(&t["user"]), s(&t["created"]), s(&t["revoked"])])
                    .collect();
                print_table(&["ID", "USER", "CREATED", "REVOKED"], &rows);
            }
        }
        Cmd::Token(TokenCmd::Revoke { id }) => {
            let out = client()?.post(&format!("/tokens/{id}/revoke"), "").await?;
            if json_out {
                print_json(&out);
            } else {
                println!("token {id} revoked");
            }
        }
        Cmd::Webhook(WebhookCmd::Create { pipeline }) => {
            let out = client()?.post(&format!("/pipelines/{pipeline}/webhook"), "").await?;
            if json_out {
                print_json(&out);
            } else {
                println!("{}", s(&out["secret"]));
            }
        }
        Cmd::Webhook(WebhookCmd::Delete { pipeline }) => {
            let out = client()?.delete(&format!("/pipelines/{pipeline}/webhook")).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("webhook of {pipeline} deleted");
            }
        }
        Cmd::Secret(SecretCmd::Set { name, from_file, pipelines }) => {
            let value = match &from_file {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", path.display())))?,
                None => {
                    let mut value = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                        .map_err(|e| Failure::new(2, format!("cannot read the value from standard input: {e}")))?;
                    value
                }
            };
            // A trailing newline from `echo` or an editor is not part of the value.
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            let mut body = json!({ "value": value });
            if let Some(pipelines) = pipelines {
                body["pipelines"] = json!(pipelines);
            }
            let out = client()?.put(&format!("/secrets/{name}"), body.to_string()).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("secret {name} set (pipelines: {})", patterns(&out["pipelines"]));
            }
        }
        Cmd::Secret(SecretCmd::List) => {
            let out = client()?.get("/secrets").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| vec![s(&t["name"]), patterns(&t["pipelines"]), s(&t["created"]), s(&t["updated"])])
                    .collect();
                print_table(&["NAME", "PIPELINES", "CREATED", "UPDATED"], &rows);
            }
        }
        Cmd::Secret(SecretCmd::Delete { name }) => {
            let out = client()?.delete(&format!("/secrets/{name}")).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("secret {name} deleted");
            }
        }
        Cmd::Plugin(PluginCmd::Describe { plugin }) => {
            let out = client()?.get(&format!("/plugins/{plugin}")).await?;
            if json_out {
                print_json(&out);
            } else {
                let info = &out["info"];
                println!("{} ({}, {}): {}", s(&out["provider"]), s(&info["category"]), if out["builtin"] == json!(true) { "built-in" } else { "pushed" }, s(&info["description"]));
                println!("digest: {}", s(&out["digest"]));
                match out["keyId"].as_str() {
                    Some(key_id) => println!("signed by: {} (key {key_id})", signer(&out)),
                    None => println!("signed by: {}", signer(&out)),
                }
                if let Some(version) = info["interfaceVersion"].as_str() {
                    println!("built against: sluice:plugin@{version}");
                }
                let rows: Vec<Vec<String>> = info["configuration"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            s(&p["name"]),
                            if p["required"] == json!(true) { "required".into() } else { "optional".into() },
                            s(&p["type"]),
                            s(&p["description"]),
                        ]
                    })
                    .collect();
                print_table(&["PROPERTY", "", "TYPE", "DESCRIPTION"], &rows);
                println!("inputs: {:?}, outputs: {:?}", info["inputArtifacts"], info["outputArtifacts"]);
                println!("capabilities: {}", info["capabilities"]);
            }
        }
        Cmd::Plugin(PluginCmd::Delete { plugin }) => {
            let out = client()?.delete(&format!("/plugins/{plugin}")).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("plugin {plugin} deleted");
            }
        }
        Cmd::Plugin(PluginCmd::New { name, dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            crate::plugin_template::write(&name, &dir).map_err(|e| Failure::new(2, format!("{e:#}")))?;
            println!("wrote {} — build it with: cd {} && cargo build --release --target wasm32-wasip2", dir.display(), dir.display());
        }
        Cmd::Plugin(PluginCmd::Push { file, signature }) => {
            let wasm = std::fs::read(&file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
            let beside = PathBuf::from(format!("{}.sig", file.display()));
            let signature = signature.or_else(|| beside.exists().then_some(beside));
            let c = client()?;
            let out = match &signature {
                None => c.post("/plugins", wasm).await?,
                Some(path) => {
                    use base64::Engine as _;
                    let text = std::fs::read(path)
                        .map_err(|e| Failure::new(2, format!("cannot read signature {}: {e}", path.display())))?;
                    let header = base64::engine::general_purpose::STANDARD.encode(text);
                    c.post_with("/plugins", (crate::api::SIGNATURE_HEADER, &header), wasm).await?
                }
            };
            if json_out {
                print_json(&out);
            } else {
                let verb = if out["created"] == json!(true) { "registered" } else { "already registered" };
                let signed = match out["signedBy"].as_str() {
                    Some(publisher) => format!(", signed by {publisher}"),
                    None => ", unsigned".into(),
                };
                println!("{} {verb} (digest {}{signed})", s(&out["provider"]), s(&out["digest"]));
            }
        }
        Cmd::Plugin(PluginCmd::Sign { file, key, out }) => {
            let wasm = std::fs::read(&file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
            let pem = std::fs::read_to_string(&key)
                .map_err(|e| Failure::new(2, format!("cannot read key {}: {e}", key.display())))?;
            let signing_key = sluice_runtime::signature::SigningKey::parse(&pem)
                .map_err(|e| Failure::new(2, format!("key {}: {e}", key.display())))?;
            let digest = sluice_runtime::digest(&wasm);
            let signature = signing_key.sign(&digest).map_err(|e| Failure::new(1, e.to_string()))?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{}.sig", file.display())));
            std::fs::write(&out, signature.to_text())
                .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", out.display())))?;
            if json_out {
                print_json(&json!({ "signature": out, "digest": digest, "keyId": signature.key_id() }));
            } else {
                println!("signed sha256:{digest} with key {}: {}", signature.key_id(), out.display());
            }
        }
        Cmd::Plugin(PluginCmd::Keygen { out, name }) => {
            let (key_file, pub_file, key_id) = write_key_pair(&out, &name)?;
            if json_out {
                print_json(&json!({ "privateKey": key_file, "publicKey": pub_file, "keyId": key_id }));
            } else {
                println!("private key: {} (keep it secret)", key_file.display());
                println!("public key:  {}", pub_file.display());
                println!("key id:      {key_id}");
            }
        }
        Cmd::Publisher(PublisherCmd::Add { name, public_key_file }) => {
            let key = std::fs::read_to_string(&public_key_file)
                .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", public_key_file.display())))?;
            let out = client()?.post("/publishers", json!({ "name": name, "publicKey": key }).to_string()).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("publisher {name} trusted (key {})", s(&out["keyId"]));
            }
        }
        Cmd::Publisher(PublisherCmd::List) => {
            let out = client()?.get("/publishers").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["publishers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| vec![s(&p["name"]), s(&p["keyId"]), s(&p["added"]), s(&p["addedBy"])])
                    .collect();
                print_table(&["NAME", "KEY ID", "ADDED", "BY"], &rows);
                if out["requireSignedPlugins"] == json!(true) {
                    println!("this controller accepts only plugins signed by these publishers");
                }
            }
        }
        Cmd::Publisher(PublisherCmd::Remove { name }) => {
            let out = client()?.delete(&format!("/publishers/{name}")).await?;
            if json_out {
                print_json(&out);
            } else {
                println!("publisher {name} removed");
            }
        }
        Cmd::Plugin(PluginCmd::List) => {
            let out = client()?.get("/plugins").await?;
            if json_out {
                print_json(&out);
            } else {
                let rows: Vec<Vec<String>> = out["plugins"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            s(&p["provider"]),
                            s(&p["info"]["category"]),
                            if p["builtin"] == json!(true) { "built-in".into() } else { "pushed".into() },
                            signer(p),
                            s(&p["digest"]).chars().take(12).collect(),
                        ]
                    })
                    .collect();
                print_table(&["PROVIDER", "CATEGORY", "ORIGIN", "SIGNED BY", "DIGEST"], &rows);
            }
        }
    }
    Ok(0)
}

async fn set_agent_state(c: &Client, id: &str, verb: &str, json_out: bool) -> Result<(), Failure> {
    let out = c.post(&format!("/agents/{id}/{verb}"), "").await?;
    if json_out {
        print_json(&out);
    } else {
        println!("agent {id} is {}", s(&out["state"]));
    }
    Ok(())
}

async fn newest_execution(c: &Client, pipeline: &str) -> Result<String, Failure> {
    let out = c.get(&format!("/pipelines/{pipeline}/executions?maxResults=1")).await?;
    out["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::new(1, format!("pipeline \"{pipeline}\" has no executions yet")))
}

fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Stopped" | "Superseded")
}

/// One log line as `STAGE/ACTION: text`, or as one JSON object per line.
fn print_log_line(out: &mut impl Write, line: &Value, json_out: bool) {
    if json_out {
        let _ = writeln!(out, "{line}");
    } else {
        let text = s(&line["text"]);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let _ = writeln!(out, "{}/{}: {text}", s(&line["stage"]), s(&line["action"]));
    }
    let _ = out.flush();
}

/// Prints an execution's stored log, then its lines as they arrive (from
/// the event stream), until the execution ends. Every line is printed once,
/// in order per action, however the stream and the store overlap.
pub async fn follow_logs(
    c: &Client,
    pipeline: &str,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    // Subscribe first, then read the store, so no line falls in between.
    let mut events = c.events(pipeline).await?;
    let mut printed: HashMap<String, u64> = HashMap::new();
    let mut print_new = |line: &Value, out: &mut dyn FnMut(&Value)| {
        let (Some(job), Some(seq)) = (line["jobId"].as_str(), line["seq"].as_u64()) else { return };
        if printed.get(job).is_none_or(|last| seq > *last) {
            printed.insert(job.to_string(), seq);
            out(line);
        }
    };
    let logs = format!("/pipelines/{pipeline}/executions/{id}/logs");
    let execution = format!("/pipelines/{pipeline}/executions/{id}");
    let status = |v: Value| s(&v["pipelineExecution"]["status"]);
    let mut emit = |line: &Value| print_log_line(out, line, json_out);
    for line in c.get(&logs).await?["lines"].as_array().into_iter().flatten() {
        print_new(line, &mut emit);
    }
    if !is_final(&status(c.get(&execution).await?)) {
        let mut check = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    if event["executionId"].as_str() != Some(id) {
                        continue;
                    }
                    match event["type"].as_str() {
                        Some("log") => print_new(&event, &mut emit),
                        Some("execution") if is_final(&s(&event["status"])) => break,
                        _ => {}
                    }
                }
                // The event stream may lag or drop: the state is the truth.
                _ = check.tick() => {
                    if is_final(&status(c.get(&execution).await?)) {
                        break;
                    }
                }
            }
        }
    }
    // Whatever the stream missed is in the store by now.
    for line in c.get(&logs).await?["lines"].as_array().into_iter().flatten() {
        print_new(line, &mut emit);
    }
    Ok(())
}

/// Waits until an execution ends; returns its status.
pub async fn wait_for(c: &Client, pipeline: &str, id: &str) -> Result<String, Failure> {
    loop {
        let out = c.get(&format!("/pipelines/{pipeline}/executions/{id}")).await?;
        let status = s(&out["pipelineExecution"]["status"]);
        if is_final(&status) {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints an execution's progress live until it ends; returns its status.
pub async fn watch(c: &Client, pipeline: &str, id: &str, out: &mut impl Write) -> Result<String, Failure> {
    // Subscribe first, then read the state, so no event falls in between.
    let mut events = c.events(pipeline).await?;
    let current = c.get(&format!("/pipelines/{pipeline}/executions/{id}")).await?;
    let exec = &current["pipelineExecution"];
    let _ = writeln!(out, "execution {id} of pipeline {pipeline}: {}", s(&exec["status"]));
    for stage in current["stages"].as_array().into_iter().flatten() {
        for action in stage["actions"].as_array().into_iter().flatten() {
            if !action["status"].is_null() {
                let _ = writeln!(out, "  {:<28} {}", format!("{}/{}", s(&stage["stageName"]), s(&action["actionName"])), s(&action["status"]));
            }
        }
    }
    if is_final(&s(&exec["status"])) {
        return Ok(s(&exec["status"]));
    }
    let mut final_status = None;
    let heartbeat = tokio::time::interval(Duration::from_secs(2));
    tokio::pin!(heartbeat);
    while final_status.is_none() {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                if event["executionId"].as_str() != Some(id) {
                    continue;
                }
                let when = s(&event["time"]).get(11..19).unwrap_or("").to_string();
                match event["type"].as_str() {
                    Some("execution") => {
                        let status = s(&event["status"]);
                        let suffix = event["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
                        let _ = writeln!(out, "{when} execution {status}{suffix}");
                        if is_final(&status) {
                            final_status = Some(status);
                        }
                    }
                    Some("stage") => {
                        let _ = writeln!(out, "{when} stage {} {}", s(&event["stage"]), s(&event["status"]));
                    }
                    Some("action") => {
                        let suffix = event["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
                        let _ = writeln!(out, "{when}   {:<26} {}{suffix}", format!("{}/{}", s(&event["stage"]), s(&event["action"])), s(&event["status"]));
                    }
                    _ => {}
                }
                let _ = out.flush();
            }
            _ = heartbeat.tick() => {
                // The event stream may have lagged: the state is the truth.
                let now = c.get(&format!("/pipelines/{pipeline}/executions/{id}")).await?;
                let status = s(&now["pipelineExecution"]["status"]);
                if is_final(&status) {
                    let _ = writeln!(out, "execution {status}");
                    final_status = Some(status);
                }
            }
        }
    }
    match final_status {
        Some(s) => Ok(s),
        None => wait_for(c, pipeline, id).await,
    }
}

fn print_state(state: &Value) {
    let latest = &state["latestExecution"];
    println!(
        "pipeline {} (version {}): latest execution {} {}",
        s(&state["pipelineName"]),
        s(&state["pipelineVersion"]),
        s(&latest["pipelineExecutionId"]),
        s(&latest["status"])
    );
    let mut rows = Vec::new();
    for stage in state["stageStates"].as_array().into_iter().flatten() {
        for action in stage["actionStates"].as_array().into_iter().flatten() {
            let l = &action["latestExecution"];
            let detail = if !l["errorDetails"].is_null() {
                s(&l["errorDetails"]["message"])
            } else if !l["waitingReason"].is_null() {
                format!("waiting: {}", s(&l["waitingReason"]))
            } else {
                s(&l["summary"])
            };
            let inbound = &stage["inboundTransitionState"];
            let stage_name = if inbound["enabled"] == json!(false) {
                format!("{} (transition disabled: {})", s(&stage["stageName"]), s(&inbound["disabledReason"]))
            } else {
                s(&stage["stageName"])
            };
            rows.push(vec![
                stage_name,
                s(&action["actionName"]),
                if l.is_null() { "-".into() } else { s(&l["status"]) },
                s(&l["agent"]),
                detail,
            ]);
        }
    }
    print_table(&["STAGE", "ACTION", "STATUS", "AGENT", "DETAIL"], &rows);
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
    }

    #[test]
    fn the_controller_listens_where_admin_commands_look() {
        assert_eq!(api_bind_address(None).unwrap().to_string(), "127.0.0.1:7400");
        assert_eq!(api_bind_address(Some("http://127.0.0.1:0/")).unwrap().port(), 0);
        assert_eq!(api_bind_address(Some("nope")).unwrap_err().code, 2);
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

/// Reads a declaration file; with a provider map (an empty path: the
/// defaults alone), remaps CodePipeline's providers first.
fn read_declaration(file: &Path, provider_map: Option<&Path>) -> Result<String, Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
    let Some(map_path) = provider_map else { return Ok(text) };
    let map = if map_path.as_os_str().is_empty() {
        crate::pipeline::import::ProviderMap::defaults()
    } else {
        let map_text = std::fs::read_to_string(map_path)
            .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", map_path.display())))?;
        crate::pipeline::import::ProviderMap::with_overrides(&map_text).map_err(|e| Failure::new(2, e))?
    };
    crate::pipeline::import::import(&text, &map).map_err(|problems| {
        Failure::new(2, format!("cannot import {}:\n  {}", file.display(), problems.join("\n  ")))
    })
}
