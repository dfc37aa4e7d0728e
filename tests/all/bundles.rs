//! Bundles: the catalogue of bad bundles, archives, the dependency graph, combination and
//! failure policies, golden cases, packing.

use rulebox::bundle::{self, Combine, OnError, SourceLimits};
use rulebox::{Bundle, BundleError, ErrorKind, Input, LoadOptions, LoadStep, Verdict};
use rulebox_tests::{engine, example_bundle, guest_path, rt, temp_bundle, write_bundle};
use serde_json::json;
use std::path::Path;

fn load(dir: &Path) -> Result<Bundle, BundleError> {
    Bundle::load(engine(), dir, &LoadOptions::default())
}

fn input(v: serde_json::Value) -> Input {
    Input::from_value(v).unwrap()
}

#[test]
fn every_bad_bundle_in_the_catalogue_gets_its_exact_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundles/bad");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "the catalogue shrank: {}", cases.len());
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .expect("first line is # expect: ...");
        let step = match text.lines().nth(1).and_then(|l| l.strip_prefix("# step: ")) {
            Some("compile") => LoadStep::Compile,
            _ => LoadStep::Read,
        };
        let bundle = temp_bundle(&text);
        let err = match load(bundle.path()) {
            Ok(_) => panic!("{}: loaded, expected `{expect}`", case.display()),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains(expect),
            "{}:\n  expected: {expect}\n  got:      {err}",
            case.display()
        );
        assert_eq!(err.step(), step, "{}", case.display());
    }
}

#[test]
fn a_component_of_another_world_fails_at_compile_and_names_the_rule() {
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"b\"\nrevision = \"1\"\n[[rule]]\nname = \"other\"\ncomponent = \"other.wasm\"\n",
    );
    std::fs::copy(guest_path("foreign_world"), dir.path().join("other.wasm")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.step(), LoadStep::Compile);
    assert!(
        err.to_string()
            .starts_with("rule `other`: component: component is not a rulebox:rule@0.1.0 rule"),
        "{err}"
    );
}

#[test]
fn a_directory_without_a_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("no bundle.toml at the bundle's top level"),
        "{err}"
    );
    let err = load(Path::new("/no/such/bundle")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read bundle /no/such/bundle"),
        "{err}"
    );
}

/// One raw archive entry: name, type, content, link target.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// A .tar.gz with raw entries, bypassing the tar crate's own path checks.
fn raw_archive(path: &Path, entries: &[RawEntry<'_>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    for (name, ty, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(*ty);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn archives_that_escape_or_overflow_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = std::fs::read(example_bundle("payments").join("bundle.toml")).unwrap();
    let m = manifest.as_slice();
    let file = tar::EntryType::Regular;
    let cases: Vec<(&str, Vec<RawEntry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![
                ("bundle.toml", file, m, None),
                ("../evil.txt", file, b"x", None),
            ],
            "../evil.txt: path escapes the bundle",
        ),
        (
            "absolute",
            vec![("/tmp/evil.txt", file, b"x", None)],
            "/tmp/evil.txt: path escapes the bundle",
        ),
        (
            "symlink",
            vec![
                ("bundle.toml", file, m, None),
                ("data", tar::EntryType::Symlink, b"", Some("/etc")),
            ],
            "data: links are not allowed",
        ),
        (
            "hardlink",
            vec![("passwd", tar::EntryType::Link, b"", Some("/etc/passwd"))],
            "passwd: links are not allowed",
        ),
        (
            "fifo",
            vec![("pipe", tar::EntryType::Fifo, b"", None)],
            "pipe: entry type Fifo is not allowed",
        ),
        (
            "twice",
            vec![
                ("bundle.toml", file, m, None),
                ("bundle.toml", file, m, None),
            ],
            "bundle.toml: appears twice",
        ),
    ];
    for (name, entries, expect) in cases {
        let path = tmp.path().join(format!("{name}.tar.gz"));
        raw_archive(&path, &entries);
        let err = load(&path).unwrap_err();
        assert!(
            err.to_string().contains(expect),
            "{name}: expected `{expect}`, got `{err}`"
        );
        assert_eq!(err.step(), LoadStep::Read);
    }
    assert!(!tmp.path().join("evil.txt").exists() && !Path::new("/tmp/evil.txt").exists());

    // Size and entry-count limits, counted on what is actually unpacked.
    let big = vec![0u8; 1 << 20];
    let path = tmp.path().join("big.tar.gz");
    raw_archive(
        &path,
        &[
            ("bundle.toml", file, m, None),
            ("zeros.bin", file, &big, None),
        ],
    );
    let small = LoadOptions {
        source_limits: SourceLimits {
            max_total_bytes: 256 << 10,
            max_entries: 100,
            ..SourceLimits::default()
        },
        ..Default::default()
    };
    let err = Bundle::load(engine(), &path, &small).unwrap_err();
    assert!(
        err.to_string()
            .contains("holds more than 262144 bytes (limit max_total_bytes)"),
        "{err}"
    );
    let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = many
        .iter()
        .map(|n| (n.as_str(), file, &b"x"[..], None))
        .collect();
    let path = tmp.path().join("many.tar.gz");
    raw_archive(&path, &entries);
    let few = LoadOptions {
        source_limits: SourceLimits {
            max_total_bytes: 1 << 20,
            max_entries: 10,
            ..SourceLimits::default()
        },
        ..Default::default()
    };
    let err = Bundle::load(engine(), &path, &few).unwrap_err();
    assert!(err.to_string().contains("more than 10 entries"), "{err}");

    let path = tmp.path().join("garbage.tar.gz");
    std::fs::write(&path, b"not gzip at all").unwrap();
    assert!(
        load(&path)
            .unwrap_err()
            .to_string()
            .contains("garbage.tar.gz")
    );
}

#[test]
fn a_symlink_in_a_bundle_directory_is_refused() {
    let dir = temp_bundle(
        "[bundle]\nformat = 1\nname = \"b\"\nrevision = \"1\"\n[[rule]]\nname = \"a\"\ncomponent = \"echo.wasm\"\n",
    );
    std::os::unix::fs::symlink("/etc", dir.path().join("data/etc")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("data/etc: links are not allowed"),
        "{err}"
    );
}

#[test]
fn the_example_bundle_evaluates_and_passes_its_golden_cases() {
    let b = load(&example_bundle("payments")).unwrap();
    assert_eq!(
        (b.name(), b.rules().len(), b.layers().len()),
        ("payments", 3, 2)
    );
    let order = Input::from_json(
        std::fs::read_to_string(example_bundle("payments").join("../../../examples/order.json"))
            .unwrap(),
    )
    .unwrap();
    let rt = rt();
    let result = rt.block_on(b.evaluate(&order)).unwrap();
    assert_eq!(result.verdict, Verdict::Review);
    assert_eq!(
        result.reasons,
        [
            "amount-limit: amount 7250 needs review",
            "risk: risk score 67 at or above 50"
        ]
    );
    assert_eq!(result.revision, "2026.11.22-1");
    let risk = result.rule("risk").unwrap().result.as_ref().unwrap();
    assert_eq!(risk.score, Some(67.0), "risk saw amount-limit's review");
    // Parallel and sequential evaluation agree.
    let seq = b.evaluate_sequential(&order).unwrap();
    assert_eq!(
        (seq.verdict, &seq.reasons),
        (result.verdict, &result.reasons)
    );
    let json = result.to_json();
    assert_eq!(json["bundle"], "payments");
    assert_eq!(json["rules"][0]["rule"], "amount-limit");
    assert_eq!(json["rules"][0]["decision"]["verdict"], "review");

    let report = rt.block_on(b.run_tests());
    assert_eq!((report.cases.len(), report.failed()), (6, 0), "{report:?}");
}

fn echo_rule(name: &str, settings: &str, deps: &[&str], extra: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\ncomponent = \"echo.wasm\"\nreads = [\"x\"]\ndepends_on = {deps:?}\nsettings = {settings}\n{extra}\n"
    )
}

#[test]
fn a_diamond_of_dependencies_gets_the_right_upstream_data() {
    let manifest = [
        "[bundle]\nformat = 1\nname = \"diamond\"\nrevision = \"1\"\n".to_owned(),
        echo_rule("top", r#"{ tag = "T", verdict = "allow" }"#, &[], ""),
        echo_rule("left", r#"{ tag = "L", verdict = "review" }"#, &["top"], ""),
        echo_rule("right", r#"{ tag = "R", verdict = "allow" }"#, &["top"], ""),
        echo_rule("bottom", r#"{ tag = "B" }"#, &["left", "right"], ""),
    ]
    .concat();
    let dir = temp_bundle(&manifest);
    let b = load(dir.path()).unwrap();
    assert_eq!(b.layers(), [vec![0], vec![1, 2], vec![3]]);
    let result = rt().block_on(b.evaluate(&input(json!({"x": 41})))).unwrap();
    let out = |rule: &str| {
        result
            .rule(rule)
            .unwrap()
            .result
            .as_ref()
            .unwrap()
            .output
            .clone()
            .unwrap()
    };
    assert_eq!(out("top")["upstream"], json!({}));
    assert_eq!(
        out("left")["upstream"]["top"],
        json!({"verdict": "allow", "output": out("top")})
    );
    assert_eq!(out("right")["upstream"]["top"]["output"]["tag"], "T");
    let bottom = out("bottom");
    assert_eq!(
        bottom["upstream"].as_object().unwrap().len(),
        2,
        "exactly its own dependencies"
    );
    assert_eq!(bottom["upstream"]["left"]["verdict"], "review");
    assert_eq!(bottom["upstream"]["left"]["output"]["tag"], "L");
    assert_eq!(bottom["upstream"]["right"]["output"]["tag"], "R");
    assert_eq!(bottom["facts"], json!({"x": 41}));
    assert_eq!(result.verdict, Verdict::Review);
}

/// Builds a bundle whose rules decide `verdicts` (or fail, for "fail") and returns its verdict
/// and reasons under `combine`.
fn combined(combine: &str, rules: &[(&str, &str)]) -> (Verdict, Vec<String>) {
    let mut manifest =
        format!("[bundle]\nformat = 1\nname = \"c\"\nrevision = \"1\"\ncombine = \"{combine}\"\n");
    for (i, (verdict, on_error)) in rules.iter().enumerate() {
        let settings = if *verdict == "fail" {
            r#"{ fail = "failed" }"#.to_owned()
        } else {
            format!("{{ verdict = \"{verdict}\", reason = \"r{i}\" }}")
        };
        manifest.push_str(&echo_rule(
            &format!("r{i}"),
            &settings,
            &[],
            &format!("on_error = \"{on_error}\""),
        ));
    }
    let dir = temp_bundle(&manifest);
    let b = load(dir.path()).unwrap();
    let r = b.evaluate_sequential(&input(json!({}))).unwrap();
    (r.verdict, r.reasons)
}

#[test]
fn combine_algorithms() {
    use Verdict::*;
    let d = "deny";
    let cases: &[(&str, &[&str], Verdict)] = &[
        ("deny-overrides", &["allow", "deny", "review"], Deny),
        ("deny-overrides", &["allow", "review"], Review),
        ("deny-overrides", &["allow", "abstain"], Allow),
        ("deny-overrides", &["abstain", "abstain"], Abstain),
        ("allow-overrides", &["deny", "allow", "review"], Allow),
        ("allow-overrides", &["deny", "review"], Review),
        ("allow-overrides", &["deny", "abstain"], Deny),
        ("first-applicable", &["abstain", "review", "deny"], Review),
        ("first-applicable", &["abstain", "abstain"], Abstain),
        ("all", &["allow", "allow"], Allow),
        ("all", &["allow", "abstain"], Deny),
        ("all", &["allow", "review"], Deny),
    ];
    for (combine, verdicts, want) in cases {
        let rules: Vec<(&str, &str)> = verdicts.iter().map(|v| (*v, d)).collect();
        let (got, _) = combined(combine, &rules);
        assert_eq!(got, *want, "{combine} over {verdicts:?}");
    }
    // Reasons are those of the deciding rules, named.
    let (_, reasons) = combined(
        "deny-overrides",
        &[("allow", d), ("deny", d), ("deny", d), ("review", d)],
    );
    assert_eq!(reasons, ["r1: r1", "r2: r2"]);
    let (_, reasons) = combined(
        "first-applicable",
        &[("abstain", d), ("review", d), ("deny", d)],
    );
    assert_eq!(reasons, ["r1: r1"]);
    let (_, reasons) = combined("all", &[("allow", d), ("review", d)]);
    assert_eq!(reasons, ["r1: r1"]);
    let _ = (Combine::All, OnError::Skip);
}

#[test]
fn on_error_fails_closed_or_open() {
    // Fail closed (the default): a failing rule denies, and says why.
    let (verdict, reasons) = combined("deny-overrides", &[("allow", "deny"), ("fail", "deny")]);
    assert_eq!(verdict, Verdict::Deny);
    assert_eq!(
        reasons,
        ["r1: failed closed (failed): rule failed: told to fail"]
    );
    // Fail open: the failing rule is left out.
    let (verdict, _) = combined("deny-overrides", &[("allow", "deny"), ("fail", "skip")]);
    assert_eq!(verdict, Verdict::Allow);
    // Under `all`, a skipped rule still is not an allow.
    let (verdict, reasons) = combined("all", &[("allow", "deny"), ("fail", "skip")]);
    assert_eq!(
        (verdict, reasons),
        (Verdict::Deny, vec!["r1: skipped after an error".to_owned()])
    );
}

#[test]
fn a_failed_upstream_reaches_dependents_as_its_on_error_effect() {
    let manifest = [
        "[bundle]\nformat = 1\nname = \"f\"\nrevision = \"1\"\n".to_owned(),
        echo_rule(
            "closed",
            r#"{ fail = "panic" }"#,
            &[],
            "on_error = \"deny\"",
        ),
        echo_rule("open", r#"{ fail = "failed" }"#, &[], "on_error = \"skip\""),
        echo_rule("dependent", "{}", &["closed", "open"], ""),
    ]
    .concat();
    let dir = temp_bundle(&manifest);
    let b = load(dir.path()).unwrap();
    let r = rt().block_on(b.evaluate(&input(json!({})))).unwrap();
    assert_eq!(
        r.rule("closed")
            .unwrap()
            .result
            .as_ref()
            .unwrap_err()
            .kind(),
        ErrorKind::Trap
    );
    let up = &r
        .rule("dependent")
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .output
        .as_ref()
        .unwrap()["upstream"];
    assert_eq!(up["closed"]["verdict"], "deny");
    assert!(
        up.get("open").is_none(),
        "a skipped upstream is absent: {up}"
    );
    assert_eq!(r.errors().len(), 2);
}

#[test]
fn failing_golden_cases_are_reported() {
    let manifest = [
        "[bundle]\nformat = 1\nname = \"g\"\nrevision = \"1\"\n".to_owned(),
        echo_rule("a", r#"{ verdict = "deny", reason = "no" }"#, &[], "[[rule.test]]\nname = \"wrong\"\ninput = {}\nverdict = \"allow\"\n[[rule.test]]\nname = \"right\"\ninput = {}\nverdict = \"deny\"\nreasons = [\"no\"]\n"),
        "[[test]]\nname = \"bundle level\"\ninput = { x = 1 }\nverdict = \"deny\"\nreasons = [\"a: no\"]\n".to_owned(),
    ]
    .concat();
    let dir = temp_bundle(&manifest);
    let b = load(dir.path()).unwrap();
    let report = rt().block_on(b.run_tests());
    assert_eq!((report.cases.len(), report.failed()), (3, 1));
    let bad = report.cases.iter().find(|c| !c.passed).unwrap();
    assert_eq!(
        (bad.name.as_str(), bad.target.as_str()),
        ("wrong", "rule a")
    );
    assert_eq!(
        bad.problem.as_deref(),
        Some("expected verdict Allow, got Deny")
    );
    let err = report.into_result().unwrap_err();
    assert_eq!(err.step(), LoadStep::Test);
}

#[test]
fn pack_fills_digests_and_the_archive_loads_like_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_bundle(
        &src,
        "# keep this comment\n[bundle]\nformat = 1\nname = \"p\"\nrevision = \"7\"\n[[rule]]\nname = \"a\"\ncomponent = \"echo.wasm\"\ngrants = [{ dir = \"data\" }]\nsettings = { verdict = \"review\" }\n",
    );
    let out = tmp.path().join("p.tar.gz");
    bundle::pack(&src, &out, None, &SourceLimits::default()).unwrap();
    let packed = load(&out).unwrap();
    let from_dir = load(&src).unwrap();
    assert_eq!(
        packed.manifest().rules[0].sha256.as_deref(),
        Some(from_dir.rules()[0].rule.pre().digest_hex().as_str())
    );
    assert_eq!(from_dir.manifest().rules[0].sha256, None);
    let text = std::fs::read_to_string(
        bundle::BundleSource::open(&out, &SourceLimits::default())
            .unwrap()
            .root()
            .join("bundle.toml"),
    )
    .unwrap();
    assert!(text.starts_with("# keep this comment"), "{text}");
    let doc = input(json!({}));
    assert_eq!(
        packed.evaluate_sequential(&doc).unwrap().verdict,
        Verdict::Review
    );
    // Packing is reproducible.
    let again = tmp.path().join("again.tar.gz");
    bundle::pack(&src, &again, None, &SourceLimits::default()).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}
