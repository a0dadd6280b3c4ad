//! Talking to the controller: the one-shot enrollment exchange and the fleet
//! connection's control loop (Hello, Welcome, heartbeats, jobs, cancels),
//! reconnecting with jittered exponential backoff when the connection drops.
//! Given several controllers (a cluster: one leader, standbys), it tries
//! them in turn and goes first to the leader a standby names when it
//! refuses the agent ([`sluice_protocol::NOT_LEADER_CODE`]).
//! All control-stream writes go through one writer task fed by the outbox;
//! the frame in flight when a connection dies is sent again on the next.
//!
//! Must not know how a job runs (that is `jobs`) nor how bytes of plugins and
//! artifacts move (that is `transfer`); it hands jobs over and keeps the
//! [`Link`] pointing at the live connection.

use crate::identity::{self, EnrollmentKey, Identity, PinnedCaVerifier};
use crate::jobs::Jobs;
use crate::renewal::Renewal;
use crate::transfer::{Link, read_frame, write_frame};
use anyhow::{Context as _, Result, anyhow, bail};
use rand::Rng as _;
use sluice_protocol::{
    CONTROLLER_SERVER_NAME, EnrollRequest, EnrollResponse, FromAgent, Hello, JoinToken, NOT_LEADER_CODE, PROTOCOL_VERSION,
    StreamReply, StreamRequest, ToAgent,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{Instrument as _, debug, info, info_span, trace, warn};

/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between reconnects: a restarted controller sees its agents
/// back within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a QUIC handshake may take: a dead address (nothing answers UDP)
/// would otherwise hold the agent for the whole idle timeout before it
/// tries the next controller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the controller may take to answer Hello or an enrollment request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats faster than this would only load the controller; it is a guard
/// against a zero in Welcome, not a tuning knob.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// Heartbeats without any frame from the controller after which the agent
/// takes the connection for dead and reconnects. The controller asks for
/// six heartbeats per lease, so this leaves time to reconnect and report
/// the jobs before their leases end.
const SILENT_HEARTBEATS: u32 = 2;
/// Allowance for a slow controller on top of those heartbeats.
const SILENCE_SLACK: Duration = Duration::from_secs(1);
/// Refusal reasons that retrying cannot cure: the controller speaks another
/// protocol version or does not (or no longer) accept this identity. The
/// protocol carries only a reason text, so these words are the contract
/// with the controller's messages.
const FATAL_REFUSALS: &[&str] = &["version", "identity", "revoked", "unknown agent", "not enrolled"];

/// How a fleet connection ended.
enum Ended {
    /// Try again after a pause, with the next controller.
    Lost(anyhow::Error),
    /// A standby refused the agent; `Some` names the leader's fleet address.
    NotLeader(Option<String>),
    /// The controller will never take this agent as it is: stop.
    Fatal(anyhow::Error),
}

/// The leader a standby's close names (`Some(None)`: none now), if the
/// connection was closed as such a refusal.
fn not_leader(e: &quinn::ConnectionError) -> Option<Option<String>> {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) if close.error_code == NOT_LEADER_CODE.into() => {
            Some(sluice_protocol::parse_not_leader(&close.reason).unwrap_or(None))
        }
        _ => None,
    }
}

/// The controllers an agent was given (`--controller a,b,c`) and which to
/// try next: the leader a standby named, else the one after the last tried.
pub struct Controllers {
    addresses: Vec<String>,
    next: usize,
    leader: Option<String>,
}

impl Controllers {
    /// At least one address, each non-empty (the flags' parser checks).
    pub fn new(addresses: Vec<String>) -> Result<Self> {
        let addresses: Vec<String> = addresses.iter().map(|a| a.trim().to_string()).collect();
        if addresses.is_empty() || addresses.iter().any(String::is_empty) {
            bail!("--controller needs one or more HOST:PORT addresses, separated by commas");
        }
        Ok(Self { addresses, next: 0, leader: None })
    }

    /// The address to try now: a named leader once, else the list in turn.
    fn take(&mut self) -> String {
        if let Some(leader) = self.leader.take() {
            return leader;
        }
        let address = self.addresses[self.next % self.addresses.len()].clone();
        self.next = (self.next + 1) % self.addresses.len();
        address
    }

    /// After a success with `address` (enrollment): the next attempt (the
    /// fleet connection) goes there first.
    fn stay(&mut self, address: &str) {
        self.leader = Some(address.to_string());
    }

    /// A standby named the leader: tried next (unless it is `refused_by`
    /// itself, which would only refuse again).
    fn follow(&mut self, leader: Option<String>, refused_by: &str) {
        self.leader = leader.filter(|l| l != refused_by);
    }

    fn describe(&self) -> String {
        self.addresses.join(",")
    }
}

fn is_fatal_refusal(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    FATAL_REFUSALS.iter().any(|word| reason.contains(word))
}

/// Jittered exponential backoff: each wait is between half and all of the
/// current step, so that agents cut off together do not return together.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { step: BACKOFF_MIN }
    }
    fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
    fn next(&mut self) -> Duration {
        let ms = self.step.as_millis() as u64;
        let wait = Duration::from_millis(ms / 2 + rand::rng().random_range(0..=ms / 2));
        self.step = (self.step * 2).min(BACKOFF_MAX);
        wait
    }
}

async fn resolve(controller: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(controller)
        .await
        .with_context(|| format!("resolving controller address {controller:?}"))?
        .next()
        .ok_or_else(|| anyhow!("controller address {controller:?} resolves to nothing"))
}

/// A client endpoint of the address family of `peer`.
fn endpoint_for(peer: SocketAddr) -> Result<quinn::Endpoint> {
    let local: SocketAddr = if peer.is_ipv6() { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    crate::udp::endpoint(local, None).context("opening a UDP socket")
}

/// Enrollment failures that retrying cannot cure.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// A standby refused the connection, naming the leader or none.
#[derive(Debug)]
struct NotLeader(Option<String>);

impl std::fmt::Display for NotLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sluice_protocol::not_leader_reason(self.0.as_deref()))
    }
}

impl std::error::Error for NotLeader {}

/// Enrolls this agent: a fresh key and CSR, sent with the join token's
/// secret over a connection that trusts the controller only through the
/// token's CA fingerprint. Connection failures are retried with backoff;
/// a refusal or a CA mismatch ends it.
pub async fn enroll(controllers: &mut Controllers, token: &JoinToken, hostname: &str) -> Result<Identity> {
    let key = EnrollmentKey::generate(hostname)?;
    let mut backoff = Backoff::new();
    let (agent_id, cert_pem, ca_pem, labels) = loop {
        let controller = controllers.take();
        match enroll_once(&controller, token, hostname, &key.csr_pem).await {
            Ok(answer) => {
                controllers.stay(&controller);
                break answer;
            }
            Err(e) if e.is::<Refused>() => return Err(e),
            Err(e) => {
                if let Some(NotLeader(leader)) = e.downcast_ref::<NotLeader>() {
                    controllers.follow(leader.clone(), &controller);
                }
                let wait = backoff.next();
                warn!(%controller, "enrollment failed, retrying in {wait:?}: {e:#}");
                tokio::time::sleep(wait).await;
            }
        }
    };
    key.into_identity(agent_id, cert_pem, ca_pem, labels, &token.ca_fingerprint)
}

async fn enroll_once(
    controller: &str,
    token: &JoinToken,
    hostname: &str,
    csr_pem: &str,
) -> Result<(String, String, String, BTreeMap<String, String>)> {
    let addr = resolve(controller).await?;
    let verifier = Arc::new(PinnedCaVerifier::new(&token.ca_fingerprint));
    let config = identity::enrollment_client_config(verifier.clone())?;
    let endpoint = endpoint_for(addr)?;
    let connecting = endpoint.connect_with(config, addr, CONTROLLER_SERVER_NAME)?;
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        // The verifier knows better than the TLS alert why it said no.
        Ok(Err(e)) => match verifier.failure() {
            Some(reason) => return Err(anyhow!(Refused(reason))),
            None => return Err(anyhow!(e).context(format!("connecting to the controller at {addr}"))),
        },
        Err(_) => bail!("no answer from the controller at {addr} within {CONNECT_TIMEOUT:?}"),
    };
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        let request = EnrollRequest {
            protocol_version: PROTOCOL_VERSION,
            secret: token.secret.clone(),
            csr_pem: csr_pem.to_string(),
            hostname: hostname.to_string(),
        };
        write_frame(&mut send, &request).await?;
        send.finish()?;
        read_frame::<EnrollResponse>(&mut recv).await
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("the controller did not answer the enrollment request within {ANSWER_TIMEOUT:?}"));
    // A standby closes the connection at once, naming the leader.
    if let Some(leader) = connection.close_reason().as_ref().and_then(not_leader) {
        return Err(anyhow!(NotLeader(leader)));
    }
    let answer = answer?.context("enrollment exchange")?;
    connection.close(0u32.into(), b"enrolled");
    // Lets the close reach the controller; bounded, as nothing depends on it.
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    match answer {
        Some(EnrollResponse::Enrolled { agent_id, cert_pem, ca_pem, labels }) => Ok((agent_id, cert_pem, ca_pem, labels)),
        Some(EnrollResponse::Refused { reason }) => Err(anyhow!(Refused(format!("enrollment refused: {reason}")))),
        None => bail!("the controller closed the enrollment stream without an answer"),
    }
}

/// What the agent says about itself in Hello.
pub struct Presence {
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
}

/// The fleet side of the agent: connects, serves, reconnects.
pub struct Fleet {
    controllers: Controllers,
    renewal: Arc<Renewal>,
    presence: Presence,
    jobs: Arc<Jobs>,
    link: Link,
    outbox: Option<mpsc::Receiver<FromAgent>>,
    /// A frame taken from the outbox whose write failed; first on the next
    /// connection.
    unsent: Option<Vec<u8>>,
    /// Tells the controller this process from a restarted one.
    instance: u64,
}

impl Fleet {
    pub fn new(
        controllers: Controllers,
        renewal: Arc<Renewal>,
        presence: Presence,
        jobs: Arc<Jobs>,
        link: Link,
        outbox: mpsc::Receiver<FromAgent>,
    ) -> Result<Self> {
        Ok(Self { controllers, renewal, presence, jobs, link, outbox: Some(outbox), unsent: None, instance: rand::random() })
    }

    /// Serves the controller for as long as the process lives; returns only
    /// when the controller refuses this agent for good.
    pub async fn run(mut self) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            let controller = self.controllers.take();
            let span = info_span!("connection", %controller);
            let ended = self.connect_and_serve(&controller, &mut backoff).instrument(span).await;
            // Each wait is jittered and grows until a controller welcomes
            // the agent: a cluster without a leader is not hammered.
            let wait = backoff.next();
            match ended {
                Ended::Fatal(e) => return Err(e),
                Ended::Lost(e) => {
                    warn!(%controller, controllers = %self.controllers.describe(), "connection to the controller lost, reconnecting in {wait:?}: {e:#}");
                }
                Ended::NotLeader(leader) => {
                    info!(%controller, leader = leader.as_deref().unwrap_or("none"), "the controller is not the leader, trying {} in {wait:?}", leader.as_deref().unwrap_or("the others"));
                    self.controllers.follow(leader, &controller);
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn connect_and_serve(&mut self, controller: &str, backoff: &mut Backoff) -> Ended {
        let addr = match resolve(controller).await {
            Ok(a) => a,
            Err(e) => return Ended::Lost(e),
        };
        let endpoint = match endpoint_for(addr) {
            Ok(e) => e,
            Err(e) => return Ended::Lost(e),
        };
        // The identity may have been renewed since the last connection.
        let config = match self.renewal.client_config() {
            Ok(c) => c,
            Err(e) => return Ended::Fatal(e.context("loading the agent identity")),
        };
        let connection = match endpoint.connect_with(config, addr, CONTROLLER_SERVER_NAME) {
            Ok(connecting) => match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) if certificate_revoked(&e) => return revoked(addr),
                Ok(Err(e)) => return Ended::Lost(anyhow!(e).context(format!("connecting to {addr}"))),
                Err(_) => return Ended::Lost(anyhow!("no answer from {addr} within {CONNECT_TIMEOUT:?}")),
            },
            Err(e) => return Ended::Lost(anyhow!(e).context(format!("connecting to {addr}"))),
        };
        let ended = self.serve(&connection, addr, backoff).await;
        // A standby (or a leader stepping down) closes the connection
        // naming the leader.
        if let (Ended::Lost(_), Some(leader)) = (&ended, connection.close_reason().as_ref().and_then(not_leader)) {
            return Ended::NotLeader(leader);
        }
        if self.link.clear() {
            crate::observe::METRICS.disconnects.inc();
        }
        // With TLS 1.3 the controller checks the client certificate after
        // the agent thinks the handshake is done: a refusal shows up as
        // the connection's close reason.
        if let (Ended::Lost(_), Some(reason)) = (&ended, connection.close_reason())
            && certificate_revoked(&reason)
        {
            return revoked(addr);
        }
        connection.close(0u32.into(), b"agent reconnecting");
        ended
    }

    async fn serve(&mut self, connection: &quinn::Connection, addr: SocketAddr, backoff: &mut Backoff) -> Ended {
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return Ended::Lost(e.into()),
        };
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            labels: self.presence.labels.clone(),
            slots: self.presence.slots,
            running: self.jobs.running_ids(),
            plugins: self.jobs.cached_plugins(),
            instance: self.instance,
        };
        if let Err(e) = write_frame(&mut send, &FromAgent::Hello(hello)).await {
            return Ended::Lost(e.context("sending Hello"));
        }
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, read_frame::<ToAgent>(&mut recv)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Ended::Lost(e.context("waiting for Welcome")),
            Err(_) => return Ended::Lost(anyhow!("the controller did not answer Hello within {ANSWER_TIMEOUT:?}")),
        };
        let (agent_id, heartbeat) = match answer {
            Some(ToAgent::Welcome { agent_id, heartbeat_ms }) => {
                (agent_id, Duration::from_millis(heartbeat_ms).max(MIN_HEARTBEAT))
            }
            Some(ToAgent::Refused { reason }) => return refusal(reason),
            Some(other) => return Ended::Lost(anyhow!("the controller sent {other:?} before Welcome")),
            None => return Ended::Lost(anyhow!("the controller closed the control stream before Welcome")),
        };
        backoff.reset();
        info!(%agent_id, %addr, heartbeat_ms = heartbeat.as_millis() as u64, "connected");
        // Tests and operators wait for exactly this line.
        // For a person at the terminal; a JSON log has the line above.
        if !crate::log_is_json() {
            eprintln!("agent {agent_id} connected to {addr}");
        }
        self.link.set(Some(connection.clone()));
        crate::observe::METRICS.connects.inc();

        // What the controller may have missed goes out first: log lines,
        // the frame whose write failed, then results (after their logs).
        // It drops what it already has (by sequence number, by job).
        let (logs, results) = self.jobs.unacknowledged();
        let encode = |m: &FromAgent| sluice_protocol::encode(m).ok().map(|f| (f, false));
        let mut backlog: VecDeque<(Vec<u8>, bool)> = logs.iter().filter_map(encode).collect();
        backlog.extend(self.unsent.take().map(|f| (f, true)));
        backlog.extend(results.iter().filter_map(encode));
        let outbox = self.outbox.take().expect("the outbox is back between connections");
        let writer = tokio::spawn(
            write_control(send, outbox, backlog, heartbeat, self.jobs.clone(), connection.clone()).in_current_span(),
        );
        let ended = read_control(&mut recv, connection, &self.jobs, &self.renewal, heartbeat).await;
        connection.close(0u32.into(), b"agent reconnecting");
        match writer.await {
            Ok((outbox, unsent)) => {
                self.outbox = Some(outbox);
                self.unsent = unsent;
            }
            Err(e) => return Ended::Fatal(anyhow!("the control stream writer failed: {e}")),
        }
        ended
    }
}

/// TLS's `certificate_revoked` alert, as QUIC carries it.
const ALERT_CERTIFICATE_REVOKED: u8 = 44;

/// Whether the controller closed the connection because this agent's
/// certificate is revoked: retrying cannot help.
fn certificate_revoked(e: &quinn::ConnectionError) -> bool {
    matches!(e, quinn::ConnectionError::ConnectionClosed(close)
        if close.error_code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_REVOKED))
}

fn revoked(addr: SocketAddr) -> Ended {
    Ended::Fatal(anyhow!(
        "the controller at {addr} refused this agent's certificate: it was revoked; enroll again with a join token"
    ))
}

fn refusal(reason: String) -> Ended {
    if is_fatal_refusal(&reason) {
        Ended::Fatal(anyhow!("controller refused this agent: {reason}"))
    } else {
        Ended::Lost(anyhow!("controller refused the connection: {reason}"))
    }
}

/// Reads the control stream until it or the connection ends, or until the
/// controller has been silent for [`SILENT_HEARTBEATS`] heartbeats (it
/// acknowledges every one): a killed controller is noticed in a few
/// heartbeats rather than at QUIC's idle timeout.
async fn read_control(
    recv: &mut quinn::RecvStream,
    connection: &quinn::Connection,
    jobs: &Arc<Jobs>,
    renewal: &Renewal,
    heartbeat: Duration,
) -> Ended {
    let silence = heartbeat * SILENT_HEARTBEATS + SILENCE_SLACK;
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout(silence, read_frame::<ToAgent>(recv)) => match message {
                Ok(message) => message,
                Err(_) => return Ended::Lost(anyhow!("the controller has sent nothing for {silence:?}")),
            },
            reason = connection.closed() => return Ended::Lost(anyhow!(reason)),
        };
        match message {
            Err(e) => return Ended::Lost(e.context("reading the control stream")),
            Ok(None) => return Ended::Lost(anyhow!("the controller closed the control stream")),
            Ok(Some(ToAgent::Job(spec))) => {
                info!(job_id = %spec.job_id, lease_epoch = spec.lease_epoch, "job received");
                jobs.accept(*spec);
            }
            Ok(Some(ToAgent::Cancel { job_id })) => jobs.cancel(&job_id),
            Ok(Some(ToAgent::Poll(spec))) => jobs.poll(*spec),
            Ok(Some(ToAgent::HeartbeatAck)) => trace!("heartbeat acknowledged"),
            Ok(Some(ToAgent::ResultAck { job_id })) => jobs.acknowledged(&job_id),
            Ok(Some(ToAgent::LogAck { job_id, seq })) => jobs.log_acknowledged(&job_id, seq),
            Ok(Some(ToAgent::Renewed { cert_pem })) => {
                if let Err(e) = renewal.install(cert_pem) {
                    warn!("installing the renewed certificate: {e:#}");
                }
            }
            Ok(Some(ToAgent::RenewalRefused { reason })) => warn!("certificate renewal refused: {reason}"),
            Ok(Some(ToAgent::Refused { reason })) => return refusal(reason),
            Ok(Some(ToAgent::Welcome { .. })) => debug!("ignoring a second Welcome"),
        }
    }
}

/// The one writer of the control stream: messages from the outbox, and a
/// heartbeat every `every`. Gives the outbox back when the connection ends,
/// with the frame whose write failed, if any (heartbeats are not kept: the
/// next connection sends fresh ones). `backlog` goes first; a frame marked
/// `true` in it is given back if it cannot be written (the others are kept
/// elsewhere until acknowledged).
async fn write_control(
    mut send: quinn::SendStream,
    mut outbox: mpsc::Receiver<FromAgent>,
    mut backlog: VecDeque<(Vec<u8>, bool)>,
    every: Duration,
    jobs: Arc<Jobs>,
    connection: quinn::Connection,
) -> (mpsc::Receiver<FromAgent>, Option<Vec<u8>>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One stream per job's log (docs/design.md section 5), opened at its first
    // line and closed before its result goes out.
    let mut log_streams: HashMap<String, mpsc::UnboundedSender<LogOp>> = HashMap::new();
    // Results held back until their job's log is confirmed, so that the
    // writer goes on with heartbeats meanwhile. A result lost with the
    // connection is sent again (results are kept until acknowledged).
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    while let Some((frame, _)) = backlog.front() {
        // Log lines sent again go on their job's stream, ahead of the new
        // ones, so that the controller sees each job's lines in order.
        let mut decoder = sluice_protocol::FrameDecoder::new();
        decoder.push(frame);
        let written = match decoder.next_frame::<FromAgent>() {
            Ok(Some(FromAgent::Log { job_id, .. })) => {
                log_line(&connection, &mut log_streams, &ready_tx, &job_id, frame.clone());
                Ok(())
            }
            _ => send.write_all(frame).await.map_err(anyhow::Error::from),
        };
        if let Err(e) = written {
            warn!("writing to the controller: {e:#}");
            // Wakes the reader, which would otherwise wait for a frame
            // that the controller may never send.
            connection.close(0u32.into(), b"control stream broken");
            return (outbox, backlog.into_iter().find(|(_, keep)| *keep).map(|(f, _)| f));
        }
        backlog.pop_front();
    }
    loop {
        let (message, keep) = tokio::select! {
            biased;
            _ = connection.closed() => return (outbox, None),
            _ = ticker.tick() => (FromAgent::Heartbeat { running: jobs.running_ids() }, false),
            Some(frame) = ready_rx.recv() => {
                if let Err(e) = send.write_all(&frame).await {
                    warn!("writing the control stream: {e}");
                    connection.close(0u32.into(), b"control stream broken");
                    return (outbox, None);
                }
                continue;
            }
            message = outbox.recv() => match message {
                Some(message) => (message, true),
                None => return (outbox, None),
            },
        };
        let frame = match sluice_protocol::encode(&message) {
            Ok(frame) => frame,
            Err(e) => {
                warn!("dropping a message that cannot be encoded: {e}");
                continue;
            }
        };
        let written = match &message {
            FromAgent::Log { job_id, .. } => {
                log_line(&connection, &mut log_streams, &ready_tx, job_id, frame.clone());
                Ok(())
            }
            FromAgent::JobFinished { job_id, .. } => match log_streams.remove(job_id) {
                None => send.write_all(&frame).await.map_err(anyhow::Error::from),
                // The log's own task sends the result once the log is confirmed.
                Some(log) => {
                    if let Err(mpsc::error::SendError(LogOp::Finish(result))) = log.send(LogOp::Finish(frame.clone())) {
                        let _ = ready_tx.send(result);
                    }
                    Ok(())
                }
            },
            _ => send.write_all(&frame).await.map_err(anyhow::Error::from),
        };
        if let Err(e) = written {
            warn!("writing to the controller: {e:#}");
            connection.close(0u32.into(), b"control stream broken");
            return (outbox, keep.then_some(frame));
        }
    }
}

/// What the writer hands a job's log task.
enum LogOp {
    /// An encoded `FromAgent::Log` frame.
    Line(Vec<u8>),
    /// The job's result frame, to send on the control stream once the log
    /// is confirmed.
    Finish(Vec<u8>),
}

/// Queues a log line for its job's stream, starting the task that owns the
/// stream at the job's first line. The writer never waits on a log stream:
/// heartbeats go on whatever the logs do.
fn log_line(
    connection: &quinn::Connection,
    streams: &mut HashMap<String, mpsc::UnboundedSender<LogOp>>,
    ready: &mpsc::UnboundedSender<Vec<u8>>,
    job_id: &str,
    frame: Vec<u8>,
) {
    let tx = streams.entry(job_id.to_string()).or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(log_stream(connection.clone(), job_id.to_string(), rx, ready.clone()));
        tx
    });
    let _ = tx.send(LogOp::Line(frame));
}

/// Owns one job's log stream: writes its lines in order, then on `Finish`
/// closes it, waits for the controller's confirmation and passes the result
/// on. Lines that cannot be written stay with the job for re-sending after
/// a reconnect; the result always goes on.
async fn log_stream(
    connection: quinn::Connection,
    job_id: String,
    mut ops: mpsc::UnboundedReceiver<LogOp>,
    ready: mpsc::UnboundedSender<Vec<u8>>,
) {
    let opened = async {
        let (mut send, recv) = connection.open_bi().await?;
        send.write_all(&sluice_protocol::encode(&StreamRequest::Logs { job_id: job_id.clone() })?).await?;
        anyhow::Ok((send, recv))
    }
    .await;
    let mut stream = match opened {
        Ok(stream) => Some(stream),
        Err(e) => {
            warn!("opening the log stream of {job_id}: {e:#}");
            None
        }
    };
    while let Some(op) = ops.recv().await {
        match op {
            LogOp::Line(frame) => {
                if let Some((send, _)) = stream.as_mut()
                    && let Err(e) = send.write_all(&frame).await
                {
                    warn!("writing the log stream of {job_id}: {e}");
                    stream = None;
                }
            }
            LogOp::Finish(result) => {
                if let Some(stream) = stream.take()
                    && let Err(e) = close_log(stream, &job_id).await
                {
                    warn!("{e:#}");
                }
                let _ = ready.send(result);
                return;
            }
        }
    }
}

/// Ends a job's log stream and waits until the controller has every line,
/// so that the result sent next never overtakes the log.
async fn close_log(stream: (quinn::SendStream, quinn::RecvStream), job_id: &str) -> anyhow::Result<()> {
    let (mut send, mut recv) = stream;
    send.finish()?;
    match tokio::time::timeout(LOG_CLOSE_WAIT, read_frame::<StreamReply>(&mut recv)).await {
        Ok(Ok(Some(StreamReply::Ok { .. }))) => Ok(()),
        Ok(Ok(other)) => anyhow::bail!("the controller answered the log stream of {job_id} with {other:?}"),
        Ok(Err(e)) => Err(e.context(format!("closing the log stream of {job_id}"))),
        Err(_) => anyhow::bail!("the controller did not confirm the log of {job_id} within {LOG_CLOSE_WAIT:?}"),
    }
}

/// How long the writer waits for the controller to confirm a job's log.
const LOG_CLOSE_WAIT: Duration = Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fingerprint;
    use crate::identity::testing::{self, ca};
    use crate::transfer::{self, Packed};
    use sluice_protocol::{JobResult, StreamReply, StreamRequest};

    fn controller(ca: &testing::Ca) -> (quinn::Endpoint, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint =
            quinn::Endpoint::server(testing::controller_server_config(ca), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap().to_string();
        (endpoint, addr)
    }

    fn one(addr: &str) -> Controllers {
        Controllers::new(vec![addr.to_string()]).unwrap()
    }

    fn token(ca: &testing::Ca) -> JoinToken {
        JoinToken { ca_fingerprint: fingerprint(ca.cert.der()), secret: "s3cret-s3cret-s3cret".into() }
    }

    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), future).await.expect("timed out")
    }

    /// The whole life of an agent against a scripted controller: enrollment
    /// (request, finish, answer), the fleet connection with the new client
    /// certificate, Hello, Welcome, a heartbeat, and a refusal that ends it.
    #[tokio::test]
    async fn enrolls_connects_heartbeats_and_stops_on_a_fatal_refusal() {
        let ca = ca("controller ca");
        let (server, addr) = controller(&ca);
        let token = token(&ca);
        let script = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            assert!(conn.peer_identity().is_none(), "enrollment has no client certificate");
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let request: EnrollRequest = read_frame(&mut recv).await.unwrap().unwrap();
            assert_eq!(request.protocol_version, PROTOCOL_VERSION);
            assert_eq!(request.secret, "s3cret-s3cret-s3cret");
            assert_eq!(request.hostname, "build-7");
            assert!(read_frame::<EnrollRequest>(&mut recv).await.unwrap().is_none(), "agent finished its side");
            let answer = EnrollResponse::Enrolled {
                agent_id: "agent-1".into(),
                cert_pem: testing::sign(&ca, &request.csr_pem),
                ca_pem: ca.cert.pem(),
                labels: [("pool".to_string(), "fast".to_string())].into(),
            };
            write_frame(&mut send, &answer).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;

            let conn = server.accept().await.unwrap().await.unwrap();
            assert!(conn.peer_identity().is_some(), "fleet connection carries the client certificate");
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let Some(FromAgent::Hello(hello)) = read_frame(&mut recv).await.unwrap() else { panic!("hello first") };
            assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
            assert_eq!(hello.slots, 3);
            assert_eq!(hello.labels["pool"], "fast");
            assert!(hello.running.is_empty());
            write_frame(&mut send, &ToAgent::Welcome { agent_id: "agent-1".into(), heartbeat_ms: 50 }).await.unwrap();
            let heartbeat = read_frame::<FromAgent>(&mut recv).await.unwrap();
            assert_eq!(heartbeat, Some(FromAgent::Heartbeat { running: vec![] }));
            write_frame(&mut send, &ToAgent::HeartbeatAck).await.unwrap();
            write_frame(&mut send, &ToAgent::Cancel { job_id: "nothing".into() }).await.unwrap();
            let reason = "protocol version mismatch: agent speaks 1, controller speaks 2";
            write_frame(&mut send, &ToAgent::Refused { reason: reason.into() }).await.unwrap();
            conn.closed().await;
        });

        let identity = within(enroll(&mut one(&addr), &token, "build-7")).await.unwrap();
        assert_eq!(identity.agent_id, "agent-1");
        let data = tempfile::tempdir().unwrap();
        identity.save(data.path()).unwrap();
        let identity = Identity::load(data.path()).unwrap();

        let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig::default()).unwrap();
        let link = Link::default();
        let (tx, rx) = mpsc::channel(16);
        let jobs = Jobs::new(runtime, data.path(), 3, link.clone(), tx).unwrap();
        let presence = Presence { labels: identity.labels.clone(), slots: 3 };
        let renewal = Arc::new(Renewal::new(data.path().to_path_buf(), identity));
        let fleet = Fleet::new(one(&addr), renewal, presence, jobs, link, rx).unwrap();
        let err = within(fleet.run()).await.unwrap_err();
        assert!(format!("{err:#}").contains("protocol version mismatch"), "{err:#}");
        within(script).await.unwrap();
    }

    /// An enrolled agent of one slot, for a scripted controller at `addr`.
    fn job_agent(ca: &testing::Ca, addr: &str, data: &std::path::Path) -> Fleet {
        let key = EnrollmentKey::generate("h").unwrap();
        let cert = testing::sign(ca, &key.csr_pem);
        let identity =
            key.into_identity("agent-1".into(), cert, ca.cert.pem(), BTreeMap::new(), &fingerprint(ca.cert.der())).unwrap();
        let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig::default()).unwrap();
        let link = Link::default();
        let (tx, rx) = mpsc::channel(16);
        let jobs = Jobs::new(runtime, data, 1, link.clone(), tx).unwrap();
        let presence = Presence { labels: BTreeMap::new(), slots: 1 };
        let renewal = Arc::new(Renewal::new(data.to_path_buf(), identity));
        Fleet::new(one(addr), renewal, presence, jobs, link, rx).unwrap()
    }

    fn job(job_id: &str, plugin_digest: &str) -> sluice_protocol::JobSpec {
        sluice_protocol::JobSpec {
            job_id: job_id.into(),
            lease_epoch: 4,
            pipeline: "web".into(),
            execution_id: "e-1".into(),
            stage: "Build".into(),
            action: "Compile".into(),
            attempt: 1,
            plugin: sluice_protocol::PluginRef {
                provider: "shell".into(),
                version: "1".into(),
                digest: plugin_digest.into(),
                signature: None,
                publisher: None,
            },
            configuration: vec![],
            variables: vec![],
            inputs: vec![],
            outputs: vec![],
            grants: Default::default(),
            secrets: vec![],
            timeout_ms: 60_000,
        }
    }

    /// A job whose plugin arrives damaged is started, fails naming the
    /// step, is reported with its lease epoch, and leaves nothing behind.
    #[tokio::test]
    async fn a_job_whose_plugin_fails_to_verify_fails_naming_the_step() {
        let ca = ca("controller ca");
        let (server, addr) = controller(&ca);
        let data = tempfile::tempdir().unwrap();
        let claimed = "ab".repeat(32);
        let digest = claimed.clone();
        let script = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let Some(FromAgent::Hello(_)) = read_frame(&mut recv).await.unwrap() else { panic!("hello first") };
            write_frame(&mut send, &ToAgent::Welcome { agent_id: "agent-1".into(), heartbeat_ms: 60_000 }).await.unwrap();
            write_frame(&mut send, &ToAgent::Job(Box::new(job("j-1", &digest)))).await.unwrap();
            let started = read_frame::<FromAgent>(&mut recv).await.unwrap();
            assert_eq!(started, Some(FromAgent::JobStarted { job_id: "j-1".into(), lease_epoch: 4 }));
            let (mut psend, mut precv) = conn.accept_bi().await.unwrap();
            let request = read_frame::<StreamRequest>(&mut precv).await.unwrap();
            assert_eq!(request, Some(StreamRequest::FetchPlugin { digest: digest.clone() }));
            write_frame(&mut psend, &StreamReply::Ok { size: 4 }).await.unwrap();
            psend.write_all(b"junk").await.unwrap();
            psend.finish().unwrap();
            let finished = read_frame::<FromAgent>(&mut recv).await.unwrap();
            let Some(FromAgent::JobFinished { job_id, lease_epoch: 4, result: JobResult::Failed { message, retryable } }) =
                finished
            else {
                panic!("{finished:?}")
            };
            assert_eq!(job_id, "j-1");
            assert!(retryable);
            assert!(message.starts_with(&format!("fetching plugin shell@1 ({digest}): digest mismatch")), "{message}");
            conn.close(0u32.into(), b"done");
        });
        let agent = tokio::spawn(job_agent(&ca, &addr, data.path()).run());
        within(script).await.unwrap();
        agent.abort();
        assert!(!data.path().join("plugins").join(format!("{claimed}.wasm")).exists(), "nothing unverified is kept");
        let leftovers: Vec<_> = std::fs::read_dir(data.path().join("jobs")).unwrap().collect();
        assert!(leftovers.is_empty(), "job directory removed");
        let parts: Vec<_> = std::fs::read_dir(data.path().join("plugins")).unwrap().collect();
        assert!(parts.is_empty(), "partial download removed");
    }

    /// A job that ends before the start is sent (held up to START_HOLD to
    /// go out with the result) still reports its start, before its result:
    /// the controller decides on the start whether a job lost to a restart
    /// ran.
    #[tokio::test]
    async fn a_job_that_ends_at_once_still_reports_its_start_first() {
        let ca = ca("controller ca");
        let (server, addr) = controller(&ca);
        let data = tempfile::tempdir().unwrap();
        let script = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let Some(FromAgent::Hello(_)) = read_frame(&mut recv).await.unwrap() else { panic!("hello first") };
            write_frame(&mut send, &ToAgent::Welcome { agent_id: "agent-1".into(), heartbeat_ms: 60_000 }).await.unwrap();
            // Not a digest: the job fails before anything is fetched.
            write_frame(&mut send, &ToAgent::Job(Box::new(job("j-1", "not-a-digest")))).await.unwrap();
            let started = read_frame::<FromAgent>(&mut recv).await.unwrap();
            assert_eq!(started, Some(FromAgent::JobStarted { job_id: "j-1".into(), lease_epoch: 4 }));
            let finished = read_frame::<FromAgent>(&mut recv).await.unwrap();
            let Some(FromAgent::JobFinished { job_id, lease_epoch: 4, result: JobResult::Failed { .. } }) = finished else {
                panic!("{finished:?}")
            };
            assert_eq!(job_id, "j-1");
            conn.close(0u32.into(), b"done");
        });
        let agent = tokio::spawn(job_agent(&ca, &addr, data.path()).run());
        within(script).await.unwrap();
        agent.abort();
    }

    #[tokio::test]
    async fn enrollment_refuses_a_controller_with_another_ca() {
        let theirs = ca("impostor");
        let (server, addr) = controller(&theirs);
        let accept = tokio::spawn(async move {
            let _ = server.accept().await.unwrap().await;
        });
        let err = within(enroll(&mut one(&addr), &token(&ca("pinned")), "h")).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "controller's CA does not match the join token's fingerprint");
        accept.abort();
    }

    #[tokio::test]
    async fn enrollment_refusal_is_reported_as_such() {
        let ca = ca("controller ca");
        let (server, addr) = controller(&ca);
        let script = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let _: EnrollRequest = read_frame(&mut recv).await.unwrap().unwrap();
            write_frame(&mut send, &EnrollResponse::Refused { reason: "join token is unknown".into() }).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let err = within(enroll(&mut one(&addr), &token(&ca), "h")).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "enrollment refused: join token is unknown");
        within(script).await.unwrap();
    }

    /// Downloads check size and digest; uploads send the announced bytes
    /// and report the controller's answer.
    #[tokio::test]
    async fn transfers_check_what_they_move() {
        let ca = ca("controller ca");
        let (server, addr) = controller(&ca);
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        let served = body.clone();
        let offsets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let asked = offsets.clone();
        let script = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let request: StreamRequest = read_frame(&mut recv).await.unwrap().unwrap();
                match request {
                    StreamRequest::FetchArtifact { digest, .. } if digest.starts_with("00") => {
                        write_frame(&mut send, &StreamReply::Error { message: "no such artifact".into() }).await.unwrap();
                    }
                    // A controller that sends more than it announced, or less.
                    StreamRequest::FetchArtifact { digest, .. } if digest.starts_with("ff") || digest.starts_with("ee") => {
                        let announced = if digest.starts_with("ff") { served.len() - 10 } else { served.len() + 10 };
                        write_frame(&mut send, &StreamReply::Ok { size: announced as u64 }).await.unwrap();
                        let _ = send.write_all(&served).await;
                    }
                    StreamRequest::FetchArtifact { offset, .. } => {
                        asked.lock().unwrap().push(offset);
                        write_frame(&mut send, &StreamReply::Ok { size: served.len() as u64 }).await.unwrap();
                        send.write_all(&served[offset as usize..]).await.unwrap();
                    }
                    StreamRequest::FetchPlugin { .. } => {
                        write_frame(&mut send, &StreamReply::Ok { size: served.len() as u64 }).await.unwrap();
                        send.write_all(&served).await.unwrap();
                    }
                    StreamRequest::UploadOffset { .. } => {
                        write_frame(&mut send, &StreamReply::Ok { size: 0 }).await.unwrap();
                    }
                    StreamRequest::Logs { .. } => {
                        let _ = recv.read_to_end(1 << 20).await.unwrap();
                        write_frame(&mut send, &StreamReply::Ok { size: 0 }).await.unwrap();
                    }
                    StreamRequest::PutArtifact { digest, size, .. } => {
                        let bytes = recv.read_to_end(1 << 24).await.unwrap();
                        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                        let reply = if bytes.len() as u64 == size && actual == digest {
                            StreamReply::Ok { size }
                        } else {
                            StreamReply::Error { message: "digest mismatch".into() }
                        };
                        write_frame(&mut send, &reply).await.unwrap();
                    }
                }
                send.finish().unwrap();
            }
        });
        let verifier = Arc::new(PinnedCaVerifier::new(&fingerprint(ca.cert.der())));
        let config = identity::enrollment_client_config(verifier).unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = client.connect_with(config, addr.parse().unwrap(), CONTROLLER_SERVER_NAME).unwrap().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.tar");

        let request = StreamRequest::FetchArtifact { digest: digest.clone(), offset: 0 };
        let size = within(transfer::fetch(&conn, &request, &digest, &dest)).await.unwrap();
        assert_eq!(size, body.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), body);

        // A download cut off earlier goes on from the bytes on disk, and
        // the whole is checked.
        std::fs::write(&dest, &body[..123_456]).unwrap();
        let size = within(transfer::fetch_artifact(&conn, &digest, &dest)).await.unwrap();
        assert_eq!(size, body.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), body);
        assert_eq!(*offsets.lock().unwrap(), [0, 123_456]);
        // A prefix that is not the artifact's fails the digest, and goes.
        let mut bad = body[..1000].to_vec();
        bad[0] ^= 1;
        std::fs::write(&dest, &bad).unwrap();
        let err = within(transfer::fetch_artifact(&conn, &digest, &dest)).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("digest mismatch"), "{err:#}");
        assert!(!dest.exists(), "a damaged partial download is not resumed again");

        let wrong = "ab".repeat(32);
        let err = within(transfer::fetch(&conn, &request, &wrong, &dest)).await.unwrap_err();
        assert!(format!("{err:#}").starts_with("digest mismatch: expected abab"), "{err:#}");

        // More bytes than announced are refused as they arrive, and a
        // download that was not cut off is not kept for a resume; so is
        // one that ends short.
        std::fs::remove_file(&dest).unwrap();
        for (lie, said) in [
            ("ff", "controller sent more than the 299990 bytes it announced"),
            ("ee", "stream ended after 300000 of 300010 bytes"),
        ] {
            let lie = lie.repeat(32);
            let err = within(transfer::fetch_artifact(&conn, &lie, &dest)).await.unwrap_err();
            assert_eq!(format!("{err:#}"), said);
            assert!(!dest.exists(), "{said}: the download is kept nowhere");
        }

        let missing = "00".repeat(32);
        let request = StreamRequest::FetchArtifact { digest: missing.clone(), offset: 0 };
        let err = within(transfer::fetch(&conn, &request, &missing, &dest)).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "controller refused: no such artifact");

        std::fs::write(&dest, &body).unwrap();
        let packed = Packed { digest: digest.clone(), size: body.len() as u64 };
        within(transfer::upload(&conn, &packed, &dest)).await.unwrap();
        let lie = Packed { digest: wrong, size: body.len() as u64 };
        let err = within(transfer::upload(&conn, &lie, &dest)).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "controller refused the upload: digest mismatch");

        conn.close(0u32.into(), b"done");
        script.abort();
    }

    // Several controllers, one leader (issue 18, reach).
    /// A standby closes the fleet connection with [`NOT_LEADER_CODE`]
    /// naming the leader: the agent goes there next (not to the next
    /// address of its list), says Hello with its running jobs and is
    /// welcomed. The first address given is a closed port.
    #[tokio::test]
    async fn a_standby_refusal_sends_the_agent_to_the_leader_it_names() {
        let ca = ca("controller ca");
        let (standby, standby_addr) = controller(&ca);
        let (leader, leader_addr) = controller(&ca);
        let (third, third_addr) = controller(&ca);
        let dead = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().to_string()
        };
        let data = tempfile::tempdir().unwrap();
        let key = EnrollmentKey::generate("h").unwrap();
        let cert = testing::sign(&ca, &key.csr_pem);
        let identity =
            key.into_identity("agent-1".into(), cert, ca.cert.pem(), BTreeMap::new(), &fingerprint(ca.cert.der())).unwrap();
        let named = leader_addr.clone();
        let refuse = tokio::spawn(async move {
            let conn = standby.accept().await.unwrap().await.unwrap();
            assert!(conn.peer_identity().is_some(), "the agent presented its certificate");
            let reason = sluice_protocol::not_leader_reason(Some(&named));
            conn.close(NOT_LEADER_CODE.into(), reason.as_bytes());
            // Kept open so that a second try would be seen here.
            tokio::time::timeout(Duration::from_secs(3), standby.accept()).await.is_ok()
        });
        let welcome = tokio::spawn(async move {
            let conn = leader.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let Some(FromAgent::Hello(hello)) = read_frame(&mut recv).await.unwrap() else { panic!("hello first") };
            assert!(hello.running.is_empty());
            write_frame(&mut send, &ToAgent::Welcome { agent_id: "agent-1".into(), heartbeat_ms: 60_000 }).await.unwrap();
            let reason = "protocol version mismatch: the test is over";
            write_frame(&mut send, &ToAgent::Refused { reason: reason.into() }).await.unwrap();
            conn.closed().await;
        });
        let runtime = sluice_runtime::Runtime::new(sluice_runtime::RuntimeConfig::default()).unwrap();
        let link = Link::default();
        let (tx, rx) = mpsc::channel(16);
        let jobs = Jobs::new(runtime, data.path(), 1, link.clone(), tx).unwrap();
        let presence = Presence { labels: BTreeMap::new(), slots: 1 };
        let renewal = Arc::new(Renewal::new(data.path().to_path_buf(), identity));
        let controllers = Controllers::new(vec![dead, standby_addr, third_addr]).unwrap();
        let fleet = Fleet::new(controllers, renewal, presence, jobs, link, rx).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), fleet.run()).await.expect("timed out").unwrap_err();
        assert!(format!("{err:#}").contains("the test is over"), "{err:#}");
        within(welcome).await.unwrap();
        assert!(!within(refuse).await.unwrap(), "the standby was not tried again");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), third.accept()).await.is_err(),
            "the third address was never needed"
        );
    }

    /// Enrollment through a standby follows the leader it names too.
    #[tokio::test]
    async fn enrollment_through_a_standby_goes_to_the_leader() {
        let ca = ca("controller ca");
        let (standby, standby_addr) = controller(&ca);
        let (leader, leader_addr) = controller(&ca);
        let named = leader_addr.clone();
        let refuse = tokio::spawn(async move {
            let conn = standby.accept().await.unwrap().await.unwrap();
            conn.close(NOT_LEADER_CODE.into(), sluice_protocol::not_leader_reason(Some(&named)).as_bytes());
            conn.closed().await;
        });
        let answer = tokio::spawn(async move {
            let conn = leader.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let _: EnrollRequest = read_frame(&mut recv).await.unwrap().unwrap();
            write_frame(&mut send, &EnrollResponse::Refused { reason: "reached the leader".into() }).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let mut controllers = Controllers::new(vec![standby_addr]).unwrap();
        let err = within(enroll(&mut controllers, &token(&ca), "h")).await.unwrap_err();
        assert_eq!(format!("{err:#}"), "enrollment refused: reached the leader");
        within(refuse).await.unwrap();
        within(answer).await.unwrap();
    }

    #[test]
    fn controllers_are_tried_in_turn_and_a_named_leader_first() {
        assert!(Controllers::new(vec![]).is_err());
        assert!(Controllers::new(vec!["a:1".into(), " ".into()]).is_err());
        let mut c = Controllers::new(vec!["a:1".into(), " b:2".into(), "c:3".into()]).unwrap();
        assert_eq!([c.take(), c.take(), c.take(), c.take()], ["a:1", "b:2", "c:3", "a:1"]);
        c.follow(Some("z:9".into()), "a:1");
        assert_eq!([c.take(), c.take()], ["z:9", "b:2"], "the leader once, then the list goes on");
        c.follow(Some("b:2".into()), "b:2");
        assert_eq!(c.take(), "c:3", "a controller naming itself is not tried again at once");
        c.follow(None, "c:3");
        assert_eq!(c.take(), "a:1");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let mut step = BACKOFF_MIN;
        for _ in 0..12 {
            let wait = backoff.next();
            assert!(wait >= step / 2 && wait <= step, "{wait:?} within half to all of {step:?}");
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(backoff.step, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.next() <= BACKOFF_MIN);
    }

    #[test]
    fn refusals_are_fatal_only_when_retrying_cannot_help() {
        assert!(is_fatal_refusal("protocol version 2 is not supported"));
        assert!(is_fatal_refusal("certificate revoked"));
        assert!(is_fatal_refusal("Unknown agent a-1"));
        assert!(!is_fatal_refusal("controller is starting up"));
        assert!(!is_fatal_refusal("too many connections"));
    }
}
