//! The command line: one clap `Command` enum, a file per subcommand.
//!
//! Exit codes (OPERATIONS.md): 0 success, 1 runtime failure, 2 usage or configuration error.
//! Errors go to stderr as one sentence saying what is wrong and how to fix it.

mod config;
mod migrate;
mod purge;
mod serve;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Sources};

/// Keygate: a self-hostable authentication server.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./keygate.toml when present).
    #[arg(long, global = true, env = "KEYGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(serve::ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Delete ended sessions, expired grace data and audit events past retention.
    Purge(DatabaseArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Flags shared by commands that open the database.
#[derive(Debug, clap::Args, Default)]
pub struct DatabaseArgs {
    /// Database URL (overrides `database_url`).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

impl DatabaseArgs {
    fn flags(&self) -> Vec<(String, String)> {
        self.database_url
            .iter()
            .map(|u| ("database_url".to_owned(), u.clone()))
            .collect()
    }
}

/// A failure to report: which exit code, and the sentence for stderr.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Exit 2.
    Usage(String),
    /// Exit 1.
    Runtime(String),
}

/// Parses the arguments, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let flags = match &cli.command {
        Command::Serve(args) => args.flags(),
        Command::Migrate(args) | Command::Purge(args) => args.flags(),
        Command::Config(_) => Vec::new(),
    };
    let config = Config::load(&Sources {
        file: cli.config.clone(),
        flags,
        environment: true,
    })
    .map_err(|e| Failure::Usage(e.to_string()))?;
    match cli.command {
        Command::Serve(_) => {
            init_logging(&config);
            serve::run(config).await
        }
        Command::Migrate(_) => {
            init_logging(&config);
            migrate::run(&config).await
        }
        Command::Purge(_) => {
            init_logging(&config);
            purge::run(config).await
        }
        Command::Config(cmd) => config::run(cmd, &config),
    }
}

/// Opens the database (applying pending migrations) and builds the use cases, for the
/// commands that act on data.
async fn open(config: Config) -> Result<crate::auth::Auth, Failure> {
    let store = crate::store::Store::connect(&config)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot open the database: {e}")))?;
    store
        .migrate()
        .await
        .map_err(|e| Failure::Runtime(format!("cannot migrate the database: {e}")))?;
    crate::auth::Auth::new(
        std::sync::Arc::new(config),
        store,
        std::sync::Arc::new(crate::clock::SystemClock),
    )
    .await
    .map_err(|e| Failure::Runtime(e.to_string()))
}

/// Logs go to stderr: JSON when not on a terminal (or when configured), readable otherwise.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match config.log.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
