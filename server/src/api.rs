//! The HTTP API (`/v1`): evaluation, bundle administration, the result cache, health.

use crate::auth::{Action, Authenticator, Principal};
use crate::config::ServerConfig;
use crate::decisions::Commit;
use crate::error::ApiError;
use crate::limits::{RateLimits, Rejected};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rulebox::{Bundle, Engine, Input, LoadOptions, Registry, RegistryConfig};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The parts of the state a configuration reload replaces.
pub(crate) struct Live {
    pub(crate) config: ServerConfig,
    auth: Authenticator,
    limits: RateLimits,
    admission: Arc<tokio::sync::Semaphore>,
    /// The admission limit.
    permits: usize,
}

impl Live {
    fn new(config: ServerConfig, engine: &Engine) -> Result<Live, String> {
        let permits = match config.limits.max_concurrent_requests {
            0 => engine.config().max_instances as usize,
            n => n,
        };
        Ok(Live {
            auth: Authenticator::new(&config.auth)?,
            limits: RateLimits::new(&config.rate_limits),
            admission: Arc::new(tokio::sync::Semaphore::new(permits)),
            permits,
            config,
        })
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<Registry>,
    cache: Arc<rulebox::ResultCache>,
    /// What a configuration reload replaces, swapped atomically.
    live: arc_swap::ArcSwap<Live>,
    /// Requests turned away, by reason (kept across reloads).
    rejected: Rejected,
    decisions: AtomicU64,
    /// Distinguishes this process's decision ids from other replicas'.
    instance: String,
    /// The bundles polled from URLs.
    poller: Arc<crate::poll::Poller>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The audit trail, when configured.
    decision_log: Option<crate::decisions::DecisionLog>,
    /// Recent traffic, for the health score and the alerts.
    window: crate::health::Window,
    /// Bundle loads that failed since the start.
    failed_loads: AtomicU64,
    /// When the server started (ms since the epoch).
    started_ms: u64,
    /// `metrics.enabled` (fixed at start).
    metrics_on: bool,
    alerts: crate::alerts::Alerts,
    /// Shadow candidates, replay jobs and the watch after activations.
    rollout: crate::rollout::Rollout,
}

impl AppState {
    /// The engine, result cache and (empty) registry `config` describes.
    pub fn new(config: ServerConfig) -> Result<AppState, String> {
        config.validate()?;
        let engine = Engine::new(config.engine.clone()).map_err(|e| format!("engine.{e}"))?;
        let cache =
            Arc::new(rulebox::ResultCache::new(config.cache.clone()).map_err(|e| e.to_string())?);
        let trusted_keys = config
            .bundles
            .trusted_keys
            .iter()
            .map(|p| rulebox::bundle::TrustedKey::from_file(p).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let registry = Arc::new(Registry::new(
            engine.clone(),
            RegistryConfig {
                load: LoadOptions {
                    require_signature: !trusted_keys.is_empty(),
                    trusted_keys,
                    cache: Some(cache.clone()),
                    // The async workers have other requests to serve: rules go to the
                    // blocking pool (measured in benches/http.rs: inline was slower here).
                    inline_below_us: 0,
                    ..LoadOptions::default()
                },
                run_tests: config.bundles.run_tests,
                ..RegistryConfig::default()
            },
        ));
        let poller = Arc::new(crate::poll::Poller::new(
            &config.bundles.urls,
            config.bundles.state_dir.as_deref(),
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let decision_log = crate::decisions::DecisionLog::open(&config.decision_log)?;
        let window = crate::health::Window::new(config.health.window_s);
        let metrics_on = config.metrics.enabled;
        let alerts =
            crate::alerts::Alerts::open(&config.alerts, config.decision_log.path.as_deref())?;
        let rollout = crate::rollout::Rollout::new(
            config.bundles.state_dir.as_deref(),
            (
                config.rollout.shadow_queue,
                config.rollout.shadow_queue_bytes,
            ),
            metrics_on.then(|| metrics.clone()),
        );
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).map_err(|e| e.to_string())?;
        let state = AppState {
            inner: Arc::new(Inner {
                live: arc_swap::ArcSwap::from_pointee(Live::new(config, &engine)?),
                rejected: metrics.rejected(),
                registry,
                cache,
                decisions: AtomicU64::new(0),
                instance: hex::encode(id),
                poller,
                metrics,
                decision_log,
                window,
                failed_loads: AtomicU64::new(0),
                started_ms: crate::decisions::now_ms(),
                metrics_on,
                alerts,
                rollout,
            }),
        };
        let weak = Arc::downgrade(&state.inner);
        state.inner.metrics.read_on_scrape(move || {
            let inner = weak.upgrade()?;
            let state = AppState { inner };
            let health = state.health();
            let live = state.live();
            let firing = state.inner.alerts.firing(&live.config.alerts.rules);
            let inner = &state.inner;
            Some(crate::metrics::Snapshot {
                health: Some(health),
                alerts_firing: firing,
                cache: inner.cache.stats(),
                engine: inner.registry.engine().stats(),
                log: inner.decision_log.as_ref().map(|l| l.stats()),
                polls: inner.poller.statuses(),
            })
        });
        // Evict idle rate-limit keys every minute, while the state lives (when there is a
        // runtime to do it on: there always is under `serve`).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Bundle activations and failed loads, as the registry reports them.
            let mut events = state.inner.registry.subscribe();
            let weak = Arc::downgrade(&state.inner);
            runtime.spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match events.recv().await {
                        Ok(event) => match weak.upgrade() {
                            Some(inner) => {
                                if matches!(event, rulebox::RegistryEvent::LoadFailed { .. }) {
                                    inner.failed_loads.fetch_add(1, Ordering::Relaxed);
                                }
                                inner.metrics.registry_event(&event);
                                AppState { inner }.follow_rollout(&event);
                            }
                            None => break,
                        },
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!("metrics missed {n} registry events");
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            });
            // The host counters into the health window, every slot; the alert rules, every
            // `alerts.interval_ms` (read at each tick, so a reload applies).
            let weak = Arc::downgrade(&state.inner);
            let slot = Duration::from_millis(state.inner.window.slot_ms());
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(slot);
                let mut next_alerts = std::time::Instant::now();
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    let state = AppState { inner };
                    let now = crate::decisions::now_ms();
                    state.inner.window.sample(now, state.host_counters());
                    state.judge_watches(now).await;
                    if std::time::Instant::now() >= next_alerts {
                        let live = state.live();
                        let interval = Duration::from_millis(live.config.alerts.interval_ms);
                        next_alerts = std::time::Instant::now() + interval;
                        if !live.config.alerts.rules.is_empty() {
                            // SQLite writes on transitions: off the async workers.
                            let for_alerts = state.clone();
                            let rules = live.config.alerts.rules.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                for_alerts.evaluate_alerts(&rules, now);
                            })
                            .await;
                        }
                    }
                }
            });
            let weak = Arc::downgrade(&state.inner);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(inner) => inner.live.load().limits.evict_idle(),
                        None => break,
                    }
                }
            });
        }
        Ok(state)
    }

    /// The registry, to load bundles from outside the API (tests, embedders).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Starts watching `bundles.dir`, if configured (call within a tokio runtime).
    pub fn watch_bundles(&self) -> Result<Option<rulebox::Watcher>, String> {
        match &self.live().config.bundles.dir {
            None => Ok(None),
            Some(dir) => self
                .inner
                .registry
                .watch(dir, Duration::from_millis(250))
                .map(Some)
                .map_err(|e| format!("bundles.dir {}: {e}", dir.display())),
        }
    }

    /// Restores the kept archive of every `bundles.urls` source and starts polling them
    /// (call within a tokio runtime). Polling stops when the returned value is dropped.
    pub fn poll_bundles(&self) -> Result<crate::poll::Polling, String> {
        let max = self.live().config.limits.max_upload_bytes;
        self.inner.poller.start(self.inner.registry.clone(), max)
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        self.inner.live.load_full()
    }

    /// Reads the configuration again (same file and profile, current environment) and swaps
    /// it in atomically: credentials, roles, rate limits and request limits. Keys that need
    /// a restart (`listen`, `cache`, `bundles` other than `required`) must be unchanged;
    /// otherwise, and on any invalid value, the running configuration is kept and the error
    /// says why.
    pub fn reload_config(&self) -> Result<ServerConfig, String> {
        let old = self.live();
        let new = ServerConfig::load(old.config.source.as_deref(), old.config.profile.as_deref())
            .map_err(|e| e.to_string())?;
        let bundles = |c: &ServerConfig| crate::config::BundlesConfig {
            required: Vec::new(),
            ..c.bundles.clone()
        };
        for (key, same) in [
            ("listen", new.listen == old.config.listen),
            ("cache", new.cache == old.config.cache),
            ("decision_log", new.decision_log == old.config.decision_log),
            (
                "health.window_s",
                new.health.window_s == old.config.health.window_s,
            ),
            ("alerts.path", new.alerts.path == old.config.alerts.path),
            ("metrics", new.metrics == old.config.metrics),
            (
                "alerts.webhooks",
                new.alerts.webhooks == old.config.alerts.webhooks,
            ),
            ("bundles", bundles(&new) == bundles(&old.config)),
            (
                "rollout.shadow_queue",
                new.rollout.shadow_queue == old.config.rollout.shadow_queue
                    && new.rollout.shadow_queue_bytes == old.config.rollout.shadow_queue_bytes,
            ),
        ] {
            if !same {
                return Err(format!(
                    "`{key}` changed: it applies only at start, so restart to change it (the running configuration is kept)"
                ));
            }
        }
        let live = Live::new(new.clone(), self.inner.registry.engine())?;
        self.inner.live.store(Arc::new(live));
        tracing::info!(profile = ?new.profile, "configuration reloaded");
        Ok(new)
    }

    /// The cumulative host counters the health window samples.
    fn host_counters(&self) -> crate::health::HostCounters {
        let r = &self.inner.rejected;
        let log = self.inner.decision_log.as_ref().map(|l| l.stats());
        crate::health::HostCounters {
            rejected: r.rate_limited.get() + r.overloaded.get() + r.timed_out.get(),
            log_drops: log.map_or(0, |l| l.dropped + l.failed),
            failed_loads: self.inner.failed_loads.load(Ordering::Relaxed),
        }
    }

    /// The names of the bundles with an active revision.
    fn loaded_bundles(&self) -> Vec<String> {
        let status = self.inner.registry.status();
        status.into_iter().map(|s| s.name).collect()
    }

    /// Required and polled bundles without an active revision.
    fn missing_bundles(&self) -> Vec<String> {
        let loaded = self.loaded_bundles();
        let live = self.live();
        let mut missing: Vec<String> = live
            .config
            .bundles
            .required
            .iter()
            .map(String::as_str)
            .chain(self.inner.poller.names())
            .filter(|r| !loaded.iter().any(|l| l == r))
            .map(str::to_owned)
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// The health score now.
    pub fn health(&self) -> crate::health::Report {
        let now = crate::decisions::now_ms();
        let live = self.live();
        let config = &live.config.health;
        let inputs = crate::health::Inputs {
            counters: self.host_counters(),
            breaker_open: self
                .inner
                .cache
                .l2_stats()
                .is_some_and(|l2| l2.breaker == "open"),
            missing: self.missing_bundles(),
            stale: self
                .inner
                .poller
                .stale(now, self.inner.started_ms, config.stale_after_polls),
        };
        crate::health::score(&self.inner.window, config, now, &inputs)
    }

    /// An alert rule's signal now (none: too few samples, or nothing to judge).
    fn signal(&self, rule: &crate::config::AlertRule, now: u64) -> Option<f64> {
        use crate::config::Signal;
        let live = self.live();
        let min = live.config.health.min_samples.max(1);
        let window = &self.inner.window;
        let t = window.totals(now, rule.bundle.as_deref(), rule.rule.as_deref());
        let ratio = |num: u64, den: u64| (den >= min).then(|| num as f64 / den as f64);
        match rule.signal {
            Signal::ErrorRate => ratio(t.rules.errors, t.rules.evals),
            Signal::TimeoutRatio => ratio(t.rules.timeouts, t.rules.evals),
            Signal::CacheHitRate => ratio(t.rules.cached, t.rules.evals),
            Signal::P99Ms => {
                let (n, hist) = match rule.rule {
                    Some(_) => (t.rules.evals, &t.rules.wall_us),
                    None => (t.decisions, &t.decision_us),
                };
                (n >= min)
                    .then(|| hist.quantile(0.99))
                    .flatten()
                    .map(|us| us as f64 / 1000.0)
            }
            Signal::P99Fuel => (t.rules.evals >= min)
                .then(|| t.rules.fuel.quantile(0.99))
                .flatten()
                .map(|f| f as f64),
            Signal::LogDrops => Some(window.host_delta(now, self.host_counters()).log_drops as f64),
            Signal::FailedLoads => {
                Some(window.host_delta(now, self.host_counters()).failed_loads as f64)
            }
            Signal::HealthScore => Some(self.health().score as f64),
        }
    }

    fn evaluate_alerts(&self, rules: &[crate::config::AlertRule], now: u64) {
        self.inner
            .alerts
            .evaluate(rules, now, |rule| self.signal(rule, now));
    }

    pub(crate) fn rollout(&self) -> &crate::rollout::Rollout {
        &self.inner.rollout
    }

    pub(crate) fn alerts(&self) -> &crate::alerts::Alerts {
        &self.inner.alerts
    }

    /// The metrics, when they are on.
    pub(crate) fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.inner.metrics_on.then_some(&*self.inner.metrics)
    }

    pub(crate) fn decision_log(&self) -> Option<&crate::decisions::DecisionLog> {
        self.inner.decision_log.as_ref()
    }

    pub(crate) fn window(&self) -> &crate::health::Window {
        &self.inner.window
    }

    /// Decisions made since the start.
    pub(crate) fn decisions_made(&self) -> u64 {
        self.inner.decisions.load(Ordering::Relaxed)
    }

    /// The alert rules with their states and the last `recent` transitions.
    pub(crate) fn alerts_report(&self, recent: usize) -> Value {
        let live = self.live();
        self.inner.alerts.report(&live.config.alerts.rules, recent)
    }

    fn decision_id(&self) -> String {
        let n = self.inner.decisions.fetch_add(1, Ordering::Relaxed);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{ms:012x}-{}-{n:08x}", self.inner.instance)
    }
}

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/bundles", get(list_bundles))
        .route(
            "/bundles/{name}",
            get(get_bundle).put(put_bundle).delete(delete_bundle),
        )
        .route("/bundles/{name}/evaluate", post(evaluate))
        .route("/bundles/{name}/evaluate/batch", post(evaluate_batch))
        .route("/bundles/{name}/rollback", post(rollback))
        .route(
            "/bundles/{name}/shadow",
            get(crate::rollout::get_shadow).delete(crate::rollout::delete_shadow),
        )
        .route("/bundles/{name}/promote", post(crate::rollout::promote))
        .route("/bundles/{name}/replay", post(crate::rollout::start_replay))
        .route(
            "/bundles/{name}/replay/{id}",
            get(crate::rollout::get_replay).delete(crate::rollout::cancel_replay),
        )
        .route("/cache/stats", get(cache_stats))
        .route("/cache/invalidate", post(cache_invalidate))
        .route("/server/stats", get(server_stats))
        .route("/decisions", get(list_decisions))
        .route("/decisions/stats", get(decision_stats))
        .route("/decisions/{id}", get(get_decision))
        .route("/health", get(health))
        .route("/dashboard/stream", get(crate::dashboard::stream))
        .route("/alerts", get(list_alerts))
        .route("/admin/config/reload", post(reload_config))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::dashboard::page))
        .fallback(|| async { ApiError::new("not-found", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        // Bodies are read (and bounded) by the handlers themselves, so that an oversized
        // one gets the API's JSON error.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Counts every request by route template (never the raw path), method and status.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let response = next.run(request).await;
    if !state.inner.metrics_on {
        return response;
    }
    state.inner.metrics.http(
        &route,
        method.as_str(),
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format. Unauthenticated, like `/healthz`: it carries counts and costs, never
/// inputs, ids or credentials; bind the server to a private network.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.inner.metrics_on {
        return ApiError::new("not-found", "metrics are off: set metrics.enabled = true")
            .into_response();
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let m = &state.inner.metrics;
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.render_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            m.render_text(),
        )
            .into_response()
    }
}

/// Admission: at most `limits.max_concurrent_requests` at once, the rest answered 503 at
/// once; each within `limits.request_timeout_ms`.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let rejected = &state.inner.rejected;
    let live = state.live();
    let Ok(_permit) = live.admission.clone().try_acquire_owned() else {
        rejected.overloaded.inc();
        return ApiError::new("overloaded", "too many requests in flight; retry shortly")
            .into_response();
    };
    let timeout = Duration::from_millis(live.config.limits.request_timeout_ms);
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            rejected.timed_out.inc();
            ApiError::new(
                "timeout",
                format!("the request took longer than {} ms", timeout.as_millis()),
            )
            .into_response()
        }
    }
}

/// The authenticated caller of a request.
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let live = state.live();
        let caller = live.auth.authenticate(authorization, peer)?;
        live.limits.check(&caller, &state.inner.rejected)?;
        Ok(Caller(caller))
    }
}

/// Reads a body of at most `max` bytes.
pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            "too-large",
            format!("the request body is larger than {max} bytes (or broke off)"),
        )
    })
}

/// The request's media type, lowercased, without parameters (`application/json`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

/// A JSON request body: the right content type, within the size and depth limits.
pub(crate) async fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    if media_type(headers).as_deref() != Some("application/json") {
        return Err(ApiError::new(
            "unsupported-media-type",
            "send the body as Content-Type: application/json",
        ));
    }
    let live = state.live();
    let limits = &live.config.limits;
    let bytes = read_body(body, limits.max_body_bytes).await?;
    let depth = json_depth(&bytes);
    if depth > limits.max_json_depth {
        return Err(ApiError::new(
            "invalid-request",
            format!(
                "the JSON nests {depth} levels deep, over the limit of {}",
                limits.max_json_depth
            ),
        ));
    }
    Ok(bytes)
}

/// The deepest nesting of arrays and objects in JSON text (strings skipped), found without
/// parsing it: a deep document is refused before a parser recurses into it.
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

pub(crate) fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::new(
        "invalid-request",
        format!("the body is not the expected JSON: {e}"),
    )
}

fn input_of(raw: &RawValue) -> Result<Input, ApiError> {
    Input::from_json(raw.get()).map_err(|e| ApiError::new("invalid-input", e.to_string()))
}

/// The active revision of `name`, or the kept `revision`.
fn bundle_of(
    state: &AppState,
    name: &str,
    revision: Option<&str>,
) -> Result<Arc<Bundle>, ApiError> {
    let registry = &state.inner.registry;
    Ok(match revision {
        None => registry.get(name)?,
        Some(r) => registry.get_revision(name, r)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateRequest<'a> {
    #[serde(borrow)]
    input: &'a RawValue,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    revision: Option<String>,
}

/// A decision as the API returns it: the result the CLI prints, plus `decision_id` and
/// the echoed `request_id`. Serialized straight to the response, with no JSON tree between.
#[derive(serde::Serialize)]
struct Decided<'a> {
    #[serde(flatten)]
    result: rulebox::BundleResult,
    decision_id: String,
    request_id: Option<&'a str>,
}

/// Evaluates `input` on `bundle`, counts the decision and queues it for the decision log
/// (and, when `pinned` is false, the active revision was asked for, for its shadow).
/// In sync mode the returned commit must succeed before the decision is acknowledged.
async fn decide<'a>(
    state: &AppState,
    caller: &Principal,
    (bundle, pinned): (&Bundle, bool),
    input: &Input,
    request_id: Option<&'a str>,
) -> Result<(Decided<'a>, Option<Commit>), ApiError> {
    let result = bundle.evaluate(input).await.inspect_err(|_| {
        let rejected = &state.inner.rejected;
        rejected.overloaded.inc();
    })?;
    if state.inner.metrics_on {
        state.inner.metrics.decision(&result);
    }
    let now = crate::decisions::now_ms();
    state.inner.window.record(now, &result);
    state.inner.rollout.observe(&result);
    let decision_id = state.decision_id();
    if !pinned {
        // Only decisions of the active revision are compared with its shadow candidate.
        state.inner.rollout.sample(&result, input, &decision_id);
    }
    tracing::info!(
        decision_id = %decision_id,
        request_id = request_id.unwrap_or(""),
        bundle = %result.bundle,
        revision = %result.revision,
        verdict = result.verdict.as_str(),
        wall_us = result.wall_us,
        "decision"
    );
    let mut commit = None;
    if let Some(log) = &state.inner.decision_log {
        match log.enqueue(
            &decision_id,
            now,
            &result,
            input.value(),
            request_id,
            &caller.name,
        ) {
            Ok(c) => commit = c,
            // Host trouble, never an unlogged decision: the caller retries.
            Err(e) if log.is_sync() => return Err(log_unavailable(e)),
            Err(e) => tracing::debug!("decision {decision_id} not logged: {e}"),
        }
    }
    let decided = Decided {
        result,
        decision_id,
        request_id,
    };
    Ok((decided, commit))
}

fn log_unavailable(e: crate::decisions::LogError) -> ApiError {
    ApiError::new("log-unavailable", e.to_string())
}

async fn evaluate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.check(Action::Evaluate, Some(&name))?;
    let bytes = json_body(&state, &headers, body).await?;
    let request: EvaluateRequest = serde_json::from_slice(&bytes).map_err(invalid_json)?;
    let input = input_of(request.input)?;
    let bundle = bundle_of(&state, &name, request.revision.as_deref())?;
    let pinned = request.revision.is_some();
    let (decided, commit) = decide(
        &state,
        &caller,
        (&bundle, pinned),
        &input,
        request.request_id.as_deref(),
    )
    .await?;
    if let Some(commit) = commit {
        commit.wait().await.map_err(log_unavailable)?;
    }
    Ok(Json(decided).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    inputs: Vec<&'a RawValue>,
    #[serde(default)]
    common_input: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    revision: Option<String>,
}

async fn evaluate_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Evaluate, Some(&name))?;
    let bytes = json_body(&state, &headers, body).await?;
    let request: BatchRequest = serde_json::from_slice(&bytes).map_err(invalid_json)?;
    let max = state.live().config.limits.max_batch;
    if request.inputs.len() > max {
        return Err(ApiError::new(
            "invalid-request",
            format!(
                "{} inputs, over the batch limit of {max}",
                request.inputs.len()
            ),
        ));
    }
    let bundle = bundle_of(&state, &name, request.revision.as_deref())?;
    let mut decided = Vec::with_capacity(request.inputs.len());
    for raw in request.inputs {
        // Each item stands alone: its error is its own, never the batch's.
        let item = async {
            let mut input = input_of(raw)?;
            if let Some(common) = &request.common_input {
                let mut merged = common.clone();
                if let Value::Object(own) = input.value() {
                    merged.extend(own.clone());
                }
                input = Input::from_value(Value::Object(merged))
                    .map_err(|e| ApiError::new("invalid-input", e.to_string()))?;
            }
            let pinned = request.revision.is_some();
            let (decided, commit) =
                decide(&state, &caller, (&bundle, pinned), &input, None).await?;
            let value = serde_json::to_value(decided)
                .map_err(|e| ApiError::new("internal", e.to_string()))?;
            Ok::<_, ApiError>((value, commit))
        };
        decided.push(item.await);
    }
    // Sync mode: every item's entry is queued before any is awaited, so the batch shares
    // the writer's transactions instead of paying one commit per item in turn. An item
    // whose entry did not commit is an error, not an acknowledged decision.
    let mut results = Vec::with_capacity(decided.len());
    for item in decided {
        let item = match item {
            Ok((value, Some(commit))) => {
                commit.wait().await.map(|()| value).map_err(log_unavailable)
            }
            Ok((value, None)) => Ok(value),
            Err(e) => Err(e),
        };
        results.push(match item {
            Ok(mut v) => {
                v["ok"] = true.into();
                v
            }
            Err(e) => json!({"ok": false, "error": {"kind": e.kind, "message": e.message}}),
        });
    }
    Ok(Json(json!({ "bundle": name, "results": results })))
}

pub(crate) fn status_json(state: &AppState, name: &str) -> Result<Value, ApiError> {
    let (status, bundle) = state.inner.registry.status_of(name)?;
    let mut out =
        serde_json::to_value(&status).map_err(|e| ApiError::new("internal", e.to_string()))?;
    out["active"] = serde_json::to_value(bundle.describe()).unwrap_or_default();
    out["source"] = source_json(state, name, &bundle);
    out["rollout"] = state.rollout_json(name);
    Ok(out)
}

/// Where the active revision came from: a polled URL (with its ETag and poll counters), the
/// watched directory, or an upload.
fn source_json(state: &AppState, name: &str, bundle: &Bundle) -> Value {
    let origin = bundle.origin().display().to_string();
    if let Some(poll) = state.inner.poller.status(name)
        && poll.digest.as_deref() == Some(bundle.digest())
    {
        let mut out = serde_json::to_value(poll).unwrap_or_default();
        out["kind"] = "url".into();
        return out;
    }
    let live = state.live();
    let kind = match &live.config.bundles.dir {
        Some(dir) if bundle.origin().starts_with(dir) => "directory",
        _ => "upload",
    };
    let mut out = json!({ "kind": kind, "path": origin });
    if let Some(poll) = state.inner.poller.status(name) {
        // Polled, but the active revision came from elsewhere (an upload, a rollback).
        out["polled"] = serde_json::to_value(poll).unwrap_or_default();
    }
    out
}

async fn list_bundles(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let bundles: Vec<Value> = state
        .inner
        .registry
        .status()
        .into_iter()
        .filter(|s| caller.sees(&s.name))
        .map(|s| {
            let mut out = serde_json::to_value(&s).unwrap_or_default();
            if let Ok(bundle) = state.inner.registry.get(&s.name) {
                out["source"] = source_json(&state, &s.name, &bundle);
            }
            out
        })
        .collect();
    Ok(Json(json!({ "bundles": bundles })))
}

async fn get_bundle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(status_json(&state, &name)?))
}

/// An uploaded bundle archive: the right content type (else `hint`), within the upload
/// limit.
pub(crate) async fn archive_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    hint: &str,
) -> Result<Bytes, ApiError> {
    if !matches!(
        media_type(headers).as_deref(),
        Some("application/gzip" | "application/x-gzip" | "application/octet-stream")
    ) {
        return Err(ApiError::new("unsupported-media-type", hint));
    }
    read_body(body, state.live().config.limits.max_upload_bytes).await
}

/// Writes an uploaded archive to a temporary file in `bundles.upload_dir`, to load from.
pub(crate) fn stage_upload(
    state: &AppState,
    bytes: &[u8],
    prefix: &str,
) -> Result<tempfile::NamedTempFile, ApiError> {
    let dir = state
        .live()
        .config
        .bundles
        .upload_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let cannot =
        |e: std::io::Error| ApiError::new("internal", format!("cannot stage the upload: {e}"));
    let mut file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tar.gz")
        .tempfile_in(&dir)
        .map_err(cannot)?;
    std::io::Write::write_all(&mut file, bytes).map_err(cannot)?;
    Ok(file)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutParams {
    /// `shadow`: stage the bundle as the shadow candidate instead of activating it.
    mode: Option<String>,
    /// With `mode=shadow`: the share of live decisions to evaluate on it.
    sample: Option<f64>,
}

async fn put_bundle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let params: PutParams = query_of(&uri)?;
    let shadow = match params.mode.as_deref() {
        None | Some("active") => false,
        Some("shadow") => true,
        Some(other) => {
            return Err(ApiError::new(
                "invalid-request",
                format!("mode `{other}`: use `shadow`, or leave it out to activate"),
            ));
        }
    };
    if params.sample.is_some() && !shadow {
        return Err(ApiError::new(
            "invalid-request",
            "`sample` goes with mode=shadow",
        ));
    }
    let bytes = archive_body(
        &state,
        &headers,
        body,
        "send the bundle as a .tar.gz with Content-Type: application/gzip",
    )
    .await?;
    if shadow {
        return crate::rollout::put_shadow(&state, &caller, &name, &bytes, params.sample).await;
    }
    let file = stage_upload(&state, &bytes, "rulebox-upload-")?;
    let activation = state.inner.registry.load_as(file.path(), &name).await?;
    tracing::info!(bundle = %name, revision = %activation.revision, by = %caller.name, "bundle uploaded and activated");
    let mut out = status_json(&state, &name)?;
    out["activation"] = serde_json::to_value(&activation).unwrap_or_default();
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    to_revision: Option<String>,
}

async fn rollback(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let request = if headers.contains_key(header::CONTENT_TYPE) {
        let bytes = json_body(&state, &headers, body).await?;
        serde_json::from_slice::<RollbackRequest>(&bytes).map_err(invalid_json)?
    } else {
        RollbackRequest::default()
    };
    let registry = &state.inner.registry;
    let activation = match &request.to_revision {
        None => registry.rollback(&name)?,
        Some(r) => registry.rollback_to(&name, r)?,
    };
    tracing::warn!(bundle = %name, revision = %activation.revision, by = %caller.name, "bundle rolled back");
    Ok(Json(serde_json::to_value(&activation).unwrap_or_default()))
}

async fn delete_bundle(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    state.inner.registry.unload(&name)?;
    tracing::warn!(bundle = %name, by = %caller.name, "bundle deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn cache_stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let mut stats = state.inner.cache.stats();
    stats.rules.retain(|r| caller.sees(&r.bundle));
    Ok(Json(serde_json::to_value(stats).unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InvalidateRequest {
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    rule: Option<String>,
}

async fn cache_invalidate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = json_body(&state, &headers, body).await?;
    let request: InvalidateRequest = serde_json::from_slice(&bytes).map_err(invalid_json)?;
    // A scoped credential may only invalidate its own bundles, never everything.
    caller.check(
        Action::Operate,
        Some(request.bundle.as_deref().unwrap_or("*")),
    )?;
    let cache = &state.inner.cache;
    let done = match (&request.bundle, &request.rule) {
        (Some(b), Some(r)) => cache.invalidate_rule(b, r),
        (Some(b), None) => cache.invalidate_bundle(b),
        (None, Some(_)) => {
            return Err(ApiError::new("invalid-request", "`rule` needs `bundle`"));
        }
        (None, None) => cache.invalidate_all(),
    };
    done.map_err(|e| ApiError::new("cache-unavailable", e.to_string()))?;
    Ok(Json(
        json!({"invalidated": {"bundle": request.bundle, "rule": request.rule}}),
    ))
}

async fn server_stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let live = state.live();
    let engine = state.inner.registry.engine().stats();
    Ok(Json(json!({
        "rejected": live.limits.stats(&state.inner.rejected),
        "requests_in_flight": live.permits - live.admission.available_permits(),
        "max_concurrent_requests": live.permits,
        "engine": engine,
        "decision_log": state.inner.decision_log.as_ref().map(|l| l.stats()),
    })))
}

/// Runs a query on the decision log off the async workers (SQLite blocks). 404 when the
/// server has no decision log.
async fn with_log<T: Send + 'static>(
    state: &AppState,
    query: impl FnOnce(&crate::decisions::DecisionLog) -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let log = state.inner.decision_log.as_ref().ok_or_else(|| {
            ApiError::new(
                "not-found",
                "no decision log: set decision_log.path in the configuration",
            )
        })?;
        query(log).map_err(|e| ApiError::new("log-unavailable", e))
    })
    .await
    .map_err(|e| ApiError::new("internal", e.to_string()))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsQuery {
    bundle: Option<String>,
    verdict: Option<String>,
    rule: Option<String>,
    error_kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<i64>,
    limit: Option<usize>,
}

/// The query string as `T`, or a 400 naming what is wrong.
pub(crate) fn query_of<T: serde::de::DeserializeOwned>(
    uri: &axum::http::Uri,
) -> Result<T, ApiError> {
    axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::new("invalid-request", e.body_text()))
}

/// `since`/`until` as ms since the epoch.
pub(crate) fn time_param(
    name: &str,
    value: Option<&str>,
    now: u64,
) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| crate::decisions::parse_time(v, now))
        .transpose()
        .map_err(|e| ApiError::new("invalid-request", format!("{name}: {e}")))
}

/// `GET /v1/decisions`: newest first, filtered, paged (`next_cursor`).
async fn list_decisions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let q: DecisionsQuery = query_of(&uri)?;
    if let Some(b) = &q.bundle {
        caller.check(Action::Read, Some(b))?;
    }
    let now = crate::decisions::now_ms();
    let filter = crate::decisions::Filter {
        since_ms: time_param("since", q.since.as_deref(), now)?,
        until_ms: time_param("until", q.until.as_deref(), now)?,
        bundle: q.bundle,
        verdict: q.verdict,
        rule: q.rule,
        error_kind: q.error_kind,
        cursor: q.cursor,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
        scope: caller.scope().map(<[String]>::to_vec),
    };
    let (decisions, next) = with_log(&state, move |log| log.reader().query(&filter)).await?;
    Ok(Json(json!({ "decisions": decisions, "next_cursor": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    group_by: Option<String>,
    interval: Option<String>,
    since: Option<String>,
    until: Option<String>,
    bundle: Option<String>,
    rule: Option<String>,
}

/// `GET /v1/decisions/stats`: series over time from the per-minute rollups, so they reach
/// back past the detail's retention. Default: the last hour in 5-minute points.
async fn decision_stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let q: StatsParams = query_of(&uri)?;
    if let Some(b) = &q.bundle {
        caller.check(Action::Read, Some(b))?;
    }
    let now = crate::decisions::now_ms();
    let bad = |e: String| ApiError::new("invalid-request", e);
    let query = crate::decisions::StatsQuery {
        since_ms: time_param("since", q.since.as_deref(), now)?.unwrap_or(now - 3_600_000),
        until_ms: time_param("until", q.until.as_deref(), now)?.unwrap_or(now + 1),
        interval_ms: q
            .interval
            .as_deref()
            .map(crate::decisions::parse_interval)
            .transpose()
            .map_err(|e| bad(format!("interval: {e}")))?
            .unwrap_or(300_000),
        group_by: crate::decisions::GroupBy::parse_list(q.group_by.as_deref().unwrap_or(""))
            .map_err(bad)?,
        bundle: q.bundle,
        rule: q.rule,
        scope: caller.scope().map(<[String]>::to_vec),
    };
    // A bad interval or range is the caller's error, not the log's.
    query.validate().map_err(bad)?;
    let stats = with_log(&state, move |log| log.reader().stats(&query)).await?;
    Ok(Json(stats))
}

/// `GET /v1/decisions/{id}`: 404 when unknown or outside the caller's scope.
async fn get_decision(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let found = with_log(&state, move |log| log.reader().get(&id)).await?;
    found
        .filter(|d| d["bundle"].as_str().is_some_and(|b| caller.sees(b)))
        .map(Json)
        .ok_or_else(|| ApiError::new("not-found", "no such decision"))
}

async fn reload_config(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, None)?;
    let config = state.reload_config().map_err(|e| {
        tracing::warn!(by = %caller.name, "configuration reload refused: {e}");
        ApiError::new("config-invalid", e)
    })?;
    tracing::info!(by = %caller.name, "configuration reloaded");
    Ok(Json(json!({"reloaded": true, "profile": config.profile})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyParams {
    min_score: Option<u32>,
}

/// `GET /readyz`: every required and polled bundle active; with `?min_score=N`, also a
/// health score of at least N (the report comes with a refusal).
async fn readyz(State(state): State<AppState>, uri: axum::http::Uri) -> Response {
    let q: ReadyParams = match query_of(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let missing = state.missing_bundles();
    if !missing.is_empty() {
        let mut e = ApiError::new(
            "not-ready",
            format!("bundles without an active revision: {missing:?}"),
        );
        e.detail = Some(Box::new(json!({"missing": missing})));
        return e.into_response();
    }
    let mut out = json!({"status": "ready", "bundles": state.loaded_bundles()});
    if let Some(min) = q.min_score {
        let report = state.health();
        if report.score < min {
            let mut e = ApiError::new(
                "not-ready",
                format!("health score {} is below {min}", report.score),
            );
            e.detail = Some(Box::new(serde_json::to_value(&report).unwrap_or_default()));
            return e.into_response();
        }
        out["score"] = report.score.into();
    }
    Json(out).into_response()
}

/// `GET /v1/health`: the score, its components, and the reason for each deduction.
async fn health(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let mut out = serde_json::to_value(state.health()).unwrap_or_default();
    // What each rule costs in the window (the dashboard's table), within the caller's scope.
    let rules = state.rule_costs(&caller, crate::decisions::now_ms());
    out["rules"] = rules.into();
    Ok(Json(out))
}

/// `GET /v1/alerts`: every rule with its state, and the recent transitions.
async fn list_alerts(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, None)?;
    let rules = state.live().config.alerts.rules.clone();
    let report = tokio::task::spawn_blocking(move || state.inner.alerts.report(&rules, 50))
        .await
        .map_err(|e| ApiError::new("internal", e.to_string()))?;
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{\"]]"}"#), 1);
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(&[b'['; 1000]), 1000);
    }
}
