//! The cookie transport (API.md § Cookie transport): every cookie attribute, rotation through
//! the cookie, logout clearing both cookies, and every CSRF failure refused with nothing
//! changed.

use axum_extra::extract::cookie::{Cookie, SameSite};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error};

/// The cookies a response sets, by name.
fn set_cookies(r: &reqwest::Response) -> Vec<Cookie<'static>> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
        .collect()
}

fn named<'a>(cookies: &'a [Cookie<'static>], name: &str) -> &'a Cookie<'static> {
    cookies
        .iter()
        .find(|c| c.name() == name)
        .unwrap_or_else(|| panic!("no {name} in {cookies:?}"))
}

/// A browser's session: its two cookies.
#[derive(Debug, Clone)]
struct Browser {
    refresh: String,
    csrf: String,
    access: String,
}

async fn cookie_login(app: &TestApp, email: &str) -> (Browser, reqwest::Response) {
    let r = app
        .client
        .post(app.url("/auth/login?transport=cookie"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    let browser = Browser {
        refresh: named(&cookies, "keygate_refresh").value().to_owned(),
        csrf: named(&cookies, "keygate_csrf").value().to_owned(),
        access: String::new(),
    };
    (browser, r)
}

/// `POST path` as the browser would send it: both cookies, and `csrf` as the header.
async fn with_cookies(
    app: &TestApp,
    path: &str,
    refresh: &str,
    csrf_cookie: &str,
    csrf_header: Option<&str>,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).header(
        "cookie",
        format!("keygate_refresh={refresh}; keygate_csrf={csrf_cookie}"),
    );
    if let Some(h) = csrf_header {
        req = req.header("x-csrf-token", h);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.unwrap()
}

async fn cookie_refresh(app: &TestApp, b: &Browser) -> reqwest::Response {
    with_cookies(
        app,
        "/auth/refresh",
        &b.refresh,
        &b.csrf,
        Some(&b.csrf),
        None,
    )
    .await
}

#[tokio::test]
async fn a_cookie_login_sets_both_cookies_with_every_attribute_and_no_refresh_token_in_the_body() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let (b, r) = cookie_login(&app, "ada@example.com").await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        app.me_status(body["access_token"].as_str().unwrap()).await,
        200
    );

    let refresh = named(&cookies, "keygate_refresh");
    assert_eq!(refresh.http_only(), Some(true));
    assert_eq!(refresh.secure(), Some(true));
    assert_eq!(refresh.same_site(), Some(SameSite::Strict));
    assert_eq!(refresh.path(), Some("/auth"));
    assert_eq!(refresh.domain(), None);
    let ttl = body["refresh_expires_in"].as_i64().unwrap();
    assert_eq!(refresh.max_age().unwrap().whole_seconds(), ttl);
    assert_eq!(ttl, 30 * 24 * 3600);

    let csrf = named(&cookies, "keygate_csrf");
    assert_ne!(
        csrf.http_only(),
        Some(true),
        "the app's script must read it"
    );
    assert_eq!(csrf.secure(), Some(true));
    assert_eq!(csrf.same_site(), Some(SameSite::Strict));
    assert_eq!(csrf.path(), Some("/"));
    assert!(b.csrf.len() >= 40, "{}", b.csrf);
    assert_ne!(b.csrf, b.refresh);

    // A second login is a new session with a new CSRF token.
    let (again, _) = cookie_login(&app, "ada@example.com").await;
    assert_ne!(again.csrf, b.csrf);
    assert_ne!(again.refresh, b.refresh);

    // An unknown transport is a validation error.
    let r = app
        .client
        .post(app.url("/auth/login?transport=carrier-pigeon"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let e = assert_error(r, 422, "validation_failed").await;
    assert!(e["fields"]["transport"].is_string());
}

#[tokio::test]
async fn cookies_secure_false_drops_secure_only_and_cookies_domain_sets_domain() {
    let Some(app) =
        TestApp::spawn_with("cookies.secure = false\ncookies.domain = \"example.com\"").await
    else {
        return;
    };
    app.register("ada@example.com").await;
    let (_, r) = cookie_login(&app, "ada@example.com").await;
    let cookies = set_cookies(&r);
    for name in ["keygate_refresh", "keygate_csrf"] {
        let c = named(&cookies, name);
        assert_ne!(c.secure(), Some(true), "{name}");
        assert_eq!(c.domain(), Some("example.com"), "{name}");
        assert_eq!(c.same_site(), Some(SameSite::Strict), "{name}");
    }
    assert_eq!(named(&cookies, "keygate_refresh").http_only(), Some(true));
}

#[tokio::test]
async fn a_cookie_refresh_rotates_the_cookie_keeps_the_csrf_token_and_honours_the_grace_window() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let (first, _) = cookie_login(&app, "ada@example.com").await;
    let r = cookie_refresh(&app, &first).await;
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let second = Browser {
        refresh: named(&cookies, "keygate_refresh").value().to_owned(),
        csrf: named(&cookies, "keygate_csrf").value().to_owned(),
        access: body["access_token"].as_str().unwrap().to_owned(),
    };
    assert_ne!(second.refresh, first.refresh, "the refresh cookie rotates");
    assert_eq!(second.csrf, first.csrf, "the CSRF token survives refresh");
    assert_eq!(app.me_status(&second.access).await, 200);
    assert_eq!(
        named(&cookies, "keygate_refresh")
            .max_age()
            .unwrap()
            .whole_seconds(),
        body["refresh_expires_in"].as_i64().unwrap()
    );
    // Inside the grace window the old cookie gets the same successor (a second tab).
    let r = cookie_refresh(&app, &first).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        named(&set_cookies(&r), "keygate_refresh").value(),
        second.refresh
    );
    // After it, the old cookie is reuse: the session ends.
    app.clock.advance(std::time::Duration::from_secs(11));
    assert_error(
        cookie_refresh(&app, &first).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    assert_error(
        cookie_refresh(&app, &second).await,
        401,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn every_csrf_failure_is_403_and_changes_nothing() {
    let Some(app) =
        TestApp::spawn_with("cors.allowed_origins = [\"https://app.example.com\"]").await
    else {
        return;
    };
    app.register("ada@example.com").await;
    app.register("bob@example.com").await;
    let (ada, _) = cookie_login(&app, "ada@example.com").await;
    let (bob, _) = cookie_login(&app, "bob@example.com").await;
    for path in ["/auth/refresh", "/auth/logout"] {
        let attempts: [(&str, &str, Option<&str>, Option<&str>); 6] = [
            ("no header", &ada.csrf, None, None),
            (
                "header differs from the cookie",
                &ada.csrf,
                Some(&bob.csrf),
                None,
            ),
            (
                "another session's token in both",
                &bob.csrf,
                Some(&bob.csrf),
                None,
            ),
            ("a made-up token in both", "forged", Some("forged"), None),
            (
                "a foreign origin",
                &ada.csrf,
                Some(&ada.csrf),
                Some("https://evil.example.net"),
            ),
            ("an opaque origin", &ada.csrf, Some(&ada.csrf), Some("null")),
        ];
        for (what, cookie, header, origin) in attempts {
            let r = with_cookies(&app, path, &ada.refresh, cookie, header, origin).await;
            assert!(r.headers().get("set-cookie").is_none(), "{path}, {what}");
            let e = assert_error(r, 403, "csrf_failed").await;
            assert!(e["message"].is_string(), "{path}, {what}");
        }
    }
    // Nothing changed: the session is alive and its cookie was not rotated, so it refreshes
    // now (from the issuer's own origin, and from an allowed one).
    let r = with_cookies(
        &app,
        "/auth/refresh",
        &ada.refresh,
        &ada.csrf,
        Some(&ada.csrf),
        Some("http://127.0.0.1:8080"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let rotated = named(&set_cookies(&r), "keygate_refresh")
        .value()
        .to_owned();
    let r = with_cookies(
        &app,
        "/auth/refresh",
        &rotated,
        &ada.csrf,
        Some(&ada.csrf),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // JSON and bearer clients are unaffected: a body token needs no CSRF header.
    let t = app.login("bob@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/refresh"))
        .header("cookie", format!("keygate_refresh={}", bob.refresh))
        .json(&json!({"refresh_token": t.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Neither body token nor cookie: the field is required, as before.
    let r = app.post("/auth/refresh", &json!({})).await;
    let e = assert_error(r, 422, "validation_failed").await;
    assert_eq!(e["fields"]["refresh_token"], "is required");
}

#[tokio::test]
async fn a_cookie_logout_ends_the_session_and_clears_both_cookies() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let (b, r) = cookie_login(&app, "ada@example.com").await;
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = with_cookies(
        &app,
        "/auth/logout",
        &b.refresh,
        &b.csrf,
        Some(&b.csrf),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    let cookies = set_cookies(&r);
    for (name, path, http_only) in [
        ("keygate_refresh", "/auth", true),
        ("keygate_csrf", "/", false),
    ] {
        let c = named(&cookies, name);
        assert_eq!(c.value(), "", "{name}");
        assert_eq!(c.max_age().unwrap().whole_seconds(), 0, "{name}");
        assert_eq!(c.path(), Some(path), "{name}");
        assert_eq!(c.http_only() == Some(true), http_only, "{name}");
        assert_eq!(c.secure(), Some(true), "{name}");
        assert_eq!(c.same_site(), Some(SameSite::Strict), "{name}");
    }
    assert_eq!(app.me_status(&access).await, 401);
    assert_error(cookie_refresh(&app, &b).await, 401, "invalid_refresh_token").await;
}
