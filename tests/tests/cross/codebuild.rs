//! `sluice pipeline import` of CodePipeline definitions whose builds are
//! CodeBuild buildspecs: the built-in `codebuild` plugin runs them on a real
//! agent, confined as `shell` is, with CodeBuild's phase semantics.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, make_repo, output_text};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The repository's buildspec: phases sharing shell state, a variable
/// from the action, a Parameter Store secret, exported variables, and
/// artifacts with base-directory and discard-paths plus a secondary one.
const BUILDSPEC: &str = r#"version: 0.2
env:
  variables:
    GREETING: hello
  parameter-store:
    DB_PASSWORD: /app/prod/db-password
  exported-variables:
    - IMAGE_TAG
    - PW_LEN
phases:
  install:
    commands:
      - mkdir -p out/bin out/docs
  pre_build:
    commands:
      - IMAGE_TAG="img-$(cat VERSION)"
      - cd src
  build:
    commands:
      - cp app.sh ../out/bin/app.sh
      - echo "$GREETING $STAGE $IMAGE_TAG $CODEBUILD_RESOLVED_SOURCE_VERSION $CODEBUILD_BUILD_SUCCEEDING" > ../out/env.txt
      - test "$DB_PASSWORD" = "s3cret-pw"
      - PW_LEN=${#DB_PASSWORD}
      - echo "the password is $DB_PASSWORD"
      - test "$DB_USER" = dbadmin-42
      - echo "the user is $DB_USER"
  post_build:
    commands:
      - echo "post $CODEBUILD_BUILD_SUCCEEDING" > ../out/docs/post.txt
artifacts:
  files:
    - '**/*'
  base-directory: out
  discard-paths: yes
  secondary-artifacts:
    Docs:
      base-directory: out
      files:
        - docs/*
"#;

/// The test stage's buildspec, inline in `BuildSpec`: it checks what the
/// build stage handed on. `{commit}` is filled in by the test.
const TEST_BUILDSPEC: &str = r#"version: 0.2
phases:
  build:
    commands:
      - test -x app.sh
      - test "$(cat env.txt)" = "hello prod img-1.2.3 {commit} 1"
      - test "$(cat "$CODEBUILD_SRC_DIR_Docs/docs/post.txt")" = "post 1"
      - test "$TAG" = img-1.2.3
      - test "$LEN" = 9
      - test ! -e bin
"#;

/// A GitHub source, a CodeBuild build and a CodeBuild test, as
/// `aws codepipeline get-pipeline` prints them.
fn definition(name: &str, test_buildspec: &str) -> String {
    let environment = r#"[{"name":"STAGE","value":"prod","type":"PLAINTEXT"},{"name":"DB_PASSWORD","value":"/app/prod/db-password","type":"PARAMETER_STORE"},{"name":"DB_USER","value":"app/db:user::","type":"SECRETS_MANAGER"}]"#;
    let test_environment = r##"[{"name":"TAG","value":"#{BuildVariables.IMAGE_TAG}"},{"name":"LEN","value":"#{BuildVariables.PW_LEN}","type":"PLAINTEXT"}]"##;
    let pipeline = serde_json::json!({"pipeline": {
        "name": name, "roleArn": "arn:aws:iam::123456789012:role/cp", "version": 1,
        "artifactStore": {"type": "S3", "location": "artifacts"},
        "stages": [
            {"name": "Source", "actions": [{"name": "App",
                "actionTypeId": {"category": "Source", "owner": "ThirdParty", "provider": "GitHub", "version": "1"},
                "configuration": {"Owner": "acme", "Repo": "app", "Branch": "main", "OAuthToken": "****", "PollForSourceChanges": "false"},
                "outputArtifacts": [{"name": "SourceArtifact"}], "namespace": "SourceVariables", "runOrder": 1}]},
            {"name": "Build", "actions": [{"name": "Build",
                "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"ProjectName": "app-build", "EnvironmentVariables": environment},
                "inputArtifacts": [{"name": "SourceArtifact"}],
                "outputArtifacts": [{"name": "BuildArtifact"}, {"name": "Docs"}],
                "namespace": "BuildVariables", "runOrder": 1}]},
            {"name": "Test", "actions": [{"name": "Check",
                "actionTypeId": {"category": "Test", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
                "configuration": {"ProjectName": "app-test", "BuildSpec": test_buildspec, "EnvironmentVariables": test_environment},
                "inputArtifacts": [{"name": "BuildArtifact"}, {"name": "Docs"}], "runOrder": 1}]}
        ]},
        "metadata": {"pipelineArn": format!("arn:aws:codepipeline:eu-west-1:123456789012:{name}")}});
    serde_json::to_string_pretty(&pipeline).unwrap()
}

/// `sluice secret set NAME --pipelines P` with the value on stdin.
fn set_secret(cluster: &Cluster, name: &str, value: &str, pipelines: &str) {
    let mut set = Command::new(sluice_tests::bin("sluice"))
        .args(["secret", "set", name, "--pipelines", pipelines])
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", &cluster.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

/// The secrets the definition's build action is granted: a Parameter
/// Store parameter and a Secrets Manager JSON secret.
fn set_secrets(cluster: &Cluster) {
    set_secret(cluster, "app.prod.db-password", "s3cret-pw", "cb-*");
    set_secret(cluster, "app.db", r#"{"user": "dbadmin-42", "password": "other-pw"}"#, "cb-*");
}

/// Imports `definition` with its GitHub source pointed at `repo`; returns
/// the started execution's id and what import printed on stderr.
fn import(cluster: &Cluster, name: &str, definition: &str, repo: &Path) -> (String, String) {
    let file = cluster.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, definition).unwrap();
    let source = format!("App={}", repo.display());
    let out = cluster.sluice(&["pipeline", "import", file.to_str().unwrap(), "--source-url", &source, "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    (created["pipelineExecutionId"].as_str().unwrap().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stored_log(cluster: &Cluster, pipeline: &str, id: &str) -> Vec<String> {
    let logs = cluster.sluice_json(&["logs", pipeline, "--execution", id]).unwrap();
    logs["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap().trim_end().to_string()).collect()
}

/// A repository with `buildspec` and the files it builds (`src/app.sh`
/// executable); returns it and its head commit.
fn repo_with(cluster: &Cluster, dir: &str, buildspec: &str) -> (std::path::PathBuf, String) {
    let repo = cluster.dir.path().join(dir);
    make_repo(
        &repo,
        &[("buildspec.yml", buildspec), ("VERSION", "1.2.3\n"), ("src/app.sh", "#!/bin/sh\necho app\n"), ("README", "x\n")],
    );
    sluice_tests::git(&repo, &["update-index", "--chmod=+x", "src/app.sh"]);
    sluice_tests::git(&repo, &["commit", "-q", "-m", "executable"]);
    let head = sluice_tests::git(&repo, &["rev-parse", "HEAD"]);
    (repo, head)
}

/// Artifacts for both of the build action's outputs.
const ARTIFACTS: &str = "artifacts:\n  files: [VERSION]\n  secondary-artifacts:\n    Docs:\n      files: [README]\n";

#[test]
fn an_imported_buildspec_pipeline_runs_end_to_end() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let (repo, commit) = repo_with(&cluster, "repo", BUILDSPEC);
    set_secrets(&cluster);

    let test_buildspec = TEST_BUILDSPEC.replace("{commit}", &commit);
    let (id, report) = import(&cluster, "cb-app", &definition("cb-app", &test_buildspec), &repo);
    for line in [
        "action \"App\": ThirdParty/GitHub -> git@1",
        &format!("action \"App\": Url {} (from --source-url)", repo.display()),
        "action \"Build\": AWS/CodeBuild -> codebuild@1",
        "action \"Build\": grants secrets app.prod.db-password, app.db",
        "action \"Check\": runs the inline BuildSpec",
    ] {
        assert!(report.contains(line), "{line:?} not in the report:\n{report}");
    }
    let e = cluster.execution_end("cb-app", &id, WAIT);
    let lines = stored_log(&cluster, "cb-app", &id);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", lines.join("\n"));

    let build = &e["stages"][1]["actions"][0];
    assert_eq!(build["outputVariables"]["IMAGE_TAG"], "img-1.2.3", "{build}");
    assert_eq!(build["outputVariables"]["PW_LEN"], "9", "{build}");
    assert_eq!(build["resolvedConfiguration"]["ProjectName"], "app-build");
    assert_eq!(build["resolvedConfiguration"]["SourceVersion"], commit.as_str());
    // The phases ran in order, and the secret never reached the log.
    let phases: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("[info] entering phase ")).collect();
    assert_eq!(phases[..4], ["INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD"]);
    assert!(lines.iter().any(|l| l == "the password is ***"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "the user is ***"), "a JSON secret's field is masked alone: {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("s3cret-pw") || l.contains("dbadmin-42")), "{lines:?}");
    let declared = cluster.sluice_json(&["pipeline", "get", "cb-app"]).unwrap();
    let caps = &declared["pipeline"]["stages"][1]["actions"][0]["capabilities"];
    assert_eq!(caps["secrets"], serde_json::json!(["app.prod.db-password", "app.db"]), "{declared}");
}

#[test]
fn a_failing_build_runs_finally_and_post_build_and_fails_the_action() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let failing = r#"version: 0.2
phases:
  pre_build:
    commands:
      - export PHASE_VAR=kept
  build:
    commands:
      - echo "building with $PHASE_VAR"
      - exit 3
      - echo never-printed
    finally:
      - echo "finally succeeding=$CODEBUILD_BUILD_SUCCEEDING"
  post_build:
    commands:
      - echo "post_build succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#;
    let (repo, _) = repo_with(&cluster, "repo", &format!("{failing}{ARTIFACTS}"));
    set_secrets(&cluster);
    let (id, _) = import(&cluster, "cb-fail", &definition("cb-fail", "version: 0.2\nphases: {}\n"), &repo);
    let e = cluster.execution_end("cb-fail", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Failed", "{e}");
    let build = &e["stages"][1]["actions"][0];
    assert_eq!(build["status"], "Failed");
    assert_eq!(
        build["errorDetails"]["message"], "build failed: phase BUILD: command \"exit 3\" exited with status 3",
        "{build}"
    );
    let lines = stored_log(&cluster, "cb-fail", &id);
    for want in ["building with kept", "finally succeeding=1", "post_build succeeding=0"] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
    assert!(!lines.iter().any(|l| l == "never-printed"), "{lines:?}");
    assert!(e["stages"].get(2).is_none_or(|s| s["actions"][0]["status"].is_null()), "the test stage never ran: {e}");
}

#[test]
fn hostile_buildspecs_stay_confined_and_are_refused_clearly() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    set_secrets(&cluster);
    // The harness lets agents' programs use the cluster's directory (its
    // repositories); the agents' directories are outside it, as is /root.
    let agent_key = cluster.agent_dir(0).join("agent.key");
    let agents = cluster.agent_dir(0).parent().unwrap().to_path_buf();
    // Reading the agent's key or its database, listing /root, writing beside
    // the agents: every one is denied, and the build says so.
    let nosy = format!(
        "version: 0.2\nphases:\n  build:\n    on-failure: CONTINUE\n    commands:\n      - ls {} || echo denied-agents\n      - cat {} || echo denied-agent-key\n      - ls /root || echo denied-root\n      - touch {}/escaped || echo denied-write\n      - test ! -e {}/escaped\n{ARTIFACTS}",
        agents.display(),
        agent_key.display(),
        agents.display(),
        agents.display()
    );
    let (repo, _) = repo_with(&cluster, "nosy", &nosy);
    let (id, _) = import(&cluster, "cb-nosy", &definition("cb-nosy", "version: 0.2\nphases: {}\n"), &repo);
    let e = cluster.execution_end("cb-nosy", &id, WAIT);
    let lines = stored_log(&cluster, "cb-nosy", &id);
    for want in ["denied-agents", "denied-agent-key", "denied-root", "denied-write"] {
        assert!(lines.iter().any(|l| l == want), "{want:?} not in {lines:?}");
    }
    assert!(lines.iter().any(|l| l.contains("Permission denied")), "{lines:?}");
    assert!(!agents.join("escaped").exists());
    assert!(!lines.iter().any(|l| l.contains("PRIVATE KEY")), "{lines:?}");
    // Every probe was refused, so the build itself went well.
    assert_eq!(e["stages"][1]["actions"][0]["status"], "Succeeded", "{e}");

    // An ungranted secret, artifact paths out of the source, a nesting bomb,
    // an old version: refused, naming the secret, the key or the line.
    // A secret that exists but that the pipeline does not grant.
    set_secret(&cluster, "other.secret", "not-for-you", "cb-*");
    let cases: [(&str, String, &str); 4] = [
        (
            "cb-ungranted",
            "version: 0.2\nenv:\n  parameter-store:\n    X: /other/secret\nphases: {build: {commands: ['echo $X']}}\n"
                .into(),
            "variable \"X\" (env.parameter-store): Sluice secret \"other.secret\": secret \"other.secret\" is not granted to this action",
        ),
        (
            "cb-dotdot",
            "version: 0.2\nphases: {build: {commands: ['true']}}\nartifacts:\n  files: ['../../../etc/passwd']\n".into(),
            "buildspec key \"artifacts.files[0]\": \"../../../etc/passwd\" leaves the source directory (\"..\")",
        ),
        (
            "cb-deep",
            format!("version: 0.2\nphases: {{}}\nenv: {{variables: {{X: {}{}}}}}\n", "[".repeat(5000), "]".repeat(5000)),
            "buildspec is not valid YAML at line",
        ),
        (
            "cb-version",
            "version: 0.1\nphases: {build: {commands: ['true']}}\n".into(),
            "buildspec key \"version\": 0.1 is not supported",
        ),
    ];
    for (name, spec, want) in &cases {
        let (repo, _) = repo_with(&cluster, name, spec);
        let (id, _) = import(&cluster, name, &definition(name, "version: 0.2\nphases: {}\n"), &repo);
        let e = cluster.execution_end(name, &id, WAIT);
        let build = &e["stages"][1]["actions"][0];
        assert_eq!(build["status"], "Failed", "{name}: {e}");
        let message = build["errorDetails"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{name}: {message:?} lacks {want:?}");
        assert!(!stored_log(&cluster, name, &id).iter().any(|l| l.contains("not-for-you")));
    }
}
