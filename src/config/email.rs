//! `email.*`, `mfa.*` and `public_url`: outgoing mail (verification, password reset, email
//! change) and two-factor authentication.
//!
//! ```toml
//! public_url = "https://auth.example.com"        # the hosted pages (default: issuer)
//! [email]
//! smtp_url = "smtp://keygate:PASSWORD@smtp.example.com:587"   # STARTTLS
//! from = "Keygate <no-reply@example.com>"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::{ConfigError, Text, boolean, positive_duration, text};

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: plain connection upgraded with STARTTLS, which is required.
    StartTls,
    /// `smtps://`: TLS from the first byte (implicit TLS, port 465).
    Implicit,
    /// `smtp://…?tls=none`: no encryption, for a relay on the same host or network only.
    None,
}

/// The SMTP server mail goes through.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Host name or address.
    pub host: String,
    /// Port (587 for STARTTLS, 465 for implicit TLS, 25 without TLS unless given).
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// User name and password for SMTP AUTH, when the URL has them.
    pub credentials: Option<(String, SecretString)>,
}

/// `email.*`
#[derive(Clone, Debug)]
pub struct EmailConfig {
    /// The SMTP server; `None`: no mail is sent, the mail endpoints answer 503 and
    /// verification is not required.
    pub smtp: Option<SmtpConfig>,
    /// The configured `smtp_url`, with its password redacted (for `config check`).
    pub smtp_url_redacted: Option<String>,
    /// `From:` of every message (`Name <address>` or an address).
    pub from: Option<String>,
    /// Links in mails are `<link_base>/verify-email?token=…`, `<link_base>/reset-password?…`
    /// and `<link_base>/confirm-email?…`; default `<public_url>/ui` (the hosted pages).
    pub link_base: String,
    /// How long a verification (and an email-change) link works.
    pub verification_ttl: Duration,
    /// How long a password-reset link works.
    pub reset_ttl: Duration,
    /// Unverified accounts cannot log in (only with `smtp_url`: without mail nobody could
    /// verify).
    pub require_verified: bool,
    /// A directory whose `<template>.subject`, `<template>.txt` and `<template>.html` files
    /// replace the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// `email.tls_ca_file`: the file, and the DER of each certificate in it, trusted for the
    /// SMTP server besides the Mozilla roots (a relay with a private CA).
    pub tls_ca: Option<(PathBuf, Vec<Vec<u8>>)>,
}

impl EmailConfig {
    /// Whether mail is configured.
    pub fn enabled(&self) -> bool {
        self.smtp.is_some()
    }

    /// Whether logins need a verified address.
    pub fn verification_required(&self) -> bool {
        self.require_verified && self.enabled()
    }
}

/// `mfa.*`
#[derive(Clone, Debug)]
pub struct MfaConfig {
    /// The name authenticator apps show beside the account (`issuer` of the otpauth URI).
    pub issuer_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    smtp_url: Option<Text>,
    from: Option<Text>,
    link_base: Option<Text>,
    verification_ttl: Option<Text>,
    reset_ttl: Option<Text>,
    require_verified: Option<Text>,
    templates_dir: Option<Text>,
    tls_ca_file: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMfa {
    issuer_name: Option<Text>,
}

/// `public_url` (default: the issuer), without a trailing slash.
pub(super) fn public_url(raw: Option<Text>, issuer: &str) -> Result<String, ConfigError> {
    let url = text(raw, issuer);
    http_url("public_url", &url)?;
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_url(key: &str, raw: &str) -> Result<url::Url, ConfigError> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(u),
        _ => Err(ConfigError::key(
            key,
            "expected an absolute http(s) URL such as `https://auth.example.com`",
        )),
    }
}

pub(super) fn email(raw: RawEmail, public_url: &str) -> Result<EmailConfig, ConfigError> {
    let smtp_url = raw.smtp_url.map(|t| SecretString::from(t.0));
    let smtp = smtp_url
        .as_ref()
        .map(|u| smtp(u.expose_secret()))
        .transpose()?;
    let from = raw.from.map(|t| t.0.trim().to_owned());
    match &from {
        Some(f) if f.parse::<lettre::message::Mailbox>().is_err() => {
            return Err(ConfigError::key(
                "email.from",
                "expected an address such as `Keygate <no-reply@example.com>`",
            ));
        }
        None if smtp.is_some() => {
            return Err(ConfigError::key(
                "email.from",
                "is required with `email.smtp_url`: the sender of every message, such as \
                 `Keygate <no-reply@example.com>`",
            ));
        }
        _ => {}
    }
    let link_base = match raw.link_base {
        None => format!("{public_url}/ui"),
        Some(t) => {
            http_url("email.link_base", &t.0)?;
            t.0.trim_end_matches('/').to_owned()
        }
    };
    Ok(EmailConfig {
        smtp_url_redacted: smtp_url.map(|u| super::redact_url(u.expose_secret())),
        smtp,
        from,
        link_base,
        verification_ttl: positive_duration("email.verification_ttl", raw.verification_ttl, "24h")?,
        reset_ttl: positive_duration("email.reset_ttl", raw.reset_ttl, "30m")?,
        require_verified: boolean("email.require_verified", raw.require_verified, false)?,
        templates_dir: raw.templates_dir.map(|t| PathBuf::from(t.0)),
        tls_ca: raw
            .tls_ca_file
            .map(|t| tls_ca(PathBuf::from(t.0)))
            .transpose()?,
    })
}

pub(super) fn mfa(raw: RawMfa) -> Result<MfaConfig, ConfigError> {
    let issuer_name = text(raw.issuer_name, "Keygate").trim().to_owned();
    // The otpauth URI puts it before a colon in the label.
    if issuer_name.is_empty() || issuer_name.contains(':') || issuer_name.len() > 64 {
        return Err(ConfigError::key(
            "mfa.issuer_name",
            "expected a short name without `:` (1 to 64 characters)",
        ));
    }
    Ok(MfaConfig { issuer_name })
}

/// The certificates of a PEM file (at least one).
fn tls_ca(path: PathBuf) -> Result<(PathBuf, Vec<Vec<u8>>), ConfigError> {
    let text = std::fs::read(&path).map_err(|e| {
        ConfigError::key(
            "email.tls_ca_file",
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let certificates: Vec<Vec<u8>> = pem::parse_many(&text)
        .map_err(|_| ConfigError::key("email.tls_ca_file", "expected PEM certificates"))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certificates.is_empty() {
        return Err(ConfigError::key(
            "email.tls_ca_file",
            format!("`{}` holds no PEM certificate", path.display()),
        ));
    }
    Ok((path, certificates))
}

const SMTP_URL_HELP: &str = "expected `smtp://USER:PASSWORD@HOST:587` (STARTTLS), \
     `smtps://USER:PASSWORD@HOST:465` (TLS) or `smtp://HOST:25?tls=none` (a local relay)";

/// Parses `email.smtp_url`. Errors never quote the URL (it holds a password).
fn smtp(raw: &str) -> Result<SmtpConfig, ConfigError> {
    let bad = || ConfigError::key("email.smtp_url", SMTP_URL_HELP);
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let mut tls = match url.scheme() {
        "smtp" => SmtpTls::StartTls,
        "smtps" => SmtpTls::Implicit,
        _ => return Err(bad()),
    };
    for (k, v) in url.query_pairs() {
        match (k.as_ref(), v.as_ref(), tls) {
            ("tls", "none", SmtpTls::StartTls) => tls = SmtpTls::None,
            ("tls", "required" | "starttls", SmtpTls::StartTls) => {}
            _ => return Err(bad()),
        }
    }
    let port = url.port().unwrap_or(match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Implicit => 465,
        SmtpTls::None => 25,
    });
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) if !user.is_empty() => {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    ConfigError::key("email.smtp_url", "the user or password is not valid UTF-8")
                })
            };
            Some((decode(user)?, SecretString::from(decode(password)?)))
        }
        _ => {
            return Err(ConfigError::key(
                "email.smtp_url",
                "give both a user and a password (`smtp://USER:PASSWORD@HOST`), or neither",
            ));
        }
    };
    if tls == SmtpTls::None && credentials.is_some() {
        return Err(ConfigError::key(
            "email.smtp_url",
            "`tls=none` with a password would send it in clear: use STARTTLS (`smtp://`) or \
             TLS (`smtps://`), or a relay that needs no password",
        ));
    }
    Ok(SmtpConfig {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        tls,
        credentials,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_say_how_the_connection_is_protected() {
        let s = smtp("smtp://keygate:p%40ss+word@smtp.example.com").expect("starttls");
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("smtp.example.com", 587, SmtpTls::StartTls)
        );
        let (user, password) = s.credentials.expect("credentials");
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("keygate", "p@ss+word")
        );
        let s = smtp("smtps://u:p@mail.example.com").expect("implicit");
        assert_eq!((s.port, s.tls), (465, SmtpTls::Implicit));
        let s = smtp("smtp://127.0.0.1:2525?tls=none").expect("plain");
        assert_eq!(
            (s.host.as_str(), s.port, s.tls, s.credentials.is_none()),
            ("127.0.0.1", 2525, SmtpTls::None, true)
        );
        for bad in [
            "http://smtp.example.com",
            "smtp://",
            "smtp://u:p@relay:25?tls=none",
            "smtps://relay?tls=none",
            "smtp://relay?tls=maybe",
            "smtp://user@relay",
        ] {
            let e = smtp(bad).expect_err(bad).to_string();
            assert!(
                e.contains("email.smtp_url") && !e.contains("p@"),
                "{bad}: {e}"
            );
        }
    }
}
