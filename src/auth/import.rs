//! Importing users with their existing password hashes (`keygate import`).

use serde::Deserialize;

use super::events::Event;
use super::{Auth, AuthError};
use crate::domain::{ClientInfo, DisplayName, Email, Username, parse_names};
use crate::password::check_importable_hash;
use crate::store::NewUser;

/// One line of the import file (JSON Lines).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    email: String,
    name: Option<String>,
    username: Option<String>,
    password_hash: String,
    #[serde(default)]
    roles: Vec<String>,
    is_active: Option<bool>,
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// A new user.
    Created,
    /// A user with this email already exists; left as it is (imports can be re-run).
    AlreadyThere,
    /// An empty line.
    Blank,
}

impl Auth {
    /// Imports one JSON line `{email, name?, username?, password_hash, roles?, is_active?}`.
    /// The hash is kept as it is (bcrypt or argon2) and upgraded at the user's next login.
    /// `Err` is a sentence for the operator; it never repeats the hash.
    pub async fn import_user(&self, line: &str) -> Result<Imported, String> {
        if line.trim().is_empty() {
            return Ok(Imported::Blank);
        }
        let parsed: ImportLine = serde_json::from_str(line).map_err(|e| {
            format!(
                "not a valid user object ({})",
                match e.classify() {
                    serde_json::error::Category::Data => "unknown, missing or mistyped field",
                    _ => "malformed JSON",
                }
            )
        })?;
        let email = Email::parse(&parsed.email).map_err(|e| format!("email {e}"))?;
        let username = parsed
            .username
            .as_deref()
            .map(Username::parse)
            .transpose()
            .map_err(|e| format!("username {e}"))?;
        let name = parsed
            .name
            .as_deref()
            .map(DisplayName::parse)
            .transpose()
            .map_err(|e| format!("name {e}"))?;
        let roles = parse_names(&parsed.roles).map_err(|e| format!("roles {e}"))?;
        check_importable_hash(&parsed.password_hash)?;
        let new = NewUser {
            email,
            username: username.map(|u| u.as_str().to_owned()),
            name: name
                .map(|n| n.as_str().to_owned())
                .filter(|n| !n.is_empty()),
            password_hash: parsed.password_hash,
            roles,
            permissions: Vec::new(),
        };
        match self
            .store
            .insert_imported_user(new, parsed.is_active.unwrap_or(true), self.now())
            .await
        {
            Ok(Some(user)) => {
                self.emit(Event {
                    reason: Some("imported"),
                    ..Event::success("user_created", &ClientInfo::default()).user(user.id)
                })
                .await;
                Ok(Imported::Created)
            }
            Ok(None) => Ok(Imported::AlreadyThere),
            Err(e) => Err(match AuthError::from(e) {
                AuthError::Conflict(what) => format!("{what} already belongs to another user"),
                AuthError::Unavailable => "the database is unavailable".to_owned(),
                _ => "the database refused the user".to_owned(),
            }),
        }
    }
}
