//! The live dashboard: `GET /` serves one page of plain HTML and JavaScript compiled into the
//! binary (no build step, no external assets); the page reads `GET /v1/dashboard/stream`,
//! server-sent events carrying a snapshot every second (health, traffic, verdict mix,
//! per-rule cost, alerts, bundles), with the viewer's token in an `Authorization` header.
//! The token comes from the page's URL fragment (`/#token=...`, never sent to the server
//! in the URL) or a prompt, and is kept in the tab's session storage.

use crate::api::{AppState, Caller};
use crate::auth::Action;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

const PAGE: &str = include_str!("dashboard.html");

/// `GET /`: the page. It holds no data; everything it shows comes through the stream.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /v1/dashboard/stream`: a snapshot now and every second after, for as long as the
/// page is open (role viewer; a scoped credential sees only its bundles).
pub async fn stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.check(Action::Read, None)?;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = futures_util::stream::poll_fn(move |cx| {
        ticks.poll_tick(cx).map(|_| {
            let snapshot = state.dashboard_snapshot(&caller);
            Some(Ok(Event::default()
                .event("snapshot")
                .data(snapshot.to_string())))
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

impl AppState {
    /// What each rule the caller sees cost in the health window.
    pub(crate) fn rule_costs(&self, caller: &crate::auth::Principal, now: u64) -> Vec<Value> {
        self.window()
            .per_rule(now)
            .into_iter()
            .filter(|(bundle, _, _)| caller.sees(bundle))
            .map(|(bundle, rule, t)| {
                json!({
                    "bundle": bundle, "rule": rule, "evaluations": t.evals, "errors": t.errors,
                    "timeouts": t.timeouts, "cached": t.cached,
                    "p50_us": t.wall_us.quantile(0.5), "p99_us": t.wall_us.quantile(0.99),
                    "p99_fuel": t.fuel.quantile(0.99),
                })
            })
            .collect()
    }

    /// What the dashboard shows, within `caller`'s scope.
    pub(crate) fn dashboard_snapshot(&self, caller: &crate::auth::Principal) -> Value {
        let now = crate::decisions::now_ms();
        let health = self.health();
        let window = self.window();
        let visible: Vec<rulebox::BundleStatus> = self
            .registry()
            .status()
            .into_iter()
            .filter(|b| caller.sees(&b.name))
            .collect();
        // Traffic over the window, summed over the bundles the caller sees.
        let totals: Vec<crate::health::Totals> = match caller.scope() {
            None => vec![window.totals(now, None, None)],
            Some(scope) => scope
                .iter()
                .map(|b| window.totals(now, Some(b), None))
                .collect(),
        };
        let decisions: u64 = totals.iter().map(|t| t.decisions).sum();
        let mut verdicts = [0u64; 4];
        let mut latency = crate::health::Hist::default();
        for t in &totals {
            for (sum, n) in verdicts.iter_mut().zip(t.verdicts) {
                *sum += n;
            }
            latency.merge(&t.decision_us);
        }
        let window_s = health.window_s.max(1);
        let rules = self.rule_costs(caller, now);
        json!({
            "at_ms": now,
            "health": health,
            "traffic": {
                "window_s": window_s,
                "decisions": decisions,
                "per_second": decisions as f64 / window_s as f64,
                "verdicts": {"allow": verdicts[0], "deny": verdicts[1], "review": verdicts[2], "abstain": verdicts[3]},
                "p50_us": latency.quantile(0.5),
                "p99_us": latency.quantile(0.99),
                "decisions_since_start": self.decisions_made(),
            },
            "rules": rules,
            // The states only: the page shows no history, so no SQLite read every second.
            "alerts": self.alerts_report(0),
            "bundles": visible,
            "shadows": self.shadows_json(caller),
            "can_operate": caller.check(Action::Operate, None).is_ok(),
        })
    }
}
