//! What one evaluation runs inside: the store's data, its resource limiter, captured stdio and
//! the host side of `rulebox:rule/host`.

use crate::bindings::rulebox::rule::{host, types};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most bytes of one `log` message kept; longer ones are cut and marked.
const LOG_MESSAGE_BYTES: usize = 4096;
/// Most `log` calls forwarded per evaluation; the rest are counted and dropped, so a chatty
/// rule cannot flood the host's log.
const LOG_LINES: u32 = 256;

/// The data of one evaluation's store.
pub(crate) struct StoreState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub log: RuleLog,
    /// When the evaluation's wall-clock deadline passes.
    pub deadline: std::time::Instant,
    /// The guest asked to sleep past the deadline (and was woken at it): whatever it
    /// returns, the evaluation timed out.
    pub slept_past_deadline: bool,
    /// When the current call started, by the wall clock and by the thread's CPU clock: the
    /// epoch callback charges the rule only for the CPU its thread used since.
    pub started: std::time::Instant,
    pub cpu_start: std::time::Duration,
    /// What `rulebox:rule/grants.read` may read: the directories this sandbox was granted
    /// (none for a pre-initialized rule's evaluations), and at most how many bytes a file.
    pub grants: Option<Arc<[GrantDir]>>,
    pub grant_read_bytes: u64,
}

/// A directory granted to the rule: where it is on the host, and where the rule sees it.
pub(crate) type GrantDir = (std::path::PathBuf, String);

/// `rulebox:rule/grants`: a rule's directory grants, read-only, for rules without WASI.
pub(crate) fn add_grant_reads(
    linker: &mut wasmtime::component::Linker<StoreState>,
) -> wasmtime::Result<()> {
    let mut grants = linker.instance("rulebox:rule/grants@0.1.0")?;
    grants.func_wrap(
        "read",
        |store: wasmtime::StoreContextMut<'_, StoreState>, (path,): (String,)| {
            let state = store.data();
            let grants = state.grants.as_deref().unwrap_or_default();
            Ok((read_grant(grants, &path, state.grant_read_bytes),))
        },
    )
}

/// Reads `path` (as the rule sees it) from the grant it is under: through cap-std, so the
/// path cannot leave the granted directory (`..`, absolute or escaping symlinks), and only up
/// to `limit` bytes.
pub(crate) fn read_grant(grants: &[GrantDir], path: &str, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let shown = truncate(path.to_owned(), 256);
    // The longest grant the path is under ("/data/x" is under "/data", not "/dat").
    let Some((host, _, rest)) = grants
        .iter()
        .filter_map(|(host, guest)| {
            let rest = path.strip_prefix(guest.trim_end_matches('/'))?;
            (rest.is_empty() || rest.starts_with('/')).then_some((
                host,
                guest,
                rest.trim_start_matches('/'),
            ))
        })
        .max_by_key(|(_, guest, _)| guest.len())
    else {
        return Err(if grants.is_empty() {
            format!(
                "cannot read `{shown}`: this rule has no grants here (a pre-initialized rule reads them only in `init`)"
            )
        } else {
            let names: Vec<&str> = grants.iter().map(|(_, guest)| guest.as_str()).collect();
            format!(
                "cannot read `{shown}`: not under any of this rule's grants ({})",
                names.join(", ")
            )
        });
    };
    let fail = |what: &str, e: std::io::Error| format!("cannot read `{shown}`: {what}: {e}");
    let dir = cap_std::fs::Dir::open_ambient_dir(host, cap_std::ambient_authority())
        .map_err(|e| fail("the grant cannot be opened", e))?;
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = dir
        .open_with(if rest.is_empty() { "." } else { rest }, &options)
        .map_err(|e| fail("cannot open it", e))?;
    let meta = file.metadata().map_err(|e| fail("cannot stat it", e))?;
    if !meta.is_file() {
        return Err(format!("cannot read `{shown}`: not a file"));
    }
    if meta.len() > limit {
        return Err(format!(
            "cannot read `{shown}`: {} bytes, more than the rule's memory limit ({limit} bytes)",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail("reading failed", e))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "cannot read `{shown}`: more than the rule's memory limit ({limit} bytes)"
        ));
    }
    Ok(bytes)
}

/// Replaces WASI's `monotonic-clock.subscribe-*`: a guest that sleeps blocks in the host,
/// where epoch interruption cannot reach it, so a sleep is cut short at the evaluation's
/// deadline. The guest then wakes into the expired epoch deadline and traps as a timeout.
pub(crate) fn add_deadline_sleeps(
    linker: &mut wasmtime::component::Linker<StoreState>,
) -> wasmtime::Result<()> {
    use wasmtime::StoreContextMut;
    linker.allow_shadowing(true);
    let mut clocks = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clocks.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, StoreState>, (nanos,): (u64,)| {
            let state = store.data_mut();
            let wake = std::time::Instant::now() + std::time::Duration::from_nanos(nanos);
            Ok((sleep_until(state, wake)?,))
        },
    )?;
    clocks.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
            let state = store.data_mut();
            let now = monotonic_now();
            let wake = std::time::Instant::now()
                + std::time::Duration::from_nanos(when.saturating_sub(now));
            Ok((sleep_until(state, wake)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn sleep_until(
    state: &mut StoreState,
    wake: std::time::Instant,
) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
    if wake > state.deadline {
        state.slept_past_deadline = true;
    }
    let until = tokio::time::Instant::from_std(wake.min(state.deadline));
    let sleep = state.table.push(Sleep(until))?;
    wasmtime_wasi::p2::subscribe(&mut state.table, sleep)
}

struct Sleep(tokio::time::Instant);

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        tokio::time::sleep_until(self.0).await;
    }
}

/// The monotonic clock rules see (nanoseconds since the host's first reading).
pub(crate) fn monotonic_now() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces the memory cap and records the peak, and whether growth was refused (a guest that
/// is refused memory usually aborts right after, and that abort must read as `memory-limit`).
pub(crate) struct Limiter {
    pub memory_cap: usize,
    pub peak: usize,
    pub refused: Option<usize>,
}

impl Limiter {
    pub fn new(memory_cap: usize) -> Self {
        Limiter {
            memory_cap,
            peak: 0,
            refused: None,
        }
    }
}

/// Tables hold function references; a rule needing more than this is broken or hostile.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.refused = Some(desired);
            self.peak = self.peak.max(current);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The rule's `log` calls: forwarded to `tracing` under the rule's name, bounded.
pub(crate) struct RuleLog {
    pub rule: Arc<str>,
    pub lines: u32,
    pub dropped: u32,
    /// The last error-level message: a Rust panic hook from the SDK puts the panic here.
    pub last_error: Option<String>,
}

impl RuleLog {
    pub fn new(rule: Arc<str>) -> Self {
        RuleLog {
            rule,
            lines: 0,
            dropped: 0,
            last_error: None,
        }
    }

    /// Starts counting afresh (a reused instance's next evaluation).
    pub fn reset(&mut self) {
        self.lines = 0;
        self.dropped = 0;
        self.last_error = None;
    }
}

impl types::Host for StoreState {}

impl host::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let message = truncate(message, LOG_MESSAGE_BYTES);
        let log = &mut self.log;
        if matches!(level, types::LogLevel::Error) {
            log.last_error = Some(message.clone());
        }
        if log.lines >= LOG_LINES {
            log.dropped += 1;
            return;
        }
        log.lines += 1;
        let rule = &*log.rule;
        match level {
            types::LogLevel::Trace => tracing::trace!(target: "rulebox::rule", rule, "{message}"),
            types::LogLevel::Debug => tracing::debug!(target: "rulebox::rule", rule, "{message}"),
            types::LogLevel::Info => tracing::info!(target: "rulebox::rule", rule, "{message}"),
            types::LogLevel::Warn => tracing::warn!(target: "rulebox::rule", rule, "{message}"),
            types::LogLevel::Error => tracing::error!(target: "rulebox::rule", rule, "{message}"),
        }
    }
}

pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("… [truncated]");
    }
    s
}

/// A guest's stdout or stderr: keeps the last `cap` bytes, drops and counts the rest. Writes
/// never fail, so a chatty rule is not turned into a failing one.
#[derive(Clone)]
pub(crate) struct Capture {
    inner: Arc<Mutex<CaptureBuf>>,
}

struct CaptureBuf {
    data: Vec<u8>,
    cap: usize,
    dropped: usize,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            inner: Arc::new(Mutex::new(CaptureBuf {
                data: Vec::new(),
                cap,
                dropped: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.data.extend_from_slice(bytes);
        if buf.data.len() > buf.cap {
            let excess = buf.data.len() - buf.cap;
            buf.data.drain(..excess);
            buf.dropped += excess;
        }
    }

    /// What was kept, as text, and how many bytes were dropped before it.
    pub fn peek(&self) -> (String, usize) {
        let buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (String::from_utf8_lossy(&buf.data).into_owned(), buf.dropped)
    }

    /// Forgets what was kept (a reused instance starts each evaluation empty).
    pub fn clear(&self) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.data.clear();
        buf.dropped = 0;
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn capture_keeps_the_tail() {
        let c = Capture::new(8);
        c.push(b"hello ");
        c.push(b"world!");
        let (text, dropped) = c.peek();
        assert_eq!(text, "o world!");
        assert_eq!(dropped, 4);
    }

    #[test]
    fn limiter_refuses_over_cap_and_remembers() {
        let mut l = Limiter::new(1 << 20);
        assert!(l.memory_growing(0, 65536, None).unwrap());
        assert!(!l.memory_growing(65536, 2 << 20, None).unwrap());
        assert_eq!(l.peak, 65536);
        assert_eq!(l.refused, Some(2 << 20));
    }

    #[test]
    fn grant_reads_stay_inside_their_grant_and_under_the_limit() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let deeper = data.join("deeper");
        std::fs::create_dir_all(&deeper).unwrap();
        std::fs::write(data.join("list.txt"), "KP\nIR\n").unwrap();
        std::fs::write(deeper.join("own.txt"), "own").unwrap();
        std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.txt"), data.join("link")).unwrap();
        let fifo = std::ffi::CString::new(data.join("fifo").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let grants = [
            (data.clone(), "/data".to_owned()),
            // A grant inside another: the longer one is the path's.
            (deeper.clone(), "/data/deeper/".to_owned()),
        ];
        let read = |path: &str, limit: u64| read_grant(&grants, path, limit);
        assert_eq!(read("/data/list.txt", 1024).unwrap(), b"KP\nIR\n");
        assert_eq!(read("/data/deeper/own.txt", 1024).unwrap(), b"own");
        let refused = |path: &str, limit: u64, why: &str| {
            let e = read(path, limit).unwrap_err();
            assert!(e.contains(why) && e.contains(path), "{path}: {e}");
        };
        refused(
            "/database/x",
            1024,
            "not under any of this rule's grants (/data, /data/deeper/)",
        );
        refused("/data/../secret.txt", 1024, "cannot open it");
        refused("/data/link", 1024, "cannot open it");
        refused("/data/deeper", 1024, "not a file");
        // No writer: refused at once, not waited on.
        refused("/data/fifo", 1024, "not a file");
        refused("/data/missing.txt", 1024, "cannot open it");
        refused(
            "/data/list.txt",
            3,
            "6 bytes, more than the rule's memory limit (3 bytes)",
        );
        let e = read_grant(&[], "/data/list.txt", 1024).unwrap_err();
        assert!(e.contains("has no grants here"), "{e}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = truncate("ééé".to_owned(), 3);
        assert!(s.starts_with('é') && s.ends_with("[truncated]"), "{s}");
    }
}
