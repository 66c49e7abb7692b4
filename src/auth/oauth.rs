//! OAuth 2.0 use cases beside the session ones: authenticating an `oauth.clients` entry, the
//! `client_credentials` grant, and revocation (RFC 7009). The password and refresh-token
//! grants are [`Auth::login`] and [`Auth::refresh`] themselves.

use aws_lc_rs::constant_time::verify_slices_are_equal;

use super::{Auth, AuthError, LogoutScope};
use crate::config::{ClientSecret, OAuthClient, sha256};
use crate::domain::{ClientInfo, Password};
use crate::limits::Action;
use crate::token::RefreshToken;

/// A `client_credentials` access token.
#[derive(Debug, Clone)]
pub struct ClientToken {
    /// The signed access token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: i64,
}

/// Longest client secret looked at (a longer one is simply wrong).
const MAX_SECRET_LEN: usize = 256;

/// How long a client-secret verification waits for the one argon2 slot before 503.
const CLIENT_HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Auth {
    /// The configured client `id` if `secret` is its secret, else `None`.
    ///
    /// A wrong secret costs the attacker, never the logins: each failure counts against the
    /// client id like a wrong password against an account (`rate_limits.failed_logins`, then
    /// exponential back-off for addresses not known good for the client: 429 before any
    /// check), and an argon2 verification also takes one from the address's `token` budget
    /// and waits for this node's single client-hashing slot. SHA-256 secrets are compared in
    /// constant time (an unknown client costs the same digest and comparison); an argon2
    /// secret that passed once is remembered by its digest, so later calls are as cheap. A
    /// right secret from an address whose last attempt passed skips the budget (one cache
    /// lookup on a resource server's hot path); any other attempt goes through it, so the
    /// answer during back-off is 429 whether the guess was right or not.
    pub async fn authenticate_client(
        &self,
        id: &str,
        secret: &str,
        from: &ClientInfo,
    ) -> Result<Option<&OAuthClient>, AuthError> {
        let presented = sha256(secret.as_bytes());
        let Some(client) = self.config.oauth.client(id) else {
            let _ = verify_slices_are_equal(&presented, &sha256(b"no such client"));
            return Ok(None);
        };
        let address = std::hash::BuildHasher::hash_one(
            &self.client_address_hasher,
            (client.id.as_str(), from.ip.as_deref()),
        );
        let known = |presented: &[u8; 32]| match &client.secret {
            ClientSecret::Sha256(expected) => verify_slices_are_equal(presented, expected).is_ok(),
            ClientSecret::Argon2(_) => self
                .verified_clients
                .get(&client.id)
                .is_some_and(|d| verify_slices_are_equal(presented, &d).is_ok()),
        };
        if self.trusted_client_addresses.contains_key(&address)
            && secret.len() <= MAX_SECRET_LEN
            && known(&presented)
        {
            return Ok(Some(client));
        }
        let account = format!("client:{}", client.id);
        let attempt = match self.limits.begin_login(&account, from.ip.as_deref()).await {
            Ok(attempt) => attempt,
            Err(retry) => {
                self.rate_limited(Action::Token, from).await;
                return Err(AuthError::RateLimited(retry));
            }
        };
        let ok = if secret.len() > MAX_SECRET_LEN {
            false
        } else if known(&presented) {
            true
        } else if let ClientSecret::Argon2(phc) = &client.secret {
            match self
                .verify_client_secret(client, phc, secret, &presented, from)
                .await
            {
                Ok(ok) => ok,
                Err(e) => {
                    self.limits.login_abandoned(attempt).await;
                    return Err(e);
                }
            }
        } else {
            false
        };
        if ok {
            self.limits.login_succeeded(attempt).await;
            self.trusted_client_addresses.insert(address, ());
        } else {
            // The reservation stays counted.
            drop(attempt);
            self.trusted_client_addresses.invalidate(&address);
            tracing::info!(event = "client_authentication_failed", client_id = %client.id, "wrong client secret");
        }
        Ok(ok.then_some(client))
    }

    /// One argon2 verification of a client secret: from the address's `token` budget, on
    /// this node's single client-hashing slot (another request may have verified the same
    /// secret while this one waited for it).
    async fn verify_client_secret(
        &self,
        client: &OAuthClient,
        phc: &str,
        secret: &str,
        presented: &[u8; 32],
        from: &ClientInfo,
    ) -> Result<bool, AuthError> {
        self.limit(Action::Token, from).await?;
        let Ok(_slot) =
            tokio::time::timeout(CLIENT_HASHING_WAIT, self.client_hashing.acquire()).await
        else {
            return Err(AuthError::Unavailable);
        };
        if self
            .verified_clients
            .get(&client.id)
            .is_some_and(|d| verify_slices_are_equal(presented, &d).is_ok())
        {
            return Ok(true);
        }
        let Ok(password) = Password::presented(secret, MAX_SECRET_LEN) else {
            return Ok(false);
        };
        let ok = self.hasher.verify(&password, Some(phc)).await?;
        if ok {
            self.verified_clients.insert(client.id.clone(), *presented);
        }
        Ok(ok)
    }

    /// An access token for `client` itself (`client_credentials`): its roles and
    /// permissions, no refresh token, no session.
    pub fn client_credentials(&self, client: &OAuthClient) -> Result<ClientToken, AuthError> {
        let (access_token, expires_in) = self.keys().issue_for_client(
            &client.id,
            &client.roles,
            &client.permissions,
            self.now(),
        )?;
        tracing::info!(event = "client_token_issued", client_id = %client.id, "client token issued");
        Ok(ClientToken {
            access_token,
            expires_in,
        })
    }

    /// RFC 7009 revocation: a refresh token (its current or previous value) or a user's
    /// access token ends its session. Anything else (unknown, malformed, expired, a client's
    /// own token, which has no session) changes nothing and is not an error: the answer is
    /// the same either way. The two kinds cannot be mistaken for each other (a refresh token
    /// is `<session>.<secret>`, an access token a JWT), so `token_type_hint` is not needed to
    /// find the token and is taken as a hint only.
    pub async fn revoke_token(&self, token: &str, client: &ClientInfo) -> Result<(), AuthError> {
        let result = if RefreshToken::parse(token).is_some() {
            self.logout(LogoutScope::Local, None, Some(token), client)
                .await
        } else {
            self.logout(LogoutScope::Local, Some(token), None, client)
                .await
        };
        match result {
            Err(AuthError::InvalidToken(_) | AuthError::InvalidRefreshToken) => Ok(()),
            other => other,
        }
    }
}

/// What introspection (RFC 7662) tells about a live token.
#[derive(Debug, Clone)]
pub struct Introspection {
    /// The token's claims (for a refresh token: its session's, as an access token of it would
    /// carry them; `exp` is the refresh token's expiry, `jti` its lookup id).
    pub claims: std::sync::Arc<keygate_verify::Claims>,
    /// `Bearer` for an access token, `refresh_token` for a refresh token.
    pub token_type: &'static str,
    /// The user's username (else email), for tokens of users.
    pub username: Option<String>,
}

impl Auth {
    /// RFC 7662: the token's facts if it is live now, else `None` (expired, revoked or ended
    /// session, disabled or deleted user, a rotated refresh token, a client no longer
    /// configured, malformed or foreign).
    pub async fn introspect(&self, token: &str) -> Result<Option<Introspection>, AuthError> {
        let now = self.now();
        if let Some(refresh) = RefreshToken::parse(token) {
            let Some(session) = self.store.find_session(refresh.session_id()).await? else {
                return Ok(None);
            };
            let live = session.refresh_hash.matches(&refresh.hash())
                && session.is_live(now)
                && session.refresh_expires_at > now;
            if !live {
                return Ok(None);
            }
            let Some(user) = self.live_user_of(session.user_id).await? else {
                return Ok(None);
            };
            let claims = keygate_verify::Claims {
                iss: self.config.issuer.clone(),
                sub: user.id.to_string(),
                aud: keygate_verify::Audience::One(
                    self.config.audience.first().cloned().unwrap_or_default(),
                ),
                exp: session.refresh_expires_at.unix_timestamp(),
                iat: session
                    .rotated_at
                    .unwrap_or(session.created_at)
                    .unix_timestamp(),
                jti: session.id.to_string(),
                sid: session.id.to_string(),
                roles: user.roles.clone(),
                permissions: user.permissions.clone(),
                client_id: None,
                amr: if session.mfa {
                    vec!["pwd".to_owned(), "otp".to_owned()]
                } else {
                    vec!["pwd".to_owned()]
                },
                email_verified: Some(user.email_verified),
            };
            return Ok(Some(Introspection {
                claims: std::sync::Arc::new(claims),
                token_type: "refresh_token",
                username: Some(user.username.unwrap_or(user.email)),
            }));
        }
        let Ok(claims) = self.verify_token(token, now).await else {
            return Ok(None);
        };
        if let Some(client) = claims.sid.strip_prefix(crate::token::CLIENT_SESSION_PREFIX) {
            let configured = claims.client_id.as_deref() == Some(client)
                && claims.sub == client
                && self.config.oauth.client(client).is_some();
            return Ok(configured.then_some(Introspection {
                claims,
                token_type: "Bearer",
                username: None,
            }));
        }
        let (Some(user_id), Some(session_id)) = (
            crate::domain::UserId::parse(&claims.sub),
            crate::domain::SessionId::parse(&claims.sid),
        ) else {
            return Ok(None);
        };
        // One read for "is the session live" and "who is its user" (a cache miss on
        // PostgreSQL is one round trip, not two).
        let Some(user) = self
            .store
            .live_session_user(session_id, user_id, now)
            .await?
            .filter(|u| u.is_active)
        else {
            return Ok(None);
        };
        Ok(Some(Introspection {
            claims,
            token_type: "Bearer",
            username: Some(user.username.unwrap_or(user.email)),
        }))
    }

    async fn live_user_of(
        &self,
        id: crate::domain::UserId,
    ) -> Result<Option<crate::store::UserRecord>, AuthError> {
        Ok(self.store.find_user(id).await?.filter(|u| u.is_active))
    }
}

/// The revocation feed's page size (new entries per answer, at most).
const FEED_PAGE: u32 = 1000;
/// Entries the follower already holds that one answer re-reads, at most: beyond this a burst
/// written within [`FEED_OVERLAP_MS`] is passed once it is that old.
const FEED_KNOWN_MAX: usize = 100_000;
/// How long an entry stays "recent": a revocation whose transaction commits up to this long
/// after the database stamped it (so after entries with higher sequence numbers became
/// visible) is still delivered, because the cursor never passes an entry younger than this
/// (followers ignore repeats).
pub const FEED_OVERLAP_MS: i64 = 2000;
/// How often a long poll looks at the database.
const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Where a follower of the revocation feed stands: it has every entry up to sequence number
/// `after`, and the first `known` entries after it. Text form `s<after>.<known>`; the older
/// time-based form (`<ms>.<known>`) reads as the start of the feed, so a follower running
/// across an upgrade receives everything retained again rather than missing anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCursor {
    /// Every entry up to this sequence number has been delivered for good.
    pub after: i64,
    /// How many entries after it the follower already has.
    pub known: usize,
}

impl FeedCursor {
    /// Parses `s<after>.<known>` (or the older form, as the start).
    pub fn parse(text: &str) -> Option<FeedCursor> {
        let (after, known) = text.split_once('.')?;
        let known: usize = known.parse().ok()?;
        match after.strip_prefix('s') {
            Some(seq) => Some(FeedCursor {
                after: seq.parse().ok().filter(|a: &i64| *a >= 0)?,
                known,
            }),
            None => after
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .map(|_| FeedCursor::default()),
        }
    }

    /// The cursor after reading `page` from `self`: past the longest run of entries older
    /// than the overlap (they are final), holding the younger ones as known. Always moves
    /// forward once entries age, however many share one time stamp.
    fn next(self, page: &crate::store::RevocationPage) -> FeedCursor {
        let settled_before = page.now - FEED_OVERLAP_MS;
        let after = page
            .ended
            .iter()
            .take_while(|e| e.at <= settled_before)
            .last()
            .map_or(self.after, |e| e.seq);
        FeedCursor {
            after,
            known: page.ended.iter().filter(|e| e.seq > after).count(),
        }
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}.{}", self.after, self.known)
    }
}

/// One answer of the revocation feed.
#[derive(Debug, Clone)]
pub struct Revocations {
    /// Sessions that ended (each possibly again: a follower keeps a set).
    pub sessions: Vec<crate::domain::SessionId>,
    /// Where to continue.
    pub cursor: FeedCursor,
}

impl Auth {
    /// The sessions that ended since `cursor` (from the start of the retained feed without
    /// one), waiting up to `wait` for one to end when there is nothing new. An answer holds
    /// the entries the follower already has after the cursor (recent ones, re-read in case a
    /// late commit slipped in among them) and up to 1 000 new ones. Entries are kept
    /// at least `access_ttl + leeway`, as long as any access token of theirs can be live.
    pub async fn revocations(
        &self,
        cursor: FeedCursor,
        wait: std::time::Duration,
    ) -> Result<Revocations, AuthError> {
        let deadline = tokio::time::Instant::now() + wait;
        let known = cursor.known.min(FEED_KNOWN_MAX);
        let limit = u32::try_from(known)
            .unwrap_or(u32::MAX)
            .saturating_add(FEED_PAGE);
        loop {
            let page = self.store.revocations_after(cursor.after, limit).await?;
            let now = tokio::time::Instant::now();
            if page.ended.len() > known || now >= deadline {
                return Ok(Revocations {
                    cursor: cursor.next(&page),
                    sessions: page.ended.into_iter().filter_map(|e| e.session).collect(),
                });
            }
            tokio::time::sleep(FEED_POLL.min(deadline - now)).await;
        }
    }
}
