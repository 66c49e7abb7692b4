//! A real SMTP server for the mail tests (mailin-embedded, on a free port of 127.0.0.1): it
//! speaks SMTP to Keygate's client like any relay and keeps every message it accepts, which
//! the tests read back as a mail client would (MIME parsed by mailparse).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::{Handler, Server, SslConfig, response};

/// A message as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    /// `RCPT TO` addresses.
    pub(crate) to: Vec<String>,
    /// The whole message (headers and body) as sent.
    pub(crate) raw: Vec<u8>,
}

impl Captured {
    /// The `Subject:` header, decoded.
    pub(crate) fn subject(&self) -> String {
        use mailparse::MailHeaderMap as _;
        let mail = mailparse::parse_mail(&self.raw).expect("a MIME message");
        mail.headers.get_first_value("Subject").unwrap_or_default()
    }

    /// The body of the part of `mime` type (`text/plain`, `text/html`), decoded.
    pub(crate) fn part(&self, mime: &str) -> String {
        let mail = mailparse::parse_mail(&self.raw).expect("a MIME message");
        fn find(p: &mailparse::ParsedMail<'_>, mime: &str) -> Option<String> {
            if p.ctype.mimetype == mime {
                return p.get_body().ok();
            }
            p.subparts.iter().find_map(|s| find(s, mime))
        }
        find(&mail, mime).unwrap_or_else(|| panic!("no {mime} part"))
    }

    /// The plain-text body.
    pub(crate) fn text(&self) -> String {
        self.part("text/plain")
    }

    /// The link in the plain-text body (the first `http…` word).
    pub(crate) fn link(&self) -> String {
        self.text()
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no link in: {}", self.text()))
            .to_owned()
    }

    /// The `token` query parameter of the link.
    pub(crate) fn token(&self) -> String {
        let link = url::Url::parse(&self.link()).expect("a URL");
        link.query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .expect("a token parameter")
    }
}

#[derive(Clone)]
struct Capture {
    all: Arc<Mutex<Vec<Captured>>>,
    to: Vec<String>,
    raw: Vec<u8>,
}

impl Handler for Capture {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _8bit: bool,
        to: &[String],
    ) -> response::Response {
        self.to = to.to_vec();
        self.raw.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.raw.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> response::Response {
        let message = Captured {
            to: std::mem::take(&mut self.to),
            raw: std::mem::take(&mut self.raw),
        };
        self.all.lock().unwrap().push(message);
        response::OK
    }
}

/// The server: runs on its own threads until the test process ends.
#[derive(Clone)]
pub(crate) struct SmtpServer {
    pub(crate) port: u16,
    all: Arc<Mutex<Vec<Captured>>>,
}

impl SmtpServer {
    /// A server on a free port.
    pub(crate) fn start() -> SmtpServer {
        Self::on(TcpListener::bind("127.0.0.1:0").expect("a free port"))
    }

    /// A port nothing listens on yet (an SMTP server that is down), and a function that
    /// starts the server on it later.
    pub(crate) fn down() -> (u16, impl FnOnce() -> SmtpServer) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        (port, move || {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("the reserved port");
            Self::on(listener)
        })
    }

    /// A server that offers STARTTLS with `ca`'s certificate for 127.0.0.1, or with
    /// `implicit`, speaks TLS from the first byte (a TLS listener in front of a plain server).
    pub(crate) fn start_tls(ca: &TestCa, implicit: bool) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        if !implicit {
            return Self::serve(
                listener,
                SslConfig::SelfSigned {
                    cert_path: ca.cert_path.display().to_string(),
                    key_path: ca.key_path.display().to_string(),
                },
            );
        }
        let inner = Self::start();
        let port = listener.local_addr().unwrap().port();
        let acceptor = ca.acceptor();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let target = inner.port;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        SmtpServer {
            port,
            all: inner.all,
        }
    }

    fn on(listener: TcpListener) -> SmtpServer {
        Self::serve(listener, SslConfig::None)
    }

    fn serve(listener: TcpListener, ssl: SslConfig) -> SmtpServer {
        let port = listener.local_addr().unwrap().port();
        let all = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new(Capture {
            all: all.clone(),
            to: Vec::new(),
            raw: Vec::new(),
        });
        server
            .with_name("smtp.keygate.test")
            .with_num_threads(4)
            .with_tcp_listener(listener);
        server.with_ssl(ssl).expect("TLS set-up");
        std::thread::spawn(move || {
            // Runs until the process ends; an error would show as missing mail.
            let _ = server.serve();
        });
        SmtpServer { port, all }
    }

    /// The configuration that sends mail through this server (plain SMTP: a local relay).
    pub(crate) fn config(&self) -> String {
        config_for(self.port)
    }

    /// Every message so far.
    pub(crate) fn messages(&self) -> Vec<Captured> {
        self.all.lock().unwrap().clone()
    }

    /// Messages to `address` so far.
    pub(crate) fn to(&self, address: &str) -> Vec<Captured> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .collect()
    }

    /// Waits (at most 20 s) until `address` has received `n` messages, and returns them.
    pub(crate) async fn wait_for(&self, address: &str, n: usize) -> Vec<Captured> {
        for _ in 0..400 {
            let got = self.to(address);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{address} received {} messages, not {n}: {:?}",
            self.to(address).len(),
            self.messages().iter().map(|m| &m.to).collect::<Vec<_>>()
        );
    }

    /// The latest message to `address` once it has `n`.
    pub(crate) async fn nth(&self, address: &str, n: usize) -> Captured {
        self.wait_for(address, n).await.swap_remove(n - 1)
    }
}

/// Keygate's mail configuration for an SMTP server on `port` of 127.0.0.1.
pub(crate) fn config_for(port: u16) -> String {
    format!(
        "email.smtp_url = \"smtp://127.0.0.1:{port}?tls=none\"\n\
         email.from = \"Keygate <no-reply@keygate.test>\"\n\
         rate_limits.password = \"1000/1m\"\n\
         rate_limits.register = \"1000/1m\"\n\
         rate_limits.login = \"1000/1m\"\n"
    )
}

/// A throwaway certificate authority and a server certificate for `127.0.0.1` it signed, as
/// PEM files (what an operator's private CA and relay would have).
pub(crate) struct TestCa {
    pub(crate) ca_path: std::path::PathBuf,
    pub(crate) cert_path: std::path::PathBuf,
    pub(crate) key_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Keygate test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        TestCa {
            ca_path: write("ca.pem", ca_cert.pem()),
            cert_path: write("server.pem", cert.pem()),
            key_path: write("server.key", key.serialize_pem()),
            _dir: dir,
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio_rustls::rustls;
        let der = |path: &std::path::Path| {
            pem::parse(std::fs::read(path).unwrap())
                .unwrap()
                .into_contents()
        };
        let certs = vec![CertificateDer::from(der(&self.cert_path))];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(&self.key_path)));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
