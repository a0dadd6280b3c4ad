//! A lightweight agent for the benchmark: enrolls with a real join token
//! and a real CSR, connects over QUIC with mutual TLS under the
//! certificate the controller's CA signed, says hello and then stays
//! idle, or moves artifacts on the same streams the agent uses. Many of
//! them share a few client endpoints, so ten thousand fit in one process.
//!
//! It speaks only the wire protocol (`sluice-protocol`), as any agent must;
//! it never runs jobs.

use anyhow::{Context as _, Result, anyhow, bail};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sluice::fleet::read_frame_exact;
use sluice_protocol::{
    ALPN_ENROLL, ALPN_FLEET, CONTROLLER_SERVER_NAME, EnrollRequest, EnrollResponse, FromAgent, Hello, JoinToken,
    PROTOCOL_VERSION, ToAgent, encode,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// As the agent: keep-alives well inside the controller's idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// The controller's CA as the only root of trust.
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the CA certificate is not PEM")?)?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn quic(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let mut config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    sluice::udp::AGENT_WINDOWS.apply(&mut transport);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// TLS 1.3, the controller's CA as root, ALPN `sluice/1` and a client
/// certificate: the agent's fleet configuration.
pub fn fleet_config(roots: Arc<RootCertStore>, cert_pem: &str, key_der: Vec<u8>) -> Result<quinn::ClientConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().context("certificate PEM")?;
    let key = PrivateKeyDer::try_from(key_der).map_err(|e| anyhow!("agent key: {e}"))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_FLEET.to_vec()];
    quic(tls)
}

/// A fresh agent key and a CSR for it.
pub fn key_and_csr() -> Result<(rcgen::KeyPair, String)> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(vec!["sluice-bench".to_string()])?.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// An enrolled identity: the id the controller chose and a ready
/// mutual-TLS configuration.
pub struct Enrolled {
    pub agent_id: String,
    pub config: quinn::ClientConfig,
}

/// Enrolls one agent with the join token over `sluice-enroll/1`.
pub async fn enroll(
    endpoint: &quinn::Endpoint,
    fleet: SocketAddr,
    roots: Arc<RootCertStore>,
    token: &JoinToken,
) -> Result<Enrolled> {
    let (key, csr_pem) = key_and_csr()?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    let conn = endpoint.connect_with(quic(tls)?, fleet, CONTROLLER_SERVER_NAME)?.await.context("enrollment handshake")?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let request = EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        secret: token.secret.clone(),
        csr_pem,
        hostname: "sluice-bench".into(),
    };
    send.write_all(&encode(&request)?).await?;
    send.finish()?;
    let answer: EnrollResponse = read_frame_exact(&mut recv).await?.context("no enrollment answer")?;
    conn.close(0u32.into(), b"enrolled");
    match answer {
        EnrollResponse::Enrolled { agent_id, cert_pem, .. } => {
            Ok(Enrolled { agent_id, config: fleet_config(roots, &cert_pem, key.serialize_der())? })
        }
        EnrollResponse::Refused { reason } => bail!("enrollment refused: {reason}"),
    }
}

/// A live fleet connection with its control stream, kept open (dropping the
/// streams would tell the controller the agent left). It sends heartbeats
/// at the interval the welcome named, as an agent does: a controller cuts
/// off an agent silent for its lease (30 s by default), and connecting
/// 50,000 takes longer than that.
pub struct Connected {
    pub conn: quinn::Connection,
    send: Arc<tokio::sync::Mutex<quinn::SendStream>>,
    recv: quinn::RecvStream,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

impl Connected {
    fn new(conn: quinn::Connection, send: quinn::SendStream, recv: quinn::RecvStream, every: Duration) -> Self {
        let send = Arc::new(tokio::sync::Mutex::new(send));
        let beat = send.clone();
        let heartbeats = tokio::spawn(async move {
            let Ok(frame) = encode(&FromAgent::Heartbeat { running: vec![] }) else { return };
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticks.tick().await;
                if beat.lock().await.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        Self { conn, send, recv, heartbeats }
    }

    /// Sends one message on the control stream.
    pub async fn send(&mut self, message: &FromAgent) -> Result<()> {
        self.send.lock().await.write_all(&encode(message)?).await?;
        Ok(())
    }

    /// The next job the controller hands out, skipping other messages.
    pub async fn next_job(&mut self) -> Result<sluice_protocol::JobSpec> {
        loop {
            match read_frame_exact::<ToAgent>(&mut self.recv).await? {
                Some(ToAgent::Job(job)) => return Ok(*job),
                Some(_) => {}
                None => bail!("the controller closed the control stream"),
            }
        }
    }
}

/// Connects with mutual TLS, says hello and waits for the welcome.
pub async fn connect(endpoint: &quinn::Endpoint, fleet: SocketAddr, enrolled: &Enrolled) -> Result<Connected> {
    connect_with(endpoint, fleet, enrolled, ("bench", "idle")).await
}

/// As [`connect`], saying hello with one label of its own.
pub async fn connect_with(
    endpoint: &quinn::Endpoint,
    fleet: SocketAddr,
    enrolled: &Enrolled,
    label: (&str, &str),
) -> Result<Connected> {
    let conn = endpoint
        .connect_with(enrolled.config.clone(), fleet, CONTROLLER_SERVER_NAME)?
        .await
        .context("mutual TLS handshake")?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = FromAgent::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: "sluice-bench".into(),
        labels: [(label.0.to_string(), label.1.to_string())].into(),
        slots: 1,
        running: vec![],
        plugins: vec![],
        instance: std::process::id().into(),
    });
    send.write_all(&encode(&hello)?).await?;
    match read_frame_exact::<ToAgent>(&mut recv).await? {
        Some(ToAgent::Welcome { heartbeat_ms, .. }) => {
            Ok(Connected::new(conn, send, recv, Duration::from_millis(heartbeat_ms.max(100))))
        }
        Some(ToAgent::Refused { reason }) => bail!("agent {} refused: {reason}", enrolled.agent_id),
        other => bail!("agent {}: expected a welcome, got {other:?}", enrolled.agent_id),
    }
}

/// A client endpoint on loopback.
pub fn endpoint() -> Result<quinn::Endpoint> {
    Ok(sluice::udp::endpoint("127.0.0.1:0".parse()?, None)?)
}
