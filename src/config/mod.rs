//! Configuration: built-in defaults < `keygate.toml` (or `--config FILE`) < `KEYGATE_*`
//! environment variables < command-line flags, as OPERATIONS.md specifies.
//!
//! Loading happens in two steps. Figment layers the sources into a `RawConfig` whose every
//! field is optional and which rejects unknown keys; then [`Config::try_from`] turns it into the
//! validated [`Config`] the rest of the server uses, with errors that name the key and the fix.

mod email;
mod oauth;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

pub use email::{EmailConfig, MfaConfig, SmtpConfig, SmtpTls};
pub(crate) use oauth::sha256;
pub use oauth::{ClientSecret, OAuthClient, OAuthConfig};

/// The file read from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "keygate.toml";

/// Argon2id parameters below these are refused (OWASP's recommendation, also the defaults).
pub const MIN_ARGON2_MEMORY_KIB: u32 = 19_456;
/// See [`MIN_ARGON2_MEMORY_KIB`].
pub const MIN_ARGON2_ITERATIONS: u32 = 2;

/// A configuration problem: one sentence naming the key and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn key(key: &str, problem: impl fmt::Display) -> Self {
        ConfigError(format!("invalid configuration `{key}`: {problem}"))
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the HTTP server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`; may hold a password, so it is a secret.
    pub database_url: SecretString,
    /// Most connections in the pool (PostgreSQL; SQLite: readers, plus one writer).
    pub database_max_connections: u32,
    /// How long a request waits for a connection before answering 503.
    pub database_acquire_timeout: Duration,
    /// `iss` claim of every token.
    pub issuer: String,
    /// Audiences accepted when verifying; tokens are issued for the first.
    pub audience: Vec<String>,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Lifetime of each refresh token from its issue.
    pub refresh_ttl: Duration,
    /// Absolute cap on a session, however often it refreshes.
    pub session_max_lifetime: Option<Duration>,
    /// How long after a rotation the previous refresh token still returns the same successor.
    pub refresh_reuse_grace: Duration,
    /// Clock skew allowed when verifying.
    pub leeway: Duration,
    /// Token signing.
    pub signing: SigningConfig,
    /// Password hashing and policy.
    pub password: PasswordConfig,
    /// Rate limits and brute-force defence.
    pub rate_limits: RateLimitsConfig,
    /// Redis for limits shared across nodes; in-process memory when unset.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key Keygate writes (several deployments can share one Redis).
    pub redis_key_prefix: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// A client must send its request headers within this (each request's, and so an idle
    /// keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY;
    /// an idle HTTP/1.1 keep-alive connection goes after `header_read_timeout` already).
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap a newcomer takes the place of the oldest
    /// connection that has not sent a whole request yet, else of the one idle the longest
    /// (no request in flight); only when every connection is busy is it refused.
    pub max_connections: usize,
    /// Open connections per client address (an IPv6 client's by its `rate_limits.ipv6_prefix`
    /// network) at most; `trusted_proxies` are exempt. 0: no cap.
    pub max_connections_per_ip: usize,
    /// A whole request must complete within this (503 otherwise).
    pub request_timeout: Duration,
    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
    /// `metrics.*`: who may read `GET /metrics`.
    pub metrics: MetricsConfig,
    /// Whether anyone may register.
    pub registration: Registration,
    /// Sessions a user may hold at once; the least recently used ends beyond it.
    pub max_sessions_per_user: u32,
    /// Keep only the /24 (IPv4) or /48 (IPv6) network of a session's IP.
    pub truncate_session_ip: bool,
    /// How long audit events are kept.
    pub audit_retention: Duration,
    /// `cookies.*`: the browser cookie transport.
    pub cookies: CookiesConfig,
    /// `cors.*`: origins that may call the API from a browser, with credentials.
    pub cors: CorsConfig,
    /// `oauth.*`: clients of the OAuth endpoints.
    pub oauth: OAuthConfig,
    /// Where the hosted pages are served (default: `issuer`), without a trailing slash.
    pub public_url: String,
    /// `email.*`: outgoing mail.
    pub email: EmailConfig,
    /// `mfa.*`: two-factor authentication.
    pub mfa: MfaConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `signing.*`
#[derive(Clone, Debug)]
pub struct SigningConfig {
    /// The one algorithm tokens are signed and verified with.
    pub algorithm: Algorithm,
    /// HS256 only: the current secret.
    pub secret: Option<SecretString>,
    /// HS256 only: older secrets that still verify during a rotation.
    pub previous_secrets: Vec<SecretString>,
    /// The key encryption key (base64 of 32 bytes, checked) that seals stored private keys;
    /// from `signing.key_encryption_key` or the file `signing.key_encryption_key_file`.
    pub key_encryption_key: Option<SecretString>,
    /// Older key encryption keys: they still open what they sealed (`keygate keys rekey`).
    pub previous_key_encryption_keys: Vec<SecretString>,
    /// How long a new key is published before it signs (`signing.rotation.publish_ahead`).
    pub publish_ahead: Duration,
    /// Automatic rotation every so long (`signing.rotation.interval`); `None`: off.
    pub rotation_interval: Option<Duration>,
    /// Keys the operator manages (`signing.private_key_file`): then Keygate neither generates,
    /// stores nor rotates keys.
    pub key_files: Option<KeyFiles>,
}

/// `signing.private_key_file` and `signing.previous_public_key_files`, read at start.
#[derive(Clone)]
pub struct KeyFiles {
    /// Where the private key came from.
    pub private_path: String,
    /// Its PKCS#8 PEM. Secret.
    pub private_pem: SecretString,
    /// Older public keys (path, PEM): they still verify and are published.
    pub previous_public: Vec<(String, String)>,
}

impl fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFiles")
            .field("private_path", &self.private_path)
            .field(
                "previous_public",
                &self
                    .previous_public
                    .iter()
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What `config check` and the start-up log say when private keys are stored unencrypted.
pub const UNENCRYPTED_KEYS_WARNING: &str = "signing keys are stored unencrypted in the database: \
     set signing.key_encryption_key (32 random bytes, base64) to encrypt them";

impl SigningConfig {
    /// Whether private signing keys are stored in the database without encryption (an
    /// asymmetric algorithm and no key encryption key).
    pub fn stores_keys_unencrypted(&self) -> bool {
        self.algorithm != Algorithm::HS256
            && self.key_files.is_none()
            && self.key_encryption_key.is_none()
    }

    /// The envelope that seals and opens stored private keys with the configured KEKs.
    pub fn envelope(&self) -> crate::envelope::Envelope {
        // The texts were checked when the configuration was read.
        let parse = |t: &SecretString| crate::envelope::parse_kek(t.expose_secret());
        let current = self.key_encryption_key.as_ref().and_then(parse);
        let previous: Vec<_> = self
            .previous_key_encryption_keys
            .iter()
            .filter_map(parse)
            .collect();
        crate::envelope::Envelope::new(current.as_ref(), &previous)
    }
}

/// `password.*`
#[derive(Clone, Debug, Serialize)]
pub struct PasswordConfig {
    /// Argon2id memory cost in KiB.
    pub memory_kib: u32,
    /// Argon2id iterations.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
    /// Shortest accepted password, in characters.
    pub min_length: usize,
    /// Longest accepted password, in characters (also enforced at login).
    pub max_length: usize,
    /// Hashes computed at once; more wait their turn.
    pub max_concurrent_hashes: usize,
    /// Hashes allowed to wait for a turn; beyond it requests get 503 at once.
    pub max_queued_hashes: usize,
    /// Lowest zxcvbn score (0–4) a new password must reach.
    pub min_score: u8,
}

/// A rate: `count` events per `period` (`20/1m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (also the burst).
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_duration(self.period))
    }
}

/// Parses `20/1m`: a whole number, a slash, a duration.
pub fn parse_rate(s: &str) -> Option<Rate> {
    let (count, period) = s.trim().split_once('/')?;
    let count: u32 = count.trim().parse().ok()?;
    let period = parse_duration(period)?;
    (count > 0 && !period.is_zero()).then_some(Rate { count, period })
}

/// `rate_limits.*`
#[derive(Clone, Debug)]
pub struct RateLimitsConfig {
    /// Whether any limit is enforced.
    pub enabled: bool,
    /// `POST /auth/login` per client IP.
    pub login: Rate,
    /// `POST /auth/register` per client IP.
    pub register: Rate,
    /// `POST /auth/refresh` per client IP.
    pub refresh: Rate,
    /// `POST /auth/password` per client IP.
    pub password: Rate,
    /// `POST /oauth/token` per client IP.
    pub token: Rate,
    /// Failed logins per account and per (account, IP) before exponential back-off starts.
    pub failed_logins: Rate,
    /// IPv6 clients are limited per network of this many bits (IPv4 per address).
    pub ipv6_prefix: u8,
}

/// `registration`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register.
    Open,
    /// Only admins and the CLI create users.
    Closed,
}

/// `cookies.*`
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CookiesConfig {
    /// `Secure` on every cookie; `false` only for local development over plain HTTP.
    pub secure: bool,
    /// `Domain` of every cookie; unset: the host that set it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `cors.*`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CorsConfig {
    /// Exact origins (`scheme://host[:port]`, no path) that get CORS grants with credentials.
    /// Empty: no CORS header is ever sent.
    pub allowed_origins: Vec<String>,
}

/// `metrics.*`: `GET /metrics` is open to loopback clients; anyone else needs the bearer
/// `token` or an address in `allowed_networks`.
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    /// A bearer token that opens `/metrics` from anywhere.
    pub token: Option<SecretString>,
    /// Client networks that may read `/metrics` without the token.
    pub allowed_networks: Vec<ipnet::IpNet>,
}

/// `log.*`
#[derive(Clone, Debug, Serialize)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `keygate=debug,info`.
    pub level: String,
}

/// `log.format`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where the configuration comes from, besides defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config FILE`; without it `keygate.toml` is read when present.
    pub file: Option<PathBuf>,
    /// Values from command-line flags, as dotted keys, e.g. `("listen", "0.0.0.0:80")`.
    pub flags: Vec<(String, String)>,
    /// Read `KEYGATE_*` variables (turned off by tests that must not see the environment).
    pub environment: bool,
}

impl Config {
    /// Loads and validates the configuration from `sources`.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        match &sources.file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError(format!(
                        "configuration file {} does not exist: check the --config path",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
                }
            }
        }
        if sources.environment {
            let env = Env::prefixed("KEYGATE_").split("__");
            let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v)).collect();
            figment = merge_strings(figment, environment_pairs(vars.into_iter()));
        }
        figment = merge_strings(figment, sources.flags.iter().cloned());
        Self::from_figment(figment)
    }

    /// Parses a TOML document on its own (no environment, no file), for tests and embedding.
    pub fn from_toml(toml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(toml)))
    }

    /// Parses a TOML document with environment variables layered over it, as [`Config::load`]
    /// does with a file and the process environment, but from the given values: `vars` are
    /// `(NAME, value)` with names as in the environment (`KEYGATE_RATE_LIMITS__ENABLED`);
    /// names without the `KEYGATE_` prefix are ignored, as the environment's are. For the
    /// configuration fuzz target and for embedding.
    pub fn from_toml_and_environment(
        toml: &str,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let figment = Figment::from(Toml::string(toml));
        // The names as Figment's `Env::prefixed("KEYGATE_").split("__")` gives them.
        let vars = vars.filter_map(|(name, value)| {
            let key = name.strip_prefix("KEYGATE_")?;
            (!key.is_empty()).then(|| (key.to_ascii_lowercase().replace("__", "."), value))
        });
        Self::from_figment(merge_strings(figment, environment_pairs(vars)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| {
            // Figment's message names the key and the source; never echo a value.
            let kind = describe_without_values(&e.kind);
            let mut msg = format!("invalid configuration: {kind}");
            if !e.path.is_empty() {
                msg = format!("invalid configuration `{}`: {kind}", e.path.join("."));
            }
            if let Some(figment::Source::File(path)) =
                e.metadata.as_ref().and_then(|m| m.source.as_ref())
            {
                msg.push_str(&format!(" (in {})", path.display()));
            }
            ConfigError(msg)
        })?;
        Config::try_from(raw)
    }

    /// The effective configuration as TOML with every secret replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        let view = RedactedView {
            listen: self.listen.to_string(),
            database_url: redact_url(self.database_url.expose_secret()),
            database_max_connections: self.database_max_connections,
            database_acquire_timeout: format_duration(self.database_acquire_timeout),
            issuer: &self.issuer,
            audience: &self.audience,
            access_ttl: format_duration(self.access_ttl),
            refresh_ttl: format_duration(self.refresh_ttl),
            session_max_lifetime: self.session_max_lifetime.map(format_duration),
            refresh_reuse_grace: format_duration(self.refresh_reuse_grace),
            leeway: format_duration(self.leeway),
            registration: self.registration,
            max_sessions_per_user: self.max_sessions_per_user,
            truncate_session_ip: self.truncate_session_ip,
            signing: RedactedSigning {
                algorithm: algorithm_name(self.signing.algorithm),
                secret: self.signing.secret.as_ref().map(|_| "[redacted]"),
                previous_secrets: self
                    .signing
                    .previous_secrets
                    .iter()
                    .map(|_| "[redacted]")
                    .collect(),
                key_encryption_key: self
                    .signing
                    .key_encryption_key
                    .as_ref()
                    .map(|_| "[redacted]"),
                previous_key_encryption_keys: self
                    .signing
                    .previous_key_encryption_keys
                    .iter()
                    .map(|_| "[redacted]")
                    .collect(),
                rotation: RedactedRotation {
                    publish_ahead: format_duration(self.signing.publish_ahead),
                    interval: self
                        .signing
                        .rotation_interval
                        .map_or_else(|| "0".to_owned(), format_duration),
                },
                private_key_file: self
                    .signing
                    .key_files
                    .as_ref()
                    .map(|f| f.private_path.clone()),
                previous_public_key_files: self
                    .signing
                    .key_files
                    .as_ref()
                    .map(|f| f.previous_public.iter().map(|(p, _)| p.clone()).collect())
                    .unwrap_or_default(),
            },
            password: &self.password,
            rate_limits: {
                let r = &self.rate_limits;
                RedactedRateLimits {
                    enabled: r.enabled,
                    login: r.login.to_string(),
                    register: r.register.to_string(),
                    refresh: r.refresh.to_string(),
                    password: r.password.to_string(),
                    token: r.token.to_string(),
                    failed_logins: r.failed_logins.to_string(),
                    ipv6_prefix: r.ipv6_prefix,
                }
            },
            redis_url: self
                .redis_url
                .as_ref()
                .map(|u| redact_url(u.expose_secret())),
            redis_key_prefix: &self.redis_key_prefix,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect(),
            header_read_timeout: format_duration(self.header_read_timeout),
            idle_timeout: format_duration(self.idle_timeout),
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            request_timeout: format_duration(self.request_timeout),
            shutdown_timeout: format_duration(self.shutdown_timeout),
            metrics: RedactedMetrics {
                token: self.metrics.token.as_ref().map(|_| "[redacted]"),
                allowed_networks: self
                    .metrics
                    .allowed_networks
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            audit: RedactedAudit {
                retention: format_duration(self.audit_retention),
            },
            cookies: &self.cookies,
            cors: &self.cors,
            oauth: &self.oauth,
            public_url: &self.public_url,
            email: RedactedEmail {
                smtp_url: self.email.smtp_url_redacted.as_deref(),
                from: self.email.from.as_deref(),
                link_base: &self.email.link_base,
                verification_ttl: format_duration(self.email.verification_ttl),
                reset_ttl: format_duration(self.email.reset_ttl),
                require_verified: self.email.require_verified,
                templates_dir: self
                    .email
                    .templates_dir
                    .as_deref()
                    .map(|p| p.display().to_string()),
                tls_ca_file: self
                    .email
                    .tls_ca
                    .as_ref()
                    .map(|(p, _)| p.display().to_string()),
            },
            mfa: RedactedMfa {
                issuer_name: &self.mfa.issuer_name,
            },
            log: &self.log,
        };
        toml::to_string(&view).unwrap_or_else(|_| String::from("# could not render\n"))
    }

    /// Whether the database is PostgreSQL (otherwise SQLite).
    pub fn is_postgres(&self) -> bool {
        let url = self.database_url.expose_secret();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }
}

/// The `KEYGATE_*` variables as dotted keys. `KEYGATE_CONFIG` names the file and
/// `KEYGATE_TEST_*` belong to the test suite; neither is a configuration key.
fn environment_pairs(
    vars: impl Iterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    vars.filter(|(k, _)| k != "config" && !k.starts_with("test_"))
}

/// A configuration error's text without any value from the configuration: a wrong type or
/// value says what was expected, not what was found, and a TOML syntax error keeps its line,
/// column and reason but not its excerpt of the file (the line may hold a secret; found by the
/// configuration fuzz target: a typo in a `secret = "…"` line printed the secret).
fn describe_without_values(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) => format!("invalid type: expected {expected}"),
        Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
        other => other
            .to_string()
            .lines()
            .filter(|line| {
                let t = line.trim_start();
                let excerpt = t.starts_with('|')
                    || t.split_once(" |").is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    });
                !excerpt
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Layers `key = value` pairs over `figment` as plain strings. (Figment's own environment
/// provider would parse `[…]`, numbers and booleans, mangling a secret that looks like one;
/// each key's own parser reads the string instead.)
fn merge_strings(mut figment: Figment, pairs: impl Iterator<Item = (String, String)>) -> Figment {
    for (key, value) in pairs {
        figment = figment.merge(Serialized::global(&key, value));
    }
    figment
}

/// The configuration name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::HS256 => "HS256",
        _ => "unsupported",
    }
}

#[derive(Serialize)]
struct RedactedView<'a> {
    listen: String,
    database_url: String,
    database_max_connections: u32,
    database_acquire_timeout: String,
    issuer: &'a str,
    audience: &'a [String],
    access_ttl: String,
    refresh_ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_max_lifetime: Option<String>,
    refresh_reuse_grace: String,
    leeway: String,
    registration: Registration,
    max_sessions_per_user: u32,
    truncate_session_ip: bool,
    signing: RedactedSigning,
    password: &'a PasswordConfig,
    rate_limits: RedactedRateLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    redis_key_prefix: &'a str,
    trusted_proxies: Vec<String>,
    header_read_timeout: String,
    idle_timeout: String,
    max_connections: usize,
    max_connections_per_ip: usize,
    request_timeout: String,
    shutdown_timeout: String,
    metrics: RedactedMetrics,
    audit: RedactedAudit,
    cookies: &'a CookiesConfig,
    cors: &'a CorsConfig,
    oauth: &'a OAuthConfig,
    public_url: &'a str,
    email: RedactedEmail<'a>,
    mfa: RedactedMfa<'a>,
    log: &'a LogConfig,
}

#[derive(Serialize)]
struct RedactedEmail<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    smtp_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    link_base: &'a str,
    verification_ttl: String,
    reset_ttl: String,
    require_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    templates_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_ca_file: Option<String>,
}

#[derive(Serialize)]
struct RedactedMfa<'a> {
    issuer_name: &'a str,
}

#[derive(Serialize)]
struct RedactedRateLimits {
    enabled: bool,
    login: String,
    register: String,
    refresh: String,
    password: String,
    token: String,
    failed_logins: String,
    ipv6_prefix: u8,
}

#[derive(Serialize)]
struct RedactedMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'static str>,
    allowed_networks: Vec<String>,
}

#[derive(Serialize)]
struct RedactedAudit {
    retention: String,
}

#[derive(Serialize)]
struct RedactedSigning {
    algorithm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'static str>,
    previous_secrets: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encryption_key: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    previous_key_encryption_keys: Vec<&'static str>,
    rotation: RedactedRotation,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    previous_public_key_files: Vec<String>,
}

#[derive(Serialize)]
struct RedactedRotation {
    publish_ahead: String,
    interval: String,
}

/// A connection URL with every secret-bearing part replaced by `[redacted]`: the password of
/// the userinfo, and the value of every query parameter that carries a secret (`password`,
/// `sslpassword`, `sslkey` and any other whose name speaks of a password, secret, token or
/// key). The user name, host, port, database and other parameters stay, for diagnosis. A URL
/// that does not parse is shown as `[redacted]` when it could hold a secret at all.
pub(crate) fn redact_url(raw: &str) -> String {
    const MARK: &str = "KEYGATE-REDACTED-MARK";
    let Ok(mut url) = url::Url::parse(raw) else {
        return if raw.contains('@') || raw.contains('?') {
            "[redacted]".to_owned()
        } else {
            raw.to_owned()
        };
    };
    if url.password().is_some() && url.set_password(Some(MARK)).is_err() {
        return "[redacted]".to_owned();
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_parameter(&k) {
                    MARK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.as_str().replace(MARK, "[redacted]")
}

/// Whether a connection-URL query parameter carries a secret.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| name.contains(word))
}

/// The sources' shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Text>,
    database_url: Option<Text>,
    database_max_connections: Option<Text>,
    database_acquire_timeout: Option<Text>,
    issuer: Option<Text>,
    audience: Option<TextList>,
    access_ttl: Option<Text>,
    refresh_ttl: Option<Text>,
    session_max_lifetime: Option<Text>,
    refresh_reuse_grace: Option<Text>,
    leeway: Option<Text>,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default)]
    password: RawPassword,
    #[serde(default)]
    rate_limits: RawRateLimits,
    redis_url: Option<Text>,
    redis_key_prefix: Option<Text>,
    trusted_proxies: Option<TextList>,
    header_read_timeout: Option<Text>,
    idle_timeout: Option<Text>,
    max_connections: Option<Text>,
    max_connections_per_ip: Option<Text>,
    request_timeout: Option<Text>,
    shutdown_timeout: Option<Text>,
    #[serde(default)]
    metrics: RawMetrics,
    registration: Option<Text>,
    max_sessions_per_user: Option<Text>,
    truncate_session_ip: Option<Text>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    cookies: RawCookies,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    oauth: oauth::RawOAuth,
    public_url: Option<Text>,
    #[serde(default)]
    email: email::RawEmail,
    #[serde(default)]
    mfa: email::RawMfa,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookies {
    secure: Option<Text>,
    domain: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allowed_origins: Option<TextList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    enabled: Option<Text>,
    login: Option<Text>,
    register: Option<Text>,
    refresh: Option<Text>,
    password: Option<Text>,
    token: Option<Text>,
    failed_logins: Option<Text>,
    ipv6_prefix: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    token: Option<Text>,
    allowed_networks: Option<TextList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    retention: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    algorithm: Option<Text>,
    secret: Option<Text>,
    previous_secrets: Option<TextList>,
    key_encryption_key: Option<Text>,
    key_encryption_key_file: Option<Text>,
    previous_key_encryption_keys: Option<TextList>,
    rotation: Option<RawRotation>,
    private_key_file: Option<Text>,
    previous_public_key_files: Option<TextList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    publish_ahead: Option<Text>,
    interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    memory_kib: Option<Text>,
    iterations: Option<Text>,
    parallelism: Option<Text>,
    min_length: Option<Text>,
    max_length: Option<Text>,
    max_concurrent_hashes: Option<Text>,
    max_queued_hashes: Option<Text>,
    min_score: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<Text>,
    level: Option<Text>,
}

/// A scalar written as a string, number or boolean (the environment and flags give strings,
/// TOML gives typed values); parsed later by the key that knows its meaning.
#[derive(Debug, Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list written as an array, or in the environment as a comma-separated string.
#[derive(Debug, Clone)]
struct TextList(Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            List(Vec<Text>),
            One(Text),
        }
        Ok(match Either::deserialize(d)? {
            Either::List(items) => TextList(items.into_iter().map(|t| t.0).collect()),
            Either::One(t) => TextList(
                t.0.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        })
    }
}

fn text(v: Option<Text>, default: &str) -> String {
    v.map(|t| t.0).unwrap_or_else(|| default.to_owned())
}

fn number<T: std::str::FromStr>(key: &str, v: Option<Text>, default: T) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(t) => {
            t.0.trim()
                .parse()
                .map_err(|_| ConfigError::key(key, "expected a whole number"))
        }
    }
}

fn boolean(key: &str, v: Option<Text>, default: bool) -> Result<bool, ConfigError> {
    match v.map(|t| t.0.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ConfigError::key(key, "expected `true` or `false`")),
    }
}

fn duration(key: &str, v: Option<Text>, default: &str) -> Result<Duration, ConfigError> {
    let s = text(v, default);
    parse_duration(&s).ok_or_else(|| {
        ConfigError::key(
            key,
            "expected a duration such as `10s`, `15m`, `12h` or `30d` (or `0`)",
        )
    })
}

/// A list of IP addresses or CIDR networks.
fn networks(key: &str, v: Option<TextList>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    v.map(|l| l.0)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::key(
                        key,
                        "expected IP addresses or CIDR networks such as `10.0.0.0/8`",
                    )
                })
        })
        .collect()
}

fn positive_duration(key: &str, v: Option<Text>, default: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, v, default)?;
    if d.is_zero() {
        return Err(ConfigError::key(
            key,
            format!("must be longer than zero (the default is `{default}`)"),
        ));
    }
    Ok(d)
}

/// Parses `0` or a whole number followed by one unit: `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

/// The shortest exact rendering of `d` in the syntax [`parse_duration`] reads.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let listen_text = text(raw.listen, "127.0.0.1:8080");
        let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            ConfigError::key(
                "listen",
                "expected an address and port such as `127.0.0.1:8080`",
            )
        })?;

        let database_url = text(raw.database_url, "sqlite://keygate.db");
        let db = database_url.trim();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(ConfigError::key(
                "database_url",
                "expected `sqlite://PATH` or `postgres://USER@HOST/DATABASE`",
            ));
        }

        let database_max_connections = number(
            "database_max_connections",
            raw.database_max_connections,
            16u32,
        )?;
        if !(1..=1000).contains(&database_max_connections) {
            return Err(ConfigError::key(
                "database_max_connections",
                "must be between 1 and 1000",
            ));
        }
        let database_acquire_timeout = positive_duration(
            "database_acquire_timeout",
            raw.database_acquire_timeout,
            "3s",
        )?;

        let issuer = text(raw.issuer, "http://127.0.0.1:8080");
        if !(issuer.starts_with("http://") || issuer.starts_with("https://"))
            || issuer.len() <= "https://".len()
            || issuer.contains(char::is_whitespace)
        {
            return Err(ConfigError::key(
                "issuer",
                "expected an absolute http(s) URL such as `https://auth.example.com`",
            ));
        }

        let audience = raw
            .audience
            .map(|l| l.0)
            .unwrap_or_else(|| vec!["keygate".to_owned()]);
        if audience.is_empty() || audience.iter().any(|a| a.trim().is_empty()) {
            return Err(ConfigError::key(
                "audience",
                "give at least one non-empty audience",
            ));
        }

        let access_ttl = positive_duration("access_ttl", raw.access_ttl, "15m")?;
        let refresh_ttl = positive_duration("refresh_ttl", raw.refresh_ttl, "30d")?;
        let session_max_lifetime = match raw.session_max_lifetime {
            None => None,
            Some(t) => Some(positive_duration("session_max_lifetime", Some(t), "30d")?),
        };
        let refresh_reuse_grace = duration("refresh_reuse_grace", raw.refresh_reuse_grace, "10s")?;
        if refresh_reuse_grace > Duration::from_secs(300) {
            return Err(ConfigError::key(
                "refresh_reuse_grace",
                "at most `5m`: a long window lets a stolen token be replayed",
            ));
        }
        let leeway = duration("leeway", raw.leeway, "30s")?;
        if leeway > Duration::from_secs(300) {
            return Err(ConfigError::key("leeway", "at most `5m`"));
        }

        let signing = signing(raw.signing)?;
        let password = password(raw.password)?;
        let rate_limits = rate_limits(raw.rate_limits)?;
        let redis_url = match raw.redis_url {
            None => None,
            Some(t) if t.0.starts_with("redis://") || t.0.starts_with("rediss://") => {
                Some(SecretString::from(t.0))
            }
            Some(_) => {
                return Err(ConfigError::key(
                    "redis_url",
                    "expected `redis://HOST:PORT` or `rediss://…`",
                ));
            }
        };
        let redis_key_prefix = text(raw.redis_key_prefix, "keygate:");
        let header_read_timeout =
            positive_duration("header_read_timeout", raw.header_read_timeout, "10s")?;
        let request_timeout = positive_duration("request_timeout", raw.request_timeout, "30s")?;
        let idle_timeout = positive_duration("idle_timeout", raw.idle_timeout, "60s")?;
        let max_connections = number("max_connections", raw.max_connections, 10_000usize)?;
        if max_connections == 0 {
            return Err(ConfigError::key("max_connections", "must be at least 1"));
        }
        let max_connections_per_ip = number(
            "max_connections_per_ip",
            raw.max_connections_per_ip,
            256usize,
        )?;
        let trusted_proxies = networks("trusted_proxies", raw.trusted_proxies)?;
        let shutdown_timeout = duration("shutdown_timeout", raw.shutdown_timeout, "20s")?;
        let metrics = MetricsConfig {
            token: match raw.metrics.token.map(|t| t.0) {
                None => None,
                Some(t) if t.len() >= 16 => Some(SecretString::from(t)),
                Some(_) => {
                    return Err(ConfigError::key(
                        "metrics.token",
                        "must be at least 16 characters (a random string; it opens /metrics)",
                    ));
                }
            },
            allowed_networks: networks("metrics.allowed_networks", raw.metrics.allowed_networks)?,
        };

        let registration = match text(raw.registration, "open").as_str() {
            "open" => Registration::Open,
            "closed" => Registration::Closed,
            _ => {
                return Err(ConfigError::key(
                    "registration",
                    "expected `open` or `closed`",
                ));
            }
        };
        let max_sessions_per_user =
            number("max_sessions_per_user", raw.max_sessions_per_user, 20u32)?;
        if max_sessions_per_user == 0 {
            return Err(ConfigError::key(
                "max_sessions_per_user",
                "must be at least 1",
            ));
        }

        let truncate_session_ip = boolean("truncate_session_ip", raw.truncate_session_ip, false)?;
        let audit_retention = positive_duration("audit.retention", raw.audit.retention, "90d")?;
        let cookies = CookiesConfig {
            secure: boolean("cookies.secure", raw.cookies.secure, true)?,
            domain: match raw.cookies.domain.map(|t| t.0.trim().to_owned()) {
                None => None,
                Some(d) if is_cookie_domain(&d) => Some(d),
                Some(_) => {
                    return Err(ConfigError::key(
                        "cookies.domain",
                        "expected a host name such as `example.com`",
                    ));
                }
            },
        };
        let cors = CorsConfig {
            allowed_origins: raw
                .cors
                .allowed_origins
                .map(|l| l.0)
                .unwrap_or_default()
                .iter()
                .map(|o| {
                    origin(o).ok_or_else(|| {
                        ConfigError::key(
                            "cors.allowed_origins",
                            "expected exact origins such as `https://app.example.com` \
                             (`*` is refused: credentials need named origins)",
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };

        let oauth = oauth::parse(raw.oauth)?;
        let public_url = email::public_url(raw.public_url, &issuer)?;
        let email = email::email(raw.email, &public_url)?;
        let mfa = email::mfa(raw.mfa)?;

        let log = LogConfig {
            format: match raw.log.format.map(|t| t.0).as_deref() {
                None | Some("auto") => LogFormat::Auto,
                Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(_) => {
                    return Err(ConfigError::key(
                        "log.format",
                        "expected `pretty`, `json` or `auto`",
                    ));
                }
            },
            level: text(raw.log.level, "info"),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(ConfigError::key(
                "log.level",
                "expected a filter such as `info` or `keygate=debug`",
            ));
        }

        Ok(Config {
            listen,
            database_url: SecretString::from(db.to_owned()),
            database_max_connections,
            database_acquire_timeout,
            issuer,
            audience,
            access_ttl,
            refresh_ttl,
            session_max_lifetime,
            refresh_reuse_grace,
            leeway,
            signing,
            password,
            rate_limits,
            redis_url,
            redis_key_prefix,
            trusted_proxies,
            header_read_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_ip,
            request_timeout,
            shutdown_timeout,
            metrics,
            registration,
            max_sessions_per_user,
            truncate_session_ip,
            audit_retention,
            cookies,
            cors,
            oauth,
            public_url,
            email,
            mfa,
            log,
        })
    }
}

/// `raw` as an origin (`scheme://host[:port]`, lower-cased, without a trailing slash), or
/// `None` when it is anything else (a path, a query, `*`, `null`, another scheme).
pub fn origin(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && !raw.trim().trim_end_matches('/').ends_with(':');
    ok.then(|| url.origin().ascii_serialization())
}

/// A cookie `Domain`: a host name (letters, digits, `-`, `.`), not an address or a pattern.
fn is_cookie_domain(d: &str) -> bool {
    let d = d.strip_prefix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && d.parse::<std::net::IpAddr>().is_err()
}

fn signing(raw: RawSigning) -> Result<SigningConfig, ConfigError> {
    let name = text(raw.algorithm, "EdDSA");
    let algorithm = keygate_verify::parse_algorithm(&name).map_err(|_| {
        ConfigError::key(
            "signing.algorithm",
            "expected `EdDSA`, `ES256`, `RS256` or `HS256`",
        )
    })?;
    let secret = raw.secret.map(|t| SecretString::from(t.0));
    let previous_secrets: Vec<SecretString> = raw
        .previous_secrets
        .map(|l| l.0.into_iter().map(SecretString::from).collect())
        .unwrap_or_default();
    if algorithm == Algorithm::HS256 {
        let Some(secret) = &secret else {
            return Err(ConfigError::key(
                "signing.secret",
                "HS256 needs a secret of at least 32 bytes (set KEYGATE_SIGNING__SECRET)",
            ));
        };
        if secret.expose_secret().len() < 32 {
            return Err(ConfigError::key(
                "signing.secret",
                "an HS256 secret must be at least 32 bytes; generate one with `openssl rand -base64 48`",
            ));
        }
        if previous_secrets
            .iter()
            .any(|s| s.expose_secret().len() < 32)
        {
            return Err(ConfigError::key(
                "signing.previous_secrets",
                "every previous secret must be at least 32 bytes",
            ));
        }
    } else if secret.is_some() || !previous_secrets.is_empty() {
        return Err(ConfigError::key(
            "signing.secret",
            format!(
                "only used with HS256; remove it or set signing.algorithm = \"HS256\" (now `{name}`)"
            ),
        ));
    }
    let kek_text = match (raw.key_encryption_key, raw.key_encryption_key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                "signing.key_encryption_key_file",
                "set signing.key_encryption_key or signing.key_encryption_key_file, not both",
            ));
        }
        (Some(t), None) => Some(t.0),
        (None, Some(path)) => Some(std::fs::read_to_string(&path.0).map_err(|e| {
            ConfigError::key(
                "signing.key_encryption_key_file",
                format!("cannot read `{}`: {e}", path.0),
            )
        })?),
        (None, None) => None,
    };
    const KEK_HINT: &str =
        "must be base64 of 32 random bytes; generate one with `openssl rand -base64 32`";
    let key_encryption_key = match kek_text {
        Some(t) if crate::envelope::parse_kek(&t).is_none() => {
            return Err(ConfigError::key("signing.key_encryption_key", KEK_HINT));
        }
        Some(t) => Some(SecretString::from(t.trim().to_owned())),
        None => None,
    };
    let previous_key_encryption_keys: Vec<SecretString> = raw
        .previous_key_encryption_keys
        .map(|l| l.0)
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            crate::envelope::parse_kek(&t)
                .map(|_| SecretString::from(t.trim().to_owned()))
                .ok_or_else(|| ConfigError::key("signing.previous_key_encryption_keys", KEK_HINT))
        })
        .collect::<Result<_, _>>()?;
    let rotation = raw.rotation.unwrap_or_default();
    let publish_ahead = duration(
        "signing.rotation.publish_ahead",
        rotation.publish_ahead,
        "1h",
    )?;
    if publish_ahead < Duration::from_secs(1) {
        return Err(ConfigError::key(
            "signing.rotation.publish_ahead",
            "must be at least 1s: verifiers need the next key before it signs",
        ));
    }
    let interval = duration("signing.rotation.interval", rotation.interval, "0")?;
    let rotation_interval = (!interval.is_zero()).then_some(interval);
    if rotation_interval.is_some_and(|i| i <= publish_ahead) {
        return Err(ConfigError::key(
            "signing.rotation.interval",
            "must be longer than signing.rotation.publish_ahead (or `0`: no automatic rotation)",
        ));
    }
    let previous_files = raw
        .previous_public_key_files
        .map(|l| l.0)
        .unwrap_or_default();
    let read = |key: &str, path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::key(key, format!("cannot read `{path}`: {e}")))
    };
    let key_files = match raw.private_key_file {
        None if !previous_files.is_empty() => {
            return Err(ConfigError::key(
                "signing.previous_public_key_files",
                "only used with signing.private_key_file",
            ));
        }
        None => None,
        Some(_) if algorithm == Algorithm::HS256 => {
            return Err(ConfigError::key(
                "signing.private_key_file",
                "only for EdDSA, ES256 or RS256; HS256 signs with signing.secret",
            ));
        }
        Some(path) => Some(KeyFiles {
            private_pem: SecretString::from(read("signing.private_key_file", &path.0)?),
            private_path: path.0,
            previous_public: previous_files
                .into_iter()
                .map(|p| Ok((p.clone(), read("signing.previous_public_key_files", &p)?)))
                .collect::<Result<_, ConfigError>>()?,
        }),
    };
    Ok(SigningConfig {
        algorithm,
        secret,
        previous_secrets,
        key_encryption_key,
        previous_key_encryption_keys,
        publish_ahead,
        rotation_interval,
        key_files,
    })
}

fn rate(key: &str, v: Option<Text>, default: &str) -> Result<Rate, ConfigError> {
    let text = text(v, default);
    parse_rate(&text).ok_or_else(|| {
        ConfigError::key(
            key,
            format!("expected a rate such as `{default}` (count per duration)"),
        )
    })
}

fn rate_limits(raw: RawRateLimits) -> Result<RateLimitsConfig, ConfigError> {
    Ok(RateLimitsConfig {
        enabled: boolean("rate_limits.enabled", raw.enabled, true)?,
        login: rate("rate_limits.login", raw.login, "20/1m")?,
        register: rate("rate_limits.register", raw.register, "5/1m")?,
        refresh: rate("rate_limits.refresh", raw.refresh, "60/1m")?,
        password: rate("rate_limits.password", raw.password, "5/1m")?,
        token: rate("rate_limits.token", raw.token, "20/1m")?,
        failed_logins: rate("rate_limits.failed_logins", raw.failed_logins, "5/15m")?,
        ipv6_prefix: {
            let bits = number("rate_limits.ipv6_prefix", raw.ipv6_prefix, 64u8)?;
            if !(16..=128).contains(&bits) {
                return Err(ConfigError::key(
                    "rate_limits.ipv6_prefix",
                    "expected a prefix length from 16 to 128 bits",
                ));
            }
            bits
        },
    })
}

fn password(raw: RawPassword) -> Result<PasswordConfig, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cfg = PasswordConfig {
        memory_kib: number("password.memory_kib", raw.memory_kib, MIN_ARGON2_MEMORY_KIB)?,
        iterations: number("password.iterations", raw.iterations, MIN_ARGON2_ITERATIONS)?,
        parallelism: number("password.parallelism", raw.parallelism, 1u32)?,
        min_length: number("password.min_length", raw.min_length, 8usize)?,
        max_length: number("password.max_length", raw.max_length, 256usize)?,
        max_concurrent_hashes: number(
            "password.max_concurrent_hashes",
            raw.max_concurrent_hashes,
            cores,
        )?,
        max_queued_hashes: number("password.max_queued_hashes", raw.max_queued_hashes, 64usize)?,
        min_score: number("password.min_score", raw.min_score, 3u8)?,
    };
    if cfg.min_score > 4 {
        return Err(ConfigError::key(
            "password.min_score",
            "must be between 0 and 4 (zxcvbn's scale)",
        ));
    }
    if cfg.memory_kib < MIN_ARGON2_MEMORY_KIB || cfg.memory_kib > 4 * 1024 * 1024 {
        return Err(ConfigError::key(
            "password.memory_kib",
            format!("must be between {MIN_ARGON2_MEMORY_KIB} (OWASP's minimum) and 4194304"),
        ));
    }
    if cfg.iterations < MIN_ARGON2_ITERATIONS || cfg.iterations > 100 {
        return Err(ConfigError::key(
            "password.iterations",
            format!("must be between {MIN_ARGON2_ITERATIONS} and 100"),
        ));
    }
    if cfg.parallelism == 0 || cfg.parallelism > 64 {
        return Err(ConfigError::key(
            "password.parallelism",
            "must be between 1 and 64",
        ));
    }
    if cfg.min_length < 8 {
        return Err(ConfigError::key(
            "password.min_length",
            "must be at least 8",
        ));
    }
    if cfg.max_length < cfg.min_length || cfg.max_length > 1024 {
        return Err(ConfigError::key(
            "password.max_length",
            "must be at least password.min_length and at most 1024",
        ));
    }
    if cfg.max_concurrent_hashes == 0 {
        return Err(ConfigError::key(
            "password.max_concurrent_hashes",
            "must be at least 1",
        ));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {

    /// The configuration's keys, as the real loader's types accept them: each level's fields
    /// are read from serde's "unknown field, expected one of …" answer to a probe, and a field
    /// that answers a probe of its own is a table to descend into (`[[…]]` for a list of them).
    fn accepted_keys() -> std::collections::BTreeSet<String> {
        fn expected(toml_text: &str) -> Option<Vec<String>> {
            let err = toml::from_str::<RawConfig>(toml_text).err()?.to_string();
            // "expected one of `a`, `b`", "expected `a` or `b`", "expected `a`".
            let list = err
                .split("unknown field `keygate_probe`, expected ")
                .nth(1)?;
            Some(
                list.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect(),
            )
        }
        fn walk(path: &str, fields: Vec<String>, out: &mut std::collections::BTreeSet<String>) {
            for field in fields {
                let key = if path.is_empty() {
                    field
                } else {
                    format!("{path}.{field}")
                };
                let table = expected(&format!("[{key}]\nkeygate_probe = 1\n"))
                    .or_else(|| expected(&format!("[[{key}]]\nkeygate_probe = 1\n")));
                match table {
                    Some(inner) => walk(&key, inner, out),
                    None => {
                        out.insert(key);
                    }
                }
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        let top = expected("keygate_probe = 1\n").expect("the top level refuses unknown keys");
        walk("", top, &mut keys);
        keys
    }

    /// The keys `deploy/keygate.example.toml` sets or shows commented out, with their tables.
    fn example_keys(text: &str) -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        let mut table = String::new();
        for line in text.lines() {
            let line = line.trim();
            // A commented-out key or table is `# key = …`; `# # …` is a comment inside one.
            let code = line.strip_prefix("# ").unwrap_or(line);
            if code.starts_with('#')
                || code.is_empty()
                || (line.starts_with('#') && !code.contains(" = ") && !code.starts_with('['))
            {
                continue;
            }
            if let Some(name) = code.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
                table = name.to_owned();
            } else if let Some(name) = code.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                table = name.to_owned();
            } else if let Some((key, _)) = code.split_once(" = ") {
                keys.insert(if table.is_empty() {
                    key.to_owned()
                } else {
                    format!("{table}.{key}")
                });
            }
        }
        keys
    }

    #[test]
    fn the_example_configuration_has_every_key_at_its_default_and_loads() {
        let text = include_str!("../../deploy/keygate.example.toml");
        let accepted = accepted_keys();
        assert!(accepted.len() > 60, "{accepted:?}");
        assert!(accepted.contains("signing.rotation.publish_ahead"));
        assert!(accepted.contains("oauth.clients.secret_hash"));
        let shown = example_keys(text);
        let missing: Vec<_> = accepted.difference(&shown).collect();
        let unknown: Vec<_> = shown.difference(&accepted).collect();
        assert!(
            missing.is_empty(),
            "keys missing from deploy/keygate.example.toml: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "keys the loader does not know: {unknown:?}"
        );
        // Every line that sets a key sets it to its default: the file loads through the real
        // loader and means exactly what no file means.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, text).unwrap();
        let from_file = Config::load(&Sources {
            file: Some(path),
            flags: Vec::new(),
            environment: false,
        })
        .expect("the example loads");
        let defaults = Config::from_toml("").unwrap();
        assert_eq!(from_file.redacted(), defaults.redacted());
    }
    use super::*;

    #[test]
    fn defaults_match_operations_md() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose_secret(), "sqlite://keygate.db");
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.audience, vec!["keygate"]);
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(10));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.signing.algorithm, Algorithm::EdDSA);
        assert_eq!(c.password.memory_kib, 19_456);
        assert_eq!(c.password.iterations, 2);
        assert_eq!(c.password.parallelism, 1);
        assert_eq!(c.max_sessions_per_user, 20);
        assert_eq!((c.max_connections, c.max_connections_per_ip), (10_000, 256));
        assert_eq!(
            c.cookies,
            CookiesConfig {
                secure: true,
                domain: None
            }
        );
        assert!(c.cors.allowed_origins.is_empty());
        assert_eq!(c.registration, Registration::Open);
        assert!(c.session_max_lifetime.is_none());
    }

    #[test]
    fn rates_parse_and_render() {
        let r = parse_rate("20/1m").unwrap();
        assert_eq!((r.count, r.period), (20, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "20/1m");
        for bad in ["", "20", "/1m", "0/1m", "20/0", "x/1m", "20/1 m"] {
            assert!(parse_rate(bad).is_none(), "{bad}");
        }
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.rate_limits.failed_logins.to_string(), "5/15m");
        assert_eq!(c.rate_limits.register.to_string(), "5/1m");
        let e = err("rate_limits.login = \"lots\"");
        assert!(e.contains("`rate_limits.login`"), "{e}");
        let e = err("trusted_proxies = [\"not an ip\"]");
        assert!(e.contains("`trusted_proxies`"), "{e}");
        let c = Config::from_toml("trusted_proxies = \"10.0.0.0/8, 192.168.1.1\"").unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn durations_parse_and_render() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "m", "15", "15 m", "-1s", "1.5h", "15min"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(2_592_000)), "30d");
        assert_eq!(format_duration(Duration::from_secs(61)), "61s");
    }

    fn err(toml: &str) -> String {
        Config::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn key_files_and_rotation_settings_are_checked() {
        let e = err("signing.previous_public_key_files = [\"/x.pem\"]");
        assert!(e.contains("only used with signing.private_key_file"), "{e}");
        let e = err(
            "signing.algorithm = \"HS256\"\nsigning.secret = \"0123456789abcdef0123456789abcdef\"\n\
             signing.private_key_file = \"/x.pem\"",
        );
        assert!(e.contains("HS256 signs with signing.secret"), "{e}");
        let e = err("signing.private_key_file = \"/nonexistent/key.pem\"");
        assert!(e.contains("cannot read `/nonexistent/key.pem`"), "{e}");
        let e = err("signing.rotation.publish_ahead = \"0\"");
        assert!(e.contains("at least 1s"), "{e}");
        let e = err("signing.rotation.publish_ahead = \"1h\"\nsigning.rotation.interval = \"30m\"");
        assert!(
            e.contains("longer than signing.rotation.publish_ahead"),
            "{e}"
        );
        let c = Config::from_toml("signing.rotation.interval = \"30d\"").unwrap();
        assert_eq!(
            c.signing.rotation_interval,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.signing.publish_ahead, Duration::from_secs(3600));
        assert!(
            c.redacted().contains("interval = \"30d\""),
            "{}",
            c.redacted()
        );
    }

    #[test]
    fn key_encryption_keys_are_32_bytes_of_base64_from_one_place() {
        let kek = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let c = Config::from_toml(&format!("signing.key_encryption_key = \"{kek}\"")).unwrap();
        assert!(!c.signing.stores_keys_unencrypted());
        assert!(c.signing.envelope().seals());
        assert!(
            Config::from_toml("")
                .unwrap()
                .signing
                .stores_keys_unencrypted()
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kek");
        std::fs::write(&file, format!("{kek}\n")).unwrap();
        let from_file = Config::from_toml(&format!(
            "signing.key_encryption_key_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        assert_eq!(
            from_file.signing.envelope().current_id(),
            c.signing.envelope().current_id()
        );
        let e = err(&format!(
            "signing.key_encryption_key = \"{kek}\"\nsigning.key_encryption_key_file = \"{}\"",
            file.display()
        ));
        assert!(e.contains("not both"), "{e}");
        let e = err("signing.key_encryption_key_file = \"/nonexistent/kek\"");
        assert!(e.contains("cannot read `/nonexistent/kek`"), "{e}");
        let e = err("signing.key_encryption_key = \"c2hvcnQ=\"");
        assert!(
            e.contains("32 random bytes") && !e.contains("c2hvcnQ"),
            "{e}"
        );
        let e = err("signing.previous_key_encryption_keys = [\"nope\"]");
        assert!(e.contains("`signing.previous_key_encryption_keys`"), "{e}");
        // Redacted in `config check`.
        assert!(!c.redacted().contains(kek));
    }

    #[test]
    fn invalid_values_name_the_key_and_the_fix() {
        let e = err("access_ttl = \"0\"");
        assert!(
            e.contains("`access_ttl`") && e.contains("longer than zero"),
            "{e}"
        );
        let e = err("refresh_ttl = \"soon\"");
        assert!(e.contains("`refresh_ttl`") && e.contains("15m"), "{e}");
        let e = err("signing.algorithm = \"HS256\"\nsigning.secret = \"short\"");
        assert!(
            e.contains("`signing.secret`") && e.contains("32 bytes"),
            "{e}"
        );
        assert!(!e.contains("short"), "the secret must not be echoed: {e}");
        let e = err("signing.algorithm = \"HS256\"");
        assert!(e.contains("`signing.secret`"), "{e}");
        let e = err("issuer = \"not a url\"");
        assert!(e.contains("`issuer`"), "{e}");
        let e = err("database_url = \"mysql://x\"");
        assert!(e.contains("`database_url`"), "{e}");
        let e = err("listen = \"nowhere\"");
        assert!(e.contains("`listen`"), "{e}");
        for bad in [
            "*",
            "https://app.example.com/path",
            "app.example.com",
            "null",
            "ftp://x.example",
        ] {
            let e = err(&format!("cors.allowed_origins = [\"{bad}\"]"));
            assert!(e.contains("`cors.allowed_origins`"), "{bad}: {e}");
        }
        let e = err("cookies.domain = \"10.0.0.1\"");
        assert!(e.contains("`cookies.domain`"), "{e}");
        let e = err("cookies.secure = \"maybe\"");
        assert!(e.contains("`cookies.secure`"), "{e}");
        let e = err("max_connections = 0");
        assert!(
            e.contains("`max_connections`") && e.contains("at least 1"),
            "{e}"
        );
        let e = err("max_connections_per_ip = \"many\"");
        assert!(e.contains("`max_connections_per_ip`"), "{e}");
        let e = err("[[oauth.clients]]\nid = \"rs\"\nsecret = \"hunter2-\\ typo\"\n");
        assert!(
            !e.contains("hunter2"),
            "a syntax error does not echo the line: {e}"
        );
        assert!(e.contains("line 3"), "{e}");
        let e = err("[[oauth.clients]]\nid = \"rs\"\nsecret = 123456789\n");
        assert!(
            !e.contains("123456789"),
            "a wrong type does not echo the value: {e}"
        );
        let e = err("password.memory_kib = 1024");
        assert!(e.contains("`password.memory_kib`"), "{e}");
        let e = err("signing.algorithm = \"none\"");
        assert!(e.contains("`signing.algorithm`"), "{e}");
    }

    #[test]
    fn variables_layer_over_the_file_as_the_environment_does() {
        let vars = [
            ("KEYGATE_RATE_LIMITS__ENABLED", "false"),
            ("KEYGATE_ACCESS_TTL", "5m"),
            ("OTHER_PROGRAM_SETTING", "ignored"),
            ("KEYGATE_", "ignored"),
        ];
        let c = Config::from_toml_and_environment(
            "access_ttl = \"10m\"\nrefresh_ttl = \"7d\"",
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap();
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.access_ttl, Duration::from_secs(300), "the variable wins");
        assert_eq!(c.refresh_ttl, Duration::from_secs(7 * 86_400));
        let e = Config::from_toml_and_environment(
            "",
            [("KEYGATE_ACCESS_TTL".to_owned(), "soon".to_owned())].into_iter(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("access_ttl"), "{e}");
    }

    #[test]
    fn unknown_keys_are_an_error() {
        let e = err("lisen = \"127.0.0.1:1\"");
        assert!(e.contains("lisen"), "{e}");
        let e = err("[signing]\nalgo = \"EdDSA\"");
        assert!(e.contains("algo"), "{e}");
    }

    #[test]
    fn hs256_with_a_long_secret_is_accepted_and_redacted() {
        let c = Config::from_toml(
            "signing.algorithm = \"HS256\"\nsigning.secret = \"0123456789abcdef0123456789abcdef-top\"\n\
             database_url = \"postgres://kg:hunter2@db/keygate\"",
        )
        .unwrap();
        let shown = c.redacted();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://kg:[redacted]@db/keygate"),
            "{shown}"
        );
        assert!(shown.contains("secret = \"[redacted]\""), "{shown}");
    }

    #[test]
    fn every_secret_bearing_part_of_a_connection_url_is_redacted() {
        for (url, shown) in [
            (
                "postgres://kg:hunter2@db:5432/keygate?sslmode=verify-full&password=p%40ss1&sslpassword=p2&sslkey=/etc/k.pem",
                "postgres://kg:[redacted]@db:5432/keygate?sslmode=verify-full&password=[redacted]&sslpassword=[redacted]&sslkey=[redacted]",
            ),
            (
                "postgres:///keygate?host=/run/postgresql&user=kg&PASSWORD=s3",
                "postgres:///keygate?host=%2Frun%2Fpostgresql&user=kg&PASSWORD=[redacted]",
            ),
            (
                "redis://:s3cret@cache:6379/0",
                "redis://:[redacted]@cache:6379/0",
            ),
            (
                "rediss://default:s3cret@cache/",
                "rediss://default:[redacted]@cache/",
            ),
            ("sqlite://keygate.db", "sqlite://keygate.db"),
            ("postgres://kg@db/keygate", "postgres://kg@db/keygate"),
            ("not a url with @ secret", "[redacted]"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let c = Config::from_toml(
            "database_url = \"postgres://kg@db/keygate?password=hunter2&sslpassword=hunter3\"\n\
             redis_url = \"redis://u:hunter4@cache:6379\"",
        )
        .unwrap();
        let shown = c.redacted();
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("postgres://kg@db/keygate?password=[redacted]"),
            "{shown}"
        );
    }

    #[test]
    fn lists_accept_arrays_and_comma_separated_strings() {
        let c = Config::from_toml("audience = [\"a\", \"b\"]").unwrap();
        assert_eq!(c.audience, vec!["a", "b"]);
        let c = Config::from_toml("audience = \"a, b\"").unwrap();
        assert_eq!(c.audience, vec!["a", "b"]);
    }

    #[test]
    fn environment_values_are_taken_as_written() {
        let secret_digits = "1234567890123456789012345678901234567890";
        let vars = vec![
            ("signing.algorithm".to_owned(), "HS256".to_owned()),
            ("signing.secret".to_owned(), secret_digits.to_owned()),
            (
                "signing.previous_secrets".to_owned(),
                "[not-a-list-but-a-32-byte-secret], 0123456789abcdef0123456789abcdef".to_owned(),
            ),
            ("config".to_owned(), "ignored.toml".to_owned()),
            ("test_database_url".to_owned(), "ignored".to_owned()),
            ("max_sessions_per_user".to_owned(), "7".to_owned()),
        ];
        let figment = merge_strings(Figment::new(), environment_pairs(vars.into_iter()));
        let c = Config::from_figment(figment).unwrap();
        assert_eq!(c.signing.secret.unwrap().expose_secret(), secret_digits);
        assert_eq!(
            c.signing.previous_secrets[0].expose_secret(),
            "[not-a-list-but-a-32-byte-secret]"
        );
        assert_eq!(c.signing.previous_secrets.len(), 2);
        assert_eq!(c.max_sessions_per_user, 7);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\naccess_ttl = \"5m\"").unwrap();
        let c = Config::load(&Sources {
            file: Some(path),
            flags: vec![("listen".into(), "127.0.0.1:9100".into())],
            environment: false,
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.access_ttl, Duration::from_secs(300));
    }
}
