//! A bundle's golden cases: the `[[test]]` and `[[rule.test]]` tables of its manifest, run
//! against the loaded bundle before it may be activated.

use super::{Bundle, BundleError, TestCase};
use crate::input::Input;
use crate::rule::Verdict;
use serde::Serialize;

impl Bundle {
    /// Runs every golden case (bundle `[[test]]` and rule `[[rule.test]]`).
    pub async fn run_tests(&self) -> TestReport {
        let mut cases = Vec::new();
        for t in &self.manifest.tests {
            cases.push((None, t));
        }
        for r in &self.rules {
            for t in &r.tests {
                cases.push((Some(r.rule.name()), t));
            }
        }
        let mut outcomes = Vec::with_capacity(cases.len());
        for (n, (rule, case)) in cases.into_iter().enumerate() {
            let name = case.name.clone().unwrap_or_else(|| format!("#{}", n + 1));
            let target = rule.map_or_else(|| "bundle".to_owned(), |r| format!("rule {r}"));
            let problem = match serde_json::to_value(&case.input)
                .map_err(|e| e.to_string())
                .and_then(|v| Input::from_value(v).map_err(|e| e.to_string()))
            {
                Err(e) => Some(format!("input: {e}")),
                Ok(input) => match self.evaluate(&input).await {
                    Err(e) => Some(e.to_string()),
                    Ok(result) => {
                        let got = match rule {
                            None => Ok((result.verdict, None, result.reasons.clone())),
                            Some(r) => {
                                let eval = result
                                    .rules
                                    .iter()
                                    .find(|e| &*e.rule == r)
                                    .expect("rule in result");
                                eval.result
                                    .as_ref()
                                    .map(|d| (d.verdict, d.score, d.reasons.clone()))
                                    .map_err(|e| format!("{}: {e}", e.kind()))
                            }
                        };
                        check_case(case, got)
                    }
                },
            };
            outcomes.push(TestOutcome {
                name,
                target,
                passed: problem.is_none(),
                problem,
            });
        }
        TestReport { cases: outcomes }
    }
}

fn check_case(
    case: &TestCase,
    got: Result<(Verdict, Option<f64>, Vec<String>), String>,
) -> Option<String> {
    let (verdict, score, reasons) = match got {
        Ok(g) => g,
        Err(e) => {
            return Some(format!(
                "expected {:?}, the rule errored: {e}",
                case.verdict
            ));
        }
    };
    if verdict != case.verdict {
        return Some(format!(
            "expected verdict {:?}, got {verdict:?}",
            case.verdict
        ));
    }
    if let Some(want) = case.score
        && score.is_none_or(|s| (s - want).abs() > 1e-9)
    {
        return Some(format!("expected score {want}, got {score:?}"));
    }
    if let Some(want) = &case.reasons
        && want != &reasons
    {
        return Some(format!("expected reasons {want:?}, got {reasons:?}"));
    }
    None
}

/// The outcome of a bundle's golden cases.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// One per case.
    pub cases: Vec<TestOutcome>,
}

impl TestReport {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// As an error, when any case failed.
    pub fn into_result(self) -> Result<TestReport, BundleError> {
        let failed = self.failed();
        if failed == 0 {
            return Ok(self);
        }
        let first = self.cases.iter().find(|c| !c.passed).map(|c| {
            format!(
                "{} `{}`: {}",
                c.target,
                c.name,
                c.problem.as_deref().unwrap_or("")
            )
        });
        Err(BundleError::Tests {
            failed,
            total: self.cases.len(),
            first,
        })
    }
}

/// One golden case's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TestOutcome {
    /// The case's name.
    pub name: String,
    /// `bundle` or `rule NAME`.
    pub target: String,
    /// Whether it passed.
    pub passed: bool,
    /// What differed.
    pub problem: Option<String>,
}
