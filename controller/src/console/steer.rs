//! The changes of the pipeline page: start, stop, retry, roll back,
//! disable and enable a transition, approve or reject. Each form posts to
//! a handler here that sends the typed operation the CLI sends
//! (`sluice pipeline start`, `execution stop`, `stage retry`, ...) as the
//! signed-in user; the driver checks the permission and records the call.
//! The forms are shown only to those the directory allows
//! ([`super::pipelines`]); a forged post by anyone else is refused by the
//! driver all the same.

use super::layout;
use super::pipelines::PipelineView;
use super::{Change, ConsoleError, Viewer, enc, finish};
use crate::api::{ApiState, ask};
use crate::ops::{
    ActionState, ApprovalStatus, DisableStageTransition, EnableStageTransition, PutApprovalResult, RetryMode,
    RetryStageExecution, RollbackStage, SourceRevisionOverride, StageState, StartPipelineExecution, StopPipelineExecution,
    VariableValue,
};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

/// The prefix of a start form's variable fields (`variable:NAME`).
const VARIABLE: &str = "variable:";
/// The prefix of a start form's revision fields (`revision:ACTION`).
const REVISION: &str = "revision:";
/// A start form's idempotency token (StartPipelineExecution's `clientRequestToken`).
const REQUEST_TOKEN: &str = "client_request_token";

fn back(name: &str) -> String {
    format!("/pipelines/{}", enc(name))
}

/// The start form: one field per declared variable (empty: its default)
/// and per source action (empty: the newest revision).
pub fn start_form(view: &PipelineView, viewer: &Viewer) -> Markup {
    let variables = view.declaration["variables"].as_array().cloned().unwrap_or_default();
    let sources: Vec<String> = view.declaration["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["actionTypeId"]["category"] == "Source")
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    html! {
        details #start .panel.start {
            summary { "Start execution…" }
            form method="post" action={ (back(&view.name)) "/start" } {
                (layout::csrf(viewer))
                // A form sent twice (a double click, a resubmit) starts one
                // execution: the operation's idempotency token, new with
                // each page.
                input type="hidden" name=(REQUEST_TOKEN) value=(hex::encode(rand::random::<[u8; 16]>()));
                @if !variables.is_empty() {
                    fieldset {
                        legend { "Variables" }
                        @for (i, v) in variables.iter().enumerate() {
                            @let name = v["name"].as_str().unwrap_or_default();
                            @let default = v["defaultValue"].as_str().unwrap_or_default();
                            label for={ "start-var-" (i) } { (name) }
                            input #{ "start-var-" (i) } type="text" name={ (VARIABLE) (name) } placeholder=(default)
                                aria-describedby={ "start-var-" (i) "-hint" };
                            p.hint id={ "start-var-" (i) "-hint" } {
                                @if default.is_empty() { "No default." } @else { "Empty: the default, " code { (default) } "." }
                            }
                        }
                    }
                }
                @if !sources.is_empty() {
                    fieldset {
                        legend { "Source revisions" }
                        @for (i, action) in sources.iter().enumerate() {
                            label for={ "start-rev-" (i) } { "Revision for " (action) }
                            input #{ "start-rev-" (i) } type="text" name={ (REVISION) (action) } spellcheck="false"
                                placeholder="newest commit" autocomplete="off";
                        }
                    }
                }
                button.primary type="submit" { "Start execution" }
            }
        }
    }
}

/// Stop one running execution, with a reason, waiting for its running
/// actions or abandoning them.
pub fn stop_form(name: &str, id: &str, status: &str, viewer: &Viewer) -> Markup {
    let key = id.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
    html! {
        details.stop {
            summary { "Stop execution " span.mono { (id) } "…" }
            form method="post" action={ (back(name)) "/executions/" (enc(id)) "/stop" } {
                (layout::csrf(viewer))
                @if status == "Stopping" {
                    p.hint { "This execution is stopping: it waits for its running actions unless you abandon them." }
                }
                label for={ "stop-reason-" (key) } { "Reason" }
                textarea #{ "stop-reason-" (key) } name="reason" {}
                label.check {
                    input type="checkbox" name="abandon" value="yes";
                    " Abandon running actions (do not wait for them)"
                }
                button.danger type="submit" { "Stop execution" }
            }
        }
    }
}

/// Disable a stage's inbound transition, with the reason people will see.
pub fn disable_form(url: &str, index: usize, viewer: &Viewer) -> Markup {
    html! {
        details.disable {
            summary { "Disable transition…" }
            form method="post" action={ (url) "/disable" } {
                (layout::csrf(viewer))
                label for={ "disable-reason-" (index) } { "Reason" }
                textarea #{ "disable-reason-" (index) } name="reason" required {}
                button.danger type="submit" { "Disable transition" }
            }
        }
    }
}

/// Roll a stage back: a new execution runs it again with what an earlier
/// one in which it succeeded had (the newest, or the one named).
pub fn rollback_form(stage_url: &str, index: usize, stage: &str, viewer: &Viewer) -> Markup {
    html! {
        details.rollback {
            summary { "Roll back…" }
            form method="post" action={ (stage_url) "/rollback" } {
                (layout::csrf(viewer))
                p.hint {
                    "Runs " (stage) " again in a new execution, with the revisions and artifacts of an earlier "
                    "execution in which it succeeded."
                }
                label for={ "rollback-target-" (index) } { "Target execution" }
                input #{ "rollback-target-" (index) } type="text" name="target" spellcheck="false" autocomplete="off"
                    placeholder="the newest in which it succeeded";
                button type="submit" { "Roll back stage" }
            }
        }
    }
}

/// The waiting approval a form decides: its execution, the current
/// attempt's token, and what the viewer may decide.
pub struct Waiting<'a> {
    pub execution: &'a str,
    pub token: Option<&'a str>,
    pub offer: &'a super::pipelines::Offer,
}

/// Approve or reject a waiting approval, with a comment.
pub fn approval_form(
    view: &PipelineView,
    key: &str,
    stage: &StageState,
    action: &ActionState,
    waiting: &Waiting<'_>,
    viewer: &Viewer,
) -> Markup {
    let Waiting { execution, token, offer } = *waiting;
    let reject_only = match offer {
        super::pipelines::Offer::RejectOnly(why) => Some(why.as_str()),
        _ => None,
    };
    let url =
        format!("{}/stages/{}/actions/{}/approval", back(&view.name), enc(&stage.stage_name), enc(&action.action_name));
    html! {
        details.decide open {
            summary { @if reject_only.is_some() { "Reject…" } @else { "Approve or reject…" } }
            @if let Some(why) = reject_only {
                p.may-not-decide { "You may reject but not approve: " (why) "." }
            }
            form method="post" action=(url) {
                (layout::csrf(viewer))
                input type="hidden" name="execution" value=(execution);
                @if let Some(token) = token { input type="hidden" name="token" value=(token); }
                label for={ "comment-" (key) } { "Comment" }
                textarea #{ "comment-" (key) } name="comment" {}
                div.actions {
                    @if reject_only.is_none() {
                        button.primary type="submit" name="decision" value="Approved" { "Approve" }
                    }
                    button.danger type="submit" name="decision" value="Rejected" { "Reject" }
                }
            }
        }
    }
}

/// The variables and revision overrides of a start form: the fields
/// filled in, in order.
fn start_request(name: &str, fields: &super::Fields) -> StartPipelineExecution {
    let mut op = StartPipelineExecution {
        name: name.to_string(),
        client_request_token: fields.text(REQUEST_TOKEN).map(str::to_string),
        ..Default::default()
    };
    for (key, value) in &fields.0 {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if let Some(variable) = key.strip_prefix(VARIABLE) {
            op.variables.push(VariableValue { name: variable.to_string(), value: value.to_string() });
        } else if let Some(action) = key.strip_prefix(REVISION) {
            op.source_revisions.push(SourceRevisionOverride {
                action_name: action.to_string(),
                revision_type: None,
                revision_value: value.to_string(),
            });
        }
    }
    op
}

/// `POST /pipelines/{name}/start`.
pub async fn start(State(state): State<ApiState>, Path(name): Path<String>, change: Change) -> Response {
    let op = start_request(&name, &change.fields);
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|out| format!("Started execution {}", out.pipeline_execution_id));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/executions/{id}/stop`.
pub async fn stop(State(state): State<ApiState>, Path((name, id)): Path<(String, String)>, change: Change) -> Response {
    let abandon = change.fields.text("abandon").is_some();
    let reason = change.fields.text("reason").unwrap_or_default().to_string();
    let op = StopPipelineExecution { pipeline_name: name.clone(), pipeline_execution_id: id, abandon, reason };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|out| format!("Execution {}: {}", out.pipeline_execution_id, out.status));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/stages/{stage}/retry`: the failed actions of
/// the stage in the execution the form names.
pub async fn retry(State(state): State<ApiState>, Path((name, stage)): Path<(String, String)>, change: Change) -> Response {
    let execution = match change.fields.require("execution") {
        Ok(id) => id.to_string(),
        Err(e) => return e.into_response(),
    };
    let op = RetryStageExecution {
        pipeline_name: name.clone(),
        stage_name: stage.clone(),
        pipeline_execution_id: execution,
        retry_mode: RetryMode::FailedActions,
    };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done =
        result.map(|out| format!("Retrying the failed actions of {stage} in execution {}", out.pipeline_execution_id));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/stages/{stage}/rollback`: the stage again with
/// what the newest execution in which it succeeded had (or the one the
/// form names).
pub async fn rollback(
    State(state): State<ApiState>,
    Path((name, stage)): Path<(String, String)>,
    change: Change,
) -> Response {
    let target = change.fields.text("target").map(str::to_string);
    let op = RollbackStage { pipeline_name: name.clone(), stage_name: stage.clone(), target_pipeline_execution_id: target };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|out| format!("Rolling back {stage} in execution {}", out.pipeline_execution_id));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/stages/{stage}/transition/disable`.
pub async fn disable(
    State(state): State<ApiState>,
    Path((name, stage)): Path<(String, String)>,
    change: Change,
) -> Response {
    let reason = match change.fields.require("reason") {
        Ok(reason) => reason.to_string(),
        Err(_) => {
            let why = "disabling a transition needs a reason: nothing was changed";
            return ConsoleError::new(axum::http::StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let op = DisableStageTransition { pipeline_name: name.clone(), stage_name: stage.clone(), reason };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|_| format!("Disabled the transition into {stage}"));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/stages/{stage}/transition/enable`.
pub async fn enable(State(state): State<ApiState>, Path((name, stage)): Path<(String, String)>, change: Change) -> Response {
    let op = EnableStageTransition { pipeline_name: name.clone(), stage_name: stage.clone(), reason: String::new() };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|_| format!("Enabled the transition into {stage}"));
    finish(&state, &change.viewer, &back(&name), done)
}

/// `POST /pipelines/{name}/stages/{stage}/actions/{action}/approval`.
pub async fn approval(
    State(state): State<ApiState>,
    Path((name, stage, action)): Path<(String, String, String)>,
    change: Change,
) -> Response {
    let status = match change.fields.get("decision") {
        Some("Approved") => ApprovalStatus::Approved,
        Some("Rejected") => ApprovalStatus::Rejected,
        _ => {
            let why = "the form says neither Approve nor Reject: nothing was decided";
            return ConsoleError::new(axum::http::StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let op = PutApprovalResult {
        pipeline_name: name.clone(),
        stage_name: stage,
        action_name: action,
        status,
        summary: change.fields.text("comment").unwrap_or_default().to_string(),
        execution_id: change.fields.text("execution").map(str::to_string),
        token: change.fields.text("token").map(str::to_string),
    };
    let result = ask(&state, op, change.viewer.caller.clone()).await;
    let done = result.map(|out| {
        let word = if out.status == ApprovalStatus::Approved { "Approved" } else { "Rejected" };
        format!("{word} execution {}: {}", out.pipeline_execution_id, out.result)
    });
    finish(&state, &change.viewer, &back(&name), done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Fields;
    use crate::console::pipelines::tests::{view, viewer};

    #[test]
    fn a_start_form_sends_what_was_filled_in_and_nothing_else() {
        let fields = Fields::parse(
            b"csrf=t&variable:ENV=prod&variable:EMPTY=+&revision:Checkout=abc123&other=x&client_request_token=r1",
        );
        let op = start_request("web", &fields);
        assert_eq!((op.name.as_str(), op.client_request_token.as_deref()), ("web", Some("r1")));
        assert_eq!(op.variables.len(), 1);
        assert_eq!((op.variables[0].name.as_str(), op.variables[0].value.as_str()), ("ENV", "prod"));
        assert_eq!(op.source_revisions.len(), 1);
        assert_eq!(op.source_revisions[0].action_name, "Checkout");
        assert_eq!(op.source_revisions[0].revision_value, "abc123");
        assert!(start_request("web", &Fields::default()).variables.is_empty());
    }

    #[test]
    fn the_start_form_labels_every_field() {
        let html = start_form(&view(), &viewer()).into_string();
        assert!(html.contains(r#"<label for="start-var-0">ENV</label>"#), "{html}");
        assert!(html.contains(r#"name="variable:ENV" placeholder="staging""#), "{html}");
        assert!(html.contains(r#"<label for="start-rev-0">Revision for Checkout</label>"#), "{html}");
        assert!(html.contains(r#"action="/pipelines/web/start""#) && html.contains(r#"value="tok3n""#), "{html}");
        // Each page's form has its own idempotency token.
        let again = start_form(&view(), &viewer()).into_string();
        let token = |h: &str| h.split(r#"name="client_request_token" value=""#).nth(1).map(|t| t[..32].to_string());
        assert!(token(&html).is_some() && token(&html) != token(&again), "{html}");
    }

    #[test]
    fn forms_post_to_escaped_paths_with_their_token() {
        let html = stop_form("a b", "e/1", "InProgress", &viewer()).into_string();
        assert!(html.contains(r#"action="/pipelines/a%20b/executions/e%2F1/stop""#), "{html}");
        assert!(html.contains(r#"id="stop-reason-e1""#) && html.contains(r#"name="abandon""#), "{html}");
        let html = disable_form("/pipelines/web/stages/Gate/transition", 2, &viewer()).into_string();
        assert!(html.contains(r#"action="/pipelines/web/stages/Gate/transition/disable""#), "{html}");
        assert!(html.contains(r#"<label for="disable-reason-2">Reason</label>"#), "{html}");
    }
}
