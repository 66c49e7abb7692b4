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

/// Every route of the router (read from its `Debug` form, the one place axum lists them) and
/// every method it answers (asked in-process: a method without a handler falls through to
/// the `Unrouted` fallback) is an operation of the OpenAPI document, and every operation of the
/// document is routed.
#[tokio::test]
async fn every_route_of_the_router_is_in_the_openapi_document_and_back() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_str(keygate::http::openapi_document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();

    let router = keygate::http::router(app.state.clone());
    let routes = crate::helpers::routes(&app).await;
    let mut operations = 0;
    for (route, methods) in &routes {
        let documented = paths
            .get(route.as_str())
            .unwrap_or_else(|| panic!("{route} is routed but not in /openapi.json"));
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let routed = methods.contains(&method);
            let in_doc = documented.get(method.to_lowercase()).is_some();
            assert_eq!(
                routed, in_doc,
                "{method} {route}: routed {routed}, documented {in_doc}"
            );
            operations += usize::from(routed);
        }
    }
    drop(router);
    let routes: Vec<String> = routes.into_iter().map(|(r, _)| r).collect();
    for documented in paths.keys() {
        assert!(
            routes.contains(documented),
            "{documented} is documented but not routed"
        );
    }
    assert!(operations >= 40, "{operations} operations");
}
