//! Notifications (issue 15, notify): rules sending a pipeline's events to a
//! local HTTPS receiver (a small rustls server with a certificate from a
//! test CA, which the controller trusts through `--notification-ca`), as
//! signed webhooks and Slack messages; a delivery surviving a killed
//! controller; retries, dead letters, a foreign certificate, and the
//! targets the address policy refuses.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, output_text, wait_until};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A CA of the test's own, and a certificate it signed for 127.0.0.1.
struct TestCa {
    pem: String,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "notify test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca.pem(), &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Self { pem: ca.pem(), leaf: leaf.der().clone(), key }
    }
}

/// One request the receiver read.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// An HTTPS server on 127.0.0.1 answering every POST with `status`,
/// keeping what it read.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    /// Connections whose TLS handshake failed.
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(ca: &TestCa, port: u16, status: u16) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ca.leaf.clone()], ca.key.clone_key())
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Self { port, got: Arc::default(), status: Arc::new(AtomicU16::new(status)), refused: Arc::default() };
        let (got, answer, refused) = (receiver.got.clone(), receiver.status.clone(), receiver.refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, got, answer, refused) = (config.clone(), got.clone(), answer.clone(), refused.clone());
                std::thread::spawn(move || match serve(config, stream, answer.load(Ordering::SeqCst)) {
                    Ok(request) => got.lock().unwrap().push(request),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a request to `path` satisfies `want`.
    fn wait_for(&self, what: &str, path: &str, want: impl Fn(&Received) -> bool) -> Received {
        wait_until(what, WAIT, || self.received().into_iter().find(|r| r.path == path && want(r)))
            .unwrap_or_else(|e| panic!("{e}; received: {:?}", self.received().iter().map(|r| &r.path).collect::<Vec<_>>()))
    }
}

/// One request over TLS: the head, `Content-Length` bytes of body, one answer.
fn serve(config: Arc<rustls::ServerConfig>, stream: TcpStream, status: u16) -> std::io::Result<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the request"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or_default().to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = tls.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    write!(tls, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    tls.flush()?;
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(Received { path, headers, body })
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// What a receiver checks (docs/notifications.md): the timestamp within
/// five minutes, then HMAC-SHA256 of `TIMESTAMP.BODY` under the secret.
fn verify_signature(secret: &str, request: &Received) {
    let timestamp: u64 = request.headers["x-sluice-timestamp"].parse().unwrap();
    assert!(unix_now().abs_diff(timestamp) <= 300, "stale timestamp {timestamp}");
    let signature = request.headers["x-sluice-signature"].strip_prefix("v1=").expect("v1= signature");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(&request.body);
    ring::hmac::verify(&key, &message, &hex::decode(signature).unwrap()).expect("the signature verifies");
    // And a replayed body under another timestamp does not.
    let mut replay = format!("{}.", timestamp + 1).into_bytes();
    replay.extend_from_slice(&request.body);
    assert!(ring::hmac::verify(&key, &replay, &hex::decode(signature).unwrap()).is_err());
}

/// A cluster whose controller trusts `ca` for receivers and lets targets
/// be on loopback, with one agent; and the directory of the CA file.
fn cluster(ca: &TestCa, extra: &[&str]) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("receivers-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let mut args = vec!["--notification-ca", ca_file.to_str().unwrap(), "--notification-allow-private"];
    args.extend_from_slice(extra);
    let mut cluster = Cluster::new().controller_args(&args).start().unwrap();
    cluster.add_agent(&[]).unwrap();
    (cluster, dir)
}

/// A pipeline (git source, then `stages`) whose first execution has ended.
fn quiet_pipeline(cluster: &Cluster, name: &str, stages: &str) {
    let repo = cluster.dir.path().join(format!("{name}-repo"));
    make_repo(&repo, &[("a.txt", "a\n")]);
    let id = cluster.create_pipeline(name, &git_pipeline(name, "", &repo, stages));
    cluster.execution_end(name, &id, WAIT);
}

const NOOP_STAGE: &str = r#"{"name": "Build", "actions": [{"name": "Compile",
    "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;

/// `notification-rule create`; the rule as JSON (with signing secrets).
fn create_rule(cluster: &Cluster, pipeline: &str, events: &str, targets: &[String]) -> Value {
    let mut args = vec!["notification-rule", "create", "--pipeline", pipeline, "--event", events];
    for t in targets {
        args.extend(["--target", t.as_str()]);
    }
    cluster.sluice_json(&args).unwrap()
}

fn start(cluster: &Cluster, pipeline: &str) -> String {
    let out = cluster.sluice(&["pipeline", "start", pipeline, "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap().lines().next().unwrap_or_default().trim().to_string()
}

fn deliveries(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["notification", "deliveries"];
    all.extend_from_slice(args);
    cluster.sluice_json(&all).unwrap()["deliveries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_execution_is_notified_signed_to_a_webhook_and_as_text_to_slack() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, 0, 200);
    let (cluster, _ca_dir) = cluster(&ca, &[]);
    quiet_pipeline(&cluster, "notes", NOOP_STAGE);

    let slack_path = "/services/T0001/B0001/sEcReTpAtH";
    let hook = create_rule(
        &cluster,
        "notes",
        "pipeline-execution-started,stage-execution-started,action-execution-succeeded,pipeline-execution-succeeded",
        &[format!("webhook={}", receiver.url("/hook"))],
    );
    let secret = hook["targets"][0]["signingSecret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("nsec_"), "{hook}");
    let slack =
        create_rule(&cluster, "notes", "pipeline-execution-succeeded", &[format!("slack={}", receiver.url(slack_path))]);
    assert!(slack["targets"][0].get("signingSecret").is_none(), "{slack}");

    let execution = start(&cluster, "notes");
    let of_this = |r: &Received| r.json()["detail"]["execution-id"] == execution.as_str();
    let started = receiver.wait_for("execution started", "/hook", |r| {
        of_this(r) && r.headers["x-sluice-event"] == "codepipeline-pipeline-pipeline-execution-started"
    });
    verify_signature(&secret, &started);
    let body = started.json();
    assert_eq!(body["source"], "sluice");
    assert_eq!(body["detailType"], "CodePipeline Pipeline Execution State Change");
    assert_eq!(body["detail"]["pipeline"], "notes");
    assert_eq!(body["detail"]["state"], "STARTED");
    assert_eq!(body["notificationRuleId"], hook["id"]);
    let stage = receiver.wait_for("stage started", "/hook", |r| {
        of_this(r)
            && r.json()["eventType"] == "codepipeline-pipeline-stage-execution-started"
            && r.json()["detail"]["stage"] == "Build"
    });
    verify_signature(&secret, &stage);
    let action = receiver.wait_for("action succeeded", "/hook", |r| {
        of_this(r)
            && r.json()["eventType"] == "codepipeline-pipeline-action-execution-succeeded"
            && r.json()["detail"]["action"] == "Compile"
    });
    assert_eq!(action.json()["detail"]["stage"], "Build");
    let succeeded = receiver.wait_for("execution succeeded", "/hook", |r| {
        of_this(r) && r.json()["eventType"] == "codepipeline-pipeline-pipeline-execution-succeeded"
    });
    verify_signature(&secret, &succeeded);
    // Every delivery has an id of its own, the same on each attempt.
    assert_ne!(started.headers["x-sluice-delivery"], succeeded.headers["x-sluice-delivery"]);

    // Slack gets one readable line, unsigned.
    let text = receiver
        .wait_for("the slack message", slack_path, |r| r.json()["text"].as_str().is_some_and(|t| t.contains(&execution)));
    let text = text.json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("pipeline notes") && text.contains("SUCCEEDED"), "{text}");

    // Lists show scheme and host, never the path (Slack's secret) or a signing secret.
    for args in [vec!["notification-rule", "list"], vec!["notification-rule", "list", "--output", "json"]] {
        let out = cluster.sluice(&args);
        let shown = output_text(&out);
        assert!(out.status.success(), "{shown}");
        assert!(shown.contains(&format!("https://127.0.0.1:{}", receiver.port)), "{shown}");
        assert!(!shown.contains("sEcReTpAtH") && !shown.contains("/hook") && !shown.contains(&secret), "{shown}");
    }
    let delivered = wait_until("deliveries listed as delivered", WAIT, || {
        let rows = deliveries(&cluster, &["--status", "delivered", "--rule", hook["id"].as_str().unwrap()]);
        (rows.len() >= 4).then_some(rows)
    })
    .unwrap();
    assert!(
        delivered
            .iter()
            .all(|d| d["attempts"] == 1 && d["targetAddress"].as_str().unwrap().ends_with(&receiver.port.to_string()))
    );
    let out = cluster.sluice(&["notification", "deliveries"]);
    assert!(!output_text(&out).contains("sEcReTpAtH"), "{}", output_text(&out));

    // A manual approval waiting is announced; a stopped execution is canceled.
    let approval = r#"{"name": "Gate", "actions": [{"name": "Approve",
        "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}]}"#;
    let repo = cluster.dir.path().join("gate-repo");
    make_repo(&repo, &[("a.txt", "a\n")]);
    let first = cluster.create_pipeline("gate", &git_pipeline("gate", "", &repo, approval));
    wait_until("the first approval to wait", WAIT, || {
        let e = cluster.sluice_json(&["execution", "get", "gate", &first]).ok()?;
        (e["stages"][1]["actions"][0]["status"] == "InProgress").then_some(())
    })
    .unwrap();
    create_rule(
        &cluster,
        "gate",
        "manual-approval-needed,pipeline-execution-canceled",
        &[format!("webhook={}", receiver.url("/gate"))],
    );
    let out = cluster.sluice(&["pipeline", "stop", "gate", &first, "--mode", "abandon", "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    receiver.wait_for("execution canceled", "/gate", |r| {
        r.json()["eventType"] == "codepipeline-pipeline-pipeline-execution-canceled"
            && r.json()["detail"]["execution-id"] == first.as_str()
    });
    let out = cluster.sluice(&["pipeline", "start", "gate"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let needed = receiver.wait_for("approval needed", "/gate", |r| {
        r.json()["eventType"] == "codepipeline-pipeline-manual-approval-needed"
            && r.json()["detail"]["execution-id"] == second.as_str()
    });
    let body = needed.json();
    assert_eq!((body["detail"]["stage"].as_str(), body["detail"]["action"].as_str()), (Some("Gate"), Some("Approve")));
    assert_eq!(body["detailType"], "CodePipeline Manual Approval State Change");
}

#[test]
fn a_delivery_pending_when_the_controller_is_killed_is_delivered_after_the_restart() {
    let ca = TestCa::new();
    // A port nothing listens on yet: deliveries to it fail and wait.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut cluster, _ca_dir) = cluster(&ca, &[]);
    quiet_pipeline(&cluster, "durable", NOOP_STAGE);
    let rule = create_rule(
        &cluster,
        "durable",
        "pipeline-execution-succeeded",
        &[format!("webhook=https://127.0.0.1:{port}/later")],
    );
    let secret = rule["targets"][0]["signingSecret"].as_str().unwrap().to_string();
    let execution = start(&cluster, "durable");

    let pending = wait_until("a failed attempt, pending", WAIT, || {
        let rows = deliveries(&cluster, &["--status", "pending"]);
        rows.into_iter().find(|d| d["attempts"].as_u64() >= Some(1) && d["lastError"].is_string())
    })
    .unwrap();
    assert_eq!(pending["executionId"], execution.as_str());
    assert!(pending["nextAttempt"].is_string(), "{pending}");
    assert!(pending["lastError"].as_str().unwrap().to_lowercase().contains("connect"), "{pending}");

    cluster.kill_controller();
    let receiver = Receiver::start(&ca, port, 200);
    cluster.start_controller().unwrap();
    let got = receiver.wait_for("the delivery after the restart", "/later", |_| true);
    verify_signature(&secret, &got);
    assert_eq!(got.json()["detail"]["execution-id"], execution.as_str());
    let delivered = wait_until("the delivery recorded as delivered", WAIT, || {
        deliveries(&cluster, &["--status", "delivered"]).into_iter().find(|d| d["executionId"] == execution.as_str())
    })
    .unwrap();
    assert!(delivered["attempts"].as_u64().unwrap() >= 2, "{delivered}");
}

#[test]
fn a_failing_receiver_is_retried_then_dead_lettered_and_a_foreign_certificate_is_not_trusted() {
    let ca = TestCa::new();
    let failing = Receiver::start(&ca, 0, 500);
    let foreign = Receiver::start(&TestCa::new(), 0, 200);
    let gone = Receiver::start(&ca, 0, 404);
    let (cluster, _ca_dir) = cluster(&ca, &["--notification-max-attempts", "3"]);
    quiet_pipeline(&cluster, "flaky", NOOP_STAGE);

    // What the address policy and the checks refuse, with exit 2.
    for (target, why) in [
        ("webhook=https://169.254.169.254/latest/meta-data", "metadata"),
        ("webhook=https://[fe80::1]/x", "link-local"),
        ("webhook=http://127.0.0.1:9/x", "--notification-allow-http"),
        ("sns=https://127.0.0.1:9/x", "unknown target type"),
    ] {
        let out = cluster.sluice(&[
            "notification-rule",
            "create",
            "--pipeline",
            "flaky",
            "--event",
            "pipeline-execution-failed",
            "--target",
            target,
        ]);
        assert_eq!(out.status.code(), Some(2), "{target}: {}", output_text(&out));
        assert!(output_text(&out).contains(why), "{target}: {}", output_text(&out));
    }
    let out = cluster.sluice(&[
        "notification-rule",
        "create",
        "--pipeline",
        "flaky",
        "--event",
        "build-broke",
        "--target",
        &format!("webhook={}", failing.url("/x")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let out = cluster.sluice(&[
        "notification-rule",
        "create",
        "--pipeline",
        "nope",
        "--event",
        "pipeline-execution-failed",
        "--target",
        &format!("webhook={}", failing.url("/x")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));

    let event = "pipeline-execution-succeeded";
    let to_failing = create_rule(&cluster, "flaky", event, &[format!("webhook={}", failing.url("/fail"))]);
    let to_foreign = create_rule(&cluster, "flaky", event, &[format!("webhook={}", foreign.url("/foreign"))]);
    let to_gone = create_rule(&cluster, "flaky", event, &[format!("webhook={}", gone.url("/gone"))]);
    start(&cluster, "flaky");

    let dead_of = |rule: &Value| {
        let id = rule["id"].as_str().unwrap().to_string();
        wait_until(&format!("a dead letter of {id}"), WAIT, || {
            deliveries(&cluster, &["--status", "dead", "--rule", &id]).into_iter().next()
        })
        .unwrap()
    };
    // 500 three times, then a dead letter; a 404 is final at once.
    let dead = dead_of(&to_failing);
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert!(dead["lastError"].as_str().unwrap().contains("HTTP 500"), "{dead}");
    assert_eq!(failing.received().len(), 3);
    let dead_404 = dead_of(&to_gone);
    assert_eq!(dead_404["attempts"], 1, "{dead_404}");
    assert!(dead_404["lastError"].as_str().unwrap().contains("HTTP 404"), "{dead_404}");
    // A certificate from another CA: never delivered, the TLS error recorded.
    let refused = dead_of(&to_foreign);
    let error = refused["lastError"].as_str().unwrap();
    assert!(error.contains("certificate") || error.contains("UnknownIssuer"), "{refused}");
    assert!(foreign.received().is_empty());
    assert!(foreign.refused.load(Ordering::SeqCst) >= 1);
    let table = output_text(&cluster.sluice(&["notification", "deliveries", "--status", "dead"]));
    assert!(table.contains("LAST ERROR") && table.contains("HTTP 500") && table.contains("dead"), "{table}");

    // Redelivered once the receiver is well again.
    failing.status.store(200, Ordering::SeqCst);
    let out = cluster.sluice(&["notification", "redeliver", dead["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    wait_until("the redelivery", WAIT, || {
        let rows = deliveries(&cluster, &["--status", "delivered", "--rule", to_failing["id"].as_str().unwrap()]);
        rows.into_iter().next()
    })
    .unwrap();
    assert_eq!(failing.received().len(), 4);

    // Deleting a rule deletes its deliveries; an unknown one is not found.
    let gone_id = to_gone["id"].as_str().unwrap();
    let out = cluster.sluice(&["notification-rule", "delete", gone_id]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(deliveries(&cluster, &[]).iter().all(|d| d["ruleId"] != gone_id));
    let listed = cluster.sluice_json(&["notification-rule", "list", "--pipeline", "flaky"]).unwrap();
    assert_eq!(listed["notificationRules"].as_array().unwrap().len(), 2, "{listed}");
    let out = cluster.sluice(&["notification-rule", "delete", gone_id]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(output_text(&out).contains("does not exist"), "{}", output_text(&out));

    // Deleting the pipeline deletes its rules and their deliveries.
    let out = cluster.sluice(&["pipeline", "delete", "flaky"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        cluster.sluice_json(&["notification-rule", "list"]).unwrap()["notificationRules"].as_array().unwrap().is_empty()
    );
    assert!(deliveries(&cluster, &[]).is_empty());
}

#[test]
fn a_retried_stage_resumes_its_execution_and_a_failure_says_why() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, 0, 200);
    let (cluster, _ca_dir) = cluster(&ca, &[]);
    // Fails on its first two runs, succeeds on the third.
    let marker = cluster.dir.path().join("runs");
    let stages = format!(
        r#"{{"name": "Build", "actions": [{{"name": "Flaky", "inputArtifacts": [{{"name": "src"}}],
            "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
            "configuration": {{"Commands": "n=$(cat {m} 2>/dev/null || echo 0); echo $((n+1)) > {m}; [ $n -ge 2 ]"}},
            "capabilities": {{"exec": ["sh"]}}}}]}}"#,
        m = marker.display()
    );
    quiet_pipeline(&cluster, "retried", &stages);
    let first = cluster.sluice_json(&["pipeline", "history", "retried"]).unwrap()["pipelineExecutionSummaries"][0]
        ["pipelineExecutionId"]
        .as_str()
        .unwrap()
        .to_string();
    create_rule(
        &cluster,
        "retried",
        "action-execution-failed,pipeline-execution-resumed,stage-execution-failed,stage-execution-resumed,\
         stage-execution-started,pipeline-execution-succeeded",
        &[format!("webhook={}", receiver.url("/retried"))],
    );
    let event = |r: &Received, id: &str| r.json()["eventType"] == format!("codepipeline-pipeline-{id}");

    let out = cluster.sluice(&["stage", "retry", "retried", "Build", &first, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "the second run fails too: {}", output_text(&out));
    receiver.wait_for("resumed", "/retried", |r| event(r, "pipeline-execution-resumed"));
    let failed = receiver.wait_for("the action failed", "/retried", |r| event(r, "action-execution-failed"));
    let detail = &failed.json()["detail"];
    assert_eq!((detail["stage"].as_str(), detail["action"].as_str()), (Some("Build"), Some("Flaky")));
    assert_eq!(detail["state"], "FAILED");
    assert!(detail["message"].is_string(), "a failure says why: {detail}");
    receiver.wait_for("the stage failed", "/retried", |r| event(r, "stage-execution-failed"));

    let out = cluster.sluice(&["stage", "retry", "retried", "Build", &first, "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    receiver.wait_for("succeeded", "/retried", |r| event(r, "pipeline-execution-succeeded"));
    let resumed = receiver.received().iter().filter(|r| event(r, "pipeline-execution-resumed")).count();
    assert_eq!(resumed, 2, "each retry resumes the execution, none starts one");
    let stages: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| event(r, "stage-execution-resumed") || event(r, "stage-execution-started"))
        .map(|r| format!("{} {}", r.json()["eventType"].as_str().unwrap(), r.json()["detail"]["stage"].as_str().unwrap()))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages.iter().all(|s| s == "codepipeline-pipeline-stage-execution-resumed Build"), "{stages:?}");
}

/// The CLI as another user (the cluster's API and CA, `token`).
fn as_user(cluster: &Cluster, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(sluice_tests::bin("sluice"))
        .args(args)
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_TOKEN", token)
        .env("SLUICE_CA", cluster.data_dir().join("ca").join("ca.crt"))
        .env("SLUICE_CONFIG", cluster.dir.path().join("no-profiles.json"))
        .env_remove("SLUICE_PROFILE")
        .output()
        .unwrap()
}

#[test]
fn a_viewer_reads_rules_and_deliveries_but_cannot_change_or_redeliver_them() {
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, 0, 404);
    let (cluster, _ca_dir) = cluster(&ca, &[]);
    quiet_pipeline(&cluster, "watched", NOOP_STAGE);
    let rule =
        create_rule(&cluster, "watched", "pipeline-execution-succeeded", &[format!("webhook={}", receiver.url("/w"))]);
    let rule_id = rule["id"].as_str().unwrap();
    start(&cluster, "watched");
    let dead = wait_until("a dead letter", WAIT, || deliveries(&cluster, &["--status", "dead"]).into_iter().next()).unwrap();

    let token = |user: &str, role: &str| {
        let out = cluster.sluice(&["user", "create", user, "--role", role]);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = cluster.sluice(&["token", "create", "--user", user]);
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let vera = token("vera", "viewer");
    let out = as_user(&cluster, &vera, &["notification-rule", "list", "--output", "json"]);
    assert!(out.status.success() && output_text(&out).contains(rule_id), "{}", output_text(&out));
    let out = as_user(&cluster, &vera, &["notification", "deliveries", "--output", "json"]);
    assert!(out.status.success() && output_text(&out).contains(dead["id"].as_str().unwrap()), "{}", output_text(&out));

    let target = format!("webhook={}", receiver.url("/v"));
    for (args, permission) in [
        (
            vec![
                "notification-rule",
                "create",
                "--pipeline",
                "watched",
                "--event",
                "pipeline-execution-failed",
                "--target",
                &target,
            ],
            "codestar-notifications:CreateNotificationRule",
        ),
        (vec!["notification-rule", "delete", rule_id], "codestar-notifications:DeleteNotificationRule"),
        (vec!["notification", "redeliver", dead["id"].as_str().unwrap()], "sluice:RedeliverNotification"),
    ] {
        let out = as_user(&cluster, &vera, &args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {text}");
        assert!(text.contains(permission) && text.contains("pipeline/watched"), "{args:?}: {text}");
    }
    assert_eq!(
        cluster.sluice_json(&["notification-rule", "list"]).unwrap()["notificationRules"].as_array().unwrap().len(),
        1
    );

    // An operator may.
    let otto = token("otto", "operator");
    let out = as_user(
        &cluster,
        &otto,
        &[
            "notification-rule",
            "create",
            "--pipeline",
            "watched",
            "--event",
            "pipeline-execution-failed",
            "--target",
            &target,
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
}
