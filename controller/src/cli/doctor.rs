//! `sluice doctor`: checks a controller's or an agent's setup on this host
//! (its data dir) and says what to fix: the ports, this clock against the
//! certificates' times, free space, Landlock, the CA's and certificates'
//! expiry, the store's integrity. It only reads: the store is opened
//! read-only, nothing is written or repaired. Exit code 1 when a check
//! failed, 0 when every check passed or only warned.
//!
//! The checks are pure functions of what was read and of `now`; [`run`]
//! reads the files, probes the ports and prints.

use super::output::s;
use super::{Ctx, Failure, parse_size};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The data dir of a controller (holding sluice.db) or of an agent
    /// (holding agent.crt) on this host.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// For an agent: the controller's fleet address (HOST:PORT), to check
    /// that it can be reached.
    #[arg(long, env = "SLUICE_CONTROLLER", value_name = "HOST:PORT")]
    pub controller: Option<String>,
    /// Free space the data dir's file system should keep (the controller's
    /// --min-free-space).
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_free_space: u64,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome and, when it is not ok, what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &str, message: impl Into<String>) -> Self {
        Self { check: check.into(), status: Status::Ok, message: message.into(), fix: None }
    }
    fn warn(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { check: check.into(), status: Status::Warn, message: message.into(), fix: Some(fix.into()) }
    }
    fn fail(check: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { check: check.into(), status: Status::Fail, message: message.into(), fix: Some(fix.into()) }
    }
}

/// A certificate is due for attention this long before it expires.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
/// Clocks may disagree this much before a certificate's start is a problem
/// (certificates are issued a little back-dated for the same reason).
const CLOCK_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// How long a port probe waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long before its end a certificate of `lifetime` seconds is
/// worth a warning: 30 days, or a tenth of a short one's lifetime (an
/// agent's, renewed at 70-90 % of its 7 days, would otherwise always warn).
fn warning_before(lifetime: i64) -> i64 {
    (EXPIRY_WARNING.as_secs() as i64).min(lifetime / 10)
}

/// The expiry and start of a certificate (PEM) against `now` (Unix
/// seconds): expired, expiring soon, not yet valid (this clock is behind
/// the issuer's), or fine.
pub fn check_certificate(check: &str, what: &str, pem: &[u8], now: i64, renew: &str) -> Vec<Finding> {
    let parsed = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string()).and_then(|(_, pem)| {
        pem.parse_x509()
            .map(|c| (c.validity().not_before.timestamp(), c.validity().not_after.timestamp()))
            .map_err(|e| e.to_string())
    });
    let (not_before, not_after) = match parsed {
        Ok(times) => times,
        Err(e) => return vec![Finding::fail(check, format!("{what} is not a PEM certificate: {e}"), renew)],
    };
    let date = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| t.to_string())
    };
    let mut findings = Vec::new();
    if not_before > now + CLOCK_TOLERANCE.as_secs() as i64 {
        findings.push(Finding::fail(
            "clock",
            format!("{what} is valid only from {}, {} s after this host's clock", date(not_before), not_before - now),
            "this host's clock is behind the one that issued it: synchronise it (systemd-timesyncd, chrony or ntpd)",
        ));
    }
    if not_after <= now {
        findings.push(Finding::fail(check, format!("{what} expired on {}", date(not_after)), renew));
    } else if not_after - now < warning_before(not_after - not_before) {
        findings.push(Finding::warn(
            check,
            format!("{what} expires on {} (in {} days)", date(not_after), (not_after - now) / 86_400),
            renew,
        ));
    } else {
        findings.push(Finding::ok(check, format!("{what} is valid until {}", date(not_after))));
    }
    findings
}

/// Free space against the floor: under it fails, under twice it warns.
pub fn check_free_space(dir: &Path, free: u64, floor: u64) -> Finding {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    let message = format!("{} free on the file system of {} (floor {})", gib(free), dir.display(), gib(floor));
    let fix = "free space there, or move the data dir to a larger file system";
    if free < floor {
        Finding::fail("free space", message, fix)
    } else if free < floor.saturating_mul(2) {
        Finding::warn("free space", message, fix)
    } else {
        Finding::ok("free space", message)
    }
}

/// `PRAGMA quick_check` on a read-only open of the store: the pages and
/// records, without `integrity_check`'s index cross-check, whose read
/// snapshot would hold the WAL for minutes on a big store.
pub fn check_store(path: &Path) -> Finding {
    let restore = "stop the controller and restore the data dir from a backup (docs/install.md, \"Backup and restore\")";
    if !path.exists() {
        return Finding::fail(
            "store",
            format!("{} does not exist", path.display()),
            "start the controller once to create it, or restore a backup",
        );
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let result = rusqlite::Connection::open_with_flags(path, flags).and_then(|db| {
        db.busy_timeout(Duration::from_secs(5))?;
        let mut statement = db.prepare("PRAGMA quick_check")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()
    });
    match result {
        Ok(rows) if rows == ["ok"] => Finding::ok("store", format!("{} passed its integrity check", path.display())),
        Ok(rows) => Finding::fail(
            "store",
            format!(
                "{} failed its integrity check: {}",
                path.display(),
                rows.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
            restore,
        ),
        Err(e) => store_error(path, &e, restore),
    }
}

/// A store that cannot be read is not necessarily damaged: only corruption
/// calls for a restore; a busy store or the wrong user does not.
fn store_error(path: &Path, e: &rusqlite::Error, restore: &str) -> Finding {
    use rusqlite::ErrorCode;
    let message = format!("{} cannot be read as a store: {e}", path.display());
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Finding::fail("store", message, restore),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Finding::warn("store", message, "the store is busy (a checkpoint or a backup): run doctor again in a moment")
        }
        Some(ErrorCode::PermissionDenied | ErrorCode::CannotOpen | ErrorCode::ReadOnly) => Finding::fail(
            "store",
            message,
            "run doctor as the controller's user (`sudo -u sluice sluice doctor ...`), who owns the data dir",
        ),
        _ => Finding::fail("store", message, "see the error; restore from a backup only if the store is damaged"),
    }
}

/// Landlock confines the programs plugins are granted; an agent without it
/// refuses them (or runs them unconfined with --allow-unconfined-exec).
fn check_landlock(agent: bool) -> Finding {
    match sluice_runtime::sandbox::landlock_available() {
        Ok(()) => Finding::ok("landlock", "landlock is available: granted programs run confined"),
        Err(e) => {
            let fix = "use a kernel with Landlock ABI 6 (Linux 6.12 or later) and `landlock` in its lsm= boot parameter";
            if agent { Finding::fail("landlock", e, fix) } else { Finding::warn("landlock", e, fix) }
        }
    }
}

/// Something listens on a TCP address.
fn check_tcp(check: &str, addr: SocketAddr, fix: &str) -> Finding {
    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(_) => Finding::ok(check, format!("{addr} (TCP) accepts connections")),
        Err(e) => Finding::fail(check, format!("{addr} (TCP) cannot be reached: {e}"), fix),
    }
}

/// A controller on this host holds its fleet port: binding it fails.
fn check_udp_bound(addr: SocketAddr) -> Finding {
    match UdpSocket::bind(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Finding::ok("fleet", format!("{addr} (UDP) is held by the controller"))
        }
        Err(e) => Finding::warn("fleet", format!("{addr} (UDP) cannot be checked: {e}"), "check that the controller runs"),
        Ok(_) => Finding::fail(
            "fleet",
            format!("nothing listens on {addr} (UDP): agents cannot connect"),
            "start the controller (systemctl start sluice-controller); open UDP on the firewall for agents",
        ),
    }
}

/// A QUIC handshake with the controller's fleet port, verifying it by the
/// agent's copy of the CA and offering no client certificate: the
/// controller refuses it at the end of the handshake, which proves that it
/// answers over UDP without touching the agent's own connection (a second
/// connection with the agent's certificate would be taken for the agent).
async fn probe_fleet(address: &str, ca_file: &Path) -> Finding {
    use rustls::pki_types::pem::PemObject as _;
    let unreachable = "check --controller, that the controller runs, and that firewalls let UDP through both ways";
    let Some(addr) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return Finding::fail("fleet", format!("{address} does not resolve"), "check --controller and DNS");
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = std::fs::read(ca_file)
        .ok()
        .map(|pem| rustls::pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect::<Vec<_>>());
    for cert in certs.unwrap_or_default() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Finding::fail("fleet", format!("{} holds no CA certificate", ca_file.display()), "enroll the agent again");
    }
    let probe = async {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![sluice_protocol::ALPN_FLEET.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
        let endpoint = quinn::Endpoint::client(bind)?;
        let connecting = endpoint.connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(quic)),
            addr,
            sluice_protocol::CONTROLLER_SERVER_NAME,
        )?;
        let outcome = match connecting.await {
            // The client's side of a TLS 1.3 handshake ends before the
            // server has checked the client: the refusal follows.
            Ok(connection) => Ok(connection.closed().await),
            Err(e) => Err(e),
        };
        endpoint.close(0u32.into(), b"doctor");
        anyhow::Ok(outcome)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Err(_) => Finding::fail(
            "fleet",
            format!("{address} (UDP) did not answer a QUIC handshake in {PROBE_TIMEOUT:?}"),
            unreachable,
        ),
        Ok(Err(e)) => Finding::fail("fleet", format!("probing {address}: {e:#}"), unreachable),
        Ok(Ok(Err(quinn::ConnectionError::TransportError(e)))) if e.to_string().contains("certificate") => Finding::fail(
            "fleet",
            format!("{address} answers, but not with a certificate of this agent's CA: {e}"),
            "check --controller: it is another controller, or this agent must enroll again",
        ),
        Ok(Ok(_)) => {
            Finding::ok("fleet", format!("{address} (UDP) answers a QUIC handshake with a certificate of this agent's CA"))
        }
    }
}

fn host_port(url: &str) -> Option<SocketAddr> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    (host.as_str(), url.port_or_known_default()?).to_socket_addrs().ok()?.next()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn free_space(dir: &Path, floor: u64) -> Finding {
    match nix::sys::statvfs::statvfs(dir) {
        #[allow(clippy::useless_conversion)]
        Ok(stat) => {
            check_free_space(dir, u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())), floor)
        }
        Err(e) => {
            Finding::fail("free space", format!("reading the free space of {}: {e}", dir.display()), "check the data dir")
        }
    }
}

fn read_certificate(check: &str, what: &str, path: &Path, now: i64, renew: &str) -> Vec<Finding> {
    match std::fs::read(path) {
        Ok(pem) => check_certificate(check, &format!("{what} {}", path.display()), &pem, now, renew),
        Err(e) => vec![Finding::fail(check, format!("reading {what} {}: {e}", path.display()), renew)],
    }
}

fn controller_findings(dir: &Path, args: &DoctorArgs, now: i64) -> Vec<Finding> {
    let mut findings = vec![check_store(&dir.join("sluice.db"))];
    findings.extend(read_certificate(
        "ca",
        "the CA certificate",
        &dir.join("ca").join("ca.crt"),
        now,
        "issue a new CA: agents must then enroll again (docs/security.md)",
    ));
    findings.push(free_space(dir, args.min_free_space));
    findings.push(check_landlock(false));
    let start = "start the controller (systemctl start sluice-controller); open the port on the firewall for its clients";
    match std::fs::read_to_string(dir.join("controller.json")).map(|t| serde_json::from_str::<serde_json::Value>(&t)) {
        Ok(Ok(addresses)) => {
            match addresses["api"].as_str().and_then(host_port) {
                Some(addr) => findings.push(check_tcp("api", addr, start)),
                None => findings.push(Finding::fail("api", "controller.json names no API address", start)),
            }
            if let Some(addr) = addresses["fleet"].as_str().and_then(|a| a.parse().ok()) {
                findings.push(check_udp_bound(addr));
            }
            if let Some(addr) = addresses["webhooks"].as_str().and_then(host_port) {
                findings.push(check_tcp("webhooks", addr, start));
            }
        }
        _ => findings.push(Finding::fail(
            "api",
            "controller.json is missing or unreadable: the controller never started here",
            start,
        )),
    }
    findings
}

async fn agent_findings(dir: &Path, args: &DoctorArgs, now: i64) -> Vec<Finding> {
    let mut findings = read_certificate(
        "certificate",
        "the agent's certificate",
        &dir.join("agent.crt"),
        now,
        "an expired agent cannot renew: enroll it again with a new join token (`sluice agent-token create`), after removing agent.crt and agent.key",
    );
    findings.extend(read_certificate(
        "ca",
        "the controller's CA certificate",
        &dir.join("ca.crt"),
        now,
        "the controller's CA must be renewed there; then enroll this agent again",
    ));
    findings.push(free_space(dir, args.min_free_space));
    findings.push(check_landlock(true));
    let fleet = match &args.controller {
        None => Finding::warn(
            "fleet",
            "the controller's address is unknown: not checked",
            "pass --controller HOST:PORT (or set SLUICE_CONTROLLER)",
        ),
        Some(address) => probe_fleet(address, &dir.join("ca.crt")).await,
    };
    findings.push(fleet);
    findings
}

pub async fn run(ctx: &Ctx, args: DoctorArgs) -> Result<i32, Failure> {
    let dir = &args.data_dir;
    let now = unix_now();
    let findings = if dir.join("agent.crt").exists() {
        agent_findings(dir, &args, now).await
    } else if dir.join("sluice.db").exists() || dir.join("controller.json").exists() {
        controller_findings(dir, &args, now)
    } else {
        return Err(Failure::new(
            2,
            format!("{} is neither a controller's data dir (sluice.db) nor an agent's (agent.crt)", dir.display()),
        ));
    };
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    let out = json!({ "dataDir": dir.display().to_string(), "healthy": !failed, "findings": findings });
    ctx.output.print(&out, |out| {
        let mut text = String::new();
        for f in out["findings"].as_array().into_iter().flatten() {
            let status = match f["status"].as_str() {
                Some("ok") => "ok  ",
                Some("warn") => "WARN",
                _ => "FAIL",
            };
            text.push_str(&format!("{status}  {:<12} {}\n", s(&f["check"]), s(&f["message"])));
            if let Some(fix) = f["fix"].as_str() {
                text.push_str(&format!("      {:<12} fix: {fix}\n", ""));
            }
        }
        text.push_str(if out["healthy"] == true { "healthy\n" } else { "something needs fixing: see FAIL above\n" });
        text
    });
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: i64, not_after: i64) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["test".to_string()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    #[test]
    fn certificates_expired_expiring_and_from_the_future() {
        let status = |pem: &str| {
            check_certificate("ca", "the CA", pem.as_bytes(), NOW, "renew")
                .iter()
                .map(|f| (f.check.clone(), f.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(status(&certificate(NOW - DAY, NOW + 365 * DAY)), [("ca".into(), Status::Ok)]);
        assert_eq!(status(&certificate(NOW - 300 * DAY, NOW + 3 * DAY)), [("ca".into(), Status::Warn)]);
        assert_eq!(status(&certificate(NOW - 9 * DAY, NOW - DAY)), [("ca".into(), Status::Fail)]);
        assert_eq!(
            status(&certificate(NOW + DAY, NOW + 90 * DAY)),
            [("clock".into(), Status::Fail), ("ca".into(), Status::Ok)]
        );
        // A short-lived certificate warns only past its renewal time.
        assert_eq!(status(&certificate(NOW - 5 * DAY, NOW + 2 * DAY)), [("ca".into(), Status::Ok)]);
        assert_eq!(status(&certificate(NOW - 7 * DAY, NOW + DAY / 2)), [("ca".into(), Status::Warn)]);
        // A start a minute ahead is clock noise, not skew.
        assert_eq!(status(&certificate(NOW + 60, NOW + 90 * DAY)), [("ca".into(), Status::Ok)]);
        assert_eq!(status("not a certificate"), [("ca".into(), Status::Fail)]);
    }

    #[test]
    fn free_space_under_the_floor_fails_and_near_it_warns() {
        let dir = Path::new("/d");
        assert_eq!(check_free_space(dir, 10 << 30, 1 << 30).status, Status::Ok);
        assert_eq!(check_free_space(dir, 3 << 29, 1 << 30).status, Status::Warn);
        assert_eq!(check_free_space(dir, 1 << 20, 1 << 30).status, Status::Fail);
    }

    #[test]
    fn a_corrupt_store_fails_its_check_and_a_sound_one_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute_batch("CREATE TABLE t (a TEXT); CREATE INDEX t_a ON t (a);").unwrap();
            for i in 0..2000 {
                db.execute("INSERT INTO t VALUES (?1)", [format!("row {i} {}", "x".repeat(100))]).unwrap();
            }
        }
        assert_eq!(check_store(&path).status, Status::Ok);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle..middle + 4096].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
        let finding = check_store(&path);
        assert_eq!(finding.status, Status::Fail, "{finding:?}");
        assert!(finding.fix.unwrap().contains("backup"));
        assert_eq!(check_store(&dir.path().join("none.db")).status, Status::Fail);
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5A; 8192]).unwrap();
        assert!(check_store(&garbage).fix.unwrap().contains("restore the data dir"));
    }

    #[test]
    fn a_locked_store_is_a_warning_without_a_restore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE t (a TEXT); BEGIN EXCLUSIVE; INSERT INTO t VALUES ('x');").unwrap();
        let finding = check_store(&path);
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(!finding.fix.unwrap().contains("restore"));
    }
}
