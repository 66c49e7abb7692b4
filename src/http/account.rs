//! `/auth/*` handlers: thin translations between JSON and the `auth` use cases.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::AppState;
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
    refresh_token: String,
    refresh_expires_in: i64,
    session_id: String,
}

fn token_response(pair: TokenPair) -> Response {
    let body = TokenResponse {
        access_token: pair.access_token,
        token_type: "bearer",
        expires_in: pair.expires_in,
        refresh_token: pair.refresh_token.expose(),
        refresh_expires_in: pair.refresh_expires_in,
        session_id: pair.session_id.to_string(),
    };
    let mut r = axum::Json(body).into_response();
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
    Json(body): Json<LoginBody>,
) -> Result<Response> {
    let login = body.email.or(body.username);
    let pair = state.auth.login(login, body.password, client).await?;
    Ok(token_response(pair))
}

#[derive(Debug, Deserialize)]
pub(super) struct RefreshBody {
    refresh_token: Option<String>,
}

pub(super) async fn refresh(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<RefreshBody>,
) -> Result<Response> {
    let Some(token) = body.refresh_token else {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("refresh_token".to_owned(), "is required".to_owned());
        return Err(ApiError::ValidationFailed(fields));
    };
    Ok(token_response(state.auth.refresh(&token, &client).await?))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct LogoutBody {
    /// A string of well-formed JSON: an unknown value is a validation error (422), not a
    /// malformed body.
    scope: Option<String>,
    refresh_token: Option<String>,
}

pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    MaybeBearer(bearer): MaybeBearer,
    Client(client): Client,
    OptionalJson(body): OptionalJson<LogoutBody>,
) -> Result<StatusCode> {
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
    state
        .auth
        .logout(
            scope,
            bearer.as_deref(),
            body.refresh_token.as_deref(),
            &client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
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
