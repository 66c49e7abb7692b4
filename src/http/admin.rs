//! `/admin/*` handlers (role `admin`): thin translations to the admin use cases.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::{SessionView, UserView, present};
use super::error::ApiError;
use super::extract::{Admin, Client, Json};
use crate::auth::{Actor, KeyError, Registration, UserPatch};
use crate::clock::rfc3339;
use crate::store::AuditRecord;

type Result<T> = std::result::Result<T, ApiError>;

/// Query strings parse into optional strings; `limit` is then read by hand so that a bad value
/// is a 422 on `limit` rather than a framework error.
fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(t)| t)
        .map_err(|_| ApiError::BadRequest("Malformed query string"))
}

fn limit(raw: Option<&str>) -> Result<Option<u32>> {
    match raw {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=200).contains(&n) => Ok(Some(n)),
            _ => {
                let mut fields = std::collections::BTreeMap::new();
                fields.insert(
                    "limit".to_owned(),
                    "must be a whole number from 1 to 200".to_owned(),
                );
                Err(ApiError::ValidationFailed(fields))
            }
        },
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct UsersQuery {
    email: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(super) struct UsersPage {
    users: Vec<UserView>,
    next_cursor: Option<String>,
}

pub(super) async fn list_users(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: std::result::Result<Query<UsersQuery>, QueryRejection>,
) -> Result<axum::Json<UsersPage>> {
    let q = query(q)?;
    let page = state
        .auth
        .list_users(
            q.email.as_deref(),
            limit(q.limit.as_deref())?,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(axum::Json(UsersPage {
        users: page.items.into_iter().map(UserView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateUserBody {
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
    username: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

pub(super) async fn create_user(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Client(client): Client,
    Json(body): Json<CreateUserBody>,
) -> Result<(StatusCode, axum::Json<UserView>)> {
    let user = state
        .auth
        .admin_create_user(
            Registration {
                email: body.email,
                password: body.password,
                name: body.name,
                username: body.username,
            },
            body.roles,
            body.permissions,
            &client,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

pub(super) async fn get_user(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>> {
    Ok(axum::Json(state.auth.get_user(&id).await?.into()))
}

#[derive(Debug, Deserialize)]
pub(super) struct PatchUserBody {
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    is_active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
}

pub(super) async fn patch_user(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
    Path(id): Path<String>,
    Json(body): Json<PatchUserBody>,
) -> Result<axum::Json<UserView>> {
    let patch = UserPatch {
        roles: body.roles,
        permissions: body.permissions,
        is_active: body.is_active,
        name: body.name,
    };
    let user = state
        .auth
        .update_user(Actor::Admin(&who), &id, patch, &client)
        .await?;
    Ok(axum::Json(user.into()))
}

pub(super) async fn delete_user(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .auth
        .delete_user(Actor::Admin(&who), &id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub(super) struct SessionsView {
    sessions: Vec<SessionView>,
}

pub(super) async fn user_sessions(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionsView>> {
    let sessions = state.auth.user_sessions(&id).await?;
    Ok(axum::Json(SessionsView {
        sessions: sessions
            .into_iter()
            .map(|s| SessionView::new(s, false))
            .collect(),
    }))
}

pub(super) async fn end_user_sessions(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state
        .auth
        .end_user_sessions(Actor::Admin(&who), &id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// API.md's `AuditEvent`.
#[derive(Debug, Serialize)]
pub(super) struct AuditEventView {
    id: String,
    at: String,
    event: String,
    user_id: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    outcome: String,
    reason: Option<String>,
}

impl From<AuditRecord> for AuditEventView {
    fn from(e: AuditRecord) -> Self {
        AuditEventView {
            id: e.id,
            at: rfc3339(e.at),
            event: e.event,
            user_id: e.user_id,
            session_id: e.session_id,
            ip: e.ip,
            user_agent: e.user_agent,
            outcome: e.outcome,
            reason: e.reason,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQueryParams {
    user_id: Option<String>,
    event: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub(super) struct AuditPage {
    events: Vec<AuditEventView>,
    next_cursor: Option<String>,
}

pub(super) async fn audit(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: std::result::Result<Query<AuditQueryParams>, QueryRejection>,
) -> Result<axum::Json<AuditPage>> {
    let q = query(q)?;
    let page = state
        .auth
        .audit_events(
            q.user_id.as_deref().filter(|s| !s.is_empty()),
            q.event.as_deref().filter(|s| !s.is_empty()),
            limit(q.limit.as_deref())?,
            q.cursor.as_deref().filter(|s| !s.is_empty()),
        )
        .await?;
    Ok(axum::Json(AuditPage {
        events: page.items.into_iter().map(AuditEventView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A signing key as `GET /admin/keys` shows it: never a private part.
#[derive(Debug, Serialize)]
pub(super) struct KeyView {
    kid: String,
    algorithm: String,
    state: String,
    encrypted: bool,
    created_at: String,
    activate_at: Option<String>,
    activated_at: Option<String>,
    retiring_at: Option<String>,
    retired_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<crate::store::KeyInfo> for KeyView {
    fn from(k: crate::store::KeyInfo) -> Self {
        KeyView {
            kid: k.kid,
            algorithm: k.algorithm,
            state: k.state,
            encrypted: k.encrypted,
            created_at: rfc3339(k.created_at),
            activate_at: k.activate_at.map(rfc3339),
            activated_at: k.activated_at.map(rfc3339),
            retiring_at: k.retiring_at.map(rfc3339),
            retired_at: k.retired_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Hs256 | KeyError::FromFiles => ApiError::NotFound,
            KeyError::NotInUse(_) => ApiError::NotFound,
            KeyError::Store(e) => crate::auth::AuthError::from(e).into(),
            KeyError::Startup(e) => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Serialize)]
pub(super) struct KeysView {
    keys: Vec<KeyView>,
}

/// `GET /admin/keys`: every signing key, oldest first (`[]` with HS256).
pub(super) async fn list_keys(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> Result<axum::Json<KeysView>> {
    let keys = state.auth.list_keys().await?;
    Ok(axum::Json(KeysView {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// `POST /admin/keys/rotate`: 201 with the new next key, or 200 with the next key of a
/// rotation already under way; 404 with HS256 (no stored keys).
pub(super) async fn rotate_keys(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
) -> Result<(StatusCode, axum::Json<KeyView>)> {
    let (key, started) = state.auth.rotate_keys(Some(who.user_id), &client).await?;
    let status = if started {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(key.into())))
}

/// `POST /admin/keys/{kid}/revoke`: 204; 404 for a key that is not in use.
pub(super) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
    Path(kid): Path<String>,
) -> Result<StatusCode> {
    state
        .auth
        .revoke_key(&kid, Some(who.user_id), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
