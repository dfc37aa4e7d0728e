//! Loading refuses anything that is not a `rulebox:rule@0.1.0` rule, and says why.

use rulebox::{ErrorKind, EvalError, LimitsOverride, LoadError, Rule};
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

#[test]
fn an_unexpected_import_is_named() {
    let err = engine().load(&guest_bytes("foreign_import")).unwrap_err();
    assert_eq!(err, LoadError::UnexpectedImport("acme:evil/exfil".into()));
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
