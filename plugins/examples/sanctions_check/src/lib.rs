//! Example of a rule that reads reference data through a read-only directory grant, once:
//! its `init` loads the list at load time and every evaluation starts from that state. It
//! reads through `rulebox_sdk::read_grant` (the host's `rulebox:rule/grants`), not WASI, so it
//! builds lean.
//!
//! Reads `customer.country` and `payment.beneficiary_country` (ISO codes). Settings: `list`
//! (path inside the sandbox, default `/data/sanctioned_countries.txt`: one code per line, `#`
//! comments). Denies when either country is listed.

use rulebox_sdk::prelude::*;

pub struct SanctionsCheck;

/// The list `init` loaded.
static LIST: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn list_path(req: &Request) -> Result<String, RuleError> {
    req.setting_or("list", "/data/sanctioned_countries.txt".to_owned())
}

fn load_list(path: &str) -> Result<Vec<String>, RuleError> {
    let bytes = rulebox_sdk::read_grant(path).map_err(|e| match e {
        RuleError::Failed(m) | RuleError::InvalidInput(m) => {
            RuleError::failed(format!("sanctions list: {m}"))
        }
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|e| RuleError::failed(format!("sanctions list: `{path}` is not UTF-8: {e}")))?;
    Ok(parse_list(&text))
}

pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_uppercase()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn check(list: &[String], req: &Request) -> Result<Decision, RuleError> {
    let mut hits = Vec::new();
    for path in ["customer.country", "payment.beneficiary_country"] {
        if let Some(code) = req.fact_opt::<String>(path)? {
            let code = code.to_ascii_uppercase();
            if list.contains(&code) {
                hits.push(format!("{path} {code} is sanctioned"));
            }
        }
    }
    if req.raw_fact("customer.country").is_none() {
        return Err(RuleError::invalid_input("missing fact `customer.country`"));
    }
    Ok(if hits.is_empty() {
        Decision::allow().output(&serde_json::json!({ "sanctioned": false }))
    } else {
        hits.iter()
            .fold(Decision::deny(), |d, h| d.reason(h.clone()))
            .output(&serde_json::json!({ "sanctioned": true }))
    })
}

impl Init for SanctionsCheck {
    fn init(req: &Request) -> Result<(), RuleError> {
        let list = load_list(&list_path(req)?)?;
        let _ = LIST.set(list);
        Ok(())
    }
}

impl Rule for SanctionsCheck {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        match LIST.get() {
            Some(list) => check(list, req),
            // A host without `init`: read it now.
            None => check(&load_list(&list_path(req)?)?, req),
        }
    }
}

export_rule!(SanctionsCheck, init);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_hits() {
        let list = parse_list("# comment\nkp\nIR # iran\n\n");
        assert_eq!(list, ["KP", "IR"]);
        let ok = Request::new().with_fact("customer.country", "DE");
        assert_eq!(check(&list, &ok).unwrap().verdict(), Verdict::Allow);
        let bad = ok.with_fact("payment.beneficiary_country", "ir");
        let d = check(&list, &bad).unwrap();
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(
            d.reasons(),
            ["payment.beneficiary_country IR is sanctioned"]
        );
        assert!(matches!(
            check(&list, &Request::new()),
            Err(RuleError::InvalidInput(_))
        ));
    }
}
