//! Limits shared through a real Redis (`KEYGATE_TEST_REDIS_URL`): skipped without it outside
//! CI, failed without it in CI. `services_available` counts the tests of this module.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::rate_limits_state;
use crate::helpers::{PASSWORD, REDIS_VAR, TestApp, assert_error, service_url};

/// Configuration for a Redis-backed test with its own key prefix; `None` without Redis.
fn redis_config(extra: &str) -> Option<String> {
    let url = service_url(REDIS_VAR, "the Redis tests")?;
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
    assert_eq!(ready["checks"]["redis"], "ok");
    assert_eq!(ready["status"], "ready");
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

/// The address of the test Redis; `None` (skipped) without `KEYGATE_TEST_REDIS_URL`.
fn redis_upstream() -> Option<(String, std::net::SocketAddr)> {
    let url = service_url(REDIS_VAR, "the Redis tests")?;
    let parsed = url::Url::parse(&url).expect("KEYGATE_TEST_REDIS_URL is a URL");
    let host = parsed
        .host_str()
        .expect("a host")
        .replace("localhost", "127.0.0.1");
    let port = parsed.port().unwrap_or(6379);
    Some((url, format!("{host}:{port}").parse().expect("an IP host")))
}

/// How many keys of `prefix` the real Redis holds.
async fn keys_under(url: &str, prefix: &str) -> usize {
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_mid_run_is_survived_and_recovered_from_by_itself() {
    let Some((url, upstream)) = redis_upstream() else {
        return;
    };
    let mut proxy = crate::proxy::Proxy::start(upstream).await;
    let prefix = format!("kgtest:{}:", uuid::Uuid::new_v4().simple());
    let config = format!(
        "redis_url = \"redis://{}\"\nredis_key_prefix = \"{prefix}\"\n\
         rate_limits.login = \"1000/1m\"",
        proxy.addr
    );
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    app.register("ada@example.com").await;
    let login = || async {
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status()
    };
    assert_eq!(login().await, 200);
    assert_eq!(rate_limits_state(&app).await, "redis");
    assert!(
        keys_under(&url, &prefix).await > 0,
        "limits are kept in Redis"
    );

    // Redis goes away mid-run: logins go on, each within the Redis timeout (500 ms) plus
    // the login's own work; this bound is loose on purpose.
    proxy.cut();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(login().await, 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        rate_limits_state(&app).await.contains("redis unreachable"),
        "readiness says the limits are per node"
    );

    // It comes back: with no restart and no operator, the node uses Redis again.
    let mut conn = ::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let _: i64 = ::redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert_eq!(login().await, 200);
        if rate_limits_state(&app).await == "redis" && keys_under(&url, &prefix).await > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis was not used again after it came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
