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

/// Writes one line to the host's log. In native builds (unit tests, benches of the rule
/// logic) lines go to stderr only at or above `RULEBOX_SDK_LOG` (`trace`, `debug`, `info`,
/// `warn`, `error`, `off`; default `warn`), so a native evaluation pays nothing for its
/// debug lines.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::host_log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    if enabled(level) {
        eprintln!("[{level:?}] {message}");
    }
}

/// Whether a line at `level` would be written: always in a component (the host filters);
/// natively, per `RULEBOX_SDK_LOG`. The macros check it before formatting.
#[inline]
pub fn enabled(level: Level) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = level;
        true
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static THRESHOLD: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
        let threshold = THRESHOLD
            .get_or_init(|| native_threshold(std::env::var("RULEBOX_SDK_LOG").ok().as_deref()));
        threshold.is_some_and(|t| level >= t)
    }
}

/// The lowest level written natively for a `RULEBOX_SDK_LOG` value (`None`: nothing).
#[cfg(not(target_arch = "wasm32"))]
fn native_threshold(value: Option<&str>) -> Option<Level> {
    match value.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        Some("trace") => Some(Level::Trace),
        Some("debug") => Some(Level::Debug),
        Some("info") => Some(Level::Info),
        Some("error") => Some(Level::Error),
        Some("off") => None,
        _ => Some(Level::Warn),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn native_logging_defaults_to_warn_and_can_be_turned_off() {
        assert_eq!(native_threshold(None), Some(Level::Warn));
        assert_eq!(native_threshold(Some("DEBUG")), Some(Level::Debug));
        assert_eq!(native_threshold(Some("off")), None);
        assert_eq!(native_threshold(Some("nonsense")), Some(Level::Warn));
        // The process's own setting (unset in tests): debug lines are not even formatted.
        if std::env::var_os("RULEBOX_SDK_LOG").is_none() {
            assert!(!enabled(Level::Debug));
            assert!(enabled(Level::Error));
        }
    }
}

/// Logs at trace level, `format!`-style.
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { if $crate::log_enabled($crate::Level::Trace) { $crate::log($crate::Level::Trace, &format!($($arg)*)) } }; }
/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { if $crate::log_enabled($crate::Level::Debug) { $crate::log($crate::Level::Debug, &format!($($arg)*)) } }; }
/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { if $crate::log_enabled($crate::Level::Info) { $crate::log($crate::Level::Info, &format!($($arg)*)) } }; }
/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { if $crate::log_enabled($crate::Level::Warn) { $crate::log($crate::Level::Warn, &format!($($arg)*)) } }; }
/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { if $crate::log_enabled($crate::Level::Error) { $crate::log($crate::Level::Error, &format!($($arg)*)) } }; }
