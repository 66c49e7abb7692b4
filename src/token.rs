//! Token material: signing keys and access tokens, and opaque refresh tokens.
//!
//! Access tokens are signed here and verified by `keygate-verify` (the one verifier).
//! Refresh tokens are `<session id>.<secret>`: 256 random bits, only a SHA-256 of the secret is
//! stored, and the successor handed out at a rotation is sealed under the predecessor's secret
//! so a retry inside the grace window gets the same token back (see docs/ARCHITECTURE.md).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use keygate_verify::{ACCESS_TOKEN_TYPE, Audience, Claims, Verifier, VerifyError};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{SessionId, UserId};

/// Failures handling key material. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Key generation failed.
    #[error("could not generate a signing key")]
    Generate,
    /// A stored key could not be loaded.
    #[error("stored signing key `{0}` could not be loaded")]
    Load(String),
    /// Signing failed.
    #[error("could not sign a token")]
    Sign,
    /// The algorithm cannot be used with stored keys.
    #[error("algorithm not supported here")]
    Unsupported,
    /// A key file does not hold a key for the configured algorithm.
    #[error("`{key}` (`{path}`) {problem}")]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong, and what to do.
        problem: String,
    },
}

/// A signing key as stored: its id, algorithm and PKCS#8 PEM private key.
#[derive(Clone)]
pub struct StoredKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// Configuration name of the algorithm (`EdDSA`, `ES256`, `RS256`).
    pub algorithm: String,
    /// PKCS#8 PEM. Secret.
    pub private_pem: SecretString,
    /// When the key was created.
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Generates a new key pair for `algorithm` and returns it ready to store.
pub fn generate_key(algorithm: Algorithm, now: OffsetDateTime) -> Result<StoredKey, TokenError> {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    let der: Vec<u8> = match algorithm {
        // PKCS#8 v1: the form jsonwebtoken derives the public JWK from.
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| TokenError::Generate)?
            .as_ref()
            .to_vec(),
        Algorithm::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| TokenError::Generate)?
                .as_ref()
                .to_vec()
        }
        Algorithm::RS256 => aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .and_then(|k| k.as_der())
            .map_err(|_| TokenError::Generate)?
            .as_ref()
            .to_vec(),
        _ => return Err(TokenError::Unsupported),
    };
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    let private_pem = SecretString::from(pem);
    let loaded = LoadedKey::load(algorithm, "", &private_pem)?;
    Ok(StoredKey {
        kid: loaded.thumbprint()?,
        algorithm: crate::config::algorithm_name(algorithm).to_owned(),
        private_pem,
        created_at: now,
    })
}

/// A stored key's public half as a JWK (with its `kid` and `use`).
struct LoadedKey {
    jwk: Jwk,
}

impl LoadedKey {
    fn load(algorithm: Algorithm, kid: &str, pem: &SecretString) -> Result<LoadedKey, TokenError> {
        let bytes = pem.expose_secret().as_bytes();
        let encoding = match algorithm {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes),
            Algorithm::ES256 => EncodingKey::from_ec_pem(bytes),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(bytes),
            _ => return Err(TokenError::Unsupported),
        }
        .map_err(|_| TokenError::Load(kid.to_owned()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|_| TokenError::Load(kid.to_owned()))?;
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        if !kid.is_empty() {
            jwk.common.key_id = Some(kid.to_owned());
        }
        Ok(LoadedKey { jwk })
    }

    fn thumbprint(&self) -> Result<String, TokenError> {
        self.jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| TokenError::Generate)
    }
}

/// The signing key, parsed once. jsonwebtoken re-parses its key on every `encode` (for EdDSA
/// that re-derives the public key: most of a signature's cost), so the asymmetric algorithms
/// sign here with the parsed aws-lc key; HS256 stays with jsonwebtoken. The output is the same
/// JWS compact form, verified by `keygate-verify` like every other token.
enum Signer {
    Hmac(EncodingKey),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
    Rsa(aws_lc_rs::signature::RsaKeyPair),
}

impl Signer {
    fn parse(
        algorithm: Algorithm,
        pem_text: &SecretString,
        kid: &str,
    ) -> Result<Signer, TokenError> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
        };
        let load = || TokenError::Load(kid.to_owned());
        let der = pem::parse(pem_text.expose_secret().as_bytes()).map_err(|_| load())?;
        let der = der.contents();
        Ok(match algorithm {
            Algorithm::EdDSA => {
                Signer::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(|_| load())?)
            }
            Algorithm::ES256 => Signer::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| load())?,
            ),
            Algorithm::RS256 => Signer::Rsa(RsaKeyPair::from_pkcs8(der).map_err(|_| load())?),
            _ => return Err(TokenError::Unsupported),
        })
    }

    fn sign(&self, header: &Header, claims: &Claims) -> Result<String, TokenError> {
        if let Signer::Hmac(key) = self {
            return jsonwebtoken::encode(header, claims, key).map_err(|_| TokenError::Sign);
        }
        let header = serde_json::to_vec(header).map_err(|_| TokenError::Sign)?;
        let claims = serde_json::to_vec(claims).map_err(|_| TokenError::Sign)?;
        let mut jws = B64.encode(header);
        jws.push('.');
        jws.push_str(&B64.encode(claims));
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = match self {
            Signer::Hmac(_) => return Err(TokenError::Sign),
            Signer::Ed25519(key) => key.sign(jws.as_bytes()).as_ref().to_vec(),
            Signer::Ecdsa(key) => key
                .sign(&rng, jws.as_bytes())
                .map_err(|_| TokenError::Sign)?
                .as_ref()
                .to_vec(),
            Signer::Rsa(key) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| TokenError::Sign)?;
                sig
            }
        };
        jws.push('.');
        jws.push_str(&B64.encode(signature));
        Ok(jws)
    }
}

/// Successfully verified tokens, keyed by SHA-256 of the token: a hit skips the signature
/// check but never the time check, and entries die with the key ring (so with the keys).
/// Sharded to keep lock contention low; a full shard is emptied.
struct VerifiedCache {
    shards: Vec<Shard>,
}

type Shard = std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Claims>>>;

const VERIFIED_SHARDS: usize = 16;
const VERIFIED_PER_SHARD: usize = 256;

impl VerifiedCache {
    fn new() -> Self {
        VerifiedCache {
            shards: (0..VERIFIED_SHARDS).map(|_| Default::default()).collect(),
        }
    }

    fn shard(
        &self,
        key: &[u8; 32],
    ) -> &std::sync::Mutex<std::collections::HashMap<[u8; 32], Arc<Claims>>> {
        &self.shards[usize::from(key[0]) % VERIFIED_SHARDS]
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<Claims>> {
        self.shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: [u8; 32], claims: Arc<Claims>) {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= VERIFIED_PER_SHARD {
            shard.clear();
        }
        shard.insert(key, claims);
    }
}

/// The keys in use: signs new access tokens and verifies presented ones.
pub struct KeyRing {
    verified: VerifiedCache,
    leeway: i64,
    algorithm: Algorithm,
    signing_kid: Option<String>,
    signing: Signer,
    verifier: Verifier,
    jwks: String,
    issuer: String,
    audience: String,
    access_ttl: i64,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("algorithm", &self.algorithm)
            .field("signing_kid", &self.signing_kid)
            .finish_non_exhaustive()
    }
}

/// The `sid` prefix of `client_credentials` tokens, which belong to no session.
pub const CLIENT_SESSION_PREFIX: &str = "client:";

/// What goes into an access token besides the fixed claims.
#[derive(Debug, Clone)]
pub struct AccessGrant<'a> {
    /// The user.
    pub user_id: UserId,
    /// The session.
    pub session_id: SessionId,
    /// Roles at issue time.
    pub roles: &'a [String],
    /// Permissions at issue time.
    pub permissions: &'a [String],
    /// The session was opened with a second factor (`amr: ["pwd", "otp"]`, else `["pwd"]`).
    pub mfa: bool,
    /// The user's address is verified.
    pub email_verified: bool,
}

/// Claims beside the common ones.
struct Extra {
    client_id: Option<String>,
    amr: Vec<String>,
    email_verified: Option<bool>,
}

impl KeyRing {
    /// A key ring for HS256 from the configured secrets (no stored keys; JWKS empty).
    pub fn hs256(cfg: &Config) -> Result<KeyRing, TokenError> {
        let secret = cfg.signing.secret.as_ref().ok_or(TokenError::Unsupported)?;
        let mut all: Vec<&[u8]> = vec![secret.expose_secret().as_bytes()];
        all.extend(
            cfg.signing
                .previous_secrets
                .iter()
                .map(|s| s.expose_secret().as_bytes()),
        );
        let verifier = Verifier::hs256(&all, &cfg.issuer, &cfg.audience)
            .map_err(|_| TokenError::Unsupported)?
            .with_leeway(cfg.leeway.as_secs());
        Ok(Self::assemble(
            cfg,
            None,
            Signer::Hmac(EncodingKey::from_secret(secret.expose_secret().as_bytes())),
            verifier,
            "{\"keys\":[]}".to_owned(),
        ))
    }

    /// A key ring signing with `active` and verifying with it and every key in `others`.
    pub fn from_stored(
        cfg: &Config,
        active: &StoredKey,
        others: &[StoredKey],
    ) -> Result<KeyRing, TokenError> {
        let algorithm = cfg.signing.algorithm;
        let signing = Signer::parse(algorithm, &active.private_pem, &active.kid)?;
        let mut jwks = Vec::new();
        for key in std::iter::once(active).chain(others.iter()) {
            if key.algorithm != crate::config::algorithm_name(algorithm) {
                continue;
            }
            jwks.push(LoadedKey::load(algorithm, &key.kid, &key.private_pem)?.jwk);
        }
        Self::asymmetric(cfg, active.kid.clone(), signing, jwks)
    }

    /// A ring signing with `signing` (key `kid`) and verifying with and publishing `jwks`
    /// (each with its `kid`).
    fn asymmetric(
        cfg: &Config,
        kid: String,
        signing: Signer,
        jwks: Vec<Jwk>,
    ) -> Result<KeyRing, TokenError> {
        let mut decoding = Vec::new();
        for jwk in &jwks {
            let id = jwk.common.key_id.clone().unwrap_or_default();
            let dk = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::Load(id.clone()))?;
            decoding.push((id, dk));
        }
        let verifier = Verifier::new(cfg.signing.algorithm, decoding, &cfg.issuer, &cfg.audience)
            .with_leeway(cfg.leeway.as_secs());
        let jwks = serde_json::to_string(&serde_json::json!({ "keys": jwks }))
            .map_err(|_| TokenError::Load(kid.clone()))?;
        Ok(Self::assemble(cfg, Some(kid), signing, verifier, jwks))
    }

    /// A key ring from the operator's files (`signing.private_key_file`, PKCS#8 PEM, signing;
    /// `signing.previous_public_key_files`, public PEM, verifying): nothing stored, nothing
    /// rotated. Each key must be for `signing.algorithm`.
    pub fn from_files(
        cfg: &Config,
        files: &crate::config::KeyFiles,
    ) -> Result<KeyRing, TokenError> {
        let algorithm = cfg.signing.algorithm;
        let name = crate::config::algorithm_name(algorithm);
        let wrong = |key: &'static str, path: &str, found: Option<Algorithm>| TokenError::File {
            key,
            path: path.to_owned(),
            problem: match found {
                Some(found) => format!(
                    "holds an {} key, but signing.algorithm is {name}",
                    crate::config::algorithm_name(found)
                ),
                None => format!(
                    "is not a PEM {} key for {name} (a private key must be PKCS#8: \
                     `openssl pkcs8 -topk8 -nocrypt -in key.pem`)",
                    if key == "signing.private_key_file" {
                        "private"
                    } else {
                        "public"
                    }
                ),
            },
        };
        let others = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];
        let private = &files.private_pem;
        let path = files.private_path.as_str();
        let Ok(signing) = Signer::parse(algorithm, private, "") else {
            let found = others
                .into_iter()
                .find(|a| *a != algorithm && Signer::parse(*a, private, "").is_ok());
            return Err(wrong("signing.private_key_file", path, found));
        };
        let active = LoadedKey::load(algorithm, "", private)
            .map_err(|_| wrong("signing.private_key_file", path, None))?;
        let kid = active.thumbprint()?;
        let mut jwk = active.jwk;
        jwk.common.key_id = Some(kid.clone());
        let mut jwks = vec![jwk];
        for (path, pem) in &files.previous_public {
            let parse = |a: Algorithm| match a {
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            };
            let public = |a: Algorithm| {
                parse(a)
                    .ok()
                    .and_then(|dk| Jwk::from_decoding_key(&dk, Some(a)).ok())
            };
            let key = "signing.previous_public_key_files";
            let Some(mut jwk) = public(algorithm) else {
                let found = others
                    .into_iter()
                    .find(|a| *a != algorithm && public(*a).is_some());
                return Err(wrong(key, path, found));
            };
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            let previous = jwk
                .thumbprint(ThumbprintHash::SHA256)
                .map_err(|_| wrong(key, path, None))?;
            jwk.common.key_id = Some(previous);
            jwks.push(jwk);
        }
        Self::asymmetric(cfg, kid, signing, jwks)
    }

    fn assemble(
        cfg: &Config,
        signing_kid: Option<String>,
        signing: Signer,
        verifier: Verifier,
        jwks: String,
    ) -> KeyRing {
        KeyRing {
            verified: VerifiedCache::new(),
            leeway: i64::try_from(cfg.leeway.as_secs()).unwrap_or(0),
            algorithm: cfg.signing.algorithm,
            signing_kid,
            signing,
            verifier,
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience[0].clone(),
            access_ttl: i64::try_from(cfg.access_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Signs an access token issued at `now`; returns it with its lifetime in seconds.
    pub fn issue(
        &self,
        grant: &AccessGrant<'_>,
        now: OffsetDateTime,
    ) -> Result<(String, i64), TokenError> {
        let amr = if grant.mfa {
            vec!["pwd".to_owned(), "otp".to_owned()]
        } else {
            vec!["pwd".to_owned()]
        };
        self.sign_claims(
            grant.user_id.to_string(),
            grant.session_id.to_string(),
            grant.roles,
            grant.permissions,
            Extra {
                client_id: None,
                amr,
                email_verified: Some(grant.email_verified),
            },
            now,
        )
    }

    /// Signs a `client_credentials` token: `sub` and `client_id` are the client, `sid` is
    /// `client:<id>` (there is no session), roles and permissions are the client's.
    pub fn issue_for_client(
        &self,
        client_id: &str,
        roles: &[String],
        permissions: &[String],
        now: OffsetDateTime,
    ) -> Result<(String, i64), TokenError> {
        self.sign_claims(
            client_id.to_owned(),
            format!("{CLIENT_SESSION_PREFIX}{client_id}"),
            roles,
            permissions,
            Extra {
                client_id: Some(client_id.to_owned()),
                amr: Vec::new(),
                email_verified: None,
            },
            now,
        )
    }

    fn sign_claims(
        &self,
        sub: String,
        sid: String,
        roles: &[String],
        permissions: &[String],
        extra: Extra,
        now: OffsetDateTime,
    ) -> Result<(String, i64), TokenError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub,
            aud: Audience::One(self.audience.clone()),
            exp: iat.saturating_add(self.access_ttl),
            iat,
            jti: Uuid::now_v7().to_string(),
            sid,
            roles: roles.to_vec(),
            permissions: permissions.to_vec(),
            client_id: extra.client_id,
            amr: extra.amr,
            email_verified: extra.email_verified,
        };
        let mut header = Header::new(self.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(
            self.signing_kid
                .clone()
                .unwrap_or_else(|| String::from("hs256")),
        );
        let token = self.signing.sign(&header, &claims)?;
        Ok((token, self.access_ttl))
    }

    /// Verifies an access token at `now`. A token verified before is found by its hash and
    /// only its times are checked again; anything else goes through `keygate-verify`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Arc<Claims>, VerifyError> {
        if token.len() > keygate_verify::MAX_TOKEN_LEN {
            return Err(VerifyError::TooLong);
        }
        let key: [u8; 32] = digest(&SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| VerifyError::Malformed)?;
        let now = now.unix_timestamp();
        if let Some(claims) = self.verified.get(&key) {
            // The same checks of time `keygate-verify` makes.
            if claims.exp <= now.saturating_sub(self.leeway) {
                return Err(VerifyError::Expired);
            }
            if claims.iat <= now.saturating_add(self.leeway) {
                return Ok(claims);
            }
        }
        let claims = Arc::new(self.verifier.verify(token, now)?);
        self.verified.put(key, claims.clone());
        Ok(claims)
    }

    /// Verifies without the cache of verified tokens (what a never-seen token costs). For
    /// benchmarks and tests.
    pub fn verify_uncached(&self, token: &str, now: OffsetDateTime) -> Result<Claims, VerifyError> {
        self.verifier.verify(token, now.unix_timestamp())
    }

    /// The `kid` of the signing key (`None` for HS256).
    pub fn signing_kid(&self) -> Option<&str> {
        self.signing_kid.as_deref()
    }

    /// The JWKS document (`{"keys":[…]}`), rendered once.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }
}

/// The longest refresh token accepted; longer input is refused before any work.
pub const MAX_REFRESH_TOKEN_LEN: usize = 128;

/// Bytes of randomness in a refresh secret (256 bits, API.md's minimum).
/// Changing the format below invalidates every refresh token in circulation.
const SECRET_LEN: usize = 32;

/// Whether `id` is a token's id as Keygate writes it: 32 lower-case hex digits. The UUID
/// parser would also take upper case, which would give one token two spellings (found by
/// `tests/properties.rs`).
fn is_canonical_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A refresh token's plaintext: shown to the client once, never stored, never logged.
#[derive(Clone)]
pub struct RefreshToken {
    session_id: SessionId,
    secret: [u8; SECRET_LEN],
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RefreshToken({}.[redacted])", self.session_id)
    }
}

/// The stored form of a refresh secret: SHA-256 of it (the secret has 256 bits of entropy, so a
/// fast hash suffices). Compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshHash(pub [u8; 32]);

impl fmt::Debug for RefreshHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshHash(..)")
    }
}

impl RefreshHash {
    /// From stored bytes; `None` when the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<RefreshHash> {
        bytes.try_into().ok().map(RefreshHash)
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &RefreshHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl RefreshToken {
    /// A fresh random token for `session_id`.
    pub fn generate(session_id: SessionId) -> RefreshToken {
        let mut secret = [0u8; SECRET_LEN];
        // aws-lc's DRBG only fails if the OS cannot provide entropy at all.
        if aws_lc_rs::rand::fill(&mut secret).is_err() {
            std::process::abort();
        }
        RefreshToken { session_id, secret }
    }

    /// Parses `<uuid-simple>.<base64url secret>`; anything else is `None`.
    pub fn parse(s: &str) -> Option<RefreshToken> {
        if s.len() > MAX_REFRESH_TOKEN_LEN {
            return None;
        }
        let (id, secret) = s.split_once('.')?;
        if !is_canonical_id(id) {
            return None;
        }
        let session_id = SessionId::parse(&Uuid::try_parse(id).ok()?.hyphenated().to_string())?;
        let bytes = B64.decode(secret).ok()?;
        Some(RefreshToken {
            session_id,
            secret: bytes.try_into().ok()?,
        })
    }

    /// The session the token belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The hash that is stored.
    pub fn hash(&self) -> RefreshHash {
        let d = digest(&SHA256, &self.secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        RefreshHash(out)
    }

    /// The text handed to the client.
    pub fn expose(&self) -> String {
        format!(
            "{}.{}",
            self.session_id.as_uuid().simple(),
            B64.encode(self.secret)
        )
    }

    /// Seals `successor` so that only the holder of this token can open it (design B of
    /// shared/design/refresh-rotation.md). `context` binds the box to its session row.
    pub fn seal(&self, successor: &RefreshToken, context: &[u8]) -> Vec<u8> {
        let key = self.sealing_key();
        let mut nonce = [0u8; NONCE_LEN];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            std::process::abort();
        }
        let mut data = successor.secret.to_vec();
        // Sealing with a valid 256-bit key and a fresh nonce cannot fail.
        let _ = key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut data,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        out
    }

    /// Opens a box made by [`RefreshToken::seal`] on the predecessor; `None` if this token
    /// did not seal it.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<RefreshToken> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .sealing_key()
            .open_in_place(nonce, Aad::from(context), &mut data)
            .ok()?;
        Some(RefreshToken {
            session_id: self.session_id,
            secret: plain.try_into().ok()?,
        })
    }

    fn sealing_key(&self) -> LessSafeKey {
        struct Len(usize);
        impl aws_lc_rs::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let prk = Salt::new(HKDF_SHA256, b"keygate refresh successor v1").extract(&self.secret);
        let mut key = [0u8; 32];
        // HKDF-SHA256 can always expand to 32 bytes.
        if let Ok(okm) = prk.expand(&[b"aes-256-gcm"], Len(32)) {
            let _ = okm.fill(&mut key);
        }
        match UnboundKey::new(&AES_256_GCM, &key) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => std::process::abort(),
        }
    }
}

/// A single-use link or challenge token (`<uuid-simple>.<base64url secret>`): an email link's
/// token, an `mfa_token`. Like a refresh token, only [`RefreshHash`] of the secret is stored and
/// the plaintext is shown once, never logged.
#[derive(Clone)]
pub struct LinkToken {
    id: Uuid,
    secret: [u8; SECRET_LEN],
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkToken({}.[redacted])", self.id)
    }
}

impl LinkToken {
    /// A fresh token with a new id (UUID v7).
    pub fn generate() -> LinkToken {
        let mut secret = [0u8; SECRET_LEN];
        if aws_lc_rs::rand::fill(&mut secret).is_err() {
            std::process::abort();
        }
        LinkToken {
            id: Uuid::now_v7(),
            secret,
        }
    }

    /// Parses the text form; anything else (including over-long input) is `None`.
    pub fn parse(s: &str) -> Option<LinkToken> {
        if s.len() > MAX_REFRESH_TOKEN_LEN {
            return None;
        }
        let (id, secret) = s.split_once('.')?;
        if !is_canonical_id(id) {
            return None;
        }
        Some(LinkToken {
            id: Uuid::try_parse(id).ok()?,
            secret: B64.decode(secret).ok()?.try_into().ok()?,
        })
    }

    /// The lookup id (hyphenated, as stored).
    pub fn id(&self) -> String {
        self.id.hyphenated().to_string()
    }

    /// What is stored.
    pub fn hash(&self) -> RefreshHash {
        let d = digest(&SHA256, &self.secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        RefreshHash(out)
    }

    /// The text handed out.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id.simple(), B64.encode(self.secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::from_toml(extra).unwrap()
    }

    fn grant() -> (UserId, SessionId) {
        (UserId::new(), SessionId::new())
    }

    fn issue_and_verify(cfg: &Config, ring: &KeyRing) {
        let (user_id, session_id) = grant();
        let roles = vec!["admin".to_owned()];
        let now = OffsetDateTime::now_utc();
        let (token, ttl) = ring
            .issue(
                &AccessGrant {
                    user_id,
                    session_id,
                    roles: &roles,
                    permissions: &[],
                    mfa: false,
                    email_verified: false,
                },
                now,
            )
            .unwrap();
        assert_eq!(ttl, cfg.access_ttl.as_secs() as i64);
        let claims = ring.verify(&token, now).unwrap();
        assert_eq!(claims.sub, user_id.to_string());
        assert_eq!(claims.sid, session_id.to_string());
        assert_eq!(claims.roles, roles);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert!(header.kid.is_some());
    }

    #[test]
    fn each_asymmetric_algorithm_signs_verifies_and_publishes() {
        for alg in ["EdDSA", "ES256", "RS256"] {
            let cfg = cfg(&format!("signing.algorithm = \"{alg}\""));
            let key = generate_key(cfg.signing.algorithm, OffsetDateTime::now_utc()).unwrap();
            let ring = KeyRing::from_stored(&cfg, &key, &[]).unwrap();
            issue_and_verify(&cfg, &ring);
            let jwks: serde_json::Value = serde_json::from_str(ring.jwks_json()).unwrap();
            assert_eq!(jwks["keys"][0]["kid"], key.kid.as_str(), "{alg}");
            assert_eq!(jwks["keys"][0]["alg"], alg);
            assert!(
                !ring.jwks_json().contains("\"d\""),
                "no private parts in JWKS"
            );
        }
    }

    #[test]
    fn hs256_signs_and_verifies_with_an_empty_jwks() {
        let cfg = cfg(
            "signing.algorithm = \"HS256\"\nsigning.secret = \"0123456789abcdef0123456789abcdef\"",
        );
        let ring = KeyRing::hs256(&cfg).unwrap();
        issue_and_verify(&cfg, &ring);
        assert_eq!(ring.jwks_json(), "{\"keys\":[]}");
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let cfg = cfg("");
        let now = OffsetDateTime::now_utc();
        let a =
            KeyRing::from_stored(&cfg, &generate_key(Algorithm::EdDSA, now).unwrap(), &[]).unwrap();
        let b =
            KeyRing::from_stored(&cfg, &generate_key(Algorithm::EdDSA, now).unwrap(), &[]).unwrap();
        let (user_id, session_id) = grant();
        let (token, _) = a
            .issue(
                &AccessGrant {
                    user_id,
                    session_id,
                    roles: &[],
                    permissions: &[],
                    mfa: false,
                    email_verified: false,
                },
                now,
            )
            .unwrap();
        assert_eq!(b.verify(&token, now), Err(VerifyError::UnknownKey));
    }

    #[test]
    fn a_cached_verification_still_checks_expiry() {
        let cfg = cfg("");
        let now = OffsetDateTime::now_utc();
        let ring =
            KeyRing::from_stored(&cfg, &generate_key(Algorithm::EdDSA, now).unwrap(), &[]).unwrap();
        let (user_id, session_id) = grant();
        let (token, ttl) = ring
            .issue(
                &AccessGrant {
                    user_id,
                    session_id,
                    roles: &[],
                    permissions: &[],
                    mfa: false,
                    email_verified: false,
                },
                now,
            )
            .unwrap();
        let first = ring.verify(&token, now).unwrap();
        let second = ring.verify(&token, now).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second check is a cache hit"
        );
        let later = now + time::Duration::seconds(ttl + 31);
        assert_eq!(ring.verify(&token, later), Err(VerifyError::Expired));
        // A tampered copy is a different key: verified (and refused) in full.
        // Change a character inside the signature (the last one may only carry padding bits).
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert!(ring.verify(&forged, now).is_err());
    }

    #[test]
    fn refresh_tokens_round_trip_and_reject_garbage() {
        let sid = SessionId::new();
        let t = RefreshToken::generate(sid);
        let text = t.expose();
        let parsed = RefreshToken::parse(&text).unwrap();
        assert_eq!(parsed.session_id(), sid);
        assert!(parsed.hash().matches(&t.hash()));
        assert!(!RefreshToken::generate(sid).hash().matches(&t.hash()));
        for bad in [
            "",
            ".",
            "abc.def",
            &format!("{}.", sid.as_uuid().simple()),
            &"a".repeat(500),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
        assert!(!format!("{t:?}").contains(&text[33..]));
    }

    #[test]
    fn a_sealed_successor_opens_only_with_its_predecessor() {
        let sid = SessionId::new();
        let old = RefreshToken::generate(sid);
        let new = RefreshToken::generate(sid);
        let sealed = old.seal(&new, b"ctx");
        let opened = old.open(&sealed, b"ctx").unwrap();
        assert_eq!(opened.expose(), new.expose());
        assert!(new.open(&sealed, b"ctx").is_none());
        assert!(old.open(&sealed, b"other").is_none());
    }
}
