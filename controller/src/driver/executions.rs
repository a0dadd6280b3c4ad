//! Execution commands of the driver: start, stop, retry, rollback,
//! approval decisions, inbound transitions, and the views of executions,
//! their logs and a pipeline's state.

use super::Driver;
use super::command::{ApiError, DEFAULT_HISTORY};
use super::intake;
use super::now_ms;
use super::pipelines::not_found_pipeline;
use crate::engine::{ActionStatus, Event, Execution, ExecutionId, Trigger};
use crate::store::{Change, TransitionRecord};
use crate::views;
use serde_json::{Value, json};
use sluice_protocol::ToAgent;
use std::collections::{BTreeMap, HashMap};
use tracing::info;

impl Driver {
    pub(super) fn start_execution(
        &mut self,
        name: &str,
        variables: BTreeMap<String, String>,
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        changes: Vec<Change>,
    ) -> Result<ExecutionId, ApiError> {
        let version = match changes.iter().find_map(|c| match c {
            Change::Pipeline(p) if p.name == name => Some(p.version),
            _ => None,
        }) {
            Some(v) => v,
            None => self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?.version,
        };
        let def = self.definition(name, version)?;
        let unknown: Vec<&String> = variables.keys().filter(|k| def.variable(k).is_none()).collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "pipeline \"{name}\" declares no variable {}",
                    unknown.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
                ),
                diagnostics: vec![],
            });
        }
        let sources: Vec<&str> = def
            .stages
            .first()
            .map(|s| s.actions.iter().filter(|a| a.action_type_id.category == "Source").map(|a| a.name.as_str()).collect())
            .unwrap_or_default();
        let not_sources: Vec<String> =
            revisions.keys().filter(|k| !sources.contains(&k.as_str())).map(|k| format!("\"{k}\"")).collect();
        if !not_sources.is_empty() {
            return Err(ApiError::Invalid {
                message: format!(
                    "pipeline \"{name}\" has no source action {}; its source actions: {}",
                    not_sources.join(", "),
                    sources.join(", ")
                ),
                diagnostics: vec![],
            });
        }
        for (action, revision) in &revisions {
            intake::check_revision(revision).map_err(|e| ApiError::Invalid {
                message: format!("the revision for \"{action}\": {e}"),
                diagnostics: vec![],
            })?;
        }
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        self.engine
            .handle(now_ms(), Event::Start { id: id.clone(), pipeline: def, version, trigger, variables, revisions });
        self.commit(changes)?;
        Ok(id)
    }

    pub(super) fn retry_stage(&mut self, name: &str, stage: &str, id: &str, all: bool) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        if self.engine.execution(&execution.id).is_some() {
            return Err(ApiError::Conflict(format!("execution {id} is still {}", execution.status.as_str())));
        }
        let def = self.definition(name, execution.version)?;
        self.engine
            .retry(now_ms(), def, execution, stage, all)
            .map_err(ApiError::Conflict)?;
        self.commit(Vec::new())?;
        info!(pipeline = %name, %stage, execution = %id, all, "stage retried");
        Ok(json!({ "pipelineExecutionId": id }))
    }

    pub(super) fn set_transition(
        &mut self,
        name: &str,
        stage: &str,
        enabled: bool,
        reason: String,
        by: &str,
    ) -> Result<Value, ApiError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let index = def
            .stages
            .iter()
            .position(|s| s.name == stage)
            .ok_or_else(|| ApiError::NotFound(format!("pipeline \"{name}\" has no stage \"{stage}\"")))?;
        if index == 0 {
            return Err(ApiError::Invalid {
                message: format!("stage \"{stage}\" is the first stage: it has no inbound transition"),
                diagnostics: vec![],
            });
        }
        if !enabled && reason.trim().is_empty() {
            return Err(ApiError::Invalid { message: "disabling a transition needs a --reason".into(), diagnostics: vec![] });
        }
        let transition = TransitionRecord {
            pipeline: name.to_string(),
            stage: stage.to_string(),
            enabled,
            reason: (!enabled).then_some(reason),
            changed_by: by.to_string(),
            changed_at: now_ms(),
        };
        self.engine.set_transition(now_ms(), name, stage, enabled);
        self.commit(vec![Change::Transition(transition.clone())])?;
        info!(pipeline = %name, %stage, enabled, "transition changed");
        self.transitions.insert((name.to_string(), stage.to_string()), transition);
        Ok(json!({ "pipelineName": name, "stageName": stage, "enabled": enabled }))
    }

    /// StopPipelineExecution: `abandon` cancels running actions on their
    /// agents at once; otherwise they finish and nothing new starts.
    pub(super) fn stop_execution(&mut self, name: &str, id: &str, abandon: bool, reason: String) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        if execution.status.is_final() {
            return Err(ApiError::Conflict(format!(
                "execution {id} has already ended ({})",
                execution.status.as_str()
            )));
        }
        let exec_id = execution.id.clone();
        let reason = if reason.trim().is_empty() { "stopped by an operator".to_string() } else { reason };
        self.engine.handle(now_ms(), Event::Stop { id: exec_id.clone(), abandon, reason });
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
        self.commit(Vec::new())?;
        let status = self.execution(name, id)?.status;
        Ok(json!({ "pipelineExecutionId": id, "status": status.as_str() }))
    }

    /// An execution from memory when it is running, else from the store.
    pub(super) fn execution(&mut self, name: &str, id: &str) -> Result<Execution, ApiError> {
        let id = ExecutionId(id.to_string());
        let execution = match self.engine.execution(&id) {
            Some(e) => e.clone(),
            None => self
                .store
                .execution(&id)?
                .ok_or_else(|| ApiError::NotFound(format!("pipeline \"{name}\" has no execution {id}")))?,
        };
        if execution.pipeline != name {
            return Err(ApiError::NotFound(format!("pipeline \"{name}\" has no execution {id}")));
        }
        Ok(execution)
    }

    pub(super) fn recent_executions(&mut self, name: &str, limit: usize) -> Result<Vec<Execution>, ApiError> {
        let mut list = self.store.executions(name, limit)?;
        for e in &mut list {
            if let Some(live) = self.engine.execution(&e.id) {
                *e = live.clone();
            }
        }
        Ok(list)
    }

    pub(super) fn list_executions(&mut self, name: &str, limit: usize, next_token: Option<String>) -> Result<Value, ApiError> {
        if self.store.pipeline(name, None)?.is_none() {
            return Err(not_found_pipeline(name));
        }
        // One more than asked says whether another page exists.
        let mut list = match &next_token {
            None => self.recent_executions(name, limit + 1)?,
            Some(token) => {
                let bad = || ApiError::Invalid { message: format!("nextToken {token:?} is not one this API gave"), diagnostics: vec![] };
                let (started, id) = token.split_once('.').ok_or_else(bad)?;
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
            format!("{}.{}", last.started_at, last.id)
        });
        Ok(json!({
            "pipelineExecutionSummaries": list.iter().map(views::execution_summary).collect::<Vec<_>>(),
            "nextToken": next,
        }))
    }

    pub(super) fn pipeline_state(&mut self, name: &str) -> Result<Value, ApiError> {
        let record = self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let def = self.definition(name, record.version)?;
        let recent = self.recent_executions(name, DEFAULT_HISTORY)?;
        let waiting: HashMap<&str, String> =
            self.pending.iter().map(|d| (d.job_id.as_str(), self.waiting_reason(d))).collect();
        let transitions: HashMap<&str, &TransitionRecord> =
            self.transitions.iter().filter(|((p, _), _)| p == name).map(|((_, s), t)| (s.as_str(), t)).collect();
        let mut state = views::pipeline_state(&record, &def, &recent, &waiting, &transitions);
        // How change detection of each polled source action is doing.
        if let Some(actions) = state["stageStates"][0]["actionStates"].as_array_mut() {
            for action in actions {
                let name = action["actionName"].as_str().unwrap_or_default().to_string();
                if let Some(polling) = self.poll_view(&record.name, &name) {
                    action["polling"] = polling;
                }
            }
        }
        Ok(state)
    }

    pub(super) fn execution_logs(&mut self, name: &str, id: &str) -> Result<Value, ApiError> {
        let execution = self.execution(name, id)?;
        let lines = self.store.logs(&execution.id.0)?;
        let mut places: HashMap<String, (String, String)> = HashMap::new();
        for stage in &execution.stages {
            for action in &stage.actions {
                if let Some(job) = &action.job_id {
                    places.insert(job.clone(), (stage.name.clone(), action.name.clone()));
                }
            }
        }
        let lines: Vec<Value> = lines
            .iter()
            .map(|l| {
                let (stage, action) = places.get(&l.job_id).cloned().unwrap_or_default();
                json!({"jobId": l.job_id, "stage": stage, "action": action, "seq": l.seq, "text": l.text})
            })
            .collect();
        Ok(json!({ "pipelineExecutionId": id, "lines": lines }))
    }

    /// RollbackStage: runs `stage` again in a new execution with the
    /// artifacts of `target` (by default the newest execution, older than
    /// `before` if given, in which the stage succeeded). Engine only: the
    /// caller commits.
    pub(super) fn start_rollback(
        &mut self,
        name: &str,
        stage: &str,
        target: Option<&str>,
        before: Option<&ExecutionId>,
        trigger: Trigger,
    ) -> Result<ExecutionId, ApiError> {
        let succeeded_here = |e: &Execution| {
            e.status.is_final() && e.stages.iter().any(|s| s.name == stage && s.status == Some(crate::engine::StageStatus::Succeeded))
        };
        let target = match target {
            Some(id) => {
                let e = self.execution(name, id)?;
                if !succeeded_here(&e) {
                    return Err(ApiError::Conflict(format!("stage \"{stage}\" did not succeed in execution {id} (or it is still running)")));
                }
                e
            }
            None => {
                let before_started = before
                    .and_then(|id| self.store.execution(id).ok().flatten())
                    .map(|e| (e.started_at, e.id));
                self.store
                    .executions(name, 200)?
                    .into_iter()
                    .filter(|e| before_started.as_ref().is_none_or(|(at, id)| &e.id != id && e.started_at <= *at))
                    .find(|e| succeeded_here(e))
                    .ok_or_else(|| {
                        ApiError::Conflict(format!("no earlier execution of \"{name}\" in which stage \"{stage}\" succeeded"))
                    })?
            }
        };
        let def = self.definition(name, target.version)?;
        let id = ExecutionId(uuid::Uuid::new_v4().to_string());
        self.engine
            .start_rollback(now_ms(), id.clone(), def, target.version, &target, stage, trigger)
            .map_err(ApiError::Conflict)?;
        Ok(id)
    }

    /// Records an approval decision by `by` (the caller's user).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decide(
        &mut self,
        name: &str,
        stage: &str,
        action: &str,
        execution: Option<String>,
        by: &str,
        approve: bool,
        comment: &str,
    ) -> Result<Value, ApiError> {
        self.store.pipeline(name, None)?.ok_or_else(|| not_found_pipeline(name))?;
        let id = match execution {
            Some(id) => ExecutionId(id),
            None => self
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
                    ApiError::NotFound(format!("no execution of \"{name}\" is waiting for approval at {stage}/{action}"))
                })?,
        };
        let outcome = self
            .engine
            .decide(now_ms(), &id, stage, action, by, approve, comment)
            .map_err(ApiError::Conflict)?;
        self.commit(Vec::new())?;
        info!(pipeline = %name, %stage, %action, execution = %id, %by, approve, "approval decision: {outcome}");
        Ok(json!({ "pipelineExecutionId": id.0, "status": if approve { "Approved" } else { "Rejected" }, "result": outcome }))
    }
}
