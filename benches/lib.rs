//! Helpers shared by the benches: a table of criterion results with ratios to a baseline.

use std::path::Path;

/// The median estimate (ns) of a criterion benchmark, from `target/criterion`.
pub fn median_ns(group: &str, name: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .display()
            .to_string()
    });
    let path = Path::new(&dir)
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Prints `rows` (benchmark names in `group`) with their medians and ratio to `baseline`.
pub fn print_ratio_table(group: &str, baseline: &str, rows: &[&str]) {
    let Some(base) = median_ns(group, baseline) else {
        println!("(no criterion estimates for {group}/{baseline}; was it filtered out?)");
        return;
    };
    println!("\n{group}: median per iteration, ratio to {baseline}");
    println!("{:<32} {:>14} {:>10}", "benchmark", "median", "ratio");
    for row in rows {
        if let Some(ns) = median_ns(group, row) {
            println!("{:<32} {:>11.0} ns {:>9.2}x", row, ns, ns / base);
        }
    }
}

/// `rulebox serve` in this process, on its own 2-worker runtime, as the binary runs it.
pub struct Server {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), rulebox_server::ServeError>>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    /// Serves `config` on a free loopback port.
    pub fn start(config: rulebox_server::ServerConfig) -> Server {
        let rt = rulebox_tests::rt();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(rulebox_server::serve(config, listener, async {
            let _ = stop_rx.await;
        }));
        Server {
            addr,
            stop_tx,
            task,
            rt,
        }
    }

    /// Stops it gracefully and waits.
    pub fn stop(self) {
        let _ = self.stop_tx.send(());
        let _ = self.rt.block_on(self.task);
    }
}

/// A server configuration for load: anonymous evaluation from loopback, limits out of the
/// way (a rate limit or the admission limit would measure themselves, not the server).
pub fn load_config() -> rulebox_server::ServerConfig {
    let mut config = rulebox_server::ServerConfig::default();
    config.auth.anonymous_loopback_evaluator = true;
    config.rate_limits.evaluator = rulebox_server::Rate {
        per_second: 10_000_000,
        burst: 10_000_000,
    };
    config.rate_limits.operator = config.rate_limits.evaluator;
    config.limits.max_concurrent_requests = 1024;
    config
}

/// Runs `wrk -t2 -c<connections> -d<secs>s --latency`, POSTing `body` as JSON to `url` (its
/// Lua script written in `dir`): wrk's report.
pub fn wrk_post(url: &str, body: &str, connections: usize, secs: u64, dir: &Path) -> String {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): apt-get install wrk"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `prefix` on a line of wrk's report (`Requests/sec:`, `99%`).
pub fn wrk_field(report: &str, prefix: &str) -> String {
    report
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{report}"))
}

/// Orders for interleaved rounds of `rows` rows: each round its own shuffle (a fixed
/// xorshift seed, so runs are comparable), so that whatever a row leaves behind (cold caches,
/// an instance on the other core, a sleeping helper) falls on a different row each time.
pub struct Rounds {
    order: Vec<usize>,
    seed: u64,
}

impl Rounds {
    /// Rounds over rows `0..rows`.
    pub fn new(rows: usize) -> Rounds {
        Rounds {
            order: (0..rows).collect(),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The next round's order (Fisher-Yates).
    pub fn next_order(&mut self) -> &[usize] {
        for j in (1..self.order.len()).rev() {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            self.order.swap(j, (self.seed % (j as u64 + 1)) as usize);
        }
        &self.order
    }
}
