//! What shadowing a candidate costs the request path: `rulebox serve` (in this process, on
//! its own 2-worker runtime) answering the payments bundle, uncached, with no shadow, then
//! with a shadow candidate (the amount limit lowered) sampling 10% and 100% of decisions.
//!
//! For each: an open-loop load at a fixed rate (40% of the no-shadow capacity that `wrk`
//! measures first), latency taken from each request's scheduled send time (so a stall counts
//! in full, with no coordinated omission): p50, p99, p99.9; then `wrk` at saturation for the
//! throughput. Ratios are against the no-shadow setting of the same round; medians over rounds.
//!
//! Run: `cargo bench -p rulebox-benches --bench shadow` (needs `wrk`). `SHADOW_BENCH_SECS`
//! sets each run's length (default 5), `SHADOW_BENCH_ROUNDS` the rounds (default 3).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECTIONS: usize = 16;

/// One keep-alive HTTP/1.1 connection, reading responses by their `Content-Length`.
struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads the response: its status.
    async fn send(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.unwrap();
        self.buf.clear();
        let (head_end, length) = loop {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                break (end + 4, length);
            }
        };
        while self.buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        std::str::from_utf8(&self.buf[9..12])
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Latencies (µs, from each request's scheduled time) of an open-loop load of `rate`
/// requests/s for `secs`, over `CONNECTIONS` connections, cycling through `bodies`.
fn open_loop(
    addr: std::net::SocketAddr,
    bodies: &[Vec<u8>],
    rate: f64,
    secs: u64,
) -> (Vec<u64>, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let total = (rate * secs as f64) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        bodies
            .iter()
            .map(|b| {
                request(
                    "POST",
                    "/v1/bundles/payments/evaluate",
                    "Content-Type: application/json\r\n",
                    b,
                )
            })
            .collect(),
    );
    let latencies = rt.block_on(async {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (next, failed, requests) = (next.clone(), failed.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::open(addr).await;
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return mine;
                        }
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        // Late because the previous answer was late: counted from `due` (no
                        // coordinated omission). Idle until `due`: counted from the wake-up,
                        // so the timer's millisecond granularity is not taken for the
                        // server's.
                        let idle = tokio::time::Instant::now() < due;
                        tokio::time::sleep_until(due).await;
                        let sent = if idle {
                            tokio::time::Instant::now()
                        } else {
                            due
                        };
                        let status = conn.send(&requests[i as usize % requests.len()]).await;
                        if status != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(sent.elapsed().as_micros() as u64);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    (latencies, failed.load(Ordering::Relaxed))
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `wrk` at saturation on one body: requests/s and whether any answer was not 2xx.
fn wrk(addr: std::net::SocketAddr, body: &str, secs: u64, dir: &Path) -> (f64, bool) {
    let url = format!("http://{addr}/v1/bundles/payments/evaluate");
    let report = rulebox_benches::wrk_post(&url, body, 32, secs, dir);
    let rps = rulebox_benches::wrk_field(&report, "Requests/sec:");
    (rps.parse().unwrap(), report.contains("Non-2xx"))
}

/// A request as the operator (`token`), on a fresh connection: status and body.
fn operator(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    rulebox_tests::http(
        &addr.to_string(),
        method,
        path,
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/gzip"),
        ],
        body,
    )
}

/// The shadow's counts once its worker has drained the queue: (sampled, evaluated,
/// dropped, changed).
fn shadow_counts(addr: std::net::SocketAddr, token: &str) -> (u64, u64, u64, u64) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) = operator(addr, token, "GET", "/v1/bundles/payments/shadow", b"");
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = |k: &str| v[k].as_u64().unwrap();
        let counts = (n("sampled"), n("evaluated"), n("dropped"), n("changed"));
        if counts.1 + counts.2 + n("host_errors") >= counts.0 || Instant::now() > until {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (secs, rounds) = (env("SHADOW_BENCH_SECS", 5), env("SHADOW_BENCH_ROUNDS", 3));
    let dir = tempfile::tempdir().unwrap();
    // The payments example, uncached, so that every request evaluates its three rules (as
    // every shadow evaluation does): the candidate costs what the request does.
    let bundles = dir.path().join("bundles");
    let payments = bundles.join("payments");
    rulebox_tests::copy_dir(&rulebox_tests::example_bundle("payments"), &payments);
    let manifest = std::fs::read_to_string(payments.join("bundle.toml")).unwrap();
    let policy = "cache = { strategy = \"intelligent\", ttl_ms = 60000 }";
    assert!(manifest.contains(policy), "the payments manifest changed");
    let uncached = manifest.replace(policy, "cache = { strategy = \"none\" }");
    std::fs::write(payments.join("bundle.toml"), &uncached).unwrap();
    let candidate = {
        let c = dir.path().join("candidate");
        rulebox_tests::copy_dir(&payments, &c);
        std::fs::write(
            c.join("bundle.toml"),
            uncached
                .replace("max = 10000", "max = 8000")
                .replace("over limit 10000", "over limit 8000")
                .replace("revision = \"2026.11.22-1\"", "revision = \"candidate\""),
        )
        .unwrap();
        let out = dir.path().join("candidate.tar.gz");
        rulebox::bundle::pack(&c, &out, None, &Default::default()).unwrap();
        std::fs::read(out).unwrap()
    };
    let bodies: Vec<Vec<u8>> = rulebox_tests::payment_orders(500)
        .into_iter()
        .map(|o| serde_json::json!({ "input": o }).to_string().into_bytes())
        .collect();
    let one_body = String::from_utf8(bodies[0].clone()).unwrap();

    let state = dir.path().join("state");
    let (token, sha256) = rulebox_server::new_token().unwrap();
    let mut config = rulebox_benches::load_config();
    config.auth.tokens = vec![rulebox_server::TokenConfig {
        name: "operator".into(),
        sha256,
        role: rulebox_server::Role::Operator,
        bundles: None,
    }];
    config.bundles.dir = Some(bundles.clone());
    config.bundles.state_dir = Some(state);
    let server = rulebox_benches::Server::start(config);
    let addr = server.addr;
    let until = Instant::now() + Duration::from_secs(120);
    while rulebox_tests::try_http(
        &addr.to_string(),
        "POST",
        "/v1/bundles/payments/evaluate",
        &[("Content-Type", "application/json")],
        &bodies[0],
    )
    .map_or(true, |(s, _)| s != 200)
    {
        assert!(Instant::now() < until, "payments did not load");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Warm up, then find the capacity without a shadow.
    wrk(addr, &one_body, 2, dir.path());
    let (capacity, _) = wrk(addr, &one_body, secs, dir.path());
    let rate = (capacity * 0.4).round();

    // Rounds of the three settings in turn: each ratio is taken within its round, and the
    // table shows medians over rounds (this machine's noise moves a single run by 1.3x).
    let samples = [None, Some(0.1), Some(1.0)];
    let mut rows: Vec<Row> = samples.iter().map(|_| Row::default()).collect();
    for _ in 0..rounds {
        for (sample, row) in samples.iter().zip(rows.iter_mut()) {
            if let Some(share) = sample {
                let (s, body) = operator(
                    addr,
                    &token,
                    "PUT",
                    &format!("/v1/bundles/payments?mode=shadow&sample={share}"),
                    &candidate,
                );
                assert_eq!(s, 201, "{body}");
            }
            let (mut lat, failed) = open_loop(addr, &bodies, rate, secs);
            lat.sort_unstable();
            let open = sample.map(|_| shadow_counts(addr, &token));
            let (saturated, non_2xx) = wrk(addr, &one_body, secs, dir.path());
            let total = sample.map(|_| shadow_counts(addr, &token));
            if sample.is_some() {
                let (s, _) = operator(addr, &token, "DELETE", "/v1/bundles/payments/shadow", b"");
                assert_eq!(s, 204);
            }
            assert!(!non_2xx && failed == 0, "a request failed");
            row.p50.push(quantile(&lat, 0.5) as f64);
            row.p99.push(quantile(&lat, 0.99) as f64);
            row.p999.push(quantile(&lat, 0.999) as f64);
            row.rps.push(saturated);
            if let (Some(o), Some(t)) = (open, total) {
                row.open = add(row.open, o);
                // The saturated phase alone: the totals less the open loop's.
                row.saturated = add(row.saturated, (t.0 - o.0, t.1 - o.1, t.2 - o.2, t.3 - o.3));
            }
        }
        let (p99, rps) = (*rows[0].p99.last().unwrap(), *rows[0].rps.last().unwrap());
        for row in &mut rows {
            row.p99_ratio.push(row.p99.last().unwrap() / p99);
            row.rps_ratio.push(row.rps.last().unwrap() / rps);
        }
    }
    server.stop();

    println!();
    println!(
        "Shadowing's cost to the request path: payments uncached (3 rules), `rulebox serve` in-process on 2 workers, this machine; medians of {rounds} interleaved rounds"
    );
    println!(
        "open loop at {rate:.0} req/s (40% of the {capacity:.0} req/s wrk measured without a shadow), {CONNECTIONS} connections, 500 varied orders, {secs} s, latency from the scheduled send; then wrk -t2 -c32 at saturation, {secs} s"
    );
    println!(
        "| shadow sample | p50 µs | p99 µs | p99.9 µs | p99 vs none | open loop: sampled / evaluated / dropped | saturated req/s | vs none | saturated: sampled / evaluated / dropped |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let counts = |(s, e, d, _): (u64, u64, u64, u64), shadowed: bool| {
        if shadowed {
            format!("{s} / {e} / {d}")
        } else {
            "–".to_owned()
        }
    };
    for (sample, row) in samples.iter().zip(&rows) {
        let label = sample.map_or("none".to_owned(), |s| format!("{:.0}%", s * 100.0));
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.2}x | {} | {:.0} | {:.2}x | {} |",
            median(&row.p50),
            median(&row.p99),
            median(&row.p999),
            median(&row.p99_ratio),
            counts(row.open, sample.is_some()),
            median(&row.rps),
            median(&row.rps_ratio),
            counts(row.saturated, sample.is_some()),
        );
    }
}

/// One setting's measurements over the rounds.
#[derive(Default)]
struct Row {
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    p99_ratio: Vec<f64>,
    rps: Vec<f64>,
    rps_ratio: Vec<f64>,
    open: (u64, u64, u64, u64),
    saturated: (u64, u64, u64, u64),
}

fn add(a: (u64, u64, u64, u64), b: (u64, u64, u64, u64)) -> (u64, u64, u64, u64) {
    (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
