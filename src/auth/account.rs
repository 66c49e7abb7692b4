//! Account use cases: register, read and change the profile, change the password.

use super::events::Event;
use super::{Auth, AuthError, FieldErrors, Principal};
use crate::config;
use crate::domain::{ClientInfo, DisplayName, Email, FieldError, Password, Username};
use crate::limits::Action;
use crate::password;
use crate::store::{NewUser, UserRecord};

/// A registration as received (unvalidated).
#[derive(Debug, Default, Clone)]
pub struct Registration {
    /// Email.
    pub email: Option<String>,
    /// Password (plaintext; dropped after hashing).
    pub password: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Username.
    pub username: Option<String>,
}

/// A profile change: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Default, Clone)]
pub struct ProfileChange {
    /// New display name.
    pub name: Option<Option<String>>,
    /// New username.
    pub username: Option<Option<String>>,
}

fn field<T>(errors: &mut FieldErrors, name: &'static str, r: Result<T, FieldError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.insert(name, e.to_string());
            None
        }
    }
}

fn required<'a>(
    errors: &mut FieldErrors,
    name: &'static str,
    v: &'a Option<String>,
) -> Option<&'a str> {
    if v.is_none() {
        errors.insert(name, FieldError::Required.to_string());
    }
    v.as_deref()
}

impl Auth {
    /// [`password::check_policy`] off the runtime, on the hashing threads (zxcvbn takes a
    /// few milliseconds and builds its dictionaries once, in memory those threads keep); a
    /// refusal is a 422 on `field`.
    pub(super) async fn check_policy(
        &self,
        password: &Password,
        field: &'static str,
        email: &str,
        username: Option<&str>,
    ) -> Result<(), AuthError> {
        let (pw, email, username) = (
            password.clone(),
            email.to_owned(),
            username.map(str::to_owned),
        );
        let min_score = self.config.password.min_score;
        let verdict = self
            .hasher
            .run_cpu(move || password::check_policy(&pw, &email, username.as_deref(), min_score))
            .await?;
        verdict.map_err(|message| {
            let mut errors = FieldErrors::new();
            errors.insert(field, message);
            AuthError::Validation(errors)
        })
    }

    /// Creates an account through public registration.
    pub async fn register(
        &self,
        input: Registration,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        if self.config.registration == config::Registration::Closed {
            return Err(AuthError::RegistrationClosed);
        }
        self.limit(Action::Register, client).await?;
        self.create_user(input, Vec::new(), Vec::new(), client)
            .await
    }

    /// Creates an account with roles and permissions (registration, admin API, CLI).
    pub async fn create_user(
        &self,
        input: Registration,
        roles: Vec<String>,
        permissions: Vec<String>,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let policy = &self.config.password;
        let mut errors = FieldErrors::new();
        let email = required(&mut errors, "email", &input.email)
            .and_then(|e| field(&mut errors, "email", Email::parse(e)));
        let password = required(&mut errors, "password", &input.password).and_then(|p| {
            field(
                &mut errors,
                "password",
                Password::new(p, policy.min_length, policy.max_length),
            )
        });
        let username = input
            .username
            .as_deref()
            .and_then(|u| field(&mut errors, "username", Username::parse(u)));
        let name = input
            .name
            .as_deref()
            .and_then(|n| field(&mut errors, "name", DisplayName::parse(n)));
        let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.check_policy(
            &password,
            "password",
            email.as_str(),
            username.as_ref().map(Username::as_str),
        )
        .await?;
        let password_hash = self.hasher.hash(&password).await?;
        let mail = self.verification_mail(email.as_str());
        let user = self
            .store
            .insert_user_with_mail(
                NewUser {
                    email,
                    username: username.map(|u| u.as_str().to_owned()),
                    name: name
                        .map(|n| n.as_str().to_owned())
                        .filter(|n| !n.is_empty()),
                    password_hash,
                    roles,
                    permissions,
                },
                self.now(),
                mail,
            )
            .await?;
        if self.mailer.is_some() {
            self.wake_sender();
        }
        self.emit(Event::success("user_created", client).user(user.id))
            .await;
        Ok(user)
    }

    /// The caller's account.
    pub async fn me(&self, who: &Principal) -> Result<UserRecord, AuthError> {
        self.store
            .find_user(who.user_id)
            .await?
            .ok_or(AuthError::InvalidToken(super::TokenProblem::Invalid))
    }

    /// Changes the caller's display name and/or username.
    pub async fn update_profile(
        &self,
        who: &Principal,
        change: ProfileChange,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        // Setting a username answers whether it is taken: limited like registration.
        if matches!(change.username, Some(Some(_))) {
            self.limit(Action::Profile, client).await?;
        }
        let mut errors = FieldErrors::new();
        let name = match change.name {
            None => None,
            Some(None) => Some(None),
            Some(Some(n)) => field(&mut errors, "name", DisplayName::parse(&n))
                .map(|n| Some(n.as_str().to_owned()).filter(|n| !n.is_empty())),
        };
        let username = match change.username {
            None => None,
            Some(None) => Some(None),
            Some(Some(u)) => field(&mut errors, "username", Username::parse(&u))
                .map(|u| Some(u.as_str().to_owned())),
        };
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        self.store
            .update_profile(who.user_id, name, username, self.now())
            .await?
            .ok_or(AuthError::InvalidToken(super::TokenProblem::Invalid))
    }

    /// Changes the caller's password after checking the current one, and ends every other
    /// session of the user (a password change is what a user does when they fear theft).
    pub async fn change_password(
        &self,
        who: &Principal,
        current: Option<String>,
        new: Option<String>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.limit(Action::Password, client).await?;
        let policy = &self.config.password;
        let mut errors = FieldErrors::new();
        let current = required(&mut errors, "current_password", &current).and_then(|p| {
            field(
                &mut errors,
                "current_password",
                Password::presented(p, policy.max_length),
            )
        });
        let new = required(&mut errors, "new_password", &new).and_then(|p| {
            field(
                &mut errors,
                "new_password",
                Password::new(p, policy.min_length, policy.max_length),
            )
        });
        let (Some(current), Some(new), true) = (current, new, errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.check_current_password(
            who,
            &current,
            client,
            "password_changed",
            "current_password",
        )
        .await?;
        let me = self.me(who).await?;
        self.check_policy(&new, "new_password", &me.email, me.username.as_deref())
            .await?;
        let hash = self.hasher.hash(&new).await?;
        let now = self.now();
        self.store
            .set_password_hash(who.user_id, &hash, now)
            .await?;
        let ended = self
            .store
            .revoke_user_sessions(who.user_id, Some(who.session_id), "password_changed", now)
            .await?;
        tracing::debug!(
            sessions_ended = ended,
            "other sessions ended by a password change"
        );
        self.emit(
            Event::success("password_changed", client)
                .user(who.user_id)
                .session(who.session_id),
        )
        .await;
        Ok(())
    }
}
