//! `rulebox cache`: the shared (Redis) result cache.

use super::print_json;
use anyhow::Result;
use rulebox::{CacheConfig, ResultCache};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Deletes cached results from the shared Redis cache: all of them, one bundle's, or one
    /// rule's. Hosts' in-process caches expire by their TTL (or use the library API).
    Invalidate {
        /// The Redis URL (`redis://127.0.0.1:6379/0`).
        #[arg(long, env = "RULEBOX_REDIS_URL")]
        redis: String,
        /// Only this bundle's results.
        #[arg(long)]
        bundle: Option<String>,
        /// Only this rule's results (needs --bundle).
        #[arg(long, requires = "bundle")]
        rule: Option<String>,
    },
}

pub fn run(command: Command) -> Result<ExitCode> {
    let Command::Invalidate {
        redis,
        bundle,
        rule,
    } = command;
    let cache = ResultCache::new(CacheConfig {
        redis_url: Some(redis),
        redis_timeout_ms: 2000,
        ..CacheConfig::default()
    })?;
    match (&bundle, &rule) {
        (Some(b), Some(r)) => cache.invalidate_rule(b, r),
        (Some(b), None) => cache.invalidate_bundle(b),
        _ => cache.invalidate_all(),
    }
    .map_err(|e| anyhow::anyhow!("{e}; nothing was invalidated"))?;
    print_json(&serde_json::json!({"invalidated": {"bundle": bundle, "rule": rule}}))?;
    Ok(ExitCode::SUCCESS)
}
