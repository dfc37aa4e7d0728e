//! `rulebox serve` as admins run it, with real components started on 127.0.0.1: two replicas
//! polling one bundle URL served by nginx and sharing one redis-server; a restart with the
//! bundle server down; revisions uploaded while wrk drives evaluations.

use rulebox_tests::{Nginx, RedisServer, ServeProcess, write_bundle};
use serde_json::{Value, json};
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_rulebox");

/// A `.tar.gz` of bundle `name`: two echo rules `a` and `b` whose reasons carry `marker`,
/// with a golden case expecting `expect` (`allow` passes; anything else fails the `test`
/// step).
fn archive(name: &str, marker: &str, expect: &str) -> Vec<u8> {
    archive_as(name, marker, marker, expect)
}

/// [`archive`] with a revision name of its own.
fn archive_as(name: &str, revision: &str, marker: &str, expect: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(
        dir.path(),
        &format!(
            r#"[bundle]
format = 1
name = "{name}"
revision = "{revision}"
[[rule]]
name = "a"
component = "echo.wasm"
reads = ["order.amount"]
settings = {{ reason = "{marker}" }}
[[rule]]
name = "b"
component = "echo.wasm"
reads = ["order.amount"]
settings = {{ reason = "{marker}" }}
[[test]]
input = {{}}
verdict = "{expect}"
"#
        ),
    );
    let out = dir.path().join("b.tar.gz");
    rulebox::bundle::pack(dir.path(), &out, None, &Default::default()).unwrap();
    std::fs::read(out).unwrap()
}

/// The reasons' markers of an evaluation of `name` on `server` (anonymous, from loopback).
fn markers(server: &ServeProcess, name: &str) -> Vec<String> {
    let (status, v) = server.http(
        "POST",
        &format!("/v1/bundles/{name}/evaluate"),
        &[("Content-Type", "application/json")],
        br#"{"input": {"order": {"amount": 5}}}"#,
    );
    if status != 200 {
        return vec![format!("HTTP {status}: {v}")];
    }
    v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().rsplit(' ').next().unwrap().to_owned())
        .collect()
}

const VIEWER: &str = "tok-viewer";

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(VIEWER));
    let path = dir.join("rulebox.toml");
    std::fs::write(
        &path,
        format!(
            r#"[auth]
anonymous_loopback_evaluator = true
[[auth.tokens]]
name = "viewer"
sha256 = "{hash}"
role = "viewer"
{extra}"#
        ),
    )
    .unwrap();
    path
}

fn source(server: &ServeProcess, name: &str) -> Value {
    let (status, v) = server.http(
        "GET",
        &format!("/v1/bundles/{name}"),
        &[("Authorization", &format!("Bearer {VIEWER}"))],
        b"",
    );
    if status != 200 {
        return Value::Null;
    }
    v
}

fn ready(server: &ServeProcess) -> bool {
    server.http("GET", "/readyz", &[], b"").0 == 200
}

/// `DIR/bundles`, holding the `pay` bundle (gen-1) as an archive, for `bundles.dir`.
fn watched_dir_with_pay(dir: &Path) -> std::path::PathBuf {
    let bundles = dir.join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::write(bundles.join("pay.tar.gz"), archive("pay", "gen-1", "allow")).unwrap();
    bundles
}

/// How many polls of `/NAME` nginx answered with `status`.
fn answered(nginx: &Nginx, name: &str, status: &str) -> usize {
    nginx
        .requests(name)
        .iter()
        .filter(|l| l.starts_with(status))
        .count()
}

#[test]
fn replicas_poll_one_url_with_etags_share_redis_and_keep_the_last_good_bundle() {
    let redis = RedisServer::start();
    let mut nginx = Nginx::start();
    nginx.publish("pay.tar.gz", &archive("pay", "gen-1", "allow"));
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<_> = dirs
        .iter()
        .map(|d| {
            write_config(
                d.path(),
                &format!(
                    r#"[bundles]
state_dir = "{state}"
[[bundles.urls]]
name = "pay"
url = "{url}"
interval_ms = 200
[cache]
redis_url = "{redis}"
"#,
                    state = d.path().join("state").display(),
                    url = nginx.url("pay.tar.gz"),
                    redis = redis.url(),
                ),
            )
        })
        .collect();
    let log = |i: usize| dirs[i].path().join("serve.log");
    let a = ServeProcess::start(BIN, &configs[0], &log(0));
    let mut b = ServeProcess::start(BIN, &configs[1], &log(1));
    for s in [&a, &b] {
        s.wait_for(60, "ready with gen-1", |s| {
            ready(s) && markers(s, "pay") == ["gen-1", "gen-1"]
        });
        assert_eq!(source(s, "pay")["source"]["kind"], "url");
    }
    // One shared result cache: what A decided, B finds in Redis.
    let input = br#"{"input": {"order": {"amount": 77}}}"#;
    let eval = |s: &ServeProcess| {
        s.http(
            "POST",
            "/v1/bundles/pay/evaluate",
            &[("Content-Type", "application/json")],
            input,
        )
        .1
    };
    let keys = || redis.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap();
    let before = keys();
    let first = eval(&a);
    assert_eq!(first["rules"][0]["cached"], false, "{first}");
    // A's writes to Redis are queued off the request path: wait for both rules' entries.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while keys() < before + 2 {
        assert!(
            std::time::Instant::now() < until,
            "A's results never reached Redis"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let from_b = eval(&b);
    assert_eq!(
        from_b["rules"][0]["cached"], true,
        "B found A's result: {from_b}"
    );

    // A new revision: both switch, each downloads it once, then 304s.
    nginx.publish("pay.tar.gz", &archive("pay", "gen-2", "allow"));
    for s in [&a, &b] {
        s.wait_for(60, "gen-2", |s| markers(s, "pay") == ["gen-2", "gen-2"]);
    }
    let unchanged = |s: &ServeProcess| source(s, "pay")["source"]["unchanged"].as_u64().unwrap();
    for s in [&a, &b] {
        let seen = unchanged(s);
        s.wait_for(30, "two more polls", |s| unchanged(s) >= seen + 2);
    }
    assert_eq!(
        answered(&nginx, "pay.tar.gz", "200"),
        4,
        "{:#?}",
        nginx.requests("pay.tar.gz")
    );
    assert!(answered(&nginx, "pay.tar.gz", "304") >= 4);
    let etag = source(&a, "pay")["source"]["etag"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(source(&b, "pay")["source"]["etag"], etag.as_str());
    let (_, listed) = a.http(
        "GET",
        "/v1/bundles",
        &[("Authorization", &format!("Bearer {VIEWER}"))],
        b"",
    );
    let listed = &listed["bundles"][0];
    assert_eq!(
        (
            &listed["name"],
            &listed["source"]["kind"],
            &listed["source"]["etag"]
        ),
        (&json!("pay"), &json!("url"), &json!(etag)),
        "{listed}"
    );

    // A broken revision (its golden case fails): both keep serving gen-2 and say why; each
    // downloads it once, then sends its ETag along and gets 304s.
    nginx.publish("pay.tar.gz", &archive("pay", "gen-3", "deny"));
    for s in [&a, &b] {
        s.wait_for(60, "the failed load reported", |s| {
            source(s, "pay")["source"]["failed_loads"] == 1
        });
        let status = source(s, "pay");
        assert_eq!(status["last_failure"]["step"], "test", "{status}");
        assert_eq!(status["source"]["last_result"], "load-failed", "{status}");
        assert_eq!(markers(s, "pay"), ["gen-2", "gen-2"]);
        let seen = unchanged(s);
        s.wait_for(30, "polls after the failure", |s| unchanged(s) >= seen + 2);
        assert_eq!(
            source(s, "pay")["source"]["failed_loads"],
            1,
            "downloaded once"
        );
    }
    assert_eq!(answered(&nginx, "pay.tar.gz", "200"), 6);
    let (_, metrics) = rulebox_tests::http(&a.addr, "GET", "/metrics", &[], b"");
    for line in [
        "rulebox_bundle_polls_total{bundle=\"pay\",result=\"updated\"} 2",
        "rulebox_bundle_polls_total{bundle=\"pay\",result=\"load-failed\"} 1",
        "rulebox_bundle_failed_loads_total{bundle=\"pay\",step=\"test\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    assert!(
        ready(&a) && ready(&b),
        "a failed poll does not make a replica unready"
    );

    // A restart while the bundle server is down: the kept archive serves at once.
    // Publish gen-2 again (a new file, so a new ETag): both replicas download it once.
    nginx.publish("pay.tar.gz", &archive("pay", "gen-2", "allow"));
    b.wait_for(30, "both replicas fetched the republished archive", |_| {
        answered(&nginx, "pay.tar.gz", "200") == 8
    });
    for s in [&a, &b] {
        s.wait_for(30, "the new ETag reported", |s| {
            let status = source(s, "pay");
            status["source"]["last_result"] == "unchanged"
                && status["source"]["etag"] != etag.as_str()
        });
    }
    b.kill();
    nginx.stop();
    let downloads = answered(&nginx, "pay.tar.gz", "200");
    let started = std::time::Instant::now();
    let b = ServeProcess::start(BIN, &configs[1], &log(1));
    b.wait_for(30, "ready from the kept archive", ready);
    let ready_after = started.elapsed();
    assert_eq!(markers(&b, "pay"), ["gen-2", "gen-2"]);
    let status = source(&b, "pay");
    assert_eq!(status["source"]["restored"], true, "{status}");
    b.wait_for(30, "a failed poll counted", |s| {
        source(s, "pay")["source"]["errors"].as_u64() > Some(0)
    });
    assert!(
        ready(&b),
        "the bundle server being down is not a reason to be unready"
    );
    // The bundle server back: the kept ETag gets a 304, nothing is downloaded again.
    nginx.restart();
    let seen = unchanged(&b);
    b.wait_for(30, "a 304 after the restart", |s| unchanged(s) > seen);
    assert_eq!(answered(&nginx, "pay.tar.gz", "200"), downloads);
    eprintln!("restarted replica ready after {ready_after:?} with the bundle server down");
}

/// Polled updates are told apart by content, not by the revision's name: an archive that
/// keeps the name but changes a rule is an update; the same bytes re-published are not.
#[test]
fn a_changed_archive_under_the_same_revision_name_is_an_update() {
    let nginx = Nginx::start();
    nginx.publish("pay.tar.gz", &archive_as("pay", "r1", "first", "allow"));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[bundles]\nstate_dir = \"{}\"\n[[bundles.urls]]\nname = \"pay\"\nurl = \"{}\"\ninterval_ms = 200\n",
            dir.path().join("state").display(),
            nginx.url("pay.tar.gz")
        ),
    );
    let server = ServeProcess::start(BIN, &config, &dir.path().join("serve.log"));
    server.wait_for(60, "the first archive", |s| {
        markers(s, "pay") == ["first", "first"]
    });
    nginx.publish("pay.tar.gz", &archive_as("pay", "r1", "second", "allow"));
    server.wait_for(60, "the changed archive", |s| {
        markers(s, "pay") == ["second", "second"]
    });
    let status = source(&server, "pay");
    assert_eq!(
        (&status["source"]["kind"], &status["source"]["updated"]),
        (&json!("url"), &json!(2)),
        "{status}"
    );
    // The same bytes again, under a new ETag: unchanged, and the new ETag is the one kept.
    let etag = status["source"]["etag"].clone();
    nginx.publish("pay.tar.gz", &archive_as("pay", "r1", "second", "allow"));
    server.wait_for(30, "the re-published archive polled", |s| {
        source(s, "pay")["source"]["etag"] != etag
    });
    let status = source(&server, "pay");
    assert_eq!(status["source"]["updated"], 2, "{status}");
    assert_eq!(status["source"]["kind"], "url", "{status}");
}

#[test]
fn polled_archives_over_the_size_cap_are_refused_while_streaming() {
    let nginx = Nginx::start();
    nginx.publish("big.tar.gz", &vec![0u8; 64 << 10]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"[limits]
max_upload_bytes = 4096
[bundles]
state_dir = "{}"
[[bundles.urls]]
name = "big"
url = "{}"
interval_ms = 200
"#,
            dir.path().join("state").display(),
            nginx.url("big.tar.gz")
        ),
    );
    let server = ServeProcess::start(BIN, &config, &dir.path().join("serve.log"));
    let (status, v) = server.http("GET", "/readyz", &[], b"");
    assert_eq!(status, 503);
    assert_eq!(
        v["error"]["missing"],
        json!(["big"]),
        "a polled bundle is required"
    );
    let log = dir.path().join("serve.log");
    server.wait_for(30, "the refusal logged", |_| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("over limits.max_upload_bytes (4096)")
    });
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("state/big"))
        .unwrap()
        .collect();
    assert!(kept.is_empty(), "nothing kept: {kept:?}");
}

/// wrk's script: POST an evaluation; count responses that are not 200, and "mixed" ones
/// whose markers name more than one revision; report the oldest and newest revision seen.
const WRK_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.body = '{"input": {"order": {"amount": 5}}}'
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad_status = 0; mixed = 0; min_gen = 1000000; max_gen = 0 end
function response(status, headers, body)
  if status ~= 200 then bad_status = bad_status + 1; return end
  local first = nil
  for g in string.gmatch(body, "gen%-(%d+)") do
    if first == nil then first = g elseif g ~= first then mixed = mixed + 1; return end
  end
  if first == nil then mixed = mixed + 1; return end
  ok = ok + 1
  local n = tonumber(first)
  if n < min_gen then min_gen = n end
  if n > max_gen then max_gen = n end
end
function done(summary, latency, requests)
  local o, b, m, lo, hi = 0, 0, 0, 1000000, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); b = b + t:get("bad_status"); m = m + t:get("mixed")
    lo = math.min(lo, t:get("min_gen")); hi = math.max(hi, t:get("max_gen"))
  end
  io.write(string.format("RESULT ok=%d bad_status=%d mixed=%d min_gen=%d max_gen=%d\n", o, b, m, lo, hi))
end
"#;

#[test]
fn revisions_swap_under_load_without_a_failed_or_mixed_response() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let operator = "tok-operator";
    let config = write_config(
        dir.path(),
        &format!(
            r#"[[auth.tokens]]
name = "operator"
sha256 = "{}"
role = "operator"
[rate_limits]
evaluator = {{ per_second = 1000000, burst = 1000000 }}
operator = {{ per_second = 1000, burst = 1000 }}
[limits]
max_concurrent_requests = 256
"#,
            hex::encode(sha2::Sha256::digest(operator))
        ),
    );
    let server = ServeProcess::start(BIN, &config, &dir.path().join("serve.log"));
    let bearer = format!("Bearer {operator}");
    let put = |bytes: &[u8]| {
        server.http(
            "PUT",
            "/v1/bundles/swap",
            &[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/gzip"),
            ],
            bytes,
        )
    };
    // 20 good revisions and 5 that fail the gate, interleaved, built before the load starts.
    let revisions: Vec<(u32, bool, Vec<u8>)> = (1..=25)
        .map(|i| {
            let good = i % 5 != 3;
            let expect = if good { "allow" } else { "deny" };
            (i, good, archive("swap", &format!("gen-{i}"), expect))
        })
        .collect();
    assert_eq!(put(&revisions[0].2).0, 201);
    let script = dir.path().join("check.lua");
    std::fs::write(&script, WRK_SCRIPT).unwrap();
    let url = format!("http://{}/v1/bundles/swap/evaluate", server.addr);
    let wrk = std::thread::spawn(move || {
        std::process::Command::new("wrk")
            .args(["-t2", "-c16", "-d8s", "-s"])
            .arg(&script)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run wrk ({e}): install it (apt-get install wrk)"))
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    for (i, good, bytes) in &revisions[1..] {
        let (status, v) = put(bytes);
        let want = if *good { 201 } else { 422 };
        assert_eq!(status, want, "gen-{i}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let uploading = started.elapsed();
    let out = wrk.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        uploading < std::time::Duration::from_secs(7),
        "the uploads ({uploading:?}) must happen while wrk runs (8 s)"
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT from the script: {stdout}"));
    let field = |name: &str| -> u64 {
        result
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    eprintln!("{stdout}");
    assert!(!stdout.contains("Socket errors"), "{stdout}");
    assert!(!stdout.contains("Non-2xx"), "{stdout}");
    assert_eq!((field("bad_status"), field("mixed")), (0, 0), "{result}");
    assert!(field("ok") > 1000, "{result}");
    // The load saw the swaps: from the first revision to the last good one (gen-25).
    assert_eq!((field("min_gen"), field("max_gen")), (1, 25), "{result}");
    assert_eq!(markers(&server, "swap"), ["gen-25", "gen-25"]);
}

/// `rulebox serve` watching `DIR/bundles` with the `pay` bundle, once it has evaluated it
/// (one decision made).
const OPERATOR: &str = "tok-operator";

/// A server watching a directory holding bundle `pay`, with an operator credential and a
/// state directory (for shadow candidates).
fn serving_pay(dir: &Path) -> ServeProcess {
    use sha2::Digest;
    let bundles = watched_dir_with_pay(dir);
    let config = write_config(
        dir,
        &format!(
            "[[auth.tokens]]\nname = \"operator\"\nsha256 = \"{}\"\nrole = \"operator\"\n[bundles]\ndir = \"{}\"\nstate_dir = \"{}\"\n",
            hex::encode(sha2::Sha256::digest(OPERATOR)),
            bundles.display(),
            dir.join("state").display()
        ),
    );
    let server = ServeProcess::start(BIN, &config, &dir.join("serve.log"));
    server.wait_for(60, "the bundle loaded", |s| {
        markers(s, "pay") == ["gen-1", "gen-1"]
    });
    server
}

/// A real Prometheus, started with a generated config, scrapes a running server; a PromQL
/// query through its HTTP API returns the evaluation count this test produced.
#[test]
fn prometheus_scrapes_the_decisions_this_test_made() {
    let dir = tempfile::tempdir().unwrap();
    let server = serving_pay(dir.path());
    let prometheus = rulebox_tests::Prometheus::start(&[&server.addr]);
    // One evaluation above, 24 more now: 25 decisions, all allowed.
    for _ in 0..24 {
        assert_eq!(markers(&server, "pay"), ["gen-1", "gen-1"]);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = Value::Null;
    while std::time::Instant::now() < until {
        last = prometheus.query("sum(rulebox_decisions_total{bundle=\"pay\",verdict=\"allow\"})");
        if last["data"]["result"][0]["value"][1] == "25" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(last["data"]["result"][0]["value"][1], "25", "{last}");
    // The scrape itself is healthy, and histograms arrive as histograms.
    let up = prometheus.query("up{job=\"rulebox\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (rulebox_rule_duration_seconds_bucket{bundle=\"pay\"}))",
    );
    let seconds: f64 = p99["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{p99}"))
        .parse()
        .unwrap();
    assert!(seconds > 0.0 && seconds < 1.0, "{p99}");

    // The shipped Grafana dashboard: a fixed uid, the datasource/instance/bundle
    // variables, and every query (panels and variables) accepted and answered by this
    // Prometheus with the variables as Grafana would fill them.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/rulebox.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "rulebox-overview");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "instance", "bundle"]);
    let fill = |q: &str| {
        q.replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$bundle", ".*")
    };
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| fill(t["expr"].as_str().unwrap()))
        .collect();
    assert!(queries.len() >= 12, "{queries:?}");
    for v in &dashboard["templating"]["list"].as_array().unwrap()[1..] {
        // label_values(METRIC, label): the series selector must select something.
        let def = v["definition"].as_str().unwrap();
        let inner = def
            .trim_start_matches("label_values(")
            .trim_end_matches(')');
        let selector = inner.rsplit_once(',').unwrap().0;
        queries.push(format!("count({})", fill(selector)));
    }
    for q in &queries {
        let answer = prometheus.query(q);
        assert_eq!(answer["status"], "success", "{q}: {answer}");
    }
    // (Rates need two scrapes after the traffic; the score is there from the first.)
    let score = prometheus.query(&queries[0]);
    assert_eq!(score["data"]["result"][0]["value"][1], "100", "{score}");
    let instance = prometheus.query(&queries[queries.len() - 2]);
    assert_eq!(instance["data"]["result"][0]["value"][1], "1", "{instance}");
}

/// One evaluation request that may fail (the server may be killed under it): the decision
/// id when it was acknowledged with 200.
fn try_decide(addr: &str, request_id: &str) -> Option<String> {
    let body =
        format!(r#"{{"input": {{"order": {{"amount": 5}}}}, "request_id": "{request_id}"}}"#);
    let (status, body) = rulebox_tests::try_http(
        addr,
        "POST",
        "/v1/bundles/pay/evaluate",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .ok()?;
    let json: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    json["decision_id"].as_str().map(str::to_owned)
}

/// Sync mode: every decision the server acknowledged is in the SQLite file, even when the
/// server is killed with SIGKILL in the middle of the load.
#[test]
fn sync_decision_log_loses_no_acknowledged_decision_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let bundles = watched_dir_with_pay(dir.path());
    let db = dir.path().join("decisions.sqlite");
    let config = write_config(
        dir.path(),
        &format!(
            "[bundles]\ndir = \"{}\"\n[decision_log]\npath = \"{}\"\nmode = \"sync\"\n[rate_limits]\nevaluator = {{ per_second = 1000000, burst = 1000000 }}\n",
            bundles.display(),
            db.display()
        ),
    );
    let mut server = ServeProcess::start(BIN, &config, &dir.path().join("serve.log"));
    server.wait_for(60, "the bundle loaded", |s| {
        markers(s, "pay") == ["gen-1", "gen-1"]
    });
    // Committed before the response: the row is readable the moment the answer arrives.
    let reader = rusqlite::Connection::open(&db).unwrap();
    for i in 0..200 {
        let id = try_decide(&server.addr, &format!("seq-{i}")).expect("acknowledged");
        let found: i64 = reader
            .query_row("SELECT count(*) FROM decisions WHERE id = ?", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(found, 1, "decision {id} answered before it was committed");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, stop) = (server.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut failures = 0;
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) && failures > 0 {
                        break;
                    }
                    match try_decide(&addr, &format!("w{w}-{i}")) {
                        Some(id) => acked.push(id),
                        None => failures += 1,
                    }
                    if failures > 50 {
                        break;
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acked.len() > 20,
        "too little load to prove anything: {}",
        acked.len()
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    let mut missing = Vec::new();
    for id in &acked {
        let found: i64 = conn
            .query_row("SELECT count(*) FROM decisions WHERE id = ?", [id], |r| {
                r.get(0)
            })
            .unwrap();
        if found != 1 {
            missing.push(id.clone());
        }
    }
    eprintln!("{} acknowledged, {rows} rows after kill -9", acked.len());
    assert!(
        missing.is_empty(),
        "acknowledged but not logged: {missing:?}"
    );
    // The first request (`markers`) was logged too.
    assert!(
        rows as usize > acked.len(),
        "{rows} rows, {} acknowledged",
        acked.len()
    );
}

/// The live dashboard in a real headless Chromium: the page loads, connects to the event
/// stream with the viewer token from its URL fragment, and its numbers change as
/// evaluations are made, without a reload. The screenshot is kept as a test artifact
/// (`target/test-artifacts/dashboard.png`).
#[test]
fn the_dashboard_updates_live_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = serving_pay(dir.path());
    // The page is plain HTML with a strict CSP; the stream needs a viewer.
    let (status, page) = rulebox_tests::http(&server.addr, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("<title>rulebox</title>"), "{page}");
    let (status, _) = server.http("GET", "/v1/dashboard/stream", &[], b"");
    assert_eq!(status, 401);

    let mut browser = rulebox_tests::Chromium::start();
    browser.navigate(&format!("http://{}/#token={VIEWER}", server.addr));
    let text = |b: &mut rulebox_tests::Chromium, id: &str| {
        b.eval(&format!(
            "(document.getElementById('{id}') || {{}}).textContent || ''"
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    };
    let wait = |b: &mut rulebox_tests::Chromium,
                what: &str,
                ok: &dyn Fn(&mut rulebox_tests::Chromium) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ok(b) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}; the page shows: {}",
                b.eval("document.body.innerText")
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait(&mut browser, "the stream connects", &|b| {
        text(b, "connection") == "live" && text(b, "decisions-total").parse::<u64>().is_ok()
    });
    let before: u64 = text(&mut browser, "decisions-total").parse().unwrap();
    // The token left the address bar; a marker shows the page is never reloaded.
    assert_eq!(browser.eval("location.hash"), "");
    browser.eval("window.__same_page = 42");
    for _ in 0..5 {
        assert_eq!(markers(&server, "pay"), ["gen-1", "gen-1"]);
    }
    wait(&mut browser, "the count rises by the 5 decisions", &|b| {
        text(b, "decisions-total") == (before + 5).to_string()
    });
    assert_eq!(browser.eval("window.__same_page"), 42, "the page reloaded");
    let score: u32 = text(&mut browser, "score").parse().unwrap();
    assert!(score <= 100);
    // The per-rule table: the bundle's two rules, each evaluated (6 times or more).
    let rows = browser.eval(
        "[...document.querySelectorAll('#rules tr')].map(r => [...r.cells].map(c => c.textContent))",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, rule) in rows.iter().zip(["a", "b"]) {
        assert_eq!(
            (&row[0], &row[1]),
            (&Value::from("pay"), &Value::from(rule))
        );
        assert!(
            row[2].as_str().unwrap().parse::<u64>().unwrap() >= 6,
            "{row}"
        );
    }
    let bundles_shown = text(&mut browser, "bundles");
    assert!(bundles_shown.contains("gen-1"), "{bundles_shown}");
    // A shadow candidate appears with what it evaluated, and promote/discard for operators
    // only (this is a viewer).
    let bearer = format!("Bearer {OPERATOR}");
    let (status, body) = server.http(
        "PUT",
        "/v1/bundles/pay?mode=shadow&sample=1",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/gzip"),
        ],
        &archive_as("pay", "gen-2", "gen-2", "allow"),
    );
    assert_eq!(status, 201, "{body}");
    for _ in 0..3 {
        assert_eq!(markers(&server, "pay"), ["gen-1", "gen-1"]);
    }
    wait(&mut browser, "the shadow row counts 3 evaluations", &|b| {
        let row = b.eval(
            "[...document.querySelectorAll('#shadows tr')].map(r => [...r.cells].map(c => c.textContent))",
        );
        row[0][0] == "pay" && row[0][1] == "gen-1" && row[0][2] == "gen-2" && row[0][4] == "3"
    });
    assert_eq!(
        browser.eval("document.querySelectorAll('#shadows button').length"),
        0
    );
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
}

/// `--log-json`: each decision is a JSON log line carrying the same `decision_id` (and
/// request id) the response and the decision log carry.
#[test]
fn json_logs_carry_the_decision_id() {
    let dir = tempfile::tempdir().unwrap();
    let bundles = watched_dir_with_pay(dir.path());
    let config = write_config(
        dir.path(),
        &format!("[bundles]\ndir = \"{}\"\n", bundles.display()),
    );
    let log = dir.path().join("serve.log");
    let config = config.display().to_string();
    let (server, _) =
        ServeProcess::with_args(BIN, &["--log-json", "serve", "--config", &config], &log);
    server.wait_for(60, "the bundle loaded", |s| {
        markers(s, "pay") == ["gen-1", "gen-1"]
    });
    let (status, v) = server.http(
        "POST",
        "/v1/bundles/pay/evaluate",
        &[("Content-Type", "application/json")],
        br#"{"input": {"order": {"amount": 5}}, "request_id": "trace-me"}"#,
    );
    assert_eq!(status, 200, "{v}");
    let id = v["decision_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(line) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["decision_id"] == id.as_str())
        {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSON line with {id}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(line["fields"]["request_id"], "trace-me", "{line}");
    assert_eq!(line["fields"]["bundle"], "pay", "{line}");
    assert_eq!(line["fields"]["verdict"], "allow", "{line}");
}
