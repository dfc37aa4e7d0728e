//! A bundle's files, read from a directory or a `.tar.gz` into a private snapshot, with every
//! file digested as it is copied.
//!
//! Everything after reading (verification, compilation, grants) uses the snapshot, never the
//! original: a file swapped in the bundle directory after it was hashed cannot reach a rule.
//! Every byte read and every entry seen, whatever its kind, counts against [`SourceLimits`], so
//! a hostile archive or directory costs bounded time, memory and disk.

use crate::fs::open_regular;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The signature file's name inside a bundle.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// The manifest's name inside a bundle.
pub const MANIFEST_FILE: &str = "bundle.toml";

/// Limits on what a bundle may hold. A bundle over any of them is refused, with the limit
/// named, before it fills a disk or the host's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceLimits {
    /// Total bytes of all files, after decompression. Default 256 MiB.
    pub max_total_bytes: u64,
    /// Entries of any kind (files, directories, archive extension headers). Default 10,000.
    pub max_entries: usize,
    /// Bytes of one path inside the bundle. Default 1,024.
    pub max_path_bytes: usize,
    /// Bytes of `bundle.toml`. Default 4 MiB.
    pub max_manifest_bytes: u64,
    /// Rules in one bundle. Default 1,000.
    pub max_rules: usize,
    /// Paths in one rule's `reads`. Default 1,000.
    pub max_reads: usize,
    /// Bytes of one rule's settings, as JSON (they are handed to every evaluation).
    /// Default 1 MiB.
    pub max_settings_bytes: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            max_total_bytes: 256 << 20,
            max_entries: 10_000,
            max_path_bytes: 1024,
            max_manifest_bytes: 4 << 20,
            max_rules: 1_000,
            max_reads: 1_000,
            max_settings_bytes: 1 << 20,
        }
    }
}

/// Largest GNU long-name or PAX extension header accepted in an archive: paths are capped far
/// below this, so anything larger is an attack or a broken archive.
const MAX_EXTENSION_BYTES: u64 = 64 << 10;

/// A problem with a bundle's files or archive.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Reading, listing, copying or writing a file failed (the OS error is the source).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The bundle is over one of its [`SourceLimits`].
    #[error("{message}")]
    Limit {
        /// The [`SourceLimits`] field (`max_entries`, `max_total_bytes`, ...).
        limit: &'static str,
        /// What was over it.
        message: String,
    },
    /// Something a bundle may not hold: a link, a path outside it, a malformed archive, a
    /// missing or non-UTF-8 manifest, a file it does not have.
    #[error("{0}")]
    Invalid(String),
    /// A file changed after it was read and verified (a swap under the host's feet).
    #[error("{0} changed after it was read and verified")]
    Changed(String),
}

impl SourceError {
    pub(crate) fn invalid(message: impl Into<String>) -> SourceError {
        SourceError::Invalid(message.into())
    }

    pub(crate) fn limit(limit: &'static str, message: impl Into<String>) -> SourceError {
        SourceError::Limit {
            limit,
            message: message.into(),
        }
    }
}

/// Wraps an OS error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SourceError {
    let context = context.into();
    move |source| SourceError::Io {
        context,
        source: std::sync::Arc::new(source),
    }
}

/// The files of a bundle, snapshotted into a private directory, each with its digest.
#[derive(Debug)]
pub struct BundleSource {
    root: PathBuf,
    /// The private snapshot; removed with the bundle.
    _snapshot: tempfile::TempDir,
    files: BTreeMap<String, [u8; 32]>,
    sizes: BTreeMap<String, u64>,
    dirs: BTreeSet<String>,
    origin: PathBuf,
}

/// Counts entries and bytes against the limits while a snapshot is written.
struct Snapshot<'a> {
    limits: &'a SourceLimits,
    dir: tempfile::TempDir,
    files: BTreeMap<String, [u8; 32]>,
    sizes: BTreeMap<String, u64>,
    dirs: BTreeSet<String>,
    total: u64,
    entries: usize,
    what: &'static str,
}

impl<'a> Snapshot<'a> {
    fn new(limits: &'a SourceLimits, what: &'static str) -> Result<Snapshot<'a>, SourceError> {
        // tempfile creates the directory with mode 0700: only this user can change it.
        let dir = tempfile::Builder::new()
            .prefix("rulebox-bundle-")
            .tempdir()
            .map_err(io("cannot create a directory to snapshot into"))?;
        Ok(Snapshot {
            limits,
            dir,
            files: BTreeMap::new(),
            sizes: BTreeMap::new(),
            dirs: BTreeSet::new(),
            total: 0,
            entries: 0,
            what,
        })
    }

    /// Counts one entry of any kind.
    fn entry(&mut self) -> Result<(), SourceError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(SourceError::limit(
                "max_entries",
                format!(
                    "the {} has more than {} entries (limit max_entries)",
                    self.what, self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    fn over_size(&self) -> SourceError {
        SourceError::limit(
            "max_total_bytes",
            format!(
                "the {} holds more than {} bytes (limit max_total_bytes)",
                self.what, self.limits.max_total_bytes
            ),
        )
    }

    /// Counts bytes that are not file content (extension headers).
    fn charge(&mut self, n: u64) -> Result<(), SourceError> {
        self.total = self.total.saturating_add(n);
        if self.total > self.limits.max_total_bytes {
            return Err(self.over_size());
        }
        Ok(())
    }

    fn add_dir(&mut self, name: &str) -> Result<(), SourceError> {
        if self.files.contains_key(name) {
            return Err(SourceError::invalid(format!(
                "{name}: appears twice in the {}",
                self.what
            )));
        }
        std::fs::create_dir_all(self.dir.path().join(name))
            .map_err(io(format!("snapshotting {name}")))?;
        self.add_parents(name);
        self.dirs.insert(name.to_owned());
        Ok(())
    }

    /// Archives may list files without their directories.
    fn add_parents(&mut self, name: &str) {
        let mut parent = Path::new(name).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.dirs.insert(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
    }

    /// Copies one file into the snapshot through the remaining budget, hashing it on the way.
    /// `declared` is the size the directory or archive claims, checked before reading.
    fn add_file(
        &mut self,
        name: &str,
        declared: u64,
        content: &mut dyn Read,
    ) -> Result<(), SourceError> {
        if self.files.contains_key(name) || self.dirs.contains(name) {
            return Err(SourceError::invalid(format!(
                "{name}: appears twice in the {}",
                self.what
            )));
        }
        let budget = self.limits.max_total_bytes - self.total;
        if declared > budget {
            return Err(self.over_size());
        }
        let target = self.dir.path().join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("snapshotting {name}")))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(io(format!("snapshotting {name}")))?;
        let mut hashed = Hashing {
            out: &mut out,
            hasher: Sha256::new(),
        };
        // One byte past the budget is enough to know it is over: sizes can lie.
        let copied = match std::io::copy(&mut content.take(budget + 1), &mut hashed) {
            Ok(n) => n,
            Err(e) if e.to_string().contains(OVER_BUDGET) => {
                return Err(SourceError::limit("max_total_bytes", OVER_BUDGET));
            }
            Err(e) => return Err(io(format!("copying {name}"))(e)),
        };
        if copied > budget {
            return Err(self.over_size());
        }
        let digest = hashed.hasher.finalize().into();
        self.total += copied;
        self.add_parents(name);
        self.files.insert(name.to_owned(), digest);
        self.sizes.insert(name.to_owned(), copied);
        Ok(())
    }

    fn finish(self, origin: &Path) -> BundleSource {
        BundleSource {
            root: self.dir.path().to_owned(),
            _snapshot: self.dir,
            files: self.files,
            sizes: self.sizes,
            dirs: self.dirs,
            origin: origin.to_owned(),
        }
    }
}

impl BundleSource {
    /// Reads a bundle directory or `.tar.gz` archive into a private snapshot.
    ///
    /// The path given is resolved once (a `current -> v3.tar.gz` link is the admin's choice);
    /// inside the bundle no link is ever followed.
    pub fn open(path: &Path, limits: &SourceLimits) -> Result<BundleSource, SourceError> {
        let cannot = |e: std::io::Error| io(format!("cannot read bundle {}", path.display()))(e);
        let real = std::fs::canonicalize(path).map_err(cannot)?;
        let meta = std::fs::metadata(&real).map_err(cannot)?;
        let source = if meta.is_dir() {
            Self::from_dir(&real, limits)
        } else if meta.is_file() {
            Self::from_archive(&real, path, limits)
        } else {
            Err(SourceError::invalid(format!(
                "{} is neither a directory nor a .tar.gz file",
                path.display()
            )))
        };
        source.map(|mut s| {
            s.origin = path.to_owned();
            s
        })
    }

    fn from_dir(root: &Path, limits: &SourceLimits) -> Result<BundleSource, SourceError> {
        let mut snap = Snapshot::new(limits, "bundle")?;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let entries =
                read_dir_nofollow(&dir).map_err(io(format!("cannot list {}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(io(format!("cannot list {}", dir.display())))?;
                snap.entry()?;
                let rel_path = rel.join(entry.file_name());
                let name = to_bundle_path(&rel_path, limits)?;
                let ty = entry.file_type().map_err(io(name.as_str()))?;
                if ty.is_symlink() {
                    return Err(SourceError::invalid(format!(
                        "{name}: links are not allowed in a bundle"
                    )));
                } else if ty.is_dir() {
                    snap.add_dir(&name)?;
                    stack.push(rel_path);
                } else if ty.is_file() {
                    let mut file = open_regular(&root.join(&rel_path))
                        .map_err(io(format!("cannot read {name}")))?;
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    snap.add_file(&name, size, &mut file)?;
                } else {
                    return Err(SourceError::invalid(format!(
                        "{name}: only files and directories are allowed"
                    )));
                }
            }
        }
        Ok(snap.finish(root))
    }

    /// Reads the archive at `real`; errors name it as the caller did, `path`.
    fn from_archive(
        real: &Path,
        path: &Path,
        limits: &SourceLimits,
    ) -> Result<BundleSource, SourceError> {
        let file =
            open_regular(real).map_err(io(format!("cannot read bundle {}", path.display())))?;
        let not_tar_gz =
            |e: std::io::Error| io(format!("{} is not a valid .tar.gz", path.display()))(e);
        let mut snap = Snapshot::new(limits, "archive")?;
        // Every decompressed byte counts: file content against max_total_bytes, and headers,
        // padding and skipped data against an allowance of two blocks per entry.
        let stream_budget = limits
            .max_total_bytes
            .saturating_add((limits.max_entries as u64 + 2).saturating_mul(1024))
            .saturating_add(10240);
        let stream = Bounded {
            // All members: pigz, bgzip and `cat a.gz b.gz` write multi-member gzip.
            inner: flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)),
            left: stream_budget,
        };
        let over_stream = || {
            SourceError::limit(
                "max_total_bytes",
                format!(
                    "the archive decompresses to more than {stream_budget} bytes (limit max_total_bytes plus headers)"
                ),
            )
        };
        let mut archive = tar::Archive::new(stream);
        {
            // Raw entries: the tar crate would read GNU long names and PAX headers whole.
            let entries = archive.entries().map_err(not_tar_gz)?.raw(true);
            let mut long_name: Option<Vec<u8>> = None;
            let mut pax_path: Option<Vec<u8>> = None;
            for entry in entries {
                let mut entry = entry.map_err(|e| classify_io(e, &over_stream, &not_tar_gz))?;
                snap.entry()?;
                let ty = entry.header().entry_type();
                let size = entry.size();
                if ty.is_gnu_longname()
                    || ty.is_pax_local_extensions()
                    || ty.is_pax_global_extensions()
                {
                    if size > MAX_EXTENSION_BYTES {
                        return Err(SourceError::limit(
                            "max_path_bytes",
                            format!(
                                "archive extension header of {size} bytes, over {MAX_EXTENSION_BYTES} (a path is at most {} bytes)",
                                limits.max_path_bytes
                            ),
                        ));
                    }
                    snap.charge(size)?;
                    let mut data = Vec::with_capacity(size as usize);
                    (&mut entry)
                        .take(MAX_EXTENSION_BYTES)
                        .read_to_end(&mut data)
                        .map_err(|e| classify_io(e, &over_stream, &not_tar_gz))?;
                    if ty.is_gnu_longname() {
                        if long_name.is_some() {
                            return Err(SourceError::invalid(
                                "two long names for one archive entry",
                            ));
                        }
                        while data.last() == Some(&0) {
                            data.pop();
                        }
                        long_name = Some(data);
                    } else if ty.is_pax_local_extensions() {
                        pax_path = pax_path_of(&data)?;
                    }
                    // Global PAX headers (git archive writes one) carry nothing we use.
                    continue;
                }
                let raw_name = pax_path
                    .take()
                    .or(long_name.take())
                    .unwrap_or_else(|| entry.path_bytes().into_owned());
                let raw_name = std::str::from_utf8(&raw_name).map_err(|_| {
                    SourceError::invalid(format!(
                        "{}: path is not UTF-8",
                        String::from_utf8_lossy(&raw_name)
                    ))
                })?;
                let name = to_bundle_path(Path::new(raw_name), limits)?;
                match ty {
                    tar::EntryType::Directory => {
                        if !name.is_empty() {
                            snap.add_dir(&name)?;
                        }
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous if !name.is_empty() => {
                        snap.add_file(&name, size, &mut entry).map_err(|e| {
                            // A budget error from below is the stream's, not the file's.
                            match &e {
                                SourceError::Limit { message, .. } if message == OVER_BUDGET => {
                                    over_stream()
                                }
                                _ => e,
                            }
                        })?;
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        return Err(SourceError::invalid(
                            "archive file entry with an empty path",
                        ));
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        return Err(SourceError::invalid(format!(
                            "{name}: links are not allowed in a bundle"
                        )));
                    }
                    other => {
                        return Err(SourceError::invalid(format!(
                            "{}: entry type {other:?} is not allowed in a bundle",
                            if name.is_empty() { "." } else { &name }
                        )));
                    }
                }
            }
            if long_name.is_some() || pax_path.is_some() {
                return Err(SourceError::invalid(
                    "the archive ends with a header that describes no entry",
                ));
            }
        }
        // After the end-of-archive blocks only zero padding may follow: anything else is a
        // second archive (`cat a.tar.gz b.tar.gz`) whose files would silently be ignored.
        let mut rest = archive.into_inner();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rest
                .read(&mut buf)
                .map_err(|e| classify_io(e, &over_stream, &not_tar_gz))?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(SourceError::invalid(format!(
                    "{}: data follows the end of the tar archive (concatenated archives are not supported; pack one)",
                    path.display()
                )));
            }
        }
        Ok(snap.finish(path))
    }

    /// Where the snapshot of the files is on disk (grants are served from here).
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

    /// The size of a file of the bundle, if it has that file.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.sizes.get(name).copied()
    }

    /// Whether `dir` is a directory of the bundle.
    pub fn has_dir(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        self.dirs.contains(dir)
    }

    /// Reads a file of the bundle: exactly the bytes that were digested when it was read (the
    /// snapshot is checked again, so what is returned is what a signature covered).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SourceError> {
        let (Some(digest), Some(&size)) = (self.files.get(name), self.sizes.get(name)) else {
            return Err(SourceError::invalid(format!(
                "file `{name}` is not in the bundle"
            )));
        };
        let mut bytes = Vec::with_capacity(size as usize);
        open_regular(&self.root.join(name))
            .and_then(|f| f.take(size + 1).read_to_end(&mut bytes))
            .map_err(io(format!("cannot read {name}")))?;
        if bytes.len() as u64 != size || Sha256::digest(&bytes).as_slice() != digest {
            return Err(SourceError::Changed(name.to_owned()));
        }
        Ok(bytes)
    }

    /// The canonical listing signatures cover: every file but the signature, sorted, one
    /// record per file: `<sha256-hex> <path length>:<path>\n` under a versioned header. The
    /// length prefix makes the encoding injective (no two trees give the same bytes, whatever
    /// their paths hold); control characters are refused in paths besides.
    pub fn canonical_listing(&self) -> String {
        listing(self.files.iter().map(|(n, d)| (n.as_str(), d)))
    }

    /// SHA-256 of [`BundleSource::canonical_listing`]: the bundle's content identity.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_listing().as_bytes()))
    }
}

fn listing<'a>(files: impl Iterator<Item = (&'a str, &'a [u8; 32])>) -> String {
    let mut out = String::from("rulebox-bundle-listing-v2\n");
    for (name, digest) in files {
        if name != SIGNATURE_FILE {
            out.push_str(&hex::encode(digest));
            out.push_str(&format!(" {}:", name.len()));
            out.push_str(name);
            out.push('\n');
        }
    }
    out
}

/// The `path` record of a PAX extension header, if any. Records that would change how the
/// entry is read (size, links, sparse maps) are refused rather than half-supported.
fn pax_path_of(data: &[u8]) -> Result<Option<Vec<u8>>, SourceError> {
    let mut path = None;
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.map_err(io("malformed PAX header"))?;
        let key = ext
            .key()
            .map_err(|_| SourceError::invalid("malformed PAX header: key is not UTF-8"))?;
        match key {
            "path" => path = Some(ext.value_bytes().to_vec()),
            "size" | "linkpath" => {
                return Err(SourceError::invalid(format!(
                    "PAX header record `{key}` is not supported in a bundle"
                )));
            }
            k if k.starts_with("GNU.sparse") => {
                return Err(SourceError::invalid(
                    "sparse files are not allowed in a bundle",
                ));
            }
            _ => {}
        }
    }
    Ok(path)
}

/// Writes through to `out`, hashing what it writes.
struct Hashing<'a, W> {
    out: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A reader that fails once more than `left` bytes have come through.
struct Bounded<R> {
    inner: R,
    left: u64,
}

/// The marker a [`Bounded`] reader puts in its error.
const OVER_BUDGET: &str = "rulebox: decompression budget exceeded";

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.left = 0;
            return Err(std::io::Error::other(OVER_BUDGET));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn classify_io(
    e: std::io::Error,
    over: &dyn Fn() -> SourceError,
    other: &dyn Fn(std::io::Error) -> SourceError,
) -> SourceError {
    if e.to_string().contains(OVER_BUDGET) {
        over()
    } else {
        other(e)
    }
}

/// Lists a directory that must not be a link (checked on the opened directory itself, so a
/// directory swapped for a link while the bundle is read is noticed).
fn read_dir_nofollow(dir: &Path) -> std::io::Result<std::fs::ReadDir> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(dir)?;
        let listing = std::fs::read_dir(dir)?;
        let (a, b) = (opened.metadata()?, std::fs::symlink_metadata(dir)?);
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return Err(std::io::Error::other("changed while it was being read"));
        }
        Ok(listing)
    }
    #[cfg(not(unix))]
    std::fs::read_dir(dir)
}

/// A bundle-relative path: `/`-separated, no `..`, not absolute, no control characters (a
/// newline could forge records of the signed listing), at most `max_path_bytes`.
fn to_bundle_path(path: &Path, limits: &SourceLimits) -> Result<String, SourceError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| {
                        SourceError::invalid(format!("{}: path is not UTF-8", path.display()))
                    })?
                    .to_owned(),
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(SourceError::invalid(format!(
                    "{}: path escapes the bundle (absolute or `..`)",
                    path.display().to_string().escape_debug()
                )));
            }
        }
    }
    let name = parts.join("/");
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(SourceError::invalid(format!(
            "\"{}\": control character {c:?} in a path",
            name.escape_debug()
        )));
    }
    if name.len() > limits.max_path_bytes {
        return Err(SourceError::limit(
            "max_path_bytes",
            format!(
                "{}...: path of {} bytes, over {} (limit max_path_bytes)",
                name.chars().take(40).collect::<String>(),
                name.len(),
                limits.max_path_bytes
            ),
        ));
    }
    Ok(name)
}

/// Checks a path written in the manifest the same way; it must name something inside the
/// bundle (not `.`, the bundle itself).
pub fn check_manifest_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    let name =
        to_bundle_path(Path::new(path), &SourceLimits::default()).map_err(|e| e.to_string())?;
    if name.is_empty() {
        return Err(format!(
            "`{path}` is the bundle itself: name a path inside it"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Result<String, SourceError> {
        to_bundle_path(Path::new(p), &SourceLimits::default())
    }

    #[test]
    fn paths_that_escape_are_refused() {
        assert!(path("../x").is_err());
        assert!(path("/etc/passwd").is_err());
        assert!(path("a/../../b").is_err());
        assert_eq!(path("./a/b.wasm").unwrap(), "a/b.wasm");
    }

    #[test]
    fn control_characters_and_long_paths_are_refused() {
        let err = path("data/x\nabc def").unwrap_err();
        assert!(matches!(err, SourceError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("control character '\\n'"), "{err}");
        assert!(path("a\tb").is_err());
        assert!(path("a\u{7f}").is_err());
        let long = path(&"a".repeat(1025)).unwrap_err();
        assert!(
            matches!(
                long,
                SourceError::Limit {
                    limit: "max_path_bytes",
                    ..
                }
            ),
            "{long:?}"
        );
        assert_eq!(
            check_manifest_path(".").unwrap_err(),
            "`.` is the bundle itself: name a path inside it"
        );
    }

    #[test]
    fn the_listing_is_injective_even_for_paths_with_newlines() {
        // The attack on the v1 listing (`<hex> <path>\n` per file): one file whose name holds
        // a newline and a second record stands in for two files.
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let forged = format!("a\n{} b", hex::encode(b));
        let two = listing([("a", &a), ("b", &b)].into_iter());
        let one = listing([(forged.as_str(), &a)].into_iter());
        assert_ne!(two, one);
        let v1 = |files: &[(&str, &[u8; 32])]| -> String {
            files
                .iter()
                .map(|(n, d)| format!("{} {n}\n", hex::encode(d)))
                .collect()
        };
        assert_eq!(
            v1(&[("a", &a), ("b", &b)]),
            v1(&[(&forged, &a)]),
            "the v1 flaw"
        );
    }
}
