//! CodePipeline's pipeline, execution, stage and tag operations, each
//! translated to a typed operation of [`crate::ops`] and its output back
//! into CodePipeline's shape. Nothing is decided here.

use super::{Call, input};
use crate::ops::{
    self, ApprovalStatus, CreatePipeline, DeletePipeline, DisableStageTransition, EnableStageTransition, GetPipeline,
    GetPipelineExecution, GetPipelineState, ListActionExecutions, ListPipelineExecutions, ListPipelines,
    ListTagsForResource, OpError, PutApprovalResult, RetryStageExecution, RollbackStage, StartPipelineExecution,
    StopPipelineExecution, Tag, TagResource, UntagResource, UpdatePipeline,
};
use crate::pipeline::reserved;
use serde::Deserialize;
use serde_json::{Value, json};

/// Members that are timestamps in CodePipeline's model: epoch seconds on
/// the wire, where the typed outputs carry RFC 3339 text.
const TIMESTAMPS: &[&str] =
    &["created", "updated", "startTime", "lastUpdateTime", "lastStatusChange", "lastChangedAt", "lastTriggered"];

/// Members whose values are maps of the user's own keys and strings
/// (an action's configuration, its output variables): nothing inside is a
/// member of the model, so nothing inside is converted.
const USER_MAPS: &[&str] = &["configuration", "resolvedConfiguration", "outputVariables", "variables"];

/// A typed output as awsJson: timestamps as epoch seconds, no nulls
/// (absent members, as AWS sends them).
pub fn aws_json(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let v = match (&v, k.as_str()) {
                        (Value::String(text), member) if TIMESTAMPS.contains(&member) => super::epoch(text).unwrap_or(v),
                        (Value::Object(_), member) if USER_MAPS.contains(&member) => v,
                        _ => aws_json(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(aws_json).collect()),
        other => other,
    }
}

fn to_value<T: serde::Serialize>(output: &T) -> Result<Value, OpError> {
    serde_json::to_value(output).map_err(|e| OpError::Internal(format!("serializing an output: {e}")))
}

/// A stored `pipeline` object as the SDKs take it back: Sluice's own
/// action fields as reserved configuration keys.
fn aws_pipeline(mut pipeline: Value) -> Value {
    reserved::to_configuration(&mut pipeline);
    pipeline
}

/// The declaration text of a `pipeline` object, and its name.
fn declaration(pipeline: Value) -> Result<(String, String), OpError> {
    let name = pipeline
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| OpError::invalid("pipeline.name is required"))?
        .to_string();
    Ok((json!({ "pipeline": pipeline }).to_string(), name))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInput {
    next_token: Option<String>,
    max_results: Option<usize>,
}

pub async fn list_pipelines(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let page: PageInput = input(value)?;
    let out = call.ask(ListPipelines { max_results: page.max_results, next_token: page.next_token }).await?;
    Ok(aws_json(to_value(&out)?))
}

#[derive(Deserialize)]
struct CreatePipelineInput {
    pipeline: Value,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// CreatePipeline, then its tags (checked before anything is created).
pub async fn create_pipeline(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let CreatePipelineInput { pipeline, tags } = input(value)?;
    ops::check_tags(&tags)?;
    let (text, name) = declaration(pipeline)?;
    if !tags.is_empty() {
        // Tagging is checked before the pipeline is created, so that a caller
        // who may create but not tag changes nothing.
        let resource = crate::policy::pipeline(&name);
        call.state.directory.check(&call.caller, <TagResource as ops::Operation>::PERMISSION, &resource)?;
    }
    let out = call.ask(CreatePipeline { pipeline_declaration: text, team: None }).await?;
    if !tags.is_empty() {
        call.ask(TagResource { resource_arn: call.arn(&name), tags: tags.clone() }).await?;
    }
    let mut output = json!({ "pipeline": aws_pipeline(out.pipeline) });
    if !tags.is_empty() {
        output["tags"] = to_value(&tags)?;
    }
    Ok(output)
}

#[derive(Deserialize)]
struct GetPipelineInput {
    name: String,
    version: Option<u64>,
}

pub async fn get_pipeline(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let GetPipelineInput { name, version } = input(value)?;
    let out = call.ask(GetPipeline { name: name.clone(), version }).await?;
    let metadata = json!({
        "pipelineArn": call.arn(&name),
        "created": out.metadata.created,
        "updated": out.metadata.updated,
    });
    Ok(aws_json(json!({ "pipeline": aws_pipeline(out.pipeline), "metadata": metadata })))
}

#[derive(Deserialize)]
struct UpdatePipelineInput {
    pipeline: Value,
}

pub async fn update_pipeline(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let UpdatePipelineInput { pipeline } = input(value)?;
    let (text, name) = declaration(pipeline)?;
    let out = call.ask(UpdatePipeline { name, pipeline_declaration: text }).await?;
    Ok(json!({ "pipeline": aws_pipeline(out.pipeline) }))
}

#[derive(Deserialize)]
struct NameInput {
    name: String,
}

/// DeletePipeline: deleting a pipeline that does not exist succeeds, as
/// in CodePipeline (its model has no PipelineNotFoundException here).
pub async fn delete_pipeline(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let NameInput { name } = input(value)?;
    match call.ask(DeletePipeline { name }).await {
        Ok(_) | Err(OpError::PipelineNotFound(_)) => Ok(json!({})),
        Err(e) => Err(e),
    }
}

pub async fn get_pipeline_state(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let NameInput { name } = input(value)?;
    let out = call.ask(GetPipelineState { name }).await?;
    Ok(aws_json(to_value(&out)?))
}

pub async fn start_pipeline_execution(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: StartPipelineExecution = input(value)?;
    let out = call.ask(op).await?;
    Ok(json!({ "pipelineExecutionId": out.pipeline_execution_id }))
}

pub async fn stop_pipeline_execution(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: StopPipelineExecution = input(value)?;
    let out = call.ask(op).await?;
    Ok(json!({ "pipelineExecutionId": out.pipeline_execution_id }))
}

pub async fn get_pipeline_execution(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: GetPipelineExecution = input(value)?;
    let out = call.ask(op).await?;
    let mut execution = to_value(&out.pipeline_execution)?;
    // CodePipeline names the rollback's target by id, and the kind of run.
    let rollback = out.pipeline_execution.rollback_metadata.as_ref();
    execution["executionType"] = json!(if rollback.is_some() { "ROLLBACK" } else { "STANDARD" });
    execution["rollbackMetadata"] =
        rollback.map(|r| json!({ "rollbackTargetPipelineExecutionId": r.rollback_target_pipeline_execution })).into();
    // CodePipeline's `artifactRevisions`: the revision each source action ran.
    let revisions: Vec<Value> = out
        .pipeline_execution
        .source_revisions
        .iter()
        .map(|r| json!({ "name": r.action_name, "revisionId": r.revision_id, "revisionSummary": r.revision_summary }))
        .collect();
    execution["artifactRevisions"] = json!(revisions);
    Ok(aws_json(json!({ "pipelineExecution": execution })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListExecutionsInput {
    pipeline_name: String,
    next_token: Option<String>,
    max_results: Option<usize>,
}

pub async fn list_pipeline_executions(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: ListExecutionsInput = input(value)?;
    let op = ListPipelineExecutions { pipeline_name: i.pipeline_name, max_results: i.max_results, next_token: i.next_token };
    Ok(aws_json(to_value(&call.ask(op).await?)?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ActionExecutionFilter {
    pipeline_execution_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListActionExecutionsInput {
    pipeline_name: String,
    #[serde(default)]
    filter: ActionExecutionFilter,
    next_token: Option<String>,
    max_results: Option<usize>,
}

pub async fn list_action_executions(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: ListActionExecutionsInput = input(value)?;
    let op = ListActionExecutions {
        pipeline_name: i.pipeline_name,
        pipeline_execution_id: i.filter.pipeline_execution_id,
        max_results: i.max_results,
        next_token: i.next_token,
    };
    let mut out = to_value(&call.ask(op).await?)?;
    // Artifacts are named in CodePipeline's `ArtifactDetail`s; Sluice's
    // digest and size stay beside the name.
    if let Some(details) = out["actionExecutionDetails"].as_array_mut() {
        for d in details {
            let result = d["output"]["executionResult"].take();
            d["output"]["executionResult"] = json!({
                "externalExecutionSummary": result["externalExecutionSummary"],
                "externalExecutionUrl": result["externalExecutionUrl"],
                "errorDetails": result["errorDetails"],
            });
        }
    }
    Ok(aws_json(out))
}

pub async fn retry_stage_execution(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: RetryStageExecution = input(value)?;
    let out = call.ask(op).await?;
    Ok(json!({ "pipelineExecutionId": out.pipeline_execution_id }))
}

pub async fn rollback_stage(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: RollbackStage = input(value)?;
    let out = call.ask(op).await?;
    Ok(json!({ "pipelineExecutionId": out.pipeline_execution_id }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApprovalResultInput {
    summary: String,
    status: ApprovalStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutApprovalResultInput {
    pipeline_name: String,
    stage_name: String,
    action_name: String,
    result: ApprovalResultInput,
    token: String,
}

pub async fn put_approval_result(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: PutApprovalResultInput = input(value)?;
    call.ask(PutApprovalResult {
        pipeline_name: i.pipeline_name,
        stage_name: i.stage_name,
        action_name: i.action_name,
        status: i.result.status,
        summary: i.result.summary,
        execution_id: None,
        token: Some(i.token),
    })
    .await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Ok(json!({ "approvedAt": (now * 1000.0).round() / 1000.0 }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransitionInput {
    pipeline_name: String,
    stage_name: String,
    transition_type: String,
    #[serde(default)]
    reason: String,
}

/// Sluice holds executions before a stage (CodePipeline's `Inbound`); it
/// has no outbound transitions.
fn inbound(i: &TransitionInput) -> Result<(), OpError> {
    match i.transition_type.as_str() {
        "Inbound" => Ok(()),
        other => Err(OpError::invalid(format!(
            "transitionType {other:?}: Sluice has inbound transitions only (disable the next stage's inbound transition instead)"
        ))),
    }
}

pub async fn disable_stage_transition(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: TransitionInput = input(value)?;
    inbound(&i)?;
    let op = DisableStageTransition { pipeline_name: i.pipeline_name, stage_name: i.stage_name, reason: i.reason };
    call.ask(op).await?;
    Ok(json!({}))
}

pub async fn enable_stage_transition(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: TransitionInput = input(value)?;
    inbound(&i)?;
    let op = EnableStageTransition { pipeline_name: i.pipeline_name, stage_name: i.stage_name, reason: i.reason };
    call.ask(op).await?;
    Ok(json!({}))
}

pub async fn tag_resource(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: TagResource = input(value)?;
    call.ask(op).await?;
    Ok(json!({}))
}

pub async fn untag_resource(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: UntagResource = input(value)?;
    call.ask(op).await?;
    Ok(json!({}))
}

pub async fn list_tags_for_resource(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let op: ListTagsForResource = input(value)?;
    Ok(aws_json(to_value(&call.ask(op).await?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_lose_nulls_and_carry_epoch_seconds() {
        let typed = json!({"pipelineName": "p", "created": "2015-08-30T12:36:00Z", "latestExecution": null,
            "stageStates": [{"inboundTransitionState": {"enabled": true, "lastChangedAt": "2015-08-30T12:36:01.5Z"}}],
            "summary": "created 2015-08-30T12:36:00Z"});
        assert_eq!(
            aws_json(typed),
            json!({"pipelineName": "p", "created": 1_440_938_160.0,
                "stageStates": [{"inboundTransitionState": {"enabled": true, "lastChangedAt": 1_440_938_161.5}}],
                "summary": "created 2015-08-30T12:36:00Z"})
        );
        // The user's own keys are not the model's members: a configuration
        // key or output variable named like a timestamp stays as written.
        let action = json!({"startTime": "2015-08-30T12:36:00Z",
            "input": {"configuration": {"created": "2015-08-30T12:36:00Z"}, "resolvedConfiguration": {"updated": "2015-08-30T12:36:00Z"}},
            "output": {"outputVariables": {"lastUpdateTime": "2015-08-30T12:36:00Z"}}});
        assert_eq!(
            aws_json(action),
            json!({"startTime": 1_440_938_160.0,
                "input": {"configuration": {"created": "2015-08-30T12:36:00Z"}, "resolvedConfiguration": {"updated": "2015-08-30T12:36:00Z"}},
                "output": {"outputVariables": {"lastUpdateTime": "2015-08-30T12:36:00Z"}}})
        );
        let (text, name) = declaration(json!({"name": "web", "stages": []})).unwrap();
        assert_eq!((text.as_str(), name.as_str()), (r#"{"pipeline":{"name":"web","stages":[]}}"#, "web"));
        assert!(declaration(json!({"stages": []})).is_err());
    }
}
