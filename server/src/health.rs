//! The health score: recent traffic in a sliding window (per bundle and rule: evaluations,
//! errors, timeouts, cache hits, time and fuel histograms), host counters sampled over the
//! same window (rejections, decision-log drops, failed loads), and the 0-100 score judged
//! from them against the profile's thresholds, each deduction with its reason. The alert
//! rules read the same signals.

use crate::config::{HealthConfig, Threshold};
use rulebox::BundleResult;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;

/// A log-linear histogram: 4 buckets per power of two (about 19% wide), values up to 2^40.
#[derive(Clone)]
pub struct Hist(Box<[u64; HIST_BUCKETS]>);

const HIST_BUCKETS: usize = 4 + 38 * 4 + 4;

impl Default for Hist {
    fn default() -> Self {
        Hist(Box::new([0; HIST_BUCKETS]))
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < 4 {
            return v as usize;
        }
        let log = 63 - v.leading_zeros() as usize; // >= 2
        let sub = ((v >> (log - 2)) & 3) as usize;
        (4 + (log - 2) * 4 + sub).min(HIST_BUCKETS - 1)
    }

    /// The largest value bucket `i` holds.
    fn upper(i: usize) -> u64 {
        if i < 4 {
            return i as u64;
        }
        let (log, sub) = ((i - 4) / 4 + 2, (i - 4) % 4);
        ((4 + sub as u64 + 1) << (log - 2)) - 1
    }

    fn add(&mut self, v: u64) {
        self.0[Hist::index(v)] += 1;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile: the upper bound of the bucket holding that rank.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Hist::upper(i));
            }
        }
        None
    }
}

/// One rule's tallies.
#[derive(Clone, Default)]
pub struct RuleTally {
    /// Evaluations.
    pub evals: u64,
    /// Evaluations that errored.
    pub errors: u64,
    /// Of those, timeouts and fuel exhaustion.
    pub timeouts: u64,
    /// Evaluations served from the cache.
    pub cached: u64,
    /// Wall time, microseconds.
    pub wall_us: Hist,
    /// Fuel (evaluations that ran).
    pub fuel: Hist,
}

impl RuleTally {
    fn merge(&mut self, o: &RuleTally) {
        self.evals += o.evals;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.cached += o.cached;
        self.wall_us.merge(&o.wall_us);
        self.fuel.merge(&o.fuel);
    }
}

#[derive(Clone, Default)]
struct BundleTally {
    decisions: u64,
    /// Final verdicts: allow, deny, review, abstain.
    verdicts: [u64; 4],
    wall_us: Hist,
    rules: HashMap<Arc<str>, RuleTally>,
}

/// Cumulative host counters, sampled.
#[derive(Clone, Copy, Default, Debug)]
pub struct HostCounters {
    /// Requests turned away.
    pub rejected: u64,
    /// Decision-log entries dropped or failed.
    pub log_drops: u64,
    /// Bundle loads that failed.
    pub failed_loads: u64,
}

struct Slot {
    start_ms: u64,
    bundles: HashMap<String, BundleTally>,
}

/// The sliding window.
pub struct Window {
    window_ms: u64,
    slot_ms: u64,
    slots: Mutex<VecDeque<Slot>>,
    samples: Mutex<VecDeque<(u64, HostCounters)>>,
}

/// What the window holds for a selection (all, a bundle, a rule).
#[derive(Default)]
pub struct Totals {
    /// Decisions.
    pub decisions: u64,
    /// Final verdicts: allow, deny, review, abstain.
    pub verdicts: [u64; 4],
    /// Decision wall time, microseconds.
    pub decision_us: Hist,
    /// Rule evaluations, summed.
    pub rules: RuleTally,
}

impl Window {
    /// A window of `window_s`, kept in 20 slots.
    pub fn new(window_s: u64) -> Window {
        let window_ms = window_s * 1000;
        Window {
            window_ms,
            slot_ms: (window_ms / 20).max(50),
            slots: Mutex::new(VecDeque::new()),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a decision made at `now_ms`.
    pub fn record(&self, now_ms: u64, result: &BundleResult) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let start = now_ms - now_ms % self.slot_ms;
        if slots.back().is_none_or(|s| s.start_ms != start) {
            slots.push_back(Slot {
                start_ms: start,
                bundles: HashMap::new(),
            });
            while slots
                .front()
                .is_some_and(|s| s.start_ms + self.window_ms + self.slot_ms <= now_ms)
            {
                slots.pop_front();
            }
        }
        let slot = slots.back_mut().expect("pushed above");
        let bundle = match slot.bundles.get_mut(result.bundle.as_str()) {
            Some(b) => b,
            None => slot.bundles.entry(result.bundle.clone()).or_default(),
        };
        bundle.decisions += 1;
        bundle.verdicts[match result.verdict {
            rulebox::Verdict::Allow => 0,
            rulebox::Verdict::Deny => 1,
            rulebox::Verdict::Review => 2,
            rulebox::Verdict::Abstain => 3,
        }] += 1;
        bundle.wall_us.add(result.wall_us);
        for e in &result.rules {
            let t = match bundle.rules.get_mut(&*e.rule) {
                Some(t) => t,
                None => bundle.rules.entry(e.rule.clone()).or_default(),
            };
            t.evals += 1;
            t.cached += e.cached as u64;
            t.wall_us.add(e.metering.wall_us);
            match &e.result {
                Ok(_) => {
                    if !e.cached {
                        t.fuel.add(e.metering.fuel);
                    }
                }
                Err(err) => {
                    t.errors += 1;
                    if matches!(
                        err.kind(),
                        rulebox::ErrorKind::Timeout | rulebox::ErrorKind::FuelExhausted
                    ) {
                        t.timeouts += 1;
                    }
                }
            }
        }
    }

    /// Sums the slots within the window at `now_ms`, for `bundle` and `rule` (or all).
    pub fn totals(&self, now_ms: u64, bundle: Option<&str>, rule: Option<&str>) -> Totals {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Totals::default();
        for slot in slots
            .iter()
            .filter(|s| s.start_ms + self.window_ms > now_ms)
        {
            for (name, b) in &slot.bundles {
                if bundle.is_some_and(|x| x != name) {
                    continue;
                }
                out.decisions += b.decisions;
                for (sum, n) in out.verdicts.iter_mut().zip(b.verdicts) {
                    *sum += n;
                }
                out.decision_us.merge(&b.wall_us);
                for (r, t) in &b.rules {
                    if rule.is_none_or(|x| x == &**r) {
                        out.rules.merge(t);
                    }
                }
            }
        }
        out
    }

    /// Every (bundle, rule) with its tallies in the window, sorted.
    pub fn per_rule(&self, now_ms: u64) -> Vec<(String, String, RuleTally)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut map: HashMap<(String, String), RuleTally> = HashMap::new();
        for slot in slots
            .iter()
            .filter(|s| s.start_ms + self.window_ms > now_ms)
        {
            for (bundle, b) in &slot.bundles {
                for (r, t) in &b.rules {
                    map.entry((bundle.clone(), r.to_string()))
                        .or_default()
                        .merge(t);
                }
            }
        }
        let mut out: Vec<_> = map.into_iter().map(|((b, r), t)| (b, r, t)).collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Records the host counters at `now_ms` (called every slot or so).
    pub fn sample(&self, now_ms: u64, counters: HostCounters) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back((now_ms, counters));
        while samples
            .front()
            .is_some_and(|(at, _)| at + self.window_ms + self.slot_ms < now_ms)
        {
            samples.pop_front();
        }
    }

    /// How much each host counter grew over the window, from the oldest sample in it to
    /// `current`.
    pub fn host_delta(&self, now_ms: u64, current: HostCounters) -> HostCounters {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let base = samples
            .iter()
            .find(|(at, _)| at + self.window_ms >= now_ms)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        HostCounters {
            rejected: current.rejected.saturating_sub(base.rejected),
            log_drops: current.log_drops.saturating_sub(base.log_drops),
            failed_loads: current.failed_loads.saturating_sub(base.failed_loads),
        }
    }

    /// How often to sample the host counters.
    pub fn slot_ms(&self) -> u64 {
        self.slot_ms
    }
}

/// One component of the score.
#[derive(Debug, Serialize, Clone)]
pub struct Component {
    /// Its name.
    pub name: &'static str,
    /// The measured value (none: not enough samples to judge).
    pub value: Option<f64>,
    /// The thresholds it is judged on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// The most this component can cost.
    pub weight: f64,
    /// What it costs now.
    pub deduction: f64,
    /// `ok`, `warning`, `critical`, or `unjudged`.
    pub status: &'static str,
    /// Why it costs what it costs, in words.
    pub reason: String,
}

/// The health report.
#[derive(Debug, Serialize, Clone)]
pub struct Report {
    /// 0-100.
    pub score: u32,
    /// The worst component status.
    pub status: &'static str,
    /// The window, seconds.
    pub window_s: u64,
    /// Every component.
    pub components: Vec<Component>,
}

/// What the score needs besides the window.
pub struct Inputs {
    /// The host counters now.
    pub counters: HostCounters,
    /// Whether the shared cache's breaker is open.
    pub breaker_open: bool,
    /// Required or polled bundles without an active revision.
    pub missing: Vec<String>,
    /// Polled bundles whose URL has not answered for too long: (name, seconds since).
    pub stale: Vec<(String, u64)>,
}

fn judge(
    name: &'static str,
    value: Option<f64>,
    t: Threshold,
    weight: f64,
    what: impl Fn(f64) -> String,
) -> Component {
    // A level is reached at it, except a level of 0, which any value above it reaches
    // (a zero count is never a warning).
    let reaches = |v: f64, level: f64| if level > 0.0 { v >= level } else { v > level };
    let (status, deduction) = match value {
        None => ("unjudged", 0.0),
        Some(v) if reaches(v, t.critical) => ("critical", weight),
        // From a quarter of the weight at `warning` to all of it at `critical`.
        Some(v) if reaches(v, t.warning) => {
            let span = (t.critical - t.warning).max(f64::EPSILON);
            (
                "warning",
                weight * (0.25 + 0.75 * ((v - t.warning) / span).min(1.0)),
            )
        }
        Some(_) => ("ok", 0.0),
    };
    let reason = match (status, value) {
        (_, None) => "too few samples in the window to judge".to_owned(),
        ("ok", Some(v)) => format!("{} (warning at {})", what(v), what(t.warning)),
        (_, Some(v)) => format!(
            "{} is at or over the {status} level of {}",
            what(v),
            what(if status == "critical" {
                t.critical
            } else {
                t.warning
            })
        ),
    };
    Component {
        name,
        value,
        threshold: Some(t),
        weight,
        deduction,
        status,
        reason,
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// The score at `now_ms`.
pub fn score(window: &Window, config: &HealthConfig, now_ms: u64, inputs: &Inputs) -> Report {
    let t = window.totals(now_ms, None, None);
    let host = window.host_delta(now_ms, inputs.counters);
    let enough = |n: u64| n >= config.min_samples.max(1);
    let ratio = |num: u64, den: u64| enough(den).then(|| num as f64 / den as f64);
    let mut components = vec![
        judge(
            "error_rate",
            ratio(t.rules.errors, t.rules.evals),
            config.error_rate,
            30.0,
            |v| format!("{} of rule evaluations errored", pct(v)),
        ),
        judge(
            "timeout_ratio",
            ratio(t.rules.timeouts, t.rules.evals),
            config.timeout_ratio,
            20.0,
            |v| {
                format!(
                    "{} of rule evaluations timed out or ran out of fuel",
                    pct(v)
                )
            },
        ),
        judge(
            "p99_latency",
            enough(t.decisions)
                .then(|| t.decision_us.quantile(0.99))
                .flatten()
                .map(|us| us as f64 / 1000.0),
            config.p99_ms,
            15.0,
            |v| format!("p99 decision time {v:.2} ms"),
        ),
        judge(
            "failed_loads",
            Some(host.failed_loads as f64),
            config.failed_loads,
            10.0,
            |v| format!("{v} failed bundle loads in the window"),
        ),
        judge(
            "log_drops",
            Some(host.log_drops as f64),
            config.log_drops,
            10.0,
            |v| format!("{v} decision-log entries dropped or failed in the window"),
        ),
        judge(
            "rejected_ratio",
            ratio(host.rejected, host.rejected + t.decisions),
            config.rejected_ratio,
            5.0,
            |v| format!("{} of requests turned away", pct(v)),
        ),
    ];
    // Bundles: a required one missing or a polled one stale is critical at once.
    let mut problems: Vec<String> = inputs
        .missing
        .iter()
        .map(|b| format!("{b} has no active revision"))
        .collect();
    problems.extend(
        inputs
            .stale
            .iter()
            .map(|(b, s)| format!("{b} is stale: its URL has not answered for {s} s")),
    );
    components.push(Component {
        name: "bundles",
        value: Some(problems.len() as f64),
        threshold: None,
        weight: 5.0,
        deduction: if problems.is_empty() { 0.0 } else { 5.0 },
        status: if problems.is_empty() {
            "ok"
        } else {
            "critical"
        },
        reason: if problems.is_empty() {
            "every required and polled bundle is active and fresh".into()
        } else {
            problems.join("; ")
        },
    });
    components.push(Component {
        name: "cache_breaker",
        value: Some(inputs.breaker_open as u8 as f64),
        threshold: None,
        weight: 5.0,
        deduction: if inputs.breaker_open { 5.0 } else { 0.0 },
        status: if inputs.breaker_open { "warning" } else { "ok" },
        reason: if inputs.breaker_open {
            "the shared cache's breaker is open: Redis is failing, lookups skip it".into()
        } else {
            "the shared cache answers (or none is configured)".into()
        },
    });
    let lost: f64 = components.iter().map(|c| c.deduction).sum();
    let status = ["critical", "warning"]
        .into_iter()
        .find(|s| components.iter().any(|c| c.status == *s))
        .unwrap_or("ok");
    Report {
        score: (100.0 - lost).round().clamp(0.0, 100.0) as u32,
        status,
        window_s: window.window_ms / 1000,
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_within_a_fifth() {
        for v in [0u64, 1, 3, 4, 5, 7, 8, 100, 999, 1_000, 123_456, 1 << 39] {
            let i = Hist::index(v);
            assert!(Hist::upper(i) >= v, "{v}");
            assert!(
                Hist::upper(i) as f64 <= (v as f64 * 1.25).max(3.0),
                "{v}: {}",
                Hist::upper(i)
            );
            if i > 0 {
                assert!(Hist::upper(i - 1) < v, "{v}");
            }
        }
        let mut h = Hist::default();
        for v in 1..=100 {
            h.add(v * 10);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((500..=600).contains(&p50), "{p50}");
        assert!(h.quantile(0.99).unwrap() >= 990);
    }

    #[test]
    fn a_component_costs_from_warning_to_critical() {
        let t = Threshold {
            warning: 0.01,
            critical: 0.05,
        };
        let c = |v| judge("x", Some(v), t, 20.0, |v| v.to_string());
        assert_eq!((c(0.0).status, c(0.0).deduction), ("ok", 0.0));
        assert_eq!((c(0.01).status, c(0.01).deduction), ("warning", 5.0));
        assert_eq!((c(0.05).status, c(0.05).deduction), ("critical", 20.0));
        assert!(c(0.03).deduction > 5.0 && c(0.03).deduction < 20.0);
        assert_eq!(
            judge("x", None, t, 20.0, |v| v.to_string()).status,
            "unjudged"
        );
        // A zero warning level: any value above it counts, zero does not.
        let zero = Threshold {
            warning: 0.0,
            critical: 5.0,
        };
        assert_eq!(
            judge("x", Some(0.0), zero, 10.0, |v| v.to_string()).status,
            "ok"
        );
        assert_eq!(
            judge("x", Some(1.0), zero, 10.0, |v| v.to_string()).status,
            "warning"
        );
    }
}
