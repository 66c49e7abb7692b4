//! Auth events: each is one `tracing` event with stable field names and, for the events an
//! operator must be able to query later, one row in the audit log.

use super::Auth;
use crate::domain::{ClientInfo, SessionId, UserId};
use crate::store::{NewAuditEvent, SessionRecord};

/// One thing that happened. Never carries a token, password or hash: `reason` is a fixed code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event<'a> {
    pub(crate) name: &'static str,
    pub(crate) user_id: Option<UserId>,
    pub(crate) session_id: Option<SessionId>,
    pub(crate) client: &'a ClientInfo,
    pub(crate) success: bool,
    pub(crate) reason: Option<&'static str>,
    /// The administrator who acted, for administrative events (logged, not in the audit row).
    pub(crate) actor: Option<UserId>,
    /// A refresh answered from the grace window (counted apart in the metrics only).
    pub(crate) grace: bool,
}

impl<'a> Event<'a> {
    pub(crate) fn success(name: &'static str, client: &'a ClientInfo) -> Self {
        Event {
            name,
            user_id: None,
            session_id: None,
            client,
            success: true,
            reason: None,
            actor: None,
            grace: false,
        }
    }

    pub(crate) fn failure(
        name: &'static str,
        client: &'a ClientInfo,
        reason: &'static str,
    ) -> Self {
        Event {
            success: false,
            reason: Some(reason),
            ..Event::success(name, client)
        }
    }

    pub(crate) fn user(mut self, id: UserId) -> Self {
        self.user_id = Some(id);
        self
    }

    pub(crate) fn session(mut self, id: SessionId) -> Self {
        self.session_id = Some(id);
        self
    }

    /// The administrator behind the event.
    pub(crate) fn by(mut self, actor: Option<UserId>) -> Self {
        self.actor = actor;
        self
    }

    /// The session's user and the session itself.
    pub(crate) fn of(self, session: &SessionRecord) -> Self {
        self.user(session.user_id).session(session.id)
    }
}

impl Auth {
    /// Logs `e` and appends it to the audit log. A failing audit write is logged, not
    /// surfaced: the user's action has already happened.
    pub(crate) async fn emit(&self, e: Event<'_>) {
        log(&e);
        if let Err(err) = self.store.record_audit(&row(&e), self.now()).await {
            tracing::error!(event = e.name, error = %super::error_chain(&err), "could not write the audit log");
        }
    }
}

/// The audit row of an event.
pub(crate) fn row<'a>(e: &Event<'a>) -> NewAuditEvent<'a> {
    NewAuditEvent {
        event: e.name,
        user_id: e.user_id,
        session_id: e.session_id,
        ip: e.client.ip.as_deref(),
        user_agent: e.client.user_agent.as_deref(),
        success: e.success,
        reason: e.reason,
    }
}

/// The log line of an event: stable field names, never a secret. Login and refresh events
/// are counted in the metrics here, so that every path that logs one counts it.
pub(crate) fn log(e: &Event<'_>) {
    count(e);
    // Absent fields are left out of the line (an `Option` field records only `Some`), not
    // written as "".
    use tracing::field::display;
    let user_id = e.user_id.map(display);
    let session_id = e.session_id.map(display);
    let outcome = if e.success { "success" } else { "failure" };
    let reason = e.reason;
    let ip = e.client.ip.as_deref();
    let actor_id = e.actor.map(display);
    macro_rules! log {
        ($level:ident) => {
            tracing::$level!(
                event = e.name,
                user_id,
                session_id,
                outcome,
                reason,
                ip,
                actor_id,
                "auth event"
            )
        };
    }
    if e.name == "refresh_token_reused" {
        log!(warn);
    } else {
        log!(info);
    }
}

/// `keygate_logins_total{outcome}` and `keygate_refreshes_total{outcome}`.
fn count(e: &Event<'_>) {
    match (e.name, e.reason) {
        ("login_succeeded", _) => crate::metrics::login("success"),
        ("login_failed", Some("account_disabled")) => crate::metrics::login("account_disabled"),
        // The password was right; the login waits for a second factor or a verified address.
        ("login_failed", Some("mfa_required")) => crate::metrics::login("mfa_required"),
        ("login_failed", Some("email_not_verified")) => crate::metrics::login("email_not_verified"),
        ("mfa_failed", _) => crate::metrics::login("mfa_failed"),
        ("login_failed", _) => crate::metrics::login("invalid_credentials"),
        ("refresh_succeeded", _) if e.grace => crate::metrics::refresh("grace"),
        ("refresh_succeeded", _) => crate::metrics::refresh("success"),
        ("refresh_failed", Some("session_ended")) => crate::metrics::refresh("expired"),
        ("refresh_failed", _) => crate::metrics::refresh("invalid"),
        ("refresh_token_reused", _) => crate::metrics::refresh("reuse_detected"),
        _ => {}
    }
}
