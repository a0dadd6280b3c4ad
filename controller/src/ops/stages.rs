//! Stages: retries, rollbacks, inbound transitions and manual approvals.

use serde::{Deserialize, Serialize};

/// RetryStageExecution (`retryMode` as CodePipeline names it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryStageExecution {
    pub pipeline_name: String,
    pub stage_name: String,
    pub pipeline_execution_id: String,
    #[serde(default)]
    pub retry_mode: RetryMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryMode {
    /// The stage's failed actions only.
    #[default]
    FailedActions,
    /// Every action of the stage.
    AllActions,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStageExecutionOutput {
    pub pipeline_execution_id: String,
}

/// RollbackStage: runs the stage again, in a new execution, with the
/// artifacts of `targetPipelineExecutionId` (by default the newest
/// execution in which the stage succeeded).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackStage {
    pub pipeline_name: String,
    pub stage_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pipeline_execution_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStageOutput {
    pub pipeline_execution_id: String,
}

/// DisableStageTransition (inbound only): executions wait before the
/// stage. A reason is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisableStageTransition {
    pub pipeline_name: String,
    pub stage_name: String,
    #[serde(default)]
    pub reason: String,
}

/// EnableStageTransition (inbound only): the newest waiting execution goes on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnableStageTransition {
    pub pipeline_name: String,
    pub stage_name: String,
    /// Accepted and ignored, as the enable verb has always taken the
    /// same body as disable.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageTransitionOutput {
    pub pipeline_name: String,
    pub stage_name: String,
    pub enabled: bool,
}

/// PutApprovalResult: CodePipeline's `result` fields, flattened. Which
/// approval: the one CodePipeline's `token` names (GetPipelineState shows
/// it), or the execution's, or by default the newest waiting at the action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutApprovalResult {
    pub pipeline_name: String,
    pub stage_name: String,
    pub action_name: String,
    pub status: ApprovalStatus,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalStatus {
    Approved,
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutApprovalResultOutput {
    pub pipeline_execution_id: String,
    pub status: ApprovalStatus,
    /// What the decision did (e.g. "approved by ann, bob").
    pub result: String,
}
