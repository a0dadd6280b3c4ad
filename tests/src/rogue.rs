//! A rogue agent for the trust-boundary tests: enrolled with a real join
//! token and a real CSR, connected over QUIC with the certificate the
//! controller's CA signed (so every check it meets is the controller's own,
//! not the handshake's), and then saying whatever the test crafts: a hello
//! listing jobs that are not its own, labels its token did not grant,
//! transfers of digests it was never given, revisions made to hurt, a
//! control stream it never reads, renewals without end.
//!
//! It speaks only `sluice-protocol`, as any agent must.

use anyhow::{Context as _, Result, anyhow, bail};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice::fleet::read_frame_exact;
use sluice_protocol::{
    ALPN_ENROLL, ALPN_FLEET, CONTROLLER_SERVER_NAME, EnrollRequest, EnrollResponse, FromAgent, Hello, JoinToken,
    PROTOCOL_VERSION, StreamReply, StreamRequest, ToAgent, encode,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How the rogue's QUIC connection reads: as an agent does, or with a
/// receive window so small that the controller's writes stall at once
/// (an agent that does not read its control stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Normal,
    Tiny,
}

fn quic(tls: rustls::ClientConfig, window: Window) -> Result<quinn::ClientConfig> {
    let mut config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(3)));
    if window == Window::Tiny {
        transport.stream_receive_window(1024u32.into());
        transport.receive_window(4096u32.into());
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// An enrolled identity.
pub struct Enrolled {
    pub agent_id: String,
    key_der: Vec<u8>,
    cert_pem: String,
    roots: Arc<RootCertStore>,
}

/// A fresh key and a CSR for it.
pub fn key_and_csr() -> Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(vec!["rogue".to_string()])?.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// Enrolls with `token` over `sluice-enroll/1`; `ca_pem` is the controller's
/// CA (the test reads it from the data dir; a real agent pins it by the
/// token's fingerprint).
pub async fn enroll(endpoint: &quinn::Endpoint, fleet: SocketAddr, ca_pem: &str, token: &str) -> Result<Enrolled> {
    let token = JoinToken::parse(token).map_err(|e| anyhow!(e))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let roots = Arc::new(roots);
    let (key, csr_pem) = key_and_csr()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    let conn = endpoint.connect_with(quic(tls, Window::Normal)?, fleet, CONTROLLER_SERVER_NAME)?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let request =
        EnrollRequest { protocol_version: PROTOCOL_VERSION, secret: token.secret, csr_pem, hostname: "rogue".into() };
    send.write_all(&encode(&request)?).await?;
    send.finish()?;
    let answer: EnrollResponse = read_frame_exact(&mut recv).await?.context("no enrollment answer")?;
    conn.close(0u32.into(), b"enrolled");
    match answer {
        EnrollResponse::Enrolled { agent_id, cert_pem, .. } => {
            Ok(Enrolled { agent_id, key_der: key.serialize_der(), cert_pem, roots })
        }
        EnrollResponse::Refused { reason } => bail!("enrollment refused: {reason}"),
    }
}

/// What the rogue says in its hello.
pub struct Claims {
    pub labels: BTreeMap<String, String>,
    pub running: Vec<String>,
    pub slots: u32,
}

/// A connected rogue: its control stream's sending half, and what the
/// controller sent on it (read by a task, unless the window is tiny and
/// nothing is read at all).
pub struct Rogue {
    pub agent_id: String,
    pub conn: quinn::Connection,
    control: Arc<Mutex<quinn::SendStream>>,
    pub inbox: mpsc::UnboundedReceiver<ToAgent>,
    _recv: Option<quinn::RecvStream>,
}

impl Rogue {
    /// Connects with mutual TLS, says `claims`, and waits for the welcome.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        fleet: SocketAddr,
        enrolled: &Enrolled,
        claims: Claims,
        window: Window,
    ) -> Result<Self> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(enrolled.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::try_from(enrolled.key_der.clone()).map_err(|e| anyhow!("key: {e}"))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(enrolled.roots.clone())
            .with_client_auth_cert(chain, key)?;
        tls.alpn_protocols = vec![ALPN_FLEET.to_vec()];
        let conn = endpoint.connect_with(quic(tls, window)?, fleet, CONTROLLER_SERVER_NAME)?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = FromAgent::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: "rogue".into(),
            labels: claims.labels,
            slots: claims.slots,
            running: claims.running,
            plugins: vec![],
            instance: rand_instance(),
        });
        send.write_all(&encode(&hello)?).await?;
        match read_frame_exact::<ToAgent>(&mut recv).await? {
            Some(ToAgent::Welcome { .. }) => {}
            other => bail!("rogue {}: expected a welcome, got {other:?}", enrolled.agent_id),
        }
        let (tx, inbox) = mpsc::unbounded_channel();
        let recv = match window {
            Window::Tiny => Some(recv),
            Window::Normal => {
                tokio::spawn(async move {
                    while let Ok(Some(message)) = read_frame_exact::<ToAgent>(&mut recv).await {
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                });
                None
            }
        };
        Ok(Self { agent_id: enrolled.agent_id.clone(), conn, control: Arc::new(Mutex::new(send)), inbox, _recv: recv })
    }

    /// Sends one message on the control stream.
    pub async fn send(&self, message: &FromAgent) -> Result<()> {
        self.control.lock().await.write_all(&encode(message)?).await?;
        Ok(())
    }

    /// Sends a heartbeat every second until dropped, so that the controller
    /// keeps taking the rogue for alive.
    pub fn keep_alive(&self) -> tokio::task::JoinHandle<()> {
        let control = self.control.clone();
        tokio::spawn(async move {
            loop {
                let frame = encode(&FromAgent::Heartbeat { running: vec![] }).expect("encodes");
                if control.lock().await.write_all(&frame).await.is_err() {
                    return;
                }
                // The heartbeat's period, not a wait for anything.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The next message matching `pick` within `timeout`; others are dropped.
    pub async fn expect<T>(&mut self, timeout: Duration, mut pick: impl FnMut(ToAgent) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbox.recv()).await.ok()??;
            if let Some(found) = pick(message) {
                return Some(found);
            }
        }
    }

    /// Opens a transfer stream, sends `request` (and `body`, for an
    /// upload) and reads the controller's answer.
    pub async fn transfer(&self, request: &StreamRequest, body: &[u8]) -> Result<StreamReply> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&encode(request)?).await?;
        if !body.is_empty() {
            // A refused upload is stopped by the controller: the write may fail.
            let _ = send.write_all(body).await;
        }
        let _ = send.finish();
        read_frame_exact::<StreamReply>(&mut recv).await?.context("no answer on the transfer stream")
    }
}

impl Rogue {
    /// Opens an upload stream, sends `request` and `body`, waits until the
    /// controller's partial file (`partial`) holds all of `body`, then
    /// resets the stream as a dropped connection would: the controller
    /// keeps what arrived for a resume. (A reset sooner would discard what
    /// is still unsent.)
    pub async fn transfer_cut(&self, request: &StreamRequest, body: &[u8], partial: &std::path::Path) -> Result<()> {
        let (mut send, _recv) = self.conn.open_bi().await?;
        send.write_all(&encode(request)?).await?;
        send.write_all(body).await?;
        // The controller holds what arrived in memory until its buffer fills
        // or the stream ends (it hashes and writes on a thread, in 1 MiB
        // buffers), so the bytes land in the partial file at the cut. The
        // pause lets them arrive first: a reset discards what the receiver
        // has not read yet.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = send.reset(0u32.into());
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        let landed = loop {
            let have = std::fs::metadata(partial).map_or(0, |m| m.len());
            if have >= body.len() as u64 || tokio::time::Instant::now() > deadline {
                break have;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if landed < body.len() as u64 {
            bail!("timed out after {:?}: {landed} of {} bytes reached {}", crate::WAIT, body.len(), partial.display());
        }
        Ok(())
    }
}

fn rand_instance() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// A client endpoint on loopback.
pub fn endpoint() -> Result<quinn::Endpoint> {
    Ok(quinn::Endpoint::client("127.0.0.1:0".parse()?)?)
}
