//! Refresh-token families: races, the grace window, reuse detection, lifetimes, session
//! limits, bounded storage and purging.

use std::time::Duration;

use futures_util::future::join_all;
use keygate::store::AuditQuery;
use serde_json::json;

use crate::helpers::{TestApp, tokens};

async fn race(app: &TestApp, refresh: &str, n: usize) -> Vec<(u16, serde_json::Value)> {
    let requests = (0..n).map(|_| async {
        let r = app.refresh(refresh).await;
        let status = r.status().as_u16();
        (
            status,
            r.json::<serde_json::Value>().await.unwrap_or(json!(null)),
        )
    });
    join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_without_grace_let_exactly_one_win_then_revoke_the_session() {
    let Some(app) = TestApp::spawn_with("refresh_reuse_grace = \"0\"").await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let results = race(&app, &t.refresh, 50).await;
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(body["error"], "invalid_refresh_token");
    }
    // The losers presented a rotated token outside any grace window: reuse, session revoked.
    let winner = tokens(winners[0].1.clone());
    assert_eq!(app.refresh(&winner.refresh).await.status(), 401);
    assert_eq!(app.me_status(&winner.access).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_inside_the_grace_window_all_get_the_same_token() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let results = race(&app, &t.refresh, 50).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let first = results[0].1["refresh_token"].as_str().unwrap().to_owned();
    assert!(
        results
            .iter()
            .all(|(_, b)| b["refresh_token"] == first.as_str())
    );
    assert_ne!(first, t.refresh);
    // Every access token is fresh and valid; the one successor refreshes normally.
    assert_eq!(
        app.me_status(results[49].1["access_token"].as_str().unwrap())
            .await,
        200
    );
    let next = app.refresh(&first).await;
    assert_eq!(next.status(), 200);
    assert_eq!(
        app.state
            .auth
            .store()
            .table_counts()
            .await
            .unwrap()
            .sessions,
        1
    );
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_that_session_only_and_is_audited() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let victim = app.user("ada@example.com").await;
    let laptop = app.login("ada@example.com").await;
    let current = tokens(app.refresh(&victim.refresh).await.json().await.unwrap());
    app.clock.advance(Duration::from_secs(11));
    let r = app
        .client
        .post(app.url("/auth/refresh"))
        .header("user-agent", "thief/1.0")
        .json(&json!({"refresh_token": victim.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.refresh(&current.refresh).await.status(), 401);
    assert_eq!(app.me_status(&current.access).await, 401);
    assert_eq!(
        app.me_status(&laptop.access).await,
        200,
        "other sessions live on"
    );
    assert_eq!(app.refresh(&laptop.refresh).await.status(), 200);

    let events = app
        .state
        .auth
        .store()
        .audit_events(&AuditQuery {
            event: Some("refresh_token_reused".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.session_id.as_deref(), Some(victim.session_id.as_str()));
    assert_eq!(
        e.user_id.as_deref(),
        crate::helpers::claims_of(&victim.access)["sub"].as_str()
    );
    assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.user_agent.as_deref(), Some("thief/1.0"));
    assert_eq!(e.outcome, "failure");
}

#[tokio::test]
async fn storage_does_not_grow_with_the_number_of_refreshes() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let mut t = app.user("ada@example.com").await;
    let store = app.state.auth.store();
    let before = store.table_counts().await.unwrap();
    for _ in 0..300 {
        // One refresh a second stays inside the default 60/1m per-IP limit.
        app.clock.advance(Duration::from_secs(1));
        t = tokens(app.refresh(&t.refresh).await.json().await.unwrap());
    }
    let after = store.table_counts().await.unwrap();
    assert_eq!(
        after.sessions, 1,
        "no row per refresh: the session row is updated in place"
    );
    assert_eq!(after.users, before.users);
    // The audit log records each refresh (it is a log, bounded by `audit.retention`).
    assert_eq!(after.audit_events, before.audit_events + 300);
    assert_eq!(app.me_status(&t.access).await, 200);
}

#[tokio::test]
async fn the_least_recently_used_session_ends_beyond_the_limit() {
    let Some(app) = TestApp::spawn_with("max_sessions_per_user = 2").await else {
        return;
    };
    let a = app.user("ada@example.com").await;
    app.clock.advance(Duration::from_secs(1));
    let b = app.login("ada@example.com").await;
    app.clock.advance(Duration::from_secs(1));
    // Using `a` makes `b` the least recently used.
    let a = tokens(app.refresh(&a.refresh).await.json().await.unwrap());
    app.clock.advance(Duration::from_secs(1));
    // `b` is known live (and cached as such) until the next login ends it: at once.
    assert_eq!(app.me_status(&b.access).await, 200);
    let c = app.login("ada@example.com").await;
    assert_eq!(app.me_status(&b.access).await, 401);
    assert_eq!(app.refresh(&b.refresh).await.status(), 401);
    assert_eq!(app.me_status(&a.access).await, 200);
    assert_eq!(app.me_status(&c.access).await, 200);
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_refreshes() {
    let Some(app) =
        TestApp::spawn_with("refresh_ttl = \"1h\"\nsession_max_lifetime = \"2h\"").await
    else {
        return;
    };
    let mut t = app.user("ada@example.com").await;
    assert_eq!(t.body["refresh_expires_in"], 3600);
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(30 * 60));
        let r = app.refresh(&t.refresh).await;
        assert_eq!(r.status(), 200);
        t = tokens(r.json().await.unwrap());
    }
    // 90 minutes in: the new token would live an hour but the session ends in 30 minutes.
    assert_eq!(t.body["refresh_expires_in"], 30 * 60);
    app.clock.advance(Duration::from_secs(30 * 60 + 1));
    assert_eq!(app.refresh(&t.refresh).await.status(), 401);
    assert_eq!(
        app.me_status(&t.access).await,
        401,
        "the access token's session has ended"
    );
}

#[tokio::test]
async fn session_ips_can_be_truncated() {
    let Some(app) = TestApp::spawn_with("truncate_session_ip = true").await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let r = app.get_auth("/auth/sessions", &t.access).await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sessions"][0]["ip"], "127.0.0.0/24");
}

#[tokio::test]
async fn purge_deletes_ended_sessions_and_old_audit_events_and_keeps_live_ones() {
    let Some(app) = TestApp::spawn_with("refresh_ttl = \"2d\"\naudit.retention = \"3d\"").await
    else {
        return;
    };
    let store = app.state.auth.store();
    let live = app.user("ada@example.com").await;
    let logged_out = app.login("ada@example.com").await;
    app.client
        .post(app.url("/auth/logout"))
        .bearer_auth(&logged_out.access)
        .send()
        .await
        .unwrap();
    let _expires = app.login("ada@example.com").await;
    let rotated = tokens(app.refresh(&live.refresh).await.json().await.unwrap());

    let before = store.table_counts().await.unwrap();
    assert_eq!(before.sessions, 3);
    assert!(before.audit_events >= 4, "{before:?}");
    // Nothing has ended long enough ago yet; only the sealed successor's window is over.
    app.clock.advance(Duration::from_secs(60));
    let first = app.state.auth.purge().await.unwrap();
    assert_eq!(
        (first.sessions, first.sealed_successors, first.audit_events),
        (0, 1, 0)
    );

    // A day and a bit later the logged-out session goes; the others are still live.
    app.clock.advance(Duration::from_secs(25 * 3600));
    let live = tokens(app.refresh(&rotated.refresh).await.json().await.unwrap());
    assert_eq!(app.state.auth.purge().await.unwrap().sessions, 1);
    // Four days in: the never-refreshed session expired (2 d) more than a day ago, and the
    // first audit events are past the 3-day retention.
    let mut live = live;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(24 * 3600));
        live = tokens(app.refresh(&live.refresh).await.json().await.unwrap());
    }
    let last = app.state.auth.purge().await.unwrap();
    assert_eq!(last.sessions, 1);
    assert!(last.audit_events >= 4, "{last:?}");
    let after = store.table_counts().await.unwrap();
    assert_eq!(after.sessions, 1, "{before:?} -> {after:?}");
    assert_eq!(
        app.me_status(&live.access).await,
        200,
        "the live session survives every purge"
    );
}
