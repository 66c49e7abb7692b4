//! (feature `remote`) A verifier that follows a running Keygate: its keys from the JWKS URL,
//! its revocations from the revocation feed, and introspection on demand.
//!
//! - **Keys**: fetched at start (which fails if they cannot be), refreshed in the background
//!   when the JWKS `Cache-Control: max-age` runs out, and fetched again when a token names an
//!   unknown `kid` — at most once per [`RemoteConfig::refetch_interval`], so a flood of made-up
//!   `kid`s cannot turn into a flood of fetches. A token whose key is cached never waits for a
//!   fetch.
//! - **Revocations** (with client credentials and [`RemoteConfig::follow_revocations`]): a
//!   background task long-polls `GET /oauth/revocations`; a token whose `sid` ended is refused
//!   with [`VerifyError::Revoked`] about a second after the logout, on whichever Keygate node
//!   it happened.
//! - **Introspection** (with client credentials): [`RemoteVerifier::introspect`] asks Keygate
//!   whether a token is live right now.
//!
//! ```no_run
//! # async fn run() -> Result<(), keygate_verify::RemoteError> {
//! use keygate_verify::{RemoteConfig, RemoteVerifier};
//!
//! let verifier = RemoteVerifier::start(RemoteConfig {
//!     client: Some(("orders-api".into(), "its secret".into())),
//!     follow_revocations: true,
//!     ..RemoteConfig::new("https://auth.example.com", "EdDSA", &["keygate"])
//! })
//! .await?;
//! match verifier.verify("eyJ…").await {
//!     Ok(claims) => println!("user {} in session {}", claims.sub, claims.sid),
//!     Err(e) => println!("refused: {e}"),
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Claims, ConfigError, Verifier, VerifyError};

/// Where and how to follow a Keygate.
#[derive(Clone)]
pub struct RemoteConfig {
    /// Keygate's `issuer` (its public URL): tokens must carry it, and the endpoints are found
    /// under it unless [`RemoteConfig::base_url`] says otherwise.
    pub issuer: String,
    /// Where to reach Keygate when not at `issuer` (an internal address).
    pub base_url: Option<String>,
    /// The configured `signing.algorithm`: the only one accepted.
    pub algorithm: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Clock skew allowed, in seconds.
    pub leeway: u64,
    /// The least time between two fetches caused by unknown `kid`s.
    pub refetch_interval: Duration,
    /// An `oauth.clients` entry (id, secret), for the revocation feed and introspection.
    pub client: Option<(String, String)>,
    /// Follow the revocation feed (needs `client`).
    pub follow_revocations: bool,
    /// How long an ended session is remembered: at least Keygate's `access_ttl + leeway`.
    pub revocation_memory: Duration,
    /// Timeout of each request to Keygate (a long poll adds its wait).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("issuer", &self.issuer)
            .field("base_url", &self.base_url)
            .field("algorithm", &self.algorithm)
            .field("audiences", &self.audiences)
            .field("client", &self.client.as_ref().map(|(id, _)| id))
            .field("follow_revocations", &self.follow_revocations)
            .finish_non_exhaustive()
    }
}

impl RemoteConfig {
    /// Defaults: leeway 30 s, unknown-`kid` refetches at most every 10 s, no client, ended
    /// sessions remembered 1 h, requests time out after 5 s.
    pub fn new(issuer: &str, algorithm: &str, audiences: &[&str]) -> Self {
        RemoteConfig {
            issuer: issuer.to_owned(),
            base_url: None,
            algorithm: algorithm.to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            leeway: 30,
            refetch_interval: Duration::from_secs(10),
            client: None,
            follow_revocations: false,
            revocation_memory: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(5),
        }
    }

    fn base(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(&self.issuer)
            .trim_end_matches('/')
    }
}

/// Why following Keygate failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Keygate could not be reached or answered with an error.
    #[error("request to Keygate failed: {0}")]
    Http(String),
    /// The JWKS did not make a verifier.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Introspection needs `client`.
    #[error("no client credentials configured")]
    NoClient,
}

/// A verifier that follows a running Keygate (module documentation). Cheap to clone; the
/// background tasks stop when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct RemoteVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: RemoteConfig,
    http: reqwest::Client,
    verifier: RwLock<Arc<Verifier>>,
    /// Earliest moment of the next fetch caused by an unknown `kid`.
    next_refetch: Mutex<Instant>,
    fetching: tokio::sync::Mutex<()>,
    /// Ended sessions, with when to forget them.
    revoked: RwLock<HashMap<String, Instant>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `max-age` of a `Cache-Control` header, if any.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let (k, v) = directive.trim().split_once('=')?;
        if k.eq_ignore_ascii_case("max-age") {
            v.trim().parse().ok().map(Duration::from_secs)
        } else {
            None
        }
    })
}

impl RemoteVerifier {
    /// Fetches the keys (failing if they cannot be fetched) and starts the background tasks:
    /// key refresh, and the revocation follower when configured. Call inside a Tokio runtime.
    pub async fn start(config: RemoteConfig) -> Result<RemoteVerifier, RemoteError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout + Duration::from_secs(30))
            .build()
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        let (verifier, fresh_for) = fetch_keys(&http, &config).await?;
        let inner = Arc::new(Inner {
            config,
            http,
            verifier: RwLock::new(Arc::new(verifier)),
            next_refetch: Mutex::new(Instant::now()),
            fetching: tokio::sync::Mutex::new(()),
            revoked: RwLock::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let refresher = tokio::spawn(async move {
            let mut wait = fresh_for;
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                wait = match inner.refetch().await {
                    Ok(fresh_for) => fresh_for,
                    Err(_) => Duration::from_secs(5),
                };
            }
        });
        let mut tasks = vec![refresher.abort_handle()];
        if inner.config.follow_revocations && inner.config.client.is_some() {
            let weak = Arc::downgrade(&inner);
            let follower = tokio::spawn(async move {
                let mut cursor = String::new();
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    match inner.poll_revocations(&cursor).await {
                        Ok(next) => cursor = next,
                        Err(_) => {
                            drop(inner);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            tasks.push(follower.abort_handle());
        }
        if let Ok(mut slot) = inner.tasks.lock() {
            *slot = tasks;
        }
        Ok(RemoteVerifier { inner })
    }

    /// Verifies `token` now: signature and claims with the followed keys (fetching them again
    /// first if it names a `kid` not seen yet, at most once per `refetch_interval`), then
    /// [`VerifyError::Revoked`] if its session ended (when following revocations).
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let current = self.current();
        let claims = match current.verify(token, now_seconds()) {
            Err(VerifyError::UnknownKey) if self.may_refetch() => {
                let _ = self.inner.refetch().await;
                self.current().verify(token, now_seconds())?
            }
            other => other?,
        };
        if self.is_revoked(&claims.sid) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// Whether session `sid` is known to have ended.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.inner
            .revoked
            .read()
            .is_ok_and(|r| r.get(sid).is_some_and(|until| *until > Instant::now()))
    }

    /// Asks Keygate (`POST /oauth/introspect`) about `token`: `Some` with RFC 7662's fields
    /// when it is live now, `None` when it is not. Slower than [`RemoteVerifier::verify`] (a
    /// request per call) but exact: for the rare decision that cannot accept the follower's
    /// second of delay, or for tokens this verifier cannot check itself (refresh tokens).
    ///
    /// ```no_run
    /// # async fn run(verifier: keygate_verify::RemoteVerifier, token: &str)
    /// # -> Result<(), keygate_verify::RemoteError> {
    /// // `verifier` was started with `client: Some((id, secret))` (an `oauth.clients` entry).
    /// match verifier.introspect(token).await? {
    ///     Some(facts) => println!("live: user {} in session {}", facts["sub"], facts["sid"]),
    ///     None => println!("not live: expired, revoked, or not Keygate's"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn introspect(&self, token: &str) -> Result<Option<serde_json::Value>, RemoteError> {
        let (id, secret) = self
            .inner
            .config
            .client
            .as_ref()
            .ok_or(RemoteError::NoClient)?;
        let body = format!("token={}", form_encode(token));
        let r = self
            .inner
            .http
            .post(format!("{}/oauth/introspect", self.inner.config.base()))
            .basic_auth(form_encode(id), Some(form_encode(secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .timeout(self.inner.config.request_timeout)
            .send()
            .await
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        if !r.status().is_success() {
            return Err(RemoteError::Http(format!(
                "introspection answered {}",
                r.status()
            )));
        }
        let value: serde_json::Value = r
            .json()
            .await
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        Ok((value["active"] == true).then_some(value))
    }

    fn current(&self) -> Arc<Verifier> {
        match self.inner.verifier.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes the turn of an unknown-`kid` fetch if one is due.
    fn may_refetch(&self) -> bool {
        let Ok(mut next) = self.inner.next_refetch.lock() else {
            return false;
        };
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + self.inner.config.refetch_interval;
        true
    }
}

impl Inner {
    /// Fetches the keys again (one fetch at a time); returns how long they are fresh.
    async fn refetch(&self) -> Result<Duration, RemoteError> {
        let _turn = self.fetching.lock().await;
        let (verifier, fresh_for) = fetch_keys(&self.http, &self.config).await?;
        if let Ok(mut slot) = self.verifier.write() {
            *slot = Arc::new(verifier);
        }
        Ok(fresh_for)
    }

    /// One long poll of the revocation feed; returns the next cursor.
    async fn poll_revocations(&self, cursor: &str) -> Result<String, RemoteError> {
        let Some((id, secret)) = &self.config.client else {
            return Err(RemoteError::NoClient);
        };
        let wait = 25;
        let r = self
            .http
            .get(format!(
                "{}/oauth/revocations?since={}&wait={wait}",
                self.config.base(),
                form_encode(cursor)
            ))
            .basic_auth(form_encode(id), Some(form_encode(secret)))
            .timeout(self.config.request_timeout + Duration::from_secs(wait))
            .send()
            .await
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        if !r.status().is_success() {
            return Err(RemoteError::Http(format!(
                "revocation feed answered {}",
                r.status()
            )));
        }
        let page: serde_json::Value = r
            .json()
            .await
            .map_err(|e| RemoteError::Http(e.to_string()))?;
        let now = Instant::now();
        let until = now + self.config.revocation_memory;
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.retain(|_, forget_at| *forget_at > now);
            for sid in page["revoked"].as_array().into_iter().flatten() {
                if let Some(sid) = sid.as_str() {
                    revoked.entry(sid.to_owned()).or_insert(until);
                }
            }
        }
        page["cursor"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| RemoteError::Http("revocation feed without a cursor".to_owned()))
    }
}

/// The JWKS as a verifier, and how long it may be cached (its `max-age`, 1 s to 1 h, default
/// 5 min).
async fn fetch_keys(
    http: &reqwest::Client,
    config: &RemoteConfig,
) -> Result<(Verifier, Duration), RemoteError> {
    let r = http
        .get(format!("{}/.well-known/jwks.json", config.base()))
        .timeout(config.request_timeout)
        .send()
        .await
        .map_err(|e| RemoteError::Http(e.to_string()))?;
    if !r.status().is_success() {
        return Err(RemoteError::Http(format!("JWKS answered {}", r.status())));
    }
    let fresh_for = max_age(r.headers())
        .unwrap_or(Duration::from_secs(300))
        .clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let text = r
        .text()
        .await
        .map_err(|e| RemoteError::Http(e.to_string()))?;
    let verifier = Verifier::from_jwks(
        &config.algorithm,
        &text,
        config.issuer.clone(),
        &config.audiences,
    )?
    .with_leeway(config.leeway);
    Ok((verifier, fresh_for))
}

/// `text` as one `application/x-www-form-urlencoded` value (RFC 6749 section 2.3.1 asks
/// client credentials in Basic to be encoded so too).
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
