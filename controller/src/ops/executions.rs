//! Executions: starting, stopping, reading them and their logs.

use super::pipelines::ErrorDetails;
use crate::engine::{ApprovalState, RuleRun, Trigger};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// StartPipelineExecution. Every field of the body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartPipelineExecution {
    pub name: String,
    #[serde(default)]
    pub variables: Vec<VariableValue>,
    #[serde(default)]
    pub source_revisions: Vec<SourceRevisionOverride>,
    /// Idempotency: a second start with the same token (for the same
    /// pipeline) starts nothing and answers the first one's execution,
    /// also after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableValue {
    pub name: String,
    pub value: String,
}

/// CodePipeline's `SourceRevisionOverride`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceRevisionOverride {
    pub action_name: String,
    /// `COMMIT_ID`, the only kind git sources have (and the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_type: Option<RevisionType>,
    pub revision_value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RevisionType {
    CommitId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartPipelineExecutionOutput {
    pub pipeline_execution_id: String,
}

/// StopPipelineExecution: `abandon` cancels running actions on their
/// agents at once; otherwise they finish and nothing new starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopPipelineExecution {
    pub pipeline_name: String,
    pub pipeline_execution_id: String,
    #[serde(default)]
    pub abandon: bool,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopPipelineExecutionOutput {
    pub pipeline_execution_id: String,
    pub status: String,
}

/// ListPipelineExecutions: a page, newest first, after `nextToken`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPipelineExecutions {
    pub pipeline_name: String,
    /// 1 to 1000; 20 when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPipelineExecutionsOutput {
    pub pipeline_execution_summaries: Vec<ExecutionSummary>,
    pub next_token: Option<String>,
}

/// CodePipeline's `PipelineExecutionSummary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pub pipeline_execution_id: String,
    pub pipeline_version: u64,
    pub status: String,
    pub status_summary: Option<String>,
    pub start_time: String,
    pub last_update_time: String,
    pub trigger: Trigger,
    pub source_revisions: Vec<SourceRevisionView>,
}

/// CodePipeline's `sourceRevisions`: the revision of each source action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRevisionView {
    pub action_name: String,
    pub revision_id: String,
    pub revision_summary: Option<String>,
    pub pinned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetPipelineExecution {
    pub pipeline_name: String,
    pub pipeline_execution_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPipelineExecutionOutput {
    pub pipeline_execution: PipelineExecution,
    pub stages: Vec<StageRunView>,
}

/// CodePipeline's `PipelineExecution`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineExecution {
    pub pipeline_name: String,
    pub pipeline_version: u64,
    pub pipeline_execution_id: String,
    pub status: String,
    pub status_summary: Option<String>,
    pub trigger: Trigger,
    pub start_time: String,
    pub last_update_time: String,
    pub variables: Vec<ResolvedVariable>,
    pub source_revisions: Vec<SourceRevisionView>,
    pub rollback_metadata: Option<RollbackMetadata>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVariable {
    pub name: String,
    pub resolved_value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackMetadata {
    pub stage: String,
    pub rollback_target_pipeline_execution: String,
}

/// One stage of an execution, with every action's attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRunView {
    pub stage_name: String,
    pub status: Option<String>,
    pub condition_rules: Vec<RuleRun>,
    pub actions: Vec<ActionRunView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRunView {
    pub action_name: String,
    pub run_order: u32,
    pub status: Option<String>,
    pub attempt: u32,
    pub agent: Option<String>,
    pub summary: Option<String>,
    pub error_details: Option<ErrorDetails>,
    pub lost_on: Vec<String>,
    pub external_execution_url: Option<String>,
    pub start_time: Option<String>,
    pub last_update_time: Option<String>,
    pub output_artifacts: Vec<ArtifactView>,
    pub output_variables: BTreeMap<String, String>,
    pub approval: Option<ApprovalState>,
    pub waiting_reason: Option<String>,
    pub input_artifacts: Vec<ArtifactView>,
    /// The action's configuration with every variable resolved, in order.
    pub resolved_configuration: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactView {
    pub name: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetExecutionLogs {
    pub pipeline_name: String,
    pub pipeline_execution_id: String,
    /// Only one job's lines (issue 16, logs: the console following a log
    /// reads what is new, not the whole execution's log): those after
    /// `after_seq`, at most `max_lines` ([`MAX_JOB_LOG_LINES`] if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lines: Option<u32>,
}

/// The most lines one read of a job's log answers.
pub const MAX_JOB_LOG_LINES: u32 = 5000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetExecutionLogsOutput {
    pub pipeline_execution_id: String,
    pub lines: Vec<LogLineView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLineView {
    pub job_id: String,
    pub stage: String,
    pub action: String,
    pub seq: u64,
    pub text: String,
    /// The attempt of the action the line was written in (issue 16,
    /// pages); absent for a line of no action's job (a condition's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// ListActionExecutions: every action run of a pipeline's recent
/// executions (or of one), newest execution first, as CodePipeline's
/// `ActionExecutionDetail`s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListActionExecutions {
    pub pipeline_name: String,
    /// CodePipeline's `filter.pipelineExecutionId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_execution_id: Option<String>,
    /// 1 to 100; 100 when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActionExecutionsOutput {
    pub action_execution_details: Vec<ActionExecutionDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionDetail {
    pub pipeline_execution_id: String,
    /// `EXECUTION:STAGE:ACTION:ATTEMPT`.
    pub action_execution_id: String,
    pub pipeline_version: u64,
    pub stage_name: String,
    pub action_name: String,
    pub start_time: Option<String>,
    pub last_update_time: Option<String>,
    pub status: Option<String>,
    pub input: ActionExecutionInputView,
    pub output: ActionExecutionOutputView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionInputView {
    pub action_type_id: serde_json::Value,
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub resolved_configuration: serde_json::Map<String, serde_json::Value>,
    pub input_artifacts: Vec<ArtifactView>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionOutputView {
    pub output_artifacts: Vec<ArtifactView>,
    pub execution_result: ActionExecutionResultView,
    pub output_variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionExecutionResultView {
    pub external_execution_summary: Option<String>,
    pub external_execution_url: Option<String>,
    pub error_details: Option<ErrorDetails>,
}
