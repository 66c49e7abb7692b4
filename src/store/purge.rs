//! Purging what no longer matters, so no table grows without bound.

use time::OffsetDateTime;

use super::{Store, StoreError, on_pool};
use crate::clock::to_millis;

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Sessions that had ended (revoked or expired) before the cut-off, deleted.
    pub sessions: u64,
    /// Sealed successors past the grace window, erased.
    pub sealed_successors: u64,
    /// Audit events past retention, deleted.
    pub audit_events: u64,
    /// Sent (or dropped) mail past [`MAIL_RETENTION`], expired link tokens and expired
    /// waiting logins, deleted.
    pub mail: u64,
}

/// How long a sent or dropped message stays in the outbox for operators.
pub const MAIL_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Row counts, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// `users`.
    pub users: i64,
    /// `sessions`.
    pub sessions: i64,
    /// `audit_events`.
    pub audit_events: i64,
}

impl Store {
    /// Deletes sessions that ended before `ended_before`, erases sealed successors of rotations
    /// before `sealed_before` (the grace window is over, nobody can use them), and deletes
    /// audit events older than `audit_before`.
    pub async fn purge(
        &self,
        ended_before: OffsetDateTime,
        sealed_before: OffsetDateTime,
        audit_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<PurgeCounts, StoreError> {
        let ended = to_millis(ended_before);
        let sessions = on_pool!(self, write, |pool| {
            sqlx::query(
                "delete from sessions where (revoked_at is not null and revoked_at < $1) \
                 or refresh_expires_at < $1 or (expires_at is not null and expires_at < $1)",
            )
            .bind(ended)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        let sealed_successors = on_pool!(self, write, |pool| {
            sqlx::query(
                "update sessions set sealed_successor = null \
                 where sealed_successor is not null and rotated_at < $1",
            )
            .bind(to_millis(sealed_before))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        let audit_events = on_pool!(self, write, |pool| {
            sqlx::query("delete from audit_events where at < $1")
                .bind(to_millis(audit_before))
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        let mail_before = now - time::Duration::try_from(MAIL_RETENTION).unwrap_or_default();
        let mut mail = 0;
        for (sql, at) in [
            ("delete from outbox where sent_at < $1", mail_before),
            ("delete from email_tokens where expires_at < $1", now),
            ("delete from mfa_challenges where expires_at < $1", now),
        ] {
            mail += on_pool!(self, write, |pool| {
                sqlx::query(sql)
                    .bind(to_millis(at))
                    .execute(pool)
                    .await?
                    .rows_affected()
            })?;
        }
        Ok(PurgeCounts {
            sessions,
            sealed_successors,
            audit_events,
            mail,
        })
    }

    /// How many rows each table holds.
    pub async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        let (users, sessions, audit_events): (i64, i64, i64) = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select (select count(*) from users), (select count(*) from sessions), \
                 (select count(*) from audit_events)",
            )
            .fetch_one(pool)
            .await?
        })?;
        Ok(TableCounts {
            users,
            sessions,
            audit_events,
        })
    }
}
