//! Incoming webhooks: who sent them, whether the signature holds, and what
//! changed, for `POST /v1/webhooks/PIPELINE`.
//!
//! Accepted senders, told apart by their headers:
//!
//! | sender  | event header       | authentication                                     |
//! |---------|--------------------|----------------------------------------------------|
//! | GitHub  | `X-GitHub-Event`   | `X-Hub-Signature-256: sha256=HEX` (HMAC-SHA256)     |
//! | Gitea   | `X-Gitea-Event`    | `X-Gitea-Signature: HEX` (HMAC-SHA256)              |
//! | GitLab  | `X-Gitlab-Event`   | `X-Gitlab-Token: SECRET` (GitLab sends the secret) |
//! | generic | none of the above  | `X-Sluice-Signature: sha256=HEX` (HMAC-SHA256)      |
//!
//! The generic body is `{"revision": SHA, "branch": NAME}` (or `"tag"`
//! instead of `"branch"`), optionally with `"files": [...]`; the shipped
//! `post-receive` hook sends it. Pure: no I/O, no clock.

use ring::hmac;
use serde_json::Value;

use crate::pipeline::triggers::{Change, ChangeKind};

/// Largest webhook body accepted.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// Missing or wrong signature: 401.
    Unauthorized(String),
    /// Not JSON, or not a payload this sender sends: 400.
    Malformed(String),
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Change {
        sender: &'static str,
        change: Change,
        /// The git host's user who pushed (or opened the pull request), when
        /// the payload names one (issue 15, gov).
        pusher: Option<String>,
    },
    /// A delivery that starts nothing by design (a ping, a deleted branch,
    /// an event kind Sluice does not act on), with why.
    Ignored { sender: &'static str, reason: String },
}

/// Verifies a delivery against the pipeline's webhook secret and reads it.
pub fn read(headers: &[(String, String)], body: &[u8], secret: &str) -> Result<Delivery, WebhookError> {
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string());
    let (sender, event) = if let Some(e) = header("X-Gitea-Event") {
        ("gitea", e)
    } else if let Some(e) = header("X-GitHub-Event") {
        ("github", e)
    } else if let Some(e) = header("X-Gitlab-Event") {
        ("gitlab", e)
    } else {
        ("generic", String::new())
    };
    match sender {
        "gitlab" => {
            let token = header("X-Gitlab-Token")
                .ok_or_else(|| WebhookError::Unauthorized("missing X-Gitlab-Token header".into()))?;
            // Constant-time comparison through HMAC of both sides.
            let key = hmac::Key::new(hmac::HMAC_SHA256, b"sluice-gitlab-token");
            let expected = hmac::sign(&key, secret.as_bytes());
            hmac::verify(&key, token.as_bytes(), expected.as_ref())
                .map_err(|_| WebhookError::Unauthorized("X-Gitlab-Token does not match the webhook secret".into()))?;
        }
        _ => {
            let (name, value) = match sender {
                "github" => ("X-Hub-Signature-256", header("X-Hub-Signature-256")),
                "gitea" => ("X-Gitea-Signature", header("X-Gitea-Signature")),
                _ => ("X-Sluice-Signature", header("X-Sluice-Signature")),
            };
            let value = value.ok_or_else(|| WebhookError::Unauthorized(format!("missing {name} header")))?;
            let hex_sig = value.strip_prefix("sha256=").unwrap_or(&value);
            let signature =
                hex::decode(hex_sig).map_err(|_| WebhookError::Unauthorized(format!("{name} is not a hex HMAC-SHA256")))?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            hmac::verify(&key, body, &signature)
                .map_err(|_| WebhookError::Unauthorized(format!("{name} does not match the body")))?;
        }
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("the body is not JSON: {e}")))?;
    if !payload.is_object() {
        return Err(WebhookError::Malformed("the body is not a JSON object".into()));
    }
    let parsed = match sender {
        "github" | "gitea" => github_like(sender, &event, &payload),
        "gitlab" => gitlab(&event, &payload),
        _ => generic(&payload),
    }?;
    Ok(match parsed {
        Ok(change) => Delivery::Change { sender, change, pusher: pusher(sender, &payload) },
        Err(reason) => Delivery::Ignored { sender, reason },
    })
}

/// Who pushed, as the git host names its user: GitHub's and Gitea's
/// `sender.login` (the account, where `pusher.name` may be a display
/// name), else `pusher.login` or `pusher.name`; GitLab's `user_username`
/// (pushes) or `user.username` (merge requests); the generic sender's
/// `pusher`. Separation of duties compares it with Sluice user names, so
/// a name that could not be one is dropped.
fn pusher(sender: &str, payload: &Value) -> Option<String> {
    let pointers: &[&str] = match sender {
        "github" | "gitea" => &["/sender/login", "/pusher/login", "/pusher/name"],
        "gitlab" => &["/user_username", "/user/username"],
        _ => &["/pusher"],
    };
    pointers
        .iter()
        .filter_map(|p| payload.pointer(p).and_then(Value::as_str))
        .map(str::trim)
        .find(|name| crate::auth::check_user_name(name).is_ok())
        .map(str::to_string)
}

/// `Ok(Ok(change))`, `Ok(Err(why ignored))` or `Err(malformed)`.
type Parsed = Result<Result<Change, String>, WebhookError>;

fn str_at<'v>(payload: &'v Value, pointer: &str) -> Result<&'v str, WebhookError> {
    payload
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::Malformed(format!("the payload has no string at {pointer}")))
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

fn check_revision(sha: &str) -> Result<String, WebhookError> {
    if sha.len() < 4 || sha.len() > 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WebhookError::Malformed(format!("{sha:?} is not a commit id")));
    }
    Ok(sha.to_ascii_lowercase())
}

/// `refs/heads/X` or `refs/tags/X` to a change kind.
fn ref_kind(reference: &str) -> Result<ChangeKind, String> {
    if let Some(branch) = reference.strip_prefix("refs/heads/") {
        Ok(ChangeKind::Branch(branch.to_string()))
    } else if let Some(tag) = reference.strip_prefix("refs/tags/") {
        Ok(ChangeKind::Tag(tag.to_string()))
    } else {
        Err(format!("ref {reference:?} is neither a branch nor a tag"))
    }
}

/// Files added, modified or removed by the listed commits.
fn commit_files(payload: &Value) -> Option<Vec<String>> {
    let commits = payload.get("commits")?.as_array()?;
    let mut files: Vec<String> = Vec::new();
    for commit in commits {
        for key in ["added", "modified", "removed"] {
            for f in commit.get(key).and_then(Value::as_array).into_iter().flatten() {
                if let Some(f) = f.as_str()
                    && !files.iter().any(|x| x == f)
                {
                    files.push(f.to_string());
                }
            }
        }
    }
    Some(files)
}

/// A push to a branch or tag (`ref`, `after`, and the commits' files), or
/// why it starts nothing (a deleted ref, a ref that is neither).
fn push(payload: &Value) -> Parsed {
    let after = str_at(payload, "/after")?;
    let reference = str_at(payload, "/ref")?;
    if payload.get("deleted").and_then(Value::as_bool) == Some(true) || is_zero(after) {
        return Ok(Err(format!("{reference} was deleted")));
    }
    let kind = match ref_kind(reference) {
        Ok(kind) => kind,
        Err(why) => return Ok(Err(why)),
    };
    let files = if matches!(kind, ChangeKind::Branch(_)) { commit_files(payload) } else { None };
    Ok(Ok(Change { kind, revision: check_revision(after)?, files }))
}

/// Where a sender keeps a pull (merge) request's branches and head commit.
struct PullRequestFields {
    source_branch: &'static str,
    destination_branch: &'static str,
    head: &'static str,
}

fn pull_request(payload: &Value, event: &str, at: PullRequestFields) -> Parsed {
    Ok(Ok(Change {
        kind: ChangeKind::PullRequest {
            event: event.into(),
            source_branch: str_at(payload, at.source_branch)?.to_string(),
            destination_branch: str_at(payload, at.destination_branch)?.to_string(),
        },
        revision: check_revision(str_at(payload, at.head)?)?,
        files: None,
    }))
}

fn github_like(sender: &str, event: &str, payload: &Value) -> Parsed {
    match event {
        "ping" => Ok(Err(format!("{sender} ping"))),
        "push" => push(payload),
        "pull_request" => {
            let action = str_at(payload, "/action")?;
            let event = match action {
                "opened" | "reopened" => "OPEN",
                "synchronize" | "synchronized" => "UPDATED",
                "closed" => "CLOSED",
                other => return Ok(Err(format!("pull request action {other:?} starts nothing"))),
            };
            let at = PullRequestFields {
                source_branch: "/pull_request/head/ref",
                destination_branch: "/pull_request/base/ref",
                head: "/pull_request/head/sha",
            };
            pull_request(payload, event, at)
        }
        other => Ok(Err(format!("{sender} event {other:?} starts nothing"))),
    }
}

fn gitlab(event: &str, payload: &Value) -> Parsed {
    let kind = payload.get("object_kind").and_then(Value::as_str).unwrap_or(event);
    match kind {
        "push" | "tag_push" | "Push Hook" | "Tag Push Hook" => push(payload),
        "merge_request" | "Merge Request Hook" => {
            let action = str_at(payload, "/object_attributes/action")?;
            let event = match action {
                "open" | "reopen" => "OPEN",
                "update" => "UPDATED",
                "close" | "merge" => "CLOSED",
                other => return Ok(Err(format!("merge request action {other:?} starts nothing"))),
            };
            let at = PullRequestFields {
                source_branch: "/object_attributes/source_branch",
                destination_branch: "/object_attributes/target_branch",
                head: "/object_attributes/last_commit/id",
            };
            pull_request(payload, event, at)
        }
        other => Ok(Err(format!("gitlab event {other:?} starts nothing"))),
    }
}

fn generic(payload: &Value) -> Parsed {
    let map = payload.as_object().expect("checked to be an object");
    for key in map.keys() {
        if !["revision", "branch", "tag", "files", "pusher"].contains(&key.as_str()) {
            return Err(WebhookError::Malformed(format!(
                "unknown field {key:?}; expected {{\"revision\": SHA, \"branch\": NAME}} (or \"tag\"), optionally \"files\" and \"pusher\""
            )));
        }
    }
    let revision = check_revision(str_at(payload, "/revision")?)?;
    let kind = match (map.get("branch").and_then(Value::as_str), map.get("tag").and_then(Value::as_str)) {
        (Some(b), None) if !b.is_empty() => ChangeKind::Branch(b.trim_start_matches("refs/heads/").to_string()),
        (None, Some(t)) if !t.is_empty() => ChangeKind::Tag(t.trim_start_matches("refs/tags/").to_string()),
        _ => return Err(WebhookError::Malformed("give exactly one of \"branch\" and \"tag\", as a string".into())),
    };
    let files = match map.get("files") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|f| f.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| WebhookError::Malformed("\"files\" must be a list of strings".into()))?,
        ),
        Some(_) => return Err(WebhookError::Malformed("\"files\" must be a list of strings".into())),
    };
    Ok(Ok(Change { kind, revision, files }))
}

/// The HMAC-SHA256 of a body under a secret, in hex (as senders sign).
pub fn sign(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "whsec_test";
    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn github(event: &str, body: &Value) -> Result<Delivery, WebhookError> {
        let body = serde_json::to_vec(body).unwrap();
        let sig = format!("sha256={}", sign(SECRET, &body));
        read(&h(&[("X-GitHub-Event", event), ("X-Hub-Signature-256", &sig)]), &body, SECRET)
    }

    fn change(d: Delivery) -> Change {
        match d {
            Delivery::Change { change, .. } => change,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn github_push_gives_branch_revision_and_files() {
        let body = json!({"ref": "refs/heads/main", "after": SHA, "deleted": false,
            "commits": [{"added": ["src/a.rs"], "modified": ["README.md"], "removed": []},
                        {"added": [], "modified": ["src/a.rs"], "removed": ["old.txt"]}]});
        let c = change(github("push", &body).unwrap());
        assert_eq!(c.kind, ChangeKind::Branch("main".into()));
        assert_eq!(c.revision, SHA);
        assert_eq!(c.files.unwrap(), ["src/a.rs", "README.md", "old.txt"]);
        let tag = change(github("push", &json!({"ref": "refs/tags/v1.0", "after": SHA})).unwrap());
        assert_eq!(tag.kind, ChangeKind::Tag("v1.0".into()));
    }

    // Separation of duties (issue 15, gov).
    #[test]
    fn the_pusher_is_read_as_each_host_names_it() {
        let pusher = |d: Delivery| match d {
            Delivery::Change { pusher, .. } => pusher,
            other => panic!("expected a change, got {other:?}"),
        };
        let push = json!({"ref": "refs/heads/main", "after": SHA,
            "pusher": {"name": "Ann Smith", "email": "a@x"}, "sender": {"login": "ann"}});
        assert_eq!(pusher(github("push", &push).unwrap()).as_deref(), Some("ann"));
        // Only a display name that cannot be a user name: nobody is named.
        let display_only = json!({"ref": "refs/heads/main", "after": SHA, "pusher": {"name": "Ann Smith"}});
        assert_eq!(pusher(github("push", &display_only).unwrap()), None);
        assert_eq!(gitlab_like(&json!({"user_username": "bob"})), Some("bob".into()));
        assert_eq!(gitlab_like(&json!({"user": {"username": "cy"}})), Some("cy".into()));
        assert_eq!(super::pusher("generic", &json!({"pusher": "dee"})), Some("dee".into()));
        assert_eq!(super::pusher("gitea", &json!({"pusher": {"login": "eve"}})), Some("eve".into()));
    }

    fn gitlab_like(payload: &Value) -> Option<String> {
        super::pusher("gitlab", payload)
    }

    #[test]
    fn github_pull_requests_map_to_codepipeline_events() {
        let pr = |action: &str| json!({"action": action, "pull_request": {"head": {"sha": SHA, "ref": "feature"}, "base": {"ref": "main"}}});
        let c = change(github("pull_request", &pr("synchronize")).unwrap());
        assert_eq!(
            c.kind,
            ChangeKind::PullRequest {
                event: "UPDATED".into(),
                source_branch: "feature".into(),
                destination_branch: "main".into()
            }
        );
        assert!(matches!(github("pull_request", &pr("labeled")).unwrap(), Delivery::Ignored { .. }));
        assert!(matches!(github("ping", &json!({"zen": "x"})).unwrap(), Delivery::Ignored { .. }));
        let deleted = json!({"ref": "refs/heads/x", "after": "0000000000000000000000000000000000000000", "deleted": true});
        assert!(matches!(github("push", &deleted).unwrap(), Delivery::Ignored { .. }));
    }

    #[test]
    fn bad_or_missing_signatures_are_unauthorized() {
        let body = br#"{"ref": "refs/heads/main", "after": "abc1"}"#;
        let wrong = format!("sha256={}", sign("other", body));
        assert!(matches!(
            read(&h(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)]), body, SECRET),
            Err(WebhookError::Unauthorized(_))
        ));
        assert!(matches!(read(&h(&[("X-GitHub-Event", "push")]), body, SECRET), Err(WebhookError::Unauthorized(_))));
        assert!(matches!(
            read(&h(&[("X-Sluice-Signature", "sha256=zz")]), body, SECRET),
            Err(WebhookError::Unauthorized(_))
        ));
        // A signature over another body does not hold.
        let sig = format!("sha256={}", sign(SECRET, b"{}"));
        assert!(matches!(read(&h(&[("X-Sluice-Signature", &sig)]), body, SECRET), Err(WebhookError::Unauthorized(_))));
        assert!(matches!(
            read(&h(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")]), body, SECRET),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn gitlab_and_gitea_payloads_are_read() {
        let body = serde_json::to_vec(&json!({"object_kind": "push", "ref": "refs/heads/dev", "after": SHA,
            "commits": [{"added": ["x"], "modified": [], "removed": []}]}))
        .unwrap();
        let c = change(read(&h(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", SECRET)]), &body, SECRET).unwrap());
        assert_eq!((c.kind, c.files), (ChangeKind::Branch("dev".into()), Some(vec!["x".to_string()])));

        let mr = serde_json::to_vec(&json!({"object_kind": "merge_request", "object_attributes": {
            "action": "open", "source_branch": "f", "target_branch": "main", "last_commit": {"id": SHA}}}))
        .unwrap();
        let c =
            change(read(&h(&[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", SECRET)]), &mr, SECRET).unwrap());
        assert!(matches!(c.kind, ChangeKind::PullRequest { ref event, .. } if event == "OPEN"));

        let body = serde_json::to_vec(&json!({"ref": "refs/heads/main", "after": SHA, "commits": []})).unwrap();
        let sig = sign(SECRET, &body);
        let c = change(read(&h(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &sig)]), &body, SECRET).unwrap());
        assert_eq!(c.revision, SHA);
    }

    #[test]
    fn generic_payloads_and_malformed_bodies() {
        let ok = |body: &Value| {
            let body = serde_json::to_vec(body).unwrap();
            let sig = format!("sha256={}", sign(SECRET, &body));
            read(&h(&[("X-Sluice-Signature", &sig)]), &body, SECRET)
        };
        let c = change(ok(&json!({"revision": SHA, "branch": "main", "files": ["a/b"]})).unwrap());
        assert_eq!((c.kind, c.files), (ChangeKind::Branch("main".into()), Some(vec!["a/b".to_string()])));
        let c = change(ok(&json!({"revision": SHA, "tag": "refs/tags/v2"})).unwrap());
        assert_eq!(c.kind, ChangeKind::Tag("v2".into()));
        for bad in [
            json!({"branch": "main"}),
            json!({"revision": "not-hex!", "branch": "main"}),
            json!({"revision": SHA}),
            json!({"revision": SHA, "branch": "a", "tag": "b"}),
            json!({"revision": SHA, "branch": "main", "files": "a"}),
            json!({"revision": SHA, "branch": "main", "extra": 1}),
            json!([1, 2]),
        ] {
            assert!(matches!(ok(&bad), Err(WebhookError::Malformed(_))), "{bad}");
        }
        let body = b"not json";
        let sig = format!("sha256={}", sign(SECRET, body));
        assert!(matches!(read(&h(&[("X-Sluice-Signature", &sig)]), body, SECRET), Err(WebhookError::Malformed(_))));
    }
}
