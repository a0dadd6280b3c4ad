//! Outgoing HTTP, host-call deadlines and output limits, with real
//! components and a real server on loopback.

use super::tests::*;
use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

/// A request the test server received.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers every request with one
/// canned response (or never answers, with `silent`) and records what it got.
struct Server {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    fn start(status: u16, content_type: &str, body: &str) -> Self {
        Self::start_with(Some(format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )))
    }

    fn silent() -> Self {
        Self::start_with(None)
    }

    fn start_with(response: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&mut stream) else { continue };
                log.lock().unwrap().push(request);
                match &response {
                    Some(r) => {
                        let _ = stream.write_all(r.as_bytes());
                    }
                    // Hold the connection open, answering nothing.
                    None => std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(120));
                        drop(stream);
                    })
                    .join()
                    .map(|_| ())
                    .unwrap_or(()),
                }
            }
        });
        Self { port, received }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received { request_line: request_line.trim_end().to_string(), headers, body })
}

fn http_grants(patterns: &[&str]) -> Grants {
    Grants { http: patterns.iter().map(|p| p.to_string()).collect(), ..Grants::default() }
}

fn builtin(f: &Fixture, provider: &str) -> Arc<LoadedPlugin> {
    let b = sluice_builtins::BUILTINS.iter().find(|b| b.provider == provider).expect("a built-in");
    f.runtime.load(b.wasm, None).unwrap()
}

/// Runs a built-in with a configuration and grants; returns the outcome and
/// the log.
fn run_builtin(
    f: &Fixture,
    plugin: &LoadedPlugin,
    config: &[(&str, &str)],
    grants: Grants,
    secrets: &[(&str, &str)],
) -> (Outcome, Vec<String>) {
    let mut inv = invocation(f, "unused", grants, Duration::from_secs(30));
    inv.configuration = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    inv.inputs.clear();
    inv.outputs.clear();
    inv.secrets = secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let log: Arc<dyn LogSink> = Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string()));
    let outcome = f.runtime.run_action(plugin, &inv, log);
    let lines = lines.lock().unwrap().clone();
    (outcome, lines)
}

#[test]
fn http_needs_a_grant_and_private_addresses_need_one_naming_them() {
    let f = fixture(64 << 20);
    let server = Server::start(200, "text/plain", "hello");
    let port = server.port;
    let loopback = server.url("127.0.0.1", "/x");
    let by_name = server.url("localhost", "/x");
    let run_http = |url: &str, grants: Grants| run_with(&f, "http", &[("Url", url)], grants, Duration::from_secs(30));

    // No grant: refused before anything is resolved, in the plugin and in the log.
    let (outcome, lines) = run_http(&loopback, Grants::default());
    let message = failure(&outcome);
    assert!(message.contains(&format!("http to 127.0.0.1:{port} is not granted to this action")), "{message}");
    assert!(lines.iter().any(|l| l.starts_with("[warn] http request refused")), "{lines:?}");

    // Another host granted: the message lists what is granted.
    let (outcome, _) = run_http(&loopback, http_grants(&["api.example.com:443"]));
    assert!(failure(&outcome).contains("granted: api.example.com:443"), "{outcome:?}");

    // Any host is granted, but loopback needs a grant naming it.
    let (outcome, _) = run_http(&loopback, http_grants(&["*:*"]));
    assert!(failure(&outcome).contains("a loopback address"), "{outcome:?}");

    // A granted name that resolves to loopback is refused after resolution;
    // the plugin learns the kind of address, the log which one.
    let (outcome, lines) = run_http(&by_name, http_grants(&[&format!("localhost:{port}")]));
    let message = failure(&outcome);
    assert!(message.contains("the name resolves to a loopback address") && !message.contains("127.0.0.1"), "{message}");
    let logged = lines.iter().find(|l| l.starts_with("[warn] http request refused")).expect("logged");
    assert!(logged.contains("resolves to 127.0.0.1") || logged.contains("resolves to ::1"), "{logged}");
    assert!(logged.contains(&format!("127.0.0.1:{port}")) || logged.contains(&format!("[::1]:{port}")), "{logged}");
    assert!(server.requests().is_empty(), "nothing reached the server: {:?}", server.requests());

    // Naming the address lets it through, by IP or by name.
    let (outcome, _) = run_http(&loopback, http_grants(&[&format!("127.0.0.1:{port}")]));
    assert!(matches!(&outcome, Outcome::Succeeded { summary, .. } if summary == "HTTP 200"), "{outcome:?}");
    let (outcome, _) = run_http(&by_name, http_grants(&[&format!("localhost:{port}"), "127.0.0.0/8:*", "[::1]:*"]));
    assert!(matches!(&outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].request_line, "GET /x HTTP/1.1");
    assert!(requests[1].headers.iter().any(|(n, v)| n == "host" && v == &format!("localhost:{port}")), "{requests:?}");

    // The wrong port of a granted address is still refused.
    let (outcome, _) = run_http(&loopback, http_grants(&[&format!("127.0.0.1:{}", port.wrapping_add(1).max(1))]));
    assert!(failure(&outcome).contains("not granted"), "{outcome:?}");
}

#[test]
fn a_flood_of_requests_is_bounded_in_flight_and_in_the_log() {
    let f = fixture(64 << 20);
    // 5000 refused requests, none waited for: the log keeps a few and counts the rest.
    let config = [("Authority", "api.example.com:80"), ("Count", "5000")];
    let (outcome, lines) = run_with(&f, "request-flood", &config, Grants::default(), Duration::from_secs(30));
    let Outcome::Succeeded { summary, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(summary.starts_with("0 answered, 5000 failed"), "{summary}");
    let refused = lines.iter().filter(|l| l.starts_with("[warn] http request refused")).count();
    assert!((1..=32).contains(&refused), "{refused} refusal lines");
    assert!(lines.iter().any(|l| l.contains("more http requests were refused")), "{lines:?}");

    // At most 16 at once: a server that never answers holds 16, the rest
    // are refused, and the deadline ends the call.
    let server = Server::silent();
    let authority = format!("127.0.0.1:{}", server.port);
    let config = [("Authority", authority.as_str()), ("Count", "20")];
    let started = Instant::now();
    let (outcome, lines) = run_with(&f, "request-flood", &config, http_grants(&[&authority]), Duration::from_secs(2));
    assert!(failure(&outcome).contains("deadline"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    let in_flight = lines.iter().filter(|l| l.contains("more than 16 requests of this action are in flight")).count();
    assert_eq!(in_flight, 4, "{lines:?}");
}

#[test]
fn waits_in_host_calls_end_at_the_deadline_or_a_cancel() {
    let f = fixture(64 << 20);
    // std::thread::sleep in the guest parks in wasi:io/poll.
    let started = Instant::now();
    let (outcome, _) = run(&f, "sleep", Grants::default(), Duration::from_secs(1));
    assert!(failure(&outcome).contains("deadline"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A blocking write to a stream nobody reads (a request body never
    // sent) waits only until the deadline.
    let started = Instant::now();
    let (outcome, _) = run(&f, "stuck-body", Grants::default(), Duration::from_secs(1));
    assert!(failure(&outcome).contains("deadline"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A server that accepts and never answers holds the plugin only until
    // the deadline.
    let server = Server::silent();
    let url = server.url("127.0.0.1", "/slow");
    let started = Instant::now();
    let grants = http_grants(&[&format!("127.0.0.1:{}", server.port)]);
    let (outcome, _) = run_with(&f, "http", &[("Url", &url)], grants.clone(), Duration::from_secs(2));
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());

    // A cancel ends a sleep at once.
    let plugin = hostile(&f);
    let inv = invocation(&f, "sleep", Grants::default(), Duration::from_secs(600));
    let cancel = inv.cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel();
    });
    let started = Instant::now();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}));
    canceller.join().unwrap();
    assert!(failure(&outcome).contains("cancelled"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // And the runtime serves the next call.
    assert!(matches!(run(&f, "ok", Grants::default(), Duration::from_secs(30)).0, Outcome::Succeeded { .. }));
}

#[test]
fn a_giant_output_and_a_component_of_another_world_are_refused() {
    let f = fixture(64 << 20);
    // The fixture allows 16 MiB per output; the plugin writes 64 MiB.
    let (outcome, _) = run(&f, "giant-output", Grants::default(), Duration::from_secs(60));
    assert_eq!(failure(&outcome), "output artifact \"out\" holds more than 16 MiB, the limit of one artifact");
    let (outcome, _) = run_with(&f, "giant-output", &[("Bytes", "1048576")], Grants::default(), Duration::from_secs(60));
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");

    let other = std::fs::read(sluice_test_plugins::test_plugin("other-world")).unwrap();
    let error = format!("{:#}", f.runtime.load(&other, None).err().expect("refused"));
    assert!(error.contains("does not export sluice:plugin/action"), "{error}");
    assert!(matches!(run(&f, "ok", Grants::default(), Duration::from_secs(30)).0, Outcome::Succeeded { .. }));
}

#[test]
fn the_http_plugin_checks_the_answer_and_reads_json() {
    let f = fixture(64 << 20);
    let plugin = builtin(&f, "http");
    let server = Server::start(200, "application/json", r#"{"build": {"id": 42, "state": "green"}, "tags": ["a", "b"]}"#);
    let grants = http_grants(&[&format!("127.0.0.1:{}", server.port)]);
    let url = server.url("127.0.0.1", "/api/build");
    let ok = [
        ("Url", url.as_str()),
        ("Method", "POST"),
        ("Body", "{\"ref\": \"main\"}"),
        ("Headers", "X-Trace: t1"),
        ("BearerTokenSecret", "API_TOKEN"),
        ("ExpectedStatus", "200,201"),
        ("ExpectedBodyContains", "green"),
        ("OutputVariables", "BuildId=/build/id\nSecondTag=/tags/1"),
    ];
    let mut with_secret = grants.clone();
    with_secret.secrets = vec!["API_TOKEN".into()];
    let (outcome, lines) = run_builtin(&f, &plugin, &ok, with_secret.clone(), &[("API_TOKEN", "tok-9f8e7d")]);
    let Outcome::Succeeded { output_variables, summary, .. } = &outcome else { panic!("{outcome:?} {lines:?}") };
    assert_eq!(output_variables.get("BuildId").map(String::as_str), Some("42"));
    assert_eq!(output_variables.get("SecondTag").map(String::as_str), Some("b"));
    assert_eq!(output_variables.get("StatusCode").map(String::as_str), Some("200"));
    assert!(summary.contains("POST") && summary.contains("200"), "{summary}");
    assert!(!lines.iter().any(|l| l.contains("tok-9f8e7d")), "{lines:?}");
    let sent = &server.requests()[0];
    assert_eq!(sent.request_line, "POST /api/build HTTP/1.1");
    assert!(sent.headers.contains(&("authorization".into(), "Bearer tok-9f8e7d".into())), "{sent:?}");
    assert!(sent.headers.contains(&("x-trace".into(), "t1".into())), "{sent:?}");
    assert_eq!(sent.body, b"{\"ref\": \"main\"}");

    // A status or a body that does not match fails with what was seen.
    let (outcome, _) = run_builtin(&f, &plugin, &[("Url", &url), ("ExpectedStatus", "204")], grants.clone(), &[]);
    assert!(failure(&outcome).contains("200"), "{outcome:?}");
    let (outcome, _) = run_builtin(&f, &plugin, &[("Url", &url), ("ExpectedBodyContains", "red")], grants.clone(), &[]);
    assert!(failure(&outcome).contains("red"), "{outcome:?}");
    // Without the grant, the host's refusal is the reason.
    let (outcome, _) = run_builtin(&f, &plugin, &[("Url", &url)], Grants::default(), &[]);
    assert!(failure(&outcome).contains("not granted"), "{outcome:?}");
}

#[test]
fn webhook_notify_posts_a_slack_message_and_never_logs_a_secret_url() {
    let f = fixture(64 << 20);
    let plugin = builtin(&f, "webhook-notify");
    let server = Server::start(200, "text/plain", "ok");
    let hook = server.url("127.0.0.1", "/services/T000/B000/XXXXSECRETXXXX");
    let mut grants = http_grants(&[&format!("127.0.0.1:{}", server.port)]);
    grants.secrets = vec!["SLACK_URL".into()];
    let message = "Deployed \"web\" 1.2\nby #{someone}\\";
    let (outcome, lines) = run_builtin(
        &f,
        &plugin,
        &[("WebhookUrlSecret", "SLACK_URL"), ("Message", message), ("Channel", "#deploys")],
        grants.clone(),
        &[("SLACK_URL", &hook)],
    );
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?} {lines:?}");
    assert!(!lines.iter().any(|l| l.contains("XXXXSECRETXXXX")), "{lines:?}");
    let sent = &server.requests()[0];
    assert_eq!(sent.request_line, "POST /services/T000/B000/XXXXSECRETXXXX HTTP/1.1");
    assert!(sent.headers.contains(&("content-type".into(), "application/json".into())), "{sent:?}");
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["text"], message);
    assert_eq!(body["channel"], "#deploys");

    let failing = Server::start(404, "text/plain", "no_service");
    let mut grants = http_grants(&[&format!("127.0.0.1:{}", failing.port)]);
    grants.secrets = vec!["SLACK_URL".into()];
    let (outcome, _) = run_builtin(
        &f,
        &plugin,
        &[("WebhookUrlSecret", "SLACK_URL"), ("Message", "hi")],
        grants,
        &[("SLACK_URL", &failing.url("127.0.0.1", "/hook"))],
    );
    let message = failure(&outcome);
    assert!(message.contains("404") && message.contains("no_service"), "{message}");
}

#[test]
fn a_plugin_built_against_0_1_0_runs_on_this_host() {
    let f = fixture(64 << 20);
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("compat-0-1")).unwrap();
    let plugin = f.runtime.load(&bytes, None).unwrap();
    assert_eq!(plugin.interface_version(), "0.1.0");
    assert_eq!(hostile(&f).interface_version(), INTERFACE_VERSIONS[0]);
    let info = f.runtime.describe(&plugin).unwrap();
    assert_eq!((info.name.as_str(), info.capabilities.exec.as_slice()), ("compat-0-1", &["sh".to_string()][..]));

    // Every 0.1.0 import: log, files.copy, process.run, secrets.get.
    let mut inv = invocation(&f, "unused", sh(), Duration::from_secs(30));
    inv.configuration = vec![("Greeting".into(), "hi".into())];
    inv.grants.secrets = vec!["TOKEN".into()];
    inv.secrets = [("TOKEN".to_string(), "s3cr3t-t0ken".to_string())].into();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())));
    let lines = lines.lock().unwrap().clone();
    let Outcome::Succeeded { summary, output_variables, .. } = &outcome else { panic!("{outcome:?} {lines:?}") };
    assert_eq!(summary, "hi: copied 1 file(s)");
    assert_eq!(output_variables["Shell"], "from-sh");
    assert_eq!(output_variables["TokenLength"], "12");
    assert!(lines.contains(&"[info] hello from 0.1.0: hi".to_string()), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("the token is ***")) && !lines.iter().any(|l| l.contains("s3cr3t")),
        "{lines:?}"
    );
    let (_, output, _) = &inv.outputs[0];
    assert_eq!(std::fs::read_to_string(output.join("copy/file.txt")).unwrap(), "input");

    // Its grants are still enforced through the old imports.
    inv.grants = Grants::default();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}));
    assert!(failure(&outcome).contains("no `exec` grant"), "{outcome:?}");
}

/// Released WIT versions are frozen: their files must keep the digests
/// recorded when they were released.
#[test]
fn released_wit_versions_are_unchanged() {
    let released = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/released");
    let sums = std::fs::read_to_string(released.join("SHA256SUMS")).unwrap();
    let mut versions = Vec::new();
    for line in sums.lines() {
        let (digest, file) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(released.join(file)).unwrap();
        assert_eq!(super::digest(&bytes), digest, "{file} was edited after its release; add a new version instead");
        versions.push(file.split('/').next().unwrap().to_string());
    }
    // Every version the host runs except the newest is released and frozen.
    let mut expected: Vec<String> = INTERFACE_VERSIONS[1..].iter().map(|v| v.to_string()).collect();
    expected.sort();
    versions.sort();
    assert_eq!(versions, expected);
    let newest = std::fs::read_to_string(released.join("../plugin.wit")).unwrap();
    assert!(newest.contains(&format!("package sluice:plugin@{};", INTERFACE_VERSIONS[0])));
}

// Plugin authors' kit (issue 20, kit).
/// The SDK crate and the Python and JavaScript kits carry their own copy
/// of the WIT (each is published alone): every copy must be the newest
/// version byte for byte, and each one's version follows the WIT's minor
/// version (the policy of their READMEs).
#[test]
fn the_sdk_and_the_kits_vendor_the_newest_wit_byte_for_byte() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = std::fs::read(repo.join("wit/plugin.wit")).unwrap();
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    let kits = [
        ("plugin-sdk/wit/plugin.wit", "plugin-sdk/Cargo.toml", "version = \""),
        ("kits/python/sluice_plugin/wit/plugin.wit", "kits/python/pyproject.toml", "version = \""),
        ("kits/javascript/wit/plugin.wit", "kits/javascript/package.json", "  \"version\": \""),
    ];
    for (wit, manifest, prefix) in kits {
        let vendored = std::fs::read(repo.join(wit)).unwrap();
        assert!(vendored == newest, "{wit} differs from wit/plugin.wit: copy it (cp wit/plugin.wit {wit})");
        let manifest_text = std::fs::read_to_string(repo.join(manifest)).unwrap();
        let version = manifest_text.lines().find_map(|l| l.strip_prefix(prefix)).expect("a version");
        let version = version.trim_end_matches([',', '"']);
        assert_eq!(
            minor(version),
            minor(INTERFACE_VERSIONS[0]),
            "{manifest}: {version} must speak sluice:plugin@{}",
            INTERFACE_VERSIONS[0]
        );
    }
}

/// The agent runs plugins on tokio's blocking threads, inside its runtime,
/// with a log sink that blocks: wasi:http's tasks then run on the agent's
/// runtime, where nothing may block, not even to log a refusal.
#[test]
fn http_works_from_a_blocking_thread_of_a_tokio_runtime() {
    let f = Arc::new(fixture(64 << 20));
    let server = Server::start(200, "text/plain", "hello");
    let url = server.url("127.0.0.1", "/x");
    let exact = http_grants(&[&format!("127.0.0.1:{}", server.port)]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for (grants, expect) in [
        (exact, "HTTP 200"),
        (Grants::default(), "no http grant"),
        // Refused after resolution, on the async side.
        (http_grants(&["*:*"]), "a loopback address"),
    ] {
        let (f, url) = (f.clone(), url.clone());
        let (outcome, lines) = rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
            let drain = tokio::spawn(async move {
                let mut lines = Vec::new();
                while let Some(line) = rx.recv().await {
                    lines.push(line);
                }
                lines
            });
            let outcome = tokio::task::spawn_blocking(move || {
                let plugin = hostile(&f);
                let mut inv = invocation(&f, "http", grants, Duration::from_secs(30));
                inv.configuration.push(("Url".into(), url));
                let log: Arc<dyn LogSink> = Arc::new(move |l: &str| {
                    let _ = tx.blocking_send(l.to_string());
                });
                f.runtime.run_action(&plugin, &inv, log)
            })
            .await
            .unwrap();
            (outcome, drain.await.unwrap())
        });
        match &outcome {
            Outcome::Succeeded { summary, .. } => assert_eq!(summary, expect),
            Outcome::Failed { message, .. } => {
                assert!(message.contains(expect), "{message}");
                assert!(
                    lines.iter().any(|l| l.starts_with("[warn] http request refused") && l.contains(expect)),
                    "{lines:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// An HTTPS server on loopback with a certificate for 127.0.0.1, signed by
/// a CA of the test's own; answers every request with 200 "secure".
/// Returns its port and the CA certificate (PEM).
fn https_server() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                // Read the request head; a failed handshake ends here.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure");
                        let _ = tls.flush();
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, ca.pem())
}

#[test]
fn https_is_verified_against_the_roots_and_an_extra_ca() {
    let (port, ca_pem) = https_server();
    let url = format!("https://127.0.0.1:{port}/s");
    let grants = http_grants(&[&format!("127.0.0.1:{port}")]);

    // The Mozilla roots do not know the test's CA.
    let f = fixture(64 << 20);
    let (outcome, _) = run_with(&f, "http", &[("Url", &url)], grants.clone(), Duration::from_secs(30));
    let message = failure(&outcome);
    assert!(message.contains(&format!("TLS with 127.0.0.1:{port} failed: its certificate is not trusted")), "{message}");
    assert!(message.contains("UnknownIssuer") && message.contains("--http-ca"), "{message}");

    // Trusted as an extra root, the same server is reached over TLS.
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig { http_extra_roots: ca_pem.into_bytes(), ..RuntimeConfig::default() }).unwrap();
    let trusting = Fixture { runtime, dir };
    let (outcome, _) = run_with(&trusting, "http", &[("Url", &url)], grants, Duration::from_secs(30));
    assert!(matches!(&outcome, Outcome::Succeeded { summary, .. } if summary == "HTTP 200"), "{outcome:?}");

    // Something that is not a certificate is refused when the runtime starts.
    let bad = RuntimeConfig { http_extra_roots: b"not a certificate".to_vec(), ..RuntimeConfig::default() };
    let e = format!("{:#}", Runtime::new(bad).err().expect("refused"));
    assert!(e.contains("no PEM certificate"), "{e}");
}
