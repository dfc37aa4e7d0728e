//! Hostile bundles, hostile caches and a busy host (issue 7): each case is one a policy
//! engine's user must never see: a signature bypass, a load race, unbounded reads, a verdict
//! flipped by load. Archives are built here; nothing large is committed.

use rulebox::bundle::{self, BundleSource, SecretKey, SourceLimits};
use rulebox::{
    Bundle, Engine, EngineConfig, ErrorKind, Input, LimitsOverride, LoadOptions, LoadStep, Rule,
    Verdict,
};
use rulebox_tests::{engine, guest, guest_bytes, guest_path, rt, temp_bundle, write_bundle};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const MANIFEST: &str = "[bundle]\nformat = 1\nname = \"h\"\nrevision = \"1\"\n[[rule]]\nname = \"a\"\ncomponent = \"echo.wasm\"\nsettings = { verdict = \"allow\" }\ngrants = [{ dir = \"data\" }]\n";

fn required(key: &SecretKey) -> LoadOptions {
    LoadOptions {
        trusted_keys: vec![key.public()],
        require_signature: true,
        ..Default::default()
    }
}

fn limits(max_total_bytes: u64, max_entries: usize) -> SourceLimits {
    SourceLimits {
        max_total_bytes,
        max_entries,
        ..SourceLimits::default()
    }
}

/// A tar stream written by hand, so headers can lie about sizes and types.
struct RawTar(Vec<u8>);

impl RawTar {
    fn new() -> RawTar {
        RawTar(Vec::new())
    }

    /// One header (GNU format) with `declared` size, then `data` padded to a block.
    fn entry(mut self, name: &str, ty: tar::EntryType, declared: u64, data: &[u8]) -> RawTar {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(ty);
        header.set_size(declared);
        header.set_mode(0o644);
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> RawTar {
        self.entry(name, tar::EntryType::Regular, data.len() as u64, data)
    }

    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn open_err(path: &Path, limits: &SourceLimits) -> String {
    BundleSource::open(path, limits).unwrap_err().to_string()
}

// 1. The signed listing is unambiguous.
#[test]
fn a_file_name_forging_listing_records_is_refused() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), MANIFEST);
    bundle::sign(dir.path(), &key, &SourceLimits::default()).unwrap();
    // The v1 attack: drop echo.wasm and give data/note.txt a name that carries echo.wasm's
    // record after a newline. The v1 listing of this tree was byte-identical to the signed one.
    let echo = std::fs::read(dir.path().join("echo.wasm")).unwrap();
    let forged_name = format!(
        "note.txt\n{} echo.wasm",
        hex::encode(sha2::Sha256::digest(&echo))
    );
    std::fs::rename(
        dir.path().join("data/note.txt"),
        dir.path().join("data").join(&forged_name),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("echo.wasm")).unwrap();
    let err = Bundle::load(engine(), dir.path(), &required(&key)).unwrap_err();
    assert_eq!(err.step(), LoadStep::Read, "{err}");
    assert!(err.to_string().contains("control character '\\n'"), "{err}");

    // The same name inside an archive.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("forged.tar.gz");
    let tar = RawTar::new()
        .file("bundle.toml", MANIFEST.as_bytes())
        .file("data/a\nb", b"x")
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    assert!(open_err(&path, &SourceLimits::default()).contains("control character"));
}

// 2. Compile and serve exactly the verified bytes.
#[test]
fn files_changed_after_reading_never_reach_a_rule() {
    let dir = temp_bundle(MANIFEST);
    let source = BundleSource::open(dir.path(), &SourceLimits::default()).unwrap();
    let original = guest_bytes("fixture_echo");
    std::fs::write(dir.path().join("echo.wasm"), guest_bytes("amount_limit")).unwrap();
    std::fs::write(dir.path().join("data/note.txt"), "swapped").unwrap();
    assert_eq!(source.read("echo.wasm").unwrap(), original);
    // Grants are served from the snapshot, too.
    assert_eq!(
        std::fs::read_to_string(source.root().join("data/note.txt")).unwrap(),
        "note"
    );
    // The snapshot itself is checked on every read.
    std::fs::write(source.root().join("echo.wasm"), b"\0asm tampered").unwrap();
    let err = source.read("echo.wasm").unwrap_err();
    assert!(
        err.to_string().contains("changed after it was read"),
        "{err}"
    );
}

#[test]
fn a_component_swapped_during_loads_never_runs_unsigned() {
    let key = SecretKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), MANIFEST);
    bundle::sign(dir.path(), &key, &SourceLimits::default()).unwrap();
    // Keep both components compiled, so each load is quick and the race window is tight.
    let signed = guest("fixture_echo");
    let _evil = guest("amount_limit");
    let spare = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, target, spare) = (
            stop.clone(),
            dir.path().join("echo.wasm"),
            spare.path().to_owned(),
        );
        std::thread::spawn(move || {
            let (good, evil) = (guest_bytes("fixture_echo"), guest_bytes("amount_limit"));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for bytes in [&evil, &good] {
                    std::fs::write(spare.join("next"), bytes).unwrap();
                    std::fs::rename(spare.join("next"), &target).unwrap();
                }
            }
        })
    };
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..60 {
        match Bundle::load(engine(), dir.path(), &required(&key)) {
            Ok(b) => {
                loaded += 1;
                assert_eq!(
                    b.rules()[0].rule.pre().digest(),
                    signed.digest(),
                    "an unsigned component was compiled"
                );
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e.step(), LoadStep::Verify, "{e}");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    println!("swap race: {loaded} loads verified, {refused} refused");
}

/// The path an admin passes may be a link (`current.tar.gz -> v3.tar.gz`); only links inside
/// a bundle are refused.
#[test]
fn a_bundle_reached_through_a_link_loads_but_links_inside_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_bundle(&tmp.path().join("v3"), MANIFEST);
    bundle::pack(
        &tmp.path().join("v3"),
        &tmp.path().join("v3.tar.gz"),
        None,
        &SourceLimits::default(),
    )
    .unwrap();
    for (link, target) in [("current", "v3"), ("current.tar.gz", "v3.tar.gz")] {
        std::os::unix::fs::symlink(tmp.path().join(target), tmp.path().join(link)).unwrap();
        let b = Bundle::load(engine(), &tmp.path().join(link), &LoadOptions::default()).unwrap();
        assert_eq!(b.origin(), tmp.path().join(link));
    }
    std::os::unix::fs::symlink("/etc", tmp.path().join("v3/data/etc")).unwrap();
    let err = open_err(&tmp.path().join("current"), &SourceLimits::default());
    assert_eq!(err, "data/etc: links are not allowed in a bundle");
}

// 4. Bounded memory and time while reading an archive.
#[test]
fn oversized_extension_headers_are_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bomb.tar.gz");
    // A GNU long name that claims 0.9 GiB (its data is cut short: the size alone must do).
    let tar = RawTar::new()
        .entry(
            "././@LongLink",
            tar::EntryType::GNULongName,
            966_367_640,
            &[b'a'; 4096],
        )
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    let started = Instant::now();
    let err = open_err(&path, &SourceLimits::default());
    assert!(
        err.contains("archive extension header of 966367640 bytes"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A PAX header of 8 MiB (compresses to a few KiB).
    let tar = RawTar::new()
        .entry(
            "pax",
            tar::EntryType::XHeader,
            8 << 20,
            &vec![b'a'; 8 << 20],
        )
        .file("bundle.toml", b"")
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    assert!(open_err(&path, &SourceLimits::default()).contains("archive extension header"));

    // A long name under the bound but over max_path_bytes.
    let long = "d/".repeat(600) + "f";
    let tar = RawTar::new()
        .entry(
            "././@LongLink",
            tar::EntryType::GNULongName,
            long.len() as u64,
            long.as_bytes(),
        )
        .file("x", b"y")
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    assert!(open_err(&path, &SourceLimits::default()).contains("max_path_bytes"));

    // A long name the packer writes (GNU, under the bounds) still works.
    let name = format!("data/{}.txt", "n".repeat(150));
    let tar = RawTar::new()
        .entry(
            "././@LongLink",
            tar::EntryType::GNULongName,
            name.len() as u64 + 1,
            format!("{name}\0").as_bytes(),
        )
        .file("ignored-short-name", b"long")
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    let source = BundleSource::open(&path, &SourceLimits::default()).unwrap();
    assert_eq!(source.read(&name).unwrap(), b"long");
}

#[test]
fn every_entry_and_every_decompressed_byte_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.tar.gz");
    // A million `./` entries once passed a 10,000 limit; 200 against 100 show it.
    let mut tar = RawTar::new();
    for _ in 0..200 {
        tar = tar.entry("./", tar::EntryType::Directory, 0, &[]);
    }
    std::fs::write(&path, gzip(&tar.end())).unwrap();
    assert!(open_err(&path, &limits(256 << 10, 100)).contains("more than 100 entries"));

    // Data on a directory entry is decompressed and skipped: it counts too.
    let tar = RawTar::new()
        .entry("d/", tar::EntryType::Directory, 1 << 20, &vec![0; 1 << 20])
        .end();
    std::fs::write(&path, gzip(&tar)).unwrap();
    let err = open_err(&path, &limits(256 << 10, 100));
    assert!(err.contains("decompresses to more than"), "{err}");
}

// 5. Multi-member gzip.
#[test]
fn multi_member_gzip_is_read_whole_and_concatenated_archives_are_refused() {
    let key = SecretKey::generate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    write_bundle(&tmp.path().join("src"), MANIFEST);
    let packed = tmp.path().join("p.tar.gz");
    bundle::pack(
        &tmp.path().join("src"),
        &packed,
        Some(&key),
        &SourceLimits::default(),
    )
    .unwrap();
    // As pigz or bgzip write it: the tar stream in several gzip members.
    let tar = gunzip(&std::fs::read(&packed).unwrap());
    let mut members = Vec::new();
    for chunk in tar.chunks(tar.len() / 3 + 1) {
        members.extend(gzip(chunk));
    }
    let multi = tmp.path().join("multi.tar.gz");
    std::fs::write(&multi, members).unwrap();
    let b = Bundle::load(engine(), &multi, &required(&key)).unwrap();
    assert_eq!(b.signed_by(), Some(&key.public()));

    // `cat a.tar.gz b.tar.gz`: the second archive's files would be silently dropped.
    let mut twice = std::fs::read(&packed).unwrap();
    twice.extend(std::fs::read(&packed).unwrap());
    let cat = tmp.path().join("cat.tar.gz");
    std::fs::write(&cat, twice).unwrap();
    let err = open_err(&cat, &SourceLimits::default());
    assert!(
        err.contains("data follows the end of the tar archive"),
        "{err}"
    );
    // Trailing garbage that is not gzip is named as such.
    let mut garbage = std::fs::read(&packed).unwrap();
    garbage.extend_from_slice(b"trailing junk");
    std::fs::write(&cat, garbage).unwrap();
    assert!(open_err(&cat, &SourceLimits::default()).contains("not a valid .tar.gz"));
}

// 6. Directory files are sized before they are read.
#[test]
fn a_huge_sparse_file_in_a_directory_is_refused_before_it_is_read() {
    let dir = temp_bundle(MANIFEST);
    let f = std::fs::File::create(dir.path().join("data/huge.bin")).unwrap();
    f.set_len(6 << 30).unwrap();
    let started = Instant::now();
    let err = open_err(dir.path(), &SourceLimits::default());
    assert!(
        err.contains("holds more than 268435456 bytes (limit max_total_bytes)"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "it was read");
}

// 7. Manifest scale.
#[test]
fn a_bundle_with_too_many_rules_is_refused_naming_the_limit() {
    let mut manifest = "[bundle]\nformat = 1\nname = \"big\"\nrevision = \"1\"\n".to_owned();
    for i in 0..1001 {
        manifest.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncomponent = \"echo.wasm\"\n{}",
            if i > 0 {
                format!("depends_on = [\"r{}\"]\n", i - 1)
            } else {
                String::new()
            }
        ));
    }
    let dir = temp_bundle(&manifest);
    let err = Bundle::load(engine(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle.toml: rule: the bundle has 1001 rules, over the limit of 1000 (max_rules)"
    );
    // 1000 rules sharing one component load, compiling it once, on a blocking thread's
    // small stack as a server would.
    let manifest = manifest
        .rsplit_once("[[rule]]")
        .map(|(head, _)| head.to_owned())
        .unwrap();
    let dir = temp_bundle(&manifest);
    let path = dir.path().to_owned();
    let b = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Bundle::load(engine(), &path, &LoadOptions::default()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!((b.rules().len(), b.layers().len()), (1000, 1000));
}

// 8. Manifest text and grant paths.
#[test]
fn a_manifest_that_is_not_utf8_is_refused_at_load() {
    let dir = temp_bundle(MANIFEST);
    let mut text = MANIFEST.as_bytes().to_vec();
    let at = MANIFEST.find("revision = \"1\"").unwrap() + 12;
    text[at] = 0xff;
    std::fs::write(dir.path().join("bundle.toml"), text).unwrap();
    let err = Bundle::load(engine(), dir.path(), &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("bundle.toml is not UTF-8 (invalid byte at offset {at})")
    );
}

// 9. Cache entries that are not regular files.
fn engine_with_cache(dir: &Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(dir.to_owned()),
        ..EngineConfig::default()
    })
    .unwrap()
}

fn artifact_of(cache: &Path, digest_hex: &str) -> std::path::PathBuf {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(digest_hex) && name.ends_with(".cwasm")
        })
        .expect("an artifact was written")
}

/// Runs `f` on a thread and fails the test if it does not finish in time (a hung load).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[test]
fn cache_entries_that_are_fifos_or_links_are_skipped_without_blocking() {
    let cache = tempfile::tempdir().unwrap();
    let bytes = guest_bytes("amount_limit");
    let pre = engine_with_cache(cache.path()).load(&bytes).unwrap();
    let art = artifact_of(cache.path(), &pre.digest_hex());

    std::fs::remove_file(&art).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&art)
        .status()
        .unwrap();
    assert!(status.success());
    let (dir, b) = (cache.path().to_owned(), bytes.clone());
    let stats = within("a load over a FIFO entry", move || {
        let engine = engine_with_cache(&dir);
        engine.load(&b).unwrap();
        engine.artifact_stats()
    });
    assert_eq!((stats.rejected, stats.compiled), (1, 1));

    std::fs::remove_file(&art).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &art).unwrap();
    let (dir, b) = (cache.path().to_owned(), bytes.clone());
    let stats = within("a load over a link to /dev/zero", move || {
        let engine = engine_with_cache(&dir);
        engine.load(&b).unwrap();
        engine.artifact_stats()
    });
    assert_eq!((stats.rejected, stats.compiled), (1, 1));
}

// 10. Entries are authenticated; the directory must be private.
#[test]
fn a_planted_cache_entry_is_refused_and_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let first = engine_with_cache(cache.path());
    let target = first.load(&guest_bytes("amount_limit")).unwrap();
    let other = first.load(&guest_bytes("risk_score")).unwrap();
    let target_art = artifact_of(cache.path(), &target.digest_hex());
    let other_art = artifact_of(cache.path(), &other.digest_hex());
    // Another rule's code under amount_limit's name, with a checksum anyone can compute, and
    // then with the other entry's own (valid for it) tag.
    let code = std::fs::read(&other_art).unwrap();
    std::fs::write(&target_art, &code).unwrap();
    let tag = target_art.with_extension("cwasm.mac");
    for planted_tag in [
        hex::encode(sha2::Sha256::digest(&code)),
        std::fs::read_to_string(other_art.with_extension("cwasm.mac")).unwrap(),
    ] {
        std::fs::write(&target_art, &code).unwrap();
        std::fs::write(&tag, planted_tag).unwrap();
        let engine = engine_with_cache(cache.path());
        let pre = engine.load(&guest_bytes("amount_limit")).unwrap();
        let stats = engine.artifact_stats();
        assert_eq!((stats.rejected, stats.compiled, stats.disk_hits), (1, 1, 0));
        let rule = Rule::builder("amount_limit", pre)
            .reads(["order.amount"])
            .build()
            .unwrap();
        let eval = rule.evaluate(&Input::from_json(r#"{"order":{"amount":7250}}"#).unwrap());
        let decision = eval.result.unwrap();
        assert_eq!(decision.verdict, Verdict::Deny);
        assert!(
            decision.reasons[0].contains("7250"),
            "{:?}",
            decision.reasons
        );
    }
}

#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Engine::new(EngineConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..EngineConfig::default()
    })
    .err()
    .unwrap();
    assert_eq!(err.field, "cache_dir");
    assert!(
        err.message.contains("writable by other users (mode 777)"),
        "{err}"
    );
    // A new directory is created private.
    let fresh = cache.path().join("new/compiled");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    engine_with_cache(&fresh);
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let key_mode = std::fs::metadata(fresh.join("key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
}

// 12. Verdicts must not depend on how busy the host is.
fn busy_manifest(timeout_ms: u64) -> String {
    let mut m = "[bundle]\nformat = 1\nname = \"busy\"\nrevision = \"1\"\n".to_owned();
    for i in 0..4 {
        m.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\ncomponent = \"echo.wasm\"\nsettings = {{ verdict = \"allow\", work = 100000 }}\nlimits = {{ timeout_ms = {timeout_ms} }}\n"
        ));
    }
    m
}

#[test]
fn an_oversubscribed_host_delays_verdicts_but_never_flips_them() {
    // Its own engine: admission is engine-wide, and other tests share `engine()`.
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let dir = temp_bundle(&busy_manifest(5));
    let b =
        std::sync::Arc::new(Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap());
    let input = Input::from_json(r#"{"x": 1}"#).unwrap();
    // 32 busy loops on a 2-core machine, and 64 evaluations at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..32)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        })
        .collect();
    let results = rt().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (b, input) = (b.clone(), input.clone());
                tokio::spawn(async move { b.evaluate(&input).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    let (mut decided, mut overloaded) = (0, 0);
    let (mut max_queue, mut max_wall, mut max_cpu) = (0, 0, 0);
    for r in &results {
        match r {
            Ok(r) => {
                // Never a timeout turned into a deny: every rule allowed.
                assert_eq!(r.verdict, Verdict::Allow, "{:?}", r.errors());
                decided += 1;
                for e in &r.rules {
                    max_queue = max_queue.max(e.metering.queue_us);
                    max_wall = max_wall.max(e.metering.wall_us);
                    max_cpu = max_cpu.max(e.metering.cpu_us);
                }
            }
            // Starved past the grace: reported as the host's condition, not a verdict.
            Err(e) => {
                assert!(e.message.contains("too busy"), "{e}");
                overloaded += 1;
            }
        }
    }
    println!(
        "busy host: {decided} decided, {overloaded} overloaded; max queue {max_queue} us, max wall {max_wall} us, max cpu {max_cpu} us (timeout 5000 us)"
    );
    assert!(decided >= 32, "most evaluations decide: {decided}");
    assert!(max_queue > 0, "64 evaluations on 2 slots must queue");
}

/// A rule that holds its evaluation slot and instance for 400 ms (its deadline).
fn hog(engine: &Engine) -> Rule {
    Rule::builder(
        "hog",
        engine
            .load_file(guest_path("hostile_infinite_loop"))
            .unwrap(),
    )
    .limits(LimitsOverride {
        timeout_ms: Some(400),
        // Enough fuel that it holds its slot until the deadline.
        fuel: Some(10_000_000_000),
        ..Default::default()
    })
    .build()
    .unwrap()
}

#[test]
fn a_full_host_is_overloaded_not_a_deny_and_recovers() {
    let engine = Engine::new(EngineConfig {
        max_concurrent_evaluations: 1,
        queue_timeout_ms: 20,
        ..EngineConfig::default()
    })
    .unwrap();
    let hog = hog(&engine);
    let dir = temp_bundle(&busy_manifest(100));
    let b = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
    let input = Input::from_json(r#"{"x": 1}"#).unwrap();
    let holder = std::thread::spawn({
        let input = input.clone();
        move || hog.evaluate(&input)
    });
    std::thread::sleep(Duration::from_millis(100));
    let stats = engine.stats();
    assert_eq!(
        (stats.running, stats.waiting, stats.overloaded),
        (1, 0, 0),
        "the hog holds the only slot"
    );
    // The bundle fails closed (on_error = deny) but overload is not the rule's failure.
    let err = b.evaluate_sequential(&input).unwrap_err();
    assert_eq!(err.rules, ["r0"]);
    assert!(err.message.contains("no evaluation slot within"), "{err}");
    assert_eq!(engine.stats().overloaded, 1, "counted");
    let rule = &b.rules()[1].rule;
    let eval = rule.evaluate(&input);
    assert_eq!(
        eval.result.as_ref().unwrap_err().kind(),
        ErrorKind::Overloaded
    );
    assert!(eval.metering.queue_us >= 20_000, "{:?}", eval.metering);
    // Timeout or, on a fast CPU, fuel: either way it held the slot until then.
    let hog = holder.join().unwrap().result.unwrap_err().kind();
    assert!(hog.is_limit(), "{hog}");
    // Once the slot is free, evaluations decide again.
    assert_eq!(
        b.evaluate_sequential(&input).unwrap().verdict,
        Verdict::Allow
    );
}

#[test]
fn a_full_instance_pool_is_overloaded_not_a_deny_and_recovers() {
    // Two instance slots, and admission lets two evaluations run; an idle warm instance
    // (kept between evaluations of a `reuse` rule) holds one of them, so while the hog runs
    // in the other the pool is full. (A rule heavier than the pool's per-rule reservation,
    // the other way to fill it, is refused at load: `loading.rs`.)
    let engine = Engine::new(EngineConfig {
        max_instances: 2,
        max_concurrent_evaluations: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let hog = hog(&engine);
    let warm = Rule::builder(
        "warm",
        engine.load_file(guest_path("fixture_echo")).unwrap(),
    )
    .isolation(rulebox::Isolation::Reuse)
    .build()
    .unwrap();
    let input = Input::from_json(r#"{"x": 1}"#).unwrap();
    assert!(warm.evaluate(&input).result.is_ok());
    // One fail-closed rule: a pool failure counted as the rule's error would deny.
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"pool\"\nrevision = \"1\"\non_error = \"deny\"\n[[rule]]\nname = \"r\"\ncomponent = \"echo.wasm\"\nsettings = { verdict = \"allow\" }\n",
    );
    let b = Bundle::load(&engine, dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(
        b.evaluate_sequential(&input).unwrap().verdict,
        Verdict::Allow,
        "beside the warm instance, it fits"
    );
    let holder = std::thread::spawn({
        let input = input.clone();
        move || hog.evaluate(&input)
    });
    std::thread::sleep(Duration::from_millis(100));
    let err = b.evaluate_sequential(&input).unwrap_err();
    assert_eq!(err.rules, ["r"]);
    assert!(err.message.contains("no free instance"), "{err}");
    assert_eq!(engine.stats().overloaded, 1, "counted");
    let eval = b.rules()[0].rule.evaluate(&input);
    assert_eq!(
        eval.result.as_ref().unwrap_err().kind(),
        ErrorKind::Overloaded
    );
    let hog = holder.join().unwrap().result.unwrap_err().kind();
    assert!(hog.is_limit(), "{hog}");
    assert_eq!(
        b.evaluate_sequential(&input).unwrap().verdict,
        Verdict::Allow,
        "the evaluation after the pool frees up decides"
    );
    assert_eq!(engine.stats().overloaded, 2);
}
