//! A deterministic simulator of the engine: fake agents, a virtual clock and
//! seeded faults (failed, lost and late results, stops, transitions turned
//! off and on, stage retries, approvals, restarts from the stored state).
//! After every step it checks the invariants the engine promises; a
//! failure names the seed so that the run can be replayed exactly:
//!
//! ```sh
//! SLUICE_SIM_SEED=1234 cargo test -p sluice --lib simulated
//! SLUICE_SIM_RUNS=2000 cargo test -p sluice --lib simulated   # more seeds
//! ```
//!
//! Invariants: no job (one attempt of one action) is handed out twice,
//! except again under a new lease epoch after a restart; a result with a
//! stale epoch changes nothing; in SUPERSEDED and QUEUED mode a stage holds
//! at most one execution; QUEUED executions enter every stage in start
//! order; no execution enters a stage whose inbound transition is off; and
//! once faults stop, every execution ends.

use super::*;
use crate::pipeline::parse;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

const MODES: &[&str] = &["SUPERSEDED", "QUEUED", "PARALLEL"];

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
    stale: Vec<(String, u64)>,
    /// Every (job id, lease epoch) ever handed out.
    handed: HashSet<(String, u64)>,
    /// Job ids handed out since the last restart.
    handed_since_restart: HashSet<String>,
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
            pipelines: MODES.iter().map(|m| pipeline(m)).chain([conditional()]).collect(),
            held: Vec::new(),
            stale: Vec::new(),
            handed: HashSet::new(),
            handed_since_restart: HashSet::new(),
            stored: HashMap::new(),
            entries: HashMap::new(),
            disabled: HashSet::new(),
            retried: HashSet::new(),
            rollbacks: HashMap::new(),
            started: 0,
            step: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("simulation seed {} step {}: {what}\nreplay: SLUICE_SIM_SEED={} cargo test -p sluice --lib simulated", self.seed, self.step, self.seed)
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
                        self.fail(format!("rollback {} gave {} input {name} {artifact:?}, not the target's", d.execution_id, d.action));
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
            let copied = e
                .rollback
                .as_ref()
                .and_then(|r| e.stages.iter().position(|s| s.name == r.stage))
                .unwrap_or(0);
            for (si, stage) in e.stages.iter().enumerate().skip(copied) {
                let entered_now = stage.status.is_some()
                    && before.as_ref().is_none_or(|b| b.stages[si].status.is_none());
                if entered_now {
                    let key = (e.pipeline.clone(), stage.name.clone());
                    if self.disabled.contains(&key) {
                        self.fail(format!("{} entered {} through a disabled transition", e.id, stage.name));
                    }
                    self.entries.entry(key).or_default().push(e.ordinal);
                }
            }
            self.stored.insert(e.id.clone(), e);
        }
        self.engine.take_notices();
        for request in self.engine.take_rollbacks() {
            self.roll_back(request);
        }
        self.check_one_per_stage();
        self.check_queued_order();
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
                    self.fail(format!("{} executions hold stage {} of {}: {holders:?}", holders.len(), stage.name, def.name));
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
                // Sometimes the agent reports its start first.
                if self.rng.random_bool(0.5) {
                    self.engine.handle(self.now, Event::ActionStarted { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, agent: "sim".into() });
                }
                let fail = self.rng.random_bool(0.1);
                let result = self.result_for(&d, fail);
                self.engine.handle(self.now, Event::ActionFinished { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, result });
                self.stale.push((d.job_id, d.lease_epoch));
            }
            55..=59 if !self.held.is_empty() => {
                let i = self.rng.random_range(0..self.held.len());
                let d = self.held.swap_remove(i);
                self.engine.handle(self.now, Event::ActionLost { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, reason: "agent lost".into() });
                self.stale.push((d.job_id, d.lease_epoch));
            }
            60..=64 if !self.stale.is_empty() => {
                // A late or duplicated result must change nothing.
                let (job_id, epoch) = self.stale[self.rng.random_range(0..self.stale.len())].clone();
                self.settle();
                let result = ActionResult::Failed { message: "late".into() };
                self.engine.handle(self.now, Event::ActionFinished { job_id: job_id.clone(), lease_epoch: epoch, result });
                if !self.engine.take_dirty().is_empty() {
                    self.fail(format!("a stale result for {job_id} epoch {epoch} changed an execution"));
                }
            }
            65..=69 => {
                let def = self.pipelines[self.rng.random_range(0..self.pipelines.len())].clone();
                let stage = def.stages[self.rng.random_range(1..def.stages.len())].name.clone();
                let key = (def.name.clone(), stage.clone());
                let enable = self.disabled.contains(&key);
                if enable {
                    self.disabled.remove(&key);
                } else {
                    self.disabled.insert(key);
                }
                self.engine.set_transition(self.now, &def.name, &stage, enable);
            }
            70..=72 => {
                let mut live: Vec<ExecutionId> = self.engine.executions().filter(|e| !e.status.is_final()).map(|e| e.id.clone()).collect();
                live.sort();
                if !live.is_empty() {
                    let id = live[self.rng.random_range(0..live.len())].clone();
                    let abandon = self.rng.random_bool(0.5);
                    self.engine.handle(self.now, Event::Stop { id: id.clone(), abandon, reason: "sim".into() });
                    if abandon {
                        self.held.retain(|d| d.execution_id != id);
                    }
                }
            }
            73..=79 => self.decide_some_approval(),
            80..=83 => self.retry_some_failure(),
            84..=85 => self.restart(),
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
        if let Err(e) = self.engine.start_rollback(self.now, id, def, 1, &target, &request.stage, trigger) {
            self.fail(format!("a rollback to {} was refused: {e}", target.id));
        }
        self.settle();
    }

    fn start(&mut self) {
        let def = self.pipelines[self.rng.random_range(0..self.pipelines.len())].clone();
        self.started += 1;
        let id = ExecutionId(format!("e{:03}", self.started));
        let trigger = Trigger::new("StartPipelineExecution", "sim").by("starter");
        self.engine.handle(
            self.now,
            Event::Start { id, pipeline: def, version: 1, trigger, variables: BTreeMap::new(), revisions: BTreeMap::new() },
        );
    }

    fn decide_some_approval(&mut self) {
        let mut waiting: Vec<ExecutionId> = self
            .engine
            .executions()
            .filter(|e| e.stages.iter().any(|s| s.actions.iter().any(|a| a.approval.is_some() && a.status == Some(ActionStatus::InProgress))))
            .map(|e| e.id.clone())
            .collect();
        waiting.sort();
        if waiting.is_empty() {
            return;
        }
        let id = waiting[self.rng.random_range(0..waiting.len())].clone();
        let approve = self.rng.random_bool(0.8);
        if let Err(e) = self.engine.decide(self.now, &id, "Approve", "Gate", "approver", approve, "") {
            self.fail(format!("a waiting approval refused a decision: {e}"));
        }
        if self.engine.decide(self.now, &id, "Approve", "Gate", "starter", true, "").is_ok() {
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
        let all = self.rng.random_bool(0.5);
        self.retried.insert(e.ordinal);
        if let Err(err) = self.engine.retry(self.now, def, e, &stage, all) {
            self.fail(format!("retrying a failed stage was refused: {err}"));
        }
    }

    /// The controller restarts: a new engine from the stored executions.
    fn restart(&mut self) {
        self.settle();
        let mut engine = Engine::new();
        for (pipeline, stage) in &self.disabled {
            engine.set_transition(self.now, pipeline, stage, false);
        }
        let unfinished: Vec<(Arc<Pipeline>, Execution)> = self
            .stored
            .values()
            .filter(|e| !e.status.is_final())
            .map(|e| (self.pipelines.iter().find(|p| p.name == e.pipeline).cloned().expect("known pipeline"), e.clone()))
            .collect();
        engine.restore_all(self.now, unfinished);
        self.engine = engine;
        // What agents held is handed out again under new epochs.
        for d in self.held.drain(..) {
            self.stale.push((d.job_id, d.lease_epoch));
        }
        self.handed_since_restart.clear();
    }

    /// No more faults: transitions on, every approval approved, every job
    /// succeeds. Every execution must end.
    fn drain(&mut self) {
        let disabled: Vec<(String, String)> = self.disabled.drain().collect();
        for (pipeline, stage) in disabled {
            self.engine.set_transition(self.now, &pipeline, &stage, true);
        }
        self.settle();
        for _ in 0..10_000 {
            self.step += 1;
            self.now += 10;
            if let Some(d) = self.held.pop() {
                let result = self.result_for(&d, false);
                self.engine.handle(self.now, Event::ActionFinished { job_id: d.job_id, lease_epoch: d.lease_epoch, result });
            } else {
                let waiting: Vec<ExecutionId> = self
                    .engine
                    .executions()
                    .filter(|e| e.stages.iter().any(|s| s.actions.iter().any(|a| a.approval.is_some() && a.status == Some(ActionStatus::InProgress))))
                    .map(|e| e.id.clone())
                    .collect();
                for id in waiting {
                    let _ = self.engine.decide(self.now, &id, "Approve", "Gate", "approver", true, "");
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
    }
}

/// Runs one seed; returns how many rollbacks it started.
fn run(seed: u64, steps: usize) -> usize {
    let mut world = World::new(seed);
    for _ in 0..steps {
        world.random_step();
    }
    world.drain();
    world.rollbacks.len()
}

#[test]
fn simulated_executions_keep_every_invariant() {
    if let Some(seed) = std::env::var("SLUICE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        run(seed, 400);
        return;
    }
    let runs: u64 = std::env::var("SLUICE_SIM_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let rollbacks: usize = (0..runs).map(|seed| run(seed, 400)).sum();
    assert!(rollbacks > 0, "the faults never led to a rollback: the simulation misses a path");
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
