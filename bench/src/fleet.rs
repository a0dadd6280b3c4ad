//! `fleet`: N lightweight agents enroll with one join token (`--uses N`),
//! then connect over QUIC with mutual TLS, say hello and stay idle. The
//! controller's memory per agent is the growth of its resident set from
//! before the connections to when all N are connected and settled, over N.
//!
//! Then the reconnect storm (issue 19, scale): the controller is killed
//! and started again on its data dir and fleet port, and every agent
//! reconnects at once (as many handshakes in flight as `--storm-parallel`),
//! retrying what fails. Measured from the restart: until the API serves,
//! until every agent is back, and until work flows (a job of an execution
//! started at the restart reaches the one agent whose labels it needs,
//! which reconnects in the middle of the storm).

use crate::client::{self, Connected, Enrolled};
use crate::pipelines::{Order, noop_pipeline};
use crate::report::{Budget, Figure, ScenarioReport, ms, rss_kib};
use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sluice_protocol::JoinToken;
use sluice_tests::Cluster;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Params {
    pub agents: usize,
    /// Handshakes in flight at once.
    pub parallel: usize,
    /// Handshakes in flight at once during the reconnect storm (0: no storm).
    pub storm_parallel: usize,
}

/// Connections per client endpoint (one UDP socket and one driver each).
const CONNECTIONS_PER_ENDPOINT: usize = 1000;
/// How long the controller gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    let mut cluster = tokio::task::block_in_place(|| Cluster::new().start())?;
    let pid = cluster.controller_pid().context("controller pid")?;
    let fleet: SocketAddr = cluster.fleet.parse()?;
    let token = tokio::task::block_in_place(|| cluster.join_token(Some(p.agents as u32)))?;
    let token = JoinToken::parse(&token).map_err(anyhow::Error::msg)?;
    let roots = client::roots(&std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt"))?)?;
    let endpoints: Vec<quinn::Endpoint> =
        (0..p.agents.div_ceil(CONNECTIONS_PER_ENDPOINT).max(1)).map(|_| client::endpoint()).collect::<Result<_>>()?;

    let started = Instant::now();
    let enrolled: Vec<Result<Enrolled>> = futures_util::stream::iter(0..p.agents)
        .map(|i| client::enroll(&endpoints[i % endpoints.len()], fleet, roots.clone(), &token))
        .buffer_unordered(p.parallel)
        .collect()
        .await;
    let enrolled: Vec<Enrolled> = enrolled.into_iter().collect::<Result<_>>()?;
    let enroll_time = started.elapsed();

    tokio::time::sleep(SETTLE).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    // A handshake that times out on a loaded machine is tried again, as an
    // agent would (counted below).
    let retried = AtomicUsize::new(0);
    let connected: Vec<Result<Connected>> = futures_util::stream::iter(enrolled.iter().enumerate())
        .map(|(i, e)| connect_retrying(&endpoints[i % endpoints.len()], fleet, e, ("bench", "idle"), &retried))
        .buffer_unordered(p.parallel)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let connected: Vec<Connected> = connected.into_iter().collect::<Result<_>>()?;
    tokio::time::sleep(SETTLE).await;
    let still = connected.iter().filter(|c| c.conn.close_reason().is_none()).count();
    if still != p.agents {
        bail!("{} of {} connections closed while idle: {}", p.agents - still, p.agents, close_reasons(&connected));
    }
    let after = rss_kib(pid)?;
    let listed = tokio::task::block_in_place(|| cluster.agents_json())?;
    let live = listed.iter().filter(|a| a["connected"] == true).count();
    if live != p.agents {
        bail!("the controller lists {live} connected agents of {}", p.agents);
    }

    let mut report = ScenarioReport::new(
        "fleet",
        json!({"agents": p.agents, "parallel": p.parallel, "clientEndpoints": endpoints.len()}),
    );
    report.figure(Figure::new("idle agents held", p.agents as f64, "agents").budget(Budget::AtLeast(p.agents as f64)));
    report.figure(
        Figure::new("controller memory per idle agent", after.saturating_sub(before) as f64 / p.agents as f64, "KiB")
            .budget(Budget::Below(40.0)),
    );
    report.figure(Figure::new(
        "mutual-TLS handshakes (with hello) per second",
        p.agents as f64 / connect_time.as_secs_f64(),
        "1/s",
    ));
    report.figure(Figure::new("enrollments per second", p.agents as f64 / enroll_time.as_secs_f64(), "1/s"));
    report.figure(Figure::new(
        "handshakes that failed and were retried",
        retried.load(Ordering::Relaxed) as f64,
        "attempts",
    ));
    report.note(format!("controller VmRSS {before} KiB before the connections, {after} KiB with {} idle agents", p.agents));
    if p.storm_parallel > 0 {
        let storm = Storm { fleet, roots, endpoints: &endpoints, parallel: p.storm_parallel };
        storm.run(&mut cluster, connected, &enrolled, &mut report).await?;
    } else {
        drop(connected);
    }
    for e in &endpoints {
        e.close(0u32.into(), b"done");
    }
    Ok(report)
}

// Scale (issue 19, scale): the reconnect storm.
/// The pipeline whose first job shows that work flows again.
const STORM_PIPELINE: &str = "storm";
/// The label only the storm's worker agent has.
const WORKER_LABEL: (&str, &str) = ("role", "storm");
/// How often one agent tries to reconnect before the storm counts as failed.
const ATTEMPTS: usize = 20;

struct Storm<'a> {
    fleet: SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    endpoints: &'a [quinn::Endpoint],
    parallel: usize,
}

impl Storm<'_> {
    async fn run(
        &self,
        cluster: &mut Cluster,
        connected: Vec<Connected>,
        enrolled: &[Enrolled],
        report: &mut ScenarioReport,
    ) -> Result<()> {
        // The worker: enrolled with a token of its own label, which only
        // the storm pipeline's actions ask for.
        let label = format!("{}={}", WORKER_LABEL.0, WORKER_LABEL.1);
        let token = tokio::task::block_in_place(|| cluster.join_token_with(Some(1), &[&label], &[]))?;
        let token = JoinToken::parse(&token).map_err(anyhow::Error::msg)?;
        let worker = client::enroll(&self.endpoints[0], self.fleet, self.roots.clone(), &token).await?;
        let mut declaration: Value =
            serde_json::from_str(&noop_pipeline(cluster, STORM_PIPELINE, 1, Order::Sequential, "PARALLEL"))?;
        for stage in declaration["pipeline"]["stages"].as_array_mut().context("stages")? {
            for action in stage["actions"].as_array_mut().context("actions")? {
                action["agentLabels"] = json!({WORKER_LABEL.0: WORKER_LABEL.1});
            }
        }
        declaration["pipeline"]["stages"][0]["actions"][0]["pollIntervalSeconds"] = json!(0);
        let file = cluster.dir.path().join("storm.json");
        std::fs::write(&file, declaration.to_string())?;
        sluice(cluster, &["pipeline", "create", &file.display().to_string()])?;

        tokio::task::block_in_place(|| cluster.kill_controller());
        drop(connected);
        let restarted = Instant::now();
        tokio::task::block_in_place(|| cluster.start_controller())?;
        let pid = cluster.controller_pid().context("controller pid")?;
        let bound = restarted.elapsed();

        let retries = Arc::new(AtomicUsize::new(0));
        let flows = async {
            let mut agent = self.reconnect(&worker, 0, WORKER_LABEL, &retries).await?;
            let api = crate::api::Api::new(cluster);
            let serving = loop {
                if api.start(STORM_PIPELINE).await.is_ok() {
                    break restarted.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            agent.next_job().await?;
            anyhow::Ok((serving, restarted.elapsed(), agent))
        };
        let storm = async {
            let back: Vec<Result<Connected>> = futures_util::stream::iter(enrolled.iter().enumerate())
                .map(|(i, e)| self.reconnect(e, i, ("bench", "idle"), &retries))
                .buffer_unordered(self.parallel)
                .collect()
                .await;
            let back: Vec<Connected> = back.into_iter().collect::<Result<_>>()?;
            anyhow::Ok((back, restarted.elapsed()))
        };
        let (flows, storm) = tokio::join!(flows, storm);
        let ((serving, flowing, _worker), (back, all_back)) = (flows?, storm?);
        let listed = tokio::task::block_in_place(|| cluster.agents_json())?;
        let live = listed.iter().filter(|a| a["connected"] == true).count();
        if live < back.len() {
            bail!(
                "after the storm the controller lists {live} connected agents of {}; {}",
                back.len(),
                close_reasons(&back)
            );
        }
        let n = back.len() as f64;
        report.figure(Figure::new("storm: restart until the fleet port is bound", ms(bound), "ms"));
        report.figure(Figure::new("storm: restart until the API serves", ms(serving), "ms"));
        report.figure(Figure::new("storm: restart until every agent is back", all_back.as_secs_f64(), "s"));
        report.figure(Figure::new("storm: restart until work flows (a job reaches an agent)", ms(flowing), "ms"));
        report.figure(Figure::new("storm: reconnections per second", n / (all_back - bound).as_secs_f64(), "1/s"));
        report.figure(Figure::new("storm: failed attempts, retried", retries.load(Ordering::Relaxed) as f64, "attempts"));
        report.figure(Figure::new("storm: controller VmRSS after", rss_kib(pid)? as f64 / 1024.0, "MiB"));
        report.note(format!(
            "storm: all {} agents reconnect at once with {} handshakes in flight (real agents notice a killed controller \
             within the 12 s idle timeout and back off; this is the worst case of all noticing together)",
            back.len(),
            self.parallel
        ));
        drop(back);
        Ok(())
    }

    /// One agent's reconnection on its client endpoint.
    async fn reconnect(
        &self,
        enrolled: &Enrolled,
        i: usize,
        label: (&str, &str),
        retries: &AtomicUsize,
    ) -> Result<Connected> {
        connect_retrying(&self.endpoints[i % self.endpoints.len()], self.fleet, enrolled, label, retries).await
    }
}

/// A connection tried again (after a growing pause) until it is welcomed:
/// the controller may drop handshakes under load; `retries` counts failures.
async fn connect_retrying(
    endpoint: &quinn::Endpoint,
    fleet: SocketAddr,
    enrolled: &Enrolled,
    label: (&str, &str),
    retries: &AtomicUsize,
) -> Result<Connected> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        match client::connect_with(endpoint, fleet, enrolled, label).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                retries.fetch_add(1, Ordering::Relaxed);
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
        }
    }
    Err(last.expect("at least one attempt")).context(format!("agent {} did not connect", enrolled.agent_id))
}

/// Why connections closed, by reason (the first few kinds): which side
/// gave up, and how.
fn close_reasons(connections: &[Connected]) -> String {
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for reason in connections.iter().filter_map(|c| c.conn.close_reason()) {
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    if reasons.is_empty() {
        return "none of the bench's connections is closed".into();
    }
    let reasons: Vec<String> = reasons.iter().take(4).map(|(r, n)| format!("{n} x {r}")).collect();
    format!("closed: {}", reasons.join("; "))
}

fn sluice(cluster: &Cluster, args: &[&str]) -> Result<()> {
    let out = tokio::task::block_in_place(|| cluster.sluice(args));
    if !out.status.success() {
        bail!("sluice {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
