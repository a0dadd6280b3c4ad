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
    /// `base` is the controller's API address, with or without `http://`.
    pub fn new(base: &str, token: &str) -> Result<Self, OpError> {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
        reqwest::Url::parse(&base).map_err(|e| OpError::invalid(format!("API address {base:?} is not a URL: {e}")))?;
        let http = reqwest::Client::builder().build().map_err(|e| OpError::Internal(e.to_string()))?;
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
        OpError::Unavailable(format!(
            "cannot reach the controller at {}: {e} (is `sluice controller` running? set --api or SLUICE_API)",
            self.base
        ))
    }
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
        assert_eq!(url.as_str(), "http://127.0.0.1:7400/v1/pipelines/web%20app/executions?maxResults=5");
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
