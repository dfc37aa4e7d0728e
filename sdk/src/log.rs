//! Logging to the host's log, attributed to the calling rule.

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very fine detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd, but the rule carries on.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one line to the host's log (in native builds, to stderr).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::host_log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs at trace level, `format!`-style.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log($crate::Level::Trace, &format!($($arg)*)) }; }
/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log($crate::Level::Debug, &format!($($arg)*)) }; }
/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log($crate::Level::Info, &format!($($arg)*)) }; }
/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log($crate::Level::Warn, &format!($($arg)*)) }; }
/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log($crate::Level::Error, &format!($($arg)*)) }; }
