//! The controller's admin API as the benchmark uses it: JSON calls and the
//! live event stream, each event stamped with the instant it arrived here.
//! Stamps taken in this process time every event the same way, so that the
//! gap between two events is the controller's, plus the jitter of delivery.

use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt as _;
use serde_json::Value;
use sluice_tests::Cluster;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An event of the controller's stream and when it arrived.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at: Instant,
    pub event: Value,
}

impl Stamped {
    /// `(stage, action, status)` of an action event.
    pub fn action(&self) -> Option<(&str, &str, &str)> {
        (self.event["type"] == "action").then(|| {
            (
                self.event["stage"].as_str().unwrap_or_default(),
                self.event["action"].as_str().unwrap_or_default(),
                self.event["status"].as_str().unwrap_or_default(),
            )
        })
    }

    /// `(execution id, status)` of an execution event.
    pub fn execution(&self) -> Option<(&str, &str)> {
        (self.event["type"] == "execution").then(|| {
            (self.event["executionId"].as_str().unwrap_or_default(), self.event["status"].as_str().unwrap_or_default())
        })
    }
}

/// Execution states after which nothing more happens.
pub fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Stopped" | "Superseded")
}

impl Api {
    /// The cluster's API over HTTPS, verified against the controller's CA.
    pub fn new(cluster: &Cluster) -> Self {
        let ca = std::fs::read(cluster.ca_file()).unwrap_or_default();
        let http = sluice::ops::http_client(Some(&ca)).expect("an HTTP client trusting the controller's CA");
        Self { http, base: format!("{}/v1", cluster.api), token: cluster.token.clone() }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let response = request.bearer_auth(&self.token).send().await.with_context(|| format!("{what}: no answer"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("{what}: reading the answer"))?;
        if !status.is_success() {
            bail!("{what}: {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("{what}: the answer is not JSON"))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), &format!("GET {path}")).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)), &format!("DELETE {path}")).await
    }

    pub async fn post(&self, path: &str, body: String) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).body(body), &format!("POST {path}")).await
    }

    pub async fn create_pipeline(&self, declaration: &str) -> Result<String> {
        let answer = self.post("/pipelines", declaration.to_string()).await?;
        answer["pipelineExecutionId"].as_str().map(str::to_string).context("create answered without an execution id")
    }

    pub async fn start(&self, pipeline: &str) -> Result<String> {
        let answer = self.post(&format!("/pipelines/{pipeline}/executions"), String::new()).await?;
        answer["pipelineExecutionId"].as_str().map(str::to_string).context("start answered without an execution id")
    }

    /// Starts `n` executions, `parallel` requests at a time; their ids.
    pub async fn start_many(&self, pipeline: &str, n: usize, parallel: usize) -> Result<Vec<String>> {
        let results: Vec<Result<String>> =
            futures_util::stream::iter(0..n).map(|_| self.start(pipeline)).buffer_unordered(parallel.max(1)).collect().await;
        results.into_iter().collect()
    }

    /// The statuses of the newest `limit` executions (at most 1,000).
    pub async fn statuses(&self, pipeline: &str, limit: usize) -> Result<Vec<(String, String)>> {
        let history = self.get(&format!("/pipelines/{pipeline}/executions?maxResults={limit}")).await?;
        Ok(history["pipelineExecutionSummaries"]
            .as_array()
            .context("history without summaries")?
            .iter()
            .map(|e| {
                (
                    e["pipelineExecutionId"].as_str().unwrap_or_default().to_string(),
                    e["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Subscribes to a pipeline's events; the subscription is live when this
    /// returns.
    pub async fn events(&self, pipeline: &str) -> Result<mpsc::UnboundedReceiver<Stamped>> {
        let response = self
            .http
            .get(format!("{}/events?pipeline={pipeline}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("subscribing to events")?;
        if !response.status().is_success() {
            bail!("subscribing to events: {}", response.status());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut pending = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                let at = Instant::now();
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = pending.drain(..end + 2).collect();
                    for line in String::from_utf8_lossy(&block).lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(event) = serde_json::from_str(data.trim())
                            && tx.send(Stamped { at, event }).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Collects events until `done` says the set is complete, or fails after
/// `timeout` naming `what`.
pub async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<Stamped>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[Stamped]) -> bool,
) -> Result<Vec<Stamped>> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&events) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            Ok(None) => bail!("the event stream ended while waiting for {what}"),
            Err(_) => bail!("timed out after {timeout:?} waiting for {what} ({} events seen)", events.len()),
        }
    }
    Ok(events)
}

/// A condition for [`collect_until`]: `count` executions have ended.
pub fn executions_ended(count: usize) -> impl FnMut(&[Stamped]) -> bool {
    let mut seen = 0;
    let mut ended = 0;
    move |events| {
        for e in &events[seen..] {
            if e.execution().is_some_and(|(_, status)| is_final(status)) {
                ended += 1;
            }
        }
        seen = events.len();
        ended >= count
    }
}
