//! What the driver is asked and what it answers: the [`Command`]s the admin
//! API and the fleet endpoint send it, the replies, and the errors API
//! callers see.
//!
//! This module is the driver's vocabulary and nothing else: it knows
//! neither the driver nor its callers, so that `api` and `fleet` depend on
//! it and not on the driver (which spawns them).

use super::link::AgentSender;
use crate::engine::Trigger;
use serde_json::Value;
use sluice_protocol::{EnrollRequest, EnrollResponse, FromAgent, Hello, ToAgent};
use sluice_runtime::ActionInfo;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// Executions shown by a history listing when the caller does not say.
pub const DEFAULT_HISTORY: usize = 20;

/// An error an API caller sees; maps onto HTTP statuses and exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { message: String, diagnostics: Vec<String> },
    #[error("{0}")]
    NotFound(String),
    /// Bad or missing credentials (e.g. a webhook signature).
    #[error("{0}")]
    Unauthorized(String),
    /// Known caller, operation not allowed for its role.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Internal(format!("{e:#}"))
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// Everything the driver is asked to do.
pub enum Command {
    CreatePipeline { text: String, by: String, reply: Reply<Value> },
    ValidatePipeline { text: String, reply: Reply<Value> },
    UpdatePipeline { name: String, text: String, reply: Reply<Value> },
    DeletePipeline { name: String, reply: Reply<Value> },
    GetPipeline { name: String, version: Option<u64>, reply: Reply<Value> },
    ListPipelines { reply: Reply<Value> },
    StartExecution {
        name: String,
        variables: BTreeMap<String, String>,
        /// Pinned revisions by source action name.
        revisions: BTreeMap<String, String>,
        trigger: Trigger,
        reply: Reply<Value>,
    },
    /// A webhook delivery, authenticated by its signature rather than a token.
    Webhook { name: String, headers: Vec<(String, String)>, body: Vec<u8>, reply: Reply<Value> },
    CreateWebhook { name: String, reply: Reply<Value> },
    /// RollbackStage (to `target`, or the newest execution in which the stage succeeded).
    RollbackStage { name: String, stage: String, target: Option<String>, by: String, reply: Reply<Value> },
    /// PutApprovalResult: approve or reject a manual approval.
    Decide {
        name: String,
        stage: String,
        action: String,
        /// The execution; by default the newest waiting at that action.
        execution: Option<String>,
        by: String,
        approve: bool,
        comment: String,
        reply: Reply<Value>,
    },
    DeleteWebhook { name: String, reply: Reply<Value> },
    SetSecret { name: String, value: String, pipelines: Option<Vec<String>>, reply: Reply<Value> },
    ListSecrets { reply: Reply<Value> },
    DeleteSecret { name: String, reply: Reply<Value> },
    PipelineState { name: String, reply: Reply<Value> },
    StopExecution { name: String, id: String, abandon: bool, reason: String, reply: Reply<Value> },
    /// RetryStageExecution: failed actions only, or all of the stage's.
    RetryStage { name: String, stage: String, id: String, all: bool, reply: Reply<Value> },
    /// DisableStageTransition / EnableStageTransition (inbound only).
    SetTransition { name: String, stage: String, enabled: bool, reason: String, by: String, reply: Reply<Value> },
    CreateUser { name: String, role: crate::auth::Role, reply: Reply<Value> },
    ListUsers { reply: Reply<Value> },
    CreateToken { user: String, reply: Reply<Value> },
    ListTokens { reply: Reply<Value> },
    RevokeToken { id: String, reply: Reply<Value> },
    GetExecution { name: String, id: String, reply: Reply<Value> },
    /// ListPipelineExecutions: a page, newest first, after `next_token`.
    ListExecutions { name: String, limit: usize, next_token: Option<String>, reply: Reply<Value> },
    ExecutionLogs { name: String, id: String, reply: Reply<Value> },
    ListAgents { reply: Reply<Value> },
    CreateJoinToken {
        ttl: Duration,
        uses: Option<u32>,
        labels: BTreeMap<String, String>,
        /// Label keys an agent enrolled with it may set for itself.
        allow_agent_labels: Vec<String>,
        reply: Reply<Value>,
    },
    /// `sluice agent label`: set and remove an agent's labels.
    LabelAgent { id: String, set: BTreeMap<String, String>, remove: Vec<String>, reply: Reply<Value> },
    ListJoinTokens { reply: Reply<Value> },
    RevokeJoinToken { id: String, reply: Reply<Value> },
    /// `enabled`, `draining` (finish running work, take none) or `disabled`
    /// (cut off now, refused on reconnect).
    SetAgentState { id: String, state: AgentState, reply: Reply<Value> },
    ListPlugins { reply: Reply<Value> },
    DescribePlugin { key: String, reply: Reply<Value> },
    DeletePlugin { key: String, reply: Reply<Value> },
    /// Register a pushed component whose `describe()` was already read,
    /// with the publisher's signature document if it came with one.
    PushPlugin { wasm: Vec<u8>, info: Box<ActionInfo>, signature: Option<String>, reply: Reply<Value> },
    /// Whether a pushed component's signature (or its absence) would be
    /// accepted: asked before the component is compiled and described, so
    /// that a controller requiring signatures runs no unsigned code.
    VetPluginSignature { digest: String, signature: Option<String>, reply: Reply<Value> },
    ListPublishers { reply: Reply<Value> },
    AddPublisher { name: String, public_key: String, by: String, reply: Reply<Value> },
    RemovePublisher { name: String, reply: Reply<Value> },
    Enroll { request: Box<EnrollRequest>, reply: oneshot::Sender<EnrollResponse> },
    AgentConnected { agent_id: String, conn_id: u64, hello: Hello, tx: AgentSender, reply: oneshot::Sender<ToAgent> },
    /// May this agent, on this connection, move these bytes? Asked by the
    /// fleet before every plugin or artifact stream.
    AuthorizeTransfer { agent_id: String, conn_id: u64, transfer: Transfer, reply: oneshot::Sender<Result<(), String>> },
    AgentMessage { agent_id: String, conn_id: u64, message: FromAgent },
    AgentDisconnected { agent_id: String, conn_id: u64 },
    /// Time passes: give up on jobs of agents that did not come back.
    Tick,
}

/// What an operator allows an agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Enabled,
    Draining,
    Disabled,
    /// For good: its certificates are on the revocation list; the host
    /// must enroll again, as a new agent, with a join token.
    Revoked,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
        }
    }
}

/// A transfer an agent asks for, as the driver authorizes it.
#[derive(Debug, Clone)]
pub enum Transfer {
    FetchPlugin { digest: String },
    FetchArtifact { digest: String },
    /// An upload, or the question of where one would start.
    Upload { digest: String, size: u64 },
}
