//! `sluice webhook`: the secret that signs a pipeline's push deliveries.

use super::output::s;
use super::output::{Table, columns, items};
use super::{Ctx, Failure};
use crate::ops::{DeleteWebhook, ListWebhooks, PutWebhook};
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Make (or replace) a pipeline's webhook secret; prints it alone, once.
    /// Deliveries go to POST /v1/webhooks/PIPELINE, signed with it.
    Create { pipeline: String },
    /// Remove a pipeline's webhook: deliveries are refused.
    Delete { pipeline: String },
    /// List the pipelines that have a webhook (never their secrets).
    List,
}

pub async fn run(ctx: &Ctx, cmd: WebhookCmd) -> Result<i32, Failure> {
    match cmd {
        WebhookCmd::Create { pipeline } => {
            let out = ctx.client()?.call(PutWebhook { pipeline_name: pipeline, secret: None, definition: None }).await?;
            ctx.output.print(&out, |out| format!("{}\n", s(&out["secret"])));
        }
        WebhookCmd::Delete { pipeline } => {
            let out = ctx.client()?.call(DeleteWebhook { pipeline_name: pipeline.clone() }).await?;
            ctx.output.print(&out, |_| format!("webhook of {pipeline} deleted\n"));
        }
        WebhookCmd::List => {
            let out = ctx.client()?.call(ListWebhooks::default()).await?;
            ctx.output.print(&out, |out| webhook_table().render(items(&out["webhooks"])));
        }
    }
    Ok(0)
}

fn webhook_table() -> Table<Value> {
    columns![Value;
        ("PIPELINE", |w| s(&w["pipelineName"])),
        ("PATH", |w| s(&w["path"])),
        ("NAME", |w| s(&w["definition"]["name"])),
        ("CREATED", |w| s(&w["created"])),
    ]
}
