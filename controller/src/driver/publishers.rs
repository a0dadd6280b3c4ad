//! Trusted plugin publishers, in the driver: the keys `sluice plugin push`
//! checks signatures against, and the check itself. The signature of a
//! pushed component is kept by its digest and travels to agents with every
//! job and poll of the plugin ([`PluginEntry::plugin_ref`](super::catalog::PluginEntry::plugin_ref)); agents verify
//! it again with keys of their own.

use super::Driver;
use crate::ops::{
    AddPublisher, Context, Handle, ListPublishers, ListPublishersOutput, OpError, PublisherView, RemovePublisher,
    RemovePublisherOutput,
};
use crate::store::{Change, PluginSignatureRecord, PublisherRecord};
use crate::views;
use sluice_runtime::signature::{PublicKey, Signature};
use tracing::info;

/// Publisher names: as user names, letters, digits, `.`, `_`, `-`, `@`.
fn check_publisher_name(name: &str) -> Result<(), OpError> {
    crate::auth::check_user_name(name).map_err(|m| OpError::invalid(m.replace("user name", "publisher name")))
}

impl Driver {
    /// The trusted publishers' keys, by name.
    fn trusted_keys(&self) -> Result<Vec<(String, PublicKey)>, OpError> {
        self.store
            .publishers()?
            .into_iter()
            .map(|p| {
                let key = PublicKey::parse(&p.public_key)
                    .map_err(|e| OpError::Internal(format!("the store holds a bad key of publisher {}: {e}", p.name)))?;
                Ok((p.name, key))
            })
            .collect()
    }
}

/// Trusts a publisher's key, as the caller.
impl Handle<AddPublisher> for Driver {
    fn handle(&mut self, op: AddPublisher, ctx: &Context) -> Result<PublisherView, OpError> {
        let now = ctx.now;
        let (name, by) = (op.name.as_str(), ctx.caller.user.as_str());
        check_publisher_name(name)?;
        let key = PublicKey::parse(&op.public_key).map_err(|e| OpError::invalid(format!("publisher {name}: {e}")))?;
        let key_id = key.key_id();
        for existing in self.store.publishers()? {
            if existing.name == name {
                return Err(OpError::Conflict(format!("publisher {name} already exists (key {})", existing.key_id)));
            }
            if existing.key_id == key_id {
                return Err(OpError::Conflict(format!("key {key_id} is already trusted as publisher {}", existing.name)));
            }
        }
        let record = PublisherRecord {
            name: name.to_string(),
            public_key: key.to_line(),
            key_id: key_id.clone(),
            added_at: now,
            added_by: by.to_string(),
        };
        self.commit(now, vec![Change::Publisher(record.clone())])?;
        info!(publisher = %name, %key_id, by, "publisher trusted");
        Ok(publisher_view(&record))
    }
}

impl Handle<ListPublishers> for Driver {
    fn handle(&mut self, _: ListPublishers, _: &Context) -> Result<ListPublishersOutput, OpError> {
        let publishers = self.store.publishers()?.iter().map(publisher_view).collect();
        Ok(ListPublishersOutput { publishers, require_signed_plugins: self.require_signed_plugins })
    }
}

/// Plugins already registered keep the signer recorded at their push: the
/// controller checked it then, and agents check with their own keys.
impl Handle<RemovePublisher> for Driver {
    fn handle(&mut self, op: RemovePublisher, ctx: &Context) -> Result<RemovePublisherOutput, OpError> {
        let now = ctx.now;
        let name = op.name.as_str();
        if !self.store.publishers()?.iter().any(|p| p.name == name) {
            return Err(OpError::NotFound(format!("publisher {name} is not trusted")));
        }
        self.commit(now, vec![Change::DeletePublisher(name.to_string())])?;
        info!(publisher = %name, "publisher removed");
        Ok(RemovePublisherOutput { name: op.name.clone(), removed: true })
    }
}

impl Driver {
    /// Checks the signature pushed with a component: `Some` with the record
    /// to keep when it verifies with a trusted publisher's key, `None` when
    /// there is none and this controller accepts unsigned plugins. A
    /// signature that does not verify is refused whatever the setting.
    pub(super) fn verify_push(
        &self,
        now: u64,
        key: &str,
        digest: &str,
        signature: Option<&str>,
    ) -> Result<Option<PluginSignatureRecord>, OpError> {
        let invalid = OpError::invalid;
        let Some(text) = signature else {
            if !self.require_signed_plugins {
                return Ok(None);
            }
            let hint =
                if self.store.publishers()?.is_empty() { "; it trusts no publisher yet (sluice publisher add)" } else { "" };
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
            signed_at: now,
        }))
    }
}

fn publisher_view(p: &PublisherRecord) -> PublisherView {
    PublisherView {
        name: p.name.clone(),
        key_id: p.key_id.clone(),
        public_key: p.public_key.clone(),
        added: views::time(p.added_at),
        added_by: p.added_by.clone(),
    }
}
