//! The session state machine under random sequences (issue 17, point 2): logins, refreshes
//! with the current, previous (inside and beyond the grace window), older and forged tokens,
//! logouts in every scope, password changes, disabling and enabling the account, ending a
//! session, and the clock moving — run against the real store (this target's backend) and
//! checked against a small model after every step. Proptest shrinks a failing sequence to a
//! minimal one.
//!
//! Invariants: a refresh succeeds exactly when the model says so (and inside the grace window
//! gives the model's current token again: one live refresh token per session); a token rotated
//! away and presented after the window revokes its session; an ended session never comes back;
//! every session is one row, whatever the number of refreshes; the live sessions the store
//! lists are the model's.

use std::sync::Arc;
use std::time::Duration;

use keygate::auth::{Actor, AuthError, LogoutScope, UserPatch};
use keygate::clock::Clock as _;
use keygate::domain::{ClientInfo, SessionId};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};

use crate::helpers::{PASSWORD, TestApp};

const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Presented {
    Current,
    Previous,
    Older,
    Forged,
}

#[derive(Debug, Clone)]
enum Op {
    Login,
    Refresh(usize, Presented),
    Logout(usize, LogoutScope),
    ChangePassword(usize),
    SetActive(bool),
    EndSession(usize),
    Advance(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    let presented = prop_oneof![
        4 => Just(Presented::Current),
        3 => Just(Presented::Previous),
        1 => Just(Presented::Older),
        1 => Just(Presented::Forged),
    ];
    let scope = prop_oneof![
        Just(LogoutScope::Local),
        Just(LogoutScope::Global),
        Just(LogoutScope::Others),
    ];
    prop_oneof![
        3 => Just(Op::Login),
        8 => (any::<usize>(), presented).prop_map(|(i, p)| Op::Refresh(i, p)),
        1 => (any::<usize>(), scope).prop_map(|(i, s)| Op::Logout(i, s)),
        1 => any::<usize>().prop_map(Op::ChangePassword),
        1 => any::<bool>().prop_map(Op::SetActive),
        1 => any::<usize>().prop_map(Op::EndSession),
        4 => prop_oneof![
            2 => Just(Duration::from_secs(1)),
            2 => Just(Duration::from_secs(4)),
            3 => Just(Duration::from_secs(11)),
            1 => Just(Duration::from_secs(16 * 60)),
            1 => Just(Duration::from_secs(31 * 24 * 3600)),
        ]
        .prop_map(Op::Advance),
    ]
}

/// One session as the model sees it.
#[derive(Debug, Clone)]
struct Session {
    id: SessionId,
    current: String,
    /// The token rotated away last, and when.
    previous: Option<(String, time::OffsetDateTime)>,
    /// Tokens rotated away before that.
    older: Vec<String>,
    access: String,
    access_issued: time::OffsetDateTime,
    refresh_expires: time::OffsetDateTime,
    /// Not revoked (whether expired or not).
    live: bool,
}

struct Model {
    email: String,
    password: String,
    passwords: u32,
    active: bool,
    sessions: Vec<Session>,
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("198.51.100.9".to_owned()),
        user_agent: Some("state machine".to_owned()),
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

async fn run(app: &TestApp, case: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let auth = &app.state.auth;
    let email = format!("case{case}-{}@example.com", uuid_like());
    app.register(&email).await;
    let user = auth
        .find_user(&email)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut m = Model {
        email,
        password: PASSWORD.to_owned(),
        passwords: 0,
        active: true,
        sessions: Vec::new(),
    };
    let ttl = time::Duration::days(30);
    for (step, op) in ops.into_iter().enumerate() {
        let now = app.clock.now();
        let at = format!("step {step}: {op:?}");
        match op {
            Op::Login => {
                let r = auth
                    .login(Some(m.email.clone()), Some(m.password.clone()), client())
                    .await;
                match (r, m.active) {
                    (Ok(pair), true) => m.sessions.push(Session {
                        id: pair.session_id,
                        current: pair.refresh_token.expose(),
                        previous: None,
                        older: Vec::new(),
                        access: pair.access_token,
                        access_issued: now,
                        refresh_expires: now + ttl,
                        live: true,
                    }),
                    (Err(AuthError::AccountDisabled), false) => {}
                    (r, active) => {
                        return Err(fail(format!("{at}: login {r:?} with active={active}")));
                    }
                }
            }
            Op::Refresh(i, presented) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = i % m.sessions.len();
                let s = m.sessions[i].clone();
                let token = match presented {
                    Presented::Current => s.current.clone(),
                    Presented::Previous => match &s.previous {
                        Some((t, _)) => t.clone(),
                        None => continue,
                    },
                    Presented::Older => match s.older.last() {
                        Some(t) => t.clone(),
                        None => continue,
                    },
                    Presented::Forged => {
                        let id = s.current.split('.').next().unwrap_or_default();
                        format!("{id}.{}", "A".repeat(43))
                    }
                };
                let r = auth.refresh(&token, &client()).await;
                let usable = s.live && m.active && now < s.refresh_expires;
                let s = &mut m.sessions[i];
                match presented {
                    Presented::Current => match r {
                        Ok(pair) if usable => {
                            let next = pair.refresh_token.expose();
                            if next == s.current {
                                return Err(fail(format!("{at}: the token did not rotate")));
                            }
                            if let Some((old, _)) = s.previous.take() {
                                s.older.push(old);
                            }
                            s.previous = Some((std::mem::replace(&mut s.current, next), now));
                            s.access = pair.access_token;
                            s.access_issued = now;
                            s.refresh_expires = now + ttl;
                        }
                        Err(AuthError::InvalidRefreshToken) if !usable => {}
                        r => {
                            return Err(fail(format!("{at}: refresh {r:?}, usable={usable}")));
                        }
                    },
                    Presented::Previous => {
                        let rotated = s.previous.as_ref().map(|(_, at)| *at).unwrap_or(now);
                        let in_grace = now < rotated + time::Duration::try_from(GRACE).unwrap();
                        match r {
                            // Inside the window: the same successor, no new rotation.
                            Ok(pair) if s.live && m.active && in_grace => {
                                if pair.refresh_token.expose() != s.current {
                                    return Err(fail(format!("{at}: grace gave another token")));
                                }
                            }
                            Err(AuthError::InvalidRefreshToken)
                                if !s.live || (in_grace && !m.active) => {}
                            // Beyond it: theft, the session ends.
                            Err(AuthError::InvalidRefreshToken) if !in_grace => s.live = false,
                            r => {
                                return Err(fail(format!(
                                    "{at}: previous token {r:?}, live={} in_grace={in_grace}",
                                    s.live
                                )));
                            }
                        }
                    }
                    Presented::Older | Presented::Forged => {
                        if !matches!(r, Err(AuthError::InvalidRefreshToken)) {
                            return Err(fail(format!("{at}: an old or forged token {r:?}")));
                        }
                    }
                }
            }
            Op::Logout(i, scope) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = i % m.sessions.len();
                let s = m.sessions[i].clone();
                let r = auth.logout(scope, None, Some(&s.current), &client()).await;
                if let Err(e) = r {
                    return Err(fail(format!("{at}: logout {e:?}")));
                }
                let fresh = s.live && now < s.refresh_expires;
                match scope {
                    LogoutScope::Local => m.sessions[i].live = false,
                    LogoutScope::Global if fresh => {
                        m.sessions.iter_mut().for_each(|s| s.live = false)
                    }
                    LogoutScope::Others if fresh => m
                        .sessions
                        .iter_mut()
                        .filter(|o| o.id != s.id)
                        .for_each(|o| o.live = false),
                    // A stale credential ends nothing else.
                    _ => {}
                }
            }
            Op::ChangePassword(i) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = i % m.sessions.len();
                let s = m.sessions[i].clone();
                let access_ok = s.live
                    && now
                        < s.access_issued
                            + time::Duration::minutes(15)
                            + time::Duration::seconds(30);
                let who = auth.authenticate(Some(&s.access)).await;
                let who = match (who, access_ok) {
                    (Ok(who), true) => who,
                    (Err(AuthError::InvalidToken(_)), false) => continue,
                    (r, ok) => {
                        return Err(fail(format!("{at}: authenticate {r:?}, expected ok={ok}")));
                    }
                };
                m.passwords += 1;
                let new = format!("violet tundra {} marble oxygen", m.passwords);
                auth.change_password(&who, Some(m.password.clone()), Some(new.clone()), &client())
                    .await
                    .map_err(|e| fail(format!("{at}: change_password {e:?}")))?;
                m.password = new;
                m.sessions
                    .iter_mut()
                    .filter(|o| o.id != s.id)
                    .for_each(|o| o.live = false);
            }
            Op::SetActive(active) => {
                let patch = UserPatch {
                    is_active: Some(active),
                    ..Default::default()
                };
                auth.update_user(Actor::Operator, &user.id.to_string(), patch, &client())
                    .await
                    .map_err(|e| fail(format!("{at}: update_user {e:?}")))?;
                if !active {
                    m.sessions.iter_mut().for_each(|s| s.live = false);
                }
                m.active = active;
            }
            Op::EndSession(i) => {
                if m.sessions.is_empty() {
                    continue;
                }
                let i = i % m.sessions.len();
                let r = auth
                    .revoke_session_by_id(&m.sessions[i].id.to_string(), &client())
                    .await;
                // Not yet revoked (an expired session can still be revoked).
                let was_live = m.sessions[i].live;
                match r {
                    Ok(()) if was_live => m.sessions[i].live = false,
                    Err(AuthError::NotFound) if !was_live => {}
                    r => return Err(fail(format!("{at}: end session {r:?}, live={was_live}"))),
                }
            }
            Op::Advance(by) => app.clock.advance(by),
        }
        check(app, &m, user.id, &at).await?;
    }
    Ok(())
}

/// The store agrees with the model: every session is one row, ended ones stay ended, and the
/// live ones are exactly the model's.
async fn check(
    app: &TestApp,
    m: &Model,
    user: keygate::domain::UserId,
    at: &str,
) -> Result<(), TestCaseError> {
    let store = app.state.auth.store();
    let now = app.clock.now();
    for s in &m.sessions {
        let row = store
            .find_session(s.id)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("{at}: session {} has no row", s.id)))?;
        let live = row.is_live(now) && row.refresh_expires_at > now;
        let model_live = s.live && now < s.refresh_expires;
        if live != model_live {
            return Err(fail(format!(
                "{at}: session {} live={live}, model says {model_live}",
                s.id
            )));
        }
    }
    let mut listed: Vec<_> = store
        .live_sessions(user, now)
        .await
        .map_err(|e| fail(e.to_string()))?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let mut expected: Vec<_> = m
        .sessions
        .iter()
        .filter(|s| s.live && now < s.refresh_expires)
        .map(|s| s.id)
        .collect();
    listed.sort_by_key(ToString::to_string);
    expected.sort_by_key(ToString::to_string);
    if listed != expected {
        return Err(fail(format!(
            "{at}: live sessions {listed:?}, model {expected:?}"
        )));
    }
    Ok(())
}

fn uuid_like() -> String {
    SessionId::new().to_string()[24..].to_owned()
}

#[test]
fn random_sequences_of_session_operations_follow_the_model() {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let Some(app) = runtime.block_on(TestApp::spawn_with(
        "rate_limits.enabled = false\nmax_sessions_per_user = 1000\n",
    )) else {
        return;
    };
    let cases: u32 = std::env::var("KEYGATE_STATE_MACHINE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    // A failing sequence's seed is kept in the regressions file (committed), and replayed
    // first by every later run, so a red run reproduces.
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/suite/state_machine.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&prop::collection::vec(op(), 1..30), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(run(&app, n, ops))
        })
        .unwrap();
}
