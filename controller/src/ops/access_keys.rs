//! Access keys of users for the AWS-compatible API: what the AWS CLI and
//! the SDKs sign requests with (Signature Version 4). Admin only, as API
//! tokens are; the secret is shown once, at creation.

use serde::{Deserialize, Serialize};

/// CreateAccessKey (admin only): a new key id and secret for a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessKey {
    pub user: String,
}

/// The key as the AWS tools take it (`aws configure` asks for these two).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccessKeyOutput {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub user: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListAccessKeys {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAccessKeysOutput {
    pub access_keys: Vec<AccessKeyView>,
}

/// A key without its secret, which is never shown again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyView {
    pub access_key_id: String,
    pub user: String,
    pub created: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAccessKey {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeAccessKeyOutput {
    pub access_key_id: String,
    pub revoked: bool,
}
