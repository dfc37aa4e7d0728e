//! `rulebox replay`: what a candidate bundle would have decided on the decisions a server
//! logged (its `decision_log.path`), before it serves anything.

use super::{Global, LoadArgs, print_json, runtime};
use anyhow::Result;
use rulebox::Bundle;
use rulebox::replay::{Replay, ReplayOptions, ReplayReport};
use rulebox_server::decisions::{Filter, LogReader, for_each_recorded};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The decision-log file (the server's `decision_log.path`). `--log` is the global
    /// log-filter flag, hence `--log-file`, as in `rulebox decisions`.
    #[arg(long = "log-file", value_name = "FILE")]
    log_file: PathBuf,
    /// The candidate bundle: a directory or `.tar.gz`.
    #[arg(long)]
    candidate: PathBuf,
    /// Replay the decisions of this bundle (default: the candidate's name).
    #[arg(long)]
    bundle: Option<String>,
    /// Only decisions with this final verdict.
    #[arg(long)]
    verdict: Option<String>,
    #[command(flatten)]
    range: super::decisions::Range,
    /// The most recent N decisions (the sample).
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// Changed decisions listed in full (with inputs).
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    load: LoadArgs,
}

pub fn run(global: &Global, args: Args) -> Result<ExitCode> {
    let (since_ms, until_ms) = args.range.resolve()?;
    let reader = LogReader::open(&args.log_file).map_err(anyhow::Error::msg)?;
    let engine = global.engine()?;
    // The candidate passes the same gate as a push: it loads, and its golden cases pass.
    let candidate = match Bundle::load(&engine, &args.candidate, &args.load.options()?) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "rulebox: candidate {} not loaded ({:?}): {e}",
                args.candidate.display(),
                e.step()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let tests = runtime()?.block_on(candidate.run_tests());
    if tests.failed() > 0 {
        for c in tests.cases.iter().filter(|c| !c.passed) {
            eprintln!(
                "rulebox: golden case failed: {} / {}: {}",
                c.target,
                c.name,
                c.problem.as_deref().unwrap_or("")
            );
        }
        eprintln!(
            "rulebox: candidate {} refused: {} of its golden cases failed; nothing replayed",
            args.candidate.display(),
            tests.failed()
        );
        return Ok(ExitCode::from(1));
    }
    let filter = Filter {
        bundle: Some(args.bundle.unwrap_or_else(|| candidate.name().to_owned())),
        verdict: args.verdict,
        since_ms,
        until_ms,
        ..Filter::default()
    };
    let mut replay = Replay::new(
        &candidate,
        ReplayOptions {
            max_changes: args.show.max(if args.json { 1000 } else { 0 }),
            ..ReplayOptions::default()
        },
    );
    let progress = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (_, skipped) = for_each_recorded(&reader, &filter, args.limit, |rec| {
        replay.add(rec);
        let r = replay.report();
        let done = r.replayed + r.not_replayable + r.host_errors;
        if progress && done % 100 == 0 {
            eprint!(
                "\rreplayed {done}/{} ({} changed)\x1b[K",
                args.limit, r.changed
            );
        }
    })
    .map_err(anyhow::Error::msg)?;
    if progress {
        eprintln!("\r\x1b[K");
    }
    let elapsed = started.elapsed();
    let report = replay.finish();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["unreadable"] = skipped.into();
        v["seconds"] = elapsed.as_secs_f64().into();
        print_json(&v)?;
    } else {
        print_report(&report, args.show, skipped, elapsed);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &ReplayReport, show: usize, skipped: u64, elapsed: std::time::Duration) {
    let rate = r.replayed as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "candidate {} {}: {} replayed, {} changed, {} not replayable, {} host errors ({:.0} decisions/s)",
        r.bundle, r.revision, r.replayed, r.changed, r.not_replayable, r.host_errors, rate
    );
    if skipped > 0 {
        println!("{skipped} logged rows could not be read as decisions and were skipped");
    }
    println!();
    println!("final verdict (recorded -> candidate)");
    print_matrix(&r.verdicts);
    for (rule, rr) in &r.rules {
        println!();
        let c = &rr.cost;
        println!(
            "rule {rule}: fuel {:.0} -> {:.0}, wall {:.0} -> {:.0} us (recorded runs {}, candidate {})",
            c.recorded_fuel,
            c.candidate_fuel,
            c.recorded_wall_us,
            c.candidate_wall_us,
            c.recorded_runs,
            c.candidate_runs
        );
        print_matrix(&rr.transitions);
    }
    if !r.changes.is_empty() {
        println!();
        println!("changed decisions (first {show})");
        for c in r.changes.iter().take(show) {
            let rules: Vec<String> = c
                .rules
                .iter()
                .map(|(rule, from, to)| format!("{rule} {from}->{to}"))
                .collect();
            println!(
                "{:<32}  {:>7} -> {:<7}  {}  {}",
                c.id,
                c.from,
                c.to,
                rules.join(", "),
                c.input
            );
        }
    }
    for (id, why) in r.not_replayable_ids.iter().take(show) {
        println!("not replayable {id}: {why}");
    }
}

fn print_matrix(t: &rulebox::replay::Transitions) {
    let mut to: Vec<&String> = t.0.values().flat_map(|m| m.keys()).collect();
    to.sort();
    to.dedup();
    print!("  {:<9}", "");
    for col in &to {
        print!("{col:>9}");
    }
    println!();
    for (from, row) in &t.0 {
        print!("  {from:<9}");
        for col in &to {
            let n = row.get(*col).copied().unwrap_or(0);
            if n > 0 && *col != from {
                print!("{:>9}", format!("*{n}"));
            } else {
                print!("{n:>9}");
            }
        }
        println!();
    }
}
