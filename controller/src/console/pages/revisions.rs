//! The revision flow (`/revisions`, `/revisions/{revision}`): pick a
//! commit, from the recent ones or by a prefix of its id, and see every
//! pipeline, stage and action it reached and where it stopped. The same
//! operations as `sluice revision list|show` (`ListRevisions`,
//! `GetRevisionFlow`), which keep to the pipelines the viewer may read.

use super::{action_url, execution_url, revision_link};
use crate::api::{ApiState, ask};
use crate::console::layout::{self, Live, Page, Section};
use crate::console::{ConsoleError, Viewer, enc, see_other};
use crate::ops::{FlowStop, GetRevisionFlow, GetRevisionFlowOutput, ListRevisions, RevisionFlowExecution, RevisionSummary};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /revisions[?q=PREFIX]`: recent revisions, or those matching a
/// prefix (one match goes straight to its flow).
pub async fn list(
    State(state): State<ApiState>,
    viewer: Viewer,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ConsoleError> {
    let prefix = q.q.trim().to_string();
    let op = ListRevisions { prefix: (!prefix.is_empty()).then(|| prefix.clone()), max_results: Some(50) };
    let out = ask(&state, op, viewer.caller.clone()).await?;
    if !prefix.is_empty()
        && let [one] = out.revisions.as_slice()
    {
        return Ok(see_other(&format!("/revisions/{}", enc(&one.revision_id))));
    }
    let body = render_list(&prefix, &out.revisions);
    Ok(Page::new("Revision flow", Section::Revisions, body).live(Live::All).render(&state, &viewer))
}

pub fn render_list(prefix: &str, revisions: &[RevisionSummary]) -> Markup {
    html! {
        form.search method="get" action="/revisions" role="search" aria-label="Find a revision" {
            label for="revision-q" { "Revision" }
            input #revision-q type="search" name="q" value=(prefix) placeholder="a commit id or its first characters" autocomplete="off";
            button.primary type="submit" { "Show flow" }
        }
        div #revisions data-refresh {
            h2 { @if prefix.is_empty() { "Recent revisions" } @else { "Matches" } }
            @if revisions.is_empty() {
                p { @if prefix.is_empty() { "No execution carried a source revision yet." } @else { "No revision starts with " code { (prefix) } "." } }
            } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Revisions" }
                    thead { tr { th scope="col" { "Revision" } th scope="col" { "Summary" } th scope="col" { "Pipelines" } th scope="col" { "Last seen" } } }
                    tbody { @for r in revisions { tr {
                        th scope="row" { (revision_link(&r.revision_id)) }
                        td { (r.revision_summary.as_deref().and_then(|s| s.lines().next()).unwrap_or("")) }
                        td { (r.pipelines.join(", ")) }
                        td { (layout::time(&r.last_seen)) }
                    } } }
                } }
            }
        }
    }
}

/// `GET /revisions/{revision}`.
pub async fn flow(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(revision): Path<String>,
) -> Result<Response, ConsoleError> {
    let out = ask(&state, GetRevisionFlow { revision }, viewer.caller.clone()).await?;
    let title = format!("Revision {}", out.revision_id);
    Ok(Page::new(title, Section::Revisions, render_flow(&out)).live(Live::All).render(&state, &viewer))
}

pub fn render_flow(out: &GetRevisionFlowOutput) -> Markup {
    html! {
        p { a href="/revisions" { "Other revisions" } }
        @if let Some(summary) = &out.revision_summary { p.summary { (summary) } }
        div #flow data-refresh {
            @if out.pipelines.is_empty() { p { "No execution of a pipeline you may read carried it." } }
            @for p in &out.pipelines {
                section.flow-pipeline aria-labelledby={ "flow-" (enc(&p.pipeline_name)) } {
                    h2 id={ "flow-" (enc(&p.pipeline_name)) } { a href={ "/pipelines/" (enc(&p.pipeline_name)) } { (p.pipeline_name) } }
                    @for e in &p.executions { (execution(&p.pipeline_name, e)) }
                }
            }
        }
    }
}

fn execution(pipeline: &str, e: &RevisionFlowExecution) -> Markup {
    html! {
        article.flow-execution data-execution=(e.pipeline_execution_id) data-status=(e.status) {
            h3 {
                a href=(execution_url(pipeline, &e.pipeline_execution_id)) { "Execution " (e.pipeline_execution_id) }
                " " (layout::status(&e.status))
            }
            p.muted { (e.trigger_type) " via " (e.source_action) ", started " (layout::time(&e.start_time)) }
            ol.flow { @for s in &e.stages {
                li data-stage=(s.stage_name) data-reached=(if s.status.is_some() { "true" } else { "false" }) {
                    span.stage-name { (s.stage_name) } " "
                    (layout::status(s.status.as_deref().unwrap_or("Not reached")))
                    @if s.status.is_some() { ul { @for a in &s.actions { li {
                        a href=(action_url(pipeline, &e.pipeline_execution_id, &s.stage_name, &a.action_name)) { (a.action_name) }
                        " " (layout::status(a.status.as_deref().unwrap_or("Not run")))
                    } } } }
                }
                @if !is_last(&e.stages, s) { li.arrow aria-hidden="true" { "→" } }
            } }
            p.stopped { (stop_line(e.stopped_at.as_ref(), &e.status)) }
        }
    }
}

fn is_last<T>(all: &[T], item: &T) -> bool {
    all.last().is_some_and(|last| std::ptr::eq(last, item))
}

/// Where the execution stopped, in words.
pub fn stop_line(stop: Option<&FlowStop>, status: &str) -> String {
    let Some(stop) = stop else { return format!("Reached the end: {status}") };
    let running = matches!(status, "InProgress" | "Stopping");
    if stop.before_stage {
        let verb = if running { "Waiting before" } else { "Stopped before" };
        return format!("{verb} {}", stop.stage_name);
    }
    let at = match &stop.action_name {
        Some(a) => format!("{} / {a}", stop.stage_name),
        None => stop.stage_name.clone(),
    };
    if running { format!("In progress at {at}: {}", stop.status) } else { format!("Stopped at {at}: {}", stop.status) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_names_where_it_stopped_and_what_it_never_reached() {
        let out: GetRevisionFlowOutput = serde_json::from_value(serde_json::json!({
            "revisionId": "abc123", "revisionSummary": "fix <it>",
            "pipelines": [{"pipelineName": "web", "executions": [{
                "pipelineExecutionId": "e1", "status": "Failed", "statusSummary": null, "sourceAction": "Source",
                "triggerType": "Webhook", "startTime": "2026-12-06T07:00:00Z", "lastUpdateTime": "2026-12-06T07:00:00Z",
                "stages": [
                    {"stageName": "Build", "status": "Failed", "actions": [{"actionName": "Test", "status": "Failed"}]},
                    {"stageName": "Deploy", "status": null, "actions": [{"actionName": "Ship", "status": null}]}
                ],
                "stoppedAt": {"stageName": "Build", "actionName": "Test", "status": "Failed", "beforeStage": false}
            }]}]
        }))
        .unwrap();
        let html = render_flow(&out).into_string();
        assert!(html.contains("Stopped at Build / Test: Failed"), "{html}");
        assert!(html.contains("data-stage=\"Deploy\" data-reached=\"false\"") && html.contains("Not reached"), "{html}");
        assert!(html.contains("fix &lt;it&gt;"));
        assert!(html.contains("href=\"/pipelines/web/executions/e1/actions/Build/Test\""));
        assert_eq!(stop_line(None, "Succeeded"), "Reached the end: Succeeded");
        let held =
            FlowStop { stage_name: "Deploy".into(), action_name: None, status: "NotEntered".into(), before_stage: true };
        assert_eq!(stop_line(Some(&held), "InProgress"), "Waiting before Deploy");
    }
}
