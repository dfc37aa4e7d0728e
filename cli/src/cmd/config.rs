//! `rulebox config check`: validate a server configuration.

use super::serve::ConfigArgs;
use anyhow::Result;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validates the configuration (file, profile, environment) and prints the effective one
    /// as TOML, secrets redacted. Errors name the file and the key; exit 2.
    Check(ConfigArgs),
}

pub fn run(command: Command) -> Result<ExitCode> {
    let Command::Check(args) = command;
    print!("{}", args.load()?.redacted());
    Ok(ExitCode::SUCCESS)
}
