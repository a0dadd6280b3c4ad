//! Agents and the join tokens that enroll them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAgents {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAgentsOutput {
    pub agents: Vec<AgentView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    /// The labels scheduling uses (live ones while connected).
    pub labels: BTreeMap<String, String>,
    /// `enabled`, `draining`, `disabled` or `revoked`.
    pub state: String,
    pub connected: bool,
    pub slots: Option<u32>,
    pub running: usize,
    pub plugins_cached: Option<usize>,
    pub enrolled: String,
    /// When the agent's current certificate expires (agents renew it
    /// before); absent when not known yet (issue 16, pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    /// The jobs it runs now, of pipelines the caller may read (`running`
    /// counts them all).
    #[serde(default)]
    pub running_jobs: Vec<RunningJobView>,
}

/// A job an agent runs: which action of which execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningJobView {
    pub job_id: String,
    pub pipeline_name: String,
    pub pipeline_execution_id: String,
    pub stage_name: String,
    pub action_name: String,
}

/// LabelAgent: `{"set": {...}, "remove": [...]}`, applied to the live
/// connection at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelAgent {
    pub id: String,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelAgentOutput {
    pub id: String,
    /// What scheduling uses now.
    pub labels: BTreeMap<String, String>,
    /// The operator's labels, as stored.
    pub assigned: BTreeMap<String, String>,
}

/// EnableAgent: takes work again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableAgent {
    pub id: String,
}

/// DrainAgent: finishes running work, takes none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainAgent {
    pub id: String,
}

/// DisableAgent: cut off now, refused on reconnect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableAgent {
    pub id: String,
}

/// RevokeAgent: for good; its certificates go on the revocation list and
/// the host must enroll again, as a new agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAgent {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStateOutput {
    pub id: String,
    pub state: String,
}

/// CreateAgentToken: a join token enrolling up to `uses` hosts within
/// `ttlSeconds`, with the labels they get and the label keys they may set
/// for themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgentToken {
    pub ttl_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_agent_labels: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAgentTokenOutput {
    pub id: String,
    /// Shown once; only its hash is kept.
    pub token: String,
    pub expires: String,
    pub uses: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub allow_agent_labels: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAgentTokens {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAgentTokensOutput {
    pub agent_tokens: Vec<AgentTokenView>,
}

/// A join token without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentTokenView {
    pub id: String,
    /// `valid`, `expired`, `used up` or `revoked`.
    pub state: String,
    pub uses_left: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub allow_agent_labels: Vec<String>,
    pub created: String,
    pub expires: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAgentToken {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeAgentTokenOutput {
    pub id: String,
    pub state: String,
}
