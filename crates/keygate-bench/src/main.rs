//! Keygate's HTTP load benchmark (docs/PERFORMANCE.md).
//!
//! Starts a release `keygate serve` on a temporary SQLite file (and, when
//! `KEYGATE_TEST_DATABASE_URL` is set, again on a fresh PostgreSQL schema), creates users, then
//! measures fixed-duration, fixed-concurrency scenarios with a minimal HTTP/1.1 client and reports
//! requests/s, p50/p99 latency and errors, each as a ratio to `GET /healthz` measured in the
//! same run. The load client shares the machine's cores with the server, as documented.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use keygate_bench::{Body, Conn, cookie_value, fresh_schema, percentile};

mod argon;
mod flood;
use argon::{argon2_phc, argon2_pool_rate, argon2_verify_time};
use flood::{FLOOD_CLIENT, FLOOD_SECRET, flood};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone)]
struct Options {
    server: PathBuf,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    users: usize,
    out: PathBuf,
    /// Scenarios to run (`--only healthz,me,fresh,introspect,refresh,cookie,login,mixed,flood`);
    /// empty = all.
    only: Vec<String>,
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn options() -> Options {
    let mut o = Options {
        server: PathBuf::from("target/release/keygate"),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        connections: 32,
        users: 1000,
        out: PathBuf::from("bench-results.json"),
        only: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--server" => o.server = PathBuf::from(value),
            "--duration" => o.duration = Duration::from_secs_f64(value.parse().unwrap_or(10.0)),
            "--warmup" => o.warmup = Duration::from_secs_f64(value.parse().unwrap_or(2.0)),
            "--connections" => o.connections = value.parse().unwrap_or(32),
            "--users" => o.users = value.parse().unwrap_or(1000),
            "--out" => o.out = PathBuf::from(value),
            "--only" => o.only = value.split(',').map(str::to_owned).collect(),
            "--smoke" => {
                o.duration = Duration::from_millis(500);
                o.warmup = Duration::from_millis(100);
                o.users = 20;
                o.connections = 4;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; see docs/PERFORMANCE.md");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    // The server runs in a temporary directory: resolve its path first.
    o.server = std::fs::canonicalize(&o.server).unwrap_or(o.server);
    o
}

/// The OAuth client the benchmark's server is configured with (for introspection).
const CLIENT_ID: &str = "bench-rs";
const CLIENT_SECRET: &str = "benchmark resource server secret";

/// What each scenario's connection does for its n-th request.
#[derive(Clone)]
enum Work {
    Healthz,
    Me(Arc<Vec<String>>),
    Refresh(Arc<Vec<String>>),
    /// Browser sessions: each connection rotates its own session's refresh cookie, sending
    /// the CSRF header.
    CookieRefresh(Arc<Vec<CookieSession>>),
    Login(Arc<Vec<String>>),
    /// Logins from this client address (`X-Forwarded-For`, the server trusting the bench).
    LoginFrom(Arc<Vec<String>>, &'static str),
    /// `POST /oauth/introspect` of these access tokens, as a resource server would.
    Introspect(Arc<Vec<String>>),
}

/// A cookie-transport session: the refresh cookie's value and the CSRF token.
#[derive(Debug, Clone)]
struct CookieSession {
    refresh: String,
    csrf: String,
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `work` on `connections` connections for warmup + duration; measures the duration.
async fn run(
    addr: &str,
    work: Work,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, work, stop, measuring, counter) = (
            addr.to_owned(),
            work.clone(),
            stop.clone(),
            measuring.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut conn = match Conn::open(&addr).await {
                Ok(c) => c,
                Err(_) => return (latencies, 1),
            };
            // Refresh: each connection rotates its own session's token.
            let mut refresh = match &work {
                Work::Refresh(tokens) => Some(tokens[c % tokens.len()].clone()),
                _ => None,
            };
            let mut browser = match &work {
                Work::CookieRefresh(sessions) => Some(sessions[c % sessions.len()].clone()),
                _ => None,
            };
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = match &work {
                    Work::Healthz => conn.call(Method::GET, "/healthz", None, None).await,
                    Work::Me(tokens) => {
                        conn.call(
                            Method::GET,
                            "/auth/me",
                            Some(&tokens[n % tokens.len()]),
                            None,
                        )
                        .await
                    }
                    Work::Introspect(tokens) => {
                        use base64::Engine as _;
                        let basic = base64::engine::general_purpose::STANDARD
                            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
                        let headers = [("authorization", format!("Basic {basic}"))];
                        let form = format!("token={}", tokens[n % tokens.len()]);
                        let r = conn
                            .call_with(
                                Method::POST,
                                "/oauth/introspect",
                                &headers,
                                Body::Form(form),
                            )
                            .await;
                        // An inactive answer would be a wrong measurement: count it as an error.
                        match r {
                            Ok((200, _, bytes)) if !bytes.starts_with(b"{\"active\":true") => {
                                Ok((599, bytes))
                            }
                            other => other.map(|(status, _, bytes)| (status, bytes)),
                        }
                    }
                    Work::Login(emails) => {
                        let body = json!({"email": emails[n % emails.len()], "password": PASSWORD});
                        conn.call(Method::POST, "/auth/login", None, Some(&body))
                            .await
                    }
                    Work::LoginFrom(emails, ip) => {
                        let body = json!({"email": emails[n % emails.len()], "password": PASSWORD});
                        let headers = [("x-forwarded-for", (*ip).to_owned())];
                        conn.call_with(Method::POST, "/auth/login", &headers, Body::Json(&body))
                            .await
                            .map(|(status, _, bytes)| (status, bytes))
                    }
                    Work::Refresh(_) => {
                        let body = json!({"refresh_token": refresh.clone().unwrap_or_default()});
                        let r = conn
                            .call(Method::POST, "/auth/refresh", None, Some(&body))
                            .await;
                        if let Ok((200, bytes)) = &r
                            && let Ok(v) = serde_json::from_slice::<Value>(bytes)
                        {
                            refresh = v["refresh_token"].as_str().map(str::to_owned);
                        }
                        r
                    }
                    Work::CookieRefresh(_) => {
                        let session = browser.clone().unwrap_or(CookieSession {
                            refresh: String::new(),
                            csrf: String::new(),
                        });
                        let headers = [
                            (
                                "cookie",
                                format!(
                                    "keygate_refresh={}; keygate_csrf={}",
                                    session.refresh, session.csrf
                                ),
                            ),
                            ("x-csrf-token", session.csrf.clone()),
                        ];
                        let r = conn
                            .call_with(Method::POST, "/auth/refresh", &headers, Body::Empty)
                            .await;
                        if let Ok((200, cookies, _)) = &r
                            && let Some(next) = cookie_value(cookies, "keygate_refresh")
                        {
                            browser = Some(CookieSession {
                                refresh: next,
                                csrf: session.csrf,
                            });
                        }
                        r.map(|(status, _, bytes)| (status, bytes))
                    }
                };
                let ok = matches!(result, Ok((s, _)) if (200..300).contains(&s));

                if measuring.load(Ordering::Relaxed) {
                    latencies
                        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if !ok {
                        errors += 1;
                    }
                }
                if result.is_err() {
                    match Conn::open(&addr).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, err)) = t.await {
            all.extend(lat);
            errors += err;
        }
    }
    all.sort_unstable();
    Outcome {
        requests: all.len() as u64,
        errors,
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

struct Server {
    child: tokio::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(opts: &Options, database_url: Option<String>) -> Server {
        Server::start_with(opts, database_url, "", false).await
    }

    /// A server with `extra` configuration (before the clients' tables) and, with `limits`,
    /// rate limits on.
    async fn start_with(
        opts: &Options,
        database_url: Option<String>,
        extra: &str,
        limits: bool,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let db = database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("keygate.db").display()));
        let config = dir.path().join("keygate.toml");
        std::fs::write(
            &config,
            format!(
                "{extra}[[oauth.clients]]\nid = \"{CLIENT_ID}\"\nsecret = \"{CLIENT_SECRET}\"\n\
                 [[oauth.clients]]\nid = \"{FLOOD_CLIENT}\"\nsecret_hash = \"{}\"\n",
                argon2_phc(FLOOD_SECRET)
            ),
        )
        .expect("write the configuration");
        let child = keygate_bench::keygate_command(&opts.server)
            .current_dir(dir.path())
            .args(["serve", "--listen", &addr, "--config"])
            .arg(&config)
            .env("KEYGATE_DATABASE_URL", &db)
            // All load comes from one address: per-IP limits would measure the limiter
            // (except where a scenario is about them).
            .env(
                "KEYGATE_RATE_LIMITS__ENABLED",
                if limits { "true" } else { "false" },
            )
            .env("KEYGATE_LOG__LEVEL", "warn")
            .env("KEYGATE_LOG__FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start keygate: build it with `cargo build --release` first");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Conn::open(&addr).await
                && let Ok((200, _)) = c.call(Method::GET, "/healthz", None, None).await
            {
                break;
            }
            assert!(Instant::now() < deadline, "keygate did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn peak_rss_mb(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// Registers and logs in `n` users, 8 at a time; returns (emails, access tokens, refresh tokens).
async fn populate(addr: &str, n: usize) -> (Vec<String>, Vec<String>, Vec<String>) {
    let emails: Vec<String> = (0..n)
        .map(|i| format!("user{i}@bench.example.com"))
        .collect();
    let emails = Arc::new(emails);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (addr, emails, next) = (addr.to_owned(), emails.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await.expect("connect");
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= emails.len() {
                    break;
                }
                let body = json!({"email": emails[i], "password": PASSWORD});
                let (s, _) = conn
                    .call(Method::POST, "/auth/register", None, Some(&body))
                    .await
                    .expect("register");
                assert_eq!(s, 201, "register");
                let (s, bytes) = conn
                    .call(Method::POST, "/auth/login", None, Some(&body))
                    .await
                    .expect("login");
                assert_eq!(s, 200, "login");
                let v: Value = serde_json::from_slice(&bytes).expect("json");
                out.push((
                    i,
                    v["access_token"].as_str().unwrap_or_default().to_owned(),
                    v["refresh_token"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("populate"));
    }
    all.sort_by_key(|(i, _, _)| *i);
    let access = all.iter().map(|(_, a, _)| a.clone()).collect();
    let refresh = all.iter().map(|(_, _, r)| r.clone()).collect();
    ((*emails).clone(), access, refresh)
}

/// `n` cookie-transport sessions, one for each of the first `n` users.
async fn cookie_sessions(addr: &str, emails: &[String], n: usize) -> Vec<CookieSession> {
    let mut conn = Conn::open(addr).await.expect("connect");
    let mut out = Vec::with_capacity(n);
    for email in emails.iter().cycle().take(n) {
        let body = json!({"email": email, "password": PASSWORD});
        let (status, cookies, _) = conn
            .call_with(
                Method::POST,
                "/auth/login?transport=cookie",
                &[],
                Body::Json(&body),
            )
            .await
            .expect("cookie login");
        assert_eq!(status, 200, "cookie login");
        out.push(CookieSession {
            refresh: cookie_value(&cookies, "keygate_refresh").expect("refresh cookie"),
            csrf: cookie_value(&cookies, "keygate_csrf").expect("csrf cookie"),
        });
    }
    out
}

/// Access tokens the server has never seen, for live sessions: signed with the server's own key
/// read from its database (a benchmark may; nothing else should).
async fn mint_fresh_tokens(database_url: &str, access: &[String], count: usize) -> Vec<String> {
    let config =
        keygate::Config::from_toml(&format!("database_url = \"{database_url}\"")).expect("config");
    let store = keygate::store::Store::connect(&config)
        .await
        .expect("open the bench database");
    let key = store
        .active_key("EdDSA")
        .await
        .expect("read key")
        .expect("a key");
    let ring =
        Arc::new(keygate::token::KeyRing::from_stored(&config, &key, &[]).expect("key ring"));
    store.close().await;
    let grants: Vec<(String, String)> = access
        .iter()
        .filter_map(|t| {
            let payload = t.split('.').nth(1)?;
            let bytes = base64_decode(payload)?;
            let v: Value = serde_json::from_slice(&bytes).ok()?;
            Some((v["sub"].as_str()?.to_owned(), v["sid"].as_str()?.to_owned()))
        })
        .collect();
    let grants = Arc::new(grants);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = Vec::new();
    for t in 0..threads {
        let (ring, grants) = (ring.clone(), grants.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let now = time::OffsetDateTime::now_utc();
            for i in (t..count).step_by(threads) {
                let (sub, sid) = &grants[i % grants.len()];
                let grant = keygate::token::AccessGrant {
                    user_id: keygate::domain::UserId::parse(sub).expect("uuid"),
                    session_id: keygate::domain::SessionId::parse(sid).expect("uuid"),
                    roles: &[],
                    permissions: &[],
                    mfa: false,
                    email_verified: false,
                };
                out.push(ring.issue(&grant, now).expect("sign").0);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("mint"));
    }
    all
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn row(name: &str, o: &Outcome, base: f64) -> Value {
    println!(
        "{name:<34} {:>10.0} {:>7.3} {:>9.2} {:>9.2} {:>7}",
        o.rps,
        if base > 0.0 { o.rps / base } else { 0.0 },
        o.p50_ms,
        o.p99_ms,
        o.errors
    );
    json!({"scenario": name, "requests": o.requests, "rps": o.rps, "ratio_to_healthz": if base > 0.0 { o.rps / base } else { 0.0 },
           "p50_ms": o.p50_ms, "p99_ms": o.p99_ms, "errors": o.errors})
}

async fn suite(opts: &Options, backend: &str, database_url: Option<String>) -> Value {
    let server = Server::start(opts, database_url.clone()).await;
    let db_url = database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            server._dir.path().join("keygate.db").display()
        )
    });
    let addr = server.addr.clone();
    eprintln!("[{backend}] creating {} users…", opts.users);
    let (emails, access, refresh) = populate(&addr, opts.users).await;
    let (c, w, d) = (opts.connections, opts.warmup, opts.duration);
    println!("\n{backend}: {c} connections, {d:?} per scenario after {w:?} warm-up");
    println!(
        "{:<34} {:>10} {:>7} {:>9} {:>9} {:>7}",
        "scenario", "req/s", "ratio", "p50 ms", "p99 ms", "errors"
    );
    let mut rows = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("backend".into(), json!(backend));
    let health = run(&addr, Work::Healthz, c, w, d).await;
    rows.push(row("GET /healthz (baseline)", &health, health.rps));
    let mut me_rps = health.rps * 0.8;
    if opts.wants("me") {
        let me = run(&addr, Work::Me(Arc::new(access.clone())), c, w, d).await;
        rows.push(row("GET /auth/me, 1000 users' tokens", &me, health.rps));
        me_rps = me.rps;
    }
    if opts.wants("fresh") {
        let wanted = ((me_rps.max(health.rps * 0.5)) * (d + w).as_secs_f64() * 1.3) as usize;
        let fresh_tokens = mint_fresh_tokens(&db_url, &access, wanted.clamp(1000, 1_500_000)).await;
        let fresh = run(&addr, Work::Me(Arc::new(fresh_tokens)), c, w, d).await;
        rows.push(row("GET /auth/me, a fresh token each", &fresh, health.rps));
    }
    if opts.wants("introspect") {
        let out = run(&addr, Work::Introspect(Arc::new(access.clone())), c, w, d).await;
        rows.push(row("POST /oauth/introspect (client)", &out, health.rps));
    }
    let mut json_refresh_rps = None;
    if opts.wants("refresh") {
        let refresh_out = run(&addr, Work::Refresh(Arc::new(refresh)), c, w, d).await;
        rows.push(row(
            "POST /auth/refresh (rotating)",
            &refresh_out,
            health.rps,
        ));
        json_refresh_rps = Some(refresh_out.rps);
    }
    if opts.wants("cookie") {
        let sessions = cookie_sessions(&addr, &emails, c).await;
        let cookie_out = run(&addr, Work::CookieRefresh(Arc::new(sessions)), c, w, d).await;
        rows.push(row(
            "POST /auth/refresh (cookie + CSRF)",
            &cookie_out,
            health.rps,
        ));
        if let Some(json_rps) = json_refresh_rps.filter(|r| *r > 0.0) {
            let ratio = cookie_out.rps / json_rps;
            println!("{:<34} cookie refresh / JSON refresh: {ratio:.3}", "");
            report.insert("cookie_to_json_refresh".into(), json!(ratio));
        }
    }
    if opts.wants("login") {
        // The hashing limit, cores ÷ one verify, measured just before and just after the
        // logins (the server idle) and averaged, so that it and the logins see the machine in
        // the same state: a shared VM's speed drifts over minutes.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let before = argon2_verify_time();
        let logins = run(&addr, Work::Login(Arc::new(emails.clone())), c, w, d).await;
        let after = argon2_verify_time();
        let verify = (before + after) / 2;
        let limit = cores as f64 / verify.as_secs_f64();
        // What the pool could do with every core hashing and nothing else running.
        let pool = argon2_pool_rate(cores, 20);
        rows.push(row("POST /auth/login", &logins, health.rps));
        let percent = 100.0 * logins.rps / limit;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<34} one argon2id verify {:.1} ms (before {:.1}, after {:.1}) → limit {limit:.0}/s; \
             logins reach {percent:.0} %",
            "",
            ms(verify),
            ms(before),
            ms(after)
        );
        println!(
            "{:<34} {cores} threads verifying at once, nothing else running: {pool:.0}/s ({:.0} % of the limit)",
            "",
            100.0 * pool / limit
        );
        report.insert("argon2_verify_ms".into(), json!(ms(verify)));
        report.insert("argon2_verify_before_ms".into(), json!(ms(before)));
        report.insert("argon2_verify_after_ms".into(), json!(ms(after)));
        report.insert("hashing_limit_per_s".into(), json!(limit));
        report.insert("hashing_pool_alone_per_s".into(), json!(pool));
        report.insert("login_rps".into(), json!(logins.rps));
        report.insert("login_percent_of_limit".into(), json!(percent));
    }
    if opts.wants("mixed") {
        // Logins saturating the hash pool while /auth/me is served.
        let me_tokens = Arc::new(access.clone());
        let (login_mix, me_mix) = tokio::join!(
            run(&addr, Work::Login(Arc::new(emails.clone())), c / 2, w, d),
            run(&addr, Work::Me(me_tokens), c / 2, w, d),
        );
        rows.push(row("  mixed: POST /auth/login", &login_mix, health.rps));
        rows.push(row("  mixed: GET /auth/me", &me_mix, health.rps));
        report.insert("me_p99_during_logins_ms".into(), json!(me_mix.p99_ms));
    }
    let rss = server.peak_rss_mb();
    println!("peak RSS of the server: {:.1} MiB", rss.unwrap_or(0.0));
    report.insert("peak_rss_mib".into(), json!(rss));
    if opts.wants("flood") {
        // Logins from one address, alone and then while wrong client secrets flood in from
        // another, on a server with its rate limits on (as deployed) that trusts the bench
        // as its proxy; the ratio of the two is the measure.
        // A second server on the same database (the first, idle, keeps its directory).
        let flood_server = Server::start_with(
            opts,
            Some(db_url.clone()),
            "trusted_proxies = [\"127.0.0.1\"]\nrate_limits.login = \"1000000/1m\"\n",
            true,
        )
        .await;
        let addr = flood_server.addr.clone();
        let emails = Arc::new(emails);
        let alone = run(&addr, Work::LoginFrom(emails.clone(), "192.0.2.1"), c, w, d).await;
        let stop = Arc::new(AtomicBool::new(false));
        let flooding = tokio::spawn(flood(addr.clone(), "198.51.100.66", stop.clone()));
        let flooded = run(&addr, Work::LoginFrom(emails, "192.0.2.1"), c, w, d).await;
        stop.store(true, Ordering::Relaxed);
        let answers = flooding.await.unwrap_or_default();
        rows.push(row("POST /auth/login, alone", &alone, health.rps));
        rows.push(row("POST /auth/login, client flood", &flooded, health.rps));
        // Successful logins per second: a server whose hashing the flood starves answers
        // 503 fast, which must not count as logins served.
        let served = |o: &Outcome| {
            if o.requests == 0 {
                0.0
            } else {
                o.rps * (o.requests - o.errors.min(o.requests)) as f64 / o.requests as f64
            }
        };
        let ratio = if served(&alone) > 0.0 {
            served(&flooded) / served(&alone)
        } else {
            0.0
        };
        let sent: u64 = answers.values().sum();
        println!(
            "{:<34} successful logins under a flood of wrong client secrets / alone: {ratio:.3} \
             ({sent} flood requests, answers {answers:?})",
            ""
        );
        report.insert("login_under_client_flood_ratio".into(), json!(ratio));
        report.insert("client_flood_answers".into(), json!(answers));
    }
    report.insert("scenarios".into(), Value::Array(rows));
    Value::Object(report)
}

#[tokio::main]
async fn main() {
    let opts = options();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cores} cores; argon2id m=19456 KiB t=2 p=1 (the server's defaults); {} users",
        opts.users
    );
    let mut results = vec![suite(&opts, "sqlite", None).await];
    if let Ok(base) = std::env::var("KEYGATE_TEST_DATABASE_URL") {
        let url = fresh_schema(&base).await;
        results.push(suite(&opts, "postgres", Some(url)).await);
    }
    let report = json!({
        "date": time::OffsetDateTime::now_utc().to_string(),
        "cores": cores,
        "argon2": {"m_kib": 19456, "t": 2, "p": 1},
        "connections": opts.connections,
        "duration_s": opts.duration.as_secs_f64(),
        "warmup_s": opts.warmup.as_secs_f64(),
        "results": results,
    });
    std::fs::write(
        &opts.out,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .expect("write results");
    println!("results written to {}", opts.out.display());
    let failed = failed_scenarios(&report);
    if !failed.is_empty() {
        eprintln!("not a valid measurement: {}", failed.join("; "));
        std::process::exit(1);
    }
}

/// The scenarios that had an error or served no request at all: a benchmark of a server
/// that failed, or of nothing, measures nothing (and the CI smoke run must say so).
fn failed_scenarios(report: &Value) -> Vec<String> {
    let mut failed = Vec::new();
    for suite in report["results"].as_array().into_iter().flatten() {
        for row in suite["scenarios"].as_array().into_iter().flatten() {
            let (requests, errors) = (row["requests"].as_u64(), row["errors"].as_u64());
            if requests.unwrap_or(0) == 0 || errors.unwrap_or(1) > 0 {
                failed.push(format!(
                    "{} {}: {} requests, {} errors",
                    suite["backend"].as_str().unwrap_or("?"),
                    row["scenario"].as_str().unwrap_or("?"),
                    requests.unwrap_or(0),
                    errors.map_or("?".to_owned(), |e| e.to_string())
                ));
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_with_errors_or_no_requests_fails_the_run() {
        let report = |requests: u64, errors: u64| {
            json!({"results": [{"backend": "sqlite", "scenarios": [
                {"scenario": "GET /healthz (baseline)", "requests": 1000, "errors": 0},
                {"scenario": "POST /auth/login", "requests": requests, "errors": errors},
            ]}]})
        };
        assert!(failed_scenarios(&report(500, 0)).is_empty());
        assert_eq!(
            failed_scenarios(&report(500, 3)),
            ["sqlite POST /auth/login: 500 requests, 3 errors"]
        );
        assert_eq!(
            failed_scenarios(&report(0, 0)),
            ["sqlite POST /auth/login: 0 requests, 0 errors"]
        );
        assert_eq!(failed_scenarios(&json!({"results": []})).len(), 0);
    }
}
