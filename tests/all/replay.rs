//! Replay (`rulebox::replay`): a candidate revision evaluated on recorded decisions reports
//! exactly what it would change, and refuses to guess where the log masked what it reads.

use rulebox::replay::{Recorded, Replay, ReplayOptions};
use rulebox::{Bundle, Input, LoadOptions};
use rulebox_tests::{engine, example_bundle, payment_orders, payments_variant};

/// Recorded decisions of the payments example on `orders`.
fn record(orders: &[serde_json::Value]) -> Vec<Recorded> {
    let live = Bundle::load(
        engine(),
        &example_bundle("payments"),
        &LoadOptions::default(),
    )
    .unwrap();
    orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let input = Input::from_value(order.clone()).unwrap();
            let result = live.evaluate_sequential(&input).unwrap();
            Recorded::from_result(format!("d{i}"), order.clone(), &result)
        })
        .collect()
}

/// A candidate that lowers the amount limit from 10,000 to 8,000: the replay's matrices
/// equal what the rule's arithmetic says, counted here independently. Orders in
/// (8000, 10000] move from review to deny at the amount rule (it reviews above 5,000), and
/// their final verdict becomes deny (deny overrides); nothing else changes.
#[test]
fn replay_reports_exactly_what_a_lower_limit_changes() {
    let orders = payment_orders(300);
    let recorded = record(&orders);
    let dir = payments_variant(&[("max = 10000", "max = 8000")]);
    let candidate = Bundle::load(engine(), dir.path(), &LoadOptions::default()).unwrap();
    let mut replay = Replay::new(&candidate, ReplayOptions::default());
    for rec in &recorded {
        replay.add(rec);
    }
    let report = replay.finish();

    let amount = |o: &serde_json::Value| o["order"]["amount"].as_f64().unwrap();
    let moved: Vec<usize> = (0..orders.len())
        .filter(|&i| {
            (8000.0..=10000.0).contains(&amount(&orders[i])) && amount(&orders[i]) > 8000.0
        })
        .collect();
    assert!(moved.len() > 20, "the sample must exercise the change");
    let limit = &report.rules["amount-limit"].transitions;
    assert_eq!(limit.count("review", "deny"), moved.len() as u64);
    assert_eq!(limit.changed(), moved.len() as u64, "{limit:?}");
    let mut final_moves = std::collections::BTreeMap::new();
    for &i in &moved {
        if recorded[i].verdict != "deny" {
            *final_moves
                .entry(recorded[i].verdict.clone())
                .or_insert(0u64) += 1;
        }
    }
    assert!(!final_moves.is_empty());
    for (from, n) in &final_moves {
        assert_eq!(report.verdicts.count(from, "deny"), *n, "{from}");
    }
    let changed: u64 = final_moves.values().sum();
    assert_eq!(
        (report.changed, report.verdicts.changed()),
        (changed, changed)
    );
    assert_eq!(report.replayed, 300);
    // Each change names its decision, the rule that moved, and carries the input.
    assert_eq!(report.changes.len() as u64, changed);
    for change in &report.changes {
        let i: usize = change.id[1..].parse().unwrap();
        assert!(moved.contains(&i));
        assert_eq!(change.input, orders[i]);
        assert!(
            change
                .rules
                .contains(&("amount-limit".into(), "review".into(), "deny".into()))
        );
        assert_eq!(change.to, "deny");
    }
    // The other rules did not move; costs were measured on both sides.
    assert_eq!(report.rules["sanctions"].transitions.changed(), 0);
    let cost = &report.rules["amount-limit"].cost;
    assert_eq!((cost.recorded_runs, cost.candidate_runs), (300, 300));
    assert!(
        cost.recorded_fuel > 0.0 && cost.candidate_fuel > 0.0,
        "{cost:?}"
    );
}

/// A field the log masked is gone: a decision whose masked field a candidate rule reads is
/// reported as not replayable (naming the rule and the field), not evaluated on the
/// placeholder; a masked field no rule reads does not stop the replay.
#[test]
fn masked_fields_a_rule_reads_are_not_replayed() {
    let orders = payment_orders(4);
    let mut recorded = record(&orders);
    recorded[0].masked = vec!["/customer/country".into()];
    recorded[0].input["customer"]["country"] = "<erased>".into();
    recorded[1].masked = vec!["/customer/name".into()];
    recorded[2].masked = vec!["/customer".into()];
    let candidate = Bundle::load(
        engine(),
        &example_bundle("payments"),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut replay = Replay::new(&candidate, ReplayOptions::default());
    for rec in &recorded {
        replay.add(rec);
    }
    let report = replay.finish();
    assert_eq!((report.replayed, report.not_replayable), (2, 2));
    let ids: Vec<&str> = report
        .not_replayable_ids
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(ids, ["d0", "d2"]);
    let why = &report.not_replayable_ids[0].1;
    assert!(
        why.contains("`sanctions`") && why.contains("customer.country"),
        "{why}"
    );
    // The same revision replayed: nothing changed.
    assert_eq!(report.changed, 0);
}
