//! `sluice webhook`: the secret that signs a pipeline's push deliveries.

use super::output::s;
use super::{Ctx, Failure};
use crate::ops::{DeleteWebhook, PutWebhook};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Make (or replace) a pipeline's webhook secret; prints it alone, once.
    /// Deliveries go to POST /v1/webhooks/PIPELINE, signed with it.
    Create { pipeline: String },
    /// Remove a pipeline's webhook: deliveries are refused.
    Delete { pipeline: String },
}

pub async fn run(ctx: &Ctx, cmd: WebhookCmd) -> Result<i32, Failure> {
    match cmd {
        WebhookCmd::Create { pipeline } => {
            let out = ctx.client()?.call(PutWebhook { pipeline_name: pipeline }).await?;
            ctx.output.print(&out, |out| format!("{}\n", s(&out["secret"])));
        }
        WebhookCmd::Delete { pipeline } => {
            let out = ctx.client()?.call(DeleteWebhook { pipeline_name: pipeline.clone() }).await?;
            ctx.output.print(&out, |_| format!("webhook of {pipeline} deleted\n"));
        }
    }
    Ok(0)
}
