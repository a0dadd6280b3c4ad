//! Cross-process tests of the fleet under faults: agents killed mid-action,
//! a controller killed again and again, an agent revoked while it works, a
//! network path that drops every packet for a while. Build the binaries
//! first: `cargo build --workspace --bins`.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, make_repo, output_text, postgres_by_default, wait_until};
use std::path::Path;
use std::time::Duration;

/// A pipeline whose Source stage checks `repo` out and whose Build stage
/// runs `commands` with the shell plugin; `extra` goes into the Build
/// action (e.g. `"retryOnAgentLost": true`).
fn pipeline(name: &str, repo: &Path, commands: &str, extra: &str) -> String {
    let action = serde_json::json!({
        "name": "Work",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": commands},
        "inputArtifacts": [{"name": "src"}],
        "capabilities": {"exec": ["sh"]},
    });
    let mut action = action.to_string();
    if !extra.is_empty() {
        action.insert_str(action.len() - 1, &format!(", {extra}"));
    }
    format!(
        r#"{{"pipeline": {{"name": "{name}", "executionMode": "PARALLEL", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{action}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// The Build action of an execution, as `execution get` shows it.
fn work(cluster: &Cluster, pipeline: &str, id: &str) -> Value {
    let e = cluster.sluice_json(&["execution", "get", pipeline, id]).unwrap();
    e["stages"][1]["actions"][0].clone()
}

/// Which started agent runs the Build action of an execution, once it runs.
fn running_on(cluster: &Cluster, ids: &[String], pipeline: &str, id: &str, marker: &Path) -> usize {
    wait_until("the action to start on an agent", WAIT, || {
        if !marker.exists() {
            return None;
        }
        let agent = work(cluster, pipeline, id)["agent"].as_str()?.to_string();
        ids.iter().position(|a| *a == agent)
    })
    .unwrap_or_else(|e| {
        let state = cluster.sluice_json(&["execution", "get", pipeline, id]);
        panic!("{e}: {state:?}\n{}", cluster.controller_log())
    })
}

#[test]
fn an_agent_killed_mid_action_loses_it_and_only_a_retryable_action_runs_again() {
    // Leases short enough for a quick test, long enough that a loaded
    // machine (the other tests run beside this one) loses nothing else.
    let mut cluster = Cluster::new().controller_args(&["--lease-timeout", "5s"]).start().unwrap();
    let ids = vec![cluster.add_agent(&[]).unwrap(), cluster.add_agent(&[]).unwrap()];
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);

    // The first attempt marks that it started and hangs; a second one
    // finishes at once.
    let runs = cluster.dir.path().join("runs");
    let commands = format!("echo ran >> {runs}\nif [ $(wc -l < {runs}) -eq 1 ]; then sleep 120; fi", runs = runs.display());
    let id = cluster.create_pipeline("retried", &pipeline("retried", &repo, &commands, r#""retryOnAgentLost": true"#));
    let victim = running_on(&cluster, &ids, "retried", &id, &runs);
    cluster.kill_agent(victim);
    let e = cluster.execution_end("retried", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}");
    let action = &e["stages"][1]["actions"][0];
    assert_eq!(action["attempt"], 2, "{action}");
    assert_eq!(action["lostOn"], serde_json::json!([ids[victim]]), "{action}");
    assert_eq!(action["agent"], ids[1 - victim].as_str(), "the retry runs on the other agent: {action}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 2);

    // Without retryOnAgentLost, losing the agent fails the action.
    let marker = cluster.dir.path().join("once");
    let commands = format!("touch {}\nsleep 120", marker.display());
    let id = cluster.create_pipeline("once", &pipeline("once", &repo, &commands, ""));
    let victim = running_on(&cluster, &ids, "once", &id, &marker);
    cluster.kill_agent(victim);
    let e = cluster.execution_end("once", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Failed", "{e}");
    let summary = e["pipelineExecution"]["statusSummary"].as_str().unwrap_or_default().to_string();
    let lost = format!("agent {} lost: no heartbeat for 5s; not retried", ids[victim]);
    assert!(summary.contains(&lost), "{summary}");
    let action = &e["stages"][1]["actions"][0];
    assert_eq!((action["status"].as_str(), action["attempt"].as_u64()), (Some("Lost"), Some(1)), "{action}");
    assert_eq!(action["errorDetails"]["code"], "AgentLost", "{action}");
}

#[test]
fn a_revoked_agent_is_cut_off_live_and_refused_at_every_later_handshake() {
    let mut cluster = Cluster::new().start().unwrap();
    let agent = cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let marker = cluster.dir.path().join("started");
    let commands = format!("touch {}\nsleep 120", marker.display());
    let id = cluster.create_pipeline("cut", &pipeline("cut", &repo, &commands, ""));
    wait_until("the action to start", WAIT, || marker.exists().then_some(())).unwrap();

    let out = cluster.sluice(&["agent", "revoke", &agent]);
    assert!(out.status.success(), "{}", output_text(&out));
    // Cut off at once: the agent process stops, its action is lost.
    let status = wait_until("the revoked agent to stop", Duration::from_secs(20), || cluster.agent_exit(0))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", cluster.agent_log(0), cluster.controller_log()));
    assert!(!status.success());
    assert!(cluster.agent_log(0).contains(&format!("agent {agent} was revoked")), "{}", cluster.agent_log(0));
    let e = cluster.execution_end("cut", &id, Duration::from_secs(20));
    let summary = e["pipelineExecution"]["statusSummary"].to_string();
    assert!(summary.contains(&format!("agent {agent} lost: it was revoked")), "{summary}");
    let agents = cluster.agents_json().unwrap();
    assert_eq!((agents[0]["state"].as_str(), agents[0]["connected"].as_bool()), (Some("revoked"), Some(false)));

    // Its identity is refused at the handshake, by a controller restarted
    // since too (the revocation list is stored), and it cannot be enabled.
    cluster.kill_controller();
    cluster.start_controller().unwrap();
    let dir = cluster.agent_dir(0);
    let again = cluster.spawn_agent(&dir, None, &[]).unwrap();
    let n = cluster.adopt_agent(again);
    let status = wait_until("the agent to give up", Duration::from_secs(30), || cluster.agent_exit(n)).unwrap();
    assert!(!status.success());
    assert!(cluster.agent_log(0).contains("refused this agent's certificate: it was revoked"), "{}", cluster.agent_log(0));
    let logged = wait_until("the controller to log the refusal", WAIT, || {
        let log = cluster.controller_log();
        (log.contains("TLS handshake failed") && log.contains("Revoked")).then_some(())
    });
    assert!(logged.is_ok(), "{}", cluster.controller_log());
    let out = cluster.sluice(&["agent", "enable", &agent]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enroll the host again"), "{}", output_text(&out));
}

/// The stored log of an execution: (stage/action, text) per line.
fn stored_log(cluster: &Cluster, pipeline: &str, id: &str) -> Vec<String> {
    let logs = cluster.sluice_json(&["logs", pipeline, "--execution", id]).unwrap();
    logs["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap().trim_end().to_string()).collect()
}

#[test]
fn an_agent_cut_off_by_the_network_reconnects_and_its_log_has_every_line_once() {
    // Leases of 15 s: heartbeats every 2.5 s; the agent gives a silent
    // controller up after 6 s, and is back well within the lease.
    let mut cluster = Cluster::new().controller_args(&["--lease-timeout", "15s"]).start().unwrap();
    let relay = sluice_tests::UdpRelay::start(&cluster.fleet).unwrap();
    let token = cluster.join_token(Some(1)).unwrap();
    let n = cluster.agent_count();
    let agent = cluster.spawn_agent_at(&relay.addr(), &cluster.agent_dir(n), Some(&token), &[]).unwrap();
    let n = cluster.adopt_agent(agent);
    cluster.wait_for_agents(1).unwrap();

    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    // Each line of Commands is its own shell: the loop is one line.
    let commands = "i=0; while [ $i -lt 250 ]; do i=$((i+1)); echo line-$i; sleep 0.05; done";
    let id = cluster.create_pipeline("chatty", &pipeline("chatty", &repo, commands, ""));
    wait_until("the log to flow", WAIT, || stored_log(&cluster, "chatty", &id).iter().any(|l| l == "line-20").then_some(()))
        .unwrap();
    relay.cut();
    // Handed to the agent while it is cut off: the job never reaches it.
    let out = cluster.sluice(&["pipeline", "start", "chatty"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let unsent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until("the agent to give the silent controller up", Duration::from_secs(20), || {
        cluster.agent_log(n).contains("has sent nothing for").then_some(())
    })
    .unwrap();
    // The outage lasts until a reconnect attempt (from the agent's new
    // socket) has been dropped too.
    wait_until("a reconnect attempt to be dropped", Duration::from_secs(20), || {
        (relay.dropped_from_new_sockets() > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_log(n)));
    relay.restore();

    let e = cluster.execution_end("chatty", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
    let action = &e["stages"][1]["actions"][0];
    assert_eq!(action["attempt"], 1, "the action was not lost: {action}");
    // The job that never reached the agent went out again, in its attempt.
    let e = cluster.execution_end("chatty", &unsent, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
    assert_eq!(e["stages"][0]["actions"][0]["attempt"], 1, "{e}");
    assert!(cluster.controller_log().contains("the job never reached the agent"), "{}", cluster.controller_log());
    let connected = cluster.agent_log(n).matches(" connected to ").count();
    assert!(connected >= 2, "the agent reconnected: {}", cluster.agent_log(n));
    let lines: Vec<String> = stored_log(&cluster, "chatty", &id).into_iter().filter(|l| l.starts_with("line-")).collect();
    let expected: Vec<String> = (1..=250).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");
}

#[test]
fn logs_are_followed_live_and_bounded_per_action() {
    let cluster = Cluster::new().controller_args(&["--max-action-log", "4KiB"]).agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    // Waits for a go-ahead file, so that `logs --follow` is provably
    // following before the lines are written.
    let go = cluster.dir.path().join("go");
    let commands = format!(
        "echo waiting\nwhile [ ! -e {go} ]; do sleep 0.05; done\ni=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line-$i-0123456789; done",
        go = go.display()
    );
    let id = cluster.create_pipeline("long", &pipeline("long", &repo, &commands, ""));
    wait_until("the action to start", WAIT, || {
        stored_log(&cluster, "long", &id).iter().any(|l| l == "waiting").then_some(())
    })
    .unwrap();
    let mut follow = std::process::Command::new(sluice_tests::bin("sluice"))
        .args(["logs", "long", "--execution", &id, "--follow"])
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", &cluster.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.starts_with("Source/Checkout: ") || first.contains("waiting"), "{first}");
    std::fs::write(&go, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let followed = format!("{first}{rest}");
    assert!(follow.wait().unwrap().success(), "logs --follow exits 0 when the execution ends");
    assert_eq!(cluster.execution_end("long", &id, WAIT)["pipelineExecution"]["status"], "Succeeded");

    // What was followed is what was stored: the first lines, then the
    // truncation note, each once.
    let stored = stored_log(&cluster, "long", &id);
    let printed: Vec<String> =
        followed.lines().map(|l| l.split_once(": ").map(|(_, t)| t.to_string()).unwrap_or_default()).collect();
    assert_eq!(printed, stored, "{followed}");
    let last = stored.last().unwrap();
    assert!(last.starts_with("[log truncated: the action wrote more than 4096 bytes"), "{last}");
    let work: Vec<&String> = stored.iter().filter(|l| l.starts_with("line-")).collect();
    assert!(work.len() > 100 && work.len() < 400, "{}", work.len());
    assert_eq!(work[0], "line-1-0123456789");
}

#[test]
fn a_controller_killed_ten_times_mid_execution_loses_nothing_and_runs_nothing_twice() {
    // Short leases so that the agent notices each killed controller fast.
    let mut cluster = Cluster::new().controller_args(&["--lease-timeout", "4s"]).agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let runs = cluster.dir.path().join("runs");
    // The action outlasts the longest pause of the schedule below (2 s) by
    // a second, so that every kill lands mid-execution however fast the
    // machine is.
    let commands = format!("echo #{{codepipeline.PipelineExecutionId}} >> {}\nsleep 3", runs.display());
    let mut ids = vec![cluster.create_pipeline("busy", &pipeline("busy", &repo, &commands, ""))];
    let started = std::time::Instant::now();
    // Fixed pauses, so that a failure can be replayed: the kills land in
    // every phase of an action (handed out, running, reporting). They are
    // the fault schedule, not a wait for something to happen: nothing
    // below depends on what finished during a pause.
    let pauses = [700u64, 1500, 300, 2000, 900, 100, 1800, 600, 1200, 400];
    for (round, pause_ms) in pauses.into_iter().enumerate() {
        let out = cluster.sluice(&["pipeline", "start", "busy"]);
        assert!(out.status.success(), "round {round}: {}", output_text(&out));
        ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        std::thread::sleep(Duration::from_millis(pause_ms));
        let history = cluster.sluice_json(&["pipeline", "history", "busy"]).unwrap();
        let in_progress =
            history["pipelineExecutionSummaries"].as_array().unwrap().iter().any(|e| e["status"] == "InProgress");
        assert!(in_progress, "round {round}: the kill must land mid-execution: {history}\n{}", cluster.controller_log());
        cluster.kill_controller();
        cluster.start_controller().unwrap();
    }
    let history = cluster.wait_for_executions_to_end("busy").unwrap();
    // No kill may cost a wait it need not: 60 s holds the schedule's 9.5 s
    // of pauses and eleven 3-s actions with room to spare. On PostgreSQL a
    // controller started after a kill -9 must also wait out the killed
    // leader's lease before it may lead (its TTL past the last renewal,
    // which came at most one renewal interval before the kill).
    let kills = pauses.len() as u32;
    let lease_wait = sluice::ha::lease::TTL + sluice::ha::lease::EVERY;
    let budget = Duration::from_secs(60) + if postgres_by_default() { kills * lease_wait } else { Duration::ZERO };
    assert!(started.elapsed() < budget, "took {:?} (budget {budget:?})", started.elapsed());
    let summaries = history["pipelineExecutionSummaries"].as_array().unwrap();
    assert_eq!(summaries.len(), ids.len(), "no execution is lost: {history}");
    let runs = std::fs::read_to_string(&runs).unwrap();
    for id in &ids {
        let e = cluster.execution_end("busy", id, WAIT);
        assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
        let attempts = e["stages"][1]["actions"][0]["attempt"].as_u64().unwrap();
        let ran = runs.lines().filter(|l| l == id).count() as u64;
        assert_eq!(ran, attempts, "execution {id}: the action ran {ran} times in {attempts} attempts");
    }
}

#[test]
fn an_agents_granted_programs_run_confined_and_reach_only_granted_ports() {
    let cluster = Cluster::new().agent_args(&["--process-reaper", "subreaper"]).agent(&[]).start().unwrap();
    let log = cluster.agent_log(0);
    assert!(log.contains("granted programs run under landlock, their leftovers killed by a subreaper"), "{log}");
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let connect = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo connected");

    // Outside the action's directories (and the harness's), nothing.
    let id = cluster.create_pipeline("nosy", &pipeline("nosy", &repo, "ls /root", ""));
    let e = cluster.execution_end("nosy", &id, WAIT);
    let action = &e["stages"][1]["actions"][0];
    assert_eq!(action["status"], "Failed", "{e}");
    let lines = stored_log(&cluster, "nosy", &id);
    assert!(lines.iter().any(|l| l.contains("Permission denied")), "{lines:?}");

    // TCP only to a port the action grants.
    let id = cluster.create_pipeline("offline", &pipeline("offline", &repo, &connect, ""));
    let e = cluster.execution_end("offline", &id, WAIT);
    assert_eq!(e["stages"][1]["actions"][0]["status"], "Failed", "{e}");
    let lines = stored_log(&cluster, "offline", &id);
    assert!(lines.iter().any(|l| l.contains("Permission denied")), "{lines:?}");
    let granted = pipeline("online", &repo, &connect, "")
        .replace(r#""exec":["sh"]"#, &format!(r#""exec":["sh"],"net":["tcp:{port}"]"#));
    assert!(granted.contains("\"net\""), "{granted}");
    let id = cluster.create_pipeline("online", &granted);
    let e = cluster.execution_end("online", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}");
}

/// A job's start is written with the next commit (issue 19, so that a
/// short action costs one write of its execution, not two), and within
/// 10 ms when nothing else commits: a long action that logs nothing (the
/// test plugin `hostile` asleep) still has its start in the store at once,
/// and a controller killed then comes back with the action as started on
/// its agent.
#[test]
fn the_start_of_a_long_action_is_written_while_nothing_else_happens() {
    let mut cluster = Cluster::new().start().unwrap();
    let agent = cluster.add_agent(&[]).unwrap();
    let hostile = sluice_test_plugins::test_plugin("hostile");
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let mut declaration: Value = serde_json::from_str(&pipeline("long", &repo, "true", "")).unwrap();
    declaration["pipeline"]["stages"][1]["actions"][0] = serde_json::json!({
        "name": "Work",
        "actionTypeId": {"category": "Test", "owner": "Custom", "provider": "hostile", "version": "1"},
        "configuration": {"Mode": "sleep"},
    });
    let id = cluster.create_pipeline("long", &declaration.to_string());
    // Started (the engine has it), and nothing logged that would commit.
    wait_until("the action to start", WAIT, || {
        (work(&cluster, "long", &id)["agent"].as_str() == Some(agent.as_str())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
    // The store, read beside the controller: the start is there.
    let db = cluster.data_dir().join("sluice.db");
    wait_until("the start in the store", Duration::from_secs(2), || {
        let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
        let state: String = conn.query_row("SELECT state FROM executions WHERE id = ?1", [&id], |r| r.get(0)).ok()?;
        let state: Value = serde_json::from_str(&state).ok()?;
        (state["stages"][1]["actions"][0]["agent"].as_str() == Some(agent.as_str())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
    cluster.kill_controller();
    cluster.start_controller().unwrap();
    let action = work(&cluster, "long", &id);
    assert_eq!(
        (action["status"].as_str(), action["agent"].as_str()),
        (Some("InProgress"), Some(agent.as_str())),
        "{action}"
    );
}
