//! Time in the driver: jobs whose lease ran out, actions restored after a
//! restart whose agent did not come back, silent agents, actions past
//! their timeout (the engine's), and when the next of all the driver's
//! timers is due.

use super::Driver;
use super::RECONNECT_GRACE;
use crate::engine::Event;
use sluice_protocol::ToAgent;
use tracing::warn;

impl Driver {
    /// When the first timer is due (Unix ms; at or before now: at once):
    /// the engine's next deadline, the reconnect grace of restored actions,
    /// agents' silence and jobs' leases, the artifact collection (which also
    /// releases the upload books of collected bytes), and source polls.
    pub(super) fn next_wake(&self) -> u64 {
        let restored = (!self.restored.is_empty()).then_some(self.hold_restored_until);
        // Not a look at every agent at every step (issue 19, fleet): the
        // earliest an agent can have been silent for a lease.
        let silent = (!self.agents.is_empty()).then_some(self.next_silence_check);
        let leases = self.jobs.values().map(|j| j.lease_until).min();
        let workers = self.workers.next_deadline();
        // Data lifecycle (issue 17, life): retention.
        let retention = self.next_retention();
        [
            self.engine.poll_timeout(),
            restored,
            silent,
            leases,
            Some(self.next_gc),
            self.next_poll_at(),
            workers,
            retention,
            self.start_due,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX)
    }

    /// Time has come for some timer: each looks at the clock and does what
    /// is due.
    pub(super) fn on_time(&mut self, now: u64) {
        // Starts not yet written by another commit (issue 19).
        if self.start_due.is_some_and(|at| now >= at) {
            let _ = self.commit(now, Vec::new());
        }
        self.expire_leases(now);
        self.expire_actions(now);
        self.expire_worker_jobs(now);
        // Data lifecycle (issue 17, life): before the collection, which removes what it lets go.
        self.apply_retention(now);
        self.check_disk(now);
        self.collect_artifacts(now);
        self.run_polls(now);
        self.prune_audit(now);
    }

    /// Gives up on jobs whose lease ran out, and on restored actions whose
    /// agent did not come back after a restart: they are `Lost`.
    pub(super) fn expire_leases(&mut self, now: u64) {
        let mut changed = false;
        if !self.restored.is_empty() && now >= self.hold_restored_until {
            let restored = std::mem::take(&mut self.restored);
            let mut held = Vec::new();
            self.pending.retain(|d| {
                let mine = restored.contains_key(&d.job_id);
                if mine {
                    held.push(d.clone());
                }
                !mine
            });
            let grace = RECONNECT_GRACE.max(self.lease_timeout).as_secs();
            for d in held {
                let agent = &restored[&d.job_id];
                let reason =
                    format!("agent {agent} lost: it did not report the action within {grace}s of a controller restart");
                warn!(%agent, job = %d.job_id, "{reason}");
                self.counts.lease_losses += 1;
                self.feed(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
            }
            changed = true;
        }
        // An agent silent for a whole lease is gone, whatever QUIC thinks
        // (its idle timeout is longer than a short lease): it takes no
        // more work, and if it is alive after all it is told to reconnect.
        for agent_id in self.silent_agents(now) {
            let agent = self.agents.remove(&agent_id).expect("listed");
            let secs = self.lease_timeout.as_secs_f64();
            warn!(%agent_id, "agent silent for {secs}s: taking it for gone");
            self.counts.agents_lost += 1;
            self.tell_agent(&agent_id, "disconnected");
            let _ =
                agent.tx.send(ToAgent::Refused { reason: format!("agent {agent_id} was silent for {secs}s: reconnect") });
            changed = true;
        }
        let expired: Vec<String> =
            self.jobs.iter().filter(|(_, j)| j.lease_until <= now).map(|(id, _)| id.clone()).collect();
        let quiet = 2 * self.heartbeat().as_millis() as u64;
        for job_id in expired {
            let agent_id = self.jobs[&job_id].agent.clone();
            let secs = self.lease_timeout.as_secs_f64();
            let reason = match self.agents.get_mut(&agent_id) {
                // Connected, heard from, but no longer reporting the job:
                // whatever is left of it there must not run on beside the
                // next attempt.
                Some(agent) if now < agent.tx.last_heard() + quiet => {
                    agent.running.remove(&job_id);
                    let _ = agent.tx.send(ToAgent::Cancel { job_id: job_id.clone() });
                    format!("agent {agent_id} lost: it did not report the action for {secs}s")
                }
                _ => format!("agent {agent_id} lost: no heartbeat for {secs}s"),
            };
            self.lose_jobs(now, vec![job_id], &reason);
            changed = true;
        }
        if changed {
            let _ = self.commit(now, Vec::new());
        }
    }

    /// The agents silent for a whole lease at `now`, looked for only once
    /// the earliest of them can be (issue 19, fleet: with 50,000 agents a
    /// look at each of them at every step was most of the driver's time).
    /// Agents' `last_heard` only grows, so the earliest deadline found
    /// here stays a bound until the next look; a new agent lowers it
    /// (`agent_connected`).
    fn silent_agents(&mut self, now: u64) -> Vec<String> {
        if now < self.next_silence_check {
            return Vec::new();
        }
        let lease = self.lease_timeout.as_millis() as u64;
        let mut next = u64::MAX;
        let mut silent = Vec::new();
        for (id, agent) in &self.agents {
            let due = agent.tx.last_heard() + lease;
            if now >= due {
                silent.push(id.clone());
            } else {
                next = next.min(due);
            }
        }
        self.next_silence_check = next;
        silent
    }

    pub(super) fn lose_jobs(&mut self, now: u64, jobs: Vec<String>, reason: &str) {
        for job_id in jobs {
            if let Some(job) = self.jobs.remove(&job_id) {
                warn!(agent = %job.agent, job = %job_id, "{reason}");
                self.counts.lease_losses += 1;
                if let Some(agent) = self.agents.get_mut(&job.agent) {
                    agent.running.remove(&job_id);
                }
                self.settle_uploads(&job.agent);
                let (job_id, lease_epoch) = (job_id.into(), job.lease_epoch);
                self.feed(now, Event::ActionLost { job_id, lease_epoch, reason: reason.to_string() });
            }
        }
    }

    /// Wakes the engine at its deadline ([`Engine::poll_timeout`]): it
    /// fails actions past their timeout; agents running them are told to stop.
    ///
    /// [`Engine::poll_timeout`]: crate::engine::Engine::poll_timeout
    pub(super) fn expire_actions(&mut self, now: u64) {
        if self.engine.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        self.feed(now, Event::Timeout);
        let jobs = self.engine.take_expired();
        if jobs.is_empty() && !self.engine.has_dirty() {
            return;
        }
        for job_id in jobs {
            self.pending.retain(|d| d.job_id != job_id);
            if let Some(job) = self.jobs.remove(job_id.as_str())
                && let Some(agent) = self.agents.get_mut(&job.agent)
            {
                agent.running.remove(job_id.as_str());
                let _ = agent.tx.send(ToAgent::Cancel { job_id: job_id.0 });
            }
        }
        let _ = self.commit(now, Vec::new());
    }
}
