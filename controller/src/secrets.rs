//! Secrets at rest: values are sealed with ChaCha20-Poly1305 under a key
//! kept beside the store (`DATA/secret.key`, mode 0600), so that a copy of
//! the database alone reveals no secret. Each value gets a fresh random
//! nonce and is bound to its name (associated data), so a sealed value
//! moved to another name does not open.
//!
//! Pipelines' secrets (`sluice secret set`) and webhook secrets are sealed
//! the same way. Values leave the controller only inside a job or poll for
//! an action that was granted them, over the agents' mutual-TLS connection.

use anyhow::{Context as _, Result};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Longest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Secret names: letters, digits, `_`, `-` and `.`, up to 128 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("secret name {name:?} must be 1 to 128 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("secret name {name:?} may contain only A-Z a-z 0-9 _ - ."));
    }
    Ok(())
}

pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl SecretBox {
    /// Loads the key of a data dir, creating it on first start.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("secret.key");
        let rng = SystemRandom::new();
        let bytes = if path.exists() {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            if bytes.len() != 32 {
                anyhow::bail!(
                    "{} holds {} bytes, not a 32-byte key; restore it from a backup (secrets sealed under it cannot be read without it)",
                    path.display(),
                    bytes.len()
                );
            }
            bytes
        } else {
            let mut bytes = vec![0u8; 32];
            rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("no system randomness for the secret key"))?;
            crate::ca::write_private(&path, &bytes)?;
            bytes
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| anyhow::anyhow!("unusable secret key"))?;
        Ok(Self { key: LessSafeKey::new(key), rng })
    }

    /// `nonce || ciphertext || tag`, bound to `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| anyhow::anyhow!("no system randomness for a nonce"))?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut sealed)
            .map_err(|_| anyhow::anyhow!("sealing secret {name:?} failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            anyhow::bail!("secret {name:?} is corrupt in the store");
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| anyhow::anyhow!("secret {name:?} does not open with this controller's secret.key"))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::open(dir.path()).unwrap();
        let sealed = sb.seal("TOKEN", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not stored in clear");
        assert_eq!(sb.open_value("TOKEN", &sealed).unwrap(), b"hunter2");
        assert!(sb.open_value("OTHER", &sealed).is_err(), "bound to its name");
        // Same key after a restart; another data dir's key cannot open it.
        assert_eq!(SecretBox::open(dir.path()).unwrap().open_value("TOKEN", &sealed).unwrap(), b"hunter2");
        let other = tempfile::tempdir().unwrap();
        assert!(SecretBox::open(other.path()).unwrap().open_value("TOKEN", &sealed).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sb.seal("TOKEN", b"hunter2").unwrap(), sealed);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("DEPLOY_TOKEN").is_ok());
        assert!(check_name("git.creds-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("../x").is_err());
    }
}
