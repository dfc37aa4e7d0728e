//! The API driven in-process (tower `oneshot`) and over a real socket: every endpoint, its
//! status codes, roles and scopes, and bad input.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Api, archive, config, token};
use http_body_util::BodyExt;
use rulebox_server::{AppState, Role, ServerConfig, router};
use rulebox_tests::{example_bundle, write_bundle};
use serde_json::{Value, json};
use sha2::Digest;
use tower::ServiceExt;

const ORDER: &str = r#"{"order":{"amount":20,"currency":"EUR"},"customer":{"country":"DE","age_days":900,"verified":true}}"#;

fn order() -> Value {
    serde_json::from_str(ORDER).unwrap()
}

#[test]
fn evaluate_returns_the_bundle_result_with_a_decision_id() {
    let api = Api::with_payments();
    let (s, v) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order(), "request_id": "r-1"}),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["bundle"].as_str(), v["verdict"].as_str()),
        (Some("payments"), Some("allow"))
    );
    assert_eq!(v["request_id"], "r-1");
    assert_eq!(v["rules"].as_array().unwrap().len(), 3);
    let (_, again) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("admin"),
        json!({"input": order()}),
    );
    assert_ne!(
        v["decision_id"], again["decision_id"],
        "unique per decision"
    );
    assert!(again["request_id"].is_null());
    // Pinning a revision: the active one works, one not kept is 404.
    let rev = v["revision"].as_str().unwrap();
    let (s, _) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order(), "revision": rev}),
    );
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order(), "revision": "nope"}),
    );
    assert_eq!(
        (s, e["error"]["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );
}

#[test]
fn credentials_roles_and_scopes() {
    let api = Api::with_payments();
    let eval = |who: Option<&str>, bundle: &str| {
        let (s, v) = api.json(
            "POST",
            &format!("/v1/bundles/{bundle}/evaluate"),
            who,
            json!({"input": order()}),
        );
        (s, v["error"]["kind"].as_str().map(str::to_owned))
    };
    let (s, _, headers) = api.call(
        "POST",
        "/v1/bundles/payments/evaluate",
        None,
        Body::from("{}"),
        Some("application/json"),
    );
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(eval(Some("nobody"), "payments").0, StatusCode::UNAUTHORIZED);
    assert_eq!(eval(Some("viewer"), "payments").0, StatusCode::FORBIDDEN);
    assert_eq!(eval(Some("operator"), "payments").0, StatusCode::FORBIDDEN);
    assert_eq!(eval(Some("scoped"), "payments").0, StatusCode::OK);
    // Out of scope: the same answer whether the bundle exists or not.
    let (a, b) = (
        eval(Some("scoped"), "other"),
        eval(Some("scoped"), "payments-nope"),
    );
    assert_eq!(a, (StatusCode::FORBIDDEN, Some("forbidden".into())));
    assert_eq!(a, b);
    assert_eq!(eval(Some("evaluator"), "nope").0, StatusCode::NOT_FOUND);
    // Reading: viewer and operator yes, evaluator no; a scoped credential lists its own.
    for (who, want) in [
        ("viewer", StatusCode::OK),
        ("operator", StatusCode::OK),
        ("evaluator", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            api.call("GET", "/v1/bundles", Some(who), Body::empty(), None)
                .0,
            want,
            "{who}"
        );
    }
    let (_, listed, _) = api.call("GET", "/v1/bundles", Some("scoped-op"), Body::empty(), None);
    assert_eq!(listed["bundles"], json!([]), "scoped to `up` only");
    let (s, v, _) = api.call(
        "GET",
        "/v1/bundles/payments",
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["active"]["layers"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["activated_at_ms"].as_u64().unwrap() > 0);
}

#[test]
fn bad_requests_get_named_errors() {
    let api = Api::with_payments();
    let url = "/v1/bundles/payments/evaluate";
    let raw = |body: &str, ct: Option<&str>| {
        let (s, v, _) = api.call(
            "POST",
            url,
            Some("evaluator"),
            Body::from(body.to_owned()),
            ct,
        );
        (
            s,
            v["error"]["kind"].as_str().unwrap_or("").to_owned(),
            v["error"]["message"].as_str().unwrap_or("").to_owned(),
        )
    };
    let json_ct = Some("application/json");
    assert_eq!(
        raw("{}", Some("text/plain")).0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(raw("{}", None).0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, k, m) = raw("{\"input\": ", json_ct);
    assert_eq!(
        (s, k.as_str()),
        (StatusCode::BAD_REQUEST, "invalid-request"),
        "{m}"
    );
    let deep = format!(
        "{{\"input\": {{\"a\": {}1{}}}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let (s, _, m) = raw(&deep, json_ct);
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        m.contains("nests 102 levels deep, over the limit of 64"),
        "{m}"
    );
    let big = format!("{{\"input\": {{\"a\": \"{}\"}}}}", "x".repeat(5000));
    assert_eq!(raw(&big, json_ct).0, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, k, _) = raw(r#"{"input": [1]}"#, json_ct);
    assert_eq!((s, k.as_str()), (StatusCode::BAD_REQUEST, "invalid-input"));
    let (s, _, m) = raw(r#"{"input": {"a": 1, "a": 2}}"#, json_ct);
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("duplicate key"), "{m}");
    let (s, _, m) = raw(r#"{"input": {}, "inptu": {}}"#, json_ct);
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("unknown field `inptu`"), "{m}");
    let (s, v, _) = api.call("GET", "/v2/nothing", None, Body::empty(), None);
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );
}

#[test]
fn a_batch_answers_each_item_and_one_bad_item_fails_alone() {
    let api = Api::with_payments();
    let url = "/v1/bundles/payments/evaluate/batch";
    let (s, v) = api.json("POST", url, Some("evaluator"), json!({
        "common_input": {"customer": {"country": "DE", "age_days": 900, "verified": true}},
        "inputs": [{"order": {"amount": 20, "currency": "EUR"}}, [1], {"order": {"amount": 99999, "currency": "EUR"}}],
    }));
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        (results[0]["ok"].as_bool(), results[0]["verdict"].as_str()),
        (Some(true), Some("allow"))
    );
    assert_eq!(results[1]["error"]["kind"], "invalid-input");
    assert_eq!(results[2]["ok"], true);
    assert_ne!(results[2]["verdict"], "allow", "{}", results[2]);
    let (s, v) = api.json(
        "POST",
        url,
        Some("evaluator"),
        json!({"inputs": [{}, {}, {}, {}]}),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the batch limit of 3")
    );
}

#[test]
fn upload_rollback_delete() {
    let api = Api::new(config());
    let put = |who: &str, name: &str, bytes: Vec<u8>, ct: &str| {
        let (s, v, _) = api.call(
            "PUT",
            &format!("/v1/bundles/{name}"),
            Some(who),
            Body::from(bytes),
            Some(ct),
        );
        (s, v)
    };
    let gz = "application/gzip";
    assert_eq!(
        put("viewer", "up", archive("up", "1", "allow"), gz).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put("scoped-op", "other", archive("other", "1", "allow"), gz).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(
            "operator",
            "up",
            archive("up", "1", "allow"),
            "application/json"
        )
        .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (s, v) = put("scoped-op", "up", archive("up", "1", "allow"), gz);
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["revision"], "1");
    assert_eq!(v["source"]["kind"], "upload", "{v}");
    let (_, listed, _) = api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None);
    assert_eq!(listed["bundles"][0]["source"]["kind"], "upload", "{listed}");
    assert_eq!(
        put("operator", "up", archive("up", "2", "allow"), gz).0,
        StatusCode::CREATED
    );
    // Each failed gate step is 422 naming the step; the active revision keeps serving.
    let (s, v) = put("operator", "up", archive("up", "3", "deny"), gz);
    assert_eq!(
        (s, v["error"]["step"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("test")),
        "{v}"
    );
    let (s, v) = put("operator", "up", archive("impostor", "4", "allow"), gz);
    assert_eq!(
        (s, v["error"]["step"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("read")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("named `impostor`, not `up`")
    );
    let (s, v) = put("operator", "up", b"not an archive".to_vec(), gz);
    assert_eq!(
        (s, v["error"]["step"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("read")),
        "{v}"
    );
    let (_, status, _) = api.call("GET", "/v1/bundles/up", Some("viewer"), Body::empty(), None);
    assert_eq!(status["revision"], "2");
    assert_eq!(status["last_failure"]["step"], "read", "{status}");
    assert_eq!(status["history"], json!(["1"]));
    // Rollback: to a named kept revision, or to the previous one.
    assert_eq!(
        put("operator", "up", archive("up", "3", "allow"), gz).0,
        StatusCode::CREATED
    );
    let (s, v) = api.json(
        "POST",
        "/v1/bundles/up/rollback",
        Some("operator"),
        json!({"to_revision": "9"}),
    );
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );
    let (s, v) = api.json(
        "POST",
        "/v1/bundles/up/rollback",
        Some("operator"),
        json!({"to_revision": "1"}),
    );
    assert_eq!(
        (s, v["revision"].as_str(), v["previous"].as_str()),
        (StatusCode::OK, Some("1"), Some("3")),
        "{v}"
    );
    let (s, v, _) = api.call(
        "POST",
        "/v1/bundles/up/rollback",
        Some("operator"),
        Body::empty(),
        None,
    );
    assert_eq!(
        (s, v["revision"].as_str()),
        (StatusCode::OK, Some("3")),
        "{v}"
    );
    let (s, v, _) = api.call(
        "POST",
        "/v1/bundles/up/rollback",
        Some("operator"),
        Body::empty(),
        None,
    );
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "nothing older kept: {v}"
    );
    assert_eq!(
        api.call(
            "DELETE",
            "/v1/bundles/up",
            Some("evaluator"),
            Body::empty(),
            None
        )
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            "DELETE",
            "/v1/bundles/up",
            Some("operator"),
            Body::empty(),
            None
        )
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call("GET", "/v1/bundles/up", Some("viewer"), Body::empty(), None)
            .0,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn cache_health_and_readiness() {
    let api = Api::new(config());
    let (s, v, headers) = api.call("GET", "/readyz", None, Body::empty(), None);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"]["kind"], "not-ready");
    assert_eq!(v["error"]["missing"], json!(["payments"]));
    assert_eq!(
        headers[header::RETRY_AFTER],
        "1",
        "503s say when to come back"
    );
    assert_eq!(
        api.call("GET", "/healthz", None, Body::empty(), None).0,
        StatusCode::OK
    );
    api.rt
        .block_on(api.state.registry().load(&example_bundle("payments")))
        .unwrap();
    assert_eq!(
        api.call("GET", "/readyz", None, Body::empty(), None).0,
        StatusCode::OK
    );
    api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order()}),
    );
    api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order()}),
    );
    let (s, stats, _) = api.call(
        "GET",
        "/v1/cache/stats",
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::OK);
    assert!(stats["hits"].as_u64().unwrap() >= 1, "{stats}");
    let (s, _) = api.json("POST", "/v1/cache/invalidate", Some("evaluator"), json!({}));
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api.json("POST", "/v1/cache/invalidate", Some("scoped-op"), json!({}));
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a scoped operator cannot invalidate everything"
    );
    let (s, v) = api.json(
        "POST",
        "/v1/cache/invalidate",
        Some("operator"),
        json!({"bundle": "payments"}),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order()}),
    );
    assert!(
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["cached"] == false),
        "{v}"
    );
}

#[test]
fn beyond_the_concurrency_limit_requests_get_503_with_retry_after() {
    let mut c = config();
    c.limits.max_concurrent_requests = 1;
    let api = Api::new(c);
    let slow = tempfile::tempdir().unwrap();
    write_bundle(
        slow.path(),
        "[bundle]\nformat = 1\nname = \"slow\"\nrevision = \"1\"\n[[rule]]\nname = \"s\"\ncomponent = \"sleep.wasm\"\nsettings = { seconds = 1 }\nlimits = { timeout_ms = 5000 }\n",
    );
    std::fs::copy(
        rulebox_tests::guest_path("hostile_sleep"),
        slow.path().join("sleep.wasm"),
    )
    .unwrap();
    api.rt
        .block_on(api.state.registry().load(slow.path()))
        .unwrap();
    let state = api.state.clone();
    let held = api.rt.spawn(async move {
        let req = Request::post("/v1/bundles/slow/evaluate")
            .header(header::AUTHORIZATION, "Bearer tok-evaluator")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"input":{}}"#))
            .unwrap();
        router(state).oneshot(req).await.unwrap().status()
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (s, v, headers) = api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None);
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"))
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(api.rt.block_on(held).unwrap(), StatusCode::OK);
    assert_eq!(
        api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None)
            .0,
        StatusCode::OK
    );
}

#[test]
fn the_example_config_loads_in_every_profile_and_prod_demands_credentials() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rulebox.toml");
    let dev = ServerConfig::load(Some(&path), Some("dev")).unwrap();
    assert!(dev.auth.anonymous_loopback_evaluator);
    let prod = ServerConfig::load(Some(&path), Some("prod")).unwrap();
    assert_eq!((prod.limits.max_batch, prod.auth.tokens.len()), (50, 2));
    assert!(prod.redacted().contains("sha256 = \"<redacted>\""));
    assert!(!prod.redacted().contains(&"0".repeat(64)));
    assert_eq!(prod.engine.core_instances_per_rule, 16);
    // Health thresholds per profile: lenient in dev, strict in prod, the file's otherwise.
    let staging = ServerConfig::load(Some(&path), Some("staging")).unwrap();
    let p99 = |c: &ServerConfig| c.health.p99_ms.warning;
    assert_eq!((p99(&dev), p99(&staging), p99(&prod)), (500.0, 50.0, 20.0));
    assert_eq!(staging.alerts.rules.len(), 2);
    let mut bad = staging.clone();
    bad.health.error_rate.warning = 0.5;
    let err = bad.validate().unwrap_err();
    assert!(err.contains("health.error_rate"), "{err}");
    bad = staging.clone();
    bad.alerts.rules[1].name = bad.alerts.rules[0].name.clone();
    let err = bad.validate().unwrap_err();
    assert!(err.contains("alerts.rules[1].name"), "{err}");
    let err = ServerConfig::load(Some(&path), Some("qa"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no [profile.qa]"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[profile.prod]\nlisten = \"0.0.0.0:1\"\n").unwrap();
    let err = ServerConfig::load(Some(&file), Some("prod"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml") && err.contains("auth.tokens: the prod profile needs credentials"),
        "{err}"
    );
    std::fs::write(&file, "[limits]\nmax_btach = 3\n").unwrap();
    let err = ServerConfig::load(Some(&file), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("c.toml") && err.contains("max_btach") && err.contains("limits"),
        "{err}"
    );
    std::fs::write(
        &file,
        "[[auth.tokens]]\nname = \"x\"\nsha256 = \"rbx_plaintext\"\nrole = \"admin\"\n",
    )
    .unwrap();
    let err = ServerConfig::load(Some(&file), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.tokens[0].sha256: not 64 hex digits"),
        "{err}"
    );
}

#[test]
fn serves_over_a_real_socket_and_shuts_down_gracefully() {
    use std::io::{Read, Write};
    let rt = rulebox_tests::rt();
    let mut c = config();
    c.auth.anonymous_loopback_evaluator = true;
    let bundles = tempfile::tempdir().unwrap();
    rulebox_tests::copy_dir(
        &example_bundle("payments"),
        &bundles.path().join("payments"),
    );
    c.bundles.dir = Some(bundles.path().to_owned());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(rulebox_server::serve(c, listener, async {
        let _ = stopped.await;
    }));
    let http = |req: String| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // The watched directory loads the bundle: wait for readiness.
    let mut ready = String::new();
    for _ in 0..200 {
        ready = http("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // Anonymous evaluation from loopback (the dev setting) works over the socket.
    let body = format!("{{\"input\": {ORDER}}}");
    let out = http(format!(
        "POST /v1/bundles/payments/evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"verdict\":\"allow\""), "{out}");
    // ... but not administration.
    let out =
        http("DELETE /v1/bundles/payments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "stopped listening"
    );
}

#[test]
fn each_credential_has_its_own_rate_limit_and_rejections_are_counted() {
    let mut c = config();
    c.rate_limits.viewer = rulebox_server::Rate {
        per_second: 1,
        burst: 2,
    };
    let api = Api::new(c);
    let get = |who: &str| api.call("GET", "/v1/bundles", Some(who), Body::empty(), None);
    assert_eq!(get("viewer").0, StatusCode::OK);
    assert_eq!(get("viewer").0, StatusCode::OK);
    let (s, v, headers) = get("viewer");
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate-limited")),
        "{v}"
    );
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another credential has its own bucket (operators read too).
    assert_eq!(get("operator").0, StatusCode::OK);
    let (s, stats, _) = api.call(
        "GET",
        "/v1/server/stats",
        Some("operator"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert_eq!(stats["rejected"]["rate_limited"], 1, "{stats}");
    assert_eq!(stats["rejected"]["rate_limiter_keys"], 2, "{stats}");
    // The bucket refills.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(get("viewer").0, StatusCode::OK);
    let mut bad = config();
    bad.rate_limits.operator.burst = 0;
    assert!(bad.validate().unwrap_err().contains("rate_limits.operator"));
    let mut bad = config();
    bad.cache.redis_url = Some("http://127.0.0.1:6379".into());
    let err = bad.validate().unwrap_err();
    assert!(
        err.starts_with("cache.redis_url: `http://127.0.0.1:6379`"),
        "{err}"
    );
}

#[test]
fn config_reload_swaps_credentials_and_limits_or_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rulebox.toml");
    let hash = |t: &str| hex::encode(sha2::Sha256::digest(format!("tok-{t}")));
    let write = |extra: &str| {
        std::fs::write(
            &file,
            format!(
                "[limits]\nmax_batch = 5\n[[auth.tokens]]\nname = \"admin\"\nsha256 = \"{}\"\nrole = \"admin\"\n{extra}",
                hash("admin")
            ),
        )
        .unwrap();
    };
    write("");
    let api = Api::new(ServerConfig::load(Some(&file), None).unwrap());
    let reload = |who: &str| {
        let (s, v, _) = api.call(
            "POST",
            "/v1/admin/config/reload",
            Some(who),
            Body::empty(),
            None,
        );
        (s, v)
    };
    assert_eq!(
        api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None)
            .0,
        StatusCode::UNAUTHORIZED
    );
    // A new credential and a new limit take effect on reload.
    write(&format!(
        "[[auth.tokens]]\nname = \"viewer\"\nsha256 = \"{}\"\nrole = \"viewer\"\n",
        hash("viewer")
    ));
    assert_eq!(reload("admin").0, StatusCode::OK);
    assert_eq!(
        api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None)
            .0,
        StatusCode::OK
    );
    assert_eq!(
        reload("viewer").0,
        StatusCode::FORBIDDEN,
        "only admins reload"
    );
    // An invalid file, or a key that needs a restart: refused, the running config kept.
    std::fs::write(&file, "[limits]\nmax_batch = \"many\"\n").unwrap();
    let (s, v) = reload("admin");
    assert_eq!(
        (s, v["error"]["kind"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("config-invalid")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_batch"),
        "{v}"
    );
    // The same credentials as running, but another address: that needs a restart.
    write(&format!(
        "[[auth.tokens]]\nname = \"viewer\"\nsha256 = \"{}\"\nrole = \"viewer\"\n",
        hash("viewer")
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("listen = \"127.0.0.1:1\"\n{text}")).unwrap();
    let (s, v) = reload("admin");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`listen` changed"),
        "{v}"
    );
    assert_eq!(
        api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None)
            .0,
        StatusCode::OK,
        "still the reloaded config"
    );
}

/// JWTs from three issuers' keys (HS256, RS256, EdDSA): each accepted only with its own
/// algorithm, and `exp`, `nbf`, `iss`, `aud`, the roles claim and the bundle scope enforced.
#[test]
fn jwt_credentials_are_verified_with_pinned_keys_and_claims() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use rulebox_server::{JwtAlgorithm, JwtConfig, JwtKey};
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let secret = b"0123456789abcdef0123456789abcdef-test-secret";
    std::fs::write(dir.path().join("hs.secret"), secret).unwrap();
    let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let pem = ed
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        std::fs::write(dir.path().join("ed.pub.pem"), pem).unwrap();
    }
    let ed_private = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        ed.to_pkcs8_pem(Default::default()).unwrap().to_string()
    };
    let key = |kid: Option<&str>, algorithm, file: std::path::PathBuf| JwtKey {
        kid: kid.map(str::to_owned),
        algorithm,
        file,
    };
    let mut c = config();
    c.auth.jwt = Some(JwtConfig {
        keys: vec![
            key(None, JwtAlgorithm::HS256, dir.path().join("hs.secret")),
            key(
                Some("rsa-1"),
                JwtAlgorithm::RS256,
                fixtures.join("jwt-rs256-test-public.pem"),
            ),
            key(
                Some("ed-1"),
                JwtAlgorithm::EdDSA,
                dir.path().join("ed.pub.pem"),
            ),
        ],
        issuer: "https://idp.example".into(),
        audience: "rulebox".into(),
        roles_claim: "roles".into(),
        bundles_claim: "bundles".into(),
        leeway_s: 0,
    });
    let api = Api::new(c);
    api.rt
        .block_on(api.state.registry().load(&example_bundle("payments")))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = |patch: Value| {
        let mut c = json!({
            "sub": "checkout", "iss": "https://idp.example", "aud": ["other", "rulebox"],
            "exp": now + 300, "nbf": now - 10, "roles": ["evaluator", "some-other-app-role"],
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let rsa = std::fs::read(fixtures.join("jwt-rs256-test-private.pem")).unwrap();
    let sign = |alg: Algorithm, kid: Option<&str>, claims: &Value| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let key = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(secret),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&rsa).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(ed_private.as_bytes()).unwrap(),
            _ => unreachable!(),
        };
        encode(&header, claims, &key).unwrap()
    };
    let eval = |jwt: &str, bundle: &str| {
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1/bundles/{bundle}/evaluate"))
            .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"input": order()}).to_string()))
            .unwrap();
        api.rt.block_on(async {
            let resp = router(api.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (
                status,
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        })
    };
    let good = claims(json!({}));
    for (alg, kid) in [
        (Algorithm::HS256, None),
        (Algorithm::RS256, Some("rsa-1")),
        (Algorithm::EdDSA, Some("ed-1")),
    ] {
        let (s, m) = eval(&sign(alg, kid, &good), "payments");
        assert_eq!(s, StatusCode::OK, "{alg:?}: {m}");
    }
    let refused = |jwt: String, want: StatusCode, says: &str| {
        let (s, m) = eval(&jwt, "payments");
        assert_eq!(s, want, "{m}");
        assert!(m.contains(says), "`{m}` should say `{says}`");
    };
    let unauthorized = StatusCode::UNAUTHORIZED;
    refused(
        sign(Algorithm::HS256, None, &claims(json!({"exp": now - 5}))),
        unauthorized,
        "expired",
    );
    refused(
        sign(Algorithm::HS256, None, &claims(json!({"exp": null}))),
        unauthorized,
        "`exp`",
    );
    refused(
        sign(
            Algorithm::RS256,
            Some("rsa-1"),
            &claims(json!({"nbf": now + 120})),
        ),
        unauthorized,
        "not valid yet",
    );
    refused(
        sign(
            Algorithm::EdDSA,
            Some("ed-1"),
            &claims(json!({"iss": "https://evil"})),
        ),
        unauthorized,
        "issuer",
    );
    refused(
        sign(
            Algorithm::HS256,
            None,
            &claims(json!({"aud": "someone-else"})),
        ),
        unauthorized,
        "audience",
    );
    // Pinned algorithms: the RSA key's kid on an HS256 token (signed with the RSA public key
    // as the HMAC secret: the classic confusion) finds no key.
    let public_rsa = std::fs::read(fixtures.join("jwt-rs256-test-public.pem")).unwrap();
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("rsa-1".into());
    let forged = encode(&confused, &good, &EncodingKey::from_secret(&public_rsa)).unwrap();
    refused(
        forged,
        unauthorized,
        "no configured key for algorithm HS256",
    );
    // alg `none`: unsigned tokens are not JWTs we take.
    let body = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!("{}.{}.", body(&json!({"alg": "none"})), body(&good));
    assert_eq!(eval(&unsigned, "payments").0, unauthorized);
    // A signature by another HS256 secret.
    let other = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    refused(other, unauthorized, "bad signature");
    // Roles from the claim: none known is 403; a viewer may not evaluate.
    refused(
        sign(
            Algorithm::HS256,
            None,
            &claims(json!({"roles": ["billing"]})),
        ),
        StatusCode::FORBIDDEN,
        "no rulebox role in claim `roles`",
    );
    refused(
        sign(Algorithm::HS256, None, &claims(json!({"roles": "viewer"}))),
        StatusCode::FORBIDDEN,
        "may not do this",
    );
    // Scope from the claim.
    let scoped = sign(
        Algorithm::EdDSA,
        Some("ed-1"),
        &claims(json!({"bundles": ["payments"]})),
    );
    assert_eq!(eval(&scoped, "payments").0, StatusCode::OK);
    assert_eq!(eval(&scoped, "other").0, StatusCode::FORBIDDEN);
}

#[test]
fn jwt_keys_are_checked_when_the_server_starts() {
    use rulebox_server::{JwtAlgorithm, JwtConfig, JwtKey};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short"), "too-short").unwrap();
    std::fs::write(dir.path().join("not-pem"), "hello").unwrap();
    let rt = rulebox_tests::rt();
    for (algorithm, file, says) in [
        (JwtAlgorithm::HS256, "short", "at least 32 bytes"),
        (JwtAlgorithm::RS256, "not-pem", "not a PEM RSA public key"),
        (JwtAlgorithm::EdDSA, "missing", "auth.jwt.keys[0].file"),
    ] {
        let mut c = config();
        c.auth.jwt = Some(JwtConfig {
            keys: vec![JwtKey {
                kid: None,
                algorithm,
                file: dir.path().join(file),
            }],
            issuer: "i".into(),
            audience: "a".into(),
            roles_claim: "roles".into(),
            bundles_claim: "bundles".into(),
            leeway_s: 0,
        });
        let err = rt.block_on(async { AppState::new(c) }).err().unwrap();
        assert!(err.contains(says), "{err}");
    }
}

/// `GET /metrics` after real traffic: the counts match what was done, labels are route
/// templates (never raw paths or ids), and Prometheus's own `promtool check metrics` accepts
/// the scrape.
#[test]
fn metrics_count_what_happened_and_pass_promtool() {
    let mut c = config();
    c.rate_limits.viewer = rulebox_server::Rate {
        per_second: 1,
        burst: 1,
    };
    let log_dir = tempfile::tempdir().unwrap();
    c.decision_log.path = Some(log_dir.path().join("decisions.sqlite"));
    let redis = rulebox_tests::RedisServer::start();
    c.cache.redis_url = Some(redis.url());
    let api = Api::new(c);
    api.rt
        .block_on(api.state.registry().load(&example_bundle("payments")))
        .unwrap();
    for _ in 0..3 {
        let (s, v) = api.json(
            "POST",
            "/v1/bundles/payments/evaluate",
            Some("evaluator"),
            json!({"input": order(), "request_id": "secret-request-id"}),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = api.json(
        "POST",
        "/v1/bundles/nope/evaluate",
        Some("evaluator"),
        json!({"input": order()}),
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The viewer's bucket holds one request: the second is rate-limited.
    let statuses: Vec<StatusCode> = (0..2)
        .map(|_| {
            api.call("GET", "/v1/bundles", Some("viewer"), Body::empty(), None)
                .0
        })
        .collect();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    // A failed load, counted by step.
    let (s, _, _) = api.call(
        "PUT",
        "/v1/bundles/up",
        Some("operator"),
        Body::from(archive("up", "1", "deny")),
        Some("application/gzip"),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Registry events reach the metrics through a channel: wait for them.
    let mut text = String::new();
    for _ in 0..100 {
        let (s, body) = api.rt.block_on(async {
            let req = Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap();
            let resp = router(api.state.clone()).oneshot(req).await.unwrap();
            let s = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (s, String::from_utf8(bytes.to_vec()).unwrap())
        });
        assert_eq!(s, StatusCode::OK);
        text = body;
        if text.contains("rulebox_bundle_failed_loads_total{bundle=\"up\",step=\"test\"} 1")
            && text.contains("rulebox_decision_log_entries_total{result=\"written\"} 3")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    has("rulebox_decisions_total{bundle=\"payments\",verdict=\"allow\"} 3");
    has(
        "rulebox_http_requests_total{route=\"/v1/bundles/{name}/evaluate\",method=\"POST\",code=\"200\"} 3",
    );
    has(
        "rulebox_http_requests_total{route=\"/v1/bundles/{name}/evaluate\",method=\"POST\",code=\"404\"} 1",
    );
    has("rulebox_http_requests_total{route=\"/v1/bundles\",method=\"GET\",code=\"429\"} 1");
    has("rulebox_rejected_requests_total{reason=\"rate-limited\"} 1");
    has("rulebox_bundle_activations_total{bundle=\"payments\"} 1");
    has("rulebox_bundle_failed_loads_total{bundle=\"up\",step=\"test\"} 1");
    // The risk rule ran once, then came from the cache; the sanctions rule (a grant, so
    // not cached) ran every time.
    has(
        "rulebox_rule_evaluations_total{bundle=\"payments\",rule=\"risk\",verdict=\"allow\",error_kind=\"\",cached=\"false\"} 1",
    );
    has(
        "rulebox_rule_evaluations_total{bundle=\"payments\",rule=\"risk\",verdict=\"allow\",error_kind=\"\",cached=\"true\"} 2",
    );
    has("rulebox_rule_duration_seconds_count{bundle=\"payments\",rule=\"sanctions\"} 3");
    assert!(text.contains("rulebox_build_info{version=\""), "{text}");
    // The bundle load refused above costs the failed-loads component its warning share.
    assert!(text.contains("rulebox_health_score 98\n"), "{text}");
    assert!(
        text.contains("rulebox_health_deduction{component=\"failed_loads\"} 2.5\n"),
        "{text}"
    );
    assert!(
        text.contains("rulebox_alerts_firing{severity=\"critical\"} 0"),
        "{text}"
    );
    // Read from the library on each scrape: the cache, the engine, the decision log.
    has("rulebox_decision_log_entries_total{result=\"written\"} 3");
    has("rulebox_decision_log_entries_total{result=\"dropped\"} 0");
    has("rulebox_decision_log_queue_depth 0");
    has("rulebox_evaluations_in_flight{state=\"running\"} 0");
    let l1_hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rulebox_cache_lookups_total{result=\"l1-hit\"} "))
        .unwrap_or_else(|| panic!("no cache lookups in:\n{text}"))
        .parse()
        .unwrap();
    assert!(
        l1_hits >= 5,
        "two risk and three amount-limit hits at least: {l1_hits}"
    );
    // Never ids or raw paths in labels.
    for secret in [
        "secret-request-id",
        "/v1/bundles/nope",
        "/v1/bundles/payments",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked into:\n{text}");
    }
    // What Prometheus asks for, it gets: OpenMetrics.
    let (ct, om) = api.rt.block_on(async {
        let req = Request::builder()
            .uri("/metrics")
            .header(
                header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .body(Body::empty())
            .unwrap();
        let resp = router(api.state.clone()).oneshot(req).await.unwrap();
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (ct, String::from_utf8(bytes.to_vec()).unwrap())
    });
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE rulebox_decisions counter"));
    has("rulebox_cache_l2_breaker_state{state=\"closed\"} 1");
    // The shipped Prometheus rules and Grafana dashboard name only metrics this scrape has.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["prometheus/rulebox.rules.yml", "grafana/rulebox.json"] {
        let shipped = std::fs::read_to_string(deploy.join(file)).unwrap();
        let names: std::collections::BTreeSet<String> = shipped
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.starts_with("rulebox_"))
            .map(str::to_owned)
            .collect();
        assert!(names.len() >= 8, "{file}: {names:?}");
        for name in &names {
            assert!(
                text.lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(name.as_str())),
                "deploy/{file} names `{name}`, which /metrics does not have"
            );
        }
    }
    // Prometheus's linter, on this very scrape.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install prometheus"));
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The decision log: every decision lands in the SQLite file with its masks applied, and
/// `GET /v1/decisions` filters, pages and scopes it.
#[test]
fn decisions_are_logged_masked_and_queryable_within_scope() {
    use rulebox_server::{LogMode, Mask, MaskAction};
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.decision_log.path = Some(dir.path().join("decisions.sqlite"));
    c.decision_log.mode = LogMode::Async;
    c.decision_log.mask.insert(
        "payments".into(),
        vec![
            Mask {
                pointer: "/customer/country".into(),
                action: MaskAction::Hash,
            },
            Mask {
                pointer: "/order/currency".into(),
                action: MaskAction::Erase,
            },
        ],
    );
    c.auth
        .tokens
        .push(token("scoped-viewer", Role::Viewer, Some(&["up"])));
    let api = Api::with_config(c);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, v) = api.json(
            "POST",
            "/v1/bundles/payments/evaluate",
            Some("evaluator"),
            json!({"input": order(), "request_id": format!("r-{i}")}),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["decision_id"].as_str().unwrap().to_owned());
    }
    let stats = || {
        api.call(
            "GET",
            "/v1/server/stats",
            Some("viewer"),
            Body::empty(),
            None,
        )
        .1["decision_log"]
            .clone()
    };
    for _ in 0..200 {
        if stats()["written"] == 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(stats()["written"], 5, "{}", stats());
    assert_eq!(stats()["dropped"], 0);

    let (s, d, _) = api.call(
        "GET",
        &format!("/v1/decisions/{}", ids[2]),
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (&d["bundle"], &d["verdict"], &d["request_id"], &d["subject"]),
        (
            &json!("payments"),
            &json!("allow"),
            &json!("r-2"),
            &json!("evaluator")
        )
    );
    assert_eq!(d["input"]["order"]["currency"], "<erased>");
    assert!(
        d["input"]["customer"]["country"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(d["input"]["order"]["amount"], 20, "unmasked fields stay");
    assert_eq!(d["masked"], json!(["/customer/country", "/order/currency"]));
    assert_eq!(d["rules"].as_array().unwrap().len(), 3);
    assert!(d["rules"][0]["fuel"].is_u64() && d["rules"][0]["cached"].is_boolean());

    // Newest first, paged.
    let (_, page, _) = api.call(
        "GET",
        "/v1/decisions?bundle=payments&limit=2",
        Some("viewer"),
        Body::empty(),
        None,
    );
    let got: Vec<&str> = page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["next_cursor"].as_i64().unwrap();
    let (_, next, _) = api.call(
        "GET",
        &format!("/v1/decisions?limit=10&cursor={cursor}"),
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(next["decisions"].as_array().unwrap().len(), 3);
    assert!(next["next_cursor"].is_null());
    let (_, none, _) = api.call(
        "GET",
        "/v1/decisions?verdict=deny",
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(none["decisions"], json!([]));
    // Scope: a viewer of `up` sees none of them, and the id is "no such decision".
    let (_, scoped, _) = api.call(
        "GET",
        "/v1/decisions",
        Some("scoped-viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(scoped["decisions"], json!([]));
    let (s, _, _) = api.call(
        "GET",
        &format!("/v1/decisions/{}", ids[0]),
        Some("scoped-viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = api.call(
        "GET",
        "/v1/decisions?bundle=payments",
        Some("scoped-viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e, _) = api.call(
        "GET",
        "/v1/decisions?colour=red",
        Some("viewer"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // Filters on the rules: every decision ran `amount-limit`; none failed.
    let get = |uri: &str, who: &str| {
        let (s, v, _) = api.call("GET", uri, Some(who), Body::empty(), None);
        (s, v)
    };
    let (_, by_rule) = get("/v1/decisions?rule=amount-limit&since=1h", "viewer");
    assert_eq!(by_rule["decisions"].as_array().unwrap().len(), 5);
    let (_, by_kind) = get("/v1/decisions?error_kind=timeout", "viewer");
    assert_eq!(by_kind["decisions"], json!([]));
    let (_, future) = get("/v1/decisions?since=2999-01-01T00:00:00Z", "viewer");
    assert_eq!(future["decisions"], json!([]));
    let (s, e) = get("/v1/decisions?since=yesterday-ish", "viewer");
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("since"),
        "{e}"
    );

    // Statistics from the rollups: of decisions by default, of rule evaluations by rule.
    let (s, st) = get(
        "/v1/decisions/stats?group_by=verdict&interval=1h&since=1h",
        "viewer",
    );
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st["of"], "decisions");
    let total: u64 = st["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5, "{st}");
    assert!(
        st["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["verdict"] == "allow")
    );
    let p = &st["points"][0];
    assert!(p["wall_us"]["p99"].as_u64().unwrap() <= p["wall_us"]["max"].as_u64().unwrap());
    assert!(p["fuel"]["sum"].as_u64().unwrap() > 0, "{p}");
    let (_, st) = get(
        "/v1/decisions/stats?group_by=rule,verdict&interval=1h",
        "viewer",
    );
    assert_eq!(st["of"], "rule-evaluations");
    let mut per_rule: Vec<(String, u64)> = st["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["rule"].as_str().unwrap().to_owned(),
                p["count"].as_u64().unwrap(),
            )
        })
        .collect();
    per_rule.sort();
    // (A decision made across an hour boundary would split a rule's count in two points.)
    let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
    for (r, n) in per_rule {
        *merged.entry(r).or_default() += n;
    }
    assert_eq!(
        merged.into_iter().collect::<Vec<_>>(),
        [
            ("amount-limit".into(), 5),
            ("risk".into(), 5),
            ("sanctions".into(), 5)
        ]
    );
    for bad in [
        "/v1/decisions/stats?interval=30s",
        "/v1/decisions/stats?group_by=colour",
        "/v1/decisions/stats?since=1h&until=2h",
    ] {
        let (s, e) = get(bad, "viewer");
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }
    let (_, scoped) = get("/v1/decisions/stats?group_by=bundle", "scoped-viewer");
    assert_eq!(
        scoped["points"],
        json!([]),
        "scope applies to statistics too"
    );
    // Evaluators cannot read the log.
    let (s, _, _) = api.call(
        "GET",
        "/v1/decisions",
        Some("evaluator"),
        Body::empty(),
        None,
    );
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// The shipped Prometheus rules load (`promtool check rules`) and their alerts fire on the
/// series they are for (`promtool test rules`).
#[test]
fn shipped_prometheus_rules_pass_promtool() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        ["check", "rules", "rulebox.rules.yml"],
        ["test", "rules", "rulebox.rules.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install prometheus"));
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Sync mode through the batch endpoint: every item answered `ok` is already in the file
/// when the response arrives.
#[test]
fn a_sync_batch_answers_only_committed_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.sqlite");
    let mut c = config();
    c.decision_log.path = Some(db.clone());
    c.decision_log.mode = rulebox_server::LogMode::Sync;
    let api = Api::with_config(c);
    let (s, v) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate/batch",
        Some("evaluator"),
        json!({"inputs": [order(), order(), "not an object"]}),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    let oks: Vec<&str> = results
        .iter()
        .filter(|r| r["ok"] == true)
        .map(|r| r["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(oks.len(), 2, "{v}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for id in oks {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM decisions WHERE id = ?", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "{id} answered ok but not committed");
    }
}

/// Retention: detail past `retention_days` is deleted by the writer (in batches, between
/// writes) after it was rolled up, so statistics still count it; rollups past
/// `rollup_days` go too.
#[test]
fn old_detail_is_rolled_up_before_retention_deletes_it() {
    use rulebox_server::DecisionLogConfig;
    use rulebox_server::decisions::{DecisionLog, GroupBy, StatsQuery, now_ms};
    const DAY: u64 = 24 * 3600 * 1000;
    let api = Api::with_payments();
    let bundle = api.state.registry().get("payments").unwrap();
    let eval = |amount: u64| {
        let mut input = order();
        input["order"]["amount"] = amount.into();
        let input = rulebox::Input::from_value(input).unwrap();
        let result = api.rt.block_on(bundle.evaluate(&input)).unwrap();
        (result, input)
    };
    let (allow, allow_input) = eval(20);
    let (deny, deny_input) = eval(12_000);
    assert_eq!(
        (allow.verdict.as_str(), deny.verdict.as_str()),
        ("allow", "deny")
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let config = DecisionLogConfig {
        path: Some(path.clone()),
        retention_days: 7,
        rollup_days: 30,
        retention_check_ms: 20,
        ..DecisionLogConfig::default()
    };
    let log = DecisionLog::open(&config).unwrap().unwrap();
    let now = now_ms();
    // Enough ten-day-old rows that retention needs several batches.
    let mut n = 0;
    let mut put = |at: u64, (result, input): (&rulebox::BundleResult, &rulebox::Input)| {
        n += 1;
        // A full queue here would be the test's fault: it queues at most the queue size.
        log.enqueue(&format!("d{n}"), at, result, input.value(), None, "test")
            .unwrap();
    };
    for i in 0..6000u64 {
        let pair = if i % 3 == 0 {
            (&deny, &deny_input)
        } else {
            (&allow, &allow_input)
        };
        put(now - 10 * DAY + i, pair);
    }
    for i in 0..10 {
        put(now - 40 * DAY + i, (&deny, &deny_input));
    }
    for i in 0..5 {
        put(now - i, (&allow, &allow_input));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.stats().pruned < 6010 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let stats = log.stats();
    assert_eq!(
        (stats.written, stats.pruned, stats.failed),
        (6015, 6010, 0),
        "{stats:?}"
    );

    let reader = log.reader();
    let all = rulebox_server::decisions::Filter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        reader.query(&all).unwrap().0.len(),
        5,
        "only the recent detail is left"
    );
    let per_day = reader
        .stats(&StatsQuery {
            since_ms: now - 60 * DAY,
            until_ms: now + 1,
            interval_ms: DAY,
            group_by: vec![GroupBy::Verdict],
            bundle: None,
            rule: None,
            scope: None,
        })
        .unwrap();
    let counts: Vec<(String, u64)> = per_day["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["verdict"].as_str().unwrap().to_owned(),
                p["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // The ten-day-old day survives as rollups (2000 deny, 4000 allow); the forty-day-old
    // rollups are gone; today's 5 are there. (A day boundary inside `now - i` ms would
    // split today's point, hence the sum.)
    let sum = |v: &str| {
        counts
            .iter()
            .filter(|(x, _)| x == v)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!((sum("deny"), sum("allow")), (2000, 4005), "{per_day}");
    drop(log);
    // The same file read by another process's reader (what `rulebox decisions` does).
    let again = rulebox_server::decisions::LogReader::open(&path).unwrap();
    assert_eq!(again.query(&all).unwrap().0.len(), 5);
}

/// A rule driven into timeouts: the health score drops with the reason named, `/readyz?
/// min_score` refuses, and an alert goes pending, fires (a webhook this test runs gets it,
/// the state is kept in SQLite), and resolves once the timeouts leave the window.
#[test]
fn health_and_alerts_follow_a_rule_into_timeouts_and_back() {
    use rulebox_server::{AlertRule, Comparison, Severity, Signal};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decisions.db");
    let rt = rulebox_tests::rt();
    // The webhook receiver: records every JSON body.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hook = {
        let received = received.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    StatusCode::NO_CONTENT
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    };
    let mut c = config();
    c.bundles.required = vec!["loops".into()];
    c.decision_log.path = Some(db.clone());
    c.health.window_s = 2;
    c.health.min_samples = 3;
    c.alerts.interval_ms = 100;
    c.alerts.webhooks = vec![hook];
    c.alerts.rules = vec![AlertRule {
        name: "loops-timing-out".into(),
        signal: Signal::TimeoutRatio,
        bundle: Some("loops".into()),
        rule: None,
        op: Comparison::Above,
        threshold: 0.5,
        for_s: 1,
        severity: Severity::Critical,
    }];
    let state = rt.block_on(async { AppState::new(c).unwrap() });
    let api = Api { state, rt };
    let bundle = tempfile::tempdir().unwrap();
    write_bundle(
        bundle.path(),
        "[bundle]\nformat = 1\nname = \"loops\"\nrevision = \"1\"\n[[rule]]\nname = \"spin\"\ncomponent = \"spin.wasm\"\nlimits = { timeout_ms = 20 }\n",
    );
    std::fs::copy(
        rulebox_tests::guest_path("hostile_infinite_loop"),
        bundle.path().join("spin.wasm"),
    )
    .unwrap();
    api.rt
        .block_on(api.state.registry().load(bundle.path()))
        .unwrap();
    let get = |uri: &str| {
        let (s, v, _) = api.call("GET", uri, Some("viewer"), Body::empty(), None);
        (s, v)
    };
    let (s, healthy) = get("/v1/health");
    assert_eq!(s, StatusCode::OK, "{healthy}");
    assert_eq!(healthy["score"], 100, "{healthy}");
    assert_eq!(
        api.call("GET", "/v1/health", Some("evaluator"), Body::empty(), None)
            .0,
        StatusCode::FORBIDDEN
    );

    // Timeouts for 1.5 s: more than the alert's `for` of 1 s.
    let started = std::time::Instant::now();
    let mut timeouts = 0;
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        let (s, v) = api.json(
            "POST",
            "/v1/bundles/loops/evaluate",
            Some("evaluator"),
            json!({"input": {}}),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        let kind = v["rules"][0]["error"]["kind"].as_str().unwrap();
        assert!(["timeout", "fuel-exhausted"].contains(&kind), "{v}");
        timeouts += 1;
    }
    assert!(timeouts >= 3);
    let (_, sick) = get("/v1/health");
    let component = |report: &Value, name: &str| {
        report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    let t = component(&sick, "timeout_ratio");
    assert_eq!(t["status"], "critical", "{sick}");
    assert!(t["reason"].as_str().unwrap().contains("timed out"), "{t}");
    assert!(sick["score"].as_u64().unwrap() <= 50, "{sick}");
    assert_eq!(sick["rules"][0]["rule"], "spin");
    assert!(sick["rules"][0]["timeouts"].as_u64().unwrap() >= 3);
    let (s, v, _) = api.call("GET", "/readyz?min_score=90", None, Body::empty(), None);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("below 90"),
        "{v}"
    );
    assert_eq!(
        api.call("GET", "/readyz", None, Body::empty(), None).0,
        StatusCode::OK
    );

    let wait_for = |what: &str, done: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let (_, alerts) = get("/v1/alerts");
            if done(&alerts) {
                return alerts;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {alerts}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let firing = wait_for("firing", &|a| a["alerts"][0]["state"] == "firing");
    assert_eq!(firing["persisted"], true);
    let resolved = wait_for("resolved", &|a| a["alerts"][0]["state"] == "inactive");
    let transitions: Vec<&str> = resolved["recent"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["pending", "firing", "resolved"], "{resolved}");
    // The webhook got the firing and the resolution (retries run off the request path).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while received.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = received.lock().unwrap().clone();
    let states: Vec<&str> = got.iter().map(|n| n["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["firing", "resolved"], "{got:?}");
    assert_eq!(
        (&got[0]["alert"], &got[0]["severity"], &got[0]["bundle"]),
        (
            &json!("loops-timing-out"),
            &json!("critical"),
            &json!("loops")
        )
    );
    assert!(got[0]["value"].as_f64().unwrap() > 0.5);
    // Kept in the SQLite file, for a restart.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let kept: String = conn
        .query_row(
            "SELECT state FROM alert_states WHERE alert = 'loops-timing-out'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, "inactive");
}

/// `metrics.enabled = false`: nothing is counted and `/metrics` is 404, while health still
/// sees the traffic.
#[test]
fn metrics_can_be_turned_off_without_blinding_health() {
    let mut c = config();
    c.metrics.enabled = false;
    let api = Api::with_config(c);
    let (s, _) = api.json(
        "POST",
        "/v1/bundles/payments/evaluate",
        Some("evaluator"),
        json!({"input": order()}),
    );
    assert_eq!(s, StatusCode::OK);
    let (s, e, _) = api.call("GET", "/metrics", None, Body::empty(), None);
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metrics.enabled"),
        "{e}"
    );
    let (_, h, _) = api.call("GET", "/v1/health", Some("viewer"), Body::empty(), None);
    let evaluated: u64 = h["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["evaluations"].as_u64().unwrap())
        .sum();
    assert_eq!(evaluated, 3, "{h}");
}

/// `[engine]` in the server's config reaches the engine: a pool sized below what a Python
/// rule needs refuses the Python bundle naming the setting (the default takes it), compiled
/// components go to `cache_dir`, and a bad engine value refuses the config, named.
#[test]
fn the_engine_section_configures_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let file = dir.path().join("rulebox.toml");
    std::fs::write(
        &file,
        format!(
            "[engine]\ncore_instances_per_rule = 4\ncache_dir = {:?}\n",
            cache.display().to_string()
        ),
    )
    .unwrap();
    let config = ServerConfig::load(Some(&file), None).unwrap();
    assert_eq!(config.engine.core_instances_per_rule, 4);
    let api = Api::new(config);
    let python = example_bundle("payments-python");
    let err = api
        .rt
        .block_on(api.state.registry().load(&python))
        .unwrap_err()
        .to_string();
    assert!(err.contains("core_instances_per_rule"), "{err}");
    api.rt
        .block_on(api.state.registry().load(&example_bundle("payments")))
        .unwrap();
    assert!(std::fs::read_dir(&cache).unwrap().next().is_some());

    let api = Api::new(ServerConfig::default());
    api.rt.block_on(api.state.registry().load(&python)).unwrap();

    std::fs::write(&file, "[engine]\nmax_instances = 0\n").unwrap();
    let err = ServerConfig::load(Some(&file), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("engine.max_instances"), "{err}");
}
