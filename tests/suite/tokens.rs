//! Access tokens: their shape, the JWKS, and every way a forged or stale token is refused.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keygate_verify::Verifier;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, b64, b64_decode, claims_of, header_of};

async fn jwks(app: &TestApp) -> Value {
    app.client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_owned()
}

/// `/auth/me` with `token` gets 401 `invalid_token` with RFC 6750's challenge saying so (not
/// "expired", which would send a client to refresh).
async fn assert_refused_as_invalid(app: &TestApp, token: &str, what: &str) {
    let r = app.get_auth("/auth/me", token).await;
    let header = www_authenticate(&r);
    assert!(
        header.starts_with("Bearer realm=\"keygate\"")
            && header.contains("error=\"invalid_token\"")
            && header.contains("error_description=\"invalid token\""),
        "{what}: {header}"
    );
    let body = assert_error(r, 401, "invalid_token").await;
    assert_eq!(body["message"], "invalid token", "{what}");
}

#[tokio::test]
async fn access_tokens_carry_the_rfc_9068_header_and_claims() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let header = header_of(&t.access);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], jwks(&app).await["keys"][0]["kid"]);
    let c = claims_of(&t.access);
    assert_eq!(c["iss"], "http://127.0.0.1:8080");
    assert_eq!(c["aud"], "keygate");
    assert_eq!(c["sid"], t.session_id.as_str());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert!(c["jti"].is_string() && c["sub"].is_string());
    assert_eq!(c["roles"], json!([]));
    assert_eq!(c["permissions"], json!([]));
    let other = app.login("ada@example.com").await;
    assert_ne!(claims_of(&other.access)["jti"], c["jti"], "jti is unique");
}

#[tokio::test]
async fn a_resource_server_verifies_tokens_with_the_published_jwks() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let doc = r.text().await.unwrap();
    assert!(!doc.contains("\"d\""), "no private key material: {doc}");
    let verifier =
        Verifier::from_jwks("EdDSA", &doc, "http://127.0.0.1:8080", &["keygate"]).unwrap();
    let now = claims_of(&t.access)["iat"].as_i64().unwrap();
    let claims = verifier.verify(&t.access, now).unwrap();
    assert_eq!(claims.sid, t.session_id);
}

#[tokio::test]
async fn the_signing_key_is_kept_across_restarts() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let before = jwks(&app).await;
    let restarted = app.restart("").await;
    assert_eq!(before, jwks(&restarted).await);
    assert_eq!(restarted.me_status(&t.access).await, 200);
    // Sessions live in the database too: the refresh token rotates after the restart.
    assert_eq!(restarted.refresh(&t.refresh).await.status(), 200);
}

#[tokio::test]
async fn an_expired_token_says_token_expired() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    app.clock.advance(Duration::from_secs(900 + 20));
    assert_eq!(
        app.me_status(&t.access).await,
        200,
        "inside the 30 s leeway"
    );
    app.clock.advance(Duration::from_secs(15));
    let r = app.get_auth("/auth/me", &t.access).await;
    let header = www_authenticate(&r);
    assert!(
        header.contains("error=\"invalid_token\"") && header.contains("token expired"),
        "{header}"
    );
    let body = assert_error(r, 401, "invalid_token").await;
    assert_eq!(body["message"], "token expired");
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let parts: Vec<&str> = t.access.split('.').collect();
    let mut claims = claims_of(&t.access);
    claims["roles"] = json!(["admin"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    let r = app.get_auth("/auth/me", &forged).await;
    assert!(www_authenticate(&r).contains("invalid token"));
    assert_error(r, 401, "invalid_token").await;
    // Flip one bit of the signature.
    let mut sig = b64_decode(parts[2]);
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    assert_eq!(app.me_status(&forged).await, 401);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let parts: Vec<&str> = t.access.split('.').collect();
    for alg in ["none", "None", "NONE"] {
        let head = b64(
            json!({"alg": alg, "typ": "at+jwt", "kid": header_of(&t.access)["kid"]})
                .to_string()
                .as_bytes(),
        );
        for token in [
            format!("{head}.{}.", parts[1]),
            format!("{head}.{}", parts[1]),
        ] {
            assert_refused_as_invalid(&app, &token, alg).await;
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let jwk = jwks(&app).await["keys"][0].clone();
    let public_key = b64_decode(jwk["x"].as_str().unwrap());
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = jwk["kid"].as_str().map(str::to_owned);
    // The public key both as raw bytes and as its base64 text, the two usual confusions.
    for secret in [
        public_key.clone(),
        jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let forged = jsonwebtoken::encode(
            &header,
            &claims_of(&t.access),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_refused_as_invalid(&app, &forged, "HS256 with the public key").await;
    }
}

#[tokio::test]
async fn a_token_for_another_audience_or_issuer_is_refused() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    app.register("ada@example.com").await;
    // Same database, so the same signing key, but other `aud` / `iss`.
    let other_aud = app.sibling("audience = \"billing\"").await;
    let t = other_aud.login("ada@example.com").await;
    assert_eq!(other_aud.me_status(&t.access).await, 200);
    assert_eq!(app.me_status(&t.access).await, 401);
    let other_iss = app.sibling("issuer = \"https://evil.example.com\"").await;
    let t = other_iss.login("ada@example.com").await;
    assert_eq!(app.me_status(&t.access).await, 401);
}

#[tokio::test]
async fn missing_malformed_and_overlong_bearers_are_401() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let r = app.client.get(app.url("/auth/me")).send().await.unwrap();
    assert_eq!(www_authenticate(&r), "Bearer realm=\"keygate\"");
    assert_error(r, 401, "invalid_token").await;
    let r = app
        .client
        .get(app.url("/auth/me"))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_token").await;
    for garbage in ["x", "a.b.c", "....", &"a".repeat(5000)] {
        assert_eq!(
            app.me_status(garbage).await,
            401,
            "{}",
            &garbage[..garbage.len().min(10)]
        );
    }
    let r = app.get_auth("/auth/me", &"a".repeat(9000)).await;
    assert_error(r, 431, "headers_too_large").await;
}

#[tokio::test]
async fn an_access_token_of_an_ended_session_is_refused_at_once() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    assert_eq!(app.me_status(&t.access).await, 200);
    let r = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.me_status(&t.access).await, 401);
}

#[tokio::test]
async fn hs256_works_with_a_configured_secret_and_an_empty_jwks() {
    let Some(app) = TestApp::spawn_with(
        "[signing]\nalgorithm = \"HS256\"\nsecret = \"an HS256 secret that is long enough!\"",
    )
    .await
    else {
        return;
    };
    let t = app.user("ada@example.com").await;
    assert_eq!(header_of(&t.access)["alg"], "HS256");
    assert_eq!(app.me_status(&t.access).await, 200);
    assert_eq!(jwks(&app).await, json!({"keys": []}));
    // An EdDSA server on the same database does not accept it.
    let eddsa = app.sibling("").await;
    assert_eq!(eddsa.me_status(&t.access).await, 401);
    // RFC 9068: a token typed `JWT` (or untyped) is not an access token, even signed with
    // the right secret and carrying the right claims.
    let secret = EncodingKey::from_secret(b"an HS256 secret that is long enough!");
    let claims = claims_of(&t.access);
    for typ in [Some("JWT"), Some("jwt"), None] {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        header.kid = header_of(&t.access)["kid"].as_str().map(str::to_owned);
        let token = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
        assert_refused_as_invalid(&app, &token, &format!("typ {typ:?}")).await;
    }
    // The same claims typed `at+jwt` pass: the refusal above is the type's.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = header_of(&t.access)["kid"].as_str().map(str::to_owned);
    let token = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
    assert_eq!(app.me_status(&token).await, 200);
}

#[tokio::test]
async fn es256_and_rs256_keys_are_generated_and_published() {
    for alg in ["ES256", "RS256"] {
        let Some(app) = TestApp::spawn_with(&format!("signing.algorithm = \"{alg}\"")).await else {
            return;
        };
        let t = app.user("ada@example.com").await;
        assert_eq!(header_of(&t.access)["alg"], alg);
        assert_eq!(app.me_status(&t.access).await, 200);
        let doc = jwks(&app).await;
        assert_eq!(doc["keys"][0]["alg"], alg);
        let verifier =
            Verifier::from_jwks(alg, &doc.to_string(), "http://127.0.0.1:8080", &["keygate"])
                .unwrap();
        let now = claims_of(&t.access)["iat"].as_i64().unwrap();
        assert!(verifier.verify(&t.access, now).is_ok(), "{alg}");
    }
}
