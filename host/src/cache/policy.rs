//! What a bundle's manifest says about caching a rule's results: the strategy and its
//! parameters. Plain data; the cache interprets it.

use serde::{Deserialize, Serialize};

/// Result-cache strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStrategy {
    /// Never cache.
    None,
    /// Key over the whole input, settings and rule digest; fixed TTL.
    Basic,
    /// Key over only what the rule reads, its upstream decisions, settings and digest.
    Intelligent,
    /// Like `intelligent`, but caches a rule only when observed cost and hit rate say it pays,
    /// and tunes the TTL.
    Adaptive,
}

/// A rule's (or the bundle's default) result-cache policy. Every field may be left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// The strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CacheStrategy>,
    /// Time to live of an entry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Results larger than this are not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<usize>,
}

impl CachePolicy {
    /// `self` with `default`'s fields where `self` has none.
    pub fn or(self, default: CachePolicy) -> CachePolicy {
        CachePolicy {
            strategy: self.strategy.or(default.strategy),
            ttl_ms: self.ttl_ms.or(default.ttl_ms),
            max_entry_bytes: self.max_entry_bytes.or(default.max_entry_bytes),
        }
    }
}
