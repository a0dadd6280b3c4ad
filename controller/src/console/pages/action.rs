//! One action of an execution (`.../executions/{id}/actions/{stage}/{action}`):
//! its facts, its log (ANSI colours rendered, followed live), its
//! attempts and the grants its plugin ran with; and the log's new lines
//! as an HTML fragment (`.../log?after=SEQ`) that the script appends.
//!
//! The log is what `GetExecutionLogs` answers, the lines `sluice logs`
//! prints: secret values were masked on the agent before they left it,
//! so the console shows `***` exactly where the CLI does. The converter
//! only adds markup around that text.

use super::execution_url;
use crate::api::{ApiState, ask};
use crate::console::ansi::AnsiHtml;
use crate::console::layout::{self, Live, Page, Section};
use crate::console::{ConsoleError, Viewer};
use crate::ops::{ActionRunView, GetExecutionLogs, GetPipeline, GetPipelineExecution, GetPipelineState, LogLineView};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

type ActionPath = Path<(String, String, String, String)>;

/// The action's run and its log lines (of its current job), or a 404.
async fn gather(
    state: &ApiState,
    viewer: &Viewer,
    (name, id, stage, action): &(String, String, String, String),
) -> Result<(crate::ops::GetPipelineExecutionOutput, ActionRunView, Vec<LogLineView>), ConsoleError> {
    let op = GetPipelineExecution { pipeline_name: name.clone(), pipeline_execution_id: id.clone() };
    let run = ask(state, op, viewer.caller.clone()).await?;
    let found = run
        .stages
        .iter()
        .find(|s| s.stage_name == *stage)
        .and_then(|s| s.actions.iter().find(|a| a.action_name == *action))
        .cloned()
        .ok_or_else(|| {
            ConsoleError::new(StatusCode::NOT_FOUND, format!("execution {id} has no action {stage} / {action}"))
        })?;
    let op = GetExecutionLogs { pipeline_name: name.clone(), pipeline_execution_id: id.clone() };
    let logs = ask(state, op, viewer.caller.clone()).await?;
    let lines = logs.lines.into_iter().filter(|l| l.stage == *stage && l.action == *action).collect();
    Ok((run, found, lines))
}

/// `GET .../actions/{stage}/{action}`.
pub async fn page(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(path): ActionPath,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ConsoleError> {
    let (mut run, mut action, lines) = gather(&state, &viewer, &path).await?;
    // Why it has not started, as the scheduler says now (the page only:
    // the log's fragments need not ask).
    let live = ask(&state, GetPipelineState { name: path.0.clone() }, viewer.caller.clone()).await.ok();
    super::timeline::live_reasons(&mut run, live.as_ref());
    if let Some(now) =
        run.stages.iter().find(|s| s.stage_name == path.2).and_then(|s| s.actions.iter().find(|a| a.action_name == path.3))
    {
        action.waiting_reason = now.waiting_reason.clone();
    }
    let (name, id, stage, action_name) = &path;
    let current = action.attempt;
    let shown = q.attempt.filter(|n| (1..=current).contains(n)).unwrap_or(current);
    let shown_lines: Vec<LogLineView> = lines.iter().filter(|l| attempt_of(l, current) == shown).cloned().collect();
    let version = Some(run.pipeline_execution.pipeline_version);
    let declared = ask(&state, GetPipeline { name: name.clone(), version }, viewer.caller.clone()).await.ok();
    let grants =
        declared.as_ref().and_then(|d| declared_action(&d.pipeline, stage, action_name)).map(|a| a["capabilities"].clone());
    let body = html! {
        p { a href=(execution_url(name, id)) { "Back to execution " (id) } }
        (facts(&action))
        (log_section(stage, action_name, &action, &shown_lines, shown))
        (attempts_section(&action, &lines, shown))
        (grants_section(grants.as_ref()))
        (configuration_section(&action))
    };
    let page = Page::new(format!("{stage} / {action_name}"), Section::Pipelines, body);
    Ok(page.live(Live::Pipeline(name.clone())).render(&state, &viewer))
}

fn facts(a: &ActionRunView) -> Markup {
    html! {
        dl.facts #action-facts data-refresh {
            dt { "Status" } dd { (layout::status(a.status.as_deref().unwrap_or("Not run"))) }
            dt { "Agent" } dd.mono { (a.agent.as_deref().unwrap_or("-")) }
            dt { "Attempt" } dd { (a.attempt) }
            dt { "Started" } dd { @if let Some(t) = &a.start_time { (layout::time(t)) } @else { "-" } }
            dt { "Last update" } dd { @if let Some(t) = &a.last_update_time { (layout::time(t)) } @else { "-" } }
            @if let Some(s) = &a.summary { dt { "Summary" } dd { (s) } }
            @if let Some(e) = &a.error_details { dt { "Error" } dd { (e.code) ": " (e.message) } }
            @if let Some(w) = a.waiting_reason.as_deref().filter(|_| a.status.as_deref() == Some("InProgress")) {
                dt { "Waiting" } dd { (w) }
            }
            @if let Some(url) = &a.external_execution_url { dt { "External" } dd { a href=(url) rel="noopener noreferrer" { (url) } } }
        }
    }
}

/// Whether the action's log is done growing.
fn finished(a: &ActionRunView) -> bool {
    a.status.as_deref().is_some_and(|s| s != "InProgress")
}

/// The attempt a line was written in: the one its job id names (a line
/// of no attempt's job counts as the current one's).
fn attempt_of(line: &LogLineView, current: u32) -> u32 {
    line.attempt.unwrap_or(current)
}

fn log_section(stage: &str, action: &str, a: &ActionRunView, lines: &[LogLineView], shown: u32) -> Markup {
    let job = lines.last().map(|l| l.job_id.as_str()).unwrap_or_default();
    let current = shown == a.attempt;
    html! {
        section aria-labelledby="log-heading" {
            h2 #log-heading { @if current { "Log" } @else { "Log of attempt " (shown) } }
            div.log-tools {
                // Shown by the script: without it there is nothing to follow.
                @if current { button.plain #follow type="button" aria-pressed="true" aria-controls="log" hidden { "Follow log" } }
                p #log-state data-refresh {
                    @if !current { "Attempt " (shown) " of " (a.attempt) ": finished" }
                    @else if finished(a) { "Finished" } @else { "Live: new lines appear as they are written" }
                }
            }
            pre.log #log role="log" aria-label={ "Log of " (stage) " / " (action) } tabindex="0"
                data-following=(if current { "true" } else { "false" }) data-current=(if current { "true" } else { "false" })
                data-job=(job) data-stage=(stage) data-action=(action) {
                @if lines.is_empty() { span.muted.empty { "No log lines yet." } }
                (PreEscaped(render_lines(lines, None)))
            }
        }
    }
}

/// Lines as HTML, one `<span class="line" data-seq>` each, colours carried
/// from the first line; only those after `after` are returned.
pub fn render_lines(lines: &[LogLineView], after: Option<u64>) -> String {
    let mut ansi = AnsiHtml::new();
    let mut out = String::new();
    for line in lines {
        let html = ansi.chunk(&line.text);
        if after.is_none_or(|a| line.seq > a) {
            out.push_str(&format!("<span class=\"line\" data-seq=\"{}\">{html}</span>", line.seq));
        }
    }
    out
}

/// One row per attempt, newest first: its status (the current one's as
/// the action says; earlier ones ran before it), its log's lines, a link
/// to its log.
fn attempts_section(a: &ActionRunView, lines: &[LogLineView], shown: u32) -> Markup {
    let count = |n: u32| lines.iter().filter(|l| attempt_of(l, a.attempt) == n).count();
    html! {
        h2 { "Attempts" }
        div.table-wrap #attempts data-refresh { table {
            caption.visually-hidden { "Attempts" }
            thead { tr { th scope="col" { "Attempt" } th scope="col" { "Status" } th scope="col" { "Log lines" } th scope="col" { "Log" } } }
            tbody {
                @for n in (1..=a.attempt).rev() { tr {
                    th scope="row" { (n) }
                    td { @if n == a.attempt { (layout::status(a.status.as_deref().unwrap_or("Not run"))) } @else { "Ran before attempt " (n + 1) } }
                    td { (count(n)) }
                    td { @if n == shown { "Shown" } @else if n == a.attempt { a href="?" { "Log of attempt " (n) } } @else { a href={ "?attempt=" (n) } { "Log of attempt " (n) } } }
                } }
            }
        } }
        @if !a.lost_on.is_empty() {
            p { "Attempts lost with their agent: " @for (i, agent) in a.lost_on.iter().enumerate() { @if i > 0 { ", " } span.mono { (agent) } } }
        }
    }
}

/// The action's declaration in a pipeline version (`pipeline` of GetPipeline).
fn declared_action<'a>(pipeline: &'a Value, stage: &str, action: &str) -> Option<&'a Value> {
    let stages = pipeline["stages"].as_array()?;
    let s = stages.iter().find(|s| s["name"] == stage)?;
    s["actions"].as_array()?.iter().find(|a| a["name"] == action)
}

fn grants_section(grants: Option<&Value>) -> Markup {
    let lists: Vec<(&str, Vec<String>)> = grants
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (k.as_str(), v.as_array().into_iter().flatten().map(|x| x.as_str().unwrap_or("?").to_string()).collect())
                })
                .filter(|(_, v): &(&str, Vec<String>)| !v.is_empty())
                .collect()
        })
        .unwrap_or_default();
    html! {
        h2 { "Grants" }
        @if lists.is_empty() {
            p { "No grants: the plugin runs with nothing of the host." }
        } @else {
            dl.facts #grants { @for (kind, values) in &lists {
                dt { (grant_label(kind)) } dd.mono { (values.join(", ")) }
            } }
        }
    }
}

fn grant_label(kind: &str) -> &str {
    match kind {
        "exec" => "Programs",
        "http" => "HTTP hosts",
        "secrets" => "Secrets",
        "env" => "Environment",
        "fs" => "Host paths",
        "net" => "Network ports",
        other => other,
    }
}

fn configuration_section(a: &ActionRunView) -> Markup {
    html! {
        h2 { "Configuration" }
        @if a.resolved_configuration.is_empty() { p { "No configuration." } } @else {
            div.table-wrap { table {
                caption.visually-hidden { "Configuration" }
                thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                tbody { @for (k, v) in &a.resolved_configuration { tr {
                    th scope="row" { (k) } td.mono { (v.as_str().map_or_else(|| v.to_string(), str::to_string)) }
                } } }
            } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AttemptQuery {
    attempt: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    after: Option<u64>,
    /// The job the page shows: lines of another (a newer attempt's) come
    /// from its start.
    job: Option<String>,
}

/// The header that names the job a log fragment belongs to: a new attempt
/// starts a new log, which the script then shows from its start.
pub const LOG_JOB_HEADER: &str = "x-sluice-log-job";

/// `GET .../actions/{stage}/{action}/log?after=SEQ`: the lines after `SEQ`
/// as HTML (for the script that follows the log).
pub async fn log_lines(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(path): ActionPath,
    Query(q): Query<LogQuery>,
) -> Result<Response, ConsoleError> {
    let (_, action, lines) = gather(&state, &viewer, &path).await?;
    let lines: Vec<LogLineView> = lines.into_iter().filter(|l| attempt_of(l, action.attempt) == action.attempt).collect();
    let job = lines.last().map(|l| l.job_id.clone()).unwrap_or_default();
    let after = q.after.filter(|_| q.job.as_deref() == Some(job.as_str()));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (
            header::HeaderName::from_static(LOG_JOB_HEADER),
            HeaderValue::from_str(&job).unwrap_or(HeaderValue::from_static("")),
        ),
        (
            header::HeaderName::from_static("x-sluice-log-finished"),
            HeaderValue::from_static(if finished(&action) { "1" } else { "0" }),
        ),
    ];
    Ok((headers, render_lines(&lines, after)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, text: &str) -> LogLineView {
        LogLineView {
            job_id: "j1".into(),
            stage: "Build".into(),
            action: "Make".into(),
            seq,
            text: text.into(),
            attempt: Some(1),
        }
    }

    #[test]
    fn lines_keep_their_colours_across_a_fragment() {
        let lines = [line(0, "\u{fffd}[32mgreen\n"), line(1, "still green\n"), line(2, "<b>\u{fffd}[0m\n")];
        let all = render_lines(&lines, None);
        assert!(
            all.starts_with("<span class=\"line\" data-seq=\"0\"><span class=\"ansi-fg-green\">green\n</span></span>"),
            "{all}"
        );
        let after = render_lines(&lines, Some(0));
        assert!(
            after.starts_with("<span class=\"line\" data-seq=\"1\"><span class=\"ansi-fg-green\">still green"),
            "{after}"
        );
        assert!(after.contains("&lt;b&gt;") && !after.contains("<b>"), "{after}");
        assert_eq!(render_lines(&lines, Some(2)), "");
    }

    #[test]
    fn grants_come_from_the_declared_action() {
        let pipeline = serde_json::json!({"stages": [{"name": "Build", "actions": [
            {"name": "Make", "capabilities": {"exec": ["cargo"], "secrets": ["TOKEN"], "http": []}}]}]});
        let action = declared_action(&pipeline, "Build", "Make").unwrap();
        let html = grants_section(Some(&action["capabilities"])).into_string();
        assert!(
            html.contains("Programs") && html.contains("cargo") && html.contains("TOKEN") && !html.contains("HTTP hosts"),
            "{html}"
        );
        assert!(grants_section(None).into_string().contains("No grants"));
        assert!(declared_action(&pipeline, "Build", "Nope").is_none());
    }
}
