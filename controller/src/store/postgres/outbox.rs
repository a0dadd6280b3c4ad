//! The notification tables on PostgreSQL (issue 15's outbox, issue 18's
//! backend): the reads of [`crate::store::Store`] and the delivery task's
//! own connection ([`crate::store::notifications::Outbox`]).

use super::conn::{Conn, w};
use super::{Fence, Fenced, ddl};
use crate::store::notifications::{
    COLUMNS, DeliveryRecord, HEADS, KEEP_DEAD_MS, KEEP_DELIVERED_MS, MAX_UNDELIVERED_PER_RULE, NotificationRuleRecord,
};
use anyhow::Result;
use tokio_postgres::Row;

fn delivery_row(r: &Row) -> DeliveryRecord {
    DeliveryRecord {
        id: r.get(0),
        rule_id: r.get(1),
        target: r.get::<_, i64>(2).clamp(0, u32::MAX as i64) as u32,
        pipeline: r.get(3),
        event_type: r.get(4),
        execution_id: r.get(5),
        status: r.get(6),
        attempts: r.get::<_, i64>(7).clamp(0, u32::MAX as i64) as u32,
        next_attempt_at: r.get::<_, i64>(8).max(0) as u64,
        created_at: r.get::<_, i64>(9).max(0) as u64,
        updated_at: r.get::<_, i64>(10).max(0) as u64,
        last_error: r.get(11),
        payload: r.get(12),
    }
}

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

pub(in crate::store) fn rules(conn: &Conn) -> Result<Vec<NotificationRuleRecord>> {
    let rows = conn.query("SELECT record FROM notification_rules ORDER BY pipeline, id", &[])?;
    rows.iter().map(|r| Ok(serde_json::from_str(r.get(0))?)).collect()
}

pub(in crate::store) fn rule(conn: &Conn, id: &str) -> Result<Option<NotificationRuleRecord>> {
    let row = conn.query_opt("SELECT record FROM notification_rules WHERE id = $1", &[&id])?;
    row.map(|r| Ok(serde_json::from_str(r.get(0))?)).transpose()
}

pub(in crate::store) fn deliveries(
    conn: &Conn,
    rule_id: Option<&str>,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>> {
    let rows = conn.query(
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries
             WHERE ($1::TEXT IS NULL OR rule_id = $1) AND ($2::TEXT IS NULL OR status = $2) ORDER BY id DESC LIMIT $3"
        ),
        &[&rule_id, &status, &(limit.min(i64::MAX as usize) as i64)],
    )?;
    Ok(rows.iter().map(delivery_row).collect())
}

pub(in crate::store) fn delivery(conn: &Conn, id: i64) -> Result<Option<DeliveryRecord>> {
    let row = conn.query_opt(&format!("SELECT {COLUMNS} FROM notification_deliveries WHERE id = $1"), &[&id])?;
    Ok(row.as_ref().map(delivery_row))
}

pub(in crate::store) fn due(conn: &Conn, now: u64, limit: usize) -> Result<Vec<DeliveryRecord>> {
    let rows = conn.query(
        &format!(
            "SELECT {COLUMNS} FROM notification_deliveries WHERE id IN ({HEADS}) AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2"
        ),
        &[&i(now), &(limit.min(i64::MAX as usize) as i64)],
    )?;
    Ok(rows.iter().map(delivery_row).collect())
}

pub(in crate::store) fn next_due(conn: &Conn) -> Result<Option<u64>> {
    let row =
        conn.query_opt(&format!("SELECT MIN(next_attempt_at) FROM notification_deliveries WHERE id IN ({HEADS})"), &[])?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|a| a.max(0) as u64))
}

/// The fence's refusal as [`Fenced`], any other error as it is.
fn fenced(e: tokio_postgres::Error, fence: &Fence) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) if db.code().code() == ddl::FENCED_SQLSTATE => Fenced {
            fence: fence.clone(),
            found_holder: db.detail().unwrap_or_default().to_string(),
            found_epoch: db.hint().and_then(|h| h.parse().ok()).unwrap_or(-1),
        }
        .into(),
        _ => anyhow::Error::from(e).context("writing to the notification outbox"),
    }
}

/// `SELECT sluice_fence(..)` then `COMMIT`, pipelined: a fenced outbox's
/// transaction ends as the store's do (see `postgres.rs`).
fn fenced_commit(conn: &Conn, fence: &Fence) -> Result<()> {
    let writes = [w!("SELECT sluice_fence($1, $2)", fence.holder.clone(), fence.epoch), w!("COMMIT")];
    for result in conn.pipeline(&writes) {
        if let Err(e) = result {
            let _ = conn.batch("ROLLBACK");
            return Err(fenced(e, fence));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(in crate::store) fn record(
    conn: &Conn,
    fence: Option<&Fence>,
    id: i64,
    status: &str,
    attempts: u32,
    next_attempt_at: u64,
    error: Option<&str>,
    now: u64,
) -> Result<()> {
    const UPDATE: &str = "UPDATE notification_deliveries SET status = $2, attempts = $3, next_attempt_at = $4,
         last_error = $5, updated_at = $6 WHERE id = $1";
    let Some(fence) = fence else {
        conn.query(UPDATE, &[&id, &status, &i64::from(attempts), &i(next_attempt_at), &error, &i(now)])?;
        return Ok(());
    };
    let update =
        w!(UPDATE, id, status.to_string(), i64::from(attempts), i(next_attempt_at), error.map(str::to_string), i(now));
    let writes = [w!("BEGIN"), update, w!("SELECT sluice_fence($1, $2)", fence.holder.clone(), fence.epoch), w!("COMMIT")];
    for result in conn.pipeline(&writes) {
        if let Err(e) = result {
            let _ = conn.batch("ROLLBACK");
            return Err(fenced(e, fence));
        }
    }
    Ok(())
}

pub(in crate::store) fn prune(conn: &Conn, fence: Option<&Fence>, now: u64) -> Result<usize> {
    conn.batch("BEGIN")?;
    let result = (|| -> Result<usize> {
        let count = |sql: &str, param: i64| -> Result<usize> {
            let rows = conn.query(&format!("WITH gone AS ({sql} RETURNING 1) SELECT COUNT(*) FROM gone"), &[&param])?;
            Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as usize)
        };
        let mut gone = count(
            "DELETE FROM notification_deliveries WHERE status = 'delivered' AND updated_at < $1",
            i(now.saturating_sub(KEEP_DELIVERED_MS)),
        )?;
        gone += count(
            "DELETE FROM notification_deliveries WHERE status = 'dead' AND updated_at < $1",
            i(now.saturating_sub(KEEP_DEAD_MS)),
        )?;
        gone += count(
            "DELETE FROM notification_deliveries WHERE status != 'delivered' AND id IN (
                 SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY rule_id ORDER BY id DESC) AS n
                                 FROM notification_deliveries WHERE status != 'delivered') AS ranked WHERE n > $1)",
            MAX_UNDELIVERED_PER_RULE,
        )?;
        Ok(gone)
    })();
    match result {
        Ok(gone) => {
            match fence {
                Some(fence) => fenced_commit(conn, fence)?,
                None => conn.batch("COMMIT")?,
            }
            Ok(gone)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}
