//! Logout scopes and idempotency.

use serde_json::json;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn logout_local_ends_only_this_session() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let a = app.user("ada@example.com").await;
    let b = app.login("ada@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&a.access).await, 401);
    assert_eq!(app.refresh(&a.refresh).await.status(), 401);
    assert_eq!(app.me_status(&b.access).await, 200);
}

#[tokio::test]
async fn logout_global_ends_every_session_of_the_user() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let a = app.user("ada@example.com").await;
    let b = app.login("ada@example.com").await;
    let other_user = app.user("bob@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&a.access)
        .json(&json!({"scope": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&a.access).await, 401);
    assert_eq!(app.me_status(&b.access).await, 401);
    assert_eq!(app.me_status(&other_user.access).await, 200);
}

#[tokio::test]
async fn logout_others_keeps_only_the_current_session() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let a = app.user("ada@example.com").await;
    let b = app.login("ada@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&a.access)
        .json(&json!({"scope": "others"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&a.access).await, 200);
    assert_eq!(app.me_status(&b.access).await, 401);
}

#[tokio::test]
async fn logout_is_idempotent() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url("/auth/logout"))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let r = app
            .post("/auth/logout", &json!({"refresh_token": t.refresh}))
            .await;
        assert_eq!(r.status(), 204);
    }
}

#[tokio::test]
async fn logout_with_only_the_refresh_token_ends_its_session() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let r = app
        .post("/auth/logout", &json!({"refresh_token": t.refresh}))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&t.access).await, 401);
    assert_eq!(app.refresh(&t.refresh).await.status(), 401);
}

#[tokio::test]
async fn logout_without_credentials_or_with_garbage_is_401() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_token").await;
    let r = app
        .post("/auth/logout", &json!({"refresh_token": "garbage"}))
        .await;
    assert_error(r, 401, "invalid_refresh_token").await;
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn an_unknown_scope_is_a_validation_error_naming_the_field() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    for scope in ["everything", "GLOBAL", ""] {
        let r = app
            .client
            .post(app.url("/auth/logout"))
            .bearer_auth(&t.access)
            .json(&json!({"scope": scope}))
            .send()
            .await
            .unwrap();
        let body = assert_error(r, 422, "validation_failed").await;
        assert!(body["fields"]["scope"].is_string(), "{body}");
    }
    assert_eq!(app.me_status(&t.access).await, 200, "nothing ended");
    // A scope of the wrong JSON type is a body of the wrong shape, as for every field.
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&t.access)
        .json(&json!({"scope": 3}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
}

/// Logs out with `scope` using only `body` (and the bearer token, when given).
async fn logout(app: &TestApp, bearer: Option<&str>, body: serde_json::Value) -> u16 {
    let mut req = app.client.post(app.url("/auth/logout")).json(&body);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_stale_credential_never_ends_the_users_other_sessions() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let old = app.user("ada@example.com").await;
    let phone = app.login("ada@example.com").await;
    // The bearer token of a session that has ended (still inside its lifetime).
    assert_eq!(logout(&app, Some(&old.access), json!({})).await, 204);
    for scope in ["global", "others"] {
        assert_eq!(
            logout(&app, Some(&old.access), json!({"scope": scope})).await,
            204
        );
        assert_eq!(app.me_status(&phone.access).await, 200, "{scope}");
        // Its refresh token, alone, ends nothing either.
        assert_eq!(
            logout(
                &app,
                None,
                json!({"scope": scope, "refresh_token": old.refresh})
            )
            .await,
            204
        );
        assert_eq!(app.me_status(&phone.access).await, 200, "{scope}");
    }

    // A rotated refresh token past its grace window.
    let laptop = app.login("ada@example.com").await;
    let r = app.refresh(&laptop.refresh).await;
    assert_eq!(r.status(), 200);
    let rotated = crate::helpers::tokens(r.json().await.unwrap());
    app.clock.advance(std::time::Duration::from_secs(11));
    for scope in ["global", "others"] {
        assert_eq!(
            logout(
                &app,
                None,
                json!({"scope": scope, "refresh_token": laptop.refresh})
            )
            .await,
            204
        );
        assert_eq!(app.me_status(&phone.access).await, 200, "{scope}");
        assert_eq!(app.me_status(&rotated.access).await, 200, "{scope}");
    }
    // An unknown but well-formed refresh token: 204, nothing ended.
    // (The last character holds padding bits: change the one before it.)
    let mut unknown: Vec<char> = rotated.refresh.chars().collect();
    let at = unknown.len() - 2;
    unknown[at] = if unknown[at] == 'A' { 'B' } else { 'A' };
    let unknown: String = unknown.into_iter().collect();
    assert_eq!(
        logout(
            &app,
            None,
            json!({"scope": "global", "refresh_token": unknown})
        )
        .await,
        204
    );
    assert_eq!(app.me_status(&phone.access).await, 200);

    // The current refresh token does end everything.
    assert_eq!(
        logout(
            &app,
            None,
            json!({"scope": "global", "refresh_token": rotated.refresh})
        )
        .await,
        204
    );
    assert_eq!(app.me_status(&phone.access).await, 401);
    assert_eq!(app.me_status(&rotated.access).await, 401);
}

#[tokio::test]
async fn the_previous_refresh_token_inside_its_grace_window_can_log_out_everywhere() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let laptop = app.user("ada@example.com").await;
    let phone = app.login("ada@example.com").await;
    assert_eq!(app.refresh(&laptop.refresh).await.status(), 200);
    app.clock.advance(std::time::Duration::from_secs(5));
    assert_eq!(
        logout(
            &app,
            None,
            json!({"scope": "others", "refresh_token": laptop.refresh})
        )
        .await,
        204
    );
    assert_eq!(app.me_status(&phone.access).await, 401);
    assert_eq!(
        app.me_status(&laptop.access).await,
        200,
        "its own session stays"
    );
}
