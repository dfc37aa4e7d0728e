//! The server under a real load generator (`wrk`, over loopback), next to the library's own
//! cost measured in the same run, so the HTTP overhead shows as a ratio:
//! - (a) a cached decision: the payments bundle with every rule cached, one input repeated;
//! - (b) an uncached single-rule bundle (the amount limit, `strategy = "none"`);
//! - (c) the 3-rule payments bundle, uncached.
//!
//! For each: wrk's requests/s and p50/p99, and the library path (`Bundle::evaluate` on the
//! same 2-worker runtime shape, 32 concurrent callers, no HTTP) as evaluations/s. Then (b)
//! again with metrics and the decision log off, metrics alone, and metrics with the log
//! `async` and `sync`.
//!
//! Run: `cargo bench -p rulebox-benches --bench http` (needs `wrk`: `apt-get install wrk`).
//! `RULEBOX_HTTP_BENCH_SECS` sets each run's length (default 10).

use rulebox::{Bundle, Engine, EngineConfig, Input, LoadOptions, ResultCache};
use rulebox_benches::Server;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 32;

/// Writes the three bundles, built from the payments example, into `dir`.
fn write_bundles(dir: &Path) {
    let payments = rulebox_tests::example_bundle("payments");
    let manifest = std::fs::read_to_string(payments.join("bundle.toml")).unwrap();
    let variant = |name: &str, manifest: String| {
        let to = dir.join(name);
        rulebox_tests::copy_dir(&payments, &to);
        std::fs::write(to.join("bundle.toml"), manifest).unwrap();
    };
    let policy = "cache = { strategy = \"intelligent\", ttl_ms = 60000 }";
    assert!(manifest.contains(policy), "the payments manifest changed");
    // (a) every rule cached, the sanctions rule too (it has a grant, so it must ask).
    variant(
        "cached",
        manifest
            .replace("name = \"payments\"", "name = \"cached\"")
            .replace(
                "grants = [",
                "cache = { strategy = \"intelligent\" }\ngrants = [",
            ),
    );
    // (c) nothing cached.
    variant(
        "uncached",
        manifest
            .replace("name = \"payments\"", "name = \"uncached\"")
            .replace(policy, "cache = { strategy = \"none\" }"),
    );
    // (b) the amount limit alone, not cached.
    variant(
        "single",
        r#"[bundle]
format = 1
name = "single"
revision = "1"
cache = { strategy = "none" }
[[rule]]
name = "amount-limit"
component = "rules/amount_limit.wasm"
reads = ["order.amount", "order.currency"]
settings = { max = 10000, review_above = 5000, currencies = ["EUR", "USD", "GBP"] }
"#
        .into(),
    );
}

fn order() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples/order.json");
    std::fs::read_to_string(path).unwrap()
}

/// This process's CPU time (user + system), in microseconds, from /proc (10 ms ticks: runs
/// of seconds on 2 cores make that fine).
fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 1e6 / 100.0
}

struct Wrk {
    rps: f64,
    /// Server CPU per request, microseconds (this process; wrk's own CPU not counted).
    cpu_us: f64,
    p50: String,
    p99: String,
    non_2xx: bool,
}

fn wrk(url: &str, body: &str, secs: u64, dir: &Path) -> Wrk {
    let cpu = cpu_us();
    let text = rulebox_benches::wrk_post(url, body, CONNECTIONS, secs, dir);
    let cpu = cpu_us() - cpu;
    let find = |prefix: &str| rulebox_benches::wrk_field(&text, prefix);
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .map(|(n, _)| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    Wrk {
        rps: find("Requests/sec:").parse().unwrap(),
        cpu_us: cpu / requests,
        p50: find("50%"),
        p99: find("99%"),
        non_2xx: text.contains("Non-2xx"),
    }
}

/// Evaluations per second through the library, and CPU microseconds per evaluation:
/// `CONNECTIONS` tasks calling `Bundle::evaluate` in a loop for `secs` on `rt`.
fn library_rate(
    rt: &tokio::runtime::Runtime,
    bundle: &Arc<Bundle>,
    input: &Input,
    secs: u64,
) -> (f64, f64) {
    let cpu = cpu_us();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (bundle, input) = (bundle.clone(), input.clone());
                let (stop, count) = (stop.clone(), count.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let r = bundle.evaluate(&input).await.unwrap();
                        std::hint::black_box(r);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let n = count.load(Ordering::Relaxed) as f64;
    (n / start.elapsed().as_secs_f64(), (cpu_us() - cpu) / n)
}

/// A server in this process, on its own 2-worker runtime, as `rulebox serve` runs it,
/// serving the bundles in `bundles`; ready once every bundle answers `body`.
fn start_server(
    bundles: &Path,
    body: &str,
    log: Option<(std::path::PathBuf, rulebox_server::LogMode)>,
    metrics: bool,
) -> Server {
    let mut config = rulebox_benches::load_config();
    config.bundles.dir = Some(bundles.to_owned());
    config.metrics.enabled = metrics;
    if let Some((path, mode)) = log {
        config.decision_log.path = Some(path);
        config.decision_log.mode = mode;
    }
    let server = Server::start(config);
    for name in ["cached", "single", "uncached"] {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, _) = rulebox_tests::http(
                &server.addr.to_string(),
                "POST",
                &format!("/v1/bundles/{name}/evaluate"),
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            if status == 200 {
                break;
            }
            assert!(Instant::now() < until, "bundle {name} did not load");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    server
}

fn main() {
    let secs: u64 = std::env::var("RULEBOX_HTTP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let bundles = dir.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    write_bundles(&bundles);
    let order = order();
    let body = format!("{{\"input\": {order}}}");

    // The server, in this process on its own 2-worker runtime, as `rulebox serve` runs it.
    let server = start_server(&bundles, &body, None, true);
    let addr = server.addr;

    // The library path: the same bundles, loaded the same way, without HTTP.
    let lib_rt = rulebox_tests::rt();
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let cache = Arc::new(ResultCache::new(Default::default()).unwrap());
    let input = Input::from_json(&order).unwrap();
    let mut rows = Vec::new();
    for (label, name) in [
        (
            "(a) cached decision (payments, all 3 rules cached)",
            "cached",
        ),
        ("(b) single rule, uncached (amount limit)", "single"),
        ("(c) payments, 3 rules, uncached", "uncached"),
    ] {
        let options = LoadOptions {
            cache: Some(cache.clone()),
            ..LoadOptions::default()
        };
        let bundle = Arc::new(Bundle::load(&engine, &bundles.join(name), &options).unwrap());
        let lib = library_rate(&lib_rt, &bundle, &input, secs.min(5));
        let http = wrk(
            &format!("http://{addr}/v1/bundles/{name}/evaluate"),
            &body,
            secs,
            dir.path(),
        );
        assert!(!http.non_2xx, "{label}: wrk saw non-2xx responses");
        rows.push((label, http, lib));
    }
    server.stop();

    // Observability's cost on (a) and (b): the same server with metrics and the decision
    // log off, metrics alone, and metrics with the log async and sync.
    let configs = [
        ("metrics off, log off", false, None),
        ("metrics on, log off", true, None),
        (
            "metrics on, log async",
            true,
            Some(rulebox_server::LogMode::Async),
        ),
        (
            "metrics on, log sync",
            true,
            Some(rulebox_server::LogMode::Sync),
        ),
    ];
    let mut log_rows = Vec::new();
    for (i, (label, metrics, mode)) in configs.into_iter().enumerate() {
        let log = mode.map(|m| (dir.path().join(format!("log-{i}.sqlite")), m));
        let server = start_server(&bundles, &body, log, metrics);
        for workload in ["cached", "single"] {
            let http = wrk(
                &format!("http://{}/v1/bundles/{workload}/evaluate", server.addr),
                &body,
                secs,
                dir.path(),
            );
            assert!(!http.non_2xx, "{label}: wrk saw non-2xx responses");
            log_rows.push((workload, label, http));
        }
        server.stop();
    }

    println!();
    println!(
        "HTTP over loopback (wrk -t2 -c{CONNECTIONS}, {secs} s each) vs the library path (Bundle::evaluate, {CONNECTIONS} tasks), one run, this machine"
    );
    println!(
        "| workload | HTTP req/s | p50 | p99 | library eval/s | req/s ÷ eval/s | server CPU µs/req | library CPU µs/eval | HTTP CPU overhead |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (label, http, (lib, lib_cpu)) in rows {
        println!(
            "| {label} | {:.0} | {} | {} | {lib:.0} | {:.2} | {:.1} | {lib_cpu:.1} | {:+.0}% |",
            http.rps,
            http.p50,
            http.p99,
            http.rps / lib,
            http.cpu_us,
            (http.cpu_us / lib_cpu - 1.0) * 100.0
        );
    }
    println!(
        "wrk runs on the same 2 cores as the server; the library path has them to itself. The CPU columns compare the work per decision without wrk's share."
    );
    println!();
    println!(
        "Observability on (a) cached and (b) single rule, one run (the health window is always on)"
    );
    println!(
        "| workload | metrics, decision log | HTTP req/s | p50 | p99 | server CPU µs/req | req/s vs both off |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (workload, label, http) in &log_rows {
        let off = log_rows
            .iter()
            .find(|(w, l, _)| w == workload && l.starts_with("metrics off"))
            .map_or(http.rps, |(_, _, h)| h.rps);
        println!(
            "| {workload} | {label} | {:.0} | {} | {} | {:.1} | {:+.1}% |",
            http.rps,
            http.p50,
            http.p99,
            http.cpu_us,
            (http.rps / off - 1.0) * 100.0
        );
    }
}
