//! Administration use cases, shared by the admin API and the CLI.
//!
//! The rule that keeps an installation administrable: through the API an administrator cannot
//! remove their own `admin` role, disable or delete themselves, and no change may leave the
//! installation without an active administrator. The CLI (an operator with database access)
//! is not bound by it, so a locked-out installation can always be repaired.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use super::events::Event;
use super::{Auth, AuthError, FieldErrors, Principal, Registration};
use crate::domain::{ClientInfo, DisplayName, Password, UserId, parse_names};
use crate::store::{AuditQuery, AuditRecord, SessionRecord, UserChange, UserRecord};

/// The role that may use the admin API.
pub const ADMIN_ROLE: &str = "admin";

/// Why an administrator's change that would leave no active administrator is refused.
pub(super) const LAST_ADMINISTRATOR: &str =
    "This is the last active administrator; make another one first";

/// Who asks for an administrative change.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An administrator through the API (bound by the self-protection rule).
    Admin(&'a Principal),
    /// An operator through the CLI.
    Operator,
}

impl Actor<'_> {
    pub(super) fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::Admin(p) => Some(p.user_id),
            Actor::Operator => None,
        }
    }
}

/// A page of results and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Opaque cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// An administrator's change to a user, as received.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New permissions.
    pub permissions: Option<Vec<String>>,
    /// Enable or disable.
    pub is_active: Option<bool>,
    /// New display name (`Some(None)` clears).
    pub name: Option<Option<String>>,
}

/// `limit` as API.md says: default 50, at most 200.
pub fn page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50).clamp(1, 200)
}

fn encode_cursor(id: &str) -> String {
    B64.encode(id)
}

fn decode_cursor(cursor: &str) -> Result<String, AuthError> {
    let invalid = || {
        let mut f = FieldErrors::new();
        f.insert("cursor", "is not a cursor from a previous page".to_owned());
        AuthError::Validation(f)
    };
    let bytes = B64.decode(cursor).map_err(|_| invalid())?;
    let id = String::from_utf8(bytes).map_err(|_| invalid())?;
    uuid::Uuid::try_parse(&id).map_err(|_| invalid())?;
    Ok(id)
}

/// Through the API an administrator cannot remove their own admin role, disable or delete
/// themselves.
fn refuse_self_removal(actor: Actor<'_>, target: UserId) -> Result<(), AuthError> {
    if actor.user_id() == Some(target) {
        return Err(AuthError::Forbidden(
            "You cannot remove your own admin role, disable or delete yourself; ask another administrator",
        ));
    }
    Ok(())
}

/// The role a change by `actor` must leave held by an active user: the admin role through the
/// API, none for an operator (who can always repair an installation from the CLI). The store
/// decides it in the write itself, so concurrent changes cannot remove every administrator.
fn keep_admin(actor: Actor<'_>) -> Option<&'static str> {
    matches!(actor, Actor::Admin(_)).then_some(ADMIN_ROLE)
}

fn field_error(field: &'static str, message: String) -> AuthError {
    let mut f = FieldErrors::new();
    f.insert(field, message);
    AuthError::Validation(f)
}

impl Auth {
    /// Users in creation order, optionally filtered by exact (case-insensitive) email.
    pub async fn list_users(
        &self,
        email: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<UserRecord>, AuthError> {
        let limit = page_size(limit);
        let after = match cursor {
            None => None,
            Some(c) => UserId::parse(&decode_cursor(c)?),
        };
        let email = email.map(crate::domain::login_key);
        let mut items = self
            .store
            .list_users(email.as_deref(), after, limit + 1)
            .await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|u| encode_cursor(&u.id.to_string()))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// One user; unknown ids are `NotFound`.
    pub async fn get_user(&self, id: &str) -> Result<UserRecord, AuthError> {
        let id = UserId::parse(id).ok_or(AuthError::NotFound)?;
        self.store.find_user(id).await?.ok_or(AuthError::NotFound)
    }

    /// A user by id or by email/username (the CLI's `ID|EMAIL`).
    pub async fn find_user(&self, id_or_login: &str) -> Result<UserRecord, AuthError> {
        if let Some(id) = UserId::parse(id_or_login.trim()) {
            return self.store.find_user(id).await?.ok_or(AuthError::NotFound);
        }
        let login = crate::domain::login_key(id_or_login);
        if login.chars().any(char::is_control) {
            return Err(AuthError::NotFound);
        }
        self.store
            .find_user_by_login(&login)
            .await?
            .ok_or(AuthError::NotFound)
    }

    /// Creates a user with roles and permissions (admin API, CLI), applying the password policy.
    pub async fn admin_create_user(
        &self,
        input: Registration,
        roles: Vec<String>,
        permissions: Vec<String>,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let roles = parse_names(&roles).map_err(|e| field_error("roles", e.to_string()))?;
        let permissions =
            parse_names(&permissions).map_err(|e| field_error("permissions", e.to_string()))?;
        self.create_user(input, roles, permissions, client).await
    }

    /// Changes roles, permissions, active state or name. Disabling ends every session.
    pub async fn update_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        patch: UserPatch,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let user = self.get_user(id).await?;
        let mut errors = FieldErrors::new();
        let roles = match patch.roles.as_deref().map(parse_names) {
            Some(Err(e)) => {
                errors.insert("roles", e.to_string());
                None
            }
            Some(Ok(r)) => Some(r),
            None => None,
        };
        let permissions = match patch.permissions.as_deref().map(parse_names) {
            Some(Err(e)) => {
                errors.insert("permissions", e.to_string());
                None
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        let name = match patch.name {
            Some(Some(n)) => match DisplayName::parse(&n) {
                Ok(n) => Some(Some(n.as_str().to_owned()).filter(|n| !n.is_empty())),
                Err(e) => {
                    errors.insert("name", e.to_string());
                    None
                }
            },
            other => other,
        };
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let keeps_admin = roles
            .as_ref()
            .map_or(user.roles.iter().any(|r| r == ADMIN_ROLE), |r| {
                r.iter().any(|r| r == ADMIN_ROLE)
            });
        let stays_active = patch.is_active.unwrap_or(user.is_active);
        if !(keeps_admin && stays_active) {
            refuse_self_removal(actor, user.id)?;
        }
        let change = UserChange {
            roles,
            permissions,
            is_active: patch.is_active,
            name,
        };
        let now = self.now();
        let updated = self
            .store
            .update_user(user.id, &change, now, keep_admin(actor))
            .await?
            .ok_or(AuthError::NotFound)?;
        let by = actor.user_id();
        if user.is_active && !updated.is_active {
            self.store
                .revoke_user_sessions(user.id, None, "user_disabled", now)
                .await?;
            self.emit(Event::success("user_disabled", client).user(user.id).by(by))
                .await;
        } else {
            self.emit(Event::success("user_updated", client).user(user.id).by(by))
                .await;
        }
        Ok(updated)
    }

    /// Deletes a user: their sessions end and their data is removed (audit events stay).
    pub async fn delete_user(
        &self,
        actor: Actor<'_>,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = self.get_user(id).await?;
        refuse_self_removal(actor, user.id)?;
        if !self.store.delete_user(user.id, keep_admin(actor)).await? {
            return Err(AuthError::NotFound);
        }
        self.emit(Event {
            reason: Some("deleted"),
            ..Event::success("user_updated", client)
                .user(user.id)
                .by(actor.user_id())
        })
        .await;
        Ok(())
    }

    /// A user's live sessions.
    pub async fn user_sessions(&self, id: &str) -> Result<Vec<SessionRecord>, AuthError> {
        let user = self.get_user(id).await?;
        Ok(self.store.live_sessions(user.id, self.now()).await?)
    }

    /// Ends every session of a user. Returns how many ended.
    pub async fn end_user_sessions(
        &self,
        actor: Actor<'_>,
        id: &str,
        client: &ClientInfo,
    ) -> Result<u64, AuthError> {
        let user = self.get_user(id).await?;
        let ended = self
            .store
            .revoke_user_sessions(user.id, None, "admin_revoked", self.now())
            .await?;
        self.emit(Event {
            reason: Some("all_sessions"),
            ..Event::success("session_revoked", client)
                .user(user.id)
                .by(actor.user_id())
        })
        .await;
        Ok(ended)
    }

    /// Ends one session by id (CLI `sessions revoke`).
    pub async fn revoke_session_by_id(
        &self,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let sid = crate::domain::SessionId::parse(id.trim()).ok_or(AuthError::NotFound)?;
        let session = self
            .store
            .find_session(sid)
            .await?
            .ok_or(AuthError::NotFound)?;
        if !self
            .store
            .revoke_session(sid, "admin_revoked", self.now())
            .await?
        {
            return Err(AuthError::NotFound);
        }
        self.emit(Event::success("session_revoked", client).of(&session))
            .await;
        Ok(())
    }

    /// Sets a new password for a user (CLI) and ends all their sessions.
    pub async fn reset_password(
        &self,
        id: &str,
        new: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = self.find_user(id).await?;
        let policy = &self.config.password;
        let password = Password::new(new, policy.min_length, policy.max_length)
            .map_err(|e| field_error("password", e.to_string()))?;
        self.check_policy(&password, "password", &user.email, user.username.as_deref())
            .await?;
        let hash = self.hasher.hash(&password).await?;
        let now = self.now();
        self.store.set_password_hash(user.id, &hash, now).await?;
        self.store
            .revoke_user_sessions(user.id, None, "password_reset", now)
            .await?;
        self.emit(Event {
            reason: Some("reset_by_operator"),
            ..Event::success("password_changed", client).user(user.id)
        })
        .await;
        Ok(())
    }

    /// Audit events, newest first.
    pub async fn audit_events(
        &self,
        user_id: Option<&str>,
        event: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Page<AuditRecord>, AuthError> {
        let limit = page_size(limit);
        let user_id = match user_id {
            None => None,
            Some(u) => Some(
                UserId::parse(u)
                    .ok_or_else(|| field_error("user_id", "is not a user id".to_owned()))?,
            ),
        };
        let before = cursor.map(decode_cursor).transpose()?;
        let mut items = self
            .store
            .audit_events(&AuditQuery {
                user_id,
                event: event.map(str::to_owned),
                before,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|e| encode_cursor(&e.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
