//! Keygate's test support, shared by every test target (the suite, the real-binary tests, the
//! browser tests, the crate's own unit tests) and the load tools: one reading of `CI`, one
//! registry of skipped tests, fresh PostgreSQL schemas, the real binary started with none of
//! the caller's `KEYGATE_*` variables, and real-binary tests run on both databases.
//!
//! A test that needs something this machine may lack (PostgreSQL, Redis, Chromium, Node.js's
//! packages, root for a tmpfs) calls [`skip`] when it is missing. In CI that fails the test:
//! a green CI run means every test ran. Elsewhere the skip is written past the test harness's
//! capture at once (so it shows in every run, passing or not) and appended to the registry,
//! `target/test-skips.log`, from which `scripts/test` (the README's test command) prints one
//! closing line naming everything skipped and how to enable it.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Whether this run is CI: `CI` set to anything but empty, `0` or `false` (CI systems set
/// `CI=true`; `.ci/run` always does).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// The registry of skips: `$CARGO_TARGET_DIR/test-skips.log`, else the workspace's
/// `target/test-skips.log`.
pub fn registry() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("test-skips.log")
}

/// Records that the calling test skips `what` because it is missing, and how to enable it
/// (`enable`: what to install or set). Panics in CI, where nothing may be skipped.
pub fn skip(what: &str, enable: &str) {
    assert!(
        !in_ci(),
        "CI is set, but {what} cannot run here: {enable}. In CI every test must run."
    );
    let line = format!("{what} ({enable})");
    // Past the harness's capture: a skip shows in the output of every run.
    let _ = std::io::stderr().write_all(format!("SKIPPED: {line}\n").as_bytes());
    let path = registry();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One short append per skip: O_APPEND keeps concurrent test processes' lines whole.
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// The value of `var` when set and not blank; `None` after [`skip`]ping `what` otherwise.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(what, &format!("set {var}"));
            None
        }
    }
}

/// The variable naming the PostgreSQL database tests run on (a fresh schema each).
pub const DATABASE_VAR: &str = "KEYGATE_TEST_DATABASE_URL";

/// Creates `kg_test_<unix seconds>_<random>` on the PostgreSQL at `base` and returns a URL
/// whose connections use it. Schemas left by runs more than an hour old are dropped on the
/// way (once per process).
pub async fn fresh_schema(base: &str) -> String {
    use sqlx::Connection as _;
    static CLEANED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("KEYGATE_TEST_DATABASE_URL must point at a reachable PostgreSQL");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if !CLEANED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let names: Vec<String> = sqlx::query_scalar(
            "select nspname::text from pg_namespace where nspname like 'kg_test_%'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list schemas");
        for name in names {
            let created: u64 = name
                .split('_')
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(now);
            if created + 3600 < now {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "drop schema if exists {name} cascade"
                )))
                .execute(&mut conn)
                .await;
            }
        }
    }
    let schema = format!(
        "kg_test_{now}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("create schema {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let _ = conn.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Drops the schema [`fresh_schema`] made for `url`, in the database named by `base`. Best
/// effort: a leftover schema is only clutter (and dropped by a later run after an hour).
pub async fn drop_schema(base: &str, url: &str) {
    use sqlx::Connection as _;
    let Some(schema) = url.rsplit("search_path%3D").next().filter(|s| {
        s.starts_with("kg_") && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("drop schema {schema} cascade")))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// A command running the Keygate binary at `binary` with none of this process's `KEYGATE_*`
/// variables (the server reads every one as configuration and refuses unknown ones), plus
/// the database of the running real-binary test ([`on_postgres`]), if any.
pub fn keygate_command(binary: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYGATE_") {
            command.env_remove(k);
        }
    }
    if let Some(url) = database_url() {
        command.env("KEYGATE_DATABASE_URL", url);
    }
    command
}

/// Runs `command` with `stdin` written to it, collecting its output; panics (after killing
/// it) if it has not exited within `limit`, so a hung binary fails its test instead of
/// hanging the run.
pub fn output_within(
    command: &mut std::process::Command,
    stdin: Option<&str>,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        let _ = pipe.write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs one SQL statement on the database at `url` (`sqlite://…` or `postgres://…`) over a
/// connection of the test's own; returns the rows it changed (for a `select`, 0).
pub fn execute(url: &str, statement: &str) -> u64 {
    block_on(execute_async(url, statement))
}

/// [`execute`] for a caller already on a runtime (an async test).
pub async fn execute_async(url: &str, statement: &str) -> u64 {
    {
        use sqlx::Connection as _;
        let sql = || sqlx::AssertSqlSafe(statement.to_owned());
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url)
                .await
                .expect("open SQLite");
            let done = sqlx::query(sql())
                .execute(&mut conn)
                .await
                .expect(statement);
            let _ = conn.close().await;
            done.rows_affected()
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let done = sqlx::query(sql())
                .execute(&mut conn)
                .await
                .expect(statement);
            let _ = conn.close().await;
            done.rows_affected()
        }
    }
}

/// The one integer `query` (such as `select count(*) …`) answers on the database at `url`.
pub fn scalar(url: &str, query: &str) -> i64 {
    block_on(async {
        use sqlx::Connection as _;
        let sql = || sqlx::AssertSqlSafe(query.to_owned());
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url)
                .await
                .expect("open SQLite");
            let v: i64 = sqlx::query_scalar(sql())
                .fetch_one(&mut conn)
                .await
                .expect(query);
            let _ = conn.close().await;
            v
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let v: i64 = sqlx::query_scalar(sql())
                .fetch_one(&mut conn)
                .await
                .expect(query);
            let _ = conn.close().await;
            v
        }
    })
}

/// `future` run to completion on a runtime of its own (the caller is not in one).
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The database URL the real-binary test running on this thread uses: its PostgreSQL schema,
/// or the binary's default SQLite file in `dir` (its working directory).
pub fn database_url_in(dir: &Path) -> String {
    database_url().unwrap_or_else(|| format!("sqlite://{}", dir.join("keygate.db").display()))
}

thread_local! {
    /// The database URL of the real-binary test running on this thread (`None`: the binary's
    /// default SQLite file in its working directory).
    static DATABASE_URL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The database URL that binaries started by this thread's test use, when it is not their
/// default SQLite file.
pub fn database_url() -> Option<String> {
    DATABASE_URL.with_borrow(Clone::clone)
}

/// Runs `test` with every binary it starts ([`keygate_command`]) on a fresh PostgreSQL schema
/// (dropped afterwards), or records the skip when `KEYGATE_TEST_DATABASE_URL` is not set.
pub fn on_postgres(test: impl FnOnce()) {
    let Some(base) = service_url(DATABASE_VAR, "a real-binary test on PostgreSQL") else {
        return;
    };
    let url = block_on(fresh_schema(&base));
    DATABASE_URL.set(Some(url.clone()));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test));
    DATABASE_URL.set(None);
    block_on(drop_schema(&base, &url));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A real-binary test run twice: `<name>::sqlite` on the binary's default SQLite file, and
/// `<name>::postgres` on a fresh PostgreSQL schema ([`on_postgres`]). The body sees the file's
/// items; binaries it starts with [`keygate_command`] get the database.
#[macro_export]
macro_rules! on_both_databases {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body() $body

            #[test]
            fn sqlite() {
                body()
            }

            #[test]
            fn postgres() {
                $crate::on_postgres(body)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_read_one_way() {
        // The variable is the process's, shared with other tests: read it, do not set it.
        let expected = std::env::var("CI")
            .map(|v| !["", "0", "false", "FALSE", "False"].contains(&v.trim()))
            .unwrap_or(false);
        assert_eq!(in_ci(), expected);
        assert!(registry().ends_with("test-skips.log"));
    }
}
