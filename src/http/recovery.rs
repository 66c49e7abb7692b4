//! Email verification, password reset, email change and two-factor handlers (API.md § Email
//! verification, password reset and two-factor authentication).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::CookieJar;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::account::{TokenResponse, UserView, token_response, transport};
use super::error::ApiError;
use super::extract::{Admin, AuthUser, Client, Json};
use super::openapi::ApiErrorBody;
use crate::auth::{Actor, SecondFactor};

type Result<T> = std::result::Result<T, ApiError>;

/// A link's token (from `?token=` of the link in the mail).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"token": "0192c0de5a1e7c3b9d2f4a6b8c0d1e2f.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c"}))]
pub(crate) struct LinkTokenBody {
    #[schema(required, nullable = false, max_length = 128)]
    token: Option<String>,
}

/// The answer of the requests that queue mail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Accepted, example = json!({"message": "If an account uses this address, a link is on its way"}))]
pub(crate) struct AcceptedView {
    message: &'static str,
}

fn accepted(message: &'static str) -> (StatusCode, axum::Json<AcceptedView>) {
    (StatusCode::ACCEPTED, axum::Json(AcceptedView { message }))
}

#[utoipa::path(post, path = "/auth/email/verify", tag = "recovery", request_body = LinkTokenBody,
    responses(
        (status = 204, description = "The address is verified"),
        (status = 400, description = "`invalid_code`: a wrong, used, superseded or expired link", body = ApiErrorBody),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn verify_email(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<LinkTokenBody>,
) -> Result<StatusCode> {
    state.auth.verify_email(body.token, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/auth/email/verify/resend", tag = "recovery", security(("bearer" = [])),
    responses(
        (status = 202, description = "A new link is on its way (older ones stop working); nothing is sent to a verified address", body = AcceptedView),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn resend_verification(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
) -> Result<(StatusCode, axum::Json<AcceptedView>)> {
    state.auth.resend_verification(&who, &client).await?;
    Ok(accepted("A new verification link is on its way"))
}

/// `POST /auth/password/forgot`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub(crate) struct ForgotBody {
    #[schema(required, nullable = false, format = Email, max_length = 254)]
    email: Option<String>,
}

#[utoipa::path(post, path = "/auth/password/forgot", tag = "recovery", request_body = ForgotBody,
    responses(
        (status = 202, description = "The same answer (and time) whether an account uses the address or not", body = AcceptedView),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn forgot_password(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<ForgotBody>,
) -> Result<(StatusCode, axum::Json<AcceptedView>)> {
    state.auth.forgot_password(body.email, &client).await?;
    Ok(accepted(
        "If an account uses this address, a link is on its way",
    ))
}

/// `POST /auth/password/reset`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"token": "0192c0de5a1e7c3b9d2f4a6b8c0d1e2f.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c", "new_password": "a brand new horse battery staple"}))]
pub(crate) struct ResetBody {
    #[schema(required, nullable = false, max_length = 128)]
    token: Option<String>,
    /// The same policy as at registration.
    #[schema(required, nullable = false, format = Password, min_length = 8, max_length = 256)]
    new_password: Option<String>,
}

#[utoipa::path(post, path = "/auth/password/reset", tag = "recovery", request_body = ResetBody,
    responses(
        (status = 204, description = "The password is changed; every session of the user ended; the link and every older one stop working"),
        (status = 400, description = "`invalid_code`: a wrong, used, superseded or expired link", body = ApiErrorBody),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn reset_password(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<ResetBody>,
) -> Result<StatusCode> {
    state
        .auth
        .reset_password_with_link(body.token, body.new_password, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/email/change`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"new_email": "ada@example.org", "password": "correct horse battery staple"}))]
pub(crate) struct ChangeEmailBody {
    #[schema(required, nullable = false, format = Email, max_length = 254)]
    new_email: Option<String>,
    #[schema(required, nullable = false, format = Password, min_length = 1, max_length = 256)]
    password: Option<String>,
}

#[utoipa::path(post, path = "/auth/email/change", tag = "recovery", security(("bearer" = [])), request_body = ChangeEmailBody,
    responses(
        (status = 202, description = "A link to the new address and a notice to the old one are on their way; nothing changes until the link is followed", body = AcceptedView),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn change_email(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<ChangeEmailBody>,
) -> Result<(StatusCode, axum::Json<AcceptedView>)> {
    state
        .auth
        .request_email_change(&who, body.new_email, body.password, &client)
        .await?;
    Ok(accepted(
        "A confirmation link is on its way to the new address",
    ))
}

#[utoipa::path(post, path = "/auth/email/change/confirm", tag = "recovery", request_body = LinkTokenBody,
    responses(
        (status = 200, description = "The account with its new address, verified", body = UserView),
        (status = 400, description = "`invalid_code`: a wrong, used, superseded or expired link", body = ApiErrorBody),
        (status = 409, description = "`email_taken`: the address was taken meanwhile (the link still works)", body = ApiErrorBody),
        (status = 503, description = "`unavailable`: email is not configured", body = ApiErrorBody),
    ))]
pub(super) async fn confirm_email_change(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    Json(body): Json<LinkTokenBody>,
) -> Result<axum::Json<UserView>> {
    let user = state.auth.confirm_email_change(body.token, &client).await?;
    Ok(axum::Json(user.into()))
}

/// `POST /auth/mfa/totp`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"password": "correct horse battery staple"}))]
pub(crate) struct EnrolBody {
    #[schema(required, nullable = false, format = Password, min_length = 1, max_length = 256)]
    password: Option<String>,
}

/// A pending TOTP enrolment: shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TotpEnrolment)]
pub(crate) struct EnrolmentView {
    /// The seed in base32 (to type into an authenticator app).
    secret: String,
    /// `otpauth://totp/…` (SHA-1, 6 digits, 30 s).
    otpauth_uri: String,
    /// The QR code of `otpauth_uri`, an SVG document.
    qr_svg: String,
}

#[utoipa::path(post, path = "/auth/mfa/totp", tag = "mfa", security(("bearer" = [])), request_body = EnrolBody,
    responses(
        (status = 200, description = "A new seed, pending until `/auth/mfa/totp/confirm`", body = EnrolmentView),
        (status = 403, description = "`forbidden`: two-factor is already on", body = ApiErrorBody),
    ))]
pub(super) async fn start_totp(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<EnrolBody>,
) -> Result<Response> {
    let e = state.auth.start_totp(&who, body.password, &client).await?;
    Ok(no_store(axum::Json(EnrolmentView {
        secret: e.secret,
        otpauth_uri: e.otpauth_uri,
        qr_svg: e.qr_svg,
    })))
}

fn no_store(body: impl axum::response::IntoResponse) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// A TOTP code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"code": "123456"}))]
pub(crate) struct CodeBody {
    #[schema(required, nullable = false, pattern = "^[0-9]{6}$")]
    code: Option<String>,
}

/// The recovery codes: shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RecoveryCodes)]
pub(crate) struct RecoveryCodesView {
    /// Ten single-use codes (`xxxx-xxxx-xxxx-xxxx`) for when the authenticator is lost.
    recovery_codes: Vec<String>,
}

#[utoipa::path(post, path = "/auth/mfa/totp/confirm", tag = "mfa", security(("bearer" = [])), request_body = CodeBody,
    responses(
        (status = 200, description = "Two-factor is on; every other session ended", body = RecoveryCodesView),
        (status = 400, description = "`invalid_code`", body = ApiErrorBody),
    ))]
pub(super) async fn confirm_totp(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<CodeBody>,
) -> Result<Response> {
    let codes = state.auth.confirm_totp(&who, body.code, &client).await?;
    Ok(no_store(axum::Json(RecoveryCodesView {
        recovery_codes: codes,
    })))
}

/// `DELETE /auth/mfa/totp`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"password": "correct horse battery staple", "code": "123456"}))]
pub(crate) struct DisableBody {
    #[schema(required, nullable = false, format = Password, min_length = 1, max_length = 256)]
    password: Option<String>,
    /// A current TOTP code, or a recovery code.
    #[schema(required, nullable = false, max_length = 64)]
    code: Option<String>,
}

#[utoipa::path(delete, path = "/auth/mfa/totp", tag = "mfa", security(("bearer" = [])), request_body = DisableBody,
    responses(
        (status = 204, description = "Two-factor is off"),
        (status = 400, description = "`invalid_code`", body = ApiErrorBody),
    ))]
pub(super) async fn disable_totp(
    State(state): State<Arc<AppState>>,
    AuthUser(who): AuthUser,
    Client(client): Client,
    Json(body): Json<DisableBody>,
) -> Result<StatusCode> {
    state
        .auth
        .disable_totp(&who, body.password, body.code, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /auth/mfa/verify`: the `mfa_token` of a `mfa_required` answer and a code or a
/// recovery code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"mfa_token": "0192c0de5a1e7c3b9d2f4a6b8c0d1e2f.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c", "code": "123456"}))]
pub(crate) struct MfaVerifyBody {
    #[schema(required, nullable = false, max_length = 128)]
    mfa_token: Option<String>,
    /// A TOTP code (6 digits)…
    #[schema(pattern = "^[0-9]{6}$")]
    code: Option<String>,
    /// …or a recovery code.
    #[schema(max_length = 64)]
    recovery_code: Option<String>,
}

#[utoipa::path(post, path = "/auth/mfa/verify", tag = "mfa", request_body = MfaVerifyBody,
    params(("transport" = Option<String>, Query, description = "As for `/auth/login`", example = "cookie")),
    responses(
        (status = 200, description = "Logged in: a new session (`amr: [\"pwd\", \"otp\"]`)", body = TokenResponse),
        (status = 400, description = "`invalid_code`: a wrong or used code, or an expired or spent mfa_token (five attempts)", body = ApiErrorBody),
    ))]
pub(super) async fn verify_mfa(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    Json(body): Json<MfaVerifyBody>,
) -> Result<Response> {
    let transport = transport(query.as_deref())?;
    let factor = match (body.code, body.recovery_code) {
        (Some(code), None) => Some(SecondFactor::Code(code)),
        (None, Some(code)) => Some(SecondFactor::RecoveryCode(code)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert(
                "recovery_code".to_owned(),
                "send either code or recovery_code".to_owned(),
            );
            return Err(ApiError::ValidationFailed(fields));
        }
    };
    let pair = state
        .auth
        .verify_mfa(body.mfa_token, factor, client)
        .await?;
    Ok(token_response(pair, transport, &state, jar))
}

#[utoipa::path(delete, path = "/admin/users/{id}/mfa", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id")),
    responses(
        (status = 204, description = "Two-factor is off for the user (idempotent)"),
        (status = 404, description = "`not_found`", body = ApiErrorBody),
    ))]
pub(super) async fn admin_reset_mfa(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let user = state.auth.get_user(&id).await?;
    state
        .auth
        .reset_mfa(Actor::Admin(&who), &user, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
