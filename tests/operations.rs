//! Operating the real binary: `/metrics` moving with the traffic sent, graceful shutdown on
//! SIGTERM under load, and the log format on a terminal.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// The real binary serving on a free port of 127.0.0.1 in `dir` with `env` (and nothing else
/// from `KEYGATE_*`), JSON logs collected as they come.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_keygate"));
        let mut child = keygate_testkit::keygate_command(binary)
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("KEYGATE_LOG__FORMAT", "json")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["message"] == "keygate listening" {
                    let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(v);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server reports its address");
        Server {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logged(&self, message: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l["message"] == message)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of the Prometheus text format: name and labels.
type Series = (String, BTreeMap<String, String>);

/// Parses the text format (`name{k="v",…} value` lines; comments skipped).
fn parse_metrics(text: &str) -> Vec<(Series, f64)> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here never contain `,` or `"` (fixed codes and route templates).
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').expect("label=value");
            map.insert(k.to_owned(), v.trim_matches('"').to_owned());
        }
        samples.push(((name.to_owned(), map), value));
    }
    samples
}

/// The sum of the samples named `name` whose labels include every one of `labels`.
fn metric(samples: &[(Series, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(c: &reqwest::Client, server: &Server) -> Vec<(Series, f64)> {
    let r = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse_metrics(&r.text().await.unwrap())
}

async fn post(c: &reqwest::Client, server: &Server, path: &str, body: Value) -> reqwest::Response {
    c.post(server.url(path)).json(&body).send().await.unwrap()
}

keygate_testkit::on_both_databases! {
    fn metrics_move_with_the_traffic_sent_and_are_closed_to_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let token = "a-metrics-token-of-some-length";
        let server = Server::start(
            dir.path(),
            &[
                ("KEYGATE_METRICS__TOKEN", token),
                ("KEYGATE_TRUSTED_PROXIES", "127.0.0.1"),
                ("KEYGATE_METRICS__ALLOWED_NETWORKS", "10.0.0.0/8"),
                ("KEYGATE_RATE_LIMITS__REGISTER", "2/1m"),
                ("KEYGATE_REFRESH_REUSE_GRACE", "0"),
            ],
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let c = reqwest::Client::new();
            let before = scrape(&c, &server).await;
            assert_eq!(
                metric(
                    &before,
                    "keygate_build_info",
                    &[("version", env!("CARGO_PKG_VERSION"))]
                ),
                1.0
            );
            assert_eq!(metric(&before, "keygate_logins_total", &[]), 0.0);

            // Traffic: a registration, two logins, a wrong password, a refresh, a reuse of the
            // rotated token, one session ended by id, a registration over its rate limit.
            let r = post(
                &c,
                &server,
                "/auth/register",
                json!({"email": "ada@example.com", "password": PASSWORD}),
            )
            .await;
            assert_eq!(r.status(), 201);
            let mut sessions = Vec::new();
            for _ in 0..2 {
                let r = post(
                    &c,
                    &server,
                    "/auth/login",
                    json!({"email": "ada@example.com", "password": PASSWORD}),
                )
                .await;
                assert_eq!(r.status(), 200);
                sessions.push(r.json::<Value>().await.unwrap());
            }
            let r = post(
                &c,
                &server,
                "/auth/login",
                json!({"email": "ada@example.com", "password": "not the password"}),
            )
            .await;
            assert_eq!(r.status(), 401);
            let first = sessions[0]["refresh_token"].as_str().unwrap();
            let r = post(
                &c,
                &server,
                "/auth/refresh",
                json!({"refresh_token": first}),
            )
            .await;
            assert_eq!(r.status(), 200);
            let r = post(
                &c,
                &server,
                "/auth/refresh",
                json!({"refresh_token": first}),
            )
            .await;
            assert_eq!(r.status(), 401, "reuse of a rotated token");
            let access = sessions[1]["access_token"].as_str().unwrap();
            let sessions_list: Value = c
                .get(server.url("/auth/sessions"))
                .bearer_auth(access)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let session_id = sessions_list["sessions"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let r = c
                .delete(server.url(&format!("/auth/sessions/{session_id}")))
                .bearer_auth(access)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            let r = post(
                &c,
                &server,
                "/auth/register",
                json!({"email": "bob@example.com", "password": PASSWORD}),
            )
            .await;
            assert_eq!(r.status(), 201);
            let r = post(
                &c,
                &server,
                "/auth/register",
                json!({"email": "cy@example.com", "password": PASSWORD}),
            )
            .await;
            assert_eq!(r.status(), 429);

            let r = c.get(server.url("/no/such/page")).send().await.unwrap();
            assert_eq!(r.status(), 404);

            let after = scrape(&c, &server).await;
            let m = |name: &str, labels: &[(&str, &str)]| metric(&after, name, labels);
            assert_eq!(m("keygate_logins_total", &[("outcome", "success")]), 2.0);
            assert_eq!(
                m(
                    "keygate_logins_total",
                    &[("outcome", "invalid_credentials")]
                ),
                1.0
            );
            assert_eq!(m("keygate_refreshes_total", &[("outcome", "success")]), 1.0);
            assert_eq!(
                m("keygate_refreshes_total", &[("outcome", "reuse_detected")]),
                1.0
            );
            let login = [("method", "POST"), ("route", "/auth/login")];
            assert_eq!(
                m(
                    "keygate_http_requests_total",
                    &[login[0], login[1], ("status", "200")]
                ),
                2.0
            );
            assert_eq!(
                m(
                    "keygate_http_requests_total",
                    &[login[0], login[1], ("status", "401")]
                ),
                1.0
            );
            assert_eq!(
                m("keygate_http_request_duration_seconds_count", &login),
                3.0
            );
            assert!(m("keygate_http_request_duration_seconds_sum", &login) > 0.0);
            // The route template, never the raw path with its id.
            assert_eq!(
                m(
                    "keygate_http_requests_total",
                    &[
                        ("method", "DELETE"),
                        ("route", "/auth/sessions/{id}"),
                        ("status", "204")
                    ]
                ),
                1.0
            );
            assert!(
                after
                    .iter()
                    .all(|((_, labels), _)| labels.values().all(|v| !v.contains(&session_id))),
                "no series names a session id"
            );
            assert_eq!(
                m(
                    "keygate_http_requests_total",
                    &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
                ),
                1.0,
                "an unknown path is counted, under no path of its own"
            );
            // One scrape was counted before this one.
            assert_eq!(
                m(
                    "keygate_http_requests_total",
                    &[("route", "/metrics"), ("status", "200")]
                ),
                1.0
            );
            assert_eq!(
                m("keygate_rate_limited_total", &[("action", "register")]),
                1.0
            );
            assert_eq!(
                m(
                    "keygate_sessions_revoked_total",
                    &[("reason", "refresh_token_reused")]
                ),
                1.0
            );
            assert_eq!(
                m("keygate_sessions_revoked_total", &[]),
                2.0,
                "the reuse and the DELETE"
            );
            // Three registrations' hashes (the refused one hashed nothing) and three logins.
            assert_eq!(m("keygate_password_hash_seconds_count", &[]), 5.0);
            assert!(m("keygate_password_hash_seconds_sum", &[]) > 0.0);
            assert_eq!(m("keygate_password_hash_queue_depth", &[]), 0.0);
            if keygate_testkit::database_url().is_none() {
                // SQLite: logins, rotations and audit rows went through the group commit.
                assert!(m("keygate_group_commit_batch_size_count", &[]) >= 3.0);
                assert!(
                    m(
                        "keygate_db_pool_connections",
                        &[("pool", "read"), ("state", "idle")]
                    ) >= 1.0
                );
                assert!(
                    after
                        .iter()
                        .any(|((n, l), _)| n == "keygate_db_pool_connections"
                            && l.get("pool").map(String::as_str) == Some("write")
                            && l.get("state").map(String::as_str) == Some("in_use"))
                );
            } else {
                // PostgreSQL: one pool, no group commit.
                assert!(
                    m(
                        "keygate_db_pool_connections",
                        &[("pool", "main"), ("state", "idle")]
                    ) >= 1.0
                );
                assert_eq!(m("keygate_group_commit_batch_size_count", &[]), 0.0);
            }

            // Strangers: a request through a proxy (not a local scraper) without the token.
            let through_proxy =
                |ip: &'static str| c.get(server.url("/metrics")).header("x-forwarded-for", ip);
            let r = through_proxy("192.0.2.7").send().await.unwrap();
            assert_eq!(r.status(), 404);
            let r = through_proxy("192.0.2.7")
                .bearer_auth("a-wrong-token-of-some-length")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404);
            let r = through_proxy("127.0.0.1").send().await.unwrap();
            assert_eq!(r.status(), 404, "a proxied loopback address is not local");
            let r = through_proxy("192.0.2.7")
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = through_proxy("10.20.30.40").send().await.unwrap();
            assert_eq!(r.status(), 200, "metrics.allowed_networks");
        });
    }
}

keygate_testkit::on_both_databases! {
    fn sigterm_under_refresh_load_finishes_in_flight_requests_keeps_every_rotation_and_exits_0() {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("KEYGATE_SHUTDOWN_TIMEOUT", "5s"),
            ("KEYGATE_RATE_LIMITS__ENABLED", "false"),
            ("KEYGATE_REFRESH_REUSE_GRACE", "5m"),
        ];
        // A resource server's client, to hold a long poll of the revocation feed open.
        std::fs::write(
            dir.path().join("keygate.toml"),
            "[[oauth.clients]]\nid = \"rs\"\nsecret = \"a-resource-server-secret\"\n",
        )
        .unwrap();
        let mut server = Server::start(dir.path(), &env);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        const WORKERS: usize = 8;
        let (sessions, outcomes, signalled, long_poll) = runtime.block_on(async {
            let c = reqwest::Client::new();
            let r = post(
                &c,
                &server,
                "/auth/register",
                json!({"email": "ada@example.com", "password": PASSWORD}),
            )
            .await;
            assert_eq!(r.status(), 201);
            let mut tokens = Vec::new();
            for _ in 0..WORKERS {
                let r = post(
                    &c,
                    &server,
                    "/auth/login",
                    json!({"email": "ada@example.com", "password": PASSWORD}),
                )
                .await;
                assert_eq!(r.status(), 200);
                tokens.push(
                    r.json::<Value>().await.unwrap()["refresh_token"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            // Each worker refreshes its own session back to back (keep-alive), recording when
            // each request began and what came back.
            let workers: Vec<_> = tokens
                .into_iter()
                .map(|mut token| {
                    let c = reqwest::Client::new();
                    let url = server.url("/auth/refresh");
                    tokio::spawn(async move {
                        let mut outcomes = Vec::new();
                        loop {
                            let began = Instant::now();
                            let sent = c
                                .post(&url)
                                .json(&json!({"refresh_token": token}))
                                .send()
                                .await;
                            let Ok(r) = sent else {
                                outcomes.push((began, None));
                                break;
                            };
                            let status = r.status().as_u16();
                            // A complete response: its whole body arrives and is the contract's JSON.
                            let body: Value = r.json().await.expect("a complete JSON body");
                            outcomes.push((began, Some(status)));
                            if status != 200 {
                                break;
                            }
                            token = body["refresh_token"]
                                .as_str()
                                .expect("a rotated token")
                                .to_owned();
                        }
                        (token, outcomes)
                    })
                })
                .collect();
            // A long poll in flight across the signal: it must be answered, not cut, and must
            // not hold the shutdown up for its 20 s.
            let long_poll = tokio::spawn({
                let c = reqwest::Client::new();
                let url = server.url("/oauth/revocations?wait=20&since=0.0");
                async move {
                    let r = c
                        .get(url)
                        .basic_auth("rs", Some("a-resource-server-secret"))
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    let body: Value = r.json().await?;
                    Ok::<_, reqwest::Error>((status, body))
                }
            });
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let signalled = Instant::now();
            let pid = server.child.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            let mut sessions = Vec::new();
            let mut outcomes = Vec::new();
            for w in workers {
                let (token, o) = w.await.unwrap();
                sessions.push(token);
                outcomes.extend(o);
            }
            let long_poll = long_poll.await.unwrap();
            (sessions, outcomes, signalled, long_poll)
        });
        let deadline = signalled + Duration::from_secs(5 + 5);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
        assert!(server.logged("shutting down") && server.logged("shut down"));
        let (status, page) = long_poll.expect("the long poll in flight was answered");
        assert_eq!(status, 200, "{page}");
        assert!(page["cursor"].is_string(), "{page}");

        // Every response the clients received was a complete 200 (the workers never got a 4xx
        // or 5xx), and every request sent well before the signal got one.
        let answered = outcomes.iter().filter(|(_, s)| s.is_some()).count();
        assert!(
            answered > WORKERS * 10,
            "load was sustained: {answered} responses"
        );
        for (began, status) in &outcomes {
            match status {
                Some(code) => assert_eq!(*code, 200),
                None => assert!(
                    *began + Duration::from_millis(200) > signalled,
                    "a request sent {:?} before SIGTERM got no response",
                    signalled - *began
                ),
            }
        }

        // Every acknowledged rotation is in the database: after a restart, each session's last
        // acknowledged refresh token is its current one (or, when a later rotation happened but
        // its answer was lost, the previous one inside the grace window): it refreshes.
        drop(server);
        let server = Server::start(dir.path(), &env);
        runtime.block_on(async {
            let c = reqwest::Client::new();
            for token in &sessions {
                let r = post(
                    &c,
                    &server,
                    "/auth/refresh",
                    json!({"refresh_token": token}),
                )
                .await;
                assert_eq!(r.status(), 200, "an acknowledged rotation was lost");
            }
        });
    }
}

#[test]
fn logs_are_pretty_on_a_terminal_and_json_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_keygate");
    // `script` runs the command with a pseudo-terminal as its stdout and stderr.
    let mut child = Command::new("script")
        .current_dir(dir.path())
        .args([
            "-qefc",
            &format!("{bin} serve --listen 127.0.0.1:0"),
            "/dev/null",
        ])
        .env_remove("KEYGATE_LOG__FORMAT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("keygate listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a listening line");
    let _ = Command::new("pkill")
        .args(["-TERM", "-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        serde_json::from_str::<Value>(&line).is_err(),
        "not JSON on a terminal: {line}"
    );
    assert!(line.contains("INFO") && line.contains("address"), "{line}");
}
