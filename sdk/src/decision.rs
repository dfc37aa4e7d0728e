//! The decision a rule returns, built fluently.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Stop it.
    Deny,
    /// Send it to a person.
    Review,
    /// No opinion: the rule does not apply.
    Abstain,
}

/// A rule's answer: a verdict, an optional score, reasons, and optional JSON output.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    verdict: Verdict,
    score: Option<f64>,
    reasons: Vec<String>,
    output: Option<String>,
}

impl Decision {
    /// A decision with this verdict.
    pub fn new(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            score: None,
            reasons: Vec::new(),
            output: None,
        }
    }
    /// `allow`.
    pub fn allow() -> Decision {
        Decision::new(Verdict::Allow)
    }
    /// `deny`.
    pub fn deny() -> Decision {
        Decision::new(Verdict::Deny)
    }
    /// `review`.
    pub fn review() -> Decision {
        Decision::new(Verdict::Review)
    }
    /// `abstain`.
    pub fn abstain() -> Decision {
        Decision::new(Verdict::Abstain)
    }

    /// Adds a reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Decision {
        self.reasons.push(reason.into());
        self
    }

    /// Sets the score. The host refuses non-finite scores.
    pub fn score(mut self, score: f64) -> Decision {
        self.score = Some(score);
        self
    }

    /// Sets the output from anything serializable (handed to dependent rules and returned
    /// to the caller). A value that cannot be serialized leaves the output empty.
    pub fn output(mut self, output: &impl Serialize) -> Decision {
        self.output = serde_json::to_string(output).ok();
        self
    }

    /// Sets the output as raw JSON text; the host checks that it is JSON.
    pub fn output_raw(mut self, json: impl Into<String>) -> Decision {
        self.output = Some(json.into());
        self
    }

    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
    /// The score, if set.
    pub fn get_score(&self) -> Option<f64> {
        self.score
    }
    /// The reasons.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
    /// The output as JSON text, if set.
    pub fn output_json(&self) -> Option<&str> {
        self.output.as_deref()
    }
    /// The output parsed into `T`; `None` when there is none or it does not fit `T`.
    pub fn output_as<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.output.as_deref()?).ok()
    }

    #[doc(hidden)]
    pub fn from_parts(
        verdict: Verdict,
        score: Option<f64>,
        reasons: Vec<String>,
        output: Option<String>,
    ) -> Decision {
        Decision {
            verdict,
            score,
            reasons,
            output,
        }
    }

    #[doc(hidden)]
    pub fn into_parts(self) -> (Verdict, Option<f64>, Vec<String>, Option<String>) {
        (self.verdict, self.score, self.reasons, self.output)
    }
}
