//! `scale`: a controller on a store of many pipelines with a long past
//! (by default 10,000 pipelines and 1,000,000 ended executions, each with
//! its actions and log lines). Measured through the real API: start-up
//! until the API serves, `pipeline list`, `pipeline history` (first page
//! and a deep page of the pipeline with the longest history), `pipeline
//! state`, and the per-action overhead then, beside the same measure on
//! the empty store of the same run.
//!
//! The store is filled directly, not through the API: one real execution
//! of a template pipeline (Source and two noops) is run on an empty
//! controller, then copied (its declaration, state and log lines, with
//! fresh names and ids) through the store's own `apply` in large batches.
//! The filled data dir is cached under `~/.cache/sluice-bench/` keyed by
//! the store's schema version and the sizes, so that later runs reuse it;
//! a run borrows it (moves it into its cluster and back) and deletes what
//! it added.

use crate::api::{Api, collect_until, executions_ended};
use crate::overhead;
use crate::pipelines::{Order, noop_pipeline};
use crate::report::{Budget, Figure, ScenarioReport, ms, percentile};
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use sluice::engine::{ArtifactRef, Execution, ExecutionId};
use sluice::store::{Change, Durability, LogLine, PipelineRecord, SqliteStore, Store as _};
use sluice_tests::Cluster;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Params {
    pub pipelines: usize,
    /// Ended executions in all.
    pub executions: usize,
    /// Of them, the executions of the one pipeline with a long history.
    pub long: usize,
    /// Requests per measured API call.
    pub samples: usize,
    /// Sequential noops per measured execution of the overhead measure.
    pub actions: usize,
    /// Measured executions of the overhead measure (each store).
    pub runs: usize,
}

/// Executions (with their logs) written per transaction while filling.
const BATCH: usize = 5_000;
/// The template pipeline the store is filled with copies of.
const TEMPLATE: &str = "scale-template";
/// How long the template execution may take.
const WAIT: Duration = Duration::from_secs(300);
/// One execution a minute, the newest a day ago: a long past.
const SPACING_MS: u64 = 60_000;

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    if p.pipelines < 2 || p.long >= p.executions {
        bail!("--pipelines must be at least 2 and --long fewer than --executions");
    }
    let mut cluster = tokio::task::block_in_place(|| Cluster::new().agent(&[]).start())?;
    let api = Api::new(&cluster);
    let empty = overhead::measure(&cluster, &api, "overhead-empty", p.actions, p.runs).await?;
    let empty_gaps: Vec<Duration> = empty.iter().flat_map(|m| m.gaps.iter().copied()).collect();

    let cache = cache_dir(p)?;
    let mut report = ScenarioReport::new(
        "scale",
        json!({"pipelines": p.pipelines, "executions": p.executions, "longHistory": p.long, "samples": p.samples,
               "actions": p.actions, "runs": p.runs, "cache": cache.display().to_string()}),
    );
    let filled = match std::fs::read_to_string(cache.join("filled.json")) {
        Ok(text) => {
            report.note(format!("store reused from the cache {} (filled by an earlier run)", cache.display()));
            serde_json::from_str::<Value>(&text)?
        }
        Err(_) => fill(&mut cluster, &api, p, &cache).await?,
    };
    report.figure(Figure::new("fill time (once per schema version)", filled["seconds"].as_f64().unwrap_or(0.0), "s"));
    report.figure(Figure::new("store size", filled["bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64, "MiB"));

    // The controller starts again on the filled data dir, borrowed from
    // the cache (moved in, and back at the end: a copy of a store of
    // several GiB would cost as much disk again).
    let data = cluster.data_dir();
    tokio::task::block_in_place(|| -> Result<()> {
        cluster.kill_controller();
        cluster.kill_agent(0);
        std::fs::remove_dir_all(&data)?;
        std::fs::rename(cache.join("controller"), &data)
            .context("borrowing the filled store (the cache must be on the temp dir's file system)")
    })?;
    let measured = measure(&mut cluster, p, &empty_gaps, &mut report).await;
    // What the run added goes, and the store goes back to the cache.
    if measured.is_ok() {
        let _ = Api::new(&cluster).delete(&format!("/pipelines/{FULL}")).await;
    }
    tokio::task::block_in_place(|| -> Result<()> {
        cluster.kill_controller();
        std::fs::rename(&data, cache.join("controller")).context("returning the filled store to the cache")?;
        Ok(())
    })?;
    measured?;
    Ok(report)
}

/// The overhead measure's pipeline on the full store (deleted after).
const FULL: &str = "overhead-full";

/// Starts the controller on the filled store and measures it.
async fn measure(cluster: &mut Cluster, p: &Params, empty_gaps: &[Duration], report: &mut ScenarioReport) -> Result<()> {
    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.start_controller())?;
    let api = Api::new(cluster);
    let serving = loop {
        if api.get("/pipelines?maxResults=1").await.is_ok() {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the controller did not serve within 120 s of its start on the filled store");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    report.figure(Figure::new("start-up until the API serves", ms(serving), "ms").budget(Budget::Below(2000.0)));
    // The controller's own account of its start, beside: the rest is the
    // process's launch and the first request.
    if let Some(line) = cluster.controller_log().lines().rev().find(|l| l.contains("start-up took")) {
        report.note(format!("the controller's log: {}", line.split_once("INFO ").map_or(line, |(_, l)| l)));
    }

    let long = pipeline_name(0);
    let typical = pipeline_name(p.pipelines / 2);
    let listed = api.get("/pipelines").await?["pipelines"].as_array().map_or(0, Vec::len);
    latency(report, &api, p.samples, "pipeline list (first page)", "/pipelines").await?;
    latency(report, &api, p.samples, "pipeline history, first page", &format!("/pipelines/{long}/executions")).await?;
    let (token, depth) = deep_token(&api, &long, p.long / 2).await?;
    let deep = format!("/pipelines/{long}/executions?nextToken={token}");
    latency(report, &api, p.samples, &format!("pipeline history, page at {depth}"), &deep).await?;
    latency(report, &api, p.samples, "pipeline state (long history)", &format!("/pipelines/{long}/state")).await?;
    latency(report, &api, p.samples, "pipeline state (typical)", &format!("/pipelines/{typical}/state")).await?;

    // A new agent for the filled store's CA (the first one's is gone).
    tokio::task::block_in_place(|| -> Result<()> {
        let token = cluster.join_token_with(Some(1), &[], &[])?;
        let child = cluster.spawn_agent(&cluster.agent_dir(cluster.agent_count()), Some(&token), &[])?;
        cluster.adopt_agent(child);
        cluster.wait_for_agents(1)
    })?;
    let full = overhead::measure(cluster, &api, FULL, p.actions, p.runs).await?;
    let full_gaps: Vec<Duration> = full.iter().flat_map(|m| m.gaps.iter().copied()).collect();
    let (e50, e99) = (ms(percentile(empty_gaps, 50.0)), ms(percentile(empty_gaps, 99.0)));
    report.figure(Figure::new("per-action overhead p50, empty store", e50, "ms"));
    report.figure(Figure::new("per-action overhead p99, empty store", e99, "ms"));
    // "No worse": within a tenth of a millisecond or a fifth of the empty
    // store's figure, whichever is larger (run-to-run noise on a shared machine).
    let within = |empty: f64| empty + (empty * 0.2).max(0.1);
    report.figure(
        Figure::new("per-action overhead p50, full store", ms(percentile(&full_gaps, 50.0)), "ms")
            .budget(Budget::Below(within(e50))),
    );
    report.figure(
        Figure::new("per-action overhead p99, full store", ms(percentile(&full_gaps, 99.0)), "ms")
            .budget(Budget::Below(within(e99))),
    );
    report.note(format!(
        "{listed} pipelines on the first page of the list; {} requests per latency figure, one after the other; \
         the store holds {} executions of {} pipelines, {} of them of {long}",
        p.samples, p.executions, p.pipelines, p.long
    ));
    Ok(())
}

/// The p50 and p99 of `samples` GETs of `path`, one after the other.
async fn latency(report: &mut ScenarioReport, api: &Api, samples: usize, what: &str, path: &str) -> Result<()> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        api.get(path).await?;
        times.push(t.elapsed());
    }
    report.figure(Figure::new(&format!("{what} p50"), ms(percentile(&times, 50.0)), "ms"));
    report.figure(Figure::new(&format!("{what} p99"), ms(percentile(&times, 99.0)), "ms").budget(Budget::Below(10.0)));
    Ok(())
}

/// A `nextToken` of `name`'s history at least `depth` executions deep,
/// found by paging (at most 1,000 at a time) as a client would; and its depth.
async fn deep_token(api: &Api, name: &str, depth: usize) -> Result<(String, usize)> {
    let (mut seen, page) = (0, depth.clamp(1, 1000));
    let mut token: Option<String> = None;
    while seen < depth.max(1) {
        let query = match &token {
            Some(t) => format!("?maxResults={page}&nextToken={t}"),
            None => format!("?maxResults={page}"),
        };
        let page = api.get(&format!("/pipelines/{name}/executions{query}")).await?;
        seen += page["pipelineExecutionSummaries"].as_array().map_or(0, Vec::len);
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => bail!("the history of {name} ended after {seen} executions, before {depth}"),
        }
    }
    Ok((token.expect("at least one page"), seen))
}

fn pipeline_name(i: usize) -> String {
    format!("scale-{i:05}")
}

/// Where the filled data dir of these sizes is kept between runs.
fn cache_dir(p: &Params) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("sluice-bench").join(format!(
        "scale-schema{}-{}p-{}e-{}l",
        sluice::store::schema::CURRENT,
        p.pipelines,
        p.executions,
        p.long
    )))
}

/// Runs the template once, then fills a copy of the data dir with copies
/// of it and keeps that copy as the cache. What it took, as JSON.
async fn fill(cluster: &mut Cluster, api: &Api, p: &Params, cache: &Path) -> Result<Value> {
    let mut events = api.events(TEMPLATE).await?;
    let mut declaration: Value = serde_json::from_str(&noop_pipeline(cluster, TEMPLATE, 2, Order::Sequential, "QUEUED"))?;
    // Triggered by webhooks or by hand, as pipelines of a large installation
    // mostly are: no polling of 10,000 sources in the measured controller.
    declaration["pipeline"]["stages"][0]["actions"][0]["pollIntervalSeconds"] = json!(0);
    api.create_pipeline(&declaration.to_string()).await?;
    collect_until(&mut events, WAIT, "the template execution", executions_ended(1)).await?;

    let started = Instant::now();
    let work = cache.with_extension("filling");
    tokio::task::block_in_place(|| -> Result<()> {
        // A consistent data dir: the controller is stopped while it is copied.
        cluster.kill_controller();
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&cluster.data_dir(), &work.join("controller"))?;
        write_copies(&work.join("controller/sluice.db"), p)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = ["sluice.db", "sluice.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(work.join("controller").join(f)).ok())
        .map(|m| m.len())
        .sum();
    let filled = json!({"seconds": seconds, "bytes": bytes, "pipelines": p.pipelines, "executions": p.executions});
    std::fs::write(work.join("filled.json"), filled.to_string())?;
    let _ = std::fs::remove_dir_all(cache);
    std::fs::rename(&work, cache).with_context(|| format!("keeping the filled store in {}", cache.display()))?;
    eprintln!("scale: filled {} in {seconds:.1} s ({} MiB)", cache.display(), bytes >> 20);
    Ok(filled)
}

/// Writes `p.pipelines` copies of the template pipeline and `p.executions`
/// copies of its execution (with their log lines) into the store at `db`.
fn write_copies(db: &Path, p: &Params) -> Result<()> {
    let mut store = SqliteStore::open(db, Durability::Process)?;
    let template = store.pipeline(TEMPLATE, None)?.context("the template pipeline is not stored")?;
    let execution = store.executions(TEMPLATE, 1)?.pop().context("the template execution is not stored")?;
    if execution.status.as_str() != "Succeeded" {
        bail!("the template execution ended {}", execution.status.as_str());
    }
    let logs = store.logs(&execution.id.0)?;
    let mut definition: Value = serde_json::from_str(&template.definition)?;
    let pipelines: Vec<Change> = (0..p.pipelines)
        .map(|i| {
            definition["pipeline"]["name"] = json!(pipeline_name(i));
            Change::Pipeline(PipelineRecord {
                name: pipeline_name(i),
                definition: definition.to_string(),
                ..template.clone()
            })
        })
        .collect();
    store.apply(&pipelines)?;

    // The execution as text with its id and pipeline as placeholders:
    // every job id and reference inside follows the copy's.
    let text = serde_json::to_string(&execution)?
        .replace(&execution.id.0, "@ID@")
        .replace(&format!("\"{TEMPLATE}\""), "\"@PIPELINE@\"");
    let newest = sluice::driver::now_ms() - 86_400_000;
    let others = p.executions - p.long;
    let per_other = others.div_ceil(p.pipelines - 1);
    let mut batch = Vec::with_capacity(BATCH * (1 + logs.len()));
    let mut written = 0usize;
    // The long history first, then the others a few each.
    let plan = std::iter::repeat_n(0, p.long)
        .enumerate()
        .chain((0..others).map(|n| (n / (p.pipelines - 1), 1 + n % (p.pipelines - 1))));
    for (n, (ordinal, pipeline)) in plan.enumerate() {
        let id = format!("{pipeline:08x}-5ca1-4e00-8000-{n:012x}");
        let name = pipeline_name(pipeline);
        let count = if pipeline == 0 { p.long } else { per_other };
        let mut copy: Execution = serde_json::from_str(&text.replace("@ID@", &id).replace("@PIPELINE@", &name))?;
        copy.id = ExecutionId(id.clone());
        copy.started_at = newest - (count - ordinal) as u64 * SPACING_MS;
        copy.updated_at = copy.started_at + 5_000;
        copy.ordinal = ordinal as u64 + 1;
        // Each execution's own artifacts, as real ones have.
        for (i, a) in copy.artifacts.values_mut().enumerate() {
            *a = ArtifactRef { digest: format!("{:056x}{:08x}", n, i), size: a.size };
        }
        batch.push(Change::Execution(std::sync::Arc::new(copy)));
        for line in &logs {
            batch.push(Change::Log(LogLine {
                job_id: line.job_id.replace(&execution.id.0, &id),
                execution_id: id.clone(),
                seq: line.seq,
                text: line.text.clone(),
            }));
        }
        written += 1;
        if written.is_multiple_of(BATCH) {
            store.apply(&std::mem::take(&mut batch))?;
        }
    }
    store.apply(&batch)?;
    Ok(())
}

/// Copies a directory tree (regular files and directories).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    // The data dir is the owner's alone, and the controller checks it.
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
