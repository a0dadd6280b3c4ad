//! Built-in plugin `webhook-notify@1`: posts a message to a Slack-compatible
//! incoming webhook (Slack, Mattermost, Rocket.Chat, Discord's `/slack`
//! endpoint and the like).
//!
//! The body is `{"text": ..., "channel": ..., "username": ...,
//! "icon_emoji": ...}` (only `text` always), sent as
//! `application/json`. A webhook URL is a credential (whoever holds it may
//! post), so it normally comes from a granted secret named by
//! `WebhookUrlSecret`; its URL is then never shown in the log or in a
//! message, only the `host:port` the SDK's errors name. The plugin does not
//! retry: posting twice would show the message twice. A non-2xx answer
//! fails the action, retryably for 408, 429 and 5xx. This crate knows only
//! the SDK.

use std::time::Duration;

use serde::Serialize;
use sluice_plugin_sdk::http::{self, Request, SNIPPET_CHARS};
use sluice_plugin_sdk::{
    ActionInfo, Category, Config, Context, Error, Outcome, Plugin, Property, log, secrets,
};

/// How long the post may take: webhooks answer in well under a second
/// when they are healthy.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The webhook-notify plugin.
pub struct WebhookNotify;

impl Plugin for WebhookNotify {
    fn describe() -> ActionInfo {
        ActionInfo::new("webhook-notify", "1", Category::Invoke)
            .description(
                "Posts a message to a Slack-compatible incoming webhook. The action must grant \
                 the webhook's host with the http capability (host:port), and the secret when \
                 the URL comes from one.",
            )
            .property(Property::optional(
                "WebhookUrlSecret",
                "The name of a granted secret holding the webhook URL (preferred: the URL is a \
                 credential)",
            ))
            .property(Property::optional(
                "WebhookUrl",
                "The webhook URL, when it does not come from a secret",
            ))
            .property(Property::required(
                "Message",
                "The message text; #{...} variables are resolved",
            ))
            .property(Property::optional(
                "Channel",
                "The channel to post to, when the webhook allows overriding it",
            ))
            .property(Property::optional("Username", "The name to post as"))
            .property(Property::optional(
                "IconEmoji",
                "An emoji for the poster's icon, such as :rocket:",
            ))
            .outputs(0, 0)
            // The destination and the secret's name are configuration.
            .http(["*"])
            .secrets(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let message = Message::from_config(&ctx.config)?;
        let (url, shown) = match &message.destination {
            Destination::Secret(name) => {
                let url = secrets::get(name)
                    .map_err(|e| e.context("configuration \"WebhookUrlSecret\""))?;
                (
                    url.trim().to_owned(),
                    format!("the webhook in secret \"{name}\""),
                )
            }
            Destination::Url(url) => (url.clone(), "the webhook".to_owned()),
        };
        log::info(format!(
            "posting {} characters to {shown}",
            message.text.chars().count()
        ));
        let response = Request::post(&url)
            .json(&message.body())?
            .timeout(TIMEOUT)
            .send()
            .map_err(|e| e.context(format!("posting to {shown}")))?;
        if !response.is_success() {
            return Err(Error::new(format!(
                "posting to {shown}: HTTP {}: {}",
                http::status_line(response.status),
                response.snippet(SNIPPET_CHARS)
            ))
            .with_retryable(http::status_is_retryable(response.status)));
        }
        let summary = match &message.channel {
            Some(channel) => format!("posted to {channel} (HTTP {})", response.status),
            None => format!("posted to {shown} (HTTP {})", response.status),
        };
        Ok(Outcome::succeeded(summary).variable("StatusCode", response.status.to_string()))
    }
}

sluice_plugin_sdk::export_plugin!(WebhookNotify);

/// Where the webhook URL comes from.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// The name of a secret holding it.
    Secret(String),
    /// The URL itself.
    Url(String),
}

/// The configuration, checked.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    destination: Destination,
    text: String,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
}

impl Message {
    /// Reads and checks every key, reporting every problem at once.
    fn from_config(config: &Config) -> Result<Self, Error> {
        let value = |key: &str| {
            config
                .get(key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut problems = Vec::new();
        let destination = match (value("WebhookUrlSecret"), value("WebhookUrl")) {
            (Some(name), None) => Some(Destination::Secret(name)),
            (None, Some(url)) => Some(Destination::Url(url)),
            (Some(_), Some(_)) => {
                problems.push(
                    "configuration \"WebhookUrlSecret\" and \"WebhookUrl\" exclude each other",
                );
                None
            }
            (None, None) => {
                problems.push("configuration \"WebhookUrlSecret\" (or \"WebhookUrl\") is required");
                None
            }
        };
        // The text is sent as written: surrounding blank lines may be meant.
        let text = config.get("Message").filter(|m| !m.trim().is_empty());
        if text.is_none() {
            problems.push("configuration \"Message\" is required");
        }
        match (destination, text) {
            (Some(destination), Some(text)) if problems.is_empty() => Ok(Self {
                destination,
                text: text.to_owned(),
                channel: value("Channel"),
                username: value("Username"),
                icon_emoji: value("IconEmoji"),
            }),
            _ => Err(Error::new(problems.join("; "))),
        }
    }

    /// The JSON body: `text` and the optional fields that are set.
    fn body(&self) -> Payload<'_> {
        Payload {
            text: &self.text,
            channel: self.channel.as_deref(),
            username: self.username.as_deref(),
            icon_emoji: self.icon_emoji.as_deref(),
        }
    }
}

/// The body of a Slack-compatible incoming webhook.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icon_emoji: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    //! These run natively against a local server (the SDK's stand-in
    //! speaks plain http; no grants are checked).
    use super::*;
    use sluice_plugin_sdk::http::testing::{REFUSED, Reply, Server};

    fn context(pairs: &[(&str, &str)]) -> Context {
        Context::for_test(pairs)
    }

    #[test]
    fn posts_escaped_json_with_the_optional_fields() {
        let server = Server::start(|_| Reply::new(200).body("ok"));
        let text = "Deployed \"web\" 1.2 ✅\nback\\slash\t<tab> & \u{1}";
        let outcome = WebhookNotify::execute(context(&[
            ("WebhookUrl", &server.url("/services/T0/B0/XYZ")),
            ("Message", text),
            ("Channel", "#deploys"),
            ("Username", "sluice"),
            ("IconEmoji", ":rocket:"),
        ]))
        .unwrap();
        assert_eq!(outcome.summary(), "posted to #deploys (HTTP 200)");
        assert_eq!(outcome.get_variable("StatusCode"), Some("200"));

        let seen = &server.requests()[0];
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/services/T0/B0/XYZ")
        );
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(
            seen.text(),
            r##"{"text":"Deployed \"web\" 1.2 ✅\nback\\slash\t<tab> & \u0001","channel":"#deploys","username":"sluice","icon_emoji":":rocket:"}"##
        );
        let parsed: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(parsed["text"], text);
    }

    #[test]
    fn the_url_from_a_secret_never_shows() {
        let server = Server::start(|_| Reply::new(403).body("invalid_token"));
        let url = server.url("/services/T0/B0/S3CR3T");
        // SAFETY: no other thread of these tests reads the environment
        // meanwhile: their requests go to literal IP addresses, never
        // through the resolver, and no other test reads a secret.
        unsafe { std::env::set_var("SLUICE_SECRET_WEBHOOK_TEST_URL", format!("{url}\n")) };
        let err = WebhookNotify::execute(context(&[
            ("WebhookUrlSecret", "WEBHOOK_TEST_URL"),
            ("Message", "hi"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.message(),
            "posting to the webhook in secret \"WEBHOOK_TEST_URL\": HTTP 403 Forbidden: invalid_token"
        );
        assert!(!err.is_retryable());
        assert_eq!(server.requests()[0].text(), r#"{"text":"hi"}"#);

        // A transport error names host:port only.
        let refused = format!("http://{REFUSED}/services/T0/B0/S3CR3T");
        // SAFETY: as above.
        unsafe { std::env::set_var("SLUICE_SECRET_WEBHOOK_TEST_URL", format!("{refused}\n")) };
        let err = WebhookNotify::execute(context(&[
            ("WebhookUrlSecret", "WEBHOOK_TEST_URL"),
            ("Message", "hi"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "posting to the webhook in secret \"WEBHOOK_TEST_URL\": connection refused to {REFUSED}"
            )
        );
        assert!(!err.message().contains("S3CR3T"));
        assert!(err.is_retryable());
    }

    #[test]
    fn a_server_error_fails_retryably_with_a_bounded_snippet() {
        let server = Server::start(|_| Reply::new(503).body("x".repeat(5000)));
        let err = WebhookNotify::execute(context(&[
            ("WebhookUrl", &server.url("/hook")),
            ("Message", "hi"),
        ]))
        .unwrap_err();
        assert!(
            err.message()
                .starts_with("posting to the webhook: HTTP 503 Service Unavailable: xxx"),
            "{err}"
        );
        assert!(err.message().chars().count() < 300, "{err}");
        assert!(err.is_retryable());
    }

    #[test]
    fn configuration_problems_come_together() {
        let err = Message::from_config(&[("Message", "  ")].into_iter().collect()).unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"WebhookUrlSecret\" (or \"WebhookUrl\") is required; \
             configuration \"Message\" is required"
        );
        let err = Message::from_config(
            &[
                ("WebhookUrlSecret", "S"),
                ("WebhookUrl", "http://h/"),
                ("Message", "m"),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "configuration \"WebhookUrlSecret\" and \"WebhookUrl\" exclude each other"
        );
        let message = Message::from_config(
            &[
                ("WebhookUrl", "http://h/"),
                ("Message", "m"),
                ("Channel", " "),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&message.body()).unwrap(),
            r#"{"text":"m"}"#
        );
    }
}
