//! Each [`Change`] as the PostgreSQL statements that store it: the same
//! rows as SQLite's `apply_changes`, with `ON CONFLICT` for `INSERT OR
//! REPLACE` / `INSERT OR IGNORE` and `jsonb` for SQLite's JSON1.

use super::conn::{Write, w};
use crate::store::notifications::NotificationChange;
use crate::store::{Change, json, revision_rows};
use anyhow::Result;

fn i(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The statements of `change`, appended to `out`.
pub(super) fn statements(change: &Change, out: &mut Vec<Write>) -> Result<()> {
    match change {
        Change::Pipeline(p) => out.push(w!(
            "INSERT INTO pipelines (name, version, definition, created_at, updated_at, author) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, version) DO UPDATE SET definition = EXCLUDED.definition, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, author = EXCLUDED.author",
            p.name.clone(),
            i(p.version),
            p.definition.clone(),
            i(p.created_at),
            i(p.updated_at),
            p.author.clone()
        )),
        Change::Execution(e) => {
            out.push(w!(
                "INSERT INTO executions (id, pipeline, version, status, started_at, updated_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET pipeline = EXCLUDED.pipeline, version = EXCLUDED.version, status = EXCLUDED.status,
                 started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at, state = EXCLUDED.state",
                e.id.0.clone(),
                e.pipeline.clone(),
                i(e.version),
                e.status.as_str().to_string(),
                i(e.started_at),
                i(e.updated_at),
                json(&**e)?
            ));
            // The revision flow's index (issue 16, pages), replaced whole.
            out.push(w!("DELETE FROM execution_revisions WHERE execution_id = $1", e.id.0.clone()));
            for (key, revision) in revision_rows(e) {
                out.push(w!(
                    "INSERT INTO execution_revisions (revision, pipeline, execution_id, action, started_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
                    revision.to_string(),
                    e.pipeline.clone(),
                    e.id.0.clone(),
                    key.to_string(),
                    i(e.started_at)
                ));
            }
        }
        // Issue 21, feed.
        Change::FeedConsumed(f) => out.push(w!(
            "INSERT INTO feed_sets (pipeline, action, record) VALUES ($1, $2, $3)
             ON CONFLICT (pipeline, action) DO UPDATE SET record = EXCLUDED.record",
            f.pipeline.clone(),
            f.action.clone(),
            json(f)?
        )),
        Change::Log(l) => out.push(w!(
            "INSERT INTO logs (job_id, execution_id, seq, text) VALUES ($1, $2, $3, $4)",
            l.job_id.clone(),
            l.execution_id.clone(),
            i(l.seq),
            l.text.clone()
        )),
        Change::Agent(a) => out.push(w!(
            "INSERT INTO agents (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            a.id.clone(),
            json(a)?
        )),
        Change::JoinToken(t) => out.push(w!(
            "INSERT INTO join_tokens (id, secret_hash, record) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, record = EXCLUDED.record",
            t.id.clone(),
            t.secret_hash.clone(),
            json(t)?
        )),
        Change::DeletePipeline(name) => delete_pipeline(name, out),
        Change::Secret(s) => out.push(w!(
            "INSERT INTO secrets (name, sealed, created_at, updated_at, pipelines) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET sealed = EXCLUDED.sealed, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, pipelines = EXCLUDED.pipelines",
            s.name.clone(),
            s.sealed.clone(),
            i(s.created_at),
            i(s.updated_at),
            json(&s.pipelines)?
        )),
        Change::DeleteSecret(name) => out.push(w!("DELETE FROM secrets WHERE name = $1", name.clone())),
        Change::Webhook { pipeline, sealed: Some(sealed), created_at } => out.push(w!(
            "INSERT INTO webhooks (pipeline, sealed, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (pipeline) DO UPDATE SET sealed = EXCLUDED.sealed, created_at = EXCLUDED.created_at",
            pipeline.clone(),
            sealed.clone(),
            i(*created_at)
        )),
        Change::Webhook { pipeline, sealed: None, .. } => {
            out.push(w!("DELETE FROM webhooks WHERE pipeline = $1", pipeline.clone()))
        }
        Change::DeletePlugin { provider, version } => out.push(w!(
            "DELETE FROM plugins WHERE provider = $1 AND version = $2 AND builtin = 0",
            provider.clone(),
            version.clone()
        )),
        Change::User(u) => out.push(w!(
            "INSERT INTO users (name, record) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
            u.name.clone(),
            json(u)?
        )),
        Change::ApiToken(t) => out.push(w!(
            "INSERT INTO api_tokens (id, secret_hash, record) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, record = EXCLUDED.record",
            t.id.clone(),
            t.secret_hash.clone(),
            json(t)?
        )),
        Change::SeenRevision(r) => out.push(w!(
            "INSERT INTO seen_revisions (pipeline, action, revision, seen_at, record) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            r.pipeline.clone(),
            r.action.clone(),
            r.revision.clone(),
            i(r.seen_at),
            json(r)?
        )),
        Change::Revocation(r) => out.push(w!(
            "INSERT INTO revocations (serial, agent_id, record) VALUES ($1, $2, $3)
             ON CONFLICT (serial) DO UPDATE SET agent_id = EXCLUDED.agent_id, record = EXCLUDED.record",
            r.serial.clone(),
            r.agent_id.clone(),
            json(r)?
        )),
        Change::Transition(t) => out.push(w!(
            "INSERT INTO transitions (pipeline, stage, record) VALUES ($1, $2, $3)
             ON CONFLICT (pipeline, stage) DO UPDATE SET record = EXCLUDED.record",
            t.pipeline.clone(),
            t.stage.clone(),
            json(t)?
        )),
        Change::Publisher(p) => out.push(w!(
            "INSERT INTO publishers (name, record) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
            p.name.clone(),
            json(p)?
        )),
        Change::DeletePublisher(name) => out.push(w!("DELETE FROM publishers WHERE name = $1", name.clone())),
        Change::PluginSignature(p) => out.push(w!(
            "INSERT INTO plugin_signatures (digest, record) VALUES ($1, $2)
             ON CONFLICT (digest) DO UPDATE SET record = EXCLUDED.record",
            p.digest.clone(),
            json(p)?
        )),
        Change::ActionType(t) => out.push(w!(
            "INSERT INTO action_types (category, provider, version, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (category, provider, version) DO UPDATE SET record = EXCLUDED.record",
            t.category.clone(),
            t.provider.clone(),
            t.version.clone(),
            json(t)?
        )),
        Change::WorkerJob(j) => {
            let updated = j.ended_at.or(j.acknowledged_at).or(j.polled_at).unwrap_or(j.created_at);
            out.push(w!(
                "INSERT INTO worker_jobs (id, access_key_id, finished, updated_at, record) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET access_key_id = EXCLUDED.access_key_id, finished = EXCLUDED.finished,
                 updated_at = EXCLUDED.updated_at, record = EXCLUDED.record",
                j.id.clone(),
                j.access_key_id.clone(),
                i64::from(j.status.is_final()),
                i(updated),
                json(j)?
            ));
        }
        // AWS-compatible API (issue 14, aws).
        Change::AccessKey(k) => out.push(w!(
            "INSERT INTO access_keys (id, record) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            k.id.clone(),
            json(k)?
        )),
        Change::StartRequest { pipeline, token, execution_id } => out.push(w!(
            "INSERT INTO start_requests (pipeline, token, execution_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            pipeline.clone(),
            token.clone(),
            execution_id.clone()
        )),
        Change::WebhookDefinition { pipeline, definition: Some(definition) } => out.push(w!(
            "INSERT INTO webhook_definitions (pipeline, definition) VALUES ($1, $2)
             ON CONFLICT (pipeline) DO UPDATE SET definition = EXCLUDED.definition",
            pipeline.clone(),
            definition.clone()
        )),
        Change::WebhookDefinition { pipeline, definition: None } => {
            out.push(w!("DELETE FROM webhook_definitions WHERE pipeline = $1", pipeline.clone()))
        }
        Change::Tags { resource, tags } if tags.is_empty() => {
            out.push(w!("DELETE FROM tags WHERE resource = $1", resource.clone()))
        }
        Change::Tags { resource, tags } => out.push(w!(
            "INSERT INTO tags (resource, tags) VALUES ($1, $2) ON CONFLICT (resource) DO UPDATE SET tags = EXCLUDED.tags",
            resource.clone(),
            json(tags)?
        )),
        // Notifications (issue 15, notify).
        Change::Notification(change) => notification(change, out)?,
        // Permissions (issue 15, policy).
        Change::DeleteUser(name) => out.push(w!("DELETE FROM users WHERE name = $1", name.clone())),
        Change::Directory { kind, name, record: Some(record) } => out.push(w!(
            "INSERT INTO directory (kind, name, record) VALUES ($1, $2, $3)
             ON CONFLICT (kind, name) DO UPDATE SET record = EXCLUDED.record",
            kind.clone(),
            name.clone(),
            record.clone()
        )),
        Change::Directory { kind, name, record: None } => {
            out.push(w!("DELETE FROM directory WHERE kind = $1 AND name = $2", kind.clone(), name.clone()))
        }
        Change::Plugin(p) => out.push(w!(
            "INSERT INTO plugins (provider, version, digest, info, builtin) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (provider, version) DO UPDATE SET digest = EXCLUDED.digest, info = EXCLUDED.info,
             builtin = EXCLUDED.builtin",
            p.provider.clone(),
            p.version.clone(),
            p.digest.clone(),
            p.info.clone(),
            i64::from(p.builtin)
        )),
        // The audit log (issue 15, gov).
        Change::Audit(entry) => {
            let (r, hash) = &**entry;
            out.push(w!(
                "INSERT INTO audit_log (seq, time, \"user\", via, operation, resource, result, message, source, request_id, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                i(r.seq),
                i(r.time),
                r.user.clone(),
                r.via.clone(),
                r.operation.clone(),
                r.resource.clone(),
                r.result.clone(),
                r.message.clone(),
                r.source.clone(),
                r.request_id.clone(),
                hash.clone()
            ));
        }
        // Data lifecycle (issue 17, life).
        Change::DeleteExecutions(ids) => {
            let ended = "SELECT id FROM executions WHERE id = $1 AND status NOT IN ('InProgress', 'Stopping')";
            for id in ids {
                out.push(w!(format!("DELETE FROM logs WHERE execution_id IN ({ended})"), id.clone()));
                // A start's token must not name an execution that is gone.
                out.push(w!(format!("DELETE FROM start_requests WHERE execution_id IN ({ended})"), id.clone()));
                out.push(w!(format!("DELETE FROM execution_revisions WHERE execution_id IN ({ended})"), id.clone()));
                out.push(w!(format!("DELETE FROM executions WHERE id IN ({ended})"), id.clone()));
            }
        }
        Change::PruneAudit(anchor) => {
            out.push(w!(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                i(anchor.seq),
                anchor.hash.clone()
            ));
            out.push(w!("DELETE FROM audit_log WHERE seq <= $1", i(anchor.seq)));
        }
    }
    Ok(())
}

fn delete_pipeline(name: &str, out: &mut Vec<Write>) {
    for sql in [
        "DELETE FROM logs WHERE execution_id IN (SELECT id FROM executions WHERE pipeline = $1)",
        "DELETE FROM execution_revisions WHERE pipeline = $1",
        "DELETE FROM executions WHERE pipeline = $1",
        "DELETE FROM pipelines WHERE name = $1",
        "DELETE FROM transitions WHERE pipeline = $1",
        "DELETE FROM webhooks WHERE pipeline = $1",
        "DELETE FROM seen_revisions WHERE pipeline = $1",
        // Issue 21, feed.
        "DELETE FROM feed_sets WHERE pipeline = $1",
        "DELETE FROM start_requests WHERE pipeline = $1",
        "DELETE FROM notification_deliveries WHERE pipeline = $1",
        "DELETE FROM notification_rules WHERE pipeline = $1",
        "DELETE FROM webhook_definitions WHERE pipeline = $1",
        // Ended jobs only (a pipeline with executions running is not
        // deleted): their details name secret properties.
        "DELETE FROM worker_jobs WHERE record::jsonb ->> 'pipeline' = $1",
    ] {
        out.push(w!(sql, name.to_string()));
    }
    out.push(w!("DELETE FROM tags WHERE resource = $1", format!("pipeline:{name}")));
}

fn notification(change: &NotificationChange, out: &mut Vec<Write>) -> Result<()> {
    match change {
        NotificationChange::Rule(r) => out.push(w!(
            "INSERT INTO notification_rules (id, pipeline, record) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET pipeline = EXCLUDED.pipeline, record = EXCLUDED.record",
            r.id.clone(),
            r.pipeline.clone(),
            json(r)?
        )),
        NotificationChange::DeleteRule(id) => {
            out.push(w!("DELETE FROM notification_deliveries WHERE rule_id = $1", id.clone()));
            out.push(w!("DELETE FROM notification_rules WHERE id = $1", id.clone()));
        }
        NotificationChange::Delivery(d) => out.push(w!(
            "INSERT INTO notification_deliveries (rule_id, target, pipeline, event_type, execution_id, status, attempts,
             next_attempt_at, created_at, updated_at, last_error, payload)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, NULL, $7)",
            d.rule_id.clone(),
            i64::from(d.target),
            d.pipeline.clone(),
            d.event_type.clone(),
            d.execution_id.clone(),
            i(d.created_at),
            d.payload.clone()
        )),
        NotificationChange::Redeliver { id, at } => out.push(w!(
            "UPDATE notification_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2, created_at = $2,
             updated_at = $2 WHERE id = $1",
            *id,
            i(*at)
        )),
    }
    Ok(())
}
