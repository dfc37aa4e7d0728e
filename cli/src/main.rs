//! The `rulebox` command: clap and tracing setup, then dispatch to one module per command
//! (`cmd/`). Everything a command does beyond parsing and printing is library API.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Evaluates one rule (--rule) or one bundle (--bundle) on one input and prints the
    /// result as JSON.
    ///
    /// Exits 0 when there is a decision (a verdict, for a bundle), 1 when the evaluation
    /// errored or the bundle did not load, 2 on usage errors.
    Eval(cmd::eval::Args),
    /// Evaluates one rule repeatedly (a fresh instance each time) and prints its cost as JSON.
    Bench(cmd::bench::Args),
    /// Runs a bundle's golden cases, prints a table, exits 1 if any fails.
    Test(cmd::test::Args),
    /// Creates, packs, signs, verifies and inspects bundles.
    #[command(subcommand)]
    Bundle(cmd::bundle::Command),
    /// Manages the shared (Redis) result cache.
    #[command(subcommand)]
    Cache(cmd::cache::Command),
    /// Runs the HTTP service: evaluation API, bundle admin, roles, limits.
    Serve(cmd::serve::Args),
    /// Creates API tokens.
    #[command(subcommand)]
    Token(cmd::token::Command),
    /// Queries a decision-log file (the server's `decision_log.path`): list, show, stats,
    /// compact.
    #[command(subcommand)]
    Decisions(cmd::decisions::Command),
    /// Checks a server configuration and prints the effective one, secrets redacted.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Evaluates a candidate bundle on logged decisions (after its golden cases pass) and
    /// reports what would change: transition matrices, changed decisions, cost per rule.
    Replay(cmd::replay::Args),
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
    let global = cmd::Global {
        cache_dir: if cli.no_cache {
            None
        } else {
            cli.cache_dir.clone().or_else(default_cache_dir)
        },
    };
    let result = match cli.command {
        Command::Eval(args) => cmd::eval::run(&global, args),
        Command::Bench(args) => cmd::bench::run(&global, args),
        Command::Test(args) => cmd::test::run(&global, args),
        Command::Bundle(command) => cmd::bundle::run(&global, command),
        Command::Cache(command) => cmd::cache::run(command),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Token(command) => cmd::token::run(command),
        Command::Config(command) => cmd::config::run(command),
        Command::Decisions(command) => cmd::decisions::run(command),
        Command::Replay(args) => cmd::replay::run(&global, args),
    };
    match result {
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
