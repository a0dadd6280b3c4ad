//! `sluice pipeline`: declarations (create, validate, import, update,
//! delete, get, list) and the pipeline's state. Starting, stopping and
//! listing executions are `execution.rs`'s.

use super::execution::{self, StopMode};
use super::output::{StageAction, Table, columns, items, s, stage_actions};
use super::{Ctx, Failure, Output};
use crate::ops::{
    CreatePipeline, DeletePipeline, GetPipeline, GetPipelineState, ListPipelines, UpdatePipeline, ValidatePipeline,
};
use crate::pipeline::import::ImportOptions;
use clap::Subcommand;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PipelineCmd {
    /// Create a pipeline from a JSON or YAML file and start its first execution.
    Create {
        file: PathBuf,
        /// The team the pipeline belongs to (default: yours, when you are in exactly one).
        #[arg(long)]
        team: Option<String>,
    },
    /// Check a declaration as `create` would, without creating anything;
    /// exit 0 when valid, 2 with every problem when not.
    Validate {
        file: PathBuf,
        /// Remap AWS/ThirdParty providers first (as `import` does).
        #[arg(long, value_name = "FILE")]
        provider_map: Option<PathBuf>,
    },
    /// Create a pipeline from CodePipeline's `get-pipeline` output, mapping
    /// its providers to Sluice's (built-in defaults, e.g. AWS/CodeBuild ->
    /// codebuild, overridden by --provider-map); prints what it mapped and
    /// what needs a hand.
    Import {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        provider_map: Option<PathBuf>,
        /// Where GitHub and CodeStar sources live: their Url is
        /// BASE/OWNER/REPO.git (https://github.com by default).
        #[arg(long, value_name = "BASE")]
        git_base: Option<String>,
        /// The Url of one source action, over the derived one (repeatable).
        #[arg(long = "source-url", value_name = "ACTION=URL")]
        source_urls: Vec<String>,
        /// Print the converted declaration instead of creating the pipeline.
        #[arg(long)]
        dry_run: bool,
    },
    /// Store a new version of a pipeline from a file; running executions keep theirs.
    Update { file: PathBuf },
    /// Delete a pipeline with its history.
    Delete { name: String },
    /// Print a pipeline's declaration, as `create` accepts it.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// List pipelines.
    List,
    /// Start an execution; prints its id.
    Start {
        name: String,
        /// Override a pipeline variable (repeatable).
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        /// Run a source action at this revision instead of its newest (repeatable).
        #[arg(long = "source-revision", value_name = "ACTION=REVISION")]
        source_revisions: Vec<String>,
        /// Wait for the end; exit 0 only if the execution succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Stop an execution: `wait` lets running actions finish, `abandon` cancels them.
    Stop {
        name: String,
        execution: String,
        #[arg(long, value_enum, default_value_t = StopMode::Wait)]
        mode: StopMode,
        #[arg(long, default_value = "")]
        reason: String,
        /// Wait until the execution has stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Show the latest state of every stage and action.
    State { name: String },
    /// List recent executions.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        max: usize,
        /// Continue after an earlier page (the `nextToken` it printed).
        #[arg(long)]
        next_token: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: PipelineCmd) -> Result<i32, Failure> {
    let output = ctx.output;
    match cmd {
        PipelineCmd::Create { file, team } => {
            let out = ctx.client()?.call(CreatePipeline { pipeline_declaration: read_file(&file)?, team }).await?;
            output.print(&out, |out| {
                format!(
                    "pipeline {} created; execution {} started\n",
                    s(&out["pipeline"]["name"]),
                    s(&out["pipelineExecutionId"])
                )
            });
        }
        PipelineCmd::Validate { file, provider_map } => {
            let text = read_declaration(&file, provider_map.as_deref(), &ImportOptions::default())?;
            let out = ctx.client()?.call(ValidatePipeline { pipeline_declaration: text }).await?;
            output.print(&out, |out| format!("{}: pipeline {} is valid\n", file.display(), s(&out["pipelineName"])));
        }
        PipelineCmd::Import { file, provider_map, git_base, source_urls, dry_run } => {
            let options = import_options(git_base, &source_urls)?;
            let text = read_declaration(&file, Some(provider_map.as_deref().unwrap_or(Path::new(""))), &options)?;
            if dry_run {
                // The converted declaration is JSON already, in either format.
                println!("{text}");
                return Ok(0);
            }
            let out = ctx.client()?.call(CreatePipeline { pipeline_declaration: text, team: None }).await?;
            output.print(&out, |out| {
                format!(
                    "pipeline {} imported; execution {} started\n",
                    s(&out["pipeline"]["name"]),
                    s(&out["pipelineExecutionId"])
                )
            });
        }
        PipelineCmd::Update { file } => {
            let text = read_file(&file)?;
            // The name comes from the declaration itself.
            let name = crate::pipeline::parse(&text)
                .map(|d| d.pipeline.name)
                .map_err(|d| Failure::new(2, format!("pipeline declaration is invalid:\n{d}")))?;
            let out = ctx.client()?.call(UpdatePipeline { name: name.clone(), pipeline_declaration: text }).await?;
            output.print(&out, |out| format!("pipeline {name} updated to version {}\n", s(&out["pipeline"]["version"])));
        }
        PipelineCmd::Delete { name } => {
            let out = ctx.client()?.call(DeletePipeline { name: name.clone() }).await?;
            output.print(&out, |_| format!("pipeline {name} deleted\n"));
        }
        PipelineCmd::Get { name, version } => {
            let out = ctx.client()?.call(GetPipeline { name, version }).await?;
            // The table form is the declaration itself, ready for create.
            output.print(&out, |out| Output::Json.render(&declaration_of(out), |_| String::new()));
        }
        PipelineCmd::List => {
            let out = ctx.client()?.call(ListPipelines::default()).await?;
            output.print(&out, |out| pipeline_table().render(items(&out["pipelines"])));
        }
        PipelineCmd::Start { name, variables, source_revisions, wait } => {
            return execution::start(ctx, &name, &variables, &source_revisions, wait).await;
        }
        PipelineCmd::Stop { name, execution, mode, reason, wait } => {
            execution::stop(ctx, &name, &execution, mode, &reason, wait).await?;
        }
        PipelineCmd::State { name } => {
            let out = ctx.client()?.call(GetPipelineState { name }).await?;
            output.print(&out, show_state);
        }
        PipelineCmd::History { name, max, next_token } => {
            execution::history(ctx, &name, max, next_token.as_deref()).await?;
        }
    }
    Ok(0)
}

fn pipeline_table() -> Table<Value> {
    columns![Value; ("NAME", |p| s(&p["name"])), ("VERSION", |p| s(&p["version"])), ("UPDATED", |p| s(&p["updated"]))]
}

/// A stored pipeline as `create` accepts it: without the metadata and the
/// version the controller adds.
fn declaration_of(stored: &Value) -> Value {
    let mut out = stored.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
    }
    if let Some(p) = out["pipeline"].as_object_mut() {
        p.remove("version");
    }
    out
}

fn state_table<'a>() -> Table<StageAction<'a>> {
    columns![StageAction<'a>;
        ("STAGE", |r| {
            let inbound = &r.stage["inboundTransitionState"];
            if inbound["enabled"] == Value::Bool(false) {
                format!("{} (transition disabled: {})", s(&r.stage["stageName"]), s(&inbound["disabledReason"]))
            } else {
                s(&r.stage["stageName"])
            }
        }),
        ("ACTION", |r| s(&r.action["actionName"])),
        ("STATUS", |r| {
            let l = &r.action["latestExecution"];
            if l.is_null() { "-".into() } else { s(&l["status"]) }
        }),
        ("AGENT", |r| s(&r.action["latestExecution"]["agent"])),
        ("DETAIL", |r| {
            let l = &r.action["latestExecution"];
            if !l["errorDetails"].is_null() {
                s(&l["errorDetails"]["message"])
            } else if !l["waitingReason"].is_null() {
                format!("waiting: {}", s(&l["waitingReason"]))
            } else {
                s(&l["summary"])
            }
        }),
    ]
}

fn show_state(state: &Value) -> String {
    let latest = &state["latestExecution"];
    let mut text = format!(
        "pipeline {} (version {}): latest execution {} {}\n",
        s(&state["pipelineName"]),
        s(&state["pipelineVersion"]),
        s(&latest["pipelineExecutionId"]),
        s(&latest["status"])
    );
    text.push_str(&state_table().render(&stage_actions(&state["stageStates"], "actionStates")));
    // Issue 21, feed: the pipelines feeding this one, and why a set waits.
    for up in items(&state["upstreams"]) {
        let stage = up["stageName"].as_str().unwrap_or("its last stage");
        let _ = write!(text, "upstream {} <- {} ({stage})", s(&up["sourceAction"]), s(&up["pipelineName"]));
        if let Some(taken) = up["lastTaken"].as_str() {
            let _ = write!(text, ", last took {taken}");
        }
        text.push('\n');
        if let Some(held) = up["held"].as_str() {
            let _ = writeln!(text, "  held since {}: {held}", s(&up["heldSince"]));
        }
    }
    text
}

fn read_file(file: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))
}

/// `--git-base` and `--source-url ACTION=URL` as import options.
fn import_options(git_base: Option<String>, source_urls: &[String]) -> Result<ImportOptions, Failure> {
    let mut options = ImportOptions::default();
    if let Some(base) = git_base {
        options.git_base = base;
    }
    for entry in source_urls {
        let Some((action, url)) = entry.split_once('=').filter(|(a, u)| !a.is_empty() && !u.is_empty()) else {
            return Err(Failure::new(2, format!("--source-url {entry:?} must be ACTION=URL")));
        };
        options.source_urls.insert(action.to_owned(), url.to_owned());
    }
    Ok(options)
}

/// Reads a declaration file; with a provider map (an empty path: the
/// defaults alone), remaps CodePipeline's providers first and prints the
/// import report on stderr.
fn read_declaration(file: &Path, provider_map: Option<&Path>, options: &ImportOptions) -> Result<String, Failure> {
    let text = read_file(file)?;
    let Some(map_path) = provider_map else { return Ok(text) };
    let map = if map_path.as_os_str().is_empty() {
        crate::pipeline::import::ProviderMap::defaults()
    } else {
        let map_text = read_file(map_path)?;
        crate::pipeline::import::ProviderMap::with_overrides(&map_text).map_err(|e| Failure::new(2, e))?
    };
    let imported = crate::pipeline::import::import(&text, &map, options)
        .map_err(|problems| Failure::new(2, format!("cannot import {}:\n  {}", file.display(), problems.join("\n  "))))?;
    if !imported.report.is_empty() {
        eprintln!("import of {}:\n  {}", file.display(), imported.report.join("\n  "));
    }
    Ok(imported.declaration)
}
