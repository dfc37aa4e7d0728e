//! # rulebox-server
//!
//! The rule host as a service: a thin HTTP layer over the `rulebox` library, as Kubewarden's
//! policy-server is over policy-evaluator. [`router`] builds the axum router over an
//! [`AppState`]; [`serve`] runs it on a listener until a shutdown signal, then lets requests
//! in flight finish within a grace period. The `rulebox serve` command starts it.
//!
//! # Layout
//! - `config`: [`ServerConfig`]: one TOML file, `[profile.NAME]` overlays, `RULEBOX_*`
//!   environment overrides, validated once.
//! - `auth`: static tokens (SHA-256 hashes) and JWTs, roles, bundle scopes.
//! - `api`: the handlers.
//! - `limits`: per-credential rate limits (token buckets) and the rejection counters.
//! - `metrics`: the Prometheus metrics (`GET /metrics`).
//! - `poll`: bundles polled from URLs with ETags, the last good archive kept on disk.
//! - [`decisions`]: the decision log (SQLite, one writer thread, async or sync), its
//!   per-minute rollups and retention, and the queries (also used by `rulebox decisions`).
//! - `dashboard`: the live dashboard page (`GET /`) and its event stream.
//! - `health`: the sliding window of recent traffic and the 0-100 health score.
//! - `alerts`: alert rules, their states (kept in SQLite) and webhook notifications.
//! - `error`: [`ApiError`], the one place a kind becomes a status code.

#![deny(missing_docs)]

mod alerts;
mod api;
mod auth;
mod config;
mod dashboard;
pub mod decisions;
mod error;
mod health;
mod limits;
mod metrics;
mod poll;
mod rollout;

pub use api::{AppState, router};
pub use auth::new_token;
pub use config::{
    AlertRule, AlertsConfig, AuthConfig, BundlesConfig, Comparison, ConfigError, DecisionLogConfig,
    HealthConfig, JwtAlgorithm, JwtConfig, JwtKey, LimitsConfig, LogMode, Mask, MaskAction,
    MetricsConfig, PromotionGuard, Rate, RateLimitsConfig, Role, RolloutConfig, ServerConfig,
    Severity, Signal, Threshold, TokenConfig, UrlSource, WatchConfig,
};
pub use error::ApiError;
pub use poll::{PollStatus, Polling};

use std::future::Future;
use std::time::Duration;

/// Reloads the configuration on every SIGHUP (a refused reload is logged and the running
/// configuration kept). Stops when dropped.
struct Reloader(Option<tokio::task::JoinHandle<()>>);

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

fn reload_on_sighup(state: AppState) -> Reloader {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return Reloader(None);
        };
        Reloader(Some(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(e) = state.reload_config() {
                    tracing::warn!("SIGHUP: configuration reload refused: {e}");
                }
            }
        })))
    }
    #[cfg(not(unix))]
    {
        let _ = state;
        Reloader(None)
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The engine or cache configuration was refused.
    #[error("{0}")]
    Config(String),
    /// The listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the engine, cache and registry from `config`, starts watching the bundle directory
/// (if any), and serves the API on `listener` until `shutdown` resolves; requests in flight
/// then get `limits.shutdown_grace_ms` to finish.
pub async fn serve(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = Duration::from_millis(config.limits.shutdown_grace_ms);
    let state = AppState::new(config).map_err(ServeError::Config)?;
    let _watcher = state.watch_bundles().map_err(ServeError::Config)?;
    let _polling = state.poll_bundles().map_err(ServeError::Config)?;
    // Shadows kept from before a restart, staged again in the background (a candidate
    // compiles as a load does: serving does not wait for it). Failures are logged there.
    let restoring = state.clone();
    tokio::spawn(async move { restoring.restore_shadows().await });
    let _reloader = reload_on_sighup(state.clone());
    let flush = state.clone();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stopping_tx.send(true);
    });
    let outcome = tokio::select! {
        served = server => served.map_err(ServeError::from),
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("shutdown grace of {} ms elapsed with requests in flight", grace.as_millis());
            Ok(())
        }
    };
    // What the shadow candidates found so far, on disk before the process ends.
    flush.flush_rollout();
    outcome
}
