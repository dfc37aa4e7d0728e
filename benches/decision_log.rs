//! The decision log's storage: a generated week of payments decisions written through the
//! log's writer (async mode), then retention applied as the server applies it. Prints the
//! write rate, the file size with a week of detail, the size once only the per-minute
//! rollups are left, and what a 90-day horizon costs with 7 days of detail + 90 days of
//! rollups against 90 days of detail.
//!
//! Run: `cargo bench -p rulebox-benches --bench decision_log`.
//! `RULEBOX_LOG_BENCH_PER_MIN` sets the traffic (decisions per minute, default 60).

use rulebox_server::DecisionLogConfig;
use rulebox_server::decisions::{DecisionLog, LogError, RETAIN_BATCH, Retention, compact, now_ms};
use std::time::{Duration, Instant};

const DAY_MS: u64 = 24 * 3600 * 1000;

fn file_bytes(path: &std::path::Path) -> u64 {
    // The WAL is checkpointed by `compact`; count it anyway.
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

fn main() {
    let per_min: u64 = std::env::var("RULEBOX_LOG_BENCH_PER_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let rt = rulebox_tests::rt();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let state = rt.block_on(async {
        rulebox_server::AppState::new(rulebox_server::ServerConfig::default()).unwrap()
    });
    rt.block_on(
        state
            .registry()
            .load(&rulebox_tests::example_bundle("payments")),
    )
    .unwrap();
    let bundle = state.registry().get("payments").unwrap();
    // A spread of real results: allow, review and deny, different rules firing.
    let results: Vec<_> = [20, 300, 5_500, 9_000, 12_000, 70, 4_000, 15_000]
        .iter()
        .enumerate()
        .map(|(i, amount)| {
            let country = ["DE", "FR", "GB", "IR"][i % 4];
            let input = rulebox::Input::from_value(serde_json::json!({
                "order": {"amount": amount, "currency": "EUR"},
                "customer": {"country": country, "age_days": 30 * i, "verified": i % 3 != 0},
            }))
            .unwrap();
            let result = rt.block_on(bundle.evaluate(&input)).unwrap();
            (result, input)
        })
        .collect();
    // Nothing expires while the week is written: retention is measured separately below.
    let log = DecisionLog::open(&DecisionLogConfig {
        path: Some(path.clone()),
        retention_days: 3650,
        rollup_days: 3650,
        ..DecisionLogConfig::default()
    })
    .unwrap()
    .unwrap();

    // A week ending now, `per_min` decisions a minute; each input carries its own ids, as
    // real traffic does.
    let total = per_min * 7 * 24 * 60;
    let start = now_ms() - 7 * DAY_MS;
    let step = 60_000 / per_min.max(1);
    let began = Instant::now();
    for i in 0..total {
        let (result, input) = &results[(i as usize * 7) % results.len()];
        let mut value = input.value().clone();
        value["order"]["id"] = format!("ord-{i:010}").into();
        value["customer"]["id"] = format!("cus-{:08}", i % 50_000).into();
        let id = format!("{:012x}-bench-{i:08x}", start + i * step);
        loop {
            match log.enqueue(&id, start + i * step, result, &value, Some(&id), "bench") {
                Ok(_) => break,
                Err(LogError::Full(_)) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => panic!("{e}"),
            }
        }
    }
    while log.stats().written < total {
        std::thread::sleep(Duration::from_millis(20));
    }
    let write_s = began.elapsed().as_secs_f64();
    let stats = log.stats();
    assert_eq!((stats.written, stats.failed), (total, 0), "{stats:?}");
    drop(log);
    std::thread::sleep(Duration::from_millis(200)); // the writer's last commit
    // Checkpoint without deleting anything (nothing is older than 3650 days).
    compact(
        &path,
        Retention {
            detail_ms: 3650 * DAY_MS,
            rollup_ms: 3650 * DAY_MS,
        },
        now_ms(),
    )
    .unwrap();
    let week_detail = file_bytes(&path);
    let (_, rollup_rows) = rulebox_server::decisions::LogReader::open(&path)
        .unwrap()
        .rows()
        .unwrap();

    // Retention with no detail kept: what is left is the rollups of the week.
    let began = Instant::now();
    let (deleted, _) = compact(
        &path,
        Retention {
            detail_ms: 0,
            rollup_ms: 90 * DAY_MS,
        },
        now_ms() + 1,
    )
    .unwrap();
    let compact_s = began.elapsed().as_secs_f64();
    let week_rollups = file_bytes(&path);
    assert_eq!(deleted, total);

    let detail_per_day = (week_detail - week_rollups) as f64 / 7.0;
    let rollup_per_day = week_rollups as f64 / 7.0;
    let full = detail_per_day * 90.0 + rollup_per_day * 90.0;
    let tiered = detail_per_day * 7.0 + rollup_per_day * 90.0;
    println!("decision log: a week at {per_min}/min = {total} decisions (payments, 3 rules)");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| written through the writer (async, batch 512) | {:.0} decisions/s |",
        total as f64 / write_s
    );
    println!(
        "| file with a week of detail + rollups | {:.1} MB ({:.0} B/decision) |",
        week_detail as f64 / 1e6,
        week_detail as f64 / total as f64
    );
    println!("| rollup rows for the week | {rollup_rows} |");
    println!(
        "| file with the week's rollups only | {:.2} MB ({:.1}% of the detail) |",
        week_rollups as f64 / 1e6,
        100.0 * week_rollups as f64 / week_detail as f64
    );
    println!(
        "| retention: detail deleted | {:.0} rows/s ({:.1} ms per {}-row batch) |",
        total as f64 / compact_s,
        1000.0 * compact_s / (total as f64 / RETAIN_BATCH as f64).ceil(),
        RETAIN_BATCH
    );
    println!(
        "| 90 days kept: all detail vs 7 days detail + 90 days rollups | {:.0} MB vs {:.0} MB ({:.0}% less) |",
        full / 1e6,
        tiered / 1e6,
        100.0 * (1.0 - tiered / full)
    );
}
