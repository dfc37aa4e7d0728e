//! Signatures: a signed bundle loads when signatures are required; a tampered file, a tampered
//! manifest, a wrong key or a missing signature is refused at the verify step.

use rulebox::bundle::{self, SecretKey, SourceLimits, TrustedKey};
use rulebox::{Bundle, LoadOptions, LoadStep};
use rulebox_tests::{engine, write_bundle};
use std::path::Path;

const MANIFEST: &str = "[bundle]\nformat = 1\nname = \"s\"\nrevision = \"1\"\n[[rule]]\nname = \"a\"\ncomponent = \"echo.wasm\"\ngrants = [{ dir = \"data\" }]\n";

fn required(keys: &[TrustedKey]) -> LoadOptions {
    LoadOptions {
        trusted_keys: keys.to_vec(),
        require_signature: true,
        ..Default::default()
    }
}

fn signed_dir(key: &SecretKey) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), MANIFEST);
    bundle::sign(dir.path(), key, &SourceLimits::default()).unwrap();
    dir
}

fn refused(path: &Path, options: &LoadOptions) -> String {
    let err = Bundle::load(engine(), path, options).unwrap_err();
    assert_eq!(err.step(), LoadStep::Verify, "{err}");
    err.to_string()
}

#[test]
fn a_signed_bundle_loads_and_records_its_signer() {
    let key = SecretKey::generate().unwrap();
    let dir = signed_dir(&key);
    let b = Bundle::load(engine(), dir.path(), &required(&[key.public()])).unwrap();
    assert_eq!(b.signed_by(), Some(&key.public()));
    // Several trusted keys: any one signer is enough.
    let other = SecretKey::generate().unwrap();
    Bundle::load(
        engine(),
        dir.path(),
        &required(&[other.public(), key.public()]),
    )
    .unwrap();
}

#[test]
fn tampering_after_signing_is_refused() {
    let key = SecretKey::generate().unwrap();
    let trusted = required(&[key.public()]);

    let dir = signed_dir(&key);
    std::fs::write(dir.path().join("data/note.txt"), "changed").unwrap();
    assert!(refused(dir.path(), &trusted).contains("altered after signing"));

    let dir = signed_dir(&key);
    let manifest = std::fs::read_to_string(dir.path().join("bundle.toml")).unwrap();
    std::fs::write(
        dir.path().join("bundle.toml"),
        manifest.replace("revision = \"1\"", "revision = \"2\""),
    )
    .unwrap();
    assert!(refused(dir.path(), &trusted).contains("altered after signing"));

    let dir = signed_dir(&key);
    std::fs::write(dir.path().join("data/extra.txt"), "smuggled").unwrap();
    assert!(refused(dir.path(), &trusted).contains("altered after signing"));

    let dir = signed_dir(&key);
    std::fs::remove_file(dir.path().join("data/note.txt")).unwrap();
    assert!(refused(dir.path(), &trusted).contains("altered after signing"));
}

#[test]
fn a_wrong_key_or_no_signature_is_refused() {
    let key = SecretKey::generate().unwrap();
    let stranger = SecretKey::generate().unwrap();
    let dir = signed_dir(&stranger);
    assert!(refused(dir.path(), &required(&[key.public()])).contains("signed by an untrusted key"));

    let unsigned = tempfile::tempdir().unwrap();
    write_bundle(unsigned.path(), MANIFEST);
    assert!(
        refused(unsigned.path(), &required(&[key.public()])).contains("the bundle is not signed")
    );
    // Not required and no keys: an unsigned bundle loads.
    Bundle::load(engine(), unsigned.path(), &LoadOptions::default()).unwrap();

    std::fs::write(
        unsigned.path().join("bundle.sig"),
        "[[signature]]\nkey = \"zz\"\nsig = \"zz\"\n",
    )
    .unwrap();
    // A malformed entry is named for what is wrong with it.
    assert!(
        refused(unsigned.path(), &required(&[key.public()]))
            .contains("bundle.sig: signature #1: `key` holds 'z', not 64 hex digits")
    );
    std::fs::write(
        unsigned.path().join("bundle.sig"),
        format!(
            "[[signature]]\nkey = \"{}\"\nsig = \"not-hex\"\n",
            key.public().to_hex()
        ),
    )
    .unwrap();
    let err = refused(unsigned.path(), &required(&[key.public()]));
    assert!(
        err.contains("`sig` holds 'n', not 128 hex digits") && !err.contains("altered"),
        "{err}"
    );
    std::fs::write(
        unsigned.path().join("bundle.sig"),
        format!(
            "[[signature]]\nkey = \"{}\"\nsig = \"abcd\"\n",
            key.public().to_hex()
        ),
    )
    .unwrap();
    assert!(refused(unsigned.path(), &required(&[key.public()])).contains("`sig` has 4 digits"));
    // Trusting a key requires a signature, without --require-signature.
    std::fs::remove_file(unsigned.path().join("bundle.sig")).unwrap();
    let trusting = LoadOptions {
        trusted_keys: vec![key.public()],
        ..Default::default()
    };
    assert!(refused(unsigned.path(), &trusting).contains("the bundle is not signed"));
    // Requiring a signature while trusting no key refuses every bundle, saying why.
    let dir = signed_dir(&key);
    assert!(refused(dir.path(), &required(&[])).contains("no key is trusted"));
    std::fs::write(unsigned.path().join("bundle.sig"), "garbage = ").unwrap();
    assert!(refused(unsigned.path(), &required(&[key.public()])).contains("bundle.sig"));
}

#[test]
fn a_forged_signature_by_a_trusted_key_id_is_refused() {
    let key = SecretKey::generate().unwrap();
    let dir = signed_dir(&key);
    let sig = std::fs::read_to_string(dir.path().join("bundle.sig")).unwrap();
    // Flip the first hex digit of the signature, keeping the key.
    let at = sig.find("sig = \"").unwrap() + 7;
    let flipped = if &sig[at..at + 1] == "0" { "1" } else { "0" };
    let forged = format!("{}{flipped}{}", &sig[..at], &sig[at + 1..]);
    assert_ne!(forged, sig);
    std::fs::write(dir.path().join("bundle.sig"), forged).unwrap();
    assert!(refused(dir.path(), &required(&[key.public()])).contains("altered after signing"));
}

#[test]
fn a_packed_and_signed_archive_verifies() {
    let key = SecretKey::generate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    write_bundle(&tmp.path().join("src"), MANIFEST);
    let out = tmp.path().join("s.tar.gz");
    bundle::pack(
        &tmp.path().join("src"),
        &out,
        Some(&key),
        &SourceLimits::default(),
    )
    .unwrap();
    let b = Bundle::load(engine(), &out, &required(&[key.public()])).unwrap();
    assert!(b.manifest().rules[0].sha256.is_some());
    let source = bundle::BundleSource::open(&out, &SourceLimits::default()).unwrap();
    assert_eq!(
        bundle::verify(&source, &[key.public()]).unwrap(),
        key.public()
    );
}

#[test]
fn keys_round_trip_through_their_files() {
    let key = SecretKey::generate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("k.key"), key.to_hex()).unwrap();
    std::fs::write(tmp.path().join("k.pub"), key.public().to_hex() + "\n").unwrap();
    let again = SecretKey::from_file(&tmp.path().join("k.key")).unwrap();
    assert_eq!(again.public(), key.public());
    assert_eq!(
        TrustedKey::from_file(&tmp.path().join("k.pub")).unwrap(),
        key.public()
    );
    assert!(TrustedKey::from_hex("abc").is_err());
}

#[test]
fn signature_and_source_errors_are_typed_for_callers_to_branch_on() {
    use rulebox::BundleError;
    use rulebox::bundle::{SignatureError, SourceError};
    let key = SecretKey::generate().unwrap();
    let load = |path: &Path, keys: &[TrustedKey]| {
        Bundle::load(engine(), path, &required(keys)).unwrap_err()
    };
    let dir = signed_dir(&key);
    let err = load(dir.path(), &[SecretKey::generate().unwrap().public()]);
    assert!(
        matches!(err, BundleError::Signature(SignatureError::UntrustedKey { ref keys }) if keys.len() == 1),
        "{err:?}"
    );
    std::fs::write(dir.path().join("data/note.txt"), "changed").unwrap();
    let err = load(dir.path(), &[key.public()]);
    assert!(
        matches!(err, BundleError::Signature(SignatureError::Mismatch)),
        "{err:?}"
    );
    let err = load(dir.path(), &[]);
    assert!(
        matches!(err, BundleError::Signature(SignatureError::NoTrustedKey)),
        "{err:?}"
    );
    std::fs::remove_file(dir.path().join("bundle.sig")).unwrap();
    let err = load(dir.path(), &[key.public()]);
    assert!(
        matches!(err, BundleError::Signature(SignatureError::Unsigned)),
        "{err:?}"
    );
    // A missing path: the OS error is kept as the source.
    let err = load(&dir.path().join("nope"), &[key.public()]);
    let BundleError::Source(SourceError::Io { source, .. }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    // Over a limit: the limit is named.
    let limits = SourceLimits {
        max_entries: 2,
        ..SourceLimits::default()
    };
    let err = Bundle::load(
        engine(),
        dir.path(),
        &LoadOptions {
            source_limits: limits,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Source(SourceError::Limit {
                limit: "max_entries",
                ..
            })
        ),
        "{err:?}"
    );
}
