//! The keys every controller of a cluster must hold alike (issue 18,
//! reach), kept in the store so that any controller issues and verifies
//! the same certificates and accepts the same tokens: the CA (certificate
//! and key), the admin token and the key that derives job workers'
//! credentials. Each is sealed with `secret.key` ([`SecretBox`]) under its
//! own name; `secret.key` itself never goes into the store: the operator
//! gives every controller of a cluster the same file.
//!
//! The first controller to start stores them: the data dir's files when it
//! has them (a controller upgraded from a release that kept them only as
//! files keeps its CA, so its agents need no new enrollment), else new
//! ones. The insert is "if absent, then read back what is there", so two
//! controllers starting together agree on whichever got there first.
//!
//! The data dir keeps a copy as files (`ca/ca.crt`, `ca/ca.key`,
//! `admin.token`, `worker.key`), written where missing: what `controller.json`
//! names, what `sluice backup` copies and what operators read the admin
//! token from. A file that differs from the store's value is an error, not
//! silently replaced: it belongs to another cluster (or was edited by hand).

use crate::ca::{Ca, create_private_dir, tighten_private_file, write_private};
use crate::secrets::SecretBox;
use crate::store::Store;
use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The store's names of the shared keys.
const CA: &str = "ca";
const ADMIN_TOKEN: &str = "admin-token";
const WORKER_KEY: &str = "worker-key";
/// Bytes of the worker key.
const WORKER_KEY_BYTES: usize = 32;

/// What every controller of a cluster holds alike.
pub struct ClusterKeys {
    pub ca: Ca,
    pub admin_token: String,
    pub worker_key: Vec<u8>,
}

/// The CA as it is stored (sealed, as JSON).
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct CaPem {
    cert_pem: String,
    key_pem: String,
}

/// The cluster's keys from the store, stored there first if missing (see
/// the module's doc), with the data dir's copies written where missing.
pub fn load(store: &mut dyn Store, secrets: &SecretBox, data_dir: &Path, now: u64) -> Result<ClusterKeys> {
    let ca_dir = data_dir.join("ca");
    create_private_dir(&ca_dir)?;
    let (crt, key) = (ca_dir.join("ca.crt"), ca_dir.join("ca.key"));
    let local_ca = local_ca(&crt, &key)?;
    let ca = shared(store, secrets, CA, "CA", local_ca.as_ref().map(json), now, || {
        let (cert_pem, key_pem) = Ca::generate_pem()?;
        Ok(json(&CaPem { cert_pem, key_pem }))
    })
    .map_err(|e| e.context(format!("the CA (the data dir's copy: {} and {})", crt.display(), key.display())))?;
    let ca: CaPem = serde_json::from_slice(&ca).context("the CA in the store is not what this release stores")?;
    if local_ca.is_none() {
        write_private(&key, ca.key_pem.as_bytes())?;
        std::fs::write(&crt, &ca.cert_pem).with_context(|| format!("writing {}", crt.display()))?;
    }
    let ca_keys = Ca::from_pem(&ca.cert_pem, &ca.key_pem).context("loading the cluster's CA")?;

    let token_file = data_dir.join("admin.token");
    let local_token = local_admin_token(&token_file)?;
    let token = shared(store, secrets, ADMIN_TOKEN, "admin token", local_token.clone(), now, || {
        Ok(format!("sat_{}", hex::encode(rand::random::<[u8; 24]>())).into_bytes())
    })
    .map_err(|e| e.context(format!("the admin token (the data dir's copy: {})", token_file.display())))?;
    let admin_token = String::from_utf8(token).map_err(|_| anyhow!("the admin token in the store is not text"))?;
    if local_token.is_none() {
        write_private(&token_file, format!("{admin_token}\n").as_bytes())?;
    }

    let worker_file = data_dir.join("worker.key");
    let local_worker = local_worker_key(&worker_file)?;
    let worker_key = shared(store, secrets, WORKER_KEY, "worker key", local_worker.clone(), now, || {
        Ok(rand::random::<[u8; WORKER_KEY_BYTES]>().to_vec())
    })
    .map_err(|e| e.context(format!("the worker key (the data dir's copy: {})", worker_file.display())))?;
    if worker_key.len() != WORKER_KEY_BYTES {
        bail!("the worker key in the store is not a {WORKER_KEY_BYTES}-byte key");
    }
    if local_worker.is_none() {
        write_private(&worker_file, &worker_key)?;
    }
    Ok(ClusterKeys { ca: ca_keys, admin_token, worker_key })
}

fn json(ca: &CaPem) -> Vec<u8> {
    serde_json::to_vec(ca).expect("two strings serialize")
}

/// The name a key is sealed under: a value moved to another row does not open.
fn sealed_name(name: &str) -> String {
    format!("cluster-key:{name}")
}

/// One shared key: the store's if there is one, else `local` (the data
/// dir's) or a new one stored first; checked to open with this controller's
/// `secret.key` and to be the same as `local`.
fn shared(
    store: &mut dyn Store,
    secrets: &SecretBox,
    name: &str,
    what: &str,
    local: Option<Vec<u8>>,
    now: u64,
    generate: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let sealed = match store.cluster_key(name)? {
        Some(sealed) => sealed,
        None => {
            let value = match &local {
                Some(value) => value.clone(),
                None => generate()?,
            };
            let sealed = secrets.seal(&sealed_name(name), &value)?;
            let stored = store.insert_cluster_key(name, &sealed, now)?;
            if stored == sealed {
                tracing::info!(
                    key = name,
                    from = if local.is_some() { "the data dir" } else { "new" },
                    "stored the cluster's {what}"
                );
            }
            stored
        }
    };
    let value = secrets.open_value(&sealed_name(name), &sealed).map_err(|_| {
        anyhow!(
            "the cluster's {what} in the store does not open with this controller's secret.key: every controller \
             of a cluster must be given the same secret.key (copy DATA/secret.key of a controller of the cluster, mode 0600)"
        )
    })?;
    if local.as_ref().is_some_and(|local| *local != value) {
        bail!(
            "the data dir's {what} differs from the cluster's in the store: this data dir belongs to another \
             controller or cluster; move the file away to take the cluster's"
        );
    }
    Ok(value)
}

/// The data dir's CA, if it has one (both files, or an error naming the
/// one missing).
fn local_ca(crt: &Path, key: &Path) -> Result<Option<CaPem>> {
    if !crt.exists() && !key.exists() {
        return Ok(None);
    }
    if key.exists() {
        tighten_private_file(key)?;
    }
    let cert_pem = std::fs::read_to_string(crt).with_context(|| format!("reading {}", crt.display()))?;
    let key_pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    Ca::from_pem(&cert_pem, &key_pem).with_context(|| format!("loading the CA in {}", crt.display()))?;
    Ok(Some(CaPem { cert_pem, key_pem }))
}

/// The data dir's admin token, if it has one.
fn local_admin_token(path: &Path) -> Result<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    tighten_private_file(path)?;
    let token = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("{} is empty: delete it and the cluster's admin token is written there at start", path.display());
    }
    Ok(Some(token.as_bytes().to_vec()))
}

/// The data dir's worker key, if it has one.
fn local_worker_key(path: &Path) -> Result<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    tighten_private_file(path)?;
    let key = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if key.len() != WORKER_KEY_BYTES {
        bail!(
            "{} is not a {WORKER_KEY_BYTES}-byte key: delete it and the cluster's is written there at start",
            path.display()
        );
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SqliteStore};

    fn store(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("sluice.db"), Durability::Process).unwrap()
    }

    /// Two controllers on one store (SQLite here, shared by path; the
    /// PostgreSQL backend runs the same code): the second, with a fresh
    /// data dir and the first's secret.key, gets the same CA, admin token
    /// and worker key, so an agent certificate one signs the other's fleet
    /// port accepts.
    #[test]
    fn a_second_controller_on_the_store_takes_the_first_ones_keys() {
        let shared_store = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = load(&mut store(shared_store.path()), &SecretBox::open(a.path()).unwrap(), a.path(), 1).unwrap();
        std::fs::copy(a.path().join("secret.key"), b.path().join("secret.key")).unwrap();
        let second = load(&mut store(shared_store.path()), &SecretBox::open(b.path()).unwrap(), b.path(), 2).unwrap();
        assert_eq!(first.ca.fingerprint(), second.ca.fingerprint());
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.worker_key, second.worker_key);
        for file in ["ca/ca.crt", "ca/ca.key", "admin.token", "worker.key"] {
            assert_eq!(std::fs::read(a.path().join(file)).unwrap(), std::fs::read(b.path().join(file)).unwrap(), "{file}");
        }
        // What one signs names the other's CA as its issuer (the same
        // certificate and key: fingerprints above).
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap().serialize_request(&key).unwrap();
        let (cert_pem, _) = first.ca.sign_agent(&csr.pem().unwrap(), "agent-1", std::time::Duration::from_secs(60)).unwrap();
        let der = pem_der(&cert_pem);
        let ca_der = pem_der(second.ca.cert_pem());
        let issuer = x509_parser::parse_x509_certificate(&der).unwrap().1.issuer().to_string();
        assert_eq!(issuer, x509_parser::parse_x509_certificate(&ca_der).unwrap().1.subject().to_string());
    }

    /// An agent enrolled through the first controller (its certificate
    /// signed by the first one's CA) completes a real mutual-TLS QUIC
    /// handshake with the second controller's fleet configuration, and a
    /// certificate of another cluster's CA does not.
    #[tokio::test]
    async fn an_agent_certificate_from_one_controller_is_accepted_by_the_other() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared_store = tempfile::tempdir().unwrap();
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = load(&mut store(shared_store.path()), &SecretBox::open(a.path()).unwrap(), a.path(), 1).unwrap();
        std::fs::copy(a.path().join("secret.key"), b.path().join("secret.key")).unwrap();
        let second = load(&mut store(shared_store.path()), &SecretBox::open(b.path()).unwrap(), b.path(), 2).unwrap();
        let stranger = Ca::load_or_create(&c.path().join("ca")).unwrap();
        let server = quinn::Endpoint::server(
            second.ca.server_config(crate::ca::Revocations::default()).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        let _stream = connection.accept_bi().await;
                        connection.closed().await;
                    }
                });
            }
        });
        let handshake = |issuer: &Ca| {
            let key = rcgen::KeyPair::generate().unwrap();
            let csr = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap().serialize_request(&key).unwrap();
            let (cert_pem, _) =
                issuer.sign_agent(&csr.pem().unwrap(), "agent-1", std::time::Duration::from_secs(600)).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from(pem_der(second.ca.cert_pem()))).unwrap();
            let chain = vec![rustls::pki_types::CertificateDer::from(pem_der(&cert_pem))];
            let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            let mut tls =
                rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key).unwrap();
            tls.alpn_protocols = vec![sluice_protocol::ALPN_FLEET.to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
            let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
            let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            async move {
                let connection = client.connect_with(config, addr, sluice_protocol::CONTROLLER_SERVER_NAME).unwrap().await?;
                // TLS 1.3: the server judges the client certificate after
                // the client's side is done; a stream shows its verdict.
                let (mut send, _recv) = connection.open_bi().await?;
                let _ = send.write_all(b"x").await;
                match tokio::time::timeout(std::time::Duration::from_millis(500), connection.closed()).await {
                    Ok(reason) => Err(reason),
                    Err(_) => Ok(()),
                }
            }
        };
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), handshake(&first.ca)).await.unwrap();
        assert!(accepted.is_ok(), "{accepted:?}");
        let refused = tokio::time::timeout(std::time::Duration::from_secs(10), handshake(&stranger)).await.unwrap();
        assert!(refused.is_err(), "another cluster's agent is refused");
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    /// A store whose keys were sealed by another secret.key is refused,
    /// saying what to do, and nothing is written into the data dir.
    #[test]
    fn keys_sealed_by_another_secret_key_are_refused_clearly() {
        let shared_store = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        load(&mut store(shared_store.path()), &SecretBox::open(a.path()).unwrap(), a.path(), 1).unwrap();
        let other = SecretBox::open(b.path()).unwrap();
        let e = load(&mut store(shared_store.path()), &other, b.path(), 2).err().expect("refused");
        let text = format!("{e:#}");
        assert!(text.contains("does not open with this controller's secret.key"), "{text}");
        assert!(text.contains("same secret.key"), "{text}");
        assert!(!b.path().join("ca/ca.key").exists() && !b.path().join("admin.token").exists());
        // A row moved under another name does not open either.
        let mut s = store(shared_store.path());
        let sealed_token = s.cluster_key(ADMIN_TOKEN).unwrap().unwrap();
        let raw = rusqlite::Connection::open(shared_store.path().join("sluice.db")).unwrap();
        raw.execute("UPDATE cluster_keys SET value = ?1 WHERE name = 'worker-key'", [sealed_token]).unwrap();
        let again = tempfile::tempdir().unwrap();
        std::fs::copy(a.path().join("secret.key"), again.path().join("secret.key")).unwrap();
        let e = load(&mut s, &SecretBox::open(again.path()).unwrap(), again.path(), 3).err().expect("refused");
        assert!(format!("{e:#}").contains("worker key"), "{e:#}");
    }

    /// A data dir of a release that kept the keys only as files (or an
    /// existing single controller): its CA, token and worker key go into
    /// the store unchanged, so its enrolled agents are still accepted.
    #[test]
    fn an_upgraded_data_dir_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let old_ca = Ca::load_or_create(&dir.path().join("ca")).unwrap();
        std::fs::write(dir.path().join("admin.token"), "sat_old\n").unwrap();
        std::fs::write(dir.path().join("worker.key"), [7u8; 32]).unwrap();
        let secrets = SecretBox::open(dir.path()).unwrap();
        let keys = load(&mut store(dir.path()), &secrets, dir.path(), 1).unwrap();
        assert_eq!(keys.ca.fingerprint(), old_ca.fingerprint());
        assert_eq!(keys.admin_token, "sat_old");
        assert_eq!(keys.worker_key, [7u8; 32]);
        assert!(store(dir.path()).cluster_key(CA).unwrap().is_some(), "stored");
        // Restarted: the same, from the store.
        let again = load(&mut store(dir.path()), &secrets, dir.path(), 2).unwrap();
        assert_eq!(again.ca.fingerprint(), old_ca.fingerprint());
        // A data dir of another cluster is refused rather than overwritten.
        std::fs::remove_dir_all(dir.path().join("ca")).unwrap();
        Ca::load_or_create(&dir.path().join("ca")).unwrap();
        let e = load(&mut store(dir.path()), &secrets, dir.path(), 3).err().expect("refused");
        assert!(format!("{e:#}").contains("differs from the cluster's"), "{e:#}");
    }
}
