//! Loading refuses anything that is not a `rulebox:rule@0.1.0` rule, and says why.

use rulebox::{Engine, EngineConfig, ErrorKind, EvalError, Input, LimitsOverride, LoadError, Rule};
use rulebox_tests::{engine, guest, guest_bytes};

#[test]
fn garbage_bytes_are_not_wasm() {
    assert_eq!(
        engine().load(b"#!/bin/sh\necho hi\n").unwrap_err(),
        LoadError::NotWasm
    );
    let err = engine()
        .load(&guest_bytes("amount_limit")[..100])
        .unwrap_err();
    assert!(
        matches!(err, LoadError::Compile(_)),
        "truncated component: {err:?}"
    );
}

#[test]
fn a_core_module_is_named_as_such() {
    // The smallest valid core module: magic, version 1.
    let err = engine().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert_eq!(err, LoadError::CoreModule);
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn a_component_of_another_world_names_what_it_exports() {
    let err = engine().load(&guest_bytes("foreign_world")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "component is not a rulebox:rule@0.1.0 rule: it has no `evaluate` export (it exports: check)"
    );
    let incompatible = EvalError::from(err);
    assert_eq!(incompatible.kind(), ErrorKind::IncompatibleComponent);
}

/// Refused before anything is compiled (nothing reaches the compiled-component cache),
/// naming the import and what to change.
#[test]
fn an_unexpected_import_is_named_before_compiling() {
    let cache = tempfile::tempdir().unwrap();
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..EngineConfig::default()
    })
    .unwrap();
    let err = engine.load(&guest_bytes("foreign_import")).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnexpectedImport { import, .. } if import == "acme:evil/exfil"),
        "{err:?}"
    );
    assert!(err.to_string().contains("drop the import"), "{err}");
    assert_eq!(
        engine.artifact_stats().compiled,
        0,
        "compiled before refusing"
    );
    // Files other than the cache's key (made when the engine starts).
    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.path() {
                    p if p.is_dir() => files(&p),
                    p if p.file_name().is_some_and(|n| n == "key") => 0,
                    _ => 1,
                })
                .sum()
        })
    }
    assert_eq!(
        files(cache.path()),
        0,
        "wrote to the compiled cache before refusing"
    );
}

/// A component whose instance creates more core instances than the pool reserves per rule
/// is refused at load, naming the setting to raise, instead of getting fewer concurrent
/// evaluations than configured.
#[test]
fn a_component_heavier_than_the_pool_reserves_names_the_setting() {
    let tight = Engine::new(EngineConfig {
        core_instances_per_rule: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let err = tight.load(&guest_bytes("amount_limit")).unwrap_err();
    let LoadError::TooManyCoreInstances { needs, limit } = err else {
        panic!("{err:?}");
    };
    assert_eq!(limit, 1);
    assert!(needs > 1, "{needs}");
    assert!(err.to_string().contains("core_instances_per_rule"), "{err}");
    // Exactly enough is enough.
    let fits = Engine::new(EngineConfig {
        core_instances_per_rule: needs,
        ..EngineConfig::default()
    })
    .unwrap();
    let pre = fits.load(&guest_bytes("amount_limit")).unwrap();
    let rule = Rule::builder("amount", pre)
        .reads(["order.amount"])
        .build()
        .unwrap();
    let eval = rule.evaluate(&Input::from_json(r#"{"order": {"amount": 5}}"#).unwrap());
    assert!(eval.result.is_ok(), "{:?}", eval.result);
}

#[test]
fn a_mistyped_evaluate_export_is_refused() {
    let err = engine()
        .load(&guest_bytes("foreign_signature"))
        .unwrap_err();
    assert!(matches!(err, LoadError::MissingExport(_)), "{err:?}");
    assert!(err.to_string().contains("evaluate"), "{err}");
}

#[test]
fn a_good_component_has_a_stable_digest() {
    let a = guest("amount_limit");
    let b = engine().load(&guest_bytes("amount_limit")).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.digest_hex().len(), 64);
    assert_ne!(a.digest(), guest("risk_score").digest());
}

#[test]
fn limits_above_the_host_maximum_are_refused_by_name() {
    let err = Rule::builder("r", guest("amount_limit"))
        .limits(LimitsOverride {
            memory_bytes: Some(8 << 30),
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field, "limits.memory_bytes");
    let rule = Rule::builder("r", guest("amount_limit")).build().unwrap();
    let err = rule
        .with_limits(&LimitsOverride {
            timeout_ms: Some(0),
            ..Default::default()
        })
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "limits.timeout_ms: must be greater than 0");
    let err = Rule::builder("r", guest("amount_limit"))
        .reads(["a..b"])
        .build()
        .err()
        .unwrap();
    assert_eq!(err.field, "reads");
}
