//! Permissions (issue 15, policy): built-in and custom roles against each
//! kind of operation, delegation between teams, secrets as resources, the
//! AWS API and the event stream, all through the real binaries.

use serde_json::{Value, json};
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, output_text};
use std::io::Write as _;
use std::process::{Output, Stdio};

/// A pipeline with a manual approval, whose actions optionally grant `secret`.
fn declaration(cluster: &Cluster, name: &str, secret: Option<&str>, approval: bool) -> String {
    let repo = cluster.dir.path().join("repo");
    if !repo.exists() {
        make_repo(&repo, &[("README", "x\n")]);
    }
    let capabilities = secret.map(|s| format!(r#", "capabilities": {{"secrets": ["{s}"]}}"#)).unwrap_or_default();
    let approve = r#"{"name": "Approve", "actions": [{"name": "Release",
        "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}]},"#;
    let stages = format!(
        r#"{approve}
        {{"name": "Deploy", "actions": [{{"name": "Go",
        "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}{capabilities}}}]}}"#,
        approve = if approval { approve } else { "" }
    );
    git_pipeline(name, "", &repo, &stages)
}

fn file(cluster: &Cluster, name: &str, text: &str) -> String {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", output_text(out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A refusal: exit 3 and a message naming the action and the resource.
fn refused(out: &Output, action: &str, resource: &str) -> String {
    let text = output_text(out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains(&format!("may not {action} on {resource}")), "{text}");
    text
}

fn admin(cluster: &Cluster, args: &[&str]) -> String {
    ok(&cluster.sluice(args))
}

/// A user with `role` (and `team`), and a token of theirs.
fn user(cluster: &Cluster, name: &str, role: &str, team: Option<&str>) -> String {
    let mut args = vec!["user", "create", name, "--role", role];
    if let Some(team) = team {
        args.extend(["--team", team]);
    }
    admin(cluster, &args);
    admin(cluster, &["token", "create", "--user", name]).trim().to_string()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn each_built_in_role_against_each_kind_of_operation() {
    let cluster = Cluster::new().start().unwrap();
    admin(&cluster, &["team", "create", "web"]);
    admin(&cluster, &["team", "create", "data"]);
    let site = file(&cluster, "site.json", &declaration(&cluster, "site", None, true));
    let etl = file(&cluster, "etl.json", &declaration(&cluster, "etl", None, true));
    admin(&cluster, &["pipeline", "create", &site, "--team", "web"]);
    admin(&cluster, &["pipeline", "create", &etl, "--team", "data"]);
    let vic = user(&cluster, "vic", "viewer", None);
    let dev = user(&cluster, "dev", "developer", Some("web"));
    let apr = user(&cluster, "apr", "approver", None);
    let ops = user(&cluster, "ops", "operator", None);

    // A viewer reads (state, logs, plugins) but cannot start, list secrets or manage.
    ok(&cluster.sluice_as(&vic, &["pipeline", "get", "site"]));
    ok(&cluster.sluice_as(&vic, &["pipeline", "state", "etl"]));
    ok(&cluster.sluice_as(&vic, &["plugin", "list"]));
    let text = refused(
        &cluster.sluice_as(&vic, &["pipeline", "start", "site"]),
        "codepipeline:StartPipelineExecution",
        "pipeline/site",
    );
    assert!(text.contains("vic (viewer) may not"), "{text}");
    refused(&cluster.sluice_as(&vic, &["secret", "list"]), "sluice:ListSecrets", "*");
    refused(&cluster.sluice_as(&vic, &["team", "create", "mine"]), "sluice:CreateTeam", "team/mine");

    // A developer runs and edits its team's pipelines only, never plugins or join tokens.
    ok(&cluster.sluice_as(&dev, &["pipeline", "start", "site"]));
    refused(&cluster.sluice_as(&dev, &["pipeline", "start", "etl"]), "codepipeline:StartPipelineExecution", "pipeline/etl");
    let wasm = file(&cluster, "x.wasm", "not a component");
    refused(&cluster.sluice_as(&dev, &["plugin", "push", &wasm]), "sluice:PushPlugin", "plugin/*");
    // Refused before the driver saw it, and still in the audit log.
    let log = admin(&cluster, &["audit", "list", "--operation", "PushPlugin", "--user", "dev", "--output", "json"]);
    assert!(log.contains("AccessDeniedException") && log.contains("plugin/*"), "{log}");
    refused(&cluster.sluice_as(&dev, &["agent-token", "create"]), "sluice:CreateAgentToken", "agent/*");
    refused(&cluster.sluice_as(&dev, &["secret", "delete", "db"]), "sluice:DeleteSecret", "secret/db");
    // Editing keeps the approval: allowed; removing it is not a developer's.
    ok(&cluster.sluice_as(&dev, &["pipeline", "update", &site]));
    let bare = file(&cluster, "site-bare.json", &declaration(&cluster, "site", None, false));
    refused(
        &cluster.sluice_as(&dev, &["pipeline", "update", &bare]),
        "sluice:EditApprovalAction",
        "pipeline/site/Approve/Release",
    );
    // Nor is taking it out by what surrounds it: a stage condition that
    // skips its stage on failure, or a changed stage after it.
    let site_text = std::fs::read_to_string(&site).unwrap();
    let skipping = site_text.replacen(
        r#"{"name": "Approve", "actions""#,
        r#"{"name": "Approve", "onFailure": {"result": "SKIP"}, "actions""#,
        1,
    );
    assert_ne!(skipping, site_text, "the declaration has its Approve stage");
    let skipping = file(&cluster, "site-skip.json", &skipping);
    refused(
        &cluster.sluice_as(&dev, &["pipeline", "update", &skipping]),
        "sluice:EditApprovalAction",
        "pipeline/site/Approve/Release",
    );
    let moved = site_text.replacen(r#"{"name": "Go","#, r#"{"name": "GoNow","#, 1);
    assert_ne!(moved, site_text, "the declaration has its Deploy action");
    let moved = file(&cluster, "site-moved.json", &moved);
    refused(
        &cluster.sluice_as(&dev, &["pipeline", "update", &moved]),
        "sluice:EditApprovalAction",
        "pipeline/site/Approve/Release",
    );
    refused(&cluster.sluice_as(&dev, &["pipeline", "update", &etl]), "codepipeline:UpdatePipeline", "pipeline/etl");
    // A pipeline a developer creates is its team's, and listed there.
    let mine = file(&cluster, "mine.json", &declaration(&cluster, "mine", None, false));
    ok(&cluster.sluice_as(&dev, &["pipeline", "create", &mine]));
    let web = json_of(&cluster.sluice(&["team", "show", "web", "--output", "json"]));
    assert_eq!(web["pipelines"], json!(["mine", "site"]), "{web}");
    assert_eq!(web["members"], json!(["dev"]), "{web}");
    let got = json_of(&cluster.sluice(&["pipeline", "get", "mine", "--output", "json"]));
    assert_eq!(got["metadata"]["team"], "web", "{got}");
    refused(
        &cluster.sluice_as(&dev, &["pipeline", "create", &mine, "--team", "data"]),
        "codepipeline:CreatePipeline",
        "pipeline/mine",
    );

    // An approver may approve (the refusal below is not a permission's: no
    // approval waits without an agent) but not start.
    let out = cluster.sluice_as(&apr, &["approval", "approve", "etl", "Approve", "Release"]);
    assert!(out.status.code() != Some(3) && !output_text(&out).contains("may not"), "{}", output_text(&out));
    refused(&cluster.sluice_as(&apr, &["pipeline", "start", "etl"]), "codepipeline:StartPipelineExecution", "pipeline/etl");

    // An operator does everything but who may do what, and but taking an
    // approval out of a pipeline (by an update or by deleting it): the
    // release's gate is the admin's (or a release manager's custom role).
    ok(&cluster.sluice_as(&ops, &["secret", "list"]));
    refused(
        &cluster.sluice_as(&ops, &["pipeline", "update", &bare]),
        "sluice:EditApprovalAction",
        "pipeline/site/Approve/Release",
    );
    refused(
        &cluster.sluice_as(&ops, &["pipeline", "delete", "site"]),
        "sluice:EditApprovalAction",
        "pipeline/site/Approve/Release",
    );
    admin(&cluster, &["pipeline", "update", &bare]);
    refused(&cluster.sluice_as(&ops, &["user", "create", "eve"]), "sluice:CreateUser", "user/eve");
    refused(&cluster.sluice_as(&ops, &["agent-token", "create"]), "sluice:CreateAgentToken", "agent/*");
    refused(
        &cluster.sluice_as(&ops, &["team", "grant", "web", "--to", "data", "--role", "admin"]),
        "sluice:GrantTeamRole",
        "team/web",
    );

    // whoami and can answer for the token.
    let me = json_of(&cluster.sluice_as(&dev, &["whoami", "--output", "json"]));
    assert_eq!(
        (me["user"].clone(), me["teams"].clone(), me["roles"].clone()),
        (json!("dev"), json!(["web"]), json!(["developer"]))
    );
    assert!(me["statements"].to_string().contains("sluice:ResourceTeam"), "{me}");
    let out = cluster.sluice_as(&dev, &["can", "StartPipelineExecution", "pipeline/site"]);
    assert!(ok(&out).contains("allowed by role developer: TeamPipelines"), "{}", output_text(&out));
    let out = cluster.sluice_as(&dev, &["can", "codepipeline:StartPipelineExecution", "pipeline/etl"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(output_text(&out).contains("no statement allows it"), "{}", output_text(&out));
    let out = cluster.sluice_as(&dev, &["can", "Nonsense", "pipeline/etl"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    // A role the user does not have, a team that does not exist: clear errors.
    let out = cluster.sluice(&["user", "create", "x", "--role", "root"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("unknown role \"root\""), "{}", output_text(&out));
    let out = cluster.sluice(&["user", "create", "x", "--team", "nowhere"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    // A deleted user's token stops at once; a role change follows at once.
    admin(&cluster, &["user", "set-role", "vic", "operator"]);
    ok(&cluster.sluice_as(&vic, &["secret", "list"]));
    admin(&cluster, &["user", "delete", "vic"]);
    assert_eq!(cluster.sluice_as(&vic, &["pipeline", "list"]).status.code(), Some(3));
}

#[test]
fn custom_roles_deny_beats_allow_and_roles_in_use_stay() {
    let cluster = Cluster::new().start().unwrap();
    let site = file(&cluster, "site.json", &declaration(&cluster, "site", None, false));
    let etl = file(&cluster, "etl.json", &declaration(&cluster, "etl", None, false));
    admin(&cluster, &["pipeline", "create", &site]);
    admin(&cluster, &["pipeline", "create", &etl]);
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["codepipeline:*", "sluice:GetExecutionLogs"], "Resource": "pipeline/*"},
        {"Effect": "Allow", "Action": "codepipeline:List*", "Resource": "*"},
        {"Sid": "NotEtl", "Effect": "Deny", "Action": "codepipeline:StartPipelineExecution", "Resource": "pipeline/etl"}]});
    let path = file(&cluster, "runner.json", &policy.to_string());
    admin(&cluster, &["role", "create", "runner", "--policy", &path]);
    let run = user(&cluster, "run", "runner", None);
    ok(&cluster.sluice_as(&run, &["pipeline", "start", "site"]));
    let text = refused(
        &cluster.sluice_as(&run, &["pipeline", "start", "etl"]),
        "codepipeline:StartPipelineExecution",
        "pipeline/etl",
    );
    assert!(text.contains("explicitly denied by role runner: NotEtl"), "{text}");
    let out = cluster.sluice_as(&run, &["can", "StartPipelineExecution", "pipeline/etl"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(output_text(&out).contains("denied by role runner: NotEtl"), "{}", output_text(&out));

    // Listed, shown, refused while in use, deleted when not.
    let roles = admin(&cluster, &["role", "list"]);
    for name in ["admin", "operator", "developer", "approver", "viewer", "runner"] {
        assert!(roles.contains(name), "{roles}");
    }
    assert!(admin(&cluster, &["role", "show", "runner"]).contains("NotEtl"));
    let out = cluster.sluice(&["role", "delete", "runner"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("in use (users: run"), "{}", output_text(&out));
    let out = cluster.sluice(&["role", "delete", "viewer"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    // Malformed policies are refused with the reason, and nothing is made.
    for (bad, why) in [
        (json!({"Statement": [{"Effect": "Permit", "Action": "*", "Resource": "*"}]}), "unknown Effect \"Permit\""),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "codepipeline:Strat*", "Resource": "*"}]}),
            "names no known action",
        ),
        (json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "pipelines/x"}]}), "KIND/NAME"),
        (
            json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "NotResource": "x"}]}),
            "unknown key \"NotResource\"",
        ),
    ] {
        let path = file(&cluster, "bad.json", &bad.to_string());
        let out = cluster.sluice(&["role", "create", "bad", "--policy", &path]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(output_text(&out).contains(why), "{}", output_text(&out));
    }
    assert!(!admin(&cluster, &["role", "list"]).contains("bad"));

    // Roles, teams and grants survive a restart.
    admin(&cluster, &["team", "create", "web"]);
    admin(&cluster, &["team", "add-member", "web", "run"]);
    let mut cluster = cluster;
    cluster.kill_controller();
    cluster.start_controller().unwrap();
    let text = refused(
        &cluster.sluice_as(&run, &["pipeline", "start", "etl"]),
        "codepipeline:StartPipelineExecution",
        "pipeline/etl",
    );
    assert!(text.contains("NotEtl"), "{text}");
    let me = json_of(&cluster.sluice_as(&run, &["whoami", "--output", "json"]));
    assert_eq!(me["teams"], json!(["web"]), "{me}");
}

#[test]
fn delegation_is_granted_used_listed_on_both_sides_and_revoked() {
    let cluster = Cluster::new().start().unwrap();
    for team in ["web", "qa", "data"] {
        admin(&cluster, &["team", "create", team]);
    }
    let site = file(&cluster, "site.json", &declaration(&cluster, "site", None, false));
    let etl = file(&cluster, "etl.json", &declaration(&cluster, "etl", None, false));
    admin(&cluster, &["pipeline", "create", &site, "--team", "web"]);
    admin(&cluster, &["pipeline", "create", &etl, "--team", "data"]);
    let quinn = user(&cluster, "quinn", "viewer", Some("qa"));
    let start = "codepipeline:StartPipelineExecution";
    refused(&cluster.sluice_as(&quinn, &["pipeline", "start", "site"]), start, "pipeline/site");

    // Web lends the developer role on its resources to qa.
    admin(&cluster, &["team", "grant", "web", "--to", "qa", "--role", "developer"]);
    ok(&cluster.sluice_as(&quinn, &["pipeline", "start", "site"]));
    refused(&cluster.sluice_as(&quinn, &["pipeline", "start", "etl"]), start, "pipeline/etl");
    let web = json_of(&cluster.sluice(&["team", "show", "web", "--output", "json"]));
    let qa = json_of(&cluster.sluice(&["team", "show", "qa", "--output", "json"]));
    assert_eq!(web["grantsGiven"][0]["to"], "qa", "{web}");
    assert_eq!(qa["grantsReceived"][0]["owner"], "web", "{qa}");
    assert_eq!(qa["grantsReceived"][0]["role"], "developer", "{qa}");
    assert_eq!(web["grantsGiven"][0]["grantedBy"], "admin", "{web}");
    let me = json_of(&cluster.sluice_as(&quinn, &["whoami", "--output", "json"]));
    assert_eq!(me["roles"], json!(["viewer", "developer"]), "{me}");
    assert!(me["statements"].to_string().contains("granted by team web to team qa"), "{me}");

    // Only an admin or a holder of sluice:GrantTeamRole on the owner grants.
    let lead_policy = json!({"Statement": [{"Effect": "Allow", "Action": "sluice:GrantTeamRole", "Resource": "team/web"},
                                           {"Effect": "Allow", "Action": "sluice:GetTeam", "Resource": "team/*"}]});
    let path = file(&cluster, "lead.json", &lead_policy.to_string());
    admin(&cluster, &["role", "create", "web-lead", "--policy", &path]);
    let lead = user(&cluster, "lead", "web-lead", None);
    ok(&cluster.sluice_as(&lead, &["team", "grant", "web", "--to", "qa", "--role", "approver"]));
    refused(
        &cluster.sluice_as(&lead, &["team", "grant", "data", "--to", "qa", "--role", "developer"]),
        "sluice:GrantTeamRole",
        "team/data",
    );
    refused(
        &cluster.sluice_as(&quinn, &["team", "grant", "web", "--to", "data", "--role", "admin"]),
        "sluice:GrantTeamRole",
        "team/web",
    );
    let out = cluster.sluice(&["team", "grant", "web", "--to", "qa", "--role", "developer"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    // A delegated role acts on web's resources only: dana (a developer of
    // qa, holding web's developer role through qa) puts web's secret into
    // web's pipeline, never into qa's own.
    set_secret(&cluster, "webdb", "s3cr3t-web", Some("web"));
    let dana = user(&cluster, "dana", "developer", Some("qa"));
    let qa_app = file(&cluster, "qa-app.json", &declaration(&cluster, "qa-app", None, false));
    admin(&cluster, &["pipeline", "create", &qa_app, "--team", "qa"]);
    let qa_app_secret = file(&cluster, "qa-app-secret.json", &declaration(&cluster, "qa-app", Some("webdb"), false));
    refused(&cluster.sluice_as(&dana, &["pipeline", "update", &qa_app_secret]), "sluice:UseSecret", "secret/webdb");
    let site_secret = file(&cluster, "site-secret.json", &declaration(&cluster, "site", Some("webdb"), false));
    ok(&cluster.sluice_as(&dana, &["pipeline", "update", &site_secret]));

    // Revoked: the next call is refused again, and neither side lists it.
    admin(&cluster, &["team", "revoke", "web", "--to", "qa", "--role", "developer"]);
    refused(&cluster.sluice_as(&quinn, &["pipeline", "start", "site"]), start, "pipeline/site");
    let qa = json_of(&cluster.sluice(&["team", "show", "qa", "--output", "json"]));
    assert_eq!(qa["grantsReceived"].as_array().unwrap().len(), 1, "{qa}");
    assert_eq!(qa["grantsReceived"][0]["role"], "approver", "{qa}");
    let out = cluster.sluice(&["team", "revoke", "web", "--to", "qa", "--role", "developer"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    // A team owning pipelines is not deleted from under them.
    let out = cluster.sluice(&["team", "delete", "web"]);
    assert!(output_text(&out).contains("owns pipelines (site)"), "{}", output_text(&out));
}

/// `sluice secret set NAME --pipelines * [--team T]` with the value on stdin.
fn set_secret(cluster: &Cluster, name: &str, value: &str, team: Option<&str>) {
    let mut args = vec!["secret", "set", name, "--pipelines", "*"];
    args.extend(team.map(|t| ["--team", t]).into_iter().flatten());
    let mut set =
        cluster.cli().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    set.stdin.take().unwrap().write_all(format!("{value}\n").as_bytes()).unwrap();
    ok(&set.wait_with_output().unwrap());
}

#[test]
fn granting_a_secret_needs_use_secret_at_create_and_at_every_update() {
    let cluster = Cluster::new().start().unwrap();
    admin(&cluster, &["team", "create", "web"]);
    set_secret(&cluster, "db", "hunter2-value", None);
    let dev = user(&cluster, "dev", "developer", Some("web"));
    let with_secret = file(&cluster, "site.json", &declaration(&cluster, "site", Some("db"), false));
    refused(&cluster.sluice_as(&dev, &["pipeline", "create", &with_secret]), "sluice:UseSecret", "secret/db");
    assert!(cluster.sluice(&["pipeline", "get", "site"]).status.code() != Some(0), "nothing was created");

    // The admin grants it; the developer's update that keeps the grant is refused too.
    admin(&cluster, &["pipeline", "create", &with_secret, "--team", "web"]);
    refused(&cluster.sluice_as(&dev, &["pipeline", "update", &with_secret]), "sluice:UseSecret", "secret/db");
    let other = file(&cluster, "site2.json", &declaration(&cluster, "site", Some("other"), false));
    set_secret(&cluster, "other", "x-value", None);
    refused(&cluster.sluice_as(&dev, &["pipeline", "update", &other]), "sluice:UseSecret", "secret/other");

    // A role that adds UseSecret on this one secret to the developer's.
    let policy = json!({"Statement": [
        {"Effect": "Allow", "Action": ["codepipeline:Get*", "codepipeline:List*"], "Resource": "*"},
        {"Effect": "Allow", "Action": "codepipeline:UpdatePipeline", "Resource": "pipeline/*",
         "Condition": {"StringEquals": {"sluice:ResourceTeam": "${sluice:PrincipalTeam}"}}},
        {"Effect": "Allow", "Action": "sluice:UseSecret", "Resource": "secret/db"}]});
    let path = file(&cluster, "db-dev.json", &policy.to_string());
    admin(&cluster, &["role", "create", "db-dev", "--policy", &path]);
    let dora = user(&cluster, "dora", "db-dev", Some("web"));
    ok(&cluster.sluice_as(&dora, &["pipeline", "update", &with_secret]));
    refused(&cluster.sluice_as(&dora, &["pipeline", "update", &other]), "sluice:UseSecret", "secret/other");

    // A secret of the developer's team is the developer's to grant.
    set_secret(&cluster, "webdb", "w-value", Some("web"));
    let own = file(&cluster, "own.json", &declaration(&cluster, "own", Some("webdb"), false));
    ok(&cluster.sluice_as(&dev, &["pipeline", "create", &own]));

    // No interface returns the value.
    for args in [&["pipeline", "get", "site", "--output", "json"][..], &["secret", "list", "--output", "json"]] {
        assert!(!admin(&cluster, args).contains("hunter2"), "{args:?}");
    }
}

#[test]
fn the_event_stream_carries_only_readable_pipelines() {
    let cluster = Cluster::new().start().unwrap();
    let site = file(&cluster, "site.json", &declaration(&cluster, "site", None, false));
    let etl = file(&cluster, "etl.json", &declaration(&cluster, "etl", None, false));
    admin(&cluster, &["pipeline", "create", &site]);
    admin(&cluster, &["pipeline", "create", &etl]);
    let policy = json!({"Statement": [
        {"Effect": "Allow", "Action": ["codepipeline:Get*", "sluice:GetExecutionLogs"], "Resource": "pipeline/site"}]});
    let path = file(&cluster, "site-reader.json", &policy.to_string());
    admin(&cluster, &["role", "create", "site-reader", "--policy", &path]);
    let ned = user(&cluster, "ned", "site-reader", None);

    let err = cluster.events_as(&ned, Some("etl")).err().expect("a stream of an unreadable pipeline is refused");
    assert!(err.to_string().contains("403"), "{err}");
    let mut all = cluster.events(None).unwrap();
    let mut mine = cluster.events_as(&ned, None).unwrap();
    let etl_run = admin(&cluster, &["pipeline", "start", "etl"]).trim().to_string();
    all.wait_for("etl's execution to start", WAIT, |e| e["pipeline"] == "etl" && e["executionId"] == etl_run.as_str())
        .unwrap();
    let site_run = admin(&cluster, &["pipeline", "start", "site"]).trim().to_string();
    // Events come in order: by site's, any of etl's would have come first.
    let seen = mine
        .wait_for("site's execution to start", WAIT, |e| {
            assert_ne!(e["pipeline"], "etl", "ned may not read etl: {e}");
            e["pipeline"] == "site" && e["executionId"] == site_run.as_str()
        })
        .unwrap();
    assert_eq!(seen["pipeline"], "site");
    // ListPipelines acts on `*` (as in IAM): a role naming only pipelines cannot list.
    refused(&cluster.sluice_as(&ned, &["pipeline", "list"]), "codepipeline:ListPipelines", "*");
}

#[test]
fn the_aws_api_refuses_and_filters_per_request() {
    let cluster = Cluster::new().start().unwrap();
    let site = file(&cluster, "site.json", &declaration(&cluster, "site", None, false));
    let etl = file(&cluster, "etl.json", &declaration(&cluster, "etl", None, false));
    admin(&cluster, &["pipeline", "create", &site]);
    admin(&cluster, &["pipeline", "create", &etl]);
    let viewer = sluice_tests::aws::access_key(&cluster, "vic", "viewer").unwrap();
    let r = sluice_tests::aws::script_json(&cluster, &viewer, "permissions.py", &["site"]).unwrap();
    assert_eq!(r["listed"], json!(["etl", "site"]), "{r}");
    assert_eq!(r["start"]["code"], "AccessDeniedException", "{r}");
    assert_eq!(r["start"]["status"], 403, "{r}");
    let message = r["start"]["message"].as_str().unwrap();
    assert!(message.contains("vic (viewer) may not codepipeline:StartPipelineExecution on pipeline/site"), "{r}");

    // A role reading one pipeline lists only it.
    let policy = json!({"Statement": [
        {"Effect": "Allow", "Action": "codepipeline:ListPipelines", "Resource": "*"},
        {"Effect": "Allow", "Action": ["codepipeline:Get*", "codepipeline:StartPipelineExecution"], "Resource": "pipeline/site"}]});
    let path = file(&cluster, "site-only.json", &policy.to_string());
    admin(&cluster, &["role", "create", "site-only", "--policy", &path]);
    let reader = sluice_tests::aws::access_key(&cluster, "rita", "site-only").unwrap();
    let r = sluice_tests::aws::script_json(&cluster, &reader, "permissions.py", &["site"]).unwrap();
    assert_eq!((r["listed"].clone(), r["start"].clone()), (json!(["site"]), Value::Null), "{r}");

    // The key follows its user's role at once, and dies with its user.
    admin(&cluster, &["user", "set-role", "rita", "viewer"]);
    let r = sluice_tests::aws::script_json(&cluster, &reader, "permissions.py", &["site"]).unwrap();
    assert_eq!(r["listed"], json!(["etl", "site"]), "{r}");
    assert_eq!(r["start"]["code"], "AccessDeniedException", "{r}");
    admin(&cluster, &["user", "delete", "rita"]);
    let r = sluice_tests::aws::script_json(&cluster, &reader, "permissions.py", &["site"]).unwrap();
    assert!(r["listed"]["code"].is_string(), "{r}");
    assert_ne!(r["start"], Value::Null, "{r}");
}

#[test]
fn an_approver_approves_only_where_a_policy_names_it() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    for name in ["site", "etl"] {
        let path = file(&cluster, &format!("{name}.json"), &declaration(&cluster, name, None, true));
        admin(&cluster, &["pipeline", "create", &path]);
    }
    // A custom approver of site's release only, and the built-in approver.
    let policy = json!({"Statement": [
        {"Effect": "Allow", "Action": ["codepipeline:Get*", "codepipeline:List*"], "Resource": "*"},
        {"Effect": "Allow", "Action": "codepipeline:PutApprovalResult", "Resource": "pipeline/site/Approve/Release"}]});
    let path = file(&cluster, "site-approver.json", &policy.to_string());
    admin(&cluster, &["role", "create", "site-approver", "--policy", &path]);
    let sam = user(&cluster, "sam", "site-approver", None);
    let apr = user(&cluster, "apr", "approver", None);
    let vic = user(&cluster, "vic", "viewer", None);
    for name in ["site", "etl"] {
        sluice_tests::wait_until(&format!("{name}'s approval to wait"), WAIT, || {
            let state = cluster.sluice_json(&["pipeline", "state", name]).ok()?;
            let stages = state["stageStates"].as_array()?;
            let approve = stages.iter().find(|s| s["stageName"] == "Approve")?;
            (approve["actionStates"][0]["latestExecution"]["status"] == "InProgress").then_some(())
        })
        .unwrap();
    }
    let approve =
        |token: &str, pipeline: &str| cluster.sluice_as(token, &["approval", "approve", pipeline, "Approve", "Release"]);
    let put = "codepipeline:PutApprovalResult";
    refused(&approve(&sam, "etl"), put, "pipeline/etl/Approve/Release");
    // Naming etl's execution under site's action changes nothing: the id
    // must be one of site's executions.
    let etl_state = cluster.sluice_json(&["pipeline", "state", "etl"]).unwrap();
    let etl_id = etl_state["stageStates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stageName"] == "Approve")
        .and_then(|s| s["latestExecution"]["pipelineExecutionId"].as_str())
        .expect("etl's waiting execution")
        .to_string();
    let out = cluster.sluice_as(&sam, &["approval", "approve", "site", "Approve", "Release", "--execution", &etl_id]);
    assert!(!out.status.success() && output_text(&out).contains("has no execution"), "{}", output_text(&out));
    refused(&approve(&vic, "site"), put, "pipeline/site/Approve/Release");
    ok(&approve(&sam, "site"));
    ok(&approve(&apr, "etl"));
}
