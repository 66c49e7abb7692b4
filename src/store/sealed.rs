//! Values sealed under the key-encryption key beside the signing keys (`keys.rs`): TOTP seeds
//! (`totp.secret`, text) and the shared server secrets (`server_secrets.secret`, bytes whose
//! sealed form is the envelope's text). Listed for `keygate keys rekey` and for the start-up
//! check, and replaced only where the stored value is still the one that was read.

use secrecy::{ExposeSecret as _, SecretString};

use super::{Store, StoreError, on_pool};
use crate::domain::UserId;
use crate::envelope::SEALED_PREFIX;

/// The TOTP seeds sealed under one KEK (or plain): how many, and one of them to test-open.
#[derive(Debug, Clone)]
pub struct SealedGroup {
    /// The KEK id, `None` for plain values.
    pub kek: Option<String>,
    /// How many values.
    pub count: i64,
    /// One value's owner and stored form.
    pub sample: (UserId, SecretString),
}

impl Store {
    /// The TOTP seeds grouped by the KEK that sealed them (plain ones as `None`).
    pub async fn totp_seal_groups(&self) -> Result<Vec<SealedGroup>, StoreError> {
        let sql = format!(
            "select case when substr(secret, 1, {len}) = '{SEALED_PREFIX}' \
               then substr(secret, {start}, 16) else '' end as kek, \
               count(*), min(user_id) from totp group by 1 order by 1",
            len = SEALED_PREFIX.len(),
            start = SEALED_PREFIX.len() + 1,
        );
        let groups: Vec<(String, i64, String)> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .fetch_all(pool)
                .await?
        })?;
        let mut out = Vec::with_capacity(groups.len());
        for (kek, count, user) in groups {
            let id = UserId::parse(&user).ok_or(StoreError::Corrupt("totp"))?;
            let secret: String = on_pool!(self, read, |pool| {
                sqlx::query_scalar("select secret from totp where user_id = $1")
                    .bind(&user)
                    .fetch_one(pool)
                    .await?
            })?;
            out.push(SealedGroup {
                kek: (!kek.is_empty()).then_some(kek),
                count,
                sample: (id, SecretString::from(secret)),
            });
        }
        Ok(out)
    }

    /// Up to `limit` TOTP seeds as stored, of users after `after`, in user order; with
    /// `plain_only`, only those not sealed.
    pub async fn totp_seeds(
        &self,
        after: Option<UserId>,
        limit: u32,
        plain_only: bool,
    ) -> Result<Vec<(UserId, SecretString)>, StoreError> {
        let sql = format!(
            "select user_id, secret from totp where ($1 is null or user_id > $1) \
             and (not $2 or substr(secret, 1, {len}) <> '{SEALED_PREFIX}') \
             order by user_id limit $3",
            len = SEALED_PREFIX.len()
        );
        let rows: Vec<(String, String)> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(after.map(|a| a.to_string()))
                .bind(plain_only)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        })?;
        rows.into_iter()
            .map(|(user, secret)| {
                let id = UserId::parse(&user).ok_or(StoreError::Corrupt("totp"))?;
                Ok((id, SecretString::from(secret)))
            })
            .collect()
    }

    /// Replaces `user`'s TOTP seed `old` by `new` (the same seed, sealed anew); `false` when
    /// it changed meanwhile (re-enrolled, or sealed by another node).
    pub async fn reseal_totp(
        &self,
        user: UserId,
        old: &SecretString,
        new: &str,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query("update totp set secret = $3 where user_id = $1 and secret = $2")
                .bind(user.to_string())
                .bind(old.expose_secret())
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// The server secret `name` as stored, if there is one.
    pub async fn stored_server_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        on_pool!(self, read, |pool| {
            sqlx::query_scalar("select secret from server_secrets where name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        })
    }

    /// Replaces server secret `name`'s stored form `old` by `new`; `false` when it changed
    /// meanwhile.
    pub async fn reseal_server_secret(
        &self,
        name: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query("update server_secrets set secret = $3 where name = $1 and secret = $2")
                .bind(name)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        Ok(done == 1)
    }
}
