//! Data lifecycle (issue 17, life): the store of the last release opened
//! and migrated by this one, backups taken under load and restored, and
//! retention removing exactly what it should, with real processes.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, bin, git, make_repo, output_text, wait_until};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store release 0.1.0 wrote (see `controller/src/store/schema.rs`).
const FIXTURE: &str = include_str!("../../fixtures/store-0.1.0.sql");

/// A pipeline in PARALLEL mode that never polls (executions start only
/// when the test says): Source checks `repo` out; Build waits for the file
/// `hold` when its variable HOLD is `yes`, logs, and makes an artifact
/// unique to its execution.
fn pipeline(name: &str, repo: &Path, hold: &Path) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "executionMode": "PARALLEL",
  "variables": [{{"name": "HOLD", "defaultValue": "no"}}], "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}}, "pollIntervalSeconds": 0,
     "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Make",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "if [ #{{variables.HOLD}} = yes ]; then while [ ! -f {hold} ]; do sleep 0.2; done; fi\nfor i in 1 2 3 4 5; do echo line $i of #{{codepipeline.PipelineExecutionId}}; done\nmkdir -p out\necho #{{codepipeline.PipelineExecutionId}} > out/id"}},
     "inputArtifacts": [{{"name": "src"}}], "outputArtifacts": [{{"name": "bin", "files": ["out/**"]}}],
     "capabilities": {{"exec": ["sh"]}}}}]}}
]}}}}"#,
        repo = repo.display(),
        hold = hold.display(),
    )
}

fn start(cluster: &Cluster, name: &str, hold: bool) -> String {
    let variable = format!("HOLD={}", if hold { "yes" } else { "no" });
    let out = cluster.sluice(&["pipeline", "start", name, "--variable", &variable]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn create(cluster: &Cluster, name: &str, declaration: &str) -> String {
    let file = cluster.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, declaration).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["pipelineExecutionId"].as_str().unwrap().to_string()
}

fn succeeded(cluster: &Cluster, name: &str, id: &str) -> Value {
    let e = cluster.execution_end(name, id, Duration::from_secs(90));
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
    e
}

/// The digests of an execution's `src` and `bin` artifacts.
fn artifacts(execution: &Value) -> (String, String) {
    let digest = |stage: usize| {
        execution["stages"][stage]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string()
    };
    (digest(0), digest(1))
}

fn blob(data: &Path, digest: &str) -> PathBuf {
    data.join("artifacts").join(&digest[..2]).join(digest)
}

/// The ids of a pipeline's stored executions.
fn history(cluster: &Cluster, name: &str) -> Vec<String> {
    let h = cluster.sluice_json(&["pipeline", "history", name, "--max", "100"]).unwrap();
    h["pipelineExecutionSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pipelineExecutionId"].as_str().unwrap().to_string())
        .collect()
}

/// Stored log lines of an execution, read from the store itself.
fn stored_log_lines(data: &Path, id: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(data.join("sluice.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT COUNT(*) FROM logs WHERE execution_id = ?1", [id], |r| r.get(0)).unwrap()
}

fn schema_version(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[test]
fn a_store_written_by_release_0_1_0_is_migrated_at_start_and_runs_on() {
    let mut cluster = Cluster::new().start().unwrap();
    let data = cluster.data_dir();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    // The controller's store becomes the one release 0.1.0 wrote.
    cluster.kill_controller();
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    let conn = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    conn.execute_batch(&FIXTURE.replace("@REPO@", repo.to_str().unwrap())).unwrap();
    drop(conn);
    assert_eq!(schema_version(&data.join("sluice.db")), 0);

    // A store of a release newer than this one is refused, untouched.
    let newer = cluster.dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::copy(data.join("sluice.db"), newer.join("sluice.db")).unwrap();
    rusqlite::Connection::open(newer.join("sluice.db")).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let out = std::process::Command::new(bin("sluice"))
        .args(["controller", "--api", "127.0.0.1:0", "--fleet", "127.0.0.1:0", "--data-dir"])
        .arg(&newer)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("schema version 99 is newer than this release's"),
        "{}",
        output_text(&out)
    );
    assert_eq!(schema_version(&newer.join("sluice.db")), 99);

    cluster.start_controller().unwrap();
    assert!(cluster.controller_log().contains("store schema migrated"), "{}", cluster.controller_log());
    assert_eq!(schema_version(&data.join("sluice.db")), i64::from(sluice::store::schema::CURRENT));
    // Version 2 (issue 16, pages) indexed the old executions by their
    // source revision: the revision flow finds both.
    let flow = cluster.sluice_json(&["revision", "show", "9c73e01"]).unwrap();
    assert_eq!(flow["pipelines"][0]["executions"].as_array().map(Vec::len), Some(2), "{flow}");
    // What the old release stored reads as it did.
    let old = history(&cluster, "fixture");
    assert_eq!(old.len(), 2, "{old:?}");
    for id in &old {
        let e = cluster.sluice_json(&["execution", "get", "fixture", id]).unwrap();
        assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}");
    }
    let logs = cluster.sluice(&["logs", "fixture", "--execution", &old[0]]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("checked"), "{}", output_text(&logs));
    let secrets = cluster.sluice_json(&["secret", "list"]).unwrap();
    assert!(secrets.to_string().contains("DEPLOY_KEY"), "{secrets}");
    let users = cluster.sluice_json(&["user", "list"]).unwrap();
    assert!(users.to_string().contains("\"ann\""), "{users}");

    // And it runs on: the pipeline of the old release, on an agent enrolled
    // now (its poll of the new repository may start a run too; in the
    // old pipeline's SUPERSEDED mode one of them may supersede the other).
    cluster.add_agent(&[]).unwrap();
    let out = cluster.sluice(&["pipeline", "start", "fixture"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history_now = cluster.wait_for_executions_to_end("fixture").unwrap();
    let summaries = history_now["pipelineExecutionSummaries"].as_array().unwrap();
    assert!(summaries.len() >= 3, "{history_now}");
    let new = &summaries[..summaries.len() - 2];
    assert!(new.iter().any(|e| e["status"] == "Succeeded"), "{history_now}\n{}", cluster.controller_log());
    // Started again, the store is at the newest version: nothing to migrate.
    let count = summaries.len();
    cluster.kill_controller();
    let before = cluster.controller_log().matches("store schema migrated").count();
    cluster.start_controller().unwrap();
    assert_eq!(cluster.controller_log().matches("store schema migrated").count(), before);
    assert_eq!(history(&cluster, "fixture").len(), count);
}

#[test]
fn retention_removes_exactly_the_old_executions_their_logs_and_artifacts_and_nothing_a_running_one_needs() {
    let mut cluster = Cluster::new()
        .controller_args(&["--keep-executions", "2", "--keep-executions", "other=10", "--artifact-gc-interval", "2s"])
        .start()
        .unwrap();
    cluster.add_agent(&[]).unwrap();
    let data = cluster.data_dir();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "first\n")]);
    let hold = cluster.dir.path().join("release-the-hold");
    let e0 = create(&cluster, "web", &pipeline("web", &repo, &hold));
    let e0 = succeeded(&cluster, "web", &e0);
    // e1 runs on the first commit, like e0, and holds in Build.
    let e1 = start(&cluster, "web", true);
    wait_until("e1 to hold in Build", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "web", &e1]).ok()?;
        (e["stages"][1]["status"] == "InProgress").then_some(())
    })
    .unwrap();
    // A pipeline with a rule of its own keeps more (its repository is its own).
    let other_repo = cluster.dir.path().join("other-repo");
    make_repo(&other_repo, &[("README", "other\n")]);
    let o0 = create(&cluster, "other", &pipeline("other", &other_repo, &hold));
    succeeded(&cluster, "other", &o0);
    std::fs::write(repo.join("README"), "second\n").unwrap();
    git(&repo, &["commit", "-qam", "second"]);
    let later: Vec<Value> = (0..3).map(|_| succeeded(&cluster, "web", &start(&cluster, "web", false))).collect();
    for _ in 0..3 {
        succeeded(&cluster, "other", &start(&cluster, "other", false));
    }
    let id = |e: &Value| e["pipelineExecution"]["pipelineExecutionId"].as_str().unwrap().to_string();
    let (e2, e3, e4) = (id(&later[0]), id(&later[1]), id(&later[2]));
    let others: Vec<Value> =
        history(&cluster, "other").iter().map(|o| cluster.sluice_json(&["execution", "get", "other", o]).unwrap()).collect();
    let mut referenced: BTreeSet<String> = others.iter().flat_map(|e| <[String; 2]>::from(artifacts(e))).collect();
    for e in &later[1..] {
        referenced.extend(<[String; 2]>::from(artifacts(e)));
    }

    // Newest first: e4, e3 (the two kept), e2 (goes), e1 (runs: stays), e0 (goes).
    wait_until("retention to remove e0 and e2", WAIT, || {
        let mut h = history(&cluster, "web");
        h.sort();
        let mut want = vec![e1.clone(), e3.clone(), e4.clone()];
        want.sort();
        (h == want).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", history(&cluster, "web"), cluster.controller_log()));
    let (src_a, bin_e0) = artifacts(&e0);
    let (src_b, bin_e2) = artifacts(&later[0]);
    assert_ne!(src_a, src_b);
    // What stays is exactly what the executions left refer to: the source
    // artifact e0 made is e1's input too, and e1 still runs.
    let mut want = referenced.clone();
    want.insert(src_a.clone());
    wait_until("exactly e0's and e2's own artifacts to be collected", WAIT, || (stored_blobs(&data) == want).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {:?} stored, {want:?} wanted", stored_blobs(&data)));
    assert!(!want.contains(&bin_e0) && !want.contains(&bin_e2));
    assert_eq!(stored_log_lines(&data, &id(&e0)), 0, "e0's log went with it");
    assert_eq!(stored_log_lines(&data, &e2), 0);
    assert!(stored_log_lines(&data, &e3) > 0 && stored_log_lines(&data, &e1) > 0);
    let out = cluster.sluice(&["execution", "get", "web", &id(&e0)]);
    assert!(!out.status.success(), "{}", output_text(&out));
    // `other` keeps its ten: all four.
    assert_eq!(history(&cluster, "other").len(), 4);

    // Released, e1 ends, and is then past the newest two: it goes at once,
    // with the artifacts only it referred to (its source, its new output).
    std::fs::write(&hold, b"go").unwrap();
    wait_until("e1 to end and be removed", Duration::from_secs(90), || {
        (!history(&cluster, "web").contains(&e1)).then_some(())
    })
    .unwrap();
    wait_until("e1's artifacts to be collected", WAIT, || (stored_blobs(&data) == referenced).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {:?} stored, {referenced:?} wanted", stored_blobs(&data)));
    assert_eq!(stored_log_lines(&data, &e1), 0);
    let mut h = history(&cluster, "web");
    h.sort();
    let mut want = vec![e3, e4];
    want.sort();
    assert_eq!(h, want);
    assert!(cluster.controller_log().contains("old executions removed (retention)"));
}

#[test]
fn retention_keeps_each_stages_last_good_run_so_a_rollback_still_finds_it() {
    let mut cluster = Cluster::new().controller_args(&["--keep-executions", "2"]).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "first\n")]);
    // Build fails when the variable FAIL is `yes`; Source succeeds always.
    let declaration = format!(
        r#"{{"pipeline": {{"name": "web", "variables": [{{"name": "FAIL", "defaultValue": "no"}}], "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}}, "pollIntervalSeconds": 0,
     "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Make",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "test #{{variables.FAIL}} = no"}},
     "inputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["sh"]}}}}]}}
]}}}}"#,
        repo = repo.display()
    );
    let good = create(&cluster, "web", &declaration);
    succeeded(&cluster, "web", &good);
    let mut failed = Vec::new();
    for _ in 0..3 {
        let out = cluster.sluice(&["pipeline", "start", "web", "--variable", "FAIL=yes"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let e = cluster.execution_end("web", &id, Duration::from_secs(90));
        assert_eq!(e["pipelineExecution"]["status"], "Failed", "{e}");
        failed.push(id);
    }
    // The newest two stay, the oldest failure goes; the good run stays
    // beyond the two: it is Build's only rollback target.
    wait_until("retention to remove the oldest failure", WAIT, || {
        (!history(&cluster, "web").contains(&failed[0])).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", history(&cluster, "web"), cluster.controller_log()));
    let mut h = history(&cluster, "web");
    h.sort();
    let mut want = vec![good.clone(), failed[1].clone(), failed[2].clone()];
    want.sort();
    assert_eq!(h, want);
    let out = cluster.sluice(&["stage", "rollback", "web", "Build", "--wait"]);
    assert!(out.status.success(), "{}\n{}", output_text(&out), cluster.controller_log());
    let newest = cluster.sluice_json(&["pipeline", "history", "web"]).unwrap()["pipelineExecutionSummaries"][0].clone();
    let rollback =
        cluster.sluice_json(&["execution", "get", "web", newest["pipelineExecutionId"].as_str().unwrap()]).unwrap();
    assert_eq!(rollback["pipelineExecution"]["status"], "Succeeded", "{rollback}");
    assert_eq!(rollback["pipelineExecution"]["rollbackMetadata"]["rollbackTargetPipelineExecution"], good.as_str());
}

/// The digests of every blob in a data dir's artifact store.
fn stored_blobs(data: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for dir in std::fs::read_dir(data.join("artifacts")).unwrap().filter_map(Result::ok) {
        if dir.file_name() == "tmp" || !dir.path().is_dir() {
            continue;
        }
        for blob in std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok) {
            all.insert(blob.file_name().to_string_lossy().to_string());
        }
    }
    all
}

#[test]
fn keep_days_removes_at_start_what_ended_too_long_ago() {
    let mut cluster = Cluster::new().controller_args(&["--keep-days", "7", "--keep-days", "other=1"]).start().unwrap();
    let data = cluster.data_dir();
    cluster.kill_controller();
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    // The 0.1.0 store, one of its two executions ended 30 days ago.
    let conn = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    conn.execute_batch(&FIXTURE.replace("@REPO@", "/nonexistent")).unwrap();
    let (old, recent): (String, String) =
        conn.query_row("SELECT MIN(id), MAX(id) FROM executions", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let month_ago = (std::time::SystemTime::now() - Duration::from_secs(30 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    conn.execute("UPDATE executions SET updated_at = ?1 WHERE id = ?2", rusqlite::params![month_ago, old]).unwrap();
    drop(conn);
    assert!(stored_log_lines(&data, &old) > 0);
    cluster.start_controller().unwrap();
    wait_until("the month-old execution to be removed", WAIT, || {
        (history(&cluster, "fixture") == vec![recent.clone()]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", history(&cluster, "fixture"), cluster.controller_log()));
    assert_eq!(stored_log_lines(&data, &old), 0);
    assert!(stored_log_lines(&data, &recent) > 0);
}

#[test]
fn a_second_controller_on_the_same_data_dir_is_refused() {
    let cluster = Cluster::new().start().unwrap();
    let data = cluster.data_dir();
    let out = std::process::Command::new(bin("sluice"))
        .args(["controller", "--api", "127.0.0.1:0", "--fleet", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(text.contains("is in use by another controller") && text.contains("lock"), "{text}");
    // The first one runs on, unharmed.
    assert!(cluster.sluice(&["pipeline", "list"]).status.success());
}

#[test]
fn bad_retention_flags_stop_the_controller_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("sluice"))
        .args(["controller", "--api", "127.0.0.1:0", "--fleet", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--keep-executions", "0", "--keep-days", "web=soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--keep-executions \"0\"") && stderr.contains("--keep-days \"web=soon\""), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing is created before the flags are valid");
}

/// Copies a directory tree (a backup into a data dir).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_backup_taken_under_load_restores_into_a_controller_that_runs_from_it() {
    let mut cluster = Cluster::new().agent_args(&["--slots", "4"]).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    let hold = cluster.dir.path().join("never");
    let first = create(&cluster, "web", &pipeline("web", &repo, &hold));
    let first = succeeded(&cluster, "web", &first);
    let backups = cluster.dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();

    // The attacker's and the careless user's backups first: refused, nothing written.
    assert!(cluster.sluice(&["user", "create", "oscar", "--role", "operator"]).status.success());
    let out = cluster.sluice(&["token", "create", "--user", "oscar"]);
    let oscar = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = cluster.sluice_as(&oscar, &["backup", "--to", backups.join("by-oscar").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "an operator may not take a backup: {}", output_text(&out));
    std::fs::write(backups.join("taken"), b"x").unwrap();
    let refused = [
        ("relative/dir".to_string(), "absolute path"),
        (backups.join("taken").display().to_string(), "not an empty directory"),
        (cluster.data_dir().join("inside").display().to_string(), "outside the controller's data dir"),
        (backups.join("no/parent").display().to_string(), "parent directory"),
    ];
    for (to, why) in refused {
        let out = cluster.sluice(&["backup", "--to", &to]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{}", output_text(&out));
    }
    assert!(!backups.join("by-oscar").exists() && !cluster.data_dir().join("inside").exists());
    // A parent other users may write (and not sticky): one of them could
    // swap the backup's directory for their own.
    use std::os::unix::fs::PermissionsExt as _;
    let shared = backups.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = cluster.sluice(&["backup", "--to", shared.join("b").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("may be written by other users"), "{}", output_text(&out));
    assert!(!shared.join("b").exists() && !shared.join("b.partial").exists());

    // Under load: executions running and finishing, logs streaming, artifacts uploading.
    let running: Vec<String> = (0..6).map(|_| start(&cluster, "web", false)).collect();
    let held = start(&cluster, "web", true);
    let to = backups.join("b1");
    let out = cluster.sluice(&["backup", "--to", to.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}\n{}", output_text(&out), cluster.controller_log());
    // The held action finishes on this controller or, after the restore,
    // reports to the restored one (its job is in the snapshot).
    std::fs::write(&hold, b"go").unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schemaVersion"], sluice::store::schema::CURRENT, "{report}");
    assert!(report["missingArtifacts"].is_null(), "{report}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(to.join("backup.json")).unwrap()).unwrap();
    assert_eq!(manifest, report);
    assert!(!backups.join("b1.partial").exists(), "written as b1.partial and renamed");
    // The audit log says where the backup went.
    let audit = cluster.sluice_json(&["audit", "list", "--operation", "BeginBackup"]).unwrap();
    let resource = format!("backup/{}", to.display());
    assert!(audit.to_string().contains(&resource), "{resource} in {audit}");
    for e in &running {
        succeeded(&cluster, "web", e);
    }

    // The copy is consistent, and holds every artifact it refers to, intact.
    let db =
        rusqlite::Connection::open_with_flags(to.join("sluice.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let executions: i64 = db.query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0)).unwrap();
    assert_eq!(report["executions"], executions, "{report}");
    let mut stmt = db
        .prepare("SELECT DISTINCT json_extract(a.value, '$.digest') FROM executions e, json_each(e.state, '$.artifacts') a")
        .unwrap();
    let digests: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(report["artifacts"], digests.len(), "{report}");
    for digest in &digests {
        use sha2::Digest as _;
        let bytes = std::fs::read(blob(&to, digest)).unwrap_or_else(|e| panic!("{digest}: {e}"));
        assert_eq!(&hex::encode(sha2::Sha256::digest(&bytes)), digest);
    }
    for key in ["ca/ca.crt", "ca/ca.key", "secret.key", "worker.key", "admin.token"] {
        assert!(to.join(key).exists(), "{key}");
    }
    // A backup never overwrites one.
    let out = cluster.sluice(&["backup", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    drop(stmt);
    drop(db);

    // Restore (docs/install.md): stop the controller, put the backup in
    // place of its data dir, start it; agents come back (same CA, same address).
    let in_backup = history_in(&to);
    cluster.kill_controller();
    let data = cluster.data_dir();
    std::fs::rename(&data, cluster.dir.path().join("controller.lost")).unwrap();
    copy_tree(&to, &data);
    cluster.start_controller().unwrap();
    cluster.wait_for_agents(1).unwrap();
    let restored = history(&cluster, "web");
    let mut expected = in_backup.clone();
    expected.sort();
    let mut got = restored.clone();
    got.sort();
    assert_eq!(got, expected, "the restored controller has exactly the executions of the backup");
    let first_id = first["pipelineExecution"]["pipelineExecutionId"].as_str().unwrap();
    let logs = cluster.sluice(&["logs", "web", "--execution", first_id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains(&format!("line 5 of {first_id}")), "{}", output_text(&logs));
    // Executions running in the snapshot end (their agent no longer holds
    // them), and a new one runs from the restored store and artifacts.
    cluster.wait_for_executions_to_end("web").unwrap();
    assert!(in_backup.contains(&held), "an execution started before the backup is in it");
    let id = start(&cluster, "web", false);
    succeeded(&cluster, "web", &id);
}

/// The execution ids in a backup's store.
fn history_in(backup: &Path) -> Vec<String> {
    let db =
        rusqlite::Connection::open_with_flags(backup.join("sluice.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = db.prepare("SELECT id FROM executions WHERE pipeline = 'web'").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[test]
fn the_free_space_floor_refuses_uploads_and_plugin_pushes_with_a_clear_error() {
    // A floor no disk here can meet: every upload is refused.
    let mut cluster = Cluster::new().controller_args(&["--min-free-space", "1000000GiB"]).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    let hold = cluster.dir.path().join("never");
    let id = create(&cluster, "web", &pipeline("web", &repo, &hold));
    let e = cluster.execution_end("web", &id, Duration::from_secs(90));
    assert_eq!(e["pipelineExecution"]["status"], "Failed", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("controller refused the upload") && text.contains("bytes free") && text.contains("--min-free-space"),
        "the failure says why, with the figures, and names the floor: {e}"
    );
    let log = cluster.controller_log();
    assert!(log.contains("transfer refused"), "{log}");
    assert!(log.contains("the controller's disk is under the free-space floor"), "reported, not only refused: {log}");
    // Log lines are under the floor too: the source action's first line
    // became the note that the rest is not kept, and nothing followed.
    let conn = rusqlite::Connection::open_with_flags(
        cluster.data_dir().join("sluice.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn.prepare("SELECT text FROM logs WHERE execution_id = ?1").unwrap();
    let lines: Vec<String> = stmt.query_map([&id], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("under the free-space floor (--min-free-space); the rest is not kept"), "{lines:?}");
    assert!(log.contains("log refused: the free-space floor"), "{log}");
    // Nothing was stored.
    let stored = std::fs::read_dir(cluster.data_dir().join("artifacts"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|d| d.file_name() != "tmp")
        .count();
    assert_eq!(stored, 0);
    // A plugin push is held to the same floor: refused with the figures, nothing stored.
    let hostile = sluice_test_plugins::test_plugin("hostile");
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bytes free") && stderr.contains("--min-free-space"), "{stderr}");
    let listed = cluster.sluice_json(&["plugin", "list"]).unwrap();
    assert!(!listed.to_string().contains("hostile"), "{listed}");
}
