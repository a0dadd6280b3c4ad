//! Pipelines: declarations, their versions and their state.

use super::executions::ExecutionSummary;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CreatePipeline: the body is the declaration itself (JSON or YAML).
/// Creating a pipeline starts its first execution, as CodePipeline does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePipeline {
    pub pipeline_declaration: String,
    /// The team the pipeline belongs to (permissions, issue 15). Absent: the
    /// creator's team when it has exactly one, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// The declaration as stored (`{"pipeline": {...}}`) and the first execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePipelineOutput {
    /// The declaration's `pipeline` object, normalized.
    pub pipeline: Value,
    pub pipeline_execution_id: String,
}

/// ValidatePipeline: validates a declaration against the registered
/// providers; changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidatePipeline {
    pub pipeline_declaration: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidatePipelineOutput {
    pub valid: bool,
    pub pipeline_name: String,
}

/// UpdatePipeline: a new version; executions in flight keep theirs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePipeline {
    pub name: String,
    pub pipeline_declaration: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePipelineOutput {
    /// The declaration's `pipeline` object with its new `version`.
    pub pipeline: Value,
}

/// DeletePipeline: every version, execution and log of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeletePipeline {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletePipelineOutput {
    pub name: String,
    pub deleted: bool,
}

/// GetPipeline: the newest version, or `version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetPipeline {
    pub name: String,
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPipelineOutput {
    /// The declaration's `pipeline` object with its `version`.
    pub pipeline: Value,
    pub metadata: PipelineMetadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineMetadata {
    pub pipeline_arn: String,
    pub created: String,
    pub updated: String,
    /// The team the pipeline belongs to, if any (permissions, issue 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// ListPipelines: a page, by name, after `nextToken`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPipelines {
    /// 1 to 1000; every pipeline (up to 1000) when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPipelinesOutput {
    pub pipelines: Vec<PipelineSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSummary {
    pub name: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<String>,
    pub created: String,
    pub updated: String,
}

// pipe (issue 16): the console's pipelines list in one read.
/// ListPipelineStates (Sluice's own): the state of every pipeline the
/// caller may list, a page at a time, in one call and one audit record
/// (the console's pipelines list; GetPipelineState per pipeline would be
/// one call and one record each).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPipelineStates {
    /// 1 to 1000; up to 1000 when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPipelineStatesOutput {
    pub pipeline_states: Vec<PipelineStateEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One pipeline of [`ListPipelineStates`]: its state, or why the caller
/// may not read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStateEntry {
    pub pipeline_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<GetPipelineStateOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The source revisions of each execution a stage last ran, by
    /// execution id: the revision each stage carries.
    #[serde(default)]
    pub revisions: std::collections::BTreeMap<String, Vec<super::SourceRevisionView>>,
}

/// GetPipelineState: for each stage, the latest execution that entered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetPipelineState {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPipelineStateOutput {
    pub pipeline_name: String,
    pub pipeline_version: u64,
    pub stage_states: Vec<StageState>,
    pub latest_execution: Option<ExecutionSummary>,
    pub created: String,
    pub updated: String,
    /// Sluice's own (issue 21, feed): each `pipeline@1` source, what it took
    /// last and why the newest upstream success started nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamState>,
}

/// One `pipeline@1` source in GetPipelineState (issue 21, feed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamState {
    pub source_action: String,
    pub pipeline_name: String,
    /// Absent: the upstream's last stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    /// The upstream execution the newest set started by an upstream took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_taken: Option<String>,
    /// Why the newest upstream success started nothing (a set held by an
    /// upstream still running or failed, no consistent set, a permission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageState {
    pub stage_name: String,
    pub inbound_transition_state: TransitionState,
    pub action_states: Vec<ActionState>,
    pub latest_execution: Option<StageExecution>,
    /// Sluice's own: the execution a RollbackStage of this stage would go
    /// back to by default (the newest finished one, among the recent
    /// executions the state was made of, in which the stage succeeded);
    /// absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_target: Option<String>,
}

/// A stage's inbound transition: `{"enabled": true}` until someone
/// changed it, then who, when and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionState {
    pub enabled: bool,
    /// Present once the transition was changed (`null` when enabled again).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub disabled_reason: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_changed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageExecution {
    pub pipeline_execution_id: String,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionState {
    pub action_name: String,
    pub latest_execution: Option<ActionExecution>,
    /// How change detection of a polled source action is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<PollingState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecution {
    pub status: Option<String>,
    pub summary: Option<String>,
    pub last_status_change: Option<String>,
    pub error_details: Option<ErrorDetails>,
    pub external_execution_url: Option<String>,
    pub agent: Option<String>,
    pub attempt: u32,
    pub waiting_reason: Option<String>,
    /// A manual approval waiting for a decision: CodePipeline's approval
    /// token, which PutApprovalResult takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A manual approval's approvers and every decision so far: who,
    /// approved or rejected, when, with what comment (issue 15, gov).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::engine::ApprovalState>,
}

/// CodePipeline's `errorDetails`; an attempt lost with its agent has the
/// code `AgentLost`, any other failure `JobFailed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetails {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollingState {
    pub interval_seconds: u64,
    pub last_polled: Option<String>,
    pub last_error: Option<String>,
}

/// A field that may be absent, `null` or a value, read as such: `null` is
/// `Some(None)`, so that a client prints what the controller sent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod transition_tests {
    use super::TransitionState;

    #[test]
    fn a_transition_enabled_again_keeps_its_null_reason_through_the_client() {
        for text in [
            r#"{"enabled":true}"#,
            r#"{"enabled":true,"disabledReason":null,"lastChangedBy":"ann"}"#,
            r#"{"enabled":false,"disabledReason":"freeze","lastChangedBy":"ann"}"#,
        ] {
            let state: TransitionState = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&state).unwrap(), text);
        }
    }
}
