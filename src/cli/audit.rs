//! `keygate audit` — the newest audit events (the admin API's `GET /admin/audit`, for operators).

use super::user::not_found;
use super::{Failure, from_auth};
use crate::auth::Auth;
use crate::clock::rfc3339;

/// Flags of `keygate audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only this user's events (id, email or username).
    #[arg(long)]
    user: Option<String>,
    /// Only this event (`login_failed`, `refresh_token_reused`, …).
    #[arg(long)]
    event: Option<String>,
    /// How many, newest first (at most 200).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub(super) async fn run(args: AuditArgs, auth: &Auth) -> Result<(), Failure> {
    let user_id = match &args.user {
        None => None,
        Some(u) => Some(
            auth.find_user(u)
                .await
                .map_err(|e| not_found(e, u))?
                .id
                .to_string(),
        ),
    };
    let page = auth
        .audit_events(
            user_id.as_deref(),
            args.event.as_deref(),
            Some(args.limit.clamp(1, 200)),
            None,
        )
        .await
        .map_err(from_auth)?;
    println!(
        "{:<24}  {:<20}  {:<7}  {:<36}  {:<15}  reason",
        "at", "event", "outcome", "user", "ip"
    );
    for e in page.items {
        println!(
            "{:<24}  {:<20}  {:<7}  {:<36}  {:<15}  {}",
            rfc3339(e.at),
            e.event,
            e.outcome,
            e.user_id.as_deref().unwrap_or("-"),
            e.ip.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
