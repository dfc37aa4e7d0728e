//! The decision log (audit trail): every decision in an embedded SQLite file, written by one
//! thread in batched transactions (WAL). `async` mode queues (bounded; a full queue drops
//! and counts, never blocks or grows); `sync` mode commits, with fsync, before the response
//! is sent, so an acknowledged decision survives `kill -9`. Input fields are masked per
//! bundle before they are queued; the entry records which.
//!
//! Each transaction also adds its decisions to per-minute rollups (counts by bundle,
//! revision, rule, verdict and error kind; time and fuel sums and maxima; a latency
//! histogram), so every decision is aggregated before its detail can be deleted. Between
//! batches the same thread deletes detail older than `retention_days` and rollups older
//! than `rollup_days`, a few thousand rows at a time: retention never holds the writer for
//! longer than one small delete.
//!
//! [`LogReader`] answers the queries (`GET /v1/decisions`, `/v1/decisions/stats`, and
//! `rulebox decisions` on a file).

mod stats;

pub use stats::{GroupBy, LATENCY_BOUNDS_US, StatsQuery};

use crate::config::{DecisionLogConfig, LogMode, Mask, MaskAction};
use rulebox::BundleResult;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One rule's part of a decision, as logged and rolled up.
#[derive(Serialize)]
struct RuleRow {
    #[serde(serialize_with = "str_of")]
    rule: Arc<str>,
    verdict: &'static str,
    error_kind: Option<&'static str>,
    fuel: u64,
    wall_us: u64,
    cached: bool,
}

fn str_of<S: serde::Serializer>(s: &Arc<str>, to: S) -> Result<S::Ok, S::Error> {
    to.serialize_str(s)
}

/// One decision as logged.
struct Entry {
    id: String,
    at_ms: u64,
    bundle: String,
    revision: String,
    request_id: Option<String>,
    subject: String,
    verdict: &'static str,
    reasons: Vec<String>,
    input: String,
    masked: Vec<String>,
    rules: Vec<RuleRow>,
    wall_us: u64,
}

struct Queued {
    entry: Entry,
    ack: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// A sync-mode entry on its way to disk: the decision may be acknowledged once this is Ok.
pub struct Commit(tokio::sync::oneshot::Receiver<Result<(), String>>);

impl Commit {
    /// Waits for the transaction that holds the entry.
    pub async fn wait(self) -> Result<(), LogError> {
        self.0
            .await
            .map_err(|_| LogError::Write("the writer thread is gone".into()))?
            .map_err(LogError::Write)
    }
}

/// The log's counters, as `GET /v1/server/stats` shows them.
#[derive(Debug, Default, Serialize)]
pub struct LogStats {
    /// Entries committed.
    pub written: u64,
    /// Entries dropped because the queue was full (async mode; in sync mode the request is
    /// answered 503 instead).
    pub dropped: u64,
    /// Entries whose write failed.
    pub failed: u64,
    /// Entries waiting for the writer now.
    pub queued: u64,
    /// Detail rows deleted by retention (after they were rolled up).
    pub pruned: u64,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
    pruned: AtomicU64,
}

/// Why a decision could not be logged.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The queue is full (sync mode: the decision is not acknowledged).
    #[error("the decision log's queue is full ({0} entries)")]
    Full(usize),
    /// The writer failed or is gone.
    #[error("the decision log could not write: {0}")]
    Write(String),
}

/// The decision log.
pub struct DecisionLog {
    sender: SyncSender<Queued>,
    mode: LogMode,
    queue: usize,
    masks: std::collections::BTreeMap<String, Vec<Mask>>,
    counters: Arc<Counters>,
    /// For queries (WAL lets it read while the writer writes).
    reader: LogReader,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    bundle TEXT NOT NULL,
    revision TEXT NOT NULL,
    request_id TEXT,
    subject TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reasons TEXT NOT NULL,
    input TEXT NOT NULL,
    masked TEXT NOT NULL,
    rules TEXT NOT NULL,
    wall_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_bundle_at ON decisions (bundle, at_ms);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at_ms);
-- One row per minute and (bundle, revision, rule, verdict, error kind); rule '' is the
-- bundle's final decision. h0..h15 count wall times by LATENCY_BOUNDS_US.
CREATE TABLE IF NOT EXISTS rollups (
    minute INTEGER NOT NULL,
    bundle TEXT NOT NULL,
    revision TEXT NOT NULL,
    rule TEXT NOT NULL,
    verdict TEXT NOT NULL,
    error_kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    wall_us_sum INTEGER NOT NULL,
    wall_us_max INTEGER NOT NULL,
    fuel_sum INTEGER NOT NULL,
    fuel_max INTEGER NOT NULL,
    h0 INTEGER NOT NULL, h1 INTEGER NOT NULL, h2 INTEGER NOT NULL, h3 INTEGER NOT NULL,
    h4 INTEGER NOT NULL, h5 INTEGER NOT NULL, h6 INTEGER NOT NULL, h7 INTEGER NOT NULL,
    h8 INTEGER NOT NULL, h9 INTEGER NOT NULL, h10 INTEGER NOT NULL, h11 INTEGER NOT NULL,
    h12 INTEGER NOT NULL, h13 INTEGER NOT NULL, h14 INTEGER NOT NULL, h15 INTEGER NOT NULL,
    UNIQUE (minute, bundle, revision, rule, verdict, error_kind)
);
";

fn open(path: &Path, mode: LogMode) -> Result<Connection, String> {
    let at = |e: rusqlite::Error| format!("decision_log.path {}: {e}", path.display());
    let conn = Connection::open(path).map_err(at)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(at)?;
    // Before the first table exists, so that retention can hand pages back to the file
    // system (`incremental_vacuum`); a no-op on an existing file.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(at)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(at)?;
    // FULL: a commit is on disk when it returns (sync mode promises that). NORMAL in WAL
    // mode survives a process crash, which is what async mode needs.
    let sync = if mode == LogMode::Sync {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync).map_err(at)?;
    Ok(conn)
}

/// How long rows are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Detail rows older than this are deleted (they are already rolled up).
    pub detail_ms: u64,
    /// Rollups older than this are deleted.
    pub rollup_ms: u64,
}

impl Retention {
    /// The retention `config` asks for.
    pub fn of(config: &DecisionLogConfig) -> Retention {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        Retention {
            detail_ms: config.retention_days as u64 * DAY_MS,
            rollup_ms: config.rollup_days as u64 * DAY_MS,
        }
    }
}

/// Rows deleted per retention step: small enough that a step holds the writer for a few
/// milliseconds (measured: `benches/decision_log.rs`).
pub const RETAIN_BATCH: usize = 500;

/// Deletes one batch of expired rows (detail first, then rollups) and hands the freed
/// pages back; returns how many detail and rollup rows went.
fn retain_step(
    conn: &Connection,
    retention: Retention,
    now_ms: u64,
) -> rusqlite::Result<(usize, usize)> {
    let cutoff = |keep: u64| now_ms.saturating_sub(keep) as i64;
    let detail = conn.execute(
        "DELETE FROM decisions WHERE rowid IN (SELECT rowid FROM decisions WHERE at_ms < ?1 LIMIT ?2)",
        rusqlite::params![cutoff(retention.detail_ms), RETAIN_BATCH as i64],
    )?;
    let rollups = if detail < RETAIN_BATCH {
        conn.execute(
            "DELETE FROM rollups WHERE rowid IN (SELECT rowid FROM rollups WHERE minute < ?1 LIMIT ?2)",
            rusqlite::params![cutoff(retention.rollup_ms) / 60_000, RETAIN_BATCH as i64],
        )?
    } else {
        0
    };
    if detail + rollups > 0 {
        run_to_end(conn, "PRAGMA incremental_vacuum(512)")?;
    }
    Ok((detail, rollups))
}

/// Steps a statement until it is done: `incremental_vacuum` frees one page per step, and
/// rusqlite's `execute_batch` and `query_row` step once.
fn run_to_end(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Applies `retention` to the file at `path` until nothing is left to delete (what the
/// server's writer does a batch at a time), then hands the free pages back. Returns the
/// detail and rollup rows deleted. For `rulebox decisions compact` and tests.
pub fn compact(path: &Path, retention: Retention, now_ms: u64) -> Result<(u64, u64), String> {
    // Checked read-only first: any other file (another SQLite database, a typo) is refused
    // untouched, not given our tables and switched to WAL.
    drop(LogReader::open(path)?);
    let conn = open(path, LogMode::Async)?;
    let (mut detail, mut rollups) = (0u64, 0u64);
    loop {
        let (d, r) = retain_step(&conn, retention, now_ms).map_err(|e| e.to_string())?;
        detail += d as u64;
        rollups += r as u64;
        if d < RETAIN_BATCH && r < RETAIN_BATCH {
            break;
        }
    }
    run_to_end(&conn, "PRAGMA incremental_vacuum").map_err(|e| e.to_string())?;
    run_to_end(&conn, "PRAGMA wal_checkpoint(TRUNCATE)").map_err(|e| e.to_string())?;
    Ok((detail, rollups))
}

impl DecisionLog {
    /// Opens (or creates) the file and starts the writer thread. The thread ends when the
    /// log is dropped, after writing what is queued.
    pub fn open(config: &DecisionLogConfig) -> Result<Option<DecisionLog>, String> {
        let Some(path) = &config.path else {
            return Ok(None);
        };
        let writer = open(path, config.mode)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| format!("decision_log.path {}: {e}", path.display()))?;
        let reader = LogReader {
            conn: Mutex::new(open(path, config.mode)?),
        };
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let job = Writer {
            batch: config.batch,
            gather: match config.mode {
                LogMode::Async => ASYNC_GATHER,
                LogMode::Sync => Duration::ZERO,
            },
            retention: Retention::of(config),
            every: Duration::from_millis(config.retention_check_ms),
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || job.run(writer, receiver))
            .map_err(|e| format!("decision log: cannot start its writer: {e}"))?;
        Ok(Some(DecisionLog {
            sender,
            mode: config.mode,
            queue: config.queue,
            masks: config.mask.clone(),
            counters,
            reader,
        }))
    }

    /// Queues a decision made at `at_ms` for the log. In sync mode it returns the commit to
    /// await before the decision is acknowledged (several queued at once share a
    /// transaction). A full queue is counted as a drop in async mode; in sync mode it is the
    /// caller's error to answer.
    pub fn enqueue(
        &self,
        id: &str,
        at_ms: u64,
        result: &BundleResult,
        input: &Value,
        request_id: Option<&str>,
        subject: &str,
    ) -> Result<Option<Commit>, LogError> {
        let (input, masked) = self.mask(&result.bundle, input);
        let rules = result
            .rules
            .iter()
            .map(|e| {
                let (verdict, error_kind) = match &e.result {
                    Ok(d) => (d.verdict.as_str(), None),
                    Err(err) => ("error", Some(err.kind().as_str())),
                };
                RuleRow {
                    rule: e.rule.clone(),
                    verdict,
                    error_kind,
                    fuel: e.metering.fuel,
                    wall_us: e.metering.wall_us,
                    cached: e.cached,
                }
            })
            .collect();
        let entry = Entry {
            id: id.to_owned(),
            at_ms,
            bundle: result.bundle.clone(),
            revision: result.revision.clone(),
            request_id: request_id.map(str::to_owned),
            subject: subject.to_owned(),
            verdict: result.verdict.as_str(),
            reasons: result.reasons.clone(),
            input: input.to_string(),
            masked,
            rules,
            wall_us: result.wall_us,
        };
        let (ack, commit) = match self.mode {
            LogMode::Sync => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(Commit(rx)))
            }
            LogMode::Async => (None, None),
        };
        match self.sender.try_send(Queued { entry, ack }) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                Ok(commit)
            }
            Err(TrySendError::Full(_)) => {
                if self.mode == LogMode::Async {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(LogError::Full(self.queue))
            }
            Err(TrySendError::Disconnected(_)) => {
                // Counted, so a dead writer shows in the metrics (async mode would otherwise
                // lose every decision with only a debug line).
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(LogError::Write("the writer thread is gone".into()))
            }
        }
    }

    /// Whether a failure to log must fail the request (sync mode) or only be counted.
    pub fn is_sync(&self) -> bool {
        self.mode == LogMode::Sync
    }

    /// The input with the bundle's masks (and `"*"`'s) applied, and the pointers masked;
    /// the input itself, uncopied, when there is nothing to mask.
    fn mask<'v>(&self, bundle: &str, input: &'v Value) -> (Cow<'v, Value>, Vec<String>) {
        let masks: Vec<&Mask> = ["*", bundle]
            .iter()
            .filter_map(|b| self.masks.get(*b))
            .flatten()
            .collect();
        if masks.is_empty() {
            return (Cow::Borrowed(input), Vec::new());
        }
        let mut out = input.clone();
        let mut masked = Vec::new();
        for m in masks {
            if let Some(v) = out.pointer_mut(&m.pointer) {
                *v = match m.action {
                    MaskAction::Erase => Value::String("<erased>".into()),
                    MaskAction::Hash => Value::String(format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(v.to_string().as_bytes()))
                    )),
                };
                masked.push(m.pointer.clone());
            }
        }
        (Cow::Owned(out), masked)
    }

    /// The counters.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            pruned: c.pruned.load(Ordering::Relaxed),
        }
    }

    /// The queries.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }
}

/// Queries on a decision-log file: the server's (while it writes), or one opened read-only.
pub struct LogReader {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "rowid, id, at_ms, bundle, revision, request_id, subject, verdict, reasons, input, masked, rules, wall_us";

impl LogReader {
    /// Opens an existing log file read-only.
    pub fn open(path: &Path) -> Result<LogReader, String> {
        let at = |e: rusqlite::Error| format!("{}: {e}", path.display());
        if !path.is_file() {
            return Err(format!("{}: no such decision-log file", path.display()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(at)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(at)?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('decisions', 'rollups')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| format!("{}: not a decision log: {e}", path.display()))?;
        if tables != 2 {
            return Err(format!(
                "{}: not a decision log (no `decisions` and `rollups` tables)",
                path.display()
            ));
        }
        Ok(LogReader {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decisions, newest first, matching `filter`; with the cursor for the next page.
    pub fn query(&self, filter: &Filter) -> Result<(Vec<Value>, Option<i64>), String> {
        let mut sql = format!("SELECT {COLUMNS} FROM decisions WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut push = |clause: &str, v: rusqlite::types::Value| {
            sql.push_str(clause);
            args.push(v);
        };
        if let Some(b) = &filter.bundle {
            push(" AND bundle = ?", b.clone().into());
        }
        if let Some(v) = &filter.verdict {
            push(" AND verdict = ?", v.clone().into());
        }
        if let Some(s) = filter.since_ms {
            push(" AND at_ms >= ?", (s as i64).into());
        }
        if let Some(u) = filter.until_ms {
            push(" AND at_ms < ?", (u as i64).into());
        }
        if let Some(c) = filter.cursor {
            push(" AND rowid < ?", c.into());
        }
        // A rule and an error kind: the same rule of the decision must match both.
        match (&filter.rule, &filter.error_kind) {
            (None, None) => {}
            (rule, kind) => {
                sql.push_str(" AND EXISTS (SELECT 1 FROM json_each(decisions.rules) r WHERE 1=1");
                if let Some(rule) = rule {
                    sql.push_str(" AND json_extract(r.value, '$.rule') = ?");
                    args.push(rule.clone().into());
                }
                if let Some(kind) = kind {
                    sql.push_str(" AND json_extract(r.value, '$.error_kind') = ?");
                    args.push(kind.clone().into());
                }
                sql.push(')');
            }
        }
        scope_clause(&mut sql, &mut args, filter.scope.as_deref());
        sql.push_str(" ORDER BY rowid DESC LIMIT ?");
        args.push((filter.limit as i64).into());
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| {
                Ok((r.get::<_, i64>(0)?, row_json(r)?))
            })
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let next = (rows.len() == filter.limit)
            .then(|| rows.last().map(|(rowid, _)| *rowid))
            .flatten();
        Ok((rows.into_iter().map(|(_, v)| v).collect(), next))
    }

    /// One decision by id.
    pub fn get(&self, id: &str) -> Result<Option<Value>, String> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM decisions WHERE id = ?"),
                [id],
                row_json,
            )
            .optional()
            .map_err(|e| e.to_string())
    }

    /// How many detail and rollup rows the file holds.
    pub fn rows(&self) -> Result<(u64, u64), String> {
        let conn = self.conn();
        let count = |table: &str| {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
        };
        Ok((count("decisions")?, count("rollups")?))
    }

    /// Aggregates over time from the rollups (see [`StatsQuery`]).
    pub fn stats(&self, query: &StatsQuery) -> Result<Value, String> {
        stats::run(&self.conn(), query)
    }
}

/// `AND bundle IN (...)` for a scoped caller (no bundles: nothing).
fn scope_clause(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    scope: Option<&[String]>,
) {
    match scope {
        None => {}
        Some([]) => sql.push_str(" AND 0"),
        Some(scope) => {
            sql.push_str(" AND bundle IN (");
            sql.push_str(&vec!["?"; scope.len()].join(","));
            sql.push(')');
            args.extend(scope.iter().map(|b| b.clone().into()));
        }
    }
}

/// What `GET /v1/decisions` asks for.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this bundle.
    pub bundle: Option<String>,
    /// Only this final verdict.
    pub verdict: Option<String>,
    /// Only decisions in which this rule took part.
    pub rule: Option<String>,
    /// Only decisions in which a rule (`rule`, if given) failed with this error kind.
    pub error_kind: Option<String>,
    /// From this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Before this time.
    pub until_ms: Option<u64>,
    /// Older than this page cursor.
    pub cursor: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Only these bundles (the caller's scope).
    pub scope: Option<Vec<String>>,
}

fn row_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let parse = |s: String| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null);
    Ok(json!({
        "decision_id": r.get::<_, String>(1)?,
        "at_ms": r.get::<_, i64>(2)?,
        "bundle": r.get::<_, String>(3)?,
        "revision": r.get::<_, String>(4)?,
        "request_id": r.get::<_, Option<String>>(5)?,
        "subject": r.get::<_, String>(6)?,
        "verdict": r.get::<_, String>(7)?,
        "reasons": parse(r.get(8)?),
        "input": parse(r.get(9)?),
        "masked": parse(r.get(10)?),
        "rules": parse(r.get(11)?),
        "wall_us": r.get::<_, i64>(12)?,
    }))
}

/// How long the async writer gathers entries before it commits: fewer, larger
/// transactions and, above all, no wake-up of the writer per decision. Sync mode never
/// waits: its callers are waiting for the commit.
const ASYNC_GATHER: Duration = Duration::from_millis(20);

/// The writer thread's settings.
struct Writer {
    batch: usize,
    /// How long to gather entries for a batch (zero in sync mode).
    gather: Duration,
    retention: Retention,
    /// How often retention looks for expired rows when the last look found none.
    every: Duration,
    counters: Arc<Counters>,
}

impl Writer {
    /// Takes what is queued (up to `batch`), writes it in one transaction, acks; between
    /// batches, deletes one batch of expired rows when retention is due.
    fn run(self, conn: Connection, receiver: Receiver<Queued>) {
        let c = &self.counters;
        let mut due = Instant::now();
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(first) => {
                    let mut items = vec![first];
                    // Asleep, not waiting on the queue: a sender then never has a
                    // receiver to wake (a futex wake per decision costs more than the
                    // insert).
                    if !self.gather.is_zero() {
                        std::thread::sleep(self.gather);
                    }
                    while items.len() < self.batch {
                        match receiver.try_recv() {
                            Ok(q) => items.push(q),
                            Err(_) => break,
                        }
                    }
                    c.queued.fetch_sub(items.len() as u64, Ordering::Relaxed);
                    let result = write(&conn, &items);
                    let n = items.len() as u64;
                    match &result {
                        Ok(()) => c.written.fetch_add(n, Ordering::Relaxed),
                        Err(e) => {
                            tracing::error!("decision log: {n} entries not written: {e}");
                            c.failed.fetch_add(n, Ordering::Relaxed)
                        }
                    };
                    for q in items {
                        if let Some(ack) = q.ack {
                            let _ = ack.send(result.clone());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= due {
                due = match retain_step(&conn, self.retention, now_ms()) {
                    Ok((detail, rollups)) => {
                        c.pruned.fetch_add(detail as u64, Ordering::Relaxed);
                        if detail == RETAIN_BATCH || rollups == RETAIN_BATCH {
                            // More to delete: the next batch after the next write.
                            Instant::now()
                        } else {
                            Instant::now() + self.every
                        }
                    }
                    Err(e) => {
                        tracing::warn!("decision log: retention failed (retried later): {e}");
                        Instant::now() + self.every
                    }
                };
            }
        }
    }
}

/// One rollup row's running totals.
#[derive(Default)]
struct Agg {
    count: u64,
    cached: u64,
    wall_sum: u64,
    wall_max: u64,
    fuel_sum: u64,
    fuel_max: u64,
    hist: [u64; stats::BUCKETS],
}

impl Agg {
    fn add(&mut self, wall_us: u64, fuel: u64, cached: bool) {
        self.count += 1;
        self.cached += cached as u64;
        self.wall_sum += wall_us;
        self.wall_max = self.wall_max.max(wall_us);
        self.fuel_sum += fuel;
        self.fuel_max = self.fuel_max.max(fuel);
        self.hist[stats::bucket(wall_us)] += 1;
    }
}

type Key<'a> = (i64, &'a str, &'a str, &'a str, &'a str, &'a str);

fn write(conn: &Connection, items: &[Queued]) -> Result<(), String> {
    let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
    let mut rollups: HashMap<Key<'_>, Agg> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO decisions (id, at_ms, bundle, revision, request_id, subject, verdict, reasons, input, masked, rules, wall_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(|e| e.to_string())?;
        for q in items {
            let e = &q.entry;
            let inserted = stmt
                .execute(rusqlite::params![
                    e.id,
                    e.at_ms as i64,
                    e.bundle,
                    e.revision,
                    e.request_id,
                    e.subject,
                    e.verdict,
                    serde_json::to_string(&e.reasons).unwrap_or_default(),
                    e.input,
                    serde_json::to_string(&e.masked).unwrap_or_default(),
                    serde_json::to_string(&e.rules).unwrap_or_default(),
                    e.wall_us as i64,
                ])
                .map_err(|e| e.to_string())?;
            if inserted == 0 {
                continue; // a replayed id: already counted
            }
            let minute = (e.at_ms / 60_000) as i64;
            let key = |rule, verdict, kind| (minute, &*e.bundle, &*e.revision, rule, verdict, kind);
            let fuel: u64 = e.rules.iter().map(|r| r.fuel).sum();
            let all_cached = !e.rules.is_empty() && e.rules.iter().all(|r| r.cached);
            rollups
                .entry(key("", e.verdict, ""))
                .or_default()
                .add(e.wall_us, fuel, all_cached);
            for r in &e.rules {
                rollups
                    .entry(key(&r.rule, r.verdict, r.error_kind.unwrap_or("")))
                    .or_default()
                    .add(r.wall_us, r.fuel, r.cached);
            }
        }
    }
    stats::upsert(&tx, rollups).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

/// A point in time as the queries take it: ms since the epoch (`1763800000000`), RFC 3339
/// (`2026-11-22T10:00:00Z`), or a duration ago (`15m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        // Under 10^11 ms is before 1973: almost surely seconds, which would silently select
        // everything since 1970.
        if ms < 100_000_000_000 {
            return Err(format!(
                "`{s}` as ms since the epoch is before 1973: give milliseconds ({s}000 if it is seconds), RFC 3339, or a duration ago (15m)"
            ));
        }
        return Ok(ms);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| format!("`{s}` is before 1970"));
    }
    humantime::parse_duration(s)
        .map(|d| now_ms.saturating_sub(d.as_millis() as u64))
        .map_err(|_| {
            format!("`{s}` is not a time: give ms since the epoch, RFC 3339, or a duration ago (15m, 2h, 7d)")
        })
}

/// A width of time (`5m`, `1h`), in ms.
pub fn parse_interval(s: &str) -> Result<u64, String> {
    humantime::parse_duration(s.trim())
        .map(|d| d.as_millis() as u64)
        .map_err(|e| format!("`{s}` is not a duration (5m, 1h): {e}"))
}

/// A logged decision (a row as [`LogReader::query`] returns it) as a replay takes it; `None`
/// for a row that lacks what a replay needs.
pub fn recorded(row: &Value) -> Option<rulebox::replay::Recorded> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Some(rulebox::replay::Recorded {
        id: text(&row["decision_id"])?,
        input: row.get("input").filter(|v| v.is_object())?.clone(),
        masked: row["masked"]
            .as_array()
            .map(|a| a.iter().filter_map(text).collect())
            .unwrap_or_default(),
        verdict: text(&row["verdict"])?,
        rules: row["rules"]
            .as_array()?
            .iter()
            .map(|r| {
                Some(rulebox::replay::RecordedRule {
                    rule: text(&r["rule"])?,
                    outcome: text(&r["verdict"])?,
                    fuel: r["fuel"].as_u64().unwrap_or(0),
                    wall_us: r["wall_us"].as_u64().unwrap_or(0),
                    cached: r["cached"].as_bool().unwrap_or(false),
                })
            })
            .collect::<Option<Vec<_>>>()?,
    })
}

/// Reads the decisions `filter` selects, newest first, page by page (at most `limit` in
/// all), handing each to `each` as a replay's record; rows that cannot be replayed are
/// counted and skipped. Returns (handed, skipped).
pub fn for_each_recorded(
    reader: &LogReader,
    filter: &Filter,
    limit: usize,
    mut each: impl FnMut(&rulebox::replay::Recorded),
) -> Result<(u64, u64), String> {
    let (mut handed, mut skipped) = (0u64, 0u64);
    let mut page = filter.clone();
    while (handed + skipped) < limit as u64 {
        page.limit = (limit - (handed + skipped) as usize).min(500);
        let (rows, next) = reader.query(&page)?;
        for row in &rows {
            match recorded(row) {
                Some(rec) => {
                    each(&rec);
                    handed += 1;
                }
                None => skipped += 1,
            }
        }
        match next {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    Ok((handed, skipped))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_are_ms_rfc3339_or_a_duration_ago_and_seconds_are_refused() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("1763800000000", now), Ok(1_763_800_000_000));
        assert_eq!(
            parse_time("2026-11-22T10:00:00Z", now),
            Ok(1_795_341_600_000)
        );
        assert_eq!(parse_time("15m", now), Ok(now - 900_000));
        let e = parse_time("1763800000", now).unwrap_err();
        assert!(e.contains("1763800000000 if it is seconds"), "{e}");
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .contains("not a time")
        );
    }
}
