//! The AWS-compatible API driven by the real AWS SDK for Python (boto3)
//! and the real AWS CLI, against real controller and agent processes;
//! with each user's test, the attacker's beside it.

use serde_json::{Value, json};
use sluice_tests::aws::{access_key, script_json};
use sluice_tests::{Cluster, git_pipeline, make_repo};

/// A pipeline: git source, a shell build that sleeps `SLEEP` seconds and
/// exits `FAIL` (1 by default: the creation's run fails), a no-op deploy.
/// The build's capabilities are spelled as a reserved configuration key.
fn declaration(cluster: &Cluster, name: &str) -> std::path::PathBuf {
    let repo = cluster.dir.path().join("repo");
    if !repo.exists() {
        make_repo(&repo, &[("README", "x\n")]);
    }
    std::fs::write(cluster.dir.path().join("commit"), sluice_tests::git(&repo, &["rev-parse", "HEAD"])).unwrap();
    let stages = r#"{"name": "Build", "actions": [{"name": "Run", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "sleep #{variables.SLEEP}; exit #{variables.FAIL}",
                              "Sluice:Capabilities": "{\"exec\": [\"sh\"]}"}}]},
        {"name": "Deploy", "actions": [{"name": "Go",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let variables = r#"{"name": "SLEEP", "defaultValue": "0"}, {"name": "FAIL", "defaultValue": "1"}"#;
    let file = cluster.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, git_pipeline(name, variables, &repo, stages)).unwrap();
    file
}

#[test]
fn boto3_drives_a_pipeline_through_its_life() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let key = access_key(&cluster, "ann", "operator").unwrap();
    let file = declaration(&cluster, "web");
    let commit = std::fs::read_to_string(cluster.dir.path().join("commit")).unwrap();
    let r: Value = script_json(&cluster, &key, "pipelines.py", &[file.to_str().unwrap(), &commit])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.controller_log()));

    assert_eq!(r["created_name"], "web");
    assert_eq!(r["created_tags"], json!([{"key": "team", "value": "ci"}]));
    let arn = r["arn"].as_str().unwrap();
    assert!(arn.starts_with("arn:aws:codepipeline:eu-west-1:") && arn.ends_with(":web"), "{arn}");
    assert_eq!(arn.split(':').nth(4).unwrap().len(), 12, "{arn}");
    assert_eq!(r["created_is_datetime"], "datetime", "epoch seconds, read by botocore as a datetime");
    assert_eq!(r["roleArn"], "arn:aws:iam::123456789012:role/sluice-pipeline");
    assert_eq!(r["artifactStore"], json!({"type": "S3", "location": "artifacts-bucket"}));
    assert_eq!(r["version"], 1);
    // Sluice's own fields come back as reserved configuration keys, also
    // the git source's `capabilities` that was declared as a field.
    assert_eq!(r["build_configuration"]["Sluice:Capabilities"], r#"{"exec":["sh"]}"#);
    assert_eq!(r["source_configuration"]["Sluice:Capabilities"], r#"{"exec":["git"]}"#);
    assert_eq!(r["first_status"], "Failed");
    assert_eq!(r["retried_status"], "Failed");
    assert_eq!(r["updated_version"], 2);
    assert_eq!(r["updated_build_configuration"]["Sluice:Capabilities"], r#"{"exec":["sh"]}"#);
    assert_eq!(r["idempotent"], true);
    assert_eq!(r["second_status"], "Succeeded");
    assert_eq!(r["second_version"], 2);
    assert_eq!(r["second_trigger"], "StartPipelineExecution");
    assert_eq!(r["pinned"], json!(["Succeeded", [commit]]));
    assert_eq!(r["pinned_summary"], json!([commit]));
    assert_eq!(r["state_version"], 2);
    assert_eq!(r["state_build"], "Succeeded");
    assert_eq!(r["state_updated_is_datetime"], "datetime");
    assert_eq!(
        r["action_executions"],
        json!([["Build", "Run", "Succeeded"], ["Deploy", "Go", "Succeeded"], ["Source", "Checkout", "Succeeded"]])
    );
    assert_eq!(r["transition_disabled"]["enabled"], false);
    assert_eq!(r["transition_disabled"]["disabledReason"], "release freeze");
    assert_eq!(r["transition_disabled"]["lastChangedBy"], "ann");
    assert_eq!(r["held_status"], "InProgress");
    assert_eq!(r["held_end"], "Succeeded");
    assert_eq!(r["rollback"], json!(["Succeeded", "ROLLBACK", true]), "{r}");
    assert_eq!(r["stopped"], "Stopped");
    assert_eq!(r["stop_again"]["class"], "PipelineExecutionNotStoppableException");
    // Six executions (created, started, pinned, held, rolled back, stopped), two per page.
    assert_eq!(r["execution_pages"], json!([2, 2, 2]));
    assert_eq!(r["tags"], json!([{"key": "team", "value": "platform"}]));
    assert_eq!(r["pipeline_pages"], json!([["web"], ["zz-a"], ["zz-b"], ["zz-c"]]));
    assert_eq!(r["bad_token"]["code"], "InvalidNextTokenException");
    assert_eq!(r["missing"]["code"], "PipelineNotFoundException");
    assert_eq!(r["missing"]["class"], "PipelineNotFoundException", "boto3 raises its modeled exception");
    assert_eq!(r["missing_state"]["class"], "PipelineNotFoundException");
    assert_eq!(r["missing_execution"]["class"], "PipelineExecutionNotFoundException");
    assert_eq!(r["unsupported"]["code"], "UnsupportedOperationException");
    assert_eq!(r["outbound"]["class"], "ValidationException");
    assert_eq!(r["delete_again"], Value::Null, "deleting what is gone succeeds, as in CodePipeline");
}

#[test]
fn boto3_approves_with_the_token_from_the_state_as_another_user() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let ann = access_key(&cluster, "ann", "operator").unwrap();
    let bob = access_key(&cluster, "bob", "operator").unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let stages = r#"{"name": "Approve", "actions": [{"name": "Release",
        "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}]},
      {"name": "Deploy", "actions": [{"name": "Go",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let file = cluster.dir.path().join("gate.json");
    std::fs::write(&file, git_pipeline("gate", "", &repo, stages)).unwrap();
    let args = [file.to_str().unwrap(), &bob.access_key_id, &bob.secret_access_key];
    let r =
        script_json(&cluster, &ann, "approval.py", &args).unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.controller_log()));

    let token = r["token"].as_str().unwrap();
    assert_eq!(token.len(), 36, "a UUID, as the model's ApprovalToken pattern wants: {token}");
    assert_eq!(r["waiting_status"], "InProgress");
    assert_eq!(r["made_up"]["class"], "InvalidApprovalTokenException");
    // Ann started the run (she created the pipeline): her key is Ann, and
    // a separation-of-duties refusal is a 403 (issue 15, gov).
    assert_eq!(
        (r["own_run"]["code"].as_str(), r["own_run"]["status"].as_u64()),
        (Some("AccessDeniedException"), Some(403)),
        "{r}"
    );
    assert_eq!(r["approved_at_is_datetime"], "datetime");
    assert_eq!(r["end"], "Succeeded");
    assert_eq!(r["used_again"]["class"], "ApprovalAlreadyCompletedException");
}

#[test]
fn forged_tampered_replayed_and_revoked_requests_are_refused() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let ann = access_key(&cluster, "ann", "operator").unwrap();
    let carol = access_key(&cluster, "carol", "operator").unwrap();
    let file = declaration(&cluster, "web");
    cluster.create_pipeline("web", &std::fs::read_to_string(&file).unwrap());
    // Carol's key works until it is revoked, then at once it does not.
    let listed = sluice_tests::aws::aws(&cluster, &carol, &["codepipeline", "list-pipelines"]).unwrap();
    assert!(listed.status.success(), "{}", sluice_tests::output_text(&listed));
    let out = cluster.sluice(&["access-key", "revoke", &carol.access_key_id]);
    assert!(out.status.success(), "{}", sluice_tests::output_text(&out));

    let args = ["web", carol.access_key_id.as_str(), carol.secret_access_key.as_str()];
    let r =
        script_json(&cluster, &ann, "attacks.py", &args).unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.controller_log()));
    assert_eq!(r["wrong_secret"]["code"], "InvalidSignatureException", "{r}");
    assert_eq!(r["wrong_secret"]["status"], 400);
    assert_eq!(r["unknown_key"]["code"], "UnrecognizedClientException");
    assert_eq!(r["revoked_key"]["code"], "UnrecognizedClientException");
    assert_eq!(r["genuine"], 200);
    assert_eq!(r["tampered_body"]["code"], "InvalidSignatureException");
    assert_eq!(r["other_operation"]["code"], "InvalidSignatureException");
    assert_eq!(r["stale"]["code"], "InvalidSignatureException");
    assert!(r["stale"]["message"].as_str().unwrap().starts_with("signature expired"), "{r}");
    assert_eq!(r["unsigned_target"]["code"], "IncompleteSignatureException");
    assert_eq!(r["no_signature"]["code"], "MissingAuthenticationTokenException");
    assert_eq!(r["no_signature"]["status"], 403);
    assert_eq!(r["oversized"]["code"], "ValidationException");
    assert_eq!(r["unread_body"], serde_json::json!({"status": 400, "code": "UnrecognizedClientException"}), "{r}");
    assert_eq!(r["malformed"]["code"], "ValidationException");
    assert_eq!(r["unknown_target"]["code"], "UnknownOperationException");
    assert!(r["trigger_detail"].as_str().unwrap().ends_with("by ann"), "{r}");
    // The pipeline is still there: nothing the attacks sent did anything.
    assert!(cluster.sluice_json(&["pipeline", "get", "web"]).is_ok());

    // Keys are the admin's to manage; their secrets are never listed; a
    // secret is not a bearer token.
    let token = cluster.sluice(&["token", "create", "--user", "ann"]);
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let as_ann = |args: &[&str]| {
        std::process::Command::new(sluice_tests::bin("sluice"))
            .args(args)
            .env("SLUICE_API", &cluster.api)
            .env("SLUICE_CA", cluster.ca_file())
            .env("SLUICE_TOKEN", &token)
            .output()
            .unwrap()
    };
    for args in [
        &["access-key", "create", "--user", "ann"][..],
        &["access-key", "list"],
        &["access-key", "revoke", &ann.access_key_id],
    ] {
        assert_eq!(as_ann(args).status.code(), Some(3), "{args:?}");
    }
    let listed = cluster.sluice_json(&["access-key", "list"]).unwrap();
    assert!(!listed.to_string().contains(&ann.secret_access_key), "{listed}");
    assert_eq!(listed["accessKeys"].as_array().unwrap().len(), 2);
    let secret_as_token = std::process::Command::new(sluice_tests::bin("sluice"))
        .args(["pipeline", "list"])
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", &ann.secret_access_key)
        .output()
        .unwrap();
    assert_eq!(secret_as_token.status.code(), Some(3));
}

#[test]
fn the_aws_cli_lists_pipelines_and_idempotent_starts_survive_a_restart() {
    let mut cluster = Cluster::new().agent(&[]).start().unwrap();
    let key = access_key(&cluster, "ann", "operator").unwrap();
    let file = declaration(&cluster, "web");
    cluster.create_pipeline("web", &std::fs::read_to_string(&file).unwrap());
    let aws = |cluster: &Cluster, args: &[&str]| -> Value {
        let out = sluice_tests::aws::aws(cluster, &key, args).unwrap();
        assert!(out.status.success(), "aws {args:?}: {}", sluice_tests::output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // As the README shows it: the endpoint on the command line.
    let api = cluster.api.clone();
    let listed = aws(&cluster, &["codepipeline", "list-pipelines", "--endpoint-url", &api]);
    assert_eq!(listed["pipelines"][0]["name"], "web", "{listed}");
    let start = ["codepipeline", "start-pipeline-execution", "--name", "web", "--client-request-token", "deploy-7"];
    let first = aws(&cluster, &start)["pipelineExecutionId"].clone();
    cluster.wait_for_executions_to_end("web").unwrap();
    cluster.kill_controller();
    cluster.start_controller().unwrap();
    // The key and the token both survived.
    let again = aws(&cluster, &start)["pipelineExecutionId"].clone();
    assert_eq!(first, again);
    let history = cluster.sluice_json(&["pipeline", "history", "web"]).unwrap();
    assert_eq!(history["pipelineExecutionSummaries"].as_array().unwrap().len(), 2, "created and started once: {history}");
    // The same operations on the REST side, through the CLI: pages of
    // action executions, tags by the ARN the REST API shows.
    let page = cluster.sluice_json(&["execution", "actions", "web", "--max-results", "2"]).unwrap();
    assert_eq!(page["actionExecutionDetails"].as_array().unwrap().len(), 2, "{page}");
    let token = page["nextToken"].as_str().unwrap().to_string();
    let next = cluster.sluice_json(&["execution", "actions", "web", "--max-results", "2", "--next-token", &token]).unwrap();
    assert_ne!(next["actionExecutionDetails"][0], page["actionExecutionDetails"][0]);
    let bad = cluster.sluice(&["execution", "actions", "web", "--next-token", "forged"]);
    assert_eq!(bad.status.code(), Some(2), "{}", sluice_tests::output_text(&bad));
    let arn =
        cluster.sluice_json(&["pipeline", "get", "web"]).unwrap()["metadata"]["pipelineArn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:codepipeline:us-east-1:"), "{arn}");
    assert!(cluster.sluice(&["tag", "add", &arn, "team=ci"]).status.success());
    let tags = aws(&cluster, &["codepipeline", "list-tags-for-resource", "--resource-arn", &arn]);
    assert_eq!(tags["tags"], json!([{"key": "team", "value": "ci"}]));
    let missing = sluice_tests::aws::aws(&cluster, &key, &["codepipeline", "get-pipeline", "--name", "nope"]).unwrap();
    // awscli 1.x exits 255 on an error the service answered.
    assert_eq!(missing.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("PipelineNotFoundException"),
        "{}",
        sluice_tests::output_text(&missing)
    );
}

#[test]
fn boto3_webhooks_map_onto_the_pipelines_webhook() {
    let cluster = Cluster::new().start().unwrap();
    let key = access_key(&cluster, "ann", "operator").unwrap();
    let file = declaration(&cluster, "web");
    cluster.create_pipeline("web", &std::fs::read_to_string(&file).unwrap());
    let r = script_json(&cluster, &key, "webhooks.py", &["web"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.controller_log()));
    assert_eq!(r["put_url"], format!("{}/v1/webhooks/web", cluster.api));
    assert!(r["put_arn"].as_str().unwrap().ends_with(":webhook:github-push"), "{r}");
    assert_eq!(r["put_secret_shown"], false);
    assert_eq!(r["listed"], json!([["github-push", "web", [{"jsonPath": "$.ref", "matchEquals": "refs/heads/{Branch}"}]]]));
    assert_eq!(r["listed_secret_shown"], false);
    assert_eq!(r["tags"], json!([{"key": "hook", "value": "gh"}]));
    assert_eq!(r["unauthenticated"]["code"], "ValidationException");
    assert_eq!(r["delivery_signed"], 200, "signed with the SecretToken: accepted");
    assert_eq!(r["delivery_forged"], 401, "{r}");
    assert_eq!(r["after_delete"], json!([]));
    assert_eq!(r["delete_again"], Value::Null);
    assert_eq!(r["delivery_after_delete"], 404, "{r}");
}
