//! Two-factor state: TOTP seeds, recovery codes and logins waiting for their second factor.

use time::OffsetDateTime;

use super::{Store, StoreError, on_pool};
use crate::clock::{from_millis, to_millis};
use crate::domain::{SessionId, UserId};
use crate::token::RefreshHash;

/// Attempts one `mfa_token` allows.
pub const MFA_ATTEMPTS: i64 = 5;

/// A user's TOTP enrolment.
#[derive(Debug, Clone)]
pub struct TotpRecord {
    /// The seed as stored: sealed (`kg-sealed:v1:…`) or base32.
    pub secret: String,
    /// Whether a first code confirmed it (two-factor is on).
    pub confirmed: bool,
    /// The last accepted time step.
    pub last_step: Option<i64>,
}

/// A login waiting for its second factor.
#[derive(Debug, Clone)]
pub struct ChallengeRecord {
    /// The user.
    pub user_id: UserId,
    /// SHA-256 of the `mfa_token`'s secret.
    pub secret_hash: RefreshHash,
    /// The credentials version the password was checked under.
    pub credentials_version: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// A challenge to store.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    /// Lookup id.
    pub id: String,
    /// The user.
    pub user_id: UserId,
    /// SHA-256 of the secret.
    pub secret_hash: RefreshHash,
    /// See [`ChallengeRecord::credentials_version`].
    pub credentials_version: i64,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

impl Store {
    /// Starts (or restarts) a TOTP enrolment with `secret`; `false` when two-factor is already
    /// on (nothing changed).
    pub async fn start_totp(
        &self,
        user: UserId,
        secret: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "insert into totp (user_id, secret, created_at) values ($1, $2, $3) \
                 on conflict (user_id) do update set secret = excluded.secret, \
                 created_at = excluded.created_at, confirmed_at = null, last_step = null \
                 where totp.confirmed_at is null",
            )
            .bind(user.to_string())
            .bind(secret)
            .bind(to_millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// The user's TOTP enrolment.
    pub async fn totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        let row: Option<(String, Option<i64>, Option<i64>)> = on_pool!(self, read, |pool| {
            sqlx::query_as("select secret, confirmed_at, last_step from totp where user_id = $1")
                .bind(user.to_string())
                .fetch_optional(pool)
                .await?
        })?;
        Ok(row.map(|(secret, confirmed_at, last_step)| TotpRecord {
            secret,
            confirmed: confirmed_at.is_some(),
            last_step,
        }))
    }

    /// Confirms a pending enrolment with the code of time step `step`: two-factor is on, the
    /// recovery codes are replaced by `codes`, every session but `keep` ends and the
    /// credentials version moves (a login that checked the password before opens nothing).
    /// `false` when there was no pending enrolment (nothing changed).
    pub async fn confirm_totp(
        &self,
        user: UserId,
        step: i64,
        codes: &[RefreshHash],
        keep: SessionId,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.cache.forget_user(user);
        self.cache.forget_all_sessions();
        let id = user.to_string();
        let ended = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let confirmed = sqlx::query(
                "update totp set confirmed_at = $2, last_step = $3 \
                 where user_id = $1 and confirmed_at is null",
            )
            .bind(&id)
            .bind(to_millis(now))
            .bind(step)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !confirmed {
                tx.rollback().await?;
                None
            } else {
                sqlx::query(
                    "update users set mfa_enabled = true, updated_at = $2, \
                     credentials_version = credentials_version + 1 where id = $1",
                )
                .bind(&id)
                .bind(to_millis(now))
                .execute(&mut *tx)
                .await?;
                sqlx::query("delete from recovery_codes where user_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                for code in codes {
                    sqlx::query("insert into recovery_codes (user_id, code_hash) values ($1, $2)")
                        .bind(&id)
                        .bind(code.0.to_vec())
                        .execute(&mut *tx)
                        .await?;
                }
                let ended = sqlx::query(
                    "update sessions set revoked_at = $2, revoked_reason = 'mfa_enabled', \
                     sealed_successor = null where user_id = $1 and id <> $3 \
                     and revoked_at is null",
                )
                .bind(&id)
                .bind(to_millis(now))
                .bind(keep.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Some(ended)
            }
        })?;
        self.cache.forget_user(user);
        self.cache.forget_all_sessions();
        if let Some(n) = ended {
            crate::metrics::sessions_revoked("mfa_enabled", n);
        }
        Ok(ended.is_some())
    }

    /// Accepts time step `step` for the user if it is later than every step accepted before
    /// (each code works once, on every node). Returns whether it was accepted.
    pub async fn use_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update totp set last_step = $2 where user_id = $1 \
                 and confirmed_at is not null and (last_step is null or last_step < $2)",
            )
            .bind(user.to_string())
            .bind(step)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Uses a recovery code (by its hash); `false` when it is not one of the user's unused
    /// codes.
    pub async fn use_recovery_code(
        &self,
        user: UserId,
        code: &RefreshHash,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update recovery_codes set used_at = $3 \
                 where user_id = $1 and code_hash = $2 and used_at is null",
            )
            .bind(user.to_string())
            .bind(code.0.to_vec())
            .bind(to_millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Unused recovery codes left.
    pub async fn recovery_codes_left(&self, user: UserId) -> Result<i64, StoreError> {
        on_pool!(self, read, |pool| {
            sqlx::query_scalar(
                "select count(*) from recovery_codes where user_id = $1 and used_at is null",
            )
            .bind(user.to_string())
            .fetch_one(pool)
            .await?
        })
    }

    /// Turns two-factor off: the seed, the recovery codes and waiting logins are deleted.
    /// Returns whether it was on (or an enrolment was pending).
    pub async fn disable_mfa(&self, user: UserId, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.cache.forget_user(user);
        let id = user.to_string();
        let had = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let had = sqlx::query("delete from totp where user_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            for sql in [
                "delete from recovery_codes where user_id = $1",
                "delete from mfa_challenges where user_id = $1",
            ] {
                sqlx::query(sql).bind(&id).execute(&mut *tx).await?;
            }
            sqlx::query(
                "update users set mfa_enabled = false, updated_at = $2 \
                 where id = $1 and mfa_enabled = true",
            )
            .bind(&id)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            had
        })?;
        self.cache.forget_user(user);
        Ok(had)
    }

    /// Stores a login waiting for its second factor.
    pub async fn insert_challenge(
        &self,
        c: &NewChallenge,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "insert into mfa_challenges (id, user_id, secret_hash, credentials_version, \
                 created_at, expires_at) values ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&c.id)
            .bind(c.user_id.to_string())
            .bind(c.secret_hash.0.to_vec())
            .bind(c.credentials_version)
            .bind(to_millis(now))
            .bind(to_millis(c.expires_at))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(())
    }

    /// The waiting login with this id.
    pub async fn find_challenge(&self, id: &str) -> Result<Option<ChallengeRecord>, StoreError> {
        let row: Option<(String, Vec<u8>, i64, i64, i64)> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select user_id, secret_hash, credentials_version, attempts, expires_at \
                 from mfa_challenges where id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        })?;
        row.map(|(user, hash, version, attempts, expires_at)| {
            Ok(ChallengeRecord {
                user_id: UserId::parse(&user).ok_or(StoreError::Corrupt("mfa_challenges"))?,
                secret_hash: RefreshHash::from_bytes(&hash)
                    .ok_or(StoreError::Corrupt("mfa_challenges"))?,
                credentials_version: version,
                attempts,
                expires_at: from_millis(expires_at),
            })
        })
        .transpose()
    }

    /// Counts one attempt against the challenge; `false` when it has none left or expired.
    pub async fn attempt_challenge(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update mfa_challenges set attempts = attempts + 1 \
                 where id = $1 and attempts < $2 and expires_at > $3",
            )
            .bind(id)
            .bind(MFA_ATTEMPTS)
            .bind(to_millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Ends a challenge (it was answered); `false` when another request ended it first.
    pub async fn finish_challenge(&self, id: &str) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query("delete from mfa_challenges where id = $1")
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        Ok(done == 1)
    }
}
