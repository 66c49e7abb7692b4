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
    let r = app
        .post("/auth/logout", &json!({"scope": "everything"}))
        .await;
    assert_error(r, 400, "bad_request").await;
}
