//! Mailed links are bound to the account state they were made for (issue 27, points 1 and 8):
//! an email change dies with a new password, a reset, a disable or a newer change, whether
//! its link was mailed or is still queued; the old address hears when a change went through;
//! a reset link dies when the address changes; a login that finds a verification mail on its
//! way does not send a second one that would kill the first.

use std::time::Duration;

use keygate::domain::UserId;
use serde_json::{Value, json};

use super::smtp::{SmtpServer, config_for};
use crate::helpers::{PASSWORD, TestApp, assert_error, claims_of, outbox_settled};

const NEW_PASSWORD: &str = "a brand new horse battery staple";
/// A server mailing through `smtp` (with generous rate limits: these tests are about links).
async fn mail_app(smtp: &SmtpServer) -> Option<TestApp> {
    TestApp::spawn_with(&smtp.config()).await
}

async fn ask_change(app: &TestApp, access: &str, new_email: &str) {
    let r = app
        .client
        .post(app.url("/auth/email/change"))
        .bearer_auth(access)
        .json(&json!({"new_email": new_email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn confirm(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/auth/email/change/confirm", &json!({"token": token}))
        .await
}

async fn assert_invalid_code(r: reqwest::Response) {
    let body = assert_error(r, 400, "invalid_code").await;
    assert_eq!(body["message"], "Invalid or expired code");
}

async fn email_of(app: &TestApp, login: &str, password: &str) -> Value {
    let r = app.login_response(login, password).await;
    assert_eq!(r.status(), 200, "{login} logs in");
    let body: Value = r.json().await.unwrap();
    let me = app
        .get_auth("/auth/me", body["access_token"].as_str().unwrap())
        .await;
    me.json::<Value>().await.unwrap()["email"].clone()
}

fn user_id(access: &str) -> UserId {
    UserId::parse(claims_of(access)["sub"].as_str().unwrap()).unwrap()
}

/// The review's scenario: an attacker registers the victim's address, asks to move the account
/// to their own, and waits for the real owner to take the account over with a reset. The
/// attacker's link must be dead from the moment of the reset.
#[tokio::test]
async fn a_pending_email_change_dies_with_a_password_reset() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp).await else {
        return;
    };
    let attacker = app.user("victim@corp.example").await;
    smtp.nth("victim@corp.example", 1).await; // verification
    ask_change(&app, &attacker.access, "attacker@evil.example").await;
    let link = smtp.nth("attacker@evil.example", 1).await.token();
    smtp.nth("victim@corp.example", 2).await; // the notice of the request

    // The owner takes the account over.
    app.post(
        "/auth/password/forgot",
        &json!({"email": "victim@corp.example"}),
    )
    .await;
    let reset = smtp.nth("victim@corp.example", 3).await.token();
    let r = app
        .post(
            "/auth/password/reset",
            &json!({"token": reset, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 204);

    assert_invalid_code(confirm(&app, &link).await).await;
    assert_eq!(
        email_of(&app, "victim@corp.example", NEW_PASSWORD).await,
        "victim@corp.example"
    );
}

#[tokio::test]
async fn a_pending_email_change_dies_with_a_password_change_and_a_disable() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp).await else {
        return;
    };
    let t = app.user("owner@example.com").await;
    smtp.nth("owner@example.com", 1).await;

    // A password change.
    ask_change(&app, &t.access, "thief@example.net").await;
    let link = smtp.nth("thief@example.net", 1).await.token();
    let r = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&t.access)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_invalid_code(confirm(&app, &link).await).await;

    // A disable, even once the account is enabled again.
    let t = app.login_response("owner@example.com", NEW_PASSWORD).await;
    let access = crate::helpers::tokens(t.json().await.unwrap()).access;
    let r = app
        .client
        .post(app.url("/auth/email/change"))
        .bearer_auth(&access)
        .json(&json!({"new_email": "thief@example.net", "password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let link = smtp.nth("thief@example.net", 2).await.token();
    let store = app.state.auth.store();
    let now = time::OffsetDateTime::now_utc();
    assert!(
        store
            .set_user_active(user_id(&access), false, now)
            .await
            .unwrap()
    );
    assert_invalid_code(confirm(&app, &link).await).await;
    assert!(
        store
            .set_user_active(user_id(&access), true, now)
            .await
            .unwrap()
    );
    assert_invalid_code(confirm(&app, &link).await).await;
    assert_eq!(
        email_of(&app, "owner@example.com", NEW_PASSWORD).await,
        "owner@example.com"
    );
}

#[tokio::test]
async fn a_newer_email_change_kills_the_older_link_and_the_old_address_hears_of_the_change() {
    let smtp = SmtpServer::start();
    let Some(app) = mail_app(&smtp).await else {
        return;
    };
    let t = app.user("ivy@example.com").await;
    smtp.nth("ivy@example.com", 1).await;
    ask_change(&app, &t.access, "ivy@first.example").await;
    let first = smtp.nth("ivy@first.example", 1).await.token();
    ask_change(&app, &t.access, "ivy@second.example").await;
    let second = smtp.nth("ivy@second.example", 1).await.token();
    assert_invalid_code(confirm(&app, &first).await).await;

    // A reset link mailed to the old address, still unused when the address changes.
    app.post(
        "/auth/password/forgot",
        &json!({"email": "ivy@example.com"}),
    )
    .await;
    let reset = smtp.nth("ivy@example.com", 4).await; // verification, 2 notices, the reset
    assert!(reset.link().contains("/ui/reset-password?token="));

    let r = confirm(&app, &second).await;
    assert_eq!(r.status(), 200);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "ivy@second.example");

    // The old address is told the change happened (a notice, no link).
    let done = smtp.nth("ivy@example.com", 5).await;
    assert!(done.subject().contains("was changed"), "{}", done.subject());
    assert!(
        done.text().contains("ivy@second.example"),
        "{}",
        done.text()
    );
    assert!(!done.text().contains("token="));

    // The reset link sent to the old address no longer works.
    let r = app
        .post(
            "/auth/password/reset",
            &json!({"token": reset.token(), "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_invalid_code(r).await;
    assert_eq!(
        email_of(&app, "ivy@second.example", PASSWORD).await,
        "ivy@second.example"
    );
}

/// A change mail still in the outbox when the password changes is never sent: its link would
/// be dead anyway, and a dead link in the attacker's inbox is still a lure.
#[tokio::test]
async fn a_queued_change_mail_is_dropped_when_the_credentials_change() {
    let (port, start) = SmtpServer::down();
    let config = config_for(port);
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    let t = app.user("joy@example.com").await;
    ask_change(&app, &t.access, "joy@elsewhere.example").await;
    let r = app
        .client
        .post(app.url("/auth/password"))
        .bearer_auth(&t.access)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let smtp = start();
    // The retries are due after their back-off, on the server's clock: time passes until
    // the outbox has nothing left to send.
    let store = app.state.auth.store();
    for _ in 0..200 {
        if store.pending_mail().await.unwrap() == 0 {
            break;
        }
        app.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outbox_settled(&app).await;
    assert!(
        smtp.to("joy@elsewhere.example").is_empty(),
        "a change asked under the old password was mailed"
    );
    // The verification and the notice of the request went out.
    assert_eq!(smtp.to("joy@example.com").len(), 2);
}

/// With `email.require_verified`, a refused login sends a new link only when none is on its
/// way: a verification mail still queued counts (its token is made when it is sent), so the
/// first mail's link keeps working.
#[tokio::test]
async fn a_login_while_the_first_verification_mail_is_queued_sends_no_second_one() {
    // A relay that accepts connections and never answers: the sender is stuck on the first
    // message for its SMTP timeout, and the next registration's mail waits behind it, made
    // but without a token, as it would behind any backlog.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let (entered, stuck) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hole.incoming() {
            held.push(c);
            let _ = entered.send(());
        }
    });
    let config = format!("{}email.require_verified = true\n", config_for(port));
    let Some(app) = TestApp::spawn_with(&config).await else {
        return;
    };
    app.register("first@example.com").await;
    tokio::task::spawn_blocking(move || stuck.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the sender reaches the relay");
    app.register("kim@example.com").await;
    let (a, b) = tokio::join!(
        app.login_response("kim@example.com", PASSWORD),
        app.login_response("kim@example.com", PASSWORD)
    );
    assert_error(a, 403, "email_not_verified").await;
    assert_error(b, 403, "email_not_verified").await;
    assert_eq!(
        app.state.auth.store().pending_mail().await.unwrap(),
        2,
        "first's mail (being sent) and kim's (queued); no second one for kim"
    );

    // With a relay that works: register, two logins at once, and the first mail's link
    // verifies.
    let smtp = SmtpServer::start();
    let Some(app) =
        TestApp::spawn_with(&format!("{}email.require_verified = true\n", smtp.config())).await
    else {
        return;
    };
    app.register("lee@example.com").await;
    let (a, b) = tokio::join!(
        app.login_response("lee@example.com", PASSWORD),
        app.login_response("lee@example.com", PASSWORD)
    );
    assert_error(a, 403, "email_not_verified").await;
    assert_error(b, 403, "email_not_verified").await;
    let first = smtp.nth("lee@example.com", 1).await;
    outbox_settled(&app).await;
    assert_eq!(smtp.to("lee@example.com").len(), 1);
    let r = app
        .post("/auth/email/verify", &json!({"token": first.token()}))
        .await;
    assert_eq!(r.status(), 204);
}
