//! `rulebox bundle pack`: a directory to a `.tar.gz`, with the components' digests filled in.

use super::BundleError;
use super::signing::SecretKey;
use super::source::{BundleSource, MANIFEST_FILE, SIGNATURE_FILE, SourceError, SourceLimits, io};
use std::path::Path;

/// Packs the bundle directory `dir` into `out` (a `.tar.gz`): fills each rule's `sha256` in
/// the packed manifest (comments and layout kept), and signs the result with `key` if given.
/// A signature already in the directory is dropped: filling digests changes the manifest.
pub fn pack(
    dir: &Path,
    out: &Path,
    key: Option<&SecretKey>,
    limits: &SourceLimits,
) -> Result<(), BundleError> {
    let source = BundleSource::open(dir, limits)?;
    let text = String::from_utf8(source.read(MANIFEST_FILE)?)
        .map_err(|_| SourceError::invalid("bundle.toml is not UTF-8"))?;
    // Validate first, so a broken manifest is not packed.
    let manifest = super::Manifest::parse(&text)?;
    manifest.plan()?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| SourceError::invalid(format!("bundle.toml: {e}")))?;
    if let Some(rules) = doc.get_mut("rule").and_then(|r| r.as_array_of_tables_mut()) {
        for rule in rules.iter_mut() {
            let component = rule
                .get("component")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_owned();
            let path =
                super::source::check_manifest_path(&component).map_err(SourceError::Invalid)?;
            let digest = source.files().get(&path).ok_or_else(|| {
                SourceError::invalid(format!("rule component `{path}` is not in the bundle"))
            })?;
            rule["sha256"] = toml_edit::value(hex::encode(digest));
        }
    }
    let manifest_text = doc.to_string();

    // Stage the packed tree so the signature covers exactly what is archived.
    let stage = tempfile::tempdir().map_err(io("staging"))?;
    for name in source.files().keys() {
        if name == SIGNATURE_FILE {
            continue;
        }
        let target = stage.path().join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("staging {name}")))?;
        }
        if name == MANIFEST_FILE {
            std::fs::write(&target, &manifest_text)
        } else {
            std::fs::copy(source.root().join(name), &target).map(|_| ())
        }
        .map_err(io(format!("staging {name}")))?;
    }
    if let Some(key) = key {
        let staged = BundleSource::open(stage.path(), limits)?;
        let file = super::SignatureFile {
            signature: vec![key.sign(&staged)],
        };
        std::fs::write(stage.path().join(SIGNATURE_FILE), file.to_toml())
            .map_err(io("writing signature"))?;
    }
    write_archive(stage.path(), out)
}

/// Writes `dir`'s files as a `.tar.gz` with stable order and no owner or time information.
pub fn write_archive(dir: &Path, out: &Path) -> Result<(), BundleError> {
    let source = BundleSource::open(dir, &SourceLimits::default())?;
    let tmp = tempfile::NamedTempFile::new_in(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .map_err(io(format!("writing {}", out.display())))?;
    let gz = flate2::write::GzEncoder::new(tmp.as_file(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for name in source.files().keys() {
        let data = std::fs::read(dir.join(name)).map_err(io(name.as_str()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data.as_slice())
            .map_err(io(format!("archiving {name}")))?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .map_err(io(format!("writing {}", out.display())))?;
    tmp.persist(out)
        .map_err(|e| io(format!("writing {}", out.display()))(e.error))?;
    Ok(())
}

/// Signs a bundle in place with `key`: a directory gets a `bundle.sig`; an archive is
/// rewritten with one (any signature it had is replaced). Returns the signed content's digest.
pub fn sign(path: &Path, key: &SecretKey, limits: &SourceLimits) -> Result<String, BundleError> {
    if path.is_dir() {
        sign_dir(path, key, limits)
    } else {
        let source = BundleSource::open(path, limits)?;
        let digest = sign_dir(source.root(), key, limits)?;
        write_archive(source.root(), path)?;
        Ok(digest)
    }
}

/// Signs a bundle directory in place (writes `bundle.sig`).
fn sign_dir(dir: &Path, key: &SecretKey, limits: &SourceLimits) -> Result<String, BundleError> {
    let source = BundleSource::open(dir, limits)?;
    let file = super::SignatureFile {
        signature: vec![key.sign(&source)],
    };
    std::fs::write(dir.join(SIGNATURE_FILE), file.to_toml()).map_err(io("writing signature"))?;
    Ok(source.digest_hex())
}
