//! The server's configuration: one TOML file with `[profile.NAME]` overlays, environment
//! overrides (`RULEBOX_SECTION__KEY`), validated once, secrets redacted when printed.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `rulebox serve` reads. Every field has a production default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The profile these values were selected for (`dev`, `staging`, `prod`, or none).
    /// Set by the loader, not in the file.
    #[serde(skip)]
    pub profile: Option<String>,
    /// The file these values were read from, for reloading. Set by the loader.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Credentials and anonymous access.
    pub auth: AuthConfig,
    /// Where bundles come from and which must be active for readiness.
    pub bundles: BundlesConfig,
    /// The result cache (`redis_url` for a shared one). Default: in-process only.
    pub cache: rulebox::CacheConfig,
    /// Requests per credential, by role (anonymous callers: per address, as evaluators).
    pub rate_limits: RateLimitsConfig,
    /// The decision log (audit trail). Default: off.
    pub decision_log: DecisionLogConfig,
    /// The health score's window and thresholds (`GET /v1/health`, `/readyz?min_score=`).
    pub health: HealthConfig,
    /// Alert rules and where notifications go (`GET /v1/alerts`).
    pub alerts: AlertsConfig,
    /// The Prometheus metrics (`GET /metrics`).
    pub metrics: MetricsConfig,
    /// The engine: default and maximum rule limits, the instance pool (`max_instances`,
    /// `core_instances_per_rule`: Python rules need 14), concurrency, and `cache_dir` for
    /// compiled components, which spares a restart recompiling (an interpreted rule takes
    /// seconds). Default: [`rulebox::EngineConfig::default`].
    pub engine: rulebox::EngineConfig,
    /// Safe rollout: shadow candidates, the promotion guard, and the watch after each
    /// activation that rolls a failing revision back.
    pub rollout: RolloutConfig,
}

/// Safe rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// The share of live decisions (0 to 1) also evaluated on a bundle's shadow candidate,
    /// unless its upload asks for another (`PUT ...?mode=shadow&sample=0.5`). Default 0.1.
    pub shadow_sample: f64,
    /// Sampled decisions waiting for the shadow worker; more are dropped and counted, never
    /// waited for. Applies at start. Default 1000.
    pub shadow_queue: usize,
    /// The most JSON bytes of sampled inputs waiting (so that large inputs cannot hold the
    /// memory the count allows); beyond, sampled decisions are dropped and counted. Applies
    /// at start. Default 32 MiB.
    pub shadow_queue_bytes: usize,
    /// Refuse to promote a shadow candidate whose sampled verdicts moved too much (an
    /// operator can override it with a reason). Default: none (promotion is not judged).
    pub guard: Option<PromotionGuard>,
    /// After each activation, compare the new revision with the one it replaced and roll
    /// back automatically when it does worse.
    pub watch: WatchConfig,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            shadow_sample: 0.1,
            shadow_queue: 1000,
            shadow_queue_bytes: 32 << 20,
            guard: None,
            watch: WatchConfig::default(),
        }
    }
}

/// What a shadow candidate must show before `POST .../promote` takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionGuard {
    /// Sampled decisions evaluated on the candidate, at least. Default 100.
    pub min_samples: u64,
    /// Decisions whose verdict would become `allow` from anything else, at most this
    /// percentage of those sampled. Default 1.0.
    pub max_to_allow_pct: f64,
    /// Decisions whose verdict would change at all, at most this percentage. Default 100
    /// (any).
    pub max_changed_pct: f64,
}

impl Default for PromotionGuard {
    fn default() -> Self {
        PromotionGuard {
            min_samples: 100,
            max_to_allow_pct: 1.0,
            max_changed_pct: 100.0,
        }
    }
}

/// The watch window after an activation (upload, poll, directory, promotion; not a
/// rollback). The new revision's rule error rate and timeout ratio are compared with what
/// the previous revision showed in the health window before it, and the health score with
/// its value then; when one is worse by more than its limit, the previous revision is
/// restored, an alert fires and the event is kept with its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Default true.
    pub enabled: bool,
    /// How long a new revision is watched, in seconds. Default 300.
    pub window_s: u64,
    /// Rule evaluations on the new revision before it is judged. Default 20.
    pub min_evaluations: u64,
    /// Roll back when the error rate (errors of rule evaluations) exceeds the previous
    /// revision's by more than this. Default 0.05.
    pub max_error_rate_increase: f64,
    /// Roll back when the timeout ratio (timeouts and fuel exhaustion of rule evaluations)
    /// exceeds the previous revision's by more than this. Default 0.02.
    pub max_timeout_ratio_increase: f64,
    /// Roll back when the health score falls by more than this many points (it is the
    /// whole server's: set it higher than 100 to leave it out). Default 30.
    pub max_health_drop: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            enabled: true,
            window_s: 300,
            min_evaluations: 20,
            max_error_rate_increase: 0.05,
            max_timeout_ratio_increase: 0.02,
            max_health_drop: 30,
        }
    }
}

/// The Prometheus metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count requests and decisions and serve them on `GET /metrics` (404 when off). The
    /// health score and alerts work either way. Default true.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// A level a signal is judged against: at `warning` it starts to cost health score, at
/// `critical` it costs the component's whole weight.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Where a deduction starts.
    pub warning: f64,
    /// Where the deduction is the component's whole weight.
    pub critical: f64,
}

const fn threshold(warning: f64, critical: f64) -> Threshold {
    Threshold { warning, critical }
}

/// The health score: what recent traffic is judged on. Lenient in `dev`, strict in `prod`
/// (set them per profile: `[profile.prod.health]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// The window the signals are taken over, in seconds. Default 300.
    pub window_s: u64,
    /// Fewer rule evaluations (or decisions) than this in the window are not judged as
    /// ratios or percentiles: too few to mean anything. Default 20.
    pub min_samples: u64,
    /// Rule evaluations that errored, of all. Default 0.01 / 0.05.
    pub error_rate: Threshold,
    /// Rule evaluations that timed out or ran out of fuel, of all. Default 0.005 / 0.02.
    pub timeout_ratio: Threshold,
    /// The p99 of decision time, in milliseconds. Default 50 / 250.
    pub p99_ms: Threshold,
    /// Bundle loads that failed in the window. Default 1 / 3.
    pub failed_loads: Threshold,
    /// A polled bundle is stale when its URL has not answered for this many poll
    /// intervals. Default 3.
    pub stale_after_polls: u32,
    /// Decision-log entries dropped or failed in the window. Default 1 / 100.
    pub log_drops: Threshold,
    /// Requests turned away (rate limits, overload, timeouts) of all decisions asked for.
    /// Default 0.01 / 0.10.
    pub rejected_ratio: Threshold,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window_s: 300,
            min_samples: 20,
            error_rate: threshold(0.01, 0.05),
            timeout_ratio: threshold(0.005, 0.02),
            p99_ms: threshold(50.0, 250.0),
            failed_loads: threshold(1.0, 3.0),
            stale_after_polls: 3,
            log_drops: threshold(1.0, 100.0),
            rejected_ratio: threshold(0.01, 0.10),
        }
    }
}

/// What an alert rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Rule evaluations that errored, of all (per bundle or rule when given).
    ErrorRate,
    /// Rule evaluations that timed out or ran out of fuel, of all.
    TimeoutRatio,
    /// p99 time in milliseconds: of decisions, or of one rule's evaluations.
    P99Ms,
    /// p99 fuel of rule evaluations (of one rule, when given).
    P99Fuel,
    /// Rule evaluations served from the result cache, of all.
    CacheHitRate,
    /// Decision-log entries dropped or failed in the window.
    LogDrops,
    /// Bundle loads that failed in the window.
    FailedLoads,
    /// The health score (0-100).
    HealthScore,
}

/// How a signal is compared with the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Above.
    #[serde(rename = ">")]
    Above,
    /// Below.
    #[serde(rename = "<")]
    Below,
}

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Look soon.
    Warning,
    /// Look now.
    Critical,
}

/// One alert rule: `signal` (of `bundle`/`rule`, where it applies) `op` `threshold` for
/// `for_s` seconds fires; back on the right side, it resolves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// A unique name (`payments-timeouts`).
    pub name: String,
    /// What it watches.
    pub signal: Signal,
    /// Only this bundle. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Only this rule (needs `bundle`). Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `>` or `<`.
    pub op: Comparison,
    /// The value compared with.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires, in seconds (pending until
    /// then). Default 60.
    #[serde(default = "default_for_s")]
    pub for_s: u64,
    /// `warning` or `critical`. Default `warning`.
    #[serde(default = "default_severity")]
    pub severity: Severity,
}

fn default_for_s() -> u64 {
    60
}
fn default_severity() -> Severity {
    Severity::Warning
}

/// Alerting: the rules, how often they are evaluated, where notifications go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The rules (`[[alerts.rules]]`).
    pub rules: Vec<AlertRule>,
    /// How often the rules are evaluated, in milliseconds. Default 10,000.
    pub interval_ms: u64,
    /// URLs that get each transition to firing and to resolved as a JSON POST (retried
    /// with backoff, off the request path).
    pub webhooks: Vec<String>,
    /// The SQLite file the alert states and their history are kept in. Default: the
    /// decision log's file; with neither, states are kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules: Vec::new(),
            interval_ms: 10_000,
            webhooks: Vec::new(),
            path: None,
        }
    }
}

/// How a decision reaches the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    /// Queued (bounded); when the queue is full the entry is dropped and counted, never
    /// blocking or growing. The response does not wait for the write.
    #[default]
    Async,
    /// Written and committed (fsync) before the response: an acknowledged decision is in
    /// the file even if the process is killed. A full queue answers 503, not an unlogged
    /// decision.
    Sync,
}

/// What a mask does to the value at its JSON pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskAction {
    /// Replaced by `"<erased>"`.
    Erase,
    /// Replaced by `"sha256:HEX"` of its JSON text (joinable, not readable).
    Hash,
}

/// A field of the input not to keep as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask {
    /// A JSON pointer into the input (`/customer/email`).
    pub pointer: String,
    /// What to do with it. Default `erase`.
    #[serde(default = "default_mask_action")]
    pub action: MaskAction,
}

fn default_mask_action() -> MaskAction {
    MaskAction::Erase
}

/// The decision log: an embedded SQLite file (WAL), one writer thread, batched commits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// The SQLite file. Default: none (no decision log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `async` (default) or `sync`.
    pub mode: LogMode,
    /// Entries waiting for the writer, at most. Default 10,000.
    pub queue: usize,
    /// Entries per transaction, at most. Default 512.
    pub batch: usize,
    /// Input fields to mask before logging, by bundle name (`"*"`: every bundle).
    pub mask: std::collections::BTreeMap<String, Vec<Mask>>,
    /// Days each decision's detail is kept. Every decision is also added to per-minute
    /// rollups as it is written, so deleting detail loses no aggregate. Default 7.
    pub retention_days: u32,
    /// Days the per-minute rollups are kept (at least `retention_days`). Default 90.
    pub rollup_days: u32,
    /// How often the writer looks for expired rows, in milliseconds (it deletes them a
    /// small batch at a time between writes). Default 60,000.
    pub retention_check_ms: u64,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            path: None,
            mode: LogMode::Async,
            queue: 10_000,
            batch: 512,
            mask: Default::default(),
            retention_days: 7,
            rollup_days: 90,
            retention_check_ms: 60_000,
        }
    }
}

/// A token bucket: `per_second` sustained, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

/// Rate limits by role. Beyond them a request is answered 429 with Retry-After.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Default 50/s, burst 100.
    pub viewer: Rate,
    /// Default 5,000/s, burst 10,000: a service's decision traffic.
    pub evaluator: Rate,
    /// Default 10/s, burst 20: loads, rollbacks, invalidations.
    pub operator: Rate,
    /// Default 50/s, burst 100.
    pub admin: Rate,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        let rate = |per_second, burst| Rate { per_second, burst };
        RateLimitsConfig {
            viewer: rate(50, 100),
            evaluator: rate(5000, 10_000),
            operator: rate(10, 20),
            admin: rate(50, 100),
        }
    }
}

/// Request limits; all enforced before any work is done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, in bytes (evaluation, batch). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Largest bundle upload, in bytes. Default 64 MiB.
    pub max_upload_bytes: usize,
    /// Deepest JSON nesting accepted in a request. Default 64.
    pub max_json_depth: usize,
    /// Most inputs in one batch. Default 100.
    pub max_batch: usize,
    /// Longest a request may take, in milliseconds; then 503. Default 10,000.
    pub request_timeout_ms: u64,
    /// Requests handled at once; more are answered 503 with Retry-After at once (not
    /// queued). 0: the engine's instance pool (`max_instances`). Default 0.
    pub max_concurrent_requests: usize,
    /// How long shutdown waits for requests in flight, in milliseconds. Default 10,000.
    pub shutdown_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 1 << 20,
            max_upload_bytes: 64 << 20,
            max_json_depth: 64,
            max_batch: 100,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 0,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// A role: what a credential may do. Ordered from least to most privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read bundle status and cache stats.
    Viewer,
    /// Evaluate.
    Evaluator,
    /// Read, load, roll back, delete bundles, invalidate the cache.
    Operator,
    /// Everything.
    Admin,
}

/// One static API token, stored as the SHA-256 of the token (never the token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (in logs, never the token).
    pub name: String,
    /// SHA-256 of the token, hex (`rulebox token new` prints both).
    pub sha256: String,
    /// What it may do.
    pub role: Role,
    /// The bundles it may touch. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundles: Option<Vec<String>>,
}

/// Credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static API tokens.
    pub tokens: Vec<TokenConfig>,
    /// JSON Web Tokens from an identity provider. Default: none accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Let requests without credentials from a loopback address evaluate (development
    /// only: the `prod` profile refuses it). Default false.
    pub anonymous_loopback_evaluator: bool,
}

/// A JWT signing algorithm the server accepts. Each key is pinned to one: a token whose
/// header names another algorithm is refused (no `none`, no RS/HS confusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256; the key file holds the shared secret (at least 32 bytes).
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256; the key file holds the PEM public key.
    RS256,
    /// Ed25519; the key file holds the PEM public key.
    EdDSA,
}

/// One key that may sign JWTs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// The `kid` a token names to pick this key. Default: none (tried for any token of the
    /// key's algorithm that names no `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub algorithm: JwtAlgorithm,
    /// The PEM public key (RS256, EdDSA) or the shared secret (HS256), read at start and on
    /// every configuration reload.
    pub file: PathBuf,
}

/// JWT credentials: signature by a configured key, `exp` required, `nbf`, `iss` and `aud`
/// checked; the roles come from a claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The keys tokens may be signed with (at least one).
    pub keys: Vec<JwtKey>,
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (a token's `aud` must contain it).
    pub audience: String,
    /// The claim holding the role, or a list of roles (unknown names are ignored). Default
    /// `roles`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The claim holding the list of bundles the token may touch; absent claim: all.
    /// Default `bundles`.
    #[serde(default = "default_bundles_claim")]
    pub bundles_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
}

fn default_roles_claim() -> String {
    "roles".into()
}
fn default_bundles_claim() -> String {
    "bundles".into()
}
fn default_leeway() -> u64 {
    30
}

/// Bundle sources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundlesConfig {
    /// A directory watched for bundle directories and archives. Default: none.
    pub dir: Option<PathBuf>,
    /// Where uploaded archives are kept while they load. Default: the system temp dir.
    pub upload_dir: Option<PathBuf>,
    /// Bundles that must have an active revision for `/readyz`. Default: none.
    pub required: Vec<String>,
    /// Trusted public key files: every bundle must then be signed by one of them.
    pub trusted_keys: Vec<PathBuf>,
    /// Run each bundle's golden cases before activating it. Default true.
    pub run_tests: bool,
    /// Bundles polled from URLs (`[[bundles.urls]]`). Each must be active for `/readyz`.
    pub urls: Vec<UrlSource>,
    /// Where the last good archive of each URL bundle and its ETag are kept, so that a
    /// restart serves at once and does not download it again. Needed with `urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

/// A bundle polled from a URL with `If-None-Match`: a 304 costs nothing, a new archive goes
/// through the same gate as an upload (read, verify, compile, test, activate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlSource {
    /// The bundle's name: the archive must hold a bundle of this name.
    pub name: String,
    /// An `http://` or `https://` URL of a `.tar.gz`.
    pub url: String,
    /// Time between polls, in milliseconds; each wait varies by up to ±10% so that
    /// replicas spread out. Default 30,000.
    #[serde(default = "default_poll_ms")]
    pub interval_ms: u64,
}

fn default_poll_ms() -> u64 {
    30_000
}

/// A configuration that cannot be used, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or `environment`, `defaults`).
    pub source_name: String,
    /// What is wrong, with the key.
    pub message: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            profile: None,
            source: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            bundles: BundlesConfig {
                run_tests: true,
                ..BundlesConfig::default()
            },
            cache: rulebox::CacheConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            decision_log: DecisionLogConfig::default(),
            health: HealthConfig::default(),
            alerts: AlertsConfig::default(),
            metrics: MetricsConfig::default(),
            engine: rulebox::EngineConfig::default(),
            rollout: RolloutConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Reads `path` (if any), applies the `[profile.NAME]` overlay of `profile` (if any)
    /// and `RULEBOX_*` environment overrides (`RULEBOX_LIMITS__MAX_BATCH=10`), and
    /// validates the result.
    pub fn load(path: Option<&Path>, profile: Option<&str>) -> Result<ServerConfig, ConfigError> {
        let shown = path.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        let err = |message: String| ConfigError {
            source_name: shown.clone(),
            message,
        };
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let mut table: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            let profiles = match table.remove("profile") {
                None => toml::Table::new(),
                Some(toml::Value::Table(t)) => t,
                Some(_) => return Err(err("profile: must be a table of profiles".into())),
            };
            figment = figment.merge(Toml::string(&toml::to_string(&table).unwrap_or_default()));
            if let Some(name) = profile {
                let overlay = match profiles.get(name) {
                    Some(toml::Value::Table(t)) => t.clone(),
                    Some(_) => return Err(err(format!("profile.{name}: must be a table"))),
                    None => {
                        let known: Vec<&String> = profiles.keys().collect();
                        return Err(err(format!(
                            "no [profile.{name}] (profiles here: {known:?})"
                        )));
                    }
                };
                figment =
                    figment.merge(Toml::string(&toml::to_string(&overlay).unwrap_or_default()));
            }
        } else if let Some(name) = profile {
            return Err(err(format!(
                "profile `{name}` asked for, but no config file"
            )));
        }
        // Only nested keys (`RULEBOX_LIMITS__MAX_BATCH`) and `RULEBOX_LISTEN`: the other
        // RULEBOX_ variables belong to the CLI (log filter, profile, ...).
        figment = figment.merge(
            Env::prefixed("RULEBOX_")
                .filter(|k| k.as_str().contains("__") || k == "listen")
                .split("__"),
        );
        let mut config: ServerConfig = figment.extract().map_err(|e| err(e.to_string()))?;
        config.profile = profile.map(str::to_owned);
        config.source = path.map(Path::to_owned);
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Checks what serde cannot: limits in range, token hashes well-formed, and that `prod`
    /// has credentials and no anonymous access.
    pub fn validate(&self) -> Result<(), String> {
        self.engine.validate().map_err(|e| format!("engine.{e}"))?;
        let l = &self.limits;
        for (key, value, min) in [
            ("limits.max_body_bytes", l.max_body_bytes, 1024),
            ("limits.max_upload_bytes", l.max_upload_bytes, 1024),
            ("limits.max_json_depth", l.max_json_depth, 2),
            ("limits.max_batch", l.max_batch, 1),
        ] {
            if value < min {
                return Err(format!("{key}: {value} is below the minimum of {min}"));
            }
        }
        if l.request_timeout_ms == 0 {
            return Err("limits.request_timeout_ms: must be greater than 0".into());
        }
        let r = &self.rate_limits;
        for (role, rate) in [
            ("viewer", r.viewer),
            ("evaluator", r.evaluator),
            ("operator", r.operator),
            ("admin", r.admin),
        ] {
            if rate.per_second == 0 || rate.burst == 0 {
                return Err(format!(
                    "rate_limits.{role}: per_second and burst must be at least 1"
                ));
            }
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.tokens[{i}].sha256: not 64 hex digits (store the token's SHA-256, never the token: `rulebox token new`)"
                ));
            }
        }
        for (i, u) in self.bundles.urls.iter().enumerate() {
            let at = format!("bundles.urls[{i}]");
            if u.name.is_empty()
                || u.name.len() > 128
                || !u
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "{at}.name: `{}` is not a bundle name (letters, digits, `-`, `_`)",
                    u.name
                ));
            }
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return Err(format!("{at}.url: `{}` is not an http(s) URL", u.url));
            }
            if u.interval_ms < 100 {
                return Err(format!(
                    "{at}.interval_ms: {} is below the minimum of 100",
                    u.interval_ms
                ));
            }
            if self.bundles.urls[..i].iter().any(|o| o.name == u.name) {
                return Err(format!("{at}.name: `{}` is polled twice", u.name));
            }
        }
        let log = &self.decision_log;
        if log.queue == 0 || log.batch == 0 {
            return Err("decision_log.queue and decision_log.batch: must be at least 1".into());
        }
        if log.retention_days == 0 {
            return Err("decision_log.retention_days: must be at least 1".into());
        }
        if log.rollup_days < log.retention_days {
            return Err(format!(
                "decision_log.rollup_days: {} is less than retention_days ({}); rollups outlive the detail they summarize",
                log.rollup_days, log.retention_days
            ));
        }
        if log.retention_check_ms < 10 {
            return Err("decision_log.retention_check_ms: must be at least 10".into());
        }
        for (bundle, masks) in &log.mask {
            for (i, m) in masks.iter().enumerate() {
                if !m.pointer.starts_with('/') {
                    return Err(format!(
                        "decision_log.mask.{bundle}[{i}].pointer: `{}` is not a JSON pointer (it starts with `/`)",
                        m.pointer
                    ));
                }
            }
        }
        self.validate_health()?;
        self.validate_rollout()?;
        if !self.bundles.urls.is_empty() && self.bundles.state_dir.is_none() {
            return Err(
                "bundles.state_dir: needed with bundles.urls, to keep the last good archive and its ETag across restarts".into(),
            );
        }
        if let Some(jwt) = &self.auth.jwt {
            if jwt.keys.is_empty() {
                return Err("auth.jwt.keys: at least one key is needed".into());
            }
            for (key, value) in [
                ("issuer", &jwt.issuer),
                ("audience", &jwt.audience),
                ("roles_claim", &jwt.roles_claim),
                ("bundles_claim", &jwt.bundles_claim),
            ] {
                if value.is_empty() {
                    return Err(format!("auth.jwt.{key}: must not be empty"));
                }
            }
            if jwt.leeway_s > 300 {
                return Err(format!(
                    "auth.jwt.leeway_s: {} is over the maximum of 300",
                    jwt.leeway_s
                ));
            }
        }
        if self.profile.as_deref() == Some("prod") {
            if self.auth.tokens.is_empty() && self.auth.jwt.is_none() {
                return Err(
                    "auth.tokens: the prod profile needs credentials; none are configured".into(),
                );
            }
            if self.auth.anonymous_loopback_evaluator {
                return Err("auth.anonymous_loopback_evaluator: not allowed in prod".into());
            }
        }
        self.cache.validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn validate_rollout(&self) -> Result<(), String> {
        let r = &self.rollout;
        if !(0.0..=1.0).contains(&r.shadow_sample) {
            return Err("rollout.shadow_sample: must be from 0 to 1".into());
        }
        if r.shadow_queue == 0 {
            return Err("rollout.shadow_queue: must be at least 1".into());
        }
        if r.shadow_queue_bytes < 1024 {
            return Err("rollout.shadow_queue_bytes: must be at least 1024".into());
        }
        if let Some(g) = &r.guard {
            for (key, pct) in [
                ("max_to_allow_pct", g.max_to_allow_pct),
                ("max_changed_pct", g.max_changed_pct),
            ] {
                if !(0.0..=100.0).contains(&pct) {
                    return Err(format!("rollout.guard.{key}: must be from 0 to 100"));
                }
            }
        }
        let w = &r.watch;
        if w.window_s == 0 {
            return Err("rollout.watch.window_s: must be at least 1".into());
        }
        for (key, v) in [
            ("max_error_rate_increase", w.max_error_rate_increase),
            ("max_timeout_ratio_increase", w.max_timeout_ratio_increase),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("rollout.watch.{key}: must be from 0 to 1"));
            }
        }
        Ok(())
    }

    fn validate_health(&self) -> Result<(), String> {
        let h = &self.health;
        if h.window_s == 0 {
            return Err("health.window_s: must be at least 1".into());
        }
        for (key, t) in [
            ("error_rate", h.error_rate),
            ("timeout_ratio", h.timeout_ratio),
            ("p99_ms", h.p99_ms),
            ("failed_loads", h.failed_loads),
            ("log_drops", h.log_drops),
            ("rejected_ratio", h.rejected_ratio),
        ] {
            if !(t.warning >= 0.0 && t.warning <= t.critical) {
                return Err(format!(
                    "health.{key}: warning ({}) must be at least 0 and at most critical ({})",
                    t.warning, t.critical
                ));
            }
        }
        let a = &self.alerts;
        if a.interval_ms < 100 {
            return Err("alerts.interval_ms: must be at least 100".into());
        }
        for (i, r) in a.rules.iter().enumerate() {
            let at = format!("alerts.rules[{i}]");
            if r.name.is_empty() || a.rules[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("{at}.name: `{}` is empty or not unique", r.name));
            }
            if r.rule.is_some() && r.bundle.is_none() {
                return Err(format!("{at}.rule: needs `bundle`"));
            }
            if !r.threshold.is_finite() {
                return Err(format!("{at}.threshold: must be a number"));
            }
        }
        for (i, url) in a.webhooks.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "alerts.webhooks[{i}]: `{url}` is not an http(s) URL"
                ));
            }
        }
        Ok(())
    }

    /// The configuration as TOML with secrets redacted (token hashes, Redis passwords).
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        for t in &mut shown.auth.tokens {
            t.sha256 = "<redacted>".into();
        }
        if let Some(url) = &mut shown.cache.redis_url
            && let Some((scheme, rest)) = url.split_once("://")
            && let Some((_, host)) = rest.rsplit_once('@')
        {
            *url = format!("{scheme}://<redacted>@{host}");
        }
        format!(
            "# profile: {}\n{}",
            self.profile.as_deref().unwrap_or("(none)"),
            toml::to_string(&shown).unwrap_or_default()
        )
    }
}
