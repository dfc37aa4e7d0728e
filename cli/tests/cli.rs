//! The `rulebox` binary: its JSON output and exit codes are a public interface.

use std::path::Path;
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
    // A duplicate key: a proxy would read one amount, the rule another.
    let (code, _, err) = rulebox(
        &[
            "eval",
            "--rule",
            &rule,
            "--input",
            "-",
            "--reads",
            "order.amount",
        ],
        Some(r#"{"order": {"amount": 999999, "currency": "EUR", "amount": 20}}"#),
    );
    assert_eq!(code, 2);
    assert!(err.contains("duplicate key `amount`"), "{err}");
    // A byte-order mark is skipped.
    let (code, out, err) = rulebox(
        &[
            "eval",
            "--rule",
            &rule,
            "--input",
            "-",
            "--reads",
            "order.amount",
        ],
        Some("\u{feff}{\"order\": {\"amount\": 20}}"),
    );
    assert_eq!(
        (code, out["decision"]["verdict"].as_str()),
        (0, Some("allow")),
        "{err}"
    );
}

#[test]
fn eval_refuses_flags_that_do_not_apply_instead_of_dropping_them() {
    let (bundle, rule, input) = (payments(), guest("amount_limit"), order());
    // Rule flags with --bundle (its bundle.toml decides), bundle flags with --rule.
    let on_bundle = ["--bundle", bundle.as_str()];
    let on_rule = ["--rule", rule.as_str()];
    let cases: [(&[&str], &str, [&str; 2]); 9] = [
        (&["--fuel", "1"], "--fuel", on_bundle),
        (&["--timeout", "5"], "--timeout", on_bundle),
        (&["--memory", "65536"], "--memory", on_bundle),
        (&["--reads", "order.amount"], "--reads", on_bundle),
        (&["--settings", "{}"], "--settings", on_bundle),
        (&["--grant", "/tmp:/data"], "--grant", on_bundle),
        (&["--trusted", "k.pub"], "--trusted", on_rule),
        (&["--require-signature"], "--require-signature", on_rule),
        (&["--redis", "redis://127.0.0.1:1/0"], "--redis", on_rule),
    ];
    for (extra, flag, target) in cases {
        let mut args = vec![
            "--no-cache",
            "eval",
            target[0],
            target[1],
            "--input",
            &input,
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = rulebox(&args, None);
        assert_eq!(code, 2, "{args:?} ran: {out}");
        assert!(
            err.contains(&format!("{flag} cannot be used with {}", target[0])),
            "{args:?}: {err}"
        );
    }
    // Exactly one of --rule and --bundle.
    let (code, _, err) = rulebox(
        &[
            "eval", "--rule", &rule, "--bundle", &bundle, "--input", &input,
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _, err) = rulebox(&["eval", "--input", &input], None);
    assert_eq!(code, 2);
    assert!(err.contains("--rule") && err.contains("--bundle"), "{err}");
    // RULEBOX_REDIS_URL set for a whole shell does not make `eval --rule` a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args(["eval", "--rule", &rule, "--input", &input])
        .env("RULEBOX_REDIS_URL", "redis://127.0.0.1:1/0")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""rule": "amount_limit""#));
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
    assert_eq!(out["read_clock"], 0);
    assert!(out["uncacheable"].is_null(), "{out}");

    // A rule that reads the clock on every call is told why it would never be cached.
    let (code, out, err) = rulebox(
        &[
            "bench",
            "--rule",
            &guest("fixture_echo"),
            "--input",
            &order(),
            "--settings",
            r#"{"read_clock": true}"#,
            "--iterations",
            "20",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["read_clock"], 22, "20 timed and 2 warm-up evaluations");
    let why = out["uncacheable"].as_str().unwrap();
    assert!(
        why.contains("22 of 22")
            && why.contains("never cached")
            && why.contains("--disable clocks"),
        "{why}"
    );
}

fn payments() -> String {
    rulebox_tests::example_bundle("payments")
        .display()
        .to_string()
}

#[test]
fn eval_bundle_prints_the_combined_result() {
    let (code, out, err) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            &payments(),
            "--input",
            &order(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["bundle"], "payments");
    assert_eq!(out["revision"], "2026.11.22-1");
    assert_eq!(out["verdict"], "review");
    assert_eq!(out["reasons"][1], "risk: risk score 67 at or above 50");
    let rules = out["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    for r in rules {
        for key in ["rule", "ok", "decision", "metering"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            "/no/bundle",
            "--input",
            &order(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert_eq!(out["error"]["step"], "read");
}

#[test]
fn test_runs_golden_cases_and_fails_on_a_mismatch() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    let (code, _, _) = rulebox(&["--cache-dir", cache, "test", &payments()], None);
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args(["--cache-dir", cache, "test", &payments()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("ok     rule amount-limit        over the limit"),
        "{table}"
    );
    assert!(table.trim_end().ends_with("6 passed, 0 failed"), "{table}");

    let broken = tempfile::tempdir().unwrap();
    rulebox_tests::copy_dir(Path::new(&payments()), broken.path());
    let manifest = std::fs::read_to_string(broken.path().join("bundle.toml")).unwrap();
    std::fs::write(
        broken.path().join("bundle.toml"),
        manifest.replacen("verdict = \"allow\"", "verdict = \"deny\"", 1),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args(["--cache-dir", cache, "test"])
        .arg(broken.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("FAIL   rule amount-limit        small order"),
        "{table}"
    );
    assert!(table.contains("5 passed, 1 failed"), "{table}");
}

#[test]
fn keygen_pack_sign_verify_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| tmp.path().join(p).display().to_string();
    let (code, out, err) = rulebox(&["bundle", "keygen", &t("ops")], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["key"].as_str().unwrap().len(), 64);
    let (code, _, err) = rulebox(&["bundle", "keygen", &t("ops")], None);
    assert_eq!(code, 2, "an existing key is never overwritten");
    assert!(err.contains("never overwritten"), "{err}");

    let (code, out, err) = rulebox(
        &[
            "bundle",
            "pack",
            &payments(),
            "-o",
            &t("p.tar.gz"),
            "--key",
            &t("ops.key"),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["signed"], true);
    let (code, out, _) = rulebox(
        &[
            "bundle",
            "verify",
            &t("p.tar.gz"),
            "--trusted",
            &t("ops.pub"),
        ],
        None,
    );
    assert_eq!((code, &out["valid"]), (0, &serde_json::json!(true)));

    rulebox(&["bundle", "keygen", &t("other")], None);
    let (code, out, _) = rulebox(
        &[
            "bundle",
            "verify",
            &t("p.tar.gz"),
            "--trusted",
            &t("other.pub"),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(out["error"].as_str().unwrap().contains("untrusted key"));

    // Re-signing an archive with another key makes it verify under that key.
    let (code, _, err) = rulebox(
        &["bundle", "sign", &t("p.tar.gz"), "--key", &t("other.key")],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = rulebox(
        &[
            "bundle",
            "verify",
            &t("p.tar.gz"),
            "--trusted",
            &t("other.pub"),
        ],
        None,
    );
    assert_eq!(code, 0);

    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            &t("p.tar.gz"),
            "--input",
            &order(),
            "--require-signature",
            "--trusted",
            &t("other.pub"),
        ],
        None,
    );
    assert_eq!((code, out["verdict"].as_str()), (0, Some("review")));
    assert_eq!(out["signed"], true);
    // --trusted alone requires a signature: an unsigned bundle is refused at verify.
    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            &payments(),
            "--input",
            &order(),
            "--trusted",
            &t("other.pub"),
        ],
        None,
    );
    assert_eq!((code, out["error"]["step"].as_str()), (1, Some("verify")));
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not signed"),
        "{out}"
    );
    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            &payments(),
            "--input",
            &order(),
        ],
        None,
    );
    assert_eq!((code, &out["signed"]), (0, &serde_json::json!(false)));
    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "eval",
            "--bundle",
            &t("p.tar.gz"),
            "--input",
            &order(),
            "--require-signature",
            "--trusted",
            &t("ops.pub"),
        ],
        None,
    );
    assert_eq!((code, out["error"]["step"].as_str()), (1, Some("verify")));

    let (code, out, _) = rulebox(&["--no-cache", "bundle", "inspect", &t("p.tar.gz")], None);
    assert_eq!(code, 0);
    assert_eq!(
        (&out["signed"], &out["signature_file"]),
        (&serde_json::json!(false), &serde_json::json!(true))
    );
    let (code, out, _) = rulebox(
        &[
            "--no-cache",
            "bundle",
            "inspect",
            &t("p.tar.gz"),
            "--trusted",
            &t("other.pub"),
        ],
        None,
    );
    assert_eq!((code, &out["signed"]), (0, &serde_json::json!(true)));
    assert_eq!(
        out["layers"],
        serde_json::json!([["amount-limit", "sanctions"], ["risk"]])
    );
    assert_eq!(
        out["rules"][2]["depends_on"],
        serde_json::json!(["amount-limit", "sanctions"])
    );
    assert_eq!(out["rules"][0]["limits"]["timeout_ms"], 50);
}

#[test]
fn eval_with_a_shared_cache_and_invalidate_it() {
    let redis = rulebox_tests::RedisServer::start();
    let url = redis.url();
    let eval = || {
        rulebox(
            &[
                "--no-cache",
                "eval",
                "--bundle",
                &payments(),
                "--input",
                &order(),
                "--redis",
                &url,
            ],
            None,
        )
    };
    let (code, first, err) = eval();
    assert_eq!(code, 0, "{err}");
    assert!(
        first["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["cached"] == false)
    );
    // sanctions has a grant: not cached by default; the other two are.
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "2");
    let (_, second, _) = eval();
    let cached: Vec<bool> = second["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(cached, [true, false, true]);
    assert_eq!(second["verdict"], first["verdict"]);

    let (code, _, err) = rulebox(
        &[
            "cache",
            "invalidate",
            "--redis",
            &url,
            "--bundle",
            "payments",
            "--rule",
            "risk",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "1");
    let (code, _, _) = rulebox(&["cache", "invalidate", "--redis", &url], None);
    assert_eq!(code, 0);
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
    let (code, _, err) = rulebox(
        &["cache", "invalidate", "--redis", "redis://127.0.0.1:1/0"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("Redis did not answer"), "{err}");
    assert!(err.contains("nothing was invalidated"), "{err}");
}

/// Evaluates `rule` with JSON logs on and returns the first log event whose line contains
/// `needle`.
fn logged_event(rule: &str, input: &str, stdin: Option<&str>, needle: &str) -> serde_json::Value {
    let rule = guest(rule);
    let args = [
        "--log",
        "rulebox=info",
        "--log-json",
        "eval",
        "--rule",
        &rule,
        "--input",
        input,
        "--reads",
        "order.amount",
    ];
    let (code, _, err) = rulebox(&args, stdin);
    assert_eq!(code, 0, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in the log: {err}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn each_evaluation_is_logged_as_a_span_with_its_outcome_and_cost() {
    let event = logged_event("amount_limit", &order(), None, "\"evaluate\"");
    let span = &event["span"];
    assert_eq!(span["rule"], "amount_limit");
    assert_eq!(span["outcome"], "deny");
    assert!(span["fuel"].as_u64().unwrap() > 0, "{event}");
    assert!(span.get("wall_us").is_some(), "{event}");
}

#[test]
fn what_a_rule_prints_is_logged_under_its_name() {
    let event = logged_event(
        "hostile_escape",
        "-",
        Some("{}"),
        "escape attempt on stdout",
    );
    assert_eq!(event["fields"]["rule"], "hostile_escape");
    assert_eq!(event["fields"]["stream"], "stdout");
}

#[test]
fn token_new_prints_a_token_and_the_hash_to_configure() {
    use sha2::Digest;
    let (code, out, err) = rulebox(&["token", "new"], None);
    assert_eq!(code, 0, "{err}");
    let token = out["token"].as_str().unwrap();
    assert!(token.starts_with("rbx_") && token.len() == 68, "{token}");
    assert_eq!(
        out["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    );
}

fn deploy_config() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rulebox.toml").to_owned()
}

#[test]
fn config_check_prints_the_effective_config_redacted_or_names_the_bad_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args([
            "config",
            "check",
            "--config",
            &deploy_config(),
            "--profile",
            "prod",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text.starts_with("# profile: prod"), "{text}");
    assert!(
        text.contains("max_batch = 50") && text.contains("<redacted>"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_batch = 0\n").unwrap();
    let (code, _, err) = rulebox(
        &["config", "check", "--config", bad.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml") && err.contains("limits.max_batch"),
        "{err}"
    );
}

#[test]
fn serve_listens_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = deploy_config();
    let (mut server, started) = rulebox_tests::ServeProcess::with_args(
        env!("CARGO_BIN_EXE_rulebox"),
        &[
            "--no-cache",
            "serve",
            "--config",
            &config,
            "--profile",
            "dev",
        ],
        &dir.path().join("serve.log"),
    );
    assert_eq!(started["profile"], "dev");
    let (status, body) = rulebox_tests::http(&server.addr, "GET", "/healthz", &[], b"");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert_eq!(server.terminate(), Some(0), "a clean stop on SIGTERM");
}

/// `rulebox decisions` answers the server's queries on a log file, and `compact` applies
/// retention: old detail goes, its rollups stay.
#[test]
fn decisions_lists_shows_aggregates_and_compacts_a_log_file() {
    use rulebox_server::decisions::{DecisionLog, now_ms};
    const DAY: u64 = 24 * 3600 * 1000;
    let rt = rulebox_tests::rt();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decisions.db");
    let log_file = file.display().to_string();
    rt.block_on(async {
        let state = rulebox_server::AppState::new(rulebox_server::ServerConfig::default()).unwrap();
        let bundle = state
            .registry()
            .load(&rulebox_tests::example_bundle("payments"))
            .await
            .unwrap();
        let bundle = state.registry().get(&bundle.bundle).unwrap();
        // The server's own retention must not take the old rows before `compact` does: its
        // writer prunes as soon as it starts, and may start after the first entries queue.
        let log = DecisionLog::open(&rulebox_server::DecisionLogConfig {
            path: Some(file.clone()),
            retention_days: 3650,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let now = now_ms();
        for (i, (amount, age)) in [
            (20, 0),
            (20, 0),
            (12_000, 0),
            (20, 10 * DAY),
            (12_000, 10 * DAY),
        ]
        .into_iter()
        .enumerate()
        {
            let input = rulebox::Input::from_value(serde_json::json!({
                "order": {"amount": amount, "currency": "EUR"},
                "customer": {"country": "DE", "age_days": 900, "verified": true}
            }))
            .unwrap();
            let result = bundle.evaluate(&input).await.unwrap();
            log.enqueue(
                &format!("d{i}"),
                now - age - i as u64,
                &result,
                input.value(),
                Some(&format!("r{i}")),
                "cli-test",
            )
            .unwrap();
        }
        while log.stats().written < 5 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });

    let list = |extra: &[&str]| {
        let mut args = vec!["decisions", "list", "--log-file", &log_file, "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = rulebox(&args, None);
        assert_eq!(code, 0, "{err}");
        out["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["decision_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), ["d4", "d3", "d2", "d1", "d0"]);
    assert_eq!(list(&["--verdict", "deny"]), ["d4", "d2"]);
    assert_eq!(list(&["--since", "1d"]), ["d2", "d1", "d0"]);
    let (code, one, err) = rulebox(&["decisions", "show", "--log-file", &log_file, "d2"], None);
    assert_eq!(
        (code, &one["verdict"], &one["request_id"]),
        (0, &"deny".into(), &"r2".into()),
        "{err}"
    );
    let (code, _, err) = rulebox(
        &["decisions", "show", "--log-file", &log_file, "nope"],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("no decision nope"), "{err}");

    let stats = |extra: &[&str]| {
        let mut args = vec![
            "decisions",
            "stats",
            "--log-file",
            &log_file,
            "--group-by",
            "verdict",
            "--interval",
            "1d",
            "--since",
            "30d",
        ];
        args.extend_from_slice(extra);
        rulebox(&args, None)
    };
    let counts = |out: &serde_json::Value| {
        let mut c: Vec<(String, u64)> = Vec::new();
        for p in out["points"].as_array().unwrap() {
            let v = p["verdict"].as_str().unwrap().to_owned();
            match c.iter_mut().find(|(x, _)| *x == v) {
                Some((_, n)) => *n += p["count"].as_u64().unwrap(),
                None => c.push((v, p["count"].as_u64().unwrap())),
            }
        }
        c.sort();
        c
    };
    let (code, before, err) = stats(&["--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&before), [("allow".into(), 3), ("deny".into(), 2)]);
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args([
            "decisions",
            "stats",
            "--log-file",
            &log_file,
            "--group-by",
            "rule",
            "--since",
            "1d",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("p99_us") && table.contains("sanctions"),
        "{table}"
    );

    let (code, done, err) = rulebox(&["decisions", "compact", "--log-file", &log_file], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["deleted"]["detail"], 2, "{done}");
    assert_eq!(list(&[]), ["d2", "d1", "d0"]);
    let (_, after, _) = stats(&["--json"]);
    assert_eq!(
        counts(&after),
        counts(&before),
        "the rollups outlive the detail"
    );

    let (code, _, err) = stats(&["--interval", "30s"]);
    assert_eq!(code, 2);
    assert!(err.contains("interval"), "{err}");
    let (code, _, err) = rulebox(
        &["decisions", "list", "--log-file", "/nonexistent/x.db"],
        None,
    );
    assert_eq!(code, 2);
    assert!(err.contains("no such decision-log file"), "{err}");
    // Compacting a file that is not a decision log refuses it and leaves it as it was.
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    let other_file = other.display().to_string();
    let (code, _, err) = rulebox(&["decisions", "compact", "--log-file", &other_file], None);
    assert_eq!(code, 2);
    assert!(err.contains("not a decision log"), "{err}");
    assert_eq!(
        std::fs::read(&other).unwrap(),
        before,
        "the other file was changed"
    );
    assert!(!dir.path().join("other.db-wal").exists());
}

/// A log of the payments example on `orders` at `path`, with `mask` applied to every row.
fn payments_log(path: &std::path::Path, orders: &[serde_json::Value], mask: Option<&str>) {
    use rulebox_server::decisions::{DecisionLog, now_ms};
    let rt = rulebox_tests::rt();
    rt.block_on(async {
        let state = rulebox_server::AppState::new(rulebox_server::ServerConfig::default()).unwrap();
        let loaded = state
            .registry()
            .load(&rulebox_tests::example_bundle("payments"))
            .await
            .unwrap();
        let bundle = state.registry().get(&loaded.bundle).unwrap();
        let mut masks = std::collections::BTreeMap::new();
        if let Some(pointer) = mask {
            masks.insert(
                "payments".to_owned(),
                vec![rulebox_server::Mask {
                    pointer: pointer.into(),
                    action: rulebox_server::MaskAction::Erase,
                }],
            );
        }
        let log = DecisionLog::open(&rulebox_server::DecisionLogConfig {
            path: Some(path.to_owned()),
            mask: masks,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let now = now_ms();
        for (i, order) in orders.iter().enumerate() {
            let input = rulebox::Input::from_value(order.clone()).unwrap();
            let result = bundle.evaluate(&input).await.unwrap();
            log.enqueue(
                &format!("d{i}"),
                now - i as u64,
                &result,
                input.value(),
                None,
                "t",
            )
            .unwrap();
        }
        while log.stats().written < orders.len() as u64 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
}

/// `rulebox replay`: a candidate that lowers the amount limit, replayed on a logged sample,
/// reports the transitions the test counts on its own; a candidate failing its golden cases
/// is refused before anything is replayed; a logged field that was masked and that a rule
/// reads makes its decisions not replayable.
#[test]
fn replay_reports_what_a_candidate_changes_on_logged_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decisions.db");
    let orders = rulebox_tests::payment_orders(200);
    payments_log(&file, &orders, None);
    let log = file.display().to_string();
    // Its golden case says the new limit, as a real revision would.
    let lower = rulebox_tests::payments_variant(&[
        ("max = 10000", "max = 8000"),
        ("over limit 10000", "over limit 8000"),
    ]);
    let candidate = lower.path().display().to_string();
    let (code, report, err) = rulebox(
        &[
            "replay",
            "--log-file",
            &log,
            "--candidate",
            &candidate,
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    // Counted here: orders over the new limit and within the old one, which were not
    // already denied, become denials; nothing else moves.
    let reader = rulebox_server::decisions::LogReader::open(&file).unwrap();
    let mut want = std::collections::BTreeMap::<String, u64>::new();
    for (i, order) in orders.iter().enumerate() {
        let amount = order["order"]["amount"].as_f64().unwrap();
        let verdict = reader.get(&format!("d{i}")).unwrap().unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_owned();
        if amount > 8000.0 && amount <= 10000.0 && verdict != "deny" {
            *want.entry(verdict).or_default() += 1;
        }
    }
    assert!(!want.is_empty());
    for (from, n) in &want {
        assert_eq!(report["verdicts"][from]["deny"], *n, "{from}: {report}");
    }
    assert_eq!(report["replayed"], 200);
    assert_eq!(report["changed"], want.values().sum::<u64>());
    assert_eq!(
        report["changes"].as_array().unwrap().len() as u64,
        want.values().sum::<u64>()
    );
    // Split over three threads or run on one, the report is the same (costs aside: they are
    // measured), its changes newest first as the log lists them.
    let on = |jobs: &str| {
        let (code, mut r, err) = rulebox(
            &[
                "replay",
                "--log-file",
                &log,
                "--candidate",
                &candidate,
                "--json",
                "--jobs",
                jobs,
            ],
            None,
        );
        assert_eq!(code, 0, "{err}");
        for rule in r["rules"].as_object_mut().unwrap().values_mut() {
            rule.as_object_mut().unwrap().remove("cost");
        }
        r.as_object_mut().unwrap().remove("seconds");
        r
    };
    let (one, three) = (on("1"), on("3"));
    assert_eq!(one, three);
    let ids: Vec<&str> = three["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, newest_first);

    // The table, with a sample and a verdict filter.
    let out = Command::new(env!("CARGO_BIN_EXE_rulebox"))
        .args([
            "replay",
            "--log-file",
            &log,
            "--candidate",
            &candidate,
            "--limit",
            "50",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains(": 50 replayed,"), "{table}");
    assert!(
        table.contains("final verdict (recorded -> candidate)"),
        "{table}"
    );
    assert!(table.contains("rule amount-limit: fuel"), "{table}");

    // A candidate whose golden cases fail is refused: nothing replayed.
    let broken = rulebox_tests::payments_variant(&[("max = 10000", "max = 50")]);
    let (code, out, err) = rulebox(
        &[
            "replay",
            "--log-file",
            &log,
            "--candidate",
            &broken.path().display().to_string(),
            "--json",
        ],
        None,
    );
    assert_eq!((code, out), (1, serde_json::Value::Null));
    assert!(
        err.contains("golden cases failed; nothing replayed"),
        "{err}"
    );

    // Masked countries: the sanctions rule reads them, so no decision can be replayed.
    let masked = dir.path().join("masked.db");
    payments_log(&masked, &orders[..5], Some("/customer/country"));
    let (code, report, err) = rulebox(
        &[
            "replay",
            "--log-file",
            &masked.display().to_string(),
            "--candidate",
            &candidate,
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (
            report["replayed"].as_u64(),
            report["not_replayable"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert!(
        report["not_replayable_ids"][0][1]
            .as_str()
            .unwrap()
            .contains("customer.country"),
        "{report}"
    );
}
