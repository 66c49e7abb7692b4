//! The feed of ended sessions (`revocations`), filled by the database's own triggers (migration
//! 0005) whenever a session is revoked or deleted while live. Times and the feed's cursor are
//! the database's clock in Unix milliseconds, one clock for every node.

use super::{Backend, Store, StoreError, on_pool};
use crate::domain::SessionId;

/// The database's clock in Unix milliseconds, per backend.
const SQLITE_NOW: &str = "cast(round((julianday('now') - 2440587.5) * 86400000) as integer)";
const POSTGRES_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// One page of the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationPage {
    /// Sessions that ended after the cursor asked for, oldest first, as `(session, at)`.
    pub ended: Vec<(SessionId, i64)>,
    /// The database's clock when the page was read (Unix milliseconds).
    pub now: i64,
}

impl Store {
    fn db_now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => SQLITE_NOW,
            Backend::Postgres(_) => POSTGRES_NOW,
        }
    }

    /// Sessions that ended at a database time after `since` (Unix milliseconds), oldest first,
    /// at most `limit`, with the database's clock.
    pub async fn revocations_since(
        &self,
        since: i64,
        limit: u32,
    ) -> Result<RevocationPage, StoreError> {
        let now_sql = format!("select {}", self.db_now_sql());
        let (rows, now): (Vec<(String, i64)>, i64) = on_pool!(self, read, |pool| {
            let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(now_sql.as_str()))
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as(
                "select session_id, at from revocations where at > $1 order by at, seq limit $2",
            )
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            (rows, now)
        })?;
        let ended = rows
            .into_iter()
            .filter_map(|(id, at)| SessionId::parse(&id).map(|id| (id, at)))
            .collect();
        Ok(RevocationPage { ended, now })
    }

    /// Deletes feed entries older than `keep_ms` by the database's clock. Returns how many.
    pub async fn purge_revocations(&self, keep_ms: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "delete from revocations where at < {} - $1",
            self.db_now_sql()
        );
        on_pool!(self, write, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(keep_ms)
                .execute(pool)
                .await?
                .rows_affected()
        })
    }
}
