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
    let r: Value = script_json(&cluster, &key, "pipelines.py", &[file.to_str().unwrap()])
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
    assert_eq!(r["stopped"], "Stopped");
    // Four executions (created, started, held, stopped), two per page.
    assert_eq!(r["execution_pages"], json!([2, 2]));
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
