//! The AWS-compatible API: CodePipeline's JSON protocol (`awsJson1.1`) on
//! the controller's API listener, so that the AWS CLI, boto3 and the other
//! SDKs drive Sluice unchanged.
//!
//! A request is `POST /` with `X-Amz-Target: CodePipeline_20150709.<Operation>`
//! and `Content-Type: application/x-amz-json-1.1`, signed with Signature
//! Version 4 ([`sigv4`], service `codepipeline`, any region) by an access
//! key of a user ([`keys`]). A verified request becomes the same [`Caller`]
//! a bearer token gives, and is checked by the driver (`crate::policy`) like every
//! other request.
//!
//! The [`aws_operations!`] table below is the one list of the operations
//! served: each entry is a translation from the operation's AWS input to a
//! typed operation of [`crate::ops`], sent to the driver the way the REST
//! API sends it ([`Call::ask`]), and from the typed output back to the AWS
//! output. No decision is taken here: this module only translates. A
//! CodePipeline operation not in the table answers
//! `UnsupportedOperationException` naming it; a target that is not a
//! CodePipeline operation answers `UnknownOperationException`.
//!
//! Errors are `{"__type": ..., "message": ...}` with the status AWS uses
//! (400 for client errors), so the SDKs raise their modeled exceptions.
//!
//! Must not know the driver or the store: it sees only the typed
//! operations, the key table and the API's state.

pub mod keys;
pub mod pipelines;
pub mod sigv4;
pub mod webhooks;
// Custom actions and job workers (issue 14, jobs).
pub mod jobs;
pub mod s3;
pub mod s3_multipart;
pub mod s3_zips;

use crate::api::ApiState;
use crate::auth::Caller;
use crate::ops::{OpError, Operation};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{Instrument as _, debug, info_span, warn};

/// The JSON protocol's content type.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// What precedes the operation's name in `X-Amz-Target`.
pub const TARGET_PREFIX: &str = "CodePipeline_20150709.";
/// The credential scope's service.
pub const SERVICE: &str = "codepipeline";
/// Largest request body read (a pipeline declaration is at most a few
/// hundred KiB; CodePipeline's own limit is far lower).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What the AWS endpoints need besides the API's state.
#[derive(Clone)]
pub struct AwsState {
    pub keys: keys::AccessKeys,
    /// The account id in ARNs: 12 digits of this controller's CA
    /// fingerprint, so that it is stable across restarts and differs
    /// between controllers.
    pub account: String,
    /// Where webhook deliveries go, for the URLs shown (`https://` unless
    /// the API is plain HTTP on loopback).
    pub webhooks: WebhookBase,
}

/// The listener of webhook deliveries, as the URLs shown name it.
#[derive(Clone, Debug)]
pub enum WebhookBase {
    /// The API's own listener, with its scheme.
    Api(crate::https::Scheme),
    /// A listener of their own (`--webhook-listen`), with its scheme.
    Own(std::net::SocketAddr, crate::https::Scheme),
}

impl WebhookBase {
    /// `SCHEME://HOST[:PORT]` of the webhook listener, for a client that
    /// addressed the API as `host` (its `Host` header): the same host when
    /// the webhook listener is bound to every address.
    pub fn url(&self, host: &str) -> String {
        match self {
            WebhookBase::Api(scheme) => format!("{}://{host}", scheme.as_str()),
            WebhookBase::Own(addr, scheme) if addr.ip().is_unspecified() => {
                format!("{}://{}:{}", scheme.as_str(), host_without_port(host), addr.port())
            }
            WebhookBase::Own(addr, scheme) => format!("{}://{addr}", scheme.as_str()),
        }
    }
}

/// `HOST` of `HOST:PORT`, `[::1]` of `[::1]:PORT`.
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

impl AwsState {
    pub fn new(keys: keys::AccessKeys, ca_fingerprint: &str) -> Self {
        Self { keys, account: account_id(ca_fingerprint), webhooks: WebhookBase::Api(crate::https::Scheme::Https) }
    }

    /// Where webhook deliveries go, for the URLs shown.
    pub fn with_webhooks(self, webhooks: WebhookBase) -> Self {
        Self { webhooks, ..self }
    }
}

/// The region of the ARNs the REST API and the CLI show (which have no
/// signing region); any region is accepted back.
pub const REST_REGION: &str = "us-east-1";

/// `arn:aws:codepipeline:REGION:ACCOUNT:RESOURCE`.
pub fn arn(region: &str, account: &str, resource: &str) -> String {
    format!("arn:aws:codepipeline:{region}:{account}:{resource}")
}

/// Twelve decimal digits derived from a fingerprint.
pub fn account_id(fingerprint: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(fingerprint.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000_000_000;
    format!("{n:012}")
}

/// The routes of the AWS-compatible API, merged into the API's router.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/", post(serve))
}

/// One authenticated AWS request being served: who asked, in which region.
pub struct Call<'a> {
    pub state: &'a ApiState,
    pub caller: Caller,
    /// The region the client signed for (ARNs name it).
    pub region: String,
    /// `https://HOST[:PORT]` of the webhook listener as the client
    /// addressed the controller (webhook URLs).
    pub endpoint: String,
    /// Whether an operation reached the driver, which records it in the
    /// audit log; otherwise [`serve`] does.
    asked: std::sync::atomic::AtomicBool,
}

impl Call<'_> {
    /// Sends a typed operation to the driver, which authorizes it: the same
    /// path as the REST API's.
    pub async fn ask<O: Operation>(&self, op: O) -> Result<O::Output, OpError> {
        self.asked.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::api::ask(self.state, op, self.caller.clone()).await
    }

    /// `arn:aws:codepipeline:REGION:ACCOUNT:RESOURCE`.
    pub fn arn(&self, resource: &str) -> String {
        arn(&self.region, &self.state.aws.account, resource)
    }
}

/// Reads an operation's input; members the SDK validated are trusted for
/// shape, so a failure here is a client that is not an SDK.
pub fn input<T: DeserializeOwned>(value: Value) -> Result<T, OpError> {
    serde_json::from_value(value).map_err(|e| OpError::invalid(format!("1 validation error detected: {e}")))
}

/// The operation table: each CodePipeline operation Sluice serves, and the
/// function that translates it (`async fn(&Call, Value) -> Result<Value, OpError>`).
/// Append an entry to add one.
macro_rules! aws_operations {
    ( $( $name:ident => $handler:path ; )* ) => {
        /// Every CodePipeline operation served.
        pub const SUPPORTED: &[&str] = &[ $( stringify!($name), )* ];

        /// Runs the operation named `operation`, if the table has it.
        async fn dispatch(call: &Call<'_>, operation: &str, input: Value) -> Option<Result<Value, OpError>> {
            match operation {
                $( stringify!($name) => Some($handler(call, input).await), )*
                _ => None,
            }
        }
    };
}

aws_operations! {
    // Pipelines, executions, stages and tags (issue 14, aws).
    CreatePipeline => pipelines::create_pipeline;
    GetPipeline => pipelines::get_pipeline;
    UpdatePipeline => pipelines::update_pipeline;
    DeletePipeline => pipelines::delete_pipeline;
    ListPipelines => pipelines::list_pipelines;
    GetPipelineState => pipelines::get_pipeline_state;
    StartPipelineExecution => pipelines::start_pipeline_execution;
    StopPipelineExecution => pipelines::stop_pipeline_execution;
    GetPipelineExecution => pipelines::get_pipeline_execution;
    ListPipelineExecutions => pipelines::list_pipeline_executions;
    ListActionExecutions => pipelines::list_action_executions;
    RetryStageExecution => pipelines::retry_stage_execution;
    RollbackStage => pipelines::rollback_stage;
    PutApprovalResult => pipelines::put_approval_result;
    DisableStageTransition => pipelines::disable_stage_transition;
    EnableStageTransition => pipelines::enable_stage_transition;
    TagResource => pipelines::tag_resource;
    UntagResource => pipelines::untag_resource;
    ListTagsForResource => pipelines::list_tags_for_resource;
    PutWebhook => webhooks::put_webhook;
    ListWebhooks => webhooks::list_webhooks;
    DeleteWebhook => webhooks::delete_webhook;
    // Custom action types and job workers (issue 14, jobs).
    CreateCustomActionType => jobs::create_custom_action_type;
    DeleteCustomActionType => jobs::delete_custom_action_type;
    GetActionType => jobs::get_action_type;
    ListActionTypes => jobs::list_action_types;
    PollForJobs => jobs::poll_for_jobs;
    AcknowledgeJob => jobs::acknowledge_job;
    GetJobDetails => jobs::get_job_details;
    PutJobSuccessResult => jobs::put_job_success_result;
    PutJobFailureResult => jobs::put_job_failure_result;
}

/// Every operation of CodePipeline's API model (2015-07-09), served or not.
pub const MODEL_OPERATIONS: &[&str] = &[
    "AcknowledgeJob",
    "AcknowledgeThirdPartyJob",
    "CreateCustomActionType",
    "CreatePipeline",
    "DeleteCustomActionType",
    "DeletePipeline",
    "DeleteWebhook",
    "DeregisterWebhookWithThirdParty",
    "DisableStageTransition",
    "EnableStageTransition",
    "GetActionType",
    "GetJobDetails",
    "GetPipeline",
    "GetPipelineExecution",
    "GetPipelineState",
    "GetThirdPartyJobDetails",
    "ListActionExecutions",
    "ListActionTypes",
    "ListDeployActionExecutionTargets",
    "ListPipelineExecutions",
    "ListPipelines",
    "ListRuleExecutions",
    "ListRuleTypes",
    "ListTagsForResource",
    "ListWebhooks",
    "OverrideStageCondition",
    "PollForJobs",
    "PollForThirdPartyJobs",
    "PutActionRevision",
    "PutApprovalResult",
    "PutJobFailureResult",
    "PutJobSuccessResult",
    "PutThirdPartyJobFailureResult",
    "PutThirdPartyJobSuccessResult",
    "PutWebhook",
    "RegisterWebhookWithThirdParty",
    "RetryStageExecution",
    "RollbackStage",
    "StartPipelineExecution",
    "StopPipelineExecution",
    "TagResource",
    "UntagResource",
    "UpdateActionType",
    "UpdatePipeline",
];

/// `POST /`: authenticate, find the operation, translate, answer.
async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(&target).to_string();
    let span = info_span!("aws", %operation);
    let origin = crate::api::origin_of(&parts.extensions);
    async move {
        // Nothing is read of a request that cannot verify: its headers
        // and key are checked first.
        if let Err(e) = precheck(&state, &parts.headers) {
            debug!("AWS request refused on its headers: {e}");
            crate::api::send_refusal_record(&state, signature_refusal(&parts.headers, &operation, &origin, &e)).await;
            let mut response = signature_error(&e);
            // As the S3 subset does: a small unread body is dropped so the
            // client's connection stays usable, a large one closes it.
            let declared =
                parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            if !s3::drain(body, declared).await {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        let body = match read_bounded(body).await {
            Ok(body) => body,
            Err(e) => return error(&e),
        };
        let (caller, region) = match authenticate(&state, &parts.method, &parts.uri, &parts.headers, &body) {
            Ok(found) => found,
            Err(e) => {
                warn!("AWS request refused: {e}");
                crate::api::send_refusal_record(&state, signature_refusal(&parts.headers, &operation, &origin, &e)).await;
                return signature_error(&e);
            }
        };
        let caller = caller.with_origin(origin);
        debug!(user = %caller.user, "AWS request");
        match answer(&state, caller, region, &target, &parts.headers, &body).await {
            Ok(output) => ok(output),
            Err(e) => error(&e),
        }
    }
    .instrument(span)
    .await
}

/// How much of a body over [`MAX_BODY_BYTES`] is read and thrown away
/// before the error is answered: a client that sends its whole body before
/// it reads the answer (as the SDKs do) then gets the error instead of a
/// broken connection. Beyond this the connection is simply closed.
const MAX_DRAIN_BYTES: usize = 64 << 20;

/// The body, held only up to [`MAX_BODY_BYTES`].
async fn read_bounded(body: Body) -> Result<axum::body::Bytes, OpError> {
    use futures_util::StreamExt as _;
    let too_big = || OpError::invalid(format!("request body exceeds the limit of {MAX_BODY_BYTES} bytes"));
    let mut stream = body.into_data_stream();
    let mut held = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OpError::invalid(format!("reading the request body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen > MAX_DRAIN_BYTES {
            return Err(too_big());
        }
        if seen <= MAX_BODY_BYTES {
            held.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_big());
    }
    Ok(held.into())
}

/// The header-only checks ([`sigv4::check_headers`]) and that the key
/// exists.
fn precheck(state: &ApiState, headers: &HeaderMap) -> Result<(), sigv4::SigError> {
    let headers = header_pairs(headers);
    let expect = sigv4::Expect { service: SERVICE, signed: &["x-amz-target"], now: epoch_seconds() };
    let (auth, _) = sigv4::check_headers(&headers, &expect)?;
    match state.aws.keys.lookup(&auth.access_key_id) {
        Some(_) => Ok(()),
        None => Err(sigv4::SigError::UnknownKey(auth.access_key_id)),
    }
}

/// Every header as text (the verifier's view; a value that is not UTF-8
/// is left out, so it cannot be signed either).
pub(super) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))).collect()
}

/// The parts of a request the verifier reads.
pub(super) fn signed_request<'a>(
    method: &'a axum::http::Method,
    uri: &'a axum::http::Uri,
    headers: &'a [(String, String)],
    body: &'a [u8],
) -> sigv4::Request<'a> {
    sigv4::Request { method: method.as_str(), path: uri.path(), query: uri.query().unwrap_or(""), headers, body }
}

/// Seconds since the epoch, the clock signatures are checked against.
pub(super) fn epoch_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Verifies the signature and resolves the key to its user.
fn authenticate(
    state: &ApiState,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Caller, String), sigv4::SigError> {
    let headers = header_pairs(headers);
    let request = signed_request(method, uri, &headers, body);
    let expect = sigv4::Expect { service: SERVICE, signed: &["x-amz-target"], now: epoch_seconds() };
    let mut owner = None;
    let verified = sigv4::verify(&request, &expect, |id| {
        let (secret, caller) = state.aws.keys.lookup(id)?;
        owner = Some(caller);
        Some(sigv4::Key { secret, session_token: None })
    })?;
    let caller = owner.ok_or_else(|| sigv4::SigError::UnknownKey(verified.access_key_id.clone()))?;
    Ok((caller, verified.region))
}

/// The audit log's record of a request whose signature was refused: the
/// access key it claimed (if its header names one), the operation it asked.
fn signature_refusal(
    headers: &HeaderMap,
    operation: &str,
    origin: &crate::auth::Origin,
    e: &sigv4::SigError,
) -> crate::audit::Entry {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::Authorization::parse(v).ok())
        .map(|auth| auth.access_key_id);
    let via = match key {
        Some(id) => crate::auth::Via::AccessKey(id),
        None => crate::auth::Via::AccessKey(String::new()),
    };
    let caller = Caller::new(crate::api::ANONYMOUS, crate::auth::Role::Operator).with_via(via).with_origin(origin.clone());
    let operation = if operation.is_empty() { "-" } else { operation };
    crate::audit::Entry::of_caller(&caller, "SigV4", &format!("codepipeline:{operation}"))
        .failed(e.aws_type(), &e.to_string())
}

/// The operation's output, or why not.
async fn answer(
    state: &ApiState,
    caller: Caller,
    region: String,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OpError> {
    let (operation, input) = match request_input(target, headers, body) {
        Ok(found) => found,
        Err(e) => {
            let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
            let entry = crate::audit::Entry::of_caller(&caller, operation, "*");
            crate::api::send_audit_record(state, entry.failed(e.aws_type(), &e.to_string())).await;
            return Err(e);
        }
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let call = Call { state, caller, region, endpoint: state.aws.webhooks.url(host), asked: false.into() };
    let answered = dispatch(&call, operation, input).await;
    // An input the translation refused never reached the driver: recorded
    // here, without the message (which may quote the input).
    let result = match answered {
        Some(result) => result,
        None if MODEL_OPERATIONS.contains(&operation) => Err(OpError::UnsupportedOperation(format!(
            "Sluice does not support the CodePipeline operation {operation} (see docs/aws-compat.md)"
        ))),
        None => Err(OpError::UnknownOperation(format!("{operation} is not a CodePipeline operation"))),
    };
    if let Err(e) = &result
        && !call.asked.load(std::sync::atomic::Ordering::Relaxed)
    {
        let entry = crate::audit::Entry::of_caller(&call.caller, operation, "*");
        crate::api::send_audit_record(state, entry.failed(e.aws_type(), "the request could not be read")).await;
    }
    result
}

/// The operation a request names and its JSON input, or why not. The
/// messages quote no input (the audit log records them).
fn request_input<'t>(target: &'t str, headers: &HeaderMap, body: &[u8]) -> Result<(&'t str, Value), OpError> {
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(OpError::UnknownOperation(format!(
            "X-Amz-Target {target:?} is not a CodePipeline operation ({TARGET_PREFIX}<Operation>)"
        )));
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.starts_with(CONTENT_TYPE) {
        return Err(OpError::invalid(format!("Content-Type must be {CONTENT_TYPE}, not {content_type:?}")));
    }
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => Value::Object(fields),
            Ok(_) => return Err(OpError::invalid("the request body must be a JSON object")),
            Err(e) => return Err(OpError::invalid(format!("the request body is not JSON: {e}"))),
        }
    };
    Ok((operation, input))
}

/// The HTTP status AWS's JSON protocol answers an error with: 400 for
/// whatever the client got wrong.
pub fn aws_status(e: &OpError) -> StatusCode {
    match e {
        OpError::AccessDenied(_) | OpError::Unauthorized(_) => StatusCode::FORBIDDEN,
        OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn ok(output: Value) -> Response {
    respond(StatusCode::OK, output)
}

/// An operation's error as awsJson: `{"__type", "message"}`; a
/// declaration's diagnostics are appended to the message, since the SDKs
/// show only the message.
pub fn error(e: &OpError) -> Response {
    respond(aws_status(e), json!({ "__type": e.aws_type(), "message": e.report() }))
}

/// A signature problem as awsJson.
pub fn signature_error(e: &sigv4::SigError) -> Response {
    let status = match e {
        sigv4::SigError::Missing => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    respond(status, json!({ "__type": e.aws_type(), "message": e.to_string() }))
}

fn respond(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Body::from(body.to_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// Milliseconds-precise RFC 3339 text (the typed outputs' times) as the
/// epoch seconds the AWS protocols carry.
pub fn epoch(text: &str) -> Option<Value> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let seconds = t.unix_timestamp_nanos() as f64 / 1e9;
    Some(json!((seconds * 1000.0).round() / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_operation_is_a_model_operation_and_named_once() {
        let mut seen = std::collections::HashSet::new();
        for op in SUPPORTED {
            assert!(MODEL_OPERATIONS.contains(op), "{op} is not in CodePipeline's model");
            assert!(seen.insert(op), "{op} twice");
        }
    }

    #[test]
    fn webhook_urls_name_the_listener_that_serves_deliveries() {
        use crate::https::Scheme;
        assert_eq!(WebhookBase::Api(Scheme::Https).url("ci.example:7400"), "https://ci.example:7400");
        assert_eq!(WebhookBase::Api(Scheme::Http).url("127.0.0.1:7400"), "http://127.0.0.1:7400");
        let own = WebhookBase::Own("0.0.0.0:7500".parse().unwrap(), Scheme::Https);
        assert_eq!(own.url("ci.example:7400"), "https://ci.example:7500");
        assert_eq!(own.url("[::1]:7400"), "https://[::1]:7500");
        assert_eq!(own.url("ci.example"), "https://ci.example:7500");
        let bound = WebhookBase::Own("127.0.0.1:7500".parse().unwrap(), Scheme::Http);
        assert_eq!(bound.url("ci.example:7400"), "http://127.0.0.1:7500");
    }

    #[test]
    fn times_become_epoch_seconds_and_accounts_are_twelve_digits() {
        assert_eq!(epoch("2015-08-30T12:36:00.250Z"), Some(json!(1_440_938_160.25)));
        assert_eq!(epoch("yesterday"), None);
        let account = account_id("ab:cd");
        assert_eq!(account.len(), 12);
        assert!(account.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(account, account_id("ab:cd"));
        assert_ne!(account, account_id("ab:ce"));
    }

    #[test]
    fn errors_are_aws_json_with_aws_statuses() {
        assert_eq!(aws_status(&OpError::PipelineNotFound("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(aws_status(&OpError::AccessDenied("x".into())), StatusCode::FORBIDDEN);
        let response = error(&OpError::UnsupportedOperation("no".into()));
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
