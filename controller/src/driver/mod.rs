//! The controller's driver: one task that owns the engine, the store and
//! the fleet's bookkeeping, fed a closed set of [`Command`]s.
//!
//! Every command runs to completion: the engine steps, every resulting
//! change is written to the store in one transaction, and only then are
//! replies sent, jobs handed to agents and watchers told. No engine state
//! lives in spawned tasks. Start-up loads unfinished executions into an
//! empty engine (recovery is replay).

mod batch;
mod publishers;
pub mod intake;
mod sources;
mod users;

use crate::blobs::BlobStore;
use crate::ca::{Ca, Revocations};
use crate::fleet::{AgentSender, Transfer};
use crate::engine::{
    ActionResult, ActionStatus, ArtifactRef, Dispatch, Engine, Event, Execution, ExecutionId, Notice, Trigger,
};
use crate::pipeline::{self, Declaration, Pipeline, ProviderCatalog, ProviderInfo};
use crate::store::{
    AgentRecord, Change, Durability, JoinTokenRecord, LogLine, PipelineRecord, PluginRecord, RevocationRecord,
    SqliteStore, Store, TransitionRecord,
};
use crate::views;
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_protocol::{
    EnrollRequest, EnrollResponse, FromAgent, Grants, Hello, InputArtifact, JobResult, JobSpec, OutputSpec,
    PROTOCOL_VERSION, PluginRef, ProducedArtifact, ToAgent,
};
use sluice_runtime::ActionInfo;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

/// How often agents send heartbeats, at most. A short lease asks for more:
/// six per lease, so that a lost heartbeat or two loses nothing, and so
/// that an agent that finds the controller silent for two heartbeats has
/// time to reconnect and report its jobs before their leases run out.
const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEATS_PER_LEASE: u32 = 6;
/// Default lease of a job: an agent that has not reported a job in a
/// heartbeat for this long has lost it (`sluice controller --lease-timeout`).
/// Covers a network blip and the agent's reconnect backoff (at most 10 s).
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a controller restart, how long actions that were assigned to an
/// agent wait for it to reconnect and report them (or the lease, if
/// longer). Agents notice a killed controller only when the connection
/// times out (12 s), then back off for up to 10 s.
const RECONNECT_GRACE: Duration = Duration::from_secs(30);
/// How often the driver looks at the clock for such deadlines.
const TICK: Duration = Duration::from_secs(1);
/// How often unreferenced artifacts are collected.
pub const DEFAULT_ARTIFACT_GC_INTERVAL: Duration = Duration::from_secs(3600);
/// Executions shown by a history listing when the caller does not say.
pub const DEFAULT_HISTORY: usize = 20;

/// An error an API caller sees; maps onto HTTP statuses and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { message: String, diagnostics: Vec<String> },
    #[error("{0}")]
    NotFound(String),
    /// Bad or missing credentials (e.g. a webhook signature).
    #[error("{0}")]
    Unauthorized(String),
    /// Known caller, operation not allowed for its role.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(format!("{e:#}"))
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// Everything the driver is asked to do.
pub enum Command {
    CreatePipeline { text: String, by: String, reply: Reply<Value> },
    ValidatePipeline { text: String, reply: Reply<Value> },
    UpdatePipeline { name: String, text: String, reply: Reply<Value> },
    DeletePipeline { name: String, reply: Reply<Value> },
    GetPipeline { name: String, version: Option<u64>, reply: Reply<Value> },
    ListPipelines { reply: Reply<Value> },
    StartExecution {
        name: String,
        variables: BTreeMap<String, String>,
        /// Pinned revisions by source action name.
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        reply: Reply<Value>,
    },
    /// A webhook delivery, authenticated by its signature rather than a token.
    Webhook { name: String, headers: Vec<(String, String)>, body: Vec<u8>, reply: Reply<Value> },
    CreateWebhook { name: String, reply: Reply<Value> },
    /// RollbackStage (to `target`, or the newest execution in which the stage succeeded).
    RollbackStage { name: String, stage: String, target: Option<String>, by: String, reply: Reply<Value> },
    /// PutApprovalResult: approve or reject a manual approval.
    Decide {
        name: String,
        stage: String,
        action: String,
        /// The execution; by default the newest waiting at that action.
        execution: Option<String>,
        by: String,
        approve: bool,
        comment: String,
        reply: Reply<Value>,
    },
    DeleteWebhook { name: String, reply: Reply<Value> },
    SetSecret { name: String, value: String, pipelines: Option<Vec<String>>, reply: Reply<Value> },
    ListSecrets { reply: Reply<Value> },
    DeleteSecret { name: String, reply: Reply<Value> },
    PipelineState { name: String, reply: Reply<Value> },
    StopExecution { name: String, id: String, abandon: bool, reason: String, reply: Reply<Value> },
    /// RetryStageExecution: failed actions only, or all of the stage's.
    RetryStage { name: String, stage: String, id: String, all: bool, reply: Reply<Value> },
    /// DisableStageTransition / EnableStageTransition (inbound only).
    SetTransition { name: String, stage: String, enabled: bool, reason: String, by: String, reply: Reply<Value> },
    CreateUser { name: String, role: crate::auth::Role, reply: Reply<Value> },
    ListUsers { reply: Reply<Value> },
    CreateToken { user: String, reply: Reply<Value> },
    ListTokens { reply: Reply<Value> },
    RevokeToken { id: String, reply: Reply<Value> },
    GetExecution { name: String, id: String, reply: Reply<Value> },
    /// ListPipelineExecutions: a page, newest first, after `next_token`.
    ListExecutions { name: String, limit: usize, next_token: Option<String>, reply: Reply<Value> },
    ExecutionLogs { name: String, id: String, reply: Reply<Value> },
    ListAgents { reply: Reply<Value> },
    CreateJoinToken {
        ttl: Duration,
        uses: Option<u32>,
        labels: BTreeMap<String, String>,
        /// Label keys an agent enrolled with it may set for itself.
        allow_agent_labels: Vec<String>,
        reply: Reply<Value>,
    },
    /// `sluice agent label`: set and remove an agent's labels.
    LabelAgent { id: String, set: BTreeMap<String, String>, remove: Vec<String>, reply: Reply<Value> },
    ListJoinTokens { reply: Reply<Value> },
    RevokeJoinToken { id: String, reply: Reply<Value> },
    /// `enabled`, `draining` (finish running work, take none) or `disabled`
    /// (cut off now, refused on reconnect).
    SetAgentState { id: String, state: AgentState, reply: Reply<Value> },
    ListPlugins { reply: Reply<Value> },
    DescribePlugin { key: String, reply: Reply<Value> },
    DeletePlugin { key: String, reply: Reply<Value> },
    /// Register a pushed component whose `describe()` was already read,
    /// with the publisher's signature document if it came with one.
    PushPlugin { wasm: Vec<u8>, info: Box<ActionInfo>, signature: Option<String>, reply: Reply<Value> },
    /// Whether a pushed component's signature (or its absence) would be
    /// accepted: asked before the component is compiled and described, so
    /// that a controller requiring signatures runs no unsigned code.
    VetPluginSignature { digest: String, signature: Option<String>, reply: Reply<Value> },
    ListPublishers { reply: Reply<Value> },
    AddPublisher { name: String, public_key: String, by: String, reply: Reply<Value> },
    RemovePublisher { name: String, reply: Reply<Value> },
    Enroll { request: Box<EnrollRequest>, reply: oneshot::Sender<EnrollResponse> },
    AgentConnected { agent_id: String, conn_id: u64, hello: Hello, tx: AgentSender, reply: oneshot::Sender<ToAgent> },
    /// May this agent, on this connection, move these bytes? Asked by the
    /// fleet before every plugin or artifact stream.
    AuthorizeTransfer { agent_id: String, conn_id: u64, transfer: Transfer, reply: oneshot::Sender<Result<(), String>> },
    AgentMessage { agent_id: String, conn_id: u64, message: FromAgent },
    AgentDisconnected { agent_id: String, conn_id: u64 },
    /// Time passes: give up on jobs of agents that did not come back.
    Tick,
}

/// What an operator allows an agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Enabled,
    Draining,
    Disabled,
    /// For good: its certificates are on the revocation list; the host
    /// must enroll again, as a new agent, with a join token.
    Revoked,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
        }
    }
}

/// The controller's settings (`sluice controller` flags).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub fleet: SocketAddr,
    pub durability: Durability,
    /// Lifetime of the certificates the CA signs for agents.
    pub agent_cert_lifetime: Duration,
    /// How long a job's lease lasts without a heartbeat that reports it.
    pub lease_timeout: Duration,
    /// How often an action lost with its agent runs again, when it may.
    pub max_lost_retries: u32,
    /// Bytes of log stored per action attempt; the rest is dropped.
    pub max_action_log: u64,
    /// How often unreferenced artifacts are collected; younger ones are
    /// kept (an upload whose result has not arrived is referenced by nothing).
    pub artifact_gc_interval: Duration,
    /// Refuse `plugin push` of a component without a trusted publisher's
    /// signature (a signature that does not verify is refused anyway).
    pub require_signed_plugins: bool,
    /// Slots an agent may claim at most; a hello asking more gets this many.
    pub max_agent_slots: u32,
    /// Bytes of artifacts an agent may have uploaded that no result of its
    /// jobs has named yet.
    pub agent_upload_quota: u64,
    /// Bytes kept free on the artifact store's file system: an upload that
    /// would leave less is refused.
    pub min_free_space: u64,
}

/// Slots an agent may claim unless `--max-agent-slots` says otherwise.
pub const DEFAULT_MAX_AGENT_SLOTS: u32 = 64;
/// Upload quota per agent unless `--agent-upload-quota` says otherwise:
/// four artifacts of the largest size the store takes.
pub const DEFAULT_AGENT_UPLOAD_QUOTA: u64 = 4 * crate::blobs::MAX_ARTIFACT_BYTES;
/// Free space kept on the artifact store unless `--min-free-space` says
/// otherwise: room for the store's own writes and logs.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;
/// Renewals an agent may ask for in a burst, and how often one more is
/// allowed after that (a quarter of the certificate's life, within 1 s to
/// 60 s): an agent renews once per 70-90 % of the life, so only a rogue or
/// broken one meets the bound, and signing is the CPU it would burn.
const RENEWAL_BURST: u32 = 3;

/// An upload granted to an agent: the largest size it asked for, and
/// when that was granted (ms).
#[derive(Debug, Clone, Copy)]
struct Booking {
    size: u64,
    granted: u64,
}

/// Uploads an agent may have booked that no result named yet, whatever
/// their sizes: the books stay small.
const MAX_BOOKED_UPLOADS: usize = 4096;

/// A running controller.
pub struct Controller {
    pub api: SocketAddr,
    pub fleet: SocketAddr,
    pub admin_token: String,
    pub ca_fingerprint: String,
    pub driver: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Arc<Value>>,
    endpoint: quinn::Endpoint,
}

impl Controller {
    /// Closes the fleet endpoint; agents see the controller go away.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"controller stopping");
    }
}

/// A connected agent.
struct AgentConn {
    conn_id: u64,
    /// A draining agent finishes what it runs and takes nothing new.
    draining: bool,
    tx: AgentSender,
    /// What the agent's hello claimed; which of it counts is decided by
    /// [`intake::effective_labels`] with the labels below.
    claimed_labels: BTreeMap<String, String>,
    /// The labels scheduling uses: the operator's, the observed ones and
    /// the claims the token allows.
    labels: BTreeMap<String, String>,
    slots: u32,
    running: HashSet<String>,
    hostname: String,
    /// When the agent last sent anything.
    last_heard: u64,
    /// Digests of the plugins it has cached (said in Hello, and every
    /// plugin of a job handed to it since).
    plugins: HashSet<String>,
}

/// A job handed to an agent.
struct JobInfo {
    agent: String,
    /// The plugin it runs, which its agent may fetch.
    plugin_digest: String,
    /// Whether the agent reported starting it.
    started: bool,
    /// As handed out, to hand out again if it never reached the agent.
    dispatch: Dispatch,
    execution_id: String,
    pipeline: String,
    stage: String,
    action: String,
    lease_epoch: u64,
    /// When the lease ends unless a heartbeat of the agent reports the job.
    lease_until: u64,
    /// The highest log sequence number stored: lines sent again after a
    /// reconnect are dropped.
    log_seq: Option<u64>,
    /// The highest one acknowledged to the agent.
    log_acked: Option<u64>,
    /// Bytes of log stored, bounded by `--max-action-log`.
    log_bytes: u64,
    log_truncated: bool,
    /// Artifacts the agent was granted to upload (or found stored) while it
    /// held this job: what its result may name. `None` for a job given
    /// back after a controller restart, whose uploads went to the previous
    /// process: its result may name what is stored, with the stored size.
    uploaded: Option<HashSet<String>>,
}

/// Bytes of log kept per action attempt unless `--max-action-log` says
/// otherwise: plenty for a build, bounded against a runaway loop.
pub const DEFAULT_MAX_ACTION_LOG: u64 = 16 << 20;

/// The first words of the line that ends a log cut at its bound.
const LOG_TRUNCATED: &str = "[log truncated:";

/// A registered plugin version.
#[derive(Clone)]
struct PluginEntry {
    digest: String,
    info: ActionInfo,
    builtin: bool,
    /// The verified signature it was pushed with; built-ins have none
    /// (they are part of the binary).
    signature: Option<crate::store::PluginSignatureRecord>,
}

struct Catalog(HashMap<String, PluginEntry>);

impl ProviderCatalog for Catalog {
    fn provider(&self, owner: &str, provider: &str, version: &str) -> Option<ProviderInfo> {
        if owner != "Sluice" && owner != "Custom" {
            return None;
        }
        let entry = self.0.get(&format!("{provider}@{version}"))?;
        Some(ProviderInfo {
            category: entry.info.category.clone(),
            properties: entry
                .info
                .configuration
                .iter()
                .map(|p| pipeline::PropertyInfo { name: p.name.clone(), required: p.required })
                .collect(),
            digest: (!entry.digest.is_empty()).then(|| entry.digest.clone()),
            inputs: entry.info.input_artifacts,
            outputs: entry.info.output_artifacts,
        })
    }

    fn known(&self) -> Vec<String> {
        let mut known: Vec<String> = self.0.keys().cloned().collect();
        known.sort();
        known
    }
}

struct Driver {
    engine: Engine,
    store: Box<dyn Store>,
    ca: Arc<Ca>,
    catalog: Catalog,
    definitions: HashMap<(String, u64), Arc<Pipeline>>,
    agents: HashMap<String, AgentConn>,
    jobs: HashMap<String, JobInfo>,
    pending: VecDeque<Dispatch>,
    events: broadcast::Sender<Arc<Value>>,
    plugins: BlobStore,
    artifacts: BlobStore,
    /// When unreferenced artifacts are next collected.
    next_gc: u64,
    artifact_gc_interval: Duration,
    /// Actions that were assigned to an agent when the controller stopped
    /// (job id to agent id), and until when they are kept for that agent
    /// to reconnect and report them.
    restored: HashMap<String, String>,
    hold_restored_until: u64,
    /// Jobs handed out in this step, sent once the step is committed (so
    /// that the assignment is durable before the agent hears of the job).
    outgoing: Vec<(String, ToAgent)>,
    agent_cert_lifetime: Duration,
    lease_timeout: Duration,
    /// Revoked certificates and agents, checked at every fleet handshake.
    revocations: Revocations,
    /// The process instance each agent last said hello with.
    instances: HashMap<String, u64>,
    max_action_log: u64,
    /// Inbound transitions an operator has changed, by (pipeline, stage).
    transitions: HashMap<(String, String), TransitionRecord>,
    /// Seals secrets and webhook secrets at rest.
    secret_box: crate::secrets::SecretBox,
    /// Polling, webhooks and seen revisions.
    sources: sources::Sources,
    /// The API's token table, kept in step with the store.
    tokens: crate::auth::Tokens,
    /// Agent reports handled together, held until their commit.
    batch: batch::Batch,
    /// `--require-signed-plugins`.
    require_signed_plugins: bool,
    max_agent_slots: u32,
    agent_upload_quota: u64,
    min_free_space: u64,
    /// Artifacts each agent was granted to upload (or found stored) that
    /// no result of its has named yet: the upload quota's books.
    uploads: HashMap<String, HashMap<String, Booking>>,
    /// Renewal allowance per agent: (tokens left, when last refilled).
    renewals: HashMap<String, (u32, u64)>,
    /// A test hook in debug builds only: creating this pipeline panics the
    /// driver, to show that a panic ends the process (no input is known
    /// to cause one; release builds have no such field).
    #[cfg(debug_assertions)]
    panic_on_pipeline: Option<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Reads the admin token of a data dir, creating it (0600) on first start.
fn admin_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("admin.token");
    if path.exists() {
        crate::ca::tighten_private_file(&path)?;
        let token = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            anyhow::bail!("{} is empty: delete it and a new admin token is made at start", path.display());
        }
        return Ok(token);
    }
    let token = format!("sat_{}", hex::encode(rand::random::<[u8; 24]>()));
    crate::ca::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// Starts a controller: opens (or creates) the data dir, registers the
/// built-in plugins, replays unfinished executions, binds both ports and
/// writes `controller.json`.
pub async fn start(config: ControllerConfig) -> Result<Controller> {
    let dir = &config.data_dir;
    // Keys, tokens, the store and every artifact: the owner's alone.
    crate::ca::create_private_dir(dir).with_context(|| format!("preparing data dir {}", dir.display()))?;
    for sub in ["artifacts", "plugins", "cache"] {
        crate::ca::create_private_dir(&dir.join(sub))?;
    }
    let ca = Arc::new(Ca::load_or_create(&dir.join("ca"))?);
    let admin_token = admin_token(dir)?;
    let mut store: Box<dyn Store> = Box::new(SqliteStore::open(&dir.join("sluice.db"), config.durability)?);
    let artifacts = BlobStore::open(&dir.join("artifacts"))?;
    let plugins = BlobStore::open(&dir.join("plugins"))?;

    let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        ..Default::default()
    })?;
    let catalog = register_builtins(&mut *store, &plugins, &runtime).await?;

    let (events, _) = broadcast::channel(4096);
    let mut engine = Engine::new();
    engine.set_max_lost_retries(config.max_lost_retries);
    let mut driver = Driver {
        engine,
        store,
        ca: ca.clone(),
        catalog,
        definitions: HashMap::new(),
        agents: HashMap::new(),
        jobs: HashMap::new(),
        pending: VecDeque::new(),
        events: events.clone(),
        plugins: plugins.clone(),
        artifacts: artifacts.clone(),
        next_gc: 0,
        artifact_gc_interval: config.artifact_gc_interval,
        restored: HashMap::new(),
        hold_restored_until: 0,
        outgoing: Vec::new(),
        agent_cert_lifetime: config.agent_cert_lifetime,
        lease_timeout: config.lease_timeout,
        revocations: Revocations::default(),
        instances: HashMap::new(),
        max_action_log: config.max_action_log,
        transitions: HashMap::new(),
        secret_box: crate::secrets::SecretBox::open(dir)?,
        sources: sources::Sources::default(),
        tokens: crate::auth::Tokens::default(),
        batch: batch::Batch::default(),
        require_signed_plugins: config.require_signed_plugins,
        max_agent_slots: config.max_agent_slots.max(1),
        agent_upload_quota: config.agent_upload_quota,
        min_free_space: config.min_free_space,
        uploads: HashMap::new(),
        renewals: HashMap::new(),
        #[cfg(debug_assertions)]
        panic_on_pipeline: std::env::var("SLUICE_DEBUG_DRIVER_PANIC_ON_PIPELINE").ok(),
    };
    if config.require_signed_plugins {
        info!("only plugins signed by a trusted publisher may be pushed (--require-signed-plugins)");
    }
    driver.recover()?;
    driver.recover_sources()?;
    driver.recover_users(&admin_token)?;
    let tokens = driver.tokens.clone();

    let endpoint = quinn::Endpoint::server(ca.server_config(driver.revocations.clone())?, config.fleet)
        .with_context(|| format!("binding the fleet port {}", config.fleet))?;
    let fleet = endpoint.local_addr()?;
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("binding the API port {}", config.api))?;
    let api = listener.local_addr()?;

    let (tx, rx) = mpsc::channel(1024);
    let driver_task = tokio::spawn(driver.run(rx));
    // A panic in the driver would leave the API and the fleet talking to a
    // dead task (every request a 500) until someone restarts the process.
    // Exiting instead hands the restart to the supervisor, and recovery
    // replays the last committed state.
    tokio::spawn(async move {
        if let Err(e) = driver_task.await
            && e.is_panic()
        {
            error!("the driver panicked; exiting so that a restart recovers from the store");
            std::process::exit(70);
        }
    });
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        loop {
            interval.tick().await;
            if ticks.send(Command::Tick).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(crate::fleet::serve(
        endpoint.clone(),
        crate::fleet::FleetContext { driver: tx.clone(), artifacts, plugins },
    ));
    let state = crate::api::ApiState {
        driver: tx.clone(),
        events: events.clone(),
        tokens,
        runtime,
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, crate::api::router(state)).await {
            error!("admin API stopped: {e}");
        }
    });

    let addresses = json!({ "api": format!("http://{api}"), "fleet": fleet.to_string() });
    std::fs::write(dir.join("controller.json"), serde_json::to_string_pretty(&addresses)? + "\n")?;
    info!(%api, %fleet, data_dir = %dir.display(), "controller started");
    Ok(Controller { api, fleet, admin_token, ca_fingerprint: ca.fingerprint().to_string(), driver: tx, events, endpoint })
}

/// Registers every built-in plugin from its own `describe()`; a digest seen
/// before is not described again.
async fn register_builtins(
    store: &mut dyn Store,
    blobs: &BlobStore,
    runtime: &Arc<sluice_runtime::Runtime>,
) -> Result<Catalog> {
    let mut entries = HashMap::new();
    let known: HashMap<String, PluginRecord> = store.plugins()?.into_iter().map(|p| (p.digest.clone(), p)).collect();
    let mut changes = Vec::new();
    for builtin in sluice_builtins::BUILTINS {
        let digest = blobs.put_bytes(builtin.wasm)?;
        let info: ActionInfo = match known.get(&digest) {
            Some(record) => serde_json::from_str(&record.info)?,
            None => {
                let info = describe(runtime, builtin.wasm.to_vec())
                    .await
                    .with_context(|| format!("describing built-in plugin {}", builtin.provider))?;
                changes.push(Change::Plugin(PluginRecord {
                    provider: info.name.clone(),
                    version: info.version.clone(),
                    digest: digest.clone(),
                    info: serde_json::to_string(&info)?,
                    builtin: true,
                }));
                info
            }
        };
        entries.insert(format!("{}@{}", info.name, info.version), PluginEntry { digest, info, builtin: true, signature: None });
    }
    store.apply(&changes)?;
    // The manual approval runs in the controller: no component.
    let manual = manual_approval_info();
    entries.insert(format!("{}@{}", manual.name, manual.version), PluginEntry {
        digest: String::new(),
        info: manual,
        builtin: true,
        signature: None,
    });
    // Pushed plugins registered earlier, with the signatures they came with.
    let signatures: HashMap<String, crate::store::PluginSignatureRecord> =
        store.plugin_signatures()?.into_iter().map(|s| (s.digest.clone(), s)).collect();
    for record in store.plugins()? {
        let key = format!("{}@{}", record.provider, record.version);
        if !entries.contains_key(&key) && !record.builtin {
            let info = serde_json::from_str(&record.info)?;
            let signature = signatures.get(&record.digest).cloned();
            entries.insert(key, PluginEntry { digest: record.digest, info, builtin: false, signature });
        }
    }
    Ok(Catalog(entries))
}

/// `manual@1`, CodePipeline's manual approval: decided through the API by
/// `RequiredApprovals` distinct people, none of whom started the execution.
fn manual_approval_info() -> ActionInfo {
    let property = |name: &str, description: &str, kind: &str| sluice_runtime::PropertyInfo {
        name: name.into(),
        required: false,
        secret: false,
        description: description.into(),
        kind: kind.into(),
    };
    ActionInfo {
        name: "manual".into(),
        version: "1".into(),
        category: "Approval".into(),
        description: "Waits for people to approve or reject (sluice approval approve|reject)".into(),
        configuration: vec![
            property("RequiredApprovals", "Distinct approvers needed, 1 by default", "number"),
            property("CustomData", "Shown to approvers", "string"),
            property("ExternalEntityLink", "A link for approvers to review", "string"),
            property("NotificationArn", "Accepted on import; notifications are not sent", "string"),
        ],
        input_artifacts: (0, 0),
        output_artifacts: (0, 0),
        capabilities: Grants::default(),
        interface_version: String::new(),
    }
}

/// Reads a component's own `describe()` off the async threads.
pub async fn describe(runtime: &Arc<sluice_runtime::Runtime>, wasm: Vec<u8>) -> Result<ActionInfo> {
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || -> Result<ActionInfo> {
        let plugin = rt.load(&wasm, None)?;
        rt.describe(&plugin)
    })
    .await?
}

impl Driver {
    /// Replays every unfinished execution into the empty engine.
    fn recover(&mut self) -> Result<()> {
        let now = now_ms();
        for r in self.store.revocations()? {
            self.revocations.revoke(&r.agent_id, &r.serial);
        }
        for t in self.store.transitions()? {
            self.engine.set_transition(now, &t.pipeline, &t.stage, t.enabled);
            self.transitions.insert((t.pipeline.clone(), t.stage.clone()), t);
        }
        let unfinished = self.store.unfinished_executions()?;
        let count = unfinished.len();
        let mut restored = Vec::new();
        for execution in unfinished {
            let def = self.definition(&execution.pipeline, execution.version)?;
            restored.push((def, execution));
        }
        self.engine.restore_all(now, restored);
        // What was assigned to an agent is kept a while for that agent;
        // what was never handed out goes to whoever can take it.
        self.hold_restored_until = now + RECONNECT_GRACE.max(self.lease_timeout).as_millis() as u64;
        while let Some(dispatch) = self.engine.poll_dispatch() {
            if let Some(agent) = &dispatch.assigned {
                self.restored.insert(dispatch.job_id.clone(), agent.clone());
            }
            self.pending.push_back(dispatch);
        }
        if count > 0 {
            info!(executions = count, "resumed unfinished executions");
        }
        self.commit(Vec::new())?;
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            let mut next = Some(command);
            while let Some(command) = next.take() {
                next = self.handle_batch(command, &mut rx);
            }
        }
    }

    /// A stored pipeline version, parsed once.
    fn definition(&mut self, name: &str, version: u64) -> Result<Arc<Pipeline>> {
        if let Some(def) = self.definitions.get(&(name.to_string(), version)) {
            return Ok(def.clone());
        }
        let record = self
            .store
            .pipeline(name, Some(version))?
            .with_context(|| format!("pipeline \"{name}\" version {version} is missing from the store"))?;
        let decl = pipeline::parse(&record.definition)
            .map_err(|d| anyhow::anyhow!("stored pipeline \"{name}\" version {version} is corrupt: {d}"))?;
        let def = Arc::new(decl.pipeline);
        self.definitions.insert((name.to_string(), version), def.clone());
        Ok(def)
    }

    /// Writes the step's changes and the engine's dirty executions in one
    /// transaction, then sends the jobs of the step, tells watchers and
    /// hands out ready actions. Handing out is itself a change (the
    /// assignment), committed before the job is sent.
    fn commit(&mut self, mut changes: Vec<Change>) -> Result<()> {
        if self.defer_commit(&mut changes) {
            return Ok(());
        }
        loop {
            for execution in self.engine.take_dirty() {
                changes.extend(Self::seen_revisions(&execution));
                changes.push(Change::Execution(Box::new(execution)));
            }
            if let Err(e) = self.store.apply(&changes) {
                // The engine is now ahead of the store. Stopping is the only
                // safe answer: a restart replays the last committed state.
                error!("store write failed, stopping so that a restart recovers: {e:#}");
                std::process::exit(70);
            }
            for (agent_id, message) in self.outgoing.drain(..) {
                if let Some(agent) = self.agents.get(&agent_id) {
                    agent.tx.send(message);
                }
            }
            self.tell_batched_watchers();
            for notice in self.engine.take_notices() {
                let _ = self.events.send(Arc::new(views::notice(&notice)));
                log_notice(&notice);
            }
            while let Some(dispatch) = self.engine.poll_dispatch() {
                self.pending.push_back(dispatch);
            }
            // Actions that cannot be handed out (e.g. an unregistered
            // plugin) fail, which is another engine step to persist.
            let refused = self.schedule();
            // Stage conditions that asked for a rollback start one now; it
            // is persisted by the next round.
            let mut rolled_back = false;
            for request in self.engine.take_rollbacks() {
                let trigger = Trigger::new(
                    "AutomatedRollback",
                    format!("stage {} of execution {} failed its condition", request.stage, request.failed),
                );
                match self.start_rollback(&request.pipeline, &request.stage, None, Some(&request.failed), trigger) {
                    Ok(id) => {
                        info!(pipeline = %request.pipeline, stage = %request.stage, execution = %id, "automated rollback started");
                        rolled_back = true;
                    }
                    Err(e) => warn!(pipeline = %request.pipeline, stage = %request.stage, "no rollback: {e}"),
                }
            }
            if refused.is_empty() && self.outgoing.is_empty() && !rolled_back {
                return Ok(());
            }
            let now = now_ms();
            for (dispatch, message) in refused {
                self.refuse(now, dispatch, message);
            }
            changes = Vec::new();
        }
    }

    /// How often agents send heartbeats: [`HEARTBEATS_PER_LEASE`] per
    /// lease, at most every [`HEARTBEAT`].
    fn heartbeat(&self) -> Duration {
        HEARTBEAT.min(self.lease_timeout / HEARTBEATS_PER_LEASE).max(Duration::from_millis(100))
    }

    fn lease_until(&self, now: u64) -> u64 {
        now + self.lease_timeout.as_millis() as u64
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::CreatePipeline { text, by, reply } => {
                let _ = reply.send(self.create_pipeline(&text, &by));
            }
            Command::ValidatePipeline { text, reply } => {
                let result = pipeline::parse_and_validate(&text, &self.catalog)
                    .map(|d| json!({ "valid": true, "pipelineName": d.pipeline.name }))
                    .map_err(invalid_declaration);
                let _ = reply.send(result);
            }
            Command::CreateUser { name, role, reply } => {
                let _ = reply.send(self.create_user(&name, role));
            }
            Command::ListUsers { reply } => {
                let _ = reply.send(self.list_users());
            }
            Command::CreateToken { user, reply } => {
                let _ = reply.send(self.create_token(&user));
            }
            Command::ListTokens { reply } => {
                let _ = reply.send(self.list_tokens());
            }
            Command::RevokeToken { id, reply } => {
                let _ = reply.send(self.revoke_token(&id));
            }
            Command::UpdatePipeline { name, text, reply } => {
                let _ = reply.send(self.update_pipeline(&name, &text));
            }
            Command::DeletePipeline { name, reply } => {
                let _ = reply.send(self.delete_pipeline(&name));
            }
            Command::GetPipeline { name, version, reply } => {
                let _ = reply.send(self.get_pipeline(&name, version));
            }
            Command::ListPipelines { reply } => {
                let _ = reply.send(self.list_pipelines());
            }
            Command::StartExecution { name, variables, revisions, trigger, reply } => {
                let result = self.start_execution(&name, variables, revisions, trigger, Vec::new());
                let _ = reply.send(result.map(|id| json!({ "pipelineExecutionId": id.0 })));
            }
            Command::StopExecution { name, id, abandon, reason, reply } => {
                let _ = reply.send(self.stop_execution(&name, &id, abandon, reason));
            }
            Command::RetryStage { name, stage, id, all, reply } => {
                let _ = reply.send(self.retry_stage(&name, &stage, &id, all));
            }
            Command::SetTransition { name, stage, enabled, reason, by, reply } => {
                let _ = reply.send(self.set_transition(&name, &stage, enabled, reason, &by));
            }
            Command::PipelineState { name, reply } => {
                let _ = reply.send(self.pipeline_state(&name));
            }
            Command::GetExecution { name, id, reply } => {
                let _ = reply.send(self.execution(&name, &id).map(|e| views::execution(&e)));
            }
            Command::ListExecutions { name, limit, next_token, reply } => {
                let _ = reply.send(self.list_executions(&name, limit, next_token));
            }
            Command::ExecutionLogs { name, id, reply } => {
                let _ = reply.send(self.execution_logs(&name, &id));
            }
            Command::ListAgents { reply } => {
                let _ = reply.send(self.list_agents());
            }
            Command::CreateJoinToken { ttl, uses, labels, allow_agent_labels, reply } => {
                let _ = reply.send(self.create_join_token(ttl, uses, labels, allow_agent_labels));
            }
            Command::LabelAgent { id, set, remove, reply } => {
                let _ = reply.send(self.label_agent(&id, set, remove));
            }
            Command::AuthorizeTransfer { agent_id, conn_id, transfer, reply } => {
                let answer = self.authorize_transfer(&agent_id, conn_id, &transfer);
                if let Err(why) = &answer {
                    warn!(%agent_id, ?transfer, "transfer refused: {why}");
                }
                let _ = reply.send(answer);
            }
            Command::ListJoinTokens { reply } => {
                let _ = reply.send(self.list_join_tokens());
            }
            Command::RevokeJoinToken { id, reply } => {
                let _ = reply.send(self.revoke_join_token(&id));
            }
            Command::SetAgentState { id, state, reply } => {
                let _ = reply.send(self.set_agent_state(&id, state));
            }
            Command::ListPlugins { reply } => {
                let mut plugins: Vec<Value> = self
                    .catalog
                    .0
                    .iter()
                    .map(|(key, p)| p.view(key))
                    .collect();
                plugins.sort_by(|a, b| a["provider"].as_str().cmp(&b["provider"].as_str()));
                let _ = reply.send(Ok(json!({ "plugins": plugins })));
            }
            Command::DescribePlugin { key, reply } => {
                let result = self
                    .catalog
                    .0
                    .get(&key)
                    .map(|p| p.view(&key))
                    .ok_or_else(|| ApiError::NotFound(format!("plugin {key} is not registered")));
                let _ = reply.send(result);
            }
            Command::DeletePlugin { key, reply } => {
                let _ = reply.send(self.delete_plugin(&key));
            }
            Command::PushPlugin { wasm, info, signature, reply } => {
                let _ = reply.send(self.push_plugin(&wasm, *info, signature.as_deref()));
            }
            Command::VetPluginSignature { digest, signature, reply } => {
                let key = format!("with digest {digest}");
                let _ = reply.send(self.verify_push(&key, &digest, signature.as_deref()).map(|_| Value::Null));
            }
            Command::ListPublishers { reply } => {
                let _ = reply.send(self.list_publishers());
            }
            Command::AddPublisher { name, public_key, by, reply } => {
                let _ = reply.send(self.add_publisher(&name, &public_key, &by));
            }
            Command::RemovePublisher { name, reply } => {
                let _ = reply.send(self.remove_publisher(&name));
            }
            Command::Enroll { request, reply } => {
                let response = self.enroll(&request).unwrap_or_else(|e| EnrollResponse::Refused { reason: format!("{e:#}") });
                let _ = reply.send(response);
            }
            Command::AgentConnected { agent_id, conn_id, hello, tx, reply } => {
                let _ = reply.send(self.agent_connected(agent_id, conn_id, hello, tx));
            }
            Command::AgentMessage { agent_id, conn_id, message } => self.agent_message(&agent_id, conn_id, message),
            Command::AgentDisconnected { agent_id, conn_id } => self.agent_disconnected(&agent_id, conn_id),
            Command::Tick => {
                let now = now_ms();
                self.expire_leases(now);
                self.expire_actions(now);
                self.collect_artifacts(now);
                self.run_polls(now);
            }
            Command::RollbackStage { name, stage, target, by, reply } => {
                let trigger = Trigger::new("RollbackStage", format!("stage {stage} rolled back by {by}")).by(by);
                let result = self
                    .start_rollback(&name, &stage, target.as_deref(), None, trigger)
                    .and_then(|id| {
                        self.commit(Vec::new())?;
                        Ok(json!({ "pipelineExecutionId": id.0 }))
                    });
                let _ = reply.send(result);
            }
            Command::Decide { name, stage, action, execution, by, approve, comment, reply } => {
                let _ = reply.send(self.decide(&name, &stage, &action, execution, &by, approve, &comment));
            }
            Command::Webhook { name, headers, body, reply } => {
                let _ = reply.send(self.webhook(&name, &headers, &body));
            }
            Command::CreateWebhook { name, reply } => {
                let _ = reply.send(self.create_webhook(&name));
            }
            Command::DeleteWebhook { name, reply } => {
                let _ = reply.send(self.delete_webhook(&name));
            }
            Command::SetSecret { name, value, pipelines, reply } => {
                let _ = reply.send(self.set_secret(&name, &value, pipelines));
            }
            Command::ListSecrets { reply } => {
                let _ = reply.send(self.list_secrets());
            }
            Command::DeleteSecret { name, reply } => {
                let _ = reply.send(self.delete_secret(&name));
            }
        }
    }

    fn create_pipeline(&mut self, text: &str, by: &str) -> Result<Value, ApiError> {
        let decl = pipeline::parse_and_validate(text, &self.catalog).map_err(invalid_declaration)?;
        self.check_secret_scopes(&decl)?;
        let name = decl.pipeline.name.clone();
        #[cfg(debug_assertions)]
        if self.panic_on_pipeline.as_ref() == Some(&name) {
            panic!("SLUICE_DEBUG_DRIVER_PANIC_ON_PIPELINE: pipeline {name}");
        }
        if self.store.pipeline(&name, None)?.is_some() {
            return Err(ApiError::Conflict(format!("pipeline \"{name}\" already exists")));
        }
        let now = now_ms();
        let definition = pipeline::to_json(&decl);
        let record = PipelineRecord { name: name.clone(), version: 1, definition, created_at: now, updated_at: now };
        let def = Arc::new(decl.pipeline.clone());
        self.definitions.insert((name.clone(), 1), def);
        // Creating a pipeline starts its first execution, as CodePipeline
        // does; both land in one transaction.
        let id = self.start_execution(
            &name,
            BTreeMap::new(),
            BTreeMap::new(),
            Trigger::new("CreatePipeline", format!("pipeline created by {by}")).by(by),
            vec![Change::Pipeline(record)],
        )?;
        self.refresh_polls(&name, 1)?;
        let mut out = declaration_value(&decl);
        out["pipelineExecutionId"] = json!(id.0);
        info!(pipeline = %name, execution = %id, "pipeline created");
        Ok(out)
    }

    /// Stores a new version. Executions in flight keep the version they
    /// started with; the next one uses this.
    fn update_pipeline(&mut self, name: &str, text: &str) -> Result<Value, ApiError> {
        let decl = pipeline::parse_and_validate(text, &self.catalog).map_err(invalid_declaration)?;
        self.check_secret_scopes(&decl)?;
        if decl.pipeline.name != name {
            return Err(ApiError::Invalid {
                message: format!(
                    "the declaration names pipeline \"{}\", not \"{name}\": a pipeline cannot be renamed",
                    decl.pipeline.name
                ),
                diagnostics: vec![],
            });
        }
        let current = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let version = current.version + 1;
        let record = PipelineRecord {
            name: name.to_string(),
            version,
            definition: pipeline::to_json(&decl),
            created_at: current.created_at,
            updated_at: now_ms(),
        };
        self.commit(vec![Change::Pipeline(record)])?;
        self.refresh_polls(name, version)?;
        info!(pipeline = %name, version, "pipeline updated");
        let mut out = declaration_value(&decl);
        out["pipeline"]["version"] = json!(version);
        Ok(out)
    }

    /// Deletes every version, execution and log of a pipeline. Refused
    /// while an execution runs, so that nothing is cut off half-way.
    fn delete_pipeline(&mut self, name: &str) -> Result<Value, ApiError> {
        if self.store.pipeline(name, None)?.is_none() {
            return Err(not_found_pipeline(name));
        }
        let running = self.engine.executions().filter(|e| e.pipeline == name).count();
        if running > 0 {
            return Err(ApiError::Conflict(format!(
                "pipeline \"{name}\" has {running} execution(s) in progress; wait for them to end before deleting it"
            )));
        }
        self.commit(vec![Change::DeletePipeline(name.to_string())])?;
        self.definitions.retain(|(n, _), _| n != name);
        self.forget_pipeline_sources(name);
        let stages: Vec<String> =
            self.transitions.keys().filter(|(p, _)| p == name).map(|(_, s)| s.clone()).collect();
        for stage in stages {
            self.transitions.remove(&(name.to_string(), stage.clone()));
            self.engine.set_transition(now_ms(), name, &stage, true);
        }
        info!(pipeline = %name, "pipeline deleted");
        Ok(json!({ "name": name, "deleted": true }))
    }

    fn get_pipeline(&mut self, name: &str, version: Option<u64>) -> Result<Value, ApiError> {
        let record = self.store.pipeline(name, version)?.ok_or_else(|| match version {
            Some(v) => ApiError::NotFound(format!("pipeline \"{name}\" has no version {v}")),
            None => not_found_pipeline(name),
        })?;
        let mut value: Value = serde_json::from_str(&record.definition).context("stored pipeline is corrupt")?;
        value["pipeline"]["version"] = json!(record.version);
        value["metadata"] = json!({
            "pipelineArn": format!("sluice:pipeline/{name}"),
            "created": views::time(record.created_at),
            "updated": views::time(record.updated_at),
        });
        Ok(value)
    }

    fn list_pipelines(&mut self) -> Result<Value, ApiError> {
        let pipelines: Vec<Value> = self
            .store
            .pipelines()?
            .into_iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "version": p.version,
                    "created": views::time(p.created_at),
                    "updated": views::time(p.updated_at),
                })
            })
            .collect();
        Ok(json!({ "pipelines": pipelines }))
    }

    fn start_execution(
        &mut self,
        name: &str,
        variables: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        changes: Vec<Change>,
    ) -> Result<ExecutionId, ApiError> {
        let version = match changes.iter().find_map(|c| match c {
            Change::Pipeline(p) if p.name == name => Some(p.version),
            _ => None,
        }) {
            Some(v) => v,
            None => self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?.version,
        };
        let def = self.definition(name, version)?;
        let unknown: Vec<&String> = variables.keys().filter(|k| def.variable(k).is_none()).collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "pipeline \"{name}\" declares no variable {}",
                    unknown.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
                ),
                diagnostics: vec![],
            });
        }
        let sources: Vec<&str> = def
            .stages
            .first()
            .map(|s| s.actions.iter().filter(|a| a.action_type_id.category == "Source").map(|a| a.name.as_str()).collect())
            .unwrap_or_default();
        let not_sources: Vec<String> =
            revisions.keys().filter(|k| !sources.contains(&k.as_str())).map(|k| format!("\"{k}\"")).collect();
        if !not_sources.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "pipeline \"{name}\" has no source action {}; its source actions: {}",
                    not_sources.join(", "),
                    sources.join(", ")
                ),
                diagnostics: vec![],
            });
        }
        for (action, revision) in &revisions {
            intake::check_revision(revision).map_err(|e| ApiError::Invalid {
                message: format!("the revision for \"{action}\": {e}"),
                diagnostics: vec![],
            })?;
        }
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        self.engine
            .handle(now_ms(), Event::Start { id: id.clone(), pipeline: def, version, trigger, variables, revisions });
        self.commit(changes)?;
        Ok(id)
    }

    fn retry_stage(&mut self, name: &str, stage: &str, id: &str, all: bool) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        if self.engine.execution(&execution.id).is_some() {
            return Err(ApiError::Conflict(format!("execution {id} is still {}", execution.status.as_str())));
        }
        let def = self.definition(name, execution.version)?;
        self.engine
            .retry(now_ms(), def, execution, stage, all)
            .map_err(ApiError::Conflict)?;
        self.commit(Vec::new())?;
        info!(pipeline = %name, %stage, execution = %id, all, "stage retried");
        Ok(json!({ "pipelineExecutionId": id }))
    }

    fn set_transition(
        &mut self,
        name: &str,
        stage: &str,
        enabled: bool,
        reason: String,
        by: &str,
    ) -> Result<Value, ApiError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let index = def
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| ApiError::NotFound(format!("pipeline \"{name}\" has no stage \"{stage}\"")))?;
        if index == 0 {
            return Err(ApiError::Invalid {
                message: format!("stage \"{stage}\" is the first stage: it has no inbound transition"),
                diagnostics: vec![],
            });
        }
        if !enabled && reason.trim().is_empty() {
            return Err(ApiError::Invalid { message: "disabling a transition needs a --reason".into(), diagnostics: vec![] });
        }
        let transition = TransitionRecord {
            pipeline: name.to_string(),
            stage: stage.to_string(),
            enabled,
            reason: (!enabled).then_some(reason),
            changed_by: by.to_string(),
            changed_at: now_ms(),
        };
        self.engine.set_transition(now_ms(), name, stage, enabled);
        self.commit(vec![Change::Transition(transition.clone())])?;
        info!(pipeline = %name, %stage, enabled, "transition changed");
        self.transitions.insert((name.to_string(), stage.to_string()), transition);
        Ok(json!({ "pipelineName": name, "stageName": stage, "enabled": enabled }))
    }

    /// StopPipelineExecution: `abandon` cancels running actions on their
    /// agents at once; otherwise they finish and nothing new starts.
    fn stop_execution(&mut self, name: &str, id: &str, abandon: bool, reason: String) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        if execution.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "execution {id} has already ended ({})",
                execution.status.as_str()
            )));
        }
        let exec_id = execution.id.clone();
        let reason = if reason.trim().is_empty() { "stopped by an operator".to_string() } else { reason };
        self.engine.handle(now_ms(), Event::Stop { id: exec_id.clone(), abandon, reason });
        // Dispatches not yet handed out never will be.
        self.pending.retain(|d| d.execution_id != exec_id);
        if abandon {
            let jobs: Vec<String> =
                self.jobs.iter().filter(|(_, j)| j.execution_id == exec_id.0).map(|(id, _)| id.clone()).collect();
            for job_id in jobs {
                let job = self.jobs.remove(&job_id).expect("listed");
                if let Some(agent) = self.agents.get_mut(&job.agent) {
                    agent.running.remove(&job_id);
                    let _ = agent.tx.send(ToAgent::Cancel { job_id: job_id.clone() });
                }
                info!(agent = %job.agent, job = %job_id, "action abandoned");
            }
        }
        self.commit(Vec::new())?;
        let status = self.execution(name, id)?.status;
        Ok(json!({ "pipelineExecutionId": id, "status": status.as_str() }))
    }

    /// An execution from memory when it is running, else from the store.
    fn execution(&mut self, name: &str, id: &str) -> Result<Execution, ApiError> {
        let id = ExecutionId(id.to_string());
        let execution = match self.engine.execution(&id) {
            Some(e) => e.clone(),
            None => self
                .store
                .execution(&id)?
                .ok_or_else(|| ApiError::NotFound(format!("pipeline \"{name}\" has no execution {id}")))?,
        };
        if execution.pipeline != name {
            return Err(ApiError::NotFound(format!("pipeline \"{name}\" has no execution {id}")));
        }
        Ok(execution)
    }

    fn recent_executions(&mut self, name: &str, limit: usize) -> Result<Vec<Execution>, ApiError> {
        let mut list = self.store.executions(name, limit)?;
        for e in &mut list {
            if let Some(live) = self.engine.execution(&e.id) {
                *e = live.clone();
            }
        }
        Ok(list)
    }

    fn list_executions(&mut self, name: &str, limit: usize, next_token: Option<String>) -> Result<Value, ApiError> {
        if self.store.pipeline(name, None)?.is_none() {
            return Err(not_found_pipeline(name));
        }
        // One more than asked says whether another page exists.
        let mut list = match &next_token {
            None => self.recent_executions(name, limit + 1)?,
            Some(token) => {
                let bad = || ApiError::Invalid { message: format!("nextToken {token:?} is not one this API gave"), diagnostics: vec![] };
                let (started, id) = token.split_once('.').ok_or_else(bad)?;
                let started: u64 = started.parse().map_err(|_| bad())?;
                let mut list = self.store.executions_before(name, (started, id), limit + 1)?;
                for e in &mut list {
                    if let Some(live) = self.engine.execution(&e.id) {
                        *e = live.clone();
                    }
                }
                list
            }
        };
        let next = (list.len() > limit).then(|| {
            list.truncate(limit);
            let last = list.last().expect("limit is at least 1");
            format!("{}.{}", last.started_at, last.id)
        });
        Ok(json!({
            "pipelineExecutionSummaries": list.iter().map(views::execution_summary).collect::<Vec<_>>(),
            "nextToken": next,
        }))
    }

    fn pipeline_state(&mut self, name: &str) -> Result<Value, ApiError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let recent = self.recent_executions(name, DEFAULT_HISTORY)?;
        let waiting: HashMap<&str, String> =
            self.pending.iter().map(|d| (d.job_id.as_str(), self.waiting_reason(d))).collect();
        let transitions: HashMap<&str, &TransitionRecord> =
            self.transitions.iter().filter(|((p, _), _)| p == name).map(|((_, s), t)| (s.as_str(), t)).collect();
        let mut state = views::pipeline_state(&record, &def, &recent, &waiting, &transitions);
        // How change detection of each polled source action is doing.
        if let Some(actions) = state["stageStates"][0]["actionStates"].as_array_mut() {
            for action in actions {
                let name = action["actionName"].as_str().unwrap_or_default().to_string();
                if let Some(polling) = self.poll_view(&record.name, &name) {
                    action["polling"] = polling;
                }
            }
        }
        Ok(state)
    }

    fn execution_logs(&mut self, name: &str, id: &str) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        let lines = self.store.logs(&execution.id.0)?;
        let mut places: HashMap<String, (String, String)> = HashMap::new();
        for stage in &execution.stages {
            for action in &stage.actions {
                if let Some(job) = &action.job_id {
                    places.insert(job.clone(), (stage.name.clone(), action.name.clone()));
                }
            }
        }
        let lines: Vec<Value> = lines
            .iter()
            .map(|l| {
                let (stage, action) = places.get(&l.job_id).cloned().unwrap_or_default();
                json!({"jobId": l.job_id, "stage": stage, "action": action, "seq": l.seq, "text": l.text})
            })
            .collect();
        Ok(json!({ "pipelineExecutionId": id, "lines": lines }))
    }

    fn list_agents(&mut self) -> Result<Value, ApiError> {
        let agents: Vec<Value> = self
            .store
            .agents()?
            .into_iter()
            .map(|a| {
                let live = self.agents.get(&a.id);
                json!({
                    "id": a.id,
                    "hostname": live.map(|l| l.hostname.clone()).unwrap_or(a.hostname),
                    "labels": live.map(|l| l.labels.clone()).unwrap_or(a.labels),
                    "state": a.state,
                    "connected": live.is_some(),
                    "slots": live.map(|l| l.slots),
                    "running": live.map(|l| l.running.len()).unwrap_or(0),
                    "pluginsCached": live.map(|l| l.plugins.len()),
                    "enrolled": views::time(a.enrolled_at),
                })
            })
            .collect();
        Ok(json!({ "agents": agents }))
    }

    fn create_join_token(
        &mut self,
        ttl: Duration,
        uses: Option<u32>,
        labels: BTreeMap<String, String>,
        allow_agent_labels: Vec<String>,
    ) -> Result<Value, ApiError> {
        let invalid = |message: String| ApiError::Invalid { message, diagnostics: vec![] };
        if uses == Some(0) {
            return Err(invalid("--uses must be at least 1".into()));
        }
        for (key, value) in &labels {
            intake::check_label(key, value).map_err(invalid)?;
        }
        for key in &allow_agent_labels {
            intake::check_label(key, "").map_err(|e| invalid(format!("--allow-agent-labels: {e}")))?;
        }
        let secret = hex::encode(rand::random::<[u8; 24]>());
        let now = now_ms();
        let record = JoinTokenRecord {
            id: format!("jt-{}", &hex::encode(rand::random::<[u8; 6]>())),
            secret_hash: sha256_hex(&secret),
            labels,
            uses_left: uses,
            expires_at: now + ttl.as_millis() as u64,
            created_at: now,
            revoked: false,
            allow_agent_labels,
        };
        self.commit(vec![Change::JoinToken(record.clone())])?;
        let token = sluice_protocol::JoinToken { ca_fingerprint: self.ca.fingerprint().to_string(), secret };
        Ok(json!({
            "id": record.id,
            "token": token.to_string(),
            "expires": views::time(record.expires_at),
            "uses": record.uses_left,
            "labels": record.labels,
            "allowAgentLabels": record.allow_agent_labels,
        }))
    }

    /// `sluice agent label ID k=v ... k-`: the operator's labels of an
    /// agent, kept in the store and applied to its live connection at once
    /// (work already running stays where it is).
    fn label_agent(&mut self, id: &str, set: BTreeMap<String, String>, remove: Vec<String>) -> Result<Value, ApiError> {
        let invalid = |message: String| ApiError::Invalid { message, diagnostics: vec![] };
        for (key, value) in &set {
            intake::check_label(key, value).map_err(invalid)?;
        }
        if let Some(key) = remove.iter().find(|k| set.contains_key(*k)) {
            return Err(invalid(format!("label {key:?} is both set and removed")));
        }
        let mut record =
            self.store.agent(id)?.ok_or_else(|| ApiError::NotFound(format!("agent {id} does not exist")))?;
        if let Some(key) = remove.iter().find(|k| intake::OBSERVED_LABELS.contains(&k.as_str())) {
            return Err(invalid(format!("label {key:?} is observed from the agent's host and cannot be removed")));
        }
        for key in &remove {
            record.labels.remove(key);
        }
        record.labels.extend(set);
        self.commit(vec![Change::Agent(record.clone())])?;
        if let Some(agent) = self.agents.get_mut(id) {
            let (labels, _) = intake::effective_labels(&agent.claimed_labels, &record.labels, &record.allow_agent_labels);
            agent.labels = labels;
        }
        info!(agent = %id, labels = ?record.labels, "agent labels changed");
        // New labels may make waiting work runnable.
        self.commit(Vec::new())?;
        let live = self.agents.get(id).map(|a| a.labels.clone());
        Ok(json!({ "id": id, "labels": live.unwrap_or(record.labels.clone()), "assigned": record.labels }))
    }

    /// Registers `provider@version` from the plugin's own `describe()`. The
    /// same version pushed again with other bytes is refused: a version
    /// names one component forever, so running pipelines never change
    /// under anyone's feet. A signature is checked against the trusted
    /// publishers first; one pushed for a version registered unsigned is
    /// recorded.
    fn push_plugin(&mut self, wasm: &[u8], info: ActionInfo, signature: Option<&str>) -> Result<Value, ApiError> {
        let key = format!("{}@{}", info.name, info.version);
        let digest = sluice_runtime::digest(wasm);
        if let Some(existing) = self.catalog.0.get(&key) {
            if existing.digest != digest {
                return Err(ApiError::Conflict(format!(
                    "plugin {key} is already registered with digest {}; publish the change under a new version",
                    existing.digest
                )));
            }
            if existing.builtin {
                return Ok(json!({"provider": key, "digest": digest, "created": false, "signedBy": null}));
            }
            let mut signed = existing.signature.clone();
            if signed.is_none() && signature.is_some() {
                let record = self.verify_push(&key, &digest, signature)?.expect("a signature was given");
                self.commit(vec![Change::PluginSignature(record.clone())])?;
                info!(plugin = %key, %digest, publisher = %record.publisher, "plugin signature recorded");
                signed = Some(record.clone());
                if let Some(entry) = self.catalog.0.get_mut(&key) {
                    entry.signature = Some(record);
                }
            } else if signature.is_some() {
                // Still refuse a bad one: the caller must learn it.
                self.verify_push(&key, &digest, signature)?;
            }
            let signed_by = signed.map(|s| s.publisher);
            return Ok(json!({"provider": key, "digest": digest, "created": false, "signedBy": signed_by}));
        }
        let signed = self.verify_push(&key, &digest, signature)?;
        self.plugins.put_bytes(wasm)?;
        let record = PluginRecord {
            provider: info.name.clone(),
            version: info.version.clone(),
            digest: digest.clone(),
            info: serde_json::to_string(&info).map_err(anyhow::Error::from)?,
            builtin: false,
        };
        let mut changes = vec![Change::Plugin(record)];
        changes.extend(signed.clone().map(Change::PluginSignature));
        self.commit(changes)?;
        let signed_by = signed.as_ref().map(|s| s.publisher.clone());
        info!(plugin = %key, %digest, publisher = signed_by.as_deref().unwrap_or("-"), "plugin registered");
        self.catalog.0.insert(key.clone(), PluginEntry { digest: digest.clone(), info, builtin: false, signature: signed });
        Ok(json!({"provider": key, "digest": digest, "created": true, "signedBy": signed_by}))
    }

    /// Removes a pushed plugin version that no pipeline's latest version and
    /// no running execution uses.
    fn delete_plugin(&mut self, key: &str) -> Result<Value, ApiError> {
        let entry = self.catalog.0.get(key).ok_or_else(|| ApiError::NotFound(format!("plugin {key} is not registered")))?;
        if entry.builtin {
            return Err(ApiError::Conflict(format!("plugin {key} is built in and cannot be deleted")));
        }
        let (provider, version) = key.split_once('@').expect("catalog keys are provider@version");
        let uses = |def: &Pipeline| {
            def.stages.iter().flat_map(|s| &s.actions).any(|a| {
                a.action_type_id.provider == provider && a.action_type_id.version == version
            })
        };
        let mut users = Vec::new();
        for record in self.store.pipelines()? {
            if uses(&*self.definition(&record.name, record.version)?) {
                users.push(format!("pipeline {}", record.name));
            }
        }
        let running: Vec<(String, u64)> = self.engine.executions().map(|e| (e.pipeline.clone(), e.version)).collect();
        for (name, version) in running {
            if uses(&*self.definition(&name, version)?) && !users.contains(&format!("pipeline {name}")) {
                users.push(format!("a running execution of {name}"));
            }
        }
        if !users.is_empty() {
            return Err(ApiError::Conflict(format!("plugin {key} is used by {}", users.join(", "))));
        }
        self.commit(vec![Change::DeletePlugin { provider: provider.to_string(), version: version.to_string() }])?;
        self.catalog.0.remove(key);
        info!(plugin = %key, "plugin deleted");
        Ok(json!({ "provider": key, "deleted": true }))
    }

    /// Join tokens without their secrets (only hashes are kept anyway).
    fn list_join_tokens(&mut self) -> Result<Value, ApiError> {
        let now = now_ms();
        let tokens: Vec<Value> = self
            .store
            .join_tokens()?
            .into_iter()
            .map(|t| {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else if t.uses_left == Some(0) {
                    "used up"
                } else {
                    "valid"
                };
                json!({
                    "id": t.id,
                    "state": state,
                    "usesLeft": t.uses_left,
                    "labels": t.labels,
                    "allowAgentLabels": t.allow_agent_labels,
                    "created": views::time(t.created_at),
                    "expires": views::time(t.expires_at),
                })
            })
            .collect();
        Ok(json!({ "agentTokens": tokens }))
    }

    fn revoke_join_token(&mut self, id: &str) -> Result<Value, ApiError> {
        let mut token = self
            .store
            .join_tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("join token {id} does not exist")))?;
        token.revoked = true;
        self.commit(vec![Change::JoinToken(token)])?;
        info!(token = %id, "join token revoked");
        Ok(json!({ "id": id, "state": "revoked" }))
    }

    fn set_agent_state(&mut self, id: &str, state: AgentState) -> Result<Value, ApiError> {
        let mut record =
            self.store.agent(id)?.ok_or_else(|| ApiError::NotFound(format!("agent {id} does not exist")))?;
        if record.state == AgentState::Revoked.as_str() && state != AgentState::Revoked {
            return Err(ApiError::Conflict(format!(
                "agent {id} is revoked for good: enroll the host again with a join token (it gets a new id)"
            )));
        }
        record.state = state.as_str().to_string();
        let mut changes = Vec::new();
        if state == AgentState::Revoked {
            // Durable first: a restarted controller must refuse it too.
            changes.push(Change::Revocation(RevocationRecord {
                serial: record.cert_serial.clone(),
                agent_id: id.to_string(),
                revoked_at: now_ms(),
            }));
        }
        changes.push(Change::Agent(record.clone()));
        self.commit(changes)?;
        if state == AgentState::Revoked {
            self.revocations.revoke(id, &record.cert_serial);
        }
        if let Some(agent) = self.agents.get_mut(id) {
            agent.draining = state == AgentState::Draining;
        }
        let cut_off = matches!(state, AgentState::Disabled | AgentState::Revoked);
        if cut_off && let Some(agent) = self.agents.remove(id) {
            // Cut off now: the fleet closes the connection after sending
            // this, and the agent's jobs are given up.
            let verb = if state == AgentState::Revoked { "was revoked" } else { "is disabled" };
            let _ = agent.tx.send(ToAgent::Refused { reason: format!("agent {id} {verb}") });
        }
        if cut_off {
            let jobs = self.jobs_of(id);
            let reason = format!("agent {id} lost: it was {} while running the action", state.as_str());
            self.lose_jobs(now_ms(), jobs, &reason);
        }
        info!(agent = %id, state = state.as_str(), "agent state changed");
        // Enabling may make waiting work runnable.
        self.commit(Vec::new())?;
        Ok(json!({ "id": id, "state": state.as_str() }))
    }

    fn enroll(&mut self, request: &EnrollRequest) -> Result<EnrollResponse> {
        let refuse = |reason: &str| Ok(EnrollResponse::Refused { reason: reason.to_string() });
        let Some(mut token) = self.store.join_token_by_hash(&sha256_hex(&request.secret))? else {
            return refuse("join token is unknown");
        };
        if token.revoked {
            return refuse(&format!("join token {} was revoked", token.id));
        }
        if token.expires_at <= now_ms() {
            return refuse(&format!("join token {} has expired", token.id));
        }
        if token.uses_left == Some(0) {
            return refuse(&format!("join token {} has been used up", token.id));
        }
        let agent_id = format!("ag-{}", hex::encode(rand::random::<[u8; 8]>()));
        let (cert_pem, serial) = self.ca.sign_agent(&request.csr_pem, &agent_id, self.agent_cert_lifetime)?;
        token.uses_left = token.uses_left.map(|n| n - 1);
        let agent = AgentRecord {
            id: agent_id.clone(),
            hostname: intake::clean_text(&request.hostname, 253, intake::Lines::Joined),
            labels: token.labels.clone(),
            cert_serial: serial,
            enrolled_at: now_ms(),
            state: "enabled".into(),
            allow_agent_labels: token.allow_agent_labels.clone(),
        };
        let hostname = agent.hostname.clone();
        self.commit(vec![Change::JoinToken(token.clone()), Change::Agent(agent)])?;
        info!(%agent_id, token = %token.id, %hostname, "agent enrolled");
        Ok(EnrollResponse::Enrolled { agent_id, cert_pem, ca_pem: self.ca.cert_pem().to_string(), labels: token.labels })
    }

    fn agent_connected(&mut self, agent_id: String, conn_id: u64, hello: Hello, tx: AgentSender) -> ToAgent {
        if hello.protocol_version != PROTOCOL_VERSION {
            return ToAgent::Refused {
                reason: format!(
                    "protocol version mismatch: agent speaks {}, controller speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            };
        }
        let record = match self.store.agent(&agent_id) {
            Ok(Some(r)) => r,
            Ok(None) => return ToAgent::Refused { reason: format!("agent {agent_id} is not enrolled here") },
            Err(e) => return ToAgent::Refused { reason: format!("controller error: {e:#}") },
        };
        if record.state == AgentState::Disabled.as_str() {
            return ToAgent::Refused { reason: format!("agent {agent_id} is disabled") };
        }
        // The handshake refuses revoked certificates; this covers a
        // revocation that raced with the handshake.
        if record.state == AgentState::Revoked.as_str() {
            return ToAgent::Refused { reason: format!("agent {agent_id} was revoked") };
        }
        // A new connection replaces an old one that has not noticed it is dead.
        if self.agents.contains_key(&agent_id) {
            self.agent_disconnected(&agent_id, self.agents[&agent_id].conn_id);
        }
        // The operator's labels (token and `agent label`), the observed
        // `os` and `arch`, and only those claims the token allows.
        let (labels, ignored) = intake::effective_labels(&hello.labels, &record.labels, &record.allow_agent_labels);
        if !ignored.is_empty() {
            warn!(%agent_id, claimed = %ignored.join(","), "labels the agent claims for itself that its join token does not allow: ignored");
        }
        let slots = hello.slots.clamp(1, self.max_agent_slots);
        if hello.slots > self.max_agent_slots {
            warn!(%agent_id, asked = hello.slots, slots, "the agent asks for more slots than --max-agent-slots: capped");
        }
        let reported: HashSet<String> = hello.running.iter().cloned().collect();
        let now = now_ms();
        // Jobs it had before the drop: those it still runs carry on under
        // a renewed lease. The same process without a job never got it
        // (the job frame died with the connection): it is handed out again
        // in the same attempt. A restarted process may have started it:
        // lost.
        let same_process = self.instances.get(&agent_id) == Some(&hello.instance);
        let (kept, gone): (Vec<String>, Vec<String>) =
            self.jobs_of(&agent_id).into_iter().partition(|j| reported.contains(j));
        let until = self.lease_until(now);
        let mut running = HashSet::new();
        for job_id in kept {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.lease_until = until;
            }
            running.insert(job_id);
        }
        let (never_got, gone): (Vec<String>, Vec<String>) =
            gone.into_iter().partition(|j| same_process && self.jobs.get(j).is_some_and(|job| !job.started));
        for job_id in never_got {
            let job = self.jobs.remove(&job_id).expect("listed");
            info!(agent = %agent_id, job = %job_id, "the job never reached the agent; handing it out again");
            self.pending.push_front(job.dispatch);
        }
        self.instances.insert(agent_id.clone(), hello.instance);
        self.lose_jobs(now, gone, &format!("agent {agent_id} lost: it came back without the action (it was restarted)"));
        // After a controller restart, actions that were assigned to this
        // agent and that it still runs go back to it under their new lease,
        // instead of starting twice. Only its own: a job id it lists that
        // was never assigned to it (another agent's, or one not handed out
        // yet) gives it nothing. Those assigned to it that it no longer
        // has are lost.
        let mut resumed = Vec::new();
        let mut forgotten = Vec::new();
        let mut never_received = Vec::new();
        self.pending.retain(|d| {
            let assigned_here = d.assigned.as_deref() == Some(agent_id.as_str());
            if reported.contains(&d.job_id) && assigned_here {
                resumed.push(d.clone());
                false
            } else if assigned_here && d.started && self.restored.contains_key(&d.job_id) {
                forgotten.push(d.clone());
                false
            } else {
                // Assigned here but neither started nor reported: the job
                // never reached the agent (the controller stopped before it
                // went out), so it waits for any agent, in this attempt.
                if assigned_here {
                    never_received.push(d.job_id.clone());
                }
                true
            }
        });
        let resumable: HashSet<&str> = resumed.iter().map(|d| d.job_id.as_str()).collect();
        let foreign: Vec<&String> =
            reported.iter().filter(|j| !running.contains(*j) && !resumable.contains(j.as_str())).collect();
        if !foreign.is_empty() {
            // Either jobs that ended while it was away (the controller has
            // their results) or ids it has no claim to: nothing is handed over.
            let shown: Vec<String> = foreign.iter().take(8).map(|j| intake::clean_text(j, 80, intake::Lines::Joined)).collect();
            warn!(%agent_id, jobs = %shown.join(","), "the agent lists jobs it does not hold: refused");
        }
        for job_id in resumed.iter().chain(&forgotten).map(|d| &d.job_id).chain(&never_received) {
            self.restored.remove(job_id);
        }
        for d in forgotten {
            let reason = format!("agent {agent_id} lost: it came back without the action (it was restarted)");
            warn!(agent = %agent_id, job = %d.job_id, "{reason}");
            self.engine.handle(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
        }
        self.agents.insert(
            agent_id.clone(),
            AgentConn {
                conn_id,
                draining: record.state == AgentState::Draining.as_str(),
                tx,
                claimed_labels: hello.labels.clone(),
                labels,
                slots,
                running,
                hostname: record.hostname,
                last_heard: now,
                plugins: hello.plugins.iter().filter(|d| sluice_runtime::is_digest(d)).take(4096).cloned().collect(),
            },
        );
        for dispatch in resumed {
            match self.hand_out(&agent_id, &dispatch, HandOut::Resume) {
                Ok(()) => {}
                Err(Refusal::Ineligible(why)) => {
                    // It runs there, but may no longer: stop it there, and
                    // the action goes to an agent that may take it.
                    warn!(agent = %agent_id, job = %dispatch.job_id, "not giving the job back: {why}");
                    if let Some(agent) = self.agents.get(&agent_id) {
                        agent.tx.send(ToAgent::Cancel { job_id: dispatch.job_id.clone() });
                    }
                    self.pending.push_back(dispatch);
                }
                Err(Refusal::Impossible(message)) => self.refuse(now, dispatch, message),
            }
        }
        info!(%agent_id, "agent ready");
        let _ = self.commit(Vec::new());
        ToAgent::Welcome { agent_id, heartbeat_ms: self.heartbeat().as_millis() as u64 }
    }

    fn agent_message(&mut self, agent_id: &str, conn_id: u64, message: FromAgent) {
        let now = now_ms();
        match self.agents.get_mut(agent_id) {
            Some(agent) if agent.conn_id == conn_id => agent.last_heard = now,
            _ => return,
        }
        match message {
            FromAgent::Hello(_) => {}
            FromAgent::PollResult { poll_id, result } => self.poll_result(agent_id, &poll_id, result),
            FromAgent::RenewCertificate { csr_pem } => {
                if let Err(why) = self.take_renewal(agent_id, now) {
                    warn!(%agent_id, "certificate renewal refused: {why}");
                    self.agents[agent_id].tx.send(ToAgent::RenewalRefused { reason: why });
                    return;
                }
                let answer = match self.renew(agent_id, &csr_pem) {
                    Ok(cert_pem) => ToAgent::Renewed { cert_pem },
                    Err(e) => {
                        warn!(%agent_id, "certificate renewal refused: {e:#}");
                        ToAgent::RenewalRefused { reason: format!("{e:#}") }
                    }
                };
                self.agents[agent_id].tx.send(answer);
            }
            FromAgent::Heartbeat { running } => {
                // A heartbeat renews the lease of every job it reports.
                // Each heartbeat also acknowledges the log stored since the
                // last one, so that the agent forgets it.
                let until = self.lease_until(now);
                let tx = self.agents[agent_id].tx.clone();
                for job_id in &running {
                    if let Some(job) = self.jobs.get_mut(job_id).filter(|j| j.agent == agent_id) {
                        job.lease_until = until;
                        if let Some(seq) = job.log_seq.filter(|s| job.log_acked < Some(*s)) {
                            job.log_acked = Some(seq);
                            let _ = tx.send(ToAgent::LogAck { job_id: job_id.clone(), seq });
                        }
                    }
                }
                let _ = tx.send(ToAgent::HeartbeatAck);
            }
            FromAgent::JobStarted { job_id, .. } => {
                // The lease that counts is the one this agent holds now: a
                // job given back to it after a restart started earlier.
                let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
                job.started = true;
                let lease_epoch = job.lease_epoch;
                self.engine.handle(now, Event::ActionStarted { job_id, lease_epoch, agent: agent_id.to_string() });
                let _ = self.commit(Vec::new());
            }
            FromAgent::Log { job_id, seq, text } => {
                let max = self.max_action_log;
                let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
                // Lines come in order; after a reconnect the agent sends
                // again what it has not seen acknowledged.
                if job.log_seq.is_some_and(|stored| seq <= stored) {
                    return;
                }
                job.log_seq = Some(seq);
                let text = if job.log_bytes + text.len() as u64 <= max {
                    job.log_bytes += text.len() as u64;
                    text
                } else if !job.log_truncated {
                    job.log_truncated = true;
                    format!("{LOG_TRUNCATED} the action wrote more than {max} bytes; the rest is not kept]\n")
                } else {
                    return;
                };
                // Inert text for the store, the API and terminals.
                let text = intake::clean_text(&text, intake::LOG_TEXT_MAX_CHARS, intake::Lines::Kept);
                let line = LogLine { job_id: job_id.clone(), execution_id: job.execution_id.clone(), seq, text };
                let event = json!({
                    "type": "log", "pipeline": job.pipeline, "executionId": job.execution_id, "jobId": job_id,
                    "stage": job.stage, "action": job.action, "seq": seq, "text": line.text,
                });
                let _ = self.commit(vec![Change::Log(line)]);
                self.tell_watchers(event);
            }
            FromAgent::JobFinished { job_id, result, .. } => {
                // Only the agent that holds the job may end it. It may carry
                // an older epoch when the job was given back to the same
                // agent after a restart; another agent's result never counts.
                let ack = ToAgent::ResultAck { job_id: job_id.clone() };
                let Some(job) = self.jobs.get(&job_id).filter(|j| j.agent == agent_id) else {
                    warn!(%agent_id, %job_id, "refusing a result for a job this agent does not hold");
                    // Refused for good: the agent may stop sending it. In a
                    // batch this may be a repeat of a result taken a moment
                    // ago, so the ack waits for that commit too.
                    self.after_commit(agent_id, ack);
                    return;
                };
                let lease_epoch = job.lease_epoch;
                // Checked against what the action declared and what this
                // agent uploaded; a result that cannot stand fails the action.
                let declared: Vec<OutputSpec> = job
                    .dispatch
                    .outputs
                    .iter()
                    .map(|(name, files)| OutputSpec { name: name.clone(), files: files.clone() })
                    .collect();
                let mut result = intake::clean_result(result, &declared);
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(bad) = outputs.iter().find(|o| !self.may_name(&o.digest, o.size))
                {
                    let message = format!(
                        "the agent's result was refused: output artifact {:?} ({}) is not stored with {} bytes",
                        bad.name, bad.digest, bad.size
                    );
                    result = JobResult::Failed { message, retryable: false };
                }
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(uploaded) = &job.uploaded
                    && let Some(bad) = outputs.iter().find(|o| !uploaded.contains(&o.digest))
                {
                    let message = format!(
                        "the agent's result was refused: output artifact {:?} ({}) was not uploaded by this agent \
                         while it held the job",
                        bad.name, bad.digest
                    );
                    result = JobResult::Failed { message, retryable: false };
                }
                if let JobResult::Failed { message, .. } = &result
                    && message.starts_with("the agent's result was refused")
                {
                    warn!(%agent_id, %job_id, "{message}");
                }
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(uploads) = self.uploads.get_mut(agent_id)
                {
                    for output in outputs {
                        uploads.remove(&output.digest);
                    }
                }
                self.jobs.remove(&job_id);
                if let Some(agent) = self.agents.get_mut(agent_id) {
                    agent.running.remove(&job_id);
                }
                self.settle_uploads(agent_id);
                let result = match result {
                    JobResult::Succeeded { summary, output_variables, external_url, outputs } => ActionResult::Succeeded {
                        summary,
                        output_variables,
                        external_url,
                        outputs: outputs
                            .into_iter()
                            .map(|ProducedArtifact { name, digest, size }| (name, ArtifactRef { digest, size }))
                            .collect(),
                    },
                    JobResult::Failed { message, .. } => ActionResult::Failed { message },
                };
                self.engine.handle(now, Event::ActionFinished { job_id, lease_epoch, result });
                let _ = self.commit(Vec::new());
                // Only once the result is durable may the agent forget it.
                self.after_commit(agent_id, ack);
            }
        }
    }

    /// Whether a result may name the artifact `digest`: one the store
    /// has, never one that is not there. (Whose upload it was is not
    /// asked: the same bytes may have been stored by another job, or
    /// before a controller restart; an agent learns a digest it did not
    /// upload only from the inputs of jobs it held, whose bytes it had.)
    /// The size must be the stored blob's: it is what consumers and the
    /// API are told.
    fn may_name(&self, digest: &str, size: u64) -> bool {
        self.artifacts.size_of(digest) == Some(size)
    }

    /// Once an agent holds no job, its books keep only the uploads that
    /// are not stored: bytes it cut off (or is still sending) stay on disk
    /// as partial files until the collector removes them, and count against
    /// its quota until then ([`Driver::forget_collected_uploads`]). Whole
    /// blobs no result named are the collector's (and the free-space
    /// floor's) business.
    fn settle_uploads(&mut self, agent_id: &str) {
        if self.jobs.values().any(|j| j.agent == agent_id) {
            return;
        }
        let artifacts = &self.artifacts;
        if let Some(books) = self.uploads.get_mut(agent_id) {
            books.retain(|digest, _| !artifacts.contains(digest));
            if books.is_empty() {
                self.uploads.remove(agent_id);
            }
        }
    }

    /// Drops the bookings, of agents that hold no job, whose bytes are
    /// gone: neither stored nor left in a partial file (the collector
    /// removed it, or it was never written), and that were granted longer
    /// than a collection interval ago (an upload granted a moment ago may
    /// not have written its first byte yet).
    fn forget_collected_uploads(&mut self, now: u64) {
        let artifacts = &self.artifacts;
        let jobs = &self.jobs;
        let settled = now.saturating_sub(self.artifact_gc_interval.as_millis() as u64);
        self.uploads.retain(|agent_id, books| {
            if !jobs.values().any(|j| &j.agent == agent_id) {
                books.retain(|digest, booking| {
                    booking.granted >= settled || artifacts.contains(digest) || artifacts.has_partial(digest)
                });
            }
            !books.is_empty()
        });
    }

    /// Bytes granted to uploads that are not stored yet, over all agents:
    /// the free-space floor reserves them (bytes already written to a
    /// partial file count twice, which errs on the safe side).
    fn uploads_in_flight(&self) -> u64 {
        self.uploads
            .values()
            .flat_map(|books| books.iter())
            .filter(|(digest, _)| !self.artifacts.contains(digest))
            .fold(0u64, |sum, (_, booking)| sum.saturating_add(booking.size))
    }

    /// Takes one renewal from the agent's allowance ([`RENEWAL_BURST`],
    /// then one per a quarter of the certificate's life, 1 s to 60 s).
    fn take_renewal(&mut self, agent_id: &str, now: u64) -> Result<(), String> {
        let every = (self.agent_cert_lifetime / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let every = every.as_millis() as u64;
        let (tokens, since) = self.renewals.entry(agent_id.to_string()).or_insert((RENEWAL_BURST, now));
        let earned = (now.saturating_sub(*since) / every) as u32;
        if earned > 0 {
            *tokens = (*tokens + earned).min(RENEWAL_BURST);
            *since += u64::from(earned) * every;
        }
        if *tokens == 0 {
            let wait = (*since + every).saturating_sub(now).div_ceil(1000);
            return Err(format!("agent {agent_id} asks for renewals too often: the next is allowed in {wait}s"));
        }
        *tokens -= 1;
        Ok(())
    }

    /// May `agent_id`, connected as `conn_id`, move these bytes? It may
    /// fetch the plugin and the input artifacts of jobs it holds (and the
    /// plugin of a poll it was handed), and upload while it holds a job
    /// that declares output artifacts, within its quota and the store's
    /// free-space floor. An upload granted is booked against the quota.
    fn authorize_transfer(&mut self, agent_id: &str, conn_id: u64, transfer: &Transfer) -> Result<(), String> {
        if self.agents.get(agent_id).is_none_or(|a| a.conn_id != conn_id) {
            return Err(format!("agent {agent_id} is not connected on this connection"));
        }
        let held = || self.jobs.values().filter(|j| j.agent == agent_id);
        match transfer {
            Transfer::FetchPlugin { digest } => {
                if held().any(|j| &j.plugin_digest == digest) || self.polls_plugin(agent_id, digest) {
                    Ok(())
                } else {
                    Err(format!("plugin {digest} belongs to no job or poll agent {agent_id} holds"))
                }
            }
            Transfer::FetchArtifact { digest } => {
                if held().any(|j| j.dispatch.inputs.iter().any(|(_, a)| &a.digest == digest)) {
                    Ok(())
                } else {
                    Err(format!("artifact {digest} is an input of no job agent {agent_id} holds"))
                }
            }
            Transfer::Upload { digest, size } => {
                if !held().any(|j| !j.dispatch.outputs.is_empty()) {
                    return Err(format!("agent {agent_id} holds no job that declares output artifacts"));
                }
                self.book_upload(agent_id, digest, *size)?;
                // Transfers name no job: the grant counts for every job
                // with outputs the agent holds now, and for no later one.
                for job in self.jobs.values_mut().filter(|j| j.agent == agent_id && !j.dispatch.outputs.is_empty()) {
                    if let Some(uploaded) = &mut job.uploaded
                        && uploaded.len() < MAX_BOOKED_UPLOADS
                    {
                        uploaded.insert(digest.clone());
                    }
                }
                Ok(())
            }
        }
    }

    /// Books an upload of `digest` of `size` bytes by `agent_id` against
    /// its quota and the free-space floor.
    fn book_upload(&mut self, agent_id: &str, digest: &str, size: u64) -> Result<(), String> {
        // The largest size asked for a digest is what its upload
        // may write (`put_stream` stops at the size of the request
        // granted): a request asking more is checked again for
        // the difference.
        let books = self.uploads.get(agent_id);
        let booked = books.and_then(|u| u.get(digest)).map(|b| b.size);
        if booked.is_some_and(|b| b >= size) {
            return Ok(());
        }
        let more = size - booked.unwrap_or(0);
        if booked.is_none() && books.is_some_and(|u| u.len() >= MAX_BOOKED_UPLOADS) {
            return Err(format!(
                "agent {agent_id} has {MAX_BOOKED_UPLOADS} uploads that no result named yet: no more are granted"
            ));
        }
        let used: u64 = books.map(|u| u.values().map(|b| b.size).sum()).unwrap_or(0);
        if used.saturating_add(more) > self.agent_upload_quota {
            return Err(format!(
                "agent {agent_id}'s upload quota is used up: {used} bytes uploaded (or cut off) that no result \
                 named yet, {more} more asked, {} allowed (--agent-upload-quota)",
                self.agent_upload_quota
            ));
        }
        if !self.artifacts.contains(digest) {
            let free = self.artifacts.free_bytes().map_err(|e| format!("{e:#}"))?;
            let reserved = self.uploads_in_flight();
            if free.saturating_sub(reserved).saturating_sub(more) < self.min_free_space {
                return Err(format!(
                    "the controller's artifact store has {free} bytes free, {reserved} of them granted to \
                     uploads in flight; {more} more bytes would leave less than the {} kept free \
                     (--min-free-space)",
                    self.min_free_space
                ));
            }
        }
        let booking = Booking { size, granted: now_ms() };
        self.uploads.entry(agent_id.to_string()).or_default().insert(digest.to_string(), booking);
        Ok(())
    }

    /// Signs a new certificate for a connected agent; the name in it is the
    /// agent's own, whatever the request says.
    fn renew(&mut self, agent_id: &str, csr_pem: &str) -> Result<String> {
        let mut record = self.store.agent(agent_id)?.with_context(|| format!("agent {agent_id} is not enrolled"))?;
        if record.state == AgentState::Revoked.as_str() {
            anyhow::bail!("agent {agent_id} was revoked");
        }
        let (cert_pem, serial) = self.ca.sign_agent(csr_pem, agent_id, self.agent_cert_lifetime)?;
        record.cert_serial = serial;
        self.commit(vec![Change::Agent(record)])?;
        info!(%agent_id, "agent certificate renewed");
        Ok(cert_pem)
    }

    /// An agent's connection dropped. Its jobs may well still be running
    /// there: they keep their leases, which the agent renews if it comes
    /// back in time and reports them.
    fn agent_disconnected(&mut self, agent_id: &str, conn_id: u64) {
        if self.agents.get(agent_id).is_none_or(|a| a.conn_id != conn_id) {
            return;
        }
        self.agents.remove(agent_id);
        info!(%agent_id, "agent disconnected");
    }

    /// RollbackStage: runs `stage` again in a new execution with the
    /// artifacts of `target` (by default the newest execution, older than
    /// `before` if given, in which the stage succeeded). Engine only: the
    /// caller commits.
    fn start_rollback(
        &mut self,
        name: &str,
        stage: &str,
        target: Option<&str>,
        before: Option<&ExecutionId>,
        trigger: Trigger,
    ) -> Result<ExecutionId, ApiError> {
        let succeeded_here = |e: &Execution| {
            e.status.is_final() && e.stages.iter().any(|s| s.name == stage && s.status == Some(crate::engine::StageStatus::Succeeded))
        };
        let target = match target {
            Some(id) => {
                let e = self.execution(name, id)?;
                if !succeeded_here(&e) {
                    return Err(ApiError::Conflict(format!("stage \"{stage}\" did not succeed in execution {id} (or it is still running)")));
                }
                e
            }
            None => {
                let before_started = before
                    .and_then(|id| self.store.execution(id).ok().flatten())
                    .map(|e| (e.started_at, e.id));
                self.store
                    .executions(name, 200)?
                    .into_iter()
                    .filter(|e| before_started.as_ref().is_none_or(|(at, id)| &e.id != id && e.started_at <= *at))
                    .find(|e| succeeded_here(e))
                    .ok_or_else(|| {
                        ApiError::Conflict(format!("no earlier execution of \"{name}\" in which stage \"{stage}\" succeeded"))
                    })?
            }
        };
        let def = self.definition(name, target.version)?;
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        self.engine
            .start_rollback(now_ms(), id.clone(), def, target.version, &target, stage, trigger)
            .map_err(ApiError::Conflict)?;
        Ok(id)
    }

    /// Fails actions past their timeout; agents running them are told to stop.
    fn expire_actions(&mut self, now: u64) {
        let jobs = self.engine.expire(now);
        if jobs.is_empty() && !self.engine.has_dirty() {
            return;
        }
        for job_id in jobs {
            self.pending.retain(|d| d.job_id != job_id);
            if let Some(job) = self.jobs.remove(&job_id)
                && let Some(agent) = self.agents.get_mut(&job.agent)
            {
                agent.running.remove(&job_id);
                let _ = agent.tx.send(ToAgent::Cancel { job_id });
            }
        }
        let _ = self.commit(Vec::new());
    }

    /// Records an approval decision by `by` (the caller's user).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        name: &str,
        stage: &str,
        action: &str,
        execution: Option<String>,
        by: &str,
        approve: bool,
        comment: &str,
    ) -> Result<Value, ApiError> {
        self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let id = match execution {
            Some(id) => ExecutionId(id),
            None => self
                .engine
                .executions()
                .filter(|e| e.pipeline == name)
                .filter(|e| {
                    e.stages.iter().any(|s| {
                        s.name == stage
                            && s.actions.iter().any(|a| {
                                a.name == action && a.approval.is_some() && a.status == Some(ActionStatus::InProgress)
                            })
                    })
                })
                .max_by_key(|e| e.ordinal)
                .map(|e| e.id.clone())
                .ok_or_else(|| {
                    ApiError::NotFound(format!("no execution of \"{name}\" is waiting for approval at {stage}/{action}"))
                })?,
        };
        let outcome = self
            .engine
            .decide(now_ms(), &id, stage, action, by, approve, comment)
            .map_err(ApiError::Conflict)?;
        self.commit(Vec::new())?;
        info!(pipeline = %name, %stage, %action, execution = %id, %by, approve, "approval decision: {outcome}");
        Ok(json!({ "pipelineExecutionId": id.0, "status": if approve { "Approved" } else { "Rejected" }, "result": outcome }))
    }

    /// Removes artifacts no stored execution refers to (those of deleted
    /// pipelines, of results that never arrived), off the driver's task.
    fn collect_artifacts(&mut self, now: u64) {
        if now < self.next_gc {
            return;
        }
        self.next_gc = now + self.artifact_gc_interval.as_millis() as u64;
        // Before this collection: what the last one removed is released.
        self.forget_collected_uploads(now);
        let keep = match self.store.artifact_digests() {
            Ok(keep) => keep,
            Err(e) => return warn!("listing the artifacts in use: {e:#}"),
        };
        let artifacts = self.artifacts.clone();
        let before = SystemTime::now() - self.artifact_gc_interval;
        tokio::task::spawn_blocking(move || match artifacts.collect_garbage(&keep, before) {
            Ok((0, _)) => {}
            Ok((count, bytes)) => info!(count, bytes, "unreferenced artifacts removed"),
            Err(e) => warn!("removing unreferenced artifacts: {e:#}"),
        });
    }

    /// The jobs an agent holds, connected or not.
    fn jobs_of(&self, agent_id: &str) -> Vec<String> {
        self.jobs.iter().filter(|(_, j)| j.agent == agent_id).map(|(id, _)| id.clone()).collect()
    }

    /// Gives up on jobs whose lease ran out, and on restored actions whose
    /// agent did not come back after a restart: they are `Lost`.
    fn expire_leases(&mut self, now: u64) {
        let mut changed = false;
        if !self.restored.is_empty() && now >= self.hold_restored_until {
            let restored = std::mem::take(&mut self.restored);
            let mut held = Vec::new();
            self.pending.retain(|d| {
                let mine = restored.contains_key(&d.job_id);
                if mine {
                    held.push(d.clone());
                }
                !mine
            });
            let grace = RECONNECT_GRACE.max(self.lease_timeout).as_secs();
            for d in held {
                let agent = &restored[&d.job_id];
                let reason = format!("agent {agent} lost: it did not report the action within {grace}s of a controller restart");
                warn!(%agent, job = %d.job_id, "{reason}");
                self.engine.handle(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
            }
            changed = true;
        }
        // An agent silent for a whole lease is gone, whatever QUIC thinks
        // (its idle timeout is longer than a short lease): it takes no
        // more work, and if it is alive after all it is told to reconnect.
        let lease = self.lease_timeout.as_millis() as u64;
        let silent: Vec<String> =
            self.agents.iter().filter(|(_, a)| now >= a.last_heard + lease).map(|(id, _)| id.clone()).collect();
        for agent_id in silent {
            let agent = self.agents.remove(&agent_id).expect("listed");
            let secs = self.lease_timeout.as_secs_f64();
            warn!(%agent_id, "agent silent for {secs}s: taking it for gone");
            let _ = agent.tx.send(ToAgent::Refused { reason: format!("agent {agent_id} was silent for {secs}s: reconnect") });
            changed = true;
        }
        let expired: Vec<String> =
            self.jobs.iter().filter(|(_, j)| j.lease_until <= now).map(|(id, _)| id.clone()).collect();
        let quiet = 2 * self.heartbeat().as_millis() as u64;
        for job_id in expired {
            let agent_id = self.jobs[&job_id].agent.clone();
            let secs = self.lease_timeout.as_secs_f64();
            let reason = match self.agents.get_mut(&agent_id) {
                // Connected, heard from, but no longer reporting the job:
                // whatever is left of it there must not run on beside the
                // next attempt.
                Some(agent) if now < agent.last_heard + quiet => {
                    agent.running.remove(&job_id);
                    let _ = agent.tx.send(ToAgent::Cancel { job_id: job_id.clone() });
                    format!("agent {agent_id} lost: it did not report the action for {secs}s")
                }
                _ => format!("agent {agent_id} lost: no heartbeat for {secs}s"),
            };
            self.lose_jobs(now, vec![job_id], &reason);
            changed = true;
        }
        if changed {
            let _ = self.commit(Vec::new());
        }
    }

    fn lose_jobs(&mut self, now: u64, jobs: Vec<String>, reason: &str) {
        for job_id in jobs {
            if let Some(job) = self.jobs.remove(&job_id) {
                warn!(agent = %job.agent, job = %job_id, "{reason}");
                if let Some(agent) = self.agents.get_mut(&job.agent) {
                    agent.running.remove(&job_id);
                }
                self.settle_uploads(&job.agent);
                self.engine.handle(
                    now,
                    Event::ActionLost { job_id, lease_epoch: job.lease_epoch, reason: reason.to_string() },
                );
            }
        }
    }

    /// Why a pending action has no agent yet, in words an operator can act on.
    fn waiting_reason(&self, d: &Dispatch) -> String {
        let matching: Vec<&AgentConn> =
            self.agents.values().filter(|a| d.agent_labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))).collect();
        if self.agents.values().all(|a| a.draining) {
            "no agent is connected and taking work".into()
        } else if matching.is_empty() {
            let wanted: Vec<String> = d.agent_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("no connected agent has {}", wanted.join(","))
        } else {
            "every eligible agent is busy".into()
        }
    }

    /// Hands pending actions to the least-loaded eligible agents; returns
    /// those that can never be handed out, with the reason.
    fn schedule(&mut self) -> Vec<(Dispatch, String)> {
        let mut refused = Vec::new();
        let mut skipped = Vec::new();
        let holding = now_ms() < self.hold_restored_until;
        // Stop as soon as every slot is taken: with thousands of actions
        // waiting, moving each of them through the queue on every commit
        // cost more than the commit itself (the throughput benchmark spent
        // about half the driver's time there).
        let quiet = 2 * self.heartbeat().as_millis() as u64;
        let mut free = self.has_free_slot();
        while free && let Some(dispatch) = self.pending.pop_front() {
            if holding && self.restored.contains_key(&dispatch.job_id) {
                skipped.push(dispatch);
                continue;
            }
            // Least loaded first; an agent that lost an earlier attempt of
            // the action only when no other can take it; among equals, one
            // that has the plugin cached.
            let digest = self.catalog.0.get(&format!("{}@{}", dispatch.provider, dispatch.provider_version));
            let digest = digest.map(|p| p.digest.as_str()).unwrap_or_default();
            let best = self
                .agents
                .iter()
                .filter(|(_, a)| !a.draining && (a.running.len() as u32) < a.slots)
                // Nothing new for an agent that missed its last heartbeats:
                // it may be dead without QUIC knowing yet.
                .filter(|(_, a)| now_ms() < a.last_heard + quiet)
                .filter(|(_, a)| dispatch.agent_labels.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
                .min_by(|(ia, a), (ib, b)| {
                    let la = a.running.len() as f64 / f64::from(a.slots);
                    let lb = b.running.len() as f64 / f64::from(b.slots);
                    let (sa, sb) = (dispatch.lost_on.contains(*ia), dispatch.lost_on.contains(*ib));
                    let (ca, cb) = (!a.plugins.contains(digest), !b.plugins.contains(digest));
                    sa.cmp(&sb).then(la.total_cmp(&lb)).then(ca.cmp(&cb)).then_with(|| ia.cmp(ib))
                })
                .map(|(id, _)| id.clone());
            let Some(agent_id) = best else {
                skipped.push(dispatch);
                continue;
            };
            match self.hand_out(&agent_id, &dispatch, HandOut::New) {
                Ok(()) => free = self.has_free_slot(),
                Err(Refusal::Ineligible(_)) => skipped.push(dispatch),
                Err(Refusal::Impossible(reason)) => refused.push((dispatch, reason)),
            }
        }
        // The skipped ones go back to the front in their order.
        for dispatch in skipped.into_iter().rev() {
            self.pending.push_front(dispatch);
        }
        refused
    }

    /// Fails an action that cannot be handed out at all (e.g. its plugin is
    /// not registered): an engine step the caller commits.
    fn refuse(&mut self, now: u64, dispatch: Dispatch, message: String) {
        let (job_id, lease_epoch) = (dispatch.job_id, dispatch.lease_epoch);
        self.engine.handle(now, Event::ActionFinished { job_id, lease_epoch, result: ActionResult::Failed { message } });
    }

    /// Whether some agent could take one more action now.
    fn has_free_slot(&self) -> bool {
        self.agents.values().any(|a| !a.draining && (a.running.len() as u32) < a.slots)
    }

    /// Whether `agent_id` may take `dispatch` now: connected (a disabled
    /// or revoked agent never is), its labels matching the action's
    /// `agentLabels`, a free slot, and not draining unless it is given back
    /// a job it already runs. Asked at every hand-out, whoever chose the agent.
    fn may_take(&self, agent_id: &str, dispatch: &Dispatch, kind: HandOut) -> Result<(), String> {
        let agent = self.agents.get(agent_id).ok_or_else(|| format!("agent {agent_id} is not connected"))?;
        if agent.draining && kind == HandOut::New {
            return Err(format!("agent {agent_id} is draining"));
        }
        if agent.running.len() as u32 >= agent.slots {
            return Err(format!("agent {agent_id} has no free slot ({} of {})", agent.running.len(), agent.slots));
        }
        if let Some((k, v)) = dispatch.agent_labels.iter().find(|(k, v)| agent.labels.get(*k) != Some(*v)) {
            return Err(format!("agent {agent_id} does not have the label {k}={v} the action asks for"));
        }
        Ok(())
    }

    /// Books a dispatch on an agent and records the assignment in the
    /// engine; the job is sent once that is committed.
    fn hand_out(&mut self, agent_id: &str, dispatch: &Dispatch, kind: HandOut) -> Result<(), Refusal> {
        self.may_take(agent_id, dispatch, kind).map_err(Refusal::Ineligible)?;
        let spec = self.job_spec(dispatch).map_err(Refusal::Impossible)?;
        let now = now_ms();
        let lease_until = self.lease_until(now);
        // A job given back after a restart goes on with the log it has.
        let (log_seq, log_bytes, log_truncated) = match &dispatch.assigned {
            Some(_) => self
                .store
                .log_position(&dispatch.execution_id.0, &dispatch.job_id, LOG_TRUNCATED)
                .map_err(|e| Refusal::Impossible(format!("reading the stored log: {e:#}")))?,
            None => (None, 0, false),
        };
        let agent = self.agents.get_mut(agent_id).expect("a connected agent");
        agent.running.insert(dispatch.job_id.clone());
        agent.plugins.insert(spec.plugin.digest.clone());
        self.jobs.insert(
            dispatch.job_id.clone(),
            JobInfo {
                agent: agent_id.to_string(),
                plugin_digest: spec.plugin.digest.clone(),
                started: dispatch.started,
                dispatch: dispatch.clone(),
                execution_id: dispatch.execution_id.0.clone(),
                pipeline: dispatch.pipeline.clone(),
                stage: dispatch.stage.clone(),
                action: dispatch.action.clone(),
                lease_epoch: dispatch.lease_epoch,
                lease_until,
                log_seq,
                log_acked: None,
                log_bytes,
                log_truncated,
                uploaded: (kind == HandOut::New).then(HashSet::new),
            },
        );
        info!(agent = %agent_id, job = %dispatch.job_id, action = %dispatch.action, "action dispatched");
        self.engine.handle(
            now,
            Event::ActionAssigned {
                job_id: dispatch.job_id.clone(),
                lease_epoch: dispatch.lease_epoch,
                agent: agent_id.to_string(),
            },
        );
        self.outgoing.push((agent_id.to_string(), ToAgent::Job(Box::new(spec))));
        Ok(())
    }

    /// The job an agent receives: the plugin by digest and the grants that
    /// both the plugin declared and the pipeline gave.
    fn job_spec(&self, d: &Dispatch) -> Result<JobSpec, String> {
        let key = format!("{}@{}", d.provider, d.provider_version);
        let plugin = self.catalog.0.get(&key).ok_or_else(|| format!("plugin {key} is not registered"))?;
        let grants = sources::grants_for(&plugin.info.capabilities, &d.capabilities);
        let secrets = self.secret_values(&d.pipeline, &grants.secrets).map_err(|e| format!("reading secrets: {e:#}"))?;
        Ok(JobSpec {
            job_id: d.job_id.clone(),
            lease_epoch: d.lease_epoch,
            pipeline: d.pipeline.clone(),
            execution_id: d.execution_id.0.clone(),
            stage: d.stage.clone(),
            action: d.action.clone(),
            attempt: d.attempt,
            plugin: plugin.plugin_ref(&d.provider, &d.provider_version),
            configuration: d.configuration.clone(),
            variables: d.variables.clone(),
            inputs: d
                .inputs
                .iter()
                .map(|(name, a)| InputArtifact { name: name.clone(), digest: a.digest.clone(), size: a.size })
                .collect(),
            outputs: d.outputs.iter().map(|(name, files)| OutputSpec { name: name.clone(), files: files.clone() }).collect(),
            grants,
            secrets,
            timeout_ms: d.timeout_ms,
        })
    }
}

/// Whether a hand-out is new work or a job given back to the agent that
/// already runs it (after a controller restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOut {
    New,
    Resume,
}

/// Why a dispatch was not handed to an agent.
enum Refusal {
    /// Not to this agent now: the dispatch waits for another.
    Ineligible(String),
    /// To no agent ever (e.g. its plugin is not registered): the action fails.
    Impossible(String),
}

fn log_notice(n: &Notice) {
    match (&n.stage, &n.action) {
        (Some(stage), Some(action)) => {
            info!(pipeline = %n.pipeline, execution = %n.execution_id, %stage, %action, status = %n.status, "action")
        }
        (Some(stage), None) => info!(pipeline = %n.pipeline, execution = %n.execution_id, %stage, status = %n.status, "stage"),
        _ => info!(pipeline = %n.pipeline, execution = %n.execution_id, status = %n.status, "execution"),
    }
}

fn invalid_declaration(d: pipeline::Diagnostics) -> ApiError {
    ApiError::Invalid {
        message: format!("pipeline declaration is invalid ({} problems)", d.0.len()),
        diagnostics: d.0.iter().map(|x| x.to_string()).collect(),
    }
}

fn not_found_pipeline(name: &str) -> ApiError {
    ApiError::NotFound(format!("pipeline \"{name}\" does not exist"))
}

fn declaration_value(decl: &Declaration) -> Value {
    serde_json::from_str(&pipeline::to_json(decl)).expect("a declaration serializes to JSON")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
