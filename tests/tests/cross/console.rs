//! The web console in a real browser (issue 16, browser): Debian's headless
//! Chromium driven by Playwright (the scenarios in `tests/console/`)
//! against the real controller and agents. Each test prepares a cluster
//! (users and their tokens, pipelines, runs) the way an administrator
//! does with the CLI, then runs one scenario file and asserts it passed;
//! a failure prints the scenario's output and the controller's log.
//! Screenshots land in `$CARGO_TARGET_DIR/console-screenshots/`.

use sluice_tests::console::Scenario;
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, wait_until};

/// Runs a scenario file; panics with its output when it failed, prints
/// it (and where the screenshots are) when it passed.
fn passes(scenario: Scenario<'_>, file: &str) {
    match scenario.run(file) {
        Ok(output) => println!("{output}"),
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn sign_in_sign_out_revocation_and_forged_posts() {
    let cluster = Cluster::new().start().unwrap();
    let rita = cluster.user_token("rita", "operator");
    // The forged posts aim at a real change: disabling web's transition
    // into Deploy (web waits for an agent it never gets: no matter).
    cluster.create_pipeline("web", &web(&cluster));
    // Ann signs in with an access key instead of a token.
    cluster.user_token("ann", "viewer");
    let key = cluster.sluice_json(&["access-key", "create", "--user", "ann"]).unwrap();
    let scenario = Scenario::new(&cluster)
        .token("rita", &rita)
        .env("SLUICE_ACCESS_KEY_ID", key["accessKeyId"].as_str().unwrap())
        .env("SLUICE_SECRET_ACCESS_KEY", key["secretAccessKey"].as_str().unwrap())
        .env("SLUICE_FORGE_PATH", "/pipelines/web/stages/Deploy/transition/disable")
        .env("SLUICE_FORGE_CHECK", r#"[["pipeline", "state", "web", "--output", "json"], "forged"]"#);
    passes(scenario, "signin.test.mjs");
}

/// `web`: Source -> Build (a shell action of a few seconds that echoes
/// the variable GREETING) -> Deploy.
fn web(cluster: &Cluster) -> String {
    let repo = cluster.dir.path().join("repo");
    if !repo.exists() {
        make_repo(&repo, &[("README", "web\n")]);
    }
    let stages = r#"{"name": "Build", "actions": [{"name": "Compile", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "echo building for #{variables.GREETING}\nsleep 3\necho built"},
            "capabilities": {"exec": ["sh"]}}]},
        {"name": "Deploy", "actions": [{"name": "Publish",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    git_pipeline("web", r#"{"name": "GREETING", "defaultValue": "hello"}"#, &repo, stages)
}

/// `gate`: Source -> Approve (two of everyone allowed) -> Ship.
fn gate(cluster: &Cluster) -> String {
    let repo = cluster.dir.path().join("repo");
    if !repo.exists() {
        make_repo(&repo, &[("README", "web\n")]);
    }
    let stages = r#"{"name": "Approve", "actions": [{"name": "Release",
            "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"},
            "configuration": {"RequiredApprovals": "2"}}]},
        {"name": "Ship", "actions": [{"name": "Go",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    git_pipeline("gate", "", &repo, stages)
}

/// A cluster with an agent, `web` run once to its end, `gate` waiting at
/// its approval (both made by the admin, who therefore may not approve),
/// and the people: ann (operator), abe (approver), vic (viewer).
fn people_and_pipelines() -> (Cluster, Vec<(&'static str, String)>) {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let people = [("ann", "operator"), ("abe", "approver"), ("vic", "viewer")]
        .into_iter()
        .map(|(name, role)| (name, cluster.user_token(name, role)))
        .collect();
    let first = cluster.create_pipeline("web", &web(&cluster));
    let end = cluster.execution_end("web", &first, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}");
    let waiting = cluster.create_pipeline("gate", &gate(&cluster));
    wait_until("gate to wait at its approval", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "gate", &waiting]).ok()?;
        (e["stages"][1]["actions"][0]["status"] == "InProgress").then_some(())
    })
    .unwrap();
    (cluster, people)
}

fn scenario<'a>(cluster: &'a Cluster, people: &[(&str, String)]) -> Scenario<'a> {
    people.iter().fold(Scenario::new(cluster), |s, (name, token)| s.token(name, token))
}

#[test]
fn a_run_watched_live_a_held_transition_and_an_approval_of_two() {
    let (cluster, people) = people_and_pipelines();
    passes(scenario(&cluster, &people), "pipeline.test.mjs");
}

#[test]
fn a_viewer_sees_no_buttons_and_their_posts_are_refused() {
    let (cluster, people) = people_and_pipelines();
    passes(scenario(&cluster, &people), "viewer.test.mjs");
}

/// `tail`: Source -> Build/Write, a shell action that prints a coloured
/// line and a first line, waits for `mark` to exist, then prints 40 lines
/// slowly: the browser must see those arrive.
fn tail(cluster: &Cluster, mark: &std::path::Path) -> String {
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "tail\n")]);
    let commands = format!(
        "printf '\\033[32mgreen start\\033[0m\\n'\necho first line\nwhile [ ! -e {mark} ]; do sleep 0.2; done\n\
         echo after the mark\nfor i in $(seq 1 40); do echo \"line $i of 40\"; sleep 0.1; done\necho last line",
        mark = mark.display()
    );
    let stages = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Write", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
            "configuration": {{"Commands": {commands}}}, "capabilities": {{"exec": ["sh"]}}}}]}}"#,
        commands = serde_json::Value::String(commands)
    );
    git_pipeline("tail", "", &repo, &stages)
}

#[test]
fn a_log_followed_while_written_and_an_agent_drained() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let ann = cluster.user_token("ann", "operator");
    let mark = cluster.dir.path().join("go-on");
    // The first execution (at creation) passes the mark at once; the
    // browser's own execution runs after the mark is removed.
    std::fs::write(&mark, "").unwrap();
    let first = cluster.create_pipeline("tail", &tail(&cluster, &mark));
    let end = cluster.execution_end("tail", &first, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}");
    std::fs::remove_file(&mark).unwrap();
    let scenario = Scenario::new(&cluster).token("ann", &ann).env("SLUICE_LOG_MARK", &mark.display().to_string());
    passes(scenario, "logs.test.mjs");
}

#[test]
fn pages_read_without_javascript_pass_axe_and_fit_a_phone() {
    let (cluster, people) = people_and_pipelines();
    passes(scenario(&cluster, &people), "reading.test.mjs");
}
