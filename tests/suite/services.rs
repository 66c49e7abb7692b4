//! `services_available`: the one place a run says which external services its tests used and
//! how many tests it skipped for want of one. In CI (`CI` set) a missing variable or a service
//! that does not answer a real query fails here, and every test that needs it fails too.

use std::io::Write as _;

use crate::helpers::{Backend, DATABASE_VAR, REDIS_VAR, in_ci};

/// The names of this test binary's tests (`<binary> --list --format terse`).
fn tests_of_this_binary() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .env_remove("RUST_TEST_THREADS")
        .output()
        .expect("list this binary's tests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// Connects and runs `select 1`.
async fn query_postgres(url: &str) -> Result<(), String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| format!("select 1 failed: {e}"))?;
    let _ = conn.close().await;
    (one == 1)
        .then_some(())
        .ok_or_else(|| "select 1 did not return 1".to_owned())
}

/// Connects and sends `PING`.
async fn ping_redis(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad URL: {e}"))?;
    let mut conn = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connection timed out".to_owned())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("PING failed: {e}"))?;
    (pong == "PONG")
        .then_some(())
        .ok_or_else(|| format!("PING answered {pong}"))
}

#[tokio::test]
async fn services_available() {
    let tests = tests_of_this_binary();
    assert!(
        tests.iter().any(|t| t.ends_with("services_available")),
        "the test list was read: {tests:?}"
    );
    let mut used = Vec::new();
    let mut skipped = Vec::new();
    let mut needs = |var: &str, what: &str, count: usize, url: Option<String>| match url {
        Some(url) => used.push((var.to_owned(), what.to_owned(), url)),
        None => {
            assert!(
                !in_ci(),
                "CI is set but {var} is not: {count} tests of {what} would be skipped"
            );
            skipped.push(format!("{count} tests of {what} (set {var})"));
        }
    };
    let env = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    if crate::BACKEND == Backend::Postgres {
        // Every test of the postgres target but this one needs the database.
        let count = tests.len() - 1;
        needs(
            DATABASE_VAR,
            "the PostgreSQL suite",
            count,
            env(DATABASE_VAR),
        );
    }
    let redis_tests = tests
        .iter()
        .filter(|t| t.starts_with("suite::redis::live::"))
        .count();
    assert!(
        redis_tests >= 3,
        "the live Redis tests were found: {tests:?}"
    );
    // On the postgres target without a database they are already counted above.
    if crate::BACKEND == Backend::Sqlite || env(DATABASE_VAR).is_some() {
        needs(REDIS_VAR, "the Redis tests", redis_tests, env(REDIS_VAR));
    }
    for (var, what, url) in &used {
        let answered = if var == DATABASE_VAR {
            query_postgres(url).await
        } else {
            ping_redis(url).await
        };
        if let Err(e) = answered {
            panic!("{var} is set but the service does not answer, so {what} cannot run: {e}");
        }
    }
    // Written past the test harness's capture, so that a skip shows in every run's output.
    // The skips themselves are in the registry (`keygate_testkit::skip`, one per test).
    let report = if skipped.is_empty() {
        format!(
            "services_available: every test ran its services ({})\n",
            used.iter()
                .map(|(_, what, _)| what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("services_available: without {}\n", skipped.join("; "))
    };
    let _ = std::io::stderr().write_all(report.as_bytes());
}
