//! Multipart uploads of a job's output objects, the subset boto3's
//! `upload_file`/`upload_fileobj` use above their 8 MiB threshold:
//! CreateMultipartUpload (`POST ?uploads`), UploadPart
//! (`PUT ?partNumber=N&uploadId=ID`), CompleteMultipartUpload
//! (`POST ?uploadId=ID`) and AbortMultipartUpload (`DELETE ?uploadId=ID`).
//!
//! The credential rules are PutObject's (checked by [`super::s3`] before
//! anything here runs): only the job's own output keys, only while the job
//! runs. An upload id is also bound to the key that created it and to its
//! object key: any other caller gets `NoSuchUpload`.
//!
//! Parts are spooled to files under `DATA/s3-uploads/ID/`, never kept in
//! memory between requests; their total is bounded by
//! [`super::s3::MAX_UPLOAD_BYTES`] (counted while a part is written), a
//! part that would leave less than `--min-free-space` on the disk is
//! refused (re-checked every few MiB written), and a key has at most
//! [`MAX_UPLOADS_PER_KEY`] uploads open. An upload's files go on
//! complete, on abort, when its job ends ([`sweep_forever`]) and when the
//! controller starts ([`Spool::open`] empties the directory: the ids lived
//! in memory). The completed object is converted like a PutObject's.

use super::s3::{S3Error, record_output, xml_escape};
use super::sigv4;
use crate::api::ApiState;
use crate::artifact_zip::{self, MAX_UNPACKED_BYTES};
use crate::ops::{JobCredentials, OpError};
use crate::workers::BUCKET;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// S3's smallest part, except the last one of an upload.
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// Largest CompleteMultipartUpload body: 10 000 parts with their ETags and
/// checksums take about 1.5 MiB.
pub const MAX_LIST_BYTES: usize = 4 << 20;
/// Multipart uploads one key may have open at once.
pub const MAX_UPLOADS_PER_KEY: usize = 32;
/// How often, in bytes written, a part being received re-checks the free
/// space of the disk (a missing or lying Content-Length is no guard).
const FREE_CHECK_EVERY: u64 = 4 << 20;
/// How often uploads of ended jobs are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Which multipart operation a query string names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// No multipart parameter: GetObject, HeadObject, PutObject.
    None,
    Create,
    Part {
        upload_id: String,
        number: u32,
    },
    /// CompleteMultipartUpload (POST), AbortMultipartUpload (DELETE) or
    /// ListParts (GET, not supported).
    Upload {
        upload_id: String,
    },
}

/// Reads the multipart parameters of a query string; any other parameter
/// (`acl`, `tagging`, ...) is `NotImplemented` on a write.
pub fn parse_query(query: &str) -> Result<Query, S3Error> {
    let mut uploads = false;
    let mut upload_id = None;
    let mut part = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "uploads" => uploads = true,
            "uploadId" => upload_id = Some(value.to_string()),
            "partNumber" => part = Some(value.to_string()),
            // Sent by some SDKs on every call; carries nothing.
            "x-id" => {}
            other => {
                return Err(not_implemented(format!(
                    "the query parameter {other:?} is not supported: this S3 subset serves GetObject, PutObject, \
                     HeadObject and multipart uploads"
                )));
            }
        }
    }
    match (uploads, upload_id, part) {
        (false, None, None) => Ok(Query::None),
        (true, None, None) => Ok(Query::Create),
        (false, Some(upload_id), None) => Ok(Query::Upload { upload_id }),
        (false, Some(upload_id), Some(number)) => {
            let number = number.parse::<u32>().ok().filter(|n| (1..=MAX_PART_NUMBER).contains(n)).ok_or_else(|| {
                S3Error::invalid(format!("part number must be an integer between 1 and {MAX_PART_NUMBER}"))
            })?;
            Ok(Query::Part { upload_id, number })
        }
        _ => Err(S3Error::invalid("uploads, uploadId and partNumber do not go together that way")),
    }
}

fn not_implemented(message: String) -> S3Error {
    S3Error::new("NotImplemented", StatusCode::NOT_IMPLEMENTED, message)
}

fn no_such_upload(upload_id: &str) -> S3Error {
    S3Error::new(
        "NoSuchUpload",
        StatusCode::NOT_FOUND,
        format!(
            "the upload {upload_id:?} does not exist: it was completed or aborted, its job ended, or it belongs \
             to another key or object"
        ),
    )
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    S3Error::new("InternalError", StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// An uploaded part, as recorded when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub etag: String,
    pub size: u64,
    /// Base64 of the big-endian CRC32 of the part, to check a
    /// `ChecksumCRC32` of the completion list against.
    pub crc32: String,
}

/// A part as CompleteMultipartUpload lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: u32,
    pub etag: String,
    pub crc32: Option<String>,
}

/// Reads `<CompleteMultipartUpload><Part><PartNumber>N</PartNumber>
/// <ETag>"..."</ETag>...</Part>...` (namespace and order of the fields free).
pub fn parse_complete(xml: &str) -> Result<Vec<ListedPart>, S3Error> {
    let malformed = |why: &str| {
        S3Error::new(
            "MalformedXML",
            StatusCode::BAD_REQUEST,
            format!("the XML you provided was not well-formed or did not validate against our published schema: {why}"),
        )
    };
    let body = xml.trim_start_matches('\u{feff}').trim();
    let body = match body.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map(|(_, rest)| rest.trim()).ok_or_else(|| malformed("open declaration"))?,
        None => body,
    };
    if !body.starts_with("<CompleteMultipartUpload") || !body.ends_with("</CompleteMultipartUpload>") {
        return Err(malformed("the root element must be CompleteMultipartUpload"));
    }
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<Part>") {
        let inner = &rest[start + "<Part>".len()..];
        let end = inner.find("</Part>").ok_or_else(|| malformed("a Part is not closed"))?;
        let part = &inner[..end];
        let number = element(part, "PartNumber")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
            .ok_or_else(|| malformed("a Part has no valid PartNumber"))?;
        let etag = element(part, "ETag").map(xml_unescape).ok_or_else(|| malformed("a Part has no ETag"))?;
        let crc32 = element(part, "ChecksumCRC32").map(|c| c.trim().to_string());
        parts.push(ListedPart { number, etag, crc32 });
        rest = &inner[end + "</Part>".len()..];
    }
    if parts.is_empty() {
        return Err(malformed("you must specify at least one part"));
    }
    Ok(parts)
}

/// The text of `<name>...</name>` in `xml`, if there.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + len])
}

fn xml_unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// S3's rules for a completion list against the uploaded parts: ascending
/// part numbers, each uploaded with that ETag (and CRC32 when listed),
/// every part but the last at least [`MIN_PART_BYTES`].
pub fn check_complete(listed: &[ListedPart], uploaded: &BTreeMap<u32, Part>) -> Result<(), S3Error> {
    if listed.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(S3Error::new(
            "InvalidPartOrder",
            StatusCode::BAD_REQUEST,
            "the list of parts was not in ascending order: parts must be ordered by part number",
        ));
    }
    let invalid = |number: u32, why: &str| {
        S3Error::new(
            "InvalidPart",
            StatusCode::BAD_REQUEST,
            format!("one or more of the specified parts could not be found or did not match: part {number} {why}"),
        )
    };
    // Every listed part first: a forged list is InvalidPart whatever the sizes.
    let mut parts = Vec::with_capacity(listed.len());
    for wanted in listed {
        let part = uploaded.get(&wanted.number).ok_or_else(|| invalid(wanted.number, "was not uploaded"))?;
        if wanted.etag.trim().trim_matches('"') != part.etag.trim_matches('"') {
            return Err(invalid(wanted.number, "has another ETag"));
        }
        if wanted.crc32.as_deref().is_some_and(|c| c != part.crc32) {
            return Err(invalid(wanted.number, "has another ChecksumCRC32"));
        }
        parts.push(part);
    }
    for (i, (wanted, part)) in listed.iter().zip(parts).enumerate() {
        if i + 1 < listed.len() && part.size < MIN_PART_BYTES {
            return Err(S3Error::new(
                "EntityTooSmall",
                StatusCode::BAD_REQUEST,
                format!(
                    "your proposed upload is smaller than the minimum allowed size: part {} is {} bytes, every part \
                     but the last must be at least {MIN_PART_BYTES}",
                    wanted.number, part.size
                ),
            ));
        }
    }
    Ok(())
}

/// The ETag of a completed upload, as S3 shapes it: a digest of the parts'
/// tags and their count.
pub fn multipart_etag(listed: &[ListedPart]) -> String {
    let mut hash = Sha256::new();
    for part in listed {
        hash.update(part.etag.trim_matches('"').as_bytes());
    }
    format!("\"{}-{}\"", hex::encode(&hash.finalize()[..16]), listed.len())
}

/// One upload in progress.
#[derive(Debug, Clone)]
struct Upload {
    access_key_id: String,
    key: String,
    parts: BTreeMap<u32, Part>,
    /// A completion is converting the parts: no part may change meanwhile.
    completing: bool,
}

/// The uploads in progress and their spooled parts.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    min_free_space: u64,
    uploads: Arc<Mutex<HashMap<String, Upload>>>,
    /// Counts the writes the floor refuses (`sluice_free_space_refusals_total`).
    refusals: Arc<sluice_protocol::metrics::Counter>,
}

impl Spool {
    /// Opens `root`, removing what a previous run left: its upload ids
    /// lived in that process's memory, so no client can finish them.
    pub fn open(root: &Path, min_free_space: u64) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if root.exists() {
            std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
        }
        crate::ca::create_private_dir(root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self { root: root.to_path_buf(), min_free_space, uploads: Default::default(), refusals: Default::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().expect("multipart spool lock")
    }

    fn dir(&self, upload_id: &str) -> PathBuf {
        self.root.join(upload_id)
    }

    /// A new upload of `key` by `access_key_id`; returns its id.
    /// At most [`MAX_UPLOADS_PER_KEY`] uploads of one key are open at once.
    pub fn create(&self, access_key_id: &str, key: &str) -> Result<String, S3Error> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let mut uploads = self.lock();
        if uploads.values().filter(|u| u.access_key_id == access_key_id).count() >= MAX_UPLOADS_PER_KEY {
            return Err(S3Error::new(
                "InvalidRequest",
                StatusCode::BAD_REQUEST,
                format!(
                    "this key has {MAX_UPLOADS_PER_KEY} multipart uploads open: complete or abort one before \
                     creating another"
                ),
            ));
        }
        std::fs::create_dir(self.dir(&upload_id)).map_err(internal)?;
        let upload =
            Upload { access_key_id: access_key_id.into(), key: key.into(), parts: BTreeMap::new(), completing: false };
        uploads.insert(upload_id.clone(), upload);
        Ok(upload_id)
    }

    /// Bytes part `number` may hold within `max_total` for the whole
    /// upload, given its other parts: the bound a part is received under.
    pub fn room_for_part(&self, ids: (&str, &str, &str), number: u32, max_total: u64) -> Result<u64, S3Error> {
        let mut uploads = self.lock();
        let upload = Self::check(&mut uploads, ids.0, ids.1, ids.2)?;
        let others: u64 = upload.parts.iter().filter(|(n, _)| **n != number).map(|(_, p)| p.size).sum();
        Ok(max_total.saturating_sub(others))
    }

    /// The upload, if it is `access_key_id`'s upload of `key` and is not
    /// being completed.
    fn check<'a>(
        uploads: &'a mut HashMap<String, Upload>,
        upload_id: &str,
        access_key_id: &str,
        key: &str,
    ) -> Result<&'a mut Upload, S3Error> {
        uploads
            .get_mut(upload_id)
            .filter(|u| u.access_key_id == access_key_id && u.key == key && !u.completing)
            .ok_or_else(|| no_such_upload(upload_id))
    }

    /// The upload's directory, if the upload is `access_key_id`'s of `key`
    /// and takes parts.
    pub fn check_open(&self, (upload_id, access_key_id, key): (&str, &str, &str)) -> Result<PathBuf, S3Error> {
        Self::check(&mut self.lock(), upload_id, access_key_id, key)?;
        Ok(self.dir(upload_id))
    }

    /// Counts this spool's refusals into `counter` (the controller's metric).
    pub fn counting_refusals(self, counter: Arc<sluice_protocol::metrics::Counter>) -> Self {
        Self { refusals: counter, ..self }
    }

    /// Refuses `incoming` bytes that would leave less than
    /// `--min-free-space` of the `free` bytes on the disk.
    pub fn check_free(&self, free: u64, incoming: u64) -> Result<(), S3Error> {
        if free.saturating_sub(incoming) < self.min_free_space {
            self.refusals.inc();
            return Err(S3Error::new(
                "ServiceUnavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the controller keeps {} bytes free on its disk (--min-free-space): try again later",
                    self.min_free_space
                ),
            ));
        }
        Ok(())
    }

    /// Makes the file `tmp` (in the upload's directory) part `number`; a
    /// part number sent again replaces the part (as S3 does). The upload's
    /// total stays within `max_total`. `tmp` is removed on refusal.
    pub fn add_part(
        &self,
        (upload_id, access_key_id, key): (&str, &str, &str),
        number: u32,
        tmp: &Path,
        part: Part,
        max_total: u64,
    ) -> Result<Part, S3Error> {
        let mut uploads = self.lock();
        let result = Self::check(&mut uploads, upload_id, access_key_id, key).and_then(|upload| {
            let others: u64 = upload.parts.iter().filter(|(n, _)| **n != number).map(|(_, p)| p.size).sum();
            if others + part.size > max_total {
                return Err(S3Error::new(
                    "EntityTooLarge",
                    StatusCode::BAD_REQUEST,
                    format!("objects are at most {max_total} bytes, all parts of an upload together"),
                ));
            }
            std::fs::rename(tmp, self.dir(upload_id).join(number.to_string())).map_err(internal)?;
            upload.parts.insert(number, part.clone());
            Ok(part)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(tmp);
        }
        result
    }

    /// [`Spool::add_part`] of bytes in memory.
    #[cfg(test)]
    fn put_part(
        &self,
        ids: (&str, &str, &str),
        number: u32,
        payload: &[u8],
        max_total: u64,
        free_bytes: u64,
    ) -> Result<Part, S3Error> {
        use super::s3::etag;
        let dir = self.check_open(ids)?;
        self.check_free(free_bytes, payload.len() as u64)?;
        let tmp = dir.join(format!("{number}.{}.tmp", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, payload).map_err(|_| no_such_upload(ids.0))?;
        let part = Part { etag: etag(payload), size: payload.len() as u64, crc32: base64_crc32(crc32fast::hash(payload)) };
        self.add_part(ids, number, &tmp, part, max_total)
    }

    /// Checks a completion list and freezes the upload while it converts;
    /// the parts then are its files and their sizes, in order.
    pub fn begin_complete(
        &self,
        (upload_id, access_key_id, key): (&str, &str, &str),
        listed: &[ListedPart],
    ) -> Result<Vec<(PathBuf, u64)>, S3Error> {
        let mut uploads = self.lock();
        let upload = Self::check(&mut uploads, upload_id, access_key_id, key)?;
        check_complete(listed, &upload.parts)?;
        upload.completing = true;
        let file = |p: &ListedPart| (self.dir(upload_id).join(p.number.to_string()), upload.parts[&p.number].size);
        Ok(listed.iter().map(file).collect())
    }

    /// A completion that failed: the upload takes parts again (nothing lost).
    pub fn reopen(&self, upload_id: &str) {
        if let Some(upload) = self.lock().get_mut(upload_id) {
            upload.completing = false;
        }
    }

    /// Forgets an upload and removes its files.
    pub fn remove(&self, upload_id: &str) {
        self.lock().remove(upload_id);
        if let Err(e) = std::fs::remove_dir_all(self.dir(upload_id))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(upload = upload_id, "removing a multipart upload's parts: {e}");
        }
    }

    /// AbortMultipartUpload.
    pub fn abort(&self, (upload_id, access_key_id, key): (&str, &str, &str)) -> Result<(), S3Error> {
        Self::check(&mut self.lock(), upload_id, access_key_id, key)?;
        self.remove(upload_id);
        Ok(())
    }

    /// Every upload in progress and the key that made it.
    #[cfg(test)]
    pub fn uploads(&self) -> Vec<(String, String)> {
        self.lock().iter().map(|(id, u)| (id.clone(), u.access_key_id.clone())).collect()
    }

    /// The uploads in progress by the key that made them: one question
    /// to the driver per key, however many uploads it has open.
    pub fn uploads_by_key(&self) -> BTreeMap<String, Vec<String>> {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, upload) in self.lock().iter() {
            keys.entry(upload.access_key_id.clone()).or_default().push(id.clone());
        }
        keys
    }
}

fn base64_crc32(crc: u32) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/xml"));
    response
}

/// A multipart request by a verified key allowed to write `key`.
pub(super) async fn serve(
    state: &ApiState,
    access_key_id: &str,
    key: &str,
    query: Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, S3Error> {
    let spool = &state.multipart;
    match query {
        Query::Create => {
            let upload_id = spool.create(access_key_id, key)?;
            debug!(upload = %upload_id, %key, "multipart upload created");
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{BUCKET}</Bucket><Key>{}</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>",
                xml_escape(key)
            );
            let mut response = xml_response(StatusCode::OK, xml);
            if let Some(algorithm) = headers.get("x-amz-checksum-algorithm") {
                response.headers_mut().insert("x-amz-checksum-algorithm", algorithm.clone());
            }
            Ok(response)
        }
        Query::Upload { upload_id } => complete(state, (&upload_id, access_key_id, key), body).await,
        Query::None | Query::Part { .. } => Err(internal("not a multipart request of a read body")),
    }
}

/// The hashes of bytes as they pass.
#[derive(Default)]
struct Hashes {
    len: u64,
    crc32: crc32fast::Hasher,
    sha256: Sha256,
}

impl Hashes {
    fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        self.crc32.update(bytes);
        self.sha256.update(bytes);
    }

    fn part(self) -> (Part, Vec<u8>, u32) {
        let sha256 = self.sha256.finalize().to_vec();
        let crc32 = self.crc32.finalize();
        (Part { etag: super::s3::etag_of(&sha256), size: self.len, crc32: base64_crc32(crc32) }, sha256, crc32)
    }
}

/// UploadPart, its body streamed to a file of the upload as it arrives
/// (never held whole in memory), then checked: the signed payload hash,
/// the `aws-chunked` framing, the checksums; then made the part.
pub(super) async fn upload_part(
    state: &ApiState,
    ids: (&str, &str, &str),
    number: u32,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, S3Error> {
    let spool = state.multipart.clone();
    let dir = spool.check_open(ids)?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let free = state.artifacts.free_bytes().map_err(|e| internal(format!("{e:#}")))?;
    spool.check_free(free, declared.unwrap_or(0))?;
    // The upload's total bounds the part while it is written, not after.
    let limit = spool.room_for_part(ids, number, super::s3::MAX_UPLOAD_BYTES as u64)?;
    let raw = dir.join(format!("{number}.{}.raw", uuid::Uuid::new_v4().simple()));
    let room = |incoming: u64| {
        let free = state.artifacts.free_bytes().map_err(|e| internal(format!("{e:#}")))?;
        spool.check_free(free, incoming)
    };
    // An abort (or the job's end) meanwhile removes the directory.
    let received = receive(body, &raw, limit, room).await.map_err(|e| if dir.exists() { e } else { no_such_upload(ids.0) });
    let checked = match received {
        Ok(hashes) => check_part(headers, hashes, &raw).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&raw);
    let (tmp, part) = checked?;
    let (upload_id, owner, key) = (ids.0.to_string(), ids.1.to_string(), ids.2.to_string());
    let part = tokio::task::spawn_blocking(move || {
        spool.add_part((&upload_id, &owner, &key), number, &tmp, part, super::s3::MAX_UPLOAD_BYTES as u64)
    })
    .await
    .map_err(internal)??;
    debug!(upload = ids.0, number, size = part.size, "part uploaded");
    let mut response = StatusCode::OK.into_response();
    if let Ok(tag) = header::HeaderValue::from_str(&part.etag) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if let Ok(crc) = header::HeaderValue::from_str(&part.crc32) {
        response.headers_mut().insert("x-amz-checksum-crc32", crc);
    }
    Ok(response)
}

/// Writes the body to `path`, at most `limit` bytes, hashing it; asks
/// `room` every [`FREE_CHECK_EVERY`] bytes whether the disk takes that much
/// more (the `--min-free-space` check).
async fn receive(
    body: axum::body::Body,
    path: &Path,
    limit: u64,
    room: impl Fn(u64) -> Result<(), S3Error>,
) -> Result<Hashes, S3Error> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut hashes = Hashes::default();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| S3Error::new("IncompleteBody", StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        if hashes.len + chunk.len() as u64 > limit {
            return Err(S3Error::new(
                "EntityTooLarge",
                StatusCode::BAD_REQUEST,
                format!("objects are at most {limit} bytes"),
            ));
        }
        if (hashes.len + chunk.len() as u64) / FREE_CHECK_EVERY != hashes.len / FREE_CHECK_EVERY {
            room(FREE_CHECK_EVERY)?;
        }
        hashes.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.sync_data().await.map_err(internal)?;
    Ok(hashes)
}

/// The received body `raw` as a part: its payload file and record.
async fn check_part(headers: &HeaderMap, received: Hashes, raw: &Path) -> Result<(PathBuf, Part), S3Error> {
    let claimed = headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let chunked = super::s3::is_chunked(headers)?;
    if claimed != sigv4::UNSIGNED_PAYLOAD && !chunked {
        let actual = hex::encode(received.sha256.clone().finalize());
        if !claimed.eq_ignore_ascii_case(&actual) {
            return Err(super::s3::signature_error(&sigv4::SigError::PayloadMismatch));
        }
    }
    let tmp = raw.with_extension("tmp");
    let (part, sha256, crc32, trailers) = if chunked {
        let (raw, out) = (raw.to_path_buf(), tmp.clone());
        let decoded = tokio::task::spawn_blocking(move || -> Result<_, S3Error> {
            let reader = std::io::BufReader::new(std::fs::File::open(&raw).map_err(internal)?);
            let writer = std::io::BufWriter::new(std::fs::File::create(&out).map_err(internal)?);
            decode_chunked_stream(reader, writer)
        })
        .await
        .map_err(internal)?;
        let (hashes, trailers) = decoded
            .and_then(|(hashes, trailers)| {
                super::s3::check_decoded_length(headers, hashes.len)?;
                Ok((hashes, trailers))
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        let (part, sha256, crc32) = hashes.part();
        (part, sha256, crc32, trailers)
    } else {
        std::fs::rename(raw, &tmp).map_err(internal)?;
        let (part, sha256, crc32) = received.part();
        (part, sha256, crc32, Vec::new())
    };
    if let Err(e) = super::s3::verify_checksums(headers, trailers, crc32, &sha256) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, part))
}

/// `aws-chunked` read from `reader`: the payload to `writer` (hashed), the
/// trailers returned. See [`super::s3::decode_body`] for the framing.
fn decode_chunked_stream(
    mut reader: impl std::io::BufRead,
    mut writer: impl std::io::Write,
) -> Result<(Hashes, super::s3::Trailers), S3Error> {
    let malformed =
        |why: &str| S3Error::new("IncompleteBody", StatusCode::BAD_REQUEST, format!("malformed aws-chunked body: {why}"));
    let mut line = Vec::new();
    let mut read_line = |reader: &mut dyn std::io::BufRead| -> Result<Option<String>, S3Error> {
        line.clear();
        // A line is short: a chunk header or a trailer, never data.
        let n = reader.take(4096).read_until(b'\n', &mut line).map_err(internal)?;
        if n == 0 {
            return Ok(None);
        }
        let text = line.strip_suffix(b"\r\n").ok_or_else(|| malformed("a line has no CRLF end"))?;
        String::from_utf8(text.to_vec()).map(Some).map_err(|_| malformed("a chunk header or trailer is not text"))
    };
    let mut hashes = Hashes::default();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let header = read_line(&mut reader)?.ok_or_else(|| malformed("a chunk header is missing"))?;
        let size_text = header.split(';').next().unwrap_or("").trim();
        let mut size = u64::from_str_radix(size_text, 16).map_err(|_| malformed("a chunk size is not hex"))?;
        if size == 0 {
            break;
        }
        while size > 0 {
            let want = size.min(buffer.len() as u64) as usize;
            let got = reader.read(&mut buffer[..want]).map_err(internal)?;
            if got == 0 {
                return Err(malformed("a chunk is shorter than its size"));
            }
            hashes.update(&buffer[..got]);
            writer.write_all(&buffer[..got]).map_err(internal)?;
            size -= got as u64;
        }
        let mut end = [0u8; 2];
        reader.read_exact(&mut end).map_err(|_| malformed("a chunk is shorter than its size"))?;
        if &end != b"\r\n" {
            return Err(malformed("a chunk is shorter than its size"));
        }
    }
    writer.flush().map_err(internal)?;
    let mut trailers = Vec::new();
    while let Some(line) = read_line(&mut reader)? {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("a trailer is not name:value"))?;
        if !name.trim().eq_ignore_ascii_case("x-amz-trailer-signature") {
            trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Ok((hashes, trailers))
}

/// The files of the listed parts read as one object, in order, with seeks
/// (a zip is read from its end): the object is never copied whole.
struct Joined {
    files: Vec<(std::fs::File, u64)>,
    position: u64,
    total: u64,
}

impl Joined {
    fn open(parts: &[(PathBuf, u64)]) -> std::io::Result<Self> {
        let files =
            parts.iter().map(|(path, size)| Ok((std::fs::File::open(path)?, *size))).collect::<std::io::Result<Vec<_>>>()?;
        let total = files.iter().map(|(_, size)| size).sum();
        Ok(Self { files, position: 0, total })
    }
}

impl std::io::Read for Joined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Seek as _;
        let mut start = 0;
        for (file, size) in &mut self.files {
            if self.position < start + *size {
                let offset = self.position - start;
                file.seek(std::io::SeekFrom::Start(offset))?;
                let want = buf.len().min((*size - offset) as usize);
                let n = file.read(&mut buf[..want])?;
                self.position += n as u64;
                return Ok(n);
            }
            start += *size;
        }
        Ok(0)
    }
}

impl std::io::Seek for Joined {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.total.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.position.checked_add_signed(d),
        };
        self.position = target
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the object"))?;
        Ok(self.position)
    }
}

/// CompleteMultipartUpload: the list checked, the parts joined in a file,
/// converted and recorded as PutObject's body would be.
async fn complete(
    state: &ApiState,
    (upload_id, access_key_id, key): (&str, &str, &str),
    body: &[u8],
) -> Result<Response, S3Error> {
    let xml = std::str::from_utf8(body).map_err(|_| S3Error::invalid("the part list is not UTF-8"))?;
    let listed = parse_complete(xml)?;
    let spool = state.multipart.clone();
    let files = spool.begin_complete((upload_id, access_key_id, key), &listed)?;
    // The tar is built in memory: one of the few conversions at a time.
    let permit = match super::s3::conversion_permit().await {
        Ok(permit) => permit,
        Err(e) => {
            spool.reopen(upload_id);
            return Err(e);
        }
    };
    let artifacts = state.artifacts.clone();
    let spool_for_room = spool.clone();
    let converted = tokio::task::spawn_blocking(move || -> Result<(String, u64), S3Error> {
        let zip = std::io::BufReader::new(Joined::open(&files).map_err(internal)?);
        let tar = artifact_zip::zip_to_tar_from(zip, MAX_UNPACKED_BYTES)
            .map_err(|e| S3Error::invalid(format!("the object must be a zip archive, as CodePipeline's artifacts: {e}")))?;
        spool_for_room.check_free(artifacts.free_bytes().map_err(|e| internal(format!("{e:#}")))?, tar.len() as u64)?;
        let digest = artifacts.put_bytes(&tar).map_err(|e| internal(format!("{e:#}")))?;
        Ok((digest, tar.len() as u64))
    })
    .await
    .map_err(internal)
    .and_then(|r| r);
    drop(permit);
    let recorded = match converted {
        Ok((digest, size)) => record_output(state, access_key_id, key, digest, size).await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        spool.reopen(upload_id);
        return Err(e);
    }
    spool.remove(upload_id);
    info!(upload = upload_id, %key, parts = listed.len(), "multipart upload completed");
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>/{BUCKET}/{k}</Location><Bucket>{BUCKET}</Bucket><Key>{k}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        xml_escape(&multipart_etag(&listed)),
        k = xml_escape(key)
    );
    Ok(xml_response(StatusCode::OK, xml))
}

/// AbortMultipartUpload: 204, the parts removed.
pub(super) fn abort(state: &ApiState, upload_id: &str, access_key_id: &str, key: &str) -> Result<Response, S3Error> {
    state.multipart.abort((upload_id, access_key_id, key))?;
    debug!(upload = upload_id, %key, "multipart upload aborted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes, every few seconds, the uploads whose job has ended (or whose
/// key is gone): their parts can never be completed; and the served zips
/// nobody has read for a while ([`super::s3_zips::IDLE`]).
pub async fn sweep_forever(state: ApiState) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        state.zips.sweep(now, super::s3_zips::IDLE);
        for (access_key_id, upload_ids) in state.multipart.uploads_by_key() {
            let caller = super::s3::job_caller(&access_key_id);
            let ended = match crate::api::ask(&state, JobCredentials { access_key_id: access_key_id.clone() }, caller).await
            {
                Ok(credentials) => !credentials.active,
                Err(OpError::Unauthorized(_)) => true,
                Err(_) => false,
            };
            if ended {
                for upload_id in upload_ids {
                    info!(upload = %upload_id, "removing a multipart upload of an ended job");
                    state.multipart.remove(&upload_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::s3::etag;
    use super::*;

    fn part(etag: &str, size: u64) -> Part {
        Part { etag: format!("\"{etag}\""), size, crc32: "AAAAAA==".into() }
    }

    fn listed(number: u32, etag: &str) -> ListedPart {
        ListedPart { number, etag: format!("\"{etag}\""), crc32: None }
    }

    #[test]
    fn queries_name_the_multipart_operations() {
        assert_eq!(parse_query("").unwrap(), Query::None);
        assert_eq!(parse_query("uploads").unwrap(), Query::Create);
        assert_eq!(parse_query("uploads=").unwrap(), Query::Create);
        assert_eq!(parse_query("uploadId=abc").unwrap(), Query::Upload { upload_id: "abc".into() });
        assert_eq!(parse_query("partNumber=3&uploadId=abc").unwrap(), Query::Part { upload_id: "abc".into(), number: 3 });
        assert_eq!(parse_query("partNumber=0&uploadId=a").unwrap_err().code, "InvalidArgument");
        assert_eq!(parse_query("partNumber=10001&uploadId=a").unwrap_err().code, "InvalidArgument");
        assert_eq!(parse_query("partNumber=1").unwrap_err().code, "InvalidArgument");
        assert_eq!(parse_query("uploads&uploadId=a").unwrap_err().code, "InvalidArgument");
        assert_eq!(parse_query("acl").unwrap_err().code, "NotImplemented");
        assert_eq!(parse_query("tagging=&uploadId=a").unwrap_err().code, "NotImplemented");
    }

    #[test]
    fn a_completion_list_parses_as_boto3_writes_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>&quot;aa&quot;</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber><ETag>"bb"</ETag></Part></CompleteMultipartUpload>"#;
        let parts = parse_complete(xml).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], ListedPart { number: 1, etag: "\"aa\"".into(), crc32: Some("AAAAAA==".into()) });
        assert_eq!(parts[1], listed(2, "bb"));
        for bad in [
            "",
            "<CompleteMultipartUpload></CompleteMultipartUpload>",
            "<Other><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Other>",
            "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></CompleteMultipartUpload>",
        ] {
            assert_eq!(parse_complete(bad).unwrap_err().code, "MalformedXML", "{bad}");
        }
    }

    #[test]
    fn a_completion_list_must_match_the_uploaded_parts() {
        let big = MIN_PART_BYTES;
        let uploaded: BTreeMap<u32, Part> = [(1, part("a", big)), (2, part("b", big)), (3, part("c", 10))].into();
        assert!(check_complete(&[listed(1, "a"), listed(2, "b"), listed(3, "c")], &uploaded).is_ok());
        assert!(check_complete(&[listed(1, "a"), listed(3, "c")], &uploaded).is_ok(), "parts may be skipped");
        assert!(check_complete(&[listed(3, "c")], &uploaded).is_ok(), "the last part may be small");
        let code = |list: &[ListedPart]| check_complete(list, &uploaded).unwrap_err().code;
        assert_eq!(code(&[listed(2, "b"), listed(1, "a")]), "InvalidPartOrder");
        assert_eq!(code(&[listed(1, "a"), listed(1, "a")]), "InvalidPartOrder");
        assert_eq!(code(&[listed(1, "a"), listed(4, "d")]), "InvalidPart");
        assert_eq!(code(&[listed(1, "forged")]), "InvalidPart");
        assert_eq!(code(&[listed(3, "c"), listed(4, "d")]), "InvalidPart");
        let small: BTreeMap<u32, Part> = [(1, part("a", big - 1)), (2, part("b", 1))].into();
        assert_eq!(check_complete(&[listed(1, "a"), listed(2, "b")], &small).unwrap_err().code, "EntityTooSmall");
        let crc = ListedPart { crc32: Some("BBBBBB==".into()), ..listed(1, "a") };
        assert_eq!(code(&[crc]), "InvalidPart");
        assert!(multipart_etag(&[listed(1, "a"), listed(2, "b")]).ends_with("-2\""));
    }

    fn received(body: &[u8], dir: &Path) -> (Hashes, PathBuf) {
        let raw = dir.join("1.x.raw");
        std::fs::write(&raw, body).unwrap();
        let mut hashes = Hashes::default();
        hashes.update(body);
        (hashes, raw)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[tokio::test]
    async fn a_streamed_part_is_checked_against_its_signed_hash_framing_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"part of a zip";
        let crc = base64_crc32(crc32fast::hash(data));
        let sha = hex::encode(Sha256::digest(data));
        // Plain, signed with its hash (boto3 over HTTP), and a CRC32 header.
        let plain = headers(&[("x-amz-content-sha256", &sha), ("x-amz-checksum-crc32", &crc)]);
        let (hashes, raw) = received(data, dir.path());
        let (tmp, part) = check_part(&plain, hashes, &raw).await.unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), data);
        assert_eq!((part.size, part.etag, part.crc32), (13, super::super::s3::etag(data), crc.clone()));
        // A body other than the one signed.
        let (hashes, raw) = received(b"part of a zap", dir.path());
        assert_eq!(check_part(&plain, hashes, &raw).await.unwrap_err().code, "XAmzContentSHA256Mismatch");
        // Unsigned with a wrong checksum: refused, nothing left behind.
        let unsigned = headers(&[("x-amz-content-sha256", "UNSIGNED-PAYLOAD"), ("x-amz-checksum-crc32", &crc)]);
        let (hashes, raw) = received(b"part of a zap", dir.path());
        assert_eq!(check_part(&unsigned, hashes, &raw).await.unwrap_err().code, "BadDigest");
        assert!(!raw.with_extension("tmp").exists());
        // aws-chunked with a trailer (boto3 over TLS), decoded from the file.
        let chunked = headers(&[
            ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("x-amz-decoded-content-length", "13"),
        ]);
        let body = format!("4\r\npart\r\n9\r\n of a zip\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n");
        let (hashes, raw) = received(body.as_bytes(), dir.path());
        let (tmp, part) = check_part(&chunked, hashes, &raw).await.unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), data);
        assert_eq!(part.size, 13);
        for bad in [
            body.replace("of a zip", "of a zap"),
            "4\r\npart\r\n9\r\n of".to_string(),
            "ffffffffffffffff\r\npart\r\n".to_string(),
            "4\r\npartXX9\r\n of a zip\r\n0\r\n\r\n".to_string(),
            "4\npart\r\n0\r\n\r\n".to_string(),
            "4\r\npart\r\n9\r\n of a zip\r\n0\r\n\r\n".to_string(),
            body.replace("9\r\n of a zip", "8\r\n of a zi"),
            format!("{}\r\n", "0".repeat(5000)),
        ] {
            let (hashes, raw) = received(bad.as_bytes(), dir.path());
            let code = check_part(&chunked, hashes, &raw).await.unwrap_err().code;
            assert!(["BadDigest", "IncompleteBody"].contains(&code), "{bad:?}: {code}");
            assert!(!raw.with_extension("tmp").exists(), "{bad:?}");
        }
    }

    #[test]
    fn the_parts_read_as_one_object_with_seeks() {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Vec::new();
        for (i, text) in ["hello, ", "", "multipart ", "world"].iter().enumerate() {
            let path = dir.path().join(i.to_string());
            std::fs::write(&path, text).unwrap();
            parts.push((path, text.len() as u64));
        }
        let mut joined = Joined::open(&parts).unwrap();
        let mut all = String::new();
        joined.read_to_string(&mut all).unwrap();
        assert_eq!(all, "hello, multipart world");
        assert_eq!(joined.seek(SeekFrom::End(-5)).unwrap(), 17);
        let mut end = String::new();
        joined.read_to_string(&mut end).unwrap();
        assert_eq!(end, "world");
        joined.seek(SeekFrom::Start(5)).unwrap();
        joined.seek(SeekFrom::Current(2)).unwrap();
        let mut middle = [0u8; 9];
        joined.read_exact(&mut middle).unwrap();
        assert_eq!(&middle, b"multipart");
        assert!(joined.seek(SeekFrom::Current(-100)).is_err());
        joined.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(joined.read(&mut middle).unwrap(), 0, "past the end reads nothing");
        // A zip split across parts converts as the whole one.
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("a.txt", zip::write::SimpleFileOptions::default()).unwrap();
        std::io::Write::write_all(&mut zip, &[7u8; 3000]).unwrap();
        let zip = zip.finish().unwrap().into_inner();
        let (a, b) = zip.split_at(zip.len() / 2);
        std::fs::write(dir.path().join("za"), a).unwrap();
        std::fs::write(dir.path().join("zb"), b).unwrap();
        let split = [(dir.path().join("za"), a.len() as u64), (dir.path().join("zb"), b.len() as u64)];
        let from_parts = artifact_zip::zip_to_tar_from(Joined::open(&split).unwrap(), 1 << 20).unwrap();
        assert_eq!(from_parts, artifact_zip::zip_to_tar(&zip, 1 << 20).unwrap());
    }

    #[test]
    fn the_spool_binds_uploads_to_their_key_bounds_the_total_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s3-uploads");
        std::fs::create_dir_all(root.join("left-by-a-previous-run")).unwrap();
        let spool = Spool::open(&root, 100).unwrap();
        assert!(!root.join("left-by-a-previous-run").exists(), "a restart removes old parts");
        let id = spool.create("AKIDJOB1", "p/e/out/pkg.zip").unwrap();
        let me = (id.as_str(), "AKIDJOB1", "p/e/out/pkg.zip");
        let free = u64::MAX;
        let one = spool.put_part(me, 1, b"hello", 12, free).unwrap();
        assert_eq!(std::fs::read(root.join(&id).join("1")).unwrap(), b"hello");
        assert_eq!(one.size, 5);
        // Another job's key, or another object, does not find the upload.
        let code = |r: Result<Part, S3Error>| r.unwrap_err().code;
        assert_eq!(code(spool.put_part((&id, "AKIDJOB2", "p/e/out/pkg.zip"), 2, b"x", 12, free)), "NoSuchUpload");
        assert_eq!(code(spool.put_part((&id, "AKIDJOB1", "p/e/out/other.zip"), 2, b"x", 12, free)), "NoSuchUpload");
        assert_eq!(spool.abort((&id, "AKIDJOB2", "p/e/out/pkg.zip")).unwrap_err().code, "NoSuchUpload");
        // The total of the parts is bounded; a part sent again replaces its size.
        assert_eq!(code(spool.put_part(me, 2, b"12345678", 12, free)), "EntityTooLarge");
        assert!(spool.put_part(me, 1, b"1234", 12, free).is_ok());
        assert!(spool.put_part(me, 2, b"12345678", 12, free).is_ok());
        assert_eq!(code(spool.put_part(me, 3, b"x", 12, 50)), "ServiceUnavailable", "--min-free-space");
        // While completing, no part changes; a failed completion reopens.
        let files = spool.begin_complete(me, &[ListedPart { number: 2, etag: etag(b"12345678"), crc32: None }]).unwrap();
        assert_eq!(files, vec![(root.join(&id).join("2"), 8)]);
        assert_eq!(code(spool.put_part(me, 3, b"x", 12, free)), "NoSuchUpload");
        spool.reopen(&id);
        assert!(spool.put_part(me, 1, b"x", 12, free).is_ok());
        assert_eq!(spool.uploads(), vec![(id.clone(), "AKIDJOB1".to_string())]);
        spool.abort(me).unwrap();
        assert!(!root.join(&id).exists());
        assert_eq!(code(spool.put_part(me, 4, b"x", 12, free)), "NoSuchUpload");
        assert!(std::fs::read_dir(&root).unwrap().next().is_none(), "no temporary file left");
    }

    #[test]
    fn a_key_has_a_bounded_number_of_open_uploads_and_parts_are_bounded_by_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("s3-uploads"), 0).unwrap();
        let ids: Vec<String> = (0..MAX_UPLOADS_PER_KEY).map(|_| spool.create("AKIDJOB1", "out.zip").unwrap()).collect();
        let err = spool.create("AKIDJOB1", "out.zip").unwrap_err();
        assert_eq!((err.code, err.status), ("InvalidRequest", StatusCode::BAD_REQUEST), "{}", err.message);
        assert!(spool.create("AKIDJOB2", "out.zip").is_ok(), "another key has its own uploads");
        // The sweep asks about each key once.
        let keys = spool.uploads_by_key();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["AKIDJOB1", "AKIDJOB2"]);
        assert_eq!((keys["AKIDJOB1"].len(), keys["AKIDJOB2"].len()), (MAX_UPLOADS_PER_KEY, 1));
        spool.abort((&ids[0], "AKIDJOB1", "out.zip")).unwrap();
        let id = spool.create("AKIDJOB1", "out.zip").unwrap();
        // What a part may hold while it is received: the total less the others.
        let me = (id.as_str(), "AKIDJOB1", "out.zip");
        spool.put_part(me, 1, b"1234", 12, u64::MAX).unwrap();
        assert_eq!(spool.room_for_part(me, 2, 12).unwrap(), 8);
        assert_eq!(spool.room_for_part(me, 1, 12).unwrap(), 12, "a part sent again replaces itself");
    }

    #[tokio::test]
    async fn a_part_rechecks_the_free_space_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        // 12 MiB in chunks of 3 MiB.
        let chunks = || (0..4).map(|_| Ok::<_, std::convert::Infallible>(vec![7u8; 3 << 20]));
        let body = || axum::body::Body::from_stream(futures_util::stream::iter(chunks()));
        let asked = std::cell::Cell::new(0);
        let room = |_: u64| {
            asked.set(asked.get() + 1);
            if asked.get() > 1 {
                Err(S3Error::new("ServiceUnavailable", StatusCode::SERVICE_UNAVAILABLE, "disk full"))
            } else {
                Ok(())
            }
        };
        let Err(err) = receive(body(), &path, u64::MAX, room).await else { panic!("the disk was full") };
        assert_eq!(err.code, "ServiceUnavailable");
        assert_eq!(asked.get(), 2, "asked once per 4 MiB written");
        // The limit holds while writing: 12 MiB in a 10 MiB room is refused.
        let Err(err) = receive(body(), &path, 10 << 20, |_| Ok(())).await else { panic!("past the limit") };
        assert_eq!(err.code, "EntityTooLarge");
        assert_eq!(receive(body(), &path, 12 << 20, |_| Ok(())).await.unwrap().len, 12 << 20);
    }
}
