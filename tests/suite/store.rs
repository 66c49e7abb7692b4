//! Store contract: the same behaviour from both backends, called directly.

use std::time::Duration;

use keygate::domain::{Email, SessionId};
use keygate::store::{AuditQuery, NewAuditEvent, NewSession, NewUser, Rotation, StoreError};
use keygate::token::{RefreshToken, generate_key};

use crate::helpers::TestApp;

fn new_user(email: &str, username: Option<&str>) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        username: username.map(str::to_owned),
        name: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_owned(),
        roles: vec!["admin".to_owned()],
        permissions: vec![],
    }
}

#[tokio::test]
async fn unique_violations_name_the_column() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let store = app.state.auth.store();
    let now = app.state.auth.now();
    let user = store
        .insert_user(new_user("a@example.com", Some("ada")), now)
        .await
        .unwrap();
    assert_eq!(user.roles, vec!["admin"]);
    let e = store
        .insert_user(new_user("a@example.com", None), now)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict("email")), "{e:?}");
    let e = store
        .insert_user(new_user("b@example.com", Some("ada")), now)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict("username")), "{e:?}");
    // Several users without a username are fine.
    store
        .insert_user(new_user("c@example.com", None), now)
        .await
        .unwrap();
    store
        .insert_user(new_user("d@example.com", None), now)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_one_rotation_from_a_generation_wins() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let store = app.state.auth.store();
    let now = app.state.auth.now();
    let user = store
        .insert_user(new_user("a@example.com", None), now)
        .await
        .unwrap();
    let id = SessionId::new();
    let first = RefreshToken::generate(id);
    store
        .insert_session(
            &NewSession {
                id,
                user_id: user.id,
                refresh_hash: first.hash(),
                refresh_expires_at: now + Duration::from_secs(3600),
                expires_at: None,
                user_agent: None,
                ip: None,
                credentials_version: 0,
                mfa: false,
            },
            now,
        )
        .await
        .unwrap();
    let rotation = |next: &RefreshToken| Rotation {
        id,
        from_generation: 0,
        previous_hash: first.hash(),
        new_hash: next.hash(),
        sealed_successor: first.seal(next, b"ctx"),
        refresh_expires_at: now + Duration::from_secs(3600),
    };
    let (x, y) = (RefreshToken::generate(id), RefreshToken::generate(id));
    let (rx, ry) = (rotation(&x), rotation(&y));
    let (won_x, won_y) = tokio::join!(
        store.rotate_refresh(&rx, now, None),
        store.rotate_refresh(&ry, now, None)
    );
    assert!(won_x.unwrap() ^ won_y.unwrap(), "exactly one wins");
    let row = store.find_session(id).await.unwrap().unwrap();
    assert_eq!(row.generation, 1);
    assert!(row.previous_hash.unwrap().matches(&first.hash()));
    assert!(store.revoke_session(id, "test", now).await.unwrap());
    assert!(
        !store.revoke_session(id, "test", now).await.unwrap(),
        "already revoked"
    );
    assert!(
        !store
            .rotate_refresh(
                &Rotation {
                    from_generation: 1,
                    ..rotation(&x)
                },
                now,
                None
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn only_one_active_key_per_algorithm() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let store = app.state.auth.store();
    let active = store
        .active_key("EdDSA")
        .await
        .unwrap()
        .expect("made at start-up");
    let other = generate_key(jsonwebtoken::Algorithm::EdDSA, app.state.auth.now()).unwrap();
    assert!(!store.insert_active_key_if_absent(&other).await.unwrap());
    assert_eq!(
        store.active_key("EdDSA").await.unwrap().unwrap().kid,
        active.kid
    );
}

#[tokio::test]
async fn audit_events_page_newest_first() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let store = app.state.auth.store();
    let client = keygate::domain::ClientInfo::default();
    for _ in 0..5 {
        let e = NewAuditEvent {
            event: "login_failed",
            user_id: None,
            session_id: None,
            ip: client.ip.as_deref(),
            user_agent: None,
            success: false,
            reason: Some("unknown_account"),
        };
        store.record_audit(&e, app.state.auth.now()).await.unwrap();
    }
    let q = |before: Option<String>| AuditQuery {
        event: Some("login_failed".into()),
        before,
        limit: 2,
        ..Default::default()
    };
    let page1 = store.audit_events(&q(None)).await.unwrap();
    let page2 = store
        .audit_events(&q(Some(page1[1].id.clone())))
        .await
        .unwrap();
    let page3 = store
        .audit_events(&q(Some(page2[1].id.clone())))
        .await
        .unwrap();
    assert_eq!((page1.len(), page2.len(), page3.len()), (2, 2, 1));
    assert!(page1[0].id > page1[1].id && page1[1].id > page2[0].id);
}
