//! Signed plugins across real processes: `sluice plugin keygen|sign`,
//! trusted publishers on the controller, verification at push, and agents
//! whose policy runs only plugins their own publishers signed, whatever the
//! controller says.

use serde_json::Value;
use sluice_tests::{Cluster, git_pipeline, make_repo, output_text};
use std::path::{Path, PathBuf};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `sluice plugin keygen` into `dir/NAME.key|pub`; the two paths.
fn keygen(cluster: &Cluster, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = cluster.sluice(&["plugin", "keygen", "--out", dir.to_str().unwrap(), "--name", name]);
    assert!(out.status.success(), "{}", output_text(&out));
    (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")))
}

/// A copy of a test plugin's component in `dir`, signed with `key` when given.
fn component(cluster: &Cluster, dir: &Path, plugin: &str, key: Option<&Path>) -> PathBuf {
    let wasm = dir.join(format!("{plugin}.wasm"));
    std::fs::copy(sluice_test_plugins::test_plugin(plugin), &wasm).unwrap();
    if let Some(key) = key {
        let out = cluster.sluice(&["plugin", "sign", wasm.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    wasm
}

/// The error of the pipeline's action in stage `Run`, if it failed.
fn action_message(cluster: &Cluster, pipeline: &str) -> String {
    let state = cluster.sluice_json(&["pipeline", "state", pipeline]).unwrap();
    let stage =
        state["stageStates"].as_array().unwrap().iter().find(|s| s["stageName"] == "Run").cloned().unwrap_or_default();
    stage["actionStates"][0]["latestExecution"]["errorDetails"]["message"].as_str().unwrap_or_default().to_string()
}

/// A pipeline: the built-in git source, then one action of `provider@1`
/// (with the one output artifact `compat-0-1` needs).
fn pipeline_of(cluster: &Cluster, name: &str, provider: &str, configuration: &str) -> PathBuf {
    let repo = cluster.dir.path().join(format!("repo-{name}"));
    if !repo.exists() {
        make_repo(&repo, &[("README", "x\n")]);
    }
    let file = cluster.dir.path().join(format!("{name}.json"));
    let outputs = if provider == "compat-0-1" { r#", "outputArtifacts": [{"name": "out"}]"# } else { "" };
    let stage = format!(
        r#"{{"name": "Run", "actions": [{{"name": "It", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Test", "owner": "Custom", "provider": "{provider}", "version": "1"}},
            "configuration": {configuration}{outputs}}}]}}"#
    );
    write(&file, &git_pipeline(name, "", &repo, &stage));
    file
}

/// Creates a pipeline (which starts its first execution) and waits for
/// that execution: whether it succeeded, and the action's error.
fn run(cluster: &Cluster, name: &str, provider: &str, configuration: &str) -> (bool, String) {
    let file = pipeline_of(cluster, name, provider, configuration);
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let history = cluster.wait_for_executions_to_end(name).unwrap();
    (history["pipelineExecutionSummaries"][0]["status"] == "Succeeded", action_message(cluster, name))
}

fn policy_trusting(dir: &Path, publishers: &[(&str, &Path)]) -> PathBuf {
    let map: serde_json::Map<String, Value> =
        publishers.iter().map(|(name, key)| (name.to_string(), Value::String(key.display().to_string()))).collect();
    let path = dir.join("agent-policy.json");
    write(&path, &serde_json::json!({ "exec": ["git"], "publishers": map }).to_string());
    path
}

#[test]
fn a_plugin_signed_by_a_trusted_publisher_is_pushed_listed_and_run() {
    let keys = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::new().start().unwrap();
    let (acme_key, acme_pub) = keygen(&cluster, keys.path(), "acme");
    // The private key is the publisher's alone; a pair is never overwritten.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&acme_key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = cluster.sluice(&["plugin", "keygen", "--out", keys.path().to_str().unwrap(), "--name", "acme"]);
    assert_eq!(again.status.code(), Some(2), "{}", output_text(&again));

    let out = cluster.sluice(&["publisher", "add", "acme", acme_pub.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["publisher", "add", "acme", acme_pub.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "the name is taken: {}", output_text(&out));
    let listed = cluster.sluice_json(&["publisher", "list"]).unwrap();
    assert_eq!(listed["publishers"][0]["name"], "acme", "{listed}");
    assert_eq!(listed["publishers"][0]["keyId"].as_str().unwrap().len(), 32, "{listed}");
    let table = cluster.sluice(&["publisher", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("acme"), "{}", output_text(&table));
    // Only an admin decides whom the controller trusts.
    assert!(cluster.sluice(&["user", "create", "olga"]).status.success());
    let token = cluster.sluice_json(&["token", "create", "--user", "olga"]).unwrap()["token"].as_str().unwrap().to_string();
    let mut as_olga = std::process::Command::new(sluice_tests::bin("sluice"));
    as_olga
        .args(["publisher", "remove", "acme"])
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", token);
    let out = as_olga.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));

    // The signature beside the component goes with it.
    let wasm = component(&cluster, keys.path(), "hostile", Some(&acme_key));
    let out = cluster.sluice(&["plugin", "push", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostile@1 registered"), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("signed by acme"), "{}", output_text(&out));
    let described = cluster.sluice_json(&["plugin", "describe", "hostile@1"]).unwrap();
    assert_eq!(described["signedBy"], "acme", "{described}");
    assert_eq!(described["keyId"], listed["publishers"][0]["keyId"], "{described}");
    let table = String::from_utf8_lossy(&cluster.sluice(&["plugin", "list"]).stdout).to_string();
    let row = table.lines().find(|l| l.starts_with("hostile@1")).unwrap_or_default().to_string();
    assert!(row.contains("acme"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("shell@1") && l.contains("(built-in)")), "{table}");
    let text = String::from_utf8_lossy(&cluster.sluice(&["plugin", "describe", "hostile@1"]).stdout).to_string();
    assert!(text.contains("signed by: acme (key "), "{text}");

    // An agent that requires acme's signature runs it (and the built-in
    // git source, which is part of its binary).
    let policy = policy_trusting(keys.path(), &[("acme", &acme_pub)]);
    let n = add_strict_agent(&mut cluster, &policy);
    let (ok, message) = run(&cluster, "signed", "hostile", r#"{"Mode": "ok"}"#);
    assert!(ok, "{message}\n{}", cluster.agent_log(n));
}

/// Starts an agent with `--policy POLICY` as agent N of the cluster and
/// waits until it is connected; returns N.
fn add_strict_agent(cluster: &mut Cluster, policy: &Path) -> usize {
    let n = cluster.agent_count();
    let dir = cluster.agent_dir(n);
    let token = cluster.join_token(Some(1)).unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log")).unwrap();
    let child = std::process::Command::new(sluice_tests::bin("sluice-agent"))
        .args(["--controller", &cluster.fleet, "--data-dir"])
        .arg(&dir)
        .args(["--token", &token, "--policy"])
        .arg(policy)
        // The git source reads the test's repositories, which live in the
        // cluster dir (programs run confined, like the harness's agents).
        .arg("--sandbox-write")
        .arg(cluster.dir.path())
        .env("SLUICE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    assert_eq!(cluster.adopt_agent(child), n);
    sluice_tests::wait_until("the strict agent to connect", sluice_tests::WAIT, || {
        let id = std::fs::read_to_string(dir.join("agent.json")).ok()?;
        let id: Value = serde_json::from_str(&id).ok()?;
        let agents = cluster.agents_json().ok()?;
        agents.iter().any(|a| a["id"] == id["agent_id"] && a["connected"] == true).then_some(())
    })
    .unwrap();
    n
}

/// The id agent `n` enrolled as.
fn agent_id(cluster: &Cluster, n: usize) -> String {
    let text = std::fs::read_to_string(cluster.agent_dir(n).join("agent.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["agent_id"].as_str().unwrap().to_string()
}

#[test]
fn a_push_with_a_tampered_component_or_an_untrusted_signature_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let cluster = Cluster::new().controller_args(&["--require-signed-plugins"]).start().unwrap();
    let (acme_key, acme_pub) = keygen(&cluster, keys.path(), "acme");
    let (mallory_key, _) = keygen(&cluster, keys.path(), "mallory");
    let hostile = component(&cluster, keys.path(), "hostile", None);

    // Required, and nobody trusted yet: the refusal says what to do.
    let out = cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("is not signed") && output_text(&out).contains("sluice publisher add"),
        "{}",
        output_text(&out)
    );
    assert!(cluster.sluice(&["publisher", "add", "acme", acme_pub.to_str().unwrap()]).status.success());
    // A public key that is not one.
    let out = cluster.sluice(&["publisher", "add", "junk", acme_key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    // Tampered: acme signed hostile, the bytes pushed are another component.
    let signed = component(&cluster, keys.path(), "hostile", Some(&acme_key));
    let other = component(&cluster, keys.path(), "compat-0-1", None);
    let sig = format!("{}.sig", signed.display());
    let out = cluster.sluice(&["plugin", "push", other.to_str().unwrap(), "--signature", &sig]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("not for this component"), "{}", output_text(&out));
    // The same bytes with one byte changed.
    let mut bytes = std::fs::read(&signed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let flipped = keys.path().join("flipped.wasm");
    std::fs::write(&flipped, bytes).unwrap();
    let out = cluster.sluice(&["plugin", "push", flipped.to_str().unwrap(), "--signature", &sig]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("not for this component"), "{}", output_text(&out));
    // Signed by a key the controller does not trust.
    let out = cluster.sluice(&[
        "plugin",
        "sign",
        signed.to_str().unwrap(),
        "--key",
        mallory_key.to_str().unwrap(),
        "--out",
        &format!("{sig}.mallory"),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["plugin", "push", signed.to_str().unwrap(), "--signature", &format!("{sig}.mallory")]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("not a trusted publisher's"), "{}", output_text(&out));
    // Nothing of an unsigned or untrusted component is compiled or run
    // before its signature is checked: bytes that are no component at
    // all are refused for their signature, not for what they are.
    let junk = keys.path().join("junk.wasm");
    write(&junk, "\0asm not a component");
    let out = cluster.sluice(&["plugin", "push", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("is not signed"), "{}", output_text(&out));
    let out = cluster.sluice(&["plugin", "sign", junk.to_str().unwrap(), "--key", mallory_key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = cluster.sluice(&["plugin", "push", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("not a trusted publisher's"), "{}", output_text(&out));
    // A signature naming acme's key but made by mallory's.
    let mut forged: Value = serde_json::from_str(&std::fs::read_to_string(format!("{sig}.mallory")).unwrap()).unwrap();
    let genuine: Value = serde_json::from_str(&std::fs::read_to_string(&sig).unwrap()).unwrap();
    forged["keyId"] = genuine["keyId"].clone();
    write(Path::new(&format!("{sig}.forged")), &forged.to_string());
    let out = cluster.sluice(&["plugin", "push", signed.to_str().unwrap(), "--signature", &format!("{sig}.forged")]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("does not verify with the key of publisher acme"), "{}", output_text(&out));
    // Not a signature at all.
    write(Path::new(&format!("{sig}.junk")), "hello");
    let out = cluster.sluice(&["plugin", "push", signed.to_str().unwrap(), "--signature", &format!("{sig}.junk")]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("malformed signature"), "{}", output_text(&out));
    // Nothing of the refused pushes was registered.
    let listed = cluster.sluice_json(&["plugin", "list"]).unwrap();
    let pushed: Vec<&Value> = listed["plugins"].as_array().unwrap().iter().filter(|p| p["builtin"] == false).collect();
    assert!(pushed.is_empty(), "{listed}");

    // The genuine one goes through.
    let out = cluster.sluice(&["plugin", "push", signed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    // A removed publisher's signatures are refused from then on.
    assert!(cluster.sluice(&["publisher", "remove", "acme"]).status.success());
    assert_eq!(cluster.sluice(&["publisher", "remove", "acme"]).status.code(), Some(1));
    let compat = component(&cluster, keys.path(), "compat-0-1", Some(&acme_key));
    let out = cluster.sluice(&["plugin", "push", compat.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("not a trusted publisher's"), "{}", output_text(&out));
    let described = cluster.sluice_json(&["plugin", "describe", "hostile@1"]).unwrap();
    assert_eq!(described["signedBy"], "acme", "kept as it was verified at the push: {described}");
}

/// A controller with a strict agent (its policy trusts `acme` only) and
/// both publishers trusted on the controller side.
fn strict_cluster(keys: &Path) -> (Cluster, PathBuf, PathBuf, PathBuf) {
    let mut cluster = Cluster::new().start().unwrap();
    let (acme_key, acme_pub) = keygen(&cluster, keys, "acme");
    let (other_key, other_pub) = keygen(&cluster, keys, "other");
    for (name, key) in [("acme", &acme_pub), ("other", &other_pub)] {
        assert!(cluster.sluice(&["publisher", "add", name, key.to_str().unwrap()]).status.success());
    }
    let policy = policy_trusting(keys, &[("acme", &acme_pub)]);
    add_strict_agent(&mut cluster, &policy);
    (cluster, acme_key, other_key, policy)
}

#[test]
fn an_agent_runs_only_plugins_its_own_publishers_signed() {
    let keys = tempfile::tempdir().unwrap();
    let (cluster, acme_key, other_key, _) = strict_cluster(keys.path());

    // Signed by a publisher the controller trusts but this agent does not.
    let compat = component(&cluster, keys.path(), "compat-0-1", Some(&other_key));
    assert!(cluster.sluice(&["plugin", "push", compat.to_str().unwrap()]).status.success());
    let (ok, message) = run(&cluster, "by-other", "compat-0-1", r#"{"Greeting": "hi"}"#);
    assert!(!ok);
    assert!(message.contains("not a trusted publisher's") && message.contains("signed by acme"), "{message}");

    // Unsigned.
    let hostile = component(&cluster, keys.path(), "hostile", None);
    assert!(cluster.sluice(&["plugin", "push", hostile.to_str().unwrap()]).status.success());
    let (ok, message) = run(&cluster, "unsigned", "hostile", r#"{"Mode": "ok"}"#);
    assert!(!ok);
    assert!(message.contains("is not signed") && message.contains("signed by acme"), "{message}");
    assert!(cluster.agent_log(0).contains("plugin refused"), "{}", cluster.agent_log(0));

    // Signed by acme (recorded on the version pushed unsigned before): runs.
    let signed = component(&cluster, keys.path(), "hostile", Some(&acme_key));
    let out = cluster.sluice(&["plugin", "push", signed.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already registered") && output_text(&out).contains("signed by acme"),
        "{}",
        output_text(&out)
    );
    let out = cluster.sluice(&["pipeline", "start", "unsigned", "--wait"]);
    assert!(out.status.success(), "{}\n{}", action_message(&cluster, "unsigned"), cluster.agent_log(0));
    assert_eq!(cluster.agents_json().unwrap()[0]["connected"], true);
}

/// Stops the controller, changes its store as an attacker with the
/// controller's host would, and starts it again.
fn tamper_with_store(cluster: &mut Cluster, sql: &str) {
    cluster.kill_controller();
    let db = rusqlite::Connection::open(cluster.data_dir().join("sluice.db")).unwrap();
    db.execute_batch(sql).unwrap();
    drop(db);
    cluster.start_controller().unwrap();
    cluster.wait_for_agents(1).unwrap();
}

#[test]
fn a_controller_that_swaps_a_plugin_or_strips_its_signature_is_caught_by_the_agent() {
    let keys = tempfile::tempdir().unwrap();
    let (mut cluster, acme_key, _, policy) = strict_cluster(keys.path());
    let signed = component(&cluster, keys.path(), "hostile", Some(&acme_key));
    assert!(cluster.sluice(&["plugin", "push", signed.to_str().unwrap()]).status.success());
    let evil = component(&cluster, keys.path(), "compat-0-1", None);
    assert!(cluster.sluice(&["plugin", "push", evil.to_str().unwrap()]).status.success());
    let good_digest =
        cluster.sluice_json(&["plugin", "describe", "hostile@1"]).unwrap()["digest"].as_str().unwrap().to_string();
    let evil_digest =
        cluster.sluice_json(&["plugin", "describe", "compat-0-1@1"]).unwrap()["digest"].as_str().unwrap().to_string();
    // It runs, and the agent has compiled and cached it.
    let (ok, message) = run(&cluster, "victim", "hostile", r#"{"Mode": "ok"}"#);
    assert!(ok, "{message}");

    // The signature stripped: refused although the agent has the plugin
    // compiled in memory and on disk.
    tamper_with_store(&mut cluster, "DELETE FROM plugin_signatures;");
    let described = cluster.sluice_json(&["plugin", "describe", "hostile@1"]).unwrap();
    assert_eq!(described["signedBy"], Value::Null, "{described}");
    let out = cluster.sluice(&["pipeline", "start", "victim", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let message = action_message(&cluster, "victim");
    assert!(message.contains("is not signed"), "{message}");

    // The version pointed at other bytes, with the genuine signature moved
    // onto their digest.
    let signature = std::fs::read_to_string(format!("{}.sig", signed.display())).unwrap().replace('\'', "''");
    let record = serde_json::json!({
        "digest": evil_digest, "publisher": "acme", "keyId": "0", "signature": signature, "signedAt": 0
    });
    tamper_with_store(
        &mut cluster,
        &format!(
            "UPDATE plugins SET digest = '{evil_digest}' WHERE provider = 'hostile';
             INSERT INTO plugin_signatures (digest, record) VALUES ('{evil_digest}', '{}');",
            record.to_string().replace('\'', "''")
        ),
    );
    let out = cluster.sluice(&["pipeline", "start", "victim", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let message = action_message(&cluster, "victim");
    assert!(message.contains("not for this component"), "{message}");

    // The bytes stored for the signed digest replaced, served to an agent
    // that has never seen the plugin: the signature holds for the digest,
    // the bytes do not hash to it.
    let good_record = serde_json::json!({
        "digest": good_digest, "publisher": "acme", "keyId": "0", "signature": signature, "signedAt": 0
    });
    tamper_with_store(
        &mut cluster,
        &format!(
            "UPDATE plugins SET digest = '{good_digest}' WHERE provider = 'hostile';
             DELETE FROM plugin_signatures;
             INSERT INTO plugin_signatures (digest, record) VALUES ('{good_digest}', '{}');",
            good_record.to_string().replace('\'', "''")
        ),
    );
    let blob = cluster.data_dir().join("plugins").join(&good_digest[..2]).join(&good_digest);
    std::fs::copy(&evil, &blob).unwrap();
    let old = agent_id(&cluster, 0);
    cluster.kill_agent(0);
    // Nothing may go to the killed agent while the controller still counts it.
    assert!(cluster.sluice(&["agent", "disable", &old]).status.success());
    add_strict_agent(&mut cluster, &policy);
    let out = cluster.sluice(&["pipeline", "start", "victim", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let message = action_message(&cluster, "victim");
    assert!(message.contains("digest mismatch"), "{message}");
}
