//! Metrics and readiness (issue 17, obs): what the controller counts
//! outside the driver (atomics, updated by whoever does the work), the
//! `/metrics` and `/readyz` handlers, and the `--metrics ADDR` listener.
//!
//! A scrape asks the driver for its part ([`Command::Metrics`]): counts it
//! keeps in plain fields of its own task (no lock, no atomic: it is the only
//! writer) and gauges read off its state at that moment (executions in
//! progress, actions waiting and why, agents). The same trip through the
//! driver's queue is the readiness check: a driver that does not answer
//! within [`READY_BOUND`] is not making progress.

use crate::driver::command::Command;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sluice_protocol::metrics::{Counter, Histogram, Kind, Text};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// How long the driver has to answer a readiness or metrics question
/// before the controller reports itself not ready. The driver runs each
/// command to completion; one taking this long is stuck (or the disk is).
pub const READY_BOUND: Duration = Duration::from_secs(5);

/// The permission that reading `/metrics` on the API takes. In the read set
/// of every built-in role (it is a `Get`): the figures name pipelines,
/// which any reader may list, and nothing secret.
pub const PERMISSION: &str = "sluice:GetMetrics";

/// Counts kept outside the driver, shared by the listeners, the fleet
/// endpoint and the driver's commit.
#[derive(Debug, Default)]
pub struct Metrics {
    /// How long a store transaction took to commit.
    pub store_commit: Histogram,
    /// Artifact bytes agents uploaded to the controller.
    pub artifact_bytes_in: Counter,
    /// Artifact bytes the controller sent to agents.
    pub artifact_bytes_out: Counter,
    /// Webhook deliveries accepted, and refused (bad signature, unknown
    /// pipeline, malformed).
    pub webhook_deliveries: Counter,
    pub webhook_refusals: Counter,
    /// API requests by status class (1xx..5xx).
    pub api_requests: [Counter; 5],
    /// Expiry of the API's certificate (Unix seconds), when it speaks TLS.
    pub api_cert_expiry: std::sync::OnceLock<Arc<crate::https::ServerCert>>,
    /// Expiry of the CA's certificate (Unix seconds).
    pub ca_expiry: std::sync::atomic::AtomicU64,
}

impl Metrics {
    pub fn count_request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.api_requests[class].inc();
    }

    /// The process's own figures, after the driver's part.
    fn write(&self, t: &mut Text) {
        t.family("sluice_store_commit_seconds", "How long a store transaction took to commit.", Kind::Histogram).histogram(
            "sluice_store_commit_seconds",
            &[],
            &self.store_commit.snapshot(),
        );
        t.family("sluice_artifact_bytes_total", "Artifact bytes moved between agents and the controller.", Kind::Counter)
            .sample("sluice_artifact_bytes_total", &[("direction", "in")], self.artifact_bytes_in.get() as f64)
            .sample("sluice_artifact_bytes_total", &[("direction", "out")], self.artifact_bytes_out.get() as f64);
        t.family("sluice_webhook_deliveries_total", "Webhook deliveries, accepted or refused.", Kind::Counter)
            .sample("sluice_webhook_deliveries_total", &[("result", "accepted")], self.webhook_deliveries.get() as f64)
            .sample("sluice_webhook_deliveries_total", &[("result", "refused")], self.webhook_refusals.get() as f64);
        t.family("sluice_api_requests_total", "API requests answered, by status class.", Kind::Counter);
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            t.sample("sluice_api_requests_total", &[("code", class)], self.api_requests[i].get() as f64);
        }
        t.family(
            "sluice_certificate_expiry_seconds",
            "When a certificate of the controller expires (Unix time).",
            Kind::Gauge,
        );
        let ca = self.ca_expiry.load(std::sync::atomic::Ordering::Relaxed);
        if ca > 0 {
            t.sample("sluice_certificate_expiry_seconds", &[("certificate", "ca")], ca as f64);
        }
        if let Some((_, expiry)) = self.api_cert_expiry.get().and_then(|cert| cert.leaf()) {
            t.sample("sluice_certificate_expiry_seconds", &[("certificate", "api")], unix_seconds(expiry) as f64);
        }
    }
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why the controller is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the driver did not answer within {}s: it is not making progress", READY_BOUND.as_secs())]
    Stalled,
    #[error("the driver has stopped")]
    Stopped,
}

/// Asks the driver something through its queue and waits at most
/// [`READY_BOUND`] for the answer, the queueing included (a full queue
/// that does not drain is no progress either).
pub async fn through_driver<T>(
    driver: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, NotReady> {
    through_driver_within(driver, READY_BOUND, command).await
}

async fn through_driver_within<T>(
    driver: &mpsc::Sender<Command>,
    bound: Duration,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, NotReady> {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        driver.send(command(reply)).await.map_err(|_| NotReady::Stopped)?;
        answer.await.map_err(|_| NotReady::Stopped)
    };
    tokio::time::timeout(bound, asked).await.map_err(|_| NotReady::Stalled)?
}

/// `/readyz`: `ok` once the driver answers a ping, 503 with the reason
/// when it does not in time.
pub async fn readyz(driver: &mpsc::Sender<Command>) -> Response {
    readyz_within(driver, READY_BOUND).await
}

async fn readyz_within(driver: &mpsc::Sender<Command>, bound: Duration) -> Response {
    match through_driver_within(driver, bound, |reply| Command::Ping { reply }).await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

/// A whole scrape: the driver's part (or `sluice_driver_up 0` when it does
/// not answer: the rest is still worth having), then the process's.
pub async fn scrape(driver: &mpsc::Sender<Command>, metrics: &Metrics) -> Response {
    let mut text = Text::default();
    let up = match through_driver(driver, |reply| Command::Metrics { reply }).await {
        Ok(part) => {
            text = part;
            1.0
        }
        Err(_) => 0.0,
    };
    text.single("sluice_driver_up", "Whether the driver answered this scrape in time.", Kind::Gauge, up);
    metrics.write(&mut text);
    ([(header::CONTENT_TYPE, sluice_protocol::metrics::CONTENT_TYPE)], text.finish()).into_response()
}

/// What the `--metrics ADDR` listener serves.
#[derive(Clone)]
pub struct Exposed {
    pub driver: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
}

/// The `--metrics ADDR` listener's routes: `/metrics`, `/readyz` and
/// `/healthz`, over plain HTTP without authentication. They carry no
/// secret: counts, pipeline names, certificate expiry times.
pub fn router(exposed: Exposed) -> Router {
    Router::new()
        .route("/metrics", get(|State(e): State<Exposed>| async move { scrape(&e.driver, &e.metrics).await }))
        .route("/readyz", get(|State(e): State<Exposed>| async move { readyz(&e.driver).await }))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(exposed)
}

/// Serves [`router`] on `addr` (bound before the controller says it started).
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics port {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_driver_that_does_not_answer_is_not_ready() {
        let (driver, mut rx) = mpsc::channel(4);
        // Takes the command and sits on it, as a stuck driver would.
        let held = tokio::spawn(async move {
            let command = rx.recv().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(command);
        });
        let bound = Duration::from_millis(100);
        let answer = through_driver_within(&driver, bound, |reply| Command::Ping { reply }).await;
        assert_eq!(answer, Err(NotReady::Stalled));
        // A second ask waits in the queue behind the first: no answer either.
        let response = readyz_within(&driver, bound).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        held.abort();
    }

    #[tokio::test]
    async fn a_driver_that_answers_is_ready_and_a_stopped_one_is_not() {
        let (driver, mut rx) = mpsc::channel::<Command>(4);
        let serving = tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                if let Command::Ping { reply } = command {
                    let _ = reply.send(());
                }
            }
        });
        assert_eq!(readyz(&driver).await.status(), StatusCode::OK);
        serving.abort();
        let _ = serving.await;
        assert_eq!(through_driver(&driver, |reply| Command::Ping { reply }).await, Err(NotReady::Stopped));
    }

    #[test]
    fn requests_are_counted_by_class() {
        let m = Metrics::default();
        for status in [200, 204, 404, 503, 99, 700] {
            m.count_request(status);
        }
        let counts: Vec<u64> = m.api_requests.iter().map(Counter::get).collect();
        assert_eq!(counts, vec![1, 2, 0, 1, 2]);
    }
}
