//! Example of a rule with settings: deny orders over a limit, send large ones to review.
//!
//! Reads `order.amount` (number) and optionally `order.currency`; settings:
//! `max` (default 5000), `review_above` (optional), `currencies` (optional allow-list).

use rulebox_sdk::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_max")]
    max: f64,
    review_above: Option<f64>,
    currencies: Option<Vec<String>>,
}

fn default_max() -> f64 {
    5000.0
}

pub struct AmountLimit;

impl Rule for AmountLimit {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        // Parsed once, at load (see `export_rule!` below), not on every evaluation.
        let s = req.settings_shared::<Settings>()?;
        let amount: f64 = req.fact("order.amount")?;
        if amount < 0.0 {
            return Err(RuleError::invalid_input(format!(
                "order.amount {amount} is negative"
            )));
        }
        if let (Some(allowed), Some(currency)) =
            (&s.currencies, req.fact_opt::<String>("order.currency")?)
            && !allowed.contains(&currency)
        {
            return Ok(Decision::deny().reason(format!("currency {currency} is not accepted")));
        }
        let decision = if amount > s.max {
            Decision::deny().reason(format!("amount {amount} over limit {}", s.max))
        } else if s.review_above.is_some_and(|r| amount > r) {
            Decision::review().reason(format!("amount {amount} needs review"))
        } else {
            Decision::allow()
        };
        Ok(decision
            .score(amount / s.max)
            .output(&serde_json::json!({ "amount": amount, "max": s.max })))
    }
}

// `init` parses the settings before the host snapshots the rule: bad settings refuse the
// load, and evaluations start with them parsed.
export_rule!(AmountLimit, settings = Settings);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(amount: impl Into<Value>, settings: serde_json::Value) -> Result<Decision, RuleError> {
        AmountLimit::evaluate(
            &Request::new()
                .with_fact("order.amount", amount)
                .with_settings(settings),
        )
    }

    #[test]
    fn limits() {
        assert_eq!(eval(100, json!({})).unwrap().verdict(), Verdict::Allow);
        assert_eq!(eval(6000, json!({})).unwrap().verdict(), Verdict::Deny);
        assert_eq!(
            eval(600, json!({"max": 1000, "review_above": 500}))
                .unwrap()
                .verdict(),
            Verdict::Review
        );
    }

    #[test]
    fn bad_input_and_settings() {
        assert!(matches!(
            eval("lots", json!({})),
            Err(RuleError::InvalidInput(_))
        ));
        assert!(matches!(
            eval(-1, json!({})),
            Err(RuleError::InvalidInput(_))
        ));
        assert!(
            matches!(eval(1, json!({"maxx": 1})), Err(RuleError::Failed(m)) if m.contains("maxx"))
        );
    }
}
