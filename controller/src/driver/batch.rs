//! Agent reports already waiting in the driver's queue, handled as one
//! step and written in one transaction.
//!
//! With many agents busy, `JobStarted`, `Log` and `JobFinished` arrive
//! faster than one SQLite commit each can follow, and each commit rewrote
//! the executions they touched. The driver now takes every such report
//! already queued (at most `MAX_BATCH`), feeds each to the engine, writes
//! all their changes in one transaction, and only then acknowledges
//! results, tells watchers and hands out the actions that became ready:
//! every acknowledgement still follows the commit that covers it (docs/design.md
//! section 7). Any other command ends the batch first, so API replies and
//! agent connections see the driver exactly as before.

use super::Driver;
use super::command::Command;
use crate::store::Change;
use serde_json::Value;
use sluice_protocol::{FromAgent, ToAgent};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Reports taken into one transaction at most: enough to absorb a burst
/// from a large fleet, few enough that the first report's acknowledgement
/// does not wait long.
const MAX_BATCH: usize = 64;

/// What a batch holds back until its commit.
#[derive(Default)]
pub(super) struct Batch {
    open: bool,
    changes: Vec<Change>,
    /// Messages to agents, by agent id, that the commit must precede.
    to_agents: Vec<(String, ToAgent)>,
    events: Vec<Arc<Value>>,
}

/// Reports whose effects all go through `commit`, `after_commit` and
/// `tell_watchers`.
fn batchable(command: &Command) -> bool {
    matches!(
        command,
        Command::AgentMessage {
            message: FromAgent::JobStarted { .. } | FromAgent::JobFinished { .. } | FromAgent::Log { .. },
            ..
        }
    )
}

/// A job's start: written with the next commit, not one of its own.
fn is_start(command: &Command) -> bool {
    matches!(command, Command::AgentMessage { message: FromAgent::JobStarted { .. }, .. })
}

impl Driver {
    /// Handles `command`, and with it the batchable reports queued behind
    /// it; returns the first command that ended the batch, to handle next.
    pub(super) fn handle_batch(&mut self, now: u64, command: Command, rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
        if !batchable(&command) {
            self.handle(now, command);
            return None;
        }
        self.batch.open = true;
        let mut only_starts = is_start(&command);
        self.handle(now, command);
        let mut next = None;
        for _ in 1..MAX_BATCH {
            match rx.try_recv() {
                Ok(command) if batchable(&command) => {
                    only_starts &= is_start(&command);
                    self.handle(now, command);
                }
                Ok(command) => {
                    next = Some(command);
                    break;
                }
                Err(_) => break,
            }
        }
        self.batch.open = false;
        if only_starts {
            // Starts alone wait for the next commit (issue 19,
            // `Driver::job_started`); they leave nothing else to write or send.
            return next;
        }
        let changes = std::mem::take(&mut self.batch.changes);
        // A failed commit stops the process inside `commit`: nothing below
        // runs for changes that are not durable. The commit sends the
        // batch's messages to agents (`take_batched`), and tells watchers
        // the batch's events, before its notices (a job's log lines before
        // their result), as one step at a time did.
        let _ = self.commit(now, changes);
        next
    }

    /// The batch's messages to agents, taken by `commit` once the store
    /// has the changes and sent with the jobs it hands out: a result's
    /// acknowledgement and the next job for the same agent then leave in
    /// one write and one packet (issue 19). Apart, they were often two
    /// packets, which made the agent's QUIC send an ACK of its own, which
    /// woke the controller again.
    pub(super) fn take_batched(&mut self) -> Vec<(String, ToAgent)> {
        std::mem::take(&mut self.batch.to_agents)
    }

    /// Called by `commit` once the store has the changes.
    pub(super) fn tell_batched_watchers(&mut self) {
        for event in std::mem::take(&mut self.batch.events) {
            self.tell_after_commit(event);
        }
    }

    /// Inside a batch, keeps the step's changes for the batch's commit;
    /// `false` when there is no batch and the caller commits now.
    pub(super) fn defer_commit(&mut self, changes: &mut Vec<Change>) -> bool {
        if self.batch.open {
            self.batch.changes.append(changes);
        }
        self.batch.open
    }

    /// Sends a message that must follow the commit of what it answers.
    pub(super) fn after_commit(&mut self, agent_id: &str, message: ToAgent) {
        if self.batch.open {
            self.batch.to_agents.push((agent_id.to_string(), message));
        } else {
            self.send_after_commit(agent_id.to_string(), message);
        }
    }

    /// Tells watchers of an event that must follow its commit.
    pub(super) fn tell_watchers(&mut self, event: Value) {
        if self.batch.open {
            self.batch.events.push(Arc::new(event));
        } else {
            self.tell_after_commit(Arc::new(event));
        }
    }
}
