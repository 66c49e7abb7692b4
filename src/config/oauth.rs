//! `oauth.*`: the OAuth clients (resource servers and services) that authenticate to
//! `/oauth/token`, `/oauth/introspect` and `/oauth/revoke`.
//!
//! ```toml
//! [[oauth.clients]]
//! id = "billing-api"
//! secret_hash = "sha256:9f86d0…"      # or secret = "…", or an argon2 PHC string
//! grant_types = ["client_credentials"]
//! roles = ["service"]
//! permissions = ["invoices:read"]
//! ```
//!
//! A plain `secret` is kept only as its SHA-256 digest once read, so the configuration in
//! memory (and `config check`) never holds it.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Text, TextList};

/// Shortest plain client secret accepted (a secret is not a password: it is generated).
const MIN_SECRET_LEN: usize = 16;

/// `oauth.*`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OAuthConfig {
    /// The configured clients.
    pub clients: Vec<OAuthClient>,
}

impl OAuthConfig {
    /// The client with this id.
    pub fn client(&self, id: &str) -> Option<&OAuthClient> {
        self.clients.iter().find(|c| c.id == id)
    }
}

/// One `oauth.clients` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthClient {
    /// The client id (`[A-Za-z0-9._-]`, 1 to 64 characters).
    pub id: String,
    /// How its secret is checked.
    pub secret: ClientSecret,
    /// Grants it may use on its own behalf (`client_credentials`).
    pub grant_types: Vec<String>,
    /// Roles of its `client_credentials` tokens.
    pub roles: Vec<String>,
    /// Permissions of its `client_credentials` tokens.
    pub permissions: Vec<String>,
}

impl OAuthClient {
    /// Whether the client may use `grant_type` for itself.
    pub fn allows(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// A client secret as configured: never the secret itself.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum ClientSecret {
    /// SHA-256 of the secret (from `secret`, or `secret_hash = "sha256:<hex>"`).
    Sha256([u8; 32]),
    /// An argon2 PHC string (`secret_hash = "$argon2id$…"`), checked on the hashing threads.
    Argon2(String),
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

impl From<ClientSecret> for String {
    fn from(_: ClientSecret) -> String {
        "[redacted]".to_owned()
    }
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    clients: Option<Vec<RawClient>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: Option<Text>,
    secret: Option<Text>,
    secret_hash: Option<Text>,
    grant_types: Option<TextList>,
    roles: Option<TextList>,
    permissions: Option<TextList>,
}

const KEY: &str = "oauth.clients";

pub(super) fn parse(raw: RawOAuth) -> Result<OAuthConfig, ConfigError> {
    let mut clients: Vec<OAuthClient> = Vec::new();
    for c in raw.clients.unwrap_or_default() {
        let id = c.id.map(|t| t.0).unwrap_or_default();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
        if !id_ok {
            return Err(ConfigError::key(
                KEY,
                "every client needs an `id` of 1 to 64 letters, digits, `.`, `_` or `-`",
            ));
        }
        if clients.iter().any(|other| other.id == id) {
            return Err(ConfigError::key(
                KEY,
                format!("client `{id}` appears twice"),
            ));
        }
        let secret = match (c.secret.map(|t| t.0), c.secret_hash.map(|t| t.0)) {
            (Some(plain), None) if plain.chars().count() >= MIN_SECRET_LEN => {
                ClientSecret::Sha256(sha256(plain.as_bytes()))
            }
            (Some(_), None) => {
                return Err(ConfigError::key(
                    KEY,
                    format!(
                        "the secret of client `{id}` is shorter than {MIN_SECRET_LEN} characters"
                    ),
                ));
            }
            (None, Some(hash)) => secret_hash(&id, hash.trim())?,
            _ => {
                return Err(ConfigError::key(
                    KEY,
                    format!("client `{id}` needs exactly one of `secret` and `secret_hash`"),
                ));
            }
        };
        let grant_types = c.grant_types.map(|l| l.0).unwrap_or_default();
        if let Some(bad) = grant_types.iter().find(|g| *g != "client_credentials") {
            return Err(ConfigError::key(
                KEY,
                format!(
                    "client `{id}`: grant type `{bad}` cannot be granted to a client \
                     (only `client_credentials`; password and refresh_token are open to all)"
                ),
            ));
        }
        let names = |list: Option<TextList>, what: &str| {
            crate::domain::parse_names(&list.map(|l| l.0).unwrap_or_default())
                .map_err(|e| ConfigError::key(KEY, format!("client `{id}` {what}: {e}")))
        };
        let roles = names(c.roles, "roles")?;
        let permissions = names(c.permissions, "permissions")?;
        clients.push(OAuthClient {
            id,
            secret,
            grant_types,
            roles,
            permissions,
        });
    }
    Ok(OAuthConfig { clients })
}

fn secret_hash(id: &str, hash: &str) -> Result<ClientSecret, ConfigError> {
    if let Some(hex) = hash.strip_prefix("sha256:") {
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        if let Some(bytes) = bytes {
            let mut out = [0u8; 32];
            out.copy_from_slice(&bytes);
            return Ok(ClientSecret::Sha256(out));
        }
    } else if hash.starts_with("$argon2") && argon2::PasswordHash::new(hash).is_ok() {
        return Ok(ClientSecret::Argon2(hash.to_owned()));
    }
    Err(ConfigError::key(
        KEY,
        format!(
            "the secret_hash of client `{id}` must be `sha256:` and 64 hex digits, or an \
             argon2 PHC string (`$argon2id$…`)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(clients: &str) -> Result<Config, String> {
        Config::from_toml(clients).map_err(|e| e.to_string())
    }

    #[test]
    fn clients_take_a_secret_or_a_hash_and_never_show_it() {
        let c = load(
            "[[oauth.clients]]\nid = \"svc\"\nsecret = \"a long enough secret\"\n\
             grant_types = [\"client_credentials\"]\nroles = [\"service\"]\n\
             [[oauth.clients]]\nid = \"rs\"\n\
             secret_hash = \"sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"\n",
        )
        .unwrap();
        let svc = c.oauth.client("svc").unwrap();
        assert!(svc.allows("client_credentials"));
        assert_eq!(svc.roles, ["service"]);
        assert_eq!(
            svc.secret,
            super::ClientSecret::Sha256(super::sha256(b"a long enough secret"))
        );
        let rs = c.oauth.client("rs").unwrap();
        assert_eq!(
            rs.secret,
            super::ClientSecret::Sha256(super::sha256(b"hello"))
        );
        assert!(!rs.allows("client_credentials"));
        let shown = c.redacted();
        assert!(!shown.contains("a long enough secret"), "{shown}");
        assert!(!shown.contains("2cf24dba"), "{shown}");
        assert!(!format!("{c:?}").contains("a long enough secret"));
    }

    #[test]
    fn bad_clients_are_refused_with_the_reason() {
        for (toml, says) in [
            (
                "[[oauth.clients]]\nsecret = \"a long enough secret\"\n",
                "`id`",
            ),
            (
                "[[oauth.clients]]\nid = \"a b\"\nsecret = \"a long enough secret\"\n",
                "`id`",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret = \"short\"\n",
                "shorter",
            ),
            ("[[oauth.clients]]\nid = \"a\"\n", "exactly one"),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret = \"a long enough secret\"\nsecret_hash = \"sha256:00\"\n",
                "exactly one",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret_hash = \"sha256:zz\"\n",
                "64 hex",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret_hash = \"$argon2id$nope\"\n",
                "64 hex",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret = \"a long enough secret\"\ngrant_types = [\"password\"]\n",
                "grant type",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret = \"a long enough secret\"\n\
                 [[oauth.clients]]\nid = \"a\"\nsecret = \"a long enough secret\"\n",
                "twice",
            ),
            (
                "[[oauth.clients]]\nid = \"a\"\nsecret = \"a long enough secret\"\nroles = [\"Not A Role!\"]\n",
                "roles",
            ),
        ] {
            let e = load(toml).unwrap_err();
            assert!(
                e.contains("`oauth.clients`") && e.contains(says),
                "{toml}: {e}"
            );
        }
    }
}
