//! What is stored: a decision or the rule's own error (never a limit error or a trap), the
//! L1 entry around it, and the L2 wire format.

use super::key::FORMAT_VERSION;
use crate::error::EvalError;
use crate::rule::Decision;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What is cached: a decision or the rule's own error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Stored {
    Ok(Decision),
    InvalidInput(String),
    Failed(String),
}

impl Stored {
    /// What may be cached of `result`: decisions and the rule's own errors only.
    pub fn from_result(result: &Result<Decision, EvalError>) -> Option<Stored> {
        match result {
            Ok(d) => Some(Stored::Ok(d.clone())),
            Err(EvalError::InvalidInput(m)) => Some(Stored::InvalidInput(m.clone())),
            Err(EvalError::Failed(m)) => Some(Stored::Failed(m.clone())),
            // Limits depend on load, traps may be transient host trouble, overload is the
            // host's condition: never cached.
            Err(_) => None,
        }
    }

    pub fn to_result(&self) -> Result<Decision, EvalError> {
        match self {
            Stored::Ok(d) => Ok(d.clone()),
            Stored::InvalidInput(m) => Err(EvalError::InvalidInput(m.clone())),
            Stored::Failed(m) => Err(EvalError::Failed(m.clone())),
        }
    }

    /// An estimate of the heap it holds, for the memory budget.
    pub fn size(&self) -> usize {
        match self {
            Stored::Ok(d) => {
                d.reasons.iter().map(|r| r.len() + 24).sum::<usize>()
                    + d.output.as_ref().map_or(0, |o| o.to_string().len() * 2)
            }
            Stored::InvalidInput(m) | Stored::Failed(m) => m.len(),
        }
    }
}

/// An L1 entry.
pub(crate) struct Entry {
    pub stored: Stored,
    pub expires: Instant,
    pub weight: u64,
}

/// The L2 wire format: checked on read, so anything else in Redis is a miss.
#[derive(Serialize, Deserialize)]
pub(crate) struct L2Entry {
    pub v: u32,
    pub rule_digest: String,
    pub stored: Stored,
}

impl L2Entry {
    /// The stored result in `bytes`, if they are an entry of this format for `rule_digest`.
    pub fn decode(bytes: &[u8], rule_digest: &str) -> Option<Stored> {
        match serde_json::from_slice::<L2Entry>(bytes) {
            Ok(e) if e.v == FORMAT_VERSION && e.rule_digest == rule_digest => Some(e.stored),
            _ => None,
        }
    }

    pub fn encode(stored: &Stored, rule_digest: &str) -> Option<Vec<u8>> {
        serde_json::to_vec(&L2Entry {
            v: FORMAT_VERSION,
            rule_digest: rule_digest.to_owned(),
            stored: stored.clone(),
        })
        .ok()
    }
}

#[derive(Clone)]
pub(crate) struct Weigh;
impl quick_cache::Weighter<L1Key, Arc<Entry>> for Weigh {
    fn weight(&self, _key: &L1Key, val: &Arc<Entry>) -> u64 {
        val.weight
    }
}

#[derive(Clone, Default)]
pub(crate) struct CountEvictions(pub Arc<AtomicU64>);
impl quick_cache::Lifecycle<L1Key, Arc<Entry>> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _key: L1Key, _val: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// An L1 key: the content digest and the invalidation generations it was stored under.
pub(crate) type L1Key = ([u8; 32], [u64; 3]);

pub(crate) type L1 = quick_cache::sync::Cache<
    L1Key,
    Arc<Entry>,
    Weigh,
    quick_cache::DefaultHashBuilder,
    CountEvictions,
>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Verdict;
    use std::time::Duration;

    #[test]
    fn only_decisions_and_the_rules_own_errors_are_stored() {
        let ok = Ok(Decision::new(Verdict::Allow));
        assert_eq!(
            Stored::from_result(&ok).unwrap().to_result(),
            ok,
            "a decision round-trips"
        );
        for e in [
            EvalError::InvalidInput("x".into()),
            EvalError::Failed("y".into()),
        ] {
            let r = Err(e);
            assert_eq!(Stored::from_result(&r).unwrap().to_result(), r);
        }
        for e in [
            EvalError::FuelExhausted { budget: 1 },
            EvalError::Timeout {
                deadline: Duration::from_millis(1),
            },
            EvalError::MemoryLimit {
                limit: 1,
                requested: 2,
            },
            EvalError::StackOverflow,
            EvalError::Trap {
                message: "t".into(),
                detail: None,
            },
            EvalError::Overloaded("busy".into()),
        ] {
            assert_eq!(Stored::from_result(&Err(e.clone())), None, "{e}");
        }
    }

    #[test]
    fn l2_entries_are_checked_on_read() {
        let stored = Stored::Ok(Decision::new(Verdict::Deny));
        let bytes = L2Entry::encode(&stored, "d1").unwrap();
        assert_eq!(L2Entry::decode(&bytes, "d1"), Some(stored));
        assert_eq!(L2Entry::decode(&bytes, "d2"), None, "another rule's entry");
        assert_eq!(L2Entry::decode(b"garbage", "d1"), None);
        let old = String::from_utf8(bytes)
            .unwrap()
            .replace("\"v\":1", "\"v\":0");
        assert_eq!(
            L2Entry::decode(old.as_bytes(), "d1"),
            None,
            "another format"
        );
    }
}
