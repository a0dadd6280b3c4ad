//! `sluice backup --to DIR` (issue 17, life): `POST /v1/backups`, and the
//! copy it makes on the controller's host.
//!
//! The transport asks the driver to begin (`BeginBackup`: the caller's
//! permission, the path checked, artifact collection paused), then, off
//! the driver's task, checks the target on the host (`target`) and copies
//! into it: the store as one committed state
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
use crate::ops::{BeginBackup, BeginBackupOutput, CreateBackup, CreateBackupOutput, EndBackup, OpError};
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

mod target;

use target::Target;
pub use target::check_path;

/// `POST /v1/backups`.
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<CreateBackupOutput>, OpError> {
    let op: CreateBackup =
        serde_json::from_slice(&body).map_err(|e| OpError::invalid(format!("request body is invalid: {e}")))?;
    let (to, end_to) = (op.to.clone(), op.to.clone());
    let begun = ask(&state, BeginBackup { to: op.to }, caller.clone()).await?;
    // Its own task: a client that hangs up does not leave collection paused
    // or a copy half done without its end recorded.
    let task = tokio::spawn(async move {
        let id = begun.id.clone();
        // The target is checked off the driver's task (a hung mount stalls this one only).
        let written = tokio::task::spawn_blocking(move || {
            let resolved = target::check(&begun.data_dir, &to).map_err(Failed::Refused)?;
            write(&begun, &resolved).map_err(Failed::Copy)
        })
        .await
        .unwrap_or_else(|e| Err(Failed::Copy(anyhow::anyhow!("the backup task failed: {e}"))));
        let failure = written.as_ref().err().map(Failed::to_string);
        let _ = ask(&state, EndBackup { id, to: end_to, failure }, caller).await;
        written
    });
    match task.await {
        Ok(Ok(output)) => Ok(Json(output)),
        Ok(Err(Failed::Refused(why))) => Err(OpError::invalid(why)),
        Ok(Err(Failed::Copy(e))) => Err(OpError::Internal(format!("backup failed: {e:#}"))),
        Err(e) => Err(OpError::Internal(format!("backup failed: {e}"))),
    }
}

/// Why a backup was not written.
enum Failed {
    /// The target was refused; nothing was written.
    Refused(String),
    /// The copy failed; what it wrote was removed.
    Copy(anyhow::Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Refused(why) => f.write_str(why),
            Failed::Copy(e) => write!(f, "{e:#}"),
        }
    }
}

/// Writes a backup into `to` (checked by [`target::check`]); a failed
/// one removes what it wrote. Blocking.
pub fn write(begun: &BeginBackupOutput, to: &Path) -> Result<CreateBackupOutput> {
    let mut target = Target::open(to)?;
    match write_into(begun, &mut target) {
        Ok(output) => {
            target.finish()?;
            Ok(output)
        }
        Err(e) => {
            target.abandon();
            Err(e)
        }
    }
}

/// The free-space floor on the backup's way: writing `needed` more bytes
/// must leave the data dir's filesystem above `--min-free-space` when the
/// target is on it, and must fit where it is not.
struct Room {
    floor: u64,
    same_disk: bool,
}

impl Room {
    fn check(&self, target: &Target, needed: u64) -> Result<()> {
        let free = target.free_bytes()?;
        if self.same_disk && free.saturating_sub(needed) < self.floor {
            bail!(
                "the backup needs about {needed} more bytes on the controller's own disk, which has {free} free: that \
                 would leave less than the {} bytes kept free (--min-free-space); write the backup to another disk",
                self.floor
            );
        }
        if !self.same_disk && free < needed {
            bail!("the backup needs about {needed} more bytes and {} has {free} free", target.path.display());
        }
        Ok(())
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn write_into(begun: &BeginBackupOutput, target: &mut Target) -> Result<CreateBackupOutput> {
    use std::os::unix::fs::MetadataExt as _;
    let (data_dir, started) = (&begun.data_dir, std::time::Instant::now());
    let room = Room { floor: begun.min_free_space, same_disk: std::fs::metadata(data_dir)?.dev() == target.device()? };
    // A collection that began before this backup may hold a keep-set older
    // than the snapshot: it ends first (new ones wait for this backup).
    while begun.collecting.is_running() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let live = data_dir.join("sluice.db");
    room.check(target, file_size(&live) + file_size(&data_dir.join("sluice.db-wal")))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let created_at = crate::views::time(now.as_millis() as u64);
    // Into a name of its own, then sealed (0600, synced) and renamed.
    let snapshot = crate::store::snapshot::snapshot(&live, &target.reach(Path::new("sluice.db.partial")))?;
    target.seal("sluice.db.partial", "sluice.db")?;
    let mut copies = Vec::new();
    let mut missing = Vec::new();
    // Artifacts in S3 (issue 18, s3): the bucket keeps them (and the
    // plugins); the backup records where, and which it lacks.
    if let Some(remote) = &begun.remote_artifacts {
        return finish_remote(begun, target, remote, snapshot, created_at, started);
    }
    for digest in &snapshot.artifacts {
        let Ok(from) = blob_path(&data_dir.join("artifacts"), digest) else { continue };
        match std::fs::metadata(&from) {
            Ok(meta) => copies.push((from, blob_path(Path::new("artifacts"), digest)?, digest.clone(), meta.len())),
            Err(_) => missing.push(digest.clone()),
        }
    }
    let artifacts = copies.len() as u64;
    // Pushed plugins: few and small, and kept for executions that pin them
    // by digest even after their version is deleted; built-ins come back
    // from the binary at start.
    let plugins = blobs_in(&data_dir.join("plugins"))?;
    for digest in &plugins {
        let from = blob_path(&data_dir.join("plugins"), digest)?;
        let size = file_size(&from);
        copies.push((from, blob_path(Path::new("plugins"), digest)?, digest.clone(), size));
    }
    // Checked before each blob too: other writers share the disk.
    let mut remaining: u64 = copies.iter().map(|c| c.3).sum();
    let mut artifact_bytes = 0;
    for (n, (from, to, digest, size)) in copies.iter().enumerate() {
        room.check(target, remaining)?;
        let copied = copy_blob(from, target, to, digest)?;
        remaining = remaining.saturating_sub(*size);
        if (n as u64) < artifacts {
            artifact_bytes += copied;
        }
    }
    if !missing.is_empty() {
        tracing::warn!(count = missing.len(), "backup: artifacts the store refers to are missing from the controller");
    }
    let output = CreateBackupOutput {
        to: target.path.display().to_string(),
        sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: snapshot.schema_version,
        created_at,
        executions: snapshot.executions,
        artifacts,
        artifact_bytes,
        missing_artifacts: missing,
        plugins: plugins.len() as u64,
        took_ms: started.elapsed().as_millis() as u64,
        blobs_in: None,
    };
    copy_keys_and_seal(data_dir, target, output)
}

/// The keys, then the manifest, last.
fn copy_keys_and_seal(data_dir: &Path, target: &mut Target, output: CreateBackupOutput) -> Result<CreateBackupOutput> {
    for name in KEY_FILES {
        let from = data_dir.join(name);
        if from.exists() {
            let bytes = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let mut file = target.create(Path::new(name))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
    }
    let mut manifest = target.create(Path::new(MANIFEST))?;
    manifest.write_all(&serde_json::to_vec_pretty(&output)?)?;
    manifest.sync_all()?;
    Ok(output)
}

/// A backup of a controller whose blobs are in a bucket: the store and the
/// keys, and the bucket's address; each artifact the store refers to is
/// looked up there (not copied) so that the manifest names those missing.
fn finish_remote(
    begun: &BeginBackupOutput,
    target: &mut Target,
    remote: &crate::blobs::BlobStore,
    snapshot: crate::store::snapshot::Snapshot,
    created_at: String,
    started: std::time::Instant,
) -> Result<CreateBackupOutput> {
    let (mut artifacts, mut artifact_bytes, mut missing) = (0, 0, Vec::new());
    for digest in &snapshot.artifacts {
        match remote.size_of(digest) {
            Some(size) => {
                artifacts += 1;
                artifact_bytes += size;
            }
            None => missing.push(digest.clone()),
        }
    }
    if !missing.is_empty() {
        tracing::warn!(count = missing.len(), "backup: artifacts the store refers to are missing from the bucket");
    }
    let output = CreateBackupOutput {
        to: target.path.display().to_string(),
        sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version: snapshot.schema_version,
        created_at,
        executions: snapshot.executions,
        artifacts,
        artifact_bytes,
        missing_artifacts: missing,
        plugins: 0,
        took_ms: started.elapsed().as_millis() as u64,
        blobs_in: Some(remote.describe().trim_end_matches("/artifacts").to_string()),
    };
    copy_keys_and_seal(&begun.data_dir, target, output)
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

/// Copies a blob into the target, checking on the way that its bytes
/// still hash to its name (a backup of a damaged blob would hide the
/// damage); returns its size.
fn copy_blob(from: &Path, target: &mut Target, to: &Path, digest: &str) -> Result<u64> {
    let mut input = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut output = target.create(to)?;
    let (mut hasher, mut buf, mut size) = (Sha256::new(), vec![0u8; 256 * 1024], 0u64);
    loop {
        let n = input.read(&mut buf).with_context(|| format!("reading {}", from.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).with_context(|| format!("writing {}", target.path.join(to).display()))?;
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
        assert!(target::check(&data, &path("backup")).is_ok());
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        assert!(target::check(&data, &path("empty")).is_ok());
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
            let err = target::check(&data, &to).unwrap_err();
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
                origins: Default::default(),
            };
            e.artifacts.insert("bin".into(), crate::engine::ArtifactRef { digest: kept.clone(), size: 10 });
            e.artifacts.insert("gone".into(), crate::engine::ArtifactRef { digest: "ab".repeat(32), size: 1 });
            store.apply(&[crate::store::Change::Execution(std::sync::Arc::new(e))]).unwrap();
        }
        let to = dir.path().join("backup");
        let out = write(&begun(&data, 0), &to).unwrap();
        assert!(!dir.path().join("backup.partial").exists(), "written as backup.partial, renamed when complete");
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
        // Every directory 0700 and every file 0600, the store's copy included.
        assert_modes(&to);
        // A damaged blob is not copied as if it were good, and the failed
        // backup leaves nothing behind.
        std::fs::write(artifacts.path(&kept).unwrap(), b"tampered!!").unwrap();
        let err = write(&begun(&data, 0), &dir.path().join("again")).unwrap_err();
        assert!(format!("{err:#}").contains("is damaged"), "{err:#}");
        assert!(!dir.path().join("again").exists() && !dir.path().join("again.partial").exists());
        // An empty directory given as the target is emptied again on failure.
        std::fs::create_dir(dir.path().join("given")).unwrap();
        assert!(write(&begun(&data, 0), &dir.path().join("given")).is_err());
        assert_eq!(std::fs::read_dir(dir.path().join("given")).unwrap().count(), 0);
        // A target replaced by a link after the check is not written through.
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("link")).unwrap();
        let err = write(&begun(&data, 0), &dir.path().join("link")).unwrap_err();
        assert!(format!("{err:#}").contains("no longer an empty directory"), "{err:#}");
    }

    fn begun(data: &Path, floor: u64) -> BeginBackupOutput {
        BeginBackupOutput {
            id: "b".into(),
            data_dir: data.to_path_buf(),
            to: PathBuf::new(),
            min_free_space: floor,
            collecting: Default::default(),
            remote_artifacts: None,
        }
    }

    fn assert_modes(dir: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_modes(&path);
            } else {
                assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{}", path.display());
            }
        }
    }

    #[test]
    fn a_backup_that_would_go_under_the_free_space_floor_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        crate::store::SqliteStore::open(
            &{
                std::fs::create_dir_all(&data).unwrap();
                data.join("sluice.db")
            },
            crate::store::Durability::Process,
        )
        .unwrap();
        // The target shares the data dir's disk: the floor applies.
        let err = write(&begun(&data, u64::MAX / 2), &dir.path().join("full")).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("--min-free-space") && message.contains("another disk"), "{message}");
        assert!(!dir.path().join("full").exists() && !dir.path().join("full.partial").exists());
        assert!(write(&begun(&data, 0), &dir.path().join("fits")).is_ok());
    }

    #[test]
    fn a_backup_waits_for_a_collection_that_began_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        crate::store::SqliteStore::open(&data.join("sluice.db"), crate::store::Durability::Process).unwrap();
        let mut plan = begun(&data, 0);
        let collecting = crate::driver::Collecting::default();
        plan.collecting = collecting.clone();
        let guard = collecting.start_for_test();
        let to = dir.path().join("waits");
        let writer = std::thread::spawn(move || write(&plan, &to).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!dir.path().join("waits.partial/sluice.db").exists(), "no snapshot while the collection runs");
        drop(guard);
        writer.join().unwrap().unwrap();
        assert!(dir.path().join("waits").join(MANIFEST).exists());
    }
}
