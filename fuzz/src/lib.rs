//! Keygate's fuzz targets (docs/RELIABILITY.md, part 1).
//!
//! Each target is a plain function of bytes. `cargo fuzz run TARGET` (libFuzzer, nightly) drives
//! them through `fuzz_targets/*.rs`; on stable, `tests/fuzz_targets.rs` includes this file and
//! runs every target over its corpus (`fuzz/corpus/TARGET`) and over generated inputs, so CI
//! exercises the same code. A target fails by panicking: on a panic inside Keygate, on a 5xx
//! answer, or on an answer outside the contract.
//!
//! The HTTP targets send each input as one request to the real router (every extractor,
//! middleware and handler), in process, on a SQLite database in a temporary directory.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Uri, header};
use tower::ServiceExt as _;

/// The instant tokens are verified at (2023-11-14): fixed, so that a run is repeatable.
const NOW: i64 = 1_700_000_000;
/// The fuzz server's administrator (its token is sent where a route needs a bearer).
const ADMIN_EMAIL: &str = "fuzz-admin@keygate.test";
const ADMIN_PASSWORD: &str = "an administrator password for fuzzing only";
/// The OAuth client the fuzz server knows, for the `/oauth/*` forms.
const CLIENT_ID: &str = "fuzz-client";
const CLIENT_SECRET: &str = "the fuzz client's secret, long enough";

/// An Ed25519 public key (any key: the fuzzer cannot sign with it) as a JWKS, and an HS256
/// secret: the two kinds of verifier a resource server builds.
const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA","use":"sig","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
const HS256_SECRET: &[u8] = b"a resource server's secret, 32 bytes or more";

fn verifiers() -> &'static [keygate_verify::Verifier; 2] {
    static V: OnceLock<[keygate_verify::Verifier; 2]> = OnceLock::new();
    V.get_or_init(|| {
        let eddsa = keygate_verify::Verifier::from_jwks(
            "EdDSA",
            JWKS,
            "https://auth.keygate.test",
            &["api"],
        )
        .expect("the fuzz JWKS");
        let hs256 =
            keygate_verify::Verifier::hs256(&[HS256_SECRET], "https://auth.keygate.test", &["api"])
                .expect("the fuzz secret");
        [eddsa, hs256]
    })
}

/// Access-token verification by `keygate-verify`. Input starting with byte 0 is structured:
/// `header NUL payload NUL signature`, each part base64url-encoded here, so that the fuzzer
/// reaches the JSON of the header (`alg`, `kid`, `typ`) and of the claims; other input is
/// verified as it is. Nothing the fuzzer makes is signed by a key it has, so every input
/// must be refused, and nothing may panic.
pub fn access_token(data: &[u8]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = match data.split_first() {
        Some((0, rest)) => {
            let mut parts = rest.splitn(3, |b| *b == 0);
            let header = b64.encode(parts.next().unwrap_or_default());
            let payload = b64.encode(parts.next().unwrap_or_default());
            let signature = b64.encode(parts.next().unwrap_or_default());
            format!("{header}.{payload}.{signature}")
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
    };
    for verifier in verifiers() {
        let outcome = verifier.verify(&token, NOW);
        assert!(outcome.is_err(), "an unsigned token verified: {outcome:?}");
    }
}

/// Refresh and link tokens: a token that parses prints back as exactly the input (one token,
/// one spelling), and nothing panics.
pub fn refresh_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(token) = keygate::token::RefreshToken::parse(text) {
        assert_eq!(
            token.expose(),
            text,
            "a refresh token has a second spelling"
        );
    }
    if let Some(token) = keygate::token::LinkToken::parse(text) {
        assert_eq!(token.expose(), text, "a link token has a second spelling");
    }
}

/// Configuration: input is `TOML NUL VARIABLES`, the variables as `NAME=value` lines (names as
/// in the environment, `KEYGATE_` optional). Loading either succeeds or says why; no panic,
/// and an error never repeats a value given for a secret.
pub fn config(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let Ok(toml) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let Ok(vars) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let pairs: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match keygate::Config::from_toml_and_environment(toml, pairs.iter().cloned()) {
        Ok(config) => {
            // What `keygate config` prints must serialise whatever was loaded.
            let _ = config.redacted();
        }
        Err(e) => {
            let message = e.to_string();
            for (name, value) in &pairs {
                let secret = name.to_ascii_lowercase().contains("secret")
                    || name.to_ascii_lowercase().contains("password")
                    || name.to_ascii_lowercase().ends_with("token");
                if secret && value.len() >= 8 {
                    assert!(
                        !message.contains(value.as_str()),
                        "the error repeats the value of {name}: {message}"
                    );
                }
            }
        }
    }
}

/// The in-process server the HTTP targets talk to.
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    app_state: std::sync::Arc<keygate::http::AppState>,
    /// The administrator's access token.
    bearer: String,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let toml = format!(
            r#"
listen = "127.0.0.1:0"
database_url = "sqlite://{}"
issuer = "https://auth.keygate.test"
rate_limits.enabled = false
# Mail configured (to a closed port; the sender is not running): the mail endpoints work.
email.smtp_url = "smtp://127.0.0.1:9?tls=none"
email.from = "Keygate <no-reply@keygate.test>"
[[oauth.clients]]
id = "{CLIENT_ID}"
secret = "{CLIENT_SECRET}"
"#,
            dir.path().join("keygate.db").display()
        );
        let config = keygate::Config::from_toml(&toml).expect("the fuzz configuration");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (router, app_state, bearer) = runtime.block_on(async {
            let app = keygate::App::build(config).await.expect("the fuzz server");
            let state = app.state();
            let registration = keygate::auth::Registration {
                email: Some(ADMIN_EMAIL.to_owned()),
                password: Some(ADMIN_PASSWORD.to_owned()),
                ..Default::default()
            };
            state
                .auth
                .create_user(
                    registration,
                    vec!["admin".to_owned()],
                    Vec::new(),
                    &keygate::domain::ClientInfo::default(),
                )
                .await
                .expect("the fuzz administrator");
            let router = app.router();
            let body = format!(r#"{{"email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}"#);
            let request = Request::post("/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .expect("a request");
            let (status, body) = send(&router, request).await;
            assert_eq!(status, 200, "the fuzz administrator logs in: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let bearer = v["access_token"].as_str().unwrap_or_default().to_owned();
            (router, state, bearer)
        });
        Harness {
            runtime,
            router,
            app_state,
            bearer,
            _dir: dir,
        }
    })
}

async fn send(router: &axum::Router, mut request: Request<Body>) -> (u16, String) {
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40_000,
        ))));
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A route whose request carries a body (or, for `query`, a query string).
struct Route {
    method: Method,
    path: &'static str,
    /// Send the administrator's bearer token.
    bearer: bool,
    /// The input is the query string rather than the body.
    query: bool,
}

const fn route(method: Method, path: &'static str, bearer: bool) -> Route {
    Route {
        method,
        path,
        bearer,
        query: false,
    }
}

/// Every route that reads a JSON body, and the list endpoints' queries. `/auth/logout`
/// goes without the bearer (a global logout would end the harness's own session).
const ROUTES: &[Route] = &[
    route(Method::POST, "/auth/register", false),
    route(Method::POST, "/auth/login", false),
    route(Method::POST, "/auth/refresh", false),
    route(Method::POST, "/auth/logout", false),
    route(Method::PATCH, "/auth/me", true),
    route(Method::POST, "/auth/password", true),
    route(Method::POST, "/auth/email/verify", false),
    route(Method::POST, "/auth/email/verify/resend", true),
    route(Method::POST, "/auth/password/forgot", false),
    route(Method::POST, "/auth/password/reset", false),
    route(Method::POST, "/auth/email/change", true),
    route(Method::POST, "/auth/email/change/confirm", false),
    route(Method::POST, "/auth/mfa/totp", true),
    route(Method::DELETE, "/auth/mfa/totp", true),
    route(Method::POST, "/auth/mfa/totp/confirm", true),
    route(Method::POST, "/auth/mfa/verify", false),
    route(Method::POST, "/admin/users", true),
    route(
        Method::PATCH,
        "/admin/users/0190a4a4-0000-7000-8000-000000000001",
        true,
    ),
    Route {
        method: Method::GET,
        path: "/admin/users",
        bearer: true,
        query: true,
    },
    Route {
        method: Method::GET,
        path: "/admin/audit",
        bearer: true,
        query: true,
    },
    Route {
        method: Method::GET,
        path: "/oauth/revocations",
        bearer: false,
        query: true,
    },
];

/// The `/oauth/*` endpoints that read a form.
const OAUTH_ROUTES: &[&str] = &["/oauth/token", "/oauth/introspect", "/oauth/revoke"];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/merge-patch+json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "",
    "multipart/form-data; boundary=x",
    "APPLICATION/JSON",
];

/// Checks an answer against the contract: never a 5xx, and every error is the contract's
/// JSON error object.
fn check_answer(what: &str, status: u16, body: &str) {
    assert!(status < 500, "{what}: {status} {body}");
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| {
            panic!("{what}: {status} with a body that is not JSON ({e}): {body}")
        });
        assert!(
            v["error"].is_string(),
            "{what}: {status} without an error code: {body}"
        );
    }
}

/// A JSON (or any) body to one of the API's routes: input is `[route, content type, body…]`.
pub fn http_body(data: &[u8]) {
    let [r, c, body @ ..] = data else {
        return;
    };
    let route = &ROUTES[usize::from(*r) % ROUTES.len()];
    let content_type = CONTENT_TYPES[usize::from(*c) % CONTENT_TYPES.len()];
    let h = harness();
    let mut builder = Request::builder().method(route.method.clone());
    let body = if route.query {
        let Ok(query) = std::str::from_utf8(body) else {
            return;
        };
        let Ok(uri) = format!("{}?{query}", route.path).parse::<Uri>() else {
            return;
        };
        builder = builder.uri(uri);
        Body::empty()
    } else {
        builder = builder.uri(route.path);
        Body::from(body.to_vec())
    };
    if !content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    if route.bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", h.bearer));
    }
    let request = builder.body(body).expect("a request");
    let (status, answer) = h.runtime.block_on(send(&h.router, request));
    check_answer(&format!("{} {}", route.method, route.path), status, &answer);
}

/// A form to `/oauth/*`: input is `[endpoint, flags, form…]`; flag bit 0 sends the client's
/// credentials (Basic), bit 1 sends the form's content type.
pub fn oauth_form(data: &[u8]) {
    use base64::Engine as _;
    let [e, flags, form @ ..] = data else {
        return;
    };
    let path = OAUTH_ROUTES[usize::from(*e) % OAUTH_ROUTES.len()];
    let h = harness();
    let mut builder = Request::post(path);
    if flags & 1 == 1 {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        builder = builder.header(header::AUTHORIZATION, format!("Basic {basic}"));
    }
    if flags & 2 == 2 {
        builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let request = builder.body(Body::from(form.to_vec())).expect("a request");
    let (status, answer) = h.runtime.block_on(send(&h.router, request));
    check_answer(&format!("POST {path}"), status, &answer);
}

/// A `Cookie` header (and the CSRF header beside it) on the routes that read the session
/// cookies: input is `[route, cookie header NUL csrf header]`.
pub fn cookie_header(data: &[u8]) {
    let [r, rest @ ..] = data else {
        return;
    };
    let mut parts = rest.splitn(2, |b| *b == 0);
    let Ok(cookie) = HeaderValue::from_bytes(parts.next().unwrap_or_default()) else {
        return;
    };
    let csrf = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok());
    let (method, path) = [
        (Method::POST, "/auth/refresh"),
        (Method::POST, "/auth/logout"),
        (Method::POST, "/auth/refresh?transport=cookie"),
        (Method::GET, "/auth/me"),
        (Method::GET, "/ui/account"),
    ][usize::from(*r) % 5]
        .clone();
    let h = harness();
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::COOKIE, cookie)
        .header(header::ORIGIN, "https://auth.keygate.test");
    if let Some(csrf) = csrf {
        builder = builder.header("x-csrf-token", csrf);
    }
    let request = builder.body(Body::empty()).expect("a request");
    let (status, answer) = h.runtime.block_on(send(&h.router, request));
    if path.starts_with("/ui/") {
        assert!(status < 500, "{method} {path}: {status} {answer}");
    } else {
        check_answer(&format!("{method} {path}"), status, &answer);
    }
}

/// The import file reader (`keygate import`): each line of the input imported; every line
/// either imports or says why, and nothing panics.
pub fn import_lines(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let h = harness();
    h.runtime.block_on(async {
        for line in text.lines().take(16) {
            let _ = h.app_state.auth.import_user(line).await;
        }
    });
}
