//! Example of a rule that combines several facts and, when it has them, upstream decisions
//! into a 0-100 risk score. Settings: `review_at` (default 50), `deny_at` (default 80).
//!
//! Reads `order.amount`, `customer.age_days`, `customer.verified`, `order.items` (array);
//! upstream (optional): `amount-limit` (its output's `amount`/`max`) and `sanctions`.

use rulebox_sdk::prelude::*;

pub struct RiskScore;

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default = "default_review_at")]
    review_at: f64,
    #[serde(default = "default_deny_at")]
    deny_at: f64,
}

fn default_review_at() -> f64 {
    50.0
}

fn default_deny_at() -> f64 {
    80.0
}

impl Rule for RiskScore {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        let settings = req.settings_shared::<Settings>()?;
        let (review_at, deny_at) = (settings.review_at, settings.deny_at);
        let amount: f64 = req.fact("order.amount")?;
        let age_days: u32 = req.fact_opt("customer.age_days")?.unwrap_or(0);
        let verified: bool = req.fact_opt("customer.verified")?.unwrap_or(false);
        let items: Vec<serde_json::Value> = req.fact_opt("order.items")?.unwrap_or_default();

        let mut score = 0.0;
        let mut factors = Vec::new();
        let mut add = |points: f64, why: &str| {
            score += points;
            factors.push(format!("+{points} {why}"));
        };
        if amount > 1000.0 {
            add((amount / 1000.0).min(30.0).round(), "large amount");
        }
        if age_days < 30 {
            add(20.0, "new customer");
        }
        if !verified {
            add(15.0, "unverified customer");
        }
        if items.len() > 20 {
            add(10.0, "many items");
        }
        if req
            .upstream("amount-limit")
            .is_some_and(|d| d.verdict() != Verdict::Allow)
        {
            add(25.0, "amount-limit did not allow");
        }
        if req
            .upstream("sanctions")
            .is_some_and(|d| d.verdict() == Verdict::Deny)
        {
            add(100.0, "sanctions hit");
        }
        let score = score.min(100.0);
        debug!("risk score {score} from {} factors", factors.len());
        let decision = if score >= deny_at {
            Decision::deny().reason(format!("risk score {score} at or above {deny_at}"))
        } else if score >= review_at {
            Decision::review().reason(format!("risk score {score} at or above {review_at}"))
        } else {
            Decision::allow()
        };
        Ok(decision
            .score(score)
            .output(&serde_json::json!({ "score": score, "factors": factors })))
    }
}

export_rule!(RiskScore, settings = Settings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_upstream() {
        let base = Request::new()
            .with_fact("order.amount", 50)
            .with_fact("customer.age_days", 400)
            .with_fact("customer.verified", true);
        let d = RiskScore::evaluate(&base).unwrap();
        assert_eq!((d.verdict(), d.get_score()), (Verdict::Allow, Some(0.0)));
        let risky = base
            .clone()
            .with_fact("customer.age_days", 3)
            .with_fact("customer.verified", false);
        let d = RiskScore::evaluate(&risky).unwrap();
        assert_eq!((d.verdict(), d.get_score()), (Verdict::Allow, Some(35.0)));
        let d =
            RiskScore::evaluate(&risky.with_upstream("amount-limit", Decision::review())).unwrap();
        assert_eq!((d.verdict(), d.get_score()), (Verdict::Review, Some(60.0)));
        let d = RiskScore::evaluate(&base.with_upstream("sanctions", Decision::deny())).unwrap();
        assert_eq!(d.verdict(), Verdict::Deny);
    }
}
