//! The sandbox is closed: no env, no args, no files but read-only grants.

use rulebox::{Grant, Input, Rule};
use rulebox_tests::guest;
use serde_json::{Value, json};

fn escape(settings: Value, grants: Vec<Grant>) -> Value {
    let mut b = Rule::builder("escape", guest("hostile_escape")).settings(settings);
    for g in grants {
        b = b.grant(g);
    }
    let eval = b
        .build()
        .unwrap()
        .evaluate(&Input::from_value(json!({})).unwrap());
    eval.result
        .expect("the escape rule reports, it does not fail")
        .output
        .unwrap()
}

#[test]
fn nothing_of_the_host_is_visible_without_grants() {
    let seen = escape(json!({}), vec![]);
    assert_eq!(seen["env"], json!([]), "environment leaked");
    assert_eq!(seen["args"], json!([]), "arguments leaked");
    assert!(seen["read"]["/etc/passwd"]["err"].is_string(), "{seen}");
    assert!(seen["list"]["/"]["err"].is_string(), "{seen}");
    assert!(seen["list"]["."]["err"].is_string(), "{seen}");
}

#[test]
fn a_grant_is_readable_inside_and_closed_outside() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("inside.txt"), "visible").unwrap();
    std::fs::write(root.path().join("outside.txt"), "secret").unwrap();
    let seen = escape(
        json!({
            "read": ["/data/inside.txt", "/data/../outside.txt", "/outside.txt", "/etc/passwd"],
            "list": ["/data", "/"],
            "write": ["/data/inside.txt", "/data/new.txt"],
        }),
        vec![Grant {
            host: data.clone(),
            guest: "/data".into(),
        }],
    );
    assert_eq!(seen["read"]["/data/inside.txt"]["ok"], "visible");
    for outside in ["/data/../outside.txt", "/outside.txt", "/etc/passwd"] {
        assert!(
            seen["read"][outside]["err"].is_string(),
            "{outside} readable: {seen}"
        );
    }
    assert_eq!(seen["list"]["/data"]["ok"], json!(["inside.txt"]));
    assert!(seen["list"]["/"]["err"].is_string());
    for w in ["/data/inside.txt", "/data/new.txt"] {
        assert!(seen["write"][w]["err"].is_string(), "{w} writable: {seen}");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("inside.txt")).unwrap(),
        "visible"
    );
    assert!(!data.join("new.txt").exists());
}

#[test]
fn grant_configuration_is_checked() {
    let err = Rule::builder("r", guest("hostile_escape"))
        .grant(Grant {
            host: "/definitely/not/here".into(),
            guest: "/data".into(),
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field, "grants[0]");
    let dir = tempfile::tempdir().unwrap();
    let err = Rule::builder("r", guest("hostile_escape"))
        .grant(Grant {
            host: dir.path().into(),
            guest: "data/../..".into(),
        })
        .build()
        .unwrap_err();
    assert!(err.message.contains("must be absolute"), "{err}");
    assert_eq!(Grant::parse("/a/b:/data").unwrap().guest, "/data");
    assert!(Grant::parse("nocolon").is_err());
}
