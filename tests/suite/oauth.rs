//! The OAuth 2.0 endpoints over HTTP: the token endpoint's three grants and RFC 6749 errors,
//! revocation (RFC 7009), introspection (RFC 7662) and discovery (RFC 8414) with cacheable,
//! ETag'd metadata and JWKS.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp};

const SVC_SECRET: &str = "service secret of some length";
const RS_SECRET: &str = "resource server secret";
const ARGON_SECRET: &str = "argon2 protected client secret";

fn sha256_hex(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id PHC string of `secret` (cheap parameters: it only has to verify).
fn argon2_hash(secret: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash: argon2::PasswordHash = argon
        .hash_password_with_salt(secret.as_bytes(), b"sixteen byte slt")
        .unwrap();
    hash.to_string()
}

fn clients() -> String {
    format!(
        "[[oauth.clients]]\nid = \"svc\"\nsecret = \"{SVC_SECRET}\"\n\
         grant_types = [\"client_credentials\"]\nroles = [\"service\"]\npermissions = [\"invoices:read\"]\n\
         [[oauth.clients]]\nid = \"rs\"\nsecret_hash = \"sha256:{}\"\n\
         [[oauth.clients]]\nid = \"argon\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\n",
        sha256_hex(RS_SECRET),
        argon2_hash(ARGON_SECRET)
    )
}

async fn spawn() -> Option<TestApp> {
    TestApp::spawn_with(&clients()).await
}

/// A form POST, optionally with HTTP Basic client credentials.
pub(crate) async fn form(
    app: &TestApp,
    path: &str,
    pairs: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut r = app
        .client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        r = r.basic_auth(id, Some(secret));
    }
    r.send().await.unwrap()
}

/// Asserts an RFC 6749 error: status, code, a description, never cached.
async fn oauth_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "expected {status} {code}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    body
}

async fn password_grant(app: &TestApp, username: &str) -> Value {
    let r = form(
        app,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", username),
            ("password", PASSWORD),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let r = form(
        app,
        "/oauth/introspect",
        &[("token", token)],
        Some(("rs", RS_SECRET)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_password_grant_logs_in_by_form_and_the_refresh_grant_rotates_with_grace_and_reuse_detection()
 {
    let Some(app) = spawn().await else {
        return;
    };
    app.register("seed@example.com").await;
    let r = form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", "seed@example.com"),
            ("password", PASSWORD),
            ("scope", "read write"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = r.json().await.unwrap();
    // One token response shape: API.md's (seed 002 says "bearer"), plus the echoed scope.
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "read write");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert!(body["refresh_expires_in"].as_i64().unwrap() > 0);
    assert!(body["session_id"].as_str().is_some_and(|s| s.len() == 36));
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(app.me_status(access).await, StatusCode::OK);

    // By username too.
    let patch = app
        .client
        .patch(app.url("/auth/me"))
        .bearer_auth(access)
        .json(&json!({"username": "seed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::OK);
    password_grant(&app, "seed").await;

    // Refresh: rotation, the grace window's same successor, then reuse ends the session.
    let rotate = |token: String| {
        let app = &app;
        async move {
            form(
                app,
                "/oauth/token",
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                None,
            )
            .await
        }
    };
    let first: Value = rotate(refresh.clone()).await.json().await.unwrap();
    let successor = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(successor, refresh);
    let again: Value = rotate(refresh.clone()).await.json().await.unwrap();
    assert_eq!(
        again["refresh_token"], first["refresh_token"],
        "grace window"
    );
    app.clock.advance(Duration::from_secs(11));
    oauth_error(rotate(refresh).await, 400, "invalid_grant").await;
    oauth_error(rotate(successor).await, 400, "invalid_grant").await;
}

/// A request (form pairs, Basic credentials) and the status and error it must get.
type Case<'a> = (
    &'a [(&'a str, &'a str)],
    Option<(&'a str, &'a str)>,
    u16,
    &'a str,
);

#[tokio::test]
async fn token_errors_are_rfc_6749_errors() {
    let Some(app) = spawn().await else {
        return;
    };
    app.register("err@example.com").await;
    let token = "/oauth/token";
    let wrong_password = [
        ("grant_type", "password"),
        ("username", "err@example.com"),
        ("password", "wrong password"),
    ];
    let cases: [Case<'_>; 9] = [
        (&[], None, 400, "invalid_request"),
        (
            &[("grant_type", "authorization_code")],
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "password"), ("username", "err@example.com")],
            None,
            400,
            "invalid_request",
        ),
        (&wrong_password, None, 400, "invalid_grant"),
        (
            &[("grant_type", "password"), ("grant_type", "password")],
            None,
            400,
            "invalid_request",
        ),
        (
            &[("grant_type", "refresh_token"), ("refresh_token", "nope")],
            None,
            400,
            "invalid_grant",
        ),
        // Both client authentication methods at once.
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", RS_SECRET),
            ],
            Some(("rs", RS_SECRET)),
            400,
            "invalid_request",
        ),
        // A confidential client naming itself without its secret.
        (
            &[("grant_type", "client_credentials"), ("client_id", "svc")],
            None,
            401,
            "invalid_client",
        ),
        // A wrong secret.
        (
            &[("grant_type", "password")],
            Some(("rs", "wrong secret value")),
            401,
            "invalid_client",
        ),
    ];
    for (pairs, basic, status, code) in cases {
        oauth_error(form(&app, token, pairs, basic).await, status, code).await;
    }
    // JSON is not a form.
    let r = app.post(token, &json!({"grant_type": "password"})).await;
    oauth_error(r, 400, "invalid_request").await;
    // Failed client authentication challenges with Basic, for a known or unknown client.
    for basic in [("rs", "wrong secret value"), ("nobody", RS_SECRET)] {
        let r = form(&app, token, &[("grant_type", "password")], Some(basic)).await;
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Basic "), "{challenge}");
        oauth_error(r, 401, "invalid_client").await;
    }

    // A disabled account gets no token, even with the right password.
    let user = app.login("err@example.com").await;
    let me: Value = app
        .get_auth("/auth/me", &user.access)
        .await
        .json()
        .await
        .unwrap();
    app.state
        .auth
        .update_user(
            keygate::auth::Actor::Operator,
            me["id"].as_str().unwrap(),
            keygate::auth::UserPatch {
                is_active: Some(false),
                ..Default::default()
            },
            &keygate::domain::ClientInfo::default(),
        )
        .await
        .unwrap();
    let body = oauth_error(
        form(
            &app,
            token,
            &[
                ("grant_type", "password"),
                ("username", "err@example.com"),
                ("password", PASSWORD),
            ],
            None,
        )
        .await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{body}"
    );
}

#[tokio::test]
async fn client_credentials_tokens_carry_the_clients_roles_and_belong_to_no_session() {
    let Some(app) = spawn().await else {
        return;
    };
    let token = "/oauth/token";
    let grant = [("grant_type", "client_credentials"), ("scope", "invoices")];
    let r = form(&app, token, &grant, Some(("svc", SVC_SECRET))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "invoices");
    let access = body["access_token"].as_str().unwrap();
    let facts = introspect(&app, access).await;
    assert_eq!(facts["active"], true);
    assert_eq!(facts["sub"], "svc");
    assert_eq!(facts["client_id"], "svc");
    assert_eq!(facts["sid"], "client:svc");
    assert_eq!(facts["roles"], json!(["service"]));
    assert_eq!(facts["permissions"], json!(["invoices:read"]));
    // Not a user: Keygate's own user endpoints refuse it.
    assert_eq!(app.me_status(access).await, StatusCode::UNAUTHORIZED);

    // client_secret_post works as well; an argon2-hashed secret works (twice: the second is
    // answered from the remembered digest) and a wrong one still fails.
    let post = [
        ("grant_type", "client_credentials"),
        ("client_id", "svc"),
        ("client_secret", SVC_SECRET),
    ];
    assert_eq!(
        form(&app, token, &post, None).await.status(),
        StatusCode::OK
    );
    for _ in 0..2 {
        assert_eq!(
            form(&app, token, &grant, Some(("argon", ARGON_SECRET)))
                .await
                .status(),
            StatusCode::OK
        );
    }
    oauth_error(
        form(
            &app,
            token,
            &grant,
            Some(("argon", "argon2 protected client secreT")),
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
    // A client without the grant, and no client at all.
    oauth_error(
        form(&app, token, &grant, Some(("rs", RS_SECRET))).await,
        400,
        "unauthorized_client",
    )
    .await;
    oauth_error(form(&app, token, &grant, None).await, 401, "invalid_client").await;
}

#[tokio::test]
async fn revocation_ends_the_session_of_a_refresh_or_access_token_and_answers_200_to_anything() {
    let Some(app) = spawn().await else {
        return;
    };
    app.register("rev@example.com").await;
    let revoke = |token: String, hint: &'static str| {
        let app = &app;
        async move {
            let r = form(
                app,
                "/oauth/revoke",
                &[("token", &token), ("token_type_hint", hint)],
                None,
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{token}");
            assert_eq!(r.headers()["cache-control"], "no-store");
            assert!(r.bytes().await.unwrap().is_empty());
        }
    };
    // A refresh token (with the wrong hint: a hint only).
    let a = password_grant(&app, "rev@example.com").await;
    revoke(
        a["refresh_token"].as_str().unwrap().to_owned(),
        "access_token",
    )
    .await;
    assert_eq!(
        app.me_status(a["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(a["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // An access token ends its session too.
    let b = password_grant(&app, "rev@example.com").await;
    revoke(b["access_token"].as_str().unwrap().to_owned(), "").await;
    assert_eq!(
        app.refresh(b["refresh_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Already revoked, unknown, malformed: 200 all the same.
    revoke(
        a["refresh_token"].as_str().unwrap().to_owned(),
        "refresh_token",
    )
    .await;
    revoke("x".repeat(40), "refresh_token").await;
    revoke("a.b.c".to_owned(), "access_token").await;
    // Another session was not touched.
    let c = password_grant(&app, "rev@example.com").await;
    revoke("not.a.token".to_owned(), "").await;
    assert_eq!(
        app.me_status(c["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    // The token parameter is required; a failed client authentication is 401.
    oauth_error(
        form(&app, "/oauth/revoke", &[], None).await,
        400,
        "invalid_request",
    )
    .await;
    oauth_error(
        form(
            &app,
            "/oauth/revoke",
            &[("token", "x")],
            Some(("rs", "wrong secret value")),
        )
        .await,
        401,
        "invalid_client",
    )
    .await;
}

#[tokio::test]
async fn introspection_describes_live_tokens_and_says_only_inactive_for_the_rest() {
    let Some(app) = spawn().await else {
        return;
    };
    app.register("intro@example.com").await;
    let t = password_grant(&app, "intro@example.com").await;
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();
    let facts = introspect(&app, access).await;
    let me: Value = app.get_auth("/auth/me", access).await.json().await.unwrap();
    assert_eq!(facts["active"], true);
    assert_eq!(facts["sub"], me["id"]);
    assert_eq!(facts["token_type"], "Bearer");
    assert_eq!(facts["username"], "intro@example.com");
    assert_eq!(facts["iss"], app.state.auth.config().issuer);
    for field in ["sid", "exp", "iat", "aud", "jti", "roles", "permissions"] {
        assert!(facts.get(field).is_some(), "{field}: {facts}");
    }
    let facts = introspect(&app, refresh).await;
    assert_eq!(facts["active"], true);
    assert_eq!(facts["token_type"], "refresh_token");
    assert_eq!(facts["sub"], me["id"]);

    let inactive = json!({"active": false});
    for junk in ["", "garbage", "a.b.c", "x.y"] {
        if junk.is_empty() {
            oauth_error(
                form(
                    &app,
                    "/oauth/introspect",
                    &[("token", junk)],
                    Some(("rs", RS_SECRET)),
                )
                .await,
                400,
                "invalid_request",
            )
            .await;
        } else {
            assert_eq!(introspect(&app, junk).await, inactive, "{junk}");
        }
    }
    // Expired.
    app.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(introspect(&app, access).await, inactive);
    // A rotated refresh token, then a logged-out session.
    let t = password_grant(&app, "intro@example.com").await;
    let old = t["refresh_token"].as_str().unwrap();
    let rotated: Value = app.refresh(old).await.json().await.unwrap();
    assert_eq!(introspect(&app, old).await, inactive);
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(introspect(&app, new_access).await["active"], true);
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(new_access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(introspect(&app, new_access).await, inactive);
    assert_eq!(
        introspect(&app, rotated["refresh_token"].as_str().unwrap()).await,
        inactive
    );

    // Only configured clients may ask.
    let r = form(&app, "/oauth/introspect", &[("token", access)], None).await;
    oauth_error(r, 401, "invalid_client").await;
    let r = form(
        &app,
        "/oauth/introspect",
        &[("token", access)],
        Some(("rs", "wrong secret value")),
    )
    .await;
    oauth_error(r, 401, "invalid_client").await;
}

#[tokio::test]
async fn discovery_and_jwks_are_cacheable_with_etags_and_built_from_the_issuer() {
    let Some(app) = TestApp::spawn_with("issuer = \"https://auth.example.com/\"\n").await else {
        return;
    };
    let get = |path: &'static str, etag: Option<String>| {
        let app = &app;
        async move {
            let mut r = app.client.get(app.url(path));
            if let Some(tag) = etag {
                r = r.header("if-none-match", tag);
            }
            r.send().await.unwrap()
        }
    };
    let mut documents = Vec::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public, max-age=")
        );
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        documents.push(r.json::<Value>().await.unwrap());
        let again = get(path, Some(etag.clone())).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert_eq!(
            get(path, Some("\"other\"".to_owned())).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(documents[0], documents[1]);
    let d = &documents[0];
    assert_eq!(d["issuer"], "https://auth.example.com/");
    assert_eq!(
        d["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(d["token_endpoint"], "https://auth.example.com/oauth/token");
    assert_eq!(
        d["revocation_endpoint"],
        "https://auth.example.com/oauth/revoke"
    );
    assert_eq!(
        d["introspection_endpoint"],
        "https://auth.example.com/oauth/introspect"
    );
    assert_eq!(
        d["grant_types_supported"],
        json!(["password", "refresh_token", "client_credentials"])
    );
    assert_eq!(d["response_types_supported"], json!([]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
    assert!(
        d["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_secret_basic"))
    );

    let r = get("/.well-known/jwks.json", None).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public, max-age=")
    );
    assert_eq!(
        get("/.well-known/jwks.json", Some(etag)).await.status(),
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn the_token_endpoint_is_rate_limited_by_rate_limits_token() {
    let Some(app) = TestApp::spawn_with("[rate_limits]\ntoken = \"2/1m\"\n").await else {
        return;
    };
    for _ in 0..2 {
        oauth_error(
            form(&app, "/oauth/token", &[("grant_type", "nope")], None).await,
            400,
            "unsupported_grant_type",
        )
        .await;
    }
    let r = form(&app, "/oauth/token", &[("grant_type", "nope")], None).await;
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    oauth_error(r, 429, "temporarily_unavailable").await;
}

/// `GET /oauth/revocations` as the resource server `rs`.
async fn feed(app: &TestApp, since: &str, wait: u64) -> Value {
    let r = app
        .client
        .get(app.url(&format!("/oauth/revocations?since={since}&wait={wait}")))
        .basic_auth("rs", Some(RS_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json().await.unwrap()
}

fn revoked(page: &Value) -> Vec<String> {
    page["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_revocation_feed_tells_another_node_of_a_logout_within_a_second_or_two() {
    let Some(a) = spawn().await else {
        return;
    };
    let b = a.sibling(&clients()).await;
    let first = a.user("feed@example.com").await;
    let second = a.login("feed@example.com").await;
    let start = feed(&b, "", 0).await;
    assert!(revoked(&start).is_empty(), "{start}");
    let cursor = start["cursor"].as_str().unwrap().to_owned();

    // A follower long-polls node B; the user logs out on node A.
    let poll = {
        let (b_url, cursor) = (b.url(""), cursor.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = reqwest::Client::new()
                .get(format!("{b_url}/oauth/revocations?since={cursor}&wait=20"))
                .basic_auth("rs", Some(RS_SECRET))
                .send()
                .await
                .unwrap();
            (r.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged_out = std::time::Instant::now();
    let r = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&first.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (page, waited) = poll.await.unwrap();
    let learned = logged_out.elapsed();
    assert_eq!(revoked(&page), vec![first.session_id.clone()], "{page}");
    assert!(
        waited >= Duration::from_millis(400),
        "it waited for news: {waited:?}"
    );
    assert!(
        learned < Duration::from_secs(2),
        "learned after {learned:?}"
    );

    // Nothing new: an empty wait=0 answer may repeat recent entries, never the live session.
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let again = feed(&b, &cursor, 0).await;
    assert!(!revoked(&again).contains(&second.session_id), "{again}");

    // A password change ends the other sessions; deleting the user ends the rest. Both show.
    let third = a.login("feed@example.com").await;
    let r = a
        .client
        .post(a.url("/auth/password"))
        .bearer_auth(&third.access)
        .json(
            &json!({"current_password": PASSWORD, "new_password": "another staple for the horse"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let page = feed(&b, &cursor, 5).await;
    assert!(revoked(&page).contains(&second.session_id), "{page}");
    assert!(!revoked(&page).contains(&third.session_id), "{page}");
    let cursor = page["cursor"].as_str().unwrap().to_owned();
    let me: Value = a
        .get_auth("/auth/me", &third.access)
        .await
        .json()
        .await
        .unwrap();
    a.state
        .auth
        .delete_user(
            keygate::auth::Actor::Operator,
            me["id"].as_str().unwrap(),
            &keygate::domain::ClientInfo::default(),
        )
        .await
        .unwrap();
    let page = feed(&b, &cursor, 5).await;
    assert!(revoked(&page).contains(&third.session_id), "{page}");

    // From the start of the retained feed, every ended session is there.
    let all = revoked(&feed(&a, "", 0).await);
    for sid in [&first.session_id, &second.session_id, &third.session_id] {
        assert!(all.contains(sid), "{sid} in {all:?}");
    }

    // Only configured clients; cursors must be the feed's.
    let r = b
        .client
        .get(b.url("/oauth/revocations"))
        .send()
        .await
        .unwrap();
    oauth_error(r, 401, "invalid_client").await;
    let r = b
        .client
        .get(b.url("/oauth/revocations?since=yesterday"))
        .basic_auth("rs", Some(RS_SECRET))
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "invalid_request").await;
    // `wait` is 0 to 30 seconds, as documented (Schemathesis found 2^63 taken and clamped).
    for wait in ["31", "9223372036854775808", "-1", "soon"] {
        let r = b
            .client
            .get(b.url(&format!("/oauth/revocations?wait={wait}")))
            .basic_auth("rs", Some(RS_SECRET))
            .send()
            .await
            .unwrap();
        oauth_error(r, 400, "invalid_request").await;
    }
}

/// An introspection as client `id` with `secret`, from `ip` (behind the trusted proxy).
async fn introspect_from(app: &TestApp, ip: &str, id: &str, secret: &str) -> Response {
    app.client
        .post(app.url("/oauth/introspect"))
        .header("x-forwarded-for", ip)
        .header("content-type", "application/x-www-form-urlencoded")
        .basic_auth(id, Some(secret))
        .body("token=nothing")
        .send()
        .await
        .unwrap()
}

/// Wrong client secrets cannot starve logins (issue 27, point 4): a flood of them for a
/// client with an argon2 secret runs at most the failed-login allowance of argon2
/// verifications, one at a time, and is answered 429 after that; logins meanwhile succeed;
/// the failures back the client id off for other addresses, while the resource server's own
/// address, known good, keeps working with the right secret.
#[tokio::test]
async fn wrong_client_secrets_back_off_per_client_and_never_starve_logins() {
    let Some(app) = TestApp::spawn_with(&format!(
        "trusted_proxies = \"127.0.0.1\"\nrate_limits.failed_logins = \"5/15m\"\n\
         rate_limits.login = \"1000/1m\"\n{}",
        clients()
    ))
    .await
    else {
        return;
    };
    app.register("busy@example.com").await;
    let home = "203.0.113.7";
    let r = introspect_from(&app, home, "argon", ARGON_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK, "the resource server's address");

    // 66 concurrent wrong secrets from one address, 66 more from as many addresses, and
    // logins at the same time.
    let flood = (0..132).map(|i| {
        let ip = if i < 66 {
            "198.51.100.1".to_owned()
        } else {
            format!("198.51.101.{i}")
        };
        let app = &app;
        async move {
            introspect_from(app, &ip, "argon", "not the secret at all")
                .await
                .status()
        }
    });
    let logins = (0..4).map(|_| app.login_response("busy@example.com", PASSWORD));
    let (flooded, logged_in) = tokio::join!(join_all(flood), join_all(logins));
    for r in logged_in {
        assert_eq!(r.status(), StatusCode::OK, "a login during the flood");
    }
    let refused = flooded
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let checked = flooded
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(refused + checked, 132, "{flooded:?}");
    assert!(checked <= 5, "{checked} wrong secrets were checked");

    // The client id is in back-off for addresses not known good: even its right secret
    // waits there, so a guess learns nothing.
    let r = introspect_from(&app, "198.51.102.1", "argon", ARGON_SECRET).await;
    oauth_error(r, 429, "temporarily_unavailable").await;
    // The resource server's address goes on, and so does another client.
    for _ in 0..3 {
        let r = introspect_from(&app, home, "argon", ARGON_SECRET).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = introspect_from(&app, "198.51.102.1", "rs", RS_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// The feed's cursor is total (issue 27, point 5): 2 500 revocations written by one statement
/// (one time stamp on SQLite) are paged through, and a logout after them still reaches the
/// follower.
#[tokio::test]
async fn the_feed_pages_through_a_burst_written_by_one_statement_and_goes_on() {
    let Some(app) = spawn().await else {
        return;
    };
    let owner = app.user("burst@example.com").await;
    let copy = |id: &str| {
        format!(
            "insert into sessions (id, user_id, refresh_hash, refresh_expires_at, created_at, \
             last_active_at) select {id}, user_id, refresh_hash, refresh_expires_at, \
             created_at, last_active_at from {{n}}, sessions where id = '{}'",
            owner.session_id
        )
    };
    let sqlite = copy("printf('0190b6e2-8d4c-7a8e-9f3a-%012x', i)").replace(
        "{n}",
        "(with recursive n(i) as (select 1 union all select i + 1 from n where i < 2500) \
         select i from n)",
    );
    let postgres = copy("'0190b6e2-8d4c-7a8e-9f3a-' || lpad(to_hex(i), 12, '0')")
        .replace("{n}", "generate_series(1, 2500) as i");
    assert_eq!(app.sql(&sqlite, &postgres).await, 2500);
    // One statement ends all 2 501 sessions.
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&owner.access)
        .json(&json!({"scope": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A follower pages through the burst, then hears of a later logout.
    let later = app.user("later@example.com").await;
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    let mut logged_out = false;
    for poll in 0..40 {
        let page = feed(&app, &cursor, 0).await;
        seen.extend(revoked(&page));
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if seen.len() >= 2501 && !logged_out {
            let r = app
                .client
                .post(app.url("/auth/logout"))
                .bearer_auth(&later.access)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
            logged_out = true;
        }
        if seen.contains(&later.session_id) {
            assert!(seen.contains(&owner.session_id));
            assert_eq!(
                seen.len(),
                2502,
                "every session of the burst, and the later one"
            );
            return;
        }
        if poll % 4 == 3 {
            // Entries become final once older than the overlap (the database's clock).
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }
    panic!(
        "the follower stalled at {cursor} with {} of 2 501 burst entries{}",
        seen.len(),
        if logged_out {
            " and never heard of the later logout"
        } else {
            ""
        }
    );
}

#[tokio::test]
async fn tokens_from_the_token_endpoint_verify_with_jsonwebtoken_from_the_jwks_alone() {
    for alg in ["EdDSA", "ES256"] {
        let Some(app) =
            TestApp::spawn_with(&format!("{}[signing]\nalgorithm = \"{alg}\"\n", clients())).await
        else {
            return;
        };
        app.register("jwt@example.com").await;
        let user = password_grant(&app, "jwt@example.com").await;
        let r = form(
            &app,
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            Some(("svc", SVC_SECRET)),
        )
        .await;
        let service: Value = r.json().await.unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for token in [&user["access_token"], &service["access_token"]] {
            let token = token.as_str().unwrap();
            let header = jsonwebtoken::decode_header(token).unwrap();
            let jwk = jwks
                .find(header.kid.as_deref().unwrap())
                .expect("the kid is published");
            let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
            let algorithm: jsonwebtoken::Algorithm = alg.parse().unwrap();
            let mut validation = jsonwebtoken::Validation::new(algorithm);
            validation.set_audience(&["keygate"]);
            validation.set_issuer(&[app.state.auth.config().issuer.as_str()]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert!(data.claims["sid"].is_string() && data.claims["jti"].is_string());
        }
    }
}

#[tokio::test]
async fn a_long_poll_of_the_revocation_feed_ends_when_shutdown_begins() {
    let Some(app) = spawn().await else {
        return;
    };
    let first = feed(&app, "", 0).await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let poll = feed(&app, &cursor, 20);
    let drain = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.state.begin_draining();
    };
    let (page, ()) = tokio::join!(poll, drain);
    // Answered at once with what there is, not after 20 s: a follower never holds up a
    // graceful shutdown.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(revoked(&page).is_empty(), "{page}");
    assert!(page["cursor"].is_string());
}
