//! Notifications (issue 15): rules per pipeline on CodeStar Notifications'
//! event types, sent to signed webhooks and Slack-compatible incoming
//! webhooks through a durable outbox.
//!
//! The path of a notification: the engine's [`crate::engine::Notice`]s of a
//! driver step are matched against the pipeline's rules ([`Rules::matches`])
//! and each match becomes a pending delivery row, written in the same
//! transaction as the state change that caused it (`driver::commit`): a
//! controller killed right after still has it. The delivery task
//! ([`deliver::run`]), outside the driver's loop, sends due rows, retries
//! with backoff ([`retry`]) and records dead letters. Delivery is at least
//! once: a row in flight when the controller dies is sent again.
//!
//! - `events.rs`: event type ids and which a notice is (pure).
//! - `message.rs`: payload, Slack text, signature (pure).
//! - `target.rs`: target URLs, what lists show, the address policy (pure).
//! - `retry.rs`: what an answer means, backoff (pure).
//! - `deliver.rs`: the delivery task and its HTTP client.
//!
//! Knows nothing of the driver; the store's side is `store::notifications`.

pub mod deliver;
pub mod events;
pub mod message;
pub mod retry;
pub mod target;

use std::collections::HashMap;
use std::path::PathBuf;

/// The controller's notification settings (`sluice controller` flags).
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// `--notification-ca`: PEM certificates trusted for receivers, besides
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    pub policy: target::AddressPolicy,
    pub retry: retry::RetryPolicy,
}

/// What the driver keeps of a rule to match notices: no URL, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSummary {
    pub id: String,
    pub name: String,
    pub event_types: Vec<String>,
    pub targets: u32,
}

/// The rules of every pipeline, kept in step with the store by the driver.
#[derive(Debug, Default)]
pub struct Rules {
    by_pipeline: HashMap<String, Vec<RuleSummary>>,
}

/// One delivery to make: a rule's target and the event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'a> {
    pub rule: &'a RuleSummary,
    pub target: u32,
    pub event_type: &'static str,
}

impl Rules {
    pub fn insert(&mut self, pipeline: &str, rule: RuleSummary) {
        let rules = self.by_pipeline.entry(pipeline.to_string()).or_default();
        rules.retain(|r| r.id != rule.id);
        rules.push(rule);
    }

    pub fn remove(&mut self, pipeline: &str, id: &str) {
        if let Some(rules) = self.by_pipeline.get_mut(pipeline) {
            rules.retain(|r| r.id != id);
        }
    }

    pub fn remove_pipeline(&mut self, pipeline: &str) {
        self.by_pipeline.remove(pipeline);
    }

    pub fn is_empty(&self) -> bool {
        self.by_pipeline.values().all(Vec::is_empty)
    }

    /// Every (rule, target, event type) `notice` is delivered to.
    pub fn matches(&self, notice: &crate::engine::Notice, ctx: events::NoticeContext) -> Vec<Match<'_>> {
        let Some(rules) = self.by_pipeline.get(&notice.pipeline) else { return Vec::new() };
        let types = events::event_types(notice, ctx);
        let mut out = Vec::new();
        for event_type in types {
            for rule in rules.iter().filter(|r| r.event_types.iter().any(|e| e == event_type)) {
                out.extend((0..rule.targets).map(|target| Match { rule, target, event_type }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ExecutionId, Notice};

    #[test]
    fn a_notice_goes_to_every_target_of_every_rule_that_names_its_event() {
        let mut rules = Rules::default();
        let rule = |id: &str, events: &[&str], targets| RuleSummary {
            id: id.into(),
            name: id.into(),
            event_types: events.iter().map(|e| e.to_string()).collect(),
            targets,
        };
        rules.insert("web", rule("web:1", &["codepipeline-pipeline-pipeline-execution-failed"], 2));
        rules.insert("web", rule("web:2", &["codepipeline-pipeline-pipeline-execution-started"], 1));
        rules.insert("api", rule("api:1", &["codepipeline-pipeline-pipeline-execution-failed"], 1));
        let failed = Notice {
            at: 5,
            pipeline: "web".into(),
            execution_id: ExecutionId("e".into()),
            stage: None,
            action: None,
            status: "Failed".into(),
            message: None,
        };
        let found = rules.matches(&failed, Default::default());
        let got: Vec<(&str, u32)> = found.iter().map(|m| (m.rule.id.as_str(), m.target)).collect();
        assert_eq!(got, [("web:1", 0), ("web:1", 1)]);
        rules.remove("web", "web:1");
        assert!(rules.matches(&failed, Default::default()).is_empty());
        rules.remove_pipeline("api");
        rules.remove_pipeline("web");
        assert!(rules.is_empty());
    }
}
