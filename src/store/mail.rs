//! The outbox (mail to send, written with the change that causes it) and single-use link
//! tokens (email verification, password reset, email change).

use time::OffsetDateTime;

use super::users::{USER_COLUMNS, UserRow};
use super::{Store, StoreError, on_pool};
use crate::clock::{from_millis, to_millis};
use crate::domain::UserId;
use crate::token::RefreshHash;

/// What a message is for; each has its templates and, for links, its token purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// A link that verifies the user's address.
    VerifyEmail,
    /// A link that sets a new password (the recipient is an address, maybe of nobody).
    ResetPassword,
    /// A link to the new address that makes it the account's.
    ChangeEmail,
    /// A notice to the old address that a change was asked for.
    EmailChanged,
    /// A notice to the old address that the change went through.
    EmailChangeCompleted,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [MailKind; 5] = [
        MailKind::VerifyEmail,
        MailKind::ResetPassword,
        MailKind::ChangeEmail,
        MailKind::EmailChanged,
        MailKind::EmailChangeCompleted,
    ];

    /// The stored name, also the templates' name.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::ResetPassword => "reset_password",
            MailKind::ChangeEmail => "change_email",
            MailKind::EmailChanged => "email_changed",
            MailKind::EmailChangeCompleted => "email_change_completed",
        }
    }

    fn parse(s: &str) -> Option<MailKind> {
        MailKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    /// Its kind.
    pub kind: MailKind,
    /// The user it concerns (`None` for a reset asked by address: found at send time).
    pub user_id: Option<UserId>,
    /// The normalised recipient address.
    pub recipient: String,
    /// What the template needs beyond the user (JSON object).
    pub data: serde_json::Value,
}

/// A message a sender has taken (leased to it for a while).
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: MailKind,
    /// The user, when known.
    pub user_id: Option<UserId>,
    /// Recipient.
    pub recipient: String,
    /// Template data.
    pub data: serde_json::Value,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: String,
    kind: String,
    user_id: Option<String>,
    recipient: String,
    data: String,
    attempts: i64,
    created_at: i64,
}

/// What a link token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Verify the address.
    VerifyEmail,
    /// Set a new password.
    ResetPassword,
    /// Move the account to a new address.
    ChangeEmail,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::ResetPassword => "reset_password",
            TokenPurpose::ChangeEmail => "change_email",
        }
    }
}

/// A link token to store (its plaintext is in the mail only).
#[derive(Debug, Clone)]
pub struct NewEmailToken {
    /// Lookup id.
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// Purpose.
    pub purpose: TokenPurpose,
    /// SHA-256 of the secret.
    pub secret_hash: RefreshHash,
    /// The address it verifies (verification, change) or was sent to (reset).
    pub email: String,
    /// The user's credentials version at issue (a reset dies with a newer password).
    pub credentials_version: i64,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

/// A stored link token.
#[derive(Debug, Clone)]
pub struct EmailTokenRecord {
    /// Lookup id.
    pub id: String,
    /// Owner.
    pub user_id: UserId,
    /// SHA-256 of the secret.
    pub secret_hash: RefreshHash,
    /// See [`NewEmailToken::email`].
    pub email: String,
    /// See [`NewEmailToken::credentials_version`].
    pub credentials_version: i64,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct EmailTokenRow {
    id: String,
    user_id: String,
    secret_hash: Vec<u8>,
    email: String,
    credentials_version: i64,
    expires_at: i64,
}

pub(super) const OUTBOX_INSERT: &str = "insert into outbox (id, kind, user_id, recipient, data, created_at, \
     next_attempt_at) values ($1, $2, $3, $4, $5, $6, $6)";

/// Binds a [`NewMail`] to [`OUTBOX_INSERT`].
macro_rules! outbox_insert {
    ($mail:expr, $now:expr) => {
        sqlx::query($crate::store::mail::OUTBOX_INSERT)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind($mail.kind.as_str())
            .bind($mail.user_id.map(|u| u.to_string()))
            .bind($mail.recipient.clone())
            .bind($mail.data.to_string())
            .bind($crate::clock::to_millis($now))
    };
}
pub(super) use outbox_insert;

/// Ends every live session of user `$1` at `$2` for reason `$3` (inside a transaction).
const REVOKE_ALL: &str = "update sessions set revoked_at = $2, revoked_reason = $3, \
     sealed_successor = null where user_id = $1 and revoked_at is null";

/// Which taken rows a sender claims: due, not taken by a live lease. PostgreSQL skips rows
/// another node is claiming at this moment.
const CLAIM_PG: &str = "update outbox set locked_until = $2, attempts = attempts + 1 \
     where id in (select id from outbox where sent_at is null and next_attempt_at <= $1 \
       and (locked_until is null or locked_until <= $1) \
       order by next_attempt_at limit $3 for update skip locked) \
     returning id, kind, user_id, recipient, data, attempts, created_at";
const CLAIM_SQLITE: &str = "update outbox set locked_until = $2, attempts = attempts + 1 \
     where id in (select id from outbox where sent_at is null and next_attempt_at <= $1 \
       and (locked_until is null or locked_until <= $1) \
       order by next_attempt_at limit $3) \
     returning id, kind, user_id, recipient, data, attempts, created_at";

impl Store {
    /// Queues messages (in one transaction).
    pub async fn enqueue_mail(
        &self,
        mails: &[NewMail],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            for mail in mails {
                outbox_insert!(mail, now).execute(&mut *tx).await?;
            }
            tx.commit().await?
        })
    }

    /// Queues an email change's messages for `user`, in one transaction with the end of
    /// every earlier change of theirs: its links stop working and its unsent messages are
    /// dropped (`superseded`), so only the newest change can ever be confirmed.
    pub async fn enqueue_email_change(
        &self,
        user: UserId,
        mails: &[NewMail],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("delete from email_tokens where user_id = $1 and purpose = $2")
                .bind(user.to_string())
                .bind(TokenPurpose::ChangeEmail.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "update outbox set sent_at = $3, dropped_reason = 'superseded', \
                 locked_until = null where user_id = $1 and kind = $2 and sent_at is null",
            )
            .bind(user.to_string())
            .bind(MailKind::ChangeEmail.as_str())
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
            for mail in mails {
                outbox_insert!(mail, now).execute(&mut *tx).await?;
            }
            tx.commit().await?
        })
    }

    /// Whether any message is due at `now` (a read: the senders' idle polls take no write
    /// lock).
    pub async fn mail_due(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        let due: Option<i32> = on_pool!(self, read, |pool| {
            sqlx::query_scalar(
                "select 1 from outbox where sent_at is null and next_attempt_at <= $1 \
                 and (locked_until is null or locked_until <= $1) limit 1",
            )
            .bind(to_millis(now))
            .fetch_optional(pool)
            .await?
        })?;
        Ok(due.is_some())
    }

    /// Takes up to `limit` due messages for `lease`: no other sender takes them until it has
    /// passed (a sender that died holding them leaves them to the next).
    pub async fn claim_mail(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let sql = if self.batcher().is_some() {
            CLAIM_SQLITE
        } else {
            CLAIM_PG
        };
        let rows: Vec<OutboxRow> = on_pool!(self, write, |pool| {
            sqlx::query_as(sql)
                .bind(to_millis(now))
                .bind(to_millis(lease_until))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let corrupt = || StoreError::Corrupt("outbox");
            out.push(OutboxRecord {
                kind: MailKind::parse(&r.kind).ok_or_else(corrupt)?,
                user_id: match r.user_id {
                    None => None,
                    Some(u) => Some(UserId::parse(&u).ok_or_else(corrupt)?),
                },
                data: serde_json::from_str(&r.data).map_err(|_| corrupt())?,
                id: r.id,
                recipient: r.recipient,
                attempts: r.attempts,
                created_at: from_millis(r.created_at),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Marks a message delivered, or dropped with `reason` (nothing to send any more).
    pub async fn mail_done(
        &self,
        id: &str,
        dropped: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "update outbox set sent_at = $2, dropped_reason = $3, locked_until = null, \
                 last_error = null where id = $1",
            )
            .bind(id)
            .bind(to_millis(now))
            .bind(dropped)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(())
    }

    /// Records a failed attempt: the message is tried again at `retry_at`.
    pub async fn mail_failed(
        &self,
        id: &str,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            sqlx::query(
                "update outbox set locked_until = null, next_attempt_at = $2, last_error = $3 \
                 where id = $1",
            )
            .bind(id)
            .bind(to_millis(retry_at))
            .bind(error)
            .execute(pool)
            .await?
            .rows_affected()
        })?;
        Ok(())
    }

    /// Messages not yet delivered.
    pub async fn pending_mail(&self) -> Result<i64, StoreError> {
        on_pool!(self, read, |pool| {
            sqlx::query_scalar("select count(*) from outbox where sent_at is null")
                .fetch_one(pool)
                .await?
        })
    }

    /// Stores a link token, deleting the user's older ones of the same purpose (they stop
    /// working).
    pub async fn issue_email_token(
        &self,
        t: &NewEmailToken,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("delete from email_tokens where user_id = $1 and purpose = $2")
                .bind(t.user_id.to_string())
                .bind(t.purpose.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "insert into email_tokens (id, user_id, purpose, secret_hash, email, \
                 credentials_version, created_at, expires_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.id)
            .bind(t.user_id.to_string())
            .bind(t.purpose.as_str())
            .bind(t.secret_hash.0.to_vec())
            .bind(&t.email)
            .bind(t.credentials_version)
            .bind(to_millis(now))
            .bind(to_millis(t.expires_at))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?
        })
    }

    /// Whether a verification link for `email`, the user's address, is live or on its way:
    /// an unexpired token, or a verification mail still in the outbox (its token is made when
    /// it is sent, so a queued mail counts as live). One statement, so a mail sent between
    /// two looks cannot be missed by both.
    pub async fn verification_pending(
        &self,
        user: UserId,
        email: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let pending: bool = on_pool!(self, read, |pool| {
            sqlx::query_scalar(
                "select exists (select 1 from email_tokens where user_id = $1 and purpose = $2                    and expires_at > $3)                  or exists (select 1 from outbox where kind = $4 and sent_at is null                    and recipient = $5 and (user_id is null or user_id = $1))",
            )
            .bind(user.to_string())
            .bind(TokenPurpose::VerifyEmail.as_str())
            .bind(to_millis(now))
            .bind(MailKind::VerifyEmail.as_str())
            .bind(email)
            .fetch_one(pool)
            .await?
        })?;
        Ok(pending)
    }

    /// The link token with this id and purpose.
    pub async fn find_email_token(
        &self,
        id: &str,
        purpose: TokenPurpose,
    ) -> Result<Option<EmailTokenRecord>, StoreError> {
        let row: Option<EmailTokenRow> = on_pool!(self, read, |pool| {
            sqlx::query_as(
                "select id, user_id, secret_hash, email, credentials_version, expires_at \
                 from email_tokens where id = $1 and purpose = $2",
            )
            .bind(id)
            .bind(purpose.as_str())
            .fetch_optional(pool)
            .await?
        })?;
        row.map(|r| {
            let corrupt = StoreError::Corrupt("email_tokens");
            Ok(EmailTokenRecord {
                user_id: UserId::parse(&r.user_id).ok_or(StoreError::Corrupt("email_tokens"))?,
                secret_hash: RefreshHash::from_bytes(&r.secret_hash).ok_or(corrupt)?,
                id: r.id,
                email: r.email,
                credentials_version: r.credentials_version,
                expires_at: from_millis(r.expires_at),
            })
        })
        .transpose()
    }

    /// Uses a verification token: deletes it and marks the address verified if it is still
    /// the user's. `None` (nothing changed) when the token was used meanwhile or the address
    /// is no longer the user's.
    pub async fn verify_email_with_token(
        &self,
        token: &EmailTokenRecord,
        now: OffsetDateTime,
    ) -> Result<Option<super::UserRecord>, StoreError> {
        self.use_token_on_user(
            token,
            "update users set email_verified = true, updated_at = $3 \
             where id = $1 and email = $2",
            now,
        )
        .await
    }

    /// In one transaction: deletes `token` (the row count makes it single-use) and runs
    /// `update` (an `UPDATE users … WHERE` on `$1` the user, `$2` the token's address, `$3`
    /// now; its `RETURNING` is added here), committing only if the token was there and the
    /// update found its row; else nothing changes and the answer is `None`.
    async fn use_token_on_user(
        &self,
        token: &EmailTokenRecord,
        update: &str,
        now: OffsetDateTime,
    ) -> Result<Option<super::UserRecord>, StoreError> {
        self.cache.forget_user(token.user_id);
        let sql = format!("{update} returning {USER_COLUMNS}");
        let user = token.user_id.to_string();
        let row: Option<UserRow> = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let used = sqlx::query("delete from email_tokens where id = $1")
                .bind(&token.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let row: Option<UserRow> = if used == 1 {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(&user)
                    .bind(&token.email)
                    .bind(to_millis(now))
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            if row.is_some() {
                tx.commit().await?
            } else {
                tx.rollback().await?
            }
            row
        })?;
        self.cache.forget_user(token.user_id);
        row.map(super::UserRecord::try_from).transpose()
    }

    /// Uses a reset token: deletes it and every other reset token of the user, sets the new
    /// password's hash if the password has not changed since the token was issued and the
    /// account still has the address the link was mailed to, and ends
    /// every session of the user, in one transaction. Returns the sessions ended, or `None`
    /// when the token was used meanwhile or the password changed (nothing changed).
    pub async fn reset_password_with_token(
        &self,
        token: &EmailTokenRecord,
        hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, StoreError> {
        self.cache.forget_user(token.user_id);
        self.cache.forget_all_sessions();
        let user = token.user_id.to_string();
        let ended = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let used = sqlx::query("delete from email_tokens where id = $1")
                .bind(&token.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let changed = used == 1
                && sqlx::query(
                    "update users set password_hash = $2, updated_at = $3, \
                     credentials_version = credentials_version + 1 \
                     where id = $1 and credentials_version = $4 and email = $5",
                )
                .bind(&user)
                .bind(hash)
                .bind(to_millis(now))
                .bind(token.credentials_version)
                .bind(&token.email)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            if changed {
                sqlx::query("delete from email_tokens where user_id = $1 and purpose = $2")
                    .bind(&user)
                    .bind(TokenPurpose::ResetPassword.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("delete from mfa_challenges where user_id = $1")
                    .bind(&user)
                    .execute(&mut *tx)
                    .await?;
                let ended = sqlx::query(REVOKE_ALL)
                    .bind(&user)
                    .bind(to_millis(now))
                    .bind("password_reset")
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Some(ended)
            } else {
                tx.rollback().await?;
                None
            }
        })?;
        self.cache.forget_user(token.user_id);
        self.cache.forget_all_sessions();
        if let Some(n) = ended {
            crate::metrics::sessions_revoked("password_reset", n);
        }
        Ok(ended)
    }

    /// Uses an email-change token: in one transaction, deletes it and moves the account to
    /// the token's address, verified, if the account is still active and its credentials
    /// are those the change was asked under (no new password, reset, disable or second
    /// factor since); every link token of the user dies (they were for the old address) and
    /// `notice` (to the old address) is queued. `None` when the token was used meanwhile or
    /// the account changed (nothing changed); [`StoreError::Conflict`] when the address was
    /// taken since (the token stays usable).
    pub async fn change_email_with_token(
        &self,
        token: &EmailTokenRecord,
        notice: impl Fn(&str) -> NewMail,
        now: OffsetDateTime,
    ) -> Result<Option<super::UserRecord>, StoreError> {
        self.cache.forget_user(token.user_id);
        let sql = format!(
            "update users set email = $2, email_verified = true, updated_at = $3 \
             where id = $1 and credentials_version = $4 and is_active = true \
             returning {USER_COLUMNS}"
        );
        let user = token.user_id.to_string();
        let notice = &notice;
        let row: Option<UserRow> = on_pool!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let used = sqlx::query("delete from email_tokens where id = $1")
                .bind(&token.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let old: Option<String> = if used == 1 {
                sqlx::query_scalar("select email from users where id = $1")
                    .bind(&user)
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                None
            };
            let row: Option<UserRow> = match &old {
                Some(_) => {
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(&user)
                        .bind(&token.email)
                        .bind(to_millis(now))
                        .bind(token.credentials_version)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            match (&row, old) {
                (Some(_), Some(old)) => {
                    sqlx::query("delete from email_tokens where user_id = $1")
                        .bind(&user)
                        .execute(&mut *tx)
                        .await?;
                    let mail = notice(&old);
                    outbox_insert!(mail, now).execute(&mut *tx).await?;
                    tx.commit().await?
                }
                _ => tx.rollback().await?,
            }
            row
        })?;
        self.cache.forget_user(token.user_id);
        row.map(super::UserRecord::try_from).transpose()
    }

    /// Marks the user's address verified (an operator's word). Returns whether the user exists.
    pub async fn set_email_verified(
        &self,
        id: UserId,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.cache.forget_user(id);
        let done = on_pool!(self, write, |pool| {
            sqlx::query("update users set email_verified = true, updated_at = $2 where id = $1")
                .bind(id.to_string())
                .bind(to_millis(now))
                .execute(pool)
                .await?
                .rows_affected()
        })?;
        self.cache.forget_user(id);
        Ok(done == 1)
    }
}
