//! Envelope encryption of secrets at rest: signing keys now, any later stored secret (TOTP
//! seeds…) the same way.
//!
//! A secret is sealed with AES-256-GCM (aws-lc-rs) under a key-encryption key (KEK) that lives
//! outside the database (`signing.key_encryption_key`, from the environment or a file), with
//! the secret's identity (for a signing key, its `kid`) as associated data: a sealed value
//! moved to another row does not open. The sealed form is text, for text columns:
//!
//! ```text
//! kg-sealed:v1:<KEK id>:<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! The KEK id (16 hex digits of a SHA-256 of the KEK) names which KEK sealed a value, so that
//! a value sealed under an older KEK (`signing.previous_key_encryption_keys`) is opened with
//! it, and a missing or wrong KEK is a clear error instead of a failed decryption. Plain
//! values (stored before a KEK was configured) are recognised by the absence of the prefix.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretBox, SecretString};

/// The prefix of every sealed value.
pub const SEALED_PREFIX: &str = "kg-sealed:v1:";

/// The length of a KEK: 32 bytes (AES-256).
pub const KEK_LEN: usize = 32;

/// Why a value could not be sealed or opened. Never carries secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The value is sealed but no KEK is configured.
    #[error("it is encrypted, but no key encryption key is configured")]
    NoKek,
    /// The value is sealed under a KEK that is not configured (current or previous).
    #[error("it is encrypted under key encryption key {0}, which is not configured")]
    UnknownKek(String),
    /// Authentication failed: the value was altered or belongs to another row.
    #[error("it does not decrypt: altered, or stored under another name")]
    Corrupt,
    /// Sealing needs a current KEK.
    #[error("no key encryption key is configured to encrypt with")]
    NothingToSealWith,
}

/// One KEK, parsed.
struct Kek {
    id: String,
    key: LessSafeKey,
}

impl Kek {
    /// `None` only if aws-lc refused a 32-byte AES-256 key (it does not).
    fn new(bytes: &[u8; KEK_LEN]) -> Option<Kek> {
        let mut input = b"keygate key encryption key id\0".to_vec();
        input.extend_from_slice(bytes);
        let id = hex_prefix(digest(&SHA256, &input).as_ref());
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?);
        Some(Kek { id, key })
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The configured KEKs: the current one (seals and opens) and previous ones (open only).
/// Without a current KEK, values are stored plain and sealed ones cannot be opened.
#[derive(Default)]
pub struct Envelope {
    current: Option<Kek>,
    previous: Vec<Kek>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A KEK as configured: base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
pub fn parse_kek(text: &str) -> Option<SecretBox<[u8; KEK_LEN]>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    let text = text.trim();
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &B64]
        .iter()
        .find_map(|engine| engine.decode(text).ok())?;
    let array: [u8; KEK_LEN] = bytes.try_into().ok()?;
    Some(SecretBox::new(Box::new(array)))
}

impl Envelope {
    /// An envelope sealing with `current` (if any) and also opening with `previous`.
    pub fn new(
        current: Option<&SecretBox<[u8; KEK_LEN]>>,
        previous: &[SecretBox<[u8; KEK_LEN]>],
    ) -> Envelope {
        Envelope {
            current: current.and_then(|k| Kek::new(k.expose_secret())),
            previous: previous
                .iter()
                .filter_map(|k| Kek::new(k.expose_secret()))
                .collect(),
        }
    }

    /// Whether values are sealed when stored.
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// The id of the current KEK.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Whether `stored` is a sealed value.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// The id of the KEK that sealed `stored`, if it is sealed.
    pub fn sealed_by(stored: &str) -> Option<&str> {
        stored.strip_prefix(SEALED_PREFIX)?.split(':').next()
    }

    /// Whether `stored` should be sealed again: it is plain, or sealed under another KEK
    /// than the current one (and there is a current one).
    pub fn needs_sealing(&self, stored: &str) -> bool {
        self.current_id()
            .is_some_and(|current| Self::sealed_by(stored) != Some(current))
    }

    /// Seals `secret` under the current KEK with `name` as associated data.
    pub fn seal(&self, secret: &[u8], name: &str) -> Result<String, EnvelopeError> {
        let kek = self
            .current
            .as_ref()
            .ok_or(EnvelopeError::NothingToSealWith)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| EnvelopeError::NothingToSealWith)?;
        let mut buf = secret.to_vec();
        kek.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| EnvelopeError::NothingToSealWith)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}:{}", kek.id, B64.encode(out)))
    }

    /// The secret in `stored`: opened when sealed (with the KEK that sealed it and `name` as
    /// associated data), as it is when plain.
    pub fn open(&self, stored: &str, name: &str) -> Result<SecretString, EnvelopeError> {
        let Some(rest) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(SecretString::from(stored.to_owned()));
        };
        let (id, payload) = rest.split_once(':').ok_or(EnvelopeError::Corrupt)?;
        if self.current.is_none() && self.previous.is_empty() {
            return Err(EnvelopeError::NoKek);
        }
        let kek = self
            .current
            .iter()
            .chain(self.previous.iter())
            .find(|k| k.id == id)
            .ok_or_else(|| EnvelopeError::UnknownKek(id.to_owned()))?;
        let mut bytes = B64.decode(payload).map_err(|_| EnvelopeError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(EnvelopeError::Corrupt);
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = bytes.try_into().map_err(|_| EnvelopeError::Corrupt)?;
        let plain = kek
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| EnvelopeError::Corrupt)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| EnvelopeError::Corrupt)?;
        sealed.zeroize();
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> SecretBox<[u8; KEK_LEN]> {
        SecretBox::new(Box::new([byte; KEK_LEN]))
    }

    #[test]
    fn a_sealed_value_opens_under_its_name_only() {
        let env = Envelope::new(Some(&kek(1)), &[]);
        let sealed = env.seal(b"-----BEGIN PRIVATE KEY-----", "kid-a").unwrap();
        assert!(Envelope::is_sealed(&sealed));
        assert!(!sealed.contains("BEGIN"));
        assert_eq!(
            env.open(&sealed, "kid-a").unwrap().expose_secret(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(
            env.open(&sealed, "kid-b").unwrap_err(),
            EnvelopeError::Corrupt
        );
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(
            sealed,
            env.seal(b"-----BEGIN PRIVATE KEY-----", "kid-a").unwrap()
        );
    }

    #[test]
    fn previous_keks_open_and_unknown_or_missing_ones_are_named() {
        let old = Envelope::new(Some(&kek(1)), &[]);
        let sealed = old.seal(b"secret", "k").unwrap();
        let rotated = Envelope::new(Some(&kek(2)), &[kek(1)]);
        assert_eq!(
            rotated.open(&sealed, "k").unwrap().expose_secret(),
            "secret"
        );
        assert!(rotated.needs_sealing(&sealed));
        assert!(!old.needs_sealing(&sealed));
        let wrong = Envelope::new(Some(&kek(3)), &[]);
        assert!(matches!(
            wrong.open(&sealed, "k"),
            Err(EnvelopeError::UnknownKek(id)) if id == old.current_id().unwrap()
        ));
        assert_eq!(
            Envelope::default().open(&sealed, "k").unwrap_err(),
            EnvelopeError::NoKek
        );
        // Plain values pass through, and need sealing once there is a KEK.
        assert_eq!(
            Envelope::default()
                .open("plain", "k")
                .unwrap()
                .expose_secret(),
            "plain"
        );
        assert!(rotated.needs_sealing("plain"));
        assert!(!Envelope::default().needs_sealing("plain"));
    }

    #[test]
    fn an_altered_value_does_not_open() {
        let env = Envelope::new(Some(&kek(1)), &[]);
        let sealed = env.seal(b"secret", "k").unwrap();
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(env.open(&altered, "k").unwrap_err(), EnvelopeError::Corrupt);
        assert_eq!(
            env.open("kg-sealed:v1:nocolon", "k").unwrap_err(),
            EnvelopeError::Corrupt
        );
    }

    #[test]
    fn keks_are_base64_of_32_bytes() {
        use base64::engine::general_purpose::STANDARD;
        let text = STANDARD.encode([7u8; 32]);
        assert_eq!(parse_kek(&text).unwrap().expose_secret(), &[7u8; 32]);
        assert_eq!(
            parse_kek(&format!(" {} \n", B64.encode([7u8; 32])))
                .unwrap()
                .expose_secret(),
            &[7u8; 32]
        );
        assert!(parse_kek(&STANDARD.encode([7u8; 31])).is_none());
        assert!(parse_kek("not base64!").is_none());
    }
}
