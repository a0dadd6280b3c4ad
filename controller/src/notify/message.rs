//! What a notification says and how it is signed: the JSON payload (shaped
//! like CodeStar Notifications' detail), the Slack text, and the HMAC-SHA256
//! signature over `TIMESTAMP.BODY`. Pure: the time and ids are inputs.

use crate::engine::Notice;
use serde_json::{Value, json};

/// The header with the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Sluice-Timestamp";
/// `v1=HEX`: HMAC-SHA256 of `TIMESTAMP.BODY` under the target's secret.
pub const SIGNATURE_HEADER: &str = "X-Sluice-Signature";
/// The event type id of the delivery.
pub const EVENT_HEADER: &str = "X-Sluice-Event";
/// The delivery's id: the same on every attempt, so that a receiver can
/// drop a repeat (delivery is at least once).
pub const DELIVERY_HEADER: &str = "X-Sluice-Delivery";

/// How old a timestamp receivers should accept, at most (and how far in the
/// future): the replay window docs/notifications.md tells them to check.
pub const REPLAY_WINDOW_SECS: u64 = 300;

/// The rule a payload is made for.
#[derive(Debug, Clone)]
pub struct RuleRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// The JSON body of a notification: CodeStar Notifications' shape (its
/// `detail` keys too) with `source: "sluice"`.
pub fn payload(rule: RuleRef<'_>, event_type: &str, notice: &Notice, event_id: &str) -> Value {
    let mut detail = json!({
        "pipeline": notice.pipeline,
        "execution-id": notice.execution_id.0,
        "state": state(event_type, &notice.status),
    });
    if let Some(stage) = &notice.stage {
        detail["stage"] = json!(stage);
    }
    if let Some(action) = &notice.action {
        detail["action"] = json!(action);
    }
    if let Some(message) = &notice.message {
        detail["message"] = json!(message);
    }
    json!({
        "id": event_id,
        "source": "sluice",
        "eventType": event_type,
        "detailType": super::events::detail_type(event_type),
        "time": crate::views::time(notice.at),
        "notificationRuleId": rule.id,
        "notificationRuleName": rule.name,
        "resources": [format!("pipeline/{}", notice.pipeline)],
        "detail": detail,
    })
}

/// CodeStar's `state` words: `STARTED`, `SUCCEEDED`, `FAILED`, `CANCELED`,
/// `SUPERSEDED`, `RESUMED`, and for approvals `NEEDED`...; from the event
/// type, which already says it, else the engine's status.
fn state(event_type: &str, status: &str) -> String {
    event_type.rsplit('-').next().filter(|s| !s.is_empty()).unwrap_or(status).to_ascii_uppercase()
}

/// A Slack incoming webhook's body: `{"text": ...}`, one readable line
/// (no links: the controller does not know the address people reach it at).
pub fn slack_body(payload: &Value) -> Value {
    let d = &payload["detail"];
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut what = format!("pipeline {}", text_of(&d["pipeline"]));
    if d["stage"].is_string() {
        what.push_str(&format!(", stage {}", text_of(&d["stage"])));
    }
    if d["action"].is_string() {
        what.push_str(&format!(", action {}", text_of(&d["action"])));
    }
    let event = text_of(&payload["eventType"]);
    let headline = match event.as_str() {
        "codepipeline-pipeline-manual-approval-needed" => "Manual approval needed".to_string(),
        _ => format!(
            "{}: {}",
            payload["detailType"].as_str().unwrap_or_default().trim_start_matches("CodePipeline "),
            text_of(&d["state"])
        ),
    };
    let mut text = format!("[sluice] {headline} — {what} (execution {})", text_of(&d["execution-id"]));
    if let Some(message) = d["message"].as_str() {
        text.push_str(&format!(": {message}"));
    }
    json!({ "text": text })
}

/// `v1=HEX` of HMAC-SHA256(secret, `TIMESTAMP.BODY`).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Why a receiver should refuse a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the timestamp is {0} s away from now, outside the {REPLAY_WINDOW_SECS} s window")]
    Stale(u64),
    #[error("the signature does not match")]
    BadSignature,
}

/// What a receiver does (docs/notifications.md shows it in other
/// languages): the timestamp within the replay window of `now`, then the
/// signature compared in constant time.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], signature: &str, now: u64) -> Result<(), Refused> {
    let skew = now.abs_diff(timestamp);
    if skew > REPLAY_WINDOW_SECS {
        return Err(Refused::Stale(skew));
    }
    let given = signature.strip_prefix("v1=").and_then(|h| hex::decode(h).ok()).ok_or(Refused::BadSignature)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    ring::hmac::verify(&key, &message, &given).map_err(|_| Refused::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ExecutionId;

    fn notice() -> Notice {
        Notice {
            at: 1_700_000_000_000,
            pipeline: "web".into(),
            execution_id: ExecutionId("e-1".into()),
            stage: Some("Build".into()),
            action: Some("Compile".into()),
            status: "Failed".into(),
            message: Some("exit status 2".into()),
        }
    }

    #[test]
    fn the_payload_is_codestar_shaped() {
        let p = payload(rule_ref(), "codepipeline-pipeline-action-execution-failed", &notice(), "ev-1");
        assert_eq!(p["source"], "sluice");
        assert_eq!(p["detailType"], "CodePipeline Action Execution State Change");
        assert_eq!(p["time"], "2023-11-14T22:13:20Z");
        assert_eq!(p["detail"]["execution-id"], "e-1");
        assert_eq!(p["detail"]["state"], "FAILED");
        assert_eq!(p["detail"]["action"], "Compile");
        assert_eq!(p["resources"][0], "pipeline/web");
        let mut started = notice();
        (started.stage, started.action, started.message) = (None, None, None);
        let p = payload(rule_ref(), "codepipeline-pipeline-pipeline-execution-started", &started, "ev-2");
        assert!(p["detail"].get("stage").is_none());
        assert_eq!(p["detail"]["state"], "STARTED");
    }

    fn rule_ref() -> RuleRef<'static> {
        RuleRef { id: "web:abc", name: "ops" }
    }

    #[test]
    fn slack_gets_one_readable_line() {
        let p = payload(rule_ref(), "codepipeline-pipeline-action-execution-failed", &notice(), "ev-1");
        let body = slack_body(&p);
        assert_eq!(
            body["text"],
            "[sluice] Action Execution State Change: FAILED — pipeline web, stage Build, action Compile (execution e-1): exit status 2"
        );
        let p = payload(rule_ref(), "codepipeline-pipeline-manual-approval-needed", &notice(), "ev-1");
        assert!(slack_body(&p)["text"].as_str().unwrap().starts_with("[sluice] Manual approval needed — pipeline web"));
    }

    #[test]
    fn a_signature_verifies_within_the_window_only() {
        let secret = b"nsec_0123";
        let body = br#"{"a":1}"#;
        let sig = sign(secret, 1000, body);
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert_eq!(verify(secret, 1000, body, &sig, 1000 + REPLAY_WINDOW_SECS), Ok(()));
        assert_eq!(verify(secret, 1000, body, &sig, 1301), Err(Refused::Stale(301)));
        // The timestamp is signed: a fresh timestamp on an old body fails.
        assert_eq!(verify(secret, 1200, body, &sig, 1200), Err(Refused::BadSignature));
        assert_eq!(verify(secret, 1000, br#"{"a":2}"#, &sig, 1000), Err(Refused::BadSignature));
        assert_eq!(verify(b"other", 1000, body, &sig, 1000), Err(Refused::BadSignature));
        assert_eq!(verify(secret, 1000, body, "v1=zz", 1000), Err(Refused::BadSignature));
        // A known vector (Python's hmac): HMAC-SHA256("key", "1.{}").
        assert_eq!(sign(b"key", 1, b"{}"), "v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    }
}
