//! Per-minute rollups: how the writer adds to them, and how `GET /v1/decisions/stats`
//! reads them back as series (counts, time and fuel sums and maxima, p50/p99 from the
//! latency histogram).

use super::{Agg, Key};
use rusqlite::{Connection, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// The upper bounds, in microseconds, of the latency histogram's first 15 buckets; the
/// 16th holds the rest. Fine at the low end, where cached and cheap rules answer.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// Histogram buckets per rollup row.
pub(super) const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The bucket a wall time falls in.
pub(super) fn bucket(wall_us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&b| b < wall_us)
}

fn hist_columns() -> Vec<String> {
    (0..BUCKETS).map(|i| format!("h{i}")).collect()
}

/// Adds the batch's totals to the rollup rows (inserting the missing ones).
pub(super) fn upsert(conn: &Connection, rollups: HashMap<Key<'_>, Agg>) -> rusqlite::Result<()> {
    let h = hist_columns();
    let sql = format!(
        "INSERT INTO rollups (minute, bundle, revision, rule, verdict, error_kind, count, cached, wall_us_sum, wall_us_max, fuel_sum, fuel_max, {}) VALUES ({}) \
         ON CONFLICT (minute, bundle, revision, rule, verdict, error_kind) DO UPDATE SET \
         count = count + excluded.count, cached = cached + excluded.cached, \
         wall_us_sum = wall_us_sum + excluded.wall_us_sum, wall_us_max = max(wall_us_max, excluded.wall_us_max), \
         fuel_sum = fuel_sum + excluded.fuel_sum, fuel_max = max(fuel_max, excluded.fuel_max), {}",
        h.join(", "),
        vec!["?"; 12 + BUCKETS].join(", "),
        h.iter()
            .map(|c| format!("{c} = {c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for ((minute, bundle, revision, rule, verdict, kind), a) in rollups {
        let mut args: Vec<rusqlite::types::Value> = vec![
            minute.into(),
            bundle.to_owned().into(),
            revision.to_owned().into(),
            rule.to_owned().into(),
            verdict.to_owned().into(),
            kind.to_owned().into(),
        ];
        args.extend(
            [
                a.count, a.cached, a.wall_sum, a.wall_max, a.fuel_sum, a.fuel_max,
            ]
            .into_iter()
            .chain(a.hist)
            .map(|n| rusqlite::types::Value::Integer(n as i64)),
        );
        stmt.execute(params_from_iter(args))?;
    }
    Ok(())
}

/// A dimension to group statistics by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The bundle.
    Bundle,
    /// The bundle's revision.
    Revision,
    /// The rule: statistics are then of rule evaluations, not of decisions.
    Rule,
    /// The verdict (a rule's, or the final one).
    Verdict,
    /// The error kind (rules only; empty for none).
    ErrorKind,
}

impl GroupBy {
    /// The name, as in `group_by` and in each point.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Bundle => "bundle",
            GroupBy::Revision => "revision",
            GroupBy::Rule => "rule",
            GroupBy::Verdict => "verdict",
            GroupBy::ErrorKind => "error_kind",
        }
    }

    /// Parses `rule,verdict`.
    pub fn parse_list(s: &str) -> Result<Vec<GroupBy>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g: GroupBy = serde_json::from_value(Value::String(part.into())).map_err(|_| {
                format!(
                    "group_by: `{part}` is not one of bundle, revision, rule, verdict, error_kind"
                )
            })?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    }
}

/// What `GET /v1/decisions/stats` asks for. Times resolve to whole minutes.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// From this time (ms since the epoch).
    pub since_ms: u64,
    /// Before this time.
    pub until_ms: u64,
    /// The width of each point, in ms (a multiple of a minute).
    pub interval_ms: u64,
    /// The dimensions of each series. With `rule` (or a `rule` filter, or an `error_kind`
    /// group) the statistics are of rule evaluations; otherwise of decisions.
    pub group_by: Vec<GroupBy>,
    /// Only this bundle.
    pub bundle: Option<String>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only these bundles (the caller's scope).
    pub scope: Option<Vec<String>>,
}

/// Most points one query may return.
const MAX_POINTS: usize = 10_000;

impl StatsQuery {
    /// Checks the interval and the range.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms < 60_000 || !self.interval_ms.is_multiple_of(60_000) {
            return Err("interval: must be a whole number of minutes (1m, 5m, 1h)".into());
        }
        if self.until_ms <= self.since_ms {
            return Err("until: must be later than since".into());
        }
        Ok(())
    }
}

pub(super) fn run(conn: &Connection, q: &StatsQuery) -> Result<Value, String> {
    q.validate()?;
    let rules = q.rule.is_some()
        || q.group_by
            .iter()
            .any(|g| matches!(g, GroupBy::Rule | GroupBy::ErrorKind));
    let groups: Vec<&str> = q.group_by.iter().map(|g| g.as_str()).collect();
    let h = hist_columns();
    let interval_min = (q.interval_ms / 60_000) as i64;
    let mut sql = format!(
        "SELECT (minute / {interval_min}) * {interval_min} AS slot, {} SUM(count), SUM(cached), SUM(wall_us_sum), MAX(wall_us_max), SUM(fuel_sum), MAX(fuel_max), {} FROM rollups WHERE minute >= ? AND minute < ? AND rule {} ''",
        groups.iter().map(|g| format!("{g},")).collect::<String>(),
        h.iter()
            .map(|c| format!("SUM({c})"))
            .collect::<Vec<_>>()
            .join(", "),
        if rules { "!=" } else { "=" },
    );
    let mut args: Vec<rusqlite::types::Value> = vec![
        ((q.since_ms / 60_000) as i64).into(),
        (q.until_ms.div_ceil(60_000) as i64).into(),
    ];
    if let Some(b) = &q.bundle {
        sql.push_str(" AND bundle = ?");
        args.push(b.clone().into());
    }
    if let Some(r) = &q.rule {
        sql.push_str(" AND rule = ?");
        args.push(r.clone().into());
    }
    super::scope_clause(&mut sql, &mut args, q.scope.as_deref());
    sql.push_str(" GROUP BY slot");
    for g in &groups {
        sql.push_str(", ");
        sql.push_str(g);
    }
    sql.push_str(&format!(
        " ORDER BY slot{} LIMIT {}",
        groups.iter().map(|g| format!(", {g}")).collect::<String>(),
        MAX_POINTS + 1
    ));
    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let n = groups.len();
    let points = stmt
        .query_map(params_from_iter(args), |r| {
            let int = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            let mut point = Map::new();
            point.insert("start_ms".into(), json!(int(0)? * 60_000));
            for (i, g) in groups.iter().enumerate() {
                point.insert((*g).into(), json!(r.get::<_, String>(1 + i)?));
            }
            let at = 1 + n;
            let count = int(at)?;
            let (wall_sum, wall_max, fuel_sum, fuel_max) =
                (int(at + 2)?, int(at + 3)?, int(at + 4)?, int(at + 5)?);
            let mut hist = [0u64; BUCKETS];
            for (i, slot) in hist.iter_mut().enumerate() {
                *slot = int(at + 6 + i)?;
            }
            let mean = |sum: u64| sum.checked_div(count).unwrap_or(0);
            point.insert("count".into(), json!(count));
            point.insert("cached".into(), json!(int(at + 1)?));
            point.insert(
                "wall_us".into(),
                json!({
                    "sum": wall_sum, "max": wall_max, "mean": mean(wall_sum),
                    "p50": quantile(&hist, count, wall_max, 0.50),
                    "p99": quantile(&hist, count, wall_max, 0.99),
                }),
            );
            point.insert(
                "fuel".into(),
                json!({"sum": fuel_sum, "max": fuel_max, "mean": mean(fuel_sum)}),
            );
            Ok(Value::Object(point))
        })
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if points.len() > MAX_POINTS {
        return Err(format!(
            "more than {MAX_POINTS} points: use a wider interval, a shorter range or fewer group_by dimensions"
        ));
    }
    Ok(json!({
        "of": if rules { "rule-evaluations" } else { "decisions" },
        "since_ms": q.since_ms,
        "until_ms": q.until_ms,
        "interval_s": q.interval_ms / 1000,
        "group_by": q.group_by,
        "points": points,
    }))
}

/// The `q` quantile of a histogram: the upper bound of the bucket holding that rank,
/// never above the largest value seen (an upper estimate, as Prometheus's are).
pub fn quantile(hist: &[u64; BUCKETS], count: u64, max: u64, q: f64) -> u64 {
    if count == 0 {
        return 0;
    }
    let rank = ((q * count as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return LATENCY_BOUNDS_US.get(i).map_or(max, |&b| b.min(max));
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(10), 0);
        assert_eq!(bucket(11), 1);
        assert_eq!(bucket(5_000_000), 14);
        assert_eq!(bucket(5_000_001), 15);
        let mut hist = [0u64; BUCKETS];
        // 98 fast (<= 25 us), 2 slow (<= 10 ms).
        hist[1] = 98;
        hist[9] = 2;
        assert_eq!(quantile(&hist, 100, 9_000, 0.50), 25);
        assert_eq!(quantile(&hist, 100, 9_000, 0.98), 25);
        assert_eq!(
            quantile(&hist, 100, 9_000, 0.99),
            9_000,
            "capped by the max"
        );
        assert_eq!(quantile(&[0; BUCKETS], 0, 0, 0.99), 0);
    }

    #[test]
    fn group_by_names_are_checked() {
        assert_eq!(
            GroupBy::parse_list("rule, verdict,rule").unwrap(),
            [GroupBy::Rule, GroupBy::Verdict]
        );
        let e = GroupBy::parse_list("rule,colour").unwrap_err();
        assert!(e.contains("`colour`"), "{e}");
    }
}
