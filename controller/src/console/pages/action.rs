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
    let op = GetExecutionLogs {
        pipeline_name: name.clone(),
        pipeline_execution_id: id.clone(),
        job_id: None,
        after_seq: None,
        max_lines: None,
    };
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
    let shown = q.attempt.trim().parse().ok().filter(|n| (1..=current).contains(n)).unwrap_or(current);
    let shown_lines: Vec<LogLineView> = lines.iter().filter(|l| attempt_of(l, current) == shown).cloned().collect();
    let version = Some(run.pipeline_execution.pipeline_version);
    let declared = ask(&state, GetPipeline { name: name.clone(), version }, viewer.caller.clone()).await.ok();
    let grants =
        declared.as_ref().and_then(|d| declared_action(&d.pipeline, stage, action_name)).map(|a| a["capabilities"].clone());
    let body = html! {
        p { a href=(execution_url(name, id)) { "Back to execution " (id) } }
        (facts(&action))
        (log_section(&path, &action, &shown_lines, shown))
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

/// The most lines the action's page renders: the tail of the log. The whole
/// text is `sluice logs` (a log may be 16 MiB, and its markup several
/// times that).
pub const PAGE_LINES: usize = 5000;

/// The most lines one fragment of a followed log carries (the script asks
/// again when it got this many).
const FRAGMENT_LINES: u32 = 1000;

fn log_section(path: &(String, String, String, String), a: &ActionRunView, lines: &[LogLineView], shown: u32) -> Markup {
    let (name, id, stage, action) = path;
    let job = lines.last().map(|l| l.job_id.as_str()).unwrap_or_default();
    let current = shown == a.attempt;
    let skipped = lines.len().saturating_sub(PAGE_LINES);
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
            @if skipped > 0 {
                p.hint #log-cut {
                    "Showing the last " (PAGE_LINES) " of " (lines.len()) " lines. The whole log: "
                    code { "sluice logs " (name) " --execution " (id) }
                }
            }
            pre.log #log role="log" aria-label={ "Log of " (stage) " / " (action) } tabindex="0"
                data-following=(if current { "true" } else { "false" }) data-current=(if current { "true" } else { "false" })
                data-job=(job) data-stage=(stage) data-action=(action) data-keep=(PAGE_LINES) {
                @if lines.is_empty() { span.muted.empty { "No log lines yet." } }
                (PreEscaped(render_lines(lines, skipped)))
            }
        }
    }
}

/// Lines as HTML, one `<span class="line" data-seq>` each, colours carried
/// from the first line; the first `skip` lines only set the colours (the
/// page shows a log's tail).
pub fn render_lines(lines: &[LogLineView], skip: usize) -> String {
    let mut ansi = AnsiHtml::new();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let html = ansi.chunk(&line.text);
        if i >= skip {
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

/// Query values are text, read leniently: a hand-edited link shows the
/// default rather than axum's bare error.
#[derive(Debug, Deserialize)]
pub struct AttemptQuery {
    #[serde(default)]
    attempt: String,
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    after: String,
    /// The job the page shows: lines of another (a newer attempt's) come
    /// from its start.
    job: Option<String>,
}

/// The header that names the job a log fragment belongs to: a new attempt
/// starts a new log, which the script then shows from its start.
pub const LOG_JOB_HEADER: &str = "x-sluice-log-job";

/// `GET .../actions/{stage}/{action}/log?after=SEQ&job=JOB`: the current
/// attempt's lines after `SEQ` as HTML (for the script that follows the
/// log), at most [`FRAGMENT_LINES`]: one indexed read of that job's lines,
/// not the execution's whole log. A fragment starts with the default
/// colours (a colour set before it is not carried over).
pub async fn log_lines(
    State(state): State<ApiState>,
    viewer: Viewer,
    Path(path): ActionPath,
    Query(q): Query<LogQuery>,
) -> Result<Response, ConsoleError> {
    let (name, id, stage, action_name) = &path;
    let op = GetPipelineExecution { pipeline_name: name.clone(), pipeline_execution_id: id.clone() };
    let run = ask(&state, op, viewer.caller.clone()).await?;
    let (si, ai, action) = run
        .stages
        .iter()
        .enumerate()
        .find(|(_, s)| s.stage_name == *stage)
        .and_then(|(si, s)| {
            s.actions.iter().enumerate().find(|(_, a)| a.action_name == *action_name).map(|(ai, a)| (si, ai, a))
        })
        .ok_or_else(|| {
            ConsoleError::new(StatusCode::NOT_FOUND, format!("execution {id} has no action {stage} / {action_name}"))
        })?;
    // The views list stages and actions as the execution holds them, so
    // their positions name the job.
    let job = crate::engine::job_id(&crate::engine::ExecutionId(id.clone()), si, ai, action.attempt);
    let after = q.after.trim().parse().ok().filter(|_| q.job.as_deref() == Some(job.as_str()));
    let op = GetExecutionLogs {
        pipeline_name: name.clone(),
        pipeline_execution_id: id.clone(),
        job_id: Some(job.clone()),
        after_seq: after,
        max_lines: Some(FRAGMENT_LINES),
    };
    let lines = ask(&state, op, viewer.caller.clone()).await?.lines;
    let more = lines.len() >= FRAGMENT_LINES as usize;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (
            header::HeaderName::from_static(LOG_JOB_HEADER),
            HeaderValue::from_str(&job).unwrap_or(HeaderValue::from_static("")),
        ),
        (
            header::HeaderName::from_static("x-sluice-log-finished"),
            HeaderValue::from_static(if finished(action) { "1" } else { "0" }),
        ),
        // More lines wait than one fragment carries: the script asks again.
        (header::HeaderName::from_static("x-sluice-log-more"), HeaderValue::from_static(if more { "1" } else { "0" })),
    ];
    Ok((headers, render_lines(&lines, 0)).into_response())
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
        let all = render_lines(&lines, 0);
        assert!(
            all.starts_with("<span class=\"line\" data-seq=\"0\"><span class=\"ansi-fg-green\">green\n</span></span>"),
            "{all}"
        );
        let after = render_lines(&lines, 1);
        assert!(
            after.starts_with("<span class=\"line\" data-seq=\"1\"><span class=\"ansi-fg-green\">still green"),
            "{after}"
        );
        assert!(after.contains("&lt;b&gt;") && !after.contains("<b>"), "{after}");
        assert_eq!(render_lines(&lines, 3), "");
    }

    #[test]
    fn the_page_renders_only_the_last_lines_of_a_long_log_and_says_where_the_rest_is() {
        let lines: Vec<LogLineView> = (0..PAGE_LINES as u64 + 250).map(|n| line(n, &format!("line {n}\n"))).collect();
        let a = ActionRunView {
            action_name: "Make".into(),
            run_order: 1,
            status: Some("InProgress".into()),
            attempt: 1,
            agent: None,
            summary: None,
            error_details: None,
            lost_on: vec![],
            external_execution_url: None,
            start_time: None,
            last_update_time: None,
            output_artifacts: vec![],
            output_variables: Default::default(),
            approval: None,
            waiting_reason: None,
            input_artifacts: vec![],
            resolved_configuration: Default::default(),
        };
        let path = ("web".to_string(), "e1".to_string(), "Build".to_string(), "Make".to_string());
        let html = log_section(&path, &a, &lines, 1).into_string();
        assert_eq!(html.matches("class=\"line\"").count(), PAGE_LINES, "the tail only");
        assert!(!html.contains("data-seq=\"249\"") && html.contains("data-seq=\"250\""));
        assert!(html.contains(&format!("data-seq=\"{}\"", PAGE_LINES + 249)), "the newest line is there");
        assert!(html.contains(&format!("Showing the last {PAGE_LINES} of {} lines", PAGE_LINES + 250)), "{}", &html[..400]);
        assert!(html.contains("sluice logs web --execution e1"));
        // A short log: all of it, no note.
        let short = log_section(&path, &a, &lines[..3], 1).into_string();
        assert_eq!(short.matches("class=\"line\"").count(), 3);
        assert!(!short.contains("Showing the last"));
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
