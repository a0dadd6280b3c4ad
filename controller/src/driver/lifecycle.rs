//! Data lifecycle in the driver (issue 17, life): retention of old
//! executions, and the driver's half of a backup (`crate::backup` copies).
//!
//! Retention runs at start, hourly, and for a pipeline as soon as one of
//! its executions ends: the ended executions [`crate::retention::expired`]
//! names go with their logs in one transaction, and the artifact
//! collection runs next, removing the artifacts nothing refers to any
//! more. Executions still running, and so everything they refer to, stay.
//! While a backup copies, artifact collection waits.

use super::Driver;
use crate::ops::{BeginBackup, BeginBackupOutput, Context, EndBackup, Handle, OpError};
use crate::retention::Retention;
use crate::store::Change;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{info, warn};

/// How often every pipeline's retention is applied (besides when an
/// execution ends): `--keep-days` moves with the clock.
const RETENTION_EVERY: u64 = 3_600_000;

/// How often the free space is looked at when nothing is written: a disk
/// that another writer fills is reported, not only refused uploads.
const DISK_CHECK_EVERY: u64 = 600_000;

/// How often log ingestion looks at the free space.
const LOG_DISK_CHECK_EVERY: u64 = 5_000;

/// How soon collection looks again while a backup runs.
const COLLECTION_RETRY: u64 = 60_000;

pub(super) struct Lifecycle {
    data_dir: PathBuf,
    /// `DATA_DIR/lock`, held while the driver lives: one controller per data dir.
    _lock: DataDirLock,
    retention: Retention,
    /// When every pipeline's retention is next applied.
    next_retention: u64,
    /// Pipelines with an execution that ended since retention last ran.
    ended: BTreeSet<String>,
    backups: Backups,
    /// Whether an artifact collection runs now.
    pub(super) collecting: Collecting,
    /// When the free space is next looked at.
    next_disk_check: u64,
    /// Whether the disk was under the floor when last looked at for log
    /// lines, and when to look again.
    log_disk: (bool, u64),
    // PostgreSQL (issue 18, pg): a backup copies SQLite's file; PostgreSQL's is pg_dump's.
    store: crate::store::Location,
}

/// Backups copying now, by id: when each began. One at a time. A backup
/// pauses collection for as long as it copies, however long: its task
/// always sends its end (failed or not), and a process that dies mid-copy
/// takes the pause with it.
#[derive(Debug, Default)]
struct Backups(HashMap<String, u64>);

impl Backups {
    /// A new backup's id, or the one still being written.
    fn begin(&mut self, now: u64, id: String) -> Result<String, String> {
        if let Some(other) = self.0.keys().next() {
            return Err(other.clone());
        }
        self.0.insert(id.clone(), now);
        Ok(id)
    }

    /// Whether `id` was being written (and is no more).
    fn end(&mut self, id: &str) -> bool {
        self.0.remove(id).is_some()
    }

    /// Whether a backup is being written.
    fn running(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Set while an artifact collection runs (off the driver's task): a backup
/// waits for it to end before taking its snapshot, since that collection's
/// keep-set may predate the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Collecting(Arc<AtomicBool>);

impl Collecting {
    /// Marks a collection running until the guard is dropped.
    pub(super) fn start(&self) -> CollectionGuard {
        self.0.store(true, Ordering::SeqCst);
        CollectionGuard(self.0.clone())
    }

    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub fn start_for_test(&self) -> CollectionGuard {
        self.start()
    }
}

/// Clears [`Collecting`] when the collection ends, or panics.
pub struct CollectionGuard(Arc<AtomicBool>);

impl Drop for CollectionGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Lifecycle {
    pub(super) fn new(data_dir: PathBuf, retention: Retention, lock: DataDirLock) -> Self {
        Self {
            data_dir,
            _lock: lock,
            retention,
            next_retention: 0,
            ended: BTreeSet::new(),
            backups: Backups::default(),
            collecting: Collecting::default(),
            next_disk_check: 0,
            log_disk: (false, 0),
            store: crate::store::Location::Sqlite,
        }
    }

    /// The store the controller runs on (SQLite unless said).
    pub(super) fn on_store(self, store: crate::store::Location) -> Self {
        Self { store, ..self }
    }
}

/// An exclusive `flock` on `DATA_DIR/lock`: a second controller started
/// on the same data dir (an overlapping restart, a second unit) would
/// migrate, write and collect the same store and artifacts as this one.
pub(super) struct DataDirLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Takes the data dir's lock, or says which process holds it.
pub(super) fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<DataDirLock> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DataDirLock(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => anyhow::bail!(
            "the data dir {} is in use by another controller ({} is locked): stop that one first, or give this one \
             another --data-dir",
            dir.display(),
            path.display()
        ),
        Err((_, e)) => anyhow::bail!("locking {}: {e}", path.display()),
    }
}

impl Driver {
    /// When retention is next due (for [`Driver::next_wake`]).
    pub(super) fn next_retention(&self) -> Option<u64> {
        let life = &self.lifecycle;
        if life.retention.is_off() {
            return None;
        }
        Some(if life.ended.is_empty() { life.next_retention } else { 0 })
    }

    /// An execution of `pipeline` ended: its retention applies at once.
    pub(super) fn execution_ended(&mut self, pipeline: &str) {
        if !self.lifecycle.retention.is_off() {
            self.lifecycle.ended.insert(pipeline.to_string());
        }
    }

    /// Removes the ended executions that retention lets go, with their
    /// logs, from every pipeline when the hourly pass is due, else from
    /// the pipelines whose executions ended since the last pass.
    pub(super) fn apply_retention(&mut self, now: u64) {
        if self.lifecycle.retention.is_off() {
            return;
        }
        let everything = now >= self.lifecycle.next_retention;
        if !everything && self.lifecycle.ended.is_empty() {
            return;
        }
        let ended = std::mem::take(&mut self.lifecycle.ended);
        let ages = if everything {
            self.lifecycle.next_retention = now + RETENTION_EVERY;
            self.warn_of_unknown_pipelines();
            self.store.execution_ages(None)
        } else {
            ended.iter().try_fold(Vec::new(), |mut all, p| {
                all.extend(self.store.execution_ages(Some(p))?);
                anyhow::Ok(all)
            })
        };
        let ages = match ages {
            Ok(ages) => ages,
            Err(e) => return warn!("reading the executions' ages for retention: {e:#}"),
        };
        let mut by_pipeline: std::collections::BTreeMap<String, Vec<crate::retention::Age>> = Default::default();
        for (pipeline, age) in ages {
            by_pipeline.entry(pipeline).or_default().push(age);
        }
        let mut gone = Vec::new();
        for (pipeline, ages) in by_pipeline {
            let keep = self.lifecycle.retention.for_pipeline(&pipeline);
            let expired = crate::retention::expired(keep, &ages, now);
            if !expired.is_empty() {
                info!(%pipeline, count = expired.len(), kept = ages.len() - expired.len(), "old executions removed (retention)");
                gone.extend(expired);
            }
        }
        if gone.is_empty() {
            return;
        }
        if let Err(e) = self.store.apply(&[Change::DeleteExecutions(gone)]) {
            crate::ha::write_failed(&e);
        }
        // Their artifacts that nothing else refers to go now, not at the
        // next interval (the collection keeps anything younger than one).
        self.next_gc = now;
    }

    /// Logs the per-pipeline rules whose pipeline does not exist (at start
    /// and every hour): a misspelt name exempts nothing and limits nothing.
    fn warn_of_unknown_pipelines(&self) {
        if self.lifecycle.retention.pipelines.is_empty() {
            return;
        }
        let known = match self.store.pipelines() {
            Ok(records) => records.into_iter().map(|r| r.name).collect(),
            Err(e) => return warn!("reading the pipelines for retention: {e:#}"),
        };
        for pipeline in self.lifecycle.retention.unknown_pipelines(&known) {
            warn!(%pipeline, "a retention rule (--keep-executions, --keep-days) names a pipeline that does not exist");
        }
    }

    /// Whether a backup is copying: artifact collection waits for it (a
    /// blob its snapshot refers to must still be there when it is copied).
    /// Postpones the collection a little when so.
    pub(super) fn backup_holds_collection(&mut self, now: u64) -> bool {
        if !self.lifecycle.backups.running() {
            return false;
        }
        self.next_gc = now + COLLECTION_RETRY.min(self.artifact_gc_interval.as_millis() as u64);
        true
    }
}

impl Driver {
    /// Logs a warning while the artifact store's disk is under the
    /// free-space floor: uploads and pushes are refused, whatever filled it.
    pub(super) fn check_disk(&mut self, now: u64) {
        if now < self.lifecycle.next_disk_check {
            return;
        }
        self.lifecycle.next_disk_check = now + DISK_CHECK_EVERY;
        match self.artifacts.free_bytes() {
            Ok(free) if free < self.min_free_space => warn!(
                free,
                floor = self.min_free_space,
                "the controller's disk is under the free-space floor (--min-free-space): uploads are refused until \
                 space is freed (retention: --keep-executions, --keep-days)"
            ),
            Ok(_) => {}
            Err(e) => warn!("reading the free space: {e:#}"),
        }
    }

    /// Whether the artifact store's disk is under the free-space floor, for
    /// log lines: looked at once every [`LOG_DISK_CHECK_EVERY`] at most (a
    /// chatty action sends many lines a second).
    pub(super) fn disk_under_floor(&mut self, now: u64) -> bool {
        let (low, next) = self.lifecycle.log_disk;
        if now < next {
            return low;
        }
        let low = self.artifacts.free_bytes().is_ok_and(|free| free < self.min_free_space);
        self.lifecycle.log_disk = (low, now + LOG_DISK_CHECK_EVERY);
        low
    }

    /// The free-space floor (`--min-free-space`) for a write of `incoming`
    /// bytes into `blobs` that no agent upload books (a pushed plugin):
    /// refused with the figures when it would leave less free.
    pub(super) fn keep_free_space(&self, blobs: &crate::blobs::BlobStore, incoming: u64, what: &str) -> Result<(), OpError> {
        // Object storage (issue 18, s3): the write does not land on this disk.
        if !blobs.is_local() {
            return Ok(());
        }
        let free = blobs.free_bytes().map_err(|e| OpError::Internal(format!("{e:#}")))?;
        let reserved = self.uploads_in_flight();
        if free.saturating_sub(reserved).saturating_sub(incoming) < self.min_free_space {
            self.metrics.free_space_refusals.inc();
            warn!(free, reserved, incoming, floor = self.min_free_space, "write refused: the free-space floor");
            return Err(OpError::Unavailable(format!(
                "the controller's disk has {free} bytes free, {reserved} of them granted to uploads in flight; \
                 {what} ({incoming} bytes) would leave less than the {} bytes kept free (--min-free-space): \
                 free space on the controller (retention: --keep-executions, --keep-days) or lower the floor",
                self.min_free_space
            )));
        }
        Ok(())
    }
}

impl Handle<BeginBackup> for Driver {
    fn handle(&mut self, op: BeginBackup, ctx: &Context) -> Result<BeginBackupOutput, OpError> {
        // The state is not in the data dir: `sluice backup` would copy
        // artifacts without the executions that name them (issue 18, pg).
        if let crate::store::Location::Postgres(_) = &self.lifecycle.store {
            return Err(OpError::UnsupportedOperation(
                "this controller's store is PostgreSQL: back it up with pg_dump (and the data dir's keys and artifacts \
                 with a copy of the directory, or the bucket's own backup); `sluice backup` copies only a SQLite store"
                    .into(),
            ));
        }
        // The host's checks are the transport's, off this task.
        let to = crate::backup::check_path(&op.to).map_err(OpError::invalid)?;
        let id = self
            .lifecycle
            .backups
            .begin(ctx.now, uuid::Uuid::new_v4().to_string())
            .map_err(|other| OpError::Conflict(format!("backup {other} is still being written: one at a time")))?;
        info!(backup = %id, to = %to.display(), user = %ctx.caller.user, "backup started");
        Ok(BeginBackupOutput {
            id,
            data_dir: self.lifecycle.data_dir.clone(),
            to,
            min_free_space: self.min_free_space,
            collecting: self.lifecycle.collecting.clone(),
            remote_artifacts: (!self.artifacts.is_local()).then(|| self.artifacts.clone()),
        })
    }
}

impl Handle<EndBackup> for Driver {
    fn handle(&mut self, op: EndBackup, _ctx: &Context) -> Result<(), OpError> {
        if !self.lifecycle.backups.end(&op.id) {
            return Err(OpError::NotFound(format!("no backup {} is being written", op.id)));
        }
        match op.failure {
            None => {
                info!(backup = %op.id, to = %op.to, "backup written");
                Ok(())
            }
            // Recorded in the audit log as the end's outcome.
            Some(failure) => {
                warn!(backup = %op.id, to = %op.to, "backup failed: {failure}");
                Err(OpError::Internal(format!("backup failed: {failure}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_locked_by_one_controller_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).err().expect("a second lock is refused");
        assert!(format!("{err:#}").contains("in use by another controller"), "{err:#}");
        drop(first);
        assert!(lock_data_dir(dir.path()).is_ok(), "free again once the first is gone");
        // A link put in the lock's place is not followed.
        let other = tempfile::tempdir().unwrap();
        std::fs::remove_file(dir.path().join("lock")).unwrap();
        std::os::unix::fs::symlink(other.path().join("target"), dir.path().join("lock")).unwrap();
        assert!(lock_data_dir(dir.path()).is_err());
        assert!(!other.path().join("target").exists());
    }

    #[test]
    fn one_backup_at_a_time_pauses_collection_until_it_ends_however_long() {
        let mut backups = Backups::default();
        assert!(!backups.running());
        let first = backups.begin(1_000, "b1".into()).unwrap();
        assert!(backups.running());
        assert_eq!(backups.begin(2_000, "b2".into()), Err("b1".to_string()), "one at a time");
        assert!(!backups.end("b2"), "only a backup that began ends");
        assert!(backups.end(&first));
        assert!(!backups.running());
        // A copy of days still pauses collection: no time limit ends it.
        backups.begin(10_000, "b3".into()).unwrap();
        assert!(backups.running());
        assert_eq!(backups.begin(10_000 + 30 * 86_400_000, "b4".into()), Err("b3".to_string()));
    }

    #[test]
    fn a_collection_is_seen_running_until_its_guard_goes() {
        let collecting = Collecting::default();
        assert!(!collecting.is_running());
        let guard = collecting.start();
        assert!(collecting.clone().is_running());
        drop(guard);
        assert!(!collecting.is_running());
    }
}
