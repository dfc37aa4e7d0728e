//! Safe rollout through the API: a shadow candidate judged on live traffic (counted exactly,
//! never served, kept across a restart, guarded, promoted or discarded), background replays
//! of the decision log, and the watch that rolls a failing revision back.

mod common;

use axum::body::Body;
use axum::http::StatusCode;
use common::{Api, archive, config, pack};
use rulebox_server::{LogMode, PromotionGuard, ServerConfig};
use rulebox_tests::{payment_orders, payments_variant, write_bundle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The payments example with another amount limit (`max = 8000`), as a new revision whose
/// golden case says the new limit, as a real revision would.
fn lower_limit(max: &str, revision: &str) -> Vec<u8> {
    let reason = format!("over limit {}", max.trim_start_matches("max = "));
    let dir = payments_variant(&[
        ("max = 10000", max),
        ("over limit 10000", &reason),
        ("revision = \"2026.11.22-1\"", revision),
    ]);
    pack(dir.path())
}

/// What lowering the limit to 8,000 changes, counted from the orders and the verdicts that
/// were served: orders in (8000, 10000] are reviewed by the amount rule and would be denied,
/// so their final verdict becomes deny unless it was.
fn expected_moves(orders: &[Value], served: &[String]) -> (u64, BTreeMap<String, u64>) {
    let mut moved_at_rule = 0;
    let mut finals = BTreeMap::new();
    for (order, verdict) in orders.iter().zip(served) {
        let amount = order["order"]["amount"].as_f64().unwrap();
        if amount > 8000.0 && amount <= 10000.0 {
            moved_at_rule += 1;
            if verdict != "deny" {
                *finals.entry(verdict.clone()).or_insert(0) += 1;
            }
        }
    }
    (moved_at_rule, finals)
}

/// Evaluates `orders` on payments, each answered 200 by the active revision `revision`:
/// the verdicts served and the decision ids.
fn serve(api: &Api, orders: &[Value], revision: &str) -> (Vec<String>, Vec<String>) {
    let (mut verdicts, mut ids) = (Vec::new(), Vec::new());
    for order in orders {
        let (s, v) = api.json(
            "POST",
            "/v1/bundles/payments/evaluate",
            Some("evaluator"),
            json!({ "input": order }),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["revision"], revision, "only the active revision serves");
        verdicts.push(v["verdict"].as_str().unwrap().to_owned());
        ids.push(v["decision_id"].as_str().unwrap().to_owned());
    }
    (verdicts, ids)
}

/// Polls `GET uri` until `done` holds (30 s at most).
fn wait_for(api: &Api, uri: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (s, v) = api.get(uri);
        if s == StatusCode::OK && done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{uri} never got there: {s} {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shadow_config(state_dir: &std::path::Path, log: &std::path::Path) -> ServerConfig {
    let mut c = config();
    c.bundles.state_dir = Some(state_dir.to_owned());
    c.decision_log.path = Some(log.to_owned());
    c.decision_log.mode = LogMode::Sync;
    c.rollout.guard = Some(PromotionGuard {
        min_samples: 50,
        max_to_allow_pct: 1.0,
        max_changed_pct: 1.0,
    });
    c
}

/// A metric sample's value in the text exposition.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn a_shadow_candidate_counts_exactly_what_it_would_change_and_survives_a_restart() {
    let state_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("decisions.db");
    let api = Api::with_config(shadow_config(state_dir.path(), &log));
    let active = "2026.11.22-1";
    let candidate = lower_limit("max = 8000", "revision = \"2026.11.22-2\"");

    // Staged through the same gate, at every share of traffic asked for.
    let (s, v) = api.put_archive(
        "/v1/bundles/payments?mode=shadow&sample=1",
        "operator",
        candidate.clone(),
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["candidate"]["revision"], "2026.11.22-2");
    assert_eq!(v["candidate"]["tests_passed"], 6, "{v}");
    assert_eq!(v["active_revision"], active);
    assert!(
        state_dir
            .path()
            .join("shadow/payments/candidate.tar.gz")
            .is_file()
    );
    let (_, status) = api.get("/v1/bundles/payments");
    assert_eq!(status["revision"], active, "a shadow is not served");
    assert_eq!(
        status["rollout"]["shadow"]["revision"], "2026.11.22-2",
        "{status}"
    );

    let orders = payment_orders(200);
    let (served, ids) = serve(&api, &orders, active);
    let shadow = wait_for(&api, "/v1/bundles/payments/shadow", |v| {
        v["evaluated"] == 200
    });
    let (moved, finals) = expected_moves(&orders, &served);
    assert!(moved > 10, "the sample must exercise the change");
    let changed: u64 = finals.values().sum();
    for (from, n) in &finals {
        assert_eq!(shadow["verdicts"][from]["deny"], *n, "{from}: {shadow}");
    }
    assert_eq!(shadow["changed"], changed);
    assert_eq!(shadow["to_allow"], 0);
    assert_eq!(shadow["dropped"], 0);
    assert_eq!(shadow["sampled"], 200);
    assert_eq!(
        shadow["rules"]["amount-limit"]["transitions"]["review"]["deny"], moved,
        "{shadow}"
    );
    // Each change names the live decision (whose masked record the log has), not its input.
    let changes = shadow["changes"].as_array().unwrap();
    assert_eq!(changes.len() as u64, changed);
    for c in changes {
        assert!(ids.contains(&c["id"].as_str().unwrap().to_owned()));
        assert_eq!(c["input"], Value::Null);
        assert_eq!(c["to"], "deny");
    }
    // Never recorded as a decision, never cached as the active revision's.
    let (_, stats) = api.get("/v1/decisions?bundle=payments&limit=1000");
    assert_eq!(stats["decisions"].as_array().unwrap().len(), 200, "{stats}");
    assert!(
        stats["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["revision"] == active)
    );
    let metrics = api.text("/metrics");
    for (from, n) in &finals {
        let sample = format!(
            "rulebox_shadow_decisions_total{{bundle=\"payments\",from=\"{from}\",to=\"deny\"}}"
        );
        assert_eq!(metric(&metrics, &sample), Some(*n as f64), "{sample}");
    }
    assert_eq!(
        metric(
            &metrics,
            "rulebox_shadow_dropped_total{bundle=\"payments\"}"
        ),
        None
    );

    // A restart: the candidate is staged again and its counts go on from where they were.
    let config = shadow_config(state_dir.path(), &log);
    drop(api);
    // An upload cut off by the stop is cleaned up at start.
    let stray = state_dir.path().join("shadow/.upload-cut.tar.gz");
    std::fs::write(&stray, b"partial").unwrap();
    let api = Api::with_config(config);
    let restored = api.rt.block_on(api.state.restore_shadows());
    assert_eq!(
        restored,
        vec![("payments".to_owned(), Ok("2026.11.22-2".to_owned()))]
    );
    assert!(!stray.exists());
    let again = wait_for(&api, "/v1/bundles/payments/shadow", |_| true);
    for key in [
        "evaluated",
        "changed",
        "sampled",
        "verdicts",
        "rules",
        "changes",
    ] {
        assert_eq!(again[key], shadow[key], "{key} after the restart");
    }
    serve(&api, &orders[..10], active);
    wait_for(&api, "/v1/bundles/payments/shadow", |v| {
        v["evaluated"] == 210
    });

    // The guard: more than 1% would change, so promotion needs an explicit override.
    let promote =
        |who: &str, body: Value| api.json("POST", "/v1/bundles/payments/promote", Some(who), body);
    let (s, e) = promote("operator", json!({}));
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["kind"], "guard-refused");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("would change verdict, over the guard's 1%"),
        "{e}"
    );
    assert_eq!(
        promote("operator", json!({"override_guard": " "})).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        promote("viewer", json!({"override_guard": "x"})).0,
        StatusCode::FORBIDDEN
    );
    let (s, p) = promote(
        "operator",
        json!({"override_guard": "the lower limit is the point"}),
    );
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["activation"]["revision"], "2026.11.22-2");
    assert_eq!(p["activation"]["previous"], active);
    assert_eq!(
        p["guard"]["overridden"]["reason"],
        "the lower limit is the point"
    );
    let (_, status) = api.get("/v1/bundles/payments");
    assert_eq!(status["revision"], "2026.11.22-2");
    assert_eq!(status["history"][0], active, "kept for rollback");
    assert_eq!(
        status["rollout"]["events"][0]["event"], "promoted",
        "{status}"
    );
    let (s, _) = api.get("/v1/bundles/payments/shadow");
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!state_dir.path().join("shadow/payments").exists());
    // The promoted revision serves what the shadow said it would.
    let (_, first_change) = (0, &changes[0]);
    let i = ids
        .iter()
        .position(|id| id == first_change["id"].as_str().unwrap())
        .unwrap();
    let (_, v) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({ "input": orders[i] }),
    );
    assert_eq!(v["verdict"], "deny", "{v}");

    // Another candidate, discarded: nothing of it is left.
    let (s, v) = api.put_archive(
        "/v1/bundles/payments?mode=shadow",
        "operator",
        lower_limit("max = 9000", "revision = \"2026.11.22-3\""),
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["sample"], 0.1, "the configured default share");
    let (s, _, _) = api.call(
        "DELETE",
        "/v1/bundles/payments/shadow",
        Some("operator"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = api.call(
        "DELETE",
        "/v1/bundles/payments/shadow",
        Some("operator"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!state_dir.path().join("shadow/payments").exists());
    let (_, status) = api.get("/v1/bundles/payments");
    assert_eq!(status["revision"], "2026.11.22-2");
}

#[test]
fn a_shadow_is_refused_with_a_reason_and_the_active_revision_keeps_serving() {
    let (api, [state_dir, _log]) = serving(|_| {});
    let good = lower_limit("max = 8000", "revision = \"2\"");
    let refused = |uri: &str, who: &str, bytes: Vec<u8>, status: StatusCode, says: &str| {
        let (s, e) = api.put_archive(uri, who, bytes);
        assert_eq!(s, status, "{uri}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{uri}: {e}");
    };
    refused(
        "/v1/bundles/payments?mode=canary",
        "operator",
        good.clone(),
        StatusCode::BAD_REQUEST,
        "mode `canary`",
    );
    refused(
        "/v1/bundles/payments?mode=shadow&sample=1.5",
        "operator",
        good.clone(),
        StatusCode::BAD_REQUEST,
        "from 0 to 1",
    );
    refused(
        "/v1/bundles/payments?sample=0.5",
        "operator",
        good.clone(),
        StatusCode::BAD_REQUEST,
        "mode=shadow",
    );
    refused(
        "/v1/bundles/payments?mode=shadow",
        "evaluator",
        good.clone(),
        StatusCode::FORBIDDEN,
        "",
    );
    // A candidate whose golden case fails never shadows.
    refused(
        "/v1/bundles/payments?mode=shadow",
        "operator",
        lower_limit("max = 5", "revision = \"3\""),
        StatusCode::UNPROCESSABLE_ENTITY,
        "small order",
    );
    // The active revision itself: nothing to compare.
    let same = lower_limit("max = 10000", "revision = \"2026.11.22-1\"");
    let (s, _) = api.put_archive("/v1/bundles/payments", "operator", same.clone());
    assert_eq!(s, StatusCode::CREATED);
    refused(
        "/v1/bundles/payments?mode=shadow",
        "operator",
        same,
        StatusCode::CONFLICT,
        "is the active revision",
    );
    // No active revision to compare with.
    refused(
        "/v1/bundles/up?mode=shadow",
        "admin",
        archive("up", "1", "allow"),
        StatusCode::NOT_FOUND,
        "no active revision to shadow",
    );
    let (s, _) = api.get("/v1/bundles/payments/shadow");
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A refused candidate is the uploader's error, not a failed load of what serves.
    let (_, status) = api.get("/v1/bundles/payments");
    assert_eq!(status["last_failure"], Value::Null, "{status}");
    assert!(
        std::fs::read_dir(state_dir.path().join("shadow"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
            == 0,
        "a refused candidate leaves nothing behind"
    );

    // A candidate that becomes active some other way (an upload here) ends its shadow.
    let (s, _) = api.put_archive("/v1/bundles/payments?mode=shadow", "operator", good.clone());
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = api.put_archive("/v1/bundles/payments", "operator", good.clone());
    assert_eq!(s, StatusCode::CREATED);
    let status = wait_for(&api, "/v1/bundles/payments", |v| {
        v["rollout"]["events"][0]["event"] == "shadow-ended"
    });
    assert_eq!(status["rollout"]["shadow"], Value::Null, "{status}");
    assert!(!state_dir.path().join("shadow/payments").exists());

    // Without a state directory a shadow could not survive a restart: refused, saying so.
    let api = Api::with_payments();
    let (s, e) = api.put_archive("/v1/bundles/payments?mode=shadow", "operator", good);
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bundles.state_dir")
    );
}

#[test]
fn a_replay_job_reports_in_the_background_what_a_candidate_changes_on_logged_decisions() {
    let (api, _dirs) = serving(|_| {});
    let orders = payment_orders(150);
    let (served, _) = serve(&api, &orders, "2026.11.22-1");
    let (moved, finals) = expected_moves(&orders, &served);

    let post = |uri: &str, bytes: Vec<u8>| {
        api.call(
            "POST",
            uri,
            Some("operator"),
            Body::from(bytes),
            Some("application/gzip"),
        )
    };
    let (s, v, headers) = post(
        "/v1/bundles/payments/replay?limit=100000",
        lower_limit("max = 8000", "revision = \"2\""),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let url = v["status_url"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], url.as_str());
    let job = wait_for(&api, &url, |v| v["state"] != "running");
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["processed"], 150);
    let report = &job["report"];
    assert_eq!(report["replayed"], 150);
    assert_eq!(
        report["rules"]["amount-limit"]["transitions"]["review"]["deny"],
        moved
    );
    for (from, n) in &finals {
        assert_eq!(report["verdicts"][from]["deny"], *n, "{from}");
    }
    // A replay reads the log, which holds inputs as logged.
    assert!(
        report["changes"][0]["input"]["order"]["amount"].is_number(),
        "{report}"
    );

    // A finished replay cannot be cancelled; a viewer cancels nothing.
    let (s, _, _) = api.call("DELETE", &url, Some("operator"), Body::empty(), None);
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _, _) = api.call("DELETE", &url, Some("viewer"), Body::empty(), None);
    assert_eq!(s, StatusCode::FORBIDDEN);
    // One cancelled as it starts stops where it is, its report so far kept (unless it
    // finished first: 150 decisions go fast).
    let (s, v, _) = post(
        "/v1/bundles/payments/replay",
        lower_limit("max = 8000", "revision = \"2\""),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let url = v["status_url"].as_str().unwrap().to_owned();
    let (s, _, _) = api.call("DELETE", &url, Some("operator"), Body::empty(), None);
    let job = wait_for(&api, &url, |v| v["state"] != "running");
    match s {
        StatusCode::ACCEPTED => {
            assert_eq!(job["state"], "cancelled", "{job}");
            assert!(job["processed"].as_u64().unwrap() < 150, "{job}");
        }
        StatusCode::CONFLICT => assert_eq!(job["state"], "done"),
        other => panic!("cancel answered {other}"),
    }

    // Only deny decisions, a few of them.
    let (s, v, _) = post(
        "/v1/bundles/payments/replay?verdict=deny&limit=5",
        lower_limit("max = 8000", "revision = \"2\""),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_for(&api, v["status_url"].as_str().unwrap(), |v| {
        v["state"] == "done"
    });
    assert_eq!(job["report"]["replayed"], 5);
    assert_eq!(
        job["report"]["verdicts"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["deny"]
    );

    // Refused before anything is replayed.
    let (s, e, _) = post(
        "/v1/bundles/payments/replay",
        lower_limit("max = 5", "revision = \"3\""),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, _, _) = post("/v1/bundles/payments/replay?limit=0", Vec::new());
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e, _) = post("/v1/bundles/payments/replay?candidate=shadow", Vec::new());
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, _) = api.get("/v1/bundles/payments/replay/nope");
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The shadow candidate, replayed on the same log.
    let (s, _) = api.put_archive(
        "/v1/bundles/payments?mode=shadow&sample=0",
        "operator",
        lower_limit("max = 8000", "revision = \"2\""),
    );
    assert_eq!(s, StatusCode::CREATED);
    let (s, v, _) = post("/v1/bundles/payments/replay?candidate=shadow", Vec::new());
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = wait_for(&api, v["status_url"].as_str().unwrap(), |v| {
        v["state"] == "done"
    });
    assert_eq!(job["candidate"]["revision"], "2");
    assert_eq!(
        job["report"]["rules"]["amount-limit"]["transitions"]["review"]["deny"],
        moved
    );
}

#[test]
fn a_revision_that_starts_timing_out_is_rolled_back_without_a_failed_request() {
    let mut c = config();
    let alerts = tempfile::tempdir().unwrap();
    c.alerts.path = Some(alerts.path().join("alerts.db"));
    c.health.window_s = 2;
    c.rollout.watch.min_evaluations = 5;
    c.rollout.watch.window_s = 60;
    let api = Api::new(c);
    let (s, v) = api.put_archive(
        "/v1/bundles/loops",
        "operator",
        archive("loops", "1", "allow"),
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let evaluate = || {
        let (s, v) = api.json(
            "POST",
            "/v1/bundles/loops/evaluate",
            Some("evaluator"),
            json!({"input": {}}),
        );
        assert_eq!(s, StatusCode::OK, "no request fails: {v}");
        v
    };
    for _ in 0..20 {
        assert_eq!(evaluate()["verdict"], "allow");
    }
    // Revision 2 passes its (empty) tests, then its rule loops until the deadline.
    let dir = tempfile::tempdir().unwrap();
    write_bundle(
        dir.path(),
        "[bundle]\nformat = 1\nname = \"loops\"\nrevision = \"2\"\n[[rule]]\nname = \"r\"\ncomponent = \"spin.wasm\"\nlimits = { timeout_ms = 20 }\n",
    );
    std::fs::copy(
        rulebox_tests::guest_path("hostile_infinite_loop"),
        dir.path().join("spin.wasm"),
    )
    .unwrap();
    let (s, v) = api.put_archive("/v1/bundles/loops", "operator", pack(dir.path()));
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let watch = wait_for(&api, "/v1/bundles/loops", |v| {
        v["rollout"]["watch"]["revision"] == "2"
    });
    assert_eq!(
        watch["rollout"]["watch"]["baseline"]["error_rate"], 0.0,
        "{watch}"
    );

    let start = Instant::now();
    let mut on_two = 0;
    loop {
        let v = evaluate();
        if v["revision"] == "1" {
            assert_eq!(v["verdict"], "allow");
            break;
        }
        on_two += 1;
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never rolled back"
        );
    }
    assert!(on_two >= 5, "judged on at least min_evaluations: {on_two}");
    // The event is kept once the rollback returns: a request may see revision 1 just before.
    let status = wait_for(&api, "/v1/bundles/loops", |v| {
        v["rollout"]["events"][0]["event"] == "automatic-rollback"
    });
    assert_eq!(status["revision"], "1");
    let event = &status["rollout"]["events"][0];
    assert_eq!(event["event"], "automatic-rollback", "{status}");
    assert_eq!(event["signal"], "timeout-ratio");
    assert_eq!(event["from"], "2");
    assert_eq!(event["to"], "1");
    assert!(event["value"].as_f64().unwrap() > 0.9, "{event}");
    assert!(event["evaluations"].as_u64().unwrap() >= 5);
    assert_eq!(status["rollout"]["watch"], Value::Null);
    let (_, a) = api.get("/v1/alerts");
    let fired = a["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["alert"] == "automatic-rollback:loops")
        .unwrap_or_else(|| panic!("{a}"));
    assert_eq!(fired["state"], "firing");
    assert!(
        fired["message"]
            .as_str()
            .unwrap()
            .contains("rolled back to 1"),
        "{fired}"
    );
    let metrics = api.text("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "rulebox_automatic_rollbacks_total{bundle=\"loops\",signal=\"timeout-ratio\"}"
        ),
        Some(1.0)
    );
    for _ in 0..5 {
        assert_eq!(evaluate()["revision"], "1");
    }
}

/// Payments served on a configuration `adjust`ed from [`shadow_config`], with its state
/// directory and the decision log's directory (they live as long as the second value).
fn serving(adjust: impl FnOnce(&mut ServerConfig)) -> (Api, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut c = shadow_config(dirs[0].path(), &dirs[1].path().join("d.db"));
    adjust(&mut c);
    (Api::with_config(c), dirs)
}

/// [`serving`], with the lower-limit candidate shadowing every decision.
fn shadowing(adjust: impl FnOnce(&mut ServerConfig)) -> (Api, [tempfile::TempDir; 2]) {
    let (api, dirs) = serving(adjust);
    let (s, v) = api.put_archive(
        "/v1/bundles/payments?mode=shadow&sample=1",
        "operator",
        lower_limit("max = 8000", "revision = \"2\""),
    );
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (api, dirs)
}

/// The shadow queue's byte budget: a sampled input too large for it is dropped and counted
/// (never waited for, never failing the request), while small ones are evaluated.
#[test]
fn sampled_inputs_beyond_the_queue_budget_are_dropped_and_counted() {
    let (api, _dirs) = shadowing(|c| c.rollout.shadow_queue_bytes = 1024);
    let orders = payment_orders(3);
    serve(&api, &orders, "2026.11.22-1");
    let mut big = orders[0].clone();
    big["note"] = "x".repeat(2000).into();
    serve(&api, &[big], "2026.11.22-1");
    let shadow = wait_for(&api, "/v1/bundles/payments/shadow", |v| v["evaluated"] == 3);
    assert_eq!(
        (&shadow["sampled"], &shadow["dropped"]),
        (&json!(4), &json!(1)),
        "{shadow}"
    );
    let metrics = api.text("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "rulebox_shadow_dropped_total{bundle=\"payments\"}"
        ),
        Some(1.0)
    );
}

/// Under concurrent load with a queue far too small, every request is answered 200 by the
/// active revision, and every sampled decision is accounted for: evaluated on the candidate
/// or dropped and counted, none lost.
#[test]
fn under_load_every_request_is_answered_and_every_sample_accounted_for() {
    use tower::ServiceExt;
    let (api, _dirs) = shadowing(|c| {
        c.rollout.shadow_queue = 2;
        c.decision_log.mode = LogMode::Async;
        c.limits.max_concurrent_requests = 1000;
    });
    let orders = payment_orders(400);
    let statuses: Vec<(StatusCode, Value)> = api.rt.block_on(async {
        let calls = orders.iter().map(|order| {
            let router = rulebox_server::router(api.state.clone());
            let request = axum::http::Request::post("/v1/bundles/payments/evaluate")
                .header("authorization", "Bearer tok-evaluator")
                .header("content-type", "application/json")
                .body(Body::from(json!({ "input": order }).to_string()))
                .unwrap();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
        });
        // 400 requests at once, 2 queue slots.
        futures_util::future::join_all(calls).await
    });
    for (s, v) in &statuses {
        assert_eq!(*s, StatusCode::OK, "{v}");
        assert_eq!(v["revision"], "2026.11.22-1");
    }
    let shadow = wait_for(&api, "/v1/bundles/payments/shadow", |v| {
        let n = |k: &str| v[k].as_u64().unwrap();
        n("evaluated") + n("dropped") + n("host_errors") == n("sampled")
    });
    assert_eq!(shadow["sampled"], 400, "{shadow}");
    assert!(shadow["evaluated"].as_u64().unwrap() >= 1, "{shadow}");
}
