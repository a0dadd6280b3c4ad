//! Metrics and readiness (issue 17, obs): what the controller counts
//! outside the driver (atomics, updated by whoever does the work), the
//! `/metrics` and `/readyz` handlers, and the `--metrics ADDR` listener.
//!
//! Neither a scrape nor a readiness probe goes through the driver's queue:
//! both are unauthenticated on `--metrics` (and `/readyz` on the API), so a
//! flood of them must cost the driver nothing, and a command per request
//! would end every batch of agent reports (driver/batch.rs). Instead the
//! driver reports to a [`DriverView`] as it works: a progress mark on every
//! step and on a tick it sets itself (so an idle driver still counts as
//! progressing), and its part of a scrape (counts it keeps in plain fields
//! of its own task, gauges read off its state) as a snapshot it publishes
//! between steps, at most once per [`SNAPSHOT_EVERY`] and only when a
//! scraper wants a newer one.
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sluice_protocol::metrics::{Counter, Histogram, Kind, Text};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// How long the driver may go without a step or a tick before the
/// controller reports itself not ready. The driver runs each command to
/// completion; one taking this long is stuck (or the disk is).
pub const READY_BOUND: Duration = Duration::from_secs(5);

/// The driver marks progress at least this often when idle.
pub const TICK: Duration = Duration::from_secs(1);

/// The driver computes its part of a scrape at most this often: scrapes in
/// between share the last one.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// What the driver tells the listeners without being asked through its
/// queue: when it last made progress, and its part of a scrape.
pub struct DriverView {
    origin: Instant,
    /// Milliseconds since `origin` of the driver's last step or tick
    /// (monotonic: a wall clock step must not make the driver look stuck).
    progress: AtomicU64,
    /// Set by a scraper that found the snapshot stale; the driver clears it
    /// when it publishes.
    wanted: AtomicBool,
    /// Wakes an idle driver to publish. Permits coalesce: a thousand
    /// scrapers waiting wake it once.
    wake: Notify,
    /// The last snapshot and when (ms since `origin`) it was taken.
    part: watch::Sender<Option<(u64, Arc<Text>)>>,
    /// Whether the driver's task still runs (cleared when it ends).
    running: AtomicBool,
}

impl Default for DriverView {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            progress: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            wake: Notify::new(),
            part: watch::Sender::new(None),
            running: AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for DriverView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverView").field("progress", &self.progress).finish_non_exhaustive()
    }
}

impl DriverView {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Called by the driver between steps (after each step and each tick):
    /// marks progress, and publishes its part of a scrape when one is
    /// wanted and the last is at least [`SNAPSHOT_EVERY`] old. Two atomic
    /// operations when nobody scrapes.
    pub fn stepped(&self, part: impl FnOnce() -> Text) {
        let now = self.elapsed_ms();
        self.progress.store(now, Ordering::Relaxed);
        if !self.wanted.load(Ordering::Relaxed) {
            return;
        }
        let due = match &*self.part.borrow() {
            Some((at, _)) => now.saturating_sub(*at) >= SNAPSHOT_EVERY.as_millis() as u64,
            None => true,
        };
        if due {
            self.wanted.store(false, Ordering::Relaxed);
            self.part.send_replace(Some((now, Arc::new(part()))));
        }
    }

    /// What the driver's loop waits on besides its queue and its deadlines.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// The driver's task has ended.
    pub fn stopped(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// Whether the driver made progress recently enough.
    pub fn ready(&self) -> Result<(), NotReady> {
        self.ready_within(READY_BOUND)
    }

    fn ready_within(&self, bound: Duration) -> Result<(), NotReady> {
        if !self.running.load(Ordering::Relaxed) {
            return Err(NotReady::Stopped);
        }
        let since = self.elapsed_ms().saturating_sub(self.progress.load(Ordering::Relaxed));
        if since > bound.as_millis() as u64 { Err(NotReady::Stalled) } else { Ok(()) }
    }

    /// The driver's part of a scrape, at most [`SNAPSHOT_EVERY`] (and the
    /// driver's tick) old; `None` when the driver is not ready or does not
    /// publish within [`READY_BOUND`].
    pub async fn part(&self) -> Option<Arc<Text>> {
        self.part_within(READY_BOUND).await
    }

    async fn part_within(&self, bound: Duration) -> Option<Arc<Text>> {
        self.ready_within(bound).ok()?;
        let asked = self.elapsed_ms();
        let fresh = |p: &Option<(u64, Arc<Text>)>| {
            p.as_ref().is_some_and(|(at, _)| asked.saturating_sub(*at) < SNAPSHOT_EVERY.as_millis() as u64)
        };
        let mut rx = self.part.subscribe();
        {
            let current = rx.borrow_and_update();
            if fresh(&current) {
                return current.as_ref().map(|(_, text)| text.clone());
            }
        }
        self.wanted.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let waited = tokio::time::timeout(bound, rx.wait_for(|p| fresh(p))).await;
        match waited {
            Ok(Ok(p)) => p.as_ref().map(|(_, text)| text.clone()),
            _ => None,
        }
    }
}

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
    /// The driver's progress and its part of a scrape.
    pub driver: DriverView,
    // The free-space floor (issue 17, life).
    /// Writes refused because they would leave less than `--min-free-space`
    /// (agent uploads, job workers' S3 writes, plugin pushes, log lines).
    pub free_space_refusals: Arc<Counter>,
    /// The artifact store and its floor, for the free-space gauges.
    pub artifact_store: std::sync::OnceLock<(crate::blobs::BlobStore, u64)>,
}

impl Metrics {
    pub fn count_request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.api_requests[class].inc();
    }

    /// The process's own figures, after the driver's part.
    fn write(&self, t: &mut Text) {
        t.family(
            "sluice_free_space_refusals_total",
            "Writes refused because they would leave less than --min-free-space free.",
            Kind::Counter,
        )
        .sample("sluice_free_space_refusals_total", &[], self.free_space_refusals.get() as f64);
        if let Some((blobs, floor)) = self.artifact_store.get()
            && let Ok(free) = blobs.free_bytes()
        {
            t.family("sluice_artifact_store_free_bytes", "Free bytes on the artifact store's file system.", Kind::Gauge)
                .sample("sluice_artifact_store_free_bytes", &[], free as f64);
            t.family("sluice_artifact_store_floor_bytes", "Bytes kept free (--min-free-space).", Kind::Gauge).sample(
                "sluice_artifact_store_floor_bytes",
                &[],
                *floor as f64,
            );
        }
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
    #[error("the driver has taken no step for over {}s: it is not making progress", READY_BOUND.as_secs())]
    Stalled,
    #[error("the driver has stopped")]
    Stopped,
}

/// `/readyz`: `ok` while the driver makes progress, 503 with the reason
/// when it does not. Reads two atomics: nothing reaches the driver.
pub fn readyz(metrics: &Metrics) -> Response {
    match metrics.driver.ready() {
        Ok(()) => "ok\n".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

/// A whole scrape: the driver's last snapshot (or `sluice_driver_up 0`
/// when it is not making progress: the rest is still worth having), then
/// the process's own figures.
pub async fn scrape(metrics: &Metrics) -> Response {
    let part = metrics.driver.part().await;
    let up = if part.is_some() { 1.0 } else { 0.0 };
    let mut text = part.map(|p| Text::clone(&p)).unwrap_or_default();
    text.single("sluice_driver_up", "Whether the driver is making progress and published its figures.", Kind::Gauge, up);
    metrics.write(&mut text);
    crate::ha::standing().write_metrics(&mut text);
    ([(header::CONTENT_TYPE, sluice_protocol::metrics::CONTENT_TYPE)], text.finish()).into_response()
}

/// The `--metrics ADDR` listener's routes: `/metrics`, `/readyz` and
/// `/healthz`, over plain HTTP without authentication. They carry no
/// secret: counts, pipeline names, certificate expiry times.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(|State(m): State<Arc<Metrics>>| async move { scrape(&m).await }))
        .route("/readyz", get(|State(m): State<Arc<Metrics>>| async move { readyz(&m) }))
        .route("/healthz", get(|| async { crate::ha::standing().healthz() }))
        .with_state(metrics)
}

/// Serves [`router`] on `addr` (bound before the controller says it started).
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    crate::https::bind_reusable(addr).with_context(|| format!("binding the metrics port {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Does what the driver's loop does: a step or tick marks progress
    /// and publishes when asked; counts the snapshots it computed.
    fn driver_like(m: Arc<Metrics>, computed: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                m.driver.stepped(|| {
                    computed.fetch_add(1, Ordering::Relaxed);
                    let mut t = Text::default();
                    t.single("sluice_test_total", "A figure of the driver's.", Kind::Counter, 1.0);
                    t
                });
                tokio::select! {
                    () = m.driver.woken() => {}
                    () = tokio::time::sleep(TICK) => {}
                }
            }
        })
    }

    #[tokio::test]
    async fn a_driver_that_takes_no_step_is_not_ready_and_a_stopped_one_is_not_either() {
        let m = Metrics::default();
        m.driver.stepped(Text::default);
        assert_eq!(readyz(&m).status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(150)).await;
        // No step since: stalled (a short bound stands in for 5 s).
        assert_eq!(m.driver.ready_within(Duration::from_millis(100)), Err(NotReady::Stalled));
        // Not ready: a scrape does not wait for the driver.
        assert!(m.driver.part_within(Duration::from_millis(100)).await.is_none());
        // A scrape asks; the driver's next step publishes, and it is served.
        let stepping = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            m.driver.stepped(|| {
                let mut t = Text::default();
                t.single("sluice_test_total", "A figure of the driver's.", Kind::Counter, 1.0);
                t
            });
        };
        let (body, ()) = tokio::join!(scrape_body(&m), stepping);
        assert!(body.contains("sluice_test_total 1") && body.contains("sluice_driver_up 1"), "{body}");
        // The free-space floor's figures are the process's own.
        assert!(body.contains("sluice_free_space_refusals_total 0"), "{body}");
        m.free_space_refusals.inc();
        let dir = tempfile::tempdir().unwrap();
        let _ = m.artifact_store.set((crate::blobs::BlobStore::open(dir.path()).unwrap(), 1 << 30));
        m.driver.stepped(Text::default);
        let body = scrape_body(&m).await;
        assert!(body.contains("sluice_free_space_refusals_total 1"), "{body}");
        assert!(body.contains("sluice_artifact_store_floor_bytes 1073741824"), "{body}");
        assert!(body.contains("sluice_artifact_store_free_bytes "), "{body}");
        m.driver.stopped();
        assert_eq!(m.driver.ready(), Err(NotReady::Stopped));
        assert_eq!(readyz(&m).status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = scrape_body(&m).await;
        assert!(body.contains("sluice_driver_up 0") && body.contains("sluice_api_requests_total"), "{body}");
    }

    async fn scrape_body(m: &Metrics) -> String {
        let response = scrape(m).await;
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The review's flood: thousands of unauthenticated probes and scrapes
    /// reach nothing of the driver's but the view. Its queue stays empty
    /// (no command per request, so no batch of agent reports is ended),
    /// and it computes a snapshot at most once per second.
    #[tokio::test]
    async fn a_flood_of_probes_and_scrapes_costs_the_driver_no_command_and_one_snapshot_a_second() {
        let (_queue, mut rx) = tokio::sync::mpsc::channel::<crate::driver::command::Command>(1024);
        let m = Arc::new(Metrics::default());
        let computed = Arc::new(AtomicU64::new(0));
        let driver = driver_like(m.clone(), computed.clone());
        let started = Instant::now();
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..2000 {
            let m = m.clone();
            flood.spawn(async move {
                let (path, response) = if i % 2 == 0 { ("/readyz", readyz(&m)) } else { ("/metrics", scrape(&m).await) };
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                (response_ok(&bytes, path), path)
            });
        }
        while let Some(done) = flood.join_next().await {
            let (ok, path) = done.unwrap();
            assert!(ok, "{path} answered without the driver's figures");
        }
        let seconds = started.elapsed().as_secs() + 1;
        assert!(rx.try_recv().is_err(), "a probe put a command on the driver's queue");
        let n = computed.load(Ordering::Relaxed);
        assert!(n >= 1 && n <= seconds + 1, "{n} snapshots in {seconds}s");
        driver.abort();
    }

    fn response_ok(body: &[u8], path: &str) -> bool {
        let body = String::from_utf8_lossy(body);
        match path {
            "/readyz" => body == "ok\n",
            _ => body.contains("sluice_test_total 1") && body.contains("sluice_driver_up 1"),
        }
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
