//! The S3 subset job workers use: `GetObject`, `PutObject` and `HeadObject`
//! on the one bucket of job artifacts ([`crate::workers::BUCKET`]),
//! path-style (`/sluice-artifacts/KEY`, what the SDKs use with a custom
//! endpoint) or virtual-host style, on the controller's API listener.
//!
//! Requests are signed with Signature Version 4 for service `s3` by a job's
//! temporary credentials (`artifactCredentials`, with `x-amz-security-token`),
//! verified by [`super::sigv4`]. A key opens only its own job's objects and
//! only while the job runs: inputs for reading, outputs for writing (and
//! reading back). The driver says what a key may do (`JobCredentials`) and
//! records an upload (`RecordJobOutput`); this module only translates.
//!
//! Objects are zip files, as CodePipeline's: an input is Sluice's stored
//! archive served as a zip, an upload is checked and converted into
//! Sluice's archive ([`crate::artifact_zip`]) before it is stored, and a
//! zip that is malformed or hostile stores nothing. The body of a PutObject
//! may be plain or `aws-chunked` (with `STREAMING-UNSIGNED-PAYLOAD-TRAILER`
//! and a trailing checksum, as the SDKs send over TLS); a CRC32 or SHA256
//! checksum, in a header or a trailer, is verified.
//!
//! Multipart uploads (what boto3's `upload_file` uses above 8 MiB) are in
//! [`super::s3_multipart`], behind the same checks.
//!
//! Errors are S3's XML (`<Error><Code>NoSuchKey</Code>...`), so the SDKs
//! raise their usual `ClientError` codes.

use super::s3_multipart::{self, Query};
use super::sigv4::{self, SigError};
use super::{epoch_seconds, header_pairs, signed_request};
use crate::api::ApiState;
use crate::artifact_zip::{self, MAX_UNPACKED_BYTES};
use crate::auth::{Caller, Role};
use crate::engine::ArtifactRef;
use crate::ops::{JobCredentials, JobCredentialsOutput, OpError, RecordJobOutput};
use crate::workers::BUCKET;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{debug, warn};

/// Largest PutObject body read (it is held in memory to be checked and
/// converted), and largest total of a multipart upload's parts.
pub const MAX_UPLOAD_BYTES: usize = 512 << 20;

/// Uploads read and converted in memory at once (PutObject bodies and
/// multipart completions): each may hold [`MAX_UPLOAD_BYTES`] and its tar.
pub const MAX_CONVERSIONS: usize = 2;

static CONVERSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONVERSIONS);

/// Waits for one of the [`MAX_CONVERSIONS`] slots; held while an upload is
/// read and converted.
pub(super) async fn conversion_permit() -> Result<tokio::sync::SemaphorePermit<'static>, S3Error> {
    CONVERSIONS.acquire().await.map_err(|e| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The routes of the S3 subset: every path of two segments or more, in
/// path style (`/sluice-artifacts/KEY`) or virtual-host style (`Host:
/// sluice-artifacts.HOST`, path `/KEY`); any other bucket is `NoSuchBucket`.
pub fn routes() -> Router<ApiState> {
    Router::new().route(&format!("/{BUCKET}/{{*key}}"), any(serve)).route("/{bucket}/{*key}", any(serve))
}

/// An S3 error: its code, HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub code: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl S3Error {
    pub(super) fn new(code: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self { code, status, message: message.into() }
    }

    pub(super) fn denied(message: impl Into<String>) -> Self {
        Self::new("AccessDenied", StatusCode::FORBIDDEN, message)
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidArgument", StatusCode::BAD_REQUEST, message)
    }

    /// S3's XML body; a HEAD answer has none (the SDKs read the status).
    fn response(&self, method: &Method, resource: &str) -> Response {
        let body = if method == Method::HEAD {
            String::new()
        } else {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
                self.code,
                xml_escape(&self.message),
                xml_escape(resource),
                uuid::Uuid::new_v4().simple()
            )
        };
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/xml"));
        response
    }
}

/// What a signature problem is in S3's words.
pub(super) fn signature_error(e: &SigError) -> S3Error {
    match e {
        SigError::Missing => S3Error::denied("anonymous access is not allowed: sign with the job's artifactCredentials"),
        SigError::Incomplete(why) => S3Error::new("AuthorizationHeaderMalformed", StatusCode::BAD_REQUEST, why.clone()),
        SigError::UnknownKey(id) => S3Error::new(
            "InvalidAccessKeyId",
            StatusCode::FORBIDDEN,
            format!("the AWS access key id {id} does not exist in our records"),
        ),
        SigError::BadSessionToken => {
            S3Error::new("InvalidToken", StatusCode::BAD_REQUEST, "the provided token is malformed or otherwise invalid")
        }
        SigError::WrongService { .. } => {
            S3Error::new("AuthorizationHeaderMalformed", StatusCode::BAD_REQUEST, e.to_string())
        }
        SigError::Expired { .. } => S3Error::new("RequestTimeTooSkewed", StatusCode::FORBIDDEN, e.to_string()),
        SigError::PayloadMismatch => S3Error::new("XAmzContentSHA256Mismatch", StatusCode::BAD_REQUEST, e.to_string()),
        SigError::Mismatch => S3Error::new("SignatureDoesNotMatch", StatusCode::FORBIDDEN, e.to_string()),
    }
}

pub(super) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// The caller the driver sees for a job's key.
pub(super) fn job_caller(access_key_id: &str) -> Caller {
    Caller::new(format!("job-key:{access_key_id}"), Role::Operator)
        .with_via(crate::auth::Via::JobKey(access_key_id.to_string()))
}

async fn serve(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let resource = parts.uri.path().to_string();
    let method = parts.method.clone();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let refusal = refusal_entry(&parts);
    let mut body = Some(body);
    match handle(&state, parts, &mut body).await {
        Ok(response) => response,
        Err(e) => {
            warn!(code = e.code, %resource, "S3 request refused: {}", e.message);
            crate::api::send_refusal_record(&state, refusal.failed(e.code, &e.message)).await;
            let mut response = e.response(&method, &resource);
            // Refused before its body was read: a small body is read and
            // dropped so that the client's connection stays usable; a large
            // one is not read, and the connection is closed after the error.
            if let Some(unread) = body.take()
                && !drain(unread, declared).await
            {
                response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// The audit log's record of a refused S3 request: the job key its
/// signature claims, `S3:GetObject` or `S3:PutObject`, the object's path.
fn refusal_entry(parts: &axum::http::request::Parts) -> crate::audit::Entry {
    let key = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::Authorization::parse(v).ok())
        .map(|auth| auth.access_key_id)
        .unwrap_or_default();
    let operation = match parts.method {
        Method::GET | Method::HEAD => "S3:GetObject".to_string(),
        Method::PUT | Method::POST => "S3:PutObject".to_string(),
        ref other => format!("S3:{other}"),
    };
    let caller = Caller::new(crate::api::ANONYMOUS, Role::Operator)
        .with_via(crate::auth::Via::JobKey(key))
        .with_origin(crate::api::origin_of(&parts.extensions));
    crate::audit::Entry::of_caller(&caller, &operation, parts.uri.path())
}

/// Most bytes of a refused request's body read (and dropped), and for how long.
const DRAIN_LIMIT: u64 = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops a refused request's body of at most [`DRAIN_LIMIT`]
/// bytes within [`DRAIN_TIME`]; false when it is larger, slower or broken.
pub(super) async fn drain(body: Body, declared: Option<u64>) -> bool {
    use futures_util::StreamExt as _;
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return false;
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            total += chunk.len() as u64;
            if total > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
}

/// `body` is taken when it is read (or streamed): an error with the body
/// still there was decided before reading it.
async fn handle(state: &ApiState, parts: axum::http::request::Parts, body: &mut Option<Body>) -> Result<Response, S3Error> {
    let query = parts.uri.query().unwrap_or("");
    if query.contains("X-Amz-Signature") {
        return Err(S3Error::denied("presigned URLs are not supported: sign the request's headers"));
    }
    let multipart = operation(&parts.method, query)?;
    let key = object_key(&parts.headers, parts.uri.path())?
        .ok_or_else(|| S3Error::new("NoSuchBucket", StatusCode::NOT_FOUND, format!("the only bucket is {BUCKET}")))?;
    // The signature is checked on the headers before any body is read, so
    // that nobody without a job's key makes the controller read (or hold)
    // an upload. A part's body is then streamed to disk; any other body is
    // read (bounded) and checked against the hash the signature covered.
    let grant = authenticate(state, &parts).await?;
    // What the key may do is known from the headers too: a write to an
    // object the job may not write is refused before its body is read.
    let Some(object) = grant.credentials.objects.iter().find(|o| o.key == key) else {
        return Err(S3Error::denied(format!("job {} may not access {key}", grant.credentials.job_id)));
    };
    debug!(job = %grant.credentials.job_id, %key, method = %parts.method, "S3 request");
    let writes = parts.method != Method::GET && parts.method != Method::HEAD;
    if writes && !object.writable {
        return Err(S3Error::denied(format!("{key} is an input of job {}: it cannot be written", grant.credentials.job_id)));
    }
    // A PutObject's body is held in memory and converted there: a few at a
    // time, whatever the number of workers uploading at once.
    let _permit = match (&parts.method, &multipart) {
        (&Method::PUT, Query::None) => Some(conversion_permit().await?),
        _ => None,
    };
    let (body, streamed) = match &multipart {
        Query::Part { upload_id, .. } if parts.method == Method::PUT => {
            // An upload that is not there is refused before the part is read.
            state.multipart.check_open((upload_id, &grant.access_key_id, &key))?;
            (axum::body::Bytes::new(), body.take())
        }
        _ => {
            // Only PutObject carries an object; the rest at most a part list.
            let limit = if parts.method == Method::PUT { MAX_UPLOAD_BYTES } else { s3_multipart::MAX_LIST_BYTES };
            let bytes = axum::body::to_bytes(body.take().unwrap_or_else(Body::empty), limit).await.map_err(|_| {
                S3Error::new(
                    "EntityTooLarge",
                    StatusCode::BAD_REQUEST,
                    format!("this request's body is at most {limit} bytes"),
                )
            })?;
            check_payload(&parts, &bytes)?;
            (bytes, None)
        }
    };
    match (&parts.method, multipart, streamed) {
        (&Method::PUT, Query::Part { upload_id, number }, Some(stream)) => {
            let ids = (upload_id.as_str(), grant.access_key_id.as_str(), key.as_str());
            return s3_multipart::upload_part(state, ids, number, &parts.headers, stream).await;
        }
        (&Method::PUT, Query::None, _) => return put_object(state, &grant.access_key_id, &key, &parts.headers, body).await,
        (&Method::DELETE, Query::Upload { upload_id }, _) => {
            return s3_multipart::abort(state, &upload_id, &grant.access_key_id, &key);
        }
        (_, Query::None, _) => {}
        (_, query, _) => return s3_multipart::serve(state, &grant.access_key_id, &key, query, &parts.headers, &body).await,
    }
    let artifact = object
        .artifact
        .clone()
        .ok_or_else(|| S3Error::new("NoSuchKey", StatusCode::NOT_FOUND, format!("{key} has not been uploaded")))?;
    get_object(state, &parts.method, &parts.headers, &artifact).await
}

/// The multipart operation of a request, after refusing the methods and
/// query parameters outside the subset.
fn operation(method: &Method, query: &str) -> Result<Query, S3Error> {
    let not_allowed = || {
        S3Error::new(
            "MethodNotAllowed",
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not supported here: this S3 subset serves GetObject, PutObject, HeadObject and \
                 multipart uploads"
            ),
        )
    };
    let parsed = match s3_multipart::parse_query(query) {
        // Reads ignore parameters they do not know (versionId, response-*).
        Err(_) if *method == Method::GET || *method == Method::HEAD => Query::None,
        other => other?,
    };
    match (method, &parsed) {
        (&Method::GET | &Method::HEAD, Query::None) | (&Method::PUT, Query::None | Query::Part { .. }) => Ok(parsed),
        (&Method::POST, Query::Create | Query::Upload { .. }) | (&Method::DELETE, Query::Upload { .. }) => Ok(parsed),
        (&Method::GET, Query::Upload { .. } | Query::Create) => Err(S3Error::new(
            "NotImplemented",
            StatusCode::NOT_IMPLEMENTED,
            "ListParts and ListMultipartUploads are not supported: a client keeps the ETags UploadPart returned",
        )),
        _ => Err(not_allowed()),
    }
}

/// A verified job key and what it may do.
struct Grant {
    access_key_id: String,
    credentials: JobCredentialsOutput,
}

/// A body read after [`authenticate`] must be the one the signature
/// covered.
fn check_payload(parts: &axum::http::request::Parts, body: &[u8]) -> Result<(), S3Error> {
    let headers = header_pairs(&parts.headers);
    let request = signed_request(&parts.method, &parts.uri, &headers, body);
    sigv4::check_payload(&request, "s3").map_err(|e| signature_error(&e))
}

/// Checks the signature on the headers, with the payload hash the request
/// claims: the caller checks the body against that claim when it reads it
/// ([`check_payload`], or the part's stream).
async fn authenticate(state: &ApiState, parts: &axum::http::request::Parts) -> Result<Grant, S3Error> {
    let headers = header_pairs(&parts.headers);
    let now = epoch_seconds();
    let access_key_id = precheck(parts, now)?;
    // What the key is, from the driver, before the signature can be checked.
    let caller = job_caller(&access_key_id).with_origin(crate::api::origin_of(&parts.extensions));
    let credentials = match crate::api::ask(state, JobCredentials { access_key_id: access_key_id.clone() }, caller).await {
        Ok(c) => c,
        Err(OpError::Unauthorized(_)) => return Err(signature_error(&SigError::UnknownKey(access_key_id))),
        Err(e) => return Err(S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    // Streaming bodies are signed as their literal `x-amz-content-sha256`;
    // the decoded payload is checked by its checksum instead.
    let request = signed_request(&parts.method, &parts.uri, &headers, &[]);
    let expect = sigv4::Expect { service: "s3", signed: &[], now };
    let key =
        sigv4::Key { secret: credentials.secret_access_key.clone(), session_token: Some(credentials.session_token.clone()) };
    sigv4::verify_claimed(&request, &expect, |_| Some(key)).map_err(|e| signature_error(&e))?;
    if !credentials.active {
        return Err(S3Error::new(
            "ExpiredToken",
            StatusCode::BAD_REQUEST,
            format!("the provided token has expired: job {} has ended", credentials.job_id),
        ));
    }
    Ok(Grant { access_key_id, credentials })
}

/// Whether `id` has the shape of a job's access key id (`ASIA` and 16
/// characters of base32, as the driver makes them).
fn looks_like_job_key(id: &str) -> bool {
    id.strip_prefix("ASIA")
        .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)))
}

/// What can be checked on the headers alone, before the driver is asked
/// about the key: the Authorization header parses, names service `s3` and
/// a key of a job's shape, and x-amz-date is within the allowed skew.
/// A random key id costs no round trip to the driver. Returns the key id.
fn precheck(parts: &axum::http::request::Parts, now: u64) -> Result<String, S3Error> {
    let headers = header_pairs(&parts.headers);
    let expect = sigv4::Expect { service: "s3", signed: &[], now };
    let (auth, _) = sigv4::check_headers(&headers, &expect).map_err(|e| signature_error(&e))?;
    if !looks_like_job_key(&auth.access_key_id) {
        return Err(signature_error(&SigError::UnknownKey(auth.access_key_id)));
    }
    Ok(auth.access_key_id)
}

/// The object key of a request to the artifact bucket, decoded: the whole
/// path when the host names the bucket (virtual-host style), else the path
/// after `/sluice-artifacts/`. `None`: another bucket.
fn object_key(headers: &HeaderMap, path: &str) -> Result<Option<String>, S3Error> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let raw = if host.starts_with(&format!("{BUCKET}.")) {
        path.strip_prefix('/').unwrap_or(path)
    } else {
        match path.strip_prefix(&format!("/{BUCKET}/")) {
            Some(raw) => raw,
            None => return Ok(None),
        }
    };
    let key = String::from_utf8(percent_decode(raw)).map_err(|_| S3Error::invalid("the object key is not UTF-8"))?;
    Ok(Some(key))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// GetObject and HeadObject: the stored archive as a zip, whole or a range.
async fn get_object(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    artifact: &ArtifactRef,
) -> Result<Response, S3Error> {
    let internal = |e: anyhow::Error| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
    let tar = state.artifacts.local_file(&artifact.digest).await.map_err(internal)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let zip = state.zips.get(&artifact.digest, tar, MAX_UNPACKED_BYTES, now).await.map_err(serve_error)?;
    let total = zip.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) => Some(parse_range(spec, total).ok_or_else(|| {
            S3Error::new("InvalidRange", StatusCode::RANGE_NOT_SATISFIABLE, format!("range {spec:?} is not satisfiable"))
        })?),
        None => None,
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, total),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, &zip.etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::LAST_MODIFIED, "Thu, 01 Jan 1970 00:00:00 GMT");
    if let Some((start, end)) = range {
        response = response.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{total}"));
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        file_body(&zip.path, start, len).await.map_err(|e| internal(e.into()))?
    };
    response.body(body).map_err(|e| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A served zip that could not be had: the archive's fault (it will not
/// change on a retry) is a 4xx, anything else a 500.
fn serve_error(e: anyhow::Error) -> S3Error {
    match e.downcast_ref::<artifact_zip::Unservable>() {
        Some(too_large @ artifact_zip::Unservable::TooLarge(_)) => {
            S3Error::new("EntityTooLarge", StatusCode::BAD_REQUEST, too_large.to_string())
        }
        Some(entry) => S3Error::new(
            "InvalidObjectState",
            StatusCode::FORBIDDEN,
            format!("the artifact cannot be served as a zip: {entry}"),
        ),
        None => S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// `len` bytes of the file from `start`, streamed in blocks.
async fn file_body(path: &std::path::Path, start: u64, len: u64) -> std::io::Result<Body> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let stream = futures_util::stream::try_unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut block = vec![0u8; left.min(64 << 10) as usize];
        let n = file.read(&mut block).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the served zip is shorter than its size"));
        }
        block.truncate(n);
        Ok(Some((axum::body::Bytes::from(block), (file, left - n as u64))))
    });
    Ok(Body::from_stream(stream))
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `total` bytes, inclusive.
fn parse_range(spec: &str, total: u64) -> Option<(u64, u64)> {
    let (first, last) = spec.strip_prefix("bytes=")?.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.checked_sub(n.min(total))?, total.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, total.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(total.checked_sub(1)?)),
    };
    (start <= end && end < total).then_some((start, end))
}

/// A quoted hex tag of the content, as S3's ETag (not an MD5).
pub(super) fn etag(bytes: &[u8]) -> String {
    etag_of(&Sha256::digest(bytes))
}

/// [`etag`] of content whose SHA-256 is `sha256`.
pub(super) fn etag_of(sha256: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&sha256[..16]))
}

/// PutObject: the body decoded, its checksum verified, the zip converted
/// and stored, and the upload recorded on the job.
async fn put_object(
    state: &ApiState,
    access_key_id: &str,
    key: &str,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, S3Error> {
    let artifacts = state.artifacts.clone();
    let (headers, raw) = (headers.clone(), body.clone());
    let spool = state.multipart.clone();
    let (digest, size) = tokio::task::spawn_blocking(move || -> Result<(String, u64), S3Error> {
        // Decoded here, off the runtime; a plain body is not copied.
        let payload = decode_body(&headers, &raw)?;
        let tar = artifact_zip::zip_to_tar(&payload, MAX_UNPACKED_BYTES)
            .map_err(|e| S3Error::invalid(format!("the object must be a zip archive, as CodePipeline's artifacts: {e}")))?;
        drop(payload);
        // The tar goes to the disk: --min-free-space holds for it too.
        let free = artifacts
            .free_bytes()
            .map_err(|e| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        spool.check_free(free, tar.len() as u64)?;
        let digest = artifacts
            .put_bytes(&tar)
            .map_err(|e| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        Ok((digest, tar.len() as u64))
    })
    .await
    .map_err(|e| S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    record_output(state, access_key_id, key, digest, size).await?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(tag) = header::HeaderValue::from_str(&etag(&body)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}

/// Records a converted upload (stored as `digest`) as the job's output.
pub(super) async fn record_output(
    state: &ApiState,
    access_key_id: &str,
    key: &str,
    digest: String,
    size: u64,
) -> Result<(), S3Error> {
    let record = RecordJobOutput {
        access_key_id: access_key_id.to_string(),
        key: key.to_string(),
        artifact: ArtifactRef { digest, size },
    };
    match crate::api::ask(state, record, job_caller(access_key_id)).await {
        Ok(_) => Ok(()),
        Err(OpError::InvalidJobState(why)) => {
            Err(S3Error::new("ExpiredToken", StatusCode::BAD_REQUEST, format!("the provided token has expired: {why}")))
        }
        Err(OpError::AccessDenied(why)) => Err(S3Error::denied(why)),
        Err(e) => Err(S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The object's bytes: the body itself, or the chunks of an `aws-chunked`
/// body; with the checksum it carries (header or trailer) verified.
pub fn decode_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, S3Error> {
    let (payload, trailers) = if is_chunked(headers)? {
        let (payload, trailers) = decode_chunked(body)?;
        check_decoded_length(headers, payload.len() as u64)?;
        (std::borrow::Cow::Owned(payload), trailers)
    } else {
        (std::borrow::Cow::Borrowed(body), Vec::new())
    };
    verify_checksums(headers, trailers, crc32fast::hash(&payload), &Sha256::digest(&payload))?;
    Ok(payload)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Whether the body is `aws-chunked`; refuses the streaming kinds outside
/// the subset (signed chunks).
pub(super) fn is_chunked(headers: &HeaderMap) -> Result<bool, S3Error> {
    let sha = header_text(headers, "x-amz-content-sha256").unwrap_or_default();
    let chunked = sha.starts_with("STREAMING-")
        || header_text(headers, "content-encoding").is_some_and(|e| e.split(',').any(|p| p.trim() == "aws-chunked"));
    if chunked && sha != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
        return Err(S3Error::new(
            "NotImplemented",
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "x-amz-content-sha256 {sha:?}: of the streaming uploads only STREAMING-UNSIGNED-PAYLOAD-TRAILER is supported"
            ),
        ));
    }
    Ok(chunked)
}

/// The decoded length of an `aws-chunked` body against what the request declared.
pub(super) fn check_decoded_length(headers: &HeaderMap, decoded: u64) -> Result<(), S3Error> {
    match header_text(headers, "x-amz-decoded-content-length") {
        Some(declared) if declared.parse::<u64>().ok() != Some(decoded) => Err(S3Error::new(
            "IncompleteBody",
            StatusCode::BAD_REQUEST,
            format!("x-amz-decoded-content-length says {declared} bytes, the chunks hold {decoded}"),
        )),
        _ => Ok(()),
    }
}

/// The checksums a request carries (headers, and the trailers of an
/// `aws-chunked` body) against the payload's CRC32 and SHA-256.
pub(super) fn verify_checksums(headers: &HeaderMap, trailers: Trailers, crc32: u32, sha256: &[u8]) -> Result<(), S3Error> {
    let text = |name: &str| header_text(headers, name);
    let mut checksums: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-amz-checksum-") && k.as_str() != "x-amz-checksum-mode")
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    checksums.extend(trailers);
    if let Some(trailer) = text("x-amz-trailer")
        && !checksums.iter().any(|(k, _)| k.eq_ignore_ascii_case(trailer.trim()))
    {
        return Err(S3Error::new(
            "IncompleteBody",
            StatusCode::BAD_REQUEST,
            format!("the trailer {trailer} was announced but not sent"),
        ));
    }
    for (name, value) in checksums {
        let actual = match name.to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" => base64::engine::general_purpose::STANDARD.encode(crc32.to_be_bytes()),
            "x-amz-checksum-sha256" => base64::engine::general_purpose::STANDARD.encode(sha256),
            other => {
                return Err(S3Error::invalid(format!(
                    "{other}: only CRC32 and SHA256 checksums are supported (botocore's default is CRC32)"
                )));
            }
        };
        if actual != value.trim() {
            return Err(S3Error::new(
                "BadDigest",
                StatusCode::BAD_REQUEST,
                format!("the {name} you specified did not match the calculated checksum"),
            ));
        }
    }
    Ok(())
}

/// Trailer lines of an `aws-chunked` body: lowercase name, value.
pub(super) type Trailers = Vec<(String, String)>;

/// `aws-chunked`: `HEX-SIZE[;ext]\r\nDATA\r\n` ... `0\r\n` then trailer
/// lines `name:value\r\n` and an empty line.
fn decode_chunked(body: &[u8]) -> Result<(Vec<u8>, Trailers), S3Error> {
    let malformed =
        |why: &str| S3Error::new("IncompleteBody", StatusCode::BAD_REQUEST, format!("malformed aws-chunked body: {why}"));
    let mut payload = Vec::new();
    let mut rest = body;
    loop {
        let line_end = find_crlf(rest).ok_or_else(|| malformed("a chunk header has no line end"))?;
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| malformed("a chunk header is not text"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("a chunk size is not hex"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        let end = size
            .checked_add(2)
            .filter(|end| *end <= rest.len())
            .ok_or_else(|| malformed("a chunk is shorter than its size"))?;
        if &rest[size..end] != b"\r\n" {
            return Err(malformed("a chunk is shorter than its size"));
        }
        payload.extend_from_slice(&rest[..size]);
        rest = &rest[end..];
    }
    let mut trailers = Vec::new();
    while !rest.is_empty() {
        let line_end = find_crlf(rest).unwrap_or(rest.len());
        let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| malformed("a trailer is not text"))?;
        rest = rest.get(line_end + 2..).unwrap_or(&[]);
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("a trailer is not name:value"))?;
        if name.trim().eq_ignore_ascii_case("x-amz-trailer-signature") {
            continue;
        }
        trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((payload, trailers))
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    fn crc(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(bytes).to_be_bytes())
    }

    #[test]
    fn an_aws_chunked_body_with_a_crc32_trailer_decodes_and_is_verified() {
        let data = b"hello, worker";
        let body = format!("5\r\nhello\r\n8\r\n, worker\r\n0\r\nx-amz-checksum-crc32:{}\r\n\r\n", crc(data));
        let h = headers(&[
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("x-amz-decoded-content-length", "13"),
        ]);
        assert_eq!(decode_body(&h, body.as_bytes()).unwrap().as_ref(), data);
        let forged = body.replace(", worker", ", w0rker");
        assert_eq!(decode_body(&h, forged.as_bytes()).unwrap_err().code, "BadDigest");
        let huge = "ffffffffffffffff\r\nhello\r\n";
        assert_eq!(decode_body(&h, huge.as_bytes()).unwrap_err().code, "IncompleteBody");
        let cut = "5\r\nhello\r\n8\r\n, wo";
        assert_eq!(decode_body(&h, cut.as_bytes()).unwrap_err().code, "IncompleteBody");
        let no_trailer = "5\r\nhello\r\n8\r\n, worker\r\n0\r\n\r\n";
        assert_eq!(decode_body(&h, no_trailer.as_bytes()).unwrap_err().code, "IncompleteBody");
        let signed = headers(&[("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]);
        assert_eq!(decode_body(&signed, body.as_bytes()).unwrap_err().code, "NotImplemented");
    }

    #[test]
    fn a_plain_body_is_checked_against_its_checksum_header() {
        let h = headers(&[("x-amz-checksum-crc32", &crc(b"zip"))]);
        assert_eq!(decode_body(&h, b"zip").unwrap().as_ref(), b"zip");
        assert_eq!(decode_body(&h, b"zap").unwrap_err().code, "BadDigest");
        let other = headers(&[("x-amz-checksum-crc32c", "AAAAAA==")]);
        assert_eq!(decode_body(&other, b"zip").unwrap_err().code, "InvalidArgument");
    }

    #[test]
    fn ranges_and_keys_read_as_s3_reads_them() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
        let path_style = headers(&[("host", "127.0.0.1:7400")]);
        let key = object_key(&path_style, &format!("/{BUCKET}/p/e%201/in/src.zip")).unwrap();
        assert_eq!(key.as_deref(), Some("p/e 1/in/src.zip"));
        assert_eq!(object_key(&path_style, "/other-bucket/p/in/src.zip").unwrap(), None);
        let virtual_host = headers(&[("host", "sluice-artifacts.ci.example:7400")]);
        let key = object_key(&virtual_host, "/sluice-artifacts/e/in/src.zip").unwrap();
        assert_eq!(key.as_deref(), Some("sluice-artifacts/e/in/src.zip"), "a pipeline may be named as the bucket");
        let e = S3Error::denied("a < b & c");
        let response = e.response(&Method::GET, "/x");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn uploads_are_read_and_converted_a_few_at_a_time() {
        let held: Vec<_> = futures_util::future::join_all((0..MAX_CONVERSIONS).map(|_| conversion_permit())).await;
        let wait = std::time::Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, conversion_permit()).await.is_err(), "a third upload must wait");
        drop(held);
        assert!(tokio::time::timeout(wait, conversion_permit()).await.unwrap().is_ok());
    }

    #[test]
    fn headers_alone_refuse_foreign_keys_services_and_stale_dates() {
        let now = 1_780_000_000; // 2026-05-28T20:26:40Z
        let parts = |key: &str, service: &str, date: &str| {
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential={key}/{}/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
                &date[..8],
                "0".repeat(64)
            );
            let request = axum::http::Request::put("/sluice-artifacts/a/b.zip")
                .header("host", "localhost")
                .header("x-amz-date", date)
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
                .header("authorization", auth)
                .body(())
                .unwrap();
            request.into_parts().0
        };
        let good = "ASIAABCDEFGHIJKLMNOP";
        assert_eq!(precheck(&parts(good, "s3", "20260528T202640Z"), now).unwrap(), good);
        for (key, service, date, code) in [
            ("AKIAABCDEFGHIJKLMNOP", "s3", "20260528T202640Z", "InvalidAccessKeyId"),
            ("ASIAFORGED", "s3", "20260528T202640Z", "InvalidAccessKeyId"),
            ("ASIAabcdefghijklmnop", "s3", "20260528T202640Z", "InvalidAccessKeyId"),
            (good, "codepipeline", "20260528T202640Z", "AuthorizationHeaderMalformed"),
            (good, "s3", "20260528T190000Z", "RequestTimeTooSkewed"),
        ] {
            assert_eq!(precheck(&parts(key, service, date), now).unwrap_err().code, code, "{key} {service} {date}");
        }
        let mut unsigned = parts(good, "s3", "20260528T202640Z");
        unsigned.headers.remove("authorization");
        assert_eq!(precheck(&unsigned, now).unwrap_err().code, "AccessDenied");
    }

    #[test]
    fn an_archive_that_cannot_be_served_is_a_client_error() {
        let e = serve_error(artifact_zip::Unservable::TooLarge(10).into());
        assert_eq!((e.code, e.status), ("EntityTooLarge", StatusCode::BAD_REQUEST));
        let e = serve_error(artifact_zip::Unservable::Entry { entry: "l".into(), why: "leaves".into() }.into());
        assert_eq!((e.code, e.status), ("InvalidObjectState", StatusCode::FORBIDDEN));
        let e = serve_error(anyhow::anyhow!("disk on fire"));
        assert_eq!((e.code, e.status), ("InternalError", StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[tokio::test]
    async fn a_refused_requests_body_is_drained_only_when_small() {
        assert!(drain(Body::from(vec![0u8; 1000]), Some(1000)).await);
        assert!(!drain(Body::from(vec![0u8; 10]), Some(DRAIN_LIMIT + 1)).await, "declared too large: not read");
        assert!(!drain(Body::from(vec![0u8; DRAIN_LIMIT as usize + 1]), None).await, "larger than it said");
    }
}
