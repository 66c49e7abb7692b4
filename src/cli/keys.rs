//! `keygate keys …`

use super::Failure;
use crate::auth::Auth;
use crate::clock::rfc3339;

/// `keygate keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Show the signing keys and their state.
    List,
}

pub(super) async fn run(cmd: KeysCommand, auth: &Auth) -> Result<(), Failure> {
    match cmd {
        KeysCommand::List => {
            let keys = auth
                .store()
                .all_keys()
                .await
                .map_err(|e| Failure::Runtime(format!("cannot read the keys: {e}")))?;
            println!("{:<44}  {:<9}  {:<8}  created", "kid", "algorithm", "state");
            for k in keys {
                println!(
                    "{:<44}  {:<9}  {:<8}  {}",
                    k.kid,
                    k.algorithm,
                    k.state,
                    rfc3339(k.created_at)
                );
            }
            if auth.config().signing.algorithm == jsonwebtoken::Algorithm::HS256 {
                println!(
                    "(signing.algorithm is HS256: tokens are signed with signing.secret, not these keys)"
                );
            }
        }
    }
    Ok(())
}
