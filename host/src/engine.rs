//! The shared wasmtime engine, tuned for many short evaluations, and compiled rules.

use crate::artifacts::{ArtifactStats, Artifacts};
use crate::bindings;
use crate::config::EngineConfig;
use crate::error::{ConfigError, LoadError};
use crate::sandbox::StoreState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

/// Compiles rules and runs them. Cheap to clone; share one per process.
///
/// Holds one wasmtime engine (component model, pooling allocator, fuel metering, epoch
/// interruption), the linker with WASI and the `rulebox:rule/host` interface, and a thread
/// that advances the epoch every [`EngineConfig::epoch_tick_ms`] to enforce deadlines.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    admission: Admission,
    wasmtime: wasmtime::Engine,
    linker: Linker<StoreState>,
    config: EngineConfig,
    artifacts: Artifacts,
    /// Components compiled and still in use, by digest: shared by every bundle and revision
    /// that holds the same component.
    live: Mutex<HashMap<[u8; 32], Weak<RulePreInner>>>,
    /// One gate per component being compiled, so concurrent loads of one component compile
    /// it once (the others wait and then find it live).
    compiling: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
    /// Evaluations the host could not run (no slot, no instance, starved): see
    /// [`EngineStats::overloaded`].
    overloaded: AtomicU64,
    /// Threads that share a layer's rules with the evaluating thread.
    helpers: crate::workers::Helpers,
    /// Idle instances kept by rules in warm mode, engine-wide: each holds an instance slot.
    warm_idle: std::sync::atomic::AtomicUsize,
    _ticker: Ticker,
}

/// Counters of an engine's evaluations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EngineStats {
    /// Evaluations running now.
    pub running: usize,
    /// Evaluations waiting for a slot now.
    pub waiting: usize,
    /// Evaluations refused as overloaded since the engine started (no slot within the
    /// queue timeout, the instance pool full, or starved of CPU).
    pub overloaded: u64,
}

impl Engine {
    /// Builds an engine; fails with the field at fault when `config` is invalid.
    pub fn new(config: EngineConfig) -> Result<Engine, ConfigError> {
        config.validate()?;
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            // A Rust wasip2 rule is one main module plus a few small shims.
            .total_core_instances(n.saturating_mul(config.core_instances_per_rule))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(config.max_limits.memory_bytes)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(16 << 10)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a slot's reset copies back
            // only the pages the rule wrote, not the whole resident prefix (wasmtime's
            // default): see `EngineConfig::keep_resident_bytes`.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wt = wasmtime::Config::new();
        wt.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let wasmtime =
            wasmtime::Engine::new(&wt).map_err(|e| ConfigError::new("engine", format!("{e:#}")))?;

        let mut linker = Linker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| crate::sandbox::add_deadline_sleeps(&mut linker))
            .and_then(|()| crate::sandbox::add_grant_reads(&mut linker))
            .and_then(|()| {
                bindings::Rule::add_to_linker::<_, HasSelf<StoreState>>(&mut linker, |s| s)
            })
            .map_err(|e| ConfigError::new("engine", format!("linker: {e:#}")))?;

        let artifacts = Artifacts::new(&wasmtime, config.cache_dir.clone())?;
        let ticker = Ticker::start(&wasmtime, Duration::from_millis(config.epoch_tick_ms));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let helpers = crate::workers::Helpers::new(config.max_concurrent_evaluations.min(cpus) - 1);
        Ok(Engine {
            inner: Arc::new(EngineInner {
                admission: Admission::new(config.max_concurrent_evaluations),
                wasmtime,
                linker,
                config,
                artifacts,
                live: Mutex::default(),
                compiling: Mutex::default(),
                overloaded: AtomicU64::new(0),
                helpers,
                warm_idle: Default::default(),
                _ticker: ticker,
            }),
        })
    }

    /// Waits up to `EngineConfig::queue_timeout_ms` for an evaluation slot.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        self.inner
            .admission
            .acquire(Duration::from_millis(self.inner.config.queue_timeout_ms))
    }

    /// Evaluations running and waiting now (see
    /// [`EngineConfig::max_concurrent_evaluations`]), and how many were overloaded.
    pub fn stats(&self) -> EngineStats {
        let state = self.inner.admission.lock();
        EngineStats {
            running: state.running,
            waiting: state.waiting,
            overloaded: self.inner.overloaded.load(Ordering::Relaxed),
        }
    }

    /// The threads that share a dependency layer's rules with the evaluating thread.
    pub(crate) fn helpers(&self) -> &crate::workers::Helpers {
        &self.inner.helpers
    }

    /// Claims room for one more idle warm instance. Idle instances hold instance slots, so
    /// they may take at most half of [`EngineConfig::max_instances`]: rules in warm mode
    /// must never leave the others without an instance.
    pub(crate) fn keep_warm(&self) -> bool {
        let cap = self.inner.config.max_instances as usize / 2;
        self.inner
            .warm_idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back the room of `n` idle warm instances (taken or dropped).
    pub(crate) fn release_warm(&self, n: usize) {
        self.inner.warm_idle.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts an evaluation refused as overloaded.
    pub(crate) fn note_overloaded(&self) {
        self.inner.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The linker rules are instantiated with.
    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.inner.linker
    }

    /// The underlying wasmtime engine.
    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// Reads and compiles a rule component from a file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<RulePre, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load(&bytes)
    }

    /// Compiles a rule component and checks that it is a `rulebox:rule@0.1.0` rule.
    ///
    /// A component already loaded (and still in use) is not compiled again, and with
    /// [`EngineConfig::cache_dir`] set, compiled code is kept on disk across restarts.
    pub fn load(&self, bytes: &[u8]) -> Result<RulePre, LoadError> {
        self.load_as(bytes, None)
    }

    /// [`Engine::load`], for a component that is (with the component it was taken of) or is
    /// not a snapshot taken after a rule's `init`.
    pub(crate) fn load_as(
        &self,
        bytes: &[u8],
        origin: Option<&RulePre>,
    ) -> Result<RulePre, LoadError> {
        check_header(bytes)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(pre) = self.live(&digest) {
            return Ok(pre);
        }
        // Before compiling, which takes 6-14 s for an interpreted guest (measured here).
        let shape = crate::inspect::shape(bytes)?;
        for import in &shape.imports {
            crate::inspect::check_import(import)?;
        }
        let limit = self.inner.config.core_instances_per_rule;
        if shape.core_instances > limit {
            return Err(LoadError::TooManyCoreInstances {
                needs: shape.core_instances,
                limit,
            });
        }
        let gate = lock(&self.inner.compiling)
            .entry(digest)
            .or_default()
            .clone();
        let result = {
            let _compiling = lock(&gate);
            // Whoever held the gate before us may have compiled it.
            match self.live(&digest) {
                Some(pre) => Ok(pre),
                None => self.compile(bytes, digest, origin),
            }
        };
        let mut compiling = lock(&self.inner.compiling);
        // The map's clone and ours: no one else waits on this gate.
        if Arc::strong_count(&gate) == 2 {
            compiling.remove(&digest);
        }
        result
    }

    /// The live compiled component of `digest`, counted as a memory hit.
    fn live(&self, digest: &[u8; 32]) -> Option<RulePre> {
        let inner = lock(&self.inner.live).get(digest).and_then(Weak::upgrade)?;
        self.inner.artifacts.note_memory_hit();
        Some(RulePre { inner })
    }

    fn compile(
        &self,
        bytes: &[u8],
        digest: [u8; 32],
        origin: Option<&RulePre>,
    ) -> Result<RulePre, LoadError> {
        let component = match origin {
            // Snapshots of one rule with the same data are not byte-identical (memory holds
            // what `init`'s reads left behind): a disk entry would never be read again, only
            // pile up, so a snapshot is compiled in memory alone.
            Some(_) => Component::new(&self.inner.wasmtime, bytes),
            None => self
                .inner
                .artifacts
                .compile(&self.inner.wasmtime, bytes, &digest),
        }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let pre = self.prepare(component, digest, bytes, origin)?;
        let mut live = lock(&self.inner.live);
        live.retain(|_, weak| weak.strong_count() > 0);
        live.insert(digest, Arc::downgrade(&pre.inner));
        Ok(pre)
    }

    /// Counters of the compiled-component cache.
    pub fn artifact_stats(&self) -> ArtifactStats {
        self.inner.artifacts.stats()
    }

    /// Checks a compiled component against the rule world and readies it for instantiation.
    pub(crate) fn prepare(
        &self,
        component: Component,
        digest: [u8; 32],
        bytes: &[u8],
        origin: Option<&RulePre>,
    ) -> Result<RulePre, LoadError> {
        let initialized = origin.is_some();
        let ty = component.component_type();
        let engine = &self.inner.wasmtime;
        if ty.get_export(engine, "evaluate").is_none() {
            let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
            return Err(LoadError::MissingExport(format!(
                "it has no `evaluate` export (it exports: {})",
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            )));
        }
        // A rule that loads data once exports `init` (the `initializer` world); the bytes
        // are kept to snapshot it after `init` runs, per configuration.
        let init_source = match ty.get_export(engine, "init").map(|e| e.ty) {
            None => None,
            // A snapshot keeps its `init`, which already ran.
            Some(_) if initialized => None,
            Some(wasmtime::component::types::ComponentItem::ComponentFunc(f))
                if f.params().len() == 1 && f.results().len() == 1 =>
            {
                Some(Arc::from(bytes))
            }
            // Another toolchain's export of the same name (componentize-js's QuickJS backend
            // exports `init(shim, script, entry-path, disable-gc)`, which it already ran at
            // build time): not rulebox's pre-initialization, so it is not called.
            Some(_) => {
                tracing::warn!(
                    "the component's `init` export is not rulebox's `func(settings: string) -> result<_, string>`: it is not called, and the rule loads without pre-initialization"
                );
                None
            }
        };
        // Checked against the sandbox before compiling (`inspect`).
        let imports_wasi = ty
            .imports(engine)
            .any(|(name, _)| name.starts_with("wasi:"));
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = bindings::RulePre::new(instance_pre)
            .map_err(|e| LoadError::MissingExport(format!("{e:#}")))?;
        Ok(RulePre {
            inner: Arc::new(RulePreInner {
                pre,
                digest,
                engine: self.clone(),
                initialized,
                init_source,
                imports_wasi,
                _origin: origin.cloned(),
            }),
        })
    }
}

/// Locks a mutex, recovering from poisoning: the maps it guards stay consistent whatever a
/// panicking holder did.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 6..8 are the "layer": 0 for a core module, 1 for a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// A compiled rule component, checked against the rule world, ready to instantiate.
///
/// Compiling is the expensive step (tens of milliseconds); keep a `RulePre` and create as
/// many [`Rule`](crate::Rule)s from it as you have configurations. Cheap to clone.
#[derive(Clone)]
pub struct RulePre {
    inner: Arc<RulePreInner>,
}

struct RulePreInner {
    pre: bindings::RulePre<StoreState>,
    digest: [u8; 32],
    engine: Engine,
    initialized: bool,
    /// The component's bytes, when it exports `init`.
    init_source: Option<Arc<[u8]>>,
    /// Whether the component imports any `wasi:` interface (a lean rule imports none).
    imports_wasi: bool,
    /// For a snapshot: the component it was taken of, kept compiled (and live) so the next
    /// load of it is a memory hit.
    _origin: Option<RulePre>,
}

impl RulePre {
    /// SHA-256 of the component's bytes: its identity.
    pub fn digest(&self) -> &[u8; 32] {
        &self.inner.digest
    }

    /// [`RulePre::digest`] as lower-case hex.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.inner.digest)
    }

    /// The engine this was compiled for.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn pre(&self) -> &bindings::RulePre<StoreState> {
        &self.inner.pre
    }

    /// Whether the component imports WASI. One that does not never calls into the host
    /// beyond `rulebox:rule/host` (a log line), so it can run on an async runtime's worker
    /// thread without `block_in_place`: none of its calls block on the runtime.
    pub fn imports_wasi(&self) -> bool {
        self.inner.imports_wasi
    }

    /// The component's bytes when it exports `init`: each configuration of it is
    /// initialized and snapshot at load.
    pub(crate) fn init_source(&self) -> Option<&Arc<[u8]>> {
        self.inner.init_source.as_ref()
    }

    /// Whether this is a snapshot taken after the rule's `init` ran: its evaluations start
    /// from the state `init` left and get no directory grants.
    pub fn initialized(&self) -> bool {
        self.inner.initialized
    }
}

impl std::fmt::Debug for RulePre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulePre")
            .field("digest", &self.digest_hex())
            .finish()
    }
}

/// Admission control: at most `max` evaluations run at once; the rest wait. Rules are
/// CPU-bound, so running more than there are CPUs only makes each one late.
struct Admission {
    max: usize,
    state: std::sync::Mutex<AdmissionState>,
    freed: std::sync::Condvar,
}

struct AdmissionState {
    running: usize,
    waiting: usize,
}

/// A running evaluation's slot; freed on drop.
pub(crate) struct Permit<'a>(&'a Admission);

impl Admission {
    fn new(max: usize) -> Admission {
        Admission {
            max,
            state: std::sync::Mutex::new(AdmissionState {
                running: 0,
                waiting: 0,
            }),
            freed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acquire(&self, patience: Duration) -> Option<Permit<'_>> {
        let mut state = self.lock();
        if state.running < self.max {
            state.running += 1;
            return Some(Permit(self));
        }
        let give_up = std::time::Instant::now() + patience;
        state.waiting += 1;
        loop {
            let now = std::time::Instant::now();
            if now >= give_up {
                state.waiting -= 1;
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, give_up - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if state.running < self.max {
                state.waiting -= 1;
                state.running += 1;
                return Some(Permit(self));
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.0.lock();
            state.running -= 1;
            state.waiting
        };
        // On the hot path no one waits: skip the wake-up (a futex call each time).
        if waiting > 0 {
            self.0.freed.notify_one();
        }
    }
}

/// Advances the engine's epoch on a fixed tick until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: &wasmtime::Engine, tick: Duration) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rulebox-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch thread");
        Ticker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_core_modules_are_named() {
        let engine = Engine::new(EngineConfig::default()).unwrap();
        assert_eq!(engine.load(b"hello world").unwrap_err(), LoadError::NotWasm);
        let core = b"\0asm\x01\0\0\0";
        assert_eq!(engine.load(core).unwrap_err(), LoadError::CoreModule);
        let err = engine.load(b"\0asm\x0d\0\x01\0\xff\xff").unwrap_err();
        assert!(matches!(err, LoadError::Compile(_)), "{err:?}");
    }
}
