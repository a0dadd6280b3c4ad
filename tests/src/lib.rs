//! The cluster harness for cross-process tests: real `sluice` and
//! `sluice-agent` processes on loopback, each with its own temp dir and
//! certificates, torn down on drop.
//!
//! ```no_run
//! let cluster = sluice_tests::Cluster::new().agent(&["role=build"]).start().unwrap();
//! let out = cluster.sluice(&["pipeline", "list"]);
//! ```

pub mod aws;
// Artifacts in S3 (issue 18, s3): moto's S3 server.
pub mod moto;
// The console's cross tests' curl browser (issue 16).
pub mod browser;
// The web console's browser tests (issue 16, browser).
pub mod console;
// High availability (issue 18, ha): controllers on one PostgreSQL store.
pub mod ha;
pub mod rogue;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a process to reach a state before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// A binary built by `cargo build --workspace --bins`: beside the running
/// executable (a binary such as `sluice-bench`) or one level up from it (a
/// test in `target/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().expect("executable dir");
    let dir = if beside.join(name).exists() { beside } else { beside.parent().expect("target dir") };
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first with `cargo build --workspace --bins`", path.display());
    path
}

/// How often a wait on polled state looks again: short, so that a wait
/// ends soon after its condition holds, long enough not to load the
/// controller with requests.
const POLL: Duration = Duration::from_millis(50);

/// Waits until `probe` returns `Some`, or fails after `timeout` with `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    wait_for(what, timeout, || probe().ok_or_else(String::new))
}

/// Waits on polled state: until `probe` returns `Ok`, or fails after
/// `timeout` naming `what` and the last state `probe` described in its
/// `Err`, so that a timeout says what the test saw instead of what it
/// wanted.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if Instant::now() > deadline {
            if last.is_empty() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            bail!("timed out after {timeout:?} waiting for {what}; last saw: {last}");
        }
        std::thread::sleep(POLL);
    }
}

/// A TLS client configuration trusting the CA certificates (PEM) in
/// `ca` alone: what the harness speaks HTTPS to a controller with.
pub fn tls_client_config(ca: &Path) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert.with_context(|| format!("{} is not PEM certificates", ca.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// A connection to `api` (`https://HOST:PORT`, verified against `ca`, or
/// `http://HOST:PORT` on loopback): something to write a request to and
/// read its answer from, and the socket, to shut it down.
pub fn connect(api: &str, ca: &Path) -> Result<(Box<dyn ReadWrite>, std::net::TcpStream)> {
    let (tls, host) = match (api.strip_prefix("https://"), api.strip_prefix("http://")) {
        (Some(host), _) => (true, host),
        (None, Some(host)) => (false, host),
        (None, None) => bail!("the API address {api:?} is not https://HOST:PORT or http://HOST:PORT"),
    };
    let host = host.trim_end_matches('/');
    let socket = std::net::TcpStream::connect(host).with_context(|| format!("connecting to {api}"))?;
    let handle = socket.try_clone()?;
    if !tls {
        return Ok((Box::new(socket), handle));
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).with_context(|| format!("server name {name:?}"))?;
    let connection = rustls::ClientConnection::new(tls_client_config(ca)?, name)?;
    Ok((Box::new(rustls::StreamOwned::new(connection, socket)), handle))
}

/// A byte stream both ways (a TCP socket, or TLS over one).
pub trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

/// The controller's live event stream (`GET /v1/events`, Server-Sent
/// Events): execution, stage and action notices and log lines, each a JSON
/// object. Subscribed when [`Cluster::events`] returns, so that a test
/// subscribes first and then causes what it waits for. Ends on drop, or
/// when the controller stops.
pub struct Events {
    rx: std::sync::mpsc::Receiver<Value>,
    socket: std::net::TcpStream,
    /// The latest events seen, for the message of a timeout.
    seen: std::collections::VecDeque<Value>,
}

/// Events kept for a timeout's message.
const EVENTS_SHOWN: usize = 20;

impl Events {
    fn connect(api: &str, ca: &Path, token: &str, pipeline: Option<&str>) -> Result<Self> {
        use std::io::{BufRead as _, BufReader, Write as _};
        let host = api.split_once("://").map_or(api, |(_, host)| host).trim_end_matches('/');
        let (mut stream, socket) = connect(api, ca)?;
        let query = pipeline.map(|p| format!("?pipeline={p}")).unwrap_or_default();
        // HTTP/1.0: the stream comes unchunked and ends with the connection.
        write!(stream, "GET /v1/events{query} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n")?;
        stream.flush()?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("GET /v1/events answered {}", status.trim());
        }
        // The handler subscribed before it answered: from here on, nothing
        // is missed.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let Some(data) = line.strip_prefix("data:") else { continue };
                let Ok(event) = serde_json::from_str::<Value>(data.trim()) else { continue };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Ok(Self { rx, socket, seen: std::collections::VecDeque::new() })
    }

    /// Waits for the first event (from now on) that `want` accepts and
    /// returns it; fails after `timeout` with `what` and the latest events
    /// seen.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut want: impl FnMut(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.rx.recv_timeout(left) {
                Ok(event) => event,
                Err(e) => {
                    let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
                    let why = match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => format!("timed out after {timeout:?}"),
                        std::sync::mpsc::RecvTimeoutError::Disconnected => "the event stream ended".to_string(),
                    };
                    bail!("{why} waiting for {what}; the latest events:\n{}", seen.join("\n"));
                }
            };
            if self.seen.len() == EVENTS_SHOWN {
                self.seen.pop_front();
            }
            self.seen.push_back(event.clone());
            if want(&event) {
                return Ok(event);
            }
        }
    }

    /// Waits for the notice that `execution`'s `stage` (or, with `action`,
    /// that action) reached `status`.
    pub fn wait_for_notice(
        &mut self,
        execution: &str,
        stage: &str,
        action: Option<&str>,
        status: &str,
        timeout: Duration,
    ) -> Result<Value> {
        let what = format!("{execution} {stage}/{} to be {status}", action.unwrap_or("*"));
        self.wait_for(&what, timeout, |e| {
            e["executionId"] == execution
                && e["stage"] == stage
                && action.map_or(e["type"] == "stage", |a| e["action"] == a)
                && e["status"] == status
        })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

pub struct ClusterBuilder {
    // PostgreSQL (issue 18, pg).
    postgres: bool,
    agents: Vec<Vec<String>>,
    controller_args: Vec<String>,
    controller_env: Vec<(String, String)>,
    agent_args: Vec<String>,
}

impl ClusterBuilder {
    /// Adds an agent with these labels (`k=v`).
    pub fn agent(mut self, labels: &[&str]) -> Self {
        self.agents.push(labels.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Extra flags for every `sluice-agent` (such as `--slots 4`).
    pub fn agent_args(mut self, args: &[&str]) -> Self {
        self.agent_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Extra flags for `sluice controller`.
    pub fn controller_args(mut self, args: &[&str]) -> Self {
        self.controller_args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// The controller on a fresh database of the throwaway PostgreSQL
    /// cluster instead of SQLite in its data dir (issue 18, pg); every
    /// cluster is, with `SLUICE_TEST_STORE=postgres`.
    pub fn postgres(mut self) -> Self {
        self.postgres = true;
        self
    }

    /// An environment variable for `sluice controller`.
    pub fn controller_env(mut self, key: &str, value: &str) -> Self {
        self.controller_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Artifacts in S3 (issue 18, s3): the controller keeps artifacts and
    /// plugins in `moto`'s bucket under `prefix`. Controllers given the
    /// same prefix share them (one writes, another reads).
    pub fn artifacts_s3(mut self, moto: &moto::Moto, prefix: &str) -> Self {
        self.controller_args.extend(moto.controller_args(prefix));
        self.controller_env.extend(moto.controller_env());
        self
    }

    pub fn start(self) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("sluice-cluster").tempdir()?;
        let store = if self.postgres || postgres_by_default() { Some(postgres_database()?) } else { None };
        let mut cluster = Cluster {
            store,
            controller: None,
            agents: Vec::new(),
            api: String::new(),
            fleet: String::new(),
            token: String::new(),
            ca: None,
            webhooks: None,
            controller_args: self.controller_args,
            controller_env: self.controller_env,
            agent_args: self.agent_args,
            dir,
            agents_home: tempfile::Builder::new().prefix("sluice-agents").tempdir()?,
        };
        cluster.start_controller()?;
        for labels in self.agents {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            cluster.add_agent(&labels)?;
        }
        Ok(cluster)
    }
}

/// Whether `SLUICE_TEST_STORE=postgres` puts every cluster on PostgreSQL.
pub fn postgres_by_default() -> bool {
    std::env::var("SLUICE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// A new database of the test process's throwaway PostgreSQL cluster; an
/// error where PostgreSQL is not installed (a test asking for it skips
/// first with [`postgres_available`]).
pub fn postgres_database() -> Result<String> {
    let cluster = sluice::store::postgres::throwaway::Throwaway::shared()
        .context("PostgreSQL is not installed (apt-get install postgresql, as .ci/run does)")?;
    cluster.database("cluster")
}

/// Whether PostgreSQL tests can run here: in CI (`CI=true`) they must, and
/// a missing PostgreSQL fails them; elsewhere a note says they are skipped.
pub fn postgres_available() -> bool {
    sluice::store::postgres::throwaway::Throwaway::shared().is_some()
}

/// A running controller with its agents.
pub struct Cluster {
    /// The controller's `--store` when it is PostgreSQL (issue 18, pg);
    /// `None`: SQLite in its data dir.
    pub store: Option<String>,
    controller: Option<Child>,
    agents: Vec<Child>,
    pub api: String,
    pub fleet: String,
    pub token: String,
    /// The CA file `controller.json` names (see [`Cluster::ca_file`]).
    ca: Option<PathBuf>,
    /// The webhook listener's URL, when the controller has one
    /// (`--webhook-listen`).
    pub webhooks: Option<String>,
    controller_args: Vec<String>,
    controller_env: Vec<(String, String)>,
    agent_args: Vec<String>,
    pub dir: tempfile::TempDir,
    /// The agents' data dirs and logs: beside `dir`, not in it, since
    /// agents grant `dir` to their programs and refuse a grant that holds
    /// their own data dir.
    pub agents_home: tempfile::TempDir,
}

impl Cluster {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> ClusterBuilder {
        ClusterBuilder {
            agents: Vec::new(),
            controller_args: Vec::new(),
            controller_env: Vec::new(),
            agent_args: Vec::new(),
            postgres: false,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("controller")
    }

    /// Starts the controller on its data dir; a restart keeps the fleet
    /// address, so that agents find it again.
    pub fn start_controller(&mut self) -> Result<()> {
        let data = self.data_dir();
        let fleet = if self.fleet.is_empty() { "127.0.0.1:0".to_string() } else { self.fleet.clone() };
        let _ = std::fs::remove_file(data.join("controller.json"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("controller.log"))?;
        let child = Command::new(bin("sluice"))
            .args(["controller", "--api", "127.0.0.1:0", "--fleet", &fleet, "--data-dir"])
            .arg(&data)
            .args(self.store.iter().flat_map(|url| ["--store", url]))
            .args(&self.controller_args)
            .envs(self.controller_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sluice controller")?;
        self.controller = Some(child);
        let addresses: Value = wait_until("controller.json", WAIT, || {
            let text = std::fs::read_to_string(data.join("controller.json")).ok()?;
            serde_json::from_str(&text).ok()
        })?;
        self.api = addresses["api"].as_str().context("api address")?.to_string();
        self.ca = addresses["ca"].as_str().map(PathBuf::from);
        self.webhooks = addresses["webhooks"].as_str().map(str::to_string);
        self.fleet = addresses["fleet"].as_str().context("fleet address")?.to_string();
        self.token = std::fs::read_to_string(data.join("admin.token"))?.trim().to_string();
        Ok(())
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// How the controller exited, if it has (it is then forgotten, and
    /// [`Cluster::start_controller`] may start it again).
    pub fn controller_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.controller.as_mut()?.try_wait().ok().flatten()?;
        self.controller = None;
        Some(status)
    }

    /// Kills the controller with SIGKILL: nothing gets to clean up.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    /// A join token; `uses` None means unlimited.
    pub fn join_token(&self, uses: Option<u32>) -> Result<String> {
        self.join_token_with(uses, &[], &[])
    }

    /// A join token giving its agents `labels` (`k=v`) and letting them set
    /// the label keys `allow` for themselves.
    pub fn join_token_with(&self, uses: Option<u32>, labels: &[&str], allow: &[&str]) -> Result<String> {
        let mut args = vec!["agent-token".to_string(), "create".into(), "--ttl".into(), "1h".into()];
        if let Some(n) = uses {
            args.extend(["--uses".into(), n.to_string()]);
        }
        if !labels.is_empty() {
            args.extend(["--labels".into(), labels.join(",")]);
        }
        if !allow.is_empty() {
            args.extend(["--allow-agent-labels".into(), allow.join(",")]);
        }
        let out = self.sluice(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if !out.status.success() {
            bail!("agent-token create failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts an agent process that enrolls with a fresh single-use token
    /// carrying `labels` (labels an agent claims for itself count only
    /// where its token allows), and waits until the controller lists it as
    /// connected.
    pub fn add_agent(&mut self, labels: &[&str]) -> Result<String> {
        let token = self.join_token_with(Some(1), labels, &[])?;
        let n = self.agents.len();
        let dir = self.agent_dir(n);
        let child = self.spawn_agent(&dir, Some(&token), labels)?;
        self.agents.push(child);
        let before = n;
        wait_until("the agent to connect", WAIT, || {
            let agents = self.agents_json().ok()?;
            let connected = agents.iter().filter(|a| a["connected"] == Value::Bool(true)).count();
            (connected > before).then_some(())
        })?;
        let id = std::fs::read_to_string(dir.join("agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["agent_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(id)
    }

    /// Spawns `sluice-agent` on a data dir, logging to `<dir>.log`.
    pub fn spawn_agent(&self, dir: &Path, token: Option<&str>, labels: &[&str]) -> Result<Child> {
        self.spawn_agent_at(&self.fleet, dir, token, labels)
    }

    /// Spawns `sluice-agent` dialling `controller` (e.g. a relay in front
    /// of the fleet port), logging to `<dir>.log` (appended to).
    pub fn spawn_agent_at(&self, controller: &str, dir: &Path, token: Option<&str>, labels: &[&str]) -> Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log"))?;
        let mut cmd = Command::new(bin("sluice-agent"));
        cmd.args(["--controller", controller, "--data-dir"]).arg(dir);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        if !labels.is_empty() {
            cmd.args(["--labels", &labels.join(",")]);
        }
        // Tests coordinate with their actions through files in the
        // cluster's directory (markers, repositories): the agents' granted
        // programs may use it. The confinement itself is tested in
        // `runtime/tests/sandbox.rs`.
        cmd.arg("--sandbox-write").arg(self.dir.path());
        cmd.args(&self.agent_args);
        Ok(cmd.env("SLUICE_LOG", "info").stdout(Stdio::null()).stderr(log).spawn()?)
    }

    /// Adopts an agent process started with [`Cluster::spawn_agent_at`], so
    /// that it is killed with the cluster; returns its index.
    pub fn adopt_agent(&mut self, child: Child) -> usize {
        self.agents.push(child);
        self.agents.len() - 1
    }

    /// How many agent processes the cluster has started or adopted.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// The data dir of agent `n` (its log is beside it, `agent-N.log`).
    pub fn agent_dir(&self, n: usize) -> PathBuf {
        self.agents_home.path().join(format!("agent-{n}"))
    }

    /// Kills agent `n` (in start order) with SIGKILL.
    pub fn kill_agent(&mut self, n: usize) {
        let _ = self.agents[n].kill();
        let _ = self.agents[n].wait();
    }

    /// How agent `n` exited, if it has.
    pub fn agent_exit(&mut self, n: usize) -> Option<std::process::ExitStatus> {
        self.agents[n].try_wait().ok().flatten()
    }

    /// The log of agent `n`.
    pub fn agent_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.agents_home.path().join(format!("agent-{n}.log"))).unwrap_or_default()
    }

    /// Waits until `n` agents are connected.
    pub fn wait_for_agents(&self, n: usize) -> Result<()> {
        wait_until(&format!("{n} connected agents"), WAIT, || {
            let agents = self.agents_json().ok()?;
            (agents.iter().filter(|a| a["connected"] == Value::Bool(true)).count() >= n).then_some(())
        })
    }

    pub fn agents_json(&self) -> Result<Vec<Value>> {
        let out = self.sluice(&["agent", "list", "--output", "json"]);
        if !out.status.success() {
            bail!("agent list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["agents"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until no execution of `pipeline` is in progress; returns its
    /// history (`pipeline history --output json`).
    pub fn wait_for_executions_to_end(&self, pipeline: &str) -> Result<Value> {
        wait_until(&format!("every execution of {pipeline} to end"), WAIT, || {
            let history = self.sluice_json(&["pipeline", "history", pipeline]).ok()?;
            let summaries = history["pipelineExecutionSummaries"].as_array()?;
            summaries.iter().all(|e| e["status"] != "InProgress").then_some(history)
        })
    }

    /// `sluice pipeline create` of `declaration` (written to a file named
    /// after the pipeline); the id of the execution the creation started.
    pub fn create_pipeline(&self, name: &str, declaration: &str) -> String {
        let file = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, declaration).unwrap();
        let out = self.sluice(&["pipeline", "create", file.to_str().unwrap(), "--output", "json"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        created["pipelineExecutionId"].as_str().unwrap().to_string()
    }

    /// An execution once it ended (neither InProgress nor Stopping), as
    /// `execution get` shows it; after `timeout`, a panic with the
    /// controller's log.
    pub fn execution_end(&self, pipeline: &str, id: &str, timeout: Duration) -> Value {
        wait_until(&format!("execution {id} to end"), timeout, || {
            let e = self.sluice_json(&["execution", "get", pipeline, id]).ok()?;
            let status = e["pipelineExecution"]["status"].as_str()?;
            (status != "InProgress" && status != "Stopping").then_some(e)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.controller_log()))
    }

    /// Subscribes to the controller's live events, of one pipeline or of
    /// all; see [`Events`].
    pub fn events(&self, pipeline: Option<&str>) -> Result<Events> {
        Events::connect(&self.api, &self.ca_file(), &self.token, pipeline)
    }

    /// The CA certificate (PEM) the API's certificate chains to: the one
    /// `controller.json` names, the controller's own CA.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.clone().unwrap_or_else(|| self.data_dir().join("ca").join("ca.crt"))
    }

    /// The `sluice` CLI with this cluster's API, CA and admin token in its
    /// environment (a test may override any of them).
    pub fn cli(&self) -> Command {
        let mut command = Command::new(bin("sluice"));
        command.env("SLUICE_API", &self.api).env("SLUICE_CA", self.ca_file()).env("SLUICE_TOKEN", &self.token);
        // No profile of the user running the tests applies.
        command.env("SLUICE_CONFIG", self.dir.path().join("profiles.json")).env_remove("SLUICE_PROFILE");
        command
    }

    /// Subscribes to the live events with another user's token (issue 15,
    /// policy: the stream carries only what that user may read).
    pub fn events_as(&self, token: &str, pipeline: Option<&str>) -> Result<Events> {
        Events::connect(&self.api, &self.ca_file(), token, pipeline)
    }

    /// Runs the `sluice` CLI against this cluster with another user's token.
    pub fn sluice_as(&self, token: &str, args: &[&str]) -> Output {
        self.cli().args(args).env("SLUICE_TOKEN", token).output().expect("running sluice")
    }

    /// Runs the `sluice` CLI against this cluster.
    pub fn sluice(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("running sluice")
    }

    /// Runs the CLI and parses its `--output json` document.
    /// Makes a user with `role` (`sluice user create`) and returns a new
    /// API token of theirs (`sluice token create --user`).
    pub fn user_token(&self, name: &str, role: &str) -> String {
        let out = self.sluice(&["user", "create", name, "--role", role]);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = self.sluice(&["token", "create", "--user", name]);
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `sluice secret set NAME --pipelines PIPELINES` as the admin, the
    /// value on stdin exactly as given.
    pub fn set_secret(&self, name: &str, value: &str, pipelines: &str) {
        use std::io::Write as _;
        let mut child = self
            .cli()
            .args(["secret", "set", name, "--pipelines", pipelines])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }

    pub fn sluice_json(&self, args: &[&str]) -> Result<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.sluice(&all);
        if !out.status.success() {
            bail!("sluice {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        self.kill_controller();
    }
}

/// A pipeline whose first stage checks `repo` out with the git plugin into
/// the artifact `src`, followed by `stages` (stage objects, comma-separated).
pub fn git_pipeline(name: &str, variables: &str, repo: &Path, stages: &str) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "variables": [{variables}], "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout",
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["git"]}}}}]}},
  {stages}]}}}}"#,
        repo = repo.display()
    )
}

/// Runs git in a directory with a fixed identity, failing loudly.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@sluice.invalid", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a repository with the given files committed on `main`; returns
/// the commit id.
pub fn make_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
    git(dir, &["rev-parse", "HEAD"])
}

pub fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A UDP relay the test controls, between an agent and the fleet port:
/// the agent dials [`UdpRelay::addr`]; [`UdpRelay::cut`] drops every
/// packet both ways until [`UdpRelay::restore`]. Stops on drop.
pub struct UdpRelay {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The agent's latest address.
    client: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    /// The agent's address when the relay was cut.
    cut_client: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    /// Packets dropped, while cut, that came from another address than
    /// `cut_client`: a reconnecting agent's new socket.
    dropped_from_new_sockets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl UdpRelay {
    pub fn start(upstream: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        // Short read timeouts let the threads see `stop`.
        let tick = Some(Duration::from_millis(50));
        let front = std::net::UdpSocket::bind("127.0.0.1:0")?;
        front.set_read_timeout(tick)?;
        let back = std::net::UdpSocket::bind("127.0.0.1:0")?;
        back.connect(upstream).with_context(|| format!("relaying to {upstream}"))?;
        back.set_read_timeout(tick)?;
        let addr = front.local_addr()?;
        let (front, back) = (Arc::new(front), Arc::new(back));
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_client = Arc::new(Mutex::new(None::<std::net::SocketAddr>));
        let dropped_from_new_sockets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The agent's address: the last one heard from (a reconnecting
        // agent opens a new socket).
        let client = Arc::new(Mutex::new(None::<std::net::SocketAddr>));
        let up = {
            let (front, back, cut, stop, client) = (front.clone(), back.clone(), cut.clone(), stop.clone(), client.clone());
            let (cut_client, dropped) = (cut_client.clone(), dropped_from_new_sockets.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        *client.lock().expect("relay lock") = Some(from);
                        if !cut.load(Ordering::Relaxed) {
                            let _ = back.send(&buf[..n]);
                        } else if *cut_client.lock().expect("relay lock") != Some(from) {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        let down = {
            let (cut, stop, client) = (cut.clone(), stop.clone(), client.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = back.recv(&mut buf) {
                        let to = *client.lock().expect("relay lock");
                        if let (false, Some(to)) = (cut.load(Ordering::Relaxed), to) {
                            let _ = front.send_to(&buf[..n], to);
                        }
                    }
                }
            })
        };
        Ok(Self { addr, cut, stop, threads: vec![up, down], client, cut_client, dropped_from_new_sockets })
    }

    /// Where agents dial instead of the fleet port.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Drops every packet from now on, both ways.
    pub fn cut(&self) {
        *self.cut_client.lock().expect("relay lock") = *self.client.lock().expect("relay lock");
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Packets dropped since [`UdpRelay::cut`] that the agent sent from a
    /// new socket: more than zero once a reconnect attempt was dropped.
    pub fn dropped_from_new_sockets(&self) -> usize {
        self.dropped_from_new_sockets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Relays packets again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
