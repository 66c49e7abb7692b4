//! The feed of ended sessions (`revocations`), filled by the database's own triggers (migration
//! 0005) whenever a session is revoked or deleted while live. Entries are read in the order
//! of their sequence number (`seq`), which is total however many share one time stamp; their
//! times are the database's clock in Unix milliseconds, one clock for every node, and tell the
//! feed which entries are old enough to be passed for good (`auth::oauth`).

use super::{Backend, Store, StoreError, on_pool};
use crate::domain::SessionId;

/// The database's clock in Unix milliseconds, per backend.
const SQLITE_NOW: &str = "cast(round((julianday('now') - 2440587.5) * 86400000) as integer)";
const POSTGRES_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The session that ended (`None` if the stored id is not one: skipped, but counted).
    pub session: Option<SessionId>,
    /// Its place in the feed.
    pub seq: i64,
    /// When it was written, by the database's clock (Unix milliseconds).
    pub at: i64,
}

/// One page of the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationPage {
    /// Entries after the cursor asked for, in `seq` order.
    pub ended: Vec<FeedEntry>,
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

    /// Entries after `after_seq`, in `seq` order, at most `limit`, with the database's clock.
    pub async fn revocations_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<RevocationPage, StoreError> {
        let now_sql = format!("select {}", self.db_now_sql());
        let (rows, now): (Vec<(String, i64, i64)>, i64) = on_pool!(self, read, |pool| {
            let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(now_sql.as_str()))
                .fetch_one(pool)
                .await?;
            let rows = sqlx::query_as(
                "select session_id, seq, at from revocations where seq > $1 order by seq limit $2",
            )
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            (rows, now)
        })?;
        let ended = rows
            .into_iter()
            .map(|(id, seq, at)| FeedEntry {
                session: SessionId::parse(&id),
                seq,
                at,
            })
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
