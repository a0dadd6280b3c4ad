//! Scheduling in the driver: pending actions to the least-loaded eligible
//! agent, the checks of every hand-out, the job an agent receives, and why
//! an action waits.
//!
//! The choice itself is pure: [`choose`] picks an agent for one action from
//! a snapshot of the connected agents ([`AgentView`]), or says why the
//! action waits ([`Waiting`]); [`may_take`] is the check every hand-out
//! makes, whoever chose the agent. No I/O, no clock: the driver takes the
//! snapshot and acts on the answer.

use super::Driver;
use super::agents::AgentConn;
use super::reports::LOG_TRUNCATED;
use super::sources::grants_for;
use crate::engine::{ActionResult, AgentId, Dispatch, Event};
use sluice_protocol::{InputArtifact, JobSpec, OutputSpec, ToAgent};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

/// What one pending action asks of an agent.
#[derive(Debug, Clone, Copy)]
pub(super) struct DispatchNeeds<'a> {
    /// The action's `agentLabels`: an agent must have every one.
    pub(super) labels: &'a BTreeMap<String, String>,
    /// Agents that lost an earlier attempt of the action: chosen only when
    /// no other can take it.
    pub(super) lost_on: &'a [AgentId],
    /// The plugin's digest: among equals, an agent that has it cached wins.
    pub(super) plugin_digest: &'a str,
}

impl<'a> DispatchNeeds<'a> {
    pub(super) fn of(dispatch: &'a Dispatch, plugin_digest: &'a str) -> Self {
        Self { labels: &dispatch.agent_labels, lost_on: &dispatch.lost_on, plugin_digest }
    }

    fn labels_match(&self, agent: &AgentView<'_>) -> bool {
        self.labels.iter().all(|(k, v)| agent.labels.get(k) == Some(v))
    }
}

/// A connected agent as scheduling sees it at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct AgentView<'a> {
    pub(super) id: &'a str,
    pub(super) labels: &'a BTreeMap<String, String>,
    pub(super) slots: u32,
    /// Jobs it runs now.
    pub(super) running: usize,
    /// A draining agent finishes what it runs and takes nothing new.
    pub(super) draining: bool,
    /// Heard from within the last two heartbeats: an agent that missed
    /// them may be dead without QUIC knowing yet, and gets nothing new.
    pub(super) responsive: bool,
    /// Digests of the plugins it has cached.
    pub(super) plugins: &'a HashSet<String>,
}

impl AgentView<'_> {
    fn has_free_slot(&self) -> bool {
        (self.running as u32) < self.slots
    }

    fn load(&self) -> f64 {
        self.running as f64 / f64::from(self.slots)
    }
}

/// Why an action has no agent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// No connected agent takes work (none is connected, or all drain).
    NoAgentTakingWork,
    /// No connected agent has the labels the action asks for.
    NoAgentWithLabels,
    /// Agents with the labels exist, but none may take it now.
    AllBusy,
}

impl Waiting {
    /// In words an operator can act on.
    pub(super) fn describe(self, needs: &DispatchNeeds<'_>) -> String {
        match self {
            Self::NoAgentTakingWork => "no agent is connected and taking work".into(),
            Self::NoAgentWithLabels => {
                let wanted: Vec<String> = needs.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("no connected agent has {}", wanted.join(","))
            }
            Self::AllBusy => "every eligible agent is busy".into(),
        }
    }
}

/// Where one pending action goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Choice<'a> {
    Agent(&'a str),
    Wait(Waiting),
}

/// Picks the agent for an action: among those not draining, responsive,
/// with a free slot and every label asked for, an agent that did not lose
/// an earlier attempt of the action, then the least loaded (running jobs
/// over slots), then one that has the plugin cached, then the smallest id,
/// so that the same snapshot always gives the same agent.
pub(super) fn choose<'a>(needs: &DispatchNeeds<'_>, agents: impl IntoIterator<Item = AgentView<'a>>) -> Choice<'a> {
    let mut best: Option<AgentView<'a>> = None;
    let mut taking_work = false;
    let mut labelled = false;
    for agent in agents {
        taking_work |= !agent.draining;
        let matches = needs.labels_match(&agent);
        labelled |= matches;
        if agent.draining || !agent.responsive || !agent.has_free_slot() || !matches {
            continue;
        }
        if best.as_ref().is_none_or(|b| rank(needs, &agent, b) == Ordering::Less) {
            best = Some(agent);
        }
    }
    match best {
        Some(agent) => Choice::Agent(agent.id),
        None => Choice::Wait(waiting(taking_work, labelled)),
    }
}

/// Why an action waits, given every connected agent (whether or not one
/// could take it this moment): what `pipeline state` shows.
pub(super) fn waiting_reason<'a>(needs: &DispatchNeeds<'_>, agents: impl IntoIterator<Item = AgentView<'a>>) -> String {
    waiting_kind(needs, agents).describe(needs)
}

/// Why an action waits, as [`waiting_reason`] finds it (metrics count these).
pub(super) fn waiting_kind<'a>(needs: &DispatchNeeds<'_>, agents: impl IntoIterator<Item = AgentView<'a>>) -> Waiting {
    let (mut taking_work, mut labelled) = (false, false);
    for agent in agents {
        taking_work |= !agent.draining;
        labelled |= needs.labels_match(&agent);
    }
    waiting(taking_work, labelled)
}

fn waiting(taking_work: bool, labelled: bool) -> Waiting {
    if !taking_work {
        Waiting::NoAgentTakingWork
    } else if !labelled {
        Waiting::NoAgentWithLabels
    } else {
        Waiting::AllBusy
    }
}

/// `Less` when `a` is the better choice than `b`.
fn rank(needs: &DispatchNeeds<'_>, a: &AgentView<'_>, b: &AgentView<'_>) -> Ordering {
    let lost = |agent: &AgentView<'_>| needs.lost_on.iter().any(|id| id.as_str() == agent.id);
    let uncached = |agent: &AgentView<'_>| !agent.plugins.contains(needs.plugin_digest);
    lost(a)
        .cmp(&lost(b))
        .then(a.load().total_cmp(&b.load()))
        .then(uncached(a).cmp(&uncached(b)))
        .then_with(|| a.id.cmp(b.id))
}

/// Whether `agent` may take an action that asks for `labels` now: its
/// labels matching, a free slot, and not draining unless it is given back
/// a job it already runs.
pub(super) fn may_take(agent: &AgentView<'_>, labels: &BTreeMap<String, String>, kind: HandOut) -> Result<(), String> {
    let id = agent.id;
    if agent.draining && kind == HandOut::New {
        return Err(format!("agent {id} is draining"));
    }
    if !agent.has_free_slot() {
        return Err(format!("agent {id} has no free slot ({} of {})", agent.running, agent.slots));
    }
    if let Some((k, v)) = labels.iter().find(|(k, v)| agent.labels.get(*k) != Some(*v)) {
        return Err(format!("agent {id} does not have the label {k}={v} the action asks for"));
    }
    Ok(())
}

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
    /// The connected agents as scheduling sees them at `now`.
    pub(super) fn agent_views(&self, now: u64) -> impl Iterator<Item = AgentView<'_>> {
        let quiet = 2 * self.heartbeat().as_millis() as u64;
        self.agents.iter().map(move |(id, a)| view(id, a, now < a.tx.last_heard() + quiet))
    }

    /// Why a pending action has no agent yet, in words an operator can act on.
    pub(super) fn waiting_reason(&self, now: u64, d: &Dispatch) -> String {
        waiting_reason(&DispatchNeeds::of(d, ""), self.agent_views(now))
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
        let mut free = self.has_free_slot();
        while free && let Some(dispatch) = self.pending.pop_front() {
            if holding && self.restored.contains_key(&dispatch.job_id) {
                skipped.push(dispatch);
                continue;
            }
            let digest = self.catalog.0.get(&format!("{}@{}", dispatch.provider, dispatch.provider_version));
            let digest = digest.map(|p| p.digest.as_str()).unwrap_or_default();
            let agent_id = match choose(&DispatchNeeds::of(&dispatch, digest), self.agent_views(now)) {
                Choice::Agent(id) => id.to_string(),
                Choice::Wait(_) => {
                    skipped.push(dispatch);
                    continue;
                }
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
        self.feed(now, Event::ActionFinished { job_id, lease_epoch, result: ActionResult::Failed { message } });
    }

    /// Whether some agent could take one more action now.
    pub(super) fn has_free_slot(&self) -> bool {
        self.agents.values().any(|a| !a.draining && (a.running.len() as u32) < a.slots)
    }

    /// Whether `agent_id` may take `dispatch` now: connected (a disabled
    /// or revoked agent never is) and [`may_take`]. Asked at every
    /// hand-out, whoever chose the agent.
    pub(super) fn may_take(&self, agent_id: &str, dispatch: &Dispatch, kind: HandOut) -> Result<(), String> {
        let agent = self.agents.get(agent_id).ok_or_else(|| format!("agent {agent_id} is not connected"))?;
        // Responsiveness is the chooser's business, not a hand-out's: an
        // agent given back its own job right after its hello is heard.
        may_take(&view(agent_id, agent, true), &dispatch.agent_labels, kind)
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
                .log_position(&dispatch.execution_id.0, dispatch.job_id.as_str(), LOG_TRUNCATED)
                .map_err(|e| Refusal::Impossible(format!("reading the stored log: {e:#}")))?,
            None => (None, 0, false),
        };
        let agent = self.agents.get_mut(agent_id).expect("a connected agent");
        agent.running.insert(dispatch.job_id.to_string());
        agent.plugins.insert(spec.plugin.digest.clone());
        self.jobs.insert(
            dispatch.job_id.to_string(),
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
        let (job_id, lease_epoch) = (dispatch.job_id.clone(), dispatch.lease_epoch);
        self.feed(now, Event::ActionAssigned { job_id, lease_epoch, agent: agent_id.into() });
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
            job_id: d.job_id.to_string(),
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

/// The snapshot of one connected agent.
fn view<'a>(id: &'a str, agent: &'a AgentConn, responsive: bool) -> AgentView<'a> {
    AgentView {
        id,
        labels: &agent.labels,
        slots: agent.slots,
        running: agent.running.len(),
        draining: agent.draining,
        responsive,
        plugins: &agent.plugins,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent of the snapshot, idle, responsive, with two slots.
    struct Agent {
        id: &'static str,
        labels: BTreeMap<String, String>,
        slots: u32,
        running: usize,
        draining: bool,
        responsive: bool,
        plugins: HashSet<String>,
    }

    fn agent(id: &'static str) -> Agent {
        Agent {
            id,
            labels: BTreeMap::new(),
            slots: 2,
            running: 0,
            draining: false,
            responsive: true,
            plugins: HashSet::new(),
        }
    }

    impl Agent {
        fn labels(mut self, labels: &[(&str, &str)]) -> Self {
            self.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self
        }
        fn load(mut self, running: usize, slots: u32) -> Self {
            (self.running, self.slots) = (running, slots);
            self
        }
        fn draining(mut self) -> Self {
            self.draining = true;
            self
        }
        fn silent(mut self) -> Self {
            self.responsive = false;
            self
        }
        fn cached(mut self, digest: &str) -> Self {
            self.plugins.insert(digest.to_string());
            self
        }
        fn view(&self) -> AgentView<'_> {
            AgentView {
                id: self.id,
                labels: &self.labels,
                slots: self.slots,
                running: self.running,
                draining: self.draining,
                responsive: self.responsive,
                plugins: &self.plugins,
            }
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn needs<'a>(labels: &'a BTreeMap<String, String>, lost_on: &'a [AgentId]) -> DispatchNeeds<'a> {
        DispatchNeeds { labels, lost_on, plugin_digest: "d1" }
    }

    fn choice<'a>(needs: &DispatchNeeds<'_>, agents: &'a [Agent]) -> Choice<'a> {
        choose(needs, agents.iter().map(Agent::view))
    }

    #[test]
    fn the_least_loaded_agent_is_chosen_by_share_of_its_slots() {
        let none = BTreeMap::new();
        let agents = [agent("a").load(1, 2), agent("b").load(2, 8), agent("c").load(1, 1)];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Agent("b"));
    }

    #[test]
    fn every_label_asked_for_must_match() {
        let wanted = labels(&[("os", "linux"), ("gpu", "yes")]);
        let agents = [
            agent("a").labels(&[("os", "linux")]),
            agent("b").labels(&[("os", "linux"), ("gpu", "no")]).load(0, 9),
            agent("c").labels(&[("os", "linux"), ("gpu", "yes"), ("zone", "x")]).load(1, 2),
        ];
        assert_eq!(choice(&needs(&wanted, &[]), &agents), Choice::Agent("c"));
    }

    #[test]
    fn only_an_agent_with_a_free_slot_takes_work() {
        let none = BTreeMap::new();
        let full = [agent("a").load(2, 2), agent("b").load(1, 1)];
        assert_eq!(choice(&needs(&none, &[]), &full), Choice::Wait(Waiting::AllBusy));
        let one_free = [agent("a").load(2, 2), agent("b").load(3, 4)];
        assert_eq!(choice(&needs(&none, &[]), &one_free), Choice::Agent("b"));
    }

    #[test]
    fn draining_and_silent_agents_get_nothing_new() {
        let none = BTreeMap::new();
        let agents = [agent("a").draining(), agent("b").silent(), agent("c").load(1, 2)];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Agent("c"));
        let agents = [agent("a").draining(), agent("b").silent()];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Wait(Waiting::AllBusy));
        // A disabled or revoked agent is cut off, so it is never in the
        // snapshot; with only draining agents nothing takes work.
        let agents = [agent("a").draining()];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Wait(Waiting::NoAgentTakingWork));
        assert_eq!(choice(&needs(&none, &[]), &[]), Choice::Wait(Waiting::NoAgentTakingWork));
    }

    #[test]
    fn ties_are_broken_the_same_way_every_time() {
        let none = BTreeMap::new();
        // Equal load: the one with the plugin cached, then the smallest id,
        // whatever the order of the snapshot.
        let agents = [agent("c"), agent("b"), agent("a")];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Agent("a"));
        let agents = [agent("c"), agent("b").cached("d1"), agent("a")];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Agent("b"));
        // A cached plugin does not beat a lighter load.
        let agents = [agent("a").load(1, 2).cached("d1"), agent("b")];
        assert_eq!(choice(&needs(&none, &[]), &agents), Choice::Agent("b"));
    }

    #[test]
    fn an_agent_that_lost_the_action_takes_it_only_when_no_other_can() {
        let none = BTreeMap::new();
        let lost = [AgentId::from("a")];
        let agents = [agent("a"), agent("b").load(1, 2)];
        assert_eq!(choice(&needs(&none, &lost), &agents), Choice::Agent("b"));
        let agents = [agent("a"), agent("b").load(2, 2)];
        assert_eq!(choice(&needs(&none, &lost), &agents), Choice::Agent("a"));
    }

    #[test]
    fn waiting_reasons_read_as_before() {
        let wanted = labels(&[("gpu", "yes"), ("os", "linux")]);
        let reason = |agents: &[Agent]| waiting_reason(&needs(&wanted, &[]), agents.iter().map(Agent::view));
        assert_eq!(reason(&[]), "no agent is connected and taking work");
        assert_eq!(reason(&[agent("a").draining()]), "no agent is connected and taking work");
        assert_eq!(reason(&[agent("a").labels(&[("os", "linux")])]), "no connected agent has gpu=yes,os=linux");
        let busy = [agent("a").labels(&[("gpu", "yes"), ("os", "linux")]).load(2, 2)];
        assert_eq!(reason(&busy), "every eligible agent is busy");
        // The chooser's reason is the same words.
        let Choice::Wait(waiting) = choice(&needs(&wanted, &[]), &busy) else { panic!("busy agents were chosen") };
        assert_eq!(waiting.describe(&needs(&wanted, &[])), "every eligible agent is busy");
    }

    #[test]
    fn a_hand_out_checks_drain_slots_and_labels() {
        let wanted = labels(&[("os", "linux")]);
        let linux = agent("a").labels(&[("os", "linux")]);
        assert_eq!(may_take(&linux.view(), &wanted, HandOut::New), Ok(()));
        let draining = agent("a").labels(&[("os", "linux")]).draining();
        assert_eq!(may_take(&draining.view(), &wanted, HandOut::New), Err("agent a is draining".into()));
        // A draining agent is given back the job it already runs.
        assert_eq!(may_take(&draining.view(), &wanted, HandOut::Resume), Ok(()));
        let full = agent("a").labels(&[("os", "linux")]).load(2, 2);
        assert_eq!(may_take(&full.view(), &wanted, HandOut::Resume), Err("agent a has no free slot (2 of 2)".into()));
        let other = agent("a").labels(&[("os", "mac")]);
        assert_eq!(
            may_take(&other.view(), &wanted, HandOut::New),
            Err("agent a does not have the label os=linux the action asks for".into())
        );
    }
}
