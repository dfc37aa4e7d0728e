//! Lean rules: built for `wasm32-unknown-unknown`, they import nothing but `rulebox:rule`,
//! decide exactly as their wasip2 builds do, grow memory when an evaluation needs more than
//! they start with, and still report why they panicked.

use rulebox::{ErrorKind, Input, Rule, RulePre};
use rulebox_tests::{engine, guest, guest_bytes, lean_guest_path};
use serde_json::json;

fn lean(name: &str) -> RulePre {
    engine()
        .load(&std::fs::read(lean_guest_path(name)).unwrap())
        .unwrap()
}

/// The interfaces a component imports, by name.
fn imports(bytes: &[u8]) -> Vec<String> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
    component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn lean_builds_import_only_the_rule_host() {
    for name in [
        "amount_limit",
        "risk_score",
        "sanctions_check",
        "fixture_echo",
    ] {
        let slim = imports(&std::fs::read(lean_guest_path(name)).unwrap());
        assert!(
            slim.iter().all(|i| i.starts_with("rulebox:rule/")),
            "{name}: {slim:?}"
        );
        // Only a rule that reads its grants imports `grants`: the others run on hosts that
        // predate it.
        let reads_grants = slim.iter().any(|i| i.starts_with("rulebox:rule/grants"));
        assert_eq!(reads_grants, name == "sanctions_check", "{name}: {slim:?}");
        // The wasip2 build of the same crate imports WASI: the comparison means something.
        let full = imports(&guest_bytes(name));
        assert!(
            full.iter().any(|i| i.starts_with("wasi:")),
            "{name}: {full:?}"
        );
        // What the host reads of it: a rule without WASI runs inline in async code without
        // `block_in_place`, so this must not say "no WASI" of a rule that has it.
        assert!(!lean(name).imports_wasi(), "{name}");
        assert!(guest(name).imports_wasi(), "{name}");
    }
}

/// A bundle of lean rules evaluated from async code, inline (measured cheap) and not yet
/// measured, gives what sequential evaluation gives.
#[test]
fn lean_rules_run_inline_in_async_code() {
    let mut manifest = String::from("[bundle]\nformat = 1\nname = \"lean\"\nrevision = \"1\"\n");
    for i in 0..4 {
        manifest.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncomponent = \"echo.wasm\"\nreads = [\"order.amount\"]\n\
             isolation = \"reuse\"\nsettings = {{ tag = {i} }}\n"
        ));
    }
    let dir = rulebox_tests::temp_bundle(&manifest);
    std::fs::copy(
        lean_guest_path("fixture_echo"),
        dir.path().join("echo.wasm"),
    )
    .unwrap();
    let bundle = std::sync::Arc::new(
        rulebox::Bundle::load(engine(), dir.path(), &rulebox::LoadOptions::default()).unwrap(),
    );
    let rt = rulebox_tests::rt();
    let input = Input::from_value(json!({"order": {"amount": 5}})).unwrap();
    let want = bundle.evaluate_sequential(&input).unwrap();
    for _ in 0..5 {
        let got = rt
            .block_on(async {
                tokio::spawn({
                    let (bundle, input) = (bundle.clone(), input.clone());
                    async move { bundle.evaluate(&input).await }
                })
                .await
            })
            .unwrap()
            .unwrap();
        assert!(got.errors().is_empty(), "{:?}", got.errors());
        let outputs = |r: &rulebox::BundleResult| -> Vec<_> {
            r.rules
                .iter()
                .map(|e| e.result.as_ref().unwrap().output.clone().unwrap()["tag"].clone())
                .collect()
        };
        assert_eq!(outputs(&got), outputs(&want));
    }
}

#[test]
fn lean_and_wasip2_builds_decide_alike() {
    let build = |pre: RulePre| {
        Rule::builder("amount", pre)
            .reads(["order.amount", "order.currency"])
            .settings(json!({"max": 10000, "review_above": 5000, "currencies": ["EUR", "USD"]}))
            .build()
            .unwrap()
    };
    let (lean, full) = (build(lean("amount_limit")), build(guest("amount_limit")));
    let inputs = [
        json!({"order": {"amount": 20, "currency": "EUR"}}),
        json!({"order": {"amount": 7250.5, "currency": "USD"}}),
        json!({"order": {"amount": 12000, "currency": "EUR"}}),
        json!({"order": {"amount": 10, "currency": "JPY"}}),
        json!({"order": {"amount": -1}}),
        json!({"order": {"amount": "lots"}}),
        json!({}),
    ];
    for input in inputs {
        let input = Input::from_value(input).unwrap();
        let (a, b) = (lean.evaluate(&input), full.evaluate(&input));
        assert_eq!(a.result, b.result, "on {input:?}");
        assert!(a.metering.fuel > 0, "lean evaluations are metered too");
    }
}

#[test]
fn a_lean_rule_grows_memory_when_an_evaluation_needs_it() {
    // The echo fixture copies its facts into its output: a 600 KiB fact (under the 1 MiB
    // output limit) needs several times the 128 KiB a lean rule starts with.
    let rule = Rule::builder("echo", lean("fixture_echo"))
        .reads(["blob"])
        .build()
        .unwrap();
    let blob = "x".repeat(600 << 10);
    let eval = rule.evaluate(&Input::from_value(json!({ "blob": blob })).unwrap());
    let decision = eval.result.unwrap();
    assert_eq!(decision.output.unwrap()["facts"]["blob"], blob.as_str());
    assert!(
        eval.metering.memory_peak_bytes > 1 << 20,
        "{}",
        eval.metering.memory_peak_bytes
    );
    // And the next evaluation, a fresh instance, starts small again.
    let eval = rule.evaluate(&Input::from_value(json!({ "blob": "y" })).unwrap());
    assert!(eval.result.is_ok());
    assert!(
        eval.metering.memory_peak_bytes <= 128 << 10,
        "{}",
        eval.metering.memory_peak_bytes
    );
}

#[test]
fn a_lean_rule_that_panics_says_why() {
    let rule = Rule::builder("echo", lean("fixture_echo"))
        .settings(json!({"fail": "panic"}))
        .build()
        .unwrap();
    let eval = rule.evaluate(&Input::from_value(json!({})).unwrap());
    let error = eval.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Trap);
    assert!(error.to_string().contains("told to panic"), "{error}");
}
