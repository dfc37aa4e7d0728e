//! Per-credential rate limits: a token bucket per role (`governor`), keyed by credential, or
//! by address for anonymous callers; idle keys are evicted so memory stays bounded. And the
//! counters of every request turned away.

use crate::auth::Principal;
use crate::config::{Rate, RateLimitsConfig, Role};
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::num::NonZeroU32;

/// The limiters, one per role.
pub struct RateLimits {
    viewer: DefaultKeyedRateLimiter<String>,
    evaluator: DefaultKeyedRateLimiter<String>,
    operator: DefaultKeyedRateLimiter<String>,
    admin: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

/// Requests turned away, by reason: the `rulebox_rejected_requests_total{reason}` counters.
pub struct Rejected {
    /// Over a credential's rate limit (429).
    pub rate_limited: Counter,
    /// Beyond the concurrent-request limit, or the engine could not run them (503).
    pub overloaded: Counter,
    /// Past the request timeout (503).
    pub timed_out: Counter,
}

/// The counters, as `GET /v1/server/stats` shows them.
#[derive(Debug, Serialize)]
pub struct RejectedStats {
    rate_limited: u64,
    overloaded: u64,
    timed_out: u64,
    /// Keys the rate limiters hold now (bounded: idle ones are evicted every minute).
    rate_limiter_keys: usize,
}

fn keyed(rate: Rate) -> DefaultKeyedRateLimiter<String> {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

impl RateLimits {
    /// From configuration (already validated).
    pub fn new(config: &RateLimitsConfig) -> RateLimits {
        RateLimits {
            viewer: keyed(config.viewer),
            evaluator: keyed(config.evaluator),
            operator: keyed(config.operator),
            admin: keyed(config.admin),
            clock: DefaultClock::default(),
        }
    }

    fn limiters(&self) -> [&DefaultKeyedRateLimiter<String>; 4] {
        [&self.viewer, &self.evaluator, &self.operator, &self.admin]
    }

    /// Takes one request from the caller's bucket, or says when to come back (429).
    pub fn check(&self, caller: &Principal, rejected: &Rejected) -> Result<(), ApiError> {
        let limiter = match caller.role() {
            Role::Viewer => &self.viewer,
            Role::Evaluator => &self.evaluator,
            Role::Operator => &self.operator,
            Role::Admin => &self.admin,
        };
        limiter.check_key(&caller.rate_key).map_err(|not_until| {
            rejected.rate_limited.inc();
            let wait = not_until.wait_time_from(self.clock.now());
            let mut e = ApiError::new(
                "rate-limited",
                format!(
                    "credential `{}` is over its rate limit; retry in {} ms",
                    caller.name,
                    wait.as_millis()
                ),
            );
            e.retry_after_s = Some(wait.as_secs() + 1);
            e
        })
    }

    /// Forgets keys whose buckets are full again (they would allow a burst anyway).
    pub fn evict_idle(&self) {
        for l in self.limiters() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The counters.
    pub fn stats(&self, r: &Rejected) -> RejectedStats {
        RejectedStats {
            rate_limited: r.rate_limited.get(),
            overloaded: r.overloaded.get(),
            timed_out: r.timed_out.get(),
            rate_limiter_keys: self.limiters().iter().map(|l| l.len()).sum(),
        }
    }
}
