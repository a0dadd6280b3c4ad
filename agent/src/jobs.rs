//! Running jobs: one action attempt each, from `JobStarted` to `JobFinished`.
//! A job waits for a slot, fetches its plugin and input artifacts, runs the
//! plugin in the runtime on a blocking thread, packs and uploads its output
//! artifacts, reports the result and removes its directory.
//!
//! Must not know how the control stream is read or written, nor about
//! reconnecting: it puts messages into the outbox and asks the [`Link`] for
//! the current connection when it needs a stream. A failed job is data (a
//! `JobResult::Failed`), never an `Err` that escapes.

use crate::transfer::{self, Link};
use anyhow::{Context as _, Result, anyhow};
use sluice_protocol::{
    FromAgent, JobResult, JobSpec, LOG_CHUNK, PluginRef, PollSpec, PolledRevision, ProducedArtifact, StreamRequest,
};
use sluice_runtime::{Invocation, LoadedPlugin, LogSink, Outcome, Runtime};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};

mod dirs;

/// docs/design.md section 3: an action's timeout is 60 minutes unless the pipeline says
/// otherwise; used only if a job arrives without one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long a job's `JobStarted` may wait to go out with its result (issue
/// 19, perf). The controller takes a start at any time before the result,
/// as when the network delays it; a job still running after this long
/// reports its start on its own.
const START_HOLD: Duration = Duration::from_millis(2);

/// How a job ended, for the last line its log says of it.
enum Ended {
    Succeeded,
    /// The failure's message, and whether it may be retried.
    Failed(String, bool),
    /// Cancelled, or its lease gone: no result was sent.
    Cancelled,
}

/// Where a job's files live, below the data dir.
pub const JOBS_DIR: &str = "jobs";
/// Plugins fetched from the controller, by digest, below the data dir.
pub const PLUGINS_DIR: &str = "plugins";

/// Bytes of log a job keeps for re-sending until the controller
/// acknowledges them; beyond it the oldest lines go (a connection down for
/// that long loses the middle of a chatty log, never the job).
const UNACKED_LOG_BYTES: usize = 4 << 20;

/// Log lines of one job sent but not yet acknowledged, oldest first.
#[derive(Default)]
struct PendingLog {
    lines: VecDeque<(u64, String)>,
    bytes: usize,
}

impl PendingLog {
    /// Keeps a line sent; the oldest go beyond `bound` bytes.
    fn push(&mut self, seq: u64, text: &str, bound: usize) {
        self.lines.push_back((seq, text.to_string()));
        self.bytes += text.len();
        while self.bytes > bound {
            let (_, text) = self.lines.pop_front().expect("over the bound means not empty");
            self.bytes -= text.len();
        }
    }

    /// Forgets the lines up to `seq`, which the controller has.
    fn acknowledge(&mut self, seq: u64) {
        while self.lines.front().is_some_and(|(s, _)| *s <= seq) {
            let (_, text) = self.lines.pop_front().expect("checked");
            self.bytes -= text.len();
        }
    }
}

type PendingLogs = Arc<Mutex<HashMap<String, PendingLog>>>;

/// Source polls that may call plugins at once, beside the slots. The
/// runtime's pool is sized for slots plus these: a poll that found every
/// pooled instance taken by the slots failed the job it raced with ("maximum
/// concurrent limit ... for component instances reached"), which lost
/// executions in `sluice-bench recovery`. Polls beyond this wait for each
/// other, never for the slots.
pub const POLL_CALLS: u32 = 2;

/// This agent's policy does not let it run a plugin (not signed by one of
/// its publishers); no retry changes that.
#[derive(Debug)]
pub struct PluginRefused(String);

impl std::fmt::Display for PluginRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginRefused {}

/// A job the agent has accepted and not finished.
struct Running {
    /// Tells apart two runs of the same job id (after a cancel and a re-send).
    token: u64,
    /// The newest lease epoch the controller gave this job.
    lease_epoch: u64,
    cancel: watch::Sender<bool>,
}

/// Everything jobs share: the runtime, the slots, the way to the controller.
pub struct Jobs {
    runtime: Arc<Runtime>,
    plugins_dir: PathBuf,
    /// Empty job directories kept for the next jobs.
    dirs: dirs::JobDirs,
    slots: Arc<Semaphore>,
    /// Permits for `POLL_CALLS` polls at once.
    polls: Arc<Semaphore>,
    link: Link,
    outbox: mpsc::Sender<FromAgent>,
    running: Mutex<HashMap<String, Running>>,
    /// Results sent but not yet acknowledged by the controller: a result
    /// written into a connection that then died would otherwise be lost.
    unacked: Mutex<HashMap<String, FromAgent>>,
    /// Log lines sent but not yet acknowledged, by job.
    logs: PendingLogs,
    next_token: AtomicU64,
    /// The agent's policy; `None` permits what the controller grants.
    policy: Mutex<Option<crate::policy::Policy>>,
}

impl Jobs {
    /// Prepares the job and plugin directories under `data_dir`; leftovers of
    /// jobs from an earlier run of the agent are removed (their results can
    /// no longer be reported).
    pub fn new(
        runtime: Arc<Runtime>,
        data_dir: &Path,
        slots: u32,
        link: Link,
        outbox: mpsc::Sender<FromAgent>,
    ) -> Result<Arc<Self>> {
        let jobs_dir = data_dir.join(JOBS_DIR);
        let plugins_dir = data_dir.join(PLUGINS_DIR);
        if jobs_dir.exists() {
            std::fs::remove_dir_all(&jobs_dir).with_context(|| format!("cleaning {}", jobs_dir.display()))?;
        }
        for dir in [&jobs_dir, &plugins_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let dirs =
            dirs::JobDirs::new(&jobs_dir, slots as usize).with_context(|| format!("reading {}", jobs_dir.display()))?;
        Ok(Arc::new(Self {
            runtime,
            dirs,
            plugins_dir,
            slots: Arc::new(Semaphore::new(slots as usize)),
            polls: Arc::new(Semaphore::new(POLL_CALLS as usize)),
            link,
            outbox,
            running: Mutex::new(HashMap::new()),
            unacked: Mutex::new(HashMap::new()),
            logs: PendingLogs::default(),
            next_token: AtomicU64::new(0),
            policy: Mutex::new(None),
        }))
    }

    /// Ids of the jobs accepted and neither finished nor cancelled, for
    /// `Hello.running` and heartbeats.
    /// Jobs whose results are not yet acknowledged count as running: the
    /// controller must not hand them to anyone else.
    pub fn running_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.running.lock().expect("jobs lock").keys().cloned().collect();
        ids.extend(self.unacked.lock().expect("jobs lock").keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Digests of the plugins saved in the plugins dir, for Hello.
    pub fn cached_plugins(&self) -> Vec<String> {
        let mut digests: Vec<String> = std::fs::read_dir(&self.plugins_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wasm").map(str::to_string))
            .filter(|d| transfer::check_digest(d).is_ok())
            .collect();
        digests.sort();
        digests
    }

    /// The controller has the job's result (and so all of its log).
    pub fn acknowledged(&self, job_id: &str) {
        self.unacked.lock().expect("jobs lock").remove(job_id);
        self.logs.lock().expect("jobs lock").remove(job_id);
    }

    /// The controller has the job's log up to `seq`.
    pub fn log_acknowledged(&self, job_id: &str, seq: u64) {
        if let Some(pending) = self.logs.lock().expect("jobs lock").get_mut(job_id) {
            pending.acknowledge(seq);
        }
    }

    /// What the controller may have missed, to send first on a new
    /// connection: every unacknowledged log line, in order, then every
    /// unacknowledged result (a result after its log, so that no line
    /// arrives after the job has ended).
    pub fn unacknowledged(&self) -> (Vec<FromAgent>, Vec<FromAgent>) {
        let mut logs = Vec::new();
        for (job_id, pending) in self.logs.lock().expect("jobs lock").iter() {
            logs.extend(pending.lines.iter().map(|(seq, text)| FromAgent::Log {
                job_id: job_id.clone(),
                seq: *seq,
                text: text.clone(),
            }));
        }
        let results = self.unacked.lock().expect("jobs lock").values().cloned().collect();
        (logs, results)
    }

    /// Takes a job from the controller. A job already running (the
    /// controller re-sends after a reconnect) only takes the newer lease
    /// epoch; otherwise it starts, waiting for a free slot first.
    pub fn accept(self: &Arc<Self>, spec: JobSpec) {
        // Already done here: the controller has not seen the result yet
        // (it was restarted, or the connection dropped); send it again
        // rather than running the job twice.
        let done = self.unacked.lock().expect("jobs lock").get(&spec.job_id).cloned();
        if let Some(frame) = done {
            info!(job_id = %spec.job_id, "job already finished here; sending its result again");
            let jobs = self.clone();
            tokio::spawn(async move { jobs.send(frame).await });
            return;
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        {
            let mut running = self.running.lock().expect("jobs lock");
            if let Some(existing) = running.get_mut(&spec.job_id) {
                if spec.lease_epoch > existing.lease_epoch {
                    existing.lease_epoch = spec.lease_epoch;
                }
                info!(job_id = %spec.job_id, lease_epoch = spec.lease_epoch, "job already running");
                return;
            }
            running.insert(spec.job_id.clone(), Running { token, lease_epoch: spec.lease_epoch, cancel: cancel_tx });
        }
        let span =
            info_span!("job", job_id = %spec.job_id, pipeline = %spec.pipeline, stage = %spec.stage, action = %spec.action);
        tokio::spawn(self.clone().run(spec, token, cancel_rx).instrument(span));
    }

    /// Best effort: the job stops at its next step (a running plugin runs on
    /// until it returns or its deadline passes) and its result is dropped.
    /// It leaves `running` now; its slot is freed when it stops.
    pub fn cancel(&self, job_id: &str) {
        self.logs.lock().expect("jobs lock").remove(job_id);
        match self.running.lock().expect("jobs lock").remove(job_id) {
            Some(job) => {
                info!(%job_id, "job cancelled");
                job.cancel.send_replace(true);
            }
            None => debug!(%job_id, "cancel for a job that is not running"),
        }
    }

    /// Cancels every job, when the agent stops.
    pub fn cancel_all(&self) {
        for (job_id, job) in self.running.lock().expect("jobs lock").drain() {
            info!(%job_id, "job cancelled: the agent is stopping");
            job.cancel.send_replace(true);
        }
    }

    /// Removes the job from `running` unless a cancel did (or a newer run of
    /// the same id replaced it); returns its lease epoch if it was there.
    fn forget(&self, job_id: &str, token: u64) -> Option<u64> {
        let mut running = self.running.lock().expect("jobs lock");
        match running.get(job_id) {
            Some(job) if job.token == token => running.remove(job_id).map(|j| j.lease_epoch),
            _ => None,
        }
    }

    fn lease_epoch(&self, job_id: &str) -> Option<u64> {
        self.running.lock().expect("jobs lock").get(job_id).map(|j| j.lease_epoch)
    }

    /// Sets this agent's policy (its consent to capabilities).
    pub fn set_policy(&self, policy: crate::policy::Policy) {
        *self.policy.lock().expect("policy lock") = Some(policy);
    }

    /// Narrows a job's grants (and the secrets sent with them) to what the
    /// policy permits; returns what was denied, for the action's log.
    fn restrict(&self, grants: &mut sluice_protocol::Grants, secrets: &mut BTreeMap<String, String>) -> Vec<String> {
        let Some(policy) = self.policy.lock().expect("policy lock").clone() else { return Vec::new() };
        let (kept, denied) = policy.apply(grants);
        secrets.retain(|name, _| kept.secrets.contains(name));
        *grants = kept;
        denied
    }

    /// Asks a source plugin for its newest revision, outside the slots (a
    /// poll is short and must not wait behind long actions), and reports
    /// the answer.
    pub fn poll(self: &Arc<Self>, spec: PollSpec) {
        let jobs = self.clone();
        let span = info_span!("poll", pipeline = %spec.pipeline, action = %spec.action);
        tokio::spawn(
            async move {
                let token = jobs.next_token.fetch_add(1, Ordering::Relaxed);
                let _call = jobs.polls.clone().acquire_owned().await.expect("the poll semaphore is never closed");
                let result = match jobs.plugin(&spec.plugin, token).await {
                    Err(e) => Err(format!("loading plugin {}@{}: {e:#}", spec.plugin.provider, spec.plugin.version)),
                    Ok(plugin) => {
                        let runtime = jobs.runtime.clone();
                        let timeout = Duration::from_millis(spec.timeout_ms);
                        let (configuration, mut grants) = (spec.configuration.clone(), spec.grants.clone());
                        let mut secrets: BTreeMap<String, String> = spec.secrets.iter().cloned().collect();
                        for denied in jobs.restrict(&mut grants, &mut secrets) {
                            info!("{denied}");
                        }
                        let log: Arc<dyn LogSink> = Arc::new(|line: &str| debug!("{line}"));
                        tokio::task::spawn_blocking(move || {
                            let started = std::time::Instant::now();
                            let polled = runtime.latest_revision(&plugin, configuration, grants, secrets, timeout, log);
                            crate::observe::METRICS.poll_call.observe_duration(started.elapsed());
                            polled
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("the poll crashed: {e}")))
                        .map(|r| PolledRevision {
                            id: r.id,
                            summary: r.summary,
                            created: r.created,
                        })
                    }
                };
                match &result {
                    Ok(r) => debug!(revision = %r.id, "polled"),
                    Err(e) => info!("poll failed: {e}"),
                }
                // Keep the frame well under the limit whatever the plugin said.
                let result = result.map_err(|e| chunks(&e, LOG_CHUNK).next().unwrap_or_default().to_string());
                jobs.send(FromAgent::PollResult { poll_id: spec.poll_id, result }).await;
            }
            .instrument(span),
        );
    }

    async fn send(&self, message: FromAgent) {
        // The outbox closes only when the agent is shutting down.
        let _ = self.outbox.send(message).await;
    }

    async fn run(self: Arc<Self>, spec: JobSpec, token: u64, mut cancel: watch::Receiver<bool>) {
        let job_id = spec.job_id.clone();
        let permit = tokio::select! {
            permit = self.slots.clone().acquire_owned() => permit.expect("the slot semaphore is never closed"),
            () = cancelled(&mut cancel) => {
                self.forget(&job_id, token);
                return;
            }
        };
        if *cancel.borrow() {
            return;
        }
        let Some(lease_epoch) = self.lease_epoch(&job_id) else { return };
        let log_start = || info!(plugin = %format!("{}@{}", spec.plugin.provider, spec.plugin.version), "job started");

        let dir = self.dirs.take(&token.to_string());
        // The start is held for at most START_HOLD: a job that ends sooner
        // sends it together with its result, one packet instead of two. Its
        // log line goes with the start, and for such a job after the result
        // (issue 19): a log line is not on the way from one action to the next.
        let start = FromAgent::JobStarted { job_id: job_id.clone(), lease_epoch };
        let mut teardown = None;
        let (result, start_logged) = {
            let attempt = self.attempt(&spec, &dir, token, &mut cancel, &mut teardown);
            tokio::pin!(attempt);
            tokio::select! {
                biased;
                result = &mut attempt => {
                    self.send(start).await;
                    (result, false)
                }
                () = tokio::time::sleep(START_HOLD) => {
                    self.send(start).await;
                    log_start();
                    (attempt.await, true)
                }
            }
        };

        let ended = match (result, self.lease_epoch(&job_id).filter(|_| !*cancel.borrow())) {
            (Some(result), Some(lease_epoch)) => {
                let ended = match &result {
                    JobResult::Succeeded { .. } => Ended::Succeeded,
                    JobResult::Failed { message, retryable } => Ended::Failed(message.clone(), *retryable),
                };
                let finished = sendable(FromAgent::JobFinished { job_id: job_id.clone(), lease_epoch, result });
                self.unacked.lock().expect("jobs lock").insert(job_id.clone(), finished.clone());
                self.send(finished).await;
                ended
            }
            _ => Ended::Cancelled,
        };
        // Only now: a heartbeat between the two would tell the controller the
        // job vanished before it learns the result.
        self.forget(&job_id, token);
        // The slot is free once the call's sandbox is gone, which is after
        // the result went out (issue 19).
        if let Some(call) = teardown {
            let _ = call.await;
        }
        drop(permit);
        // After the result (issue 19): checking and keeping the directory
        // is not on the way from one action to the next, and neither is the
        // log line (the wait for the directory lets the result go out first).
        self.dirs.give_back(dir).await;
        if !start_logged {
            log_start();
        }
        match ended {
            Ended::Succeeded => info!("job succeeded"),
            Ended::Failed(message, retryable) => info!(retryable, "job failed: {message}"),
            Ended::Cancelled => info!("job cancelled; its result is dropped"),
        }
    }

    /// The job's steps; `None` when it was cancelled on the way.
    async fn attempt(
        &self,
        spec: &JobSpec,
        dir: &Path,
        token: u64,
        cancel: &mut watch::Receiver<bool>,
        teardown: &mut Option<tokio::task::JoinHandle<()>>,
    ) -> Option<JobResult> {
        let prepared = tokio::select! {
            prepared = self.prepare(spec, dir, token) => prepared,
            () = cancelled(cancel) => return None,
        };
        let (plugin, mut invocation) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Another attempt would be refused the same way.
                let retryable = !e.chain().any(|c| c.is::<PluginRefused>());
                return Some(JobResult::Failed { message: format!("{e:#}"), retryable });
            }
        };
        let log = Arc::new(JobLog {
            job_id: spec.job_id.clone(),
            seq: AtomicU64::new(0),
            outbox: self.outbox.clone(),
            pending: self.logs.clone(),
        });
        let denied = self.restrict(&mut invocation.grants, &mut invocation.secrets);
        let runtime = self.runtime.clone();
        // A cancel reaches the plugin through the runtime: its wasm is
        // interrupted and its host programs killed; it still returns before
        // the job's directories go.
        let cancel_plugin = invocation.cancel.clone();
        let mut watch_cancel = cancel.clone();
        let forward = tokio::spawn(async move {
            cancelled(&mut watch_cancel).await;
            cancel_plugin.cancel();
        });
        // The outcome comes back as soon as there is one; the call's
        // sandbox is taken down after it (issue 19), in `teardown`, which
        // the job's slot waits for.
        let (deliver, delivered) = tokio::sync::oneshot::channel();
        let call = tokio::task::spawn_blocking(move || {
            // The log sink blocks on the outbox: only off the async threads.
            for line in denied {
                log.line(&format!("[warn] {line}"));
            }
            let started = std::time::Instant::now();
            runtime.run_action_then(&plugin, &invocation, log, |outcome| {
                crate::observe::METRICS.action_call.observe_duration(started.elapsed());
                let _ = deliver.send(outcome);
            });
        });
        let outcome = match delivered.await {
            Ok(outcome) => {
                *teardown = Some(call);
                Ok(outcome)
            }
            // No outcome: the call panicked, which its handle says.
            Err(_) => Err(match call.await {
                Err(e) => e.to_string(),
                Ok(()) => "the call ended without an outcome".to_string(),
            }),
        };
        forward.abort();
        if *cancel.borrow() {
            return None;
        }
        let result = match outcome {
            Err(e) => {
                JobResult::Failed { message: format!("running the plugin: the plugin host failed: {e}"), retryable: false }
            }
            Ok(Outcome::Failed { message, retryable }) => JobResult::Failed { message, retryable },
            Ok(Outcome::InProgress { .. }) => JobResult::Failed {
                message: "running the plugin: the runtime returned while the action was still in progress".into(),
                retryable: true,
            },
            Ok(Outcome::Succeeded { summary, output_variables, external_url }) => {
                let outputs = tokio::select! {
                    outputs = self.upload_outputs(spec, dir) => outputs,
                    () = cancelled(cancel) => return None,
                };
                match outputs {
                    Ok(outputs) => JobResult::Succeeded { summary, output_variables, external_url, outputs },
                    Err(e) => JobResult::Failed { message: format!("{e:#}"), retryable: true },
                }
            }
        };
        Some(result)
    }

    /// Fetches the plugin and the inputs, creates the output and workspace
    /// directories, and builds the invocation.
    async fn prepare(&self, spec: &JobSpec, dir: &Path, token: u64) -> Result<(Arc<LoadedPlugin>, Invocation)> {
        let plugin = self.plugin(&spec.plugin, token).await.with_context(|| {
            format!("fetching plugin {}@{} ({})", spec.plugin.provider, spec.plugin.version, spec.plugin.digest)
        })?;
        let downloads = dir.join("downloads");
        let workspace = dir.join(dirs::WORKSPACE);
        // `downloads` only when something passes through it: a job
        // directory holding nothing but an empty workspace is reused.
        let transfers = !spec.inputs.is_empty() || !spec.outputs.is_empty();
        // Inline, not on the blocking pool: a kept directory has its
        // workspace already (one stat), and a hop to the pool and back cost
        // more than the call (issue 19).
        for d in [&workspace].into_iter().chain(transfers.then_some(&downloads)) {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut inputs = Vec::new();
        for (i, input) in spec.inputs.iter().enumerate() {
            let target = dir.join("inputs").join(&input.name);
            async {
                transfer::check_name("input artifact", &input.name)?;
                let archive = downloads.join(format!("input-{i}.tar"));
                // A download cut off with its connection goes on from where
                // it stopped, on the next connection.
                let size = self
                    .link
                    .transfer("fetching an input artifact", |connection| {
                        let archive = &archive;
                        async move { transfer::fetch_artifact(&connection, &input.digest, archive).await }
                    })
                    .await?;
                if size != input.size {
                    warn!(artifact = %input.name, size, expected = input.size, "input artifact size differs from the job's");
                }
                let (from, to) = (archive.clone(), target.clone());
                tokio::task::spawn_blocking(move || transfer::unpack(&from, &to))
                    .await
                    .map_err(|e| anyhow!("unpacking failed: {e}"))?
                    .context("unpacking")?;
                tokio::fs::remove_file(&archive).await.ok();
                anyhow::Ok(())
            }
            .await
            .with_context(|| format!("fetching input artifact {:?}", input.name))?;
            inputs.push((input.name.clone(), target));
        }
        let mut outputs = Vec::new();
        for output in &spec.outputs {
            transfer::check_name("output artifact", &output.name)?;
            let path = dir.join("outputs").join(&output.name);
            tokio::fs::create_dir_all(&path).await.with_context(|| format!("creating {}", path.display()))?;
            outputs.push((output.name.clone(), path, output.files.clone()));
        }
        let timeout = if spec.timeout_ms == 0 { DEFAULT_TIMEOUT } else { Duration::from_millis(spec.timeout_ms) };
        let invocation = Invocation {
            pipeline: spec.pipeline.clone(),
            execution_id: spec.execution_id.clone(),
            stage: spec.stage.clone(),
            action: spec.action.clone(),
            attempt: spec.attempt,
            configuration: spec.configuration.clone(),
            variables: spec.variables.clone(),
            inputs,
            outputs,
            workspace,
            grants: spec.grants.clone(),
            secrets: spec.secrets.iter().cloned().collect(),
            timeout,
            cancel: sluice_runtime::Cancel::default(),
        };
        Ok((plugin, invocation))
    }

    /// The compiled plugin: from the runtime's memory, else from its
    /// compile cache on disk, else from `plugins/<digest>.wasm`, else from
    /// the controller (verified and saved there for the next start). First
    /// of all, the policy's publishers must have signed the digest: every
    /// way below loads only bytes of that digest.
    async fn plugin(&self, plugin: &PluginRef, token: u64) -> Result<Arc<LoadedPlugin>> {
        let policy = self.policy.lock().expect("policy lock").clone();
        if let Some(policy) = policy {
            match policy.check_plugin(plugin) {
                Ok(Some(publisher)) => debug!(%publisher, digest = %plugin.digest, "plugin signature verified"),
                Ok(None) => {}
                Err(reason) => {
                    warn!(digest = %plugin.digest, claimed = plugin.publisher.as_deref().unwrap_or("-"), "plugin refused: {reason}");
                    return Err(PluginRefused(reason).into());
                }
            }
        }
        let digest = plugin.digest.clone();
        if let Some(plugin) = self.runtime.cached(&digest) {
            return Ok(plugin);
        }
        transfer::check_digest(&digest)?;
        let (runtime, key) = (self.runtime.clone(), digest.clone());
        match tokio::task::spawn_blocking(move || runtime.load_compiled(&key)).await {
            Ok(Ok(Some(plugin))) => return Ok(plugin),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!(%digest, "the compiled plugin in the cache is unusable, loading it again: {e:#}"),
            Err(e) => warn!(%digest, "loading the compiled plugin failed: {e}"),
        }
        let path = self.plugins_dir.join(format!("{digest}.wasm"));
        if path.exists() {
            match self.load(&path, &digest).await {
                Ok(plugin) => return Ok(plugin),
                // A damaged file is fetched again below.
                Err(e) => warn!(path = %path.display(), "discarding saved plugin: {e:#}"),
            }
        }
        let part = self.plugins_dir.join(format!("{digest}.{token}.part"));
        let request = StreamRequest::FetchPlugin { digest: digest.clone() };
        let fetched = self
            .link
            .transfer("fetching a plugin", |connection| {
                let (request, digest, part) = (&request, &digest, &part);
                async move { transfer::fetch(&connection, request, digest, part).await }
            })
            .await;
        if let Err(e) = fetched {
            tokio::fs::remove_file(&part).await.ok();
            return Err(e);
        }
        tokio::fs::rename(&part, &path).await.with_context(|| format!("saving {}", path.display()))?;
        self.load(&path, &digest).await
    }

    async fn load(&self, path: &Path, digest: &str) -> Result<Arc<LoadedPlugin>> {
        let bytes = tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?;
        let runtime = self.runtime.clone();
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let loaded = runtime.load(&bytes, Some(&digest));
            crate::observe::METRICS.compile.observe_duration(started.elapsed());
            loaded
        })
        .await
        .map_err(|e| anyhow!("compiling failed: {e}"))?
    }

    /// Packs every output directory deterministically and uploads it.
    async fn upload_outputs(&self, spec: &JobSpec, dir: &Path) -> Result<Vec<ProducedArtifact>> {
        let mut produced = Vec::new();
        for (i, output) in spec.outputs.iter().enumerate() {
            let artifact = async {
                let source = dir.join("outputs").join(&output.name);
                let archive = dir.join("downloads").join(format!("output-{i}.tar"));
                let to = archive.clone();
                let packed = tokio::task::spawn_blocking(move || transfer::pack_dir(&source, &to))
                    .await
                    .map_err(|e| anyhow!("packing failed: {e}"))?
                    .context("packing")?;
                self.link
                    .transfer("uploading an output artifact", |connection| {
                        let (packed, archive) = (&packed, &archive);
                        async move { transfer::upload(&connection, packed, archive).await }
                    })
                    .await?;
                tokio::fs::remove_file(&archive).await.ok();
                anyhow::Ok(ProducedArtifact { name: output.name.clone(), digest: packed.digest, size: packed.size })
            }
            .await
            .with_context(|| format!("uploading output artifact {:?}", output.name))?;
            info!(artifact = %artifact.name, digest = %artifact.digest, size = artifact.size, "output artifact uploaded");
            produced.push(artifact);
        }
        Ok(produced)
    }
}

/// Resolves when the job is cancelled; never otherwise.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A result too large for one frame (huge output variables or summary)
/// would never reach the controller; it becomes a failure that does.
fn sendable(message: FromAgent) -> FromAgent {
    match sluice_protocol::encode(&message) {
        Ok(_) => message,
        Err(e) => match message {
            FromAgent::JobFinished { job_id, lease_epoch, .. } => FromAgent::JobFinished {
                job_id,
                lease_epoch,
                result: JobResult::Failed { message: format!("reporting the result: {e}"), retryable: false },
            },
            other => other,
        },
    }
}

/// Sends a job's log lines as `Log` frames: each line ends with `\n` and is
/// cut into pieces of at most `LOG_CHUNK` bytes, at character boundaries;
/// `seq` counts the frames of the job from 0. Each piece is kept until the
/// controller acknowledges it.
struct JobLog {
    job_id: String,
    seq: AtomicU64,
    outbox: mpsc::Sender<FromAgent>,
    pending: PendingLogs,
}

impl LogSink for JobLog {
    fn line(&self, text: &str) {
        debug!(job_id = %self.job_id, "{text}");
        let mut text = text.to_string();
        text.push('\n');
        for chunk in chunks(&text, LOG_CHUNK) {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let mut logs = self.pending.lock().expect("jobs lock");
            logs.entry(self.job_id.clone()).or_default().push(seq, chunk, UNACKED_LOG_BYTES);
            drop(logs);
            let message = FromAgent::Log { job_id: self.job_id.clone(), seq, text: chunk.to_string() };
            // Called on the runtime's blocking thread: waiting here slows a
            // chatty plugin down to what the connection carries instead of
            // dropping its logs.
            if self.outbox.blocking_send(message).is_err() {
                return;
            }
        }
    }
}

/// `text` in pieces of at most `max` bytes, never splitting a character.
fn chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_respect_size_and_characters() {
        let text = "é".repeat(10); // 20 bytes
        let pieces: Vec<&str> = chunks(&text, 5).collect();
        assert!(pieces.iter().all(|p| p.len() <= 5));
        assert_eq!(pieces.concat(), text);
        assert_eq!(chunks("", 5).count(), 0);
        assert_eq!(chunks("abc", 5).collect::<Vec<_>>(), ["abc"]);
    }

    #[test]
    fn unacknowledged_log_lines_are_kept_in_order_bounded_until_acknowledged() {
        let mut pending = PendingLog::default();
        for seq in 0..10 {
            pending.push(seq, "0123456789", 50);
        }
        // Bounded: only the newest five lines fit.
        assert_eq!(pending.lines.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
        assert_eq!(pending.bytes, 50);
        pending.acknowledge(7);
        assert_eq!(pending.lines.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [8, 9]);
        assert_eq!(pending.bytes, 20);
        pending.acknowledge(3);
        assert_eq!(pending.lines.len(), 2, "an old acknowledgement changes nothing");
        pending.acknowledge(9);
        assert!(pending.lines.is_empty());
        assert_eq!(pending.bytes, 0);
    }

    #[test]
    fn an_oversized_result_becomes_a_failure_that_fits() {
        let huge = FromAgent::JobFinished {
            job_id: "j".into(),
            lease_epoch: 3,
            result: JobResult::Succeeded {
                summary: "x".repeat(sluice_protocol::MAX_FRAME + 1),
                output_variables: BTreeMap::new(),
                external_url: None,
                outputs: vec![],
            },
        };
        match sendable(huge) {
            FromAgent::JobFinished { lease_epoch: 3, result: JobResult::Failed { message, retryable: false }, .. } => {
                assert!(message.contains("reporting the result"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
