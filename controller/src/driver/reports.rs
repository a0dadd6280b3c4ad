//! What agents report, in the driver: heartbeats (leases renewed, log
//! acknowledged), jobs started, log lines, results (checked by `intake`
//! and against what the agent uploaded), certificate renewals, and poll
//! answers (`sources.rs`).

use super::Driver;
use super::intake;
use super::scheduler::JobInfo;
use crate::engine::{ActionResult, ArtifactRef, Event};
use crate::store::{Change, LogLine};
use serde_json::json;
use sluice_protocol::{FromAgent, JobResult, OutputSpec, ProducedArtifact, ToAgent};
use tracing::warn;

/// The first words of the line that ends a log cut at its bound.
pub(super) const LOG_TRUNCATED: &str = "[log truncated:";

/// How long a job's start may wait for another commit to carry it
/// (issue 19). Long enough for a short action's result to come first;
/// short, because until it is written a controller killed and an agent
/// restarted both within it would take the job as never received and hand
/// it out again in the same attempt rather than as lost (the window was
/// the round trip of one commit before). The agent itself holds a start
/// up to 2 ms to send it with a short job's result (`START_HOLD` in
/// agent/src/jobs.rs), which widens that window by as much.
pub(super) const START_WRITE_BOUND: std::time::Duration = std::time::Duration::from_millis(10);

impl Driver {
    /// A message on an agent's control stream, on its current connection
    /// (a message of an older connection is dropped).
    pub(super) fn agent_message(&mut self, now: u64, agent_id: &str, conn_id: u64, message: FromAgent) {
        match self.agents.get_mut(agent_id) {
            // The fleet's reader heard the control stream's frames; this
            // covers the lines of log streams too.
            Some(agent) if agent.conn_id == conn_id => agent.tx.hear(now),
            _ => return,
        }
        match message {
            FromAgent::Hello(_) => {}
            FromAgent::PollResult { poll_id, result } => self.poll_result(now, agent_id, &poll_id, result),
            FromAgent::RenewCertificate { csr_pem } => self.renewal_requested(now, agent_id, &csr_pem),
            FromAgent::Heartbeat { running } => self.heartbeat_received(now, agent_id, &running),
            FromAgent::JobStarted { job_id, .. } => self.job_started(now, agent_id, job_id),
            FromAgent::Log { job_id, seq, text } => self.job_log(now, agent_id, job_id, seq, text),
            FromAgent::JobFinished { job_id, result, .. } => self.job_finished(now, agent_id, job_id, result),
        }
    }

    /// The agent asks for a new certificate: signed within its allowance.
    fn renewal_requested(&mut self, now: u64, agent_id: &str, csr_pem: &str) {
        if let Err(why) = self.take_renewal(agent_id, now) {
            warn!(%agent_id, "certificate renewal refused: {why}");
            self.agents[agent_id].tx.send(ToAgent::RenewalRefused { reason: why });
            return;
        }
        let answer = match self.renew(now, agent_id, csr_pem) {
            Ok(cert_pem) => ToAgent::Renewed { cert_pem },
            Err(e) => {
                warn!(%agent_id, "certificate renewal refused: {e:#}");
                ToAgent::RenewalRefused { reason: format!("{e:#}") }
            }
        };
        self.agents[agent_id].tx.send(answer);
    }

    fn heartbeat_received(&mut self, now: u64, agent_id: &str, running: &[String]) {
        // A heartbeat renews the lease of every job it reports.
        // Each heartbeat also acknowledges the log stored since the
        // last one, so that the agent forgets it.
        let until = self.lease_until(now);
        let tx = self.agents[agent_id].tx.clone();
        for job_id in running {
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

    fn job_started(&mut self, now: u64, agent_id: &str, job_id: String) {
        // The lease that counts is the one this agent holds now: a
        // job given back to it after a restart started earlier.
        let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
        job.started = true;
        let lease_epoch = job.lease_epoch;
        self.feed(now, Event::ActionStarted { job_id: job_id.into(), lease_epoch, agent: agent_id.into() });
        // Written with the next commit, at the latest START_WRITE_BOUND
        // from now (issue 19): a short action's result follows its start
        // within a millisecond, and the two then cost one write of the
        // execution instead of two. Nothing waits on it: a start is not
        // acknowledged to the agent nor told to watchers, and a controller
        // killed before the write restores the action as handed to this
        // agent, which lists it in its hello when it reconnects.
        self.start_due.get_or_insert(now + START_WRITE_BOUND.as_millis() as u64);
    }

    /// A log line of a job this agent holds: stored once (lines sent again
    /// are dropped), within `--max-action-log`, and told to watchers.
    fn job_log(&mut self, now: u64, agent_id: &str, job_id: String, seq: u64, text: String) {
        let max = self.max_action_log;
        // Data lifecycle (issue 17, life): logs are under the free-space floor too.
        let disk_low = self.jobs.get(&job_id).is_some_and(|j| !j.log_truncated) && self.disk_under_floor(now);
        let Some(job) = self.jobs.get_mut(&job_id).filter(|j| j.agent == agent_id) else { return };
        // Lines come in order; after a reconnect the agent sends
        // again what it has not seen acknowledged.
        if job.log_seq.is_some_and(|stored| seq <= stored) {
            return;
        }
        job.log_seq = Some(seq);
        // Once truncated (too long, or the floor), the rest is not kept.
        let text = if job.log_truncated {
            return;
        } else if disk_low {
            job.log_truncated = true;
            self.metrics.free_space_refusals.inc();
            tracing::warn!(job = %job_id, "log refused: the free-space floor");
            format!(
                "{LOG_TRUNCATED} the controller's disk is under the free-space floor (--min-free-space); the rest is \
                 not kept]\n"
            )
        } else if job.log_bytes + text.len() as u64 <= max {
            job.log_bytes += text.len() as u64;
            text
        } else {
            job.log_truncated = true;
            format!("{LOG_TRUNCATED} the action wrote more than {max} bytes; the rest is not kept]\n")
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

    /// The result of a job: taken only from the agent that holds it, then
    /// acknowledged once it is committed.
    fn job_finished(&mut self, now: u64, agent_id: &str, job_id: String, result: JobResult) {
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
        let result = self.vet_result(agent_id, &job_id, job, result);
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
        self.feed(now, Event::ActionFinished { job_id: job_id.into(), lease_epoch, result });
        let _ = self.commit(now, Vec::new());
        // Only once the result is durable may the agent forget it.
        self.after_commit(agent_id, ack);
    }

    /// A result as the engine may take it: cleaned by `intake`, and failed
    /// when an output it names is not stored with its size or was not
    /// uploaded by this agent while it held the job.
    fn vet_result(&self, agent_id: &str, job_id: &str, job: &JobInfo, result: JobResult) -> JobResult {
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
        result
    }
}
