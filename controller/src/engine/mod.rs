//! The pipeline engine: a pure state machine.
//!
//! Every input is an [`Event`] fed to [`Engine::handle`] with `now` passed
//! in; the few an operator can ask for in vain (a retry, an approval
//! decision, a rollback) are refused with a typed [`Refusal`]. What the
//! engine wants done is polled: actions to run ([`Engine::poll_dispatch`]),
//! the executions whose state changed ([`Engine::take_dirty`]), which the
//! driver persists in one transaction before acknowledging anything,
//! notices for watchers, rollbacks to start, jobs to cancel after their
//! timeout ([`Engine::take_expired`]), and when to wake it next
//! ([`Engine::poll_timeout`], answered with [`Event::Timeout`]). It knows
//! nothing of sockets, clocks, databases, agents or wasmtime; ids come in
//! with the events.
//!
//! Recovery is replay: start-up loads every unfinished execution into an
//! empty engine with [`Event::Restore`]; there is no second code path.

mod gates;
use crate::pipeline::approvers;
mod model;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use crate::pipeline::conditions::Outcome;
use gates::Gate;
pub use gates::RollbackRequest;
pub use model::*;

/// The context variable that tells a source plugin which revision to fetch
/// when the execution pinned one (`codepipeline` is a namespace no pipeline
/// may declare, so it cannot collide).
pub const PINNED_REVISION_VARIABLE: &str = "codepipeline.SourceRevision";

/// Output variables in which a source plugin reports the revision it
/// fetched: CodePipeline's `CommitId` for git-like sources, else `RevisionId`.
pub const REVISION_OUTPUT_VARIABLES: &[&str] = &["CommitId", "RevisionId"];

/// How long after an action's timeout the controller gives up on an agent
/// that reported nothing (the agent enforces the timeout itself).
pub const TIMEOUT_GRACE_MS: u64 = 60_000;

/// The id of an action's attempt: `EXECUTION.STAGE.ACTION.ATTEMPT` (stage
/// and action by index). The one place that spells it, with [`job_place`].
pub fn job_id(execution: &ExecutionId, stage: usize, action: usize, attempt: u32) -> String {
    format!("{}.{}.{}.{}", execution, stage, action, attempt)
}

/// Where a job id of `execution` points: stage index, action index and
/// attempt (issue 16, pages: the log lines of earlier attempts, whose jobs
/// an action no longer holds).
pub fn job_place(execution: &str, job_id: &str) -> Option<(usize, usize, u32)> {
    let rest = job_id.strip_prefix(execution)?.strip_prefix('.')?;
    let mut parts = rest.split('.');
    let place = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(place)
}

/// The built-in approval provider, decided through the API.
pub fn is_manual_approval(action: &crate::pipeline::Action) -> bool {
    action.action_type_id.category == "Approval" && action.action_type_id.provider == "manual"
}

/// `RequiredApprovals` (1 by default; validation keeps it a whole number).
fn required_approvals(action: &crate::pipeline::Action) -> u32 {
    action.configuration.get("RequiredApprovals").and_then(|v| v.trim().parse().ok()).filter(|n| *n >= 1).unwrap_or(1)
}

/// When an in-progress action times out: manual approvals and actions no
/// agent has started at their timeout, started ones [`TIMEOUT_GRACE_MS`]
/// later. `None` for an action not in progress.
fn deadline(action_def: &crate::pipeline::Action, run: &ActionRun) -> Option<Millis> {
    if run.status != Some(ActionStatus::InProgress) {
        return None;
    }
    let timeout = u64::from(action_def.timeout_minutes()) * 60_000;
    let started = run.started_at?;
    if run.approval.is_some() || run.agent.is_none() {
        Some(started + timeout)
    } else {
        Some(started + timeout + TIMEOUT_GRACE_MS)
    }
}

/// Why an action failed at its deadline.
fn timeout_message(action_def: &crate::pipeline::Action, run: &ActionRun) -> String {
    let human = crate::pipeline::limits::human_minutes(action_def.timeout_minutes());
    if run.approval.is_some() {
        format!("approval timed out after {human}")
    } else if run.agent.is_none() {
        let why = run.waiting_reason.clone().unwrap_or_else(|| "no agent took it".into());
        format!("not started within {human}: {why}")
    } else {
        format!("timed out after {human}: the agent reported no result")
    }
}

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

/// What happens to the engine: its only input.
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
        /// What the upstream executions of its `pipeline@1` sources carried
        /// (issue 21, feed); kept on the execution, never interpreted here.
        origins: BTreeMap<String, Origin>,
    },
    /// Loads stored unfinished executions (start-up, or a retried one).
    /// All are loaded first, then moved on in start order: an execution
    /// must see every other one (and the stages they hold) before it may
    /// enter a stage. Unfinished actions that were handed out are handed
    /// out again with a new lease epoch, so a late result of the old
    /// hand-out is refused.
    Restore { executions: Vec<(Arc<Pipeline>, Execution)> },
    /// The driver handed the job to an agent (recorded before the job is
    /// sent, so that after a restart the job waits for that agent).
    ActionAssigned { job_id: JobId, lease_epoch: u64, agent: AgentId },
    /// An agent took the job.
    ActionStarted { job_id: JobId, lease_epoch: u64, agent: AgentId },
    /// An agent reported the job's end.
    ActionFinished { job_id: JobId, lease_epoch: u64, result: ActionResult },
    /// The job's agent is gone (killed, cut off, silent past its lease, or
    /// back without the job): the attempt ends `Lost`. An action that
    /// declares `retryOnAgentLost` runs again as a new attempt, at most
    /// [`Engine::set_max_lost_retries`] times; the others fail with the reason.
    ActionLost { job_id: JobId, lease_epoch: u64, reason: String },
    /// StopPipelineExecution.
    Stop { id: ExecutionId, mode: StopMode, reason: String },
    /// Turns the inbound transition of a stage off or on. Off, executions
    /// stop before the stage (the newest one waits, except in QUEUED mode
    /// where all wait in order); on, the waiting ones go on.
    SetTransition { pipeline: String, stage: String, state: TransitionState },
    /// RetryStageExecution: a failed execution goes on from its failed
    /// stage, running again the actions `mode` names. The execution comes
    /// from the store (ended ones leave memory). Refused unless the
    /// execution failed in that stage.
    RetryStage { pipeline: Arc<Pipeline>, execution: Box<Execution>, stage: String, mode: RetryMode },
    /// PutApprovalResult: a decision on an in-progress manual approval of
    /// an execution this engine runs. Only those its `Approvers` name may
    /// decide (anyone, without it); whoever started the execution, wrote
    /// the pipeline version it runs or pushed its revision may not approve
    /// it; each approver counts once; one rejection fails it.
    /// Accepted as [`Handled::Decided`], with what it did in words.
    PutApprovalResult {
        execution: ExecutionId,
        stage: String,
        action: String,
        by: String,
        /// The teams and roles `by` holds, as `team:NAME` and `role:NAME`
        /// (what `Approvers` may name besides `user:NAME`).
        member_of: Vec<String>,
        decision: Decision,
        comment: String,
    },
    /// RollbackStage: a new execution `id` runs `stage` again with what
    /// the stages before it produced in `target` (an execution in which
    /// that stage succeeded), then ends.
    Rollback {
        id: ExecutionId,
        pipeline: Arc<Pipeline>,
        version: u64,
        target: Box<Execution>,
        stage: String,
        trigger: Trigger,
    },
    /// Time has come ([`Engine::poll_timeout`]): every in-progress action
    /// past its `timeoutInMinutes` fails. Manual approvals fail at the
    /// timeout, agent actions that never started at the timeout, running
    /// ones [`TIMEOUT_GRACE_MS`] later (the agent stops them itself at the
    /// timeout; this covers an agent that never answers). The agent
    /// actions failed are polled with [`Engine::take_expired`], to cancel.
    Timeout,
}

/// How StopPipelineExecution treats running actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// They finish; nothing new starts (CodePipeline's "stop and wait").
    Wait,
    /// They are abandoned at once and their late results refused.
    Abandon,
}

/// Whether executions may enter a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionState {
    Enabled,
    Disabled,
}

/// Which actions of a failed stage a retry runs again: CodePipeline's
/// `FAILED_ACTIONS` and `ALL_ACTIONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    FailedActions,
    AllActions,
}

/// A person's decision on a manual approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

/// What an accepted event did, where its caller has something to report;
/// everything else it changed is polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// An approval decision was recorded: what it did, in words.
    Decided(String),
}

/// Why the engine refused an event (the state it is in does not allow it);
/// nothing changed. Only operator requests are refused: a result of an
/// agent that no longer holds its job is ignored, as it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("execution {id} is {}, not Failed", .status.as_str())]
    NotFailed { id: ExecutionId, status: ExecutionStatus },
    #[error("stage \"{stage}\" did not fail in execution {id}")]
    StageDidNotFail { id: ExecutionId, stage: String },
    #[error("execution {0} is not in progress")]
    NotInProgress(ExecutionId),
    #[error("no stage \"{0}\"")]
    NoStage(String),
    #[error("stage \"{stage}\" has no action \"{action}\"")]
    NoAction { stage: String, action: String },
    #[error("action \"{stage}/{action}\" of execution {id} is not waiting for approval")]
    NotWaitingForApproval { id: ExecutionId, stage: String, action: String },
    #[error("{by} started execution {id} and cannot approve it")]
    StarterMayNotApprove { id: ExecutionId, by: String },
    // Separation of duties (issue 15, gov).
    #[error("{by} authored version {version} of \"{pipeline}\" and may not approve its execution")]
    AuthorMayNotApprove { pipeline: String, version: u64, by: String },
    #[error("{by} pushed the revision execution {id} runs and may not approve it")]
    PusherMayNotApprove { id: ExecutionId, by: String },
    #[error("{by} set the webhook secret that started execution {id} and may not approve it")]
    WebhookHolderMayNotApprove { id: ExecutionId, by: String },
    #[error("{by} is not among the approvers of {stage}/{action} (Approvers: {approvers})")]
    NotAnApprover { stage: String, action: String, by: String, approvers: String },
    #[error("{by} has already decided on \"{stage}/{action}\" of execution {id}")]
    AlreadyDecided { id: ExecutionId, stage: String, action: String, by: String },
    #[error("the first stage cannot be rolled back: start the pipeline on a revision instead")]
    FirstStage,
    #[error("stage \"{stage}\" did not succeed in execution {id}")]
    StageDidNotSucceed { id: ExecutionId, stage: String },
}

/// Where an approval waits: what a refusal of a decider names.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalAt<'a> {
    pub id: &'a ExecutionId,
    pub pipeline: &'a str,
    pub version: u64,
    pub stage: &'a str,
    pub action: &'a str,
}

/// Why `decider` may not make `decision` on a waiting `approval` of an
/// execution `trigger` started, if they may not: not among its approvers;
/// the starter, the version's author, the pusher or the webhook secret's
/// holder approving (they may still reject); or a second decision. The
/// engine's own check, pure, so that the console offers only what the
/// engine would accept.
pub fn decider_refusal(
    at: &ApprovalAt<'_>,
    approval: &ApprovalState,
    trigger: &Trigger,
    decider: &approvers::Decider<'_>,
    decision: Decision,
) -> Option<Refusal> {
    let by = decider.user;
    let (id, stage, action) = (at.id, at.stage, at.action);
    if !approvers::eligible(&approval.approvers, decider) {
        return Some(Refusal::NotAnApprover {
            stage: stage.to_string(),
            action: action.to_string(),
            by: by.to_string(),
            approvers: approval.approvers.clone(),
        });
    }
    // Whoever is barred may still reject: stopping one's own change is no
    // breach of the separation of duties.
    if decision == Decision::Approved {
        let is = |who: &Option<String>| who.as_deref() == Some(by);
        if is(&trigger.started_by) {
            return Some(Refusal::StarterMayNotApprove { id: id.clone(), by: by.to_string() });
        }
        if is(&trigger.version_author) {
            return Some(Refusal::AuthorMayNotApprove {
                pipeline: at.pipeline.to_string(),
                version: at.version,
                by: by.to_string(),
            });
        }
        if is(&trigger.pushed_by) {
            return Some(Refusal::PusherMayNotApprove { id: id.clone(), by: by.to_string() });
        }
        if is(&trigger.webhook_secret_by) {
            return Some(Refusal::WebhookHolderMayNotApprove { id: id.clone(), by: by.to_string() });
        }
    }
    if approval.decisions.iter().any(|d| d.by == by) {
        return Some(Refusal::AlreadyDecided {
            id: id.clone(),
            stage: stage.to_string(),
            action: action.to_string(),
            by: by.to_string(),
        });
    }
    None
}

impl Refusal {
    /// A decider the approval does not accept: not among its approvers,
    /// or barred from approving this execution (a 403, not a conflict).
    pub fn is_separation_of_duties(&self) -> bool {
        matches!(
            self,
            Self::StarterMayNotApprove { .. }
                | Self::AuthorMayNotApprove { .. }
                | Self::PusherMayNotApprove { .. }
                | Self::WebhookHolderMayNotApprove { .. }
                | Self::NotAnApprover { .. }
        )
    }
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
    pub job_id: JobId,
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
    pub assigned: Option<AgentId>,
    /// Whether that agent reported having started it (else it may never
    /// have received it).
    pub started: bool,
    /// Agents that lost earlier attempts: others are preferred.
    pub lost_on: Vec<AgentId>,
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

/// Whether [`Engine::advance`] goes on moving an execution after a step.
enum Flow {
    Continue,
    Stop,
}

/// An action's place: execution, stage index, action index.
type ActionPlace = (ExecutionId, usize, usize);

pub struct Engine {
    executions: HashMap<ExecutionId, Arc<Execution>>,
    definitions: HashMap<ExecutionId, Arc<Pipeline>>,
    jobs: HashMap<JobId, JobPlace>,
    ready: VecDeque<Dispatch>,
    dirty: BTreeSet<ExecutionId>,
    notices: Vec<Notice>,
    next_ordinal: u64,
    /// Inbound transitions turned off, by (pipeline, stage).
    disabled: BTreeSet<(String, String)>,
    /// Rollbacks stage conditions asked for, for the driver.
    rollbacks: Vec<RollbackRequest>,
    max_lost_retries: u32,
    /// When each in-progress action times out, indexed both ways so that
    /// [`Engine::poll_timeout`] is the first entry and an action that ends
    /// leaves at once.
    deadlines: BTreeSet<(Millis, ActionPlace)>,
    deadline_of: HashMap<ActionPlace, Millis>,
    /// Agent jobs failed by their timeout since the last `take_expired`.
    expired: Vec<JobId>,
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
            rollbacks: Vec::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            expired: Vec::new(),
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

    /// [`Event::Restore`].
    fn restore(&mut self, now: Millis, mut executions: Vec<(Arc<Pipeline>, Execution)>) {
        executions.sort_by_key(|(_, e)| e.ordinal);
        let mut loaded = Vec::new();
        for (pipeline, execution) in executions {
            loaded.push(self.load(pipeline, execution));
        }
        for (id, redispatch) in loaded {
            for (si, ai) in redispatch {
                if let Err(message) = self.enqueue(&id, si, ai) {
                    self.record_result(now, &id, si, ai, ActionResult::Failed { message });
                }
            }
        }
        let mut ids: Vec<(u64, ExecutionId)> = self.executions.values().map(|e| (e.ordinal, e.id.clone())).collect();
        ids.sort();
        for (_, id) in ids {
            if self.executions[&id].status == ExecutionStatus::InProgress
                || self.executions[&id].status == ExecutionStatus::Stopping
            {
                self.advance(now, &id);
            }
        }
    }

    /// Puts a stored execution into memory; returns the actions to hand out again.
    fn load(&mut self, pipeline: Arc<Pipeline>, mut execution: Execution) -> (ExecutionId, Vec<(usize, usize)>) {
        let id = execution.id.clone();
        for (si, stage) in execution.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                if let Some(job) = &action.job_id {
                    self.jobs.insert(JobId(job.clone()), JobPlace { execution: id.clone(), stage: si, action: ai });
                }
            }
        }
        let mut redispatch = Vec::new();
        for (si, stage) in execution.stages.iter_mut().enumerate() {
            for (ai, action) in stage.actions.iter_mut().enumerate() {
                // Approvals wait for people, not agents.
                if action.status == Some(ActionStatus::InProgress) && action.approval.is_none() {
                    action.lease_epoch += 1;
                    redispatch.push((si, ai));
                }
            }
        }
        self.next_ordinal = self.next_ordinal.max(execution.ordinal + 1);
        self.definitions.insert(id.clone(), pipeline);
        self.executions.insert(id.clone(), Arc::new(execution));
        self.redispatch_rules(&id);
        let stages: Vec<usize> = self.executions[&id].stages.iter().map(|s| s.actions.len()).collect();
        for (si, actions) in stages.into_iter().enumerate() {
            for ai in 0..actions {
                self.schedule_timeout(&id, si, ai);
            }
        }
        (id, redispatch)
    }

    /// [`Event::SetTransition`].
    fn set_transition(&mut self, now: Millis, pipeline: String, stage: String, state: TransitionState) {
        let key = (pipeline, stage);
        match state {
            TransitionState::Enabled => {
                if self.disabled.remove(&key) {
                    self.promote(now, &key.0, &key.1);
                }
            }
            TransitionState::Disabled => {
                self.disabled.insert(key);
            }
        }
    }

    /// [`Event::RetryStage`].
    fn retry(
        &mut self,
        now: Millis,
        pipeline: Arc<Pipeline>,
        mut execution: Execution,
        stage: &str,
        mode: RetryMode,
    ) -> Result<(), Refusal> {
        if execution.status != ExecutionStatus::Failed {
            return Err(Refusal::NotFailed { id: execution.id, status: execution.status });
        }
        let si = execution
            .stages
            .iter()
            .position(|s| s.name == stage && s.status == Some(StageStatus::Failed))
            .ok_or_else(|| Refusal::StageDidNotFail { id: execution.id.clone(), stage: stage.to_string() })?;
        execution.status = ExecutionStatus::InProgress;
        execution.status_summary = None;
        execution.updated_at = now;
        execution.stages[si].status = None;
        for action in &mut execution.stages[si].actions {
            if mode == RetryMode::AllActions || action.status != Some(ActionStatus::Succeeded) {
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
        notice(&mut self.notices, now, &execution, None, None, "InProgress", None);
        self.restore(now, vec![(pipeline, execution)]);
        self.advance(now, &id);
        Ok(())
    }

    pub fn execution(&self, id: &ExecutionId) -> Option<&Execution> {
        self.executions.get(id).map(Arc::as_ref)
    }

    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values().map(Arc::as_ref)
    }

    /// Executions changed since the last call, to persist in one transaction.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The executions changed since the last call, to write in one
    /// transaction. They are shared, not copied (issue 19): the engine's
    /// next change to one copies it only if the store still holds it.
    pub fn take_dirty(&mut self) -> Vec<Arc<Execution>> {
        let ids = std::mem::take(&mut self.dirty);
        let out: Vec<Arc<Execution>> = ids.iter().filter_map(|id| self.executions.get(id).cloned()).collect();
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

    /// Whether an action is ready to be handed out.
    pub fn has_dispatch(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Agent jobs that [`Event::Timeout`] failed since the last call: the
    /// driver cancels them on their agents.
    pub fn take_expired(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.expired)
    }

    /// The earliest time at which the engine wants [`Event::Timeout`]: the
    /// first deadline of an in-progress action. `None`: nothing can time out.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Feeds one event. A refused event changed nothing; an accepted one
    /// may have changed anything, which the caller polls for.
    pub fn handle(&mut self, now: Millis, event: Event) -> Result<Handled, Refusal> {
        match event {
            Event::Start { id, pipeline, version, trigger, variables, revisions, origins } => {
                self.start(now, id, pipeline, version, trigger, variables, (revisions, origins))
            }
            Event::Restore { executions } => self.restore(now, executions),
            Event::ActionAssigned { job_id, lease_epoch, agent } => self.assigned(&job_id, lease_epoch, agent),
            Event::ActionStarted { job_id, lease_epoch, agent } => self.started(now, &job_id, lease_epoch, agent),
            Event::ActionFinished { job_id, lease_epoch, result } => {
                let (ok, message) = match &result {
                    ActionResult::Succeeded { summary, .. } => (true, summary.clone()),
                    ActionResult::Failed { message } => (false, message.clone()),
                };
                if !self.rule_result(now, &job_id, lease_epoch, ok, message)
                    && let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch)
                {
                    self.finish_action(now, &exec_id, si, ai, result);
                }
            }
            Event::ActionLost { job_id, lease_epoch, reason } => {
                if !self.rule_result(now, &job_id, lease_epoch, false, reason.clone())
                    && let Some((exec_id, si, ai)) = self.current_job(&job_id, lease_epoch)
                {
                    self.lose_action(now, &exec_id, si, ai, reason);
                }
            }
            Event::Stop { id, mode, reason } => self.stop(now, &id, mode, reason),
            Event::SetTransition { pipeline, stage, state } => self.set_transition(now, pipeline, stage, state),
            Event::RetryStage { pipeline, execution, stage, mode } => self.retry(now, pipeline, *execution, &stage, mode)?,
            Event::PutApprovalResult { execution, stage, action, by, member_of, decision, comment } => {
                let decider = approvers::Decider { user: &by, member_of: &member_of };
                let said = self.decide(now, &execution, &stage, &action, &decider, decision, &comment)?;
                return Ok(Handled::Decided(said));
            }
            Event::Rollback { id, pipeline, version, target, stage, trigger } => {
                self.start_rollback(now, id, pipeline, version, &target, &stage, trigger)?
            }
            Event::Timeout => self.expire(now),
        }
        Ok(Handled::Applied)
    }

    /// [`Event::ActionAssigned`].
    fn assigned(&mut self, job_id: &JobId, lease_epoch: u64, agent: AgentId) {
        let Some((exec_id, si, ai)) = self.current_job(job_id, lease_epoch) else { return };
        let exec = exec_mut(&mut self.executions, &exec_id).expect("job of a known execution");
        let action = &mut exec.stages[si].actions[ai];
        if action.assigned.as_deref() != Some(agent.as_str()) {
            action.assigned = Some(agent.0);
            self.dirty.insert(exec_id);
        }
    }

    /// [`Event::ActionStarted`]: the action's deadline moves on by the grace.
    fn started(&mut self, now: Millis, job_id: &JobId, lease_epoch: u64, agent: AgentId) {
        let Some((exec_id, si, ai)) = self.current_job(job_id, lease_epoch) else { return };
        let exec = exec_mut(&mut self.executions, &exec_id).expect("job of a known execution");
        let action = &mut exec.stages[si].actions[ai];
        action.agent = Some(agent.0);
        action.waiting_reason = None;
        exec.updated_at = now;
        self.schedule_timeout(&exec_id, si, ai);
        self.dirty.insert(exec_id);
    }

    /// The place of a job if it is still running under this lease epoch.
    fn current_job(&self, job_id: &JobId, lease_epoch: u64) -> Option<(ExecutionId, usize, usize)> {
        let place = self.jobs.get(job_id).filter(|p| p.action != usize::MAX)?;
        let exec = self.executions.get(&place.execution)?;
        let action = &exec.stages[place.stage].actions[place.action];
        (action.status == Some(ActionStatus::InProgress) && action.lease_epoch == lease_epoch)
            .then(|| (place.execution.clone(), place.stage, place.action))
    }

    fn stop(&mut self, now: Millis, id: &ExecutionId, mode: StopMode, reason: String) {
        let abandon = mode == StopMode::Abandon;
        let Some(exec) = exec_mut(&mut self.executions, id) else { return };
        if exec.status != ExecutionStatus::InProgress && !(abandon && exec.status == ExecutionStatus::Stopping) {
            return;
        }
        exec.status = ExecutionStatus::Stopping;
        exec.status_summary = Some(reason);
        exec.updated_at = now;
        let mut abandoned = Vec::new();
        if abandon {
            for (si, stage) in exec.stages.iter_mut().enumerate() {
                for (ai, action) in stage.actions.iter_mut().enumerate() {
                    if action.status == Some(ActionStatus::InProgress) {
                        action.status = Some(ActionStatus::Abandoned);
                        action.ended_at = Some(now);
                        action.error = Some("abandoned: the execution was stopped".into());
                        abandoned.push((si, ai, stage.name.clone(), action.name.clone()));
                    }
                }
                for rule in stage.rules.iter_mut().filter(|r| r.status == ActionStatus::InProgress) {
                    rule.status = ActionStatus::Abandoned;
                    rule.message = Some("abandoned: the execution was stopped".into());
                }
            }
        }
        notice(&mut self.notices, now, exec, None, None, "Stopping", None);
        for (_, _, stage, action) in &abandoned {
            notice(&mut self.notices, now, exec, Some(stage.clone()), Some(action.clone()), "Abandoned", None);
        }
        // Abandoned actions are no longer handed out either.
        self.ready.retain(|d| &d.execution_id != id);
        for (si, ai, _, _) in abandoned {
            self.clear_timeout(&(id.clone(), si, ai));
        }
        self.advance(now, id);
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        now: Millis,
        id: ExecutionId,
        pipeline: Arc<Pipeline>,
        version: u64,
        trigger: Trigger,
        overrides: BTreeMap<String, String>,
        (revisions, origins): (BTreeMap<String, String>, BTreeMap<String, Origin>),
    ) {
        let mut execution = self.new_execution(now, id, &pipeline, version, trigger, overrides, revisions);
        execution.origins = origins;
        self.launch(now, pipeline, execution);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_execution(
        &mut self,
        now: Millis,
        id: ExecutionId,
        pipeline: &Pipeline,
        version: u64,
        trigger: Trigger,
        overrides: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
    ) -> Execution {
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
                rules: Vec::new(),
                passed: Vec::new(),
                auto_retried: false,
                actions: s
                    .actions
                    .iter()
                    .map(|a| ActionRun { name: a.name.clone(), run_order: a.run_order(), ..ActionRun::default() })
                    .collect(),
            })
            .collect();
        let execution = Execution {
            id,
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
            // Never below the clock, so that start order holds across a
            // restart that found nothing to restore.
            ordinal: self.next_ordinal.max(now),
            waiting_for: None,
            source_revisions: revisions
                .into_iter()
                .map(|(action, revision_id)| (action, SourceRevision { revision_id, revision_summary: None, pinned: true }))
                .collect(),
            rollback: None,
            origins: BTreeMap::new(),
        };
        self.next_ordinal = self.next_ordinal.max(now) + 1;
        execution
    }

    /// Takes a new execution into memory and moves it as far as it goes.
    fn launch(&mut self, now: Millis, pipeline: Arc<Pipeline>, execution: Execution) {
        let id = execution.id.clone();
        notice(&mut self.notices, now, &execution, None, None, "InProgress", None);
        self.definitions.insert(id.clone(), pipeline);
        self.executions.insert(id.clone(), Arc::new(execution));
        self.advance(now, &id);
    }

    /// Ends an attempt whose agent is gone as `Lost`; runs the action again
    /// when it declares `retryOnAgentLost`, has retries left and the
    /// execution is not stopping, else the stage fails with the reason.
    fn lose_action(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize, reason: String) {
        let def = self.definitions[exec_id].clone();
        let action_def = &def.stages[si].actions[ai];
        let max = self.max_lost_retries;
        let exec = exec_mut(&mut self.executions, exec_id).expect("known execution");
        let running = exec.status == ExecutionStatus::InProgress;
        let action = &mut exec.stages[si].actions[ai];
        let lost_before = action.lost_on.len() as u32;
        let agent = action.agent.take().or(action.assigned.take());
        action.lost_on.push(agent.unwrap_or_else(|| "unknown".into()));
        self.clear_timeout(&(exec_id.clone(), si, ai));
        let exec = exec_mut(&mut self.executions, exec_id).expect("known execution");
        let action = &mut exec.stages[si].actions[ai];
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
        let (stage, name) = (exec.stages[si].name.clone(), exec.stages[si].actions[ai].name.clone());
        notice(&mut self.notices, now, exec, Some(stage), Some(name), "Lost", Some(reason));
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
        self.clear_timeout(&(exec_id.clone(), si, ai));
        let def = self.definitions[exec_id].clone();
        let exec = exec_mut(&mut self.executions, exec_id).expect("known execution");
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
        notice(&mut self.notices, now, exec, Some(stage_name), Some(action_name), status, message);
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
                let running =
                    exec.stages.iter().flat_map(|s| &s.actions).any(|a| a.status == Some(ActionStatus::InProgress))
                        || exec.stages.iter().flat_map(|s| &s.rules).any(|r| r.status == ActionStatus::InProgress);
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
            let Some(si) = exec.stages.iter().position(|s| !s.status.is_some_and(StageStatus::is_passed)) else {
                self.end_execution(now, exec_id, ExecutionStatus::Succeeded, None);
                return;
            };
            // A rollback runs its one stage, then ends.
            if let Some(rollback) = &exec.rollback
                && exec.stages.iter().position(|s| s.name == rollback.stage).is_some_and(|ri| si > ri)
            {
                self.end_execution(now, exec_id, ExecutionStatus::Succeeded, None);
                return;
            }
            let stage = &exec.stages[si];
            if stage.status.is_none() {
                if !self.may_enter(now, exec_id, si) {
                    return;
                }
                let exec = exec_mut(&mut self.executions, exec_id).expect("known");
                exec.waiting_for = None;
                exec.stages[si].status = Some(StageStatus::InProgress);
                let name = exec.stages[si].name.clone();
                notice(&mut self.notices, now, exec, Some(name), None, "InProgress", None);
                continue;
            }
            if !self.executions[exec_id].stages[si].passed.contains(&GatePhase::BeforeEntry) {
                match self.gate(now, exec_id, si, GatePhase::BeforeEntry) {
                    Gate::Pending => return,
                    Gate::Passed => {
                        exec_mut(&mut self.executions, exec_id).expect("known").stages[si]
                            .passed
                            .push(GatePhase::BeforeEntry);
                        continue;
                    }
                    Gate::Applied(Outcome::Skip, why) => {
                        self.condition_notice(now, exec_id, si, format!("beforeEntry: skipped ({why})"));
                        self.end_stage(now, exec_id, si, StageStatus::Skipped);
                        continue;
                    }
                    Gate::Applied(_, why) => {
                        let name = self.executions[exec_id].stages[si].name.clone();
                        self.end_stage(now, exec_id, si, StageStatus::Failed);
                        let message = format!("stage \"{name}\" beforeEntry condition failed: {why}");
                        self.end_execution(now, exec_id, ExecutionStatus::Failed, Some(message));
                        return;
                    }
                }
            }
            // The lowest run order with an action not yet succeeded.
            let stage = &self.executions[exec_id].stages[si];
            let Some(order) =
                stage.actions.iter().filter(|a| a.status != Some(ActionStatus::Succeeded)).map(|a| a.run_order).min()
            else {
                match self.gate(now, exec_id, si, GatePhase::OnSuccess) {
                    Gate::Pending => return,
                    Gate::Passed => {
                        self.end_stage(now, exec_id, si, StageStatus::Succeeded);
                        continue;
                    }
                    Gate::Applied(result, why) => {
                        let name = self.executions[exec_id].stages[si].name.clone();
                        self.end_stage(now, exec_id, si, StageStatus::Failed);
                        let mut message = format!("stage \"{name}\" onSuccess condition failed: {why}");
                        if result == Outcome::Rollback {
                            message.push_str("; rolling back");
                            self.request_rollback(exec_id, si);
                        }
                        self.end_execution(now, exec_id, ExecutionStatus::Failed, Some(message));
                        return;
                    }
                }
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
            // moved the lowest unfinished run order on).
            let failed = group
                .iter()
                .copied()
                .find(|&ai| stage.actions[ai].status != Some(ActionStatus::Succeeded))
                .expect("a settled group that is not all succeeded has a failure");
            match self.stage_failed(now, exec_id, si, failed) {
                Flow::Continue => continue,
                Flow::Stop => return,
            }
        }
    }

    /// A group of stage `si` settled with action `ai` failed: `onFailure`
    /// decides (retry once, skip, roll back), else the stage and the
    /// execution fail, naming the action.
    fn stage_failed(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize) -> Flow {
        let stage = &self.executions[exec_id].stages[si];
        let action = &stage.actions[ai];
        let mut message = format!(
            "stage \"{}\" failed: action \"{}\": {}",
            stage.name,
            action.name,
            action.error.as_deref().unwrap_or("failed")
        );
        let retried = stage.auto_retried;
        match self.gate(now, exec_id, si, GatePhase::OnFailure) {
            Gate::Pending => return Flow::Stop,
            Gate::Applied(Outcome::Retry, _) if !retried => {
                let all = self.stage_conditions(exec_id, si).on_failure.is_some_and(|f| f.retry_all);
                self.condition_notice(now, exec_id, si, format!("onFailure: retrying ({message})"));
                let stage = &mut exec_mut(&mut self.executions, exec_id).expect("known").stages[si];
                stage.auto_retried = true;
                stage.rules.clear();
                stage.passed.retain(|p| *p == GatePhase::BeforeEntry);
                for action in &mut stage.actions {
                    if all || action.status != Some(ActionStatus::Succeeded) {
                        action.status = None;
                        action.error = None;
                        action.summary = None;
                        action.ended_at = None;
                    }
                }
                return Flow::Continue;
            }
            Gate::Applied(Outcome::Skip, _) => {
                self.condition_notice(now, exec_id, si, format!("onFailure: skipped ({message})"));
                self.end_stage(now, exec_id, si, StageStatus::Skipped);
                return Flow::Continue;
            }
            Gate::Applied(Outcome::Rollback, _) => {
                message.push_str("; rolling back");
                self.request_rollback(exec_id, si);
            }
            _ => {}
        }
        self.end_stage(now, exec_id, si, StageStatus::Failed);
        self.end_execution(now, exec_id, ExecutionStatus::Failed, Some(message));
        Flow::Stop
    }

    fn start_action(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, ai: usize) {
        let exec = exec_mut(&mut self.executions, exec_id).expect("known");
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
        let job_id = job_id(exec_id, si, ai, action.attempt);
        action.job_id = Some(job_id.clone());
        self.jobs.insert(JobId(job_id), JobPlace { execution: exec_id.clone(), stage: si, action: ai });
        let (stage, name) = (exec.stages[si].name.clone(), exec.stages[si].actions[ai].name.clone());
        notice(&mut self.notices, now, exec, Some(stage), Some(name), "InProgress", None);
        let def = self.definitions[exec_id].clone();
        let action_def = &def.stages[si].actions[ai];
        if is_manual_approval(action_def) {
            // Decided by people through the API, never by an agent.
            let required = required_approvals(action_def);
            let exec = exec_mut(&mut self.executions, exec_id).expect("known");
            let action = &mut exec.stages[si].actions[ai];
            let approvers = action_def.configuration.get("Approvers").map(|a| a.trim().to_string()).unwrap_or_default();
            action.approval = Some(ApprovalState { required, approvers, decisions: Vec::new() });
            action.waiting_reason = Some(format!("waiting for {required} approval(s)"));
            self.schedule_timeout(exec_id, si, ai);
            return;
        }
        self.schedule_timeout(exec_id, si, ai);
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
            job_id: JobId(run.job_id.clone().expect("in-progress action has a job")),
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
            assigned: run.assigned.clone().map(AgentId),
            started: run.agent.is_some(),
            lost_on: run.lost_on.iter().cloned().map(AgentId).collect(),
        });
        // What this attempt was given, for the history (ListActionExecutions).
        let given = self.ready.back().expect("just queued");
        let (inputs, configuration) = (given.inputs.clone(), given.configuration.clone());
        let run = &mut exec_mut(&mut self.executions, exec_id).expect("known").stages[si].actions[ai];
        run.inputs = inputs;
        run.resolved_configuration = configuration;
        Ok(())
    }

    fn end_stage(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, status: StageStatus) {
        let exec = exec_mut(&mut self.executions, exec_id).expect("known");
        exec.stages[si].status = Some(status);
        exec.updated_at = now;
        let (pipeline, name) = (exec.pipeline.clone(), exec.stages[si].name.clone());
        notice(&mut self.notices, now, exec, Some(name.clone()), None, status.as_str(), None);
        self.promote(now, &pipeline, &name);
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
            exec_mut(&mut self.executions, exec_id).expect("known").waiting_for = Some(stage.clone());
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
        let exec = exec_mut(&mut self.executions, exec_id).expect("known");
        exec.waiting_for = None;
        exec.status = status;
        exec.status_summary = message.clone();
        exec.updated_at = now;
        notice(&mut self.notices, now, exec, None, None, status.as_str(), message);
        self.dirty.insert(exec_id.clone());
    }

    fn forget(&mut self, exec_id: &ExecutionId) {
        if let Some(exec) = self.executions.remove(exec_id) {
            for (si, stage) in exec.stages.iter().enumerate() {
                for (ai, action) in stage.actions.iter().enumerate() {
                    if let Some(job) = &action.job_id {
                        self.jobs.remove(job.as_str());
                    }
                    self.clear_timeout(&(exec_id.clone(), si, ai));
                }
            }
        }
        self.definitions.remove(exec_id);
    }

    /// [`Event::PutApprovalResult`]; returns what the decision did, in words.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        now: Millis,
        exec_id: &ExecutionId,
        stage: &str,
        action: &str,
        decider: &approvers::Decider<'_>,
        decision: Decision,
        comment: &str,
    ) -> Result<String, Refusal> {
        let by = decider.user;
        let approve = decision == Decision::Approved;
        let exec = exec_mut(&mut self.executions, exec_id).ok_or_else(|| Refusal::NotInProgress(exec_id.clone()))?;
        let si = exec.stages.iter().position(|s| s.name == stage).ok_or_else(|| Refusal::NoStage(stage.to_string()))?;
        let ai = exec.stages[si]
            .actions
            .iter()
            .position(|a| a.name == action)
            .ok_or_else(|| Refusal::NoAction { stage: stage.to_string(), action: action.to_string() })?;
        let (trigger, pipeline, version) = (exec.trigger.clone(), exec.pipeline.clone(), exec.version);
        let run = &mut exec.stages[si].actions[ai];
        let Some(approval) = run.approval.as_mut().filter(|_| run.status == Some(ActionStatus::InProgress)) else {
            return Err(Refusal::NotWaitingForApproval {
                id: exec_id.clone(),
                stage: stage.to_string(),
                action: action.to_string(),
            });
        };
        let at = ApprovalAt { id: exec_id, pipeline: &pipeline, version, stage, action };
        if let Some(refusal) = decider_refusal(&at, approval, &trigger, decider, decision) {
            return Err(refusal);
        }
        approval.decisions.push(ApprovalDecision {
            by: by.to_string(),
            approved: approve,
            comment: comment.to_string(),
            at: now,
        });
        let approvers: Vec<String> = approval.decisions.iter().filter(|d| d.approved).map(|d| d.by.clone()).collect();
        let required = approval.required;
        let comment_suffix = if comment.is_empty() { String::new() } else { format!(": {comment}") };
        if !approve {
            let message = format!("rejected by {by}{comment_suffix}");
            self.finish_action(now, exec_id, si, ai, ActionResult::Failed { message: message.clone() });
            return Ok(message);
        }
        if approvers.len() as u32 >= required {
            let summary = format!("approved by {}", approvers.join(", "));
            let result = ActionResult::Succeeded {
                summary: summary.clone(),
                output_variables: BTreeMap::new(),
                external_url: None,
                outputs: Vec::new(),
            };
            self.finish_action(now, exec_id, si, ai, result);
            return Ok(summary);
        }
        run.waiting_reason = Some(format!("waiting for {} more approval(s)", required - approvers.len() as u32));
        exec.updated_at = now;
        let message = format!("approved by {by} ({} of {required}){comment_suffix}", approvers.len());
        notice(
            &mut self.notices,
            now,
            exec,
            Some(stage.to_string()),
            Some(action.to_string()),
            "Approved",
            Some(message.clone()),
        );
        self.dirty.insert(exec_id.clone());
        Ok(message)
    }

    /// [`Event::Timeout`]: fails every in-progress action past its
    /// deadline; the agent jobs among them are kept for `take_expired`.
    fn expire(&mut self, now: Millis) {
        let mut expired = Vec::new();
        for (exec_id, exec) in &self.executions {
            let def = &self.definitions[exec_id];
            for (si, stage) in exec.stages.iter().enumerate() {
                for (ai, run) in stage.actions.iter().enumerate() {
                    let action_def = &def.stages[si].actions[ai];
                    if deadline(action_def, run).is_some_and(|deadline| now >= deadline) {
                        let message = timeout_message(action_def, run);
                        expired.push((exec_id.clone(), si, ai, run.job_id.clone(), message));
                    }
                }
            }
        }
        for (exec_id, si, ai, job_id, message) in expired {
            if let Some(job_id) = job_id.filter(|_| self.executions[&exec_id].stages[si].actions[ai].approval.is_none()) {
                self.expired.push(JobId(job_id));
            }
            self.ready.retain(|d| {
                !(d.execution_id == exec_id
                    && d.stage == self.executions[&exec_id].stages[si].name
                    && d.action == self.executions[&exec_id].stages[si].actions[ai].name)
            });
            self.finish_action(now, &exec_id, si, ai, ActionResult::Failed { message });
        }
        // Every action due has ended and left the index: what is left at
        // or before `now` is a deadline that moved, not one to wake for.
        while let Some((at, place)) = self.deadlines.first().cloned()
            && at <= now
        {
            self.clear_timeout(&place);
        }
    }

    /// Indexes the deadline of an in-progress action (again, when it moved).
    fn schedule_timeout(&mut self, exec_id: &ExecutionId, si: usize, ai: usize) {
        let place = (exec_id.clone(), si, ai);
        self.clear_timeout(&place);
        let action_def = &self.definitions[exec_id].stages[si].actions[ai];
        if let Some(at) = deadline(action_def, &self.executions[exec_id].stages[si].actions[ai]) {
            self.deadlines.insert((at, place.clone()));
            self.deadline_of.insert(place, at);
        }
    }

    /// Takes an action out of the deadline index (it ended or left memory).
    fn clear_timeout(&mut self, place: &ActionPlace) {
        if let Some(at) = self.deadline_of.remove(place) {
            self.deadlines.remove(&(at, place.clone()));
        }
    }

    /// Tells watchers what a stage condition did.
    fn condition_notice(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, message: String) {
        let exec = &self.executions[exec_id];
        let stage = exec.stages[si].name.clone();
        notice(&mut self.notices, now, exec, Some(stage), None, "Condition", Some(message));
    }
}

/// Tells watchers of a step (`Engine::take_notices`). A function of the
/// notices rather than a method of the engine, so a step can call it while
/// it holds the execution it changes: a copy of the whole execution to
/// satisfy the borrow was most of a step's cost (issue 19).
fn notice(
    notices: &mut Vec<Notice>,
    now: Millis,
    exec: &Execution,
    stage: Option<String>,
    action: Option<String>,
    status: &str,
    message: Option<String>,
) {
    notices.push(Notice {
        at: now,
        pipeline: exec.pipeline.clone(),
        execution_id: exec.id.clone(),
        stage,
        action,
        status: status.to_string(),
        message,
    });
}

/// An execution to change. Shared with a commit only while the commit is
/// written (the store drops its handle then), so in the steps between
/// commits this copies nothing (issue 19).
fn exec_mut<'a>(executions: &'a mut HashMap<ExecutionId, Arc<Execution>>, id: &ExecutionId) -> Option<&'a mut Execution> {
    executions.get_mut(id).map(Arc::make_mut)
}
