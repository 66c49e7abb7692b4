//! Interoperability with code no one here wrote: the `oauth2` crate's client performs the
//! password, refresh-token and client-credentials grants against a live Keygate, introspects
//! with its RFC 7662 support (its RFC 7009 revocation insists on https, which a test server on
//! plain HTTP is not), and reads Keygate's errors as RFC 6749 errors.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthType, ClientId, ClientSecret, IntrospectionUrl, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, RevocationUrl, StandardRevocableToken, TokenIntrospectionResponse,
    TokenResponse, TokenUrl,
};
use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp};

const SVC_SECRET: &str = "service secret of some length";
const RS_SECRET: &str = "resource server secret";

#[tokio::test]
async fn the_oauth2_crate_drives_every_grant_introspection_and_revocation() {
    let clients = format!(
        "[[oauth.clients]]\nid = \"svc\"\nsecret = \"{SVC_SECRET}\"\ngrant_types = [\"client_credentials\"]\n\
         permissions = [\"invoices:read\"]\n\
         [[oauth.clients]]\nid = \"rs\"\nsecret = \"{RS_SECRET}\"\n"
    );
    let Some(app) = TestApp::spawn_with(&clients).await else {
        return;
    };
    let user = app.register("interop@example.com").await;
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token_url = TokenUrl::new(app.url("/oauth/token")).unwrap();

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
        .set_introspection_url(IntrospectionUrl::new(app.url("/oauth/introspect")).unwrap())
        .set_revocation_url(RevocationUrl::new(app.url("/oauth/revoke")).unwrap());
    let facts = rs
        .introspect(second.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(facts.active());
    assert_eq!(facts.sub(), user["id"].as_str());
    assert_eq!(facts.iss(), Some(app.state.auth.config().issuer.as_str()));
    // The crate sends revocations only to an https URL (RFC 7009 section 2 asks clients to
    // check), which this plain-HTTP test server is not: it says so, and the same form is
    // posted by hand.
    assert!(matches!(
        rs.revoke_token(StandardRevocableToken::RefreshToken(second_refresh.clone())),
        Err(oauth2::ConfigurationError::InsecureUrl("revocation"))
    ));
    let r = app
        .client
        .post(app.url("/oauth/revoke"))
        .basic_auth("rs", Some(RS_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={}&token_type_hint=refresh_token",
            second_refresh.secret()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let facts = rs
        .introspect(second.access_token())
        .request_async(&http)
        .await
        .unwrap();
    assert!(!facts.active());
}
