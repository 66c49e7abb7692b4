//! Validated domain types: once a value has one of these types it is known to be well-formed.
//!
//! Parse, don't validate: every constructor normalises and checks, fields are private, and
//! errors are typed so the HTTP layer can collect them into API.md's 422 `fields` map.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

/// Why a field was refused. The `Display` text is the message shown in `fields`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The field is absent.
    #[error("is required")]
    Required,
    /// An email that is not syntactically an address.
    #[error("not a valid email address")]
    InvalidEmail,
    /// An email mixing scripts within a label, as look-alike addresses do.
    #[error(
        "mixes alphabets (such as Latin and Cyrillic) in a way that can imitate another address"
    )]
    ConfusableEmail,
    /// A username outside the allowed alphabet or length.
    #[error("must be 3 to 32 characters: letters, digits, `_`, `-` or `.`, starting with a letter")]
    InvalidUsername,
    /// A password shorter than the minimum.
    #[error("must be at least {0} characters")]
    PasswordTooShort(usize),
    /// A password longer than the maximum.
    #[error("must be at most {0} characters")]
    PasswordTooLong(usize),
    /// A display name that is too long or holds control characters.
    #[error("must be at most 100 characters without control characters")]
    InvalidName,
    /// A list of roles or permissions with a bad entry or too many entries.
    #[error("must be at most 32 names of 1 to 64 characters: a-z, 0-9, `_`, `-`, `.`, `:`")]
    InvalidNames,
}

/// Parses a list of role or permission names: trimmed, lower-case `a-z 0-9 _ - . :`, 1–64
/// characters each, at most 32, duplicates removed (order kept).
pub fn parse_names(raw: &[String]) -> Result<Vec<String>, FieldError> {
    if raw.len() > 32 {
        return Err(FieldError::InvalidNames);
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for name in raw {
        let name = name.trim();
        let ok = (1..=64).contains(&name.len())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | ':')
            });
        if !ok {
            return Err(FieldError::InvalidNames);
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// `raw` trimmed, in Unicode NFKC with full case folding (NFKC_Casefold's steps:
/// NFKC, fold, NFKC): the one form in which identifiers are stored and looked up, so that
/// `ＡＤＡ`, `Ada` and `ada` are one name, and `STRASSE` and `straße` one address.
pub fn fold(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let nfkc: String = raw.trim().nfkc().collect();
    caseless::default_case_fold_str(&nfkc).nfkc().collect()
}

/// The form a login identifier (an email or a username) is looked up in: [`fold`]ed, and for
/// an email the domain in IDNA ASCII as stored ([`Email::parse`]). Never fails: an identifier
/// that is no valid address is simply unknown.
pub fn login_key(raw: &str) -> String {
    match Email::parse(raw) {
        Ok(email) => email.0,
        Err(_) => fold(raw),
    }
}

/// An email address in its one stored form: [`fold`]ed (emails compare case-insensitively,
/// and compatibility forms such as full-width letters are their plain letters), with the
/// domain as IDNA ASCII (`bücher.example` is `xn--bcher-kva.example`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Email(String);

impl Email {
    /// Longest accepted address (RFC 5321's path limit).
    pub const MAX_LEN: usize = 254;

    /// Normalises and checks `raw`. An address whose local part or domain has a label
    /// mixing scripts (Latin and Cyrillic, say: `аdmin` with a Cyrillic `а` looks like
    /// `admin`) is refused: [`FieldError::ConfusableEmail`].
    pub fn parse(raw: &str) -> Result<Email, FieldError> {
        use unicode_security::MixedScript as _;
        let folded = fold(raw);
        let (local, domain) = folded.rsplit_once('@').ok_or(FieldError::InvalidEmail)?;
        if local.is_empty() || domain.is_empty() {
            return Err(FieldError::InvalidEmail);
        }
        let single_script = |part: &str| part.split('.').all(|label| label.is_single_script());
        if !single_script(local) || !single_script(domain) {
            return Err(FieldError::ConfusableEmail);
        }
        let domain = idna::domain_to_ascii(domain).map_err(|_| FieldError::InvalidEmail)?;
        let email = format!("{local}@{domain}");
        if email.len() > Self::MAX_LEN
            || !email_address::EmailAddress::is_valid(&email)
            // Quoted local parts and IP-literal domains are legal but only ever seen in attacks.
            || email.contains(['"', '[', ' '])
            || !domain.contains('.')
        {
            return Err(FieldError::InvalidEmail);
        }
        Ok(Email(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username: 3–32 of `a-z 0-9 _ - .`, starting with a letter, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Username(String);

impl Username {
    /// [`fold`]s and checks `raw`.
    pub fn parse(raw: &str) -> Result<Username, FieldError> {
        let name = fold(raw);
        let ok_len = (3..=32).contains(&name.len());
        let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
        if ok_len && ok_first && ok_chars {
            Ok(Username(name))
        } else {
            Err(FieldError::InvalidUsername)
        }
    }

    /// The normalised username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: at most 100 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisplayName(String);

impl DisplayName {
    /// Trims and checks `raw`.
    pub fn parse(raw: &str) -> Result<DisplayName, FieldError> {
        let name = raw.trim();
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(FieldError::InvalidName);
        }
        Ok(DisplayName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plaintext password whose length is within policy. Never printed, never logged.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Checks the length (in characters) of a new password against the policy.
    pub fn new(raw: &str, min: usize, max: usize) -> Result<Password, FieldError> {
        let n = raw.chars().count();
        if n < min {
            return Err(FieldError::PasswordTooShort(min));
        }
        if n > max {
            return Err(FieldError::PasswordTooLong(max));
        }
        Ok(Password(SecretString::from(raw.to_owned())))
    }

    /// A password presented at login: only the upper bound applies (a policy may have changed
    /// since it was set), and it still bounds the work an attacker can ask of the hasher.
    pub fn presented(raw: &str, max: usize) -> Result<Password, FieldError> {
        if raw.chars().count() > max {
            return Err(FieldError::PasswordTooLong(max));
        }
        Ok(Password(SecretString::from(raw.to_owned())))
    }

    /// The plaintext, for the hasher only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// Parses the hyphenated form; anything else is `None`.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::try_parse(s).ok().map($name)
            }

            /// The UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user's id.
    UserId
);
uuid_id!(
    /// A session's id: one login on one device.
    SessionId
);

/// Where a request came from, recorded on sessions (and later in the audit log).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client IP as text.
    pub ip: Option<String>,
    /// The `User-Agent` header, cut to 512 characters.
    pub user_agent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "\"a\"@example.com",
            "ada@[127.0.0.1]",
        ] {
            assert_eq!(Email::parse(bad), Err(FieldError::InvalidEmail), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(FieldError::InvalidEmail));
    }

    #[test]
    fn emails_are_nfkc_case_folded_with_an_ascii_domain() {
        for (raw, stored) in [
            // Full-width letters are their plain letters (NFKC).
            ("ＡＤＡ@ＥＸＡＭＰＬＥ.ＣＯＭ", "ada@example.com"),
            // Full case folding, not just lower case: ß folds to ss.
            ("STRASSE@example.com", "strasse@example.com"),
            ("straße@example.com", "strasse@example.com"),
            // The Kelvin sign is K.
            ("\u{212A}im@example.com", "kim@example.com"),
            // A composed and a decomposed é are one address.
            ("jos\u{e9}@example.com", "jos\u{e9}@example.com"),
            ("jose\u{301}@example.com", "jos\u{e9}@example.com"),
            // The domain as IDNA ASCII.
            ("ada@Bücher.example", "ada@xn--bcher-kva.example"),
            ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
            // One script per label is fine, in any script.
            ("иван@пример.рф", "иван@xn--e1afmkfd.xn--p1ai"),
            ("ivan.иван@example.com", "ivan.иван@example.com"),
        ] {
            assert_eq!(
                Email::parse(raw).map(|e| e.0),
                Ok(stored.to_owned()),
                "{raw}"
            );
            assert_eq!(login_key(raw), stored, "{raw}");
        }
    }

    #[test]
    fn emails_mixing_scripts_in_a_label_are_refused() {
        for raw in [
            "\u{430}dmin@example.com", // Cyrillic а, then Latin
            "p\u{430}ypal@example.com",
            "admin@ex\u{430}mple.com", // in the domain
            "admin@\u{440}aypal.com",
        ] {
            assert_eq!(Email::parse(raw), Err(FieldError::ConfusableEmail), "{raw}");
        }
    }

    #[test]
    fn usernames_and_login_keys_are_folded() {
        assert_eq!(Username::parse("ＡｄａＬ").unwrap().0, "adal");
        assert_eq!(login_key("  ＡｄａＬ "), "adal");
        assert_eq!(login_key("not an address@"), "not an address@");
    }

    #[test]
    fn usernames_follow_the_alphabet() {
        assert_eq!(Username::parse("Ada_L").unwrap().as_str(), "ada_l");
        for bad in ["ab", "1abc", "a@b", "ada lovelace", &"a".repeat(33)] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_length_counts_characters() {
        assert!(Password::new("ééééééé", 8, 256).is_err());
        assert!(Password::new("éééééééé", 8, 256).is_ok());
        assert_eq!(
            Password::new(&"x".repeat(257), 8, 256).unwrap_err(),
            FieldError::PasswordTooLong(256)
        );
        assert!(Password::presented("short", 256).is_ok());
        assert!(Password::presented(&"x".repeat(257), 256).is_err());
    }

    #[test]
    fn passwords_do_not_print() {
        let p = Password::new("correct horse battery", 8, 256).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    #[test]
    fn ids_round_trip() {
        let id = UserId::new();
        assert_eq!(UserId::parse(&id.to_string()), Some(id));
        assert_eq!(SessionId::parse("nope"), None);
    }

    #[test]
    fn role_names_are_checked() {
        let ok = parse_names(&["admin".into(), "users:write".into(), "admin".into()]).unwrap();
        assert_eq!(ok, vec!["admin", "users:write"]);
        for bad in ["", "Admin", "a b", "\"x\"", &"a".repeat(65)] {
            assert!(parse_names(&[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(parse_names(&vec!["a".to_owned(); 33]).is_err());
    }

    #[test]
    fn display_names_refuse_control_characters() {
        assert!(DisplayName::parse("Ada\u{0}").is_err());
        assert_eq!(DisplayName::parse("  Ada ").unwrap().as_str(), "Ada");
    }
}
