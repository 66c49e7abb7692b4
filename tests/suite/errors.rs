//! Bad input gets the documented error: never a panic, a 500 or a hang.

use crate::helpers::{TestApp, assert_error};

async fn raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    for body in ["{", "{\"email\": }", "nul", "{\"email\":\"a\"}}"] {
        let r = raw(&app, "/auth/login", Some("application/json"), body).await;
        assert_error(r, 400, "bad_request").await;
    }
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_400() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let shapes = ["[]", "42", "\"text\"", "null"];
    let cases = [
        ("/auth/login", "{\"email\": 1, \"password\": \"x\"}"),
        (
            "/auth/register",
            "{\"email\": [\"a\"], \"password\": \"x\"}",
        ),
        ("/auth/refresh", "{\"refresh_token\": {\"a\": 1}}"),
    ];
    for (path, wrong_type) in cases {
        for body in shapes.iter().copied().chain([wrong_type]) {
            let r = raw(&app, path, Some("application/json"), body).await;
            assert_error(r, 400, "bad_request").await;
        }
    }
}

/// Found by Schemathesis (scripts/api-fuzz): serde fills a struct from an array of its
/// fields in order, so a body whose fields are all optional took `[null, null]` and answered
/// 200. Every body must be an object.
#[tokio::test]
async fn an_array_is_never_taken_for_an_object_even_when_every_field_is_optional() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let t = app.login("ada@example.com").await;
    for body in ["[null, null]", "[\"Ada\"]", "[]"] {
        let r = app
            .client
            .patch(app.url("/auth/me"))
            .bearer_auth(&t.access)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "bad_request").await;
    }
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&t.access)
        .header("content-type", "application/json")
        .body("[\"global\"]")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
    // Nothing changed and the session is still live.
    assert_eq!(app.me_status(&t.access).await, 200);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = raw(&app, "/auth/login", None, "{}").await;
    assert_error(r, 415, "unsupported_media_type").await;
    let r = raw(&app, "/auth/register", Some("text/plain"), "{}").await;
    assert_error(r, 415, "unsupported_media_type").await;
    let r = raw(
        &app,
        "/auth/logout",
        Some("application/x-www-form-urlencoded"),
        "scope=global",
    )
    .await;
    assert_error(r, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(17 * 1024));
    for path in ["/auth/login", "/auth/register", "/auth/logout"] {
        let r = raw(&app, path, Some("application/json"), big.clone()).await;
        assert_error(r, 413, "payload_too_large").await;
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    // RFC 9110: a known path with a method it does not have is 405 and `Allow` lists those
    // it has.
    let cases = [
        ("GET", "/auth/login", "POST"),
        ("DELETE", "/auth/me", "GET,HEAD,PATCH"),
        ("PUT", "/.well-known/jwks.json", "GET,HEAD"),
        ("GET", "/oauth/token", "POST"),
    ];
    for (method, path, allow) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let got = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().replace(' ', ""));
        let mut got: Vec<String> = got
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        let mut want: Vec<String> = allow.split(',').map(str::to_owned).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
        assert_error(r, 405, "method_not_allowed").await;
    }
}

#[tokio::test]
async fn odd_but_valid_input_never_causes_a_500() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let cases = [
        r#"{"email": "\u0000@example.com", "password": "correct horse battery"}"#,
        r#"{"email": "ada@example.com", "password": "\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0000"}"#,
        r#"{"email": "ädä@exämple.com", "password": "pässwörd-pässwörd", "name": "Ådä 🦀"}"#,
        r#"{"email": "ada@example.com", "password": "correct horse battery", "username": null, "name": null}"#,
    ];
    for body in cases {
        let r = raw(&app, "/auth/register", Some("application/json"), body).await;
        assert!(r.status().as_u16() < 500, "{body}: {}", r.status());
    }
    let r = raw(
        &app,
        "/auth/login",
        Some("application/json"),
        r#"{"email": "\u0000", "password": "x"}"#,
    )
    .await;
    assert_error(r, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn headers_are_capped_at_32_kib_in_total_as_well_as_8_kib_each() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let send = |count: usize, each: usize| {
        let mut req = app.client.get(app.url("/healthz"));
        for i in 0..count {
            req = req.header(format!("x-filler-{i}"), "v".repeat(each));
        }
        req.send()
    };
    // Each header under 8 KiB, 28 000 bytes in all: served.
    assert_eq!(send(4, 7000).await.unwrap().status(), 200);
    // Each header still under 8 KiB, but 35 000 bytes in all: 431.
    assert_error(send(5, 7000).await.unwrap(), 431, "headers_too_large").await;
    // Many small headers count too, and more than 100 headers are too many.
    assert_error(send(400, 100).await.unwrap(), 431, "headers_too_large").await;
    // One header over 8 KiB alone.
    assert_error(
        send(1, 8 * 1024 + 1).await.unwrap(),
        431,
        "headers_too_large",
    )
    .await;
}
