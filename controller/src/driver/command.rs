//! What the driver is asked and what it answers: the [`Command`]s the admin
//! API and the fleet endpoint send it, the replies (operations and their
//! errors are [`crate::ops`]'s).
//!
//! This module is the driver's vocabulary and nothing else: it knows
//! neither the driver nor its callers, so that `api` and `fleet` depend on
//! it and not on the driver (which spawns them).

use super::link::AgentSender;
use crate::auth::Caller;
use crate::ops::{self, OpError};
use sluice_protocol::{EnrollRequest, EnrollResponse, FromAgent, Hello, ToAgent};
use tokio::sync::oneshot;

/// Executions shown by a history listing when the caller does not say.
pub const DEFAULT_HISTORY: usize = 20;

/// Everything the driver is asked to do.
// A call carries its caller (with how it authenticated and where from, for
// the audit log) beside the request: each command is moved once into the
// driver's queue, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// An operation of the admin API (or a transport of its own, such as
    /// a webhook delivery), answered with its typed output.
    Call {
        request: ops::Request,
        caller: Caller,
        reply: oneshot::Sender<Result<ops::Response, OpError>>,
    },
    /// A record for the audit log from a transport: a request refused
    /// before it became a call (a bad bearer token, a bad signature).
    Audit {
        entry: Box<crate::audit::Entry>,
    },
    Enroll {
        request: Box<EnrollRequest>,
        /// The enrolling host's address, for the audit log.
        source: std::net::SocketAddr,
        reply: oneshot::Sender<EnrollResponse>,
    },
    AgentConnected {
        agent_id: String,
        conn_id: u64,
        hello: Hello,
        /// The agent's address, for the audit log.
        source: std::net::SocketAddr,
        tx: AgentSender,
        reply: oneshot::Sender<ToAgent>,
    },
    /// May this agent, on this connection, move these bytes? Asked by the
    /// fleet before every plugin or artifact stream.
    AuthorizeTransfer {
        agent_id: String,
        conn_id: u64,
        transfer: Transfer,
        reply: oneshot::Sender<Result<(), String>>,
    },
    AgentMessage {
        agent_id: String,
        conn_id: u64,
        message: FromAgent,
    },
    AgentDisconnected {
        agent_id: String,
        conn_id: u64,
    },
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
    FetchPlugin {
        digest: String,
    },
    FetchArtifact {
        digest: String,
    },
    /// An upload, or the question of where one would start.
    Upload {
        digest: String,
        size: u64,
    },
}
