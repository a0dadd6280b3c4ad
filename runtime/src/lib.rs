//! The plugin host: runs `sluice:plugin` WebAssembly components in a sandbox.
//!
//! Used by the agent for every action and by `sluice action run` (which runs
//! one action locally exactly as an agent would) and by the controller to
//! read a plugin's `describe()`. It knows nothing of networks, stores or the
//! pipeline engine: it gets bytes of a component, directories and grants, and
//! gives back an [`Outcome`].
//!
//! The sandbox denies by default: a plugin sees only its preopened
//! directories (inputs read-only; outputs, workspace and granted `fs`
//! directories writable), no environment, no sockets; it can run only host
//! programs granted with `exec`, confined by [`sandbox`], and read only
//! granted secrets. Every store
//! has a memory limit, instance/table limits, a bounded wasm stack and an
//! epoch deadline derived from the action timeout.

mod blocking;
pub mod budget;
mod files;
mod host;
mod host_0_1;
mod http;
pub mod mask;
pub mod net;
mod process;
pub mod sandbox;
pub mod signature;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

pub use sluice_protocol::Grants;

/// The newest `sluice:plugin` (`wit/plugin.wit`).
mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
    });
}

/// `sluice:plugin@0.1.0`, frozen in `wit/released/0.1.0`. Its records are
/// the same as the newest version's, so those Rust types are shared; its
/// imports are implemented by delegating to the newest ones.
mod bindings_0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/released/0.1.0",
        with: { "sluice:plugin/types": crate::bindings::sluice::plugin::types },
    });
}

/// The `sluice:plugin` versions this host runs, newest first.
pub const INTERFACE_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

use bindings::sluice::plugin::types as wit;

/// How often the epoch ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Running wasm looks at its deadline and at a cancel every this many
/// ticks (50 ms): cheap, and prompt enough for an operator.
const CHECK_TICKS: u64 = 5;
/// Guest stdout/stderr kept per call; beyond it output is dropped (the log
/// import is the channel for real logging).
const STDIO_CAPTURE: usize = 1 << 20;
/// Wasm stack, well below the host thread's stack so that deep recursion
/// traps in the guest instead of overflowing the host.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear memory a single action may use.
    pub memory_limit: usize,
    /// Where compiled components are cached (keyed by digest and engine).
    pub cache_dir: Option<PathBuf>,
    /// How plugin instances get their memories and tables.
    pub allocation: Allocation,
    /// Bytes one output artifact directory may hold when the action ends.
    pub max_output_bytes: u64,
    /// Certificate authorities (PEM) trusted for plugins' HTTPS besides the
    /// Mozilla roots, such as a company's internal CA.
    pub http_extra_roots: Vec<u8>,
    /// How granted host programs run; by default they are refused.
    pub confinement: sandbox::Confinement,
    /// Directories no `fs` grant (nor the sandbox's extra directories) may
    /// equal, hold or lie in: the agent's data dir, with its identity and
    /// job directories. The plugin cache is always among them.
    pub protected_dirs: Vec<PathBuf>,
}

/// The default limit of one output artifact, the controller's own limit.
pub const MAX_OUTPUT_BYTES: u64 = 4 << 30;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit: 256 << 20,
            cache_dir: None,
            allocation: Allocation::OnDemand,
            max_output_bytes: MAX_OUTPUT_BYTES,
            http_extra_roots: Vec::new(),
            confinement: sandbox::Confinement::default(),
            protected_dirs: Vec::new(),
        }
    }
}

/// Where the memories, tables and instance records of plugin calls come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Allocated when a plugin is instantiated and released with its store:
    /// nothing reserved up front, more system calls per call.
    OnDemand,
    /// Taken from pools reserved when the runtime starts, sized for this many
    /// plugin calls at once: instantiation reuses warm slots. Reserving needs
    /// a lot of virtual address space (one [`Config::memory_reservation`]
    /// per memory slot); where that fails, the runtime falls back to
    /// [`Allocation::OnDemand`] and says so.
    Pooling { concurrent_calls: u32 },
}

/// Core instances, memories and tables one plugin call may need from the
/// pools: a wasip2 component is a few core modules (the program, the WASI
/// adapter, shims), each with at most a memory and a couple of tables.
const POOL_CORE_INSTANCES_PER_CALL: u32 = 16;
const POOL_MEMORIES_PER_CALL: u32 = MAX_MEMORIES as u32;
const POOL_TABLES_PER_CALL: u32 = 8;

/// Configuration property as `describe()` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyInfo {
    pub name: String,
    pub required: bool,
    pub secret: bool,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionInfo {
    pub name: String,
    pub version: String,
    pub category: String,
    pub description: String,
    pub configuration: Vec<PropertyInfo>,
    pub input_artifacts: (u32, u32),
    pub output_artifacts: (u32, u32),
    pub capabilities: Grants,
    /// The `sluice:plugin` version the plugin was built against (empty for
    /// the controller's own providers and records from before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_version: String,
}

/// How one call of `execute` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { summary: String, output_variables: BTreeMap<String, String>, external_url: Option<String> },
    InProgress { continuation: String, poll_after: Duration, summary: String },
    Failed { message: String, retryable: bool },
}

/// What a plugin may use: what it declared in `describe()` and was granted
/// (by a pipeline action, or on `sluice action run`'s command line). A
/// declaration `*` takes whatever is granted; `http` patterns overlap as
/// patterns ([`net::intersect`]); a plugin that may write directories names
/// no paths in advance, so the grant chooses them. `net` (TCP ports for the
/// programs a plugin runs) is not in the plugin interface, whose released
/// versions are frozen: a plugin that declares `exec` consents to whatever
/// ports its programs are granted, as those programs could use the network
/// before there was a `net` capability.
pub fn consent(declared: &Grants, granted: &Grants) -> Grants {
    let both = |granted: &[String], declared: &[String]| -> Vec<String> {
        granted.iter().filter(|g| declared.iter().any(|d| d == "*" || d == *g)).cloned().collect()
    };
    Grants {
        exec: both(&granted.exec, &declared.exec),
        http: net::intersect(&declared.http, &granted.http),
        secrets: both(&granted.secrets, &declared.secrets),
        env: both(&granted.env, &declared.env),
        fs: if declared.fs.is_empty() { Vec::new() } else { granted.fs.clone() },
        net: if declared.exec.is_empty() { Vec::new() } else { granted.net.clone() },
    }
}

/// The interface source plugins export besides `action`, unversioned.
pub const SOURCE_INTERFACE: &str = "sluice:plugin/source";

/// A source's newest revision, as `latest-revision` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    pub summary: String,
    /// Seconds since the Unix epoch.
    pub created: Option<u64>,
}

/// The WIT `revision` record, lifted from the guest.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
struct WitRevision {
    id: String,
    summary: String,
    created: Option<u64>,
}

/// Receives an action's log lines as they happen.
pub trait LogSink: Send + Sync {
    fn line(&self, text: &str);
}

impl<F: Fn(&str) + Send + Sync> LogSink for F {
    fn line(&self, text: &str) {
        self(text)
    }
}

/// Set from outside to stop a running action as soon as possible: its
/// wasm is interrupted within one epoch check and its host programs killed.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Everything one action run needs, with host paths.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub pipeline: String,
    pub execution_id: String,
    pub stage: String,
    pub action: String,
    pub attempt: u32,
    pub configuration: Vec<(String, String)>,
    pub variables: Vec<(String, String)>,
    /// (name, host directory), mounted read-only.
    pub inputs: Vec<(String, PathBuf)>,
    /// (name, host directory, file patterns), mounted read-write.
    pub outputs: Vec<(String, PathBuf, Vec<String>)>,
    /// Fresh scratch directory, mounted read-write.
    pub workspace: PathBuf,
    pub grants: Grants,
    pub secrets: BTreeMap<String, String>,
    pub timeout: Duration,
    pub cancel: Cancel,
}

/// A compiled plugin, ready to instantiate cheaply.
pub struct LoadedPlugin {
    pub digest: String,
    pre: Pre,
}

/// A plugin's pre-instantiated component, by the `sluice:plugin` version
/// it was built against.
enum Pre {
    Current(bindings::PluginPre<host::HostState>),
    V0_1(bindings_0_1::PluginPre<host::HostState>),
}

impl LoadedPlugin {
    /// The `sluice:plugin` version the plugin was built against.
    pub fn interface_version(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => INTERFACE_VERSIONS[0],
            Pre::V0_1(_) => "0.1.0",
        }
    }

    fn instance_pre(&self) -> &wasmtime::component::InstancePre<host::HostState> {
        match &self.pre {
            Pre::Current(p) => p.instance_pre(),
            Pre::V0_1(p) => p.instance_pre(),
        }
    }

    fn describe(&self, store: &mut Store<host::HostState>) -> wasmtime::Result<wit::ActionInfo> {
        match &self.pre {
            Pre::Current(p) => p.instantiate(&mut *store)?.sluice_plugin_action().call_describe(store),
            Pre::V0_1(p) => p.instantiate(&mut *store)?.sluice_plugin_action().call_describe(store),
        }
    }

    fn execute(&self, store: &mut Store<host::HostState>, ctx: &wit::Context) -> wasmtime::Result<wit::Outcome> {
        match &self.pre {
            Pre::Current(p) => p.instantiate(&mut *store)?.sluice_plugin_action().call_execute(store, ctx),
            Pre::V0_1(p) => p.instantiate(&mut *store)?.sluice_plugin_action().call_execute(store, ctx),
        }
    }
}

/// The wasmtime engine, linker and compiled-plugin cache.
pub struct Runtime {
    engine: Engine,
    /// The allocation in force, after any fallback.
    allocation: Allocation,
    linker: Linker<host::HostState>,
    config: RuntimeConfig,
    loaded: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    /// Held while compiling, so that concurrent jobs needing the same new
    /// plugin compile it once and the others find it loaded.
    compiling: Mutex<()>,
    /// The TLS client of plugins' outgoing HTTPS.
    http_tls: Arc<rustls::ClientConfig>,
    confinement: Arc<sandbox::Confinement>,
    /// [`RuntimeConfig::protected_dirs`] and the plugin cache.
    protected: Arc<Vec<PathBuf>>,
}

/// Converts wasmtime's error type, which does not implement
/// `std::error::Error`, keeping its whole chain in the message.
pub(crate) fn wt<T>(result: wasmtime::Result<T>, what: &str) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("{what}: {e:#}"))
}

/// Hex sha256 of bytes; plugins and artifacts are named by it.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether a string is a digest as [`digest`] writes it (64 lower-case hex
/// digits), and so safe to name a file or a request with.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>> {
        let (engine, allocation) = match config.allocation {
            Allocation::OnDemand => (engine(None, config.memory_limit)?, Allocation::OnDemand),
            Allocation::Pooling { concurrent_calls } => match engine(Some(concurrent_calls), config.memory_limit) {
                Ok(engine) => (engine, config.allocation),
                Err(e) => {
                    tracing::warn!(
                        concurrent_calls,
                        "the pooling allocator is not available here, allocating on demand: {e:#}"
                    );
                    (engine(None, config.memory_limit)?, Allocation::OnDemand)
                }
            },
        };
        let mut linker = Linker::new(&engine);
        wt(wasmtime_wasi::p2::add_to_linker_sync(&mut linker), "linking WASI")?;
        wt(wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker), "linking wasi:http")?;
        wt(blocking::bound_waits(&mut linker), "bounding WASI waits by the deadline")?;
        wt(
            bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s),
            "linking the sluice:plugin imports",
        )?;
        wt(
            bindings_0_1::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s),
            "linking the sluice:plugin@0.1.0 imports",
        )?;
        // Its types are the newest version's Rust types, linked under the
        // newest name; plugins of 0.1.0 import the instance by its own name.
        wt(linker.instance("sluice:plugin/types@0.1.0").map(|_| ()), "linking sluice:plugin/types@0.1.0")?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating plugin cache {}", dir.display()))?;
        }
        let http_tls = http::tls_config(&config.http_extra_roots).context("setting up TLS for plugins' HTTPS")?;
        let mut protected = config.protected_dirs.clone();
        protected.extend(config.cache_dir.clone());
        let mut config = config;
        if let sandbox::Confinement::Confined(sandbox) = &mut config.confinement {
            // What the operator adds to every run must not open the agent's
            // own files either.
            for dir in sandbox.extra_read.iter_mut().chain(sandbox.extra_write.iter_mut()) {
                *dir = sandbox::grantable_dir(dir, &protected)
                    .map_err(|e| anyhow::anyhow!("sandbox directory refused: {e}"))?;
            }
        }
        if let sandbox::Confinement::Confined(_) = &config.confinement {
            // Confined programs hold no capabilities: a process that is not
            // dumpable keeps its `/proc` entries (environment, memory) from
            // them even under the same user.
            nix::sys::prctl::set_dumpable(false).context("making this process non-dumpable")?;
        }
        let runtime = Arc::new(Self {
            confinement: Arc::new(config.confinement.clone()),
            protected: Arc::new(protected),
            http_tls,
            engine,
            allocation,
            linker,
            config,
            loaded: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
        });
        // The epoch ticker holds only a weak reference so a dropped runtime
        // stops it.
        let weak = Arc::downgrade(&runtime);
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(rt) = weak.upgrade() {
                    rt.engine.increment_epoch();
                    drop(rt);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("starting the epoch thread")?;
        Ok(runtime)
    }

    /// How granted programs run.
    pub fn confinement(&self) -> &sandbox::Confinement {
        &self.confinement
    }

    /// The allocation strategy in force (pooling may have fallen back).
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// A plugin already compiled in this process, by digest.
    pub fn cached(&self, digest: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded.lock().expect("plugin cache lock").get(digest).cloned()
    }

    /// Compiles (or loads from the on-disk cache) a component. The bytes are
    /// verified against `expected_digest` when one is given.
    pub fn load(&self, bytes: &[u8], expected_digest: Option<&str>) -> Result<Arc<LoadedPlugin>> {
        let digest = digest(bytes);
        if let Some(expected) = expected_digest
            && expected != digest
        {
            anyhow::bail!("plugin digest mismatch: expected {expected}, got {digest}");
        }
        if let Some(p) = self.cached(&digest) {
            return Ok(p);
        }
        let _compiling = self.compiling.lock().expect("compile lock");
        if let Some(p) = self.cached(&digest) {
            return Ok(p);
        }
        let component = self.compile(bytes, &digest)?;
        self.prepare(&component, digest)
    }

    /// A plugin from the on-disk compile cache alone, by digest, without its
    /// bytes: no hashing of the component and no fetching, which is what
    /// makes an agent's first call of a large (Python, JavaScript) plugin
    /// after a restart cheap. `None` when the cache does not hold it for
    /// this engine. The cache only ever receives components whose digest was
    /// verified by [`Runtime::load`].
    pub fn load_compiled(&self, digest: &str) -> Result<Option<Arc<LoadedPlugin>>> {
        // It names a file the unsafe deserializer maps: a digest and nothing else.
        if !is_digest(digest) {
            anyhow::bail!("{digest:?} is not a sha256 digest");
        }
        if let Some(p) = self.cached(digest) {
            return Ok(Some(p));
        }
        let Some(path) = self.cache_path(digest) else { return Ok(None) };
        if !path.exists() {
            return Ok(None);
        }
        let _compiling = self.compiling.lock().expect("compile lock");
        if let Some(p) = self.cached(digest) {
            return Ok(Some(p));
        }
        match self.deserialize_cached(&path) {
            Some(component) => self.prepare(&component, digest.to_string()).map(Some),
            None => Ok(None),
        }
    }

    /// Links a compiled component against the `sluice:plugin` version it
    /// exports and keeps it in memory.
    fn prepare(&self, component: &Component, digest: String) -> Result<Arc<LoadedPlugin>> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| anyhow::anyhow!("plugin is not a sluice:plugin component this host can run: {e:#}"))?;
        let pre = match bindings::PluginPre::new(pre.clone()) {
            Ok(current) => Pre::Current(current),
            Err(newest) => match bindings_0_1::PluginPre::new(pre) {
                Ok(old) => Pre::V0_1(old),
                Err(_) => anyhow::bail!(
                    "plugin does not export sluice:plugin/action (of any version this host runs: {}): {newest:#}",
                    INTERFACE_VERSIONS.join(", ")
                ),
            },
        };
        let plugin = Arc::new(LoadedPlugin { digest: digest.clone(), pre });
        self.loaded.lock().expect("plugin cache lock").insert(digest, plugin.clone());
        Ok(plugin)
    }

    /// Where the compiled form of a plugin is cached: its digest and the
    /// engine's compatibility hash name it.
    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.config.cache_dir.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }

    /// A cached compiled component, or `None` (logged) when it is unusable.
    fn deserialize_cached(&self, path: &Path) -> Option<Component> {
        // SAFETY: the cache directory belongs to this process's data dir
        // and only ever holds output of `precompile_component` written by
        // `compile` under a name that includes the engine's compatibility
        // hash, for bytes whose digest was checked; a file that fails to
        // load is recompiled.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "discarding unusable compiled plugin: {e:#}");
                None
            }
        }
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component> {
        if wasmparser_is_core_module(bytes) {
            anyhow::bail!("plugin is a core WebAssembly module, not a component: build it for wasm32-wasip2");
        }
        let Some(path) = self.cache_path(digest) else {
            return Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("compiling plugin: {e:#}"));
        };
        if path.exists()
            && let Some(component) = self.deserialize_cached(&path)
        {
            return Ok(component);
        }
        let compiled = self.engine.precompile_component(bytes).map_err(|e| anyhow::anyhow!("compiling plugin: {e:#}"))?;
        // Another process may share the cache directory: write under a name
        // of our own and rename into place.
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), rand_suffix()));
        std::fs::write(&tmp, &compiled).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        #[allow(unsafe_code)]
        // SAFETY: as above; the bytes were produced by this engine just now.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(|e| anyhow::anyhow!("loading plugin: {e:#}"))
    }

    /// An invocation with no artifacts and an empty scratch directory, for
    /// calls outside an action run (`describe`, `latest-revision`).
    fn bare_invocation(
        workspace: &Path,
        grants: Grants,
        secrets: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Invocation {
        Invocation {
            pipeline: String::new(),
            execution_id: String::new(),
            stage: String::new(),
            action: String::new(),
            attempt: 0,
            configuration: vec![],
            variables: vec![],
            inputs: vec![],
            outputs: vec![],
            workspace: workspace.to_path_buf(),
            grants,
            secrets,
            timeout,
            cancel: Cancel::default(),
        }
    }

    /// Calls a source plugin's `latest-revision` for a configuration, with
    /// the action's grants and secrets, in a fresh sandbox with an empty
    /// scratch directory. Plugins that are not sources say so. The revision
    /// and the error are masked like an action's outcome.
    pub fn latest_revision(
        &self,
        plugin: &LoadedPlugin,
        configuration: Vec<(String, String)>,
        grants: Grants,
        secrets: BTreeMap<String, String>,
        timeout: Duration,
        log: Arc<dyn LogSink>,
    ) -> std::result::Result<Revision, String> {
        let scratch = tempfile_dir().map_err(|e| format!("{e:#}"))?;
        let inv = Self::bare_invocation(scratch.path(), grants, secrets, timeout);
        let masker = mask::Masker::new(&inv.secrets);
        match self.latest_revision_unmasked(plugin, configuration, &inv, log) {
            Ok(r) => Ok(Revision { id: masker.mask(&r.id), summary: masker.mask(&r.summary), created: r.created }),
            Err(message) => Err(masker.mask(&message)),
        }
    }

    fn latest_revision_unmasked(
        &self,
        plugin: &LoadedPlugin,
        configuration: Vec<(String, String)>,
        inv: &Invocation,
        log: Arc<dyn LogSink>,
    ) -> std::result::Result<Revision, String> {
        let (mut store, stdio) = self
            .store(inv, log.clone(), Instant::now() + inv.timeout)
            .map_err(|e| format!("preparing the sandbox: {e:#}"))?;
        let instance = plugin
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| format!("instantiating plugin: {}", host::explain_trap(&e, &store)))?;
        let source = format!("{SOURCE_INTERFACE}@{}", plugin.interface_version());
        let interface = instance
            .get_export_index(&mut store, None, &source)
            .ok_or_else(|| format!("the plugin is not a source: it does not export {source}"))?;
        let func = instance
            .get_export_index(&mut store, Some(&interface), "latest-revision")
            .ok_or_else(|| format!("the plugin's {source} has no latest-revision"))?;
        let func = instance
            .get_typed_func::<(Vec<(String, String)>,), (std::result::Result<WitRevision, String>,)>(&mut store, &func)
            .map_err(|e| format!("the plugin's latest-revision has an unexpected type: {e:#}"))?;
        let result = func.call(&mut store, (configuration,));
        stdio.flush();
        store.data_mut().finish_log();
        match result {
            Ok((Ok(r),)) => Ok(Revision { id: r.id, summary: r.summary, created: r.created }),
            Ok((Err(message),)) => Err(message),
            Err(e) => Err(host::explain_trap(&e, &store)),
        }
    }

    // Plugin authors' kit (issue 20, kit).
    /// The names a loaded component imports and exports (interfaces such
    /// as `sluice:plugin/log@0.2.0`, `wasi:cli/environment@0.2.0`), each
    /// sorted: what `sluice plugin check` shows.
    pub fn interfaces(&self, plugin: &LoadedPlugin) -> (Vec<String>, Vec<String>) {
        let ty = plugin.instance_pre().component().component_type();
        let mut imports: Vec<String> = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let mut exports: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        imports.sort();
        exports.sort();
        (imports, exports)
    }

    /// Calls the plugin's `describe()` in a fresh, grant-less sandbox.
    pub fn describe(&self, plugin: &LoadedPlugin) -> Result<ActionInfo> {
        let empty = tempfile_dir()?;
        let inv = Self::bare_invocation(empty.path(), Grants::default(), BTreeMap::new(), Duration::from_secs(10));
        let sink: Arc<dyn LogSink> = Arc::new(|_: &str| {});
        let (mut store, _stdio) = self.store(&inv, sink, Instant::now() + inv.timeout)?;
        let info = plugin
            .describe(&mut store)
            .map_err(|e| anyhow::anyhow!("plugin describe() failed: {}", host::explain_trap(&e, &store)))?;
        Ok(ActionInfo {
            name: info.name,
            version: info.version,
            category: info.category,
            description: info.description,
            configuration: info
                .configuration
                .into_iter()
                .map(|p| PropertyInfo {
                    name: p.name,
                    required: p.required,
                    secret: p.secret,
                    description: p.description,
                    kind: p.type_,
                })
                .collect(),
            input_artifacts: (info.input_artifacts.min, info.input_artifacts.max),
            output_artifacts: (info.output_artifacts.min, info.output_artifacts.max),
            capabilities: Grants {
                exec: info.capabilities.exec,
                http: info.capabilities.http,
                secrets: info.capabilities.secrets,
                env: info.capabilities.env,
                fs: info.capabilities.fs,
                net: Vec::new(),
            },
            interface_version: plugin.interface_version().to_string(),
        })
    }

    /// Runs one action to its end: calls `execute`, and again after the
    /// delay the plugin asks for while it answers `in-progress`, until it
    /// succeeds, fails, or the action's timeout passes. Traps, deadline and
    /// memory exhaustion become `Failed` with the reason.
    pub fn run_action(&self, plugin: &LoadedPlugin, inv: &Invocation, log: Arc<dyn LogSink>) -> Outcome {
        self.run_action_then(plugin, inv, log, |outcome| outcome)
    }

    /// [`Runtime::run_action`], handing the outcome to `deliver` before the
    /// last call's sandbox is taken down: dropping its store (the instance
    /// back to the pool, the WASI context, the temporary directory of
    /// granted programs) need not delay whoever waits for the result
    /// (issue 19). The sandbox is gone when this returns.
    pub fn run_action_then<R>(
        &self,
        plugin: &LoadedPlugin,
        inv: &Invocation,
        log: Arc<dyn LogSink>,
        deliver: impl FnOnce(Outcome) -> R,
    ) -> R {
        let deadline = Instant::now() + inv.timeout;
        let mut continuation = None;
        let (outcome, sandbox) = loop {
            match self.execute_kept(plugin, inv, log.clone(), deadline, continuation.take()) {
                (Outcome::InProgress { continuation: next, poll_after, summary }, sandbox) => {
                    drop(sandbox);
                    if !summary.is_empty() {
                        // Masked already, like every field of an outcome.
                        log.line(&format!("in progress: {summary}"));
                    }
                    let now = Instant::now();
                    if inv.cancel.is_cancelled() {
                        break (Outcome::Failed { message: "action cancelled".into(), retryable: false }, None);
                    }
                    if now + poll_after >= deadline {
                        let message = format!("action timed out after {}", human(inv.timeout));
                        break (Outcome::Failed { message, retryable: true }, None);
                    }
                    std::thread::sleep(poll_after);
                    continuation = Some(next);
                }
                (Outcome::Succeeded { .. }, sandbox) if let Err(message) = self.check_outputs(inv) => {
                    break (Outcome::Failed { message, retryable: false }, sandbox);
                }
                done => break done,
            }
        };
        let delivered = deliver(outcome);
        drop(sandbox);
        delivered
    }

    /// Refuses outputs over [`RuntimeConfig::max_output_bytes`], before
    /// anything is packed or sent.
    fn check_outputs(&self, inv: &Invocation) -> std::result::Result<(), String> {
        let limit = self.config.max_output_bytes;
        for (name, dir, _) in &inv.outputs {
            let size = files::tree_size(dir, limit).map_err(|e| format!("measuring output artifact {name:?}: {e}"))?;
            if size > limit {
                return Err(format!("output artifact {name:?} holds more than {}, the limit of one artifact", bytes(limit)));
            }
        }
        Ok(())
    }

    /// One call of `execute` in a fresh store. Every text of the outcome is
    /// masked (see [`mask`]) before it leaves the runtime.
    pub fn execute_once(
        &self,
        plugin: &LoadedPlugin,
        inv: &Invocation,
        log: Arc<dyn LogSink>,
        deadline: Instant,
        continuation: Option<String>,
    ) -> Outcome {
        self.execute_kept(plugin, inv, log, deadline, continuation).0
    }

    /// [`Runtime::execute_once`], with the call's store still alive (`None`
    /// when it could not be made).
    fn execute_kept(
        &self,
        plugin: &LoadedPlugin,
        inv: &Invocation,
        log: Arc<dyn LogSink>,
        deadline: Instant,
        continuation: Option<String>,
    ) -> (Outcome, Option<Store<host::HostState>>) {
        let masker = mask::Masker::new(&inv.secrets);
        let (mut store, stdio) = match self.store(inv, log.clone(), deadline) {
            Ok(s) => s,
            Err(e) => {
                let failed = Outcome::Failed { message: format!("preparing the sandbox: {e:#}"), retryable: false };
                return (masker.mask_outcome(failed), None);
            }
        };
        let ctx = wit::Context {
            pipeline: inv.pipeline.clone(),
            execution_id: inv.execution_id.clone(),
            stage: inv.stage.clone(),
            action: inv.action.clone(),
            attempt: inv.attempt,
            configuration: inv.configuration.clone(),
            inputs: inv
                .inputs
                .iter()
                .map(|(name, _)| wit::Artifact { name: name.clone(), path: host::input_path(name), files: vec![] })
                .collect(),
            outputs: inv
                .outputs
                .iter()
                .map(|(name, _, files)| wit::Artifact {
                    name: name.clone(),
                    path: host::output_path(name),
                    files: files.clone(),
                })
                .collect(),
            workspace: host::WORKSPACE.to_string(),
            variables: inv.variables.clone(),
            continuation,
        };
        let result = plugin.execute(&mut store, &ctx);
        stdio.flush();
        store.data_mut().finish_log();
        let outcome = match result {
            Ok(wit::Outcome::Succeeded(s)) => Outcome::Succeeded {
                summary: s.summary,
                output_variables: s.output_variables.into_iter().collect(),
                external_url: s.external_url,
            },
            Ok(wit::Outcome::InProgress(p)) => Outcome::InProgress {
                continuation: p.continuation,
                poll_after: Duration::from_millis(p.poll_after_ms.into()),
                summary: p.summary,
            },
            Ok(wit::Outcome::Failed(f)) => Outcome::Failed { message: f.message, retryable: f.retryable },
            Err(e) => Outcome::Failed { message: host::explain_trap(&e, &store), retryable: false },
        };
        (masker.mask_outcome(outcome), Some(store))
    }

    fn store(
        &self,
        inv: &Invocation,
        log: Arc<dyn LogSink>,
        deadline: Instant,
    ) -> Result<(Store<host::HostState>, host::Stdio)> {
        let (state, stdio) = host::HostState::new(
            inv,
            log,
            deadline,
            self.config.memory_limit,
            self.http_tls.clone(),
            self.confinement.clone(),
            &self.protected,
        )?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The deadline is checked every few ticks rather than set once, so
        // that a cancel interrupts the wasm too.
        store.set_epoch_deadline(CHECK_TICKS);
        store.epoch_deadline_callback(move |ctx| {
            let state = ctx.data();
            if state.cancel.is_cancelled() || Instant::now() >= state.deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            Ok(wasmtime::UpdateDeadline::Continue(CHECK_TICKS))
        });
        Ok((store, stdio))
    }
}

/// The wasmtime engine; with `pooling`, its pools are reserved now, so that
/// a machine that cannot give the address space fails here rather than at
/// the first plugin call.
fn engine(pooling: Option<u32>, memory_limit: usize) -> Result<Engine> {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true);
    wasm.epoch_interruption(true);
    wasm.max_wasm_stack(MAX_WASM_STACK);
    if let Some(calls) = pooling {
        let calls = calls.max(1);
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(calls)
            .total_core_instances(calls.saturating_mul(POOL_CORE_INSTANCES_PER_CALL))
            .total_memories(calls.saturating_mul(POOL_MEMORIES_PER_CALL))
            .total_tables(calls.saturating_mul(POOL_TABLES_PER_CALL))
            .max_core_instances_per_component(POOL_CORE_INSTANCES_PER_CALL)
            .max_memories_per_component(POOL_MEMORIES_PER_CALL)
            .max_tables_per_component(POOL_TABLES_PER_CALL)
            .max_memories_per_module(MAX_MEMORIES as u32)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(memory_limit);
        keep_resident(&mut pool);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    wt(Engine::new(&wasm), "creating the wasmtime engine")
}

/// How much of a pooled linear memory, and of a pooled table, stays mapped
/// between calls. Reset then restores only the pages a call dirtied (found
/// with Linux's `PAGEMAP_SCAN`) instead of unmapping the memory and taking
/// a page fault for every page the next call touches again: the kernel's
/// page-fault and unmap work was the largest part of a warm noop call in
/// `sluice-bench plugin`. Bounded so that an idle pool holds little memory
/// (slots x memories per slot x this, at most).
const POOL_KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const POOL_KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Keeps pooled memories resident, where the kernel can say which pages a
/// call dirtied. Without `PAGEMAP_SCAN` (Linux before 6.7, other systems)
/// wasmtime would instead zero the kept bytes on every call, which costs
/// more than it saves, so nothing is kept there. Every call still starts
/// from the module's initial memory either way.
fn keep_resident(pool: &mut wasmtime::PoolingAllocationConfig) {
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(POOL_KEEP_RESIDENT_MEMORY)
            .table_keep_resident(POOL_KEEP_RESIDENT_TABLE);
    }
}

/// A core module starts with the magic and version 1; a component with the
/// magic and a different layer/version field.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn tempfile_dir() -> Result<TempDir> {
    TempDir::new("sluice-describe")
}

/// A private directory (mode 0700) removed on drop; small enough not to
/// need the tempfile crate at run time.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::DirBuilder::new().mode(0o700).create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// `512 KiB`, `16 MiB`, `4 GiB`: how sizes read in messages.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// `90s`, `5m`, `2h`: how timeouts read in messages.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Instances per store (component and core instances): a component is a
/// few core instances (the program, the WASI adapter, shims), a Python or
/// JavaScript one a few more; far below what would weigh on the host.
pub const MAX_INSTANCES: usize = 64;
/// Tables per store, for the same reason.
pub const MAX_TABLES: usize = 64;
/// Linear memories per store: one. Every toolchain a plugin is built with
/// (Rust, C, componentize-py, ComponentizeJS) gives a component a single
/// memory its modules share; a second one would double what the memory
/// limit allows.
pub const MAX_MEMORIES: usize = 1;
/// Elements any one table may have, at instantiation or by `table.grow`: a
/// table element is a pointer of host memory, so an unbounded table is
/// host memory outside the memory limit. The largest real tables
/// (SpiderMonkey in a JavaScript plugin) hold some tens of thousands.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_http;
