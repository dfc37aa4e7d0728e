//! `rulebox replay`: what a candidate bundle would have decided on the decisions a server
//! logged (its `decision_log.path`), before it serves anything.

use super::{Global, LoadArgs, print_json, runtime};
use anyhow::Result;
use rulebox::Bundle;
use rulebox::replay::{Recorded, Replay, ReplayOptions, ReplayReport};
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
    /// Threads evaluating the candidate (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
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
    let options = ReplayOptions {
        max_changes: args.show.max(if args.json { 1000 } else { 0 }),
        ..ReplayOptions::default()
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let progress = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (report, skipped) = replay_on(
        &candidate, &reader, &filter, args.limit, &options, jobs, progress,
    )?;
    if progress {
        eprintln!("\r\x1b[K");
    }
    let elapsed = started.elapsed();
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

/// Replays the decisions `filter` selects (at most `limit`) on `jobs` threads, the log read
/// on this one: the merged report, its changed decisions newest first as the log lists them,
/// and the rows that could not be read as decisions.
fn replay_on(
    candidate: &Bundle,
    reader: &LogReader,
    filter: &Filter,
    limit: usize,
    options: &ReplayOptions,
    jobs: usize,
    progress: bool,
) -> Result<(ReplayReport, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (done, changed) = (AtomicU64::new(0), AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Recorded>(256);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut replay = Replay::new(candidate, options.clone());
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(rec) = next else { break };
                        let before = replay.report().changed;
                        replay.add(&rec);
                        done.fetch_add(1, Ordering::Relaxed);
                        changed.fetch_add(replay.report().changed - before, Ordering::Relaxed);
                    }
                    replay.finish()
                })
            })
            .collect();
        let mut sent = 0u64;
        let read = for_each_recorded(reader, filter, limit, |rec| {
            // A closed channel means every worker is gone: nothing is left to feed.
            if tx.send(rec.clone()).is_ok() {
                sent += 1;
            }
            if progress && sent.is_multiple_of(100) {
                eprint!(
                    "\rreplayed {}/{limit} ({} changed)\x1b[K",
                    done.load(Ordering::Relaxed),
                    changed.load(Ordering::Relaxed)
                );
            }
        });
        drop(tx);
        let all = ReplayOptions {
            max_changes: usize::MAX,
            max_not_replayable: usize::MAX,
            ..options.clone()
        };
        let mut report: Option<ReplayReport> = None;
        for worker in workers {
            let part = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a replay thread panicked"))?;
            match &mut report {
                None => report = Some(part),
                Some(r) => r.merge(part, &all),
            }
        }
        let mut report = report.unwrap_or_default();
        // Decision ids start with their time: newest first, as the log is read.
        report.changes.sort_by(|a, b| b.id.cmp(&a.id));
        report.changes.truncate(options.max_changes);
        report.not_replayable_ids.sort_by(|a, b| b.0.cmp(&a.0));
        report
            .not_replayable_ids
            .truncate(options.max_not_replayable);
        let (_, skipped) = read.map_err(anyhow::Error::msg)?;
        Ok((report, skipped))
    })
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
