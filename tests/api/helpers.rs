//! `TestApp`: a real Keygate on port 0 with a fresh SQLite file, and a typed HTTP client.

use std::sync::Arc;
use std::time::Duration;

use keygate::clock::ManualClock;
use keygate::http::AppState;
use keygate::{App, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) state: Arc<AppState>,
    _dir: Arc<tempfile::TempDir>,
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub(crate) struct Tokens {
    pub(crate) access: String,
    pub(crate) refresh: String,
    pub(crate) session_id: String,
    pub(crate) body: Value,
}

impl TestApp {
    pub(crate) async fn spawn() -> TestApp {
        Self::spawn_with("").await
    }

    /// A server whose configuration adds `extra` (TOML) to the test defaults.
    pub(crate) async fn spawn_with(extra: &str) -> TestApp {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn_on(dir, extra, Arc::new(ManualClock::new())).await
    }

    /// Another server on the same database file (a restart, or a second node).
    pub(crate) async fn sibling(&self, extra: &str) -> TestApp {
        Self::spawn_on(self._dir.clone(), extra, self.clock.clone()).await
    }

    async fn spawn_on(
        dir: Arc<tempfile::TempDir>,
        extra: &str,
        clock: Arc<ManualClock>,
    ) -> TestApp {
        let db_path = dir.path().join("keygate.db");
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\n{extra}",
            db_path.display()
        );
        let config = Config::from_toml(&toml).expect("test configuration");
        let app = App::build_with_clock(config, clock.clone())
            .await
            .expect("server starts");
        let base = format!("http://{}", app.local_addr());
        let state = app.state();
        tokio::spawn(app.run_until(std::future::pending()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base,
            client,
            clock,
            state,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn get_auth(&self, path: &str, access: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access)
            .send()
            .await
            .expect("request")
    }

    pub(crate) async fn register(&self, email: &str) -> Value {
        let r = self
            .post(
                "/auth/register",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "register {email}");
        r.json().await.expect("user json")
    }

    pub(crate) async fn login_response(&self, login: &str, password: &str) -> Response {
        self.post(
            "/auth/login",
            &json!({"email": login, "password": password}),
        )
        .await
    }

    pub(crate) async fn login(&self, email: &str) -> Tokens {
        let r = self.login_response(email, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK, "login {email}");
        tokens(r.json().await.expect("token json"))
    }

    /// Registers `email` and logs in once.
    pub(crate) async fn user(&self, email: &str) -> Tokens {
        self.register(email).await;
        self.login(email).await
    }

    pub(crate) async fn refresh(&self, refresh: &str) -> Response {
        self.post("/auth/refresh", &json!({"refresh_token": refresh}))
            .await
    }

    pub(crate) async fn me_status(&self, access: &str) -> StatusCode {
        self.get_auth("/auth/me", access).await.status()
    }
}

pub(crate) fn tokens(body: Value) -> Tokens {
    Tokens {
        access: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        session_id: body["session_id"].as_str().expect("session_id").to_owned(),
        body,
    }
}

/// Asserts status and error code, returns the body.
pub(crate) async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "expected {status} {code}");
    let body: Value = r.json().await.expect("error body is JSON");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    body
}

/// Base64url without padding, for crafting tokens.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}

/// The claims of a JWT, decoded without verification (tests only).
pub(crate) fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&b64_decode(part)).expect("claims json")
}

pub(crate) fn header_of(token: &str) -> Value {
    let part = token.split('.').next().expect("header");
    serde_json::from_slice(&b64_decode(part)).expect("header json")
}
