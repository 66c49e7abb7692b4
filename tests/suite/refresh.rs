//! Refresh: rotation, the grace window, reuse, garbage, expiry.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, assert_error, tokens};

#[tokio::test]
async fn refresh_rotates_the_token_and_keeps_the_session() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let first = app.user("ada@example.com").await;
    let r = app.refresh(&first.refresh).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let second = tokens(r.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(app.me_status(&second.access).await, 200);
    let third = tokens(app.refresh(&second.refresh).await.json().await.unwrap());
    assert_eq!(third.session_id, first.session_id);
}

#[tokio::test]
async fn a_rotated_token_stops_working_and_revokes_the_session() {
    let Some(app) = TestApp::spawn_with("refresh_reuse_grace = \"0\"").await else {
        return;
    };
    let first = app.user("ada@example.com").await;
    let second = tokens(app.refresh(&first.refresh).await.json().await.unwrap());
    let r = app.refresh(&first.refresh).await;
    assert_error(r, 401, "invalid_refresh_token").await;
    // Reuse is theft: the whole session ends, including the thief's or victim's newer tokens.
    assert_eq!(app.refresh(&second.refresh).await.status(), 401);
    assert_eq!(app.me_status(&second.access).await, 401);
}

#[tokio::test]
async fn a_retry_inside_the_grace_window_gets_the_same_successor() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let first = app.user("ada@example.com").await;
    let a = tokens(app.refresh(&first.refresh).await.json().await.unwrap());
    app.clock.advance(Duration::from_secs(9));
    let r = app.refresh(&first.refresh).await;
    assert_eq!(r.status(), 200);
    let b = tokens(r.json().await.unwrap());
    assert_eq!(a.refresh, b.refresh, "the same successor");
    assert_eq!(app.me_status(&b.access).await, 200);
    // The successor is still the one live token and rotates normally.
    assert_eq!(app.refresh(&b.refresh).await.status(), 200);
}

#[tokio::test]
async fn the_previous_token_after_the_grace_window_is_reuse() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let first = app.user("ada@example.com").await;
    let second = tokens(app.refresh(&first.refresh).await.json().await.unwrap());
    app.clock.advance(Duration::from_secs(11));
    assert_eq!(app.refresh(&first.refresh).await.status(), 401);
    assert_eq!(app.refresh(&second.refresh).await.status(), 401);
}

#[tokio::test]
async fn garbage_and_forged_refresh_tokens_are_401_and_revoke_nothing() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let (id, _) = t.refresh.split_once('.').unwrap();
    let forged = format!("{id}.{}", "A".repeat(43));
    for bad in [
        "",
        "garbage",
        "a.b",
        &forged,
        &"x".repeat(10_000),
        "00000000000000000000000000000000.AAAA",
    ] {
        let r = app.refresh(bad).await;
        assert_error(r, 401, "invalid_refresh_token").await;
    }
    // A right id with a wrong secret proves nothing: the session lives on.
    assert_eq!(app.me_status(&t.access).await, 200);
    assert_eq!(app.refresh(&t.refresh).await.status(), 200);
    let r = app.post("/auth/refresh", &json!({})).await;
    assert_error(r, 422, "validation_failed").await;
    let r = app
        .post("/auth/refresh", &json!({"refresh_token": 42}))
        .await;
    assert_error(r, 400, "bad_request").await;
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let Some(app) = TestApp::spawn_with("refresh_ttl = \"1h\"").await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    assert_eq!(t.body["refresh_expires_in"], 3600);
    app.clock.advance(Duration::from_secs(3601));
    assert_error(app.refresh(&t.refresh).await, 401, "invalid_refresh_token").await;
}

#[tokio::test]
async fn a_refresh_after_logout_is_refused() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    app.client
        .post(app.url("/auth/logout"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_error(app.refresh(&t.refresh).await, 401, "invalid_refresh_token").await;
}
