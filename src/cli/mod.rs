//! The command line: one clap `Command` enum, a file per subcommand.
//!
//! Exit codes (OPERATIONS.md): 0 success, 1 runtime failure, 2 usage or configuration error.
//! Errors go to stderr as one sentence saying what is wrong and how to fix it.

mod audit;
mod config;
mod import;
mod keys;
mod migrate;
mod purge;
mod serve;
mod sessions;
mod user;

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
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Inspect and end sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Show the newest audit events.
    Audit(audit::AuditArgs),
    /// Show signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Import users from JSON Lines with their existing password hashes.
    Import {
        /// The file: one `{email, name?, username?, password_hash, roles?, is_active?}` per line.
        file: PathBuf,
    },
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
        _ => Vec::new(),
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
        Command::User(cmd) => {
            init_cli_logging(&config);
            user::run(cmd, &open(config).await?).await
        }
        Command::Sessions(cmd) => {
            init_cli_logging(&config);
            sessions::run(cmd, &open(config).await?).await
        }
        Command::Audit(args) => {
            init_cli_logging(&config);
            audit::run(args, &open(config).await?).await
        }
        Command::Keys(cmd) => {
            init_cli_logging(&config);
            keys::run(cmd, &open(config).await?).await
        }
        Command::Import { file } => {
            init_cli_logging(&config);
            import::run(&file, &open(config).await?).await
        }
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

/// Maps a use-case error to an exit: bad input is a usage error (2), the rest runtime (1).
pub(crate) fn from_auth(e: crate::auth::AuthError) -> Failure {
    use crate::auth::AuthError as E;
    match e {
        E::Validation(fields) => Failure::Usage(
            fields
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        E::Conflict(what) => Failure::Runtime(format!("{what} already belongs to another user")),
        E::NotFound => Failure::Runtime("not found".to_owned()),
        E::Forbidden(why) => Failure::Runtime(why.to_owned()),
        E::Unavailable => Failure::Runtime("the database is unavailable; try again".to_owned()),
        other => Failure::Runtime(other.to_string()),
    }
}

/// Administrative commands print their results on stdout; logs stay quiet unless asked for
/// (`RUST_LOG`) or something goes wrong.
fn init_cli_logging(config: &Config) {
    let mut quiet = config.clone();
    if std::env::var_os("RUST_LOG").is_none() {
        quiet.log.level = "warn".to_owned();
    }
    init_logging(&quiet);
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
