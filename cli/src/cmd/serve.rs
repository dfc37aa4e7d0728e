//! `rulebox serve`: the HTTP service, until SIGTERM or ctrl-c.

use anyhow::{Context, Result};
use rulebox_server::ServerConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the configuration comes from; shared with `config check`.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The configuration file (TOML); default: built-in defaults.
    #[arg(long, env = "RULEBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// The profile overlay to apply (`dev`, `staging`, `prod`).
    #[arg(long, env = "RULEBOX_PROFILE")]
    pub profile: Option<String>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<ServerConfig> {
        Ok(ServerConfig::load(
            self.config.as_deref(),
            self.profile.as_deref(),
        )?)
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen here instead of the configured `listen` (e.g. `127.0.0.1:0` for any port).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        // One line on stdout that scripts (and the tests) can wait for.
        println!(
            "{}",
            serde_json::json!({"listening": addr.to_string(), "profile": config.profile})
        );
        tracing::info!(%addr, profile = ?config.profile, "rulebox serving");
        rulebox_server::serve(config, listener, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
