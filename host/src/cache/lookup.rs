//! The lookup path of one bundle rule: L1, then L2, then evaluating (and storing what may
//! be stored), feeding the adaptive strategy as it goes.

use super::adaptive::{Adaptive, Bounds};
use super::entry::{Entry, L1Key, L2Entry, Stored};
use super::key::{content_key, l2_key};
use super::policy::CacheStrategy;
use super::{ResultCache, RuleCacheStats, rate};
use crate::input::Input;
use crate::rule::{Evaluation, Metering, Rule, Upstream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct RuleStats {
    pub hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub not_stored: AtomicU64,
    /// Of `not_stored`: evaluations that read a clock.
    pub read_clock: AtomicU64,
}

/// One bundle rule's cache state.
pub(crate) struct RuleCache {
    pub cache: Weak<ResultCache>,
    pub bundle: String,
    pub rule: String,
    pub strategy: CacheStrategy,
    pub rule_digest: String,
    pub prefix: [u8; 32],
    pub bundle_generation: Arc<AtomicU64>,
    pub rule_generation: Arc<AtomicU64>,
    pub ttl_ms: AtomicU64,
    pub max_entry_bytes: usize,
    pub stats: RuleStats,
    pub adaptive: Mutex<Adaptive>,
    pub use_l1: AtomicBool,
    pub use_l2: AtomicBool,
}

impl RuleCache {
    /// The L1 key (content plus this host's invalidation generations: bumping one makes
    /// the old entries unreachable) and the content key alone, shared by hosts in L2.
    fn key(
        &self,
        cache: &ResultCache,
        rule: &Rule,
        input: &Input,
        upstream: &[Upstream],
    ) -> (L1Key, [u8; 32]) {
        let content = content_key(&self.prefix, self.strategy, rule.reads(), input, upstream);
        let generations = [
            cache.global_generation.load(Ordering::Relaxed),
            self.bundle_generation.load(Ordering::Relaxed),
            self.rule_generation.load(Ordering::Relaxed),
        ];
        ((content, generations), content)
    }

    pub fn stats(&self) -> RuleCacheStats {
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
            not_stored_clock: self.stats.read_clock.load(Ordering::Relaxed),
            hint: clock_hint(self.stats.read_clock.load(Ordering::Relaxed), misses),
            ttl_ms: self.ttl_ms.load(Ordering::Relaxed),
            using_l1: self.use_l1.load(Ordering::Relaxed),
            using_l2: self.use_l2.load(Ordering::Relaxed),
            adaptive_decision: a.decision.clone(),
            eval_cost_ns: a.eval_ns as u64,
            lookup_cost_ns: a.lookup_ns as u64,
        }
    }

    /// Evaluates through the cache.
    pub fn evaluate(&self, rule: &Rule, input: &Input, upstream: &[Upstream]) -> Evaluation {
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
        if let Some(eval) = self.l1_get(&cache, rule, &key, start) {
            return eval;
        }
        let lookup = start.elapsed();
        let l2 = cache
            .l2
            .as_ref()
            .filter(|_| self.use_l2.load(Ordering::Relaxed))
            .map(|l2| (l2, l2_key(&self.bundle, &self.rule, &shared)));
        let mut l2_cost = None;
        if let Some((l2, l2_key)) = &l2 {
            let t = Instant::now();
            let found = l2.get(l2_key).and_then(|bytes| {
                let stored = L2Entry::decode(&bytes, &self.rule_digest);
                if stored.is_none() {
                    l2.note_garbage();
                }
                stored
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
                if let Some((l2, l2_key)) = l2
                    && let Some(bytes) = L2Entry::encode(&stored, &self.rule_digest)
                {
                    l2.put(l2_key, bytes, self.ttl_ms.load(Ordering::Relaxed));
                }
                self.store_l1(&cache, key, stored, size);
            }
            None => {
                self.stats.not_stored.fetch_add(1, Ordering::Relaxed);
                if eval.read_clock && self.stats.read_clock.fetch_add(1, Ordering::Relaxed) == 0 {
                    // Once per rule: the stats carry it from then on.
                    tracing::warn!(
                        bundle = %self.bundle,
                        rule = %self.rule,
                        "{}",
                        crate::cache::CLOCK_HINT
                    );
                }
            }
        }
        self.observe(&cache, false, lookup, l2_cost, Some(eval_cost));
        eval
    }

    /// Whether a lookup may go to the shared L2 (a network call).
    pub fn has_l2(&self) -> bool {
        self.use_l2.load(Ordering::Relaxed) && self.cache.upgrade().is_some_and(|c| c.l2.is_some())
    }

    /// A hit in this host's memory (L1), served on the calling thread; `None` on a miss, an
    /// expired entry, or while the adaptive strategy has caching off. Never touches L2 (a
    /// network call) or the rule: [`RuleCache::evaluate`] does that.
    pub fn l1_hit(&self, rule: &Rule, input: &Input, upstream: &[Upstream]) -> Option<Evaluation> {
        let cache = self.cache.upgrade()?;
        if !self.use_l1.load(Ordering::Relaxed) {
            return None;
        }
        let start = Instant::now();
        let (key, _) = self.key(&cache, rule, input, upstream);
        self.l1_get(&cache, rule, &key, start)
    }

    fn l1_get(
        &self,
        cache: &ResultCache,
        rule: &Rule,
        key: &L1Key,
        start: Instant,
    ) -> Option<Evaluation> {
        let entry = cache.l1.get(key)?;
        if entry.expires <= Instant::now() {
            cache.l1.remove(key);
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        let eval = served(rule, &entry.stored, start);
        self.observe(cache, true, start.elapsed(), None, None);
        Some(eval)
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

    /// Feeds the adaptive strategy and applies its decision at the end of a window.
    fn observe(
        &self,
        cache: &ResultCache,
        hit: bool,
        lookup: Duration,
        l2: Option<Duration>,
        eval: Option<Duration>,
    ) {
        let cfg = &cache.config;
        let bounds = Bounds {
            window: cfg.adaptive_window,
            min_ttl_ms: cfg.adaptive_min_ttl_ms,
            max_ttl_ms: cfg.adaptive_max_ttl_ms,
        };
        let ttl = self.ttl_ms.load(Ordering::Relaxed);
        let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        let Some(choice) = a.record(hit, lookup, l2, eval, ttl, bounds) else {
            return;
        };
        if choice.cache {
            self.ttl_ms.store(choice.ttl_ms, Ordering::Relaxed);
        } else {
            self.use_l1.store(false, Ordering::Relaxed);
        }
        if cache.l2.is_some()
            && let Some(use_l2) = choice.use_l2
        {
            self.use_l2.store(use_l2, Ordering::Relaxed);
        }
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

/// [`crate::cache::CLOCK_HINT`] when any evaluation that missed the cache read a clock
/// (`clock_reads` of `misses`).
fn clock_hint(clock_reads: u64, misses: u64) -> Option<String> {
    (clock_reads > 0).then(|| {
        format!(
            "{clock_reads} of {misses} evaluations read a clock and were not cached: {}",
            crate::cache::CLOCK_HINT
        )
    })
}
