//! What a standby's API listener serves: `/healthz`, `/readyz` and
//! `/metrics`-free status of its own, and every other request forwarded
//! verbatim to the leader's `api_url` (method, path, query, headers with
//! `Authorization` and the `Host` a SigV4 signature covers, the body as it
//! streams), the answer streamed back the same way (`/v1/events`, log
//! follow). The leader is verified with the cluster's CA. Without a leader,
//! or when it does not answer, 503 with `Retry-After` and `NoLeader`.

use super::Standing;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt as _;
use std::sync::Arc;
use tracing::debug;

/// The standby's forwarding state.
#[derive(Clone)]
pub struct Forward {
    standing: Arc<Standing>,
    client: reqwest::Client,
}

impl Forward {
    /// A client that trusts the cluster's CA alone and follows no redirect
    /// (a redirect is the leader's answer to the client, not to us).
    pub fn new(standing: Arc<Standing>, ca_pem: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())?;
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()?;
        Ok(Self { standing, client })
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
    for name in &HOP_BY_HOP {
        out.remove(name);
    }
    // The body is re-framed on the other connection (length or chunks).
    out.remove(header::TRANSFER_ENCODING);
    out.remove(header::PROXY_AUTHORIZATION);
    out
}

async fn forward_request(State(f): State<Forward>, request: Request) -> Response {
    let Some(leader) = f.standing.leader() else {
        return no_leader("no controller holds the lease; try again shortly".into());
    };
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", leader.api_url.trim_end_matches('/'));
    let method = request.method().clone();
    let headers = end_to_end(request.headers());
    let has_body = headers.contains_key(header::CONTENT_LENGTH) || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut outgoing = f.client.request(method, &url).headers(headers);
    if has_body {
        let stream = request.into_body().into_data_stream();
        outgoing = outgoing.body(reqwest::Body::wrap_stream(stream));
    }
    // A leader paused or cut off accepts the connection and never answers:
    // the client gets NoLeader (and tries again) rather than waiting forever.
    let answer = match tokio::time::timeout(ANSWER_WITHIN, outgoing.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            debug!(leader = %leader.api_url, "forwarding to the leader: {e}");
            return no_leader(format!("the leader at {} does not answer; try again shortly", leader.api_url));
        }
        Err(_) => return no_leader(format!("the leader at {} did not answer within {ANSWER_WITHIN:?}", leader.api_url)),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(out) = response.headers_mut() {
        *out = end_to_end(answer.headers());
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    response.body(body).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// How long the leader has to start answering a forwarded request (its
/// body may then stream for as long as it takes).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// 503, `Retry-After: 1`, in the house error shape with code `NoLeader`.
pub fn no_leader(message: String) -> Response {
    let body = crate::ops::error::ErrorBody {
        error: crate::ops::error::ErrorDetail { code: "NoLeader".into(), message, diagnostics: Vec::new() },
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
}
