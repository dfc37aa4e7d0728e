//! `rulebox test`: a bundle's golden cases as a table.

use super::{Global, LoadArgs, runtime};
use anyhow::Result;
use rulebox::Bundle;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle directory or archive.
    bundle: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
}

pub fn run(global: &Global, args: Args) -> Result<ExitCode> {
    let engine = global.engine()?;
    let bundle = match Bundle::load(&engine, &args.bundle, &args.load.options()?) {
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
