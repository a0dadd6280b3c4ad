//! The controller's settings (`sluice controller` flags) and their defaults.

use crate::store::Durability;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The controller's settings (`sluice controller` flags).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub fleet: SocketAddr,
    pub durability: Durability,
    /// Lifetime of the certificates the CA signs for agents.
    pub agent_cert_lifetime: Duration,
    /// How long a job's lease lasts without a heartbeat that reports it.
    pub lease_timeout: Duration,
    /// How often an action lost with its agent runs again, when it may.
    pub max_lost_retries: u32,
    /// Bytes of log stored per action attempt; the rest is dropped.
    pub max_action_log: u64,
    /// How often unreferenced artifacts are collected; younger ones are
    /// kept (an upload whose result has not arrived is referenced by nothing).
    pub artifact_gc_interval: Duration,
    /// Refuse `plugin push` of a component without a trusted publisher's
    /// signature (a signature that does not verify is refused anyway).
    pub require_signed_plugins: bool,
    /// Slots an agent may claim at most; a hello asking more gets this many.
    pub max_agent_slots: u32,
    /// Bytes of artifacts an agent may have uploaded that no result of its
    /// jobs has named yet.
    pub agent_upload_quota: u64,
    /// Bytes kept free on the artifact store's file system: an upload that
    /// would leave less is refused.
    pub min_free_space: u64,
    /// How long a job worker's job may take from its poll to its result.
    pub worker_job_timeout: Duration,
    // https (issue 15): how the API and the webhook listener speak.
    /// HTTPS (the default) or, on loopback only, plain HTTP.
    pub api_scheme: crate::https::Scheme,
    /// The API's certificate: issued by the controller's CA, or the operator's.
    pub api_cert: crate::https::CertSource,
    /// Webhook deliveries on an address of their own, and how it speaks.
    pub webhook_listen: Option<(SocketAddr, crate::https::Scheme)>,
    /// Notifications (issue 15, notify): the receivers' CA, the address
    /// policy and the retries.
    pub notifications: crate::notify::NotifyConfig,
    // The audit log (issue 15, gov).
    /// How long audit records are kept (`--audit-retention-days`).
    pub audit_retention: Duration,
    // Data lifecycle (issue 17, life).
    /// Which ended executions are kept (`--keep-executions`, `--keep-days`).
    pub retention: crate::retention::Retention,
    // Metrics and readiness (issue 17, obs).
    /// `--metrics ADDR`: `/metrics`, `/readyz` and `/healthz` over plain
    /// HTTP without authentication (they carry no secret).
    pub metrics_listen: Option<SocketAddr>,
    // PostgreSQL (issue 18, pg).
    /// Where the state is: `sluice.db` in the data dir, or PostgreSQL (`--store`).
    pub store: crate::store::Location,
    // High availability (issue 18, ha).
    /// The lease this controller leads under, in a cluster on PostgreSQL:
    /// the store fences every write with it (set by `ha::run`).
    pub leadership: Option<crate::store::Fence>,
    /// `--advertise-api`: the URL the other controllers forward requests to.
    pub advertise_api: Option<String>,
    /// `--advertise-fleet`: the address agents reach this controller's fleet port by.
    pub advertise_fleet: Option<String>,
    // Artifacts in S3 (issue 18, s3).
    /// `--artifacts s3://...`: the blob stores' bucket; `None`, the data dir.
    pub artifacts_s3: Option<crate::blobs::s3::S3Config>,
}

impl ControllerConfig {
    /// Every setting at its default: a data dir, the API and fleet addresses.
    pub fn new(data_dir: PathBuf, api: SocketAddr, fleet: SocketAddr) -> Self {
        Self {
            data_dir,
            api,
            fleet,
            durability: Durability::Process,
            agent_cert_lifetime: crate::ca::AGENT_CERT_LIFETIME,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            max_lost_retries: crate::engine::DEFAULT_MAX_LOST_RETRIES,
            max_action_log: DEFAULT_MAX_ACTION_LOG,
            artifact_gc_interval: DEFAULT_ARTIFACT_GC_INTERVAL,
            require_signed_plugins: false,
            max_agent_slots: DEFAULT_MAX_AGENT_SLOTS,
            agent_upload_quota: DEFAULT_AGENT_UPLOAD_QUOTA,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            worker_job_timeout: Duration::from_millis(crate::workers::DEFAULT_JOB_TIMEOUT_MS),
            api_scheme: crate::https::Scheme::Https,
            api_cert: crate::https::CertSource::Ca { names: Vec::new() },
            webhook_listen: None,
            notifications: Default::default(),
            audit_retention: Duration::from_secs(crate::driver::DEFAULT_AUDIT_RETENTION_DAYS * 86_400),
            retention: Default::default(),
            metrics_listen: None,
            store: crate::store::Location::Sqlite,
            leadership: None,
            advertise_api: None,
            advertise_fleet: None,
            artifacts_s3: None,
        }
    }
}

/// Default lease of a job: an agent that has not reported a job in a
/// heartbeat for this long has lost it (`sluice controller --lease-timeout`).
/// Covers a network blip and the agent's reconnect backoff (at most 10 s).
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often unreferenced artifacts are collected.
pub const DEFAULT_ARTIFACT_GC_INTERVAL: Duration = Duration::from_secs(3600);

/// Bytes of log kept per action attempt unless `--max-action-log` says
/// otherwise: plenty for a build, bounded against a runaway loop.
pub const DEFAULT_MAX_ACTION_LOG: u64 = 16 << 20;

/// Slots an agent may claim unless `--max-agent-slots` says otherwise.
pub const DEFAULT_MAX_AGENT_SLOTS: u32 = 64;

/// Upload quota per agent unless `--agent-upload-quota` says otherwise:
/// four artifacts of the largest size the store takes.
pub const DEFAULT_AGENT_UPLOAD_QUOTA: u64 = 4 * crate::blobs::MAX_ARTIFACT_BYTES;

/// Free space kept on the artifact store unless `--min-free-space` says
/// otherwise: room for the store's own writes and logs.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;
