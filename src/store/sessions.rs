//! The `sessions` aggregate: one row per login, holding its refresh-token family.

use time::OffsetDateTime;

use super::batch::{
    AuditRow, audit_query, insert_session_query, rotate_query, trim_sessions_query,
};
use super::{NewAuditEvent, Store, StoreError, on_pool};
use crate::clock::{from_millis, to_millis};
use crate::domain::{SessionId, UserId};
use crate::token::RefreshHash;

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Id (also the refresh token's lookup id).
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Hash of the current refresh secret.
    pub refresh_hash: RefreshHash,
    /// Rotations so far.
    pub generation: i64,
    /// Hash of the secret rotated away last.
    pub previous_hash: Option<RefreshHash>,
    /// When that rotation happened.
    pub rotated_at: Option<OffsetDateTime>,
    /// The current token sealed under the previous one (present during the grace window).
    pub sealed_successor: Option<Vec<u8>>,
    /// Expiry of the current refresh token.
    pub refresh_expires_at: OffsetDateTime,
    /// Absolute end of the session, if capped.
    pub expires_at: Option<OffsetDateTime>,
    /// Login time.
    pub created_at: OffsetDateTime,
    /// Last login or refresh.
    pub last_active_at: OffsetDateTime,
    /// User agent at login.
    pub user_agent: Option<String>,
    /// Client IP at login.
    pub ip: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Opened with a second factor.
    pub mfa: bool,
}

impl SessionRecord {
    /// Live: not revoked and not past its absolute end.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|end| end > now)
    }

    /// Bytes that bind a sealed successor to this session and generation.
    pub fn seal_context(id: SessionId, generation: i64) -> Vec<u8> {
        let mut ctx = id.as_uuid().as_bytes().to_vec();
        ctx.extend_from_slice(&generation.to_be_bytes());
        ctx
    }
}

/// A session to create at login.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Id, the lookup id of its refresh token.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Hash of the first refresh secret.
    pub refresh_hash: RefreshHash,
    /// Expiry of that token.
    pub refresh_expires_at: OffsetDateTime,
    /// Absolute end, if capped.
    pub expires_at: Option<OffsetDateTime>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// The user's credentials version its login read with the password hash
    /// ([`super::StoredHash::version`]): the session is opened only if it is still current.
    pub credentials_version: i64,
    /// Opened with a second factor (its access tokens say `amr: ["pwd", "otp"]`).
    pub mfa: bool,
}

/// One rotation: from generation `from_generation` to the next.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Session.
    pub id: SessionId,
    /// The generation the caller saw; the update only happens if it is still current.
    pub from_generation: i64,
    /// Hash of the presented (now previous) secret.
    pub previous_hash: RefreshHash,
    /// Hash of the new secret.
    pub new_hash: RefreshHash,
    /// The new token sealed under the presented one.
    pub sealed_successor: Vec<u8>,
    /// Expiry of the new token.
    pub refresh_expires_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
    refresh_hash: Vec<u8>,
    generation: i64,
    previous_hash: Option<Vec<u8>>,
    rotated_at: Option<i64>,
    sealed_successor: Option<Vec<u8>>,
    refresh_expires_at: i64,
    expires_at: Option<i64>,
    created_at: i64,
    last_active_at: i64,
    user_agent: Option<String>,
    ip: Option<String>,
    revoked_at: Option<i64>,
    mfa: bool,
}

const SESSION_COLUMNS: &str = "id, user_id, refresh_hash, generation, previous_hash, rotated_at, \
     sealed_successor, refresh_expires_at, expires_at, created_at, last_active_at, user_agent, ip, \
     revoked_at, mfa";

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;

    fn try_from(r: SessionRow) -> Result<Self, StoreError> {
        let corrupt = StoreError::Corrupt("sessions");
        Ok(SessionRecord {
            id: SessionId::parse(&r.id).ok_or(StoreError::Corrupt("sessions"))?,
            user_id: UserId::parse(&r.user_id).ok_or(StoreError::Corrupt("sessions"))?,
            refresh_hash: RefreshHash::from_bytes(&r.refresh_hash).ok_or(corrupt)?,
            generation: r.generation,
            previous_hash: r.previous_hash.as_deref().and_then(RefreshHash::from_bytes),
            rotated_at: r.rotated_at.map(from_millis),
            sealed_successor: r.sealed_successor,
            refresh_expires_at: from_millis(r.refresh_expires_at),
            expires_at: r.expires_at.map(from_millis),
            created_at: from_millis(r.created_at),
            last_active_at: from_millis(r.last_active_at),
            user_agent: r.user_agent,
            ip: r.ip,
            revoked_at: r.revoked_at.map(from_millis),
            mfa: r.mfa,
        })
    }
}

impl Store {
    /// Creates a session ([`StoreError::CredentialsChanged`] as for [`Store::open_session`]).
    pub async fn insert_session(
        &self,
        s: &NewSession,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now_ms = to_millis(now);
        let inserted = on_pool!(self, write, |pool| {
            insert_session_query(s, now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        if inserted == 0 {
            return Err(StoreError::CredentialsChanged);
        }
        Ok(())
    }

    /// Opens a session at login, in one transaction: inserts `s`, ends the user's least
    /// recently used live sessions beyond the newest `keep` (`s` counts) and appends `audit`.
    /// On SQLite it goes through the group-commit task. Returns how many sessions it ended;
    /// [`StoreError::CredentialsChanged`] (nothing done) when the user was disabled or got a
    /// new password since the login read `s.credentials_version`.
    pub async fn open_session(
        &self,
        s: &NewSession,
        keep: u32,
        now: OffsetDateTime,
        audit: Option<&NewAuditEvent<'_>>,
    ) -> Result<u64, StoreError> {
        let now_ms = to_millis(now);
        let audit = audit.map(|a| AuditRow::new(a, now_ms));
        let ended = match self.batcher() {
            Some(batcher) => batcher.open(s.clone(), now_ms, keep, audit).await?,
            None => on_pool!(self, write, |pool| {
                let mut tx = pool.begin().await?;
                let inserted = insert_session_query(s, now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    None
                } else {
                    let ended = trim_sessions_query(s.user_id, keep, now_ms)
                        .fetch_all(&mut *tx)
                        .await?;
                    if let Some(row) = &audit {
                        audit_query(row.clone()).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Some(ended)
                }
            })?,
        };
        let ended = ended.ok_or(StoreError::CredentialsChanged)?;
        // Only the sessions that ended leave the cache: the other sessions' answers hold.
        for id in &ended {
            if let Some(id) = SessionId::parse(id) {
                self.cache.forget_session(id);
            }
        }
        crate::metrics::sessions_revoked("session_limit", ended.len() as u64);
        Ok(ended.len() as u64)
    }

    /// The session with this id, live or not.
    pub async fn find_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("select {SESSION_COLUMNS} from sessions where id = $1");
        let row: Option<SessionRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        })?;
        row.map(SessionRecord::try_from).transpose()
    }

    /// Whether session `id` of `user_id` is live at `now`: what an access token's `sid` needs.
    pub async fn session_is_live(
        &self,
        id: SessionId,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if let Some(live) = self.cache.session_live(id, user_id, now) {
            return Ok(live);
        }
        let seen = self.cache.session_epoch();
        let found: Option<Option<i64>> = on_pool!(self, read, |pool| {
            sqlx::query_scalar(
                "select expires_at from sessions where id = $1 and user_id = $2 \
                 and revoked_at is null and (expires_at is null or expires_at > $3)",
            )
            .bind(id.to_string())
            .bind(user_id.to_string())
            .bind(to_millis(now))
            .fetch_optional(pool)
            .await?
        })?;
        #[cfg(test)]
        self.cache.hold.pass().await;
        match found {
            Some(expires_at) => {
                self.cache
                    .remember_live(seen, id, user_id, expires_at.map(from_millis));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Rotates the session's refresh token if it is still at `from_generation` and live, and
    /// then (only if it won) appends `audit`, in the same transaction on SQLite.
    /// Returns whether this call won; a loser must re-read the row.
    pub async fn rotate_refresh(
        &self,
        r: &Rotation,
        now: OffsetDateTime,
        audit: Option<&NewAuditEvent<'_>>,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let audit = audit.map(|a| AuditRow::new(a, now_ms));
        if let Some(batcher) = self.batcher() {
            return Ok(batcher.rotate(r.clone(), now_ms, audit).await? == 1);
        }
        let done = on_pool!(self, write, |pool| {
            rotate_query(r, now_ms).execute(pool).await?.rows_affected()
        })?;
        if done == 1
            && let Some(row) = audit
        {
            on_pool!(self, write, |pool| {
                audit_query(row.clone()).execute(pool).await.map(|_| ())?
            })?;
        }
        Ok(done == 1)
    }

    /// Revokes one session; `false` if it was already revoked or does not exist.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.cache.forget_session(id);
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update sessions set revoked_at = $2, revoked_reason = $3, sealed_successor = null \
                 where id = $1 and revoked_at is null",
            )
            .bind(id.to_string())
            .bind(to_millis(now))
            .bind(reason)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        self.cache.forget_session(id);
        crate::metrics::sessions_revoked(reason, done);
        Ok(done == 1)
    }

    /// Revokes every live session of `user_id` except `keep`. Returns how many ended.
    pub async fn revoke_user_sessions(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        self.cache.forget_all_sessions();
        let keep = keep.map(|k| k.to_string()).unwrap_or_default();
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update sessions set revoked_at = $2, revoked_reason = $3, sealed_successor = null \
                 where user_id = $1 and id <> $4 and revoked_at is null",
            )
            .bind(user_id.to_string())
            .bind(to_millis(now))
            .bind(reason)
            .bind(&keep)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        self.cache.forget_all_sessions();
        crate::metrics::sessions_revoked(reason, done);
        Ok(done)
    }

    /// The user's live sessions, most recently active first.
    pub async fn live_sessions(
        &self,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "select {SESSION_COLUMNS} from sessions where user_id = $1 and revoked_at is null \
             and refresh_expires_at > $2 and (expires_at is null or expires_at > $2) \
             order by last_active_at desc, id desc"
        );
        let rows: Vec<SessionRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(user_id.to_string())
                .bind(to_millis(now))
                .fetch_all(pool)
                .await?
        })?;
        rows.into_iter().map(SessionRecord::try_from).collect()
    }
}
