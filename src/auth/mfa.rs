//! Two-factor authentication: TOTP (RFC 6238: SHA-1, 6 digits, 30 s, ±1 step) with recovery
//! codes, and the second step of a login.
//!
//! A login whose password is right for an account with two-factor on opens no session: it
//! stores a challenge (`mfa_challenges`: the user, the credentials version the password was
//! checked under, an attempt counter) and answers `mfa_required` with the challenge's token.
//! `/auth/mfa/verify` spends one of its five attempts (and one of the account's failed-login
//! budget when wrong), accepts a TOTP code whose time step is later than the last accepted
//! one (so each code works once, on any node) or an unused recovery code, ends the challenge
//! and opens the session as a login would, marked `mfa` (its tokens say `amr: ["pwd","otp"]`).

use aws_lc_rs::digest::{SHA256, digest};
use subtle::ConstantTimeEq as _;
use totp_rs::{Secret, Totp};

use super::events::Event;
use super::{Auth, AuthError, FieldErrors, Principal, TokenPair};
use crate::domain::{ClientInfo, FieldError, Password};
use crate::limits::Action;
use crate::store::{MFA_ATTEMPTS, NewChallenge, UserRecord};
use crate::token::{LinkToken, RefreshHash};

/// How long an `mfa_token` works.
pub const MFA_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a TOTP seed (160 bits, RFC 4226's recommendation).
const SEED_LEN: usize = 20;
/// Seconds per time step.
const STEP: u64 = 30;

/// A new enrolment, shown once.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The seed in base32 (what an authenticator app takes when typed in).
    pub secret: String,
    /// `otpauth://totp/…` (what the QR code holds).
    pub otpauth_uri: String,
    /// The QR code of the URI as an SVG document.
    pub qr_svg: String,
}

/// `mfa_required`: the password was right; the login waits for a second factor.
#[derive(Debug, Clone)]
pub struct MfaChallenge {
    /// The token `/auth/mfa/verify` takes.
    pub mfa_token: String,
    /// Seconds it works.
    pub expires_in: i64,
}

/// The second factor presented.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// A TOTP code.
    Code(String),
    /// A recovery code.
    RecoveryCode(String),
}

fn hash_code(code: &str) -> RefreshHash {
    let normalised: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let d = digest(&SHA256, normalised.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    RefreshHash(out)
}

/// A recovery code: 80 random bits as four groups of four base32 characters (`k7pq-…`).
fn recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The time step of `unix_seconds`.
fn step_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP as i64)
}

/// The TOTP of `seed` (base32), labelled for the account.
fn totp(seed: &str, issuer: &str, account: &str) -> Result<Totp, AuthError> {
    let secret = Secret::try_from_base32(seed)
        .map_err(|_| AuthError::Internal("a stored TOTP seed is not base32".to_owned()))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(|e| AuthError::Internal(format!("TOTP: {e}")))
}

/// The latest time step in now ±1 whose code is `code` (compared in constant time), after
/// `last`.
fn matching_step(t: &Totp, code: &str, now_step: i64, last: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for step in [now_step - 1, now_step, now_step + 1] {
        let Ok(at) = u64::try_from(step) else {
            continue;
        };
        let expected = t.generate(at * STEP).to_string();
        let same: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        if same && last.is_none_or(|l| step > l) {
            found = Some(step);
        }
    }
    found
}

impl Auth {
    fn seal_seed(&self, user: &UserRecord, seed: &str) -> Result<String, AuthError> {
        let envelope = self.config.signing.envelope();
        if !envelope.seals() {
            return Ok(seed.to_owned());
        }
        envelope
            .seal(seed.as_bytes(), &super::sealed::totp_name(user.id))
            .map_err(|e| AuthError::Internal(format!("sealing a TOTP seed: {e}")))
    }

    fn open_seed(&self, user: crate::domain::UserId, stored: &str) -> Result<String, AuthError> {
        use secrecy::ExposeSecret as _;
        self.config
            .signing
            .envelope()
            .open(stored, &super::sealed::totp_name(user))
            .map(|s| s.expose_secret().to_owned())
            .map_err(|e| AuthError::Internal(format!("opening a TOTP seed: {e}")))
    }

    /// `POST /auth/mfa/totp`: after the password, a new seed (pending until confirmed).
    pub async fn start_totp(
        &self,
        who: &Principal,
        password: Option<String>,
        client: &ClientInfo,
    ) -> Result<Enrolment, AuthError> {
        self.limit(Action::Password, client).await?;
        let password = presented_password(password, self.config.password.max_length)?;
        self.check_current_password(who, &password, client, "mfa_enabled", "password")
            .await?;
        let me = self.me(who).await?;
        if me.mfa_enabled {
            return Err(AuthError::Forbidden(
                "Two-factor authentication is already on; turn it off first",
            ));
        }
        let mut seed = [0u8; SEED_LEN];
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            return Err(AuthError::Internal("no randomness".to_owned()));
        }
        let base32 = Secret::from(seed.to_vec()).to_base32();
        let t = totp(&base32, &self.config.mfa.issuer_name, &me.email)?;
        let uri = t
            .to_url()
            .map_err(|e| AuthError::Internal(format!("otpauth URI: {e}")))?;
        let qr = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| AuthError::Internal(format!("QR code: {e}")))?;
        let qr_svg = qr
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build();
        let sealed = self.seal_seed(&me, &base32)?;
        if !self.store.start_totp(me.id, &sealed, self.now()).await? {
            return Err(AuthError::Forbidden(
                "Two-factor authentication is already on; turn it off first",
            ));
        }
        Ok(Enrolment {
            secret: base32,
            otpauth_uri: uri,
            qr_svg,
        })
    }

    /// `POST /auth/mfa/totp/confirm`: the first code turns two-factor on; returns the
    /// recovery codes (shown once). Every other session ends.
    pub async fn confirm_totp(
        &self,
        who: &Principal,
        code: Option<String>,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        self.limit(Action::Password, client).await?;
        let code = code.ok_or_else(|| required("code"))?;
        let me = self.me(who).await?;
        let enrolment = self.store.totp(me.id).await?;
        let Some(enrolment) = enrolment.filter(|e| !e.confirmed) else {
            return Err(AuthError::InvalidCode);
        };
        let seed = self.open_seed(me.id, &enrolment.secret)?;
        let t = totp(&seed, &self.config.mfa.issuer_name, &me.email)?;
        let now_step = step_of(self.now().unix_timestamp());
        let Some(step) = matching_step(&t, &code, now_step, None) else {
            self.emit(
                Event::failure("mfa_failed", client, "wrong_code")
                    .user(me.id)
                    .session(who.session_id),
            )
            .await;
            return Err(AuthError::InvalidCode);
        };
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let hashes: Vec<RefreshHash> = codes.iter().map(|c| hash_code(c)).collect();
        if !self
            .store
            .confirm_totp(me.id, step, &hashes, who.session_id, self.now())
            .await?
        {
            return Err(AuthError::InvalidCode);
        }
        self.emit(
            Event::success("mfa_enabled", client)
                .user(me.id)
                .session(who.session_id),
        )
        .await;
        Ok(codes)
    }

    /// `DELETE /auth/mfa/totp`: with the password and a current code (or a recovery code),
    /// two-factor is off.
    pub async fn disable_totp(
        &self,
        who: &Principal,
        password: Option<String>,
        code: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.limit(Action::Password, client).await?;
        let mut errors = FieldErrors::new();
        if password.is_none() {
            errors.insert("password", FieldError::Required.to_string());
        }
        if code.is_none() {
            errors.insert("code", FieldError::Required.to_string());
        }
        let (Some(password), Some(code), true) = (password, code, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let password = presented_password(Some(password), self.config.password.max_length)?;
        self.check_current_password(who, &password, client, "mfa_disabled", "password")
            .await?;
        let me = self.me(who).await?;
        if !me.mfa_enabled {
            return Err(AuthError::InvalidCode);
        }
        let factor = if code.trim().len() == 6 {
            SecondFactor::Code(code)
        } else {
            SecondFactor::RecoveryCode(code)
        };
        if !self.second_factor_ok(&me, &factor).await? {
            self.emit(
                Event::failure("mfa_failed", client, "wrong_code")
                    .user(me.id)
                    .session(who.session_id),
            )
            .await;
            return Err(AuthError::InvalidCode);
        }
        self.store.disable_mfa(me.id, self.now()).await?;
        self.emit(
            Event::success("mfa_disabled", client)
                .user(me.id)
                .session(who.session_id),
        )
        .await;
        Ok(())
    }

    /// Turns two-factor off for a user (administrators, `keygate user reset-mfa`).
    pub async fn reset_mfa(
        &self,
        actor: super::Actor<'_>,
        user: &UserRecord,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let had = self.store.disable_mfa(user.id, self.now()).await?;
        self.emit(Event {
            reason: Some("reset_by_operator"),
            ..Event::success("mfa_disabled", client)
                .user(user.id)
                .by(actor.user_id())
        })
        .await;
        Ok(had)
    }

    /// Whether `factor` is good for `user`; a good one is used up.
    async fn second_factor_ok(
        &self,
        user: &UserRecord,
        factor: &SecondFactor,
    ) -> Result<bool, AuthError> {
        match factor {
            SecondFactor::Code(code) => {
                let Some(enrolment) = self.store.totp(user.id).await?.filter(|e| e.confirmed)
                else {
                    return Ok(false);
                };
                let seed = self.open_seed(user.id, &enrolment.secret)?;
                let t = totp(&seed, &self.config.mfa.issuer_name, &user.email)?;
                let now_step = step_of(self.now().unix_timestamp());
                match matching_step(&t, code, now_step, enrolment.last_step) {
                    Some(step) => Ok(self.store.use_totp_step(user.id, step).await?),
                    None => Ok(false),
                }
            }
            SecondFactor::RecoveryCode(code) => Ok(self
                .store
                .use_recovery_code(user.id, &hash_code(code), self.now())
                .await?),
        }
    }

    /// The password was right for `user`, who has two-factor on: the login waits.
    pub(super) async fn challenge(
        &self,
        user: &UserRecord,
        credentials_version: i64,
        client: &ClientInfo,
    ) -> Result<MfaChallenge, AuthError> {
        let token = LinkToken::generate();
        let now = self.now();
        let ttl = time::Duration::try_from(MFA_TOKEN_TTL).unwrap_or(time::Duration::ZERO);
        self.store
            .insert_challenge(
                &NewChallenge {
                    id: token.id(),
                    user_id: user.id,
                    secret_hash: token.hash(),
                    credentials_version,
                    expires_at: now + ttl,
                },
                now,
            )
            .await?;
        self.emit(Event::failure("login_failed", client, "mfa_required").user(user.id))
            .await;
        Ok(MfaChallenge {
            mfa_token: token.expose(),
            expires_in: ttl.whole_seconds(),
        })
    }

    /// `POST /auth/mfa/verify`: completes a login with a TOTP or recovery code.
    pub async fn verify_mfa(
        &self,
        mfa_token: Option<String>,
        factor: Option<SecondFactor>,
        client: ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        self.limit(Action::Login, &client).await?;
        let mut errors = FieldErrors::new();
        if mfa_token.is_none() {
            errors.insert("mfa_token", FieldError::Required.to_string());
        }
        if factor.is_none() {
            errors.insert("code", FieldError::Required.to_string());
        }
        let (Some(mfa_token), Some(factor), true) = (mfa_token, factor, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let token = LinkToken::parse(mfa_token.trim()).ok_or(AuthError::InvalidCode)?;
        let now = self.now();
        let challenge = match self.store.find_challenge(&token.id()).await? {
            Some(c)
                if c.secret_hash.matches(&token.hash())
                    && c.expires_at > now
                    && c.attempts < MFA_ATTEMPTS =>
            {
                c
            }
            _ => return Err(AuthError::InvalidCode),
        };
        if !self.store.attempt_challenge(&token.id(), now).await? {
            return Err(AuthError::InvalidCode);
        }
        let Some(user) = self.store.find_user(challenge.user_id).await? else {
            return Err(AuthError::InvalidCode);
        };
        // A wrong code counts like a wrong password: the account's back-off applies.
        let ip = client.ip.as_deref();
        let attempt = match self.limits.begin_login(&user.id.to_string(), ip).await {
            Ok(attempt) => attempt,
            Err(retry) => {
                self.rate_limited(Action::Login, &client).await;
                return Err(AuthError::RateLimited(retry));
            }
        };
        if !self.second_factor_ok(&user, &factor).await? {
            drop(attempt);
            let reason = match factor {
                SecondFactor::Code(_) => "wrong_code",
                SecondFactor::RecoveryCode(_) => "wrong_recovery_code",
            };
            self.emit(Event::failure("mfa_failed", &client, reason).user(user.id))
                .await;
            return Err(AuthError::InvalidCode);
        }
        self.limits.login_succeeded(attempt).await;
        if !self.store.finish_challenge(&token.id()).await? {
            return Err(AuthError::InvalidCode);
        }
        if !user.is_active {
            self.emit(Event::failure("login_failed", &client, "account_disabled").user(user.id))
                .await;
            return Err(AuthError::AccountDisabled);
        }
        if let SecondFactor::RecoveryCode(_) = factor {
            tracing::info!(user_id = %user.id, "a recovery code was used");
        }
        self.open_session(&user, challenge.credentials_version, true, &client)
            .await
    }
}

fn required(field: &'static str) -> AuthError {
    let mut errors = FieldErrors::new();
    errors.insert(field, FieldError::Required.to_string());
    AuthError::Validation(errors)
}

fn presented_password(password: Option<String>, max: usize) -> Result<Password, AuthError> {
    let mut errors = FieldErrors::new();
    super::presented_password(&mut errors, password.as_deref(), max)
        .ok_or(AuthError::Validation(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (8 digits there; the last 6 digits are the 6-digit codes).
    #[test]
    fn rfc_6238_test_vectors() {
        let seed = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let t = totp(&seed, "Keygate", "ada@example.com").expect("totp");
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time).to_string(), eight[2..], "T = {time}");
            let step = step_of(time as i64);
            assert_eq!(matching_step(&t, &eight[2..], step, None), Some(step));
            // ±1 step of skew; not two.
            assert_eq!(matching_step(&t, &eight[2..], step + 1, None), Some(step));
            assert_eq!(matching_step(&t, &eight[2..], step - 1, None), Some(step));
            assert_eq!(matching_step(&t, &eight[2..], step + 2, None), None);
            // A step already accepted is not accepted again.
            assert_eq!(matching_step(&t, &eight[2..], step, Some(step)), None);
        }
    }

    #[test]
    fn recovery_codes_carry_80_bits_and_hash_whatever_the_dashes_and_case() {
        let a = recovery_code();
        assert_eq!(a.len(), 19, "{a}");
        assert_ne!(a, recovery_code());
        let b = a.to_uppercase().replace('-', " ");
        assert!(hash_code(&a).matches(&hash_code(&b)));
    }
}
