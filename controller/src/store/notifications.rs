//! The notification tables: rules (their target URLs and signing secrets
//! sealed) and the outbox of deliveries. The driver writes rules and new
//! deliveries in its step's transaction ([`NotificationChange`]); the
//! delivery task reads due deliveries and records attempts through a
//! connection of its own ([`Outbox`]). Issue 15, notify.

use anyhow::{Context as _, Result};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notification_rules (id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notification_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule_id TEXT NOT NULL, target INTEGER NOT NULL, pipeline TEXT NOT NULL,
    event_type TEXT NOT NULL, execution_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    last_error TEXT, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notification_deliveries_by_rule ON notification_deliveries (rule_id, id);
";

/// A target of a rule as stored: its URL and (webhooks) signing secret
/// sealed by the controller's secret box, bound to the rule and target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTarget {
    /// `Webhook` or `Slack`.
    pub target_type: String,
    /// Scheme and host: what lists show.
    pub display: String,
    /// Base64 of the sealed URL.
    pub sealed_address: String,
    /// Base64 of the sealed signing secret (webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRuleRecord {
    pub id: String,
    pub name: String,
    pub pipeline: String,
    pub event_types: Vec<String>,
    pub targets: Vec<StoredTarget>,
    pub created_at: u64,
    pub created_by: String,
}

/// A delivery as first written: pending, due at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub rule_id: String,
    pub target: u32,
    pub pipeline: String,
    pub event_type: String,
    pub execution_id: String,
    pub payload: String,
    pub created_at: u64,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub rule_id: String,
    pub target: u32,
    pub pipeline: String,
    pub event_type: String,
    pub execution_id: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_error: Option<String>,
    pub payload: String,
}

/// The notification changes of a driver step.
#[derive(Debug, Clone)]
pub enum NotificationChange {
    Rule(NotificationRuleRecord),
    /// A rule and every delivery of it.
    DeleteRule(String),
    Delivery(NewDelivery),
    /// A delivery back to pending, attempts reset, due `at`.
    Redeliver {
        id: i64,
        at: u64,
    },
}

pub(super) fn apply(tx: &Connection, change: &NotificationChange) -> Result<()> {
    match change {
        NotificationChange::Rule(r) => {
            tx.prepare_cached("INSERT OR REPLACE INTO notification_rules (id, pipeline, record) VALUES (?1, ?2, ?3)")?
                .execute(params![r.id, r.pipeline, serde_json::to_string(r)?])?;
        }
        NotificationChange::DeleteRule(id) => {
            tx.prepare_cached("DELETE FROM notification_deliveries WHERE rule_id = ?1")?.execute([id])?;
            tx.prepare_cached("DELETE FROM notification_rules WHERE id = ?1")?.execute([id])?;
        }
        NotificationChange::Delivery(d) => {
            tx.prepare_cached(
                "INSERT INTO notification_deliveries (rule_id, target, pipeline, event_type, execution_id, status, attempts,
                 next_attempt_at, created_at, updated_at, last_error, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, NULL, ?7)",
            )?
            .execute(params![
                d.rule_id,
                d.target,
                d.pipeline,
                d.event_type,
                d.execution_id,
                d.created_at as i64,
                d.payload
            ])?;
        }
        NotificationChange::Redeliver { id, at } => {
            tx.prepare_cached(
                "UPDATE notification_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, created_at = ?2,
                 updated_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, *at as i64])?;
        }
    }
    Ok(())
}

/// With a pipeline go its rules and their deliveries.
pub(super) fn delete_pipeline(tx: &Connection, pipeline: &str) -> Result<()> {
    tx.prepare_cached("DELETE FROM notification_deliveries WHERE pipeline = ?1")?.execute([pipeline])?;
    tx.prepare_cached("DELETE FROM notification_rules WHERE pipeline = ?1")?.execute([pipeline])?;
    Ok(())
}

pub(super) fn rules(conn: &Connection) -> Result<Vec<NotificationRuleRecord>> {
    let mut stmt = conn.prepare_cached("SELECT record FROM notification_rules ORDER BY pipeline, id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
}

fn rule(conn: &Connection, id: &str) -> Result<Option<NotificationRuleRecord>> {
    let record: Option<String> = conn
        .prepare_cached("SELECT record FROM notification_rules WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    record.map(|r| Ok(serde_json::from_str(&r)?)).transpose()
}

/// The oldest pending delivery of each rule's target.
pub(super) const HEADS: &str =
    "SELECT MIN(id) FROM notification_deliveries WHERE status = 'pending' GROUP BY rule_id, target";

pub(super) const COLUMNS: &str =
    "id, rule_id, target, pipeline, event_type, execution_id, status, attempts, next_attempt_at, created_at,
    updated_at, last_error, payload";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.get(0)?,
        rule_id: r.get(1)?,
        target: r.get(2)?,
        pipeline: r.get(3)?,
        event_type: r.get(4)?,
        execution_id: r.get(5)?,
        status: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get::<_, i64>(8)? as u64,
        created_at: r.get::<_, i64>(9)? as u64,
        updated_at: r.get::<_, i64>(10)? as u64,
        last_error: r.get(11)?,
        payload: r.get(12)?,
    })
}

/// Deliveries newest first, of one rule and/or in one status.
pub(super) fn deliveries(
    conn: &Connection,
    rule_id: Option<&str>,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notification_deliveries
         WHERE (?1 IS NULL OR rule_id = ?1) AND (?2 IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![rule_id, status, limit as i64], delivery_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn delivery(conn: &Connection, id: i64) -> Result<Option<DeliveryRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM notification_deliveries WHERE id = ?1"))?
        .query_row([id], delivery_row)
        .optional()?)
}

/// The delivery task's own connection to the store: reads what is due and
/// records what attempts came to, beside the driver's connection (SQLite's
/// WAL lets both; each write is one short transaction). On PostgreSQL
/// (issue 18, pg) a connection of its own to the same database.
pub struct Outbox {
    backend: Backend,
    /// In a cluster (issue 18, hafix): the leader's fence, checked by every
    /// write of a PostgreSQL outbox as the store's writes are.
    fence: Option<super::Fence>,
}

enum Backend {
    Sqlite(Connection),
    Postgres(super::postgres::conn::Conn),
}

/// Undelivered rows kept per rule, at most: a receiver that is down for
/// long does not grow the store without bound (the oldest go first).
pub const MAX_UNDELIVERED_PER_RULE: i64 = 1000;
/// Delivered rows are kept this long, dead letters a week.
pub const KEEP_DELIVERED_MS: u64 = 24 * 3600 * 1000;
pub const KEEP_DEAD_MS: u64 = 7 * 24 * 3600 * 1000;

impl Outbox {
    pub fn open(path: &Path) -> Result<Self> {
        let conn =
            Connection::open(path).with_context(|| format!("opening the store {} for notifications", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA).context("creating the notification tables")?;
        Ok(Self { backend: Backend::Sqlite(conn), fence: None })
    }

    /// The outbox of a PostgreSQL store (whose schema `PgStore::open` made).
    pub fn open_postgres(url: &str) -> Result<Self> {
        let config = super::postgres::parse_url(url)?;
        let conn = super::postgres::conn::Conn::connect(&config, "outbox")
            .with_context(|| format!("connecting to the store {} for notifications", super::postgres::redact(url)))?;
        Ok(Self { backend: Backend::Postgres(conn), fence: None })
    }

    /// From now on every write checks `fence` against the lease row (a
    /// PostgreSQL outbox; SQLite has no lease) and fails with
    /// [`super::Fenced`] when another controller leads.
    pub fn set_fence(&mut self, fence: Option<super::Fence>) -> Result<()> {
        if let (Backend::Postgres(conn), Some(_)) = (&self.backend, &fence) {
            let idle = super::postgres::IDLE_IN_TRANSACTION;
            conn.batch(&format!("SET idle_in_transaction_session_timeout = '{idle}'"))?;
        }
        self.fence = fence;
        Ok(())
    }

    /// The head of each target's queue (its oldest pending delivery) when
    /// it is due by `now`, the longest due first. A target gets its
    /// deliveries in order, one at a time: while its head waits out a
    /// backoff the rest wait too (a receiver that is down is not hammered),
    /// and a target with a long queue does not crowd the others out.
    pub fn due(&self, now: u64, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(conn) => return super::postgres::outbox::due(conn, now, limit),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notification_deliveries WHERE id IN ({HEADS}) AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now as i64, limit as i64], delivery_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the first head of a queue is next due.
    pub fn next_due(&self) -> Result<Option<u64>> {
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(conn) => return super::postgres::outbox::next_due(conn),
        };
        let at: Option<i64> = conn
            .prepare_cached(&format!("SELECT MIN(next_attempt_at) FROM notification_deliveries WHERE id IN ({HEADS})"))?
            .query_row([], |r| r.get(0))?;
        Ok(at.map(|a| a.max(0) as u64))
    }

    pub fn rule(&self, id: &str) -> Result<Option<NotificationRuleRecord>> {
        match &self.backend {
            Backend::Sqlite(conn) => rule(conn, id),
            Backend::Postgres(conn) => super::postgres::outbox::rule(conn, id),
        }
    }

    /// Records an attempt: the delivery's new status, attempts, error and
    /// next due time. A row deleted meanwhile (its rule or pipeline went)
    /// is left gone.
    pub fn record(
        &self,
        id: i64,
        status: &str,
        attempts: u32,
        next_attempt_at: u64,
        error: Option<&str>,
        now: u64,
    ) -> Result<()> {
        let conn = match &self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(conn) => {
                let fence = self.fence.as_ref();
                return super::postgres::outbox::record(conn, fence, id, status, attempts, next_attempt_at, error, now);
            }
        };
        conn.prepare_cached(
            "UPDATE notification_deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5,
                 updated_at = ?6 WHERE id = ?1",
        )?
        .execute(params![id, status, attempts, next_attempt_at as i64, error, now as i64])?;
        Ok(())
    }

    /// Drops delivered rows after a day, dead letters after a week, and
    /// each rule's undelivered rows past [`MAX_UNDELIVERED_PER_RULE`];
    /// returns how many rows went.
    pub fn prune(&mut self, now: u64) -> Result<usize> {
        let conn = match &mut self.backend {
            Backend::Sqlite(conn) => conn,
            Backend::Postgres(conn) => return super::postgres::outbox::prune(conn, self.fence.as_ref(), now),
        };
        let tx = conn.transaction()?;
        let mut gone = tx.execute(
            "DELETE FROM notification_deliveries WHERE status = 'delivered' AND updated_at < ?1",
            [now.saturating_sub(KEEP_DELIVERED_MS) as i64],
        )?;
        gone += tx.execute(
            "DELETE FROM notification_deliveries WHERE status = 'dead' AND updated_at < ?1",
            [now.saturating_sub(KEEP_DEAD_MS) as i64],
        )?;
        gone += tx.execute(
            "DELETE FROM notification_deliveries WHERE status != 'delivered' AND id IN (
                 SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY rule_id ORDER BY id DESC) AS n
                                 FROM notification_deliveries WHERE status != 'delivered') WHERE n > ?1)",
            [MAX_UNDELIVERED_PER_RULE],
        )?;
        tx.commit()?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;

    fn delivery(rule: &str, target: u32, at: u64) -> Change {
        Change::Notification(NotificationChange::Delivery(NewDelivery {
            rule_id: rule.into(),
            target,
            pipeline: "web".into(),
            event_type: "codepipeline-pipeline-pipeline-execution-failed".into(),
            execution_id: "e".into(),
            payload: "{}".into(),
            created_at: at,
        }))
    }

    #[test]
    fn the_outbox_hands_out_one_due_delivery_per_target_and_records_attempts() {
        for fresh in crate::store::tests::backends("the_outbox_hands_out_one_due_delivery_per_target_and_records_attempts") {
            let mut store = fresh.open();
            let outbox = fresh.outbox();
            // A long queue for one target, one delivery for another, one not yet due.
            let mut changes: Vec<Change> = (0..5).map(|i| delivery("web:a", 0, 100 + i)).collect();
            changes.push(delivery("web:b", 0, 200));
            store.apply(&changes).unwrap();
            let due = outbox.due(1000, 64).unwrap();
            let got: Vec<(&str, u64)> = due.iter().map(|d| (d.rule_id.as_str(), d.created_at)).collect();
            assert_eq!(got, [("web:a", 100), ("web:b", 200)]);
            assert_eq!(outbox.due(150, 64).unwrap().len(), 1);

            // A failed attempt waits, and its queue with it; a dead one is kept.
            let (first, other) = (due[0].id, due[1].id);
            outbox.record(first, "pending", 1, 5000, Some("HTTP 503"), 1000).unwrap();
            outbox.record(other, "dead", 1, 1000, Some("HTTP 404"), 1000).unwrap();
            assert!(outbox.due(1000, 64).unwrap().is_empty(), "the queue waits behind its head");
            assert_eq!(outbox.next_due().unwrap(), Some(5000));
            outbox.record(first, "delivered", 2, 5000, None, 5000).unwrap();
            let next: Vec<u64> = outbox.due(5000, 64).unwrap().iter().map(|d| d.created_at).collect();
            assert_eq!(next, [101], "then the next in order");
            let dead = store.notification_deliveries(None, Some("dead"), 10).unwrap();
            assert_eq!((dead.len(), dead[0].last_error.as_deref()), (1, Some("HTTP 404")));

            // Redelivery makes it pending again, attempts reset.
            store.apply(&[Change::Notification(NotificationChange::Redeliver { id: other, at: 2000 })]).unwrap();
            let again = store.notification_delivery(other).unwrap().unwrap();
            assert_eq!((again.status.as_str(), again.attempts, again.next_attempt_at), ("pending", 0, 2000));

            // Deleting the rule deletes its deliveries; deleting the pipeline the rest.
            store.apply(&[Change::Notification(NotificationChange::DeleteRule("web:a".into()))]).unwrap();
            assert_eq!(store.notification_deliveries(None, None, 100).unwrap().len(), 1);
            store.apply(&[Change::DeletePipeline("web".into())]).unwrap();
            assert!(store.notification_deliveries(None, None, 100).unwrap().is_empty());
        }
    }

    #[test]
    fn pruning_drops_old_delivered_rows_and_caps_each_rule() {
        for fresh in crate::store::tests::backends("pruning_drops_old_delivered_rows_and_caps_each_rule") {
            let mut store = fresh.open();
            let mut outbox = fresh.outbox();
            let n = MAX_UNDELIVERED_PER_RULE as u64 + 5;
            let changes: Vec<Change> = (0..n).map(|i| delivery("web:a", 0, i)).chain([delivery("web:b", 0, 0)]).collect();
            store.apply(&changes).unwrap();
            let b = store.notification_deliveries(Some("web:b"), None, 1).unwrap()[0].id;
            outbox.record(b, "delivered", 1, 0, None, 10).unwrap();
            let now = 10 + KEEP_DELIVERED_MS + 1;
            assert_eq!(outbox.prune(now).unwrap(), 6);
            let left = store.notification_deliveries(Some("web:a"), None, 2000).unwrap();
            assert_eq!(left.len() as i64, MAX_UNDELIVERED_PER_RULE);
            assert_eq!(left.last().unwrap().created_at, 5, "the oldest went first");
            assert!(store.notification_deliveries(Some("web:b"), None, 10).unwrap().is_empty());
        }
    }
}
