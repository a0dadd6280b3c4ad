//! `failover` (issue 18, ha): three controllers on a throwaway PostgreSQL,
//! agents given every fleet address, N executions of a shell action that
//! records each run in a file; the leader is killed with SIGKILL while they
//! run. Measured: from the kill until a standby says it leads, until the
//! new leader serves an authenticated request, and until work moves again
//! (an action starts that had not before the kill); then, once every
//! execution ended, executions lost (not Succeeded: must be 0) and actions
//! run twice in one attempt (must be 0).

use crate::report::{Budget, Figure, ScenarioReport, ms};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use sluice_tests::ha::{HaCluster, Postgres, get, pipeline};
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Params {
    pub executions: usize,
    pub agents: usize,
    /// Seconds each action takes.
    pub action_seconds: u32,
}

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    tokio::task::block_in_place(|| measure(p))
}

fn measure(p: &Params) -> Result<ScenarioReport> {
    let pg = Postgres::start()?;
    let store = pg.database("failover")?;
    // Artifacts in the bucket (moto's server): every controller reads what
    // another stored.
    let moto = sluice_tests::moto::Moto::start()?;
    let args = moto.controller_args("failover");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = HaCluster::start(&store, 3, &args, &moto.controller_env())?;
    let repo = cluster.dir.path().join("repo");
    sluice_tests::make_repo(&repo, &[("README", "x\n")]);
    for _ in 0..p.agents {
        cluster.add_agent(&[])?;
    }
    let runs = cluster.dir.path().join("runs");
    let declaration = pipeline("failover", &repo, &runs, p.action_seconds);
    let file = cluster.dir.path().join("failover.json");
    std::fs::write(&file, declaration)?;
    let created = cluster.sluice_json(&["pipeline", "create", file.to_str().context("path")?])?;
    let mut ids = vec![created["pipelineExecutionId"].as_str().context("execution id")?.to_string()];
    for _ in 1..p.executions {
        let out = cluster.sluice(&["pipeline", "start", "failover"]);
        if !out.status.success() {
            bail!("pipeline start: {}", String::from_utf8_lossy(&out.stderr));
        }
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // Mid-run: the first actions run, the rest wait for a slot.
    wait(Duration::from_secs(30), || lines(&runs) > 0)?;
    let (leader, _) = cluster.wait_for_leader(Duration::from_secs(30))?;
    let started_before = lines(&runs);
    cluster.kill(leader);
    let killed = Instant::now();
    wait(Duration::from_secs(60), || cluster.leader().is_some_and(|l| l != leader))?;
    let leads = killed.elapsed();
    let next = cluster.leader().context("no leader")?;
    let api = cluster.members[next].api.clone();
    wait(Duration::from_secs(60), || matches!(get(&api, &cluster.ca, "/v1/pipelines", Some(&cluster.token)), Ok((200, _))))?;
    let serves = killed.elapsed();
    let all_started = started_before >= ids.len();
    if !all_started {
        wait(Duration::from_secs(120), || lines(&runs) > started_before)?;
    }
    let moves = killed.elapsed();
    let (lost, twice) = outcome(&cluster, &ids, &runs)?;

    let mut report = ScenarioReport::new(
        "failover",
        json!({"controllers": 3, "executions": p.executions, "agents": p.agents, "action_seconds": p.action_seconds}),
    );
    report.figure(Figure::new("SIGKILL until a standby leads", ms(leads), "ms").budget(Budget::Below(10_000.0)));
    report.figure(Figure::new("SIGKILL until the new leader serves", ms(serves), "ms").budget(Budget::Below(10_000.0)));
    if !all_started {
        report.figure(Figure::new("SIGKILL until work moves again", ms(moves), "ms"));
    }
    report.figure(Figure::new("executions lost", lost as f64, "executions").budget(Budget::Below(1.0)));
    report.figure(Figure::new("actions run twice in one attempt", twice as f64, "actions").budget(Budget::Below(1.0)));
    report.note(format!(
        "lease TTL 5 s, renewed and tried every 1 s; \"work moves\" = the first action started after the kill ({} of {} \
         had started before it)",
        started_before,
        ids.len()
    ));
    Ok(report)
}

fn lines(runs: &Path) -> usize {
    std::fs::read_to_string(runs).map(|t| t.lines().count()).unwrap_or(0)
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Once every execution ended: how many did not succeed, and how many
/// actions ran more often than they had attempts.
fn outcome(cluster: &HaCluster, ids: &[String], runs: &Path) -> Result<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ended: Vec<Value> = Vec::new();
    for id in ids {
        loop {
            let e = cluster.sluice_json(&["execution", "get", "failover", id]).unwrap_or_default();
            let status = e["pipelineExecution"]["status"].as_str().unwrap_or("InProgress");
            if status != "InProgress" && status != "Stopping" {
                ended.push(e);
                break;
            }
            if Instant::now() > deadline {
                bail!("execution {id} did not end within 600 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let lost = ended.iter().filter(|e| e["pipelineExecution"]["status"] != "Succeeded").count();
    let twice = ids
        .iter()
        .zip(&ended)
        .filter(|(id, e)| {
            let attempts = e["stages"][1]["actions"][0]["attempt"].as_u64().unwrap_or(1) as usize;
            text.lines().filter(|l| l == id).count() > attempts
        })
        .count();
    Ok((lost, twice))
}
