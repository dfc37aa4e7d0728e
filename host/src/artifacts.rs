//! The compiled-component cache: in memory (shared by every bundle and revision that holds
//! the same component) and on disk (so a restart or a new revision does not recompile).
//!
//! Disk entries are keyed by the component's SHA-256 plus the engine's
//! `precompile_compatibility_hash`. Loading a precompiled artifact trusts it to be machine
//! code wasmtime produced, so each entry carries our own SHA-256 beside it; an entry that is
//! truncated, altered, or from an incompatible engine is discarded and recompiled.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
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

#[derive(Default)]
pub(crate) struct Artifacts {
    dir: Option<PathBuf>,
    compat: String,
    pub(crate) memory: Mutex<HashMap<[u8; 32], Weak<crate::engine::RulePreInner>>>,
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
    pub fn new(engine: &wasmtime::Engine, dir: Option<PathBuf>) -> Artifacts {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        Artifacts {
            dir,
            compat: hex::encode(&h.0.finalize()[..8]),
            ..Default::default()
        }
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
            dir.join(format!("{stem}.cwasm.sha256")),
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
            match read_checked(&art, &sum) {
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
                .and_then(|code| write_entry(&art, &sum, &code))
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

/// `Ok(None)`: no entry. `Err`: an entry that must not be used.
fn read_checked(art: &Path, sum: &Path) -> Result<Option<Vec<u8>>, String> {
    let code = match std::fs::read(art) {
        Ok(code) => code,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let expected = std::fs::read_to_string(sum).map_err(|e| format!("no checksum: {e}"))?;
    let actual = hex::encode(Sha256::digest(&code));
    if expected.trim() != actual {
        return Err("checksum mismatch (truncated or altered)".into());
    }
    Ok(Some(code))
}

/// Writes through temporary files and renames, artifact first: a crash leaves either no
/// entry or an artifact without a matching checksum, never a checksum vouching for a
/// partial artifact.
fn write_entry(art: &Path, sum: &Path, code: &[u8]) -> Result<(), String> {
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
    write(sum, hex::encode(Sha256::digest(code)).as_bytes())
}
