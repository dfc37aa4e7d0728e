//! A bundle's files, read from a directory or a `.tar.gz`, with size and entry limits, every
//! file digested (for signatures and component checks), and archives extracted to a private
//! directory (grants need real directories).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The signature file's name inside a bundle.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// The manifest's name inside a bundle.
pub const MANIFEST_FILE: &str = "bundle.toml";

/// Limits on what a bundle may hold; an archive over them is refused before it fills a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceLimits {
    /// Total bytes of all files, after decompression. Default 256 MiB.
    pub max_total_bytes: u64,
    /// Number of files and directories. Default 10,000.
    pub max_entries: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            max_total_bytes: 256 << 20,
            max_entries: 10_000,
        }
    }
}

/// A problem with a bundle's files or archive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The files of a bundle on disk, each with its digest.
#[derive(Debug)]
pub struct BundleSource {
    root: PathBuf,
    /// Keeps an extracted archive alive as long as the bundle.
    _extracted: Option<tempfile::TempDir>,
    files: BTreeMap<String, [u8; 32]>,
    dirs: BTreeSet<String>,
    origin: PathBuf,
}

impl BundleSource {
    /// Reads a bundle directory or `.tar.gz` archive.
    pub fn open(path: &Path, limits: &SourceLimits) -> Result<BundleSource, SourceError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| SourceError(format!("cannot read bundle {}: {e}", path.display())))?;
        if meta.is_dir() {
            Self::from_dir(path, limits)
        } else {
            Self::from_archive(path, limits)
        }
    }

    fn from_dir(root: &Path, limits: &SourceLimits) -> Result<BundleSource, SourceError> {
        let mut files = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        let mut total = 0u64;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| SourceError(format!("cannot list {}: {e}", dir.display())))?;
            for entry in entries {
                let entry = entry
                    .map_err(|e| SourceError(format!("cannot list {}: {e}", dir.display())))?;
                let rel_path = rel.join(entry.file_name());
                let name = to_bundle_path(&rel_path)?;
                let ty = entry
                    .file_type()
                    .map_err(|e| SourceError(format!("{name}: {e}")))?;
                if files.len() + dirs.len() >= limits.max_entries {
                    return Err(SourceError(format!(
                        "the bundle has more than {} entries",
                        limits.max_entries
                    )));
                }
                if ty.is_symlink() {
                    return Err(SourceError(format!(
                        "{name}: links are not allowed in a bundle"
                    )));
                } else if ty.is_dir() {
                    dirs.insert(name);
                    stack.push(rel_path);
                } else if ty.is_file() {
                    let bytes = std::fs::read(root.join(&rel_path))
                        .map_err(|e| SourceError(format!("cannot read {name}: {e}")))?;
                    total += bytes.len() as u64;
                    if total > limits.max_total_bytes {
                        return Err(SourceError(format!(
                            "the bundle is larger than {} bytes",
                            limits.max_total_bytes
                        )));
                    }
                    files.insert(name, Sha256::digest(&bytes).into());
                } else {
                    return Err(SourceError(format!(
                        "{name}: only files and directories are allowed"
                    )));
                }
            }
        }
        Ok(BundleSource {
            root: root.to_owned(),
            _extracted: None,
            files,
            dirs,
            origin: root.to_owned(),
        })
    }

    fn from_archive(path: &Path, limits: &SourceLimits) -> Result<BundleSource, SourceError> {
        let file = std::fs::File::open(path)
            .map_err(|e| SourceError(format!("cannot read bundle {}: {e}", path.display())))?;
        let dir = tempfile::Builder::new()
            .prefix("rulebox-bundle-")
            .tempdir()
            .map_err(|e| SourceError(format!("cannot create a directory to extract into: {e}")))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut files = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        let mut total = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| SourceError(format!("{} is not a .tar.gz bundle: {e}", path.display())))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                SourceError(format!("{} is not a valid .tar.gz: {e}", path.display()))
            })?;
            let raw = entry
                .path()
                .map_err(|e| SourceError(format!("archive entry with a bad path: {e}")))?
                .into_owned();
            let name = to_bundle_path(&raw)?;
            if name.is_empty() {
                continue; // "./"
            }
            if files.len() + dirs.len() >= limits.max_entries {
                return Err(SourceError(format!(
                    "the archive has more than {} entries",
                    limits.max_entries
                )));
            }
            let target = dir.path().join(&name);
            match entry.header().entry_type() {
                tar::EntryType::Directory => {
                    std::fs::create_dir_all(&target)
                        .map_err(|e| SourceError(format!("extracting {name}: {e}")))?;
                    dirs.insert(name);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let budget = limits.max_total_bytes - total;
                    let mut bytes = Vec::new();
                    // Read one byte past the budget: the header's size can lie.
                    (&mut entry)
                        .take(budget + 1)
                        .read_to_end(&mut bytes)
                        .map_err(|e| SourceError(format!("extracting {name}: {e}")))?;
                    total += bytes.len() as u64;
                    if total > limits.max_total_bytes {
                        return Err(SourceError(format!(
                            "the archive unpacks to more than {} bytes",
                            limits.max_total_bytes
                        )));
                    }
                    if files.contains_key(&name) {
                        return Err(SourceError(format!("{name}: appears twice in the archive")));
                    }
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| SourceError(format!("extracting {name}: {e}")))?;
                    }
                    std::fs::write(&target, &bytes)
                        .map_err(|e| SourceError(format!("extracting {name}: {e}")))?;
                    // Archives may list files without their directories.
                    let mut parent = Path::new(&name).parent();
                    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                        dirs.insert(p.to_string_lossy().into_owned());
                        parent = p.parent();
                    }
                    files.insert(name, Sha256::digest(&bytes).into());
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    return Err(SourceError(format!(
                        "{name}: links are not allowed in a bundle"
                    )));
                }
                other => {
                    return Err(SourceError(format!(
                        "{name}: entry type {other:?} is not allowed in a bundle"
                    )));
                }
            }
        }
        Ok(BundleSource {
            root: dir.path().to_owned(),
            _extracted: Some(dir),
            files,
            dirs,
            origin: path.to_owned(),
        })
    }

    /// Where the files are on disk (the directory, or where the archive was extracted).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the bundle was read from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Every file (bundle-relative, `/`-separated) and its SHA-256.
    pub fn files(&self) -> &BTreeMap<String, [u8; 32]> {
        &self.files
    }

    /// Whether `dir` is a directory of the bundle.
    pub fn has_dir(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        self.dirs.contains(dir)
    }

    /// Reads a file of the bundle.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        if !self.files.contains_key(name) {
            return Err(SourceError(format!("file `{name}` is not in the bundle")));
        }
        std::fs::read(self.root.join(name))
            .map_err(|e| SourceError(format!("cannot read {name}: {e}")))
    }

    /// The canonical listing signatures cover: every file but the signature, sorted, as
    /// `<sha256-hex> <path>` lines under a versioned header. The manifest is a file like any
    /// other, so changing it, any file, or adding or removing one changes the listing.
    pub fn canonical_listing(&self) -> String {
        let mut out = String::from("rulebox-bundle-listing-v1\n");
        for (name, digest) in &self.files {
            if name != SIGNATURE_FILE {
                out.push_str(&hex::encode(digest));
                out.push(' ');
                out.push_str(name);
                out.push('\n');
            }
        }
        out
    }

    /// SHA-256 of [`BundleSource::canonical_listing`]: the bundle's content identity.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_listing().as_bytes()))
    }
}

/// A bundle-relative path: `/`-separated, no `..`, not absolute.
fn to_bundle_path(path: &Path) -> Result<String, SourceError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| SourceError(format!("{}: path is not UTF-8", path.display())))?
                    .to_owned(),
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SourceError(format!(
                    "{}: path escapes the bundle (absolute or `..`)",
                    path.display()
                )));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Checks a path written in the manifest the same way.
pub fn check_manifest_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    to_bundle_path(Path::new(path)).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_escape_are_refused() {
        assert!(to_bundle_path(Path::new("../x")).is_err());
        assert!(to_bundle_path(Path::new("/etc/passwd")).is_err());
        assert!(to_bundle_path(Path::new("a/../../b")).is_err());
        assert_eq!(to_bundle_path(Path::new("./a/b.wasm")).unwrap(), "a/b.wasm");
    }
}
