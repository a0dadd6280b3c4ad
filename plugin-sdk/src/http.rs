//! Outgoing HTTP: a small blocking client over `wasi:http`.
//!
//! ```no_run
//! use std::time::Duration;
//! use sluice_plugin_sdk::{Error, http, secrets};
//!
//! # fn f() -> Result<(), Error> {
//! #[derive(serde::Deserialize)]
//! struct Deployment { id: u64 }
//!
//! let token = secrets::get("API_TOKEN")?;
//! let response = http::Request::post("https://api.example.com/v1/deployments")
//!     .bearer_auth(&token)
//!     .json(&serde_json::json!({"ref": "main"}))?
//!     .timeout(Duration::from_secs(30))
//!     .send()?          // Err: the request could not be made, or no response came
//!     .error_for_status()?;  // Err: the server answered outside 2xx
//! let deployment: Deployment = response.json()?;
//! # Ok(()) }
//! ```
//!
//! A request works only if the plugin declares its destination in the `http`
//! capability (`ActionInfo::http(["api.example.com:443"])`, or `["*"]` when
//! the URL is configuration), the pipeline action grants it and the agent
//! permits it. The host checks every request and refuses the others; its
//! reason reaches the plugin unchanged as the [`Error`] of
//! [`Request::send`], as does a refusal of an address the destination
//! resolves to (loopback and private addresses need a grant that names an
//! IP or a CIDR range).
//!
//! `send` returns `Ok` for every status the server answers with: a 404 or a
//! 503 is a [`Response`]; [`Response::error_for_status`] turns the statuses
//! outside 2xx into errors. Errors of the transport (DNS, connection, TLS,
//! timeouts) are retryable ([`Error::is_retryable`]); a refusal by the host
//! or a bad request is not. Messages name the destination as `host:port`
//! and never contain the URL's path or query, which may carry credentials.
//! Redirects are not followed: a 3xx is a response like any other.
//!
//! Bodies are held in memory whole; a response body larger than
//! [`DEFAULT_MAX_BODY`] (16 MiB) fails unless [`Request::max_body`] raises
//! the bound. The whole exchange must finish within [`DEFAULT_TIMEOUT`]
//! (60 s) unless [`Request::timeout`] says otherwise.
//!
//! Natively (in a plugin's unit tests) there is no host: `http://` URLs are
//! fetched directly over TCP (HTTP/1.1, one connection per request, no grant
//! checks), so that a plugin can be tested against a local server such as
//! [`testing::Server`]; `https://` fails with an error saying that it works
//! only inside a Sluice host.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasi_http;
// The mapping of `wasi:http` error codes is plain code: compiled natively
// too, for its tests.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod wasi_errors;

/// The largest response body read unless [`Request::max_body`] says
/// otherwise. Bodies are held in memory, and a plugin's memory is bounded
/// (256 MiB by default): a bound well below that keeps a large download an
/// error that names the limit instead of a trap.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// How long one exchange (connecting, sending, the whole response) may take
/// unless [`Request::timeout`] says otherwise: longer than any API answer
/// worth waiting for, shorter than an action's deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many characters of a body [`Response::error_for_status`] and
/// [`Response::snippet`] quote by default: enough for an API's error message,
/// not enough to flood a log.
pub const SNIPPET_CHARS: usize = 200;

/// Headers the client sets itself; a request that sets them is refused, so
/// that what is sent is never two contradicting values.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
];

/// Headers whose values [`Request`]'s `Debug` output hides.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// The `User-Agent` sent unless the request sets one: some APIs refuse
/// requests without it.
const USER_AGENT: &str = concat!("sluice-plugin-sdk/", env!("CARGO_PKG_VERSION"));

/// An HTTP request, built with chained calls and sent with [`Request::send`].
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    max_body: usize,
}

impl Request {
    /// A request with `method` (`GET`, `POST`, or any other token; HTTP
    /// methods are case-sensitive) to `url` (`http://` or `https://`).
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `HEAD` request.
    pub fn head(url: impl Into<String>) -> Self {
        Self::new("HEAD", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header; a name given twice is sent twice. `Host`,
    /// `Content-Length`, `Transfer-Encoding` and `Connection` are the
    /// client's: setting them fails in [`Request::send`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds headers.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    /// Sets the body. Text or bytes: `.body("text")`, `.body(vec![1, 2])`.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, and `Content-Type:
    /// application/json` unless a content type is set already.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        self.body = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("encoding the request body as JSON: {e}")))?;
        if self.header_value("content-type").is_none() {
            self.headers
                .push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        Ok(self)
    }

    /// Sets how long the whole exchange may take, from connecting to the
    /// last byte of the response ([`DEFAULT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest response body read, in bytes ([`DEFAULT_MAX_BODY`]
    /// by default); a larger body fails the request.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The method.
    pub fn method_name(&self) -> &str {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends the request and reads the whole response.
    ///
    /// `Err` means no response: the request was invalid, the host refused it
    /// (its message unchanged), or the transport failed (retryable). Every
    /// status the server answers with is `Ok`.
    pub fn send(&self) -> Result<Response, Error> {
        let prepared = self.prepare()?;
        #[cfg(target_arch = "wasm32")]
        let response = wasi_http::send(&prepared);
        #[cfg(not(target_arch = "wasm32"))]
        let response = native::send(&prepared);
        response
    }

    /// Checks everything that can be checked without the network.
    fn prepare(&self) -> Result<Prepared<'_>, Error> {
        if !is_token(&self.method) {
            return Err(Error::new(format!("invalid HTTP method {:?}", self.method)));
        }
        let target = Target::parse(&self.url)?;
        let mut headers = Vec::with_capacity(self.headers.len() + 2);
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(Error::new(format!("invalid header name {name:?}")));
            }
            if MANAGED_HEADERS.iter().any(|m| name.eq_ignore_ascii_case(m)) {
                return Err(Error::new(format!(
                    "header \"{name}\" is set by the HTTP client, not by the plugin"
                )));
            }
            // The value is not quoted: it may be a credential.
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(Error::new(format!(
                    "header \"{name}\": the value contains a line break or a control character"
                )));
            }
            headers.push((name.as_str(), value.trim().to_owned()));
        }
        if self.header_value("user-agent").is_none() {
            headers.push(("User-Agent", USER_AGENT.to_owned()));
        }
        // Sent for every body, and for an empty one where a body is
        // expected: a length lets the host send the body without chunked
        // coding, which some servers refuse.
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            headers.push(("Content-Length", self.body.len().to_string()));
        }
        Ok(Prepared {
            method: &self.method,
            target,
            headers,
            body: &self.body,
            // Never past the action's deadline: the plugin reports the
            // timeout itself instead of being stopped.
            timeout: self.timeout.min(crate::deadline::remaining()),
            max_body: self.max_body,
        })
    }

    fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Shows the request with the values of credential headers hidden.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let hidden = SENSITIVE_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.as_str(), if hidden { "<hidden>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// A request checked and ready for a transport. (`Debug` is for tests.)
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: Target,
    /// Every header to send but `Host`, which comes from the target.
    pub(crate) headers: Vec<(&'a str, String)>,
    pub(crate) body: &'a [u8],
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

impl Prepared<'_> {
    /// The error for a response body past [`Request::max_body`].
    pub(crate) fn body_too_large(&self) -> Error {
        Error::new(format!(
            "the response body from {} is larger than {} bytes (raise the limit with max_body)",
            self.target.host_port(),
            self.max_body
        ))
    }

    /// The error for an exchange that took longer than its timeout.
    pub(crate) fn timed_out(&self) -> Error {
        Error::retryable(format!(
            "no complete response from {} within {}",
            self.target.host_port(),
            Seconds(self.timeout)
        ))
    }
}

/// A duration in seconds for messages: `30 s`, `1.5 s`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs_f64();
        if secs.fract() == 0.0 {
            write!(f, "{secs:.0} s")
        } else {
            write!(f, "{secs:.1} s")
        }
    }
}

/// The scheme of a URL; the SDK speaks these two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// Where a request goes, split from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: Scheme,
    /// The host as written, IPv6 addresses with their brackets.
    pub(crate) host: String,
    /// The port, the scheme's default when the URL has none.
    pub(crate) port: u16,
    /// The authority as written (`host` or `host:port`), for `Host`.
    pub(crate) authority: String,
    /// The path and query, at least `/`; the fragment is dropped.
    pub(crate) path_and_query: String,
}

impl Target {
    /// Splits an absolute `http://` or `https://` URL. Errors do not quote
    /// the URL, which may carry credentials.
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::new(format!("invalid URL: {why}"));
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it contains whitespace or a control character"));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("expected http://HOST/PATH or https://HOST/PATH"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme {other:?}, expected http or https"
                )));
            }
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let path_and_query = match rest.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{rest}"),
            Some(_) => rest.to_owned(),
        };
        if authority.contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported; send an Authorization header",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((address, after)) = v6.split_once(']') else {
                return Err(invalid("an IPv6 address without its closing \"]\""));
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return Err(invalid("unexpected text after the IPv6 address")),
                },
            };
            (format!("[{address}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("no host"));
        }
        let port = match port {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(invalid(&format!("invalid port {port:?}"))),
            },
        };
        Ok(Self {
            scheme,
            host,
            port,
            authority: authority.to_owned(),
            path_and_query,
        })
    }

    /// `host:port`, the way grants and messages name a destination.
    pub(crate) fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A response: status, headers and the whole body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (`200`).
    pub status: u16,
    /// The headers in the order received; names as the server wrote them
    /// (or lowercase, as the host passes them on).
    pub headers: Vec<(String, String)>,
    /// The body, decoded from the transfer coding (chunked) but not from a
    /// content coding (gzip): the client does not ask for one.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text; an error if it is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body).map_err(|e| {
            Error::new(format!(
                "the response body (status {}) is not UTF-8 text: {e}",
                self.status
            ))
        })
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(format!(
                "the response body (status {}) is not the JSON expected: {e}; body: {}",
                self.status,
                self.snippet(SNIPPET_CHARS)
            ))
        })
    }

    /// The start of the body as one line of text for messages: at most
    /// `max_chars` characters, line breaks and control characters
    /// escaped, `…` where it was cut, `(empty)` for no body.
    pub fn snippet(&self, max_chars: usize) -> String {
        snippet(&self.body, max_chars)
    }

    /// `Ok(self)` for a 2xx status; otherwise an error with the status and
    /// the start of the body: `HTTP 404 Not Found: {"message":"no such
    /// repository"}`. Retryable for 408, 429 and 5xx, where the same
    /// request may succeed later.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let message = format!(
            "HTTP {}: {}",
            status_line(self.status),
            self.snippet(SNIPPET_CHARS)
        );
        Err(Error::new(message).with_retryable(status_is_retryable(self.status)))
    }
}

/// Whether the same request may succeed later after this status: a timeout,
/// a rate limit, or a server-side failure.
pub fn status_is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// `404 Not Found`, or the bare number for statuses without a common name.
pub fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return status.to_string(),
    };
    format!("{status} {reason}")
}

/// See [`Response::snippet`].
pub(crate) fn snippet(body: &[u8], max_chars: usize) -> String {
    if body.is_empty() {
        return "(empty)".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2), as methods and
/// header names must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits lines of `Name: value` headers (the form of a `list`
/// configuration property, blank lines skipped) into pairs. Errors give the
/// line number but never the line, which may carry a credential.
///
/// ```
/// let headers = sluice_plugin_sdk::http::parse_header_lines("Accept: application/json\n\nX-Trace:  1 ").unwrap();
/// assert_eq!(headers, [("Accept".to_owned(), "application/json".to_owned()), ("X-Trace".to_owned(), "1".to_owned())]);
/// ```
pub fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Error::new(format!(
                "header line {}: expected \"Name: value\"",
                n + 1
            )));
        };
        let name = name.trim();
        if !is_token(name) {
            return Err(Error::new(format!(
                "header line {}: invalid header name",
                n + 1
            )));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let t = Target::parse("https://api.example.com/v1/x?a=b#frag").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 443));
        assert_eq!(t.authority, "api.example.com");
        assert_eq!(t.path_and_query, "/v1/x?a=b");
        assert_eq!(t.host_port(), "api.example.com:443");

        let t = Target::parse("HTTP://127.0.0.1:8080?q=1").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!((t.authority.as_str(), t.port), ("127.0.0.1:8080", 8080));
        assert_eq!(t.path_and_query, "/?q=1");

        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 9000));
        assert_eq!(t.path_and_query, "/");
        assert_eq!(t.host_port(), "[::1]:9000");
        assert_eq!(Target::parse("http://[::1]/").unwrap().port, 80);
    }

    #[test]
    fn bad_urls_fail_without_quoting_the_url() {
        for (url, why) in [
            (
                "ftp://x/",
                "invalid URL: unsupported scheme \"ftp\", expected http or https",
            ),
            (
                "example.com/x",
                "invalid URL: expected http://HOST/PATH or https://HOST/PATH",
            ),
            (
                "https://user:secret@example.com/",
                "invalid URL: credentials in the URL are not supported; send an Authorization header",
            ),
            ("https:///path", "invalid URL: no host"),
            (
                "https://example.com:99999/",
                "invalid URL: invalid port \"99999\"",
            ),
            ("https://example.com:0/", "invalid URL: invalid port \"0\""),
            (
                "https://example.com/a b",
                "invalid URL: it contains whitespace or a control character",
            ),
            (
                "https://[::1/",
                "invalid URL: an IPv6 address without its closing \"]\"",
            ),
            (
                "https://[::1]x/",
                "invalid URL: unexpected text after the IPv6 address",
            ),
        ] {
            assert_eq!(Target::parse(url).unwrap_err().message(), why, "{url}");
        }
    }

    #[test]
    fn prepare_checks_headers_and_adds_length_and_user_agent() {
        let request = Request::post("http://h/").header("X-A", " 1 ").body("abc");
        let prepared = request.prepare().unwrap();
        assert_eq!(
            prepared.headers,
            [
                ("X-A", "1".to_owned()),
                ("User-Agent", USER_AGENT.to_owned()),
                ("Content-Length", "3".to_owned())
            ]
        );
        let get = Request::get("http://h/").header("user-agent", "me");
        assert_eq!(
            get.prepare().unwrap().headers,
            [("user-agent", "me".to_owned())]
        );

        let err = Request::get("http://h/")
            .header("Content-Length", "3")
            .prepare()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "header \"Content-Length\" is set by the HTTP client, not by the plugin"
        );
        let err = Request::get("http://h/")
            .header("Bad Name", "x")
            .prepare()
            .unwrap_err();
        assert_eq!(err.message(), "invalid header name \"Bad Name\"");
        let err = Request::get("http://h/")
            .header("X-Token", "a\r\nEvil: 1")
            .prepare()
            .unwrap_err();
        assert_eq!(
            err.message(),
            "header \"X-Token\": the value contains a line break or a control character"
        );
        let err = Request::new("GE T", "http://h/").prepare().unwrap_err();
        assert_eq!(err.message(), "invalid HTTP method \"GE T\"");
    }

    #[test]
    fn json_sets_the_body_and_a_content_type_once() {
        let request = Request::post("http://h/")
            .json(&serde_json::json!({"text": "a\"b"}))
            .unwrap();
        assert_eq!(request.body, br#"{"text":"a\"b"}"#);
        assert_eq!(
            request.header_value("Content-Type"),
            Some("application/json")
        );
        let request = Request::post("http://h/")
            .header("content-type", "application/vnd.api+json")
            .json(&1)
            .unwrap();
        assert_eq!(request.headers.len(), 1);
    }

    #[test]
    fn debug_hides_credentials() {
        let request = Request::get("http://h/")
            .bearer_auth("s3cr3t")
            .header("X-Api-Key", "k3y")
            .header("Accept", "*/*");
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.contains("\"Accept\", \"*/*\""), "{shown}");
    }

    #[test]
    fn responses_check_status_and_quote_a_bounded_snippet() {
        let response = Response {
            status: 503,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: format!("down\r\nfor maintenance{}", "x".repeat(500)).into_bytes(),
        };
        assert_eq!(response.header("content-type"), Some("text/plain"));
        let err = response.clone().error_for_status().unwrap_err();
        assert!(err.is_retryable());
        assert!(
            err.message()
                .starts_with("HTTP 503 Service Unavailable: down\\r\\nfor maintenancexxx"),
            "{err}"
        );
        assert!(err.message().ends_with("x…"), "{err}");
        assert_eq!(
            err.message().chars().count(),
            "HTTP 503 Service Unavailable: ".len() + SNIPPET_CHARS + 3
        );

        let not_found = Response {
            status: 404,
            headers: vec![],
            body: vec![],
        };
        let err = not_found.error_for_status().unwrap_err();
        assert_eq!(err.message(), "HTTP 404 Not Found: (empty)");
        assert!(!err.is_retryable());
        assert_eq!(status_line(299), "299");

        let ok = Response {
            status: 200,
            headers: vec![],
            body: br#"{"id": 7}"#.to_vec(),
        };
        #[derive(serde::Deserialize)]
        struct Id {
            id: u32,
        }
        assert_eq!(ok.json::<Id>().unwrap().id, 7);
        assert_eq!(ok.text().unwrap(), r#"{"id": 7}"#);
        let err = ok.json::<Vec<u8>>().unwrap_err();
        assert!(
            err.message().starts_with(
                "the response body (status 200) is not the JSON expected: invalid type"
            ),
            "{err}"
        );
        let binary = Response {
            status: 200,
            headers: vec![],
            body: vec![0xff, 0xfe],
        };
        assert!(
            binary
                .text()
                .unwrap_err()
                .message()
                .starts_with("the response body (status 200) is not UTF-8 text")
        );
    }

    #[test]
    fn header_lines_parse_and_errors_do_not_quote_values() {
        let headers =
            parse_header_lines("  Accept: */*\r\n\nX-Empty:\nX-Url: http://a:b/").unwrap();
        assert_eq!(
            headers,
            [
                ("Accept".to_owned(), "*/*".to_owned()),
                ("X-Empty".to_owned(), String::new()),
                ("X-Url".to_owned(), "http://a:b/".to_owned())
            ]
        );
        let err = parse_header_lines("Accept: */*\nBearer s3cr3t").unwrap_err();
        assert_eq!(err.message(), "header line 2: expected \"Name: value\"");
        let err = parse_header_lines("Bad Name: s3cr3t").unwrap_err();
        assert_eq!(err.message(), "header line 1: invalid header name");
    }
}
