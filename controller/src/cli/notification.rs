//! `sluice notification-rule` and `sluice notification`: rules that send a
//! pipeline's events to webhooks and Slack, and the outbox of their
//! deliveries. Issue 15, notify.

use super::output::{Table, columns, items, s};
use super::{ControllerArgs, Ctx, Failure};
use crate::notify::NotifyConfig;
use crate::notify::target::AddressPolicy;
use crate::ops::{
    CreateNotificationRule, DeleteNotificationRule, ListNotificationDeliveries, ListNotificationRules,
    RedeliverNotification, TargetSpec,
};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum NotificationRuleCmd {
    /// Send events of a pipeline to targets; prints each webhook target's
    /// signing secret, once.
    Create {
        #[arg(long)]
        pipeline: String,
        /// Event type ids, comma-separated or repeated: CodeStar's
        /// (`codepipeline-pipeline-pipeline-execution-failed`) or without
        /// their `codepipeline-pipeline-` prefix (`pipeline-execution-failed`).
        #[arg(long = "event", alias = "events", value_name = "ID,...", value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// `webhook=URL` (signed JSON) or `slack=URL` (Slack incoming
        /// webhook); `KIND=@FILE` reads the URL from a file, so that a
        /// secret URL stays off the command line. Repeat for more targets.
        #[arg(long = "target", value_name = "KIND=URL", required = true)]
        targets: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// List rules (target URLs as scheme and host only).
    List {
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Delete a rule and every delivery of it.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum NotificationCmd {
    /// Deliveries, newest first: status, attempts, last error, next attempt.
    Deliveries {
        #[arg(long = "rule", value_name = "ID")]
        rule: Option<String>,
        /// pending, delivered or dead.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        status: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Send a dead (or delivered) delivery again, from its first attempt.
    Redeliver { id: String },
}

/// The controller's notification settings from its flags.
pub fn notify_config(args: &ControllerArgs) -> NotifyConfig {
    NotifyConfig {
        ca_file: args.notification_ca.clone(),
        policy: AddressPolicy { allow_http: args.notification_allow_http, allow_private: args.notification_allow_private },
        retry: crate::notify::retry::RetryPolicy { max_attempts: args.notification_max_attempts, ..Default::default() },
    }
}

/// `pipeline-execution-failed` is short for CodeStar's full id.
fn full_event_id(id: &str) -> String {
    let id = id.trim();
    if id.starts_with("codepipeline-") { id.to_string() } else { format!("codepipeline-pipeline-{id}") }
}

/// `KIND=URL` or `KIND=@FILE`.
fn parse_target(text: &str) -> Result<TargetSpec, Failure> {
    let (kind, address) = text
        .split_once('=')
        .ok_or_else(|| Failure::new(2, format!("--target {:?} must be webhook=URL or slack=URL", kind_only(text))))?;
    let address = match address.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::new(2, format!("cannot read the target URL from {path}: {e}")))?
            .trim()
            .to_string(),
        None => address.to_string(),
    };
    Ok(TargetSpec { target_type: kind.trim().to_string(), target_address: address })
}

/// What of a malformed target an error may repeat: never a URL.
fn kind_only(text: &str) -> &str {
    text.split([':', '/']).next().unwrap_or_default()
}

pub async fn run_rule(ctx: &Ctx, cmd: NotificationRuleCmd) -> Result<i32, Failure> {
    match cmd {
        NotificationRuleCmd::Create { pipeline, events, targets, name } => {
            let targets = targets.iter().map(|t| parse_target(t)).collect::<Result<Vec<_>, _>>()?;
            let event_type_ids = events.iter().filter(|e| !e.trim().is_empty()).map(|e| full_event_id(e)).collect();
            let op = CreateNotificationRule { pipeline_name: pipeline, name, event_type_ids, targets };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, created_prose);
        }
        NotificationRuleCmd::List { pipeline } => {
            let out = ctx.client()?.call(ListNotificationRules { pipeline_name: pipeline }).await?;
            ctx.output.print(&out, |out| rule_table().render(items(&out["notificationRules"])));
        }
        NotificationRuleCmd::Delete { id } => {
            let out = ctx.client()?.call(DeleteNotificationRule { id: id.clone() }).await?;
            ctx.output.print(&out, |_| format!("notification rule {id} deleted\n"));
        }
    }
    Ok(0)
}

pub async fn run(ctx: &Ctx, cmd: NotificationCmd) -> Result<i32, Failure> {
    match cmd {
        NotificationCmd::Deliveries { rule, status, limit } => {
            let op = ListNotificationDeliveries { rule_id: rule, status, max_results: limit };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |out| delivery_table().render(items(&out["deliveries"])));
        }
        NotificationCmd::Redeliver { id } => {
            let out = ctx.client()?.call(RedeliverNotification { id: id.clone() }).await?;
            ctx.output.print(&out, |_| format!("delivery {id} is pending again\n"));
        }
    }
    Ok(0)
}

fn created_prose(out: &Value) -> String {
    let mut text = format!("notification rule {} created\n", s(&out["id"]));
    for t in items(&out["targets"]) {
        if t["signingSecret"].is_string() {
            text.push_str(&format!(
                "signing secret of {} (shown once): {}\n",
                s(&t["targetAddress"]),
                s(&t["signingSecret"])
            ));
        }
    }
    text
}

fn targets_cell(rule: &Value) -> String {
    items(&rule["targets"])
        .map(|t| format!("{} {}", s(&t["targetType"]).to_lowercase(), s(&t["targetAddress"])))
        .collect::<Vec<_>>()
        .join(", ")
}

fn events_cell(rule: &Value) -> String {
    items(&rule["eventTypeIds"])
        .filter_map(Value::as_str)
        .map(|e| e.trim_start_matches("codepipeline-pipeline-"))
        .collect::<Vec<_>>()
        .join(",")
}

fn rule_table() -> Table<Value> {
    columns![Value;
        ("ID", |r| s(&r["id"])),
        ("NAME", |r| s(&r["name"])),
        ("PIPELINE", |r| s(&r["pipelineName"])),
        ("EVENTS", events_cell),
        ("TARGETS", targets_cell),
    ]
}

fn delivery_table() -> Table<Value> {
    columns![Value;
        ("ID", |d| s(&d["id"])),
        ("RULE", |d| s(&d["ruleId"])),
        ("EVENT", |d| s(&d["eventTypeId"]).trim_start_matches("codepipeline-pipeline-").to_string()),
        ("TARGET", |d| s(&d["targetAddress"])),
        ("STATUS", |d| s(&d["status"])),
        ("ATTEMPTS", |d| s(&d["attempts"])),
        ("NEXT ATTEMPT", |d| s(&d["nextAttempt"])),
        ("LAST ERROR", |d| s(&d["lastError"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Output;
    use serde_json::json;

    #[test]
    fn targets_and_short_event_ids_parse() {
        let t = parse_target("slack=https://hooks.slack.com/services/T/B/X").unwrap();
        assert_eq!((t.target_type.as_str(), t.target_address.as_str()), ("slack", "https://hooks.slack.com/services/T/B/X"));
        let bad = parse_target("https://hooks.slack.com/services/T/B/X").unwrap_err();
        assert_eq!(bad.code, 2);
        assert!(!bad.message.contains("services"), "{}", bad.message);
        assert_eq!(full_event_id("pipeline-execution-failed"), "codepipeline-pipeline-pipeline-execution-failed");
        assert_eq!(
            full_event_id("codepipeline-pipeline-manual-approval-needed"),
            "codepipeline-pipeline-manual-approval-needed"
        );
    }

    #[test]
    fn the_list_shows_hosts_and_the_secret_only_at_create() {
        let rule = json!({"id": "web:01", "name": "ops", "pipelineName": "web",
            "eventTypeIds": ["codepipeline-pipeline-pipeline-execution-failed"],
            "targets": [{"targetType": "Webhook", "targetAddress": "https://hooks.example", "signingSecret": "nsec_1"}]});
        let listed = Output::Table.render(&json!({"notificationRules": [rule.clone()]}), |out| {
            rule_table().render(items(&out["notificationRules"]))
        });
        assert!(
            listed.contains("pipeline-execution-failed") && listed.contains("webhook https://hooks.example"),
            "{listed}"
        );
        assert!(!listed.contains("nsec_1"));
        assert!(created_prose(&rule).contains("signing secret of https://hooks.example (shown once): nsec_1"));
    }
}
