//! The fuzz targets on stable (docs/RELIABILITY.md, part 1): the same functions `cargo fuzz`
//! drives (fuzz/src/lib.rs), run over every input of their corpus (`fuzz/corpus/TARGET`, kept
//! small and minimised by `scripts/fuzz`) and over inputs proptest generates, so that CI
//! exercises every target whatever toolchain it has. `KEYGATE_FUZZ_CASES` sets the generated
//! inputs per target (default 256).

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("KEYGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs `target` over every file of its corpus and of its regressions (inputs that once
/// failed: `fuzz/regressions/TARGET`, never minimised away); the number of inputs.
fn corpus(name: &str, target: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(name),
        root.join("regressions").join(name),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "the corpus of {name} is empty");
    n
}

/// A JSON value of any shape (nested up to 4 levels), as text.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        ".{0,40}".prop_map(|s| serde_json::Value::String(s).to_string()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("email".to_owned()),
                        Just("password".to_owned()),
                        Just("refresh_token".to_owned()),
                        Just("token".to_owned()),
                        Just("scope".to_owned()),
                        Just("name".to_owned()),
                        Just("username".to_owned()),
                        Just("code".to_owned()),
                        Just("mfa_token".to_owned()),
                        Just("roles".to_owned()),
                        Just("new_password".to_owned()),
                        Just("current_password".to_owned()),
                        "[a-z_]{1,12}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| {
                let body: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k)))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

/// Bytes of any kind, or text that looks like what the target reads.
fn input(shaped: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        3 => shaped,
    ]
}

macro_rules! target_test {
    ($name:ident, $shaped:expr) => {
        #[test]
        fn $name() {
            let n = corpus(stringify!($name), targets::$name);
            eprintln!("{}: {n} corpus inputs", stringify!($name));
            // A failing input's seed is kept (committed) and replayed first by later runs.
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
                cases: cases(),
                failure_persistence: Some(Box::new(
                    proptest::test_runner::FileFailurePersistence::Direct(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/tests/fuzz_targets.proptest-regressions"
                    )),
                )),
                ..ProptestConfig::default()
            });
            let outcome = runner.run(&input($shaped), |data| {
                targets::$name(&data);
                Ok(())
            });
            if let Err(e) = outcome {
                panic!("{}: {e}", stringify!($name));
            }
        }
    };
}

target_test!(
    access_token,
    (
        json_text(),
        json_text(),
        prop::collection::vec(any::<u8>(), 0..80)
    )
        .prop_map(|(header, payload, signature)| {
            let mut v = vec![0u8];
            v.extend_from_slice(header.as_bytes());
            v.push(0);
            v.extend_from_slice(payload.as_bytes());
            v.push(0);
            v.extend(signature);
            v
        })
);
target_test!(
    refresh_token,
    "[0-9a-fA-F]{30,34}\\.[A-Za-z0-9_=+/-]{40,48}".prop_map(String::into_bytes)
);
target_test!(
    config,
    (
        "([a-z_.]{1,24} = (\"[ -~]{0,20}\"|[0-9]{1,6}|true|false)\n){0,6}",
        "(KEYGATE_[A-Z_]{1,24}=[ -~]{0,20}\n){0,4}"
    )
        .prop_map(|(toml, env)| format!("{toml}\0{env}").into_bytes())
);
target_test!(
    http_body,
    (any::<u8>(), any::<u8>(), json_text()).prop_map(|(r, c, body)| {
        let mut v = vec![r, c % 2];
        v.extend(body.into_bytes());
        v
    })
);
target_test!(
    oauth_form,
    (
        any::<u8>(),
        0u8..4,
        "((grant_type|token|token_type_hint|refresh_token|username|password|scope|client_id)=[ -~]{0,30}&?){0,5}"
    )
        .prop_map(|(e, f, form)| {
            let mut v = vec![e, f];
            v.extend(form.into_bytes());
            v
        })
);
target_test!(
    cookie_header,
    (
        any::<u8>(),
        "((keygate_refresh|keygate_csrf|__Host-keygate_refresh|other)=[ -~]{0,60}; ?){0,4}",
        "[ -~]{0,40}"
    )
        .prop_map(|(r, cookie, csrf)| {
            let mut v = vec![r];
            v.extend(cookie.into_bytes());
            v.push(0);
            v.extend(csrf.into_bytes());
            v
        })
);
target_test!(import_lines, json_text().prop_map(String::into_bytes));
