//! The cookie transport for browsers (API.md § Cookie transport): the refresh token in the
//! HttpOnly cookie `keygate_refresh` (`Path=/auth`), a CSRF token in the readable cookie
//! `keygate_csrf` (`Path=/`), both `Secure` (unless `cookies.secure = false`) and
//! `SameSite=Strict`. Cookies are parsed and built by the `cookie` crate (through
//! `axum-extra`'s `CookieJar`).
//!
//! A request authenticated by the refresh cookie must prove it comes from the app: its
//! `X-CSRF-Token` header equals the `keygate_csrf` cookie, that token is the one bound to the
//! cookie's session ([`crate::auth::Auth::csrf_token`], an HMAC of the session id under a key
//! of the installation, so a cookie planted from a sibling subdomain with a header to match
//! is still refused), and an `Origin` header, when sent, is the issuer's origin or one of
//! `cors.allowed_origins`. Otherwise 403 `csrf_failed`, before anything changes.

use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use super::AppState;
use super::error::ApiError;
use crate::config::{Config, CookiesConfig};
use crate::domain::SessionId;
use crate::token::RefreshToken;

/// The refresh token's cookie.
pub(crate) const REFRESH_COOKIE: &str = "keygate_refresh";
/// The CSRF token's cookie (readable by the app's script, which echoes it in the header).
pub(crate) const CSRF_COOKIE: &str = "keygate_csrf";
/// The header carrying the CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

fn cookie(
    config: &CookiesConfig,
    name: &'static str,
    value: String,
    path: &'static str,
    http_only: bool,
    max_age_seconds: i64,
) -> Cookie<'static> {
    let mut c = Cookie::build((name, value))
        .path(path)
        .http_only(http_only)
        .secure(config.secure)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::seconds(max_age_seconds.max(0)))
        .build();
    if let Some(domain) = &config.domain {
        c.set_domain(domain.clone());
    }
    c
}

/// `jar` with the session's two cookies set: the refresh token for `max_age_seconds` (its
/// remaining life) and the session's CSRF token for as long.
pub(crate) fn set_session_cookies(
    jar: CookieJar,
    state: &AppState,
    refresh: &RefreshToken,
    max_age_seconds: i64,
) -> CookieJar {
    let config = &state.auth.config().cookies;
    let csrf = state.auth.csrf_token(refresh.session_id());
    jar.add(cookie(
        config,
        REFRESH_COOKIE,
        refresh.expose(),
        "/auth",
        true,
        max_age_seconds,
    ))
    .add(cookie(
        config,
        CSRF_COOKIE,
        csrf,
        "/",
        false,
        max_age_seconds,
    ))
}

/// `jar` with both cookies cleared (`Max-Age=0`, the same attributes, so the browser matches
/// and drops them).
pub(crate) fn clear_session_cookies(jar: CookieJar, state: &AppState) -> CookieJar {
    let config = &state.auth.config().cookies;
    jar.add(cookie(
        config,
        REFRESH_COOKIE,
        String::new(),
        "/auth",
        true,
        0,
    ))
    .add(cookie(config, CSRF_COOKIE, String::new(), "/", false, 0))
}

/// The refresh cookie's token when the request carries one, after the CSRF checks (module
/// documentation); `Ok(None)` without a refresh cookie.
pub(crate) fn cookie_refresh_token(
    state: &AppState,
    headers: &HeaderMap,
    jar: &CookieJar,
) -> Result<Option<String>, ApiError> {
    let Some(refresh) = jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned()) else {
        return Ok(None);
    };
    let config = state.auth.config();
    if let Some(origin) = headers.get(axum::http::header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origin_allowed(config, o))
    {
        return Err(ApiError::CsrfFailed);
    }
    let header = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::CsrfFailed)?;
    let cookie = jar.get(CSRF_COOKIE).ok_or(ApiError::CsrfFailed)?;
    // Both are the attacker's to choose when a cookie can be planted: equal is not enough,
    // the token must also be the one bound to the session the refresh cookie names.
    let equal = aws_lc_rs::constant_time::verify_slices_are_equal(
        header.as_bytes(),
        cookie.value().as_bytes(),
    )
    .is_ok();
    let session = RefreshToken::parse(&refresh).map(|t| t.session_id());
    if !equal || !session.is_some_and(|s: SessionId| state.auth.csrf_matches(s, header)) {
        return Err(ApiError::CsrfFailed);
    }
    Ok(Some(refresh))
}

/// Whether `origin` may send cookie-authenticated requests: the issuer's own origin, or one
/// of `cors.allowed_origins`.
pub(crate) fn origin_allowed(config: &Config, origin: &str) -> bool {
    let Some(origin) = crate::config::origin(origin) else {
        return false;
    };
    url::Url::parse(&config.issuer).is_ok_and(|u| u.origin().ascii_serialization() == origin)
        || config.cors.allowed_origins.contains(&origin)
}
