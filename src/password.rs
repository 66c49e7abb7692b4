//! Password hashing with argon2id, off the async runtime and bounded in concurrency.
//!
//! Every hash and verify runs on tokio's blocking pool behind a semaphore sized by
//! `password.max_concurrent_hashes`, carrying the caller's tracing span. Unknown accounts are
//! verified against a dummy hash made at start-up with the same parameters, so a wrong email
//! costs the same time as a wrong password.

use std::sync::Arc;

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
}

/// Hashes and verifies passwords. Cheap to share: clone the `Arc`.
pub struct Hasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    dummy_hash: String,
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
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Task)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .map_err(|_| PasswordError::Task)?
    }
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
