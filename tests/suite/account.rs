//! Register, login, /auth/me, password change.

use keygate::domain::UserId;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_error};

#[tokio::test]
async fn register_returns_201_and_the_user_without_a_hash() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "  Ada@Example.com ", "password": PASSWORD, "name": "Ada", "username": "Ada_L"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let user: serde_json::Value = r.json().await.unwrap();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["username"], "ada_l");
    assert_eq!(user["name"], "Ada");
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["permissions"], json!([]));
    assert_eq!(user["is_active"], true);
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(UserId::parse(user["id"].as_str().unwrap()).is_some());
    let text = user.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );
}

#[tokio::test]
async fn register_with_a_taken_email_or_username_is_409() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.post(
        "/auth/register",
        &json!({"email": "ada@example.com", "password": PASSWORD, "username": "ada"}),
    )
    .await;
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "ADA@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 409, "email_taken").await;
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "bob@example.com", "password": PASSWORD, "username": "ADA"}),
        )
        .await;
    assert_error(r, 409, "username_taken").await;
}

#[tokio::test]
async fn register_collects_every_field_error() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "not-an-email", "password": "short", "username": "x"}),
        )
        .await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert_eq!(body["fields"]["email"], "not a valid email address");
    assert!(
        body["fields"]["password"]
            .as_str()
            .unwrap()
            .contains("at least 8")
    );
    assert!(body["fields"]["username"].is_string());
    let r = app.post("/auth/register", &json!({})).await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert_eq!(body["fields"]["email"], "is required");
    assert_eq!(body["fields"]["password"], "is required");
    let long = "x".repeat(257);
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "a@example.com", "password": long}),
        )
        .await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(
        body["fields"]["password"]
            .as_str()
            .unwrap()
            .contains("at most 256")
    );
}

/// `len` characters, none repeating a pattern (the strength check refuses repetitive ones),
/// drawn from `alphabet`.
fn varied_password(len: usize, alphabet: &[char]) -> String {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            // xorshift64: deterministic and without patterns a strength check would see.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize]
        })
        .collect()
}

#[tokio::test]
async fn passwords_of_256_characters_are_accepted_whatever_their_bytes() {
    let Some(app) = TestApp::spawn_with("rate_limits.register = \"100/1m\"").await else {
        return;
    };
    let ascii: Vec<char> = ('!'..='~').collect();
    // Two-byte (Cyrillic), three-byte (CJK) and four-byte (emoji) characters: the limit
    // counts characters, so 256 of them (up to 1 KiB) are accepted.
    let cyrillic: Vec<char> = ('а'..='я').collect();
    let cjk: Vec<char> = ('\u{4e00}'..='\u{4e80}').collect();
    let emoji: Vec<char> = ('\u{1f600}'..='\u{1f64f}').collect();
    for (i, alphabet) in [ascii, cyrillic, cjk, emoji].iter().enumerate() {
        let password = varied_password(256, alphabet);
        assert_eq!(password.chars().count(), 256);
        let email = format!("user{i}@example.com");
        let r = app
            .post(
                "/auth/register",
                &json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(r.status(), 201, "{i}: {}", r.text().await.unwrap());
        let r = app.login_response(&email, &password).await;
        assert_eq!(r.status(), 200, "{i}");
        // One character more is refused, by characters, not bytes.
        let longer = varied_password(257, alphabet);
        let r = app
            .post(
                "/auth/register",
                &json!({"email": format!("other{i}@example.com"), "password": longer}),
            )
            .await;
        let body = assert_error(r, 422, "validation_failed").await;
        assert!(
            body["fields"]["password"]
                .as_str()
                .unwrap()
                .contains("at most 256")
        );
    }
}

#[tokio::test]
async fn register_is_forbidden_when_registration_is_closed() {
    let Some(app) = TestApp::spawn_with("registration = \"closed\"").await else {
        return;
    };
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 403, "forbidden").await;
}

#[tokio::test]
async fn login_returns_the_token_response() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let r = app.login_response("ada@example.com", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 30 * 24 * 3600);
    assert!(body["access_token"].as_str().unwrap().split('.').count() == 3);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43 + 33);
    assert!(body["session_id"].is_string());
}

#[tokio::test]
async fn look_alike_and_equivalent_emails_cannot_register_beside_an_address() {
    let Some(app) = TestApp::spawn_with("rate_limits.register = \"100/1m\"").await else {
        return;
    };
    let user = app.register("admin@example.com").await;
    assert_eq!(user["email"], "admin@example.com");
    // A Cyrillic а in front of Latin letters: refused, it would look like the admin.
    for look_alike in ["\u{430}dmin@example.com", "admin@ex\u{430}mple.com"] {
        let r = app
            .post(
                "/auth/register",
                &json!({"email": look_alike, "password": PASSWORD}),
            )
            .await;
        let e = assert_error(r, 422, "validation_failed").await;
        assert!(e["fields"]["email"].as_str().unwrap().contains("alphabets"));
    }
    // Full-width letters and case: the same address.
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "ＡＤＭＩＮ@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 409, "email_taken").await;
    // An internationalised domain is stored as IDNA ASCII and found in either form.
    let user = app.register("ada@Bücher.example").await;
    assert_eq!(user["email"], "ada@xn--bcher-kva.example");
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "ada@xn--bcher-kva.example", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 409, "email_taken").await;
    for login in [
        "ada@bücher.example",
        "ADA@XN--BCHER-KVA.EXAMPLE",
        "ａｄｍｉｎ@example.com",
    ] {
        let r = app.login_response(login, PASSWORD).await;
        assert_eq!(r.status(), 200, "{login}");
    }
    // Full case folding: ß and ss are one address.
    app.register("strasse@example.com").await;
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "STRAßE@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 409, "email_taken").await;
}

#[tokio::test]
async fn login_accepts_the_username_and_any_email_case() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.post(
        "/auth/register",
        &json!({"email": "ada@example.com", "password": PASSWORD, "username": "ada"}),
    )
    .await;
    let r = app
        .post(
            "/auth/login",
            &json!({"username": "ADA", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            "/auth/login",
            &json!({"email": "ada", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app.login_response(" ADA@EXAMPLE.COM ", PASSWORD).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn wrong_password_and_unknown_account_get_the_same_401() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    let wrong = app
        .login_response("ada@example.com", "wrong password!")
        .await;
    let wrong_status = wrong.status();
    let wrong: serde_json::Value = wrong.json().await.unwrap();
    let unknown = app
        .login_response("nobody@example.com", "wrong password!")
        .await;
    assert_eq!(wrong_status, 401);
    assert_eq!(unknown.status(), 401);
    let unknown: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_credentials");
}

#[tokio::test]
async fn login_with_an_overlong_password_is_422() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app
        .login_response("ada@example.com", &"x".repeat(257))
        .await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["password"].is_string());
    let r = app
        .post("/auth/login", &json!({"email": "ada@example.com"}))
        .await;
    assert_error(r, 422, "validation_failed").await;
}

#[tokio::test]
async fn a_disabled_account_is_403_only_after_the_right_password() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let user = app.register("ada@example.com").await;
    let id = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    app.state
        .auth
        .store()
        .set_user_active(id, false, app.state.auth.now())
        .await
        .unwrap();
    let r = app
        .login_response("ada@example.com", "wrong password!")
        .await;
    assert_error(r, 401, "invalid_credentials").await;
    let r = app.login_response("ada@example.com", PASSWORD).await;
    assert_error(r, 403, "account_disabled").await;
}

#[tokio::test]
async fn me_returns_the_caller() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let r = app.get_auth("/auth/me", &t.access).await;
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["id"], crate::helpers::claims_of(&t.access)["sub"]);
}

#[tokio::test]
async fn patch_me_changes_and_clears_the_profile() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    app.register("bob@example.com").await;
    let patch = |body: serde_json::Value| {
        app.client
            .patch(app.url("/auth/me"))
            .bearer_auth(&t.access)
            .json(&body)
            .send()
    };
    let r = patch(json!({"name": "Ada Lovelace", "username": "countess"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["name"], "Ada Lovelace");
    assert_eq!(me["username"], "countess");
    let r = patch(json!({"name": null})).await.unwrap();
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(me["name"], serde_json::Value::Null);
    assert_eq!(me["username"], "countess", "absent fields are left alone");
    let r = patch(json!({"username": "no way!"})).await.unwrap();
    assert_error(r, 422, "validation_failed").await;
    // Another user's username.
    app.client
        .patch(app.url("/auth/me"))
        .bearer_auth(&app.login("bob@example.com").await.access)
        .json(&json!({"username": "bobby"}))
        .send()
        .await
        .unwrap();
    let r = patch(json!({"username": "Bobby"})).await.unwrap();
    assert_error(r, 409, "username_taken").await;
    let r = app
        .client
        .patch(app.url("/auth/me"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn password_change_needs_the_current_password_and_ends_other_sessions() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let here = app.user("ada@example.com").await;
    let elsewhere = app.login("ada@example.com").await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/auth/password"))
            .bearer_auth(&here.access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let r = change("not my password", "a brand new passphrase")
        .await
        .unwrap();
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["current_password"].is_string());
    let r = change(PASSWORD, "short").await.unwrap();
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["new_password"].is_string());

    let r = change(PASSWORD, "a brand new passphrase").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.me_status(&here.access).await,
        200,
        "the current session stays"
    );
    assert_eq!(
        app.me_status(&elsewhere.access).await,
        401,
        "other sessions end"
    );
    assert_eq!(app.refresh(&elsewhere.refresh).await.status(), 401);
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login_response("ada@example.com", "a brand new passphrase")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_hash_with_old_argon2_parameters_is_upgraded_at_the_next_login() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let user = app.register("ada@example.com").await;
    let id = UserId::parse(user["id"].as_str().unwrap()).unwrap();
    let store = app.state.auth.store();
    let before = store.password_hash(id).await.unwrap().unwrap();
    assert!(before.phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let stronger = app
        .sibling("password.memory_kib = 24576\npassword.iterations = 3")
        .await;
    assert_eq!(
        stronger
            .login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    let after = store.password_hash(id).await.unwrap().unwrap();
    assert!(
        after.phc().starts_with("$argon2id$v=19$m=24576,t=3,p=1$"),
        "upgraded"
    );
    // The old node still verifies the new hash (argon2 reads the parameters from the hash).
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
}
