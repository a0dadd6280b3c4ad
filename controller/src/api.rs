//! The admin HTTP API: JSON under `/v1`, bearer tokens, live events as
//! Server-Sent Events. Operations mirror CodePipeline's (CreatePipeline,
//! GetPipeline, GetPipelineState, StartPipelineExecution, ...) so that an
//! awsJson endpoint can later be a thin layer over the same driver
//! commands. Handlers only translate: every decision is the driver's.

use crate::engine::Trigger;
use crate::server::{ApiError, Command, DEFAULT_HISTORY};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

#[derive(Clone)]
pub struct ApiState {
    pub driver: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Arc<Value>>,
    pub admin_token_hash: String,
    pub runtime: Arc<sluice_runtime::Runtime>,
}

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/pipelines", get(list_pipelines).post(create_pipeline))
        .route("/pipelines/{name}", get(get_pipeline).put(update_pipeline).delete(delete_pipeline))
        .route("/pipelines/{name}/state", get(pipeline_state))
        .route("/pipelines/{name}/executions", get(list_executions).post(start_execution))
        .route("/pipelines/{name}/executions/{id}", get(get_execution))
        .route("/pipelines/{name}/executions/{id}/logs", get(execution_logs))
        .route("/pipelines/{name}/executions/{id}/stop", post(stop_execution))
        .route("/pipelines/{name}/stages/{stage}/transition/{verb}", post(set_transition))
        .route("/pipelines/{name}/stages/{stage}/retry", post(retry_stage))
        .route("/agents", get(list_agents))
        .route("/agent-tokens", post(create_join_token).get(list_join_tokens))
        .route("/agent-tokens/{id}/revoke", post(revoke_join_token))
        .route("/agents/{id}/{verb}", post(set_agent_state))
        .route("/plugins", get(list_plugins).post(push_plugin))
        .route("/pipelines/{name}/webhook", post(create_webhook).delete(delete_webhook))
        .route("/secrets", get(list_secrets))
        .route("/secrets/{name}", axum::routing::put(set_secret).delete(delete_secret))
        .route("/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES + 1));
    // Webhooks carry their own authentication (a signature of the body).
    let hooks = Router::new()
        .route("/webhooks/{name}", post(webhook))
        .layer(DefaultBodyLimit::max(crate::webhooks::MAX_BODY_BYTES));
    Router::new()
        .nest("/v1", v1.merge(hooks))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

fn error_body(status: StatusCode, code: &str, message: &str, diagnostics: &[String]) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message, "diagnostics": diagnostics } }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Invalid { message, diagnostics } => {
                error_body(StatusCode::BAD_REQUEST, "ValidationException", message, diagnostics)
            }
            ApiError::NotFound(m) => error_body(StatusCode::NOT_FOUND, "NotFoundException", m, &[]),
            ApiError::Unauthorized(m) => error_body(StatusCode::UNAUTHORIZED, "UnauthorizedException", m, &[]),
            ApiError::Conflict(m) => error_body(StatusCode::CONFLICT, "ConflictException", m, &[]),
            ApiError::Internal(m) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m, &[]),
        }
    }
}

async fn authenticate(State(state): State<ApiState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| hex::encode(Sha256::digest(t.trim().as_bytes())));
    // Comparing hashes keeps the comparison's timing independent of the
    // secret itself.
    if presented.as_deref() != Some(state.admin_token_hash.as_str()) {
        return error_body(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "missing or invalid bearer token: pass --token or set SLUICE_TOKEN",
            &[],
        );
    }
    next.run(request).await
}

/// A JSON request body the operation cannot do without.
fn required_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Invalid { message: format!("request body is invalid: {e}"), diagnostics: vec![] })
}

/// A JSON request body whose every field has a default: an empty body means
/// all defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { required_body(body) }
}

/// Sends a command to the driver and waits for its answer.
async fn ask<T>(state: &ApiState, make: impl FnOnce(oneshot::Sender<Result<T, ApiError>>) -> Command) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state.driver.send(make(tx)).await.map_err(|_| ApiError::Internal("the controller is shutting down".into()))?;
    rx.await.map_err(|_| ApiError::Internal("the controller dropped the request".into()))?
}

async fn list_pipelines(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListPipelines { reply }).await?))
}

async fn create_pipeline(State(s): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Invalid { message: "pipeline declaration is not UTF-8".into(), diagnostics: vec![] })?;
    Ok(Json(ask(&s, |reply| Command::CreatePipeline { text, reply }).await?))
}

async fn update_pipeline(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Invalid { message: "pipeline declaration is not UTF-8".into(), diagnostics: vec![] })?;
    Ok(Json(ask(&s, |reply| Command::UpdatePipeline { name, text, reply }).await?))
}

async fn delete_pipeline(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::DeletePipeline { name, reply }).await?))
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<u64>,
}

async fn get_pipeline(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::GetPipeline { name, version: q.version, reply }).await?))
}

async fn pipeline_state(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::PipelineState { name, reply }).await?))
}

#[derive(Deserialize)]
struct LimitQuery {
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
}

async fn list_executions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.max_results.unwrap_or(DEFAULT_HISTORY).clamp(1, 1000);
    Ok(Json(ask(&s, |reply| Command::ListExecutions { name, limit, reply }).await?))
}

/// StartPipelineExecution's request body.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    variables: Vec<VariableValue>,
    #[serde(default)]
    source_revisions: Vec<SourceRevisionOverride>,
    #[serde(default)]
    client_request_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableValue {
    name: String,
    value: String,
}

/// CodePipeline's `SourceRevisionOverride`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceRevisionOverride {
    action_name: String,
    /// `COMMIT_ID` (the only kind git sources have); others are refused.
    #[serde(default)]
    revision_type: Option<String>,
    revision_value: String,
}

async fn start_execution(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: StartRequest = optional_body(&body)?;
    let _ = request.client_request_token;
    let variables: BTreeMap<String, String> = request.variables.into_iter().map(|v| (v.name, v.value)).collect();
    let mut revisions = BTreeMap::new();
    for o in request.source_revisions {
        if let Some(kind) = o.revision_type.as_deref().filter(|k| *k != "COMMIT_ID") {
            return Err(ApiError::Invalid {
                message: format!("revisionType {kind:?} is not supported; use COMMIT_ID"),
                diagnostics: vec![],
            });
        }
        revisions.insert(o.action_name, o.revision_value);
    }
    let detail = if revisions.is_empty() { "admin API".to_string() } else { "admin API, pinned revisions".to_string() };
    let trigger = Trigger { trigger_type: "StartPipelineExecution".into(), trigger_detail: detail };
    Ok(Json(ask(&s, |reply| Command::StartExecution { name, variables, revisions, trigger, reply }).await?))
}

/// `POST /v1/webhooks/{name}`: a push or pull-request notification.
async fn webhook(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let body = body.to_vec();
    Ok(Json(ask(&s, |reply| Command::Webhook { name, headers, body, reply }).await?))
}

async fn create_webhook(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::CreateWebhook { name, reply }).await?))
}

async fn delete_webhook(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::DeleteWebhook { name, reply }).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    value: String,
}

async fn set_secret(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let SecretValue { value } = required_body(&body)?;
    Ok(Json(ask(&s, |reply| Command::SetSecret { name, value, reply }).await?))
}

async fn list_secrets(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListSecrets { reply }).await?))
}

async fn delete_secret(State(s): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::DeleteSecret { name, reply }).await?))
}

async fn get_execution(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::GetExecution { name, id, reply }).await?))
}

/// StopPipelineExecution's request body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopRequest {
    #[serde(default)]
    abandon: bool,
    #[serde(default)]
    reason: String,
}

async fn stop_execution(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: StopRequest = optional_body(&body)?;
    Ok(Json(
        ask(&s, |reply| Command::StopExecution { name, id, abandon: request.abandon, reason: request.reason, reply })
            .await?,
    ))
}

/// RetryStageExecution's request body (`retryMode` as CodePipeline names it).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryRequest {
    pipeline_execution_id: String,
    #[serde(default = "failed_actions")]
    retry_mode: String,
}

fn failed_actions() -> String {
    "FAILED_ACTIONS".into()
}

async fn retry_stage(
    State(s): State<ApiState>,
    Path((name, stage)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RetryRequest = required_body(&body)?;
    let all = match request.retry_mode.as_str() {
        "FAILED_ACTIONS" => false,
        "ALL_ACTIONS" => true,
        other => {
            return Err(ApiError::Invalid {
                message: format!("retryMode {other:?} is not FAILED_ACTIONS or ALL_ACTIONS"),
                diagnostics: vec![],
            });
        }
    };
    let id = request.pipeline_execution_id;
    Ok(Json(ask(&s, |reply| Command::RetryStage { name, stage, id, all, reply }).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    #[serde(default)]
    reason: String,
}

/// `POST /v1/pipelines/{name}/stages/{stage}/transition/disable|enable`.
async fn set_transition(
    State(s): State<ApiState>,
    Path((name, stage, verb)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let enabled = match verb.as_str() {
        "enable" => true,
        "disable" => false,
        other => return Err(ApiError::NotFound(format!("no transition operation {other:?}: use enable or disable"))),
    };
    let request: TransitionRequest = optional_body(&body)?;
    Ok(Json(
        ask(&s, |reply| Command::SetTransition { name, stage, enabled, reason: request.reason, reply }).await?,
    ))
}

async fn execution_logs(
    State(s): State<ApiState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ExecutionLogs { name, id, reply }).await?))
}

async fn list_agents(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListAgents { reply }).await?))
}

async fn list_join_tokens(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListJoinTokens { reply }).await?))
}

async fn revoke_join_token(State(s): State<ApiState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::RevokeJoinToken { id, reply }).await?))
}

/// `POST /v1/agents/{id}/drain|disable|enable|revoke`.
async fn set_agent_state(
    State(s): State<ApiState>,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    use crate::server::AgentState;
    let state = match verb.as_str() {
        "enable" => AgentState::Enabled,
        "drain" => AgentState::Draining,
        "disable" => AgentState::Disabled,
        "revoke" => AgentState::Revoked,
        other => {
            return Err(ApiError::NotFound(format!(
                "no agent operation {other:?}: use enable, drain, disable or revoke"
            )));
        }
    };
    Ok(Json(ask(&s, |reply| Command::SetAgentState { id, state, reply }).await?))
}

async fn list_plugins(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListPlugins { reply }).await?))
}

/// Largest component accepted by a push.
const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// Validates that the body is a `sluice:plugin` component by compiling it
/// and calling its `describe()`, then registers it.
async fn push_plugin(State(s): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    if body.len() > MAX_PLUGIN_BYTES {
        return Err(ApiError::Invalid {
            message: format!("plugin of {} bytes exceeds the limit of {MAX_PLUGIN_BYTES} bytes", body.len()),
            diagnostics: vec![],
        });
    }
    let wasm = body.to_vec();
    let info = crate::server::describe(&s.runtime, wasm.clone())
        .await
        .map_err(|e| ApiError::Invalid { message: format!("not a usable sluice:plugin component: {e:#}"), diagnostics: vec![] })?;
    let info = Box::new(info);
    Ok(Json(ask(&s, |reply| Command::PushPlugin { wasm, info, reply }).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    ttl_seconds: u64,
    #[serde(default)]
    uses: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn create_join_token(State(s): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let request: TokenRequest = required_body(&body)?;
    if request.ttl_seconds == 0 {
        return Err(ApiError::Invalid { message: "ttl must be positive".into(), diagnostics: vec![] });
    }
    let ttl = Duration::from_secs(request.ttl_seconds);
    Ok(Json(
        ask(&s, |reply| Command::CreateJoinToken { ttl, uses: request.uses, labels: request.labels, reply }).await?,
    ))
}

#[derive(Deserialize)]
struct EventsQuery {
    pipeline: Option<String>,
}

/// Live events (execution, stage, action, log) as Server-Sent Events.
async fn events(
    State(s): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(s.events.subscribe()).filter_map(move |item| {
        let value = item.ok()?;
        if let Some(p) = &q.pipeline
            && value["pipeline"].as_str() != Some(p.as_str())
        {
            return None;
        }
        Some(Ok(Event::default().data(value.to_string())))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}
