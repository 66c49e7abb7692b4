//! Two-factor authentication (issue 16): TOTP enrolment, the second step of a login, recovery
//! codes, attempts, the password grant, turning it off, and the seed sealed under the KEK.
//! Codes are computed here by an implementation of RFC 6238 of the test's own (aws-lc's
//! HMAC-SHA1), checked against the RFC's test vectors, not by the server's.

use std::time::Duration;

use serde_json::{Value, json};

use super::totp::{base32_decode, totp};
use crate::helpers::{PASSWORD, TestApp, assert_error, claims_of, tokens};

/// The code the server's clock is at now (plus `steps` steps).
fn code(app: &TestApp, key: &[u8], steps: i64) -> String {
    use keygate::clock::Clock as _;
    totp(key, app.clock.now().unix_timestamp() + steps * 30)
}

async fn bearer_post(app: &TestApp, path: &str, access: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Enrols `email` (logged in as `t`): returns the seed and the recovery codes.
async fn enrol(app: &TestApp, access: &str) -> (Vec<u8>, Vec<String>) {
    let r = bearer_post(app, "/auth/mfa/totp", access, json!({"password": PASSWORD})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let e: Value = r.json().await.unwrap();
    let secret = e["secret"].as_str().unwrap();
    let key = base32_decode(secret);
    assert_eq!(key.len(), 20, "160-bit seed");
    let uri = url::Url::parse(e["otpauth_uri"].as_str().unwrap()).unwrap();
    assert_eq!(uri.scheme(), "otpauth");
    assert_eq!(uri.host_str(), Some("totp"));
    let q: std::collections::HashMap<_, _> = uri.query_pairs().into_owned().collect();
    assert_eq!(q["secret"], secret);
    assert_eq!(q["issuer"], "Keygate");
    let svg = e["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg:.80}");

    // A wrong code does not confirm.
    let wrong = if code(app, &key, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = bearer_post(
        app,
        "/auth/mfa/totp/confirm",
        access,
        json!({"code": wrong}),
    )
    .await;
    assert_error(r, 400, "invalid_code").await;
    let r = bearer_post(
        app,
        "/auth/mfa/totp/confirm",
        access,
        json!({"code": code(app, &key, 0)}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let codes: Vec<String> = r.json::<Value>().await.unwrap()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (key, codes)
}

/// Logs in with the password: the `mfa_required` answer's token.
async fn password_step(app: &TestApp, email: &str) -> String {
    let r = app.login_response(email, PASSWORD).await;
    let body = assert_error(r, 403, "mfa_required").await;
    assert_eq!(body["expires_in"], 300);
    assert!(!body.to_string().contains("access_token"));
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(app: &TestApp, mfa_token: &str, factor: Value) -> reqwest::Response {
    let mut body = factor;
    body["mfa_token"] = json!(mfa_token);
    app.post("/auth/mfa/verify", &body).await
}

#[tokio::test]
async fn totp_enrolment_then_logins_need_a_code_that_works_once() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    let elsewhere = app.login("ada@example.com").await;
    // Enrolment needs the password.
    let r = bearer_post(
        &app,
        "/auth/mfa/totp",
        &t.access,
        json!({"password": "wrong horse battery staple"}),
    )
    .await;
    assert_error(r, 422, "validation_failed").await;
    let (key, _) = enrol(&app, &t.access).await;

    // Every other session ended; this one stays.
    assert_error(
        app.refresh(&elsewhere.refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    let me: Value = app
        .get_auth("/auth/me", &t.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["mfa_enabled"], true);
    // Enrolling again is refused while it is on.
    let r = bearer_post(
        &app,
        "/auth/mfa/totp",
        &t.access,
        json!({"password": PASSWORD}),
    )
    .await;
    assert_error(r, 403, "forbidden").await;

    // The code that confirmed the enrolment cannot log in: each code works once.
    let mfa_token = password_step(&app, "ada@example.com").await;
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 0)})).await;
    assert_error(r, 400, "invalid_code").await;
    // The next step's code (clock skew of one step is allowed).
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 1)})).await;
    assert_eq!(r.status(), 200);
    let logged = tokens(r.json().await.unwrap());
    assert_eq!(claims_of(&logged.access)["amr"], json!(["pwd", "otp"]));
    // The session keeps its amr across refreshes.
    let refreshed = tokens(app.refresh(&logged.refresh).await.json().await.unwrap());
    assert_eq!(claims_of(&refreshed.access)["amr"], json!(["pwd", "otp"]));
    // The mfa_token is spent.
    app.clock.advance(Duration::from_secs(60));
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 0)})).await;
    assert_error(r, 400, "invalid_code").await;
    // Two steps away is too far.
    let mfa_token = password_step(&app, "ada@example.com").await;
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 2)})).await;
    assert_error(r, 400, "invalid_code").await;
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 0)})).await;
    assert_eq!(r.status(), 200);
    // An mfa_token expires after 5 minutes.
    let mfa_token = password_step(&app, "ada@example.com").await;
    app.clock.advance(Duration::from_secs(301));
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 0)})).await;
    assert_error(r, 400, "invalid_code").await;
}

#[tokio::test]
async fn five_attempts_per_mfa_token_and_recovery_codes_work_once() {
    let Some(app) = TestApp::spawn_with("rate_limits.failed_logins = \"100/15m\"\n").await else {
        return;
    };
    let t = app.user("bo@example.com").await;
    let (key, codes) = enrol(&app, &t.access).await;
    app.clock.advance(Duration::from_secs(30));

    let mfa_token = password_step(&app, "bo@example.com").await;
    let right = code(&app, &key, 0);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let r = verify(&app, &mfa_token, json!({"code": wrong})).await;
        assert_error(r, 400, "invalid_code").await;
    }
    let r = verify(&app, &mfa_token, json!({"code": right})).await;
    assert_error(r, 400, "invalid_code").await;

    // A recovery code, in any case and with or without dashes, once.
    let mfa_token = password_step(&app, "bo@example.com").await;
    let r = verify(
        &app,
        &mfa_token,
        json!({"recovery_code": codes[0].to_uppercase()}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mfa_token = password_step(&app, "bo@example.com").await;
    let r = verify(&app, &mfa_token, json!({"recovery_code": codes[0]})).await;
    assert_error(r, 400, "invalid_code").await;
    let r = verify(
        &app,
        &mfa_token,
        json!({"recovery_code": codes[1].replace('-', "")}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Both or neither is 422.
    let mfa_token = password_step(&app, "bo@example.com").await;
    let r = verify(
        &app,
        &mfa_token,
        json!({"code": right, "recovery_code": codes[2]}),
    )
    .await;
    assert_error(r, 422, "validation_failed").await;
    let r = verify(&app, &mfa_token, json!({})).await;
    assert_error(r, 422, "validation_failed").await;
    // Audited.
    let events: Vec<String> = app
        .state
        .auth
        .store()
        .audit_events(&keygate::store::AuditQuery {
            user_id: None,
            event: Some("mfa_failed".to_owned()),
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events.len(), 7, "{events:?}");
}

#[tokio::test]
async fn wrong_codes_feed_the_accounts_failed_login_back_off() {
    let Some(app) = TestApp::spawn_with("rate_limits.failed_logins = \"3/15m\"\n").await else {
        return;
    };
    let t = app.user("cy@example.com").await;
    let (key, _) = enrol(&app, &t.access).await;
    let right = code(&app, &key, 1);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    // Two wrong codes per login: the right password in between does not reset the count.
    let mut statuses = Vec::new();
    'rounds: for _ in 0..3 {
        let r = app.login_response("cy@example.com", PASSWORD).await;
        if r.status() == 429 {
            statuses.push(429);
            break;
        }
        let body = assert_error(r, 403, "mfa_required").await;
        for _ in 0..2 {
            let r = verify(
                &app,
                body["mfa_token"].as_str().unwrap(),
                json!({"code": wrong}),
            )
            .await;
            statuses.push(r.status().as_u16());
            if r.status() == 429 {
                break 'rounds;
            }
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "no back-off after wrong codes: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        3,
        "{statuses:?}"
    );
    // In back-off even the right password waits.
    let r = app.login_response("cy@example.com", PASSWORD).await;
    assert_error(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn the_password_grant_answers_mfa_required_and_verify_finishes_it() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("di@example.com").await;
    let (key, _) = enrol(&app, &t.access).await;
    let r = super::oauth::form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", "di@example.com"),
            ("password", PASSWORD),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "mfa_required");
    assert!(body["error_description"].is_string());
    assert_eq!(body["expires_in"], 300);
    let r = verify(
        &app,
        body["mfa_token"].as_str().unwrap(),
        json!({"code": code(&app, &key, 1)}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A wrong password is still the plain invalid_grant: nothing says two-factor is on.
    let r = super::oauth::form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", "di@example.com"),
            ("password", "wrong horse"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn turning_two_factor_off_takes_the_password_and_a_code_and_admins_can_reset_it() {
    // Two enrolments and three attempts to turn it off: more than rate_limits.password's 5.
    let Some(app) = TestApp::spawn_with("rate_limits.password = \"100/1m\"\n").await else {
        return;
    };
    let t = app.user("eve@example.com").await;
    let (key, codes) = enrol(&app, &t.access).await;
    let off = |body: Value| {
        let (app, access) = (&app, t.access.clone());
        async move {
            app.client
                .delete(app.url("/auth/mfa/totp"))
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r =
        off(json!({"password": "wrong horse battery staple", "code": code(&app, &key, 1)})).await;
    assert_error(r, 422, "validation_failed").await;
    let r = off(json!({"password": PASSWORD, "code": "000000x"})).await;
    assert_error(r, 400, "invalid_code").await;
    let r = off(json!({"password": PASSWORD, "code": code(&app, &key, 1)})).await;
    assert_eq!(r.status(), 204);
    let t = app.login("eve@example.com").await;
    assert_eq!(claims_of(&t.access)["amr"], json!(["pwd"]));
    // The recovery codes died with it.
    let (_, _) = enrol(&app, &t.access).await;
    let mfa_token = password_step(&app, "eve@example.com").await;
    let r = verify(&app, &mfa_token, json!({"recovery_code": codes[0]})).await;
    assert_error(r, 400, "invalid_code").await;

    // An administrator turns it off for a user who lost the device.
    let admin = super::admin::make_user(&app, "root@example.com", &["admin"])
        .await
        .access;
    let me: Value = app
        .get_auth("/auth/me", &t.access)
        .await
        .json()
        .await
        .unwrap();
    let id = me["id"].as_str().unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/admin/users/{id}/mfa")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.login_response("eve@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // Not for a stranger.
    let r = app
        .client
        .delete(app.url(&format!("/admin/users/{id}/mfa")))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden").await;
}

#[tokio::test]
async fn the_totp_seed_is_sealed_under_the_key_encryption_key() {
    let kek = "kek = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"";
    let extra = format!("signing.key_encryption_key = {}\n", &kek[6..]);
    let Some(app) = TestApp::spawn_with(&extra).await else {
        return;
    };
    let t = app.user("fay@example.com").await;
    let (key, _) = enrol(&app, &t.access).await;
    let me: Value = app
        .get_auth("/auth/me", &t.access)
        .await
        .json()
        .await
        .unwrap();
    let id = keygate::domain::UserId::parse(me["id"].as_str().unwrap()).unwrap();
    let stored = app.state.auth.store().totp(id).await.unwrap().unwrap();
    assert!(
        stored.secret.starts_with("kg-sealed:v1:"),
        "{}",
        stored.secret
    );
    let mfa_token = password_step(&app, "fay@example.com").await;
    let r = verify(&app, &mfa_token, json!({"code": code(&app, &key, 1)})).await;
    assert_eq!(r.status(), 200);
}

/// `keygate keys rekey` moves every sealed value (issue 27, point 7): a seed stored plain is
/// sealed once a KEK is configured, a seed sealed under KEK 1 is moved to KEK 2 by rekey, and
/// afterwards KEK 1 can go; before the rekey, start-up with KEK 2 alone refuses in one
/// sentence naming the seeds.
#[tokio::test]
async fn rekey_moves_totp_seeds_so_the_old_kek_can_be_dropped() {
    let kek = |byte: u8| crate::helpers::b64(&[byte; 32]);
    let with = |current: u8, previous: Option<u8>| {
        format!(
            "signing.key_encryption_key = \"{}\"\nsigning.previous_key_encryption_keys = [{}]\n",
            kek(current),
            previous
                .map(|p| format!("\"{}\"", kek(p)))
                .unwrap_or_default()
        )
    };
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("kek@example.com").await;
    let (key, _) = enrol(&app, &t.access).await;
    assert_eq!(sealed_seeds(&app).await, 0, "no KEK: stored plain");

    // KEK 1: the plain seed is sealed at start.
    let app = app.restart(&with(1, None)).await;
    assert_eq!(sealed_seeds(&app).await, 1);
    log_in_with_a_code(&app, "kek@example.com", &key).await;

    // KEK 2 with KEK 1 as previous: everything still opens. Signing keys and server secrets
    // moved, the seeds not yet: KEK 2 alone does not start, and says why in one sentence.
    let app = app.restart(&with(2, Some(1))).await;
    log_in_with_a_code(&app, "kek@example.com", &key).await;
    let envelope = app.state.auth.config().signing.envelope();
    let store = app.state.auth.store();
    keygate::auth::seal_stored_keys(&envelope, store, true)
        .await
        .unwrap();
    keygate::auth::sealed::server_secret(
        &envelope,
        store,
        keygate::auth::CSRF_SECRET,
        &[],
        time::OffsetDateTime::now_utc(),
        true,
    )
    .await
    .unwrap();
    let clock = std::sync::Arc::new(keygate::clock::ManualClock::new());
    let Err(e) =
        keygate::App::build_with_clock(TestApp::config(&app.db, &with(2, None)), clock).await
    else {
        panic!("started with a seed no configured KEK opens");
    };
    let message = e.to_string();
    assert!(
        message.starts_with("the two-factor seed of 1 account cannot be used: it is encrypted under key encryption key "),
        "{message}"
    );
    assert!(
        message.contains("signing.previous_key_encryption_keys"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");

    // Rekey moves the seed; KEK 2 alone then starts and the code still works.
    let report = app.state.auth.rekey().await.unwrap();
    assert_eq!(report.totp_seeds.sealed, 1, "{report:?}");
    assert_eq!(report.signing_keys.sealed, 0, "{report:?}");
    let again = app.state.auth.rekey().await.unwrap();
    assert_eq!(
        again.totp_seeds.sealed + again.signing_keys.sealed + again.server_secrets.sealed,
        0
    );
    let app = app.restart(&with(2, None)).await;
    log_in_with_a_code(&app, "kek@example.com", &key).await;
}

/// A login of `email` finished with a fresh code of `key`.
async fn log_in_with_a_code(app: &TestApp, email: &str, key: &[u8]) {
    app.clock.advance(Duration::from_secs(31));
    let mfa_token = password_step(app, email).await;
    let r = verify(app, &mfa_token, json!({"code": code(app, key, 0)})).await;
    assert_eq!(r.status(), 200, "a login with a code");
}

/// How many TOTP seeds are stored sealed.
async fn sealed_seeds(app: &TestApp) -> u64 {
    let count = "update totp set secret = secret where secret like 'kg-sealed:v1:%'";
    app.sql(count, count).await
}
