//! Every value sealed under the key-encryption key, beside the signing keys (`keys.rs`): TOTP
//! seeds and the shared server secrets (the CSRF key). At start-up each class is test-opened
//! (every signing key and server secret, one TOTP seed per KEK that sealed any) and values
//! stored plain are sealed once a KEK is configured; `keygate keys rekey` opens every value and
//! seals it under the current KEK, so an older KEK can then be dropped. A value no configured
//! KEK opens stops start-up with one sentence naming it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use secrecy::ExposeSecret as _;

use super::StartupError;
use super::keys::{SealReport, sealed_error};
use crate::envelope::{Envelope, EnvelopeError, SEALED_PREFIX};
use crate::store::Store;

/// TOTP seeds sealed or checked per page.
const PAGE: u32 = 500;

/// The associated data of a user's TOTP seed.
pub(super) fn totp_name(user: crate::domain::UserId) -> String {
    format!("totp:{user}")
}

/// The associated data of server secret `name`.
fn secret_name(name: &str) -> String {
    format!("server_secret:{name}")
}

/// The TOTP seeds: each KEK that sealed any must be configured (one seed of each opened);
/// plain seeds are sealed when a KEK is configured, and with `rekey` every seed not sealed
/// under the current KEK is sealed anew.
pub async fn seal_totp_seeds(
    envelope: &Envelope,
    store: &Store,
    rekey: bool,
) -> Result<SealReport, StartupError> {
    let what = |count: i64| {
        if count == 1 {
            "the two-factor seed of 1 account".to_owned()
        } else {
            format!("the two-factor seeds of {count} accounts")
        }
    };
    let mut work = false;
    let mut report = SealReport::default();
    for group in store.totp_seal_groups().await? {
        let (user, stored) = &group.sample;
        envelope
            .open(stored.expose_secret(), &totp_name(*user))
            .map_err(|reason| sealed_error(what(group.count), reason))?;
        let stale = envelope.needs_sealing(stored.expose_secret());
        if stale && (group.kek.is_none() || rekey) {
            work = true;
        } else {
            report.unchanged += usize::try_from(group.count).unwrap_or(0);
        }
    }
    if !work {
        return Ok(report);
    }
    let mut after = None;
    loop {
        let page = store.totp_seeds(after, PAGE, !rekey).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (user, stored) in page {
            if !envelope.needs_sealing(stored.expose_secret()) {
                continue;
            }
            let plain = envelope
                .open(stored.expose_secret(), &totp_name(user))
                .map_err(|reason| sealed_error(what(1), reason))?;
            let sealed = envelope
                .seal(plain.expose_secret().as_bytes(), &totp_name(user))
                .map_err(|reason| sealed_error(what(1), reason))?;
            if store.reseal_totp(user, &stored, &sealed).await? {
                report.sealed += 1;
            }
        }
    }
    if report.sealed > 0 {
        tracing::info!(
            sealed = report.sealed,
            kek = envelope.current_id(),
            "sealed two-factor seeds"
        );
    }
    Ok(report)
}

/// The bytes of a server secret as stored: opened when sealed.
fn open_secret(envelope: &Envelope, name: &str, stored: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if !stored.starts_with(SEALED_PREFIX.as_bytes()) {
        return Ok(stored.to_vec());
    }
    let text = std::str::from_utf8(stored).map_err(|_| EnvelopeError::Corrupt)?;
    let plain = envelope.open(text, &secret_name(name))?;
    B64.decode(plain.expose_secret())
        .map_err(|_| EnvelopeError::Corrupt)
}

/// `secret` as it is stored under `envelope`: sealed when a KEK is configured.
fn stored_form(envelope: &Envelope, name: &str, secret: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if !envelope.seals() {
        return Ok(secret.to_vec());
    }
    Ok(envelope
        .seal(B64.encode(secret).as_bytes(), &secret_name(name))?
        .into_bytes())
}

/// The shared server secret `name`: `candidate` if this node stores it first (sealed when a
/// KEK is configured), else the one stored before, opened. A plain one is sealed once a KEK
/// is configured, and with `rekey` one sealed under an older KEK is sealed anew.
pub async fn server_secret(
    envelope: &Envelope,
    store: &Store,
    name: &str,
    candidate: &[u8],
    now: time::OffsetDateTime,
    rekey: bool,
) -> Result<(Vec<u8>, SealReport), StartupError> {
    let what = || format!("the server secret `{name}`");
    let fresh = stored_form(envelope, name, candidate).map_err(|r| sealed_error(what(), r))?;
    let stored = store.server_secret(name, &fresh, now).await?;
    let secret = open_secret(envelope, name, &stored).map_err(|r| sealed_error(what(), r))?;
    let mut report = SealReport::default();
    let sealed_text = std::str::from_utf8(&stored)
        .ok()
        .filter(|t| Envelope::is_sealed(t));
    let plain = sealed_text.is_none();
    let stale = match sealed_text {
        Some(text) => envelope.needs_sealing(text),
        None => envelope.seals(),
    };
    if stale && (plain || rekey) {
        let resealed = stored_form(envelope, name, &secret).map_err(|r| sealed_error(what(), r))?;
        if store.reseal_server_secret(name, &stored, &resealed).await? {
            tracing::info!(name, kek = envelope.current_id(), "sealed a server secret");
            report.sealed += 1;
        }
    } else {
        report.unchanged += 1;
    }
    Ok((secret, report))
}

/// What [`super::Auth::rekey`] did, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// The signing keys' private parts.
    pub signing_keys: SealReport,
    /// The TOTP seeds.
    pub totp_seeds: SealReport,
    /// The server secrets (the CSRF key).
    pub server_secrets: SealReport,
}

impl super::Auth {
    /// `keygate keys rekey`: every sealed value of every class opened and sealed under the
    /// current KEK (plain ones too), so the previous KEKs can be dropped afterwards.
    pub async fn rekey(&self) -> Result<RekeyReport, StartupError> {
        let envelope = self.config.signing.envelope();
        let store = &self.store;
        let mut report = RekeyReport {
            signing_keys: super::seal_stored_keys(&envelope, store, true).await?,
            totp_seeds: seal_totp_seeds(&envelope, store, true).await?,
            server_secrets: SealReport::default(),
        };
        // A server secret exists once a node has started; the candidate is never stored over
        // an existing one.
        for name in [super::CSRF_SECRET] {
            if store.stored_server_secret(name).await?.is_none() {
                continue;
            }
            let (_, r) = server_secret(&envelope, store, name, &[], self.now(), true).await?;
            report.server_secrets.sealed += r.sealed;
            report.server_secrets.unchanged += r.unchanged;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> secrecy::SecretBox<[u8; crate::envelope::KEK_LEN]> {
        secrecy::SecretBox::new(Box::new([byte; crate::envelope::KEK_LEN]))
    }

    #[test]
    fn server_secrets_round_trip_plain_and_sealed() {
        let plain = Envelope::new(None, &[]);
        let one = Envelope::new(Some(&kek(1)), &[]);
        let two_knows_one = Envelope::new(Some(&kek(2)), &[kek(1)]);
        let secret = [7u8; 32];
        assert_eq!(stored_form(&plain, "csrf", &secret).unwrap(), secret);
        let sealed = stored_form(&one, "csrf", &secret).unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX.as_bytes()));
        assert_eq!(open_secret(&one, "csrf", &sealed).unwrap(), secret);
        assert_eq!(
            open_secret(&two_knows_one, "csrf", &sealed).unwrap(),
            secret
        );
        assert_eq!(open_secret(&plain, "csrf", &secret).unwrap(), secret);
        // Bound to its name, and a KEK that is not configured is named.
        assert_eq!(
            open_secret(&one, "other", &sealed).unwrap_err(),
            EnvelopeError::Corrupt
        );
        assert!(matches!(
            open_secret(&Envelope::new(Some(&kek(2)), &[]), "csrf", &sealed).unwrap_err(),
            EnvelopeError::UnknownKek(_)
        ));
    }
}
