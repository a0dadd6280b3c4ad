//! Users and API tokens, in the driver: made and revoked here, persisted,
//! and mirrored into the API's token table so that a new or revoked token
//! counts from the next request.

use super::Driver;
use super::command::ApiError;
use super::now_ms;
use crate::auth::{self, ADMIN_USER, Caller, Role};
use crate::store::{ApiTokenRecord, Change, UserRecord};
use crate::views;
use anyhow::Result;
use serde_json::{Value, json};
use std::collections::HashMap;
use tracing::info;

impl Driver {
    /// Fills the API's token table at start: the admin token and every
    /// unrevoked user token.
    pub(super) fn recover_users(&mut self, admin_token: &str) -> Result<()> {
        self.tokens.insert_hash(auth::hash(admin_token), Caller { user: ADMIN_USER.into(), role: Role::Admin });
        let roles: HashMap<String, Role> = self
            .store
            .users()?
            .into_iter()
            .map(|u| (u.name, Role::parse(&u.role).unwrap_or(Role::Operator)))
            .collect();
        for token in self.store.api_tokens()?.into_iter().filter(|t| !t.revoked) {
            if let Some(role) = roles.get(&token.user) {
                self.tokens.insert_hash(token.secret_hash, Caller { user: token.user, role: *role });
            }
        }
        Ok(())
    }

    pub(super) fn create_user(&mut self, name: &str, role: Role) -> Result<Value, ApiError> {
        auth::check_user_name(name).map_err(|m| ApiError::Invalid { message: m, diagnostics: vec![] })?;
        if name == ADMIN_USER || self.store.users()?.iter().any(|u| u.name == name) {
            return Err(ApiError::Conflict(format!("user \"{name}\" already exists")));
        }
        let record = UserRecord { name: name.to_string(), role: role.as_str().into(), created_at: now_ms() };
        self.commit(vec![Change::User(record)])?;
        info!(user = %name, role = role.as_str(), "user created");
        Ok(json!({ "name": name, "role": role.as_str() }))
    }

    pub(super) fn list_users(&self) -> Result<Value, ApiError> {
        let mut users = vec![json!({ "name": ADMIN_USER, "role": "admin", "builtin": true })];
        users.extend(self.store.users()?.into_iter().map(|u| {
            json!({ "name": u.name, "role": u.role, "created": views::time(u.created_at), "builtin": false })
        }));
        Ok(json!({ "users": users }))
    }

    /// A new token for a user; the secret is shown once, only its hash kept.
    pub(super) fn create_token(&mut self, user: &str) -> Result<Value, ApiError> {
        let record = self
            .store
            .users()?
            .into_iter()
            .find(|u| u.name == user)
            .ok_or_else(|| ApiError::NotFound(format!("user \"{user}\" does not exist; create it with `sluice user create {user}`")))?;
        let secret = format!("sut_{}", hex::encode(rand::random::<[u8; 24]>()));
        let token = ApiTokenRecord {
            id: format!("tok-{}", hex::encode(rand::random::<[u8; 6]>())),
            user: user.to_string(),
            secret_hash: auth::hash(&secret),
            created_at: now_ms(),
            revoked: false,
        };
        self.commit(vec![Change::ApiToken(token.clone())])?;
        let role = Role::parse(&record.role).unwrap_or(Role::Operator);
        self.tokens.insert_hash(token.secret_hash.clone(), Caller { user: user.to_string(), role });
        info!(%user, token = %token.id, "API token created");
        Ok(json!({ "id": token.id, "user": user, "token": secret }))
    }

    pub(super) fn list_tokens(&self) -> Result<Value, ApiError> {
        let tokens: Vec<Value> = self
            .store
            .api_tokens()?
            .into_iter()
            .map(|t| json!({ "id": t.id, "user": t.user, "created": views::time(t.created_at), "revoked": t.revoked }))
            .collect();
        Ok(json!({ "tokens": tokens }))
    }

    pub(super) fn revoke_token(&mut self, id: &str) -> Result<Value, ApiError> {
        let mut token = self
            .store
            .api_tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("API token {id} does not exist")))?;
        token.revoked = true;
        self.commit(vec![Change::ApiToken(token.clone())])?;
        self.tokens.remove_hash(&token.secret_hash);
        info!(token = %id, user = %token.user, "API token revoked");
        Ok(json!({ "id": id, "revoked": true }))
    }
}
