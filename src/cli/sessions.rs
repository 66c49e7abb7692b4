//! `keygate sessions …`

use super::user::not_found;
use super::{Failure, from_auth};
use crate::auth::Auth;
use crate::clock::rfc3339;
use crate::domain::ClientInfo;

/// `keygate sessions …`
#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// List a user's live sessions.
    List {
        /// User id, email or username.
        user: String,
    },
    /// End one session.
    Revoke {
        /// Session id.
        session_id: String,
    },
}

pub(super) async fn run(cmd: SessionsCommand, auth: &Auth) -> Result<(), Failure> {
    match cmd {
        SessionsCommand::List { user } => {
            let u = auth
                .find_user(&user)
                .await
                .map_err(|e| not_found(e, &user))?;
            let sessions = auth
                .user_sessions(&u.id.to_string())
                .await
                .map_err(from_auth)?;
            println!(
                "{:<36}  {:<24}  {:<24}  {:<15}  user agent",
                "id", "created", "last active", "ip"
            );
            for s in sessions {
                println!(
                    "{:<36}  {:<24}  {:<24}  {:<15}  {}",
                    s.id,
                    rfc3339(s.created_at),
                    rfc3339(s.last_active_at),
                    s.ip.as_deref().unwrap_or("-"),
                    s.user_agent.as_deref().unwrap_or("-")
                );
            }
        }
        SessionsCommand::Revoke { session_id } => {
            let operator = ClientInfo {
                ip: None,
                user_agent: Some("keygate-cli".to_owned()),
            };
            auth.revoke_session_by_id(&session_id, &operator)
                .await
                .map_err(|e| match e {
                    crate::auth::AuthError::NotFound => Failure::Runtime(format!(
                        "no live session `{session_id}`: see `keygate sessions list USER`"
                    )),
                    other => from_auth(other),
                })?;
            println!("session {session_id} revoked");
        }
    }
    Ok(())
}
