//! Rules written in other languages than Rust (`plugins/python/*`, built by
//! `sdk/python/build.sh`): they load, decide exactly as the Rust example they mirror, and
//! their failures reach the caller with the right kind.

use rulebox::{ErrorKind, Input, Rule, RulePre};
use rulebox_tests::{engine, guest, python_guest_path};
use serde_json::json;

/// What a caller sees of an evaluation: the decision's parts, or the error's kind.
fn outcome(rule: &Rule, input: &serde_json::Value) -> String {
    let eval = rule.evaluate(&Input::from_value(input.clone()).unwrap());
    match eval.result {
        Ok(d) => format!(
            "{:?} score={:?} reasons={:?} output={}",
            d.verdict,
            d.score,
            d.reasons,
            d.output.unwrap_or_default()
        ),
        Err(e) => format!("error {}", e.kind()),
    }
}

fn amount_rule(pre: RulePre, settings: serde_json::Value) -> Rule {
    Rule::builder("amount", pre)
        .reads(["order.amount", "order.currency"])
        .settings(settings)
        .build()
        .unwrap()
}

#[test]
fn the_python_amount_rule_decides_as_the_rust_one() {
    let python = engine()
        .load_file(python_guest_path("amount_limit"))
        .unwrap();
    let settings = json!({"max": 10000, "review_above": 5000, "currencies": ["EUR", "USD"]});
    let (py, rs) = (
        amount_rule(python.clone(), settings.clone()),
        amount_rule(guest("amount_limit"), settings),
    );
    let inputs = [
        json!({"order": {"amount": 20, "currency": "EUR"}}),
        json!({"order": {"amount": 7250.5, "currency": "USD"}}),
        json!({"order": {"amount": 12000, "currency": "EUR"}}),
        json!({"order": {"amount": 10, "currency": "JPY"}}),
        json!({"order": {"amount": 0.1}}),
        json!({"order": {"amount": -1}}),
        json!({"order": {"amount": "lots"}}),
        json!({"order": {}}),
    ];
    for input in &inputs {
        assert_eq!(outcome(&py, input), outcome(&rs, input), "{input}");
    }
    // A decision, so the comparison above compared something.
    assert!(outcome(&py, &inputs[2]).starts_with("Deny score=Some(1.2)"));
    assert_eq!(outcome(&py, &inputs[6]), "error invalid-input");

    // Its own errors carry its message; bad settings are the rule's `failed`.
    let bad = amount_rule(python, json!({"maxx": 1}));
    let eval = bad.evaluate(&Input::from_value(inputs[0].clone()).unwrap());
    let err = eval.result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("`maxx`"), "{err}");
    // What an interpreted guest costs, bounded by the default limits it ran under.
    assert!(
        eval.metering.memory_peak_bytes > 1 << 20,
        "{:?}",
        eval.metering
    );
}

/// Hostile Python is contained like hostile Rust: each attack ends with its own error kind
/// (or finds nothing), and the rule next to it keeps deciding.
#[test]
fn hostile_python_is_contained_with_the_right_error_kind() {
    let hostile = engine().load_file(python_guest_path("hostile")).unwrap();
    let with = |what: &str| {
        Rule::builder("hostile", hostile.clone())
            .settings(json!({ "do": what }))
            .build()
            .unwrap()
    };
    let good = amount_rule(guest("amount_limit"), json!({}));
    let order = json!({"order": {"amount": 20}});
    let input = Input::from_value(json!({})).unwrap();
    for (what, kind, says) in [
        ("loop", None, ""),
        ("hog", Some(ErrorKind::MemoryLimit), "over its cap"),
        ("raise", Some(ErrorKind::Trap), "ValueError: told to raise"),
    ] {
        let err = with(what).evaluate(&input).result.unwrap_err();
        match kind {
            Some(kind) => assert_eq!(err.kind(), kind, "{what}: {err}"),
            // Fuel or the deadline, whichever this CPU reaches first.
            None => assert!(err.kind().is_limit(), "{what}: {err}"),
        }
        assert!(err.to_string().contains(says), "{what}: {err}");
        assert!(outcome(&good, &order).starts_with("Allow"), "after {what}");
    }
    // No grants: every path it tries is absent, the root included.
    let probe = with("probe").evaluate(&input).result.unwrap();
    assert_eq!(probe.reasons.len(), 4, "{:?}", probe.reasons);
    for reason in &probe.reasons {
        assert!(reason.ends_with(": FileNotFoundError"), "{reason}");
    }
}
