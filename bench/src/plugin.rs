//! `plugin`: the runtime in this process with the built-in `noop`
//! component: a warm call (fresh store with its sandbox, instantiate from
//! the `InstancePre`, `execute`) with the pooling allocator and without,
//! a cold compile, and a load from the on-disk compile cache.

use crate::report::{Budget, Figure, ScenarioReport, ms, percentile, us};
use anyhow::{Context as _, Result, bail};
use serde_json::json;
use sluice_runtime::{Allocation, Cancel, Grants, Invocation, LogSink, Outcome, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Params {
    pub iterations: usize,
}

/// Calls made before measuring, so that caches and pools are warm.
const WARM_UP: usize = 50;
/// Loads from the compile cache measured (each in a new runtime).
const CACHED_LOADS: usize = 5;

fn noop() -> Result<&'static [u8]> {
    sluice_builtins::BUILTINS.iter().find(|b| b.provider == "noop").map(|b| b.wasm).context("no noop built-in")
}

pub fn run(p: &Params) -> Result<ScenarioReport> {
    let dir = tempfile::tempdir()?;
    let wasm = noop()?;
    let mut report = ScenarioReport::new("plugin", json!({"iterations": p.iterations, "plugin": "noop"}));

    for (label, allocation) in
        [("pooling", Allocation::Pooling { concurrent_calls: 4 }), ("on-demand", Allocation::OnDemand)]
    {
        let runtime = Runtime::new(RuntimeConfig { allocation, ..Default::default() })?;
        if runtime.allocation() != allocation {
            report.note(format!("{label}: the runtime fell back to {:?}", runtime.allocation()));
        }
        let times = warm_calls(&runtime, wasm, dir.path(), p.iterations)?;
        let p50 = Figure::new(&format!("warm instantiate+call p50, {label}"), us(percentile(&times, 50.0)), "us");
        report.figure(if label == "pooling" { p50.budget(Budget::Below(20.0)) } else { p50 });
        report.figure(Figure::new(&format!("warm instantiate+call p99, {label}"), us(percentile(&times, 99.0)), "us"));
    }

    let cold = Runtime::new(RuntimeConfig::default())?;
    let started = Instant::now();
    cold.load(wasm, None)?;
    report.figure(Figure::new("cold compile", ms(started.elapsed()), "ms"));

    let cache = dir.path().join("cache");
    Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..Default::default() })?.load(wasm, None)?;
    let mut loads = Vec::new();
    for _ in 0..CACHED_LOADS {
        let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(cache.clone()), ..Default::default() })?;
        let started = Instant::now();
        runtime.load(wasm, None)?;
        loads.push(started.elapsed());
    }
    report.figure(Figure::new("load from the compile cache", ms(percentile(&loads, 50.0)), "ms"));

    match sluice_test_plugins::try_test_plugin("wordcount-py") {
        Ok(path) => python_loads(&mut report, &std::fs::read(&path)?, &dir.path().join("py-cache"))?,
        Err(why) => report.note(format!("no Python figure: {why}")),
    }
    Ok(report)
}

/// A Python plugin (componentize-py bundles the interpreter: tens of MB)
/// loaded by a fresh runtime whose compile cache holds it, as an agent
/// does at its first call after a restart: by digest from the cache, and
/// for comparison from the component's bytes (hashed, then the cache).
fn python_loads(report: &mut ScenarioReport, wasm: &[u8], cache: &std::path::Path) -> Result<()> {
    let digest = sluice_runtime::digest(wasm);
    let config = || RuntimeConfig { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    let started = Instant::now();
    Runtime::new(config())?.load(wasm, Some(&digest))?;
    report.figure(Figure::new("Python plugin: cold compile", ms(started.elapsed()), "ms"));
    report.note(format!("the Python plugin is {:.1} MB", wasm.len() as f64 / 1e6));
    let (mut by_digest, mut by_bytes) = (Vec::new(), Vec::new());
    for _ in 0..CACHED_LOADS {
        let runtime = Runtime::new(config())?;
        let started = Instant::now();
        runtime.load_compiled(&digest)?.context("the compile cache lost the Python plugin")?;
        by_digest.push(started.elapsed());
        let runtime = Runtime::new(config())?;
        let started = Instant::now();
        runtime.load(wasm, Some(&digest))?;
        by_bytes.push(started.elapsed());
    }
    report.figure(
        Figure::new("Python plugin: load from the compile cache p50", ms(percentile(&by_digest, 50.0)), "ms")
            .budget(Budget::Below(50.0)),
    );
    report.figure(Figure::new(
        "Python plugin: verify bytes + load from the cache p50",
        ms(percentile(&by_bytes, 50.0)),
        "ms",
    ));
    Ok(())
}

/// Times `iterations` calls of `execute` on a warm runtime, each in a fresh
/// store as an agent makes them.
fn warm_calls(runtime: &Arc<Runtime>, wasm: &[u8], dir: &std::path::Path, iterations: usize) -> Result<Vec<Duration>> {
    let plugin = runtime.load(wasm, None)?;
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let inv = Invocation {
        pipeline: "bench".into(),
        execution_id: "bench".into(),
        stage: "Noop".into(),
        action: "N1".into(),
        attempt: 1,
        configuration: vec![],
        variables: vec![],
        inputs: vec![],
        outputs: vec![],
        workspace,
        grants: Grants::default(),
        secrets: Default::default(),
        timeout: Duration::from_secs(60),
        cancel: Cancel::default(),
    };
    let log: Arc<dyn LogSink> = Arc::new(|_: &str| {});
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut times = Vec::with_capacity(iterations);
    for i in 0..WARM_UP + iterations {
        let started = Instant::now();
        let outcome = runtime.execute_once(&plugin, &inv, log.clone(), deadline, None);
        let elapsed = started.elapsed();
        if !matches!(outcome, Outcome::Succeeded { .. }) {
            bail!("noop did not succeed: {outcome:?}");
        }
        if i >= WARM_UP {
            times.push(elapsed);
        }
    }
    Ok(times)
}
