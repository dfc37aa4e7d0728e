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
    let path = PathBuf::from(env!("RULEBOX_PLUGIN_DIR")).join(format!("{name}.wasm"));
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
