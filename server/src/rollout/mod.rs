//! Safe rollout: a candidate revision judged beside the active one before it serves, and the
//! active one judged after.
//!
//! - **Shadow**: a candidate staged through the same gate as an upload (read, verify,
//!   compile, golden cases) but not served. A sample of live decisions goes, after the
//!   answer is built, to a bounded queue (full: dropped and counted, never waited for) that
//!   one worker thread drains, evaluating each input on the candidate without its result
//!   cache. What the candidate would have decided is counted (`rulebox::replay`'s report),
//!   never served, cached or logged as a decision. The candidate archive and its report are
//!   kept under `bundles.state_dir/shadow/NAME/`, so a restart resumes the shadow.
//! - **Replay jobs**: a candidate evaluated on the decision log's recorded decisions, in the
//!   background, with progress.
//! - **Watch**: after each activation, the new revision's rule error rate and timeout ratio,
//!   and the health score, against the previous revision's; past a limit, the previous
//!   revision is restored.

use crate::config::{PromotionGuard, WatchConfig};
use crate::metrics::Metrics;
use rulebox::replay::{Recorded, Replay, ReplayOptions, ReplayReport};
use rulebox::{BundleResult, Input, Staged};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod api;
pub(crate) use api::{
    cancel_replay, delete_shadow, get_replay, get_shadow, promote, put_shadow, start_replay,
};

/// How often the shadow worker publishes and writes the reports that changed.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Changed decisions a shadow report lists (by decision id); the rest are only counted.
const SHADOW_CHANGES: usize = 100;
/// The largest `shadow.json` read back at start.
const MAX_KEPT_BYTES: u64 = 16 << 20;
/// Replay jobs kept for `GET .../replay/{id}` (the oldest finished ones go first).
const KEPT_JOBS: usize = 16;
/// Rollout events kept per server for the bundles' status.
const KEPT_EVENTS: usize = 100;
/// The candidate archive inside a shadow's directory.
const CANDIDATE_FILE: &str = "candidate.tar.gz";
/// The report inside a shadow's directory.
const KEPT_FILE: &str = "shadow.json";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What is kept of a shadow beside its candidate archive.
#[derive(Serialize, Deserialize)]
struct Kept {
    revision: String,
    digest: String,
    since_ms: u64,
    sample: f64,
    by: String,
    sampled: u64,
    dropped: u64,
    report: ReplayReport,
}

/// A bundle's shadow candidate and what it would have decided.
pub(crate) struct Shadow {
    pub(crate) candidate: Staged,
    since_ms: u64,
    sample: f64,
    by: String,
    /// The report as the worker builds it: only the worker (and a graceful stop) locks it,
    /// and never while it evaluates.
    working: Mutex<ReplayReport>,
    /// The report as readers see it, published by the worker every [`FLUSH_EVERY`]: a
    /// reader never waits on the worker, which runs at the lowest priority and may be kept
    /// off the cores for a while.
    published: arc_swap::ArcSwap<ReplayReport>,
    /// Held while the report is written and while a closed shadow's files are removed.
    writing: Mutex<()>,
    sampled: AtomicU64,
    dropped: AtomicU64,
    /// Changed since last published and written.
    dirty: AtomicBool,
    /// Promoted or discarded: nothing more is evaluated or written.
    closed: AtomicBool,
    dir: PathBuf,
}

fn shadow_options() -> ReplayOptions {
    ReplayOptions {
        max_changes: SHADOW_CHANGES,
        max_not_replayable: SHADOW_CHANGES,
        // The live input is unmasked: a change names its decision id, whose logged (masked)
        // record the decision log has.
        keep_inputs: false,
    }
}

impl Shadow {
    fn new(
        candidate: Staged,
        (since_ms, sample, by): (u64, f64, String),
        report: ReplayReport,
        (sampled, dropped): (u64, u64),
        dir: PathBuf,
    ) -> Shadow {
        Shadow {
            candidate,
            since_ms,
            sample,
            by,
            published: arc_swap::ArcSwap::from_pointee(report.clone()),
            working: Mutex::new(report),
            writing: Mutex::new(()),
            sampled: AtomicU64::new(sampled),
            dropped: AtomicU64::new(dropped),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            dir,
        }
    }

    /// The report as last published.
    pub(crate) fn report(&self) -> Arc<ReplayReport> {
        self.published.load_full()
    }

    /// Evaluates a sampled decision on the candidate: its verdict, or `host-error`.
    fn evaluate(&self, rec: &Recorded, input: &Input) -> &'static str {
        if self.closed.load(Ordering::Relaxed) {
            return "closed";
        }
        let mut one = Replay::new(self.candidate.bundle(), shadow_options());
        let verdict = one.add_input(rec, input);
        lock(&self.working).merge(one.finish(), &shadow_options());
        self.dirty.store(true, Ordering::Relaxed);
        verdict.map_or("host-error", |v| v.as_str())
    }

    /// Publishes the working report and writes it, if it changed.
    fn publish(&self) {
        // One publisher at a time (the worker, a graceful stop): the last to write is the
        // last to have read the working report.
        let _writing = lock(&self.writing);
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let report = lock(&self.working).clone();
        self.published.store(Arc::new(report.clone()));
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let kept = self.kept_with(report);
        if let Err(e) = write_atomic(&self.dir.join(KEPT_FILE), &kept) {
            tracing::warn!(bundle = %kept.report.bundle, "shadow report not kept: {e}");
        }
    }

    fn kept(&self) -> Kept {
        self.kept_with(ReplayReport::clone(&self.report()))
    }

    fn kept_with(&self, report: ReplayReport) -> Kept {
        Kept {
            revision: self.candidate.bundle().revision().to_owned(),
            digest: self.candidate.bundle().digest().to_owned(),
            since_ms: self.since_ms,
            sample: self.sample,
            by: self.by.clone(),
            sampled: self.sampled.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            report,
        }
    }

    /// What `GET /v1/bundles/{name}/shadow` shows.
    pub(crate) fn to_json(&self, active: Option<&str>, guard: Option<&PromotionGuard>) -> Value {
        let report = self.report();
        let report = &*report;
        let bundle = self.candidate.bundle();
        json!({
            "bundle": report.bundle,
            "candidate": {
                "revision": bundle.revision(),
                "digest": bundle.digest(),
                "tests_passed": self.candidate.tests_passed(),
            },
            "active_revision": active,
            "since_ms": self.since_ms,
            "sample": self.sample,
            "by": self.by,
            "sampled": self.sampled.load(Ordering::Relaxed),
            "evaluated": report.replayed,
            "changed": report.changed,
            "to_allow": to_allow(report),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "host_errors": report.host_errors,
            "verdicts": report.verdicts,
            "rules": report.rules,
            "changes": report.changes,
            "guard": guard.map(|g| match judge_guard(g, report) {
                Ok(()) => json!({"passes": true}),
                Err(why) => json!({"passes": false, "why": why}),
            }),
        })
    }
}

/// Decisions whose verdict would become `allow` from anything else.
fn to_allow(report: &ReplayReport) -> u64 {
    report
        .verdicts
        .0
        .iter()
        .filter(|(from, _)| *from != "allow")
        .filter_map(|(_, to)| to.get("allow"))
        .sum()
}

/// Whether `report` passes the promotion guard, and if not why, with its numbers.
pub(crate) fn judge_guard(guard: &PromotionGuard, report: &ReplayReport) -> Result<(), String> {
    let n = report.replayed;
    if n < guard.min_samples {
        return Err(format!(
            "only {n} sampled decisions were evaluated on the candidate; the guard needs {}",
            guard.min_samples
        ));
    }
    let pct = |k: u64| 100.0 * k as f64 / n.max(1) as f64;
    let allow = to_allow(report);
    if pct(allow) > guard.max_to_allow_pct {
        return Err(format!(
            "{allow} of {n} sampled decisions ({:.2}%) would become allow, over the guard's {}%",
            pct(allow),
            guard.max_to_allow_pct
        ));
    }
    if pct(report.changed) > guard.max_changed_pct {
        return Err(format!(
            "{} of {n} sampled decisions ({:.2}%) would change verdict, over the guard's {}%",
            report.changed,
            pct(report.changed),
            guard.max_changed_pct
        ));
    }
    Ok(())
}

fn write_atomic(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A sampled live decision on its way to the shadow worker.
struct Sampled {
    shadow: Arc<Shadow>,
    /// What was decided (its input is in `input`).
    rec: Recorded,
    /// The request's own input (shared, not copied).
    input: Input,
    /// Its size as JSON text, counted against the queue's byte budget.
    bytes: u64,
}

/// Where a decision's sample falls: the same spread whatever the traffic's shape.
fn chosen(seq: u64, share: f64) -> bool {
    // splitmix64: consecutive sequence numbers spread evenly over [0, 1).
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// A revision under watch after its activation.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Watch {
    pub(crate) revision: String,
    pub(crate) previous: String,
    pub(crate) started_ms: u64,
    pub(crate) until_ms: u64,
    /// The previous revision in the health window before the activation.
    pub(crate) baseline: Baseline,
    /// Rule evaluations on the new revision since.
    pub(crate) evaluations: u64,
    pub(crate) errors: u64,
    pub(crate) timeouts: u64,
}

/// What the previous revision showed.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Baseline {
    pub(crate) evaluations: u64,
    pub(crate) error_rate: f64,
    pub(crate) timeout_ratio: f64,
    pub(crate) health: u32,
}

/// A watched revision that crossed a limit.
pub(crate) struct Trip {
    pub(crate) bundle: String,
    pub(crate) watch: Watch,
    pub(crate) signal: &'static str,
    pub(crate) value: f64,
    pub(crate) baseline: f64,
    pub(crate) limit: f64,
}

/// A background replay.
pub(crate) struct ReplayJob {
    pub(crate) id: String,
    bundle: String,
    revision: String,
    digest: String,
    by: String,
    started_ms: u64,
    limit: usize,
    finished_ms: AtomicU64,
    report: Mutex<ReplayReport>,
    state: Mutex<JobState>,
    /// Asked to stop: the decisions still to come are skipped.
    cancel: AtomicBool,
}

/// Where a replay job is.
#[derive(Clone, PartialEq)]
enum JobState {
    Running,
    Done,
    Cancelled,
    Failed(String),
}

impl ReplayJob {
    pub(crate) fn to_json(&self) -> Value {
        let report = lock(&self.report).clone();
        let (state, error) = match lock(&self.state).clone() {
            JobState::Running => ("running", None),
            JobState::Done => ("done", None),
            JobState::Cancelled => ("cancelled", None),
            JobState::Failed(why) => ("failed", Some(why)),
        };
        let finished = self.finished_ms.load(Ordering::Relaxed);
        json!({
            "id": self.id,
            "bundle": self.bundle,
            "candidate": {"revision": self.revision, "digest": self.digest},
            "by": self.by,
            "state": state,
            "error": error,
            "started_ms": self.started_ms,
            "finished_ms": (finished > 0).then_some(finished),
            "limit": self.limit,
            "processed": report.replayed + report.not_replayable + report.host_errors,
            "report": report,
        })
    }

    fn running(&self) -> bool {
        *lock(&self.state) == JobState::Running
    }

    /// Asks a running job to stop; false when it is not running.
    pub(crate) fn cancel(&self) -> bool {
        let running = self.running();
        if running {
            self.cancel.store(true, Ordering::Relaxed);
        }
        running
    }
}

/// Shadows, replay jobs and watches of one server.
pub(crate) struct Rollout {
    /// `bundles.state_dir/shadow`, where shadows are kept (none: no shadows).
    dir: Option<PathBuf>,
    /// Read on every decision: a pointer load when there are none.
    shadows: arc_swap::ArcSwap<HashMap<String, Arc<Shadow>>>,
    /// Serializes changes to `shadows`.
    changing: Mutex<()>,
    queue: Option<SyncSender<Sampled>>,
    /// JSON bytes of the inputs queued, and their budget: a few large inputs must not hold
    /// as much memory as the queue's count allows.
    queued_bytes: Arc<AtomicU64>,
    max_queued_bytes: u64,
    worker: Option<std::thread::JoinHandle<()>>,
    seq: AtomicU64,
    watches: Mutex<HashMap<String, Watch>>,
    pub(crate) any_watch: AtomicBool,
    jobs: Mutex<VecDeque<Arc<ReplayJob>>>,
    events: Mutex<VecDeque<Value>>,
    metrics: Option<Arc<Metrics>>,
}

impl Drop for Rollout {
    fn drop(&mut self) {
        // The worker drains what is queued, writes every report, and ends.
        self.queue.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Rollout {
    /// Shadows kept under `state_dir` (none: shadows are refused, and no worker starts), a
    /// queue of `queue` sampled decisions, counted in `metrics` when given.
    pub(crate) fn new(
        state_dir: Option<&Path>,
        (queue, max_queued_bytes): (usize, usize),
        metrics: Option<Arc<Metrics>>,
    ) -> Rollout {
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let (tx, worker) = match state_dir {
            None => (None, None),
            Some(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(queue);
                let (metrics, bytes) = (metrics.clone(), queued_bytes.clone());
                let worker = std::thread::Builder::new()
                    .name("rulebox-shadow".into())
                    .spawn(move || work(rx, metrics, bytes))
                    .map_err(|e| tracing::error!("the shadow worker did not start: {e}"))
                    .ok();
                (worker.is_some().then_some(tx), worker)
            }
        };
        Rollout {
            dir: state_dir.map(|d| d.join("shadow")),
            shadows: Default::default(),
            changing: Mutex::new(()),
            queue: tx,
            queued_bytes,
            max_queued_bytes: max_queued_bytes as u64,
            worker,
            seq: AtomicU64::new(0),
            watches: Mutex::default(),
            any_watch: AtomicBool::new(false),
            jobs: Mutex::default(),
            events: Mutex::default(),
            metrics,
        }
    }

    /// The shadow of `bundle`, if it has one.
    pub(crate) fn shadow(&self, bundle: &str) -> Option<Arc<Shadow>> {
        self.shadows.load().get(bundle).cloned()
    }

    /// Every shadow, by bundle.
    pub(crate) fn shadows(&self) -> Vec<Arc<Shadow>> {
        self.shadows.load().values().cloned().collect()
    }

    /// On the request path, after a decision on `bundle`'s active revision: hands it to the
    /// shadow worker when it falls in the sample. Never waits.
    pub(crate) fn sample(&self, result: &BundleResult, input: &Input, decision_id: &str) {
        let shadows = self.shadows.load();
        if shadows.is_empty() {
            return;
        }
        let Some(shadow) = shadows.get(result.bundle.as_str()) else {
            return;
        };
        if !chosen(self.seq.fetch_add(1, Ordering::Relaxed), shadow.sample) {
            return;
        }
        let Some(queue) = &self.queue else { return };
        shadow.sampled.fetch_add(1, Ordering::Relaxed);
        let bytes = input.text().len() as u64;
        let within = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                (q + bytes <= self.max_queued_bytes).then_some(q + bytes)
            })
            .is_ok();
        let sent = within && {
            let job = Sampled {
                shadow: shadow.clone(),
                rec: Recorded::from_result(decision_id, Value::Null, result),
                input: input.clone(),
                bytes,
            };
            match queue.try_send(job) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
                    false
                }
            }
        };
        if !sent {
            shadow.dropped.fetch_add(1, Ordering::Relaxed);
            shadow.dirty.store(true, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.shadow_dropped(&result.bundle);
            }
        }
    }

    fn shadow_dir(&self, bundle: &str) -> Result<PathBuf, String> {
        let dir = self.dir.as_ref().ok_or(
            "shadows are kept across restarts under bundles.state_dir: set it to shadow a candidate",
        )?;
        Ok(dir.join(bundle))
    }

    /// Where an uploaded candidate is written before it is staged (the directory shadows
    /// are kept in, so it is moved into place without a copy).
    pub(crate) fn staging_file(&self) -> Result<tempfile::NamedTempFile, String> {
        let dir = self.dir.as_ref().ok_or(
            "shadows are kept across restarts under bundles.state_dir: set it to shadow a candidate",
        )?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        tempfile::Builder::new()
            .prefix(".upload-")
            .suffix(".tar.gz")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot stage the upload in {}: {e}", dir.display()))
    }

    /// Makes `candidate` (staged from the archive at `archive`) the shadow of its bundle,
    /// replacing any other: the archive and an empty report are on disk before it returns.
    /// Returns the revision it replaced.
    pub(crate) fn start_shadow(
        &self,
        candidate: Staged,
        archive: tempfile::NamedTempFile,
        sample: f64,
        by: &str,
    ) -> Result<Option<String>, String> {
        let bundle = candidate.bundle().name().to_owned();
        let dir = self.shadow_dir(&bundle)?;
        let _changing = lock(&self.changing);
        let replaced = self.close_shadow(&bundle);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        archive
            .persist(dir.join(CANDIDATE_FILE))
            .map_err(|e| format!("cannot keep the candidate in {}: {e}", dir.display()))?;
        let report = ReplayReport {
            bundle: bundle.clone(),
            revision: candidate.bundle().revision().to_owned(),
            ..Default::default()
        };
        let shadow = Arc::new(Shadow::new(
            candidate,
            (crate::decisions::now_ms(), sample, by.to_owned()),
            report,
            (0, 0),
            dir,
        ));
        write_atomic(&shadow.dir.join(KEPT_FILE), &shadow.kept())?;
        self.insert(shadow);
        Ok(replaced.map(|s| s.candidate.bundle().revision().to_owned()))
    }

    fn insert(&self, shadow: Arc<Shadow>) {
        let mut map = HashMap::clone(&self.shadows.load());
        map.insert(shadow.candidate.bundle().name().to_owned(), shadow);
        self.shadows.store(Arc::new(map));
    }

    /// Takes `bundle`'s shadow out (call with `changing` held): nothing more is evaluated or
    /// written for it.
    fn close_shadow(&self, bundle: &str) -> Option<Arc<Shadow>> {
        let mut map = HashMap::clone(&self.shadows.load());
        let shadow = map.remove(bundle)?;
        self.shadows.store(Arc::new(map));
        shadow.closed.store(true, Ordering::Relaxed);
        Some(shadow)
    }

    /// Ends `bundle`'s shadow (promoted or discarded) and deletes what was kept of it.
    pub(crate) fn end_shadow(&self, bundle: &str) -> Option<Arc<Shadow>> {
        let _changing = lock(&self.changing);
        let shadow = self.close_shadow(bundle)?;
        {
            // Not while the worker writes the report (it checks `closed` first, under this lock).
            let _writing = lock(&shadow.writing);
            if let Err(e) = std::fs::remove_dir_all(&shadow.dir) {
                tracing::warn!(
                    bundle,
                    "shadow files not removed from {}: {e}",
                    shadow.dir.display()
                );
            }
        }
        Some(shadow)
    }

    /// Publishes and writes every shadow's report now (a graceful stop does it too).
    pub(crate) fn flush(&self) {
        for shadow in self.shadows() {
            shadow.publish();
        }
    }

    /// The shadows kept under `state_dir`, by bundle directory: each candidate staged again
    /// through `stage` (the same gate), checked to be the archive that was kept, and its
    /// report resumed. A shadow that cannot be restored is left on disk and named in the
    /// result.
    pub(crate) async fn restore<F, Fut>(&self, stage: F) -> Vec<(String, Result<String, String>)>
    where
        F: Fn(PathBuf, String) -> Fut,
        Fut: std::future::Future<Output = Result<Staged, String>>,
    {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".upload-") {
                // An upload that was being staged when the process stopped.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let path = entry.path();
            let restored = async {
                let kept = read_kept(&path.join(KEPT_FILE))?;
                let candidate = stage(path.join(CANDIDATE_FILE), name.clone()).await?;
                if candidate.bundle().digest() != kept.digest {
                    return Err(format!(
                        "the kept archive's digest is {}, not the {} that was shadowed",
                        candidate.bundle().digest(),
                        kept.digest
                    ));
                }
                let revision = kept.revision.clone();
                let shadow = Arc::new(Shadow::new(
                    candidate,
                    (kept.since_ms, kept.sample.clamp(0.0, 1.0), kept.by),
                    kept.report,
                    (kept.sampled, kept.dropped),
                    path.clone(),
                ));
                let _changing = lock(&self.changing);
                self.insert(shadow);
                Ok(revision)
            }
            .await;
            match &restored {
                Ok(revision) => tracing::info!(bundle = %name, %revision, "shadow restored"),
                Err(e) => {
                    tracing::warn!(bundle = %name, "shadow not restored from {}: {e}", path.display())
                }
            }
            out.push((name, restored));
        }
        out
    }

    /// Starts watching `revision` of `bundle`, which replaced `previous`.
    pub(crate) fn watch(
        &self,
        bundle: &str,
        revision: &str,
        previous: &str,
        baseline: Baseline,
        config: &WatchConfig,
    ) {
        let now = crate::decisions::now_ms();
        let watch = Watch {
            revision: revision.to_owned(),
            previous: previous.to_owned(),
            started_ms: now,
            until_ms: now + config.window_s * 1000,
            baseline,
            evaluations: 0,
            errors: 0,
            timeouts: 0,
        };
        tracing::info!(
            bundle,
            revision,
            previous,
            window_s = config.window_s,
            "watching the new revision"
        );
        let mut watches = lock(&self.watches);
        watches.insert(bundle.to_owned(), watch);
        self.any_watch.store(true, Ordering::Relaxed);
    }

    /// Stops watching `bundle` (rolled back by hand, unloaded).
    pub(crate) fn unwatch(&self, bundle: &str) {
        let mut watches = lock(&self.watches);
        watches.remove(bundle);
        self.any_watch.store(!watches.is_empty(), Ordering::Relaxed);
    }

    /// The watch on `bundle`, if any.
    pub(crate) fn watch_of(&self, bundle: &str) -> Option<Watch> {
        lock(&self.watches).get(bundle).cloned()
    }

    /// On the request path: counts a decision of a watched revision.
    pub(crate) fn observe(&self, result: &BundleResult) {
        if !self.any_watch.load(Ordering::Relaxed) {
            return;
        }
        let mut watches = lock(&self.watches);
        let Some(w) = watches.get_mut(result.bundle.as_str()) else {
            return;
        };
        if w.revision != result.revision {
            return;
        }
        for e in &result.rules {
            w.evaluations += 1;
            if let Err(err) = &e.result {
                w.errors += 1;
                if matches!(
                    err.kind(),
                    rulebox::ErrorKind::Timeout | rulebox::ErrorKind::FuelExhausted
                ) {
                    w.timeouts += 1;
                }
            }
        }
    }

    /// Judges every watch at `now` (health score `health`): the revisions that crossed a
    /// limit, taken off the watch; those whose window ended are let go.
    pub(crate) fn judge(&self, now: u64, health: u32, config: &WatchConfig) -> Vec<Trip> {
        if !self.any_watch.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut watches = lock(&self.watches);
        let mut trips = Vec::new();
        watches.retain(|bundle, w| {
            if let Some((signal, value, baseline, limit)) = crossed(w, health, config) {
                trips.push(Trip {
                    bundle: bundle.clone(),
                    watch: w.clone(),
                    signal,
                    value,
                    baseline,
                    limit,
                });
                return false;
            }
            if now >= w.until_ms {
                tracing::info!(bundle = %bundle, revision = %w.revision, evaluations = w.evaluations, errors = w.errors, timeouts = w.timeouts, "the new revision passed its watch");
                return false;
            }
            true
        });
        self.any_watch.store(!watches.is_empty(), Ordering::Relaxed);
        trips
    }

    /// Keeps a rollout event for the bundles' status.
    pub(crate) fn event(&self, event: Value) {
        let mut events = lock(&self.events);
        events.push_front(event);
        events.truncate(KEPT_EVENTS);
    }

    /// The recent rollout events of `bundle`, newest first.
    pub(crate) fn events_of(&self, bundle: &str) -> Vec<Value> {
        lock(&self.events)
            .iter()
            .filter(|e| e["bundle"] == bundle)
            .cloned()
            .collect()
    }

    /// Registers a replay job, unless one is running.
    pub(crate) fn new_job(
        &self,
        candidate: &rulebox::Bundle,
        by: &str,
        limit: usize,
    ) -> Result<Arc<ReplayJob>, String> {
        let mut jobs = lock(&self.jobs);
        if let Some(running) = jobs.iter().find(|j| j.running()) {
            return Err(format!(
                "replay {} is still running: one at a time (they share the CPU with live traffic)",
                running.id
            ));
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| e.to_string())?;
        let job = Arc::new(ReplayJob {
            id: hex::encode(id),
            bundle: candidate.name().to_owned(),
            revision: candidate.revision().to_owned(),
            digest: candidate.digest().to_owned(),
            by: by.to_owned(),
            started_ms: crate::decisions::now_ms(),
            limit,
            finished_ms: AtomicU64::new(0),
            report: Mutex::new(ReplayReport {
                bundle: candidate.name().to_owned(),
                revision: candidate.revision().to_owned(),
                ..Default::default()
            }),
            state: Mutex::new(JobState::Running),
            cancel: AtomicBool::new(false),
        });
        jobs.push_back(job.clone());
        while jobs.len() > KEPT_JOBS {
            match jobs.iter().position(|j| !j.running()) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        Ok(job)
    }

    /// The replay job `id` of `bundle`.
    pub(crate) fn job(&self, bundle: &str, id: &str) -> Option<Arc<ReplayJob>> {
        lock(&self.jobs)
            .iter()
            .find(|j| j.id == id && j.bundle == bundle)
            .cloned()
    }
}

/// Runs a replay job to its end (blocking: call it off the async workers): `records` hands
/// each recorded decision to the closure it is given.
pub(crate) fn run_job(
    job: &ReplayJob,
    candidate: &rulebox::Bundle,
    records: impl FnOnce(&mut dyn FnMut(&Recorded)) -> Result<(u64, u64), String>,
) {
    let mut add = |rec: &Recorded| {
        if job.cancel.load(Ordering::Relaxed) {
            return;
        }
        // Evaluated outside the lock: a reader of the progress never waits on a rule.
        let mut one = Replay::new(candidate, ReplayOptions::default());
        one.add(rec);
        lock(&job.report).merge(one.finish(), &ReplayOptions::default());
    };
    let outcome = records(&mut add);
    job.finished_ms
        .store(crate::decisions::now_ms(), Ordering::Relaxed);
    *lock(&job.state) = match outcome {
        Ok(_) if job.cancel.load(Ordering::Relaxed) => JobState::Cancelled,
        Ok(_) => JobState::Done,
        Err(e) => JobState::Failed(e),
    };
}

/// The first limit `w` crossed: (signal, value, baseline, limit).
fn crossed(w: &Watch, health: u32, c: &WatchConfig) -> Option<(&'static str, f64, f64, f64)> {
    if w.evaluations < c.min_evaluations.max(1) {
        return None;
    }
    let n = w.evaluations as f64;
    let b = &w.baseline;
    // Timeouts first: they are errors too, and the more telling name.
    let checks = [
        (
            "timeout-ratio",
            w.timeouts as f64 / n,
            b.timeout_ratio,
            c.max_timeout_ratio_increase,
        ),
        (
            "error-rate",
            w.errors as f64 / n,
            b.error_rate,
            c.max_error_rate_increase,
        ),
    ];
    for (signal, value, baseline, limit) in checks {
        if value - baseline > limit {
            return Some((signal, value, baseline, limit));
        }
    }
    let drop = b.health.saturating_sub(health);
    (drop > c.max_health_drop).then_some((
        "health-score",
        health as f64,
        b.health as f64,
        c.max_health_drop as f64,
    ))
}

fn read_kept(path: &Path) -> Result<Kept, String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(at)?.len();
    if size > MAX_KEPT_BYTES {
        return Err(format!(
            "{} is {size} bytes, over the {MAX_KEPT_BYTES} a shadow report may be",
            path.display()
        ));
    }
    let text = std::fs::read(path).map_err(at)?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Moves the calling thread to Linux's `SCHED_IDLE` class: it runs on a core only when no
/// ordinary thread wants it, and an ordinary thread that wakes takes the core at once. The
/// shadow worker then never delays an answer by more than a context switch; when the cores
/// stay busy its queue fills and drops, as it is meant to.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is the
        // calling thread, the only one changed.
        let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if done != 0 {
            tracing::warn!(
                "the shadow worker keeps normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The shadow worker: evaluates what is queued, writes the reports that changed every
/// [`FLUSH_EVERY`], and all of them when the queue closes.
fn work(rx: Receiver<Sampled>, metrics: Option<Arc<Metrics>>, queued_bytes: Arc<AtomicU64>) {
    lower_priority();
    let mut seen: Vec<Arc<Shadow>> = Vec::new();
    let mut flushed = Instant::now();
    loop {
        let done = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(job) => {
                let to = job.shadow.evaluate(&job.rec, &job.input);
                queued_bytes.fetch_sub(job.bytes, Ordering::Relaxed);
                if to != "closed" {
                    if let Some(m) = &metrics {
                        m.shadow_decision(
                            job.shadow.candidate.bundle().name(),
                            &job.rec.verdict,
                            to,
                        );
                    }
                    if !seen.iter().any(|s| Arc::ptr_eq(s, &job.shadow)) {
                        seen.push(job.shadow.clone());
                    }
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if done || flushed.elapsed() >= FLUSH_EVERY {
            seen.retain(|s| !s.closed.load(Ordering::Relaxed));
            for s in &seen {
                s.publish();
            }
            flushed = Instant::now();
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_worker_thread_alone_runs_when_the_cores_are_idle() {
        let worker = std::thread::spawn(|| {
            super::lower_priority();
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(worker, libc::SCHED_IDLE);
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }

    #[test]
    fn the_sample_takes_its_share_of_consecutive_decisions() {
        for share in [0.0, 0.1, 0.5, 1.0] {
            let n = (0..100_000).filter(|&i| chosen(i, share)).count();
            let expected = share * 100_000.0;
            assert!(
                (n as f64 - expected).abs() <= 1_000.0,
                "{share}: {n} of 100000"
            );
        }
        assert_eq!((0..1000).filter(|&i| chosen(i, 1.0)).count(), 1000);
        assert_eq!((0..1000).filter(|&i| chosen(i, 0.0)).count(), 0);
    }
}
