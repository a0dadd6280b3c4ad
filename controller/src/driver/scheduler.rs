//! Scheduling in the driver: pending actions to the least-loaded eligible
//! agent, the checks of every hand-out, the job an agent receives, and why
//! an action waits.

use super::Driver;
use super::agents::{AgentConn, LOG_TRUNCATED};
use super::sources::grants_for;
use crate::engine::{ActionResult, Dispatch, Event};
use sluice_protocol::{InputArtifact, JobSpec, OutputSpec, ToAgent};
use std::collections::HashSet;
use tracing::info;

/// A job handed to an agent.
pub(super) struct JobInfo {
    pub(super) agent: String,
    /// The plugin it runs, which its agent may fetch.
    pub(super) plugin_digest: String,
    /// Whether the agent reported starting it.
    pub(super) started: bool,
    /// As handed out, to hand out again if it never reached the agent.
    pub(super) dispatch: Dispatch,
    pub(super) execution_id: String,
    pub(super) pipeline: String,
    pub(super) stage: String,
    pub(super) action: String,
    pub(super) lease_epoch: u64,
    /// When the lease ends unless a heartbeat of the agent reports the job.
    pub(super) lease_until: u64,
    /// The highest log sequence number stored: lines sent again after a
    /// reconnect are dropped.
    pub(super) log_seq: Option<u64>,
    /// The highest one acknowledged to the agent.
    pub(super) log_acked: Option<u64>,
    /// Bytes of log stored, bounded by `--max-action-log`.
    pub(super) log_bytes: u64,
    pub(super) log_truncated: bool,
    /// Artifacts the agent was granted to upload (or found stored) while it
    /// held this job: what its result may name. `None` for a job given
    /// back after a controller restart, whose uploads went to the previous
    /// process: its result may name what is stored, with the stored size.
    pub(super) uploaded: Option<HashSet<String>>,
}

impl Driver {
    /// Why a pending action has no agent yet, in words an operator can act on.
    pub(super) fn waiting_reason(&self, d: &Dispatch) -> String {
        let matching: Vec<&AgentConn> =
            self.agents.values().filter(|a| d.agent_labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))).collect();
        if self.agents.values().all(|a| a.draining) {
            "no agent is connected and taking work".into()
        } else if matching.is_empty() {
            let wanted: Vec<String> = d.agent_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("no connected agent has {}", wanted.join(","))
        } else {
            "every eligible agent is busy".into()
        }
    }

    /// Hands pending actions to the least-loaded eligible agents; returns
    /// those that can never be handed out, with the reason.
    pub(super) fn schedule(&mut self, now: u64) -> Vec<(Dispatch, String)> {
        let mut refused = Vec::new();
        let mut skipped = Vec::new();
        let holding = now < self.hold_restored_until;
        // Stop as soon as every slot is taken: with thousands of actions
        // waiting, moving each of them through the queue on every commit
        // cost more than the commit itself (the throughput benchmark spent
        // about half the driver's time there).
        let quiet = 2 * self.heartbeat().as_millis() as u64;
        let mut free = self.has_free_slot();
        while free && let Some(dispatch) = self.pending.pop_front() {
            if holding && self.restored.contains_key(&dispatch.job_id) {
                skipped.push(dispatch);
                continue;
            }
            // Least loaded first; an agent that lost an earlier attempt of
            // the action only when no other can take it; among equals, one
            // that has the plugin cached.
            let digest = self.catalog.0.get(&format!("{}@{}", dispatch.provider, dispatch.provider_version));
            let digest = digest.map(|p| p.digest.as_str()).unwrap_or_default();
            let best = self
                .agents
                .iter()
                .filter(|(_, a)| !a.draining && (a.running.len() as u32) < a.slots)
                // Nothing new for an agent that missed its last heartbeats:
                // it may be dead without QUIC knowing yet.
                .filter(|(_, a)| now < a.last_heard + quiet)
                .filter(|(_, a)| dispatch.agent_labels.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
                .min_by(|(ia, a), (ib, b)| {
                    let la = a.running.len() as f64 / f64::from(a.slots);
                    let lb = b.running.len() as f64 / f64::from(b.slots);
                    let (sa, sb) = (dispatch.lost_on.contains(*ia), dispatch.lost_on.contains(*ib));
                    let (ca, cb) = (!a.plugins.contains(digest), !b.plugins.contains(digest));
                    sa.cmp(&sb).then(la.total_cmp(&lb)).then(ca.cmp(&cb)).then_with(|| ia.cmp(ib))
                })
                .map(|(id, _)| id.clone());
            let Some(agent_id) = best else {
                skipped.push(dispatch);
                continue;
            };
            match self.hand_out(now, &agent_id, &dispatch, HandOut::New) {
                Ok(()) => free = self.has_free_slot(),
                Err(Refusal::Ineligible(_)) => skipped.push(dispatch),
                Err(Refusal::Impossible(reason)) => refused.push((dispatch, reason)),
            }
        }
        // The skipped ones go back to the front in their order.
        for dispatch in skipped.into_iter().rev() {
            self.pending.push_front(dispatch);
        }
        refused
    }

    /// Fails an action that cannot be handed out at all (e.g. its plugin is
    /// not registered): an engine step the caller commits.
    pub(super) fn refuse(&mut self, now: u64, dispatch: Dispatch, message: String) {
        let (job_id, lease_epoch) = (dispatch.job_id, dispatch.lease_epoch);
        self.engine.handle(now, Event::ActionFinished { job_id, lease_epoch, result: ActionResult::Failed { message } });
    }

    /// Whether some agent could take one more action now.
    pub(super) fn has_free_slot(&self) -> bool {
        self.agents.values().any(|a| !a.draining && (a.running.len() as u32) < a.slots)
    }

    /// Whether `agent_id` may take `dispatch` now: connected (a disabled
    /// or revoked agent never is), its labels matching the action's
    /// `agentLabels`, a free slot, and not draining unless it is given back
    /// a job it already runs. Asked at every hand-out, whoever chose the agent.
    pub(super) fn may_take(&self, agent_id: &str, dispatch: &Dispatch, kind: HandOut) -> Result<(), String> {
        let agent = self.agents.get(agent_id).ok_or_else(|| format!("agent {agent_id} is not connected"))?;
        if agent.draining && kind == HandOut::New {
            return Err(format!("agent {agent_id} is draining"));
        }
        if agent.running.len() as u32 >= agent.slots {
            return Err(format!("agent {agent_id} has no free slot ({} of {})", agent.running.len(), agent.slots));
        }
        if let Some((k, v)) = dispatch.agent_labels.iter().find(|(k, v)| agent.labels.get(*k) != Some(*v)) {
            return Err(format!("agent {agent_id} does not have the label {k}={v} the action asks for"));
        }
        Ok(())
    }

    /// Books a dispatch on an agent and records the assignment in the
    /// engine; the job is sent once that is committed.
    pub(super) fn hand_out(&mut self, now: u64, agent_id: &str, dispatch: &Dispatch, kind: HandOut) -> Result<(), Refusal> {
        self.may_take(agent_id, dispatch, kind).map_err(Refusal::Ineligible)?;
        let spec = self.job_spec(dispatch).map_err(Refusal::Impossible)?;
        let lease_until = self.lease_until(now);
        // A job given back after a restart goes on with the log it has.
        let (log_seq, log_bytes, log_truncated) = match &dispatch.assigned {
            Some(_) => self
                .store
                .log_position(&dispatch.execution_id.0, &dispatch.job_id, LOG_TRUNCATED)
                .map_err(|e| Refusal::Impossible(format!("reading the stored log: {e:#}")))?,
            None => (None, 0, false),
        };
        let agent = self.agents.get_mut(agent_id).expect("a connected agent");
        agent.running.insert(dispatch.job_id.clone());
        agent.plugins.insert(spec.plugin.digest.clone());
        self.jobs.insert(
            dispatch.job_id.clone(),
            JobInfo {
                agent: agent_id.to_string(),
                plugin_digest: spec.plugin.digest.clone(),
                started: dispatch.started,
                dispatch: dispatch.clone(),
                execution_id: dispatch.execution_id.0.clone(),
                pipeline: dispatch.pipeline.clone(),
                stage: dispatch.stage.clone(),
                action: dispatch.action.clone(),
                lease_epoch: dispatch.lease_epoch,
                lease_until,
                log_seq,
                log_acked: None,
                log_bytes,
                log_truncated,
                uploaded: (kind == HandOut::New).then(HashSet::new),
            },
        );
        info!(agent = %agent_id, job = %dispatch.job_id, action = %dispatch.action, "action dispatched");
        self.engine.handle(
            now,
            Event::ActionAssigned {
                job_id: dispatch.job_id.clone(),
                lease_epoch: dispatch.lease_epoch,
                agent: agent_id.to_string(),
            },
        );
        self.outgoing.push((agent_id.to_string(), ToAgent::Job(Box::new(spec))));
        Ok(())
    }

    /// The job an agent receives: the plugin by digest and the grants that
    /// both the plugin declared and the pipeline gave.
    pub(super) fn job_spec(&self, d: &Dispatch) -> Result<JobSpec, String> {
        let key = format!("{}@{}", d.provider, d.provider_version);
        let plugin = self.catalog.0.get(&key).ok_or_else(|| format!("plugin {key} is not registered"))?;
        let grants = grants_for(&plugin.info.capabilities, &d.capabilities);
        let secrets = self.secret_values(&d.pipeline, &grants.secrets).map_err(|e| format!("reading secrets: {e:#}"))?;
        Ok(JobSpec {
            job_id: d.job_id.clone(),
            lease_epoch: d.lease_epoch,
            pipeline: d.pipeline.clone(),
            execution_id: d.execution_id.0.clone(),
            stage: d.stage.clone(),
            action: d.action.clone(),
            attempt: d.attempt,
            plugin: plugin.plugin_ref(&d.provider, &d.provider_version),
            configuration: d.configuration.clone(),
            variables: d.variables.clone(),
            inputs: d
                .inputs
                .iter()
                .map(|(name, a)| InputArtifact { name: name.clone(), digest: a.digest.clone(), size: a.size })
                .collect(),
            outputs: d.outputs.iter().map(|(name, files)| OutputSpec { name: name.clone(), files: files.clone() }).collect(),
            grants,
            secrets,
            timeout_ms: d.timeout_ms,
        })
    }
}

/// Whether a hand-out is new work or a job given back to the agent that
/// already runs it (after a controller restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandOut {
    New,
    Resume,
}

/// Why a dispatch was not handed to an agent.
pub(super) enum Refusal {
    /// Not to this agent now: the dispatch waits for another.
    Ineligible(String),
    /// To no agent ever (e.g. its plugin is not registered): the action fails.
    Impossible(String),
}
