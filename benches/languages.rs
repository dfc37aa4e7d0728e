//! The same rule (the example amount limit) built from Rust (lean and wasip2), C, Python and
//! JavaScript (StarlingMonkey and QuickJS): what each costs to compile, to evaluate in a fresh instance, and to answer
//! from the result cache, in one run, with ratios to the lean Rust build.
//!
//! Run: `cargo bench -p rulebox-benches --bench languages` (prints a table). Env
//! `LANGUAGES_ITERATIONS` (default 300) sets the timed evaluations per rule.

use rulebox::{Bundle, CacheConfig, Engine, EngineConfig, Input, LoadOptions, ResultCache};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let iterations: usize = std::env::var("LANGUAGES_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rules: [(&str, PathBuf); 6] = [
        (
            "Rust (lean)",
            rulebox_tests::lean_guest_path("amount_limit"),
        ),
        ("Rust (wasip2)", rulebox_tests::guest_path("amount_limit")),
        ("C", rulebox_tests::c_guest_path("amount_limit")),
        (
            "Python (componentize-py)",
            rulebox_tests::python_guest_path("amount_limit"),
        ),
        (
            "JavaScript (StarlingMonkey)",
            rulebox_tests::js_guest_path("amount_limit"),
        ),
        (
            "JavaScript (QuickJS)",
            rulebox_tests::js_guest_path("amount_limit.qjs"),
        ),
    ];
    let input = Input::from_json(r#"{"order": {"amount": 7250, "currency": "EUR"}}"#).unwrap();
    let mut rows = Vec::new();
    for (name, path) in &rules {
        let bytes = std::fs::read(path).unwrap();
        // A fresh engine without a disk cache: this compile is a real one.
        let engine = Engine::new(EngineConfig::default()).unwrap();
        let t = Instant::now();
        engine.load(&bytes).unwrap();
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rule.wasm"), &bytes).unwrap();
        std::fs::write(
            dir.path().join("bundle.toml"),
            "[bundle]\nformat = 1\nname = \"one\"\nrevision = \"1\"\ncache = { strategy = \"intelligent\" }\n\
             [[rule]]\nname = \"amount\"\ncomponent = \"rule.wasm\"\nreads = [\"order.amount\", \"order.currency\"]\n\
             settings = { max = 10000, review_above = 5000, currencies = [\"EUR\", \"USD\"] }\n",
        )
        .unwrap();
        let fresh = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
        let rule = fresh.rules()[0].rule.clone();
        let first = rule.evaluate(&input);
        assert!(first.result.is_ok(), "{name}: {:?}", first.result);
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            std::hint::black_box(rule.evaluate(&input));
            times.push(t.elapsed().as_nanos() as f64);
        }
        let cache = Arc::new(ResultCache::new(CacheConfig::default()).unwrap());
        let cached = Bundle::load(
            &engine,
            dir.path(),
            &LoadOptions {
                // The bundle holds the cache weakly: `cache` keeps it alive.
                cache: Some(cache.clone()),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        cached.evaluate_sequential(&input).unwrap();
        let mut hits = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            let r = cached.evaluate_sequential(&input).unwrap();
            hits.push(t.elapsed().as_nanos() as f64);
            assert!(
                r.rules[0].cached,
                "{name}: not served from the cache: {:?}",
                cached.describe().rules
            );
        }
        rows.push((
            *name,
            bytes.len(),
            compile_ms,
            median(times),
            first.metering.fuel,
            first.metering.memory_peak_bytes,
            median(hits),
        ));
    }
    let base = rows[0].3;
    println!(
        "\nthe amount rule, {iterations} evaluations each (median):\n\n| {:<28} | {:>9} | {:>10} | {:>12} | {:>8} | {:>10} | {:>10} | {:>9} |",
        "build", "size KiB", "compile ms", "fresh ns", "/ lean", "fuel", "memory KiB", "hit ns"
    );
    println!(
        "| {:-<28} | {:->9} | {:->10} | {:->12} | {:->8} | {:->10} | {:->10} | {:->9} |",
        "", "", "", "", "", "", "", ""
    );
    for (name, size, compile_ms, fresh, fuel, memory, hit) in rows {
        println!(
            "| {name:<28} | {:>9} | {compile_ms:>10.0} | {fresh:>12.0} | {:>8.1} | {fuel:>10} | {:>10} | {hit:>9.0} |",
            size / 1024,
            fresh / base,
            memory / 1024
        );
    }
}
