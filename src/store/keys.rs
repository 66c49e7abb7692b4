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
    /// The keys in use for `algorithm` with their states (`next`, `active`, `retiring`), read
    /// in one statement so that the set is consistent.
    pub async fn live_keys(&self, algorithm: &str) -> Result<Vec<(String, StoredKey)>, StoreError> {
        let rows: Vec<(String, String, String, String, i64)> = on_pool!(self, write, |pool| {
            sqlx::query_as(
                "select state, kid, algorithm, private_key, created_at from signing_keys \
                 where algorithm = $1 and state in ('next', 'active', 'retiring') \
                 order by created_at, kid",
            )
            .bind(algorithm)
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows
            .into_iter()
            .map(|(state, kid, algorithm, private_key, created_at)| {
                let key = StoredKey::from(KeyRow {
                    kid,
                    algorithm,
                    private_key,
                    created_at,
                });
                (state, key)
            })
            .collect())
    }

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
                "insert into signing_keys (kid, algorithm, private_key, state, created_at, \
                 activated_at) values ($1, $2, $3, 'active', $4, $4) on conflict do nothing",
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

    /// Every signing key with its state and the times of its transitions, oldest first.
    pub async fn all_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows: Vec<KeyInfoRow> = on_pool!(self, write, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "select kid, algorithm, state, created_at, activate_at, activated_at, \
                 retiring_at, retired_at, revoked_at, \
                 substr(private_key, 1, {len}) = '{SEALED_PREFIX}' as encrypted \
                 from signing_keys order by created_at, kid",
                len = SEALED_PREFIX.len()
            )))
            .fetch_all(pool)
            .await?
        })?;
        Ok(rows.into_iter().map(KeyInfo::from).collect())
    }

    /// The `(kid, state)` of the keys in use (`next`, `active`, `retiring`): what a node
    /// compares with its key ring to know whether to load it again.
    pub async fn key_states(&self, algorithm: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(on_pool!(self, write, |pool| {
            sqlx::query_as(
                "select kid, state from signing_keys where algorithm = $1 \
                 and state in ('next', 'active', 'retiring') order by kid",
            )
            .bind(algorithm)
            .fetch_all(pool)
            .await?
        })?)
    }

    /// Stores `key` as the next key, to become active at `activate_at`, unless a next key
    /// exists already for its algorithm (then `false`).
    pub async fn insert_next_key(
        &self,
        key: &StoredKey,
        activate_at: time::OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "insert into signing_keys (kid, algorithm, private_key, state, created_at, \
                 activate_at) values ($1, $2, $3, 'next', $4, $5) on conflict do nothing",
            )
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(key.private_pem.expose_secret())
            .bind(to_millis(key.created_at))
            .bind(to_millis(activate_at))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Makes the transitions that are due at `now` for `algorithm`: a next key whose
    /// `activate_at` has come becomes active and the active one retiring; retiring keys that
    /// stopped signing `retire_after` ago or more are retired (private part erased). Any
    /// number of nodes may run it at once: each transition happens once. Whether anything
    /// changed.
    pub async fn advance_keys(
        &self,
        algorithm: &str,
        now: time::OffsetDateTime,
        retire_after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let now_ms = to_millis(now);
        let retire_before =
            now_ms.saturating_sub(i64::try_from(retire_after.as_millis()).unwrap_or(i64::MAX));
        let changed = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            // A write first: on SQLite the transaction takes the write lock at once.
            let retiring = sqlx::query(
                "update signing_keys set state = 'retiring', retiring_at = $2 \
                 where algorithm = $1 and state = 'active' and exists (select 1 from \
                 signing_keys n where n.algorithm = $1 and n.state = 'next' \
                 and n.activate_at <= $2)",
            )
            .bind(algorithm)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let activated = sqlx::query(
                "update signing_keys set state = 'active', activated_at = $2 \
                 where algorithm = $1 and state = 'next' and activate_at <= $2 \
                 and not exists (select 1 from signing_keys a where a.algorithm = $1 \
                 and a.state = 'active')",
            )
            .bind(algorithm)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let retired = sqlx::query(
                "update signing_keys set state = 'retired', retired_at = $2, private_key = '' \
                 where algorithm = $1 and state = 'retiring' and retiring_at <= $3",
            )
            .bind(algorithm)
            .bind(now_ms)
            .bind(retire_before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            retiring + activated + retired > 0
        })?;
        Ok(changed)
    }

    /// Revokes key `kid` at once: unpublished, no longer verifying, private part erased. If it
    /// was the active key, the next key (already published) becomes active, or else
    /// `replacement` (the caller passes one for a key that is, or may become, active). The
    /// state it was in, or `None` if it was not in use.
    pub async fn revoke_key(
        &self,
        kid: &str,
        now: time::OffsetDateTime,
        replacement: Option<&StoredKey>,
    ) -> Result<Option<String>, StoreError> {
        let now_ms = to_millis(now);
        let was = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let found: Option<(String, String)> = sqlx::query_as(
                "select state, algorithm from signing_keys where kid = $1 \
                 and state in ('next', 'active', 'retiring')",
            )
            .bind(kid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((state, algorithm)) = &found {
                sqlx::query(
                    "update signing_keys set state = 'revoked', revoked_at = $2, \
                     private_key = '' where kid = $1",
                )
                .bind(kid)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if state == "active" {
                    let promoted = sqlx::query(
                        "update signing_keys set state = 'active', activated_at = $2 \
                         where algorithm = $1 and state = 'next'",
                    )
                    .bind(algorithm)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if let (0, Some(replacement)) = (promoted, replacement) {
                        sqlx::query(
                            "insert into signing_keys (kid, algorithm, private_key, state, \
                             created_at, activated_at) values ($1, $2, $3, 'active', $4, $4)",
                        )
                        .bind(&replacement.kid)
                        .bind(&replacement.algorithm)
                        .bind(replacement.private_pem.expose_secret())
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            found.map(|(state, _)| state)
        })?;
        Ok(was)
    }

    /// Every key's id and private part as stored (sealed or plain), for re-sealing.
    pub async fn stored_private_keys(&self) -> Result<Vec<(String, SecretString)>, StoreError> {
        let rows: Vec<(String, String)> = on_pool!(self, write, |pool| {
            sqlx::query_as(
                "select kid, private_key from signing_keys where private_key <> '' order by kid",
            )
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
    /// `next`, `active`, `retiring`, `retired` or `revoked`.
    pub state: String,
    /// Creation time.
    pub created_at: time::OffsetDateTime,
    /// A next key: when it becomes active.
    pub activate_at: Option<time::OffsetDateTime>,
    /// When it started signing.
    pub activated_at: Option<time::OffsetDateTime>,
    /// When it stopped signing.
    pub retiring_at: Option<time::OffsetDateTime>,
    /// When it was retired (unpublished, private part erased).
    pub retired_at: Option<time::OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<time::OffsetDateTime>,
    /// Whether the private part is sealed under a key encryption key.
    pub encrypted: bool,
}

#[derive(sqlx::FromRow)]
struct KeyInfoRow {
    kid: String,
    algorithm: String,
    state: String,
    created_at: i64,
    activate_at: Option<i64>,
    activated_at: Option<i64>,
    retiring_at: Option<i64>,
    retired_at: Option<i64>,
    revoked_at: Option<i64>,
    encrypted: bool,
}

impl From<KeyInfoRow> for KeyInfo {
    fn from(r: KeyInfoRow) -> Self {
        KeyInfo {
            kid: r.kid,
            algorithm: r.algorithm,
            state: r.state,
            created_at: from_millis(r.created_at),
            activate_at: r.activate_at.map(from_millis),
            activated_at: r.activated_at.map(from_millis),
            retiring_at: r.retiring_at.map(from_millis),
            retired_at: r.retired_at.map(from_millis),
            revoked_at: r.revoked_at.map(from_millis),
            encrypted: r.encrypted,
        }
    }
}
