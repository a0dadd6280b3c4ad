//! The controller's HTTP listeners: the API (admin REST, the AWS API, the
//! S3 subset, events) and, when asked, a listener of webhook deliveries
//! alone. Each speaks TLS unless the operator asks for plain HTTP, which
//! only a loopback address may serve.
//!
//! The certificate is either issued by the controller's CA for the names
//! the operator lists (plus loopback and the bind address), at every start
//! and again before it expires, or the operator's PEM pair, read again
//! whenever the files change: a pair that does not load keeps the current
//! one serving. Every connection is served by a task of its own after a
//! bounded handshake, so that a slow or broken client never holds up the
//! accept loop, and every request carries the peer's address as
//! [`ConnectInfo<SocketAddr>`] whether the connection is TLS or not.
//! Knows nothing of the routes it serves.

use crate::ca::Ca;
use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of an API certificate the controller's CA issues.
pub const ISSUED_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// An issued certificate is replaced when it has less than this left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the expiry of an issued certificate is looked at.
const RENEW_CHECK: Duration = Duration::from_secs(3600);
/// How often the operator's certificate files are looked at.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Where the API's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Issued by the controller's CA for these names (DNS names or IP
    /// addresses), loopback's and the bind addresses'.
    Ca { names: Vec<String> },
    /// The operator's PEM files: the chain (leaf first) and its key.
    Files { cert: PathBuf, key: PathBuf },
}

/// How a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    /// Plain HTTP: only on a loopback address ([`check_listener`]).
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// Plain HTTP is refused on any address but loopback: tokens and access
/// keys must not cross a network in the clear. `flag` names the option
/// that asked for it, for the message.
pub fn check_listener(addr: SocketAddr, scheme: Scheme, flag: &str) -> Result<(), String> {
    if scheme == Scheme::Http && !addr.ip().is_loopback() {
        return Err(format!(
            "{flag} serves plain HTTP only on a loopback address (127.0.0.1, ::1), not on {addr}: \
             drop {flag} to serve HTTPS there"
        ));
    }
    Ok(())
}

/// `--api-name` values: IP addresses, or DNS names (letters, digits,
/// hyphens, dots; a leading `*.` for a wildcard).
pub fn check_api_names(names: &[String]) -> Result<(), String> {
    for name in names {
        if name.parse::<IpAddr>().is_ok() {
            continue;
        }
        let host = name.strip_prefix("*.").unwrap_or(name);
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!("--api-name {name:?} is neither an IP address nor a DNS name"));
        }
    }
    Ok(())
}

/// The names an issued certificate covers: the operator's, the bind
/// addresses (unless unspecified), and loopback's; each once.
pub fn issued_names(names: &[String], binds: &[SocketAddr]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let binds = binds.iter().map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()).map(|ip| ip.to_string());
    let loopback = ["localhost", "127.0.0.1", "::1"].map(String::from);
    for name in names.iter().cloned().chain(binds).chain(loopback) {
        let name = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.trim().to_ascii_lowercase(),
        };
        if !all.contains(&name) {
            all.push(name);
        }
    }
    all
}

/// The certificate the listeners present: swapped in place on renewal or
/// reload, read at every handshake.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ServerCert {
    fn new(key: CertifiedKey) -> Self {
        Self { current: RwLock::new(Arc::new(key)) }
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
    }

    /// The serial (hex) and expiry of the leaf served now.
    pub fn leaf(&self) -> Option<(String, SystemTime)> {
        leaf_of(&self.current())
    }
}

fn leaf_of(key: &CertifiedKey) -> Option<(String, SystemTime)> {
    let der = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    Some((hex::encode(cert.raw_serial()), expiry))
}

fn certified(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| anyhow::anyhow!("the key does not fit the certificate: {e}"))
}

/// Reads the operator's PEM pair: at least one certificate, a key that
/// belongs to the first.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let private =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("{} is not a PEM private key", key.display()))?;
    certified(chain, private).with_context(|| format!("{} and {}", cert.display(), key.display()))
}

/// The TLS side of the listeners: the certificate and the server
/// configuration built on it.
#[derive(Clone)]
pub struct Tls {
    pub cert: Arc<ServerCert>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    /// Loads or issues the certificate and starts what keeps it current:
    /// renewal of an issued one, the reload of the operator's files.
    pub fn start(ca: Arc<Ca>, source: &CertSource, binds: &[SocketAddr]) -> Result<Self> {
        let cert = match source {
            CertSource::Ca { names } => {
                let names = issued_names(names, binds);
                let cert = Arc::new(ServerCert::new(issue(&ca, &names)?));
                tokio::spawn(renew_forever(cert.clone(), ca, names));
                cert
            }
            CertSource::Files { cert: cert_path, key } => {
                let stamp = stamp_of(cert_path, key);
                let cert = Arc::new(ServerCert::new(load_pair(cert_path, key)?));
                tokio::spawn(reload_forever(cert.clone(), cert_path.clone(), key.clone(), stamp));
                cert
            }
        };
        if let Some((serial, _)) = cert.leaf() {
            info!(%serial, "API certificate loaded");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { cert, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
}

fn issue(ca: &Ca, names: &[String]) -> Result<CertifiedKey> {
    let (chain, key) = ca.issue_server(names, ISSUED_LIFETIME).context("issuing the API certificate")?;
    certified(chain, key)
}

/// Replaces an issued certificate when it has less than [`RENEW_BEFORE`]
/// left (a controller that runs for months keeps a valid one).
async fn renew_forever(cert: Arc<ServerCert>, ca: Arc<Ca>, names: Vec<String>) {
    let mut tick = tokio::time::interval(RENEW_CHECK);
    loop {
        tick.tick().await;
        if !needs_renewal(&cert.current(), SystemTime::now()) {
            continue;
        }
        match issue(&ca, &names) {
            Ok(key) => {
                cert.replace(key);
                info!(serial = cert.leaf().map(|(s, _)| s).unwrap_or_default(), "API certificate renewed");
            }
            Err(e) => error!("renewing the API certificate: {e:#}; the current one is still served"),
        }
    }
}

/// Whether an issued certificate has less than [`RENEW_BEFORE`] left at
/// `now` (one that cannot be read is replaced too).
fn needs_renewal(key: &CertifiedKey, now: SystemTime) -> bool {
    leaf_of(key).is_none_or(|(_, expiry)| expiry < now + RENEW_BEFORE)
}

/// What tells a changed file: modification time, size and inode of both.
type Stamp = Option<[(SystemTime, u64, u64); 2]>;

fn stamp_of(cert: &Path, key: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let one =
        |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()));
    Some([one(cert)?, one(key)?])
}

/// Reads the operator's pair again whenever either file changes; a pair
/// that does not load is reported once and the current one kept.
async fn reload_forever(cert: Arc<ServerCert>, cert_path: PathBuf, key_path: PathBuf, mut seen: Stamp) {
    let mut tick = tokio::time::interval(RELOAD_POLL);
    loop {
        tick.tick().await;
        let stamp = stamp_of(&cert_path, &key_path);
        if stamp == seen {
            continue;
        }
        seen = stamp;
        match load_pair(&cert_path, &key_path) {
            Ok(key) => {
                cert.replace(key);
                info!(serial = cert.leaf().map(|(s, _)| s).unwrap_or_default(), "API certificate reloaded");
            }
            Err(e) => error!(
                serial = cert.leaf().map(|(s, _)| s).unwrap_or_default(),
                "reloading the API certificate: {e:#}; the current one is still served"
            ),
        }
    }
}

/// Connections a listener serves at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Binds a TCP listener with `SO_REUSEADDR`, so that the port is taken
/// again at once after a listener on it closed (its closed connections
/// linger in TIME_WAIT): a controller restarted in place, or a standby
/// handing its port to the leader it became (issue 18, ha).
pub fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `router` on `listener` until the process ends: TLS when `tls`
/// is given. `name` names the listener in logs.
pub async fn serve(listener: TcpListener, router: Router, tls: Option<tokio_rustls::TlsAcceptor>, name: &'static str) {
    // Connections open at once: past it, new ones wait in the kernel's
    // backlog, so that slow clients cannot take every file descriptor.
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = open.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait rather than spin.
                warn!(listener = name, "accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _open = permit;
            let Some(acceptor) = tls else {
                return serve_connection(TokioIo::new(stream), router, peer, name).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), router, peer, name).await,
                Ok(Err(e)) => debug!(listener = name, %peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(listener = name, %peer, "TLS handshake timed out"),
            }
        });
    }
}

/// HTTP/1.1 on one connection; each request gets the peer's address.
async fn serve_connection<I>(io: TokioIo<I>, router: Router, peer: SocketAddr, name: &'static str)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, request).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service)
        .await;
    if let Err(e) = served {
        debug!(listener = name, %peer, "connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(check_listener("127.0.0.1:7400".parse().unwrap(), Scheme::Http, "--api-plain-http").is_ok());
        assert!(check_listener("[::1]:7400".parse().unwrap(), Scheme::Http, "--api-plain-http").is_ok());
        let refused = check_listener("0.0.0.0:7400".parse().unwrap(), Scheme::Http, "--api-plain-http").unwrap_err();
        assert!(refused.contains("loopback") && refused.contains("0.0.0.0:7400"), "{refused}");
        assert!(check_listener("10.0.0.1:7400".parse().unwrap(), Scheme::Http, "--api-plain-http").is_err());
        assert!(check_listener("0.0.0.0:7400".parse().unwrap(), Scheme::Https, "--api-plain-http").is_ok());
    }

    #[test]
    fn an_issued_certificate_is_renewed_a_month_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca")).unwrap();
        let names = issued_names(&[], &[]);
        let fresh = issue(&ca, &names).unwrap();
        let now = SystemTime::now();
        assert!(!needs_renewal(&fresh, now));
        assert!(!needs_renewal(&fresh, now + ISSUED_LIFETIME - RENEW_BEFORE - Duration::from_secs(3600)));
        assert!(needs_renewal(&fresh, now + ISSUED_LIFETIME - RENEW_BEFORE + Duration::from_secs(3600)));
        let (chain, key) = ca.issue_server(&names, Duration::from_secs(10 * 24 * 3600)).unwrap();
        assert!(needs_renewal(&certified(chain, key).unwrap(), now));
    }

    #[test]
    fn api_names_are_ip_addresses_or_dns_names() {
        let ok = ["ci.example.com", "10.0.0.1", "::1", "*.example.com", "localhost"].map(String::from);
        assert!(check_api_names(&ok).is_ok());
        for bad in ["", "ci example.com", "-ci.example", "ci..example", "ci.example.com/path", "https://ci.example"] {
            assert!(check_api_names(&[bad.to_string()]).unwrap_err().contains("--api-name"), "{bad}");
        }
    }

    #[test]
    fn issued_names_cover_loopback_and_the_bind_address_once() {
        let binds = ["10.1.2.3:7400".parse().unwrap(), "0.0.0.0:7401".parse().unwrap()];
        let names = issued_names(&["CI.example.com".into(), "127.0.0.1".into()], &binds);
        assert_eq!(names, ["ci.example.com", "127.0.0.1", "10.1.2.3", "localhost", "::1"]);
    }

    /// A router answering the peer address its request carries.
    fn echo_peer() -> Router {
        async fn peer(ConnectInfo(addr): ConnectInfo<SocketAddr>) -> String {
            addr.to_string()
        }
        Router::new().route("/peer", axum::routing::get(peer))
    }

    #[tokio::test]
    async fn every_request_carries_the_peer_address_over_tls_and_plain_http_and_a_stuck_handshake_blocks_nothing() {
        use tokio::io::AsyncWriteExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::load_or_create(&dir.path().join("ca")).unwrap());
        let ca_pem = ca.cert_pem().as_bytes().to_vec();
        let tls = Tls::start(ca, &CertSource::Ca { names: Vec::new() }, &[]).unwrap();
        let secure = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (secure_addr, plain_addr) = (secure.local_addr().unwrap(), plain.local_addr().unwrap());
        tokio::spawn(serve(secure, echo_peer(), Some(tls.acceptor.clone()), "test-tls"));
        tokio::spawn(serve(plain, echo_peer(), None, "test-plain"));

        // A client that never finishes its handshake, and one that speaks
        // plain HTTP to the TLS port: neither holds up the next client.
        let _stuck = tokio::net::TcpStream::connect(secure_addr).await.unwrap();
        let mut confused = tokio::net::TcpStream::connect(secure_addr).await.unwrap();
        confused.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

        let client = crate::ops::http_client(Some(&ca_pem)).unwrap();
        for url in [format!("https://{secure_addr}/peer"), format!("https://localhost:{}/peer", secure_addr.port())] {
            let answer = tokio::time::timeout(Duration::from_secs(5), client.get(&url).send()).await.unwrap().unwrap();
            let peer: SocketAddr = answer.text().await.unwrap().parse().unwrap();
            assert!(peer.ip().is_loopback() && peer.port() != secure_addr.port(), "{peer}");
        }
        let answer = client.get(format!("http://{plain_addr}/peer")).send().await.unwrap();
        let peer: SocketAddr = answer.text().await.unwrap().parse().unwrap();
        assert!(peer.ip().is_loopback(), "{peer}");
        // Another CA's client refuses the certificate.
        let other = tempfile::tempdir().unwrap();
        let other_ca = Ca::load_or_create(&other.path().join("ca")).unwrap();
        let stranger = crate::ops::http_client(Some(other_ca.cert_pem().as_bytes())).unwrap();
        let refused = stranger.get(format!("https://{secure_addr}/peer")).send().await.unwrap_err();
        assert!(crate::ops::unreachable("x", &refused).contains("certificate is not trusted"), "{refused:?}");
    }

    #[test]
    fn a_pair_that_does_not_belong_together_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&dir.path().join("ca")).unwrap();
        let (chain, _) = ca.issue_server(&["a.example".into()], ISSUED_LIFETIME).unwrap();
        let (_, other_key) = ca.issue_server(&["b.example".into()], ISSUED_LIFETIME).unwrap();
        let pem = |label: &str, der: &[u8]| {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
            format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
        };
        std::fs::write(dir.path().join("cert.pem"), pem("CERTIFICATE", &chain[0])).unwrap();
        std::fs::write(dir.path().join("key.pem"), pem("PRIVATE KEY", other_key.secret_der())).unwrap();
        let err = load_pair(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap_err();
        assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
        std::fs::write(dir.path().join("cert.pem"), "not pem").unwrap();
        assert!(load_pair(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).is_err());
    }
}
