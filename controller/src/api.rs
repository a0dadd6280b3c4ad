//! The admin HTTP API: JSON under `/v1`, bearer tokens, live events as
//! Server-Sent Events. Operations mirror CodePipeline's (CreatePipeline,
//! GetPipeline, GetPipelineState, StartPipelineExecution, ...) so that an
//! awsJson endpoint can later be a thin layer over the same driver
//! commands. Handlers only translate: every decision is the driver's.

use crate::auth::Caller;
use crate::engine::Trigger;
use axum::Extension;
use crate::driver::command::{ApiError, Command, DEFAULT_HISTORY};
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
    /// Token hashes to users (the admin token included).
    pub tokens: crate::auth::Tokens,
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
        .route("/pipelines/{name}/stages/{stage}/rollback", post(rollback_stage))
        .route("/agents", get(list_agents))
        .route("/agent-tokens", post(create_join_token).get(list_join_tokens))
        .route("/agent-tokens/{id}/revoke", post(revoke_join_token))
        .route("/agents/{id}/labels", post(label_agent))
        .route("/agents/{id}/{verb}", post(set_agent_state))
        .route("/plugins", get(list_plugins).post(push_plugin))
        .route("/plugins/{key}", get(describe_plugin).delete(delete_plugin))
        .route("/publishers", get(list_publishers).post(add_publisher))
        .route("/publishers/{name}", axum::routing::delete(remove_publisher))
        .route("/pipelines/{name}/webhook", post(create_webhook).delete(delete_webhook))
        .route("/secrets", get(list_secrets))
        .route("/validate-pipeline", post(validate_pipeline))
        .route("/users", get(list_users).post(create_user))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/pipelines/{name}/stages/{stage}/actions/{action}/approval", post(put_approval))
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
            ApiError::Forbidden(m) => error_body(StatusCode::FORBIDDEN, "AccessDeniedException", m, &[]),
            ApiError::Conflict(m) => error_body(StatusCode::CONFLICT, "ConflictException", m, &[]),
            ApiError::Internal(m) => error_body(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m, &[]),
        }
    }
}

/// Resolves the bearer token to a [`Caller`] (looked up by its hash, so the
/// lookup's timing does not depend on the secret) for the handlers.
async fn authenticate(State(state): State<ApiState>, headers: HeaderMap, mut request: Request, next: Next) -> Response {
    let caller = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.tokens.lookup(t));
    let Some(caller) = caller else {
        return error_body(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "missing or invalid bearer token: pass --token or set SLUICE_TOKEN",
            &[],
        );
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{} may not manage users and tokens: that needs the admin role", caller.user)))
    }
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

async fn create_pipeline(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Invalid { message: "pipeline declaration is not UTF-8".into(), diagnostics: vec![] })?;
    Ok(Json(ask(&s, |reply| Command::CreatePipeline { text, by: caller.user, reply }).await?))
}

async fn describe_plugin(State(s): State<ApiState>, Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::DescribePlugin { key, reply }).await?))
}

async fn delete_plugin(State(s): State<ApiState>, Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::DeletePlugin { key, reply }).await?))
}

/// Validates a declaration against the registered providers; changes nothing.
async fn validate_pipeline(State(s): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Invalid { message: "pipeline declaration is not UTF-8".into(), diagnostics: vec![] })?;
    Ok(Json(ask(&s, |reply| Command::ValidatePipeline { text, reply }).await?))
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
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

async fn list_executions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.max_results.unwrap_or(DEFAULT_HISTORY).clamp(1, 1000);
    let next_token = q.next_token;
    Ok(Json(ask(&s, |reply| Command::ListExecutions { name, limit, next_token, reply }).await?))
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

async fn start_execution(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    let trigger = Trigger::new("StartPipelineExecution", format!("{detail}, by {}", caller.user)).by(caller.user);
    Ok(Json(ask(&s, |reply| Command::StartExecution { name, variables, revisions, trigger, reply }).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRequest {
    name: String,
    #[serde(default)]
    role: Option<String>,
}

async fn create_user(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let UserRequest { name, role } = required_body(&body)?;
    let role = crate::auth::Role::parse(role.as_deref().unwrap_or("operator"))
        .map_err(|m| ApiError::Invalid { message: m, diagnostics: vec![] })?;
    Ok(Json(ask(&s, |reply| Command::CreateUser { name, role, reply }).await?))
}

async fn list_users(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListUsers { reply }).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenRequest {
    user: String,
}

async fn create_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let ApiTokenRequest { user } = required_body(&body)?;
    Ok(Json(ask(&s, |reply| Command::CreateToken { user, reply }).await?))
}

async fn list_tokens(State(s): State<ApiState>, Extension(caller): Extension<Caller>) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(ask(&s, |reply| Command::ListTokens { reply }).await?))
}

async fn revoke_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(ask(&s, |reply| Command::RevokeToken { id, reply }).await?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RollbackRequestBody {
    #[serde(default)]
    target_pipeline_execution_id: Option<String>,
}

async fn rollback_stage(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((name, stage)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RollbackRequestBody = optional_body(&body)?;
    let target = request.target_pipeline_execution_id;
    Ok(Json(ask(&s, |reply| Command::RollbackStage { name, stage, target, by: caller.user, reply }).await?))
}

/// PutApprovalResult's body: CodePipeline's `result` fields, flattened.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApprovalRequest {
    /// `Approved` or `Rejected`.
    status: String,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    execution_id: Option<String>,
}

async fn put_approval(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((name, stage, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ApprovalRequest = required_body(&body)?;
    let approve = match request.status.as_str() {
        "Approved" => true,
        "Rejected" => false,
        other => {
            return Err(ApiError::Invalid {
                message: format!("status {other:?} is neither Approved nor Rejected"),
                diagnostics: vec![],
            });
        }
    };
    Ok(Json(
        ask(&s, |reply| Command::Decide {
            name,
            stage,
            action,
            execution: request.execution_id,
            by: caller.user,
            approve,
            comment: request.summary,
            reply,
        })
        .await?,
    ))
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
    /// Glob patterns of the pipelines that may use the secret; required
    /// for a new secret, kept as they were when absent on an existing one.
    #[serde(default)]
    pipelines: Option<Vec<String>>,
}

async fn set_secret(State(s): State<ApiState>, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let SecretValue { value, pipelines } = required_body(&body)?;
    Ok(Json(ask(&s, |reply| Command::SetSecret { name, value, pipelines, reply }).await?))
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
    Extension(caller): Extension<Caller>,
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
        ask(&s, |reply| Command::SetTransition { name, stage, enabled, reason: request.reason, by: caller.user, reply })
            .await?,
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

async fn revoke_join_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin_for_fleet(&caller)?;
    Ok(Json(ask(&s, |reply| Command::RevokeJoinToken { id, reply }).await?))
}

/// `POST /v1/agents/{id}/drain|disable|enable|revoke`.
async fn set_agent_state(
    State(s): State<ApiState>,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    use crate::driver::command::AgentState;
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

/// The header that carries a pushed plugin's signature document, base64.
pub const SIGNATURE_HEADER: &str = "sluice-plugin-signature";

/// Validates that the body is a `sluice:plugin` component by compiling it
/// and calling its `describe()`, then registers it. A signature (header
/// [`SIGNATURE_HEADER`]) that is malformed, names another component, or
/// is not a trusted publisher's is refused before anything is compiled, as
/// is a missing one under `--require-signed-plugins`.
async fn push_plugin(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let invalid = |message: String| ApiError::Invalid { message, diagnostics: vec![] };
    if body.len() > MAX_PLUGIN_BYTES {
        return Err(invalid(format!("plugin of {} bytes exceeds the limit of {MAX_PLUGIN_BYTES} bytes", body.len())));
    }
    let signature = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => {
            use base64::Engine as _;
            let text = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| invalid(format!("the {SIGNATURE_HEADER} header is not base64 of a signature document")))?;
            let parsed = sluice_runtime::signature::Signature::parse(&text).map_err(|e| invalid(e.to_string()))?;
            let digest = sluice_runtime::digest(&body);
            if parsed.digest() != digest {
                return Err(invalid(
                    sluice_runtime::signature::SignatureError::DigestMismatch {
                        signed: parsed.digest().into(),
                        component: digest,
                    }
                    .to_string(),
                ));
            }
            Some(text)
        }
    };
    // A signature required, or sent, is checked against the trusted
    // publishers before any of the component's code is compiled or run.
    let digest = sluice_runtime::digest(&body);
    let vetted = signature.clone();
    ask(&s, |reply| Command::VetPluginSignature { digest, signature: vetted, reply }).await?;
    let wasm = body.to_vec();
    let info = crate::driver::catalog::describe(&s.runtime, wasm.clone())
        .await
        .map_err(|e| invalid(format!("not a usable sluice:plugin component: {e:#}")))?;
    let info = Box::new(info);
    Ok(Json(ask(&s, |reply| Command::PushPlugin { wasm, info, signature, reply }).await?))
}

async fn list_publishers(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(ask(&s, |reply| Command::ListPublishers { reply }).await?))
}

/// Whom the controller trusts to sign plugins is the admin's decision.
fn require_admin_for_publishers(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{} may not manage trusted publishers: that needs the admin role", caller.user)))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublisherRequest {
    name: String,
    /// A `PUBLIC KEY` PEM or the base64 of its DER.
    public_key: String,
}

async fn add_publisher(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin_for_publishers(&caller)?;
    let PublisherRequest { name, public_key } = required_body(&body)?;
    Ok(Json(ask(&s, |reply| Command::AddPublisher { name, public_key, by: caller.user, reply }).await?))
}

async fn remove_publisher(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin_for_publishers(&caller)?;
    Ok(Json(ask(&s, |reply| Command::RemovePublisher { name, reply }).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    ttl_seconds: u64,
    #[serde(default)]
    uses: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    allow_agent_labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRequest {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Who may enroll hosts, and which hosts a label like `env=prod` sends
/// work (and its secrets) to, is the admin's decision: an operator who
/// could label a shared host, or mint a token letting hosts claim a label,
/// could route another team's jobs onto a host they control.
fn require_admin_for_fleet(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} may not manage join tokens or agent labels: that needs the admin role",
            caller.user
        )))
    }
}

/// `POST /v1/agents/{id}/labels`: `{"set": {...}, "remove": [...]}`.
async fn label_agent(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin_for_fleet(&caller)?;
    let request: LabelRequest = required_body(&body)?;
    Ok(Json(ask(&s, |reply| Command::LabelAgent { id, set: request.set, remove: request.remove, reply }).await?))
}

async fn create_join_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin_for_fleet(&caller)?;
    let request: TokenRequest = required_body(&body)?;
    if request.ttl_seconds == 0 {
        return Err(ApiError::Invalid { message: "ttl must be positive".into(), diagnostics: vec![] });
    }
    let ttl = Duration::from_secs(request.ttl_seconds);
    Ok(Json(
        ask(&s, |reply| Command::CreateJoinToken {
            ttl,
            uses: request.uses,
            labels: request.labels,
            allow_agent_labels: request.allow_agent_labels,
            reply,
        })
        .await?,
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
