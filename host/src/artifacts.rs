//! The compiled-component disk cache, so a restart or a new revision does not recompile.
//! (The in-memory map of live components belongs to the engine; this module knows nothing
//! of it.)
//!
//! Disk entries are keyed by the component's SHA-256 plus the engine's
//! `precompile_compatibility_hash`. Loading a precompiled artifact trusts it to be machine
//! code wasmtime produced *for that component*, so each entry carries an HMAC-SHA256 beside
//! it, keyed by a secret kept in the directory (`key`, mode 0600) and covering the component
//! digest, the compatibility hash and the code. Anyone can compute a checksum; only this
//! host's user can make a valid tag, so a planted entry (another rule's code under a signed
//! component's digest, say) is discarded and recompiled like a truncated or altered one.
//!
//! The directory must belong to this user and not be writable by others: [`Artifacts::new`]
//! refuses it otherwise. Entries are read only if they are regular files (no links, FIFOs or
//! devices), without blocking, and through a size bound.

use crate::error::ConfigError;
use crate::fs::open_regular;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;

/// Counters of the compiled-component cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactStats {
    /// Components found already compiled in memory.
    pub memory_hits: u64,
    /// Components loaded from the disk cache.
    pub disk_hits: u64,
    /// Components compiled from source.
    pub compiled: u64,
    /// Disk entries discarded as corrupt or incompatible (then recompiled).
    pub rejected: u64,
}

/// Largest compiled artifact read back from disk; a bigger file is not ours.
const MAX_ARTIFACT_BYTES: u64 = 512 << 20;

#[derive(Default)]
pub(crate) struct Artifacts {
    dir: Option<PathBuf>,
    /// The directory's secret, for entry tags.
    key: [u8; 32],
    compat: String,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiled: AtomicU64,
    rejected: AtomicU64,
}

/// Feeds `Hash` output into SHA-256, so the compatibility hash is stable across processes.
struct ShaHasher(Sha256);
impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Artifacts {
    /// The cache over `dir` (none: memory only). Creates the directory (mode 0700) and its
    /// key as needed; refuses a directory other users could write to.
    pub fn new(engine: &wasmtime::Engine, dir: Option<PathBuf>) -> Result<Artifacts, ConfigError> {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let key = match &dir {
            Some(dir) => open_dir(dir).map_err(|m| ConfigError::new("cache_dir", m))?,
            None => [0; 32],
        };
        Ok(Artifacts {
            dir,
            key,
            compat: hex::encode(&h.0.finalize()[..8]),
            ..Default::default()
        })
    }

    pub fn stats(&self) -> ArtifactStats {
        ArtifactStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    pub fn note_memory_hit(&self) {
        self.memory_hits.fetch_add(1, Ordering::Relaxed);
    }

    fn paths(&self, digest: &[u8; 32]) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let stem = format!("{}-{}", hex::encode(digest), self.compat);
        Some((
            dir.join(format!("{stem}.cwasm")),
            dir.join(format!("{stem}.cwasm.mac")),
        ))
    }

    /// The compiled component: from disk when a sound entry exists, else compiled (and
    /// written to disk for next time).
    pub fn compile(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: &[u8; 32],
    ) -> wasmtime::Result<Component> {
        if let Some((art, sum)) = self.paths(digest) {
            match self.read_checked(&art, &sum, digest) {
                Ok(Some(code)) => {
                    // SAFETY: `code` is exactly what `Component::serialize` wrote for an engine
                    // with this compatibility hash (the file name), as its SHA-256 (kept beside
                    // it, written after it) proves; wasmtime checks its own header too.
                    match unsafe { Component::deserialize(engine, &code) } {
                        Ok(c) => {
                            self.disk_hits.fetch_add(1, Ordering::Relaxed);
                            return Ok(c);
                        }
                        Err(e) => self.reject(&art, &format!("{e:#}")),
                    }
                }
                Ok(None) => {}
                Err(why) => self.reject(&art, &why),
            }
        }
        let component = Component::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some((art, sum)) = self.paths(digest)
            && let Err(e) = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|code| {
                    write_entry(
                        &art,
                        &sum,
                        &code,
                        &hex::encode(self.mac(digest, &code).finalize().into_bytes()),
                    )
                })
        {
            tracing::warn!(path = %art.display(), "cannot write compiled-component cache entry: {e}");
        }
        Ok(component)
    }

    fn reject(&self, art: &Path, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %art.display(), "discarding compiled-component cache entry: {why}");
        let _ = std::fs::remove_file(art);
    }
}

impl Artifacts {
    /// HMAC-SHA256 under the directory's key over the component digest, the engine
    /// compatibility hash and the code: valid only for this component on this engine.
    fn mac(&self, digest: &[u8; 32], code: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"rulebox-artifact-v1\0");
        mac.update(digest);
        mac.update(self.compat.as_bytes());
        mac.update(code);
        mac
    }

    /// `Ok(None)`: no entry. `Err`: an entry that must not be used.
    fn read_checked(
        &self,
        art: &Path,
        sum: &Path,
        digest: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, String> {
        let code = match read_bounded(art, MAX_ARTIFACT_BYTES) {
            Ok((code, _)) => code,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let (tag, _) = read_bounded(sum, 128).map_err(|e| format!("no tag: {e}"))?;
        let tag = hex::decode(String::from_utf8_lossy(&tag).trim())
            .map_err(|_| "the tag is not hex".to_owned())?;
        self.mac(digest, &code).verify_slice(&tag).map_err(|_| {
            "tag mismatch (truncated, altered, planted, or written under another key)".to_owned()
        })?;
        Ok(Some(code))
    }
}

/// Reads a regular file (no links, FIFOs or devices; never blocks) of at most `max` bytes;
/// also returns the metadata of the file that was read.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
    let file = open_regular(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes, over the bound of {max}"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other("grew past its bound while read"));
    }
    Ok((out, meta))
}

/// Creates or checks the cache directory and returns its key.
fn open_dir(dir: &Path) -> Result<[u8; 32], String> {
    let shown = dir.display();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "{shown} belongs to user {}, not to this user ({me}): its compiled code would run as rules; choose a directory of your own",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{shown} is writable by other users (mode {:o}): compiled code planted there would run as rules; `chmod go-w` it or choose another directory",
                meta.mode() & 0o7777
            ));
        }
    }
    let path = dir.join("key");
    for _ in 0..2 {
        match read_bounded(&path, 128) {
            Ok((text, meta)) => {
                #[cfg(not(unix))]
                let _ = meta;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    if meta.mode() & 0o077 != 0 {
                        return Err(format!(
                            "{} is readable or writable by other users (mode {:o}): remove it (a new key is made) or `chmod 600` it",
                            path.display(),
                            meta.mode() & 0o7777
                        ));
                    }
                }
                return hex::decode(String::from_utf8_lossy(&text).trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        format!(
                            "{} is not a cache key (64 hex digits): remove it and a new one is made",
                            path.display()
                        )
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| format!("no randomness: {e}"))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut f) => {
                        std::io::Write::write_all(&mut f, hex::encode(key).as_bytes())
                            .map_err(|e| format!("writing {}: {e}", path.display()))?;
                        return Ok(key);
                    }
                    // Another process made it first: read theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(format!("creating {}: {e}", path.display())),
                }
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Err(format!("{}: cannot read or create the key", path.display()))
}

/// Writes through temporary files and renames, artifact first: a crash leaves either no
/// entry or an artifact without a matching checksum, never a checksum vouching for a
/// partial artifact.
fn write_entry(art: &Path, sum: &Path, code: &[u8], tag: &str) -> Result<(), String> {
    let dir = art.parent().ok_or("no cache directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let write = |path: &Path, data: &[u8]| -> Result<(), String> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut tmp, data).map_err(|e| e.to_string())?;
        tmp.persist(path).map_err(|e| e.to_string())?;
        Ok(())
    };
    let _ = std::fs::remove_file(sum);
    write(art, code)?;
    write(sum, tag.as_bytes())
}
