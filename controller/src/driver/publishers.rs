//! Trusted plugin publishers, in the driver: the keys `sluice plugin push`
//! checks signatures against, and the check itself. The signature of a
//! pushed component is kept by its digest and travels to agents with every
//! job and poll of the plugin ([`PluginEntry::plugin_ref`](super::catalog::PluginEntry::plugin_ref)); agents verify
//! it again with keys of their own.

use super::Driver;
use super::command::ApiError;
use super::now_ms;
use crate::store::{Change, PluginSignatureRecord, PublisherRecord};
use crate::views;
use serde_json::{Value, json};
use sluice_runtime::signature::{PublicKey, Signature};
use tracing::info;

/// Publisher names: as user names, letters, digits, `.`, `_`, `-`, `@`.
fn check_publisher_name(name: &str) -> Result<(), ApiError> {
    crate::auth::check_user_name(name)
        .map_err(|m| ApiError::Invalid { message: m.replace("user name", "publisher name"), diagnostics: vec![] })
}

impl Driver {
    /// The trusted publishers' keys, by name.
    fn trusted_keys(&self) -> Result<Vec<(String, PublicKey)>, ApiError> {
        self.store
            .publishers()?
            .into_iter()
            .map(|p| {
                let key = PublicKey::parse(&p.public_key)
                    .map_err(|e| ApiError::Internal(format!("the store holds a bad key of publisher {}: {e}", p.name)))?;
                Ok((p.name, key))
            })
            .collect()
    }

    pub(super) fn add_publisher(&mut self, name: &str, public_key: &str, by: &str) -> Result<Value, ApiError> {
        check_publisher_name(name)?;
        let key = PublicKey::parse(public_key)
            .map_err(|e| ApiError::Invalid { message: format!("publisher {name}: {e}"), diagnostics: vec![] })?;
        let key_id = key.key_id();
        for existing in self.store.publishers()? {
            if existing.name == name {
                return Err(ApiError::Conflict(format!("publisher {name} already exists (key {})", existing.key_id)));
            }
            if existing.key_id == key_id {
                return Err(ApiError::Conflict(format!("key {key_id} is already trusted as publisher {}", existing.name)));
            }
        }
        let record = PublisherRecord {
            name: name.to_string(),
            public_key: key.to_line(),
            key_id: key_id.clone(),
            added_at: now_ms(),
            added_by: by.to_string(),
        };
        self.commit(vec![Change::Publisher(record.clone())])?;
        info!(publisher = %name, %key_id, by, "publisher trusted");
        Ok(publisher_view(&record))
    }

    pub(super) fn list_publishers(&self) -> Result<Value, ApiError> {
        let publishers: Vec<Value> = self.store.publishers()?.iter().map(publisher_view).collect();
        Ok(json!({ "publishers": publishers, "requireSignedPlugins": self.require_signed_plugins }))
    }

    /// Plugins already registered keep the signer recorded at their push:
    /// the controller checked it then, and agents check with their own keys.
    pub(super) fn remove_publisher(&mut self, name: &str) -> Result<Value, ApiError> {
        if !self.store.publishers()?.iter().any(|p| p.name == name) {
            return Err(ApiError::NotFound(format!("publisher {name} is not trusted")));
        }
        self.commit(vec![Change::DeletePublisher(name.to_string())])?;
        info!(publisher = %name, "publisher removed");
        Ok(json!({ "name": name, "removed": true }))
    }

    /// Checks the signature pushed with a component: `Some` with the record
    /// to keep when it verifies with a trusted publisher's key, `None` when
    /// there is none and this controller accepts unsigned plugins. A
    /// signature that does not verify is refused whatever the setting.
    pub(super) fn verify_push(
        &self,
        key: &str,
        digest: &str,
        signature: Option<&str>,
    ) -> Result<Option<PluginSignatureRecord>, ApiError> {
        let invalid = |message: String| ApiError::Invalid { message, diagnostics: vec![] };
        let Some(text) = signature else {
            if !self.require_signed_plugins {
                return Ok(None);
            }
            let hint = if self.store.publishers()?.is_empty() {
                "; it trusts no publisher yet (sluice publisher add)"
            } else {
                ""
            };
            return Err(invalid(format!(
                "plugin {key} is not signed: this controller accepts only plugins signed by a trusted publisher \
                 (sluice plugin sign){hint}"
            )));
        };
        let parsed = Signature::parse(text).map_err(|e| invalid(format!("plugin {key}: {e}")))?;
        let trusted = self.trusted_keys()?;
        let publisher = parsed.verify(digest, &trusted).map_err(|e| invalid(format!("plugin {key}: {e}")))?;
        Ok(Some(PluginSignatureRecord {
            digest: digest.to_string(),
            publisher: publisher.to_string(),
            key_id: parsed.key_id().to_string(),
            signature: text.to_string(),
            signed_at: now_ms(),
        }))
    }
}

fn publisher_view(p: &PublisherRecord) -> Value {
    json!({
        "name": p.name,
        "keyId": p.key_id,
        "publicKey": p.public_key,
        "added": views::time(p.added_at),
        "addedBy": p.added_by,
    })
}
