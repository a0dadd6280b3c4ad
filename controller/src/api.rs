//! The admin HTTP API: JSON under `/v1`, bearer tokens, live events as
//! Server-Sent Events. Every route of the operations table
//! ([`crate::ops`]) is served by one generic handler: it builds the
//! request from the path, the query and the body, checks the caller's role
//! against the operation's permission, hands the request to the driver and
//! serializes the typed answer. Handlers only translate: every decision is
//! the driver's. Hand-written here are only the routes whose transport
//! differs: plugin push (a binary body), webhook deliveries (authenticated
//! by the signature of the raw body), the event stream and `/healthz`.

use crate::auth::Caller;
use crate::driver::command::Command;
use crate::ops::{self, DeliverWebhook, OpError, Operation, PushPlugin, Route, VetPluginSignature};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

pub use crate::ops::SIGNATURE_HEADER;

#[derive(Clone)]
pub struct ApiState {
    pub driver: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Arc<Value>>,
    /// Token hashes to users (the admin token included).
    pub tokens: crate::auth::Tokens,
    pub runtime: Arc<sluice_runtime::Runtime>,
    /// Access keys and ARNs of the AWS-compatible API (`crate::aws`).
    pub aws: crate::aws::AwsState,
    /// The artifact store, for the S3 subset of job workers (`crate::aws::s3`).
    pub artifacts: crate::blobs::BlobStore,
    /// Multipart uploads of job workers in progress (`crate::aws::s3_multipart`).
    pub multipart: crate::aws::s3_multipart::Spool,
    /// Zips of stored archives served to job workers (`crate::aws::s3_zips`).
    pub zips: crate::aws::s3_zips::ServedZips,
    /// Who may do what (the driver checks every call; the event stream
    /// filters with it).
    pub directory: crate::policy::Directory,
    /// How many refusals of unauthenticated requests the audit log takes
    /// per second (the rest are counted into the next one recorded).
    pub refusals: crate::audit::RefusalBudget,
    /// The web console's sessions (`crate::console`).
    pub console: crate::console::Console,
    // Metrics and readiness (issue 17, obs).
    /// What `/metrics` reports besides the driver's part.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Registers the generic handler of each operation at its route.
struct Routes;

impl ops::Registrar<Router<ApiState>> for Routes {
    fn register<O: Route>(&mut self, router: Router<ApiState>) -> Router<ApiState> {
        let filter = MethodFilter::try_from(O::METHOD).expect("the route table uses standard methods");
        router.route(&positional(O::PATH), on(filter, serve::<O>))
    }
}

/// A table path with each `{field}` named by its segment's position
/// (`/pipelines/{name}/executions/{pipelineExecutionId}` becomes
/// `/pipelines/{s2}/executions/{s4}`): the router requires one name per
/// position under a common prefix, while CodePipeline names the pipeline
/// `name` in some operations and `pipelineName` in others. The generic
/// handler maps positions back to fields ([`field_of`]).
fn positional(path: &str) -> String {
    path.split('/')
        .enumerate()
        .map(|(i, segment)| if segment.starts_with('{') { format!("{{s{i}}}") } else { segment.to_string() })
        .collect::<Vec<_>>()
        .join("/")
}

/// The field of `path` that the positional parameter `param` (`s4`) fills.
fn field_of<'a>(path: &'a str, param: &str) -> Option<&'a str> {
    let index: usize = param.strip_prefix('s')?.parse().ok()?;
    path.split('/').nth(index)?.strip_prefix('{')?.strip_suffix('}')
}

/// Everything on one listener: the API with webhook deliveries.
pub fn router(state: ApiState) -> Router {
    routes(state.clone(), hooks()).with_state(state)
}

/// The API without webhook deliveries, which a listener of their own
/// serves (`--webhook-listen`): `POST /v1/webhooks/{name}` is not found here.
pub fn router_without_webhooks(state: ApiState) -> Router {
    let elsewhere = Router::new().route(&positional("/webhooks/{name}"), post(delivered_elsewhere));
    routes(state.clone(), elsewhere).with_state(state)
}

/// A delivery to the API when the webhook listener serves them.
async fn delivered_elsewhere() -> OpError {
    OpError::NotFound("webhook deliveries are served on the webhook listener (--webhook-listen), not the API".into())
}

/// The webhook listener's routes: deliveries and `/healthz`, nothing else
/// (the admin API need not be reachable where webhooks come from).
pub fn webhook_router(state: ApiState) -> Router {
    Router::new()
        .nest("/v1", hooks())
        .route("/healthz", get(|| async { crate::ha::standing().healthz() }))
        // Deliveries are audited with their request id and source too.
        .layer(middleware::from_fn_with_state(state.clone(), origin))
        .with_state(state)
}

/// Webhook deliveries carry their own authentication (a signature of the body).
fn hooks() -> Router<ApiState> {
    Router::new()
        .route(&positional("/webhooks/{name}"), post(webhook))
        .layer(DefaultBodyLimit::max(crate::webhooks::MAX_BODY_BYTES))
}

/// The API's routes, with `extra` routes under `/v1` (webhook deliveries
/// when this listener serves them).
fn routes(state: ApiState, extra: Router<ApiState>) -> Router<ApiState> {
    let v1 = ops::for_each_route(Router::new(), &mut Routes)
        .route("/plugins", post(push_plugin))
        // Data lifecycle (issue 17, life): CreateBackup, copied off the driver's task.
        .route("/backups", post(crate::backup::create))
        // Verbs the table does not have get the answer they always got.
        .route(&positional("/pipelines/{name}/stages/{stage}/transition/{verb}"), post(no_transition_verb))
        .route(&positional("/agents/{id}/{verb}"), post(no_agent_verb))
        .route("/events", get(events))
        // An artifact's archive (issue 16, pages): `GetArtifact`, then the bytes.
        .route(&positional("/pipelines/{name}/executions/{id}/artifacts/{artifact}/content"), get(artifact_content))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES + 1));
    // Metrics and readiness (issue 17, obs): `/metrics` takes a token with
    // `sluice:GetMetrics` here (`--metrics ADDR` serves it without one);
    // `/readyz` answers anyone, as `/healthz` does.
    let metrics = get(api_metrics).layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // The AWS-compatible API (`POST /`) authenticates with SigV4, not tokens.
    Router::new()
        .nest("/v1", v1.merge(extra))
        .route("/healthz", get(|| async { crate::ha::standing().healthz() }))
        .route("/readyz", get(|State(s): State<ApiState>| async move { crate::metrics::readyz(&s.metrics) }))
        .route("/metrics", metrics)
        .merge(crate::aws::routes())
        // Job workers' artifacts (S3 path-style, SigV4 with a job's credentials).
        .merge(crate::aws::s3::routes())
        // The web console: `GET /` and its pages (`POST /` is the AWS API's).
        .merge(crate::console::routes())
        // Every request of every route gets an id and its origin first.
        .layer(middleware::from_fn_with_state(state, origin))
}

/// `GET /metrics` on the API: for callers allowed [`crate::metrics::PERMISSION`].
async fn api_metrics(State(s): State<ApiState>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = s.directory.check(&caller, crate::metrics::PERMISSION, "metrics") {
        return e.into_response();
    }
    crate::metrics::scrape(&s.metrics).await
}

/// The response header that carries a request's id (the AWS endpoints'
/// `x-amzn-RequestId` carries the same).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Gives each request an id of the controller's (one a client sends is
/// ignored: the audit log's ids must be unique and not chosen by the
/// caller) and its peer's address, as an [`Origin`](crate::auth::Origin)
/// in its extensions, and returns the id in [`REQUEST_ID_HEADER`].
///
/// Every request is logged once, when its answer starts, with its method,
/// path (never the query, which may carry a secret), status, duration and
/// id (issue 17, obs); probes, scrapes and what anyone may send without
/// a token (401, 404, 405) at debug level, the rest at info. An error's JSON body carries the id too, as `requestId`.
async fn origin(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let source = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0);
    let request_id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(crate::auth::Origin { request_id: request_id.clone(), source });
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        response = with_request_id(response, &request_id).await;
    }
    let status = response.status().as_u16();
    state.metrics.count_request(status);
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Anyone can send these without a token: at info, a flood of them
    // would drown (and hit journald's rate limit before) the lines that
    // matter, such as lease losses.
    let unauthenticated = matches!(status, 401 | 404 | 405);
    if unauthenticated || matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(%method, %path, status, duration_ms, %request_id, "request");
    } else {
        tracing::info!(%method, %path, status, duration_ms, %request_id, "request");
    }
    if let Ok(id) = axum::http::HeaderValue::from_str(&request_id) {
        let headers = response.headers_mut();
        if headers.contains_key("x-amzn-requestid") {
            headers.insert("x-amzn-requestid", id.clone());
        }
        headers.insert(REQUEST_ID_HEADER, id);
    }
    response
}

/// An error answer whose body is a JSON object, with `requestId` added
/// (bodies of other kinds, such as the AWS API's, go as they are: those
/// carry the id in `x-amzn-RequestId`).
async fn with_request_id(response: Response, request_id: &str) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next() == Some("application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // JSON error bodies are built whole in memory (a message, a type and
    // the diagnostics), so reading one back costs a copy; the bound is
    // only against a streamed body, which no JSON error is.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return (parts.status, Json(serde_json::json!({"message": "the error could not be read", "requestId": request_id})))
            .into_response();
    };
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("requestId".into(), Value::String(request_id.to_string()));
            Bytes::from(Value::Object(fields).to_string())
        }
        _ => bytes,
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The largest error body [`with_request_id`] reads back.
const MAX_ERROR_BODY: usize = 16 << 20;

/// The origin [`origin`] gave a request (empty if the layer is missing).
pub fn origin_of(request_extensions: &axum::http::Extensions) -> crate::auth::Origin {
    request_extensions.get::<crate::auth::Origin>().cloned().unwrap_or_default()
}

/// Sends the audit log a record of a request that never became a call: a
/// refusal, or an event subscription (the driver records calls itself).
/// A refusal of a request that never authenticated (no or a bad token, a
/// bad signature): recorded within [`crate::audit::RefusalBudget`], so
/// that a flood of them cannot fill the disk or hold up the driver. One
/// over the budget is counted, and the count goes into the next record.
pub async fn send_refusal_record(state: &ApiState, entry: crate::audit::Entry) {
    if let Some(entry) = state.refusals.admit(entry) {
        send_audit_record(state, entry).await;
    }
}

pub async fn send_audit_record(state: &ApiState, entry: crate::audit::Entry) {
    // Waits for room rather than dropping: nothing is refused unrecorded.
    let _ = state.driver.send(Command::Audit { entry: Box::new(entry) }).await;
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

/// Resolves the bearer token to a [`Caller`] (looked up by its hash, so the
/// lookup's timing does not depend on the secret) for the handlers.
async fn authenticate(State(state): State<ApiState>, headers: HeaderMap, mut request: Request, next: Next) -> Response {
    let origin = origin_of(request.extensions());
    let caller = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.tokens.lookup(t));
    let Some(caller) = caller else {
        let refusal = OpError::Unauthorized("missing or invalid bearer token: pass --token or set SLUICE_TOKEN".into());
        let anonymous = Caller::new(ANONYMOUS, crate::auth::Role::Operator).with_origin(origin);
        // The path as sent (`nest` strips its prefix from the request's).
        let path = request.extensions().get::<axum::extract::OriginalUri>().map(|u| u.0.path().to_string());
        let resource = format!("{} {}", request.method(), path.as_deref().unwrap_or(request.uri().path()));
        let entry = crate::audit::Entry::of_caller(&anonymous, "Authenticate", &resource);
        send_refusal_record(&state, entry.failed(refusal.aws_type(), &refusal.to_string())).await;
        return refusal.into_response();
    };
    request.extensions_mut().insert(caller.with_origin(origin));
    next.run(request).await
}

/// The user the audit log names for a request without valid credentials.
pub const ANONYMOUS: &str = "-";

/// Sends an operation to the driver and waits for its typed answer.
pub async fn ask<O: Operation>(state: &ApiState, op: O, caller: Caller) -> Result<O::Output, OpError> {
    let (reply, answer) = oneshot::channel();
    let command = Command::Call { request: op.into_request(), caller, reply };
    state.driver.send(command).await.map_err(|_| OpError::Internal("the controller is shutting down".into()))?;
    let response = answer.await.map_err(|_| OpError::Internal("the controller dropped the request".into()))??;
    O::output_of(response)
        .ok_or_else(|| OpError::Internal(format!("the driver answered {} with another operation's output", O::NAME)))
}

/// `GET /v1/pipelines/{name}/executions/{id}/artifacts/{artifact}/content`
/// (issue 16, pages): the artifact's archive, after `GetArtifact` (its
/// permission, its audit record) allowed it, as the console's download.
async fn artifact_content(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((pipeline_name, pipeline_execution_id, artifact_name)): Path<(String, String, String)>,
) -> Result<Response, OpError> {
    let op = ops::GetArtifact { pipeline_name, pipeline_execution_id, artifact_name };
    let found = ask(&state, op, caller).await?;
    let archive = crate::console::pages::executions::archive(&state, &found.name, &found.digest).await;
    archive.map_err(|e| match e {
        crate::console::pages::executions::Unserved::Gone => {
            OpError::NotFound(crate::console::pages::executions::GONE.into())
        }
        crate::console::pages::executions::Unserved::Unreadable(message) => OpError::Internal(message),
    })
}

/// The one handler of every route in the table.
async fn serve<O: Route>(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<Vec<(String, String)>>,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Json<O::Output>, OpError> {
    // A request that cannot be read never reaches the driver: recorded
    // here, without the parser's message, which may quote what was sent
    // (a secret's value, say). Who may call what is the driver's check.
    let op: O = match decode(params, query, &body) {
        Ok(op) => op,
        Err(e) => {
            let entry = crate::audit::Entry::of_caller(&caller, O::NAME, "*");
            send_audit_record(&state, entry.failed(e.aws_type(), "the request could not be read")).await;
            return Err(e);
        }
    };
    Ok(Json(ask(&state, op, caller).await?))
}

/// Builds a request from its path parameters, its query parameters (those
/// the operation reads) and its body: a JSON object (empty means every
/// field's default) or, for an operation with a text body, the text.
fn decode<O: Route>(params: Vec<(String, String)>, query: Vec<(String, String)>, body: &[u8]) -> Result<O, OpError> {
    let invalid = |e: &dyn std::fmt::Display| OpError::invalid(format!("request body is invalid: {e}"));
    let mut fields = match O::TEXT_BODY {
        Some((field, what)) => {
            let text = String::from_utf8(body.to_vec()).map_err(|_| OpError::invalid(format!("{what} is not UTF-8")))?;
            Map::from_iter([(field.to_string(), Value::String(text))])
        }
        None if body.iter().all(u8::is_ascii_whitespace) => Map::new(),
        None => match serde_json::from_slice(body).map_err(|e| invalid(&e))? {
            Value::Object(fields) => fields,
            _ => return Err(invalid(&"expected a JSON object")),
        },
    };
    for (param, value) in params {
        let name = field_of(O::PATH, &param).unwrap_or(&param).to_string();
        if fields.insert(name.clone(), Value::String(value)).is_some() {
            return Err(invalid(&format!("unknown field `{name}`")));
        }
    }
    for (name, value) in query {
        if O::QUERY.contains(&name.as_str()) && !fields.contains_key(&name) {
            fields.insert(name, Value::String(value));
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| invalid(&e))
}

async fn no_transition_verb(Path((_, _, verb)): Path<(String, String, String)>) -> OpError {
    OpError::NotFound(format!("no transition operation {verb:?}: use enable or disable"))
}

async fn no_agent_verb(Path((_, verb)): Path<(String, String)>) -> OpError {
    OpError::NotFound(format!("no agent operation {verb:?}: use enable, drain, disable or revoke"))
}

/// `POST /v1/webhooks/{name}`: a push or pull-request notification.
async fn webhook(
    State(s): State<ApiState>,
    Extension(origin): Extension<crate::auth::Origin>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ops::DeliverWebhookOutput>, OpError> {
    let headers: Vec<(String, String)> =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))).collect();
    let op = DeliverWebhook { pipeline_name: name, headers, body: body.to_vec() };
    // No token: the delivery's signature, checked by the driver, is its
    // authentication.
    let sender = Caller::new("webhook", crate::auth::Role::Operator).with_via(crate::auth::Via::Webhook).with_origin(origin);
    let delivered = ask(&s, op, sender).await;
    match &delivered {
        Ok(_) => s.metrics.webhook_deliveries.inc(),
        Err(_) => s.metrics.webhook_refusals.inc(),
    }
    Ok(Json(delivered?))
}

// Largest component accepted by a push (`sluice plugin check` applies the same).
use crate::plugin_check::MAX_PLUGIN_BYTES;

/// Validates that the body is a `sluice:plugin` component by compiling it
/// and calling its `describe()`, then registers it. A signature (header
/// [`SIGNATURE_HEADER`]) that is malformed, names another component, or
/// is not a trusted publisher's is refused before anything is compiled, as
/// is a missing one under `--require-signed-plugins`.
async fn push_plugin(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ops::PushPluginOutput>, OpError> {
    let result = push_plugin_checked(&s, &caller, &headers, body).await;
    // What the driver answered it recorded; a push refused here (not
    // permitted, too large, a bad signature header, not a component) is
    // recorded here (the messages name sizes, digests and wasm errors,
    // nothing secret).
    if let Err((e, Refused::Here)) = &result {
        let entry = crate::audit::Entry::of_caller(&caller, PushPlugin::NAME, "plugin/*");
        send_audit_record(&s, entry.failed(e.aws_type(), &e.to_string())).await;
    }
    result.map_err(|(e, _)| e)
}

/// Where a push was refused: by the driver (which records its calls) or
/// before it.
enum Refused {
    Here,
    ByDriver,
}

async fn push_plugin_checked(
    s: &ApiState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Json<ops::PushPluginOutput>, (OpError, Refused)> {
    let here = |e: OpError| (e, Refused::Here);
    let driver = |e: OpError| (e, Refused::ByDriver);
    // Refused before the body is looked at (the driver checks again).
    s.directory.check(caller, PushPlugin::PERMISSION, &crate::policy::named("plugin", "*")).map_err(here)?;
    crate::plugin_check::check_size(body.len()).map_err(|e| here(OpError::invalid(e)))?;
    let signature = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    here(OpError::invalid(format!("the {SIGNATURE_HEADER} header is not base64 of a signature document")))
                })?;
            let parsed =
                sluice_runtime::signature::Signature::parse(&text).map_err(|e| here(OpError::invalid(e.to_string())))?;
            let digest = sluice_runtime::digest(&body);
            if parsed.digest() != digest {
                return Err(here(OpError::invalid(
                    sluice_runtime::signature::SignatureError::DigestMismatch {
                        signed: parsed.digest().into(),
                        component: digest,
                    }
                    .to_string(),
                )));
            }
            Some(text)
        }
    };
    // A signature required, or sent, is checked against the trusted
    // publishers before any of the component's code is compiled or run.
    let digest = sluice_runtime::digest(&body);
    ask(s, VetPluginSignature { digest, signature: signature.clone() }, caller.clone()).await.map_err(driver)?;
    let wasm = body.to_vec();
    // The refusal `sluice plugin check` gives too (crate::plugin_check).
    let info = crate::driver::catalog::describe(&s.runtime, wasm.clone()).await.map_err(|e| here(OpError::invalid(e)))?;
    let pushed = ask(s, PushPlugin { wasm, info: Box::new(info), signature }, caller.clone()).await.map_err(driver)?;
    Ok(Json(pushed))
}

/// `?pipeline=NAME`: the events of one pipeline only. `?types=state`:
/// no log lines (a page that shows none need not receive them); `types`
/// is a comma-separated list of `state` (every event but log lines),
/// `log`, or an event's own type (`execution`, `stage`, ...).
#[derive(Deserialize, Default)]
pub struct EventsQuery {
    pipeline: Option<String>,
    types: Option<String>,
}

impl EventsQuery {
    /// Whether an event of type `kind` was asked for.
    fn wants(&self, kind: &str) -> bool {
        let Some(types) = self.types.as_deref().filter(|t| !t.trim().is_empty()) else { return true };
        types.split(',').map(str::trim).any(|t| t == kind || (t == "state" && kind != "log"))
    }
}

/// Whether a subscriber's credential (and, for the console, its session)
/// still stands: asked on every event and every [`ALIVE_TICK`], so a
/// sign-out, an expired session or a revoked token ends the stream.
pub type Alive = Box<dyn Fn(&ApiState) -> bool + Send + Sync>;

/// How often an idle stream asks whether its subscriber still stands.
pub const ALIVE_TICK: Duration = Duration::from_secs(10);

/// Live events (execution, stage, action, log) as Server-Sent Events:
/// only those of pipelines the caller may read, decided per event on the
/// directory of the moment (a revoked permission stops the flow at once).
/// Asking for one pipeline the caller may not read is refused outright.
/// The stream ends when the bearer token is revoked.
async fn events(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, OpError> {
    // The token itself is not kept: only its hash, looked up again.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(crate::auth::hash)
        .unwrap_or_default();
    let alive: Alive = Box::new(move |s: &ApiState| s.tokens.lookup_hash(&token).is_some());
    subscribe(s, caller, q, alive).await
}

/// The filtered event stream of a caller (the API's `/v1/events` and the
/// console's `/console/events`).
pub async fn subscribe(
    s: ApiState,
    caller: Caller,
    q: EventsQuery,
    alive: Alive,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, OpError> {
    // A subscription is a call too (issue 15, gov): recorded when it
    // starts, or when it is refused.
    let resource = q.pipeline.as_deref().map_or_else(|| "*".to_string(), crate::policy::pipeline);
    let entry = crate::audit::Entry::of_caller(&caller, "SubscribeEvents", &resource);
    if let Some(p) = &q.pipeline
        && let Err(e) = s.directory.check(&caller, STATE_PERMISSION, &crate::policy::pipeline(p))
    {
        send_audit_record(&s, entry.failed(e.aws_type(), &e.to_string())).await;
        return Err(e);
    }
    send_audit_record(&s, entry).await;
    let directory = s.directory.clone();
    let events = BroadcastStream::new(s.events.subscribe()).map(|item| item.ok());
    // A tick, so that a quiet stream also notices its end.
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(ALIVE_TICK).await;
        Some((None, ()))
    });
    let stream = events.merge(ticks).take_while(move |_| alive(&s)).filter_map(move |item| {
        let value = item?;
        if !q.wants(value["type"].as_str().unwrap_or_default()) {
            return None;
        }
        let may = |action: &str, resource: &str| directory.allows(&caller, action, resource);
        delivered(&value, q.pipeline.as_deref(), may).then(|| Ok(Event::default().data(value.to_string())))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))))
}

/// Whether a subscriber to `only` (one pipeline's events, or all when
/// None) who `may` (action, resource) gets `event`. A pipeline's events
/// need its state, its log lines its logs. Agent events (issue 16, pages:
/// the console's agents page) belong to no pipeline: only the stream of
/// everything carries them, to who may list agents. Any other event
/// without a pipeline is nobody's.
fn delivered(event: &serde_json::Value, only: Option<&str>, may: impl Fn(&str, &str) -> bool) -> bool {
    if event["type"] == "agent" {
        return only.is_none() && may(AGENTS_PERMISSION, crate::policy::ANY);
    }
    let Some(pipeline) = event["pipeline"].as_str() else {
        return false;
    };
    if only.is_some_and(|p| p != pipeline) {
        return false;
    }
    let permission = if event["type"] == "log" { LOGS_PERMISSION } else { STATE_PERMISSION };
    may(permission, &crate::policy::pipeline(pipeline))
}

/// What reading a pipeline's events takes: its state, and its logs for log lines.
const STATE_PERMISSION: &str = <ops::GetPipelineState as Operation>::PERMISSION;
const LOGS_PERMISSION: &str = <ops::GetExecutionLogs as Operation>::PERMISSION;
/// What agent events take: what the agents page's list takes.
const AGENTS_PERMISSION: &str = <ops::ListAgents as Operation>::PERMISSION;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_stream_asked_for_state_gets_no_log_lines() {
        let q = |types: Option<&str>| EventsQuery { pipeline: None, types: types.map(str::to_string) };
        assert!(q(None).wants("log") && q(None).wants("stage"));
        assert!(q(Some("")).wants("log"));
        assert!(!q(Some("state")).wants("log"));
        assert!(q(Some("state")).wants("execution") && q(Some("state")).wants("transition"));
        assert!(q(Some("log")).wants("log") && !q(Some("log")).wants("stage"));
        assert!(q(Some("stage, log")).wants("stage") && !q(Some("stage,log")).wants("action"));
    }

    #[test]
    fn a_request_is_built_from_path_query_and_body() {
        let op: ListPipelineExecutions =
            decode(pairs(&[("s2", "web")]), pairs(&[("maxResults", "5"), ("other", "x")]), b"").unwrap();
        assert_eq!((op.pipeline_name.as_str(), op.max_results, op.next_token), ("web", Some(5), None));

        let op: StartPipelineExecution = decode(pairs(&[("s2", "web")]), vec![], b"  \n").unwrap();
        assert!(op.variables.is_empty() && op.source_revisions.is_empty());

        let body = br#"{"variables": [{"name": "Env", "value": "prod"}]}"#;
        let op: StartPipelineExecution = decode(pairs(&[("s2", "web")]), vec![], body).unwrap();
        assert_eq!(op.variables[0].value, "prod");

        let op: UpdatePipeline = decode(pairs(&[("s2", "web")]), vec![], b"pipeline: {}").unwrap();
        assert_eq!(op.pipeline_declaration, "pipeline: {}");
    }

    /// The router refuses conflicting routes only when it is built: build it.
    #[tokio::test]
    async fn the_router_builds_with_every_route() {
        let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig::default()).unwrap();
        let (driver, _) = mpsc::channel(1);
        let (events, _) = broadcast::channel(1);
        let aws = crate::aws::AwsState::new(crate::aws::keys::AccessKeys::default(), "test");
        let dir = tempfile::tempdir().unwrap();
        let artifacts = crate::blobs::BlobStore::open(dir.path()).unwrap();
        let multipart = crate::aws::s3_multipart::Spool::open(&dir.path().join("s3-uploads"), 0).unwrap();
        let zips = crate::aws::s3_zips::ServedZips::open(&dir.path().join("s3-zips")).unwrap();
        let tokens = crate::auth::Tokens::default();
        let directory = crate::policy::Directory::default();
        let refusals = crate::audit::RefusalBudget::default();
        let console = crate::console::Console::new(crate::https::Scheme::Https);
        let metrics = Default::default();
        let state = ApiState {
            driver,
            events,
            tokens,
            runtime,
            aws,
            artifacts,
            multipart,
            zips,
            directory,
            refusals,
            console,
            metrics,
        };
        let _ = router(state);
        assert_eq!(
            positional("/pipelines/{pipelineName}/executions/{pipelineExecutionId}"),
            "/pipelines/{s2}/executions/{s4}"
        );
        assert_eq!(
            field_of("/pipelines/{pipelineName}/executions/{pipelineExecutionId}", "s4"),
            Some("pipelineExecutionId")
        );
    }

    // Agent events (issue 16, pages).
    #[test]
    fn events_reach_only_who_may_read_them_and_agent_events_only_the_stream_of_everything() {
        use serde_json::json;
        let agent = json!({"type": "agent", "agent": "a-1", "change": "Draining"});
        let stage = json!({"type": "stage", "pipeline": "web", "stage": "Build"});
        let log = json!({"type": "log", "pipeline": "web", "text": "hi"});
        let nobodys = json!({"type": "agent-ish", "agent": "a-1"});
        let everything = |_: &str, _: &str| true;
        let no_agents = |action: &str, _: &str| action != AGENTS_PERMISSION;
        let state_only = |action: &str, resource: &str| action == STATE_PERMISSION && resource == "pipeline/web";
        assert!(delivered(&agent, None, everything));
        assert!(!delivered(&agent, Some("web"), everything), "a pipeline's stream carries no agent events");
        assert!(!delivered(&agent, None, no_agents));
        assert!(!delivered(&agent, None, state_only));
        assert!(delivered(&stage, None, state_only) && delivered(&stage, Some("web"), state_only));
        assert!(!delivered(&stage, Some("api"), everything));
        assert!(!delivered(&log, None, state_only), "log lines need the logs permission");
        assert!(delivered(&log, None, no_agents));
        assert!(!delivered(&nobodys, None, everything));
    }

    #[test]
    fn bad_requests_are_validation_errors() {
        let refused = |e: OpError| matches!(e, OpError::Validation { .. }) && e.status() == 400;
        // Unknown fields, a path field in the body, wrong types, a missing field.
        assert!(refused(decode::<StartPipelineExecution>(pairs(&[("s2", "w")]), vec![], br#"{"nope": 1}"#).unwrap_err()));
        assert!(refused(decode::<StartPipelineExecution>(pairs(&[("s2", "w")]), vec![], br#"{"name": "x"}"#).unwrap_err()));
        assert!(refused(decode::<StartPipelineExecution>(pairs(&[("s2", "w")]), vec![], b"[]").unwrap_err()));
        assert!(refused(decode::<CreateUser>(vec![], vec![], b"").unwrap_err()));
        assert!(refused(
            decode::<ListPipelineExecutions>(pairs(&[("s2", "w")]), pairs(&[("maxResults", "x")]), b"").unwrap_err()
        ));
        let bad =
            decode::<PutApprovalResult>(pairs(&[("s2", "w"), ("s4", "s"), ("s6", "a")]), vec![], br#"{"status": "Maybe"}"#);
        assert!(refused(bad.unwrap_err()));
        let not_utf8 = decode::<CreatePipeline>(vec![], vec![], &[0xff, 0xfe]).unwrap_err();
        assert_eq!(not_utf8, OpError::invalid("pipeline declaration is not UTF-8"));
    }
}
