//! AWS Signature Version 4, verified: the `Authorization: AWS4-HMAC-SHA256
//! Credential=..., SignedHeaders=..., Signature=...` header form that the
//! AWS SDKs and the AWS CLI send.
//!
//! Pure: the request's parts, the current time and a key lookup go in, the
//! verified key id (or why not) comes out. No I/O, no clock, no store, so
//! that the CodePipeline endpoint and the S3 subset share it and tests can
//! drive it with fixed dates.
//!
//! What is checked, in order: the header parses; the credential scope ends
//! in `aws4_request`, names the expected service (any region) and the date
//! of `x-amz-date`; the signed headers include `host`, `x-amz-date` and
//! whatever the caller requires (the CodePipeline endpoint requires
//! `x-amz-target`, so a captured request cannot be replayed as another
//! operation); the request time is within [`MAX_CLOCK_SKEW_SECS`] of now;
//! the key exists; a temporary key's session token matches
//! `x-amz-security-token` (which must then be signed); the payload hash is
//! the body's (or `UNSIGNED-PAYLOAD`, for S3 only); and finally the
//! signature, compared in constant time by `ring::hmac::verify`.

use ring::hmac;
use sha2::{Digest, Sha256};

/// How far a request's `x-amz-date` may be from the controller's clock,
/// either way. AWS allows 15 minutes; Sluice allows 5, because the window
/// is also how long a captured request can be replayed, and the SDKs sync
/// to the server's clock on a skew error.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash S3 clients may send instead of the body's.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The payload hash of an unsigned `aws-chunked` S3 body with a trailer.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Longest `Authorization` header read (the SDKs send about 250 bytes).
const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// A request as it arrived, before anything was decoded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, percent-encoded.
    pub path: &'a str,
    /// The query string as sent, without `?` (empty when none).
    pub query: &'a str,
    /// Every header; names in any case, a name may repeat.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// What the verifier must check the request against.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The service of the credential scope (`codepipeline`, `s3`).
    pub service: &'a str,
    /// Headers that must be signed besides `host` and `x-amz-date`.
    pub signed: &'a [&'a str],
    /// Seconds since the epoch.
    pub now: u64,
}

/// A key's secret, as the lookup returns it.
#[derive(Debug, Clone)]
pub struct Key {
    pub secret: String,
    /// Temporary credentials carry a session token that the request must
    /// present (`x-amz-security-token`); long-term keys have none.
    pub session_token: Option<String>,
}

/// A request whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// The region the client signed for: any is accepted.
    pub region: String,
}

/// Why a request is not authenticated; each maps to the AWS error the
/// SDKs know ([`SigError::aws_type`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("request is missing an Authorization header signed with AWS Signature Version 4")]
    Missing,
    /// The Authorization header or a header it depends on is malformed.
    #[error("{0}")]
    Incomplete(String),
    #[error("the access key id {0} is not known to this controller (or was revoked)")]
    UnknownKey(String),
    #[error("the security token included in the request is invalid")]
    BadSessionToken,
    #[error("credential should be scoped to a valid service: '{expected}', not '{got}'")]
    WrongService { expected: String, got: String },
    #[error("signature expired: {date} is more than {MAX_CLOCK_SKEW_SECS} seconds from the controller's time")]
    Expired { date: String },
    #[error("the x-amz-content-sha256 header does not match the body")]
    PayloadMismatch,
    #[error(
        "the request signature we calculated does not match the signature you provided; check your AWS secret access key and signing method"
    )]
    Mismatch,
}

impl SigError {
    /// The error type of AWS's JSON protocols.
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationTokenException",
            Self::Incomplete(_) => "IncompleteSignatureException",
            Self::UnknownKey(_) | Self::BadSessionToken => "UnrecognizedClientException",
            Self::WrongService { .. } | Self::Expired { .. } | Self::PayloadMismatch | Self::Mismatch => {
                "InvalidSignatureException"
            }
        }
    }
}

/// The parts of the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// Hex, as sent.
    pub signature: String,
}

impl Authorization {
    pub fn parse(header: &str) -> Result<Self, SigError> {
        let incomplete = |why: &str| SigError::Incomplete(format!("authorization header is invalid: {why}"));
        if header.len() > MAX_AUTHORIZATION_BYTES {
            return Err(incomplete("too long"));
        }
        let rest = header
            .strip_prefix(ALGORITHM)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| incomplete(&format!("only {ALGORITHM} is supported")))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=').ok_or_else(|| incomplete("expected name=value parts"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                other => return Err(incomplete(&format!("unknown part {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(incomplete(&format!("{name} appears twice")));
            }
        }
        let credential = credential.ok_or_else(|| incomplete("no Credential"))?;
        let signed = signed.ok_or_else(|| incomplete("no SignedHeaders"))?;
        let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, terminal] = scope[..] else {
            return Err(incomplete("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
        };
        if terminal != "aws4_request" || key.is_empty() || region.is_empty() || service.is_empty() {
            return Err(incomplete("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"));
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(incomplete("the Credential date must be YYYYMMDD"));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
        if signed_headers.iter().any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase() || b == b' ')) {
            return Err(incomplete("SignedHeaders must be lowercase names separated by ';'"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(incomplete("Signature must be 64 hex digits"));
        }
        Ok(Self {
            access_key_id: key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// Verifies `request`'s signature; `lookup` finds a key's secret by its id.
pub fn verify(
    request: &Request<'_>,
    expect: &Expect<'_>,
    lookup: impl FnOnce(&str) -> Option<Key>,
) -> Result<Verified, SigError> {
    let body = hex::encode(Sha256::digest(request.body));
    verify_payload(request, expect, lookup, Some(&body))
}

/// [`verify`] before the body is read (S3 parts are streamed to disk):
/// the signature is checked with the payload hash the request claims in
/// `x-amz-content-sha256`, which must be there; the caller checks the bytes
/// against it as they arrive. `request.body` is not read.
pub fn verify_claimed(
    request: &Request<'_>,
    expect: &Expect<'_>,
    lookup: impl FnOnce(&str) -> Option<Key>,
) -> Result<Verified, SigError> {
    verify_payload(request, expect, lookup, None)
}

/// After [`verify_claimed`], once the body is read: the body must be what
/// `x-amz-content-sha256` claimed (unless the claim is one of the S3
/// forms checked otherwise, `UNSIGNED-PAYLOAD` or an aws-chunked body).
pub fn check_payload(request: &Request<'_>, service: &str) -> Result<(), SigError> {
    let body = hex::encode(Sha256::digest(request.body));
    payload_hash(request, service, Some(&body)).map(|_| ())
}

/// What can be checked on the headers alone, before a key is looked up or
/// a body read: the `Authorization` header parses, names the expected
/// service and the date of `x-amz-date`, signs what must be signed, and
/// the time is within [`MAX_CLOCK_SKEW_SECS`]. Endpoints call it first, so
/// that a request which cannot verify costs neither a lookup nor a read.
/// Returns the parsed header and `x-amz-date`.
pub fn check_headers(headers: &[(String, String)], expect: &Expect<'_>) -> Result<(Authorization, String), SigError> {
    let authorization = header(headers, "authorization").ok_or(SigError::Missing)?;
    let auth = Authorization::parse(&authorization)?;
    if auth.service != expect.service {
        return Err(SigError::WrongService { expected: expect.service.into(), got: auth.service.clone() });
    }
    let amz_date =
        header(headers, "x-amz-date").ok_or_else(|| SigError::Incomplete("the x-amz-date header is required".into()))?;
    let when = parse_amz_date(&amz_date)
        .ok_or_else(|| SigError::Incomplete(format!("x-amz-date {amz_date:?} is not YYYYMMDDTHHMMSSZ")))?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Incomplete(format!(
            "date in the credential scope {} does not match x-amz-date {amz_date}",
            auth.date
        )));
    }
    for required in ["host", "x-amz-date"].iter().chain(expect.signed) {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigError::Incomplete(format!("the {required} header must be signed")));
        }
    }
    if when.abs_diff(expect.now) > MAX_CLOCK_SKEW_SECS {
        return Err(SigError::Expired { date: amz_date });
    }
    Ok((auth, amz_date))
}

/// `body`: the hex SHA-256 of the body, `None` when it is not read yet.
fn verify_payload(
    request: &Request<'_>,
    expect: &Expect<'_>,
    lookup: impl FnOnce(&str) -> Option<Key>,
    body: Option<&str>,
) -> Result<Verified, SigError> {
    let (auth, amz_date) = check_headers(request.headers, expect)?;
    let key = lookup(&auth.access_key_id).ok_or_else(|| SigError::UnknownKey(auth.access_key_id.clone()))?;
    check_session_token(request, &auth, &key)?;
    let payload_hash = payload_hash(request, expect.service, body)?;
    let canonical = canonical_request(request, &auth, &payload_hash)?;
    let to_sign = string_to_sign(&amz_date, &auth.scope(), &canonical);
    let provided = hex::decode(&auth.signature).map_err(|_| SigError::Mismatch)?;
    let signing = signing_key(&key.secret, &auth.date, &auth.region, &auth.service);
    hmac::verify(&signing, to_sign.as_bytes(), &provided).map_err(|_| SigError::Mismatch)?;
    Ok(Verified { access_key_id: auth.access_key_id, region: auth.region })
}

/// A temporary key's token must be presented and signed; a long-term key
/// must not come with one (AWS refuses that too).
fn check_session_token(request: &Request<'_>, auth: &Authorization, key: &Key) -> Result<(), SigError> {
    let presented = header(request.headers, "x-amz-security-token");
    match (&key.session_token, presented) {
        (None, None) => Ok(()),
        (Some(expected), Some(presented)) => {
            if !auth.signed_headers.iter().any(|h| h == "x-amz-security-token") {
                return Err(SigError::Incomplete("the x-amz-security-token header must be signed".into()));
            }
            // HMAC both under one throwaway key so the comparison is ring's
            // constant-time one.
            let k = hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>());
            let tag = hmac::sign(&k, expected.as_bytes());
            hmac::verify(&k, presented.as_bytes(), tag.as_ref()).map_err(|_| SigError::BadSessionToken)
        }
        _ => Err(SigError::BadSessionToken),
    }
}

/// The hash the signature covers: the body's, or what `x-amz-content-sha256`
/// says (which must then be the body's, except `UNSIGNED-PAYLOAD` for S3).
fn payload_hash(request: &Request<'_>, service: &str, body: Option<&str>) -> Result<String, SigError> {
    let Some(claimed) = header(request.headers, "x-amz-content-sha256") else {
        return body
            .map(str::to_string)
            .ok_or_else(|| SigError::Incomplete("the x-amz-content-sha256 header is required".into()));
    };
    if claimed == UNSIGNED_PAYLOAD && service == "s3" {
        return Ok(claimed);
    }
    // An unsigned aws-chunked body (what the SDKs send to S3 over TLS):
    // the S3 subset checks the payload by its trailing checksum.
    if claimed == STREAMING_UNSIGNED_TRAILER && service == "s3" {
        return Ok(claimed);
    }
    if claimed.starts_with("STREAMING-") {
        return Err(SigError::Incomplete(format!(
            "x-amz-content-sha256 {claimed} (chunked upload) is not supported; send the payload in one piece"
        )));
    }
    // Without the body (not read yet) the caller checks it against the claim.
    if let Some(body) = body
        && !claimed.eq_ignore_ascii_case(body)
    {
        return Err(SigError::PayloadMismatch);
    }
    Ok(claimed)
}

/// The canonical request of SigV4: method, URI, query, headers, signed
/// header names, payload hash, one per line.
pub fn canonical_request(request: &Request<'_>, auth: &Authorization, payload_hash: &str) -> Result<String, SigError> {
    let uri = if auth.service == "s3" { s3_path(request.path) } else { normalized_path(request.path) };
    let mut lines = vec![request.method.to_ascii_uppercase(), uri, canonical_query(request.query)];
    for name in &auth.signed_headers {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(SigError::Incomplete(format!("signed header {name} is not in the request")));
        }
        lines.push(format!("{name}:{}", values.join(",")));
    }
    lines.push(String::new());
    lines.push(auth.signed_headers.join(";"));
    lines.push(payload_hash.to_string());
    Ok(lines.join("\n"))
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// The hex signature of a string to sign (for tests and for signing clients).
pub fn signature(secret: &str, date: &str, region: &str, service: &str, to_sign: &str) -> String {
    hex::encode(hmac::sign(&signing_key(secret, date, region, service), to_sign.as_bytes()).as_ref())
}

/// Signs a request as a client (the S3 artifact backend, `blobs/s3.rs`)
/// with the same canonical request, string to sign and key as [`verify`]
/// checks: returns the `Authorization` header. `request.headers` must
/// hold `host`, `x-amz-date` and `x-amz-content-sha256`; every header in
/// it is signed.
pub fn sign(
    request: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    payload_hash: &str,
) -> String {
    let amz_date = header(request.headers, "x-amz-date").unwrap_or_default();
    let date = amz_date.get(..8).unwrap_or_default().to_string();
    let mut signed_headers: Vec<String> = request.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    signed_headers.sort();
    signed_headers.dedup();
    let auth = Authorization {
        access_key_id: access_key_id.to_string(),
        date,
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: String::new(),
    };
    // Every signed header is in the request: the canonical request cannot fail.
    let canonical = canonical_request(request, &auth, payload_hash).unwrap_or_default();
    let to_sign = string_to_sign(&amz_date, &auth.scope(), &canonical);
    format!(
        "{ALGORITHM} Credential={access_key_id}/{},SignedHeaders={},Signature={}",
        auth.scope(),
        auth.signed_headers.join(";"),
        signature(secret, &auth.date, region, service, &to_sign)
    )
}

/// Percent-encodes the way SigV4 canonicalizes (`A-Z a-z 0-9 - _ . ~` and
/// the bytes of `keep` stay): for clients building paths and queries.
pub fn uri_encode(text: &str, keep: &str) -> String {
    encode(text, keep)
}

/// The first value of a header, by case-insensitive name.
fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        if s.bytes().all(|c| c.is_ascii_digit()) { s.parse().ok() } else { None }
    };
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(num(0..4)?).ok()?, month, u8::try_from(num(6..8)?).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    u64::try_from(time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp()).ok()
}

/// Non-S3 services: dot segments and empty segments removed, then every
/// byte but the unreserved ones and `/` encoded again (so `%` becomes
/// `%25`), as the SDKs compute it.
fn normalized_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut text = String::from(if path.starts_with('/') { "/" } else { "" });
    text.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        text.push('/');
    }
    encode(&text, "/")
}

/// S3: the path as sent, once encoded (decoded and encoded again so that
/// clients encoding the same bytes differently agree).
fn s3_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    encode_bytes(&decode(path), "/")
}

/// Query parameters decoded, encoded the SigV4 way, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode_bytes(&decode(k), ""), encode_bytes(&decode(v), ""))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn encode(text: &str, keep: &str) -> String {
    encode_bytes(text.as_bytes(), keep)
}

/// Every byte but `A-Z a-z 0-9 - _ . ~` (and those of `keep`) as `%XX`.
fn encode_bytes(bytes: &[u8], keep: &str) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` decoded; anything else (a stray `%`, `+`) kept as it is.
fn decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
