//! CORS (`cors.allowed_origins`): grants with credentials for configured origins only, and
//! no CORS header at all without configuration.

use reqwest::Method;

use crate::helpers::{TestApp, assert_error};

const APP: &str = "https://app.example.com";
const OTHER: &str = "https://evil.example.net";

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

fn cors_headers(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-csrf-token",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_ever_sent() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = preflight(&app, "/auth/refresh", APP).await;
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers());
    // Without CORS, OPTIONS is simply a method the path does not have.
    assert_eq!(r.headers()["allow"], "POST");
    assert_error(r, 405, "method_not_allowed").await;
    let r = app
        .client
        .post(app.url("/auth/login"))
        .header("origin", APP)
        .json(&serde_json::json!({"email": "ada@example.com", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers());
}

#[tokio::test]
async fn configured_origins_get_credentialed_grants_and_others_get_none() {
    let Some(app) = TestApp::spawn_with(&format!(
        "cors.allowed_origins = [\"{APP}\", \"http://localhost:5173\"]"
    ))
    .await
    else {
        return;
    };
    // A preflight from an allowed origin: the methods and headers the API uses, credentials,
    // cached for a while, and varying by origin.
    let r = preflight(&app, "/auth/refresh", APP).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&r, "access-control-allow-methods").unwrap();
    for m in ["get", "post", "patch", "delete"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header(&r, "access-control-allow-headers").unwrap();
    for h in ["content-type", "authorization", "x-csrf-token"] {
        assert!(headers.contains(h), "{headers}");
    }
    assert_eq!(header(&r, "access-control-max-age").as_deref(), Some("600"));
    assert!(header(&r, "vary").unwrap().contains("origin"));
    let r = preflight(&app, "/auth/refresh", "http://localhost:5173").await;
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );

    // From any other origin (a look-alike included): no grant, no credentials.
    for origin in [
        OTHER,
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "null",
    ] {
        let r = preflight(&app, "/auth/refresh", origin).await;
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{origin}");
        assert_eq!(
            header(&r, "access-control-allow-credentials"),
            None,
            "{origin}"
        );
    }

    // Actual requests: the grant is on the answer for the allowed origin, errors included
    // (a browser app can read a 401's body and headers).
    let me = |origin: &'static str| {
        app.client
            .get(app.url("/auth/me"))
            .header("origin", origin)
            .send()
    };
    let r = me(APP).await.unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    assert_eq!(
        header(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        header(&r, "access-control-expose-headers")
            .unwrap()
            .contains("www-authenticate")
    );
    assert!(header(&r, "vary").unwrap().contains("origin"));
    assert_error(r, 401, "invalid_token").await;
    let r = me(OTHER).await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), None);
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
}
