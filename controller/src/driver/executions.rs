//! Execution commands of the driver: start, stop, retry, rollback,
//! approval decisions, inbound transitions, and the views of executions,
//! their logs and a pipeline's state.

use super::Driver;
use super::command::DEFAULT_HISTORY;
use super::intake;
use super::pipelines::not_found_pipeline;
use crate::engine::{
    self, ActionStatus, Decision, Event, Execution, ExecutionId, Handled, Refusal, StopMode, TransitionState, Trigger,
};
use crate::ops::paging;
use crate::ops::{
    ApprovalStatus, Context, DisableStageTransition, EnableStageTransition, GetExecutionLogs, GetExecutionLogsOutput,
    GetPipelineExecution, GetPipelineExecutionOutput, GetPipelineState, GetPipelineStateOutput, Handle,
    ListPipelineExecutions, ListPipelineExecutionsOutput, ListPipelineStates, ListPipelineStatesOutput, LogLineView,
    MAX_JOB_LOG_LINES, OpError, PipelineStateEntry, PutApprovalResult, PutApprovalResultOutput, RetryMode,
    RetryStageExecution, RetryStageExecutionOutput, RollbackStage, RollbackStageOutput, StageTransitionOutput,
    StartPipelineExecution, StartPipelineExecutionOutput, StopPipelineExecution, StopPipelineExecutionOutput,
};
use crate::store::{Change, TransitionRecord};
use crate::views;
use sluice_protocol::ToAgent;
use std::collections::{BTreeMap, HashMap};
use tracing::info;

impl Handle<StartPipelineExecution> for Driver {
    fn handle(&mut self, op: StartPipelineExecution, ctx: &Context) -> Result<StartPipelineExecutionOutput, OpError> {
        let variables: BTreeMap<String, String> = op.variables.into_iter().map(|v| (v.name, v.value)).collect();
        // `revisionType` can only be COMMIT_ID (serde refuses any other).
        let revisions: BTreeMap<String, String> =
            op.source_revisions.into_iter().map(|o| (o.action_name, o.revision_value)).collect();
        let by = &ctx.caller.user;
        let detail = if revisions.is_empty() { "admin API" } else { "admin API, pinned revisions" };
        let trigger = Trigger::new("StartPipelineExecution", format!("{detail}, by {by}")).by(by);
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        let mut changes = Vec::new();
        if let Some(token) = op.client_request_token {
            check_client_request_token(&token)?;
            if let Some(first) = self.store.start_request(&op.name, &token)? {
                info!(pipeline = %op.name, execution = %first, "start repeated with the same clientRequestToken");
                return Ok(StartPipelineExecutionOutput { pipeline_execution_id: first });
            }
            // Stored in the start's own commit: the token and the execution exist together or not at all.
            changes.push(Change::StartRequest { pipeline: op.name.clone(), token, execution_id: id.0.clone() });
        }
        self.start_execution_as(ctx.now, id.clone(), &op.name, variables, revisions, trigger, changes)?;
        Ok(StartPipelineExecutionOutput { pipeline_execution_id: id.0 })
    }
}

/// CodePipeline's `ClientRequestToken`: 1 to 128 of `A-Z a-z 0-9 -`.
fn check_client_request_token(token: &str) -> Result<(), OpError> {
    if token.is_empty() || token.len() > 128 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(OpError::invalid(format!("clientRequestToken {token:?} must be 1 to 128 of A-Z a-z 0-9 -")));
    }
    Ok(())
}

impl Driver {
    pub(super) fn start_execution(
        &mut self,
        now: u64,
        name: &str,
        variables: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        changes: Vec<Change>,
    ) -> Result<ExecutionId, OpError> {
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        self.start_execution_as(now, id.clone(), name, variables, revisions, trigger, changes)?;
        Ok(id)
    }

    /// Starts execution `id`, committing `changes` with it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_execution_as(
        &mut self,
        now: u64,
        id: ExecutionId,
        name: &str,
        variables: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        changes: Vec<Change>,
    ) -> Result<(), OpError> {
        let (version, author) = match changes.iter().find_map(|c| match c {
            Change::Pipeline(p) if p.name == name => Some((p.version, p.author.clone())),
            _ => None,
        }) {
            Some(found) => found,
            None => {
                let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
                (record.version, record.author)
            }
        };
        // The version's author may not approve what it runs (issue 15, gov).
        let mut trigger = trigger;
        trigger.version_author = Some(author).filter(|a| !a.is_empty());
        let def = self.definition(name, version)?;
        let unknown: Vec<&String> = variables.keys().filter(|k| def.variable(k).is_none()).collect();
        if !unknown.is_empty() {
            return Err(OpError::invalid(format!(
                "pipeline \"{name}\" declares no variable {}",
                unknown.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
            )));
        }
        let sources: Vec<&str> = def
            .stages
            .first()
            .map(|s| s.actions.iter().filter(|a| a.action_type_id.category == "Source").map(|a| a.name.as_str()).collect())
            .unwrap_or_default();
        let not_sources: Vec<String> =
            revisions.keys().filter(|k| !sources.contains(&k.as_str())).map(|k| format!("\"{k}\"")).collect();
        if !not_sources.is_empty() {
            return Err(OpError::invalid(format!(
                "pipeline \"{name}\" has no source action {}; its source actions: {}",
                not_sources.join(", "),
                sources.join(", ")
            )));
        }
        for (action, revision) in &revisions {
            intake::check_revision(revision).map_err(|e| OpError::invalid(format!("the revision for \"{action}\": {e}")))?;
        }
        // Issue 21, feed: an upstream execution for each `pipeline@1` source.
        let mut revisions = revisions;
        let (origins, taken) = self.pin_upstreams(now, &id, &def, &mut revisions)?;
        // A set started by the rule records its members itself.
        let recorded = |action: &str| changes.iter().any(|c| matches!(c, Change::FeedConsumed(c) if c.action == action));
        let taken: Vec<Change> =
            taken.into_iter().filter(|t| !matches!(t, Change::FeedConsumed(t) if recorded(&t.action))).collect();
        let mut changes = changes;
        changes.extend(taken);
        self.feed(now, Event::Start { id, pipeline: def, version, trigger, variables, revisions, origins });
        self.commit(now, changes)?;
        Ok(())
    }
}

/// RetryStageExecution: failed actions only, or all of the stage's.
impl Handle<RetryStageExecution> for Driver {
    fn handle(&mut self, op: RetryStageExecution, ctx: &Context) -> Result<RetryStageExecutionOutput, OpError> {
        let now = ctx.now;
        let (name, stage, id) = (op.pipeline_name.as_str(), op.stage_name.as_str(), op.pipeline_execution_id.as_str());
        let all = op.retry_mode == RetryMode::AllActions;
        let execution = self.execution(name, id)?;
        if self.engine.execution(&execution.id).is_some() {
            return Err(OpError::Conflict(format!("execution {id} is still {}", execution.status.as_str())));
        }
        let def = self.definition(name, execution.version)?;
        let mode = if all { engine::RetryMode::AllActions } else { engine::RetryMode::FailedActions };
        let event = Event::RetryStage { pipeline: def, execution: Box::new(execution), stage: stage.to_string(), mode };
        self.engine.handle(now, event).map_err(refused)?;
        self.commit(now, Vec::new())?;
        info!(pipeline = %name, %stage, execution = %id, all, "stage retried");
        Ok(RetryStageExecutionOutput { pipeline_execution_id: op.pipeline_execution_id })
    }
}

impl Handle<DisableStageTransition> for Driver {
    fn handle(&mut self, op: DisableStageTransition, ctx: &Context) -> Result<StageTransitionOutput, OpError> {
        self.set_transition(ctx.now, &op.pipeline_name, &op.stage_name, false, op.reason, &ctx.caller.user)
    }
}

impl Handle<EnableStageTransition> for Driver {
    fn handle(&mut self, op: EnableStageTransition, ctx: &Context) -> Result<StageTransitionOutput, OpError> {
        self.set_transition(ctx.now, &op.pipeline_name, &op.stage_name, true, op.reason, &ctx.caller.user)
    }
}

impl Driver {
    /// DisableStageTransition / EnableStageTransition (inbound only).
    fn set_transition(
        &mut self,
        now: u64,
        name: &str,
        stage: &str,
        enabled: bool,
        reason: String,
        by: &str,
    ) -> Result<StageTransitionOutput, OpError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let index = def
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| OpError::StageNotFound(format!("pipeline \"{name}\" has no stage \"{stage}\"")))?;
        if index == 0 {
            return Err(OpError::invalid(format!("stage \"{stage}\" is the first stage: it has no inbound transition")));
        }
        if !enabled && reason.trim().is_empty() {
            return Err(OpError::invalid("disabling a transition needs a --reason"));
        }
        let transition = TransitionRecord {
            pipeline: name.to_string(),
            stage: stage.to_string(),
            enabled,
            reason: (!enabled).then_some(reason),
            changed_by: by.to_string(),
            changed_at: now,
        };
        let state = if enabled { TransitionState::Enabled } else { TransitionState::Disabled };
        self.feed(now, Event::SetTransition { pipeline: name.to_string(), stage: stage.to_string(), state });
        self.commit(now, vec![Change::Transition(transition.clone())])?;
        info!(pipeline = %name, %stage, enabled, "transition changed");
        // Watchers (the console's pipeline page) see the change live, as
        // they see an execution's; no execution is named: none changed.
        self.tell_watchers(serde_json::json!({
            "type": "transition", "pipeline": name, "stage": stage, "enabled": enabled,
            "time": views::time(now), "by": by,
        }));
        self.transitions.insert((name.to_string(), stage.to_string()), transition);
        Ok(StageTransitionOutput { pipeline_name: name.to_string(), stage_name: stage.to_string(), enabled })
    }
}

/// StopPipelineExecution: `abandon` cancels running actions on their
/// agents at once; otherwise they finish and nothing new starts.
impl Handle<StopPipelineExecution> for Driver {
    fn handle(&mut self, op: StopPipelineExecution, ctx: &Context) -> Result<StopPipelineExecutionOutput, OpError> {
        let now = ctx.now;
        let (name, id, abandon, reason) =
            (op.pipeline_name.as_str(), op.pipeline_execution_id.as_str(), op.abandon, op.reason);
        let execution = self.execution(name, id)?;
        if execution.status.is_final() {
            let status = execution.status.as_str();
            return Err(OpError::PipelineExecutionNotStoppable(format!("execution {id} has already ended ({status})")));
        }
        let exec_id = execution.id.clone();
        let reason = if reason.trim().is_empty() { "stopped by an operator".to_string() } else { reason };
        let mode = if abandon { StopMode::Abandon } else { StopMode::Wait };
        self.feed(now, Event::Stop { id: exec_id.clone(), mode, reason });
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
        self.commit(now, Vec::new())?;
        let status = self.execution(name, id)?.status;
        Ok(StopPipelineExecutionOutput {
            pipeline_execution_id: op.pipeline_execution_id.clone(),
            status: status.as_str().to_string(),
        })
    }
}

impl Handle<GetPipelineExecution> for Driver {
    fn handle(&mut self, op: GetPipelineExecution, _: &Context) -> Result<GetPipelineExecutionOutput, OpError> {
        let e = self.execution(&op.pipeline_name, &op.pipeline_execution_id)?;
        let mut view = views::execution(&e);
        let def = self.definition(&e.pipeline, e.version).map_err(|e| OpError::Internal(format!("{e:#}")))?;
        self.hide_run_secrets(&mut view, &def);
        Ok(view)
    }
}

impl Driver {
    /// An execution from memory when it is running, else from the store.
    pub(super) fn execution(&mut self, name: &str, id: &str) -> Result<Execution, OpError> {
        let id = ExecutionId(id.to_string());
        let execution = match self.engine.execution(&id) {
            Some(e) => e.clone(),
            None => self
                .store
                .execution(&id)?
                .ok_or_else(|| OpError::ExecutionNotFound(format!("pipeline \"{name}\" has no execution {id}")))?,
        };
        if execution.pipeline != name {
            return Err(OpError::ExecutionNotFound(format!("pipeline \"{name}\" has no execution {id}")));
        }
        Ok(execution)
    }

    pub(super) fn recent_executions(&mut self, name: &str, limit: usize) -> Result<Vec<Execution>, OpError> {
        let mut list = self.store.executions(name, limit)?;
        for e in &mut list {
            if let Some(live) = self.engine.execution(&e.id) {
                *e = live.clone();
            }
        }
        Ok(list)
    }
}

/// ListPipelineExecutions: a page, newest first, after `nextToken`.
impl Handle<ListPipelineExecutions> for Driver {
    fn handle(&mut self, op: ListPipelineExecutions, _: &Context) -> Result<ListPipelineExecutionsOutput, OpError> {
        let name = op.pipeline_name.as_str();
        let limit = op.max_results.unwrap_or(DEFAULT_HISTORY).clamp(1, 1000);
        let next_token = op.next_token;
        if self.store.pipeline(name, None)?.is_none() {
            return Err(not_found_pipeline(name));
        }
        // One more than asked says whether another page exists.
        let mut list = match &next_token {
            None => self.recent_executions(name, limit + 1)?,
            Some(token) => {
                let bad = || OpError::InvalidNextToken(format!("nextToken {token:?} is not one this listing gave"));
                let cursor = paging::cursor("executions", token)?;
                let (started, id) = cursor.split_once('.').ok_or_else(bad)?;
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
            paging::token("executions", &format!("{}.{}", last.started_at, last.id))
        });
        Ok(ListPipelineExecutionsOutput {
            pipeline_execution_summaries: list.iter().map(views::execution_summary).collect(),
            next_token: next,
        })
    }
}

impl Handle<GetPipelineState> for Driver {
    fn handle(&mut self, op: GetPipelineState, ctx: &Context) -> Result<GetPipelineStateOutput, OpError> {
        Ok(self.pipeline_state(&op.name, ctx.now)?.0)
    }
}

impl Driver {
    /// A pipeline's state and the recent executions it was made of.
    fn pipeline_state(&mut self, name: &str, now: u64) -> Result<(GetPipelineStateOutput, Vec<Execution>), OpError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let recent = self.recent_executions(name, DEFAULT_HISTORY)?;
        let waiting: HashMap<&str, String> =
            self.pending.iter().map(|d| (d.job_id.as_str(), self.waiting_reason(now, d))).collect();
        let transitions: HashMap<&str, &TransitionRecord> =
            self.transitions.iter().filter(|((p, _), _)| p == name).map(|((_, s), t)| (s.as_str(), t)).collect();
        let mut state = views::pipeline_state(&record, &def, &recent, &waiting, &transitions);
        // How change detection of each polled source action is doing.
        if let Some(first) = state.stage_states.first_mut() {
            for action in &mut first.action_states {
                action.polling = self.poll_view(&record.name, &action.action_name);
            }
        }
        state.upstreams = self.upstream_states(name, &def)?;
        Ok((state, recent))
    }
}

// pipe (issue 16): the console's pipelines list in one read.
/// ListPipelineStates: each listed pipeline's state (or why the caller
/// may not read it) and the revision each stage carries.
impl Handle<ListPipelineStates> for Driver {
    fn handle(&mut self, op: ListPipelineStates, ctx: &Context) -> Result<ListPipelineStatesOutput, OpError> {
        let limit = paging::limit(op.max_results, 1000, 1000)?;
        // Names only, a page's range of them (scale, issue 19); listed as
        // ListPipelines lists them, read as GetPipelineState reads.
        let (records, next_token) = self.visible_heads(ctx, "pipeline states", limit, op.next_token.as_deref())?;
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        let mut pipeline_states = Vec::with_capacity(records.len());
        for p in records {
            let resource = crate::policy::pipeline(&p.name);
            let allowed = judge.allows(<GetPipelineState as crate::ops::Operation>::PERMISSION, &resource);
            let mut entry =
                PipelineStateEntry { pipeline_name: p.name.clone(), state: None, error: None, revisions: BTreeMap::new() };
            if !allowed {
                entry.error = Some(format!("{} may not read the state of \"{}\"", ctx.caller.user, p.name));
                pipeline_states.push(entry);
                continue;
            }
            let (state, recent) = self.pipeline_state(&p.name, ctx.now)?;
            for id in state.stage_states.iter().filter_map(|s| s.latest_execution.as_ref()).map(|e| &e.pipeline_execution_id)
            {
                if let Some(e) = recent.iter().find(|e| &e.id.0 == id) {
                    entry.revisions.insert(id.clone(), views::execution_summary(e).source_revisions);
                }
            }
            entry.state = Some(state);
            pipeline_states.push(entry);
        }
        Ok(ListPipelineStatesOutput { pipeline_states, next_token })
    }
}

impl Handle<GetExecutionLogs> for Driver {
    fn handle(&mut self, op: GetExecutionLogs, _: &Context) -> Result<GetExecutionLogsOutput, OpError> {
        let (name, id) = (op.pipeline_name.as_str(), op.pipeline_execution_id.as_str());
        let execution = self.execution(name, id)?;
        let lines = match &op.job_id {
            Some(job) => {
                let limit = op.max_lines.unwrap_or(MAX_JOB_LOG_LINES).clamp(1, MAX_JOB_LOG_LINES);
                self.store.job_logs(&execution.id.0, job, op.after_seq, limit)?
            }
            None => self.store.logs(&execution.id.0)?,
        };
        let mut places: HashMap<String, (String, String)> = HashMap::new();
        for stage in &execution.stages {
            for action in &stage.actions {
                if let Some(job) = &action.job_id {
                    places.insert(job.clone(), (stage.name.clone(), action.name.clone()));
                }
            }
        }
        // Lines of an earlier attempt belong to a job the action no longer
        // holds: its id says where it ran.
        let place = |job: &str| -> Option<(String, String, u32)> {
            let (si, ai, attempt) = engine::job_place(&execution.id.0, job)?;
            let stage = execution.stages.get(si)?;
            Some((stage.name.clone(), stage.actions.get(ai)?.name.clone(), attempt))
        };
        let lines = lines
            .into_iter()
            .map(|l| {
                let found = place(&l.job_id);
                let (stage, action) = places
                    .get(&l.job_id)
                    .cloned()
                    .or_else(|| found.as_ref().map(|(s, a, _)| (s.clone(), a.clone())))
                    .unwrap_or_default();
                let attempt = found.map(|(_, _, n)| n);
                LogLineView { job_id: l.job_id, stage, action, seq: l.seq, text: l.text, attempt }
            })
            .collect();
        Ok(GetExecutionLogsOutput { pipeline_execution_id: op.pipeline_execution_id, lines })
    }
}

/// RollbackStage (to the target, or the newest execution in which the
/// stage succeeded).
impl Handle<RollbackStage> for Driver {
    fn handle(&mut self, op: RollbackStage, ctx: &Context) -> Result<RollbackStageOutput, OpError> {
        let now = ctx.now;
        let (stage, by) = (&op.stage_name, &ctx.caller.user);
        let trigger = Trigger::new("RollbackStage", format!("stage {stage} rolled back by {by}")).by(by);
        let target = op.target_pipeline_execution_id.as_deref();
        let id = self.start_rollback(ctx.now, &op.pipeline_name, stage, target, None, trigger)?;
        self.commit(now, Vec::new())?;
        Ok(RollbackStageOutput { pipeline_execution_id: id.0 })
    }
}

impl Driver {
    /// RollbackStage: runs `stage` again in a new execution with the
    /// artifacts of `target` (by default the newest execution, older than
    /// `before` if given, in which the stage succeeded). Engine only: the
    /// caller commits.
    pub(super) fn start_rollback(
        &mut self,
        now: u64,
        name: &str,
        stage: &str,
        target: Option<&str>,
        before: Option<&ExecutionId>,
        trigger: Trigger,
    ) -> Result<ExecutionId, OpError> {
        let succeeded_here = |e: &Execution| {
            e.status.is_final()
                && e.stages.iter().any(|s| s.name == stage && s.status == Some(crate::engine::StageStatus::Succeeded))
        };
        let target = match target {
            Some(id) => {
                let e = self.execution(name, id)?;
                if !succeeded_here(&e) {
                    return Err(OpError::Conflict(format!(
                        "stage \"{stage}\" did not succeed in execution {id} (or it is still running)"
                    )));
                }
                e
            }
            None => {
                let before_started =
                    before.and_then(|id| self.store.execution(id).ok().flatten()).map(|e| (e.started_at, e.id));
                self.store
                    .executions(name, 200)?
                    .into_iter()
                    .filter(|e| before_started.as_ref().is_none_or(|(at, id)| &e.id != id && e.started_at <= *at))
                    .find(|e| succeeded_here(e))
                    .ok_or_else(|| {
                        OpError::Conflict(format!("no earlier execution of \"{name}\" in which stage \"{stage}\" succeeded"))
                    })?
            }
        };
        let def = self.definition(name, target.version)?;
        // The rollback runs the target's version and revisions again: its
        // author, pusher and webhook secret holder stay barred from
        // approving what it re-runs (issue 15).
        let mut trigger = trigger;
        let author = self.store.pipeline(name, Some(target.version))?.map(|r| r.author).filter(|a| !a.is_empty());
        trigger.version_author = author.or_else(|| target.trigger.version_author.clone());
        trigger.pushed_by = trigger.pushed_by.or_else(|| target.trigger.pushed_by.clone());
        trigger.webhook_secret_by = trigger.webhook_secret_by.or_else(|| target.trigger.webhook_secret_by.clone());
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        let event = Event::Rollback {
            id: id.clone(),
            pipeline: def,
            version: target.version,
            target: Box::new(target),
            stage: stage.to_string(),
            trigger,
        };
        self.engine.handle(now, event).map_err(refused)?;
        Ok(id)
    }
}

impl Driver {
    /// The execution whose approval at `stage`/`action` has `token`: one
    /// waiting now, else `ApprovalAlreadyCompleted` if the token was one of
    /// a recent execution's, else `InvalidApprovalToken`.
    fn approval_by_token(&mut self, name: &str, stage: &str, action: &str, token: &str) -> Result<ExecutionId, OpError> {
        let token_of = |e: &Execution, only_waiting: bool| {
            e.stages.iter().filter(|s| s.name == stage).flat_map(|s| &s.actions).any(|a| {
                a.name == action
                    && a.approval.is_some()
                    && (!only_waiting || a.status == Some(ActionStatus::InProgress))
                    // A waiting approval answers to its current attempt's token
                    // only: an earlier attempt's (a page left open before a
                    // retry) was for artifacts the approver may not have seen.
                    && if only_waiting {
                        views::approval_token(&e.id.0, stage, action, a.attempt.max(1)) == token
                    } else {
                        (1..=a.attempt.max(1)).any(|n| views::approval_token(&e.id.0, stage, action, n) == token)
                    }
            })
        };
        if let Some(e) = self.engine.executions().filter(|e| e.pipeline == name).find(|e| token_of(e, true)) {
            return Ok(e.id.clone());
        }
        if self.recent_executions(name, DEFAULT_HISTORY)?.iter().any(|e| token_of(e, false)) {
            return Err(OpError::ApprovalAlreadyCompleted(format!(
                "the approval at {stage}/{action} that token {token} was for is no longer waiting"
            )));
        }
        Err(OpError::InvalidApprovalToken(format!(
            "token {token} is not the token of an approval at {stage}/{action} of \"{name}\""
        )))
    }
}

/// PutApprovalResult: approve or reject a manual approval, as the caller.
impl Handle<PutApprovalResult> for Driver {
    fn handle(&mut self, op: PutApprovalResult, ctx: &Context) -> Result<PutApprovalResultOutput, OpError> {
        let now = ctx.now;
        let (name, stage, action) = (op.pipeline_name.as_str(), op.stage_name.as_str(), op.action_name.as_str());
        let (execution, by, comment) = (op.execution_id, ctx.caller.user.as_str(), op.summary.as_str());
        let approve = op.status == ApprovalStatus::Approved;
        self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let id = match (execution, op.token) {
            // The id must be one of this pipeline's executions: the caller's
            // permission was checked on this pipeline's action, not another's.
            (Some(id), None) => self.execution(name, &id)?.id,
            // A token sent must be the current attempt's, of that execution.
            (Some(id), Some(token)) => {
                let id = self.execution(name, &id)?.id;
                if self.approval_by_token(name, stage, action, &token)? != id {
                    return Err(OpError::InvalidApprovalToken(format!(
                        "token {token} is not the token of the approval at {stage}/{action} of execution {id}"
                    )));
                }
                id
            }
            (None, Some(token)) => self.approval_by_token(name, stage, action, &token)?,
            (None, None) => self
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
                    OpError::NotFound(format!("no execution of \"{name}\" is waiting for approval at {stage}/{action}"))
                })?,
        };
        let before = approval_at(self.engine.execution(&id), stage, action);
        let event = Event::PutApprovalResult {
            execution: id.clone(),
            stage: stage.to_string(),
            action: action.to_string(),
            by: by.to_string(),
            member_of: self.member_of(&ctx.caller, name),
            decision: if approve { Decision::Approved } else { Decision::Rejected },
            comment: comment.to_string(),
        };
        let outcome = match self.engine.handle(now, event).map_err(|refusal| {
            let message = refusal.to_string();
            if refusal.is_separation_of_duties() {
                return OpError::AccessDenied(message);
            }
            match before {
                ApprovalAt::NotRunning => OpError::InvalidApprovalToken(message),
                ApprovalAt::Decided => OpError::ApprovalAlreadyCompleted(message),
                ApprovalAt::Missing | ApprovalAt::Waiting => OpError::Conflict(message),
            }
        })? {
            Handled::Decided(said) => said,
            Handled::Applied => String::new(),
        };
        self.commit(now, Vec::new())?;
        info!(pipeline = %name, %stage, %action, execution = %id, %by, approve, "approval decision: {outcome}");
        Ok(PutApprovalResultOutput { pipeline_execution_id: id.0, status: op.status, result: outcome })
    }
}

/// Where the approval at `stage`/`action` of an execution stands, read
/// before the engine decides so that a refusal says why: no approval of an
/// execution that is not running waits (CodePipeline's invalid approval
/// token), one no longer waiting was completed, one still waiting refused
/// this caller (the starter, or someone who already decided).
enum ApprovalAt {
    NotRunning,
    Missing,
    Waiting,
    Decided,
}

fn approval_at(execution: Option<&Execution>, stage: &str, action: &str) -> ApprovalAt {
    let Some(execution) = execution else { return ApprovalAt::NotRunning };
    let run = execution.stages.iter().filter(|s| s.name == stage).flat_map(|s| &s.actions).find(|a| a.name == action);
    match run {
        Some(a) if a.approval.is_some() && a.status == Some(ActionStatus::InProgress) => ApprovalAt::Waiting,
        Some(a) if a.approval.is_some() => ApprovalAt::Decided,
        _ => ApprovalAt::Missing,
    }
}

/// An operator's request the engine refused (a retry, a rollback): a
/// conflict with the execution's state, as before the engine's refusals
/// were typed.
fn refused(refusal: Refusal) -> OpError {
    OpError::Conflict(refusal.to_string())
}
