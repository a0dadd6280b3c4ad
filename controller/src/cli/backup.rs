//! `sluice backup --to DIR` (issue 17, life): a consistent copy of a
//! running controller's store, artifacts and keys, written on its host.

use super::{Ctx, Failure};
use crate::ops::CreateBackup;
use clap::Args;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A directory on the controller's host, absolute, outside the data dir,
    /// best on another disk: one that does not exist yet (made 0700), or an
    /// empty one of the controller's user that no one else may write.
    /// Restore: see docs/install.md.
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
        // Artifacts in S3 (issue 18, s3): the bucket is not in the copy.
        if let Some(bucket) = out["blobsIn"].as_str() {
            text.push_str(&format!(
                "artifacts and plugins are in {bucket}, not in the backup: keep the bucket versioned or replicated \
                 (docs/install.md, \"Artifacts in S3-compatible storage\")\n"
            ));
        }
        text
    });
    // A restore of it would lack them: not a backup to rely on.
    if let Some(missing) = out["missingArtifacts"].as_array().filter(|m| !m.is_empty()) {
        eprintln!(
            "error: {} artifacts the store refers to are missing from the controller's artifact store, so from the \
             backup too (listed in its backup.json as missingArtifacts); their executions cannot be rolled back to \
             or their artifacts downloaded",
            missing.len()
        );
        return Ok(1);
    }
    Ok(0)
}
