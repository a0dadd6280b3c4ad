//! The revision flow (issue 16, pages): where one source revision went,
//! GoCD's value stream map. Which executions carried a revision, found by
//! a store query over their source revisions, shaped per pipeline: every
//! stage and action it reached, and where it stopped. Only pipelines the
//! caller may read take part, in the listing and in the flow.

use serde::{Deserialize, Serialize};

/// ListRevisions: source revisions that executions carried, newest first;
/// with `prefix`, only those whose id starts with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListRevisions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// 1 to 200; 20 when absent.
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRevisionsOutput {
    pub revisions: Vec<RevisionSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSummary {
    pub revision_id: String,
    pub revision_summary: Option<String>,
    /// The pipelines (the caller may read) whose executions carried it.
    pub pipelines: Vec<String>,
    /// When the newest of those executions started.
    pub last_seen: String,
}

/// GetRevisionFlow: every execution (of a pipeline the caller may read)
/// that carried `revision`, given whole or as an unambiguous prefix of at
/// least [`MIN_REVISION_PREFIX`] characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetRevisionFlow {
    pub revision: String,
}

/// The shortest prefix GetRevisionFlow resolves (a shorter one matches
/// too much by chance; an exact id of any length is found as it is).
pub const MIN_REVISION_PREFIX: usize = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRevisionFlowOutput {
    pub revision_id: String,
    pub revision_summary: Option<String>,
    /// By pipeline name.
    pub pipelines: Vec<RevisionFlowPipeline>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFlowPipeline {
    pub pipeline_name: String,
    /// Newest first.
    pub executions: Vec<RevisionFlowExecution>,
}

/// One execution that carried the revision, as far as it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFlowExecution {
    pub pipeline_execution_id: String,
    pub status: String,
    pub status_summary: Option<String>,
    /// The source action that fetched the revision.
    pub source_action: String,
    pub trigger_type: String,
    pub start_time: String,
    pub last_update_time: String,
    /// Every stage of the version it ran, in order; a stage it never
    /// reached has no status.
    pub stages: Vec<FlowStage>,
    /// Where it stopped (or is now); absent when it went through every stage.
    pub stopped_at: Option<FlowStop>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowStage {
    pub stage_name: String,
    pub status: Option<String>,
    pub actions: Vec<FlowAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowAction {
    pub action_name: String,
    pub status: Option<String>,
}

/// Where an execution stopped: in a stage (at an action when one is to
/// blame) or before a stage it did not enter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowStop {
    pub stage_name: String,
    pub action_name: Option<String>,
    /// The stage's (or the action's) status; `NotEntered` before a stage.
    pub status: String,
    pub before_stage: bool,
}

/// GetArtifact: where one artifact of an execution is and who made it;
/// the console and `GET .../artifacts/{name}/content` serve its bytes
/// after this call allowed them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetArtifact {
    pub pipeline_name: String,
    pub pipeline_execution_id: String,
    pub artifact_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetArtifactOutput {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub stage_name: String,
    pub action_name: String,
}
