//! The agent's metrics and health (issue 17, obs), served on `--metrics
//! ADDR` over plain HTTP without authentication (no secret in them):
//! `/metrics` in the Prometheus text format, `/healthz` (the process
//! answers, with what it knows of itself as JSON) and `/readyz` (503 while
//! it is not connected to the controller).

use crate::jobs::Jobs;
use crate::renewal::Renewal;
use crate::transfer::Link;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sluice_protocol::metrics::{Counter, Histogram, Kind, Text};
use std::sync::{Arc, LazyLock};

/// What the agent counts, wherever it does the work (one process, one set).
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Plugin calls: actions, and source polls.
    pub action_call: Histogram,
    pub poll_call: Histogram,
    /// Compiling a plugin (not loading an already compiled one).
    pub compile: Histogram,
    /// Connections to the controller made, and lost.
    pub connects: Counter,
    pub disconnects: Counter,
}

pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::default);

/// What the endpoints read.
#[derive(Clone)]
pub struct Health {
    pub link: Link,
    pub jobs: Arc<Jobs>,
    pub slots: u32,
    pub renewal: Arc<Renewal>,
}

impl Health {
    fn metrics(&self) -> String {
        let m = &*METRICS;
        let mut t = Text::default();
        t.single(
            "sluice_agent_connected",
            "Whether the agent is connected to the controller.",
            Kind::Gauge,
            f64::from(u8::from(self.link.is_connected())),
        );
        t.single(
            "sluice_agent_connects_total",
            "Connections to the controller made.",
            Kind::Counter,
            m.connects.get() as f64,
        );
        t.single(
            "sluice_agent_disconnects_total",
            "Connections to the controller lost.",
            Kind::Counter,
            m.disconnects.get() as f64,
        );
        t.single("sluice_agent_slots", "Actions the agent runs at once.", Kind::Gauge, f64::from(self.slots));
        t.single(
            "sluice_agent_jobs_running",
            "Jobs the agent runs (or whose results wait for the controller).",
            Kind::Gauge,
            self.jobs.running_ids().len() as f64,
        );
        t.family("sluice_agent_plugin_call_seconds", "How long plugin calls took, by kind.", Kind::Histogram)
            .histogram("sluice_agent_plugin_call_seconds", &[("kind", "action")], &m.action_call.snapshot())
            .histogram("sluice_agent_plugin_call_seconds", &[("kind", "poll")], &m.poll_call.snapshot());
        t.family("sluice_agent_plugin_compile_seconds", "How long compiling a plugin took.", Kind::Histogram).histogram(
            "sluice_agent_plugin_compile_seconds",
            &[],
            &m.compile.snapshot(),
        );
        if let Some(expiry) = self.renewal.expires_at() {
            t.family("sluice_certificate_expiry_seconds", "When a certificate expires (Unix time).", Kind::Gauge).sample(
                "sluice_certificate_expiry_seconds",
                &[("certificate", "agent")],
                expiry as f64,
            );
        }
        t.finish()
    }

    fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "connected": self.link.is_connected(),
            "slots": self.slots,
            "running": self.jobs.running_ids(),
        })
    }
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                ([(header::CONTENT_TYPE, sluice_protocol::metrics::CONTENT_TYPE)], h.metrics()).into_response()
            }),
        )
        .route("/healthz", get(|State(h): State<Health>| async move { axum::Json(h.health()) }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Ready when connected to the controller: an agent that is not takes no work.
async fn readyz(State(h): State<Health>) -> Response {
    if h.link.is_connected() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not connected to the controller\n").into_response()
    }
}

/// Binds `--metrics ADDR` (before the agent enrolls or connects, so that a
/// taken port stops it at once) and serves [`router`] once `health` is known.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics port {addr}"))
}

pub fn serve(listener: tokio::net::TcpListener, health: Health) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::warn!("the metrics listener stopped: {e}");
        }
    });
}
