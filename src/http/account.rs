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
use crate::auth::{LogoutScope, ProfileChange, Registration, TokenPair};
use crate::clock::rfc3339;
use crate::store::{SessionRecord, UserRecord};

type Result<T> = std::result::Result<T, ApiError>;

/// API.md's `User`.
#[derive(Debug, Serialize)]
pub(crate) struct UserView {
    id: String,
    email: String,
    username: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    permissions: Vec<String>,
    is_active: bool,
    created_at: String,
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
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

/// API.md's `Session`.
#[derive(Debug, Serialize)]
pub(crate) struct SessionView {
    id: String,
    created_at: String,
    last_active_at: String,
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
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

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    /// Absent in the cookie transport: the token is in the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    refresh_expires_in: i64,
    session_id: String,
}

/// How a client receives its refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// In the JSON body.
    Json,
    /// In the `keygate_refresh` cookie, with the CSRF cookie (browsers).
    Cookie,
}

/// `?transport=json|cookie` (default `json`); anything else is 422 `fields.transport`.
fn transport(query: Option<&str>) -> Result<Transport> {
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
fn token_response(
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

#[derive(Debug, Deserialize)]
pub(super) struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
    username: Option<String>,
}

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

#[derive(Debug, Deserialize)]
pub(super) struct LoginBody {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

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

#[derive(Debug, Default, Deserialize)]
pub(super) struct RefreshBody {
    refresh_token: Option<String>,
}

/// The body's refresh token, or else the cookie's (cookie transport, CSRF-checked).
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

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogoutBody {
    /// A string of well-formed JSON: an unknown value is a validation error (422), not a
    /// malformed body.
    scope: Option<String>,
    refresh_token: Option<String>,
}

/// With the body's refresh token, or else the cookie's (CSRF-checked; both cookies cleared).
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

pub(super) async fn me(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
) -> Result<axum::Json<UserView>> {
    Ok(axum::Json(state.auth.me(&who).await?.into()))
}

#[derive(Debug, Deserialize)]
pub(super) struct UpdateMeBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    username: Option<Option<String>>,
}

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

#[derive(Debug, Deserialize)]
pub(super) struct PasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

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

#[derive(Serialize)]
pub(super) struct SessionsView {
    sessions: Vec<SessionView>,
}

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

pub(super) async fn end_session(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.auth.end_session(&who, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
