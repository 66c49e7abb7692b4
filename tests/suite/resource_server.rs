//! Seed 002's flow end to end, with the example resource server (examples/resource_server.rs,
//! keygate-verify's `remote` and `axum` features) against live Keygate nodes: form login at
//! `/oauth/token` → bearer call to `/auth/me` → the resource server's permission guard (403,
//! then 200 once granted) → logout on one node → the resource server, following another
//! node's revocation feed, refuses the token within the stated bound.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp};

#[path = "../../examples/resource_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

const RS_SECRET: &str = "resource server secret";

async fn token(app: &TestApp, email: &str) -> Value {
    let body = format!(
        "grant_type=password&username={}&password={}",
        url::form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>()
    );
    let r = app
        .client
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn seed_002_flow_through_a_resource_server_that_follows_keygate() {
    let clients = format!("[[oauth.clients]]\nid = \"rs\"\nsecret = \"{RS_SECRET}\"\n");
    let Some(a) = TestApp::spawn_with(&clients).await else {
        return;
    };
    let b = a.sibling(&clients).await;
    let issuer = a.state.auth.config().issuer.clone();
    // The resource server follows node B.
    let router = example::router(
        &b.base,
        &issuer,
        Some(("rs".to_owned(), RS_SECRET.to_owned())),
    )
    .await
    .expect("the resource server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rs = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let call = |path: &'static str, access: String| {
        let (client, rs) = (a.client.clone(), rs.clone());
        async move {
            client
                .get(format!("{rs}{path}"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
        }
    };

    a.register("seed@example.com").await;
    let t = token(&a, "seed@example.com").await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(a.me_status(&access).await, StatusCode::OK);
    let who = call("/whoami", access.clone()).await;
    assert_eq!(who.status(), StatusCode::OK);
    let who: Value = who.json().await.unwrap();
    // Without the permission: 403 with RFC 6750's insufficient_scope.
    let r = call("/invoices", access.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    // Granted, a new token carries it.
    a.state
        .auth
        .update_user(
            keygate::auth::Actor::Operator,
            who["sub"].as_str().unwrap(),
            keygate::auth::UserPatch {
                permissions: Some(vec!["invoices:read".to_owned()]),
                ..Default::default()
            },
            &keygate::domain::ClientInfo::default(),
        )
        .await
        .unwrap();
    let t = token(&a, "seed@example.com").await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        call("/invoices", access.clone()).await.status(),
        StatusCode::OK
    );
    // No token, or a forged one: 401 invalid_token.
    let r = a.client.get(format!("{rs}/whoami")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        call("/whoami", format!("{access}x")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Logout on node A; the resource server follows node B and refuses within 2 s.
    tokio::time::sleep(Duration::from_millis(300)).await; // the follower's first poll is out
    let r = a
        .client
        .post(a.url("/auth/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let logged_out = Instant::now();
    loop {
        let r = call("/invoices", access.clone()).await;
        if r.status() == StatusCode::UNAUTHORIZED {
            let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            logged_out.elapsed() < Duration::from_secs(2),
            "the resource server still accepts the token 2 s after the logout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
}

/// A stand-in JWKS endpoint: serves `doc` after `delay`, counting requests.
#[derive(Default)]
struct JwksDouble {
    doc: std::sync::Mutex<String>,
    delay: std::sync::Mutex<Duration>,
    fetches: std::sync::atomic::AtomicUsize,
}

async fn serve_jwks(double: std::sync::Arc<JwksDouble>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let double = double.clone();
            async move {
                double
                    .fetches
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let delay = *double.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                let doc = double.doc.lock().unwrap().clone();
                ([("cache-control", "public, max-age=300")], doc)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn jwks_keys(app: &TestApp) -> Vec<Value> {
    let doc: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    doc["keys"].as_array().unwrap().clone()
}

/// `token` with its header's `kid` replaced (the signature no longer matters: the key is
/// looked up first).
fn with_kid(token: &str, kid: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (head, rest) = token.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&engine.decode(head).unwrap()).unwrap();
    header["kid"] = Value::from(kid);
    format!("{}.{rest}", engine.encode(header.to_string()))
}

#[tokio::test]
async fn the_remote_verifier_fetches_keys_for_an_unknown_kid_at_most_once_per_interval_and_never_waits_for_a_known_one()
 {
    use keygate_verify::{RemoteConfig, RemoteVerifier, VerifyError};
    // Two installations with their own keys, the same issuer and audience.
    let Some(a) = TestApp::spawn().await else {
        return;
    };
    let Some(b) = TestApp::spawn().await else {
        return;
    };
    let (keys_a, keys_b) = (jwks_keys(&a).await, jwks_keys(&b).await);
    let double = std::sync::Arc::new(JwksDouble::default());
    *double.doc.lock().unwrap() = serde_json::json!({ "keys": keys_a }).to_string();
    let base = serve_jwks(double.clone()).await;
    let issuer = a.state.auth.config().issuer.clone();
    let verifier = RemoteVerifier::start(RemoteConfig {
        base_url: Some(base),
        refetch_interval: Duration::from_secs(2),
        ..RemoteConfig::new(&issuer, "EdDSA", &["keygate"])
    })
    .await
    .unwrap();
    let fetches = || double.fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetches(), 1);
    let token_a = a.user("a@example.com").await.access;
    let token_b = b.user("b@example.com").await.access;
    assert!(verifier.verify(&token_a).await.is_ok());
    assert_eq!(fetches(), 1, "a known key needs no fetch");

    // B's key appears in the JWKS: the first token naming it fetches once, then verifies.
    let both: Vec<Value> = keys_a.iter().chain(&keys_b).cloned().collect();
    *double.doc.lock().unwrap() = serde_json::json!({ "keys": both }).to_string();
    assert!(verifier.verify(&token_b).await.is_ok());
    assert_eq!(fetches(), 2);

    // A flood of made-up kids inside the interval fetches nothing.
    for i in 0..50 {
        let forged = with_kid(&token_a, &format!("made-up-{i}"));
        assert_eq!(
            verifier.verify(&forged).await.unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    assert_eq!(fetches(), 2, "at most one fetch per interval");

    // After the interval, a slow fetch for an unknown kid does not hold up a known key.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    *double.delay.lock().unwrap() = Duration::from_secs(3);
    let slow = {
        let (verifier, forged) = (verifier.clone(), with_kid(&token_a, "made-up-late"));
        tokio::spawn(async move { verifier.verify(&forged).await })
    };
    // A bounded poll on the event itself, not a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetches() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fetches(), 3, "the unknown kid started a fetch");
    let started = Instant::now();
    assert!(verifier.verify(&token_a).await.is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a cached key waited {:?} for a fetch",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap().unwrap_err(), VerifyError::UnknownKey);
}

#[tokio::test]
async fn the_remote_verifier_introspects_with_its_client_credentials() {
    use keygate_verify::{RemoteConfig, RemoteError, RemoteVerifier};
    let clients = format!("[[oauth.clients]]\nid = \"rs\"\nsecret = \"{RS_SECRET}\"\n");
    let Some(app) = TestApp::spawn_with(&clients).await else {
        return;
    };
    let issuer = app.state.auth.config().issuer.clone();
    let config = RemoteConfig {
        base_url: Some(app.base.clone()),
        ..RemoteConfig::new(&issuer, "EdDSA", &["keygate"])
    };
    let anonymous = RemoteVerifier::start(config.clone()).await.unwrap();
    let client = RemoteVerifier::start(RemoteConfig {
        client: Some(("rs".to_owned(), RS_SECRET.to_owned())),
        ..config.clone()
    })
    .await
    .unwrap();
    let wrong = RemoteVerifier::start(RemoteConfig {
        client: Some(("rs".to_owned(), "not the secret at all".to_owned())),
        ..config
    })
    .await
    .unwrap();
    let user = app.user("intro@example.com").await;
    let facts = client
        .introspect(&user.access)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(facts["sid"], user.session_id.as_str());
    assert!(matches!(
        anonymous.introspect(&user.access).await,
        Err(RemoteError::NoClient)
    ));
    assert!(matches!(
        wrong.introspect(&user.access).await,
        Err(RemoteError::Http(_))
    ));
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(client.introspect(&user.access).await.unwrap().is_none());
}
