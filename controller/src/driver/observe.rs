//! The driver's metrics (issue 17, obs): counts it keeps as it steps, in
//! plain fields of its own (it is their only writer, so a count is an
//! add, with no lock or atomic), and its part of a scrape, read off its
//! state when a scrape wants it (`crate::metrics::DriverView`).
//!
//! Labels stay bounded: pipelines (bounded by the store: a deleted
//! pipeline's series are dropped with it), statuses,
//! providers (bounded by the registered plugins), fixed reasons. Never an
//! execution, job or agent id.

use super::Driver;
use super::scheduler::{DispatchNeeds, Waiting, waiting_kind};
use crate::engine::{Execution, ExecutionStatus, Notice};
use sluice_protocol::metrics::{Histogram, Kind, Text};
use std::collections::{BTreeMap, HashMap};

/// Counts since the controller started.
#[derive(Default)]
pub(super) struct Counts {
    /// Executions and actions that entered each status, by pipeline.
    executions: HashMap<String, BTreeMap<String, u64>>,
    actions: HashMap<String, BTreeMap<String, u64>>,
    /// Finished action attempts' durations, by provider.
    action_seconds: HashMap<String, Histogram>,
    /// Attempts of an action after its first (retries of any cause).
    retries: u64,
    /// Jobs whose lease ran out or whose agent went away.
    pub(super) lease_losses: u64,
    /// Agents taken for gone after a lease of silence.
    pub(super) agents_lost: u64,
}

impl Counts {
    /// Drops a deleted pipeline's series: a caller creating and deleting
    /// uniquely named pipelines must not grow these maps, and every scrape,
    /// without bound. A pipeline created again under the name starts from
    /// zero, which Prometheus takes as a counter reset.
    pub(super) fn forget_pipeline(&mut self, name: &str) {
        self.executions.remove(name);
        self.actions.remove(name);
    }
}

fn bump(map: &mut HashMap<String, BTreeMap<String, u64>>, pipeline: &str, status: &str) {
    let statuses = match map.get_mut(pipeline) {
        Some(statuses) => statuses,
        None => map.entry(pipeline.to_string()).or_default(),
    };
    match statuses.get_mut(status) {
        Some(n) => *n += 1,
        None => {
            statuses.insert(status.to_string(), 1);
        }
    }
}

impl Driver {
    /// Counts what a committed step reported: `notices` of the executions
    /// in `dirty` (which hold the attempts' times).
    pub(super) fn observe_step(&mut self, notices: &[Notice], dirty: &[std::sync::Arc<Execution>]) {
        for n in notices {
            let (Some(stage), Some(action)) = (&n.stage, &n.action) else {
                if n.stage.is_none() {
                    bump(&mut self.counts.executions, &n.pipeline, &n.status);
                }
                continue;
            };
            bump(&mut self.counts.actions, &n.pipeline, &n.status);
            let Some(execution) = dirty.iter().find(|e| e.id == n.execution_id) else { continue };
            let Some(run) = execution
                .stages
                .iter()
                .find(|s| &s.name == stage)
                .and_then(|s| s.actions.iter().find(|a| &a.name == action))
            else {
                continue;
            };
            if n.status == "InProgress" && run.attempt > 1 {
                self.counts.retries += 1;
            }
            let (Some(started), Some(ended)) = (run.started_at, run.ended_at) else { continue };
            if n.status == "InProgress" {
                continue;
            }
            let Some(def) = self.definitions.get(&execution.pipeline, execution.version) else { continue };
            let provider = def
                .stages
                .iter()
                .find(|s| &s.name == stage)
                .and_then(|s| s.actions.iter().find(|a| &a.name == action))
                .map(|a| a.action_type_id.provider.as_str());
            let Some(provider) = provider else { continue };
            let seconds = ended.saturating_sub(started) as f64 / 1000.0;
            match self.counts.action_seconds.get(provider) {
                Some(h) => h.observe(seconds),
                None => self.counts.action_seconds.entry(provider.to_string()).or_default().observe(seconds),
            }
        }
    }

    /// The driver's part of a scrape at `now`.
    pub(super) fn metrics_text(&self, now: u64) -> Text {
        let mut t = Text::default();
        let c = &self.counts;
        t.family("sluice_executions_total", "Executions that entered a status, by pipeline.", Kind::Counter);
        for (pipeline, statuses) in sorted(&c.executions) {
            for (status, n) in statuses {
                t.sample("sluice_executions_total", &[("pipeline", pipeline), ("status", status)], *n as f64);
            }
        }
        t.family("sluice_actions_total", "Actions that entered a status, by pipeline.", Kind::Counter);
        for (pipeline, statuses) in sorted(&c.actions) {
            for (status, n) in statuses {
                t.sample("sluice_actions_total", &[("pipeline", pipeline), ("status", status)], *n as f64);
            }
        }
        t.family("sluice_action_duration_seconds", "How long finished action attempts ran, by provider.", Kind::Histogram);
        let mut providers: Vec<_> = c.action_seconds.iter().collect();
        providers.sort_by(|a, b| a.0.cmp(b.0));
        for (provider, h) in providers {
            t.histogram("sluice_action_duration_seconds", &[("provider", provider)], &h.snapshot());
        }
        t.single("sluice_action_retries_total", "Action attempts after the first.", Kind::Counter, c.retries as f64);
        t.single(
            "sluice_lease_losses_total",
            "Jobs lost with their lease (agent silent or gone).",
            Kind::Counter,
            c.lease_losses as f64,
        );
        t.single(
            "sluice_agents_lost_total",
            "Agents taken for gone after a lease of silence.",
            Kind::Counter,
            c.agents_lost as f64,
        );
        let mut running: BTreeMap<&str, u64> = BTreeMap::new();
        for e in self.engine.executions().filter(|e| e.status == ExecutionStatus::InProgress) {
            *running.entry(e.pipeline.as_str()).or_default() += 1;
        }
        t.family("sluice_executions_in_progress", "Executions in progress, by pipeline.", Kind::Gauge);
        for (pipeline, n) in running {
            t.sample("sluice_executions_in_progress", &[("pipeline", pipeline)], n as f64);
        }
        t.family("sluice_actions_waiting", "Actions waiting, by why.", Kind::Gauge);
        for (reason, n) in self.waiting(now) {
            t.sample("sluice_actions_waiting", &[("reason", reason)], n as f64);
        }
        let draining = self.agents.values().filter(|a| a.draining).count();
        t.family("sluice_agents", "Agents connected now, taking work or draining.", Kind::Gauge)
            .sample("sluice_agents", &[("state", "connected")], (self.agents.len() - draining) as f64)
            .sample("sluice_agents", &[("state", "draining")], draining as f64);
        let slots: u64 = self.agents.values().map(|a| u64::from(a.slots)).sum();
        let busy: u64 = self.agents.values().map(|a| a.running.len() as u64).sum();
        t.single("sluice_agent_slots", "Slots of the connected agents.", Kind::Gauge, slots as f64);
        t.single("sluice_agent_jobs_running", "Jobs the connected agents run.", Kind::Gauge, busy as f64);
        t
    }

    /// Actions waiting now, by why: each pending hand-out by what the
    /// scheduler would say, approvals, and the actions of stages held by a
    /// disabled transition.
    fn waiting(&self, now: u64) -> [(&'static str, u64); 5] {
        let mut counts =
            [("no_agent", 0), ("no_agent_with_labels", 0), ("no_free_slot", 0), ("approval", 0), ("transition_disabled", 0)];
        // Pending hand-outs by the labels they ask for (few distinct sets),
        // so that a scrape looks at each agent once per set, not per action.
        let mut by_labels: HashMap<&BTreeMap<String, String>, (&crate::engine::Dispatch, u64)> = HashMap::new();
        for d in &self.pending {
            by_labels.entry(&d.agent_labels).or_insert((d, 0)).1 += 1;
        }
        for (d, n) in by_labels.into_values() {
            let i = match waiting_kind(&DispatchNeeds::of(d, ""), self.agent_views(now)) {
                Waiting::NoAgentTakingWork => 0,
                Waiting::NoAgentWithLabels => 1,
                Waiting::AllBusy => 2,
            };
            counts[i].1 += n;
        }
        for e in self.engine.executions().filter(|e| e.status == ExecutionStatus::InProgress) {
            let Some(def) = self.definitions.get(&e.pipeline, e.version) else { continue };
            for (stage, run) in def.stages.iter().zip(&e.stages) {
                for (action, arun) in stage.actions.iter().zip(&run.actions) {
                    if arun.status == Some(crate::engine::ActionStatus::InProgress)
                        && crate::engine::is_manual_approval(action)
                    {
                        counts[3].1 += 1;
                    }
                }
            }
            // The next stage to enter, when its inbound transition is off.
            let next = e.stages.iter().position(|s| s.status.is_none());
            let previous_done =
                next.is_some_and(|i| i == 0 || e.stages[i - 1].status.is_some_and(|s| s.as_str() == "Succeeded"));
            if let Some(i) = next.filter(|_| previous_done)
                && self.transitions.get(&(e.pipeline.clone(), e.stages[i].name.clone())).is_some_and(|t| !t.enabled)
            {
                counts[4].1 += def.stages.get(i).map_or(1, |s| s.actions.len()) as u64;
            }
        }
        counts
    }
}

fn sorted(map: &HashMap<String, BTreeMap<String, u64>>) -> Vec<(&String, &BTreeMap<String, u64>)> {
    let mut all: Vec<_> = map.iter().collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_pipelines_series_are_dropped_and_the_rest_kept() {
        let mut c = Counts::default();
        bump(&mut c.executions, "gone", "Succeeded");
        bump(&mut c.actions, "gone", "Failed");
        bump(&mut c.executions, "kept", "Succeeded");
        c.forget_pipeline("gone");
        assert_eq!(c.executions.keys().collect::<Vec<_>>(), vec!["kept"]);
        assert!(c.actions.is_empty());
    }
}
