//! Agents in the driver: connections (hello, reconnects, jobs given back
//! or lost) and the operator's commands on them (list, labels,
//! enabled/draining/disabled/revoked). What they report is `reports.rs`.

use super::Driver;
use super::command::AgentState;
use super::intake;
use super::link::AgentSender;
use super::scheduler::{HandOut, Refusal};
use crate::engine::{Dispatch, Event};
use crate::ops::{
    AgentStateOutput, AgentView, Context, DisableAgent, DrainAgent, EnableAgent, Handle, LabelAgent, LabelAgentOutput,
    ListAgents, ListAgentsOutput, OpError, RevokeAgent, RunningJobView,
};
use crate::store::{AgentRecord, Change, RevocationRecord};
use crate::views;
use sluice_protocol::{Hello, PROTOCOL_VERSION, ToAgent};
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
    /// Digests of the plugins it has cached (said in Hello, and every
    /// plugin of a job handed to it since).
    pub(super) plugins: HashSet<String>,
}

impl Handle<ListAgents> for Driver {
    fn handle(&mut self, _: ListAgents, ctx: &Context) -> Result<ListAgentsOutput, OpError> {
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        let readable =
            |pipeline: &str| judge.allows("codepipeline:GetPipelineExecution", &crate::policy::pipeline(pipeline));
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
                    certificate_expires: a.cert_expires_at.map(views::time),
                    running_jobs: live
                        .map(|l| {
                            let mut jobs: Vec<_> = l
                                .running
                                .iter()
                                .filter_map(|id| self.jobs.get(id).map(|j| (id, j)))
                                .filter(|(_, j)| readable(&j.pipeline))
                                .map(|(id, j)| RunningJobView {
                                    job_id: id.clone(),
                                    pipeline_name: j.pipeline.clone(),
                                    pipeline_execution_id: j.execution_id.clone(),
                                    stage_name: j.stage.clone(),
                                    action_name: j.action.clone(),
                                })
                                .collect();
                            jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
                            jobs
                        })
                        .unwrap_or_default(),
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
        let mut record = self.store.agent(id)?.ok_or_else(|| OpError::NotFound(format!("agent {id} does not exist")))?;
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
        self.tell_agent(id, "labelled");
        // New labels may make waiting work runnable.
        self.commit(now, Vec::new())?;
        let live = self.agents.get(id).map(|a| a.labels.clone());
        Ok(LabelAgentOutput { id: op.id.clone(), labels: live.unwrap_or(record.labels.clone()), assigned: record.labels })
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
        let mut record = self.store.agent(id)?.ok_or_else(|| OpError::NotFound(format!("agent {id} does not exist")))?;
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
        self.tell_agent(id, state.as_str());
        // Enabling may make waiting work runnable.
        self.commit(now, Vec::new())?;
        Ok(AgentStateOutput { id: id.to_string(), state: state.as_str().to_string() })
    }

    /// An agent said hello on a new connection: it is welcomed (and its
    /// jobs from before are taken back, given back or lost), or refused.
    pub(super) fn agent_connected(
        &mut self,
        now: u64,
        agent_id: String,
        conn_id: u64,
        hello: Hello,
        tx: AgentSender,
    ) -> ToAgent {
        let record = match self.admit(&agent_id, &hello) {
            Ok(record) => record,
            Err(reason) => return ToAgent::Refused { reason },
        };
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
        let running = self.keep_held_jobs(now, &agent_id, &reported, hello.instance);
        let resumed = self.reclaim_restored_jobs(now, &agent_id, &reported, &running);
        // Heard now: its hello may have waited in a long queue of them
        // (a reconnect storm) for longer than a lease.
        tx.hear(now);
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
                plugins: hello.plugins.iter().filter(|d| sluice_runtime::is_digest(d)).take(4096).cloned().collect(),
            },
        );
        // Looked at for silence a lease from now at the latest.
        self.next_silence_check = self.next_silence_check.min(now + self.lease_timeout.as_millis() as u64);
        self.give_back(now, &agent_id, resumed);
        info!(%agent_id, "agent ready");
        self.tell_agent(&agent_id, "connected");
        let _ = self.commit(now, Vec::new());
        ToAgent::Welcome { agent_id, heartbeat_ms: self.heartbeat().as_millis() as u64 }
    }

    /// The agent's record, if it may connect: its protocol version is this
    /// controller's, it is enrolled here, neither disabled nor revoked.
    fn admit(&self, agent_id: &str, hello: &Hello) -> Result<AgentRecord, String> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version mismatch: agent speaks {}, controller speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ));
        }
        let record = match self.store.agent(agent_id) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(format!("agent {agent_id} is not enrolled here")),
            Err(e) => return Err(format!("controller error: {e:#}")),
        };
        if record.state == AgentState::Disabled.as_str() {
            return Err(format!("agent {agent_id} is disabled"));
        }
        // The handshake refuses revoked certificates; this covers a
        // revocation that raced with the handshake.
        if record.state == AgentState::Revoked.as_str() {
            return Err(format!("agent {agent_id} was revoked"));
        }
        Ok(record)
    }

    /// The jobs this agent held before its connection dropped, as its hello
    /// reports them; returns those it still runs.
    fn keep_held_jobs(&mut self, now: u64, agent_id: &str, reported: &HashSet<String>, instance: u64) -> HashSet<String> {
        // Jobs it had before the drop: those it still runs carry on under
        // a renewed lease. The same process without a job never got it
        // (the job frame died with the connection): it is handed out again
        // in the same attempt. A restarted process may have started it:
        // lost.
        let same_process = self.instances.get(agent_id) == Some(&instance);
        let (kept, gone): (Vec<String>, Vec<String>) =
            self.jobs_of(agent_id).into_iter().partition(|j| reported.contains(j));
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
        self.instances.insert(agent_id.to_string(), instance);
        self.lose_jobs(now, gone, &format!("agent {agent_id} lost: it came back without the action (it was restarted)"));
        running
    }

    /// After a controller restart, the actions that were assigned to this
    /// agent: returns those it reports, to give back to it.
    fn reclaim_restored_jobs(
        &mut self,
        now: u64,
        agent_id: &str,
        reported: &HashSet<String>,
        running: &HashSet<String>,
    ) -> Vec<Dispatch> {
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
            let assigned_here = d.assigned.as_ref().is_some_and(|a| a.as_str() == agent_id);
            if reported.contains(d.job_id.as_str()) && assigned_here {
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
            let shown: Vec<String> =
                foreign.iter().take(8).map(|j| intake::clean_text(j, 80, intake::Lines::Joined)).collect();
            warn!(%agent_id, jobs = %shown.join(","), "the agent lists jobs it does not hold: refused");
        }
        for job_id in resumed.iter().chain(&forgotten).map(|d| &d.job_id).chain(&never_received) {
            self.restored.remove(job_id);
        }
        for d in forgotten {
            let reason = format!("agent {agent_id} lost: it came back without the action (it was restarted)");
            warn!(agent = %agent_id, job = %d.job_id, "{reason}");
            self.feed(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
        }
        resumed
    }

    /// Gives an agent back the jobs it still runs from before a controller
    /// restart, where it may still take them.
    fn give_back(&mut self, now: u64, agent_id: &str, resumed: Vec<Dispatch>) {
        for dispatch in resumed {
            match self.hand_out(now, agent_id, &dispatch, HandOut::Resume) {
                Ok(()) => {}
                Err(Refusal::Ineligible(why)) => {
                    // It runs there, but may no longer: stop it there, and
                    // the action goes to an agent that may take it.
                    warn!(agent = %agent_id, job = %dispatch.job_id, "not giving the job back: {why}");
                    if let Some(agent) = self.agents.get(agent_id) {
                        agent.tx.send(ToAgent::Cancel { job_id: dispatch.job_id.to_string() });
                    }
                    self.pending.push_back(dispatch);
                }
                Err(Refusal::Impossible(message)) => self.refuse(now, dispatch, message),
            }
        }
    }

    /// Tells the event stream an agent changed (issue 16, pages: the
    /// console's agents page refreshes on it); who may list agents gets it
    /// (`api::subscribe`). `change` is its new state or what happened.
    pub(super) fn tell_agent(&mut self, agent_id: &str, change: &str) {
        let event = serde_json::json!({"type": "agent", "agent": agent_id, "change": change});
        self.tell_after_commit(std::sync::Arc::new(event));
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
        self.tell_agent(agent_id, "disconnected");
    }

    /// The jobs an agent holds, connected or not.
    pub(super) fn jobs_of(&self, agent_id: &str) -> Vec<String> {
        self.jobs.iter().filter(|(_, j)| j.agent == agent_id).map(|(id, _)| id.clone()).collect()
    }
}
