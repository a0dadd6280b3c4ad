//! Cross-process tests: the real `sluice` and `sluice-agent` binaries on
//! loopback. Build them first: `cargo build --workspace --bins`.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, bin, git_pipeline, make_repo, output_text, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A pipeline whose Build runs on the agent labelled `role=build` and whose
/// Test runs on the one labelled `role=test`, consuming Build's artifact.
fn two_agent_pipeline(name: &str, repo: &Path, test_command: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}", "Branch": "main"}},
     "outputArtifacts": [{{"name": "src"}}], "namespace": "Src",
     "capabilities": {{"exec": ["git"]}}, "agentLabels": {{"role": "build"}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Compile",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "mkdir -p out\ncp app.sh out/app\nchmod +x out/app\necho built-from-#{{Src.CommitId}} > out/stamp"}},
     "inputArtifacts": [{{"name": "src"}}], "outputArtifacts": [{{"name": "bin", "files": ["out/**"]}}],
     "capabilities": {{"exec": ["sh"]}}, "agentLabels": {{"role": "build"}}}}]}},
  {{"name": "Test", "actions": [{{"name": "Run",
     "actionTypeId": {{"category": "Test", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "{test_command}"}},
     "inputArtifacts": [{{"name": "bin"}}],
     "capabilities": {{"exec": ["sh"]}}, "agentLabels": {{"role": "test"}}}}]}}
]}}}}"#,
        repo = repo.display(),
        test_command = test_command.replace('\n', "\\n"),
    )
}

/// Whether a process with exactly this command line runs on this machine.
fn process_running(argv: &[&str]) -> bool {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted))
}

fn action_state<'a>(state: &'a Value, stage: &str, action: &str) -> &'a Value {
    let stage = state["stageStates"].as_array().unwrap().iter().find(|s| s["stageName"] == stage).unwrap();
    let action = stage["actionStates"].as_array().unwrap().iter().find(|a| a["actionName"] == action).unwrap();
    &action["latestExecution"]
}

#[test]
fn artifact_crosses_agents_by_label_and_a_failing_test_fails_the_execution() {
    let mut cluster = Cluster::new().start().unwrap();
    let builder = cluster.add_agent(&["role=build"]).unwrap();
    let tester = cluster.add_agent(&["role=test"]).unwrap();
    assert_ne!(builder, tester);

    let repo = cluster.dir.path().join("repo");
    let commit = make_repo(&repo, &[("app.sh", "#!/bin/sh\necho hello from app\n")]);
    let file = cluster.dir.path().join("good.json");
    write(
        &file,
        &two_agent_pipeline("crossing", &repo, "./out/app | grep -q 'hello from app'\ngrep -q built-from- out/stamp"),
    );
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = created["pipelineExecutionId"].as_str().unwrap().to_string();

    // `start --wait` exits 0 only on success; the created execution too.
    let out = cluster.sluice(&["pipeline", "start", "crossing", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(first, second);
    // The execution that `create` started runs alongside; wait for it too.
    let exec = cluster.wait_for_executions_to_end("crossing").unwrap();
    let statuses: Vec<&str> =
        exec["pipelineExecutionSummaries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["Succeeded", "Succeeded"], "{exec}");

    let state = cluster.sluice_json(&["pipeline", "state", "crossing"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Compile")["agent"], builder.as_str());
    assert_eq!(action_state(&state, "Test", "Run")["agent"], tester.as_str());
    assert_eq!(action_state(&state, "Source", "Checkout")["status"], "Succeeded");
    assert!(action_state(&state, "Source", "Checkout")["summary"].as_str().unwrap().contains(&commit[..7]));

    // A pipeline whose test step fails ends Failed, and `--wait` says so.
    let file = cluster.dir.path().join("bad.json");
    write(&file, &two_agent_pipeline("failing", &repo, "./out/app\nexit 3"));
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["pipeline", "start", "failing", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let state = cluster.sluice_json(&["pipeline", "state", "failing"]).unwrap();
    let run = action_state(&state, "Test", "Run");
    assert_eq!(run["status"], "Failed");
    assert!(run["errorDetails"]["message"].as_str().unwrap().contains("exit 3"), "{run}");
    assert_eq!(state["latestExecution"]["status"], "Failed");

    // The live log of the test step reached the controller.
    let logs = cluster.sluice(&["logs", "crossing"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("Test/Run"), "{}", output_text(&logs));
}

#[test]
fn invalid_pipeline_files_are_refused_with_every_problem_and_exit_2() {
    let cluster = Cluster::new().start().unwrap();
    let file = cluster.dir.path().join("bad.json");
    write(
        &file,
        r#"{"pipeline": {"name": "bad name!", "stages": [
          {"name": "Only", "actions": [{"name": "A",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "true"}, "inputArtifacts": [{"name": "src2"}]}]}]}}"#,
    );
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipeline.name"), "{err}");
    assert!(err.contains("pipeline.stages"), "{err}");
    assert!(err.contains("pipeline.stages[0].actions[0].inputArtifacts[0]"), "{err}");

    write(&file, "{ this is not json");
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    // Nothing was created.
    let list = cluster.sluice_json(&["pipeline", "list"]).unwrap();
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 0);

    // Usage errors and a missing file are exit 2; a bad token is exit 3;
    // an unknown pipeline is exit 1.
    assert_eq!(cluster.sluice(&["pipeline", "create"]).status.code(), Some(2));
    assert_eq!(cluster.sluice(&["pipeline", "create", "/no/such/file.json"]).status.code(), Some(2));
    let out = Command::new(bin("sluice"))
        .args(["pipeline", "list", "--api", &cluster.api, "--token", "wrong"])
        .env("SLUICE_CA", cluster.ca_file())
        .env_remove("SLUICE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert_eq!(cluster.sluice(&["pipeline", "state", "nope"]).status.code(), Some(1));
}

#[test]
fn a_single_use_join_token_enrolls_once() {
    let cluster = Cluster::new().start().unwrap();
    let token = cluster.join_token(Some(1)).unwrap();
    let first = cluster.agents_home.path().join("a1");
    let mut a1 = cluster.spawn_agent(&first, Some(&token), &[]).unwrap();
    wait_until("the first agent to enroll", WAIT, || first.join("agent.crt").exists().then_some(())).unwrap();

    let second = cluster.agents_home.path().join("a2");
    let mut a2 = cluster.spawn_agent(&second, Some(&token), &[]).unwrap();
    let status = wait_until("the second agent to give up", WAIT, || a2.try_wait().ok().flatten()).unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(second.with_extension("log")).unwrap();
    assert!(log.contains("used up"), "{log}");
    assert!(!second.join("agent.crt").exists());
    assert!(cluster.controller_log().contains("enrollment refused"));
    let _ = a1.kill();
    let _ = a1.wait();
}

#[test]
fn a_finished_execution_survives_a_controller_kill() {
    let mut cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "durable\n")]);
    let file = cluster.dir.path().join("p.json");
    write(
        &file,
        &git_pipeline(
            "durable",
            "",
            &repo,
            r#"{"name": "Two", "actions": [{"name": "B", "inputArtifacts": [{"name": "src"}],
                "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#,
        ),
    );
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["pipeline", "start", "durable", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ended = cluster.wait_for_executions_to_end("durable").unwrap();
    let summaries = ended["pipelineExecutionSummaries"].as_array().unwrap();
    assert!(summaries.iter().all(|e| e["status"] == "Succeeded"), "{ended}");
    let before = cluster.sluice_json(&["pipeline", "state", "durable"]).unwrap();

    cluster.kill_controller();
    cluster.start_controller().unwrap();
    let after = cluster.sluice_json(&["pipeline", "state", "durable"]).unwrap();
    assert_eq!(after["stageStates"], before["stageStates"]);
    let history = cluster.sluice_json(&["pipeline", "history", "durable"]).unwrap();
    let ids: Vec<&str> = history["pipelineExecutionSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "Succeeded")
        .map(|e| e["pipelineExecutionId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&id.as_str()), "{history}");
    assert_eq!(ids.len(), 2);
    let got = cluster.sluice_json(&["pipeline", "get", "durable"]).unwrap();
    assert_eq!(got["pipeline"]["name"], "durable");

    // The agent reconnects by itself and the pipeline runs again.
    cluster.wait_for_agents(1).unwrap();
    let out = cluster.sluice(&["pipeline", "start", "durable", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn the_demo_runs_to_a_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(bin("sluice")).args(["demo", "--once", "--data-dir"]).arg(&data).output().unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("execution Succeeded"), "{text}");
    for stage in ["Source", "Build", "Test", "Deploy"] {
        assert!(text.contains(&format!("stage {stage} Succeeded")), "{text}");
    }
    let current = data.join("deploy/current");
    let target = std::fs::read_link(&current).unwrap();
    assert!(target.starts_with("releases"), "{}", target.display());
    let run = Command::new(current.join("dist/greet")).output().unwrap();
    assert!(String::from_utf8_lossy(&run.stdout).contains("Hello from Sluice (commit "), "{}", output_text(&run));
    assert!(text.contains("export SLUICE_TOKEN="), "{text}");
}

/// Connects to the fleet port with the given client identity; returns how
/// the first round trip on a control stream ended.
fn fleet_round_trip(
    cluster: &Cluster,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(cluster.data_dir().join("ca/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![sluice_protocol::ALPN_FLEET.to_vec()];
    let config =
        quinn::ClientConfig::new(std::sync::Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()));
    let fleet: std::net::SocketAddr = cluster.fleet.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        let attempt = async {
            let conn = endpoint
                .connect(fleet, sluice_protocol::CONTROLLER_SERVER_NAME)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let hello = sluice_protocol::FromAgent::Hello(sluice_protocol::Hello {
                protocol_version: sluice_protocol::PROTOCOL_VERSION,
                agent_version: "test".into(),
                labels: Default::default(),
                slots: 1,
                running: vec![],
                plugins: vec![],
                instance: 1,
            });
            send.write_all(&sluice_protocol::encode(&hello).unwrap()).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            recv.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok(())
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), attempt)
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()))
    })
}

/// A client certificate for `agent_id` signed by the given CA.
fn client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    agent_id: &str,
    not_after: time::OffsetDateTime,
) -> (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![agent_id.to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_after - time::Duration::days(30);
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    (vec![cert.der().clone()], key)
}

#[test]
fn the_fleet_port_refuses_foreign_and_expired_certificates() {
    let mut cluster = Cluster::new().start().unwrap();
    let agent_id = cluster.add_agent(&[]).unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(1);

    // The real CA, a valid certificate: the controller answers.
    let ca_dir = cluster.data_dir().join("ca");
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let (chain, key) = client_cert(&ca_pem, &ca_key, &agent_id, later);
    fleet_round_trip(&cluster, chain, key).expect("a certificate from the controller's CA is accepted");

    // Another CA, same agent id: refused at the handshake.
    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign = params.self_signed(&foreign_key).unwrap();
    let (chain, key) = client_cert(&foreign.pem(), &foreign_key.serialize_pem(), &agent_id, later);
    let err = fleet_round_trip(&cluster, chain, key).expect_err("a foreign CA must be refused");
    assert!(!err.is_empty());

    // The right CA, but expired: refused too.
    let (chain, key) = client_cert(&ca_pem, &ca_key, &agent_id, time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    fleet_round_trip(&cluster, chain, key).expect_err("an expired certificate must be refused");

    // The controller logs why, once it has processed the failed handshakes.
    let logged = wait_until("the controller to log both refusals", WAIT, || {
        let log = cluster.controller_log();
        (log.contains("TLS handshake failed")
            && (log.contains("UnknownIssuer") || log.contains("unknown issuer") || log.contains("BadCertificate"))
            && (log.contains("Expired") || log.contains("expired")))
        .then_some(())
    });
    assert!(logged.is_ok(), "{}", cluster.controller_log());
    cluster.kill_controller();
}

#[test]
fn a_misbehaving_plugin_fails_its_own_action_and_the_agent_keeps_serving() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let hostile = sluice_test_plugins::test_plugin("hostile");
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostile@1 registered"), "{}", output_text(&out));
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("already registered"), "{}", output_text(&out));
    // Something that is not a component is refused as invalid input.
    let junk = cluster.dir.path().join("junk.wasm");
    write(&junk, "not wasm");
    assert_eq!(cluster.sluice(&["plugin", "push", junk.to_str().unwrap()]).status.code(), Some(2));
    // A component of another world is refused with the reason.
    let other = sluice_test_plugins::test_plugin("other-world");
    let out = cluster.sluice(&["plugin", "push", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("does not export sluice:plugin/action"), "{}", output_text(&out));
    // A plugin built against the first released interface registers, and
    // says which version it was built against.
    let compat = sluice_test_plugins::test_plugin("compat-0-1");
    let out = cluster.sluice(&["plugin", "push", compat.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("compat-0-1@1 registered"), "{}", output_text(&out));
    let described = cluster.sluice_json(&["plugin", "describe", "compat-0-1@1"]).unwrap();
    assert_eq!(described["info"]["interfaceVersion"], "0.1.0", "{described}");

    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let file = cluster.dir.path().join("hostile.json");
    write(
        &file,
        &git_pipeline(
            "hostile",
            r#"{"name": "MODE", "defaultValue": "ok"}"#,
            &repo,
            r##"{"name": "Misbehave", "actions": [{"name": "Run", "inputArtifacts": [{"name": "src"}],
                "actionTypeId": {"category": "Test", "owner": "Custom", "provider": "hostile", "version": "1"},
                "configuration": {"Mode": "#{variables.MODE}"}}]}"##,
        ),
    );
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));

    for (mode, reason) in [
        ("trap", "plugin trapped"),
        ("memory", "plugin exceeded its memory limit"),
        ("read-host-path", "cannot read \\\"/etc/passwd\\\""),
    ] {
        let out = cluster.sluice(&["pipeline", "start", "hostile", "--variable", &format!("MODE={mode}"), "--wait"]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", output_text(&out));
        let state = cluster.sluice_json(&["pipeline", "state", "hostile"]).unwrap();
        let run = action_state(&state, "Misbehave", "Run");
        assert_eq!(
            run["status"],
            "Failed",
            "{mode}: {run}\n{}",
            cluster.sluice_json(&["pipeline", "history", "hostile"]).unwrap()
        );
        assert!(run["errorDetails"]["message"].to_string().contains(reason), "{mode}: {run}");
    }
    // The same agent still serves.
    let out = cluster.sluice(&["pipeline", "start", "hostile", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let agents = cluster.agents_json().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["connected"], true);
}

#[test]
fn an_action_running_across_a_controller_kill_finishes_once() {
    let mut cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let count = cluster.dir.path().join("runs.txt");
    let file = cluster.dir.path().join("p.json");
    let slow = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Slow", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
            "configuration": {{"Commands": "echo ran >> {}\nsleep 3"}}, "capabilities": {{"exec": ["sh"]}}}}]}}"#,
        count.display()
    );
    write(&file, &git_pipeline("across", "", &repo, &slow));
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["pipelineExecutionId"].as_str().unwrap().to_string();

    // Kill the controller while the slow action runs on the agent.
    wait_until("the slow action to start", WAIT, || count.exists().then_some(())).unwrap();
    cluster.kill_controller();
    cluster.start_controller().unwrap();

    // The agent reconnects, reports the action, and its result counts.
    let status = wait_until("the execution to end", Duration::from_secs(90), || {
        let e = cluster.sluice_json(&["pipeline", "history", "across"]).ok()?;
        let status = e["pipelineExecutionSummaries"][0]["status"].as_str()?.to_string();
        (status != "InProgress").then_some(status)
    })
    .unwrap();
    assert_eq!(status, "Succeeded", "{}", cluster.controller_log());
    let history = cluster.sluice_json(&["pipeline", "history", "across"]).unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["pipelineExecutionId"], id.as_str());
    let runs = std::fs::read_to_string(&count).unwrap();
    assert_eq!(runs.lines().count(), 1, "the action ran more than once");
}

#[test]
fn agents_renew_their_certificates_over_the_live_connection() {
    // Certificates of 15 s, short for a quick test, long enough that a
    // loaded machine has seconds between the steps below: renewed after
    // 10.5 to 13.5 s, renewed again (the files change under the test)
    // after 21 s at the earliest.
    const LIFETIME: Duration = Duration::from_secs(15);
    let lifetime = format!("{}s", LIFETIME.as_secs());
    let cluster = Cluster::new().controller_args(&["--agent-cert-lifetime", &lifetime]).start().unwrap();
    let started = std::time::Instant::now();
    let mut cluster = cluster;
    cluster.add_agent(&[]).unwrap();
    let dir = cluster.agent_dir(0);
    let first = std::fs::read_to_string(dir.join("agent.crt")).unwrap();
    let first_key = std::fs::read_to_string(dir.join("agent.key")).unwrap();
    wait_until("the certificate to be renewed", WAIT, || {
        (std::fs::read_to_string(dir.join("agent.crt")).ok()? != first).then_some(())
    })
    .unwrap();
    assert!(started.elapsed() >= LIFETIME / 2, "renewed too early: {:?}", started.elapsed());
    assert!(cluster.controller_log().contains("agent certificate renewed"));
    cluster.wait_for_agents(1).unwrap();
    assert_ne!(first_key, std::fs::read_to_string(dir.join("agent.key")).unwrap(), "a renewal makes a fresh key");

    // The thing under test is the clock itself: wait until the first
    // certificate has expired, by its own notAfter (read by openssl, so
    // that no connection with the agent's identity disturbs the agent
    // before then).
    let first_file = cluster.dir.path().join("first.crt");
    write(&first_file, &first);
    wait_until("the first certificate to expire", WAIT, || {
        let valid = Command::new("openssl")
            .args(["x509", "-noout", "-checkend", "0", "-in"])
            .arg(&first_file)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running openssl");
        (!valid.success()).then_some(())
    })
    .unwrap();
    // Then the renewed identity on disk still opens a fleet connection: it
    // is what the agent uses when it next connects.
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_file(dir.join("agent.crt")).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("agent.key")).unwrap();
    fleet_round_trip(&cluster, chain, key).expect("the renewed certificate is accepted");
    let old = vec![rustls::pki_types::CertificateDer::from_pem_slice(first.as_bytes()).unwrap()];
    let old_key = rustls::pki_types::PrivateKeyDer::from_pem_slice(first_key.as_bytes()).unwrap();
    // The controller reads the same clock; look a few seconds in case it
    // is a tick behind.
    wait_until("the first certificate to be refused as expired", Duration::from_secs(10), || {
        fleet_round_trip(&cluster, old.clone(), old_key.clone_key()).err()
    })
    .unwrap();
}

#[test]
fn operators_list_and_revoke_tokens_and_drain_disable_and_enable_agents() {
    let mut cluster = Cluster::new().start().unwrap();

    // Join tokens: listed without secrets, revoked for good.
    let token = cluster.join_token(Some(2)).unwrap();
    let tokens = cluster.sluice_json(&["agent-token", "list"]).unwrap();
    let listed = &tokens["agentTokens"][0];
    assert_eq!((listed["state"].as_str(), listed["usesLeft"].as_u64()), (Some("valid"), Some(2)), "{tokens}");
    assert!(!tokens.to_string().contains(token.rsplit('.').next().unwrap()), "a secret was listed");
    let id = listed["id"].as_str().unwrap().to_string();
    let out = cluster.sluice(&["agent-token", "revoke", &id]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(cluster.sluice_json(&["agent-token", "list"]).unwrap()["agentTokens"][0]["state"], "revoked");
    let refused = cluster.agents_home.path().join("refused");
    let mut agent = cluster.spawn_agent(&refused, Some(&token), &[]).unwrap();
    let status = wait_until("the agent to give up", WAIT, || agent.try_wait().ok().flatten()).unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(refused.with_extension("log")).unwrap();
    assert!(log.contains("was revoked"), "{log}");
    assert_eq!(cluster.sluice(&["agent-token", "revoke", "jt-nope"]).status.code(), Some(1));

    // A drained agent finishes its work and takes none; enabled, it does.
    let agent_id = cluster.add_agent(&[]).unwrap();

    // Where work and its secrets go is the admin's decision: an operator
    // can neither label a host nor mint or revoke a join token.
    assert!(cluster.sluice(&["user", "create", "oscar"]).status.success());
    let out = cluster.sluice(&["token", "create", "--user", "oscar"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let oscar = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let as_oscar = |args: &[&str]| {
        std::process::Command::new(sluice_tests::bin("sluice"))
            .args(args)
            .env("SLUICE_API", &cluster.api)
            .env("SLUICE_CA", cluster.ca_file())
            .env("SLUICE_TOKEN", &oscar)
            .output()
            .unwrap()
    };
    let out = as_oscar(&["agent", "label", &agent_id, "env=prod"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    // The refusal names the operation and the resource (issue 15).
    let refusal = format!("oscar (operator) may not sluice:LabelAgent on agent/{agent_id}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&refusal), "{}", output_text(&out));
    let out = as_oscar(&["agent-token", "create", "--allow-agent-labels", "env"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let kept = cluster.join_token(Some(1)).unwrap();
    let tokens = cluster.sluice_json(&["agent-token", "list"]).unwrap();
    let kept_id = tokens["agentTokens"].as_array().unwrap().iter().find(|t| t["state"] == "valid").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = as_oscar(&["agent-token", "revoke", &kept_id]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let agents = cluster.agents_json().unwrap();
    assert!(agents[0]["labels"].get("env").is_none(), "the operator's label was applied: {agents:?}");
    let tokens = cluster.sluice_json(&["agent-token", "list"]).unwrap();
    let states: Vec<_> = tokens["agentTokens"].as_array().unwrap().iter().map(|t| t["state"].clone()).collect();
    assert_eq!(states.iter().filter(|s| **s == "valid").count(), 1, "{tokens}");
    drop(kept);
    // The admin may do all three.
    let out = cluster.sluice(&["agent", "label", &agent_id, "env=prod"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(cluster.agents_json().unwrap()[0]["labels"]["env"], "prod");
    let out = cluster.sluice(&["agent-token", "revoke", &kept_id]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["agent", "label", &agent_id, "env-"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["agent", "drain", &agent_id]);
    assert!(out.status.success(), "{}", output_text(&out));
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let file = cluster.dir.path().join("p.json");
    let noop = r#"{"name": "Two", "actions": [{"name": "B", "inputArtifacts": [{"name": "src"}],
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    write(&file, &git_pipeline("drained", "", &repo, noop));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    let reason = wait_until("the action to wait with a reason", WAIT, || {
        let state = cluster.sluice_json(&["pipeline", "state", "drained"]).ok()?;
        action_state(&state, "Source", "Checkout")["waitingReason"].as_str().map(str::to_string)
    })
    .unwrap();
    assert!(reason.contains("taking work"), "{reason}");
    // A pipeline with an execution in progress is not deleted.
    let out = cluster.sluice(&["pipeline", "delete", "drained"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in progress"), "{}", output_text(&out));
    assert!(cluster.sluice(&["agent", "enable", &agent_id]).status.success());
    let out = cluster.sluice(&["pipeline", "start", "drained", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));

    // A disabled agent is cut off at once and refused until enabled.
    assert!(cluster.sluice(&["agent", "disable", &agent_id]).status.success());
    wait_until("the agent to be cut off", WAIT, || {
        let agents = cluster.agents_json().ok()?;
        (agents[0]["connected"] == false && agents[0]["state"] == "disabled").then_some(())
    })
    .unwrap();
    assert!(cluster.sluice(&["agent", "enable", &agent_id]).status.success());
    cluster.wait_for_agents(1).unwrap();
    assert_eq!(cluster.sluice(&["agent", "drain", "ag-nope"]).status.code(), Some(1));
    let _ = agent.wait();
}

#[test]
fn pipelines_are_updated_by_version_and_deleted() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let noop = r#"{"name": "Two", "actions": [{"name": "B", "inputArtifacts": [{"name": "src"}],
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let file = cluster.dir.path().join("p.json");
    write(&file, &git_pipeline("versioned", "", &repo, noop));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());

    write(&file, &git_pipeline("versioned", r#"{"name": "ENV", "defaultValue": "prod"}"#, &repo, noop));
    let out = cluster.sluice(&["pipeline", "update", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"), "{}", output_text(&out));
    let v2 = cluster.sluice_json(&["pipeline", "get", "versioned"]).unwrap();
    assert_eq!(v2["pipeline"]["version"], 2);
    assert_eq!(v2["pipeline"]["variables"][0]["name"], "ENV");
    let v1 = cluster.sluice_json(&["pipeline", "get", "versioned", "--version", "1"]).unwrap();
    assert_eq!(v1["pipeline"]["version"], 1);
    assert!(v1["pipeline"]["variables"].is_null(), "{v1}");
    // The next execution runs the new version.
    let out = cluster.sluice(&["pipeline", "start", "versioned", "--variable", "ENV=test", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.sluice_json(&["pipeline", "history", "versioned"]).unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["pipelineVersion"], 2);

    // A pipeline cannot be renamed by an update; an invalid one changes nothing.
    write(&file, &git_pipeline("other", "", &repo, noop));
    let out = cluster.sluice(&["pipeline", "update", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    write(&file, &git_pipeline("versioned", "", &repo, r#"{"name": "Two", "actions": []}"#));
    assert_eq!(cluster.sluice(&["pipeline", "update", file.to_str().unwrap()]).status.code(), Some(2));
    assert_eq!(cluster.sluice_json(&["pipeline", "get", "versioned"]).unwrap()["pipeline"]["version"], 2);

    // Deleted once nothing runs: gone with its history.
    cluster.wait_for_executions_to_end("versioned").unwrap();
    let out = cluster.sluice(&["pipeline", "delete", "versioned"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(cluster.sluice_json(&["pipeline", "list"]).unwrap()["pipelines"].as_array().unwrap().len(), 0);
    assert_eq!(cluster.sluice(&["pipeline", "history", "versioned"]).status.code(), Some(1));
    assert_eq!(cluster.sluice(&["pipeline", "delete", "versioned"]).status.code(), Some(1));
}

#[test]
fn executions_stop_by_waiting_or_by_abandoning() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let stages = r#"{"name": "Build", "actions": [{"name": "Slow", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "sleep #{variables.SLEEP}"}, "capabilities": {"exec": ["sh"]}}]},
        {"name": "After", "actions": [{"name": "Never", "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let file = cluster.dir.path().join("p.json");
    write(&file, &git_pipeline("stoppable", r#"{"name": "SLEEP", "defaultValue": "0"}"#, &repo, stages));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    // Let the first execution end, so that the state below is ours.
    cluster.wait_for_executions_to_end("stoppable").unwrap();

    let run_slow = |seconds: &str| -> String {
        let out = cluster.sluice(&["pipeline", "start", "stoppable", "--variable", &format!("SLEEP={seconds}")]);
        assert!(out.status.success(), "{}", output_text(&out));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        wait_until("the slow action to run on the agent", WAIT, || {
            let state = cluster.sluice_json(&["pipeline", "state", "stoppable"]).ok()?;
            let slow = action_state(&state, "Build", "Slow");
            (slow["status"] == "InProgress" && slow["agent"].is_string()).then_some(())
        })
        .unwrap();
        id
    };

    // Abandon: the running action is abandoned at once.
    let id = run_slow("20");
    let started = std::time::Instant::now();
    let out = cluster.sluice(&["pipeline", "stop", "stoppable", &id, "--mode", "abandon", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Stopped"), "{}", output_text(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "abandon took {:?}", started.elapsed());
    let state = cluster.sluice_json(&["pipeline", "state", "stoppable"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Slow")["status"], "Abandoned");
    // The agent cancelled the plugin: its `sleep 20` is gone long before 20 s.
    wait_until("the abandoned program to be killed", Duration::from_secs(10), || {
        (!process_running(&["sleep", "20"])).then_some(())
    })
    .unwrap();

    // Wait: the running action finishes, the next stage never starts.
    let id = run_slow("2");
    let out = cluster.sluice(&["pipeline", "stop", "stoppable", &id, "--reason", "release freeze", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.sluice_json(&["pipeline", "history", "stoppable"]).unwrap();
    let latest = &history["pipelineExecutionSummaries"][0];
    assert_eq!((latest["status"].as_str(), latest["statusSummary"].as_str()), (Some("Stopped"), Some("release freeze")));
    let state = cluster.sluice_json(&["pipeline", "state", "stoppable"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Slow")["status"], "Succeeded");
    // Stopping an execution that has ended is refused.
    assert_eq!(cluster.sluice(&["pipeline", "stop", "stoppable", &id]).status.code(), Some(1));
}

#[test]
fn superseded_mode_lets_the_newest_waiting_execution_through() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let stages = r#"{"name": "Build", "actions": [{"name": "Slow", "inputArtifacts": [{"name": "src"}],
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "sleep 2"}, "capabilities": {"exec": ["sh"]}}]}"#;
    let file = cluster.dir.path().join("p.json");
    write(&file, &git_pipeline("superseding", "", &repo, stages));
    let mut events = cluster.events(Some("superseding")).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = first["pipelineExecutionId"].as_str().unwrap().to_string();
    events.wait_for_notice(&first, "Build", Some("Slow"), "InProgress", WAIT).unwrap();
    // Two more while Build is held: the older of them never gets it.
    let start = || String::from_utf8_lossy(&cluster.sluice(&["pipeline", "start", "superseding"]).stdout).trim().to_string();
    let (second, third) = (start(), start());
    let history = cluster.wait_for_executions_to_end("superseding").unwrap();
    let status = |id: &str| -> String {
        history["pipelineExecutionSummaries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pipelineExecutionId"] == id)
            .map(|e| e["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(
        (status(&first), status(&second), status(&third)),
        ("Succeeded".to_string(), "Superseded".to_string(), "Succeeded".to_string()),
        "{history}"
    );
}

#[test]
fn a_disabled_transition_holds_the_newest_execution_across_a_restart() {
    let mut cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let noop = r#"{"name": "Release", "actions": [{"name": "Ship", "inputArtifacts": [{"name": "src"}],
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let file = cluster.dir.path().join("p.json");
    write(&file, &git_pipeline("gated", "", &repo, noop));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    cluster.wait_for_executions_to_end("gated").unwrap();

    let out = cluster.sluice(&["transition", "disable", "gated", "Release", "--reason", "change freeze"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(cluster.sluice(&["transition", "disable", "gated", "Source", "--reason", "x"]).status.code(), Some(2));
    assert_eq!(cluster.sluice(&["transition", "disable", "gated", "Nope", "--reason", "x"]).status.code(), Some(1));
    assert_eq!(cluster.sluice(&["transition", "disable", "gated", "Release"]).status.code(), Some(2));

    let start = |c: &Cluster| String::from_utf8_lossy(&c.sluice(&["pipeline", "start", "gated"]).stdout).trim().to_string();
    // Notices follow the commit of their step: what `history` shows next
    // is at least that step.
    let mut events = cluster.events(Some("gated")).unwrap();
    let mut source_done = |id: &str| events.wait_for_notice(id, "Source", None, "Succeeded", WAIT).unwrap();
    let held = start(&cluster);
    source_done(&held);
    let newest = start(&cluster);
    source_done(&newest);
    let history = cluster.sluice_json(&["pipeline", "history", "gated"]).unwrap();
    let status = |h: &Value, id: &str| {
        h["pipelineExecutionSummaries"].as_array().unwrap().iter().find(|e| e["pipelineExecutionId"] == id).unwrap()
            ["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(&history, &held), "Superseded", "{history}");
    assert_eq!(status(&history, &newest), "InProgress", "{history}");

    // The transition and the waiting execution survive a restart.
    cluster.kill_controller();
    cluster.start_controller().unwrap();
    let state = cluster.sluice_json(&["pipeline", "state", "gated"]).unwrap();
    let inbound = &state["stageStates"][1]["inboundTransitionState"];
    assert_eq!((inbound["enabled"].as_bool(), inbound["disabledReason"].as_str()), (Some(false), Some("change freeze")));
    assert_eq!(inbound["lastChangedBy"], "admin");

    // Enabled: the newest goes on and succeeds.
    cluster.wait_for_agents(1).unwrap();
    assert!(cluster.sluice(&["transition", "enable", "gated", "Release"]).status.success());
    let history = cluster.wait_for_executions_to_end("gated").unwrap();
    assert_eq!(status(&history, &newest), "Succeeded", "{history}");
}

#[test]
fn a_failed_stage_is_retried_and_the_execution_goes_on() {
    let cluster = Cluster::new().agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    // Fails the first time it runs, succeeds after.
    let marker = cluster.dir.path().join("ran-once");
    let stages = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Flaky", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
            "configuration": {{"Commands": "if [ -e {m} ]; then exit 0; fi; touch {m}; exit 1"}}, "capabilities": {{"exec": ["sh"]}}}}]}},
        {{"name": "After", "actions": [{{"name": "Done", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}}"#,
        m = marker.display()
    );
    let file = cluster.dir.path().join("p.json");
    write(&file, &git_pipeline("flaky", "", &repo, &stages));
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["pipelineExecutionId"].as_str().unwrap().to_string();
    let history = cluster.wait_for_executions_to_end("flaky").unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Failed", "{history}");

    // A stage that did not fail cannot be retried; the failed one can.
    assert_eq!(cluster.sluice(&["stage", "retry", "flaky", "Source", &id]).status.code(), Some(1));
    let out = cluster.sluice(&["stage", "retry", "flaky", "Build", &id, "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let state = cluster.sluice_json(&["pipeline", "state", "flaky"]).unwrap();
    assert_eq!(action_state(&state, "Build", "Flaky")["attempt"], 2);
    assert_eq!(action_state(&state, "After", "Done")["status"], "Succeeded");
    // The execution in detail: the retried action's attempt and its output.
    let detail = cluster.sluice_json(&["execution", "get", "flaky", &id]).unwrap();
    assert_eq!(detail["pipelineExecution"]["status"], "Succeeded");
    assert_eq!(detail["stages"][1]["actions"][0]["attempt"], 2, "{detail}");
    assert!(detail["stages"][0]["actions"][0]["outputArtifacts"][0]["digest"].is_string(), "{detail}");
    let out = cluster.sluice(&["execution", "get", "flaky", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Flaky"), "{}", output_text(&out));
    assert_eq!(cluster.sluice(&["execution", "get", "flaky", "no-such-id"]).status.code(), Some(1));
    // A succeeded execution cannot be retried.
    assert_eq!(cluster.sluice(&["stage", "retry", "flaky", "Build", &id]).status.code(), Some(1));
}

#[test]
fn approvals_need_two_other_users_and_a_rejection_fails_the_run() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let stages = r#"{"name": "Approve", "actions": [{"name": "Release",
        "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"},
        "configuration": {"RequiredApprovals": "2", "CustomData": "ship it?"}}]},
      {"name": "Deploy", "actions": [{"name": "Go",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let file = cluster.dir.path().join("gate.json");
    write(&file, &git_pipeline("gate", "", &repo, stages));

    // Users and their tokens; only the admin may make them.
    for user in ["ann", "bob", "cy"] {
        let out = cluster.sluice(&["user", "create", user]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let token = |user: &str| {
        let out = cluster.sluice(&["token", "create", "--user", user]);
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ann, bob, cy) = (token("ann"), token("bob"), token("cy"));
    let as_user = |token: &str, args: &[&str]| {
        std::process::Command::new(sluice_tests::bin("sluice"))
            .args(args)
            .env("SLUICE_API", &cluster.api)
            .env("SLUICE_CA", cluster.ca_file())
            .env("SLUICE_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = as_user(&ann, &["user", "create", "mallory"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));

    // Ann creates the pipeline (its first execution is hers) and cannot approve it.
    let out = as_user(&ann, &["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let waiting = wait_until("the approval to wait", WAIT, || {
        let state = cluster.sluice_json(&["pipeline", "state", "gate"]).ok()?;
        let release = action_state(&state, "Approve", "Release").clone();
        (release["status"] == "InProgress").then_some(release)
    })
    .unwrap();
    assert_eq!(waiting["waitingReason"], "waiting for 2 approval(s)", "{waiting}");
    let out = as_user(&ann, &["approval", "approve", "gate", "Approve", "Release", "--comment", "mine"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot approve"), "{}", output_text(&out));

    let out = as_user(&bob, &["approval", "approve", "gate", "Approve", "Release", "--comment", "looks good"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = as_user(&bob, &["approval", "approve", "gate", "Approve", "Release"]);
    assert_eq!(out.status.code(), Some(1), "bob counts once: {}", output_text(&out));
    let out = as_user(&cy, &["approval", "approve", "gate", "Approve", "Release"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.wait_for_executions_to_end("gate").unwrap();
    let first = history["pipelineExecutionSummaries"][0]["pipelineExecutionId"].as_str().unwrap().to_string();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Succeeded", "{history}");
    let execution = cluster.sluice_json(&["execution", "get", "gate", &first]).unwrap();
    let release = &execution["stages"][1]["actions"][0];
    assert_eq!(release["summary"], "approved by bob, cy", "{release}");
    let decisions: Vec<&str> =
        release["approval"]["decisions"].as_array().unwrap().iter().map(|d| d["by"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["bob", "cy"]);

    // A run Bob starts: Bob cannot approve, Cy rejects, the run fails.
    let out = as_user(&bob, &["pipeline", "start", "gate"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    wait_until("the second approval to wait", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "gate", &second]).ok()?;
        (e["stages"][1]["actions"][0]["status"] == "InProgress").then_some(())
    })
    .unwrap();
    let out = as_user(&bob, &["approval", "approve", "gate", "Approve", "Release"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let out = as_user(&cy, &["approval", "reject", "gate", "Approve", "Release", "--comment", "freeze"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.wait_for_executions_to_end("gate").unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Failed");
    assert!(
        history["pipelineExecutionSummaries"][0]["statusSummary"].as_str().unwrap().contains("rejected by cy: freeze"),
        "{history}"
    );
    // A revoked token stops working at once.
    let tokens = cluster.sluice_json(&["token", "list"]).unwrap();
    let cy_id =
        tokens["tokens"].as_array().unwrap().iter().find(|t| t["user"] == "cy").unwrap()["id"].as_str().unwrap().to_string();
    assert!(cluster.sluice(&["token", "revoke", &cy_id]).status.success());
    let out = as_user(&cy, &["pipeline", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
}

#[test]
fn declarations_are_validated_imported_and_history_is_paged() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "a\n")]);

    // validate: nothing is created either way.
    let good = cluster.dir.path().join("good.json");
    let build = r#"{"name": "Build", "actions": [{"name": "Make",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": "ls"}, "inputArtifacts": [{"name": "src"}], "capabilities": {"exec": ["sh"]}}]}"#;
    write(&good, &git_pipeline("paged", "", &repo, build));
    let out = cluster.sluice(&["pipeline", "validate", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let bad = cluster.dir.path().join("bad.json");
    write(&bad, &git_pipeline("paged", "", &repo, &build.replace("\"shell\"", "\"shel\"").replace("\"src\"", "\"srx\"")));
    let out = cluster.sluice(&["pipeline", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shel@1") && err.contains("srx"), "every problem: {err}");
    assert_eq!(cluster.sluice_json(&["pipeline", "list"]).unwrap()["pipelines"], serde_json::json!([]));

    // import: CodePipeline's own shape, providers mapped.
    let exported = cluster.dir.path().join("exported.json");
    write(
        &exported,
        r#"{"pipeline": {"name": "imported", "roleArn": "arn:aws:iam::1:role/x", "version": 7,
            "artifactStore": {"type": "S3", "location": "b"}, "stages": [
          {"name": "Source", "actions": [{"name": "Src",
            "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeCommit", "version": "1"},
            "configuration": {"RepositoryName": "r", "BranchName": "main", "PollForSourceChanges": "false"},
            "outputArtifacts": [{"name": "src"}]}]},
          {"name": "Build", "actions": [{"name": "Make",
            "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
            "configuration": {"ProjectName": "p"}, "inputArtifacts": [{"name": "src"}]},
            {"name": "Notify", "actionTypeId": {"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"}}]}]},
          "metadata": {"pipelineArn": "arn:x"}}"#,
    );
    let out = cluster.sluice(&["pipeline", "import", exported.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS/Lambda") && err.contains("Url"), "{err}");
    let map = cluster.dir.path().join("map.yaml");
    write(
        &map,
        &format!(
            "AWS/CodeCommit: {{provider: git, rename: {{BranchName: Branch}}, drop: [RepositoryName, PollForSourceChanges], set: {{Url: '{}'}}, capabilities: {{exec: [git]}}}}\n\
             AWS/CodeBuild: {{provider: shell, drop: [ProjectName], set: {{Commands: 'test -f a.txt'}}, capabilities: {{exec: [sh]}}}}\n\
             AWS/Lambda: {{provider: noop, version: '1', category: Build}}\n",
            repo.display()
        ),
    );
    let out = cluster.sluice(&["pipeline", "import", exported.to_str().unwrap(), "--provider-map", map.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.wait_for_executions_to_end("imported").unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Succeeded", "{history}");
    let declared = cluster.sluice_json(&["pipeline", "get", "imported"]).unwrap();
    assert_eq!(declared["pipeline"]["stages"][0]["actions"][0]["pollIntervalSeconds"], 0, "PollForSourceChanges=false");
    assert_eq!(declared["pipeline"]["roleArn"], "arn:aws:iam::1:role/x");

    // History in pages, and each action's inputs in the execution.
    assert!(cluster.sluice(&["pipeline", "create", good.to_str().unwrap()]).status.success());
    for _ in 0..2 {
        assert!(cluster.sluice(&["pipeline", "start", "paged", "--wait"]).status.success());
    }
    cluster.wait_for_executions_to_end("paged").unwrap();
    let first = cluster.sluice_json(&["pipeline", "history", "paged", "--max", "2"]).unwrap();
    let token = first["nextToken"].as_str().expect("a second page").to_string();
    let second = cluster.sluice_json(&["pipeline", "history", "paged", "--max", "2", "--next-token", &token]).unwrap();
    assert!(second["nextToken"].is_null(), "{second}");
    let ids = |page: &Value| -> Vec<String> {
        page["pipelineExecutionSummaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pipelineExecutionId"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!((a.len(), b.len()), (2, 1));
    assert!(!a.contains(&b[0]));
    let out = cluster.sluice(&["pipeline", "history", "paged", "--next-token", "garbage"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let execution = cluster.sluice_json(&["execution", "get", "paged", &a[0]]).unwrap();
    let make = &execution["stages"][1]["actions"][0];
    assert_eq!(make["inputArtifacts"][0]["name"], "src", "{make}");
    assert_eq!(make["resolvedConfiguration"]["Commands"], "ls");
}

#[test]
fn stage_conditions_skip_and_roll_back_to_the_last_good_artifacts() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("ok", "yes\n")]);
    let stages = r##"{"name": "Build", "actions": [{"name": "Make",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": "mkdir -p out\nif [ -f ok ]; then cp ok out/ok; fi\ndate +%s%N > out/stamp"},
        "inputArtifacts": [{"name": "src"}], "outputArtifacts": [{"name": "bin", "files": ["out/**"]}],
        "capabilities": {"exec": ["sh"]}}]},
      {"name": "Deploy",
       "beforeEntry": {"conditions": [{"result": "SKIP", "rules": [{"name": "Wanted",
          "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"},
          "configuration": {"Variable": "#{variables.DEPLOY}", "Value": "yes", "Operator": "EQ"}}]}]},
       "onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [{"name": "Smoke",
          "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
          "commands": ["test -f out/ok"], "inputArtifacts": [{"name": "bin"}]}]}]},
       "actions": [{"name": "Ship",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": "ls out"}, "inputArtifacts": [{"name": "bin"}], "capabilities": {"exec": ["sh"]}}]}"##;
    let file = cluster.dir.path().join("guarded.json");
    write(&file, &git_pipeline("guarded", r#"{"name": "DEPLOY", "defaultValue": "yes"}"#, &repo, stages));
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.wait_for_executions_to_end("guarded").unwrap();
    let good = history["pipelineExecutionSummaries"][0]["pipelineExecutionId"].as_str().unwrap().to_string();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Succeeded", "{history}");

    // beforeEntry: DEPLOY=no skips Deploy; the execution still succeeds.
    let out = cluster.sluice(&["pipeline", "start", "guarded", "--variable", "DEPLOY=no", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let skipped = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().trim().to_string();
    let e = cluster.sluice_json(&["execution", "get", "guarded", &skipped]).unwrap();
    assert_eq!(e["stages"][2]["status"], "Skipped", "{e}");

    // A commit that breaks the smoke check: Deploy ends Failed by onSuccess,
    // and a rollback runs Deploy again with the good execution's artifact.
    std::fs::remove_file(repo.join("ok")).unwrap();
    sluice_tests::git(&repo, &["commit", "-qam", "break it"]);
    let out = cluster.sluice(&["pipeline", "start", "guarded", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let rollback = wait_until("the automated rollback", WAIT, || {
        let h = cluster.sluice_json(&["pipeline", "history", "guarded"]).ok()?;
        let newest = h["pipelineExecutionSummaries"][0].clone();
        (newest["trigger"]["triggerType"] == "AutomatedRollback" && newest["status"] != "InProgress").then_some(newest)
    })
    .unwrap_or_else(|e| {
        let log = cluster.controller_log();
        let tail: Vec<&str> = log.lines().filter(|l| l.contains("rollback") || l.contains("WARN")).collect();
        panic!("{e}\n{}\n{}", cluster.sluice_json(&["pipeline", "history", "guarded"]).unwrap(), tail.join("\n"))
    });
    assert_eq!(rollback["status"], "Succeeded", "{rollback}");
    let rb =
        cluster.sluice_json(&["execution", "get", "guarded", rollback["pipelineExecutionId"].as_str().unwrap()]).unwrap();
    let good_exec = cluster.sluice_json(&["execution", "get", "guarded", &good]).unwrap();
    assert_eq!(rb["pipelineExecution"]["rollbackMetadata"]["rollbackTargetPipelineExecution"], good.as_str());
    assert_eq!(
        rb["stages"][2]["actions"][0]["inputArtifacts"][0]["digest"],
        good_exec["stages"][1]["actions"][0]["outputArtifacts"][0]["digest"],
        "the rollback deploys the good build"
    );
    let failed = &cluster.sluice_json(&["pipeline", "history", "guarded"]).unwrap()["pipelineExecutionSummaries"][1];
    assert!(failed["statusSummary"].as_str().unwrap().contains("rolling back"), "{failed}");

    // By hand, to an execution named.
    let out = cluster.sluice(&["stage", "rollback", "guarded", "Deploy", "--target", &good, "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["stage", "rollback", "guarded", "Deploy", "--target", &skipped]);
    assert_eq!(out.status.code(), Some(1), "Deploy was skipped there: {}", output_text(&out));
}

#[test]
fn a_new_plugin_is_built_run_locally_pushed_described_used_and_deleted() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let crate_dir = cluster.dir.path().join("greeter");
    // The SDK of this checkout (the template depends on the published one by version otherwise).
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let out = cluster.sluice(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        crate_dir.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));

    // Built like any plugin; the shared wasm target dir keeps it incremental.
    let target = sluice_tests::bin("sluice").parent().unwrap().parent().unwrap().join("wasm-plugins");
    let build = std::process::Command::new("cargo")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", output_text(&build));
    let wasm = target.join("wasm32-wasip2/release/greeter.wasm");

    // Run locally, exactly as an agent would.
    let local_out = cluster.dir.path().join("local-out");
    let out = cluster.sluice(&[
        "action",
        "run",
        "--plugin",
        wasm.to_str().unwrap(),
        "--config",
        "Name=local",
        "--output-dir",
        &format!("greeting={}", local_out.display()),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let ran: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ran["outputVariables"]["Greeting"], "Hello, local!");
    assert_eq!(std::fs::read_to_string(local_out.join("greeting.txt")).unwrap(), "Hello, local!\n");
    let out = cluster.sluice(&["action", "run", "--plugin", wasm.to_str().unwrap(), "--config", "Name= "]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    // Pushed, described, used by a pipeline.
    let out = cluster.sluice(&["plugin", "push", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let described = cluster.sluice_json(&["plugin", "describe", "greeter@1"]).unwrap();
    assert_eq!(described["info"]["configuration"][0]["name"], "Name");
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a", "a")]);
    let digest = described["digest"].as_str().unwrap().to_string();
    let stages = format!(
        r#"{{"name": "Greet", "actions": [{{"name": "Hi",
        "actionTypeId": {{"category": "Build", "owner": "Custom", "provider": "greeter", "version": "1"}},
        "configuration": {{"Name": "pipeline"}}, "outputArtifacts": [{{"name": "greeting"}}], "namespace": "G",
        "pluginDigest": "sha256:{digest}"}}]}}"#
    );
    // A pin that is not the registered digest is refused, naming both.
    let file = cluster.dir.path().join("wrong-pin.json");
    write(&file, &git_pipeline("greet", "", &repo, &stages.replace(&digest, &"0".repeat(64))));
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&digest), "{}", output_text(&out));
    let file = cluster.dir.path().join("greet.json");
    write(&file, &git_pipeline("greet", "", &repo, &stages));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    let history = cluster.wait_for_executions_to_end("greet").unwrap();
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Succeeded", "{history}");

    // Deleting is refused while a pipeline uses it, and works after.
    let out = cluster.sluice(&["plugin", "delete", "greeter@1"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline greet"), "{}", output_text(&out));
    assert!(cluster.sluice(&["pipeline", "delete", "greet"]).status.success());
    assert!(cluster.sluice(&["plugin", "delete", "greeter@1"]).status.success());
    let out = cluster.sluice(&["plugin", "delete", "shell@1"]);
    assert_eq!(out.status.code(), Some(1), "built-ins stay: {}", output_text(&out));
}

#[test]
fn an_agent_policy_is_the_third_consent() {
    // This agent permits git and HTTP to loopback, nothing else, whatever
    // pipelines grant.
    let policy = std::env::temp_dir().join(format!("sluice-policy-{}.json", std::process::id()));
    write(&policy, r#"{"exec": ["git"], "http": ["127.0.0.0/8:*"]}"#);
    let cluster =
        Cluster::new().agent_args(&["--policy", policy.to_str().unwrap(), "--slots", "4"]).agent(&[]).start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a", "a")]);
    // A server for the built-in `http` plugin to call.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in server.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"ready\": true}");
        }
    });
    let stages = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Make",
        "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
        "configuration": {{"Commands": "echo hi"}}, "inputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["sh"]}}}},
        {{"name": "Ping", "actionTypeId": {{"category": "Invoke", "owner": "Sluice", "provider": "http", "version": "1"}},
        "configuration": {{"Url": "http://127.0.0.1:{port}/health", "OutputVariables": "Ready=/ready"}},
        "capabilities": {{"http": ["127.0.0.1:{port}"]}}}},
        {{"name": "Outside", "actionTypeId": {{"category": "Invoke", "owner": "Sluice", "provider": "http", "version": "1"}},
        "configuration": {{"Url": "https://api.example.com/"}}, "capabilities": {{"http": ["api.example.com:443"]}}}}]}}"#
    );
    let file = cluster.dir.path().join("policed.json");
    write(&file, &git_pipeline("policed", "", &repo, &stages));
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    let history = cluster
        .wait_for_executions_to_end("policed")
        .unwrap_or_else(|e| panic!("{e}: {}", cluster.sluice_json(&["pipeline", "state", "policed"]).unwrap()));
    assert_eq!(history["pipelineExecutionSummaries"][0]["status"], "Failed", "{history}");
    let state = cluster.sluice_json(&["pipeline", "state", "policed"]).unwrap();
    assert_eq!(action_state(&state, "Source", "Checkout")["status"], "Succeeded", "git is permitted");
    let make = action_state(&state, "Build", "Make");
    assert!(make["errorDetails"]["message"].as_str().unwrap().contains("exec"), "{make}");
    let logs = cluster.sluice(&["logs", "policed"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("this agent's policy does not permit exec \"sh\""),
        "{}",
        output_text(&logs)
    );
    // HTTP: plugin (`*`), pipeline and policy all consent to the loopback
    // server, so the call is made; the policy denies api.example.com.
    let ping = action_state(&state, "Build", "Ping");
    assert_eq!(ping["status"], "Succeeded", "{ping}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let outside = action_state(&state, "Build", "Outside");
    assert_eq!(outside["status"], "Failed", "{outside}");
    assert!(outside["errorDetails"]["message"].as_str().unwrap().contains("no http grant"), "{outside}");
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("this agent's policy does not permit http \"api.example.com:443\""),
        "{}",
        output_text(&logs)
    );
    let _ = std::fs::remove_file(&policy);

    // A policy file that is not valid stops the agent before it enrolls.
    let bad = cluster.dir.path().join("bad-policy.json");
    write(&bad, r#"{"exec": "git"}"#);
    let token = cluster.join_token(Some(1)).unwrap();
    let out = std::process::Command::new(sluice_tests::bin("sluice-agent"))
        .args(["--controller", &cluster.fleet, "--token", &token, "--policy", bad.to_str().unwrap(), "--data-dir"])
        .arg(cluster.dir.path().join("bad-agent"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not valid"), "{}", output_text(&out));
    assert!(
        cluster.sluice_json(&["agent-token", "list"]).unwrap().to_string().contains("\"usesLeft\":1"),
        "the token was not used"
    );
}

#[test]
fn artifacts_no_execution_refers_to_are_collected() {
    let mut cluster = Cluster::new().controller_args(&["--artifact-gc-interval", "2s"]).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("a.txt", "kept\n")]);
    let other = cluster.dir.path().join("other");
    make_repo(&other, &[("b.txt", "collected\n")]);
    let noop = r#"{"name": "Build", "actions": [{"name": "Look",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}, "inputArtifacts": [{"name": "src"}]}]}"#;
    let blob = |digest: &str| cluster.data_dir().join("artifacts").join(&digest[..2]).join(digest);
    let source_digest = |name: &str| -> String {
        let history = cluster.wait_for_executions_to_end(name).unwrap();
        let id = history["pipelineExecutionSummaries"][0]["pipelineExecutionId"].as_str().unwrap().to_string();
        let e = cluster.sluice_json(&["execution", "get", name, &id]).unwrap();
        e["stages"][0]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string()
    };
    for (name, repo) in [("keeps", &repo), ("goes", &other)] {
        let file = cluster.dir.path().join(format!("{name}.json"));
        write(&file, &git_pipeline(name, "", repo, noop));
        assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    }
    let (kept, gone) = (source_digest("keeps"), source_digest("goes"));
    assert!(blob(&kept).exists() && blob(&gone).exists());
    assert!(cluster.sluice(&["pipeline", "delete", "goes"]).status.success());
    wait_until("the unreferenced artifact to be collected", WAIT, || (!blob(&gone).exists()).then_some(())).unwrap();
    assert!(blob(&kept).exists(), "an artifact a stored execution refers to stays");
    // The collector logs once it has finished, just after the file went.
    wait_until("the collection to be logged", WAIT, || {
        cluster.controller_log().contains("unreferenced artifacts removed").then_some(())
    })
    .unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn data_dirs_keys_and_tokens_are_private_whether_new_or_existing() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let data = cluster.data_dir();
    let dirs = [data.clone(), data.join("artifacts"), data.join("plugins"), data.join("cache"), data.join("ca")];
    let files = [data.join("admin.token"), data.join("secret.key"), data.join("ca/ca.key"), data.join("sluice.db")];
    let agent = cluster.agent_dir(0);
    let check = |when: &str| {
        for d in dirs.iter().chain([&agent]) {
            assert_eq!(mode(d), 0o700, "{when}: {}", d.display());
        }
        for f in files.iter().chain([&agent.join("agent.key")]) {
            assert_eq!(mode(f), 0o600, "{when}: {}", f.display());
        }
    };
    check("new");

    // Made by hand or by an older version with the default modes: the next
    // start makes them private again.
    cluster.kill_controller();
    cluster.kill_agent(0);
    for d in dirs.iter().chain([&agent]) {
        set_mode(d, 0o755);
    }
    for f in files.iter().chain([&agent.join("agent.key")]) {
        set_mode(f, 0o644);
    }
    cluster.start_controller().unwrap();
    let child = cluster.spawn_agent(&agent, None, &[]).unwrap();
    cluster.adopt_agent(child);
    cluster.wait_for_agents(1).unwrap();
    check("existing");
}
