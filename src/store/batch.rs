//! Group commit for SQLite's hot-path writes.
//!
//! A refresh is a durable write (`synchronous = FULL`: an fsync per transaction). One
//! transaction per refresh caps a node at the disk's fsync rate, so refresh rotations, new
//! sessions (a login's session, its session-limit trim and its audit row) and audit rows are
//! handed to one task that runs everything queued at that moment in a single
//! `BEGIN IMMEDIATE … COMMIT`: the same statements with the same per-statement results (a
//! rotation still learns from its own row count whether it won), one fsync for the lot.
//! Each operation runs between a savepoint and its release, so it commits all or nothing
//! whatever the others do, and its caller gets its own outcome; a batch whose transaction is
//! lost fails as a whole (see [`commit`]).
//! PostgreSQL groups concurrent commits by itself and does not use this.

use std::time::Duration;

use sqlx::query::{Query, QueryScalar};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection as _, Database, Decode, Encode, FromRow, Type};
use tokio::sync::{mpsc, oneshot};

use super::sessions::{NewSession, Rotation};
use crate::clock::to_millis;
use crate::domain::UserId;

/// Statements per transaction at most.
const MAX_BATCH: usize = 256;

pub(super) const ROTATE_SQL: &str = "update sessions set previous_hash = $3, refresh_hash = $4, \
     sealed_successor = $5, rotated_at = $6, last_active_at = $6, refresh_expires_at = $7, \
     generation = generation + 1 where id = $1 and generation = $2 and revoked_at is null";

pub(super) const AUDIT_SQL: &str = "insert into audit_events (id, at, event, user_id, session_id, \
     ip, user_agent, outcome, reason) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// The rotation statement with its arguments, for either backend.
pub(super) fn rotate_query<DB: Database>(
    r: &Rotation,
    now_ms: i64,
) -> Query<'static, DB, <DB as Database>::Arguments>
where
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    Vec<u8>: for<'t> Encode<'t, DB> + Type<DB>,
{
    sqlx::query(ROTATE_SQL)
        .bind(r.id.to_string())
        .bind(r.from_generation)
        .bind(r.previous_hash.0.to_vec())
        .bind(r.new_hash.0.to_vec())
        .bind(r.sealed_successor.clone())
        .bind(now_ms)
        .bind(to_millis(r.refresh_expires_at))
}

/// Inserts a session only if its user is active and still at the credentials version its
/// login read (`$9`): a login that checked a password just before a password change or a
/// disable inserts nothing. On PostgreSQL `for share` makes the check wait for such a change
/// in progress and see its outcome, and makes a change wait for this insert's commit (so the
/// revocation that follows the change sees the session). SQLite has one writer at a time,
/// and no such clause.
const INSERT_SESSION_SQL: &str = "insert into sessions (id, user_id, refresh_hash, \
     generation, refresh_expires_at, expires_at, created_at, last_active_at, user_agent, ip, mfa) \
     select $1, $2, $3, 0, $4, $5, $6, $6, $7, $8, $10 where exists (select 1 from users \
     where id = $2 and is_active = true and credentials_version = $9 for share)";

/// [`INSERT_SESSION_SQL`] for SQLite.
const INSERT_SESSION_SQLITE: &str = "insert into sessions (id, user_id, refresh_hash, \
     generation, refresh_expires_at, expires_at, created_at, last_active_at, user_agent, ip, mfa) \
     select $1, $2, $3, 0, $4, $5, $6, $6, $7, $8, $10 where exists (select 1 from users \
     where id = $2 and is_active = true and credentials_version = $9)";

/// Ends the user's live sessions beyond the `$3` most recently active; returns their ids.
const TRIM_SESSIONS_SQL: &str = "update sessions set revoked_at = $2, \
     revoked_reason = 'session_limit', sealed_successor = null \
     where user_id = $1 and revoked_at is null and id not in ( \
       select id from sessions where user_id = $1 and revoked_at is null \
       order by last_active_at desc, id desc limit $3) \
     returning id";

/// The session insert with its arguments, for either backend.
pub(super) fn insert_session_query<DB: Database>(
    s: &NewSession,
    now_ms: i64,
) -> Query<'static, DB, <DB as Database>::Arguments>
where
    String: for<'t> Encode<'t, DB> + Type<DB>,
    Option<String>: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    Option<i64>: for<'t> Encode<'t, DB> + Type<DB>,
    Vec<u8>: for<'t> Encode<'t, DB> + Type<DB>,
    bool: for<'t> Encode<'t, DB> + Type<DB>,
{
    let sql = if DB::NAME == <sqlx::Sqlite as Database>::NAME {
        INSERT_SESSION_SQLITE
    } else {
        INSERT_SESSION_SQL
    };
    sqlx::query(sql)
        .bind(s.id.to_string())
        .bind(s.user_id.to_string())
        .bind(s.refresh_hash.0.to_vec())
        .bind(to_millis(s.refresh_expires_at))
        .bind(s.expires_at.map(to_millis))
        .bind(now_ms)
        .bind(s.user_agent.clone())
        .bind(s.ip.clone())
        .bind(s.credentials_version)
        .bind(s.mfa)
}

/// The session-limit trim with its arguments, for either backend.
pub(super) fn trim_sessions_query<DB: Database>(
    user_id: UserId,
    keep: u32,
    now_ms: i64,
) -> QueryScalar<'static, DB, String, <DB as Database>::Arguments>
where
    String: for<'t> Encode<'t, DB> + Type<DB> + for<'r> Decode<'r, DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_scalar(TRIM_SESSIONS_SQL)
        .bind(user_id.to_string())
        .bind(now_ms)
        .bind(i64::from(keep))
}

/// An audit row, owned so that it can wait in the queue.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub(super) id: String,
    pub(super) at: i64,
    pub(super) event: String,
    pub(super) user_id: Option<String>,
    pub(super) session_id: Option<String>,
    pub(super) ip: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) outcome: &'static str,
    pub(super) reason: Option<String>,
}

impl AuditRow {
    pub(super) fn new(e: &super::NewAuditEvent<'_>, at: i64) -> AuditRow {
        AuditRow {
            id: uuid::Uuid::now_v7().to_string(),
            at,
            event: e.event.to_owned(),
            user_id: e.user_id.map(|u| u.to_string()),
            session_id: e.session_id.map(|s| s.to_string()),
            ip: e.ip.map(str::to_owned),
            user_agent: e.user_agent.map(str::to_owned),
            outcome: if e.success { "success" } else { "failure" },
            reason: e.reason.map(str::to_owned),
        }
    }
}

/// The audit insert with its arguments, for either backend.
pub(super) fn audit_query<DB: Database>(
    a: AuditRow,
) -> Query<'static, DB, <DB as Database>::Arguments>
where
    String: for<'t> Encode<'t, DB> + Type<DB>,
    Option<String>: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    sqlx::query(AUDIT_SQL)
        .bind(a.id)
        .bind(a.at)
        .bind(a.event)
        .bind(a.user_id)
        .bind(a.session_id)
        .bind(a.ip)
        .bind(a.user_agent)
        .bind(a.outcome.to_owned())
        .bind(a.reason)
}

enum Op {
    /// A rotation and, if it wins, its audit row.
    Rotate(Rotation, i64, Option<AuditRow>),
    /// A new session, the trim of its user's sessions beyond the newest `keep`, its audit row.
    Open {
        session: NewSession,
        now_ms: i64,
        keep: u32,
        audit: Option<AuditRow>,
    },
    Audit(AuditRow),
    /// Nothing: its answer comes once everything queued before it has committed.
    Barrier,
    /// A statement of a test's choosing (to inject a failure into a batch).
    #[cfg(test)]
    Raw(&'static str),
}

/// What an operation did.
#[derive(Debug)]
pub(super) struct Done {
    /// Rows the operation's main statement changed.
    pub(super) rows: u64,
    /// Sessions it ended (the session-limit trim of a new session).
    pub(super) ended: Vec<String>,
}

impl Done {
    fn rows(rows: u64) -> Done {
        Done {
            rows,
            ended: Vec::new(),
        }
    }
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, sqlx::Error>>,
}

/// Handle to the group-commit task.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Opens the task's own connection and starts it.
    pub(super) async fn start(options: SqliteConnectOptions) -> Result<Batcher, sqlx::Error> {
        let conn = SqliteConnection::connect_with(&options).await?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, rx));
        Ok(Batcher { tx })
    }

    async fn submit(&self, op: Op) -> Result<Done, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }

    /// Rotates and, when the rotation wins, appends `audit`; returns the rows the rotation
    /// changed (1 when this call won).
    pub(super) async fn rotate(
        &self,
        r: Rotation,
        now_ms: i64,
        audit: Option<AuditRow>,
    ) -> Result<u64, sqlx::Error> {
        Ok(self.submit(Op::Rotate(r, now_ms, audit)).await?.rows)
    }

    /// Inserts `session`, ends its user's live sessions beyond the newest `keep` (it counts)
    /// and appends `audit`; returns the ids of the sessions it ended, or `None` (and does
    /// nothing) when the user's credentials changed since the login read them.
    pub(super) async fn open(
        &self,
        session: NewSession,
        now_ms: i64,
        keep: u32,
        audit: Option<AuditRow>,
    ) -> Result<Option<Vec<String>>, sqlx::Error> {
        let op = Op::Open {
            session,
            now_ms,
            keep,
            audit,
        };
        let done = self.submit(op).await?;
        Ok((done.rows == 1).then_some(done.ended))
    }

    /// Returns once every operation queued before this call has committed (or failed).
    pub(super) async fn flush(&self) {
        let _ = self.submit(Op::Barrier).await;
    }

    /// Appends an audit row.
    pub(super) async fn audit(&self, a: AuditRow) -> Result<u64, sqlx::Error> {
        Ok(self.submit(Op::Audit(a)).await?.rows)
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        crate::metrics::group_commit(batch.len());
        let results = commit(&mut conn, &batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// One operation's statements, inside the batch's transaction.
async fn run_op(conn: &mut SqliteConnection, op: &Op) -> Result<Done, sqlx::Error> {
    match op {
        Op::Barrier => Ok(Done::rows(0)),
        Op::Rotate(r, now, audit) => {
            let rotated = rotate_query::<sqlx::Sqlite>(r, *now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if let (1, Some(row)) = (rotated, audit) {
                audit_query::<sqlx::Sqlite>(row.clone())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Done::rows(rotated))
        }
        Op::Open {
            session,
            now_ms,
            keep,
            audit,
        } => {
            let inserted = insert_session_query::<sqlx::Sqlite>(session, *now_ms)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if inserted == 0 {
                return Ok(Done::rows(0));
            }
            let ended = trim_sessions_query::<sqlx::Sqlite>(session.user_id, *keep, *now_ms)
                .fetch_all(&mut *conn)
                .await?;
            if let Some(row) = audit {
                audit_query::<sqlx::Sqlite>(row.clone())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Done { rows: 1, ended })
        }
        Op::Audit(a) => Ok(Done::rows(
            audit_query::<sqlx::Sqlite>(a.clone())
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        )),
        #[cfg(test)]
        Op::Raw(sql) => Ok(Done::rows(
            sqlx::query(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *conn)
                .await?
                .rows_affected(),
        )),
    }
}

/// Runs the batch in one transaction, each operation all or nothing: an operation that fails
/// is rolled back to its savepoint (its caller gets the error; the others' work commits), and
/// the others keep their own outcome. If the transaction itself is lost (the commit fails, or
/// SQLite rolled it back after an error, so that a later statement would run in autocommit),
/// nothing of the batch is kept and every operation fails.
async fn commit(conn: &mut SqliteConnection, batch: &[Job]) -> Vec<Result<Done, sqlx::Error>> {
    let mut began = sqlx::query("begin immediate").execute(&mut *conn).await;
    // Another writer holds the lock past the busy timeout: try a few more times.
    for attempt in 1..=3u64 {
        if began.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
        began = sqlx::query("begin immediate").execute(&mut *conn).await;
    }
    if let Err(e) = began {
        tracing::warn!(error = %e, "group commit could not begin a transaction");
        return all_failed(batch);
    }
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match isolated(conn, &job.op).await {
            Ok(result) => results.push(result),
            Err(e) => {
                tracing::warn!(error = %e, "group commit lost its transaction");
                let _ = sqlx::query("rollback").execute(&mut *conn).await;
                return all_failed(batch);
            }
        }
    }
    if let Err(e) = sqlx::query("commit").execute(&mut *conn).await {
        tracing::warn!(error = %e, "group commit failed");
        let _ = sqlx::query("rollback").execute(&mut *conn).await;
        return all_failed(batch);
    }
    results
}

/// Runs one operation between a savepoint and its release. The outer `Err` means the batch's
/// transaction is gone or unusable (a savepoint statement failed: "no such savepoint" when
/// SQLite ended the transaction); the inner result is the operation's own, its statements
/// undone when it is an error.
async fn isolated(
    conn: &mut SqliteConnection,
    op: &Op,
) -> Result<Result<Done, sqlx::Error>, sqlx::Error> {
    sqlx::query("savepoint op").execute(&mut *conn).await?;
    let result = run_op(conn, op).await;
    if result.is_err() {
        sqlx::query("rollback to op").execute(&mut *conn).await?;
    }
    sqlx::query("release op").execute(&mut *conn).await?;
    Ok(result)
}

/// Every operation of a batch that did not commit. Reported as an unavailable database: the
/// callers answer 503 with Retry-After.
fn all_failed(batch: &[Job]) -> Vec<Result<Done, sqlx::Error>> {
    batch
        .iter()
        .map(|_| Err(sqlx::Error::PoolTimedOut))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use time::OffsetDateTime;

    use super::*;
    use crate::store::tests::{new_session, store, url, user_with_session};
    use crate::store::{NewAuditEvent, Store};

    fn audit_of(session: &NewSession, at: i64) -> AuditRow {
        AuditRow::new(
            &NewAuditEvent {
                event: "login",
                user_id: Some(session.user_id),
                session_id: Some(session.id),
                ip: None,
                user_agent: None,
                success: true,
                reason: None,
            },
            at,
        )
    }

    fn open(session: &NewSession, now_ms: i64, audit: AuditRow) -> Op {
        Op::Open {
            session: session.clone(),
            now_ms,
            keep: 100,
            audit: Some(audit),
        }
    }

    /// Runs `ops` as one batch on a connection of its own, as the task does.
    async fn batch(dir: &tempfile::TempDir, ops: Vec<Op>) -> Vec<Result<Done, sqlx::Error>> {
        let options = SqliteConnectOptions::from_str(&url(dir)).expect("url");
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .expect("connect");
        let jobs: Vec<Job> = ops
            .into_iter()
            .map(|op| Job {
                op,
                reply: oneshot::channel().0,
            })
            .collect();
        commit(&mut conn, &jobs).await
    }

    async fn exists(store: &Store, session: &NewSession) -> bool {
        store
            .find_session(session.id)
            .await
            .expect("read")
            .is_some()
    }

    #[tokio::test]
    async fn an_operation_that_fails_half_way_leaves_nothing_and_the_others_commit() {
        let (store, dir) = store().await;
        let now = OffsetDateTime::now_utc();
        let now_ms = to_millis(now);
        let (user, _) = user_with_session(&store, now).await;
        let (a, b, c) = (
            new_session(user.id, now),
            new_session(user.id, now),
            new_session(user.id, now),
        );
        let taken = audit_of(&a, now_ms);
        let first = batch(&dir, vec![Op::Audit(taken.clone())]).await;
        assert!(first[0].is_ok());
        // `b`'s session insert succeeds, then its audit row collides with an existing id.
        let results = batch(
            &dir,
            vec![
                open(&a, now_ms, audit_of(&a, now_ms)),
                open(&b, now_ms, taken),
                open(&c, now_ms, audit_of(&c, now_ms)),
            ],
        )
        .await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            results[1].is_err(),
            "the caller learns its operation failed"
        );
        assert!(exists(&store, &a).await && exists(&store, &c).await);
        assert!(
            !exists(&store, &b).await,
            "the failed operation's first statement was committed"
        );
    }

    #[tokio::test]
    async fn a_batch_that_loses_its_transaction_keeps_nothing_and_runs_nothing_in_autocommit() {
        let (store, dir) = store().await;
        let now = OffsetDateTime::now_utc();
        let now_ms = to_millis(now);
        let (user, _) = user_with_session(&store, now).await;
        let (a, c, d) = (
            new_session(user.id, now),
            new_session(user.id, now),
            new_session(user.id, now),
        );
        // The second operation ends the transaction, as SQLite does after some errors.
        let results = batch(
            &dir,
            vec![
                open(&a, now_ms, audit_of(&a, now_ms)),
                Op::Raw("rollback"),
                open(&c, now_ms, audit_of(&c, now_ms)),
            ],
        )
        .await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert!(!exists(&store, &a).await, "rolled back with the batch");
        assert!(
            !exists(&store, &c).await,
            "ran in autocommit after the batch was lost"
        );
        // The next batch starts clean.
        let results = batch(&dir, vec![open(&d, now_ms, audit_of(&d, now_ms))]).await;
        assert!(results[0].is_ok());
        assert!(exists(&store, &d).await);
    }
}
