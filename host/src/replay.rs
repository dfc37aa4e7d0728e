//! Replay: what a candidate bundle revision would have decided on recorded traffic.
//!
//! A [`Replay`] takes recorded decisions one at a time ([`Recorded`]: the input as logged,
//! the pointers the log masked, the recorded verdict and per-rule outcomes and costs),
//! evaluates the candidate on each, and sums up a [`ReplayReport`]: the transition matrix of
//! the final verdict and of every rule (`review -> deny`, `allow -> error`, ...), the
//! decisions that changed with their ids and inputs, the cost difference per rule, and the
//! decisions that could not be replayed honestly (a candidate rule reads a field the log
//! masked: its value is gone, and guessing it would report changes that are not real).
//!
//! Replay never touches what serves: the candidate is evaluated without its result cache
//! ([`Bundle::evaluate_uncached`]), so nothing it decides is cached or served, and the
//! report is the only record of what it decided. Where the records come from (a decision-log file, a
//! server's API) is the caller's business.

use crate::input::{Input, Reads};
use crate::{Bundle, BundleResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One recorded decision.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Its id (the decision log's).
    pub id: String,
    /// The input, as logged: masked fields hold a placeholder.
    pub input: Value,
    /// JSON pointers (`/customer/name`) of the fields the log masked.
    pub masked: Vec<String>,
    /// The final verdict it got (`allow`, `deny`, `review`, `abstain`).
    pub verdict: String,
    /// Each rule's outcome.
    pub rules: Vec<RecordedRule>,
}

/// One rule's part in a recorded decision.
#[derive(Clone, Debug, Default)]
pub struct RecordedRule {
    /// The rule's name.
    pub rule: String,
    /// Its verdict, or `error`.
    pub outcome: String,
    /// Fuel it used (0 when served from the cache).
    pub fuel: u64,
    /// Wall time, in microseconds.
    pub wall_us: u64,
    /// Whether its result came from the cache (then its cost says nothing of the rule).
    pub cached: bool,
}

/// How much of the changed decisions a report keeps.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Changed decisions listed in full (input included); the rest are only counted.
    /// Default 1000.
    pub max_changes: usize,
    /// Decisions not replayable listed by id; the rest are only counted. Default 1000.
    pub max_not_replayable: usize,
    /// Keep each changed decision's input in its [`Change`] (else `null`: its id finds the
    /// decision where it was recorded, masked as it was logged). Default true.
    pub keep_inputs: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            max_changes: 1000,
            max_not_replayable: 1000,
            keep_inputs: true,
        }
    }
}

/// A transition matrix: how many went from one outcome to another, unchanged included.
/// Outcomes are verdicts, `error`, and for rules `absent` (not in the recording, or not in
/// the candidate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Transitions(pub BTreeMap<String, BTreeMap<String, u64>>);

impl Transitions {
    fn add(&mut self, from: &str, to: &str) {
        *self
            .0
            .entry(from.to_owned())
            .or_default()
            .entry(to.to_owned())
            .or_default() += 1;
    }

    /// How many went from `from` to `to`.
    pub fn count(&self, from: &str, to: &str) -> u64 {
        self.0
            .get(from)
            .and_then(|m| m.get(to))
            .copied()
            .unwrap_or(0)
    }

    /// How many changed outcome.
    pub fn changed(&self) -> u64 {
        self.0
            .iter()
            .flat_map(|(from, to)| to.iter().filter(move |(t, _)| *t != from))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Cost of one rule: recorded (evaluations not served from the cache) against the
/// candidate's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Recorded evaluations that ran (not cached).
    pub recorded_runs: u64,
    /// Their mean fuel.
    pub recorded_fuel: f64,
    /// Their mean wall time, in microseconds.
    pub recorded_wall_us: f64,
    /// The candidate's evaluations.
    pub candidate_runs: u64,
    /// Their mean fuel.
    pub candidate_fuel: f64,
    /// Their mean wall time, in microseconds.
    pub candidate_wall_us: f64,
}

impl Cost {
    fn record(mean: &mut f64, runs: u64, value: u64) {
        *mean += (value as f64 - *mean) / runs as f64;
    }
}

/// One rule across the replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleReplay {
    /// Its outcomes, recorded to candidate.
    pub transitions: Transitions,
    /// What it cost.
    pub cost: Cost,
}

/// A decision the candidate would have made differently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The recorded decision's id.
    pub id: String,
    /// Its final verdict, recorded and candidate.
    pub from: String,
    /// The candidate's final verdict.
    pub to: String,
    /// The rules whose outcome changed: (rule, recorded, candidate).
    pub rules: Vec<(String, String, String)>,
    /// The candidate's reasons.
    pub reasons: Vec<String>,
    /// The input, as logged.
    pub input: Value,
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The candidate bundle's name.
    pub bundle: String,
    /// The candidate's revision.
    pub revision: String,
    /// Recorded decisions evaluated on the candidate.
    pub replayed: u64,
    /// Of those, how many ended with a different final verdict.
    pub changed: u64,
    /// Recorded decisions not replayed: a candidate rule reads a field the log masked.
    pub not_replayable: u64,
    /// Recorded decisions the host could not evaluate (overload): neither a verdict nor
    /// the candidate's fault.
    pub host_errors: u64,
    /// The final verdict's transitions.
    pub verdicts: Transitions,
    /// Each rule's, by name (rules of both the recording and the candidate).
    pub rules: BTreeMap<String, RuleReplay>,
    /// Changed decisions, up to [`ReplayOptions::max_changes`], in replay order.
    pub changes: Vec<Change>,
    /// Not replayable: (id, why), up to [`ReplayOptions::max_not_replayable`].
    pub not_replayable_ids: Vec<(String, String)>,
}

impl Transitions {
    fn merge(&mut self, other: Transitions) {
        for (from, row) in other.0 {
            let mine = self.0.entry(from).or_default();
            for (to, n) in row {
                *mine.entry(to).or_default() += n;
            }
        }
    }
}

impl Cost {
    fn merge(&mut self, o: &Cost) {
        let mean = |a: f64, n: u64, b: f64, m: u64| {
            if n + m == 0 {
                0.0
            } else {
                (a * n as f64 + b * m as f64) / (n + m) as f64
            }
        };
        self.recorded_fuel = mean(
            self.recorded_fuel,
            self.recorded_runs,
            o.recorded_fuel,
            o.recorded_runs,
        );
        self.recorded_wall_us = mean(
            self.recorded_wall_us,
            self.recorded_runs,
            o.recorded_wall_us,
            o.recorded_runs,
        );
        self.recorded_runs += o.recorded_runs;
        self.candidate_fuel = mean(
            self.candidate_fuel,
            self.candidate_runs,
            o.candidate_fuel,
            o.candidate_runs,
        );
        self.candidate_wall_us = mean(
            self.candidate_wall_us,
            self.candidate_runs,
            o.candidate_wall_us,
            o.candidate_runs,
        );
        self.candidate_runs += o.candidate_runs;
    }
}

impl ReplayReport {
    /// Adds the counts of `other`, a report of other decisions on the same candidate (a
    /// replay split across threads): matrices and counts summed, costs averaged by their
    /// runs, listed decisions concatenated up to the limits of `options`.
    pub fn merge(&mut self, other: ReplayReport, options: &ReplayOptions) {
        self.replayed += other.replayed;
        self.changed += other.changed;
        self.not_replayable += other.not_replayable;
        self.host_errors += other.host_errors;
        self.verdicts.merge(other.verdicts);
        for (rule, r) in other.rules {
            let mine = self.rules.entry(rule).or_default();
            mine.transitions.merge(r.transitions);
            mine.cost.merge(&r.cost);
        }
        self.changes.extend(other.changes);
        self.changes.truncate(options.max_changes);
        self.not_replayable_ids.extend(other.not_replayable_ids);
        self.not_replayable_ids.truncate(options.max_not_replayable);
    }
}

/// A replay in progress: feed it recorded decisions with [`Replay::add`].
pub struct Replay<'b> {
    bundle: &'b Bundle,
    options: ReplayOptions,
    report: ReplayReport,
}

/// The keys of a JSON pointer (`/a~1b/c` is `a/b`, `c`).
fn pointer_keys(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Whether a rule reading the path `keys` sees the masked field at `masked`: one is inside
/// the other.
fn overlaps(keys: &[String], masked: &[String]) -> bool {
    keys.iter().zip(masked).all(|(a, b)| a == b)
}

impl<'b> Replay<'b> {
    /// A replay of recorded decisions on `candidate`.
    pub fn new(candidate: &'b Bundle, options: ReplayOptions) -> Replay<'b> {
        Replay {
            bundle: candidate,
            options,
            report: ReplayReport {
                bundle: candidate.name().to_owned(),
                revision: candidate.revision().to_owned(),
                ..Default::default()
            },
        }
    }

    /// Why `rec` cannot be replayed on the candidate, if it cannot.
    fn masked_reader(&self, rec: &Recorded) -> Option<String> {
        for pointer in &rec.masked {
            let masked = pointer_keys(pointer);
            for r in self.bundle.rules() {
                let name = r.rule.name();
                let read = match r.rule.reads() {
                    Reads::All => "the whole input".to_owned(),
                    Reads::Paths(paths) => {
                        match paths.iter().find(|p| overlaps(p.segments(), &masked)) {
                            Some(p) => format!("`{}`", p.as_str()),
                            None => continue,
                        }
                    }
                };
                return Some(format!(
                    "rule `{name}` reads {read}, and the log masked `{pointer}`"
                ));
            }
        }
        None
    }

    /// Counts `rec` as not replayable, for `why`.
    fn skip(&mut self, rec: &Recorded, why: String) {
        self.report.not_replayable += 1;
        if self.report.not_replayable_ids.len() < self.options.max_not_replayable {
            self.report.not_replayable_ids.push((rec.id.clone(), why));
        }
    }

    /// Replays one recorded decision: the candidate's verdict, or none when it was not
    /// replayable or the host could not evaluate it (both counted in the report).
    pub fn add(&mut self, rec: &Recorded) -> Option<crate::Verdict> {
        if let Some(why) = self.masked_reader(rec) {
            self.skip(rec, why);
            return None;
        }
        let input = match Input::from_value(rec.input.clone()) {
            Ok(input) => input,
            Err(e) => {
                self.skip(rec, format!("input: {e}"));
                return None;
            }
        };
        self.evaluate(rec, &input)
    }

    /// [`Replay::add`] for a decision whose input is at hand unmasked and parsed (a live
    /// decision sampled for a shadow candidate): `rec.input` is not read, nothing is
    /// masked, and the input is not copied.
    pub fn add_input(&mut self, rec: &Recorded, input: &Input) -> Option<crate::Verdict> {
        self.evaluate(rec, input)
    }

    fn evaluate(&mut self, rec: &Recorded, input: &Input) -> Option<crate::Verdict> {
        // Never through the result cache: nothing the candidate decides may be served, and
        // its costs must be its rules' own.
        match self.bundle.evaluate_uncached(input) {
            Ok(result) => {
                self.tally(rec, &result);
                Some(result.verdict)
            }
            Err(_) => {
                self.report.host_errors += 1;
                None
            }
        }
    }

    fn tally(&mut self, rec: &Recorded, result: &BundleResult) {
        let report = &mut self.report;
        report.replayed += 1;
        let to = result.verdict.as_str();
        report.verdicts.add(&rec.verdict, to);
        let mut changed_rules = Vec::new();
        for eval in &result.rules {
            let outcome = match &eval.result {
                Ok(d) => d.verdict.as_str(),
                Err(_) => "error",
            };
            let recorded = rec.rules.iter().find(|r| r.rule == *eval.rule);
            let from = recorded.map_or("absent", |r| r.outcome.as_str());
            let entry = report.rules.entry(eval.rule.to_string()).or_default();
            entry.transitions.add(from, outcome);
            let cost = &mut entry.cost;
            if let Some(r) = recorded.filter(|r| !r.cached) {
                cost.recorded_runs += 1;
                Cost::record(&mut cost.recorded_fuel, cost.recorded_runs, r.fuel);
                Cost::record(&mut cost.recorded_wall_us, cost.recorded_runs, r.wall_us);
            }
            cost.candidate_runs += 1;
            Cost::record(
                &mut cost.candidate_fuel,
                cost.candidate_runs,
                eval.metering.fuel,
            );
            Cost::record(
                &mut cost.candidate_wall_us,
                cost.candidate_runs,
                eval.metering.wall_us,
            );
            if from != outcome {
                changed_rules.push((eval.rule.to_string(), from.to_owned(), outcome.to_owned()));
            }
        }
        // Rules the recording has and the candidate dropped.
        for r in &rec.rules {
            if result.rule(&r.rule).is_none() {
                let entry = report.rules.entry(r.rule.clone()).or_default();
                entry.transitions.add(&r.outcome, "absent");
                changed_rules.push((r.rule.clone(), r.outcome.clone(), "absent".to_owned()));
            }
        }
        if rec.verdict != to {
            report.changed += 1;
            if report.changes.len() < self.options.max_changes {
                report.changes.push(Change {
                    id: rec.id.clone(),
                    from: rec.verdict.clone(),
                    to: to.to_owned(),
                    rules: changed_rules,
                    reasons: result.reasons.clone(),
                    input: if self.options.keep_inputs {
                        rec.input.clone()
                    } else {
                        Value::Null
                    },
                });
            }
        }
    }

    /// The report so far (for progress).
    pub fn report(&self) -> &ReplayReport {
        &self.report
    }

    /// The report.
    pub fn finish(self) -> ReplayReport {
        self.report
    }
}

impl Recorded {
    /// What a bundle result records: for building recordings from live evaluations (the
    /// server's decision log stores the same fields).
    pub fn from_result(id: impl Into<String>, input: Value, result: &BundleResult) -> Recorded {
        Recorded {
            id: id.into(),
            input,
            masked: Vec::new(),
            verdict: result.verdict.as_str().to_owned(),
            rules: result
                .rules
                .iter()
                .map(|e| RecordedRule {
                    rule: e.rule.to_string(),
                    outcome: match &e.result {
                        Ok(d) => d.verdict.as_str().to_owned(),
                        Err(_) => "error".to_owned(),
                    },
                    fuel: e.metering.fuel,
                    wall_us: e.metering.wall_us,
                    cached: e.cached,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_pointer_overlaps_the_paths_that_read_it() {
        let p = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        let name = pointer_keys("/customer/name");
        assert!(overlaps(&p("customer.name"), &name));
        assert!(overlaps(&p("customer"), &name));
        assert!(overlaps(&p("customer.name.first"), &name));
        assert!(!overlaps(&p("customer.country"), &name));
        assert!(overlaps(&p("a/b"), &pointer_keys("/a~1b")));
        assert!(!overlaps(&p("order.amount"), &name));
    }

    #[test]
    fn merged_reports_sum_counts_and_weigh_costs_by_runs() {
        let mut a = ReplayReport {
            replayed: 3,
            changed: 1,
            ..Default::default()
        };
        a.verdicts.add("review", "deny");
        let rule = a.rules.entry("r".into()).or_default();
        rule.cost = Cost {
            candidate_runs: 3,
            candidate_fuel: 100.0,
            ..Default::default()
        };
        let mut b = ReplayReport {
            replayed: 1,
            host_errors: 2,
            ..Default::default()
        };
        b.verdicts.add("review", "deny");
        b.verdicts.add("allow", "allow");
        b.rules.entry("r".into()).or_default().cost = Cost {
            candidate_runs: 1,
            candidate_fuel: 500.0,
            ..Default::default()
        };
        a.merge(b, &ReplayOptions::default());
        assert_eq!((a.replayed, a.changed, a.host_errors), (4, 1, 2));
        assert_eq!(a.verdicts.count("review", "deny"), 2);
        assert_eq!(a.verdicts.count("allow", "allow"), 1);
        let cost = &a.rules["r"].cost;
        assert_eq!((cost.candidate_runs, cost.candidate_fuel), (4, 200.0));
        assert_eq!(cost.recorded_fuel, 0.0);
    }

    #[test]
    fn transitions_count_changes_apart_from_the_unchanged() {
        let mut t = Transitions::default();
        t.add("allow", "allow");
        t.add("review", "deny");
        t.add("review", "deny");
        assert_eq!(
            (t.count("review", "deny"), t.count("allow", "allow")),
            (2, 1)
        );
        assert_eq!(t.changed(), 2);
    }
}
