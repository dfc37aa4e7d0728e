//! Hot-loading: a new revision replaces the active one only when every step passes; a failed
//! load says which step failed and leaves the active revision serving; rollback; a watched
//! directory; and swapping under load without a failed or mixed evaluation.

use rulebox::bundle::{SecretKey, SourceLimits};
use rulebox::{Input, LoadOptions, LoadStep, Registry, RegistryConfig, RegistryError, Verdict};
use rulebox_tests::{engine, rt, write_bundle};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A bundle whose three rules all echo `rev` as their tag, and a golden case.
fn manifest(rev: &str) -> String {
    let mut m = format!("[bundle]\nformat = 1\nname = \"hot\"\nrevision = \"{rev}\"\n");
    for (name, deps) in [("a", "[]"), ("b", "[]"), ("c", "[\"a\", \"b\"]")] {
        m.push_str(&format!(
            "[[rule]]\nname = \"{name}\"\ncomponent = \"echo.wasm\"\ndepends_on = {deps}\nsettings = {{ tag = \"{rev}\" }}\n"
        ));
    }
    m.push_str("[[test]]\ninput = {}\nverdict = \"allow\"\n");
    m
}

fn revision_dir(root: &Path, rev: &str) -> std::path::PathBuf {
    let dir = root.join(rev);
    write_bundle(&dir, &manifest(rev));
    dir
}

/// Each way a new revision can be bad, and the step that must catch it.
fn bad_revision(root: &Path, n: usize) -> (std::path::PathBuf, LoadStep) {
    let rev = format!("bad-{n}");
    let dir = revision_dir(root, &rev);
    let step = match n % 5 {
        0 => {
            std::fs::write(
                dir.join("bundle.toml"),
                manifest(&rev).replace("depends_on = []", "depends_on = [\"c\"]"),
            )
            .unwrap();
            LoadStep::Read // a cycle
        }
        1 => {
            std::fs::write(dir.join("echo.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
            LoadStep::Compile
        }
        2 => {
            let m = manifest(&rev).replace("verdict = \"allow\"", "verdict = \"deny\"");
            std::fs::write(dir.join("bundle.toml"), m).unwrap();
            LoadStep::Test
        }
        3 => {
            std::fs::write(
                dir.join("bundle.toml"),
                "[bundle]\nformat = 1\nname = \"hot\"\n",
            )
            .unwrap();
            LoadStep::Read
        }
        _ => {
            let m = manifest(&rev).replace(
                "settings = { tag",
                "settings = { verdict = \"sometimes\", tag",
            );
            std::fs::write(dir.join("bundle.toml"), m).unwrap();
            LoadStep::Test // the rule fails on its own settings
        }
    };
    (dir, step)
}

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(engine().clone(), RegistryConfig::default()))
}

#[test]
fn load_replace_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    let a = rt
        .block_on(reg.load(&revision_dir(tmp.path(), "r1")))
        .unwrap();
    assert_eq!(
        (a.revision.as_str(), a.previous, a.tests_passed),
        ("r1", None, 1)
    );
    let a = rt
        .block_on(reg.load(&revision_dir(tmp.path(), "r2")))
        .unwrap();
    assert_eq!(a.previous.as_deref(), Some("r1"));
    assert_eq!(reg.get("hot").unwrap().revision(), "r2");
    let held = reg.get("hot").unwrap();

    let back = reg.rollback("hot").unwrap();
    assert_eq!(
        (back.revision.as_str(), back.previous.as_deref()),
        ("r1", Some("r2"))
    );
    assert_eq!(reg.get("hot").unwrap().revision(), "r1");
    assert_eq!(
        held.revision(),
        "r2",
        "a holder keeps the revision it started with"
    );
    assert_eq!(
        reg.rollback("hot").unwrap_err(),
        RegistryError::NoPrevious("hot".into())
    );
    assert_eq!(
        reg.get("nope").unwrap_err(),
        RegistryError::NotFound("nope".into())
    );

    let result = rt
        .block_on(reg.evaluate("hot", &Input::from_value(json!({})).unwrap()))
        .unwrap();
    assert_eq!(result.revision, "r1");
    reg.unload("hot").unwrap();
    assert!(reg.get("hot").is_err());
}

#[test]
fn history_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::new(
        engine().clone(),
        RegistryConfig {
            keep_revisions: 3,
            ..Default::default()
        },
    );
    let rt = rt();
    for i in 0..6 {
        rt.block_on(reg.load(&revision_dir(tmp.path(), &format!("r{i}"))))
            .unwrap();
    }
    let status = reg.status();
    assert_eq!(status[0].revision, "r5");
    assert_eq!(status[0].history, ["r4", "r3"]);
}

/// A staged revision passes every step of the gate without serving; each bad revision is
/// refused at its step by `stage` as by `load`, but not recorded as a failed load (nothing
/// that serves was touched); promotion activates it like a load (history, event), and
/// promoting what is active already changes nothing.
#[test]
fn a_staged_revision_is_checked_but_serves_only_once_promoted() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    let mut events = reg.subscribe();
    rt.block_on(reg.load(&revision_dir(tmp.path(), "r1")))
        .unwrap();
    let staged = rt
        .block_on(reg.stage(&revision_dir(tmp.path(), "r2"), "hot"))
        .unwrap();
    assert_eq!(staged.tests_passed(), 1);
    assert_eq!(
        reg.get("hot").unwrap().revision(),
        "r1",
        "staged, not served"
    );
    let input = Input::from_value(json!({})).unwrap();
    let shadowed = staged.bundle().evaluate_uncached(&input).unwrap();
    assert_eq!(shadowed.revision, "r2");
    assert!(shadowed.rules.iter().all(|r| !r.cached));
    for n in 0..5 {
        let (dir, step) = bad_revision(tmp.path(), n);
        let failure = rt.block_on(reg.stage(&dir, "hot")).unwrap_err();
        assert_eq!(failure.step, step, "case {n}: {failure}");
    }
    let failure = rt
        .block_on(reg.stage(&revision_dir(tmp.path(), "r3"), "other"))
        .unwrap_err();
    assert!(failure.to_string().contains("not `other`"), "{failure}");

    let a = rt.block_on(reg.promote(&staged));
    assert_eq!(
        (a.revision.as_str(), a.previous.as_deref(), a.unchanged),
        ("r2", Some("r1"), false)
    );
    assert_eq!(reg.get("hot").unwrap().revision(), "r2");
    assert_eq!(reg.status_of("hot").unwrap().0.history, ["r1"]);
    assert!(rt.block_on(reg.promote(&staged)).unchanged);
    let mut activated = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            rulebox::RegistryEvent::Activated { revision, .. } => activated.push(revision),
            other => panic!("a refused candidate touched nothing that serves: {other:?}"),
        }
    }
    assert_eq!(activated, ["r1", "r2"], "one event per activation");
    assert!(reg.status_of("hot").unwrap().0.last_failure.is_none());
    // A rollback meant for a revision no longer active does nothing.
    assert_eq!(rt.block_on(reg.rollback_from("hot", "r1", "r1")), Ok(None));
    let back = rt.block_on(reg.rollback_from("hot", "r2", "r1")).unwrap();
    assert_eq!(back.map(|a| a.revision), Some("r1".to_owned()));
    assert_eq!(reg.get("hot").unwrap().revision(), "r1");
}

#[test]
fn every_failed_step_leaves_the_active_revision_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    rt.block_on(reg.load(&revision_dir(tmp.path(), "good")))
        .unwrap();
    for n in 0..5 {
        let (dir, step) = bad_revision(tmp.path(), n);
        let failure = rt.block_on(reg.load(&dir)).unwrap_err();
        assert_eq!(failure.step, step, "case {n}: {failure}");
        assert_eq!(reg.get("hot").unwrap().revision(), "good", "case {n}");
    }
    // A signature failure too, with a registry that requires signatures.
    let key = SecretKey::generate().unwrap();
    let strict = Registry::new(
        engine().clone(),
        RegistryConfig {
            load: LoadOptions {
                trusted_keys: vec![key.public()],
                require_signature: true,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let signed = revision_dir(tmp.path(), "signed");
    rulebox::bundle::sign(&signed, &key, &SourceLimits::default()).unwrap();
    rt.block_on(strict.load(&signed)).unwrap();
    let unsigned = revision_dir(tmp.path(), "unsigned");
    let failure = rt.block_on(strict.load(&unsigned)).unwrap_err();
    assert_eq!(failure.step, LoadStep::Verify);
    assert!(failure.to_string().contains("not signed"), "{failure}");
    assert_eq!(strict.get("hot").unwrap().revision(), "signed");
}

#[test]
fn swapping_under_load_never_fails_or_mixes_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    rt.block_on(reg.load(&revision_dir(tmp.path(), "g00")))
        .unwrap();
    // Prepare every revision first, so loading is the only thing racing the evaluations.
    let mut plan = Vec::new();
    for i in 1..=20 {
        plan.push((revision_dir(tmp.path(), &format!("g{i:02}")), None));
        if i % 4 == 0 {
            let (dir, step) = bad_revision(tmp.path(), i / 4 - 1);
            plan.push((dir, Some(step)));
        }
    }
    assert_eq!(plan.iter().filter(|(_, s)| s.is_some()).count(), 5);

    let stop = Arc::new(AtomicBool::new(false));
    let evaluations = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let input = Input::from_value(json!({"x": 1})).unwrap();
    rt.block_on(async {
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (reg, stop, evaluations, seen, input) = (
                reg.clone(),
                stop.clone(),
                evaluations.clone(),
                seen.clone(),
                input.clone(),
            );
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = reg
                        .evaluate("hot", &input)
                        .await
                        .expect("a bundle is always active");
                    assert_eq!(r.verdict, Verdict::Allow, "{:?}", r.errors());
                    for eval in &r.rules {
                        let d = eval
                            .result
                            .as_ref()
                            .unwrap_or_else(|e| panic!("rule {} failed: {e}", eval.rule));
                        assert_eq!(
                            d.output.as_ref().unwrap()["tag"],
                            r.revision.as_str(),
                            "rule {} answered for another revision",
                            eval.rule
                        );
                    }
                    evaluations.fetch_add(1, Ordering::Relaxed);
                    seen.lock().unwrap().insert(r.revision.clone());
                }
            }));
        }
        for (dir, bad) in &plan {
            let loaded = reg.load(dir).await;
            match bad {
                None => assert!(loaded.is_ok(), "{}: {:?}", dir.display(), loaded.err()),
                Some(step) => assert_eq!(loaded.unwrap_err().step, *step),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.expect("an evaluator failed");
        }
    });
    assert_eq!(reg.get("hot").unwrap().revision(), "g20");
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 5,
        "evaluations ran across the swaps: saw {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.starts_with('g')),
        "a bad revision was served: {seen:?}"
    );
    assert!(evaluations.load(Ordering::Relaxed) > 100);
}

#[test]
fn a_watched_directory_loads_new_and_changed_bundles() {
    let watched = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    let wait_for = |rev: &str| {
        for _ in 0..200 {
            if reg.get("hot").is_ok_and(|b| b.revision() == rev) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("revision {rev} was not loaded; status {:?}", reg.status());
    };
    let _guard = rt.enter();
    let _watcher = reg
        .watch(watched.path(), Duration::from_millis(100))
        .unwrap();
    let dir = revision_dir(watched.path(), "w1");
    wait_for("w1");
    std::fs::write(dir.join("bundle.toml"), manifest("w2")).unwrap();
    wait_for("w2");
    // A broken change is refused; w2 keeps serving.
    std::fs::write(
        dir.join("bundle.toml"),
        "[bundle]\nformat = 1\nname = \"hot\"\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(reg.get("hot").unwrap().revision(), "w2");
    drop(rt);
}

/// Loading a bundle reads its files; the watcher must not take those reads for changes
/// (inotify reports opens and closes), or an unchanged bundle is activated again and
/// again and pushes the real previous revisions out of its history. Loading the revision
/// that is already active (same digest) changes nothing either.
#[test]
fn an_unchanged_watched_bundle_is_activated_once() {
    let watched = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut events = reg.subscribe();
    let rt = rt();
    let _guard = rt.enter();
    let _watcher = reg
        .watch(watched.path(), Duration::from_millis(100))
        .unwrap();
    revision_dir(watched.path(), "q1");
    for _ in 0..200 {
        if reg.get("hot").is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = &reg.status()[0];
    assert_eq!(status.history, Vec::<String>::new(), "{status:?}");
    let mut activations = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, rulebox::RegistryEvent::Activated { .. }) {
            activations += 1;
        }
    }
    assert_eq!(activations, 1);
    // The same revision loaded again by hand: reported, not activated.
    let again = rt.block_on(reg.load(&watched.path().join("q1"))).unwrap();
    assert!(again.unchanged, "{again:?}");
    assert_eq!(reg.status()[0].history, Vec::<String>::new());
    drop(rt);
}

#[test]
fn several_bundles_side_by_side_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let rt = rt();
    rt.block_on(reg.load(&revision_dir(tmp.path(), "h1")))
        .unwrap();
    rt.block_on(reg.load(&rulebox_tests::example_bundle("payments")))
        .unwrap();
    let names: Vec<String> = reg.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["hot", "payments"]);
    let doc = Input::from_value(json!({"order": {"amount": 20, "currency": "EUR"}, "customer": {"country": "DE", "age_days": 900, "verified": true}})).unwrap();
    let hot = rt.block_on(reg.evaluate("hot", &doc)).unwrap();
    let pay = rt.block_on(reg.evaluate("payments", &doc)).unwrap();
    assert_eq!((hot.bundle.as_str(), hot.rules.len()), ("hot", 3));
    assert_eq!(
        (pay.bundle.as_str(), pay.verdict),
        ("payments", Verdict::Allow)
    );
    // Rolling one back leaves the other alone.
    rt.block_on(reg.load(&revision_dir(tmp.path(), "h2")))
        .unwrap();
    reg.rollback("hot").unwrap();
    assert_eq!(reg.get("payments").unwrap().revision(), "2026.11.22-1");
    assert_eq!(reg.get("hot").unwrap().revision(), "h1");
}

#[test]
fn lifecycle_events_and_status_say_what_happened_and_when() {
    use rulebox::RegistryEvent;
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry();
    let mut events = reg.subscribe();
    let rt = rt();
    let path = revision_dir(tmp.path(), "r1");
    rt.block_on(reg.load(&path)).unwrap();
    let activated = reg.status()[0].activated_at_ms;
    assert!(activated > 1_700_000_000_000, "{activated}");
    assert_eq!(reg.status()[0].last_failure, None);
    rt.block_on(reg.load(&revision_dir(tmp.path(), "r2")))
        .unwrap();
    // A revision whose golden case fails, then a broken manifest at the active path.
    let bad = revision_dir(tmp.path(), "r3");
    std::fs::write(
        bad.join("bundle.toml"),
        manifest("r3").replace("verdict = \"allow\"\n", "verdict = \"deny\"\n"),
    )
    .unwrap();
    rt.block_on(reg.load(&bad)).unwrap_err();
    let status = &reg.status()[0];
    assert_eq!(status.revision, "r2", "still serving");
    let failure = status.last_failure.as_ref().unwrap();
    assert_eq!(
        (failure.step, failure.path.as_path()),
        (LoadStep::Test, bad.as_path())
    );
    assert!(
        failure.reason.contains("golden cases failed"),
        "{failure:?}"
    );
    let r2 = tmp.path().join("r2");
    std::fs::write(r2.join("bundle.toml"), "[bundle").unwrap();
    rt.block_on(reg.load(&r2)).unwrap_err();
    let failure = reg.status()[0].last_failure.clone().unwrap();
    assert_eq!(
        failure.step,
        LoadStep::Read,
        "matched to the bundle by its path"
    );
    reg.rollback("hot").unwrap();
    reg.unload("hot").unwrap();

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    let summary: Vec<String> = seen
        .iter()
        .map(|e| match e {
            RegistryEvent::Activated {
                bundle,
                revision,
                previous,
                ..
            } => {
                format!("activated {bundle} {revision} after {previous:?}")
            }
            RegistryEvent::LoadFailed { bundle, failure } => {
                format!("failed {bundle:?} at {:?}", failure.step)
            }
            RegistryEvent::RolledBack {
                bundle, from, to, ..
            } => {
                format!("rolled back {bundle} {from}->{to}")
            }
            RegistryEvent::Unloaded { bundle, .. } => format!("unloaded {bundle}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "activated hot r1 after None",
            "activated hot r2 after Some(\"r1\")",
            "failed Some(\"hot\") at Test",
            "failed Some(\"hot\") at Read",
            "rolled back hot r2->r1",
            "unloaded hot",
        ]
    );
    // Events serialize for a server to send as they are.
    let json = serde_json::to_value(&seen[2]).unwrap();
    assert_eq!(json["event"], "load-failed");
    assert_eq!(json["failure"]["step"], "test");
}

#[test]
fn a_slow_load_of_one_bundle_does_not_delay_another() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = tmp.path().join("slow");
    write_bundle(
        &slow,
        "[bundle]\nformat = 1\nname = \"slow\"\nrevision = \"1\"\n[[rule]]\nname = \"s\"\ncomponent = \"sleep.wasm\"\nsettings = { seconds = 1 }\nlimits = { timeout_ms = 5000 }\n[[test]]\ninput = {}\nverdict = \"allow\"\n",
    );
    std::fs::copy(
        rulebox_tests::guest_path("hostile_sleep"),
        slow.join("sleep.wasm"),
    )
    .unwrap();
    let fast = revision_dir(tmp.path(), "fast");
    let reg = registry();
    rt().block_on(async {
        let slow_load = tokio::spawn({
            let reg = reg.clone();
            async move { reg.load(&slow).await }
        });
        // Let it reach its golden case (a one-second sleep).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = std::time::Instant::now();
        reg.load(&fast).await.unwrap();
        assert!(
            !slow_load.is_finished(),
            "the fast bundle waited {:?} for the slow one",
            t.elapsed()
        );
        slow_load.await.unwrap().unwrap();
    });
    assert_eq!(reg.status().len(), 2);
}
