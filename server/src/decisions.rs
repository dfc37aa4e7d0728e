//! The decision log (audit trail): every decision in an embedded SQLite file, written by one
//! thread in batched transactions (WAL). `async` mode queues (bounded; a full queue drops
//! and counts, never blocks or grows); `sync` mode commits, with fsync, before the response
//! is sent, so an acknowledged decision survives `kill -9`. Input fields are masked per
//! bundle before they are queued; the entry records which.

use crate::config::{DecisionLogConfig, LogMode, Mask, MaskAction};
use rulebox::BundleResult;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// One decision as logged.
pub struct Entry {
    id: String,
    at_ms: u64,
    bundle: String,
    revision: String,
    request_id: Option<String>,
    subject: String,
    verdict: String,
    reasons: String,
    input: String,
    masked: String,
    rules: String,
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
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
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
    reader: Mutex<Connection>,
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
";

fn open(path: &Path, mode: LogMode) -> Result<Connection, String> {
    let at = |e: rusqlite::Error| format!("decision_log.path {}: {e}", path.display());
    let conn = Connection::open(path).map_err(at)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
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
        let reader = open(path, config.mode)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue);
        let counters = Arc::new(Counters::default());
        let (thread_counters, batch) = (counters.clone(), config.batch);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_loop(writer, receiver, batch, &thread_counters))
            .map_err(|e| format!("decision log: cannot start its writer: {e}"))?;
        Ok(Some(DecisionLog {
            sender,
            mode: config.mode,
            queue: config.queue,
            masks: config.mask.clone(),
            counters,
            reader: Mutex::new(reader),
        }))
    }

    /// Queues a decision for the log. In sync mode it returns the commit to await before the
    /// decision is acknowledged (several queued at once share a transaction). A full queue
    /// is counted as a drop in async mode; in sync mode it is the caller's error to answer.
    pub fn enqueue(
        &self,
        id: &str,
        result: &BundleResult,
        input: &Value,
        request_id: Option<&str>,
        subject: &str,
    ) -> Result<Option<Commit>, LogError> {
        let (input, masked) = self.mask(&result.bundle, input);
        let rules: Vec<Value> = result
            .rules
            .iter()
            .map(|e| {
                let (verdict, error_kind) = match &e.result {
                    Ok(d) => (d.verdict.as_str(), None),
                    Err(err) => ("error", Some(err.kind().as_str())),
                };
                json!({
                    "rule": &*e.rule, "verdict": verdict, "error_kind": error_kind,
                    "fuel": e.metering.fuel, "wall_us": e.metering.wall_us, "cached": e.cached,
                })
            })
            .collect();
        let entry = Entry {
            id: id.to_owned(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            bundle: result.bundle.clone(),
            revision: result.revision.clone(),
            request_id: request_id.map(str::to_owned),
            subject: subject.to_owned(),
            verdict: result.verdict.as_str().to_owned(),
            reasons: serde_json::to_string(&result.reasons).unwrap_or_default(),
            input: input.to_string(),
            masked: serde_json::to_string(&masked).unwrap_or_default(),
            rules: Value::Array(rules).to_string(),
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
        }
    }

    /// Decisions, newest first, matching `filter`; with the cursor for the next page.
    pub fn query(&self, filter: &Filter) -> Result<(Vec<Value>, Option<i64>), String> {
        let mut sql = String::from(
            "SELECT rowid, id, at_ms, bundle, revision, request_id, subject, verdict, reasons, input, masked, rules, wall_us FROM decisions WHERE 1=1",
        );
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
        match &filter.scope {
            None => {}
            Some(scope) if scope.is_empty() => sql.push_str(" AND 0"),
            Some(scope) => {
                sql.push_str(" AND bundle IN (");
                sql.push_str(&vec!["?"; scope.len()].join(","));
                sql.push(')');
                args.extend(scope.iter().map(|b| b.clone().into()));
            }
        }
        sql.push_str(" ORDER BY rowid DESC LIMIT ?");
        args.push((filter.limit as i64).into());
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
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
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        conn.query_row(
            "SELECT rowid, id, at_ms, bundle, revision, request_id, subject, verdict, reasons, input, masked, rules, wall_us FROM decisions WHERE id = ?",
            [id],
            row_json,
        )
        .optional()
        .map_err(|e| e.to_string())
    }
}

/// What `GET /v1/decisions` asks for.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only this bundle.
    pub bundle: Option<String>,
    /// Only this final verdict.
    pub verdict: Option<String>,
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

/// The writer: takes what is queued (up to `batch`), writes it in one transaction, acks.
fn write_loop(mut conn: Connection, receiver: Receiver<Queued>, batch: usize, c: &Counters) {
    while let Ok(first) = receiver.recv() {
        let mut items = vec![first];
        while items.len() < batch {
            match receiver.try_recv() {
                Ok(q) => items.push(q),
                Err(_) => break,
            }
        }
        c.queued.fetch_sub(items.len() as u64, Ordering::Relaxed);
        let result = write(&mut conn, &items);
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
}

fn write(conn: &mut Connection, items: &[Queued]) -> Result<(), String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO decisions (id, at_ms, bundle, revision, request_id, subject, verdict, reasons, input, masked, rules, wall_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(|e| e.to_string())?;
        for q in items {
            let e = &q.entry;
            stmt.execute(rusqlite::params![
                e.id,
                e.at_ms as i64,
                e.bundle,
                e.revision,
                e.request_id,
                e.subject,
                e.verdict,
                e.reasons,
                e.input,
                e.masked,
                e.rules,
                e.wall_us as i64,
            ])
            .map_err(|e| e.to_string())?;
        }
    }
    tx.commit().map_err(|e| e.to_string())
}
