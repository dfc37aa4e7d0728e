//! The adaptive strategy: per window of lookups, whether caching a rule pays (what hits save
//! against what every lookup costs), what TTL to use, and whether the shared L2 is worth a
//! round trip. The decision is a pure function of the measurements, tested below.

use std::time::Duration;

/// The strategy's bounds, from [`CacheConfig`](super::CacheConfig).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub window: u32,
    pub min_ttl_ms: u64,
    pub max_ttl_ms: u64,
}

/// Measurements of one rule's cache, smoothed, and the current window's hits.
pub(crate) struct Adaptive {
    pub enabled: bool,
    window_hits: u32,
    window_lookups: u32,
    pub eval_ns: f64,
    pub lookup_ns: f64,
    l2_ns: f64,
    pub decision: Option<String>,
    /// While caching is off, evaluations left before it probes again.
    pub probe_in: u32,
}

/// What to do after a window.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Choice {
    /// Whether to keep looking results up (false: evaluate directly, probe later).
    pub cache: bool,
    /// The TTL for new entries.
    pub ttl_ms: u64,
    /// Whether to use the L2, when there is one and its cost is known.
    pub use_l2: Option<bool>,
    /// The decision in words, for stats.
    pub words: String,
}

fn ewma(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        old * 0.9 + new * 0.1
    }
}

impl Adaptive {
    pub fn new(enabled: bool) -> Adaptive {
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

    /// Records one lookup's costs; at the end of a window (when enabled), decides.
    pub fn record(
        &mut self,
        hit: bool,
        lookup: Duration,
        l2: Option<Duration>,
        eval: Option<Duration>,
        ttl_ms: u64,
        bounds: Bounds,
    ) -> Option<Choice> {
        self.lookup_ns = ewma(self.lookup_ns, lookup.as_nanos() as f64);
        if let Some(l2) = l2 {
            self.l2_ns = ewma(self.l2_ns, l2.as_nanos() as f64);
        }
        if let Some(eval) = eval {
            self.eval_ns = ewma(self.eval_ns, eval.as_nanos() as f64);
        }
        if !self.enabled {
            return None;
        }
        self.window_lookups += 1;
        self.window_hits += hit as u32;
        if self.window_lookups < bounds.window {
            return None;
        }
        let hit_rate = self.window_hits as f64 / self.window_lookups as f64;
        self.window_hits = 0;
        self.window_lookups = 0;
        let l2_ns = (self.l2_ns > 0.0).then_some(self.l2_ns);
        let choice = decide(
            hit_rate,
            self.eval_ns,
            self.lookup_ns,
            l2_ns,
            ttl_ms,
            bounds,
        );
        if !choice.cache {
            self.probe_in = bounds.window.saturating_mul(8);
        }
        self.decision = Some(choice.words.clone());
        Some(choice)
    }
}

/// Caching pays when what hits save (hit rate × evaluation cost) exceeds what every lookup
/// costs. While it pays, a high hit rate doubles the TTL and a low one halves it, within the
/// bounds. The L2 pays only when a round trip is cheaper than evaluating.
pub(crate) fn decide(
    hit_rate: f64,
    eval_ns: f64,
    lookup_ns: f64,
    l2_ns: Option<f64>,
    ttl_ms: u64,
    bounds: Bounds,
) -> Choice {
    let use_l2 = l2_ns.map(|l2| l2 < eval_ns);
    let saved = hit_rate * eval_ns;
    if eval_ns > 0.0 && saved < lookup_ns {
        return Choice {
            cache: false,
            ttl_ms,
            use_l2,
            words: format!(
                "caching off: hit rate {:.0}% saves {saved:.0} ns per lookup, a lookup costs {lookup_ns:.0} ns",
                hit_rate * 100.0
            ),
        };
    }
    let ttl_ms = if hit_rate > 0.5 {
        ttl_ms.saturating_mul(2).min(bounds.max_ttl_ms)
    } else if hit_rate < 0.1 {
        (ttl_ms / 2).max(bounds.min_ttl_ms)
    } else {
        ttl_ms.clamp(bounds.min_ttl_ms, bounds.max_ttl_ms)
    };
    Choice {
        cache: true,
        ttl_ms,
        use_l2,
        words: format!(
            "caching on: hit rate {:.0}%, ttl {ttl_ms} ms",
            hit_rate * 100.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        window: 16,
        min_ttl_ms: 1000,
        max_ttl_ms: 8000,
    };

    #[test]
    fn caching_stops_when_hits_save_less_than_lookups_cost() {
        // 10% hits on a 1 us rule save 100 ns; a lookup costing 300 ns does not pay.
        let c = decide(0.1, 1000.0, 300.0, None, 4000, BOUNDS);
        assert!(!c.cache, "{c:?}");
        assert!(c.words.starts_with("caching off"), "{}", c.words);
        // The same hit rate on a 100 us rule saves 10 us: it pays.
        assert!(decide(0.1, 100_000.0, 300.0, None, 4000, BOUNDS).cache);
    }

    #[test]
    fn the_ttl_follows_the_hit_rate_within_bounds() {
        let ttl = |rate, ttl| decide(rate, 1e6, 100.0, None, ttl, BOUNDS).ttl_ms;
        assert_eq!(ttl(0.9, 4000), 8000);
        assert_eq!(ttl(0.9, 8000), 8000, "capped");
        assert_eq!(ttl(0.05, 4000), 2000);
        assert_eq!(ttl(0.05, 1000), 1000, "floored");
        assert_eq!(ttl(0.3, 4000), 4000);
        assert_eq!(ttl(0.3, 60_000), 8000, "brought within bounds");
    }

    #[test]
    fn l2_is_used_only_when_cheaper_than_evaluating() {
        assert_eq!(
            decide(0.9, 1e6, 1e2, Some(5e5), 1000, BOUNDS).use_l2,
            Some(true)
        );
        assert_eq!(
            decide(0.9, 1e4, 1e2, Some(5e5), 1000, BOUNDS).use_l2,
            Some(false)
        );
        assert_eq!(decide(0.9, 1e4, 1e2, None, 1000, BOUNDS).use_l2, None);
    }

    #[test]
    fn decisions_come_once_per_window_and_switching_off_schedules_a_probe() {
        let mut a = Adaptive::new(true);
        let us = Duration::from_micros(1);
        for n in 1..BOUNDS.window {
            assert_eq!(
                a.record(false, us, None, Some(us), 1000, BOUNDS),
                None,
                "{n}"
            );
        }
        let choice = a.record(false, us, None, Some(us), 1000, BOUNDS).unwrap();
        assert!(!choice.cache, "no hits at all: {choice:?}");
        assert_eq!(a.probe_in, BOUNDS.window * 8);
        assert_eq!(a.decision.as_deref(), Some(choice.words.as_str()));
        let mut off = Adaptive::new(false);
        for _ in 0..BOUNDS.window * 2 {
            assert_eq!(off.record(false, us, None, Some(us), 1000, BOUNDS), None);
        }
    }
}
