//! Micro-benchmarks (`cargo bench --bench micro`): token signing and verification per
//! algorithm, refresh-token handling, password hashing, and one rotation on SQLite.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::config::Config;
use keygate::domain::{Password, SessionId, UserId};
use keygate::password::Hasher;
use keygate::store::{NewSession, NewUser, Rotation, Store};
use keygate::token::{AccessGrant, KeyRing, RefreshToken, generate_key};
use time::OffsetDateTime;

fn ring(algorithm: &str) -> KeyRing {
    if algorithm == "HS256" {
        let cfg = Config::from_toml(
            "signing.algorithm = \"HS256\"\nsigning.secret = \"a benchmark secret of plenty of bytes\"",
        )
        .unwrap();
        return KeyRing::hs256(&cfg).unwrap();
    }
    let cfg = Config::from_toml(&format!("signing.algorithm = \"{algorithm}\"")).unwrap();
    let key = generate_key(cfg.signing.algorithm, OffsetDateTime::now_utc()).unwrap();
    KeyRing::from_stored(&cfg, &key, &[]).unwrap()
}

fn tokens(c: &mut Criterion) {
    let (user_id, session_id) = (UserId::new(), SessionId::new());
    let roles = vec!["admin".to_owned()];
    let grant = AccessGrant {
        user_id,
        session_id,
        roles: &roles,
        permissions: &[],
        mfa: false,
        email_verified: false,
    };
    for alg in ["EdDSA", "ES256", "RS256", "HS256"] {
        let ring = ring(alg);
        let now = OffsetDateTime::now_utc();
        c.bench_function(&format!("access token sign {alg}"), |b| {
            b.iter(|| ring.issue(black_box(&grant), now).unwrap())
        });
        let (token, _) = ring.issue(&grant, now).unwrap();
        c.bench_function(&format!("access token verify {alg} (never seen)"), |b| {
            b.iter(|| ring.verify_uncached(black_box(&token), now).unwrap())
        });
        c.bench_function(
            &format!("access token verify {alg} (seen before: cache hit)"),
            |b| b.iter(|| ring.verify(black_box(&token), now).unwrap()),
        );
    }
}

fn refresh_tokens(c: &mut Criterion) {
    let sid = SessionId::new();
    c.bench_function("refresh token generate", |b| {
        b.iter(|| RefreshToken::generate(black_box(sid)))
    });
    let token = RefreshToken::generate(sid);
    let text = token.expose();
    c.bench_function("refresh token parse", |b| {
        b.iter(|| RefreshToken::parse(black_box(&text)).unwrap())
    });
    let stored = token.hash();
    c.bench_function("refresh token hash and check", |b| {
        b.iter(|| black_box(&token).hash().matches(&stored))
    });
    let next = RefreshToken::generate(sid);
    c.bench_function("refresh successor seal", |b| {
        b.iter(|| token.seal(black_box(&next), b"ctx"))
    });
    let sealed = token.seal(&next, b"ctx");
    c.bench_function("refresh successor open", |b| {
        b.iter(|| token.open(black_box(&sealed), b"ctx").unwrap())
    });
}

fn passwords(c: &mut Criterion) {
    let cfg = Config::from_toml("").unwrap();
    let hasher = Arc::new(Hasher::new(&cfg.password).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pw = Password::new("correct horse battery staple", 8, 256).unwrap();
    let hash = rt.block_on(hasher.hash(&pw)).unwrap();
    let mut group = c.benchmark_group("argon2id m=19456 t=2 p=1");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.to_async(&rt)
            .iter(|| async { hasher.hash(&pw).await.unwrap() })
    });
    group.bench_function("verify", |b| {
        b.to_async(&rt)
            .iter(|| async { hasher.verify(&pw, Some(&hash)).await.unwrap() })
    });
    group.finish();
}

fn rotation(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml(&format!(
        "database_url = \"sqlite://{}\"",
        dir.path().join("bench.db").display()
    ))
    .unwrap();
    let (store, session, first) = rt.block_on(async {
        let store = Store::connect(&cfg).await.unwrap();
        store.migrate().await.unwrap();
        let now = OffsetDateTime::now_utc();
        let user = store
            .insert_user(
                NewUser {
                    email: keygate::domain::Email::parse("bench@example.com").unwrap(),
                    username: None,
                    name: None,
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
                    roles: vec![],
                    permissions: vec![],
                },
                now,
            )
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
                    refresh_expires_at: now + time::Duration::days(30),
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
        (store, id, first)
    });
    let generation = std::sync::atomic::AtomicI64::new(0);
    let current = std::sync::Mutex::new(first);
    c.bench_function("store rotation on SQLite (one durable UPDATE)", |b| {
        b.to_async(&rt).iter(|| async {
            let now = OffsetDateTime::now_utc();
            let prev = current.lock().unwrap().clone();
            let next = RefreshToken::generate(session);
            let g = generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let won = store
                .rotate_refresh(
                    &Rotation {
                        id: session,
                        from_generation: g,
                        previous_hash: prev.hash(),
                        new_hash: next.hash(),
                        sealed_successor: prev.seal(&next, b"ctx"),
                        refresh_expires_at: now + time::Duration::days(30),
                    },
                    now,
                    None,
                )
                .await
                .unwrap();
            assert!(won);
            *current.lock().unwrap() = next;
        })
    });
}

criterion_group!(benches, tokens, refresh_tokens, passwords, rotation);
criterion_main!(benches);
