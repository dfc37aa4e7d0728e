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

/// A temporary bundle directory made by [`write_bundle`].
pub fn temp_bundle(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), manifest);
    dir
}
