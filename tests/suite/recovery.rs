//! Email verification, password reset and email change over real SMTP (issue 16), and the
//! outbox: two nodes send each message once; mail waits while the SMTP server is down, across
//! a restart, and goes out when it returns.

use std::time::Duration;

use serde_json::{Value, json};

use super::smtp::{SmtpServer, TestCa, config_for};
use crate::helpers::{PASSWORD, TestApp, assert_error, claims_of, outbox_settled, tokens};

const NEW_PASSWORD: &str = "a brand new horse battery staple";
/// The default issuer, and so the default `public_url` links point at.
const ISSUER: &str = "http://127.0.0.1:8080";

async fn mail_app(smtp: &SmtpServer, extra: &str) -> Option<TestApp> {
    TestApp::spawn_with(&format!("{}{extra}", smtp.config())).await
}

async fn me(app: &TestApp, access: &str) -> Value {
    let r = app.get_auth("/auth/me", access).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `/readyz`'s status and body.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits (at most 5 s) until `/readyz` says `email: failing`; it must stay 200 meanwhile.
async fn wait_until_mail_fails(app: &TestApp) -> Value {
    for _ in 0..100 {
        let (status, body) = readyz(app).await;
        assert_eq!(
            status, 200,
            "a failing SMTP server never makes the node unready"
        );
        if body["checks"]["email"] == "failing" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz did not say mail is failing");
}

/// The one message for every bad token, whatever made it bad.
async fn assert_invalid_code(r: reqwest::Response) {
    let body = assert_error(r, 400, "invalid_code").await;
    assert_eq!(body["message"], "Invalid or expired code");
}

#[tokio::test]
async fn registration_sends_a_verification_link_that_works_once() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp, "").await else {
        return;
    };
    let t = app.user("ada@example.com").await;
    assert_eq!(me(&app, &t.access).await["email_verified"], false);
    assert_eq!(claims_of(&t.access)["email_verified"], false);
    assert_eq!(claims_of(&t.access)["amr"], json!(["pwd"]));

    let mail = smtp.nth("ada@example.com", 1).await;
    assert!(
        mail.subject().contains("Verify your email"),
        "{}",
        mail.subject()
    );
    let link = mail.link();
    assert!(
        link.starts_with(&format!("{ISSUER}/ui/verify-email?token=")),
        "{link}"
    );
    assert!(mail.part("text/html").contains("Verify my email address"));
    let token = mail.token();

    let r = app
        .post("/auth/email/verify", &json!({"token": token}))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(me(&app, &t.access).await["email_verified"], true);
    // Tokens issued from now on say so (a refresh reads the user again).
    let refreshed = tokens(app.refresh(&t.refresh).await.json().await.unwrap());
    assert_eq!(claims_of(&refreshed.access)["email_verified"], true);

    // Used: the same answer as a made-up token or garbage.
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": token}))
            .await,
    )
    .await;
    let forged = format!("{}.{}", &token[..32], "A".repeat(43));
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": forged}))
            .await,
    )
    .await;
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": "nonsense"}))
            .await,
    )
    .await;
    assert_error(
        app.post("/auth/email/verify", &json!({})).await,
        422,
        "validation_failed",
    )
    .await;

    // Verified: a resend sends nothing (and still answers 202).
    let r = app
        .client
        .post(app.url("/auth/email/verify/resend"))
        .bearer_auth(&refreshed.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    outbox_settled(&app).await;
    assert_eq!(smtp.to("ada@example.com").len(), 1);
}

#[tokio::test]
async fn a_resent_link_supersedes_the_older_one_and_links_expire() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp, "").await else {
        return;
    };
    let t = app.user("bo@example.com").await;
    let first = smtp.nth("bo@example.com", 1).await.token();
    let resend = || {
        let (app, access) = (&app, t.access.clone());
        async move {
            app.client
                .post(app.url("/auth/email/verify/resend"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(resend().await.status(), 202);
    let second = smtp.nth("bo@example.com", 2).await.token();
    assert_ne!(first, second);
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": first}))
            .await,
    )
    .await;

    // A third link, left to expire (email.verification_ttl, 24 h).
    assert_eq!(resend().await.status(), 202);
    let third = smtp.nth("bo@example.com", 3).await.token();
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": second}))
            .await,
    )
    .await;
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_invalid_code(
        app.post("/auth/email/verify", &json!({"token": third}))
            .await,
    )
    .await;
}

#[tokio::test]
async fn with_require_verified_an_unverified_account_cannot_log_in() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp, "email.require_verified = true\n").await else {
        return;
    };
    app.register("cy@example.com").await;
    let link = smtp.nth("cy@example.com", 1).await.token();
    let r = app.login_response("cy@example.com", PASSWORD).await;
    assert_error(r, 403, "email_not_verified").await;
    // A wrong password says nothing about verification.
    let r = app
        .login_response("cy@example.com", "wrong horse battery staple")
        .await;
    assert_error(r, 401, "invalid_credentials").await;
    // The password grant refuses it too, in RFC 6749's shape.
    let r = super::oauth::form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", "cy@example.com"),
            ("password", PASSWORD),
        ],
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("email_not_verified")
    );
    // A live link is on its way: the refused login sent no second one.
    outbox_settled(&app).await;
    assert_eq!(smtp.to("cy@example.com").len(), 1);

    let r = app
        .post("/auth/email/verify", &json!({"token": link}))
        .await;
    assert_eq!(r.status(), 204);
    let t = app.login("cy@example.com").await;
    assert_eq!(claims_of(&t.access)["email_verified"], true);

    // Once the link has expired, a refused login sends a new one (the password was right).
    app.register("di@example.com").await;
    smtp.nth("di@example.com", 1).await;
    app.clock.advance(Duration::from_secs(25 * 3600));
    let r = app.login_response("di@example.com", PASSWORD).await;
    assert_error(r, 403, "email_not_verified").await;
    let fresh = smtp.nth("di@example.com", 2).await.token();
    assert_eq!(
        app.post("/auth/email/verify", &json!({"token": fresh}))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn forgot_password_answers_alike_for_anyone_and_the_reset_ends_every_session() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp, "").await else {
        return;
    };
    let first = app.user("eve@example.com").await;
    let second = app.login("eve@example.com").await;
    smtp.nth("eve@example.com", 1).await; // the verification mail

    let known = app
        .post(
            "/auth/password/forgot",
            &json!({"email": "Eve@Example.com"}),
        )
        .await;
    let unknown = app
        .post(
            "/auth/password/forgot",
            &json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
    let mail = smtp.nth("eve@example.com", 2).await;
    assert!(mail.subject().contains("Reset your"), "{}", mail.subject());
    assert!(
        mail.link()
            .starts_with(&format!("{ISSUER}/ui/reset-password?token="))
    );
    outbox_settled(&app).await;
    assert!(
        smtp.to("nobody@example.com").is_empty(),
        "mail to an unknown address"
    );

    // A newer request supersedes the older link.
    let older = mail.token();
    app.post(
        "/auth/password/forgot",
        &json!({"email": "eve@example.com"}),
    )
    .await;
    let token = smtp.nth("eve@example.com", 3).await.token();
    let reset = |token: String, password: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/auth/password/reset",
                &json!({"token": token, "new_password": password}),
            )
            .await
        }
    };
    assert_invalid_code(reset(older, NEW_PASSWORD).await).await;
    // The policy applies (and a refused password leaves the link usable).
    assert_error(
        reset(token.clone(), "password").await,
        422,
        "validation_failed",
    )
    .await;

    assert_eq!(reset(token.clone(), NEW_PASSWORD).await.status(), 204);
    // Every session ended, both kinds of token.
    for t in [&first, &second] {
        assert_error(app.refresh(&t.refresh).await, 401, "invalid_refresh_token").await;
        assert_eq!(app.me_status(&t.access).await, 401);
    }
    assert_error(
        app.login_response("eve@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let fresh = app.login_response("eve@example.com", NEW_PASSWORD).await;
    assert_eq!(fresh.status(), 200);
    // Single use.
    assert_invalid_code(reset(token, "yet another horse battery staple").await).await;

    // A reset link dies when the password changes another way, and when it expires.
    app.post(
        "/auth/password/forgot",
        &json!({"email": "eve@example.com"}),
    )
    .await;
    let token = smtp.nth("eve@example.com", 4).await.token();
    let t = tokens(fresh.json().await.unwrap());
    let r = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&t.access)
        .json(&json!({"current_password": NEW_PASSWORD, "new_password": "the third horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_invalid_code(reset(token, NEW_PASSWORD).await).await;
    app.post(
        "/auth/password/forgot",
        &json!({"email": "eve@example.com"}),
    )
    .await;
    let token = smtp.nth("eve@example.com", 5).await.token();
    app.clock.advance(Duration::from_secs(31 * 60));
    assert_invalid_code(reset(token, NEW_PASSWORD).await).await;
}

#[tokio::test]
async fn forgot_password_is_limited_per_address_and_per_ip() {
    let smtp = SmtpServer::start();
    // The default rate (5 a minute), not the mail tests' generous one; client IPs from
    // X-Forwarded-For, so that each budget shows on its own.
    let Some(app) = TestApp::spawn_with(&format!(
        "{}rate_limits.password = \"5/1m\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        config_for(smtp.port).replace("rate_limits.password = \"1000/1m\"\n", "")
    ))
    .await
    else {
        return;
    };
    let forgot = |email: &'static str, ip: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/auth/password/forgot"))
                .header("x-forwarded-for", ip)
                .json(&json!({"email": email}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // One address, asked from many places: five mails a minute at most.
    let mut statuses = Vec::new();
    for i in 0..7 {
        statuses.push(forgot("fay@example.com", format!("203.0.113.{i}")).await);
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429, 429], "per address");
    // One client asking for many addresses: five a minute.
    let addresses = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
        "e@example.com",
        "f@example.com",
    ];
    let mut statuses = Vec::new();
    for email in addresses {
        statuses.push(forgot(email, "198.51.100.7".to_owned()).await);
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429], "per IP");
}

#[tokio::test]
async fn an_email_change_links_the_new_address_notifies_the_old_and_ends_nothing() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp, "").await else {
        return;
    };
    let t = app.user("gus@example.com").await;
    let other = app.login("gus@example.com").await;
    smtp.nth("gus@example.com", 1).await;
    let change = |body: Value| {
        let app = &app;
        let access = t.access.clone();
        async move {
            app.client
                .post(app.url("/auth/email/change"))
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r =
        change(json!({"new_email": "gus@example.org", "password": "wrong horse battery staple"}))
            .await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert!(body["fields"]["password"].is_string());
    let r = change(json!({"new_email": "gus@example.org", "password": PASSWORD})).await;
    assert_eq!(r.status(), 202);

    let link = smtp.nth("gus@example.org", 1).await;
    assert!(
        link.link()
            .starts_with(&format!("{ISSUER}/ui/confirm-email?token="))
    );
    let notice = smtp.nth("gus@example.com", 2).await;
    assert!(
        notice.text().contains("gus@example.org"),
        "{}",
        notice.text()
    );
    assert!(
        !notice.text().contains("token="),
        "the notice carries no link"
    );
    // Nothing changed yet.
    assert_eq!(me(&app, &t.access).await["email"], "gus@example.com");

    let r = app
        .post(
            "/auth/email/change/confirm",
            &json!({"token": link.token()}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "gus@example.org");
    assert_eq!(user["email_verified"], true);
    // No session ended.
    assert_eq!(app.refresh(&other.refresh).await.status(), 200);
    assert_eq!(app.me_status(&t.access).await, 200);
    assert_eq!(
        app.login_response("gus@example.org", PASSWORD)
            .await
            .status(),
        200
    );
    assert_error(
        app.login_response("gus@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_invalid_code(
        app.post(
            "/auth/email/change/confirm",
            &json!({"token": link.token()}),
        )
        .await,
    )
    .await;

    // The new address must still be free when the link is followed.
    let r = change(json!({"new_email": "hal@example.com", "password": PASSWORD})).await;
    assert_eq!(r.status(), 202);
    let token = smtp.nth("hal@example.com", 1).await.token();
    app.register("hal@example.com").await;
    let r = app
        .post("/auth/email/change/confirm", &json!({"token": token}))
        .await;
    assert_error(r, 409, "email_taken").await;
}

#[tokio::test]
async fn without_smtp_the_mail_endpoints_answer_503_and_nothing_needs_verifying() {
    let Some(app) = TestApp::spawn_with("email.require_verified = true\n").await else {
        return;
    };
    let t = app.user("ian@example.com").await;
    let bodies = [
        ("/auth/email/verify", json!({"token": "x"}), false),
        ("/auth/email/verify/resend", json!({}), true),
        (
            "/auth/password/forgot",
            json!({"email": "ian@example.com"}),
            false,
        ),
        (
            "/auth/password/reset",
            json!({"token": "x", "new_password": NEW_PASSWORD}),
            false,
        ),
        (
            "/auth/email/change",
            json!({"new_email": "ian@example.org", "password": PASSWORD}),
            true,
        ),
        ("/auth/email/change/confirm", json!({"token": "x"}), false),
    ];
    for (path, body, bearer) in bodies {
        let mut request = app.client.post(app.url(path)).json(&body);
        if bearer {
            request = request.bearer_auth(&t.access);
        }
        let r = request.send().await.unwrap();
        let body = assert_error(r, 503, "unavailable").await;
        assert_eq!(
            body["message"], "Email is not configured on this server",
            "{path}"
        );
    }
    let (_, ready) = readyz(&app).await;
    assert_eq!(ready["checks"]["email"], "not_configured");
}

#[tokio::test]
async fn two_nodes_send_each_message_once() {
    let smtp = SmtpServer::start();
    let Some(a) = mail_app(&smtp, "").await else {
        return;
    };
    let b = a.sibling(&smtp.config()).await;
    let users: Vec<String> = (0..12).map(|i| format!("user{i}@example.com")).collect();
    for (i, email) in users.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &b };
        node.register(email).await;
    }
    for email in &users {
        smtp.wait_for(email, 1).await;
    }
    // Both nodes ask for resets of every user at once.
    let bodies: Vec<Value> = users.iter().map(|email| json!({"email": email})).collect();
    let mut asks = Vec::new();
    for body in &bodies {
        for node in [&a, &b] {
            asks.push(node.post("/auth/password/forgot", body));
        }
    }
    for r in futures_util::future::join_all(asks).await {
        assert_eq!(r.status(), 202);
    }
    for email in &users {
        smtp.wait_for(email, 3).await;
    }
    // Every row sent (sent_at written after the SMTP server took the message): no node is in
    // the middle of sending one, so every message sent is captured and none can follow.
    outbox_settled(&a).await;
    for email in &users {
        assert_eq!(smtp.to(email).len(), 3, "{email}: each message once");
    }
    let pending = a.state.auth.store().pending_mail().await.unwrap();
    assert_eq!(pending, 0);
    // Sent mail stays a week for operators, then the purge deletes it.
    let purged = a.state.auth.purge().await.unwrap();
    assert_eq!(purged.mail, 0, "nothing is old enough yet");
    a.clock
        .advance(keygate::store::MAIL_RETENTION + Duration::from_secs(1));
    let purged = a.state.auth.purge().await.unwrap();
    // 12 verification and 24 reset messages, and the 24 expired link tokens (each user's
    // second reset link superseded the first).
    assert_eq!(purged.mail, 36 + 24, "{purged:?}");
}

#[tokio::test]
async fn mail_waits_while_smtp_is_down_survives_a_restart_and_goes_out_when_it_returns() {
    let (port, start) = SmtpServer::down();
    let config = config_for(port);
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    // The request succeeds: the mail is queued, not sent.
    app.register("jo@example.com").await;
    let body = wait_until_mail_fails(&app).await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(app.state.auth.store().pending_mail().await.unwrap(), 1);

    // A restart (the process is gone; the outbox is in the database).
    let app = app.restart(&config).await;
    let smtp = start();
    // The retry is due after its back-off (on the server's clock).
    app.clock.advance(Duration::from_secs(60));
    let mail = smtp.nth("jo@example.com", 1).await;
    let r = app
        .post("/auth/email/verify", &json!({"token": mail.token()}))
        .await;
    assert_eq!(r.status(), 204);
    let (_, body) = readyz(&app).await;
    assert_eq!(body["checks"]["email"], "ok");
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn mail_goes_out_over_starttls_and_implicit_tls_to_a_relay_of_a_private_ca() {
    let ca = TestCa::new();
    for (scheme, implicit) in [("smtp", false), ("smtps", true)] {
        let smtp = SmtpServer::start_tls(&ca, implicit);
        let config = format!(
            "email.smtp_url = \"{scheme}://127.0.0.1:{}\"\n\
             email.from = \"Keygate <no-reply@keygate.test>\"\n\
             email.tls_ca_file = \"{}\"\n",
            smtp.port,
            ca.ca_path.display()
        );
        let Some(app) = TestApp::spawn_with(&config).await else {
            return;
        };
        app.register("kim@example.com").await;
        let mail = smtp.nth("kim@example.com", 1).await;
        assert!(mail.link().contains("/ui/verify-email?token="), "{scheme}");
    }
    // Without the CA the relay's certificate is refused: nothing goes out in clear, the
    // mail waits and /readyz says so.
    let smtp = SmtpServer::start_tls(&ca, false);
    let Some(app) = TestApp::spawn_with(&format!(
        "email.smtp_url = \"smtp://127.0.0.1:{}\"\nemail.from = \"Keygate <no-reply@keygate.test>\"\n",
        smtp.port
    ))
    .await
    else {
        return;
    };
    app.register("lu@example.com").await;
    // The delivery fails: an untrusted certificate is never accepted.
    wait_until_mail_fails(&app).await;
    assert!(smtp.messages().is_empty());
}
