//! `rulebox bench`: one rule's cost per evaluation, as JSON.

use super::{Global, RuleArgs, print_json, read_input};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The rule component (.wasm).
    #[arg(long)]
    rule: PathBuf,
    /// The input document: a JSON file, or `-` for stdin.
    #[arg(long)]
    input: String,
    #[command(flatten)]
    rule_args: RuleArgs,
    /// Number of timed evaluations (after 10% warm-up).
    #[arg(long, default_value_t = 1000)]
    iterations: usize,
}

pub fn run(global: &Global, args: Args) -> Result<ExitCode> {
    let engine = global.engine()?;
    let input = read_input(&args.input)?;
    let rule = args.rule_args.build(&engine, &args.rule)??;
    print_json(&rule.bench(&input, args.iterations))?;
    Ok(ExitCode::SUCCESS)
}
