//! Users of the admin API and their API tokens.

use serde::{Deserialize, Serialize};

/// CreateUser (admin only); `role` is a built-in role (admin, operator,
/// developer, approver, viewer) or a custom one; operator by default.
/// `team`, when given, is a team the user joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserOutput {
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListUsers {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListUsersOutput {
    pub users: Vec<UserView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub role: String,
    /// Absent for the built-in `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub builtin: bool,
    /// The teams the user is in (permissions, issue 15).
    #[serde(default)]
    pub teams: Vec<String>,
}

/// CreateApiToken (admin only): a new token for a user, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateApiTokenOutput {
    pub id: String,
    pub user: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListApiTokens {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListApiTokensOutput {
    pub tokens: Vec<ApiTokenView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiTokenView {
    pub id: String,
    pub user: String,
    pub created: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeApiToken {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeApiTokenOutput {
    pub id: String,
    pub revoked: bool,
}
