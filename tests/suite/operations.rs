//! Health and readiness.

use crate::helpers::TestApp;

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["signing_keys"], "ok");
    assert_eq!(ready["checks"]["redis"], "not_configured");
    // The kid the node signs with, as the JWKS publishes it.
    let jwks: serde_json::Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["signing_kid"], jwks["keys"][0]["kid"]);
}

#[tokio::test]
async fn readyz_is_503_draining_once_shutdown_has_begun() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    // What the first SIGTERM or SIGINT does before anything else (tests/cli.rs sends the
    // signal to the real binary).
    app.state.begin_draining();
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["checks"]["database"], "ok");
    // Only readiness: the node still serves.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readyz_is_503_when_the_database_is_gone() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.state.auth.store().close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"], "down");
}
