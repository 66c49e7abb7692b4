//! `/auth/*` handlers: thin translations between JSON and the `auth` use cases.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Deserializer, Serialize};

use super::AppState;
use super::cookies::{clear_session_cookies, cookie_refresh_token, set_session_cookies};
use super::error::ApiError;
use super::extract::{AuthUser, Client, Json, MaybeBearer, OptionalJson};
use super::openapi::ApiErrorBody;
use crate::auth::{LogoutScope, ProfileChange, Registration, TokenPair};
use crate::clock::rfc3339;
use crate::store::{SessionRecord, UserRecord};

type Result<T> = std::result::Result<T, ApiError>;

/// API.md's `User`: never a password hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = User, example = json!({
    "id": "0190b6e2-8d4c-7a8e-9f3a-1c2d3e4f5a6b", "email": "ada@example.com",
    "username": "ada", "name": "Ada Lovelace", "roles": ["admin"], "permissions": [],
    "is_active": true, "email_verified": true, "mfa_enabled": false,
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
}))]
pub(crate) struct UserView {
    #[schema(format = "uuid")]
    id: String,
    /// Normalised: trimmed, NFKC, case-folded, the domain in IDNA ASCII.
    #[schema(format = Email)]
    email: String,
    username: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    permissions: Vec<String>,
    is_active: bool,
    /// Whether the address was verified (a link followed, or an operator's word).
    email_verified: bool,
    /// Whether two-factor authentication is on.
    mfa_enabled: bool,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            id: u.id.to_string(),
            email: u.email,
            username: u.username,
            name: u.name,
            roles: u.roles,
            permissions: u.permissions,
            is_active: u.is_active,
            email_verified: u.email_verified,
            mfa_enabled: u.mfa_enabled,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

/// API.md's `Session`: one login on one device.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Session)]
pub(crate) struct SessionView {
    #[schema(format = "uuid")]
    id: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_active_at: String,
    /// When the current refresh token expires (capped by the session's absolute end).
    #[schema(format = DateTime)]
    expires_at: String,
    user_agent: Option<String>,
    /// May be truncated to its /24 or /48 network by configuration.
    ip: Option<String>,
    /// Whether this is the session of the token that asked.
    current: bool,
}

impl SessionView {
    pub(crate) fn new(s: SessionRecord, current: bool) -> Self {
        SessionView {
            id: s.id.to_string(),
            created_at: rfc3339(s.created_at),
            last_active_at: rfc3339(s.last_active_at),
            // The session ends when its refresh token does (already capped by the absolute end).
            expires_at: rfc3339(s.refresh_expires_at),
            user_agent: s.user_agent,
            ip: s.ip,
            current,
        }
    }
}

/// API.md's token response.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "access_token": "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Ii4uLiJ9.eyJ…",
    "token_type": "bearer", "expires_in": 900,
    "refresh_token": "0190b6e28d4c7a8e9f3a1c2d3e4f5a6b.q3Xk…", "refresh_expires_in": 2592000,
    "session_id": "0190b6e2-8d4c-7a8e-9f3a-1c2d3e4f5a6b"
}))]
pub(crate) struct TokenResponse {
    /// A JWT (`typ: at+jwt`), verifiable with the JWKS.
    access_token: String,
    #[schema(value_type = String, pattern = "^bearer$")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    /// Absent in the cookie transport: the token is in the `keygate_refresh` cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// Seconds until the refresh token expires.
    refresh_expires_in: i64,
    #[schema(format = "uuid")]
    session_id: String,
}

/// How a client receives its refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// In the JSON body.
    Json,
    /// In the `keygate_refresh` cookie, with the CSRF cookie (browsers).
    Cookie,
}

/// `?transport=json|cookie` (default `json`); anything else is 422 `fields.transport`.
pub(super) fn transport(query: Option<&str>) -> Result<Transport> {
    let value = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "transport")
        .map(|(_, v)| v.into_owned());
    match value.as_deref() {
        None | Some("json") => Ok(Transport::Json),
        Some("cookie") => Ok(Transport::Cookie),
        Some(_) => {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("transport".to_owned(), "must be json or cookie".to_owned());
            Err(ApiError::ValidationFailed(fields))
        }
    }
}

/// The token response; in the cookie transport the refresh token goes into the cookies set on
/// `jar` instead of the body.
pub(super) fn token_response(
    pair: TokenPair,
    transport: Transport,
    state: &AppState,
    jar: CookieJar,
) -> Response {
    let (refresh_token, jar) = match transport {
        Transport::Json => (Some(pair.refresh_token.expose()), jar),
        Transport::Cookie => {
            let jar = set_session_cookies(jar, state, &pair.refresh_token, pair.refresh_expires_in);
            (None, jar)
        }
    };
    let body = TokenResponse {
        access_token: pair.access_token,
        token_type: "bearer",
        expires_in: pair.expires_in,
        refresh_token,
        refresh_expires_in: pair.refresh_expires_in,
        session_id: pair.session_id.to_string(),
    };
    let mut r = (jar, axum::Json(body)).into_response();
    // RFC 6749 section 5.1: token responses must not be cached.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `POST /auth/register`. Unknown fields are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple", "name": "Ada Lovelace"}))]
pub(crate) struct RegisterBody {
    #[schema(required, nullable = false, format = Email, max_length = 254)]
    email: Option<String>,
    /// 8 to 256 characters by default (`password.min_length`, `password.max_length`), not
    /// common or guessable (zxcvbn), not the email or username.
    #[schema(required, nullable = false, format = Password, min_length = 8, max_length = 256)]
    password: Option<String>,
    /// At most 100 characters, no control characters.
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{0,100}$")]
    name: Option<String>,
    /// 3–32 of `a-z 0-9 _ - .`, starting with a letter (folded to lower case).
    #[schema(pattern = "^[A-Za-z][A-Za-z0-9_.-]{2,31}$")]
    username: Option<String>,
}

#[utoipa::path(post, path = "/auth/register", tag = "account", request_body = RegisterBody,
    responses(
        (status = 201, description = "The new account", body = UserView),
        (status = 403, description = "`forbidden`: registration is closed", body = ApiErrorBody),
        (status = 409, description = "`email_taken`, `username_taken`", body = ApiErrorBody),
    ))]
pub(super) async fn register(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<RegisterBody>,
) -> Result<(StatusCode, axum::Json<UserView>)> {
    let user = state
        .auth
        .register(
            Registration {
                email: body.email,
                password: body.password,
                name: body.name,
                username: body.username,
            },
            &client,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// `POST /auth/login`: the email or the username (in either field), and the password.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ada@example.com", "password": "correct horse battery staple"}))]
pub(crate) struct LoginBody {
    /// The email, or the username: either field takes either.
    #[schema(required, nullable = false, min_length = 1)]
    email: Option<String>,
    /// Instead of `email`.
    username: Option<String>,
    #[schema(required, nullable = false, format = Password, min_length = 1, max_length = 256)]
    password: Option<String>,
}

#[utoipa::path(post, path = "/auth/login", tag = "account", request_body = LoginBody,
    params(("transport" = Option<String>, Query, description = "`json` (default): the refresh token in the body; `cookie`: in the `keygate_refresh` cookie, with the `keygate_csrf` cookie (browsers)", example = "cookie")),
    responses(
        (status = 200, description = "Logged in: a new session", body = TokenResponse,
            headers(("Set-Cookie" = String, description = "With `transport=cookie`: `keygate_refresh` (HttpOnly) and `keygate_csrf`"))),
        (status = 401, description = "`invalid_credentials`: wrong password or unknown account (indistinguishable)", body = ApiErrorBody),
        (status = 403, description = "After a correct password: `account_disabled`; `email_not_verified` (with `email.require_verified`; a new link is sent); `mfa_required` with `mfa_token` and `expires_in` (two-factor is on: finish at `POST /auth/mfa/verify`)", body = ApiErrorBody),
    ))]
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    Json(body): Json<LoginBody>,
) -> Result<Response> {
    let transport = transport(query.as_deref())?;
    let login = body.email.or(body.username);
    let pair = state.auth.login(login, body.password, client).await?;
    Ok(token_response(pair, transport, &state, jar))
}

/// `POST /auth/refresh`: the refresh token, or none with the cookie transport.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct RefreshBody {
    /// Required unless the request is cookie-authenticated: then the body may be omitted or
    /// `{}`, and the `keygate_refresh` cookie (with `X-CSRF-Token`) is used.
    #[schema(required, nullable = false)]
    refresh_token: Option<String>,
}

/// The body's refresh token, or else the cookie's (cookie transport, CSRF-checked).
#[utoipa::path(post, path = "/auth/refresh", tag = "account", request_body(content = RefreshBody, description = "Optional with the cookie transport"),
    security((), ("refresh_cookie" = [], "csrf_header" = [])),
    responses(
        (status = 200, description = "The rotated refresh token and a new access token (inside the grace window, the same successor again)", body = TokenResponse),
        (status = 401, description = "`invalid_refresh_token`: unknown, expired, revoked, rotated (reuse: the session is revoked) or malformed", body = ApiErrorBody),
        (status = 403, description = "`csrf_failed`: a cookie-authenticated request without the CSRF token or from a foreign origin", body = ApiErrorBody),
    ))]
pub(super) async fn refresh(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    headers: HeaderMap,
    jar: CookieJar,
    OptionalJson(body): OptionalJson<RefreshBody>,
) -> Result<Response> {
    let (token, transport) = match body.refresh_token {
        Some(token) => (token, Transport::Json),
        None => match cookie_refresh_token(&state, &headers, &jar)? {
            Some(token) => (token, Transport::Cookie),
            None => {
                let mut fields = std::collections::BTreeMap::new();
                fields.insert("refresh_token".to_owned(), "is required".to_owned());
                return Err(ApiError::ValidationFailed(fields));
            }
        },
    };
    let pair = state.auth.refresh(&token, &client).await?;
    Ok(token_response(pair, transport, &state, jar))
}

/// `POST /auth/logout`: which sessions end, and optionally the refresh token to end.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct LogoutBody {
    /// `local` (default): this session; `global`: every session of the user; `others`: all
    /// but this one. Another string is 422 (not a malformed body).
    #[schema(value_type = Option<LogoutScopeName>)]
    scope: Option<String>,
    refresh_token: Option<String>,
}

/// The values of `scope`.
#[derive(utoipa::ToSchema)]
#[schema(as = LogoutScope)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogoutScopeName {
    Local,
    Global,
    Others,
}

/// With the body's refresh token, or else the cookie's (CSRF-checked; both cookies cleared).
#[utoipa::path(post, path = "/auth/logout", tag = "account", request_body(content = LogoutBody, description = "Optional"),
    security(("bearer" = []), (), ("refresh_cookie" = [], "csrf_header" = [])),
    responses(
        (status = 204, description = "Ended (idempotent: an already ended session still gets 204)"),
        (status = 401, description = "`invalid_token`, `invalid_refresh_token`: a malformed token, or neither kind", body = ApiErrorBody),
        (status = 403, description = "`csrf_failed`", body = ApiErrorBody),
    ))]
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    MaybeBearer(bearer): MaybeBearer,
    Client(client): Client,
    headers: HeaderMap,
    jar: CookieJar,
    OptionalJson(body): OptionalJson<LogoutBody>,
) -> Result<Response> {
    let scope = match body.scope.as_deref() {
        None | Some("local") => LogoutScope::Local,
        Some("global") => LogoutScope::Global,
        Some("others") => LogoutScope::Others,
        Some(_) => {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert(
                "scope".to_owned(),
                "must be one of local, global, others".to_owned(),
            );
            return Err(ApiError::ValidationFailed(fields));
        }
    };
    let (refresh, from_cookie) = match body.refresh_token {
        Some(token) => (Some(token), false),
        None => match cookie_refresh_token(&state, &headers, &jar)? {
            Some(token) => (Some(token), true),
            None => (None, false),
        },
    };
    state
        .auth
        .logout(scope, bearer.as_deref(), refresh.as_deref(), &client)
        .await?;
    if from_cookie {
        let jar = clear_session_cookies(jar, &state);
        return Ok((jar, StatusCode::NO_CONTENT).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/auth/me", tag = "account", security(("bearer" = [])),
    responses((status = 200, description = "The caller's account", body = UserView)))]
pub(super) async fn me(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
) -> Result<axum::Json<UserView>> {
    Ok(axum::Json(state.auth.me(&who).await?.into()))
}

/// `PATCH /auth/me`: a field that is absent stays; `null` clears it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct UpdateMeBody {
    /// At most 100 characters, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{0,100}$")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z][A-Za-z0-9_.-]{2,31}$")]
    username: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/auth/me", tag = "account", security(("bearer" = [])), request_body = UpdateMeBody,
    responses(
        (status = 200, description = "The updated account", body = UserView),
        (status = 409, description = "`username_taken`", body = ApiErrorBody),
    ))]
pub(super) async fn update_me(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<UpdateMeBody>,
) -> Result<axum::Json<UserView>> {
    let user = state
        .auth
        .update_profile(
            &who,
            ProfileChange {
                name: body.name,
                username: body.username,
            },
            &client,
        )
        .await?;
    Ok(axum::Json(user.into()))
}

/// `POST /auth/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct PasswordBody {
    #[schema(required, nullable = false, format = Password, min_length = 1, max_length = 256)]
    current_password: Option<String>,
    /// The same policy as at registration.
    #[schema(required, nullable = false, format = Password, min_length = 8, max_length = 256)]
    new_password: Option<String>,
}

#[utoipa::path(post, path = "/auth/password", tag = "account", security(("bearer" = [])), request_body = PasswordBody,
    responses((status = 204, description = "Changed; every other session of the user ended")))]
pub(super) async fn change_password(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode> {
    state
        .auth
        .change_password(&who, body.current_password, body.new_password, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A list of sessions, most recently active first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Sessions)]
pub(crate) struct SessionsView {
    pub(crate) sessions: Vec<SessionView>,
}

#[utoipa::path(get, path = "/auth/sessions", tag = "account", security(("bearer" = [])),
    responses((status = 200, description = "The caller's live sessions, most recently active first", body = SessionsView)))]
pub(super) async fn sessions(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
) -> Result<axum::Json<SessionsView>> {
    let sessions = state
        .auth
        .list_sessions(&who)
        .await?
        .into_iter()
        .map(|s| {
            let current = s.id == who.session_id;
            SessionView::new(s, current)
        })
        .collect();
    Ok(axum::Json(SessionsView { sessions }))
}

#[utoipa::path(delete, path = "/auth/sessions/{id}", tag = "account", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id")),
    responses(
        (status = 204, description = "The session ended"),
        (status = 404, description = "`not_found`: no such session of the caller's", body = ApiErrorBody),
    ))]
pub(super) async fn end_session(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.auth.end_session(&who, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
