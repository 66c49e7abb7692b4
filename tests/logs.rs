//! Structured logs: the real binary, JSON on a non-terminal, at debug level, through a whole
//! flow — and not one token, password or hash in the output.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

// Shared with the suite: a real SMTP server, and the tests' own TOTP.
#[path = "suite/smtp.rs"]
#[allow(dead_code)]
mod smtp;
#[path = "suite/totp.rs"]
mod totp;

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "not the password at all";
const NEW_PASSWORD: &str = "an entirely different passphrase";

/// The binary serving in `dir` at debug level with `env`, its log lines collected: the lines,
/// the reader thread and the server's base URL.
fn serve(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (
    std::process::Child,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
    String,
) {
    // The server reads every KEYGATE_* variable as configuration: none of the caller's.
    let mut command =
        keygate_testkit::keygate_command(std::path::Path::new(env!("CARGO_BIN_EXE_keygate")));
    command
        .current_dir(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "keygate listening"
            {
                let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server reports its address");
    (child, lines, reader, format!("http://{addr}"))
}

keygate_testkit::on_both_databases! {
    fn a_whole_flow_logs_auth_events_with_stable_fields_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, lines, reader, base) = serve(
            dir.path(),
            &[("KEYGATE_REFRESH_REUSE_GRACE", "0".to_owned())],
        );

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let secrets = runtime.block_on(async {
            let c = reqwest::Client::new();
            let post = |path: &str, body: Value, bearer: Option<&str>| {
                let mut req = c.post(format!("{base}{path}")).json(&body);
                if let Some(token) = bearer {
                    req = req.bearer_auth(token);
                }
                req.send()
            };
            let r = post(
                "/auth/register",
                json!({"email": "ada@example.com", "password": PASSWORD}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 201);
            let r = post(
                "/auth/login",
                json!({"email": "ada@example.com", "password": WRONG}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 401);
            let first: Value = post(
                "/auth/login",
                json!({"email": "ada@example.com", "password": PASSWORD}),
                None,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let second: Value = post(
                "/auth/refresh",
                json!({"refresh_token": first["refresh_token"]}),
                None,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let reuse = post(
                "/auth/refresh",
                json!({"refresh_token": first["refresh_token"]}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(reuse.status(), 401);
            let third: Value = post(
                "/auth/login",
                json!({"email": "ada@example.com", "password": PASSWORD}),
                None,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let r = post(
                "/auth/password",
                json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
                third["access_token"].as_str(),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 204);
            let r = post("/auth/logout", json!({}), third["access_token"].as_str())
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            let mut secrets: Vec<String> = vec![PASSWORD.into(), WRONG.into(), NEW_PASSWORD.into()];
            for t in [&first, &second, &third] {
                let access = t["access_token"].as_str().unwrap();
                let refresh = t["refresh_token"].as_str().unwrap();
                secrets.push(access.to_owned());
                secrets.push(access.rsplit('.').next().unwrap().to_owned());
                secrets.push(refresh.to_owned());
                secrets.push(refresh.split('.').nth(1).unwrap().to_owned());
            }
            secrets
        });
        let _ = child.kill();
        let _ = child.wait();
        reader.join().unwrap();

        // The password hash, read from the database the server used.
        let hash = runtime.block_on(async {
            let url = keygate_testkit::database_url_in(dir.path());
            let config = keygate::Config::from_toml(&format!("database_url = \"{url}\"")).unwrap();
            let store = keygate::store::Store::connect(&config).await.unwrap();
            let user = store
                .find_user_by_login("ada@example.com")
                .await
                .unwrap()
                .unwrap();
            store
                .password_hash(user.id)
                .await
                .unwrap()
                .unwrap()
                .phc()
                .to_owned()
        });

        let lines = lines.lock().unwrap();
        assert!(lines.len() > 20, "debug logs were written: {}", lines.len());
        let all = lines.join("\n");
        for secret in secrets.iter().map(String::as_str).chain([hash.as_str()]) {
            assert!(!all.contains(secret), "a secret is in the logs");
        }
        // Every line is JSON (stderr is not a terminal) and auth events carry stable fields.
        let events: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON log line"))
            .filter(|v| v["message"] == "auth event")
            .collect();
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        for expected in [
            "user_created",
            "login_failed",
            "login_succeeded",
            "refresh_succeeded",
            "refresh_token_reused",
            "password_changed",
            "logout",
        ] {
            assert!(names.contains(&expected), "{expected} in {names:?}");
        }
        for e in &events {
            for field in ["event", "outcome", "ip"] {
                assert!(e.get(field).is_some(), "{field} in {e}");
            }
            if e["outcome"] == "failure" {
                assert!(e["reason"].is_string(), "{e}");
            }
        }
        let login = events
            .iter()
            .find(|e| e["event"] == "login_succeeded")
            .unwrap();
        assert!(login["user_id"].is_string() && login["session_id"].is_string());
        // A field is there when it has a value, and only then.
        let created = events
            .iter()
            .find(|e| e["event"] == "user_created")
            .unwrap();
        assert!(
            created.get("session_id").is_none() && created.get("reason").is_none(),
            "{created}"
        );
        // No line of Keygate's writes an empty field: absent values are left out. (sqlx's debug
        // lines write an empty `db.statement` for short statements: not ours to change.)
        fn empty_field(v: &Value) -> Option<String> {
            match v {
                Value::String(s) if s.is_empty() => Some(String::new()),
                Value::Object(map) => map
                    .iter()
                    .find_map(|(k, v)| empty_field(v).map(|path| format!("{k}.{path}"))),
                Value::Array(items) => items.iter().find_map(empty_field),
                _ => None,
            }
        }
        for line in lines.iter() {
            let v: Value = serde_json::from_str(line).unwrap();
            if !v["target"].as_str().unwrap_or("").starts_with("keygate") {
                continue;
            }
            assert_eq!(empty_field(&v), None, "an empty field in {line}");
        }
        // Request spans carry a request id.
        assert!(
            lines.iter().any(|l| l.contains("request_id")),
            "request spans with ids"
        );
    }
}

keygate_testkit::on_both_databases! {
    /// Mail and two-factor through the real binary: no link token, mfa_token, TOTP seed or
    /// recovery code reaches a log line.
    fn mail_and_two_factor_log_no_token_seed_or_code() {
        let dir = tempfile::tempdir().unwrap();
        let mail = smtp::SmtpServer::start();
        let (mut child, lines, reader, base) = serve(
            dir.path(),
            &[
                (
                    "KEYGATE_EMAIL__SMTP_URL",
                    format!("smtp://127.0.0.1:{}?tls=none", mail.port),
                ),
                (
                    "KEYGATE_EMAIL__FROM",
                    "Keygate <no-reply@keygate.test>".to_owned(),
                ),
                ("KEYGATE_RATE_LIMITS__PASSWORD", "100/1m".to_owned()),
            ],
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let secrets = runtime.block_on(async {
            let c = reqwest::Client::new();
            let send = |method: reqwest::Method, path: &str, body: Value, bearer: Option<&str>| {
                let mut req = c.request(method, format!("{base}{path}")).json(&body);
                if let Some(token) = bearer {
                    req = req.bearer_auth(token);
                }
                req.send()
            };
            let post = |path: &str, body: Value, bearer: Option<&str>| {
                send(reqwest::Method::POST, path, body, bearer)
            };
            let email = "ada@example.com";
            let r = post(
                "/auth/register",
                json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 201);
            let verify = mail.nth(email, 1).await.token();
            let r = post("/auth/email/verify", json!({"token": verify}), None)
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            let r = post("/auth/password/forgot", json!({"email": email}), None)
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let reset = mail.nth(email, 2).await.token();
            let r = post(
                "/auth/password/reset",
                json!({"token": reset, "new_password": NEW_PASSWORD}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 204);
            let login: Value = post(
                "/auth/login",
                json!({"email": email, "password": NEW_PASSWORD}),
                None,
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let access = login["access_token"].as_str().unwrap().to_owned();
            let r = post(
                "/auth/email/change",
                json!({"new_email": "ada@example.org", "password": NEW_PASSWORD}),
                Some(&access),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 202);
            let change = mail.nth("ada@example.org", 1).await.token();
            let r = post("/auth/email/change/confirm", json!({"token": change}), None)
                .await
                .unwrap();
            assert_eq!(r.status(), 200);

            let enrolment: Value = post(
                "/auth/mfa/totp",
                json!({"password": NEW_PASSWORD}),
                Some(&access),
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let seed = enrolment["secret"].as_str().unwrap().to_owned();
            let key = totp::base32_decode(&seed);
            let now = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64
            };
            let codes: Value = post(
                "/auth/mfa/totp/confirm",
                json!({"code": totp::totp(&key, now())}),
                Some(&access),
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let recovery: Vec<String> = codes["recovery_codes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(recovery.len(), 10);
            let r = post(
                "/auth/login",
                json!({"email": "ada@example.org", "password": NEW_PASSWORD}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 403);
            let challenge: Value = r.json().await.unwrap();
            let mfa_token = challenge["mfa_token"].as_str().unwrap().to_owned();
            let r = post(
                "/auth/mfa/verify",
                json!({"mfa_token": mfa_token, "recovery_code": recovery[0]}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 200);
            let mut secrets = vec![
                verify,
                reset,
                change,
                mfa_token,
                seed.clone(),
                NEW_PASSWORD.to_owned(),
            ];
            // The secret halves alone, the seed in lower case, every recovery code.
            for t in secrets.clone().iter().take(4) {
                secrets.push(t.split('.').nth(1).unwrap().to_owned());
            }
            secrets.push(seed.to_lowercase());
            secrets.extend(recovery);
            secrets
        });
        let _ = child.kill();
        let _ = child.wait();
        reader.join().unwrap();
        let lines = lines.lock().unwrap();
        let all = lines.join("\n");
        assert!(
            all.contains("mail delivered"),
            "the sender logs its deliveries"
        );
        for secret in &secrets {
            assert!(!all.contains(secret.as_str()), "a secret is in the logs");
        }
        let events: Vec<String> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "auth event")
            .filter_map(|v| v["event"].as_str().map(str::to_owned))
            .collect();
        for expected in [
            "email_verified",
            "password_reset_requested",
            "password_reset",
            "email_changed",
            "mfa_enabled",
        ] {
            assert!(
                events.iter().any(|e| e == expected),
                "{expected} in {events:?}"
            );
        }
    }
}
