//! The hosted pages end to end, in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver by fantoccini) against a real Keygate on SQLite.
//!
//! Keygate's issuer is its own `http://127.0.0.1:<port>`, so the pages are on the issuer's
//! origin as in a real deployment, and the cookies keep their default attributes (`Secure`
//! included: Chromium treats loopback as a secure context). The negative scenarios run from a
//! page on a second local server, `http://127.0.0.1:<other port>`: another origin of the same
//! site, so `SameSite=Strict` still lets the cookies through and only the CSRF defence and
//! the absence of a CORS grant stand in the way (the hardest case for the defence).
//!
//! Without Chromium these tests say that they were skipped and how to install it; in CI (`CI`
//! set) they fail instead. Screenshots of every page, desktop and 360 px wide, are written to
//! `target/ui-screenshots/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// Shared with the suite; the browser tests use part of it.
#[path = "suite/smtp.rs"]
#[allow(dead_code)]
mod smtp;
#[path = "suite/totp.rs"]
mod totp;

use fantoccini::{Client, ClientBuilder, Locator};
use keygate::{App, Config};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new staple for the horse";
const WAIT: Duration = Duration::from_secs(15);
/// The longest one WebDriver call may take before its test fails: a browser that stops
/// answering must fail the run, not hang it.
const WEBDRIVER_LIMIT: Duration = Duration::from_secs(60);

/// `call` (one WebDriver round trip), or a failed test after [`WEBDRIVER_LIMIT`].
async fn webdriver<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(WEBDRIVER_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("WebDriver did not answer `{what}` within {WEBDRIVER_LIMIT:?}"))
}

/// Chromium starts one at a time: two cores cannot run several browsers and the servers
/// without timing out.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium and ChromeDriver (`KEYGATE_CHROMIUM` / `KEYGATE_CHROMEDRIVER`, else Debian's
/// paths), or `None` after saying that the test is skipped — which fails in CI.
fn chromium() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let browser = path("KEYGATE_CHROMIUM", "/usr/bin/chromium");
    let driver = path("KEYGATE_CHROMEDRIVER", "/usr/bin/chromedriver");
    if browser.is_file() && driver.is_file() {
        return Some((browser, driver));
    }
    keygate_testkit::skip(
        "a browser test",
        &format!(
            "install Chromium and ChromeDriver: `sudo apt-get install chromium chromium-driver`, \
             or set KEYGATE_CHROMIUM and KEYGATE_CHROMEDRIVER (looked for {} and {})",
            browser.display(),
            driver.display()
        ),
    );
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A Keygate serving on `http://127.0.0.1:<port>`, which is also its issuer.
struct Keygate {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Keygate {
    async fn start(extra: &str) -> Keygate {
        let dir = tempfile::tempdir().expect("temp dir");
        // The port must be known before the issuer is configured; taken again at once.
        let port = free_port();
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\nissuer = \"http://127.0.0.1:{port}\"\n\
             database_url = \"sqlite://{}\"\n{extra}",
            dir.path().join("keygate.db").display()
        );
        let config = Config::from_toml(&toml).expect("test configuration");
        let app = App::build(config).await.expect("server starts");
        let base = format!("http://{}", app.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Keygate {
            base,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn register(&self, email: &str) {
        let r = reqwest::Client::new()
            .post(self.url("/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 201, "register {email}");
    }

    /// A JSON-transport login from another "device": its token response.
    async fn login_elsewhere(&self, email: &str, password: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url("/auth/login"))
            .header("user-agent", "Second device")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn refresh_status(&self, refresh_token: &str) -> u16 {
        reqwest::Client::new()
            .post(self.url("/auth/refresh"))
            .json(&json!({"refresh_token": refresh_token}))
            .send()
            .await
            .expect("refresh")
            .status()
            .as_u16()
    }
}

impl Drop for Keygate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A ChromeDriver with one headless Chromium session on a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    /// `None` when Chromium is not installed (outside CI).
    async fn launch() -> Option<Browser> {
        let (chromium, chromedriver) = chromium()?;
        let turn = BROWSER.lock().await;
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(address).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        // The flags of this machine's notes: without the background-networking ones Chromium
        // keeps trying to reach Google's hosts, which a closed network refuses.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = webdriver(
            "new session",
            ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(capabilities)
                .connect(&format!("http://{address}")),
        )
        .await
        .expect("a Chromium session");
        Some(Browser {
            client,
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    async fn goto(&self, url: &str) {
        webdriver("goto", self.client.goto(url))
            .await
            .expect("navigate");
    }

    async fn path(&self) -> String {
        let url = webdriver("current url", self.client.current_url())
            .await
            .expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits until the script `condition` (an expression) is true in the page.
    async fn wait_until(&self, condition: &str) {
        let script = format!("return !!({condition});");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // A navigation in progress makes a script fail: that is "not yet".
            if let Ok(Value::Bool(true)) =
                webdriver("execute", self.client.execute(&script, vec![])).await
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self.eval("document.body && document.body.innerText").await;
                panic!(
                    "timed out waiting for `{condition}` on {}; the page says: {page}",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn eval(&self, expression: &str) -> Value {
        webdriver(
            "execute",
            self.client
                .execute(&format!("return {expression};"), vec![]),
        )
        .await
        .expect("script")
    }

    async fn text(&self, css: &str) -> String {
        webdriver("text", async {
            self.client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
                .text()
                .await
                .expect("text")
        })
        .await
    }

    async fn fill(&self, css: &str, value: &str) {
        webdriver("fill", async {
            let input = self.client.find(Locator::Css(css)).await.expect(css);
            input.clear().await.expect("clear");
            input.send_keys(value).await.expect("type");
        })
        .await
    }

    async fn click(&self, css: &str) {
        webdriver("click", async {
            self.client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
                .click()
                .await
                .expect("click");
        })
        .await
    }

    /// A cookie as the browser would send it to the current page, HttpOnly ones included
    /// (WebDriver sees them; the page's script does not).
    async fn cookie(&self, name: &str) -> Option<fantoccini::cookies::Cookie<'static>> {
        webdriver("cookies", self.client.get_all_cookies())
            .await
            .expect("cookies")
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// The refresh cookie, read from a page under its `Path=/auth` (an unknown route: the
    /// page's own script does not run there, so nothing rotates while we look).
    async fn refresh_cookie(&self, kg: &Keygate) -> Option<fantoccini::cookies::Cookie<'static>> {
        self.goto(&kg.url("/auth/cookie-jar")).await;
        self.cookie("keygate_refresh").await
    }

    /// Basic accessibility of the current page: a language, every field with a label, every
    /// button with a name, no positive tabindex that would break the keyboard order.
    async fn assert_accessible(&self, name: &str) {
        let problems = self
            .eval(
                "[
                   ...(document.documentElement.lang ? [] : ['no lang']),
                   ...[...document.querySelectorAll('input, select, textarea')]
                      .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
                      .map(e => 'unlabelled ' + e.id),
                   ...[...document.querySelectorAll('button')]
                      .filter(b => !(b.textContent.trim() || b.getAttribute('aria-label')))
                      .map(b => 'nameless button'),
                   ...[...document.querySelectorAll('[tabindex]')]
                      .filter(e => e.tabIndex > 0).map(e => 'tabindex on ' + e.id),
                 ]",
            )
            .await;
        assert_eq!(problems, json!([]), "{name}");
    }

    /// Screenshots at desktop width and at 360 px, into `target/ui-screenshots/<name>-*.png`;
    /// at 360 px the page must not scroll sideways.
    async fn screenshots(&self, name: &str) {
        self.assert_accessible(name).await;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        for (suffix, width, height) in [("desktop", 1280, 900), ("360px", 360, 780)] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("resize");
            self.wait_until(&format!("window.innerWidth <= {width}"))
                .await;
            let overflow = self
                .eval("document.documentElement.scrollWidth - window.innerWidth")
                .await;
            assert!(
                overflow.as_i64().is_some_and(|o| o <= 0),
                "{name} scrolls sideways at {width} px by {overflow}"
            );
            let png = webdriver("screenshot", self.client.screenshot())
                .await
                .expect("screenshot");
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).expect("write png");
            // A page longer than the window: its end too.
            let below = self
                .eval("document.documentElement.scrollHeight - window.innerHeight")
                .await;
            if below.as_i64().is_some_and(|b| b > 0) {
                self.eval("window.scrollTo(0, document.documentElement.scrollHeight)")
                    .await;
                let png = webdriver("screenshot", self.client.screenshot())
                    .await
                    .expect("screenshot");
                std::fs::write(dir.join(format!("{name}-{suffix}-end.png")), png)
                    .expect("write png");
                self.eval("window.scrollTo(0, 0)").await;
            }
        }
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("resize");
    }

    async fn close(mut self) {
        let _ = webdriver("close", self.client.clone().close()).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("ui-screenshots")
}

/// Logs in through the hosted login page and waits for the account page.
async fn log_in(browser: &Browser, kg: &Keygate, email: &str, password: &str) {
    browser.goto(&kg.url("/ui/login")).await;
    browser.fill("#login-login", email).await;
    browser.fill("#login-password", password).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_until(&format!(
            "location.pathname === '/ui/account' && document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
}

#[tokio::test]
async fn a_visitor_registers_uses_the_account_page_and_logs_out() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    let email = "ada@example.com";

    // Register (the page logs in after creating the account).
    browser.goto(&kg.url("/ui/register")).await;
    browser.screenshots("register").await;
    browser.fill("#register-email", email).await;
    browser.fill("#register-name", "Ada Lovelace").await;
    browser.fill("#register-password", PASSWORD).await;
    browser.click("#register button[type=submit]").await;
    browser
        .wait_until(&format!(
            "document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    assert_eq!(browser.path().await, "/ui/account");
    assert_eq!(
        browser
            .eval("document.getElementById('profile-name').value")
            .await,
        "Ada Lovelace"
    );

    // The refresh token is in an HttpOnly cookie no script sees; the access token is nowhere
    // but in the script's memory.
    let script_view = browser.eval("document.cookie").await;
    let script_view = script_view.as_str().expect("document.cookie").to_owned();
    assert!(!script_view.contains("keygate_refresh"), "{script_view}");
    assert!(script_view.contains("keygate_csrf="), "{script_view}");
    assert_eq!(
        browser
            .eval("localStorage.length + sessionStorage.length")
            .await,
        0
    );
    let refresh = browser.refresh_cookie(&kg).await.expect("refresh cookie");
    assert_eq!(refresh.http_only(), Some(true));
    assert_eq!(refresh.secure(), Some(true));
    assert_eq!(refresh.path(), Some("/auth"));
    // Not even from a page under /auth, where the browser does send it.
    let script_view = browser.eval("document.cookie").await;
    assert!(
        !script_view
            .as_str()
            .is_some_and(|c| c.contains("keygate_refresh")),
        "{script_view}"
    );

    // Loading the page again keeps the session, through the refresh cookie (which rotates).
    browser.goto(&kg.url("/ui/account")).await;
    browser
        .wait_until(&format!(
            "document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    webdriver("reload", browser.client.refresh())
        .await
        .expect("reload");
    browser
        .wait_until(&format!(
            "document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    let rotated = browser.refresh_cookie(&kg).await.expect("refresh cookie");
    assert_ne!(rotated.value(), refresh.value(), "a reload refreshes");

    // A second device: both sessions are listed, this one marked; end the other one.
    let (status, other) = kg.login_elsewhere(email, PASSWORD).await;
    assert_eq!(status, 200);
    let other_refresh = other["refresh_token"].as_str().expect("refresh").to_owned();
    browser.goto(&kg.url("/ui/account")).await;
    browser
        .wait_until("document.querySelectorAll('#sessions li').length === 2")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#sessions li.is-current .current').length")
            .await,
        1
    );
    assert!(browser.text("#sessions").await.contains("Second device"));
    browser.screenshots("account").await;
    browser.click("#sessions li:not(.is-current) button").await;
    browser
        .wait_until("document.querySelectorAll('#sessions li').length === 1")
        .await;
    assert!(browser.text("#status").await.contains("ended"));
    assert_eq!(kg.refresh_status(&other_refresh).await, 401, "ended");

    // Edit the profile.
    browser.fill("#profile-username", "ada").await;
    browser.click("#profile button[type=submit]").await;
    browser
        .wait_until("document.getElementById('status').textContent.includes('profile was saved')")
        .await;

    // Change the password: a wrong current password is shown by its field, then it works.
    browser
        .fill("#password-current_password", "not the password")
        .await;
    browser.fill("#password-new_password", NEW_PASSWORD).await;
    browser.click("#password button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('password-current_password-error').hidden")
        .await;
    assert_eq!(
        browser
            .eval(
                "document.getElementById('password-current_password').getAttribute('aria-invalid')"
            )
            .await,
        "true"
    );
    browser.fill("#password-current_password", PASSWORD).await;
    browser.fill("#password-new_password", NEW_PASSWORD).await;
    browser.click("#password button[type=submit]").await;
    browser
        .wait_until(
            "document.getElementById('status').textContent.includes('password was changed')",
        )
        .await;
    assert_eq!(kg.login_elsewhere(email, PASSWORD).await.0, 401);
    assert_eq!(kg.login_elsewhere("ada", NEW_PASSWORD).await.0, 200);

    // Log out: both cookies go, and the account page sends the visitor to log in.
    browser.click("#logout").await;
    browser
        .wait_until("location.pathname === '/ui/login'")
        .await;
    assert!(browser.cookie("keygate_csrf").await.is_none());
    assert!(browser.refresh_cookie(&kg).await.is_none());
    browser.goto(&kg.url("/ui/account")).await;
    browser
        .wait_until("location.pathname === '/ui/login'")
        .await;
    assert_eq!(browser.path().await, "/ui/login?return_to=%2Fui%2Faccount");
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_password_is_explained_by_its_field_and_return_to_stays_on_allowed_origins() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("[cors]\nallowed_origins = [\"https://app.example.com\"]\n").await;
    let email = "grace@example.com";
    kg.register(email).await;

    // A foreign return_to is dropped by the server; the page goes to the account instead.
    browser
        .goto(&kg.url("/ui/login?return_to=https%3A%2F%2Fevil.example%2Fsteal"))
        .await;
    assert_eq!(
        browser.eval("document.body.dataset.returnTo").await,
        "/ui/account"
    );
    // An allowed origin is kept.
    browser
        .goto(&kg.url("/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Fhome"))
        .await;
    assert_eq!(
        browser.eval("document.body.dataset.returnTo").await,
        "https://app.example.com/home"
    );

    // By keyboard alone: Tab from the login to the password, Enter submits.
    browser
        .goto(&kg.url("/ui/login?return_to=%2Fui%2Faccount%3Fwelcome"))
        .await;
    browser.screenshots("login").await;
    let field = browser
        .client
        .find(Locator::Css("#login-login"))
        .await
        .expect("login field");
    field
        .send_keys(&format!("{email}\u{e004}wrong password\u{e007}"))
        .await
        .expect("type");
    browser
        .wait_until("!document.getElementById('login-password-error').hidden")
        .await;
    assert_eq!(
        browser.text("#login-password-error").await,
        "Incorrect email, username or password."
    );
    assert_eq!(
        browser.eval("document.activeElement.id").await,
        "login-password",
        "focus goes to the field in error"
    );
    browser.screenshots("login-error").await;

    // A missing login is a 422 with fields: the field's own sentence, the old one gone.
    browser.fill("#login-login", "").await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_until(
            "document.getElementById('login-login-error').textContent === 'Email or username is required.'",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('login-password-error').hidden")
            .await,
        true
    );

    // The right password goes to the (checked) return_to.
    browser.fill("#login-login", email).await;
    browser.fill("#login-password", PASSWORD).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_until(&format!(
            "document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    assert_eq!(browser.path().await, "/ui/account?welcome");
    browser.close().await;
}

/// Issue 27, point 2: `return_to` spellings that normalise to another host (`/.//evil`,
/// `/..//evil`, `/%2e//evil`, `/./\evil`) never take the browser off Keygate's origin, neither
/// after the login form nor for a visitor already logged in (sent on without a click).
#[tokio::test]
async fn a_hostile_return_to_never_leaves_keygates_origin() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    let email = "hal@example.com";
    kg.register(email).await;
    let origin = kg.url("");
    let origin = origin.trim_end_matches('/');
    let hostile = [
        "%2F.%2F%2Fevil.example%2Fphish",
        "%2F..%2F%2Fevil.example",
        "%2F%252e%2F%2Fevil.example",
        "%2F.%2F%5Cevil.example",
    ];
    for (i, spelling) in hostile.iter().enumerate() {
        browser
            .goto(&kg.url(&format!("/ui/login?return_to={spelling}")))
            .await;
        assert_eq!(
            browser.eval("document.body.dataset.returnTo").await,
            "/ui/account",
            "{spelling}"
        );
        if i == 0 {
            // Through the form.
            browser.fill("#login-login", email).await;
            browser.fill("#login-password", PASSWORD).await;
            browser.click("#login button[type=submit]").await;
        }
        // Logged in (the first time by the form, afterwards from the cookie): the page sends
        // the visitor on at once, to this origin's account page.
        browser
            .wait_until("location.pathname === '/ui/account'")
            .await;
        assert_eq!(browser.eval("location.origin").await, origin, "{spelling}");
    }
    browser.close().await;
}

#[tokio::test]
async fn registration_closed_hides_the_page_and_its_link() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("registration = \"closed\"\n").await;
    browser.goto(&kg.url("/ui/login")).await;
    browser
        .wait_until("document.readyState === 'complete'")
        .await;
    assert!(
        browser
            .client
            .find(Locator::Css("#register-link"))
            .await
            .is_err()
    );
    browser.goto(&kg.url("/ui/register")).await;
    assert!(browser.text("body").await.contains("not_found"));
    browser.close().await;
}

/// A page on another local origin, the attacker's: a script and a form aimed at Keygate.
async fn attacker_site(keygate: &str) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><title>Elsewhere</title>\
         <form id=\"csrf\" method=\"post\" action=\"{keygate}/auth/logout\"></form>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, task)
}

#[tokio::test]
async fn another_origin_gets_no_cors_grant_and_cannot_log_the_user_out() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    let email = "mallory.target@example.com";
    kg.register(email).await;
    log_in(&browser, &kg, email, PASSWORD).await;
    let before = browser.refresh_cookie(&kg).await.expect("cookie");

    let (elsewhere, site) = attacker_site(&kg.base).await;
    browser.goto(&elsewhere).await;
    // A credentialed fetch of a new token: the browser sends it (same site), Keygate refuses
    // it without the CSRF header and grants no CORS, so the page reads nothing.
    let outcome = browser
        .client
        .execute(
            "return fetch(arguments[0] + '/auth/refresh', {method: 'POST', credentials: 'include'})
               .then(r => 'read ' + r.status, e => 'blocked ' + e.name);",
            vec![json!(kg.base)],
        )
        .await
        .expect("script");
    assert_eq!(outcome, "blocked TypeError");
    // With the header it needs a preflight, which gets no grant either.
    let outcome = browser
        .client
        .execute(
            "return fetch(arguments[0] + '/auth/refresh', {method: 'POST', credentials: 'include',
                 headers: {'x-csrf-token': 'guess'}})
               .then(r => 'read ' + r.status, e => 'blocked ' + e.name);",
            vec![json!(kg.base)],
        )
        .await
        .expect("script");
    assert_eq!(outcome, "blocked TypeError");

    // A cross-site form POST to logout: refused, the session untouched.
    browser
        .client
        .execute("document.getElementById('csrf').submit();", vec![])
        .await
        .expect("submit");
    browser
        .wait_until("location.href.endsWith('/auth/logout')")
        .await;
    let body = browser.text("body").await;
    assert!(body.contains("csrf_failed"), "{body}");

    // Nothing rotated, nothing ended: the same cookie, and the account page still works.
    let after = browser.refresh_cookie(&kg).await.expect("cookie kept");
    assert_eq!(after.value(), before.value(), "no new token was issued");
    browser.goto(&kg.url("/ui/account")).await;
    browser
        .wait_until(&format!(
            "document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    site.abort();
    browser.close().await;
}

/// The JavaScript sample of the README's "Browser apps" section.
fn readme_sample() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Browser apps")
        .nth(1)
        .expect("README has a Browser apps section");
    let start = section.find("```js\n").expect("a js block") + "```js\n".len();
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_owned()
}

#[tokio::test]
async fn the_readme_browser_sample_logs_in_refreshes_and_logs_out() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    let email = "sample@example.com";
    kg.register(email).await;
    let sample = readme_sample();
    assert!(sample.contains("\"https://auth.example.com\""), "{sample}");
    let sample = sample.replace("\"https://auth.example.com\"", &format!("{:?}", kg.base));

    // A page of Keygate's origin with no script of its own.
    browser.goto(&kg.url("/healthz")).await;
    let script = format!(
        "const [email, password] = arguments;
         return (async () => {{
           {sample}
           const steps = {{}};
           await login(email, password);
           steps.logged_in = typeof accessToken === 'string' && accessToken.length > 0;
           steps.script_sees_refresh = document.cookie.includes('keygate_refresh');
           const first = accessToken;
           steps.refreshed = await refresh();
           steps.new_access_token = accessToken !== null && accessToken !== first;
           await logout();
           steps.refresh_after_logout = await refresh();
           try {{ await login(email, 'wrong password'); steps.wrong = 'accepted'; }}
           catch (e) {{ steps.wrong = e.error; }}
           return steps;
         }})();"
    );
    let steps = browser
        .client
        .execute(&script, vec![json!(email), json!(PASSWORD)])
        .await
        .expect("the sample runs");
    assert_eq!(
        steps,
        json!({
            "logged_in": true,
            "script_sees_refresh": false,
            "refreshed": true,
            "new_access_token": true,
            "refresh_after_logout": false,
            "wrong": "invalid_credentials",
        })
    );
    browser.close().await;
}

#[tokio::test]
async fn rate_limited_and_busy_answers_tell_the_visitor_how_long_to_wait() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    // 429: the third login attempt in a minute.
    let kg = Keygate::start("[rate_limits]\nlogin = \"2/1m\"\n").await;
    let email = "patient@example.com";
    kg.register(email).await;
    browser.goto(&kg.url("/ui/login")).await;
    browser.fill("#login-login", email).await;
    for _ in 0..3 {
        browser.fill("#login-password", "wrong password").await;
        browser.click("#login button[type=submit]").await;
        browser
            .wait_until("!document.querySelector('#login button').disabled && (!document.getElementById('login-password-error').hidden || !document.getElementById('login-error').hidden)")
            .await;
    }
    let said = browser.text("#login-error").await;
    assert!(
        said.starts_with("Too many attempts. Please wait ")
            && said.ends_with(" seconds and try again."),
        "{said}"
    );
    drop(kg);

    // 503: one hash at a time and no queue, kept busy by other clients.
    let kg = Keygate::start(
        "[rate_limits]\nenabled = false\n[password]\nmax_concurrent_hashes = 1\nmax_queued_hashes = 0\n",
    )
    .await;
    kg.register(email).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|i| {
            let (url, stop) = (kg.url("/auth/login"), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = client
                        .post(&url)
                        .json(&json!({"email": format!("nobody{i}@example.com"), "password": PASSWORD}))
                        .send()
                        .await;
                }
            })
        })
        .collect();
    browser.goto(&kg.url("/ui/login")).await;
    browser.fill("#login-login", email).await;
    browser.fill("#login-password", "wrong password").await;
    let mut said = String::new();
    // The hasher is rarely free for the page's request; try a few times.
    for _ in 0..20 {
        browser.click("#login button[type=submit]").await;
        browser
            .wait_until("!document.querySelector('#login button').disabled && (!document.getElementById('login-password-error').hidden || !document.getElementById('login-error').hidden)")
            .await;
        said = browser.text("#login-error").await;
        if !said.is_empty() {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    assert!(
        said.starts_with("Keygate is unavailable right now. Please try again in "),
        "{said}"
    );
    browser.close().await;
}

/// `/docs`: Swagger UI from the binary renders the document, the login operation with it,
/// and fetches nothing from anywhere but Keygate (the page's CSP allows no other origin, and
/// the browser's own record of what it loaded says so).
#[tokio::test]
async fn the_docs_page_renders_the_api_reference_from_the_binary_alone() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    browser.goto(&kg.url("/docs")).await;
    assert_eq!(browser.path().await, "/docs/", "redirected under /docs/");
    browser
        .wait_until("document.querySelector('#operations-account-login') !== null")
        .await;
    let summary = browser.text("#operations-account-login").await;
    assert!(summary.contains("/auth/login"), "{summary}");
    assert!(browser.text(".info .title").await.contains("Keygate"));
    // Every resource the page loaded came from Keygate itself.
    let origins = browser
        .eval(
            "JSON.stringify([...new Set(performance.getEntriesByType('resource')\
             .map(e => new URL(e.name).origin))])",
        )
        .await;
    let origins: Vec<String> = serde_json::from_str(origins.as_str().unwrap()).unwrap();
    let own = kg.url("");
    assert!(
        origins.iter().all(|o| own.starts_with(o.as_str())),
        "{origins:?} beside {own}"
    );
    assert!(!origins.is_empty());
    // Swagger UI's own markup is not held to the hosted pages' accessibility checks.
    browser
        .client
        .set_window_size(1280, 900)
        .await
        .expect("resize");
    let png = webdriver("screenshot", browser.client.screenshot())
        .await
        .expect("screenshot");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join("docs-desktop.png"), png).expect("write png");
    browser.close().await;
}

#[tokio::test]
async fn a_forgotten_password_is_reset_from_the_mailed_link_and_the_address_verified() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let mail = smtp::SmtpServer::start();
    let kg = Keygate::start(&mail.config()).await;
    let email = "hedy@example.com";
    kg.register(email).await;

    // The verification link of the registration, followed in the browser.
    let link = mail.nth(email, 1).await.link();
    assert!(
        link.starts_with(&kg.url("/ui/verify-email?token=")),
        "{link}"
    );
    browser.goto(&link).await;
    browser
        .wait_until("document.getElementById('link') !== null")
        .await;
    // The token left the address bar (and so the history) at once.
    assert_eq!(browser.path().await, "/ui/verify-email");
    browser.screenshots("verify-email").await;
    browser.click("#link button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('link-done').hidden")
        .await;
    // Followed again: the page says the link no longer works.
    browser.goto(&link).await;
    browser.click("#link button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('link-error').hidden")
        .await;
    assert!(browser.text("#link-error").await.contains("does not work"));

    // Forgot password, from the login page's link.
    browser.goto(&kg.url("/ui/login")).await;
    browser.click("#forgot-link").await;
    browser
        .wait_until("document.getElementById('forgot') !== null")
        .await;
    browser.screenshots("forgot-password").await;
    browser.fill("#forgot-email", email).await;
    browser.click("#forgot button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('forgot-done').hidden")
        .await;

    let link = mail.nth(email, 2).await.link();
    assert!(
        link.starts_with(&kg.url("/ui/reset-password?token=")),
        "{link}"
    );
    browser.goto(&link).await;
    browser
        .wait_until("document.getElementById('reset') !== null")
        .await;
    assert_eq!(browser.path().await, "/ui/reset-password");
    // A weak password is explained next to its field.
    browser.fill("#reset-new_password", "password").await;
    browser.click("#reset button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('reset-new_password-error').hidden")
        .await;
    browser.screenshots("reset-password").await;
    browser.fill("#reset-new_password", NEW_PASSWORD).await;
    browser.click("#reset button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('reset-done').hidden")
        .await;

    // The old password is gone; the new one logs in.
    assert_eq!(kg.login_elsewhere(email, PASSWORD).await.0, 401);
    log_in(&browser, &kg, email, NEW_PASSWORD).await;
    assert_eq!(browser.text("#profile-email-status").await, "Verified");
    browser.close().await;
}

#[tokio::test]
async fn two_factor_is_turned_on_from_the_account_page_and_asked_at_login() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kg = Keygate::start("").await;
    let email = "ida@example.com";
    kg.register(email).await;
    log_in(&browser, &kg, email, PASSWORD).await;
    // Without mail the page offers nothing mail-related (and calls nothing unverified).
    assert_eq!(
        browser
            .eval("['profile-email-status', 'verify-section', 'email-section'].map(id => document.getElementById(id).hidden)")
            .await,
        json!([true, true, true])
    );

    browser.fill("#mfa-start-password", PASSWORD).await;
    browser.click("#mfa-start button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('mfa-confirm').hidden")
        .await;
    // The QR code is the server's SVG, in the page.
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#mfa-qr svg').length")
            .await,
        1
    );
    let secret = browser.text("#mfa-secret").await;
    let key = totp::base32_decode(&secret);
    browser.screenshots("account-mfa-enrol").await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // A wrong code is explained next to its field.
    let right = totp::totp(&key, now());
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    browser.fill("#mfa-confirm-code", wrong).await;
    browser.click("#mfa-confirm button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('mfa-confirm-code-error').hidden")
        .await;
    browser
        .fill("#mfa-confirm-code", &totp::totp(&key, now()))
        .await;
    browser.click("#mfa-confirm button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('mfa-codes').hidden")
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#mfa-codes-list li').length")
            .await,
        10
    );
    browser.screenshots("account-mfa-codes").await;

    // Log out, and in again: the password, then a code (the next step's: the one that
    // confirmed the enrolment cannot be used twice).
    browser.click("#logout").await;
    browser
        .wait_until("location.pathname === '/ui/login'")
        .await;
    browser.fill("#login-login", email).await;
    browser.fill("#login-password", PASSWORD).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_until("!document.getElementById('mfa').hidden")
        .await;
    browser.screenshots("login-mfa").await;
    browser
        .fill("#mfa-code", &totp::totp(&key, now() + 30))
        .await;
    browser.click("#mfa button[type=submit]").await;
    browser
        .wait_until(&format!(
            "location.pathname === '/ui/account' && document.getElementById('profile-email').value === '{email}'"
        ))
        .await;
    assert!(browser.text("#mfa-status").await.starts_with("On"));
    // Without the code, the password alone no longer logs in.
    let (status, body) = kg.login_elsewhere(email, PASSWORD).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_required"))
    );
    browser.close().await;
}
