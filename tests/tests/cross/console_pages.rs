//! The web console's pages slice (issue 16, pages) over plain HTTPS, curl
//! as the browser: the real controller and agent, users signed in by
//! token. Execution history and timeline, artifacts downloaded only by a
//! user the API's permission allows, logs masked as the CLI prints them
//! and a secret's value on no page, the revision flow (the console's page
//! and `sluice revision show`, both kept to the pipelines the caller may
//! read), and an agent drained through its form while a viewer sees no
//! button and a forged post is refused.

use serde_json::{Value, json};
use sluice_tests::browser::{Browser, csrf_of, main_of};
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, output_text, wait_until};
use std::process::Command;
use std::time::Duration;

/// A custom role from a policy document.
fn role(cluster: &Cluster, name: &str, policy: &Value) {
    let path = cluster.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, policy.to_string()).unwrap();
    let out = cluster.sluice(&["role", "create", name, "--policy", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
}

const SECRET_VALUE: &str = "tok-3f9a-very-secret-771c";

#[test]
fn executions_logs_artifacts_and_the_revision_flow_show_what_each_user_may_see() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let hostile = sluice_test_plugins::test_plugin("hostile");
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    cluster.set_secret("TOKEN", SECRET_VALUE, "*");
    let repo = cluster.dir.path().join("repo");
    let commit = make_repo(&repo, &[("README", "hello from the repo\n")]);
    let declaration = git_pipeline(
        "leaky",
        "",
        &repo,
        r#"{"name": "Leak", "actions": [{"name": "Run", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Test", "owner": "Custom", "provider": "hostile", "version": "1"},
            "configuration": {"Mode": "leak-secret"}, "capabilities": {"secrets": ["TOKEN"]}}]}"#,
    );
    let id = cluster.create_pipeline("leaky", &declaration);
    let end = cluster.execution_end("leaky", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}\n{}", cluster.controller_log());

    let admin = Browser::sign_in(&cluster, "admin", &cluster.token);
    // The history links the execution and names its trigger and revision.
    let history = admin.page("/pipelines/leaky/executions");
    assert!(
        history.contains("Execution history") && history.contains(&format!("/pipelines/leaky/executions/{id}")),
        "{history}"
    );
    assert!(history.contains("CreatePipeline") && history.contains(&commit[..12]), "{history}");
    // The timeline: stages, revisions, artifacts with their download link.
    let timeline = admin.page(&format!("/pipelines/leaky/executions/{id}"));
    for text in ["Timeline", "Why it waited", "Nothing waited.", "Checkout", "Download src", &commit[..12]] {
        assert!(timeline.contains(text), "{text:?} not on the timeline:\n{timeline}");
    }
    let download = format!("/pipelines/leaky/executions/{id}/artifacts/src");
    let tar = admin.get(&download);
    assert_eq!(tar.status, 200, "{:?}", tar.content_type);
    assert_eq!(tar.content_type.as_deref(), Some("application/x-tar"));
    assert!(tar.body.len() > 512 && &tar.body[257..262] == b"ustar", "a tar archive");
    assert!(String::from_utf8_lossy(&tar.body).contains("hello from the repo"));
    // The same operation over REST: metadata of the same artifact.
    let meta = cluster.sluice_json(&["execution", "get", "leaky", &id]).unwrap();
    let digest = meta["stages"][0]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string();
    let rest = Command::new("curl")
        .arg("--cacert")
        .arg(cluster.ca_file())
        .args(["-sS", "-H", &format!("Authorization: Bearer {}", cluster.token)])
        .arg(format!("{}/v1/pipelines/leaky/executions/{id}/artifacts/src", cluster.api))
        .output()
        .unwrap();
    let rest: Value = serde_json::from_slice(&rest.stdout).unwrap();
    assert_eq!((rest["digest"].as_str(), rest["stageName"].as_str()), (Some(digest.as_str()), Some("Source")), "{rest}");

    // A viewer reads executions and logs but does not download artifacts
    // (they are not masked as logs are): the page without the link, the
    // download refused.
    let nora_token = cluster.user_token("nora", "viewer");
    let nora = Browser::sign_in(&cluster, "nora", &nora_token);
    let seen = nora.page(&format!("/pipelines/leaky/executions/{id}"));
    assert!(seen.contains("src") && !seen.contains("Download src"), "{seen}");
    let refused = nora.get(&download);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains("hello from the repo"));
    // The CLI downloads through the same operation: the same bytes for
    // the admin, a refusal (exit 3) and no file for nora.
    let file = cluster.dir.path().join("src.tar");
    let out = cluster.sluice(&["execution", "artifact", "leaky", &id, "src", "--to", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), tar.body, "the CLI's archive is the console's");
    let again = cluster.sluice(&["execution", "artifact", "leaky", &id, "src", "--to", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "an existing file is not overwritten: {}", output_text(&again));
    let hers = cluster.dir.path().join("nora.tar");
    let out =
        cluster.sluice_as(&nora_token, &["execution", "artifact", "leaky", &id, "src", "--to", hers.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(output_text(&out).contains("sluice:GetArtifact"), "{}", output_text(&out));
    assert!(!hers.exists());
    // An artifact the execution does not have, and one of a made-up execution.
    assert_eq!(admin.get(&format!("/pipelines/leaky/executions/{id}/artifacts/nope")).status, 404);
    assert_eq!(admin.get("/pipelines/leaky/executions/not-an-id/artifacts/src").status, 404);

    // The action's log: masked exactly as `sluice logs` prints it.
    let action = admin.page(&format!("/pipelines/leaky/executions/{id}/actions/Leak/Run"));
    let fragment = admin.get(&format!("/pipelines/leaky/executions/{id}/actions/Leak/Run/log?after=0"));
    assert_eq!(fragment.status, 200);
    let logs = cluster.sluice_json(&["logs", "leaky", "--execution", &id]).unwrap();
    let cli: Vec<String> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "Run")
        .map(|l| l["text"].as_str().unwrap().trim_end().to_string())
        .collect();
    for line in ["stdout: ***", "stderr: ***", "log: ***"] {
        assert!(cli.iter().any(|l| l.ends_with(line)), "{line:?} not in the CLI's log: {cli:?}");
        assert!(action.contains(line), "{line:?} not on the action page:\n{action}");
    }
    for line in &cli {
        let escaped = line
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(action.contains(&escaped), "the CLI's line {line:?} is not on the page");
    }
    assert!(action.contains(r#"role="log""#) && action.contains("Follow log") && action.contains("Finished"), "{action}");
    assert!(action.contains("Grants") && action.contains("TOKEN"), "the grant names the secret: {action}");

    // The revision flow: recent revisions, a prefix, the flow; the CLI's too.
    let recent = admin.page("/revisions");
    assert!(recent.contains("Recent revisions") && recent.contains(&commit[..12]), "{recent}");
    let found = admin.get(&format!("/revisions?q={}", &commit[..8]));
    assert_eq!((found.status, found.location.as_deref()), (303, Some(format!("/revisions/{commit}").as_str())));
    let flow = admin.page(&format!("/revisions/{commit}"));
    assert!(flow.contains("leaky") && flow.contains("Reached the end: Succeeded") && flow.contains(&id), "{flow}");
    let shown = cluster.sluice(&["revision", "show", &commit[..8]]);
    assert!(shown.status.success(), "{}", output_text(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("pipeline leaky") && text.contains("✓ Source -> ✓ Leak") && text.contains("reached the end"),
        "{text}"
    );
    let listed = cluster.sluice_json(&["revision", "list"]).unwrap();
    assert_eq!(listed["revisions"][0]["revisionId"], commit.as_str(), "{listed}");
    // Someone who may use the revision operations but read no pipeline
    // sees no revision and no flow: not the commit, not the pipeline.
    role(
        &cluster,
        "outsider",
        &json!({"Statement": [{"Effect": "Allow", "Action": ["sluice:ListRevisions", "sluice:GetRevisionFlow"], "Resource": "*"}]}),
    );
    let otto = cluster.user_token("otto", "outsider");
    let out = cluster.sluice_as(&otto, &["revision", "show", &commit]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(!output_text(&out).contains("leaky"), "{}", output_text(&out));
    let none = cluster.sluice_as(&otto, &["revision", "list", "--output", "json"]);
    assert_eq!(serde_json::from_slice::<Value>(&none.stdout).unwrap()["revisions"], json!([]));
    let otto = Browser::sign_in(&cluster, "otto", &otto);
    assert!(!otto.page("/revisions").contains(&commit[..12]));
    assert_eq!(otto.get(&format!("/revisions/{commit}")).status, 404);

    // The secret's value is on no page anyone may see, its name is on /secrets.
    let secrets = admin.page("/secrets");
    assert!(secrets.contains("TOKEN"), "{secrets}");
    let pages = [
        "/".to_string(),
        "/pipelines/leaky".into(),
        "/pipelines/leaky/executions".into(),
        format!("/pipelines/leaky/executions/{id}"),
        format!("/pipelines/leaky/executions/{id}/actions/Leak/Run"),
        format!("/pipelines/leaky/executions/{id}/actions/Leak/Run/log"),
        format!("/pipelines/leaky/executions/{id}/actions/Source/Checkout"),
        "/agents".into(),
        "/plugins".into(),
        "/secrets".into(),
        "/audit".into(),
        "/revisions".into(),
        format!("/revisions/{commit}"),
    ];
    for path in &pages {
        let answer = admin.get(path);
        // `/` and `/pipelines/leaky` are the pipe slice's pages: whatever
        // serves them must not show the value either.
        let others = ["/", "/pipelines/leaky"];
        assert!(answer.status == 200 || others.contains(&path.as_str()), "GET {path}: {}", answer.status);
        assert!(!answer.text().contains(SECRET_VALUE), "the secret's value is on {path}");
    }
    // Plugins name who uses them; the audit log shows the console's calls.
    let plugins = admin.page("/plugins");
    assert!(plugins.contains("hostile@1") && plugins.contains("/pipelines/leaky"), "{plugins}");
    // Hand-edited query strings: a clear answer, never a bare one.
    assert_eq!(admin.get("/audit?before=not-a-number").status, 200);
    assert_eq!(admin.get(&format!("/pipelines/leaky/executions/{id}/actions/Leak/Run?attempt=-1")).status, 200);
    let bad = admin.get("/pipelines/leaky/executions?next=garbage");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("nextToken") && bad.text().contains("<main"), "{}", bad.text());
    let audit = admin.page("/audit?operation=GetArtifact");
    assert!(audit.contains("GetArtifact") && audit.contains("AccessDenied"), "nora's refusal is recorded:\n{audit}");
}

#[test]
fn an_agent_is_drained_through_its_form_and_a_viewer_sees_no_button_and_cannot_forge_one() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let agent = cluster.agents_json().unwrap()[0]["id"].as_str().unwrap().to_string();
    let state = || {
        let agents = cluster.agents_json().unwrap();
        agents.iter().find(|a| a["id"] == agent.as_str()).unwrap()["state"].as_str().unwrap().to_string()
    };
    let admin = Browser::sign_in(&cluster, "admin", &cluster.token);
    let page = admin.page("/agents");
    for text in [&agent, "Certificate expires", "Drain", "Disable", "Revoke", "0 of "] {
        assert!(page.contains(text), "{text:?} not on the agents page:\n{page}");
    }
    assert!(!main_of(&page).contains("Not known yet"), "an enrolled agent's certificate expiry is known");

    // A viewer: the same list, no button; a forged post with the viewer's
    // own session and token is refused by the driver, nothing changes.
    let vera_token = cluster.user_token("vera", "viewer");
    let vera = Browser::sign_in(&cluster, "vera", &vera_token);
    let seen = vera.page("/agents");
    assert!(seen.contains(&agent));
    assert!(!main_of(&seen).contains("<button"), "a viewer sees no agent buttons:\n{seen}");
    let forged = vera.submit("/agents", &format!("/agents/{agent}/drain"), &[]);
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert!(
        forged.text().contains("nothing was done") || forged.text().contains("sluice:ManageAgents"),
        "{}",
        forged.text()
    );
    assert_eq!(state(), "enabled");
    // Without the CSRF token, or from another site: refused before the driver.
    let bare = admin.send("POST", &format!("/agents/{agent}/drain"), &[], &[]);
    assert_eq!(bare.status, 403, "{}", bare.text());
    let csrf = csrf_of(&admin.page("/agents"));
    let cross = admin.send("POST", &format!("/agents/{agent}/drain"), &[("csrf", &csrf)], &["Origin: https://evil.example"]);
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert_eq!(state(), "enabled");

    // The event stream tells who may list agents that one changed (the
    // agents page refreshes on it); not someone who may only read pipelines.
    role(
        &cluster,
        "watcher",
        &json!({"Statement": [{"Effect": "Allow", "Action": ["codepipeline:GetPipelineState"], "Resource": "*"}]}),
    );
    let sam = cluster.user_token("sam", "watcher");
    let mut admin_events = cluster.events(None).unwrap();
    let mut vera_events = cluster.events_as(&vera_token, None).unwrap();
    let mut sam_events = cluster.events_as(&sam, None).unwrap();

    // The admin drains it through the form: the agent drains, the page says so.
    let drained = admin.submit("/agents", &format!("/agents/{agent}/drain"), &[]);
    assert_eq!((drained.status, drained.location.as_deref()), (303, Some("/agents")), "{}", drained.text());
    wait_until("the agent to drain", WAIT, || (state() == "draining").then_some(())).unwrap();
    let is_drained = |e: &Value| e["type"] == "agent" && e["agent"] == agent.as_str() && e["change"] == "draining";
    admin_events.wait_for("the agent's drain", WAIT, is_drained).unwrap();
    vera_events.wait_for("the agent's drain, for a viewer", WAIT, is_drained).unwrap();
    let unseen = sam_events.wait_for("no agent event", Duration::from_secs(2), |e| e["type"] == "agent");
    assert!(unseen.is_err(), "an agent event reached someone who may not list agents: {unseen:?}");
    let after = admin.page("/agents");
    assert!(after.contains(&format!("Agent {agent} is draining")), "{after}");
    assert!(after.contains("Draining") && after.contains(">Enable"), "{after}");
    // And back.
    let enabled = admin.submit("/agents", &format!("/agents/{agent}/enable"), &[]);
    assert_eq!(enabled.status, 303);
    assert_eq!(state(), "enabled");
    // A verb agents do not have.
    let odd = admin.submit("/agents", &format!("/agents/{agent}/explode"), &[]);
    assert_eq!(odd.status, 404);
    assert_eq!(state(), "enabled");
}

#[test]
fn an_action_run_twice_shows_each_attempt_with_its_own_log_in_colour() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    // Prints in colour (as tools do: a real ESC), then fails.
    let declaration = git_pipeline(
        "flaky",
        "",
        &repo,
        r#"{"name": "Build", "actions": [{"name": "Make", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "printf '\\033[31mred alert\\033[0m <b>%s</b>\\n' \"$(date +%s%N)\"; exit 3"},
            "capabilities": {"exec": ["sh"]}}]}"#,
    );
    let id = cluster.create_pipeline("flaky", &declaration);
    let end = cluster.execution_end("flaky", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Failed", "{end}");
    let out = cluster.sluice(&["stage", "retry", "flaky", "Build", &id, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let end = cluster.execution_end("flaky", &id, WAIT);
    assert_eq!(end["stages"][1]["actions"][0]["attempt"], 2, "{end}");

    let admin = Browser::sign_in(&cluster, "admin", &cluster.token);
    let path = format!("/pipelines/flaky/executions/{id}/actions/Build/Make");
    let page = admin.page(&path);
    // The colour is rendered, the markup the command printed is text.
    assert!(page.contains(r#"<span class="ansi-fg-red">red alert</span>"#), "{page}");
    assert!(page.contains("&lt;b&gt;") && !page.contains("<b>1"), "{page}");
    assert!(
        page.contains("Attempts") && page.contains("Log of attempt 1") && page.contains("Ran before attempt 2"),
        "{page}"
    );
    let first = admin.page(&format!("{path}?attempt=1"));
    assert!(first.contains("Log of attempt 1") && first.contains("Attempt 1 of 2: finished"), "{first}");
    // Each attempt's log is its own: the stamps differ.
    let stamp = |page: &str| {
        let marker = "red alert</span> &lt;b&gt;";
        let start = page.find(marker).unwrap() + marker.len();
        page[start..].split("&lt;").next().unwrap().to_string()
    };
    assert_ne!(stamp(&page), stamp(&first));
    // The log as `sluice logs` prints it names each line's attempt.
    let logs = cluster.sluice_json(&["logs", "flaky", "--execution", &id]).unwrap();
    let attempts: Vec<u64> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "Make")
        .filter_map(|l| l["attempt"].as_u64())
        .collect();
    assert!(attempts.contains(&1) && attempts.contains(&2), "{logs}");
    // The fragment the script appends: only lines after the one it has.
    let fragment = admin.get(&format!("{path}/log?after=0&job=nope"));
    assert!(fragment.text().contains(r#"data-seq="0""#), "another job: from its start");

    // Why an execution waits: a transition disabled into Build, on the
    // timeline and in the revision flow.
    let out = cluster.sluice(&["transition", "disable", "flaky", "Build", "--reason", "code freeze"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["pipeline", "start", "flaky", "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let held = serde_json::from_slice::<Value>(&out.stdout).unwrap()["pipelineExecutionId"].as_str().unwrap().to_string();
    wait_until("the source to succeed", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "flaky", &held]).ok()?;
        (e["stages"][0]["status"] == "Succeeded").then_some(())
    })
    .unwrap();
    let timeline = admin.page(&format!("/pipelines/flaky/executions/{held}"));
    assert!(timeline.contains("the transition into Build is disabled: code freeze, by admin"), "{timeline}");
    assert!(timeline.contains(r#"<span class="status wait">Now</span>"#), "{timeline}");
    let commit = cluster.sluice_json(&["execution", "get", "flaky", &held]).unwrap()["pipelineExecution"]["sourceRevisions"]
        [0]["revisionId"]
        .as_str()
        .unwrap()
        .to_string();
    let flow = admin.page(&format!("/revisions/{commit}"));
    assert!(flow.contains("Waiting before Build") && flow.contains("Stopped at Build / Make: Failed"), "{flow}");
}

#[test]
fn an_action_no_agent_can_take_says_so_on_its_timeline() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let declaration = git_pipeline(
        "nowhere",
        "",
        &repo,
        r#"{"name": "Build", "actions": [{"name": "Make", "agentLabels": {"os": "plan9"},
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#,
    );
    let id = cluster.create_pipeline("nowhere", &declaration);
    let admin = Browser::sign_in(&cluster, "admin", &cluster.token);
    let path = format!("/pipelines/nowhere/executions/{id}");
    let page = wait_until("the timeline to say why Make waits", WAIT, || {
        let page = admin.page(&path);
        page.contains("Build / Make</strong>: not started yet:").then_some(page)
    })
    .unwrap();
    assert!(page.contains("os=plan9"), "the reason names the labels: {page}");
    let action = admin.page(&format!("{path}/actions/Build/Make"));
    assert!(action.contains("<dt>Waiting</dt>") && action.contains("os=plan9"), "{action}");
}
