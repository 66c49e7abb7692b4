//! `keygate keys …`

use super::Failure;
use crate::auth::Auth;
use crate::clock::rfc3339;

/// `keygate keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Show the signing keys and their state.
    List,
    /// Encrypt every stored private key under `signing.key_encryption_key`, opening keys
    /// sealed under an older one with `signing.previous_key_encryption_keys`.
    Rekey,
}

pub(super) async fn run(cmd: KeysCommand, auth: &Auth) -> Result<(), Failure> {
    match cmd {
        KeysCommand::List => {
            let keys = auth
                .store()
                .all_keys()
                .await
                .map_err(|e| Failure::Runtime(format!("cannot read the keys: {e}")))?;
            println!(
                "{:<44}  {:<9}  {:<8}  {:<9}  created",
                "kid", "algorithm", "state", "encrypted"
            );
            for k in keys {
                println!(
                    "{:<44}  {:<9}  {:<8}  {:<9}  {}",
                    k.kid,
                    k.algorithm,
                    k.state,
                    if k.encrypted { "yes" } else { "no" },
                    rfc3339(k.created_at)
                );
            }
            if auth.config().signing.algorithm == jsonwebtoken::Algorithm::HS256 {
                println!(
                    "(signing.algorithm is HS256: tokens are signed with signing.secret, not these keys)"
                );
            }
        }
        KeysCommand::Rekey => {
            let envelope = auth.config().signing.envelope();
            let Some(kek) = envelope.current_id().map(str::to_owned) else {
                return Err(Failure::Usage(
                    "set signing.key_encryption_key (or signing.key_encryption_key_file) to the \
                     key to encrypt with; older keys go in signing.previous_key_encryption_keys"
                        .to_owned(),
                ));
            };
            let report = crate::auth::seal_stored_keys(&envelope, auth.store(), true)
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "{} signing key(s) encrypted under key encryption key {kek} now, {} already were",
                report.sealed, report.unchanged
            );
        }
    }
    Ok(())
}
