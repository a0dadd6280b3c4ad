//! Change detection across real processes: a local bare repository, real
//! `git` commits and pushes, polls through a real agent, signed webhooks,
//! the shipped post-receive hook, and an http remote that wants credentials.

use serde_json::Value;
use sluice_tests::{Cluster, WAIT, git, output_text, wait_for, wait_until};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A bare `origin.git` and a clone `work` with one commit pushed to `main`.
struct Repo {
    origin: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(root: &Path, name: &str) -> Self {
        let origin = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "--bare", "-b", "main"]);
        git(root, &["clone", "-q", origin.to_str().unwrap(), work.to_str().unwrap()]);
        let repo = Repo { origin, work };
        repo.commit("README", "hello\n", "initial");
        repo
    }

    /// Commits one file and pushes `main`; returns the commit id.
    fn commit(&self, file: &str, content: &str, message: &str) -> String {
        let path = self.work.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A git source action; `extra` adds fields (and may replace the default
/// capabilities, which grant git alone).
fn source(name: &str, url: &str, extra: &str) -> String {
    let capabilities = if extra.contains("\"capabilities\"") { "" } else { r#", "capabilities": {"exec": ["git"]}"# };
    format!(
        r#"{{"name": "{name}", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "{url}", "Branch": "main"}}, "outputArtifacts": [{{"name": "{name}-src"}}]{capabilities}{extra}}}"#
    )
}

/// A pipeline of the given source actions and a Build stage that lists them.
fn pipeline(name: &str, sources: &[String], triggers: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "pipelineType": "V2", "triggers": {triggers}, "stages": [
          {{"name": "Source", "actions": [{}]}},
          {{"name": "Build", "actions": [{{"name": "Look",
             "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}}]}}}}"#,
        sources.join(",")
    )
}

fn create(cluster: &Cluster, name: &str, text: &str) {
    cluster.create_pipeline(name, text);
    cluster.wait_for_executions_to_end(name).unwrap();
}

fn history(cluster: &Cluster, name: &str) -> Vec<Value> {
    cluster.sluice_json(&["pipeline", "history", name]).unwrap()["pipelineExecutionSummaries"].as_array().unwrap().clone()
}

/// Waits for the pipeline to have `n` executions, all ended; newest first.
fn wait_for_executions(cluster: &Cluster, name: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} executions of {name}"), WAIT, || {
        let h = history(cluster, name);
        (h.len() >= n && h.iter().all(|e| e["status"] != "InProgress")).then_some(h)
    })
    .unwrap()
}

/// When each source action of `pipeline` was last polled
/// (`polling.lastPolled` in `pipeline state`), by action name.
fn last_polled(cluster: &Cluster, pipeline: &str) -> Result<Vec<(String, Value)>, String> {
    let state = cluster.sluice_json(&["pipeline", "state", pipeline]).map_err(|e| e.to_string())?;
    let actions = state["stageStates"][0]["actionStates"].as_array().ok_or_else(|| format!("no source stage in {state}"))?;
    Ok(actions
        .iter()
        .map(|a| (a["actionName"].as_str().unwrap_or_default().to_string(), a["polling"]["lastPolled"].clone()))
        .collect())
}

/// Waits until every source action of `pipeline` named in `actions` has
/// been polled `n` more times. A poll's answer is judged in the same
/// driver step that records it: once it shows here, any execution it
/// started is in the history. So "nothing started" holds for these polls
/// without sleeping for a guessed number of intervals.
fn wait_for_polls(cluster: &Cluster, pipeline: &str, actions: &[&str], n: usize) {
    let mut last = last_polled(cluster, pipeline).unwrap();
    let mut polls: BTreeMap<String, usize> = actions.iter().map(|a| (a.to_string(), 0)).collect();
    wait_for(&format!("{n} more polls of {actions:?} in {pipeline}"), WAIT, || {
        let now = last_polled(cluster, pipeline)?;
        for ((action, before), (_, after)) in last.iter().zip(&now) {
            if before != after
                && let Some(count) = polls.get_mut(action)
            {
                *count += 1;
            }
        }
        last = now;
        if polls.values().all(|&count| count >= n) {
            Ok(())
        } else {
            Err(format!("polls so far {polls:?}, lastPolled {last:?}"))
        }
    })
    .unwrap();
}

fn revision_of<'a>(execution: &'a Value, action: &str) -> &'a str {
    execution["sourceRevisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["actionName"] == action)
        .and_then(|r| r["revisionId"].as_str())
        .unwrap_or_else(|| panic!("no revision of {action} in {execution}"))
}

/// POSTs a webhook delivery with curl; returns (HTTP status, body).
fn deliver(cluster: &Cluster, pipeline: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", "--data-binary", "@-", "-w", "\n%{http_code}"]).arg("--cacert").arg(cluster.ca_file());
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    cmd.arg(format!("{}/v1/webhooks/{pipeline}", cluster.api));
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("curl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), serde_json::from_str(json).unwrap_or(Value::Null))
}

fn github_push(secret: &str, sha: &str, files: &[&str]) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main", "after": sha, "deleted": false,
        "commits": [{"added": [], "removed": [], "modified": files}],
    }))
    .unwrap();
    let signature = format!("sha256={}", sluice::webhooks::sign(secret, &body));
    (vec![("X-GitHub-Event", "push".to_string()), ("X-Hub-Signature-256", signature)], body)
}

#[test]
fn a_push_is_found_by_polling_once_and_that_commit_runs() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = Repo::new(cluster.dir.path(), "app");
    let url = repo.origin.display().to_string();
    create(&cluster, "polled", &pipeline("polled", &[source("App", &url, r#", "pollIntervalSeconds": 1"#)], "[]"));

    // The first polls find the revision the created execution already ran.
    wait_for_polls(&cluster, "polled", &["App"], 2);
    assert_eq!(history(&cluster, "polled").len(), 1);

    let pushed = repo.commit("src/lib.rs", "fn main() {}\n", "second");
    let runs = wait_for_executions(&cluster, "polled", 2);
    assert_eq!(runs[0]["trigger"]["triggerType"], "Poll", "{}", runs[0]);
    assert_eq!(runs[0]["status"], "Succeeded", "{}", runs[0]);
    assert_eq!(revision_of(&runs[0], "App"), pushed);
    // Several more polls see the same revision: nothing else starts.
    wait_for_polls(&cluster, "polled", &["App"], 3);
    assert_eq!(history(&cluster, "polled").len(), 2);

    let state = cluster.sluice_json(&["pipeline", "state", "polled"]).unwrap();
    let polling = &state["stageStates"][0]["actionStates"][0]["polling"];
    assert_eq!(polling["intervalSeconds"], 1, "{state}");
    assert!(polling["lastPolled"].is_string() && polling["lastError"].is_null(), "{polling}");

    // `start --source-revision` runs an older commit on purpose.
    let first = git(&repo.work, &["rev-parse", "HEAD~1"]);
    let out = cluster.sluice(&["pipeline", "start", "polled", "--source-revision", &format!("App={first}"), "--wait"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let runs = history(&cluster, "polled");
    assert_eq!(revision_of(&runs[0], "App"), first);
    let out = cluster.sluice(&["pipeline", "start", "polled", "--source-revision", "Nope=abc"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source action \"Nope\""), "{}", output_text(&out));
}

#[test]
fn webhooks_start_at_once_check_signatures_filter_paths_and_deduplicate() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = Repo::new(cluster.dir.path(), "web");
    let url = repo.origin.display().to_string();
    let triggers = r#"[{"providerType": "CodeStarSourceConnection", "gitConfiguration": {"sourceActionName": "Web",
        "push": [{"branches": {"includes": ["main"]}, "filePaths": {"includes": ["src/**"]}}]}}]"#;
    // Webhooks only: no polling.
    create(&cluster, "hooked", &pipeline("hooked", &[source("Web", &url, r#", "pollIntervalSeconds": 0"#)], triggers));

    // No webhook yet.
    let (code, _) = deliver(&cluster, "hooked", &[], b"{}");
    assert_eq!(code, 404);
    let out = cluster.sluice(&["webhook", "create", "hooked"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let sha = repo.commit("src/app.rs", "v2\n", "change src");
    // A bad signature is refused (401) and logged; nothing starts.
    let (mut headers, body) = github_push(&secret, &sha, &["src/app.rs"]);
    let good_signature = headers[1].1.clone();
    headers[1].1 = format!("sha256={}", sluice::webhooks::sign("not-the-secret", &body));
    let (code, answer) = deliver(&cluster, "hooked", &headers, &body);
    assert_eq!(code, 401, "{answer}");
    assert!(cluster.controller_log().contains("webhook refused"), "{}", cluster.controller_log());
    // A malformed payload (signed correctly) is a 400.
    let junk = b"{\"ref\": 42}";
    let signed_junk = vec![
        ("X-GitHub-Event", "push".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", sluice::webhooks::sign(&secret, junk))),
    ];
    let (code, answer) = deliver(&cluster, "hooked", &signed_junk, junk);
    assert_eq!(code, 400, "{answer}");
    assert_eq!(history(&cluster, "hooked").len(), 1);

    // The good delivery starts that commit at once; the same one again starts nothing.
    headers[1].1 = good_signature;
    let (code, answer) = deliver(&cluster, "hooked", &headers, &body);
    assert_eq!((code, &answer["started"]), (200, &Value::Bool(true)), "{answer}");
    let (code, again) = deliver(&cluster, "hooked", &headers, &body);
    assert_eq!((code, &again["started"]), (200, &Value::Bool(false)), "{again}");
    assert_eq!(again["pipelineExecutionId"], answer["pipelineExecutionId"]);
    let runs = wait_for_executions(&cluster, "hooked", 2);
    assert_eq!(runs[0]["trigger"]["triggerType"], "Webhook");
    assert!(runs[0]["trigger"]["triggerDetail"].as_str().unwrap().contains("github"), "{}", runs[0]);
    assert_eq!(revision_of(&runs[0], "Web"), sha);
    assert_eq!(runs[0]["status"], "Succeeded", "{}", runs[0]);

    // A change outside the included paths starts nothing.
    let docs = repo.commit("docs/guide.md", "words\n", "docs only");
    let (headers, body) = github_push(&secret, &docs, &["docs/guide.md"]);
    let (code, answer) = deliver(&cluster, "hooked", &headers, &body);
    assert_eq!((code, &answer["started"]), (200, &Value::Bool(false)), "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("no trigger"), "{answer}");

    // The shipped post-receive hook notifies on a real push, with the files it changed.
    let hook = repo.origin.join("hooks/post-receive");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/hooks/post-receive"), &hook).unwrap();
    git(&repo.origin, &["config", "sluice.webhookUrl", &format!("{}/v1/webhooks/hooked", cluster.api)]);
    git(&repo.origin, &["config", "sluice.webhookSecret", &secret]);
    git(&repo.origin, &["config", "sluice.webhookCa", cluster.ca_file().to_str().unwrap()]);
    let before = history(&cluster, "hooked").len();
    let hooked = repo.commit("src/more.rs", "more\n", "through the hook");
    let runs = wait_for_executions(&cluster, "hooked", before + 1);
    assert_eq!(runs[0]["trigger"]["triggerType"], "Webhook", "{}", runs[0]);
    assert!(runs[0]["trigger"]["triggerDetail"].as_str().unwrap().contains("generic"), "{}", runs[0]);
    assert_eq!(revision_of(&runs[0], "Web"), hooked);
    // And a push of docs through the hook starts nothing. No wait: the
    // hook delivers before the push returns (git waits for post-receive,
    // which waits for the controller's answer), and an execution a
    // delivery starts is stored before the answer.
    repo.commit("docs/more.md", "x\n", "docs through the hook");
    assert_eq!(history(&cluster, "hooked").len(), before + 1);
}

#[test]
fn a_change_in_any_source_starts_a_run_that_pins_every_source() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let app = Repo::new(cluster.dir.path(), "app");
    let lib = Repo::new(cluster.dir.path(), "lib");
    let app_head = git(&app.work, &["rev-parse", "HEAD"]);
    let poll = r#", "pollIntervalSeconds": 1"#;
    let text = pipeline(
        "multi",
        &[source("App", &app.origin.display().to_string(), poll), source("Lib", &lib.origin.display().to_string(), poll)],
        "[]",
    );
    create(&cluster, "multi", &text);
    let lib_new = lib.commit("lib.rs", "pub fn f() {}\n", "lib change");
    let runs = wait_for_executions(&cluster, "multi", 2);
    assert_eq!(runs[0]["trigger"]["triggerType"], "Poll", "{}", runs[0]);
    assert_eq!(revision_of(&runs[0], "Lib"), lib_new);
    assert_eq!(revision_of(&runs[0], "App"), app_head, "the other source keeps its revision");
    // Polls of both sources go on finding what run 2 pinned.
    wait_for_polls(&cluster, "multi", &["App", "Lib"], 3);
    let all = history(&cluster, "multi");
    assert_eq!(all.len(), 2, "one change, one run: {all:#?}");

    // An unreachable repository fails its source action with git's message.
    let missing = cluster.dir.path().join("missing.git").display().to_string();
    let file = cluster.dir.path().join("gone.json");
    std::fs::write(&file, pipeline("gone", &[source("Gone", &missing, "")], "[]")).unwrap();
    assert!(cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]).status.success());
    let runs = cluster.wait_for_executions_to_end("gone").unwrap();
    assert_eq!(runs["pipelineExecutionSummaries"][0]["status"], "Failed");
    let state = cluster.sluice_json(&["pipeline", "state", "gone"]).unwrap();
    let error = state["stageStates"][0]["actionStates"][0]["latestExecution"]["errorDetails"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("does not appear to be a git repository"), "{error}");
}

/// A tiny smart-HTTP git server (`git http-backend` as CGI) that wants
/// basic authentication, on loopback, serving `root`.
fn http_git_server(root: PathBuf, user_pass: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use base64::Engine as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass));
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refused_count = refused.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (root, expected, refused) = (root.clone(), expected.clone(), refused.clone());
            std::thread::spawn(move || serve_git(stream, &root, &expected, &refused));
        }
    });
    (format!("http://{addr}"), refused_count)
}

fn serve_git(mut stream: std::net::TcpStream, root: &Path, expected: &str, refused: &std::sync::atomic::AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    let mut body = vec![0u8; header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0)];
    reader.read_exact(&mut body).unwrap();
    if header("authorization").as_deref() != Some(expected) {
        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cgi = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_USER", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cgi.stdin.take().unwrap().write_all(&body).unwrap();
    let out = cgi.wait_with_output().unwrap().stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, payload) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&out[..i]).to_string(), &out[i + n..]),
        None => (String::new(), &out[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some(_) => response_headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let response =
        format!("HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n", payload.len());
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(payload);
}

#[test]
fn an_http_remote_is_fetched_with_credentials_from_a_granted_secret() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = Repo::new(cluster.dir.path(), "private");
    let head = git(&repo.work, &["rev-parse", "HEAD"]);
    let (base, refused) = http_git_server(cluster.dir.path().to_path_buf(), "ann:correct-horse-battery");
    let url = format!("{base}/private.git");
    // git runs confined: it reaches the server's port only through a
    // `net` grant.
    let port = base.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let net = format!(r#", "capabilities": {{"exec": ["git"], "net": ["tcp:{port}"]}}"#);

    // Without credentials the server refuses, and git says so.
    create(&cluster, "anonymous", &pipeline("anonymous", &[source("Src", &url, &net)], "[]"));
    let state = cluster.sluice_json(&["pipeline", "state", "anonymous"]).unwrap();
    let error = state["stageStates"][0]["actionStates"][0]["latestExecution"]["errorDetails"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("Authentication failed") || error.contains("could not read Username"), "{error}");
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) > 0);

    // The secret is set from standard input and granted to the action.
    let mut set = Command::new(sluice_tests::bin("sluice"))
        .args(["secret", "set", "GIT_CREDS", "--pipelines", "private"])
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", &cluster.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(b"ann:correct-horse-battery\n").unwrap();
    assert!(set.wait_with_output().unwrap().status.success());
    let listed = cluster.sluice_json(&["secret", "list"]).unwrap();
    assert_eq!(listed["secrets"][0]["name"], "GIT_CREDS");
    assert!(!listed.to_string().contains("correct-horse"), "values are never listed");

    let extra = format!(
        r#", "pollIntervalSeconds": 1, "capabilities": {{"exec": ["git"], "secrets": ["GIT_CREDS"], "net": ["tcp:{port}"]}}"#
    );
    let action =
        source("Src", &url, &extra).replace(r#""Branch": "main""#, r#""Branch": "main", "CredentialsSecret": "GIT_CREDS""#);
    let text = pipeline("private", &[action], "[]");
    create(&cluster, "private", &text);
    let runs = history(&cluster, "private");
    assert_eq!(runs[0]["status"], "Succeeded", "{}", runs[0]);
    assert_eq!(revision_of(&runs[0], "Src"), head);
    // Polling an http remote uses the same credentials.
    let pushed = repo.commit("x", "y\n", "over http");
    let runs = wait_for_executions(&cluster, "private", 2);
    assert_eq!(revision_of(&runs[0], "Src"), pushed);
    // The secret's value never reaches a log or the store in clear.
    let logs = cluster.sluice(&["logs", "private"]);
    assert!(!String::from_utf8_lossy(&logs.stdout).contains("correct-horse"));
    let db = std::fs::read(cluster.data_dir().join("sluice.db")).unwrap();
    assert!(!db.windows(13).any(|w| w == b"correct-horse"));
}

/// `sluice secret set NAME [--pipelines P,...]` with the value on stdin.
fn set_secret(cluster: &Cluster, name: &str, value: &str, pipelines: Option<&str>) -> std::process::Output {
    let mut args = vec!["secret", "set", name];
    if let Some(p) = pipelines {
        args.extend(["--pipelines", p]);
    }
    let mut set = Command::new(sluice_tests::bin("sluice"))
        .args(&args)
        .env("SLUICE_API", &cluster.api)
        .env("SLUICE_CA", cluster.ca_file())
        .env("SLUICE_TOKEN", &cluster.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
    set.wait_with_output().unwrap()
}

#[test]
fn a_secret_reaches_only_the_pipelines_of_its_scope() {
    let mut cluster = Cluster::new().start().unwrap();
    cluster.add_agent(&[]).unwrap();
    let repo = Repo::new(cluster.dir.path(), "scoped");
    let url = repo.origin.display().to_string();

    // A new secret must name its pipelines; the CLI round trip keeps them.
    let out = set_secret(&cluster, "DEPLOY_KEY", "k3y-v4lue-0001", None);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("secret \"DEPLOY_KEY\" is new: say which pipelines may use it with --pipelines"),
        "{}",
        output_text(&out)
    );
    let out = set_secret(&cluster, "DEPLOY_KEY", "k3y-v4lue-0001", Some("deploy-*,ops"));
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("secret DEPLOY_KEY set (pipelines: deploy-*,ops)"), "{}", output_text(&out));
    let listed = cluster.sluice_json(&["secret", "list"]).unwrap();
    assert_eq!(listed["secrets"][0]["pipelines"], serde_json::json!(["deploy-*", "ops"]));
    // A new value without --pipelines keeps the scope.
    assert!(set_secret(&cluster, "DEPLOY_KEY", "k3y-v4lue-0002", None).status.success());
    let listed = cluster.sluice_json(&["secret", "list"]).unwrap();
    assert_eq!(listed["secrets"][0]["pipelines"], serde_json::json!(["deploy-*", "ops"]));
    let out = set_secret(&cluster, "OTHER", "whatever-1", Some("a,,b"));
    assert!(output_text(&out).contains("a pipeline pattern must not be empty"), "{}", output_text(&out));

    // A pipeline outside the scope cannot grant it: create and update are
    // refused with the path of the grant.
    let granting = |name: &str| {
        let extra = r#", "capabilities": {"exec": ["git"], "secrets": ["DEPLOY_KEY"]}"#;
        pipeline(name, &[source("Src", &url, extra)], "[]")
    };
    let file = cluster.dir.path().join("web.json");
    std::fs::write(&file, granting("web")).unwrap();
    let out = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains(
            "pipeline.stages[0].actions[0].capabilities.secrets[0]: secret \"DEPLOY_KEY\" is not available to pipeline \"web\" (its scope: deploy-*, ops)"
        ),
        "{}",
        output_text(&out)
    );
    create(&cluster, "web", &pipeline("web", &[source("Src", &url, "")], "[]"));
    std::fs::write(&file, granting("web")).unwrap();
    let out = cluster.sluice(&["pipeline", "update", file.to_str().unwrap()]);
    assert!(
        !out.status.success() && output_text(&out).contains("is not available to pipeline \"web\""),
        "{}",
        output_text(&out)
    );

    // Inside the scope it is granted and the action runs.
    create(&cluster, "deploy-eu", &granting("deploy-eu"));
    assert_eq!(history(&cluster, "deploy-eu")[0]["status"], "Succeeded");

    // The scope changes later: the stored pipeline's next job is refused
    // at dispatch, without the value.
    assert!(set_secret(&cluster, "DEPLOY_KEY", "k3y-v4lue-0003", Some("ops")).status.success());
    let out = cluster.sluice(&["pipeline", "start", "deploy-eu"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let runs = wait_for_executions(&cluster, "deploy-eu", 2);
    assert_eq!(runs[0]["status"], "Failed", "{}", runs[0]);
    let state = cluster.sluice_json(&["pipeline", "state", "deploy-eu"]).unwrap();
    let error = &state["stageStates"][0]["actionStates"][0]["latestExecution"]["errorDetails"]["message"];
    let error = error.as_str().unwrap_or_default();
    assert!(error.contains("secret \"DEPLOY_KEY\" is not available to pipeline \"deploy-eu\" (its scope: ops)"), "{error}");
}
