//! Users and API tokens, in the driver: made and revoked here, persisted,
//! and mirrored into the API's token table so that a new or revoked token
//! counts from the next request.

use super::Driver;
use super::access::Membership;
use crate::auth::{self, ADMIN_USER, Caller, Role};
use crate::ops::{
    ApiTokenView, Context, CreateApiToken, CreateApiTokenOutput, CreateUser, CreateUserOutput, DeleteUser, DeleteUserOutput,
    Handle, ListApiTokens, ListApiTokensOutput, ListUsers, ListUsersOutput, OpError, RevokeApiToken, RevokeApiTokenOutput,
    SetUserRole, UserView,
};
use crate::policy::{UserEntry, roles};
use crate::store::{AccessKeyRecord, ApiTokenRecord, Change, UserRecord};
use crate::views;
use anyhow::Result;
use std::collections::HashMap;
use tracing::info;

impl Driver {
    /// Fills the API's token table at start: the admin token and every
    /// unrevoked user token.
    pub(super) fn recover_users(&mut self, admin_token: &str) -> Result<()> {
        self.tokens.insert_hash(auth::hash(admin_token), Caller::new(ADMIN_USER, Role::Admin));
        let roles: HashMap<String, Role> = self.store.users()?.into_iter().map(|u| (u.name, token_role(&u.role))).collect();
        for token in self.store.api_tokens()?.into_iter().filter(|t| !t.revoked) {
            if let Some(role) = roles.get(&token.user) {
                self.tokens.insert_hash(token.secret_hash, Caller::new(token.user, *role));
            }
        }
        Ok(())
    }
}

/// The role a token's caller carries: what the policy of its user decides
/// (`crate::policy`) is looked up per call; this only marks admins.
pub(super) fn token_role(role: &str) -> Role {
    if role == roles::ADMIN { Role::Admin } else { Role::Operator }
}

impl Handle<CreateUser> for Driver {
    fn handle(&mut self, op: CreateUser, ctx: &Context) -> Result<CreateUserOutput, OpError> {
        let now = ctx.now;
        let name = op.name.as_str();
        let role = op.role.as_deref().unwrap_or(roles::OPERATOR);
        self.check_role_exists(role)?;
        auth::check_user_name(name).map_err(OpError::invalid)?;
        if name == ADMIN_USER || self.store.users()?.iter().any(|u| u.name == name) {
            return Err(OpError::Conflict(format!("user \"{name}\" already exists")));
        }
        let record = UserRecord { name: name.to_string(), role: role.into(), created_at: now };
        let mut changes = vec![Change::User(record)];
        if let Some(team) = &op.team {
            changes.push(self.team_with_member(team, name, Membership::Join)?);
        }
        self.commit(now, changes)?;
        self.directory.update(|d| {
            d.users.insert(name.to_string(), UserEntry { role: role.to_string() });
            if let Some(team) = &op.team {
                d.teams.entry(team.clone()).or_default().members.insert(name.to_string());
            }
        });
        info!(user = %name, %role, team = ?op.team, "user created");
        Ok(CreateUserOutput { name: op.name.clone(), role: role.to_string() })
    }
}

impl Handle<ListUsers> for Driver {
    fn handle(&mut self, _: ListUsers, _: &Context) -> Result<ListUsersOutput, OpError> {
        let directory = self.directory.snapshot();
        let builtin = UserView {
            name: ADMIN_USER.into(),
            role: "admin".into(),
            created: None,
            builtin: true,
            teams: directory.teams_of(ADMIN_USER),
        };
        let mut users = vec![builtin];
        users.extend(self.store.users()?.into_iter().map(|u| UserView {
            role: u.role,
            created: Some(views::time(u.created_at)),
            builtin: false,
            teams: directory.teams_of(&u.name),
            name: u.name,
        }));
        Ok(ListUsersOutput { users })
    }
}

/// A new token for a user; the secret is shown once, only its hash kept.
impl Handle<CreateApiToken> for Driver {
    fn handle(&mut self, op: CreateApiToken, ctx: &Context) -> Result<CreateApiTokenOutput, OpError> {
        let now = ctx.now;
        let user = op.user.as_str();
        let record = self.store.users()?.into_iter().find(|u| u.name == user).ok_or_else(|| {
            OpError::NotFound(format!("user \"{user}\" does not exist; create it with `sluice user create {user}`"))
        })?;
        let secret = format!("sut_{}", hex::encode(rand::random::<[u8; 24]>()));
        let token = ApiTokenRecord {
            id: format!("tok-{}", hex::encode(rand::random::<[u8; 6]>())),
            user: user.to_string(),
            secret_hash: auth::hash(&secret),
            created_at: now,
            revoked: false,
        };
        self.commit(now, vec![Change::ApiToken(token.clone())])?;
        let role = token_role(&record.role);
        self.tokens.insert_hash(token.secret_hash.clone(), Caller::new(user, role));
        info!(%user, token = %token.id, "API token created");
        Ok(CreateApiTokenOutput { id: token.id, user: op.user.clone(), token: secret })
    }
}

impl Handle<ListApiTokens> for Driver {
    fn handle(&mut self, _: ListApiTokens, _: &Context) -> Result<ListApiTokensOutput, OpError> {
        let tokens = self
            .store
            .api_tokens()?
            .into_iter()
            .map(|t| ApiTokenView { id: t.id, user: t.user, created: views::time(t.created_at), revoked: t.revoked })
            .collect();
        Ok(ListApiTokensOutput { tokens })
    }
}

impl Handle<RevokeApiToken> for Driver {
    fn handle(&mut self, op: RevokeApiToken, ctx: &Context) -> Result<RevokeApiTokenOutput, OpError> {
        let now = ctx.now;
        let id = op.id.as_str();
        let mut token = self
            .store
            .api_tokens()?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| OpError::NotFound(format!("API token {id} does not exist")))?;
        token.revoked = true;
        self.commit(now, vec![Change::ApiToken(token.clone())])?;
        self.tokens.remove_hash(&token.secret_hash);
        info!(token = %id, user = %token.user, "API token revoked");
        Ok(RevokeApiTokenOutput { id: op.id.clone(), revoked: true })
    }
}

impl Driver {
    fn named_user(&self, name: &str) -> Result<UserRecord, OpError> {
        if name == ADMIN_USER {
            return Err(OpError::invalid(format!("\"{ADMIN_USER}\" is the built-in admin (DATA/admin.token)")));
        }
        self.store
            .users()?
            .into_iter()
            .find(|u| u.name == name)
            .ok_or_else(|| OpError::NotFound(format!("user \"{name}\" does not exist")))
    }

    /// Points the user's live tokens and access keys at its role's marker.
    fn refresh_credentials(&self, user: &str, role: Role) -> Result<(), OpError> {
        for token in self.store.api_tokens()?.into_iter().filter(|t| t.user == user && !t.revoked) {
            self.tokens.insert_hash(token.secret_hash, Caller::new(user, role));
        }
        for key in self.store.access_keys()?.into_iter().filter(|k| k.user == user && !k.revoked) {
            if let Some((secret, caller)) = self.access_keys.lookup(&key.id) {
                self.access_keys.insert(key.id, secret, Caller { role, ..caller });
            }
        }
        Ok(())
    }
}

/// Deleting a user revokes its tokens and access keys and ends its
/// memberships in the same commit; its calls fail from the next one.
impl Handle<DeleteUser> for Driver {
    fn handle(&mut self, op: DeleteUser, ctx: &Context) -> Result<DeleteUserOutput, OpError> {
        let user = self.named_user(&op.name)?;
        let mut changes = vec![Change::DeleteUser(user.name.clone())];
        let tokens: Vec<ApiTokenRecord> =
            self.store.api_tokens()?.into_iter().filter(|t| t.user == user.name && !t.revoked).collect();
        changes.extend(tokens.iter().map(|t| Change::ApiToken(ApiTokenRecord { revoked: true, ..t.clone() })));
        let keys: Vec<AccessKeyRecord> =
            self.store.access_keys()?.into_iter().filter(|k| k.user == user.name && !k.revoked).collect();
        changes.extend(keys.iter().map(|k| Change::AccessKey(AccessKeyRecord { revoked: true, ..k.clone() })));
        for team in self.directory.teams_of(&user.name) {
            changes.push(self.team_with_member(&team, &user.name, Membership::Leave)?);
        }
        self.commit(ctx.now, changes)?;
        for token in &tokens {
            self.tokens.remove_hash(&token.secret_hash);
        }
        for key in &keys {
            self.access_keys.remove(&key.id);
        }
        self.directory.update(|d| {
            d.users.remove(&user.name);
            for team in d.teams.values_mut() {
                team.members.remove(&user.name);
            }
        });
        info!(user = %user.name, tokens = tokens.len(), access_keys = keys.len(), by = %ctx.caller.user, "user deleted");
        Ok(DeleteUserOutput { name: op.name, deleted: true })
    }
}

/// A new role for a user: every interface decides on it from the next call.
impl Handle<SetUserRole> for Driver {
    fn handle(&mut self, op: SetUserRole, ctx: &Context) -> Result<UserView, OpError> {
        let mut user = self.named_user(&op.name)?;
        self.check_role_exists(&op.role)?;
        user.role = op.role.clone();
        self.commit(ctx.now, vec![Change::User(user.clone())])?;
        self.directory.update(|d| {
            d.users.insert(user.name.clone(), UserEntry { role: op.role.clone() });
        });
        self.refresh_credentials(&user.name, token_role(&op.role))?;
        info!(user = %user.name, role = %op.role, by = %ctx.caller.user, "user role changed");
        let teams = self.directory.teams_of(&user.name);
        Ok(UserView { name: user.name, role: user.role, created: Some(views::time(user.created_at)), builtin: false, teams })
    }
}
