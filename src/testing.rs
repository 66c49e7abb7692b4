//! For unit tests: hold points (a place in a flow where a test can stop it, make a change,
//! and let it go on) and the databases to run on.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, MutexGuard, Notify};

/// A place in a flow (a read between its query and its cache insert, a password check before
/// its answer) where a test can hold it.
#[derive(Debug, Default)]
pub(crate) struct HoldPoint {
    armed: AtomicBool,
    reached: Notify,
    gate: Mutex<()>,
}

impl HoldPoint {
    /// Called by the flow: waits there while a test holds the gate.
    pub(crate) async fn pass(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            drop(self.gate.lock().await);
        }
    }

    /// Arms the hold point: the next flow to pass stops there until the guard is dropped.
    pub(crate) async fn arm(&self) -> MutexGuard<'_, ()> {
        let guard = self.gate.lock().await;
        self.armed.store(true, Ordering::SeqCst);
        guard
    }

    /// Waits until a flow stopped at the hold point.
    pub(crate) async fn reached(&self) {
        self.reached.notified().await;
    }
}

/// The databases a storage unit test runs on: a SQLite file (the directory is returned to be
/// kept alive), and a fresh PostgreSQL schema when `KEYGATE_TEST_DATABASE_URL` is set. With
/// `CI` set, its absence fails the test instead of skipping PostgreSQL.
pub(crate) async fn databases() -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut out = vec![(
        format!("sqlite://{}", dir.path().join("keygate.db").display()),
        Some(dir),
    )];
    if let Some(base) = keygate_testkit::service_url(
        "KEYGATE_TEST_DATABASE_URL",
        "a storage unit test's PostgreSQL case",
    ) {
        out.push((keygate_testkit::fresh_schema(&base).await, None));
    }
    out
}
