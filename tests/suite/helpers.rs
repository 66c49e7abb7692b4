//! `TestApp`: a real Keygate on port 0 with a fresh database (SQLite file or PostgreSQL schema)
//! per test, and a typed HTTP client.

use std::sync::Arc;
use std::time::Duration;

use keygate::clock::ManualClock;
use keygate::http::AppState;
use keygate::{App, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// Which database the suite runs on (set by the test target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The variable naming the PostgreSQL database the `postgres` target runs on.
pub(crate) const DATABASE_VAR: &str = "KEYGATE_TEST_DATABASE_URL";
/// The variable naming the Redis the shared-limit tests run on.
pub(crate) const REDIS_VAR: &str = "KEYGATE_TEST_REDIS_URL";

pub(crate) use keygate_testkit::in_ci;

/// The URL of a test service from `var`, or `None` after recording the skip (which fails in
/// CI: a green CI run means every test ran).
pub(crate) use keygate_testkit::service_url;

/// A test's own database: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// schema. Siblings (restarts, second nodes) share it.
#[derive(Debug, Clone)]
pub(crate) enum TestDb {
    Sqlite(Arc<tempfile::TempDir>),
    Postgres { url: String },
}

impl TestDb {
    pub(crate) fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite://{}", dir.path().join("keygate.db").display()),
            TestDb::Postgres { url } => url.clone(),
        }
    }

    /// A fresh database for the suite's backend; `None` (after saying so) when the backend is
    /// PostgreSQL and `KEYGATE_TEST_DATABASE_URL` is not set, outside CI (see [`service_url`]).
    pub(crate) async fn fresh() -> Option<TestDb> {
        match crate::BACKEND {
            Backend::Sqlite => Some(TestDb::Sqlite(Arc::new(
                tempfile::tempdir().expect("temp dir"),
            ))),
            Backend::Postgres => {
                let base = service_url(DATABASE_VAR, "the PostgreSQL suite")?;
                Some(TestDb::Postgres {
                    url: keygate_testkit::fresh_schema(&base).await,
                })
            }
        }
    }
}

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) state: Arc<AppState>,
    pub(crate) db: TestDb,
    /// Tells the server to shut down (dropping it does not).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server's task, which ends once it has shut down and closed its database.
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
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
    pub(crate) async fn spawn() -> Option<TestApp> {
        Self::spawn_with("").await
    }

    /// A server whose configuration adds `extra` (TOML) to the test defaults; `None` when the
    /// suite's backend is not available (PostgreSQL without its variable).
    pub(crate) async fn spawn_with(extra: &str) -> Option<TestApp> {
        let db = TestDb::fresh().await?;
        Some(Self::spawn_on(db, extra, Arc::new(ManualClock::new())).await)
    }

    /// Another server on the same database (a restart, or a second node), same clock.
    pub(crate) async fn sibling(&self, extra: &str) -> TestApp {
        Self::spawn_on(self.db.clone(), extra, self.clock.clone()).await
    }

    /// The configuration a server on `db` gets, with `extra` appended.
    pub(crate) fn config(db: &TestDb, extra: &str) -> Config {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n{extra}",
            db.url()
        );
        Config::from_toml(&toml).expect("test configuration")
    }

    pub(crate) async fn spawn_on(db: TestDb, extra: &str, clock: Arc<ManualClock>) -> TestApp {
        // `RUST_LOG=… cargo test` shows the servers' logs of failing tests.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let app = App::build_with_clock(Self::config(&db, extra), clock.clone())
            .await
            .expect("server starts");
        Self::serve(app, db, clock)
    }

    /// Serves a built app in the background.
    pub(crate) fn serve(app: App, db: TestDb, clock: Arc<ManualClock>) -> TestApp {
        let base = format!("http://{}", app.local_addr());
        let state = app.state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            if stopped.await.is_err() {
                // The TestApp was dropped without stopping: serve until the test ends.
                std::future::pending::<()>().await;
            }
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base,
            client,
            clock,
            state,
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Really restarts the server: shuts it down (its connections and database pools closed,
    /// its in-memory state gone, its port no longer answering), then starts a new process-like
    /// instance on the same database and clock, with `extra` configuration.
    pub(crate) async fn restart(mut self, extra: &str) -> TestApp {
        let _ = self.stop.take().expect("running").send(());
        self.task
            .take()
            .expect("running")
            .await
            .expect("server task")
            .expect("server shuts down cleanly");
        assert!(
            self.client.get(self.url("/healthz")).send().await.is_err(),
            "the stopped server still answers"
        );
        let (db, clock) = (self.db.clone(), self.clock.clone());
        drop(self);
        Self::spawn_on(db, extra, clock).await
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

    /// Runs one SQL statement on the test's database, over a connection of the test's own
    /// (for states no request makes quickly, such as thousands of sessions); returns the rows
    /// it changed. `sqlite` or `postgres` is the statement in each backend's dialect.
    pub(crate) async fn sql(&self, sqlite: &str, postgres: &str) -> u64 {
        let statement = match &self.db {
            TestDb::Sqlite(_) => sqlite,
            TestDb::Postgres { .. } => postgres,
        };
        keygate_testkit::execute_async(&self.db.url(), statement).await
    }
}

/// Every route of the app's router (read from its `Debug` form, the one place axum lists
/// them) with the methods it answers (asked in-process: a method without a handler falls
/// through to the `Unrouted` fallback), sorted by path.
pub(crate) async fn routes(app: &TestApp) -> Vec<(String, Vec<&'static str>)> {
    use tower::ServiceExt as _;
    let router = keygate::http::router(app.state.clone());
    let debug = format!("{router:?}");
    let mut paths: Vec<String> = Vec::new();
    // `Node { paths: {RouteId(1): "/auth/register", …} }`
    let path_router = debug.split("fallback_router").next().unwrap();
    for part in path_router.split("RouteId(").skip(1) {
        let Some((_, rest)) = part.split_once("): \"") else {
            continue;
        };
        let path = &rest[..rest.find('"').unwrap_or(0)];
        if path.starts_with('/') && !path.contains("__private__") {
            paths.push(path.to_owned());
        }
    }
    paths.sort();
    paths.dedup();
    assert!(paths.len() > 30, "the router's paths were read: {paths:?}");
    let mut out = Vec::new();
    for path in paths {
        let concrete = concrete_path(&path);
        let mut methods = Vec::new();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(&concrete)
                .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                    [127, 0, 0, 1],
                    1,
                ))))
                .body(axum::body::Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            if response
                .extensions()
                .get::<keygate::http::Unrouted>()
                .is_none()
            {
                methods.push(method);
            }
        }
        out.push((path, methods));
    }
    out
}

/// Waits (at most 20 s) until the outbox has nothing left to send: every queued message was
/// delivered or dropped. An observable event, so the absence checks after it ("no second
/// mail") cannot be fooled by a slow machine the way a fixed sleep can.
pub(crate) async fn outbox_settled(app: &TestApp) {
    for _ in 0..400 {
        if app.state.auth.store().pending_mail().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox still has messages to send after 20 s");
}

/// A path for a route template: every `{parameter}` filled with a well-formed id.
pub(crate) fn concrete_path(template: &str) -> String {
    template
        .replace("{id}", "0190b6e2-8d4c-7a8e-9f3a-1c2d3e4f5a6b")
        .replace("{kid}", "x")
        .replace("{file}", "x")
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
