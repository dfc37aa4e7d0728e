//! The example rules through the host, on several inputs each.

use rulebox::{Decision, ErrorKind, Grant, Input, Rule, Upstream, Verdict};
use rulebox_tests::guest;
use serde_json::json;

fn input(v: serde_json::Value) -> Input {
    Input::from_value(v).unwrap()
}

fn amount_limit(settings: serde_json::Value) -> Rule {
    Rule::builder("amount-limit", guest("amount_limit"))
        .reads(["order.amount", "order.currency"])
        .settings(settings)
        .build()
        .unwrap()
}

#[test]
fn amount_limit_decides_on_several_inputs() {
    let rule =
        amount_limit(json!({"max": 1000, "review_above": 500, "currencies": ["EUR", "USD"]}));
    let cases = [
        (
            json!({"order": {"amount": 20, "currency": "EUR"}}),
            Verdict::Allow,
        ),
        (
            json!({"order": {"amount": 600, "currency": "USD"}}),
            Verdict::Review,
        ),
        (
            json!({"order": {"amount": 1000.5, "currency": "EUR"}}),
            Verdict::Deny,
        ),
        (
            json!({"order": {"amount": 10, "currency": "GBP"}}),
            Verdict::Deny,
        ),
        // An unread field does not matter.
        (
            json!({"order": {"amount": 10}, "customer": {"name": "x"}}),
            Verdict::Allow,
        ),
    ];
    for (doc, verdict) in cases {
        let eval = rule.evaluate(&input(doc.clone()));
        let d = eval.result.unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert_eq!(d.verdict, verdict, "{doc}");
        assert!(eval.metering.fuel > 0 && eval.metering.memory_peak_bytes > 0);
    }
    let d = rule
        .evaluate(&input(
            json!({"order": {"amount": 1200, "currency": "EUR"}}),
        ))
        .result
        .unwrap();
    assert_eq!(d.reasons, ["amount 1200 over limit 1000"]);
    assert_eq!(d.score, Some(1.2));
    assert_eq!(d.output, Some(json!({"amount": 1200.0, "max": 1000.0})));
}

#[test]
fn amount_limit_names_bad_input_and_settings() {
    let rule = amount_limit(json!({}));
    let err = rule
        .evaluate(&input(json!({"order": {"amount": "lots"}})))
        .result
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("fact `order.amount`"), "{err}");
    let err = rule
        .evaluate(&input(json!({"order": {}})))
        .result
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid input: missing fact `order.amount`"
    );

    // Settings are parsed at load (the rule's `init`): bad ones refuse the rule, naming the
    // setting, instead of failing every evaluation.
    for (settings, names) in [
        (json!({"max": "high"}), "`max`"),
        (json!({"maxx": 1}), "`maxx`"),
    ] {
        let err = Rule::builder("amount-limit", guest("amount_limit"))
            .reads(["order.amount", "order.currency"])
            .settings(settings)
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("init") && err.contains(names), "{err}");
    }
}

fn sanctions(dir: &std::path::Path) -> Rule {
    Rule::builder("sanctions", guest("sanctions_check"))
        .reads(["customer.country", "payment.beneficiary_country"])
        .grant(Grant {
            host: dir.to_owned(),
            guest: "/data".into(),
        })
        .build()
        .unwrap()
}

#[test]
fn sanctions_check_reads_its_list_through_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sanctioned_countries.txt"),
        "# test list\nKP\nir\n",
    )
    .unwrap();
    let rule = sanctions(dir.path());
    let verdict = |doc| rule.evaluate(&input(doc)).result.unwrap().verdict;
    assert_eq!(
        verdict(json!({"customer": {"country": "DE"}})),
        Verdict::Allow
    );
    assert_eq!(
        verdict(json!({"customer": {"country": "kp"}})),
        Verdict::Deny
    );
    assert_eq!(
        verdict(json!({"customer": {"country": "DE"}, "payment": {"beneficiary_country": "IR"}})),
        Verdict::Deny
    );
    // The list is read once, by the rule's `init` at load: a changed data file takes effect
    // on the next load, not in the rule already loaded (whose evaluations have no grant).
    std::fs::write(dir.path().join("sanctioned_countries.txt"), "DE\n").unwrap();
    assert_eq!(
        verdict(json!({"customer": {"country": "DE"}})),
        Verdict::Allow
    );
    let reloaded = sanctions(dir.path());
    assert!(reloaded.pre().initialized());
    let d = reloaded
        .evaluate(&input(json!({"customer": {"country": "DE"}})))
        .result
        .unwrap();
    assert_eq!(d.verdict, Verdict::Deny);
}

/// The lean build (no WASI) loads its list through the host's `rulebox:rule/grants` and
/// decides as the wasip2 build does; a list path that leaves the grant, or a file over the
/// rule's memory limit, refuses the load with a message naming the path.
#[test]
fn lean_sanctions_check_reads_its_grant_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("sanctioned_countries.txt"), "KP\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "DE\n").unwrap();
    let lean = || {
        rulebox_tests::engine()
            .load(&std::fs::read(rulebox_tests::lean_guest_path("sanctions_check")).unwrap())
            .unwrap()
    };
    assert!(!lean().imports_wasi());
    let build = |settings: serde_json::Value, memory_bytes: Option<usize>| {
        let mut b = Rule::builder("sanctions", lean())
            .reads(["customer.country"])
            .settings(settings)
            .grant(Grant {
                host: data.clone(),
                guest: "/data".into(),
            });
        if let Some(bytes) = memory_bytes {
            b = b.limits(rulebox::LimitsOverride {
                memory_bytes: Some(bytes),
                ..Default::default()
            });
        }
        b.build()
    };
    let rule = build(json!({}), None).unwrap();
    assert!(rule.pre().initialized());
    let verdict = |doc| rule.evaluate(&input(doc)).result.unwrap().verdict;
    assert_eq!(
        verdict(json!({"customer": {"country": "kp"}})),
        Verdict::Deny
    );
    assert_eq!(
        verdict(json!({"customer": {"country": "DE"}})),
        Verdict::Allow
    );

    let refused = |settings: serde_json::Value, memory: Option<usize>, want: &str| {
        let err = build(settings, memory).unwrap_err();
        assert_eq!(err.field, "init");
        assert!(err.message.contains(want), "{err}");
    };
    refused(
        json!({"list": "/data/../outside.txt"}),
        None,
        "cannot read `/data/../outside.txt`: cannot open it",
    );
    refused(
        json!({"list": "/etc/passwd"}),
        None,
        "cannot read `/etc/passwd`: not under any of this rule's grants (/data)",
    );
    let big = "KP\n".repeat(400_000);
    std::fs::write(data.join("big.txt"), &big).unwrap();
    refused(
        json!({"list": "/data/big.txt"}),
        Some(1 << 20),
        "1200000 bytes, more than the rule's memory limit (1048576 bytes)",
    );
}

/// Without its data, the rule's `init` fails at load, with the rule's own message: as a
/// configuration error from the builder, as a compile-step error from a bundle.
#[test]
fn sanctions_check_without_its_data_fails_clearly_at_load() {
    let empty = tempfile::tempdir().unwrap();
    let err = Rule::builder("sanctions", guest("sanctions_check"))
        .grant(Grant {
            host: empty.path().to_owned(),
            guest: "/data".into(),
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field, "init");
    assert!(
        err.message.contains(
            "sanctions list: cannot read `/data/sanctioned_countries.txt`: cannot open it"
        ),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    rulebox_tests::copy_dir(&rulebox_tests::example_bundle("payments"), dir.path());
    std::fs::remove_file(dir.path().join("data/sanctioned_countries.txt")).unwrap();
    let err = rulebox::Bundle::load(rulebox_tests::engine(), dir.path(), &Default::default())
        .unwrap_err();
    assert_eq!(err.step(), rulebox::LoadStep::Compile);
    let text = err.to_string();
    assert!(
        text.contains("rule `sanctions`")
            && text.contains("init: sanctions list: cannot read `/data/sanctioned_countries.txt`"),
        "{text}"
    );
}

#[test]
fn risk_score_uses_facts_and_upstream_decisions() {
    let rule = Rule::builder("risk", guest("risk_score"))
        .reads([
            "order.amount",
            "customer.age_days",
            "customer.verified",
            "order.items",
        ])
        .build()
        .unwrap();
    let doc = input(json!({
        "order": {"amount": 5000, "items": [1, 2, 3]},
        "customer": {"age_days": 10, "verified": false}
    }));
    let d = rule.evaluate(&doc).result.unwrap();
    // 5 (amount) + 20 (new) + 15 (unverified)
    assert_eq!((d.verdict, d.score), (Verdict::Allow, Some(40.0)));
    assert_eq!(
        d.output.as_ref().unwrap()["factors"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let upstream = [Upstream {
        rule: "amount-limit".into(),
        decision: Decision::new(Verdict::Deny),
    }];
    let d = rule.evaluate_with(&doc, &upstream).result.unwrap();
    assert_eq!((d.verdict, d.score), (Verdict::Review, Some(65.0)));

    let upstream = [Upstream {
        rule: "sanctions".into(),
        decision: Decision::new(Verdict::Deny),
    }];
    let d = rule.evaluate_with(&doc, &upstream).result.unwrap();
    assert_eq!((d.verdict, d.score), (Verdict::Deny, Some(100.0)));
}

#[test]
fn one_rule_evaluates_from_many_threads() {
    let rule = amount_limit(json!({"max": 100}));
    std::thread::scope(|s| {
        for t in 0..4 {
            let rule = rule.clone();
            s.spawn(move || {
                for i in 0..50 {
                    let amount = t * 50 + i;
                    let d = rule
                        .evaluate(&input(json!({"order": {"amount": amount}})))
                        .result
                        .unwrap();
                    let want = if amount > 100 {
                        Verdict::Deny
                    } else {
                        Verdict::Allow
                    };
                    assert_eq!(d.verdict, want, "amount {amount}");
                }
            });
        }
    });
}
