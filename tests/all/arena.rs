//! The SDK's per-evaluation arena, inside real guests (both builds of the echo fixture): an
//! evaluation's blocks come from it, `persistent` state and the shared settings do not, and
//! in a reused instance it starts over, so every evaluation allocates from the same place.

use rulebox::{Input, Isolation, Rule, RulePre};
use rulebox_tests::{engine, guest, lean_guest_path};
use serde_json::{Value, json};

fn probe(pre: RulePre, isolation: Isolation) -> Vec<Value> {
    let rule = Rule::builder("echo", pre)
        .settings(json!({ "probe_arena": true }))
        .isolation(isolation)
        .build()
        .unwrap();
    let input = Input::from_value(json!({})).unwrap();
    (0..3)
        .map(|_| {
            let d = rule.evaluate(&input).result.unwrap();
            d.output.unwrap()["arena"].clone()
        })
        .collect()
}

#[test]
fn evaluations_allocate_from_the_arena_and_lasting_state_does_not() {
    let lean = || {
        engine()
            .load(&std::fs::read(lean_guest_path("fixture_echo")).unwrap())
            .unwrap()
    };
    for (build, pre) in [("wasip2", guest("fixture_echo")), ("lean", lean())] {
        for isolation in [Isolation::Fresh, Isolation::Reuse] {
            let seen = probe(pre.clone(), isolation);
            for arena in &seen {
                assert_eq!(arena["evaluation"], true, "{build} {isolation:?}: {arena}");
                assert_eq!(arena["persistent"], false, "{build} {isolation:?}: {arena}");
                assert_eq!(arena["settings"], false, "{build} {isolation:?}: {arena}");
            }
            // A reused instance's later evaluations start where its first did: nothing of
            // an evaluation stays in the arena.
            let first: Vec<&Value> = seen.iter().map(|a| &a["first"]).collect();
            assert!(
                first.iter().all(|f| *f == first[0]),
                "{build} {isolation:?}: {first:?}"
            );
        }
    }
}
