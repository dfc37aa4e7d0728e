//! Measuring what a rule costs per evaluation: many evaluations, each in a fresh sandbox, and
//! their time distribution.

use crate::error::ErrorKind;
use crate::input::Input;
use crate::rule::{Rule, Verdict};
use serde::Serialize;
use std::time::Instant;

/// What [`Rule::bench`] measured. Times are wall-clock nanoseconds per evaluation, sandbox
/// creation included.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// The rule.
    pub rule: String,
    /// Timed evaluations (after the warm-up).
    pub iterations: usize,
    /// Median.
    pub per_eval_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Fastest.
    pub min_ns: u64,
    /// Evaluations per second at the median, on one thread.
    pub evals_per_sec: f64,
    /// Fuel of the last evaluation.
    pub fuel: u64,
    /// Peak linear memory of the last evaluation, in bytes.
    pub memory_peak_bytes: u64,
    /// The last evaluation's verdict or error kind.
    pub outcome: Outcome,
    /// Evaluations (of all run, warm-up included) that read a clock: their results are
    /// never cached.
    pub read_clock: usize,
    /// What keeps this rule's results out of the cache, with what to change; `None` when
    /// nothing the rule does.
    pub uncacheable: Option<String>,
}

/// How an evaluation ended: a verdict or an error kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// The rule decided.
    Verdict(Verdict),
    /// It did not.
    Error(ErrorKind),
}

impl Rule {
    /// Evaluates `input` `iterations` times (at least once), after a warm-up of a tenth as
    /// many, and reports the time distribution and the last evaluation's cost.
    pub fn bench(&self, input: &Input, iterations: usize) -> BenchReport {
        let n = iterations.max(1);
        let warm_up = n.div_ceil(10);
        let mut read_clock = 0;
        for _ in 0..warm_up {
            read_clock += usize::from(self.evaluate(input).read_clock);
        }
        let mut times = Vec::with_capacity(n);
        let mut last = None;
        for _ in 0..n {
            let t = Instant::now();
            let e = self.evaluate(input);
            times.push(t.elapsed().as_nanos() as u64);
            read_clock += usize::from(e.read_clock);
            last = Some(e);
        }
        let last = last.expect("at least one iteration");
        let (median, p90, p99, min) = percentiles(&mut times);
        BenchReport {
            rule: self.name().to_owned(),
            iterations: n,
            per_eval_ns: median,
            p90_ns: p90,
            p99_ns: p99,
            min_ns: min,
            evals_per_sec: (1e9 / median.max(1) as f64).round(),
            fuel: last.metering.fuel,
            memory_peak_bytes: last.metering.memory_peak_bytes,
            outcome: match &last.result {
                Ok(d) => Outcome::Verdict(d.verdict),
                Err(e) => Outcome::Error(e.kind()),
            },
            read_clock,
            uncacheable: (read_clock > 0).then(|| {
                format!(
                    "{read_clock} of {} evaluations read a clock: {}",
                    n + warm_up,
                    crate::cache::CLOCK_HINT
                )
            }),
        }
    }
}

/// (median, p90, p99, min) of a non-empty sample, by nearest rank.
fn percentiles(times: &mut [u64]) -> (u64, u64, u64, u64) {
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.9), pct(0.99), times[0])
}

#[cfg(test)]
mod tests {
    use super::percentiles;

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_sample() {
        let mut t: Vec<u64> = (1..=101).rev().collect();
        assert_eq!(percentiles(&mut t), (51, 91, 100, 1));
        assert_eq!(percentiles(&mut [7]), (7, 7, 7, 7));
    }
}
