//! Agents in the driver: connections (hello, reconnects, jobs given back
//! or lost), their reports, and the operator's commands on them (list,
//! labels, enabled/draining/disabled/revoked).

use super::Driver;
use super::command::AgentState;
use super::intake;
use super::link::AgentSender;
use super::scheduler::{HandOut, Refusal};
use crate::engine::{ActionResult, ArtifactRef, Event};
use crate::store::{Change, LogLine, RevocationRecord};
use crate::ops::{
    AgentStateOutput, AgentView, Context, DisableAgent, DrainAgent, EnableAgent, Handle, LabelAgent, LabelAgentOutput,
    ListAgents, ListAgentsOutput, OpError, RevokeAgent,
};
use crate::views;
use serde_json::json;
use sluice_protocol::{FromAgent, Hello, JobResult, OutputSpec, PROTOCOL_VERSION, ProducedArtifact, ToAgent};
use std::collections::{BTreeMap, HashSet};
use tracing::{info, warn};

/// A connected agent.
pub(super) struct AgentConn {
    pub(super) conn_id: u64,
    /// A draining agent finishes what it runs and takes nothing new.
    pub(super) draining: bool,
    pub(super) tx: AgentSender,
    /// What the agent's hello claimed; which of it counts is decided by
    /// [`intake::effective_labels`] with the labels below.
    pub(super) claimed_labels: BTreeMap<String, String>,
    /// The labels scheduling uses: the operator's, the observed ones and
    /// the claims the token allows.
    pub(super) labels: BTreeMap<String, String>,
    pub(super) slots: u32,
    pub(super) running: HashSet<String>,
    pub(super) hostname: String,
    /// When the agent last sent anything.
    pub(super) last_heard: u64,
    /// Digests of the plugins it has cached (said in Hello, and every
    /// plugin of a job handed to it since).
    pub(super) plugins: HashSet<String>,
}

/// The first words of the line that ends a log cut at its bound.
pub(super) const LOG_TRUNCATED: &str = "[log truncated:";

impl Handle<ListAgents> for Driver {
    fn handle(&mut self, _: ListAgents, _: &Context) -> Result<ListAgentsOutput, OpError> {
        let agents = self
            .store
            .agents()?
            .into_iter()
            .map(|a| {
                let live = self.agents.get(&a.id);
                AgentView {
                    id: a.id.clone(),
                    hostname: live.map(|l| l.hostname.clone()).unwrap_or(a.hostname),
                    labels: live.map(|l| l.labels.clone()).unwrap_or(a.labels),
                    state: a.state,
                    connected: live.is_some(),
                    slots: live.map(|l| l.slots),
                    running: live.map(|l| l.running.len()).unwrap_or(0),
                    plugins_cached: live.map(|l| l.plugins.len()),
                    enrolled: views::time(a.enrolled_at),
                }
            })
            .collect();
        Ok(ListAgentsOutput { agents })
    }
}

/// `sluice agent label ID k=v ... k-`: the operator's labels of an agent,
/// kept in the store and applied to its live connection at once (work
/// already running stays where it is).
impl Handle<LabelAgent> for Driver {
    fn handle(&mut self, op: LabelAgent, ctx: &Context) -> Result<LabelAgentOutput, OpError> {
        let now = ctx.now;
        let (id, set, remove) = (op.id.as_str(), op.set, op.remove);
        let invalid = OpError::invalid;
        for (key, value) in &set {
            intake::check_label(key, value).map_err(invalid)?;
        }
        if let Some(key) = remove.iter().find(|k| set.contains_key(*k)) {
            return Err(invalid(format!("label {key:?} is both set and removed")));
        }
        let mut record =
            self.store.agent(id)?.ok_or_else(|| OpError::NotFound(format!("agent {id} does not exist")))?;
        if let Some(key) = remove.iter().find(|k| intake::OBSERVED_LABELS.contains(&k.as_str())) {
            return Err(invalid(format!("label {key:?} is observed from the agent's host and cannot be removed")));
        }
        for key in &remove {
            record.labels.remove(key);
        }
        record.labels.extend(set);
        self.commit(now, vec![Change::Agent(record.clone())])?;
        if let Some(agent) = self.agents.get_mut(id) {
            let (labels, _) = intake::effective_labels(&agent.claimed_labels, &record.labels, &record.allow_agent_labels);
            agent.labels = labels;
        }
        info!(agent = %id, labels = ?record.labels, "agent labels changed");
        // New labels may make waiting work runnable.
        self.commit(now, Vec::new())?;
        let live = self.agents.get(id).map(|a| a.labels.clone());
        Ok(LabelAgentOutput {
            id: op.id.clone(),
            labels: live.unwrap_or(record.labels.clone()),
            assigned: record.labels,
        })
    }
}

impl Handle<EnableAgent> for Driver {
    fn handle(&mut self, op: EnableAgent, ctx: &Context) -> Result<AgentStateOutput, OpError> {
        self.set_agent_state(ctx.now, &op.id, AgentState::Enabled)
    }
}

impl Handle<DrainAgent> for Driver {
    fn handle(&mut self, op: DrainAgent, ctx: &Context) -> Result<AgentStateOutput, OpError> {
        self.set_agent_state(ctx.now, &op.id, AgentState::Draining)
    }
}

impl Handle<DisableAgent> for Driver {
    fn handle(&mut self, op: DisableAgent, ctx: &Context) -> Result<AgentStateOutput, OpError> {
        self.set_agent_state(ctx.now, &op.id, AgentState::Disabled)
    }
}

impl Handle<RevokeAgent> for Driver {
    fn handle(&mut self, op: RevokeAgent, ctx: &Context) -> Result<AgentStateOutput, OpError> {
        self.set_agent_state(ctx.now, &op.id, AgentState::Revoked)
    }
}

impl Driver {
    /// `enabled`, `draining` (finish running work, take none), `disabled`
    /// (cut off now, refused on reconnect) or `revoked` (for good).
    fn set_agent_state(&mut self, now: u64, id: &str, state: AgentState) -> Result<AgentStateOutput, OpError> {
        let mut record =
            self.store.agent(id)?.ok_or_else(|| OpError::NotFound(format!("agent {id} does not exist")))?;
        if record.state == AgentState::Revoked.as_str() && state != AgentState::Revoked {
            return Err(OpError::Conflict(format!(
                "agent {id} is revoked for good: enroll the host again with a join token (it gets a new id)"
            )));
        }
        record.state = state.as_str().to_string();
        let mut changes = Vec::new();
        if state == AgentState::Revoked {
            // Durable first: a restarted controller must refuse it too.
            changes.push(Change::Revocation(RevocationRecord {
                serial: record.cert_serial.clone(),
                agent_id: id.to_string(),
                revoked_at: now,
            }));
        }
        changes.push(Change::Agent(record.clone()));
        self.commit(now, changes)?;
        if state == AgentState::Revoked {
            self.revocations.revoke(id, &record.cert_serial);
        }
        if let Some(agent) = self.agents.get_mut(id) {
            agent.draining = state == AgentState::Draining;
        }
        let cut_off = matches!(state, AgentState::Disabled | AgentState::Revoked);
        if cut_off && let Some(agent) = self.agents.remove(id) {
            // Cut off now: the fleet closes the connection after sending
            // this, and the agent's jobs are given up.
            let verb = if state == AgentState::Revoked { "was revoked" } else { "is disabled" };
            let _ = agent.tx.send(ToAgent::Refused { reason: format!("agent {id} {verb}") });
        }
        if cut_off {
            let jobs = self.jobs_of(id);
            let reason = format!("agent {id} lost: it was {} while running the action", state.as_str());
            self.lose_jobs(now, jobs, &reason);
        }
        info!(agent = %id, state = state.as_str(), "agent state changed");
        // Enabling may make waiting work runnable.
        self.commit(now, Vec::new())?;
        Ok(AgentStateOutput { id: id.to_string(), state: state.as_str().to_string() })
    }

    pub(super) fn agent_connected(&mut self, now: u64, agent_id: String, conn_id: u64, hello: Hello, tx: AgentSender) -> ToAgent {
        if hello.protocol_version != PROTOCOL_VERSION {
            return ToAgent::Refused {
                reason: format!(
                    "protocol version mismatch: agent speaks {}, controller speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            };
        }
        let record = match self.store.agent(&agent_id) {
            Ok(Some(r)) => r,
            Ok(None) => return ToAgent::Refused { reason: format!("agent {agent_id} is not enrolled here") },
            Err(e) => return ToAgent::Refused { reason: format!("controller error: {e:#}") },
        };
        if record.state == AgentState::Disabled.as_str() {
            return ToAgent::Refused { reason: format!("agent {agent_id} is disabled") };
        }
        // The handshake refuses revoked certificates; this covers a
        // revocation that raced with the handshake.
        if record.state == AgentState::Revoked.as_str() {
            return ToAgent::Refused { reason: format!("agent {agent_id} was revoked") };
        }
        // A new connection replaces an old one that has not noticed it is dead.
        if self.agents.contains_key(&agent_id) {
            self.agent_disconnected(&agent_id, self.agents[&agent_id].conn_id);
        }
        // The operator's labels (token and `agent label`), the observed
        // `os` and `arch`, and only those claims the token allows.
        let (labels, ignored) = intake::effective_labels(&hello.labels, &record.labels, &record.allow_agent_labels);
        if !ignored.is_empty() {
            warn!(%agent_id, claimed = %ignored.join(","), "labels the agent claims for itself that its join token does not allow: ignored");
        }
        let slots = hello.slots.clamp(1, self.max_agent_slots);
        if hello.slots > self.max_agent_slots {
            warn!(%agent_id, asked = hello.slots, slots, "the agent asks for more slots than --max-agent-slots: capped");
        }
        let reported: HashSet<String> = hello.running.iter().cloned().collect();
        // Jobs it had before the drop: those it still runs carry on under
        // a renewed lease. The same process without a job never got it
        // (the job frame died with the connection): it is handed out again
        // in the same attempt. A restarted process may have started it:
        // lost.
        let same_process = self.instances.get(&agent_id) == Some(&hello.instance);
        let (kept, gone): (Vec<String>, Vec<String>) =
            self.jobs_of(&agent_id).into_iter().partition(|j| reported.contains(j));
        let until = self.lease_until(now);
        let mut running = HashSet::new();
        for job_id in kept {
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.lease_until = until;
            }
            running.insert(job_id);
        }
        let (never_got, gone): (Vec<String>, Vec<String>) =
            gone.into_iter().partition(|j| same_process && self.jobs.get(j).is_some_and(|job| !job.started));
        for job_id in never_got {
            let job = self.jobs.remove(&job_id).expect("listed");
            info!(agent = %agent_id, job = %job_id, "the job never reached the agent; handing it out again");
            self.pending.push_front(job.dispatch);
        }
        self.instances.insert(agent_id.clone(), hello.instance);
        self.lose_jobs(now, gone, &format!("agent {agent_id} lost: it came back without the action (it was restarted)"));
        // After a controller restart, actions that were assigned to this
        // agent and that it still runs go back to it under their new lease,
        // instead of starting twice. Only its own: a job id it lists that
        // was never assigned to it (another agent's, or one not handed out
        // yet) gives it nothing. Those assigned to it that it no longer
        // has are lost.
        let mut resumed = Vec::new();
        let mut forgotten = Vec::new();
        let mut never_received = Vec::new();
        self.pending.retain(|d| {
            let assigned_here = d.assigned.as_deref() == Some(agent_id.as_str());
            if reported.contains(&d.job_id) && assigned_here {
                resumed.push(d.clone());
                false
            } else if assigned_here && d.started && self.restored.contains_key(&d.job_id) {
                forgotten.push(d.clone());
                false
            } else {
                // Assigned here but neither started nor reported: the job
                // never reached the agent (the controller stopped before it
                // went out), so it waits for any agent, in this attempt.
                if assigned_here {
                    never_received.push(d.job_id.clone());
                }
                true
            }
        });
        let resumable: HashSet<&str> = resumed.iter().map(|d| d.job_id.as_str()).collect();
        let foreign: Vec<&String> =
            reported.iter().filter(|j| !running.contains(*j) && !resumable.contains(j.as_str())).collect();
        if !foreign.is_empty() {
            // Either jobs that ended while it was away (the controller has
            // their results) or ids it has no claim to: nothing is handed over.
            let shown: Vec<String> = foreign.iter().take(8).map(|j| intake::clean_text(j, 80, intake::Lines::Joined)).collect();
            warn!(%agent_id, jobs = %shown.join(","), "the agent lists jobs it does not hold: refused");
        }
        for job_id in resumed.iter().chain(&forgotten).map(|d| &d.job_id).chain(&never_received) {
            self.restored.remove(job_id);
        }
        for d in forgotten {
            let reason = format!("agent {agent_id} lost: it came back without the action (it was restarted)");
            warn!(agent = %agent_id, job = %d.job_id, "{reason}");
            self.engine.handle(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
        }
        self.agents.insert(
            agent_id.clone(),
            AgentConn {
                conn_id,
                draining: record.state == AgentState::Draining.as_str(),
                tx,
                claimed_labels: hello.labels.clone(),
                labels,
                slots,
                running,
                hostname: record.hostname,
                last_heard: now,
                plugins: hello.plugins.iter().filter(|d| sluice_runtime::is_digest(d)).take(4096).cloned().collect(),
            },
        );
        for dispatch in resumed {
            match self.hand_out(now, &agent_id, &dispatch, HandOut::Resume) {
                Ok(()) => {}
                Err(Refusal::Ineligible(why)) => {
                    // It runs there, but may no longer: stop it there, and
                    // the action goes to an agent that may take it.
                    warn!(agent = %agent_id, job = %dispatch.job_id, "not giving the job back: {why}");
                    if let Some(agent) = self.agents.get(&agent_id) {
                        agent.tx.send(ToAgent::Cancel { job_id: dispatch.job_id.clone() });
                    }
                    self.pending.push_back(dispatch);
                }
                Err(Refusal::Impossible(message)) => self.refuse(now, dispatch, message),
            }
        }
        info!(%agent_id, "agent ready");
        let _ = self.commit(now, Vec::new());
        ToAgent::Welcome { agent_id, heartbeat_ms: self.heartbeat().as_millis() as u64 }
    }

    pub(super) fn agent_message(&mut self, now: u64, agent_id: &str, conn_id: u64, message: FromAgent) {
        match self.agents.get_mut(agent_id) {
            Some(agent) if agent.conn_id == conn_id => agent.last_heard = now,
            _ => return,
        }
        match message {
            FromAgent::Hello(_) => {}
            FromAgent::PollResult { poll_id, result } => self.poll_result(now, agent_id, &poll_id, result),
            FromAgent::RenewCertificate { csr_pem } => {
                if let Err(why) = self.take_renewal(agent_id, now) {
                    warn!(%agent_id, "certificate renewal refused: {why}");
                    self.agents[agent_id].tx.send(ToAgent::RenewalRefused { reason: why });
                    return;
                }
                let answer = match self.renew(now, agent_id, &csr_pem) {
                    Ok(cert_pem) => ToAgent::Renewed { cert_pem },
                    Err(e) => {
                        warn!(%agent_id, "certificate renewal refused: {e:#}");
                        ToAgent::RenewalRefused { reason: format!("{e:#}") }
                    }
                };
                self.agents[agent_id].tx.send(answer);
            }
            FromAgent::Heartbeat { running } => {
                // A heartbeat renews the lease of every job it reports.
                // Each heartbeat also acknowledges the log stored since the
                // last one, so that the agent forgets it.
                let until = self.lease_until(now);
                let tx = self.agents[agent_id].tx.clone();
                for job_id in &running {
                    if let Some(job) = self.jobs.get_mut(job_id).filter(|j| j.agent == agent_id) {
                        job.lease_until = until;
                        if let Some(seq) = job.log_seq.filter(|s| job.log_acked < Some(*s)) {
                            job.log_acked = Some(seq);
                            let _ = tx.send(ToAgent::LogAck { job_id: job_id.clone(), seq });
                        }
                    }
                }
                let _ = tx.send(ToAgent::HeartbeatAck);
            }
            FromAgent::JobStarted { job_id, .. } => {
                // The lease that counts is the one this agent holds now: a
                // job given back to it after a restart started earlier.
                let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
                job.started = true;
                let lease_epoch = job.lease_epoch;
                self.engine.handle(now, Event::ActionStarted { job_id, lease_epoch, agent: agent_id.to_string() });
                let _ = self.commit(now, Vec::new());
            }
            FromAgent::Log { job_id, seq, text } => {
                let max = self.max_action_log;
                let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
                // Lines come in order; after a reconnect the agent sends
                // again what it has not seen acknowledged.
                if job.log_seq.is_some_and(|stored| seq <= stored) {
                    return;
                }
                job.log_seq = Some(seq);
                let text = if job.log_bytes + text.len() as u64 <= max {
                    job.log_bytes += text.len() as u64;
                    text
                } else if !job.log_truncated {
                    job.log_truncated = true;
                    format!("{LOG_TRUNCATED} the action wrote more than {max} bytes; the rest is not kept]\n")
                } else {
                    return;
                };
                // Inert text for the store, the API and terminals.
                let text = intake::clean_text(&text, intake::LOG_TEXT_MAX_CHARS, intake::Lines::Kept);
                let line = LogLine { job_id: job_id.clone(), execution_id: job.execution_id.clone(), seq, text };
                let event = json!({
                    "type": "log", "pipeline": job.pipeline, "executionId": job.execution_id, "jobId": job_id,
                    "stage": job.stage, "action": job.action, "seq": seq, "text": line.text,
                });
                let _ = self.commit(now, vec![Change::Log(line)]);
                self.tell_watchers(event);
            }
            FromAgent::JobFinished { job_id, result, .. } => {
                // Only the agent that holds the job may end it. It may carry
                // an older epoch when the job was given back to the same
                // agent after a restart; another agent's result never counts.
                let ack = ToAgent::ResultAck { job_id: job_id.clone() };
                let Some(job) = self.jobs.get(&job_id).filter(|j| j.agent == agent_id) else {
                    warn!(%agent_id, %job_id, "refusing a result for a job this agent does not hold");
                    // Refused for good: the agent may stop sending it. In a
                    // batch this may be a repeat of a result taken a moment
                    // ago, so the ack waits for that commit too.
                    self.after_commit(agent_id, ack);
                    return;
                };
                let lease_epoch = job.lease_epoch;
                // Checked against what the action declared and what this
                // agent uploaded; a result that cannot stand fails the action.
                let declared: Vec<OutputSpec> = job
                    .dispatch
                    .outputs
                    .iter()
                    .map(|(name, files)| OutputSpec { name: name.clone(), files: files.clone() })
                    .collect();
                let mut result = intake::clean_result(result, &declared);
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(bad) = outputs.iter().find(|o| !self.may_name(&o.digest, o.size))
                {
                    let message = format!(
                        "the agent's result was refused: output artifact {:?} ({}) is not stored with {} bytes",
                        bad.name, bad.digest, bad.size
                    );
                    result = JobResult::Failed { message, retryable: false };
                }
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(uploaded) = &job.uploaded
                    && let Some(bad) = outputs.iter().find(|o| !uploaded.contains(&o.digest))
                {
                    let message = format!(
                        "the agent's result was refused: output artifact {:?} ({}) was not uploaded by this agent \
                         while it held the job",
                        bad.name, bad.digest
                    );
                    result = JobResult::Failed { message, retryable: false };
                }
                if let JobResult::Failed { message, .. } = &result
                    && message.starts_with("the agent's result was refused")
                {
                    warn!(%agent_id, %job_id, "{message}");
                }
                if let JobResult::Succeeded { outputs, .. } = &result
                    && let Some(uploads) = self.uploads.get_mut(agent_id)
                {
                    for output in outputs {
                        uploads.remove(&output.digest);
                    }
                }
                self.jobs.remove(&job_id);
                if let Some(agent) = self.agents.get_mut(agent_id) {
                    agent.running.remove(&job_id);
                }
                self.settle_uploads(agent_id);
                let result = match result {
                    JobResult::Succeeded { summary, output_variables, external_url, outputs } => ActionResult::Succeeded {
                        summary,
                        output_variables,
                        external_url,
                        outputs: outputs
                            .into_iter()
                            .map(|ProducedArtifact { name, digest, size }| (name, ArtifactRef { digest, size }))
                            .collect(),
                    },
                    JobResult::Failed { message, .. } => ActionResult::Failed { message },
                };
                self.engine.handle(now, Event::ActionFinished { job_id, lease_epoch, result });
                let _ = self.commit(now, Vec::new());
                // Only once the result is durable may the agent forget it.
                self.after_commit(agent_id, ack);
            }
        }
    }

    /// An agent's connection dropped. Its jobs may well still be running
    /// there: they keep their leases, which the agent renews if it comes
    /// back in time and reports them.
    pub(super) fn agent_disconnected(&mut self, agent_id: &str, conn_id: u64) {
        if self.agents.get(agent_id).is_none_or(|a| a.conn_id != conn_id) {
            return;
        }
        self.agents.remove(agent_id);
        info!(%agent_id, "agent disconnected");
    }

    /// The jobs an agent holds, connected or not.
    pub(super) fn jobs_of(&self, agent_id: &str) -> Vec<String> {
        self.jobs.iter().filter(|(_, j)| j.agent == agent_id).map(|(id, _)| id.clone()).collect()
    }
}
