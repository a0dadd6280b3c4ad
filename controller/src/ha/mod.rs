//! High availability (issue 18, ha): several controllers on one PostgreSQL
//! store, one of them the leader.
//!
//! Leadership is the lease row (`lease.rs`): a controller starts as a
//! standby and tries every [`lease::EVERY`] to take the lease; the one that
//! does runs the driver (engine, scheduler, fleet port, workers,
//! notifications, retention, pollers) exactly as a lone controller does
//! after a restart: unfinished executions come back from the store and
//! agents reconnect and report their running jobs. Before its driver writes
//! anything the store is fenced with the lease's holder and epoch, so every
//! write transaction of a leader that lost the lease is refused.
//!
//! A leader that cannot renew before its term ends, or whose write is
//! fenced, stops writing at once and steps down by executing itself again
//! ([`step_down`]): the same argv, a clean standby, no state of the old
//! term left in memory. Standbys serve the API listener by forwarding each
//! request to the leader (`forward.rs`) and refuse agents on the fleet port
//! with the leader's address.

pub mod forward;
pub mod lease;
mod standby;

use crate::driver::ControllerConfig;
use crate::store::Fence;
use anyhow::{Context as _, Result};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;
use tracing::{error, info, warn};

/// The leader as a standby knows it from the lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub api_url: String,
    pub fleet_addr: String,
    pub epoch: i64,
}

/// This controller's role, for `/healthz`, `/readyz`, the metrics and the
/// standby's forwarding. One per process ([`standing`]).
#[derive(Debug, Default)]
pub struct Standing {
    /// Whether the controller is one of a cluster (a PostgreSQL store).
    clustered: AtomicBool,
    leading: AtomicBool,
    epoch: AtomicI64,
    leader: RwLock<Option<Leader>>,
    /// The leader's term, as its renewals keep it.
    term: RwLock<Option<lease::Term>>,
}

impl Standing {
    pub fn is_clustered(&self) -> bool {
        self.clustered.load(Ordering::Relaxed)
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Whether this controller may act as the leader now: always out of a
    /// cluster; in one, while its term lasts (side effects outside the
    /// store, such as notification deliveries, check it before they go).
    pub fn may_act(&self) -> bool {
        if !self.is_clustered() {
            return true;
        }
        let term = self.term.read().map(|t| *t).unwrap_or_default();
        self.is_leading() && term.is_some_and(|t| t.holds(Instant::now()))
    }

    fn set_term(&self, term: lease::Term) {
        if let Ok(mut slot) = self.term.write() {
            *slot = Some(term);
        }
    }

    /// The live leader, when there is one.
    pub fn leader(&self) -> Option<Leader> {
        self.leader.read().map(|l| l.clone()).unwrap_or_default()
    }

    fn set_leader(&self, leader: Option<Leader>) {
        if let Some(l) = &leader {
            self.epoch.store(l.epoch, Ordering::Relaxed);
        }
        if let Ok(mut slot) = self.leader.write() {
            *slot = leader;
        }
    }

    /// `/healthz`: `ok`, and in a cluster the role and the leader.
    pub fn healthz(&self) -> String {
        if !self.is_clustered() {
            return "ok\n".into();
        }
        let role = if self.is_leading() { "leader" } else { "standby" };
        let leader = self.leader().map(|l| l.api_url).unwrap_or_else(|| "none".into());
        format!("ok\nrole: {role}\nleader: {leader}\nepoch: {}\n", self.epoch.load(Ordering::Relaxed))
    }

    /// `sluice_leader` and `sluice_lease_epoch`, in a cluster.
    pub fn write_metrics(&self, text: &mut sluice_protocol::metrics::Text) {
        use sluice_protocol::metrics::Kind;
        if !self.is_clustered() {
            return;
        }
        let leading = if self.is_leading() { 1.0 } else { 0.0 };
        text.single(
            "sluice_leader",
            "Whether this controller leads its cluster (1) or stands by (0).",
            Kind::Gauge,
            leading,
        );
        let epoch = self.epoch.load(Ordering::Relaxed) as f64;
        text.single(
            "sluice_lease_epoch",
            "The epoch of the cluster's lease as this controller last saw it.",
            Kind::Gauge,
            epoch,
        );
    }
}

/// The process's [`Standing`].
pub fn standing() -> &'static Arc<Standing> {
    static STANDING: OnceLock<Arc<Standing>> = OnceLock::new();
    STANDING.get_or_init(Default::default)
}

/// Exit code of a leader that stepped down and could not execute itself
/// again (`EX_TEMPFAIL`): a supervisor restarts it as a standby.
pub const STEPPED_DOWN: i32 = 75;

/// Stops being the leader at once: executes this program again with the
/// same arguments and environment, so it comes back as a standby with
/// nothing of its term in memory. Every socket and the data dir's lock are
/// close-on-exec, and an unfinished transaction dies with its connection.
/// Set in the environment of a controller that stepped down and started
/// again (its database may be away then).
const REEXEC: &str = "SLUICE_STEPPED_DOWN";

pub fn step_down(reason: &str) -> ! {
    use std::os::unix::process::CommandExt as _;
    error!(reason, "no longer the leader: stepping down, starting again as a standby");
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // /proc/self/exe is this very binary even when an upgrade replaced the file.
    let e = std::process::Command::new("/proc/self/exe").arg0(arg0).args(args).env(REEXEC, "1").exec();
    crate::exit::Exit::Failed { code: STEPPED_DOWN, message: format!("stepped down ({reason}) and cannot start again: {e}") }
        .now()
}

/// What a failed store write means: a fenced one (another controller leads)
/// steps down, anything else stops the process so that a restart recovers.
/// In a cluster that restart is the step-down itself: the controller comes
/// back as a standby at once (PostgreSQL down must not end the process).
pub fn write_failed(e: &anyhow::Error) -> ! {
    if is_fenced(e) {
        step_down(&format!("a write was refused: {e:#}"));
    }
    if standing().is_clustered() {
        step_down(&format!("a store write failed: {e:#}"));
    }
    crate::exit::Exit::StoreWriteFailed(format!("{e:#}")).now()
}

/// Whether the store refused a write because the lease moved on.
pub fn is_fenced(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<crate::store::Fenced>().is_some())
}

/// Who this process is in the lease row: unique per start (a controller
/// that executed itself again is a new holder).
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}/{:08x}", host.trim(), std::process::id(), rand::random::<u32>())
}

/// The addresses other controllers and agents reach this one by.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub api_url: String,
    pub fleet_addr: String,
}

/// Runs a controller of a cluster on the PostgreSQL store at `url` until
/// it is asked to stop: standby first, leader once it takes the lease.
pub async fn run(mut config: ControllerConfig, url: &str) -> Result<()> {
    // A database that does not answer at the first start is a mistake to
    // say at once (a wrong host, port or password), not one to wait on. A
    // member that steps down comes back through here while the database may
    // be away: it waits as a standby, answering 503 NoLeader.
    if std::env::var_os(REEXEC).is_none() {
        lease::LeaseConn::connect(url)
            .await
            .with_context(|| format!("connecting to the store {}", crate::store::postgres::redact(url)))?;
    }
    let standing = standing().clone();
    standing.clustered.store(true, Ordering::Relaxed);
    let me = holder_id();
    let standby = standby::Standby::start(&mut config, standing.clone()).await?;
    let advertised = advertised(&config, &standby)?;
    standby.advertise(&advertised.api_url);
    info!(holder = %me, api = %advertised.api_url, fleet = %advertised.fleet_addr, "controller started as a standby");
    let Some((conn, epoch, sent)) = wait_for_lease(url, &me, &advertised, &standing).await? else {
        return Ok(());
    };
    standby.stop().await;
    standing.leading.store(true, Ordering::Relaxed);
    standing.set_leader(Some(Leader {
        api_url: advertised.api_url.clone(),
        fleet_addr: advertised.fleet_addr.clone(),
        epoch,
    }));
    info!(epoch, "took the lease: leading");
    let leadership = Fence { holder: me.clone(), epoch };
    standing.set_term(lease::Term::from(sent));
    let keeper = tokio::spawn(keep_lease(conn, leadership.clone(), lease::Term::from(sent), url.to_string()));
    config.leadership = Some(leadership);
    let started = Instant::now();
    let controller = match crate::driver::start(config).await {
        Ok(controller) => controller,
        Err(e) => {
            // No renewal may follow the release.
            keeper.abort();
            return Err(failed_to_lead(url, &me, epoch, e).await);
        }
    };
    info!(api = %controller.api_url, fleet = %controller.fleet, epoch, took_ms = started.elapsed().as_millis() as u64, "leading");
    crate::exit::shutdown_signal().await;
    controller.close();
    // Stopping on purpose: a standby need not wait for the lease to expire.
    if let Ok(conn) = lease::LeaseConn::connect(url).await
        && let Err(e) = conn.release(&me, epoch).await
    {
        warn!("releasing the lease: {e:#}");
    }
    Ok(())
}

/// A controller that took the lease but cannot start as the leader (wrong
/// bucket credentials, a CA of another cluster, a store schema newer than
/// this release...): it gives the lease up at once, so that a healthy
/// member takes over at its next attempt instead of after the TTL, and
/// waits a moment before exiting so that a supervisor restarting it at once
/// does not win the lease again before the others had their chance.
async fn failed_to_lead(url: &str, me: &str, epoch: i64, e: anyhow::Error) -> anyhow::Error {
    error!(epoch, error = %format!("{e:#}"), "took the lease but cannot start as the leader: giving the lease up");
    match lease::LeaseConn::connect(url).await {
        Ok(conn) => {
            if let Err(e) = conn.release(me, epoch).await {
                warn!("giving the lease up: {e:#}");
            }
        }
        Err(e) => warn!("giving the lease up: {e:#}"),
    }
    tokio::time::sleep(FAILED_START_BACKOFF).await;
    e.context("starting as the leader (the lease was given up)")
}

/// How long a member that failed to start as the leader waits before it
/// exits (see [`failed_to_lead`]).
const FAILED_START_BACKOFF: std::time::Duration = std::time::Duration::from_secs(3);

/// The advertised addresses: the flags, else the bound ones when they are
/// not wildcards (a wildcard is no address another host can reach).
fn advertised(config: &ControllerConfig, standby: &standby::Standby) -> Result<Advertised> {
    let api_url = match &config.advertise_api {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if standby.api.ip().is_unspecified() => anyhow::bail!(
            "the API listens on {} (every address): give --advertise-api https://HOST:PORT, the address the other \
             controllers of the cluster forward requests to",
            standby.api
        ),
        None => format!("{}://{}", config.api_scheme.as_str(), standby.api),
    };
    let fleet_addr = match &config.advertise_fleet {
        Some(addr) => addr.clone(),
        None if config.fleet.ip().is_unspecified() => anyhow::bail!(
            "the fleet port listens on {} (every address): give --advertise-fleet HOST:PORT, the address agents reach \
             the leader by",
            config.fleet
        ),
        None => config.fleet.to_string(),
    };
    // Standbys forward tokens and signatures to this URL: never in clear.
    if !api_url.starts_with("https://") {
        anyhow::bail!(
            "the API is advertised as {api_url}: the controllers of a cluster forward requests to each other over \
             HTTPS only; drop --api-plain-http, or give --advertise-api https://HOST:PORT (a TLS proxy in front)"
        );
    }
    Ok(Advertised { api_url, fleet_addr })
}

/// Tries to take the lease every [`lease::EVERY`], keeping the standby's
/// idea of the leader current, until it does (the connection, the epoch
/// and when the winning statement was sent) or the process is asked to
/// stop (`None`).
async fn wait_for_lease(
    url: &str,
    me: &str,
    advertised: &Advertised,
    standing: &Standing,
) -> Result<Option<(lease::LeaseConn, i64, Instant)>> {
    let mut conn: Option<lease::LeaseConn> = None;
    let stop = crate::exit::shutdown_signal();
    tokio::pin!(stop);
    loop {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = match lease::LeaseConn::connect(url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!("the lease: {e:#}");
                    standing.set_leader(None);
                    None
                }
            };
        }
        if let Some(c) = &conn {
            let sent = Instant::now();
            match c.acquire(me, &advertised.api_url, &advertised.fleet_addr).await {
                Ok(Some(epoch)) => return Ok(conn.map(|c| (c, epoch, sent))),
                Ok(None) => match c.read().await {
                    Ok(row) if row.live => standing.set_leader(Some(Leader {
                        api_url: row.api_url,
                        fleet_addr: row.fleet_addr,
                        epoch: row.epoch,
                    })),
                    Ok(_) => standing.set_leader(None),
                    Err(e) => warn!("reading the lease: {e:#}"),
                },
                Err(e) => {
                    warn!("taking the lease: {e:#}");
                    standing.set_leader(None);
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(None),
            _ = tokio::time::sleep(lease::EVERY) => {}
        }
    }
}

/// The leader's renewals: every [`lease::EVERY`], each bounded by what is
/// left of the term. The term ending (renewals failing, or the process
/// paused past it) or the lease gone to another epoch steps down.
async fn keep_lease(conn: lease::LeaseConn, me: Fence, mut term: lease::Term, url: String) {
    let mut conn = Some(conn);
    loop {
        // Wake at the end of the term at the latest: a leader whose
        // renewals fail steps down when its term ends, not up to one
        // interval after (its side effects must not overlap a successor's).
        tokio::time::sleep(lease::EVERY.min(term.left(Instant::now()))).await;
        // First look at the clock: a leader resumed after a pause learns
        // here, before any renewal attempt, that its term is over.
        let now = Instant::now();
        if !term.holds(now) {
            step_down("the lease's term ended without a renewal");
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = tokio::time::timeout(term.left(now), lease::LeaseConn::connect(&url)).await.ok().and_then(|c| c.ok());
        }
        let Some(c) = &conn else { continue };
        let sent = Instant::now();
        match tokio::time::timeout(term.left(sent), c.renew(&me.holder, me.epoch)).await {
            Ok(Ok(true)) => {
                term.renewed(sent);
                standing().set_term(term);
            }
            Ok(Ok(false)) => step_down("another controller took the lease"),
            Ok(Err(e)) => {
                warn!("renewing the lease: {e:#}");
                conn = None;
            }
            Err(_) => warn!("renewing the lease: no answer within the term"),
        }
    }
}
