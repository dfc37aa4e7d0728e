//! Evaluating a bundle: its dependency layers in order, each layer's rules concurrently,
//! and the combination of their decisions into one verdict.

use super::loaded::Costs;
use super::{Bundle, BundleRule, Combine, OnError};
use crate::error::{ErrorKind, EvalError};
use crate::input::Input;
use crate::rule::{Decision, Evaluation, Upstream, Verdict};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Below this many microseconds of recent cost, a layer's rules run one after another on
/// the calling thread. Handing part of a layer to a helper costs a few microseconds when the
/// helper is spinning and tens when it must be woken, and the caller never waits for a late
/// helper (it takes the helper's share itself), so sharing pays from a few tens of
/// microseconds of work: measured on 2 cores, twenty ~1 us rules (~20 us) run as fast in
/// sequence, twenty ~7 us rules (~140 us) 2.2x faster shared. At 150, where this stood
/// before, a layer of twenty such rules fell below the line on one evaluation in four.
const PARALLEL_FROM_US: u64 = 60;

/// Below this mean cost per rule (microseconds), a layer is not shared however wide: on 2
/// cores, twenty rules of ~2 us each ran 5-10% slower shared than in sequence (each claim,
/// result and instance crossing between cores costs a fraction of a microsecond), twenty
/// of ~7 us 2.2x faster.
const SHARED_RULE_FROM_US: u64 = 5;

impl Bundle {
    /// Evaluates the bundle, one dependency layer after another; dependents get their
    /// upstream decisions. Results found in the in-memory cache are served on the calling
    /// task. The rest of a layer runs on the calling thread when its rules recently cost
    /// less than [`LoadOptions::inline_below_us`] in all, or when it is worth sharing with
    /// the engine's helper threads (`concurrency` threads in all, the calling one among
    /// them); a layer with a rule that imports WASI does so only on a multi-thread runtime,
    /// inside `block_in_place`. Otherwise the layer goes to tokio's blocking pool as one
    /// task, whose thread shares it with the helpers when that is worth it. With
    /// `inline_below_us` 0, every layer goes to the pool.
    ///
    /// [`LoadOptions::inline_below_us`]: crate::LoadOptions::inline_below_us
    ///
    /// Fails, with no verdict, when the host could not run a rule ([`Overloaded`]): host
    /// trouble is never turned into a rule's deny or skip.
    pub async fn evaluate(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        let start = Instant::now();
        let mut evals: Vec<Option<Evaluation>> = vec![None; self.rules.len()];
        // Asked only when a rule imports WASI: a lean one never blocks on the runtime.
        let multi_thread = || {
            tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        };
        for (layer, &wasi) in self.layers.iter().zip(&self.wasi_layers) {
            // A cheap layer not worth sharing runs exactly as `evaluate_sequential` runs it:
            // nothing to sort out first, so a layer of tiny rules costs what it does there.
            if self.in_order_pays(layer, self.inline_below_us) {
                if !wasi {
                    self.in_order(layer, input, &mut evals, true)?;
                    continue;
                }
                if multi_thread() {
                    tokio::task::block_in_place(|| self.in_order(layer, input, &mut evals, true))?;
                    continue;
                }
            }
            // Results in this host's memory cache are served here, on the calling thread:
            // a lookup costs well under a microsecond, a hop to the blocking pool far more.
            let pending = self.pending(layer, input, &mut evals);
            if pending.is_empty() {
                continue;
            }
            // Cheap rules run here too: below the budget, the hand-off would cost more than
            // the rules. So does a layer worth sharing with the engine's helpers: this thread
            // is then one of those doing it, and a hop to the pool would only add a wake-up
            // of a pool thread (measured on 2 cores, twenty 20 us rules: 0.80x the
            // sequential speed through the pool, 2.0x here). Unmeasured rules, any that may
            // wait on Redis, and a lone expensive rule go to the pool.
            //
            // Inline means inside `block_in_place`: a rule's WASI calls (a file read through
            // a grant, a print) block on the ambient runtime, which tokio allows only there,
            // and only on a multi-thread runtime.
            let estimate = self.estimate(pending.iter().map(|(i, _)| *i));
            let share = estimate.shares(self.concurrency);
            let inline = self.inline_below_us > 0
                && (estimate.below(self.inline_below_us) || (share && estimate.is_known()))
                && (!wasi || multi_thread());
            if inline {
                // Rules that import no WASI (lean ones) never block on the runtime: they
                // run right here, without `block_in_place`'s hand-off of this worker's
                // other tasks.
                if wasi {
                    tokio::task::block_in_place(|| {
                        self.run_here(pending, share, input, &mut evals)
                    });
                } else {
                    self.run_here(pending, share, input, &mut evals);
                }
                self.fill_missing(layer, &mut evals);
                self.check_overload(layer, &evals)?;
                continue;
            }
            // One hop to the blocking pool for the whole layer, whose thread then shares
            // the layer with the engine's helpers as `evaluate_blocking` does: a hop per
            // rule or per worker would cost about what a rule does, and a pool thread per
            // worker would leave the helpers idle.
            let jobs = self.jobs(pending);
            let (input, concurrency) = (input.clone(), self.concurrency);
            let ran = tokio::task::spawn_blocking(move || {
                if share {
                    share_layer(jobs, &input, concurrency)
                } else {
                    jobs.into_iter()
                        .map(|(i, rule, upstream)| (i, rule.run(&input, &upstream)))
                        .collect()
                }
            })
            .await;
            // A panicked task (a host bug) loses its rules; they are reported below as
            // failed rather than taking the evaluation down.
            for (i, eval) in ran.unwrap_or_default() {
                evals[i] = Some(eval);
            }
            self.fill_missing(layer, &mut evals);
            self.check_overload(layer, &evals)?;
        }
        Ok(self.finish(evals, start))
    }

    /// Evaluates the bundle on the calling thread, for callers without an async runtime:
    /// memory-cache hits are served at once, and a dependency layer whose rules are worth it
    /// is shared with the engine's helper threads (the calling thread works too), so a wide
    /// layer uses every core and a cheap one never waits for a hand-off. The same result as
    /// [`Bundle::evaluate`].
    ///
    /// Blocks: do not call it from async code (use [`Bundle::evaluate`]); a rule's WASI
    /// calls would block the runtime's worker.
    pub fn evaluate_blocking(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        let start = Instant::now();
        let mut evals: Vec<Option<Evaluation>> = vec![None; self.rules.len()];
        for layer in &self.layers {
            if self.in_order_pays(layer, u64::MAX) {
                self.in_order(layer, input, &mut evals, true)?;
                continue;
            }
            let pending = self.pending(layer, input, &mut evals);
            let share = self
                .estimate(pending.iter().map(|(i, _)| *i))
                .shares(self.concurrency);
            self.run_here(pending, share, input, &mut evals);
            self.fill_missing(layer, &mut evals);
            self.check_overload(layer, &evals)?;
        }
        Ok(self.finish(evals, start))
    }

    /// A layer's rules that are not memory-cache hits, with their upstream decisions; hits
    /// go straight into `evals` (a lookup costs well under a microsecond).
    fn pending(
        &self,
        layer: &[usize],
        input: &Input,
        evals: &mut [Option<Evaluation>],
    ) -> Vec<(usize, Vec<Upstream>)> {
        let mut pending = Vec::with_capacity(layer.len());
        for &i in layer {
            let upstream = self.upstream_of(i, evals);
            match self.rules[i].cached_in_memory(input, &upstream) {
                Some(eval) => evals[i] = Some(eval),
                None => pending.push((i, upstream)),
            }
        }
        pending
    }

    /// What these rules cost lately, together, each rule's figures read once.
    fn estimate(&self, rules: impl IntoIterator<Item = usize>) -> Estimate {
        let mut estimate = Estimate {
            rules: 0,
            costs: Some(Costs {
                cautious: 0,
                typical: 0,
            }),
        };
        for i in rules {
            estimate.rules += 1;
            estimate.costs = estimate.costs.and_then(|sum| {
                let rule = self.rules[i].recent_cost()?;
                Some(Costs {
                    cautious: sum.cautious.saturating_add(rule.cautious),
                    typical: sum.typical.saturating_add(rule.typical),
                })
            });
        }
        estimate
    }

    /// Whether a layer is best run in order on this thread, as
    /// [`Bundle::evaluate_sequential`] does: all its rules measured, costing less than
    /// `budget_us` in all, and not worth sharing (cache hits among them only make it
    /// cheaper).
    fn in_order_pays(&self, layer: &[usize], budget_us: u64) -> bool {
        let estimate = self.estimate(layer.iter().copied());
        estimate.below(budget_us) && !estimate.shares(self.concurrency)
    }

    /// Runs a layer's rules one after another on this thread, through the result cache when
    /// `cached`; stops at the first the host could not run.
    fn in_order(
        &self,
        layer: &[usize],
        input: &Input,
        evals: &mut [Option<Evaluation>],
        cached: bool,
    ) -> Result<(), Overloaded> {
        for &i in layer {
            let upstream = self.upstream_of(i, evals);
            let rule = &self.rules[i];
            evals[i] = Some(if cached {
                rule.run(input, &upstream)
            } else {
                rule.rule.evaluate_with(input, &upstream)
            });
            // No verdict can come of it: do not make the rest wait for slots too.
            self.check_overload(&[i], evals)?;
        }
        Ok(())
    }

    fn jobs(&self, pending: Vec<(usize, Vec<Upstream>)>) -> Vec<Job> {
        pending
            .into_iter()
            .map(|(i, upstream)| (i, self.rules[i].clone(), upstream))
            .collect()
    }

    /// Runs one layer's pending rules on this thread: one after another (nothing is cloned
    /// or moved for them), or, when `share` ([`Estimate::shares`]), with the engine's helper
    /// threads ([`share_layer`]).
    fn run_here(
        &self,
        pending: Vec<(usize, Vec<Upstream>)>,
        share: bool,
        input: &Input,
        evals: &mut [Option<Evaluation>],
    ) {
        if !share {
            for (i, upstream) in pending {
                evals[i] = Some(self.rules[i].run(input, &upstream));
            }
            return;
        }
        for (i, eval) in share_layer(self.jobs(pending), input, self.concurrency) {
            evals[i] = Some(eval);
        }
    }

    /// Reports a rule whose evaluation was lost (a host bug: its task panicked) as failed,
    /// rather than taking the whole evaluation down.
    fn fill_missing(&self, layer: &[usize], evals: &mut [Option<Evaluation>]) {
        for &i in layer {
            if evals[i].is_none() {
                evals[i] = Some(Evaluation {
                    rule: self.rules[i].rule.name().into(),
                    result: Err(EvalError::Trap {
                        message: "the host task evaluating this rule failed".into(),
                        detail: None,
                    }),
                    metering: Default::default(),
                    cached: false,
                    read_clock: false,
                });
            }
        }
    }

    /// Stops an evaluation in which the host could not run a rule.
    fn check_overload(
        &self,
        layer: &[usize],
        evals: &[Option<Evaluation>],
    ) -> Result<(), Overloaded> {
        let mut rules = Vec::new();
        let mut message = String::new();
        for &i in layer {
            if let Some(Evaluation {
                result: Err(e @ EvalError::Overloaded(_)),
                rule,
                ..
            }) = &evals[i]
            {
                rules.push(rule.to_string());
                message = e.to_string();
            }
        }
        if rules.is_empty() {
            Ok(())
        } else {
            Err(Overloaded {
                bundle: self.name().to_owned(),
                rules,
                message,
            })
        }
    }

    /// Evaluates the bundle on the calling thread, one rule after another. The same result as
    /// [`Bundle::evaluate`]; for callers without a runtime and for tiny bundles.
    pub fn evaluate_sequential(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        self.sequential(input, true)
    }

    /// [`Bundle::evaluate_sequential`] without the result cache: every rule runs, nothing is
    /// read from or written to the cache. For evaluations that must not be taken for the
    /// serving revision's (a candidate's shadow traffic, a replay), and whose costs must be
    /// the rules' own.
    pub fn evaluate_uncached(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        self.sequential(input, false)
    }

    fn sequential(&self, input: &Input, cached: bool) -> Result<BundleResult, Overloaded> {
        let start = Instant::now();
        let mut evals: Vec<Option<Evaluation>> = vec![None; self.rules.len()];
        for layer in &self.layers {
            self.in_order(layer, input, &mut evals, cached)?;
        }
        Ok(self.finish(evals, start))
    }

    /// What rule `i` receives from its dependencies: their decisions, or for a failed one its
    /// `on_error` effect (a deny with the error as reason; nothing for `skip`).
    fn upstream_of(&self, i: usize, evals: &[Option<Evaluation>]) -> Vec<Upstream> {
        self.rules[i]
            .depends_on
            .iter()
            .filter_map(|&d| {
                let eval = evals[d].as_ref()?;
                let decision = effective(&eval.result, self.rules[d].on_error)?;
                Some(Upstream {
                    rule: self.rules[d].rule.name().to_owned(),
                    decision,
                })
            })
            .collect()
    }

    fn finish(&self, evals: Vec<Option<Evaluation>>, start: Instant) -> BundleResult {
        let evals: Vec<Evaluation> = evals
            .into_iter()
            .map(|e| e.expect("every rule ran"))
            .collect();
        let effects: Vec<Option<Decision>> = evals
            .iter()
            .zip(&self.rules)
            .map(|(e, r)| effective(&e.result, r.on_error))
            .collect();
        let names: Vec<&str> = self.rules.iter().map(|r| r.rule.name()).collect();
        let (verdict, reasons) = combine(self.manifest.bundle.combine, &names, &effects);
        BundleResult {
            bundle: self.name().to_owned(),
            revision: self.revision().to_owned(),
            signed: self.signed_by.is_some(),
            verdict,
            reasons,
            rules: evals,
            wall_us: start.elapsed().as_micros() as u64,
        }
    }
}

/// What an evaluation counts as in combination: its decision, or its `on_error` effect.
fn effective(result: &Result<Decision, EvalError>, on_error: OnError) -> Option<Decision> {
    match (result, on_error) {
        (Ok(d), _) => Some(d.clone()),
        (Err(_), OnError::Skip) => None,
        (Err(e), OnError::Deny) => Some(Decision {
            verdict: Verdict::Deny,
            score: None,
            reasons: vec![format!("failed closed ({}): {e}", e.kind())],
            output: None,
        }),
    }
}

/// Combines effective decisions; reasons come from the rules that decided, prefixed by name.
fn combine(how: Combine, names: &[&str], effects: &[Option<Decision>]) -> (Verdict, Vec<String>) {
    let present = || {
        effects.iter().enumerate().filter_map(|(i, d)| {
            d.as_ref()
                .filter(|d| d.verdict != Verdict::Abstain)
                .map(|d| (i, d))
        })
    };
    let reasons_of = |verdict: Verdict| -> Vec<String> {
        present()
            .filter(|(_, d)| d.verdict == verdict)
            .flat_map(|(i, d)| named_reasons(names[i], d))
            .collect()
    };
    let any = |v: Verdict| present().any(|(_, d)| d.verdict == v);
    let first_of = |order: &[Verdict]| -> Verdict {
        order
            .iter()
            .copied()
            .find(|&v| any(v))
            .unwrap_or(Verdict::Abstain)
    };
    let verdict = match how {
        Combine::DenyOverrides => first_of(&[Verdict::Deny, Verdict::Review, Verdict::Allow]),
        Combine::AllowOverrides => first_of(&[Verdict::Allow, Verdict::Review, Verdict::Deny]),
        Combine::FirstApplicable => {
            // Manifest order, not evaluation order.
            if let Some((i, d)) = present().next() {
                return (d.verdict, named_reasons(names[i], d));
            }
            Verdict::Abstain
        }
        Combine::All => {
            let all_allow = effects
                .iter()
                .all(|d| d.as_ref().is_some_and(|d| d.verdict == Verdict::Allow));
            if all_allow && !effects.is_empty() {
                Verdict::Allow
            } else {
                let mut reasons = Vec::new();
                for (i, d) in effects.iter().enumerate() {
                    let name = names[i];
                    match d {
                        Some(d) if d.verdict == Verdict::Allow => {}
                        Some(d) => reasons.extend(named_reasons(name, d)),
                        None => reasons.push(format!("{name}: skipped after an error")),
                    }
                }
                return (Verdict::Deny, reasons);
            }
        }
    };
    (
        verdict,
        if verdict == Verdict::Abstain {
            Vec::new()
        } else {
            reasons_of(verdict)
        },
    )
}

/// A decision's reasons, each prefixed by its rule; the bare verdict when it gave none.
fn named_reasons(name: &str, d: &Decision) -> Vec<String> {
    if d.reasons.is_empty() {
        vec![format!("{name}: {}", d.verdict.as_str())]
    } else {
        d.reasons.iter().map(|r| format!("{name}: {r}")).collect()
    }
}

/// One rule of a layer, ready to run on a worker: its index, the rule, its upstream.
type Job = (usize, Arc<BundleRule>, Vec<Upstream>);

/// An evaluation the host could not complete: a rule got no evaluation slot in time, or was
/// starved of CPU. There is no verdict: retry later (a server answers 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bundle `{bundle}` was not evaluated: {message} (rules: {})", rules.join(", "))]
pub struct Overloaded {
    /// The bundle.
    pub bundle: String,
    /// The rules the host could not run.
    pub rules: Vec<String>,
    /// Why, as the host saw it.
    pub message: String,
}

/// `{"kind": "overloaded", "message": "...", "rules": [...]}`.
impl Serialize for Overloaded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("kind", &ErrorKind::Overloaded)?;
        map.serialize_entry("message", &self.to_string())?;
        map.serialize_entry("rules", &self.rules)?;
        map.end()
    }
}

/// The result of evaluating a bundle. Its JSON form (`Serialize`) is what
/// `rulebox eval --bundle` and the server print.
#[derive(Clone, Debug, Serialize)]
pub struct BundleResult {
    /// The bundle's name.
    pub bundle: String,
    /// The revision that produced this result.
    pub revision: String,
    /// Whether that revision's signature was verified against a trusted key when it loaded.
    pub signed: bool,
    /// The combined verdict.
    pub verdict: Verdict,
    /// The reasons that decided it, each prefixed by its rule's name.
    pub reasons: Vec<String>,
    /// Wall time of the whole evaluation, in microseconds.
    pub wall_us: u64,
    /// Every rule's evaluation, in manifest order.
    pub rules: Vec<Evaluation>,
}

impl BundleResult {
    /// The JSON form (see the `Serialize` impl) as a value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The evaluation of the rule named `rule`.
    pub fn rule(&self, rule: &str) -> Option<&Evaluation> {
        self.rules.iter().find(|e| &*e.rule == rule)
    }

    /// How many rules errored, by kind.
    pub fn errors(&self) -> Vec<(String, ErrorKind)> {
        self.rules
            .iter()
            .filter_map(|e| {
                e.result
                    .as_ref()
                    .err()
                    .map(|err| (e.rule.to_string(), err.kind()))
            })
            .collect()
    }
}

/// Whether `n` rules of recent total cost `cost_us` (unknown counts as high) repay sharing
/// them with helper threads: enough work in all, and rules large enough on average that
/// what sharing costs per rule (claiming it, handing back its result, its reused instance
/// or pooled slot cold in the other core's cache) stays small beside them.
fn worth_sharing(n: usize, cost_us: Option<u64>, concurrency: usize) -> bool {
    n > 1
        && concurrency > 1
        && cost_us.is_none_or(|us| {
            us >= PARALLEL_FROM_US && us >= (n as u64).saturating_mul(SHARED_RULE_FROM_US)
        })
}

/// What a set of rules cost lately, summed ([`Costs`]).
struct Estimate {
    rules: usize,
    /// `None` when one of them has not run yet, or may wait on Redis.
    costs: Option<Costs>,
}

impl Estimate {
    /// Whether every rule was measured.
    fn is_known(&self) -> bool {
        self.costs.is_some()
    }

    /// Whether every rule was measured and together they cost less than `budget_us`, by
    /// the cautious figures.
    fn below(&self, budget_us: u64) -> bool {
        self.costs.is_some_and(|c| c.cautious < budget_us)
    }

    /// Whether the rules, by their typical cost, are worth sharing between `concurrency`
    /// threads ([`worth_sharing`]).
    fn shares(&self, concurrency: usize) -> bool {
        worth_sharing(self.rules, self.costs.map(|c| c.typical), concurrency)
    }
}

/// Shares one layer's rules between this thread and the engine's helper threads
/// (`concurrency` threads in all). Returns each rule's index with its evaluation; a rule
/// whose evaluation panicked (a host bug) is missing.
fn share_layer(jobs: Vec<Job>, input: &Input, concurrency: usize) -> Vec<(usize, Evaluation)> {
    let Some(engine) = jobs.first().map(|(_, r, _)| r.rule.pre().engine().clone()) else {
        return Vec::new();
    };
    let jobs = Arc::new(jobs);
    let (shared, input) = (jobs.clone(), input.clone());
    let done = engine.helpers().run(jobs.len(), concurrency - 1, move |k| {
        let (_, rule, upstream) = &shared[k];
        rule.run(&input, upstream)
    });
    jobs.iter()
        .zip(done)
        .filter_map(|((i, _, _), eval)| Some((*i, eval?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(verdict: Verdict, reason: &str) -> Option<Decision> {
        Some(Decision {
            reasons: vec![reason.to_owned()],
            ..Decision::new(verdict)
        })
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];

    #[test]
    fn deny_and_allow_overrides_pick_by_precedence_and_keep_only_deciding_reasons() {
        let effects = [
            d(Verdict::Allow, "ok"),
            d(Verdict::Review, "look"),
            d(Verdict::Deny, "no"),
            None,
        ];
        assert_eq!(
            combine(Combine::DenyOverrides, &NAMES, &effects),
            (Verdict::Deny, vec!["c: no".to_owned()])
        );
        assert_eq!(
            combine(Combine::AllowOverrides, &NAMES, &effects),
            (Verdict::Allow, vec!["a: ok".to_owned()])
        );
        let review = [d(Verdict::Allow, "ok"), d(Verdict::Review, "look")];
        assert_eq!(
            combine(Combine::DenyOverrides, &NAMES[..2], &review).0,
            Verdict::Review
        );
    }

    #[test]
    fn first_applicable_follows_manifest_order_and_skips_abstentions() {
        let effects = [
            None,
            d(Verdict::Abstain, "n/a"),
            d(Verdict::Deny, "no"),
            d(Verdict::Allow, "ok"),
        ];
        assert_eq!(
            combine(Combine::FirstApplicable, &NAMES, &effects),
            (Verdict::Deny, vec!["c: no".to_owned()])
        );
        assert_eq!(
            combine(Combine::FirstApplicable, &NAMES[..2], &effects[..2]).0,
            Verdict::Abstain
        );
    }

    #[test]
    fn all_needs_every_rule_to_allow_and_names_the_rest() {
        let allow = [d(Verdict::Allow, "ok"), Some(Decision::new(Verdict::Allow))];
        assert_eq!(combine(Combine::All, &NAMES[..2], &allow).0, Verdict::Allow);
        let mixed = [
            d(Verdict::Allow, "ok"),
            Some(Decision::new(Verdict::Abstain)),
            None,
        ];
        assert_eq!(
            combine(Combine::All, &NAMES[..3], &mixed),
            (
                Verdict::Deny,
                vec![
                    "b: abstain".to_owned(),
                    "c: skipped after an error".to_owned()
                ]
            )
        );
        assert_eq!(
            combine(Combine::All, &[], &[]).0,
            Verdict::Deny,
            "nothing allowed"
        );
    }

    #[test]
    fn nothing_deciding_is_an_abstention_without_reasons() {
        let effects = [None, d(Verdict::Abstain, "n/a")];
        for how in [
            Combine::DenyOverrides,
            Combine::AllowOverrides,
            Combine::FirstApplicable,
        ] {
            assert_eq!(
                combine(how, &NAMES[..2], &effects),
                (Verdict::Abstain, vec![])
            );
        }
    }

    #[test]
    fn a_failure_counts_as_its_on_error_effect() {
        let err = Err(EvalError::Failed("boom".into()));
        assert_eq!(effective(&err, OnError::Skip), None);
        let deny = effective(&err, OnError::Deny).unwrap();
        assert_eq!(deny.verdict, Verdict::Deny);
        assert_eq!(deny.reasons, ["failed closed (failed): rule failed: boom"]);
        let ok = Ok(Decision::new(Verdict::Allow));
        assert_eq!(
            effective(&ok, OnError::Deny),
            Some(Decision::new(Verdict::Allow))
        );
    }
}
