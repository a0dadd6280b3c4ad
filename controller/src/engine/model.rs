//! The engine's records: what an execution is, as stored and as shown.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An execution id (a UUID, as CodePipeline's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub String);

impl std::fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// CodePipeline's execution states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionStatus {
    InProgress,
    Stopping,
    Stopped,
    Succeeded,
    Superseded,
    Failed,
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Superseded | Self::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Succeeded => "Succeeded",
            Self::Superseded => "Superseded",
            Self::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageStatus {
    InProgress,
    Succeeded,
    Failed,
    Stopped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
        }
    }
}

/// CodePipeline's action states plus `Lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionStatus {
    InProgress,
    Succeeded,
    Failed,
    Abandoned,
    Lost,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Abandoned => "Abandoned",
            Self::Lost => "Lost",
        }
    }
}

/// A content-addressed artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub digest: String,
    pub size: u64,
}

/// What started an execution (CodePipeline's `trigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// `CreatePipeline`, `StartPipelineExecution`, `Webhook`, `Poll`, ...
    pub trigger_type: String,
    pub trigger_detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub id: ExecutionId,
    pub pipeline: String,
    pub version: u64,
    pub status: ExecutionStatus,
    pub status_summary: Option<String>,
    pub trigger: Trigger,
    pub started_at: u64,
    pub updated_at: u64,
    /// Pipeline variables: defaults with this execution's overrides.
    pub variables: BTreeMap<String, String>,
    pub stages: Vec<StageRun>,
    /// Every artifact produced so far, by name.
    pub artifacts: BTreeMap<String, ArtifactRef>,
    /// Output variables of actions with a namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Start order among the pipeline's executions (QUEUED keeps it).
    #[serde(default)]
    pub ordinal: u64,
    /// The stage (by name, so that pipeline versions agree) this execution
    /// waits to enter while another execution holds it (SUPERSEDED and
    /// QUEUED run one execution per stage).
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// The revision each source action fetches (pinned when the execution
    /// started) or fetched (recorded when it succeeded), by action name:
    /// CodePipeline's `sourceRevisions`.
    #[serde(default)]
    pub source_revisions: BTreeMap<String, SourceRevision>,
}

/// One source action's revision in an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRevision {
    pub revision_id: String,
    pub revision_summary: Option<String>,
    /// Chosen before the action ran (by a trigger or `start
    /// --source-revision`) rather than found at the branch head.
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRun {
    pub name: String,
    pub status: Option<StageStatus>,
    pub actions: Vec<ActionRun>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRun {
    pub name: String,
    pub run_order: u32,
    pub status: Option<ActionStatus>,
    pub attempt: u32,
    pub lease_epoch: u64,
    pub job_id: Option<String>,
    pub agent: Option<String>,
    pub summary: Option<String>,
    pub error: Option<String>,
    pub external_url: Option<String>,
    pub started_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub outputs: Vec<(String, ArtifactRef)>,
    pub output_variables: BTreeMap<String, String>,
    /// Why a dispatched action has not started (e.g. no eligible agent).
    pub waiting_reason: Option<String>,
    /// Agents that lost an earlier attempt of this action in this run, in
    /// order; its length bounds how often a lost action is retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_on: Vec<String>,
    /// The agent the current attempt was handed to, recorded before it is
    /// sent; `agent` is set once that agent reports having started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
}
