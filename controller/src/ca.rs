//! The controller's own certificate authority and the TLS configuration of
//! the fleet endpoint.
//!
//! The CA lives in `DATA/ca/ca.crt` and `DATA/ca/ca.key` (0600). It signs a
//! fresh server certificate for the controller at every start (DNS name
//! `sluice-controller`, whatever address agents dial) and a short-lived
//! client certificate for each enrolled agent, whose SAN is the agent id
//! whatever the CSR asked for. The fleet port checks every client
//! certificate against [`Revocations`] during the handshake, so that a
//! revoked agent never gets past it. Knows nothing of the engine or the
//! store (the driver fills the revocation list from it).

use anyhow::{Context as _, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use sluice_protocol::{ALPN_ENROLL, ALPN_FLEET, CONTROLLER_SERVER_NAME};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a CA made by the controller is valid. Rolling the CA is a
/// documented operator procedure, so this is long.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The controller's server certificate is re-issued at every start.
const SERVER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default lifetime of an agent's client certificate (docs/design.md section 5: short-lived).
pub const AGENT_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// A peer silent this long is gone: three missed keep-alives (agents send
/// one after 3 s without a packet, which keeps a quiet connection up
/// through NATs) and some slack. Both sides use the smaller of their two values, so this bounds
/// how long an agent takes to notice a controller that was killed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(12);
/// Allowance for clocks that disagree a little between hosts.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    fingerprint: String,
}

/// Hex sha256 of a certificate's DER: what a join token pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl Ca {
    /// Loads the CA from `dir`, or creates it there on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let crt = dir.join("ca.crt");
        let key = dir.join("ca.key");
        create_private_dir(dir)?;
        if crt.exists() || key.exists() {
            if key.exists() {
                tighten_private_file(&key)?;
            }
            let cert_pem = std::fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
            let key_pem = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
            return Self::from_pem(&cert_pem, &key_pem).with_context(|| format!("loading the CA in {}", dir.display()));
        }
        let (cert_pem, key_pem) = Self::generate_pem()?;
        write_private(&key, key_pem.as_bytes())?;
        std::fs::write(&crt, &cert_pem).with_context(|| format!("writing {}", crt.display()))?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    // Shared keys (issue 18, reach).
    /// A new CA: its certificate and its key, PEM.
    pub fn generate_pem() -> Result<(String, String)> {
        let key_pair = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Sluice controller CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key_pair).context("self-signing the CA")?;
        Ok((cert.pem(), key_pair.serialize_pem()))
    }

    /// A CA from its certificate and key (PEM), checked to belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("parsing the CA certificate")?;
        // Fail early if the pair does not belong together or is no CA.
        Issuer::from_ca_cert_pem(cert_pem, &key).context("parsing the CA certificate")?;
        Ok(Self { fingerprint: fingerprint(&cert_der), cert_pem: cert_pem.to_string(), cert_der, key })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// When the CA's certificate expires, in Unix seconds (0 if unreadable).
    pub fn expiry_unix(&self) -> u64 {
        x509_parser::parse_x509_certificate(&self.cert_der)
            .ok()
            .and_then(|(_, cert)| u64::try_from(cert.validity().not_after.timestamp()).ok())
            .unwrap_or(0)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// Signs an agent's CSR. Only the CSR's public key is used: subject,
    /// SAN, usages and lifetime are the controller's.
    pub fn sign_agent(&self, csr_pem: &str, agent_id: &str, lifetime: Duration) -> Result<(String, String)> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("the certificate signing request is invalid: {e}"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(agent_id.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer()?).context("signing the agent certificate")?;
        Ok((cert.pem(), serial_hex))
    }

    /// A fresh server identity: chain [leaf, CA] so that agents can find the
    /// CA they pinned by fingerprint at enrollment.
    fn server_identity(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        self.issue_server(&[CONTROLLER_SERVER_NAME.to_string()], SERVER_LIFETIME)
    }

    /// A server certificate for `names` (DNS names or IP addresses, the
    /// first one its common name) valid for `lifetime`, with a fresh key:
    /// the chain [leaf, CA] and the key. The fleet port's identity, and
    /// the API's unless the operator gives one (`crate::https`).
    pub fn issue_server(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec()).with_context(|| {
            format!("a server certificate for {names:?}: every name must be a DNS name or an IP address")
        })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or(CONTROLLER_SERVER_NAME));
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + lifetime;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow::anyhow!("server key: {e}"))?;
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }

    /// The QUIC server configuration of the fleet port. Client certificates
    /// are verified against this CA when presented, and refused when
    /// revoked; they are optional at the TLS layer only so that enrollment
    /// (its own ALPN) can happen on the same port. The fleet ALPN refuses
    /// connections without one.
    pub fn server_config(&self, revocations: Revocations) -> Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).context("adding the CA as trust root")?;
        let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .context("building the client certificate verifier")?;
        let verifier = Arc::new(RevocationChecking { inner: webpki, revocations });
        let (chain, key) = self.server_identity()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![ALPN_FLEET.to_vec(), ALPN_ENROLL.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // No keep-alives of the controller's own (issue 19, fleet): the
        // agents' keep their connections alive, and each packet of theirs
        // tells both sides the other is there. Pinging back every agent
        // doubled the traffic of an idle fleet (50,000 agents: some 17,000
        // packets a second, with their acknowledgements).
        transport.keep_alive_interval(None);
        crate::udp::CONTROLLER_WINDOWS.apply(&mut transport);
        transport.max_idle_timeout(Some(IDLE_TIMEOUT.try_into()?));
        // Fleet (issue 19, scale): quinn allocates a map entry for every
        // stream a peer may open, at the handshake: 256 bidirectional and
        // the default 100 unidirectional streams were about 21 KiB of
        // every idle connection. A connection starts with room for its
        // control stream (or its enrollment) and no unidirectional stream
        // (neither side opens one); `crate::fleet` raises the bidirectional
        // limit after the hello, by the agent's slots.
        transport.max_concurrent_bidi_streams(crate::fleet::HANDSHAKE_STREAMS.into());
        transport.max_concurrent_uni_streams(0u32.into());
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// The certificate revocation list of the fleet port: serials of revoked
/// certificates, and revoked agent ids (which cover every certificate an
/// agent was ever given, including those replaced by renewal that have
/// not expired yet). Shared between the driver, which adds to it, and the
/// TLS verifier, which reads it at every handshake.
#[derive(Clone, Default, Debug)]
pub struct Revocations(Arc<RwLock<RevokedSet>>);

#[derive(Default, Debug)]
struct RevokedSet {
    serials: HashSet<String>,
    agents: HashSet<String>,
}

impl Revocations {
    /// Revokes an agent and its certificate's serial (hex, as the CA
    /// reports it).
    pub fn revoke(&self, agent_id: &str, serial_hex: &str) {
        let mut set = self.0.write().expect("revocations lock");
        set.agents.insert(agent_id.to_string());
        set.serials.insert(normal_serial(serial_hex));
    }

    /// Whether a client certificate is revoked, by its serial or its agent.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return true };
        let serial = normal_serial(&hex::encode(cert.raw_serial()));
        let set = self.0.read().expect("revocations lock");
        set.serials.contains(&serial) || agent_id_from_cert(der).is_ok_and(|id| set.agents.contains(&id))
    }
}

/// A serial in hex without leading zero bytes (DER may keep or drop them).
fn normal_serial(hex: &str) -> String {
    let mut s = hex.to_ascii_lowercase();
    while s.len() > 2 && s.starts_with("00") {
        s.drain(..2);
    }
    s
}

/// The WebPKI client verifier, plus the revocation list: a revoked
/// certificate fails the handshake with TLS's `certificate_revoked` alert,
/// so a revoked agent never reaches the control stream.
#[derive(Debug)]
struct RevocationChecking {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    revocations: Revocations,
}

impl rustls::server::danger::ClientCertVerifier for RevocationChecking {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if self.revocations.is_revoked(end_entity) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The agent id in a verified client certificate: its DNS SAN.
pub fn agent_id_from_cert(der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| anyhow::anyhow!("bad client certificate: {e}"))?;
    let Some(san) = cert.subject_alternative_name().ok().flatten() else {
        bail!("client certificate has no subject alternative name");
    };
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
            return Ok(dns.to_string());
        }
    }
    bail!("client certificate names no agent id")
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// Writes a file only its owner can read: created 0600, and an existing
/// file (made by hand, or by an older version with the default mode) is
/// set to 0600 before anything is written into it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("making {} private", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Mode of key, token and store files: the owner's alone.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of the data dir and its directories.
pub const PRIVATE_DIR: u32 = 0o700;

/// Makes a file owner-only, creating it empty if it does not exist (for
/// files another library then opens, such as the SQLite store).
pub fn ensure_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("making {} private", path.display()))
}

/// Sets a file that already exists to 0600 (a key or token file read at
/// start), saying so when it was readable by others.
pub fn tighten_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o777 != PRIVATE_FILE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))
            .with_context(|| format!("making {} private", path.display()))?;
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "a private file had a loose mode; it is now 0600");
    }
    Ok(())
}

/// Creates a directory (and missing parents) that only its owner can
/// enter, or sets an existing one to 0700.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o777 != PRIVATE_DIR {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))
            .with_context(|| format!("making {} private", dir.display()))?;
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "a private directory had a loose mode; it is now 0700");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn loosen(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_files_and_dirs_are_owner_only_whether_new_or_existing() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("admin.token");
        write_private(&file, b"new").unwrap();
        assert_eq!(mode(&file), 0o600);
        // An existing file with a loose mode is tightened before it is written.
        loosen(&file, 0o644);
        write_private(&file, b"again").unwrap();
        assert_eq!((mode(&file), std::fs::read(&file).unwrap()), (0o600, b"again".to_vec()));
        loosen(&file, 0o666);
        tighten_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        let db = root.path().join("store.db");
        ensure_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        loosen(&db, 0o644);
        ensure_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);

        let dir = root.path().join("data/ca");
        create_private_dir(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&root.path().join("data"))), (0o700, 0o700));
        loosen(&dir, 0o755);
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_existing_ca_dir_and_key_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ca");
        let ca = Ca::load_or_create(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&dir.join("ca.key"))), (0o700, 0o600));
        loosen(&dir, 0o755);
        loosen(&dir.join("ca.key"), 0o644);
        let again = Ca::load_or_create(&dir).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!((mode(&dir), mode(&dir.join("ca.key"))), (0o700, 0o600));
    }

    #[test]
    fn ca_persists_and_signs_with_the_san_it_chooses() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // The CSR asks for a name the controller must not grant.
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["sluice-controller".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let (pem, serial) = ca.sign_agent(&csr, "ag-0123456789abcdef", AGENT_CERT_LIFETIME).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(agent_id_from_cert(&der).unwrap(), "ag-0123456789abcdef");
        assert!(!serial.is_empty());
        assert!(ca.sign_agent("not a csr", "ag-1", AGENT_CERT_LIFETIME).unwrap_err().to_string().contains("invalid"));
    }

    #[test]
    fn revocation_covers_the_serial_and_every_certificate_of_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let sign = |id: &str| {
            let key = KeyPair::generate().unwrap();
            let csr = CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
            let (pem, serial) = ca.sign_agent(&csr.pem().unwrap(), id, AGENT_CERT_LIFETIME).unwrap();
            (CertificateDer::from_pem_slice(pem.as_bytes()).unwrap(), serial)
        };
        let (old, _) = sign("ag-1");
        let (current, serial) = sign("ag-1");
        let (other, _) = sign("ag-2");
        let revocations = Revocations::default();
        assert!(!revocations.is_revoked(&current));
        revocations.revoke("ag-1", &serial);
        assert!(revocations.is_revoked(&current));
        assert!(revocations.is_revoked(&old), "a certificate replaced by renewal is revoked too");
        assert!(!revocations.is_revoked(&other));
        assert!(revocations.is_revoked(b"not a certificate"));

        // By serial alone (e.g. a list loaded from the store).
        let by_serial = Revocations::default();
        by_serial.0.write().unwrap().serials.insert(normal_serial(&format!("00{serial}")));
        assert!(by_serial.is_revoked(&current));
    }
}
