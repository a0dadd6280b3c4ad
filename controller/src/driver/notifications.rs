//! Notification rules and the outbox, the driver's side (issue 15, notify):
//! the operations on rules and deliveries, and the deliveries a step's
//! notices make, written by `commit` in the step's own transaction. The
//! sending is `crate::notify::deliver`'s, outside the driver's loop.

use super::Driver;
use super::pipelines::not_found_pipeline;
use crate::engine::{Execution, Notice};
use crate::notify::deliver::{address_aad, secret_aad};
use crate::notify::events::{self, NoticeContext};
use crate::notify::message::{self, RuleRef};
use crate::notify::target::{self, TargetType};
use crate::notify::{NotifyConfig, RuleSummary};
use crate::ops::{
    Context, CreateNotificationRule, CreateNotificationRuleOutput, DeleteNotificationRule, DeleteNotificationRuleOutput,
    Handle, ListNotificationDeliveries, ListNotificationDeliveriesOutput, ListNotificationRules,
    ListNotificationRulesOutput, NotificationDeliveryView, NotificationRuleView, OpError, Operation, RedeliverNotification,
    RedeliverNotificationOutput, TargetView, pipeline_of_id,
};
use crate::store::Change;
use crate::store::notifications::{NewDelivery, NotificationChange, NotificationRuleRecord, StoredTarget};
use anyhow::Result;
use base64::Engine as _;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// Targets per rule, at most (CodeStar's limit).
const MAX_TARGETS: usize = 10;
/// Rules per pipeline, at most.
const MAX_RULES_PER_PIPELINE: usize = 20;
const MAX_NAME: usize = 64;

/// Starts the delivery task on the data dir's store.
pub(super) fn spawn_delivery(
    data_dir: &Path,
    store: &crate::store::Location,
    config: &NotifyConfig,
    wake: Arc<tokio::sync::Notify>,
    leadership: Option<&crate::store::Fence>,
) -> Result<()> {
    let mut outbox = store.outbox(data_dir)?;
    // A leader's outbox writes are fenced like the store's (review18 M6).
    outbox.set_fence(leadership.cloned())?;
    let secret_box = crate::secrets::SecretBox::open(data_dir)?;
    let client = crate::notify::deliver::client(config)?;
    tokio::spawn(crate::notify::deliver::run(outbox, secret_box, config.clone(), client, wake));
    Ok(())
}

fn summary(r: &NotificationRuleRecord) -> RuleSummary {
    RuleSummary {
        id: r.id.clone(),
        name: r.name.clone(),
        event_types: r.event_types.clone(),
        targets: r.targets.len() as u32,
    }
}

fn view(r: &NotificationRuleRecord) -> NotificationRuleView {
    NotificationRuleView {
        id: r.id.clone(),
        name: r.name.clone(),
        pipeline_name: r.pipeline.clone(),
        event_type_ids: r.event_types.clone(),
        targets: r
            .targets
            .iter()
            .map(|t| TargetView {
                target_type: t.target_type.clone(),
                target_address: t.display.clone(),
                signing_secret: None,
            })
            .collect(),
        created: crate::views::time(r.created_at),
        created_by: r.created_by.clone(),
    }
}

/// What the driver knows of a notice beyond it: whether its action is a
/// manual approval, whether an execution resumed rather than started.
fn notice_context(notice: &Notice, execution: Option<&Execution>) -> NoticeContext {
    let Some(e) = execution else { return NoticeContext::default() };
    let approval = match (&notice.stage, &notice.action) {
        (Some(stage), Some(action)) => e
            .stages
            .iter()
            .filter(|s| &s.name == stage)
            .flat_map(|s| s.actions.iter())
            .any(|a| &a.name == action && a.approval.is_some()),
        _ => false,
    };
    let resumed = notice.stage.is_none() && notice.status == "InProgress" && notice.at > e.started_at;
    NoticeContext { approval, resumed }
}

impl Driver {
    /// Loads the rules at start.
    pub(super) fn recover_notifications(&mut self) -> Result<()> {
        for r in self.store.notification_rules()? {
            self.notifications.insert(&r.pipeline, summary(&r));
        }
        Ok(())
    }

    /// The deliveries a step's notices make: one pending row per matching
    /// rule target and event type, for `commit` to write with the step.
    pub(super) fn notification_changes(
        &self,
        now: u64,
        notices: &[Notice],
        dirty: &[std::sync::Arc<Execution>],
    ) -> Vec<Change> {
        if self.notifications.is_empty() {
            return Vec::new();
        }
        let mut changes = Vec::new();
        // Executions resumed in this step: the first stage they enter next
        // is the one retried.
        let mut resumed: Vec<&str> = Vec::new();
        for notice in notices {
            let execution = dirty
                .iter()
                .find(|e| e.id == notice.execution_id)
                .map(|e| &**e)
                .or_else(|| self.engine.execution(&notice.execution_id));
            let mut context = notice_context(notice, execution);
            let id = notice.execution_id.0.as_str();
            match (&notice.stage, &notice.action) {
                (None, _) if context.resumed => resumed.push(id),
                (Some(_), None) if notice.status == "InProgress" && resumed.contains(&id) => {
                    resumed.retain(|r| *r != id);
                    context.resumed = true;
                }
                _ => {}
            }
            for m in self.notifications.matches(notice, context) {
                let rule = RuleRef { id: &m.rule.id, name: &m.rule.name };
                let event_id = uuid::Uuid::new_v4().to_string();
                let payload = message::payload(rule, m.event_type, notice, &event_id);
                changes.push(Change::Notification(NotificationChange::Delivery(NewDelivery {
                    rule_id: m.rule.id.clone(),
                    target: m.target,
                    pipeline: notice.pipeline.clone(),
                    event_type: m.event_type.to_string(),
                    execution_id: notice.execution_id.0.clone(),
                    payload: payload.to_string(),
                    created_at: now,
                })));
            }
        }
        changes
    }

    /// Wakes the delivery task when the command just handled wrote
    /// deliveries: after the command, so that its transaction (which may
    /// span several commits) is committed and the task sees them.
    pub(super) fn wake_delivery(&mut self) {
        if std::mem::take(&mut self.deliveries_written) {
            self.notify_wake.notify_one();
        }
    }

    /// After a pipeline is deleted (the store deleted its rules with it).
    pub(super) fn forget_pipeline_notifications(&mut self, pipeline: &str) {
        self.notifications.remove_pipeline(pipeline);
    }

    fn notification_rule(&self, id: &str) -> Result<NotificationRuleRecord, OpError> {
        self.store
            .notification_rules()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| OpError::NotFound(format!("notification rule \"{id}\" does not exist")))
    }
}

/// A rule's name: printable, at most [`MAX_NAME`] characters.
fn check_name(name: &str) -> Result<(), OpError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(OpError::invalid(format!("a notification rule name is 1 to {MAX_NAME} printable characters")));
    }
    Ok(())
}

impl Handle<CreateNotificationRule> for Driver {
    fn handle(&mut self, op: CreateNotificationRule, ctx: &Context) -> Result<CreateNotificationRuleOutput, OpError> {
        let pipeline = op.pipeline_name.as_str();
        self.store.pipeline(pipeline, None)?.ok_or_else(|| not_found_pipeline(pipeline))?;
        events::check_event_types(&op.event_type_ids).map_err(OpError::invalid)?;
        if op.targets.is_empty() || op.targets.len() > MAX_TARGETS {
            return Err(OpError::invalid(format!("a notification rule has 1 to {MAX_TARGETS} targets")));
        }
        let existing = self.store.notification_rules()?.into_iter().filter(|r| r.pipeline == pipeline).count();
        if existing >= MAX_RULES_PER_PIPELINE {
            return Err(OpError::Conflict(format!(
                "pipeline \"{pipeline}\" has {existing} notification rules, the most it may have"
            )));
        }
        let mut checked = Vec::new();
        for (i, t) in op.targets.iter().enumerate() {
            let kind = TargetType::parse(&t.target_type).map_err(|e| OpError::invalid(format!("target {}: {e}", i + 1)))?;
            let url = target::check_url(&t.target_address, self.notify_policy)
                .map_err(|e| OpError::invalid(format!("target {}: {e}", i + 1)))?;
            checked.push((kind, url));
        }
        let id = format!("{pipeline}:{}", hex::encode(rand::random::<[u8; 8]>()));
        let name = op.name.unwrap_or_else(|| id.clone());
        check_name(&name)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut stored = Vec::new();
        let mut shown = Vec::new();
        for (i, (kind, url)) in checked.into_iter().enumerate() {
            let i = i as u32;
            let sealed_address = b64.encode(self.secret_box.seal(&address_aad(&id, i), url.as_str().as_bytes())?);
            let secret = (kind == TargetType::Webhook).then(|| format!("nsec_{}", hex::encode(rand::random::<[u8; 24]>())));
            let sealed_secret = match &secret {
                Some(s) => Some(b64.encode(self.secret_box.seal(&secret_aad(&id, i), s.as_bytes())?)),
                None => None,
            };
            let display = target::display(&url);
            shown.push(TargetView {
                target_type: kind.as_str().into(),
                target_address: display.clone(),
                signing_secret: secret,
            });
            stored.push(StoredTarget { target_type: kind.as_str().into(), display, sealed_address, sealed_secret });
        }
        let record = NotificationRuleRecord {
            id: id.clone(),
            name,
            pipeline: pipeline.to_string(),
            event_types: op.event_type_ids,
            targets: stored,
            created_at: ctx.now,
            created_by: ctx.caller.user.clone(),
        };
        self.commit(ctx.now, vec![Change::Notification(NotificationChange::Rule(record.clone()))])?;
        self.notifications.insert(pipeline, summary(&record));
        info!(%pipeline, rule = %id, by = %ctx.caller.user, "notification rule created");
        Ok(NotificationRuleView { targets: shown, ..view(&record) })
    }
}

impl Driver {
    /// Lists of every pipeline show only the pipelines the caller may list on.
    fn may_list(&self, ctx: &Context, permission: &str, pipeline: &str) -> bool {
        self.directory.allows(&ctx.caller, permission, &crate::policy::pipeline(pipeline))
    }
}

impl Handle<ListNotificationRules> for Driver {
    fn handle(&mut self, op: ListNotificationRules, ctx: &Context) -> Result<ListNotificationRulesOutput, OpError> {
        let rules = self.store.notification_rules()?;
        let notification_rules = rules
            .iter()
            .filter(|r| op.pipeline_name.as_ref().is_none_or(|p| &r.pipeline == p))
            .filter(|r| self.may_list(ctx, ListNotificationRules::PERMISSION, &r.pipeline))
            .map(view)
            .collect();
        Ok(ListNotificationRulesOutput { notification_rules })
    }
}

impl Handle<DeleteNotificationRule> for Driver {
    fn handle(&mut self, op: DeleteNotificationRule, ctx: &Context) -> Result<DeleteNotificationRuleOutput, OpError> {
        let rule = self.notification_rule(&op.id)?;
        self.commit(ctx.now, vec![Change::Notification(NotificationChange::DeleteRule(rule.id.clone()))])?;
        self.notifications.remove(&rule.pipeline, &rule.id);
        info!(pipeline = %rule.pipeline, rule = %rule.id, "notification rule deleted");
        Ok(DeleteNotificationRuleOutput { id: op.id, deleted: true })
    }
}

/// Deliveries listed at most per call.
const MAX_LISTED: usize = 1000;

impl Handle<ListNotificationDeliveries> for Driver {
    fn handle(
        &mut self,
        op: ListNotificationDeliveries,
        ctx: &Context,
    ) -> Result<ListNotificationDeliveriesOutput, OpError> {
        if let Some(status) = &op.status
            && !["pending", "delivered", "dead"].contains(&status.as_str())
        {
            return Err(OpError::invalid(format!("status {status:?}: expected pending, delivered or dead")));
        }
        if let Some(id) = &op.rule_id {
            self.notification_rule(id)?;
        }
        let limit = crate::ops::paging::limit(op.max_results, 100, MAX_LISTED)?;
        let rules: HashMap<String, NotificationRuleRecord> =
            self.store.notification_rules()?.into_iter().map(|r| (r.id.clone(), r)).collect();
        // A caller who may not list every rule's deliveries gets the newest
        // of those it may list (each visible rule's, merged), not the
        // newest of all filtered down to a few.
        let visible: Vec<&String> = rules
            .values()
            .filter(|r| self.may_list(ctx, ListNotificationDeliveries::PERMISSION, &r.pipeline))
            .map(|r| &r.id)
            .collect();
        let rows = match &op.rule_id {
            None if visible.len() < rules.len() => {
                let mut rows = Vec::new();
                for rule in visible {
                    rows.extend(self.store.notification_deliveries(Some(rule), op.status.as_deref(), limit)?);
                }
                rows.sort_by_key(|d| std::cmp::Reverse(d.id));
                rows.truncate(limit);
                rows
            }
            rule => self.store.notification_deliveries(rule.as_deref(), op.status.as_deref(), limit)?,
        };
        let deliveries = rows
            .into_iter()
            .filter(|d| self.may_list(ctx, ListNotificationDeliveries::PERMISSION, &d.pipeline))
            .map(|d| {
                let target = rules.get(&d.rule_id).and_then(|r| r.targets.get(d.target as usize));
                NotificationDeliveryView {
                    id: format!("{}:{}", d.pipeline, d.id),
                    target_type: target.map(|t| t.target_type.clone()).unwrap_or_default(),
                    target_address: target.map(|t| t.display.clone()).unwrap_or_default(),
                    rule_id: d.rule_id,
                    pipeline_name: d.pipeline,
                    event_type_id: d.event_type,
                    execution_id: d.execution_id,
                    next_attempt: (d.status == "pending").then(|| crate::views::time(d.next_attempt_at)),
                    status: d.status,
                    attempts: d.attempts,
                    last_error: d.last_error,
                    created: crate::views::time(d.created_at),
                    updated: crate::views::time(d.updated_at),
                }
            })
            .collect();
        Ok(ListNotificationDeliveriesOutput { deliveries })
    }
}

impl Handle<RedeliverNotification> for Driver {
    fn handle(&mut self, op: RedeliverNotification, ctx: &Context) -> Result<RedeliverNotificationOutput, OpError> {
        let missing = || OpError::NotFound(format!("notification delivery \"{}\" does not exist", op.id));
        let pipeline = pipeline_of_id(&op.id).ok_or_else(missing)?;
        let n: i64 = op.id.rsplit_once(':').and_then(|(_, n)| n.parse().ok()).ok_or_else(missing)?;
        let delivery = self.store.notification_delivery(n)?.filter(|d| d.pipeline == pipeline).ok_or_else(missing)?;
        if delivery.status == "pending" {
            return Err(OpError::Conflict(format!("notification delivery \"{}\" is still pending", op.id)));
        }
        self.commit(ctx.now, vec![Change::Notification(NotificationChange::Redeliver { id: n, at: ctx.now })])?;
        self.deliveries_written = true;
        info!(delivery = %op.id, by = %ctx.caller.user, "notification to be delivered again");
        Ok(RedeliverNotificationOutput { id: op.id, status: "pending".into() })
    }
}
