//! Keygate under abuse that only time and crashes bring (docs/RELIABILITY.md, parts 4 and 6).
//!
//! `keygate-torture crash --server BIN [--kills N]`: runs the server on a database that
//! survives it (a SQLite file, or a fresh PostgreSQL schema with `--database-url`), puts it
//! under mixed load (registrations, logins, refreshes, `/auth/me`, logouts), `kill -9`s it at a
//! random moment, checks the database (`PRAGMA integrity_check`, foreign keys and the schema's
//! invariants as SQL), restarts it and checks over HTTP that everything it acknowledged holds:
//! every acknowledged registration exists and can log in, every acknowledged rotation's
//! successor refreshes while its predecessor is dead, every acknowledged logout holds.
//!
//! `keygate-torture soak --server BIN [--minutes M]`: the same load, paced, for M minutes;
//! every 10 s the server's RSS, open file descriptors, database size, p99 latency, 5xx and
//! lost requests go into a CSV; at the end the acknowledged state is checked as above, a plot
//! is drawn (SVG) and the pass criteria are judged: no 5xx, nothing acknowledged lost, RSS and
//! descriptors flat after warm-up, p99 stable.
//!
//! Exit status: 0 when every check held, 1 otherwise (the reasons on stderr).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use keygate_bench::{Conn, fresh_schema, percentile};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sqlx::Row as _;

const PASSWORD: &str = "correct horse battery staple";
/// Sessions a user may have that could be live (the server keeps 20): uncertain ones count.
const SESSIONS_PER_USER: u32 = 8;
/// An access token older than this is refreshed rather than used (the server's TTL is 15 min).
const ACCESS_MAX_AGE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    server: PathBuf,
    kills: u32,
    minutes: f64,
    /// Requests per second the soak aims at (all workers together).
    rate: f64,
    workers: usize,
    database_url: Option<String>,
    csv: Option<PathBuf>,
    svg: Option<PathBuf>,
    seed: u64,
    /// Sample interval of the soak.
    interval: Duration,
    /// Minutes of the soak that are warm-up (not judged for flatness).
    warmup_minutes: f64,
    /// Checks the checker (crash): after the first kill, one acknowledged registration is
    /// deleted and one acknowledged session ended behind the server's back; the run must fail.
    tamper: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        mode: argv.first().cloned().unwrap_or_default(),
        server: PathBuf::from("target/release/keygate"),
        kills: 20,
        minutes: 30.0,
        rate: 150.0,
        workers: 8,
        database_url: None,
        csv: None,
        svg: None,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        interval: Duration::from_secs(10),
        warmup_minutes: 5.0,
        tamper: false,
    };
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let number = |what: &str| -> f64 {
            value.parse().unwrap_or_else(|_| {
                eprintln!("{what} takes a number, not {value:?}");
                std::process::exit(2)
            })
        };
        match argv[i].as_str() {
            "--server" => a.server = PathBuf::from(&value),
            "--kills" => a.kills = number("--kills") as u32,
            "--minutes" => a.minutes = number("--minutes"),
            "--rate" => a.rate = number("--rate"),
            "--workers" => a.workers = (number("--workers") as usize).max(1),
            "--database-url" => a.database_url = Some(value.clone()).filter(|v| !v.is_empty()),
            "--csv" => a.csv = Some(PathBuf::from(&value)),
            "--svg" => a.svg = Some(PathBuf::from(&value)),
            "--seed" => a.seed = number("--seed") as u64,
            "--interval" => a.interval = Duration::from_secs_f64(number("--interval")),
            "--warmup" => a.warmup_minutes = number("--warmup"),
            "--tamper" => {
                a.tamper = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; see docs/RELIABILITY.md");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    if a.mode != "crash" && a.mode != "soak" {
        eprintln!(
            "usage: keygate-torture crash|soak --server BIN [options]; see docs/RELIABILITY.md"
        );
        std::process::exit(2);
    }
    a.server = std::fs::canonicalize(&a.server).unwrap_or(a.server);
    a
}

/// The server process, restarted on the same port and database.
struct Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    addr: String,
    database_url: String,
    child: Option<tokio::process::Child>,
    starts: u32,
}

impl Server {
    fn new(binary: &Path, postgres: Option<String>) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let database_url = postgres
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("keygate.db").display()));
        Server {
            binary: binary.to_owned(),
            addr: format!("127.0.0.1:{port}"),
            database_url,
            dir,
            child: None,
            starts: 0,
        }
    }

    fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url
            .starts_with("sqlite:")
            .then(|| self.dir.path().join("keygate.db"))
    }

    /// Starts the server and waits until it answers `/healthz`.
    async fn start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("keygate.log"))
            .map_err(|e| e.to_string())?;
        let child = keygate_bench::keygate_command(&self.binary)
            .current_dir(self.dir.path())
            .args(["serve", "--listen", &self.addr])
            .env("KEYGATE_DATABASE_URL", &self.database_url)
            // All load comes from one address: per-IP limits would measure the limiter.
            .env("KEYGATE_RATE_LIMITS__ENABLED", "false")
            .env("KEYGATE_LOG__LEVEL", "warn")
            .env("KEYGATE_LOG__FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Conn::open(&self.addr).await
                && let Ok((200, _)) = c.call(Method::GET, "/healthz", None, None).await
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "keygate exited at start ({status}); {}",
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "keygate did not answer within 60 s; {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// `kill -9`: no chance to flush, close or say goodbye.
    async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits for the graceful shutdown; its exit status.
    async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .ok()?
            .ok()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("keygate.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        format!(
            "last log lines: {:?}",
            lines.into_iter().rev().collect::<Vec<_>>()
        )
    }

    /// Log lines at error level (a clean run has none).
    fn error_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("keygate.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }
}

/// A session as far as the server acknowledged it.
#[derive(Debug, Clone)]
enum Session {
    Live {
        user: String,
        current: String,
        /// The token the last acknowledged rotation replaced: dead once the successor is used.
        previous: Option<String>,
        access: String,
        access_at: Instant,
    },
    /// An acknowledged logout: the token must stay refused.
    Ended { token: String },
}

/// What the server acknowledged, and what broke a promise.
#[derive(Default)]
struct Ledger {
    users: Vec<String>,
    /// Acknowledged registrations not yet shown able to log in.
    unchecked_users: Vec<String>,
    /// Sessions per user that could be live (in-doubt ones included, forever).
    user_sessions: HashMap<String, u32>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    violations: Vec<String>,
    stats: Stats,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    requests: u64,
    acknowledged: u64,
    /// Requests whose answer never came (the server was killed): their outcome is unknown and
    /// nothing is assumed of it.
    in_doubt: u64,
    server_errors: u64,
    unexpected: u64,
}

impl Ledger {
    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.push(what);
    }

    fn login_candidate(&self, rng: &mut StdRng) -> Option<String> {
        if self.users.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let user = &self.users[rng.random_range(0..self.users.len())];
            if self.user_sessions.get(user).copied().unwrap_or(0) < SESSIONS_PER_USER {
                return Some(user.clone());
            }
        }
        None
    }
}

/// What a worker's step returns when it sent nothing.
const SKIPPED: u16 = 0;

/// One request's fate.
enum Reply {
    Answered(u16, Value),
    /// No answer: the connection failed (the server is down or was killed mid-request).
    Lost,
}

async fn send(
    conn: &mut Option<Conn>,
    addr: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    if conn.is_none() {
        *conn = Conn::open(addr).await.ok();
    }
    let Some(c) = conn.as_mut() else {
        return Reply::Lost;
    };
    match c.call(method, path, bearer, body).await {
        Ok((status, bytes)) => Reply::Answered(
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        Err(_) => {
            *conn = None;
            Reply::Lost
        }
    }
}

/// Latencies and failures of the current sampling window (soak).
#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    server_errors: u64,
    lost: u64,
}

/// The mixed load: each worker owns its sessions (no two workers touch one) and records every
/// acknowledgement in the ledger.
struct Load {
    addr: String,
    ledger: Arc<Mutex<Ledger>>,
    window: Arc<Mutex<Window>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Pause between a worker's requests (soak pacing); zero: as fast as possible.
    pace: Duration,
    tag: String,
}

impl Load {
    fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn worker(self: Arc<Self>, id: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut conn: Option<Conn> = None;
        let mut owned: Vec<u64> = Vec::new();
        let mut registered = 0u64;
        let mut next_at = Instant::now();
        while !self.stopped() {
            if !self.pace.is_zero() {
                next_at += self.pace;
                let now = Instant::now();
                if next_at > now {
                    tokio::time::sleep(next_at - now).await;
                } else if now - next_at > self.pace * 10 {
                    next_at = now; // fell far behind (a pause): do not burst
                }
            }
            let started = Instant::now();
            let reply_class = self
                .step(&mut rng, &mut conn, &mut owned, id, &mut registered)
                .await;
            let elapsed = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            {
                let mut w = self.window.lock().expect("window");
                match reply_class {
                    Some(SKIPPED) => {}
                    Some(status) if status >= 500 => w.server_errors += 1,
                    Some(_) => w.latencies_us.push(elapsed),
                    None => w.lost += 1,
                }
            }
            if reply_class.is_none() && self.stopped() {
                break;
            }
            if reply_class.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// One request; its status, or `None` when it got no answer.
    async fn step(
        &self,
        rng: &mut StdRng,
        conn: &mut Option<Conn>,
        owned: &mut Vec<u64>,
        worker: usize,
        registered: &mut u64,
    ) -> Option<u16> {
        let roll: f64 = rng.random();
        let few_users = self.ledger.lock().expect("ledger").users.len() < 20;
        if few_users || roll < 0.03 {
            *registered += 1;
            let email = format!("{}-w{worker}-{registered}@torture.example.com", self.tag);
            return self.register(conn, email).await;
        }
        if owned.len() < 2 || roll < 0.12 {
            return self.login(rng, conn, owned).await;
        }
        let id = owned[rng.random_range(0..owned.len())];
        let session = self
            .ledger
            .lock()
            .expect("ledger")
            .sessions
            .get(&id)
            .cloned();
        let Some(Session::Live {
            current,
            access,
            access_at,
            ..
        }) = session
        else {
            owned.retain(|s| *s != id);
            return Some(SKIPPED);
        };
        if roll < 0.55 && access_at.elapsed() < ACCESS_MAX_AGE {
            self.me(conn, id, &access).await
        } else if roll < 0.93 {
            self.refresh(conn, id, &current, owned).await
        } else {
            self.logout(conn, id, &current, owned).await
        }
    }

    /// Sends one request; returns its reply with the ledger locked and the request counted.
    async fn exchange(
        &self,
        conn: &mut Option<Conn>,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (Reply, std::sync::MutexGuard<'_, Ledger>) {
        let reply = send(conn, &self.addr, method, path, bearer, body).await;
        let mut l = self.ledger.lock().expect("ledger");
        l.stats.requests += 1;
        (reply, l)
    }

    async fn register(&self, conn: &mut Option<Conn>, email: String) -> Option<u16> {
        let body = json!({"email": email, "password": PASSWORD});
        let (reply, mut l) = self
            .exchange(conn, Method::POST, "/auth/register", None, Some(&body))
            .await;
        match reply {
            Reply::Answered(201, _) => {
                l.stats.acknowledged += 1;
                l.users.push(email.clone());
                l.unchecked_users.push(email);
                Some(201)
            }
            Reply::Answered(status, body) => {
                unexpected(&mut l, status, "register", &body);
                Some(status)
            }
            Reply::Lost => {
                l.stats.in_doubt += 1;
                None
            }
        }
    }

    async fn login(
        &self,
        rng: &mut StdRng,
        conn: &mut Option<Conn>,
        owned: &mut Vec<u64>,
    ) -> Option<u16> {
        let user = {
            let mut l = self.ledger.lock().expect("ledger");
            let Some(user) = l.login_candidate(rng) else {
                return Some(SKIPPED);
            };
            // Counted before the request: an in-doubt login may have made a session.
            *l.user_sessions.entry(user.clone()).or_default() += 1;
            user
        };
        let body = json!({"email": user, "password": PASSWORD});
        let (reply, mut l) = self
            .exchange(conn, Method::POST, "/auth/login", None, Some(&body))
            .await;
        match reply {
            Reply::Answered(200, v) => {
                l.stats.acknowledged += 1;
                let id = l.next_session;
                l.next_session += 1;
                l.sessions.insert(
                    id,
                    Session::Live {
                        user,
                        current: text(&v, "refresh_token"),
                        previous: None,
                        access: text(&v, "access_token"),
                        access_at: Instant::now(),
                    },
                );
                owned.push(id);
                Some(200)
            }
            Reply::Answered(status, body) => {
                if let Some(n) = l.user_sessions.get_mut(&user) {
                    *n = n.saturating_sub(1);
                }
                unexpected(&mut l, status, "login", &body);
                Some(status)
            }
            Reply::Lost => {
                l.stats.in_doubt += 1;
                None
            }
        }
    }

    async fn me(&self, conn: &mut Option<Conn>, id: u64, access: &str) -> Option<u16> {
        let (reply, mut l) = self
            .exchange(conn, Method::GET, "/auth/me", Some(access), None)
            .await;
        match reply {
            Reply::Answered(200, _) => {
                l.stats.acknowledged += 1;
                Some(200)
            }
            Reply::Answered(status, body) => {
                if status == 401 {
                    l.violation(format!(
                        "session {id}: the access token of a live session was refused: {body}"
                    ));
                } else {
                    unexpected(&mut l, status, "me", &body);
                }
                Some(status)
            }
            Reply::Lost => {
                l.stats.in_doubt += 1;
                None
            }
        }
    }

    async fn refresh(
        &self,
        conn: &mut Option<Conn>,
        id: u64,
        current: &str,
        owned: &mut Vec<u64>,
    ) -> Option<u16> {
        let body = json!({"refresh_token": current});
        let (reply, mut l) = self
            .exchange(conn, Method::POST, "/auth/refresh", None, Some(&body))
            .await;
        match reply {
            Reply::Answered(200, v) => {
                l.stats.acknowledged += 1;
                if let Some(Session::Live {
                    current: c,
                    previous,
                    access,
                    access_at,
                    ..
                }) = l.sessions.get_mut(&id)
                {
                    *previous = Some(std::mem::replace(c, text(&v, "refresh_token")));
                    *access = text(&v, "access_token");
                    *access_at = Instant::now();
                }
                Some(200)
            }
            Reply::Answered(status, body) => {
                if status == 401 {
                    l.violation(format!(
                        "session {id}: the acknowledged current refresh token was refused: {body}"
                    ));
                } else {
                    unexpected(&mut l, status, "refresh", &body);
                }
                l.sessions.remove(&id);
                owned.retain(|s| *s != id);
                Some(status)
            }
            Reply::Lost => {
                // Rotated or not: unknown. The session is left out of every later check.
                l.stats.in_doubt += 1;
                l.sessions.remove(&id);
                owned.retain(|s| *s != id);
                None
            }
        }
    }

    async fn logout(
        &self,
        conn: &mut Option<Conn>,
        id: u64,
        current: &str,
        owned: &mut Vec<u64>,
    ) -> Option<u16> {
        let body = json!({"refresh_token": current});
        let (reply, mut l) = self
            .exchange(conn, Method::POST, "/auth/logout", None, Some(&body))
            .await;
        owned.retain(|s| *s != id);
        let user = match l.sessions.remove(&id) {
            Some(Session::Live { user, .. }) => Some(user),
            _ => None,
        };
        match reply {
            Reply::Answered(204, _) => {
                l.stats.acknowledged += 1;
                if let Some(n) = user.and_then(|u| l.user_sessions.get_mut(&u)) {
                    *n = n.saturating_sub(1);
                }
                l.sessions.insert(
                    id,
                    Session::Ended {
                        token: current.to_owned(),
                    },
                );
                Some(204)
            }
            Reply::Answered(status, body) => {
                unexpected(&mut l, status, "logout", &body);
                Some(status)
            }
            Reply::Lost => {
                l.stats.in_doubt += 1;
                None
            }
        }
    }
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn unexpected(l: &mut Ledger, status: u16, what: &str, body: &Value) {
    if status >= 500 {
        l.stats.server_errors += 1;
        l.violation(format!("{what}: {status} {body}"));
    } else {
        l.stats.unexpected += 1;
        l.violation(format!("{what}: unexpected {status} {body}"));
    }
}

/// Checks over HTTP (the server up, the load stopped) that every acknowledgement holds.
/// Sessions are moved on by the check itself (each live one is rotated once), and the ledger
/// follows. `logins`: how many not-yet-checked registrations to log in with.
async fn check_acknowledged(addr: &str, ledger: &Mutex<Ledger>, logins: usize) -> (usize, usize) {
    let mut conn = None;
    let sessions: Vec<(u64, Session)> = {
        let l = ledger.lock().expect("ledger");
        l.sessions.iter().map(|(k, v)| (*k, v.clone())).collect()
    };
    let mut checked = 0;
    for (id, session) in sessions {
        checked += 1;
        match session {
            Session::Live {
                user,
                current,
                previous,
                ..
            } => {
                let body = json!({"refresh_token": current});
                match send(
                    &mut conn,
                    addr,
                    Method::POST,
                    "/auth/refresh",
                    None,
                    Some(&body),
                )
                .await
                {
                    Reply::Answered(200, v) => {
                        let next = text(&v, "refresh_token");
                        if let Some(previous) = previous {
                            let body = json!({"refresh_token": previous});
                            let r = send(
                                &mut conn,
                                addr,
                                Method::POST,
                                "/auth/refresh",
                                None,
                                Some(&body),
                            )
                            .await;
                            if !matches!(r, Reply::Answered(401, _)) {
                                ledger.lock().expect("ledger").violation(format!(
                                    "session {id}: a token two rotations old was not refused ({})",
                                    describe(&r)
                                ));
                            }
                        }
                        ledger.lock().expect("ledger").sessions.insert(
                            id,
                            Session::Live {
                                user,
                                current: next,
                                previous: Some(current),
                                access: text(&v, "access_token"),
                                access_at: Instant::now(),
                            },
                        );
                    }
                    other => {
                        let mut l = ledger.lock().expect("ledger");
                        l.violation(format!(
                            "session {id}: the acknowledged current refresh token does not refresh after the restart ({})",
                            describe(&other)
                        ));
                        l.sessions.remove(&id);
                    }
                }
            }
            Session::Ended { token } => {
                let body = json!({"refresh_token": token});
                let r = send(
                    &mut conn,
                    addr,
                    Method::POST,
                    "/auth/refresh",
                    None,
                    Some(&body),
                )
                .await;
                if !matches!(r, Reply::Answered(401, _)) {
                    ledger.lock().expect("ledger").violation(format!(
                        "session {id}: an acknowledged logout did not hold ({})",
                        describe(&r)
                    ));
                }
            }
        }
    }
    // Registrations: the newest acknowledged ones log in (and log out again).
    let users: Vec<String> = {
        let mut l = ledger.lock().expect("ledger");
        let n = l.unchecked_users.len();
        let mut u = l.unchecked_users.split_off(n.saturating_sub(logins));
        l.unchecked_users.clear();
        u.retain(|e| l.user_sessions.get(e).copied().unwrap_or(0) < SESSIONS_PER_USER);
        u
    };
    for email in &users {
        let body = json!({"email": email, "password": PASSWORD});
        match send(
            &mut conn,
            addr,
            Method::POST,
            "/auth/login",
            None,
            Some(&body),
        )
        .await
        {
            Reply::Answered(200, v) => {
                let body = json!({"refresh_token": text(&v, "refresh_token")});
                let _ = send(
                    &mut conn,
                    addr,
                    Method::POST,
                    "/auth/logout",
                    None,
                    Some(&body),
                )
                .await;
            }
            other => ledger.lock().expect("ledger").violation(format!(
                "{email}: an acknowledged registration cannot log in ({})",
                describe(&other)
            )),
        }
    }
    (checked, users.len())
}

fn describe(r: &Reply) -> String {
    match r {
        Reply::Answered(status, body) => format!("{status} {body}"),
        Reply::Lost => "no answer".to_owned(),
    }
}

/// Runs `$body` with `$conn` bound to a new connection to the run's database, SQLite or
/// PostgreSQL, and closes it after: the checks are the same SQL on both, and sqlx's two
/// connection types share no trait an `async fn` could take. `Err` when it cannot connect.
macro_rules! on_backend {
    ($url:expr, $sqlite:expr, |$conn:ident| $body:block) => {{
        use sqlx::Connection as _;
        if $sqlite {
            match sqlx::SqliteConnection::connect($url).await {
                Ok(mut $conn) => {
                    let out = $body;
                    let _ = $conn.close().await;
                    Ok(out)
                }
                Err(e) => Err(format!("open the database: {e}")),
            }
        } else {
            match sqlx::PgConnection::connect($url).await {
                Ok(mut $conn) => {
                    let out = $body;
                    let _ = $conn.close().await;
                    Ok(out)
                }
                Err(e) => Err(format!("open the database: {e}")),
            }
        }
    }};
}

/// The database's own checks and the schema's invariants; a list of what failed.
async fn check_database(url: &str, sqlite: bool) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    let invariants: &[(&str, &'static str)] = &[
        (
            "a session's previous token and its rotation time are set together",
            "select count(*) from sessions where (previous_hash is null) <> (rotated_at is null)",
        ),
        (
            "a session has a previous token exactly when it has been rotated",
            "select count(*) from sessions where (generation = 0) <> (previous_hash is null)",
        ),
        (
            "a sealed successor belongs to a live, rotated session",
            "select count(*) from sessions where sealed_successor is not null \
             and (previous_hash is null or revoked_at is not null)",
        ),
        (
            "a rotation changes the token",
            "select count(*) from sessions where previous_hash = refresh_hash",
        ),
        (
            "every session's user exists",
            "select count(*) from sessions s left join users u on u.id = s.user_id where u.id is null",
        ),
        (
            "at most one active signing key per algorithm",
            "select count(*) from (select algorithm from signing_keys where state = 'active' \
             group by algorithm having count(*) > 1) t",
        ),
        (
            "a signing key is active",
            "select count(*) from (select 1 as none where not exists \
             (select 1 from signing_keys where state = 'active')) t",
        ),
    ];
    on_backend!(url, sqlite, |conn| {
        if sqlite {
            let rows = sqlx::query("pragma integrity_check")
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let answers: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
            if answers != ["ok"] {
                failures.push(format!("PRAGMA integrity_check: {answers:?}"));
            }
            let fk = sqlx::query("pragma foreign_key_check")
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !fk.is_empty() {
                failures.push(format!("PRAGMA foreign_key_check: {} rows", fk.len()));
            }
        }
        for (what, sql) in invariants {
            let n: i64 = sqlx::query_scalar(*sql)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            if n != 0 {
                failures.push(format!("{what}: {n} rows break it"));
            }
        }
    })?;
    Ok(failures)
}

/// `--tamper`: loses one acknowledged registration and one acknowledged session's liveness,
/// as a broken server would, so that a run shows its checks can fail.
async fn tamper(url: &str, sqlite: bool, ledger: &Mutex<Ledger>) {
    let (email, session) = {
        let l = ledger.lock().expect("ledger");
        let session = l.sessions.values().find_map(|s| match s {
            Session::Live { current, user, .. } if Some(user) != l.users.first() => {
                let id = uuid::Uuid::try_parse(current.split('.').next()?).ok()?;
                Some(id.hyphenated().to_string())
            }
            _ => None,
        });
        (l.users.first().cloned(), session)
    };
    let statements = [
        ("delete from users where email = $1", email),
        (
            "update sessions set revoked_at = created_at, revoked_reason = 'tampered' where id = $1",
            session,
        ),
    ];
    for (sql, value) in statements {
        let Some(value) = value else { continue };
        let done = on_backend!(url, sqlite, |c| {
            sqlx::query(sql).bind(&value).execute(&mut c).await.is_ok()
        })
        .unwrap_or(false);
        println!("tampered ({sql}): {done}");
    }
}

/// Every acknowledged registration is a row (all of them, by SQL).
async fn check_users_exist(url: &str, sqlite: bool, users: &[String]) -> Result<usize, String> {
    let emails: Vec<String> = on_backend!(url, sqlite, |conn| {
        sqlx::query_scalar("select email from users")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| e.to_string())?
    })?;
    let present: HashSet<String> = emails.into_iter().collect();
    Ok(users.iter().filter(|u| !present.contains(*u)).count())
}

fn start_load(
    server: &Server,
    ledger: &Arc<Mutex<Ledger>>,
    window: &Arc<Mutex<Window>>,
    workers: usize,
    pace: Duration,
    seed: u64,
    tag: &str,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load {
        addr: server.addr.clone(),
        ledger: ledger.clone(),
        window: window.clone(),
        stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        pace,
        tag: tag.to_owned(),
    });
    let tasks = (0..workers)
        .map(|w| {
            tokio::spawn(
                load.clone()
                    .worker(w, seed.wrapping_mul(31).wrapping_add(w as u64)),
            )
        })
        .collect();
    (load, tasks)
}

async fn stop_load(load: &Load, tasks: Vec<tokio::task::JoinHandle<()>>) {
    load.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
}

async fn backend_url(args: &Args) -> Option<String> {
    match &args.database_url {
        Some(base) => Some(fresh_schema(base).await),
        None => None,
    }
}

/// Drops the fresh PostgreSQL schema a run made (nothing for SQLite: its directory goes).
async fn drop_backend(args: &Args, server: &Server) {
    if let Some(base) = &args.database_url
        && server.sqlite_path().is_none()
    {
        keygate_bench::drop_schema(base, &server.database_url).await;
    }
}

async fn crash(args: &Args) -> bool {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let postgres = backend_url(args).await;
    let backend = if postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let mut server = Server::new(&args.server, postgres);
    let sqlite = server.sqlite_path().is_some();
    let check_url = match server.sqlite_path() {
        Some(p) => format!("sqlite://{}?mode=rw", p.display()),
        None => server.database_url.clone(),
    };
    println!(
        "crash test on {backend}: {} kills, {} workers, seed {}",
        args.kills, args.workers, args.seed
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let window = Arc::new(Mutex::new(Window::default()));
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    for k in 1..=args.kills {
        if let Err(e) = server.start().await {
            failures.push(format!("restart {k}: {e}"));
            break;
        }
        if k > 1 {
            let (sessions, logins) = check_acknowledged(&server.addr, &ledger, 20).await;
            println!(
                "  restart {k}: checked {sessions} sessions and {logins} registrations by HTTP"
            );
        }
        let tag = format!("c{}-k{k}", args.seed);
        let (load, tasks) = start_load(
            &server,
            &ledger,
            &window,
            args.workers,
            Duration::ZERO,
            rng.random(),
            &tag,
        );
        let run_for = Duration::from_millis(rng.random_range(1_500..5_000));
        tokio::time::sleep(run_for).await;
        server.kill9().await;
        stop_load(&load, tasks).await;
        let (acknowledged, in_doubt, users) = {
            let l = ledger.lock().expect("ledger");
            (l.stats.acknowledged, l.stats.in_doubt, l.users.clone())
        };
        println!(
            "kill {k} after {:.1} s of load: {acknowledged} acknowledged so far, {in_doubt} in doubt",
            run_for.as_secs_f64()
        );
        if args.tamper && k == 1 {
            tamper(&check_url, sqlite, &ledger).await;
        }
        match check_database(&check_url, sqlite).await {
            Ok(broken) => {
                failures.extend(broken.into_iter().map(|b| format!("after kill {k}: {b}")))
            }
            Err(e) => failures.push(format!(
                "after kill {k}: the database cannot be checked: {e}"
            )),
        }
        match check_users_exist(&check_url, sqlite, &users).await {
            Ok(0) => {}
            Ok(missing) => failures.push(format!(
                "after kill {k}: {missing} acknowledged registrations are missing"
            )),
            Err(e) => failures.push(format!("after kill {k}: users cannot be read: {e}")),
        }
    }
    // The last restart: every acknowledgement is checked once more, then a clean stop.
    match server.start().await {
        Ok(()) => {
            let (sessions, logins) = check_acknowledged(&server.addr, &ledger, 50).await;
            println!(
                "final restart: checked {sessions} sessions and {logins} registrations by HTTP"
            );
            match server.terminate().await {
                Some(status) if status.success() => {}
                other => failures.push(format!("the final graceful stop ended with {other:?}")),
            }
        }
        Err(e) => failures.push(format!("final restart: {e}")),
    }
    match check_database(&check_url, sqlite).await {
        Ok(broken) => failures.extend(broken.into_iter().map(|b| format!("at the end: {b}"))),
        Err(e) => failures.push(format!("at the end: the database cannot be checked: {e}")),
    }
    drop_backend(args, &server).await;
    let l = ledger.lock().expect("ledger");
    failures.extend(l.violations.iter().cloned());
    let errors = server.error_lines();
    // A clean run logs no error, and a run that acknowledged nothing checked nothing.
    failures.extend(
        errors
            .iter()
            .take(5)
            .map(|line| format!("an error log line: {line}")),
    );
    if errors.len() > 5 {
        failures.push(format!("… and {} more error log lines", errors.len() - 5));
    }
    if l.stats.acknowledged == 0 {
        failures.push("no request was acknowledged: the run checked nothing".to_owned());
    }
    println!(
        "{backend}: {} kills in {:.0} s; {} requests, {} acknowledged, {} in doubt, {} users, {} sessions tracked; {} error log lines; {} failures",
        args.kills,
        started.elapsed().as_secs_f64(),
        l.stats.requests,
        l.stats.acknowledged,
        l.stats.in_doubt,
        l.users.len(),
        l.sessions.len(),
        errors.len(),
        failures.len()
    );
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    failures.is_empty()
}

/// One row of the soak's CSV.
#[derive(Debug, Clone)]
struct Sample {
    minute: f64,
    rss_mib: f64,
    fds: u64,
    db_mib: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    server_errors: u64,
    lost: u64,
}

fn proc_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn proc_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

async fn database_mib(server: &Server) -> f64 {
    if let Some(path) = server.sqlite_path() {
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        return (size(path) + size(PathBuf::from(wal))) as f64 / 1_048_576.0;
    }
    use sqlx::Connection as _;
    let Ok(mut conn) = sqlx::PgConnection::connect(&server.database_url).await else {
        return 0.0;
    };
    let bytes: Option<i64> = sqlx::query_scalar(
        "select sum(pg_total_relation_size(c.oid))::bigint from pg_class c \
         join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = current_schema() and c.relkind in ('r', 'm')",
    )
    .fetch_one(&mut conn)
    .await
    .ok()
    .flatten();
    let _ = conn.close().await;
    bytes.unwrap_or(0) as f64 / 1_048_576.0
}

/// Least-squares slope of `y` over `x`, and the residuals' standard deviation.
fn trend(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if n < 3.0 {
        return (0.0, 0.0);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let var = points
        .iter()
        .map(|p| (p.1 - (my + slope * (p.0 - mx))).powi(2))
        .sum::<f64>()
        / (n - 2.0);
    (slope, var.sqrt())
}

/// The soak's pass criteria (docs/RELIABILITY.md); the failures.
fn judge(samples: &[Sample], warmup_minutes: f64) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let errors: u64 = samples.iter().map(|s| s.server_errors).sum();
    if errors > 0 {
        failures.push(format!("{errors} responses were 5xx"));
    }
    let lost: u64 = samples.iter().map(|s| s.lost).sum();
    if lost > 0 {
        failures.push(format!("{lost} requests got no answer"));
    }
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.minute >= warmup_minutes)
        .collect();
    if steady.len() < 6 {
        failures.push("too few samples after warm-up to judge".to_owned());
        return (failures, notes);
    }
    let span = steady.last().map_or(0.0, |s| s.minute) - steady[0].minute;
    // Flat: the fitted growth over the steady span stays within the larger of 3 residual
    // standard deviations and a floor (allocator and pool noise), as stated in RELIABILITY.md.
    for (name, floor, series) in [
        (
            "RSS (MiB)",
            4.0,
            steady
                .iter()
                .map(|s| (s.minute, s.rss_mib))
                .collect::<Vec<_>>(),
        ),
        (
            "open fds",
            4.0,
            steady.iter().map(|s| (s.minute, s.fds as f64)).collect(),
        ),
    ] {
        let (slope, noise) = trend(&series);
        let growth = slope * span;
        let allowed = (3.0 * noise).max(floor);
        notes.push(format!(
            "{name}: fitted growth {growth:+.2} over {span:.0} min after warm-up (allowed ±{allowed:.2}; residual sd {noise:.2})"
        ));
        if growth > allowed {
            failures.push(format!(
                "{name} grew {growth:.2} over {span:.0} min (allowed {allowed:.2})"
            ));
        }
    }
    // p99 stable: the last third's median p99 within twice the first third's (and 5 ms).
    let third = steady.len() / 3;
    let median = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let first = median(&mut steady[..third].iter().map(|s| s.p99_ms).collect());
    let last = median(
        &mut steady[steady.len() - third..]
            .iter()
            .map(|s| s.p99_ms)
            .collect(),
    );
    notes.push(format!(
        "p99: median of the first third after warm-up {first:.2} ms, of the last third {last:.2} ms"
    ));
    if last > (2.0 * first).max(first + 5.0) {
        failures.push(format!("p99 rose from {first:.2} ms to {last:.2} ms"));
    }
    (failures, notes)
}

fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut out =
        String::from("minute,rss_mib,open_fds,db_mib,requests,p50_ms,p99_ms,server_errors,lost\n");
    for s in samples {
        out.push_str(&format!(
            "{:.2},{:.2},{},{:.3},{},{:.3},{:.3},{},{}\n",
            s.minute,
            s.rss_mib,
            s.fds,
            s.db_mib,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.server_errors,
            s.lost
        ));
    }
    std::fs::write(path, out)
}

fn plot(path: &Path, title: &str, samples: &[Sample]) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((5, 1));
    let x_max = samples.last().map_or(1.0, |s| s.minute).max(1.0);
    type Series = (&'static str, fn(&Sample) -> f64, RGBColor);
    let series: [Series; 5] = [
        ("RSS (MiB)", |s| s.rss_mib, BLUE),
        ("open file descriptors", |s| s.fds as f64, MAGENTA),
        ("database size (MiB)", |s| s.db_mib, GREEN),
        ("p99 latency (ms) per 10 s", |s| s.p99_ms, RED),
        ("requests per 10 s", |s| s.requests as f64, BLACK),
    ];
    for (panel, (name, value, colour)) in panels.iter().zip(series.iter()) {
        let y_max = samples.iter().map(value).fold(0.0, f64::max) * 1.15 + 1e-9;
        let mut chart = ChartBuilder::on(panel)
            .caption(*name, ("sans-serif", 15))
            .margin(6)
            .margin_right(24)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (s.minute, value(s))),
                colour,
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

async fn soak(args: &Args) -> bool {
    let postgres = backend_url(args).await;
    let backend = if postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let mut server = Server::new(&args.server, postgres);
    if let Err(e) = server.start().await {
        eprintln!("FAILED: {e}");
        return false;
    }
    let Some(pid) = server.pid() else {
        eprintln!("FAILED: no server process");
        return false;
    };
    println!(
        "soak on {backend}: {} min, about {} requests/s from {} workers, sampled every {:?}",
        args.minutes, args.rate, args.workers, args.interval
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let window = Arc::new(Mutex::new(Window::default()));
    let pace = Duration::from_secs_f64(args.workers as f64 / args.rate.max(0.1));
    let (load, tasks) = start_load(
        &server,
        &ledger,
        &window,
        args.workers,
        pace,
        args.seed,
        &format!("s{}", args.seed),
    );
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples = Vec::new();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    while Instant::now() < end {
        tick.tick().await;
        let w = std::mem::take(&mut *window.lock().expect("window"));
        let mut lat = w.latencies_us;
        lat.sort_unstable();
        let s = Sample {
            minute: started.elapsed().as_secs_f64() / 60.0,
            rss_mib: proc_rss_mib(pid),
            fds: proc_fds(pid),
            db_mib: database_mib(&server).await,
            requests: lat.len() as u64 + w.server_errors,
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            server_errors: w.server_errors,
            lost: w.lost,
        };
        println!(
            "{:6.2} min  RSS {:6.1} MiB  fds {:3}  db {:7.2} MiB  {:5} req  p50 {:6.2} ms  p99 {:7.2} ms  5xx {}  lost {}",
            s.minute,
            s.rss_mib,
            s.fds,
            s.db_mib,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.server_errors,
            s.lost
        );
        samples.push(s);
    }
    stop_load(&load, tasks).await;
    let (sessions, logins) = check_acknowledged(&server.addr, &ledger, 200).await;
    let stopped = server.terminate().await;
    let db_mib = database_mib(&server).await;
    drop_backend(args, &server).await;
    let (mut failures, notes) = judge(&samples, args.warmup_minutes);
    if !matches!(stopped, Some(s) if s.success()) {
        failures.push(format!("the graceful stop ended with {stopped:?}"));
    }
    let l = ledger.lock().expect("ledger");
    failures.extend(l.violations.iter().cloned());
    let errors = server.error_lines();
    if !errors.is_empty() {
        failures.push(format!(
            "{} error log lines, the first: {}",
            errors.len(),
            errors[0]
        ));
    }
    let summary = format!(
        "{backend}: {:.0} min, {} requests, {} acknowledged, {} users, database {db_mib:.1} MiB, {} sessions and {logins} registrations checked at the end",
        args.minutes,
        l.stats.requests,
        l.stats.acknowledged,
        l.users.len(),
        sessions
    );
    println!("{summary}");
    for n in &notes {
        println!("  {n}");
    }
    if let Some(csv) = &args.csv
        && let Err(e) = write_csv(csv, &samples)
    {
        failures.push(format!("write {}: {e}", csv.display()));
    }
    if let Some(svg) = &args.svg {
        let title = format!(
            "Keygate soak on {backend}: {:.0} min, ~{:.0} req/s mixed load ({})",
            args.minutes,
            args.rate,
            time::OffsetDateTime::now_utc().date()
        );
        if let Err(e) = plot(svg, &title, &samples) {
            failures.push(format!("plot {}: {e}", svg.display()));
        }
    }
    for f in &failures {
        eprintln!("FAILED: {f}");
    }
    if failures.is_empty() {
        println!("PASS: no 5xx, nothing acknowledged lost, RSS and descriptors flat, p99 stable");
    }
    failures.is_empty()
}

#[tokio::main]
async fn main() {
    let args = args();
    let ok = if args.mode == "crash" {
        crash(&args).await
    } else {
        soak(&args).await
    };
    std::process::exit(if ok { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: f64, rss: f64, fds: u64, p99: f64) -> Sample {
        Sample {
            minute,
            rss_mib: rss,
            fds,
            db_mib: 1.0,
            requests: 100,
            p50_ms: 1.0,
            p99_ms: p99,
            server_errors: 0,
            lost: 0,
        }
    }

    #[test]
    fn a_flat_run_passes_and_a_leak_or_a_slowdown_fails() {
        let flat: Vec<Sample> = (0..60u32)
            .map(|i| sample(f64::from(i) / 2.0, 70.0 + f64::from(i % 3), 20, 5.0))
            .collect();
        assert!(judge(&flat, 5.0).0.is_empty(), "{:?}", judge(&flat, 5.0));
        let leak: Vec<Sample> = (0..60u32)
            .map(|i| sample(f64::from(i) / 2.0, 70.0 + f64::from(i), 20, 5.0))
            .collect();
        assert_eq!(judge(&leak, 5.0).0.len(), 1, "{:?}", judge(&leak, 5.0));
        let fds: Vec<Sample> = (0..60u32)
            .map(|i| sample(f64::from(i) / 2.0, 70.0, 20 + u64::from(i) / 4, 5.0))
            .collect();
        assert_eq!(judge(&fds, 5.0).0.len(), 1, "{:?}", judge(&fds, 5.0));
        let slow: Vec<Sample> = (0..60u32)
            .map(|i| sample(f64::from(i) / 2.0, 70.0, 20, 5.0 + f64::from(i)))
            .collect();
        assert_eq!(judge(&slow, 5.0).0.len(), 1, "{:?}", judge(&slow, 5.0));
        let mut errors = flat.clone();
        errors[30].server_errors = 1;
        assert_eq!(judge(&errors, 5.0).0, ["1 responses were 5xx"]);
    }
}
