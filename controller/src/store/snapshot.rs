//! A consistent copy of the store while the controller writes to it
//! (issue 17, life): `VACUUM INTO` on a connection of its own. In WAL mode
//! that connection reads one committed state, whatever the driver commits
//! meanwhile, and the driver never waits for it.

use anyhow::{Context as _, Result};
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::Path;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub schema_version: u32,
    pub executions: u64,
    /// Every artifact its executions refer to.
    pub artifacts: BTreeSet<String>,
}

/// Writes a copy of the store `live` to `to` (a file that must not exist)
/// and reads what it holds from the copy.
pub fn snapshot(live: &Path, to: &Path) -> Result<Snapshot> {
    let source = Connection::open(live).with_context(|| format!("opening the store {}", live.display()))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = to.to_str().with_context(|| format!("{} is not UTF-8", to.display()))?;
    source.execute("VACUUM INTO ?1", [target]).with_context(|| format!("copying the store to {}", to.display()))?;
    drop(source);
    read(to)
}

/// What the store copy at `path` holds.
pub fn read(path: &Path) -> Result<Snapshot> {
    let copy = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let schema_version = super::schema::version(&copy)?;
    let executions: i64 = copy.query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))?;
    // The same question as `Store::artifact_digests`, of the copy.
    let mut stmt = copy.prepare(
        "SELECT DISTINCT json_extract(a.value, '$.digest') FROM executions e, json_each(e.state, '$.artifacts') a",
    )?;
    let mut artifacts = BTreeSet::new();
    for digest in stmt.query_map([], |r| r.get::<_, Option<String>>(0))? {
        artifacts.extend(digest?);
    }
    Ok(Snapshot { schema_version, executions: executions as u64, artifacts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Change, Durability, SqliteStore, Store};

    #[test]
    fn a_snapshot_is_one_committed_state_taken_while_the_store_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
        let conn = Connection::open(dir.path().join("fixture.db")).unwrap();
        conn.execute_batch(&super::super::schema::FIXTURE_0_1_0.replace("@REPO@", "/srv/repo")).unwrap();
        drop(conn);
        let fixture = SqliteStore::open(&dir.path().join("fixture.db"), Durability::Process).unwrap();
        let executions = fixture.executions("fixture", 10).unwrap();
        store.apply(&[Change::Execution(std::sync::Arc::new(executions[0].clone()))]).unwrap();
        // A step of the driver holds the write lock, uncommitted, while the snapshot is taken.
        store.begin_step().unwrap();
        store.apply(&[Change::Execution(std::sync::Arc::new(executions[1].clone()))]).unwrap();
        let taken = snapshot(&path, &dir.path().join("copy.db")).unwrap();
        store.end_step().unwrap();
        assert_eq!(taken.executions, 1, "the uncommitted step is not in the copy");
        assert_eq!(taken.schema_version, crate::store::schema::CURRENT);
        assert_eq!(taken.artifacts, executions[0].artifacts.values().map(|a| a.digest.clone()).collect());
        let copy = Connection::open(dir.path().join("copy.db")).unwrap();
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        // The target must not exist: nothing is overwritten.
        assert!(snapshot(&path, &dir.path().join("copy.db")).is_err());
    }
}
