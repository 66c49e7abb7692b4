//! The hosted pages over plain HTTP (the browser tests in tests/browser.rs drive them): the
//! security headers on every answer, nothing inline or from elsewhere, the register page only
//! while registration is open, and `return_to` checked and escaped by the server.

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_error};

const PAGES: [&str; 3] = ["/ui/login", "/ui/register", "/ui/account"];
const ASSETS: [(&str, &str); 2] = [
    ("/ui/keygate.js", "text/javascript"),
    ("/ui/keygate.css", "text/css"),
];

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} on {}", r.url()))
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

/// The `data-return-to` the login page was rendered with.
async fn return_to(app: &TestApp, query: &str) -> String {
    let html = get(app, &format!("/ui/login?{query}"))
        .await
        .text()
        .await
        .unwrap();
    let start = html.find("data-return-to=\"").expect("attribute") + "data-return-to=\"".len();
    let len = html[start..].find('"').expect("attribute ends");
    html[start..start + len].to_owned()
}

#[tokio::test]
async fn every_page_and_asset_carries_the_security_headers_and_nothing_inline_or_foreign() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    for path in PAGES.iter().copied().chain(ASSETS.iter().map(|(p, _)| *p)) {
        let r = get(&app, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = header(&r, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "x-frame-options"), "DENY", "{path}");
        let body = r.text().await.unwrap();
        // Nothing fetched from anywhere else (no CDN, no font service).
        assert!(!body.contains("https://"), "{path}");
        assert!(!body.contains("http://"), "{path}");
    }
    for path in PAGES {
        let r = get(&app, path).await;
        assert!(
            header(&r, "content-type").starts_with("text/html"),
            "{path}"
        );
        assert_eq!(header(&r, "cache-control"), "no-store", "{path}");
        let html = r.text().await.unwrap().to_ascii_lowercase();
        // The CSP forbids inline script: there is none to forbid, nor inline handlers or styles.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/ui/keygate.js\" defer></script>")
                .count(),
            "{path}"
        );
        for inline in [" onclick=", " onload=", " onsubmit=", " style=", "<style"] {
            assert!(!html.contains(inline), "{path} has {inline}");
        }
        assert!(html.contains("<html lang=\"en\">"), "{path}");
        assert!(html.contains("name=\"viewport\""), "{path}");
    }
    for (path, kind) in ASSETS {
        let r = get(&app, path).await;
        assert!(header(&r, "content-type").starts_with(kind), "{path}");
    }
    let r = app.client.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(
        r.url().path(),
        "/ui/account",
        "/ui leads to the account page"
    );
}

#[tokio::test]
async fn the_register_page_exists_only_while_registration_is_open() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let login = get(&app, "/ui/login").await.text().await.unwrap();
    assert!(login.contains("href=\"/ui/register\""));

    let closed = app.sibling("registration = \"closed\"\n").await;
    assert_error(get(&closed, "/ui/register").await, 404, "not_found").await;
    let login = get(&closed, "/ui/login").await.text().await.unwrap();
    assert!(!login.contains("/ui/register"));
}

#[tokio::test]
async fn return_to_is_checked_and_escaped_by_the_server() {
    let Some(app) =
        TestApp::spawn_with("[cors]\nallowed_origins = [\"https://app.example.com\"]\n").await
    else {
        return;
    };
    let issuer = app.state.auth.config().issuer.clone();
    let cases = [
        (String::new(), "/ui/account".to_owned()),
        (
            "return_to=%2Fui%2Faccount%3Ftab%3D2".to_owned(),
            "/ui/account?tab=2".to_owned(),
        ),
        (
            "return_to=https%3A%2F%2Fapp.example.com%2Fhome".to_owned(),
            "https://app.example.com/home".to_owned(),
        ),
        (
            format!("return_to={issuer}/ui/account"),
            format!("{issuer}/ui/account"),
        ),
        (
            "return_to=https%3A%2F%2Fevil.example%2F".to_owned(),
            "/ui/account".to_owned(),
        ),
        (
            "return_to=%2F%2Fevil.example%2F".to_owned(),
            "/ui/account".to_owned(),
        ),
        (
            "return_to=%2F%5Cevil.example%2F".to_owned(),
            "/ui/account".to_owned(),
        ),
        (
            "return_to=javascript%3Aalert(1)".to_owned(),
            "/ui/account".to_owned(),
        ),
    ];
    for (query, want) in cases {
        assert_eq!(return_to(&app, &query).await, want, "{query}");
    }
    // Whatever comes back cannot leave the attribute.
    let html = get(
        &app,
        "/ui/login?return_to=%2Fa%27%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("data-return-to=\"/a&#39;%22%3E%3Cscript%3Ealert(1)%3C/script%3E\""),
        "{html}"
    );
}
