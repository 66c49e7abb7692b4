//! Limits shared through Redis (`KEYGATE_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`), and
//! failing open when Redis is gone.

use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, assert_error};

/// Configuration for a Redis-backed test with its own key prefix; `None` without Redis.
fn redis_config(extra: &str) -> Option<String> {
    let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("skipped: set KEYGATE_TEST_REDIS_URL to run the Redis tests");
        return None;
    };
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    Some(format!(
        "redis_url = \"{url}\"\nredis_key_prefix = \"kgtest:{prefix}:\"\n{extra}"
    ))
}

#[tokio::test]
async fn two_nodes_with_redis_enforce_one_login_budget() {
    let Some(config) = redis_config("rate_limits.login = \"4/1m\"") else {
        return;
    };
    let Some(a) = TestApp::spawn_with(&config).await else {
        return;
    };
    let b = a.sibling(&config).await;
    a.register("ada@example.com").await;
    for node in [&a, &b, &a, &b] {
        assert_eq!(
            node.login_response("ada@example.com", PASSWORD)
                .await
                .status(),
            200
        );
    }
    assert_error(
        a.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    assert_error(
        b.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    let ready: Value = a
        .client
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["rate_limits"], "redis");
}

#[tokio::test]
async fn failed_logins_on_one_node_count_on_the_other() {
    let Some(config) = redis_config("rate_limits.failed_logins = \"2/15m\"") else {
        return;
    };
    let Some(a) = TestApp::spawn_with(&config).await else {
        return;
    };
    let b = a.sibling(&config).await;
    a.register("ada@example.com").await;
    assert_eq!(
        a.login_response("ada@example.com", "wrong password!")
            .await
            .status(),
        401
    );
    assert_eq!(
        b.login_response("ada@example.com", "wrong password!")
            .await
            .status(),
        401
    );
    assert_error(
        a.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    assert_error(
        b.login_response("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_to_memory_and_says_so() {
    if std::env::var("KEYGATE_TEST_REDIS_URL").is_err() {
        eprintln!("skipped: set KEYGATE_TEST_REDIS_URL to run the Redis tests");
        return;
    }
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
    assert!(
        ready["rate_limits"]
            .as_str()
            .unwrap()
            .contains("redis unreachable"),
        "{ready}"
    );
}
