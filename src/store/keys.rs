//! The `signing_keys` aggregate.

use super::{Store, StoreError, on_pool};
use crate::clock::{from_millis, to_millis};
use crate::envelope::SEALED_PREFIX;
use crate::token::StoredKey;
use secrecy::{ExposeSecret as _, SecretString};

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    algorithm: String,
    private_key: String,
    created_at: i64,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        StoredKey {
            kid: r.kid,
            algorithm: r.algorithm,
            private_pem: SecretString::from(r.private_key),
            created_at: from_millis(r.created_at),
        }
    }
}

impl Store {
    /// The active signing key for `algorithm`, if there is one.
    pub async fn active_key(&self, algorithm: &str) -> Result<Option<StoredKey>, StoreError> {
        let row: Option<KeyRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select kid, algorithm, private_key, created_at from signing_keys \
                 where algorithm = $1 and state = 'active'",
            )
            .bind(algorithm)
            .fetch_optional(pool)
            .await?
        })?;
        Ok(row.map(StoredKey::from))
    }

    /// Stores `key` as the active key unless another is already active for its algorithm.
    /// Returns whether it was stored; either way, read [`Store::active_key`] afterwards.
    pub async fn insert_active_key_if_absent(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "insert into signing_keys (kid, algorithm, private_key, state, created_at) \
                 values ($1, $2, $3, 'active', $4) on conflict do nothing",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(key.private_pem.expose_secret())
            .bind(to_millis(key.created_at))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// The shared secret `name`: `candidate` if this call stored it first, else the one stored
    /// before (so that every node, racing or not, ends up with the same bytes).
    pub async fn server_secret(
        &self,
        name: &str,
        candidate: &[u8],
        now: time::OffsetDateTime,
    ) -> Result<Vec<u8>, StoreError> {
        let secret: Vec<u8> = on_pool!(self, write, |pool| {
            sqlx::query(
                "insert into server_secrets (name, secret, created_at) values ($1, $2, $3) \
                 on conflict do nothing",
            )
            .bind(name)
            .bind(candidate)
            .bind(to_millis(now))
            .execute(pool)
            .await?;
            sqlx::query_scalar("select secret from server_secrets where name = $1")
                .bind(name)
                .fetch_one(pool)
                .await?
        })?;
        Ok(secret)
    }

    /// Keys that still verify but no longer sign (retired) or do not sign yet (next).
    pub async fn verifying_keys(&self, algorithm: &str) -> Result<Vec<StoredKey>, StoreError> {
        let rows: Vec<KeyRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select kid, algorithm, private_key, created_at from signing_keys \
                 where algorithm = $1 and state in ('next', 'retired') order by created_at",
            )
            .bind(algorithm)
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows.into_iter().map(StoredKey::from).collect())
    }

    /// Every signing key with its state (`active`, `next`, `retired`), oldest first.
    pub async fn all_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows: Vec<(String, String, String, i64, bool)> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select kid, algorithm, state, created_at, \
                 substr(private_key, 1, {len}) = '{SEALED_PREFIX}' \
                 from signing_keys order by created_at, kid",
                len = SEALED_PREFIX.len()
            )))
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|(kid, algorithm, state, created_at, encrypted)| KeyInfo {
                kid,
                algorithm,
                state,
                created_at: from_millis(created_at),
                encrypted,
            })
            .collect())
    }

    /// Every key's id and private part as stored (sealed or plain), for re-sealing.
    pub async fn stored_private_keys(&self) -> Result<Vec<(String, SecretString)>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, write, |pool| {
            sqlx::query_as("select kid, private_key from signing_keys order by kid")
                .fetch_all(pool)
                .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|(kid, text)| (kid, SecretString::from(text)))
            .collect())
    }

    /// Replaces key `kid`'s private part `old` with `new` (the same key, sealed anew); a node
    /// that did it first wins and this returns `false`. On SQLite the old text is overwritten
    /// in the file (`secure_delete`) and the write-ahead log truncated, so that no copy of a
    /// plain key stays on disk.
    pub async fn reseal_key(
        &self,
        kid: &str,
        old: &SecretString,
        new: &str,
    ) -> Result<bool, StoreError> {
        const UPDATE: &str =
            "update signing_keys set private_key = $1 where kid = $2 and private_key = $3";
        let done = match &self.backend {
            super::Backend::Sqlite { writer, .. } => {
                let mut conn = writer.acquire().await?;
                sqlx::query("pragma secure_delete = on")
                    .execute(&mut *conn)
                    .await?;
                let done = sqlx::query(UPDATE)
                    .bind(new)
                    .bind(kid)
                    .bind(old.expose_secret())
                    .execute(&mut *conn)
                    .await;
                let _ = sqlx::query("pragma secure_delete = off")
                    .execute(&mut *conn)
                    .await;
                let done = done?.rows_affected();
                sqlx::query("pragma wal_checkpoint(truncate)")
                    .execute(&mut *conn)
                    .await?;
                done
            }
            super::Backend::Postgres(pool) => sqlx::query(UPDATE)
                .bind(new)
                .bind(kid)
                .bind(old.expose_secret())
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(done == 1)
    }
}

/// A signing key's public description.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// Algorithm.
    pub algorithm: String,
    /// `active`, `next` or `retired`.
    pub state: String,
    /// Creation time.
    pub created_at: time::OffsetDateTime,
    /// Whether the private part is sealed under a key encryption key.
    pub encrypted: bool,
}
