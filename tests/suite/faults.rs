//! Faults of time (docs/RELIABILITY.md, part 5): the clock jumping forward and back, within and
//! beyond the leeway, through the injected clock, with the documented behaviour asserted.
//! (The database cut mid-transaction is `tests/postgres/outage.rs`; a full disk,
//! `tests/sqlite/disk_full.rs`; Redis down, `suite::redis`; SMTP down and back,
//! `suite::recovery`.)

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestApp, assert_error, tokens};

/// A rotation, then the clock goes back by less than the leeway (another node's clock may be
/// that far behind): the previous token is still inside the grace window and gets the same
/// successor. Back by more than the leeway (the clock was corrected): the previous token is no
/// longer in grace — it counts as reuse and ends the session — rather than staying in grace
/// until the clock catches up.
#[tokio::test]
async fn a_clock_that_goes_back_does_not_stretch_the_grace_window() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    // Within the leeway (30 s by default).
    let t = app.user("ada@example.com").await;
    let r = app.refresh(&t.refresh).await;
    assert_eq!(r.status(), 200);
    let successor = tokens(r.json::<Value>().await.unwrap());
    app.clock.rewind(Duration::from_secs(20));
    let again = app.refresh(&t.refresh).await;
    assert_eq!(again.status(), 200, "inside the grace window");
    let again = tokens(again.json::<Value>().await.unwrap());
    assert_eq!(again.refresh, successor.refresh, "the same successor");
    assert_eq!(app.me_status(&successor.access).await, 200);

    // Beyond the leeway.
    let t = app.login("ada@example.com").await;
    let r = app.refresh(&t.refresh).await;
    assert_eq!(r.status(), 200);
    let successor = tokens(r.json::<Value>().await.unwrap());
    app.clock.rewind(Duration::from_secs(3600));
    assert_error(app.refresh(&t.refresh).await, 401, "invalid_refresh_token").await;
    assert_error(
        app.refresh(&successor.refresh).await,
        401,
        "invalid_refresh_token",
    )
    .await;
    // The access token of the ended session is refused too (its session is checked).
    assert_eq!(app.me_status(&successor.access).await, 401);
}

/// Access tokens across clock jumps: forward within the leeway they still verify, beyond it
/// they have expired (401; a refresh gets new ones). Back within the leeway they still verify;
/// back further, a token now issued "in the future" (`iat` more than the leeway ahead) is
/// refused like any token from the future, and a refresh issues one on the clock as it now is.
#[tokio::test]
async fn access_tokens_follow_the_clock_forward_and_back() {
    let Some(app) = TestApp::spawn().await else {
        return;
    };
    let t = app.user("grace@example.com").await;
    // Default access_ttl 15 min, leeway 30 s.
    app.clock.advance(Duration::from_secs(15 * 60 + 20));
    assert_eq!(app.me_status(&t.access).await, 200, "inside the leeway");
    app.clock.advance(Duration::from_secs(20));
    assert_eq!(app.me_status(&t.access).await, 401, "beyond the leeway");
    let r = app.refresh(&t.refresh).await;
    assert_eq!(r.status(), 200, "the refresh token lives on");
    let fresh = tokens(r.json::<Value>().await.unwrap());
    assert_eq!(app.me_status(&fresh.access).await, 200);

    app.clock.rewind(Duration::from_secs(20));
    assert_eq!(
        app.me_status(&fresh.access).await,
        200,
        "back within the leeway"
    );
    app.clock.rewind(Duration::from_secs(3600));
    let r = app.get_auth("/auth/me", &fresh.access).await;
    assert_error(r, 401, "invalid_token").await;
    let r = app.refresh(&fresh.refresh).await;
    assert_eq!(r.status(), 200, "the current refresh token still works");
    let back = tokens(r.json::<Value>().await.unwrap());
    let claims = crate::helpers::claims_of(&back.access);
    let now = keygate::clock::Clock::now(&*app.clock).unix_timestamp();
    assert_eq!(claims["iat"].as_i64(), Some(now), "issued on the new clock");
    assert_eq!(app.me_status(&back.access).await, 200);
}

/// Rate limits across a clock that goes back: limiter state is absolute time (shared by every
/// node through Redis), so state written before a jump back lies in the future. Within the
/// margin it counts as it is; beyond it (an hour back) it starts over instead of making every
/// recently counted client wait out the hour. Found by this test: before the fix, an hour
/// back meant an hour of 429s for logins, refreshes and everything limited.
#[tokio::test]
async fn a_clock_that_goes_back_does_not_lock_clients_out() {
    let Some(app) =
        TestApp::spawn_with("rate_limits.login = \"3/1m\"\nrate_limits.failed_logins = \"3/15m\"")
            .await
    else {
        return;
    };
    app.register("lin@example.com").await;
    for _ in 0..3 {
        let r = app
            .login_response("lin@example.com", crate::helpers::PASSWORD)
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .login_response("lin@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status(), 429, "the budget is spent");
    // Back by 20 s (within the margin): still spent.
    app.clock.rewind(Duration::from_secs(20));
    let r = app
        .login_response("lin@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status(), 429, "within the margin the state counts");
    // Back by an hour: the budget starts over.
    app.clock.rewind(Duration::from_secs(3600));
    let r = app
        .login_response("lin@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status(), 200, "an hour back is not an hour of 429s");

    // Failed-login back-off: three wrong passwords, then a wait; an hour back, it starts over.
    app.clock.advance(Duration::from_secs(120));
    for _ in 0..3 {
        let r = app
            .login_response("lin@example.com", "wrong password")
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = app
        .login_response("lin@example.com", "wrong password")
        .await;
    assert_eq!(r.status(), 429, "backing off");
    app.clock.rewind(Duration::from_secs(3600));
    let r = app
        .login_response("lin@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(r.status(), 200, "the back-off does not last the hour");
}
