//! Notification rules (CodeStar Notifications' shape: a rule on a resource,
//! event type ids, targets) and their deliveries (Sluice's own: the outbox,
//! its retries and dead letters). Issue 15, notify.

use serde::{Deserialize, Serialize};

/// A target of a rule as given at create: its type and URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// `Webhook` (signed JSON) or `Slack` (`{"text": ...}`).
    pub target_type: String,
    /// The URL; kept sealed, never shown again whole.
    pub target_address: String,
}

/// CreateNotificationRule: events of one pipeline to one or more targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateNotificationRule {
    pub pipeline_name: String,
    /// A name for people; the rule's id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CodeStar's ids, e.g. `codepipeline-pipeline-pipeline-execution-failed`.
    pub event_type_ids: Vec<String>,
    pub targets: Vec<TargetSpec>,
}

/// A target as it is shown: its URL as scheme and host only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    pub target_type: String,
    /// `https://host[:port]`: the path and query (a Slack URL's secret) are never shown.
    pub target_address: String,
    /// The secret webhook deliveries are signed with: in CreateNotificationRule's
    /// answer only, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRuleView {
    /// `PIPELINE:HEX`: the pipeline it belongs to, and a random part.
    pub id: String,
    pub name: String,
    pub pipeline_name: String,
    pub event_type_ids: Vec<String>,
    pub targets: Vec<TargetView>,
    pub created: String,
    pub created_by: String,
}

pub type CreateNotificationRuleOutput = NotificationRuleView;

/// ListNotificationRules: every rule, or one pipeline's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListNotificationRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNotificationRulesOutput {
    pub notification_rules: Vec<NotificationRuleView>,
}

/// DeleteNotificationRule: the rule and every delivery of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteNotificationRule {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteNotificationRuleOutput {
    pub id: String,
    pub deleted: bool,
}

/// ListNotificationDeliveries: the outbox, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListNotificationDeliveries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// `pending`, `delivered` or `dead`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "super::query_number::deserialize", skip_serializing_if = "Option::is_none")]
    pub max_results: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDeliveryView {
    /// `PIPELINE:N`.
    pub id: String,
    pub rule_id: String,
    pub pipeline_name: String,
    pub event_type_id: String,
    pub target_type: String,
    pub target_address: String,
    pub execution_id: String,
    pub status: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (pending deliveries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNotificationDeliveriesOutput {
    pub deliveries: Vec<NotificationDeliveryView>,
}

/// RedeliverNotification: a dead letter (or a delivered one) goes back to
/// pending, with its attempts reset, and is sent at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeliverNotification {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedeliverNotificationOutput {
    pub id: String,
    pub status: String,
}

/// The pipeline an id of the form `PIPELINE:REST` names (rule and delivery
/// ids both are), for the resource a request acts on.
pub fn pipeline_of_id(id: &str) -> Option<&str> {
    id.rsplit_once(':').map(|(pipeline, _)| pipeline).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_pipeline() {
        assert_eq!(pipeline_of_id("web:0123abcd"), Some("web"));
        assert_eq!(pipeline_of_id("web:17"), Some("web"));
        assert_eq!(pipeline_of_id("nocolon"), None);
        assert_eq!(pipeline_of_id(":17"), None);
    }
}
