//! Result caching: keying per strategy, TTL, the byte budget, what is never cached,
//! invalidation, the adaptive strategy, and the shared Redis L2 (a real redis-server).

use rulebox::{Bundle, CacheConfig, ErrorKind, Input, LoadOptions, ResultCache};
use rulebox_tests::{RedisServer, engine, temp_bundle};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn cache(config: CacheConfig) -> Arc<ResultCache> {
    Arc::new(ResultCache::new(config).unwrap())
}

fn load(dir: &std::path::Path, cache: &Arc<ResultCache>) -> Bundle {
    let options = LoadOptions {
        cache: Some(cache.clone()),
        ..Default::default()
    };
    Bundle::load(engine(), dir, &options).unwrap()
}

fn input(v: serde_json::Value) -> Input {
    Input::from_value(v).unwrap()
}

/// A bundle `name` with one echo rule `r` (reads `order.amount`) under `cache_policy`.
fn one_rule(name: &str, settings: &str, cache_policy: &str) -> tempfile::TempDir {
    temp_bundle(&format!(
        "[bundle]\nformat = 1\nname = \"{name}\"\nrevision = \"1\"\n[[rule]]\nname = \"r\"\ncomponent = \"echo.wasm\"\nreads = [\"order.amount\"]\nsettings = {settings}\ncache = {cache_policy}\n"
    ))
}

/// Whether each evaluation of `docs` in turn was served from the cache.
fn served(bundle: &Bundle, docs: &[serde_json::Value]) -> Vec<bool> {
    docs.iter()
        .map(|d| bundle.evaluate_sequential(&input(d.clone())).unwrap().rules[0].cached)
        .collect()
}

#[test]
fn intelligent_keys_on_what_the_rule_reads_and_basic_on_everything() {
    let c = cache(CacheConfig::default());
    let a = json!({"order": {"amount": 10}, "customer": {"name": "ann"}});
    let unread_changed = json!({"order": {"amount": 10}, "customer": {"name": "bob"}});
    let read_changed = json!({"order": {"amount": 11}, "customer": {"name": "bob"}});

    let dir = one_rule("intel", "{}", "{ strategy = \"intelligent\" }");
    let b = load(dir.path(), &c);
    assert_eq!(
        served(
            &b,
            &[
                a.clone(),
                unread_changed.clone(),
                read_changed.clone(),
                a.clone()
            ]
        ),
        [false, true, false, true]
    );

    let dir = one_rule("basic", "{}", "{ strategy = \"basic\" }");
    let b = load(dir.path(), &c);
    assert_eq!(
        served(&b, &[a.clone(), unread_changed.clone(), a.clone()]),
        [false, false, true]
    );

    // The cached result is the rule's own answer, marked cached, and costs no fuel.
    let b = load(
        one_rule("intel", "{}", "{ strategy = \"intelligent\" }").path(),
        &c,
    );
    let fresh = b
        .evaluate_sequential(&input(json!({"order": {"amount": 77}})))
        .unwrap();
    let again = b
        .evaluate_sequential(&input(json!({"order": {"amount": 77}})))
        .unwrap();
    assert!(!fresh.rules[0].cached && again.rules[0].cached);
    assert_eq!(fresh.rules[0].result, again.rules[0].result);
    assert_eq!(again.rules[0].metering.fuel, 0);
    assert_eq!(again.to_json()["rules"][0]["cached"], true);

    let stats = c.stats();
    assert!(stats.hits >= 4 && stats.misses >= 4, "{stats:?}");
}

#[test]
fn settings_component_and_upstream_changes_all_miss() {
    let c = cache(CacheConfig::default());
    let doc = json!({"order": {"amount": 5}, "x": 1});
    let b1 = load(one_rule("k", "{ tag = \"one\" }", "{}").path(), &c);
    assert_eq!(served(&b1, &[doc.clone(), doc.clone()]), [false, true]);
    // Another revision with other settings: a miss.
    let b2 = load(one_rule("k", "{ tag = \"two\" }", "{}").path(), &c);
    assert_eq!(served(&b2, std::slice::from_ref(&doc)), [false]);
    // Another revision with the same settings and component: a hit (same answer).
    let b3 = load(one_rule("k", "{ tag = \"one\" }", "{}").path(), &c);
    assert_eq!(served(&b3, std::slice::from_ref(&doc)), [true]);
    // Another component (one byte of custom section more): a miss.
    let dir = one_rule("k", "{ tag = \"one\" }", "{}");
    let mut bytes = std::fs::read(dir.path().join("echo.wasm")).unwrap();
    bytes.extend_from_slice(&[0, 2, 1, b'x']);
    std::fs::write(dir.path().join("echo.wasm"), bytes).unwrap();
    assert_eq!(
        served(&load(dir.path(), &c), std::slice::from_ref(&doc)),
        [false]
    );

    // A dependent reading only order.amount still misses when its upstream decides otherwise.
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"up\"\nrevision = \"1\"\n\
         [[rule]]\nname = \"up\"\ncomponent = \"echo.wasm\"\nreads = [\"x\"]\ncache = { strategy = \"none\" }\n\
         [[rule]]\nname = \"down\"\ncomponent = \"echo.wasm\"\nreads = [\"order.amount\"]\ndepends_on = [\"up\"]\n",
    );
    let b = load(dir.path(), &c);
    let down = |x: i64| {
        b.evaluate_sequential(&input(json!({"order": {"amount": 1}, "x": x})))
            .unwrap()
            .rule("down")
            .unwrap()
            .cached
    };
    assert_eq!(
        [down(1), down(1), down(2), down(2), down(1)],
        [false, true, false, true, true]
    );
}

#[test]
fn entries_expire_after_their_ttl() {
    let c = cache(CacheConfig::default());
    let b = load(one_rule("ttl", "{}", "{ ttl_ms = 60 }").path(), &c);
    let doc = json!({"order": {"amount": 1}});
    assert_eq!(served(&b, &[doc.clone(), doc.clone()]), [false, true]);
    std::thread::sleep(Duration::from_millis(90));
    assert_eq!(served(&b, &[doc.clone(), doc.clone()]), [false, true]);
}

#[test]
fn the_byte_budget_holds_under_a_flood_of_large_results() {
    let budget = 256 << 10;
    let c = cache(CacheConfig {
        memory_bytes: budget,
        ..Default::default()
    });
    let b = load(
        one_rule("flood", "{}", "{ max_entry_bytes = 100000 }").path(),
        &c,
    );
    let big = "x".repeat(4000);
    for i in 0..1000 {
        // Each result echoes its ~4 KB input fact.
        let r = b
            .evaluate_sequential(&input(json!({"order": {"amount": format!("{i}{big}")}})))
            .unwrap();
        assert!(r.rules[0].result.is_ok());
    }
    let stats = c.stats();
    assert!(
        stats.bytes <= budget,
        "{} bytes over a budget of {budget}",
        stats.bytes
    );
    assert!(stats.evictions > 500, "{stats:?}");
    assert!(
        stats.entries > 10,
        "the cache still holds entries: {stats:?}"
    );

    // Results over max_entry_bytes are not stored at all.
    let small = load(
        one_rule("small", "{}", "{ max_entry_bytes = 1000 }").path(),
        &c,
    );
    let doc = json!({"order": {"amount": big}});
    assert_eq!(served(&small, &[doc.clone(), doc.clone()]), [false, false]);
}

#[test]
fn limit_errors_traps_and_clock_readers_are_never_cached() {
    let c = cache(CacheConfig::default());
    let doc = json!({"order": {"amount": 1}});
    let slow = load(one_rule("slow", "{ work = 100000000000 }", "{}").path(), &c);
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"slow2\"\nrevision = \"1\"\nlimits = { timeout_ms = 20, fuel = 9000000000 }\n[[rule]]\nname = \"r\"\ncomponent = \"echo.wasm\"\nreads = [\"order.amount\"]\nsettings = { work = 100000000000 }\n",
    );
    let timed = load(dir.path(), &c);
    for _ in 0..2 {
        let r = timed.evaluate_sequential(&input(doc.clone())).unwrap();
        assert_eq!(
            r.rules[0].result.as_ref().unwrap_err().kind(),
            ErrorKind::Timeout
        );
        assert!(!r.rules[0].cached);
    }
    drop(slow);
    let panics = load(one_rule("panics", "{ fail = \"panic\" }", "{}").path(), &c);
    assert_eq!(served(&panics, &[doc.clone(), doc.clone()]), [false, false]);
    let clock = load(one_rule("clock", "{ read_clock = true }", "{}").path(), &c);
    let r = clock.evaluate_sequential(&input(doc.clone())).unwrap();
    assert!(r.rules[0].read_clock && r.rules[0].result.is_ok());
    assert_eq!(served(&clock, std::slice::from_ref(&doc)), [false]);
    // The rule's own errors are deterministic: cached.
    let fails = load(
        one_rule("fails", "{ fail = \"invalid-input\" }", "{}").path(),
        &c,
    );
    assert_eq!(served(&fails, &[doc.clone(), doc.clone()]), [false, true]);
    let stats = c.stats();
    let not_stored: u64 = stats
        .rules
        .iter()
        .filter(|r| ["slow2", "panics", "clock"].contains(&r.bundle.as_str()))
        .map(|r| r.not_stored)
        .sum();
    assert_eq!(not_stored, 2 + 2 + 2);
    // Only the clock reader is told it is the rule's doing, and what to change.
    for r in stats
        .rules
        .iter()
        .filter(|r| ["slow2", "panics", "clock"].contains(&r.bundle.as_str()))
    {
        if r.bundle == "clock" {
            assert_eq!(r.not_stored_clock, 2);
            let hint = r.hint.as_deref().unwrap();
            assert!(
                hint.starts_with("2 of 2 evaluations read a clock")
                    && hint.contains("--disable clocks"),
                "{hint}"
            );
        } else {
            assert_eq!((r.not_stored_clock, &r.hint), (0, &None), "{}", r.bundle);
        }
    }
}

#[test]
fn rules_with_grants_are_cached_only_when_asked() {
    let c = cache(CacheConfig::default());
    let doc = json!({"order": {"amount": 1}});
    let m = |policy: &str| {
        format!(
            "[bundle]\nformat = 1\nname = \"g\"\nrevision = \"1\"\n[[rule]]\nname = \"r\"\ncomponent = \"echo.wasm\"\nreads = [\"order.amount\"]\ngrants = [{{ dir = \"data\" }}]\n{policy}\n"
        )
    };
    let (plain, explicit) = (
        temp_bundle(&m("")),
        temp_bundle(&m("cache = { strategy = \"intelligent\" }")),
    );
    let b = load(plain.path(), &c);
    assert!(!b.rules()[0].is_cached());
    // Said, not silent: the description says why, and how to opt in.
    let described = &b.describe().rules[0];
    assert!(!described.cached);
    let why = described.not_cached.as_deref().unwrap();
    assert!(
        why.contains("grant") && why.contains("cache = { strategy"),
        "{why}"
    );
    assert_eq!(served(&b, &[doc.clone(), doc.clone()]), [false, false]);
    let b = load(explicit.path(), &c);
    assert!(b.describe().rules[0].cached);
    assert_eq!(b.describe().rules[0].not_cached, None);
    assert_eq!(
        served(&b, &[doc.clone(), doc.clone()]),
        [false, true],
        "{:?}",
        c.stats().rules
    );
    // Opting out works for any rule.
    let b = load(one_rule("off", "{}", "{ strategy = \"none\" }").path(), &c);
    assert!(!b.rules()[0].is_cached());
    assert_eq!(
        b.describe().rules[0].not_cached.as_deref(),
        Some("its cache strategy is `none`")
    );
}

#[test]
fn invalidation_by_rule_bundle_and_all() {
    let c = cache(CacheConfig::default());
    let doc = json!({"order": {"amount": 1}});
    let a = load(one_rule("inv-a", "{}", "{}").path(), &c);
    let b = load(one_rule("inv-b", "{}", "{}").path(), &c);
    served(&a, std::slice::from_ref(&doc));
    served(&b, std::slice::from_ref(&doc));
    c.invalidate_rule("inv-a", "r").unwrap();
    assert_eq!(
        (
            served(&a, std::slice::from_ref(&doc)),
            served(&b, std::slice::from_ref(&doc))
        ),
        (vec![false], vec![true])
    );
    c.invalidate_bundle("inv-b").unwrap();
    assert_eq!(
        (
            served(&a, std::slice::from_ref(&doc)),
            served(&b, std::slice::from_ref(&doc))
        ),
        (vec![true], vec![false])
    );
    c.invalidate_all().unwrap();
    assert_eq!(
        (
            served(&a, std::slice::from_ref(&doc)),
            served(&b, std::slice::from_ref(&doc))
        ),
        (vec![false], vec![false])
    );
    // A revision loaded after invalidation does not revive old entries either.
    served(&a, std::slice::from_ref(&doc));
    c.invalidate_bundle("inv-a").unwrap();
    let a2 = load(one_rule("inv-a", "{}", "{}").path(), &c);
    assert_eq!(served(&a2, std::slice::from_ref(&doc)), [false]);
}

#[test]
fn adaptive_turns_caching_off_when_it_does_not_pay_and_tunes_ttl_when_it_does() {
    let c = cache(CacheConfig {
        adaptive_window: 32,
        ..Default::default()
    });
    let unique = load(
        one_rule("unique", "{}", "{ strategy = \"adaptive\" }").path(),
        &c,
    );
    for i in 0..64 {
        unique
            .evaluate_sequential(&input(json!({"order": {"amount": i}})))
            .unwrap();
    }
    let repeated = load(
        one_rule(
            "repeated",
            "{}",
            "{ strategy = \"adaptive\", ttl_ms = 1000 }",
        )
        .path(),
        &c,
    );
    for i in 0..64 {
        repeated
            .evaluate_sequential(&input(json!({"order": {"amount": i % 2}})))
            .unwrap();
    }
    let stats = c.stats();
    let rule = |b: &str| stats.rules.iter().find(|r| r.bundle == b).unwrap().clone();
    let u = rule("unique");
    assert!(!u.using_l1, "{u:?}");
    assert!(
        u.adaptive_decision
            .as_deref()
            .unwrap()
            .starts_with("caching off: hit rate 0%"),
        "{u:?}"
    );
    let r = rule("repeated");
    assert!(r.using_l1 && r.hit_rate > 0.9, "{r:?}");
    assert!(r.ttl_ms > 1000, "ttl raised for a hot rule: {r:?}");
    assert!(
        r.adaptive_decision
            .as_deref()
            .unwrap()
            .starts_with("caching on"),
        "{r:?}"
    );
    assert!(r.eval_cost_ns > r.lookup_cost_ns, "{r:?}");
}

#[test]
fn bad_cache_config_is_named() {
    let err = ResultCache::new(CacheConfig {
        memory_bytes: 10,
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(err.field, "memory_bytes");
    let err = ResultCache::new(CacheConfig {
        redis_url: Some("http://nope".into()),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert_eq!(err.field, "redis_url");
}

fn l2_cache(redis: &RedisServer) -> Arc<ResultCache> {
    cache(CacheConfig {
        redis_url: Some(redis.url()),
        breaker_open_ms: 300,
        ..Default::default()
    })
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn l2_is_shared_between_hosts_and_survives_redis_dying() {
    let mut redis = RedisServer::start();
    let dir = one_rule("shared", "{ tag = \"s\" }", "{}");
    let (host_a, host_b) = (l2_cache(&redis), l2_cache(&redis));
    let (a, b) = (load(dir.path(), &host_a), load(dir.path(), &host_b));
    let doc = json!({"order": {"amount": 42}});

    let first = a.evaluate_sequential(&input(doc.clone())).unwrap();
    assert!(!first.rules[0].cached);
    wait_until("the write-behind to reach redis", || {
        redis.cli(&["DBSIZE"]).trim() == "1"
    });
    let key = redis.cli(&["KEYS", "*"]);
    assert!(key.starts_with("rulebox:v1:shared/r:"), "{key}");
    let second = b.evaluate_sequential(&input(doc.clone())).unwrap();
    assert!(second.rules[0].cached, "host B got host A's result");
    assert_eq!(second.rules[0].result, first.rules[0].result);
    assert_eq!(host_b.stats().l2_hits, 1);

    // Garbage in Redis is a counted miss, never an answer.
    redis.cli(&["SET", key.trim(), "garbage"]);
    let c = l2_cache(&redis);
    let r = load(dir.path(), &c)
        .evaluate_sequential(&input(doc.clone()))
        .unwrap();
    assert!(!r.rules[0].cached && r.rules[0].result.is_ok());
    assert_eq!(c.stats().l2.unwrap().garbage, 1);

    // Redis dies: evaluations keep succeeding, errors are counted, the breaker opens.
    redis.kill();
    for i in 0..20 {
        let r = a
            .evaluate_sequential(&input(json!({"order": {"amount": 1000 + i}})))
            .unwrap();
        assert!(r.rules[0].result.is_ok());
    }
    let l2 = host_a.stats().l2.unwrap();
    assert!(l2.errors >= 3, "{l2:?}");
    assert_eq!(l2.breaker, "open");
    assert!(l2.breaker_opened >= 1);
    // Invalidating now cannot reach the shared entries, and the caller is told so.
    let err = host_a.invalidate_bundle("other").unwrap_err();
    assert!(
        matches!(err, rulebox::CacheError::SharedUnavailable(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("shared cache was not changed"),
        "{err}"
    );

    // Redis is back: after the open period the breaker lets requests through and closes.
    redis.restart();
    wait_until("the breaker to close", || {
        a.evaluate_sequential(&input(json!({"order": {"amount": 7}})))
            .unwrap();
        host_a.stats().l2.unwrap().breaker == "closed"
    });
    // Writes resume (one queued while the breaker was still open may be dropped: it is a
    // cache), and the other host reads what this one wrote.
    let mut amount = 9000;
    wait_until("writes to resume", || {
        amount += 1;
        a.evaluate_sequential(&input(json!({"order": {"amount": amount}})))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        redis.cli(&["DBSIZE"]).trim() != "0"
    });
    let errors = host_a.stats().l2.unwrap().errors;
    assert!(
        b.evaluate_sequential(&input(json!({"order": {"amount": amount}})))
            .unwrap()
            .rules[0]
            .cached
    );
    a.evaluate_sequential(&input(json!({"order": {"amount": 1}})))
        .unwrap();
    assert_eq!(
        host_a.stats().l2.unwrap().errors,
        errors,
        "no errors once Redis is back"
    );

    // Invalidation reaches L2.
    host_a.invalidate_bundle("shared").unwrap();
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
}

#[test]
fn a_slow_redis_costs_a_timeout_not_an_outage() {
    let redis = RedisServer::start();
    let c = l2_cache(&redis);
    let b = load(one_rule("slow-redis", "{}", "{}").path(), &c);
    assert!(
        b.evaluate_sequential(&input(json!({"order": {"amount": 1}})))
            .unwrap()
            .rules[0]
            .result
            .is_ok()
    );
    // Redis stops answering for a second.
    let port = redis.port.to_string();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "1"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    let start = std::time::Instant::now();
    for i in 0..5 {
        let r = b
            .evaluate_sequential(&input(json!({"order": {"amount": 100 + i}})))
            .unwrap();
        assert!(r.rules[0].result.is_ok() && !r.rules[0].cached);
    }
    let took = start.elapsed();
    let l2 = c.stats().l2.unwrap();
    assert!(!sleeper.is_finished(), "DEBUG SLEEP ended early");
    assert!(
        l2.errors >= 1,
        "timeouts are counted: {l2:?} after {took:?}"
    );
    // Five misses against a stalled Redis: each read gives up after its 25 ms timeout (and
    // the breaker stops asking after three); nowhere near the second Redis is stalled for.
    assert!(
        took < Duration::from_millis(700),
        "evaluations waited on Redis: {took:?}"
    );
    let out = sleeper.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK",
        "DEBUG SLEEP ran"
    );
}

/// A runtime with one blocking thread, and a way to take that thread until told to let go.
fn one_blocking_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Takes the runtime's only blocking thread; it is free again once the sender is used or
/// dropped.
async fn take_the_blocking_pool() -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken_tx, taken) = tokio::sync::oneshot::channel();
    let blocker = tokio::task::spawn_blocking(move || {
        let _ = taken_tx.send(());
        let _ = held.recv();
    });
    taken.await.unwrap();
    (release, blocker)
}

/// Results in the memory cache are served on the calling task: a fully cached bundle
/// answers while tokio's blocking pool is fully taken (it used to wait for a blocking
/// thread per dependency layer), and a miss still runs there.
#[test]
fn memory_cache_hits_do_not_wait_for_the_blocking_pool() {
    let c = cache(CacheConfig::default());
    let dir = one_rule("inline", "{}", "{}");
    let options = LoadOptions {
        cache: Some(c.clone()),
        inline_below_us: 0,
        ..Default::default()
    };
    let bundle = Bundle::load(engine(), dir.path(), &options).unwrap();
    let hit = input(json!({"order": {"amount": 1}}));
    let miss = input(json!({"order": {"amount": 2}}));
    one_blocking_thread().block_on(async {
        assert!(!bundle.evaluate(&hit).await.unwrap().rules[0].cached);
        let (release, blocker) = take_the_blocking_pool().await;
        let served = tokio::time::timeout(Duration::from_secs(20), bundle.evaluate(&hit))
            .await
            .expect("a cache hit must not wait for the blocking pool");
        assert!(served.unwrap().rules[0].cached);
        // A miss needs the pool (inline evaluation is off here): it finishes once the
        // pool is free again.
        let pending = bundle.evaluate(&miss);
        release.send(()).unwrap();
        assert!(!pending.await.unwrap().rules[0].cached);
        blocker.await.unwrap();
    });
}

/// A layer whose rules recently cost less than `inline_below_us` runs on the calling task;
/// an unmeasured rule, and one over the budget, go to the blocking pool.
#[test]
fn cheap_rules_run_inline_and_costly_ones_on_the_pool() {
    let cheap = one_rule("cheap", "{}", "{ strategy = \"none\" }");
    let costly = one_rule("costly", "{ work = 3000000 }", "{ strategy = \"none\" }");
    let load = |dir: &std::path::Path| {
        let options = LoadOptions {
            inline_below_us: 1000,
            ..Default::default()
        };
        Bundle::load(engine(), dir, &options).unwrap()
    };
    let (cheap, costly) = (load(cheap.path()), load(costly.path()));
    let doc = input(json!({"order": {"amount": 1}}));
    one_blocking_thread().block_on(async {
        // Measured once (on the pool: nothing is known yet).
        cheap.evaluate(&doc).await.unwrap();
        let costly_us = costly.evaluate(&doc).await.unwrap().rules[0]
            .metering
            .wall_us;
        assert!(
            costly_us >= 1000,
            "the costly rule must cost over the budget: {costly_us} us"
        );
        let (release, blocker) = take_the_blocking_pool().await;
        tokio::time::timeout(Duration::from_secs(20), cheap.evaluate(&doc))
            .await
            .expect("a cheap rule must not wait for the blocking pool")
            .unwrap();
        let waiting = costly.evaluate(&doc);
        tokio::pin!(waiting);
        let early = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
        assert!(
            early.is_err(),
            "a costly rule runs on the pool, which is taken"
        );
        release.send(()).unwrap();
        waiting.await.unwrap();
        blocker.await.unwrap();
    });
}

/// Rules evaluated on the calling task still reach WASI (the escape fixture reads a granted
/// file and prints on every evaluation, both of which block on the ambient runtime): that
/// must work on a multi-thread runtime (inside `block_in_place`) and on a current-thread one
/// (where only a layer of lean rules, which import no WASI, runs inline), never panic. The
/// payments bundle, all lean rules (sanctions reads its list through `rulebox:rule/grants`),
/// runs inline on both.
#[test]
fn inline_rules_that_read_granted_files_work_on_either_runtime_flavor() {
    let options = LoadOptions {
        inline_below_us: 10_000_000,
        ..Default::default()
    };
    let payments = Bundle::load(
        engine(),
        &rulebox_tests::example_bundle("payments"),
        &options,
    )
    .unwrap();
    let doc = input(json!({
        "order": {"amount": 20, "currency": "EUR"},
        "customer": {"country": "DE", "age_days": 900, "verified": true},
        "payment": {"beneficiary_country": "KP"}
    }));
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"wasi\"\nrevision = \"1\"\n\
         [[rule]]\nname = \"escape\"\ncomponent = \"escape.wasm\"\n\
         grants = [{ dir = \"data\", guest = \"/data\" }]\n\
         settings = { read = [\"/data/note.txt\"], list = [] }\n",
    );
    std::fs::copy(
        rulebox_tests::guest_path("hostile_escape"),
        dir.path().join("escape.wasm"),
    )
    .unwrap();
    let wasi = Bundle::load(engine(), dir.path(), &options).unwrap();
    assert!(wasi.rules()[0].rule.pre().imports_wasi());
    let multi = rulebox_tests::rt();
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for rt in [&multi, &current] {
        for _ in 0..3 {
            // The first round measures the rules (on the pool); the next run them inline.
            let result = rt.block_on(payments.evaluate(&doc)).unwrap();
            assert!(result.errors().is_empty(), "{:?}", result.errors());
            assert_eq!(result.verdict.as_str(), "deny", "KP is sanctioned");
            let result = rt.block_on(wasi.evaluate(&doc)).unwrap();
            assert!(result.errors().is_empty(), "{:?}", result.errors());
            let output = result.rules[0]
                .result
                .as_ref()
                .unwrap()
                .output
                .clone()
                .unwrap();
            assert_eq!(output["read"]["/data/note.txt"]["ok"], "note", "{output}");
        }
    }
}
