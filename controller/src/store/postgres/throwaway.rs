//! A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` of
//! Debian's packages (`/usr/lib/postgresql/*/bin`) in a temporary
//! directory, listening on a free loopback port, one per test process
//! ([`Throwaway::shared`]), a fresh database per test ([`Throwaway::database`]).
//!
//! PostgreSQL refuses to run as root: as root (CI) the cluster runs as the
//! `postgres` user, in a directory it owns. A watchdog process stops the
//! cluster and removes its directory when the test process ends, however
//! it ends (a `static` is never dropped).
//!
//! Where PostgreSQL is not installed, [`Throwaway::shared`] says so: with
//! `CI=true` it panics (a test that needs it must not pass without it),
//! elsewhere it prints a note and the test skips.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Throwaway {
    port: u16,
    /// The directory of the cluster (removed by the watchdog).
    dir: PathBuf,
}

/// The `bin` directory of the newest installed PostgreSQL.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

static SHARED: OnceLock<Result<Throwaway, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

impl Throwaway {
    /// The process's cluster, started on first use; `None` (after a note)
    /// when PostgreSQL is not installed and this is not CI.
    pub fn shared() -> Option<&'static Throwaway> {
        let started = SHARED.get_or_init(|| match bin_dir() {
            None => Err("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
                         apt-get install postgresql, as .ci/run does"
                .to_string()),
            Some(bin) => Self::start(&bin).map_err(|e| format!("starting a throwaway PostgreSQL cluster: {e:#}")),
        });
        match started {
            Ok(cluster) => Some(cluster),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{e}"),
            Err(e) => {
                eprintln!("note: skipping a PostgreSQL test: {e}");
                None
            }
        }
    }

    fn start(bin: &Path) -> Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let owner = if root {
            Some(nix::unistd::User::from_name("postgres")?.context("no `postgres` user to run PostgreSQL as")?)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("sluice-pg-").tempdir()?.keep();
        if let Some(owner) = &owner {
            nix::unistd::chown(&dir, Some(owner.uid), Some(owner.gid))?;
        }
        let data = dir.join("data");
        let as_owner = |program: &str| {
            let mut cmd = if root {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
                cmd
            } else {
                Command::new(bin.join(program))
            };
            cmd.current_dir(&dir);
            cmd
        };
        let out = as_owner("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "sluice", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A free port: bound and let go (another process could take it in
        // between; the start then fails loudly).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB",
            dir.display()
        );
        let out = as_owner("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            bail!("pg_ctl start failed: {}{log}", String::from_utf8_lossy(&out.stderr));
        }
        // The watchdog: stops the cluster when this process is gone.
        let stop = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {runuser} {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            runuser = if root { "runuser -u postgres --" } else { "" },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        use std::os::unix::process::CommandExt as _;
        Command::new("sh")
            .args(["-c", &stop])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the cluster's watchdog")?;
        Ok(Self { port, dir })
    }

    /// The URL of the cluster's `postgres` database (for administration).
    pub fn admin_url(&self) -> String {
        format!("postgres://sluice@127.0.0.1:{}/postgres", self.port)
    }

    /// A new, empty database; its URL.
    pub fn database(&self, what: &str) -> Result<String> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let what: String =
            what.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let name = format!("t{}_{n}_{}", std::process::id(), &what[..what.len().min(40)]);
        self.admin(&format!("CREATE DATABASE {name}"))?;
        Ok(format!("postgres://sluice@127.0.0.1:{}/{name}", self.port))
    }

    /// Runs statements on the `postgres` database.
    pub fn admin(&self, sql: &str) -> Result<()> {
        execute(&self.admin_url(), sql)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Runs statements (no parameters) on the database of `url`: what a test
/// does behind the controller's back.
pub fn execute(url: &str, sql: &str) -> Result<()> {
    let conn = super::conn::Conn::connect(&super::parse_url(url)?, "test")?;
    conn.batch(sql)
}
