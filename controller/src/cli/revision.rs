//! `sluice revision` (issue 16, pages): where a source revision went, the
//! same operations the console's revision flow shows (`ListRevisions`,
//! `GetRevisionFlow`).

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{GetRevisionFlow, ListRevisions};
use clap::Subcommand;
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Subcommand, Debug)]
pub enum RevisionCmd {
    /// Revisions executions carried, newest first (of pipelines you may read).
    List {
        /// Only revisions whose id starts with this.
        prefix: Option<String>,
        /// How many (1 to 200).
        #[arg(long, default_value_t = 20)]
        max_results: usize,
    },
    /// Every pipeline, stage and action a revision reached, and where it stopped.
    Show {
        /// A revision id, or a prefix of one (at least 4 characters) that names one revision.
        revision: String,
    },
}

pub async fn run(ctx: &Ctx, cmd: RevisionCmd) -> Result<i32, Failure> {
    match cmd {
        RevisionCmd::List { prefix, max_results } => {
            let out = ctx.client()?.call(ListRevisions { prefix, max_results: Some(max_results) }).await?;
            ctx.output.print(&out, |out| revision_table().render(items(&out["revisions"])));
        }
        RevisionCmd::Show { revision } => {
            let out = ctx.client()?.call(GetRevisionFlow { revision }).await?;
            ctx.output.print(&out, render_flow);
        }
    }
    Ok(0)
}

fn revision_table() -> Table<Value> {
    columns![Value;
        ("REVISION", |r| s(&r["revisionId"])),
        ("PIPELINES", |r| items(&r["pipelines"]).filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
        ("LAST SEEN", |r| s(&r["lastSeen"])),
        ("SUMMARY", |r| s(&r["revisionSummary"]).lines().next().unwrap_or_default().to_string()),
    ]
}

/// The flow as prose: per pipeline, each execution with its stages in
/// order (`✓` succeeded, `✗` failed, `…` running, `·` not reached) and
/// where it stopped.
fn render_flow(out: &Value) -> String {
    let mut text = format!("revision {}", s(&out["revisionId"]));
    if let Some(summary) = out["revisionSummary"].as_str().and_then(|t| t.lines().next()) {
        let _ = write!(text, ": {summary}");
    }
    text.push('\n');
    if items(&out["pipelines"]).next().is_none() {
        text.push_str("no execution of a pipeline you may read carried it\n");
    }
    for pipeline in items(&out["pipelines"]) {
        let _ = writeln!(text, "\npipeline {}", s(&pipeline["pipelineName"]));
        for e in items(&pipeline["executions"]) {
            let _ = writeln!(
                text,
                "  execution {} {} ({} via {}, started {})",
                s(&e["pipelineExecutionId"]),
                s(&e["status"]),
                s(&e["triggerType"]),
                s(&e["sourceAction"]),
                s(&e["startTime"])
            );
            let stages: Vec<String> =
                items(&e["stages"]).map(|st| format!("{} {}", mark(&st["status"]), s(&st["stageName"]))).collect();
            let _ = writeln!(text, "    {}", stages.join(" -> "));
            let _ = writeln!(text, "    {}", stop_line(&e["stoppedAt"], &e["status"]));
        }
    }
    text
}

fn mark(status: &Value) -> &'static str {
    match status.as_str() {
        None => "·",
        Some("Succeeded") => "✓",
        Some("InProgress") => "…",
        Some("Skipped") => "-",
        Some(_) => "✗",
    }
}

/// `stopped at Build / Test: Failed`, `held before Deploy`, `reached the end`.
fn stop_line(stop: &Value, status: &Value) -> String {
    if stop.is_null() {
        return format!("reached the end: {}", s(status));
    }
    let (stage, running) = (s(&stop["stageName"]), status.as_str() == Some("InProgress"));
    if stop["beforeStage"].as_bool() == Some(true) {
        return if running { format!("waiting before {stage}") } else { format!("stopped before {stage}") };
    }
    let at = match stop["actionName"].as_str() {
        Some(action) => format!("{stage} / {action}"),
        None => stage,
    };
    if running { format!("now at {at}: {}", s(&stop["status"])) } else { format!("stopped at {at}: {}", s(&stop["status"])) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_flow_reads_as_stages_and_where_it_stopped() {
        let out = json!({
            "revisionId": "abc123", "revisionSummary": "fix the build\nlong body",
            "pipelines": [{"pipelineName": "web", "executions": [
                {"pipelineExecutionId": "e2", "status": "Failed", "triggerType": "Webhook", "sourceAction": "Source",
                 "startTime": "t", "stages": [
                    {"stageName": "Source", "status": "Succeeded"}, {"stageName": "Build", "status": "Failed"},
                    {"stageName": "Deploy", "status": null}],
                 "stoppedAt": {"stageName": "Build", "actionName": "Test", "status": "Failed", "beforeStage": false}},
                {"pipelineExecutionId": "e1", "status": "InProgress", "triggerType": "Webhook", "sourceAction": "Source",
                 "startTime": "t", "stages": [{"stageName": "Source", "status": "Succeeded"}, {"stageName": "Deploy", "status": null}],
                 "stoppedAt": {"stageName": "Deploy", "actionName": null, "status": "NotEntered", "beforeStage": true}}]}]
        });
        let text = render_flow(&out);
        assert!(text.starts_with("revision abc123: fix the build\n"), "{text}");
        assert!(text.contains("✓ Source -> ✗ Build -> · Deploy"), "{text}");
        assert!(text.contains("stopped at Build / Test: Failed"), "{text}");
        assert!(text.contains("waiting before Deploy"), "{text}");
        let none = render_flow(&json!({"revisionId": "x", "pipelines": []}));
        assert!(none.contains("no execution of a pipeline you may read carried it"));
    }
}
