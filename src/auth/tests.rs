//! Logins racing a revocation: the password check is held open (the hasher's hold point)
//! while the account is disabled or given a new password. On SQLite, and on PostgreSQL when
//! `KEYGATE_TEST_DATABASE_URL` is set (always in CI).

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::domain::ClientInfo;
use crate::store::UserRecord;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new horse battery staple";

async fn auth_on(url: &str) -> Auth {
    let config = Config::from_toml(&format!(
        "database_url = \"{url}\"\nrate_limits.login = \"1000/1m\""
    ))
    .expect("config");
    let store = Store::connect(&config).await.expect("store");
    store.migrate().await.expect("migrate");
    Auth::new(Arc::new(config), store, Arc::new(ManualClock::new()))
        .await
        .expect("auth")
}

async fn user(auth: &Auth, email: &str) -> UserRecord {
    let input = Registration {
        email: Some(email.to_owned()),
        password: Some(PASSWORD.to_owned()),
        ..Default::default()
    };
    auth.register(input, &ClientInfo::default())
        .await
        .expect("register")
}

/// Starts a login of `email` and returns once its password check is done and held.
async fn held_login<'a>(
    auth: &'a Arc<Auth>,
    email: &str,
) -> (
    tokio::sync::MutexGuard<'a, ()>,
    tokio::task::JoinHandle<Result<TokenPair, AuthError>>,
) {
    let gate = auth.hasher.hold.arm().await;
    let login = tokio::spawn({
        let auth = auth.clone();
        let email = email.to_owned();
        async move {
            auth.login(
                Some(email),
                Some(PASSWORD.to_owned()),
                ClientInfo::default(),
            )
            .await
        }
    });
    auth.hasher.hold.reached().await;
    (gate, login)
}

async fn live_sessions(auth: &Auth, user: &UserRecord) -> usize {
    auth.store
        .live_sessions(user.id, auth.now())
        .await
        .expect("sessions")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_that_checked_the_password_before_a_revocation_opens_no_session() {
    for (url, _dir) in crate::testing::databases().await {
        let auth = Arc::new(auth_on(&url).await);
        let operator = ClientInfo::default();

        // Nothing changes while the login is held: it succeeds (the hold itself is harmless).
        let ada = user(&auth, "ada@example.com").await;
        let (gate, login) = held_login(&auth, "ada@example.com").await;
        drop(gate);
        assert!(login.await.expect("login").is_ok(), "{url}");

        // An operator disables the account.
        let bob = user(&auth, "bob@example.com").await;
        let (gate, login) = held_login(&auth, "bob@example.com").await;
        let disable = UserPatch {
            is_active: Some(false),
            ..Default::default()
        };
        auth.update_user(Actor::Operator, &bob.id.to_string(), disable, &operator)
            .await
            .expect("disable");
        drop(gate);
        let result = login.await.expect("login");
        assert!(
            matches!(result, Err(AuthError::AccountDisabled)),
            "{url}: {result:?}"
        );
        assert_eq!(live_sessions(&auth, &bob).await, 0, "{url}");

        // An operator resets the password.
        let cy = user(&auth, "cy@example.com").await;
        let (gate, login) = held_login(&auth, "cy@example.com").await;
        auth.reset_password(&cy.id.to_string(), NEW_PASSWORD, &operator)
            .await
            .expect("reset");
        drop(gate);
        let result = login.await.expect("login");
        assert!(
            matches!(result, Err(AuthError::InvalidCredentials)),
            "{url}: {result:?}"
        );
        assert_eq!(live_sessions(&auth, &cy).await, 0, "{url}");

        // The user changes their password from another session: only that session stays.
        let di = user(&auth, "di@example.com").await;
        let first = auth
            .login(
                Some("di@example.com".into()),
                Some(PASSWORD.into()),
                ClientInfo::default(),
            )
            .await
            .expect("first login");
        let me = auth
            .authenticate(Some(&first.access_token))
            .await
            .expect("principal");
        let (gate, login) = held_login(&auth, "di@example.com").await;
        auth.change_password(
            &me,
            Some(PASSWORD.into()),
            Some(NEW_PASSWORD.into()),
            &ClientInfo::default(),
        )
        .await
        .expect("change");
        drop(gate);
        let result = login.await.expect("login");
        assert!(
            matches!(result, Err(AuthError::InvalidCredentials)),
            "{url}: {result:?}"
        );
        assert_eq!(live_sessions(&auth, &di).await, 1, "{url}");
        assert_eq!(live_sessions(&auth, &ada).await, 1, "{url}");
    }
}
