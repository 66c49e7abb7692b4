//! SQLite on a full disk (docs/RELIABILITY.md, part 5): the database lives on a small tmpfs
//! that the test fills up. Writes answer 503 `unavailable` with a log line that says the disk
//! is full, reads go on, nothing is corrupted, and writes work again once space returns.
//! Mounting needs root: outside CI a test without it says so and returns; in CI it fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, TestDb};

/// A size-limited tmpfs, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("a mount point");
        let path = dir.keep();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = std::fs::remove_dir(&path);
            keygate_testkit::skip(
                "the SQLite disk-full test",
                "run as root: it mounts a small tmpfs",
            );
            return None;
        }
        Some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Fills the file system holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("the filler");
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last bytes, one at a time.
    while file.write_all(&[0]).is_ok() {}
    let _ = file.sync_all();
    path
}

/// The log lines the server writes while the test runs (this thread's subscriber: the test's
/// runtime is single-threaded, so the server's tasks log here).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_disk_answers_503_keeps_the_data_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount(8 * 1024 * 1024) else {
        return;
    };
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = Arc::new(tempfile::tempdir_in(&disk.path).expect("a directory on the small disk"));
    let app = TestApp::spawn_on(
        TestDb::Sqlite(dir.clone()),
        "rate_limits.enabled = false",
        Arc::new(keygate::clock::ManualClock::new()),
    )
    .await;
    let t = app.user("ada@example.com").await;
    let filler = fill(&disk.path);

    // Writes until the database needs a page it cannot have (SQLite may first reuse free
    // pages and WAL space), then 20 more: each is a 201 or a 503, never a 500, and every 201
    // must prove durable below.
    let mut refused = 0;
    let mut created = Vec::new();
    let mut first_refusal = None;
    for i in 0..400 {
        let email = format!("user{i}@example.com");
        let r = app
            .post(
                "/auth/register",
                &json!({"email": email, "password": PASSWORD, "name": "x".repeat(100)}),
            )
            .await;
        match r.status().as_u16() {
            201 => created.push(email),
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "unavailable", "{body}");
                refused += 1;
            }
            other => panic!(
                "a write on a full disk answered {other}: {}",
                r.text().await.unwrap()
            ),
        }
        if refused > 0 && i >= first_refusal.unwrap_or(i) + 20 {
            break;
        }
        if refused > 0 && first_refusal.is_none() {
            first_refusal = Some(i);
        }
    }
    assert!(refused > 0, "the disk never filled up");
    // A rotation is a write too; reads go on.
    let r = app.refresh(&t.refresh).await;
    assert!(
        matches!(r.status().as_u16(), 200 | 503),
        "refresh on a full disk: {}",
        r.status()
    );
    let still_current = if r.status() == 200 {
        crate::helpers::tokens(r.json().await.unwrap()).refresh
    } else {
        t.refresh.clone()
    };
    assert_eq!(app.me_status(&t.access).await, 200, "reads go on");
    let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("the database's disk is full"),
        "a clear log line: {text}"
    );

    // Space returns: writes work again, by themselves.
    std::fs::remove_file(filler).unwrap();
    let r = app
        .post(
            "/auth/register",
            &json!({"email": "after@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201, "writes work once space returns");
    assert_eq!(app.refresh(&still_current).await.status(), 200);
    // Acknowledged means durable: a restart must find every registration answered 201.
    let app = app.restart("rate_limits.enabled = false").await;
    for email in &created {
        let r = app.login_response(email, PASSWORD).await;
        assert_eq!(r.status(), 200, "{email} was acknowledged and is kept");
    }

    // No corruption: SQLite's own check on the file, the server stopped.
    let url = app.db.url();
    drop(app);
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let check: Vec<String> = sqlx::query_scalar("pragma integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, ["ok"]);
    let _ = conn.close().await;
    drop(dir);
    drop(disk);
}
