//! Trusted plugin publishers: the keys `plugin push` checks signatures against.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListPublishers {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPublishersOutput {
    pub publishers: Vec<PublisherView>,
    pub require_signed_plugins: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherView {
    pub name: String,
    pub key_id: String,
    pub public_key: String,
    pub added: String,
    pub added_by: String,
}

/// AddPublisher: trust a publisher's key (admin only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPublisher {
    pub name: String,
    /// A `PUBLIC KEY` PEM or the base64 of its DER.
    pub public_key: String,
}

/// RemovePublisher: plugins it signed stay registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovePublisher {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovePublisherOutput {
    pub name: String,
    pub removed: bool,
}
