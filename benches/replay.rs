//! Replay throughput: the payments example's decisions replayed on a candidate (the amount
//! limit lowered), against evaluating the same inputs live in the same run.
//!
//! Run: `cargo bench -p rulebox-benches --bench replay` (prints a table). Env
//! `REPLAY_DECISIONS` (default 2000) sets the sample.

use rulebox::replay::{Recorded, Replay, ReplayOptions};
use rulebox::{Bundle, Input, LoadOptions};
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("REPLAY_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let engine = rulebox_tests::engine();
    let live = Bundle::load(
        engine,
        &rulebox_tests::example_bundle("payments"),
        &LoadOptions::default(),
    )
    .unwrap();
    let orders = rulebox_tests::payment_orders(n);
    let start = Instant::now();
    let recorded: Vec<Recorded> = orders
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let input = Input::from_value(o.clone()).unwrap();
            Recorded::from_result(
                format!("d{i}"),
                o.clone(),
                &live.evaluate_sequential(&input).unwrap(),
            )
        })
        .collect();
    let live_s = start.elapsed().as_secs_f64();
    let dir = rulebox_tests::payments_variant(&[("max = 10000", "max = 8000")]);
    let candidate = Bundle::load(engine, dir.path(), &LoadOptions::default()).unwrap();
    let start = Instant::now();
    let mut replay = Replay::new(&candidate, ReplayOptions::default());
    for rec in &recorded {
        replay.add(rec);
    }
    let report = replay.finish();
    let replay_s = start.elapsed().as_secs_f64();
    // Split across the cores, as `rulebox replay --jobs` does: each thread its own replay,
    // the reports merged.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    let parts: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (candidate, recorded) = (&candidate, &recorded);
                scope.spawn(move || {
                    let mut replay = Replay::new(candidate, ReplayOptions::default());
                    for rec in recorded.iter().skip(t).step_by(threads) {
                        replay.add(rec);
                    }
                    replay.finish()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut merged = rulebox::replay::ReplayReport::default();
    for part in parts {
        merged.merge(part, &ReplayOptions::default());
    }
    let parallel_s = start.elapsed().as_secs_f64();
    assert_eq!(
        (merged.replayed, merged.changed, &merged.verdicts),
        (report.replayed, report.changed, &report.verdicts),
        "the split replay must count what the single one did"
    );
    println!(
        "\npayments, {n} decisions, fresh instances, no result cache (replay never caches):\n"
    );
    println!("| path | decisions/s | us per decision | / live |");
    println!("| --- | --- | --- | --- |");
    for (name, s) in [
        ("live evaluate_sequential", live_s),
        ("replay (candidate)", replay_s),
        ("replay split over the cores", parallel_s),
    ] {
        println!(
            "| {name} | {:.0} | {:.1} | {:.2} |",
            n as f64 / s,
            s * 1e6 / n as f64,
            s / live_s
        );
    }
    println!(
        "\n{} replayed, {} changed; split over {threads} threads",
        report.replayed, report.changed
    );
}
