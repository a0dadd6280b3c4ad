//! The driver's link to one connected agent: a bounded queue to the
//! writer of the agent's control stream, made by the fleet endpoint and
//! carried to the driver in `Command::AgentConnected`. Knows neither the
//! driver nor the fleet.

use sluice_protocol::ToAgent;
use tokio::sync::mpsc;
use tracing::warn;

/// Messages that may wait for one agent to read them. An agent reads its
/// control stream all the time; one that stops (or never starts) fills
/// this and is disconnected, instead of growing the controller's memory.
/// Heartbeat and log acknowledgements of a full agent (64 slots) are well
/// under this per heartbeat.
pub const AGENT_QUEUE: usize = 1024;

/// The driver's handle on one agent's control stream: a bounded queue to
/// the connection's writer. A full queue closes the connection.
#[derive(Clone)]
pub struct AgentSender {
    tx: mpsc::Sender<ToAgent>,
    conn: quinn::Connection,
    agent_id: std::sync::Arc<str>,
}

impl AgentSender {
    /// The handle on `conn`'s control stream whose writer reads `tx`'s
    /// receiver (made with room for [`AGENT_QUEUE`] messages).
    pub fn new(tx: mpsc::Sender<ToAgent>, conn: quinn::Connection, agent_id: &str) -> Self {
        Self { tx, conn, agent_id: agent_id.into() }
    }

    /// Queues a message; `false` when it cannot be (the agent is gone, or
    /// it does not read and is disconnected now).
    pub fn send(&self, message: ToAgent) -> bool {
        match self.tx.try_send(message) {
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
