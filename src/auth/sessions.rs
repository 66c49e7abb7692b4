//! Session use cases: log in, refresh (rotation with a grace window), log out, authenticate a
//! bearer token, list and end sessions.

use std::time::Duration;

use keygate_verify::{Claims, VerifyError};
use time::OffsetDateTime;

use super::events::Event;
use super::{Auth, AuthError, FieldErrors, TokenProblem};
use crate::domain::{ClientInfo, FieldError, Password, SessionId, UserId};
use crate::limits::Action;
use crate::store::{NewSession, Rotation, SessionRecord, StoreError, StoredHash, UserRecord};
use crate::token::{AccessGrant, RefreshToken};

/// An authenticated caller: a verified access token whose session is live.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `sub`.
    pub user_id: UserId,
    /// `sid`.
    pub session_id: SessionId,
    /// All claims.
    pub claims: std::sync::Arc<Claims>,
}

/// What login and refresh hand out.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The signed access token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: i64,
    /// The refresh token (plaintext, shown once).
    pub refresh_token: RefreshToken,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
    /// The session.
    pub session_id: SessionId,
}

/// `scope` of a logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogoutScope {
    /// This session.
    #[default]
    Local,
    /// Every session of the user.
    Global,
    /// Every session but this one.
    Others,
}

fn seconds_until(t: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (t - now).whole_seconds().max(0)
}

/// Whether a token rotated away at `rotated_at` is still inside the grace window at `now`:
/// less than `grace` has passed, and the rotation is not later than `now` by more than the
/// clock leeway. Nodes' clocks may differ by the leeway; a rotation further in the future means
/// the clock went back, and the window would otherwise stay open until the clock caught up
/// (an hour back: an hour in which a stolen previous token gets the successor). Beyond it the
/// previous token counts as reuse.
fn inside_grace(
    rotated_at: OffsetDateTime,
    now: OffsetDateTime,
    grace: Duration,
    leeway: Duration,
) -> bool {
    now < later(rotated_at, grace) && rotated_at <= later(now, leeway)
}

fn later(now: OffsetDateTime, by: Duration) -> OffsetDateTime {
    now.checked_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX))
        .unwrap_or(OffsetDateTime::new_utc(
            time::Date::MAX,
            time::Time::MIDNIGHT,
        ))
}

impl Auth {
    /// Logs in with an email or username and a password, opening a new session.
    pub async fn login(
        &self,
        login: Option<String>,
        password: Option<String>,
        client: ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        self.limit(Action::Login, &client).await?;
        let mut errors = FieldErrors::new();
        if login.as_deref().is_none_or(|l| l.trim().is_empty()) {
            errors.insert("email", FieldError::Required.to_string());
        }
        let password = super::presented_password(
            &mut errors,
            password.as_deref(),
            self.config.password.max_length,
        );
        let (Some(login), Some(password), true) = (login, password, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let login = crate::domain::login_key(&login);
        let ip = client.ip.as_deref();
        // No account can have control characters in its email or username (and PostgreSQL
        // refuses NUL in text): such a login is simply unknown.
        let found = if login.chars().any(char::is_control) {
            None
        } else {
            self.store.find_credentials(&login).await?
        };
        // The attempt is counted before the password is checked: one account's budget
        // whether it is named by email or username; an unknown identifier's by its canonical
        // form. In back-off, the attempt costs the attacker a 429 and no hash.
        let account = found
            .as_ref()
            .map_or_else(|| login.clone(), |(user, _)| user.id.to_string());
        let attempt = match self.limits.begin_login(&account, ip).await {
            Ok(attempt) => attempt,
            Err(retry) => {
                self.rate_limited(Action::Login, &client).await;
                return Err(AuthError::RateLimited(retry));
            }
        };
        // Unknown accounts are checked against the dummy hash: same time, same answer.
        let ok = match self
            .hasher
            .verify(&password, found.as_ref().map(|(_, h)| h.phc()))
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                self.limits.login_abandoned(attempt).await;
                return Err(e.into());
            }
        };
        if ok {
            if found.as_ref().is_some_and(|(user, _)| user.mfa_enabled) {
                // Half a login: the attempt is given back, but the failures counted so far
                // (wrong passwords, wrong codes) stay until the second factor is right, so a
                // thief with the password cannot reset the back-off between code guesses.
                self.limits.login_abandoned(attempt).await;
            } else {
                self.limits.login_succeeded(attempt).await;
            }
            if let Some((user, hash)) = &found {
                self.upgrade_hash(user, hash, &password).await;
            }
        } else {
            // A wrong password: the reservation stays counted.
            drop(attempt);
        }
        let (user, hash) = match found {
            Some((user, hash)) if ok => (user, hash),
            Some((user, _)) => {
                self.emit(Event::failure("login_failed", &client, "wrong_password").user(user.id))
                    .await;
                return Err(AuthError::InvalidCredentials);
            }
            None => {
                self.emit(Event::failure("login_failed", &client, "unknown_account"))
                    .await;
                return Err(AuthError::InvalidCredentials);
            }
        };
        // Only after the password: the disabled state is no oracle for guessing.
        if !user.is_active {
            self.emit(Event::failure("login_failed", &client, "account_disabled").user(user.id))
                .await;
            return Err(AuthError::AccountDisabled);
        }
        if self.config.email.verification_required() && !user.email_verified {
            self.emit(Event::failure("login_failed", &client, "email_not_verified").user(user.id))
                .await;
            // The password was right: a new link goes out unless a live one is on its way
            // (a new one would kill the link the user may be about to click).
            if !self
                .store
                .verification_pending(user.id, &user.email, self.now())
                .await?
                && let Err(e) = self.queue_verification(&user).await
            {
                tracing::debug!(error = %e, "no new verification link at login");
            }
            return Err(AuthError::EmailNotVerified);
        }
        if user.mfa_enabled {
            let challenge = self.challenge(&user, hash.version(), &client).await?;
            return Err(AuthError::MfaRequired(challenge));
        }
        self.open_session(&user, hash.version(), false, &client)
            .await
    }

    /// Replaces an imported or outdated hash by argon2id with the current parameters, now
    /// that the password is known to be right. Failure is logged: the login still succeeds.
    /// The upgrade replaces `stored` only: a password changed meanwhile stays.
    async fn upgrade_hash(&self, user: &UserRecord, stored: &StoredHash, password: &Password) {
        if !self.hasher.needs_rehash(stored.phc()) {
            return;
        }
        let result = match self.hasher.hash(password).await {
            Ok(hash) => self
                .store
                .upgrade_password_hash(user.id, stored, &hash)
                .await
                .map_err(|e| super::error_chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(false) => {
                tracing::info!(user_id = %user.id, "password changed before its hash upgrade")
            }
            Ok(true) => tracing::info!(user_id = %user.id, "password hash upgraded to argon2id"),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed")
            }
        }
    }

    /// Opens a session for `user`, whose password was checked under `credentials_version`
    /// (and a second factor, with `mfa`).
    pub(super) async fn open_session(
        &self,
        user: &UserRecord,
        credentials_version: i64,
        mfa: bool,
        client: &ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        let now = self.now();
        let session_id = SessionId::new();
        let refresh = RefreshToken::generate(session_id);
        let expires_at = self.config.session_max_lifetime.map(|d| later(now, d));
        let refresh_expires_at = self.refresh_expiry(now, expires_at);
        // The session, the session-limit trim and the audit row commit together.
        let event = Event::success("login_succeeded", client)
            .user(user.id)
            .session(session_id);
        let session = NewSession {
            id: session_id,
            user_id: user.id,
            refresh_hash: refresh.hash(),
            refresh_expires_at,
            expires_at,
            user_agent: client.user_agent.clone(),
            ip: self.session_ip(client.ip.as_deref()),
            credentials_version,
            mfa,
        };
        let opened = self
            .store
            .open_session(
                &session,
                self.config.max_sessions_per_user,
                now,
                Some(&super::events::row(&event)),
            )
            .await;
        if let Err(StoreError::CredentialsChanged) = opened {
            // Disabled, or given a new password, while this login checked the old one: it
            // fails as it would have a moment later, and no session is opened.
            let disabled = !self
                .store
                .find_user(user.id)
                .await?
                .is_some_and(|u| u.is_active);
            let (reason, error) = if disabled {
                ("account_disabled", AuthError::AccountDisabled)
            } else {
                ("credentials_changed", AuthError::InvalidCredentials)
            };
            self.emit(Event::failure("login_failed", client, reason).user(user.id))
                .await;
            return Err(error);
        }
        opened?;
        super::events::log(&event);
        self.token_pair(user, session_id, refresh, refresh_expires_at, now, mfa)
    }

    /// The IP kept on a session: as seen, or cut to its /24 (IPv4) or /48 (IPv6) network when
    /// `truncate_session_ip` is set.
    fn session_ip(&self, ip: Option<&str>) -> Option<String> {
        let ip = ip?;
        if !self.config.truncate_session_ip {
            return Some(ip.to_owned());
        }
        Some(match ip.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0/24")
            }
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        })
    }

    /// A refresh token lives `refresh_ttl` from its issue, capped by the session's end.
    fn refresh_expiry(
        &self,
        now: OffsetDateTime,
        session_end: Option<OffsetDateTime>,
    ) -> OffsetDateTime {
        let by_ttl = later(now, self.config.refresh_ttl);
        session_end.map_or(by_ttl, |end| end.min(by_ttl))
    }

    fn token_pair(
        &self,
        user: &UserRecord,
        session_id: SessionId,
        refresh_token: RefreshToken,
        refresh_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        mfa: bool,
    ) -> Result<TokenPair, AuthError> {
        let (access_token, expires_in) = self.keys().issue(
            &AccessGrant {
                user_id: user.id,
                session_id,
                roles: &user.roles,
                permissions: &user.permissions,
                mfa,
                email_verified: user.email_verified,
            },
            now,
        )?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token,
            refresh_expires_in: seconds_until(refresh_expires_at, now),
            session_id,
        })
    }

    /// Exchanges a refresh token for a new pair, rotating it.
    ///
    /// The presented token is classified as exactly one of: the current token (rotate), the
    /// previous one inside the grace window (hand out the same successor again), the previous
    /// one after the window (reuse: the session is revoked), or not ours (plain 401).
    pub async fn refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        self.limit(Action::Refresh, client).await?;
        let Some(token) = RefreshToken::parse(presented) else {
            self.emit(Event::failure("refresh_failed", client, "malformed"))
                .await;
            return Err(AuthError::InvalidRefreshToken);
        };
        let hash = token.hash();
        // A lost race re-reads the row once; the second read sees the winner's rotation.
        for _ in 0..3 {
            let now = self.now();
            let Some(session) = self.store.find_session(token.session_id()).await? else {
                self.emit(Event::failure("refresh_failed", client, "unknown_session"))
                    .await;
                return Err(AuthError::InvalidRefreshToken);
            };
            let failed = |reason| Event::failure("refresh_failed", client, reason).of(&session);
            if session.refresh_hash.matches(&hash) {
                if !session.is_live(now) || session.refresh_expires_at <= now {
                    self.emit(failed("session_ended")).await;
                    return Err(AuthError::InvalidRefreshToken);
                }
                let Some(user) = self.live_user(&session).await? else {
                    self.emit(failed("account_disabled")).await;
                    return Err(AuthError::InvalidRefreshToken);
                };
                let successor = RefreshToken::generate(session.id);
                let refresh_expires_at = self.refresh_expiry(now, session.expires_at);
                let rotation = Rotation {
                    id: session.id,
                    from_generation: session.generation,
                    previous_hash: hash.clone(),
                    new_hash: successor.hash(),
                    sealed_successor: token.seal(
                        &successor,
                        &SessionRecord::seal_context(session.id, session.generation + 1),
                    ),
                    refresh_expires_at,
                };
                // The rotation and its audit row commit together (one durable write).
                let event = Event::success("refresh_succeeded", client)
                    .user(user.id)
                    .session(session.id);
                if self
                    .store
                    .rotate_refresh(&rotation, now, Some(&super::events::row(&event)))
                    .await?
                {
                    super::events::log(&event);
                    return self.token_pair(
                        &user,
                        session.id,
                        successor,
                        refresh_expires_at,
                        now,
                        session.mfa,
                    );
                }
                continue;
            }
            if session
                .previous_hash
                .as_ref()
                .is_some_and(|p| p.matches(&hash))
            {
                return self
                    .refresh_with_previous(&token, &session, now, client)
                    .await;
            }
            self.emit(failed("wrong_secret")).await;
            return Err(AuthError::InvalidRefreshToken);
        }
        Err(AuthError::Unavailable)
    }

    /// The previous token was presented: inside the grace window it gets the same successor,
    /// after it the session is treated as stolen.
    async fn refresh_with_previous(
        &self,
        token: &RefreshToken,
        session: &SessionRecord,
        now: OffsetDateTime,
        client: &ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        if !session.is_live(now) {
            self.emit(Event::failure("refresh_failed", client, "session_ended").of(session))
                .await;
            return Err(AuthError::InvalidRefreshToken);
        }
        let within_grace = session.rotated_at.is_some_and(|at| {
            inside_grace(at, now, self.config.refresh_reuse_grace, self.config.leeway)
        });
        let successor = session.sealed_successor.as_deref().and_then(|sealed| {
            token.open(
                sealed,
                &SessionRecord::seal_context(session.id, session.generation),
            )
        });
        match successor {
            Some(successor) if within_grace && successor.hash().matches(&session.refresh_hash) => {
                let Some(user) = self.live_user(session).await? else {
                    self.emit(
                        Event::failure("refresh_failed", client, "account_disabled").of(session),
                    )
                    .await;
                    return Err(AuthError::InvalidRefreshToken);
                };
                self.emit(Event {
                    grace: true,
                    ..Event::success("refresh_succeeded", client).of(session)
                })
                .await;
                self.token_pair(
                    &user,
                    session.id,
                    successor,
                    session.refresh_expires_at,
                    now,
                    session.mfa,
                )
            }
            _ => {
                self.store
                    .revoke_session(session.id, "refresh_token_reused", now)
                    .await?;
                self.emit(
                    Event::failure("refresh_token_reused", client, "rotated_token_presented")
                        .of(session),
                )
                .await;
                Err(AuthError::InvalidRefreshToken)
            }
        }
    }

    /// The session's user if the account still exists and is active.
    async fn live_user(&self, session: &SessionRecord) -> Result<Option<UserRecord>, AuthError> {
        Ok(self
            .store
            .find_user(session.user_id)
            .await?
            .filter(|u| u.is_active))
    }

    /// Verifies a bearer token and checks that its session is still live.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        let principal = self.verify_access(bearer).await?;
        if !self
            .store
            .session_is_live(principal.session_id, principal.user_id, self.now())
            .await?
        {
            return Err(AuthError::InvalidToken(TokenProblem::Invalid));
        }
        Ok(principal)
    }

    /// Verifies signature and claims only (logout accepts tokens of ended sessions).
    async fn verify_access(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer.ok_or(AuthError::InvalidToken(TokenProblem::Missing))?;
        let claims = self.verify_token(token, self.now()).await.map_err(|e| {
            AuthError::InvalidToken(if e == VerifyError::Expired {
                TokenProblem::Expired
            } else {
                TokenProblem::Invalid
            })
        })?;
        let invalid = AuthError::InvalidToken(TokenProblem::Invalid);
        let user_id =
            UserId::parse(&claims.sub).ok_or(AuthError::InvalidToken(TokenProblem::Invalid))?;
        let session_id = SessionId::parse(&claims.sid).ok_or(invalid)?;
        Ok(Principal {
            user_id,
            session_id,
            claims,
        })
    }

    /// Ends sessions. Identified by the bearer token, or else by the refresh token; a token
    /// whose session already ended still succeeds (logout is idempotent). Ending other sessions
    /// (`global`, `others`) takes a current credential: a bearer token of a live session, or a
    /// refresh token that is its session's current one or its previous one inside the grace
    /// window. A stale one (a revoked session's token, a rotated refresh token past its grace)
    /// gets the same 204 and ends nothing, so that a leaked old token can never sign the user
    /// out everywhere.
    pub async fn logout(
        &self,
        scope: LogoutScope,
        bearer: Option<&str>,
        refresh: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.now();
        let (grace, leeway) = (self.config.refresh_reuse_grace, self.config.leeway);
        let from_refresh = match refresh {
            None => None,
            Some(text) => {
                let token = RefreshToken::parse(text).ok_or(AuthError::InvalidRefreshToken)?;
                let hash = token.hash();
                self.store
                    .find_session(token.session_id())
                    .await?
                    .and_then(|s| {
                        let current = s.refresh_hash.matches(&hash);
                        let previous =
                            !current && s.previous_hash.as_ref().is_some_and(|p| p.matches(&hash));
                        let fresh = s.is_live(now)
                            && if current {
                                s.refresh_expires_at > now
                            } else {
                                s.rotated_at
                                    .is_some_and(|at| inside_grace(at, now, grace, leeway))
                            };
                        (current || previous).then_some((s.user_id, s.id, fresh))
                    })
            }
        };
        let (user_id, session_id, fresh) = match (bearer, from_refresh) {
            (Some(_), _) => {
                let p = self.verify_access(bearer).await?;
                let live = self
                    .store
                    .session_is_live(p.session_id, p.user_id, now)
                    .await?;
                (p.user_id, p.session_id, live)
            }
            (None, Some(found)) => found,
            // A well-formed refresh token that authenticates nothing: nothing to end.
            (None, None) if refresh.is_some() => return Ok(()),
            (None, None) => return Err(AuthError::InvalidToken(TokenProblem::Missing)),
        };
        if scope != LogoutScope::Local && !fresh {
            tracing::debug!("logout of other sessions with a stale credential: nothing ended");
            return Ok(());
        }
        let ended = match scope {
            LogoutScope::Local => {
                let mut n = u64::from(self.store.revoke_session(session_id, "logout", now).await?);
                // A refresh token of another of the user's sessions sent alongside ends too.
                if let Some((owner, other, _)) = from_refresh
                    && owner == user_id
                    && other != session_id
                {
                    n += u64::from(self.store.revoke_session(other, "logout", now).await?);
                }
                n
            }
            LogoutScope::Global => {
                self.store
                    .revoke_user_sessions(user_id, None, "logout_global", now)
                    .await?
            }
            LogoutScope::Others => {
                self.store
                    .revoke_user_sessions(user_id, Some(session_id), "logout_others", now)
                    .await?
            }
        };
        tracing::debug!(sessions_ended = ended, "logout");
        let reason = match scope {
            LogoutScope::Local => "local",
            LogoutScope::Global => "global",
            LogoutScope::Others => "others",
        };
        self.emit(Event {
            reason: Some(reason),
            ..Event::success("logout", client)
                .user(user_id)
                .session(session_id)
        })
        .await;
        Ok(())
    }

    /// The caller's live sessions, most recently active first.
    pub async fn list_sessions(&self, who: &Principal) -> Result<Vec<SessionRecord>, AuthError> {
        Ok(self.store.live_sessions(who.user_id, self.now()).await?)
    }

    /// Ends one of the caller's sessions; another user's (or an unknown) session is not found.
    pub async fn end_session(
        &self,
        who: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let id = SessionId::parse(id).ok_or(AuthError::NotFound)?;
        let now = self.now();
        match self.store.find_session(id).await? {
            Some(s) if s.user_id == who.user_id && s.is_live(now) => {
                self.store
                    .revoke_session(id, "session_revoked", now)
                    .await?;
                self.emit(
                    Event::success("session_revoked", client)
                        .user(who.user_id)
                        .session(id),
                )
                .await;
                Ok(())
            }
            _ => Err(AuthError::NotFound),
        }
    }
}
