//! `rulebox eval`: one rule or one bundle, one input, the result as JSON.

use super::{Global, LoadArgs, RuleArgs, print_json, read_input, rule_name, runtime};
use anyhow::Result;
use rulebox::{Bundle, EvalError, Evaluation};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["rule", "bundle"])))]
pub struct Args {
    /// The rule component (.wasm) to evaluate.
    #[arg(long)]
    rule: Option<PathBuf>,
    /// The bundle (directory or .tar.gz) to evaluate: its rules run under the limits in its
    /// bundle.toml, so the rule flags below do not apply to it.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The input document: a JSON file, or `-` for stdin.
    #[arg(long)]
    input: String,
    /// With --rule only.
    #[command(flatten, next_help_heading = "With --rule")]
    rule_args: RuleArgs,
    /// With --bundle only.
    #[command(flatten, next_help_heading = "With --bundle")]
    load: LoadArgs,
}

pub fn run(global: &Global, args: Args) -> Result<ExitCode> {
    // A flag that cannot apply is a usage error, never silently dropped.
    let (mode, inapplicable) = match &args.bundle {
        Some(_) => ("--bundle", args.rule_args.given()),
        None => ("--rule", args.load.given()),
    };
    if let Some(flag) = inapplicable.first() {
        anyhow::bail!(
            "{flag} cannot be used with {mode}: {}",
            if mode == "--bundle" {
                "a bundle's rules run with the reads, settings, grants and limits of its bundle.toml"
            } else {
                "it applies to bundles (signatures, the shared result cache)"
            }
        );
    }
    let input = read_input(&args.input)?;
    let engine = global.engine()?;
    if let Some(path) = &args.bundle {
        let options = args.load.options()?;
        let bundle = match Bundle::load(&engine, path, &options) {
            Ok(b) => b,
            Err(e) => {
                print_json(&serde_json::json!({
                    "bundle": path.display().to_string(),
                    "ok": false,
                    "error": e,
                }))?;
                return Ok(ExitCode::from(1));
            }
        };
        let code = match runtime()?.block_on(bundle.evaluate(&input)) {
            Ok(result) => {
                print_json(&result)?;
                ExitCode::SUCCESS
            }
            Err(overloaded) => {
                print_json(&serde_json::json!({
                    "bundle": overloaded.bundle,
                    "ok": false,
                    "error": overloaded,
                }))?;
                ExitCode::from(1)
            }
        };
        if let Some(cache) = &options.cache
            && !cache.flush(Duration::from_secs(1))
        {
            tracing::warn!("some results did not reach the shared cache before exit");
        }
        return Ok(code);
    }
    let path = args
        .rule
        .as_deref()
        .expect("clap requires --rule or --bundle");
    let eval = match args.rule_args.build(&engine, path)? {
        Ok(rule) => rule.evaluate(&input),
        Err(e) => Evaluation::failed(rule_name(path), EvalError::Incompatible(e)),
    };
    print_json(&eval)?;
    Ok(ExitCode::from(if eval.result.is_ok() { 0 } else { 1 }))
}
