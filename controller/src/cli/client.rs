//! The HTTP client of the admin API: bearer token, `/v1` paths, and the
//! mapping of an API error to the exit code scripts rely on (400: 2,
//! 401/403: 3, anything else: 1), with the server's diagnostics.

use super::{DEFAULT_API, Failure};
use futures_util::StreamExt as _;
use serde_json::Value;

/// A client of the admin API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(api: Option<&str>, token: Option<&str>) -> Result<Self, Failure> {
        let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            Failure::new(2, "no API token: pass --token or set SLUICE_TOKEN (the controller writes one to DATA_DIR/admin.token)")
        })?;
        let base = api.unwrap_or(DEFAULT_API).trim_end_matches('/').to_string();
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        let http = reqwest::Client::builder().build().map_err(|e| Failure::new(1, e.to_string()))?;
        Ok(Self { base, token: token.trim().to_string(), http })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).body(body)).await
    }

    /// A POST with one extra header.
    pub async fn post_with(&self, path: &str, header: (&str, &str), body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.post(self.url(path)).header(header.0, header.1).body(body)).await
    }

    pub async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> Result<Value, Failure> {
        self.send(self.http.put(self.url(path)).body(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.delete(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"].as_str().unwrap_or("request failed").to_string();
        let diagnostics: Vec<&str> =
            body["error"]["diagnostics"].as_array().map(|d| d.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let mut text = message;
        for d in diagnostics {
            text.push_str("\n  ");
            text.push_str(d);
        }
        let code = match status.as_u16() {
            400 => 2,
            401 | 403 => 3,
            _ => 1,
        };
        Err(Failure::new(code, text))
    }

    fn unreachable(&self, e: reqwest::Error) -> Failure {
        Failure::new(
            1,
            format!("cannot reach the controller at {}: {e} (is `sluice controller` running? set --api or SLUICE_API)", self.base),
        )
    }

    /// Live events of a pipeline.
    pub async fn events(
        &self,
        pipeline: &str,
    ) -> Result<impl futures_util::Stream<Item = Value> + Unpin + use<>, Failure> {
        let response = self
            .http
            .get(self.url(&format!("/events?pipeline={pipeline}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status() == 401 {
            return Err(Failure::new(3, "missing or invalid bearer token"));
        }
        let mut buffer = String::new();
        Ok(Box::pin(response.bytes_stream().flat_map(move |chunk| {
            let mut out = Vec::new();
            if let Ok(bytes) = chunk {
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    for line in event.lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(v) = serde_json::from_str(data.trim())
                        {
                            out.push(v);
                        }
                    }
                }
            }
            futures_util::stream::iter(out)
        })))
    }
}
