//! The integration suite on PostgreSQL: a fresh schema per test in the database named by
//! `KEYGATE_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`). Without that
//! variable every test here says it was skipped and returns, and `services_available` counts
//! them; with `CI` set they fail instead. CI always sets it.

#[path = "postgres/outage.rs"]
mod outage;
mod suite;

pub(crate) use suite::{helpers, proxy};

/// The backend this target runs the suite on.
pub(crate) const BACKEND: helpers::Backend = helpers::Backend::Postgres;
