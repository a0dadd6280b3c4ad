//! Access keys for the AWS-compatible API, in the driver: made and revoked
//! here, persisted sealed, and mirrored into the API's key table so that a
//! new or revoked key counts from the next request.

use super::Driver;
use crate::auth::{Caller, Role, Via};
use crate::aws::keys;
use crate::ops::{
    AccessKeyView, Context, CreateAccessKey, CreateAccessKeyOutput, Handle, ListAccessKeys, ListAccessKeysOutput, OpError,
    RevokeAccessKey, RevokeAccessKeyOutput,
};
use crate::store::{AccessKeyRecord, Change};
use crate::views;
use anyhow::{Context as _, Result};
use base64::Engine as _;
use std::collections::HashMap;
use tracing::{info, warn};

impl Driver {
    /// Fills the API's key table at start: every unrevoked key of a user
    /// that exists, opened with the controller's secret key.
    pub(super) fn recover_access_keys(&mut self) -> Result<()> {
        let roles: HashMap<String, Role> =
            self.store.users()?.into_iter().map(|u| (u.name, super::users::token_role(&u.role))).collect();
        for key in self.store.access_keys()?.into_iter().filter(|k| !k.revoked) {
            let Some(role) = roles.get(&key.user) else { continue };
            match self.open_access_key(&key) {
                Ok(secret) => {
                    let caller = Caller::new(key.user, *role).with_via(Via::AccessKey(key.id.clone()));
                    self.access_keys.insert(key.id, secret, caller)
                }
                // One unreadable key must not stop the controller; it
                // just does not sign anything.
                Err(e) => warn!(key = %key.id, "access key is unusable: {e:#}"),
            }
        }
        Ok(())
    }

    fn open_access_key(&self, key: &AccessKeyRecord) -> Result<String> {
        let sealed = base64::engine::general_purpose::STANDARD.decode(&key.sealed_secret).context("sealed secret")?;
        let secret = self.secret_box.open_value(&keys::seal_name(&key.id), &sealed)?;
        String::from_utf8(secret).context("secret is not UTF-8")
    }
}

/// A new key for a user; the secret is shown once and kept sealed.
impl Handle<CreateAccessKey> for Driver {
    fn handle(&mut self, op: CreateAccessKey, ctx: &Context) -> Result<CreateAccessKeyOutput, OpError> {
        let user = op.user.as_str();
        // The built-in admin signs in with its token; a key belongs to a named user.
        let record = self.store.users()?.into_iter().find(|u| u.name == user).ok_or_else(|| {
            OpError::NotFound(format!("user \"{user}\" does not exist; create it with `sluice user create {user}`"))
        })?;
        let id = keys::new_key_id();
        let secret = keys::new_secret();
        let sealed = self.secret_box.seal(&keys::seal_name(&id), secret.as_bytes())?;
        let key = AccessKeyRecord {
            id: id.clone(),
            user: user.to_string(),
            sealed_secret: base64::engine::general_purpose::STANDARD.encode(sealed),
            created_at: ctx.now,
            revoked: false,
        };
        self.commit(ctx.now, vec![Change::AccessKey(key)])?;
        let role = super::users::token_role(&record.role);
        self.access_keys.insert(id.clone(), secret.clone(), Caller::new(user, role).with_via(Via::AccessKey(id.clone())));
        info!(%user, key = %id, "access key created");
        Ok(CreateAccessKeyOutput { access_key_id: id, secret_access_key: secret, user: op.user })
    }
}

impl Handle<ListAccessKeys> for Driver {
    fn handle(&mut self, _: ListAccessKeys, _: &Context) -> Result<ListAccessKeysOutput, OpError> {
        let access_keys = self
            .store
            .access_keys()?
            .into_iter()
            .map(|k| AccessKeyView {
                access_key_id: k.id,
                user: k.user,
                created: views::time(k.created_at),
                revoked: k.revoked,
            })
            .collect();
        Ok(ListAccessKeysOutput { access_keys })
    }
}

impl Handle<RevokeAccessKey> for Driver {
    fn handle(&mut self, op: RevokeAccessKey, ctx: &Context) -> Result<RevokeAccessKeyOutput, OpError> {
        let id = op.id.as_str();
        let mut key = self
            .store
            .access_keys()?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| OpError::NotFound(format!("access key {id} does not exist")))?;
        key.revoked = true;
        self.commit(ctx.now, vec![Change::AccessKey(key.clone())])?;
        self.access_keys.remove(id);
        info!(key = %id, user = %key.user, "access key revoked");
        Ok(RevokeAccessKeyOutput { access_key_id: op.id, revoked: true })
    }
}
