//! Time in the driver: jobs whose lease ran out, actions restored after a
//! restart whose agent did not come back, silent agents, and actions past
//! their timeout.

use super::Driver;
use super::RECONNECT_GRACE;
use crate::engine::Event;
use sluice_protocol::ToAgent;
use tracing::warn;

impl Driver {
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
                let reason = format!("agent {agent} lost: it did not report the action within {grace}s of a controller restart");
                warn!(%agent, job = %d.job_id, "{reason}");
                self.engine.handle(now, Event::ActionLost { job_id: d.job_id, lease_epoch: d.lease_epoch, reason });
            }
            changed = true;
        }
        // An agent silent for a whole lease is gone, whatever QUIC thinks
        // (its idle timeout is longer than a short lease): it takes no
        // more work, and if it is alive after all it is told to reconnect.
        let lease = self.lease_timeout.as_millis() as u64;
        let silent: Vec<String> =
            self.agents.iter().filter(|(_, a)| now >= a.last_heard + lease).map(|(id, _)| id.clone()).collect();
        for agent_id in silent {
            let agent = self.agents.remove(&agent_id).expect("listed");
            let secs = self.lease_timeout.as_secs_f64();
            warn!(%agent_id, "agent silent for {secs}s: taking it for gone");
            let _ = agent.tx.send(ToAgent::Refused { reason: format!("agent {agent_id} was silent for {secs}s: reconnect") });
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
                Some(agent) if now < agent.last_heard + quiet => {
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

    pub(super) fn lose_jobs(&mut self, now: u64, jobs: Vec<String>, reason: &str) {
        for job_id in jobs {
            if let Some(job) = self.jobs.remove(&job_id) {
                warn!(agent = %job.agent, job = %job_id, "{reason}");
                if let Some(agent) = self.agents.get_mut(&job.agent) {
                    agent.running.remove(&job_id);
                }
                self.settle_uploads(&job.agent);
                self.engine.handle(
                    now,
                    Event::ActionLost { job_id, lease_epoch: job.lease_epoch, reason: reason.to_string() },
                );
            }
        }
    }

    /// Fails actions past their timeout; agents running them are told to stop.
    pub(super) fn expire_actions(&mut self, now: u64) {
        let jobs = self.engine.expire(now);
        if jobs.is_empty() && !self.engine.has_dirty() {
            return;
        }
        for job_id in jobs {
            self.pending.retain(|d| d.job_id != job_id);
            if let Some(job) = self.jobs.remove(&job_id)
                && let Some(agent) = self.agents.get_mut(&job.agent)
            {
                agent.running.remove(&job_id);
                let _ = agent.tx.send(ToAgent::Cancel { job_id });
            }
        }
        let _ = self.commit(now, Vec::new());
    }
}
