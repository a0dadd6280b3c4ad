//! Backups (issue 17, life): `sluice backup --to DIR`.
//!
//! `CreateBackup` travels by hand (`POST /v1/backups`, `crate::backup`):
//! the copy takes as long as the artifacts take to copy, off the driver's
//! task, so the transport asks the driver to begin (`BeginBackup`: the
//! permission, the target, and artifact collection paused so that nothing
//! the snapshot refers to goes) and to end (`EndBackup`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// CreateBackup: a consistent copy of the store, the artifacts its
/// executions refer to, the pushed plugins and the controller's keys,
/// written on the controller's host into `to`: an absolute path of a
/// directory that does not exist yet (or is empty), outside the data dir.
/// The copy is a data dir: a controller started on it runs from it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackup {
    pub to: String,
}

/// What a backup holds; also its `backup.json`, written last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBackupOutput {
    pub to: String,
    /// The version of the release that wrote it.
    pub sluice_version: String,
    /// The store's schema version (`PRAGMA user_version`).
    pub schema_version: u32,
    /// When the store's snapshot was taken (RFC 3339).
    pub created_at: String,
    pub executions: u64,
    pub artifacts: u64,
    pub artifact_bytes: u64,
    /// Artifacts the store refers to that the live artifact store did not
    /// have either (never collected: lost before the backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_artifacts: Vec<String>,
    pub plugins: u64,
    pub took_ms: u64,
    /// Artifacts in S3 (issue 18, s3): the bucket the artifacts and
    /// plugins live in (`s3://...`), which the backup does not copy: back
    /// the bucket up with its versioning or replication (docs/install.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs_in: Option<String>,
}

/// The driver's half of a backup's start (internal: asked by the transport).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BeginBackup {
    /// The target: the audit record's resource names it (`backup/TARGET`).
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BeginBackupOutput {
    /// Names the backup for [`EndBackup`].
    pub id: String,
    /// The controller's data dir, where the copy is read from.
    pub data_dir: PathBuf,
    /// The target as given (checked on the host by the transport).
    pub to: PathBuf,
    /// `--min-free-space`: a backup on the data dir's disk keeps it free.
    pub min_free_space: u64,
    /// Whether an artifact collection begun before this backup still runs:
    /// the copy waits for it before taking its snapshot.
    #[serde(skip)]
    pub collecting: crate::driver::Collecting,
    /// Artifacts in S3 (issue 18, s3): the artifact store when it is a
    /// bucket (the copy checks its artifacts are there instead of copying).
    #[serde(skip)]
    pub remote_artifacts: Option<crate::blobs::BlobStore>,
}

/// The end of a backup, whether it was written or failed (`failure`):
/// artifact collection goes on once no backup runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndBackup {
    pub id: String,
    /// The target, as begun: the audit record's resource names it.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
