//! Durable state: the [`Store`] trait and its SQLite backend.
//!
//! Every state change of one engine step is written in one transaction
//! ([`Store::apply`]) before the driver acknowledges or sends anything.
//! The engine never sees SQL; a PostgreSQL backend can implement the same
//! trait. Knows nothing of sockets or the engine's rules.

use crate::engine::{Execution, ExecutionId};
use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod checkpoint;
// Data lifecycle (issue 17, life): schema versions and migrations, retention.
pub mod schema;
pub mod snapshot;
// Notifications (issue 15, notify).
pub mod notifications;
// PostgreSQL (issue 18, pg): the second backend, and where a controller's store is.
pub mod postgres;
pub use postgres::{Fence, Fenced, PgStore};

/// Where a controller keeps its state (`sluice controller --store`).
/// Its `Debug` is its `Display`: the URL without its password.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Location {
    /// `sluice.db` in the data dir (the default; `--store sqlite`).
    #[default]
    Sqlite,
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "sqlite" {
            return Ok(Self::Sqlite);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // Checked now, so that a bad URL is a usage error, not a failed start.
            postgres::parse_url(s).map_err(|e| format!("{e:#}"))?;
            return Ok(Self::Postgres(s.to_string()));
        }
        Err(format!(
            "{:?} is no store: `sqlite` (sluice.db in the data dir) or a postgres://USER@HOST:PORT/DATABASE URL",
            postgres::redact(s)
        ))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("sqlite"),
            Self::Postgres(url) => f.write_str(&postgres::redact(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite"),
            Self::Postgres(_) => write!(f, "Postgres({:?})", self.to_string()),
        }
    }
}

impl Location {
    /// Opens the store (creating or migrating its schema).
    pub fn open(&self, data_dir: &Path, durability: Durability) -> Result<Box<dyn Store>> {
        Ok(match self {
            Self::Sqlite => Box::new(SqliteStore::open(&data_dir.join("sluice.db"), durability)?),
            Self::Postgres(url) => Box::new(PgStore::open(url, durability)?),
        })
    }

    /// The notification delivery task's own connection to the same store.
    pub fn outbox(&self, data_dir: &Path) -> Result<notifications::Outbox> {
        match self {
            Self::Sqlite => notifications::Outbox::open(&data_dir.join("sluice.db")),
            Self::Postgres(url) => notifications::Outbox::open_postgres(url),
        }
    }
}

/// A stored pipeline version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRecord {
    pub name: String,
    pub version: u64,
    /// The declaration as JSON, `{"pipeline": {...}}`.
    pub definition: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// Who wrote this version: the caller of CreatePipeline or
    /// UpdatePipeline (issue 15, gov); empty for versions stored before.
    pub author: String,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    /// Set by its join token and by operators (`sluice agent label`).
    pub labels: BTreeMap<String, String>,
    pub cert_serial: String,
    pub enrolled_at: u64,
    /// `enabled`, `draining` or `disabled`.
    pub state: String,
    /// Label keys the agent may set for itself (from its join token).
    #[serde(default)]
    pub allow_agent_labels: Vec<String>,
    /// When its current certificate expires (ms), shown by the console
    /// (issue 16, pages); absent for a record written before it was kept,
    /// until the agent's next renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_at: Option<u64>,
}

/// A join token; only the sha256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_hash: String,
    pub labels: BTreeMap<String, String>,
    pub uses_left: Option<u32>,
    pub expires_at: u64,
    pub created_at: u64,
    pub revoked: bool,
    /// Label keys agents enrolled with it may set for themselves.
    #[serde(default)]
    pub allow_agent_labels: Vec<String>,
}

/// A registered plugin version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRecord {
    pub provider: String,
    pub version: String,
    pub digest: String,
    /// `describe()` as JSON.
    pub info: String,
    pub builtin: bool,
}

/// A trusted plugin publisher: pushes signed by its key are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherRecord {
    pub name: String,
    /// The ed25519 public key, as the base64 of its DER on one line.
    pub public_key: String,
    pub key_id: String,
    pub added_at: u64,
    pub added_by: String,
}

/// The verified signature of a pushed component, by its digest (what the
/// signature binds). Kept when the plugin version is deleted, like its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginSignatureRecord {
    pub digest: String,
    /// The trusted publisher whose key verified it at the push.
    pub publisher: String,
    pub key_id: String,
    /// The signature document, verbatim, as agents receive it.
    pub signature: String,
    pub signed_at: u64,
}

/// The inbound transition of a stage, as an operator last set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub pipeline: String,
    pub stage: String,
    pub enabled: bool,
    pub reason: Option<String>,
    pub changed_by: String,
    pub changed_at: u64,
}

/// A revoked agent certificate: an entry of the fleet port's revocation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Hex serial of the agent's certificate when it was revoked.
    pub serial: String,
    pub agent_id: String,
    pub revoked_at: u64,
}

/// One line of an action's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub job_id: String,
    pub execution_id: String,
    pub seq: u64,
    pub text: String,
}

/// A named user of the admin API. `role` is `admin` (manages users and
/// tokens) or `operator` (everything else); resource-level permissions
/// can refine roles later without changing who callers are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub name: String,
    pub role: String,
    pub created_at: u64,
}

/// An API token of a user; only the sha256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenRecord {
    pub id: String,
    pub user: String,
    pub secret_hash: String,
    pub created_at: u64,
    pub revoked: bool,
}

/// An access key of a user for the AWS-compatible API (SigV4). Signature
/// Version 4 needs the secret itself to recompute a signature, so it is
/// kept sealed ([`crate::secrets::SecretBox`], bound to the key id), not
/// hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyRecord {
    pub id: String,
    pub user: String,
    /// Base64 of the sealed secret.
    pub sealed_secret: String,
    pub created_at: u64,
    pub revoked: bool,
}

/// A secret, sealed by the controller's secret key (never stored in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    /// Nonce and ciphertext with its tag, as [`crate::secrets::SecretBox`] seals them.
    pub sealed: Vec<u8>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Glob patterns of the pipelines that may use it
    /// ([`crate::secrets::Scope`]); `["*"]` for secrets stored before
    /// secrets had scopes.
    pub pipelines: Vec<String>,
}

/// A revision a source action is known to have run or been triggered for:
/// a revision starts at most one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenRevision {
    pub pipeline: String,
    pub action: String,
    pub revision: String,
    pub execution_id: String,
    pub seen_at: u64,
}

/// Pipelines that feed pipelines (issue 21, feed): the upstream execution
/// the newest set the fan-in rule started took for one `pipeline@1` source
/// of a downstream pipeline; sets never go back past it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedConsumed {
    pub pipeline: String,
    pub action: String,
    pub upstream_execution_id: String,
    pub upstream_ordinal: u64,
    /// The upstream pipeline the source action took it from (empty in
    /// records written before it was kept): a record of another upstream
    /// (the source was pointed elsewhere since) is no floor for this one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream_pipeline: String,
    /// The downstream execution the set started.
    pub execution_id: String,
    pub started_at: u64,
}

/// One change; a [`Store::apply`] call writes a batch atomically.
#[derive(Debug, Clone)]
pub enum Change {
    Pipeline(PipelineRecord),
    /// Shared with the engine, which copies it only if it changes it again
    /// before the write is done (issue 19).
    Execution(std::sync::Arc<Execution>),
    Log(LogLine),
    Agent(AgentRecord),
    JoinToken(JoinTokenRecord),
    Plugin(PluginRecord),
    /// Every version of a pipeline, its executions and their logs.
    DeletePipeline(String),
    Transition(TransitionRecord),
    Secret(SecretRecord),
    DeleteSecret(String),
    /// A pipeline's webhook secret, sealed; `None` deletes it.
    Webhook {
        pipeline: String,
        sealed: Option<Vec<u8>>,
        created_at: u64,
    },
    SeenRevision(SeenRevision),
    User(UserRecord),
    ApiToken(ApiTokenRecord),
    /// A pushed plugin version leaves the registry (its blob stays for
    /// executions that refer to it by digest).
    DeletePlugin {
        provider: String,
        version: String,
    },
    Revocation(RevocationRecord),
    Publisher(PublisherRecord),
    DeletePublisher(String),
    PluginSignature(PluginSignatureRecord),
    // Custom action types and the jobs of job workers.
    ActionType(crate::workers::ActionTypeRecord),
    WorkerJob(Box<crate::workers::WorkerJob>),
    // AWS-compatible API (issue 14, aws).
    AccessKey(AccessKeyRecord),
    /// The execution a StartPipelineExecution `clientRequestToken` started.
    StartRequest {
        pipeline: String,
        token: String,
        execution_id: String,
    },
    /// A pipeline's webhook as CodePipeline defined it (JSON, without its
    /// secret); `None` deletes it.
    WebhookDefinition {
        pipeline: String,
        definition: Option<String>,
    },
    /// A resource's tags (by its key, e.g. `pipeline:web`); empty deletes them.
    Tags {
        resource: String,
        tags: Vec<(String, String)>,
    },
    // Notifications (issue 15, notify).
    Notification(notifications::NotificationChange),
    // The audit log (issue 15, gov).
    /// One record of the audit log and its chained hash: appended, never changed.
    Audit(Box<(crate::audit::Record, String)>),
    /// Records up to the anchor's leave the log; the anchor (the last
    /// pruned record's hash) is where verification starts from then on.
    PruneAudit(crate::audit::Anchor),
    // Permissions (issue 15, policy).
    /// A user leaves (its tokens and access keys are revoked in the same batch).
    DeleteUser(String),
    /// A team, custom role, delegation or pipeline owner (`kind`), by its
    /// name within the kind; `None` deletes it.
    Directory {
        kind: String,
        name: String,
        record: Option<String>,
    },
    // Data lifecycle (issue 17, life).
    /// Ended executions that retention lets go, with their logs (an
    /// execution still running is never deleted, whatever the list says).
    DeleteExecutions(Vec<String>),
    // Pipelines that feed pipelines (issue 21, feed).
    /// A set the fan-in rule started: one row per source action, replaced.
    FeedConsumed(FeedConsumed),
}

/// How much an acknowledged change survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a killed process (WAL without fsync per commit).
    Process,
    /// Also survives power loss (fsync per commit).
    PowerLoss,
}

pub trait Store: Send {
    fn apply(&mut self, changes: &[Change]) -> Result<()>;
    /// The latest version of every pipeline.
    fn pipelines(&self) -> Result<Vec<PipelineRecord>>;
    fn pipeline(&self, name: &str, version: Option<u64>) -> Result<Option<PipelineRecord>>;
    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>>;
    /// Newest first.
    fn executions(&self, pipeline: &str, limit: usize) -> Result<Vec<Execution>>;
    /// Newest first, strictly older than `before` (started_at, id): a page.
    fn executions_before(&self, pipeline: &str, before: (u64, &str), limit: usize) -> Result<Vec<Execution>>;
    /// The revision flow (issue 16, pages): executions of every pipeline
    /// with a source revision whose id starts with `prefix` (all with one
    /// when empty), newest first.
    fn executions_with_revision(&self, prefix: &str, limit: usize) -> Result<Vec<Execution>>;
    fn unfinished_executions(&self) -> Result<Vec<Execution>>;
    fn agents(&self) -> Result<Vec<AgentRecord>>;
    fn agent(&self, id: &str) -> Result<Option<AgentRecord>>;
    fn join_token_by_hash(&self, secret_hash: &str) -> Result<Option<JoinTokenRecord>>;
    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>>;
    fn plugins(&self) -> Result<Vec<PluginRecord>>;
    fn logs(&self, execution_id: &str) -> Result<Vec<LogLine>>;
    /// One job's lines after `after` (all if `None`), in order, at most
    /// `limit` (issue 16, logs).
    fn job_logs(&self, execution_id: &str, job_id: &str, after: Option<u64>, limit: u32) -> Result<Vec<LogLine>>;
    /// How far a job's stored log goes: its highest sequence number, its
    /// bytes, and whether it ends with `marker` (e.g. a truncation note).
    fn log_position(&self, execution_id: &str, job_id: &str, marker: &str) -> Result<(Option<u64>, u64, bool)>;
    fn transitions(&self) -> Result<Vec<TransitionRecord>>;
    fn secrets(&self) -> Result<Vec<SecretRecord>>;
    /// Sealed webhook secrets by pipeline, with when they were made.
    fn webhooks(&self) -> Result<Vec<(String, Vec<u8>, u64)>>;
    fn seen_revision(&self, pipeline: &str, action: &str, revision: &str) -> Result<Option<SeenRevision>>;
    /// The newest seen revision of each source action of a pipeline.
    fn latest_seen_revisions(&self, pipeline: &str) -> Result<Vec<SeenRevision>>;
    fn users(&self) -> Result<Vec<UserRecord>>;
    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// The revocation list of the fleet port.
    fn revocations(&self) -> Result<Vec<RevocationRecord>>;
    /// Digests of every artifact a stored execution refers to: the
    /// artifacts that must be kept.
    fn artifact_digests(&self) -> Result<std::collections::HashSet<String>>;
    /// The same, read by the returned closure on a connection of its own,
    /// so that the caller may run it on another thread: the listing takes
    /// 0.8 s on a store of a million executions, which the driver should
    /// not wait for (issue 19, scale).
    fn artifact_digests_off_driver(&self) -> DigestListing;
    fn publishers(&self) -> Result<Vec<PublisherRecord>>;
    fn plugin_signatures(&self) -> Result<Vec<PluginSignatureRecord>>;
    // Custom action types and the jobs of job workers.
    /// Every custom action type, deleted ones too.
    fn action_types(&self) -> Result<Vec<crate::workers::ActionTypeRecord>>;
    /// Worker jobs that have not ended.
    fn unfinished_worker_jobs(&self) -> Result<Vec<crate::workers::WorkerJob>>;
    fn worker_job(&self, id: &str) -> Result<Option<crate::workers::WorkerJob>>;
    fn worker_job_by_key(&self, access_key_id: &str) -> Result<Option<crate::workers::WorkerJob>>;
    // AWS-compatible API (issue 14, aws).
    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>>;
    /// The execution a `clientRequestToken` started, if one did.
    fn start_request(&self, pipeline: &str, token: &str) -> Result<Option<String>>;
    /// A resource's tags, in the order they were set.
    fn tags(&self, resource: &str) -> Result<Vec<(String, String)>>;
    /// CodePipeline definitions of webhooks, by pipeline.
    fn webhook_definitions(&self) -> Result<Vec<(String, String)>>;
    // Notifications (issue 15, notify).
    fn notification_rules(&self) -> Result<Vec<notifications::NotificationRuleRecord>>;
    /// Deliveries newest first, of one rule and/or in one status.
    fn notification_deliveries(
        &self,
        rule_id: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<notifications::DeliveryRecord>>;
    fn notification_delivery(&self, id: i64) -> Result<Option<notifications::DeliveryRecord>>;
    // The audit log (issue 15, gov).
    /// Opens a step: every [`Store::apply`] until [`Store::end_step`] is
    /// part of one transaction (and sees the writes before it), so that a
    /// call's audit record commits with the changes the call made.
    fn begin_step(&mut self) -> Result<()>;
    fn end_step(&mut self) -> Result<()>;
    /// Where the stored chain starts: the last pruned record.
    fn audit_anchor(&self) -> Result<crate::audit::Anchor>;
    /// The newest record's place in the chain (the anchor when none is stored).
    fn audit_head(&self) -> Result<crate::audit::Anchor>;
    /// Records matching `filter`, oldest first, with their stored hashes.
    fn audit_records(&self, filter: &crate::audit::Filter) -> Result<Vec<(crate::audit::Record, String)>>;
    /// The hash stored with record `seq`, if it is stored.
    fn audit_hash(&self, seq: u64) -> Result<Option<String>>;
    /// The newest record older than `before` (ms): where pruning by age stops.
    fn audit_prune_point(&self, before: u64) -> Result<Option<crate::audit::Anchor>>;
    // Permissions (issue 15, policy).
    /// Every directory entry: (kind, name, record JSON).
    fn directory_entries(&self) -> Result<Vec<(String, String, String)>>;
    // Data lifecycle (issue 17, life).
    /// The executions of one pipeline (or of all), each with its pipeline,
    /// by pipeline and newest first: what retention decides on.
    fn execution_ages(&self, pipeline: Option<&str>) -> Result<Vec<(String, crate::retention::Age)>>;
    // Shared keys (issue 18, reach): the keys every controller of a
    // cluster must hold alike (`crate::cluster_keys`), sealed with
    // `secret.key` where secret.
    /// The value stored under `name`, if any.
    fn cluster_key(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `name` unless a value is there already (written
    /// outside any pending change, at once); returns the stored value: this
    /// one, or the one another controller stored first.
    fn insert_cluster_key(&mut self, name: &str, value: &[u8], now: u64) -> Result<Vec<u8>>;
    // PostgreSQL (issue 18, pg).
    /// The PostgreSQL store behind this one, for what only it has (the
    /// lease's fence: [`PgStore::set_fence`]); `None` on SQLite.
    fn postgres(&mut self) -> Option<&mut PgStore> {
        None
    }
    // Pipelines that feed pipelines (issue 21, feed).
    /// What the newest sets the fan-in rule started for `pipeline` took, by source action.
    fn feeds_consumed(&self, pipeline: &str) -> Result<Vec<FeedConsumed>>;
    // Scale (issue 19, scale).
    /// At most `limit` pipelines named after `after` (by byte order), each
    /// at its latest version and without its declaration: one page of a
    /// listing (the declarations are parsed once and cached by the driver),
    /// read as a range of the pipelines' key, so a page costs the same with
    /// 10 pipelines or 10,000 (issue 19).
    fn pipeline_heads_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<PipelineHead>>;
}

/// A pipeline's latest version without its declaration (scale, issue 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineHead {
    pub name: String,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
}

impl From<&PipelineRecord> for PipelineHead {
    fn from(p: &PipelineRecord) -> Self {
        Self { name: p.name.clone(), version: p.version, created_at: p.created_at, updated_at: p.updated_at }
    }
}

/// What [`Store::artifact_digests_off_driver`] returns.
pub type DigestListing = Box<dyn FnOnce() -> Result<std::collections::HashSet<String>> + Send>;

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    _checkpointer: checkpoint::Checkpointer,
}

/// The newest schema, whole: what a fresh store is made with, and what
/// is created where missing after an older store's migrations
/// (`schema.rs`; a change to an existing table is a migration there).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pipelines (
    name TEXT NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, author TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, version INTEGER NOT NULL,
    status TEXT NOT NULL, started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_by_pipeline ON executions (pipeline, started_at);
CREATE INDEX IF NOT EXISTS executions_by_status ON executions (status);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL, execution_id TEXT NOT NULL, seq INTEGER NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_by_execution ON logs (execution_id);
-- One job's lines after a sequence number (issue 16, logs: following a log).
CREATE INDEX IF NOT EXISTS logs_by_job ON logs (execution_id, job_id, seq);
CREATE TABLE IF NOT EXISTS agents (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    pipeline TEXT NOT NULL, stage TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (pipeline, stage));
CREATE TABLE IF NOT EXISTS plugins (
    provider TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, info TEXT NOT NULL,
    builtin INTEGER NOT NULL, PRIMARY KEY (provider, version));
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY, sealed BLOB NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    pipelines TEXT NOT NULL DEFAULT '[\"*\"]');
CREATE TABLE IF NOT EXISTS webhooks (pipeline TEXT PRIMARY KEY, sealed BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen_revisions (
    pipeline TEXT NOT NULL, action TEXT NOT NULL, revision TEXT NOT NULL, seen_at INTEGER NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (pipeline, action, revision));
CREATE TABLE IF NOT EXISTS revocations (serial TEXT PRIMARY KEY, agent_id TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS publishers (name TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plugin_signatures (digest TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS action_types (
    category TEXT NOT NULL, provider TEXT NOT NULL, version TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (category, provider, version));
CREATE TABLE IF NOT EXISTS worker_jobs (
    id TEXT PRIMARY KEY, access_key_id TEXT NOT NULL UNIQUE, finished INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS worker_jobs_unfinished ON worker_jobs (finished);
-- AWS-compatible API (issue 14, aws).
CREATE TABLE IF NOT EXISTS access_keys (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS start_requests (
    pipeline TEXT NOT NULL, token TEXT NOT NULL, execution_id TEXT NOT NULL, PRIMARY KEY (pipeline, token));
CREATE TABLE IF NOT EXISTS tags (resource TEXT PRIMARY KEY, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_definitions (pipeline TEXT PRIMARY KEY, definition TEXT NOT NULL);
-- The audit log (issue 15, gov): append-only, hash-chained (crate::audit).
-- The triggers stop the controller's own code from changing a record or
-- removing one that is not pruned; they are no defence against someone
-- who can write the file (the chain is: `sluice audit verify`).
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, user TEXT NOT NULL, via TEXT NOT NULL,
    operation TEXT NOT NULL, resource TEXT NOT NULL, result TEXT NOT NULL, message TEXT NOT NULL,
    source TEXT NOT NULL, request_id TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (time);
CREATE INDEX IF NOT EXISTS audit_log_by_user ON audit_log (user, seq);
CREATE INDEX IF NOT EXISTS audit_log_by_operation ON audit_log (operation, seq);
CREATE TABLE IF NOT EXISTS audit_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_prune_only BEFORE DELETE ON audit_log
    WHEN OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0)
    BEGIN SELECT RAISE(ABORT, 'only pruned audit records may be deleted'); END;
-- Permissions (issue 15, policy): teams, custom roles, delegations, pipeline owners.
CREATE TABLE IF NOT EXISTS directory (kind TEXT NOT NULL, name TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (kind, name));
-- The revision flow (issue 16, pages): which executions carried which source
-- revision, written with the execution (schema version 2 filled it for older
-- stores). Keyed by revision for prefix lookups; by time for the newest.
CREATE TABLE IF NOT EXISTS execution_revisions (
    revision TEXT NOT NULL, pipeline TEXT NOT NULL, execution_id TEXT NOT NULL, action TEXT NOT NULL,
    started_at INTEGER NOT NULL, PRIMARY KEY (revision, execution_id, action)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS execution_revisions_by_execution ON execution_revisions (execution_id);
CREATE INDEX IF NOT EXISTS execution_revisions_by_time ON execution_revisions (started_at, execution_id);
-- Shared keys (issue 18, reach): the CA, the admin token, the worker key;
-- written once by the first controller (crate::cluster_keys).
CREATE TABLE IF NOT EXISTS cluster_keys (name TEXT PRIMARY KEY, value BLOB NOT NULL, created_at INTEGER NOT NULL);
-- Pipelines that feed pipelines (issue 21, feed): per downstream source
-- action, the upstream execution the newest fan-in set took.
CREATE TABLE IF NOT EXISTS feed_sets (
    pipeline TEXT NOT NULL, action TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (pipeline, action)) WITHOUT ROWID;
-- Scale (issue 19, scale): queries that read what they answer, never the
-- whole history. One pipeline's history, newest first, a page at a time
-- by (started_at, id): a range of this index, no sort. The artifacts
-- executions refer to (what artifact collection keeps), written with the
-- execution (schema version 3 filled it for older stores), so that the
-- collection reads this table instead of every execution's JSON.
CREATE INDEX IF NOT EXISTS executions_by_pipeline_page ON executions (pipeline, started_at, id);
CREATE TABLE IF NOT EXISTS execution_artifacts (
    digest TEXT NOT NULL, execution_id TEXT NOT NULL, PRIMARY KEY (digest, execution_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS execution_artifacts_by_execution ON execution_artifacts (execution_id);
";

// Scale (issue 19, scale): the queries a store of a million executions
// answers on every listing and at start-up, each a range of an index (the
// tests below hold them to their plans).
/// One pipeline's newest executions.
const HISTORY: &str = "SELECT state FROM executions WHERE pipeline = ?1 ORDER BY started_at DESC, id DESC LIMIT ?2";
/// A page of one pipeline's history: a row value, so that the page is one
/// range of `executions_by_pipeline_page` however deep it is (an OR of the
/// two cases is not).
const HISTORY_BEFORE: &str = "SELECT state FROM executions WHERE pipeline = ?1 AND (started_at, id) < (?2, ?3) \
     ORDER BY started_at DESC, id DESC LIMIT ?4";
/// What start-up restores: the executions still running, by their status.
const UNFINISHED: &str = "SELECT state FROM executions WHERE status IN ('InProgress', 'Stopping') ORDER BY started_at";
/// A page of pipeline heads: SQLite takes the bare columns from the row
/// that has the MAX, in a range of the primary key walked no further than
/// the page; no declaration is read.
const PIPELINE_HEADS_AFTER: &str = "SELECT name, MAX(version), created_at, updated_at FROM pipelines WHERE name > ?1
     GROUP BY name ORDER BY name LIMIT ?2";
/// What artifact collection keeps: the table's key, never the executions' JSON.
const ARTIFACTS_IN_USE: &str = "SELECT DISTINCT digest FROM execution_artifacts";

/// Every artifact an action produced is in its execution's `artifacts` (by
/// name), and in `execution_artifacts` with it (scale, issue 19).
fn artifacts_in_use(conn: &Connection) -> Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare_cached(ARTIFACTS_IN_USE)?;
    let digests = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(digests.collect::<rusqlite::Result<_>>()?)
}

impl SqliteStore {
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        // SQLite gives its -wal and -shm files the database file's mode:
        // owner-only from the start, and for a store made by an older version.
        crate::ca::ensure_private_file(path)?;
        let conn = Connection::open(path).with_context(|| format!("opening the store {}", path.display()))?;
        // A new store's pages are 16 KiB (issue 19): a table leaf then holds
        // a row of up to 16 KiB, such as the state of an execution of a
        // hundred actions, which with 4 KiB pages went to a chain of
        // overflow pages that each step freed and allocated again. An
        // existing store keeps the page size it was made with.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Data lifecycle (issue 17, life): the schema is versioned.
        let (from, to) = schema::upgrade(&conn).with_context(|| format!("the store {}", path.display()))?;
        if from != to {
            tracing::info!(from, to, store = %path.display(), "store schema migrated");
        }
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_BYTES / page_size.max(512))?;
        let checkpointer = checkpoint::Checkpointer::start(path, sync)?;
        Ok(Self { conn, path: path.to_path_buf(), _checkpointer: checkpointer })
    }
}

/// The page size of a new SQLite store.
const PAGE_SIZE: i64 = 16 << 10;

fn json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).with_context(|| format!("the store holds a corrupt {what}"))
}

fn head_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PipelineHead> {
    Ok(PipelineHead {
        name: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        created_at: r.get::<_, i64>(2)? as u64,
        updated_at: r.get::<_, i64>(3)? as u64,
    })
}

fn pipeline_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PipelineRecord> {
    Ok(PipelineRecord {
        name: row.get(0)?,
        version: row.get::<_, i64>(1)? as u64,
        definition: row.get(2)?,
        created_at: row.get::<_, i64>(3)? as u64,
        updated_at: row.get::<_, i64>(4)? as u64,
        author: row.get(5)?,
    })
}

impl SqliteStore {
    fn query_json<T: for<'de> Deserialize<'de>>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let texts = stmt.query_map(args, |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        texts.iter().map(|t| parse(t, what)).collect()
    }
}

/// Records which source revisions `e` carried in the revision flow's index
/// table (issue 16, pages), in the transaction that stores `e`: its rows are
/// replaced whole, so a revision an execution no longer carries goes too.
fn index_revisions(tx: &Connection, e: &Execution) -> Result<()> {
    // An execution is written at every step of every action and its
    // revisions rarely change: reading them dirties no page, rewriting
    // them dirtied the table and both its indexes at each step (issue 19, perf).
    let mut wanted: Vec<(&str, &str)> = revision_rows(e).collect();
    wanted.sort_unstable();
    let stored: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT action, revision FROM execution_revisions WHERE execution_id = ?1 ORDER BY action, revision",
        )?
        .query_map([&e.id.0], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let unchanged = stored.len() == wanted.len()
        && stored.iter().zip(&wanted).all(|((a, r), (action, revision))| a == action && r == revision);
    if unchanged {
        return Ok(());
    }
    tx.prepare_cached("DELETE FROM execution_revisions WHERE execution_id = ?1")?.execute([&e.id.0])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO execution_revisions (revision, pipeline, execution_id, action, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (key, revision) in wanted {
        insert.execute(params![revision, e.pipeline, e.id.0, key, e.started_at as i64])?;
    }
    Ok(())
}

/// The rows of the revision flow's index for `e`, as (key, revision): its
/// source revisions by action, and (issue 21, feed) what it carries from
/// upstream, under the key it came by (`PIPELINE/ACTION`, or `PIPELINE` for
/// an upstream execution's id). An execution fed by another pipeline may
/// have no source revision of its own. Both backends write these.
fn revision_rows(e: &Execution) -> impl Iterator<Item = (&str, &str)> {
    e.source_revisions
        .iter()
        .map(|(action, r)| (action.as_str(), r.revision_id.as_str()))
        .chain(e.origins.iter().map(|(key, o)| (key.as_str(), o.revision_id.as_str())))
}

/// Records the artifacts `e` refers to (scale, issue 19), in the
/// transaction that stores `e`. Rows are only added, never replaced: an
/// execution writes its state several times per action, and a DELETE on
/// each would cost every action; a digest an execution stopped referring
/// to (an action retried with a new output) is kept until the execution
/// goes, which keeps a blob longer, never drops one still in use.
fn index_artifacts(tx: &Connection, e: &Execution) -> Result<()> {
    if e.artifacts.is_empty() {
        return Ok(());
    }
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO execution_artifacts (digest, execution_id) VALUES (?1, ?2)")?;
    for a in e.artifacts.values() {
        insert.execute(params![a.digest, e.id.0])?;
    }
    Ok(())
}

/// The least string greater than every string that starts with `prefix`
/// (in SQLite's byte order, which is UTF-8's code point order): its last
/// character that has a successor, advanced by one, with what follows it
/// dropped. None when no character has one (every string past the prefix).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// An audit anchor or head from a `SELECT seq, hash` row.
fn anchor_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<crate::audit::Anchor> {
    Ok(crate::audit::Anchor { seq: r.get::<_, i64>(0)? as u64, hash: r.get(1)? })
}

impl SqliteStore {
    /// The changes, in the transaction open on `tx`.
    fn write_changes(tx: &Connection, changes: &[Change]) -> Result<()> {
        for change in changes {
            match change {
                Change::Pipeline(p) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO pipelines (name, version, definition, created_at, updated_at, author) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![p.name, p.version as i64, p.definition, p.created_at as i64, p.updated_at as i64, p.author])?;
                }
                Change::Execution(e) => {
                    // An update in place, not `INSERT OR REPLACE` (issue 19):
                    // a replace deletes the row and inserts it again, with
                    // all four of its index entries, at every step of every
                    // execution. An execution's pipeline, version and start
                    // never change after it is created, so an update touches
                    // the row and the status index only.
                    tx.prepare_cached(
                        "INSERT INTO executions (id, pipeline, version, status, started_at, updated_at, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, state = excluded.state",
                    )?
                    .execute(params![
                        e.id.0,
                        e.pipeline,
                        e.version as i64,
                        e.status.as_str(),
                        e.started_at as i64,
                        e.updated_at as i64,
                        json(&**e)?
                    ])?;
                    index_revisions(tx, e)?;
                    // Scale (issue 19, scale).
                    index_artifacts(tx, e)?;
                }
                Change::Log(l) => {
                    tx.prepare_cached("INSERT INTO logs (job_id, execution_id, seq, text) VALUES (?1, ?2, ?3, ?4)")?
                        .execute(params![l.job_id, l.execution_id, l.seq as i64, l.text])?;
                }
                Change::Agent(a) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO agents (id, record) VALUES (?1, ?2)")?
                        .execute(params![a.id, json(a)?])?;
                }
                Change::JoinToken(t) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO join_tokens (id, secret_hash, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![t.id, t.secret_hash, json(t)?])?;
                }
                Change::DeletePipeline(name) => {
                    tx.prepare_cached(
                        "DELETE FROM logs WHERE execution_id IN (SELECT id FROM executions WHERE pipeline = ?1)",
                    )?
                    .execute([name])?;
                    tx.prepare_cached("DELETE FROM execution_revisions WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached(
                        "DELETE FROM execution_artifacts WHERE execution_id IN (SELECT id FROM executions WHERE pipeline = ?1)",
                    )?
                    .execute([name])?;
                    tx.prepare_cached("DELETE FROM executions WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM pipelines WHERE name = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM transitions WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM webhooks WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM seen_revisions WHERE pipeline = ?1")?.execute([name])?;
                    // Issue 21, feed.
                    tx.prepare_cached("DELETE FROM feed_sets WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM start_requests WHERE pipeline = ?1")?.execute([name])?;
                    notifications::delete_pipeline(tx, name)?;
                    tx.prepare_cached("DELETE FROM webhook_definitions WHERE pipeline = ?1")?.execute([name])?;
                    tx.prepare_cached("DELETE FROM tags WHERE resource = ?1")?.execute([format!("pipeline:{name}")])?;
                    // Ended jobs only (a pipeline with executions running is
                    // not deleted): their details name secret properties.
                    tx.prepare_cached("DELETE FROM worker_jobs WHERE json_extract(record, '$.pipeline') = ?1")?
                        .execute([name])?;
                }
                Change::Secret(s) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO secrets (name, sealed, created_at, updated_at, pipelines) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![s.name, s.sealed, s.created_at as i64, s.updated_at as i64, json(&s.pipelines)?])?;
                }
                Change::DeleteSecret(name) => {
                    tx.prepare_cached("DELETE FROM secrets WHERE name = ?1")?.execute([name])?;
                }
                Change::Webhook { pipeline, sealed: Some(sealed), created_at } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO webhooks (pipeline, sealed, created_at) VALUES (?1, ?2, ?3)")?
                        .execute(params![pipeline, sealed, *created_at as i64])?;
                }
                Change::Webhook { pipeline, sealed: None, .. } => {
                    tx.prepare_cached("DELETE FROM webhooks WHERE pipeline = ?1")?.execute([pipeline])?;
                }
                Change::DeletePlugin { provider, version } => {
                    tx.prepare_cached("DELETE FROM plugins WHERE provider = ?1 AND version = ?2 AND builtin = 0")?
                        .execute(params![provider, version])?;
                }
                Change::User(u) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO users (name, record) VALUES (?1, ?2)")?
                        .execute(params![u.name, json(u)?])?;
                }
                Change::ApiToken(t) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO api_tokens (id, secret_hash, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![t.id, t.secret_hash, json(t)?])?;
                }
                // Issue 21, feed.
                Change::FeedConsumed(f) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO feed_sets (pipeline, action, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![f.pipeline, f.action, json(f)?])?;
                }
                Change::SeenRevision(r) => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO seen_revisions (pipeline, action, revision, seen_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![r.pipeline, r.action, r.revision, r.seen_at as i64, json(r)?])?;
                }
                Change::Revocation(r) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO revocations (serial, agent_id, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![r.serial, r.agent_id, json(r)?])?;
                }
                Change::Transition(t) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO transitions (pipeline, stage, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![t.pipeline, t.stage, json(t)?])?;
                }
                Change::Publisher(p) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO publishers (name, record) VALUES (?1, ?2)")?
                        .execute(params![p.name, json(p)?])?;
                }
                Change::DeletePublisher(name) => {
                    tx.prepare_cached("DELETE FROM publishers WHERE name = ?1")?.execute([name])?;
                }
                Change::PluginSignature(p) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO plugin_signatures (digest, record) VALUES (?1, ?2)")?
                        .execute(params![p.digest, json(p)?])?;
                }
                Change::ActionType(t) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO action_types (category, provider, version, record) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![t.category, t.provider, t.version, json(t)?])?;
                }
                Change::WorkerJob(j) => {
                    let updated = j.ended_at.or(j.acknowledged_at).or(j.polled_at).unwrap_or(j.created_at);
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO worker_jobs (id, access_key_id, finished, updated_at, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![j.id, j.access_key_id, j.status.is_final(), updated as i64, json(j)?])?;
                }
                // AWS-compatible API (issue 14, aws).
                Change::AccessKey(k) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO access_keys (id, record) VALUES (?1, ?2)")?
                        .execute(params![k.id, json(k)?])?;
                }
                Change::StartRequest { pipeline, token, execution_id } => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO start_requests (pipeline, token, execution_id) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![pipeline, token, execution_id])?;
                }
                Change::WebhookDefinition { pipeline, definition: Some(definition) } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO webhook_definitions (pipeline, definition) VALUES (?1, ?2)")?
                        .execute(params![pipeline, definition])?;
                }
                Change::WebhookDefinition { pipeline, definition: None } => {
                    tx.prepare_cached("DELETE FROM webhook_definitions WHERE pipeline = ?1")?.execute([pipeline])?;
                }
                Change::Tags { resource, tags } if tags.is_empty() => {
                    tx.prepare_cached("DELETE FROM tags WHERE resource = ?1")?.execute([resource])?;
                }
                Change::Tags { resource, tags } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO tags (resource, tags) VALUES (?1, ?2)")?
                        .execute(params![resource, json(tags)?])?;
                }
                // Notifications (issue 15, notify).
                Change::Notification(change) => notifications::apply(tx, change)?,
                // Permissions (issue 15, policy).
                Change::DeleteUser(name) => {
                    tx.prepare_cached("DELETE FROM users WHERE name = ?1")?.execute([name])?;
                }
                Change::Directory { kind, name, record: Some(record) } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO directory (kind, name, record) VALUES (?1, ?2, ?3)")?
                        .execute(params![kind, name, record])?;
                }
                Change::Directory { kind, name, record: None } => {
                    tx.prepare_cached("DELETE FROM directory WHERE kind = ?1 AND name = ?2")?
                        .execute(params![kind, name])?;
                }
                Change::Plugin(p) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO plugins (provider, version, digest, info, builtin) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![p.provider, p.version, p.digest, p.info, p.builtin])?;
                }
                // The audit log (issue 15, gov).
                Change::Audit(entry) => {
                    let (r, hash) = &**entry;
                    tx.prepare_cached(
                            "INSERT INTO audit_log (seq, time, user, via, operation, resource, result, message, source, request_id, hash) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        )?
                        .execute(params![
                            r.seq as i64,
                            r.time as i64,
                            r.user,
                            r.via,
                            r.operation,
                            r.resource,
                            r.result,
                            r.message,
                            r.source,
                            r.request_id,
                            hash
                        ])?;
                }
                // Data lifecycle (issue 17, life).
                Change::DeleteExecutions(ids) => {
                    for id in ids {
                        let ended = "SELECT id FROM executions WHERE id = ?1 AND status NOT IN ('InProgress', 'Stopping')";
                        tx.prepare_cached(&format!("DELETE FROM logs WHERE execution_id IN ({ended})"))?.execute([id])?;
                        // A start's token must not name an execution that is gone.
                        tx.prepare_cached(&format!("DELETE FROM start_requests WHERE execution_id IN ({ended})"))?
                            .execute([id])?;
                        tx.prepare_cached(&format!("DELETE FROM execution_revisions WHERE execution_id IN ({ended})"))?
                            .execute([id])?;
                        tx.prepare_cached(&format!("DELETE FROM execution_artifacts WHERE execution_id IN ({ended})"))?
                            .execute([id])?;
                        tx.prepare_cached(&format!("DELETE FROM executions WHERE id IN ({ended})"))?.execute([id])?;
                    }
                }
                Change::PruneAudit(anchor) => {
                    tx.prepare_cached("INSERT OR REPLACE INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2)")?
                        .execute(params![anchor.seq as i64, anchor.hash])?;
                    tx.prepare_cached("DELETE FROM audit_log WHERE seq <= ?1")?.execute([anchor.seq as i64])?;
                }
            }
        }
        Ok(())
    }

    /// Runs one of the transaction's statements, parsed once.
    fn transaction(&self, statement: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(statement)?.execute([]).map(drop)
    }
}

impl Store for SqliteStore {
    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // Outside a step, the write lock first (as a step takes it): the
        // delivery task writes through a connection of its own, and a
        // deferred transaction that read before it wrote would fail at its
        // first write when that connection committed in between.
        if !self.conn.is_autocommit() {
            // Inside a step: a savepoint, so that a failure takes back only
            // these changes.
            let savepoint = self.conn.savepoint()?;
            Self::write_changes(&savepoint, changes)?;
            return savepoint.commit().context("committing to the store");
        }
        // The transaction's own statements parsed once, not at every commit
        // (issue 19): an action's step is a commit.
        self.transaction("BEGIN IMMEDIATE").context("opening a transaction")?;
        match Self::write_changes(&self.conn, changes) {
            Ok(()) => self.transaction("COMMIT").context("committing to the store"),
            Err(e) => {
                let _ = self.transaction("ROLLBACK");
                Err(e)
            }
        }
    }

    // The audit log (issue 15, gov).
    fn begin_step(&mut self) -> Result<()> {
        // IMMEDIATE: the step takes the write lock first, so that a write after
        // its reads cannot fail because the delivery task committed between.
        self.transaction("BEGIN IMMEDIATE").context("opening a transaction")
    }

    fn end_step(&mut self) -> Result<()> {
        self.transaction("COMMIT").context("committing to the store")
    }

    fn audit_anchor(&self) -> Result<crate::audit::Anchor> {
        let found = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit_anchor WHERE id = 1")?
            .query_row([], anchor_row)
            .optional()?;
        Ok(found.unwrap_or_default())
    }

    fn audit_head(&self) -> Result<crate::audit::Anchor> {
        let newest = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], anchor_row)
            .optional()?;
        match newest {
            Some(head) => Ok(head),
            None => self.audit_anchor(),
        }
    }

    fn audit_records(&self, f: &crate::audit::Filter) -> Result<Vec<(crate::audit::Record, String)>> {
        // Newest first when a listing wants the newest `limit`; turned
        // oldest first below either way.
        let order = if f.newest { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT seq, time, user, via, operation, resource, result, message, source, request_id, hash
             FROM audit_log WHERE seq > ?1 AND (?2 IS NULL OR time >= ?2) AND (?3 IS NULL OR time < ?3)
             AND (?4 IS NULL OR user = ?4)
             AND (?5 IS NULL OR resource = 'pipeline/' || ?5 OR substr(resource, 1, length(?5) + 10) = 'pipeline/' || ?5 || '/')
             AND (?6 IS NULL OR operation = ?6)
             AND (?8 IS NULL OR seq < ?8)
             ORDER BY seq {order} LIMIT ?7"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let args = params![
            f.after_seq as i64,
            f.since.map(|t| t as i64),
            f.until.map(|t| t as i64),
            f.user,
            f.pipeline,
            f.operation,
            f.limit.min(i64::MAX as usize) as i64,
            f.before_seq.map(|s| s.min(i64::MAX as u64) as i64)
        ];
        let mut rows = stmt
            .query_map(args, |r| {
                let record = crate::audit::Record {
                    seq: r.get::<_, i64>(0)? as u64,
                    time: r.get::<_, i64>(1)? as u64,
                    user: r.get(2)?,
                    via: r.get(3)?,
                    operation: r.get(4)?,
                    resource: r.get(5)?,
                    result: r.get(6)?,
                    message: r.get(7)?,
                    source: r.get(8)?,
                    request_id: r.get(9)?,
                };
                Ok((record, r.get::<_, String>(10)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if f.newest {
            rows.reverse();
        }
        Ok(rows)
    }

    fn audit_hash(&self, seq: u64) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT hash FROM audit_log WHERE seq = ?1")?;
        Ok(stmt.query_row([seq as i64], |r| r.get(0)).optional()?)
    }

    fn audit_prune_point(&self, before: u64) -> Result<Option<crate::audit::Anchor>> {
        let mut stmt =
            // The record just before the oldest one young enough to keep:
            // one stamped in the past (a clock set back) does not drag
            // younger records out with it.
            self.conn.prepare_cached(
                "SELECT seq, hash FROM audit_log WHERE seq < COALESCE((SELECT MIN(seq) FROM audit_log WHERE time >= ?1), \
                 (SELECT MAX(seq) + 1 FROM audit_log)) ORDER BY seq DESC LIMIT 1",
            )?;
        Ok(stmt.query_row([before as i64], anchor_row).optional()?)
    }

    fn pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.name, p.version, p.definition, p.created_at, p.updated_at, p.author FROM pipelines p
             WHERE p.version = (SELECT MAX(version) FROM pipelines q WHERE q.name = p.name) ORDER BY p.name",
        )?;
        Ok(stmt.query_map([], pipeline_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn pipeline(&self, name: &str, version: Option<u64>) -> Result<Option<PipelineRecord>> {
        let sql = "SELECT name, version, definition, created_at, updated_at, author FROM pipelines
                   WHERE name = ?1 AND (?2 IS NULL OR version = ?2) ORDER BY version DESC LIMIT 1";
        Ok(self.conn.prepare_cached(sql)?.query_row(params![name, version.map(|v| v as i64)], pipeline_row).optional()?)
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        Ok(self.query_json("SELECT state FROM executions WHERE id = ?1", [&id.0], "execution")?.pop())
    }

    fn executions(&self, pipeline: &str, limit: usize) -> Result<Vec<Execution>> {
        self.query_json(HISTORY, params![pipeline, limit as i64], "execution")
    }

    fn executions_with_revision(&self, prefix: &str, limit: usize) -> Result<Vec<Execution>> {
        // Through the index table, never the executions' JSON: only the
        // `limit` executions answered are read whole. A prefix is a range
        // of the revision key (from the prefix up to the first string past
        // every one it starts), checked again with substr, not LIKE: a
        // revision id may hold `%` or `_`, and a prefix is not a pattern.
        let answer = |matching: &str| {
            format!(
                "SELECT e.state FROM (SELECT DISTINCT started_at, execution_id FROM execution_revisions WHERE {matching}
                     ORDER BY started_at DESC, execution_id DESC LIMIT ?1) AS r
                 JOIN executions e ON e.id = r.execution_id ORDER BY r.started_at DESC, r.execution_id DESC"
            )
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        if prefix.is_empty() {
            return self.query_json(&answer("1"), params![limit], "execution");
        }
        let starts = "revision >= ?2 AND substr(revision, 1, length(?2)) = ?2";
        match prefix_end(prefix) {
            Some(end) => {
                self.query_json(&answer(&format!("{starts} AND revision < ?3")), params![limit, prefix, end], "execution")
            }
            None => self.query_json(&answer(starts), params![limit, prefix], "execution"),
        }
    }

    fn executions_before(&self, pipeline: &str, before: (u64, &str), limit: usize) -> Result<Vec<Execution>> {
        self.query_json(HISTORY_BEFORE, params![pipeline, before.0 as i64, before.1, limit as i64], "execution")
    }

    fn unfinished_executions(&self) -> Result<Vec<Execution>> {
        self.query_json(UNFINISHED, [], "execution")
    }

    fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.query_json("SELECT record FROM agents ORDER BY id", [], "agent")
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.query_json("SELECT record FROM agents WHERE id = ?1", [id], "agent")?.pop())
    }

    fn join_token_by_hash(&self, secret_hash: &str) -> Result<Option<JoinTokenRecord>> {
        Ok(self.query_json("SELECT record FROM join_tokens WHERE secret_hash = ?1", [secret_hash], "join token")?.pop())
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.query_json("SELECT record FROM join_tokens ORDER BY id", [], "join token")
    }

    fn plugins(&self) -> Result<Vec<PluginRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT provider, version, digest, info, builtin FROM plugins ORDER BY provider, version")?;
        Ok(stmt
            .query_map([], |r| {
                Ok(PluginRecord {
                    provider: r.get(0)?,
                    version: r.get(1)?,
                    digest: r.get(2)?,
                    info: r.get(3)?,
                    builtin: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn action_types(&self) -> Result<Vec<crate::workers::ActionTypeRecord>> {
        self.query_json("SELECT record FROM action_types ORDER BY category, provider, version", [], "action type")
    }

    fn unfinished_worker_jobs(&self) -> Result<Vec<crate::workers::WorkerJob>> {
        self.query_json("SELECT record FROM worker_jobs WHERE finished = 0 ORDER BY id", [], "worker job")
    }

    fn worker_job(&self, id: &str) -> Result<Option<crate::workers::WorkerJob>> {
        Ok(self.query_json("SELECT record FROM worker_jobs WHERE id = ?1", [id], "worker job")?.pop())
    }

    fn worker_job_by_key(&self, access_key_id: &str) -> Result<Option<crate::workers::WorkerJob>> {
        Ok(self.query_json("SELECT record FROM worker_jobs WHERE access_key_id = ?1", [access_key_id], "worker job")?.pop())
    }

    fn publishers(&self) -> Result<Vec<PublisherRecord>> {
        self.query_json("SELECT record FROM publishers ORDER BY name", [], "publisher")
    }

    fn plugin_signatures(&self) -> Result<Vec<PluginSignatureRecord>> {
        self.query_json("SELECT record FROM plugin_signatures ORDER BY digest", [], "plugin signature")
    }

    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        self.query_json("SELECT record FROM access_keys ORDER BY id", [], "access key")
    }

    fn start_request(&self, pipeline: &str, token: &str) -> Result<Option<String>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT execution_id FROM start_requests WHERE pipeline = ?1 AND token = ?2")?;
        Ok(stmt.query_map(params![pipeline, token], |r| r.get::<_, String>(0))?.next().transpose()?)
    }

    fn webhook_definitions(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached("SELECT pipeline, definition FROM webhook_definitions ORDER BY pipeline")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // Notifications (issue 15, notify).
    fn notification_rules(&self) -> Result<Vec<notifications::NotificationRuleRecord>> {
        notifications::rules(&self.conn)
    }

    fn notification_deliveries(
        &self,
        rule_id: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<notifications::DeliveryRecord>> {
        notifications::deliveries(&self.conn, rule_id, status, limit)
    }

    fn notification_delivery(&self, id: i64) -> Result<Option<notifications::DeliveryRecord>> {
        notifications::delivery(&self.conn, id)
    }

    // Permissions (issue 15, policy).
    fn directory_entries(&self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.conn.prepare_cached("SELECT kind, name, record FROM directory ORDER BY kind, name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // Shared keys (issue 18, reach).
    fn cluster_key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM cluster_keys WHERE name = ?1")?;
        Ok(stmt.query_map([name], |r| r.get::<_, Vec<u8>>(0))?.next().transpose()?)
    }

    fn insert_cluster_key(&mut self, name: &str, value: &[u8], now: u64) -> Result<Vec<u8>> {
        self.conn.execute(
            "INSERT INTO cluster_keys (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, value, now as i64],
        )?;
        self.cluster_key(name)?.with_context(|| format!("the cluster key {name:?} vanished from the store"))
    }

    // Data lifecycle (issue 17, life).
    fn execution_ages(&self, pipeline: Option<&str>) -> Result<Vec<(String, crate::retention::Age)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT pipeline, id, status NOT IN ('InProgress', 'Stopping'), updated_at, \
             (SELECT json_group_array(json_extract(s.value, '$.name')) FROM json_each(e.state, '$.stages') s \
              WHERE json_extract(s.value, '$.status') = 'Succeeded') \
             FROM executions e WHERE ?1 IS NULL OR pipeline = ?1 ORDER BY pipeline, started_at DESC, id DESC",
        )?;
        let rows = stmt.query_map([pipeline], |r| {
            let succeeded: String = r.get(4)?;
            let succeeded = serde_json::from_str(&succeeded)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
            let age =
                crate::retention::Age { id: r.get(1)?, ended: r.get(2)?, updated_at: r.get::<_, i64>(3)? as u64, succeeded };
            Ok((r.get::<_, String>(0)?, age))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // Scale (issue 19, scale).
    fn pipeline_heads_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<PipelineHead>> {
        let mut stmt = self.conn.prepare_cached(PIPELINE_HEADS_AFTER)?;
        let rows = stmt.query_map(params![after.unwrap_or(""), limit.min(i64::MAX as usize) as i64], head_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn tags(&self, resource: &str) -> Result<Vec<(String, String)>> {
        Ok(self.query_json("SELECT tags FROM tags WHERE resource = ?1", [resource], "tag list")?.pop().unwrap_or_default())
    }

    fn transitions(&self) -> Result<Vec<TransitionRecord>> {
        self.query_json("SELECT record FROM transitions ORDER BY pipeline, stage", [], "transition")
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT name, sealed, created_at, updated_at, pipelines FROM secrets ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                SecretRecord {
                    name: r.get(0)?,
                    sealed: r.get(1)?,
                    created_at: r.get::<_, i64>(2)? as u64,
                    updated_at: r.get::<_, i64>(3)? as u64,
                    pipelines: Vec::new(),
                },
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut secrets = Vec::new();
        for row in rows {
            let (mut record, pipelines) = row?;
            record.pipelines = parse(&pipelines, "secret scope")?;
            secrets.push(record);
        }
        Ok(secrets)
    }

    fn webhooks(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let mut stmt = self.conn.prepare_cached("SELECT pipeline, sealed, created_at FROM webhooks")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn seen_revision(&self, pipeline: &str, action: &str, revision: &str) -> Result<Option<SeenRevision>> {
        Ok(self
            .query_json(
                "SELECT record FROM seen_revisions WHERE pipeline = ?1 AND action = ?2 AND revision = ?3",
                params![pipeline, action, revision],
                "seen revision",
            )?
            .pop())
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.query_json("SELECT record FROM users ORDER BY name", [], "user")
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.query_json("SELECT record FROM api_tokens ORDER BY id", [], "API token")
    }

    // Issue 21, feed.
    fn feeds_consumed(&self, pipeline: &str) -> Result<Vec<FeedConsumed>> {
        self.query_json("SELECT record FROM feed_sets WHERE pipeline = ?1 ORDER BY action", [pipeline], "fan-in set")
    }

    fn latest_seen_revisions(&self, pipeline: &str) -> Result<Vec<SeenRevision>> {
        self.query_json(
            "SELECT record FROM seen_revisions s WHERE pipeline = ?1 AND seen_at = \
             (SELECT MAX(seen_at) FROM seen_revisions t WHERE t.pipeline = s.pipeline AND t.action = s.action) \
             GROUP BY action",
            [pipeline],
            "seen revision",
        )
    }

    fn artifact_digests(&self) -> Result<std::collections::HashSet<String>> {
        artifacts_in_use(&self.conn)
    }

    fn artifact_digests_off_driver(&self) -> DigestListing {
        let path = self.path.clone();
        Box::new(move || {
            // One thread reads it: SQLite need not lock around every row.
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&path, flags)
                .with_context(|| format!("opening the store {} to read", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            artifacts_in_use(&conn)
        })
    }

    fn revocations(&self) -> Result<Vec<RevocationRecord>> {
        self.query_json("SELECT record FROM revocations ORDER BY serial", [], "revocation")
    }

    fn log_position(&self, execution_id: &str, job_id: &str, marker: &str) -> Result<(Option<u64>, u64, bool)> {
        let (seq, bytes, marked) = self.conn.prepare_cached(
            "SELECT MAX(seq), COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0),              COALESCE(MAX(substr(text, 1, length(?3)) = ?3), 0)              FROM logs WHERE execution_id = ?1 AND job_id = ?2",
        )?
        .query_row(params![execution_id, job_id, marker], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?;
        Ok((seq.map(|s| s as u64), bytes as u64, marked != 0))
    }

    fn job_logs(&self, execution_id: &str, job_id: &str, after: Option<u64>, limit: u32) -> Result<Vec<LogLine>> {
        // -1: no line has a negative sequence number.
        let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
        let mut stmt = self.conn.prepare_cached(
            "SELECT job_id, execution_id, seq, text FROM logs
             WHERE execution_id = ?1 AND job_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        )?;
        Ok(stmt
            .query_map(params![execution_id, job_id, after, limit], |r| {
                Ok(LogLine { job_id: r.get(0)?, execution_id: r.get(1)?, seq: r.get::<_, i64>(2)? as u64, text: r.get(3)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn logs(&self, execution_id: &str) -> Result<Vec<LogLine>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT job_id, execution_id, seq, text FROM logs WHERE execution_id = ?1 ORDER BY rowid")?;
        Ok(stmt
            .query_map([execution_id], |r| {
                Ok(LogLine { job_id: r.get(0)?, execution_id: r.get(1)?, seq: r.get::<_, i64>(2)? as u64, text: r.get(3)? })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ExecutionStatus, Origin, Trigger};

    /// A fresh store's place on each backend: SQLite in a temporary
    /// directory and (issue 18, pg) a new database of the throwaway
    /// PostgreSQL cluster, when PostgreSQL is installed (see
    /// `postgres::throwaway`: in CI it must be).
    pub(crate) struct Fresh {
        pub location: Location,
        pub dir: tempfile::TempDir,
    }

    impl Fresh {
        pub fn open(&self) -> Box<dyn Store> {
            self.location.open(self.dir.path(), Durability::Process).unwrap()
        }

        pub fn outbox(&self) -> notifications::Outbox {
            self.location.outbox(self.dir.path()).unwrap()
        }

        /// Asserts that the store refuses `sql` sent to it directly.
        pub fn refuses(&self, sql: &str) {
            let refused = match &self.location {
                Location::Sqlite => Connection::open(self.dir.path().join("sluice.db")).unwrap().execute(sql, []).is_err(),
                Location::Postgres(url) => {
                    let conn = postgres::conn::Conn::connect(&postgres::parse_url(url).unwrap(), "test").unwrap();
                    conn.batch(sql).is_err()
                }
            };
            assert!(refused, "{} took {sql}", self.location);
        }
    }

    pub(crate) fn backends(what: &str) -> Vec<Fresh> {
        let mut out = vec![Fresh { location: Location::Sqlite, dir: tempfile::tempdir().unwrap() }];
        if let Some(cluster) = postgres::throwaway::Throwaway::shared() {
            let url = cluster.database(what).unwrap();
            out.push(Fresh { location: Location::Postgres(url), dir: tempfile::tempdir().unwrap() });
        }
        out
    }

    pub(super) fn execution(id: &str, status: ExecutionStatus, started: u64) -> Execution {
        Execution {
            id: ExecutionId(id.into()),
            pipeline: "web".into(),
            version: 1,
            status,
            status_summary: None,
            trigger: Trigger::new("CreatePipeline", String::new()),
            started_at: started,
            updated_at: started,
            variables: BTreeMap::new(),
            stages: vec![],
            artifacts: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            ordinal: 0,
            waiting_for: None,
            source_revisions: BTreeMap::new(),
            rollback: None,
            origins: BTreeMap::new(),
        }
    }

    #[test]
    fn secrets_of_an_older_store_keep_working_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE secrets (name TEXT PRIMARY KEY, sealed BLOB NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
                 INSERT INTO secrets VALUES ('OLD', x'00', 1, 2);",
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
        let old = store.secrets().unwrap();
        assert_eq!((old[0].name.as_str(), old[0].pipelines.clone()), ("OLD", vec!["*".to_string()]));
        let scoped = SecretRecord {
            name: "NEW".into(),
            sealed: vec![1],
            created_at: 3,
            updated_at: 3,
            pipelines: vec!["web".into(), "api-*".into()],
        };
        store.apply(&[Change::Secret(scoped.clone())]).unwrap();
        drop(store);
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        assert_eq!(store.secrets().unwrap()[0], scoped);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing store file is made owner-only");
    }

    #[test]
    fn a_new_store_has_16_kib_pages_and_an_older_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let pragma =
            |store: &SqliteStore, name: &str| -> i64 { store.conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).unwrap();
            conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (a);").unwrap();
        }
        for (path, page_size) in [(dir.path().join("sluice.db"), PAGE_SIZE), (old, 4096)] {
            let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
            assert_eq!(pragma(&store, "page_size"), page_size, "{}", path.display());
            // The backstop is the same number of bytes either way.
            assert_eq!(pragma(&store, "wal_autocheckpoint") * page_size, checkpoint::BACKSTOP_BYTES);
            // An execution's state larger than a 4 KiB page, and than a
            // 16 KiB one, is written and read back whole.
            for (id, summary) in [("small", 9_000), ("large", 40_000)] {
                let mut e = execution(id, ExecutionStatus::InProgress, 1);
                e.status_summary = Some("x".repeat(summary));
                store.apply(&[Change::Execution(std::sync::Arc::new(e.clone()))]).unwrap();
                drop(store);
                store = SqliteStore::open(&path, Durability::Process).unwrap();
                assert_eq!(store.execution(&e.id).unwrap().as_ref(), Some(&e));
            }
        }
    }

    #[test]
    fn deleting_a_pipeline_deletes_its_worker_jobs_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        for (id, pipeline) in [("j1", "web"), ("j2", "web"), ("j3", "api")] {
            store
                .conn
                .execute(
                    "INSERT INTO worker_jobs (id, access_key_id, finished, updated_at, record) VALUES (?1, ?2, 1, 0, ?3)",
                    params![id, format!("key-{id}"), format!(r#"{{"pipeline": "{pipeline}"}}"#)],
                )
                .unwrap();
        }
        store.apply(&[Change::DeletePipeline("web".into())]).unwrap();
        let left: Vec<String> = store
            .conn
            .prepare("SELECT id FROM worker_jobs ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, ["j3"]);
    }

    #[test]
    fn publishers_and_plugin_signatures_survive_reopening_and_removal() {
        for fresh in backends("publishers_and_plugin_signatures_survive_reopening_and_removal") {
            let publisher = |name: &str| PublisherRecord {
                name: name.into(),
                public_key: format!("key of {name}"),
                key_id: format!("id of {name}"),
                added_at: 1,
                added_by: "admin".into(),
            };
            let signature = PluginSignatureRecord {
                digest: "ab".repeat(32),
                publisher: "acme".into(),
                key_id: "id of acme".into(),
                signature: "{}".into(),
                signed_at: 2,
            };
            {
                let mut store = fresh.open();
                store
                    .apply(&[
                        Change::Publisher(publisher("acme")),
                        Change::Publisher(publisher("infra")),
                        Change::PluginSignature(signature.clone()),
                    ])
                    .unwrap();
                store.apply(&[Change::DeletePublisher("infra".into())]).unwrap();
            }
            let store = fresh.open();
            assert_eq!(store.publishers().unwrap(), vec![publisher("acme")]);
            assert_eq!(store.plugin_signatures().unwrap(), vec![signature]);
        }
    }

    #[test]
    fn changes_survive_reopening() {
        for fresh in backends("changes_survive_reopening") {
            {
                let mut store = fresh.open();
                store
                    .apply(&[
                        Change::Pipeline(PipelineRecord {
                            name: "web".into(),
                            version: 1,
                            definition: "{}".into(),
                            created_at: 1,
                            updated_at: 1,
                            author: "ann".into(),
                        }),
                        Change::Pipeline(PipelineRecord {
                            name: "web".into(),
                            version: 2,
                            definition: "{\"v\":2}".into(),
                            created_at: 1,
                            updated_at: 2,
                            author: String::new(),
                        }),
                        Change::Execution(std::sync::Arc::new(execution("a", ExecutionStatus::Succeeded, 1))),
                        Change::Execution(std::sync::Arc::new(execution("b", ExecutionStatus::InProgress, 2))),
                    ])
                    .unwrap();
            }
            let store = fresh.open();
            assert_eq!(store.pipelines().unwrap().len(), 1);
            assert_eq!(store.pipeline("web", None).unwrap().unwrap().version, 2);
            assert_eq!(store.pipeline("web", Some(1)).unwrap().unwrap().definition, "{}");
            assert!(store.pipeline("web", Some(3)).unwrap().is_none());
            let unfinished = store.unfinished_executions().unwrap();
            assert_eq!(unfinished.iter().map(|e| e.id.0.as_str()).collect::<Vec<_>>(), ["b"]);
            let all = store.executions("web", 10).unwrap();
            assert_eq!(all.iter().map(|e| e.id.0.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        }
    }

    #[test]
    fn an_execution_written_at_every_step_is_one_row_that_follows_its_status() {
        for fresh in backends("an_execution_written_at_every_step_is_one_row_that_follows_its_status") {
            let mut store = fresh.open();
            let older = execution("older", ExecutionStatus::Succeeded, 1);
            let mut run = execution("run", ExecutionStatus::InProgress, 2);
            store
                .apply(&[Change::Execution(std::sync::Arc::new(older)), Change::Execution(std::sync::Arc::new(run.clone()))])
                .unwrap();
            // Written again at each step, as the driver does, then ended.
            for step in 3..6 {
                run.updated_at = step;
                run.status_summary = Some(format!("step {step}"));
                store.apply(&[Change::Execution(std::sync::Arc::new(run.clone()))]).unwrap();
                assert_eq!(store.unfinished_executions().unwrap().len(), 1);
            }
            run.status = ExecutionStatus::Failed;
            store.apply(&[Change::Execution(std::sync::Arc::new(run.clone()))]).unwrap();
            assert!(store.unfinished_executions().unwrap().is_empty(), "the status index follows the update");
            let all = store.executions("web", 10).unwrap();
            assert_eq!(
                all.iter().map(|e| e.id.0.as_str()).collect::<Vec<_>>(),
                ["run", "older"],
                "one row each, in start order"
            );
            let stored = store.execution(&run.id).unwrap().unwrap();
            assert_eq!(
                (stored.status, stored.updated_at, stored.status_summary.as_deref()),
                (ExecutionStatus::Failed, 5, Some("step 5"))
            );
            let page = store.executions_before("web", (2, "run"), 10).unwrap();
            assert_eq!(page.iter().map(|e| e.id.0.as_str()).collect::<Vec<_>>(), ["older"], "paging by start is unchanged");
        }
    }

    #[test]
    fn artifact_digests_are_those_stored_executions_refer_to() {
        for fresh in backends("artifact_digests_are_those_stored_executions_refer_to") {
            let mut store = fresh.open();
            let mut a = execution("a", ExecutionStatus::Succeeded, 1);
            a.artifacts.insert("src".into(), crate::engine::ArtifactRef { digest: "d1".into(), size: 1 });
            a.artifacts.insert("bin".into(), crate::engine::ArtifactRef { digest: "d2".into(), size: 1 });
            let mut b = execution("b", ExecutionStatus::InProgress, 2);
            b.artifacts.insert("src".into(), crate::engine::ArtifactRef { digest: "d1".into(), size: 1 });
            store.apply(&[Change::Execution(std::sync::Arc::new(a)), Change::Execution(std::sync::Arc::new(b))]).unwrap();
            let digests = store.artifact_digests().unwrap();
            assert_eq!(digests, ["d1".to_string(), "d2".to_string()].into());
        }
    }

    // The revision flow (issue 16, pages).
    /// A finished execution of `pipeline` that carried `revisions` (action, id).
    pub(super) fn carrying(id: &str, started: u64, pipeline: &str, revisions: &[(&str, &str)]) -> Change {
        let mut e = execution(id, ExecutionStatus::Succeeded, started);
        e.pipeline = pipeline.into();
        for (action, revision) in revisions {
            let r =
                crate::engine::SourceRevision { revision_id: revision.to_string(), revision_summary: None, pinned: false };
            e.source_revisions.insert(action.to_string(), r);
        }
        Change::Execution(std::sync::Arc::new(e))
    }

    // Issue 21, feedfix: the fan-in sets and the origins of the revision
    // index behave alike on both backends.
    #[test]
    fn fan_in_sets_are_replaced_per_source_and_go_with_their_pipeline_and_origins_are_indexed() {
        for fresh in backends("fan_in_sets_are_replaced_per_source_and_go_with_their_pipeline") {
            let mut store = fresh.open();
            let taken = |pipeline: &str, action: &str, upstream: &str, ordinal: u64| {
                Change::FeedConsumed(FeedConsumed {
                    pipeline: pipeline.into(),
                    action: action.into(),
                    upstream_execution_id: format!("{upstream}-{ordinal}"),
                    upstream_ordinal: ordinal,
                    upstream_pipeline: upstream.into(),
                    execution_id: format!("{pipeline}-{ordinal}"),
                    started_at: ordinal,
                })
            };
            store.apply(&[taken("z", "FromC", "c", 1), taken("z", "FromB", "b", 1), taken("y", "FromB", "b", 1)]).unwrap();
            store.apply(&[taken("z", "FromC", "c", 2)]).unwrap();
            let z = store.feeds_consumed("z").unwrap();
            assert_eq!(z, [taken_record(&taken("z", "FromB", "b", 1)), taken_record(&taken("z", "FromC", "c", 2))]);
            // A record written before `upstreamPipeline` was kept reads with it empty.
            let mut old = taken_record(&taken("x", "Up", "", 3));
            old.upstream_pipeline.clear();
            store.apply(&[Change::FeedConsumed(old.clone())]).unwrap();
            assert_eq!(store.feeds_consumed("x").unwrap(), [old]);
            store.apply(&[Change::DeletePipeline("z".into())]).unwrap();
            assert!(store.feeds_consumed("z").unwrap().is_empty(), "{}", fresh.location);
            assert_eq!(store.feeds_consumed("y").unwrap().len(), 1, "{}", fresh.location);
            // An execution is found by what it carries from upstream too.
            let mut fed = execution("fed", ExecutionStatus::Succeeded, 7);
            fed.origins.insert("lib/Src".into(), Origin { revision_id: "c0ffee".into(), revision_summary: None });
            store.apply(&[Change::Execution(std::sync::Arc::new(fed))]).unwrap();
            let found: Vec<String> =
                store.executions_with_revision("c0ff", 10).unwrap().into_iter().map(|e| e.id.0).collect();
            assert_eq!(found, ["fed"], "{}", fresh.location);
        }
    }

    fn taken_record(change: &Change) -> FeedConsumed {
        match change {
            Change::FeedConsumed(f) => f.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn executions_are_found_by_a_prefix_of_their_source_revisions() {
        for fresh in backends("executions_are_found_by_a_prefix_of_their_source_revisions") {
            let mut store = fresh.open();
            store
                .apply(&[
                    carrying("a", 1, "web", &[("Source", "abc123")]),
                    carrying("b", 2, "api", &[("Code", "ffff"), ("Lib", "abc999")]),
                    carrying("c", 3, "web", &[("Source", "def456")]),
                    carrying("d", 4, "web", &[]),
                    // Not patterns: `%` and `_` are characters of a revision id.
                    carrying("e", 5, "odd", &[("Source", "a%_x")]),
                ])
                .unwrap();
            let ids = |prefix: &str, limit: usize| -> Vec<String> {
                store.executions_with_revision(prefix, limit).unwrap().into_iter().map(|e| e.id.0).collect()
            };
            assert_eq!(ids("abc", 10), ["b", "a"]);
            assert_eq!(ids("abc123", 10), ["a"]);
            assert_eq!(ids("abc1234", 10), Vec::<String>::new());
            assert_eq!(ids("", 10), ["e", "c", "b", "a"]);
            assert_eq!(ids("", 2), ["e", "c"]);
            assert_eq!(ids("a%", 10), ["e"]);
            assert_eq!(ids("a_", 10), Vec::<String>::new());
            assert_eq!(ids("'; DROP TABLE executions; --", 10), Vec::<String>::new());

            // The index follows the execution: a revision it no longer carries
            // goes, and a deleted execution leaves no row behind.
            store.apply(&[carrying("a", 1, "web", &[("Source", "abd000")])]).unwrap();
            store.apply(&[Change::DeleteExecutions(vec!["b".into()])]).unwrap();
            let ids = |prefix: &str| -> Vec<String> {
                store.executions_with_revision(prefix, 10).unwrap().into_iter().map(|e| e.id.0).collect()
            };
            assert_eq!(ids("abc"), Vec::<String>::new());
            assert_eq!(ids("abd"), ["a"]);
            assert_eq!(ids("ff"), Vec::<String>::new());
            store.apply(&[Change::DeletePipeline("odd".into())]).unwrap();
            let left: Vec<String> = store.executions_with_revision("", 10).unwrap().into_iter().map(|e| e.id.0).collect();
            assert_eq!(left, ["c", "a"], "a (abd000) and c (def456) remain");
        }
    }

    /// How long the revision flow's query takes at 20 000 executions, through
    /// the index and as the JSON scan it replaced did (figures in the issue's
    /// notes): `cargo test -p sluice --lib revision_queries_at_scale -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check: fills 20 000 executions"]
    fn revision_queries_at_scale() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        let revision = |i: u64| {
            let h = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!("{h:016x}{:016x}{:08x}", h.rotate_left(17) ^ i, i)
        };
        for chunk in (0..20_000u64).collect::<Vec<_>>().chunks(1000) {
            let changes: Vec<Change> = chunk
                .iter()
                .map(|&i| {
                    let mut change = carrying(&format!("e{i:05}"), i, &format!("p{}", i % 20), &[("Source", &revision(i))]);
                    // Some weight to each state, as real ones have: variables to parse.
                    if let Change::Execution(e) = &mut change {
                        std::sync::Arc::make_mut(e).variables =
                            (0..10).map(|v| (format!("VAR{v}"), "x".repeat(40))).collect();
                    }
                    change
                })
                .collect();
            store.apply(&changes).unwrap();
        }
        let scan = |prefix: &str, limit: usize| {
            let sql = "SELECT state FROM executions WHERE EXISTS (
                 SELECT 1 FROM json_each(executions.state, '$.sourceRevisions') AS r
                 WHERE substr(json_extract(r.value, '$.revisionId'), 1, length(?1)) = ?1)
             ORDER BY started_at DESC, id DESC LIMIT ?2";
            store.query_json::<Execution>(sql, params![prefix, limit as i64], "execution").unwrap()
        };
        let one = revision(12_345);
        for (what, prefix, limit) in
            [("a prefix matching nothing", "zzzz", 500), ("one revision", &one[..12], 500), ("the newest 500", "", 500)]
        {
            let t = std::time::Instant::now();
            let old = scan(prefix, limit);
            let before = t.elapsed();
            let t = std::time::Instant::now();
            let new = store.executions_with_revision(prefix, limit).unwrap();
            let after = t.elapsed();
            assert_eq!(old.iter().map(|e| &e.id).collect::<Vec<_>>(), new.iter().map(|e| &e.id).collect::<Vec<_>>());
            println!("{what}: {} executions; JSON scan {before:?}, index {after:?}", new.len());
        }
    }

    #[test]
    fn a_prefix_ends_before_the_first_string_it_does_not_start() {
        assert_eq!(prefix_end("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"), "surrogates are no characters");
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
        // Every string starting with the prefix sorts below the end, as SQLite sorts them.
        for s in ["abc", "abc\u{10FFFF}\u{10FFFF}", "abcz"] {
            assert!(s.as_bytes() < prefix_end("abc").unwrap().as_bytes());
        }
    }

    #[test]
    fn a_log_position_says_where_a_job_log_ends() {
        for fresh in backends("a_log_position_says_where_a_job_log_ends") {
            let mut store = fresh.open();
            assert_eq!(store.log_position("e", "j", "[cut").unwrap(), (None, 0, false));
            let line = |job: &str, seq: u64, text: &str| {
                Change::Log(LogLine { job_id: job.into(), execution_id: "e".into(), seq, text: text.into() })
            };
            store.apply(&[line("j", 0, "héllo\n"), line("j", 1, "[cut here]\n"), line("k", 9, "other\n")]).unwrap();
            assert_eq!(store.log_position("e", "j", "[cut").unwrap(), (Some(1), 18, true));
            assert_eq!(store.log_position("e", "k", "[cut").unwrap(), (Some(9), 6, false));
        }
    }

    // Data lifecycle (issue 17, life).
    #[test]
    fn retention_deletes_ended_executions_with_their_logs_and_never_a_running_one() {
        for fresh in backends("retention_deletes_ended_executions_with_their_logs_and_never_a_running_one") {
            let mut store = fresh.open();
            let line = |execution: &str| {
                Change::Log(LogLine { job_id: "j".into(), execution_id: execution.into(), seq: 0, text: "x\n".into() })
            };
            let mut other = execution("o", ExecutionStatus::Failed, 1);
            other.pipeline = "api".into();
            let mut old = execution("old", ExecutionStatus::Succeeded, 1);
            let stage = |name: &str, status| crate::engine::StageRun {
                name: name.into(),
                status: Some(status),
                actions: vec![],
                rules: vec![],
                passed: vec![],
                auto_retried: false,
            };
            old.stages = vec![
                stage("Build", crate::engine::StageStatus::Succeeded),
                stage("Deploy", crate::engine::StageStatus::Failed),
            ];
            store
                .apply(&[
                    Change::Execution(std::sync::Arc::new(old)),
                    Change::Execution(std::sync::Arc::new(execution("running", ExecutionStatus::InProgress, 2))),
                    Change::Execution(std::sync::Arc::new(execution("new", ExecutionStatus::Failed, 3))),
                    Change::Execution(std::sync::Arc::new(other)),
                    line("old"),
                    line("running"),
                    line("new"),
                    Change::StartRequest { pipeline: "web".into(), token: "t-old".into(), execution_id: "old".into() },
                    Change::StartRequest {
                        pipeline: "web".into(),
                        token: "t-running".into(),
                        execution_id: "running".into(),
                    },
                ])
                .unwrap();
            let ages = store.execution_ages(Some("web")).unwrap();
            let seen: Vec<(&str, &str, bool)> = ages.iter().map(|(p, a)| (p.as_str(), a.id.as_str(), a.ended)).collect();
            assert_eq!(seen, [("web", "new", true), ("web", "running", false), ("web", "old", true)]);
            assert_eq!(ages[2].1.succeeded, ["Build"], "the stages that succeeded: rollback targets");
            assert!(ages[0].1.succeeded.is_empty());
            assert_eq!(store.execution_ages(None).unwrap().len(), 4);
            store.apply(&[Change::DeleteExecutions(vec!["old".into(), "running".into()])]).unwrap();
            assert!(store.execution(&ExecutionId("old".into())).unwrap().is_none());
            assert!(store.logs("old").unwrap().is_empty());
            assert!(store.execution(&ExecutionId("running".into())).unwrap().is_some(), "a running execution stays");
            assert_eq!(store.logs("running").unwrap().len(), 1);
            assert_eq!(store.logs("new").unwrap().len(), 1);
            // A client request token of a removed execution names nothing any more.
            assert_eq!(store.start_request("web", "t-old").unwrap(), None);
            assert_eq!(store.start_request("web", "t-running").unwrap(), Some("running".into()));
        }
    }

    // The audit log (issue 15, gov).
    #[test]
    fn audit_records_chain_filter_prune_and_commit_with_their_step() {
        for fresh in backends("audit_records_chain_filter_prune_and_commit_with_their_step") {
            use crate::audit::{Entry, Filter, Head, Verifier};
            let mut store = fresh.open();
            let mut head = Head::default();
            let entry = |user: &str, resource: &str| Entry {
                user: user.into(),
                operation: "GetPipeline".into(),
                resource: resource.into(),
                ..Entry::default()
            };
            // A step's writes are visible inside it, and commit with its record.
            store.begin_step().unwrap();
            let record = PipelineRecord {
                name: "web".into(),
                version: 1,
                definition: "{}".into(),
                created_at: 1,
                updated_at: 1,
                author: "ann".into(),
            };
            store.apply(&[Change::Pipeline(record)]).unwrap();
            assert!(store.pipeline("web", Some(1)).unwrap().is_some());
            let record = head.append(1_000, entry("ann", "pipeline/web"));
            store.apply(&[Change::Audit(Box::new(record))]).unwrap();
            store.end_step().unwrap();
            for (i, (user, resource)) in
                [("bob", "pipeline/web/Deploy/Approve"), ("ann", "pipeline/webby"), ("bob", "secret/x")]
                    .into_iter()
                    .enumerate()
            {
                store
                    .apply(&[Change::Audit(Box::new(head.append(2_000 + i as u64 * 1_000, entry(user, resource))))])
                    .unwrap();
            }
            let all = |store: &dyn Store, f: Filter| store.audit_records(&Filter { limit: 100, ..f }).unwrap();
            assert_eq!(all(&*store, Filter::default()).len(), 4);
            let web = all(&*store, Filter { pipeline: Some("web".into()), ..Filter::default() });
            assert_eq!(web.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(), [1, 2]);
            let bob = all(&*store, Filter { user: Some("bob".into()), since: Some(3_000), ..Filter::default() });
            assert_eq!(bob.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(), [4]);
            let newest = store.audit_records(&Filter { limit: 2, newest: true, ..Filter::default() }).unwrap();
            assert_eq!(newest.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(), [3, 4]);
            // The page before it (issue 16, pages: the console's paging).
            let older =
                store.audit_records(&Filter { limit: 2, newest: true, before_seq: Some(3), ..Filter::default() }).unwrap();
            assert_eq!(older.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(store.audit_head().unwrap(), head.0);

            // The controller cannot change a record, nor delete one it did not prune.
            fresh.refuses("UPDATE audit_log SET via = 'x' WHERE seq = 2");
            fresh.refuses("DELETE FROM audit_log WHERE seq = 2");

            // Pruning keeps the last pruned record's hash: the rest verifies from it.
            let point = store.audit_prune_point(2_500).unwrap().unwrap();
            assert_eq!(point.seq, 2);
            store.apply(&[Change::PruneAudit(point.clone())]).unwrap();
            assert_eq!(store.audit_anchor().unwrap(), point);
            let mut verifier = Verifier::new(store.audit_anchor().unwrap());
            for (record, hash) in all(&*store, Filter::default()) {
                verifier.feed(&record, &hash).unwrap();
            }
            assert_eq!(verifier.count(), 2);
        }
    }

    #[test]
    fn one_jobs_lines_after_a_sequence_number_come_by_the_index_and_a_limit() {
        for fresh in backends("one_jobs_lines_after_a_sequence_number_come_by_the_index_and_a_limit") {
            let mut store = fresh.open();
            let log = |job: &str, seq: u64| {
                Change::Log(LogLine { job_id: job.into(), execution_id: "e1".into(), seq, text: format!("{job} {seq}\n") })
            };
            let mut changes: Vec<Change> = (0..10).map(|n| log("e1.0.0.1", n)).collect();
            changes.extend((0..3).map(|n| log("e1.0.0.2", n)));
            store.apply(&changes).unwrap();
            let seqs = |lines: Vec<LogLine>| lines.iter().map(|l| l.seq).collect::<Vec<_>>();
            assert_eq!(seqs(store.job_logs("e1", "e1.0.0.1", None, 100).unwrap()), (0..10).collect::<Vec<_>>());
            assert_eq!(seqs(store.job_logs("e1", "e1.0.0.1", Some(6), 100).unwrap()), [7, 8, 9]);
            assert_eq!(seqs(store.job_logs("e1", "e1.0.0.1", Some(2), 2).unwrap()), [3, 4], "at most the limit");
            assert!(store.job_logs("e1", "e1.0.0.1", Some(9), 100).unwrap().is_empty());
            assert!(store.job_logs("e1", "e1.0.0.1", Some(u64::MAX), 100).unwrap().is_empty());
            assert_eq!(store.job_logs("e1", "e1.0.0.2", None, 100).unwrap().len(), 3, "only that job's");
            assert!(store.job_logs("e2", "e1.0.0.1", None, 100).unwrap().is_empty(), "only that execution's");
            // The read is a range of the index, not a scan of the execution's log.
            if fresh.location != Location::Sqlite {
                continue;
            }
            let conn = Connection::open(fresh.dir.path().join("sluice.db")).unwrap();
            let plan: String = conn
                .query_row(
                    "EXPLAIN QUERY PLAN SELECT job_id, execution_id, seq, text FROM logs
                     WHERE execution_id = 'e1' AND job_id = 'j' AND seq > 3 ORDER BY seq LIMIT 5",
                    [],
                    |r| r.get(3),
                )
                .unwrap();
            assert!(plan.contains("logs_by_job"), "{plan}");
        }
    }

    // Scale (issue 19, scale).
    /// What SQLite plans for `sql`: every line of `EXPLAIN QUERY PLAN`.
    fn plan(store: &SqliteStore, sql: &str, args: impl rusqlite::Params) -> String {
        let mut stmt = store.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let lines: Vec<String> = stmt.query_map(args, |r| r.get(3)).unwrap().map(Result::unwrap).collect();
        lines.join("; ")
    }

    #[test]
    fn the_queries_of_listings_and_start_up_read_ranges_of_indexes_never_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        // Enough rows, and statistics, for the planner to weigh its options
        // as it would on a large store.
        let mut changes = Vec::new();
        for i in 0..2000u64 {
            let mut e = execution(&format!("e{i:05}"), ExecutionStatus::Succeeded, i / 2);
            e.pipeline = format!("p{}", i % 20);
            changes.push(Change::Execution(std::sync::Arc::new(e)));
        }
        store.apply(&changes).unwrap();
        store.conn.execute_batch("ANALYZE").unwrap();
        let scans = |p: &str| p.contains("SCAN executions") || p.contains("TEMP B-TREE");
        let history = plan(&store, HISTORY, params!["p1", 20]);
        assert!(history.contains("executions_by_pipeline_page") && !scans(&history), "{history}");
        let deep = plan(&store, HISTORY_BEFORE, params!["p1", 10, "e00020", 20]);
        assert!(deep.contains("executions_by_pipeline_page (pipeline=? AND (started_at,id)<(?,?))"), "{deep}");
        assert!(!scans(&deep), "{deep}");
        let unfinished = plan(&store, UNFINISHED, []);
        assert!(unfinished.contains("executions_by_status") && !unfinished.contains("SCAN executions"), "{unfinished}");
        let page = plan(&store, PIPELINE_HEADS_AFTER, params!["p1", 10]);
        assert!(
            page.contains("USING PRIMARY KEY (name>?)")
                || page.contains("USING INDEX sqlite_autoindex_pipelines_1 (name>?)"),
            "{page}"
        );
        assert!(!page.contains("TEMP B-TREE"), "{page}");
        let artifacts = plan(&store, ARTIFACTS_IN_USE, []);
        assert!(artifacts.contains("execution_artifacts") && !artifacts.contains("executions "), "{artifacts}");
    }

    #[test]
    fn pages_of_a_history_with_equal_start_times_neither_skip_nor_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        // Three executions share each start time: the id breaks the tie.
        let changes: Vec<Change> = (0..30u64)
            .map(|i| Change::Execution(std::sync::Arc::new(execution(&format!("e{i:02}"), ExecutionStatus::Failed, i / 3))))
            .collect();
        store.apply(&changes).unwrap();
        let mut seen = Vec::new();
        let mut page = store.executions("web", 4).unwrap();
        while !page.is_empty() {
            seen.extend(page.iter().map(|e| e.id.0.clone()));
            let last = page.last().unwrap();
            page = store.executions_before("web", (last.started_at, &last.id.0), 4).unwrap();
        }
        let newest_first: Vec<String> = (0..30).rev().map(|i| format!("e{i:02}")).collect();
        assert_eq!(seen, newest_first);
    }

    #[test]
    fn pipeline_heads_are_the_latest_versions_without_their_declarations() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        let version = |name: &str, version: u64, updated: u64| {
            Change::Pipeline(PipelineRecord {
                name: name.into(),
                version,
                definition: format!("{{\"v\":{version}}}"),
                created_at: 1,
                updated_at: updated,
                author: String::new(),
            })
        };
        store.apply(&[version("web", 1, 10), version("web", 3, 30), version("web", 2, 20), version("api", 1, 5)]).unwrap();
        let heads = store.pipeline_heads_after(None, 10).unwrap();
        let expected = |name: &str, version: u64, updated_at: u64| PipelineHead {
            name: name.into(),
            version,
            created_at: 1,
            updated_at,
        };
        assert_eq!(heads, [expected("api", 1, 5), expected("web", 3, 30)]);
        // The latest declarations, read whole, agree.
        let latest: Vec<PipelineHead> = store.pipelines().unwrap().iter().map(PipelineHead::from).collect();
        assert_eq!(heads, latest);
    }

    /// Pages of heads (issue 19): ranges by name in byte order, each name
    /// once at its latest version, alike on both backends.
    #[test]
    fn pages_of_pipeline_heads_are_ranges_of_names_at_their_latest_versions() {
        for fresh in backends("pages_of_pipeline_heads_are_ranges_of_names") {
            let mut store = fresh.open();
            // Byte order, not a locale's: upper case before lower, `-` before digits.
            let names = ["Zed", "a-b", "a0", "ab", "b", "é"];
            let mut changes = Vec::new();
            for (i, name) in names.iter().enumerate() {
                for version in 1..=(i as u64 % 3 + 1) {
                    changes.push(Change::Pipeline(PipelineRecord {
                        name: name.to_string(),
                        version,
                        definition: "{}".into(),
                        created_at: 1,
                        updated_at: version * 10,
                        author: String::new(),
                    }));
                }
            }
            store.apply(&changes).unwrap();
            // What the pages must add up to: the latest declarations, read whole.
            let all: Vec<PipelineHead> = store.pipelines().unwrap().iter().map(PipelineHead::from).collect();
            assert_eq!(all.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), names, "{}", fresh.location);
            for (i, head) in all.iter().enumerate() {
                assert_eq!(head.version, i as u64 % 3 + 1, "the latest version of {}", head.name);
            }
            assert_eq!(store.pipeline_heads_after(None, 100).unwrap(), all, "{}", fresh.location);
            for limit in 1..=names.len() {
                let mut paged = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = store.pipeline_heads_after(after.as_deref(), limit).unwrap();
                    assert!(page.len() <= limit);
                    let Some(last) = page.last() else { break };
                    after = Some(last.name.clone());
                    paged.extend(page);
                }
                assert_eq!(paged, all, "{} limit {limit}", fresh.location);
            }
            assert_eq!(store.pipeline_heads_after(Some("ab"), 1).unwrap()[0].name, "b");
            assert!(store.pipeline_heads_after(Some("é"), 10).unwrap().is_empty());
        }
    }

    /// On each backend (issue 19, scale): the collection's listing runs on a
    /// thread of its own, with a connection of its own, and sees what was
    /// committed before it ran.
    #[test]
    fn the_artifacts_in_use_are_listed_off_the_driver_on_every_backend() {
        for fresh in backends("off_driver") {
            let mut store = fresh.open();
            let with = |id: &str, digest: &str| {
                let mut e = execution(id, ExecutionStatus::Succeeded, 1);
                e.artifacts.insert("a".into(), crate::engine::ArtifactRef { digest: digest.to_string(), size: 1 });
                Change::Execution(std::sync::Arc::new(e))
            };
            store.apply(&[with("a", "d1")]).unwrap();
            let listing = store.artifact_digests_off_driver();
            store.apply(&[with("b", "d2")]).unwrap();
            let off = std::thread::spawn(listing).join().unwrap().unwrap();
            let both: std::collections::HashSet<String> = ["d1".to_string(), "d2".to_string()].into();
            assert_eq!(off, both, "{}", fresh.location);
            assert_eq!(store.artifact_digests().unwrap(), both, "{}", fresh.location);
        }
    }

    #[test]
    fn the_artifacts_in_use_follow_executions_as_they_are_written_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("sluice.db"), Durability::Process).unwrap();
        let with = |id: &str, pipeline: &str, digests: &[&str]| {
            let mut e = execution(id, ExecutionStatus::Succeeded, 1);
            e.pipeline = pipeline.into();
            for (i, d) in digests.iter().enumerate() {
                e.artifacts.insert(format!("a{i}"), crate::engine::ArtifactRef { digest: d.to_string(), size: 1 });
            }
            Change::Execution(std::sync::Arc::new(e))
        };
        store.apply(&[with("a", "web", &["d1"]), with("b", "api", &["d2", "d3"]), with("c", "web", &["d1"])]).unwrap();
        // Written again with one more artifact, as an execution grows.
        store.apply(&[with("a", "web", &["d1", "d4"])]).unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<std::collections::HashSet<_>>();
        assert_eq!(store.artifact_digests().unwrap(), set(&["d1", "d2", "d3", "d4"]));
        store.apply(&[Change::DeleteExecutions(vec!["a".into()])]).unwrap();
        assert_eq!(store.artifact_digests().unwrap(), set(&["d1", "d2", "d3"]), "c still refers to d1");
        store.apply(&[Change::DeletePipeline("api".into())]).unwrap();
        assert_eq!(store.artifact_digests().unwrap(), set(&["d1"]));
        // Read off the driver (issue 19, scale): its own connection, on
        // another thread, sees what was committed before it ran.
        let listing = store.artifact_digests_off_driver();
        store.apply(&[with("d", "web", &["d5"])]).unwrap();
        let off = std::thread::spawn(listing).join().unwrap().unwrap();
        assert_eq!(off, set(&["d1", "d5"]));
        // A store that cannot be read says so instead of keeping nothing.
        let gone = store.artifact_digests_off_driver();
        drop(store);
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert!(gone().is_err(), "a listing of a removed store must fail, or the collection would remove everything");
    }
}
