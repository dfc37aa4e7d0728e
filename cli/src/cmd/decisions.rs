//! `rulebox decisions`: the server's queries (`GET /v1/decisions`, `/v1/decisions/stats`)
//! on a decision-log file, and retention run by hand.

use super::print_json;
use anyhow::{Result, anyhow};
use rulebox_server::decisions::{
    Filter, GroupBy, LogReader, Retention, StatsQuery, compact, now_ms, parse_interval, parse_time,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Lists decisions, newest first.
    List {
        #[command(flatten)]
        log: LogArg,
        /// Only this bundle.
        #[arg(long)]
        bundle: Option<String>,
        /// Only this final verdict.
        #[arg(long)]
        verdict: Option<String>,
        /// Only decisions in which this rule took part.
        #[arg(long)]
        rule: Option<String>,
        /// Only decisions in which a rule (--rule, if given) failed with this error kind.
        #[arg(long)]
        error_kind: Option<String>,
        #[command(flatten)]
        range: Range,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints one decision as JSON.
    Show {
        #[command(flatten)]
        log: LogArg,
        /// The decision id.
        id: String,
    },
    /// Prints counts, time and fuel over time, from the per-minute rollups.
    Stats {
        #[command(flatten)]
        log: LogArg,
        /// Dimensions: bundle, revision, rule, verdict, error_kind (comma-separated).
        #[arg(long, default_value = "")]
        group_by: String,
        /// The width of each point (a whole number of minutes).
        #[arg(long, default_value = "5m")]
        interval: String,
        /// Only this bundle.
        #[arg(long)]
        bundle: Option<String>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        range: Range,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deletes detail older than --retention-days (it is already rolled up) and rollups
    /// older than --rollup-days, as the server does as it runs, and shrinks the file.
    Compact {
        #[command(flatten)]
        log: LogArg,
        #[arg(long, default_value_t = 7)]
        retention_days: u32,
        #[arg(long, default_value_t = 90)]
        rollup_days: u32,
    },
}

#[derive(clap::Args)]
pub struct LogArg {
    /// The decision-log file (the server's `decision_log.path`).
    #[arg(long = "log-file", value_name = "FILE")]
    file: PathBuf,
}

/// A time range (`--since`, `--until`), shared with `rulebox replay`.
#[derive(clap::Args)]
pub struct Range {
    /// From: ms since the epoch, RFC 3339, or a duration ago (15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Until (same forms).
    #[arg(long)]
    until: Option<String>,
}

impl Range {
    /// The range in ms since the epoch.
    pub fn resolve(&self) -> Result<(Option<u64>, Option<u64>)> {
        let now = now_ms();
        let at = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| anyhow!("--{name}: {e}"))
        };
        Ok((at("since", &self.since)?, at("until", &self.until)?))
    }
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::List {
            log,
            bundle,
            verdict,
            rule,
            error_kind,
            range,
            limit,
            json,
        } => {
            let (since_ms, until_ms) = range.resolve()?;
            let reader = LogReader::open(&log.file).map_err(anyhow::Error::msg)?;
            let (rows, next) = reader
                .query(&Filter {
                    bundle,
                    verdict,
                    rule,
                    error_kind,
                    since_ms,
                    until_ms,
                    cursor: None,
                    limit: limit.clamp(1, 100_000),
                    scope: None,
                })
                .map_err(anyhow::Error::msg)?;
            if json {
                print_json(&serde_json::json!({"decisions": rows, "next_cursor": next}))?;
            } else {
                println!(
                    "{:<20}  {:<32}  {:<16}  {:<7}  {:>9}  request_id",
                    "time", "decision_id", "bundle", "verdict", "wall_us"
                );
                for d in &rows {
                    println!(
                        "{:<20}  {:<32}  {:<16}  {:<7}  {:>9}  {}",
                        time_of(&d["at_ms"]),
                        text(&d["decision_id"]),
                        text(&d["bundle"]),
                        text(&d["verdict"]),
                        d["wall_us"],
                        text(&d["request_id"]),
                    );
                }
                if next.is_some() {
                    println!("(more: raise --limit or narrow --since/--until)");
                }
            }
        }
        Command::Show { log, id } => {
            let reader = LogReader::open(&log.file).map_err(anyhow::Error::msg)?;
            match reader.get(&id).map_err(anyhow::Error::msg)? {
                Some(d) => print_json(&d)?,
                None => {
                    eprintln!("rulebox: no decision {id} in {}", log.file.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Stats {
            log,
            group_by,
            interval,
            bundle,
            rule,
            range,
            json,
        } => {
            let (since_ms, until_ms) = range.resolve()?;
            let now = now_ms();
            let query = StatsQuery {
                since_ms: since_ms.unwrap_or(now - 3_600_000),
                until_ms: until_ms.unwrap_or(now + 1),
                interval_ms: parse_interval(&interval).map_err(|e| anyhow!("--interval: {e}"))?,
                group_by: GroupBy::parse_list(&group_by).map_err(|e| anyhow!("--{e}"))?,
                bundle,
                rule,
                scope: None,
            };
            query.validate().map_err(|e| anyhow!("--{e}"))?;
            let reader = LogReader::open(&log.file).map_err(anyhow::Error::msg)?;
            let stats = reader.stats(&query).map_err(anyhow::Error::msg)?;
            if json {
                print_json(&stats)?;
            } else {
                print_stats(&query, &stats);
            }
        }
        Command::Compact {
            log,
            retention_days,
            rollup_days,
        } => {
            if rollup_days < retention_days {
                return Err(anyhow!("--rollup-days must be at least --retention-days"));
            }
            if !log.file.is_file() {
                return Err(anyhow!("{}: no such decision-log file", log.file.display()));
            }
            let before = std::fs::metadata(&log.file)?.len();
            let config = rulebox_server::DecisionLogConfig {
                retention_days,
                rollup_days,
                ..Default::default()
            };
            let (detail, rollups) =
                compact(&log.file, Retention::of(&config), now_ms()).map_err(anyhow::Error::msg)?;
            let after = std::fs::metadata(&log.file)?.len();
            print_json(&serde_json::json!({
                "deleted": {"detail": detail, "rollups": rollups},
                "bytes": {"before": before, "after": after},
            }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn time_of(ms: &Value) -> String {
    let ms = ms.as_u64().unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_stats(query: &StatsQuery, stats: &Value) {
    let groups: Vec<&str> = query.group_by.iter().map(|g| g.as_str()).collect();
    let mut header = format!("{:<20}", "start");
    for g in &groups {
        header.push_str(&format!("  {g:<16}"));
    }
    header.push_str(&format!(
        "  {:>8}  {:>8}  {:>9}  {:>9}  {:>9}  {:>12}",
        "count", "cached", "p50_us", "p99_us", "max_us", "fuel_mean"
    ));
    println!("{header}");
    for p in stats["points"].as_array().into_iter().flatten() {
        let mut line = format!("{:<20}", time_of(&p["start_ms"]));
        for g in &groups {
            let v = match text(&p[*g]) {
                "" => "-",
                v => v,
            };
            line.push_str(&format!("  {v:<16}"));
        }
        line.push_str(&format!(
            "  {:>8}  {:>8}  {:>9}  {:>9}  {:>9}  {:>12}",
            p["count"],
            p["cached"],
            p["wall_us"]["p50"],
            p["wall_us"]["p99"],
            p["wall_us"]["max"],
            p["fuel"]["mean"]
        ));
        println!("{line}");
    }
}
