//! `keygate keys …`

use super::Failure;
use crate::auth::{Auth, KeyError};
use crate::clock::rfc3339;
use crate::domain::ClientInfo;

/// `keygate keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Show the signing keys: state, the times of its transitions, whether encrypted.
    List,
    /// Start a zero-downtime rotation: a new key is published now and signs
    /// `signing.rotation.publish_ahead` later.
    Rotate,
    /// Take a key out of use at once (a leaked key): unpublished, no longer verifying; if it
    /// signs, a new key signs from now on.
    Revoke {
        /// The key's id (`kid`), from `keys list`.
        kid: String,
    },
    /// Encrypt every stored private key under `signing.key_encryption_key`, opening keys
    /// sealed under an older one with `signing.previous_key_encryption_keys`.
    Rekey,
}

pub(super) async fn run(cmd: KeysCommand, auth: &Auth) -> Result<(), Failure> {
    match cmd {
        KeysCommand::List => {
            let keys = auth
                .list_keys()
                .await
                .map_err(|e| Failure::Runtime(format!("cannot read the keys: {e}")))?;
            println!(
                "{:<44}  {:<9}  {:<8}  {:<9}  {:<20}  {:<20}  {:<20}  {:<20}",
                "kid",
                "algorithm",
                "state",
                "encrypted",
                "created",
                "activated",
                "retiring",
                "retired/revoked"
            );
            let t =
                |at: Option<time::OffsetDateTime>| at.map(rfc3339).unwrap_or_else(|| "-".into());
            for k in keys {
                let activated = match (k.activated_at, k.activate_at) {
                    (Some(at), _) => rfc3339(at),
                    (None, Some(at)) => format!("at {}", rfc3339(at)),
                    (None, None) => "-".to_owned(),
                };
                println!(
                    "{:<44}  {:<9}  {:<8}  {:<9}  {:<20}  {:<20}  {:<20}  {:<20}",
                    k.kid,
                    k.algorithm,
                    k.state,
                    if k.encrypted { "yes" } else { "no" },
                    rfc3339(k.created_at),
                    activated,
                    t(k.retiring_at),
                    t(k.retired_at.or(k.revoked_at)),
                );
            }
            if auth.config().signing.algorithm == jsonwebtoken::Algorithm::HS256 {
                println!(
                    "(signing.algorithm is HS256: tokens are signed with signing.secret, not these keys)"
                );
            }
        }
        KeysCommand::Rotate => {
            let (key, started) = auth
                .rotate_keys(None, &ClientInfo::default())
                .await
                .map_err(key_failure)?;
            let at = key.activate_at.map(rfc3339).unwrap_or_default();
            if started {
                println!(
                    "rotation started: key {} is published now and signs from {at}",
                    key.kid
                );
            } else {
                println!(
                    "a rotation is already under way: key {} signs from {at}",
                    key.kid
                );
            }
        }
        KeysCommand::Revoke { kid } => {
            let was = auth
                .revoke_key(&kid, None, &ClientInfo::default())
                .await
                .map_err(key_failure)?;
            println!(
                "key {kid} revoked (it was {was}); every node stops trusting it within {} s",
                crate::auth::KEY_POLL.as_secs()
            );
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
            let r = auth
                .rekey()
                .await
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            println!(
                "encrypted under key encryption key {kek} now (already before): signing keys {} ({}), \
                 two-factor seeds {} ({}), server secrets {} ({})",
                r.signing_keys.sealed,
                r.signing_keys.unchanged,
                r.totp_seeds.sealed,
                r.totp_seeds.unchanged,
                r.server_secrets.sealed,
                r.server_secrets.unchanged
            );
        }
    }
    Ok(())
}

fn key_failure(e: KeyError) -> Failure {
    match e {
        KeyError::Hs256 | KeyError::FromFiles | KeyError::NotInUse(_) => {
            Failure::Usage(e.to_string())
        }
        KeyError::Store(_) | KeyError::Startup(_) => Failure::Runtime(e.to_string()),
    }
}
