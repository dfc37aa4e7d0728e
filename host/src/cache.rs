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

mod adaptive;
mod entry;
mod key;
mod l2;
mod lookup;
mod policy;

pub use l2::L2Stats;
pub use policy::{CachePolicy, CacheStrategy};

/// Why a rule that reads a clock is never cached, and what to do about it.
pub(crate) const CLOCK_HINT: &str = "a result that depends on the time cannot be reused, so a rule that reads a clock (wall or monotonic) is never cached. Pass the time in the input instead; a JavaScript rule built by jco reads one on every call unless built with `--disable clocks`";
use crate::rule::Rule;
use entry::{CountEvictions, L1, Weigh};
use key::{RuleIdentity, l2_pattern, rule_prefix};
use l2::L2;
pub(crate) use lookup::RuleCache;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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

impl CacheConfig {
    /// Checks every field, and that `redis_url` is a Redis URL this build can use, without
    /// building anything (no connection is made). [`ResultCache::new`] calls it.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        let bad = |field, message: String| Err(CacheConfigError { field, message });
        if self.memory_bytes < 64 << 10 {
            return bad(
                "memory_bytes",
                format!("{} is below the minimum of 65536", self.memory_bytes),
            );
        }
        if self.default_ttl_ms == 0 {
            return bad("default_ttl_ms", "must be greater than 0".into());
        }
        if self.adaptive_min_ttl_ms == 0 || self.adaptive_min_ttl_ms > self.adaptive_max_ttl_ms {
            return bad(
                "adaptive_min_ttl_ms",
                "must be between 1 and adaptive_max_ttl_ms".into(),
            );
        }
        if self.adaptive_window < 16 {
            return bad("adaptive_window", "must be at least 16".into());
        }
        if let Some(url) = &self.redis_url {
            L2::check_url(url).map_err(|message| CacheConfigError {
                field: "redis_url",
                message,
            })?;
        }
        Ok(())
    }
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

/// Why a cache operation did not fully happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The shared (Redis) cache did not answer, or its breaker is open: its entries were not
    /// touched. This host's entries were.
    #[error("the shared cache was not changed: {0}")]
    SharedUnavailable(String),
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
        config.validate()?;
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

    /// The per-rule cache state for one rule of a loaded bundle, or why the rule is not
    /// cached (in words, for `describe` and the load log).
    pub(crate) fn for_rule(
        self: &Arc<Self>,
        bundle: &str,
        bundle_digest: &str,
        rule: &Rule,
        policy: CachePolicy,
        has_grants: bool,
        rule_sets_strategy: bool,
    ) -> Result<Arc<RuleCache>, String> {
        // A rule that reads data files is cached only when its own `cache` table asks: a
        // bundle-wide default must not silently cover data that can change under it.
        if has_grants && !rule_sets_strategy {
            return Err(
                "it reads data through a grant, which the bundle's default cache policy does not cover; give the rule its own `cache = { strategy = \"intelligent\" }` to cache it (entries are then tied to the bundle's digest)".into(),
            );
        }
        let strategy = match policy.strategy {
            Some(CacheStrategy::None) => return Err("its cache strategy is `none`".into()),
            Some(s) => s,
            None => CacheStrategy::Intelligent,
        };
        let prefix = rule_prefix(&RuleIdentity {
            bundle,
            rule: rule.name(),
            component: rule.pre().digest(),
            settings_json: rule.settings_json(),
            reads: rule.reads().to_strings(),
            strategy,
            bundle_digest: has_grants.then_some(bundle_digest),
        });
        let ttl = policy.ttl_ms.unwrap_or(self.config.default_ttl_ms);
        let rc = Arc::new(RuleCache {
            cache: Arc::downgrade(self),
            bundle: bundle.to_owned(),
            rule: rule.name().to_owned(),
            strategy,
            rule_digest: rule.pre().digest_hex(),
            prefix,
            bundle_generation: self.generation(bundle, ""),
            rule_generation: self.generation(bundle, rule.name()),
            ttl_ms: AtomicU64::new(ttl.clamp(1, u64::MAX)),
            max_entry_bytes: policy
                .max_entry_bytes
                .unwrap_or(self.config.default_max_entry_bytes),
            stats: Default::default(),
            adaptive: Mutex::new(adaptive::Adaptive::new(strategy == CacheStrategy::Adaptive)),
            use_l1: AtomicBool::new(true),
            use_l2: AtomicBool::new(self.l2.is_some()),
        });
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.retain(|w| w.strong_count() > 0);
        rules.push(Arc::downgrade(&rc));
        Ok(rc)
    }

    /// Forgets every entry (L1, and L2 when configured). This host's entries are gone
    /// whatever the result; an error says the shared (Redis) entries may not be.
    pub fn invalidate_all(&self) -> Result<(), CacheError> {
        // Writes queued before the invalidation must not land after it.
        self.flush(Duration::from_secs(1));
        self.global_generation.fetch_add(1, Ordering::SeqCst);
        self.l1.clear();
        self.invalidate_l2(None, None)
    }

    /// Forgets the entries of every revision of bundle `name`; see
    /// [`ResultCache::invalidate_all`] for what an error means.
    pub fn invalidate_bundle(&self, name: &str) -> Result<(), CacheError> {
        self.flush(Duration::from_secs(1));
        self.generation(name, "").fetch_add(1, Ordering::SeqCst);
        self.invalidate_l2(Some(name), None)
    }

    /// Forgets the entries of rule `rule` of bundle `bundle`; see
    /// [`ResultCache::invalidate_all`] for what an error means.
    pub fn invalidate_rule(&self, bundle: &str, rule: &str) -> Result<(), CacheError> {
        self.flush(Duration::from_secs(1));
        self.generation(bundle, rule).fetch_add(1, Ordering::SeqCst);
        self.invalidate_l2(Some(bundle), Some(rule))
    }

    fn invalidate_l2(&self, bundle: Option<&str>, rule: Option<&str>) -> Result<(), CacheError> {
        match &self.l2 {
            None => Ok(()),
            Some(l2) => l2
                .delete_matching(&l2_pattern(bundle, rule))
                .map_err(CacheError::SharedUnavailable),
        }
    }

    /// Waits (up to `timeout`) until queued L2 writes are done; true if they are. A
    /// short-lived process calls this before exiting so its results reach Redis.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let deadline = Instant::now() + timeout;
        while l2.pending() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The shared (Redis) cache's counters and breaker state, when one is configured:
    /// what [`ResultCache::stats`] has under `l2`, without collecting every rule's.
    pub fn l2_stats(&self) -> Option<L2Stats> {
        self.l2.as_ref().map(L2::stats)
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
            l2: self.l2_stats(),
            rules,
        }
    }
}

pub(crate) fn rate(hits: u64, misses: u64) -> f64 {
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
    /// Of `not_stored`: results of evaluations that read a clock.
    pub not_stored_clock: u64,
    /// Why this rule's results are not being cached, with what to change, when it is
    /// something the rule does (reading a clock).
    pub hint: Option<String>,
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
