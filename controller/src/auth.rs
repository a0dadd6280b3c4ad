//! Who calls the admin API: users, their tokens and roles.
//!
//! Every request carries a bearer token; only sha256 hashes of tokens are
//! kept. The token in `DATA/admin.token` belongs to the built-in user
//! `admin`. Named users (`sluice user create`) get tokens with
//! `sluice token create --user NAME`. A role says what a user may do:
//! `admin` manages users and tokens, `operator` does everything else
//! (runs, approvals, transitions). Roles are the extension point for
//! resource-level permissions (docs/design.md section 6) without changing how
//! callers are identified.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The built-in user that owns `DATA/admin.token`.
pub const ADMIN_USER: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            other => Err(format!("unknown role {other:?}; roles are admin and operator")),
        }
    }
}

/// How a caller proved who it is: the principal the audit log names
/// beside the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Via {
    /// A bearer API token (the admin token included).
    #[default]
    Token,
    /// A SigV4 signature with this access key of the user.
    AccessKey(String),
    /// A webhook delivery, authenticated by the signature of its body.
    Webhook,
    /// A job's temporary credentials (the S3 subset of job workers).
    JobKey(String),
    /// An agent's client certificate.
    Agent(String),
    /// A web console session (its public id: never the cookie), opened
    /// with one of the credentials above.
    Session(String),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token => f.write_str("token"),
            Self::AccessKey(id) => write!(f, "access-key:{id}"),
            Self::Webhook => f.write_str("webhook"),
            Self::JobKey(id) => write!(f, "job-key:{id}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
            Self::Session(id) => write!(f, "session:{id}"),
        }
    }
}

/// Where a request came from: what the audit log records beside the
/// principal. Filled by the transport; empty for work the controller does
/// on its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Unique per request, echoed to the client.
    pub request_id: String,
    /// The peer's address, when the transport knows it.
    pub source: Option<std::net::SocketAddr>,
}

/// The identity behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub via: Via,
    pub origin: Origin,
}

impl Caller {
    /// A user authenticated by an API token, origin not yet known.
    pub fn new(user: impl Into<String>, role: Role) -> Self {
        Self { user: user.into(), role, via: Via::Token, origin: Origin::default() }
    }

    pub fn with_via(self, via: Via) -> Self {
        Self { via, ..self }
    }

    pub fn with_origin(self, origin: Origin) -> Self {
        Self { origin, ..self }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Token hashes to callers, shared by the API (reads) and the driver
/// (writes when tokens are made or revoked).
#[derive(Clone, Default)]
pub struct Tokens(Arc<RwLock<HashMap<String, Caller>>>);

impl Tokens {
    pub fn lookup(&self, token: &str) -> Option<Caller> {
        self.0.read().expect("token table lock").get(&hash(token)).cloned()
    }

    /// The caller of a token known by its hash (a console session keeps
    /// the hash, never the token).
    pub fn lookup_hash(&self, secret_hash: &str) -> Option<Caller> {
        self.0.read().expect("token table lock").get(secret_hash).cloned()
    }

    pub fn insert_hash(&self, secret_hash: String, caller: Caller) {
        self.0.write().expect("token table lock").insert(secret_hash, caller);
    }

    pub fn remove_hash(&self, secret_hash: &str) {
        self.0.write().expect("token table lock").remove(secret_hash);
    }
}

/// Hex sha256 of a token, as stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// User names: letters, digits, `.`, `_`, `-`, `@`; 1 to 64 characters.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("user name {name:?} must be 1 to 64 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) {
        return Err(format!("user name {name:?} may contain only A-Z a-z 0-9 . _ - @"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_resolve_to_their_users_until_removed() {
        let tokens = Tokens::default();
        tokens.insert_hash(hash("sut_abc"), Caller::new("ann", Role::Operator));
        assert_eq!(tokens.lookup(" sut_abc\n").unwrap().user, "ann");
        assert!(tokens.lookup("sut_abd").is_none());
        tokens.remove_hash(&hash("sut_abc"));
        assert!(tokens.lookup("sut_abc").is_none());
        assert!(check_user_name("ann.smith@corp").is_ok());
        assert!(check_user_name("a b").is_err() && check_user_name("").is_err());
        assert_eq!(Role::parse("admin"), Ok(Role::Admin));
        assert!(Role::parse("root").is_err());
    }
}
