//! The integration suite on SQLite: a fresh database file per test. Always runs.

#[path = "sqlite/disk_full.rs"]
mod disk_full;
mod suite;

pub(crate) use suite::{helpers, proxy};

/// The backend this target runs the suite on.
pub(crate) const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
