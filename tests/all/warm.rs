//! Warm mode (`Isolation::Reuse`): instances are reused up to their limit, dropped on any
//! error or trap, give the answers fresh instances give, and hostile rules stay contained.

use rulebox::{ErrorKind, Input, Isolation, LimitsOverride, Rule, Verdict};
use rulebox_tests::guest;
use serde_json::json;

fn echo(isolation: Isolation, reuse_limit: u32) -> Rule {
    Rule::builder("echo", guest("fixture_echo"))
        .reads(["fail"])
        .settings(json!({ "count_calls": true }))
        .isolation(isolation)
        .reuse_limit(reuse_limit)
        .build()
        .unwrap()
}

/// The `calls` the echo fixture reports: evaluations its instance has answered.
fn calls(rule: &Rule, input: serde_json::Value) -> Result<u64, ErrorKind> {
    let eval = rule.evaluate(&Input::from_value(input).unwrap());
    match eval.result {
        Ok(d) => Ok(d.output.unwrap()["calls"].as_u64().unwrap()),
        Err(e) => Err(e.kind()),
    }
}

#[test]
fn reused_instances_are_replaced_at_their_limit() {
    let fresh = echo(Isolation::Fresh, 3);
    let seen: Vec<_> = (0..4).map(|_| calls(&fresh, json!({})).unwrap()).collect();
    assert_eq!(seen, [1, 1, 1, 1], "fresh instances remember nothing");

    let warm = echo(Isolation::Reuse, 3);
    let seen: Vec<_> = (0..7).map(|_| calls(&warm, json!({})).unwrap()).collect();
    assert_eq!(
        seen,
        [1, 2, 3, 1, 2, 3, 1],
        "one instance answers 3, then a new one"
    );
}

/// Memory a rule wrote is gone for the next fresh instance, also when the writes are
/// scattered over more separate pages than one scan of written pages reports (the reset
/// copies back the pages the rule wrote, where the kernel can say which). A reused instance
/// shows what the check would catch.
#[test]
fn a_fresh_instance_never_sees_what_an_earlier_one_wrote() {
    let stale = |rule: &Rule| -> u64 {
        let eval = rule.evaluate(&Input::from_value(json!({})).unwrap());
        eval.result.unwrap().output.unwrap()["stale"]
            .as_u64()
            .unwrap()
    };
    // 512 KiB: 64 marked pages, 64 separate regions, past the 256 KiB kept resident.
    for kib in [16, 200, 512] {
        let rule = |isolation| {
            Rule::builder("scribbler", guest("fixture_echo"))
                .settings(json!({ "scribble": kib }))
                .isolation(isolation)
                .build()
                .unwrap()
        };
        let fresh = rule(Isolation::Fresh);
        let seen: Vec<u64> = (0..6).map(|_| stale(&fresh)).collect();
        assert_eq!(
            seen, [0; 6],
            "{kib} KiB: a fresh instance saw earlier writes"
        );

        let warm = rule(Isolation::Reuse);
        assert_eq!(stale(&warm), 0);
        assert!(
            stale(&warm) > 0,
            "{kib} KiB: the reused instance should see its own marks (else this test checks nothing)"
        );
    }
}

#[test]
fn a_reused_instance_is_dropped_after_any_error() {
    let warm = echo(Isolation::Reuse, 100);
    assert_eq!(calls(&warm, json!({})), Ok(1));
    assert_eq!(calls(&warm, json!({})), Ok(2));
    // A rule error and a trap each end the instance.
    assert_eq!(
        calls(&warm, json!({"fail": "failed"})),
        Err(ErrorKind::Failed)
    );
    assert_eq!(calls(&warm, json!({})), Ok(1));
    assert_eq!(calls(&warm, json!({"fail": "panic"})), Err(ErrorKind::Trap));
    assert_eq!(calls(&warm, json!({})), Ok(1));
    assert_eq!(calls(&warm, json!({})), Ok(2));
}

#[test]
fn warm_and_fresh_rules_decide_alike() {
    let rule = |isolation| {
        Rule::builder("amount-limit", guest("amount_limit"))
            .reads(["order.amount", "order.currency"])
            .settings(json!({ "max": 1000, "review_above": 500 }))
            .isolation(isolation)
            .build()
            .unwrap()
    };
    let (fresh, warm) = (rule(Isolation::Fresh), rule(Isolation::Reuse));
    for amount in [1, 499, 501, 999, 1001, 5000, -3, 7, 700, 20000] {
        let input = Input::from_value(json!({"order": {"amount": amount}})).unwrap();
        let (a, b) = (fresh.evaluate(&input), warm.evaluate(&input));
        assert_eq!(
            a.result.map_err(|e| e.kind()),
            b.result.map_err(|e| e.kind()),
            "amount {amount}"
        );
        assert!(b.metering.fuel > 0, "each call is metered");
    }
}

#[test]
fn hostile_rules_in_warm_mode_are_contained_every_time() {
    let limits = LimitsOverride {
        timeout_ms: Some(50),
        fuel: Some(10_000_000_000),
        memory_bytes: Some(16 << 20),
        ..Default::default()
    };
    for (name, expected) in [
        ("hostile_infinite_loop", ErrorKind::Timeout),
        ("hostile_memory_hog", ErrorKind::MemoryLimit),
        ("hostile_panic", ErrorKind::Trap),
    ] {
        let rule = Rule::builder(name, guest(name))
            .limits(limits)
            .isolation(Isolation::Reuse)
            .build()
            .unwrap();
        for round in 0..3 {
            let eval = rule.evaluate(&Input::from_value(json!({})).unwrap());
            assert_eq!(
                eval.result.as_ref().map_err(|e| e.kind()).err(),
                Some(expected),
                "{name}, round {round}: {:?}",
                eval.result
            );
        }
    }
    // And the engine still runs a good rule.
    let good = Rule::builder("good", guest("amount_limit"))
        .reads(["order.amount"])
        .isolation(Isolation::Reuse)
        .build()
        .unwrap();
    let d = good
        .evaluate(&Input::from_value(json!({"order": {"amount": 7}})).unwrap())
        .result
        .unwrap();
    assert_eq!(d.verdict, Verdict::Allow);
}

#[test]
fn a_manifest_opts_a_rule_in_and_a_stray_reuse_limit_is_refused() {
    use rulebox::{Bundle, LoadOptions};
    let engine = rulebox_tests::engine();
    let dir = rulebox_tests::temp_bundle(
        "[bundle]\nformat = 1\nname = \"w\"\nrevision = \"1\"\n\
         [[rule]]\nname = \"warm\"\ncomponent = \"echo.wasm\"\nisolation = \"reuse\"\nreuse_limit = 2\n\
         settings = { count_calls = true }\n\
         [[rule]]\nname = \"cold\"\ncomponent = \"echo.wasm\"\nsettings = { count_calls = true }\n",
    );
    let bundle = Bundle::load(engine, dir.path(), &LoadOptions::default()).unwrap();
    let described = bundle.describe();
    assert_eq!(described.rules[0].isolation, Isolation::Reuse);
    assert_eq!(described.rules[1].isolation, Isolation::Fresh);
    let input = Input::from_value(json!({})).unwrap();
    let counts: Vec<(u64, u64)> = (0..3)
        .map(|_| {
            let r = bundle.evaluate_sequential(&input).unwrap();
            let n = |i: usize| {
                r.rules[i].result.as_ref().unwrap().output.as_ref().unwrap()["calls"]
                    .as_u64()
                    .unwrap()
            };
            (n(0), n(1))
        })
        .collect();
    assert_eq!(counts, [(1, 1), (2, 1), (1, 1)]);

    let dir = rulebox_tests::temp_bundle(
        "[bundle]\nformat = 1\nname = \"w\"\nrevision = \"1\"\n\
         [[rule]]\nname = \"cold\"\ncomponent = \"echo.wasm\"\nreuse_limit = 2\n",
    );
    let err = Bundle::load(engine, dir.path(), &LoadOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cold") && text.contains("reuse_limit") && text.contains("isolation"),
        "{text}"
    );
}

/// Idle warm instances hold instance slots: however many rules opt in, they keep at most
/// half the engine's slots, and a fresh rule still gets an instance.
#[test]
fn warm_rules_never_take_every_instance_slot() {
    let engine = rulebox::Engine::new(rulebox::EngineConfig {
        max_instances: 4,
        max_concurrent_evaluations: 2,
        ..Default::default()
    })
    .unwrap();
    let pre = engine
        .load_file(rulebox_tests::guest_path("fixture_echo"))
        .unwrap();
    let warm: Vec<Rule> = (0..4)
        .map(|i| {
            Rule::builder(format!("warm-{i}"), pre.clone())
                .settings(json!({ "count_calls": true, "tag": i }))
                .isolation(Isolation::Reuse)
                .build()
                .unwrap()
        })
        .collect();
    let empty = Input::from_value(json!({})).unwrap();
    for rule in &warm {
        rule.evaluate(&empty).result.unwrap();
    }
    let fresh = Rule::builder("fresh", pre).build().unwrap();
    for _ in 0..3 {
        let eval = fresh.evaluate(&empty);
        assert!(eval.result.is_ok(), "{:?}", eval.result);
    }
    // Two warm rules kept their instance (the second call is its second); the others start
    // a new one.
    let counts: Vec<u64> = warm.iter().map(|r| calls(r, json!({})).unwrap()).collect();
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 2, "{counts:?}");
}
