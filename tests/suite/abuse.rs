//! Abuse resistance: per-IP limits, lockout-free brute-force back-off, client IPs behind
//! proxies, the password policy, and hard limits on what a client controls.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use keygate::store::AuditQuery;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, assert_error};

async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn logins_beyond_the_per_ip_rate_get_429_with_retry_after_and_are_audited() {
    let Some(app) = TestApp::spawn_with("rate_limits.login = \"3/1m\"").await else {
        return;
    };
    app.register("ada@example.com").await;
    for _ in 0..3 {
        assert_eq!(
            app.login_response("ada@example.com", PASSWORD)
                .await
                .status(),
            200
        );
    }
    let r = app.login_response("ada@example.com", PASSWORD).await;
    assert!((1..=20).contains(&retry_after(&r)), "one cell every 20 s");
    assert_error(r, 429, "rate_limited").await;
    let audited = app
        .state
        .auth
        .store()
        .audit_events(&AuditQuery {
            event: Some("rate_limited".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].reason.as_deref(), Some("login"));
    assert_eq!(audited[0].ip.as_deref(), Some("127.0.0.1"));
    app.clock.advance(Duration::from_secs(20));
    assert_eq!(
        app.login_response("ada@example.com", PASSWORD)
            .await
            .status(),
        200,
        "refilled"
    );
}

#[tokio::test]
async fn register_refresh_and_password_change_have_their_own_limits() {
    let Some(app) = TestApp::spawn_with(
        "rate_limits.register = \"2/1m\"\nrate_limits.refresh = \"2/1m\"\nrate_limits.password = \"1/1m\"",
    )
    .await
    else {
        return;
    };
    let t = app.user("ada@example.com").await;
    app.register("bob@example.com").await;
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "eve@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 429, "rate_limited").await;

    let t2: Value = app.refresh(&t.refresh).await.json().await.unwrap();
    let t3: Value = app
        .refresh(t2["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_error(
        app.refresh(t3["refresh_token"].as_str().unwrap()).await,
        429,
        "rate_limited",
    )
    .await;

    let change = || {
        app.client
            .post(app.url("/auth/password"))
            .bearer_auth(t3["access_token"].as_str().unwrap())
            .json(&json!({"current_password": "wrong wrong wrong", "new_password": "another fine passphrase"}))
            .send()
    };
    assert_eq!(change().await.unwrap().status(), 422);
    assert_error(change().await.unwrap(), 429, "rate_limited").await;
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let Some(app) =
        TestApp::spawn_with("rate_limits.enabled = false\nrate_limits.login = \"1/1m\"").await
    else {
        return;
    };
    app.register("ada@example.com").await;
    for _ in 0..8 {
        assert_eq!(
            app.login_response("ada@example.com", "wrong password!")
                .await
                .status(),
            401
        );
    }
}

#[tokio::test]
async fn failed_logins_back_off_exponentially_per_account_and_ip_and_success_resets() {
    let Some(app) = TestApp::spawn_with(
        "trusted_proxies = \"127.0.0.1\"\nrate_limits.failed_logins = \"3/15m\"",
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    let ip = "198.51.100.1";
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, ip, "ada@example.com", "wrong password!")
                .await
                .status(),
            401
        );
    }
    // Back-off: even the right password waits, and is not checked meanwhile.
    let r = login_from(&app, ip, "ada@example.com", PASSWORD).await;
    assert_eq!(retry_after(&r), 1);
    assert_error(r, 429, "rate_limited").await;
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        login_from(&app, ip, "ada@example.com", "wrong again!")
            .await
            .status(),
        401
    );
    let r = login_from(&app, ip, "ada@example.com", PASSWORD).await;
    assert_eq!(retry_after(&r), 2, "doubled");
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(
        login_from(&app, ip, "ada@example.com", "wrong again!")
            .await
            .status(),
        401
    );
    assert_eq!(
        retry_after(&login_from(&app, ip, "ada@example.com", PASSWORD).await),
        4
    );
    app.clock.advance(Duration::from_secs(4));
    assert_eq!(
        login_from(&app, ip, "ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // The success cleared the pair: the next failure is free again.
    assert_eq!(
        login_from(&app, ip, "ada@example.com", "wrong password!")
            .await
            .status(),
        401
    );
    assert_eq!(
        login_from(&app, ip, "ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn spraying_an_account_from_many_ips_never_locks_its_owner_out() {
    let Some(app) = TestApp::spawn_with(
        "trusted_proxies = \"127.0.0.1\"\nrate_limits.failed_logins = \"3/15m\"",
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    let home = "192.0.2.10";
    assert_eq!(
        login_from(&app, home, "ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    for i in 0..6 {
        let r = login_from(
            &app,
            &format!("203.0.113.{i}"),
            "ada@example.com",
            "guess guess",
        )
        .await;
        assert!(r.status() == 401 || r.status() == 429, "{}", r.status());
    }
    // The account is in back-off for new addresses…
    let r = login_from(&app, "203.0.113.200", "ada@example.com", PASSWORD).await;
    assert_error(r, 429, "rate_limited").await;
    // …but its owner, from the address they use, logs in.
    assert_eq!(
        login_from(&app, home, "ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // Unknown accounts are throttled the same way (no enumeration through 429s).
    for i in 0..4 {
        login_from(
            &app,
            &format!("203.0.113.{i}"),
            "nobody@example.com",
            "guess guess",
        )
        .await;
    }
    let r = login_from(&app, "203.0.113.99", "nobody@example.com", "guess guess").await;
    assert_error(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let Some(app) = TestApp::spawn_with("rate_limits.login = \"2/1m\"").await else {
        return;
    };
    app.register("ada@example.com").await;
    for i in 0..2 {
        let r = login_from(
            &app,
            &format!("198.51.100.{i}"),
            "ada@example.com",
            PASSWORD,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let r = login_from(&app, "198.51.100.77", "ada@example.com", PASSWORD).await;
    assert_error(r, 429, "rate_limited").await;
    let t = app.login_response("ada@example.com", PASSWORD).await;
    assert_eq!(
        t.status(),
        429,
        "the budget is the socket's, whatever the header says"
    );

    // Behind a trusted proxy the header is the client.
    let Some(proxied) = TestApp::spawn_with("trusted_proxies = [\"127.0.0.0/8\"]").await else {
        return;
    };
    proxied.register("ada@example.com").await;
    let r = login_from(
        &proxied,
        "6.6.6.6, 198.51.100.5",
        "ada@example.com",
        PASSWORD,
    )
    .await;
    let body: Value = r.json().await.unwrap();
    let sessions: Value = proxied
        .get_auth("/auth/sessions", body["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["ip"], "198.51.100.5");
}

#[tokio::test]
async fn weak_and_personal_passwords_are_refused_with_a_helpful_message() {
    let Some(app) = TestApp::spawn_with("rate_limits.register = \"100/1m\"").await else {
        return;
    };
    for (password, hint) in [
        ("password123", "guess"),
        ("qwertyuiop", "guess"),
        ("ada.lovelace@example.com!", "email"),
        ("ada.lovelace-rocks-1843", "email"),
    ] {
        let r = app
            .post(
                "/auth/register",
                &json!({"email": "ada.lovelace@example.com", "password": password}),
            )
            .await;
        let body = assert_error(r, 422, "validation_failed").await;
        let msg = body["fields"]["password"].as_str().unwrap();
        assert!(msg.contains(hint), "{password}: {msg}");
    }
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "bob@example.com", "username": "zanzibar", "password": "zanzibar-zanzibar"}),
        )
        .await;
    assert_error(r, 422, "validation_failed").await;
    let t = app.user("carol@example.com").await;
    let r = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&t.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "password1234"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["new_password"].is_string());
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_crash() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let body = format!("{{\"email\": \"a@example.com\", \"password\": \"x\", \"extra\": {deep}}}");
    let r = app
        .client
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_quickly() {
    let Some(app) = TestApp::spawn_with(
        "password.max_concurrent_hashes = 1\npassword.max_queued_hashes = 1\nrate_limits.login = \"1000/1m\"\nrate_limits.failed_logins = \"1000/1m\"",
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    let started = Instant::now();
    let results = join_all((0..12).map(|_| app.login_response("ada@example.com", PASSWORD))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    for r in results.into_iter().filter(|r| r.status() == 503) {
        assert!(r.headers().contains_key("retry-after"));
        assert_error(r, 503, "unavailable").await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_slow_loris_connection_is_closed() {
    let Some(app) = TestApp::spawn_with("header_read_timeout = \"1s\"").await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        // Never finish the headers; the server must give up on us.
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    // The server closed the connection (end of stream or reset), with at most a 408; our own
    // 15 s read timeout would be an error of another kind.
    match outcome {
        Ok(bytes) => assert!(
            bytes.is_empty() || bytes.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "not before the timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_503() {
    let Some(app) = TestApp::spawn_with("request_timeout = \"1s\"").await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .unwrap();
        let mut out = String::new();
        let mut buf = [0u8; 1024];
        if let Ok(n) = s.read(&mut buf) {
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"unavailable\""), "{response}");
}

#[tokio::test]
async fn concurrent_wrong_passwords_reach_the_hasher_at_most_the_allowed_number_of_times() {
    let Some(app) = TestApp::spawn_with(
        "trusted_proxies = \"127.0.0.1\"\nrate_limits.login = \"1000/1m\"\nrate_limits.failed_logins = \"5/15m\"",
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    app.post(
        "/auth/register",
        &json!({"email": "bob@example.com", "username": "bob", "password": PASSWORD}),
    )
    .await;
    // 64 attempts at once, by email and by username of one account, from 64 addresses: every
    // one that got 401 had its password hashed; the rest were refused before any work.
    let attempts = (0..64).map(|i| {
        let login = if i % 2 == 0 {
            "ada@example.com"
        } else {
            "ADA@example.com"
        };
        let ip = format!("198.51.100.{i}");
        let app = &app;
        async move {
            login_from(app, &ip, login, "wrong password!")
                .await
                .status()
        }
    });
    let statuses = join_all(attempts).await;
    let hashed = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let refused = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!(hashed + refused, 64, "{statuses:?}");
    assert!(hashed <= 5, "{hashed} passwords checked, the budget is 5");
    assert!(hashed >= 1);

    // Email and username of one account share one budget.
    let bob = (0..6).map(|i| {
        let login = if i % 2 == 0 { "bob" } else { "bob@example.com" };
        let ip = format!("203.0.113.{i}");
        let app = &app;
        async move {
            login_from(app, &ip, login, "wrong password!")
                .await
                .status()
        }
    });
    let mut statuses = Vec::new();
    for attempt in bob {
        statuses.push(attempt.await.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
}

#[tokio::test]
async fn ipv6_clients_share_one_budget_per_network_prefix() {
    let Some(app) = TestApp::spawn_with(
        "trusted_proxies = \"127.0.0.1\"\nrate_limits.login = \"2/1m\"\nrate_limits.ipv6_prefix = 64",
    )
    .await
    else {
        return;
    };
    app.register("ada@example.com").await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"] {
        let r = login_from(&app, ip, "ada@example.com", PASSWORD).await;
        assert_eq!(r.status(), 200, "{ip}");
    }
    // A third address of the same /64 is the same client.
    let r = login_from(&app, "2001:db8:1:2:abcd::42", "ada@example.com", PASSWORD).await;
    assert_error(r, 429, "rate_limited").await;
    // Another /64 has its own budget; an IPv4-mapped address is its IPv4 address.
    let r = login_from(&app, "2001:db8:1:3::1", "ada@example.com", PASSWORD).await;
    assert_eq!(r.status(), 200);
    for _ in 0..2 {
        let r = login_from(&app, "192.0.2.1", "ada@example.com", PASSWORD).await;
        assert_eq!(r.status(), 200);
    }
    let r = login_from(&app, "::ffff:192.0.2.1", "ada@example.com", PASSWORD).await;
    assert_error(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn setting_a_username_is_limited_like_registration() {
    let Some(app) = TestApp::spawn_with("rate_limits.register = \"2/1m\"").await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let patch = |body: Value| {
        app.client
            .patch(app.url("/auth/me"))
            .bearer_auth(&t.access)
            .json(&body)
            .send()
    };
    // Probing for taken usernames is a registration-like enumeration: two, then 429.
    for name in ["taken_one", "taken_two"] {
        assert_eq!(
            patch(json!({"username": name})).await.unwrap().status(),
            200
        );
    }
    let r = patch(json!({"username": "taken_three"})).await.unwrap();
    assert_error(r, 429, "rate_limited").await;
    // The display name is no oracle and stays free to change.
    let r = patch(json!({"name": "Ada"})).await.unwrap();
    assert_eq!(r.status(), 200);
}
