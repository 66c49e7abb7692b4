//! Persistence: users, sessions (with their refresh-token family) and signing keys.
//!
//! One [`Store`] over two concrete backends, SQLite and PostgreSQL, never `sqlx::Any`. The SQL
//! is portable (numbered `$1` placeholders, `bigint` millisecond timestamps, text ids, JSON text
//! for lists), written once per query and run on whichever pool the store holds through the
//! `on_pool!` macro. Nothing outside this module sees a pool, a row or a database error.

mod audit;
mod batch;
mod cache;
mod keys;
mod mail;
mod mfa;
mod purge;
mod revocations;
mod sealed;
mod sessions;
mod users;

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use audit::{AuditQuery, AuditRecord, NewAuditEvent};
pub use cache::CACHE_TTL;
pub use keys::KeyInfo;
pub use mail::{EmailTokenRecord, MailKind, NewEmailToken, NewMail, OutboxRecord, TokenPurpose};
pub use mfa::{ChallengeRecord, MFA_ATTEMPTS, NewChallenge, TotpRecord};
pub use purge::{MAIL_RETENTION, PurgeCounts, TableCounts};
pub use revocations::{FeedEntry, RevocationPage};
pub use sealed::SealedGroup;
pub use sessions::{NewSession, Rotation, SessionRecord};
pub use users::{NewUser, StoredHash, UserChange, UserRecord};

use crate::config::Config;

/// Store failures. Messages never include values: they can be secrets.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique column already holds the value (`email` or `username`).
    #[error("{0} already taken")]
    Conflict(&'static str),
    /// The database could not be reached or is overloaded.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else the database said.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A row holds something this version cannot read.
    #[error("corrupt row in {0}")]
    Corrupt(&'static str),
    /// The write would have left no active user holding the role it had to keep; nothing
    /// changed.
    #[error("the last active holder of the role")]
    LastHolder,
    /// The user was disabled or got a new password since their credentials were read: the
    /// session was not opened.
    #[error("the user's credentials changed")]
    CredentialsChanged,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            // Connection exceptions (08…), operator intervention such as a shutting-down server
            // (57P…), insufficient resources (53…) and lost races of the database's own
            // scheduling (40001 serialization failure, 40P01 deadlock): try again later.
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("53")
                        || c == "40001"
                        || c == "40P01"
                }) =>
            {
                StoreError::Unavailable(e)
            }
            // SQLITE_FULL: the disk (or the file system's quota) is full. Writes fail until
            // space is freed; reads go on. An answer to retry, not a server fault.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("13") => {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                // SQLite names the column ("UNIQUE constraint failed: users.email"),
                // PostgreSQL the constraint ("users_email_key"): both contain the column.
                let what = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
                if what.contains("username") {
                    StoreError::Conflict("username")
                } else if what.contains("email") {
                    StoreError::Conflict("email")
                } else {
                    StoreError::Database(e)
                }
            }
            _ => StoreError::Database(e),
        }
    }
}

#[derive(Debug, Clone)]
enum Backend {
    /// SQLite allows one writer at a time: writes go through a one-connection pool so they
    /// queue in the process instead of failing with "database is locked".
    Sqlite {
        reader: SqlitePool,
        writer: SqlitePool,
        batcher: batch::Batcher,
    },
    Postgres(PgPool),
}

/// The database. Cheap to clone (pools are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    cache: std::sync::Arc<cache::ReadCache>,
}

/// Runs `$body` with `$pool` bound to the backend's pool (`read` or `write`: SQLite has
/// separate pools for them) and evaluates to `Result<T, StoreError>`. Inside `$body`, `?`
/// works on `sqlx::Error`. Transient failures (see [`is_transient`]) run `$body` again, up to
/// three times with a short back-off, so a lost race inside the database is never surfaced.
macro_rules! on_pool {
    ($store:expr, read, |$pool:ident| $body:expr) => {
        $crate::store::on_pool!(@run $store, reader, |$pool| $body)
    };
    ($store:expr, write, |$pool:ident| $body:expr) => {
        $crate::store::on_pool!(@run $store, writer, |$pool| $body)
    };
    (@run $store:expr, $side:ident, |$pool:ident| $body:expr) => {{
        let mut attempt: u32 = 0;
        loop {
            let result: ::std::result::Result<_, ::sqlx::Error> = match &$store.backend {
                $crate::store::Backend::Sqlite { $side: $pool, .. } => async { Ok($body) }.await,
                $crate::store::Backend::Postgres($pool) => async { Ok($body) }.await,
            };
            match result {
                Ok(value) => break Ok(value),
                Err(e) if attempt < 3 && $crate::store::is_transient(&e) => {
                    attempt += 1;
                    ::tokio::time::sleep(::std::time::Duration::from_millis(10 << attempt)).await;
                }
                Err(e) => break Err($crate::store::StoreError::from(e)),
            }
        }
    }};
}
pub(crate) use on_pool;

/// Failures worth running the statement again for: PostgreSQL's serialization failure and
/// deadlock, SQLite's busy and locked (another process holds the write lock past the timeout).
/// Whether `e` says the database's disk is full (SQLite's `SQLITE_FULL`; PostgreSQL's
/// `disk_full`, 53100).
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("13" | "53100")))
}

pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517" | "773")
        ),
        _ => false,
    }
}

impl Store {
    /// Opens the database named by `database_url` (creating a SQLite file if needed).
    /// Does not migrate: call [`Store::migrate`].
    pub async fn connect(cfg: &Config) -> Result<Store, StoreError> {
        let url = cfg.database_url.expose_secret();
        if cfg.is_postgres() {
            let opts = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
            let pool = PgPoolOptions::new()
                .max_connections(cfg.database_max_connections)
                .min_connections(0)
                .acquire_timeout(cfg.database_acquire_timeout)
                // Connections die with the server or the network; check before handing one out
                // and do not keep idle ones forever.
                .test_before_acquire(true)
                .idle_timeout(Duration::from_secs(300))
                .connect_lazy_with(opts);
            return Ok(Store {
                backend: Backend::Postgres(pool),
                cache: Default::default(),
            });
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed rotation survives power loss, so a client never holds a
            // refresh token the database has forgotten.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // 256 KiB of page cache per connection (SQLite's default is 2 MiB, and each of the
            // six connections keeps its own copy of the same pages): the hot rows are cached
            // above the database for 500 ms, and the operating system caches the file anyway.
            .pragma("cache_size", "-256");
        // Nodes (or `keygate` commands) opening one new file at the same moment can meet
        // SQLITE_BUSY outside the busy handler (while one of them switches the file to WAL):
        // that is not an error worth failing start-up for, so the opening is tried again.
        let mut attempt = 0;
        let (writer, batcher, reader) = loop {
            match Self::open_sqlite(cfg, &opts).await {
                Err(e) if attempt < 8 && is_transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
                }
                other => break other?,
            }
        };
        Ok(Store {
            backend: Backend::Sqlite {
                reader,
                writer,
                batcher,
            },
            cache: Default::default(),
        })
    }

    /// The writer pool, the group-commit task and the reader pool of a SQLite file.
    async fn open_sqlite(
        cfg: &Config,
        opts: &SqliteConnectOptions,
    ) -> Result<(SqlitePool, batch::Batcher, SqlitePool), sqlx::Error> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(cfg.database_acquire_timeout)
            // A connection must come back with no transaction open. After SQLite gives up a
            // transaction by itself (SQLITE_FULL: the disk is full), the pool's own rollback
            // fails and the connection kept the write lock, so every later write waited out
            // the busy timeout (found by `disk_full`). A rollback that succeeds here means a
            // transaction was left open: the connection is closed, and its lock with it.
            .after_release(|conn, _| {
                Box::pin(async move {
                    let was_open = sqlx::query("rollback").execute(&mut *conn).await.is_ok();
                    Ok(!was_open)
                })
            })
            .connect_with(opts.clone())
            .await?;
        let batcher = batch::Batcher::start(opts.clone()).await?;
        // SQLite reads are in-process and short: a few connections keep every core busy, and
        // each one holds its own page cache (memory), so readers are capped at 4 by default.
        let reader = SqlitePoolOptions::new()
            .max_connections(cfg.database_max_connections.min(4))
            .acquire_timeout(cfg.database_acquire_timeout)
            .connect_with(opts.clone().read_only(true))
            .await?;
        Ok((writer, batcher, reader))
    }

    /// This store with its read cache timed by `clock` (the server's clock, so that tests
    /// cross [`CACHE_TTL`] by advancing it). Starts with an empty cache: call it before
    /// cloning the store.
    pub fn with_clock(self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Store {
        Store {
            backend: self.backend,
            cache: std::sync::Arc::new(cache::ReadCache::new(clock)),
        }
    }

    /// Applies pending migrations (embedded in the binary).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                // SQLite has no migration lock: when two processes migrate one file at once,
                // the loser fails on the winner's tables. Its retry finds them applied.
                let mut attempt = 0;
                loop {
                    match sqlx::migrate!("./migrations/sqlite").run(writer).await {
                        Ok(()) => return Ok(()),
                        Err(_) if attempt < 3 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => return Err(StoreError::Migrate(e)),
                    }
                }
            }
            Backend::Postgres(pg) => sqlx::migrate!("./migrations/postgres")
                .run(pg)
                .await
                .map_err(StoreError::Migrate),
        }
    }

    /// The group-commit task, on SQLite.
    fn batcher(&self) -> Option<&batch::Batcher> {
        match &self.backend {
            Backend::Sqlite { batcher, .. } => Some(batcher),
            Backend::Postgres(_) => None,
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        on_pool!(self, read, |pool| sqlx::query("select 1")
            .execute(pool)
            .await
            .map(|_| ())?)
        .is_ok()
    }

    /// Each pool's name, open connections and idle connections (for the metrics).
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize)> {
        match &self.backend {
            Backend::Sqlite { reader, writer, .. } => vec![
                ("read", reader.size(), reader.num_idle()),
                ("write", writer.size(), writer.num_idle()),
            ],
            Backend::Postgres(pg) => vec![("main", pg.size(), pg.num_idle())],
        }
    }

    /// Waits until every write queued for the SQLite group commit so far has committed
    /// (nothing to wait for on PostgreSQL).
    pub async fn flush(&self) {
        if let Backend::Sqlite { batcher, .. } = &self.backend {
            batcher.flush().await;
        }
    }

    /// Closes every connection (graceful shutdown), after the queued writes committed.
    pub async fn close(&self) {
        self.flush().await;
        match &self.backend {
            Backend::Sqlite { reader, writer, .. } => {
                reader.close().await;
                writer.close().await;
            }
            Backend::Postgres(pg) => pg.close().await,
        }
    }
}

fn json_list(text: &str, table: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt(table))
}

fn to_json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Store tests that need to stop a read half-way, which only the crate itself can do.

    use std::sync::Arc;

    use time::OffsetDateTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{Email, SessionId};
    use crate::token::RefreshHash;

    /// The URL of the database of [`store`] in `dir`.
    pub(super) fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("keygate.db").display())
    }

    /// A migrated SQLite store in a temporary directory, timed by a clock that does not move (so
    /// no cache entry expires by itself during a test).
    pub(super) async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        (store_on(&url(&dir)).await, dir)
    }

    /// A migrated store on `url`, timed by a clock that does not move.
    async fn store_on(url: &str) -> Store {
        let config = Config::from_toml(&format!("database_url = \"{url}\"")).expect("config");
        let store = Store::connect(&config)
            .await
            .expect("store")
            .with_clock(Arc::new(ManualClock::new()));
        store.migrate().await.expect("migrate");
        store
    }

    pub(super) async fn user_with_session(
        store: &Store,
        now: OffsetDateTime,
    ) -> (UserRecord, SessionId) {
        let user = store
            .insert_user(
                NewUser {
                    email: Email::parse("ada@example.com").expect("email"),
                    username: None,
                    name: None,
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA".into(),
                    roles: vec![],
                    permissions: vec![],
                },
                now,
            )
            .await
            .expect("user");
        let session = new_session(user.id, now);
        store.insert_session(&session, now).await.expect("session");
        (user, session.id)
    }

    /// A new session of `user`, not stored.
    pub(super) fn new_session(user: crate::domain::UserId, now: OffsetDateTime) -> NewSession {
        NewSession {
            id: SessionId::new(),
            user_id: user,
            refresh_hash: RefreshHash([7; 32]),
            refresh_expires_at: now + time::Duration::days(1),
            expires_at: None,
            user_agent: None,
            ip: None,
            credentials_version: 0,
            mfa: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_liveness_read_overtaken_by_a_revoke_does_not_refill_the_cache() {
        for (url, _dir) in crate::testing::databases().await {
            liveness_read_overtaken_by_a_revoke(&store_on(&url).await).await;
        }
    }

    async fn liveness_read_overtaken_by_a_revoke(store: &Store) {
        let now = OffsetDateTime::now_utc();
        let (user, id) = user_with_session(store, now).await;

        let gate = store.cache.hold.arm().await;
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.session_is_live(id, user.id, now).await }
        });
        store.cache.hold.reached().await;
        // The read has its answer ("live") but has not stored it yet; now the session ends.
        assert!(
            store
                .revoke_session(id, "logout", now)
                .await
                .expect("revoke")
        );
        drop(gate);
        assert!(read.await.expect("read").expect("live"), "it read before");
        assert!(
            !store.session_is_live(id, user.id, now).await.expect("read"),
            "a revoked session served as live from the cache"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_read_overtaken_by_a_disable_does_not_refill_the_cache() {
        for (url, _dir) in crate::testing::databases().await {
            user_read_overtaken_by_a_disable(&store_on(&url).await).await;
        }
    }

    async fn user_read_overtaken_by_a_disable(store: &Store) {
        let now = OffsetDateTime::now_utc();
        let (user, _) = user_with_session(store, now).await;

        let gate = store.cache.hold.arm().await;
        let read = tokio::spawn({
            let store = store.clone();
            async move { store.find_user(user.id).await }
        });
        store.cache.hold.reached().await;
        assert!(
            store
                .set_user_active(user.id, false, now)
                .await
                .expect("disable")
        );
        drop(gate);
        let before = read.await.expect("read").expect("user").expect("exists");
        assert!(before.is_active, "it read before");
        let after = store
            .find_user(user.id)
            .await
            .expect("read")
            .expect("exists");
        assert!(
            !after.is_active,
            "a disabled user served as active from the cache"
        );
    }
}
