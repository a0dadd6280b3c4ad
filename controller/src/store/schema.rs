//! The store's schema version and the migrations that bring an older store
//! up to it (issue 17, life).
//!
//! The version is SQLite's `PRAGMA user_version`. Stores written before
//! stores carried one read 0. Opening a store runs, in one transaction:
//! the migrations from its version to [`CURRENT`] (each changes tables
//! that exist, such as a column added), then [`super::SCHEMA`] (which
//! creates, if missing, every table and index of the newest schema), then
//! sets the version. A store made fresh gets the newest schema directly. A
//! failed migration leaves the store as it was; a store of a newer version
//! than this release's is refused, untouched.
//!
//! So: a new table or index is a line of `SCHEMA`; a change to an existing
//! table (a column added, a value rewritten) is a new version here, with
//! `SCHEMA` changed to match, and the test below checks that a migrated
//! store and a fresh one end up with the same tables and columns.

use anyhow::{Context as _, Result, bail};
use rusqlite::Connection;

/// The schema version this release writes.
pub const CURRENT: u32 = 3;

/// One step: from version `to - 1` to `to`.
struct Migration {
    to: u32,
    /// What it does, for the log and for errors.
    what: &'static str,
    run: fn(&Connection) -> Result<()>,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "columns added before stores were versioned (secret scopes, pipeline authors)",
        run: unversioned_columns,
    },
    // The revision flow's index table (issue 16, pages).
    Migration { to: 2, what: "the index of executions by source revision", run: revision_index },
    // Scale (issue 19, scale).
    Migration { to: 3, what: "the index of the artifacts executions refer to", run: artifact_index },
];

/// Brings the store on `conn` to [`CURRENT`]; returns the version it was
/// at and the version it is at now.
pub fn upgrade(conn: &Connection) -> Result<(u32, u32)> {
    let found = version(conn)?;
    if found > CURRENT {
        bail!(
            "its schema version {found} is newer than this release's ({CURRENT}): it was written by a newer sluice; \
             run that release, or restore a backup taken before the upgrade"
        );
    }
    // IMMEDIATE: another controller opening the same store waits for this
    // one's migration instead of running it a second time.
    conn.execute_batch("BEGIN IMMEDIATE").context("opening the migration's transaction")?;
    match migrate(conn, found) {
        Ok(()) => conn.execute_batch("COMMIT").context("committing the migration")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok((found, CURRENT))
}

/// The store's schema version (0: written before stores had one).
pub fn version(conn: &Connection) -> Result<u32> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).context("reading the schema version")?;
    u32::try_from(version).with_context(|| format!("schema version {version} is not one sluice writes"))
}

fn migrate(conn: &Connection, found: u32) -> Result<()> {
    // Read again inside the transaction: another process may have migrated
    // the store between the first look and the lock.
    let found = version(conn)?.max(found);
    if found > CURRENT {
        bail!(
            "its schema version {found} is newer than this release's ({CURRENT}): a newer sluice migrated it while this \
             one started; run that release"
        );
    }
    if found < CURRENT && !is_empty(conn)? {
        for m in MIGRATIONS.iter().filter(|m| m.to > found) {
            (m.run)(conn).with_context(|| format!("migrating the schema to version {}: {}", m.to, m.what))?;
        }
    }
    conn.execute_batch(super::SCHEMA).context("creating the store schema")?;
    conn.execute_batch(super::notifications::SCHEMA).context("creating the notification tables")?;
    conn.pragma_update(None, "user_version", CURRENT).context("writing the schema version")?;
    Ok(())
}

/// A store with no tables yet: it gets the newest schema, no migration.
fn is_empty(conn: &Connection) -> Result<bool> {
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
    Ok(tables == 0)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.iter().any(|n| n == column))
}

fn has_table(conn: &Connection, table: &str) -> Result<bool> {
    let n: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))?;
    Ok(n > 0)
}

/// Version 1: the columns that unversioned releases added when they found
/// them missing. A table that is not there yet is made whole by `SCHEMA`.
fn unversioned_columns(conn: &Connection) -> Result<()> {
    // Secrets got scopes; the ones from before keep working everywhere.
    if has_table(conn, "secrets")? && !has_column(conn, "secrets", "pipelines")? {
        conn.execute_batch(&format!(
            "ALTER TABLE secrets ADD COLUMN pipelines TEXT NOT NULL DEFAULT '[\"{}\"]'",
            crate::secrets::LEGACY_SCOPE
        ))
        .context("adding scopes to the stored secrets")?;
    }
    // Pipeline versions got their author (issue 15, gov).
    if has_table(conn, "pipelines")? && !has_column(conn, "pipelines", "author")? {
        conn.execute_batch("ALTER TABLE pipelines ADD COLUMN author TEXT NOT NULL DEFAULT ''")
            .context("adding authors to the stored pipeline versions")?;
    }
    Ok(())
}

/// Version 2: the revision flow's index table (issue 16, pages), filled
/// from the source revisions each stored execution carried; from then on
/// the store writes its rows with the execution.
fn revision_index(conn: &Connection) -> Result<()> {
    if !has_table(conn, "executions")? {
        return Ok(());
    }
    // The same table as `SCHEMA`'s (which runs after, and then finds it).
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS execution_revisions (
             revision TEXT NOT NULL, pipeline TEXT NOT NULL, execution_id TEXT NOT NULL, action TEXT NOT NULL,
             started_at INTEGER NOT NULL, PRIMARY KEY (revision, execution_id, action)) WITHOUT ROWID;",
    )
    .context("creating the index of executions by source revision")?;
    let filled = conn
        .execute(
            "INSERT OR IGNORE INTO execution_revisions (revision, pipeline, execution_id, action, started_at)
             SELECT json_extract(r.value, '$.revisionId'), e.pipeline, e.id, r.key, e.started_at
             FROM executions e, json_each(e.state, '$.sourceRevisions') AS r
             WHERE json_extract(r.value, '$.revisionId') IS NOT NULL",
            [],
        )
        .context("indexing the stored executions by source revision")?;
    tracing::info!(rows = filled, "indexed the stored executions by source revision");
    Ok(())
}

/// Version 3 (scale, issue 19): the artifacts each stored execution refers
/// to, read once from their JSON; from then on the store writes its rows
/// with the execution, and artifact collection reads them alone.
fn artifact_index(conn: &Connection) -> Result<()> {
    if !has_table(conn, "executions")? {
        return Ok(());
    }
    // The same table as `SCHEMA`'s (which runs after, and then finds it).
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS execution_artifacts (
             digest TEXT NOT NULL, execution_id TEXT NOT NULL, PRIMARY KEY (digest, execution_id)) WITHOUT ROWID;",
    )
    .context("creating the index of the artifacts executions refer to")?;
    let filled = conn
        .execute(
            "INSERT OR IGNORE INTO execution_artifacts (digest, execution_id)
             SELECT json_extract(a.value, '$.digest'), e.id FROM executions e, json_each(e.state, '$.artifacts') AS a
             WHERE json_extract(a.value, '$.digest') IS NOT NULL",
            [],
        )
        .context("indexing the artifacts the stored executions refer to")?;
    tracing::info!(rows = filled, "indexed the artifacts the stored executions refer to");
    Ok(())
}

/// The store written by release 0.1.0 (commit 2f830a1, before stores were
/// versioned), as `sqlite3 sluice.db .dump` printed it after two
/// executions of a three-stage pipeline, a secret and a user. The path of
/// its git repository is `@REPO@`.
#[cfg(test)]
pub(crate) const FIXTURE_0_1_0: &str = include_str!("../../../tests/fixtures/store-0.1.0.sql");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SqliteStore, Store};

    /// Every table's columns, sorted: what a store's schema is, whatever
    /// order `ALTER TABLE` left the columns in.
    fn shape(conn: &Connection) -> Vec<(String, Vec<String>)> {
        let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").unwrap();
        let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        tables
            .into_iter()
            .map(|t| {
                let mut stmt = conn.prepare(&format!("PRAGMA table_info({t})")).unwrap();
                let mut columns: Vec<String> = stmt.query_map([], |r| r.get(1)).unwrap().map(Result::unwrap).collect();
                columns.sort();
                (t, columns)
            })
            .collect()
    }

    fn fixture_store(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("sluice.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&FIXTURE_0_1_0.replace("@REPO@", "/srv/repo")).unwrap();
        assert_eq!(version(&conn).unwrap(), 0, "the fixture predates versions");
        path
    }

    #[test]
    fn the_store_of_release_0_1_0_migrates_to_the_fresh_schema_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture_store(dir.path());
        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        assert_eq!(version(&store.conn).unwrap(), CURRENT);
        let fresh = SqliteStore::open(&dir.path().join("fresh.db"), Durability::Process).unwrap();
        assert_eq!(shape(&store.conn), shape(&fresh.conn), "a migrated store has the fresh store's tables and columns");

        let pipeline = store.pipeline("fixture", None).unwrap().unwrap();
        assert!(pipeline.definition.contains("/srv/repo"), "{}", pipeline.definition);
        let executions = store.executions("fixture", 10).unwrap();
        assert_eq!(executions.len(), 2);
        assert!(executions.iter().all(|e| e.status.as_str() == "Succeeded"));
        let logs = store.logs(&executions[0].id.0).unwrap();
        assert!(logs.iter().any(|l| l.text.contains("checked")), "{logs:?}");
        assert!(!store.artifact_digests().unwrap().is_empty());
        assert_eq!(store.secrets().unwrap()[0].name, "DEPLOY_KEY");
        assert!(store.users().unwrap().iter().any(|u| u.name == "ann"));
        // Version 2 indexed the executions' source revisions.
        let carried = store.executions_with_revision("9c73e01", 10).unwrap();
        assert_eq!(carried.len(), 2, "both executions carried the fixture's commit");
        drop(store);
        // Opening it again migrates nothing and changes nothing.
        let conn = Connection::open(&path).unwrap();
        assert_eq!(upgrade(&conn).unwrap(), (CURRENT, CURRENT));
    }

    // The revision flow's index (issue 16, pages).
    #[test]
    fn a_version_1_store_gets_its_executions_indexed_by_source_revision() {
        use crate::store::tests::carrying;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let mut store = SqliteStore::open(&path, Durability::Process).unwrap();
        store
            .apply(&[
                carrying("a", 1, "web", &[("Source", "abc123")]),
                carrying("b", 2, "api", &[("Code", "ffff"), ("Lib", "abc999")]),
                carrying("c", 3, "web", &[]),
            ])
            .unwrap();
        drop(store);
        // As release 1 left it: no index table.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE execution_revisions; PRAGMA user_version = 1;").unwrap();
        drop(conn);

        let store = SqliteStore::open(&path, Durability::Process).unwrap();
        assert_eq!(version(&store.conn).unwrap(), CURRENT);
        let mut stmt = store
            .conn
            .prepare(
                "SELECT revision, pipeline, execution_id, action, started_at FROM execution_revisions ORDER BY revision",
            )
            .unwrap();
        let rows: Vec<(String, String, String, String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |rev: &str, p: &str, e: &str, a: &str, t| (rev.into(), p.into(), e.into(), a.into(), t);
        assert_eq!(
            rows,
            [
                row("abc123", "web", "a", "Source", 1),
                row("abc999", "api", "b", "Lib", 2),
                row("ffff", "api", "b", "Code", 2)
            ]
        );
        let ids: Vec<String> = store.executions_with_revision("abc", 10).unwrap().into_iter().map(|e| e.id.0).collect();
        assert_eq!(ids, ["b", "a"]);
        let fresh = SqliteStore::open(&dir.path().join("fresh.db"), Durability::Process).unwrap();
        assert_eq!(shape(&store.conn), shape(&fresh.conn));
    }

    #[test]
    fn a_store_of_a_newer_release_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture_store(dir.path());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", CURRENT + 1).unwrap();
        let before = shape(&Connection::open(&path).unwrap());
        let err = SqliteStore::open(&path, Durability::Process).err().unwrap();
        let message = format!("{err:#}");
        assert!(message.contains(&format!("schema version {} is newer", CURRENT + 1)), "{message}");
        let conn = Connection::open(&path).unwrap();
        assert_eq!(shape(&conn), before);
        assert_eq!(version(&conn).unwrap(), CURRENT + 1);
    }

    #[test]
    fn a_newer_release_that_migrated_between_the_first_look_and_the_lock_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture_store(dir.path());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", CURRENT + 1).unwrap();
        let before = shape(&conn);
        // This release first read version 0; inside the lock it reads again.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = migrate(&conn, 0).unwrap_err();
        conn.execute_batch("ROLLBACK").unwrap();
        assert!(format!("{err:#}").contains("newer than this release's"), "{err:#}");
        assert_eq!(version(&conn).unwrap(), CURRENT + 1, "the newer version is not lowered");
        assert_eq!(shape(&conn), before);
    }

    #[test]
    fn a_failed_migration_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let conn = Connection::open(&path).unwrap();
        // An unversioned store whose `executions` is not the table any release wrote.
        conn.execute_batch("CREATE TABLE executions (x TEXT); INSERT INTO executions VALUES ('kept');").unwrap();
        drop(conn);
        assert!(SqliteStore::open(&path, Durability::Process).is_err());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        assert_eq!(shape(&conn), vec![("executions".to_string(), vec!["x".to_string()])]);
    }
}
