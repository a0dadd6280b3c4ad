//! An execution's history (`/pipelines/{name}/executions`), one execution
//! as a timeline (`.../executions/{id}`) and its artifacts' download
//! (`.../executions/{id}/artifacts/{artifact}`).

use super::timeline::{self, ArtifactRow, Wait};
use super::{action_url, execution_url, revision_link, size};
use crate::api::{ApiState, ask};
use crate::console::layout::{self, Live, Page, Section};
use crate::console::{ConsoleError, Viewer, enc};
use crate::ops::{
    ExecutionSummary, GetArtifact, GetPipelineExecution, GetPipelineExecutionOutput, GetPipelineState,
    ListPipelineExecutions, StageRunView,
};
use crate::policy;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

/// Executions on one page of the history.
const PAGE: usize = 25;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    /// The token of the page to show (the operation's `nextToken`).
    next: Option<String>,
}

/// `GET /pipelines/{name}/executions`: the history, newest first, a page at a time.
pub async fn history(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ConsoleError> {
    let op = ListPipelineExecutions { pipeline_name: name.clone(), max_results: Some(PAGE), next_token: q.next.clone() };
    let out = ask(&state, op, viewer.caller.clone()).await?;
    let body = render_history(&name, &out.pipeline_execution_summaries, q.next.is_some(), out.next_token.as_deref());
    let page = Page::new(format!("Executions of {name}"), Section::Pipelines, body);
    Ok(page.live(Live::Pipeline(name)).render(&state, &viewer))
}

pub fn render_history(name: &str, runs: &[ExecutionSummary], paged: bool, next: Option<&str>) -> Markup {
    let here = format!("/pipelines/{}/executions", enc(name));
    html! {
        p { a href={ "/pipelines/" (enc(name)) } { "Back to " (name) } }
        div #history data-refresh {
            @if runs.is_empty() {
                p { "No executions yet." }
            } @else {
                div.table-wrap { table {
                    caption { "Execution history" }
                    thead { tr {
                        th scope="col" { "Execution" }
                        th scope="col" { "Status" }
                        th scope="col" { "Trigger" }
                        th scope="col" { "Revisions" }
                        th scope="col" { "Started" }
                        th scope="col" { "Last update" }
                    } }
                    tbody { @for run in runs { tr {
                        th scope="row" {
                            a.mono href=(execution_url(name, &run.pipeline_execution_id)) { (run.pipeline_execution_id) }
                        }
                        td { (layout::status(&run.status)) @if let Some(s) = &run.status_summary { " " span.muted { (s) } } }
                        td { (run.trigger.trigger_type) @if !run.trigger.trigger_detail.is_empty() { span.muted { " (" (run.trigger.trigger_detail) ")" } } }
                        td { @for r in &run.source_revisions {
                            span { (r.action_name) ": " (revision_link(&r.revision_id)) } " "
                        } }
                        td { (layout::time(&run.start_time)) }
                        td { (layout::time(&run.last_update_time)) }
                    } } }
                } }
            }
            nav.pager aria-label="Pages" {
                @if paged { a href=(here) { "Newer executions" } " " }
                @if let Some(token) = next { a href={ (here) "?next=" (enc(token)) } rel="next" { "Older executions" } }
            }
        }
    }
}

/// `GET /pipelines/{name}/executions/{id}`: the execution as a timeline.
pub async fn execution(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let op = GetPipelineExecution { pipeline_name: name.clone(), pipeline_execution_id: id.clone() };
    let mut run = ask(&state, op, viewer.caller.clone()).await?;
    // The transitions and the scheduler's reasons say why a held
    // execution waits; a viewer who may read the execution may read the
    // state, and without it the page still says that it waits.
    let pipeline_state = ask(&state, GetPipelineState { name: name.clone() }, viewer.caller.clone()).await.ok();
    timeline::live_reasons(&mut run, pipeline_state.as_ref());
    let waits = timeline::waits(&run, pipeline_state.as_ref());
    let downloads = viewer.may::<GetArtifact>(&state, &policy::pipeline(&name));
    let body = render_execution(&run, &waits, &timeline::artifacts(&run), downloads);
    let page = Page::new(format!("Execution {id}"), Section::Pipelines, body);
    Ok(page.live(Live::Pipeline(name)).render(&state, &viewer))
}

pub fn render_execution(
    run: &GetPipelineExecutionOutput,
    waits: &[Wait],
    artifacts: &[ArtifactRow],
    downloads: bool,
) -> Markup {
    let e = &run.pipeline_execution;
    let name = &e.pipeline_name;
    html! {
        p {
            a href={ "/pipelines/" (enc(name)) } { "Back to " (name) } " · "
            a href={ "/pipelines/" (enc(name)) "/executions" } { "Execution history" }
        }
        div #execution data-refresh {
            h2 { "Summary" }
            dl.facts {
                dt { "Pipeline" } dd { a href={ "/pipelines/" (enc(name)) } { (name) } }
                dt { "Version" } dd { (e.pipeline_version) }
                dt { "Status" } dd { (layout::status(&e.status)) @if let Some(s) = &e.status_summary { " " (s) } }
                dt { "Trigger" } dd { (e.trigger.trigger_type) @if !e.trigger.trigger_detail.is_empty() { ": " (e.trigger.trigger_detail) } }
                dt { "Started" } dd { (layout::time(&e.start_time)) }
                dt { "Last update" } dd { (layout::time(&e.last_update_time)) }
                @if let Some(r) = &e.rollback_metadata {
                    dt { "Rollback of" } dd { "stage " (r.stage) " to " a href=(execution_url(name, &r.rollback_target_pipeline_execution)) { (r.rollback_target_pipeline_execution) } }
                }
            }
            h2 { "Revisions" }
            @if e.source_revisions.is_empty() { p { "No source revisions." } } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Source revisions" }
                    thead { tr { th scope="col" { "Source action" } th scope="col" { "Revision" } th scope="col" { "Summary" } } }
                    tbody { @for r in &e.source_revisions { tr {
                        th scope="row" { (r.action_name) }
                        td { (revision_link(&r.revision_id)) @if r.pinned { " " span.muted { "(pinned)" } } }
                        td { (r.revision_summary.as_deref().unwrap_or("")) }
                    } } }
                } }
            }
            h2 { "Variables" }
            @if e.variables.is_empty() { p { "No variables." } } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Variables" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                    tbody { @for v in &e.variables { tr { th scope="row" { (v.name) } td.mono { (v.resolved_value) } } } }
                } }
            }
            h2 { "Timeline" }
            ol.timeline { @for stage in &run.stages { (stage_item(name, &e.pipeline_execution_id, stage)) } }
            h2 { "Why it waited" }
            @if waits.is_empty() { p { "Nothing waited." } } @else {
                ul #waits { @for w in waits { li {
                    strong { (w.place) } ": " (w.why) @if w.now { " " span.status.wait { "Now" } }
                } } }
            }
            h2 { "Artifacts" }
            (render_artifacts(name, &e.pipeline_execution_id, artifacts, downloads))
        }
    }
}

fn stage_item(name: &str, id: &str, stage: &StageRunView) -> Markup {
    html! {
        li data-stage=(stage.stage_name) {
            h3 { (stage.stage_name) " " (layout::status(stage.status.as_deref().unwrap_or("Not reached"))) }
            ul.timeline-actions { @for a in &stage.actions { li data-action=(a.action_name) {
                a href=(action_url(name, id, &stage.stage_name, &a.action_name)) { (a.action_name) } " "
                (layout::status(a.status.as_deref().unwrap_or("Not run")))
                @if let Some(agent) = &a.agent { " on " span.mono { (agent) } }
                @if a.attempt > 1 { " · attempt " (a.attempt) }
                @if let Some(d) = duration_ms(a.start_time.as_deref(), a.last_update_time.as_deref()) { " · " (layout::duration(d)) }
                @if let Some(why) = a.waiting_reason.as_deref().filter(|_| a.status.as_deref() == Some("InProgress")) {
                    p.waited { "Waiting: " (why) }
                }
                @if let Some(err) = &a.error_details { p.waited { (err.code) ": " (err.message) } }
            } } }
        }
    }
}

fn render_artifacts(name: &str, id: &str, artifacts: &[ArtifactRow], downloads: bool) -> Markup {
    html! {
        @if artifacts.is_empty() { p { "No artifacts." } } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Artifacts" }
                thead { tr {
                    th scope="col" { "Artifact" } th scope="col" { "Produced by" } th scope="col" { "Size" } th scope="col" { "Digest" }
                } }
                tbody { @for a in artifacts { tr {
                    th scope="row" {
                        @if downloads {
                            a href={ (execution_url(name, id)) "/artifacts/" (enc(&a.name)) } download { "Download " (a.name) }
                        } @else { (a.name) }
                    }
                    td { (a.stage) " / " (a.action) }
                    td { (size(a.size)) }
                    td.mono { (a.digest.get(..19).unwrap_or(&a.digest)) }
                } } }
            } }
        }
    }
}

/// Milliseconds between two RFC 3339 times, when both parse.
pub fn duration_ms(start: Option<&str>, end: Option<&str>) -> Option<u64> {
    let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
    let (start, end) = (parse(start?)?, parse(end?)?);
    u64::try_from((end - start).whole_milliseconds()).ok()
}

/// `GET /pipelines/{name}/executions/{id}/artifacts/{artifact}`: the
/// artifact's archive, after `GetArtifact` (the API's operation and
/// permission) allowed it.
pub async fn download(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path((name, id, artifact)): Path<(String, String, String)>,
) -> Result<Response, ConsoleError> {
    let op = GetArtifact { pipeline_name: name, pipeline_execution_id: id, artifact_name: artifact };
    let found = ask(&state, op, viewer.caller.clone()).await?;
    archive(&state, &found.name, &found.digest).await.map_err(|e| match e {
        Unserved::Gone => ConsoleError::new(StatusCode::GONE, GONE),
        Unserved::Unreadable(message) => ConsoleError::new(StatusCode::BAD_GATEWAY, message),
    })
}

/// Why an artifact's archive is not served.
#[derive(Debug)]
pub enum Unserved {
    /// Not stored any more (retention removed it).
    Gone,
    /// The store failed to give it, or gave bytes that are not its digest's
    /// (object storage: a changed object, an unreachable bucket).
    Unreadable(String),
}

/// The archive of `digest` as an attachment named after the artifact. The
/// console's link and the API's `.../content` both end here, after
/// `GetArtifact` allowed them. From object storage the blob is copied to
/// the cache and verified first (issue 18, s3), so that a changed object is
/// an error answer rather than a download cut off at its end.
pub async fn archive(state: &ApiState, name: &str, digest: &str) -> Result<Response, Unserved> {
    let (file, len): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64) = if state.artifacts.is_local() {
        state.artifacts.open_blob(digest, 0).await.map_err(|_| Unserved::Gone)?
    } else {
        if state.artifacts.size_of(digest).is_none() {
            return Err(Unserved::Gone);
        }
        let path = state.artifacts.local_file(digest).await.map_err(|e| {
            tracing::error!(digest, "serving an artifact: {e:#}");
            Unserved::Unreadable(format!("{e:#}"))
        })?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| Unserved::Gone)?;
        let len = file.metadata().await.map_err(|e| Unserved::Unreadable(e.to_string()))?.len();
        (Box::new(file), len)
    };
    let file_name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}.tar\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar")),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
    ];
    Ok((headers, Body::from_stream(blocks(file))).into_response())
}

/// What answers for an artifact whose blob retention removed.
pub const GONE: &str = "the artifact is no longer stored (removed by retention)";

/// A file as a stream of 64 KiB blocks.
fn blocks(
    file: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures_util::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut block = vec![0u8; 64 << 10];
        let n = file.read(&mut block).await?;
        if n == 0 {
            return Ok(None);
        }
        block.truncate(n);
        Ok(Some((axum::body::Bytes::from(block), file)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str) -> GetPipelineExecutionOutput {
        serde_json::from_value(serde_json::json!({
            "pipelineExecution": {
                "pipelineName": name, "pipelineVersion": 3, "pipelineExecutionId": "e1", "status": "Succeeded",
                "statusSummary": null, "trigger": {"triggerType": "Webhook", "triggerDetail": "<push>"},
                "startTime": "2026-12-06T07:00:00Z", "lastUpdateTime": "2026-12-06T07:00:05Z",
                "variables": [{"name": "ENV", "resolvedValue": "<prod>"}],
                "sourceRevisions": [{"actionName": "Source", "revisionId": "abc123", "revisionSummary": "fix", "pinned": true}],
                "rollbackMetadata": null
            },
            "stages": [{"stageName": "Build", "status": "Succeeded", "conditionRules": [], "actions": [{
                "actionName": "Make", "runOrder": 1, "status": "Succeeded", "attempt": 2, "agent": "ag-1", "summary": null,
                "errorDetails": null, "lostOn": [], "externalExecutionUrl": null, "startTime": "2026-12-06T07:00:01Z",
                "lastUpdateTime": "2026-12-06T07:00:04Z", "outputArtifacts": [{"name": "bin", "digest": "sha256:0011", "size": 2048}],
                "outputVariables": {}, "approval": null, "waitingReason": null, "inputArtifacts": [], "resolvedConfiguration": {}}]}]
        }))
        .unwrap()
    }

    #[test]
    fn an_execution_reads_as_a_timeline_with_downloads_only_when_allowed() {
        let r = run("we<b>");
        let html = render_execution(&r, &[], &timeline::artifacts(&r), true).into_string();
        assert!(
            html.contains("href=\"/pipelines/we%3Cb%3E/executions/e1/artifacts/bin\"") && html.contains("Download bin"),
            "{html}"
        );
        assert!(html.contains("we&lt;b&gt;") && !html.contains("we<b>"), "{html}");
        assert!(html.contains("&lt;prod&gt;") && html.contains("&lt;push&gt;"), "{html}");
        assert!(html.contains("(pinned)") && html.contains("href=\"/revisions/abc123\""), "{html}");
        assert!(html.contains("on <span class=\"mono\">ag-1</span> · attempt 2 · 3.0 s"), "{html}");
        assert!(html.contains("Nothing waited.") && html.contains("2.0 KiB"), "{html}");
        let hidden = render_execution(&r, &[], &timeline::artifacts(&r), false).into_string();
        assert!(!hidden.contains("Download bin") && !hidden.contains("/artifacts/"), "{hidden}");
    }

    #[test]
    fn the_history_pages_with_the_operations_token() {
        let first = render_history("web", &[], false, Some("tok/+=")).into_string();
        assert!(
            first.contains("href=\"/pipelines/web/executions?next=tok%2F%2B%3D\"") && !first.contains("Newer executions")
        );
        let last = render_history("web", &[], true, None).into_string();
        assert!(last.contains("Newer executions") && !last.contains("Older executions"), "{last}");
        assert!(last.contains("No executions yet."));
    }

    #[test]
    fn durations_come_from_the_two_times() {
        assert_eq!(duration_ms(Some("2026-12-06T07:00:00Z"), Some("2026-12-06T07:00:01.5Z")), Some(1500));
        assert_eq!(duration_ms(Some("2026-12-06T07:00:01Z"), Some("2026-12-06T07:00:00Z")), None);
        assert_eq!(duration_ms(None, Some("2026-12-06T07:00:00Z")), None);
        assert_eq!(duration_ms(Some("yesterday"), Some("2026-12-06T07:00:00Z")), None);
    }
}
