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

/// A fresh PostgreSQL schema behind a proxy the test can cut, and Keygate on it (a 2 s acquire
/// timeout, a manual clock, `extra` configuration). `None` when the PostgreSQL suite is off.
async fn proxied_app(extra: &str) -> Option<(Proxy, TestApp)> {
    let Some(TestDb::Postgres { url }) = TestDb::fresh().await else {
        return None;
    };
    let (upstream, _) = via(&url, "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream).await;
    let (_, proxied) = via(&url, proxy.addr);
    let app = TestApp::spawn_on(
        TestDb::Postgres { url: proxied },
        &format!("database_acquire_timeout = \"2s\"\n{extra}"),
        std::sync::Arc::new(keygate::clock::ManualClock::new()),
    )
    .await;
    Some((proxy, app))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_503_while_the_database_is_unreachable_and_recover_by_themselves() {
    let Some((mut proxy, app)) = proxied_app("").await else {
        return;
    };
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

/// The connection cut while transactions are in flight (docs/RELIABILITY.md, part 5): eight
/// clients rotate their refresh tokens back to back, and the proxy drops every database
/// connection under them, mid-transaction. Every answer is a 200 or a 503 (never a 500), and
/// once the database is back every client's last acknowledged token refreshes: a rotation
/// whose commit happened but whose answer was lost is inside the grace window (the clock does
/// not move here), so the token the client still holds gets the successor it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_in_the_middle_of_transactions_loses_nothing_acknowledged() {
    // Eight registrations and back-to-back refreshes from one address: rate limits would
    // answer 429 long before the cut, and this test is about the cut.
    let Some((mut proxy, app)) = proxied_app("rate_limits.enabled = false").await else {
        return;
    };
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(app.user(&format!("client{i}@example.com")).await.refresh);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rotate = |mut token: String| {
        let (app, stop) = (&app, &stop);
        async move {
            let (mut ok, mut unavailable) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = app.refresh(&token).await;
                match r.status().as_u16() {
                    200 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        token = body["refresh_token"].as_str().unwrap().to_owned();
                        ok += 1;
                    }
                    503 => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("a refresh during the cut answered {other}"),
                }
            }
            (token, ok, unavailable)
        }
    };
    let cut = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.restore().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (outcomes, ()) = tokio::join!(
        futures_util::future::join_all(clients.into_iter().map(rotate)),
        cut
    );
    let unavailable: u32 = outcomes.iter().map(|o| o.2).sum();
    assert!(unavailable > 0, "the cut was felt: {outcomes:?}");
    assert!(outcomes.iter().all(|o| o.1 > 0), "every client rotated");
    for (token, _, _) in outcomes {
        let r = app.refresh(&token).await;
        assert_eq!(r.status(), 200, "an acknowledged rotation was lost");
    }
}
