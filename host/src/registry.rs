//! Bundles by name, hot-swappable: each name's active revision sits behind an atomic pointer;
//! a new revision is read, verified, compiled and tested before it replaces the active one,
//! and a failure at any step leaves the active one serving.

use crate::bundle::{Bundle, BundleError, BundleResult, LoadOptions, LoadStep};
use crate::engine::Engine;
use crate::input::Input;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::HashMap;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Registry settings.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// How bundles are checked.
    pub load: LoadOptions,
    /// Revisions kept per bundle, the active one included (for rollback). Default 5.
    pub keep_revisions: usize,
    /// Run each bundle's golden cases before activating it. Default true.
    pub run_tests: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            load: LoadOptions::default(),
            keep_revisions: 5,
            run_tests: true,
        }
    }
}

fn fail(path: &Path, error: BundleError) -> LoadFailure {
    LoadFailure {
        path: path.to_owned(),
        step: error.step(),
        error,
    }
}

/// A revision that passed the gate (read, verified, compiled, its golden cases run) and is
/// not active: [`Registry::stage`] makes one, [`Registry::promote`] activates it. Only the
/// registry makes one, so only a checked revision can be promoted.
#[derive(Clone, Debug)]
pub struct Staged {
    bundle: Arc<Bundle>,
    tests_passed: usize,
}

impl Staged {
    /// The candidate, to evaluate.
    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    /// Golden cases it passed.
    pub fn tests_passed(&self) -> usize {
        self.tests_passed
    }
}

/// A failed load: the step, and why. The active revision (if any) is unchanged.
#[derive(Clone, Debug, thiserror::Error)]
#[error("loading {path} failed at {step:?}: {error}")]
pub struct LoadFailure {
    /// What was being loaded.
    pub path: PathBuf,
    /// The step that failed.
    pub step: LoadStep,
    /// Why.
    pub error: BundleError,
}

/// What a successful load did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activation {
    /// The bundle's name.
    pub bundle: String,
    /// The revision now active.
    pub revision: String,
    /// The active revision's digest (two archives that name the same revision may differ).
    pub digest: String,
    /// The revision it replaced, if any.
    pub previous: Option<String>,
    /// Golden cases run.
    pub tests_passed: usize,
    /// The revision loaded was already active (same digest): nothing was activated, no
    /// event sent, the history left alone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// Why a registry operation on a name failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No bundle of that name is loaded.
    #[error("no bundle named `{0}` is loaded")]
    NotFound(String),
    /// There is no earlier revision to roll back to.
    #[error("bundle `{0}` has no earlier revision to roll back to")]
    NoPrevious(String),
    /// The revision asked for is not among those kept.
    #[error("bundle `{bundle}` has no kept revision `{revision}`")]
    RevisionNotKept {
        /// The bundle.
        bundle: String,
        /// The revision asked for.
        revision: String,
    },
    /// The host could not run the evaluation: no verdict, retry later.
    #[error(transparent)]
    Overloaded(#[from] crate::bundle::Overloaded),
}

struct Slot {
    active: ArcSwap<Bundle>,
    /// Older revisions, newest first (the active one is not in here).
    history: Mutex<VecDeque<Arc<Bundle>>>,
    /// When the active revision became active, in milliseconds since the Unix epoch.
    activated_at_ms: std::sync::atomic::AtomicU64,
    /// The last load of this bundle that failed, if any since it was loaded.
    last_failure: Mutex<Option<FailureRecord>>,
}

/// What the registry did or failed to do, as it happens: [`Registry::subscribe`]. Metrics,
/// health and alerts consume these.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A revision became active.
    Activated {
        /// The bundle.
        bundle: String,
        /// The revision now active.
        revision: String,
        /// The revision it replaced.
        previous: Option<String>,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A load failed; the active revision (if any) is unchanged.
    LoadFailed {
        /// The bundle, when known (the name is read from the manifest: a load that fails
        /// before it, or whose path is not a loaded bundle's, has none).
        bundle: Option<String>,
        /// The failure.
        failure: FailureRecord,
    },
    /// An earlier revision became active again.
    RolledBack {
        /// The bundle.
        bundle: String,
        /// The revision that was active.
        from: String,
        /// The revision active now.
        to: String,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A bundle was removed.
    Unloaded {
        /// The bundle.
        bundle: String,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
}

/// A failed load, as kept in status and sent in events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureRecord {
    /// What was being loaded.
    pub path: PathBuf,
    /// The step that failed.
    pub step: LoadStep,
    /// Why, in words.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The status of one loaded bundle.
#[derive(Clone, Debug, Serialize)]
pub struct BundleStatus {
    /// Name.
    pub name: String,
    /// Active revision.
    pub revision: String,
    /// Its content digest.
    pub digest: String,
    /// Earlier revisions kept, newest first.
    pub history: Vec<String>,
    /// Number of rules.
    pub rules: usize,
    /// When the active revision became active, in milliseconds since the Unix epoch.
    pub activated_at_ms: u64,
    /// The last failed load of this bundle since it was first loaded, if any (a later
    /// successful load does not clear it: compare `at_ms` with `activated_at_ms`).
    pub last_failure: Option<FailureRecord>,
}

/// Loaded bundles by name. Share it behind an `Arc`; every method takes `&self`.
pub struct Registry {
    engine: Engine,
    config: RegistryConfig,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// One lock per bundle name, held from the end of reading to activation, so two
    /// revisions of one bundle cannot race to activation while other bundles load freely.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    events: tokio::sync::broadcast::Sender<RegistryEvent>,
}

impl Registry {
    /// An empty registry over `engine`.
    pub fn new(engine: Engine, config: RegistryConfig) -> Registry {
        Registry {
            engine,
            config,
            slots: RwLock::new(BTreeMap::new()),
            loading: Mutex::default(),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A receiver of every [`RegistryEvent`] from now on. A receiver that falls more than
    /// 1024 events behind loses the oldest (and is told how many).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: RegistryEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Records a failed load: in the status of the bundle it names (or that was loaded from
    /// the same path), and as an event.
    fn failed(&self, failure: LoadFailure, name: Option<&str>) -> LoadFailure {
        let record = FailureRecord {
            path: failure.path.clone(),
            step: failure.step,
            reason: failure.error.to_string(),
            at_ms: now_ms(),
        };
        let bundle = {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            let slot = match name {
                Some(n) => slots.get_key_value(n),
                None => slots
                    .iter()
                    .find(|(_, s)| s.active.load().origin() == failure.path),
            };
            slot.map(|(name, slot)| {
                *slot.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
                name.clone()
            })
        };
        tracing::warn!(path = %failure.path.display(), step = ?failure.step, bundle = ?bundle, "bundle not loaded: {}", failure.error);
        self.emit(RegistryEvent::LoadFailed {
            bundle: bundle.or(name.map(str::to_owned)),
            failure: record,
        });
        failure
    }

    /// Loads a bundle directory or archive: read, verify, compile, test, then activate it
    /// atomically. Evaluations in flight finish on the revision they started with.
    pub async fn load(&self, path: &Path) -> Result<Activation, LoadFailure> {
        self.load_inner(path, None).await
    }

    /// [`Registry::load`], refusing (at the read step) a bundle not named `name`: an upload
    /// to one bundle's address cannot replace another.
    pub async fn load_as(&self, path: &Path, name: &str) -> Result<Activation, LoadFailure> {
        self.load_inner(path, Some(name)).await
    }

    /// Reads, verifies and compiles `path` (off the async workers), refusing a bundle not
    /// named `expected`. A failure comes with the bundle it concerns, when known.
    async fn read(
        &self,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<Bundle, (LoadFailure, Option<String>)> {
        let engine = self.engine.clone();
        let options = self.config.load.clone();
        let owned = path.to_owned();
        let loaded = tokio::task::spawn_blocking(move || Bundle::load(&engine, &owned, &options))
            .await
            .map_err(|e| {
                fail(
                    path,
                    BundleError::Source(crate::bundle::SourceError::invalid(format!(
                        "the load task failed: {e}"
                    ))),
                )
            })
            .and_then(|r| r.map_err(|e| fail(path, e)));
        let bundle = loaded.map_err(|f| (f, None))?;
        let name = bundle.name();
        if let Some(expected) = expected
            && expected != name
        {
            let error = BundleError::Manifest(crate::bundle::ManifestError::new(
                None,
                "bundle.name",
                format!("the bundle is named `{name}`, not `{expected}`"),
            ));
            return Err((fail(path, error), Some(expected.to_owned())));
        }
        Ok(bundle)
    }

    /// Runs the bundle's golden cases (when the registry is configured to): how many passed,
    /// or the failure.
    async fn test(&self, path: &Path, bundle: &Bundle) -> Result<usize, LoadFailure> {
        if !self.config.run_tests {
            return Ok(0);
        }
        let report = bundle.run_tests().await;
        let n = report.cases.len();
        report.into_result().map(|_| n).map_err(|e| fail(path, e))
    }

    async fn load_inner(
        &self,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<Activation, LoadFailure> {
        let bundle = self
            .read(path, expected)
            .await
            .map_err(|(f, name)| self.failed(f, name.as_deref()))?;
        let lock = self.name_lock(bundle.name());
        let _serial = lock.lock().await;
        if let Some(unchanged) = self.unchanged(&bundle) {
            // The active revision again (a re-upload, a poll, a touched file): nothing to do.
            return Ok(unchanged);
        }
        let tests_passed = self
            .test(path, &bundle)
            .await
            .map_err(|f| self.failed(f, Some(bundle.name())))?;
        Ok(self.activate_checked(Arc::new(bundle), tests_passed))
    }

    /// The activation to report when `bundle` is the active revision already.
    fn unchanged(&self, bundle: &Bundle) -> Option<Activation> {
        let active = self.get(bundle.name()).ok()?;
        (active.digest() == bundle.digest()).then(|| Activation {
            bundle: bundle.name().to_owned(),
            revision: active.revision().to_owned(),
            digest: active.digest().to_owned(),
            previous: Some(active.revision().to_owned()),
            tests_passed: 0,
            unchanged: true,
        })
    }

    /// Activates a bundle that passed the gate, and says so.
    fn activate_checked(&self, bundle: Arc<Bundle>, tests_passed: usize) -> Activation {
        let previous = self.activate(bundle.clone());
        let activation = Activation {
            bundle: bundle.name().to_owned(),
            revision: bundle.revision().to_owned(),
            digest: bundle.digest().to_owned(),
            previous,
            tests_passed,
            unchanged: false,
        };
        tracing::info!(bundle = %activation.bundle, revision = %activation.revision, previous = ?activation.previous, "bundle activated");
        self.emit(RegistryEvent::Activated {
            bundle: activation.bundle.clone(),
            revision: activation.revision.clone(),
            previous: activation.previous.clone(),
            at_ms: now_ms(),
        });
        activation
    }

    /// Puts a bundle through the whole gate [`Registry::load_as`] does (read, verify,
    /// compile, golden cases) without activating it: a candidate to evaluate beside the
    /// active revision (replay, shadow traffic) and to [`promote`](Registry::promote) later.
    /// A failure is the caller's to report: unlike a failed load, it is not kept in the
    /// bundle's status nor sent as an event (nothing that serves was touched).
    pub async fn stage(&self, path: &Path, name: &str) -> Result<Staged, LoadFailure> {
        let bundle = self.read(path, Some(name)).await.map_err(|(f, _)| f)?;
        let tests_passed = self.test(path, &bundle).await?;
        Ok(Staged {
            bundle: Arc::new(bundle),
            tests_passed,
        })
    }

    /// Makes a staged revision active, atomically, as a load would (the revision it replaces
    /// is kept for rollback, an [`RegistryEvent::Activated`] is sent). Evaluations in flight
    /// finish on the revision they started with.
    pub async fn promote(&self, staged: &Staged) -> Activation {
        let lock = self.name_lock(staged.bundle.name());
        let _serial = lock.lock().await;
        match self.unchanged(&staged.bundle) {
            Some(unchanged) => unchanged,
            None => self.activate_checked(staged.bundle.clone(), staged.tests_passed),
        }
    }

    fn activate(&self, bundle: Arc<Bundle>) -> Option<String> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        match slots.get(bundle.name()) {
            None => {
                slots.insert(
                    bundle.name().to_owned(),
                    Arc::new(Slot {
                        active: ArcSwap::new(bundle),
                        history: Mutex::new(VecDeque::new()),
                        activated_at_ms: now_ms().into(),
                        last_failure: Mutex::new(None),
                    }),
                );
                None
            }
            Some(slot) => {
                let old = slot.active.swap(bundle);
                slot.activated_at_ms
                    .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                let revision = old.revision().to_owned();
                let mut history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
                history.push_front(old);
                history.truncate(self.config.keep_revisions.saturating_sub(1));
                Some(revision)
            }
        }
    }

    /// Makes the previous revision active again; the rolled-back one is dropped.
    pub fn rollback(&self, name: &str) -> Result<Activation, RegistryError> {
        let slot = self.slot(name)?;
        let mut history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
        let previous = history
            .pop_front()
            .ok_or_else(|| RegistryError::NoPrevious(name.to_owned()))?;
        let revision = previous.revision().to_owned();
        let digest = previous.digest().to_owned();
        let old = slot.active.swap(previous);
        slot.activated_at_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(bundle = name, from = old.revision(), to = %revision, "bundle rolled back");
        self.emit(RegistryEvent::RolledBack {
            bundle: name.to_owned(),
            from: old.revision().to_owned(),
            to: revision.clone(),
            at_ms: now_ms(),
        });
        Ok(Activation {
            bundle: name.to_owned(),
            revision,
            digest,
            previous: Some(old.revision().to_owned()),
            tests_passed: 0,
            unchanged: false,
        })
    }

    /// Makes the kept revision `revision` active again; the revisions newer than it are
    /// dropped from the history (the one active until now is kept, newest first).
    pub fn rollback_to(&self, name: &str, revision: &str) -> Result<Activation, RegistryError> {
        let slot = self.slot(name)?;
        let mut history = slot.history.lock().unwrap_or_else(|e| e.into_inner());
        let at = history
            .iter()
            .position(|b| b.revision() == revision)
            .ok_or_else(|| RegistryError::RevisionNotKept {
                bundle: name.to_owned(),
                revision: revision.to_owned(),
            })?;
        let target = history.remove(at).expect("found above");
        let digest = target.digest().to_owned();
        history.drain(..at);
        let old = slot.active.swap(target);
        history.push_front(old.clone());
        history.truncate(self.config.keep_revisions.saturating_sub(1));
        slot.activated_at_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            bundle = name,
            from = old.revision(),
            to = revision,
            "bundle rolled back"
        );
        self.emit(RegistryEvent::RolledBack {
            bundle: name.to_owned(),
            from: old.revision().to_owned(),
            to: revision.to_owned(),
            at_ms: now_ms(),
        });
        Ok(Activation {
            bundle: name.to_owned(),
            revision: revision.to_owned(),
            digest,
            previous: Some(old.revision().to_owned()),
            tests_passed: 0,
            unchanged: false,
        })
    }

    /// [`Registry::rollback_to`] `to`, only while `from` is the active revision: serialized
    /// with loads of the bundle, so a revision activated meanwhile is never undone by a
    /// rollback meant for the one before it. `None` when `from` is no longer active.
    pub async fn rollback_from(
        &self,
        name: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Activation>, RegistryError> {
        let lock = self.name_lock(name);
        let _serial = lock.lock().await;
        if self.get(name)?.revision() != from {
            return Ok(None);
        }
        self.rollback_to(name, to).map(Some)
    }

    /// A kept revision of `name`: the active one or one in its history.
    pub fn get_revision(&self, name: &str, revision: &str) -> Result<Arc<Bundle>, RegistryError> {
        let slot = self.slot(name)?;
        let active = slot.active.load_full();
        if active.revision() == revision {
            return Ok(active);
        }
        slot.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|b| b.revision() == revision)
            .cloned()
            .ok_or_else(|| RegistryError::RevisionNotKept {
                bundle: name.to_owned(),
                revision: revision.to_owned(),
            })
    }

    /// Removes a bundle and its history.
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        self.emit(RegistryEvent::Unloaded {
            bundle: name.to_owned(),
            at_ms: now_ms(),
        });
        Ok(())
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, RegistryError> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// The active revision of `name`. Holding it keeps that revision alive.
    pub fn get(&self, name: &str) -> Result<Arc<Bundle>, RegistryError> {
        Ok(self.slot(name)?.active.load_full())
    }

    /// Evaluates the active revision of `name`.
    pub async fn evaluate(&self, name: &str, input: &Input) -> Result<BundleResult, RegistryError> {
        let bundle = self.get(name)?;
        Ok(bundle.evaluate(input).await?)
    }

    /// Every loaded bundle.
    pub fn status(&self) -> Vec<BundleStatus> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .map(|(name, slot)| slot_status(name, slot, &slot.active.load()))
            .collect()
    }

    /// The status of `name` and the active revision it describes (read together, so a swap
    /// in between cannot pair one revision's status with another's bundle).
    pub fn status_of(&self, name: &str) -> Result<(BundleStatus, Arc<Bundle>), RegistryError> {
        let slot = self.slot(name)?;
        let active = slot.active.load_full();
        Ok((slot_status(name, &slot, &active), active))
    }

    #[cfg(feature = "watch")]
    /// Watches `dir`: every bundle directory or `.tar.gz` directly inside it is loaded now and
    /// again whenever it changes (after `settle` without further changes). Load failures are
    /// logged and leave the active revision serving. Stops when the returned handle drops.
    /// Call it within a tokio runtime (the watcher runs as a task on it).
    pub fn watch(
        self: &Arc<Self>,
        dir: &Path,
        settle: std::time::Duration,
    ) -> Result<Watcher, notify::Error> {
        use notify::Watcher as _;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        let root = dir.to_owned();
        let mut watcher = notify::recommended_watcher({
            let root = root.clone();
            let tx = tx.clone();
            move |event: notify::Result<notify::Event>| {
                // Reads are not changes: loading a bundle opens its files, and inotify
                // reports that.
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    for path in event.paths {
                        if let Some(top) = top_entry(&root, &path) {
                            let _ = tx.send(top);
                        }
                    }
                }
            }
        })?;
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        for entry in std::fs::read_dir(dir).map_err(notify::Error::io)?.flatten() {
            let _ = tx.send(entry.path());
        }
        let registry = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut pending: BTreeMap<PathBuf, tokio::time::Instant> = BTreeMap::new();
            loop {
                let next_due = pending.values().min().copied();
                tokio::select! {
                    path = rx.recv() => match path {
                        Some(p) => { pending.insert(p, tokio::time::Instant::now() + settle); }
                        None => break,
                    },
                    _ = async { tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)).await }, if next_due.is_some() => {
                        let now = tokio::time::Instant::now();
                        let due: Vec<PathBuf> = pending.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
                        for path in due {
                            pending.remove(&path);
                            let Some(registry) = registry.upgrade() else { return };
                            if !is_bundle_candidate(&path) {
                                continue;
                            }
                            // Failures are logged and sent as events by `load`.
                            if let Ok(a) = registry.load(&path).await {
                                tracing::info!(path = %path.display(), bundle = %a.bundle, revision = %a.revision, "watched bundle loaded");
                            }
                        }
                    }
                }
            }
        });
        Ok(Watcher {
            _watcher: watcher,
            task,
        })
    }
}

fn slot_status(name: &str, slot: &Slot, active: &Bundle) -> BundleStatus {
    BundleStatus {
        name: name.to_owned(),
        revision: active.revision().to_owned(),
        digest: active.digest().to_owned(),
        history: slot
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| b.revision().to_owned())
            .collect(),
        rules: active.rules().len(),
        activated_at_ms: slot
            .activated_at_ms
            .load(std::sync::atomic::Ordering::Relaxed),
        last_failure: slot
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    }
}

/// The entry directly under `root` that `path` is in.
#[cfg(feature = "watch")]
fn top_entry(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let first = rel.components().next()?;
    Some(root.join(first))
}

#[cfg(feature = "watch")]
fn is_bundle_candidate(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.starts_with('.') {
        return false;
    }
    path.join(crate::bundle::MANIFEST_FILE).is_file()
        || (path.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")))
}

/// Stops watching when dropped.
#[cfg(feature = "watch")]
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "watch")]
impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
