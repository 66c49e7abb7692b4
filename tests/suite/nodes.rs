//! Several Keygate nodes on one database: one truth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use keygate::App;
use keygate::clock::ManualClock;
use keygate::store::CACHE_TTL;
use keygate_verify::Verifier;
use serde_json::json;

use crate::helpers::{TestApp, TestDb, claims_of, tokens};

#[tokio::test]
async fn a_token_rotated_on_one_node_and_replayed_on_another_after_the_grace_window_is_reuse() {
    let Some(a) = TestApp::spawn().await else {
        return;
    };
    let b = a.sibling("").await;
    let first = a.user("ada@example.com").await;
    let second = tokens(a.refresh(&first.refresh).await.json().await.unwrap());
    // Inside the window node B hands out the same successor node A made.
    let again = tokens(b.refresh(&first.refresh).await.json().await.unwrap());
    assert_eq!(again.refresh, second.refresh);
    a.clock.advance(Duration::from_secs(11));
    assert_eq!(b.refresh(&first.refresh).await.status(), 401);
    assert_eq!(
        a.refresh(&second.refresh).await.status(),
        401,
        "the session is revoked for both"
    );
    assert_eq!(a.me_status(&second.access).await, 401);
}

#[tokio::test]
async fn a_logout_on_one_node_stops_the_access_token_on_the_other_once_the_cache_expires() {
    let Some(a) = TestApp::spawn().await else {
        return;
    };
    let b = a.sibling("").await;
    let t = a.user("ada@example.com").await;
    assert_eq!(b.me_status(&t.access).await, 200);
    let r = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Node B answers from its cache, on the servers' clock, for CACHE_TTL at most.
    assert_eq!(b.me_status(&t.access).await, 200, "B's cached answer");
    a.clock.advance(CACHE_TTL - Duration::from_millis(1));
    assert_eq!(b.me_status(&t.access).await, 200, "still inside CACHE_TTL");
    a.clock.advance(Duration::from_millis(1));
    assert!(refused_promptly(&b, &t.access).await);
}

/// Whether `/auth/me` answers 401 within a loose end-to-end bound of wall-clock time.
async fn refused_promptly(node: &TestApp, access: &str) -> bool {
    let started = Instant::now();
    let status = node.me_status(access).await;
    status == 401 && started.elapsed() < Duration::from_secs(5)
}

#[tokio::test]
async fn a_session_revoked_on_one_node_is_refused_by_the_other() {
    let Some(a) = TestApp::spawn().await else {
        return;
    };
    let b = a.sibling("").await;
    let phone = a.user("ada@example.com").await;
    let laptop = a.login("ada@example.com").await;
    let r = a
        .client
        .delete(a.url(&format!("/auth/sessions/{}", phone.session_id)))
        .bearer_auth(&laptop.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    a.clock.advance(CACHE_TTL);
    assert!(refused_promptly(&b, &phone.access).await);
    assert_eq!(
        b.refresh(&phone.refresh).await.status(),
        401,
        "refresh reads the row itself"
    );
    assert_eq!(b.me_status(&laptop.access).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_on_an_empty_database_agree_on_one_key() {
    let Some(db) = TestDb::fresh().await else {
        return;
    };
    let clock = Arc::new(ManualClock::new());
    // Four nodes, each starting in its own task (on four worker threads), released together.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (config, clock, barrier) =
                (TestApp::config(&db, ""), clock.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                App::build_with_clock(config, clock).await
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for start in join_all(starts).await {
        let app = start.expect("start task").expect("node starts");
        nodes.push(TestApp::serve(app, db.clone(), clock.clone()));
    }
    for other in &nodes[2..] {
        assert_eq!(jwks_of(&nodes[0]).await, jwks_of(other).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let jwks_a = jwks_of(a).await;
    let jwks_b = jwks_of(b).await;
    assert_eq!(jwks_a, jwks_b);
    let keys: serde_json::Value = serde_json::from_str(&jwks_a).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    a.register("ada@example.com").await;
    let from_a = a.login("ada@example.com").await;
    let from_b = b.login("ada@example.com").await;
    assert_eq!(b.me_status(&from_a.access).await, 200);
    assert_eq!(a.me_status(&from_b.access).await, 200);
    let verifier =
        Verifier::from_jwks("EdDSA", &jwks_a, "http://127.0.0.1:8080", &["keygate"]).unwrap();
    let now = claims_of(&from_b.access)["iat"].as_i64().unwrap();
    assert!(
        verifier.verify(&from_a.access, now).is_ok()
            && verifier.verify(&from_b.access, now).is_ok()
    );
}

async fn jwks_of(node: &TestApp) -> String {
    node.client
        .get(node.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn race_over(nodes: &[&TestApp], refresh: &str, n: usize) -> Vec<(u16, serde_json::Value)> {
    let requests = (0..n).map(|i| async move {
        let node = nodes[i % nodes.len()];
        let r = node.refresh(refresh).await;
        let status = r.status().as_u16();
        (
            status,
            r.json::<serde_json::Value>().await.unwrap_or(json!(null)),
        )
    });
    join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_over_two_nodes_without_grace_have_one_winner_and_no_5xx() {
    let Some(a) = TestApp::spawn_with("refresh_reuse_grace = \"0\"").await else {
        return;
    };
    let b = a.sibling("refresh_reuse_grace = \"0\"").await;
    let t = a.user("ada@example.com").await;
    let results = race_over(&[&a, &b], &t.refresh, 40).await;
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    assert!(
        results.iter().all(|(s, _)| *s == 200 || *s == 401),
        "{results:?}"
    );
    let winner = tokens(results.iter().find(|(s, _)| *s == 200).unwrap().1.clone());
    assert_eq!(b.refresh(&winner.refresh).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_over_two_nodes_inside_the_grace_window_all_get_the_same_token() {
    let Some(a) = TestApp::spawn().await else {
        return;
    };
    let b = a.sibling("").await;
    let t = a.user("ada@example.com").await;
    let results = race_over(&[&a, &b], &t.refresh, 40).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let first = &results[0].1["refresh_token"];
    assert!(
        results
            .iter()
            .all(|(_, body)| &body["refresh_token"] == first)
    );
    assert_eq!(b.refresh(first.as_str().unwrap()).await.status(), 200);
}
