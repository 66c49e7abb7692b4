//! `/admin/*` handlers (role `admin`): thin translations to the admin use cases.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::{SessionView, SessionsView, UserView, present};
use super::error::ApiError;
use super::extract::{Admin, Client, Json};
use super::openapi::ApiErrorBody;
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

/// `limit`: absent is the default; present, it must be a number from 1 to 200 (an empty
/// value is not one: found by Schemathesis, which sends `limit=` for a schema-violating value).
fn limit(raw: Option<&str>) -> Result<Option<u32>> {
    match raw {
        None => Ok(None),
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

/// `GET /admin/users` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersQuery {
    /// Only the account with this email (exact after normalisation).
    email: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of users.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = UsersPage)]
pub(crate) struct UsersPage {
    users: Vec<UserView>,
    /// `null` on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])), params(UsersQuery),
    responses(
        (status = 200, description = "A page of users, oldest first", body = UsersPage),
        (status = 400, description = "`bad_request`: a malformed query string (a parameter given twice, say)", body = ApiErrorBody),
        (status = 422, description = "`validation_failed`: `limit` out of range, or a `cursor` that no page gave", body = ApiErrorBody),
    ))]
pub(super) async fn list_users(
    State(state): State<Arc<AppState>>,
    _: Admin,
    q: std::result::Result<Query<UsersQuery>, QueryRejection>,
) -> Result<axum::Json<UsersPage>> {
    let q = query(q)?;
    let page = state
        .auth
        .list_users(
            q.email.as_deref().filter(|s| !s.is_empty()),
            limit(q.limit.as_deref())?,
            q.cursor.as_deref().filter(|s| !s.is_empty()),
        )
        .await?;
    Ok(axum::Json(UsersPage {
        users: page.items.into_iter().map(UserView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `POST /admin/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct CreateUserBody {
    #[schema(required, nullable = false, format = Email, max_length = 254)]
    email: Option<String>,
    #[schema(required, nullable = false, format = Password, min_length = 8, max_length = 256)]
    password: Option<String>,
    /// At most 100 characters, no control characters.
    #[schema(pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{0,100}$")]
    name: Option<String>,
    username: Option<String>,
    #[serde(default)]
    #[schema(max_items = 32, inline, value_type = Vec<NameDoc>)]
    roles: Vec<String>,
    #[serde(default)]
    #[schema(max_items = 32, inline, value_type = Vec<NameDoc>)]
    permissions: Vec<String>,
}

/// A role or permission name: 1 to 64 of `a-z 0-9 _ - . :`.
#[derive(utoipa::ToSchema)]
#[schema(as = Name, value_type = String, pattern = "^[a-z0-9_.:-]{1,64}$")]
#[allow(dead_code)]
pub(crate) struct NameDoc(String);

#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("bearer" = [])), request_body = CreateUserBody,
    responses(
        (status = 201, description = "The new account", body = UserView),
        (status = 409, description = "`email_taken`, `username_taken`", body = ApiErrorBody),
    ))]
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

#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
pub(super) async fn get_user(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>> {
    Ok(axum::Json(state.auth.get_user(&id).await?.into()))
}

/// `PATCH /admin/users/{id}`: absent fields stay; `is_active: false` ends every session.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct PatchUserBody {
    #[schema(nullable = false, max_items = 32, value_type = Option<Vec<NameDoc>>)]
    roles: Option<Vec<String>>,
    #[schema(nullable = false, max_items = 32, value_type = Option<Vec<NameDoc>>)]
    permissions: Option<Vec<String>>,
    #[schema(nullable = false)]
    is_active: Option<bool>,
    /// At most 100 characters, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{0,100}$")]
    name: Option<Option<String>>,
}

#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])), request_body = PatchUserBody,
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 200, description = "The updated account", body = UserView),
        (status = 403, description = "`forbidden`: an administrator cannot remove their own admin role or disable themselves, and one active administrator always remains", body = ApiErrorBody),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
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

#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 204, description = "Deleted with its sessions"),
        (status = 403, description = "`forbidden`: not oneself, and not the last active administrator", body = ApiErrorBody),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
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

#[utoipa::path(get, path = "/admin/users/{id}/sessions", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 200, description = "The user's live sessions", body = SessionsView),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
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

#[utoipa::path(delete, path = "/admin/users/{id}/sessions", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 204, description = "Every session of the user ended"),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
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

/// API.md's `AuditEvent`: never a token or password.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEvent)]
pub(crate) struct AuditEventView {
    id: String,
    #[schema(format = DateTime)]
    at: String,
    /// `login_succeeded`, `login_failed`, `refresh_succeeded`, `refresh_token_reused`, …
    event: String,
    user_id: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    /// `success` or `failure`.
    outcome: String,
    /// A fixed code.
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

/// `GET /admin/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQueryParams {
    /// Only this user's events.
    user_id: Option<String>,
    /// Only events of this name.
    event: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AuditPage)]
pub(crate) struct AuditPage {
    events: Vec<AuditEventView>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditQueryParams),
    responses(
        (status = 200, description = "A page of audit events, newest first", body = AuditPage),
        (status = 400, description = "`bad_request`: a malformed query string (a parameter given twice, say)", body = ApiErrorBody),
        (status = 422, description = "`validation_failed`: `limit` out of range, or a `cursor` that no page gave", body = ApiErrorBody),
    ))]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SigningKey)]
pub(crate) struct KeyView {
    /// RFC 7638 thumbprint, as in the JWKS.
    kid: String,
    algorithm: String,
    /// `next`, `active`, `retiring`, `retired` or `revoked`.
    state: String,
    /// Whether the private part is sealed under the key-encryption key.
    encrypted: bool,
    #[schema(format = DateTime)]
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

/// Every signing key, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SigningKeys)]
pub(crate) struct KeysView {
    keys: Vec<KeyView>,
}

/// `GET /admin/keys`: every signing key, oldest first (`[]` with HS256).
#[utoipa::path(get, path = "/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Every signing key, oldest first (none with HS256)", body = KeysView)))]
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
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 201, description = "A rotation started: the new next key", body = KeyView),
        (status = 200, description = "A rotation was already under way: its next key", body = KeyView),
        (status = 404, description = "`not_found`: keys come from HS256 secrets or files", body = ApiErrorBody),
    ))]
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
#[utoipa::path(post, path = "/admin/keys/{kid}/revoke", tag = "admin", security(("bearer" = [])),
    params(("kid" = String, Path, description = "A key id (`kid`)")),
    responses(
        (status = 204, description = "Revoked: refused everywhere within one key poll"),
        (status = 404, description = "`not_found`: no such key in use", body = ApiErrorBody),
    ))]
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
