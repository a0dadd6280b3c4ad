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

/// A string id with its own type, so that a job id is never passed where
/// an agent id is expected (both are bare strings on the wire and in the
/// store, which `serde(transparent)` keeps).
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }
    };
}

string_id! {
    /// One attempt of one action (or one run of a Commands rule) handed to
    /// an agent: `EXECUTION.STAGE.ACTION.ATTEMPT`, or `EXECUTION.STAGE.rRULE.N`.
    JobId
}

string_id! {
    /// An agent, as named by the DNS SAN of its certificate.
    AgentId
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
    /// A condition (`beforeEntry` SKIP, `onFailure` SKIP) skipped it.
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
            Self::Skipped => "Skipped",
        }
    }

    /// Done, and the execution may go on past it.
    pub fn is_passed(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped)
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
    /// The user who started the execution, when a person did (API calls);
    /// that user may not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    // Separation of duties (issue 15, gov).
    /// Who wrote the pipeline version the execution runs (the caller of
    /// CreatePipeline or UpdatePipeline) and which version; they may not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_author: Option<String>,
    /// The git host's user who pushed the revision, when a webhook names
    /// one; taken to be the Sluice user of the same name, who may not approve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_by: Option<String>,
    /// Who set the webhook secret a delivery that started the execution
    /// was signed with: whoever holds it can start any revision, so they
    /// may not approve it, as the starter may not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_by: Option<String>,
}

impl Trigger {
    pub fn new(trigger_type: impl Into<String>, trigger_detail: impl Into<String>) -> Self {
        Self {
            trigger_type: trigger_type.into(),
            trigger_detail: trigger_detail.into(),
            started_by: None,
            version_author: None,
            pushed_by: None,
            webhook_secret_by: None,
        }
    }

    pub fn webhook_secret_by(mut self, user: Option<String>) -> Self {
        self.webhook_secret_by = user;
        self
    }

    pub fn pushed_by(mut self, pusher: Option<String>) -> Self {
        self.pushed_by = pusher;
        self
    }

    pub fn by(mut self, user: impl Into<String>) -> Self {
        self.started_by = Some(user.into());
        self
    }
}

/// A manual approval in progress or decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalState {
    /// `RequiredApprovals`: distinct approvers needed.
    pub required: u32,
    /// `Approvers` as declared (`user:ann,team:release,role:approver`);
    /// empty when anyone allowed to call PutApprovalResult may decide.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approvers: String,
    /// Every decision, in order: the audit trail.
    pub decisions: Vec<ApprovalDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDecision {
    pub by: String,
    pub approved: bool,
    pub comment: String,
    pub at: u64,
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
    /// Set on a rollback execution: the stage it runs again with the
    /// artifacts of `target`, the execution rolled back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Pipelines that feed pipelines (issue 21, feed): the lineage of the
    /// upstream executions a `pipeline@1` source pinned, carried
    /// transitively (see [`crate::feed::lineage`]): `PIPELINE/ACTION` to the
    /// revision that source action carried, `PIPELINE` to that pipeline's
    /// execution id. Empty for a pipeline fed by no pipeline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<String, Origin>,
}

/// One revision an execution carries from upstream (issue 21, feed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub revision_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_summary: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    pub stage: String,
    pub target: ExecutionId,
}

/// Which stage condition a gate evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatePhase {
    BeforeEntry,
    OnSuccess,
    OnFailure,
}

/// One rule of a stage condition, as evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleRun {
    pub phase: GatePhase,
    pub condition: usize,
    pub name: String,
    /// `InProgress` while a Commands rule runs on an agent.
    pub status: ActionStatus,
    pub message: Option<String>,
    pub job_id: Option<String>,
    pub lease_epoch: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StageStatus>,
    pub actions: Vec<ActionRun>,
    /// Rules of this stage's conditions, as evaluated (every attempt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleRun>,
    /// Condition phases that passed for the current attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<GatePhase>,
    /// `onFailure` RETRY already used (it retries once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_retried: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRun {
    pub name: String,
    pub run_order: u32,
    // Empty fields are left out of the stored state (issue 19, perf): the
    // whole execution is written at every step, and an action not yet run
    // was ten nulls and zeros, most of a long pipeline's row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ActionStatus>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub lease_epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<(String, ArtifactRef)>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_variables: BTreeMap<String, String>,
    /// Why a dispatched action has not started (e.g. no eligible agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// Input artifacts this attempt was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(String, ArtifactRef)>,
    /// Its configuration with every variable resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_configuration: Vec<(String, String)>,
    /// For a manual approval: what it needs and who decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalState>,
    /// Agents that lost an earlier attempt of this action in this run, in
    /// order; its length bounds how often a lost action is retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_on: Vec<String>,
    /// The agent the current attempt was handed to, recorded before it is
    /// sent; `agent` is set once that agent reports having started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
