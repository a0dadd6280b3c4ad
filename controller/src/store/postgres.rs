//! The PostgreSQL backend of [`Store`] (issue 18, pg): the same tables,
//! semantics and schema versioning as [`super::SqliteStore`], for
//! controllers that share one database (several controllers, one leader).
//!
//! - The schema is SQLite's, translated ([`ddl`]); its version is the row
//!   of `sluice_schema` (SQLite's `PRAGMA user_version`), with the same
//!   [`super::schema::CURRENT`] and the same refusal of a newer one.
//!   Creating and migrating hold an advisory lock, so controllers starting
//!   together do it once.
//! - A step ([`Store::begin_step`] .. [`Store::end_step`]) is one
//!   transaction, opened by its first write; each `apply` in it is a
//!   savepoint, as in SQLite. A batch of writes goes out pipelined: one
//!   round trip for `BEGIN`, the fence, the statements and `COMMIT`.
//! - [`Durability::Process`] commits with `synchronous_commit = off` (a
//!   killed controller loses nothing; a crash of the database server may
//!   lose its last moments of commits, as power loss does to SQLite
//!   without fsync); [`Durability::PowerLoss`] waits for the server's WAL
//!   flush.
//! - Fencing (seam 1): while [`PgStore::set_fence`] holds a fence, every
//!   write transaction runs `sluice_fence(holder, epoch)`, which takes the
//!   lease row `FOR SHARE` and aborts the transaction when its holder or
//!   epoch differ; the write fails with [`Fenced`]. The fence runs last,
//!   pipelined with the `COMMIT` (one batch, no client think-time between
//!   them): the share lock is held for the moment of the commit only, so a
//!   leader paused or cut off in the middle of a step never keeps a standby
//!   from taking the lease, nor its own renewal from going through. A
//!   takeover committed before the fence makes the fence fail; one after
//!   it waits for the COMMIT. The transaction of a fenced store that stays
//!   idle longer than [`IDLE_IN_TRANSACTION`] (a paused or partitioned
//!   leader) is ended by the server, so its row locks do not block the new
//!   leader.
//! - Several controllers may use one database (that is HA); which of them
//!   writes is the lease's business, not the store's.

use super::{
    AccessKeyRecord, AgentRecord, ApiTokenRecord, Change, Durability, JoinTokenRecord, LogLine, PipelineHead,
    PipelineRecord, PluginRecord, PluginSignatureRecord, PublisherRecord, RevocationRecord, SecretRecord, SeenRevision,
    Store, TransitionRecord, UserRecord, notifications, parse, prefix_end,
};
use crate::engine::{Execution, ExecutionId};
use anyhow::{Context as _, Result, bail};
use conn::{Conn, Write, w};
use tokio_postgres::Row;

pub(super) mod conn;
mod ddl;
pub(super) mod outbox;
mod writes;
// A throwaway cluster for tests (this crate's and the cross suites').
#[cfg(any(test, feature = "test-postgres"))]
pub mod throwaway;

pub use conn::{parse_url, redact};

/// The lease a controller believes it holds: its writes are refused once
/// the lease row says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

/// A write refused because the lease row no longer names this
/// controller's fence: another controller leads now. Nothing of the
/// refused transaction is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fenced: this controller's lease ({} at epoch {}) is gone, the lease is held by {found_holder:?} at epoch {found_epoch}", fence.holder, fence.epoch)]
pub struct Fenced {
    pub fence: Fence,
    pub found_holder: String,
    pub found_epoch: i64,
}

/// Where a step's transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// No step: each `apply` is its own transaction.
    None,
    /// A step whose first write has not come yet (no transaction open).
    Open,
    /// A step whose transaction is open (and fenced, if a fence is set).
    Writing,
}

/// How long a fenced store's transaction may stay idle before the server
/// ends it (and the session): shorter than the lease's TTL, so the row
/// locks of a leader paused mid-step are gone by the time a successor runs.
pub const IDLE_IN_TRANSACTION: &str = "2500ms";

pub struct PgStore {
    conn: Conn,
    /// Where it connected: the collection lists artifacts in use on a
    /// connection of its own (`artifact_digests_off_driver`).
    config: tokio_postgres::Config,
    fence: Option<Fence>,
    step: Step,
}

/// The advisory lock creating and migrating the schema hold (any number,
/// the same in every release): "sluice" in ASCII.
const SCHEMA_LOCK: i64 = 0x736c_7569_6365;

impl PgStore {
    /// Connects to the database of `url` and brings its schema to
    /// [`super::schema::CURRENT`] (creating it in an empty database).
    pub fn open(url: &str, durability: Durability) -> Result<Self> {
        let config = parse_url(url)?;
        let conn = Conn::connect(&config, "store").with_context(|| format!("connecting to the store {}", redact(url)))?;
        let sync = match durability {
            Durability::Process => "off",
            Durability::PowerLoss => "on",
        };
        conn.batch(&format!("SET synchronous_commit = {sync}"))?;
        let (from, to) = upgrade(&conn).with_context(|| format!("the store {}", redact(url)))?;
        if from != to {
            tracing::info!(from, to, store = %redact(url), "store schema migrated");
        }
        Ok(Self { conn, config, fence: None, step: Step::None })
    }

    /// From now on every write transaction checks `fence` against the
    /// lease row first (`None`: no check, as for a single controller).
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        let idle = if fence.is_some() { IDLE_IN_TRANSACTION } else { "0" };
        if let Err(e) = self.conn.batch(&format!("SET idle_in_transaction_session_timeout = '{idle}'")) {
            // The next write fails on the same connection and says why.
            tracing::warn!(error = %e, "setting the store session's idle-in-transaction timeout");
        }
        self.fence = fence;
    }

    /// The fence set, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Runs `writes` pipelined; the first error, [`Fenced`] when the fence
    /// refused the transaction.
    fn run(&self, writes: &[Write]) -> Result<()> {
        let results = self.conn.pipeline(writes);
        for (write, result) in writes.iter().zip(results) {
            if let Err(e) = result {
                return Err(self.error(e, &write.sql));
            }
        }
        Ok(())
    }

    fn error(&self, e: tokio_postgres::Error, sql: &str) -> anyhow::Error {
        if let (Some(db), Some(fence)) = (e.as_db_error(), &self.fence)
            && db.code().code() == ddl::FENCED_SQLSTATE
        {
            let found_epoch = db.hint().and_then(|h| h.parse().ok()).unwrap_or(-1);
            let found_holder = db.detail().unwrap_or_default().to_string();
            return Fenced { fence: fence.clone(), found_holder, found_epoch }.into();
        }
        anyhow::Error::from(e).context(format!("writing to the store: {}", sql.trim().lines().next().unwrap_or("")))
    }

    /// How a write transaction starts.
    fn begin(&self, writes: &mut Vec<Write>) {
        writes.push(w!("BEGIN"));
    }

    /// While fenced, the fence, then `COMMIT`: how a write transaction ends
    /// (in the same batch, see the module's doc).
    fn commit(&self, writes: &mut Vec<Write>) {
        if let Some(fence) = &self.fence {
            writes.push(w!("SELECT sluice_fence($1, $2)", fence.holder.clone(), fence.epoch));
        }
        writes.push(w!("COMMIT"));
    }

    fn rollback(&self) {
        if let Err(e) = self.conn.batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back a store transaction");
        }
    }

    fn query(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Vec<Row>> {
        self.conn.query(sql, params)
    }

    fn query_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<Vec<T>> {
        self.query(sql, params)?.iter().map(|r| parse(r.try_get::<_, &str>(0)?, what)).collect()
    }
}

/// Every artifact a stored execution refers to, from the executions' state.
fn artifacts_in_use(conn: &Conn) -> Result<std::collections::HashSet<String>> {
    let rows = conn
        .query("SELECT DISTINCT a.value ->> 'digest' FROM executions e, jsonb_each(e.state::jsonb -> 'artifacts') a", &[])?;
    Ok(rows.iter().filter_map(|r| r.get::<_, Option<String>>(0)).collect())
}

/// The schema version of the database (0: no sluice schema yet).
fn version(conn: &Conn) -> Result<u32> {
    let exists = conn.query_opt("SELECT to_regclass('sluice_schema') IS NOT NULL", &[])?;
    if !exists.map(|r| r.get::<_, bool>(0)).unwrap_or(false) {
        return Ok(0);
    }
    let Some(row) = conn.query_opt("SELECT version FROM sluice_schema WHERE id = 1", &[])? else { return Ok(0) };
    let version: i64 = row.get(0);
    u32::try_from(version).with_context(|| format!("schema version {version} is not one sluice writes"))
}

/// Creates or migrates the schema, in one transaction under the advisory
/// lock: another controller starting meanwhile waits, then finds it done.
/// A newer schema is refused and left untouched.
fn upgrade(conn: &Conn) -> Result<(u32, u32)> {
    use super::schema::CURRENT;
    conn.batch("BEGIN")?;
    let result = (|| {
        conn.query("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
        let found = version(conn)?;
        if found > CURRENT {
            bail!(
                "its schema version {found} is newer than this release's ({CURRENT}): it was written by a newer sluice; \
                 run that release, or restore a backup taken before the upgrade"
            );
        }
        // No PostgreSQL store predates version 2: a migration to a later
        // version runs here (for `found` < its version) before the schema.
        conn.batch(&ddl::schema()?).context("creating the store schema")?;
        conn.query(
            "INSERT INTO sluice_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
            &[&i64::from(CURRENT)],
        )?;
        Ok(found)
    })();
    match result {
        Ok(found) => {
            conn.batch("COMMIT").context("committing the schema")?;
            Ok((if found == 0 { CURRENT } else { found }, CURRENT))
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn pipeline_row(r: &Row) -> PipelineRecord {
    PipelineRecord {
        name: r.get(0),
        version: u(r.get(1)),
        definition: r.get(2),
        created_at: u(r.get(3)),
        updated_at: u(r.get(4)),
        author: r.get(5),
    }
}

fn head_row(r: &Row) -> PipelineHead {
    PipelineHead { name: r.get(0), version: u(r.get(1)), created_at: u(r.get(2)), updated_at: u(r.get(3)) }
}

fn anchor_row(r: &Row) -> crate::audit::Anchor {
    crate::audit::Anchor { seq: u(r.get(0)), hash: r.get(1) }
}

fn log_row(r: &Row) -> LogLine {
    LogLine { job_id: r.get(0), execution_id: r.get(1), seq: u(r.get(2)), text: r.get(3) }
}

fn limit(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

impl Store for PgStore {
    // Shared keys (issue 18, reach; the PostgreSQL side written by ha, which
    // needs it): a standalone transaction, fenced like every write, unless a
    // step's transaction is open.
    fn cluster_key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.conn.query_opt("SELECT value FROM cluster_keys WHERE name = $1", &[&name])?.map(|r| r.get(0)))
    }

    fn insert_cluster_key(&mut self, name: &str, value: &[u8], now: u64) -> Result<Vec<u8>> {
        let standalone = self.step != Step::Writing;
        let mut writes = Vec::new();
        if standalone {
            self.begin(&mut writes);
        }
        writes.push(w!(
            "INSERT INTO cluster_keys (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            name.to_string(),
            value.to_vec(),
            now as i64
        ));
        if standalone {
            self.commit(&mut writes);
        }
        if let Err(e) = self.run(&writes) {
            if standalone {
                self.rollback();
            }
            return Err(e);
        }
        self.cluster_key(name)?.with_context(|| format!("the cluster key {name:?} vanished from the store"))
    }

    fn postgres(&mut self) -> Option<&mut PgStore> {
        Some(self)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for change in changes {
            writes::statements(change, &mut body)?;
        }
        let mut writes = Vec::with_capacity(body.len() + 4);
        match self.step {
            Step::None => {
                self.begin(&mut writes);
                writes.extend(body);
                self.commit(&mut writes);
                // A failed statement aborted the transaction: the COMMIT
                // after it rolled it back.
                self.run(&writes)
            }
            Step::Open | Step::Writing => {
                if self.step == Step::Open {
                    self.begin(&mut writes);
                }
                writes.push(w!("SAVEPOINT sluice_apply"));
                writes.extend(body);
                writes.push(w!("RELEASE SAVEPOINT sluice_apply"));
                let result = self.run(&writes);
                self.step = match &result {
                    Ok(()) => Step::Writing,
                    // Nothing of the step may commit.
                    Err(e) if e.is::<Fenced>() => {
                        self.rollback();
                        Step::Open
                    }
                    // As SQLite's savepoint: this apply is undone, the step goes on.
                    Err(_)
                        if self.conn.batch("ROLLBACK TO SAVEPOINT sluice_apply; RELEASE SAVEPOINT sluice_apply").is_ok() =>
                    {
                        Step::Writing
                    }
                    Err(_) => {
                        self.rollback();
                        Step::Open
                    }
                };
                result
            }
        }
    }

    // The audit log (issue 15, gov).
    fn begin_step(&mut self) -> Result<()> {
        if self.step == Step::Writing {
            bail!("a store step is already open");
        }
        self.step = Step::Open;
        Ok(())
    }

    fn end_step(&mut self) -> Result<()> {
        let writing = self.step == Step::Writing;
        self.step = Step::None;
        if writing {
            let mut writes = Vec::new();
            self.commit(&mut writes);
            if let Err(e) = self.run(&writes) {
                // A fenced commit left its transaction aborted: end it.
                self.rollback();
                return Err(e.context("committing to the store"));
            }
        }
        Ok(())
    }

    fn audit_anchor(&self) -> Result<crate::audit::Anchor> {
        let found = self.conn.query_opt("SELECT seq, hash FROM audit_anchor WHERE id = 1", &[])?;
        Ok(found.as_ref().map(anchor_row).unwrap_or_default())
    }

    fn audit_head(&self) -> Result<crate::audit::Anchor> {
        match self.conn.query_opt("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[])? {
            Some(head) => Ok(anchor_row(&head)),
            None => self.audit_anchor(),
        }
    }

    fn audit_records(&self, f: &crate::audit::Filter) -> Result<Vec<(crate::audit::Record, String)>> {
        let order = if f.newest { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT seq, time, \"user\", via, operation, resource, result, message, source, request_id, hash
             FROM audit_log WHERE seq > $1 AND ($2::BIGINT IS NULL OR time >= $2) AND ($3::BIGINT IS NULL OR time < $3)
             AND ($4::TEXT IS NULL OR \"user\" = $4)
             AND ($5::TEXT IS NULL OR resource = 'pipeline/' || $5 OR substr(resource, 1, length($5) + 10) = 'pipeline/' || $5 || '/')
             AND ($6::TEXT IS NULL OR operation = $6)
             AND ($8::BIGINT IS NULL OR seq < $8)
             ORDER BY seq {order} LIMIT $7"
        );
        let rows = self.query(
            &sql,
            &[
                &(f.after_seq.min(i64::MAX as u64) as i64),
                &f.since.map(|t| t.min(i64::MAX as u64) as i64),
                &f.until.map(|t| t.min(i64::MAX as u64) as i64),
                &f.user,
                &f.pipeline,
                &f.operation,
                &limit(f.limit),
                &f.before_seq.map(|s| s.min(i64::MAX as u64) as i64),
            ],
        )?;
        let mut records: Vec<_> = rows
            .iter()
            .map(|r| {
                let record = crate::audit::Record {
                    seq: u(r.get(0)),
                    time: u(r.get(1)),
                    user: r.get(2),
                    via: r.get(3),
                    operation: r.get(4),
                    resource: r.get(5),
                    result: r.get(6),
                    message: r.get(7),
                    source: r.get(8),
                    request_id: r.get(9),
                };
                (record, r.get::<_, String>(10))
            })
            .collect();
        if f.newest {
            records.reverse();
        }
        Ok(records)
    }

    fn audit_hash(&self, seq: u64) -> Result<Option<String>> {
        let seq = seq.min(i64::MAX as u64) as i64;
        Ok(self.conn.query_opt("SELECT hash FROM audit_log WHERE seq = $1", &[&seq])?.map(|r| r.get(0)))
    }

    fn audit_prune_point(&self, before: u64) -> Result<Option<crate::audit::Anchor>> {
        let before = before.min(i64::MAX as u64) as i64;
        // As SQLite's: the record just before the oldest one young enough to keep.
        let row = self.conn.query_opt(
            "SELECT seq, hash FROM audit_log WHERE seq < COALESCE((SELECT MIN(seq) FROM audit_log WHERE time >= $1),
             (SELECT MAX(seq) + 1 FROM audit_log)) ORDER BY seq DESC LIMIT 1",
            &[&before],
        )?;
        Ok(row.as_ref().map(anchor_row))
    }

    fn pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let rows = self.query(
            "SELECT p.name, p.version, p.definition, p.created_at, p.updated_at, p.author FROM pipelines p
             WHERE p.version = (SELECT MAX(version) FROM pipelines q WHERE q.name = p.name) ORDER BY p.name",
            &[],
        )?;
        Ok(rows.iter().map(pipeline_row).collect())
    }

    fn pipeline_heads_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<PipelineHead>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self.query(
            "SELECT DISTINCT ON (name) name, version, created_at, updated_at FROM pipelines WHERE name > $1
             ORDER BY name, version DESC LIMIT $2",
            &[&after.unwrap_or(""), &limit],
        )?;
        Ok(rows.iter().map(head_row).collect())
    }

    fn pipeline(&self, name: &str, version: Option<u64>) -> Result<Option<PipelineRecord>> {
        let version = version.map(|v| v.min(i64::MAX as u64) as i64);
        let row = self.conn.query_opt(
            "SELECT name, version, definition, created_at, updated_at, author FROM pipelines
             WHERE name = $1 AND ($2::BIGINT IS NULL OR version = $2) ORDER BY version DESC LIMIT 1",
            &[&name, &version],
        )?;
        Ok(row.as_ref().map(pipeline_row))
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        Ok(self.query_json("SELECT state FROM executions WHERE id = $1", &[&id.0], "execution")?.pop())
    }

    fn executions(&self, pipeline: &str, n: usize) -> Result<Vec<Execution>> {
        self.query_json(
            "SELECT state FROM executions WHERE pipeline = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
            &[&pipeline, &limit(n)],
            "execution",
        )
    }

    fn executions_before(&self, pipeline: &str, before: (u64, &str), n: usize) -> Result<Vec<Execution>> {
        let started = before.0.min(i64::MAX as u64) as i64;
        self.query_json(
            "SELECT state FROM executions WHERE pipeline = $1 AND (started_at < $2 OR (started_at = $2 AND id < $3))
             ORDER BY started_at DESC, id DESC LIMIT $4",
            &[&pipeline, &started, &before.1, &limit(n)],
            "execution",
        )
    }

    fn executions_with_revision(&self, prefix: &str, n: usize) -> Result<Vec<Execution>> {
        // As SQLite's: a range of the revision key (TEXT COLLATE "C", so
        // bytewise), checked again with substr; never a LIKE pattern.
        let answer = |matching: &str| {
            format!(
                "SELECT e.state FROM (SELECT DISTINCT started_at, execution_id FROM execution_revisions WHERE {matching}
                     ORDER BY started_at DESC, execution_id DESC LIMIT $1) AS r
                 JOIN executions e ON e.id = r.execution_id ORDER BY r.started_at DESC, r.execution_id DESC"
            )
        };
        let n = limit(n);
        if prefix.is_empty() {
            return self.query_json(&answer("TRUE"), &[&n], "execution");
        }
        let starts = "revision >= $2::TEXT AND substr(revision, 1, length($2)) = $2";
        match prefix_end(prefix) {
            Some(end) => {
                self.query_json(&answer(&format!("{starts} AND revision < $3::TEXT")), &[&n, &prefix, &end], "execution")
            }
            None => self.query_json(&answer(starts), &[&n, &prefix], "execution"),
        }
    }

    fn unfinished_executions(&self) -> Result<Vec<Execution>> {
        self.query_json(
            "SELECT state FROM executions WHERE status IN ('InProgress', 'Stopping') ORDER BY started_at",
            &[],
            "execution",
        )
    }

    fn agents(&self) -> Result<Vec<AgentRecord>> {
        self.query_json("SELECT record FROM agents ORDER BY id", &[], "agent")
    }

    fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.query_json("SELECT record FROM agents WHERE id = $1", &[&id], "agent")?.pop())
    }

    fn join_token_by_hash(&self, secret_hash: &str) -> Result<Option<JoinTokenRecord>> {
        Ok(self.query_json("SELECT record FROM join_tokens WHERE secret_hash = $1", &[&secret_hash], "join token")?.pop())
    }

    fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.query_json("SELECT record FROM join_tokens ORDER BY id", &[], "join token")
    }

    fn plugins(&self) -> Result<Vec<PluginRecord>> {
        let rows =
            self.query("SELECT provider, version, digest, info, builtin FROM plugins ORDER BY provider, version", &[])?;
        Ok(rows
            .iter()
            .map(|r| PluginRecord {
                provider: r.get(0),
                version: r.get(1),
                digest: r.get(2),
                info: r.get(3),
                builtin: r.get::<_, i64>(4) != 0,
            })
            .collect())
    }

    fn logs(&self, execution_id: &str) -> Result<Vec<LogLine>> {
        let rows = self.query(
            "SELECT job_id, execution_id, seq, text FROM logs WHERE execution_id = $1 ORDER BY rowid",
            &[&execution_id],
        )?;
        Ok(rows.iter().map(log_row).collect())
    }

    fn job_logs(&self, execution_id: &str, job_id: &str, after: Option<u64>, n: u32) -> Result<Vec<LogLine>> {
        let after = after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
        let rows = self.query(
            "SELECT job_id, execution_id, seq, text FROM logs
             WHERE execution_id = $1 AND job_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            &[&execution_id, &job_id, &after, &i64::from(n)],
        )?;
        Ok(rows.iter().map(log_row).collect())
    }

    fn log_position(&self, execution_id: &str, job_id: &str, marker: &str) -> Result<(Option<u64>, u64, bool)> {
        let rows = self.query(
            "SELECT MAX(seq), COALESCE(SUM(octet_length(text)), 0)::BIGINT,
             COALESCE(bool_or(substr(text, 1, length($3::TEXT)) = $3), FALSE)
             FROM logs WHERE execution_id = $1 AND job_id = $2",
            &[&execution_id, &job_id, &marker],
        )?;
        let r = rows.first().context("the log position query returned no row")?;
        Ok((r.get::<_, Option<i64>>(0).map(u), u(r.get(1)), r.get(2)))
    }

    fn transitions(&self) -> Result<Vec<TransitionRecord>> {
        self.query_json("SELECT record FROM transitions ORDER BY pipeline, stage", &[], "transition")
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>> {
        let rows = self.query("SELECT name, sealed, created_at, updated_at, pipelines FROM secrets ORDER BY name", &[])?;
        rows.iter()
            .map(|r| {
                Ok(SecretRecord {
                    name: r.get(0),
                    sealed: r.get(1),
                    created_at: u(r.get(2)),
                    updated_at: u(r.get(3)),
                    pipelines: parse(r.get(4), "secret scope")?,
                })
            })
            .collect()
    }

    fn webhooks(&self) -> Result<Vec<(String, Vec<u8>, u64)>> {
        let rows = self.query("SELECT pipeline, sealed, created_at FROM webhooks", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), u(r.get(2)))).collect())
    }

    fn seen_revision(&self, pipeline: &str, action: &str, revision: &str) -> Result<Option<SeenRevision>> {
        Ok(self
            .query_json(
                "SELECT record FROM seen_revisions WHERE pipeline = $1 AND action = $2 AND revision = $3",
                &[&pipeline, &action, &revision],
                "seen revision",
            )?
            .pop())
    }

    fn latest_seen_revisions(&self, pipeline: &str) -> Result<Vec<SeenRevision>> {
        self.query_json(
            "SELECT DISTINCT ON (action) record FROM seen_revisions WHERE pipeline = $1 ORDER BY action, seen_at DESC",
            &[&pipeline],
            "seen revision",
        )
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.query_json("SELECT record FROM users ORDER BY name", &[], "user")
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.query_json("SELECT record FROM api_tokens ORDER BY id", &[], "API token")
    }

    fn revocations(&self) -> Result<Vec<RevocationRecord>> {
        self.query_json("SELECT record FROM revocations ORDER BY serial", &[], "revocation")
    }

    fn artifact_digests(&self) -> Result<std::collections::HashSet<String>> {
        artifacts_in_use(&self.conn)
    }

    fn artifact_digests_off_driver(&self) -> super::DigestListing {
        let config = self.config.clone();
        Box::new(move || {
            let conn =
                Conn::connect(&config, "collection").context("connecting to the store to list the artifacts in use")?;
            artifacts_in_use(&conn)
        })
    }

    fn publishers(&self) -> Result<Vec<PublisherRecord>> {
        self.query_json("SELECT record FROM publishers ORDER BY name", &[], "publisher")
    }

    fn plugin_signatures(&self) -> Result<Vec<PluginSignatureRecord>> {
        self.query_json("SELECT record FROM plugin_signatures ORDER BY digest", &[], "plugin signature")
    }

    fn action_types(&self) -> Result<Vec<crate::workers::ActionTypeRecord>> {
        self.query_json("SELECT record FROM action_types ORDER BY category, provider, version", &[], "action type")
    }

    fn unfinished_worker_jobs(&self) -> Result<Vec<crate::workers::WorkerJob>> {
        self.query_json("SELECT record FROM worker_jobs WHERE finished = 0 ORDER BY id", &[], "worker job")
    }

    fn worker_job(&self, id: &str) -> Result<Option<crate::workers::WorkerJob>> {
        Ok(self.query_json("SELECT record FROM worker_jobs WHERE id = $1", &[&id], "worker job")?.pop())
    }

    fn worker_job_by_key(&self, access_key_id: &str) -> Result<Option<crate::workers::WorkerJob>> {
        Ok(self
            .query_json("SELECT record FROM worker_jobs WHERE access_key_id = $1", &[&access_key_id], "worker job")?
            .pop())
    }

    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        self.query_json("SELECT record FROM access_keys ORDER BY id", &[], "access key")
    }

    fn start_request(&self, pipeline: &str, token: &str) -> Result<Option<String>> {
        let row = self
            .conn
            .query_opt("SELECT execution_id FROM start_requests WHERE pipeline = $1 AND token = $2", &[&pipeline, &token])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn tags(&self, resource: &str) -> Result<Vec<(String, String)>> {
        Ok(self.query_json("SELECT tags FROM tags WHERE resource = $1", &[&resource], "tag list")?.pop().unwrap_or_default())
    }

    fn webhook_definitions(&self) -> Result<Vec<(String, String)>> {
        let rows = self.query("SELECT pipeline, definition FROM webhook_definitions ORDER BY pipeline", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    // Notifications (issue 15, notify).
    fn notification_rules(&self) -> Result<Vec<notifications::NotificationRuleRecord>> {
        outbox::rules(&self.conn)
    }

    fn notification_deliveries(
        &self,
        rule_id: Option<&str>,
        status: Option<&str>,
        n: usize,
    ) -> Result<Vec<notifications::DeliveryRecord>> {
        outbox::deliveries(&self.conn, rule_id, status, n)
    }

    fn notification_delivery(&self, id: i64) -> Result<Option<notifications::DeliveryRecord>> {
        outbox::delivery(&self.conn, id)
    }

    // Permissions (issue 15, policy).
    fn directory_entries(&self) -> Result<Vec<(String, String, String)>> {
        let rows = self.query("SELECT kind, name, record FROM directory ORDER BY kind, name", &[])?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    // Data lifecycle (issue 17, life).
    // Pipelines that feed pipelines (issue 21, feed).
    fn feeds_consumed(&self, pipeline: &str) -> Result<Vec<super::FeedConsumed>> {
        self.query_json("SELECT record FROM feed_sets WHERE pipeline = $1 ORDER BY action", &[&pipeline], "fan-in set")
    }

    fn execution_ages(&self, pipeline: Option<&str>) -> Result<Vec<(String, crate::retention::Age)>> {
        let rows = self.query(
            "SELECT pipeline, id, status NOT IN ('InProgress', 'Stopping'), updated_at,
             COALESCE((SELECT json_agg(s ->> 'name') FROM jsonb_array_elements(e.state::jsonb -> 'stages') s
                       WHERE s ->> 'status' = 'Succeeded'), '[]')::TEXT
             FROM executions e WHERE $1::TEXT IS NULL OR pipeline = $1 ORDER BY pipeline, started_at DESC, id DESC",
            &[&pipeline],
        )?;
        rows.iter()
            .map(|r| {
                let age = crate::retention::Age {
                    id: r.get(1),
                    ended: r.get(2),
                    updated_at: u(r.get(3)),
                    succeeded: parse(r.get(4), "execution's stages")?,
                };
                Ok((r.get(0), age))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
