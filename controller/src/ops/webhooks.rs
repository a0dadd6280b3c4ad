//! Webhooks: a pipeline's signed endpoint for push and pull-request
//! notifications, and the deliveries themselves.

use serde::{Deserialize, Serialize};

/// PutWebhook: makes (or replaces) a pipeline's webhook secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutWebhook {
    pub pipeline_name: String,
    /// The secret deliveries are signed with; a new random one when absent
    /// (CodePipeline's `SecretToken` is chosen by the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// CodePipeline's webhook definition, without its secret: kept and
    /// given back by ListWebhooks (Sluice's own matching of deliveries to
    /// source actions applies, not its filters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<serde_json::Value>,
}

/// ListWebhooks: the pipelines that have a webhook, by name, a page at a time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListWebhooks {
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListWebhooksOutput {
    pub webhooks: Vec<WebhookView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub pipeline_name: String,
    /// Where deliveries go, below the API's address.
    pub path: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutWebhookOutput {
    pub pipeline_name: String,
    pub secret: String,
    /// Where deliveries go, below the API's address.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteWebhook {
    pub pipeline_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteWebhookOutput {
    pub pipeline_name: String,
    pub deleted: bool,
}

/// A webhook delivery (`POST /v1/webhooks/{name}`), authenticated by the
/// signature of its raw body rather than by a token.
#[derive(Debug, Clone)]
pub struct DeliverWebhook {
    pub pipeline_name: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Whether the delivery started an execution, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverWebhookOutput {
    pub started: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The execution started, or the one the revision already started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_actions: Option<Vec<String>>,
}
