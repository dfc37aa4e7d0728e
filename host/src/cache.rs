//! Rule result caching: an in-process L1 (quick_cache, weighted by bytes, within a memory
//! budget) and an optional shared L2 (Redis), with four strategies.
//!
//! A cache must never serve a wrong answer, so:
//! - keys are SHA-256 over everything that can change a result: the key format version, the
//!   rule's component digest, its settings and reads, its upstream decisions, and the input
//!   (all of it for `basic`, only what the rule reads for `intelligent`/`adaptive`); rules
//!   with grants are also keyed on their bundle's content digest;
//! - only decisions and the rule's own errors are stored, never limit errors (timeout, fuel,
//!   memory, stack) or traps, and never a result from an evaluation that read a clock;
//! - rules with grants (data that can change under them) are cached only when their manifest
//!   asks for it explicitly;
//! - L2 entries carry a format version and the rule's digest and are checked on read: garbage
//!   from Redis is a counted miss, never an answer.

use crate::bundle::{CachePolicy, CacheStrategy};
use crate::error::EvalError;
use crate::input::{Input, Reads};
use crate::rule::{Decision, Evaluation, Metering, Rule, Upstream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Bumped whenever the key or entry layout changes, so old entries are never read.
const FORMAT_VERSION: u32 = 1;

/// Result-cache settings, validated by [`ResultCache::new`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Host-wide memory budget of the L1 cache, in bytes: entries are weighed by their size
    /// and the least valuable are evicted beyond it. Default 64 MiB.
    pub memory_bytes: u64,
    /// TTL of an entry when its policy sets none, in milliseconds. Default 60,000.
    pub default_ttl_ms: u64,
    /// Largest result cached when its policy sets no `max_entry_bytes`. Default 64 KiB.
    pub default_max_entry_bytes: usize,
    /// Redis URL of the shared L2 cache (`redis://127.0.0.1:6379/0`). Default: none.
    pub redis_url: Option<String>,
    /// Timeout of each Redis operation (connect, read, write), in milliseconds. Default 25.
    pub redis_timeout_ms: u64,
    /// Consecutive Redis failures that open the circuit breaker. Default 3.
    pub breaker_failures: u32,
    /// How long an open breaker skips Redis before trying again, in milliseconds. Default 2000.
    pub breaker_open_ms: u64,
    /// Bounds of the TTL the adaptive strategy tunes, in milliseconds. Default 1 s to 10 min.
    pub adaptive_min_ttl_ms: u64,
    /// See `adaptive_min_ttl_ms`.
    pub adaptive_max_ttl_ms: u64,
    /// Lookups per adaptive decision window. Default 256.
    pub adaptive_window: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 64 << 20,
            default_ttl_ms: 60_000,
            default_max_entry_bytes: 64 << 10,
            redis_url: None,
            redis_timeout_ms: 25,
            breaker_failures: 3,
            breaker_open_ms: 2000,
            adaptive_min_ttl_ms: 1000,
            adaptive_max_ttl_ms: 600_000,
            adaptive_window: 256,
        }
    }
}

/// What is cached: a decision or the rule's own error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Stored {
    Ok(Decision),
    InvalidInput(String),
    Failed(String),
}

impl Stored {
    fn from_result(result: &Result<Decision, EvalError>) -> Option<Stored> {
        match result {
            Ok(d) => Some(Stored::Ok(d.clone())),
            Err(EvalError::InvalidInput(m)) => Some(Stored::InvalidInput(m.clone())),
            Err(EvalError::Failed(m)) => Some(Stored::Failed(m.clone())),
            // Limits depend on load, traps may be transient host trouble: never cached.
            Err(_) => None,
        }
    }

    fn to_result(&self) -> Result<Decision, EvalError> {
        match self {
            Stored::Ok(d) => Ok(d.clone()),
            Stored::InvalidInput(m) => Err(EvalError::InvalidInput(m.clone())),
            Stored::Failed(m) => Err(EvalError::Failed(m.clone())),
        }
    }

    fn size(&self) -> usize {
        match self {
            Stored::Ok(d) => {
                d.reasons.iter().map(|r| r.len() + 24).sum::<usize>()
                    + d.output.as_ref().map_or(0, |o| o.to_string().len() * 2)
            }
            Stored::InvalidInput(m) | Stored::Failed(m) => m.len(),
        }
    }
}

struct Entry {
    stored: Stored,
    expires: Instant,
    weight: u64,
}

/// The L2 wire format.
#[derive(Serialize, Deserialize)]
struct L2Entry {
    v: u32,
    rule_digest: String,
    stored: Stored,
}

#[derive(Clone)]
struct Weigh;
impl quick_cache::Weighter<L1Key, Arc<Entry>> for Weigh {
    fn weight(&self, _key: &L1Key, val: &Arc<Entry>) -> u64 {
        val.weight
    }
}

#[derive(Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);
impl quick_cache::Lifecycle<L1Key, Arc<Entry>> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _key: L1Key, _val: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// An L1 key: the content digest and the invalidation generations it was stored under.
type L1Key = ([u8; 32], [u64; 3]);

type L1 = quick_cache::sync::Cache<
    L1Key,
    Arc<Entry>,
    Weigh,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

/// The result cache shared by every bundle of a host.
pub struct ResultCache {
    config: CacheConfig,
    l1: L1,
    evictions: Arc<AtomicU64>,
    l2: Option<L2>,
    global_generation: AtomicU64,
    generations: Mutex<HashMap<(String, String), Arc<AtomicU64>>>,
    rules: Mutex<Vec<Weak<RuleCache>>>,
}

/// Why a cache could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cache.{field}: {message}")]
pub struct CacheConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ResultCache {
    /// Builds a cache. With a `redis_url`, the URL is checked now; Redis itself may be down
    /// (the breaker handles that).
    pub fn new(config: CacheConfig) -> Result<ResultCache, CacheConfigError> {
        let bad = |field, message: String| Err(CacheConfigError { field, message });
        if config.memory_bytes < 64 << 10 {
            return bad(
                "memory_bytes",
                format!("{} is below the minimum of 65536", config.memory_bytes),
            );
        }
        if config.default_ttl_ms == 0 {
            return bad("default_ttl_ms", "must be greater than 0".into());
        }
        if config.adaptive_min_ttl_ms == 0
            || config.adaptive_min_ttl_ms > config.adaptive_max_ttl_ms
        {
            return bad(
                "adaptive_min_ttl_ms",
                "must be between 1 and adaptive_max_ttl_ms".into(),
            );
        }
        if config.adaptive_window < 16 {
            return bad("adaptive_window", "must be at least 16".into());
        }
        let l2 = match &config.redis_url {
            None => None,
            Some(url) => Some(L2::new(url, &config).map_err(|m| CacheConfigError {
                field: "redis_url",
                message: m,
            })?),
        };
        let evictions = Arc::new(AtomicU64::new(0));
        // ~512 bytes per entry is typical for a decision with a reason or two.
        let items = (config.memory_bytes / 512).clamp(64, 4_000_000) as usize;
        let l1 = L1::with(
            items,
            config.memory_bytes,
            Weigh,
            Default::default(),
            CountEvictions(evictions.clone()),
        );
        Ok(ResultCache {
            config,
            l1,
            evictions,
            l2,
            global_generation: AtomicU64::new(0),
            generations: Mutex::new(HashMap::new()),
            rules: Mutex::new(Vec::new()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn generation(&self, bundle: &str, rule: &str) -> Arc<AtomicU64> {
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((bundle.to_owned(), rule.to_owned()))
            .or_default()
            .clone()
    }

    /// The per-rule cache state for one rule of a loaded bundle, or `None` when the rule is
    /// not to be cached.
    pub(crate) fn for_rule(
        self: &Arc<Self>,
        bundle: &str,
        bundle_digest: &str,
        rule: &Rule,
        policy: CachePolicy,
        has_grants: bool,
        rule_sets_strategy: bool,
    ) -> Option<Arc<RuleCache>> {
        // A rule that reads data files is cached only when its own `cache` table asks: a
        // bundle-wide default must not silently cover data that can change under it.
        if has_grants && !rule_sets_strategy {
            return None;
        }
        let strategy = match policy.strategy {
            Some(CacheStrategy::None) => return None,
            Some(s) => s,
            None => CacheStrategy::Intelligent,
        };
        let mut prefix = Sha256::new();
        prefix.update(FORMAT_VERSION.to_le_bytes());
        // Entries belong to one rule of one bundle (as in L2), so stats and invalidation
        // stay per rule even when two bundles run the same component with the same settings.
        for name in [bundle, rule.name()] {
            prefix.update((name.len() as u64).to_le_bytes());
            prefix.update(name.as_bytes());
        }
        prefix.update(rule.pre().digest());
        prefix.update((rule.settings_json().len() as u64).to_le_bytes());
        prefix.update(rule.settings_json().as_bytes());
        for read in rule.reads().to_strings() {
            prefix.update((read.len() as u64).to_le_bytes());
            prefix.update(read.as_bytes());
        }
        prefix.update([strategy as u8]);
        if has_grants {
            prefix.update(bundle_digest.as_bytes());
        }
        let ttl = policy.ttl_ms.unwrap_or(self.config.default_ttl_ms);
        let rc = Arc::new(RuleCache {
            cache: Arc::downgrade(self),
            bundle: bundle.to_owned(),
            rule: rule.name().to_owned(),
            strategy,
            rule_digest: rule.pre().digest_hex(),
            prefix: prefix.finalize().into(),
            bundle_generation: self.generation(bundle, ""),
            rule_generation: self.generation(bundle, rule.name()),
            ttl_ms: AtomicU64::new(ttl.clamp(1, u64::MAX)),
            max_entry_bytes: policy
                .max_entry_bytes
                .unwrap_or(self.config.default_max_entry_bytes),
            stats: RuleStats::default(),
            adaptive: Mutex::new(Adaptive::new(strategy == CacheStrategy::Adaptive)),
            use_l1: AtomicBool::new(true),
            use_l2: AtomicBool::new(self.l2.is_some()),
        });
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|w| w.strong_count() > 0);
        rules.push(Arc::downgrade(&rc));
        Some(rc)
    }

    /// Forgets every entry (L1, and L2 when configured).
    pub fn invalidate_all(&self) {
        // Writes queued before the invalidation must not land after it.
        self.flush(Duration::from_secs(1));
        self.global_generation.fetch_add(1, Ordering::SeqCst);
        self.l1.clear();
        if let Some(l2) = &self.l2 {
            l2.delete_matching(&format!("rulebox:v{FORMAT_VERSION}:*"));
        }
    }

    /// Forgets the entries of every revision of bundle `name`.
    pub fn invalidate_bundle(&self, name: &str) {
        // Writes queued before the invalidation must not land after it.
        self.flush(Duration::from_secs(1));
        self.generation(name, "").fetch_add(1, Ordering::SeqCst);
        if let Some(l2) = &self.l2 {
            l2.delete_matching(&format!(
                "rulebox:v{FORMAT_VERSION}:{}/*",
                glob_escape(name)
            ));
        }
    }

    /// Forgets the entries of rule `rule` of bundle `bundle`.
    pub fn invalidate_rule(&self, bundle: &str, rule: &str) {
        // Writes queued before the invalidation must not land after it.
        self.flush(Duration::from_secs(1));
        self.generation(bundle, rule).fetch_add(1, Ordering::SeqCst);
        if let Some(l2) = &self.l2 {
            l2.delete_matching(&format!(
                "rulebox:v{FORMAT_VERSION}:{}/{}:*",
                glob_escape(bundle),
                glob_escape(rule)
            ));
        }
    }

    /// Waits (up to `timeout`) until queued L2 writes are done; true if they are. A
    /// short-lived process calls this before exiting so its results reach Redis.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let deadline = Instant::now() + timeout;
        while l2.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Totals and per-rule counters.
    pub fn stats(&self) -> CacheStats {
        let rules: Vec<RuleCacheStats> = self
            .rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .map(|r| r.stats())
            .collect();
        let sum = |f: fn(&RuleCacheStats) -> u64| rules.iter().map(f).sum::<u64>();
        let (hits, l2_hits, misses) = (sum(|r| r.hits), sum(|r| r.l2_hits), sum(|r| r.misses));
        CacheStats {
            hits,
            l2_hits,
            misses,
            hit_rate: rate(hits + l2_hits, misses),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.l1.len() as u64,
            bytes: self.l1.weight(),
            memory_budget_bytes: self.config.memory_bytes,
            l2: self.l2.as_ref().map(L2::stats),
            rules,
        }
    }
}

fn glob_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "*?[]\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn rate(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

/// Cache counters, in total and per rule.
#[derive(Clone, Debug, Serialize)]
pub struct CacheStats {
    /// L1 hits.
    pub hits: u64,
    /// L2 hits (L1 missed, Redis had it).
    pub l2_hits: u64,
    /// Lookups that missed both.
    pub misses: u64,
    /// (hits + l2_hits) / lookups.
    pub hit_rate: f64,
    /// Entries evicted from L1 to stay within the memory budget.
    pub evictions: u64,
    /// Entries in L1.
    pub entries: u64,
    /// Bytes in L1 (by the weigher).
    pub bytes: u64,
    /// The L1 budget.
    pub memory_budget_bytes: u64,
    /// The L2's counters, when configured.
    pub l2: Option<L2Stats>,
    /// Per rule.
    pub rules: Vec<RuleCacheStats>,
}

/// One rule's counters and, for `adaptive`, what it decided.
#[derive(Clone, Debug, Serialize)]
pub struct RuleCacheStats {
    /// Bundle name.
    pub bundle: String,
    /// Rule name.
    pub rule: String,
    /// Strategy.
    pub strategy: CacheStrategy,
    /// L1 hits.
    pub hits: u64,
    /// L2 hits.
    pub l2_hits: u64,
    /// Misses.
    pub misses: u64,
    /// Hit rate.
    pub hit_rate: f64,
    /// Results not stored: limit errors, traps, clock reads, over `max_entry_bytes`.
    pub not_stored: u64,
    /// Current TTL in milliseconds.
    pub ttl_ms: u64,
    /// Whether lookups currently go to L1 / L2 (the adaptive strategy turns them off).
    pub using_l1: bool,
    /// See `using_l1`.
    pub using_l2: bool,
    /// The adaptive strategy's last decision, in words.
    pub adaptive_decision: Option<String>,
    /// Mean cost of evaluating on a miss, in nanoseconds.
    pub eval_cost_ns: u64,
    /// Mean cost of an L1 lookup (key + probe), in nanoseconds.
    pub lookup_cost_ns: u64,
}

#[derive(Default)]
struct RuleStats {
    hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    not_stored: AtomicU64,
}

struct Adaptive {
    enabled: bool,
    window_hits: u32,
    window_lookups: u32,
    eval_ns: f64,
    lookup_ns: f64,
    l2_ns: f64,
    decision: Option<String>,
    /// While caching is off, evaluations left before it probes again.
    probe_in: u32,
}

impl Adaptive {
    fn new(enabled: bool) -> Adaptive {
        Adaptive {
            enabled,
            window_hits: 0,
            window_lookups: 0,
            eval_ns: 0.0,
            lookup_ns: 0.0,
            l2_ns: 0.0,
            decision: None,
            probe_in: 0,
        }
    }
}

fn ewma(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        old * 0.9 + new * 0.1
    }
}

/// One bundle rule's cache state.
pub(crate) struct RuleCache {
    cache: Weak<ResultCache>,
    bundle: String,
    rule: String,
    strategy: CacheStrategy,
    rule_digest: String,
    prefix: [u8; 32],
    bundle_generation: Arc<AtomicU64>,
    rule_generation: Arc<AtomicU64>,
    ttl_ms: AtomicU64,
    max_entry_bytes: usize,
    stats: RuleStats,
    adaptive: Mutex<Adaptive>,
    use_l1: AtomicBool,
    use_l2: AtomicBool,
}

/// Feeds serialized JSON straight into the hasher.
struct HashWriter<'a>(&'a mut Sha256);
impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl RuleCache {
    fn key(
        &self,
        cache: &ResultCache,
        rule: &Rule,
        input: &Input,
        upstream: &[Upstream],
    ) -> (L1Key, [u8; 32]) {
        let mut h = Sha256::new();
        h.update(self.prefix);
        match (self.strategy, rule.reads()) {
            (CacheStrategy::Basic, _) | (_, Reads::All) => {
                h.update(b"D");
                h.update(input.text().as_bytes());
            }
            (_, Reads::Paths(paths)) => {
                for p in paths {
                    match input.get(p) {
                        None => h.update(b"-"),
                        Some(v) => {
                            h.update(b"+");
                            let _ = serde_json::to_writer(HashWriter(&mut h), v);
                        }
                    }
                }
            }
        }
        for u in upstream {
            h.update((u.rule.len() as u64).to_le_bytes());
            h.update(u.rule.as_bytes());
            let _ = serde_json::to_writer(HashWriter(&mut h), &u.decision);
        }
        let content: [u8; 32] = h.finalize().into();
        // L1 entries also carry this host's invalidation generations (bumping one makes the
        // old entries unreachable); the L2 key is the content digest alone, shared by hosts.
        let generations = [
            cache.global_generation.load(Ordering::Relaxed),
            self.bundle_generation.load(Ordering::Relaxed),
            self.rule_generation.load(Ordering::Relaxed),
        ];
        ((content, generations), content)
    }

    fn l2_key(&self, shared: &[u8; 32]) -> String {
        format!(
            "rulebox:v{FORMAT_VERSION}:{}/{}:{}",
            self.bundle,
            self.rule,
            hex::encode(shared)
        )
    }

    fn stats(&self) -> RuleCacheStats {
        let (hits, l2_hits, misses) = (
            self.stats.hits.load(Ordering::Relaxed),
            self.stats.l2_hits.load(Ordering::Relaxed),
            self.stats.misses.load(Ordering::Relaxed),
        );
        let a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        RuleCacheStats {
            bundle: self.bundle.clone(),
            rule: self.rule.clone(),
            strategy: self.strategy,
            hits,
            l2_hits,
            misses,
            hit_rate: rate(hits + l2_hits, misses),
            not_stored: self.stats.not_stored.load(Ordering::Relaxed),
            ttl_ms: self.ttl_ms.load(Ordering::Relaxed),
            using_l1: self.use_l1.load(Ordering::Relaxed),
            using_l2: self.use_l2.load(Ordering::Relaxed),
            adaptive_decision: a.decision.clone(),
            eval_cost_ns: a.eval_ns as u64,
            lookup_cost_ns: a.lookup_ns as u64,
        }
    }

    /// Evaluates through the cache.
    pub(crate) fn evaluate(&self, rule: &Rule, input: &Input, upstream: &[Upstream]) -> Evaluation {
        let Some(cache) = self.cache.upgrade() else {
            return rule.evaluate_with(input, upstream);
        };
        if !self.use_l1.load(Ordering::Relaxed) {
            // The adaptive strategy turned caching off for this rule; probe now and then.
            let probe = {
                let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
                a.probe_in = a.probe_in.saturating_sub(1);
                a.probe_in == 0
            };
            if !probe {
                return rule.evaluate_with(input, upstream);
            }
            self.use_l1.store(true, Ordering::Relaxed);
        }
        let start = Instant::now();
        let (key, shared) = self.key(&cache, rule, input, upstream);
        let now = Instant::now();
        if let Some(entry) = cache.l1.get(&key) {
            if entry.expires > now {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let eval = served(rule, &entry.stored, start);
                self.observe(&cache, true, start.elapsed(), None, None);
                return eval;
            }
            cache.l1.remove(&key);
        }
        let lookup = start.elapsed();
        let l2 = cache
            .l2
            .as_ref()
            .filter(|_| self.use_l2.load(Ordering::Relaxed))
            .map(|l2| (l2, self.l2_key(&shared)));
        let mut l2_cost = None;
        if let Some((l2, l2_key)) = &l2 {
            let t = Instant::now();
            let found =
                l2.get(l2_key)
                    .and_then(|bytes| match serde_json::from_slice::<L2Entry>(&bytes) {
                        Ok(e) if e.v == FORMAT_VERSION && e.rule_digest == self.rule_digest => {
                            Some(e.stored)
                        }
                        _ => {
                            l2.garbage.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                    });
            l2_cost = Some(t.elapsed());
            if let Some(stored) = found {
                self.stats.l2_hits.fetch_add(1, Ordering::Relaxed);
                let size = stored.size();
                self.store_l1(&cache, key, stored.clone(), size);
                let eval = served(rule, &stored, start);
                self.observe(&cache, true, lookup, l2_cost, None);
                return eval;
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let eval = rule.evaluate_with(input, upstream);
        let eval_cost = t.elapsed();
        let storable = Stored::from_result(&eval.result)
            .filter(|_| !eval.read_clock)
            .map(|s| (s.size(), s))
            .filter(|(size, _)| *size <= self.max_entry_bytes);
        match storable {
            Some((size, stored)) => {
                if let Some((l2, l2_key)) = l2 {
                    let entry = L2Entry {
                        v: FORMAT_VERSION,
                        rule_digest: self.rule_digest.clone(),
                        stored: stored.clone(),
                    };
                    if let Ok(bytes) = serde_json::to_vec(&entry) {
                        l2.put(l2_key, bytes, self.ttl_ms.load(Ordering::Relaxed));
                    }
                }
                self.store_l1(&cache, key, stored, size);
            }
            None => {
                self.stats.not_stored.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.observe(&cache, false, lookup, l2_cost, Some(eval_cost));
        eval
    }

    fn store_l1(&self, cache: &ResultCache, key: L1Key, stored: Stored, size: usize) {
        let weight = (size + 160) as u64;
        let expires = Instant::now() + Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed));
        cache.l1.insert(
            key,
            Arc::new(Entry {
                stored,
                expires,
                weight,
            }),
        );
    }

    /// Feeds the adaptive strategy: costs, and per window of lookups whether caching pays.
    fn observe(
        &self,
        cache: &ResultCache,
        hit: bool,
        lookup: Duration,
        l2: Option<Duration>,
        eval: Option<Duration>,
    ) {
        let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        a.lookup_ns = ewma(a.lookup_ns, lookup.as_nanos() as f64);
        if let Some(l2) = l2 {
            a.l2_ns = ewma(a.l2_ns, l2.as_nanos() as f64);
        }
        if let Some(eval) = eval {
            a.eval_ns = ewma(a.eval_ns, eval.as_nanos() as f64);
        }
        if !a.enabled {
            return;
        }
        a.window_lookups += 1;
        a.window_hits += hit as u32;
        if a.window_lookups < cache.config.adaptive_window {
            return;
        }
        let hit_rate = a.window_hits as f64 / a.window_lookups as f64;
        a.window_hits = 0;
        a.window_lookups = 0;
        let cfg = &cache.config;
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        // Caching pays when what hits save exceeds what every lookup costs.
        let saved = hit_rate * a.eval_ns;
        let decision = if a.eval_ns > 0.0 && saved < a.lookup_ns {
            self.use_l1.store(false, Ordering::Relaxed);
            a.probe_in = cfg.adaptive_window * 8;
            format!(
                "caching off: hit rate {:.0}% saves {:.0} ns per lookup, a lookup costs {:.0} ns",
                hit_rate * 100.0,
                saved,
                a.lookup_ns
            )
        } else {
            let new_ttl = if hit_rate > 0.5 {
                (ttl * 2).min(cfg.adaptive_max_ttl_ms)
            } else if hit_rate < 0.1 {
                (ttl / 2).max(cfg.adaptive_min_ttl_ms)
            } else {
                ttl.clamp(cfg.adaptive_min_ttl_ms, cfg.adaptive_max_ttl_ms)
            };
            self.ttl_ms.store(new_ttl, Ordering::Relaxed);
            format!(
                "caching on: hit rate {:.0}%, ttl {new_ttl} ms",
                hit_rate * 100.0
            )
        };
        // L2 pays only when a round trip is cheaper than evaluating.
        if cache.l2.is_some() && a.l2_ns > 0.0 {
            let l2_pays = a.l2_ns < a.eval_ns;
            self.use_l2.store(l2_pays, Ordering::Relaxed);
        }
        a.decision = Some(decision);
    }
}

/// An evaluation served from the cache: the stored result, what serving it cost.
fn served(rule: &Rule, stored: &Stored, start: Instant) -> Evaluation {
    Evaluation {
        rule: rule.name().into(),
        result: stored.to_result(),
        metering: Metering {
            fuel: 0,
            wall_us: start.elapsed().as_micros() as u64,
            ..Default::default()
        },
        cached: true,
        read_clock: false,
    }
}

/// L2 counters.
#[derive(Clone, Debug, Serialize)]
pub struct L2Stats {
    /// Failed Redis operations (timeouts, refused connections, protocol errors).
    pub errors: u64,
    /// Entries read that were not ours (wrong format, version or rule): ignored.
    pub garbage: u64,
    /// Writes dropped because the write queue was full or the breaker open.
    pub dropped_writes: u64,
    /// `closed` (Redis in use), `open` (skipped after failures).
    pub breaker: &'static str,
    /// Times the breaker opened.
    pub breaker_opened: u64,
}

struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    opened: AtomicU64,
    threshold: u32,
    open_ms: u64,
    epoch: Instant,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    fn allow(&self) -> bool {
        self.now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }
    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
    fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            // Open (again): skip Redis for a while, then let requests probe it.
            self.open_until_ms
                .store(self.now_ms() + self.open_ms, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "redis L2 cache: circuit breaker open for {} ms",
                self.open_ms
            );
        }
    }
    fn state(&self) -> &'static str {
        if self.allow() { "closed" } else { "open" }
    }
}

struct L2 {
    client: redis::Client,
    timeout: Duration,
    pool: Mutex<Vec<redis::Connection>>,
    breaker: Arc<Breaker>,
    errors: Arc<AtomicU64>,
    garbage: AtomicU64,
    dropped: Arc<AtomicU64>,
    writes: std::sync::mpsc::SyncSender<(String, Vec<u8>, u64)>,
    /// Writes queued and not yet done, for `flush`.
    pending: Arc<AtomicU64>,
}

impl L2 {
    fn new(url: &str, config: &CacheConfig) -> Result<L2, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
        let breaker = Arc::new(Breaker {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            threshold: config.breaker_failures.max(1),
            open_ms: config.breaker_open_ms,
            epoch: Instant::now(),
        });
        let errors = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        // Writes go behind the request: a slow Redis never slows a miss down.
        let (writes, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>, u64)>(1024);
        {
            let (client, breaker, errors, dropped, pending) = (
                client.clone(),
                breaker.clone(),
                errors.clone(),
                dropped.clone(),
                pending.clone(),
            );
            std::thread::Builder::new()
                .name("rulebox-l2-writer".into())
                .spawn(move || {
                    let mut conn: Option<redis::Connection> = None;
                    for (key, bytes, ttl) in rx {
                        let _done = Done(&pending);
                        if !breaker.allow() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let result = connection(&client, &mut conn, timeout).and_then(|c| {
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(bytes)
                                .arg("PX")
                                .arg(ttl)
                                .query::<()>(c)
                        });
                        match result {
                            Ok(()) => breaker.success(),
                            Err(e) => {
                                conn = None;
                                errors.fetch_add(1, Ordering::Relaxed);
                                breaker.failure();
                                tracing::debug!("redis L2 write failed: {e}");
                            }
                        }
                    }
                })
                .map_err(|e| format!("cannot start the L2 writer: {e}"))?;
        }
        Ok(L2 {
            client,
            timeout,
            pool: Mutex::new(Vec::new()),
            breaker,
            errors,
            garbage: AtomicU64::new(0),
            dropped,
            writes,
            pending,
        })
    }

    fn with_connection<T>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        if !self.breaker.allow() {
            return None;
        }
        let mut conn = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let pooled = conn.is_some();
        let mut result = connection(&self.client, &mut conn, self.timeout).and_then(&f);
        if result.is_err() && pooled {
            // A pooled connection may have died with a Redis restart: retry once afresh.
            conn = None;
            result = connection(&self.client, &mut conn, self.timeout).and_then(f);
        }
        match result {
            Ok(v) => {
                self.breaker.success();
                if let Some(c) = conn {
                    self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
                Some(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                tracing::debug!("redis L2 read failed: {e}");
                None
            }
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.with_connection(|c| redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c))
            .flatten()
    }

    fn put(&self, key: String, bytes: Vec<u8>, ttl_ms: u64) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.writes.try_send((key, bytes, ttl_ms)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn delete_matching(&self, pattern: &str) {
        self.with_connection(|c| {
            // SCAN, not KEYS: it does not block a shared Redis while it walks the keyspace.
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(&keys).query::<()>(c)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        });
    }

    fn stats(&self) -> L2Stats {
        L2Stats {
            errors: self.errors.load(Ordering::Relaxed),
            garbage: self.garbage.load(Ordering::Relaxed),
            dropped_writes: self.dropped.load(Ordering::Relaxed),
            breaker: self.breaker.state(),
            breaker_opened: self.breaker.opened.load(Ordering::Relaxed),
        }
    }
}

/// Counts a queued write as done when dropped, however its handling ends.
struct Done<'a>(&'a AtomicU64);
impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn connection<'a>(
    client: &redis::Client,
    conn: &'a mut Option<redis::Connection>,
    timeout: Duration,
) -> redis::RedisResult<&'a mut redis::Connection> {
    if conn.is_none() {
        let c = client.get_connection_with_timeout(timeout)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_write_timeout(Some(timeout))?;
        *conn = Some(c);
    }
    Ok(conn.as_mut().expect("just set"))
}
