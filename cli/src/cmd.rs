//! One module per command, and what several of them share: the engine, the input, the
//! bundle-loading flags.

pub mod bench;
pub mod bundle;
pub mod cache;
pub mod config;
pub mod decisions;
pub mod eval;
pub mod replay;
pub mod serve;
pub mod test;
pub mod token;

use anyhow::{Context, Result};
use rulebox::bundle::TrustedKey;
use rulebox::{
    CacheConfig, Engine, EngineConfig, Grant, Input, LimitsOverride, LoadError, LoadOptions,
    ResultCache, Rule,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the global flags decided.
pub struct Global {
    /// Where compiled components are kept; none: memory only.
    pub cache_dir: Option<PathBuf>,
}

impl Global {
    pub fn engine(&self) -> Result<Engine> {
        Ok(Engine::new(EngineConfig {
            cache_dir: self.cache_dir.clone(),
            ..EngineConfig::default()
        })?)
    }
}

/// How a bundle is checked when loaded, shared by `eval --bundle` and `test`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// A trusted public key file (repeatable); the bundle must then carry a valid signature
    /// by one of them.
    #[arg(long)]
    pub trusted: Vec<PathBuf>,
    /// Refuse bundles without a valid signature by a trusted key (implied by --trusted).
    #[arg(long)]
    pub require_signature: bool,
    /// Use this Redis as the shared result cache (per the bundle's cache policies); default:
    /// RULEBOX_REDIS_URL when set.
    #[arg(long)]
    pub redis: Option<String>,
}

impl LoadArgs {
    /// The flags given, by name (for refusing them where they do not apply).
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if !self.trusted.is_empty() {
            given.push("--trusted");
        }
        if self.require_signature {
            given.push("--require-signature");
        }
        if self.redis.is_some() {
            given.push("--redis");
        }
        given
    }

    pub fn options(&self) -> Result<LoadOptions> {
        let progress: Option<rulebox::LoadProgress> = if std::io::stderr().is_terminal() {
            Some(Arc::new(|done, total, rule: &str| {
                eprint!(
                    "\rcompiled {done}/{total} ({rule})\x1b[K{}",
                    if done == total { "\n" } else { "" }
                )
            }))
        } else {
            None
        };
        // The variable is read here, not by clap: set for a whole shell, it must not make
        // `eval --rule` (which has no cache) a usage error the way the flag does.
        let redis = self.redis.clone().or_else(|| {
            std::env::var("RULEBOX_REDIS_URL")
                .ok()
                .filter(|u| !u.is_empty())
        });
        let cache = match redis {
            None => None,
            Some(url) => Some(Arc::new(ResultCache::new(CacheConfig {
                redis_url: Some(url),
                ..CacheConfig::default()
            })?)),
        };
        Ok(LoadOptions {
            trusted_keys: trusted_keys(&self.trusted)?,
            require_signature: self.require_signature,
            progress,
            cache,
            ..LoadOptions::default()
        })
    }
}

/// How one rule is configured, shared by `eval --rule` and `bench`.
#[derive(clap::Args)]
pub struct RuleArgs {
    /// The JSON paths the rule reads, comma-separated (`*` for the whole document).
    #[arg(long, value_delimiter = ',')]
    pub reads: Vec<String>,
    /// The rule's settings, a JSON object (default `{}`).
    #[arg(long)]
    pub settings: Option<String>,
    /// A read-only directory grant, HOST_DIR:GUEST_DIR (repeatable).
    #[arg(long)]
    pub grant: Vec<String>,
    /// Fuel budget (default: the engine's).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Running-time deadline in milliseconds (default: the engine's).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Memory cap in bytes (default: the engine's).
    #[arg(long)]
    pub memory: Option<usize>,
}

impl RuleArgs {
    /// The flags given, by name (for refusing them where they do not apply).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--reads", !self.reads.is_empty()),
            ("--settings", self.settings.is_some()),
            ("--grant", !self.grant.is_empty()),
            ("--fuel", self.fuel.is_some()),
            ("--timeout", self.timeout.is_some()),
            ("--memory", self.memory.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }

    /// Compiles the component at `path` and configures it. Usage problems are `Err` (exit
    /// 2); a component that is not a rule is `Ok(Err)` (exit 1, reported as JSON like any
    /// other failed evaluation).
    pub fn build(&self, engine: &Engine, path: &Path) -> Result<Result<Rule, LoadError>> {
        let settings: serde_json::Value =
            serde_json::from_str(self.settings.as_deref().unwrap_or("{}"))
                .context("--settings is not JSON")?;
        let pre = match engine.load_file(path) {
            Ok(pre) => pre,
            Err(LoadError::Io { path, message }) => {
                anyhow::bail!("cannot read rule {path}: {message}")
            }
            Err(e) => return Ok(Err(e)),
        };
        let mut builder = Rule::builder(rule_name(path), pre)
            .reads(self.reads.iter().filter(|s| !s.is_empty()).cloned())
            .settings(settings)
            .limits(LimitsOverride {
                fuel: self.fuel,
                timeout_ms: self.timeout,
                memory_bytes: self.memory,
                output_bytes: None,
            });
        for g in &self.grant {
            builder = builder.grant(Grant::parse(g).context("--grant")?);
        }
        Ok(Ok(builder.build().context("invalid rule options")?))
    }
}

/// A rule's name from its file: `amount_limit.wasm` is `amount_limit`.
pub fn rule_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rule".to_owned())
}

pub fn trusted_keys(files: &[PathBuf]) -> Result<Vec<TrustedKey>> {
    files
        .iter()
        .map(|p| TrustedKey::from_file(p).with_context(|| format!("--trusted {}", p.display())))
        .collect()
}

/// Reads the input document (a file, or `-` for stdin) through the size limit.
pub fn read_input(spec: &str) -> Result<Input> {
    let max = Input::DEFAULT_MAX_BYTES;
    let input = if spec == "-" {
        Input::from_reader(std::io::stdin().lock(), max)
    } else {
        let file = std::fs::File::open(spec).with_context(|| format!("reading input {spec}"))?;
        Input::from_reader(file, max)
    };
    input.with_context(|| format!("input {spec}"))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
