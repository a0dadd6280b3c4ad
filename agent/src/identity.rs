//! The agent's identity and trust: its private key, the client certificate the
//! controller signed, the controller's CA, all kept as PEM files in the data
//! dir; the enrollment-time verifier that trusts the controller by the CA
//! fingerprint of the join token; and the rustls/quinn client configurations
//! built from them.
//!
//! Must not know about jobs, plugins or the control protocol: it deals in keys,
//! certificates and TLS configuration only, and opens no sockets.

use anyhow::{Context as _, Result, anyhow, bail};
use rcgen::{CertificateParams, KeyPair};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sluice_protocol::{ALPN_ENROLL, ALPN_FLEET};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The agent's private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "agent.key";
/// The agent's client certificate chain as the controller signed it (PEM).
pub const CERT_FILE: &str = "agent.crt";
/// The controller's CA certificate, the only root of the fleet connection (PEM).
pub const CA_FILE: &str = "ca.crt";
/// What enrollment told us besides certificates: agent id and token labels.
pub const META_FILE: &str = "agent.json";

/// The error a verifier reports when the controller's chain lacks the pinned CA.
const CA_MISMATCH: &str = "controller's CA does not match the join token's fingerprint";

/// QUIC keep-alive: well below quinn's default 30 s idle timeout, so an idle
/// agent (no jobs, long heartbeat interval) keeps its connection.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// Lowercase hex sha256 of a certificate's DER, as join tokens carry it.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        bail!("{what} holds no certificate");
    }
    Ok(certs)
}

/// `agent.json`: the parts of the enrollment answer that are not PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    agent_id: String,
    labels: BTreeMap<String, String>,
}

/// An enrolled agent's identity, as kept in the data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub agent_id: String,
    /// Labels the join token carried; command-line labels go over them.
    pub labels: BTreeMap<String, String>,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
}

impl Identity {
    /// Whether `dir` holds an identity (enrollment happens only when not).
    pub fn exists(dir: &Path) -> bool {
        dir.join(CERT_FILE).exists()
    }

    pub fn load(dir: &Path) -> Result<Self> {
        make_private(&dir.join(KEY_FILE))?;
        let read = |name: &str| -> Result<String> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let meta_path = dir.join(META_FILE);
        let meta: Meta =
            serde_json::from_str(&read(META_FILE)?).with_context(|| format!("reading {}", meta_path.display()))?;
        let identity = Self {
            agent_id: meta.agent_id,
            labels: meta.labels,
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
        };
        identity.check()?;
        Ok(identity)
    }

    /// Writes the identity files; the key is created with mode 0600 and every
    /// file is written whole then renamed, so a crash never leaves half an
    /// identity. The certificate goes last: its presence means "enrolled".
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let meta = serde_json::to_string_pretty(&Meta { agent_id: self.agent_id.clone(), labels: self.labels.clone() })?;
        write_atomically(&dir.join(KEY_FILE), self.key_pem.as_bytes(), 0o600)?;
        write_atomically(&dir.join(CA_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_atomically(&dir.join(META_FILE), meta.as_bytes(), 0o644)?;
        write_atomically(&dir.join(CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// The same agent with a new key and the certificate the controller
    /// signed for it, checked to belong together and to our CA.
    pub fn renewed(&self, key: EnrollmentKey, cert_pem: String) -> Result<Identity> {
        let ca = parse_certs(&self.ca_pem, "the CA certificate")?;
        let pinned = ca.first().map(|c| fingerprint(c)).context("no CA certificate")?;
        key.into_identity(self.agent_id.clone(), cert_pem, self.ca_pem.clone(), self.labels.clone(), &pinned)
            .context("the renewed certificate is unusable")
    }

    /// When the current certificate stops being valid (Unix seconds).
    pub fn expires_at(&self) -> Result<i64> {
        let cert = parse_certs(&self.cert_pem, "the agent certificate")?;
        let cert = cert.first().context("the agent certificate file is empty")?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert).map_err(|e| anyhow!("parsing the agent certificate: {e}"))?;
        Ok(parsed.validity().not_after.timestamp())
    }

    /// Checks that the files parse and belong together, by building the
    /// fleet configuration from them (rustls refuses a key that does not
    /// match the certificate).
    fn check(&self) -> Result<()> {
        self.fleet_client_config().map(drop)
    }

    /// The mutual-TLS configuration of the fleet connection: our certificate
    /// as the client certificate, the controller's CA as the only root,
    /// TLS 1.3 (QUIC requires it), ALPN `sluice/1`.
    pub fn fleet_client_config(&self) -> Result<quinn::ClientConfig> {
        let mut roots = RootCertStore::empty();
        for ca in parse_certs(&self.ca_pem, CA_FILE)? {
            roots.add(ca).context("the controller's CA certificate is not usable as a root")?;
        }
        let chain = parse_certs(&self.cert_pem, CERT_FILE)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| anyhow!("{KEY_FILE} is not a valid PEM private key: {e}"))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .with_context(|| format!("{CERT_FILE} and {KEY_FILE} do not form a usable client identity"))?;
        tls.alpn_protocols = vec![ALPN_FLEET.to_vec()];
        quic_client_config(tls)
    }
}

fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).context("building the QUIC TLS configuration")?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    crate::udp::AGENT_WINDOWS.apply(&mut transport);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Sets the key file to 0600 when it is looser (written by hand, copied
/// in with another mode, or by an older version): the key is the agent's
/// identity, and only its user may read it.
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(metadata) = std::fs::metadata(path) else { return Ok(()) };
    let mode = metadata.permissions().mode() & 0o777;
    if mode != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the agent key had a loose mode; it is now 0600");
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// A fresh key and its certificate signing request, waiting for the
/// controller to sign it.
pub struct EnrollmentKey {
    key: KeyPair,
    pub csr_pem: String,
}

impl EnrollmentKey {
    /// ECDSA P-256 key; the CSR names the host, though the controller
    /// overrides the SAN with the agent id.
    pub fn generate(hostname: &str) -> Result<Self> {
        let key = KeyPair::generate().context("generating the agent key")?;
        let csr_pem = CertificateParams::new(vec![hostname.to_string()])
            .with_context(|| format!("hostname {hostname:?} cannot go in a certificate request"))?
            .serialize_request(&key)
            .context("creating the certificate signing request")?
            .pem()
            .context("encoding the certificate signing request")?;
        Ok(Self { key, csr_pem })
    }

    /// Combines the key with what the controller answered, checking that the
    /// CA it sent is the one the join token pinned and that the certificate
    /// fits our key.
    pub fn into_identity(
        self,
        agent_id: String,
        cert_pem: String,
        ca_pem: String,
        labels: BTreeMap<String, String>,
        pinned_ca_fingerprint: &str,
    ) -> Result<Identity> {
        let cas = parse_certs(&ca_pem, "the CA certificate the controller sent")?;
        if !cas.iter().any(|ca| fingerprint(ca) == pinned_ca_fingerprint) {
            bail!("the CA certificate the controller sent does not match the join token's fingerprint");
        }
        let identity = Identity { agent_id, labels, key_pem: self.key.serialize_pem(), cert_pem, ca_pem };
        identity.check().context("the controller's enrollment answer is unusable")?;
        Ok(identity)
    }
}

/// Trusts a controller on first contact: its chain must include the CA whose
/// sha256 the join token carries, and the leaf must be valid under that CA
/// for `sluice-controller`. Everything after the pin is ordinary WebPKI
/// verification, delegated to rustls.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
    /// Why the last verification failed, so that enrollment can report it
    /// plainly instead of as a TLS alert inside a QUIC error.
    failure: Mutex<Option<String>>,
}

struct CaMismatch;

impl std::fmt::Display for CaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CA_MISMATCH)
    }
}

/// rustls shows `CertificateError::Other` with `{:?}`; this way the TLS
/// error reads as the sentence, not as a type name.
impl std::fmt::Debug for CaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CA_MISMATCH)
    }
}

impl std::error::Error for CaMismatch {}

impl PinnedCaVerifier {
    pub fn new(fingerprint: &str) -> Self {
        Self { fingerprint: fingerprint.to_ascii_lowercase(), provider: provider(), failure: Mutex::new(None) }
    }

    /// The reason the last handshake was refused, if it was.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("verifier lock").clone()
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint) else {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(CaMismatch)))));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("building the certificate verifier: {e}")))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.verify(end_entity, intermediates, server_name, ocsp_response, now);
        *self.failure.lock().expect("verifier lock") = match &result {
            Ok(_) => None,
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(_))) => Some(CA_MISMATCH.to_string()),
            Err(e) => Some(format!("the controller's certificate is not valid: {e}")),
        };
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The enrollment connection's configuration: no client certificate, the
/// controller trusted through `verifier`, ALPN `sluice-enroll/1`.
pub fn enrollment_client_config(verifier: Arc<PinnedCaVerifier>) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_ENROLL.to_vec()];
    quic_client_config(tls)
}

/// This host's name, for the CSR; the controller shows it beside the agent id.
pub fn hostname() -> String {
    let candidates = [
        std::env::var("HOSTNAME").ok(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        .unwrap_or_else(|| "sluice-agent".to_string())
}

/// Certificates and a controller-like server configuration for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use rcgen::{BasicConstraints, DnType, IsCa, Issuer, KeyUsagePurpose};

    pub struct Ca {
        pub cert: rcgen::Certificate,
        pub issuer: Issuer<'static, KeyPair>,
    }

    pub fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, issuer: Issuer::new(params, key) }
    }

    pub fn leaf(ca: &Ca, name: &str) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_string()]).unwrap();
        (params.signed_by(&key, &ca.issuer).unwrap().der().clone(), key)
    }

    /// Signs a CSR the way the controller does (in tests: as asked).
    pub fn sign(ca: &Ca, csr_pem: &str) -> String {
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap().signed_by(&ca.issuer).unwrap().pem()
    }

    /// What the controller's fleet endpoint presents: chain [leaf, CA] for
    /// `sluice-controller`, both ALPNs, client certificates of `ca`
    /// verified when given and optional (enrollment has none).
    pub fn controller_server_config(ca: &Ca) -> quinn::ServerConfig {
        let (leaf, key) = leaf(ca, sluice_protocol::CONTROLLER_SERVER_NAME);
        let chain = vec![leaf, ca.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![ALPN_FLEET.to_vec(), ALPN_ENROLL.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        quinn::ServerConfig::with_crypto(Arc::new(quic))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ca, sign};
    use super::*;

    fn leaf(ca: &testing::Ca, name: &str) -> CertificateDer<'static> {
        testing::leaf(ca, name).0
    }

    fn verify(verifier: &PinnedCaVerifier, chain: &[CertificateDer<'static>]) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(sluice_protocol::CONTROLLER_SERVER_NAME).unwrap();
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
    }

    #[test]
    fn pinned_verifier_accepts_the_pinned_ca_and_refuses_others() {
        let ours = ca("sluice ours");
        let theirs = ca("sluice theirs");
        let verifier = PinnedCaVerifier::new(&fingerprint(ours.cert.der()));

        let good = [leaf(&ours, "sluice-controller"), ours.cert.der().clone()];
        verify(&verifier, &good).expect("chain with the pinned CA verifies");
        assert_eq!(verifier.failure(), None);

        // Another CA, complete and valid in itself, is not the one pinned.
        let other = [leaf(&theirs, "sluice-controller"), theirs.cert.der().clone()];
        let err = verify(&verifier, &other).unwrap_err();
        assert!(err.to_string().contains(CA_MISMATCH), "{err}");
        assert_eq!(verifier.failure().as_deref(), Some(CA_MISMATCH));

        // A leaf alone, without the CA in the chain, is refused the same way.
        let err = verify(&verifier, &good[..1]).unwrap_err();
        assert!(err.to_string().contains(CA_MISMATCH), "{err}");

        // The pinned CA presented beside a leaf it did not sign is refused by
        // the WebPKI check behind the pin.
        let forged = [leaf(&theirs, "sluice-controller"), ours.cert.der().clone()];
        let err = verify(&verifier, &forged).unwrap_err();
        assert!(!err.to_string().contains(CA_MISMATCH), "{err}");
        assert!(verifier.failure().unwrap().contains("not valid"));

        // A leaf of the right CA for another name is refused too.
        let wrong_name = [leaf(&ours, "somebody-else"), ours.cert.der().clone()];
        verify(&verifier, &wrong_name).unwrap_err();
    }

    fn enrolled(dir: &Path) -> Identity {
        let ca = ca("sluice test ca");
        let key = EnrollmentKey::generate("build-1.example").unwrap();
        let cert = sign(&ca, &key.csr_pem);
        let labels: BTreeMap<_, _> = [("pool".to_string(), "fast".to_string())].into();
        let identity =
            key.into_identity("agent-7".into(), cert, ca.cert.pem(), labels, &fingerprint(ca.cert.der())).unwrap();
        identity.save(dir).unwrap();
        identity
    }

    #[test]
    fn identity_files_round_trip() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        assert!(!Identity::exists(dir.path()));
        let identity = enrolled(dir.path());
        assert!(Identity::exists(dir.path()));
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded, identity);
        assert_eq!(loaded.agent_id, "agent-7");
        assert_eq!(loaded.labels["pool"], "fast");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for name in [CERT_FILE, CA_FILE, KEY_FILE] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{name} is PEM");
        }
        loaded.fleet_client_config().unwrap();

        // A key left readable by others (copied in, or an older version) is
        // made owner-only when it is loaded.
        std::fs::set_permissions(dir.path().join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        Identity::load(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn enrollment_answer_with_another_ca_is_refused() {
        let pinned = ca("pinned");
        let other = ca("other");
        let key = EnrollmentKey::generate("host").unwrap();
        let cert = sign(&other, &key.csr_pem);
        let err = key
            .into_identity("a".into(), cert, other.cert.pem(), BTreeMap::new(), &fingerprint(pinned.cert.der()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("does not match the join token's fingerprint"), "{err:#}");
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let ca = ca("ca");
        let key = EnrollmentKey::generate("host").unwrap();
        let stranger = EnrollmentKey::generate("host").unwrap();
        let cert = sign(&ca, &stranger.csr_pem);
        let err =
            key.into_identity("a".into(), cert, ca.cert.pem(), BTreeMap::new(), &fingerprint(ca.cert.der())).unwrap_err();
        assert!(format!("{err:#}").contains("unusable"), "{err:#}");
    }
}
