//! The `users` aggregate.

use std::fmt;

use time::OffsetDateTime;

use super::{Store, StoreError, json_list, on_pool, to_json_list};
use crate::clock::{from_millis, to_millis};
use crate::domain::{Email, UserId};

/// A user as the rest of the server sees it: never with a password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Normalised email.
    pub email: String,
    /// Normalised username.
    pub username: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Permissions.
    pub permissions: Vec<String>,
    /// Whether the account may log in.
    pub is_active: bool,
    /// Whether the address was verified (a link followed, or an operator's word).
    pub email_verified: bool,
    /// Whether two-factor authentication is on.
    pub mfa_enabled: bool,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A stored password hash and the user's credentials version read with it. The hash is
/// opaque outside the store: only the hasher reads it, through [`StoredHash::phc`], and it
/// never prints.
#[derive(Clone)]
pub struct StoredHash {
    phc: String,
    version: i64,
}

impl StoredHash {
    /// The PHC string, for the password hasher.
    pub fn phc(&self) -> &str {
        &self.phc
    }

    /// The user's credentials version when this hash was read: a new password or a disable
    /// bumps it, and a session is opened only under the version its login checked
    /// ([`super::NewSession::credentials_version`]).
    pub fn version(&self) -> i64 {
        self.version
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredHash([redacted])")
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Normalised email.
    pub email: Email,
    /// Normalised username.
    pub username: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// PHC hash of the password.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Permissions.
    pub permissions: Vec<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    email: String,
    username: Option<String>,
    name: Option<String>,
    roles: String,
    permissions: String,
    is_active: bool,
    email_verified: bool,
    mfa_enabled: bool,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
    credentials_version: i64,
}

#[derive(sqlx::FromRow)]
struct LiveUserRow {
    #[sqlx(flatten)]
    user: UserRow,
    session_expires_at: Option<i64>,
}

pub(super) const USER_COLUMNS: &str = "id, email, username, name, roles, permissions, is_active, \
     email_verified, mfa_enabled, created_at, updated_at";

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(UserRecord {
            id: UserId::parse(&r.id).ok_or(StoreError::Corrupt("users"))?,
            email: r.email,
            username: r.username,
            name: r.name,
            roles: json_list(&r.roles, "users")?,
            permissions: json_list(&r.permissions, "users")?,
            is_active: r.is_active,
            email_verified: r.email_verified,
            mfa_enabled: r.mfa_enabled,
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        })
    }
}

/// Locks every active holder of a role (`$1`, a [`role_pattern`]) until the transaction ends,
/// in one order (no deadlock between two such writes). PostgreSQL only: under READ COMMITTED
/// two writes that each check "someone else still holds the role" would otherwise both pass;
/// after this lock the second one's next statement sees the first one's outcome. SQLite needs
/// none: a writing statement reads under the database's single write lock.
const LOCK_HOLDERS: &str =
    "select id from users where is_active = true and roles like $1 order by id for update";

/// Whether the user `$1` exists (tells a guarded write's refusal from a missing user).
const USER_EXISTS: &str = "select count(*) from users where id = $1";

/// "Another active user holds the role": the condition of a guarded write, on `$1` (the
/// target's id) and `pattern`, the placeholder of the [`role_pattern`].
fn other_holder(pattern: &str) -> String {
    format!(
        "exists (select 1 from users o \
         where o.id <> $1 and o.is_active = true and o.roles like {pattern})"
    )
}

/// The `like` pattern matching a JSON list of names that holds `role`. Names are validated
/// (no quotes: [`crate::domain::parse_names`]), so the quoted name matches one whole element;
/// `role` itself must hold no `%` or `_` (the admin role does not).
fn role_pattern(role: &str) -> String {
    format!("%\"{role}\"%")
}

impl Store {
    /// Inserts a user; [`StoreError::Conflict`] names the taken column.
    pub async fn insert_user(
        &self,
        new: NewUser,
        now: OffsetDateTime,
    ) -> Result<UserRecord, StoreError> {
        self.insert_user_with_mail(new, now, None).await
    }

    /// Inserts a user and, in the same transaction, queues `mail` about them (its `user_id`
    /// is set to the new user's).
    pub async fn insert_user_with_mail(
        &self,
        new: NewUser,
        now: OffsetDateTime,
        mail: Option<super::NewMail>,
    ) -> Result<UserRecord, StoreError> {
        let id = UserId::new();
        let sql = format!(
            "insert into users (id, email, username, name, password_hash, roles, permissions, \
             is_active, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, true, $8, $8) \
             returning {USER_COLUMNS}"
        );
        let mail = mail.map(|m| super::NewMail {
            user_id: Some(id),
            ..m
        });
        let row: UserRow = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let row: UserRow = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .bind(new.email.as_str())
                .bind(&new.username)
                .bind(&new.name)
                .bind(&new.password_hash)
                .bind(to_json_list(&new.roles))
                .bind(to_json_list(&new.permissions))
                .bind(to_millis(now))
                .fetch_one(&mut *tx)
                .await?;
            if let Some(mail) = &mail {
                super::mail::outbox_insert!(mail, now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            row
        })?;
        row.try_into()
    }

    /// The user of session `session` if the session is live at `now` and belongs to `user`,
    /// in one read: from the cache when both answers are fresh there, else one query that
    /// fills both (what [`Store::session_is_live`] then [`Store::find_user`] would answer, in
    /// one round trip instead of two).
    pub async fn live_session_user(
        &self,
        session: crate::domain::SessionId,
        user: UserId,
        now: OffsetDateTime,
    ) -> Result<Option<UserRecord>, StoreError> {
        if self.cache.session_live(session, user, now) == Some(true) {
            return self.find_user(user).await;
        }
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let columns: Vec<String> = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
            format!(
                "select {}, s.expires_at as session_expires_at from sessions s \
                 join users u on u.id = s.user_id where s.id = $1 and s.user_id = $2 \
                 and s.revoked_at is null and (s.expires_at is null or s.expires_at > $3)",
                columns.join(", ")
            )
        });
        let (sessions_seen, users_seen) = (self.cache.session_epoch(), self.cache.user_epoch());
        let row: Option<LiveUserRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
                .bind(session.to_string())
                .bind(user.to_string())
                .bind(to_millis(now))
                .fetch_optional(pool)
                .await?
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at = row.session_expires_at.map(from_millis);
        let found = UserRecord::try_from(row.user)?;
        self.cache
            .remember_live(sessions_seen, session, user, expires_at);
        self.cache.remember_user(users_seen, &found);
        Ok(Some(found))
    }

    /// The user with this id (from the short-lived cache when fresh).
    pub async fn find_user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        if let Some(user) = self.cache.user(id) {
            return Ok(Some(user));
        }
        let seen = self.cache.user_epoch();
        let sql = format!("select {USER_COLUMNS} from users where id = $1");
        let row: Option<UserRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        })?;
        let user = row.map(UserRecord::try_from).transpose()?;
        #[cfg(test)]
        self.cache.hold.pass().await;
        if let Some(u) = &user {
            self.cache.remember_user(seen, u);
        }
        Ok(user)
    }

    /// The user whose normalised email or username is `login`, with the password hash.
    pub async fn find_credentials(
        &self,
        login: &str,
    ) -> Result<Option<(UserRecord, StoredHash)>, StoreError> {
        let column = if login.contains('@') {
            "email"
        } else {
            "username"
        };
        let sql = format!(
            "select {USER_COLUMNS}, password_hash, credentials_version from users \
             where {column} = $1"
        );
        let row: Option<CredentialRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(login)
                .fetch_optional(pool)
                .await?
        })?;
        row.map(|r| {
            let hash = StoredHash {
                phc: r.password_hash,
                version: r.credentials_version,
            };
            Ok((r.user.try_into()?, hash))
        })
        .transpose()
    }

    /// The password hash of the user with this id.
    pub async fn password_hash(&self, id: UserId) -> Result<Option<StoredHash>, StoreError> {
        let hash: Option<(String, i64)> = on_pool!(self, read, |pool| {
            sqlx::query_as("select password_hash, credentials_version from users where id = $1")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        })?;
        Ok(hash.map(|(phc, version)| StoredHash { phc, version }))
    }

    /// Sets the profile fields that are `Some` (an inner `None` clears the field).
    pub async fn update_profile(
        &self,
        id: UserId,
        name: Option<Option<String>>,
        username: Option<Option<String>>,
        now: OffsetDateTime,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.cache.forget_user(id);
        // `case when $n then new else old end` keeps one statement for every combination.
        let sql = format!(
            "update users set \
               name = case when $2 then $3 else name end, \
               username = case when $4 then $5 else username end, \
               updated_at = $6 \
             where id = $1 returning {USER_COLUMNS}"
        );
        let row: Option<UserRow> = on_pool!(self, write, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .bind(name.is_some())
                .bind(name.clone().flatten())
                .bind(username.is_some())
                .bind(username.clone().flatten())
                .bind(to_millis(now))
                .fetch_optional(pool)
                .await?
        })?;
        self.cache.forget_user(id);
        row.map(UserRecord::try_from).transpose()
    }

    /// Sets a new password's hash and bumps the credentials version, so that no login that
    /// checked the old password opens a session after this.
    pub async fn set_password_hash(
        &self,
        id: UserId,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update users set password_hash = $2, updated_at = $3, \
                 credentials_version = credentials_version + 1 where id = $1",
            )
            .bind(id.to_string())
            .bind(hash)
            .bind(to_millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Replaces the hash of the same password (new parameters) if `old` is still the stored
    /// one: a login's upgrade never overwrites a password changed meanwhile. The credentials
    /// version stays. Returns whether it replaced it.
    pub async fn upgrade_password_hash(
        &self,
        id: UserId,
        old: &StoredHash,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update users set password_hash = $3 \
                 where id = $1 and password_hash = $2 and credentials_version = $4",
            )
            .bind(id.to_string())
            .bind(old.phc())
            .bind(hash)
            .bind(old.version())
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(done == 1)
    }

    /// Enables or disables the account (disabling bumps the credentials version, see
    /// [`Store::set_password_hash`]). Returns whether the user exists.
    pub async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.cache.forget_user(id);
        let done = on_pool!(self, write, |pool| {
            sqlx::query(
                "update users set is_active = $2, updated_at = $3, \
                 credentials_version = credentials_version + (case when $2 then 0 else 1 end) \
                 where id = $1",
            )
            .bind(id.to_string())
            .bind(active)
            .bind(to_millis(now))
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        self.cache.forget_user(id);
        Ok(done == 1)
    }

    /// Users ordered by id (creation order), after `after`, optionally with this exact
    /// (normalised) email; at most `limit`.
    pub async fn list_users(
        &self,
        email: Option<&str>,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!(
            "select {USER_COLUMNS} from users where ($1 is null or email = $1) \
             and ($2 is null or id > $2) order by id limit $3"
        );
        let rows: Vec<UserRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(email)
                .bind(after.map(|a| a.to_string()))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        })?;
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    /// The user with this normalised email or username.
    pub async fn find_user_by_login(&self, login: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.find_credentials(login).await?.map(|(u, _)| u))
    }

    /// Applies an administrator's change; `None` fields are left alone (disabling bumps the
    /// credentials version, see [`Store::set_password_hash`]). Returns `None` when the user
    /// does not exist.
    ///
    /// With `keep_role`, the change is made only if afterwards some active user still holds
    /// that role (this one or another); otherwise [`StoreError::LastHolder`] and nothing
    /// changed. The rule is decided inside the write (with a lock on PostgreSQL), so two
    /// concurrent changes cannot each count on the other's target.
    pub async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        now: OffsetDateTime,
        keep_role: Option<&str>,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.cache.forget_user(id);
        let sql = format!(
            "update users set \
               roles = case when $2 then $3 else roles end, \
               permissions = case when $4 then $5 else permissions end, \
               is_active = case when $6 then $7 else is_active end, \
               name = case when $8 then $9 else name end, \
               updated_at = $10, \
               credentials_version = credentials_version \
                 + (case when $6 and not $7 then 1 else 0 end) \
             where id = $1 and ($11 = '' \
               or ((case when $6 then $7 else is_active end) = true \
                   and (case when $2 then $3 else roles end) like $11) \
               or {other}) \
             returning {USER_COLUMNS}",
            other = other_holder("$11")
        );
        let pattern = keep_role.map(role_pattern).unwrap_or_default();
        let lock = self.batcher().is_none() && !pattern.is_empty();
        let (row, refused): (Option<UserRow>, bool) = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            if lock {
                sqlx::query(LOCK_HOLDERS)
                    .bind(&pattern)
                    .execute(&mut *tx)
                    .await?;
            }
            let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .bind(change.roles.is_some())
                .bind(change.roles.as_deref().map(to_json_list))
                .bind(change.permissions.is_some())
                .bind(change.permissions.as_deref().map(to_json_list))
                .bind(change.is_active.is_some())
                .bind(change.is_active.unwrap_or(true))
                .bind(change.name.is_some())
                .bind(change.name.clone().flatten())
                .bind(to_millis(now))
                .bind(&pattern)
                .fetch_optional(&mut *tx)
                .await?;
            let refused = row.is_none()
                && !pattern.is_empty()
                && sqlx::query_scalar::<_, i64>(USER_EXISTS)
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await?
                    > 0;
            tx.commit().await?;
            (row, refused)
        })?;
        self.cache.forget_user(id);
        if refused {
            return Err(StoreError::LastHolder);
        }
        row.map(UserRecord::try_from).transpose()
    }

    /// Deletes a user and, by cascade, their sessions. Audit events stay. Returns whether the
    /// user existed. `keep_role` as for [`Store::update_user`].
    pub async fn delete_user(
        &self,
        id: UserId,
        keep_role: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.cache.forget_user(id);
        self.cache.forget_all_sessions();
        let sql = format!(
            "delete from users where id = $1 and ($2 = '' \
               or not (is_active = true and roles like $2) or {other})",
            other = other_holder("$2")
        );
        let pattern = keep_role.map(role_pattern).unwrap_or_default();
        let lock = self.batcher().is_none() && !pattern.is_empty();
        let (deleted, refused) = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            if lock {
                sqlx::query(LOCK_HOLDERS)
                    .bind(&pattern)
                    .execute(&mut *tx)
                    .await?;
            }
            let deleted = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .bind(&pattern)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            let refused = !deleted
                && !pattern.is_empty()
                && sqlx::query_scalar::<_, i64>(USER_EXISTS)
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await?
                    > 0;
            tx.commit().await?;
            (deleted, refused)
        })?;
        self.cache.forget_user(id);
        self.cache.forget_all_sessions();
        if refused {
            return Err(StoreError::LastHolder);
        }
        Ok(deleted)
    }

    /// Inserts a user with an existing password hash unless the email is taken.
    /// Returns `None` when a user with that email already exists (re-running an import).
    pub async fn insert_imported_user(
        &self,
        new: NewUser,
        active: bool,
        now: OffsetDateTime,
    ) -> Result<Option<UserRecord>, StoreError> {
        let id = UserId::new();
        let sql = format!(
            "insert into users (id, email, username, name, password_hash, roles, permissions, \
             is_active, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             on conflict (email) do nothing returning {USER_COLUMNS}"
        );
        let row: Option<UserRow> = on_pool!(self, write, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(id.to_string())
                .bind(new.email.as_str())
                .bind(&new.username)
                .bind(&new.name)
                .bind(&new.password_hash)
                .bind(to_json_list(&new.roles))
                .bind(to_json_list(&new.permissions))
                .bind(active)
                .bind(to_millis(now))
                .fetch_optional(pool)
                .await?
        })?;
        row.map(UserRecord::try_from).transpose()
    }
}

/// An administrator's change to a user: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New permissions.
    pub permissions: Option<Vec<String>>,
    /// Enable or disable.
    pub is_active: Option<bool>,
    /// New display name (`Some(None)` clears it).
    pub name: Option<Option<String>>,
}
