//! Outgoing mail: the templates (built in, each replaceable by a file in
//! `email.templates_dir`) and the SMTP transport (lettre over rustls; STARTTLS, implicit TLS,
//! or none for a local relay). What to send and when is the outbox's business
//! (`auth::email`); this module only renders and delivers one message.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use crate::config::{EmailConfig, SmtpTls};
use crate::store::MailKind;

/// How long one SMTP conversation may take (connect, TLS, AUTH, DATA).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The built-in templates: `(name, text)`.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "verify_email.subject",
        include_str!("templates/verify_email.subject"),
    ),
    (
        "verify_email.txt",
        include_str!("templates/verify_email.txt"),
    ),
    (
        "verify_email.html",
        include_str!("templates/verify_email.html"),
    ),
    (
        "reset_password.subject",
        include_str!("templates/reset_password.subject"),
    ),
    (
        "reset_password.txt",
        include_str!("templates/reset_password.txt"),
    ),
    (
        "reset_password.html",
        include_str!("templates/reset_password.html"),
    ),
    (
        "change_email.subject",
        include_str!("templates/change_email.subject"),
    ),
    (
        "change_email.txt",
        include_str!("templates/change_email.txt"),
    ),
    (
        "change_email.html",
        include_str!("templates/change_email.html"),
    ),
    (
        "email_changed.subject",
        include_str!("templates/email_changed.subject"),
    ),
    (
        "email_changed.txt",
        include_str!("templates/email_changed.txt"),
    ),
    (
        "email_changed.html",
        include_str!("templates/email_changed.html"),
    ),
    (
        "email_change_completed.subject",
        include_str!("templates/email_change_completed.subject"),
    ),
    (
        "email_change_completed.txt",
        include_str!("templates/email_change_completed.txt"),
    ),
    (
        "email_change_completed.html",
        include_str!("templates/email_change_completed.html"),
    ),
];

/// Mail set-up failures (at start-up: bad templates, a bad sender address).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A template file could not be read or does not compile.
    #[error("email template `{name}`: {reason}")]
    Template {
        /// The template.
        name: String,
        /// Why.
        reason: String,
    },
    /// The SMTP transport could not be built.
    #[error("email.smtp_url: {0}")]
    Transport(String),
}

/// A rendered message.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// The templates, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by `<dir>/<name>` when that file exists.
    pub fn load(dir: Option<&std::path::Path>) -> Result<Templates, MailError> {
        let mut env = minijinja::Environment::new();
        // `.html` templates escape what they insert; `.txt` and `.subject` do not.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, built_in) in BUILT_IN {
            let text = match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|e| MailError::Template {
                        name: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                }
                _ => (*built_in).to_owned(),
            };
            env.add_template_owned(*name, text)
                .map_err(|e| MailError::Template {
                    name: (*name).to_owned(),
                    reason: e.to_string(),
                })?;
        }
        let templates = Templates { env };
        // Render each once with sample values, so a template naming an unknown variable
        // stops start-up instead of every message of its kind.
        for kind in MailKind::ALL {
            templates.render(kind, &Context::sample())?;
        }
        Ok(templates)
    }

    /// Renders `kind` with `ctx`.
    pub fn render(&self, kind: MailKind, ctx: &Context<'_>) -> Result<Rendered, MailError> {
        let one = |part: &str| {
            let name = format!("{}.{part}", kind.as_str());
            self.env
                .get_template(&name)
                .and_then(|t| t.render(ctx.value()))
                .map_err(|e| MailError::Template {
                    name,
                    reason: e.to_string(),
                })
        };
        let subject = one("subject")?;
        Ok(Rendered {
            // One line, whatever the file held.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: one("txt")?,
            html: one("html")?,
        })
    }
}

/// What templates may use.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The account's address (for a change: the current one).
    pub email: &'a str,
    /// The user's display name, if any.
    pub name: Option<&'a str>,
    /// The link to follow (empty for notices).
    pub link: &'a str,
    /// How long the link works, in words (`30 minutes`).
    pub expires_in: &'a str,
    /// The new address of an email change (empty otherwise).
    pub new_email: &'a str,
    /// `mfa.issuer_name`: the service's name.
    pub issuer_name: &'a str,
}

impl Context<'_> {
    fn value(&self) -> minijinja::Value {
        use minijinja::Value;
        Value::from_pairs([
            ("email", Value::from(self.email)),
            ("name", self.name.map_or(Value::from(()), Value::from)),
            ("link", Value::from(self.link)),
            ("expires_in", Value::from(self.expires_in)),
            ("new_email", Value::from(self.new_email)),
            ("issuer_name", Value::from(self.issuer_name)),
        ])
    }
}

impl Context<'static> {
    fn sample() -> Context<'static> {
        Context {
            email: "ada@example.com",
            name: Some("Ada"),
            link: "https://auth.example.com/ui/verify-email?token=x",
            expires_in: "24 hours",
            new_email: "ada@example.org",
            issuer_name: "Keygate",
        }
    }
}

/// `d` in words, for mails: `30 minutes`, `24 hours`, `2 days`.
pub fn in_words(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 2 * 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3_600 && s.is_multiple_of(3_600) {
        (s / 3_600, "hour")
    } else if s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Whether the last delivery attempt failed (for `/readyz`).
const OK: u8 = 0;
const FAILING: u8 = 1;

/// The SMTP side: one pooled transport and the sender address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The templates.
    pub templates: Templates,
    health: AtomicU8,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Why a delivery failed.
#[derive(Debug)]
pub struct SendError {
    /// The server refused for good (5xx): trying again will not help.
    pub permanent: bool,
    /// What happened, for the outbox row and the log (no message content).
    pub reason: String,
}

impl Mailer {
    /// The mailer of `cfg`, or `None` when mail is not configured.
    pub fn build(cfg: &EmailConfig) -> Result<Option<Mailer>, MailError> {
        let (Some(smtp), Some(from)) = (&cfg.smtp, &cfg.from) else {
            return Ok(None);
        };
        let from: Mailbox = from
            .parse()
            .map_err(|_| MailError::Transport("email.from is not an address".to_owned()))?;
        let tls = |host: &str| {
            let mut builder = TlsParameters::builder(host.to_owned());
            for der in cfg.tls_ca.iter().flat_map(|(_, certs)| certs) {
                let cert = Certificate::from_der(der.clone())
                    .map_err(|e| MailError::Transport(format!("email.tls_ca_file: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| MailError::Transport(e.to_string()))
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
            .port(smtp.port)
            .timeout(Some(SMTP_TIMEOUT))
            .tls(match smtp.tls {
                SmtpTls::StartTls => Tls::Required(tls(&smtp.host)?),
                SmtpTls::Implicit => Tls::Wrapper(tls(&smtp.host)?),
                SmtpTls::None => Tls::None,
            });
        let builder = match &smtp.credentials {
            Some((user, password)) => builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            )),
            None => builder,
        };
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
            templates: Templates::load(cfg.templates_dir.as_deref())?,
            health: AtomicU8::new(OK),
        }))
    }

    /// Delivers one message to `to`.
    pub async fn send(&self, to: &str, message: &Rendered) -> Result<(), SendError> {
        let to: Mailbox = to.parse().map_err(|_| SendError {
            permanent: true,
            reason: "the recipient is not a valid address".to_owned(),
        })?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| SendError {
                permanent: true,
                reason: format!("the message could not be built: {e}"),
            })?;
        let result = self.transport.send(email).await;
        self.health
            .store(if result.is_ok() { OK } else { FAILING }, Ordering::Relaxed);
        result.map(|_| ()).map_err(|e| SendError {
            permanent: e.is_permanent(),
            reason: crate::auth::error_chain(&e),
        })
    }

    /// Whether the last delivery attempt succeeded (or none was made yet).
    pub fn healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_html_escapes_what_it_inserts() {
        let t = Templates::load(None).expect("built-in templates");
        let ctx = Context {
            name: Some("<b>Ada</b>"),
            ..Context::sample()
        };
        let m = t.render(MailKind::VerifyEmail, &ctx).expect("render");
        assert!(!m.subject.contains('\n'), "{}", m.subject);
        assert!(
            m.text.contains(ctx.link) && m.text.contains("<b>Ada</b>"),
            "{}",
            m.text
        );
        assert!(
            m.html.contains("&lt;b&gt;Ada") && !m.html.contains("<b>Ada"),
            "{}",
            m.html
        );
        assert!(m.text.contains("24 hours"));
    }

    #[test]
    fn a_template_file_replaces_the_built_in_one_and_a_bad_one_stops_start_up() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("reset_password.subject"),
            "Reset for {{ email }}",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).expect("templates");
        let m = t
            .render(MailKind::ResetPassword, &Context::sample())
            .expect("render");
        assert_eq!(m.subject, "Reset for ada@example.com");
        std::fs::write(dir.path().join("verify_email.txt"), "{{ no_such_thing }}").unwrap();
        let e = Templates::load(Some(dir.path())).expect_err("unknown variable");
        assert!(e.to_string().contains("verify_email.txt"), "{e}");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(in_words(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(in_words(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(in_words(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(in_words(Duration::from_secs(60)), "1 minute");
        assert_eq!(in_words(Duration::from_secs(3 * 3600)), "3 hours");
    }
}
