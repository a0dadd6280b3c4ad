//! Approvals with separation of duties and the audit log (issue 15, gov):
//! the real controller, agent, CLI, curl and the AWS CLI.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, git, make_repo, output_text, wait_until};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The gate: a git checkout of `repo`, then an approval that `approvers`
/// may decide, `required` of them; started by pushes to main too.
fn gate(repo: &Path, required: u32, approvers: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "gate", "pipelineType": "V2",
  "triggers": [{{"providerType": "CodeStarSourceConnection", "gitConfiguration": {{"sourceActionName": "Checkout",
     "push": [{{"branches": {{"includes": ["main"]}}}}]}}}}],
  "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}}, "pollIntervalSeconds": 0,
     "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Approve", "actions": [{{"name": "Release",
     "actionTypeId": {{"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}},
     "configuration": {{"RequiredApprovals": "{required}", "Approvers": "{approvers}"}}}}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// `sluice ARGS` with another user's token.
fn as_user(cluster: &Cluster, token: &str, args: &[&str]) -> Output {
    cluster.cli().args(args).env("SLUICE_TOKEN", token).output().unwrap()
}

/// Creates operators and returns their tokens, in order.
fn users(cluster: &Cluster, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|user| {
            let out = cluster.sluice(&["user", "create", user]);
            assert!(out.status.success(), "{}", output_text(&out));
            let out = cluster.sluice(&["token", "create", "--user", user]);
            assert!(out.status.success(), "{}", output_text(&out));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Waits until execution `id` of the gate waits at its approval.
fn wait_for_approval(cluster: &Cluster, id: &str) {
    wait_until("the approval to wait", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "gate", id]).ok()?;
        (e["stages"][1]["actions"][0]["status"] == "InProgress").then_some(())
    })
    .unwrap();
}

fn execution(cluster: &Cluster, id: &str) -> Value {
    cluster.sluice_json(&["execution", "get", "gate", id]).unwrap()
}

fn approve(cluster: &Cluster, token: &str, id: &str) -> Output {
    as_user(cluster, token, &["approval", "approve", "gate", "Approve", "Release", "--execution", id])
}

/// POSTs a generic webhook delivery, signed with `secret`; the answer.
fn deliver(cluster: &Cluster, secret: &str, body: &Value) -> Value {
    let body = serde_json::to_vec(body).unwrap();
    let signature = format!("sha256={}", sluice::webhooks::sign(secret, &body));
    let mut child = Command::new("curl")
        .arg("--cacert")
        .arg(cluster.ca_file())
        .args(["-sS", "-X", "POST", "--data-binary", "@-", "-H", &format!("X-Sluice-Signature: {signature}")])
        .arg(format!("{}/v1/webhooks/gate", cluster.api))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", output_text(&out)))
}

#[test]
fn approvals_bar_the_starter_the_author_and_the_pusher_and_need_n_distinct_approvers() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let tokens = users(&cluster, &["ann", "bob", "cy", "dee"]);
    let (ann, bob, cy, dee) = (&tokens[0], &tokens[1], &tokens[2], &tokens[3]);
    let file = cluster.dir.path().join("gate.json");

    // Approvers is checked when the pipeline is created: its syntax, and
    // that N of M users can ever pass.
    std::fs::write(&file, gate(&repo, 1, "user:bob, group:ops")).unwrap();
    let out = as_user(&cluster, ann, &["pipeline", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr(&out).contains("\"group:ops\" is not user:NAME, team:NAME or role:NAME"), "{}", output_text(&out));
    std::fs::write(&file, gate(&repo, 3, "user:bob,user:cy")).unwrap();
    let out = as_user(&cluster, ann, &["pipeline", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr(&out).contains("Approvers names only 2 users"), "{}", output_text(&out));

    // Ann writes the pipeline: its first execution is hers.
    let approvers = "user:ann,user:bob,user:cy,role:admin,team:release";
    std::fs::write(&file, gate(&repo, 2, approvers)).unwrap();
    let out = as_user(&cluster, ann, &["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = created["pipelineExecutionId"].as_str().unwrap().to_string();
    wait_for_approval(&cluster, &first);

    let out = approve(&cluster, ann, &first);
    assert_eq!(out.status.code(), Some(3), "the starter: {}", output_text(&out));
    assert!(stderr(&out).contains(&format!("ann started execution {first} and cannot approve it")), "{}", output_text(&out));
    let out = approve(&cluster, dee, &first);
    assert_eq!(out.status.code(), Some(3), "not an approver: {}", output_text(&out));
    assert!(
        stderr(&out).contains(&format!("dee is not among the approvers of Approve/Release (Approvers: {approvers})")),
        "{}",
        output_text(&out)
    );
    // Not even a rejection counts from outside the approvers.
    let out = as_user(&cluster, dee, &["approval", "reject", "gate", "Approve", "Release", "--execution", &first]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(approve(&cluster, bob, &first).status.success());
    let out = approve(&cluster, bob, &first);
    assert_eq!(out.status.code(), Some(1), "bob counts once: {}", output_text(&out));
    assert!(stderr(&out).contains("already decided"), "{}", output_text(&out));
    // One approval of two: still waiting, and the decision is on the state.
    let state = cluster.sluice_json(&["pipeline", "state", "gate"]).unwrap();
    let release = &state["stageStates"][1]["actionStates"][0]["latestExecution"];
    assert_eq!(release["status"], "InProgress", "{release}");
    assert_eq!(release["approval"]["decisions"][0]["by"], "bob", "{release}");
    assert_eq!(release["approval"]["approvers"], approvers, "{release}");
    // Dee joins the release team: now among the approvers, by team.
    for args in [&["team", "create", "release"][..], &["team", "add-member", "release", "dee"]] {
        let out = cluster.sluice(args);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let out = approve(&cluster, dee, &first);
    assert!(out.status.success(), "{}", output_text(&out));
    let ended = cluster.execution_end("gate", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Succeeded", "{ended}");
    let detail = execution(&cluster, &first);
    let decisions: Vec<(&str, bool)> = detail["stages"][1]["actions"][0]["approval"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["by"].as_str().unwrap(), d["approved"].as_bool().unwrap()))
        .collect();
    assert_eq!(decisions, [("bob", true), ("dee", true)], "{detail}");

    // Bob starts one: he is its starter, Ann the author of the version it runs.
    let out = as_user(&cluster, bob, &["pipeline", "start", "gate"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    wait_for_approval(&cluster, &second);
    assert_eq!(execution(&cluster, &second)["pipelineExecution"]["trigger"]["versionAuthor"], "ann");
    let out = approve(&cluster, ann, &second);
    assert_eq!(out.status.code(), Some(3), "the author: {}", output_text(&out));
    assert!(
        stderr(&out).contains("ann authored version 1 of \"gate\" and may not approve its execution"),
        "{}",
        output_text(&out)
    );
    let out = approve(&cluster, bob, &second);
    assert_eq!(out.status.code(), Some(3), "the starter: {}", output_text(&out));
    // The admin is among the approvers by role.
    let out = cluster.sluice(&["approval", "approve", "gate", "Approve", "Release", "--execution", &second]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(approve(&cluster, cy, &second).status.success());
    assert_eq!(cluster.execution_end("gate", &second, WAIT)["pipelineExecution"]["status"], "Succeeded");

    // A push by Cy, delivered by a webhook Dee set up: neither Cy nor Dee
    // (who holds the secret, so could have sent any revision) may approve it.
    let out = as_user(&cluster, dee, &["webhook", "create", "gate"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::write(repo.join("b.txt"), "b\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "b"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let answer = deliver(&cluster, &secret, &serde_json::json!({"revision": sha, "branch": "main", "pusher": "cy"}));
    assert_eq!(answer["started"], true, "{answer}");
    let third = answer["pipelineExecutionId"].as_str().unwrap().to_string();
    wait_for_approval(&cluster, &third);
    assert_eq!(execution(&cluster, &third)["pipelineExecution"]["trigger"]["pushedBy"], "cy");
    let out = approve(&cluster, cy, &third);
    assert_eq!(out.status.code(), Some(3), "the pusher: {}", output_text(&out));
    assert!(
        stderr(&out).contains(&format!("cy pushed the revision execution {third} runs and may not approve it")),
        "{}",
        output_text(&out)
    );
    let out = approve(&cluster, dee, &third);
    assert_eq!(out.status.code(), Some(3), "the webhook's secret holder: {}", output_text(&out));
    assert!(
        stderr(&out).contains(&format!("dee set the webhook secret that started execution {third} and may not approve it")),
        "{}",
        output_text(&out)
    );
    assert_eq!(execution(&cluster, &third)["pipelineExecution"]["trigger"]["webhookSecretBy"], "dee");
    assert!(approve(&cluster, bob, &third).status.success());
    assert!(approve(&cluster, ann, &third).status.code() == Some(3), "ann still wrote the version");
    assert!(cluster.sluice(&["approval", "approve", "gate", "Approve", "Release", "--execution", &third]).status.success());
    assert_eq!(cluster.execution_end("gate", &third, WAIT)["pipelineExecution"]["status"], "Succeeded");

    // Every decision, refusals included, is in the audit log on the action.
    let log = cluster
        .sluice_json(&["audit", "list", "--operation", "PutApprovalResult", "--pipeline", "gate", "--limit", "100"])
        .unwrap();
    let records = log["records"].as_array().unwrap();
    assert!(records.iter().all(|r| r["resource"] == "pipeline/gate/Approve/Release"), "{log}");
    let refused = records.iter().filter(|r| r["result"] == "AccessDeniedException").count();
    let accepted = records.iter().filter(|r| r["result"] == "ok").count();
    assert_eq!((refused, accepted), (8, 6), "{log}");
}

/// The rows of the audit table, as the test edits them.
fn db(cluster: &Cluster) -> rusqlite::Connection {
    rusqlite::Connection::open(cluster.data_dir().join("sluice.db")).unwrap()
}

fn verify(cluster: &Cluster, args: &[&str]) -> Output {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    cluster.sluice(&all)
}

#[test]
fn the_audit_log_records_every_call_with_its_origin_and_detects_tampering() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let ann = users(&cluster, &["ann"]).remove(0);

    // A secret with a known value, a pipeline and an approval decided by ann.
    const SECRET_VALUE: &str = "hunter2-very-secret-value-8c1f";
    cluster.set_secret("db-password", SECRET_VALUE, "*");
    let file = cluster.dir.path().join("gate.json");
    std::fs::write(&file, gate(&repo, 1, "user:ann")).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["pipelineExecutionId"].as_str().unwrap().to_string();
    wait_for_approval(&cluster, &id);
    assert!(approve(&cluster, &ann, &id).status.success());

    // A bad bearer token: refused, recorded with where it came from and
    // the request id the response carried.
    let out = Command::new("curl")
        .arg("--cacert")
        .arg(cluster.ca_file())
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-H", "Authorization: Bearer sut_not-a-token"])
        .arg(format!("{}/v1/pipelines", cluster.api))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let request_id = headers
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-request-id:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no x-request-id in {headers}"));
    let log = cluster.sluice_json(&["audit", "list", "--operation", "Authenticate"]).unwrap();
    let record = &log["records"][0];
    assert_eq!(record["result"], "UnauthorizedException", "{log}");
    assert_eq!(record["requestId"], request_id.as_str(), "{log}");
    assert_eq!(record["resource"], "GET /v1/pipelines", "{log}");
    assert!(record["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{log}");

    // A bad SigV4 signature (the AWS CLI with a wrong secret), likewise,
    // its x-amzn-RequestId the same id.
    let mut key = sluice_tests::aws::access_key(&cluster, "ann", "operator").unwrap();
    let good = sluice_tests::aws::aws(&cluster, &key, &["codepipeline", "list-pipelines"]).unwrap();
    assert!(good.status.success(), "{}", output_text(&good));
    key.secret_access_key = format!("{}x", &key.secret_access_key[..key.secret_access_key.len() - 1]);
    let out = sluice_tests::aws::aws(&cluster, &key, &["codepipeline", "list-pipelines"]).unwrap();
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(stderr(&out).contains("InvalidSignatureException"), "{}", output_text(&out));
    let log = cluster.sluice_json(&["audit", "list", "--operation", "SigV4"]).unwrap();
    let record = &log["records"][0];
    assert_eq!(record["via"], format!("access-key:{}", key.access_key_id), "{log}");
    assert_eq!(record["resource"], "codepipeline:ListPipelines", "{log}");
    assert_eq!(record["result"], "InvalidSignatureException", "{log}");
    assert!(record["source"].as_str().unwrap().starts_with("127.0.0.1:") && record["requestId"] != "", "{log}");
    // An unsigned AWS request: the AWS request id is the request id.
    let out = Command::new("curl")
        .arg("--cacert")
        .arg(cluster.ca_file())
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .args(["-H", "X-Amz-Target: CodePipeline_20150709.ListPipelines"])
        .arg(format!("{}/", cluster.api))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{headers}"))
    };
    let (request_id, amzn) = (header("x-request-id:"), header("x-amzn-requestid:"));
    assert_eq!(request_id, amzn, "{headers}");
    let log = cluster.sluice_json(&["audit", "list", "--operation", "SigV4"]).unwrap();
    let last = log["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["requestId"].as_str(), last["result"].as_str()),
        (Some(request_id.as_str()), Some("MissingAuthenticationTokenException"))
    );

    // The good call went in as ann, by her access key.
    let log = cluster.sluice_json(&["audit", "list", "--operation", "ListPipelines", "--user", "ann"]).unwrap();
    assert_eq!(log["records"][0]["via"], format!("access-key:{}", key.access_key_id), "{log}");

    // Filters: by user, pipeline, operation and time.
    let by_ann = cluster.sluice_json(&["audit", "list", "--user", "ann"]).unwrap();
    assert!(!by_ann["records"].as_array().unwrap().is_empty());
    assert!(by_ann["records"].as_array().unwrap().iter().all(|r| r["user"] == "ann"), "{by_ann}");
    let on_gate = cluster.sluice_json(&["audit", "list", "--pipeline", "gate"]).unwrap();
    let operations: Vec<&str> =
        on_gate["records"].as_array().unwrap().iter().map(|r| r["operation"].as_str().unwrap()).collect();
    assert!(operations.contains(&"PutApprovalResult") && operations.contains(&"GetPipelineExecution"), "{operations:?}");
    assert!(
        on_gate["records"].as_array().unwrap().iter().all(|r| r["resource"].as_str().unwrap().starts_with("pipeline/gate"))
    );
    let recent = cluster.sluice_json(&["audit", "list", "--since", "1h", "--operation", "SetSecret"]).unwrap();
    assert_eq!(recent["records"][0]["resource"], "secret/db-password", "{recent}");
    let old = cluster.sluice_json(&["audit", "list", "--until", "2020-01-01T00:00:00Z"]).unwrap();
    assert_eq!(old["records"].as_array().unwrap().len(), 0, "{old}");
    let out = cluster.sluice(&["audit", "list", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    // The table names who, what and from where.
    let out = cluster.sluice(&["audit", "list", "--operation", "PutApprovalResult"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("pipeline/gate/Approve/Release") && table.contains("ann"), "{table}");
    // The log is the admin's to read: an operator may not, nor a viewer;
    // the refusal is recorded with the operation and its resource.
    let out = as_user(&cluster, &ann, &["audit", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(cluster.sluice(&["user", "create", "vic", "--role", "viewer"]).status.success());
    let vic = String::from_utf8(cluster.sluice(&["token", "create", "--user", "vic"]).stdout).unwrap().trim().to_string();
    let out = as_user(&cluster, &vic, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let log = cluster.sluice_json(&["audit", "list", "--operation", "ListAuditRecords", "--user", "ann"]).unwrap();
    let refused = &log["records"][0];
    assert_eq!((refused["resource"].as_str(), refused["result"].as_str()), (Some("audit/*"), Some("AccessDeniedException")));
    let log = cluster.sluice_json(&["audit", "list", "--operation", "VerifyAudit", "--user", "vic"]).unwrap();
    assert_eq!(log["records"][0]["result"], "AccessDeniedException", "{log}");

    // An intact log verifies, and says its head.
    let out = verify(&cluster, &[]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let head = text.lines().find_map(|l| l.strip_prefix("head: ")).unwrap_or_else(|| panic!("{text}")).to_string();

    // No secret value anywhere: the log as shown, and the database files.
    let everything = cluster.sluice(&["audit", "list", "--limit", "10000", "--output", "json"]);
    let shown = String::from_utf8_lossy(&everything.stdout).to_string();
    assert!(shown.contains("SetSecret"), "the secret's setting is recorded");
    let webhook = cluster.sluice(&["webhook", "create", "gate"]);
    let webhook_secret = String::from_utf8(webhook.stdout).unwrap().trim().to_string();
    cluster.kill_controller();
    let mut files = String::new();
    for entry in std::fs::read_dir(cluster.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("sluice.db") {
            files.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    for secret in [SECRET_VALUE, &key.secret_access_key[..30], &ann[4..], &webhook_secret[6..]] {
        assert!(!shown.contains(secret), "{secret} in the audit log");
        assert!(!files.contains(secret), "{secret} in the database");
    }

    // Tampering, with the controller stopped, by someone who can write the
    // file (and so drop the triggers that stop the controller's own code).
    // Each case starts from a copy of the intact store.
    let store = cluster.data_dir().join("sluice.db");
    let intact = cluster.dir.path().join("intact.db");
    db(&cluster).execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    std::fs::copy(&store, &intact).unwrap();
    let count: i64 = db(&cluster).query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0)).unwrap();
    assert!(count > 20, "{count} records");
    let tampered = |cluster: &mut Cluster, sql: &str, args: &[&str]| -> Output {
        let _ = std::fs::remove_file(cluster.data_dir().join("sluice.db-wal"));
        let _ = std::fs::remove_file(cluster.data_dir().join("sluice.db-shm"));
        std::fs::copy(&intact, &store).unwrap();
        db(cluster)
            .execute_batch(&format!("DROP TRIGGER audit_log_append_only; DROP TRIGGER audit_log_prune_only; {sql}"))
            .unwrap();
        cluster.start_controller().unwrap();
        let out = verify(cluster, args);
        cluster.kill_controller();
        out
    };

    // A record changed.
    let out = tampered(&mut cluster, "UPDATE audit_log SET user = 'mallory' WHERE seq = 3;", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(stderr(&out).contains("record 3 does not match its hash"), "{}", output_text(&out));
    // A record removed.
    let out = tampered(&mut cluster, "DELETE FROM audit_log WHERE seq = 5;", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(stderr(&out).contains("record 5 is missing"), "{}", output_text(&out));
    // Two records swapped (their contents; the numbers stay in order).
    let swap = "CREATE TEMP TABLE keep AS SELECT * FROM audit_log WHERE seq IN (10, 11);
        UPDATE audit_log SET (time, user, via, operation, resource, result, message, source, request_id, hash) =
          (SELECT time, user, via, operation, resource, result, message, source, request_id, hash FROM keep
           WHERE keep.seq = 21 - audit_log.seq) WHERE seq IN (10, 11);";
    let out = tampered(&mut cluster, swap, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["verified"].as_bool(), report["firstBad"].as_u64()), (Some(false), Some(10)), "{report}");
    assert_eq!(report["count"], 9, "{report}");

    // The anchor (where a pruned log starts) moved up past an altered
    // record, as if pruning had taken it: records at or below the anchor
    // are still there, so the anchor was moved.
    let moved = "UPDATE audit_log SET user = 'mallory' WHERE seq = 3;
        INSERT OR REPLACE INTO audit_anchor (id, seq, hash) SELECT 1, seq, hash FROM audit_log WHERE seq = 6;";
    let out = tampered(&mut cluster, moved, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(stderr(&out).contains("record 1 "), "{}", output_text(&out));

    // What verify cannot see on its own: the newest records cut off (the
    // controller then goes on from the cut). A head kept elsewhere finds it.
    let kept: u64 = head.split(':').next().unwrap().parse().unwrap();
    let cut = format!("DELETE FROM audit_log WHERE seq > {};", kept - 2);
    let out = tampered(&mut cluster, &cut, &[]);
    assert!(out.status.success(), "a cut tail alone verifies: {}", output_text(&out));
    let out = tampered(&mut cluster, &cut, &["--expect-head", &head]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(stderr(&out).contains("anchored head"), "{}", output_text(&out));

    // The intact store verifies against the kept head.
    let out = tampered(&mut cluster, "", &["--expect-head", &head]);
    assert!(out.status.success(), "{}", output_text(&out));
}
