//! Bundles by name, hot-swappable: each name's active revision sits behind an atomic pointer;
//! a new revision is read, verified, compiled and tested before it replaces the active one,
//! and a failure at any step leaves the active one serving.

use crate::bundle::{Bundle, BundleError, BundleResult, LoadOptions, LoadStep};
use crate::engine::Engine;
use crate::input::Input;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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
    /// The revision it replaced, if any.
    pub previous: Option<String>,
    /// Golden cases run.
    pub tests_passed: usize,
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
    /// The host could not run the evaluation: no verdict, retry later.
    #[error(transparent)]
    Overloaded(#[from] crate::bundle::Overloaded),
}

struct Slot {
    active: ArcSwap<Bundle>,
    /// Older revisions, newest first (the active one is not in here).
    history: Mutex<VecDeque<Arc<Bundle>>>,
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
}

/// Loaded bundles by name. Share it behind an `Arc`; every method takes `&self`.
pub struct Registry {
    engine: Engine,
    config: RegistryConfig,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Serializes loads so two revisions of one bundle cannot race to activation.
    loading: tokio::sync::Mutex<()>,
}

impl Registry {
    /// An empty registry over `engine`.
    pub fn new(engine: Engine, config: RegistryConfig) -> Registry {
        Registry {
            engine,
            config,
            slots: RwLock::new(BTreeMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads a bundle directory or archive: read, verify, compile, test, then activate it
    /// atomically. Evaluations in flight finish on the revision they started with.
    pub async fn load(&self, path: &Path) -> Result<Activation, LoadFailure> {
        let _serial = self.loading.lock().await;
        let fail = |error: BundleError| LoadFailure {
            path: path.to_owned(),
            step: error.step(),
            error,
        };
        let engine = self.engine.clone();
        let options = self.config.load.clone();
        let owned = path.to_owned();
        let bundle = tokio::task::spawn_blocking(move || Bundle::load(&engine, &owned, &options))
            .await
            .map_err(|e| {
                fail(BundleError::Source(crate::bundle::SourceError::invalid(
                    format!("the load task failed: {e}"),
                )))
            })?
            .map_err(fail)?;
        let tests_passed = if self.config.run_tests {
            let report = bundle.run_tests().await;
            let n = report.cases.len();
            report.into_result().map_err(fail)?;
            n
        } else {
            0
        };
        let bundle = Arc::new(bundle);
        let previous = self.activate(bundle.clone());
        let activation = Activation {
            bundle: bundle.name().to_owned(),
            revision: bundle.revision().to_owned(),
            previous,
            tests_passed,
        };
        tracing::info!(bundle = %activation.bundle, revision = %activation.revision, previous = ?activation.previous, "bundle activated");
        Ok(activation)
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
                    }),
                );
                None
            }
            Some(slot) => {
                let old = slot.active.swap(bundle);
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
        let old = slot.active.swap(previous);
        tracing::warn!(bundle = name, from = old.revision(), to = %revision, "bundle rolled back");
        Ok(Activation {
            bundle: name.to_owned(),
            revision,
            previous: Some(old.revision().to_owned()),
            tests_passed: 0,
        })
    }

    /// Removes a bundle and its history.
    pub fn unload(&self, name: &str) -> Result<(), RegistryError> {
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
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
            .map(|(name, slot)| {
                let active = slot.active.load();
                BundleStatus {
                    name: name.clone(),
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
                }
            })
            .collect()
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
                if let Ok(event) = event {
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
                            match registry.load(&path).await {
                                Ok(a) => tracing::info!(path = %path.display(), bundle = %a.bundle, revision = %a.revision, "watched bundle loaded"),
                                Err(e) => tracing::error!(path = %path.display(), step = ?e.step, "watched bundle not loaded: {}", e.error),
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
