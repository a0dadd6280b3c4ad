//! The admin API's client side: `client.call(op)` sends any [`Route`]
//! operation the way the route table says and reads its typed output.

use super::error::{ErrorBody, OpError};
use super::{PushPluginOutput, Route};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;

/// A request's URL and its body with the body's content type.
type Encoded = (reqwest::Url, Option<(Vec<u8>, &'static str)>);

/// The header that carries a pushed plugin's signature document, base64.
pub const SIGNATURE_HEADER: &str = "sluice-plugin-signature";

/// A client of the admin API (`/v1`, bearer token).
#[derive(Clone)]
pub struct Client {
    base: String,
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
    /// `ca` (PEM: one or more certificates) alone when given.
    pub fn with_ca(base: &str, token: &str, ca: Option<&[u8]>) -> Result<Self, OpError> {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") { base.to_string() } else { format!("https://{base}") };
        reqwest::Url::parse(&base).map_err(|e| OpError::invalid(format!("API address {base:?} is not a URL: {e}")))?;
        let http = http_client(ca)?;
        Ok(Self { base, token: token.trim().to_string(), http })
    }

    pub fn base(&self) -> &str {
        &self.base
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
        let (url, body) = self.encode(&op)?;
        let mut request = self.http.request(O::METHOD, url);
        if let Some((body, content_type)) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        self.send(request).await
    }

    /// `PushPlugin`'s transport: the component as the body, its signature
    /// document (if any) base64 in [`SIGNATURE_HEADER`].
    pub async fn push_plugin(&self, wasm: Vec<u8>, signature: Option<&str>) -> Result<PushPluginOutput, OpError> {
        use base64::Engine as _;
        let mut request = self.http.post(self.url("/plugins")?).body(wasm);
        if let Some(text) = signature {
            request = request.header(SIGNATURE_HEADER, base64::engine::general_purpose::STANDARD.encode(text));
        }
        self.send(request).await
    }

    // Data lifecycle (issue 17, life).
    /// `CreateBackup`'s transport (`POST /v1/backups`, routed by hand: the
    /// copy happens off the driver's task).
    pub async fn create_backup(&self, op: super::CreateBackup) -> Result<super::CreateBackupOutput, OpError> {
        let body = serde_json::to_vec(&op).map_err(|e| OpError::Internal(e.to_string()))?;
        let request = self.http.post(self.url("/backups")?).header(reqwest::header::CONTENT_TYPE, "application/json");
        self.send(request.body(body)).await
    }

    /// `/v1` + `path`.
    pub fn url(&self, path: &str) -> Result<reqwest::Url, OpError> {
        reqwest::Url::parse(&format!("{}/v1{path}", self.base))
            .map_err(|e| OpError::invalid(format!("{}/v1{path} is not a URL: {e}", self.base)))
    }

    /// The URL (path and query filled from the request's fields) and the
    /// body (the fields left, as JSON, or the text field) of `op`.
    fn encode<O: Route>(&self, op: &O) -> Result<Encoded, OpError> {
        let mut fields = match serde_json::to_value(op) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) | Err(_) => return Err(OpError::Internal(format!("{} does not serialize to an object", O::NAME))),
        };
        let mut url = self.url("")?;
        {
            let mut segments =
                url.path_segments_mut().map_err(|()| OpError::invalid(format!("{} cannot be a base URL", self.base)))?;
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

    async fn send<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, OpError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| self.unreachable(e))?;
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
        OpError::Unavailable(unreachable(&self.base, &e))
    }
}

/// An HTTP client for the controller's API: TLS with the process's
/// crypto provider (ring, installed here when nothing else did), trusting
/// `ca` alone when given, the system's roots otherwise.
pub fn http_client(ca: Option<&[u8]>) -> Result<reqwest::Client, OpError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
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
