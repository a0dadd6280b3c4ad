//! The controller's driver: one task that owns the engine, the store and
//! the fleet's bookkeeping, fed a closed set of [`Command`]s.
//!
//! Every command runs to completion: the engine steps, every resulting
//! change is written to the store in one transaction, and only then are
//! replies sent, jobs handed to agents and watchers told. No engine state
//! lives in spawned tasks. Start-up loads unfinished executions into an
//! empty engine (recovery is replay).
//!
//! This file holds the driver's state, start-up, the run loop, recovery,
//! the commit of a step and the dispatch of commands; each concern has a
//! file of its own:
//!
//! - `command.rs`: the commands and replies (an API operation arrives as
//!   `Command::Call` with a typed `crate::ops::Request`, and each has one
//!   `Handle` impl in the file of its concern); `link.rs`: the queue to
//!   one agent. Both know nothing of the driver, so that `api` and `fleet`
//!   depend on them and not on the driver that spawns them.
//! - `catalog.rs`: registered plugins and `describe()`; `plugins.rs` and
//!   `publishers.rs`: pushing and deleting plugins, trusted publishers.
//! - `pipelines.rs`, `executions.rs`: the pipeline and execution commands.
//! - `agents.rs`: connections and the operator's agent commands;
//!   `reports.rs`: what agents report (heartbeats, logs, results);
//!   `enrollment.rs`: join tokens, enrollment and renewals.
//! - `scheduler.rs`: hand-outs; `transfers.rs`: streams, upload quotas and
//!   artifact collection; `leases.rs`: leases, silent agents, timeouts.
//! - `sources.rs`: polling, webhooks, seen revisions; `secrets.rs`: the
//!   secret store's commands; `users.rs`: users and API tokens;
//!   `access_keys.rs`: users' access keys for the AWS API; `tagging.rs`:
//!   resource tags and the action-execution history.
//! - `batch.rs`: agent reports handled as one step; `intake.rs`: every
//!   value an agent sends, checked (pure).

mod agents;
mod batch;
pub mod catalog;
pub mod command;
mod config;
mod enrollment;
mod executions;
pub mod intake;
mod leases;
pub mod link;
mod pipelines;
mod plugins;
mod publishers;
mod reports;
mod scheduler;
mod secrets;
mod sources;
mod transfers;
mod users;
mod workers;
// AWS-compatible API (issue 14, aws).
mod access_keys;
mod tagging;
// https (issue 15): the API and webhook listeners, controller.json.
mod listeners;
// Notifications (issue 15, notify).
mod notifications;
// The audit log (issue 15, gov).
mod audit;
pub use audit::DEFAULT_AUDIT_RETENTION_DAYS;
// Permissions (issue 15, policy).
mod access;
mod roles;
mod teams;
// Data lifecycle (issue 17, life): retention and backups.
mod lifecycle;
// The revision flow and artifacts (issue 16, pages).
mod revisions;
// Pipelines that feed pipelines (issue 21, feed).
mod feeds;
// Metrics and readiness (issue 17, obs).
mod observe;
// Data lifecycle (issue 17, life).
pub use lifecycle::Collecting;

pub use config::{
    ControllerConfig, DEFAULT_AGENT_UPLOAD_QUOTA, DEFAULT_ARTIFACT_GC_INTERVAL, DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ACTION_LOG, DEFAULT_MAX_AGENT_SLOTS, DEFAULT_MIN_FREE_SPACE,
};

use self::agents::AgentConn;
use self::catalog::Catalog;
use self::command::Command;
use self::scheduler::JobInfo;
use self::transfers::Booking;
use crate::blobs::BlobStore;
use crate::ca::{Ca, Revocations};
use crate::engine::{AgentId, Dispatch, Engine, Event, JobId, Notice, TransitionState, Trigger};
use crate::exit::Exit;
use crate::pipeline::{self, Pipeline};
use crate::store::{Change, Store, TransitionRecord};
use crate::views;
use anyhow::{Context as _, Result};
use serde_json::Value;
use sluice_protocol::{EnrollResponse, ToAgent};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
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

/// After a controller restart, how long actions that were assigned to an
/// agent wait for it to reconnect and report them (or the lease, if
/// longer). Agents notice a killed controller only when the connection
/// times out (12 s), then back off for up to 10 s.
const RECONNECT_GRACE: Duration = Duration::from_secs(30);

/// The longest the driver sleeps between looks at the clock, although it
/// computes when each of its timers and the engine's is next due. Those
/// deadlines are on the wall clock (they are stored, and survive a
/// restart) while the driver sleeps on the monotonic one: a wall clock
/// that jumps forward makes a deadline due at a time no computation knew.
const CLOCK_RECHECK: Duration = Duration::from_secs(10);

/// A running controller.
pub struct Controller {
    pub api: SocketAddr,
    /// `https://ADDR` (or `http://` for plain HTTP on loopback).
    pub api_url: String,
    /// The CA certificate (PEM) that the API's certificate chains to, when
    /// the controller's CA issued it.
    pub ca_file: PathBuf,
    /// The webhook listener's address, when it has one of its own.
    pub webhooks: Option<SocketAddr>,
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

/// Parsed pipeline versions by name, then version: looked up by a
/// borrowed name (every commit looks up each execution it writes, a
/// listing every pipeline of its page), removed by name.
#[derive(Default)]
struct Definitions(HashMap<String, HashMap<u64, Arc<Pipeline>>>);

impl Definitions {
    fn get(&self, name: &str, version: u64) -> Option<&Arc<Pipeline>> {
        self.0.get(name)?.get(&version)
    }

    fn insert(&mut self, name: &str, version: u64, def: Arc<Pipeline>) {
        match self.0.get_mut(name) {
            Some(versions) => {
                versions.insert(version, def);
            }
            None => {
                self.0.insert(name.to_string(), HashMap::from([(version, def)]));
            }
        }
    }

    /// Every version of `name`.
    fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
}

struct Driver {
    engine: Engine,
    store: Box<dyn Store>,
    ca: Arc<Ca>,
    catalog: Catalog,
    definitions: Definitions,
    agents: HashMap<String, AgentConn>,
    /// No agent can have been silent for a lease before this (Unix ms;
    /// `leases.rs`).
    next_silence_check: u64,
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
    restored: HashMap<JobId, AgentId>,
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
    /// Pipelines that feed pipelines (issue 21, feed).
    feeds: feeds::Feeds,
    /// The API's token table, kept in step with the store.
    tokens: crate::auth::Tokens,
    /// The AWS-compatible API's access keys, kept in step with the store.
    access_keys: crate::aws::keys::AccessKeys,
    /// Agent reports handled together, held until their commit.
    batch: batch::Batch,
    /// When the starts fed since the last commit must be written at the
    /// latest (issue 19): a start rides with the next commit instead of
    /// one of its own ([`Driver::job_started`]).
    start_due: Option<u64>,
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
    /// A test hook in debug builds only (issue 17, obs): creating this
    /// pipeline holds the driver up, to show that `/readyz` then fails.
    #[cfg(debug_assertions)]
    stall_on_pipeline: Option<String>,
    /// Custom action types and the jobs of job workers.
    workers: crate::workers::Workers,
    /// Worker jobs made in this step, committed with its next round.
    worker_changes: Vec<Change>,
    // Notifications (issue 15, notify).
    /// Every pipeline's notification rules, to match notices against.
    notifications: crate::notify::Rules,
    /// Tells the delivery task that deliveries were written.
    notify_wake: Arc<tokio::sync::Notify>,
    /// A commit of this command wrote deliveries: wake the delivery task
    /// once the command is done (its transaction committed).
    deliveries_written: bool,
    /// Which target addresses rules may have.
    notify_policy: crate::notify::target::AddressPolicy,
    // The audit log (issue 15, gov).
    audit: audit::AuditLog,
    /// Inside an audited step: what its commits would send, until the
    /// step's transaction commits.
    held: Option<audit::Held>,
    /// Users, teams, roles and delegations every call is checked against
    /// (issue 15, policy); shared with the API.
    directory: crate::policy::Directory,
    // Data lifecycle (issue 17, life).
    /// Retention of executions, and the backups being written.
    lifecycle: lifecycle::Lifecycle,
    // Metrics and readiness (issue 17, obs).
    /// What the driver counts itself (its own fields: no lock).
    counts: observe::Counts,
    /// What is counted outside the driver, and the store's commit times.
    metrics: Arc<crate::metrics::Metrics>,
}

/// The wall clock in milliseconds since the Unix epoch. Read by the run
/// loop once per step and by start-up, nowhere else in the driver: every
/// handler gets the step's `now`.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The artifact and plugin stores: the data dir's, or (issue 18, s3) the
/// bucket's, checked now so that a wrong bucket or key stops the start
/// with the reason rather than failing the first upload.
pub async fn open_blob_stores(
    dir: &std::path::Path,
    s3: Option<&crate::blobs::s3::S3Config>,
) -> Result<(BlobStore, BlobStore)> {
    let Some(s3) = s3 else {
        return Ok((BlobStore::open(&dir.join("artifacts"))?, BlobStore::open(&dir.join("plugins"))?));
    };
    let artifacts = BlobStore::open_s3(&dir.join("artifacts"), s3.clone(), "artifacts")?;
    let plugins = BlobStore::open_s3(&dir.join("plugins"), s3.clone(), "plugins")?;
    artifacts.check().await?;
    info!(store = %artifacts.describe(), "artifacts and plugins in object storage");
    Ok((artifacts, plugins))
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
    // Data lifecycle (issue 17, life): one controller per data dir.
    let lock = lifecycle::lock_data_dir(dir)?;
    // How long each part of start-up takes (a new leader's takeover time is
    // mostly this; issue 18, hafix).
    let started = std::time::Instant::now();
    let ms = |since: std::time::Instant| since.elapsed().as_millis() as u64;
    let mut store: Box<dyn Store> = match (&config.store, &config.leadership) {
        // High availability (issue 18, ha): a leader's store is fenced
        // before anything is written, start-up's own writes included.
        (crate::store::Location::Postgres(url), Some(fence)) => {
            let mut store = crate::store::PgStore::open(url, config.durability)?;
            store.set_fence(Some(fence.clone()));
            Box::new(store)
        }
        _ => config.store.open(dir, config.durability)?,
    };
    // Shared keys (issue 18, reach): the CA, the admin token and the worker
    // key come from the store, where every controller of a cluster finds
    // the same (the data dir's files are migrated there on first start).
    let store_ms = ms(started);
    let secret_box = crate::secrets::SecretBox::open(dir)?;
    let keys = crate::cluster_keys::load(&mut *store, &secret_box, dir, now_ms())?;
    let ca = Arc::new(keys.ca);
    let admin_token = keys.admin_token;
    let (artifacts, plugins) = open_blob_stores(dir, config.artifacts_s3.as_ref()).await?;
    let keys_ms = ms(started) - store_ms;

    let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig {
        cache_dir: Some(dir.join("cache")),
        ..Default::default()
    })?;
    let catalog = catalog::register_builtins(&mut *store, &plugins, &runtime).await?;
    let builtins_ms = ms(started) - store_ms - keys_ms;

    let (events, _) = broadcast::channel(4096);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    metrics.ca_expiry.store(ca.expiry_unix(), std::sync::atomic::Ordering::Relaxed);
    let _ = metrics.artifact_store.set((artifacts.clone(), config.min_free_space));
    let mut engine = Engine::new();
    engine.set_max_lost_retries(config.max_lost_retries);
    let mut driver = Driver {
        engine,
        store,
        ca: ca.clone(),
        catalog,
        definitions: Definitions::default(),
        agents: HashMap::new(),
        next_silence_check: u64::MAX,
        jobs: HashMap::new(),
        pending: VecDeque::new(),
        events: events.clone(),
        plugins: plugins.clone(),
        artifacts: artifacts.clone(),
        next_gc: transfers::first_collection(now_ms(), config.artifact_gc_interval),
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
        secret_box,
        sources: sources::Sources::default(),
        feeds: feeds::Feeds::default(),
        tokens: crate::auth::Tokens::default(),
        access_keys: crate::aws::keys::AccessKeys::default(),
        batch: batch::Batch::default(),
        start_due: None,
        require_signed_plugins: config.require_signed_plugins,
        max_agent_slots: config.max_agent_slots.max(1),
        agent_upload_quota: config.agent_upload_quota,
        min_free_space: config.min_free_space,
        uploads: HashMap::new(),
        renewals: HashMap::new(),
        #[cfg(debug_assertions)]
        panic_on_pipeline: std::env::var("SLUICE_DEBUG_DRIVER_PANIC_ON_PIPELINE").ok(),
        #[cfg(debug_assertions)]
        stall_on_pipeline: std::env::var("SLUICE_DEBUG_DRIVER_STALL_ON_PIPELINE").ok(),
        workers: crate::workers::Workers::new(&keys.worker_key, config.worker_job_timeout.as_millis() as u64),
        worker_changes: Vec::new(),
        notifications: crate::notify::Rules::default(),
        notify_wake: Arc::new(tokio::sync::Notify::new()),
        deliveries_written: false,
        notify_policy: config.notifications.policy,
        audit: audit::AuditLog::new(config.audit_retention),
        held: None,
        directory: crate::policy::Directory::default(),
        lifecycle: lifecycle::Lifecycle::new(dir.clone(), config.retention.clone(), lock).on_store(config.store.clone()),
        counts: observe::Counts::default(),
        metrics: metrics.clone(),
    };
    if config.require_signed_plugins {
        info!("only plugins signed by a trusted publisher may be pushed (--require-signed-plugins)");
    }
    // Start-up is one step: it reads the clock once, as every command does.
    let now = now_ms();
    let recovering = std::time::Instant::now();
    driver.recover(now)?;
    driver.recover_sources(now)?;
    driver.recover_users(&admin_token)?;
    driver.recover_access_keys()?;
    driver.recover_notifications()?;
    notifications::spawn_delivery(
        dir,
        &config.store,
        &config.notifications,
        driver.notify_wake.clone(),
        config.leadership.as_ref(),
    )?;
    driver.recover_audit()?;
    driver.prune_audit(now);
    driver.recover_directory()?;
    // Issue 21, feedfix: upstream successes a stop kept from being judged,
    // and the hold reasons (memory only), before anything is served.
    driver.rejudge_feeds(now, None);
    let recover_ms = ms(recovering);
    let directory = driver.directory.clone();
    let tokens = driver.tokens.clone();
    let aws = crate::aws::AwsState::new(driver.access_keys.clone(), ca.fingerprint());

    let endpoint = crate::udp::endpoint(config.fleet, Some(ca.server_config(driver.revocations.clone())?))
        .with_context(|| format!("binding the fleet port {}", config.fleet))?;
    let fleet = endpoint.local_addr()?;
    let listeners = listeners::bind(&config, &ca).await?;
    if let Some(cert) = listeners.api_cert() {
        let _ = metrics.api_cert_expiry.set(cert);
    }
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            let bound = listener.local_addr()?;
            Some((listener, bound))
        }
        None => None,
    };
    let api = listeners.api.local_addr()?;
    info!(store_ms, keys_ms, builtins_ms, recover_ms, total_ms = ms(started), "start-up took");

    let (tx, rx) = mpsc::channel(1024);
    let driver_task = tokio::spawn(driver.run(rx));
    // A panic in the driver ends the process (see `crate::exit`).
    tokio::spawn(async move {
        if let Err(e) = driver_task.await
            && e.is_panic()
        {
            Exit::DriverPanicked.now();
        }
    });
    tokio::spawn(crate::fleet::serve(
        endpoint.clone(),
        crate::fleet::FleetContext { driver: tx.clone(), artifacts: artifacts.clone(), plugins, metrics: metrics.clone() },
    ));
    // Worker multipart uploads (parts spooled on disk; a restart removes them).
    let multipart = crate::aws::s3_multipart::Spool::open(&dir.join("s3-uploads"), config.min_free_space)?
        .counting_refusals(metrics.free_space_refusals.clone());
    // Served zips of inputs (built once per archive; a restart removes them).
    let zips = crate::aws::s3_zips::ServedZips::open(&dir.join("s3-zips"))?;
    let state = crate::api::ApiState {
        driver: tx.clone(),
        events: events.clone(),
        tokens,
        runtime,
        aws: aws.with_webhooks(listeners.webhook_base()?),
        artifacts,
        multipart,
        zips,
        directory,
        refusals: crate::audit::RefusalBudget::default(),
        console: crate::console::Console::new(config.api_scheme),
        metrics: metrics.clone(),
    };
    tokio::spawn(crate::aws::s3_multipart::sweep_forever(state.clone()));
    let (api_url, webhooks) = listeners.serve(state)?;
    if let Some((listener, addr)) = metrics_listener {
        tokio::spawn(crate::https::serve(listener, crate::metrics::router(metrics), None, "metrics"));
        info!(%addr, "metrics, /readyz and /healthz served without authentication (--metrics)");
    }
    let ca_file = std::path::absolute(dir.join("ca").join("ca.crt"))?;
    listeners::write_addresses(dir, &config, &api_url, fleet, &ca_file, webhooks)?;
    info!(%api_url, %fleet, data_dir = %dir.display(), "controller started");
    Ok(Controller {
        api,
        api_url,
        ca_file,
        webhooks: webhooks.map(|(addr, _)| addr),
        fleet,
        admin_token,
        ca_fingerprint: ca.fingerprint().to_string(),
        driver: tx,
        events,
        endpoint,
    })
}

impl Driver {
    /// Replays every unfinished execution into the empty engine.
    fn recover(&mut self, now: u64) -> Result<()> {
        for r in self.store.revocations()? {
            self.revocations.revoke(&r.agent_id, &r.serial);
        }
        for t in self.store.transitions()? {
            let state = if t.enabled { TransitionState::Enabled } else { TransitionState::Disabled };
            self.feed(now, Event::SetTransition { pipeline: t.pipeline.clone(), stage: t.stage.clone(), state });
            self.transitions.insert((t.pipeline.clone(), t.stage.clone()), t);
        }
        self.recover_workers()?;
        let unfinished = self.store.unfinished_executions()?;
        let count = unfinished.len();
        let mut restored = Vec::new();
        for execution in unfinished {
            let def = self.definition(&execution.pipeline, execution.version)?;
            restored.push((def, execution));
        }
        self.feed(now, Event::Restore { executions: restored });
        // What was assigned to an agent is kept a while for that agent;
        // what was never handed out goes to whoever can take it.
        self.hold_restored_until = now + RECONNECT_GRACE.max(self.lease_timeout).as_millis() as u64;
        while let Some(dispatch) = self.engine.poll_dispatch() {
            if let Some(agent) = &dispatch.assigned
                && !self.workers.is_worker_action(&dispatch)
            {
                self.restored.insert(dispatch.job_id.clone(), agent.clone());
            }
            self.route_dispatch(now, dispatch);
        }
        let changes = std::mem::take(&mut self.worker_changes);
        if count > 0 {
            info!(executions = count, "resumed unfinished executions");
        }
        self.commit(now, changes)?;
        Ok(())
    }

    /// Commands as they come; between them, the driver sleeps until the
    /// first of its deadlines and the engine's ([`Driver::next_wake`]).
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let metrics = self.metrics.clone();
        let mut rechecked = std::time::Instant::now();
        loop {
            let now = now_ms();
            // Between steps: a progress mark for `/readyz`, and the scrape's
            // snapshot when one is wanted (crate::metrics::DriverView). The
            // tick keeps an idle driver's mark fresh; it runs the deadlines
            // only when one is due, as the sleep did before it.
            metrics.driver.stepped(|| self.metrics_text(now));
            let due = Duration::from_millis(self.next_wake().saturating_sub(now))
                .min(CLOCK_RECHECK.saturating_sub(rechecked.elapsed()));
            let command = tokio::select! {
                command = rx.recv() => command,
                () = metrics.driver.woken() => continue,
                () = tokio::time::sleep(due.min(crate::metrics::TICK)) => {
                    let now = now_ms();
                    if now >= self.next_wake() || rechecked.elapsed() >= CLOCK_RECHECK {
                        rechecked = std::time::Instant::now();
                        self.on_time(now);
                        self.wake_delivery();
                    }
                    continue;
                }
            };
            let Some(command) = command else {
                metrics.driver.stopped();
                return;
            };
            let mut next = Some(command);
            while let Some(command) = next.take() {
                // The clock is read once per step (a command, or a batch of
                // agent reports) and passed down: everything the step
                // decides and records happened at this one time.
                let now = now_ms();
                next = self.handle_batch(now, command, &mut rx);
                self.wake_delivery();
            }
        }
    }

    /// Feeds the engine an event it takes in any state (everything but an
    /// operator's retry, approval decision or rollback); a refusal would be
    /// an engine bug, logged rather than let panic the driver.
    fn feed(&mut self, now: u64, event: Event) {
        if let Err(refusal) = self.engine.handle(now, event) {
            error!("the engine refused an event it takes in any state: {refusal}");
        }
    }

    /// A stored pipeline version, parsed once.
    fn definition(&mut self, name: &str, version: u64) -> Result<Arc<Pipeline>> {
        if let Some(def) = self.definitions.get(name, version) {
            return Ok(def.clone());
        }
        let record = self
            .store
            .pipeline(name, Some(version))?
            .with_context(|| format!("pipeline \"{name}\" version {version} is missing from the store"))?;
        self.cache_definition(&record)
    }

    /// Parses a stored version into the cache of definitions (once).
    fn cache_definition(&mut self, record: &crate::store::PipelineRecord) -> Result<Arc<Pipeline>> {
        if let Some(def) = self.definitions.get(&record.name, record.version) {
            return Ok(def.clone());
        }
        let decl = pipeline::parse(&record.definition).map_err(|d| {
            anyhow::anyhow!("stored pipeline \"{}\" version {} is corrupt: {d}", record.name, record.version)
        })?;
        let def = Arc::new(decl.pipeline);
        self.definitions.insert(&record.name, record.version, def.clone());
        Ok(def)
    }

    /// Hands out the actions the step made ready, writes the step's
    /// changes, those assignments and the engine's dirty executions in one
    /// transaction, then sends the jobs of the step and tells watchers.
    /// Handing out is itself a change (the assignment), committed before
    /// the job is sent.
    fn commit(&mut self, now: u64, mut changes: Vec<Change>) -> Result<()> {
        if self.defer_commit(&mut changes) {
            return Ok(());
        }
        loop {
            // Hand out what became ready before writing (issue 19, perf):
            // the assignment then commits in the same transaction as the
            // step that made the action ready, rather than in a second
            // write of the whole execution. Jobs still go out only after
            // that commit (`outgoing`, below).
            while let Some(dispatch) = self.engine.poll_dispatch() {
                self.route_dispatch(now, dispatch);
            }
            // Actions that cannot be handed out (e.g. an unregistered
            // plugin) fail, which is another engine step to persist.
            let refused = self.schedule(now);
            // `pipeline@1` sources (issue 21, feed) are answered here, in the
            // same transaction as the step that made them ready.
            self.resolve_pipeline_sources(now);
            changes.append(&mut self.worker_changes);
            let dirty = self.engine.take_dirty();
            // Every start fed so far is in `dirty`.
            self.start_due = None;
            // The notices of the step, and the notification deliveries they
            // make, go in the same transaction as the state they report.
            let notices = self.engine.take_notices();
            let deliveries = self.notification_changes(now, &notices, &dirty);
            let notify = !deliveries.is_empty();
            changes.extend(deliveries);
            self.observe_step(&notices, &dirty);
            for execution in dirty {
                changes.extend(Self::seen_revisions(&execution));
                changes.extend(self.end_stale_worker_jobs(now, &execution));
                changes.push(Change::Execution(execution));
            }
            let started = std::time::Instant::now();
            let applied = self.store.apply(&changes);
            self.metrics.store_commit.observe_duration(started.elapsed());
            // The engine's executions are its own again (`take_dirty`).
            changes.clear();
            if let Err(e) = applied {
                // The engine is now ahead of the store. Stopping is the only
                // safe answer: a restart replays the last committed state.
                crate::ha::write_failed(&e);
            }
            self.deliveries_written |= notify;
            let outgoing = std::mem::take(&mut self.outgoing);
            // Logged once every job is on its way (issue 19): a log line is
            // not on the way from one action to the next.
            let dispatched: Vec<(String, String, String)> = outgoing
                .iter()
                .filter_map(|(agent, message)| match message {
                    ToAgent::Job(spec) => Some((agent.clone(), spec.job_id.clone(), spec.action.clone())),
                    _ => None,
                })
                .collect();
            let mut to_agents = self.take_batched();
            to_agents.extend(outgoing);
            self.send_all_after_commit(to_agents);
            for (agent, job, action) in dispatched {
                info!(%agent, %job, %action, "action dispatched");
            }
            self.tell_batched_watchers();
            for notice in notices {
                self.note_feed_trigger(&notice);
                self.tell_after_commit(Arc::new(views::notice(&notice)));
                log_notice(&notice);
                // Data lifecycle (issue 17, life): an ended execution may put an older one past its retention.
                if notice.stage.is_none() && !matches!(notice.status.as_str(), "InProgress" | "Stopping") {
                    self.execution_ended(&notice.pipeline);
                }
            }
            // Stage conditions that asked for a rollback start one now; it
            // is persisted by the next round.
            let mut rolled_back = false;
            for request in self.engine.take_rollbacks() {
                let trigger = Trigger::new(
                    "AutomatedRollback",
                    format!("stage {} of execution {} failed its condition", request.stage, request.failed),
                );
                match self.start_rollback(now, &request.pipeline, &request.stage, None, Some(&request.failed), trigger) {
                    Ok(id) => {
                        info!(pipeline = %request.pipeline, stage = %request.stage, execution = %id, "automated rollback started");
                        rolled_back = true;
                    }
                    Err(e) => warn!(pipeline = %request.pipeline, stage = %request.stage, "no rollback: {e}"),
                }
            }
            let quiet = refused.is_empty() && !rolled_back && self.worker_changes.is_empty() && !self.engine.has_dispatch();
            if quiet {
                // Upstream successes this commit recorded may start downstreams.
                self.judge_feeds(now);
                return Ok(());
            }
            for (dispatch, message) in refused {
                self.refuse(now, dispatch, message);
            }
            changes = std::mem::take(&mut self.worker_changes);
        }
    }

    /// How often agents send heartbeats: [`HEARTBEATS_PER_LEASE`] per
    /// lease, at most every [`HEARTBEAT`].
    pub(super) fn heartbeat(&self) -> Duration {
        HEARTBEAT.min(self.lease_timeout / HEARTBEATS_PER_LEASE).max(Duration::from_millis(100))
    }

    pub(super) fn lease_until(&self, now: u64) -> u64 {
        now + self.lease_timeout.as_millis() as u64
    }

    /// Runs one command to completion; its reply goes out once what it
    /// changed is committed.
    fn handle(&mut self, now: u64, command: Command) {
        match command {
            // Audited: the record commits with the call's changes.
            Command::Call { request, caller, reply } => answer(reply, self.call(now, request, caller)),
            Command::Audit { entry } => self.record(now, *entry),
            // The fleet.
            Command::Enroll { request, source, reply } => {
                let response = self.audited(
                    now,
                    |driver| {
                        let response = driver.enroll(now, &request);
                        response.unwrap_or_else(|e| EnrollResponse::Refused { reason: format!("{e:#}") })
                    },
                    |response| audit::enrollment(&request, source, response),
                );
                answer(reply, response);
            }
            Command::AgentConnected { agent_id, conn_id, hello, source, tx, reply } => {
                let entry = audit::connection(&agent_id, source);
                let welcome = self.audited(
                    now,
                    |driver| driver.agent_connected(now, agent_id, conn_id, hello, tx),
                    |w| audit::welcomed(entry, w),
                );
                answer(reply, welcome);
            }
            Command::AuthorizeTransfer { agent_id, conn_id, transfer, reply } => {
                let answered = self.authorize_transfer(now, &agent_id, conn_id, &transfer);
                if let Err(why) = &answered {
                    warn!(%agent_id, ?transfer, "transfer refused: {why}");
                }
                answer(reply, answered);
            }
            Command::AgentMessage { agent_id, conn_id, message } => self.agent_message(now, &agent_id, conn_id, message),
            Command::AgentDisconnected { agent_id, conn_id } => self.agent_disconnected(&agent_id, conn_id),
            // Metrics and readiness (issue 17, obs).
        }
    }
}

/// Sends a reply. A caller that stopped waiting (its request was cut off)
/// changes nothing: the command ran and its changes are committed.
fn answer<T>(reply: oneshot::Sender<T>, value: T) {
    let _ = reply.send(value);
}

fn log_notice(n: &Notice) {
    match (&n.stage, &n.action) {
        (Some(stage), Some(action)) => {
            info!(pipeline = %n.pipeline, execution = %n.execution_id, %stage, %action, status = %n.status, "action")
        }
        (Some(stage), None) => {
            info!(pipeline = %n.pipeline, execution = %n.execution_id, %stage, status = %n.status, "stage")
        }
        _ => info!(pipeline = %n.pipeline, execution = %n.execution_id, status = %n.status, "execution"),
    }
}
