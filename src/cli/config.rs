//! `keygate config check`

use super::Failure;
use crate::config::Config;

/// `keygate config …`
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets redacted.
    Check,
}

pub(super) fn run(cmd: ConfigCommand, config: &Config) -> Result<(), Failure> {
    match cmd {
        ConfigCommand::Check => {
            print!("{}", config.redacted());
            if config.signing.stores_keys_unencrypted() {
                println!("# note: {}", crate::config::UNENCRYPTED_KEYS_WARNING);
            }
            Ok(())
        }
    }
}
