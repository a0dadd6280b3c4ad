//! The engine's deterministic simulator: a fake fleet (agents that take,
//! start, finish, fail and lose jobs), a fake store (what `take_dirty`
//! gave), a virtual clock and one seeded random generator. Faults: failed,
//! lost and late results, stops (wait and abandon), transitions turned off
//! and on, stage retries in both modes, approval decisions, time jumping to
//! the engine's next deadline, and controller restarts from the stored
//! state. After every step it checks the invariants the engine promises; a
//! failure names the seed and the step, so that the run replays exactly:
//!
//! ```sh
//! SLUICE_SIM_SEED=1234 cargo test -p sluice --lib simulated       # one seed
//! SLUICE_SIM_RUNS=2000 cargo test -p sluice --lib simulated       # seeds 0..2000
//! SLUICE_SIM_SEED=1234 SLUICE_SIM_TRACE=1 cargo test -p sluice --lib simulated -- --nocapture
//! ```
//!
//! Invariants: no job (one attempt of one action) is handed out twice,
//! except again under a new lease epoch after a restart; a result with a
//! stale epoch changes nothing; an attempt ends at most once, and an ended
//! one never runs again; an action lost with its agent runs again at most
//! `max_lost_retries` times; in SUPERSEDED and QUEUED mode a stage holds
//! at most one execution; QUEUED executions enter every stage in start
//! order; no execution enters a stage whose inbound transition is off; a
//! rollback runs on its target's artifacts; an approval is never handed to
//! an agent and its starter may not approve it; the engine's next wake-up
//! ([`Engine::poll_timeout`]) is never later than the deadline of any
//! action in progress, and a timeout expires only jobs agents hold; once
//! faults stop, every execution ends and every one started is stored. The
//! sweep also asserts that the faults reached every path it checks (lost
//! actions retried to success, rollbacks, expiries, successes and failures).

use super::*;
use crate::pipeline::parse;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

const MODES: &[&str] = &["SUPERSEDED", "QUEUED", "PARALLEL"];

/// Steps of faults per seed, before the drain.
const STEPS: usize = 400;

/// The fleet's agents.
const AGENTS: &[&str] = &["ag-1", "ag-2", "ag-3"];

fn pipeline(mode: &str) -> Arc<Pipeline> {
    let text = format!(
        r#"{{"pipeline": {{"name": "sim-{mode}", "executionMode": "{mode}", "stages": [
        {{"name": "Source", "actions": [{{"name": "Src", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}], "namespace": "S"}}]}},
        {{"name": "Build", "actions": [
            {{"name": "A", "runOrder": 1, "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
             "configuration": {{"Commands": "echo #{{S.CommitId}}"}}, "inputArtifacts": [{{"name": "src"}}], "outputArtifacts": [{{"name": "bin"}}]}},
            {{"name": "B", "runOrder": 1, "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}},
            {{"name": "C", "runOrder": 2, "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
             "inputArtifacts": [{{"name": "bin"}}]}}]}},
        {{"name": "Approve", "actions": [{{"name": "Gate", "actionTypeId": {{"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}}}]}},
        {{"name": "Deploy", "actions": [{{"name": "D", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
            "inputArtifacts": [{{"name": "bin"}}]}}]}}
    ]}}}}"#
    );
    Arc::new(parse(&text).expect("simulated pipeline parses").pipeline)
}

/// A pipeline with stage conditions: Build retries once on failure,
/// Deploy is entered only on a variable check and rolled back when a
/// Commands rule after it fails.
fn conditional() -> Arc<Pipeline> {
    let text = r##"{"pipeline": {"name": "sim-COND", "variables": [{"name": "GO", "defaultValue": "yes"}], "stages": [
        {"name": "Source", "actions": [{"name": "Src", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": "/r"}, "outputArtifacts": [{"name": "src"}]}]},
        {"name": "Build", "onFailure": {"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}}, "actions": [
            {"name": "A", "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
             "inputArtifacts": [{"name": "src"}], "outputArtifacts": [{"name": "bin"}]}]},
        {"name": "Deploy",
         "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [{"name": "Go",
            "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
            "configuration": {"Variable": "#{variables.GO}", "Value": "yes", "Operator": "EQ"}}]}]},
         "onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [{"name": "Smoke",
            "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
            "commands": ["./smoke"], "inputArtifacts": [{"name": "bin"}]}]}]},
         "actions": [{"name": "D", "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
            "inputArtifacts": [{"name": "bin"}]}]}
    ]}}"##;
    Arc::new(parse(text).expect("simulated pipeline parses").pipeline)
}

/// Actions that run again when their agent is lost (PARALLEL, so that
/// executions do not wait for each other and every loss is a retry).
fn lost_retries() -> Arc<Pipeline> {
    let text = r#"{"pipeline": {"name": "sim-LOST", "executionMode": "PARALLEL", "stages": [
        {"name": "Source", "actions": [{"name": "Src", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": "/r"}, "outputArtifacts": [{"name": "src"}], "retryOnAgentLost": true}]},
        {"name": "Build", "actions": [
            {"name": "A", "runOrder": 1, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
             "inputArtifacts": [{"name": "src"}], "retryOnAgentLost": true},
            {"name": "B", "runOrder": 1, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
            {"name": "C", "runOrder": 2, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
             "retryOnAgentLost": true}]}
    ]}}"#;
    Arc::new(parse(text).expect("simulated pipeline parses").pipeline)
}

/// What the faults reached, summed over seeds: a sweep that reaches none
/// of a path has stopped testing it.
#[derive(Debug, Default)]
struct Coverage {
    rollbacks: usize,
    lost_then_succeeded: usize,
    expired: usize,
    succeeded: usize,
    failed: usize,
}

/// One simulated world: the engine, what agents hold, what the store has.
struct World {
    rng: StdRng,
    seed: u64,
    now: Millis,
    engine: Engine,
    pipelines: Vec<Arc<Pipeline>>,
    /// Jobs handed to fake agents: (dispatch, still held).
    held: Vec<Dispatch>,
    /// Results that arrived too late (old epochs), to replay later.
    stale: Vec<(JobId, u64)>,
    /// Every (job id, lease epoch) ever handed out.
    handed: HashSet<(JobId, u64)>,
    /// Job ids handed out since the last restart.
    handed_since_restart: HashSet<JobId>,
    /// The last stored copy of every execution (as `take_dirty` gives it).
    stored: HashMap<ExecutionId, Execution>,
    /// Per (pipeline, stage): the ordinals of executions as they entered.
    entries: HashMap<(String, String), Vec<u64>>,
    disabled: HashSet<(String, String)>,
    /// Ordinals of executions retried: a retry re-runs an old execution
    /// after newer ones, so start order says nothing about them.
    retried: HashSet<u64>,
    /// Rollback executions and the executions they roll back to.
    rollbacks: HashMap<ExecutionId, ExecutionId>,
    /// How every attempt ended, by (execution, stage, action, attempt).
    ended: HashMap<(ExecutionId, usize, usize, u32), ActionStatus>,
    /// Agent jobs failed at their timeout.
    expired: usize,
    started: usize,
    step: usize,
}

impl World {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            seed,
            now: 1,
            engine: Engine::new(),
            pipelines: MODES.iter().map(|m| pipeline(m)).chain([conditional(), lost_retries()]).collect(),
            held: Vec::new(),
            stale: Vec::new(),
            handed: HashSet::new(),
            handed_since_restart: HashSet::new(),
            stored: HashMap::new(),
            entries: HashMap::new(),
            disabled: HashSet::new(),
            retried: HashSet::new(),
            rollbacks: HashMap::new(),
            ended: HashMap::new(),
            expired: 0,
            started: 0,
            step: 0,
        }
    }

    /// Feeds an event the engine must accept.
    fn feed(&mut self, event: Event) {
        if let Err(refusal) = self.engine.handle(self.now, event) {
            self.fail(format!("the engine refused an event it must take: {refusal}"));
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "simulation seed {} step {}: {what}\nreplay: SLUICE_SIM_SEED={} cargo test -p sluice --lib simulated",
            self.seed, self.step, self.seed
        )
    }

    /// Collects dispatches and dirty executions after an engine step and
    /// checks every invariant.
    fn settle(&mut self) {
        while let Some(d) = self.engine.poll_dispatch() {
            if !self.handed.insert((d.job_id.clone(), d.lease_epoch)) {
                self.fail(format!("job {} epoch {} handed out twice", d.job_id, d.lease_epoch));
            }
            if !self.handed_since_restart.insert(d.job_id.clone()) {
                self.fail(format!("job {} handed out twice without a restart", d.job_id));
            }
            // A rolled-back stage runs on the artifacts of the execution it
            // rolls back to.
            if let Some(target) = self.rollbacks.get(&d.execution_id) {
                let target = &self.stored[target];
                for (name, artifact) in &d.inputs {
                    if target.artifacts.get(name) != Some(artifact) {
                        self.fail(format!(
                            "rollback {} gave {} input {name} {artifact:?}, not the target's",
                            d.execution_id, d.action
                        ));
                    }
                }
            }
            if d.provider == "manual" {
                self.fail(format!("approval {} was handed to an agent", d.job_id));
            }
            self.held.push(d);
        }
        for e in self.engine.take_dirty() {
            let before = self.stored.get(&e.id).cloned();
            // A rollback copies the stages before its own: never entered.
            let copied = e.rollback.as_ref().and_then(|r| e.stages.iter().position(|s| s.name == r.stage)).unwrap_or(0);
            for (si, stage) in e.stages.iter().enumerate().skip(copied) {
                let entered_now = stage.status.is_some() && before.as_ref().is_none_or(|b| b.stages[si].status.is_none());
                if entered_now {
                    let key = (e.pipeline.clone(), stage.name.clone());
                    if self.disabled.contains(&key) {
                        self.fail(format!("{} entered {} through a disabled transition", e.id, stage.name));
                    }
                    self.entries.entry(key).or_default().push(e.ordinal);
                }
            }
            self.check_attempts(&e);
            self.stored.insert(e.id.clone(), Arc::unwrap_or_clone(e));
        }
        self.engine.take_notices();
        for request in self.engine.take_rollbacks() {
            self.roll_back(request);
        }
        self.check_one_per_stage();
        self.check_queued_order();
        self.check_deadlines();
    }

    /// An attempt ends once; lost actions run again within the bound.
    fn check_attempts(&mut self, e: &Execution) {
        let max = DEFAULT_MAX_LOST_RETRIES;
        for (si, stage) in e.stages.iter().enumerate() {
            for (ai, a) in stage.actions.iter().enumerate() {
                if a.lost_on.len() as u32 > max + 1 {
                    self.fail(format!("{} {}: lost {} times, beyond {max} retries", e.id, a.name, a.lost_on.len()));
                }
                // Without stage retries, every attempt after the first is a lost one's.
                if e.pipeline == "sim-LOST" && !self.retried.contains(&e.ordinal) && a.attempt > 1 + max {
                    self.fail(format!("{} {}: attempt {} beyond {max} lost retries", e.id, a.name, a.attempt));
                }
                let key = (e.id.clone(), si, ai, a.attempt);
                match a.status {
                    Some(
                        status @ (ActionStatus::Succeeded
                        | ActionStatus::Failed
                        | ActionStatus::Lost
                        | ActionStatus::Abandoned),
                    ) => {
                        let first = *self.ended.entry(key).or_insert(status);
                        if first != status {
                            self.fail(format!(
                                "{} {} attempt {} ended twice: {first:?}, then {status:?}",
                                e.id, a.name, a.attempt
                            ));
                        }
                    }
                    Some(ActionStatus::InProgress) if self.ended.contains_key(&key) => {
                        self.fail(format!("{} {} attempt {} runs again after it ended", e.id, a.name, a.attempt));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every in-progress action's deadline is indexed (so the engine's next
    /// wake-up is never later than it), and nothing else is.
    fn check_deadlines(&self) {
        let mut expected = HashMap::new();
        for e in self.engine.executions() {
            let def = &self.engine.definitions[&e.id];
            for (si, stage) in e.stages.iter().enumerate() {
                for (ai, run) in stage.actions.iter().enumerate() {
                    if let Some(at) = deadline(&def.stages[si].actions[ai], run) {
                        expected.insert((e.id.clone(), si, ai), at);
                    }
                }
            }
        }
        if expected != self.engine.deadline_of || self.engine.deadlines.len() != expected.len() {
            self.fail(format!(
                "the deadline index is {:?}, the actions in progress are due at {expected:?}",
                self.engine.deadlines
            ));
        }
        if self.engine.poll_timeout() != expected.values().min().copied() {
            self.fail(format!(
                "poll_timeout is {:?}, the first deadline {:?}",
                self.engine.poll_timeout(),
                expected.values().min()
            ));
        }
    }

    fn check_one_per_stage(&self) {
        for def in &self.pipelines {
            if def.execution_mode == crate::pipeline::ExecutionMode::Parallel {
                continue;
            }
            for stage in &def.stages {
                let holders: Vec<&ExecutionId> = self
                    .engine
                    .executions()
                    .filter(|e| e.pipeline == def.name && !e.status.is_final())
                    .filter(|e| e.stages.iter().any(|s| s.name == stage.name && s.status == Some(StageStatus::InProgress)))
                    .map(|e| &e.id)
                    .collect();
                if holders.len() > 1 {
                    self.fail(format!(
                        "{} executions hold stage {} of {}: {holders:?}",
                        holders.len(),
                        stage.name,
                        def.name
                    ));
                }
            }
        }
    }

    fn check_queued_order(&self) {
        for ((pipeline, stage), ordinals) in &self.entries {
            if !pipeline.ends_with("QUEUED") {
                continue;
            }
            // A retried execution enters its failed stage again: only first
            // entries count.
            let mut seen = HashSet::new();
            let firsts: Vec<u64> =
                ordinals.iter().copied().filter(|o| !self.retried.contains(o) && seen.insert(*o)).collect();
            if firsts.windows(2).any(|w| w[0] > w[1]) {
                self.fail(format!("QUEUED executions entered {stage} out of start order: {firsts:?}"));
            }
        }
    }

    fn result_for(&mut self, d: &Dispatch, fail: bool) -> ActionResult {
        if fail {
            return ActionResult::Failed { message: "simulated failure".into() };
        }
        let outputs = d
            .outputs
            .iter()
            .map(|(name, _)| (name.clone(), ArtifactRef { digest: format!("{:064x}", self.rng.random::<u64>()), size: 1 }))
            .collect();
        ActionResult::Succeeded {
            summary: "ok".into(),
            output_variables: [("CommitId".to_string(), format!("{:040x}", self.rng.random::<u64>()))].into(),
            external_url: None,
            outputs,
        }
    }

    /// One random step, faults included.
    fn random_step(&mut self) {
        self.step += 1;
        if std::env::var_os("SLUICE_SIM_TRACE").is_some() {
            let mut live: Vec<String> = self
                .engine
                .executions()
                .map(|e| {
                    let stages: Vec<String> = e.stages.iter().map(|s| format!("{}:{:?}", s.name, s.status)).collect();
                    format!("{}#{} {:?} w={:?} [{}]", e.id, e.ordinal, e.status, e.waiting_for, stages.join(" "))
                })
                .collect();
            live.sort();
            eprintln!("step {} live: {live:#?}", self.step);
        }
        self.now += self.rng.random_range(1..500);
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=9 if self.started < 40 => self.start(),
            10..=54 if !self.held.is_empty() => {
                let i = self.rng.random_range(0..self.held.len());
                let d = self.held.swap_remove(i);
                let agent = AgentId::from(AGENTS[self.rng.random_range(0..AGENTS.len())]);
                // The driver records the assignment; sometimes the agent
                // reports its start before its result.
                if self.rng.random_bool(0.5) {
                    self.feed(Event::ActionAssigned {
                        job_id: d.job_id.clone(),
                        lease_epoch: d.lease_epoch,
                        agent: agent.clone(),
                    });
                }
                if self.rng.random_bool(0.5) {
                    self.feed(Event::ActionStarted { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, agent });
                }
                let fail = self.rng.random_bool(0.1);
                let result = self.result_for(&d, fail);
                self.feed(Event::ActionFinished { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, result });
                self.stale.push((d.job_id, d.lease_epoch));
            }
            55..=59 if !self.held.is_empty() => {
                let i = self.rng.random_range(0..self.held.len());
                let d = self.held.swap_remove(i);
                let agent = AGENTS[self.rng.random_range(0..AGENTS.len())];
                if self.rng.random_bool(0.5) {
                    self.feed(Event::ActionAssigned {
                        job_id: d.job_id.clone(),
                        lease_epoch: d.lease_epoch,
                        agent: agent.into(),
                    });
                }
                let reason = format!("agent {agent} lost");
                self.feed(Event::ActionLost { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, reason });
                self.stale.push((d.job_id, d.lease_epoch));
            }
            60..=64 if !self.stale.is_empty() => {
                // A late or duplicated result must change nothing.
                let (job_id, epoch) = self.stale[self.rng.random_range(0..self.stale.len())].clone();
                self.settle();
                let late = self.rng.random_bool(0.5);
                let result = if late {
                    ActionResult::Failed { message: "late".into() }
                } else {
                    ActionResult::Succeeded {
                        summary: "late".into(),
                        output_variables: BTreeMap::new(),
                        external_url: None,
                        outputs: vec![("src".into(), ArtifactRef { digest: "late".into(), size: 1 })],
                    }
                };
                self.feed(Event::ActionFinished { job_id: job_id.clone(), lease_epoch: epoch, result });
                if !self.engine.take_dirty().is_empty() || self.engine.poll_dispatch().is_some() {
                    self.fail(format!("a stale result for {job_id} epoch {epoch} changed an execution"));
                }
            }
            65..=69 => {
                let def = self.pipelines[self.rng.random_range(0..self.pipelines.len())].clone();
                let stage = def.stages[self.rng.random_range(1..def.stages.len())].name.clone();
                let key = (def.name.clone(), stage.clone());
                let state = if self.disabled.remove(&key) {
                    TransitionState::Enabled
                } else {
                    self.disabled.insert(key);
                    TransitionState::Disabled
                };
                self.feed(Event::SetTransition { pipeline: def.name.clone(), stage, state });
            }
            70..=72 => {
                let mut live: Vec<ExecutionId> =
                    self.engine.executions().filter(|e| !e.status.is_final()).map(|e| e.id.clone()).collect();
                live.sort();
                if !live.is_empty() {
                    let id = live[self.rng.random_range(0..live.len())].clone();
                    let mode = if self.rng.random_bool(0.5) { StopMode::Abandon } else { StopMode::Wait };
                    self.feed(Event::Stop { id: id.clone(), mode, reason: "sim".into() });
                    if mode == StopMode::Abandon {
                        self.held.retain(|d| d.execution_id != id);
                    }
                }
            }
            73..=79 => self.decide_some_approval(),
            80..=83 => self.retry_some_failure(),
            84..=85 => self.restart(),
            86..=87 => self.time_passes(),
            88..=93 if !self.held.is_empty() => {
                // An agent takes a job and reports its start; it runs on.
                let d = self.held[self.rng.random_range(0..self.held.len())].clone();
                let agent = AgentId::from(AGENTS[self.rng.random_range(0..AGENTS.len())]);
                self.feed(Event::ActionAssigned {
                    job_id: d.job_id.clone(),
                    lease_epoch: d.lease_epoch,
                    agent: agent.clone(),
                });
                self.feed(Event::ActionStarted { job_id: d.job_id, lease_epoch: d.lease_epoch, agent });
            }
            _ => {}
        }
        self.settle();
    }

    /// Starts the rollback a stage condition asked for, to the newest earlier
    /// execution in which the stage succeeded (none: nothing to roll back to).
    fn roll_back(&mut self, request: RollbackRequest) {
        let failed_ordinal = self.stored[&request.failed].ordinal;
        let mut candidates: Vec<&Execution> = self
            .stored
            .values()
            .filter(|e| e.pipeline == request.pipeline && e.ordinal < failed_ordinal)
            .filter(|e| e.stages.iter().any(|s| s.name == request.stage && s.status == Some(StageStatus::Succeeded)))
            .collect();
        candidates.sort_by_key(|e| e.ordinal);
        let Some(target) = candidates.last().map(|e| (*e).clone()) else { return };
        let def = self.pipelines.iter().find(|p| p.name == request.pipeline).cloned().expect("known pipeline");
        self.started += 1;
        let id = ExecutionId(format!("rb{:03}", self.started));
        self.rollbacks.insert(id.clone(), target.id.clone());
        let trigger = Trigger::new("AutomatedRollback", "sim");
        let target_id = target.id.clone();
        let event =
            Event::Rollback { id, pipeline: def, version: 1, target: Box::new(target), stage: request.stage, trigger };
        if let Err(e) = self.engine.handle(self.now, event) {
            self.fail(format!("a rollback to {target_id} was refused: {e}"));
        }
        self.settle();
    }

    /// The clock jumps to the engine's next deadline, and the driver wakes
    /// it: the agent jobs that timed out are cancelled on their agents.
    fn time_passes(&mut self) {
        let Some(at) = self.engine.poll_timeout() else { return };
        self.now = self.now.max(at);
        self.feed(Event::Timeout);
        for job in self.engine.take_expired() {
            let Some(i) = self.held.iter().position(|d| d.job_id == job) else {
                self.fail(format!("job {job} expired, but no agent holds it"));
            };
            let d = self.held.swap_remove(i);
            self.expired += 1;
            self.stale.push((d.job_id, d.lease_epoch));
        }
    }

    fn start(&mut self) {
        let def = self.pipelines[self.rng.random_range(0..self.pipelines.len())].clone();
        self.started += 1;
        let id = ExecutionId(format!("e{:03}", self.started));
        let trigger = Trigger::new("StartPipelineExecution", "sim").by("starter");
        self.feed(Event::Start {
            id,
            pipeline: def,
            version: 1,
            trigger,
            variables: BTreeMap::new(),
            revisions: BTreeMap::new(),
            origins: BTreeMap::new(),
        });
    }

    fn decide(&mut self, id: &ExecutionId, by: &str, decision: Decision) -> Result<Handled, Refusal> {
        let event = Event::PutApprovalResult {
            execution: id.clone(),
            stage: "Approve".into(),
            action: "Gate".into(),
            by: by.into(),
            member_of: Vec::new(),
            decision,
            comment: String::new(),
        };
        self.engine.handle(self.now, event)
    }

    fn decide_some_approval(&mut self) {
        let mut waiting: Vec<ExecutionId> = self
            .engine
            .executions()
            .filter(|e| {
                e.stages
                    .iter()
                    .any(|s| s.actions.iter().any(|a| a.approval.is_some() && a.status == Some(ActionStatus::InProgress)))
            })
            .map(|e| e.id.clone())
            .collect();
        waiting.sort();
        if waiting.is_empty() {
            return;
        }
        let id = waiting[self.rng.random_range(0..waiting.len())].clone();
        let decision = if self.rng.random_bool(0.8) { Decision::Approved } else { Decision::Rejected };
        if let Err(e) = self.decide(&id, "approver", decision) {
            self.fail(format!("a waiting approval refused a decision: {e}"));
        }
        if self.decide(&id, "starter", Decision::Approved).is_ok() {
            self.fail("the starter approved its own execution".into());
        }
    }

    fn retry_some_failure(&mut self) {
        let mut failed: Vec<Execution> = self
            .stored
            .values()
            .filter(|e| e.status == ExecutionStatus::Failed && self.engine.execution(&e.id).is_none())
            .cloned()
            .collect();
        failed.sort_by(|a, b| a.id.cmp(&b.id));
        if failed.is_empty() {
            return;
        }
        let e = failed[self.rng.random_range(0..failed.len())].clone();
        let Some(stage) = e.stages.iter().find(|s| s.status == Some(StageStatus::Failed)).map(|s| s.name.clone()) else {
            return;
        };
        let def = self.pipelines.iter().find(|p| p.name == e.pipeline).cloned().expect("known pipeline");
        let mode = if self.rng.random_bool(0.5) { RetryMode::AllActions } else { RetryMode::FailedActions };
        self.retried.insert(e.ordinal);
        if let Err(err) =
            self.engine.handle(self.now, Event::RetryStage { pipeline: def, execution: Box::new(e), stage, mode })
        {
            self.fail(format!("retrying a failed stage was refused: {err}"));
        }
    }

    /// The controller restarts: a new engine from the stored executions,
    /// restored a pipeline at a time (in one event, so that start order
    /// holds), or, where executions do not wait for each other (PARALLEL),
    /// sometimes one execution at a time.
    fn restart(&mut self) {
        self.settle();
        self.engine = Engine::new();
        let mut disabled: Vec<(String, String)> = self.disabled.iter().cloned().collect();
        disabled.sort();
        for (pipeline, stage) in disabled {
            self.feed(Event::SetTransition { pipeline, stage, state: TransitionState::Disabled });
        }
        let mut unfinished: Vec<Execution> = self.stored.values().filter(|e| !e.status.is_final()).cloned().collect();
        unfinished.sort_by(|a, b| a.id.cmp(&b.id));
        let one_by_one = self.rng.random_bool(0.5);
        for def in self.pipelines.clone() {
            let mine: Vec<(Arc<Pipeline>, Execution)> =
                unfinished.iter().filter(|e| e.pipeline == def.name).map(|e| (def.clone(), e.clone())).collect();
            if one_by_one && def.execution_mode == crate::pipeline::ExecutionMode::Parallel {
                for execution in mine {
                    self.feed(Event::Restore { executions: vec![execution] });
                }
            } else {
                self.feed(Event::Restore { executions: mine });
            }
        }
        // What agents held is handed out again under new epochs.
        for d in self.held.drain(..) {
            self.stale.push((d.job_id, d.lease_epoch));
        }
        self.handed_since_restart.clear();
    }

    /// No more faults: transitions on, every approval approved, every job
    /// succeeds. Every execution must end.
    fn drain(&mut self) {
        let mut disabled: Vec<(String, String)> = self.disabled.drain().collect();
        disabled.sort();
        for (pipeline, stage) in disabled {
            self.feed(Event::SetTransition { pipeline, stage, state: TransitionState::Enabled });
        }
        self.settle();
        for _ in 0..10_000 {
            self.step += 1;
            self.now += 10;
            if let Some(d) = self.held.pop() {
                let result = self.result_for(&d, false);
                self.feed(Event::ActionFinished { job_id: d.job_id, lease_epoch: d.lease_epoch, result });
            } else {
                let waiting: Vec<ExecutionId> = self
                    .engine
                    .executions()
                    .filter(|e| {
                        e.stages.iter().any(|s| {
                            s.actions.iter().any(|a| a.approval.is_some() && a.status == Some(ActionStatus::InProgress))
                        })
                    })
                    .map(|e| e.id.clone())
                    .collect();
                for id in waiting {
                    // Refused only where this approver decided already.
                    let _ = self.decide(&id, "approver", Decision::Approved);
                }
            }
            self.settle();
            if self.engine.executions().all(|e| e.status.is_final()) && self.held.is_empty() {
                break;
            }
        }
        let stuck: Vec<String> = self
            .engine
            .executions()
            .filter(|e| !e.status.is_final())
            .map(|e| format!("{} ({:?}, waiting for {:?})", e.id, e.status, e.waiting_for))
            .collect();
        if !stuck.is_empty() {
            self.fail(format!("executions never ended: {stuck:?}"));
        }
        for e in self.stored.values() {
            if !e.status.is_final() {
                self.fail(format!("execution {} is stored as {:?} after the end", e.id, e.status));
            }
        }
        if self.stored.len() != self.started {
            self.fail(format!("{} executions started, {} stored", self.started, self.stored.len()));
        }
    }

    fn coverage(&self) -> Coverage {
        let mut c = Coverage { rollbacks: self.rollbacks.len(), expired: self.expired, ..Coverage::default() };
        for e in self.stored.values() {
            match e.status {
                ExecutionStatus::Succeeded => c.succeeded += 1,
                _ => c.failed += 1,
            }
            c.lost_then_succeeded += e
                .stages
                .iter()
                .flat_map(|s| &s.actions)
                .filter(|a| a.status == Some(ActionStatus::Succeeded) && !a.lost_on.is_empty())
                .count();
        }
        c
    }
}

/// Runs one seed; returns what its faults reached.
fn run(seed: u64, steps: usize) -> Coverage {
    let mut world = World::new(seed);
    for _ in 0..steps {
        world.random_step();
    }
    world.drain();
    world.coverage()
}

/// Seeds `0..SLUICE_SIM_RUNS` (200 by default), or the one `SLUICE_SIM_SEED`.
#[test]
fn simulated_executions_keep_every_invariant() {
    if let Some(seed) = std::env::var("SLUICE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let coverage = run(seed, STEPS);
        eprintln!("seed {seed}: {coverage:?}");
        return;
    }
    let runs: u64 = std::env::var("SLUICE_SIM_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut total = Coverage::default();
    for seed in 0..runs {
        let c = run(seed, STEPS);
        total.rollbacks += c.rollbacks;
        total.lost_then_succeeded += c.lost_then_succeeded;
        total.expired += c.expired;
        total.succeeded += c.succeeded;
        total.failed += c.failed;
    }
    eprintln!("simulated {runs} seeds of {STEPS} steps: {total:?}");
    let Coverage { rollbacks, lost_then_succeeded, expired, succeeded, failed } = total;
    assert!(
        rollbacks > 0 && lost_then_succeeded > 0 && expired > 0 && succeeded > 0 && failed > 0,
        "the faults never reached a path: the simulation misses it: {total:?}"
    );
}

#[test]
fn the_simulation_is_deterministic() {
    let digest = |seed| {
        let mut world = World::new(seed);
        for _ in 0..200 {
            world.random_step();
        }
        let mut states: Vec<(String, String)> =
            world.stored.values().map(|e| (e.id.0.clone(), format!("{:?}", e.status))).collect();
        states.sort();
        (states, world.handed.len())
    };
    assert_eq!(digest(7), digest(7));
    assert_ne!(digest(7), digest(8));
}
