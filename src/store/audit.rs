//! The `audit_events` aggregate: an append-only log, purged after its retention.

use time::OffsetDateTime;

use super::batch::{AuditRow as NewRow, audit_query};
use super::{Store, StoreError, on_pool};
use crate::clock::{from_millis, to_millis};
use crate::domain::{SessionId, UserId};

/// An event to record. `reason` is a fixed code, never user input or secret material.
#[derive(Debug, Clone)]
pub struct NewAuditEvent<'a> {
    /// Event name from API.md (`login_succeeded`, `refresh_token_reused`, …).
    pub event: &'static str,
    /// The user concerned, if known.
    pub user_id: Option<UserId>,
    /// The session concerned, if any.
    pub session_id: Option<SessionId>,
    /// Client IP.
    pub ip: Option<&'a str>,
    /// Client user agent.
    pub user_agent: Option<&'a str>,
    /// Whether the attempt succeeded.
    pub success: bool,
    /// A short code saying why.
    pub reason: Option<&'static str>,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Id (UUID v7).
    pub id: String,
    /// When.
    pub at: OffsetDateTime,
    /// Event name.
    pub event: String,
    /// User.
    pub user_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// Why.
    pub reason: Option<String>,
}

/// Which events to list: newest first, before the cursor (an event id).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this user's events.
    pub user_id: Option<UserId>,
    /// Only this event name.
    pub event: Option<String>,
    /// Only events older than this id.
    pub before: Option<String>,
    /// At most this many.
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    event: String,
    user_id: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    reason: Option<String>,
}

impl Store {
    /// Appends an event (on SQLite through the group-commit task).
    pub async fn record_audit(
        &self,
        e: &NewAuditEvent<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let row = NewRow::new(e, to_millis(now));
        match self.batcher() {
            Some(batcher) => {
                batcher.audit(row).await?;
            }
            None => {
                on_pool!(self, write, |pool| {
                    audit_query(row.clone()).execute(pool).await.map(|_| ())?
                })?;
            }
        }
        Ok(())
    }

    /// Lists events, newest first.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // A filter passed as null matches every row, so one statement serves every query.
        let rows: Vec<AuditRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select id, at, event, user_id, session_id, ip, user_agent, outcome, reason \
                 from audit_events \
                 where ($1 is null or user_id = $1) and ($2 is null or event = $2) \
                 and ($3 is null or id < $3) \
                 order by id desc limit $4",
            )
            .bind(q.user_id.map(|u| u.to_string()))
            .bind(q.event.as_deref())
            .bind(q.before.as_deref())
            .bind(i64::from(q.limit))
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.id,
                at: from_millis(r.at),
                event: r.event,
                user_id: r.user_id,
                session_id: r.session_id,
                ip: r.ip,
                user_agent: r.user_agent,
                outcome: r.outcome,
                reason: r.reason,
            })
            .collect())
    }
}
