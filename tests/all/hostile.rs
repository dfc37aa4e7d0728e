//! Every hostile rule ends in its own error kind, within its limit, and the same engine then
//! evaluates a good rule correctly.

use rulebox::{ErrorKind, EvalError, Evaluation, Input, LimitsOverride, Rule, Verdict};
use rulebox_tests::guest;
use serde_json::json;
use std::time::{Duration, Instant};

fn run(name: &str, settings: serde_json::Value, limits: LimitsOverride) -> (Evaluation, Duration) {
    let rule = Rule::builder(name, guest(name))
        .settings(settings)
        .limits(limits)
        .build()
        .unwrap();
    let start = Instant::now();
    let eval = rule.evaluate(&Input::from_value(json!({})).unwrap());
    let took = start.elapsed();
    assert_good_rule_still_works();
    (eval, took)
}

fn assert_good_rule_still_works() {
    let rule = Rule::builder("good", guest("amount_limit"))
        .reads(["order.amount"])
        .build()
        .unwrap();
    let d = rule
        .evaluate(&Input::from_value(json!({"order": {"amount": 7}})).unwrap())
        .result
        .expect("a good rule after a hostile one");
    assert_eq!(d.verdict, Verdict::Allow);
}

fn kind(eval: &Evaluation) -> ErrorKind {
    match &eval.result {
        Ok(d) => panic!("{} returned {d:?}", eval.rule),
        Err(e) => e.kind(),
    }
}

/// A deadline must fire near its time: not early, and not seconds late. The slack is wide
/// because CI machines are noisy; what it catches is a deadline that never fires.
fn assert_near_deadline(took: Duration, deadline_ms: u64) {
    assert!(
        took >= Duration::from_millis(deadline_ms),
        "fired early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(deadline_ms + 400),
        "fired late: {took:?}"
    );
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let limits = LimitsOverride {
        timeout_ms: Some(50),
        fuel: Some(10_000_000_000),
        ..Default::default()
    };
    let (eval, took) = run("hostile_infinite_loop", json!({}), limits);
    assert_eq!(kind(&eval), ErrorKind::Timeout);
    assert_eq!(
        eval.result.unwrap_err().to_string(),
        "rule ran past its deadline of 50ms"
    );
    assert_near_deadline(took, 50);
}

#[test]
fn infinite_loop_uses_up_its_fuel() {
    let limits = LimitsOverride {
        fuel: Some(1_000_000),
        timeout_ms: Some(10_000),
        ..Default::default()
    };
    let (eval, _) = run("hostile_infinite_loop", json!({}), limits);
    assert_eq!(kind(&eval), ErrorKind::FuelExhausted);
    assert_eq!(
        eval.metering.fuel, 1_000_000,
        "fuel used is reported as the whole budget"
    );
}

#[test]
fn busy_wait_on_the_clock_hits_the_deadline() {
    let limits = LimitsOverride {
        timeout_ms: Some(80),
        fuel: Some(10_000_000_000),
        ..Default::default()
    };
    let (eval, took) = run("hostile_busy_wait", json!({}), limits);
    assert_eq!(kind(&eval), ErrorKind::Timeout);
    assert_near_deadline(took, 80);
}

#[test]
fn memory_hog_is_refused_at_its_cap() {
    let cap = 16 << 20;
    let limits = LimitsOverride {
        memory_bytes: Some(cap),
        ..Default::default()
    };
    let (eval, _) = run("hostile_memory_hog", json!({}), limits);
    assert_eq!(kind(&eval), ErrorKind::MemoryLimit);
    assert!(eval.metering.memory_peak_bytes <= cap as u64);
    assert!(
        eval.metering.memory_peak_bytes > (cap / 2) as u64,
        "it did grow: {:?}",
        eval.metering
    );
    match eval.result.unwrap_err() {
        EvalError::MemoryLimit { limit, requested } => {
            assert_eq!(limit, cap);
            assert!(requested > cap);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let (eval, _) = run("hostile_recursion", json!({}), LimitsOverride::default());
    assert_eq!(kind(&eval), ErrorKind::StackOverflow);
    // The same code with a bound is fine: the kind is about the recursion, not the rule.
    let (eval, _) = run(
        "hostile_recursion",
        json!({"stop": 500}),
        LimitsOverride::default(),
    );
    assert!(eval.result.is_ok());
}

#[test]
fn panic_message_reaches_the_error() {
    let (eval, _) = run(
        "hostile_panic",
        json!({"code": "c0ffee"}),
        LimitsOverride::default(),
    );
    assert_eq!(kind(&eval), ErrorKind::Trap);
    let message = eval.result.unwrap_err().to_string();
    assert!(
        message.contains("hostile_panic went off (code c0ffee)"),
        "{message}"
    );
}

#[test]
fn huge_reason_is_refused_by_the_output_limit() {
    let (eval, _) = run("hostile_huge_reason", json!({}), LimitsOverride::default());
    assert_eq!(kind(&eval), ErrorKind::OutputTooLarge);
    assert_eq!(
        eval.result.unwrap_err(),
        EvalError::OutputTooLarge {
            size: 8 << 20,
            limit: 1 << 20
        }
    );
    // The limit is the rule's to raise (within the host's maximum).
    let limits = LimitsOverride {
        output_bytes: Some(9 << 20),
        ..Default::default()
    };
    let (eval, _) = run("hostile_huge_reason", json!({}), limits);
    assert_eq!(eval.result.unwrap().reasons[0].len(), 8 << 20);
}

#[test]
fn output_that_is_not_json_is_invalid() {
    let (eval, _) = run("hostile_bad_output", json!({}), LimitsOverride::default());
    assert_eq!(kind(&eval), ErrorKind::InvalidOutput);
    assert!(eval.result.unwrap_err().to_string().contains("{not json"));
}

#[test]
fn hostile_rules_in_parallel_do_not_disturb_good_ones() {
    std::thread::scope(|s| {
        let bad = s.spawn(|| {
            let limits = LimitsOverride {
                timeout_ms: Some(200),
                fuel: Some(10_000_000_000),
                ..Default::default()
            };
            run("hostile_infinite_loop", json!({}), limits).0
        });
        for _ in 0..20 {
            assert_good_rule_still_works();
        }
        assert_eq!(kind(&bad.join().unwrap()), ErrorKind::Timeout);
    });
}

#[test]
fn sleeping_in_the_host_still_hits_the_deadline() {
    let limits = LimitsOverride {
        timeout_ms: Some(60),
        ..Default::default()
    };
    let (eval, took) = run("hostile_sleep", json!({}), limits);
    assert_eq!(kind(&eval), ErrorKind::Timeout);
    assert_near_deadline(took, 60);
    // A short sleep within the deadline is fine.
    let limits = LimitsOverride {
        timeout_ms: Some(2000),
        ..Default::default()
    };
    let (eval, took) = run("hostile_sleep", json!({"seconds": 0}), limits);
    assert!(eval.result.is_ok() && took < Duration::from_millis(2000));
}
