//! The controller on PostgreSQL (issue 18, pg): what differs from SQLite
//! at the boundary. The cross suites themselves run on PostgreSQL too
//! (`SLUICE_TEST_STORE=postgres`, a selection in .ci/run); these tests ask
//! for it themselves, so they run in every `cargo test`.

use sluice::store::postgres::throwaway::execute;
use sluice_tests::{Cluster, bin, git_pipeline, make_repo, output_text, postgres_available, postgres_database};
use std::process::Command;

fn noop_pipeline(cluster: &Cluster, name: &str) {
    let repo = cluster.dir.path().join(format!("{name}-repo"));
    make_repo(&repo, &[("README", "on postgres\n")]);
    let file = cluster.dir.path().join(format!("{name}.json"));
    let stage = r#"{"name": "Build", "actions": [{"name": "B", "inputArtifacts": [{"name": "src"}],
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    std::fs::write(&file, git_pipeline(name, "", &repo, stage)).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    cluster.wait_for_executions_to_end(name).unwrap();
}

/// Starts `sluice controller` on `store` and returns how it ended (it
/// must end by itself: a refused start).
fn refused_start(store: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("sluice"))
        .args(["controller", "--api", "127.0.0.1:0", "--fleet", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--store", store])
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_store_url_that_asks_for_tls_or_is_no_store_is_refused_before_anything_starts() {
    let (code, stderr) = refused_start("postgres://sluice:hunter2@127.0.0.1:1/db?sslmode=require");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sslmode=require") && stderr.contains("no TLS"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is not printed: {stderr}");
    let (code, stderr) = refused_start("mysql://db/sluice");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("postgres://"), "{stderr}");
    // A server that is not there: a clear failure, not a hang.
    let (code, stderr) = refused_start("postgres://sluice@127.0.0.1:1/sluice");
    assert_ne!(code, 0);
    assert!(stderr.contains("connecting to the store postgres://sluice@127.0.0.1:1/sluice"), "{stderr}");
}

#[test]
fn a_database_of_a_newer_release_is_refused_at_start_untouched() {
    if !postgres_available() {
        return;
    }
    let url = postgres_database().unwrap();
    let cluster = Cluster::new().controller_args(&["--store", &url]).start().unwrap();
    drop(cluster);
    execute(&url, "UPDATE sluice_schema SET version = 99").unwrap();
    let (code, stderr) = refused_start(&url);
    assert_ne!(code, 0);
    assert!(stderr.contains("schema version 99 is newer than this release's"), "{stderr}");
}

#[test]
fn the_audit_chain_on_postgresql_verifies_and_tampering_behind_the_controllers_back_is_detected() {
    if !postgres_available() {
        return;
    }
    let cluster = Cluster::new().postgres().agent(&[]).start().unwrap();
    noop_pipeline(&cluster, "chained");
    let out = cluster.sluice(&["audit", "verify"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let url = cluster.store.clone().unwrap();
    // The controller's own connection cannot change a record...
    let err = execute(&url, "UPDATE audit_log SET via = 'forged' WHERE seq = 2").unwrap_err();
    assert!(format!("{err:#}").contains("append-only"), "{err:#}");
    // ...someone with the database's keys can; verification says where.
    execute(
        &url,
        "ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET via = 'forged' WHERE seq = 2; \
         ALTER TABLE audit_log ENABLE TRIGGER USER;",
    )
    .unwrap();
    let out = cluster.sluice(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains('2'), "{}", output_text(&out));
}

#[test]
fn backup_on_postgresql_is_refused_and_names_pg_dump() {
    if !postgres_available() {
        return;
    }
    let cluster = Cluster::new().postgres().start().unwrap();
    let to = cluster.dir.path().join("backup");
    let out = cluster.sluice(&["backup", "--to", to.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("pg_dump"), "{}", output_text(&out));
    assert!(!to.exists(), "nothing was written");
}

#[test]
fn retention_on_postgresql_removes_old_executions_and_keeps_the_newest() {
    if !postgres_available() {
        return;
    }
    let cluster = Cluster::new().postgres().controller_args(&["--keep-executions", "1"]).agent(&[]).start().unwrap();
    noop_pipeline(&cluster, "kept");
    for _ in 0..2 {
        let out = cluster.sluice(&["pipeline", "start", "kept", "--wait"]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    sluice_tests::wait_until("retention to keep one execution", sluice_tests::WAIT, || {
        let history = cluster.sluice_json(&["pipeline", "history", "kept"]).ok()?;
        (history["pipelineExecutionSummaries"].as_array()?.len() == 1).then_some(())
    })
    .unwrap();
}
