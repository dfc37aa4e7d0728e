//! The `rulebox` binary: its JSON output and exit codes are a public interface.

use std::process::{Command, Output, Stdio};

fn rulebox(args: &[&str], stdin: Option<&str>) -> (i32, serde_json::Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rulebox"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&stdout).unwrap_or(serde_json::Value::Null);
    (
        status.code().unwrap(),
        json,
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn guest(name: &str) -> String {
    rulebox_tests::guest_path(name).display().to_string()
}

fn order() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/examples/order.json"
    )
    .to_owned()
}

#[test]
fn eval_prints_a_decision_and_exits_0() {
    let rule = guest("amount_limit");
    let (code, out, err) = rulebox(
        &[
            "eval",
            "--rule",
            &rule,
            "--input",
            &order(),
            "--reads",
            "order.amount,order.currency",
            "--settings",
            r#"{"max":5000}"#,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["rule"], "amount_limit");
    assert_eq!(out["ok"], true);
    assert_eq!(out["decision"]["verdict"], "deny");
    assert_eq!(out["decision"]["reasons"][0], "amount 7250 over limit 5000");
    assert_eq!(out["decision"]["output"]["max"], 5000.0);
    assert!(out["metering"]["fuel"].as_u64().unwrap() > 0);
    assert!(out["metering"]["wall_us"].is_u64());
    assert!(out["metering"]["memory_peak_bytes"].as_u64().unwrap() > 0);
    assert!(out.get("error").is_none());
}

#[test]
fn eval_reads_stdin_and_reports_errors_with_exit_1() {
    let rule = guest("amount_limit");
    let (code, out, _) = rulebox(
        &[
            "eval",
            "--rule",
            &rule,
            "--input",
            "-",
            "--reads",
            "order.amount",
        ],
        Some(r#"{"order":{}}"#),
    );
    assert_eq!(code, 1);
    assert_eq!(out["ok"], false);
    assert_eq!(out["error"]["kind"], "invalid-input");
    assert_eq!(
        out["error"]["message"],
        "invalid input: missing fact `order.amount`"
    );

    let spin = guest("hostile_infinite_loop");
    let (code, out, _) = rulebox(
        &[
            "eval",
            "--rule",
            &spin,
            "--input",
            "-",
            "--timeout",
            "30",
            "--fuel",
            "5000000000",
        ],
        Some("{}"),
    );
    assert_eq!(code, 1);
    assert_eq!(out["error"]["kind"], "timeout");
}

#[test]
fn eval_of_a_non_rule_is_incompatible_component() {
    let other = guest("foreign_world");
    let (code, out, _) = rulebox(&["eval", "--rule", &other, "--input", "-"], Some("{}"));
    assert_eq!(code, 1);
    assert_eq!(out["error"]["kind"], "incompatible-component");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no `evaluate` export")
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let rule = guest("amount_limit");
    let (code, _, err) = rulebox(
        &["eval", "--rule", &rule, "--input", "-"],
        Some("[not json"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("input -"), "{err}");
    let (code, _, err) = rulebox(&["eval", "--rule", "/nope.wasm", "--input", &order()], None);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read rule /nope.wasm"), "{err}");
    let (code, _, err) = rulebox(
        &[
            "eval",
            "--rule",
            &rule,
            "--input",
            &order(),
            "--memory",
            "99999999999",
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("limits.memory_bytes"), "{err}");
    let (code, _, _) = rulebox(&["eval", "--bogus"], None);
    assert_eq!(code, 2);
}

#[test]
fn bench_reports_cost() {
    let rule = guest("amount_limit");
    let (code, out, err) = rulebox(
        &[
            "bench",
            "--rule",
            &rule,
            "--input",
            &order(),
            "--reads",
            "order.amount",
            "--iterations",
            "50",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let median = out["per_eval_ns"].as_u64().unwrap();
    assert!(median > 0 && median <= out["p99_ns"].as_u64().unwrap());
    assert!(out["fuel"].as_u64().unwrap() > 0);
    assert_eq!(out["outcome"], "deny");
}
