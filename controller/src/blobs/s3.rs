//! The blob store's bytes in S3-compatible object storage
//! (`--artifacts s3://bucket/prefix`): a small S3 client over reqwest,
//! signed with the SigV4 of `aws/sigv4.rs` (the same math the controller
//! verifies its own S3 subset with), and the content-addressed layout.
//!
//! Layout under `prefix/KIND/` (`artifacts`, `plugins`):
//! - `sha256/XX/DIGEST`: a blob, written only once its digest was checked
//!   (a single PUT of bytes hashed first, or a multipart upload completed
//!   only when the hash of every part matches; aborted otherwise).
//! - `uploads/DIGEST`: how far a multipart upload that was cut off got (its
//!   upload id, the parts' ETags and the SHA-256 state after them, see
//!   `midstate.rs`), so the next upload of that digest, through any
//!   controller, goes on from its last whole part.

use super::midstate::Midstate;
use crate::aws::sigv4;
use anyhow::{Context as _, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of one part of a multipart upload (a multiple of 64, see
/// `midstate.rs`); blobs up to this size go in one PUT. At the 4 GiB
/// artifact limit that is 512 parts, well under S3's 10,000.
pub const PART_SIZE: usize = 8 << 20;

/// Keys listed per request (S3's own maximum).
const LIST_PAGE: usize = 1000;

/// Where the bucket is and how to sign for it.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `http(s)://host[:port]`; AWS's regional endpoint when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key` (MinIO,
    /// moto, Ceph usually want it).
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{} (endpoint {:?}, region {})", self.bucket, self.prefix, self.endpoint, self.region)
    }
}

impl S3Config {
    /// `s3://bucket/prefix` into bucket and prefix.
    pub fn parse_url(url: &str) -> Result<(String, String)> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| anyhow!("{url:?} is not an s3://bucket/prefix address"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            bail!("{bucket:?} is not an S3 bucket name (3-63 of a-z 0-9 . -)");
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == ".." || s == ".") || prefix.contains("//") {
            bail!("the prefix {prefix:?} of {url} has an empty, . or .. segment");
        }
        Ok((bucket.to_string(), prefix.to_string()))
    }

    /// The endpoint without a trailing `/` or its scheme's default port:
    /// HTTP clients leave `:443` (`:80`) out of the `Host` they send, and
    /// the signature must cover the same `host` (issue 18, fwdfix).
    fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => {
                let e = e.trim_end_matches('/');
                let default = if e.starts_with("https://") { ":443" } else { ":80" };
                e.strip_suffix(default).unwrap_or(e).to_string()
            }
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }
}

/// An S3 error answer, as the service said it.
#[derive(Debug, thiserror::Error)]
#[error("s3 {method} {what}: {status} {code}: {message}")]
pub struct S3Failure {
    pub method: String,
    pub what: String,
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl S3Failure {
    /// The store failed on its side, and the same request may go through later.
    pub fn is_transient(&self) -> bool {
        matches!(self.status, 500 | 502 | 503 | 504) || self.code == "SlowDown"
    }
}

/// A stored object, as listed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// How far a cut-off multipart upload got (`uploads/DIGEST`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Resume {
    upload_id: String,
    size: u64,
    part_size: u64,
    /// ETags of parts 1..=n.
    parts: Vec<String>,
    /// The hash state after the parts (`Midstate::save`).
    state: String,
}

impl Resume {
    /// The blob's bytes its parts hold: whole parts, the last of which may
    /// be the blob's shorter tail.
    fn held(&self) -> u64 {
        (self.parts.len() as u64 * self.part_size).min(self.size)
    }
}

#[derive(Clone)]
pub struct S3 {
    config: S3Config,
    http: reqwest::Client,
    /// `prefix/kind`, no trailing `/`.
    base: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.config, self.base)
    }
}

/// A request body: none, or bytes in memory (a part is at most [`PART_SIZE`]).
#[derive(Clone)]
enum Body {
    Empty,
    Bytes(bytes::Bytes),
}

/// Tries of one request whose failure the store says is its own.
const ATTEMPTS: usize = 3;

impl S3 {
    /// The blobs of `kind` (`artifacts`, `plugins`) in the configured bucket.
    pub fn new(config: S3Config, kind: &str) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .read_timeout(std::time::Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
        };
        // No system roots (a bare container): a plain-http endpoint still works.
        let http =
            builder().build().or_else(|_| builder().tls_certs_only(Vec::new()).build()).context("building the S3 client")?;
        let base = if config.prefix.is_empty() { kind.to_string() } else { format!("{}/{kind}", config.prefix) };
        Ok(Self { config, http, base })
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.config.bucket, self.base)
    }

    pub fn blob_key(&self, digest: &str) -> String {
        format!("{}/sha256/{}/{digest}", self.base, &digest[..2])
    }

    fn resume_key(&self, digest: &str) -> String {
        format!("{}/uploads/{digest}", self.base)
    }

    /// The URL and `host` header of `key` (empty: the bucket).
    fn url(&self, key: &str, query: &str) -> Result<(String, String, String)> {
        let endpoint = self.config.endpoint();
        let (scheme, host) = endpoint.split_once("://").ok_or_else(|| anyhow!("S3 endpoint {endpoint:?} has no scheme"))?;
        let encoded = sigv4::uri_encode(key, "/");
        let (host, path) = if self.config.path_style {
            (
                host.to_string(),
                if key.is_empty() {
                    format!("/{}", self.config.bucket)
                } else {
                    format!("/{}/{encoded}", self.config.bucket)
                },
            )
        } else {
            (format!("{}.{host}", self.config.bucket), format!("/{encoded}"))
        };
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        Ok((format!("{scheme}://{host}{path}{q}"), host, path))
    }

    /// One request, signed, sent again after a pause when the store
    /// answers that it failed on its side (500, 502, 503, 504, or
    /// `SlowDown`), at most [`ATTEMPTS`] times, as AWS's own clients do.
    /// The object store may say so now and then under load: an upload
    /// failed for it whole, and its action with it.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Body,
    ) -> Result<reqwest::Response> {
        let mut pause = std::time::Duration::from_millis(100);
        for _ in 1..ATTEMPTS {
            match self.send_once(method.clone(), key, query, extra, body.clone()).await {
                Err(e) if e.downcast_ref::<S3Failure>().is_some_and(S3Failure::is_transient) => {
                    tracing::warn!("{e:#}: trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
                other => return other,
            }
        }
        self.send_once(method, key, query, extra, body).await
    }

    /// Sends one signed request; an error answer becomes [`S3Failure`].
    async fn send_once(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Body,
    ) -> Result<reqwest::Response> {
        let query: String = {
            let mut pairs: Vec<String> =
                query.iter().map(|(k, v)| format!("{}={}", sigv4::uri_encode(k, ""), sigv4::uri_encode(v, ""))).collect();
            pairs.sort();
            pairs.join("&")
        };
        let (url, host, path) = self.url(key, &query)?;
        let payload = match &body {
            Body::Empty => hex::encode(Sha256::digest(b"")),
            Body::Bytes(b) => hex::encode(Sha256::digest(b)),
        };
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let mut headers: Vec<(String, String)> =
            vec![("host".into(), host), ("x-amz-date".into(), amz_date), ("x-amz-content-sha256".into(), payload.clone())];
        if let Some(token) = &self.config.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        for (name, value) in extra {
            headers.push((name.to_string(), value.clone()));
        }
        let request = sigv4::Request { method: method.as_str(), path: &path, query: &query, headers: &headers, body: &[] };
        let authorization = sigv4::sign(
            &request,
            &self.config.access_key_id,
            &self.config.secret_access_key,
            &self.config.region,
            "s3",
            &payload,
        );
        let mut builder = self.http.request(method.clone(), &url).header("authorization", authorization);
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = match body {
            Body::Empty => builder,
            Body::Bytes(b) => builder.body(b),
        };
        let what = format!("s3://{}/{key}", self.config.bucket);
        let response =
            builder.send().await.with_context(|| format!("s3 {method} {what}: the object store is unreachable"))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        // A HEAD answer has no body to say why: the status does.
        let (code, message) = match (element(&text, "Code"), status) {
            (Some(code), _) => (code, element(&text, "Message").unwrap_or_default()),
            (None, 403) => ("Forbidden".into(), "wrong credentials, or no permission on the bucket".into()),
            (None, 404) => ("NotFound".into(), "no such bucket or object".into()),
            (None, 301 | 307) => ("Redirect".into(), "the bucket is in another region (--s3-region)".into()),
            (None, _) => (format!("HTTP {status}"), String::new()),
        };
        Err(S3Failure { method: method.to_string(), what, status, code, message }.into())
    }

    /// Whether the bucket answers to these credentials: what start-up and
    /// `--check-config` ask, so a wrong key or bucket is said at once.
    /// HeadBucket needs the permission to list it, which collection needs.
    pub async fn check(&self) -> Result<()> {
        self.send(reqwest::Method::HEAD, "", &[], &[], Body::Empty)
            .await
            .with_context(|| format!("the artifact store {} cannot be reached", self.describe()))?;
        Ok(())
    }

    /// The size and last-modified time of a blob, if it is stored.
    pub async fn head(&self, digest: &str) -> Result<Option<(u64, SystemTime)>> {
        match self.send(reqwest::Method::HEAD, &self.blob_key(digest), &[], &[], Body::Empty).await {
            Ok(r) => {
                // The header itself: a HEAD answer has no body, and reqwest
                // gives its (empty) length.
                let size = r
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let modified = r
                    .headers()
                    .get("last-modified")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok())
                    .map(SystemTime::from)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                Ok(Some((size, modified)))
            }
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks a stored blob as just used (a copy onto itself renews its
    /// last-modified time, which garbage collection judges by); false when
    /// it is not stored.
    pub async fn touch(&self, digest: &str) -> Result<bool> {
        if self.head(digest).await?.is_none() {
            return Ok(false);
        }
        let key = self.blob_key(digest);
        let source = format!("/{}/{}", self.config.bucket, sigv4::uri_encode(&key, "/"));
        let headers = [
            ("x-amz-copy-source", source),
            ("x-amz-metadata-directive", "REPLACE".to_string()),
            (
                "x-amz-meta-used",
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis().to_string(),
            ),
        ];
        match self.send(reqwest::Method::PUT, &key, &[], &headers, Body::Empty).await {
            Ok(_) => Ok(true),
            // Collected between the two requests.
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Stores bytes held in memory, hashed before they are sent.
    pub async fn put_bytes(&self, bytes: bytes::Bytes) -> Result<String> {
        let digest = hex::encode(Sha256::digest(&bytes));
        if self.head(&digest).await?.is_none() {
            self.send(reqwest::Method::PUT, &self.blob_key(&digest), &[], &[], Body::Bytes(bytes)).await?;
        }
        Ok(digest)
    }

    async fn load_resume(&self, digest: &str, size: u64) -> Result<Option<Resume>> {
        let text = match self.send(reqwest::Method::GET, &self.resume_key(digest), &[], &[], Body::Empty).await {
            Ok(r) => r.bytes().await?,
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(resume) = serde_json::from_slice::<Resume>(&text) else { return Ok(None) };
        if resume.size != size || resume.part_size != PART_SIZE as u64 || Midstate::load(&resume.state).is_none() {
            return Ok(None);
        }
        Ok(Some(resume))
    }

    async fn save_resume(&self, digest: &str, resume: &Resume) -> Result<()> {
        let body = bytes::Bytes::from(serde_json::to_vec(resume)?);
        self.send(reqwest::Method::PUT, &self.resume_key(digest), &[], &[], Body::Bytes(body)).await?;
        Ok(())
    }

    /// Drops a cut-off upload: its parts and its record.
    async fn forget_resume(&self, digest: &str, upload_id: &str) {
        let key = self.blob_key(digest);
        if let Err(e) = self.send(reqwest::Method::DELETE, &key, &[("uploadId", upload_id)], &[], Body::Empty).await {
            tracing::debug!(digest, "aborting a multipart upload: {e:#}");
        }
        let _ = self.send(reqwest::Method::DELETE, &self.resume_key(digest), &[], &[], Body::Empty).await;
    }

    /// How many bytes of `digest` (of `size`) the parts of a cut-off
    /// multipart upload hold, or 0. They may hold every byte (cut off after
    /// the last part, before its check and completion); a resume from any
    /// offset up to there is skipped over them by `put_stream`.
    pub async fn partial_bytes(&self, digest: &str, size: u64) -> Result<u64> {
        Ok(self.load_resume(digest, size).await?.map_or(0, |resume| resume.held()))
    }

    /// Whether a cut-off upload of `digest` left parts.
    pub async fn has_partial(&self, digest: &str) -> Result<bool> {
        match self.send(reqwest::Method::HEAD, &self.resume_key(digest), &[], &[], Body::Empty).await {
            Ok(_) => Ok(true),
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads up to one part from `reader`; fewer bytes only at its end.
    async fn read_part(reader: &mut (impl AsyncRead + Unpin), want: usize) -> Result<Vec<u8>> {
        let mut part = Vec::with_capacity(want);
        while part.len() < want {
            let n = (&mut *reader)
                .take((want - part.len()) as u64)
                .read_to_end(&mut part)
                .await
                .context("receiving the artifact")?;
            if n == 0 {
                break;
            }
        }
        Ok(part)
    }

    /// Streams `size` bytes from `reader` (from byte `offset` on) into the
    /// blob `digest`. One part is in memory at a time. The blob appears only
    /// once the hash of every byte matches `digest`: a blob of one part in
    /// one PUT after hashing, a larger one as a multipart upload completed
    /// only then, its progress recorded after each part so a cut-off upload
    /// resumes from its last whole part.
    pub async fn put_stream(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
        reader: &mut (impl AsyncRead + Unpin),
    ) -> Result<()> {
        let resume = self.load_resume(digest, size).await?;
        let have = resume.as_ref().map_or(0, Resume::held);
        if offset > have {
            bail!("cannot resume at byte {offset}: {have} bytes of {digest} are here; ask for the offset again");
        }
        // Bytes the sender sends again that whole parts here already hold.
        let mut skip = have - offset;
        let mut discard = vec![0u8; 64 * 1024];
        while skip > 0 {
            let n = reader.read(&mut discard[..skip.min(64 * 1024) as usize]).await.context("receiving the artifact")?;
            if n == 0 {
                bail!("artifact ended after {} of {size} bytes", have - skip);
            }
            skip -= n as u64;
        }
        if resume.is_none() && size <= PART_SIZE as u64 {
            return self.put_single(digest, size, reader).await;
        }
        let mut resume = match resume {
            Some(r) => r,
            None => {
                let response =
                    self.send(reqwest::Method::POST, &self.blob_key(digest), &[("uploads", "")], &[], Body::Empty).await?;
                let text = response.text().await?;
                let upload_id = element(&text, "UploadId").ok_or_else(|| anyhow!("s3 gave no UploadId: {text}"))?;
                let state = Midstate::default().save().expect("empty state");
                Resume { upload_id, size, part_size: PART_SIZE as u64, parts: Vec::new(), state }
            }
        };
        let mut hash = Midstate::load(&resume.state).expect("checked when loaded");
        while hash.hashed() < size {
            let want = (size - hash.hashed()).min(PART_SIZE as u64) as usize;
            let part = Self::read_part(reader, want).await?;
            if part.len() < want {
                // Cut off (or short): the whole parts stay for a resume.
                bail!("artifact ended after {} of {size} bytes", hash.hashed() + part.len() as u64);
            }
            hash.update(&part);
            let number = (resume.parts.len() + 1).to_string();
            let response = self
                .send(
                    reqwest::Method::PUT,
                    &self.blob_key(digest),
                    &[("partNumber", &number), ("uploadId", &resume.upload_id)],
                    &[],
                    Body::Bytes(part.into()),
                )
                .await;
            let response = match response {
                // The upload was aborted under its record (a collection, an
                // operator): the record goes too, and the next upload starts over.
                Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.code == "NoSuchUpload") => {
                    let _ = self.send(reqwest::Method::DELETE, &self.resume_key(digest), &[], &[], Body::Empty).await;
                    return Err(e.context("the upload being resumed is gone; send it again from the start"));
                }
                other => other?,
            };
            let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            resume.parts.push(etag);
            if let Some(state) = hash.save() {
                resume.state = state;
                self.save_resume(digest, &resume).await?;
            }
        }
        let mut more = [0u8; 1];
        if reader.read(&mut more).await.context("receiving the artifact")? > 0 {
            self.forget_resume(digest, &resume.upload_id).await;
            bail!("artifact is longer than the announced {size} bytes");
        }
        let got = hash.finish();
        if got != digest {
            self.forget_resume(digest, &resume.upload_id).await;
            bail!("artifact digest mismatch: announced {digest}, received {got}");
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, etag) in resume.parts.iter().enumerate() {
            xml.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", i + 1, escape(etag)));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let response = self
            .send(
                reqwest::Method::POST,
                &self.blob_key(digest),
                &[("uploadId", &resume.upload_id)],
                &[],
                Body::Bytes(xml.into_bytes().into()),
            )
            .await?;
        // CompleteMultipartUpload may fail inside a 200 answer.
        let text = response.text().await.unwrap_or_default();
        if text.contains("<Error>") {
            bail!("s3 completing the upload of {digest}: {}", element(&text, "Message").unwrap_or(text));
        }
        let _ = self.send(reqwest::Method::DELETE, &self.resume_key(digest), &[], &[], Body::Empty).await;
        Ok(())
    }

    /// A blob of at most one part: hashed in memory, then one PUT.
    async fn put_single(&self, digest: &str, size: u64, reader: &mut (impl AsyncRead + Unpin)) -> Result<()> {
        let bytes = Self::read_part(reader, size as usize + 1).await?;
        if bytes.len() as u64 > size {
            bail!("artifact is longer than the announced {size} bytes");
        }
        if (bytes.len() as u64) < size {
            bail!("artifact ended after {} of {size} bytes", bytes.len());
        }
        let got = hex::encode(Sha256::digest(&bytes));
        if got != digest {
            bail!("artifact digest mismatch: announced {digest}, received {got}");
        }
        self.send(reqwest::Method::PUT, &self.blob_key(digest), &[], &[], Body::Bytes(bytes.into())).await?;
        Ok(())
    }

    /// The blob from byte `offset` on, streamed, with the whole blob's size.
    /// Read from the start, the bytes are checked against the digest as
    /// they go: a blob changed in the bucket ends in an error, not in bytes
    /// that pass for it.
    pub async fn open(&self, digest: &str, offset: u64) -> Result<(Box<dyn AsyncRead + Send + Unpin>, u64)> {
        let range = [("range", format!("bytes={offset}-"))];
        let headers: &[(&str, String)] = if offset > 0 { &range } else { &[] };
        let response = match self.send(reqwest::Method::GET, &self.blob_key(digest), &[], headers, Body::Empty).await {
            Ok(r) => r,
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 404) => bail!("no blob {digest}"),
            // A download resumed at its very end: nothing left to send.
            Err(e) if e.downcast_ref::<S3Failure>().is_some_and(|f| f.status == 416) => {
                return match self.head(digest).await? {
                    Some((size, _)) if size == offset => Ok((Box::new(tokio::io::empty()), size)),
                    Some((size, _)) => bail!("cannot resume at byte {offset}: blob {digest} has {size} bytes"),
                    None => bail!("no blob {digest}"),
                };
            }
            Err(e) => return Err(e),
        };
        let size = match response.headers().get("content-range").and_then(|v| v.to_str().ok()) {
            Some(range) => range.rsplit('/').next().and_then(|t| t.parse().ok()).unwrap_or(0),
            None => response.content_length().unwrap_or(0),
        };
        use futures_util::TryStreamExt as _;
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        if offset > 0 {
            return Ok((Box::new(reader), size));
        }
        Ok((Box::new(Verifying { inner: reader, hash: Sha256::new(), digest: digest.to_string(), done: false }), size))
    }

    /// Every object under `under` (relative to the kind's base), page by page.
    pub async fn list(&self, under: &str) -> Result<Vec<Listed>> {
        let prefix = format!("{}/{under}", self.base);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let page = LIST_PAGE.to_string();
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix.as_str()), ("max-keys", page.as_str())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let text = self.send(reqwest::Method::GET, "", &query, &[], Body::Empty).await?.text().await?;
            for item in elements(&text, "Contents") {
                let (Some(key), Some(size), Some(modified)) =
                    (element(item, "Key"), element(item, "Size"), element(item, "LastModified"))
                else {
                    continue;
                };
                let modified = time::OffsetDateTime::parse(&modified, &time::format_description::well_known::Rfc3339)
                    .map(SystemTime::from)
                    .unwrap_or(SystemTime::now());
                out.push(Listed { key, size: size.parse().unwrap_or(0), modified });
            }
            token = element(&text, "NextContinuationToken");
            if element(&text, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Writes `bytes` under `key` as they are, unchecked: what anyone with
    /// write access to the bucket can do (the tests change a blob this way
    /// to see the read refuse it).
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.send(reqwest::Method::PUT, key, &[], &[], Body::Bytes(bytes.into())).await.map(|_| ())
    }

    pub async fn delete_key(&self, key: &str) -> Result<()> {
        self.send(reqwest::Method::DELETE, key, &[], &[], Body::Empty).await.map(|_| ())
    }

    /// Removes blobs `keep` does not name that were last used before
    /// `before`, and cut-off uploads recorded before it (their parts too).
    pub async fn collect_garbage(
        &self,
        keep: &std::collections::HashSet<String>,
        before: SystemTime,
    ) -> Result<(usize, u64)> {
        let (mut count, mut bytes) = (0, 0);
        for object in self.list("sha256/").await? {
            let digest = object.key.rsplit('/').next().unwrap_or_default();
            if !sluice_runtime::is_digest(digest) || keep.contains(digest) || object.modified >= before {
                continue;
            }
            // Judged again just before it goes: an upload that found it
            // stored marked it used since the listing (`touch`).
            match self.head(digest).await? {
                Some((_, modified)) if modified < before => {}
                _ => continue,
            }
            self.delete_key(&object.key).await?;
            count += 1;
            bytes += object.size;
        }
        for object in self.list("uploads/").await? {
            let digest = object.key.rsplit('/').next().unwrap_or_default();
            if object.modified >= before || !sluice_runtime::is_digest(digest) {
                continue;
            }
            let text = match self.send(reqwest::Method::GET, &object.key, &[], &[], Body::Empty).await {
                Ok(r) => r.bytes().await?,
                Err(_) => continue,
            };
            match serde_json::from_slice::<Resume>(&text) {
                Ok(resume) => self.forget_resume(digest, &resume.upload_id).await,
                Err(_) => self.delete_key(&object.key).await?,
            }
        }
        self.abort_stray_uploads(before).await?;
        Ok((count, bytes))
    }

    /// Multipart uploads under the blobs that no record names (a
    /// controller killed between creating one and its first part).
    async fn abort_stray_uploads(&self, before: SystemTime) -> Result<()> {
        let prefix = format!("{}/sha256/", self.base);
        let text = self
            .send(reqwest::Method::GET, "", &[("uploads", ""), ("prefix", &prefix)], &[], Body::Empty)
            .await?
            .text()
            .await?;
        for upload in elements(&text, "Upload") {
            let (Some(key), Some(id), Some(initiated)) =
                (element(upload, "Key"), element(upload, "UploadId"), element(upload, "Initiated"))
            else {
                continue;
            };
            let initiated = time::OffsetDateTime::parse(&initiated, &time::format_description::well_known::Rfc3339)
                .map(SystemTime::from)
                .unwrap_or(SystemTime::now());
            let digest = key.rsplit('/').next().unwrap_or_default().to_string();
            if initiated < before && !self.has_partial(&digest).await? {
                let _ = self.send(reqwest::Method::DELETE, &key, &[("uploadId", &id)], &[], Body::Empty).await;
            }
        }
        Ok(())
    }
}

/// Hashes what it reads; at the end, an error when the bytes were not the digest's.
struct Verifying<R> {
    inner: R,
    hash: Sha256,
    digest: String,
    done: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for Verifying<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    this.hash.update(new);
                } else if !this.done {
                    this.done = true;
                    let got = hex::encode(std::mem::take(&mut this.hash).finalize());
                    if got != this.digest {
                        tracing::error!(digest = %this.digest, got, "a blob in the object store does not match its digest");
                        return std::task::Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "blob {} in the object store does not match its digest (its bytes hash to {got})",
                                this.digest
                            ),
                        )));
                    }
                }
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The text of the first `<tag>` element, unescaped.
fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|t| unescape(t))
}

/// The inner text of each `<tag>...</tag>` (not nested in itself).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_refused() {
        assert_eq!(S3Config::parse_url("s3://my-bucket/ci/sluice/").unwrap(), ("my-bucket".into(), "ci/sluice".into()));
        assert_eq!(S3Config::parse_url("s3://my-bucket").unwrap(), ("my-bucket".into(), String::new()));
        for bad in ["http://b/p", "s3://", "s3://UP/x", "s3://b", "s3://bucket/a/../b", "s3://bucket/a//b"] {
            assert!(S3Config::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_endpoint_with_its_default_port_is_signed_as_clients_send_its_host() {
        let config = |endpoint: &str| S3Config {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            session_token: None,
        };
        assert_eq!(config("https://s3.example.com:443/").endpoint(), "https://s3.example.com");
        assert_eq!(config("http://[::1]:80").endpoint(), "http://[::1]");
        assert_eq!(config("https://s3.example.com:9000").endpoint(), "https://s3.example.com:9000");
        assert_eq!(config("http://minio:443").endpoint(), "http://minio:443");
        assert_eq!(config("https://h:4430").endpoint(), "https://h:4430");
    }

    /// A tiny HTTP server answering `statuses` in turn, one per request;
    /// returns its address and how many requests it took.
    async fn answering(statuses: Vec<u16>) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            for status in statuses {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The request's head and its body (a few bytes, sent at once).
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (addr, count)
    }

    fn store_at(addr: std::net::SocketAddr) -> S3 {
        let config = S3Config {
            bucket: "b".into(),
            prefix: String::new(),
            endpoint: Some(format!("http://{addr}")),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            session_token: None,
        };
        S3::new(config, "artifacts").unwrap()
    }

    #[tokio::test]
    async fn a_failure_of_the_store_is_tried_again_and_a_refusal_is_not() {
        let (addr, count) = answering(vec![500, 503, 200]).await;
        let s3 = store_at(addr);
        s3.send(reqwest::Method::PUT, "k", &[], &[], Body::Bytes(bytes::Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3, "two failures, then the answer");

        // Three failures in a row: the last one is the error.
        let (addr, count) = answering(vec![500, 502, 504, 200]).await;
        let err = store_at(addr).send(reqwest::Method::GET, "k", &[], &[], Body::Empty).await.unwrap_err();
        assert_eq!(err.downcast_ref::<S3Failure>().map(|f| f.status), Some(504), "{err:#}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), ATTEMPTS);

        // A refusal (wrong key, no such object) is the answer at once.
        let (addr, count) = answering(vec![403, 200]).await;
        let err = store_at(addr).send(reqwest::Method::GET, "k", &[], &[], Body::Empty).await.unwrap_err();
        assert_eq!(err.downcast_ref::<S3Failure>().map(|f| f.status), Some(403), "{err:#}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn xml_elements_are_read() {
        let xml = "<R><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated></R>";
        assert_eq!(elements(xml, "Contents").len(), 2);
        assert_eq!(element(xml, "Key").unwrap(), "a&b");
        assert_eq!(element(xml, "Missing"), None);
    }
}
