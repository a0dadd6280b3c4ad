//! WAL checkpoints off the driver's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL
//! past its threshold (1,000 pages by default): that commit copies the WAL
//! into the database and waits for two fsyncs (about 3 ms on the benchmark
//! machine, traced with strace), and whatever waits on the driver waits
//! with it. With a noop action costing three commits of about five pages
//! each, that was one action in about sixty: the p99 of the per-action
//! overhead. A thread with its own connection now checkpoints every
//! `INTERVAL` instead, in PASSIVE mode, which never blocks the driver's
//! writes; the driver's connection keeps an automatic checkpoint only as a
//! backstop for a much larger WAL.
//!
//! Durability does not change: a commit is as durable once it is in the WAL
//! (synced there with `Durability::PowerLoss`) whether or not it has been
//! checkpointed into the database file yet.

use anyhow::{Context as _, Result};
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::warn;

/// How often the thread checkpoints. Short enough that the WAL stays small
/// (a few hundred pages at the benchmark's commit rate), long enough that
/// an idle controller does next to nothing.
const INTERVAL: Duration = Duration::from_millis(200);

/// WAL bytes at which the driver's own connection checkpoints after all,
/// should the thread fall behind (as pages of the store's size).
pub(super) const BACKSTOP_BYTES: i64 = 64 << 20;

/// The checkpointing thread; stopped and joined on drop.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// `synchronous` as the driver's connection has it, so that a checkpoint
    /// syncs exactly as one run by the driver would.
    pub(super) fn start(path: &Path, synchronous: &str) -> Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("opening the store {} to checkpoint", path.display()))?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        warn!("checkpointing the store: {e}");
                    }
                }
            })
            .context("starting the checkpoint thread")?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_checkpoints_what_the_driver_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT)").unwrap();
        for _ in 0..50 {
            conn.execute("INSERT INTO t VALUES (?1)", ["x".repeat(4000)]).unwrap();
        }
        // Until a checkpoint, the rows live only in the WAL and the
        // database file stays small.
        let db_size = || std::fs::metadata(&path).unwrap().len();
        assert!(db_size() < 50 * 4000);
        let checkpointer = Checkpointer::start(&path, "NORMAL").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_size() < 50 * 4000 {
            assert!(std::time::Instant::now() < deadline, "the WAL was never checkpointed");
            std::thread::sleep(INTERVAL / 4);
        }
        drop(checkpointer);
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 50);
    }
}
