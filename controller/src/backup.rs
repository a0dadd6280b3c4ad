//! `sluice backup --to DIR` (issue 17, life): `POST /v1/backups`, and the
//! copy it makes on the controller's host.
//!
//! The transport asks the driver to begin (`BeginBackup`: the caller's
//! permission, the target checked, artifact collection paused), then
//! copies off the driver's task: the store as one committed state
//! (`store::snapshot`, `VACUUM INTO` on a connection of its own), every
//! artifact that copy refers to, the pushed plugins, and the keys
//! (CA, `secret.key`, `worker.key`, `admin.token`), and writes
//! `backup.json` last; then it asks the driver to end. The copy is a data
//! dir: restoring is starting a controller on (a copy of) it.
//!
//! Why on the controller's host, not streamed to the CLI: artifacts run to
//! gigabytes that the host's own disk and backup tools handle best, and the
//! keys a restore needs never cross the network.

use crate::api::{ApiState, ask};
use crate::auth::Caller;
use crate::ops::{BeginBackup, CreateBackup, CreateBackupOutput, EndBackup, OpError};
use anyhow::{Context as _, Result, bail};
use axum::Json;
use axum::extract::{Extension, State};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The name of a backup's manifest: written last, so a backup without it
/// is incomplete.
pub const MANIFEST: &str = "backup.json";

/// Files of the data dir a restore needs besides the store and the blobs.
const KEY_FILES: &[&str] = &["ca/ca.crt", "ca/ca.key", "secret.key", "worker.key", "admin.token"];

/// `POST /v1/backups`.
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<CreateBackupOutput>, OpError> {
    let op: CreateBackup =
        serde_json::from_slice(&body).map_err(|e| OpError::invalid(format!("request body is invalid: {e}")))?;
    let begun = ask(&state, BeginBackup { to: op.to }, caller.clone()).await?;
    // Its own task: a client that hangs up does not leave collection paused
    // or a copy half done without its end recorded.
    let task = tokio::spawn(async move {
        let (data_dir, to) = (begun.data_dir.clone(), begun.to.clone());
        let written = tokio::task::spawn_blocking(move || write(&data_dir, &to))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the backup task failed: {e}")));
        let failure = written.as_ref().err().map(|e| format!("{e:#}"));
        let _ = ask(&state, EndBackup { id: begun.id, failure }, caller).await;
        written
    });
    match task.await {
        Ok(Ok(output)) => Ok(Json(output)),
        Ok(Err(e)) => Err(OpError::Internal(format!("backup failed: {e:#}"))),
        Err(e) => Err(OpError::Internal(format!("backup failed: {e}"))),
    }
}

/// Checks a backup's target: an absolute path outside the data dir (and
/// not holding it), whose parent exists, and which does not exist or is an
/// empty directory. Returns it as given (absolute).
pub fn check_target(data_dir: &Path, to: &str) -> Result<PathBuf, String> {
    let target = PathBuf::from(to);
    if to.is_empty() || !target.is_absolute() {
        return Err(format!("--to {to:?} must be an absolute path on the controller's host"));
    }
    if target.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("--to {to:?} must not contain `..`"));
    }
    let data = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let parent = target.parent().ok_or_else(|| format!("--to {to:?} has no parent directory"))?;
    let parent = std::fs::canonicalize(parent)
        .map_err(|e| format!("--to {to:?}: its parent directory is not usable on the controller's host: {e}"))?;
    let resolved = parent.join(target.file_name().unwrap_or_default());
    if resolved.starts_with(&data) || data.starts_with(&resolved) {
        return Err(format!("--to {to:?} must be outside the controller's data dir {}", data.display()));
    }
    match std::fs::symlink_metadata(&resolved) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(resolved),
        Err(e) => Err(format!("--to {to:?}: {e}")),
        Ok(meta) if meta.is_dir() && std::fs::read_dir(&resolved).map_err(|e| e.to_string())?.next().is_none() => {
            Ok(resolved)
        }
        Ok(_) => Err(format!("--to {to:?} exists and is not an empty directory: a backup never overwrites anything")),
    }
}

/// Writes a backup of `data_dir` into `to` (checked by [`check_target`]).
/// Blocking.
pub fn write(data_dir: &Path, to: &Path) -> Result<CreateBackupOutput> {
    let started = std::time::Instant::now();
    make_target(to)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let created_at = crate::views::time(now.as_millis() as u64);
    let snapshot = crate::store::snapshot::snapshot(&data_dir.join("sluice.db"), &to.join("sluice.db"))?;
    crate::ca::tighten_private_file(&to.join("sluice.db"))?;
    let (mut artifacts, mut artifact_bytes, mut missing) = (0, 0, Vec::new());
    for digest in &snapshot.artifacts {
        let Ok(from) = blob_path(&data_dir.join("artifacts"), digest) else { continue };
        if !from.exists() {
            missing.push(digest.clone());
            continue;
        }
        artifact_bytes += copy_blob(&from, &blob_path(&to.join("artifacts"), digest)?, digest)?;
        artifacts += 1;
    }
    // Pushed plugins: few and small, and kept for executions that pin them
    // by digest even after their version is deleted; built-ins come back
    // from the binary at start.
    let mut plugins = 0;
    for digest in blobs_in(&data_dir.join("plugins"))? {
        copy_blob(&blob_path(&data_dir.join("plugins"), &digest)?, &blob_path(&to.join("plugins"), &digest)?, &digest)?;
        plugins += 1;
    }
    for name in KEY_FILES {
        let from = data_dir.join(name);
        if from.exists() {
            let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let target = to.join(name);
            crate::ca::create_private_dir(target.parent().expect("a key file has a parent"))?;
            crate::ca::write_private(&target, &bytes)?;
        }
    }
    let output = CreateBackupOutput {
        to: to.display().to_string(),
        sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: snapshot.schema_version,
        created_at,
        executions: snapshot.executions,
        artifacts,
        artifact_bytes,
        missing_artifacts: missing,
        plugins,
        took_ms: started.elapsed().as_millis() as u64,
    };
    let manifest = serde_json::to_vec_pretty(&output)?;
    crate::ca::write_private(&to.join(MANIFEST), &manifest)?;
    Ok(output)
}

/// Makes the target directory (0700), or takes an empty one that is a
/// directory itself, not a link to one (checked again here: the target
/// may have changed since the driver checked it).
fn make_target(to: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().mode(0o700).create(to).with_context(|| format!("creating {}", to.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", to.display())),
        Ok(meta) if meta.is_dir() && std::fs::read_dir(to)?.next().is_none() => {
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", to.display()))
        }
        Ok(_) => bail!("{} is no longer an empty directory: a backup never overwrites anything", to.display()),
    }
}

fn blob_path(root: &Path, digest: &str) -> Result<PathBuf> {
    if !sluice_runtime::is_digest(digest) {
        bail!("{digest:?} is not a sha256 digest");
    }
    Ok(root.join(&digest[..2]).join(digest))
}

/// Digests of the blobs under a blob store's root.
fn blobs_in(root: &Path) -> Result<Vec<String>> {
    let mut digests = Vec::new();
    let Ok(dirs) = std::fs::read_dir(root) else { return Ok(digests) };
    for dir in dirs {
        let dir = dir?.path();
        if !dir.is_dir() || dir.file_name().is_some_and(|n| n == "tmp") {
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if sluice_runtime::is_digest(&name) {
                digests.push(name);
            }
        }
    }
    digests.sort();
    Ok(digests)
}

/// Copies a blob, checking on the way that its bytes still hash to its
/// name (a backup of a damaged blob would hide the damage); returns its size.
fn copy_blob(from: &Path, to: &Path, digest: &str) -> Result<u64> {
    crate::ca::create_private_dir(to.parent().expect("a blob has a parent"))?;
    let mut input = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut output = std::fs::File::create_new(to).with_context(|| format!("creating {}", to.display()))?;
    let (mut hasher, mut buf, mut size) = (Sha256::new(), vec![0u8; 256 * 1024], 0u64);
    loop {
        let n = input.read(&mut buf).with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).with_context(|| format!("writing {}", to.display()))?;
        size += n as u64;
    }
    let got = hex::encode(hasher.finalize());
    if got != digest {
        bail!("{} is damaged: its bytes hash to {got}", from.display());
    }
    output.sync_all()?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_absolute_new_or_empty_and_outside_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("artifacts")).unwrap();
        let path = |p: &str| dir.path().join(p).display().to_string();
        assert!(check_target(&data, &path("backup")).is_ok());
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert!(check_target(&data, &path("empty")).is_ok());
        std::fs::write(dir.path().join("empty").join("x"), b"x").unwrap();
        let refusals = [
            ("absolute", "backups/today".to_string()),
            ("not an empty", path("empty")),
            ("outside", path("data/artifacts/b")),
            ("outside", path("data")),
            ("outside", dir.path().display().to_string()),
            ("`..`", path("x/../backup")),
            ("parent directory", path("no/such/parent")),
        ];
        for (why, to) in refusals {
            let err = check_target(&data, &to).unwrap_err();
            assert!(err.contains(why), "{to}: {err}");
        }
    }

    #[test]
    fn a_backup_is_a_data_dir_with_what_the_store_refers_to_and_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let artifacts = crate::blobs::BlobStore::open(&data.join("artifacts")).unwrap();
        let plugins = crate::blobs::BlobStore::open(&data.join("plugins")).unwrap();
        let kept = artifacts.put_bytes(b"referenced").unwrap();
        let stray = artifacts.put_bytes(b"nothing refers to this").unwrap();
        let plugin = plugins.put_bytes(b"a component").unwrap();
        std::fs::create_dir_all(data.join("ca")).unwrap();
        for name in KEY_FILES {
            std::fs::write(data.join(name), name.as_bytes()).unwrap();
        }
        {
            use crate::store::Store as _;
            let mut store =
                crate::store::SqliteStore::open(&data.join("sluice.db"), crate::store::Durability::Process).unwrap();
            let mut e = crate::engine::Execution {
                id: crate::engine::ExecutionId("e1".into()),
                pipeline: "web".into(),
                version: 1,
                status: crate::engine::ExecutionStatus::Succeeded,
                status_summary: None,
                trigger: crate::engine::Trigger::new("CreatePipeline", String::new()),
                started_at: 1,
                updated_at: 1,
                variables: Default::default(),
                stages: vec![],
                artifacts: Default::default(),
                namespaces: Default::default(),
                ordinal: 0,
                waiting_for: None,
                source_revisions: Default::default(),
                rollback: None,
            };
            e.artifacts.insert("bin".into(), crate::engine::ArtifactRef { digest: kept.clone(), size: 10 });
            e.artifacts.insert("gone".into(), crate::engine::ArtifactRef { digest: "ab".repeat(32), size: 1 });
            store.apply(&[crate::store::Change::Execution(Box::new(e))]).unwrap();
        }
        let to = dir.path().join("backup");
        let out = write(&data, &to).unwrap();
        assert_eq!((out.executions, out.artifacts, out.artifact_bytes, out.plugins), (1, 1, 10, 1));
        assert_eq!(out.missing_artifacts, ["ab".repeat(32)]);
        assert!(to.join("artifacts").join(&kept[..2]).join(&kept).exists());
        assert!(!to.join("artifacts").join(&stray[..2]).join(&stray).exists(), "only what the store refers to");
        assert!(to.join("plugins").join(&plugin[..2]).join(&plugin).exists());
        for name in KEY_FILES {
            assert_eq!(std::fs::read(to.join(name)).unwrap(), name.as_bytes());
        }
        let manifest: CreateBackupOutput = serde_json::from_slice(&std::fs::read(to.join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(manifest, out);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&to).unwrap().permissions().mode() & 0o777, 0o700);
        // A damaged blob is not copied as if it were good.
        std::fs::write(artifacts.path(&kept).unwrap(), b"tampered!!").unwrap();
        let err = write(&data, &dir.path().join("again")).unwrap_err();
        assert!(format!("{err:#}").contains("is damaged"), "{err:#}");
        // A target replaced by a link after the check is not written through.
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("link")).unwrap();
        let err = write(&data, &dir.path().join("link")).unwrap_err();
        assert!(format!("{err:#}").contains("no longer an empty directory"), "{err:#}");
    }
}
