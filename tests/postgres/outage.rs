//! Database trouble is an answer, not a crash: Keygate behind a TCP proxy to PostgreSQL that
//! the test cuts and restores.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::helpers::{TestApp, TestDb};
use crate::proxy::Proxy;

/// `postgres://user@host:port/db?…` → (host:port, the URL with `to` as host and port).
fn via(url: &str, to: SocketAddr) -> (SocketAddr, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let upstream: SocketAddr = hostport
        .parse()
        .expect("KEYGATE_TEST_DATABASE_URL with an IP host");
    let at = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    (upstream, format!("{scheme}://{at}{to}{}", &rest[end..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_503_while_the_database_is_unreachable_and_recover_by_themselves() {
    let Some(TestDb::Postgres { url }) = TestDb::fresh().await else {
        return;
    };
    let (upstream, _) = via(&url, "127.0.0.1:1".parse().unwrap());
    let mut proxy = Proxy::start(upstream).await;
    let (_, proxied) = via(&url, proxy.addr);
    let app = TestApp::spawn_on(
        TestDb::Postgres { url: proxied },
        "database_acquire_timeout = \"2s\"",
        std::sync::Arc::new(keygate::clock::ManualClock::new()),
    )
    .await;
    let t = app.user("ada@example.com").await;
    assert_eq!(app.me_status(&t.access).await, 200);

    proxy.cut();
    // Answers cached for at most CACHE_TTL may still be served; after that the database is asked.
    app.clock.advance(keygate::store::CACHE_TTL);
    for path in ["/auth/me", "/readyz"] {
        let started = Instant::now();
        let r = app.get_auth(path, &t.access).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} answered within the acquire timeout"
        );
        assert_eq!(r.status(), 503, "{path}");
        assert!(r.headers().contains_key("retry-after"), "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unavailable");
    }
    let r = app
        .login_response("ada@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the process lives"
    );

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200;
        if ready && app.me_status(&t.access).await == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Keygate did not recover after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.refresh(&t.refresh).await.status(), 200);
}

#[tokio::test]
async fn a_database_on_a_closed_port_fails_start_up_with_a_clear_error() {
    if crate::helpers::service_url(crate::helpers::DATABASE_VAR, "the PostgreSQL suite").is_none() {
        return;
    }
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = keygate::Config::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"postgres://keygate@127.0.0.1:{port}/keygate\"\ndatabase_acquire_timeout = \"1s\""
    ))
    .unwrap();
    let started = Instant::now();
    let err = keygate::App::build(config)
        .await
        .expect_err("no database, no start");
    assert!(started.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(msg.contains("database"), "{msg}");
}
