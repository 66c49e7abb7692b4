//! Interoperability with code no one here wrote, against a live Keygate whose issuer is an
//! https URL (as behind a TLS-terminating proxy; the clients' HTTP layer plays the proxy and
//! sends the issuer's requests to the test server):
//! - the `oauth2` crate performs the password, refresh-token and client-credentials grants,
//!   introspects (RFC 7662), revokes (RFC 7009) and reads Keygate's errors as RFC 6749 errors;
//! - panva's oauth4webapi (JavaScript, `tests/interop/`) discovers Keygate at both well-known
//!   URLs and uses only what discovery told it.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, IntrospectionUrl, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, RevocationUrl, StandardRevocableToken, TokenIntrospectionResponse,
    TokenResponse, TokenUrl,
};
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp};

/// Keygate's public address: an https URL, as behind a TLS-terminating proxy.
const PUBLIC_ISSUER: &str = "https://auth.example.test";
const SVC_SECRET: &str = "service secret of some length";
const RS_SECRET: &str = "resource server secret";

/// The `oauth2` crate's HTTP client, as a TLS-terminating proxy would see it: requests for
/// [`PUBLIC_ISSUER`] go to the test server at `base`; anything else is refused.
fn proxy(
    client: oauth2::reqwest::Client,
    base: String,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<oauth2::HttpResponse, oauth2::reqwest::Error>>>,
> {
    move |request: oauth2::HttpRequest| {
        let client = client.clone();
        let uri = request.uri().to_string();
        let target = uri
            .strip_prefix(PUBLIC_ISSUER)
            .map(|path| format!("{base}{path}"));
        Box::pin(async move {
            let target = target.unwrap_or_else(|| panic!("a request left the issuer: {uri}"));
            let mut builder = client
                .request(request.method().clone(), target)
                .body(request.body().clone());
            for (name, value) in request.headers() {
                builder = builder.header(name, value);
            }
            let response = builder.send().await?;
            let mut out = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                out = out.header(name, value);
            }
            Ok(out
                .body(response.bytes().await?.to_vec())
                .expect("a response"))
        })
    }
}

#[tokio::test]
async fn the_oauth2_crate_drives_every_grant_introspection_and_revocation() {
    let clients = format!(
        "issuer = \"{PUBLIC_ISSUER}\"\n[[oauth.clients]]\nid = \"svc\"\nsecret = \"{SVC_SECRET}\"\ngrant_types = [\"client_credentials\"]\n\
         permissions = [\"invoices:read\"]\n\
         [[oauth.clients]]\nid = \"rs\"\nsecret = \"{RS_SECRET}\"\n"
    );
    let Some(app) = TestApp::spawn_with(&clients).await else {
        return;
    };
    let user = app.register("interop@example.com").await;
    let reqwest = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = proxy(reqwest, app.base.clone());
    let token_url = TokenUrl::new(format!("{PUBLIC_ISSUER}/oauth/token")).unwrap();

    // A public client (no secret): the password grant, then the refresh-token grant.
    let public = BasicClient::new(ClientId::new("single-page-app".to_owned()))
        .set_token_uri(token_url.clone());
    let first = public
        .exchange_password(
            &ResourceOwnerUsername::new("interop@example.com".to_owned()),
            &ResourceOwnerPassword::new(PASSWORD.to_owned()),
        )
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(*first.token_type(), BasicTokenType::Bearer);
    assert!(first.expires_in().is_some_and(|d| d.as_secs() > 0));
    assert_eq!(
        app.me_status(first.access_token().secret()).await,
        StatusCode::OK
    );
    let refresh = first.refresh_token().expect("a refresh token");
    let second = public
        .exchange_refresh_token(refresh)
        .request_async(&http)
        .await
        .unwrap();
    let second_refresh = second.refresh_token().expect("rotated").clone();
    assert_ne!(second_refresh.secret(), refresh.secret());

    // Keygate's refusals read as RFC 6749 errors.
    let wrong = public
        .exchange_password(
            &ResourceOwnerUsername::new("interop@example.com".to_owned()),
            &ResourceOwnerPassword::new("not the password".to_owned()),
        )
        .request_async(&http)
        .await;
    match wrong {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant);
        }
        other => panic!("expected invalid_grant, got {other:?}"),
    }

    // A confidential client: client_credentials by HTTP Basic (the crate's default) and in
    // the body.
    let service = BasicClient::new(ClientId::new("svc".to_owned()))
        .set_client_secret(ClientSecret::new(SVC_SECRET.to_owned()))
        .set_token_uri(token_url.clone());
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let own = service
            .clone()
            .set_auth_type(auth)
            .exchange_client_credentials()
            .request_async(&http)
            .await
            .unwrap();
        assert!(own.refresh_token().is_none());
    }
    let bad = BasicClient::new(ClientId::new("svc".to_owned()))
        .set_client_secret(ClientSecret::new("not the secret at all".to_owned()))
        .set_token_uri(token_url)
        .exchange_client_credentials()
        .request_async(&http)
        .await;
    match bad {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient);
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }

    // A resource server introspects and revokes.
    let rs = BasicClient::new(ClientId::new("rs".to_owned()))
        .set_client_secret(ClientSecret::new(RS_SECRET.to_owned()))
        .set_introspection_url(
            IntrospectionUrl::new(format!("{PUBLIC_ISSUER}/oauth/introspect")).unwrap(),
        )
        .set_revocation_url(RevocationUrl::new(format!("{PUBLIC_ISSUER}/oauth/revoke")).unwrap());
    let facts = rs
        .introspect(second.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(facts.active());
    assert_eq!(facts.sub(), user["id"].as_str());
    assert_eq!(facts.iss(), Some(PUBLIC_ISSUER));
    // RFC 7009: the refresh token ends its session, so its access token is no longer active.
    rs.revoke_token(StandardRevocableToken::RefreshToken(second_refresh.clone()))
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    let facts = rs
        .introspect(second.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(!facts.active());
}

/// A secret that HTTP Basic's form-encoding (RFC 6749 section 2.3.1) changes.
const ENCODED_SECRET: &str = "s3cret: with spaces+plus/slash&more";

/// `tests/interop/<name>` when `node` and the interop packages (`npm ci --prefix
/// tests/interop`) are there, or `None` after saying that the test is skipped — which fails in
/// CI, where `.ci/run` installs them.
pub(crate) fn interop_script(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = ["oauth4webapi", "jose"].iter().all(|p| {
        dir.join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
    });
    if node && installed {
        return Some(dir.join(name));
    }
    keygate_testkit::skip(
        "a Node.js interop test",
        "install Node.js and run `npm ci --prefix tests/interop`",
    );
    None
}

/// panva's oauth4webapi (a certified, strict OAuth client in JavaScript) discovers Keygate by
/// both well-known URLs, checks the issuer, and then uses only what discovery told it: the
/// password and refresh grants, client credentials by Basic (form-encoded) and in the body, a
/// Basic challenge for a wrong secret, introspection, and revocation.
#[tokio::test]
async fn oauth4webapi_discovers_keygate_and_uses_every_endpoint_it_finds() {
    let Some(script) = interop_script("oauth4webapi.mjs") else {
        return;
    };
    let secret_toml = ENCODED_SECRET.replace('\\', "\\\\").replace('"', "\\\"");
    let extra = format!(
        "issuer = \"{PUBLIC_ISSUER}\"\n\
         [[oauth.clients]]\nid = \"svc\"\nsecret = \"{secret_toml}\"\n\
         grant_types = [\"client_credentials\"]\nroles = [\"reporter\"]\n\
         [[oauth.clients]]\nid = \"rs\"\nsecret = \"{RS_SECRET}\"\n"
    );
    let Some(app) = TestApp::spawn_with(&extra).await else {
        return;
    };
    let user = app.register("js@example.com").await;
    let input = serde_json::json!({
        "issuer": PUBLIC_ISSUER,
        "server": app.base,
        "username": "js@example.com",
        "password": PASSWORD,
        "service_id": "svc",
        "service_secret": ENCODED_SECRET,
        "rs_id": "rs",
        "rs_secret": RS_SECRET,
    })
    .to_string();
    // The server shares this test's runtime: wait for node on the blocking pool.
    let output = tokio::task::spawn_blocking(move || {
        keygate_testkit::output_within(
            std::process::Command::new("node").arg(&script).arg(input),
            None,
            std::time::Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "oauth4webapi refused something: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    for algorithm in ["oidc", "oauth2"] {
        let d = &seen[format!("discovery_{algorithm}")];
        assert_eq!(d["issuer"], PUBLIC_ISSUER, "{algorithm}");
        for (field, path) in [
            ("token_endpoint", "/oauth/token"),
            ("revocation_endpoint", "/oauth/revoke"),
            ("introspection_endpoint", "/oauth/introspect"),
            ("jwks_uri", "/.well-known/jwks.json"),
        ] {
            assert_eq!(
                d[field],
                format!("{PUBLIC_ISSUER}{path}"),
                "{algorithm} {field}"
            );
        }
    }
    assert_eq!(seen["password"]["token_type"], "bearer");
    assert_eq!(seen["password"]["scope"], "profile");
    assert_eq!(seen["password"]["has_refresh"], true);
    assert_eq!(seen["refresh"]["rotated"], true);
    assert_eq!(seen["wrong_password"], "invalid_grant");
    let cc = seen["client_credentials"].as_array().unwrap();
    assert_eq!(cc.len(), 2);
    for token in cc {
        assert_eq!(token["token_type"], "bearer");
        assert_eq!(token["has_refresh"], false);
        assert_eq!(
            app.me_status(token["access_token"].as_str().unwrap()).await,
            StatusCode::UNAUTHORIZED,
            "a client's token is not a user's"
        );
    }
    assert_eq!(
        seen["wrong_secret"],
        serde_json::json!({"status": 401, "schemes": ["basic"]})
    );
    let live = &seen["introspection_live"];
    assert_eq!(live["active"], true);
    assert_eq!(live["sub"], user["id"]);
    assert_eq!(live["iss"], PUBLIC_ISSUER);
    assert_eq!(live["token_type"], "Bearer");
    assert_eq!(seen["introspection_refresh"]["active"], true);
    assert_eq!(seen["introspection_refresh"]["token_type"], "refresh_token");
    assert_eq!(
        seen["introspection_after_revocation"],
        serde_json::json!({"active": false})
    );
    assert_eq!(seen["revoked_garbage"], true);
}
