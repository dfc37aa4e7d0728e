//! Integration tests: one binary, a module per area.

mod arena;
mod artifacts;
mod bundles;
mod caching;
mod examples;
mod hardening;
mod hostile;
mod hotload;
mod languages;
mod layout;
mod lean;
mod loading;
mod orchestration;
mod replay;
mod sandbox;
mod signing;
mod warm;

/// Every guest component must be exercised by some test (by name, in this directory).
#[test]
fn guests_are_all_tested() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("all");
    // The shared helpers count: the echo fixture is used through `write_bundle`.
    let mut sources = std::fs::read_to_string(dir.join("../lib.rs")).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "main.rs" {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    for guest in rulebox_tests::GUESTS {
        assert!(
            sources.contains(&format!("\"{guest}\"")),
            "no test uses guest {guest}"
        );
    }
    // And every built guest is listed.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/Cargo.toml"),
    )
    .unwrap();
    for line in manifest.lines().filter(|l| l.trim_start().starts_with('"')) {
        let name = line
            .trim()
            .trim_matches(|c| c == '"' || c == ',')
            .rsplit('/')
            .next()
            .unwrap();
        assert!(
            rulebox_tests::GUESTS.contains(&name),
            "guest {name} is not in GUESTS"
        );
    }
}
