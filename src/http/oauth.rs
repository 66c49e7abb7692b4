//! The OAuth 2.0 surface: `POST /oauth/token` (RFC 6749: password, refresh_token and
//! client_credentials grants), `POST /oauth/revoke` (RFC 7009), `POST /oauth/introspect`
//! (RFC 7662, for `oauth.clients` only), and discovery (RFC 8414,
//! served at both `/.well-known/oauth-authorization-server` and
//! `/.well-known/openid-configuration`).
//!
//! Requests are form-encoded; errors are RFC 6749 section 5.2's `{"error",
//! "error_description"}` ([`OAuthError`]), not API.md's shape. A client authenticates with
//! HTTP Basic or `client_id` + `client_secret` in the body (section 2.3.1), never both; the
//! password and refresh-token grants are open to public clients, so client authentication is
//! optional there, but a client that tries and fails gets 401 `invalid_client`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Serialize;

use super::AppState;
use super::extract::Client;
use crate::auth::AuthError;
use crate::config::OAuthClient;
use crate::domain::ClientInfo;
use crate::limits::Action;

/// The OAuth routes, merged into [`super::router`].
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/revocations", get(revocations))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/.well-known/openid-configuration", get(discovery_oidc))
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
    /// `mfa_required`: the challenge (API.md gives the password grant the same answer as
    /// `/auth/login`).
    mfa: Option<crate::auth::MfaChallenge>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
            retry_after: None,
            mfa: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }

    fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// 429 or 503 with `Retry-After` (RFC 6749 has no code for these; its
    /// `temporarily_unavailable` is the closest, with the HTTP status telling which).
    fn wait(status: StatusCode, seconds: u64, description: &str) -> Self {
        OAuthError {
            retry_after: Some(seconds),
            ..Self::new(status, "temporarily_unavailable", description)
        }
    }
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Validation(fields) => {
                let text = fields
                    .iter()
                    .map(|(k, v)| {
                        let k = if *k == "email" { "username" } else { k };
                        format!("{k} {v}")
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                OAuthError::invalid_request(text)
            }
            AuthError::InvalidCredentials => {
                OAuthError::invalid_grant("incorrect username or password")
            }
            AuthError::AccountDisabled => OAuthError::invalid_grant("the account is disabled"),
            AuthError::EmailNotVerified => {
                OAuthError::invalid_grant("email_not_verified: the email address is not verified")
            }
            AuthError::MfaRequired(challenge) => OAuthError {
                mfa: Some(challenge),
                ..OAuthError::new(
                    StatusCode::FORBIDDEN,
                    "mfa_required",
                    "two-factor authentication required: send a code with the mfa_token to \
                     POST /auth/mfa/verify",
                )
            },
            AuthError::InvalidRefreshToken => {
                OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
            }
            AuthError::RateLimited(retry) => OAuthError::wait(
                StatusCode::TOO_MANY_REQUESTS,
                retry.seconds(),
                "too many requests; retry later",
            ),
            AuthError::Unavailable => OAuthError::wait(
                StatusCode::SERVICE_UNAVAILABLE,
                1,
                "service temporarily unavailable; retry later",
            ),
            other => {
                let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
                tracing::error!(error_id = %id, error = %other, "internal error");
                OAuthError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    format!("internal error (id {id})"),
                )
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
}

/// RFC 6749 section 5.1: token responses and their errors are never cached.
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            error_description: &self.description,
            message: self.mfa.as_ref().map(|_| self.description.as_str()),
            mfa_token: self.mfa.as_ref().map(|m| m.mfa_token.as_str()),
            expires_in: self.mfa.as_ref().map(|m| m.expires_in),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keygate\", charset=\"UTF-8\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        no_store(r)
    }
}

/// A form-encoded body (`application/x-www-form-urlencoded`), each parameter at most once
/// (RFC 6749 section 3.2).
pub(crate) struct Form(BTreeMap<String, String>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter: present and not empty.
    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = OAuthError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, OAuthError> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    OAuthError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request",
                        "the request body is too large",
                    )
                } else {
                    OAuthError::invalid_request("could not read the request body")
                }
            })?;
        let mut params = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "{k} appears more than once"
                )));
            }
        }
        Ok(Form(params))
    }
}

/// The client's credentials as presented: HTTP Basic (each half form-decoded, RFC 6749
/// section 2.3.1) or the body's `client_id` + `client_secret`. `Ok(None)` when the request
/// does not authenticate a client (a public client may still name itself by `client_id`).
fn presented_client(
    headers: &HeaderMap,
    form: &Form,
) -> Result<Option<(String, String)>, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
            match value.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(rest.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(OAuthError::invalid_client)?;
                    let (id, secret) = decoded
                        .split_once(':')
                        .ok_or_else(OAuthError::invalid_client)?;
                    let decode = |s: &str| {
                        url::form_urlencoded::parse(format!("x={s}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default()
                    };
                    Some((decode(id), decode(secret)))
                }
                // Another scheme (a bearer token, say) does not authenticate a client here.
                _ => None,
            }
        }
    };
    match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not both",
        )),
        (Some(basic), _, None) => Ok(Some(basic)),
        (None, Some(id), Some(secret)) => Ok(Some((id.to_owned(), secret.to_owned()))),
        (None, None, Some(_)) => Err(OAuthError::invalid_request(
            "client_secret without client_id",
        )),
        (None, _, None) => Ok(None),
    }
}

/// The authenticated client, `None` for a request that authenticates none, and 401
/// `invalid_client` for failed authentication — or for a configured (confidential) client
/// that names itself by `client_id` without its secret.
async fn client<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    form: &Form,
    from: &ClientInfo,
) -> Result<Option<&'a OAuthClient>, OAuthError> {
    match presented_client(headers, form)? {
        Some((id, secret)) => state
            .auth
            .authenticate_client(&id, &secret, from)
            .await?
            .map(Some)
            .ok_or_else(OAuthError::invalid_client),
        None => match form.get("client_id") {
            Some(id) if state.auth.config().oauth.client(id).is_some() => {
                Err(OAuthError::invalid_client())
            }
            _ => Ok(None),
        },
    }
}

/// RFC 6749 section 5.1's token response, in the shape of API.md's token response (the same
/// fields as `/auth/login`'s, plus the echoed `scope`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = OAuthTokenResponse)]
pub(crate) struct TokenBody {
    access_token: String,
    /// `bearer` (RFC 6749 compares it case-insensitively).
    #[schema(value_type = String, pattern = "^bearer$")]
    token_type: &'static str,
    expires_in: i64,
    /// Not with `client_credentials`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// Seconds until the refresh token expires (not with `client_credentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_expires_in: Option<i64>,
    /// The session the tokens belong to (not with `client_credentials`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = "uuid")]
    session_id: Option<String>,
    /// The requested scope, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    scope: Option<String>,
}

/// `POST /oauth/token`'s form, by grant. A confidential client authenticates by HTTP Basic or
/// by `client_id` + `client_secret` in the form (never both).
#[derive(utoipa::ToSchema)]
#[serde(tag = "grant_type", rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum TokenForm {
    /// The email or username and the password (RFC 6749 section 4.3).
    Password {
        #[schema(min_length = 1)]
        username: String,
        #[schema(min_length = 1, max_length = 256)]
        password: String,
        /// Echoed in the response.
        #[schema(nullable = false)]
        scope: Option<String>,
    },
    /// A refresh token, rotated as at `/auth/refresh` (RFC 6749 section 6).
    RefreshToken {
        #[schema(min_length = 1)]
        refresh_token: String,
        #[schema(nullable = false)]
        scope: Option<String>,
    },
    /// A confidential client's own token (`sub` = the client).
    ClientCredentials {
        #[schema(nullable = false)]
        scope: Option<String>,
    },
}

/// `POST /oauth/revoke`'s and `POST /oauth/introspect`'s form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct TokenHintForm {
    #[schema(min_length = 1)]
    token: String,
    /// `access_token` or `refresh_token`; a hint only.
    #[schema(nullable = false)]
    token_type_hint: Option<String>,
}

#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses(
        (status = 200, description = "Tokens (`Cache-Control: no-store`)", body = TokenBody),
        (status = 400, description = "`invalid_request`, `invalid_grant` (wrong password, unknown or reused refresh token, disabled account), `unauthorized_client`, `unsupported_grant_type`", body = super::openapi::OAuthErrorBody),
    ))]
async fn token(
    State(state): State<Arc<AppState>>,
    Client(info): Client,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, OAuthError> {
    state.auth.limit(Action::Token, &info).await?;
    let client = client(&state, &headers, &form, &info).await?;
    // Scopes are not used by Keygate: a requested scope is granted as asked (echoed).
    let scope = form
        .get("scope")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let body = match form.get("grant_type") {
        None | Some("") => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("password") => {
            let username = form.required("username")?;
            let password = form.required("password")?;
            let pair = state
                .auth
                .login(Some(username.to_owned()), Some(password.to_owned()), info)
                .await?;
            TokenBody {
                access_token: pair.access_token,
                token_type: "bearer",
                expires_in: pair.expires_in,
                refresh_token: Some(pair.refresh_token.expose()),
                refresh_expires_in: Some(pair.refresh_expires_in),
                session_id: Some(pair.session_id.to_string()),
                scope,
            }
        }
        Some("refresh_token") => {
            let presented = form.required("refresh_token")?;
            let pair = state.auth.refresh(presented, &info).await?;
            TokenBody {
                access_token: pair.access_token,
                token_type: "bearer",
                expires_in: pair.expires_in,
                refresh_token: Some(pair.refresh_token.expose()),
                refresh_expires_in: Some(pair.refresh_expires_in),
                session_id: Some(pair.session_id.to_string()),
                scope,
            }
        }
        Some("client_credentials") => {
            let client = client.ok_or_else(OAuthError::invalid_client)?;
            if !client.allows("client_credentials") {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "this client may not use the client_credentials grant",
                ));
            }
            let t = state.auth.client_credentials(client)?;
            TokenBody {
                access_token: t.access_token,
                token_type: "bearer",
                expires_in: t.expires_in,
                refresh_token: None,
                refresh_expires_in: None,
                session_id: None,
                scope,
            }
        }
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password, refresh_token or client_credentials",
            ));
        }
    };
    Ok(no_store(axum::Json(body).into_response()))
}

/// RFC 7009: 200 with an empty body whether or not the token was known (section 2.2).
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenHintForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 200, description = "Revoked, or nothing to revoke (RFC 7009: always 200)")))]
async fn revoke(
    State(state): State<Arc<AppState>>,
    Client(info): Client,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, OAuthError> {
    state.auth.limit(Action::Token, &info).await?;
    client(&state, &headers, &form, &info).await?;
    let token = form.required("token")?;
    // `token_type_hint` (any value, RFC 7009 section 2.1) does not change the outcome:
    // refresh and access tokens cannot be mistaken for each other.
    state.auth.revoke_token(token, &info).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// RFC 7662's answer, as the document shows it ([`IntrospectionBody`] writes it).
#[derive(utoipa::ToSchema)]
#[schema(as = Introspection, example = json!({"active": true, "sub": "0190b6e2-8d4c-7a8e-9f3a-1c2d3e4f5a6b", "sid": "0190b6e2-9a1b-7c2d-8e3f-4a5b6c7d8e9f", "exp": 1767225600, "iat": 1767224700, "iss": "https://auth.example.com", "aud": "keygate", "jti": "0190b6e2-9a1b-7c2d-8e3f-000000000001", "roles": [], "permissions": [], "token_type": "access_token", "username": "ada@example.com"}))]
#[allow(dead_code)]
pub(crate) struct Introspection {
    /// `false` for anything but a live token, with no other field.
    active: bool,
    #[schema(nullable = false)]
    sub: Option<String>,
    #[schema(nullable = false)]
    sid: Option<String>,
    #[schema(nullable = false)]
    exp: Option<i64>,
    #[schema(nullable = false)]
    iat: Option<i64>,
    #[schema(nullable = false)]
    iss: Option<String>,
    /// A string, or a list of them.
    #[schema(value_type = Option<Object>, nullable = false)]
    aud: Option<String>,
    #[schema(nullable = false)]
    jti: Option<String>,
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    #[schema(nullable = false)]
    permissions: Option<Vec<String>>,
    /// `access_token` or `refresh_token`.
    #[schema(nullable = false)]
    token_type: Option<String>,
    /// For a `client_credentials` token.
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// The user's email.
    #[schema(nullable = false)]
    username: Option<String>,
}

#[derive(Serialize)]
struct IntrospectionBody<'a> {
    active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    live: Option<LiveToken<'a>>,
}

#[derive(Serialize)]
struct LiveToken<'a> {
    sub: &'a str,
    sid: &'a str,
    exp: i64,
    iat: i64,
    iss: &'a str,
    aud: &'a keygate_verify::Audience,
    jti: &'a str,
    roles: &'a [String],
    permissions: &'a [String],
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

/// RFC 7662, for authenticated `oauth.clients` only: `{"active": true, …}` for a live access
/// or refresh token, and just `{"active": false}` for anything else.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenHintForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses((status = 200, description = "RFC 7662 (`Cache-Control: no-store`)", body = Introspection)))]
async fn introspect(
    State(state): State<Arc<AppState>>,
    Client(info): Client,
    headers: HeaderMap,
    form: Form,
) -> Result<Response, OAuthError> {
    let Some(client) = client(&state, &headers, &form, &info).await? else {
        return Err(OAuthError::invalid_client());
    };
    let token = form.required("token")?;
    let found = state.auth.introspect(token).await?;
    tracing::debug!(client_id = %client.id, active = found.is_some(), "introspection");
    let body = IntrospectionBody {
        active: found.is_some(),
        live: found.as_ref().map(|t| LiveToken {
            sub: &t.claims.sub,
            sid: &t.claims.sid,
            exp: t.claims.exp,
            iat: t.claims.iat,
            iss: &t.claims.iss,
            aud: &t.claims.aud,
            jti: &t.claims.jti,
            roles: &t.claims.roles,
            permissions: &t.claims.permissions,
            token_type: t.token_type,
            client_id: t.claims.client_id.as_deref(),
            username: t.username.as_deref(),
        }),
    };
    Ok(no_store(axum::Json(body).into_response()))
}

/// Longest long poll of the revocation feed.
const MAX_FEED_WAIT: u64 = 30;

/// A page of the revocation feed.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Revocations)]
pub(crate) struct RevocationsBody {
    /// `sid`s of sessions that ended (possibly repeated from an earlier answer).
    revoked: Vec<String>,
    /// Pass it as `since` next time.
    cursor: String,
}

/// The revocation feed for resource servers (`oauth.clients`, HTTP Basic):
/// `GET /oauth/revocations?since=<cursor>&wait=<seconds>` answers the `sid`s of sessions that
/// ended after the cursor (all retained ones without it) and the next cursor, waiting up to
/// `wait` seconds (at most 30) for one when there is none.
#[utoipa::path(get, path = "/oauth/revocations", tag = "oauth",
    security(("client_basic" = [])),
    params(
        ("since" = Option<String>, Query, description = "The `cursor` of the previous answer; all retained revocations without it"),
        ("wait" = Option<u32>, Query, description = "Seconds to wait for a revocation when there is none: 0 to 30, and never past the request timeout", minimum = 0, maximum = 30),
    ),
    responses((status = 200, description = "The `sid`s of sessions ended after the cursor, and the next cursor", body = RevocationsBody)))]
async fn revocations(
    State(state): State<Arc<AppState>>,
    Client(info): Client,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, OAuthError> {
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "{k} appears more than once"
            )));
        }
    }
    let query = Form(params);
    if client(&state, &headers, &Form(BTreeMap::new()), &info)
        .await?
        .is_none()
    {
        return Err(OAuthError::invalid_client());
    }
    let cursor = match query.get("since").filter(|s| !s.is_empty()) {
        None => crate::auth::FeedCursor::default(),
        Some(text) => crate::auth::FeedCursor::parse(text)
            .ok_or_else(|| OAuthError::invalid_request("since is not a cursor of this feed"))?,
    };
    let wait = match query.get("wait").filter(|s| !s.is_empty()) {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_FEED_WAIT)
            .ok_or_else(|| {
                OAuthError::invalid_request("wait must be a whole number of seconds from 0 to 30")
            })?,
    };
    // Within the request timeout, whatever was asked.
    let limit = state
        .auth
        .config()
        .request_timeout
        .saturating_sub(std::time::Duration::from_secs(1));
    let wait = std::time::Duration::from_secs(wait).min(limit);
    // A long poll ends early when the node begins to shut down (what has arrived by then is
    // answered), so that it never holds up a graceful shutdown.
    let wait = if state.is_draining() {
        std::time::Duration::ZERO
    } else {
        wait
    };
    let feed = tokio::select! {
        feed = state.auth.revocations(cursor, wait) => feed,
        () = state.drained() => state.auth.revocations(cursor, std::time::Duration::ZERO).await,
    }?;
    let body = RevocationsBody {
        revoked: feed.sessions.iter().map(ToString::to_string).collect(),
        cursor: feed.cursor.to_string(),
    };
    Ok(no_store(axum::Json(body).into_response()))
}

/// How long discovery and the JWKS may be cached.
pub(crate) const METADATA_MAX_AGE: u64 = 300;

/// `body` as cacheable JSON with a strong `ETag` (a digest of the body); `If-None-Match` with
/// that tag gets 304.
pub(crate) fn cacheable_json(headers: &HeaderMap, body: String, max_age: u64) -> Response {
    let digest = crate::config::sha256(body.as_bytes());
    let etag = format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    );
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let cache = format!("public, max-age={max_age}");
    let mut r = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// RFC 8414 metadata, every URL built from `issuer`.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "keys",
    responses(
        (status = 200, description = "RFC 8414 authorization server metadata (cacheable, with an `ETag`)", content_type = "application/json", body = Object),
        (status = 304, description = "Not modified (`If-None-Match`)"),
    ))]
async fn discovery(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let config = state.auth.config();
    let base = config.issuer.trim_end_matches('/');
    let alg = crate::config::algorithm_name(config.signing.algorithm);
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let body = serde_json::json!({
        "issuer": config.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}/oauth/token"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "access_token_signing_alg_values_supported": [alg],
        "id_token_signing_alg_values_supported": [alg],
        "subject_types_supported": ["public"],
        "scopes_supported": [],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "jti", "sid", "roles", "permissions", "client_id"],
    });
    cacheable_json(&headers, body.to_string(), METADATA_MAX_AGE)
}

/// The same metadata at OpenID Connect's discovery path.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "keys",
    responses(
        (status = 200, description = "The same metadata as `/.well-known/oauth-authorization-server`", content_type = "application/json", body = Object),
        (status = 304, description = "Not modified (`If-None-Match`)"),
    ))]
async fn discovery_oidc(state: State<Arc<AppState>>, headers: HeaderMap) -> Response {
    discovery(state, headers).await
}
