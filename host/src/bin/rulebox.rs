//! The `rulebox` command: clap and tracing setup over the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rulebox::{Engine, EngineConfig, Grant, Input, LimitsOverride, Rule};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
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
}

#[derive(Args)]
struct RuleArgs {
    /// The rule component (.wasm).
    #[arg(long)]
    rule: PathBuf,
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
    match run(cli.command) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Eval(args) => {
            let (engine, rule_args) = (Engine::new(EngineConfig::default())?, &args.rule);
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
            let engine = Engine::new(EngineConfig::default())?;
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

fn read_input(spec: &str) -> Result<Input> {
    let text = if spec == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading input from stdin")?;
        s
    } else {
        std::fs::read_to_string(spec).with_context(|| format!("reading input {spec}"))?
    };
    Input::from_json(&text).with_context(|| format!("input {spec}"))
}

/// Usage problems are `Err` (exit 2); a component that is not a rule is `Ok(Err)` (exit 1,
/// reported as JSON like any other failed evaluation).
fn build_rule(engine: &Engine, args: &RuleArgs) -> Result<Result<Rule, rulebox::LoadError>> {
    let settings: serde_json::Value =
        serde_json::from_str(&args.settings).context("--settings is not JSON")?;
    let pre = match engine.load_file(&args.rule) {
        Ok(pre) => pre,
        Err(rulebox::LoadError::Io { path, message }) => {
            anyhow::bail!("cannot read rule {path}: {message}")
        }
        Err(e) => return Ok(Err(e)),
    };
    let mut builder = Rule::builder(rule_name(&args.rule), pre)
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
        "rule": rule_name(&args.rule),
        "ok": false,
        "error": { "kind": err.kind(), "message": err.to_string() },
        "metering": rulebox::Metering::default(),
    }))
    .unwrap_or_default()
}
