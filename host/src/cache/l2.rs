//! The shared L2 result cache (Redis): reads on the request path within a short timeout,
//! writes queued to a background thread, and a circuit breaker so a slow or dead Redis costs
//! at most one timeout per breaker window, never a wrong answer.

use super::CacheConfig;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;
#[cfg(feature = "redis")]
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

/// L2 counters.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
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

/// A circuit breaker: after `threshold` consecutive failures, Redis is skipped for
/// `open_ms`; then requests probe it again (one more failure run reopens it).
#[cfg_attr(
    not(feature = "redis"),
    allow(
        dead_code,
        reason = "only the Redis L2 uses it; kept for its unit tests"
    )
)]
pub(crate) struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    opened: AtomicU64,
    threshold: u32,
    open_ms: u64,
    epoch: Instant,
}

#[cfg_attr(
    not(feature = "redis"),
    allow(
        dead_code,
        reason = "only the Redis L2 uses it; kept for its unit tests"
    )
)]
impl Breaker {
    pub fn new(threshold: u32, open_ms: u64) -> Breaker {
        Breaker {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            threshold: threshold.max(1),
            open_ms,
            epoch: Instant::now(),
        }
    }
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
    pub fn allow(&self) -> bool {
        self.allow_at(self.now_ms())
    }
    fn allow_at(&self, now_ms: u64) -> bool {
        now_ms >= self.open_until_ms.load(Ordering::Relaxed)
    }
    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
    pub fn failure(&self) {
        self.failure_at(self.now_ms())
    }
    fn failure_at(&self, now_ms: u64) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            // Open (again): skip Redis for a while, then let requests probe it.
            self.open_until_ms
                .store(now_ms + self.open_ms, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "redis L2 cache: circuit breaker open for {} ms",
                self.open_ms
            );
        }
    }
    pub fn state(&self) -> &'static str {
        if self.allow() { "closed" } else { "open" }
    }
}

#[cfg(feature = "redis")]
pub(crate) struct L2 {
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

#[cfg(feature = "redis")]
impl L2 {
    /// Whether `url` is a Redis URL (parsed only: nothing is contacted).
    pub fn check_url(url: &str) -> Result<(), String> {
        redis::Client::open(url)
            .map(drop)
            .map_err(|e| format!("`{url}`: {e}"))
    }

    pub fn new(url: &str, config: &CacheConfig) -> Result<L2, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
        let breaker = Arc::new(Breaker::new(
            config.breaker_failures,
            config.breaker_open_ms,
        ));
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
    ) -> Result<T, String> {
        if !self.breaker.allow() {
            return Err("Redis is skipped: its circuit breaker is open after failures".into());
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
                Ok(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                tracing::debug!("redis L2 operation failed: {e}");
                Err(format!("Redis did not answer: {e}"))
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.with_connection(|c| redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c))
            .ok()
            .flatten()
    }

    /// Writes queued and not yet done.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }

    /// Counts an entry read that was not ours.
    pub fn note_garbage(&self) {
        self.garbage.fetch_add(1, Ordering::Relaxed);
    }

    pub fn put(&self, key: String, bytes: Vec<u8>, ttl_ms: u64) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.writes.try_send((key, bytes, ttl_ms)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn delete_matching(&self, pattern: &str) -> Result<(), String> {
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
        })
    }

    pub fn stats(&self) -> L2Stats {
        L2Stats {
            errors: self.errors.load(Ordering::Relaxed),
            garbage: self.garbage.load(Ordering::Relaxed),
            dropped_writes: self.dropped.load(Ordering::Relaxed),
            breaker: self.breaker.state(),
            breaker_opened: self.breaker.opened.load(Ordering::Relaxed),
        }
    }
}

#[cfg(feature = "redis")]
/// Counts a queued write as done when dropped, however its handling ends.
struct Done<'a>(&'a AtomicU64);
#[cfg(feature = "redis")]
impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(feature = "redis")]
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

/// Without the `redis` feature there is no L2: a configured `redis_url` is refused.
#[cfg(not(feature = "redis"))]
pub(crate) enum L2 {}

#[cfg(not(feature = "redis"))]
impl L2 {
    pub fn check_url(url: &str) -> Result<(), String> {
        Err(format!(
            "`{url}`: this build of rulebox has no Redis support (its `redis` feature is off)"
        ))
    }
    pub fn new(url: &str, _: &CacheConfig) -> Result<L2, String> {
        Self::check_url(url).map(|()| unreachable!("check_url refuses every URL"))
    }
    pub fn pending(&self) -> u64 {
        match *self {}
    }
    pub fn note_garbage(&self) {
        match *self {}
    }
    pub fn get(&self, _: &str) -> Option<Vec<u8>> {
        match *self {}
    }
    pub fn put(&self, _: String, _: Vec<u8>, _: u64) {
        match *self {}
    }
    pub fn delete_matching(&self, _: &str) -> Result<(), String> {
        match *self {}
    }
    pub fn stats(&self) -> L2Stats {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::Breaker;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_after_its_window() {
        let b = Breaker::new(3, 100);
        b.failure_at(0);
        b.failure_at(1);
        b.success();
        b.failure_at(2);
        b.failure_at(3);
        assert!(
            b.allow_at(3),
            "a success resets the count: two failures since"
        );
        b.failure_at(4);
        assert!(!b.allow_at(4), "third consecutive failure opens it");
        assert!(!b.allow_at(103));
        assert!(b.allow_at(104), "open for 100 ms, then probing");
        assert_eq!(b.opened.load(std::sync::atomic::Ordering::Relaxed), 1);
        for t in 104..107 {
            b.failure_at(t);
        }
        assert!(!b.allow_at(106), "a failed probe run reopens it");
        assert_eq!(b.opened.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn a_threshold_of_zero_means_one() {
        let b = Breaker::new(0, 10);
        b.failure_at(0);
        assert!(!b.allow_at(0));
    }
}
