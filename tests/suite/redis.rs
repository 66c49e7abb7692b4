//! Limits shared through Redis (`KEYGATE_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`), and
//! failing open when Redis is gone.

use std::time::{Duration, Instant};

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

/// The address of the test Redis; `None` (skipped) without `KEYGATE_TEST_REDIS_URL`.
fn redis_upstream() -> Option<(String, std::net::SocketAddr)> {
    let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") else {
        eprintln!("skipped: set KEYGATE_TEST_REDIS_URL to run the Redis tests");
        return None;
    };
    let parsed = url::Url::parse(&url).expect("KEYGATE_TEST_REDIS_URL is a URL");
    let host = parsed
        .host_str()
        .expect("a host")
        .replace("localhost", "127.0.0.1");
    let port = parsed.port().unwrap_or(6379);
    Some((url, format!("{host}:{port}").parse().expect("an IP host")))
}

async fn rate_limits_state(app: &TestApp) -> String {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "Redis never makes a node unready");
    let ready: Value = r.json().await.unwrap();
    ready["rate_limits"].as_str().unwrap_or_default().to_owned()
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
