//! The web console's pipelines and pipeline page (issue 16, pipe), over
//! HTTPS with curl as the browser: the real controller and agent, users
//! signed in by token, forms posted as a browser posts them. Beside each
//! change, the attacker's try: a form without the session's CSRF token,
//! one from another origin, and a viewer's forged but well-formed post,
//! each refused (403) with nothing changed.

use serde_json::Value;
use sluice_tests::browser::{Browser, csrf_of};
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, wait_until};
use std::process::Command;

/// Creates users with a role and returns their tokens, in order.
fn users(cluster: &Cluster, names: &[(&str, &str)]) -> Vec<String> {
    names.iter().map(|(user, role)| cluster.user_token(user, role)).collect()
}

/// A git checkout, then an approval two people must give.
fn gate(repo: &std::path::Path) -> String {
    git_pipeline(
        "gate",
        r#"{"name": "ENV", "defaultValue": "staging"}"#,
        repo,
        r#"{"name": "Approve", "actions": [{"name": "Release",
     "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"},
     "configuration": {"RequiredApprovals": "2"}}]}"#,
    )
}

fn execution(cluster: &Cluster, id: &str) -> Value {
    cluster.sluice_json(&["execution", "get", "gate", id]).unwrap()
}

fn wait_for_approval(cluster: &Cluster, id: &str) {
    wait_until("the approval to wait", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "gate", id]).ok()?;
        (e["stages"][1]["actions"][0]["status"] == "InProgress").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
}

fn decisions(cluster: &Cluster, id: &str) -> usize {
    execution(cluster, id)["stages"][1]["actions"][0]["approval"]["decisions"].as_array().map_or(0, Vec::len)
}

fn executions(cluster: &Cluster) -> usize {
    let history = cluster.sluice_json(&["pipeline", "history", "gate"]).unwrap();
    history["pipelineExecutionSummaries"].as_array().unwrap().len()
}

/// The text the page's message (after a change) says.
fn flash(page: &str) -> &str {
    let start = page.find(r#"class="flash done""#).expect("a message");
    let text = &page[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    &text[..text.find('<').unwrap()]
}

#[test]
fn a_pipeline_is_seen_stopped_started_and_approved_from_its_page() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let tokens = users(&cluster, &[("ann", "operator"), ("bob", "operator"), ("cy", "operator")]);
    let first = cluster.create_pipeline("gate", &gate(&repo));
    wait_for_approval(&cluster, &first);

    // Signing in lands on the pipelines: each stage's latest status.
    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let list = ann.page("/");
    assert!(list.contains(r#"<a href="/pipelines/gate">gate</a>"#), "{list}");
    assert!(list.contains(r#"data-stage="Source" data-status="Succeeded""#), "{list}");
    assert!(list.contains(r#"data-stage="Approve" data-status="InProgress""#), "{list}");

    let missing = ann.get("/pipelines/nope");
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.text().contains("nope"), "{}", missing.text());

    // The pipeline page: the run's stages, its actions, the approval.
    let page = ann.page("/pipelines/gate");
    assert!(page.contains("<h1>gate</h1>"), "{page}");
    assert!(page.contains(r#"data-action="Checkout" data-status="Succeeded""#), "{page}");
    assert!(page.contains(&format!(r#"href="/pipelines/gate/executions/{first}/actions/Source/Checkout""#)), "{page}");
    assert!(page.contains("Needs 2 more approvals (0 of 2)"), "{page}");
    for button in ["Start execution", "Stop execution", "Disable transition", "Approve", "Reject"] {
        assert!(page.contains(&format!(">{button}</button>")), "{button}: {page}");
    }

    // Stop, abandoning the approval.
    let stop = format!("/pipelines/gate/executions/{first}/stop");
    let answer = ann.submit("/pipelines/gate", &stop, &[("reason", "wrong build"), ("abandon", "yes")]);
    assert_eq!((answer.status, answer.location.as_deref()), (303, Some("/pipelines/gate")), "{answer:?}");
    let ended = cluster.execution_end("gate", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Stopped", "{ended}");

    // Start with a variable: the message names the new execution. The
    // same form sent twice (a double click) starts it once.
    let start = [("variable:ENV", "prod"), ("client_request_token", "form-1")];
    let answer = ann.submit("/pipelines/gate", "/pipelines/gate/start", &start);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = ann.page("/pipelines/gate");
    let second = flash(&page).strip_prefix("Started execution ").expect("the started execution").to_string();
    let answer = ann.submit("/pipelines/gate", "/pipelines/gate/start", &start);
    assert_eq!(answer.status, 303, "{answer:?}");
    assert_eq!(flash(&ann.page("/pipelines/gate")), format!("Started execution {second}"));
    assert_eq!(executions(&cluster), 2);
    let variables = &execution(&cluster, &second)["pipelineExecution"]["variables"];
    assert!(variables.as_array().unwrap().iter().any(|v| v["name"] == "ENV" && v["resolvedValue"] == "prod"), "{variables}");
    wait_for_approval(&cluster, &second);

    // Bob approves with a comment; the gate still needs one more.
    let bob = Browser::sign_in(&cluster, "bob", &tokens[1]);
    let approve = "/pipelines/gate/stages/Approve/actions/Release/approval";
    let fields = [("decision", "Approved"), ("comment", "ship it"), ("execution", second.as_str())];
    let answer = bob.submit("/pipelines/gate", approve, &fields);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = bob.page("/pipelines/gate");
    assert!(flash(&page).contains("approved by bob (1 of 2): ship it"), "{page}");
    assert!(page.contains("Needs 1 more approval (1 of 2)"), "{page}");
    assert!(page.contains("<strong>bob</strong> approved: ship it"), "{page}");

    // Cy's forms: one without the token, one from another site: refused,
    // nothing decided.
    let cy = Browser::sign_in(&cluster, "cy", &tokens[2]);
    let csrf = csrf_of(&cy.page("/pipelines/gate"));
    let answer = cy.send("POST", approve, &fields, &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.text().contains("CSRF token"), "{}", answer.text());
    let with_token = [("csrf", csrf.as_str()), ("decision", "Approved"), ("execution", second.as_str())];
    let answer = cy.send("POST", approve, &with_token, &["Origin: https://evil.example"]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.text().contains("Origin"), "{}", answer.text());
    let answer = cy.send("POST", "/pipelines/gate/start", &[("csrf", "not-the-token")], &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(decisions(&cluster, &second), 1);
    assert_eq!(executions(&cluster), 2);

    // The same form, as the page posts it: the gate opens.
    let answer = cy.send("POST", approve, &with_token, &[]);
    assert_eq!(answer.status, 303, "{answer:?}");
    let ended = cluster.execution_end("gate", &second, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Succeeded", "{ended}");
    let page = cy.page("/pipelines/gate");
    assert!(page.contains(r#"data-action="Release" data-status="Succeeded""#), "{page}");
    assert!(page.contains("approved by bob, cy"), "{page}");
}

#[test]
fn a_transition_is_disabled_with_a_reason_a_viewer_sees_it_without_a_single_button_and_a_rejection_fails() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let tokens = users(&cluster, &[("ann", "operator"), ("vic", "viewer")]);
    let first = cluster.create_pipeline("gate", &gate(&repo));
    wait_for_approval(&cluster, &first);

    // Ann disables the transition into Approve: watchers are told.
    let mut events = cluster.events(Some("gate")).unwrap();
    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let disable = "/pipelines/gate/stages/Approve/transition/disable";
    let answer = ann.submit("/pipelines/gate", disable, &[("reason", "")]);
    assert_eq!(answer.status, 400, "a reason is needed: {answer:?}");
    let answer = ann.submit("/pipelines/gate", disable, &[("reason", "release freeze")]);
    assert_eq!(answer.status, 303, "{answer:?}");
    let event = events.wait_for("the transition event", WAIT, |e| e["type"] == "transition").unwrap();
    assert_eq!((event["stage"].as_str(), event["enabled"].as_bool()), (Some("Approve"), Some(false)), "{event}");
    let page = ann.page("/pipelines/gate");
    assert_eq!(flash(&page), "Disabled the transition into Approve");
    assert!(page.contains("<strong>Transition disabled</strong>: release freeze — by ann"), "{page}");
    assert!(page.contains(">Enable transition</button>"), "{page}");

    // Vic reads everything and is offered nothing but signing out.
    let vic = Browser::sign_in(&cluster, "vic", &tokens[1]);
    let page = vic.page("/pipelines/gate");
    assert!(page.contains("release freeze") && page.contains("Needs 2 more approvals"), "{page}");
    assert_eq!(page.matches("<button").count(), 1, "only Sign out: {page}");
    assert!(page.contains(">Sign out</button>") && !page.contains("<details"), "{page}");
    assert!(vic.page("/").contains(r#"data-pipeline="gate""#));

    // A well-formed post by vic (the session's token, no other site) is
    // the driver's to refuse: 403, nothing changed.
    let csrf = csrf_of(&page);
    let approve = "/pipelines/gate/stages/Approve/actions/Release/approval";
    let forged = [("csrf", csrf.as_str()), ("decision", "Approved"), ("execution", first.as_str())];
    let answer = vic.send("POST", approve, &forged, &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.text().contains("vic"), "the refusal names the user: {}", answer.text());
    let answer = vic.send("POST", "/pipelines/gate/stages/Approve/transition/enable", &[("csrf", &csrf)], &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = vic.send("POST", "/pipelines/gate/start", &[("csrf", &csrf)], &[]);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(decisions(&cluster, &first), 0);
    assert_eq!(executions(&cluster), 1);
    assert!(ann.page("/pipelines/gate").contains("release freeze"));

    // Ann enables it again.
    let answer = ann.submit("/pipelines/gate", "/pipelines/gate/stages/Approve/transition/enable", &[]);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = ann.page("/pipelines/gate");
    assert!(!page.contains("Transition disabled") && page.contains(">Disable transition</button>"), "{page}");

    // A rejection with a comment fails the execution at once.
    let reject = [("decision", "Rejected"), ("comment", "not today"), ("execution", first.as_str())];
    let answer = ann.submit("/pipelines/gate", approve, &reject);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = ann.page("/pipelines/gate");
    assert_eq!(flash(&page), format!("Rejected execution {first}: rejected by ann: not today"));
    let ended = cluster.execution_end("gate", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Failed", "{ended}");
    let page = ann.page("/pipelines/gate");
    assert!(page.contains("<strong>ann</strong> rejected: not today"), "{page}");
    assert!(page.contains(r#"data-action="Release" data-status="Failed""#), "{page}");
}

#[test]
fn a_failed_stage_is_retried_and_a_stage_rolled_back_from_the_page() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let tokens = users(&cluster, &[("ann", "operator")]);
    // Fails until the marker exists.
    let marker = cluster.dir.path().join("fixed");
    let stages = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Flaky", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
            "configuration": {{"Commands": "test -e {m}"}}, "capabilities": {{"exec": ["sh"]}}}}]}}"#,
        m = marker.display()
    );
    let first = cluster.create_pipeline("flaky", &git_pipeline("flaky", "", &repo, &stages));
    let ended = cluster.execution_end("flaky", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Failed", "{ended}");

    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let page = ann.page("/pipelines/flaky");
    assert!(page.contains(r#"data-stage="Build" data-status="Failed""#), "{page}");
    assert!(page.contains(r#"data-action="Flaky" data-status="Failed""#), "{page}");
    assert!(page.contains(">Retry failed actions</button>"), "{page}");
    // Build never succeeded: nothing to roll back to, said instead of a form.
    assert!(page.contains("No recent execution in which Build succeeded: nothing to roll back to."), "{page}");
    assert!(!page.contains("Roll back stage"), "{page}");

    // Retry a stage that did not fail: the driver's refusal, shown.
    let retry_source = ann.submit("/pipelines/flaky", "/pipelines/flaky/stages/Source/retry", &[("execution", &first)]);
    assert!((400..500).contains(&retry_source.status), "{retry_source:?}");
    // The failed one, once fixed: the same execution goes on and succeeds.
    std::fs::write(&marker, "").unwrap();
    let answer = ann.submit("/pipelines/flaky", "/pipelines/flaky/stages/Build/retry", &[("execution", &first)]);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = ann.page("/pipelines/flaky");
    assert_eq!(flash(&page), format!("Retrying the failed actions of Build in execution {first}"));
    let ended = cluster.execution_end("flaky", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Succeeded", "{ended}");
    let page = ann.page("/pipelines/flaky");
    assert!(page.contains(r#"data-action="Flaky" data-status="Succeeded""#), "{page}");
    assert!(!page.contains("Retry failed actions"), "{page}");
    assert!(page.contains(">Roll back stage</button>") && !page.contains("nothing to roll back to"), "{page}");

    // Roll Build back to a target that never ran: refused, nothing started.
    let rollback = "/pipelines/flaky/stages/Build/rollback";
    let answer = ann.submit("/pipelines/flaky", rollback, &[("target", "no-such-execution")]);
    assert!((400..500).contains(&answer.status), "{answer:?}");
    assert_eq!(
        cluster.sluice_json(&["pipeline", "history", "flaky"]).unwrap()["pipelineExecutionSummaries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // By default, to the newest execution in which it succeeded.
    let answer = ann.submit("/pipelines/flaky", rollback, &[("target", "")]);
    assert_eq!(answer.status, 303, "{answer:?}");
    let page = ann.page("/pipelines/flaky");
    let rolled =
        flash(&page).strip_prefix("Rolling back Build in execution ").expect("the rollback's execution").to_string();
    let ended = cluster.execution_end("flaky", &rolled, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Succeeded", "{ended}");
    assert_eq!(ended["pipelineExecution"]["trigger"]["triggerType"], "RollbackStage", "{ended}");
    assert_eq!(ended["pipelineExecution"]["rollbackMetadata"]["rollbackTargetPipelineExecution"], first.as_str(), "{ended}");
}

/// Whether a stream (curl) ends within `seconds`; kills it if not.
fn ends_within(mut stream: std::process::Child, seconds: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if stream.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = stream.kill();
    let _ = stream.wait();
    false
}

/// Opens a stream and checks that it is open (connected, not refused).
fn open(stream: std::process::Child) -> std::process::Child {
    let mut stream = stream;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(stream.try_wait().unwrap().is_none(), "the stream is open");
    stream
}

#[test]
fn an_event_stream_ends_with_its_session_or_token_and_sessions_do_not_pile_up() {
    let cluster = Cluster::new().start().unwrap();
    let tokens = users(&cluster, &[("ann", "operator"), ("bob", "operator")]);
    let token_id = |user: &str| {
        let list = cluster.sluice_json(&["token", "list"]).unwrap();
        let token = list["tokens"].as_array().unwrap().iter().find(|t| t["user"] == user).unwrap();
        token["id"].as_str().unwrap().to_string()
    };

    // Sign-out ends the console's stream (within the 10 s tick: nothing
    // else happens meanwhile), and a state-only one alike.
    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let all = open(ann.stream("/console/events"));
    let state_only = open(ann.stream("/console/events?types=state"));
    let answer = ann.submit("/", "/sign-out", &[]);
    assert_eq!(answer.status, 303, "{answer:?}");
    assert!(ends_within(all, 20), "the stream outlived its sign-out");
    assert!(ends_within(state_only, 20), "the state stream outlived its sign-out");

    // Signing in again from one browser ends its previous session: the
    // old cookie (a copy a thief took) no longer opens a page.
    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let old = ann.cookie();
    let again = ann.send("POST", "/sign-in", &[("token", &tokens[0]), ("next", "/")], &[]);
    assert_eq!(again.status, 303, "{again:?}");
    assert_ne!(ann.cookie(), old);
    let thief = Browser::new(&cluster, "thief");
    let stolen = format!("Cookie: __Host-sluice-session={old}");
    let answer = thief.send("GET", "/", &[], &[&stolen]);
    assert_eq!((answer.status, answer.location.as_deref()), (303, Some("/sign-in?next=%2F")), "{answer:?}");
    assert_eq!(ann.get("/").status, 200);

    // A live refresh (x-sluice-live) is answered but is no visit: shown
    // here only as answered; the idle clock is the unit test's.
    assert_eq!(ann.send("GET", "/", &[], &["x-sluice-live: 1"]).status, 200);

    // Revoking the token ends the open console stream and the API's.
    let stream = open(ann.stream("/console/events?types=state"));
    let mut api = Command::new("curl");
    api.arg("--cacert").arg(cluster.ca_file()).args(["-sS", "-N", "-o", "/dev/null", "-H"]);
    api.arg(format!("Authorization: Bearer {}", tokens[0])).arg(format!("{}/v1/events", cluster.api));
    let api = open(api.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap());
    // Bob's streams are not ann's business: still open after.
    let bob = Browser::sign_in(&cluster, "bob", &tokens[1]);
    let bobs = open(bob.stream("/console/events"));
    assert!(cluster.sluice(&["token", "revoke", &token_id("ann")]).status.success());
    assert!(ends_within(stream, 20), "the console stream outlived its revoked token");
    assert!(ends_within(api, 20), "/v1/events outlived its revoked token");
    assert!(!ends_within(bobs, 2), "another user's stream ended too");

    // A failed sign-in claiming to be someone is recorded as nobody.
    let stranger = Browser::new(&cluster, "stranger");
    let claim = [("access_key_id", "admin"), ("secret_access_key", "guess"), ("next", "/")];
    assert_eq!(stranger.send("POST", "/sign-in", &claim, &[]).status, 401);
    let log = cluster.sluice_json(&["audit", "list", "--operation", "SignIn"]).unwrap();
    let failed: Vec<&Value> = log["records"].as_array().unwrap().iter().filter(|r| r["result"] != "ok").collect();
    assert!(!failed.is_empty(), "{log}");
    for record in failed {
        assert_eq!(record["user"], "-", "{record}");
        assert!(!record.to_string().contains("\"admin\""), "{record}");
    }
}

/// The hidden field `name` of the first form that has it.
fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page.find(&marker)? + marker.len();
    page[start..].split('"').next().map(str::to_string)
}

#[test]
fn only_those_the_approval_accepts_are_offered_it_and_a_stale_token_approves_nothing() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let tokens = users(&cluster, &[("ann", "operator"), ("bob", "operator")]);
    let declaration = git_pipeline(
        "gate",
        "",
        &repo,
        r#"{"name": "Approve", "actions": [{"name": "Release",
     "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"},
     "configuration": {"RequiredApprovals": "1", "Approvers": "user:ann"}}]}"#,
    );
    let first = cluster.create_pipeline("gate", &declaration);
    wait_for_approval(&cluster, &first);
    let approve = "/pipelines/gate/stages/Approve/actions/Release/approval";

    // Bob may call PutApprovalResult but is not among the approvers: no
    // form, the reason instead; his well-formed post is refused anyway.
    let bob = Browser::sign_in(&cluster, "bob", &tokens[1]);
    let page = bob.page("/pipelines/gate");
    assert!(!page.contains(">Approve</button>") && !page.contains(">Reject</button>"), "{page}");
    assert!(page.contains("You may not decide this approval: bob is not among the approvers"), "{page}");
    let csrf = csrf_of(&page);
    let forged = [("csrf", csrf.as_str()), ("decision", "Approved"), ("execution", first.as_str())];
    assert_eq!(bob.send("POST", approve, &forged, &[]).status, 403);

    // The list is one read, one audit record per view; each stage names
    // the commit it carries.
    let ann = Browser::sign_in(&cluster, "ann", &tokens[0]);
    let reads = || {
        let log = cluster.sluice_json(&["audit", "list", "--operation", "ListPipelineStates", "--limit", "100"]).unwrap();
        log["records"].as_array().unwrap().len()
    };
    let before = reads();
    let list = ann.page("/");
    assert_eq!(reads(), before + 1);
    assert!(list.contains(r#"<code class="stage-revision""#), "{list}");
    let log = cluster.sluice_json(&["audit", "list", "--operation", "GetPipelineState", "--limit", "100"]).unwrap();
    assert!(log["records"].as_array().unwrap().iter().all(|r| r["user"] != "ann"), "{log}");

    // Ann is: both buttons, and the form carries the current token.
    let page = ann.page("/pipelines/gate");
    assert!(page.contains(">Approve</button>") && page.contains(">Reject</button>"), "{page}");
    let token = hidden(&page, "token").expect("the approval's token");

    // A token that is not this approval's, with the execution id: refused.
    let wrong = [("decision", "Approved"), ("execution", first.as_str()), ("token", "not-the-token")];
    let answer = ann.submit("/pipelines/gate", approve, &wrong);
    assert!((400..500).contains(&answer.status), "{answer:?}");
    assert_eq!(decisions(&cluster, &first), 0);

    // Rejected, then retried: attempt 2 waits. The first attempt's token
    // (a page left open) approves nothing.
    let reject = [("decision", "Rejected"), ("execution", first.as_str()), ("token", token.as_str())];
    assert_eq!(ann.submit("/pipelines/gate", approve, &reject).status, 303);
    let ended = cluster.execution_end("gate", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Failed", "{ended}");
    let answer = ann.submit("/pipelines/gate", "/pipelines/gate/stages/Approve/retry", &[("execution", &first)]);
    assert_eq!(answer.status, 303, "{answer:?}");
    wait_for_approval(&cluster, &first);
    let stale = [("decision", "Approved"), ("execution", first.as_str()), ("token", token.as_str())];
    let answer = ann.submit("/pipelines/gate", approve, &stale);
    assert!((400..500).contains(&answer.status), "a stale token approved: {answer:?}");
    assert_eq!(execution(&cluster, &first)["pipelineExecution"]["status"], "InProgress");

    // The current page's token approves.
    let current = hidden(&ann.page("/pipelines/gate"), "token").expect("the approval's token");
    assert_ne!(current, token);
    let fresh = [("decision", "Approved"), ("execution", first.as_str()), ("token", current.as_str())];
    assert_eq!(ann.submit("/pipelines/gate", approve, &fresh).status, 303);
    let ended = cluster.execution_end("gate", &first, WAIT);
    assert_eq!(ended["pipelineExecution"]["status"], "Succeeded", "{ended}");
}
