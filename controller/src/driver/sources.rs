//! Change detection, in the driver: polling source actions through agents,
//! webhooks, and the revisions already seen, so that every new revision
//! starts exactly one execution however many polls and deliveries report it.

use super::Driver;
use super::intake;
use super::pipelines::not_found_pipeline;
use crate::engine::{Execution, ExecutionId, Trigger};
use crate::ops::{
    Context, DeleteWebhook, DeleteWebhookOutput, DeliverWebhook, DeliverWebhookOutput, Handle, ListWebhooks,
    ListWebhooksOutput, OpError, PollingState, PutWebhook, PutWebhookOutput, WebhookView,
};
use crate::pipeline;
use crate::pipeline::triggers;
use crate::policy::records::{self, WebhookHolderRecord};
use crate::store::{Change, SeenRevision};
use crate::views;
use crate::webhooks::{self, Delivery, WebhookError};
use anyhow::Result;
use sluice_protocol::{Grants, PollSpec, PolledRevision, ToAgent};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tracing::{info, warn};

/// How long an agent has to answer a poll before another is sent.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Characters of a commit id in trigger details.
const SHORT: usize = 7;

/// Polling state of one source action (of a pipeline's latest version).
pub(super) struct PollState {
    interval_ms: u64,
    next_at: u64,
    /// The poll in flight, if any.
    busy: Option<String>,
    pub(super) last_polled_at: Option<u64>,
    pub(super) last_error: Option<String>,
}

/// A poll handed to an agent.
pub(super) struct InFlightPoll {
    pipeline: String,
    action: String,
    agent: String,
    /// The source plugin it runs, which that agent may fetch.
    plugin_digest: String,
    sent_at: u64,
}

#[derive(Default)]
pub(super) struct Sources {
    pub(super) polls: HashMap<(String, String), PollState>,
    in_flight: HashMap<String, InFlightPoll>,
    /// Webhook secrets by pipeline, in clear in memory only.
    webhooks: HashMap<String, String>,
    /// Who set each pipeline's webhook secret (separation of duties).
    webhook_holders: HashMap<String, String>,
}

/// What a reported revision led to.
pub(super) enum Reported {
    Started(ExecutionId),
    /// The revision already ran or was started for this source.
    Duplicate(String),
    /// An execution is still finding out which revision it runs: judge later.
    Deferred,
}

/// An interval with up to 10 % jitter either way, so that many pipelines
/// created together do not poll in lockstep.
fn jittered(interval_ms: u64) -> u64 {
    let spread = interval_ms / 10;
    if spread == 0 {
        return interval_ms;
    }
    interval_ms - spread + rand::random_range(0..=2 * spread)
}

/// The first characters of a revision id, cut by characters: a revision
/// reported by an agent or a webhook is checked, but a cut must never
/// panic whatever it is given.
fn short(revision: &str) -> &str {
    revision.char_indices().nth(SHORT).map_or(revision, |(at, _)| &revision[..at])
}

/// The branch a `git`-like source action fetches (for pipelines without
/// triggers): its `Branch`, `main` by default; none for a pinned tag.
fn branch_of(action: &crate::pipeline::Action) -> Option<String> {
    if action.configuration.get("Tag").is_some_and(|t| !t.trim().is_empty()) {
        return None;
    }
    Some(action.configuration.get("Branch").map(str::trim).filter(|b| !b.is_empty()).unwrap_or("main").to_string())
}

impl Driver {
    /// Loads webhook secrets and the polling schedule at start.
    pub(super) fn recover_sources(&mut self, now: u64) -> Result<()> {
        for (pipeline, sealed, _) in self.store.webhooks()? {
            let secret = self.secret_box.open_value(&webhook_aad(&pipeline), &sealed)?;
            self.sources.webhooks.insert(pipeline, String::from_utf8_lossy(&secret).into_owned());
        }
        let stored = crate::policy::records::Stored::read(self.store.directory_entries()?);
        for holder in stored.webhook_holders {
            self.sources.webhook_holders.insert(holder.pipeline, holder.user);
        }
        for record in self.store.pipelines()? {
            // Parsed from the record in hand (scale, issue 19): not read
            // again one by one, and cached for the listings.
            self.cache_definition(&record)?;
            self.refresh_polls(now, &record.name, record.version)?;
        }
        Ok(())
    }

    /// Re-reads which source actions of a pipeline are polled, after it was
    /// created, updated (`version`) or deleted (`None` found in the store).
    pub(super) fn refresh_polls(&mut self, now: u64, name: &str, version: u64) -> Result<()> {
        let def = self.definition(name, version)?;
        let mut wanted = Vec::new();
        for action in def.stages.first().map(|s| s.actions.as_slice()).unwrap_or_default() {
            // A `pipeline@1` source is started by its upstream, never polled (issue 21, feed).
            if action.action_type_id.category == "Source"
                && action.poll_interval_seconds() > 0
                && !crate::feed::is_pipeline_source(action)
            {
                wanted.push((action.name.clone(), u64::from(action.poll_interval_seconds()) * 1000));
            }
        }
        self.refresh_feeds(name, &def);
        self.sources.polls.retain(|(p, a), _| p != name || wanted.iter().any(|(w, _)| w == a));
        for (action, interval_ms) in wanted {
            let state = self.sources.polls.entry((name.to_string(), action)).or_insert(PollState {
                interval_ms,
                next_at: now + jittered(interval_ms),
                busy: None,
                last_polled_at: None,
                last_error: None,
            });
            if state.interval_ms != interval_ms {
                state.interval_ms = interval_ms;
                state.next_at = state.next_at.min(now + jittered(interval_ms));
            }
        }
        Ok(())
    }

    pub(super) fn forget_pipeline_sources(&mut self, name: &str) {
        self.sources.polls.retain(|(p, _), _| p != name);
        self.sources.in_flight.retain(|_, f| f.pipeline != name);
        self.sources.webhooks.remove(name);
        self.sources.webhook_holders.remove(name);
        self.forget_feeds(name);
    }

    /// When [`Driver::run_polls`] next has something to do: a poll due, or
    /// one in flight to give up (at once if its agent went away).
    pub(super) fn next_poll_at(&self) -> Option<u64> {
        let given_up = self
            .sources
            .in_flight
            .values()
            .map(|f| if self.agents.contains_key(&f.agent) { f.sent_at + POLL_TIMEOUT.as_millis() as u64 } else { 0 });
        let due = self.sources.polls.values().filter(|s| s.busy.is_none()).map(|s| s.next_at);
        given_up.chain(due).min()
    }

    /// Sends the polls that are due to eligible agents.
    pub(super) fn run_polls(&mut self, now: u64) {
        // Polls an agent never answered (it went away) are given up.
        let expired: Vec<String> = self
            .sources
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.sent_at + POLL_TIMEOUT.as_millis() as u64 || !self.agents.contains_key(&f.agent))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let poll = self.sources.in_flight.remove(&id).expect("listed");
            if let Some(state) = self.sources.polls.get_mut(&(poll.pipeline, poll.action)) {
                state.busy = None;
                state.last_error = Some(format!("agent {} did not answer the poll", poll.agent));
                state.next_at = now + jittered(state.interval_ms);
            }
        }
        let due: Vec<(String, String)> = self
            .sources
            .polls
            .iter()
            .filter(|(_, s)| s.busy.is_none() && now >= s.next_at)
            .map(|(k, _)| k.clone())
            .collect();
        for (pipeline, action) in due {
            let sent = self.send_poll(now, &pipeline, &action);
            let state = self.sources.polls.get_mut(&(pipeline.clone(), action.clone())).expect("listed");
            match sent {
                Ok(Some(id)) => state.busy = Some(id),
                Ok(None) => state.next_at = now + jittered(state.interval_ms),
                Err(e) => {
                    warn!(%pipeline, %action, "cannot poll: {e}");
                    state.last_error = Some(e);
                    state.next_at = now + jittered(state.interval_ms);
                }
            }
        }
    }

    /// Hands one poll to the least-loaded eligible agent; `None` when no
    /// agent can take it now.
    fn send_poll(&mut self, now: u64, pipeline: &str, action: &str) -> Result<Option<String>, String> {
        let record = self.store.pipeline(pipeline, None).map_err(|e| format!("{e:#}"))?.ok_or("pipeline is gone")?;
        let def = self.definition(pipeline, record.version).map_err(|e| format!("{e:#}"))?;
        let decl = def.stages.first().and_then(|s| s.action(action)).ok_or("the action is gone")?.clone();
        let Some(agent_id) = self
            .agents
            .iter()
            .filter(|(_, a)| !a.draining)
            .filter(|(_, a)| decl.agent_labels.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
            .min_by(|(ia, a), (ib, b)| a.running.len().cmp(&b.running.len()).then_with(|| ia.cmp(ib)))
            .map(|(id, _)| id.clone())
        else {
            return Ok(None);
        };
        // Configuration may refer only to what exists before any execution.
        let mut configuration = Vec::new();
        for (key, value) in decl.configuration.iter() {
            let resolved = pipeline::resolve(value, |r| match r.namespace.as_str() {
                pipeline::VARIABLES_NAMESPACE => def.variable(&r.name).and_then(|v| v.default_value.clone()),
                pipeline::CODEPIPELINE_NAMESPACE if r.name == "PipelineName" => Some(def.name.clone()),
                _ => None,
            })
            .map_err(|e| format!("configuration \"{key}\" cannot be resolved outside an execution: {e}"))?;
            configuration.push((key.to_string(), resolved));
        }
        let provider = format!("{}@{}", decl.action_type_id.provider, decl.action_type_id.version);
        let plugin = self.catalog.0.get(&provider).ok_or_else(|| format!("plugin {provider} is not registered"))?;
        let grants = grants_for(&plugin.info.capabilities, &decl.capabilities.clone().unwrap_or_default());
        let secrets = self.secret_values(pipeline, &grants.secrets).map_err(|e| format!("{e:#}"))?;
        let poll_id = format!("poll-{}", uuid::Uuid::new_v4());
        let spec = PollSpec {
            poll_id: poll_id.clone(),
            pipeline: pipeline.to_string(),
            action: action.to_string(),
            plugin: plugin.plugin_ref(&decl.action_type_id.provider, &decl.action_type_id.version),
            configuration,
            grants,
            secrets,
            timeout_ms: POLL_TIMEOUT.as_millis() as u64 - 5_000,
        };
        let digest = spec.plugin.digest.clone();
        self.agents[&agent_id].tx.send(ToAgent::Poll(Box::new(spec)));
        self.sources.in_flight.insert(
            poll_id.clone(),
            InFlightPoll {
                pipeline: pipeline.to_string(),
                action: action.to_string(),
                agent: agent_id,
                plugin_digest: digest,
                sent_at: now,
            },
        );
        Ok(Some(poll_id))
    }

    /// An agent answered a poll.
    pub(super) fn poll_result(&mut self, now: u64, agent_id: &str, poll_id: &str, result: Result<PolledRevision, String>) {
        let Some(poll) = self.sources.in_flight.get(poll_id).filter(|p| p.agent == agent_id) else { return };
        let (pipeline, action) = (poll.pipeline.clone(), poll.action.clone());
        self.sources.in_flight.remove(poll_id);
        let Some(state) = self.sources.polls.get_mut(&(pipeline.clone(), action.clone())) else { return };
        state.busy = None;
        state.last_polled_at = Some(now);
        state.next_at = now + jittered(state.interval_ms);
        // What the agent says is checked before it names a revision or
        // reaches the store: a revision id that could pass for an option or
        // is not printable starts nothing.
        let revision = match result.and_then(|r| match intake::check_revision(&r.id) {
            Ok(()) => Ok(r),
            Err(e) => {
                warn!(%agent_id, %pipeline, %action, "poll answer refused: {e}");
                Err(format!("agent {agent_id} reported an invalid revision: {e}"))
            }
        }) {
            Ok(r) => {
                state.last_error = None;
                PolledRevision {
                    summary: intake::clean_text(&r.summary, intake::SUMMARY_MAX_CHARS, intake::Lines::Joined),
                    ..r
                }
            }
            Err(e) => {
                let e = intake::clean_text(&e, intake::MESSAGE_MAX_CHARS, intake::Lines::Joined);
                warn!(%pipeline, %action, "poll failed: {e}");
                state.last_error = Some(e);
                return;
            }
        };
        let trigger =
            Trigger::new("Poll", format!("{action} found {} by polling ({})", short(&revision.id), revision.summary));
        match self.source_changed(now, &pipeline, std::slice::from_ref(&action), &revision.id, trigger, true) {
            Ok(Reported::Started(id)) => {
                info!(%pipeline, %action, revision = %revision.id, execution = %id, "new revision found by polling")
            }
            Ok(Reported::Duplicate(_)) => {}
            Ok(Reported::Deferred) => {
                // Look again soon rather than a whole interval later.
                if let Some(state) = self.sources.polls.get_mut(&(pipeline, action)) {
                    state.next_at = now + jittered(state.interval_ms.min(5_000));
                }
            }
            Err(e) => warn!(%pipeline, %action, "starting an execution for a polled revision failed: {e}"),
        }
    }

    /// Whether a poll handed to `agent_id` runs the plugin `digest`.
    pub(super) fn polls_plugin(&self, agent_id: &str, digest: &str) -> bool {
        self.sources.in_flight.values().any(|p| p.agent == agent_id && p.plugin_digest == digest)
    }

    /// A source revision was reported for some source actions of a
    /// pipeline: start one execution pinning it, unless it was seen before.
    pub(super) fn source_changed(
        &mut self,
        now: u64,
        pipeline: &str,
        actions: &[String],
        revision: &str,
        trigger: Trigger,
        from_poll: bool,
    ) -> Result<Reported, OpError> {
        intake::check_revision(revision).map_err(OpError::invalid)?;
        let mut unseen = Vec::new();
        let mut seen_by = None;
        for action in actions {
            match self.store.seen_revision(pipeline, action, revision)? {
                Some(seen) => seen_by = Some(seen.execution_id),
                None => unseen.push(action.clone()),
            }
        }
        if unseen.is_empty() {
            return Ok(Reported::Duplicate(seen_by.unwrap_or_default()));
        }
        if from_poll {
            // An execution that fetches the branch head has not said yet
            // which revision that is; it may be this one.
            let unresolved = self.engine.executions().any(|e| {
                e.pipeline == pipeline
                    && unseen.iter().any(|a| !e.source_revisions.contains_key(a))
                    && e.stages
                        .first()
                        .is_some_and(|s| s.actions.iter().any(|a| unseen.contains(&a.name) && a.ended_at.is_none()))
            });
            if unresolved {
                return Ok(Reported::Deferred);
            }
        }
        let mut revisions: BTreeMap<String, String> = unseen.iter().map(|a| (a.clone(), revision.to_string())).collect();
        // The other sources keep the newest revision seen for them, if any.
        for seen in self.store.latest_seen_revisions(pipeline)? {
            revisions.entry(seen.action).or_insert(seen.revision);
        }
        let id = self.start_execution(now, pipeline, BTreeMap::new(), revisions, trigger, Vec::new())?;
        Ok(Reported::Started(id))
    }

    /// Seen-revision records for the source revisions an execution pinned
    /// (at start) or fetched (when its source action just ended).
    pub(super) fn seen_revisions(execution: &Execution) -> Vec<Change> {
        let Some(first) = execution.stages.first() else { return Vec::new() };
        execution
            .source_revisions
            .iter()
            .filter(|(action, r)| {
                let just_ended =
                    first.actions.iter().any(|a| &a.name == *action && a.ended_at == Some(execution.updated_at));
                (r.pinned && execution.started_at == execution.updated_at) || (!r.pinned && just_ended)
            })
            .map(|(action, r)| {
                Change::SeenRevision(SeenRevision {
                    pipeline: execution.pipeline.clone(),
                    action: action.clone(),
                    revision: r.revision_id.clone(),
                    execution_id: execution.id.0.clone(),
                    seen_at: execution.updated_at,
                })
            })
            .collect()
    }

    /// What `pipeline state` shows about polling a source action.
    pub(super) fn poll_view(&self, pipeline: &str, action: &str) -> Option<PollingState> {
        let state = self.sources.polls.get(&(pipeline.to_string(), action.to_string()))?;
        Some(PollingState {
            interval_seconds: state.interval_ms / 1000,
            last_polled: state.last_polled_at.map(views::time),
            last_error: state.last_error.clone(),
        })
    }
}

/// `POST /v1/webhooks/PIPELINE`.
impl Handle<DeliverWebhook> for Driver {
    fn handle(&mut self, op: DeliverWebhook, ctx: &Context) -> Result<DeliverWebhookOutput, OpError> {
        let now = ctx.now;
        let (name, headers, body) = (op.pipeline_name.as_str(), &op.headers, &op.body);
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let Some(secret) = self.sources.webhooks.get(name).cloned() else {
            return Err(OpError::NotFound(format!(
                "pipeline \"{name}\" has no webhook; make one with `sluice webhook create {name}`"
            )));
        };
        let delivery = match webhooks::read(headers, body, &secret) {
            Ok(d) => d,
            Err(WebhookError::Unauthorized(why)) => {
                warn!(pipeline = %name, "webhook refused: {why}");
                return Err(OpError::Unauthorized(format!("webhook refused: {why}")));
            }
            Err(WebhookError::Malformed(why)) => {
                warn!(pipeline = %name, "malformed webhook: {why}");
                return Err(OpError::invalid(format!("malformed webhook: {why}")));
            }
        };
        let (sender, change, pusher) = match delivery {
            Delivery::Ignored { sender, reason } => {
                info!(pipeline = %name, %sender, "webhook ignored: {reason}");
                return Ok(not_started(reason, None));
            }
            Delivery::Change { sender, change, pusher } => (sender, change, pusher),
        };
        let def = self.definition(name, record.version)?;
        let git_triggers = triggers::git_triggers(&def)
            .map_err(|d| OpError::Internal(format!("stored triggers of \"{name}\" are invalid: {}", d[0])))?;
        let mut actions = triggers::sources_started_by(&def, &git_triggers, &change, branch_of);
        // A `pipeline@1` source follows its upstream, never a push (issue 21, feed).
        let first = def.stages.first();
        actions.retain(|a| first.and_then(|s| s.action(a)).is_none_or(|x| !crate::feed::is_pipeline_source(x)));
        if actions.is_empty() {
            let reason = format!("no trigger of pipeline \"{name}\" matches this {}", change.kind.describe());
            info!(pipeline = %name, %sender, "webhook starts nothing: {reason}");
            return Ok(not_started(reason, None));
        }
        let by = pusher.as_deref().map(|p| format!(", pushed by {p}")).unwrap_or_default();
        let detail = format!("{sender} webhook: {} at {}{by}", change.kind.describe(), short(&change.revision));
        let holder = self.sources.webhook_holders.get(name).cloned();
        let trigger = Trigger::new("Webhook", detail).pushed_by(pusher).webhook_secret_by(holder);
        match self.source_changed(now, name, &actions, &change.revision, trigger, false)? {
            Reported::Started(id) => {
                info!(pipeline = %name, %sender, revision = %change.revision, execution = %id, "webhook started an execution");
                Ok(DeliverWebhookOutput {
                    started: true,
                    reason: None,
                    pipeline_execution_id: Some(id.0),
                    source_actions: Some(actions),
                })
            }
            Reported::Duplicate(by) => Ok(not_started(
                format!("revision {} already started execution {by}", short(&change.revision)),
                Some(by.to_string()),
            )),
            Reported::Deferred => unreachable!("only polls are deferred"),
        }
    }
}

fn not_started(reason: String, by: Option<String>) -> DeliverWebhookOutput {
    DeliverWebhookOutput { started: false, reason: Some(reason), pipeline_execution_id: by, source_actions: None }
}

/// Makes (or replaces) a pipeline's webhook secret; shown once.
impl Handle<PutWebhook> for Driver {
    fn handle(&mut self, op: PutWebhook, ctx: &Context) -> Result<PutWebhookOutput, OpError> {
        let now = ctx.now;
        let name = op.pipeline_name.as_str();
        self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let secret = match op.secret {
            Some(secret) => {
                check_webhook_secret(&secret)?;
                secret
            }
            None => format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>())),
        };
        let sealed = self.secret_box.seal(&webhook_aad(name), secret.as_bytes())?;
        let definition = op.definition.map(|d| d.to_string());
        let holder = WebhookHolderRecord { pipeline: name.to_string(), user: ctx.caller.user.clone() };
        let changes = vec![
            Change::Webhook { pipeline: name.to_string(), sealed: Some(sealed), created_at: now },
            Change::WebhookDefinition { pipeline: name.to_string(), definition },
            records::put(records::WEBHOOK_HOLDER, name, &holder),
        ];
        self.commit(now, changes)?;
        self.sources.webhooks.insert(name.to_string(), secret.clone());
        self.sources.webhook_holders.insert(name.to_string(), ctx.caller.user.clone());
        info!(pipeline = %name, "webhook secret created");
        Ok(PutWebhookOutput { pipeline_name: op.pipeline_name.clone(), secret, path: format!("/v1/webhooks/{name}") })
    }
}

impl Handle<DeleteWebhook> for Driver {
    fn handle(&mut self, op: DeleteWebhook, ctx: &Context) -> Result<DeleteWebhookOutput, OpError> {
        let now = ctx.now;
        let name = op.pipeline_name.as_str();
        if self.sources.webhooks.remove(name).is_none() {
            return Err(OpError::NotFound(format!("pipeline \"{name}\" has no webhook")));
        }
        let changes = vec![
            Change::Webhook { pipeline: name.to_string(), sealed: None, created_at: 0 },
            Change::WebhookDefinition { pipeline: name.to_string(), definition: None },
            records::delete(records::WEBHOOK_HOLDER, name),
        ];
        self.commit(now, changes)?;
        self.sources.webhook_holders.remove(name);
        Ok(DeleteWebhookOutput { pipeline_name: op.pipeline_name.clone(), deleted: true })
    }
}

/// A caller's webhook secret: 16 to 1024 bytes, so that it is hard to guess.
fn check_webhook_secret(secret: &str) -> Result<(), OpError> {
    if !(16..=1024).contains(&secret.len()) {
        return Err(OpError::invalid(format!("a webhook secret must be 16 to 1024 bytes, not {}", secret.len())));
    }
    Ok(())
}

impl Handle<ListWebhooks> for Driver {
    fn handle(&mut self, op: ListWebhooks, ctx: &Context) -> Result<ListWebhooksOutput, OpError> {
        let limit = crate::ops::paging::limit(op.max_results, 100, 100)?;
        let definitions: HashMap<String, String> = self.store.webhook_definitions()?.into_iter().collect();
        let mut all = self.store.webhooks()?;
        // Only the webhooks of pipelines the caller may list them of (issue 15).
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        let permission = <ListWebhooks as crate::ops::Operation>::PERMISSION;
        all.retain(|(p, _, _)| judge.allows(permission, &crate::policy::pipeline(p)));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next_token) =
            crate::ops::paging::page(all, |(p, _, _)| p.clone(), "webhooks", limit, op.next_token.as_deref())?;
        let webhooks = page
            .into_iter()
            .map(|(pipeline, _, created)| WebhookView {
                path: format!("/v1/webhooks/{pipeline}"),
                created: crate::views::time(created),
                definition: definitions.get(&pipeline).and_then(|d| serde_json::from_str(d).ok()),
                pipeline_name: pipeline,
            })
            .collect();
        Ok(ListWebhooksOutput { webhooks, next_token })
    }
}

/// Webhook secrets are sealed under a name no secret can have.
fn webhook_aad(pipeline: &str) -> String {
    format!("webhook/{pipeline}")
}

/// What a plugin may use: what the pipeline granted and the plugin declared.
pub(super) fn grants_for(declared: &Grants, granted: &crate::pipeline::Capabilities) -> Grants {
    sluice_runtime::consent(declared, &granted.grants())
}
