//! Metrics, logs and readiness (issue 17, obs) on real processes: a
//! controller and an agent with `--metrics` and `--log-format json`,
//! scraped during a run and read with a Prometheus text-format parser
//! (`prometheus-parse`), their logs read line by line as JSON, `/readyz`
//! failing while the driver is really held up.

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;
use sluice_tests::{Cluster, WAIT, make_repo, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A port free now on loopback (`--metrics` is given a fixed address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `curl` of `url`: the status, the response headers and the body.
fn curl(url: &str, args: &[&str]) -> (u16, String, String) {
    let out =
        Command::new("curl").args(["-s", "-D", "-", "--max-time", "30"]).args(args).arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A scrape of `url` that sees everything that happened before the call:
/// the driver's part is a snapshot at most a second old.
fn scrape_after_a_second(url: &str) -> Scrape {
    std::thread::sleep(Duration::from_millis(1100));
    parse(&curl(url, &[]).2)
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a scrape parses")
}

/// The value of the sample `name` whose labels include `labels`; a
/// histogram's is its count.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| {
        match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Sample::Summary(_) => f64::NAN,
        }
    })
}

/// A Source stage checking `repo` out and a Build stage running `commands`.
fn pipeline(name: &str, repo: &Path, commands: &str) -> String {
    let work = serde_json::json!({
        "name": "Work",
        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
        "configuration": {"Commands": commands},
        "inputArtifacts": [{"name": "src"}],
        "capabilities": {"exec": ["sh"]},
    });
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{work}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// Every line of a log, as JSON (a line that is not fails the test).
fn json_lines(log: &str, whose: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a line of the {whose}'s log is not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn metrics_move_with_a_run_and_logs_are_json_lines_with_request_ids() {
    let (controller_port, agent_port) = (free_port(), free_port());
    let controller_metrics = format!("127.0.0.1:{controller_port}");
    let agent_metrics = format!("127.0.0.1:{agent_port}");
    let cluster = Cluster::new()
        .controller_args(&["--metrics", &controller_metrics, "--log-format", "json"])
        .agent_args(&["--metrics", &agent_metrics, "--log-format", "json"])
        .agent(&[])
        .start()
        .unwrap();
    let ca = cluster.ca_file();
    let ca = ca.to_str().unwrap();
    let bearer = format!("Authorization: Bearer {}", cluster.token);
    let api_metrics = format!("{}/metrics", cluster.api);
    let open_metrics = format!("http://{controller_metrics}/metrics");

    // The attacker's side: no token, or a bad one, on the API.
    let (status, head, body) = curl(&api_metrics, &["--cacert", ca]);
    assert_eq!(status, 401, "{head}{body}");
    let refused_id = header(&head, "x-request-id").expect("a request id").to_string();
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["requestId"], refused_id.as_str(), "the error body carries the request id: {body}");
    let (status, _, _) = curl(&api_metrics, &["--cacert", ca, "-H", "Authorization: Bearer sat_nope"]);
    assert_eq!(status, 401);
    // A refused API call (logged at debug, as probes and scrapes are).
    let (status, head, body) = curl(&format!("{}/v1/pipelines", cluster.api), &["--cacert", ca]);
    assert_eq!(status, 401, "{body}");
    let refused_id = header(&head, "x-request-id").expect("a request id").to_string();
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["requestId"], refused_id.as_str());
    assert!(!curl(&api_metrics, &["--cacert", ca]).2.contains("sluice_"), "no figure leaks without a token");

    // With the admin token on the API, and without one on --metrics.
    let (status, head, body) = curl(&api_metrics, &["--cacert", ca, "-H", &bearer]);
    assert_eq!(status, 200, "{body}");
    assert!(header(&head, "content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{head}");
    let first = parse(&body);
    assert_eq!(value(&first, "sluice_driver_up", &[]), Some(1.0));
    assert_eq!(value(&first, "sluice_agents", &[("state", "connected")]), Some(1.0));
    assert!(value(&first, "sluice_certificate_expiry_seconds", &[("certificate", "ca")]).unwrap() > 1.7e9);
    assert!(value(&first, "sluice_certificate_expiry_seconds", &[("certificate", "api")]).unwrap() > 1.7e9);
    let commits_before = value(&first, "sluice_store_commit_seconds_count", &[]).unwrap();
    let (status, _, open) = curl(&open_metrics, &[]);
    assert_eq!(status, 200);
    assert_eq!(value(&parse(&open), "sluice_driver_up", &[]), Some(1.0));
    assert_eq!(curl(&format!("http://{controller_metrics}/readyz"), &[]).0, 200);
    assert_eq!(curl(&format!("{}/readyz", cluster.api), &["--cacert", ca]).0, 200);

    // A run held in its Build action until released.
    make_repo(&cluster.dir.path().join("repo"), &[("README", "obs\n")]);
    let started = cluster.dir.path().join("started");
    let release = cluster.dir.path().join("release");
    let commands = format!("touch {}\nwhile [ ! -e {} ]; do sleep 0.1; done", started.display(), release.display());
    let id = cluster.create_pipeline("obs", &pipeline("obs", &cluster.dir.path().join("repo"), &commands));
    wait_until("the Build action to start", WAIT, || started.exists().then_some(())).unwrap();
    let during = scrape_after_a_second(&open_metrics);
    assert_eq!(value(&during, "sluice_executions_in_progress", &[("pipeline", "obs")]), Some(1.0));
    assert_eq!(value(&during, "sluice_actions_total", &[("pipeline", "obs"), ("status", "Succeeded")]), Some(1.0));
    assert_eq!(value(&during, "sluice_executions_total", &[("pipeline", "obs"), ("status", "Succeeded")]), None);
    assert_eq!(value(&during, "sluice_agent_jobs_running", &[]), Some(1.0));
    let agent = parse(&curl(&format!("http://{agent_metrics}/metrics"), &[]).2);
    assert_eq!(value(&agent, "sluice_agent_connected", &[]), Some(1.0));
    assert_eq!(value(&agent, "sluice_agent_jobs_running", &[]), Some(1.0));
    assert_eq!(value(&agent, "sluice_agent_slots", &[]), Some(2.0));
    let (status, _, health) = curl(&format!("http://{agent_metrics}/healthz"), &[]);
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!((health["connected"].as_bool(), health["running"].as_array().map(Vec::len)), (Some(true), Some(1)));

    std::fs::write(&release, "").unwrap();
    let end = cluster.execution_end("obs", &id, WAIT);
    assert_eq!(end["pipelineExecution"]["status"], "Succeeded", "{end}");
    let after = scrape_after_a_second(&open_metrics);
    assert_eq!(value(&after, "sluice_executions_total", &[("pipeline", "obs"), ("status", "Succeeded")]), Some(1.0));
    assert_eq!(value(&after, "sluice_actions_total", &[("pipeline", "obs"), ("status", "Succeeded")]), Some(2.0));
    assert_eq!(value(&after, "sluice_executions_in_progress", &[("pipeline", "obs")]), None);
    assert_eq!(value(&after, "sluice_action_duration_seconds_count", &[("provider", "shell")]), Some(1.0));
    assert_eq!(value(&after, "sluice_action_duration_seconds_count", &[("provider", "git")]), Some(1.0));
    assert!(value(&after, "sluice_store_commit_seconds_count", &[]).unwrap() > commits_before);
    assert!(value(&after, "sluice_artifact_bytes_total", &[("direction", "in")]).unwrap() > 0.0);
    assert!(value(&after, "sluice_artifact_bytes_total", &[("direction", "out")]).unwrap() > 0.0);
    let agent = parse(&curl(&format!("http://{agent_metrics}/metrics"), &[]).2);
    assert_eq!(value(&agent, "sluice_agent_plugin_call_seconds_count", &[("kind", "action")]), Some(2.0));
    assert!(value(&agent, "sluice_agent_plugin_compile_seconds_count", &[]).unwrap() >= 1.0);
    assert!(value(&agent, "sluice_certificate_expiry_seconds", &[("certificate", "agent")]).unwrap() > 1.7e9);
    assert_eq!(value(&agent, "sluice_agent_jobs_running", &[]), Some(0.0));

    // Actions waiting, and why: behind a disabled transition, and for an
    // agent with labels none has.
    let out = cluster.sluice(&["transition", "disable", "obs", "Build", "--reason", "change freeze"]);
    assert!(out.status.success(), "{}", sluice_tests::output_text(&out));
    assert!(cluster.sluice(&["pipeline", "start", "obs"]).status.success());
    let picky = pipeline("picky", &cluster.dir.path().join("repo"), "true")
        .replace(r#""capabilities":{"exec":["sh"]}"#, r#""capabilities":{"exec":["sh"]},"agentLabels":{"pool":"gpu"}"#);
    assert!(picky.contains("gpu"), "{picky}");
    cluster.create_pipeline("picky", &picky);
    let waiting = |reason: &str| {
        let scrape = parse(&curl(&open_metrics, &[]).2);
        value(&scrape, "sluice_actions_waiting", &[("reason", reason)])
    };
    wait_until("an action held by the transition", WAIT, || (waiting("transition_disabled") == Some(1.0)).then_some(()))
        .unwrap();
    wait_until("an action waiting for labels", WAIT, || (waiting("no_agent_with_labels") == Some(1.0)).then_some(()))
        .unwrap();
    assert_eq!(waiting("no_free_slot"), Some(0.0));

    // Both logs: JSON, line by line; an API call logged once with the id
    // its answer carried; the refused one (401) only at debug, not here.
    let (status, head, _) = curl(&format!("{}/v1/pipelines", cluster.api), &["--cacert", ca, "-H", &bearer]);
    assert_eq!(status, 200);
    let listed_id = header(&head, "x-request-id").expect("a request id").to_string();
    let controller = json_lines(&cluster.controller_log(), "controller");
    let logged: Vec<&Value> = controller.iter().filter(|l| l["request_id"] == listed_id.as_str()).collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!((logged[0]["method"].as_str(), logged[0]["path"].as_str()), (Some("GET"), Some("/v1/pipelines")));
    assert_eq!(logged[0]["status"], 200);
    assert_eq!(logged[0]["level"], "INFO");
    assert!(logged[0]["duration_ms"].as_f64().is_some());
    assert!(!controller.iter().any(|l| l["request_id"] == refused_id.as_str()), "a 401 is logged at debug");
    assert!(controller.iter().any(|l| l["message"] == "action" && l["pipeline"] == "obs"));
    let agent_log = json_lines(&cluster.agent_log(0), "agent");
    assert!(agent_log.iter().any(|l| l["message"] == "connected"), "{agent_log:?}");
    assert!(!cluster.agent_log(0).contains('\u{1b}') && !cluster.controller_log().contains('\u{1b}'), "no colour in a file");
}

#[test]
fn readyz_fails_while_the_driver_is_held_up_and_recovers() {
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let cluster = Cluster::new()
        .controller_args(&["--metrics", &metrics])
        .controller_env("SLUICE_DEBUG_DRIVER_STALL_ON_PIPELINE", "stall")
        .start()
        .unwrap();
    let readyz = format!("http://{metrics}/readyz");
    assert_eq!(curl(&readyz, &[]).0, 200);
    // Creating this pipeline holds the driver up (a debug build's hook) for
    // longer than the readiness bound; the CLI waits for it meanwhile.
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "x\n")]);
    let file = cluster.dir.path().join("stall.json");
    std::fs::write(&file, pipeline("stall", &repo, "true")).unwrap();
    let mut create = cluster.cli();
    let create = create
        .args(["pipeline", "create", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The probe reads the driver's progress mark: 503 once the driver has
    // taken no step for the readiness bound (5 s) within the stall (12 s).
    wait_until("the driver to be not ready", WAIT, || (curl(&readyz, &[]).0 == 503).then_some(())).unwrap();
    let (status, _, body) = curl(&readyz, &[]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not making progress"), "{body}");
    let (status, _, body) = curl(&format!("{}/readyz", cluster.api), &["--cacert", cluster.ca_file().to_str().unwrap()]);
    assert_eq!(status, 503, "{body}");
    // The scrape still answers, at once, saying the driver is not up.
    let scrape = parse(&curl(&format!("http://{metrics}/metrics"), &[]).2);
    assert_eq!(value(&scrape, "sluice_driver_up", &[]), Some(0.0));
    assert!(value(&scrape, "sluice_api_requests_total", &[("code", "5xx")]).is_some());
    let mut create = create;
    let _ = create.wait();
    wait_until("the driver to answer again", WAIT, || (curl(&readyz, &[]).0 == 200).then_some(())).unwrap();
}
