//! Several controllers, one leader (issue 18, reach): agents and the CLI
//! given several controller addresses find the one that serves and move on
//! by themselves; a list of dead addresses fails within the bound, naming
//! each. The real `sluice` and `sluice-agent` on loopback. The refusal of
//! a standby (not the leader) is tested with a real QUIC server in the
//! agent's unit tests (`agent/src/connection.rs`) and end to end by the
//! failover suite (ha).

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, make_repo, output_text, wait_until};
use std::path::Path;
use std::time::{Duration, Instant};

/// A closed UDP port on loopback: nothing answers QUIC there.
fn dead_udp() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().to_string()
}

/// A closed TCP port on loopback: connections are refused.
fn dead_tcp() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A pipeline checking `repo` out and running `echo` on an agent.
fn pipeline(name: &str, repo: &Path) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Say",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "echo reached"}}, "inputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// Starts an execution and waits until it succeeded.
fn run_once(cluster: &Cluster, name: &str) {
    let out = cluster.sluice(&["pipeline", "start", name]);
    assert!(out.status.success(), "{}", output_text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let e = cluster.execution_end(name, &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
}

/// The agents `agent list` shows connected.
fn connected(cluster: &Cluster) -> usize {
    cluster.agents_json().map(|a| a.iter().filter(|a| a["connected"] == Value::Bool(true)).count()).unwrap_or(0)
}

/// An agent given a dead address first enrolls and connects through the
/// live one and runs a job; when its controller comes back on the other
/// address it was given (a failover, as the agent sees it), it moves there
/// by itself, without enrolling again, and runs the next job.
#[test]
fn an_agent_given_several_controllers_finds_the_live_one_and_follows_it() {
    let mut cluster = Cluster::new().start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    cluster.create_pipeline("reach", &pipeline("reach", &repo));
    let first = cluster.fleet.clone();
    let second = dead_udp();
    let token = cluster.join_token(Some(1)).unwrap();
    let dir = cluster.agent_dir(0);
    let list = format!("{},{first},{second}", dead_udp());
    let agent = cluster.spawn_agent_at(&list, &dir, Some(&token), &[]).unwrap();
    let n = cluster.adopt_agent(agent);
    cluster.wait_for_agents(1).unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_log(n)));
    cluster.wait_for_executions_to_end("reach").unwrap();
    run_once(&cluster, "reach");
    let agent_id = std::fs::read(dir.join("agent.crt")).unwrap();

    // The controller moves to the agent's third address.
    cluster.kill_controller();
    cluster.fleet = second.clone();
    cluster.start_controller().unwrap();
    assert_eq!(cluster.fleet, second);
    wait_until("the agent to reach the controller at its new address", WAIT, || (connected(&cluster) == 1).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_log(n)));
    run_once(&cluster, "reach");
    let log = cluster.agent_log(n);
    assert!(log.contains(&format!("connected to {second}")), "{log}");
    assert_eq!(std::fs::read(dir.join("agent.crt")).unwrap(), agent_id, "the same identity");
}

/// `--api dead,live` works; only dead addresses fail within the bound with
/// an error naming each of them; a profile may hold the list.
#[test]
fn the_cli_given_several_controllers_uses_the_one_that_answers() {
    let cluster = Cluster::new().start().unwrap();
    let dead = format!("https://{}", dead_tcp());
    let list = format!("{dead},{}", cluster.api);
    let out = cluster.cli().env("SLUICE_API", &list).args(["pipeline", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.cli().args(["--api", &list, "agent", "list", "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    // A start, which is not repeated blindly: it carries its own
    // clientRequestToken, so it is safe to send to the next address.
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    cluster.create_pipeline("reach", &pipeline("reach", &repo));
    let out = cluster.cli().env("SLUICE_API", &list).args(["pipeline", "start", "reach"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));

    let other_dead = format!("https://{}", dead_tcp());
    let started = Instant::now();
    let all_dead = format!("{dead},{other_dead}");
    let out = cluster.cli().env("SLUICE_API", &all_dead).args(["pipeline", "list"]).output().unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no controller of") && stderr.contains("within 15s"), "{stderr}");
    assert!(stderr.contains(&dead) && stderr.contains(&other_dead), "names every address: {stderr}");
    assert!(took < Duration::from_secs(25), "gave up after {took:?}");

    // A profile holding the list.
    let config = cluster.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[profiles.ha]\napi = [\"{dead}\", \"{}\"]\nca = \"{}\"\n", cluster.api, cluster.ca_file().display()),
    )
    .unwrap();
    let out = cluster
        .cli()
        .env_remove("SLUICE_API")
        .env_remove("SLUICE_CA")
        .env("SLUICE_CONFIG", &config)
        .args(["--profile", "ha", "pipeline", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

/// An address whose certificate does not chain to the pinned CA (another
/// controller, with its own CA) is passed over: the TLS handshake fails
/// before any request (so before the token) is sent, and the CLI goes on to
/// the genuine one. Given only the impostor, the CLI fails saying why. (That
/// no byte of the token reaches such a server is checked with a recording
/// TLS server in `controller/src/ops/client.rs`.)
#[test]
fn the_cli_sends_no_credentials_to_an_address_whose_certificate_does_not_verify() {
    let cluster = Cluster::new().start().unwrap();
    let impostor = Cluster::new().start().unwrap();
    let list = format!("{},{}", impostor.api, cluster.api);
    let out = cluster.cli().env("SLUICE_API", &list).args(["agent", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.cli().env("SLUICE_API", &impostor.api).args(["agent", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate is not trusted"), "{}", output_text(&out));
}

/// A controller upgraded from a release that kept its CA, admin token and
/// worker key only as files (its store has no `cluster_keys`): it stores
/// its own files, so its agent comes back without enrolling again and runs
/// the next job, and the admin token still works.
#[test]
fn an_upgraded_controller_keeps_its_ca_and_its_agents() {
    let mut cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    cluster.create_pipeline("reach", &pipeline("reach", &repo));
    cluster.wait_for_executions_to_end("reach").unwrap();
    let data = cluster.data_dir();
    let ca = std::fs::read(data.join("ca/ca.crt")).unwrap();
    let (token, identity) = (cluster.token.clone(), std::fs::read(cluster.agent_dir(0).join("agent.crt")).unwrap());

    cluster.kill_controller();
    let db = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    db.execute_batch("DROP TABLE cluster_keys").unwrap();
    drop(db);
    cluster.start_controller().unwrap();
    assert_eq!(std::fs::read(data.join("ca/ca.crt")).unwrap(), ca, "the same CA");
    assert_eq!(cluster.token, token, "the same admin token");
    wait_until("the agent to come back", WAIT, || (connected(&cluster) == 1).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_log(0)));
    run_once(&cluster, "reach");
    assert_eq!(std::fs::read(cluster.agent_dir(0).join("agent.crt")).unwrap(), identity, "not enrolled again");
    let db = rusqlite::Connection::open(data.join("sluice.db")).unwrap();
    let keys: i64 = db.query_row("SELECT COUNT(*) FROM cluster_keys", [], |r| r.get(0)).unwrap();
    assert_eq!(keys, 3, "the CA, the admin token and the worker key are in the store now");
}
