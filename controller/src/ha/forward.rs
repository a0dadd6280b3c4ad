//! What a standby's API listener serves: `/healthz`, `/readyz` and
//! `/metrics`-free status of its own, and every other request forwarded
//! verbatim to the leader's `api_url` (method, path, query, headers with
//! `Authorization` and the `Host` a SigV4 signature covers, the body as it
//! streams), the answer streamed back the same way (`/v1/events`, log
//! follow). The leader is verified with the cluster's CA (and, when the
//! controllers serve an operator's `--api-cert`, the system's roots), and
//! only over `https://`. Answers of its own, in the house error shape:
//! - 503 `NoLeader` with `Retry-After` when nothing was sent to a leader:
//!   none holds the lease, the lease names this controller itself or a URL
//!   that is not `https://`, the request was already forwarded once (by a
//!   standby that took this one for the leader), or no connection to the
//!   leader could be made. A client may send any request again elsewhere.
//! - 502 (connection lost after sending) or 504 (no answer in time)
//!   [`LEADER_LOST`]: the leader may have carried the request out; a client
//!   repeats only what is safe to repeat.
//!
//! The client's address is not passed on (no `X-Forwarded-For`): the
//! leader's audit log names the standby as a request's source, since the
//! leader cannot tell a standby's header from a client's.

use super::Standing;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt as _;
use std::sync::Arc;
use std::sync::OnceLock;
use tracing::{debug, warn};

/// The header a standby puts on what it forwards (its own advertised API
/// URL): a standby that receives a request carrying it refuses it rather
/// than forwarding it again, so a stale view of the lease cannot make two
/// standbys (or one and itself) pass a request round. The leader ignores it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("sluice-forwarded-by");

pub use crate::ops::LEADER_LOST;

/// Which roots verify the leader's API certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderTrust {
    /// The cluster's CA alone: the controllers serve certificates it issued.
    ClusterCa,
    /// The cluster's CA and the system's roots: the controllers serve an
    /// operator's `--api-cert` (a public or a company CA, installed in the
    /// system's trust store or named by `SSL_CERT_FILE`).
    ClusterCaAndSystem,
}

/// The standby's forwarding state.
#[derive(Clone)]
pub struct Forward {
    standing: Arc<Standing>,
    client: reqwest::Client,
    /// This controller's own advertised API URL, once known: a lease row
    /// naming it is a previous run of this controller, not a leader.
    own: Arc<OnceLock<String>>,
}

impl Forward {
    /// A client that trusts `trust`'s roots and follows no redirect (a
    /// redirect is the leader's answer to the client, not to us).
    pub fn new(standing: Arc<Standing>, ca_pem: &str, trust: LeaderTrust) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())?;
        let builder = match trust {
            LeaderTrust::ClusterCa => reqwest::Client::builder().tls_certs_only(roots),
            LeaderTrust::ClusterCaAndSystem => reqwest::Client::builder().tls_certs_merge(roots),
        };
        let client = builder
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()?;
        Ok(Self { standing, client, own: Arc::default() })
    }

    /// Where this controller's own advertised URL is kept, set once known.
    pub fn own_url(&self) -> Arc<OnceLock<String>> {
        self.own.clone()
    }

    /// The leader's URL to forward to, or why there is none to forward to
    /// (nothing has been sent anywhere yet).
    fn leader_url(&self, headers: &HeaderMap) -> Result<String, String> {
        if let Some(by) = headers.get(&FORWARDED_BY) {
            let by = String::from_utf8_lossy(by.as_bytes()).into_owned();
            debug!(by, "refused a request another standby forwarded here");
            return Err(format!(
                "the standby at {by} took this controller for the leader, and it is a standby: the lease is moving; \
                 try again shortly"
            ));
        }
        let Some(leader) = self.standing.leader() else {
            return Err("no controller holds the lease; try again shortly".into());
        };
        let url = leader.api_url.trim_end_matches('/');
        if self.own.get().is_some_and(|own| own.trim_end_matches('/') == url) {
            return Err("the lease names this controller, which is a standby (it restarted): no leader until the lease \
                        expires; try again shortly"
                .into());
        }
        match reqwest::Url::parse(url) {
            Ok(parsed) if parsed.scheme() == "https" => Ok(url.to_string()),
            _ => {
                warn!(leader = url, "the lease names a leader API URL that is not https://: not forwarding to it");
                Err(format!("the lease names the leader at {url}, not an https:// URL: a standby forwards only over HTTPS"))
            }
        }
    }
}

/// The standby's routes.
pub fn router(forward: Forward) -> Router {
    Router::new()
        .route("/healthz", get(|State(f): State<Forward>| async move { f.standing.healthz() }))
        .route("/readyz", get(|State(f): State<Forward>| async move { readyz(&f.standing) }))
        .fallback(forward_request)
        .with_state(forward)
}

/// The standby's `--metrics` listener: its role and the lease's epoch
/// (the driver's figures are the leader's), `/healthz`, `/readyz`.
pub fn metrics_router(standing: Arc<Standing>) -> Router {
    let scrape = |State(s): State<Arc<Standing>>| async move {
        let mut text = sluice_protocol::metrics::Text::default();
        s.write_metrics(&mut text);
        ([(header::CONTENT_TYPE, sluice_protocol::metrics::CONTENT_TYPE)], text.finish())
    };
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|State(s): State<Arc<Standing>>| async move { s.healthz() }))
        .route("/readyz", get(|State(s): State<Arc<Standing>>| async move { readyz(&s) }))
        .with_state(standing)
}

/// Ready while there is a leader to forward to: a load balancer may send
/// anything to a ready standby.
fn readyz(standing: &Standing) -> Response {
    match standing.leader() {
        Some(leader) => (StatusCode::OK, format!("ok (standby; leader {})\n", leader.api_url)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader: a standby forwards to the leader, and none holds the lease\n")
            .into_response(),
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// 7.6.1): not forwarded either way.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    // Headers the sender named in `Connection` belong to that connection too.
    for value in headers.get_all(header::CONNECTION) {
        for name in value.to_str().unwrap_or("").split(',') {
            if let Ok(name) = HeaderName::try_from(name.trim()) {
                out.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        out.remove(name);
    }
    // The body is re-framed on the other connection (length or chunks).
    out.remove(header::TRANSFER_ENCODING);
    out.remove(header::PROXY_AUTHORIZATION);
    out
}

async fn forward_request(State(f): State<Forward>, request: Request) -> Response {
    let leader = match f.leader_url(request.headers()) {
        Ok(url) => url,
        Err(message) => return no_leader(message),
    };
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{leader}{path}");
    let method = request.method().clone();
    let mut headers = end_to_end(request.headers());
    if let Some(own) = f.own.get().and_then(|own| HeaderValue::try_from(own.as_str()).ok()) {
        headers.insert(FORWARDED_BY, own);
    } else {
        headers.insert(FORWARDED_BY, HeaderValue::from_static("a standby"));
    }
    let has_body = headers.contains_key(header::CONTENT_LENGTH) || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut outgoing = f.client.request(method, &url).headers(headers);
    if has_body {
        let stream = request.into_body().into_data_stream();
        outgoing = outgoing.body(reqwest::Body::wrap_stream(stream));
    }
    // A leader paused or cut off accepts the connection and never answers.
    // Only a connection never made means nothing was done: once the request
    // may have been sent, the leader may have carried it out.
    let answer = match tokio::time::timeout(ANSWER_WITHIN, outgoing.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) if e.is_connect() => {
            debug!(leader, "forwarding to the leader: {e}");
            return no_leader(format!("cannot connect to the leader at {leader}; try again shortly"));
        }
        Ok(Err(e)) => {
            debug!(leader, "forwarding to the leader: {e}");
            return leader_lost(
                StatusCode::BAD_GATEWAY,
                format!("the connection to the leader at {leader} broke: the request may have been carried out"),
            );
        }
        Err(_) => {
            return leader_lost(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the leader at {leader} did not answer within {ANSWER_WITHIN:?}: the request may have been carried out"
                ),
            );
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(out) = response.headers_mut() {
        *out = end_to_end(answer.headers());
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    response.body(body).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// 502 or 504 with code [`LEADER_LOST`]: the outcome is unknown.
fn leader_lost(status: StatusCode, message: String) -> Response {
    let body = crate::ops::error::ErrorBody {
        error: crate::ops::error::ErrorDetail { code: LEADER_LOST.into(), message, diagnostics: Vec::new() },
    };
    (status, axum::Json(body)).into_response()
}

/// How long the leader has to start answering a forwarded request (its
/// body may then stream for as long as it takes).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// 503, `Retry-After: 1`, in the house error shape with code `NoLeader`.
pub fn no_leader(message: String) -> Response {
    let body = crate::ops::error::ErrorBody {
        error: crate::ops::error::ErrorDetail { code: crate::ops::NO_LEADER.into(), message, diagnostics: Vec::new() },
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_stay_on_their_connection_and_the_rest_goes_on() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"));
        headers.insert(header::HOST, HeaderValue::from_static("a.example:8443"));
        headers.insert("x-amz-date", HeaderValue::from_static("20261206T100000Z"));
        let out = end_to_end(&headers);
        assert!(out.get(header::CONNECTION).is_none() && out.get(header::TRANSFER_ENCODING).is_none());
        // What a signature covers reaches the leader unchanged.
        assert_eq!(out.get(header::HOST).unwrap(), "a.example:8443");
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "AWS4-HMAC-SHA256 Credential=x");
        assert_eq!(out.get("x-amz-date").unwrap(), "20261206T100000Z");
    }

    #[tokio::test]
    async fn without_a_leader_a_standby_answers_503_no_leader_with_retry_after() {
        let response = no_leader("no controller holds the lease".into());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "NoLeader");
    }

    // Real sockets from here on (issue 18, fwdfix): standbys serving the
    // forwarding router over TLS from one cluster CA, and what they forward to.

    use crate::https::{CertSource, Tls};
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    struct Cluster {
        _dir: tempfile::TempDir,
        ca: Arc<crate::ca::Ca>,
        client: reqwest::Client,
    }

    impl Cluster {
        fn new() -> Self {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let dir = tempfile::tempdir().unwrap();
            let ca = Arc::new(crate::ca::Ca::load_or_create(&dir.path().join("ca")).unwrap());
            let roots = reqwest::Certificate::from_pem_bundle(ca.cert_pem().as_bytes()).unwrap();
            let client = reqwest::Client::builder()
                .tls_certs_only(roots)
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap();
            Self { _dir: dir, ca, client }
        }

        fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            Tls::start(self.ca.clone(), &CertSource::Ca { names: Vec::new() }, &[]).unwrap().acceptor
        }

        /// A standby on its own port, which it advertises; its idea of the
        /// leader is set by the caller through the returned `Standing`.
        async fn standby(&self) -> (String, Arc<Standing>) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let standing = Arc::new(Standing::default());
            let forward = Forward::new(standing.clone(), self.ca.cert_pem(), LeaderTrust::ClusterCa).unwrap();
            forward.own_url().set(url.clone()).unwrap();
            tokio::spawn(crate::https::serve(listener, router(forward), Some(self.acceptor()), "test-standby"));
            (url, standing)
        }
    }

    fn leads(standing: &Standing, api_url: &str) {
        standing.set_leader(Some(super::super::Leader { api_url: api_url.into(), fleet_addr: "x:1".into(), epoch: 1 }));
    }

    async fn error_of(response: reqwest::Response) -> (u16, String, String) {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body["error"]["code"].as_str().unwrap().into(), body["error"]["message"].as_str().unwrap().into())
    }

    /// M1: a controller restarted within the lease's time finds its own URL
    /// in the row: it answers 503 NoLeader at once, never forwarding to itself.
    #[tokio::test]
    async fn a_standby_never_forwards_to_itself() {
        let cluster = Cluster::new();
        let (url, standing) = cluster.standby().await;
        leads(&standing, &url);
        let started = std::time::Instant::now();
        let answer = cluster.client.get(format!("{url}/v1/pipelines")).send().await.unwrap();
        let (status, code, message) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (503, "NoLeader"), "{message}");
        assert!(message.contains("names this controller"), "{message}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    /// M1: two standbys that each take the other for the leader (a stale
    /// view while the lease moves) pass a request on once, not round and round.
    #[tokio::test]
    async fn two_standbys_that_take_each_other_for_the_leader_do_not_loop() {
        let cluster = Cluster::new();
        let ((a, a_standing), (b, b_standing)) = (cluster.standby().await, cluster.standby().await);
        leads(&a_standing, &b);
        leads(&b_standing, &a);
        let answer = cluster.client.post(format!("{a}/v1/tokens")).body("{}").send().await.unwrap();
        let (status, code, message) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (503, "NoLeader"), "{message}");
        assert!(message.contains(&format!("the standby at {a} took this controller for the leader")), "{message}");
    }

    /// A leader that reads the request and then drops the connection.
    async fn leader_that_hangs_up(cluster: &Cluster) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = cluster.acceptor();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                }
            }
        });
        (addr, seen)
    }

    /// M2: once the request may have reached the leader, a lost connection
    /// is 502 LeaderLost ("may have been carried out"), never NoLeader
    /// ("nothing was done", which a client sends again anywhere).
    #[tokio::test]
    async fn a_leader_that_hangs_up_after_the_request_is_leader_lost_not_no_leader() {
        let cluster = Cluster::new();
        let (leader, seen) = leader_that_hangs_up(&cluster).await;
        let (url, standing) = cluster.standby().await;
        leads(&standing, &format!("https://{leader}"));
        let answer = cluster.client.post(format!("{url}/v1/tokens")).body("{}").send().await.unwrap();
        let (status, code, message) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (502, "LeaderLost"), "{message}");
        assert!(message.contains("may have been carried out"), "{message}");
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        // A leader that takes no connection at all: nothing was done.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        leads(&standing, &format!("https://{dead}"));
        let answer = cluster.client.post(format!("{url}/v1/tokens")).body("{}").send().await.unwrap();
        let (status, code, message) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (503, "NoLeader"), "{message}");
    }

    /// M3: a lease row naming a plain `http://` leader (a row rewritten by
    /// whoever can write to the database or sits on its path) gets no
    /// request, so no token travels in clear.
    #[tokio::test]
    async fn a_plain_http_leader_is_never_sent_a_request() {
        let cluster = Cluster::new();
        let evil = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let evil_addr = evil.local_addr().unwrap();
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = connected.clone();
        tokio::spawn(async move {
            if evil.accept().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let (url, standing) = cluster.standby().await;
        leads(&standing, &format!("http://{evil_addr}"));
        let answer = cluster.client.get(format!("{url}/v1/pipelines")).bearer_auth("sat_secret").send().await.unwrap();
        let (status, code, message) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (503, "NoLeader"), "{message}");
        assert!(message.contains("not an https:// URL"), "{message}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!connected.load(std::sync::atomic::Ordering::SeqCst), "the standby connected to the http:// leader");
    }

    /// A request through a standby reaches the leader with its headers (and
    /// the standby's mark), and the answer comes back.
    #[tokio::test]
    async fn a_request_through_a_standby_reaches_the_leader_marked() {
        let cluster = Cluster::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let leader = format!("https://{}", listener.local_addr().unwrap());
        let echo = Router::new().fallback(|headers: HeaderMap| async move {
            let by = headers.get(&FORWARDED_BY).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            format!("{by}|{auth}|{}", headers.contains_key("x-private"))
        });
        tokio::spawn(crate::https::serve(listener, echo, Some(cluster.acceptor()), "test-leader"));
        let (url, standing) = cluster.standby().await;
        leads(&standing, &leader);
        let answer = cluster
            .client
            .get(format!("{url}/v1/pipelines"))
            .bearer_auth("t")
            .header(header::CONNECTION, "x-private")
            .header("x-private", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), format!("{url}|Bearer t|false"));
    }

    /// M4: controllers that serve an operator's certificate (`--api-cert`,
    /// here from a CA of the operator's, known to the system through
    /// `SSL_CERT_FILE`) are forwarded to when the standby serves one too;
    /// the cluster's CA alone does not verify them.
    #[tokio::test]
    #[allow(unsafe_code)] // set_var, for the system's roots
    async fn a_leader_with_an_operators_certificate_is_verified_with_the_systems_roots() {
        let cluster = Cluster::new();
        let operator_dir = tempfile::tempdir().unwrap();
        let operator_ca = Arc::new(crate::ca::Ca::load_or_create(&operator_dir.path().join("ca")).unwrap());
        let bundle = operator_dir.path().join("system-roots.pem");
        std::fs::write(&bundle, operator_ca.cert_pem()).unwrap();
        // SAFETY: no other test of this binary reads SSL_CERT_FILE (none
        // reaches a server through the system's roots).
        unsafe { std::env::set_var("SSL_CERT_FILE", &bundle) };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let leader = format!("https://{}", listener.local_addr().unwrap());
        let operator_tls = Tls::start(operator_ca, &CertSource::Ca { names: Vec::new() }, &[]).unwrap();
        let hello = Router::new().fallback(|| async { "from the leader" });
        tokio::spawn(crate::https::serve(listener, hello, Some(operator_tls.acceptor), "test-leader"));
        for (trust, expected) in [(LeaderTrust::ClusterCaAndSystem, 200), (LeaderTrust::ClusterCa, 503)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("https://{}", listener.local_addr().unwrap());
            let standing = Arc::new(Standing::default());
            let forward = Forward::new(standing.clone(), cluster.ca.cert_pem(), trust).unwrap();
            tokio::spawn(crate::https::serve(listener, router(forward), Some(cluster.acceptor()), "test-standby"));
            leads(&standing, &leader);
            let answer = cluster.client.get(format!("{url}/v1/pipelines")).send().await.unwrap();
            assert_eq!(answer.status().as_u16(), expected, "{trust:?}: {}", answer.text().await.unwrap());
        }
    }
}
