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
    let report = app.state.auth.rekey().await.unwrap();
    assert_eq!(
        (report.signing_keys.sealed, report.signing_keys.unchanged),
        (1, 0)
    );
    // The CSRF server secret moves with it (issue 27, point 7).
    assert_eq!(
        (
            report.server_secrets.sealed,
            report.server_secrets.unchanged
        ),
        (1, 0)
    );
    let sealed_by_2 = stored(&app).await.remove(0).1;
    assert_ne!(sealed_by_2, sealed_by_1);
    assert_eq!(Envelope::sealed_by(&sealed_by_2), envelope.current_id());
    let report = app.state.auth.rekey().await.unwrap();
    assert_eq!(
        (report.signing_keys.sealed, report.signing_keys.unchanged),
        (0, 1)
    );
    assert_eq!(report.server_secrets.sealed, 0);

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

// ---- The key lifecycle: staged rotation, retirement, revocation, on two nodes ----

/// The `kid`s in a node's JWKS.
async fn published(app: &TestApp) -> Vec<String> {
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let jwks: serde_json::Value = r.json().await.unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

/// Waits (real time, the nodes' poll) until `check` holds for `app`, at most 3 key polls.
async fn within_polls(app: &TestApp, what: &str, check: impl AsyncFn(&TestApp) -> bool) {
    let deadline = std::time::Instant::now() + 3 * keygate::auth::KEY_POLL;
    while !check(app).await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {:?}: {what}",
            3 * keygate::auth::KEY_POLL
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn kid_of(token: &str) -> String {
    crate::helpers::header_of(token)["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn key_states(app: &TestApp) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = app
        .state
        .auth
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_staged_rotation_publishes_ahead_then_signs_and_retires_the_old_key_on_every_node() {
    // The polls below log in every 100 ms until a node signs with the new key: on a loaded
    // machine that is more than the 20 sessions a user may hold, and the session of
    // `before` would be trimmed (a flake seen under load).
    let extra = "signing.rotation.publish_ahead = \"10m\"\n\
                 rate_limits.login = \"1000/1m\"\nrate_limits.register = \"1000/1m\"\n\
                 max_sessions_per_user = 1000\n";
    let Some(a) = TestApp::spawn_with(extra).await else {
        return;
    };
    let b = a.sibling(extra).await;
    let admin = crate::suite::admin::make_user(&a, "root@example.com", &["admin"]).await;
    let before = a.user("ada@example.com").await;
    let old = kid_of(&before.access);
    assert_eq!(published(&a).await, vec![old.clone()]);

    // Rotate: a next key, published at once on A and within a poll on B; nothing signs with it.
    let r = crate::suite::admin::send(&a, "POST", "/admin/keys/rotate", &admin.access, None).await;
    assert_eq!(r.status(), 201);
    let next: serde_json::Value = r.json().await.unwrap();
    let new = next["kid"].as_str().unwrap().to_owned();
    assert_eq!(next["state"], "next");
    assert!(next["activate_at"].is_string() && next["activated_at"].is_null());
    assert!(next.get("private_key").is_none());
    let mut both = vec![old.clone(), new.clone()];
    both.sort();
    assert_eq!(published(&a).await, both);
    within_polls(&b, "B publishes the next key", async |n: &TestApp| {
        published(n).await == both
    })
    .await;
    // With nothing changed since, a look at the keys does not load the ring again (the
    // comparison of key states does not depend on the database's collation).
    assert!(!a.state.auth.follow_keys().await.unwrap());
    assert!(!b.state.auth.follow_keys().await.unwrap());
    // Asked again during the rotation: the same next key, 200.
    let r = crate::suite::admin::send(&a, "POST", "/admin/keys/rotate", &admin.access, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["kid"],
        new.as_str()
    );
    // The JWKS max-age is at most half of publish_ahead (and at most 300 s).
    let r = a
        .client
        .get(a.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    assert_eq!(kid_of(&b.login("ada@example.com").await.access), old);

    // publish_ahead later, both nodes sign with the new key; the old one still verifies.
    a.clock
        .advance(std::time::Duration::from_secs(600) + keygate::auth::KEY_POLL);
    for node in [&a, &b] {
        within_polls(node, "the new key signs", async |n: &TestApp| {
            kid_of(&n.login("ada@example.com").await.access) == new
        })
        .await;
        assert_eq!(node.me_status(&before.access).await, 200);
        assert_eq!(published(node).await, both);
    }
    let states = key_states(&a).await;
    assert!(
        states.contains(&(old.clone(), "retiring".to_owned())),
        "{states:?}"
    );
    assert!(
        states.contains(&(new.clone(), "active".to_owned())),
        "{states:?}"
    );

    // Once every token of the old key has expired: retired, unpublished, private part gone.
    a.clock.advance(
        a.state.auth.config().access_ttl + a.state.auth.config().leeway + keygate::auth::KEY_POLL,
    );
    for node in [&a, &b] {
        within_polls(node, "the old key is retired", async |n: &TestApp| {
            published(n).await == [new.clone()]
        })
        .await;
    }
    assert!(
        key_states(&a)
            .await
            .contains(&(old.clone(), "retired".to_owned()))
    );
    let private: Vec<String> = stored(&a).await.into_iter().map(|(kid, _)| kid).collect();
    assert_eq!(
        private,
        vec![new.clone()],
        "a retired key keeps no private part"
    );

    // Audited.
    let r = crate::suite::admin::send(
        &a,
        "GET",
        "/admin/audit?event=key_rotated",
        &a.login("root@example.com").await.access,
        None,
    )
    .await;
    let events: serde_json::Value = r.json().await.unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_node_within_the_poll() {
    let extra = "rate_limits.login = \"1000/1m\"\nrate_limits.register = \"1000/1m\"\n";
    let Some(a) = TestApp::spawn_with(extra).await else {
        return;
    };
    let b = a.sibling(extra).await;
    let admin = crate::suite::admin::make_user(&a, "root@example.com", &["admin"]).await;
    let victim = a.user("ada@example.com").await;
    let leaked = kid_of(&victim.access);
    assert_eq!(b.me_status(&victim.access).await, 200);

    let path = format!("/admin/keys/{leaked}/revoke");
    let r = crate::suite::admin::send(&a, "POST", &path, &admin.access, None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(a.me_status(&victim.access).await, 401);
    within_polls(
        &b,
        "B refuses the revoked key's token",
        async |n: &TestApp| n.me_status(&victim.access).await == 401,
    )
    .await;
    for node in [&a, &b] {
        within_polls(
            node,
            "the revoked key is unpublished",
            async |n: &TestApp| {
                let kids = published(n).await;
                kids.len() == 1 && !kids.contains(&leaked)
            },
        )
        .await;
    }
    // A fresh key signs at once, and the other node accepts its tokens.
    let fresh = a.login("ada@example.com").await;
    assert_ne!(kid_of(&fresh.access), leaked);
    assert_eq!(b.me_status(&fresh.access).await, 200);
    assert!(
        key_states(&a)
            .await
            .contains(&(leaked.clone(), "revoked".to_owned()))
    );
    assert!(stored(&a).await.iter().all(|(kid, _)| *kid != leaked));
    // The admin's own token was signed by that key too: a new login. Revoking the key again,
    // or a key that never was: 404.
    let admin = a.login("root@example.com").await;
    let r = crate::suite::admin::send(&a, "POST", &path, &admin.access, None).await;
    assert_eq!(r.status(), 404);
    let r =
        crate::suite::admin::send(&a, "POST", "/admin/keys/nope/revoke", &admin.access, None).await;
    assert_eq!(r.status(), 404);
    // Not for a user without the admin role.
    let r = crate::suite::admin::send(&a, "POST", "/admin/keys/rotate", &fresh.access, None).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn with_hs256_there_are_no_stored_keys_to_rotate() {
    let extra = "signing.algorithm = \"HS256\"\n\
                 signing.secret = \"0123456789abcdef0123456789abcdef-now\"\n";
    let Some(app) = TestApp::spawn_with(extra).await else {
        return;
    };
    let admin = crate::suite::admin::make_user(&app, "root@example.com", &["admin"]).await;
    let r =
        crate::suite::admin::send(&app, "POST", "/admin/keys/rotate", &admin.access, None).await;
    assert_eq!(r.status(), 404);
    let r = crate::suite::admin::send(&app, "GET", "/admin/keys", &admin.access, None).await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"keys": []})
    );
}

// ---- Keys from files, and HS256 previous secrets (issue 14, point 4) ----

/// The public half of a generated key as a `PUBLIC KEY` (SPKI) PEM, as an operator's
/// `openssl pkey -pubout` would write it.
fn public_pem(algorithm: jsonwebtoken::Algorithm, key: &keygate::token::StoredKey) -> String {
    use aws_lc_rs::encoding::{AsDer as _, PublicKeyX509Der};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
    };
    let der = pem::parse(key.private_pem.expose_secret())
        .unwrap()
        .into_contents();
    let spki: PublicKeyX509Der<'static> = match algorithm {
        jsonwebtoken::Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(&der)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap(),
        jsonwebtoken::Algorithm::ES256 => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .unwrap()
                .public_key()
                .as_der()
                .unwrap()
        }
        _ => RsaKeyPair::from_pkcs8(&der)
            .unwrap()
            .public_key()
            .as_der()
            .unwrap(),
    };
    pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()))
}

/// A token for `session`'s user and session, signed by `ring` (another key than the server's).
fn token_signed_by(
    ring: &keygate::token::KeyRing,
    session: &crate::helpers::Tokens,
    now: time::OffsetDateTime,
) -> String {
    let claims = crate::helpers::claims_of(&session.access);
    let grant = keygate::token::AccessGrant {
        user_id: keygate::domain::UserId::parse(claims["sub"].as_str().unwrap()).unwrap(),
        session_id: keygate::domain::SessionId::parse(claims["sid"].as_str().unwrap()).unwrap(),
        roles: &[],
        permissions: &[],
        mfa: false,
        email_verified: false,
    };
    ring.issue(&grant, now).unwrap().0
}

#[tokio::test]
async fn keys_from_files_sign_and_verify_for_each_algorithm_and_are_never_stored_or_rotated() {
    use jsonwebtoken::Algorithm::{ES256, EdDSA, RS256};
    use keygate::clock::Clock as _;
    for algorithm in [EdDSA, ES256, RS256] {
        let name = keygate::config::algorithm_name(algorithm);
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let old = keygate::token::generate_key(algorithm, now).unwrap();
        let current = keygate::token::generate_key(algorithm, now).unwrap();
        let key_path = dir.path().join("key.pem");
        let old_path = dir.path().join("old.pub.pem");
        std::fs::write(&key_path, current.private_pem.expose_secret()).unwrap();
        std::fs::write(&old_path, public_pem(algorithm, &old)).unwrap();
        let extra = format!(
            "signing.algorithm = \"{name}\"\nsigning.private_key_file = \"{}\"\n\
             signing.previous_public_key_files = [\"{}\"]\n",
            key_path.display(),
            old_path.display()
        );
        let Some(app) = TestApp::spawn_with(&extra).await else {
            return;
        };
        let session = app.user("files@example.com").await;
        let header = crate::helpers::header_of(&session.access);
        assert_eq!(header["kid"], current.kid.as_str(), "{name}");
        assert_eq!(header["alg"], name);
        let mut both = vec![old.kid.clone(), current.kid.clone()];
        both.sort();
        assert_eq!(published(&app).await, both, "{name}");
        // The previous key still verifies (a token it signed before the switch).
        let config = TestApp::config(&app.db, "");
        let old_ring = keygate::token::KeyRing::from_stored(
            &keygate::Config {
                signing: keygate::config::SigningConfig {
                    algorithm,
                    ..config.signing.clone()
                },
                ..config
            },
            &old,
            &[],
        )
        .unwrap();
        let by_old = token_signed_by(&old_ring, &session, app.clock.now());
        assert_eq!(app.me_status(&by_old).await, 200, "{name}");
        // Nothing is stored, and Keygate does not rotate what it does not own.
        assert!(stored(&app).await.is_empty(), "{name}");
        let admin = crate::suite::admin::make_user(&app, "root@example.com", &["admin"]).await;
        let r = crate::suite::admin::send(&app, "POST", "/admin/keys/rotate", &admin.access, None)
            .await;
        assert_eq!(r.status(), 404);
        let r = crate::suite::admin::send(&app, "GET", "/admin/keys", &admin.access, None).await;
        let keys: serde_json::Value = r.json().await.unwrap();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 2, "{keys}");
    }

    // A key of another algorithm than signing.algorithm stops start-up, naming both.
    let dir = tempfile::tempdir().unwrap();
    let es = keygate::token::generate_key(ES256, time::OffsetDateTime::now_utc()).unwrap();
    let path = dir.path().join("es.pem");
    std::fs::write(&path, es.private_pem.expose_secret()).unwrap();
    let Some(db) = TestDb::fresh().await else {
        return;
    };
    let extra = format!("signing.private_key_file = \"{}\"\n", path.display());
    let Err(e) =
        App::build_with_clock(TestApp::config(&db, &extra), Arc::new(ManualClock::new())).await
    else {
        panic!("an ES256 key started an EdDSA server");
    };
    let message = e.to_string();
    assert!(
        message.contains("holds an ES256 key, but signing.algorithm is EdDSA"),
        "{message}"
    );
}

#[tokio::test]
async fn hs256_previous_secrets_verify_and_never_sign() {
    const OLD: &str = "the previous secret, 32 bytes or more";
    const NEW: &str = "the current secret, also 32 bytes or more";
    let extra = format!(
        "signing.algorithm = \"HS256\"\nsigning.secret = \"{NEW}\"\nsigning.previous_secrets = [\"{OLD}\"]\n"
    );
    let Some(app) = TestApp::spawn_with(&extra).await else {
        return;
    };
    let session = app.user("hs@example.com").await;
    // Signed with the current secret only.
    let issuer = app.state.auth.config().issuer.clone();
    let audience = app.state.auth.config().audience.clone();
    let verify_with = |secret: &str| {
        keygate_verify::Verifier::hs256(&[secret.as_bytes()], &issuer, &audience)
            .unwrap()
            .verify(
                &session.access,
                crate::helpers::claims_of(&session.access)["iat"]
                    .as_i64()
                    .unwrap(),
            )
    };
    assert!(verify_with(NEW).is_ok());
    assert!(verify_with(OLD).is_err());
    // A token signed with the previous secret still verifies.
    let old_config = TestApp::config(
        &app.db,
        &format!("signing.algorithm = \"HS256\"\nsigning.secret = \"{OLD}\"\n"),
    );
    let old_ring = keygate::token::KeyRing::hs256(&old_config).unwrap();
    use keygate::clock::Clock as _;
    let by_old = token_signed_by(&old_ring, &session, app.clock.now());
    assert_eq!(app.me_status(&by_old).await, 200);
}

// ---- A rotation under load, watched by caching verifiers (issue 14's test of record) ----

/// The Node verifier (`tests/interop/jwks_cache_verifier.mjs`, panva's jose) as a child
/// process: one token in, one verdict out.
struct StrictCacher {
    io: Arc<
        std::sync::Mutex<(
            std::process::ChildStdin,
            std::io::BufReader<std::process::ChildStdout>,
        )>,
    >,
    child: std::process::Child,
}

impl StrictCacher {
    fn start(script: &std::path::Path, input: &serde_json::Value) -> StrictCacher {
        use std::process::{Command, Stdio};
        let mut child = Command::new("node")
            .arg(script)
            .arg(input.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        StrictCacher {
            io: Arc::new(std::sync::Mutex::new((stdin, stdout))),
            child,
        }
    }

    async fn verify(&self, token: &str) -> serde_json::Value {
        let io = self.io.clone();
        let token = token.to_owned();
        let verdict = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead as _, Write as _};
            let mut io = io.lock().unwrap();
            writeln!(io.0, "{token}").unwrap();
            io.0.flush().unwrap();
            let mut line = String::new();
            io.1.read_line(&mut line).unwrap();
            serde_json::from_str(&line).expect("a verdict")
        });
        // A verifier that stops answering fails the test instead of hanging it.
        tokio::time::timeout(std::time::Duration::from_secs(30), verdict)
            .await
            .expect("the JavaScript verifier answered within 30 s")
            .unwrap()
    }
}

impl Drop for StrictCacher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two nodes on one database, tokens refreshed on both in turn for a whole rotation (next key
/// published, then signing, the old key retiring, then retired), and every token checked at
/// once by two verifiers that cache the JWKS: `keygate-verify`'s `RemoteVerifier` following node
/// B, and a jose verifier in Node.js that keeps node A's JWKS exactly for its `max-age` and never
/// fetches it early. None may refuse a valid token, and every token of the new key must have
/// been issued after the key was published everywhere and `publish_ahead` had passed. The
/// stages are seconds long here, so the servers run on real time (the verifiers check `exp` and
/// `iat` against the wall clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_under_load_never_makes_a_caching_verifier_refuse_a_valid_token() {
    let Some(script) = crate::suite::interop::interop_script("jwks_cache_verifier.mjs") else {
        return;
    };
    let Some(db) = TestDb::fresh().await else {
        return;
    };
    let extra = "signing.rotation.publish_ahead = \"2s\"\naccess_ttl = \"3s\"\nleeway = \"1s\"\n\
                 rate_limits.enabled = false\n";
    let node = |db: TestDb| async move {
        let app = App::build(TestApp::config(&db, extra))
            .await
            .expect("starts");
        TestApp::serve(app, db, Arc::new(ManualClock::new()))
    };
    let a = node(db.clone()).await;
    let b = node(db.clone()).await;
    let config = a.state.auth.config();
    let (issuer, audience) = (config.issuer.clone(), config.audience[0].clone());
    let remote = keygate_verify::RemoteVerifier::start(keygate_verify::RemoteConfig {
        base_url: Some(b.base.clone()),
        ..keygate_verify::RemoteConfig::new(&issuer, "EdDSA", &[&audience])
    })
    .await
    .expect("keygate-verify follows node B");
    let cacher = StrictCacher::start(
        &script,
        &serde_json::json!({
            "jwks_url": a.url("/.well-known/jwks.json"),
            "issuer": issuer,
            "audience": audience,
            "algorithm": "EdDSA",
        }),
    );

    let mut refresh = a.user("load@example.com").await.refresh;
    let started = std::time::Instant::now();
    let mut next: Option<keygate::store::KeyInfo> = None;
    let mut seen: Vec<(String, i64)> = Vec::new();
    for i in 0usize.. {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.refresh(&refresh).await;
        assert_eq!(r.status(), 200);
        let t = crate::helpers::tokens(r.json().await.unwrap());
        refresh = t.refresh;
        if let Err(e) = remote.verify(&t.access).await {
            panic!(
                "keygate-verify refused a valid token ({}): {e}",
                kid_of(&t.access)
            );
        }
        let verdict = cacher.verify(&t.access).await;
        assert_eq!(
            verdict["ok"], true,
            "the caching jose verifier refused: {verdict}"
        );
        let iat = crate::helpers::claims_of(&t.access)["iat"]
            .as_i64()
            .unwrap();
        seen.push((kid_of(&t.access), iat));

        if next.is_none() && started.elapsed() > std::time::Duration::from_secs(1) {
            let (key, started) = a
                .state
                .auth
                .rotate_keys(None, &keygate::domain::ClientInfo::default())
                .await
                .unwrap();
            assert!(started);
            next = Some(key);
        }
        if let Some(key) = &next {
            let only_new = [key.kid.clone()];
            if published(&a).await == only_new && published(&b).await == only_new {
                break;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "the rotation did not finish within 40 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }

    let key = next.expect("a rotation");
    let activate_at = key
        .activate_at
        .expect("a next key's activation")
        .unix_timestamp();
    let old: Vec<_> = seen.iter().filter(|(kid, _)| *kid != key.kid).collect();
    let new: Vec<_> = seen.iter().filter(|(kid, _)| *kid == key.kid).collect();
    assert!(
        !old.is_empty() && !new.is_empty(),
        "both keys signed: {seen:?}"
    );
    for (_, iat) in &new {
        assert!(
            *iat >= activate_at,
            "a token of the new key issued before its activation"
        );
    }
    let created = key.created_at.unix_timestamp();
    assert!(
        activate_at - created >= 2,
        "published at least publish_ahead before signing"
    );
    eprintln!(
        "rotation under load: {} tokens accepted by both caching verifiers ({} of the old key, \
         {} of the new) in {:?}",
        seen.len(),
        old.len(),
        new.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn automatic_rotation_starts_when_the_interval_has_passed() {
    let extra = "signing.rotation.publish_ahead = \"1h\"\nsigning.rotation.interval = \"30d\"\n";
    let Some(app) = TestApp::spawn_with(extra).await else {
        return;
    };
    let first = published(&app).await;
    assert_eq!(first.len(), 1);
    // Not before the interval: the decision the periodic follower makes, made here on the
    // injected clock (no sleep that a slow machine could outrun).
    app.clock
        .advance(std::time::Duration::from_secs(29 * 86_400));
    app.state.auth.follow_keys().await.unwrap();
    assert_eq!(published(&app).await, first);
    // After it: a next key, published, not yet signing.
    app.clock.advance(std::time::Duration::from_secs(86_400));
    within_polls(&app, "an automatic rotation starts", async |n: &TestApp| {
        published(n).await.len() == 2
    })
    .await;
    let states = key_states(&app).await;
    assert!(states.iter().any(|(_, s)| s == "next"), "{states:?}");
    let session = app.user("auto@example.com").await;
    assert_eq!(vec![kid_of(&session.access)], first);
}
