//! `sluice action-type` (custom action types, whose actions wait for job
//! workers) and `sluice job` (a job worker's calls, for scripts and for
//! looking at a job by hand).

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{
    AcknowledgeJob, ActionTypeId, CreateCustomActionType, DeleteCustomActionType, ExecutionDetails, FailureDetails,
    GetActionType, GetJobDetails, ListActionTypes, PollForJobs, PutJobFailureResult, PutJobSuccessResult,
};
use clap::Subcommand;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ActionTypeCmd {
    /// Create a custom action type from a CreateCustomActionType document
    /// (JSON or YAML: category, provider, version, configurationProperties, ...).
    Create {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List custom action types and Sluice's plugins.
    List {
        /// Custom, Sluice, AWS or ThirdParty.
        #[arg(long, value_name = "OWNER")]
        owner: Option<String>,
    },
    /// Show one action type.
    Get {
        category: String,
        provider: String,
        version: String,
        #[arg(long, default_value = "Custom")]
        owner: String,
    },
    /// Delete a custom action type (its version cannot be created again).
    Delete { category: String, provider: String, version: String },
}

/// The custom action type a job command names.
#[derive(clap::Args, Debug)]
pub struct TypeArgs {
    #[arg(long)]
    category: String,
    #[arg(long)]
    provider: String,
    #[arg(long)]
    version: String,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Take queued jobs of a custom action type (prints each job with its nonce).
    Poll {
        #[command(flatten)]
        action_type: TypeArgs,
        #[arg(long, default_value_t = 1)]
        max: u32,
        /// The queryable property's value: NAME=VALUE.
        #[arg(long, value_name = "NAME=VALUE")]
        query: Vec<String>,
    },
    /// Acknowledge a polled job with its nonce.
    Ack {
        id: String,
        #[arg(long)]
        nonce: String,
    },
    /// Show a job.
    Get { id: String },
    /// Report success; with --continuation-token the action goes on with a new job.
    Succeed {
        id: String,
        #[arg(long)]
        continuation_token: Option<String>,
        #[arg(long)]
        summary: Option<String>,
        /// An output variable: NAME=VALUE (repeatable).
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
    },
    /// Report failure: the action fails with the message.
    Fail {
        id: String,
        #[arg(long)]
        message: String,
    },
}

fn pairs(items: Vec<String>) -> Result<BTreeMap<String, String>, Failure> {
    items
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(Failure::new(2, format!("{p:?}: expected NAME=VALUE"))),
        })
        .collect()
}

pub async fn run(ctx: &Ctx, cmd: ActionTypeCmd) -> Result<i32, Failure> {
    match cmd {
        ActionTypeCmd::Create { file } => {
            let text = super::read_text(&file).map_err(|e| Failure::new(2, format!("{e:#}")))?;
            let op: CreateCustomActionType = serde_saphyr::from_str(&text)
                .map_err(|e| Failure::new(2, format!("{}: not a CreateCustomActionType document: {e}", file.display())))?;
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |out| format!("action type {} created\n", name(&out["actionType"]["id"])));
        }
        ActionTypeCmd::List { owner } => {
            let client = ctx.client()?;
            let mut all = Vec::new();
            let mut next_token = None;
            loop {
                let page = ListActionTypes { action_owner_filter: owner.clone(), next_token, region_filter: None };
                let out = client.call(page).await?;
                all.extend(items(&out["actionTypes"]).cloned());
                match out["nextToken"].as_str() {
                    Some(token) => next_token = Some(token.to_string()),
                    None => break,
                }
            }
            let out = serde_json::json!({ "actionTypes": all });
            ctx.output.print(&out, |out| type_table().render(items(&out["actionTypes"])));
        }
        ActionTypeCmd::Get { category, provider, version, owner } => {
            let out = ctx.client()?.call(GetActionType { category, owner, provider, version }).await?;
            ctx.output
                .print(&out, |out| format!("{}\n", serde_json::to_string_pretty(&out["actionType"]).unwrap_or_default()));
        }
        ActionTypeCmd::Delete { category, provider, version } => {
            let what = format!("{category}/Custom/{provider}/{version}");
            let out = ctx.client()?.call(DeleteCustomActionType { category, provider, version }).await?;
            ctx.output.print(&out, |_| format!("action type {what} deleted\n"));
        }
    }
    Ok(0)
}

pub async fn run_job(ctx: &Ctx, cmd: JobCmd) -> Result<i32, Failure> {
    match cmd {
        JobCmd::Poll { action_type, max, query } => {
            let TypeArgs { category, provider, version } = action_type;
            let action_type_id = ActionTypeId { category, owner: "Custom".into(), provider, version };
            let poll = PollForJobs { action_type_id, max_batch_size: Some(max), query_param: pairs(query)? };
            let out = ctx.client()?.call(poll).await?;
            ctx.output.print(&out, |out| job_table().render(items(&out["jobs"])));
        }
        JobCmd::Ack { id, nonce } => {
            let out = ctx.client()?.call(AcknowledgeJob { job_id: id.clone(), nonce }).await?;
            ctx.output.print(&out, |out| format!("job {id}: {}\n", s(&out["status"])));
        }
        JobCmd::Get { id } => {
            let out = ctx.client()?.call(GetJobDetails { job_id: id }).await?;
            ctx.output
                .print(&out, |out| format!("{}\n", serde_json::to_string_pretty(&out["jobDetails"]).unwrap_or_default()));
        }
        JobCmd::Succeed { id, continuation_token, summary, variables } => {
            let execution_details = summary.map(|summary| ExecutionDetails { summary: Some(summary), ..Default::default() });
            let op = PutJobSuccessResult {
                job_id: id.clone(),
                continuation_token,
                execution_details,
                output_variables: pairs(variables)?,
                ..Default::default()
            };
            let out = ctx.client()?.call(op).await?;
            ctx.output.print(&out, |_| format!("job {id} succeeded\n"));
        }
        JobCmd::Fail { id, message } => {
            let failure_details = FailureDetails { kind: "JobFailed".into(), message, external_execution_id: None };
            let out = ctx.client()?.call(PutJobFailureResult { job_id: id.clone(), failure_details }).await?;
            ctx.output.print(&out, |_| format!("job {id} failed\n"));
        }
    }
    Ok(0)
}

fn name(id: &Value) -> String {
    format!("{}/{}/{}/{}", s(&id["category"]), s(&id["owner"]), s(&id["provider"]), s(&id["version"]))
}

fn type_table() -> Table<Value> {
    columns![Value;
        ("CATEGORY", |t| s(&t["id"]["category"])),
        ("OWNER", |t| s(&t["id"]["owner"])),
        ("PROVIDER", |t| s(&t["id"]["provider"])),
        ("VERSION", |t| s(&t["id"]["version"])),
        ("INPUTS", |t| format!("{}-{}", t["inputArtifactDetails"]["minimumCount"], t["inputArtifactDetails"]["maximumCount"])),
        ("OUTPUTS", |t| format!("{}-{}", t["outputArtifactDetails"]["minimumCount"], t["outputArtifactDetails"]["maximumCount"])),
    ]
}

fn job_table() -> Table<Value> {
    columns![Value;
        ("JOB", |j| s(&j["id"])),
        ("NONCE", |j| s(&j["nonce"])),
        ("PIPELINE", |j| s(&j["data"]["pipelineContext"]["pipelineName"])),
        ("STAGE", |j| s(&j["data"]["pipelineContext"]["stage"]["name"])),
        ("ACTION", |j| s(&j["data"]["pipelineContext"]["action"]["name"])),
    ]
}
