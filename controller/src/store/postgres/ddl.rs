//! The PostgreSQL schema, derived from SQLite's (issue 18, pg).
//!
//! There is one schema: [`crate::store::SCHEMA`] (and the notification
//! tables'). [`translate`] turns it into PostgreSQL's, so a table or index
//! added there exists on both backends without a second list:
//! `INTEGER` becomes `BIGINT`, `BLOB` `BYTEA`, `TEXT` compares bytewise as
//! SQLite's does (`COLLATE "C"`, which prefix ranges and every `ORDER BY`
//! rely on), an `AUTOINCREMENT` key an identity column, and a table
//! without a primary key gets SQLite's implicit `rowid` as a real column
//! (the order logs were written in). Identifiers PostgreSQL reserves are
//! quoted. Triggers are written in SQL that PostgreSQL does not share: each
//! trigger of `SCHEMA` has its counterpart in [`TRIGGERS`], by name, and a
//! trigger without one is an error (a test checks there is none).
//!
//! What only PostgreSQL has is [`OWN`]: the schema version row (SQLite's
//! `PRAGMA user_version`), the lease row of leader election and the fence
//! function every write transaction runs while a fence is set.

use anyhow::{Result, bail};

/// The PostgreSQL counterparts of `SCHEMA`'s triggers, by trigger name.
const TRIGGERS: &[(&str, &str)] = &[
    (
        "audit_log_append_only",
        "CREATE OR REPLACE FUNCTION sluice_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
         CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
             FOR EACH ROW EXECUTE FUNCTION sluice_audit_append_only()",
    ),
    (
        "audit_log_prune_only",
        "CREATE OR REPLACE FUNCTION sluice_audit_prune_only() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.seq > COALESCE((SELECT seq FROM audit_anchor WHERE id = 1), 0) THEN
                 RAISE EXCEPTION 'only pruned audit records may be deleted';
             END IF;
             RETURN OLD;
         END $$;
         CREATE OR REPLACE TRIGGER audit_log_prune_only BEFORE DELETE ON audit_log
             FOR EACH ROW EXECUTE FUNCTION sluice_audit_prune_only()",
    ),
];

/// The SQLSTATE the fence function raises: a write of a controller whose
/// fence no longer matches the lease row.
pub(super) const FENCED_SQLSTATE: &str = "SLF01";

/// Tables and functions of the PostgreSQL store alone.
pub(super) const OWN: &str = "
CREATE TABLE IF NOT EXISTS sluice_schema (id INT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
-- Leader election (issue 18, seam 1): one row, written by the controllers'
-- lease code with the database's clock. Made expired, held by nobody.
CREATE TABLE IF NOT EXISTS sluice_lease (
    id INT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL, api_url TEXT NOT NULL, fleet_addr TEXT NOT NULL);
INSERT INTO sluice_lease (id, holder, epoch, expires_at, api_url, fleet_addr)
    VALUES (1, '', 0, to_timestamp(0), '', '') ON CONFLICT (id) DO NOTHING;
-- The first statement of every write transaction of a fenced store: takes
-- the lease row FOR SHARE (a new leader's update of it waits for this
-- transaction, and this one sees any update committed before) and aborts
-- the transaction when another holder or epoch has it.
CREATE OR REPLACE FUNCTION sluice_fence(want_holder TEXT, want_epoch BIGINT) RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    found_holder TEXT;
    found_epoch BIGINT;
BEGIN
    SELECT holder, epoch INTO found_holder, found_epoch FROM sluice_lease WHERE id = 1 FOR SHARE;
    IF found_holder IS DISTINCT FROM want_holder OR found_epoch IS DISTINCT FROM want_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'SLF01',
            MESSAGE = format('the lease is held by %L at epoch %s', found_holder, found_epoch),
            DETAIL = COALESCE(found_holder, ''), HINT = COALESCE(found_epoch, -1)::TEXT;
    END IF;
    RETURN 1;
END $$;
";

/// Words PostgreSQL reserves that may name a column in `SCHEMA` (whose own
/// keywords are upper case, its identifiers lower case).
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// The statements of a SQLite script, comments dropped; a trigger's body
/// (`BEGIN ... END;`) stays in its statement.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            '-' if !quoted && chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            ';' if !quoted => {
                let trigger = current.trim_start().to_ascii_uppercase().starts_with("CREATE TRIGGER");
                let ended = current.trim_end().to_ascii_uppercase().ends_with("END");
                if trigger && !ended {
                    current.push(c);
                    continue;
                }
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The word-by-word translation of one statement (quoted strings untouched).
fn words(statement: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let mut quoted = false;
    let flush = |word: &mut String, out: &mut String| {
        let translated = match word.as_str() {
            "INTEGER" => "BIGINT".to_string(),
            "BLOB" => "BYTEA".to_string(),
            "REAL" => "DOUBLE PRECISION".to_string(),
            "TEXT" => "TEXT COLLATE \"C\"".to_string(),
            w if RESERVED.contains(&w) => format!("\"{w}\""),
            w => w.to_string(),
        };
        out.push_str(&translated);
        word.clear();
    };
    for c in statement.chars() {
        if quoted {
            out.push(c);
            quoted = c != '\'';
        } else if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            quoted = c == '\'';
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// PostgreSQL's statements for a SQLite schema script.
pub(super) fn translate(sqlite: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for statement in statements(sqlite) {
        let upper = statement.to_ascii_uppercase();
        if upper.starts_with("CREATE TRIGGER") {
            let name = upper
                .trim_start_matches("CREATE TRIGGER")
                .trim_start()
                .trim_start_matches("IF NOT EXISTS")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            match TRIGGERS.iter().find(|(n, _)| *n == name) {
                Some((_, pg)) => out.push(pg.to_string()),
                None => bail!("the store's trigger {name} has no PostgreSQL counterpart (store/postgres/ddl.rs)"),
            }
            continue;
        }
        let mut pg = statement
            .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
            .replace(") WITHOUT ROWID", ")");
        pg = words(&pg);
        if upper.starts_with("CREATE TABLE") && !upper.contains("PRIMARY KEY") {
            // SQLite's implicit rowid, made a column: the order rows were written in.
            let Some(open) = pg.find('(') else { bail!("a table without columns: {statement}") };
            pg.insert_str(open + 1, "rowid BIGINT GENERATED ALWAYS AS IDENTITY, ");
        }
        out.push(pg);
    }
    Ok(out)
}

/// The whole PostgreSQL schema: the translated SQLite one, then its own.
pub(super) fn schema() -> Result<String> {
    let mut script = String::from(OWN);
    for source in [crate::store::SCHEMA, crate::store::notifications::SCHEMA] {
        for statement in translate(source)? {
            script.push_str(&statement);
            script.push_str(";\n");
        }
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_ddl_becomes_postgresql_ddl() {
        let pg = translate(
            "-- a comment; with a semicolon
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL DEFAULT '[\"*\"] user;',
                 data BLOB, n INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS logs (x TEXT NOT NULL, text TEXT);
             CREATE TABLE IF NOT EXISTS r (a TEXT, PRIMARY KEY (a)) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS t_by_user ON t (user, n);",
        )
        .unwrap();
        assert_eq!(
            pg,
            [
                "CREATE TABLE IF NOT EXISTS t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \"user\" TEXT COLLATE \"C\" NOT NULL DEFAULT '[\"*\"] user;',\n                 data BYTEA, n BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS logs (rowid BIGINT GENERATED ALWAYS AS IDENTITY, x TEXT COLLATE \"C\" NOT NULL, text TEXT COLLATE \"C\")",
                "CREATE TABLE IF NOT EXISTS r (a TEXT COLLATE \"C\", PRIMARY KEY (a))",
                "CREATE INDEX IF NOT EXISTS t_by_user ON t (\"user\", n)",
            ]
        );
    }

    #[test]
    fn every_trigger_of_the_schema_has_a_postgresql_counterpart() {
        let script = schema().unwrap();
        for (name, _) in TRIGGERS {
            assert!(script.contains(&format!("TRIGGER {name} ")), "{name}");
        }
        let err = translate("CREATE TRIGGER IF NOT EXISTS nope BEFORE UPDATE ON t BEGIN SELECT 1; END;").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        // The trigger's body did not split it.
        assert_eq!(statements("CREATE TRIGGER x BEGIN SELECT 1; SELECT 2; END; SELECT 3;").len(), 2);
    }
}
