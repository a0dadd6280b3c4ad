//! CodePipeline's webhooks mapped onto Sluice's: one webhook per pipeline
//! (the definition's `targetPipeline`), authenticated as GitHub signs
//! deliveries (`GITHUB_HMAC` with the caller's `SecretToken`), delivered to
//! `POST /v1/webhooks/PIPELINE`. The definition is kept (without its
//! secret) and given back; which deliveries start a run is Sluice's own
//! matching of the push to the pipeline's source actions, not the
//! definition's JSONPath filters.

use super::pipelines::aws_json;
use super::{Call, input};
use crate::ops::{self, DeleteWebhook, ListWebhooks, OpError, PutWebhook, Tag, TagResource, WebhookView};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct PutWebhookInput {
    webhook: Value,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// The definition's string member `name`.
fn member<'a>(definition: &'a Value, name: &str) -> Result<&'a str, OpError> {
    definition.get(name).and_then(Value::as_str).ok_or_else(|| OpError::invalid(format!("webhook.{name} is required")))
}

pub async fn put_webhook(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let PutWebhookInput { mut webhook, tags } = input(value)?;
    ops::check_tags(&tags)?;
    let name = member(&webhook, "name")?.to_string();
    let pipeline = member(&webhook, "targetPipeline")?.to_string();
    let authentication = member(&webhook, "authentication")?;
    if authentication != "GITHUB_HMAC" {
        return Err(OpError::invalid(format!(
            "webhook authentication {authentication}: Sluice verifies deliveries by their signature only (GITHUB_HMAC)"
        )));
    }
    let secret = webhook
        .pointer("/authenticationConfiguration/SecretToken")
        .and_then(Value::as_str)
        .ok_or_else(|| OpError::invalid("GITHUB_HMAC needs authenticationConfiguration.SecretToken"))?
        .to_string();
    // Kept without its secret, as CodePipeline shows it.
    if let Some(config) = webhook.get_mut("authenticationConfiguration").and_then(Value::as_object_mut) {
        config.remove("SecretToken");
    }
    let op = PutWebhook { pipeline_name: pipeline, secret: Some(secret), definition: Some(webhook.clone()) };
    let out = call.ask(op).await?;
    let arn = call.arn(&format!("webhook:{name}"));
    if !tags.is_empty() {
        call.ask(TagResource { resource_arn: arn.clone(), tags: tags.clone() }).await?;
    }
    let mut item = json!({ "definition": webhook, "url": format!("{}{}", call.endpoint, out.path), "arn": arn });
    if !tags.is_empty() {
        item["tags"] = serde_json::to_value(&tags).unwrap_or_default();
    }
    Ok(json!({ "webhook": item }))
}

/// A webhook as CodePipeline lists it; one made with the CLI or REST
/// (no definition) is named after its pipeline.
fn list_item(call: &Call<'_>, w: WebhookView) -> Value {
    let definition = w.definition.unwrap_or_else(|| {
        json!({
            "name": w.pipeline_name, "targetPipeline": w.pipeline_name, "targetAction": "",
            "filters": [], "authentication": "GITHUB_HMAC", "authenticationConfiguration": {},
        })
    });
    let name = definition["name"].as_str().unwrap_or(&w.pipeline_name).to_string();
    json!({ "definition": definition, "url": format!("{}{}", call.endpoint, w.path), "arn": call.arn(&format!("webhook:{name}")) })
}

#[derive(Deserialize)]
struct ListWebhooksInput {
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<usize>,
}

/// ListWebhooks (whose paging members CodePipeline capitalizes).
pub async fn list_webhooks(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let i: ListWebhooksInput = input(value)?;
    let out = call.ask(ListWebhooks { max_results: i.max_results, next_token: i.next_token }).await?;
    let webhooks: Vec<Value> = out.webhooks.into_iter().map(|w| list_item(call, w)).collect();
    let mut output = json!({ "webhooks": webhooks });
    if let Some(token) = out.next_token {
        output["NextToken"] = json!(token);
    }
    Ok(aws_json(output))
}

#[derive(Deserialize)]
struct DeleteWebhookInput {
    name: String,
}

/// DeleteWebhook by name; a name no webhook has is already deleted, as in
/// CodePipeline.
pub async fn delete_webhook(call: &Call<'_>, value: Value) -> Result<Value, OpError> {
    let DeleteWebhookInput { name } = input(value)?;
    let mut next_token = None;
    loop {
        let out = call.ask(ListWebhooks { max_results: None, next_token }).await?;
        let found = out.webhooks.into_iter().find(|w| match &w.definition {
            Some(d) => d["name"] == name.as_str(),
            None => w.pipeline_name == name,
        });
        if let Some(w) = found {
            call.ask(DeleteWebhook { pipeline_name: w.pipeline_name }).await?;
            return Ok(json!({}));
        }
        match out.next_token {
            Some(token) => next_token = Some(token),
            None => return Ok(json!({})),
        }
    }
}
