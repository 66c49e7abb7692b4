//! Email verification, password reset and email change, and the outbox's sender.
//!
//! A request that causes mail writes an outbox row in the transaction of its change and
//! returns; the sender ([`Auth::deliver_due_mail`], run by every node) takes due rows under a
//! lease, makes the link token of each (so no token is stored in plain text, not even in the
//! outbox), renders it and hands it to SMTP. A failed attempt is retried with back-off; a
//! message older than [`GIVE_UP_AFTER`] is dropped.

use std::time::Duration;

use time::OffsetDateTime;

use super::events::Event;
use super::{Auth, AuthError, FieldErrors, Principal};
use crate::domain::{ClientInfo, Email, FieldError, Password};
use crate::limits::Action;
use crate::mail::{Context, in_words};
use crate::store::{
    EmailTokenRecord, MailKind, NewEmailToken, NewMail, OutboxRecord, StoreError, TokenPurpose,
    UserRecord,
};
use crate::token::LinkToken;

/// How long a sender holds the messages it took before another may take them.
pub const OUTBOX_LEASE: Duration = Duration::from_secs(120);
/// How often each node looks for due mail (it is also woken at once by its own requests).
pub const OUTBOX_POLL: Duration = Duration::from_secs(2);
/// A message still undelivered after this is dropped (its link would be stale anyway).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Messages a sender takes at once.
const BATCH: u32 = 20;

/// Retry delay after `attempts` failed attempts: 5 s, 10 s, 20 s… at most 10 minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 8) - 1).unwrap_or(0);
    Duration::from_secs(5u64 << exp).min(Duration::from_secs(600))
}

fn after(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    now + time::Duration::try_from(d).unwrap_or(time::Duration::ZERO)
}

/// A link token from the request body: any text that is not one of ours is simply invalid.
fn presented_token(token: Option<String>) -> Result<LinkToken, AuthError> {
    match token.as_deref() {
        None => {
            let mut errors = FieldErrors::new();
            errors.insert("token", FieldError::Required.to_string());
            Err(AuthError::Validation(errors))
        }
        Some(t) => LinkToken::parse(t.trim()).ok_or(AuthError::InvalidCode),
    }
}

impl Auth {
    /// The mailer, or 503 "email is not configured".
    fn require_mail(&self) -> Result<(), AuthError> {
        if self.mailer.is_some() {
            Ok(())
        } else {
            Err(AuthError::EmailNotConfigured)
        }
    }

    /// The verification mail a new account gets, when mail is configured.
    pub(super) fn verification_mail(&self, email: &str) -> Option<NewMail> {
        self.mailer.as_ref()?;
        Some(NewMail {
            kind: MailKind::VerifyEmail,
            user_id: None,
            recipient: email.to_owned(),
            data: serde_json::json!({}),
        })
    }

    /// Wakes this node's sender (mail was queued).
    pub(super) fn wake_sender(&self) {
        self.mail_wake.notify_one();
    }

    /// The stored link token that `token` presents, if it is live: unknown, wrong secret,
    /// used, superseded and expired are all the same [`AuthError::InvalidCode`].
    async fn live_email_token(
        &self,
        token: &LinkToken,
        purpose: TokenPurpose,
    ) -> Result<EmailTokenRecord, AuthError> {
        let found = self.store.find_email_token(&token.id(), purpose).await?;
        match found {
            Some(t) if t.secret_hash.matches(&token.hash()) && t.expires_at > self.now() => Ok(t),
            _ => Err(AuthError::InvalidCode),
        }
    }

    /// `POST /auth/email/verify`: the address of the token's account is verified.
    pub async fn verify_email(
        &self,
        token: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let token = presented_token(token)?;
        let stored = self
            .live_email_token(&token, TokenPurpose::VerifyEmail)
            .await?;
        let Some(user) = self
            .store
            .verify_email_with_token(&stored, self.now())
            .await?
        else {
            return Err(AuthError::InvalidCode);
        };
        self.emit(Event::success("email_verified", client).user(user.id))
            .await;
        Ok(())
    }

    /// `POST /auth/email/verify/resend`: a new link (the older ones stop working when it is
    /// made). An address already verified gets nothing, and the same 202.
    pub async fn resend_verification(
        &self,
        who: &Principal,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let me = self.me(who).await?;
        if me.email_verified {
            return Ok(());
        }
        self.queue_verification(&me).await
    }

    /// Queues a verification mail for `user` (limited per address).
    pub(super) async fn queue_verification(&self, user: &UserRecord) -> Result<(), AuthError> {
        self.limits
            .check_address(&user.email)
            .await
            .map_err(AuthError::RateLimited)?;
        let mail = NewMail {
            kind: MailKind::VerifyEmail,
            user_id: Some(user.id),
            recipient: user.email.clone(),
            data: serde_json::json!({}),
        };
        self.store.enqueue_mail(&[mail], self.now()).await?;
        self.wake_sender();
        Ok(())
    }

    /// `POST /auth/password/forgot`: the same work and answer whoever the address belongs to.
    /// One outbox row is written either way; the sender finds the account (if any) when it
    /// takes the row, so neither the timing nor the answer says whether it exists.
    pub async fn forgot_password(
        &self,
        email: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let email = match email.as_deref().map(Email::parse) {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(AuthError::Validation(one("email", e.to_string()))),
            None => {
                return Err(AuthError::Validation(one(
                    "email",
                    FieldError::Required.to_string(),
                )));
            }
        };
        self.limits
            .check_address(email.as_str())
            .await
            .map_err(AuthError::RateLimited)?;
        let mail = NewMail {
            kind: MailKind::ResetPassword,
            user_id: None,
            recipient: email.as_str().to_owned(),
            data: serde_json::json!({}),
        };
        self.store.enqueue_mail(&[mail], self.now()).await?;
        self.wake_sender();
        self.emit(Event::success("password_reset_requested", client))
            .await;
        Ok(())
    }

    /// `POST /auth/password/reset`: a new password with a reset link's token; every session
    /// of the user ends and every reset token of theirs stops working.
    pub async fn reset_password_with_link(
        &self,
        token: Option<String>,
        new_password: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let policy = &self.config.password;
        let password = match new_password.as_deref() {
            None => {
                return Err(AuthError::Validation(one(
                    "new_password",
                    FieldError::Required.to_string(),
                )));
            }
            Some(p) => Password::new(p, policy.min_length, policy.max_length)
                .map_err(|e| AuthError::Validation(one("new_password", e.to_string())))?,
        };
        let token = presented_token(token)?;
        let stored = self
            .live_email_token(&token, TokenPurpose::ResetPassword)
            .await?;
        let Some(user) = self.store.find_user(stored.user_id).await? else {
            return Err(AuthError::InvalidCode);
        };
        self.check_policy(
            &password,
            "new_password",
            &user.email,
            user.username.as_deref(),
        )
        .await?;
        let hash = self.hasher.hash(&password).await?;
        let Some(ended) = self
            .store
            .reset_password_with_token(&stored, &hash, self.now())
            .await?
        else {
            return Err(AuthError::InvalidCode);
        };
        tracing::debug!(sessions_ended = ended, "sessions ended by a password reset");
        self.emit(Event::success("password_reset", client).user(user.id))
            .await;
        Ok(())
    }

    /// `POST /auth/email/change`: after the password, a link to the new address and a notice
    /// to the old one. Nothing changes until the link is followed.
    pub async fn request_email_change(
        &self,
        who: &Principal,
        new_email: Option<String>,
        password: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let mut errors = FieldErrors::new();
        let new_email = match new_email.as_deref().map(Email::parse) {
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => {
                errors.insert("new_email", e.to_string());
                None
            }
            None => {
                errors.insert("new_email", FieldError::Required.to_string());
                None
            }
        };
        let password = super::presented_password(
            &mut errors,
            password.as_deref(),
            self.config.password.max_length,
        );
        let (Some(new_email), Some(password), true) = (new_email, password, errors.is_empty())
        else {
            return Err(AuthError::Validation(errors));
        };
        let version = self
            .check_current_password(who, &password, client, "email_changed", "password")
            .await?;
        let me = self.me(who).await?;
        if new_email.as_str() == me.email {
            return Err(AuthError::Validation(one(
                "new_email",
                "is already your address".to_owned(),
            )));
        }
        self.limits
            .check_address(new_email.as_str())
            .await
            .map_err(AuthError::RateLimited)?;
        // The change is bound to the credentials it was asked under: a new password, a reset,
        // a disable or a second factor before the link is followed kills it (checked when the
        // mail is sent and again in the transaction that moves the address).
        let data = serde_json::json!({
            "new_email": new_email.as_str(),
            "old_email": me.email,
            "credentials_version": version,
        });
        let mails = [
            NewMail {
                kind: MailKind::ChangeEmail,
                user_id: Some(me.id),
                recipient: new_email.as_str().to_owned(),
                data: data.clone(),
            },
            NewMail {
                kind: MailKind::EmailChanged,
                user_id: Some(me.id),
                recipient: me.email.clone(),
                data,
            },
        ];
        self.store
            .enqueue_email_change(me.id, &mails, self.now())
            .await?;
        self.wake_sender();
        Ok(())
    }

    /// Re-authentication: checks the caller's password before a sensitive change (email
    /// change, password change, two-factor on or off). It takes the account's failed-login
    /// budget like a login does, so a stolen access token cannot be used to guess the
    /// password from many addresses: in back-off it answers 429 without hashing. A wrong
    /// password is 422 on `field`, audited as a failed `event`. Returns the credentials
    /// version the password was checked under.
    pub(super) async fn check_current_password(
        &self,
        who: &Principal,
        password: &Password,
        client: &ClientInfo,
        event: &'static str,
        field: &'static str,
    ) -> Result<i64, AuthError> {
        let stored = self.store.password_hash(who.user_id).await?;
        let attempt = match self
            .limits
            .begin_login(&who.user_id.to_string(), client.ip.as_deref())
            .await
        {
            Ok(attempt) => attempt,
            Err(retry) => {
                self.rate_limited(Action::Password, client).await;
                return Err(AuthError::RateLimited(retry));
            }
        };
        let ok = match self
            .hasher
            .verify(password, stored.as_ref().map(|h| h.phc()))
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                self.limits.login_abandoned(attempt).await;
                return Err(e.into());
            }
        };
        if ok {
            // Proof of the password, but not a login: the attempt is given back and the
            // failures counted so far stay, so whoever holds a session cannot clear the
            // back-off between guesses by confirming a password they know.
            self.limits.login_abandoned(attempt).await;
            return Ok(stored.map_or(0, |h| h.version()));
        }
        // A wrong password: the reservation stays counted.
        drop(attempt);
        self.emit(
            Event::failure(event, client, "wrong_password")
                .user(who.user_id)
                .session(who.session_id),
        )
        .await;
        Err(AuthError::Validation(one(
            field,
            "is not your current password".to_owned(),
        )))
    }

    /// `POST /auth/email/change/confirm`: the account moves to the new address, verified. The
    /// address must still be free (409 `email_taken`, and the link keeps working).
    pub async fn confirm_email_change(
        &self,
        token: Option<String>,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        self.require_mail()?;
        self.limit(Action::Email, client).await?;
        let token = presented_token(token)?;
        let stored = self
            .live_email_token(&token, TokenPurpose::ChangeEmail)
            .await?;
        let notice = |old: &str| NewMail {
            kind: MailKind::EmailChangeCompleted,
            user_id: Some(stored.user_id),
            recipient: old.to_owned(),
            data: serde_json::json!({ "new_email": stored.email, "old_email": old }),
        };
        let user = match self
            .store
            .change_email_with_token(&stored, notice, self.now())
            .await
        {
            Ok(Some(user)) => user,
            Ok(None) => return Err(AuthError::InvalidCode),
            Err(StoreError::Conflict(what)) => return Err(AuthError::Conflict(what)),
            Err(e) => return Err(e.into()),
        };
        self.wake_sender();
        self.emit(Event::success("email_changed", client).user(user.id))
            .await;
        Ok(user)
    }

    /// Marks a user's address verified (`keygate user verify-email`).
    pub async fn mark_email_verified(
        &self,
        id_or_email: &str,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let user = self.find_user(id_or_email).await?;
        if !self.store.set_email_verified(user.id, self.now()).await? {
            return Err(AuthError::NotFound);
        }
        self.emit(Event::success("email_verified", client).user(user.id))
            .await;
        self.store
            .find_user(user.id)
            .await?
            .ok_or(AuthError::NotFound)
    }

    /// Whether mail is configured and, if so, whether the last delivery attempt worked
    /// (`/readyz`).
    pub fn mail_health(&self) -> Option<bool> {
        self.mailer.as_ref().map(|m| m.healthy())
    }

    /// Waits until this node's requests queue mail or `timeout` passes.
    pub async fn mail_queued(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.mail_wake.notified()).await;
    }

    /// Takes due messages and delivers them; returns how many were delivered. Run by every
    /// node; a message is taken by one sender at a time (the lease).
    pub async fn deliver_due_mail(&self) -> Result<usize, AuthError> {
        let Some(mailer) = self.mailer.as_ref() else {
            return Ok(0);
        };
        let now = self.now();
        if !self.store.mail_due(now).await? {
            return Ok(0);
        }
        let taken = self
            .store
            .claim_mail(now, after(now, OUTBOX_LEASE), BATCH)
            .await?;
        let mut delivered = 0;
        for message in taken {
            let id = message.id.clone();
            let prepared = match self.prepare(&message).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(outbox_id = %id, error = %e, "could not prepare a message; will retry");
                    let retry = after(self.now(), backoff(message.attempts));
                    self.store
                        .mail_failed(&id, "preparation failed", retry)
                        .await?;
                    continue;
                }
            };
            let Some(rendered) = prepared else {
                continue;
            };
            match mailer.send(&message.recipient, &rendered).await {
                Ok(()) => {
                    delivered += 1;
                    tracing::info!(outbox_id = %id, kind = message.kind.as_str(), "mail delivered");
                    self.store.mail_done(&id, None, self.now()).await?;
                }
                Err(e) => {
                    let now = self.now();
                    let stale = now - message.created_at
                        > time::Duration::try_from(GIVE_UP_AFTER).unwrap_or(time::Duration::MAX);
                    tracing::warn!(
                        outbox_id = %id,
                        kind = message.kind.as_str(),
                        attempts = message.attempts,
                        permanent = e.permanent,
                        error = %e.reason,
                        "mail delivery failed"
                    );
                    if e.permanent || stale {
                        let reason = if e.permanent { "refused" } else { "gave_up" };
                        self.store.mail_done(&id, Some(reason), now).await?;
                    } else {
                        let retry = after(now, backoff(message.attempts));
                        self.store.mail_failed(&id, &e.reason, retry).await?;
                    }
                }
            }
        }
        Ok(delivered)
    }

    /// Makes the message's link token and renders it; `None` when there is nothing to send
    /// any more (the row is closed with the reason).
    async fn prepare(
        &self,
        message: &OutboxRecord,
    ) -> Result<Option<crate::mail::Rendered>, AuthError> {
        let Some(mailer) = self.mailer.as_ref() else {
            return Ok(None);
        };
        let now = self.now();
        let user = match message.user_id {
            Some(id) => self.store.find_user(id).await?,
            None => self.store.find_user_by_login(&message.recipient).await?,
        };
        let close = |reason: &'static str| async move {
            tracing::info!(outbox_id = %message.id, kind = message.kind.as_str(), reason, "mail not sent");
            self.store.mail_done(&message.id, Some(reason), now).await
        };
        let Some(user) = user else {
            close("no_account").await?;
            return Ok(None);
        };
        let version = self
            .store
            .password_hash(user.id)
            .await?
            .map_or(0, |h| h.version());
        // The credentials an email change was asked under (none in a row queued before
        // changes were bound to them: such a change is dropped).
        let asked_under = message.data["credentials_version"].as_i64();
        let new_email = message.data["new_email"].as_str().unwrap_or_default();
        let old_email = message.data["old_email"].as_str().unwrap_or(&user.email);
        let cfg = &self.config.email;
        let (purpose, page, ttl) = match message.kind {
            MailKind::VerifyEmail if user.email_verified => {
                close("already_verified").await?;
                return Ok(None);
            }
            MailKind::VerifyEmail if user.email != message.recipient => {
                close("address_changed").await?;
                return Ok(None);
            }
            MailKind::ResetPassword if !user.is_active => {
                close("account_disabled").await?;
                return Ok(None);
            }
            MailKind::ChangeEmail if !user.is_active || asked_under != Some(version) => {
                close("credentials_changed").await?;
                return Ok(None);
            }
            MailKind::VerifyEmail => (
                Some(TokenPurpose::VerifyEmail),
                "verify-email",
                cfg.verification_ttl,
            ),
            MailKind::ResetPassword => (
                Some(TokenPurpose::ResetPassword),
                "reset-password",
                cfg.reset_ttl,
            ),
            MailKind::ChangeEmail => (
                Some(TokenPurpose::ChangeEmail),
                "confirm-email",
                cfg.verification_ttl,
            ),
            MailKind::EmailChanged | MailKind::EmailChangeCompleted => {
                (None, "", cfg.verification_ttl)
            }
        };
        let link = match purpose {
            None => String::new(),
            Some(purpose) => {
                let token = LinkToken::generate();
                let email = if purpose == TokenPurpose::ChangeEmail {
                    new_email.to_owned()
                } else {
                    user.email.clone()
                };
                self.store
                    .issue_email_token(
                        &NewEmailToken {
                            id: token.id(),
                            user_id: user.id,
                            purpose,
                            secret_hash: token.hash(),
                            email,
                            credentials_version: asked_under.unwrap_or(version),
                            expires_at: after(now, ttl),
                        },
                        now,
                    )
                    .await?;
                format!("{}/{page}?token={}", cfg.link_base, token.expose())
            }
        };
        let expires_in = in_words(ttl);
        let ctx = Context {
            email: if matches!(
                message.kind,
                MailKind::EmailChanged | MailKind::ChangeEmail | MailKind::EmailChangeCompleted
            ) {
                old_email
            } else {
                &user.email
            },
            name: user.name.as_deref(),
            link: &link,
            expires_in: &expires_in,
            new_email,
            issuer_name: &self.config.mfa.issuer_name,
        };
        mailer
            .templates
            .render(message.kind, &ctx)
            .map(Some)
            .map_err(|e| AuthError::Internal(e.to_string()))
    }
}

fn one(field: &'static str, message: String) -> FieldErrors {
    let mut errors = FieldErrors::new();
    errors.insert(field, message);
    errors
}
