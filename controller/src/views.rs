//! Views of the engine's records as the operations' typed outputs, in the
//! shapes of CodePipeline's API (GetPipelineState, GetPipelineExecution,
//! ListPipelineExecutions) with Sluice's additions beside them, and the
//! JSON of live events. Pure: no I/O.

use crate::engine::{ActionRun, ActionStatus, ArtifactRef, Execution, Notice};
use crate::ops::{
    ActionExecution, ActionRunView, ActionState, ArtifactView, ErrorDetails, ExecutionSummary, GetPipelineExecutionOutput,
    GetPipelineStateOutput, PipelineExecution, ResolvedVariable, RollbackMetadata, SourceRevisionView, StageExecution,
    StageRunView, StageState, TransitionState,
};
use crate::pipeline::Pipeline;
use crate::store::{PipelineRecord, TransitionRecord};
use serde_json::{Value, json};
use std::collections::HashMap;

/// RFC 3339 UTC time of milliseconds since the epoch.
pub fn time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn notice(n: &Notice) -> Value {
    let kind = match (&n.stage, &n.action) {
        (Some(_), Some(_)) => "action",
        (Some(_), None) => "stage",
        _ => "execution",
    };
    json!({
        "type": kind,
        "pipeline": n.pipeline,
        "executionId": n.execution_id.0,
        "stage": n.stage,
        "action": n.action,
        "status": n.status,
        "message": n.message,
        "time": time(n.at),
    })
}

pub fn execution_summary(e: &Execution) -> ExecutionSummary {
    ExecutionSummary {
        pipeline_execution_id: e.id.0.clone(),
        pipeline_version: e.version,
        status: e.status.as_str().to_string(),
        status_summary: e.status_summary.clone(),
        start_time: time(e.started_at),
        last_update_time: time(e.updated_at),
        trigger: e.trigger.clone(),
        source_revisions: source_revisions(e),
    }
}

/// CodePipeline's `sourceRevisions`: the revision of each source action.
fn source_revisions(e: &Execution) -> Vec<SourceRevisionView> {
    e.source_revisions
        .iter()
        .map(|(action, r)| SourceRevisionView {
            action_name: action.clone(),
            revision_id: r.revision_id.clone(),
            revision_summary: r.revision_summary.clone(),
            pinned: r.pinned,
        })
        .collect()
}

/// CodePipeline's `errorDetails`; an attempt lost with its agent has its own code.
fn error_details(a: &ActionRun) -> Option<ErrorDetails> {
    let code = if a.status == Some(ActionStatus::Lost) { "AgentLost" } else { "JobFailed" };
    a.error.as_ref().map(|m| ErrorDetails { code: code.to_string(), message: m.clone() })
}

fn artifacts(list: &[(String, ArtifactRef)]) -> Vec<ArtifactView> {
    list.iter().map(|(n, r)| ArtifactView { name: n.clone(), digest: r.digest.clone(), size: r.size }).collect()
}

fn action_run(a: &ActionRun) -> ActionRunView {
    ActionRunView {
        action_name: a.name.clone(),
        run_order: a.run_order,
        status: a.status.map(|x| x.as_str().to_string()),
        attempt: a.attempt,
        agent: a.agent.clone(),
        summary: a.summary.clone(),
        error_details: error_details(a),
        lost_on: a.lost_on.clone(),
        external_execution_url: a.external_url.clone(),
        start_time: a.started_at.map(time),
        last_update_time: a.ended_at.map(time),
        output_artifacts: artifacts(&a.outputs),
        output_variables: a.output_variables.clone(),
        approval: a.approval.clone(),
        waiting_reason: a.waiting_reason.clone(),
        input_artifacts: artifacts(&a.inputs),
        resolved_configuration: a
            .resolved_configuration
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<String, Value>>(),
    }
}

/// The id of one attempt of an action (ListActionExecutions'
/// `actionExecutionId`, and a job worker's `pipelineContext.action`).
pub fn action_execution_id(execution: &str, stage: &str, action: &str, attempt: u32) -> String {
    format!("{execution}:{stage}:{action}:{attempt}")
}

/// GetPipelineExecution.
pub fn execution(e: &Execution) -> GetPipelineExecutionOutput {
    let stages = e
        .stages
        .iter()
        .map(|s| StageRunView {
            stage_name: s.name.clone(),
            status: s.status.map(|x| x.as_str().to_string()),
            condition_rules: s.rules.clone(),
            actions: s.actions.iter().map(action_run).collect(),
        })
        .collect();
    GetPipelineExecutionOutput {
        pipeline_execution: PipelineExecution {
            pipeline_name: e.pipeline.clone(),
            pipeline_version: e.version,
            pipeline_execution_id: e.id.0.clone(),
            status: e.status.as_str().to_string(),
            status_summary: e.status_summary.clone(),
            trigger: e.trigger.clone(),
            start_time: time(e.started_at),
            last_update_time: time(e.updated_at),
            variables: e
                .variables
                .iter()
                .map(|(k, v)| ResolvedVariable { name: k.clone(), resolved_value: v.clone() })
                .collect(),
            source_revisions: source_revisions(e),
            rollback_metadata: e.rollback.as_ref().map(|r| RollbackMetadata {
                stage: r.stage.clone(),
                rollback_target_pipeline_execution: r.target.0.clone(),
            }),
        },
        stages,
    }
}

fn transition_state(t: Option<&&TransitionRecord>) -> TransitionState {
    match t {
        Some(t) => TransitionState {
            enabled: t.enabled,
            disabled_reason: Some(t.reason.clone()),
            last_changed_by: Some(t.changed_by.clone()),
            last_changed_at: Some(time(t.changed_at)),
        },
        None => TransitionState { enabled: true, disabled_reason: None, last_changed_by: None, last_changed_at: None },
    }
}

/// The approval token of one attempt of a manual approval: a UUID (the
/// shape CodePipeline's tokens have) derived from the execution, stage,
/// action and attempt, so that a token decides only the request it was
/// shown for, and a retried approval has a new one.
pub fn approval_token(execution_id: &str, stage: &str, action: &str, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("approval\n{execution_id}\n{stage}\n{action}\n{attempt}"));
    let mut bytes: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    // Version 8 ("custom") and the RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// GetPipelineState: for each stage, the latest execution that entered it.
/// `recent` is newest first; `waiting` maps job ids to why they wait.
pub fn pipeline_state(
    record: &PipelineRecord,
    def: &Pipeline,
    recent: &[Execution],
    waiting: &HashMap<&str, String>,
    transitions: &HashMap<&str, &TransitionRecord>,
) -> GetPipelineStateOutput {
    let stage_states =
        def.stages
            .iter()
            .map(|stage| {
                let latest = recent
                    .iter()
                    .find_map(|e| e.stages.iter().find(|s| s.name == stage.name && s.status.is_some()).map(|s| (e, s)));
                let action_states = stage
                    .actions
                    .iter()
                    .map(|action| {
                        let run = latest.and_then(|(_, s)| s.actions.iter().find(|a| a.name == action.name));
                        let latest_execution =
                            run.filter(|a| a.status.is_some()).map(|a| ActionExecution {
                                status: a.status.map(|x| x.as_str().to_string()),
                                summary: a.summary.clone(),
                                last_status_change: a.ended_at.or(a.started_at).map(time),
                                error_details: error_details(a),
                                external_execution_url: a.external_url.clone(),
                                agent: a.agent.clone(),
                                attempt: a.attempt,
                                waiting_reason: a.job_id.as_deref().and_then(|j| waiting.get(j).cloned()).or_else(|| {
                                    a.waiting_reason.clone().filter(|_| a.status == Some(ActionStatus::InProgress))
                                }),
                                token: latest
                                    .filter(|_| a.approval.is_some() && a.status == Some(ActionStatus::InProgress))
                                    .map(|(e, s)| approval_token(&e.id.0, &s.name, &a.name, a.attempt)),
                                approval: a.approval.clone(),
                            });
                        ActionState { action_name: action.name.clone(), latest_execution, polling: None }
                    })
                    .collect();
                StageState {
                    stage_name: stage.name.clone(),
                    inbound_transition_state: transition_state(transitions.get(stage.name.as_str())),
                    action_states,
                    latest_execution: latest.map(|(e, s)| StageExecution {
                        pipeline_execution_id: e.id.0.clone(),
                        status: s.status.map(|x| x.as_str().to_string()),
                    }),
                    // As RollbackStage picks its default target.
                    rollback_target: recent
                        .iter()
                        .find(|e| {
                            e.status.is_final()
                                && e.stages
                                    .iter()
                                    .any(|s| s.name == stage.name && s.status == Some(crate::engine::StageStatus::Succeeded))
                        })
                        .map(|e| e.id.0.clone()),
                }
            })
            .collect();
    GetPipelineStateOutput {
        pipeline_name: record.name.clone(),
        pipeline_version: record.version,
        stage_states,
        latest_execution: recent.first().map(execution_summary),
        created: time(record.created_at),
        updated: time(record.updated_at),
        upstreams: Vec::new(),
    }
}
