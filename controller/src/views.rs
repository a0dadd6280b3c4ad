//! JSON views of the engine's records, in the shapes of CodePipeline's API
//! (GetPipelineState, GetPipelineExecution, ListPipelineExecutions) with
//! Sluice's additions beside them. Pure: no I/O.

use crate::engine::{ActionStatus, Execution, Notice};
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

pub fn execution_summary(e: &Execution) -> Value {
    json!({
        "pipelineExecutionId": e.id.0,
        "pipelineVersion": e.version,
        "status": e.status.as_str(),
        "statusSummary": e.status_summary,
        "startTime": time(e.started_at),
        "lastUpdateTime": time(e.updated_at),
        "trigger": e.trigger,
        "sourceRevisions": source_revisions(e),
    })
}

/// CodePipeline's `sourceRevisions`: the revision of each source action.
fn source_revisions(e: &Execution) -> Vec<Value> {
    e.source_revisions
        .iter()
        .map(|(action, r)| {
            json!({
                "actionName": action,
                "revisionId": r.revision_id,
                "revisionSummary": r.revision_summary,
                "pinned": r.pinned,
            })
        })
        .collect()
}

/// CodePipeline's `errorDetails`; an attempt lost with its agent has its own code.
fn error_details(a: &crate::engine::ActionRun) -> Option<Value> {
    let code = if a.status == Some(crate::engine::ActionStatus::Lost) { "AgentLost" } else { "JobFailed" };
    a.error.as_ref().map(|m| json!({"code": code, "message": m}))
}

pub fn execution(e: &Execution) -> Value {
    let stages: Vec<Value> = e
        .stages
        .iter()
        .map(|s| {
            json!({
                "stageName": s.name,
                "status": s.status.map(|x| x.as_str()),
                "conditionRules": s.rules,
                "actions": s.actions.iter().map(|a| json!({
                    "actionName": a.name,
                    "runOrder": a.run_order,
                    "status": a.status.map(|x| x.as_str()),
                    "attempt": a.attempt,
                    "agent": a.agent,
                    "summary": a.summary,
                    "errorDetails": error_details(a),
                    "lostOn": a.lost_on,
                    "externalExecutionUrl": a.external_url,
                    "startTime": a.started_at.map(time),
                    "lastUpdateTime": a.ended_at.map(time),
                    "outputArtifacts": a.outputs.iter().map(|(n, r)| json!({"name": n, "digest": r.digest, "size": r.size})).collect::<Vec<_>>(),
                    "outputVariables": a.output_variables,
                    "approval": a.approval,
                    "waitingReason": a.waiting_reason,
                    "inputArtifacts": a.inputs.iter().map(|(n, r)| json!({"name": n, "digest": r.digest, "size": r.size})).collect::<Vec<_>>(),
                    "resolvedConfiguration": a.resolved_configuration.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<String, Value>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "pipelineExecution": {
            "pipelineName": e.pipeline,
            "pipelineVersion": e.version,
            "pipelineExecutionId": e.id.0,
            "status": e.status.as_str(),
            "statusSummary": e.status_summary,
            "trigger": e.trigger,
            "startTime": time(e.started_at),
            "lastUpdateTime": time(e.updated_at),
            "variables": e.variables.iter().map(|(k, v)| json!({"name": k, "resolvedValue": v})).collect::<Vec<_>>(),
            "sourceRevisions": source_revisions(e),
            "rollbackMetadata": e.rollback.as_ref().map(|r| json!({"stage": r.stage, "rollbackTargetPipelineExecution": r.target.0})),
        },
        "stages": stages,
    })
}

/// GetPipelineState: for each stage, the latest execution that entered it.
/// `recent` is newest first; `waiting` maps job ids to why they wait.
pub fn pipeline_state(
    record: &PipelineRecord,
    def: &Pipeline,
    recent: &[Execution],
    waiting: &HashMap<&str, String>,
    transitions: &HashMap<&str, &TransitionRecord>,
) -> Value {
    let stage_states: Vec<Value> = def
        .stages
        .iter()
        .map(|stage| {
            let latest = recent.iter().find_map(|e| {
                e.stages.iter().find(|s| s.name == stage.name && s.status.is_some()).map(|s| (e, s))
            });
            let actions: Vec<Value> = stage
                .actions
                .iter()
                .map(|action| {
                    let run = latest.and_then(|(_, s)| s.actions.iter().find(|a| a.name == action.name));
                    let latest_execution = run.filter(|a| a.status.is_some()).map(|a| {
                        json!({
                            "status": a.status.map(|x| x.as_str()),
                            "summary": a.summary,
                            "lastStatusChange": a.ended_at.or(a.started_at).map(time),
                            "errorDetails": error_details(a),
                            "externalExecutionUrl": a.external_url,
                            "agent": a.agent,
                            "attempt": a.attempt,
                            "waitingReason": a
                                .job_id
                                .as_deref()
                                .and_then(|j| waiting.get(j).cloned())
                                .or_else(|| a.waiting_reason.clone().filter(|_| a.status == Some(ActionStatus::InProgress))),
                        })
                    });
                    json!({ "actionName": action.name, "latestExecution": latest_execution })
                })
                .collect();
            json!({
                "stageName": stage.name,
                "inboundTransitionState": match transitions.get(stage.name.as_str()) {
                    Some(t) => json!({
                        "enabled": t.enabled,
                        "disabledReason": t.reason,
                        "lastChangedBy": t.changed_by,
                        "lastChangedAt": time(t.changed_at),
                    }),
                    None => json!({ "enabled": true }),
                },
                "actionStates": actions,
                "latestExecution": latest.map(|(e, s)| json!({
                    "pipelineExecutionId": e.id.0,
                    "status": s.status.map(|x| x.as_str()),
                })),
            })
        })
        .collect();
    json!({
        "pipelineName": record.name,
        "pipelineVersion": record.version,
        "stageStates": stage_states,
        "latestExecution": recent.first().map(execution_summary),
        "created": time(record.created_at),
        "updated": time(record.updated_at),
    })
}
