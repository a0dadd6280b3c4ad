//! Executions: start, stop, history and one execution in detail; stage
//! retry and rollback; transitions; approvals; and following an execution
//! live (`watch`, `logs -f`), in prose or one JSON object per line.

use super::client::Client;
use super::output::{StageAction, Table, columns, items, print_json, s, stage_actions, write_json_line};
use super::{Ctx, Failure, Output};
use crate::ops::{
    self, ApprovalStatus, DisableStageTransition, EnableStageTransition, GetExecutionLogs, GetPipelineExecution,
    ListPipelineExecutions, PutApprovalResult, RetryStageExecution, RevisionType, RollbackStage, SourceRevisionOverride,
    StartPipelineExecution, StopPipelineExecution, VariableValue,
};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopMode {
    /// Let running actions finish; start nothing new.
    Wait,
    /// Cancel running actions on their agents now.
    Abandon,
}

#[derive(Subcommand, Debug)]
pub enum ExecutionCmd {
    /// Every action of an execution: status, attempt, agent, times, outputs.
    Get { pipeline: String, execution: String },
    /// Every action run of a pipeline's recent executions (or of one),
    /// newest execution first: CodePipeline's ListActionExecutions.
    Actions {
        pipeline: String,
        #[arg(long, value_name = "EXECUTION")]
        execution: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long)]
        max_results: Option<usize>,
        /// The page after the one that printed this token.
        #[arg(long)]
        next_token: Option<String>,
    },
    // Artifacts (issue 16, pages).
    /// Download an artifact of an execution (its tar archive), as the web
    /// console's link does: GetArtifact, then the bytes.
    Artifact {
        pipeline: String,
        execution: String,
        artifact: String,
        /// Where to write it; a file that exists is not overwritten
        /// (default: ARTIFACT.tar here).
        #[arg(long, value_name = "FILE")]
        to: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum StageCmd {
    /// Run a failed stage of a failed execution again, and go on from it.
    Retry {
        pipeline: String,
        stage: String,
        execution: String,
        #[arg(long, value_enum, default_value_t = RetryMode::Failed)]
        mode: RetryMode,
        /// Wait for the end; exit 0 only if the execution succeeds.
        #[arg(long)]
        wait: bool,
    },
    /// Run a stage again in a new execution with the artifacts of an earlier
    /// one in which it succeeded (by default the newest such execution).
    Rollback {
        pipeline: String,
        stage: String,
        #[arg(long, value_name = "EXECUTION")]
        target: Option<String>,
        /// Wait for the end; exit 0 only if the rollback succeeds.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RetryMode {
    /// Only the actions that failed.
    Failed,
    /// Every action of the stage.
    All,
}

#[derive(Subcommand, Debug)]
pub enum TransitionCmd {
    /// Stop executions from entering STAGE; the newest waits before it.
    Disable {
        pipeline: String,
        stage: String,
        #[arg(long)]
        reason: String,
    },
    /// Let executions enter STAGE again; the waiting one goes on.
    Enable { pipeline: String, stage: String },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalCmd {
    /// Approve: counts once per user; the user who started the execution cannot.
    Approve(ApprovalArgs),
    /// Reject: the action, and so the execution, fails.
    Reject(ApprovalArgs),
}

#[derive(Args, Debug)]
pub struct ApprovalArgs {
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    #[arg(long, default_value = "")]
    pub comment: String,
    /// The execution (default: the newest waiting at this action).
    #[arg(long)]
    pub execution: Option<String>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub pipeline: String,
    /// The execution to follow (default: the newest).
    #[arg(long)]
    pub execution: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub pipeline: String,
    /// The execution (default: the newest).
    #[arg(long)]
    pub execution: Option<String>,
    /// Keep printing lines as they arrive until the execution ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

fn get_execution(pipeline: &str, id: &str) -> GetPipelineExecution {
    GetPipelineExecution { pipeline_name: pipeline.to_string(), pipeline_execution_id: id.to_string() }
}

fn get_logs(pipeline: &str, id: &str) -> GetExecutionLogs {
    GetExecutionLogs {
        pipeline_name: pipeline.to_string(),
        pipeline_execution_id: id.to_string(),
        job_id: None,
        after_seq: None,
        max_lines: None,
    }
}

/// The exit code of a command that waited for an execution.
fn exit_code(status: &str) -> i32 {
    if status == "Succeeded" { 0 } else { 1 }
}

/// `pipeline start`: prints the new execution's id; with `wait`, its end.
pub async fn start(
    ctx: &Ctx,
    name: &str,
    variables: &[String],
    source_revisions: &[String],
    wait: bool,
) -> Result<i32, Failure> {
    // Several controllers, one leader (issue 18, reach): a token of its
    // own makes the start safe to send again when a controller fails
    // mid-request (the cluster answers a repeat with the first execution).
    let client_request_token = Some(uuid::Uuid::new_v4().to_string());
    let mut start = StartPipelineExecution { name: name.to_string(), client_request_token, ..Default::default() };
    for v in variables {
        let (k, val) = v.split_once('=').ok_or_else(|| Failure::new(2, format!("--variable {v:?} must be NAME=VALUE")))?;
        start.variables.push(VariableValue { name: k.to_string(), value: val.to_string() });
    }
    for r in source_revisions {
        let (action, revision) =
            r.split_once('=').ok_or_else(|| Failure::new(2, format!("--source-revision {r:?} must be ACTION=REVISION")))?;
        start.source_revisions.push(SourceRevisionOverride {
            action_name: action.to_string(),
            revision_type: Some(RevisionType::CommitId),
            revision_value: revision.to_string(),
        });
    }
    let c = ctx.client()?;
    let out = c.call(start).await?;
    let id = s(&out["pipelineExecutionId"]);
    if !wait {
        ctx.output.print(&out, |_| format!("{id}\n"));
        return Ok(0);
    }
    // With --wait the JSON document is the end alone; the id is in it.
    if !ctx.output.is_json() {
        println!("{id}");
    }
    let status = wait_for(&c, name, &id).await?;
    let execution = c.call(get_execution(name, &id)).await?;
    let summary = execution["pipelineExecution"]["statusSummary"].as_str().map(str::to_string);
    let end = json!({"pipelineExecutionId": id, "status": status, "statusSummary": summary});
    // In prose the end goes to stderr: stdout holds the id alone.
    match (ctx.output, &summary) {
        (Output::Json, _) => print_json(&end),
        (Output::Table, Some(summary)) => eprintln!("execution {id} {status}: {summary}"),
        (Output::Table, None) => eprintln!("execution {id} {status}"),
    }
    Ok(exit_code(&status))
}

/// `pipeline stop`.
pub async fn stop(ctx: &Ctx, name: &str, execution: &str, mode: StopMode, reason: &str, wait: bool) -> Result<(), Failure> {
    let c = ctx.client()?;
    let stop = StopPipelineExecution {
        pipeline_name: name.to_string(),
        pipeline_execution_id: execution.to_string(),
        abandon: mode == StopMode::Abandon,
        reason: reason.to_string(),
    };
    let mut out = c.call(stop).await?;
    if wait {
        let status = wait_for(&c, name, execution).await?;
        out["status"] = json!(status);
    }
    ctx.output.print(&out, |out| format!("execution {execution} {}\n", s(&out["status"])));
    Ok(())
}

/// `pipeline history`: recent executions, a page at a time.
pub async fn history(ctx: &Ctx, name: &str, max: usize, next_token: Option<&str>) -> Result<(), Failure> {
    let list = ListPipelineExecutions {
        pipeline_name: name.to_string(),
        max_results: Some(max),
        next_token: next_token.map(str::to_string),
    };
    let out = ctx.client()?.call(list).await?;
    ctx.output.print(&out, |out| {
        let mut text = history_table().render(items(&out["pipelineExecutionSummaries"]));
        if let Some(token) = out["nextToken"].as_str() {
            text.push_str(&format!("more: sluice pipeline history {name} --max {max} --next-token {token}\n"));
        }
        text
    });
    Ok(())
}

fn history_table() -> Table<Value> {
    columns![Value;
        ("EXECUTION", |e| s(&e["pipelineExecutionId"])),
        ("STATUS", |e| s(&e["status"])),
        ("TRIGGER", |e| s(&e["trigger"]["triggerType"])),
        ("STARTED", |e| s(&e["startTime"])),
        ("REVISIONS", |e| {
            let revisions: Vec<String> = items(&e["sourceRevisions"])
                .map(|r| format!("{}@{}", s(&r["actionName"]), s(&r["revisionId"]).chars().take(7).collect::<String>()))
                .collect();
            revisions.join(" ")
        }),
        ("WHY", |e| s(&e["trigger"]["triggerDetail"])),
        ("SUMMARY", |e| s(&e["statusSummary"])),
    ]
}

pub async fn run_execution(ctx: &Ctx, cmd: ExecutionCmd) -> Result<i32, Failure> {
    match cmd {
        ExecutionCmd::Get { pipeline, execution } => {
            let out = ctx.client()?.call(get_execution(&pipeline, &execution)).await?;
            ctx.output.print(&out, show_execution);
        }
        ExecutionCmd::Actions { pipeline, execution, max_results, next_token } => {
            let op = crate::ops::ListActionExecutions {
                pipeline_name: pipeline,
                pipeline_execution_id: execution,
                max_results,
                next_token,
            };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |out| {
                let mut text = action_executions_table().render(items(&out["actionExecutionDetails"]));
                if let Some(token) = out["nextToken"].as_str() {
                    text.push_str(&format!("more: --next-token {token}\n"));
                }
                text
            });
        }
        // Artifacts (issue 16, pages).
        ExecutionCmd::Artifact { pipeline, execution, artifact, to } => {
            let to = to.unwrap_or_else(|| format!("{artifact}.tar").into());
            let client = ctx.client()?;
            let path = ["pipelines", &pipeline, "executions", &execution, "artifacts", &artifact, "content"];
            let bytes = client.download(&path, &to).await?;
            let out = serde_json::json!({"artifact": artifact, "file": to.display().to_string(), "bytes": bytes});
            ctx.output.print(&out, |_| format!("artifact {artifact} written to {} ({bytes} bytes)\n", to.display()));
        }
    }
    Ok(0)
}

fn action_executions_table() -> Table<Value> {
    columns![Value;
        ("EXECUTION", |d| s(&d["pipelineExecutionId"])),
        ("STAGE", |d| s(&d["stageName"])),
        ("ACTION", |d| s(&d["actionName"])),
        ("STATUS", |d| s(&d["status"])),
        ("STARTED", |d| s(&d["startTime"])),
    ]
}

fn show_execution(out: &Value) -> String {
    let e = &out["pipelineExecution"];
    let mut text = format!(
        "execution {} of {} (version {}): {}{}\n",
        s(&e["pipelineExecutionId"]),
        s(&e["pipelineName"]),
        s(&e["pipelineVersion"]),
        s(&e["status"]),
        e["statusSummary"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
    );
    text.push_str(&format!("trigger: {} ({})\n", s(&e["trigger"]["triggerType"]), s(&e["trigger"]["triggerDetail"])));
    text.push_str(&execution_table().render(&stage_actions(&out["stages"], "actions")));
    text
}

fn execution_table<'a>() -> Table<StageAction<'a>> {
    columns![StageAction<'a>;
        ("STAGE", |r| s(&r.stage["stageName"])),
        ("ACTION", |r| s(&r.action["actionName"])),
        ("STATUS", |r| s(&r.action["status"])),
        ("ATTEMPT", |r| s(&r.action["attempt"])),
        ("AGENT", |r| s(&r.action["agent"])),
        ("STARTED", |r| s(&r.action["startTime"])),
        ("ENDED", |r| s(&r.action["lastUpdateTime"])),
        ("OUTPUTS", |r| {
            let outputs: Vec<String> = items(&r.action["outputArtifacts"])
                .map(|a| format!("{}@{}", s(&a["name"]), s(&a["digest"]).chars().take(12).collect::<String>()))
                .collect();
            outputs.join(",")
        }),
        ("DETAIL", |r| {
            if r.action["errorDetails"].is_null() { s(&r.action["summary"]) } else { s(&r.action["errorDetails"]["message"]) }
        }),
    ]
}

pub async fn run_stage(ctx: &Ctx, cmd: StageCmd) -> Result<i32, Failure> {
    match cmd {
        StageCmd::Retry { pipeline, stage, execution, mode, wait } => {
            let c = ctx.client()?;
            let retry = RetryStageExecution {
                pipeline_name: pipeline.clone(),
                stage_name: stage.clone(),
                pipeline_execution_id: execution.clone(),
                retry_mode: match mode {
                    RetryMode::All => ops::RetryMode::AllActions,
                    RetryMode::Failed => ops::RetryMode::FailedActions,
                },
            };
            let out = c.call(retry).await?;
            if !wait {
                ctx.output.print(&out, |_| format!("stage {stage} of execution {execution} retried\n"));
                return Ok(0);
            }
            let status = wait_for(&c, &pipeline, &execution).await?;
            let end = json!({"pipelineExecutionId": execution, "status": status});
            ctx.output.print(&end, |_| format!("execution {execution} {status}\n"));
            Ok(exit_code(&status))
        }
        StageCmd::Rollback { pipeline, stage, target, wait } => {
            let c = ctx.client()?;
            let rollback =
                RollbackStage { pipeline_name: pipeline.clone(), stage_name: stage, target_pipeline_execution_id: target };
            let out = c.call(rollback).await?;
            let id = s(&out["pipelineExecutionId"]);
            if !wait {
                ctx.output.print(&out, |_| format!("{id}\n"));
                return Ok(0);
            }
            let status = wait_for(&c, &pipeline, &id).await?;
            let end = json!({"pipelineExecutionId": id, "status": status});
            ctx.output.print(&end, |_| format!("rollback {id} {status}\n"));
            Ok(exit_code(&status))
        }
    }
}

pub async fn run_transition(ctx: &Ctx, cmd: TransitionCmd) -> Result<i32, Failure> {
    let c = ctx.client()?;
    let (pipeline, stage, verb, out) = match cmd {
        TransitionCmd::Disable { pipeline, stage, reason } => {
            let disable = DisableStageTransition { pipeline_name: pipeline.clone(), stage_name: stage.clone(), reason };
            (pipeline, stage, "disable", c.call(disable).await?)
        }
        TransitionCmd::Enable { pipeline, stage } => {
            let enable =
                EnableStageTransition { pipeline_name: pipeline.clone(), stage_name: stage.clone(), reason: String::new() };
            (pipeline, stage, "enable", c.call(enable).await?)
        }
    };
    ctx.output.print(&out, |_| format!("transition into {pipeline}/{stage} {verb}d\n"));
    Ok(0)
}

pub async fn run_approval(ctx: &Ctx, cmd: ApprovalCmd) -> Result<i32, Failure> {
    let (status, args) = match cmd {
        ApprovalCmd::Approve(args) => (ApprovalStatus::Approved, args),
        ApprovalCmd::Reject(args) => (ApprovalStatus::Rejected, args),
    };
    let decision = PutApprovalResult {
        pipeline_name: args.pipeline,
        stage_name: args.stage,
        action_name: args.action,
        status,
        summary: args.comment,
        execution_id: args.execution,
        token: None,
    };
    let out = ctx.client()?.call(decision).await?;
    ctx.output.print(&out, |out| format!("{} ({})\n", s(&out["result"]), s(&out["pipelineExecutionId"])));
    Ok(0)
}

/// `watch`: exit 0 only if the execution succeeded.
pub async fn run_watch(ctx: &Ctx, args: WatchArgs) -> Result<i32, Failure> {
    let c = ctx.client()?;
    let id = match args.execution {
        Some(id) => id,
        None => newest_execution(&c, &args.pipeline).await?,
    };
    let status = watch_as(&c, &args.pipeline, &id, ctx.output, &mut std::io::stdout()).await?;
    Ok(exit_code(&status))
}

/// `logs`: the stored log, or with `follow` every line until the end.
pub async fn run_logs(ctx: &Ctx, args: LogsArgs) -> Result<i32, Failure> {
    let c = ctx.client()?;
    let pipeline = &args.pipeline;
    let id = match args.execution {
        Some(id) => id,
        None => newest_execution(&c, pipeline).await?,
    };
    if args.follow {
        follow_logs(&c, pipeline, &id, ctx.output, &mut std::io::stdout()).await?;
        return Ok(0);
    }
    let out = c.call(get_logs(pipeline, &id)).await?;
    ctx.output.print(&out, |out| {
        let mut text = Vec::new();
        for line in items(&out["lines"]) {
            print_log_line(&mut text, line, Output::Table);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    Ok(0)
}

async fn newest_execution(c: &Client, pipeline: &str) -> Result<String, Failure> {
    let newest = ListPipelineExecutions { pipeline_name: pipeline.to_string(), max_results: Some(1), next_token: None };
    let out = c.call(newest).await?;
    out["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::new(1, format!("pipeline \"{pipeline}\" has no executions yet")))
}

fn is_final(status: &str) -> bool {
    matches!(status, "Succeeded" | "Failed" | "Stopped" | "Superseded")
}

/// One log line as `STAGE/ACTION: text`, or as one JSON object per line.
fn print_log_line(out: &mut impl Write, line: &Value, output: Output) {
    match output {
        Output::Json => write_json_line(out, line),
        Output::Table => {
            let text = s(&line["text"]);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let _ = writeln!(out, "{}/{}: {text}", s(&line["stage"]), s(&line["action"]));
            let _ = out.flush();
        }
    }
}

/// Prints an execution's stored log, then its lines as they arrive (from
/// the event stream), until the execution ends. Every line is printed once,
/// in order per action, however the stream and the store overlap.
pub async fn follow_logs(c: &Client, pipeline: &str, id: &str, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    // Subscribe first, then read the store, so no line falls in between.
    let mut events = c.events(pipeline).await?;
    let mut printed: HashMap<String, u64> = HashMap::new();
    let mut print_new = |line: &Value, out: &mut dyn FnMut(&Value)| {
        let (Some(job), Some(seq)) = (line["jobId"].as_str(), line["seq"].as_u64()) else { return };
        if printed.get(job).is_none_or(|last| seq > *last) {
            printed.insert(job.to_string(), seq);
            out(line);
        }
    };
    let status = |v: Value| s(&v["pipelineExecution"]["status"]);
    let mut emit = |line: &Value| print_log_line(out, line, output);
    for line in items(&c.call(get_logs(pipeline, id)).await?["lines"]) {
        print_new(line, &mut emit);
    }
    if !is_final(&status(c.call(get_execution(pipeline, id)).await?)) {
        let mut check = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { break };
                    if event["executionId"].as_str() != Some(id) {
                        continue;
                    }
                    match event["type"].as_str() {
                        Some("log") => print_new(&event, &mut emit),
                        Some("execution") if is_final(&s(&event["status"])) => break,
                        _ => {}
                    }
                }
                // The event stream may lag or drop: the state is the truth.
                _ = check.tick() => {
                    if is_final(&status(c.call(get_execution(pipeline, id)).await?)) {
                        break;
                    }
                }
            }
        }
    }
    // Whatever the stream missed is in the store by now.
    for line in items(&c.call(get_logs(pipeline, id)).await?["lines"]) {
        print_new(line, &mut emit);
    }
    Ok(())
}

/// Waits until an execution ends; returns its status.
pub async fn wait_for(c: &Client, pipeline: &str, id: &str) -> Result<String, Failure> {
    loop {
        let out = c.call(get_execution(pipeline, id)).await?;
        let status = s(&out["pipelineExecution"]["status"]);
        if is_final(&status) {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How `watch` prints one execution: in prose, or one JSON object per line
/// (flushed) for the state it starts from, each event and the end. Fed
/// by [`watch_as`], or by a test with events of its own.
pub struct WatchPrinter<'w, W: Write> {
    out: &'w mut W,
    output: Output,
    id: String,
}

impl<'w, W: Write> WatchPrinter<'w, W> {
    pub fn new(out: &'w mut W, output: Output, id: &str) -> Self {
        Self { out, output, id: id.to_string() }
    }

    /// The execution as it stands when watching begins (the reply of
    /// `GET /pipelines/P/executions/ID`); returns its status.
    pub fn snapshot(&mut self, pipeline: &str, current: &Value) -> String {
        let status = s(&current["pipelineExecution"]["status"]);
        let actions = stage_actions(&current["stages"], "actions");
        let begun = actions.iter().filter(|r| !r.action["status"].is_null());
        match self.output {
            Output::Json => {
                let actions: Vec<Value> = begun
                    .map(|r| json!({"stage": r.stage["stageName"], "action": r.action["actionName"], "status": r.action["status"]}))
                    .collect();
                let line = json!({"type": "snapshot", "pipeline": pipeline, "executionId": self.id, "status": status, "actions": actions});
                write_json_line(self.out, &line);
            }
            Output::Table => {
                let _ = writeln!(self.out, "execution {} of pipeline {pipeline}: {status}", self.id);
                for r in begun {
                    let name = format!("{}/{}", s(&r.stage["stageName"]), s(&r.action["actionName"]));
                    let _ = writeln!(self.out, "  {name:<28} {}", s(&r.action["status"]));
                }
                let _ = self.out.flush();
            }
        }
        status
    }

    /// One event of the pipeline's stream; returns the final status when
    /// it says the execution ended. Events of other executions, and kinds
    /// that are not progress (log lines), print nothing.
    pub fn event(&mut self, event: &Value) -> Option<String> {
        if event["executionId"].as_str() != Some(self.id.as_str()) {
            return None;
        }
        let kind = event["type"].as_str().filter(|k| matches!(*k, "execution" | "stage" | "action"))?;
        match self.output {
            Output::Json => write_json_line(self.out, event),
            Output::Table => {
                let _ = writeln!(self.out, "{}", event_prose(kind, event));
                let _ = self.out.flush();
            }
        }
        let status = s(&event["status"]);
        (kind == "execution" && is_final(&status)).then_some(status)
    }

    /// The end, learnt from the state when the stream lagged.
    pub fn ended(&mut self, status: &str) {
        match self.output {
            Output::Json => {
                write_json_line(self.out, &json!({"type": "execution", "executionId": self.id, "status": status}))
            }
            Output::Table => {
                let _ = writeln!(self.out, "execution {status}");
                let _ = self.out.flush();
            }
        }
    }
}

/// An event of `watch` as one line of prose, behind its time of day.
fn event_prose(kind: &str, event: &Value) -> String {
    let when = s(&event["time"]).get(11..19).unwrap_or("").to_string();
    let suffix = event["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default();
    match kind {
        "execution" => format!("{when} execution {}{suffix}", s(&event["status"])),
        "stage" => format!("{when} stage {} {}", s(&event["stage"]), s(&event["status"])),
        _ => {
            let name = format!("{}/{}", s(&event["stage"]), s(&event["action"]));
            format!("{when}   {name:<26} {}{suffix}", s(&event["status"]))
        }
    }
}

/// Prints an execution's progress live, in prose, until it ends; returns
/// its status.
pub async fn watch(c: &Client, pipeline: &str, id: &str, out: &mut impl Write) -> Result<String, Failure> {
    watch_as(c, pipeline, id, Output::Table, out).await
}

/// Prints an execution's progress live until it ends, in the given
/// format; returns its status.
pub async fn watch_as(
    c: &Client,
    pipeline: &str,
    id: &str,
    output: Output,
    out: &mut impl Write,
) -> Result<String, Failure> {
    // Subscribe first, then read the state, so no event falls in between.
    let mut events = c.events(pipeline).await?;
    let current = c.call(get_execution(pipeline, id)).await?;
    let mut printer = WatchPrinter::new(out, output, id);
    let status = printer.snapshot(pipeline, &current);
    if is_final(&status) {
        return Ok(status);
    }
    let heartbeat = tokio::time::interval(Duration::from_secs(2));
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                if let Some(status) = printer.event(&event) {
                    return Ok(status);
                }
            }
            _ = heartbeat.tick() => {
                // The event stream may have lagged: the state is the truth.
                let now = c.call(get_execution(pipeline, id)).await?;
                let status = s(&now["pipelineExecution"]["status"]);
                if is_final(&status) {
                    printer.ended(&status);
                    return Ok(status);
                }
            }
        }
    }
    wait_for(c, pipeline, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> (Value, Vec<Value>) {
        let current = json!({
            "pipelineExecution": {"pipelineExecutionId": "e1", "status": "InProgress"},
            "stages": [
                {"stageName": "Source", "actions": [{"actionName": "Checkout", "status": "InProgress"}]},
                {"stageName": "Build", "actions": [{"actionName": "Package", "status": null}]},
            ]
        });
        let events = vec![
            json!({"type": "action", "executionId": "e1", "time": "2026-12-05T22:23:49.123Z", "stage": "Source", "action": "Checkout", "status": "Succeeded"}),
            json!({"type": "action", "executionId": "e0", "time": "2026-12-05T22:23:49.500Z", "stage": "Source", "action": "Checkout", "status": "Failed"}),
            json!({"type": "log", "executionId": "e1", "jobId": "j1", "seq": 1, "text": "hello\n"}),
            json!({"type": "stage", "executionId": "e1", "time": "2026-12-05T22:23:49.200Z", "stage": "Source", "status": "Succeeded"}),
            json!({"type": "action", "executionId": "e1", "time": "2026-12-05T22:23:55.000Z", "stage": "Build", "action": "Package", "status": "Failed", "message": "exit 2"}),
            json!({"type": "execution", "executionId": "e1", "time": "2026-12-05T22:23:56.000Z", "status": "Failed", "message": "Build failed"}),
        ];
        (current, events)
    }

    /// Feeds a printer the state and events; returns what it wrote and the
    /// final status it saw.
    fn feed(output: Output) -> (String, Option<String>) {
        let (current, events) = events();
        let mut out = Vec::new();
        let mut printer = WatchPrinter::new(&mut out, output, "e1");
        assert_eq!(printer.snapshot("web", &current), "InProgress");
        let mut end = None;
        for event in &events {
            if let Some(status) = printer.event(event) {
                end = Some(status);
            }
        }
        (String::from_utf8(out).unwrap(), end)
    }

    #[test]
    fn watch_prints_prose_as_before() {
        let (text, end) = feed(Output::Table);
        assert_eq!(end.as_deref(), Some("Failed"));
        assert_eq!(
            text,
            "execution e1 of pipeline web: InProgress\n\
             \x20 Source/Checkout              InProgress\n\
             22:23:49   Source/Checkout            Succeeded\n\
             22:23:49 stage Source Succeeded\n\
             22:23:55   Build/Package              Failed: exit 2\n\
             22:23:56 execution Failed: Build failed\n"
        );
    }

    #[test]
    fn watch_in_json_prints_one_object_per_line_to_the_end() {
        let (text, end) = feed(Output::Json);
        assert_eq!(end.as_deref(), Some("Failed"));
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("each line is one JSON object")).collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["snapshot", "action", "stage", "action", "execution"]);
        assert_eq!(lines[0]["executionId"], "e1");
        assert_eq!(lines[0]["actions"], json!([{"stage": "Source", "action": "Checkout", "status": "InProgress"}]));
        assert_eq!(lines[3]["message"], "exit 2");
        assert_eq!(lines[4]["status"], "Failed");
    }

    #[test]
    fn an_end_learnt_from_the_state_is_a_line_too() {
        let mut out = Vec::new();
        WatchPrinter::new(&mut out, Output::Json, "e1").ended("Succeeded");
        let line: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line, json!({"type": "execution", "executionId": "e1", "status": "Succeeded"}));
        let mut out = Vec::new();
        WatchPrinter::new(&mut out, Output::Table, "e1").ended("Stopped");
        assert_eq!(String::from_utf8(out).unwrap(), "execution Stopped\n");
    }

    #[test]
    fn log_lines_print_as_prose_or_as_json_lines() {
        let line = json!({"jobId": "j1", "seq": 3, "stage": "Build", "action": "Package", "text": "ok\n"});
        let mut out = Vec::new();
        print_log_line(&mut out, &line, Output::Table);
        assert_eq!(String::from_utf8(out).unwrap(), "Build/Package: ok\n");
        let mut out = Vec::new();
        print_log_line(&mut out, &line, Output::Json);
        print_log_line(&mut out, &line, Output::Json);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(serde_json::from_str::<Value>(text.lines().next().unwrap()).unwrap(), line);
    }

    #[test]
    fn the_execution_table_lists_every_action() {
        let out = json!({"stages": [{"stageName": "Build", "actions": [
            {"actionName": "Package", "status": "Succeeded", "attempt": 1, "agent": "ag-1",
             "outputArtifacts": [{"name": "dist", "digest": "0123456789abcdef"}], "summary": "ran 3 commands"},
            {"actionName": "Lint", "status": "Failed", "attempt": 2, "errorDetails": {"message": "exit 1"}}]}]});
        let text = execution_table().render(&stage_actions(&out["stages"], "actions"));
        assert_eq!(
            text,
            "STAGE  ACTION   STATUS     ATTEMPT  AGENT  STARTED  ENDED  OUTPUTS            DETAIL\n\
             Build  Package  Succeeded  1        ag-1   -        -      dist@0123456789ab  ran 3 commands\n\
             Build  Lint     Failed     2        -      -        -                         exit 1\n"
        );
    }
}
