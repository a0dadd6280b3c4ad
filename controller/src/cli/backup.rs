//! `sluice backup --to DIR` (issue 17, life): a consistent copy of a
//! running controller's store, artifacts and keys, written on its host.

use super::{Ctx, Failure};
use crate::ops::CreateBackup;
use clap::Args;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A directory on the controller's host, absolute, that does not exist
    /// yet (or is empty), outside the data dir. Restore: see docs/install.md.
    #[arg(long, value_name = "DIR")]
    pub to: String,
}

pub async fn run(ctx: &Ctx, args: BackupArgs) -> Result<i32, Failure> {
    let out = ctx.client()?.create_backup(CreateBackup { to: args.to }).await?;
    ctx.output.print(&out, |out| {
        let mut text = format!(
            "backup written to {}: {} executions, {} artifacts ({} bytes), {} plugins, schema version {}, in {} ms\n",
            out["to"].as_str().unwrap_or_default(),
            out["executions"],
            out["artifacts"],
            out["artifactBytes"],
            out["plugins"],
            out["schemaVersion"],
            out["tookMs"],
        );
        if let Some(missing) = out["missingArtifacts"].as_array().filter(|m| !m.is_empty()) {
            text.push_str(&format!(
                "warning: {} artifacts the store refers to were already missing from the controller\n",
                missing.len()
            ));
        }
        text
    });
    Ok(0)
}
