//! `throughput`: many executions of a PARALLEL pipeline at once over several
//! agents with several slots each. Every execution starts with its git
//! Source action; the rate is counted once the last Source action has
//! succeeded, so that it is the rate of noop actions alone.

use crate::api::{Api, collect_until, executions_ended, is_final};
use crate::pipelines::{Order, is_noop, noop_pipeline};
use crate::report::{Budget, Figure, ScenarioReport};
use anyhow::{Result, bail};
use serde_json::json;
use sluice_tests::Cluster;
use std::time::{Duration, Instant};

pub struct Params {
    pub agents: usize,
    pub slots: u32,
    pub executions: usize,
    /// Noop actions per execution, side by side.
    pub actions: usize,
}

/// Requests in flight while starting executions.
const STARTS_IN_FLIGHT: usize = 16;

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    let slots = p.slots.to_string();
    let cluster = tokio::task::block_in_place(|| {
        let mut builder = Cluster::new().agent_args(&["--slots", &slots]);
        for _ in 0..p.agents {
            builder = builder.agent(&[]);
        }
        builder.start()
    })?;
    let api = Api::new(&cluster);
    let name = "throughput";
    let mut events = api.events(name).await?;
    api.create_pipeline(&noop_pipeline(&cluster, name, p.actions, Order::Parallel, "PARALLEL")).await?;
    // Warm-up: every agent fetches and compiles the plugins it is given.
    collect_until(&mut events, Duration::from_secs(300), "the warm-up execution", executions_ended(1)).await?;

    let started = Instant::now();
    api.start_many(name, p.executions, STARTS_IN_FLIGHT).await?;
    let seen =
        collect_until(&mut events, Duration::from_secs(600), "every execution to end", executions_ended(p.executions))
            .await?;
    let elapsed = started.elapsed();
    let failed = seen.iter().filter_map(|e| e.execution()).filter(|(_, s)| is_final(s) && *s != "Succeeded").count();
    if failed > 0 {
        bail!("{failed} executions did not succeed");
    }
    let sources_done = seen
        .iter()
        .filter(|e| e.action().is_some_and(|(stage, _, status)| stage == "Source" && status == "Succeeded"))
        .map(|e| e.at)
        .max()
        .unwrap_or(started);
    let noops: Vec<Instant> = seen
        .iter()
        .filter(|e| e.action().is_some_and(|(stage, _, status)| is_noop(stage) && status == "Succeeded"))
        .map(|e| e.at)
        .collect();
    let total = p.executions * p.actions;
    if noops.len() != total {
        bail!("saw {} noop results of {total}: the event stream lost some", noops.len());
    }
    let last = noops.iter().max().copied().unwrap_or(sources_done);
    let after_sources = noops.iter().filter(|t| **t > sources_done).count();
    let window = last.saturating_duration_since(sources_done).as_secs_f64();

    let mut report = ScenarioReport::new(
        "throughput",
        json!({"agents": p.agents, "slots": p.slots, "executions": p.executions, "actionsPerExecution": p.actions, "mode": "PARALLEL"}),
    );
    if after_sources >= total / 4 && window > 0.0 {
        report.figure(
            Figure::new("noop actions per second", after_sources as f64 / window, "actions/s")
                .budget(Budget::AtLeast(5000.0)),
        );
    } else {
        report.note(
            "too few noop actions ran after the last Source action to measure the noop rate alone: raise --executions",
        );
    }
    report.figure(Figure::new(
        "actions per second, Source included",
        (total + p.executions) as f64 / elapsed.as_secs_f64(),
        "actions/s",
    ));
    report.note(format!(
        "{after_sources} of {total} noop actions ran after the last Source action, in {window:.2} s; the whole run took {:.2} s",
        elapsed.as_secs_f64()
    ));
    Ok(report)
}
