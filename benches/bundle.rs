//! A 20-rule bundle of independent rules, in one run:
//! - evaluation: sequential (one thread) vs `evaluate` (async, inside `block_on` and in a
//!   task on one of tokio's 2 workers, the latter against sequential in such a task) vs
//!   `evaluate_blocking` (the calling thread plus the engine's helpers), for
//!   tiny rules (the lean echo deciding at once in a reused instance, ~1 us), warm ones (the
//!   echo fixture reusing its instance, ~10 us), warm ones with ~10k loop iterations on top
//!   (~20 us), fresh ones (the echo in a fresh instance each time) and busy ones (fresh, ~100k
//!   iterations): interleaved rounds, medians, a table of speed-ups (`BUNDLE_ROUNDS`, default
//!   21; `BUNDLE_ONLY=tiny` keeps one size, so that no other size's rows run in between;
//!   `BUNDLE_SKIP_EVAL=1` skips the table);
//! - loading (criterion): cold (every component compiled) vs from the compiled-component disk
//!   cache (a fresh engine each time, so nothing comes from memory).
//!
//! Run: `cargo bench -p rulebox-benches --bench bundle`.

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

/// `evaluate_sequential` vs `evaluate` (async) vs `evaluate_blocking` on twenty independent
/// rules, for rules of several sizes: interleaved rounds (every row once per round, in a
/// shuffled order), medians, speed-ups within each size.
fn eval_table(engine: &Engine) {
    let rounds: usize = std::env::var("BUNDLE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let input = Input::from_json(r#"{"order":{"amount":10}}"#).unwrap();
    let wasip2 = rulebox_tests::guest_bytes("fixture_echo");
    let lean = std::fs::read(rulebox_tests::lean_guest_path("fixture_echo")).unwrap();
    let mut dirs = Vec::new();
    let mut cases = Vec::new();
    for (label, echo, work, isolation, settings) in [
        // The lean echo deciding at once, warm: ~1 us rules.
        ("tiny", &lean, 0u64, "reuse", ", bare = true"),
        ("warm", &wasip2, 0, "reuse", ""),
        // ~10k loop iterations on top: ~20 us rules.
        ("warm+work", &wasip2, 10_000, "reuse", ""),
        ("fresh", &wasip2, 0, "fresh", ""),
        ("busy", &wasip2, 100_000, "fresh", ""),
    ] {
        if std::env::var("BUNDLE_ONLY").is_ok_and(|only| only != label) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        write_bundle_of(dir.path(), echo.clone(), work, isolation, settings);
        let bundle =
            std::sync::Arc::new(Bundle::load(engine, dir.path(), &LoadOptions::default()).unwrap());
        assert_eq!(bundle.layers().len(), 1, "all rules independent");
        let r = bundle.evaluate_sequential(&input).unwrap();
        assert!(r.errors().is_empty(), "{:?}", r.errors());
        dirs.push(dir);
        cases.push((label, bundle));
    }
    // Per case: its rules' mean CPU time, and a batch size that takes ~10 ms in sequence.
    let mut sizes = Vec::new();
    for (_, bundle) in &cases {
        for _ in 0..200 {
            black_box(bundle.evaluate_sequential(&input).unwrap());
        }
        let start = std::time::Instant::now();
        let mut cpu = 0;
        for _ in 0..100 {
            let r = bundle.evaluate_sequential(&input).unwrap();
            cpu += r.rules.iter().map(|e| e.metering.cpu_us).sum::<u64>();
        }
        let one = start.elapsed() / 100;
        let batch = (Duration::from_millis(10).as_nanos() / one.as_nanos().max(1)).max(5) as usize;
        sizes.push((cpu as f64 / 100.0 / RULES as f64, batch));
    }
    // The A/A row runs sequentially again: its "speed-up" shows the table's own noise. The
    // worker rows run in a task on one of the runtime's workers, as a service calls them,
    // and `async (worker)` is compared with `sequential (worker)`: a batch run there after
    // one on this thread costs more whatever it does, which says nothing of `evaluate`
    // (measured: twenty ~20 us rules through `evaluate` alone in a task or alone on this
    // thread, 229 and 230 us; interleaved with this thread's rows, sequential code lost
    // 3-5% in a task and `evaluate` 7-17%).
    const HOW: [&str; 6] = [
        "sequential",
        "async",
        "blocking",
        "sequential A/A",
        "sequential (worker)",
        "async (worker)",
    ];
    // The row each row's speed-up is taken against.
    const BASE: [usize; 6] = [0, 0, 0, 0, 0, 4];
    let run = |case: usize, how: usize| {
        let (_, bundle) = &cases[case];
        let batch = sizes[case].1;
        let start = std::time::Instant::now();
        match how {
            0 => (0..batch).for_each(|_| drop(black_box(bundle.evaluate_sequential(&input)))),
            // Inside one task, `block_on`'s on this thread: `block_on` per call would add its
            // own couple of microseconds.
            1 => rt.block_on(async {
                for _ in 0..batch {
                    drop(black_box(bundle.evaluate(&input).await));
                }
            }),
            2 => (0..batch).for_each(|_| drop(black_box(bundle.evaluate_blocking(&input)))),
            3 => (0..batch).for_each(|_| drop(black_box(bundle.evaluate_sequential(&input)))),
            // In a task on one of the runtime's workers, as a service calls it.
            4 => {
                let (bundle, input) = (bundle.clone(), input.clone());
                rt.block_on(rt.spawn(async move {
                    for _ in 0..batch {
                        drop(black_box(bundle.evaluate_sequential(&input)));
                    }
                }))
                .unwrap()
            }
            _ => {
                let (bundle, input) = (bundle.clone(), input.clone());
                rt.block_on(rt.spawn(async move {
                    for _ in 0..batch {
                        drop(black_box(bundle.evaluate(&input).await));
                    }
                }))
                .unwrap()
            }
        }
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    let rows: Vec<(usize, usize)> = (0..cases.len())
        .flat_map(|c| (0..HOW.len()).map(move |h| (c, h)))
        .collect();
    let mut ns = vec![Vec::new(); rows.len()];
    // One untimed round warms every path (instances, helpers, caches).
    for &(c, h) in &rows {
        run(c, h);
    }
    let mut shuffled = rulebox_benches::Rounds::new(rows.len());
    for _ in 0..rounds {
        for &k in shuffled.next_order() {
            ns[k].push(run(rows[k].0, rows[k].1));
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n{RULES} independent rules, us per bundle evaluation (median of {rounds} interleaved rounds) \
         and speed-up over sequential on the same thread (median of the rounds' ratios):\n"
    );
    print!(
        "| {:<10} | {:>12} | {:>10} |",
        "rules", "CPU per rule", HOW[0]
    );
    for how in &HOW[1..] {
        print!(" {how:>16} |");
    }
    print!("\n| {:-<10} | {:->12} | {:->10} |", "", "", "");
    for _ in &HOW[1..] {
        print!(" {:->16} |", "");
    }
    println!();
    for (c, (label, _)) in cases.iter().enumerate() {
        let at = |h: usize| median(&ns[c * HOW.len() + h]) / 1000.0;
        // The speed-up is the median of each round's own ratio: the machine's drift
        // between rounds cancels out.
        let speedup = |h: usize| {
            let seq = &ns[c * HOW.len() + BASE[h]];
            let ratios: Vec<f64> = ns[c * HOW.len() + h]
                .iter()
                .zip(seq)
                .map(|(x, s)| s / x)
                .collect();
            median(&ratios)
        };
        print!("| {label:<10} | {:>9.1} us | {:>10.1} |", sizes[c].0, at(0));
        for h in 1..HOW.len() {
            print!(" {:>8.1} ({:.2}x) |", at(h), speedup(h));
        }
        println!();
    }
}

fn benches(c: &mut Criterion) {
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
    // Under `cargo bench`, the harness passes --bench; under `cargo test --benches`, skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::var_os("BUNDLE_SKIP_EVAL").is_none() {
        eval_table(&Engine::new(EngineConfig::default()).unwrap());
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    rulebox_benches::print_ratio_table(
        "bundle_load",
        "cold_compile",
        &["cold_compile", "from_disk_cache"],
    );
}
