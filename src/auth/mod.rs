//! The use cases: register, log in, refresh, log out, manage the account and its sessions.
//!
//! Both front ends (HTTP and the CLI) call these; they in turn call `store`, `token` and
//! `password`. Nothing here knows about HTTP: results and errors are plain types that the
//! `http` module maps onto API.md's contract.

mod account;
mod admin;
mod email;
mod events;
mod import;
mod keys;
mod mfa;
mod oauth;
pub mod sealed;
mod sessions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

pub use account::{ProfileChange, Registration};
pub use admin::{ADMIN_ROLE, Actor, Page, UserPatch, page_size};
pub use email::{GIVE_UP_AFTER, OUTBOX_LEASE, OUTBOX_POLL};
pub use import::Imported;
pub use keys::{KEY_POLL, KeyError, SealReport, seal_stored_keys};
pub use mfa::{Enrolment, MFA_TOKEN_TTL, MfaChallenge, RECOVERY_CODES, SecondFactor};
pub use oauth::{ClientToken, FEED_OVERLAP_MS, FeedCursor, Introspection, Revocations};
pub use sessions::{LogoutScope, Principal, TokenPair};

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::ClientInfo;
use crate::envelope::EnvelopeError;
use crate::limits::{Action, Limits, RetryAfter};
use crate::password::{Hasher, PasswordError};
use crate::store::{PurgeCounts, Store, StoreError};
use crate::token::TokenError;

/// Field name → message, for 422 `validation_failed`.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Why an access token was refused; the HTTP layer words it for `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// No bearer token was sent.
    Missing,
    /// `exp` has passed: refresh and retry.
    Expired,
    /// Anything else: bad signature, wrong claims, revoked session…
    Invalid,
}

/// Use-case failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Input that is well-formed JSON but breaks a rule.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// Wrong password or unknown account (deliberately the same).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Right password, disabled account.
    #[error("account disabled")]
    AccountDisabled,
    /// Registration is closed by configuration.
    #[error("registration closed")]
    RegistrationClosed,
    /// `email` or `username` already taken.
    #[error("{0} taken")]
    Conflict(&'static str),
    /// Bad or missing access token.
    #[error("invalid access token")]
    InvalidToken(TokenProblem),
    /// Bad refresh token.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// Authenticated but not allowed (role, or the administrators' self-protection rule).
    #[error("forbidden")]
    Forbidden(&'static str),
    /// No such resource (or not the caller's).
    #[error("not found")]
    NotFound,
    /// The database is unreachable or the server is overloaded.
    #[error("unavailable")]
    Unavailable,
    /// A rate limit or the failed-login back-off: retry after this long.
    #[error("rate limited")]
    RateLimited(RetryAfter),
    /// A wrong, used, superseded or expired code or link token (one answer for each).
    #[error("invalid code")]
    InvalidCode,
    /// The password was right; the account needs a second factor to finish logging in.
    #[error("second factor required")]
    MfaRequired(MfaChallenge),
    /// The password was right; the address must be verified first (`email.require_verified`).
    #[error("email not verified")]
    EmailNotVerified,
    /// A mail endpoint was called but `email.smtp_url` is not set.
    #[error("email not configured")]
    EmailNotConfigured,
    /// A bug or an unexpected failure; the text is for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AuthError::Conflict(what),
            StoreError::Unavailable(e) => {
                if crate::store::is_disk_full(&e) {
                    tracing::error!(
                        "the database's disk is full: writes answer 503 until space is freed \
                         (reads go on)"
                    );
                }
                AuthError::Unavailable
            }
            StoreError::LastHolder => AuthError::Forbidden(admin::LAST_ADMINISTRATOR),
            other => AuthError::Internal(error_chain(&other)),
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => AuthError::Unavailable,
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// A presented (not new) password in the `password` field: required and at most `max`
/// characters; a problem goes into `errors`.
pub(crate) fn presented_password(
    errors: &mut FieldErrors,
    password: Option<&str>,
    max: usize,
) -> Option<crate::domain::Password> {
    let result = match password {
        None => Err(crate::domain::FieldError::Required),
        Some(p) => crate::domain::Password::presented(p, max),
    };
    result
        .map_err(|e| errors.insert("password", e.to_string()))
        .ok()
}

/// `e` and its sources, for the log. Library errors here carry no secrets (sqlx does not
/// echo bound values).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Errors at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database failed.
    #[error("database: {}", error_chain(.0))]
    Store(#[from] StoreError),
    /// Key material failed.
    #[error("signing keys: {0}")]
    Keys(#[from] TokenError),
    /// The hasher failed.
    #[error("password hasher: {0}")]
    Password(#[from] PasswordError),
    /// The rate limiter could not be set up.
    #[error("rate limits: {0}")]
    Limits(String),
    /// The system's random number generator failed.
    #[error("no randomness from the operating system")]
    Random,
    /// A sealed value (a signing key, a TOTP seed, a server secret) could not be opened or
    /// sealed with the configured KEKs.
    #[error("{what} cannot be used: {reason}{hint}")]
    KeyEncryption {
        /// What it is (`signing key \`…\``, `the two-factor seeds of 3 accounts`, …).
        what: String,
        /// Why (never key material).
        reason: EnvelopeError,
        /// What to do about it.
        hint: &'static str,
    },
    /// The mail templates or transport could not be set up.
    #[error("{0}")]
    Mail(#[from] crate::mail::MailError),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything the use cases need. Shared behind an `Arc`; two instances with different
/// configurations can live in one process.
pub struct Auth {
    config: Arc<Config>,
    store: Store,
    keys: keys::Followed,
    hasher: Hasher,
    limits: Arc<Limits>,
    clock: Arc<dyn Clock>,
    /// Binds CSRF tokens to sessions (the cookie transport); shared by every node.
    csrf: aws_lc_rs::hmac::Key,
    /// Per OAuth client with an argon2 secret: the SHA-256 of the secret that last passed.
    verified_clients: moka::sync::Cache<String, [u8; 32]>,
    /// `(client id, client address)` pairs whose last authentication passed through the
    /// failure budget: their right secret is taken without consulting it again (the hot path
    /// of a resource server), for a minute or until a failure from that address. Keyed by a
    /// hash of the pair under this process's random keys (no allocation per request).
    trusted_client_addresses: moka::sync::Cache<u64, ()>,
    /// The keys of that hash.
    client_address_hasher: std::collections::hash_map::RandomState,
    /// At most one client-secret argon2 verification at a time on this node, so wrong client
    /// secrets can never fill the hashing threads that logins need.
    client_hashing: Arc<tokio::sync::Semaphore>,
    /// When this instance started (the load time of keys from files).
    started_at: OffsetDateTime,
    /// The SMTP side, when `email.smtp_url` is set.
    mailer: Option<Arc<crate::mail::Mailer>>,
    /// Poked when a request of this node queues mail, so its sender need not wait a poll.
    mail_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &**self.keys())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads (or on first start generates) the signing keys and builds the hasher.
    pub async fn new(
        config: Arc<Config>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Auth, StartupError> {
        let store = store.with_clock(clock.clone());
        let keys = keys::load_keys(&config, &store, clock.now()).await?;
        let hasher = Hasher::build(&config.password).await?;
        let limits = Arc::new(Limits::new(&config, clock.clone()).map_err(StartupError::Limits)?);
        let csrf = load_csrf_key(&config, &store, clock.now()).await?;
        let mailer = crate::mail::Mailer::build(&config.email)?.map(Arc::new);
        let started_at = clock.now();
        Ok(Auth {
            config,
            store,
            keys,
            hasher,
            limits,
            clock,
            csrf,
            verified_clients: moka::sync::Cache::new(1024),
            trusted_client_addresses: moka::sync::Cache::builder()
                .max_capacity(16 * 1024)
                .time_to_live(Duration::from_secs(60))
                .build(),
            client_hashing: Arc::new(tokio::sync::Semaphore::new(1)),
            client_address_hasher: std::collections::hash_map::RandomState::new(),
            started_at,
            mailer,
            mail_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The CSRF token of `session` for the cookie transport: HMAC-SHA256 of the session id
    /// under the installation's CSRF key, base64url. Bound to the session (a token of another
    /// session, or one made up by whoever can plant a cookie, does not match) and the same for
    /// the session's whole life (it survives refreshes; a new login gets a new one).
    pub fn csrf_token(&self, session: crate::domain::SessionId) -> String {
        use base64::Engine as _;
        let tag = aws_lc_rs::hmac::sign(&self.csrf, session.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `presented` is `session`'s CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: crate::domain::SessionId, presented: &str) -> bool {
        use base64::Engine as _;
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        aws_lc_rs::hmac::verify(&self.csrf, session.to_string().as_bytes(), &tag).is_ok()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sets the gauges read at scrape time: the password-hashing queue and the database pools.
    pub fn record_gauges(&self) {
        crate::metrics::password_hash_queue_depth(self.hasher.queue_depth());
        for (pool, size, idle) in self.store.pool_stats() {
            crate::metrics::db_pool(pool, size, idle);
        }
    }

    /// The rate limiters.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Takes one `action` from the client IP's budget; a denial is audited (at most once a
    /// minute per IP and action) and becomes [`AuthError::RateLimited`].
    pub(crate) async fn limit(&self, action: Action, client: &ClientInfo) -> Result<(), AuthError> {
        let ip = client.ip.as_deref();
        if let Err(retry) = self.limits.check_ip(action, ip).await {
            self.rate_limited(action, client).await;
            return Err(AuthError::RateLimited(retry));
        }
        Ok(())
    }

    pub(crate) async fn rate_limited(&self, action: Action, client: &ClientInfo) {
        crate::metrics::rate_limited(action.name());
        if action == Action::Login {
            crate::metrics::login("throttled");
        }
        tracing::info!(
            event = "rate_limited",
            action = action.name(),
            "request refused by a rate limit"
        );
        if self.limits.should_audit(action, client.ip.as_deref()) {
            self.emit(events::Event::failure(
                "rate_limited",
                client,
                action.name(),
            ))
            .await;
        }
    }

    /// The current time, at the millisecond precision the database keeps, so that a time
    /// computed here and one read back from a row compare exactly.
    pub fn now(&self) -> OffsetDateTime {
        crate::clock::from_millis(crate::clock::to_millis(self.clock.now()))
    }

    /// Deletes sessions that ended more than [`ENDED_SESSION_RETENTION`] ago, erases sealed
    /// successors whose grace window is over, and deletes audit events past `audit.retention`.
    /// Run by the server every [`PURGE_INTERVAL`] and by `keygate purge`; safe on many nodes.
    pub async fn purge(&self) -> Result<PurgeCounts, AuthError> {
        let now = self.now();
        let ago = |d: Duration| now - time::Duration::try_from(d).unwrap_or(time::Duration::ZERO);
        self.limits.sweep();
        let counts = self
            .store
            .purge(
                ago(ENDED_SESSION_RETENTION),
                ago(self.config.refresh_reuse_grace),
                ago(self.config.audit_retention),
                now,
            )
            .await?;
        // The revocation feed must outlive every access token of its sessions.
        let keep = self.config.access_ttl + self.config.leeway + Duration::from_secs(60);
        let revocations = self
            .store
            .purge_revocations(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
            .await?;
        tracing::info!(
            revocations,
            sessions = counts.sessions,
            sealed_successors = counts.sealed_successors,
            audit_events = counts.audit_events,
            mail = counts.mail,
            "purged"
        );
        Ok(counts)
    }
}

/// How long an ended (revoked or expired) session stays visible to operators before it is
/// purged. Its refresh tokens stop working the moment it ends, not when it is purged.
pub const ENDED_SESSION_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The name of the CSRF key among the server secrets.
pub const CSRF_SECRET: &str = "csrf";

/// How often a running server purges.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// The CSRF key: generated by the first node that starts, then read by every node.
/// Sealed under the key-encryption key when one is configured; the start-up also test-opens
/// the TOTP seeds (every sealed class is checked before the node serves).
async fn load_csrf_key(
    config: &Config,
    store: &Store,
    now: OffsetDateTime,
) -> Result<aws_lc_rs::hmac::Key, StartupError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut candidate = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut candidate)
        .map_err(|_| StartupError::Random)?;
    let envelope = config.signing.envelope();
    let (secret, _) =
        sealed::server_secret(&envelope, store, CSRF_SECRET, &candidate, now, false).await?;
    sealed::seal_totp_seeds(&envelope, store, false).await?;
    Ok(aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        &secret,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    //! Logins racing a revocation: the password check is held open (the hasher's hold point)
    //! while the account is disabled or given a new password. On SQLite, and on PostgreSQL when
    //! `KEYGATE_TEST_DATABASE_URL` is set (always in CI).

    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::ClientInfo;
    use crate::store::UserRecord;

    const PASSWORD: &str = "correct horse battery staple";
    const NEW_PASSWORD: &str = "a brand new horse battery staple";

    async fn auth_on(url: &str) -> Auth {
        let config = Config::from_toml(&format!(
            "database_url = \"{url}\"\nrate_limits.login = \"1000/1m\""
        ))
        .expect("config");
        let store = Store::connect(&config).await.expect("store");
        store.migrate().await.expect("migrate");
        Auth::new(Arc::new(config), store, Arc::new(ManualClock::new()))
            .await
            .expect("auth")
    }

    async fn user(auth: &Auth, email: &str) -> UserRecord {
        let input = Registration {
            email: Some(email.to_owned()),
            password: Some(PASSWORD.to_owned()),
            ..Default::default()
        };
        auth.register(input, &ClientInfo::default())
            .await
            .expect("register")
    }

    /// Starts a login of `email` and returns once its password check is done and held.
    async fn held_login<'a>(
        auth: &'a Arc<Auth>,
        email: &str,
    ) -> (
        tokio::sync::MutexGuard<'a, ()>,
        tokio::task::JoinHandle<Result<TokenPair, AuthError>>,
    ) {
        let gate = auth.hasher.hold.arm().await;
        let login = tokio::spawn({
            let auth = auth.clone();
            let email = email.to_owned();
            async move {
                auth.login(
                    Some(email),
                    Some(PASSWORD.to_owned()),
                    ClientInfo::default(),
                )
                .await
            }
        });
        auth.hasher.hold.reached().await;
        (gate, login)
    }

    async fn live_sessions(auth: &Auth, user: &UserRecord) -> usize {
        auth.store
            .live_sessions(user.id, auth.now())
            .await
            .expect("sessions")
            .len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_login_that_checked_the_password_before_a_revocation_opens_no_session() {
        for (url, _dir) in crate::testing::databases().await {
            let auth = Arc::new(auth_on(&url).await);
            let operator = ClientInfo::default();

            // Nothing changes while the login is held: it succeeds (the hold itself is harmless).
            let ada = user(&auth, "ada@example.com").await;
            let (gate, login) = held_login(&auth, "ada@example.com").await;
            drop(gate);
            assert!(login.await.expect("login").is_ok(), "{url}");

            // An operator disables the account.
            let bob = user(&auth, "bob@example.com").await;
            let (gate, login) = held_login(&auth, "bob@example.com").await;
            let disable = UserPatch {
                is_active: Some(false),
                ..Default::default()
            };
            auth.update_user(Actor::Operator, &bob.id.to_string(), disable, &operator)
                .await
                .expect("disable");
            drop(gate);
            let result = login.await.expect("login");
            assert!(
                matches!(result, Err(AuthError::AccountDisabled)),
                "{url}: {result:?}"
            );
            assert_eq!(live_sessions(&auth, &bob).await, 0, "{url}");

            // An operator resets the password.
            let cy = user(&auth, "cy@example.com").await;
            let (gate, login) = held_login(&auth, "cy@example.com").await;
            auth.reset_password(&cy.id.to_string(), NEW_PASSWORD, &operator)
                .await
                .expect("reset");
            drop(gate);
            let result = login.await.expect("login");
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "{url}: {result:?}"
            );
            assert_eq!(live_sessions(&auth, &cy).await, 0, "{url}");

            // The user changes their password from another session: only that session stays.
            let di = user(&auth, "di@example.com").await;
            let first = auth
                .login(
                    Some("di@example.com".into()),
                    Some(PASSWORD.into()),
                    ClientInfo::default(),
                )
                .await
                .expect("first login");
            let me = auth
                .authenticate(Some(&first.access_token))
                .await
                .expect("principal");
            let (gate, login) = held_login(&auth, "di@example.com").await;
            auth.change_password(
                &me,
                Some(PASSWORD.into()),
                Some(NEW_PASSWORD.into()),
                &ClientInfo::default(),
            )
            .await
            .expect("change");
            drop(gate);
            let result = login.await.expect("login");
            assert!(
                matches!(result, Err(AuthError::InvalidCredentials)),
                "{url}: {result:?}"
            );
            assert_eq!(live_sessions(&auth, &di).await, 1, "{url}");
            assert_eq!(live_sessions(&auth, &ada).await, 1, "{url}");
        }
    }
}
