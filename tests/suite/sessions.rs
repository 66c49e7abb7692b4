//! Listing and ending sessions.

use serde_json::Value;

use crate::helpers::{TestApp, assert_error};

async fn list(app: &TestApp, access: &str) -> Vec<Value> {
    let r = app.get_auth("/auth/sessions", access).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sessions_are_listed_newest_activity_first_with_the_current_one_marked() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let first = app.user("ada@example.com").await;
    app.clock.advance(std::time::Duration::from_secs(5));
    let second = app.login("ada@example.com").await;
    let sessions = list(&app, &first.access).await;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["id"], second.session_id.as_str());
    assert_eq!(sessions[1]["id"], first.session_id.as_str());
    assert_eq!(sessions[1]["current"], true);
    assert_eq!(sessions[0]["current"], false);
    for s in &sessions {
        assert_eq!(s["ip"], "127.0.0.1");
        for key in ["created_at", "last_active_at", "expires_at"] {
            assert!(s[key].as_str().unwrap().ends_with('Z'), "{key}");
        }
        assert!(s.get("user_agent").is_some());
    }
}

#[tokio::test]
async fn deleting_a_session_ends_it() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let a = app.user("ada@example.com").await;
    let b = app.login("ada@example.com").await;
    let r = app
        .client
        .delete(app.url(&format!("/auth/sessions/{}", b.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&b.access).await, 401);
    assert_eq!(app.refresh(&b.refresh).await.status(), 401);
    assert_eq!(list(&app, &a.access).await.len(), 1);
}

#[tokio::test]
async fn another_users_session_is_not_found() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let ada = app.user("ada@example.com").await;
    let bob = app.user("bob@example.com").await;
    for id in [
        bob.session_id.as_str(),
        "not-a-uuid",
        "01900000-0000-7000-8000-000000000000",
    ] {
        let r = app
            .client
            .delete(app.url(&format!("/auth/sessions/{id}")))
            .bearer_auth(&ada.access)
            .send()
            .await
            .unwrap();
        assert_error(r, 404, "not_found").await;
    }
    assert_eq!(app.me_status(&bob.access).await, 200);
}
