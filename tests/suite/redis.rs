//! Rate limits and Redis: failing open to memory when Redis is unreachable or silent (these
//! need no Redis), and, in `live`, limits shared through a real Redis
//! (`KEYGATE_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`) that goes away and comes back.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_error};

mod live;

/// What `/readyz` says of the rate limits' store.
pub(super) async fn rate_limits_state(app: &TestApp) -> String {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "Redis never makes a node unready");
    let ready: Value = r.json().await.unwrap();
    ready["rate_limits"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_to_memory_and_says_so() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!("redis_url = \"redis://127.0.0.1:{port}\"\nrate_limits.login = \"2/1m\"");
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    app.register("ada@example.com").await;
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200,
        "logins go on"
    );
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // The node's own memory still limits.
    assert_error(
        app.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "Redis never makes a node unready");
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["redis"], "down", "{ready}");
    assert!(
        ready["rate_limits"]
            .as_str()
            .unwrap()
            .contains("redis unreachable"),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_accepts_but_never_answers_costs_at_most_its_timeout() {
    // A peer that takes every connection and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = format!("redis_url = \"redis://{addr}\"\nrate_limits.login = \"3/1m\"");
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    let started = Instant::now();
    app.register("ada@example.com").await;
    let logins = (0..3).map(|_| app.login_response("ada@example.com", PASSWORD));
    for r in futures_util::future::join_all(logins).await {
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a silent Redis held requests for {:?}",
        started.elapsed()
    );
    // The node's own memory limits meanwhile.
    assert_error(
        app.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    let started = Instant::now();
    assert!(rate_limits_state(&app).await.contains("redis unreachable"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readiness answers in time"
    );
    holder.abort();
}
