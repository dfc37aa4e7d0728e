//! Bundles polled from URLs, for scale-out: every replica polls the same URL with
//! `If-None-Match`, so an unchanged bundle costs a 304; a new archive is streamed under a size
//! cap and goes through the library's gate (read, verify, compile, test, activate). The last
//! good archive and its ETag are kept in `bundles.state_dir`, so a restarted replica serves
//! at once (even with the bundle server down) and asks with the ETag it already has.
//!
//! A broken revision is never retried blindly: its ETag is sent along with the good one, so
//! the server answers 304 until it publishes something else.

use crate::config::UrlSource;
use rulebox::Registry;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one URL source has done, as `GET /v1/bundles/{name}` shows it under `source`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PollStatus {
    /// The URL polled.
    pub url: String,
    /// The ETag of the archive the active revision came from.
    pub etag: Option<String>,
    /// The revision this source last activated.
    pub revision: Option<String>,
    /// That revision's digest.
    pub digest: Option<String>,
    /// The active revision was restored from `state_dir` at start.
    pub restored: bool,
    /// Polls that brought a new revision.
    pub updated: u64,
    /// Polls answered 304 (or an archive of the revision already active).
    pub unchanged: u64,
    /// Archives downloaded that failed the gate (the active revision kept serving).
    pub failed_loads: u64,
    /// Polls that failed: network, HTTP status, size cap.
    pub errors: u64,
    /// When the last poll ended, in ms since the Unix epoch.
    pub last_poll_ms: Option<u64>,
    /// When the URL last answered (an archive or a 304), in ms since the Unix epoch: a
    /// bundle whose URL has not answered for several intervals is stale.
    pub last_ok_ms: Option<u64>,
    /// `updated`, `unchanged`, `load-failed` (also while the URL still serves the archive
    /// that failed) or `error`.
    pub last_result: Option<&'static str>,
    /// Why the last poll did not bring a revision, when it did not.
    pub last_error: Option<String>,
}

/// The ETags a source remembers (and persists, for the good one).
#[derive(Default)]
struct Tags {
    good: Option<String>,
    /// The last archive that failed the gate: not downloaded again while it is served.
    failed: Option<String>,
}

/// What is kept beside the archive in `state_dir/NAME/`.
#[derive(Serialize, Deserialize)]
struct Meta {
    url: String,
    etag: Option<String>,
}

const ARCHIVE: &str = "bundle.tar.gz";
const META: &str = "meta.json";

/// The URL sources of a server.
pub struct Poller {
    sources: Vec<Source>,
}

struct Source {
    config: UrlSource,
    dir: PathBuf,
    status: Mutex<PollStatus>,
    tags: Mutex<Tags>,
}

/// The polling tasks; stopped when dropped.
pub struct Polling(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Polling {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Up to ±10% of `ms`, so that replicas started together do not poll together.
fn jittered(ms: u64) -> Duration {
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    let unit = f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX); // 0..=1
    Duration::from_millis((ms as f64 * (0.9 + 0.2 * unit)) as u64)
}

impl Poller {
    /// The sources of `urls`, keeping their state under `state_dir`.
    pub fn new(urls: &[UrlSource], state_dir: Option<&Path>) -> Poller {
        let sources = urls
            .iter()
            .map(|u| Source {
                dir: state_dir.unwrap_or(Path::new(".")).join(&u.name),
                status: Mutex::new(PollStatus {
                    url: u.url.clone(),
                    ..PollStatus::default()
                }),
                tags: Mutex::default(),
                config: u.clone(),
            })
            .collect();
        Poller { sources }
    }

    /// The status of the source of `name`, if it is polled.
    pub fn status(&self, name: &str) -> Option<PollStatus> {
        self.sources
            .iter()
            .find(|s| s.config.name == name)
            .map(|s| s.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Every polled bundle's status.
    pub fn statuses(&self) -> Vec<(String, PollStatus)> {
        self.sources
            .iter()
            .map(|s| (s.config.name.clone(), s.status().clone()))
            .collect()
    }

    /// The polled bundles whose URL has not answered for `polls` intervals (counted from
    /// `since_ms`, the server's start, when it never has), with the seconds since.
    pub fn stale(&self, now_ms: u64, since_ms: u64, polls: u32) -> Vec<(String, u64)> {
        self.sources
            .iter()
            .filter_map(|s| {
                let last = s.status().last_ok_ms.unwrap_or(since_ms);
                let age = now_ms.saturating_sub(last);
                (age > s.config.interval_ms * polls as u64)
                    .then(|| (s.config.name.clone(), age / 1000))
            })
            .collect()
    }

    /// The names of the polled bundles.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.config.name.as_str())
    }

    /// Restores every source's persisted archive (through the gate), then polls each one
    /// now and every interval after. Call within a tokio runtime.
    pub fn start(
        self: &Arc<Self>,
        registry: Arc<Registry>,
        max_bytes: usize,
    ) -> Result<Polling, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rulebox/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("bundles.urls: no HTTP client: {e}"))?;
        let mut tasks = Vec::new();
        for i in 0..self.sources.len() {
            std::fs::create_dir_all(&self.sources[i].dir).map_err(|e| {
                format!(
                    "bundles.state_dir: cannot create {}: {e}",
                    self.sources[i].dir.display()
                )
            })?;
            let (poller, registry, client) = (self.clone(), registry.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                let source = &poller.sources[i];
                source.restore(&registry).await;
                loop {
                    source.poll(&client, &registry, max_bytes).await;
                    tokio::time::sleep(jittered(source.config.interval_ms)).await;
                }
            }));
        }
        Ok(Polling(tasks))
    }
}

impl Source {
    fn status(&self) -> std::sync::MutexGuard<'_, PollStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tags(&self) -> std::sync::MutexGuard<'_, Tags> {
        self.tags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the kept archive, if it came from the configured URL. A kept archive is
    /// untrusted like any other: it passes the same gate.
    async fn restore(&self, registry: &Registry) {
        let name = &self.config.name;
        let meta = match read_small(&self.dir.join(META), 64 << 10) {
            Ok(bytes) => match serde_json::from_slice::<Meta>(&bytes) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(bundle = %name, "ignoring the kept {META}: {e}");
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(bundle = %name, "cannot read the kept {META}: {e}");
                return;
            }
        };
        if meta.url != self.config.url {
            tracing::info!(bundle = %name, "the kept archive came from another URL; not restoring it");
            return;
        }
        match registry.load_as(&self.dir.join(ARCHIVE), name).await {
            Ok(activation) => {
                tracing::info!(bundle = %name, revision = %activation.revision, "restored the kept archive");
                self.tags().good = meta.etag.clone();
                let mut status = self.status();
                status.etag = meta.etag;
                status.revision = Some(activation.revision);
                status.digest = Some(activation.digest);
                status.restored = true;
            }
            Err(f) => {
                tracing::warn!(bundle = %name, step = ?f.step, "the kept archive failed to load: {}", f.error);
            }
        }
    }

    async fn poll(&self, client: &reqwest::Client, registry: &Registry, max_bytes: usize) {
        let result = self.fetch_and_load(client, registry, max_bytes).await;
        let still_broken = matches!(result, Ok(Outcome::StillBroken));
        let mut status = self.status();
        status.last_poll_ms = Some(now_ms());
        let (label, error) = match result {
            Ok(Outcome::Updated {
                etag,
                revision,
                digest,
            }) => {
                status.updated += 1;
                status.etag = etag;
                status.revision = Some(revision);
                status.digest = Some(digest);
                status.restored = false;
                ("updated", None)
            }
            Ok(Outcome::Unchanged) => {
                status.unchanged += 1;
                ("unchanged", None)
            }
            Ok(Outcome::SameRevision { etag }) => {
                // A new archive of the bundle already active: nothing changed but the ETag
                // to ask with.
                status.unchanged += 1;
                status.etag = etag;
                ("unchanged", None)
            }
            Ok(Outcome::StillBroken) => {
                // Nothing downloaded, but the URL still serves the archive that failed: keep
                // saying so.
                status.unchanged += 1;
                ("load-failed", status.last_error.take())
            }
            Err(Failure::Load(why)) => {
                status.failed_loads += 1;
                ("load-failed", Some(why))
            }
            Err(Failure::Fetch(why)) => {
                status.errors += 1;
                ("error", Some(why))
            }
        };
        // Logged once per failure, not again on every 304 for the same broken archive.
        if let (Some(why), false) = (&error, still_broken) {
            tracing::warn!(bundle = %self.config.name, url = %self.config.url, result = label, "bundle poll: {why}");
        }
        if label != "error" {
            status.last_ok_ms = status.last_poll_ms;
        }
        status.last_result = Some(label);
        status.last_error = error;
    }

    async fn fetch_and_load(
        &self,
        client: &reqwest::Client,
        registry: &Registry,
        max_bytes: usize,
    ) -> Result<Outcome, Failure> {
        let fetch = |e: String| Failure::Fetch(e);
        let known: Vec<String> = {
            let tags = self.tags();
            tags.good
                .iter()
                .chain(tags.failed.iter())
                .cloned()
                .collect()
        };
        let mut request = client.get(&self.config.url);
        if !known.is_empty() {
            request = request.header(reqwest::header::IF_NONE_MATCH, known.join(", "));
        }
        let mut response = request.send().await.map_err(|e| fetch(e.to_string()))?;
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match response.status() {
            reqwest::StatusCode::NOT_MODIFIED => {
                let broken = etag.is_some() && etag == self.tags().failed;
                return Ok(if broken {
                    Outcome::StillBroken
                } else {
                    Outcome::Unchanged
                });
            }
            reqwest::StatusCode::OK => {}
            other => return Err(fetch(format!("HTTP {other}"))),
        }
        if let Some(length) = response.content_length()
            && length > max_bytes as u64
        {
            return Err(fetch(format!(
                "the archive is {length} bytes, over limits.max_upload_bytes ({max_bytes})"
            )));
        }
        // Streamed into the state directory (the same file system as the kept copy, so
        // keeping it is a rename), never more than the cap.
        let mut file = tempfile::Builder::new()
            .prefix("download-")
            .suffix(".tar.gz")
            .tempfile_in(&self.dir)
            .map_err(|e| fetch(format!("cannot stage the download: {e}")))?;
        let mut written = 0usize;
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch(e.to_string()))? {
            written += chunk.len();
            if written > max_bytes {
                return Err(fetch(format!(
                    "the archive is over limits.max_upload_bytes ({max_bytes}); download stopped"
                )));
            }
            std::io::Write::write_all(&mut file, &chunk)
                .map_err(|e| fetch(format!("cannot stage the download: {e}")))?;
        }
        let before = registry.get(&self.config.name).ok();
        let activation = match registry.load_as(file.path(), &self.config.name).await {
            Ok(a) => a,
            Err(f) => {
                self.tags().failed = etag;
                return Err(Failure::Load(format!("{:?}: {}", f.step, f.error)));
            }
        };
        self.tags().good = etag.clone();
        self.tags().failed = None;
        self.keep(file, &etag);
        // The same content under a new ETag (a re-published file): nothing changed.
        let same = before.is_some_and(|b| b.digest() == activation.digest);
        Ok(if same {
            Outcome::SameRevision { etag }
        } else {
            Outcome::Updated {
                etag,
                revision: activation.revision,
                digest: activation.digest,
            }
        })
    }

    /// Keeps the archive that just activated and its ETag (archive first, then the meta
    /// that names it: a crash in between leaves the old ETag, which costs one download).
    fn keep(&self, file: tempfile::NamedTempFile, etag: &Option<String>) {
        let kept = file
            .persist(self.dir.join(ARCHIVE))
            .map_err(|e| e.error)
            .and_then(|_| {
                let meta = Meta {
                    url: self.config.url.clone(),
                    etag: etag.clone(),
                };
                let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
                std::io::Write::write_all(&mut tmp, &serde_json::to_vec(&meta)?)?;
                tmp.persist(self.dir.join(META)).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = kept {
            tracing::warn!(bundle = %self.config.name, "cannot keep the archive in {}: {e}", self.dir.display());
        }
    }
}

enum Outcome {
    Updated {
        etag: Option<String>,
        revision: String,
        digest: String,
    },
    Unchanged,
    /// A new archive (new ETag) of the bundle already active, byte for byte.
    SameRevision {
        etag: Option<String>,
    },
    /// 304 for the archive that last failed the gate.
    StillBroken,
}

enum Failure {
    Fetch(String),
    Load(String),
}

/// Reads a file of at most `max` bytes.
fn read_small(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}
