//! Outgoing `wasi:http` requests, gated by the action's `http` grants.
//!
//! wasmtime-wasi-http hands every request a plugin sends to
//! [`WasiHttpHooks::send_request`]; [`HttpGate`] answers it. It checks the
//! request's host and port against the grants, resolves the name itself,
//! keeps only the addresses the grants admit (see [`crate::net`]) and
//! connects to exactly those, so a name cannot be re-resolved to another
//! address between the check and the connection. Every timeout is cut to
//! what is left of the action's deadline, so a slow server cannot hold a
//! host call past it. A refusal reaches the plugin as
//! `error-code::internal-error` carrying the reason, and the action's log
//! says it too.

use crate::net::HttpGrants;
use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Requests of one plugin call that may be in flight at once: beyond it a
/// request is refused, so that a plugin cannot tie up the agent's resolver
/// threads or its file descriptors.
pub const MAX_IN_FLIGHT: usize = 16;

/// Refusals kept for the log between two waits; the rest are counted.
const MAX_QUEUED_REFUSALS: usize = 32;

/// The `wasi:http` hooks of one plugin call.
pub(crate) struct HttpGate {
    grants: Arc<HttpGrants>,
    deadline: Instant,
    tls: Arc<rustls::ClientConfig>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Refusals not yet logged. The plugin's thread logs them (after each
    /// wait and at the end of the call) within the log's budget: the async
    /// side must not call a log sink, which may block.
    refusals: Arc<Mutex<Refusals>>,
}

#[derive(Default)]
struct Refusals {
    lines: Vec<String>,
    more: u64,
}

impl Refusals {
    fn push(&mut self, line: String) {
        if self.lines.len() < MAX_QUEUED_REFUSALS {
            self.lines.push(line);
        } else {
            self.more += 1;
        }
    }
}

impl HttpGate {
    pub fn new(grants: &[String], deadline: Instant, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            grants: Arc::new(HttpGrants::new(grants)),
            deadline,
            tls,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            refusals: Arc::default(),
        }
    }

    /// The refusals decided since the last call, as log lines.
    pub fn take_refusals(&self) -> Vec<String> {
        let Refusals { lines, more } = std::mem::take(&mut *self.refusals.lock().expect("refusals lock"));
        let mut lines: Vec<String> =
            lines.into_iter().map(|reason| format!("[warn] http request refused: {reason}")).collect();
        if more > 0 {
            lines.push(format!("[warn] {more} more http requests were refused"));
        }
        lines
    }

    fn refuse(&self, reason: String) -> SendFuture {
        self.refusals.lock().expect("refusals lock").push(reason.clone());
        Box::new(std::future::ready(Err(Error::InternalError(Some(reason)))))
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
/// What `send_request` returns: the response and the future of its body's I/O.
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> SendFuture {
        // The grants are checked here, before anything is spawned; the
        // addresses after resolution, on the async side.
        if let Err(reason) = authorize(&self.grants, request.uri()) {
            return self.refuse(reason);
        }
        // Held until the exchange is over, body included.
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return self
                .refuse(format!("more than {MAX_IN_FLIGHT} requests of this action are in flight; wait for one to end"));
        };
        let (grants, deadline, refusals, tls) =
            (self.grants.clone(), self.deadline, self.refusals.clone(), self.tls.clone());
        Box::new(async move {
            match send(&grants, deadline, tls, request, options, permit).await {
                Ok(done) => Ok(done),
                Err(Failure::Refused { plugin, log }) => {
                    refusals.lock().expect("refusals lock").push(log);
                    Err(Error::InternalError(Some(plugin)))
                }
                Err(Failure::Transport(e)) => Err(e),
            }
        })
    }
}

/// Why a request failed: a refusal by the grants (logged, with more detail
/// than the plugin gets) or a transport error (the plugin's to report).
enum Failure {
    Refused { plugin: String, log: String },
    Transport(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Transport(e)
    }
}

impl From<crate::net::Refusal> for Failure {
    fn from(r: crate::net::Refusal) -> Self {
        Failure::Refused { plugin: r.for_plugin, log: r.for_log }
    }
}

/// The host (without brackets), port and whether TLS is wanted.
fn destination(uri: &http::Uri) -> Result<(String, u16, bool), Error> {
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// The grant check before resolution.
fn authorize(grants: &HttpGrants, uri: &http::Uri) -> Result<(), String> {
    match destination(uri) {
        Ok((host, port, _)) => grants.authorize(&host, port),
        // Left to `send`, which reports it as the URI error it is.
        Err(_) => Ok(()),
    }
}

async fn send(
    grants: &HttpGrants,
    deadline: Instant,
    tls_config: Arc<rustls::ClientConfig>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(http::Response<WasiBody>, IoFuture), Failure> {
    use tokio::time::{Instant as At, timeout_at};
    let uri = request.uri().clone();
    let (host, port, tls) = destination(&uri)?;

    let deadline = At::from_std(deadline);
    let by = |asked: Option<Duration>| asked.map_or(deadline, |d| deadline.min(At::now() + d));
    let options = options.unwrap_or_default();
    // One deadline for everything up to a usable connection: resolving,
    // connecting, TLS and the HTTP handshake.
    let connected_by = by(options.connect_timeout);

    let resolved: Vec<SocketAddr> = match timeout_at(connected_by, tokio::net::lookup_host((host.as_str(), port))).await {
        Err(_) => return Err(Error::DnsTimeout.into()),
        Ok(Err(e)) => return Err(Error::DnsError { rcode: Some(e.to_string()), info_code: None }.into()),
        Ok(Ok(addresses)) => addresses.collect(),
    };
    let admitted = grants.admit(&host, port, &resolved)?;
    let stream = connect(&admitted, connected_by).await?;
    let io: Box<dyn Stream> = if tls {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| Error::HttpRequestUriInvalid)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config);
        let tls = timeout_at(connected_by, connector.connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(|e| tls_failure(e, &host, port))?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = timeout_at(connected_by, hyper::client::conn::http1::handshake(TokioIo::new(io)))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::from)?;

    // The host is in the `host` header already; HTTP/1.1 wants the path
    // alone on the request line.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be driven while the response is awaited; after
    // that it is the caller's to drive, alongside the body, until the
    // exchange ends or the deadline passes.
    let mut connection = Box::pin(connection);
    let mut ended = None;
    let response = timeout_at(by(options.first_byte_timeout), async {
        let mut waiting = Box::pin(sender.send_request(request));
        tokio::select! {
            biased;
            response = &mut waiting => response.map_err(Error::from),
            result = &mut connection => {
                let failed = result.as_ref().err().map(|e| e.to_string());
                ended = Some(result);
                match failed {
                    None => waiting.await.map_err(Error::from),
                    Some(e) => Err(Error::InternalError(Some(format!("the connection to {host}:{port} failed: {e}")))),
                }
            }
        }
    })
    .await
    .map_err(|_| Error::ConnectionReadTimeout)??;

    let idle = options.between_bytes_timeout.unwrap_or(Duration::MAX);
    let response = response.map(|body| Paced::new(body, idle, deadline).boxed_unsync());
    let drive: IoFuture = Box::new(async move {
        let _permit = permit;
        match ended {
            Some(result) => result.map_err(Error::from),
            None => timeout_at(deadline, connection).await.map_err(|_| Error::ConnectionTimeout)?.map_err(Error::from),
        }
    });
    Ok((response, drive))
}

/// A failed TLS handshake. wasi:http's error codes carry no text, so a
/// certificate the client does not trust is reported in words, with the
/// way to trust an internal CA.
fn tls_failure(e: std::io::Error, host: &str, port: u16) -> Error {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => Error::InternalError(Some(format!(
            "TLS with {host}:{port} failed: its certificate is not trusted ({why:?}); an agent trusts an \
             internal CA with sluice-agent --http-ca FILE"
        ))),
        _ => Error::Tls(e),
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to the first address that answers by `until`, giving each
/// address an equal share of the time left, so that one address that drops
/// packets does not use up the time of the others.
async fn connect(addresses: &[SocketAddr], until: tokio::time::Instant) -> Result<TcpStream, Error> {
    let mut last = None;
    for (i, addr) in addresses.iter().enumerate() {
        let share = until.saturating_duration_since(tokio::time::Instant::now()) / (addresses.len() - i) as u32;
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => Error::ConnectionTimeout,
        Some(e) => Error::Connect(e),
        None => Error::DestinationNotFound,
    })
}

/// The TLS client of plugins' HTTPS: the Mozilla roots (webpki-roots) and
/// any extra certificate authorities the operator trusts (PEM, such as an
/// internal CA), with *ring* named explicitly so that it does not depend on
/// a process-wide provider being installed.
pub fn tls_config(extra_roots_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    if !extra_roots_pem.is_empty() {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(extra_roots_pem) {
            let cert = cert.map_err(|e| anyhow::anyhow!("reading a PEM certificate: {e}"))?;
            roots.add(cert).map_err(|e| anyhow::anyhow!("an extra root certificate is not usable: {e}"))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "no PEM certificate found among the extra roots");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A response body that fails when the server keeps the client waiting
/// longer than `idle` for the next frame (time the plugin spends not
/// reading does not count), or past the action's deadline.
struct Paced {
    inner: hyper::body::Incoming,
    idle: Duration,
    deadline: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the last poll found no frame: the timer then runs.
    waiting: bool,
}

impl Paced {
    fn new(inner: hyper::body::Incoming, idle: Duration, deadline: tokio::time::Instant) -> Self {
        Self { inner, idle, deadline, timer: Box::pin(tokio::time::sleep_until(deadline)), waiting: false }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Error::from)))
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    let until =
                        tokio::time::Instant::now().checked_add(self.idle).map_or(self.deadline, |t| t.min(self.deadline));
                    self.timer.as_mut().reset(until);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
