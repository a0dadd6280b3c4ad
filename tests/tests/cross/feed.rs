//! Pipelines that feed pipelines (issue 21, feed), through the real
//! binaries: a diamond A -> {B, C} -> Z where one commit runs each
//! pipeline once and Z only after both branches built that commit; a
//! failure in C holding Z until C is retried; a second commit pushed while
//! B still builds the first, in SUPERSEDED mode, never mixed; cycles
//! refused at create and at update; the revision flow across pipelines;
//! and a team that cannot read A subscribing to it (the attacker's test).

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, git, make_repo, output_text, wait_until};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A: the library, built from a git repository into the artifact `lib`.
fn library(name: &str, repo: &Path) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}}, "pollIntervalSeconds": 0,
     "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Compile",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "mkdir -p out\ncp lib.txt out/lib.txt"}},
     "inputArtifacts": [{{"name": "src"}}], "outputArtifacts": [{{"name": "lib", "files": ["out/**"]}}],
     "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// A `pipeline@1` source action taking `artifact` from `upstream`.
fn subscribe(action: &str, upstream: &str, artifact: &str, namespace: &str) -> String {
    format!(
        r#"{{"name": "{action}", "namespace": "{namespace}",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "pipeline", "version": "1"}},
     "configuration": {{"Pipeline": "{upstream}"}}, "outputArtifacts": [{{"name": "{artifact}"}}]}}"#
    )
}

/// B or C: takes A's `lib`, fails while `flags/fail-NAME` exists, sleeps
/// while `flags/slow-NAME` does, and makes the artifact `NAME`.
fn service(name: &str, upstream: &str, flags: &Path) -> String {
    let flags = flags.display();
    format!(
        r#"{{"pipeline": {{"name": "{name}", "executionMode": "SUPERSEDED", "stages": [
  {{"name": "Source", "actions": [{source}]}},
  {{"name": "Build", "actions": [{{"name": "Make",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "if [ -e {flags}/fail-{name} ]; then echo failing on purpose; exit 1; fi\nif [ -e {flags}/slow-{name} ]; then sleep 6; fi\nmkdir -p o\ncp out/lib.txt o/lib.txt\necho built-by-{name}-from-#{{Up.PipelineExecutionId}} > o/stamp"}},
     "inputArtifacts": [{{"name": "lib"}}], "outputArtifacts": [{{"name": "{name}", "files": ["o/**"]}}],
     "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
        source = subscribe("Lib", upstream, "lib", "Up")
    )
}

/// Z: takes B's and C's artifacts.
fn integration(name: &str, b: &str, c: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "executionMode": "SUPERSEDED", "stages": [
  {{"name": "Source", "actions": [{}, {}]}},
  {{"name": "Check", "actions": [{{"name": "Both",
     "actionTypeId": {{"category": "Test", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "grep -q built-by-{b} o/stamp"}},
     "inputArtifacts": [{{"name": "{b}"}}, {{"name": "{c}"}}],
     "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
        subscribe("FromB", b, b, "B"),
        subscribe("FromC", c, c, "C")
    )
}

fn history(cluster: &Cluster, name: &str) -> Vec<Value> {
    cluster.sluice_json(&["pipeline", "history", name]).unwrap()["pipelineExecutionSummaries"].as_array().unwrap().clone()
}

/// Waits until `name` has `n` executions, all ended; newest first.
fn settled(cluster: &Cluster, name: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} ended executions of {name}"), WAIT, || {
        let h = history(cluster, name);
        (h.len() >= n && h.iter().all(|e| e["status"] != "InProgress")).then_some(h)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()))
}

/// The revision a source action of an execution carried.
fn revision(cluster: &Cluster, pipeline: &str, id: &str, action: &str) -> String {
    let e = cluster.sluice_json(&["execution", "get", pipeline, id]).unwrap();
    let revisions = e["pipelineExecution"]["sourceRevisions"].as_array().cloned().unwrap_or_default();
    let found = revisions.iter().find(|r| r["actionName"] == action);
    found.and_then(|r| r["revisionId"].as_str()).unwrap_or_else(|| panic!("{action} in {e}")).to_string()
}

/// The commit of A an execution of B or C was built from.
fn commit_of(cluster: &Cluster, a: &str, service: &str, id: &str) -> String {
    let a_execution = revision(cluster, service, id, "Lib");
    revision(cluster, a, &a_execution, "Checkout")
}

/// Every Z execution took B's and C's builds of one and the same commit.
fn never_mixed(cluster: &Cluster, z: &str) -> Vec<String> {
    let mut commits = Vec::new();
    for run in history(cluster, z) {
        let id = run["pipelineExecutionId"].as_str().unwrap();
        let b = revision(cluster, z, id, "FromB");
        let c = revision(cluster, z, id, "FromC");
        let (from_b, from_c) = (commit_of(cluster, "lib", "svc-b", &b), commit_of(cluster, "lib", "svc-c", &c));
        assert_eq!(from_b, from_c, "Z execution {id} mixed B's build of {from_b} with C's of {from_c}");
        commits.push(from_b);
    }
    commits
}

fn push(work: &Path, content: &str) -> String {
    std::fs::write(work.join("lib.txt"), content).unwrap();
    git(work, &["commit", "-q", "-am", content]);
    git(work, &["rev-parse", "HEAD"])
}

fn start(cluster: &Cluster, pipeline: &str) -> String {
    let out = cluster.sluice(&["pipeline", "start", pipeline]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A controller with one agent, a repository holding `lib.txt` and an
/// empty directory of the flags the services' commands look for.
fn with_library_repo() -> (Cluster, PathBuf, PathBuf) {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let root = cluster.dir.path().to_path_buf();
    let (repo, flags) = (root.join("repo"), root.join("flags"));
    std::fs::create_dir_all(&flags).unwrap();
    make_repo(&repo, &[("lib.txt", "v1\n")]);
    (cluster, repo, flags)
}

#[test]
fn a_diamond_runs_once_per_commit_holds_on_a_failure_and_never_mixes() {
    let (cluster, repo, flags) = with_library_repo();

    // Created in order, each one's first execution takes its upstreams' newest.
    cluster.create_pipeline("lib", &library("lib", &repo));
    settled(&cluster, "lib", 1);
    cluster.create_pipeline("svc-b", &service("svc-b", "lib", &flags));
    cluster.create_pipeline("svc-c", &service("svc-c", "lib", &flags));
    settled(&cluster, "svc-b", 1);
    settled(&cluster, "svc-c", 1);
    cluster.create_pipeline("z", &integration("z", "svc-b", "svc-c"));
    let z = settled(&cluster, "z", 1);
    assert_eq!(z[0]["status"], "Succeeded", "{}", cluster.controller_log());

    // One commit: A once, B and C once each, Z exactly once after both.
    let second = push(&repo, "v2\n");
    start(&cluster, "lib");
    settled(&cluster, "lib", 2);
    let (b, c) = (settled(&cluster, "svc-b", 2), settled(&cluster, "svc-c", 2));
    let z = settled(&cluster, "z", 2);
    assert_eq!(z[0]["status"], "Succeeded", "{}", z[0]);
    assert_eq!(z[0]["trigger"]["triggerType"], "PipelineExecution", "{}", z[0]);
    let z_id = z[0]["pipelineExecutionId"].as_str().unwrap().to_string();
    assert_eq!(revision(&cluster, "z", &z_id, "FromB"), b[0]["pipelineExecutionId"].as_str().unwrap());
    assert_eq!(revision(&cluster, "z", &z_id, "FromC"), c[0]["pipelineExecutionId"].as_str().unwrap());
    assert_eq!(never_mixed(&cluster, "z")[0], second);
    // Nothing else starts afterwards (no run per upstream).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        [
            history(&cluster, "lib").len(),
            history(&cluster, "svc-b").len(),
            history(&cluster, "svc-c").len(),
            history(&cluster, "z").len()
        ],
        [2, 2, 2, 2]
    );

    // The revision flow of the commit: every pipeline it reached, downstream included.
    let flow = cluster.sluice_json(&["revision", "show", &second]).unwrap();
    let reached: BTreeSet<&str> =
        flow["pipelines"].as_array().unwrap().iter().map(|p| p["pipelineName"].as_str().unwrap()).collect();
    assert_eq!(reached, BTreeSet::from(["lib", "svc-b", "svc-c", "z"]), "{flow}");
    for p in flow["pipelines"].as_array().unwrap() {
        let runs = p["executions"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{p}");
        assert_eq!(runs[0]["status"], "Succeeded", "{p}");
    }
    let text = cluster.sluice(&["revision", "show", &second]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("pipeline z"), "{}", output_text(&text));

    // C fails on the third commit: Z is held, with the reason, until C is retried.
    std::fs::write(flags.join("fail-svc-c"), "").unwrap();
    let third = push(&repo, "v3\n");
    start(&cluster, "lib");
    settled(&cluster, "svc-b", 3);
    let c = settled(&cluster, "svc-c", 3);
    assert_eq!(c[0]["status"], "Failed", "{}", c[0]);
    let held = wait_until("z to say it is held", WAIT, || {
        let state = cluster.sluice_json(&["pipeline", "state", "z"]).ok()?;
        let ups = state["upstreams"].as_array()?.clone();
        ups.iter().find_map(|u| u["held"].as_str().map(str::to_string))
    })
    .unwrap();
    assert!(held.contains("held by execution") && held.contains("svc-c"), "{held}");
    let shown = cluster.sluice(&["pipeline", "state", "z"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("held since"), "{}", output_text(&shown));
    assert_eq!(history(&cluster, "z").len(), 2);
    std::fs::remove_file(flags.join("fail-svc-c")).unwrap();
    let failed = c[0]["pipelineExecutionId"].as_str().unwrap();
    let out = cluster.sluice(&["stage", "retry", "svc-c", "Build", failed, "--mode", "failed"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let z = settled(&cluster, "z", 3);
    assert_eq!(z[0]["status"], "Succeeded", "{}", z[0]);
    assert_eq!(never_mixed(&cluster, "z")[0], third);
    let state = cluster.sluice_json(&["pipeline", "state", "z"]).unwrap();
    assert!(state["upstreams"].as_array().unwrap().iter().all(|u| u["held"].is_null()), "{state}");

    // A fourth commit while B still builds it, then a fifth: SUPERSEDED
    // never pairs B's build of one with C's build of the other.
    std::fs::write(flags.join("slow-svc-b"), "").unwrap();
    push(&repo, "v4\n");
    start(&cluster, "lib");
    wait_until("B to build the fourth commit", WAIT, || {
        let h = history(&cluster, "svc-b");
        (h.len() == 4 && h[0]["status"] == "InProgress").then_some(())
    })
    .unwrap();
    let fifth = push(&repo, "v5\n");
    start(&cluster, "lib");
    settled(&cluster, "lib", 5);
    std::fs::remove_file(flags.join("slow-svc-b")).unwrap();
    settled(&cluster, "svc-b", 5);
    settled(&cluster, "svc-c", 5);
    wait_until("z to run the fifth commit", WAIT, || {
        let z = settled(&cluster, "z", 4);
        let newest = z[0]["pipelineExecutionId"].as_str()?.to_string();
        let b = revision(&cluster, "z", &newest, "FromB");
        (commit_of(&cluster, "lib", "svc-b", &b) == fifth).then_some(())
    })
    .unwrap();
    let commits = never_mixed(&cluster, "z");
    let distinct: BTreeSet<&String> = commits.iter().collect();
    assert_eq!(distinct.len(), commits.len(), "z ran a commit twice: {commits:?}");
}

#[test]
fn a_chain_stops_at_a_failing_middle_and_cycles_and_bad_upstreams_are_refused() {
    let (cluster, repo, flags) = with_library_repo();
    cluster.create_pipeline("top", &library("top", &repo));
    settled(&cluster, "top", 1);
    cluster.create_pipeline("mid", &service("mid", "top", &flags));
    settled(&cluster, "mid", 1);
    // The end takes `lib` from the middle: what its own source took from the top.
    cluster.create_pipeline("end", &service("end", "mid", &flags));
    settled(&cluster, "end", 1);

    // The middle fails: the end does not start.
    std::fs::write(flags.join("fail-mid"), "").unwrap();
    push(&repo, "v2\n");
    start(&cluster, "top");
    settled(&cluster, "top", 2);
    let mid = settled(&cluster, "mid", 2);
    assert_eq!(mid[0]["status"], "Failed", "{}", mid[0]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(history(&cluster, "end").len(), 1);
    // Pinning: only an execution of the named upstream that passed the stage.
    let failed = mid[0]["pipelineExecutionId"].as_str().unwrap();
    let out = cluster.sluice(&["pipeline", "start", "end", "--source-revision", &format!("Lib={failed}")]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("did not pass stage Build"), "{}", output_text(&out));
    let top = history(&cluster, "top")[0]["pipelineExecutionId"].as_str().unwrap().to_string();
    let out = cluster.sluice(&["pipeline", "start", "end", "--source-revision", &format!("Lib={top}")]);
    assert!(output_text(&out).contains("has no execution"), "{}", output_text(&out));
    let good = mid[1]["pipelineExecutionId"].as_str().unwrap();
    let out = cluster.sluice(&["pipeline", "start", "end", "--source-revision", &format!("Lib={good}"), "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));

    settled(&cluster, "end", 2);

    // An upstream start obeys the downstream's disabled transition: it
    // waits before the stage until the transition is enabled again.
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", output_text(&out));
    ok(cluster.sluice(&["transition", "disable", "end", "Build", "--reason", "freeze"]));
    std::fs::remove_file(flags.join("fail-mid")).unwrap();
    push(&repo, "v3\n");
    start(&cluster, "top");
    settled(&cluster, "mid", 3);
    let waiting = wait_until("end to wait before Build", WAIT, || {
        let h = history(&cluster, "end");
        (h.len() == 3 && h[0]["status"] == "InProgress").then(|| h[0]["pipelineExecutionId"].as_str().unwrap().to_string())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let e = cluster.sluice_json(&["execution", "get", "end", &waiting]).unwrap();
    assert_eq!(e["pipelineExecution"]["status"], "InProgress", "{e}");
    ok(cluster.sluice(&["transition", "enable", "end", "Build"]));
    let end = settled(&cluster, "end", 3);
    assert_eq!(end[0]["status"], "Succeeded", "{}", end[0]);

    // Cycles: at update, and at a create that re-creates a deleted upstream.
    let dir = cluster.dir.path();
    let looped = service("top", "end", &flags);
    std::fs::write(dir.join("loop.json"), &looped).unwrap();
    let out = cluster.sluice(&["pipeline", "update", dir.join("loop.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("top -> end -> mid -> top"), "{}", output_text(&out));
    let own = service("selfish", "selfish", &flags);
    std::fs::write(dir.join("own.json"), &own).unwrap();
    let out = cluster.sluice(&["pipeline", "create", dir.join("own.json").to_str().unwrap()]);
    assert!(output_text(&out).contains("selfish -> selfish"), "{}", output_text(&out));
    std::fs::write(dir.join("plain.json"), library("again", &repo)).unwrap();
    assert!(cluster.sluice(&["pipeline", "create", dir.join("plain.json").to_str().unwrap()]).status.success());
    settled(&cluster, "again", 1);
    cluster.create_pipeline("after", &service("after", "again", &flags));
    settled(&cluster, "after", 1);
    assert!(cluster.sluice(&["pipeline", "delete", "again"]).status.success());
    std::fs::write(dir.join("back.json"), service("again", "after", &flags)).unwrap();
    let out = cluster.sluice(&["pipeline", "create", dir.join("back.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("again -> after -> again"), "{}", output_text(&out));

    // An upstream or a stage that does not exist.
    std::fs::write(dir.join("ghost.json"), service("ghostly", "ghost", &flags)).unwrap();
    let out = cluster.sluice(&["pipeline", "create", dir.join("ghost.json").to_str().unwrap()]);
    assert!(
        output_text(&out).contains("pipeline \\\"ghost\\\" does not exist")
            || output_text(&out).contains("pipeline \"ghost\" does not exist"),
        "{}",
        output_text(&out)
    );
    let staged = service("staged", "top", &flags).replace(r#""Pipeline": "top""#, r#""Pipeline": "top", "Stage": "Deploy""#);
    std::fs::write(dir.join("staged.json"), staged).unwrap();
    let out = cluster.sluice(&["pipeline", "create", dir.join("staged.json").to_str().unwrap()]);
    assert!(
        output_text(&out).contains("has no stage \\\"Deploy\\\"") || output_text(&out).contains("has no stage \"Deploy\""),
        "{}",
        output_text(&out)
    );
}

#[test]
fn a_team_that_cannot_read_a_pipeline_cannot_subscribe_to_it() {
    let (cluster, repo, flags) = with_library_repo();
    let root = cluster.dir.path().to_path_buf();
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", output_text(&out));
    ok(cluster.sluice(&["team", "create", "web"]));
    ok(cluster.sluice(&["team", "create", "data"]));
    let file = |name: &str, text: &str| {
        let path = root.join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    ok(cluster.sluice(&["pipeline", "create", &file("lib", &library("lib", &repo)), "--team", "web"]));
    settled(&cluster, "lib", 1);
    // A role that acts on its own team's pipelines only (reads included).
    let policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "codepipeline:*", "Resource": "pipeline/*",
         "Condition": {"StringEquals": {"sluice:ResourceTeam": "${sluice:PrincipalTeam}"}}},
        {"Effect": "Allow", "Action": "codepipeline:List*", "Resource": "*"}]}"#;
    ok(cluster.sluice(&["role", "create", "team-dev", "--policy", &file("team-dev", policy)]));
    ok(cluster.sluice(&["user", "create", "mallory", "--role", "team-dev", "--team", "data"]));
    let mallory =
        String::from_utf8(cluster.sluice(&["token", "create", "--user", "mallory"]).stdout).unwrap().trim().to_string();
    ok(cluster.sluice(&["user", "create", "ann", "--role", "team-dev", "--team", "web"]));
    let ann = String::from_utf8(cluster.sluice(&["token", "create", "--user", "ann"]).stdout).unwrap().trim().to_string();

    // Mallory's team cannot read lib: no subscription.
    let steal = file("steal", &service("steal", "lib", &flags));
    let out = cluster.sluice_as(&mallory, &["pipeline", "create", &steal, "--team", "data"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(output_text(&out).contains("may not codepipeline:GetPipeline on pipeline/lib"), "{}", output_text(&out));
    assert!(!cluster.sluice(&["pipeline", "get", "steal"]).status.success());
    // Nor by updating a pipeline of its own team to subscribe.
    let own = file("own", &library("own", &repo));
    ok(cluster.sluice_as(&mallory, &["pipeline", "create", &own, "--team", "data"]));
    let out = cluster.sluice_as(&mallory, &["pipeline", "update", &file("own2", &service("own", "lib", &flags))]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    // The refusals are in the audit log.
    let audit = cluster.sluice(&["audit", "list", "--operation", "CreatePipeline"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("mallory"), "{}", output_text(&audit));

    // Ann's team can: her pipeline follows lib, until she can no longer read it.
    ok(cluster
        .sluice_as(&ann, &["pipeline", "create", &file("web-app", &service("web-app", "lib", &flags)), "--team", "web"]));
    settled(&cluster, "web-app", 1);
    start(&cluster, "lib");
    settled(&cluster, "lib", 2);
    settled(&cluster, "web-app", 2);
    ok(cluster.sluice(&["team", "remove-member", "web", "ann"]));
    start(&cluster, "lib");
    settled(&cluster, "lib", 3);
    let held = wait_until("web-app to say why it did not start", WAIT, || {
        let state = cluster.sluice_json(&["pipeline", "state", "web-app"]).ok()?;
        state["upstreams"][0]["held"].as_str().map(str::to_string)
    })
    .unwrap();
    assert!(held.contains("ann") && held.contains("may no longer read pipeline \"lib\""), "{held}");
    assert_eq!(history(&cluster, "web-app").len(), 2);
}
