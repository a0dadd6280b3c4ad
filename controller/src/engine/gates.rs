//! Stage conditions in the engine (`beforeEntry`, `onSuccess`, `onFailure`)
//! and rollbacks.
//!
//! A gate evaluates one phase's conditions in order. `VariableCheck` rules
//! are decided at once from the execution's variables; `Commands` rules are
//! handed to agents like actions (the `shell` plugin, job ids ending in
//! `.rN`) and the gate waits for their results. A rollback is a new
//! execution that takes the stages before the rolled-back one, their
//! artifacts and variables from the target execution, runs that stage
//! again, and ends.

use super::*;
use crate::pipeline::conditions::{self, Outcome, RuleKind, StageConditions};

/// What a gate says about a phase now.
pub(super) enum Gate {
    /// Every condition holds (or, for `onFailure`, one does not).
    Passed,
    /// Rules still run on agents.
    Pending,
    /// A condition applied its result; the message says which rule.
    Applied(Outcome, String),
}

/// A rollback the driver should start: it finds the target execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackRequest {
    pub pipeline: String,
    pub stage: String,
    pub failed: ExecutionId,
}

/// Default timeout of a Commands rule on an agent.
const RULE_TIMEOUT_MS: u64 = 20 * 60_000;

impl Engine {
    pub(super) fn stage_conditions(&self, exec_id: &ExecutionId, si: usize) -> StageConditions {
        let def = &self.definitions[exec_id];
        let stage = &def.stages[si];
        if !["beforeEntry", "onSuccess", "onFailure"].iter().any(|k| stage.extra.contains_key(*k)) {
            return StageConditions::default();
        }
        // Validated when the pipeline was stored.
        conditions::stage_conditions(stage, "").unwrap_or_default()
    }

    /// Evaluates (or goes on evaluating) a phase of stage `si`.
    pub(super) fn gate(&mut self, now: Millis, exec_id: &ExecutionId, si: usize, phase: GatePhase) -> Gate {
        let all = self.stage_conditions(exec_id, si);
        let (list, on_failure) = match phase {
            GatePhase::BeforeEntry => (all.before_entry.clone(), None),
            GatePhase::OnSuccess => (all.on_success.clone(), None),
            GatePhase::OnFailure => match &all.on_failure {
                Some(f) => (f.conditions.clone(), Some(f.result)),
                None => return Gate::Passed,
            },
        };
        for (ci, condition) in list.iter().enumerate() {
            let mut pending = false;
            let mut failed: Option<String> = None;
            for (ri, rule) in condition.rules.iter().enumerate() {
                let run = self.rule_run(exec_id, si, phase, ci, &rule.name).cloned();
                let run = match run {
                    Some(run) => run,
                    None => self.start_rule(now, exec_id, si, phase, ci, ri, rule),
                };
                match run.status {
                    ActionStatus::InProgress => pending = true,
                    ActionStatus::Succeeded => {}
                    _ => {
                        failed.get_or_insert_with(|| {
                            format!("rule \"{}\": {}", rule.name, run.message.clone().unwrap_or_else(|| "failed".into()))
                        });
                    }
                }
            }
            if pending {
                return Gate::Pending;
            }
            match (on_failure, failed) {
                // onFailure applies its result only when every condition holds.
                (Some(_), Some(_)) => return Gate::Passed,
                (Some(_), None) => {}
                (None, Some(why)) => return Gate::Applied(condition.result, why),
                (None, None) => {}
            }
        }
        match on_failure {
            Some(result) => Gate::Applied(result, "onFailure".into()),
            None => Gate::Passed,
        }
    }

    fn rule_run(&self, exec_id: &ExecutionId, si: usize, phase: GatePhase, ci: usize, name: &str) -> Option<&RuleRun> {
        self.executions[exec_id].stages[si]
            .rules
            .iter()
            .rev()
            .find(|r| r.phase == phase && r.condition == ci && r.name == name && r.status != ActionStatus::Abandoned)
    }

    #[allow(clippy::too_many_arguments)]
    fn start_rule(
        &mut self,
        now: Millis,
        exec_id: &ExecutionId,
        si: usize,
        phase: GatePhase,
        ci: usize,
        ri: usize,
        rule: &conditions::Rule,
    ) -> RuleRun {
        let exec = &self.executions[exec_id];
        let mut run = RuleRun {
            phase,
            condition: ci,
            name: rule.name.clone(),
            status: ActionStatus::InProgress,
            message: None,
            job_id: None,
            lease_epoch: 1,
        };
        match &rule.kind {
            RuleKind::VariableCheck { variable, value, operator } => {
                let resolved = resolve(variable, |r| lookup(exec, r));
                let verdict = resolved.map_err(|e| format!("cannot resolve {variable}: {e}")).and_then(|actual| {
                    conditions::check(*operator, &actual, value)
                        .map(|ok| (ok, format!("{variable} = {actual:?}, {operator:?} {value:?}")))
                });
                match verdict {
                    Ok((ok, said)) => {
                        run.status = if ok { ActionStatus::Succeeded } else { ActionStatus::Failed };
                        run.message = Some(said);
                    }
                    Err(e) => {
                        run.status = ActionStatus::Failed;
                        run.message = Some(e);
                    }
                }
            }
            RuleKind::Commands { commands, inputs, capabilities } => {
                let attempt = exec.stages[si].rules.len();
                let job_id = format!("{exec_id}.{si}.r{ri}.{attempt}");
                let mut given = Vec::new();
                for name in inputs {
                    match exec.artifacts.get(name) {
                        Some(a) => given.push((name.clone(), a.clone())),
                        None => {
                            run.status = ActionStatus::Failed;
                            run.message = Some(format!("input artifact \"{name}\" was not produced"));
                        }
                    }
                }
                if run.status == ActionStatus::InProgress {
                    run.job_id = Some(job_id.clone());
                    let job_id = JobId(job_id);
                    self.jobs.insert(job_id.clone(), JobPlace { execution: exec_id.clone(), stage: si, action: usize::MAX });
                    self.ready.push_back(Dispatch {
                        job_id,
                        lease_epoch: run.lease_epoch,
                        execution_id: exec_id.clone(),
                        pipeline: exec.pipeline.clone(),
                        stage: exec.stages[si].name.clone(),
                        action: format!("rule:{}", rule.name),
                        attempt: 1,
                        owner: "Sluice".into(),
                        provider: "shell".into(),
                        provider_version: "1".into(),
                        configuration: vec![("Commands".into(), commands.clone())],
                        variables: Vec::new(),
                        inputs: given,
                        outputs: Vec::new(),
                        capabilities: capabilities.clone(),
                        agent_labels: BTreeMap::new(),
                        timeout_ms: RULE_TIMEOUT_MS,
                        assigned: None,
                        started: false,
                        lost_on: Vec::new(),
                    });
                }
            }
        }
        let exec = exec_mut(&mut self.executions, exec_id).expect("known");
        exec.stages[si].rules.push(run.clone());
        exec.updated_at = now;
        self.dirty.insert(exec_id.clone());
        run
    }

    /// A rule job's result, if the job is a current rule run.
    pub(super) fn rule_result(&mut self, now: Millis, job_id: &JobId, lease_epoch: u64, ok: bool, message: String) -> bool {
        let Some(place) = self.jobs.get(job_id).filter(|p| p.action == usize::MAX).cloned() else { return false };
        let Some(exec) = exec_mut(&mut self.executions, &place.execution) else { return true };
        let Some(run) = exec.stages[place.stage].rules.iter_mut().find(|r| {
            r.job_id.as_deref() == Some(job_id.as_str())
                && r.lease_epoch == lease_epoch
                && r.status == ActionStatus::InProgress
        }) else {
            return true;
        };
        run.status = if ok { ActionStatus::Succeeded } else { ActionStatus::Failed };
        run.message = Some(message);
        exec.updated_at = now;
        let id = place.execution.clone();
        self.advance(now, &id);
        true
    }

    /// Rule jobs in progress in a loaded execution, handed out again under
    /// a new epoch (after a restart).
    pub(super) fn redispatch_rules(&mut self, exec_id: &ExecutionId) {
        let exec = exec_mut(&mut self.executions, exec_id).expect("loaded");
        for stage in &mut exec.stages {
            for run in stage.rules.iter_mut().filter(|r| r.status == ActionStatus::InProgress) {
                // The gate starts it afresh under a new job id; a late
                // result of this run is no longer awaited.
                run.status = ActionStatus::Abandoned;
                run.message = Some("the controller restarted; the rule runs again".into());
            }
        }
    }

    /// Asks the driver for a rollback of a stage of a failed execution.
    pub(super) fn request_rollback(&mut self, exec_id: &ExecutionId, si: usize) {
        let exec = &self.executions[exec_id];
        self.rollbacks.push(RollbackRequest {
            pipeline: exec.pipeline.clone(),
            stage: exec.stages[si].name.clone(),
            failed: exec_id.clone(),
        });
    }

    /// Rollbacks requested by `onFailure`/`onSuccess` ROLLBACK since the last call.
    pub fn take_rollbacks(&mut self) -> Vec<RollbackRequest> {
        std::mem::take(&mut self.rollbacks)
    }

    /// [`Event::Rollback`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_rollback(
        &mut self,
        now: Millis,
        id: ExecutionId,
        pipeline: Arc<Pipeline>,
        version: u64,
        target: &Execution,
        stage: &str,
        trigger: Trigger,
    ) -> Result<(), Refusal> {
        let si = pipeline.stages.iter().position(|s| s.name == stage).ok_or_else(|| Refusal::NoStage(stage.to_string()))?;
        if si == 0 {
            return Err(Refusal::FirstStage);
        }
        let done = target.stages.get(si).is_some_and(|s| s.name == stage && s.status == Some(StageStatus::Succeeded));
        if !done {
            return Err(Refusal::StageDidNotSucceed { id: target.id.clone(), stage: stage.to_string() });
        }
        let mut exec = self.new_execution(now, id, &pipeline, version, trigger, BTreeMap::new(), BTreeMap::new());
        exec.variables = target.variables.clone();
        exec.rollback = Some(Rollback { stage: stage.to_string(), target: target.id.clone() });
        exec.artifacts = target.artifacts.clone();
        exec.namespaces = target.namespaces.clone();
        exec.source_revisions = target.source_revisions.clone();
        for (i, stage) in exec.stages.iter_mut().enumerate().take(si) {
            *stage = target.stages[i].clone();
        }
        self.launch(now, pipeline, exec);
        Ok(())
    }
}

/// Variables an execution resolves (as in action configuration).
pub(super) fn lookup(exec: &Execution, r: &crate::pipeline::VarRef) -> Option<String> {
    match r.namespace.as_str() {
        "variables" => exec.variables.get(&r.name).cloned(),
        "codepipeline" if r.name == "PipelineExecutionId" => Some(exec.id.to_string()),
        "codepipeline" if r.name == "PipelineName" => Some(exec.pipeline.clone()),
        ns => exec.namespaces.get(ns).and_then(|vars| vars.get(&r.name)).cloned(),
    }
}
