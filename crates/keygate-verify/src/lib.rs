//! Verify Keygate access tokens in any Rust resource server.
//!
//! Keygate issues short-lived JWT access tokens following the RFC 9068 profile: the header
//! carries `alg`, `typ: "at+jwt"` and `kid`; the claims are `iss`, `sub`, `aud`, `exp`, `iat`,
//! `jti`, `sid`, `roles` and `permissions`. This crate is the one verifier for them: Keygate
//! itself checks its own bearer tokens with it, so every test of the server exercises it.
//!
//! What a [`Verifier`] guarantees, whatever the token says about itself:
//!
//! - the algorithm comes from the verifier's configuration, never from the token header;
//!   `none` and any other algorithm are rejected, and so is an HMAC token checked against a
//!   public key (the classic "HS256 signed with the public key" confusion);
//! - the token is at most [`MAX_TOKEN_LEN`] bytes, checked before any parsing;
//! - `typ` is `at+jwt`; `iss` and `aud` match the configured values;
//! - `exp`, `iat`, `sub`, `jti`, `sid`, `iss` and `aud` are present and well-formed;
//! - `exp` is in the future and `iat` not in the future, both within the configured leeway,
//!   measured against the `now` the caller passes in (so tests and callers control time).
//!
//! What it cannot know alone: whether the token's session was revoked a moment ago. Keygate's
//! own endpoints check that against the database. A resource server learns it with the
//! `remote` feature: `RemoteVerifier` follows Keygate's revocation feed and refuses such a
//! token about a second after the logout, or asks the introspection endpoint on demand.
//!
//! # Features
//!
//! - (none, the default) [`Verifier`]: static keys (a JWKS document, PEM or JWK keys, HS256
//!   secrets); depends on `jsonwebtoken` and `serde` only.
//! - `remote`: `RemoteVerifier` follows a running Keygate: keys from its JWKS URL (cached per
//!   `Cache-Control`, fetched again on an unknown `kid` at most once per interval), the
//!   revocation feed, and introspection. Brings `reqwest` (rustls) and `tokio`.
//! - `axum`: the `VerifiedToken` extractor and `BearerError` (RFC 6750 `invalid_token`
//!   and `insufficient_scope` answers) for axum resource servers; the guards are
//!   [`Claims::require_role`] and [`Claims::require_permission`].
//!
//! A complete resource server is Keygate's `examples/resource_server.rs`.
//!
//! # Example
//!
//! ```
//! use keygate_verify::{Verifier, VerifyError};
//!
//! // The JWKS document as served by Keygate at /.well-known/jwks.json.
//! let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig",
//!     "kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
//! let verifier = Verifier::from_jwks("EdDSA", jwks, "https://auth.example.com", &["my-api"])
//!     .expect("a valid JWKS");
//!
//! // A header and claims that are not a real signature fail, and say why.
//! let err = verifier.verify("not-a-jwt", 1_700_000_000).unwrap_err();
//! assert_eq!(err, VerifyError::Malformed);
//! ```

use std::collections::HashMap;
use std::fmt;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "remote")]
mod remote;

#[cfg(feature = "axum")]
pub use extract::{BearerError, TokenVerifier, Verification, VerifiedToken};
#[cfg(feature = "remote")]
pub use remote::{RemoteConfig, RemoteError, RemoteVerifier};

/// The JOSE library this crate verifies with, for building keys (`DecodingKey`) of the same
/// version as [`Verifier::new`] takes.
pub use jsonwebtoken;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The longest access token accepted, in bytes. Keygate's own tokens are well under 1 KiB even
/// with many roles; anything far longer is rejected before it is parsed.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The `typ` header value of an access token (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of a Keygate access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the Keygate instance's configured `issuer`.
    pub iss: String,
    /// Subject: the user id (a UUID).
    pub sub: String,
    /// Audience: one or more configured audiences.
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// The session (one login on one device) the token belongs to.
    pub sid: String,
    /// The user's roles when the token was issued.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's permissions when the token was issued.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The OAuth client the token was issued to (RFC 9068), for `client_credentials` tokens,
    /// whose `sub` is that client and whose `sid` is `client:<id>` (no session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// How the user authenticated (RFC 8176): `["pwd"]`, or `["pwd", "otp"]` after a second
    /// factor. Empty for `client_credentials` tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Whether the user's email address was verified when the token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

impl Claims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the token carries `permission`.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// A guard for resource servers: `Ok` if the token carries `role`, else [`Forbidden`]
    /// (answer 403; a bad or missing token is 401 and never reaches this point).
    ///
    /// ```
    /// # use keygate_verify::{Audience, Claims};
    /// # let claims = Claims { iss: "i".into(), sub: "u".into(), aud: Audience::One("a".into()),
    /// #     exp: 0, iat: 0, jti: "j".into(), sid: "s".into(),
    /// #     roles: vec!["admin".into()], permissions: vec!["users:read".into()],
    /// #     client_id: None, amr: vec![], email_verified: None };
    /// assert!(claims.require_role("admin").is_ok());
    /// assert!(claims.require_permission("users:write").is_err());
    /// ```
    pub fn require_role(&self, role: &str) -> Result<(), Forbidden> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Forbidden {
                kind: "role",
                name: role.to_owned(),
            })
        }
    }

    /// Like [`Claims::require_role`], for a permission.
    pub fn require_permission(&self, permission: &str) -> Result<(), Forbidden> {
        if self.has_permission(permission) {
            Ok(())
        } else {
            Err(Forbidden {
                kind: "permission",
                name: permission.to_owned(),
            })
        }
    }
}

/// A valid token without the required role or permission: answer 403 `forbidden`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this requires the {kind} `{name}`")]
pub struct Forbidden {
    /// `role` or `permission`.
    pub kind: &'static str,
    /// The missing role or permission.
    pub name: String,
}

/// The `aud` claim: a single string or a list (RFC 7519 section 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `audience`.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// Why a token was rejected. Only [`VerifyError::Expired`] means "refresh and try again";
/// every other variant means the token will never be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Not three base64url parts, or a header or claims that are not JSON.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not the configured algorithm (including `none`).
    #[error("algorithm not allowed")]
    WrongAlgorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// The header's `kid` names no key this verifier knows.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("missing or malformed claim `{0}`")]
    MissingClaim(&'static str),
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// `iat` lies in the future beyond the leeway.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp` has passed beyond the leeway.
    #[error("token expired")]
    Expired,
    /// The token's session has ended (known from Keygate's revocation feed).
    #[error("session ended")]
    Revoked,
}

/// Errors building a [`Verifier`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The algorithm name is not one of `EdDSA`, `ES256`, `RS256`, `HS256`.
    #[error("unsupported algorithm `{0}`: use EdDSA, ES256, RS256 or HS256")]
    UnsupportedAlgorithm(String),
    /// The JWKS document could not be parsed.
    #[error("invalid JWKS document: {0}")]
    InvalidJwks(String),
    /// A key does not fit the configured algorithm.
    #[error("key `{0}` does not fit the configured algorithm")]
    KeyMismatch(String),
    /// An HMAC secret shorter than 32 bytes.
    #[error("an HS256 secret must be at least 32 bytes")]
    WeakSecret,
}

/// Verifies access tokens against a fixed algorithm, key set, issuer and audience.
///
/// Cheap to clone? No: build it once and share it (it is `Send + Sync`).
pub struct Verifier {
    algorithm: Algorithm,
    keys: HashMap<String, DecodingKey>,
    /// For HS256 the keys have no public id; every configured secret is tried in order.
    secrets: Vec<DecodingKey>,
    issuer: String,
    audiences: Vec<String>,
    leeway: i64,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material: HS256 secrets live in here.
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.len())
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Parses an algorithm name as written in Keygate's configuration.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, ConfigError> {
    match name {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        "RS256" => Ok(Algorithm::RS256),
        "HS256" => Ok(Algorithm::HS256),
        other => Err(ConfigError::UnsupportedAlgorithm(other.to_owned())),
    }
}

impl Verifier {
    /// A verifier for an asymmetric algorithm with the given public keys by `kid`: for keys
    /// from files (PEM) or JWKs. The algorithm is the verifier's, whatever a token's header
    /// says.
    ///
    /// ```
    /// use keygate_verify::{Verifier, VerifyError};
    /// use keygate_verify::jsonwebtoken::{Algorithm, DecodingKey};
    ///
    /// let pem = "-----BEGIN PUBLIC KEY-----\n\
    ///            MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n\
    ///            -----END PUBLIC KEY-----\n";
    /// let key = DecodingKey::from_ed_pem(pem.as_bytes()).expect("an Ed25519 public key");
    /// let verifier = Verifier::new(
    ///     Algorithm::EdDSA,
    ///     [("k1".to_owned(), key)],
    ///     "https://auth.example.com",
    ///     &["my-api"],
    /// );
    /// assert_eq!(verifier.verify("x.y.z", 1_700_000_000), Err(VerifyError::Malformed));
    /// ```
    pub fn new(
        algorithm: Algorithm,
        keys: impl IntoIterator<Item = (String, DecodingKey)>,
        issuer: impl Into<String>,
        audiences: &[impl AsRef<str>],
    ) -> Self {
        let issuer = issuer.into();
        let audiences: Vec<String> = audiences.iter().map(|a| a.as_ref().to_owned()).collect();
        Verifier {
            algorithm,
            keys: keys.into_iter().collect(),
            secrets: Vec::new(),
            validation: validation(algorithm, &issuer, &audiences),
            issuer,
            audiences,
            leeway: 30,
        }
    }

    /// A verifier for HS256 with the current secret first and older ones after it (seed 003's
    /// rotation: tokens signed with a previous secret still verify until they expire). Every
    /// secret must be at least 32 bytes.
    ///
    /// ```
    /// use keygate_verify::{ConfigError, Verifier};
    ///
    /// let current: &[u8] = b"the current secret, 32 bytes or more";
    /// let previous: &[u8] = b"the previous one, also 32 bytes or more";
    /// let verifier =
    ///     Verifier::hs256(&[current, previous], "https://auth.example.com", &["my-api"])?;
    /// let short: &[u8] = b"short";
    /// assert!(Verifier::hs256(&[short], "https://auth.example.com", &["my-api"]).is_err());
    /// # let _ = verifier;
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn hs256(
        secrets: &[&[u8]],
        issuer: impl Into<String>,
        audiences: &[impl AsRef<str>],
    ) -> Result<Self, ConfigError> {
        if secrets.iter().any(|s| s.len() < 32) {
            return Err(ConfigError::WeakSecret);
        }
        let mut verifier = Verifier::new(Algorithm::HS256, [], issuer, audiences);
        verifier.secrets = secrets
            .iter()
            .map(|s| DecodingKey::from_secret(s))
            .collect();
        Ok(verifier)
    }

    /// A verifier from a JWKS document (as served at `/.well-known/jwks.json`), accepting only
    /// keys for `algorithm` (`EdDSA`, `ES256` or `RS256`).
    pub fn from_jwks(
        algorithm: &str,
        jwks: &str,
        issuer: impl Into<String>,
        audiences: &[impl AsRef<str>],
    ) -> Result<Self, ConfigError> {
        let algorithm = parse_algorithm(algorithm)?;
        if algorithm == Algorithm::HS256 {
            return Err(ConfigError::UnsupportedAlgorithm(
                "HS256 (a JWKS holds no secrets)".to_owned(),
            ));
        }
        let set: JwkSet =
            serde_json::from_str(jwks).map_err(|e| ConfigError::InvalidJwks(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let key =
                DecodingKey::from_jwk(jwk).map_err(|_| ConfigError::KeyMismatch(kid.clone()))?;
            if key.family() != algorithm.family() {
                return Err(ConfigError::KeyMismatch(kid));
            }
            keys.push((kid, key));
        }
        Ok(Verifier::new(algorithm, keys, issuer, audiences))
    }

    /// Sets the clock-skew allowance in seconds (default 30).
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = i64::try_from(seconds).unwrap_or(i64::MAX);
        self
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies `token` at time `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) if header_alg_unparsable(token) => {
                VerifyError::WrongAlgorithm
            }
            _ => VerifyError::Malformed,
        })?;
        // The configured algorithm decides, never the header: any mismatch is a rejection.
        if header.alg != self.algorithm {
            return Err(VerifyError::WrongAlgorithm);
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(VerifyError::WrongType);
        }
        let data = if self.algorithm == Algorithm::HS256 {
            let mut last = VerifyError::BadSignature;
            let mut found = None;
            for key in &self.secrets {
                match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                    Ok(data) => {
                        found = Some(data);
                        break;
                    }
                    Err(e) => {
                        last = map_error(&e);
                        if last != VerifyError::BadSignature {
                            break;
                        }
                    }
                }
            }
            found.ok_or(last)?
        } else {
            let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
            let key = self.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .map_err(|e| map_error(&e))?
        };
        let claims = data.claims;
        if claims.jti.is_empty() {
            return Err(VerifyError::MissingClaim("jti"));
        }
        if claims.sid.is_empty() {
            return Err(VerifyError::MissingClaim("sid"));
        }
        if claims.sub.is_empty() {
            return Err(VerifyError::MissingClaim("sub"));
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(VerifyError::IssuedInFuture);
        }
        if claims.exp <= now.saturating_sub(self.leeway) {
            return Err(VerifyError::Expired);
        }
        Ok(claims)
    }
}

/// `decode_header` fails with a JSON error both for broken JSON and for an `alg` it does not
/// know (such as `none`); tell the two apart so the caller learns which it was.
fn header_alg_unparsable(token: &str) -> bool {
    use base64::Engine as _;
    let Some(head) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("alg").cloned())
        .is_some()
}

fn validation(algorithm: Algorithm, issuer: &str, audiences: &[String]) -> Validation {
    let mut v = Validation::new(algorithm);
    v.algorithms = vec![algorithm];
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    v.set_issuer(&[issuer]);
    v.set_audience(audiences);
    // Time is checked by `verify` against the caller's clock, not the system's.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v
}

fn map_error(e: &jsonwebtoken::errors::Error) -> VerifyError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => VerifyError::BadSignature,
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
            VerifyError::WrongAlgorithm
        }
        K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => {
            VerifyError::MissingClaim(match c.as_str() {
                "exp" => "exp",
                "sub" => "sub",
                "iss" => "iss",
                "aud" => "aud",
                _ => "claim",
            })
        }
        K::InvalidIssuer => VerifyError::WrongIssuer,
        K::InvalidAudience => VerifyError::WrongAudience,
        K::ExpiredSignature => VerifyError::Expired,
        // The claims did not deserialise into `Claims`: a required claim is absent or mistyped.
        K::Json(_) => VerifyError::MissingClaim("claim"),
        _ => VerifyError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": "https://kg", "sub": "u1", "aud": "api", "exp": now + 900, "iat": now,
            "jti": "j1", "sid": "s1", "roles": ["admin"], "permissions": []
        })
    }

    fn sign(header: Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn at_header() -> Header {
        let mut h = Header::new(Algorithm::HS256);
        h.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        h
    }

    fn verifier() -> Verifier {
        Verifier::hs256(&[SECRET], "https://kg", &["api"]).unwrap()
    }

    #[test]
    fn accepts_a_well_formed_token() {
        let now = 1_700_000_000;
        let c = verifier()
            .verify(&sign(at_header(), &claims(now)), now)
            .unwrap();
        assert_eq!(c.sub, "u1");
        assert!(c.has_role("admin"));
        assert!(!c.has_permission("x"));
    }

    #[test]
    fn guards_check_roles_and_permissions() {
        let now = 1_700_000_000;
        let mut c = claims(now);
        c["permissions"] = serde_json::json!(["users:read"]);
        let claims = verifier().verify(&sign(at_header(), &c), now).unwrap();
        assert!(claims.require_role("admin").is_ok());
        assert!(claims.require_permission("users:read").is_ok());
        let e = claims.require_role("root").unwrap_err();
        assert_eq!(e.to_string(), "this requires the role `root`");
        assert!(claims.require_permission("users:write").is_err());
    }

    #[test]
    fn rejects_expiry_beyond_leeway_only() {
        let now = 1_700_000_000;
        let token = sign(at_header(), &claims(now));
        assert!(verifier().verify(&token, now + 900 + 29).is_ok());
        assert_eq!(
            verifier().verify(&token, now + 900 + 30),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn rejects_tokens_from_the_future() {
        let now = 1_700_000_000;
        let token = sign(at_header(), &claims(now + 120));
        assert_eq!(
            verifier().verify(&token, now),
            Err(VerifyError::IssuedInFuture)
        );
    }

    #[test]
    fn rejects_wrong_typ_and_missing_typ() {
        let now = 1_700_000_000;
        let mut h = at_header();
        h.typ = Some("JWT".to_owned());
        assert_eq!(
            verifier().verify(&sign(h, &claims(now)), now),
            Err(VerifyError::WrongType)
        );
        let mut h = at_header();
        h.typ = None;
        assert_eq!(
            verifier().verify(&sign(h, &claims(now)), now),
            Err(VerifyError::WrongType)
        );
    }

    #[test]
    fn rejects_each_missing_required_claim() {
        let now = 1_700_000_000;
        for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "sid"] {
            let mut c = claims(now);
            c.as_object_mut().unwrap().remove(claim);
            let err = verifier().verify(&sign(at_header(), &c), now).unwrap_err();
            assert!(
                matches!(err, VerifyError::MissingClaim(_)),
                "{claim}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_wrong_issuer_and_audience() {
        let now = 1_700_000_000;
        let mut c = claims(now);
        c["iss"] = "https://evil".into();
        assert_eq!(
            verifier().verify(&sign(at_header(), &c), now),
            Err(VerifyError::WrongIssuer)
        );
        let mut c = claims(now);
        c["aud"] = "other".into();
        assert_eq!(
            verifier().verify(&sign(at_header(), &c), now),
            Err(VerifyError::WrongAudience)
        );
    }

    #[test]
    fn rejects_alg_none_and_other_algorithms() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = 1_700_000_000;
        let head = b64.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
        let body = b64.encode(claims(now).to_string());
        for token in [format!("{head}.{body}."), format!("{head}.{body}")] {
            let err = verifier().verify(&token, now).unwrap_err();
            assert!(
                matches!(err, VerifyError::WrongAlgorithm | VerifyError::Malformed),
                "{err:?}"
            );
        }
        let mut h = at_header();
        h.alg = Algorithm::HS384;
        let token =
            jsonwebtoken::encode(&h, &claims(now), &EncodingKey::from_secret(SECRET)).unwrap();
        assert_eq!(
            verifier().verify(&token, now),
            Err(VerifyError::WrongAlgorithm)
        );
    }

    #[test]
    fn rejects_a_bad_signature_and_garbage() {
        let now = 1_700_000_000;
        let other = Verifier::hs256(
            &[b"another-secret-another-secret-xx".as_slice()],
            "https://kg",
            &["api"],
        )
        .unwrap();
        let token = sign(at_header(), &claims(now));
        assert_eq!(other.verify(&token, now), Err(VerifyError::BadSignature));
        assert_eq!(verifier().verify("a.b.c", now), Err(VerifyError::Malformed));
        assert_eq!(verifier().verify("", now), Err(VerifyError::Malformed));
        assert_eq!(
            verifier().verify(&"a".repeat(MAX_TOKEN_LEN + 1), now),
            Err(VerifyError::TooLong)
        );
    }

    #[test]
    fn previous_hs256_secrets_still_verify() {
        let now = 1_700_000_000;
        let token = sign(at_header(), &claims(now));
        let rotated = Verifier::hs256(
            &[b"a-brand-new-secret-of-32-bytes!!".as_slice(), SECRET],
            "https://kg",
            &["api"],
        )
        .unwrap();
        assert!(rotated.verify(&token, now).is_ok());
    }

    #[test]
    fn refuses_short_secrets() {
        assert!(matches!(
            Verifier::hs256(&[b"short".as_slice()], "i", &["a"]),
            Err(ConfigError::WeakSecret)
        ));
    }
}
