//! The CLI's client of the admin API: [`crate::ops::Client`]'s typed
//! operations with their errors as exit codes ([`OpError::exit_code`]:
//! invalid input 2, not permitted 3, anything else 1, with the server's
//! diagnostics), plus the live event stream `watch` and `logs -f` follow.

use super::{DEFAULT_API, Failure};
use crate::ops::{self, OpError, Replay, Route};
use futures_util::StreamExt as _;
use serde_json::Value;

/// A client of the admin API: the typed operations of [`crate::ops`]
/// (every command's calls), the live event stream, and untyped requests
/// for callers that build their own (the demo).
#[derive(Clone)]
pub struct Client {
    ops: ops::Client,
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        Failure::new(e.exit_code(), e.report())
    }
}

impl Client {
    /// A client verifying the controller's certificate against the
    /// system's roots.
    pub fn new(api: Option<&str>, token: Option<&str>) -> Result<Self, Failure> {
        Self::with_ca(api, token, None)
    }

    /// A client verifying the controller's certificate against `ca` (PEM)
    /// alone when given.
    pub fn with_ca(api: Option<&str>, token: Option<&str>, ca: Option<&[u8]>) -> Result<Self, Failure> {
        let token = token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            Failure::new(
                2,
                "no API token: pass --token or set SLUICE_TOKEN (the controller writes one to DATA_DIR/admin.token)",
            )
        })?;
        Ok(Self { ops: ops::Client::with_ca(api.unwrap_or(DEFAULT_API), token, ca)? })
    }

    /// Performs one operation; its output as JSON, which is what
    /// `--output json` prints and what the prose is made from.
    pub async fn call<O: Route>(&self, op: O) -> Result<Value, Failure> {
        let output = self.ops.call(op).await?;
        serde_json::to_value(output).map_err(|e| Failure::new(1, format!("{} output: {e}", O::NAME)))
    }

    /// `plugin push`: the component, its signature document if any.
    pub async fn push_plugin(&self, wasm: Vec<u8>, signature: Option<&str>) -> Result<Value, Failure> {
        let output = self.ops.push_plugin(wasm, signature).await?;
        serde_json::to_value(output).map_err(|e| Failure::new(1, format!("PushPlugin output: {e}")))
    }

    // Data lifecycle (issue 17, life).
    /// `backup --to DIR`.
    pub async fn create_backup(&self, op: ops::CreateBackup) -> Result<Value, Failure> {
        let output = self.ops.create_backup(op).await?;
        serde_json::to_value(output).map_err(|e| Failure::new(1, format!("CreateBackup output: {e}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, Failure> {
        let response = self.ops.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, path)?))).await?;
        self.send(response).await
    }

    /// An untyped POST: never repeated once it may have reached a controller.
    pub async fn post(&self, path: &str, body: impl Into<axum::body::Bytes>) -> Result<Value, Failure> {
        let body = body.into();
        let response =
            self.ops.execute(Replay::Unsafe, |http, base| Ok(http.post(url_at(base, path)?).body(body.clone()))).await?;
        self.send(response).await
    }

    /// `execution artifact` (issue 16, pages): the body of a GET at the
    /// path of `segments` (each percent-encoded), streamed into `to` (a
    /// file created anew); the bytes written. An error answer is the
    /// operation's error, as [`Client::call`] reports it.
    pub async fn download(&self, segments: &[&str], to: &std::path::Path) -> Result<u64, Failure> {
        use tokio::io::AsyncWriteExt as _;
        let response = self
            .ops
            .execute(Replay::Safe, |http, base| {
                let mut url = url_at(base, "")?;
                url.path_segments_mut()
                    .map_err(|()| OpError::invalid(format!("{base} cannot be a base URL")))?
                    .extend(segments);
                Ok(http.get(url))
            })
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
            let detail = serde_json::from_slice::<Value>(&bytes).ok();
            let detail = detail.as_ref().and_then(|b| serde_json::from_value(b["error"].clone()).ok());
            return Err(OpError::from_wire(status.as_u16(), detail).into());
        }
        let cannot = |e: std::io::Error| Failure::new(1, format!("cannot write {}: {e}", to.display()));
        if to.symlink_metadata().is_ok() {
            return Err(cannot(std::io::ErrorKind::AlreadyExists.into()));
        }
        // Written beside `to` under a temporary name and linked into place
        // only when whole: a failed or cut transfer leaves no file that
        // looks like the artifact.
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let partial = to.with_file_name(format!(".{name}.part-{}", std::process::id()));
        let result = async {
            let mut file = tokio::fs::File::create_new(&partial).await.map_err(cannot)?;
            let mut body = response.bytes_stream();
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.unreachable(e))?;
                file.write_all(&chunk).await.map_err(cannot)?;
                written += chunk.len() as u64;
            }
            file.sync_all().await.map_err(cannot)?;
            // A link, not a rename: never replaces a file made meanwhile.
            tokio::fs::hard_link(&partial, to).await.map_err(cannot)?;
            Ok(written)
        }
        .await;
        let _ = tokio::fs::remove_file(&partial).await;
        result
    }

    /// An untyped answer; an error answer has the exit code its status
    /// says, as [`OpError::exit_code`] would.
    async fn send(&self, response: reqwest::Response) -> Result<Value, Failure> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut text = body["error"]["message"].as_str().unwrap_or("request failed").to_string();
        for d in body["error"]["diagnostics"].as_array().into_iter().flatten().filter_map(Value::as_str) {
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
        Failure::new(1, ops::unreachable(self.ops.base(), &e))
    }

    /// Live events of a pipeline.
    pub async fn events(&self, pipeline: &str) -> Result<impl futures_util::Stream<Item = Value> + Unpin + use<>, Failure> {
        let path = format!("/events?pipeline={pipeline}");
        let response = self.ops.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, &path)?))).await?;
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

/// `base` + `/v1` + `path`.
fn url_at(base: &str, path: &str) -> Result<reqwest::Url, OpError> {
    reqwest::Url::parse(&format!("{base}/v1{path}"))
        .map_err(|e| OpError::invalid(format!("{base}/v1{path} is not a URL: {e}")))
}
