//! A resource server that trusts Keygate's tokens, with `keygate-verify` (features `remote`
//! and `axum`): keys from the JWKS URL, revocations from the feed, guards per permission.
//!
//! ```sh
//! KEYGATE_URL=http://127.0.0.1:8080 CLIENT_ID=orders-api CLIENT_SECRET='…' \
//!   cargo run --example resource_server
//! curl -H "authorization: Bearer $ACCESS" http://127.0.0.1:3000/whoami
//! ```
//!
//! `GET /whoami` needs a valid token; `GET /invoices` also the permission `invoices:read`
//! (403 `insufficient_scope` without it). A token whose session ended on Keygate is refused
//! about a second after the logout. The test suite runs this router against a live Keygate
//! (`tests/suite/resource_server.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use keygate_verify::{BearerError, RemoteConfig, RemoteVerifier, TokenVerifier, VerifiedToken};

/// The resource server's state: the verifier every handler's extractor uses.
#[derive(Clone)]
pub struct State {
    verifier: Arc<dyn TokenVerifier>,
}

impl FromRef<State> for Arc<dyn TokenVerifier> {
    fn from_ref(state: &State) -> Self {
        state.verifier.clone()
    }
}

async fn whoami(VerifiedToken(claims): VerifiedToken) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "sub": claims.sub, "sid": claims.sid, "roles": claims.roles }))
}

async fn invoices(VerifiedToken(claims): VerifiedToken) -> Result<String, BearerError> {
    claims.require_permission("invoices:read")?;
    Ok(format!("the invoices {} may read", claims.sub))
}

/// The routes, over a verifier following the Keygate at `base_url` whose `issuer` it is.
pub async fn router(
    base_url: &str,
    issuer: &str,
    client: Option<(String, String)>,
) -> Result<Router, keygate_verify::RemoteError> {
    let verifier = RemoteVerifier::start(RemoteConfig {
        base_url: Some(base_url.to_owned()),
        follow_revocations: client.is_some(),
        client,
        ..RemoteConfig::new(issuer, "EdDSA", &["keygate"])
    })
    .await?;
    Ok(Router::new()
        .route("/whoami", get(whoami))
        .route("/invoices", get(invoices))
        .with_state(State {
            verifier: Arc::new(verifier),
        }))
}

#[allow(dead_code)] // the test suite uses `router` only
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("KEYGATE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let issuer = std::env::var("KEYGATE_ISSUER").unwrap_or_else(|_| base.clone());
    let client = match (std::env::var("CLIENT_ID"), std::env::var("CLIENT_SECRET")) {
        (Ok(id), Ok(secret)) => Some((id, secret)),
        _ => None,
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let app = router(&base, &issuer, client).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("resource server on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
