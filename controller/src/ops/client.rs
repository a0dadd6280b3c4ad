//! The admin API's client side: `client.call(op)` sends any [`Route`]
//! operation the way the route table says and reads its typed output.
//!
//! A client may be given several controllers (a cluster: `--api a,b,c`).
//! A request goes to the one that answered last, then to the others in
//! turn, for at most [`FAILOVER_BUDGET`] (see [`Client::execute`]):
//! - a connection that could not be made (refused, unreachable, or a
//!   certificate that does not verify: nothing was sent, the token
//!   neither) moves on to the next address, whatever the request;
//! - a `503` with code [`NO_LEADER`] (a standby while the cluster has no
//!   leader: nothing was done) is tried again at the next address, and
//!   after each round at the `Retry-After` the controllers asked for;
//! - a request that may have reached a controller (the connection broke
//!   after it was sent) is sent again only when it is safe to repeat
//!   ([`Replay`]): a `GET`, or a request carrying a `clientRequestToken`
//!   (the controller answers a repeat with the first start's execution).
//!   Anything else fails with that error: repeating it could do it twice.
//!   A standby's `502`/`504` with code [`LEADER_LOST`] (it forwarded the
//!   request and lost the leader before the answer) is such a break too.

use super::error::{ErrorBody, OpError};
use super::{PushPluginOutput, Route};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;

/// A request's URL and its body with the body's content type.
type Encoded = (reqwest::Url, Option<(Vec<u8>, &'static str)>);

/// The header that carries a pushed plugin's signature document, base64.
pub const SIGNATURE_HEADER: &str = "sluice-plugin-signature";

// Several controllers, one leader (issue 18, reach).
/// The error code of the `503` a standby answers while the cluster has no
/// leader; the client tries again (see the module's doc).
pub const NO_LEADER: &str = "NoLeader";
/// The error code of a standby's `502`/`504` when the request may have been
/// carried out by the leader it forwarded it to (see the module's doc).
pub const LEADER_LOST: &str = "LeaderLost";
/// How long a request may take, all addresses and retries together, before
/// the client gives up on a cluster.
pub const FAILOVER_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);
/// A TCP or TLS connection that takes longer is given up (for the next
/// address), so that one dead host cannot use the whole budget.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);
/// The first pause after a round of addresses none of which could serve;
/// doubles per round up to [`ROUND_PAUSE_MAX`] (a `Retry-After` overrides
/// it, within the budget).
const ROUND_PAUSE_MIN: std::time::Duration = std::time::Duration::from_millis(250);
const ROUND_PAUSE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a request may be sent again after it may have reached a
/// controller (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Repeating it changes nothing: a read, or a start with a
    /// `clientRequestToken`.
    Safe,
    /// Repeating it could do it twice: sent again only when it surely
    /// reached no controller.
    Unsafe,
}

/// A client of the admin API (`/v1`, bearer token).
#[derive(Clone)]
pub struct Client {
    bases: std::sync::Arc<[String]>,
    /// The address that answered last, where the next request goes first.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the controller's API address: a URL, or `HOST:PORT` for
    /// `https://HOST:PORT`. The server's certificate is verified against
    /// the system's roots.
    pub fn new(base: &str, token: &str) -> Result<Self, OpError> {
        Self::with_ca(base, token, None)
    }

    /// As [`Client::new`], verifying the server's certificate against
    /// `ca` (PEM: one or more certificates) alone when given. `base` may
    /// list several controllers of a cluster, separated by commas.
    pub fn with_ca(base: &str, token: &str, ca: Option<&[u8]>) -> Result<Self, OpError> {
        let bases = parse_bases(base)?;
        let http = http_client(ca)?;
        let current = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Ok(Self { bases: bases.into(), current, token: token.trim().to_string(), http })
    }

    /// The address requests go to first: the one that answered last.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// Every address this client was given, as URLs.
    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The underlying HTTP client, for the event stream.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Performs one operation.
    pub async fn call<O: Route>(&self, op: O) -> Result<O::Output, OpError> {
        let (_, body) = self.encode_at(self.base(), &op)?;
        let replay = replay_of(&O::METHOD, body.as_ref().map(|(bytes, _)| bytes.as_slice()));
        let response = self
            .execute(replay, |http, base| {
                let (url, body) = self.encode_at(base, &op)?;
                let mut request = http.request(O::METHOD, url);
                if let Some((body, content_type)) = body {
                    request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
                }
                Ok(request)
            })
            .await?;
        self.read(response).await
    }

    /// `PushPlugin`'s transport: the component as the body, its signature
    /// document (if any) base64 in [`SIGNATURE_HEADER`].
    pub async fn push_plugin(&self, wasm: Vec<u8>, signature: Option<&str>) -> Result<PushPluginOutput, OpError> {
        use base64::Engine as _;
        let wasm = axum::body::Bytes::from(wasm);
        let signature = signature.map(|text| base64::engine::general_purpose::STANDARD.encode(text));
        let response = self
            .execute(Replay::Unsafe, |http, base| {
                let mut request = http.post(url_at(base, "/plugins")?).body(wasm.clone());
                if let Some(signature) = &signature {
                    request = request.header(SIGNATURE_HEADER, signature);
                }
                Ok(request)
            })
            .await?;
        self.read(response).await
    }

    // Data lifecycle (issue 17, life).
    /// `CreateBackup`'s transport (`POST /v1/backups`, routed by hand: the
    /// copy happens off the driver's task).
    pub async fn create_backup(&self, op: super::CreateBackup) -> Result<super::CreateBackupOutput, OpError> {
        let body = serde_json::to_vec(&op).map_err(|e| OpError::Internal(e.to_string()))?;
        let response = self
            .execute(Replay::Unsafe, |http, base| {
                let request = http.post(url_at(base, "/backups")?).header(reqwest::header::CONTENT_TYPE, "application/json");
                Ok(request.body(body.clone()))
            })
            .await?;
        self.read(response).await
    }

    /// `/v1` + `path` at the address requests go to first.
    pub fn url(&self, path: &str) -> Result<reqwest::Url, OpError> {
        url_at(self.base(), path)
    }

    /// Sends the request `build` makes for an address (with the token),
    /// moving to the other controllers as the module's doc says; the first
    /// answer that is not a standby's "no leader". A 503 that is not one is
    /// returned as its error.
    pub async fn execute(
        &self,
        replay: Replay,
        build: impl Fn(&reqwest::Client, &str) -> Result<reqwest::RequestBuilder, OpError>,
    ) -> Result<reqwest::Response, OpError> {
        use std::sync::atomic::Ordering::Relaxed;
        let started = tokio::time::Instant::now();
        let count = self.bases.len();
        let first = self.current.load(Relaxed) % count;
        // The last reason each address gave, for the final error.
        let mut reasons: Vec<Option<String>> = vec![None; count];
        let mut pause = ROUND_PAUSE_MIN;
        let mut attempt = 0usize;
        loop {
            let index = (first + attempt) % count;
            let base = &self.bases[index];
            let request = build(&self.http, base)?.bearer_auth(&self.token);
            let retry_after = match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    let retry_after = retry_after(response.headers());
                    let bytes = response.bytes().await.map_err(|e| self.unreachable_at(base, e))?;
                    let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
                    match detail {
                        Some(d) if d.code == NO_LEADER => {
                            tracing::debug!(%base, "the controller has no leader, trying again");
                            reasons[index] = Some(format!("{base}: {} ({NO_LEADER})", d.message));
                            retry_after
                        }
                        detail => return Err(OpError::from_wire(503, detail)),
                    }
                }
                Ok(response) if replay == Replay::Safe && count > 1 && matches!(response.status().as_u16(), 502 | 504) => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.map_err(|e| self.unreachable_at(base, e))?;
                    let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
                    match detail {
                        Some(d) if d.code == LEADER_LOST => {
                            tracing::debug!(%base, "the controller lost the leader, trying a safe request again");
                            reasons[index] = Some(format!("{base}: {} ({LEADER_LOST})", d.message));
                            None
                        }
                        detail => return Err(OpError::from_wire(status, detail)),
                    }
                }
                Ok(response) => {
                    self.current.store(index, Relaxed);
                    return Ok(response);
                }
                // Nothing was sent (the token neither): any request may move on.
                Err(e) if e.is_connect() => {
                    if count == 1 {
                        return Err(self.unreachable_at(base, e));
                    }
                    reasons[index] = Some(unreachable(base, &e));
                    None
                }
                Err(e) if replay == Replay::Safe && count > 1 => {
                    reasons[index] = Some(unreachable(base, &e));
                    None
                }
                Err(e) => return Err(self.unreachable_at(base, e)),
            };
            attempt += 1;
            let elapsed = started.elapsed();
            if elapsed >= FAILOVER_BUDGET {
                return Err(self.gave_up(&reasons));
            }
            // The next address at once; a pause after each whole round.
            if attempt.is_multiple_of(count) {
                let wait = retry_after.unwrap_or(pause).min(FAILOVER_BUDGET - elapsed);
                pause = (pause * 2).min(ROUND_PAUSE_MAX);
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The error when no controller could serve within the budget, naming
    /// each address with its last reason.
    fn gave_up(&self, reasons: &[Option<String>]) -> OpError {
        let mut text = format!(
            "no controller of {} could serve the request within {}s:",
            self.bases.join(","),
            FAILOVER_BUDGET.as_secs()
        );
        for (base, reason) in self.bases.iter().zip(reasons) {
            text.push_str("\n  ");
            text.push_str(reason.as_deref().unwrap_or(base));
        }
        OpError::Unavailable(text)
    }

    /// The URL (path and query filled from the request's fields) and the
    /// body (the fields left, as JSON, or the text field) of `op`.
    #[cfg(test)]
    fn encode<O: Route>(&self, op: &O) -> Result<Encoded, OpError> {
        self.encode_at(self.base(), op)
    }

    /// [`Client::encode`] for the controller at `base`.
    fn encode_at<O: Route>(&self, base: &str, op: &O) -> Result<Encoded, OpError> {
        let mut fields = match serde_json::to_value(op) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) | Err(_) => return Err(OpError::Internal(format!("{} does not serialize to an object", O::NAME))),
        };
        let mut url = url_at(base, "")?;
        {
            let mut segments =
                url.path_segments_mut().map_err(|()| OpError::invalid(format!("{base} cannot be a base URL")))?;
            for segment in O::PATH.split('/').filter(|s| !s.is_empty()) {
                match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(field) => {
                        let value = fields.remove(field).map(text_of).unwrap_or_default();
                        segments.push(&value);
                    }
                    None => {
                        segments.push(segment);
                    }
                }
            }
        }
        for name in O::QUERY {
            if let Some(value) = fields.remove(*name).filter(|v| !v.is_null()) {
                url.query_pairs_mut().append_pair(name, &text_of(value));
            }
        }
        let body = match O::TEXT_BODY {
            Some((field, _)) => {
                Some((fields.remove(field).map(text_of).unwrap_or_default().into_bytes(), "text/plain; charset=utf-8"))
            }
            None if fields.is_empty() => None,
            None => Some((Value::Object(fields).to_string().into_bytes(), "application/json")),
        };
        Ok((url, body))
    }

    /// An answer's typed output, or its error.
    async fn read<T: serde::de::DeserializeOwned>(&self, response: reqwest::Response) -> Result<T, OpError> {
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| OpError::Unavailable(format!("the controller's answer is not what this client expects: {e}")));
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|b| b.error);
        Err(OpError::from_wire(status.as_u16(), detail))
    }

    fn unreachable(&self, e: reqwest::Error) -> OpError {
        OpError::Unavailable(unreachable(self.base(), &e))
    }

    fn unreachable_at(&self, base: &str, e: reqwest::Error) -> OpError {
        OpError::Unavailable(unreachable(base, &e))
    }
}

/// The controllers of `--api` (one, or several separated by commas) as
/// URLs: `HOST:PORT` means `https://HOST:PORT`.
fn parse_bases(text: &str) -> Result<Vec<String>, OpError> {
    let mut bases = Vec::new();
    for part in text.split(',') {
        let part = part.trim().trim_end_matches('/');
        if part.is_empty() {
            return Err(OpError::invalid(format!("API address {text:?} has an empty entry")));
        }
        let base = if part.contains("://") { part.to_string() } else { format!("https://{part}") };
        reqwest::Url::parse(&base).map_err(|e| OpError::invalid(format!("API address {base:?} is not a URL: {e}")))?;
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// `base` + `/v1` + `path`.
fn url_at(base: &str, path: &str) -> Result<reqwest::Url, OpError> {
    reqwest::Url::parse(&format!("{base}/v1{path}"))
        .map_err(|e| OpError::invalid(format!("{base}/v1{path} is not a URL: {e}")))
}

/// Whether a request of `method` with `body` (JSON, if any) is safe to
/// repeat: a read, or a body carrying a `clientRequestToken`.
fn replay_of(method: &reqwest::Method, body: Option<&[u8]>) -> Replay {
    if method == reqwest::Method::GET || method == reqwest::Method::HEAD {
        return Replay::Safe;
    }
    let token = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .is_some_and(|v| v.get("clientRequestToken").is_some_and(|t| !t.is_null()));
    if token { Replay::Safe } else { Replay::Unsafe }
}

/// A `Retry-After` in seconds (the form controllers send), at most the
/// budget.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(std::time::Duration::from_secs(secs).min(FAILOVER_BUDGET))
}

/// An HTTP client for the controller's API: TLS with the process's
/// crypto provider (ring, installed here when nothing else did), trusting
/// `ca` alone when given, the system's roots otherwise.
pub fn http_client(ca: Option<&[u8]>) -> Result<reqwest::Client, OpError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    if let Some(pem) = ca {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| OpError::invalid(format!("the CA file is not PEM certificates: {e}")))?;
        if roots.is_empty() {
            return Err(OpError::invalid("the CA file holds no PEM certificate"));
        }
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(|e| OpError::Internal(format!("building the HTTP client: {e}")))
}

/// Why the controller at `base` could not be reached, with every cause
/// (a refused certificate is several layers down) and what to do.
pub fn unreachable(base: &str, e: &reqwest::Error) -> String {
    let mut causes = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = cause.source();
    }
    let text = causes.join(": ");
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") || lower.contains("notvalidforname") {
        return format!(
            "cannot reach the controller at {base}: its TLS certificate is not trusted: {text} \
             (pass the CA that issued it with --ca FILE or SLUICE_CA; a controller's own CA is DATA_DIR/ca/ca.crt, \
             named in DATA_DIR/controller.json)"
        );
    }
    if base.starts_with("https://") && (lower.contains("invalidcontenttype") || lower.contains("corrupt message")) {
        return format!(
            "cannot reach the controller at {base}: it does not speak TLS there: {text} \
             (a controller started with --api-plain-http is reached at http://)"
        );
    }
    if base.starts_with("http://") && lower.contains("invalid http version") {
        return format!(
            "cannot reach the controller at {base}: it speaks HTTPS there: {text} (use https:// in --api or SLUICE_API)"
        );
    }
    format!("cannot reach the controller at {base}: {text} (is `sluice controller` running? set --api or SLUICE_API)")
}

/// A field's value as text: strings as they are, anything else as JSON.
fn text_of(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// For tests: the fields a request sends in its body.
#[cfg(test)]
fn body_fields<O: Route>(op: &O) -> Map<String, Value> {
    let client = Client::new("127.0.0.1:7400", "t").unwrap();
    match client.encode(op).unwrap().1 {
        Some((bytes, "application/json")) => serde_json::from_slice(&bytes).unwrap(),
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::*;

    // Several controllers, one leader (issue 18, reach).
    /// A server that records the `Authorization` header of every request
    /// and answers `answer` (status, `Retry-After`, body); TLS with a
    /// certificate of `ca` when given, else plain HTTP. Its URL.
    async fn recording(
        ca: Option<std::sync::Arc<crate::ca::Ca>>,
        answer: (u16, Option<&'static str>, &'static str),
        seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> String {
        let handler = move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                seen.lock().unwrap().push(auth);
                let mut response = axum::response::Response::new(axum::body::Body::from(answer.2));
                *response.status_mut() = axum::http::StatusCode::from_u16(answer.0).unwrap();
                if let Some(after) = answer.1 {
                    response.headers_mut().insert("retry-after", after.parse().unwrap());
                }
                response
            }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (scheme, tls) = match ca {
            Some(ca) => {
                let tls = crate::https::Tls::start(ca, &crate::https::CertSource::Ca { names: Vec::new() }, &[]).unwrap();
                ("https", Some(tls.acceptor.clone()))
            }
            None => ("http", None),
        };
        tokio::spawn(crate::https::serve(listener, router, tls, "test"));
        format!("{scheme}://{addr}")
    }

    fn new_ca() -> (tempfile::TempDir, std::sync::Arc<crate::ca::Ca>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::Ca::load_or_create(&dir.path().join("ca")).unwrap();
        (dir, std::sync::Arc::new(ca))
    }

    /// Given an impostor (a certificate of another CA) before the genuine
    /// controller, the client never sends it the token, nor any request:
    /// the handshake fails first. It goes on to the genuine one, and keeps
    /// going there first.
    #[tokio::test]
    async fn no_credentials_go_to_an_address_whose_certificate_does_not_verify() {
        let (_a, pinned) = new_ca();
        let (_b, other) = new_ca();
        let (impostor_seen, genuine_seen) = Default::default();
        let impostor = recording(Some(other), (200, None, "{}"), std::sync::Arc::clone(&impostor_seen)).await;
        let genuine = recording(Some(pinned.clone()), (200, None, "{}"), std::sync::Arc::clone(&genuine_seen)).await;
        let client =
            Client::with_ca(&format!("{impostor},{genuine}"), "sat_secret", Some(pinned.cert_pem().as_bytes())).unwrap();
        for _ in 0..2 {
            let answer = client.execute(Replay::Unsafe, |http, base| Ok(http.post(url_at(base, "/probe")?))).await.unwrap();
            assert_eq!(answer.status(), 200);
        }
        assert!(impostor_seen.lock().unwrap().is_empty(), "the impostor got no request");
        assert_eq!(*genuine_seen.lock().unwrap(), ["Bearer sat_secret", "Bearer sat_secret"]);
        assert_eq!(client.base(), genuine, "the one that answered is tried first next time");
        // Alone, the impostor is refused, saying why.
        let alone = Client::with_ca(&impostor, "sat_secret", Some(pinned.cert_pem().as_bytes())).unwrap();
        let e = alone.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, "/probe")?))).await.unwrap_err();
        assert!(e.to_string().contains("certificate is not trusted"), "{e}");
        assert!(impostor_seen.lock().unwrap().is_empty());
    }

    /// A standby's `503 NoLeader` sends even a request that is not safe to
    /// repeat to the next address (nothing was done); any other 503 is the
    /// answer.
    #[tokio::test]
    async fn a_standby_without_leader_is_passed_over_and_other_errors_are_answers() {
        let no_leader = r#"{"error": {"code": "NoLeader", "message": "no leader: the cluster is electing one"}}"#;
        let (standby_seen, leader_seen, busy_seen) = Default::default();
        let standby = recording(None, (503, Some("1"), no_leader), std::sync::Arc::clone(&standby_seen)).await;
        let leader = recording(None, (200, None, "{}"), std::sync::Arc::clone(&leader_seen)).await;
        let busy_body = r#"{"error": {"code": "ServiceUnavailableException", "message": "busy"}}"#;
        let busy = recording(None, (503, None, busy_body), std::sync::Arc::clone(&busy_seen)).await;
        let client = Client::new(&format!("{standby},{leader}"), "t").unwrap();
        let answer = client.execute(Replay::Unsafe, |http, base| Ok(http.post(url_at(base, "/x")?))).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!((standby_seen.lock().unwrap().len(), leader_seen.lock().unwrap().len()), (1, 1));
        let client = Client::new(&format!("{busy},{leader}"), "t").unwrap();
        let e = client.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, "/x")?))).await.unwrap_err();
        assert_eq!(e.to_string(), "busy");
        assert_eq!(leader_seen.lock().unwrap().len(), 1, "a plain 503 is not retried elsewhere");
    }

    /// issue 18, fwdfix: a standby's `502 LeaderLost` (the leader may have
    /// carried the request out) is repeated elsewhere only when the
    /// request is safe to repeat.
    #[tokio::test]
    async fn a_lost_leader_is_retried_only_for_a_safe_request() {
        let lost = r#"{"error": {"code": "LeaderLost", "message": "the request may have been carried out"}}"#;
        let (standby_seen, leader_seen) = Default::default();
        let standby = recording(None, (502, None, lost), std::sync::Arc::clone(&standby_seen)).await;
        let leader = recording(None, (200, None, "{}"), std::sync::Arc::clone(&leader_seen)).await;
        let client = Client::new(&format!("{standby},{leader}"), "t").unwrap();
        let answer = client.execute(Replay::Unsafe, |http, base| Ok(http.post(url_at(base, "/x")?))).await.unwrap();
        assert_eq!(answer.status(), 502, "an unsafe request is not sent again");
        assert_eq!((standby_seen.lock().unwrap().len(), leader_seen.lock().unwrap().len()), (1, 0));
        let client = Client::new(&format!("{standby},{leader}"), "t").unwrap();
        let answer = client.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, "/x")?))).await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!((standby_seen.lock().unwrap().len(), leader_seen.lock().unwrap().len()), (2, 1));
    }

    /// Only dead addresses: the error comes within the budget and names
    /// every address with its reason.
    #[tokio::test]
    async fn dead_addresses_fail_within_the_budget_naming_each() {
        let dead = |_: u8| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("https://{}", listener.local_addr().unwrap())
        };
        let (a, b) = (dead(0), dead(1));
        let client = Client::new(&format!("{a},{b}"), "t").unwrap();
        let started = std::time::Instant::now();
        let e = client.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, "/x")?))).await.unwrap_err();
        let took = started.elapsed();
        assert!(took >= FAILOVER_BUDGET && took < FAILOVER_BUDGET + std::time::Duration::from_secs(5), "{took:?}");
        let text = e.to_string();
        assert!(text.starts_with(&format!("no controller of {a},{b} could serve the request within 15s:")), "{text}");
        assert!(text.contains(&format!("cannot reach the controller at {a}")), "{text}");
        assert!(text.contains(&format!("cannot reach the controller at {b}")), "{text}");
        // One address alone fails at once, as before clusters.
        let one = Client::new(&a, "t").unwrap();
        let started = std::time::Instant::now();
        assert!(one.execute(Replay::Safe, |http, base| Ok(http.get(url_at(base, "/x")?))).await.is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn addresses_are_listed_with_commas_and_requests_replayed_only_when_safe() {
        let client = Client::new("a:1, https://b:2/,http://c:3", "t").unwrap();
        assert_eq!(client.bases(), ["https://a:1", "https://b:2", "http://c:3"]);
        assert!(Client::new("a:1,,b:2", "t").is_err());
        assert_eq!(replay_of(&reqwest::Method::GET, None), Replay::Safe);
        assert_eq!(replay_of(&reqwest::Method::POST, Some(br#"{"name": "web"}"#)), Replay::Unsafe);
        assert_eq!(replay_of(&reqwest::Method::POST, Some(br#"{"clientRequestToken": null}"#)), Replay::Unsafe);
        assert_eq!(replay_of(&reqwest::Method::POST, Some(br#"{"clientRequestToken": "r-1"}"#)), Replay::Safe);
        assert_eq!(replay_of(&reqwest::Method::DELETE, None), Replay::Unsafe);
    }

    #[test]
    fn a_request_fills_its_path_query_and_body_from_its_fields() {
        let client = Client::new("127.0.0.1:7400/", "t").unwrap();
        let op = ListPipelineExecutions { pipeline_name: "web app".into(), max_results: Some(5), next_token: None };
        let (url, body) = client.encode(&op).unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:7400/v1/pipelines/web%20app/executions?maxResults=5");
        assert!(body.is_none());

        let op = RetryStageExecution {
            pipeline_name: "web".into(),
            stage_name: "Build".into(),
            pipeline_execution_id: "e-1".into(),
            retry_mode: RetryMode::AllActions,
        };
        let (url, _) = client.encode(&op).unwrap();
        assert_eq!(url.path(), "/v1/pipelines/web/stages/Build/retry");
        assert_eq!(
            Value::Object(body_fields(&op)),
            serde_json::json!({ "pipelineExecutionId": "e-1", "retryMode": "ALL_ACTIONS" })
        );

        let op = CreatePipeline { pipeline_declaration: "pipeline:\n  name: web\n".into(), team: None };
        let (url, body) = client.encode(&op).unwrap();
        assert_eq!(url.path(), "/v1/pipelines");
        assert_eq!(body.unwrap().0, b"pipeline:\n  name: web\n");

        // A slash in a value stays inside its segment.
        let (url, _) = client.encode(&DescribePlugin { key: "a/b@1".into() }).unwrap();
        assert_eq!(url.path(), "/v1/plugins/a%2Fb@1");
    }
}
