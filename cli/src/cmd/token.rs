//! `rulebox token`: API tokens for the server.

use super::print_json;
use anyhow::Result;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Prints a new random token and the SHA-256 to put in the server's configuration
    /// (`[[auth.tokens]] sha256 = ...`). The token itself is shown once and stored nowhere.
    New,
}

pub fn run(command: Command) -> Result<ExitCode> {
    let Command::New = command;
    let (token, sha256) = rulebox_server::new_token().map_err(anyhow::Error::msg)?;
    print_json(&serde_json::json!({"token": token, "sha256": sha256}))?;
    Ok(ExitCode::SUCCESS)
}
