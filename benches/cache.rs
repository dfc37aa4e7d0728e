//! Result caching, in one run:
//! - criterion: an L1 cache hit vs an uncached evaluation of the same rule (the cheapest
//!   example rule, `amount_limit`) vs the rule as a native function;
//! - a Zipf workload over 10,000 distinct inputs (by the fields the rule reads) whose every
//!   request also varies in fields the rule does not read: hit rate and throughput per
//!   strategy, printed as a table.
//!
//! Run: `cargo bench -p rulebox-benches --bench cache`.

use criterion::{Criterion, black_box};
use rulebox::{Bundle, CacheConfig, Engine, EngineConfig, Input, LoadOptions, ResultCache};
use rulebox_sdk::Rule as _;
use std::sync::Arc;
use std::time::Instant;

const DISTINCT: usize = 10_000;
const REQUESTS: usize = 50_000;
const ZIPF_S: f64 = 1.0;

/// A bundle directory with `amount_limit` as rule `r` under `strategy`.
fn bundle_dir(strategy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        rulebox_tests::guest_path("amount_limit"),
        dir.path().join("amount_limit.wasm"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bundle.toml"),
        format!(
            "[bundle]\nformat = 1\nname = \"bench\"\nrevision = \"1\"\n[[rule]]\nname = \"r\"\ncomponent = \"amount_limit.wasm\"\nreads = [\"order.amount\", \"order.currency\"]\nsettings = {{ max = 5000 }}\ncache = {{ strategy = \"{strategy}\" }}\n"
        ),
    )
    .unwrap();
    dir
}

fn load(engine: &Engine, dir: &std::path::Path, cache: &Arc<ResultCache>) -> Bundle {
    let options = LoadOptions {
        cache: Some(cache.clone()),
        ..Default::default()
    };
    Bundle::load(engine, dir, &options).unwrap()
}

/// xorshift64*: a deterministic stream, so every strategy sees the same requests.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Requests: the read fields follow a Zipf law over `DISTINCT` values; `request_id` and
/// `received_at` (never read by the rule) differ in every request.
fn workload() -> Vec<Input> {
    let weights: Vec<f64> = (1..=DISTINCT)
        .map(|k| 1.0 / (k as f64).powf(ZIPF_S))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(DISTINCT);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..REQUESTS)
        .map(|i| {
            let u = rng.next_f64();
            let k = cdf.partition_point(|&c| c < u).min(DISTINCT - 1);
            Input::from_value(serde_json::json!({
                "order": { "amount": (k * 7) % 9000, "currency": (if k % 2 == 0 { "EUR" } else { "USD" }), "id": format!("o-{k}") },
                "request_id": format!("req-{i}"),
                "received_at": 1_700_000_000 + i,
            }))
            .unwrap()
        })
        .collect()
}

fn benches(c: &mut Criterion, engine: &Engine) {
    let cache = Arc::new(ResultCache::new(CacheConfig::default()).unwrap());
    let dir = bundle_dir("intelligent");
    let bundle = load(engine, dir.path(), &cache);
    let rule = &bundle.rules()[0];
    let input =
        Input::from_json(r#"{"order":{"amount":1234.5,"currency":"EUR"},"request_id":"x"}"#)
            .unwrap();
    assert!(!rule.evaluate(&input, &[]).cached);
    assert!(rule.evaluate(&input, &[]).cached);
    let native_req = rulebox_sdk::Request::new()
        .with_fact("order.amount", 1234.5)
        .with_fact("order.currency", "EUR")
        .with_settings(serde_json::json!({"max": 5000}));

    let mut g = c.benchmark_group("cache");
    g.bench_function("native", |b| {
        b.iter(|| {
            amount_limit::AmountLimit::evaluate(black_box(&native_req))
                .unwrap()
                .verdict()
        })
    });
    g.bench_function("l1_hit", |b| {
        b.iter(|| rule.evaluate(black_box(&input), &[]).cached)
    });
    g.bench_function("uncached_eval", |b| {
        b.iter(|| rule.rule.evaluate(black_box(&input)).result.is_ok())
    });
    g.finish();
}

fn zipf_table(engine: &Engine) {
    let requests = workload();
    println!(
        "\nZipf workload: {REQUESTS} requests over {DISTINCT} distinct inputs (s = {ZIPF_S}), unread fields unique per request"
    );
    println!(
        "{:<12} {:>9} {:>12} {:>13} {:>10}",
        "strategy", "hit rate", "evals/s", "vs none", "L1 bytes"
    );
    let mut none_rate = 0.0;
    for strategy in ["none", "basic", "intelligent", "adaptive"] {
        let cache = Arc::new(ResultCache::new(CacheConfig::default()).unwrap());
        let dir = bundle_dir(strategy);
        let bundle = load(engine, dir.path(), &cache);
        let rule = &bundle.rules()[0];
        let start = Instant::now();
        for input in &requests {
            assert!(rule.evaluate(input, &[]).result.is_ok());
        }
        let per_sec = REQUESTS as f64 / start.elapsed().as_secs_f64();
        if strategy == "none" {
            none_rate = per_sec;
        }
        let stats = cache.stats();
        println!(
            "{:<12} {:>8.1}% {:>12.0} {:>12.2}x {:>10}",
            strategy,
            stats.hit_rate * 100.0,
            per_sec,
            per_sec / none_rate,
            stats.bytes
        );
        if let Some(decision) = stats
            .rules
            .first()
            .and_then(|r| r.adaptive_decision.clone())
        {
            println!("{:<12} adaptive decided: {decision}", "");
        }
    }
    println!("(the replaced system claimed an 85% hit rate)");
}

fn main() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &engine);
    c.final_summary();
    rulebox_benches::print_ratio_table(
        "cache",
        "uncached_eval",
        &["native", "l1_hit", "uncached_eval"],
    );
    zipf_table(&engine);
}
