//! A 20-rule bundle of independent rules, in one run:
//! - evaluation: sequential (one thread) vs `evaluate` (async, in a task on tokio with 2
//!   workers) vs
//!   `evaluate_blocking` (the calling thread plus the engine's helpers), for tiny rules (the
//!   lean echo deciding at once in a reused instance, ~1 us), warm ones (the echo fixture
//!   reusing its instance, ~20 us each here), fresh ones (the same, a fresh instance each)
//!   and busy ones (each burns ~100k loop iterations);
//! - loading: cold (every component compiled) vs from the compiled-component disk cache
//!   (a fresh engine each time, so nothing comes from memory).
//!
//! Run: `cargo bench -p rulebox-benches --bench bundle` (prints ratio tables at the end).

use criterion::{Criterion, black_box};
use rulebox::{Bundle, Engine, EngineConfig, Input, LoadOptions};
use std::path::Path;
use std::time::Duration;

const RULES: usize = 20;

/// Twenty distinct components (the echo fixture, each with its own custom section, so each
/// has its own digest and really compiles) as independent rules.
fn write_bundle(dir: &Path, work: u64, isolation: &str) {
    write_bundle_of(
        dir,
        rulebox_tests::guest_bytes("fixture_echo"),
        work,
        isolation,
        "",
    );
}

/// [`write_bundle`] with another build of the echo and more settings.
fn write_bundle_of(dir: &Path, echo: Vec<u8>, work: u64, isolation: &str, settings: &str) {
    let mut manifest = String::from("[bundle]\nformat = 1\nname = \"wide\"\nrevision = \"1\"\n");
    for i in 0..RULES {
        let mut bytes = echo.clone();
        let name = format!("rule-{i}");
        // A custom section: id 0, size, name length, name.
        let payload_len = 1 + name.len();
        bytes.extend_from_slice(&[0, payload_len as u8, name.len() as u8]);
        bytes.extend_from_slice(name.as_bytes());
        std::fs::write(dir.join(format!("r{i}.wasm")), &bytes).unwrap();
        manifest.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncomponent = \"r{i}.wasm\"\nreads = [\"order.amount\"]\nisolation = \"{isolation}\"\nsettings = {{ work = {work}, tag = {i}{settings} }}\n"
        ));
    }
    std::fs::write(dir.join("bundle.toml"), manifest).unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let input = Input::from_json(r#"{"order":{"amount":10}}"#).unwrap();
    let engine = Engine::new(EngineConfig::default()).unwrap();

    let mut g = c.benchmark_group("bundle_eval");
    let wasip2 = rulebox_tests::guest_bytes("fixture_echo");
    let lean = std::fs::read(rulebox_tests::lean_guest_path("fixture_echo")).unwrap();
    for (label, echo, work, isolation, settings) in [
        // The lean echo deciding at once, warm: ~1 us rules.
        ("tiny", &lean, 0u64, "reuse", ", bare = true"),
        ("warm", &wasip2, 0, "reuse", ""),
        ("fresh", &wasip2, 0, "fresh", ""),
        ("busy", &wasip2, 100_000, "fresh", ""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_bundle_of(dir.path(), echo.clone(), work, isolation, settings);
        let bundle = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(bundle.layers().len(), 1, "all rules independent");
        assert!(
            bundle
                .evaluate_sequential(&input)
                .unwrap()
                .errors()
                .is_empty()
        );
        g.bench_function(format!("{label}_sequential"), |b| {
            b.iter(|| {
                bundle
                    .evaluate_sequential(black_box(&input))
                    .unwrap()
                    .verdict
            })
        });
        // Inside one task, as a service calls it: `block_on` per call would add its own
        // couple of microseconds.
        g.bench_function(format!("{label}_async"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        black_box(bundle.evaluate(black_box(&input)).await.unwrap().verdict);
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function(format!("{label}_blocking"), |b| {
            b.iter(|| bundle.evaluate_blocking(black_box(&input)).unwrap().verdict)
        });
    }
    g.finish();

    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), 0, "fresh");
    let cache = tempfile::tempdir().unwrap();
    let cached_engine = || {
        Engine::new(EngineConfig {
            cache_dir: Some(cache.path().to_owned()),
            ..EngineConfig::default()
        })
        .unwrap()
    };
    Bundle::load(&cached_engine(), dir.path(), &LoadOptions::default()).unwrap(); // warm the disk cache
    let mut g = c.benchmark_group("bundle_load");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("cold_compile", |b| {
        b.iter(|| {
            let engine = Engine::new(EngineConfig::default()).unwrap();
            let bundle = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
            assert_eq!(engine.artifact_stats().compiled, RULES as u64);
            bundle.rules().len()
        })
    });
    g.bench_function("from_disk_cache", |b| {
        b.iter(|| {
            let engine = cached_engine();
            let bundle = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
            assert_eq!(engine.artifact_stats().disk_hits, RULES as u64);
            bundle.rules().len()
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    for label in ["tiny", "warm", "fresh", "busy"] {
        let names = ["sequential", "async", "blocking"].map(|how| format!("{label}_{how}"));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        rulebox_benches::print_ratio_table("bundle_eval", names[0], &names);
    }
    rulebox_benches::print_ratio_table(
        "bundle_load",
        "cold_compile",
        &["cold_compile", "from_disk_cache"],
    );
}
