//! The error model of API.md: one closed enum whose variants are exactly the table's rows.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::{AuthError, TokenProblem};

/// Every error a client can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400 `bad_request`: malformed JSON or JSON of the wrong shape.
    BadRequest(&'static str),
    /// 401 `invalid_credentials`.
    InvalidCredentials,
    /// 401 `invalid_token`, with the reason for `WWW-Authenticate`.
    InvalidToken(TokenProblem),
    /// 401 `invalid_refresh_token`.
    InvalidRefreshToken,
    /// 403 `account_disabled`.
    AccountDisabled,
    /// 403 `forbidden`.
    Forbidden(&'static str),
    /// 403 `csrf_failed`.
    CsrfFailed,
    /// 404 `not_found`.
    NotFound,
    /// 405 `method_not_allowed` (the router adds the `Allow` header).
    MethodNotAllowed,
    /// 409 `email_taken`.
    EmailTaken,
    /// 409 `username_taken`.
    UsernameTaken,
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType,
    /// 422 `validation_failed` with the `fields` map.
    ValidationFailed(BTreeMap<String, String>),
    /// 429 `rate_limited`, `Retry-After` seconds.
    RateLimited(u64),
    /// 431 `headers_too_large`.
    HeadersTooLarge,
    /// 500 `internal`, with the error id that is also in the log.
    Internal(String),
    /// 503 `unavailable`, `Retry-After` seconds.
    Unavailable(u64),
    /// 400 `invalid_code`: a wrong, used, superseded or expired code or link token.
    InvalidCode,
    /// 403 `mfa_required`, with the `mfa_token` that `/auth/mfa/verify` takes.
    MfaRequired {
        /// The challenge's token.
        mfa_token: String,
        /// Its lifetime in seconds.
        expires_in: i64,
    },
    /// 403 `email_not_verified`.
    EmailNotVerified,
    /// 503 `unavailable`: a mail endpoint, and `email.smtp_url` is not set (no `Retry-After`:
    /// retrying will not help).
    EmailNotConfigured,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidCode => StatusCode::BAD_REQUEST,
            ApiError::MfaRequired { .. } | ApiError::EmailNotVerified => StatusCode::FORBIDDEN,
            ApiError::EmailNotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidCredentials
            | ApiError::InvalidToken(_)
            | ApiError::InvalidRefreshToken => StatusCode::UNAUTHORIZED,
            ApiError::AccountDisabled | ApiError::Forbidden(_) | ApiError::CsrfFailed => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EmailTaken | ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ValidationFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InvalidRefreshToken => "invalid_refresh_token",
            ApiError::AccountDisabled => "account_disabled",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::CsrfFailed => "csrf_failed",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::EmailTaken => "email_taken",
            ApiError::UsernameTaken => "username_taken",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::ValidationFailed(_) => "validation_failed",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) | ApiError::EmailNotConfigured => "unavailable",
            ApiError::InvalidCode => "invalid_code",
            ApiError::MfaRequired { .. } => "mfa_required",
            ApiError::EmailNotVerified => "email_not_verified",
        }
    }

    /// The human message. Never built from a library error's text.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(why) => (*why).to_owned(),
            ApiError::InvalidCredentials => "Incorrect email or password".to_owned(),
            ApiError::InvalidToken(TokenProblem::Missing) => "Missing bearer token".to_owned(),
            ApiError::InvalidToken(TokenProblem::Expired) => "token expired".to_owned(),
            ApiError::InvalidToken(TokenProblem::Invalid) => "invalid token".to_owned(),
            ApiError::InvalidRefreshToken => "Invalid or expired refresh token".to_owned(),
            ApiError::AccountDisabled => "This account is disabled".to_owned(),
            ApiError::Forbidden(why) => (*why).to_owned(),
            ApiError::CsrfFailed => "Missing or invalid CSRF token".to_owned(),
            ApiError::NotFound => "Not found".to_owned(),
            ApiError::MethodNotAllowed => "Method not allowed on this path".to_owned(),
            ApiError::EmailTaken => "This email is already registered".to_owned(),
            ApiError::UsernameTaken => "This username is already taken".to_owned(),
            ApiError::PayloadTooLarge => "Request body too large".to_owned(),
            ApiError::UnsupportedMediaType => {
                "Expected a JSON body (Content-Type: application/json)".to_owned()
            }
            ApiError::ValidationFailed(_) => "Some fields are invalid".to_owned(),
            ApiError::RateLimited(_) => "Too many requests; retry later".to_owned(),
            ApiError::HeadersTooLarge => "Request headers too large".to_owned(),
            ApiError::Internal(id) => format!("Internal error (id {id})"),
            ApiError::Unavailable(_) => "Service temporarily unavailable; retry later".to_owned(),
            ApiError::InvalidCode => "Invalid or expired code".to_owned(),
            ApiError::MfaRequired { .. } => {
                "Two-factor authentication required: send a code with the mfa_token".to_owned()
            }
            ApiError::EmailNotVerified => {
                "Verify your email address first: follow the link we sent".to_owned()
            }
            ApiError::EmailNotConfigured => "Email is not configured on this server".to_owned(),
        }
    }

    /// An internal error: logs `detail` once with a fresh error id and returns the opaque error.
    pub fn internal(detail: &str) -> ApiError {
        let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        tracing::error!(error_id = %id, error = %detail, "internal error");
        ApiError::Internal(id)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.message();
        let fields = match &self {
            ApiError::ValidationFailed(f) => Some(f),
            _ => None,
        };
        let (mfa_token, expires_in) = match &self {
            ApiError::MfaRequired {
                mfa_token,
                expires_in,
            } => (Some(mfa_token.as_str()), Some(*expires_in)),
            _ => (None, None),
        };
        let body = Body {
            error: self.code(),
            message: &message,
            fields,
            mfa_token,
            expires_in,
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::InvalidToken(problem) => {
                let value = match problem {
                    TokenProblem::Missing => r#"Bearer realm="keygate""#.to_owned(),
                    _ => format!(
                        r#"Bearer realm="keygate", error="invalid_token", error_description="{message}""#
                    ),
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::RateLimited(secs) | ApiError::Unavailable(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Validation(fields) => ApiError::ValidationFailed(
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ),
            AuthError::InvalidCredentials => ApiError::InvalidCredentials,
            AuthError::AccountDisabled => ApiError::AccountDisabled,
            AuthError::RegistrationClosed => ApiError::Forbidden("Registration is closed"),
            AuthError::Conflict("username") => ApiError::UsernameTaken,
            AuthError::Conflict(_) => ApiError::EmailTaken,
            AuthError::InvalidToken(p) => ApiError::InvalidToken(p),
            AuthError::InvalidRefreshToken => ApiError::InvalidRefreshToken,
            AuthError::NotFound => ApiError::NotFound,
            AuthError::Forbidden(why) => ApiError::Forbidden(why),
            AuthError::Unavailable => ApiError::Unavailable(1),
            AuthError::RateLimited(retry) => ApiError::RateLimited(retry.seconds()),
            AuthError::Internal(detail) => ApiError::internal(&detail),
            AuthError::InvalidCode => ApiError::InvalidCode,
            AuthError::MfaRequired(c) => ApiError::MfaRequired {
                mfa_token: c.mfa_token,
                expires_in: c.expires_in,
            },
            AuthError::EmailNotVerified => ApiError::EmailNotVerified,
            AuthError::EmailNotConfigured => ApiError::EmailNotConfigured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_variant_has_its_status_code_and_headers() {
        let mut fields = BTreeMap::new();
        fields.insert("email".to_owned(), "not a valid email address".to_owned());
        type Row = (
            ApiError,
            u16,
            &'static str,
            Option<(&'static str, &'static str)>,
        );
        let table: Vec<Row> = vec![
            (ApiError::BadRequest("x"), 400, "bad_request", None),
            (
                ApiError::InvalidCredentials,
                401,
                "invalid_credentials",
                None,
            ),
            (
                ApiError::InvalidToken(TokenProblem::Missing),
                401,
                "invalid_token",
                Some(("www-authenticate", r#"Bearer realm="keygate""#)),
            ),
            (
                ApiError::InvalidToken(TokenProblem::Expired),
                401,
                "invalid_token",
                Some((
                    "www-authenticate",
                    r#"Bearer realm="keygate", error="invalid_token", error_description="token expired""#,
                )),
            ),
            (
                ApiError::InvalidToken(TokenProblem::Invalid),
                401,
                "invalid_token",
                Some((
                    "www-authenticate",
                    r#"Bearer realm="keygate", error="invalid_token", error_description="invalid token""#,
                )),
            ),
            (
                ApiError::InvalidRefreshToken,
                401,
                "invalid_refresh_token",
                None,
            ),
            (ApiError::AccountDisabled, 403, "account_disabled", None),
            (ApiError::Forbidden("x"), 403, "forbidden", None),
            (ApiError::CsrfFailed, 403, "csrf_failed", None),
            (ApiError::NotFound, 404, "not_found", None),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed", None),
            (ApiError::EmailTaken, 409, "email_taken", None),
            (ApiError::UsernameTaken, 409, "username_taken", None),
            (ApiError::PayloadTooLarge, 413, "payload_too_large", None),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
                None,
            ),
            (
                ApiError::ValidationFailed(fields.clone()),
                422,
                "validation_failed",
                None,
            ),
            (
                ApiError::RateLimited(7),
                429,
                "rate_limited",
                Some(("retry-after", "7")),
            ),
            (ApiError::HeadersTooLarge, 431, "headers_too_large", None),
            (ApiError::Internal("abc".into()), 500, "internal", None),
            (
                ApiError::Unavailable(2),
                503,
                "unavailable",
                Some(("retry-after", "2")),
            ),
            (ApiError::InvalidCode, 400, "invalid_code", None),
            (
                ApiError::MfaRequired {
                    mfa_token: "t".into(),
                    expires_in: 300,
                },
                403,
                "mfa_required",
                None,
            ),
            (ApiError::EmailNotVerified, 403, "email_not_verified", None),
            (ApiError::EmailNotConfigured, 503, "unavailable", None),
        ];
        for (err, status, code, header) in table {
            let is_validation = matches!(err, ApiError::ValidationFailed(_));
            let r = err.into_response();
            assert_eq!(r.status().as_u16(), status, "{code}");
            if let Some((name, value)) = header {
                assert_eq!(r.headers()[name], value, "{code}");
            } else {
                assert!(r.headers().get("www-authenticate").is_none(), "{code}");
            }
            let b = body(r).await;
            assert_eq!(b["error"], code);
            assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
            if is_validation {
                assert_eq!(b["fields"]["email"], "not a valid email address");
            } else {
                assert!(b.get("fields").is_none(), "{code}");
            }
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        let r = ApiError::internal("connection to db failed: password=hunter2").into_response();
        let b = body(r).await;
        assert!(!b.to_string().contains("hunter2"));
    }
}
