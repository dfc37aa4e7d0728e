//! Alert rules: each evaluation compares a signal with its threshold and moves the rule
//! through inactive -> pending -> firing -> resolved. Every transition is kept in SQLite
//! (the states survive a restart, so a firing alert is not announced twice), logged, and
//! (firing, resolved) POSTed to the webhooks by a task of its own: retried with backoff,
//! bounded, never on the request path.

use crate::config::{AlertRule, AlertsConfig, Comparison, Severity};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_states (
    alert TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    value REAL
);
CREATE TABLE IF NOT EXISTS alert_events (
    at_ms INTEGER NOT NULL,
    alert TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL,
    threshold REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at_ms);
";

/// An alert rule's state now.
#[derive(Clone, Debug, Serialize)]
pub struct State {
    /// `inactive`, `pending` or `firing`.
    pub state: &'static str,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
    /// The signal's last value (none: nothing to judge).
    pub value: Option<f64>,
}

/// Webhook delivery counters.
#[derive(Default, Debug, Serialize)]
pub struct Deliveries {
    /// Notifications a webhook accepted (2xx).
    pub delivered: AtomicU64,
    /// Notifications given up on after the retries.
    pub failed: AtomicU64,
    /// Notifications dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The alerts.
pub struct Alerts {
    states: Mutex<HashMap<String, State>>,
    store: Option<Mutex<Connection>>,
    notify: Option<tokio::sync::mpsc::Sender<Value>>,
    /// What the webhooks did.
    pub deliveries: std::sync::Arc<Deliveries>,
}

fn state_name(s: &str) -> &'static str {
    match s {
        "pending" => "pending",
        "firing" => "firing",
        _ => "inactive",
    }
}

impl Alerts {
    /// Opens the state file (`alerts.path`, else `fallback`), loads the kept states, and
    /// starts the webhook sender (on the current tokio runtime, when there is one).
    pub fn open(config: &AlertsConfig, fallback: Option<&Path>) -> Result<Alerts, String> {
        let store = match config.path.as_deref().or(fallback) {
            None => None,
            Some(path) => {
                let at = |e: rusqlite::Error| format!("alerts.path {}: {e}", path.display());
                let conn = Connection::open(path).map_err(at)?;
                conn.busy_timeout(Duration::from_secs(5)).map_err(at)?;
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(at)?;
                conn.execute_batch(SCHEMA).map_err(at)?;
                Some(conn)
            }
        };
        let mut states = HashMap::new();
        if let Some(conn) = &store {
            let mut stmt = conn
                .prepare("SELECT alert, state, since_ms, value FROM alert_states")
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        State {
                            state: state_name(&r.get::<_, String>(1)?),
                            since_ms: r.get::<_, i64>(2)? as u64,
                            value: r.get(3)?,
                        },
                    ))
                })
                .map_err(|e| e.to_string())?;
            for row in rows {
                let (name, state) = row.map_err(|e| e.to_string())?;
                states.insert(name, state);
            }
        }
        let deliveries = std::sync::Arc::new(Deliveries::default());
        let notify = match tokio::runtime::Handle::try_current() {
            Ok(rt) if !config.webhooks.is_empty() => {
                let (tx, rx) = tokio::sync::mpsc::channel(1000);
                rt.spawn(send_webhooks(
                    config.webhooks.clone(),
                    rx,
                    deliveries.clone(),
                ));
                Some(tx)
            }
            _ => None,
        };
        Ok(Alerts {
            states: Mutex::new(states),
            store: store.map(Mutex::new),
            notify,
            deliveries,
        })
    }

    /// Whether states are kept on disk.
    pub fn persisted(&self) -> bool {
        self.store.is_some()
    }

    /// Evaluates every rule at `now_ms` with `signal` giving each one's current value.
    pub fn evaluate(
        &self,
        rules: &[AlertRule],
        now_ms: u64,
        signal: impl Fn(&AlertRule) -> Option<f64>,
    ) {
        // The signals first: computing them takes time (the health score reads the window),
        // and readers of the states (the dashboard, `GET /v1/alerts`) wait on the lock.
        let values: Vec<Option<f64>> = rules.iter().map(&signal).collect();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for (rule, value) in rules.iter().zip(values) {
            let holds = value.is_some_and(|v| match rule.op {
                Comparison::Above => v > rule.threshold,
                Comparison::Below => v < rule.threshold,
            });
            let current = states.entry(rule.name.clone()).or_insert(State {
                state: "inactive",
                since_ms: now_ms,
                value,
            });
            current.value = value;
            let next = match (current.state, holds) {
                ("inactive", true) if rule.for_s == 0 => Some("firing"),
                ("inactive", true) => Some("pending"),
                ("pending", true) if now_ms >= current.since_ms + rule.for_s * 1000 => {
                    Some("firing")
                }
                ("pending", false) => Some("inactive"),
                ("firing", false) => Some("resolved"),
                _ => None,
            };
            let Some(next) = next else { continue };
            let message = describe(rule, value, next);
            match next {
                "firing" => {
                    tracing::warn!(alert = %rule.name, severity = ?rule.severity, value = ?value, "{message}")
                }
                "resolved" => tracing::info!(alert = %rule.name, value = ?value, "{message}"),
                _ => tracing::info!(alert = %rule.name, value = ?value, "{message}"),
            }
            current.state = if next == "resolved" { "inactive" } else { next };
            current.since_ms = now_ms;
            self.keep(rule, current, next, now_ms, &message);
            if matches!(next, "firing" | "resolved") {
                self.announce(rule, value, next, now_ms, &message);
            }
        }
        // Rules removed from the configuration are forgotten.
        states.retain(|name, _| rules.iter().any(|r| &r.name == name));
    }

    fn keep(&self, rule: &AlertRule, state: &State, event: &str, now_ms: u64, message: &str) {
        let Some(store) = &self.store else { return };
        let conn = store.lock().unwrap_or_else(|e| e.into_inner());
        let done = conn
            .execute(
                "INSERT INTO alert_states (alert, state, since_ms, value) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (alert) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms, value = excluded.value",
                rusqlite::params![rule.name, state.state, now_ms as i64, state.value],
            )
            .and_then(|_| {
                conn.execute(
                    "INSERT INTO alert_events (at_ms, alert, state, severity, value, threshold, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    rusqlite::params![
                        now_ms as i64,
                        rule.name,
                        event,
                        severity(rule.severity),
                        state.value,
                        rule.threshold,
                        message
                    ],
                )
            })
            // Keep the history bounded: the last 10,000 transitions.
            .and_then(|_| {
                conn.execute(
                    "DELETE FROM alert_events WHERE rowid <= (SELECT max(rowid) - 10000 FROM alert_events)",
                    [],
                )
            });
        if let Err(e) = done {
            tracing::warn!(alert = %rule.name, "alert state not kept: {e}");
        }
    }

    fn announce(
        &self,
        rule: &AlertRule,
        value: Option<f64>,
        state: &str,
        now_ms: u64,
        message: &str,
    ) {
        let Some(tx) = &self.notify else { return };
        let payload = json!({
            "alert": rule.name, "state": state, "severity": severity(rule.severity),
            "signal": rule.signal, "bundle": rule.bundle, "rule": rule.rule,
            "op": rule.op, "threshold": rule.threshold, "value": value,
            "at_ms": now_ms, "message": message,
        });
        if tx.try_send(payload).is_err() {
            self.deliveries.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fires a one-off alert raised by the server itself rather than by a rule (an automatic
    /// rollback): kept in the history as `firing` with the value and limit that raised it,
    /// logged, and sent to the webhooks with `details`. It has no state to resolve.
    #[allow(clippy::too_many_arguments)]
    pub fn fire(
        &self,
        name: &str,
        severity: Severity,
        value: f64,
        threshold: f64,
        message: &str,
        details: Value,
        now_ms: u64,
    ) {
        tracing::warn!(alert = name, value, threshold, "{message}");
        if let Some(store) = &self.store {
            let conn = store.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = conn.execute(
                "INSERT INTO alert_events (at_ms, alert, state, severity, value, threshold, message) VALUES (?1, ?2, 'firing', ?3, ?4, ?5, ?6)",
                rusqlite::params![now_ms as i64, name, self::severity(severity), value, threshold, message],
            ) {
                tracing::warn!(alert = name, "alert event not kept: {e}");
            }
        }
        let Some(tx) = &self.notify else { return };
        let payload = json!({
            "alert": name, "state": "firing", "severity": self::severity(severity),
            "value": value, "threshold": threshold, "at_ms": now_ms, "message": message,
            "details": details,
        });
        if tx.try_send(payload).is_err() {
            self.deliveries.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The rules with their states, and the most recent transitions (newest first).
    pub fn report(&self, rules: &[AlertRule], recent: usize) -> Value {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let alerts: Vec<Value> = rules
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                let s = states.get(&r.name);
                v["state"] = s.map_or("inactive", |s| s.state).into();
                v["since_ms"] = s.map(|s| s.since_ms).into();
                v["value"] = s.and_then(|s| s.value).into();
                v
            })
            .collect();
        drop(states);
        let history = self.history(recent).unwrap_or_else(|e| {
            tracing::warn!("alert history unreadable: {e}");
            Vec::new()
        });
        json!({
            "alerts": alerts,
            "recent": history,
            "persisted": self.persisted(),
            "webhooks": &*self.deliveries,
        })
    }

    fn history(&self, n: usize) -> rusqlite::Result<Vec<Value>> {
        let Some(store) = self.store.as_ref().filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        let conn = store.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT at_ms, alert, state, severity, value, threshold, message FROM alert_events ORDER BY rowid DESC LIMIT ?",
        )?;
        let rows = stmt.query_map([n as i64], |r| {
            Ok(json!({
                "at_ms": r.get::<_, i64>(0)?, "alert": r.get::<_, String>(1)?,
                "state": r.get::<_, String>(2)?, "severity": r.get::<_, String>(3)?,
                "value": r.get::<_, Option<f64>>(4)?, "threshold": r.get::<_, f64>(5)?,
                "message": r.get::<_, String>(6)?,
            }))
        })?;
        rows.collect()
    }

    /// How many alerts are firing, by severity (warning, critical).
    pub fn firing(&self, rules: &[AlertRule]) -> (u64, u64) {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = (0, 0);
        for r in rules {
            if states.get(&r.name).is_some_and(|s| s.state == "firing") {
                match r.severity {
                    Severity::Warning => out.0 += 1,
                    Severity::Critical => out.1 += 1,
                }
            }
        }
        out
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn describe(rule: &AlertRule, value: Option<f64>, state: &str) -> String {
    let op = match rule.op {
        Comparison::Above => ">",
        Comparison::Below => "<",
    };
    let of = match (&rule.bundle, &rule.rule) {
        (Some(b), Some(r)) => format!(" of {b}/{r}"),
        (Some(b), None) => format!(" of {b}"),
        _ => String::new(),
    };
    let signal = serde_json::to_value(rule.signal)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = value.map_or("none".to_owned(), |v| format!("{v:.4}"));
    format!(
        "alert {} {state}: {signal}{of} is {value} (condition {op} {}, for {} s)",
        rule.name, rule.threshold, rule.for_s
    )
}

/// Delivers each notification to every webhook: up to 4 attempts, 0.5 s, 1 s, 2 s apart,
/// each within 5 s.
async fn send_webhooks(
    urls: Vec<String>,
    mut rx: tokio::sync::mpsc::Receiver<Value>,
    deliveries: std::sync::Arc<Deliveries>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("alert webhooks disabled: {e}");
            return;
        }
    };
    while let Some(payload) = rx.recv().await {
        let body = payload.to_string();
        for url in &urls {
            let mut delay = Duration::from_millis(500);
            let mut delivered = false;
            for attempt in 1..=4 {
                let request = client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        delivered = true;
                        break;
                    }
                    Ok(r) => {
                        tracing::warn!(%url, attempt, status = %r.status(), "alert webhook refused")
                    }
                    Err(e) => tracing::warn!(%url, attempt, "alert webhook failed: {e}"),
                }
                if attempt < 4 {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
            let counter = if delivered {
                &deliveries.delivered
            } else {
                &deliveries.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
