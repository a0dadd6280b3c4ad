//! Secrets: sealed values and the pipelines that may use them.

use serde::{Deserialize, Serialize};

/// SetSecret: a value and, with `pipelines`, its scope (glob patterns of
/// the pipelines that may use it): required for a new secret, kept as it
/// was when absent on an existing one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<Vec<String>>,
    /// The team that owns the secret (permissions, issue 15): its developers
    /// may grant it to their pipelines. Absent: kept as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetSecretOutput {
    pub name: String,
    pub pipelines: Vec<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListSecrets {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSecretsOutput {
    /// Names and scopes; never values.
    pub secrets: Vec<SecretView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub pipelines: Vec<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSecret {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteSecretOutput {
    pub name: String,
    pub deleted: bool,
}
