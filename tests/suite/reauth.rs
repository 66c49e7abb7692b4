//! Re-authentication takes the account's failed-login budget (issue 27, point 3): every
//! endpoint that checks the current password (email change, password change, two-factor on
//! and off) counts a wrong one against the account, so a stolen access token cannot be used
//! to guess the password from many addresses; the owner's known-good address still logs in.

use reqwest::Method;
use serde_json::{Value, json};

use super::smtp::SmtpServer;
use crate::helpers::{PASSWORD, TestApp, assert_error};

const WRONG: &str = "not the password at all";

/// Each endpoint that re-authenticates, with a body holding `password`.
fn endpoints(password: &str) -> [(Method, &'static str, Value); 4] {
    [
        (
            Method::POST,
            "/auth/email/change",
            json!({"new_email": "elsewhere@example.net", "password": password}),
        ),
        (
            Method::POST,
            "/auth/password",
            json!({"current_password": password, "new_password": "an entirely new horse battery"}),
        ),
        (
            Method::POST,
            "/auth/mfa/totp",
            json!({"password": password}),
        ),
        (
            Method::DELETE,
            "/auth/mfa/totp",
            json!({"password": password, "code": "000000"}),
        ),
    ]
}

#[tokio::test]
async fn every_password_check_takes_the_accounts_failed_login_budget() {
    let smtp = SmtpServer::start();
    let config = format!(
        "{}trusted_proxies = \"127.0.0.1\"\nrate_limits.failed_logins = \"3/15m\"\n",
        smtp.config()
    );
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    for (i, (method, path, _)) in endpoints(WRONG).into_iter().enumerate() {
        let email = format!("owner{i}@example.com");
        app.register(&email).await;
        // The owner logs in from home: that address becomes known good for the account.
        let home = format!("203.0.113.{}", i + 1);
        let r = app
            .client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", &home)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let access = r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        // A thief with the access token guesses from a new address each time.
        let send = |ip: String, password: &str| {
            let (method, body) = endpoints(password)
                .into_iter()
                .find(|(m, p, _)| *m == method && *p == path)
                .map(|(m, _, b)| (m, b))
                .unwrap();
            let app = &app;
            let access = access.clone();
            async move {
                app.client
                    .request(method, app.url(path))
                    .header("x-forwarded-for", ip)
                    .bearer_auth(access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
            }
        };
        for n in 0..3 {
            let r = send(format!("198.51.{i}.{n}"), WRONG).await;
            assert_error(r, 422, "validation_failed").await;
        }
        // The account is in back-off for unknown addresses: no more guesses, and not even
        // the right password is checked.
        let r = send(format!("198.51.{i}.100"), WRONG).await;
        assert_error(r, 429, "rate_limited").await;
        let r = send(format!("198.51.{i}.101"), PASSWORD).await;
        assert_error(r, 429, "rate_limited").await;
        // The same budget as logins: a login from an unknown address waits too, while the
        // owner's home address still gets in.
        let r = app
            .client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.{i}.102"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_error(r, 429, "rate_limited").await;
        let r = app
            .client
            .post(app.url("/auth/login"))
            .header("x-forwarded-for", &home)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{method} {path}: the owner is not locked out"
        );
    }
}
