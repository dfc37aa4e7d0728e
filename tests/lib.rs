//! Shared helpers for the integration tests and benches: where the guest components are, and
//! one engine with each guest compiled once.

use rulebox::{Engine, EngineConfig, RulePre};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Every guest under `plugins/`, by crate name. `all::guests_are_all_tested` checks each one
/// is named by some test.
pub const GUESTS: &[&str] = &[
    "amount_limit",
    "sanctions_check",
    "risk_score",
    "hostile_infinite_loop",
    "hostile_busy_wait",
    "hostile_memory_hog",
    "hostile_recursion",
    "hostile_panic",
    "hostile_escape",
    "hostile_huge_reason",
    "hostile_bad_output",
    "hostile_sleep",
    "fixture_echo",
    "foreign_world",
    "foreign_import",
    "foreign_signature",
];

/// The built component of a guest; panics with the fix when it is missing.
pub fn guest_path(name: &str) -> PathBuf {
    built(PathBuf::from(env!("RULEBOX_PLUGIN_DIR")).join(format!("{name}.wasm")))
}

/// The lean build of a guest (`wasm32-unknown-unknown`: no WASI imports), for the rules
/// `plugins/build.sh` builds lean.
pub fn lean_guest_path(name: &str) -> PathBuf {
    built_under("wasm32-unknown-unknown/release", name)
}

/// A Python rule built by `plugins/build.sh` from `plugins/python/NAME/`.
pub fn python_guest_path(name: &str) -> PathBuf {
    built_under("python", name)
}

/// A JavaScript rule built by `plugins/build.sh` from `plugins/js/NAME/`.
pub fn js_guest_path(name: &str) -> PathBuf {
    built_under("js", name)
}

/// A C rule built by `plugins/build.sh` from `plugins/c/NAME/`.
pub fn c_guest_path(name: &str) -> PathBuf {
    built_under("c", name)
}

/// `plugins/target/DIR/NAME.wasm`, built.
fn built_under(dir: &str, name: &str) -> PathBuf {
    built(
        PathBuf::from(env!("RULEBOX_PLUGIN_DIR"))
            .join("../..")
            .join(dir)
            .join(format!("{name}.wasm")),
    )
}

fn built(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run plugins/build.sh (the tests' build script does, unless RULEBOX_SKIP_PLUGIN_BUILD is set)",
        path.display()
    );
    path
}

/// The bytes of a guest's component.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest_path(name)).expect("reading guest")
}

/// One engine for the whole test binary (as in production: one per process).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(EngineConfig::default()).expect("default engine"))
}

/// A guest compiled once on [`engine`].
pub fn guest(name: &str) -> RulePre {
    static CACHE: OnceLock<Mutex<HashMap<String, RulePre>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(pre) = cache.lock().unwrap().get(name) {
        return pre.clone();
    }
    let pre = engine()
        .load_file(guest_path(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    cache.lock().unwrap().insert(name.to_owned(), pre.clone());
    pre
}

/// The example bundles assembled by `plugins/build.sh`.
pub fn example_bundle(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("RULEBOX_PLUGIN_DIR"))
        .join("../../bundles")
        .join(name);
    assert!(
        path.join("bundle.toml").exists(),
        "{} is missing: run plugins/build.sh",
        path.display()
    );
    path
}

/// Writes a bundle directory for tests: `manifest` as `bundle.toml`, the echo fixture as
/// `echo.wasm`, and `data/note.txt`.
pub fn write_bundle(dir: &std::path::Path, manifest: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("bundle.toml"), manifest).unwrap();
    std::fs::copy(guest_path("fixture_echo"), dir.join("echo.wasm")).unwrap();
    std::fs::write(dir.join("data/note.txt"), "note").unwrap();
}

/// Copies a directory tree.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A temporary bundle directory made by [`write_bundle`].
pub fn temp_bundle(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), manifest);
    dir
}

/// A `redis-server` on a free loopback port, stopped on drop. Panics with the fix when the
/// binary is missing (`.ci/run` installs it).
pub struct RedisServer {
    /// The port.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// The URL to give rulebox.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // DEBUG SLEEP lets a test make Redis slow.
                "--enable-debug-command",
                "local",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Runs a redis-cli command against it and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli (apt-get install redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A two-worker tokio runtime, like a small service's.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A free TCP port on loopback (closed again: a server started next may take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real nginx serving a directory on a free loopback port with its default ETags, for
/// bundle polling; stopped on drop. Its access log records status, URI and `If-None-Match`.
pub struct Nginx {
    /// The port.
    pub port: u16,
    prefix: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Nginx {
    /// Starts one serving an empty directory, and waits until it answers.
    pub fn start() -> Nginx {
        let mut nginx = Nginx {
            port: free_port(),
            prefix: tempfile::tempdir().unwrap(),
            child: None,
        };
        let p = nginx.prefix.path();
        std::fs::create_dir_all(p.join("root")).unwrap();
        std::fs::create_dir_all(p.join("tmp")).unwrap();
        // Workers may run as `nobody` (when the tests run as root): let them read the root.
        use std::os::unix::fs::PermissionsExt;
        for d in [p.to_owned(), p.join("root"), p.join("tmp")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let conf = format!(
            r#"daemon off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 256; }}
http {{
  log_format polls '$status $request_method $uri inm=[$http_if_none_match] ua=[$http_user_agent]';
  access_log {p}/access.log polls;
  types {{ application/gzip gz; }}
  default_type application/octet-stream;
  client_body_temp_path {p}/tmp/body;
  proxy_temp_path {p}/tmp/proxy;
  fastcgi_temp_path {p}/tmp/fastcgi;
  uwsgi_temp_path {p}/tmp/uwsgi;
  scgi_temp_path {p}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {p}/root;
  }}
}}
"#,
            p = p.display(),
            port = nginx.port
        );
        std::fs::write(p.join("nginx.conf"), conf).unwrap();
        nginx.restart();
        nginx
    }

    /// (Re)starts it on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("nginx");
        let p = self.prefix.path();
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nginx ({e}): install it (apt-get install nginx-light)")
            });
        self.child = Some(child);
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(p.join("error.log")).unwrap_or_default();
        panic!("nginx on port {} did not answer: {log}", self.port);
    }

    /// Stops it (the port stops answering).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master stops its workers (SIGKILL would leave them serving).
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            for _ in 0..250 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Publishes `bytes` as `/NAME` atomically (write, then rename), with its own mtime so
    /// that nginx gives it a new ETag even within the same second.
    pub fn publish(&self, name: &str, bytes: &[u8]) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let root = self.prefix.path().join("root");
        let tmp = root.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        let n = GENERATION.fetch_add(1, Ordering::Relaxed);
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + n * 7);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&tmp, root.join(name)).unwrap();
    }

    /// The URL of `/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// The access log lines for `/NAME`: `STATUS METHOD URI inm=[...] ua=[...]`.
    pub fn requests(&self, name: &str) -> Vec<String> {
        let log =
            std::fs::read_to_string(self.prefix.path().join("access.log")).unwrap_or_default();
        let uri = format!(" /{name} ");
        log.lines()
            .filter(|l| l.contains(&uri))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): the status and the
/// body. Enough for tests; not a client. Panics on a connection error: see [`try_http`].
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{addr}{path}: {e}"))
}

/// [`http`], for servers that may go away under the request (killed by the test).
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

/// A `rulebox serve` process started from a config file, killed on drop.
pub struct ServeProcess {
    /// `host:port` it listens on.
    pub addr: String,
    child: std::process::Child,
}

impl ServeProcess {
    /// Starts `bin serve --config CONFIG --listen 127.0.0.1:0` (stderr to `log`) and waits
    /// for the line saying where it listens.
    pub fn start(bin: &str, config: &std::path::Path, log: &std::path::Path) -> ServeProcess {
        let config = config.to_str().unwrap();
        ServeProcess::with_args(bin, &["serve", "--config", config], log).0
    }

    /// Starts `bin ARGS --listen 127.0.0.1:0` (stderr to `log`) and waits for the line
    /// saying where it listens; returns that line too.
    pub fn with_args(
        bin: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> (ServeProcess, serde_json::Value) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RULEBOX_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let started: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "serve did not start: {line}{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let addr = started["listening"].as_str().unwrap().to_owned();
        (ServeProcess { addr, child }, started)
    }

    /// Stops it with SIGTERM, as an orchestrator would, and returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// `http` against this server.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let (status, body) = http(&self.addr, method, path, headers, body);
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits (up to `secs`) until `check` holds.
    pub fn wait_for(&self, secs: u64, what: &str, mut check: impl FnMut(&Self) -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < until {
            if check(self) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{}: gave up waiting for {what}", self.addr);
    }

    /// Kills it as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Prometheus on a free loopback port scraping `targets` every second, with its own
/// empty storage; stopped on drop.
pub struct Prometheus {
    /// `host:port` of its HTTP API.
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it and waits until it is ready.
    pub fn start(targets: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rulebox\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): apt-get install prometheus")
            });
        let prometheus = Prometheus {
            addr,
            child,
            _dir: dir,
        };
        for _ in 0..600 {
            if std::net::TcpStream::connect(&prometheus.addr).is_ok()
                && http(&prometheus.addr, "GET", "/-/ready", &[], b"").0 == 200
            {
                return prometheus;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("prometheus on {} did not get ready", prometheus.addr);
    }

    /// An instant PromQL query; the JSON answer.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let mut encoded = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        let (_, body) = http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            &[],
            b"",
        );
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium (Debian's `chromium`) on a private profile, driven over the DevTools
/// protocol: one page, JavaScript evaluated in it, screenshots. Killed on drop.
pub struct Chromium {
    _child: KillOnDrop,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium on `about:blank` and connects to its page.
    pub fn start() -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        // Owned by a guard at once: a panic while it starts must not leave it running.
        let child = KillOnDrop(
            std::process::Command::new("chromium")
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--remote-debugging-port=0",
                    "--window-size=1280,1000",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run chromium ({e}): apt-get install chromium")),
        );
        // Chromium writes the port it chose to DevToolsActivePort in the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let addr = format!("127.0.0.1:{port}");
        let page_ws = loop {
            let list = devtools_json(&addr, "/json/list");
            if let Some(url) = list
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "chromium has no page");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(page_ws.as_str(), stream).unwrap();
        Chromium {
            _child: child,
            ws,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Calls a DevTools method and returns its result (panics on a protocol error).
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.ws.read().unwrap();
            let Ok(text) = reply.to_text() else { continue };
            let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in the page.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({ "url": url }));
    }

    /// The value of a JavaScript expression evaluated in the page.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        )["result"]["value"]
            .clone()
    }

    /// A PNG of the page as it is.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

/// A GET on Chromium's DevTools HTTP endpoint, which keeps the connection open: the body is
/// read by its Content-Length.
fn devtools_json(addr: &str, path: &str) -> serde_json::Value {
    use std::io::{BufRead, Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return serde_json::Value::Null;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut reader = std::io::BufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return serde_json::Value::Null;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&body).unwrap_or_default()
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The payments example in a temporary directory with each `(from, to)` replaced in its
/// manifest: a candidate revision (`("max = 10000", "max = 8000")`, say).
pub fn payments_variant(replace: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_bundle("payments"), dir.path());
    let path = dir.path().join("bundle.toml");
    let mut manifest = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replace {
        assert!(
            manifest.contains(from),
            "the payments manifest has no `{from}`"
        );
        manifest = manifest.replace(from, to);
    }
    std::fs::write(path, manifest).unwrap();
    dir
}

/// `n` varied payment orders, the same on every call: amounts from 10 to 15,000, three
/// currencies, customers from several countries (one sanctioned), new and old, verified
/// or not, some with many items.
pub fn payment_orders(n: usize) -> Vec<serde_json::Value> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    (0..n)
        .map(|_| {
            let amount = 10 + next(15_000);
            let currency = ["EUR", "USD", "GBP"][next(3) as usize];
            let country = ["DE", "FR", "NL", "IR", "US"][next(5) as usize];
            serde_json::json!({
                "order": {"amount": amount, "currency": currency, "items": vec![1; next(30) as usize]},
                "customer": {"country": country, "age_days": next(1000), "verified": next(2) == 0},
            })
        })
        .collect()
}
