//! The access keys the AWS-compatible endpoints verify signatures with:
//! key id to secret and owner, shared by the API (reads) and the driver
//! (writes when keys are made or revoked), as [`crate::auth::Tokens`] is
//! for bearer tokens. Only unrevoked keys of existing users are in it, so
//! a revoked key fails from the next request on.

use crate::auth::Caller;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Prefix of Sluice's access key ids (AWS's own start with `AKIA`/`ASIA`).
pub const KEY_ID_PREFIX: &str = "AKSL";

#[derive(Clone, Default)]
pub struct AccessKeys(Arc<RwLock<HashMap<String, (String, Caller)>>>);

impl AccessKeys {
    /// The secret and owner of a key.
    pub fn lookup(&self, id: &str) -> Option<(String, Caller)> {
        self.0.read().expect("access key table lock").get(id).cloned()
    }

    pub fn insert(&self, id: String, secret: String, caller: Caller) {
        self.0.write().expect("access key table lock").insert(id, (secret, caller));
    }

    pub fn remove(&self, id: &str) {
        self.0.write().expect("access key table lock").remove(id);
    }
}

/// A new key id: the prefix and 16 characters of base32 (as AWS's are 20).
pub fn new_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let random: [u8; 16] = rand::random();
    let tail: String = random.iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
    format!("{KEY_ID_PREFIX}{tail}")
}

/// A new secret: 40 characters of base64 (30 random bytes), as AWS's.
pub fn new_secret() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 30]>())
}

/// The name a key's secret is sealed under: a sealed secret moved to
/// another key id does not open.
pub fn seal_name(id: &str) -> String {
    format!("access-key:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn keys_look_like_aws_keys_and_resolve_until_removed() {
        let id = new_key_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with(KEY_ID_PREFIX) && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(new_secret().len(), 40);
        assert_ne!(new_secret(), new_secret());
        let keys = AccessKeys::default();
        keys.insert(id.clone(), "s".into(), Caller::new("ann", Role::Operator));
        assert_eq!(keys.lookup(&id).unwrap().1.user, "ann");
        keys.remove(&id);
        assert!(keys.lookup(&id).is_none());
    }
}
