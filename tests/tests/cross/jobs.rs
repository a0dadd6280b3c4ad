//! Custom actions and job workers: real boto3 workers (tests/aws/worker_*.py,
//! written the way AWS's custom-action samples are) and the `sluice job`
//! CLI against real controller and agent processes; the attacker's tries
//! beside the worker's work.

use serde_json::Value;
use sluice_tests::aws::{access_key, script_json};
use sluice_tests::{Cluster, make_repo, output_text, wait_until};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A custom action type (`sluice action-type create --file`), with a
/// queryable `ProjectName` and one input and one output artifact.
fn create_type(cluster: &Cluster, provider: &str) {
    let file = cluster.dir.path().join(format!("{provider}.yaml"));
    std::fs::write(
        &file,
        format!(
            "category: Build\nprovider: {provider}\nversion: \"1\"\n\
             settings:\n  executionUrlTemplate: https://ci.example.test/runs/{{ExternalExecutionId}}\n\
             configurationProperties:\n  - {{name: ProjectName, required: true, key: true, secret: false, queryable: true, type: String}}\n\
             \x20 - {{name: Token, required: false, key: false, secret: true}}\n\
             inputArtifactDetails: {{minimumCount: 1, maximumCount: 1}}\n\
             outputArtifactDetails: {{minimumCount: 0, maximumCount: 1}}\n"
        ),
    )
    .unwrap();
    let out = cluster.sluice(&["action-type", "create", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn custom_action(name: &str, provider: &str, project: &str, outputs: &str) -> String {
    format!(
        r#"{{"name": "{name}", "actionTypeId": {{"category": "Build", "owner": "Custom", "provider": "{provider}", "version": "1"}},
           "configuration": {{"ProjectName": "{project}"}}, "inputArtifacts": [{{"name": "src"}}],
           "outputArtifacts": [{outputs}], "namespace": "{name}"}}"#
    )
}

fn pipeline(name: &str, repo: &std::path::Path, build: &str, after: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}}, "outputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{build}]}}{after}]}}}}"#,
        repo = repo.display()
    )
}

fn action_state<'a>(state: &'a Value, stage: &str, action: &str) -> &'a Value {
    let stage = state["stageStates"].as_array().unwrap().iter().find(|s| s["stageName"] == stage).unwrap();
    let action = stage["actionStates"].as_array().unwrap().iter().find(|a| a["actionName"] == action).unwrap();
    &action["latestExecution"]
}

#[test]
fn a_boto3_job_worker_runs_a_custom_action_and_the_next_action_consumes_its_output() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hello from git")]);
    create_type(&cluster, "Packager");
    let listed = cluster.sluice_json(&["action-type", "list", "--owner", "Custom"]).unwrap();
    assert_eq!(listed["actionTypes"][0]["id"]["provider"], "Packager", "{listed}");

    // The shell action after the worker's reads its zip (converted) and its variable.
    let check = r#"{"name": "Check", "actions": [{"name": "Run",
        "actionTypeId": {"category": "Test", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": "test \"$(cat greeting.txt)\" = 'hello from the worker: hello from git' && test -x bin/run.sh && test '#{Package.Version}' = 1.2.3"},
        "inputArtifacts": [{"name": "pkg"}], "capabilities": {"exec": ["sh"]}}]}"#;
    let build = custom_action("Package", "Packager", "web", r#"{"name": "pkg"}"#)
        .replace(r#""ProjectName": "web""#, r#""ProjectName": "web", "Token": "s3cr3t""#);
    let id = cluster.create_pipeline("packaged", &pipeline("packaged", &repo, &build, &format!(",\n{check}")));

    let key = access_key(&cluster, "worker", "operator").unwrap();
    let seen = script_json(&cluster, &key, "worker_sample.py", &["Build", "Packager", "1", "web"]).unwrap();
    let end = cluster.execution_end("packaged", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}\n{seen}\n{}", cluster.controller_log());

    assert_eq!(seen["hello"], "hello from git", "{seen}");
    assert_eq!(seen["token"], "part-2", "the second job carries the continuation token: {seen}");
    assert_eq!(seen["draft"], "first draft\n", "the first job's upload reads back: {seen}");
    assert!(seen["headLength"].as_u64().unwrap() > 0, "{seen}");
    let codes = &seen["codes"];
    for (what, code) in [
        ("wrongNonce", "InvalidNonceException"),
        ("ack", "InProgress"),
        ("otherObject", "AccessDenied"),
        ("traversal", "AccessDenied"),
        ("writeInput", "AccessDenied"),
        ("otherBucket", "NoSuchBucket"),
        ("forgedToken", "InvalidToken"),
        ("notZip", "InvalidArgument"),
        ("zipSlip", "InvalidArgument"),
        ("successAgain", "InvalidJobStateException"),
        ("afterEnd", "ExpiredToken"),
        ("unknownJob", "JobNotFoundException"),
    ] {
        assert_eq!(codes[what], code, "{what}: {seen}");
    }

    // The output the shell action consumed came as real boto3 sends it over TLS.
    assert_eq!(
        seen["codes"]["chunkedUpload"],
        serde_json::json!(["aws-chunked", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "x-amz-checksum-crc32"]),
        "{seen}"
    );
    // The worker got the secret property; GetPipeline hides it.
    assert_eq!(seen["secret"], "s3cr3t", "{seen}");
    let got = cluster.sluice_json(&["pipeline", "get", "packaged"]).unwrap();
    assert_eq!(got["pipeline"]["stages"][1]["actions"][0]["configuration"]["Token"], "****", "{got}");
    // ... and so do the execution's views of what the action ran with.
    let execution = cluster.sluice_json(&["execution", "get", "packaged", &id]).unwrap();
    let run = &execution["stages"][1]["actions"][0];
    assert_eq!(
        (&run["actionName"], &run["resolvedConfiguration"]["Token"]),
        (&"Package".into(), &"****".into()),
        "{execution}"
    );
    let actions = cluster.sluice_json(&["execution", "actions", "packaged", "--execution", &id]).unwrap();
    let package_run = actions["actionExecutionDetails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["actionName"] == "Package")
        .unwrap_or_else(|| panic!("no Package in {actions}"));
    assert_eq!(package_run["input"]["configuration"]["Token"], "****", "{actions}");
    assert_eq!(package_run["input"]["resolvedConfiguration"]["Token"], "****", "{actions}");
    assert!(!actions.to_string().contains("s3cr3t") && !execution.to_string().contains("s3cr3t"));

    // An update that sends the hidden value back keeps the stored one.
    let file = cluster.dir.path().join("packaged-v2.json");
    std::fs::write(&file, serde_json::json!({"pipeline": got["pipeline"]}).to_string()).unwrap();
    let out = cluster.sluice(&["pipeline", "update", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let db = rusqlite::Connection::open(cluster.data_dir().join("sluice.db")).unwrap();
    let stored: String = db
        .query_row("SELECT definition FROM pipelines WHERE name = 'packaged' ORDER BY version DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["pipeline"]["stages"][1]["actions"][0]["configuration"]["Token"], "s3cr3t", "{stored}");
    // The type is in use: it is not deleted.
    let out = cluster.sluice(&["action-type", "delete", "Build", "Packager", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("is used by pipeline packaged"), "{}", output_text(&out));
    let state = cluster.sluice_json(&["pipeline", "state", "packaged"]).unwrap();
    let package = action_state(&state, "Build", "Package");
    assert_eq!(package["status"], "Succeeded", "{state}");
    assert_eq!(package["summary"], "packaged", "{state}");
    assert_eq!(package["externalExecutionUrl"], "https://ci.example.test/runs/run-42", "{state}");
    // Both jobs are on record, ended, and their details are still readable.
    let jobs: Vec<&str> = seen["jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    let first = cluster.sluice_json(&["job", "get", jobs[0]]).unwrap();
    assert_eq!(first["jobDetails"]["data"]["pipelineContext"]["action"]["name"], "Package", "{first}");
    // The worker's action execution id is the one ListActionExecutions shows.
    assert_eq!(
        first["jobDetails"]["data"]["pipelineContext"]["action"]["actionExecutionId"],
        package_run["actionExecutionId"]
    );
}

#[test]
fn a_failed_job_fails_its_action_and_an_unacknowledged_one_times_out() {
    let mut cluster = Cluster::new().controller_args(&["--worker-job-timeout", "3s"]).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hello")]);
    create_type(&cluster, "Tester");

    // Validation: the required property and the artifact counts of the type.
    let bad = r#"{"name": "Bad", "actionTypeId": {"category": "Build", "owner": "Custom", "provider": "Tester", "version": "1"},
        "configuration": {}, "outputArtifacts": [{"name": "a"}, {"name": "b"}]}"#;
    let file = cluster.dir.path().join("bad.json");
    std::fs::write(&file, pipeline("bad", &repo, bad, "")).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(
            "pipeline.stages[1].actions[0].configuration: provider Tester@1 requires configuration key \"ProjectName\""
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "pipeline.stages[1].actions[0].inputArtifacts: provider Tester@1 takes exactly 1 input artifact, found 0"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "pipeline.stages[1].actions[0].outputArtifacts: provider Tester@1 takes 0 to 1 output artifacts, found 2"
        ),
        "{text}"
    );

    let build = [
        custom_action("Fails", "Tester", "fails", r#"{"name": "failed"}"#),
        custom_action("Sleeps", "Tester", "sleeps", ""),
    ]
    .join(",");
    let id = cluster.create_pipeline("failing", &pipeline("failing", &repo, &build, ""));
    let key = access_key(&cluster, "worker", "operator").unwrap();
    let seen = script_json(&cluster, &key, "worker_fail_and_timeout.py", &["Build", "Tester", "1"]).unwrap();
    let end = cluster.execution_end("failing", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Failed", "{end}");

    let codes = &seen["codes"];
    assert_eq!(codes["othersInput"], "AccessDenied", "{seen}");
    // Refused on its headers, before a byte of the 600 MiB body was read.
    assert_eq!(codes["hugeUnsignedPut"], serde_json::json!([403, "InvalidAccessKeyId"]), "{seen}");
    // Refused on its headers: the key may not write its input.
    assert_eq!(codes["hugePutToInput"], serde_json::json!([403, "AccessDenied"]), "{seen}");
    assert_eq!(codes["tamperedPut"], serde_json::json!([400, "XAmzContentSHA256Mismatch"]), "{seen}");
    assert_eq!(codes["noQuery"], "ValidationException", "{seen}");
    assert_eq!(codes["unknownType"], "ActionTypeNotFoundException", "{seen}");
    assert_eq!(codes["failAgain"], "InvalidJobStateException", "{seen}");
    let state = cluster.sluice_json(&["pipeline", "state", "failing"]).unwrap();
    let fails = action_state(&state, "Build", "Fails");
    assert_eq!(fails["status"], "Failed", "{state}");
    assert_eq!(fails["errorDetails"]["message"], "unit tests failed: 3 of 40", "{state}");
    let sleeps = action_state(&state, "Build", "Sleeps");
    assert_eq!(sleeps["status"], "Failed", "{state}");
    let message = sleeps["errorDetails"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("was not acknowledged within 3 s of its poll"), "{state}");
    let job = cluster.sluice_json(&["job", "get", seen["sleeps"].as_str().unwrap()]).unwrap();
    assert!(job["jobDetails"]["id"].is_string(), "{job}");

    // The action types themselves, through boto3.
    let types = script_json(&cluster, &key, "worker_action_types.py", &["Deployer"]).unwrap();
    assert_eq!(types["created"]["owner"], "Custom", "{types}");
    assert_eq!(types["tags"][0]["key"], "team", "{types}");
    assert_eq!(types["custom"], serde_json::json!(["Deployer", "Tester"]), "{types}");
    assert_eq!(types["pluginOwners"], serde_json::json!(["Sluice"]), "{types}");
    assert_eq!(types["hasShell"], true, "{types}");
    assert_eq!(types["executor"], "JobWorker", "{types}");
    assert_eq!(types["queryable"], true, "{types}");
    assert_eq!(types["aws"], serde_json::json!([]), "{types}");
    for (what, code) in [
        ("twice", "ValidationException"),
        ("badQueryable", "ValidationException"),
        ("unknown", "ActionTypeNotFoundException"),
        ("deleteAgain", "ActionTypeNotFoundException"),
        ("recreate", "ValidationException"),
    ] {
        assert_eq!(types[what], code, "{what}: {types}");
    }
    assert_eq!(types["next"], "2", "{types}");
}

#[test]
fn worker_jobs_survive_a_killed_controller_and_end_with_a_stopped_execution() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hello")]);
    create_type(&cluster, "Durable");
    let build = custom_action("Deploy", "Durable", "web", "");
    let id = cluster.create_pipeline("durable", &pipeline("durable", &repo, &build, ""));
    let poll =
        ["job", "poll", "--category", "Build", "--provider", "Durable", "--version", "1", "--query", "ProjectName=web"];
    let job = wait_until("a job to poll", WAIT, || {
        let out = cluster.sluice_json(&poll).ok()?;
        out["jobs"].as_array()?.first().cloned()
    })
    .unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    let nonce = job["nonce"].as_str().unwrap().to_string();
    let acked = cluster.sluice_json(&["job", "ack", &job_id, "--nonce", &nonce]).unwrap();
    assert_eq!(acked["status"], "InProgress");

    // kill -9 while the worker holds the job: the job and its action wait.
    // Parts of a multipart upload cut off with it cannot be completed any
    // more (upload ids live in memory): the restart removes them.
    cluster.kill_controller();
    let stale = cluster.data_dir().join("s3-uploads/0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("1"), b"a part").unwrap();
    cluster.start_controller().unwrap();
    assert!(!stale.exists(), "the restart removes spooled parts");
    let out = cluster.sluice(&["job", "succeed", &job_id, "--summary", "deployed", "--variable", "Url=https://web.test"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let end = cluster.execution_end("durable", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}");
    let state = cluster.sluice_json(&["pipeline", "state", "durable"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Deploy")["summary"], "deployed", "{state}");

    // A stopped execution ends its worker's job: the result comes too late.
    let second = cluster.sluice_json(&["pipeline", "start", "durable"]).unwrap();
    let second = second["pipelineExecutionId"].as_str().unwrap().to_string();
    let job = wait_until("the second job to poll", WAIT, || {
        let out = cluster.sluice_json(&poll).ok()?;
        out["jobs"].as_array()?.first().cloned()
    })
    .unwrap();
    let job_id = job["id"].as_str().unwrap().to_string();
    let out = cluster.sluice(&["pipeline", "stop", "durable", &second, "--mode", "abandon", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["job", "succeed", &job_id]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is Failed") && text.contains("abandoned"), "{text}");
    // In use by the pipeline, the type stays; once the pipeline is gone
    // (with its ended jobs) it can be deleted.
    let refused = cluster.sluice(&["action-type", "delete", "Build", "Durable", "1"]);
    assert!(output_text(&refused).contains("is used by pipeline durable"), "{}", output_text(&refused));
    let out = cluster.sluice(&["pipeline", "delete", "durable"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["job", "get", &job_id]);
    assert_eq!(out.status.code(), Some(1), "the pipeline's jobs went with it: {}", output_text(&out));
    let deleted = cluster.sluice(&["action-type", "delete", "Build", "Durable", "1"]);
    assert!(deleted.status.success(), "{}", output_text(&deleted));
    let again = cluster.dir.path().join("Durable.yaml");
    let out = cluster.sluice(&["action-type", "create", "--file", again.to_str().unwrap()]);
    assert!(output_text(&out).contains("cannot be created again"), "{}", output_text(&out));
}

/// Bytes no compressor shrinks (xorshift), so that the zip stays as large.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_boto3_worker_moves_artifacts_above_8_mib_with_download_file_and_multipart_upload_file() {
    use sha2::{Digest, Sha256};
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hello")]);
    let big = noise(12 << 20);
    let hash = hex::encode(Sha256::digest(&big));
    std::fs::write(repo.join("big.bin"), &big).unwrap();
    for args in [&["add", "big.bin"][..], &["commit", "-q", "-m", "big"]] {
        let out = std::process::Command::new("git").arg("-C").arg(&repo).args(args).output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }
    create_type(&cluster, "Mover");

    let check = format!(
        r#"{{"name": "Check", "actions": [{{"name": "Run",
        "actionTypeId": {{"category": "Test", "owner": "Sluice", "provider": "shell", "version": "1"}},
        "configuration": {{"Commands": "test \"$(sha256sum big.bin | cut -d' ' -f1)\" = {hash} && test \"$(cat from-worker.txt)\" = multipart"}},
        "inputArtifacts": [{{"name": "pkg"}}], "capabilities": {{"exec": ["sh"]}}}}]}}"#
    );
    let build = [
        custom_action("Big", "Mover", "big", r#"{"name": "pkg"}"#),
        custom_action("Side", "Mover", "side", r#"{"name": "side"}"#),
    ]
    .join(",");
    let id = cluster.create_pipeline("moved", &pipeline("moved", &repo, &build, &format!(",\n{check}")));

    let key = access_key(&cluster, "worker", "operator").unwrap();
    let seen = script_json(&cluster, &key, "worker_multipart.py", &["Build", "Mover", "1"]).unwrap();
    let end = cluster.execution_end("moved", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}\n{seen}\n{}", cluster.controller_log());

    // download_file: parallel ranged GETs of one byte-identical zip.
    assert!(seen["inputZipBytes"].as_u64().unwrap() > 8 << 20, "{seen}");
    assert!(seen["rangedGets"].as_u64().unwrap() >= 2, "{seen}");
    assert_eq!(seen["stitchedIsWhole"], true, "{seen}");
    assert_eq!(seen["inputSha256"], hash.as_str(), "{seen}");
    // upload_file: multipart, as boto3 does above 8 MiB.
    assert!(seen["outputZipBytes"].as_u64().unwrap() > 8 << 20, "{seen}");
    let calls = &seen["uploadRequests"];
    assert_eq!(calls["CreateMultipartUpload"], 1, "{seen}");
    assert_eq!(calls["UploadPart"], 2, "two parts of 8 MiB at most: {seen}");
    assert_eq!(calls["CompleteMultipartUpload"], 1, "{seen}");
    assert!(calls.get("PutObject").is_none(), "{seen}");
    let chunked = serde_json::json!(["aws-chunked", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "x-amz-checksum-crc32"]);
    assert!(seen["partBodies"].as_array().unwrap().contains(&chunked), "parts as boto3 sends them over TLS: {seen}");
    for (what, code) in [
        ("otherJobPartOnItsObject", "AccessDenied"),
        ("otherJobPartOnOwnObject", "NoSuchUpload"),
        ("otherJobComplete", "NoSuchUpload"),
        ("otherJobAbort", "NoSuchUpload"),
        ("forgedETag", "InvalidPart"),
        ("notUploaded", "InvalidPart"),
        ("wrongOrder", "InvalidPartOrder"),
        ("tooSmall", "EntityTooSmall"),
        ("unknownUpload", "NoSuchUpload"),
        ("listParts", "NotImplemented"),
        ("partAfterAbort", "NoSuchUpload"),
        ("writeInput", "AccessDenied"),
        ("partAfterEnd", "ExpiredToken"),
        ("completeAfterEnd", "ExpiredToken"),
    ] {
        assert_eq!(seen["codes"][what], code, "{what}: {seen}");
    }
    let state = cluster.sluice_json(&["pipeline", "state", "moved"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Big")["summary"], "uploaded in parts", "{state}");

    // The dead upload of the first job is gone with its parts; nothing else is left.
    let spool = cluster.data_dir().join("s3-uploads");
    wait_until("the spooled parts removed", Duration::from_secs(30), || {
        (std::fs::read_dir(&spool).ok()?.count() == 0).then_some(())
    })
    .unwrap();
}
