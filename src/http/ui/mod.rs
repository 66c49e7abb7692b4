//! The hosted pages: `/ui/login`, `/ui/register` (while registration is open) and
//! `/ui/account`, with their one script and one style sheet, embedded in the binary at compile
//! time (no build step, nothing fetched from elsewhere).
//!
//! The pages are plain HTML over the cookie transport: the script (`keygate.js`) keeps the
//! access token in memory and refreshes it from the HttpOnly cookie on load and after a 401.
//! Every answer here carries a strict Content-Security-Policy (only this origin's script and
//! style, no inline script, no framing), `Referrer-Policy: no-referrer` and
//! `X-Content-Type-Options: nosniff`. The page after login comes from `?return_to=`, checked
//! here against the allowed origins (the issuer's and `cors.allowed_origins`), so the pages
//! never redirect anywhere else.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, Registration};

const LAYOUT: &str = include_str!("layout.html");
const LOGIN: &str = include_str!("login.html");
const REGISTER: &str = include_str!("register.html");
const ACCOUNT: &str = include_str!("account.html");
const FORGOT: &str = include_str!("forgot.html");
const RESET: &str = include_str!("reset.html");
const LINK: &str = include_str!("link.html");
const SCRIPT: &str = include_str!("keygate.js");
const STYLE: &str = include_str!("keygate.css");

/// Where a page goes after login when `return_to` is absent or not allowed.
pub(crate) const HOME: &str = "/ui/account";

/// Longest `return_to` taken (a longer one is ignored).
const MAX_RETURN_TO: usize = 2048;

/// Only this origin's files; no inline script or style, no plugins, no framing, forms post
/// only here, and `<base>` cannot move relative URLs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The hosted pages' routes, merged into [`super::router`].
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home_slash))
        .route("/ui/login", get(login))
        .route("/ui/register", get(register))
        .route("/ui/account", get(account))
        .route("/ui/forgot-password", get(forgot_password))
        .route("/ui/reset-password", get(reset_password))
        .route("/ui/verify-email", get(verify_email))
        .route("/ui/confirm-email", get(confirm_email))
        .route("/ui/keygate.js", get(script))
        .route("/ui/keygate.css", get(style))
}

#[utoipa::path(get, path = "/ui", tag = "pages",
    responses((status = 303, description = "To the account page", headers(("Location" = String)))))]
pub(crate) async fn home() -> Redirect {
    Redirect::to(HOME)
}

#[utoipa::path(get, path = "/ui/", tag = "pages",
    responses((status = 303, description = "To the account page", headers(("Location" = String)))))]
pub(crate) async fn home_slash() -> Redirect {
    Redirect::to(HOME)
}

#[utoipa::path(get, path = "/ui/keygate.js", tag = "pages",
    responses((status = 200, description = "The pages' one script", content_type = "text/javascript")))]
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[utoipa::path(get, path = "/ui/keygate.css", tag = "pages",
    responses((status = 200, description = "The pages' style sheet", content_type = "text/css")))]
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The headers every hosted answer carries.
fn secured(response: Response, cache: &'static str) -> Response {
    with_page_headers(response, CSP, cache)
}

/// A served page's security headers (`csp` its policy) and `Cache-Control: cache`; also for
/// the API reference at `/docs`.
pub(crate) fn with_page_headers(
    mut response: Response,
    csp: &'static str,
    cache: &'static str,
) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Short caching: a new release's script must not meet an old page for long.
    let r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secured(r, "public, max-age=300")
}

/// A page: the layout around `main`, with the page's name and checked `return_to`.
fn page(config: &Config, name: &str, title: &str, main: &str, query: Option<&str>) -> Response {
    let return_to = return_to(config, query_param(query, "return_to").as_deref());
    // The visitor's value goes in last, escaped, so it cannot feed a later placeholder.
    let html = LAYOUT
        .replace("{{title}}", title)
        .replace("{{page}}", name)
        .replace(
            "{{mail}}",
            if config.email.enabled() { "on" } else { "off" },
        )
        .replace("{{main}}", main)
        .replace("{{return_to}}", &escape_attribute(&return_to));
    let r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    secured(r, "no-store")
}

#[utoipa::path(get, path = "/ui/login", tag = "pages", operation_id = "login_page", params(("return_to" = Option<String>, Query, description = "Where to go afterwards: a path of this server, or a URL of an origin in `cors.allowed_origins`; anything else is ignored")),
    responses((status = 200, description = "The login page", content_type = "text/html")))]
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let config = state.auth.config();
    let register = match config.registration {
        Registration::Open => {
            "<p class=\"aside\">New here? <a id=\"register-link\" href=\"/ui/register\">Create an account</a></p>"
        }
        Registration::Closed => "",
    };
    let forgot = if config.email.enabled() {
        "<p class=\"aside\"><a id=\"forgot-link\" href=\"/ui/forgot-password\">Forgot your password?</a></p>"
    } else {
        ""
    };
    let main = LOGIN
        .replace("{{register_link}}", register)
        .replace("{{forgot_link}}", forgot);
    page(config, "login", "Log in", &main, query.as_deref())
}

#[utoipa::path(get, path = "/ui/register", tag = "pages", operation_id = "register_page", params(("return_to" = Option<String>, Query, description = "Where to go afterwards: a path of this server, or a URL of an origin in `cors.allowed_origins`; anything else is ignored")),
    responses(
        (status = 200, description = "The registration page", content_type = "text/html"),
        (status = 404, description = "`not_found`: registration is closed", body = crate::http::openapi::ApiErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let config = state.auth.config();
    if config.registration == Registration::Closed {
        return ApiError::NotFound.into_response();
    }
    page(
        config,
        "register",
        "Create an account",
        REGISTER,
        query.as_deref(),
    )
}

#[utoipa::path(get, path = "/ui/account", tag = "pages", operation_id = "account_page", params(("return_to" = Option<String>, Query, description = "Where to go afterwards: a path of this server, or a URL of an origin in `cors.allowed_origins`; anything else is ignored")),
    responses((status = 200, description = "The account page (profile, password, sessions)", content_type = "text/html")))]
pub(crate) async fn account(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Response {
    page(
        state.auth.config(),
        "account",
        "Your account",
        ACCOUNT,
        query.as_deref(),
    )
}

/// A page that only makes sense with mail configured (404 without it, like API.md's 503
/// endpoints behind it).
fn mail_page(config: &Config, name: &str, title: &str, main: &str) -> Response {
    if !config.email.enabled() {
        return ApiError::NotFound.into_response();
    }
    page(config, name, title, main, None)
}

#[utoipa::path(get, path = "/ui/forgot-password", tag = "pages", operation_id = "forgot_password_page",
    responses(
        (status = 200, description = "Asks for the address a reset link goes to", content_type = "text/html"),
        (status = 404, description = "`not_found`: email is not configured", body = crate::http::openapi::ApiErrorBody),
    ))]
pub(crate) async fn forgot_password(State(state): State<Arc<AppState>>) -> Response {
    mail_page(
        state.auth.config(),
        "forgot",
        "Forgot your password?",
        FORGOT,
    )
}

#[utoipa::path(get, path = "/ui/reset-password", tag = "pages", operation_id = "reset_password_page",
    params(("token" = Option<String>, Query, description = "The reset link's token (read by the page's script, never sent to another origin)")),
    responses(
        (status = 200, description = "Sets a new password with the link's token", content_type = "text/html"),
        (status = 404, description = "`not_found`: email is not configured", body = crate::http::openapi::ApiErrorBody),
    ))]
pub(crate) async fn reset_password(State(state): State<Arc<AppState>>) -> Response {
    mail_page(state.auth.config(), "reset", "Choose a new password", RESET)
}

#[utoipa::path(get, path = "/ui/verify-email", tag = "pages", operation_id = "verify_email_page",
    params(("token" = Option<String>, Query, description = "The verification link's token")),
    responses(
        (status = 200, description = "Verifies the address with the link's token (one click)", content_type = "text/html"),
        (status = 404, description = "`not_found`: email is not configured", body = crate::http::openapi::ApiErrorBody),
    ))]
pub(crate) async fn verify_email(State(state): State<Arc<AppState>>) -> Response {
    let main = LINK
        .replace("{{heading}}", "Verify your email address")
        .replace(
            "{{hint}}",
            "Confirm that this address is yours to finish setting up your account.",
        )
        .replace("{{button}}", "Verify my address")
        .replace("{{done}}", "Your email address is verified.");
    mail_page(
        state.auth.config(),
        "verify",
        "Verify your email address",
        &main,
    )
}

#[utoipa::path(get, path = "/ui/confirm-email", tag = "pages", operation_id = "confirm_email_page",
    params(("token" = Option<String>, Query, description = "The email-change link's token")),
    responses(
        (status = 200, description = "Moves the account to its new address with the link's token (one click)", content_type = "text/html"),
        (status = 404, description = "`not_found`: email is not configured", body = crate::http::openapi::ApiErrorBody),
    ))]
pub(crate) async fn confirm_email(State(state): State<Arc<AppState>>) -> Response {
    let main = LINK
        .replace("{{heading}}", "Confirm your new email address")
        .replace(
            "{{hint}}",
            "Your account will use this address from now on, to log in and for every message.",
        )
        .replace("{{button}}", "Use this address")
        .replace("{{done}}", "Your email address was changed.");
    mail_page(
        state.auth.config(),
        "confirm",
        "Confirm your new email address",
        &main,
    )
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `raw` when it is a place the pages may send a browser after login: a path on this server,
/// or an absolute `http(s)` URL on the issuer's origin or one of `cors.allowed_origins`.
/// Anything else (another origin, `//host`, `/\host`, `javascript:`, credentials in the URL,
/// over-long) gives [`HOME`]: no open redirect.
pub(crate) fn return_to(config: &Config, raw: Option<&str>) -> String {
    let Some(raw) = raw.filter(|r| !r.is_empty() && r.len() <= MAX_RETURN_TO) else {
        return HOME.to_owned();
    };
    if raw.chars().any(char::is_control) {
        return HOME.to_owned();
    }
    if raw.starts_with('/') {
        // Resolved against a stand-in origin: a path stays on it, while `//evil.example` or
        // `/\evil.example` (which browsers read as another host) moves off it.
        let Ok(base) = url::Url::parse("https://keygate.invalid/") else {
            return HOME.to_owned();
        };
        // The decision is made on the normalised result, which is what the browser will
        // follow: `/./\/evil` and `/..//evil` normalise to `//evil`, another host.
        return match base.join(raw) {
            Ok(u) if u.origin() == base.origin() => {
                let path = &u[url::Position::BeforePath..];
                if is_local_path(path) {
                    path.to_owned()
                } else {
                    HOME.to_owned()
                }
            }
            _ => HOME.to_owned(),
        };
    }
    match url::Url::parse(raw) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.password().is_none()
                && super::cookies::origin_allowed(config, &u.origin().ascii_serialization()) =>
        {
            u.to_string()
        }
        _ => HOME.to_owned(),
    }
}

/// A path of this origin: one `/` followed by something other than `/` or `\` (either of
/// which makes a browser read what follows as a host).
fn is_local_path(path: &str) -> bool {
    let mut chars = path.chars();
    chars.next() == Some('/') && !matches!(chars.next(), Some('/' | '\\'))
}

/// `text` safe inside a double-quoted HTML attribute (braces too, so nothing inserted can
/// look like one of the page's `{{…}}` placeholders).
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "issuer = \"https://auth.example.com\"\n\
             [cors]\nallowed_origins = [\"https://app.example.com\"]\n",
        )
        .expect("config")
    }

    #[test]
    fn return_to_keeps_paths_and_allowed_origins_only() {
        let c = config();
        let cases = [
            (None, HOME),
            (Some(""), HOME),
            (Some("/ui/account?tab=1#x"), "/ui/account?tab=1#x"),
            (Some("/x/../ui/login"), "/ui/login"),
            (
                Some("https://app.example.com/after?a=b"),
                "https://app.example.com/after?a=b",
            ),
            (
                Some("https://auth.example.com/ui/account"),
                "https://auth.example.com/ui/account",
            ),
            // Elsewhere, or made to look like here.
            (Some("https://evil.example/"), HOME),
            (Some("http://app.example.com/"), HOME),
            (Some("https://app.example.com:8443/"), HOME),
            (Some("https://app.example.com.evil.example/"), HOME),
            (Some("https://user:pw@app.example.com/"), HOME),
            (Some("//evil.example/"), HOME),
            (Some("/\\evil.example/"), HOME),
            (Some("/\t/evil.example/"), HOME),
            (Some("javascript:alert(1)"), HOME),
            (Some("data:text/html,hi"), HOME),
            (Some("ui/account"), HOME),
        ];
        for (raw, want) in cases {
            assert_eq!(return_to(&c, raw), want, "{raw:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_RETURN_TO));
        assert_eq!(return_to(&c, Some(&long)), HOME);
    }

    /// Spellings that a browser would follow to another origin, each after the server's
    /// normalisation: none may leave this origin.
    #[test]
    fn hostile_return_to_spellings_stay_home() {
        let c = config();
        let long_dots = format!("/{}/evil.example", "./".repeat(900));
        let long_ups = format!("/{}//evil.example", "../".repeat(600));
        let hostile = [
            "/.//evil.example/phish",
            "/..//evil.example",
            "/../..//evil.example",
            "/a/..//evil.example",
            "/%2e//evil.example",
            "/%2E%2E//evil.example",
            "/.%2e//evil.example",
            "/./\\evil.example",
            "/\\/evil.example",
            "/.\\\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r//evil.example",
            "/\u{0}//evil.example",
            "//evil.example",
            "///evil.example",
            "//@evil.example",
            "//user:pw@evil.example/",
            "https://user@auth.example.com/",
            "https:evil.example",
            "https:/evil.example",
            "http://auth.example.com/",
            "HTTPS://evil.example/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java\tscript:alert(1)",
            "vbscript:msgbox(1)",
            "data:text/html,<script>alert(1)</script>",
            "evil.example",
            "@evil.example",
            "ftp://app.example.com/",
            "https://app.example.com@evil.example/",
            "https://evil.example#https://app.example.com/",
            &long_dots,
            &long_ups,
        ];
        for raw in hostile {
            let out = return_to(&c, Some(raw));
            assert_eq!(out, HOME, "{raw:?} gave {out:?}");
        }
        // The same shapes with nothing after the slashes are harmless paths.
        assert_eq!(return_to(&c, Some("/./ui/account")), "/ui/account");
        assert_eq!(return_to(&c, Some("/%2e/ui/login")), "/ui/login");
    }

    proptest::proptest! {
        /// Whatever the text, the answer is a path of this origin (one `/` then neither `/`
        /// nor `\\`, no control character) or a URL of an allowed origin.
        #[test]
        fn return_to_never_leaves_the_allowed_origins(
            raw in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[/\\\\.%2eEfF@:a-z\t\n ]{0,40}",
                "(https?:)?[/\\\\]{0,3}[a-z.@:]{0,20}[/\\\\.]{0,4}",
            ]
        ) {
            let c = config();
            let out = return_to(&c, Some(&raw));
            let local = is_local_path(&out) && !out.chars().any(char::is_control);
            let allowed = ["https://app.example.com/", "https://auth.example.com/"]
                .iter()
                .any(|origin| out.starts_with(origin));
            proptest::prop_assert!(local || allowed, "{:?} gave {:?}", raw, out);
        }
    }

    #[tokio::test]
    async fn return_to_cannot_inject_page_markup() {
        let c = config();
        let query = "return_to=%2F%3Fx%3D%7B%7Bmain%7D%7D%22%3E%3Cb%3E";
        let response = page(&c, "login", "t", "<main>{{x}}</main>", Some(query));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let html = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert!(
            html.contains(r#"data-return-to="/?x=&#123;&#123;main&#125;&#125;%22%3E%3Cb%3E""#),
            "{html}"
        );
        assert_eq!(html.matches("<main>").count(), 1, "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }

    #[test]
    fn attributes_are_escaped() {
        assert_eq!(
            escape_attribute("/a?x=\"><script>&'"),
            "/a?x=&quot;&gt;&lt;script&gt;&amp;&#39;"
        );
    }
}
