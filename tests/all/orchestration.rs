//! Where a bundle's rules run: `evaluate_blocking` (calling thread plus the engine's helper
//! threads) and `evaluate` (inline when cheap) give what `evaluate_sequential` gives.

use rulebox::{Bundle, CacheConfig, Input, LoadOptions, ResultCache};
use rulebox_tests::{engine, example_bundle};
use serde_json::json;
use std::sync::Arc;

fn payments_inputs() -> Vec<Input> {
    let mut out = Vec::new();
    for (amount, currency, country, beneficiary, age, verified) in [
        (80, "EUR", "DE", None, 900, true),
        (7250, "EUR", "DE", None, 12, false),
        (10, "EUR", "IR", None, 900, true),
        (20, "EUR", "DE", Some("KP"), 900, true),
        (12000, "USD", "FR", None, 400, true),
        (300, "JPY", "US", Some("NL"), 3, false),
        (4200, "GBP", "GB", None, 20, false),
    ] {
        let mut doc = json!({
            "order": {"amount": amount, "currency": currency},
            "customer": {"country": country, "age_days": age, "verified": verified},
        });
        if let Some(b) = beneficiary {
            doc["payment"] = json!({"beneficiary_country": b});
        }
        out.push(Input::from_value(doc).unwrap());
    }
    out
}

/// The comparable part of a result: verdict, reasons, and each rule's decision or error kind.
fn summary(r: &rulebox::BundleResult) -> String {
    let rules: Vec<String> = r
        .rules
        .iter()
        .map(|e| match &e.result {
            Ok(d) => format!("{}={:?}/{:?}/{:?}", e.rule, d.verdict, d.score, d.reasons),
            Err(err) => format!("{}={}", e.rule, err.kind()),
        })
        .collect();
    format!("{:?} {:?} {}", r.verdict, r.reasons, rules.join(" "))
}

#[test]
fn blocking_and_async_evaluation_agree_with_sequential() {
    for cached in [false, true] {
        let options = LoadOptions {
            cache: cached.then(|| Arc::new(ResultCache::new(CacheConfig::default()).unwrap())),
            ..LoadOptions::default()
        };
        let bundle = Bundle::load(engine(), &example_bundle("payments"), &options).unwrap();
        let rt = rulebox_tests::rt();
        // Three rounds: unmeasured rules (shared with helpers), then measured ones (cheap
        // layers run in place), and with the cache, hits.
        for round in 0..3 {
            for input in payments_inputs() {
                let want = summary(&bundle.evaluate_sequential(&input).unwrap());
                let blocking = bundle.evaluate_blocking(&input).unwrap();
                assert!(blocking.errors().is_empty(), "{:?}", blocking.errors());
                assert_eq!(summary(&blocking), want, "blocking, round {round}");
                let evaluated = rt.block_on(bundle.evaluate(&input)).unwrap();
                assert_eq!(summary(&evaluated), want, "async, round {round}");
            }
        }
    }
}

/// A wide layer of rules that each cost something runs on the calling thread and the
/// helpers, from a plain thread with no runtime and from async code (one blocking-pool
/// task sharing the layer with the helpers); every rule answers, in the manifest's order.
#[test]
fn a_wide_layer_is_shared_with_helper_threads() {
    let mut manifest = String::from("[bundle]\nformat = 1\nname = \"wide\"\nrevision = \"1\"\n");
    for i in 0..8 {
        manifest.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncomponent = \"echo.wasm\"\nsettings = {{ work = 200000, tag = {i} }}\n\
             cache = {{ strategy = \"none\" }}\n"
        ));
    }
    let dir = rulebox_tests::temp_bundle(&manifest);
    let bundle = Arc::new(Bundle::load(engine(), dir.path(), &LoadOptions::default()).unwrap());
    let input = Input::from_value(json!({})).unwrap();
    let rt = rulebox_tests::rt();
    for round in 0..6 {
        let r = if round % 2 == 0 {
            std::thread::spawn({
                let (bundle, input) = (bundle.clone(), input.clone());
                move || bundle.evaluate_blocking(&input).unwrap()
            })
            .join()
            .unwrap()
        } else {
            rt.block_on(bundle.evaluate(&input)).unwrap()
        };
        assert!(r.errors().is_empty(), "{:?}", r.errors());
        let tags: Vec<_> = r
            .rules
            .iter()
            .map(|e| e.result.as_ref().unwrap().output.as_ref().unwrap()["tag"].clone())
            .collect();
        assert_eq!(tags, (0..8).map(|i| json!(i)).collect::<Vec<_>>());
    }
}
