//! Builds the rule components under `plugins/` (through `plugins/build.sh`, which installs the
//! Wasm toolchain when it can) so that `cargo test` always runs against guests built from the
//! current sources, and tells the tests where they are.

use std::path::Path;
use std::process::Command;

fn main() {
    // Read when the script runs, not baked in when it was compiled: a build script binary
    // compiled in another checkout (a worktree sharing the target dir) must not build there.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).parent().expect("workspace root");
    let plugins = root.join("plugins");
    for watched in [
        "plugins/Cargo.toml",
        "plugins/build.sh",
        "sdk/src",
        "sdk/Cargo.toml",
        "sdk/python",
        "sdk/js",
        "sdk/c",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Every guest source folder (examples, fixtures, foreign, hostile, and any added later),
    // so no fixture is stale; not the build output.
    for entry in std::fs::read_dir(&plugins).expect("reading plugins/") {
        let path = entry.expect("reading plugins/").path();
        if path.is_dir() && !path.ends_with("target") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=RULEBOX_SKIP_PLUGIN_BUILD");
    let out = plugins.join("target/wasm32-wasip2/release");
    println!("cargo:rustc-env=RULEBOX_PLUGIN_DIR={}", out.display());
    if std::env::var_os("RULEBOX_SKIP_PLUGIN_BUILD").is_some() {
        return;
    }
    // Only what a shell and cargo need: the outer cargo's variables would redirect the build.
    let mut cmd = Command::new("bash");
    cmd.arg(plugins.join("build.sh")).env_clear();
    for var in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
        "RULEBOX_TOOLS",
        "XDG_CACHE_HOME",
        "CI",
        // For the Python rules' tools (pip) and a pyenv-managed python3.
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_CERT",
        "PIP_FIND_LINKS",
        "PIP_DEFAULT_TIMEOUT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "PYENV_ROOT",
        "PYENV_VERSION",
        // npm (the JavaScript rules' tools).
        "NPM_CONFIG_REGISTRY",
        "npm_config_registry",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let status = cmd.status().expect("running plugins/build.sh");
    if !status.success() {
        panic!("plugins/build.sh failed ({status}); see its messages above");
    }
}
