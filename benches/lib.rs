//! Helpers shared by the benches: a table of criterion results with ratios to a baseline.

use std::path::Path;

/// The median estimate (ns) of a criterion benchmark, from `target/criterion`.
pub fn median_ns(group: &str, name: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .display()
            .to_string()
    });
    let path = Path::new(&dir)
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Prints `rows` (benchmark names in `group`) with their medians and ratio to `baseline`.
pub fn print_ratio_table(group: &str, baseline: &str, rows: &[&str]) {
    let Some(base) = median_ns(group, baseline) else {
        println!("(no criterion estimates for {group}/{baseline}; was it filtered out?)");
        return;
    };
    println!("\n{group}: median per iteration, ratio to {baseline}");
    println!("{:<32} {:>14} {:>10}", "benchmark", "median", "ratio");
    for row in rows {
        if let Some(ns) = median_ns(group, row) {
            println!("{:<32} {:>11.0} ns {:>9.2}x", row, ns, ns / base);
        }
    }
}
