//! The host side of one plugin call: the sandbox's directories, the grants,
//! and the `log`, `process` and `secrets` imports.

use crate::bindings::sluice::plugin::{deadline, files, log, process as wit_process, secrets, types};
use crate::budget::{LogBudget, Verdict};
use crate::{Invocation, LogSink};
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) const WORKSPACE: &str = "/workspace";

pub(crate) fn input_path(name: &str) -> String {
    format!("/inputs/{name}")
}

pub(crate) fn output_path(name: &str) -> String {
    format!("/outputs/{name}")
}

/// One directory the guest sees, and where it really is.
#[derive(Debug, Clone)]
pub(crate) struct Mount {
    pub guest: PathBuf,
    pub host: PathBuf,
    pub writable: bool,
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    pub table: ResourceTable,
    http: WasiHttpCtx,
    http_gate: crate::http::HttpGate,
    pub limits: StoreLimits,
    pub memory_limit: usize,
    pub deadline: Instant,
    pub grants: crate::Grants,
    pub mounts: Vec<Mount>,
    pub secrets: BTreeMap<String, String>,
    log_budget: LogBudget,
    /// The action's log, masking every granted secret.
    pub log: Arc<dyn LogSink>,
    /// The action's log as given, for lines [`HostState::emit`] has masked.
    unmasked_log: Arc<dyn LogSink>,
    masker: Arc<crate::mask::Masker>,
    pub cancel: crate::Cancel,
    /// How granted programs run.
    pub confinement: Arc<crate::sandbox::Confinement>,
    /// The private temporary directory of granted programs (`TMPDIR`,
    /// `HOME`), made at the first program and removed with the call.
    tmp: Option<crate::TempDir>,
}

/// The guest's stdout and stderr, captured and handed to the (masking) log
/// after the call.
pub(crate) struct Stdio {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    log: Arc<dyn LogSink>,
}

impl Stdio {
    pub fn flush(&self) {
        for (pipe, prefix) in [(&self.stdout, ""), (&self.stderr, "stderr: ")] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.log.line(&format!("{prefix}{line}"));
            }
        }
    }
}

impl HostState {
    /// The state of one call. `log` is wrapped once here so that every line
    /// the call logs, by any path (log import, programs, stdio), is masked.
    pub fn new(
        inv: &Invocation,
        log: Arc<dyn LogSink>,
        deadline: Instant,
        memory_limit: usize,
        tls: Arc<rustls::ClientConfig>,
        confinement: Arc<crate::sandbox::Confinement>,
        protected: &[PathBuf],
    ) -> Result<(Self, Stdio)> {
        let masker = Arc::new(crate::mask::Masker::new(&inv.secrets));
        let unmasked_log = log.clone();
        let log = crate::mask::MaskingSink::wrap(log, masker.clone());
        let stdio_log = log.clone();
        let mut mounts = Vec::new();
        for (name, dir) in &inv.inputs {
            mounts.push(Mount { guest: input_path(name).into(), host: dir.clone(), writable: false });
        }
        for (name, dir, _) in &inv.outputs {
            mounts.push(Mount { guest: output_path(name).into(), host: dir.clone(), writable: true });
        }
        mounts.push(Mount { guest: WORKSPACE.into(), host: inv.workspace.clone(), writable: true });
        for dir in &inv.grants.fs {
            let path = PathBuf::from(dir);
            if !path.is_absolute() {
                anyhow::bail!("fs grant {dir:?} is not an absolute path");
            }
            // Checked before anything is created, and again once it exists
            // (its links resolved): the grant reaches the plugin's WASI
            // view and any program it runs.
            crate::sandbox::grantable_dir(&path, protected).map_err(|e| anyhow::anyhow!("fs grant refused: {e}"))?;
            std::fs::create_dir_all(&path).with_context(|| format!("creating granted directory {dir}"))?;
            let host =
                crate::sandbox::grantable_dir(&path, protected).map_err(|e| anyhow::anyhow!("fs grant refused: {e}"))?;
            mounts.push(Mount { guest: path, host, writable: true });
        }

        let stdout = MemoryOutputPipe::new(crate::STDIO_CAPTURE);
        let stderr = MemoryOutputPipe::new(crate::STDIO_CAPTURE);
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone()).allow_blocking_current_thread(true);
        for m in &mounts {
            let perms = if m.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            crate::wt(
                builder.preopened_dir(&m.host, m.guest.to_string_lossy(), perms).map(|_| ()),
                &format!("mounting {} at {}", m.host.display(), m.guest.display()),
            )?;
        }
        // The same limits for every call: an action on an agent, `action
        // run`, and the controller's `describe()` of a pushed plugin.
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit)
            .table_elements(crate::MAX_TABLE_ELEMENTS)
            .instances(crate::MAX_INSTANCES)
            .tables(crate::MAX_TABLES)
            .memories(crate::MAX_MEMORIES)
            .trap_on_grow_failure(true)
            .build();
        let state = Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            http_gate: crate::http::HttpGate::new(&inv.grants.http, deadline, tls),
            limits,
            memory_limit,
            deadline,
            grants: inv.grants.clone(),
            mounts,
            secrets: inv.secrets.clone(),
            log_budget: LogBudget::new(Instant::now()),
            log,
            unmasked_log,
            masker,
            cancel: inv.cancel.clone(),
            confinement,
            tmp: None,
        };
        Ok((state, Stdio { stdout, stderr, log: stdio_log }))
    }

    /// Logs one line, masked, within the action's log budget (a total and
    /// a rate, see [`crate::budget`]), so that a flooding plugin cannot
    /// swamp the agent, the link or the store. The line is masked before it
    /// is cut: a secret across the cut would otherwise show its first part.
    pub fn emit(&mut self, line: &str) {
        let masked = self.masker.mask(line);
        let line = crate::budget::clip(&masked);
        let (keep, notices) = match self.log_budget.admit(line.len(), Instant::now()) {
            Verdict::Log(notices) => (true, notices),
            Verdict::Drop(notices) => (false, notices),
        };
        for notice in notices {
            self.log.line(&notice);
        }
        if keep {
            self.unmasked_log.line(&line);
        }
    }

    /// Logs HTTP refusals decided since the last wait.
    pub fn log_http_refusals(&mut self) {
        for line in self.http_gate.take_refusals() {
            self.emit(&line);
        }
    }

    /// Ends the call's log: says how many lines the rate dropped since the
    /// last line that passed.
    pub fn finish_log(&mut self) {
        self.log_http_refusals();
        if let Some(notice) = self.log_budget.dropped_notice(Instant::now()) {
            self.log.line(&notice);
        }
    }

    /// The innermost mount holding a sandbox path.
    fn mount(&self, guest: &Path) -> Result<&Mount, String> {
        self.mounts
            .iter()
            .filter(|m| guest.starts_with(&m.guest))
            .max_by_key(|m| m.guest.as_os_str().len())
            .ok_or_else(|| format!("path {:?} is outside the action's directories", guest.display().to_string()))
    }

    /// The host path behind a sandbox path. `..` is refused outright rather
    /// than normalised, so nothing can climb out of a mount.
    pub fn host_path(&self, guest: &str, need_write: bool) -> Result<PathBuf, String> {
        let guest_path = Path::new(guest);
        if guest_path.components().any(|c| matches!(c, PathPart::ParentDir)) {
            return Err(format!("path {guest:?} must not contain `..`"));
        }
        let mount = self.mount(guest_path)?;
        if need_write && !mount.writable {
            return Err(format!("path {guest:?} is read-only"));
        }
        let rest = guest_path.strip_prefix(&mount.guest).expect("prefix checked");
        Ok(mount.host.join(rest))
    }
}

impl HostState {
    /// The private temporary directory of this call's programs.
    pub fn private_tmp(&mut self) -> Result<PathBuf, String> {
        if self.tmp.is_none() {
            self.tmp = Some(crate::TempDir::new("sluice-tmp").map_err(|e| format!("{e:#}"))?);
        }
        Ok(self.tmp.as_ref().expect("just made").path().to_path_buf())
    }

    /// The real (symlink-resolved) host directory of the mount holding `guest`.
    pub fn mount_root(&self, guest: &str) -> Result<PathBuf, String> {
        let mount = self.mount(Path::new(guest))?;
        mount.host.canonicalize().map_err(|e| format!("mount {}: {e}", mount.guest.display()))
    }
}

impl files::Host for HostState {
    fn copy(&mut self, from: String, to: String) -> Result<u64, String> {
        crate::files::copy(self, &from, &to)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_gate }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let tag = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        for line in message.lines() {
            self.emit(&format!("[{tag}] {line}"));
        }
    }
}

impl deadline::Host for HostState {
    fn remaining_ms(&mut self) -> u64 {
        u64::try_from(self.deadline.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(u64::MAX)
    }
}

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Result<String, String> {
        if !self.grants.secrets.iter().any(|s| s == &name) {
            return Err(format!("secret {name:?} is not granted to this action"));
        }
        self.secrets.get(&name).cloned().ok_or_else(|| format!("secret {name:?} is not set"))
    }
}

impl wit_process::Host for HostState {
    fn run(&mut self, command: wit_process::Command) -> Result<wit_process::Output, String> {
        crate::process::run(self, command)
    }

    fn host_path(&mut self, path: String) -> Result<String, String> {
        if self.grants.exec.is_empty() {
            return Err("host paths are only available to actions granted `exec`".into());
        }
        HostState::host_path(self, &path, false).map(|p| p.to_string_lossy().into_owned())
    }
}

/// Turns a trap or host error from a plugin call into the reason an
/// operator reads on the failed action.
pub(crate) fn explain_trap(error: &wasmtime::Error, store: &Store<HostState>) -> String {
    let state = store.data();
    if state.cancel.is_cancelled() {
        return "action cancelled".to_string();
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        match trap {
            Trap::Interrupt => {
                return "plugin exceeded its deadline and was stopped".to_string();
            }
            Trap::StackOverflow => return "plugin exhausted its stack (too deep recursion)".to_string(),
            Trap::MemoryOutOfBounds => {
                // Rust and C keep their stacks in linear memory: running off
                // the bottom of it is this trap.
                return "plugin trapped: out of bounds memory access (its stack may have overflowed)".to_string();
            }
            other => return format!("plugin trapped: {other}"),
        }
    }
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory") {
        return format!("plugin exceeded its memory limit of {} MiB", state.memory_limit >> 20);
    }
    // The store's limiter, or the pooling allocator at instantiation.
    if text.contains("forcing trap when growing table") || text.contains("has a minimum element size of") {
        return format!("plugin exceeded its table limit of {} elements", crate::MAX_TABLE_ELEMENTS);
    }
    for (what, limit) in [("memory", crate::MAX_MEMORIES), ("table", crate::MAX_TABLES), ("instance", crate::MAX_INSTANCES)]
    {
        let pooled = what == "memory"
            && (text.contains("defined memories count of") || text.contains("Wasm linear memories, which exceeds"));
        if pooled || text.contains(&format!("resource limit exceeded: {what} count too high")) {
            return format!(
                "plugin needs more than {limit} {what}{}, the limit of a plugin",
                if limit == 1 { "" } else { "s" }
            );
        }
    }
    if Instant::now() >= state.deadline {
        return "plugin exceeded its deadline and was stopped".to_string();
    }
    let first = text.lines().next().unwrap_or("unknown error");
    format!("plugin trapped: {first}")
}
