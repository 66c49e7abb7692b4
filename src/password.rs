//! Password hashing with argon2id, off the async runtime and bounded in concurrency.
//!
//! Every hash and verify runs on tokio's blocking pool behind a semaphore sized by
//! `password.max_concurrent_hashes`, carrying the caller's tracing span. Unknown accounts are
//! verified against a dummy hash made at start-up with the same parameters, so a wrong email
//! costs the same time as a wrong password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::config::PasswordConfig;
use crate::domain::Password;

/// Failures of the hasher itself (never "wrong password", which is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The parameters were refused by argon2.
    #[error("invalid argon2 parameters")]
    Params,
    /// Hashing failed, or a stored hash could not be parsed.
    #[error("password hashing failed")]
    Hash,
    /// The blocking task panicked or was cancelled.
    #[error("password hashing task failed")]
    Task,
    /// Too many hashes are already waiting: answer 503 now rather than queue without bound.
    #[error("password hashing queue full")]
    Busy,
}

/// Hashes and verifies passwords. Cheap to share: clone the `Arc`.
pub struct Hasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    dummy_hash: String,
}

/// Counts a request waiting for a hashing permit; uncounts it however the wait ends.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.argon.params())
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// Builds the hasher and its dummy hash. Takes one hash's time: call it off the runtime
    /// (as [`Hasher::build`] does) when the runtime is serving.
    pub fn new(cfg: &PasswordConfig) -> Result<Hasher, PasswordError> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|_| PasswordError::Params)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        // The dummy's password is random and thrown away: nothing can match it.
        let mut junk = [0u8; 32];
        aws_lc_rs::rand::fill(&mut junk).map_err(|_| PasswordError::Hash)?;
        let dummy_hash = argon
            .hash_password(&junk)
            .map_err(|_| PasswordError::Hash)?
            .to_string();
        Ok(Hasher {
            argon,
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_hashes)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting: cfg.max_queued_hashes,
            dummy_hash,
        })
    }

    /// [`Hasher::new`] on the blocking pool.
    pub async fn build(cfg: &PasswordConfig) -> Result<Hasher, PasswordError> {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Hasher::new(&cfg))
            .await
            .map_err(|_| PasswordError::Task)?
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let argon = self.argon.clone();
        let password = password.clone();
        self.run(move || {
            argon
                .hash_password(password.expose().as_bytes())
                .map(|h| h.to_string())
                .map_err(|_| PasswordError::Hash)
        })
        .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no account,
    /// so both cases take the same time. `Ok(false)` for a wrong password.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let argon = self.argon.clone();
        let password = password.clone();
        let exists = stored.is_some();
        let hash = stored.unwrap_or(&self.dummy_hash).to_owned();
        let matched = self
            .run(
                move || match argon.verify_password(password.expose().as_bytes(), hash.as_str()) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                    Err(_) => Err(PasswordError::Hash),
                },
            )
            .await?;
        Ok(exists && matched)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(PasswordError::Busy);
                }
                let _waiting = Waiting(self.waiting.clone());
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PasswordError::Task)?
            }
        };
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .map_err(|_| PasswordError::Task)?
    }
}

/// Checks a new password against the policy beyond its length: it must not be or contain the
/// email, its local part or the username, and zxcvbn must score it at least `min_score`
/// (zxcvbn knows tens of thousands of common and breached passwords, names and words).
/// Returns the message for `fields.<password field>`.
pub fn check_policy(
    password: &Password,
    email: &str,
    username: Option<&str>,
    min_score: u8,
) -> Result<(), String> {
    let lower = password.expose().to_lowercase();
    let local = email.split('@').next().unwrap_or("");
    let mut personal = vec![email];
    if local.chars().count() >= 4 {
        personal.push(local);
    }
    if let Some(u) = username.filter(|u| u.chars().count() >= 3) {
        personal.push(u);
    }
    if personal
        .iter()
        .any(|p| !p.is_empty() && lower.contains(&p.to_lowercase()))
    {
        return Err("must not contain your email address or username".to_owned());
    }
    // zxcvbn's cost grows with length; its authors advise scoring the first 100 characters.
    let head: String = password.expose().chars().take(100).collect();
    let estimate = zxcvbn::zxcvbn(&head, &personal);
    if (estimate.score() as u8) < min_score {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({w})"))
            .unwrap_or_default();
        return Err(format!(
            "is too easy to guess{hint}: use a longer passphrase of several unrelated words"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hasher() -> Hasher {
        Hasher::new(&Config::from_toml("").unwrap().password).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_fail() {
        let h = hasher();
        let pw = Password::new("correct horse battery", 8, 256).unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(h.verify(&pw, Some(&hash)).await.unwrap());
        let wrong = Password::presented("correct horse battery!", 256).unwrap();
        assert!(!h.verify(&wrong, Some(&hash)).await.unwrap());
    }

    fn policy(pw: &str) -> Result<(), String> {
        check_policy(
            &Password::presented(pw, 256).unwrap(),
            "ada.lovelace@example.com",
            Some("countess"),
            3,
        )
    }

    #[test]
    fn common_and_personal_passwords_are_refused() {
        for weak in [
            "password",
            "password123",
            "qwertyuiop",
            "iloveyou1",
            "12345678",
            "letmein!",
        ] {
            assert!(policy(weak).is_err(), "{weak}");
        }
        for personal in [
            "ada.lovelace@example.com",
            "xxada.lovelacexx99",
            "Countess-1843-zz",
        ] {
            let e = policy(personal).unwrap_err();
            assert!(
                e.contains("email") || e.contains("guess"),
                "{personal}: {e}"
            );
        }
        for strong in [
            "correct horse battery staple",
            "a brand new passphrase",
            "pässwörd-pässwörd",
        ] {
            assert!(policy(strong).is_ok(), "{strong}: {:?}", policy(strong));
        }
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let mut cfg = Config::from_toml("").unwrap().password;
        cfg.max_concurrent_hashes = 1;
        cfg.max_queued_hashes = 1;
        let h = Arc::new(Hasher::new(&cfg).unwrap());
        let pw = Password::presented("anything at all", 256).unwrap();
        let running: Vec<_> = (0..2)
            .map(|_| {
                let (h, pw) = (h.clone(), pw.clone());
                tokio::spawn(async move { h.verify(&pw, None).await })
            })
            .collect();
        for _ in 0..10_000 {
            if h.waiting.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // One hashing, one waiting: the third is refused without waiting.
        let third = h.verify(&pw, None).await;
        assert!(matches!(third, Err(PasswordError::Busy)), "{third:?}");
        for r in running {
            assert!(r.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn unknown_accounts_never_match() {
        let h = hasher();
        let pw = Password::presented("anything at all", 256).unwrap();
        assert!(!h.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        let h = hasher();
        let pw = Password::presented("anything at all", 256).unwrap();
        assert!(h.verify(&pw, Some("$argon2id$garbage")).await.is_err());
    }
}
