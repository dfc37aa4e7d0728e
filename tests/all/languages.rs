//! Rules written in other languages than Rust (`plugins/python/*`, `plugins/js/*` and
//! `plugins/c/*`, built by `sdk/{python,js,c}/build.sh`): they load, decide exactly as the
//! Rust example they mirror, and their failures reach the caller with the right kind.

use rulebox::{ErrorKind, Input, Rule, RulePre};
use rulebox_tests::{c_guest_path, engine, guest, js_guest_path, python_guest_path};
use serde_json::json;

/// What a caller sees of an evaluation: the decision's parts, or the error's kind. Output
/// numbers are compared as numbers: JSON does not tell 7250 from 7250.0, and JavaScript
/// cannot write the second.
fn outcome(rule: &Rule, input: &serde_json::Value) -> String {
    let eval = rule.evaluate(&Input::from_value(input.clone()).unwrap());
    match eval.result {
        Ok(d) => format!(
            "{:?} score={:?} reasons={:?} output={}",
            d.verdict,
            d.score,
            d.reasons,
            as_floats(d.output.unwrap_or_default())
        ),
        Err(e) => format!("error {}", e.kind()),
    }
}

/// `v` with every number as a float.
fn as_floats(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        Value::Array(a) => Value::Array(a.into_iter().map(as_floats).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, as_floats(v))).collect()),
        other => other,
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
    amount_rule_decides_as_the_rust_one(python_guest_path("amount_limit"));
}

#[test]
fn the_javascript_amount_rule_decides_as_the_rust_one() {
    let path = js_guest_path("amount_limit");
    amount_rule_decides_as_the_rust_one(path.clone());
    // Built with every WASI feature off: it imports nothing but rulebox:rule.
    assert!(!engine().load_file(path).unwrap().imports_wasi());
}

/// On QuickJS the component also exports an `init` of its own (componentize-js ran it at
/// build time): it loads, without rulebox's pre-initialization, and decides the same.
#[test]
fn the_quickjs_amount_rule_decides_as_the_rust_one() {
    let path = js_guest_path("amount_limit.qjs");
    amount_rule_decides_as_the_rust_one(path.clone());
    assert!(!engine().load_file(path).unwrap().imports_wasi());
}

/// The C amount rule decides as the Rust one, writes every number as Rust does (the C kit
/// formats doubles itself: printf would import WASI), imports nothing but rulebox:rule, and,
/// as the Rust one, refuses bad settings at load, in its `init`.
#[test]
fn the_c_amount_rule_decides_as_the_rust_one() {
    let path = c_guest_path("amount_limit");
    let pre = engine().load_file(&path).unwrap();
    assert!(!pre.imports_wasi());
    let (c, rs) = (
        amount_rule(pre.clone(), json!({"max": -1})),
        amount_rule(guest("amount_limit"), json!({"max": -1})),
    );
    assert!(c.pre().initialized());
    // Each amount is over the limit of -1, so the reason writes it: "amount X over limit -1".
    for amount in [
        1.0,
        0.1,
        0.1 + 0.2,
        7250.5,
        12000.0,
        1e21,
        1.5e-7,
        123456789.123,
        2.0f64.powi(53) + 2.0,
        5e-324,
        f64::MAX,
        1.0 / 3.0,
        299792.458,
    ] {
        let order = json!({"order": {"amount": amount}});
        assert_eq!(outcome(&c, &order), outcome(&rs, &order), "{amount}");
        let got = outcome(&c, &order);
        assert!(got.contains(&format!("amount {amount} over")), "{got}");
    }
    let err = Rule::builder("amount", pre.clone())
        .settings(json!({"maxx": 1}))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`maxx`"), "{err}");
    decides_as_the_rust_amount_rule(&pre);
}

/// An interpreted amount rule decides as the Rust one, fails evaluations on bad settings
/// (it checks them when it evaluates), and costs what an interpreter costs.
fn amount_rule_decides_as_the_rust_one(path: std::path::PathBuf) {
    let pre = engine().load_file(path).unwrap();
    let inputs = decides_as_the_rust_amount_rule(&pre);

    // Its own errors carry its message; bad settings are the rule's `failed`.
    let bad = amount_rule(pre, json!({"maxx": 1}));
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

/// Decides on varied orders as the Rust amount rule does; returns the orders.
fn decides_as_the_rust_amount_rule(pre: &RulePre) -> Vec<serde_json::Value> {
    let settings = json!({"max": 10000, "review_above": 5000, "currencies": ["EUR", "USD"]});
    let (py, rs) = (
        amount_rule(pre.clone(), settings.clone()),
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
    inputs.to_vec()
}

/// A hostile rule told to `do` one attack, with time enough that a hog meets the memory
/// cap first, also on a loaded host (touching 64 MiB takes tens of milliseconds of CPU).
fn attack(hostile: &RulePre, what: &str) -> Rule {
    Rule::builder("hostile", hostile.clone())
        .settings(json!({ "do": what }))
        .limits(rulebox::LimitsOverride {
            timeout_ms: Some(5000),
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// Each attack ends with its error kind (`None`: a limit, fuel or the deadline, whichever
/// this CPU reaches first) and a message containing the given text, and a Rust rule
/// decides after each.
fn assert_contained(hostile: &RulePre, attacks: &[(&str, Option<ErrorKind>, &str)]) {
    let good = amount_rule(guest("amount_limit"), json!({}));
    let order = json!({"order": {"amount": 20}});
    for &(what, kind, says) in attacks {
        let err = attack(hostile, what)
            .evaluate(&Input::from_value(json!({})).unwrap())
            .result
            .unwrap_err();
        match kind {
            Some(kind) => assert_eq!(err.kind(), kind, "{what}: {err}"),
            None => assert!(err.kind().is_limit(), "{what}: {err}"),
        }
        assert!(err.to_string().contains(says), "{what}: {err}");
        assert!(outcome(&good, &order).starts_with("Allow"), "after {what}");
    }
}

/// Hostile JavaScript, on both engines, is contained like hostile Rust: each attack ends
/// with its own error kind, a thrown error's message reaches the caller, and the rule next
/// to it keeps deciding.
#[test]
fn hostile_javascript_is_contained_with_the_right_error_kind() {
    for build in ["hostile", "hostile.qjs"] {
        assert_contained(
            &engine().load_file(js_guest_path(build)).unwrap(),
            &[
                ("loop", None, ""),
                ("hog", Some(ErrorKind::MemoryLimit), "over its cap"),
                ("throw", Some(ErrorKind::Trap), "RangeError: told to throw"),
            ],
        );
    }
}

/// Hostile Python is contained like hostile Rust: each attack ends with its own error kind
/// (or finds nothing), and the rule next to it keeps deciding.
#[test]
fn hostile_python_is_contained_with_the_right_error_kind() {
    let hostile = engine().load_file(python_guest_path("hostile")).unwrap();
    assert_contained(
        &hostile,
        &[
            ("loop", None, ""),
            ("hog", Some(ErrorKind::MemoryLimit), "over its cap"),
            ("raise", Some(ErrorKind::Trap), "ValueError: told to raise"),
        ],
    );
    // No grants: every path it tries is absent, the root included.
    for reason in probe(&hostile) {
        assert!(reason.ends_with(": FileNotFoundError"), "{reason}");
    }
}

/// What a hostile rule's `probe` found: one line per host path it tried (three files and the
/// root directory).
fn probe(hostile: &RulePre) -> Vec<String> {
    let found = attack(hostile, "probe")
        .evaluate(&Input::from_value(json!({})).unwrap())
        .result
        .unwrap()
        .reasons;
    assert_eq!(found.len(), 4, "{found:?}");
    found
}

/// Hostile C is contained like hostile Rust: a loop meets a limit, a hog the memory cap, an
/// abort and a write far outside its memory trap, a probe of host files finds nothing, and
/// the rule next to it keeps deciding.
#[test]
fn hostile_c_is_contained_with_the_right_error_kind() {
    let hostile = engine().load_file(c_guest_path("hostile")).unwrap();
    assert_contained(
        &hostile,
        &[
            ("loop", None, ""),
            ("hog", Some(ErrorKind::MemoryLimit), "over its cap"),
            ("trap", Some(ErrorKind::Trap), ""),
            ("smash", Some(ErrorKind::Trap), "out of bounds"),
        ],
    );
    for reason in probe(&hostile) {
        assert!(
            !reason.contains(": read ") && !reason.ends_with(": listed"),
            "{reason}"
        );
    }
}

/// The payments bundle with some or all of its rules swapped for builds in other languages,
/// in a temporary directory: `swaps` lists (component file stem, the build's path).
fn payments_with(swaps: &[(&str, std::path::PathBuf)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    rulebox_tests::copy_dir(&rulebox_tests::example_bundle("payments"), dir.path());
    let manifest_path = dir.path().join("bundle.toml");
    let mut manifest = std::fs::read_to_string(&manifest_path).unwrap();
    for (stem, build) in swaps {
        std::fs::copy(build, dir.path().join(format!("rules/{stem}_swapped.wasm"))).unwrap();
        let (from, to) = (
            format!("component = \"rules/{stem}.wasm\""),
            format!("component = \"rules/{stem}_swapped.wasm\""),
        );
        assert!(manifest.contains(&from), "{from}");
        manifest = manifest.replace(&from, &to);
    }
    std::fs::write(manifest_path, manifest).unwrap();
    dir
}

/// Every rule's decision (or error kind) in a bundle result, in order.
fn decisions(r: &rulebox::BundleResult) -> Vec<String> {
    r.rules
        .iter()
        .map(|e| match &e.result {
            Ok(d) => format!(
                "{}: {:?} score={:?} reasons={:?} output={}",
                e.rule,
                d.verdict,
                d.score,
                d.reasons,
                as_floats(d.output.clone().unwrap_or_default())
            ),
            Err(err) => format!("{}: error {}", e.rule, err.kind()),
        })
        .collect()
}

/// The payments bundle in Python alone, in C alone, mixed (a Python rule depending on a Rust
/// one and on a Python one; C beside Rust), in three languages (a JavaScript rule weighing a
/// Python one and a Rust one) and in four (JavaScript weighing Python and C), passes the Rust bundle's golden cases and gives, rule by rule, the Rust bundle's
/// verdicts, scores, reasons and outputs on varied orders.
#[test]
fn payments_in_other_languages_and_mixed_decide_as_in_rust() {
    let rust = rulebox::Bundle::load(
        engine(),
        &rulebox_tests::example_bundle("payments"),
        &rulebox::LoadOptions::default(),
    )
    .unwrap();
    let py = |stem: &'static str| (stem, python_guest_path(stem));
    let python_dir = payments_with(&[py("amount_limit"), py("sanctions_check"), py("risk_score")]);
    let mixed_dir = payments_with(&[py("amount_limit"), py("risk_score")]);
    let three_dir = payments_with(&[
        py("amount_limit"),
        ("risk_score", js_guest_path("risk_score")),
    ]);
    let c = |stem: &'static str| (stem, c_guest_path(stem));
    let c_dir = payments_with(&[c("amount_limit"), c("sanctions_check"), c("risk_score")]);
    // Four languages: C sanctions (loaded once, in its init), a Python amount rule, the
    // JavaScript risk rule weighing both; and C amount beside Rust sanctions.
    let four_dir = payments_with(&[
        c("sanctions_check"),
        py("amount_limit"),
        ("risk_score", js_guest_path("risk_score")),
    ]);
    let c_rust_dir = payments_with(&[c("amount_limit"), c("risk_score")]);
    let rt = rulebox_tests::rt();
    let mut orders = Vec::new();
    for (amount, currency, country, beneficiary, age, verified, items) in [
        (80.0, "EUR", "DE", None, 900, true, 0),
        (7250.0, "EUR", "DE", None, 12, false, 0),
        (10.0, "EUR", "IR", None, 900, true, 0),
        (20.0, "EUR", "DE", Some("kp"), 900, true, 25),
        (12000.0, "USD", "FR", None, 400, true, 0),
        (300.5, "JPY", "US", Some("NL"), 3, false, 0),
        (2500.0, "GBP", "GB", None, 20, false, 30),
    ] {
        let mut doc = json!({
            "order": {"amount": amount, "currency": currency, "items": vec![1; items]},
            "customer": {"country": country, "age_days": age, "verified": verified},
        });
        if let Some(b) = beneficiary {
            doc["payment"] = json!({"beneficiary_country": b});
        }
        orders.push(Input::from_value(doc).unwrap());
    }
    // Bad input reaches every language as the same error kind.
    orders.push(Input::from_value(json!({"order": {"amount": "lots"}})).unwrap());
    for dir in [
        &python_dir,
        &mixed_dir,
        &three_dir,
        &c_dir,
        &four_dir,
        &c_rust_dir,
    ] {
        let bundle =
            rulebox::Bundle::load(engine(), dir.path(), &rulebox::LoadOptions::default()).unwrap();
        let report = rt.block_on(bundle.run_tests());
        assert_eq!((report.cases.len(), report.failed()), (6, 0), "{report:?}");
        for order in &orders {
            let (want, got) = (
                rust.evaluate_sequential(order).unwrap(),
                bundle.evaluate_sequential(order).unwrap(),
            );
            assert_eq!(decisions(&got), decisions(&want));
            assert_eq!(got.verdict, want.verdict);
            // A failed rule's reason carries its SDK's own wording of the error (the kind,
            // compared above, is the contract); decisions' reasons are the same words.
            if want.errors().is_empty() {
                assert_eq!(got.reasons, want.reasons);
            }
        }
    }
}

/// The shipped Python and C example bundles (`plugins/examples/bundles/payments-{python,c}`,
/// assembled by `plugins/build.sh`) load and pass their golden cases, the Rust bundle's.
#[test]
fn the_python_and_c_example_bundles_pass_their_golden_cases() {
    for name in ["payments-python", "payments-c"] {
        let dir = rulebox_tests::example_bundle(name);
        let bundle =
            rulebox::Bundle::load(engine(), &dir, &rulebox::LoadOptions::default()).unwrap();
        assert_eq!(bundle.name(), name);
        let report = rulebox_tests::rt().block_on(bundle.run_tests());
        assert_eq!((report.cases.len(), report.failed()), (6, 0), "{report:?}");
    }
}
