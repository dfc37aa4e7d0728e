//! Prometheus metrics (`GET /metrics`, text format): HTTP requests by route, decisions and
//! per-rule evaluations with their cost, requests turned away, bundle activations and failed
//! loads, build info. Labels are bounded: route templates (never raw paths), bundle and rule
//! names of loaded bundles (rules capped per bundle), verdicts and error kinds; never ids or
//! input values.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rulebox::{BundleResult, RegistryEvent};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// More rules than this in one bundle share the rule label `_other`.
const MAX_RULE_LABELS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    bundle: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleOutcome {
    bundle: String,
    rule: String,
    /// A verdict, or `error`.
    verdict: &'static str,
    /// The error kind, or empty.
    error_kind: &'static str,
    cached: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    bundle: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BundleLabels {
    bundle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    bundle: String,
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    bundle: String,
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLoadLabels {
    bundle: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// What is read from the library and the server's parts on each scrape.
pub struct Snapshot {
    /// The result cache's counters.
    pub cache: rulebox::CacheStats,
    /// The engine's evaluation slots.
    pub engine: rulebox::EngineStats,
    /// The decision log's counters, when there is one.
    pub log: Option<crate::decisions::LogStats>,
    /// Each polled bundle's counters.
    pub polls: Vec<(String, crate::poll::PollStatus)>,
    /// The health score now.
    pub health: Option<crate::health::Report>,
    /// Alerts firing: (warning, critical).
    pub alerts_firing: (u64, u64),
}

type SnapshotFn = Box<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// Encodes a [`Snapshot`] on each scrape.
#[derive(Default)]
struct Scraped(Arc<OnceLock<SnapshotFn>>);

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    items: &[(L, M)],
) -> std::fmt::Result {
    let Some((_, first)) = items.first() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, m) in items {
        m.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityLabels {
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    bundle: String,
    result: String,
}

/// One metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: M,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn result(r: &str) -> ResultLabels {
    ResultLabels { result: r.into() }
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(s) = self.0.get().and_then(|f| f()) else {
            return Ok(());
        };
        let c = &s.cache;
        family(
            &mut e,
            "cache_lookups",
            "Result-cache lookups, by result (l1-hit, l2-hit, miss)",
            None,
            &[
                (result("l1-hit"), ConstCounter::new(c.hits)),
                (result("l2-hit"), ConstCounter::new(c.l2_hits)),
                (result("miss"), ConstCounter::new(c.misses)),
            ],
        )?;
        single(
            &mut e,
            "cache_evictions",
            "Entries evicted from the memory cache to stay within its budget",
            None,
            ConstCounter::new(c.evictions),
        )?;
        single(
            &mut e,
            "cache_entries",
            "Entries in the memory cache",
            None,
            ConstGauge::new(c.entries as i64),
        )?;
        single(
            &mut e,
            "cache_memory",
            "Bytes held by the memory cache",
            Some(&Unit::Bytes),
            ConstGauge::new(c.bytes as i64),
        )?;
        if let Some(l2) = &c.l2 {
            single(
                &mut e,
                "cache_l2_errors",
                "Redis (L2) operations that failed or timed out",
                None,
                ConstCounter::new(l2.errors),
            )?;
            family(
                &mut e,
                "cache_l2_breaker_state",
                "The Redis circuit breaker: 1 for its current state",
                None,
                &[(
                    StateLabels {
                        state: l2.breaker.to_owned(),
                    },
                    ConstGauge::new(1),
                )],
            )?;
        }
        if let Some(h) = &s.health {
            single(
                &mut e,
                "health_score",
                "The health score, 0-100 (GET /v1/health says why)",
                None,
                ConstGauge::new(h.score as i64),
            )?;
            let deductions: Vec<(ComponentLabels, ConstGauge<f64>)> = h
                .components
                .iter()
                .map(|c| {
                    (
                        ComponentLabels {
                            component: c.name.to_owned(),
                        },
                        ConstGauge::new(c.deduction),
                    )
                })
                .collect();
            family(
                &mut e,
                "health_deduction",
                "Points each health component takes off the score",
                None,
                &deductions,
            )?;
        }
        family(
            &mut e,
            "alerts_firing",
            "Alert rules firing, by severity",
            None,
            &[
                (
                    SeverityLabels {
                        severity: "warning".into(),
                    },
                    ConstGauge::new(s.alerts_firing.0 as i64),
                ),
                (
                    SeverityLabels {
                        severity: "critical".into(),
                    },
                    ConstGauge::new(s.alerts_firing.1 as i64),
                ),
            ],
        )?;
        family(
            &mut e,
            "evaluations_in_flight",
            "Evaluations holding an engine slot (running) or waiting for one",
            None,
            &[
                (
                    StateLabels {
                        state: "running".into(),
                    },
                    ConstGauge::new(s.engine.running as i64),
                ),
                (
                    StateLabels {
                        state: "waiting".into(),
                    },
                    ConstGauge::new(s.engine.waiting as i64),
                ),
            ],
        )?;
        single(
            &mut e,
            "evaluations_overloaded",
            "Evaluations the engine could not run (no slot in time, pool full, starved)",
            None,
            ConstCounter::new(s.engine.overloaded),
        )?;
        if let Some(log) = &s.log {
            family(
                &mut e,
                "decision_log_entries",
                "Decision-log entries, by result (written, dropped, failed; pruned: detail deleted by retention after it was rolled up)",
                None,
                &[
                    (result("written"), ConstCounter::new(log.written)),
                    (result("dropped"), ConstCounter::new(log.dropped)),
                    (result("failed"), ConstCounter::new(log.failed)),
                    (result("pruned"), ConstCounter::new(log.pruned)),
                ],
            )?;
            single(
                &mut e,
                "decision_log_queue_depth",
                "Decision-log entries waiting for the writer",
                None,
                ConstGauge::new(log.queued as i64),
            )?;
        }
        let polls: Vec<(PollLabels, ConstCounter)> = s
            .polls
            .iter()
            .flat_map(|(bundle, p)| {
                [
                    ("updated", p.updated),
                    ("unchanged", p.unchanged),
                    ("load-failed", p.failed_loads),
                    ("error", p.errors),
                ]
                .map(|(r, n)| {
                    (
                        PollLabels {
                            bundle: bundle.clone(),
                            result: r.into(),
                        },
                        ConstCounter::new(n),
                    )
                })
            })
            .collect();
        family(
            &mut e,
            "bundle_polls",
            "Polls of bundle URLs, by bundle and result",
            None,
            &polls,
        )
    }
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    scraped: Arc<OnceLock<SnapshotFn>>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    decision_duration: Family<BundleLabels, Histogram>,
    rule_evaluations: Family<RuleOutcome, Counter>,
    rule_duration: Family<RuleLabels, Histogram>,
    rule_fuel: Family<RuleLabels, Histogram>,
    rule_memory: Family<RuleLabels, Histogram>,
    rejected: Family<ReasonLabels, Counter>,
    activations: Family<BundleLabels, Counter>,
    last_activation: Family<BundleLabels, Gauge>,
    failed_loads: Family<FailedLoadLabels, Counter>,
    shadow_decisions: Family<ShadowLabels, Counter>,
    shadow_dropped: Family<BundleLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 5 µs to ~42 s, doubling: resolves microsecond rules and slow requests alike.
    Histogram::new(exponential_buckets(5e-6, 2.0, 24))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set, registered under the `rulebox_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rulebox");
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(seconds_histogram),
            decisions: Family::default(),
            decision_duration: Family::new_with_constructor(seconds_histogram),
            rule_evaluations: Family::default(),
            rule_duration: Family::new_with_constructor(seconds_histogram),
            rule_fuel: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1_000.0, 4.0, 14))
            }),
            rule_memory: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(65_536.0, 2.0, 14))
            }),
            rejected: Family::default(),
            activations: Family::default(),
            last_activation: Family::default(),
            failed_loads: Family::default(),
            shadow_decisions: Family::default(),
            shadow_dropped: Family::default(),
            rollbacks: Family::default(),
            registry: Registry::default(),
            scraped: Arc::default(),
        };
        registry.register_collector(Box::new(Scraped(m.scraped.clone())));
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status code",
            m.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route template",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        registry.register(
            "decisions",
            "Bundle decisions, by bundle and final verdict",
            m.decisions.clone(),
        );
        registry.register_with_unit(
            "decision_duration",
            "Wall time of a bundle evaluation, by bundle",
            Unit::Seconds,
            m.decision_duration.clone(),
        );
        registry.register(
            "rule_evaluations",
            "Rule evaluations within decisions, by bundle, rule, verdict (or `error`), error kind and whether served from the cache",
            m.rule_evaluations.clone(),
        );
        registry.register_with_unit(
            "rule_duration",
            "Wall time of rule evaluations that ran (not cache hits), by bundle and rule",
            Unit::Seconds,
            m.rule_duration.clone(),
        );
        registry.register(
            "rule_fuel",
            "Fuel burnt by rule evaluations that ran, by bundle and rule",
            m.rule_fuel.clone(),
        );
        registry.register_with_unit(
            "rule_memory_peak",
            "Peak linear memory of rule evaluations that ran, by bundle and rule",
            Unit::Bytes,
            m.rule_memory.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests turned away, by reason (rate-limited, overloaded, timed-out)",
            m.rejected.clone(),
        );
        registry.register(
            "bundle_activations",
            "Bundle revisions activated (loads and rollbacks), by bundle",
            m.activations.clone(),
        );
        registry.register_with_unit(
            "bundle_last_activation_timestamp",
            "When the bundle's active revision was activated, Unix time",
            Unit::Seconds,
            m.last_activation.clone(),
        );
        registry.register(
            "bundle_failed_loads",
            "Bundle loads refused, by bundle and the step that failed",
            m.failed_loads.clone(),
        );
        registry.register(
            "shadow_decisions",
            "Sampled live decisions evaluated on a bundle's shadow candidate, by bundle, served verdict (`from`) and the candidate's (`to`, or `host-error`)",
            m.shadow_decisions.clone(),
        );
        registry.register(
            "shadow_dropped",
            "Sampled decisions not evaluated on the shadow candidate because its queue was full, by bundle",
            m.shadow_dropped.clone(),
        );
        registry.register(
            "automatic_rollbacks",
            "Revisions rolled back by the watch after their activation, by bundle and the signal that crossed its limit",
            m.rollbacks.clone(),
        );
        // A gauge at 1 with the version as a label (the classic `_info` convention; the
        // OpenMetrics `info` type is not read by Prometheus's text-format tools).
        let build: Family<VersionLabels, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The rulebox server build", build);
        Metrics { registry, ..m }
    }

    /// Sets what each scrape reads the cache, engine, decision-log and poll counters from
    /// (once; later calls are ignored).
    pub fn read_on_scrape(&self, source: impl Fn() -> Option<Snapshot> + Send + Sync + 'static) {
        let _ = self.scraped.set(Box::new(source));
    }

    /// The OpenMetrics text exposition.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), for scrapers and tools that do not ask
    /// for OpenMetrics (`promtool check metrics`, older agents).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render_openmetrics())
    }

    /// Counts an answered HTTP request.
    pub fn http(&self, route: &str, method: &str, code: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                code,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The counters of requests turned away, registered here.
    pub fn rejected(&self) -> crate::limits::Rejected {
        let counter = |reason: &str| {
            self.rejected
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .clone()
        };
        crate::limits::Rejected {
            rate_limited: counter("rate-limited"),
            overloaded: counter("overloaded"),
            timed_out: counter("timed-out"),
        }
    }

    /// Counts a decision and each of its rule evaluations, with their cost.
    pub fn decision(&self, result: &BundleResult) {
        let bundle = &result.bundle;
        self.decisions
            .get_or_create(&DecisionLabels {
                bundle: bundle.clone(),
                verdict: result.verdict.as_str(),
            })
            .inc();
        self.decision_duration
            .get_or_create(&BundleLabels {
                bundle: bundle.clone(),
            })
            .observe(result.wall_us as f64 / 1e6);
        for (i, eval) in result.rules.iter().enumerate() {
            let rule = if i < MAX_RULE_LABELS {
                eval.rule.to_string()
            } else {
                "_other".to_owned()
            };
            let (verdict, error_kind) = match &eval.result {
                Ok(d) => (d.verdict.as_str(), ""),
                Err(e) => ("error", e.kind().as_str()),
            };
            self.rule_evaluations
                .get_or_create(&RuleOutcome {
                    bundle: bundle.clone(),
                    rule: rule.clone(),
                    verdict,
                    error_kind,
                    cached: if eval.cached { "true" } else { "false" },
                })
                .inc();
            if !eval.cached {
                let labels = RuleLabels {
                    bundle: bundle.clone(),
                    rule,
                };
                let m = &eval.metering;
                self.rule_duration
                    .get_or_create(&labels)
                    .observe(m.wall_us as f64 / 1e6);
                self.rule_fuel.get_or_create(&labels).observe(m.fuel as f64);
                self.rule_memory
                    .get_or_create(&labels)
                    .observe(m.memory_peak_bytes as f64);
            }
        }
    }

    /// Counts a shadow evaluation: served verdict `from`, the candidate's `to`.
    pub fn shadow_decision(&self, bundle: &str, from: &str, to: &str) {
        self.shadow_decisions
            .get_or_create(&ShadowLabels {
                bundle: bundle.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
            })
            .inc();
    }

    /// Counts a sampled decision the shadow queue had no room for.
    pub fn shadow_dropped(&self, bundle: &str) {
        self.shadow_dropped
            .get_or_create(&BundleLabels {
                bundle: bundle.to_owned(),
            })
            .inc();
    }

    /// Counts an automatic rollback.
    pub fn rollback(&self, bundle: &str, signal: &'static str) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                bundle: bundle.to_owned(),
                signal,
            })
            .inc();
    }

    /// Follows the registry's events: activations and failed loads.
    pub fn registry_event(&self, event: &RegistryEvent) {
        match event {
            RegistryEvent::Activated { bundle, at_ms, .. }
            | RegistryEvent::RolledBack { bundle, at_ms, .. } => {
                let labels = BundleLabels {
                    bundle: bundle.clone(),
                };
                self.activations.get_or_create(&labels).inc();
                self.last_activation
                    .get_or_create(&labels)
                    .set((*at_ms / 1000) as i64);
            }
            RegistryEvent::LoadFailed { bundle, failure } => {
                let step = serde_json::to_value(failure.step)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.failed_loads
                    .get_or_create(&FailedLoadLabels {
                        bundle: bundle.clone().unwrap_or_else(|| "_unknown".into()),
                        step,
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// OpenMetrics text to the Prometheus 0.0.4 text format: a counter's `HELP` and `TYPE` name
/// its `_total` sample; `UNIT` and `EOF` lines go. Everything else is the same in both.
fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_renamed_for_the_classic_format() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\n# UNIT a_x seconds\na_x_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            super::openmetrics_to_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }
}
