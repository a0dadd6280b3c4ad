//! The driver's link to one connected agent: a bounded queue to the
//! writer of the agent's control stream, made by the fleet endpoint and
//! carried to the driver in `Command::AgentConnected`. Knows neither the
//! driver nor the fleet.

use sluice_protocol::ToAgent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tracing::warn;

/// Writes that may wait for one agent to read them (a message, or
/// messages sent together). An agent reads its control stream all the
/// time; one that stops (or never starts) fills this and is disconnected,
/// instead of growing the controller's memory. Heartbeat and log
/// acknowledgements of a full agent (64 slots) are well under this per
/// heartbeat.
pub const AGENT_QUEUE: usize = 1024;

/// The driver's handle on one agent's control stream: a bounded queue to
/// the connection's writer (a full queue closes the connection), and when
/// the agent was last heard from on it.
#[derive(Clone)]
pub struct AgentSender {
    tx: mpsc::Sender<Vec<ToAgent>>,
    conn: quinn::Connection,
    agent_id: Arc<str>,
    /// Unix ms of the last frame from the agent on this connection, kept
    /// by the connection's reader (which answers idle heartbeats itself,
    /// issue 19) and read by the driver when it looks for silent agents.
    heard: Arc<AtomicU64>,
}

impl AgentSender {
    /// The handle on `conn`'s control stream whose writer reads `tx`'s
    /// receiver (made with room for [`AGENT_QUEUE`] messages), heard from at `now`.
    pub fn new(tx: mpsc::Sender<Vec<ToAgent>>, conn: quinn::Connection, agent_id: &str, now: u64) -> Self {
        Self { tx, conn, agent_id: agent_id.into(), heard: Arc::new(AtomicU64::new(now)) }
    }

    /// The agent sent something at `now` (Unix ms).
    pub fn hear(&self, now: u64) {
        self.heard.fetch_max(now, Ordering::Relaxed);
    }

    /// When the agent last sent anything (Unix ms).
    pub fn last_heard(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// Queues a message; `false` when it cannot be (the agent is gone, or
    /// it does not read and is disconnected now).
    pub fn send(&self, message: ToAgent) -> bool {
        self.send_all(vec![message])
    }

    /// Queues messages that go out in one write, so in one packet when
    /// they fit (issue 19: a result's acknowledgement and the next job).
    pub fn send_all(&self, messages: Vec<ToAgent>) -> bool {
        match self.tx.try_send(messages) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.conn.close_reason().is_none() {
                    warn!(agent_id = %self.agent_id, "agent does not read its stream: {AGENT_QUEUE} messages wait for it; disconnecting");
                    self.conn.close(3u32.into(), b"the agent does not read its control stream");
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
