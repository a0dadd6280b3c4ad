//! The pipeline engine: a pure state machine.
//!
//! Fed events with `now` passed in ([`Engine::handle`]); hands out actions
//! to run ([`Engine::poll_dispatch`]) and the executions whose state changed
//! ([`Engine::take_dirty`]), which the driver persists in one transaction
//! before acknowledging anything. It knows nothing of sockets, clocks,
//! databases, agents or wasmtime; ids come in with the events.
//!
//! Recovery is replay: start-up loads every unfinished execution into an
//! empty engine with [`Engine::restore`]; there is no second code path.

mod model;
#[cfg(test)]
mod tests;

pub use model::*;

/// The context variable that tells a source plugin which revision to fetch
/// when the execution pinned one (`codepipeline` is a namespace no pipeline
/// may declare, so it cannot collide).
pub const PINNED_REVISION_VARIABLE: &str = "codepipeline.SourceRevision";

/// Output variables in which a source plugin reports the revision it
/// fetched: CodePipeline's `CommitId` for git-like sources, else `RevisionId`.
pub const REVISION_OUTPUT_VARIABLES: &[&str] = &["CommitId", "RevisionId"];

/// Records the revision a source action reports having fetched.
fn record_source_revision(
    exec: &mut Execution,
    action: &str,
    summary: Option<String>,
    output_variables: &BTreeMap<String, String>,
) {
    let reported = REVISION_OUTPUT_VARIABLES.iter().find_map(|name| output_variables.get(*name)).cloned();
    match exec.source_revisions.get_mut(action) {
        Some(pinned) => pinned.revision_summary = summary,
        None => {
            if let Some(revision_id) = reported {
                exec.source_revisions
                    .insert(action.to_string(), SourceRevision { revision_id, revision_summary: summary, pinned: false });
            }
        }
    }
}

use crate::pipeline::{ExecutionMode, Pipeline, VarRef, resolve};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// Milliseconds since the Unix epoch; the engine never reads a clock.
pub type Millis = u64;

/// What happens to the engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// Start an execution of a stored pipeline version.
    Start {
        id: ExecutionId,
        pipeline: Arc<Pipeline>,
        version: u64,
        trigger: Trigger,
        variables: BTreeMap<String, String>,
        /// Revisions pinned per source action name (the others fetch their
        /// newest revision when they run).
        revisions: BTreeMap<String, String>,
    },
    /// The driver handed the job to an agent (recorded before the job is
    /// sent, so that after a restart the job waits for that agent).
    ActionAssigned { job_id: String, lease_epoch: u64, agent: String },
    /// An agent took the job.
    ActionStarted { job_id: String, lease_epoch: u64, agent: String },
    /// An agent reported the job's end.
    ActionFinished { job_id: String, lease_epoch: u64, result: ActionResult },
    /// The job's agent is gone (killed, cut off, silent past its lease, or
    /// back without the job): the attempt ends `Lost`. An action that
    /// declares `retryOnAgentLost` runs again as a new attempt, at most
    /// [`Engine::set_max_lost_retries`] times; the others fail with the reason.
    ActionLost { job_id: String, lease_epoch: u64, reason: String },
    /// Stop an execution: with `abandon`, running actions are abandoned at
    /// once; without, they finish and nothing new starts.
    Stop { id: ExecutionId, abandon: bool, reason: String },
}

/// How an action attempt ended, in engine terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    Succeeded {
        summary: String,
        output_variables: BTreeMap<String, String>,
        external_url: Option<String>,
        outputs: Vec<(String, ArtifactRef)>,
    },
    Failed {
        message: String,
    },
}

/// An action ready to be scheduled onto an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub job_id: String,
    pub lease_epoch: u64,
    pub execution_id: ExecutionId,
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
    pub owner: String,
    pub provider: String,
    pub provider_version: String,
    pub configuration: Vec<(String, String)>,
    pub variables: Vec<(String, String)>,
    pub inputs: Vec<(String, ArtifactRef)>,
    pub outputs: Vec<(String, Vec<String>)>,
    pub capabilities: crate::pipeline::Capabilities,
    pub agent_labels: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// The agent this attempt was handed to before a controller restart;
    /// `None` for an attempt never handed out.
    pub assigned: Option<String>,
    /// Whether that agent reported having started it (else it may never
    /// have received it).
    pub started: bool,
    /// Agents that lost earlier attempts: others are preferred.
    pub lost_on: Vec<String>,
}

/// A change worth telling watchers about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub at: Millis,
    pub pipeline: String,
    pub execution_id: ExecutionId,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub status: String,
    pub message: Option<String>,
}

/// Where a job lives inside its execution.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobPlace {
    execution: ExecutionId,
    stage: usize,
    action: usize,
}

/// How often an action lost with its agent runs again unless the driver
/// says otherwise (`sluice controller --max-lost-retries`).
pub const DEFAULT_MAX_LOST_RETRIES: u32 = 2;

pub struct Engine {
    executions: HashMap<ExecutionId, Execution>,
    definitions: HashMap<ExecutionId, Arc<Pipeline>>,
    jobs: HashMap<String, JobPlace>,
    ready: VecDeque<Dispatch>,
    dirty: BTreeSet<ExecutionId>,
    notices: Vec<Notice>,
    next_ordinal: u64,
    /// Inbound transitions turned off, by (pipeline, stage).
    disabled: BTreeSet<(String, String)>,
    max_lost_retries: u32,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            executions: HashMap::new(),
            definitions: HashMap::new(),
            jobs: HashMap::new(),
            ready: VecDeque::new(),
            dirty: BTreeSet::new(),
            notices: Vec::new(),
            next_ordinal: 0,
            disabled: BTreeSet::new(),
            max_lost_retries: DEFAULT_MAX_LOST_RETRIES,
        }
    }
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times one action of one run may be lost and run again.
    pub fn set_max_lost_retries(&mut self, retries: u32) {
        self.max_lost_retries = retries;
    }

    /// Loads a stored execution. Unfinished actions are handed out again
    /// with a new lease epoch, so a late result of the old hand-out is
    /// refused; the dispatch names the agent the action was assigned to, if
    /// any, so that the driver can give it back to that agent.
    pub fn restore(&mut self, now: Millis, pipeline: Arc<Pipeline>, mut execution: Execution) {
        let id = execution.id.clone();
        for (si, stage) in execution.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                if let Some(job) = &action.job_id {
                    self.jobs.insert(job.clone(), JobPlace { execution: id.clone(), stage: si, action: ai });
                }
            }
        }
        let mut redispatch = Vec::new();
        for (si, stage) in execution.stages.iter_mut().enumerate() {
            for (ai, action) in stage.actions.iter_mut().enumerate() {
                if action.status == Some(ActionStatus::InProgress) {
                    action.lease_epoch += 1;
                    redispatch.push((si, ai));
                }
            }
        }
        self.next_ordinal = self.next_ordinal.max(execution.ordinal + 1);
        self.definitions.insert(id.clone(), pipeline);
        self.executions.insert(id.clone(), execution);
        for (si, ai) in redispatch {
            if let Err(message) = self.enqueue(&id, si, ai) {
                self.record_result(now, &id, si, ai, ActionResult::Failed { message });
            }
        }
        if self.executions[&id].status == ExecutionStatus::InProgress {
            self.advance(now, &id);
        }
    }

    /// Turns the inbound transition of a stage off or on. Off, executions
    /// stop before the stage (the newest one waits, except in QUEUED mode
    /// where all wait in order); on, the waiting ones go on.
    pub fn set_transition(&mut self, now: Millis, pipeline: &str, stage: &str, enabled: bool) {
        let key = (pipeline.to_string(), stage.to_string());
        if enabled {
            if self.disabled.remove(&key) {
                self.promote(now, pipeline, stage);
            }
        } else {
            self.disabled.insert(key);
        }
    }

    /// RetryStageExecution: a failed execution goes on from its failed
    /// stage, running again its failed actions (or all of the stage's).
    /// The execution comes from the store (ended ones leave memory).
    pub fn retry(
        &mut self,
        now: Millis,
        pipeline: Arc<Pipeline>,
        mut execution: Execution,
        stage: &str,
        all: bool,
    ) -> Result<(), String> {
        if execution.status != ExecutionStatus::Failed {
            return Err(format!("execution {} is {}, not Failed", execution.id, execution.status.as_str()));
        }
        let si = execution
            .stages
            .iter()
            .position(|s| s.name == stage && s.status == Some(StageStatus::Failed))
            .ok_or_else(|| format!("stage \"{stage}\" did not fail in execution {}", execution.id))?;
        execution.status = ExecutionStatus::InProgress;
        execution.status_summary = None;
        execution.updated_at = now;
        execution.stages[si].status = None;
        for action in &mut execution.stages[si].actions {
            if all || action.status != Some(ActionStatus::Succeeded) {
                action.status = None;
                action.error = None;
                action.summary = None;
                action.ended_at = None;
                action.agent = None;
                action.assigned = None;
                action.lost_on.clear();
            }
        }
        let id = execution.id.clone();
        self.notice(now, &execution, None, None, "InProgress", None);
        self.restore(now, pipeline, execution);
        self.advance(now, &id);
        Ok(())
    }

    pub fn execution(&self, id: &ExecutionId) -> Option<&Execution> {
        self.executions.get(id)
    }

    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values()
    }

    /// Executions changed since the last call, to persist in one transaction.
    pub fn take_dirty(&mut self) -> Vec<Execution> {
        let ids = std::mem::take(&mut self.dirty);
        let out: Vec<Execution> = ids.iter().filter_map(|id| self.executions.get(id).cloned()).collect();
        // Finished executions leave memory once persisted; the store keeps them.
        for id in ids {
            if self.executions.get(&id).is_some_and(|e| e.status.is_final()) {
                self.forget(&id);
            }
        }
        out
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The next action to hand to an agent.
    pub fn poll_dispatch(&mut self) -> Option<Dispatch> {
        self.ready.pop_front()
    }

    pub fn handle(&mut self, now: Millis, event: Event) {
        match event {
            Event::Start { id, pipeline, version, trigger, variables, revisions } => {
                self.start(now, id, pipeline, version, trigger, variables, revisions)
            }
            Event::ActionAssigned { job_id, lease_epoch, agent } => {
                let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch) else { return };
                let exec = self.executions.get_mut(&exec_id).expect("job of a known execution");
                let action = &mut exec.stages[si].actions[ai];
                if action.assigned.as_deref() != Some(agent.as_str()) {
                    action.assigned = Some(agent);
                    self.dirty.insert(exec_id);
                }
            }
            Event::ActionStarted { job_id, lease_epoch, agent } => {
                let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch) else { return };
                let exec = self.executions.get_mut(&exec_id).expect("job of a known execution");
                let action = &mut exec.stages[si].actions[ai];
                action.agent = Some(agent);
                action.waiting_reason = None;
                exec.updated_at = now;
                self.dirty.insert(exec_id);
            }
            Event::ActionFinished { job_id, lease_epoch, result } => {
                let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch) else { return };
                self.finish_action(now, &exec_id, si, ai, result);
            }
            Event::ActionLost { job_id, lease_epoch, reason } => {
                let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch) else { return };
                self.lose_action(now, &exec_id, si, ai, reason);
            }
            Event::Stop { id, abandon, reason } => self.stop(now, &id, abandon, reason),
        }
    }

    /// The place of a job if it is still running under this lease epoch.
    fn current_job(&self, job_id: &str, lease_epoch: u64) -> Option<(ExecutionId, usize, usize)> {
        let place = self.jobs.get(job_id)?;
        let exec = self.executions.get(&place.execution)?;
        let action = &exec.stages[place.stage].actions[place.action];
        (action.status == Some(ActionStatus::InProgress) && action.lease_epoch == lease_epoch)
            .then(|| (place.execution.clone(), place.stage, place.action))
    }

    fn stop(&mut self, now: Millis, id: &ExecutionId, abandon: bool, reason: String) {
        let Some(exec) = self.executions.get_mut(id) else { return };
        if exec.status != ExecutionStatus::InProgress && !(abandon && exec.status == ExecutionStatus::Stopping) {
            return;
        }
        exec.status = ExecutionStatus::Stopping;
        exec.status_summary = Some(reason);
        exec.updated_at = now;
        let mut abandoned = Vec::new();
        if abandon {
            for stage in &mut exec.stages {
                for action in &mut stage.actions {
                    if action.status == Some(ActionStatus::InProgress) {
                        action.status = Some(ActionStatus::Abandoned);
                        action.ended_at = Some(now);
                        action.error = Some("abandoned: the execution was stopped".into());
                        abandoned.push((stage.name.clone(), action.name.clone()));
                    }
                }
            }
        }
        let snapshot = exec.clone();
        // Abandoned actions are no longer handed out either.
        self.ready.retain(|d| &d.execution_id != id);
        self.notice(now, &snapshot, None, None, "Stopping", None);
        for (stage, action) in abandoned {
            self.notice(now, &snapshot, Some(stage), Some(action), "Abandoned", None);
        }
        self.advance(now, id);
    }

    fn start(
        &mut self,
        now: Millis,
        id: ExecutionId,
        pipeline: Arc<Pipeline>,
        version: u64,
        trigger: Trigger,
        overrides: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
    ) {
        let mut variables = BTreeMap::new();
        for v in &pipeline.variables {
            if let Some(d) = &v.default_value {
                variables.insert(v.name.clone(), d.clone());
            }
        }
        variables.extend(overrides);
        let stages = pipeline
            .stages
            .iter()
            .map(|s| StageRun {
                name: s.name.clone(),
                status: None,
                actions: s
                    .actions
                    .iter()
                    .map(|a| ActionRun { name: a.name.clone(), run_order: a.run_order(), ..ActionRun::default() })
                    .collect(),
            })
            .collect();
        let execution = Execution {
            id: id.clone(),
            pipeline: pipeline.name.clone(),
            version,
            status: ExecutionStatus::InProgress,
            status_summary: None,
            trigger,
            started_at: now,
            updated_at: now,
            variables,
            stages,
            artifacts: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            ordinal: self.next_ordinal,
            waiting_for: None,
            source_revisions: revisions
                .into_iter()
                .map(|(action, revision_id)| {
                    (action, SourceRevision { revision_id, revision_summary: None, pinned: true })
                })
                .collect(),
        };
        self.next_ordinal += 1;
        self.notice(now, &execution, None, None, "InProgress", None);
        self.definitions.insert(id.clone(), pipeline);
        self.executions.insert(id.clone(), execution);
        self.advance(now, &id);
    }

    /// Ends an attempt whose agent is gone as `Lost`; runs the action again
    /// when it declares `retryOnAgentLost`, has retries left and the
    /// execution is not stopping, else the stage fails with the reason.
    fn lose_action(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize, reason: String) {
        let def = self.definitions[exec_id].clone();
        let action_def = &def.stages[si].actions[ai];
        let max = self.max_lost_retries;
        let exec = self.executions.get_mut(exec_id).expect("known execution");
        let running = exec.status == ExecutionStatus::InProgress;
        let action = &mut exec.stages[si].actions[ai];
        let lost_before = action.lost_on.len() as u32;
        let agent = action.agent.take().or(action.assigned.take());
        action.lost_on.push(agent.unwrap_or_else(|| "unknown".into()));
        action.status = Some(ActionStatus::Lost);
        action.ended_at = Some(now);
        action.waiting_reason = None;
        let retry = action_def.retries_on_agent_lost() && lost_before < max && running;
        action.error = Some(if retry || !running {
            reason.clone()
        } else if !action_def.retries_on_agent_lost() {
            format!("{reason}; not retried: the action does not set retryOnAgentLost")
        } else {
            format!("{reason}; not retried: lost {} times, the limit is {max} retries", lost_before + 1)
        });
        exec.updated_at = now;
        let snapshot = exec.clone();
        let (stage, name) = (snapshot.stages[si].name.clone(), snapshot.stages[si].actions[ai].name.clone());
        self.notice(now, &snapshot, Some(stage), Some(name), "Lost", Some(reason));
        self.dirty.insert(exec_id.clone());
        if retry {
            self.start_action(now, exec_id, si, ai);
        }
        self.advance(now, exec_id);
    }

    fn finish_action(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize, result: ActionResult) {
        self.record_result(now, exec_id, si, ai, result);
        self.advance(now, exec_id);
    }

    /// Records how an action ended, without moving the execution on.
    fn record_result(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize, result: ActionResult) {
        let def = self.definitions[exec_id].clone();
        let exec = self.executions.get_mut(exec_id).expect("known execution");
        let action_def = &def.stages[si].actions[ai];
        let action = &mut exec.stages[si].actions[ai];
        action.ended_at = Some(now);
        action.waiting_reason = None;
        let (status, message) = match result {
            ActionResult::Succeeded { summary, output_variables, external_url, outputs } => {
                action.status = Some(ActionStatus::Succeeded);
                action.summary = Some(summary);
                action.external_url = external_url;
                action.output_variables = output_variables.clone();
                action.outputs = outputs.clone();
                for (name, artifact) in outputs {
                    exec.artifacts.insert(name, artifact);
                }
                if action_def.action_type_id.category == "Source" {
                    let summary = action.summary.clone();
                    record_source_revision(exec, &action_def.name, summary, &output_variables);
                }
                if let Some(ns) = &action_def.namespace {
                    exec.namespaces.insert(ns.clone(), output_variables);
                }
                ("Succeeded", None)
            }
            ActionResult::Failed { message } => {
                action.status = Some(ActionStatus::Failed);
                action.error = Some(message.clone());
                ("Failed", Some(message))
            }
        };
        exec.updated_at = now;
        let (stage_name, action_name) = (exec.stages[si].name.clone(), exec.stages[si].actions[ai].name.clone());
        let snapshot = exec.clone();
        self.notice(now, &snapshot, Some(stage_name), Some(action_name), status, message);
        self.dirty.insert(exec_id.clone());
    }

    /// Moves an execution forward as far as it can go now.
    fn advance(&mut self, now: Millis, exec_id: &ExecutionId) {
        self.dirty.insert(exec_id.clone());
        loop {
            let exec = &self.executions[exec_id];
            if exec.status.is_final() {
                return;
            }
            if exec.status == ExecutionStatus::Stopping {
                // Nothing new starts; once nothing runs, it has stopped.
                let running = exec.stages.iter().flat_map(|s| &s.actions).any(|a| a.status == Some(ActionStatus::InProgress));
                if !running {
                    let current = exec.stages.iter().position(|s| s.status == Some(StageStatus::InProgress));
                    if let Some(si) = current {
                        self.end_stage(now, exec_id, si, StageStatus::Stopped);
                    }
                    let summary = self.executions[exec_id].status_summary.clone();
                    self.end_execution(now, exec_id, ExecutionStatus::Stopped, summary);
                }
                return;
            }
            let Some(si) = exec.stages.iter().position(|s| s.status != Some(StageStatus::Succeeded)) else {
                self.end_execution(now, exec_id, ExecutionStatus::Succeeded, None);
                return;
            };
            let stage = &exec.stages[si];
            if stage.status.is_none() {
                if !self.may_enter(now, exec_id, si) {
                    return;
                }
                let exec = self.executions.get_mut(exec_id).expect("known");
                exec.waiting_for = None;
                exec.stages[si].status = Some(StageStatus::InProgress);
                let snapshot = exec.clone();
                let name = snapshot.stages[si].name.clone();
                self.notice(now, &snapshot, Some(name), None, "InProgress", None);
                continue;
            }
            // The lowest run order with an action not yet succeeded.
            let stage = &self.executions[exec_id].stages[si];
            let Some(order) = stage
                .actions
                .iter()
                .filter(|a| a.status != Some(ActionStatus::Succeeded))
                .map(|a| a.run_order)
                .min()
            else {
                self.end_stage(now, exec_id, si, StageStatus::Succeeded);
                continue;
            };
            let group: Vec<usize> =
                stage.actions.iter().enumerate().filter(|(_, a)| a.run_order == order).map(|(i, _)| i).collect();
            // Every action of the group starts together, even when one of
            // them fails at once (e.g. a variable that does not resolve).
            let to_start: Vec<usize> = group.iter().copied().filter(|&ai| stage.actions[ai].status.is_none()).collect();
            if !to_start.is_empty() {
                for ai in to_start {
                    self.start_action(now, exec_id, si, ai);
                }
                continue;
            }
            if group.iter().any(|&ai| stage.actions[ai].status == Some(ActionStatus::InProgress)) {
                return;
            }
            // The group has settled with a failure (a success would have
            // moved the lowest unfinished run order on): the stage and the
            // execution fail, naming the first failed action.
            let ai = group
                .iter()
                .copied()
                .find(|&ai| stage.actions[ai].status != Some(ActionStatus::Succeeded))
                .expect("a settled group that is not all succeeded has a failure");
            let action = &stage.actions[ai];
            let message = format!(
                "stage \"{}\" failed: action \"{}\": {}",
                stage.name,
                action.name,
                action.error.as_deref().unwrap_or("failed")
            );
            self.end_stage(now, exec_id, si, StageStatus::Failed);
            self.end_execution(now, exec_id, ExecutionStatus::Failed, Some(message));
            return;
        }
    }

    fn start_action(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize) {
        let exec = self.executions.get_mut(exec_id).expect("known");
        if exec.status.is_final() {
            return;
        }
        let action = &mut exec.stages[si].actions[ai];
        action.attempt += 1;
        action.lease_epoch += 1;
        action.status = Some(ActionStatus::InProgress);
        action.started_at = Some(now);
        action.ended_at = None;
        action.error = None;
        action.summary = None;
        action.agent = None;
        action.assigned = None;
        let job_id = format!("{}.{}.{}.{}", exec_id, si, ai, action.attempt);
        action.job_id = Some(job_id.clone());
        self.jobs.insert(job_id, JobPlace { execution: exec_id.clone(), stage: si, action: ai });
        let snapshot = exec.clone();
        let (stage, name) = (snapshot.stages[si].name.clone(), snapshot.stages[si].actions[ai].name.clone());
        self.notice(now, &snapshot, Some(stage), Some(name), "InProgress", None);
        if let Err(message) = self.enqueue(exec_id, si, ai) {
            self.record_result(now, exec_id, si, ai, ActionResult::Failed { message });
        }
    }

    /// Queues the dispatch of an in-progress action; fails when its
    /// configuration or inputs cannot be resolved.
    fn enqueue(&mut self, exec_id: &ExecutionId, si: usize, ai: usize) -> Result<(), String> {
        let def = self.definitions[exec_id].clone();
        let exec = &self.executions[exec_id];
        let stage_def = &def.stages[si];
        let action_def = &stage_def.actions[ai];
        let run = &exec.stages[si].actions[ai];
        let lookup = |r: &VarRef| -> Option<String> {
            match r.namespace.as_str() {
                "variables" => exec.variables.get(&r.name).cloned(),
                "codepipeline" if r.name == "PipelineExecutionId" => Some(exec.id.to_string()),
                "codepipeline" if r.name == "PipelineName" => Some(exec.pipeline.clone()),
                ns => exec.namespaces.get(ns).and_then(|vars| vars.get(&r.name)).cloned(),
            }
        };
        let mut configuration = Vec::new();
        for (key, value) in action_def.configuration.iter() {
            let resolved = resolve(value, lookup).map_err(|e| format!("configuration \"{key}\": {e}"))?;
            configuration.push((key.to_string(), resolved));
        }
        let mut inputs = Vec::new();
        for input in &action_def.input_artifacts {
            let artifact = exec
                .artifacts
                .get(&input.name)
                .ok_or_else(|| format!("input artifact \"{}\" was not produced", input.name))?;
            inputs.push((input.name.clone(), artifact.clone()));
        }
        let mut variables: Vec<(String, String)> =
            exec.variables.iter().map(|(k, v)| (format!("variables.{k}"), v.clone())).collect();
        for (ns, vars) in &exec.namespaces {
            variables.extend(vars.iter().map(|(k, v)| (format!("{ns}.{k}"), v.clone())));
        }
        variables.push(("codepipeline.PipelineExecutionId".into(), exec.id.to_string()));
        if let Some(pinned) = exec.source_revisions.get(&action_def.name).filter(|r| r.pinned) {
            variables.push((PINNED_REVISION_VARIABLE.into(), pinned.revision_id.clone()));
        }
        self.ready.push_back(Dispatch {
            job_id: run.job_id.clone().expect("in-progress action has a job"),
            lease_epoch: run.lease_epoch,
            execution_id: exec_id.clone(),
            pipeline: exec.pipeline.clone(),
            stage: stage_def.name.clone(),
            action: action_def.name.clone(),
            attempt: run.attempt,
            owner: action_def.action_type_id.owner.clone(),
            provider: action_def.action_type_id.provider.clone(),
            provider_version: action_def.action_type_id.version.clone(),
            configuration,
            variables,
            inputs,
            outputs: action_def
                .output_artifacts
                .iter()
                .map(|o| (o.name.clone(), o.files.clone().unwrap_or_default()))
                .collect(),
            capabilities: action_def.capabilities.clone().unwrap_or_default(),
            agent_labels: action_def.agent_labels.clone(),
            timeout_ms: u64::from(action_def.timeout_minutes()) * 60_000,
            assigned: run.assigned.clone(),
            started: run.agent.is_some(),
            lost_on: run.lost_on.clone(),
        });
        Ok(())
    }

    fn end_stage(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, status: StageStatus) {
        let exec = self.executions.get_mut(exec_id).expect("known");
        exec.stages[si].status = Some(status);
        exec.updated_at = now;
        let snapshot = exec.clone();
        let name = snapshot.stages[si].name.clone();
        self.notice(now, &snapshot, Some(name.clone()), None, status.as_str(), None);
        self.promote(now, &snapshot.pipeline, &name);
    }

    /// Whether an execution may enter stage `si` now. In SUPERSEDED and
    /// QUEUED mode a stage holds one execution at a time; the others wait.
    /// In SUPERSEDED mode a newer waiting execution replaces an older
    /// waiting one, which ends Superseded.
    fn may_enter(&mut self, now: Millis, exec_id: &ExecutionId, si: usize) -> bool {
        let mode = self.definitions[exec_id].execution_mode;
        let me = &self.executions[exec_id];
        let stage = me.stages[si].name.clone();
        let blocked = si > 0 && self.disabled.contains(&(me.pipeline.clone(), stage.clone()));
        if mode == ExecutionMode::Parallel && !blocked {
            return true;
        }
        let held = mode != ExecutionMode::Parallel
            && self.executions.values().any(|e| {
                e.id != me.id
                    && e.pipeline == me.pipeline
                    && e.stages.iter().any(|s| s.name == stage && s.status == Some(StageStatus::InProgress))
            });
        // Someone queued earlier goes first even if the stage is free now.
        let earlier_waiter = mode == ExecutionMode::Queued
            && self.executions.values().any(|e| {
                e.id != me.id
                    && e.pipeline == me.pipeline
                    && e.waiting_for.as_deref() == Some(stage.as_str())
                    && e.ordinal < me.ordinal
            });
        if !blocked && !held && !earlier_waiter {
            return true;
        }
        if me.waiting_for.as_deref() != Some(stage.as_str()) {
            let (pipeline, ordinal) = (me.pipeline.clone(), me.ordinal);
            self.executions.get_mut(exec_id).expect("known").waiting_for = Some(stage.clone());
            self.dirty.insert(exec_id.clone());
            // Only QUEUED keeps every waiting execution.
            if mode != ExecutionMode::Queued {
                let older: Vec<ExecutionId> = self
                    .executions
                    .values()
                    .filter(|e| {
                        e.pipeline == pipeline
                            && e.waiting_for.as_deref() == Some(stage.as_str())
                            && e.ordinal < ordinal
                            && !e.status.is_final()
                    })
                    .map(|e| e.id.clone())
                    .collect();
                for old in older {
                    let message = format!("superseded by a newer execution {exec_id}");
                    self.end_execution(now, &old, ExecutionStatus::Superseded, Some(message));
                }
            }
        }
        false
    }

    /// A stage of a pipeline was left, or its transition enabled: the
    /// executions waiting for it try again in start order (in QUEUED mode
    /// the first takes the stage and the others keep waiting).
    fn promote(&mut self, now: Millis, pipeline: &str, stage: &str) {
        let mut waiting: Vec<(u64, ExecutionId)> = self
            .executions
            .values()
            .filter(|e| e.pipeline == pipeline && e.waiting_for.as_deref() == Some(stage) && !e.status.is_final())
            .map(|e| (e.ordinal, e.id.clone()))
            .collect();
        waiting.sort();
        for (_, id) in waiting {
            self.advance(now, &id);
        }
    }

    fn end_execution(&mut self, now: Millis, exec_id: &ExecutionId, status: ExecutionStatus, message: Option<String>) {
        let exec = self.executions.get_mut(exec_id).expect("known");
        exec.waiting_for = None;
        exec.status = status;
        exec.status_summary = message.clone();
        exec.updated_at = now;
        let snapshot = exec.clone();
        self.notice(now, &snapshot, None, None, status.as_str(), message);
        self.dirty.insert(exec_id.clone());
    }

    fn forget(&mut self, exec_id: &ExecutionId) {
        if let Some(exec) = self.executions.remove(exec_id) {
            for stage in &exec.stages {
                for action in &stage.actions {
                    if let Some(job) = &action.job_id {
                        self.jobs.remove(job);
                    }
                }
            }
        }
        self.definitions.remove(exec_id);
    }

    fn notice(
        &mut self,
        now: Millis,
        exec: &Execution,
        stage: Option<String>,
        action: Option<String>,
        status: &str,
        message: Option<String>,
    ) {
        self.notices.push(Notice {
            at: now,
            pipeline: exec.pipeline.clone(),
            execution_id: exec.id.clone(),
            stage,
            action,
            status: status.to_string(),
            message,
        });
    }
}
