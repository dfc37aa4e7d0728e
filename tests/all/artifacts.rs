//! The compiled-component cache: a second engine on the same directory compiles nothing; a
//! corrupt or truncated entry is discarded and recompiled, never trusted.

use rulebox::{Bundle, Engine, EngineConfig, Input, LoadOptions, Verdict};
use rulebox_tests::{example_bundle, guest_bytes};

fn engine_with_cache(dir: &std::path::Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(dir.to_owned()),
        ..EngineConfig::default()
    })
    .unwrap()
}

#[test]
fn concurrent_loads_of_one_component_compile_it_once() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let bytes = guest_bytes("amount_limit");
    let start = std::sync::Barrier::new(4);
    let pres: Vec<_> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    engine.load(&bytes).unwrap()
                })
            })
            .collect();
        loads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let stats = engine.artifact_stats();
    assert_eq!((stats.compiled, stats.memory_hits), (1, 3), "{stats:?}");
    assert!(pres.iter().all(|p| p.digest() == pres[0].digest()));
    // Two bundles sharing the component, loaded at once: still compiled once in all.
    let engine = Engine::new(EngineConfig::default()).unwrap();
    std::thread::scope(|s| {
        let loads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    Bundle::load(
                        &engine,
                        &example_bundle("payments"),
                        &LoadOptions::default(),
                    )
                    .unwrap()
                })
            })
            .collect();
        for l in loads {
            l.join().unwrap();
        }
    });
    // Three components. (The sanctions rule's snapshot after its `init` is compiled per
    // load, outside this cache.)
    assert_eq!(
        engine.artifact_stats().compiled,
        3,
        "{:?}",
        engine.artifact_stats()
    );
}

#[test]
fn a_restart_loads_compiled_components_from_disk() {
    let cache = tempfile::tempdir().unwrap();
    let cold = engine_with_cache(cache.path());
    let b = Bundle::load(&cold, &example_bundle("payments"), &LoadOptions::default()).unwrap();
    // Three components; the sanctions rule's snapshot after `init` stays out of the cache.
    assert_eq!(cold.artifact_stats().compiled, 3);
    // The same component again in this engine: a memory hit while the first is alive.
    let amount = std::fs::read(example_bundle("payments").join("rules/amount_limit.wasm")).unwrap();
    let _again = cold.load(&amount).unwrap();
    assert_eq!(cold.artifact_stats().memory_hits, 1);
    drop(b);

    let warm = engine_with_cache(cache.path());
    let b = Bundle::load(&warm, &example_bundle("payments"), &LoadOptions::default()).unwrap();
    let stats = warm.artifact_stats();
    // The components come from disk; the snapshot is taken (and compiled) again, in memory.
    assert_eq!((stats.compiled, stats.disk_hits, stats.rejected), (0, 3, 0));
    // A snapshot is never byte-identical to the last: its entries would only pile up.
    let entries = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count();
    assert_eq!(entries, 3, "one entry per component, none per snapshot");
    let doc = Input::from_json(r#"{"order":{"amount":20,"currency":"EUR"},"customer":{"country":"DE","age_days":900,"verified":true}}"#).unwrap();
    assert_eq!(b.evaluate_sequential(&doc).unwrap().verdict, Verdict::Allow);
}

#[test]
fn corrupt_or_truncated_entries_are_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = guest_bytes("amount_limit");
    engine_with_cache(cache.path()).load(&bytes).unwrap();
    let artifact = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an artifact was written");

    // Flip a byte in the middle of the machine code.
    let mut code = std::fs::read(&artifact).unwrap();
    let mid = code.len() / 2;
    code[mid] ^= 0xff;
    std::fs::write(&artifact, &code).unwrap();
    let engine = engine_with_cache(cache.path());
    let pre = engine.load(&bytes).unwrap();
    let stats = engine.artifact_stats();
    assert_eq!((stats.rejected, stats.compiled, stats.disk_hits), (1, 1, 0));
    let rule = rulebox::Rule::builder("a", pre)
        .reads(["order.amount"])
        .build()
        .unwrap();
    assert!(
        rule.evaluate(&Input::from_json(r#"{"order":{"amount":1}}"#).unwrap())
            .result
            .is_ok()
    );

    // The entry was rewritten whole: a third engine uses it.
    let engine = engine_with_cache(cache.path());
    engine.load(&bytes).unwrap();
    assert_eq!(engine.artifact_stats().disk_hits, 1);

    // Truncated.
    let len = std::fs::metadata(&artifact).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&artifact)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let engine = engine_with_cache(cache.path());
    engine.load(&bytes).unwrap();
    assert_eq!(engine.artifact_stats().rejected, 1);

    // Tag file missing.
    let sum = artifact.with_extension("cwasm.mac");
    std::fs::remove_file(&sum).unwrap();
    let engine = engine_with_cache(cache.path());
    engine.load(&bytes).unwrap();
    assert_eq!(
        (
            engine.artifact_stats().rejected,
            engine.artifact_stats().compiled
        ),
        (1, 1)
    );
}
