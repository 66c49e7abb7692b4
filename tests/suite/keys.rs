//! Signing keys at rest (issue 14, point 5): private keys sealed under a key encryption key,
//! plain keys sealed at start, `rekey` to a new KEK, and clear start-up failures.

use std::sync::Arc;

use keygate::App;
use keygate::clock::ManualClock;
use keygate::envelope::Envelope;
use secrecy::ExposeSecret as _;

use crate::helpers::{TestApp, TestDb, b64};

fn kek(byte: u8) -> String {
    b64(&[byte; 32])
}

fn with_kek(current: u8, previous: &[u8]) -> String {
    let previous: Vec<String> = previous
        .iter()
        .map(|b| format!("\"{}\"", kek(*b)))
        .collect();
    format!(
        "signing.key_encryption_key = \"{}\"\nsigning.previous_key_encryption_keys = [{}]\n",
        kek(current),
        previous.join(", ")
    )
}

/// The stored private parts, straight from the database.
async fn stored(app: &TestApp) -> Vec<(String, String)> {
    app.state
        .auth
        .store()
        .stored_private_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(kid, text)| (kid, text.expose_secret().to_owned()))
        .collect()
}

/// The key's PKCS#8 DER, opened with `extra`'s KEKs.
fn der_of(extra: &str, kid: &str, text: &str) -> Vec<u8> {
    let config = TestApp::config(
        &TestDb::Sqlite(Arc::new(tempfile::tempdir().unwrap())),
        extra,
    );
    let pem = config.signing.envelope().open(text, kid).unwrap();
    pem::parse(pem.expose_secret()).unwrap().into_contents()
}

/// Every byte SQLite keeps for the database (the file, its write-ahead log, its shared
/// memory index).
fn sqlite_bytes(db: &TestDb) -> Vec<u8> {
    let TestDb::Sqlite(dir) = db else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Neither the PEM text nor the raw key bytes of any key are in the database.
async fn assert_nothing_plain(app: &TestApp, extra: &str) {
    let rows = stored(app).await;
    assert!(!rows.is_empty());
    let bytes = sqlite_bytes(&app.db);
    for (kid, text) in &rows {
        assert!(Envelope::is_sealed(text), "{kid} is stored plain");
        assert!(!text.contains("PRIVATE KEY"));
        let der = der_of(extra, kid, text);
        assert!(
            !contains(&bytes, &der),
            "{kid}'s key bytes are in the database file"
        );
        // The PKCS#8 body's base64, as a PEM would hold it.
        let body = base64_std(&der);
        assert!(!contains(&bytes, &body.as_bytes()[..40]));
    }
    assert!(
        !contains(&bytes, b"PRIVATE KEY"),
        "a PEM is in the database file"
    );
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn with_a_key_encryption_key_no_private_key_reaches_the_database_in_the_clear() {
    let extra = with_kek(1, &[]);
    let Some(app) = TestApp::spawn_with(&extra).await else {
        return;
    };
    let tokens = app.user("sealed@example.com").await;
    assert_eq!(app.me_status(&tokens.access).await, 200);
    assert_nothing_plain(&app, &extra).await;
    // Another node with the same KEK opens the key and accepts the token.
    let b = app.sibling(&extra).await;
    assert_eq!(b.me_status(&tokens.access).await, 200);
}

#[tokio::test]
async fn plain_keys_are_sealed_at_start_rekey_moves_them_and_a_wrong_kek_stops_start_up() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let tokens = app.user("plain@example.com").await;
    let (kid, text) = stored(&app).await.remove(0);
    assert!(text.contains("BEGIN PRIVATE KEY"), "no KEK: stored plain");

    // A KEK configured: the key is sealed at start, and it is the same key.
    let first = with_kek(1, &[]);
    let app = app.restart(&first).await;
    assert_eq!(app.me_status(&tokens.access).await, 200);
    assert_nothing_plain(&app, &first).await;
    let sealed_by_1 = stored(&app).await.remove(0).1;
    assert_eq!(stored(&app).await[0].0, kid);

    // A new current KEK with the old one as previous: start-up opens with the old one and
    // leaves it (the other nodes may not have the new KEK yet); rekey moves it.
    let second = with_kek(2, &[1]);
    let app = app.restart(&second).await;
    assert_eq!(app.me_status(&tokens.access).await, 200);
    assert_eq!(stored(&app).await[0].1, sealed_by_1);
    let envelope = app.state.auth.config().signing.envelope();
    let report = keygate::auth::seal_stored_keys(&envelope, app.state.auth.store(), true)
        .await
        .unwrap();
    assert_eq!((report.sealed, report.unchanged), (1, 0));
    let sealed_by_2 = stored(&app).await.remove(0).1;
    assert_ne!(sealed_by_2, sealed_by_1);
    assert_eq!(Envelope::sealed_by(&sealed_by_2), envelope.current_id());
    let report = keygate::auth::seal_stored_keys(&envelope, app.state.auth.store(), true)
        .await
        .unwrap();
    assert_eq!((report.sealed, report.unchanged), (0, 1));

    // Only the new KEK now: still starts, same key.
    let app = app.restart(&with_kek(2, &[])).await;
    assert_eq!(app.me_status(&tokens.access).await, 200);

    // The old KEK alone, or none: start-up stops with one clear sentence.
    let clock = Arc::new(ManualClock::new());
    for (extra, expected) in [
        (
            with_kek(1, &[]),
            "signing.key_encryption_key is not the key it was encrypted with",
        ),
        (
            String::new(),
            "it is encrypted, but no key encryption key is configured; set signing.key_encryption_key",
        ),
    ] {
        let Err(e) = App::build_with_clock(TestApp::config(&app.db, &extra), clock.clone()).await
        else {
            panic!("start-up succeeded with {extra:?}");
        };
        let message = e.to_string();
        assert!(message.contains(&kid), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}
