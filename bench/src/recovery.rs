//! `recovery`: N executions in flight (a PARALLEL pipeline with no agent
//! connected, so each waits for one with its Source action dispatched),
//! the controller killed with SIGKILL and started again on its data dir.
//! Measured: from the restart until the API answers, and until it lists all
//! N executions in progress again. Then an agent joins and every execution
//! must run to success: none lost.

use crate::api::{Api, is_final};
use crate::pipelines::{Order, noop_pipeline};
use crate::report::{Budget, Figure, ScenarioReport, ms};
use anyhow::{Result, bail};
use serde_json::json;
use sluice_tests::Cluster;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub struct Params {
    pub executions: usize,
    /// Let an agent join after the restart and wait for every execution to
    /// succeed (skipped in smoke runs: restored actions are held 30 s for
    /// the agents that may still run them).
    pub finish: bool,
}

/// The API lists at most this many executions at once.
const MAX_LISTED: usize = 1000;
/// Requests in flight while starting executions.
const STARTS_IN_FLIGHT: usize = 16;

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    if p.executions > MAX_LISTED {
        bail!("--executions is at most {MAX_LISTED}: the history lists no more at once");
    }
    let mut cluster = tokio::task::block_in_place(|| Cluster::new().start())?;
    let name = "recovery";
    let api = Api::new(&cluster);
    let first = api.create_pipeline(&noop_pipeline(&cluster, name, 1, Order::Parallel, "PARALLEL")).await?;
    let mut ids: HashSet<String> = api.start_many(name, p.executions - 1, STARTS_IN_FLIGHT).await?.into_iter().collect();
    ids.insert(first);
    let before = in_progress(&api, name, &ids).await?;
    if before != p.executions {
        bail!("{before} of {} executions are in progress before the kill", p.executions);
    }

    tokio::task::block_in_place(|| cluster.kill_controller());
    let restarted = Instant::now();
    tokio::task::block_in_place(|| cluster.start_controller())?;
    let api = Api::new(&cluster);
    let serving = loop {
        if api.get("/pipelines").await.is_ok() {
            break restarted.elapsed();
        }
        if restarted.elapsed() > Duration::from_secs(60) {
            bail!("the controller did not serve within 60 s of its restart");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let resumed_count = in_progress(&api, name, &ids).await?;
    let resumed = restarted.elapsed();

    let mut report = ScenarioReport::new("recovery", json!({"executions": p.executions}));
    report.figure(Figure::new("restart until the API serves", ms(serving), "ms").budget(Budget::Below(2000.0)));
    report.figure(
        Figure::new("restart until every execution is listed in progress", ms(resumed), "ms").budget(Budget::Below(2000.0)),
    );
    report.figure(
        Figure::new("executions resumed", resumed_count as f64, "executions").budget(Budget::AtLeast(p.executions as f64)),
    );
    if p.finish {
        let joined = Instant::now();
        tokio::task::block_in_place(|| cluster.add_agent(&[]))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let statuses = loop {
            let all = api.statuses(name, MAX_LISTED).await?;
            let ours: Vec<String> = all.into_iter().filter(|(id, _)| ids.contains(id)).map(|(_, s)| s).collect();
            if ours.len() == ids.len() && ours.iter().all(|s| is_final(s)) {
                break ours;
            }
            if Instant::now() > deadline {
                bail!("the resumed executions did not all end within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let lost = statuses.iter().filter(|s| *s != "Succeeded").count();
        report.figure(Figure::new("executions lost", lost as f64, "executions").budget(Budget::Below(1.0)));
        report.figure(Figure::new("agent joins until all resumed executions succeed", joined.elapsed().as_secs_f64(), "s"));
        report.note(
            "actions that were dispatched when the controller died are held 30 s after a restart for the agent that may \
             still run them (ARCHITECTURE.md), so the executions finish about 30 s after the agent joins",
        );
    }
    Ok(report)
}

/// How many of `ids` the controller lists as in progress.
async fn in_progress(api: &Api, name: &str, ids: &HashSet<String>) -> Result<usize> {
    let statuses = api.statuses(name, MAX_LISTED).await?;
    Ok(statuses.iter().filter(|(id, s)| ids.contains(id) && s == "InProgress").count())
}
