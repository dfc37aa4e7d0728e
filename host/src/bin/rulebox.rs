//! The `rulebox` command: clap and tracing setup over the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rulebox::bundle::{self, BundleSource, SecretKey, SourceLimits, TrustedKey};
use rulebox::{
    Bundle, BundleError, CacheConfig, Engine, EngineConfig, Grant, Input, LimitsOverride,
    LoadOptions, ResultCache, Rule,
};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// Runs business and policy rules as sandboxed, metered WebAssembly components.
#[derive(Parser)]
#[command(name = "rulebox", version)]
struct Cli {
    /// Log filter (tracing env-filter syntax); also read from RULEBOX_LOG.
    #[arg(long, global = true, env = "RULEBOX_LOG", default_value = "warn")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Directory for compiled components (default: $XDG_CACHE_HOME/rulebox/compiled or
    /// ~/.cache/rulebox/compiled); also RULEBOX_CACHE_DIR.
    #[arg(long, global = true, env = "RULEBOX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not keep compiled components on disk.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluates one rule on one input and prints the result as JSON.
    ///
    /// Exits 0 when the rule returned a decision, 1 when the evaluation errored, 2 on usage
    /// errors.
    Eval(EvalArgs),
    /// Evaluates one rule repeatedly (a fresh instance each time) and prints its cost as JSON.
    Bench(BenchArgs),
    /// Runs a bundle's golden cases, prints a table, exits 1 if any fails.
    Test(TestArgs),
    /// Creates, packs, signs, verifies and inspects bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Manages the shared (Redis) result cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
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

#[derive(Subcommand)]
enum BundleCommand {
    /// Creates an ed25519 key pair: NAME.key (secret) and NAME.pub.
    Keygen {
        /// Path prefix of the two files.
        name: PathBuf,
    },
    /// Packs a bundle directory into a .tar.gz, filling in component digests.
    Pack {
        /// The bundle directory.
        dir: PathBuf,
        /// The archive to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Sign the archive with this secret key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Signs a bundle (directory: writes bundle.sig; archive: rewrites it with the signature).
    Sign {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// The secret key.
        #[arg(long)]
        key: PathBuf,
    },
    /// Checks a bundle's signature against trusted keys; exits 1 if it is not valid.
    Verify {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// A trusted public key file (repeatable).
        #[arg(long, required = true)]
        trusted: Vec<PathBuf>,
    },
    /// Prints what a bundle holds and whether it is valid, as JSON.
    Inspect {
        /// The bundle directory or archive.
        bundle: PathBuf,
        /// A trusted public key file (repeatable): the signature is then checked and
        /// `signed` says whether it is valid.
        #[arg(long)]
        trusted: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct BundleLoadArgs {
    /// A trusted public key file (repeatable); the bundle must then carry a valid signature
    /// by one of them.
    #[arg(long)]
    trusted: Vec<PathBuf>,
    /// Refuse bundles without a valid signature by a trusted key (implied by --trusted).
    #[arg(long)]
    require_signature: bool,
    /// Use this Redis as the shared result cache (per the bundle's cache policies).
    #[arg(long, env = "RULEBOX_REDIS_URL")]
    redis: Option<String>,
}

#[derive(Args)]
struct TestArgs {
    /// The bundle directory or archive.
    bundle: PathBuf,
    #[command(flatten)]
    load: BundleLoadArgs,
}

#[derive(Args)]
struct RuleArgs {
    /// The rule component (.wasm).
    #[arg(long)]
    rule: Option<PathBuf>,
    /// The input document: a JSON file, or `-` for stdin.
    #[arg(long)]
    input: String,
    /// The JSON paths the rule reads, comma-separated (`*` for the whole document).
    #[arg(long, value_delimiter = ',')]
    reads: Vec<String>,
    /// The rule's settings, a JSON object.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// A read-only directory grant, HOST_DIR:GUEST_DIR (repeatable).
    #[arg(long)]
    grant: Vec<String>,
    /// Fuel budget.
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline in milliseconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Memory cap in bytes.
    #[arg(long)]
    memory: Option<usize>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    rule: RuleArgs,
    /// Evaluate a whole bundle (directory or .tar.gz) instead of one rule.
    #[arg(long, conflicts_with = "rule")]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    load: BundleLoadArgs,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    rule: RuleArgs,
    /// Number of timed evaluations (after 10% warm-up).
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_tracing(&cli.log, cli.log_json);
    let cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir.clone().or_else(default_cache_dir)
    };
    match run(cli.command, cache_dir) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rulebox: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Each evaluation is a span; its close event carries rule, outcome, fuel and time.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rulebox/compiled"))
}

fn run(command: Command, cache_dir: Option<PathBuf>) -> Result<ExitCode> {
    let engine = || {
        Engine::new(EngineConfig {
            cache_dir: cache_dir.clone(),
            ..EngineConfig::default()
        })
    };
    match command {
        Command::Eval(EvalArgs {
            bundle: Some(path),
            rule: rule_args,
            load,
        }) => {
            let input = read_input(&rule_args.input)?;
            let engine = engine()?;
            let options = load_options(&load)?;
            let bundle = match Bundle::load(&engine, &path, &options) {
                Ok(b) => b,
                Err(e) => {
                    println!("{}", bundle_error_json(&path, &e));
                    return Ok(ExitCode::from(1));
                }
            };
            let result = match runtime()?.block_on(bundle.evaluate(&input)) {
                Ok(result) => result,
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "bundle": e.bundle,
                            "ok": false,
                            "error": { "kind": rulebox::ErrorKind::Overloaded, "message": e.to_string(), "rules": e.rules },
                        }))?
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            println!("{}", serde_json::to_string_pretty(&result.to_json())?);
            if let Some(cache) = &options.cache
                && !cache.flush(Duration::from_secs(1))
            {
                tracing::warn!("some results did not reach the shared cache before exit");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test(args) => {
            let engine = engine()?;
            let bundle = match Bundle::load(&engine, &args.bundle, &load_options(&args.load)?) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!(
                        "rulebox: {} not loaded ({:?}): {e}",
                        args.bundle.display(),
                        e.step()
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            let report = runtime()?.block_on(bundle.run_tests());
            println!("{:<6} {:<24} {:<28} problem", "result", "target", "case");
            for c in &report.cases {
                println!(
                    "{:<6} {:<24} {:<28} {}",
                    if c.passed { "ok" } else { "FAIL" },
                    c.target,
                    c.name,
                    c.problem.as_deref().unwrap_or("")
                );
            }
            let failed = report.failed();
            println!("{} passed, {} failed", report.cases.len() - failed, failed);
            Ok(ExitCode::from(if failed == 0 { 0 } else { 1 }))
        }
        Command::Bundle(cmd) => bundle_command(cmd, engine),
        Command::Cache(CacheCommand::Invalidate {
            redis,
            bundle,
            rule,
        }) => {
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
            let l2 = cache.stats().l2.expect("configured");
            if l2.errors > 0 {
                anyhow::bail!("redis did not answer; nothing was invalidated");
            }
            println!(
                "{}",
                serde_json::json!({"invalidated": {"bundle": bundle, "rule": rule}})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => {
            let (engine, rule_args) = (engine()?, &args.rule);
            let input = read_input(&rule_args.input)?;
            let rule = match build_rule(&engine, rule_args)? {
                Ok(rule) => rule,
                Err(load) => {
                    println!("{}", load_error_json(rule_args, &load));
                    return Ok(ExitCode::from(1));
                }
            };
            let eval = rule.evaluate(&input);
            println!("{}", serde_json::to_string_pretty(&eval.to_json())?);
            Ok(ExitCode::from(if eval.result.is_ok() { 0 } else { 1 }))
        }
        Command::Bench(args) => {
            let engine = engine()?;
            let input = read_input(&args.rule.input)?;
            let rule = build_rule(&engine, &args.rule)?.map_err(anyhow::Error::from)?;
            let n = args.iterations.max(1);
            for _ in 0..n.div_ceil(10) {
                rule.evaluate(&input);
            }
            let mut times = Vec::with_capacity(n);
            let mut last = None;
            for _ in 0..n {
                let t = Instant::now();
                let e = rule.evaluate(&input);
                times.push(t.elapsed().as_nanos() as u64);
                last = Some(e);
            }
            times.sort_unstable();
            let last = last.expect("at least one iteration");
            let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
            let out = serde_json::json!({
                "rule": rule.name(),
                "iterations": n,
                "per_eval_ns": pct(0.5),
                "p90_ns": pct(0.9),
                "p99_ns": pct(0.99),
                "min_ns": times[0],
                "evals_per_sec": (1e9 / pct(0.5) as f64).round(),
                "fuel": last.metering.fuel,
                "memory_peak_bytes": last.metering.memory_peak_bytes,
                "outcome": match &last.result { Ok(d) => serde_json::to_value(d.verdict)?, Err(e) => serde_json::to_value(e.kind())? },
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn load_options(args: &BundleLoadArgs) -> Result<LoadOptions> {
    let trusted_keys = args
        .trusted
        .iter()
        .map(|p| TrustedKey::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let progress: Option<bundle::Progress> = if std::io::stderr().is_terminal() {
        Some(Arc::new(|done, total, rule: &str| {
            eprint!(
                "\rcompiled {done}/{total} ({rule})\x1b[K{}",
                if done == total { "\n" } else { "" }
            )
        }))
    } else {
        None
    };
    let cache = match &args.redis {
        None => None,
        Some(url) => Some(Arc::new(ResultCache::new(CacheConfig {
            redis_url: Some(url.clone()),
            ..CacheConfig::default()
        })?)),
    };
    Ok(LoadOptions {
        trusted_keys,
        require_signature: args.require_signature,
        progress,
        cache,
        ..LoadOptions::default()
    })
}

fn bundle_error_json(path: &std::path::Path, e: &BundleError) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "bundle": path.display().to_string(),
        "ok": false,
        "error": { "step": e.step(), "message": e.to_string() },
    }))
    .unwrap_or_default()
}

fn bundle_command(
    cmd: BundleCommand,
    engine: impl Fn() -> Result<Engine, rulebox::ConfigError>,
) -> Result<ExitCode> {
    let limits = SourceLimits::default();
    match cmd {
        BundleCommand::Keygen { name } => {
            let key = SecretKey::generate()?;
            let secret = name.with_extension("key");
            let public = name.with_extension("pub");
            write_private(&secret, &key.to_hex())?;
            std::fs::write(&public, key.public().to_hex() + "\n")
                .with_context(|| format!("writing {}", public.display()))?;
            println!(
                "{}",
                serde_json::json!({"secret": secret, "public": public, "key": key.public().to_hex()})
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Pack { dir, output, key } => {
            let key = key.map(|k| SecretKey::from_file(&k)).transpose()?;
            bundle::pack(&dir, &output, key.as_ref(), &limits)?;
            let packed = BundleSource::open(&output, &limits)?;
            println!(
                "{}",
                serde_json::json!({"archive": output, "digest": packed.digest_hex(), "files": packed.files().len(), "signed": key.is_some()})
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Sign { bundle: path, key } => {
            let key = SecretKey::from_file(&key)?;
            if path.is_dir() {
                bundle::sign_dir(&path, &key, &limits)?;
            } else {
                let source = BundleSource::open(&path, &limits)?;
                bundle::sign_dir(source.root(), &key, &limits)?;
                bundle::write_archive(source.root(), &path)?;
            }
            println!(
                "{}",
                serde_json::json!({"signed": path, "key": key.public().to_hex()})
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Verify {
            bundle: path,
            trusted,
        } => {
            let keys = trusted
                .iter()
                .map(|p| TrustedKey::from_file(p))
                .collect::<Result<Vec<_>, _>>()?;
            let source = BundleSource::open(&path, &limits)?;
            match bundle::verify(&source, &keys) {
                Ok(key) => {
                    println!(
                        "{}",
                        serde_json::json!({"bundle": path, "valid": true, "key": key.to_hex(), "digest": source.digest_hex()})
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({"bundle": path, "valid": false, "error": e.to_string()})
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        BundleCommand::Inspect {
            bundle: path,
            trusted,
        } => {
            let engine = engine()?;
            let options = LoadOptions {
                trusted_keys: trusted
                    .iter()
                    .map(|p| TrustedKey::from_file(p))
                    .collect::<Result<Vec<_>, _>>()?,
                ..LoadOptions::default()
            };
            match Bundle::load(&engine, &path, &options) {
                Ok(b) => {
                    let rules: Vec<_> = b.rules().iter().map(|r| serde_json::json!({
                        "name": r.rule.name(),
                        "component_sha256": r.rule.pre().digest_hex(),
                        "reads": r.rule.reads().to_strings(),
                        "depends_on": r.depends_on.iter().map(|&d| b.rules()[d].rule.name()).collect::<Vec<_>>(),
                        "limits": r.rule.limits(),
                        "on_error": r.on_error,
                        "cache": r.cache,
                        "tests": r.tests.len(),
                    })).collect();
                    let layers: Vec<Vec<&str>> = b
                        .layers()
                        .iter()
                        .map(|l| l.iter().map(|&i| b.rules()[i].rule.name()).collect())
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "bundle": b.name(),
                            "revision": b.revision(),
                            "digest": b.digest(),
                            "combine": b.manifest().bundle.combine,
                            "valid": true,
                            // Verified against --trusted keys; without them, not checked.
                            "signed": b.signed_by().is_some(),
                            "signature_file": b.source().files().contains_key(bundle::SIGNATURE_FILE),
                            "rules": rules,
                            "layers": layers,
                            "tests": b.manifest().tests.len(),
                        }))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}", bundle_error_json(&path, &e));
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

/// Reads the input through the size limit (a larger file is not read whole) and parses it
/// without copying the text again.
fn read_input(spec: &str) -> Result<Input> {
    let max = Input::DEFAULT_MAX_BYTES;
    let reader: Box<dyn Read> = if spec == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(spec).with_context(|| format!("reading input {spec}"))?)
    };
    let mut bytes = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading input {spec}"))?;
    if bytes.len() > max {
        anyhow::bail!("input {spec}: larger than the limit of {max} bytes");
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "input {spec}: not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Input::from_json(text).with_context(|| format!("input {spec}"))
}

/// Usage problems are `Err` (exit 2); a component that is not a rule is `Ok(Err)` (exit 1,
/// reported as JSON like any other failed evaluation).
fn build_rule(engine: &Engine, args: &RuleArgs) -> Result<Result<Rule, rulebox::LoadError>> {
    let settings: serde_json::Value =
        serde_json::from_str(&args.settings).context("--settings is not JSON")?;
    let rule_path = args
        .rule
        .as_ref()
        .context("--rule PATH.wasm (or, for eval, --bundle PATH) is required")?;
    let pre = match engine.load_file(rule_path) {
        Ok(pre) => pre,
        Err(rulebox::LoadError::Io { path, message }) => {
            anyhow::bail!("cannot read rule {path}: {message}")
        }
        Err(e) => return Ok(Err(e)),
    };
    let mut builder = Rule::builder(rule_name(rule_path), pre)
        .reads(args.reads.iter().filter(|s| !s.is_empty()).cloned())
        .settings(settings)
        .limits(LimitsOverride {
            fuel: args.fuel,
            timeout_ms: args.timeout,
            memory_bytes: args.memory,
            output_bytes: None,
        });
    for g in &args.grant {
        builder = builder.grant(Grant::parse(g).context("--grant")?);
    }
    Ok(Ok(builder.build().context("invalid rule options")?))
}

fn rule_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rule".to_owned())
}

fn load_error_json(args: &RuleArgs, e: &rulebox::LoadError) -> String {
    let err = rulebox::EvalError::Incompatible(e.clone());
    serde_json::to_string_pretty(&serde_json::json!({
        "rule": args.rule.as_deref().map(rule_name).unwrap_or_default(),
        "ok": false,
        "error": { "kind": err.kind(), "message": err.to_string() },
        "metering": rulebox::Metering::default(),
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
