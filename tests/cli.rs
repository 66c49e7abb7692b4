//! The real `keygate` binary: serve, migrate, config check, exit codes, the user, import,
//! keys and purge commands. Every test that touches the database runs twice
//! (`keygate_testkit::on_both_databases!`): on the binary's default SQLite file and on a fresh
//! PostgreSQL schema.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use keygate_testkit::{database_url_in, on_both_databases};

/// The longest one command may take before its test fails (a hung binary must not hang the
/// run).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keygate"))
}

fn keygate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    keygate_with_stdin(dir, args, env, None)
}

fn keygate_with_stdin(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = keygate_testkit::keygate_command(binary());
    cmd.current_dir(dir).args(args).envs(env.iter().copied());
    let out = keygate_testkit::output_within(&mut cmd, stdin, COMMAND_LIMIT);
    eprintln!(
        "$ keygate {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keygate.toml"), "access_ttl = \"5m\"\n").unwrap();
    let out = keygate(
        dir.path(),
        &["config", "check"],
        &[
            ("KEYGATE_SIGNING__ALGORITHM", "HS256"),
            (
                "KEYGATE_SIGNING__SECRET",
                "super-secret-value-that-is-long-enough",
            ),
            ("KEYGATE_AUDIENCE", "api,admin"),
            (
                "KEYGATE_DATABASE_URL",
                "postgres://kg:pw-in-userinfo@db/keygate?sslmode=require&password=pw-in-query&sslpassword=pw-of-key&sslkey=/keys/client.key",
            ),
            ("KEYGATE_REDIS_URL", "redis://:pw-of-redis@cache:6379"),
            (
                "KEYGATE_EMAIL__SMTP_URL",
                "smtp://keygate:pw-of-smtp@smtp.example.com:587",
            ),
            ("KEYGATE_EMAIL__FROM", "Keygate <no-reply@example.com>"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("access_ttl = \"5m\""), "file applied");
    assert!(
        stdout.contains("algorithm = \"HS256\""),
        "environment applied"
    );
    assert!(
        stdout.contains("audience = [\"api\", \"admin\"]"),
        "lists from the environment"
    );
    assert!(!stdout.contains("super-secret"), "secret redacted");
    assert!(stdout.contains("[redacted]"));
    for secret in [
        "pw-in-userinfo",
        "pw-in-query",
        "pw-of-key",
        "client.key",
        "pw-of-redis",
        "pw-of-smtp",
    ] {
        assert!(!stdout.contains(secret), "{secret} redacted: {stdout}");
    }
    assert!(
        stdout.contains("postgres://kg:[redacted]@db/keygate?sslmode=require&password=[redacted]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("smtp_url = \"smtp://keygate:[redacted]@smtp.example.com:587\""),
        "{stdout}"
    );
}

#[test]
fn an_invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(
        dir.path(),
        &["config", "check"],
        &[
            ("KEYGATE_SIGNING__ALGORITHM", "HS256"),
            ("KEYGATE_SIGNING__SECRET", "tooshort"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("signing.secret") && stderr.contains("32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("tooshort"));
    let out = keygate(
        dir.path(),
        &["config", "check"],
        &[("KEYGATE_ACCESS_TTL", "0")],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = keygate(
        dir.path(),
        &["config", "check"],
        &[("KEYGATE_NO_SUCH_KEY", "1")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let out = keygate(
        dir.path(),
        &["--config", "missing.toml", "config", "check"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        keygate(dir.path(), &["frobnicate"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        keygate(dir.path(), &["serve", "--bogus"], &[])
            .status
            .code(),
        Some(2)
    );
}

on_both_databases! {
    fn migrate_creates_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let out = keygate(dir.path(), &["migrate"], &[]);
        assert!(out.status.success());
        if keygate_testkit::database_url().is_none() {
            assert!(
                dir.path().join("keygate.db").exists(),
                "the default sqlite://keygate.db"
            );
        }
        let url = database_url_in(dir.path());
        assert_eq!(keygate_testkit::scalar(&url, "select count(*) from users"), 0);
        // Idempotent.
        assert!(keygate(dir.path(), &["migrate"], &[]).status.success());
    }
}

#[test]
fn serve_starts_on_the_embedded_default_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, log) = serve_with_log(dir.path(), &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert!(dir.path().join("keygate.db").exists());
    // No key encryption key: the start-up log says the keys are stored unencrypted.
    assert!(
        log.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("signing keys are stored unencrypted"))),
        "{log:?}"
    );
}

/// The real binary serving on a free port with `env` (and nothing else from `KEYGATE_*`);
/// returns it and the address it reports.
fn serve(dir: &Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let (child, addr, _) = serve_with_log(dir, env);
    (child, addr)
}

/// `serve`, also returning the log lines written before "keygate listening".
fn serve_with_log(
    dir: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String, Vec<serde_json::Value>) {
    let mut child = keygate_testkit::keygate_command(binary())
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYGATE_LOG__FORMAT", "json")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut before = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "keygate listening" {
                let address = v["address"].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((address, std::mem::take(&mut before)));
            } else {
                before.push(v);
            }
        }
    });
    let (addr, log) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server reports its address");
    (child, addr, log)
}

/// `n` connections from 127.0.0.1 that send half a request and never the rest.
async fn half_open(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may already have closed it: writing then fails, which is fine.
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        held.push(s);
    }
    held
}

/// `GET /healthz` from another address (127.0.0.2): its status line, within `within`.
async fn healthz_from_elsewhere(addr: &str, within: Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    tokio::time::timeout(within, attempt)
        .await
        .unwrap_or_else(|_| "no answer".to_owned())
}

/// A kept-alive connection from 127.0.0.1 that has had one `GET /healthz` answered 200.
async fn served_keep_alive(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s
}

/// Whether the server has closed `s` (end of stream or reset), waiting up to a second.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[test]
fn half_open_connections_from_one_address_do_not_shut_out_another() {
    let dir = tempfile::tempdir().unwrap();
    // Headers may take a minute: only the connection caps can protect the second client.
    let (mut child, addr) = serve(
        dir.path(),
        &[
            ("KEYGATE_HEADER_READ_TIMEOUT", "60s"),
            ("KEYGATE_MAX_CONNECTIONS_PER_IP", "50"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, extra_closed) = runtime.block_on(async {
        let _held = half_open(&addr, 400).await;
        let status = healthz_from_elsewhere(&addr, Duration::from_secs(10)).await;
        // One more from the flooding address is closed at once.
        let mut extra = half_open(&addr, 1).await.pop().unwrap();
        (status, closed_by_server(&mut extra).await)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(extra_closed, "the 401st connection of one address was kept");
}

#[test]
fn at_the_connection_cap_the_oldest_half_open_connection_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(
        dir.path(),
        &[
            ("KEYGATE_HEADER_READ_TIMEOUT", "60s"),
            ("KEYGATE_MAX_CONNECTIONS", "100"),
            ("KEYGATE_MAX_CONNECTIONS_PER_IP", "0"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, oldest_closed, newest_closed) = runtime.block_on(async {
        let mut held = half_open(&addr, 300).await;
        let status = healthz_from_elsewhere(&addr, Duration::from_secs(10)).await;
        let oldest_closed = closed_by_server(&mut held[0]).await;
        let newest_closed = closed_by_server(held.last_mut().unwrap()).await;
        (status, oldest_closed, newest_closed)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(oldest_closed, "the oldest half-open connection was kept");
    assert!(
        !newest_closed,
        "a newer one was closed instead of the oldest"
    );
}

/// Issue 27, point 6: connections that have served a request are shed too once idle, so a
/// few addresses holding kept-alive connections cannot keep a newcomer out.
#[test]
fn at_the_connection_cap_idle_keep_alive_connections_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(
        dir.path(),
        &[
            ("KEYGATE_HEADER_READ_TIMEOUT", "60s"),
            ("KEYGATE_MAX_CONNECTIONS", "20"),
            ("KEYGATE_MAX_CONNECTIONS_PER_IP", "0"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, oldest_closed, newest_closed) = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(served_keep_alive(&addr).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = healthz_from_elsewhere(&addr, Duration::from_secs(10)).await;
        let oldest_closed = closed_by_server(&mut held[0]).await;
        let newest_closed = closed_by_server(held.last_mut().unwrap()).await;
        (status, oldest_closed, newest_closed)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, "HTTP/1.1 200 OK", "the newcomer was kept out");
    assert!(oldest_closed, "the connection idle the longest was kept");
    assert!(
        !newest_closed,
        "a more recently active one was closed instead"
    );
}

/// Issue 27, point 6: an HTTP/2 connection with no request in flight is closed after
/// `idle_timeout`, with a GOAWAY (HTTP/2's pings alone would keep it open for ever).
#[test]
fn an_idle_http2_connection_is_closed_with_a_goaway_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path(), &[("KEYGATE_IDLE_TIMEOUT", "1s")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (frames, closed_after) = runtime.block_on(async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // The client preface and an empty SETTINGS frame (RFC 9113, prior knowledge).
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let opened = std::time::Instant::now();
        let mut stream = Vec::new();
        let mut frames = Vec::new();
        let mut acked = false;
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => stream.extend_from_slice(&buf[..n]),
                }
                // Whole frames: 3 bytes of length, type, flags, 4 bytes of stream id.
                while stream.len() >= 9 {
                    let len = usize::from(stream[0]) << 16
                        | usize::from(stream[1]) << 8
                        | usize::from(stream[2]);
                    if stream.len() < 9 + len {
                        break;
                    }
                    let (kind, flags) = (stream[3], stream[4]);
                    frames.push(kind);
                    let payload: Vec<u8> = stream[9..9 + len].to_vec();
                    stream.drain(..9 + len);
                    // A PING is answered, as any client does (the graceful close waits for it).
                    if kind == 6 && flags & 1 == 0 {
                        let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                        ack.extend_from_slice(&payload);
                        let _ = s.write_all(&ack).await;
                    }
                }
                if !acked && frames.contains(&4) {
                    acked = true;
                    let _ = s.write_all(b"\0\0\0\x04\x01\0\0\0\0").await;
                }
            }
        })
        .await;
        (frames, read.is_ok().then(|| opened.elapsed()))
    });
    let _ = child.kill();
    let _ = child.wait();
    let closed_after = closed_after.unwrap_or_else(|| {
        panic!("the idle HTTP/2 connection was still open after 10 s (frames: {frames:?})")
    });
    assert!(
        frames.contains(&7),
        "no GOAWAY before the close: {frames:?}"
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path(), &[("KEYGATE_HEADER_READ_TIMEOUT", "1s")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let closed_after = runtime.block_on(async {
        // Answered (the helper checks the 200), then nothing.
        let mut s = served_keep_alive(&addr).await;
        let mut buf = [0u8; 1024];
        // Then nothing: the kept-alive connection must not stay open for ever.
        let idle = std::time::Instant::now();
        let rest = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        rest.is_ok().then(|| idle.elapsed())
    });
    let _ = child.kill();
    let _ = child.wait();
    let closed_after = closed_after.expect("the idle connection was still open after 10 s");
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
}

/// Ended sessions, with their end moved two days back by SQL (the binary's clock is the
/// system's): `count` logins of `email`, each logged out, through a server in `dir`.
fn aged_ended_sessions(dir: &Path, email: &str, count: usize) -> String {
    let (mut child, addr) = serve(dir, &[("KEYGATE_RATE_LIMITS__ENABLED", "false")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let live = runtime.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://{addr}");
        let body = serde_json::json!({"email": email, "password": "correct horse battery staple"});
        let r = c
            .post(format!("{base}/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for _ in 0..=count {
            let r = c
                .post(format!("{base}/auth/login"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let t: serde_json::Value = r.json().await.unwrap();
            let access = t["access_token"].as_str().unwrap().to_owned();
            let r = c
                .post(format!("{base}/auth/logout"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
        // One more stays live.
        let r = c
            .post(format!("{base}/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let t: serde_json::Value = r.json().await.unwrap();
        t["session_id"].as_str().unwrap().to_owned()
    });
    let _ = child.kill();
    let _ = child.wait();
    let url = database_url_in(dir);
    // All but one of the ended sessions ended two days ago: past the purge's 24 hours.
    let aged = keygate_testkit::execute(
        &url,
        "update sessions set revoked_at = revoked_at - 172800000 where revoked_at is not null \
         and id <> (select max(id) from sessions where revoked_at is not null)",
    );
    assert_eq!(aged, count as u64);
    live
}

on_both_databases! {
    /// `keygate purge` deletes real expired rows (issue 27, point 10): ended sessions past
    /// their retention go, the recently ended and the live one stay.
    fn purge_deletes_expired_rows_and_reports_counts() {
        let dir = tempfile::tempdir().unwrap();
        let live = aged_ended_sessions(dir.path(), "purge@example.com", 3);
        let url = database_url_in(dir.path());
        assert_eq!(keygate_testkit::scalar(&url, "select count(*) from sessions"), 5);
        let out = keygate(dir.path(), &["purge"], &[]);
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("purged 3 ended sessions"), "{stdout}");
        assert!(stdout.contains("sessions: 5 -> 2"), "{stdout}");
        assert_eq!(
            keygate_testkit::scalar(
                &url,
                &format!("select count(*) from sessions where id = '{live}' and revoked_at is null")
            ),
            1
        );
        // Nothing more to purge.
        let out = keygate(dir.path(), &["purge"], &[]);
        assert!(stdout_of(&out).contains("purged 0 ended sessions"), "{}", stdout_of(&out));
    }
}

on_both_databases! {
    /// A running server purges by itself (at start, then every ten minutes): the periodic
    /// task is observed deleting real expired rows (issue 27, point 10).
    fn a_running_server_purges_expired_rows_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        aged_ended_sessions(dir.path(), "periodic@example.com", 2);
        let url = database_url_in(dir.path());
        let aged = "select count(*) from sessions where revoked_at is not null \
                    and revoked_at < (select max(revoked_at) from sessions) - 86400000";
        assert_eq!(keygate_testkit::scalar(&url, aged), 2);
        let (mut child, _) = serve(dir.path(), &[]);
        let mut left = 2;
        for _ in 0..200 {
            left = keygate_testkit::scalar(&url, aged);
            if left == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(left, 0, "the server's purge did not delete the expired sessions within 10 s");
        assert_eq!(keygate_testkit::scalar(&url, "select count(*) from sessions"), 2);
    }
}

/// The keys `keygate keys list` prints: `(kid, state)` of each.
fn listed_keys(dir: &Path) -> Vec<(String, String)> {
    let out = keygate(dir, &["keys", "list"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let kid = words.next()?;
            let _algorithm = words.next()?;
            Some((kid.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

on_both_databases! {
    /// `keygate keys rotate` and `keys revoke` through the binary (issue 27, point 10): a
    /// rotation publishes a next key, a second one says it is under way, revoking the next
    /// key and then the active one leaves a new active key, and a server started afterwards
    /// publishes only keys in use.
    fn keys_rotate_and_revoke_through_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keys = listed_keys(d);
        assert_eq!(keys.len(), 1, "{keys:?}");
        let (first, state) = keys[0].clone();
        assert_eq!(state, "active");

        let out = keygate(d, &["keys", "rotate"], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with("rotation started: key "), "{}", stdout(&out));
        let next = listed_keys(d)
            .into_iter()
            .find(|(_, s)| s == "next")
            .expect("a next key")
            .0;
        assert!(stdout(&out).contains(&next));
        let out = keygate(d, &["keys", "rotate"], &[]);
        assert!(
            stdout(&out).starts_with(&format!("a rotation is already under way: key {next}")),
            "{}",
            stdout(&out)
        );

        let out = keygate(d, &["keys", "revoke", &next], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).starts_with(&format!("key {next} revoked (it was next)")));
        let out = keygate(d, &["keys", "revoke", &first], &[]);
        assert!(stdout(&out).starts_with(&format!("key {first} revoked (it was active)")));
        let keys = listed_keys(d);
        let state_of = |kid: &str| keys.iter().find(|(k, _)| k == kid).map(|(_, s)| s.clone());
        assert_eq!(state_of(&first).as_deref(), Some("revoked"), "{keys:?}");
        assert_eq!(state_of(&next).as_deref(), Some("revoked"), "{keys:?}");
        let active: Vec<_> = keys.iter().filter(|(_, s)| s == "active").collect();
        assert_eq!(active.len(), 1, "a new key signs: {keys:?}");
        let active = active[0].0.clone();

        // Revoked is final, and an unknown kid is a usage error.
        let out = keygate(d, &["keys", "revoke", &first], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("no signing key in use"), "{}", stderr(&out));

        let (mut child, addr) = serve(d, &[]);
        let jwks: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
            reqwest::get(format!("http://{addr}/.well-known/jwks.json"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        let _ = child.kill();
        let _ = child.wait();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert_eq!(kids, vec![active.as_str()], "{jwks}");
    }
}

fn stdout_of(out: &Output) -> String {
    stdout(out)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

on_both_databases! {
    fn the_user_commands_administer_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pw = "correct horse battery staple\n";
        let out = keygate_with_stdin(
            d,
            &[
                "user",
                "add",
                "Root@Example.com",
                "--role",
                "admin",
                "--name",
                "Root",
                "--password-stdin",
            ],
            &[],
            Some(pw),
        );
        assert!(out.status.success());
        assert!(stdout(&out).contains("created user") && stdout(&out).contains("root@example.com"));
        let out = keygate_with_stdin(
            d,
            &[
                "user",
                "add",
                "ada@example.com",
                "--username",
                "ada",
                "--password-stdin",
            ],
            &[],
            Some(pw),
        );
        assert!(out.status.success());

        let out = keygate(d, &["user", "list"], &[]);
        assert!(out.status.success());
        let list = stdout(&out);
        assert!(
            list.contains("root@example.com")
                && list.contains("admin")
                && list.contains("ada@example.com"),
            "{list}"
        );

        let out = keygate(d, &["user", "show", "ada"], &[]);
        assert!(stdout(&out).contains("email: ada@example.com"));
        assert!(!stdout(&out).contains("argon2"), "never the hash");

        let out = keygate(
            d,
            &["user", "set-roles", "ada@example.com", "editor", "support"],
            &[],
        );
        assert!(out.status.success());
        assert!(stdout(&out).contains("editor,support"));
        let out = keygate(d, &["user", "disable", "ada@example.com"], &[]);
        assert!(out.status.success() && stdout(&out).contains("disabled"));
        assert!(stdout(&keygate(d, &["user", "show", "ada"], &[])).contains("active: false"));
        assert!(keygate(d, &["user", "enable", "ada"], &[]).status.success());

        let out = keygate_with_stdin(
            d,
            &["user", "reset-password", "ada", "--password-stdin"],
            &[],
            Some("a completely new passphrase\n"),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = keygate(d, &["sessions", "list", "ada"], &[]);
        assert!(out.status.success());
        let out = keygate(
            d,
            &["sessions", "revoke", "01900000-0000-7000-8000-000000000000"],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("no live session"));

        let out = keygate(d, &["keys", "list"], &[]);
        assert!(out.status.success());
        assert!(
            stdout(&out).contains("EdDSA") && stdout(&out).contains("active"),
            "{}",
            stdout(&out)
        );

        let out = keygate(d, &["audit", "--user", "ada", "--limit", "10"], &[]);
        assert!(out.status.success());
        let audit = stdout(&out);
        for event in [
            "user_created",
            "user_updated",
            "user_disabled",
            "password_changed",
        ] {
            assert!(audit.contains(event), "{event} in {audit}");
        }
        let out = keygate(d, &["audit", "--event", "user_disabled"], &[]);
        assert_eq!(stdout(&out).lines().count(), 2, "a header and one event");

        // Verification and two-factor, by an operator.
        assert!(stdout(&keygate(d, &["user", "show", "ada"], &[])).contains("email_verified: false"));
        let out = keygate(d, &["user", "verify-email", "ada"], &[]);
        assert!(
            out.status.success() && stdout(&out).contains("marked verified"),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&keygate(d, &["user", "show", "ada"], &[])).contains("email_verified: true"));
        let out = keygate(d, &["user", "reset-mfa", "ada"], &[]);
        assert!(out.status.success() && stdout(&out).contains("nothing changed"));
        // Two-factor turned on in the database the commands use (as the API would), then off.
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let url = database_url_in(d);
            let config = keygate::Config::from_toml(&format!("database_url = \"{url}\"")).unwrap();
            let store = keygate::store::Store::connect(&config).await.unwrap();
            let ada = store.find_user_by_login("ada").await.unwrap().unwrap();
            let now = time::OffsetDateTime::now_utc();
            assert!(
                store
                    .start_totp(ada.id, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", now)
                    .await
                    .unwrap()
            );
            let keep = keygate::domain::SessionId::new();
            assert!(store.confirm_totp(ada.id, 1, &[], keep, now).await.unwrap());
            store.close().await;
        });
        assert!(stdout(&keygate(d, &["user", "show", "ada"], &[])).contains("mfa_enabled: true"));
        let out = keygate(d, &["user", "reset-mfa", "ada@example.com"], &[]);
        assert!(
            out.status.success() && stdout(&out).contains("turned off"),
            "{}",
            stdout(&out)
        );
        assert!(stdout(&keygate(d, &["user", "show", "ada"], &[])).contains("mfa_enabled: false"));
        let out = keygate(d, &["audit", "--event", "mfa_disabled"], &[]);
        assert_eq!(
            stdout(&out).lines().count(),
            3,
            "a header and two events: {}",
            stdout(&out)
        );

        let out = keygate(d, &["user", "delete", "ada"], &[]);
        assert!(out.status.success());
        let out = keygate(d, &["user", "show", "ada"], &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("no user with id, email or username `ada`"),
            "{}",
            stderr(&out)
        );
    }
}

on_both_databases! {
    fn user_add_refuses_bad_input_with_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = keygate_with_stdin(
            d,
            &["user", "add", "ada@example.com", "--password-stdin"],
            &[],
            Some("password123\n"),
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("password"), "{}", stderr(&out));
        let out = keygate_with_stdin(
            d,
            &["user", "add", "not-an-email", "--password-stdin"],
            &[],
            Some("correct horse battery staple\n"),
        );
        assert_eq!(out.status.code(), Some(2));
        // No terminal and no --password-stdin: it will not take the password from anywhere else.
        let out = keygate(d, &["user", "add", "ada@example.com"], &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--password-stdin"));
        let out = keygate(
            d,
            &["user", "add", "ada@example.com", "--password", "x"],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "there is no --password flag");
    }
}

const IMPORT: &str = r#"{"email": "py@example.com", "password_hash": "$2b$10$C347REkkhmmXABq/iwrXS.lUSq3xzh6oz2hG0xVKqUwFYhcS/wQge", "name": "From Python"}
{"email": "passlib@example.com", "password_hash": "$2a$10$8GYDYpSC/R4tZnXr9xV/reFIsfPyJedtNPyypr5lBUxwtqM2R3ceG", "roles": ["editor"]}

{"email": "php@example.com", "username": "php", "password_hash": "$2y$10$tYtFqhI./E6VOtmbX91teua9eANQsSrow2gMqgRYueE3pnToGfrGS"}
{"email": "cffi@example.com", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$jtf6Y8eWtoeV2mtpprCwQw$AF+ZR3ebspbBuJMDKBoZO1Ww1HL/cWDAb3aa01CFr/0", "is_active": true}
{"email": "broken@example.com", "password_hash": "$1$md5$notsupported"}
this is not json
{"email": "not-an-email", "password_hash": "$2b$10$C347REkkhmmXABq/iwrXS.lUSq3xzh6oz2hG0xVKqUwFYhcS/wQge"}
{"email": "dup@example.com", "username": "php", "password_hash": "$2b$10$C347REkkhmmXABq/iwrXS.lUSq3xzh6oz2hG0xVKqUwFYhcS/wQge"}
{"email": "bomb@example.com", "password_hash": "$argon2id$v=19$m=4194304,t=3,p=4$jtf6Y8eWtoeV2mtpprCwQw$AF+ZR3ebspbBuJMDKBoZO1Ww1HL/cWDAb3aa01CFr/0"}
{"email": "slow@example.com", "password_hash": "$2b$20$C347REkkhmmXABq/iwrXS.lUSq3xzh6oz2hG0xVKqUwFYhcS/wQge"}
"#;

on_both_databases! {
    fn import_takes_foreign_hashes_reports_bad_lines_and_upgrades_hashes_at_login() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("users.jsonl"), IMPORT).unwrap();
        let out = keygate(d, &["import", "users.jsonl"], &[]);
        assert_eq!(out.status.code(), Some(1), "some lines failed");
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(
            o.contains("imported 4 users; 0 already existed; 6 lines failed"),
            "{o}"
        );
        for line in [6, 7, 8, 9, 10, 11] {
            assert!(
                e.contains(&format!("line {line}: ")),
                "line {line} reported: {e}"
            );
        }
        assert!(e.contains("line 6: password_hash is not a bcrypt"), "{e}");
        assert!(
            e.contains("line 9: username already belongs to another user"),
            "{e}"
        );
        // Extreme costs would make every login attempt for the row a memory or CPU bomb.
        assert!(
            e.contains("line 10: password_hash has argon2 memory cost m=4194304 KiB; at most 262144 KiB (256 MiB) is accepted"),
            "{e}"
        );
        assert!(
            e.contains("line 11: password_hash has bcrypt cost 20; at most 14 is accepted"),
            "{e}"
        );
        assert!(!e.contains("$2b$10$C347"), "hashes are not echoed");
        assert!(!e.contains("jtf6Y8eW"), "hashes are not echoed");
        // Re-running duplicates nothing.
        let out = keygate(d, &["import", "users.jsonl"], &[]);
        assert!(
            stdout(&out).contains("imported 0 users; 4 already existed"),
            "{}",
            stdout(&out)
        );

        // Log in as each imported user through a real server; hashes become argon2id.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let url = database_url_in(d);
            let config = keygate::Config::from_toml(&format!(
                "listen = \"127.0.0.1:0\"\ndatabase_url = \"{url}\""
            ))
            .unwrap();
            let app = keygate::App::build(config).await.unwrap();
            let base = format!("http://{}", app.local_addr());
            let state = app.state();
            tokio::spawn(app.run_until(std::future::pending()));
            let client = reqwest::Client::new();
            for (email, password) in [
                ("py@example.com", "imported passphrase one"),
                ("passlib@example.com", "imported passphrase two"),
                ("php", "imported passphrase three"),
                ("cffi@example.com", "imported passphrase four"),
            ] {
                let user = state.auth.find_user(email).await.unwrap();
                let before = state
                    .auth
                    .store()
                    .password_hash(user.id)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(!before.phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
                let wrong = client
                    .post(format!("{base}/auth/login"))
                    .json(&serde_json::json!({"email": email, "password": "wrong password"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(wrong.status(), 401);
                let r = client
                    .post(format!("{base}/auth/login"))
                    .json(&serde_json::json!({"email": email, "password": password}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{email}");
                let after = state
                    .auth
                    .store()
                    .password_hash(user.id)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(
                    after.phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                    "{email} upgraded"
                );
                let again = client
                    .post(format!("{base}/auth/login"))
                    .json(&serde_json::json!({"email": email, "password": password}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(again.status(), 200, "{email} with the upgraded hash");
            }
            let editor = state.auth.find_user("passlib@example.com").await.unwrap();
            assert_eq!(editor.roles, vec!["editor"]);
        });
    }
}

on_both_databases! {
    /// Issue 14, point 5 through the binary: a KEK from the environment or a file, `keys list`
    /// saying which keys are encrypted, `keys rekey`, and what `config check` and a wrong KEK say.
    fn keys_are_encrypted_with_a_kek_from_the_environment_or_a_file_and_rekeyed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (one, two) = (
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        );

        // No KEK: the key is generated and stored plain, and config check says so.
        let out = keygate(d, &["keys", "list"], &[]);
        assert!(out.status.success());
        let line = stdout(&out).lines().nth(1).unwrap_or_default().to_owned();
        assert!(line.contains("active") && line.contains(" no "), "{line}");
        let out = keygate(d, &["config", "check"], &[]);
        assert!(
            stdout(&out).contains("# note: signing keys are stored unencrypted"),
            "{}",
            stdout(&out)
        );
        let out = keygate(d, &["keys", "rekey"], &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("set signing.key_encryption_key"));

        // A KEK from the environment: sealed at start; config check redacts it and says nothing.
        let env_one = [("KEYGATE_SIGNING__KEY_ENCRYPTION_KEY", one)];
        let out = keygate(d, &["keys", "list"], &env_one);
        let line = stdout(&out).lines().nth(1).unwrap_or_default().to_owned();
        assert!(line.contains(" yes "), "{line}");
        let out = keygate(d, &["config", "check"], &env_one);
        assert!(!stdout(&out).contains(one) && !stdout(&out).contains("# note"));
        assert!(stdout(&out).contains("key_encryption_key = \"[redacted]\""));

        // A new KEK from a file, the old one as previous: rekey moves the key to it.
        std::fs::write(d.join("kek"), format!("{two}\n")).unwrap();
        let kek_file = d.join("kek").display().to_string();
        let env_two = [
            (
                "KEYGATE_SIGNING__KEY_ENCRYPTION_KEY_FILE",
                kek_file.as_str(),
            ),
            ("KEYGATE_SIGNING__PREVIOUS_KEY_ENCRYPTION_KEYS", one),
        ];
        let out = keygate(d, &["keys", "rekey"], &env_two);
        assert!(out.status.success());
        assert!(
            stdout(&out).contains(
                "now (already before): signing keys 1 (0), two-factor seeds 0 (0), server secrets 1 (0)"
            ),
            "{}",
            stdout(&out)
        );

        // The old KEK alone no longer opens it: one sentence, exit 1.
        let out = keygate(d, &["keys", "list"], &env_one);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("is not the key it was encrypted with"),
            "{err}"
        );
        assert!(!err.contains(one) && !err.contains(two));
        let out = keygate(
            d,
            &["keys", "list"],
            &[(
                "KEYGATE_SIGNING__KEY_ENCRYPTION_KEY_FILE",
                kek_file.as_str(),
            )],
        );
        assert!(out.status.success());

        // A KEK that is not 32 bytes of base64 is a configuration error naming the key.
        let out = keygate(
            d,
            &["config", "check"],
            &[("KEYGATE_SIGNING__KEY_ENCRYPTION_KEY", "too short")],
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("signing.key_encryption_key"));
    }
}
