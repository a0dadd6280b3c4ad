//! HTTPS by default (issue 15): the CLI, curl and a TLS client against
//! the API of a real controller; a certificate from another CA refused; the
//! operator's certificate served and reloaded without a restart; plain
//! HTTP only on loopback; the webhook listener serving deliveries and
//! nothing else.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, bin, output_text, wait_for, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A CA of the test's own: its certificate (PEM) and what issues with it.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Self { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    /// A server certificate for loopback with this serial: (cert PEM, key
    /// PEM, DER of the certificate).
    fn server(&self, serial: u64) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Writes a file whole (a temp file renamed over it), as an operator's
/// certificate tooling does.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The CLI against `api` verifying with `ca` (none: the system's roots),
/// with no profile of the user running the tests.
fn sluice_with(dir: &Path, api: &str, ca: Option<&Path>, token: &str, args: &[&str]) -> Output {
    let mut command = Command::new(bin("sluice"));
    command.args(args).env("SLUICE_API", api).env("SLUICE_TOKEN", token).env_remove("SLUICE_PROFILE");
    command.env("SLUICE_CONFIG", dir.join("no-profiles.json"));
    match ca {
        Some(ca) => command.env("SLUICE_CA", ca),
        None => command.env_remove("SLUICE_CA"),
    };
    command.output().unwrap()
}

/// `curl -sS URL` with `args` (e.g. `--cacert FILE`): (exit code, body).
fn curl(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).arg(url).output().expect("curl");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// The DER of the certificate the API at `api` (`https://HOST:PORT`)
/// presents to a TLS client that trusts `ca`.
fn served_certificate(api: &str, ca: &Path) -> Result<Vec<u8>, String> {
    let host = api.strip_prefix("https://").ok_or("not https")?;
    let config = sluice_tests::tls_client_config(ca).map_err(|e| format!("{e:#}"))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut socket = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|e| e.to_string())?;
    }
    let leaf = connection.peer_certificates().and_then(|c| c.first()).ok_or("no certificate")?;
    Ok(leaf.to_vec())
}

/// The serial number `openssl` reads from the certificate the server
/// presents: what a client outside Rust sees.
fn openssl_serial(api: &str, ca: &Path) -> String {
    let host = api.strip_prefix("https://").unwrap();
    let script = format!(
        "openssl s_client -connect {host} -CAfile {} -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial",
        ca.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_cli_and_curl_speak_https_with_the_ca_and_refuse_a_certificate_from_another_ca() {
    let cluster = Cluster::new().start().unwrap();
    let dir = cluster.dir.path();
    let addresses: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.data_dir().join("controller.json")).unwrap()).unwrap();
    assert!(cluster.api.starts_with("https://127.0.0.1:"), "{addresses}");
    let ca = PathBuf::from(addresses["ca"].as_str().expect("controller.json names the CA"));
    assert_eq!(ca, std::path::absolute(cluster.data_dir().join("ca/ca.crt")).unwrap());
    assert!(std::fs::read_to_string(&ca).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!std::fs::read_to_string(&ca).unwrap().contains("PRIVATE KEY"));

    // The CLI and curl with the CA.
    let out = sluice_with(dir, &cluster.api, Some(&ca), &cluster.token, &["pipeline", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let ca_arg = ca.to_str().unwrap();
    assert_eq!(curl(&format!("{}/healthz", cluster.api), &["--cacert", ca_arg]), (0, "ok\n".to_string()));
    let auth = format!("Authorization: Bearer {}", cluster.token);
    let (code, body) = curl(&format!("{}/v1/pipelines", cluster.api), &["--cacert", ca_arg, "-H", &auth]);
    assert_eq!(code, 0, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["pipelines"].is_array(), "{body}");
    // The event stream over TLS.
    cluster.events(None).unwrap();

    // Without the CA (the system's roots) and with another CA: refused,
    // as an unreachable controller is (exit 1), naming the certificate and --ca.
    let other = TestCa::new("Some other CA");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &other.pem).unwrap();
    for trusted in [None, Some(other_ca.as_path())] {
        let out = sluice_with(dir, &cluster.api, trusted, &cluster.token, &["pipeline", "list"]);
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("certificate is not trusted") && stderr.contains("--ca"), "{stderr}");
        assert!(!stderr.contains(&cluster.token), "{stderr}");
    }
    let (code, body) = curl(&format!("{}/healthz", cluster.api), &[]);
    assert_eq!(code, 60, "curl without the CA: {body}");
    let (code, body) = curl(&format!("{}/healthz", cluster.api), &["--cacert", other_ca.to_str().unwrap()]);
    assert_eq!(code, 60, "curl with another CA: {body}");

    // Plain HTTP to the HTTPS listener: a clear error, no answer.
    let plain = cluster.api.replace("https://", "http://");
    let out = sluice_with(dir, &plain, Some(&ca), &cluster.token, &["pipeline", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("speaks HTTPS"), "{}", output_text(&out));

    // A profile made from the data dir: address, CA and token file.
    let config = dir.join("profiles.json");
    let profile = |args: &[&str]| {
        Command::new(bin("sluice"))
            .args(args)
            .env("SLUICE_CONFIG", &config)
            .env_remove("SLUICE_API")
            .env_remove("SLUICE_CA")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_PROFILE")
            .output()
            .unwrap()
    };
    let data_dir = cluster.data_dir();
    let out = profile(&["profile", "add", "local", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = profile(&["--profile", "local", "pipeline", "list", "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    // The only profile is the default one.
    let out = profile(&["agent", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = profile(&["--profile", "nope", "pipeline", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(!saved.contains(&cluster.token), "a profile keeps the token's file, not the token: {saved}");
}

#[test]
fn the_operators_certificate_is_served_and_reloaded_without_a_restart() {
    let ours = TestCa::new("Operator CA");
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) =
        (certs.path().join("api.crt"), certs.path().join("api.key"), certs.path().join("ca.pem"));
    let (cert1, key1, der1) = ours.server(1001);
    std::fs::write(&cert_path, &cert1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    std::fs::write(&ca_path, &ours.pem).unwrap();
    let mut cluster = Cluster::new()
        .controller_args(&["--api-cert", cert_path.to_str().unwrap(), "--api-key", key_path.to_str().unwrap()])
        .start()
        .unwrap();
    let dir = cluster.dir.path().to_path_buf();
    let pid = cluster.controller_pid().unwrap();
    let addresses: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.data_dir().join("controller.json")).unwrap()).unwrap();
    assert!(addresses.get("ca").is_none(), "the controller's CA does not verify the operator's certificate: {addresses}");

    // Served, verified with the operator's CA; the controller's own CA
    // does not verify it: a certificate from another CA is refused.
    assert_eq!(served_certificate(&cluster.api, &ca_path).unwrap(), der1);
    assert_eq!(openssl_serial(&cluster.api, &ca_path), "serial=03E9");
    let out = sluice_with(&dir, &cluster.api, Some(&ca_path), &cluster.token, &["pipeline", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let own_ca = cluster.data_dir().join("ca/ca.crt");
    let out = sluice_with(&dir, &cluster.api, Some(&own_ca), &cluster.token, &["pipeline", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"), "{}", output_text(&out));
    let (code, body) = curl(&format!("{}/healthz", cluster.api), &["--cacert", own_ca.to_str().unwrap()]);
    assert_eq!(code, 60, "{body}");

    // New files: served within a few seconds, by the same process.
    let (cert2, key2, der2) = ours.server(1002);
    replace(&key_path, &key2);
    replace(&cert_path, &cert2);
    wait_for("the new certificate to be served", WAIT, || match served_certificate(&cluster.api, &ca_path) {
        Ok(der) if der == der2 => Ok(()),
        Ok(_) => Err("the old certificate".into()),
        Err(e) => Err(e),
    })
    .unwrap();
    assert_eq!(openssl_serial(&cluster.api, &ca_path), "serial=03EA");
    assert_eq!(cluster.controller_pid(), Some(pid));
    assert!(cluster.controller_exit().is_none(), "the controller must not restart");
    let out = sluice_with(&dir, &cluster.api, Some(&ca_path), &cluster.token, &["pipeline", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));

    // A broken replacement (not PEM), then a key of another certificate:
    // each logged, and the current certificate keeps being served.
    // (A poll between the two renames above may have seen the new key
    // with the old certificate: counted from here on.)
    let count = |what: &str| cluster.controller_log().matches(what).count();
    let not_pem = "api.crt holds no PEM certificate; the current one is still served";
    let mismatch = "the key does not fit the certificate";
    replace(&cert_path, "not a certificate\n");
    wait_until("the controller to log the broken certificate", WAIT, || (count(not_pem) == 1).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
    assert_eq!(served_certificate(&cluster.api, &ca_path).unwrap(), der2);
    let mismatches = count(mismatch);
    let (_, other_key, _) = ours.server(1003);
    replace(&cert_path, &cert2);
    replace(&key_path, &other_key);
    wait_until("the controller to log the mismatched key", WAIT, || (count(mismatch) > mismatches).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
    assert_eq!(served_certificate(&cluster.api, &ca_path).unwrap(), der2);
    let out = sluice_with(&dir, &cluster.api, Some(&ca_path), &cluster.token, &["pipeline", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(cluster.controller_pid(), Some(pid));
    assert!(cluster.controller_exit().is_none());
}

#[test]
fn plain_http_is_refused_off_loopback_and_served_on_loopback_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str]| {
        let out = Command::new(bin("sluice"))
            .args(["controller", "--fleet", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", output_text(&out));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = refused(&["--api", "0.0.0.0:0", "--api-plain-http"]);
    assert!(stderr.contains("--api-plain-http") && stderr.contains("loopback"), "{stderr}");
    let stderr = refused(&["--api", "127.0.0.1:0", "--webhook-listen", "0.0.0.0:0", "--webhook-plain-http"]);
    assert!(stderr.contains("--webhook-plain-http") && stderr.contains("loopback"), "{stderr}");
    let stderr = refused(&["--api", "127.0.0.1:0", "--api-name", "ci example.com"]);
    assert!(stderr.contains("--api-name \"ci example.com\" is neither an IP address nor a DNS name"), "{stderr}");
    // Nothing was started: no data dir, no controller.json.
    assert!(!dir.path().join("data/controller.json").exists());

    let cluster = Cluster::new().controller_args(&["--api-plain-http"]).start().unwrap();
    assert!(cluster.api.starts_with("http://127.0.0.1:"), "{}", cluster.api);
    let addresses: Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.data_dir().join("controller.json")).unwrap()).unwrap();
    assert!(addresses.get("ca").is_none(), "{addresses}");
    let out = cluster.sluice(&["pipeline", "list"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(curl(&format!("{}/healthz", cluster.api), &[]), (0, "ok\n".to_string()));
    cluster.events(None).unwrap();
    // An https:// client gets a clear error, not an answer.
    let out = sluice_with(
        cluster.dir.path(),
        &cluster.api.replace("http://", "https://"),
        None,
        &cluster.token,
        &["agent", "list"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not speak TLS"), "{}", output_text(&out));
}

/// A GitHub ping to `url`, signed with `secret`: the HTTP status.
fn ping(url: &str, ca: &Path, secret: &str) -> u16 {
    let body = br#"{"zen": "hello"}"#;
    let signature = format!("X-Hub-Signature-256: sha256={}", sluice::webhooks::sign(secret, body));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--cacert"])
        .arg(ca)
        .args(["-H", "X-GitHub-Event: ping", "-H", "Content-Type: application/json", "-H", &signature])
        .args(["--data-binary", r#"{"zen": "hello"}"#])
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_webhook_listener_serves_deliveries_and_the_admin_listener_no_longer_does() {
    let cluster = Cluster::new().controller_args(&["--webhook-listen", "127.0.0.1:0"]).start().unwrap();
    let hooks = cluster.webhooks.clone().expect("controller.json names the webhook listener");
    assert!(hooks.starts_with("https://127.0.0.1:") && hooks != cluster.api, "{hooks}");
    let ca = cluster.ca_file();
    let repo = cluster.dir.path().join("repo");
    sluice_tests::make_repo(&repo, &[("README", "hello\n")]);
    cluster.create_pipeline(
        "web",
        &sluice_tests::git_pipeline(
            "web",
            "",
            &repo,
            r#"{"name": "Hold", "actions": [{"name": "Approve",
        "actionTypeId": {"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}]}"#,
        ),
    );
    let out = cluster.sluice(&["webhook", "create", "web"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // Deliveries on the webhook listener, over TLS with the CA; signed
    // ones accepted, forged ones refused.
    assert_eq!(ping(&format!("{hooks}/v1/webhooks/web"), &ca, &secret), 200);
    assert_eq!(ping(&format!("{hooks}/v1/webhooks/web"), &ca, "not-the-secret"), 401);
    // Not on the admin listener any more.
    assert_eq!(ping(&format!("{}/v1/webhooks/web", cluster.api), &ca, &secret), 404);

    // The webhook listener serves nothing of the admin API or the AWS API.
    let ca_arg = ca.to_str().unwrap();
    let auth = format!("Authorization: Bearer {}", cluster.token);
    let status = |url: String, extra: &[&str]| {
        let mut args = vec!["--cacert", ca_arg, "-o", "/dev/null", "-w", "%{http_code}", "-H", &auth];
        args.extend(extra);
        curl(&url, &args)
    };
    assert_eq!(status(format!("{hooks}/v1/pipelines"), &[]), (0, "404".to_string()));
    assert_eq!(status(format!("{hooks}/v1/events"), &[]), (0, "404".to_string()));
    assert_eq!(
        status(format!("{hooks}/"), &["-X", "POST", "-H", "X-Amz-Target: CodePipeline_20150709.ListPipelines"]),
        (0, "404".to_string())
    );
    assert_eq!(status(format!("{hooks}/healthz"), &[]), (0, "200".to_string()));
    // The admin API keeps serving on its own listener.
    assert_eq!(status(format!("{}/v1/pipelines", cluster.api), &[]), (0, "200".to_string()));
    // CodePipeline's webhooks (boto3) name the webhook listener in their
    // URL, and a delivery to that URL is served.
    let key = sluice_tests::aws::access_key(&cluster, "ann", "operator").unwrap();
    let r = sluice_tests::aws::script_json(&cluster, &key, "webhooks.py", &["web"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.controller_log()));
    assert_eq!(r["put_url"], format!("{hooks}/v1/webhooks/web"), "{r}");
    assert_eq!((r["delivery_signed"].as_u64(), r["delivery_forged"].as_u64()), (Some(200), Some(401)), "{r}");
    // Without the CA the webhook listener is refused like the API.
    let (code, body) = curl(&format!("{hooks}/healthz"), &[]);
    assert_eq!(code, 60, "{body}");
}
