//! Store tests that need to stop a read half-way, which only the crate itself can do.

use std::sync::Arc;

use time::OffsetDateTime;

use super::*;
use crate::clock::ManualClock;
use crate::domain::{Email, SessionId};
use crate::token::RefreshHash;

/// The URL of the database of [`store`] in `dir`.
pub(super) fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("keygate.db").display())
}

/// A migrated SQLite store in a temporary directory, timed by a clock that does not move (so
/// no cache entry expires by itself during a test).
pub(super) async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    (store_on(&url(&dir)).await, dir)
}

/// A migrated store on `url`, timed by a clock that does not move.
async fn store_on(url: &str) -> Store {
    let config = Config::from_toml(&format!("database_url = \"{url}\"")).expect("config");
    let store = Store::connect(&config)
        .await
        .expect("store")
        .with_clock(Arc::new(ManualClock::new()));
    store.migrate().await.expect("migrate");
    store
}

pub(super) async fn user_with_session(
    store: &Store,
    now: OffsetDateTime,
) -> (UserRecord, SessionId) {
    let user = store
        .insert_user(
            NewUser {
                email: Email::parse("ada@example.com").expect("email"),
                username: None,
                name: None,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA".into(),
                roles: vec![],
                permissions: vec![],
            },
            now,
        )
        .await
        .expect("user");
    let session = new_session(user.id, now);
    store.insert_session(&session, now).await.expect("session");
    (user, session.id)
}

/// A new session of `user`, not stored.
pub(super) fn new_session(user: crate::domain::UserId, now: OffsetDateTime) -> NewSession {
    NewSession {
        id: SessionId::new(),
        user_id: user,
        refresh_hash: RefreshHash([7; 32]),
        refresh_expires_at: now + time::Duration::days(1),
        expires_at: None,
        user_agent: None,
        ip: None,
        credentials_version: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_liveness_read_overtaken_by_a_revoke_does_not_refill_the_cache() {
    for (url, _dir) in crate::testing::databases().await {
        liveness_read_overtaken_by_a_revoke(&store_on(&url).await).await;
    }
}

async fn liveness_read_overtaken_by_a_revoke(store: &Store) {
    let now = OffsetDateTime::now_utc();
    let (user, id) = user_with_session(store, now).await;

    let gate = store.cache.hold.arm().await;
    let read = tokio::spawn({
        let store = store.clone();
        async move { store.session_is_live(id, user.id, now).await }
    });
    store.cache.hold.reached().await;
    // The read has its answer ("live") but has not stored it yet; now the session ends.
    assert!(
        store
            .revoke_session(id, "logout", now)
            .await
            .expect("revoke")
    );
    drop(gate);
    assert!(read.await.expect("read").expect("live"), "it read before");
    assert!(
        !store.session_is_live(id, user.id, now).await.expect("read"),
        "a revoked session served as live from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_read_overtaken_by_a_disable_does_not_refill_the_cache() {
    for (url, _dir) in crate::testing::databases().await {
        user_read_overtaken_by_a_disable(&store_on(&url).await).await;
    }
}

async fn user_read_overtaken_by_a_disable(store: &Store) {
    let now = OffsetDateTime::now_utc();
    let (user, _) = user_with_session(store, now).await;

    let gate = store.cache.hold.arm().await;
    let read = tokio::spawn({
        let store = store.clone();
        async move { store.find_user(user.id).await }
    });
    store.cache.hold.reached().await;
    assert!(
        store
            .set_user_active(user.id, false, now)
            .await
            .expect("disable")
    );
    drop(gate);
    let before = read.await.expect("read").expect("user").expect("exists");
    assert!(before.is_active, "it read before");
    let after = store
        .find_user(user.id)
        .await
        .expect("read")
        .expect("exists");
    assert!(
        !after.is_active,
        "a disabled user served as active from the cache"
    );
}
