//! High availability (issue 18, ha): several real `sluice controller`
//! processes on one PostgreSQL store, and agents given all of their fleet
//! addresses. Used by the `ha` cross tests and `sluice-bench failover`.
//!
//! Every controller keeps its addresses across restarts (fixed ports), so
//! that a controller that executed itself again or was started again is
//! found where it was. They share `secret.key` (the first one's, copied to
//! the others before they start): the CA and the admin token come from
//! the store, sealed with it.

use crate::{WAIT, bin, wait_for};
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One controller of the cluster.
pub struct Member {
    child: Option<Child>,
    pub api: String,
    pub fleet: String,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Member {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Controllers on one store, with agents dialling all of them.
pub struct HaCluster {
    pub store: String,
    pub members: Vec<Member>,
    agents: Vec<Child>,
    pub token: String,
    pub ca: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub agents_home: tempfile::TempDir,
}

/// A port free on loopback for both TCP and UDP now (it is bound again by
/// the controller a moment later).
fn free_port() -> Result<u16> {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

impl HaCluster {
    /// Starts `n` controllers on the store at `store` (a fresh database),
    /// each with `extra` flags and `env`; the first is the leader when this
    /// returns.
    pub fn start(store: &str, n: usize, extra: &[&str], env: &[(String, String)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-ha").tempdir()?;
        let mut cluster = Self {
            store: store.to_string(),
            members: Vec::new(),
            agents: Vec::new(),
            token: String::new(),
            ca: PathBuf::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.to_vec(),
            dir,
            agents_home: tempfile::Builder::new().prefix("sluice-ha-agents").tempdir()?,
        };
        for i in 0..n {
            let (api, fleet) = (free_port()?, free_port()?);
            let dir = cluster.dir.path().join(format!("controller-{i}"));
            std::fs::create_dir_all(&dir)?;
            let log = cluster.dir.path().join(format!("controller-{i}.log"));
            let member = Member {
                child: None,
                api: format!("https://127.0.0.1:{api}"),
                fleet: format!("127.0.0.1:{fleet}"),
                dir,
                log,
            };
            cluster.members.push(member);
        }
        cluster.launch(0)?;
        cluster.wait_for_leader(WAIT)?;
        let first = cluster.members[0].dir.clone();
        cluster.token = std::fs::read_to_string(first.join("admin.token"))?.trim().to_string();
        cluster.ca = first.join("ca").join("ca.crt");
        for i in 1..n {
            // What an operator copies to a new controller (docs/ha.md): the
            // secret key; the CA and the tokens' files are the store's anyway.
            for file in ["secret.key", "admin.token", "worker.key", "ca/ca.crt", "ca/ca.key"] {
                let (from, to) = (first.join(file), cluster.members[i].dir.join(file));
                if from.exists() {
                    std::fs::create_dir_all(to.parent().context("a parent")?)?;
                    std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
                }
            }
            cluster.launch(i)?;
        }
        for i in 1..n {
            wait_for("a standby to answer", WAIT, || match cluster.health(i) {
                Some(h) if h.contains("role: standby") => Ok(()),
                other => Err(format!("{other:?}")),
            })?;
        }
        Ok(cluster)
    }

    /// Starts controller `i` (again) on its data dir and addresses.
    pub fn launch(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let api = m.api.trim_start_matches("https://");
        let child = Command::new(bin("sluice"))
            .args(["controller", "--api", api, "--fleet", &m.fleet, "--store", &self.store, "--data-dir"])
            .arg(&m.dir)
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting sluice controller")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Kills controller `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to controller `i`.
    pub fn signal(&self, i: usize, signal: &str) -> Result<()> {
        let pid = self.members[i].pid().context("the controller is not running")?;
        let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// How controller `i` exited, if it has.
    pub fn exit(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// `GET /healthz` of controller `i` (`None` when it does not answer).
    pub fn health(&self, i: usize) -> Option<String> {
        get(&self.members[i].api, &self.ca_or_own(i), "/healthz", None).ok().map(|(_, body)| body)
    }

    /// The CA file: the cluster's, or (before the first controller wrote
    /// it) the controller's own.
    fn ca_or_own(&self, i: usize) -> PathBuf {
        if self.ca.as_os_str().is_empty() { self.members[i].dir.join("ca").join("ca.crt") } else { self.ca.clone() }
    }

    /// The controller that says it leads, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.health(i).is_some_and(|h| h.contains("role: leader")))
    }

    /// Waits until a controller leads and its API answers an authenticated
    /// request; returns it and how long that took.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<(usize, Duration)> {
        let started = Instant::now();
        let leader = wait_for("a leader", timeout, || self.leader().ok_or_else(|| "no controller leads".to_string()))?;
        Ok((leader, started.elapsed()))
    }

    /// Every API address, comma-separated (the CLI's `--api` list).
    pub fn apis(&self) -> String {
        self.members.iter().map(|m| m.api.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Every fleet address, comma-separated (the agents' `--controller` list).
    pub fn fleets(&self) -> String {
        self.members.iter().map(|m| m.fleet.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The CLI with every controller's address, the CA and the admin token.
    pub fn cli(&self, api: &str) -> Command {
        let mut cmd = Command::new(bin("sluice"));
        cmd.env("SLUICE_API", api).env("SLUICE_CA", &self.ca).env("SLUICE_TOKEN", &self.token);
        cmd
    }

    /// Runs the CLI against the whole cluster.
    pub fn sluice(&self, args: &[&str]) -> Output {
        self.cli(&self.apis()).args(args).output().expect("running sluice")
    }

    /// Runs the CLI and parses its JSON output.
    pub fn sluice_json(&self, args: &[&str]) -> Result<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.sluice(&all);
        if !out.status.success() {
            bail!("sluice {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Starts an agent enrolled with a one-use token, dialling every
    /// controller; waits until the leader lists it connected. Returns its
    /// index.
    pub fn add_agent(&mut self, labels: &[&str]) -> Result<usize> {
        let out = self.sluice(&["agent-token", "create", "--ttl", "1h", "--uses", "1"]);
        if !out.status.success() {
            bail!("agent-token create failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let token = String::from_utf8(out.stdout)?.trim().to_string();
        let n = self.agents.len();
        let dir = self.agents_home.path().join(format!("agent-{n}"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log"))?;
        let mut cmd = Command::new(bin("sluice-agent"));
        cmd.args(["--controller", &self.fleets(), "--data-dir"]).arg(&dir).args(["--token", &token]);
        if !labels.is_empty() {
            cmd.args(["--labels", &labels.join(",")]);
        }
        cmd.arg("--sandbox-write").arg(self.dir.path());
        self.agents.push(cmd.env("SLUICE_LOG", "info").stdout(Stdio::null()).stderr(log).spawn()?);
        self.wait_for_agents(n + 1)?;
        Ok(n)
    }

    /// The log of agent `n`.
    pub fn agent_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.agents_home.path().join(format!("agent-{n}.log"))).unwrap_or_default()
    }

    /// Waits until the leader lists `n` agents connected.
    pub fn wait_for_agents(&self, n: usize) -> Result<()> {
        wait_for(&format!("{n} connected agents"), WAIT, || {
            let agents = self.sluice_json(&["agent", "list"]).map_err(|e| e.to_string())?;
            let list = agents["agents"].as_array().cloned().unwrap_or_default();
            let connected = list.iter().filter(|a| a["connected"] == Value::Bool(true)).count();
            if connected >= n { Ok(()) } else { Err(format!("{connected} connected")) }
        })
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        for i in 0..self.members.len() {
            // A paused controller does not die of SIGKILL until resumed.
            let _ = self.signal(i, "CONT");
            self.kill(i);
        }
    }
}

/// One HTTPS request to `api` (`path` with its query), with a bearer
/// token when given: the status and the body.
pub fn get(api: &str, ca: &Path, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let (mut stream, socket) = crate::connect(api, ca)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    let host = api.split("://").nth(1).unwrap_or(api);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// A throwaway PostgreSQL cluster in a temp dir, on a free port, stopped
/// on drop. Run as the `postgres` user when the tests run as root
/// (PostgreSQL refuses root). A stand-in until the store's own harness
/// helper (issue 18, pg) is merged.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The postgres user's uid and gid, when the tests run as root.
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl Postgres {
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-pg").tempdir()?;
        let data = dir.path().join("data");
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_root {
            Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status()?;
        }
        // Run as the postgres user itself (no su in between), so that the
        // child is PostgreSQL and a signal reaches it.
        let ids = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let owner = if as_root { ids("-u").zip(ids("-g")) } else { None };
        let mut pg = Self { dir, port: free_port()?, owner, child: None };
        let out = pg.command("initdb").args(["--auth=trust", "--no-sync", "-U", "postgres", "-D"]).arg(&data).output()?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The harness's own `postgres` user is trusted; every other role
        // must give its password (scram), as in a real deployment: a
        // controller that drops the password on any connection fails.
        let hba = "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba)?;
        pg.restart()?;
        Ok(pg)
    }

    /// Starts PostgreSQL (again, after [`Postgres::stop`]) on its data dir
    /// and port; waits until it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("postgres.log"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"])
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let port = self.port;
        wait_for("PostgreSQL to accept connections", WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ()).map_err(|e| e.to_string())
        })?;
        // Accepting TCP comes a moment before accepting queries.
        wait_for("PostgreSQL to answer", WAIT, || self.query("postgres", "SELECT 1").map_err(|e| e.to_string()))?;
        Ok(())
    }

    /// Stops PostgreSQL (fast shutdown: connections are cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(pg_bin(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdout(Stdio::null());
        cmd
    }

    /// A fresh database's URL.
    pub fn database(&self, name: &str) -> Result<String> {
        let out = Command::new(pg_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()?;
        if !out.status.success() {
            bail!("creating database {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", self.port))
    }

    /// A fresh database owned by a role `user` that logs in with
    /// `password` only: its URL, without the password (give it as
    /// `PGPASSWORD`, as docs/ha.md says).
    pub fn database_with_password(&self, name: &str, user: &str, password: &str) -> Result<String> {
        self.query("postgres", &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"))?;
        self.query("postgres", &format!("CREATE DATABASE {name} OWNER {user}"))?;
        Ok(format!("postgres://{user}@127.0.0.1:{}/{name}", self.port))
    }

    /// `psql -At -c SQL` on a database: its output.
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        let out = Command::new(pg_bin("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-At", "-d", database, "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

/// A PostgreSQL program: from the newest `/usr/lib/postgresql/N/bin` (where
/// Debian installs them, off the PATH), else the PATH's.
fn pg_bin(program: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join(program).exists())
        .collect();
    found.sort();
    found.pop().map_or_else(|| PathBuf::from(program), |(_, bin)| bin.join(program))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PARALLEL pipeline: `repo` checked out, then a Build action that appends the execution's id
/// to `runs` (once per run of the action) and then takes `seconds`.
pub fn pipeline(name: &str, repo: &Path, runs: &Path, seconds: u32) -> String {
    let commands = format!("echo #{{codepipeline.PipelineExecutionId}} >> {}\nsleep {seconds}", runs.display());
    serde_json::json!({"pipeline": {"name": name, "executionMode": "PARALLEL", "stages": [
        {"name": "Source", "actions": [{
            "name": "Checkout",
            "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": repo.display().to_string()},
            "outputArtifacts": [{"name": "src"}],
            "capabilities": {"exec": ["git"]},
        }]},
        {"name": "Build", "actions": [{
            "name": "Work",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": commands},
            "capabilities": {"exec": ["sh"]},
        }]},
    ]}})
    .to_string()
}
