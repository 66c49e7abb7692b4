//! (feature `axum`) The [`VerifiedToken`] extractor and RFC 6750 answers for resource servers
//! built with axum.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, extract::FromRef, routing::get};
//! use keygate_verify::{BearerError, TokenVerifier, VerifiedToken, Verifier};
//!
//! #[derive(Clone)]
//! struct AppState {
//!     verifier: Arc<dyn TokenVerifier>,
//! }
//!
//! impl FromRef<AppState> for Arc<dyn TokenVerifier> {
//!     fn from_ref(state: &AppState) -> Self {
//!         state.verifier.clone()
//!     }
//! }
//!
//! // 401 with `WWW-Authenticate: Bearer … error="invalid_token"` without a valid token,
//! // 403 with `error="insufficient_scope"` without the permission.
//! async fn invoices(VerifiedToken(claims): VerifiedToken) -> Result<String, BearerError> {
//!     claims.require_permission("invoices:read")?;
//!     Ok(format!("invoices of {}", claims.sub))
//! }
//!
//! let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig",
//!     "kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
//! let verifier = Verifier::from_jwks("EdDSA", jwks, "https://auth.example.com", &["my-api"])
//!     .expect("a valid JWKS");
//! let app: Router = Router::new()
//!     .route("/invoices", get(invoices))
//!     .with_state(AppState { verifier: Arc::new(verifier) });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{Claims, Forbidden, Verifier, VerifyError};

/// A boxed verification, so that verifiers can be shared as `Arc<dyn TokenVerifier>`.
pub type Verification<'a> = Pin<Box<dyn Future<Output = Result<Claims, VerifyError>> + Send + 'a>>;

/// Something that verifies bearer tokens now: a fixed [`Verifier`] (at the system clock), or
/// a `RemoteVerifier` (feature `remote`) that follows a running Keygate.
pub trait TokenVerifier: Send + Sync {
    /// Verifies `token` at the current time.
    fn verify_token<'a>(&'a self, token: &'a str) -> Verification<'a>;
}

impl TokenVerifier for Verifier {
    fn verify_token<'a>(&'a self, token: &'a str) -> Verification<'a> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let result = self.verify(token, now);
        Box::pin(async move { result })
    }
}

#[cfg(feature = "remote")]
impl TokenVerifier for crate::RemoteVerifier {
    fn verify_token<'a>(&'a self, token: &'a str) -> Verification<'a> {
        Box::pin(self.verify(token))
    }
}

/// The claims of the request's verified bearer token. The state must give an
/// `Arc<dyn TokenVerifier>` (`FromRef`); without a valid token the request is answered with
/// [`BearerError`] (401).
#[derive(Clone, Debug)]
pub struct VerifiedToken(pub Claims);

impl<S> FromRequestParts<S> for VerifiedToken
where
    S: Send + Sync,
    Arc<dyn TokenVerifier>: FromRef<S>,
{
    type Rejection = BearerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BearerError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(BearerError::Missing)?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(BearerError::Missing)?;
        let verifier = Arc::<dyn TokenVerifier>::from_ref(state);
        verifier
            .verify_token(token)
            .await
            .map(VerifiedToken)
            .map_err(BearerError::Invalid)
    }
}

/// A refusal in RFC 6750's terms: 401 `invalid_token` (no token, or one that does not verify)
/// or 403 `insufficient_scope` (a valid token without the role or permission), with the
/// `WWW-Authenticate: Bearer` challenge and a JSON body `{"error", "message"}` as Keygate's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No bearer token.
    #[error("a bearer token is required")]
    Missing,
    /// A token that does not verify.
    #[error("invalid token: {0}")]
    Invalid(VerifyError),
    /// A valid token without the required role or permission.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        let (status, challenge, code) = match &self {
            BearerError::Missing => (
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"keygate\"".to_owned(),
                "invalid_token",
            ),
            BearerError::Invalid(e) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer realm=\"keygate\", error=\"invalid_token\", error_description=\"{e}\""
                ),
                "invalid_token",
            ),
            BearerError::Forbidden(f) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"keygate\", error=\"insufficient_scope\", error_description=\"{f}\""
                ),
                "forbidden",
            ),
        };
        let body = serde_json::json!({ "error": code, "message": self.to_string() }).to_string();
        let mut r = (status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

impl IntoResponse for Forbidden {
    fn into_response(self) -> Response {
        BearerError::Forbidden(self).into_response()
    }
}
