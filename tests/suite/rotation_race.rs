//! The rotation race, checked round after round (issue 17, point 3): N presenters of the same
//! refresh token at once, on this target's backend. In every round exactly one rotation
//! happens (the generation moves by one), and every presenter gets the same successor (the
//! losers are inside the grace window); presenting the rotated token at once after the window
//! ends the session for all of them. `KEYGATE_STRESS_ROUNDS` sets the rounds (CI: 150;
//! `scripts/stress` runs thousands).

use std::sync::Arc;
use std::time::Duration;

use keygate::domain::ClientInfo;

use crate::helpers::TestApp;

const PRESENTERS: usize = 8;

fn rounds() -> usize {
    std::env::var("KEYGATE_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_presenters_of_one_token_see_exactly_one_rotation_per_round() {
    let Some(app) = TestApp::spawn_with("rate_limits.enabled = false\n").await else {
        return;
    };
    let app = Arc::new(app);
    let t = app.user("race@example.com").await;
    let session = keygate::domain::SessionId::parse(&t.session_id).expect("session id");
    let store = app.state.auth.store().clone();
    let mut token = t.refresh;
    let rounds = rounds();
    for round in 0..rounds {
        let before = store
            .find_session(session)
            .await
            .unwrap()
            .unwrap()
            .generation;
        let racers: Vec<_> = (0..PRESENTERS)
            .map(|_| {
                let (app, token) = (app.clone(), token.clone());
                tokio::spawn(async move {
                    app.state
                        .auth
                        .refresh(&token, &ClientInfo::default())
                        .await
                        .map(|pair| pair.refresh_token.expose())
                })
            })
            .collect();
        let mut successors = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Ok(next) => successors.push(next),
                Err(e) => {
                    panic!("round {round}: a presenter inside the grace window failed: {e:?}")
                }
            }
        }
        let after = store
            .find_session(session)
            .await
            .unwrap()
            .unwrap()
            .generation;
        assert_eq!(after, before + 1, "round {round}: exactly one rotation");
        successors.dedup();
        assert_eq!(
            successors.len(),
            1,
            "round {round}: one successor for everyone: {successors:?}"
        );
        let next = successors.pop().unwrap();
        assert_ne!(next, token, "round {round}");
        token = next;
        // Now and then the clock moves well inside the window, which changes nothing.
        if round % 10 == 9 {
            app.clock.advance(Duration::from_secs(1));
        }
    }

    // Beyond the window: the rotated token, presented by N at once, ends the session for all.
    let rotated = token.clone();
    let current = app
        .state
        .auth
        .refresh(&rotated, &ClientInfo::default())
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(11));
    let racers: Vec<_> = (0..PRESENTERS)
        .map(|_| {
            let (app, token) = (app.clone(), rotated.clone());
            tokio::spawn(
                async move { app.state.auth.refresh(&token, &ClientInfo::default()).await },
            )
        })
        .collect();
    for racer in racers {
        assert!(racer.await.unwrap().is_err(), "a reused token was honoured");
    }
    let row = store.find_session(session).await.unwrap().unwrap();
    assert!(row.revoked_at.is_some(), "reuse beyond the window revokes");
    assert!(
        app.state
            .auth
            .refresh(&current.refresh_token.expose(), &ClientInfo::default())
            .await
            .is_err(),
        "the successor died with the session"
    );
}
