//! `overhead`: sequential `noop` actions on one agent. An action becomes
//! runnable when the one before it finishes; the controller commits that
//! step and dispatches the next action in the same commit, so the gap
//! between two consecutive dispatches is the whole cost of one action:
//! persistence of its dispatch, start and result, the trip to the agent
//! and back, the sandbox and the plugin call (a noop's own work is a few
//! microseconds of it).

use crate::api::{Api, Stamped, collect_until, executions_ended, is_final};
use crate::pipelines::{Order, is_noop, noop_pipeline};
use crate::report::{Budget, Figure, ScenarioReport, ms, percentile};
use anyhow::{Result, bail};
use serde_json::json;
use sluice_tests::Cluster;
use std::time::{Duration, Instant};

pub struct Params {
    pub actions: usize,
    pub executions: usize,
    /// Extra `sluice-agent` flags (such as `--allocator on-demand`).
    pub agent_args: Vec<String>,
    pub durability: Durability,
}

/// How the controller commits (issue 19, perf: figures with `--fsync` beside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The default: a commit survives the process, not the machine.
    Process,
    /// `sluice controller --fsync`: every commit synced to disk.
    Fsync,
}

/// What one measured execution showed.
pub struct Measured {
    /// Dispatch-to-dispatch gaps between consecutive noops.
    pub gaps: Vec<Duration>,
    /// From the first noop's dispatch to the execution's end, per noop.
    pub wall_per_action: Duration,
}

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    let args: Vec<&str> = p.agent_args.iter().map(String::as_str).collect();
    let controller_args: &[&str] = if p.durability == Durability::Fsync { &["--fsync"] } else { &[] };
    let cluster = tokio::task::block_in_place(|| {
        Cluster::new().controller_args(controller_args).agent(&[]).agent_args(&args).start()
    })?;
    let api = Api::new(&cluster);
    let measured = measure(&cluster, &api, "overhead", p.actions, p.executions).await?;
    let gaps: Vec<Duration> = measured.iter().flat_map(|m| m.gaps.iter().copied()).collect();
    let wall: Duration = measured.iter().map(|m| m.wall_per_action).sum::<Duration>() / measured.len().max(1) as u32;

    let mut report = ScenarioReport::new(
        "overhead",
        json!({"actions": p.actions, "executions": p.executions, "agents": 1, "agentArgs": p.agent_args, "fsync": p.durability == Durability::Fsync}),
    );
    // The budget (design.md section 8) is for the default durability; with
    // `--fsync` every commit waits for the disk, and the figures are reported
    // beside it.
    let (p50, p99) = (
        Figure::new("per-action overhead p50", ms(percentile(&gaps, 50.0)), "ms"),
        Figure::new("per-action overhead p99", ms(percentile(&gaps, 99.0)), "ms"),
    );
    if p.durability == Durability::Fsync {
        report.figure(p50);
        report.figure(p99);
    } else {
        report.figure(p50.budget(Budget::Below(0.5)));
        report.figure(p99.budget(Budget::Below(2.0)));
    }
    report.figure(Figure::new("per-action wall time, mean", ms(wall), "ms"));
    report.note(format!(
        "{} gaps between consecutive noop dispatches over {} executions, after one warm-up execution",
        gaps.len(),
        p.executions
    ));
    Ok(report)
}

/// Creates a pipeline of `actions` sequential noops, runs it once to warm
/// up (plugin fetch and compile on the agent), then `executions` times,
/// one after the other, measuring each.
pub async fn measure(cluster: &Cluster, api: &Api, name: &str, actions: usize, executions: usize) -> Result<Vec<Measured>> {
    let mut events = api.events(name).await?;
    api.create_pipeline(&noop_pipeline(cluster, name, actions, Order::Sequential, "SUPERSEDED")).await?;
    let warm = collect_until(&mut events, WAIT, "the warm-up execution", executions_ended(1)).await?;
    check_succeeded(&warm)?;
    let mut measured = Vec::new();
    for _ in 0..executions {
        api.start(name).await?;
        let seen = collect_until(&mut events, WAIT, "a measured execution", executions_ended(1)).await?;
        check_succeeded(&seen)?;
        let dispatches: Vec<Instant> = seen
            .iter()
            .filter(|e| e.action().is_some_and(|(stage, _, status)| is_noop(stage) && status == "InProgress"))
            .map(|e| e.at)
            .collect();
        if dispatches.len() != actions {
            bail!("saw {} noop dispatches of {actions}: the event stream lost some", dispatches.len());
        }
        let end = seen.iter().rev().find(|e| e.execution().is_some_and(|(_, s)| is_final(s))).map(|e| e.at).expect("ended");
        measured.push(Measured {
            gaps: dispatches.windows(2).map(|w| w[1] - w[0]).collect(),
            wall_per_action: (end - dispatches[0]) / actions as u32,
        });
    }
    Ok(measured)
}

/// How long one execution may take before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(300);

fn check_succeeded(events: &[Stamped]) -> Result<()> {
    match events.iter().rev().filter_map(Stamped::execution).find(|(_, s)| is_final(s)) {
        Some((_, "Succeeded")) => Ok(()),
        Some((id, status)) => bail!("execution {id} ended {status}"),
        None => bail!("no execution ended"),
    }
}
