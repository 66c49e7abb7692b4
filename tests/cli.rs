//! The real `keygate` binary: serve, migrate, config check, exit codes.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn keygate(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run keygate");
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
        ],
    );
    assert!(out.status.success());
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

#[test]
fn migrate_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), &["migrate"], &[]);
    assert!(out.status.success());
    assert!(
        dir.path().join("keygate.db").exists(),
        "the default sqlite://keygate.db"
    );
    // Idempotent.
    assert!(keygate(dir.path(), &["migrate"], &[]).status.success());
}

#[test]
fn serve_starts_on_the_embedded_default_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYGATE_LOG__FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "keygate listening"
            {
                let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server reports its address");
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
}

#[test]
fn purge_runs_on_the_database_and_reports_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), &["purge"], &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("purged 0 ended sessions"), "{stdout}");
    assert!(stdout.contains("sessions: 0 -> 0"), "{stdout}");
}
