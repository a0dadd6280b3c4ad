//! `fleet`: N lightweight agents enroll with one join token (`--uses N`),
//! then connect over QUIC with mutual TLS, say hello and stay idle. The
//! controller's memory per agent is the growth of its resident set from
//! before the connections to when all N are connected and settled, over N.

use crate::client::{self, Connected, Enrolled};
use crate::report::{Budget, Figure, ScenarioReport, rss_kib};
use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt as _;
use serde_json::json;
use sluice_protocol::JoinToken;
use sluice_tests::Cluster;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct Params {
    pub agents: usize,
    /// Handshakes in flight at once.
    pub parallel: usize,
}

/// Connections per client endpoint (one UDP socket and one driver each).
const CONNECTIONS_PER_ENDPOINT: usize = 1000;
/// How long the controller gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    let cluster = tokio::task::block_in_place(|| Cluster::new().start())?;
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
    let connected: Vec<Result<Connected>> = futures_util::stream::iter(enrolled.iter().enumerate())
        .map(|(i, e)| client::connect(&endpoints[i % endpoints.len()], fleet, e))
        .buffer_unordered(p.parallel)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let connected: Vec<Connected> = connected.into_iter().collect::<Result<_>>()?;
    tokio::time::sleep(SETTLE).await;
    let still = connected.iter().filter(|c| c.conn.close_reason().is_none()).count();
    if still != p.agents {
        bail!("{} of {} connections closed while idle", p.agents - still, p.agents);
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
    report.figure(Figure::new("idle agents held", p.agents as f64, "agents").budget(Budget::AtLeast(10_000.0)));
    report.figure(
        Figure::new("controller memory per idle agent", after.saturating_sub(before) as f64 / p.agents as f64, "KiB")
            .budget(Budget::Below(100.0)),
    );
    report.figure(Figure::new(
        "mutual-TLS handshakes (with hello) per second",
        p.agents as f64 / connect_time.as_secs_f64(),
        "1/s",
    ));
    report.figure(Figure::new("enrollments per second", p.agents as f64 / enroll_time.as_secs_f64(), "1/s"));
    report.note(format!("controller VmRSS {before} KiB before the connections, {after} KiB with {} idle agents", p.agents));
    drop(connected);
    for e in &endpoints {
        e.close(0u32.into(), b"done");
    }
    Ok(report)
}
