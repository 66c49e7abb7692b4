//! The OpenAPI 3.1 document of the whole HTTP API (`GET /openapi.json`), generated from the
//! handlers' `#[utoipa::path]` attributes and the request and response types' derives, and
//! its interactive reference page (`GET /docs`: Swagger UI, embedded in the binary).
//!
//! Handlers declare their success responses and the errors only they give. [`CommonErrors`]
//! adds the errors every operation of a kind shares (a JSON body's 400/413/415/422, a bearer
//! token's 401, an administrator's 403, 429, 431, 500, 503), and gives every error response an
//! example per code it names, taken from [`ApiError`] itself, so the codes and messages in the
//! document are the server's.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ApiError;
use crate::auth::TokenProblem;

/// API.md's error body. Its schema is built from [`ApiError`] itself, so the document's list
/// of codes is the server's.
pub(crate) struct ApiErrorBody;

impl utoipa::PartialSchema for ApiErrorBody {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let mut codes = every_error().iter().map(ApiError::code).collect::<Vec<_>>();
        codes.dedup();
        ObjectBuilder::new()
            .description(Some("API.md's error body"))
            .property(
                "error",
                string()
                    .enum_values(Some(codes))
                    .description(Some("A stable machine code of API.md's table")),
            )
            .required("error")
            .property(
                "message",
                string().description(Some("For humans; may change")),
            )
            .required("message")
            .property(
                "fields",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(string()))
                    .description(Some(
                        "With `validation_failed`: what is wrong with each field",
                    )),
            )
            .property(
                "mfa_token",
                string().description(Some(
                    "With `mfa_required`: the token `POST /auth/mfa/verify` takes",
                )),
            )
            .property(
                "expires_in",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("With `mfa_required`: seconds the mfa_token works")),
            )
            .into()
    }
}

impl ToSchema for ApiErrorBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Error".into()
    }
}

/// One example of every error a client can receive (the `match` makes a new variant of
/// [`ApiError`] fail to compile until it is documented here).
fn every_error() -> Vec<ApiError> {
    let all = vec![
        ApiError::BadRequest("Malformed JSON"),
        ApiError::InvalidCredentials,
        ApiError::InvalidToken(TokenProblem::Expired),
        ApiError::InvalidRefreshToken,
        ApiError::AccountDisabled,
        ApiError::Forbidden("Administrators only"),
        ApiError::CsrfFailed,
        ApiError::NotFound,
        ApiError::MethodNotAllowed,
        ApiError::EmailTaken,
        ApiError::UsernameTaken,
        ApiError::PayloadTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::ValidationFailed(BTreeMap::from([(
            "password".to_owned(),
            "is too common".to_owned(),
        )])),
        ApiError::RateLimited(30),
        ApiError::HeadersTooLarge,
        ApiError::Internal("5f0c2d9a81b3".to_owned()),
        ApiError::Unavailable(1),
        ApiError::EmailNotConfigured,
        ApiError::InvalidCode,
        ApiError::MfaRequired {
            mfa_token:
                "0192c0de5a1e7c3b9d2f4a6b8c0d1e2f.q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c"
                    .to_owned(),
            expires_in: 300,
        },
        ApiError::EmailNotVerified,
    ];
    for e in &all {
        match e {
            ApiError::BadRequest(_)
            | ApiError::InvalidCredentials
            | ApiError::InvalidToken(_)
            | ApiError::InvalidRefreshToken
            | ApiError::AccountDisabled
            | ApiError::Forbidden(_)
            | ApiError::CsrfFailed
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::EmailTaken
            | ApiError::UsernameTaken
            | ApiError::PayloadTooLarge
            | ApiError::UnsupportedMediaType
            | ApiError::ValidationFailed(_)
            | ApiError::RateLimited(_)
            | ApiError::HeadersTooLarge
            | ApiError::Internal(_)
            | ApiError::Unavailable(_)
            | ApiError::EmailNotConfigured
            | ApiError::InvalidCode
            | ApiError::MfaRequired { .. }
            | ApiError::EmailNotVerified => {}
        }
    }
    all
}

/// RFC 6749's error body, for the `/oauth/*` endpoints.
#[derive(ToSchema)]
#[schema(as = OAuthError, example = json!({"error": "invalid_grant", "error_description": "Incorrect email or password"}))]
#[allow(dead_code)]
pub(crate) struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `temporarily_unavailable`, `server_error`.
    error: String,
    error_description: String,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keygate",
        description = "A self-hostable authentication server: logins, short-lived JWT access \
            tokens, rotating refresh tokens with reuse detection, sessions per device, JWKS, \
            and the OAuth 2.0 token, revocation and introspection endpoints.\n\n\
            Errors have the body `{\"error\", \"message\"}` with a stable `error` code \
            (the `/oauth/*` endpoints answer RFC 6749's `{\"error\", \"error_description\"}`). \
            Request bodies are JSON of at most 16 KiB; unknown fields are ignored.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::account::register,
        super::account::login,
        super::account::refresh,
        super::account::logout,
        super::account::me,
        super::account::update_me,
        super::account::change_password,
        super::account::sessions,
        super::account::end_session,
        super::recovery::verify_email,
        super::recovery::resend_verification,
        super::recovery::forgot_password,
        super::recovery::reset_password,
        super::recovery::change_email,
        super::recovery::confirm_email_change,
        super::recovery::start_totp,
        super::recovery::confirm_totp,
        super::recovery::disable_totp,
        super::recovery::verify_mfa,
        super::recovery::admin_reset_mfa,
        super::admin::list_users,
        super::admin::create_user,
        super::admin::get_user,
        super::admin::patch_user,
        super::admin::delete_user,
        super::admin::user_sessions,
        super::admin::end_user_sessions,
        super::admin::audit,
        super::admin::list_keys,
        super::admin::rotate_keys,
        super::admin::revoke_key,
        super::oauth::token,
        super::oauth::revoke,
        super::oauth::introspect,
        super::oauth::revocations,
        super::oauth::discovery,
        super::oauth::discovery_oidc,
        super::jwks,
        super::healthz,
        super::readyz,
        super::metrics,
        super::ui::home,
        super::ui::home_slash,
        super::ui::login,
        super::ui::register,
        super::ui::account,
        super::ui::forgot_password,
        super::ui::reset_password,
        super::ui::verify_email,
        super::ui::confirm_email,
        super::ui::script,
        super::ui::style,
        openapi_json,
        docs_redirect,
        docs,
        docs_file,
    ),
    components(schemas(ApiErrorBody, OAuthErrorBody)),
    modifiers(&SecuritySchemes, &CommonErrors),
    tags(
        (name = "account", description = "Registration, login, refresh, logout and the caller's own account and sessions"),
        (name = "recovery", description = "Email verification, password reset and email change (need `email.smtp_url`)"),
        (name = "mfa", description = "Two-factor authentication (TOTP, recovery codes) and the second step of a login"),
        (name = "admin", description = "Administration (role `admin`)"),
        (name = "oauth", description = "OAuth 2.0 endpoints (form-encoded, RFC 6749 errors)"),
        (name = "keys", description = "Public keys and discovery"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "pages", description = "Hosted pages (HTML) and their assets"),
    ),
)]
pub(crate) struct ApiDoc;

/// The security schemes operations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "bearer",
            bearer("An access token from a token response (`Authorization: Bearer <token>`)"),
        );
        components.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "keygate_refresh",
                "The cookie transport's refresh token (set by `POST /auth/login?transport=cookie`); \
                 requires `X-CSRF-Token`",
            ))),
        );
        components.add_security_scheme(
            "csrf_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The value of the `keygate_csrf` cookie",
            ))),
        );
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "An OAuth client of `oauth.clients`: id and secret, each form-encoded \
                         (RFC 6749 section 2.3.1)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`metrics.token`; not needed from loopback or `metrics.allowed_networks`",
                    ))
                    .build(),
            ),
        );
    }
}

/// Errors shared by operations of a kind, and examples for every error response.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let oauth = path.starts_with("/oauth/");
            let admin = path.starts_with("/admin/");
            let has_params = path.contains('{');
            for op in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
                item.put.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                let json_body = op.request_body.as_ref().is_some_and(
                    |b| matches!(b, RefOr::T(b) if b.content.contains_key("application/json")),
                );
                let bearer = op.security.as_ref().is_some_and(|list| {
                    serde_json::to_value(list)
                        .map(|v| v.to_string().contains("\"bearer\""))
                        .unwrap_or(false)
                });
                if oauth {
                    add_oauth_errors(op);
                    continue;
                }
                // Logout's body is optional: a bearer token or the cookie can say it all.
                if matches!(op.operation_id.as_deref(), Some("logout"))
                    && let Some(RefOr::T(body)) = op.request_body.as_mut()
                {
                    body.required = Some(utoipa::openapi::Required::False);
                }
                if json_body {
                    add(
                        op,
                        400,
                        "bad_request",
                        "Malformed JSON, or JSON of the wrong shape",
                    );
                    add(op, 413, "payload_too_large", "The body is over 16 KiB");
                    add(op, 415, "unsupported_media_type", "The body is not JSON");
                    add(
                        op,
                        422,
                        "validation_failed",
                        "Invalid or missing fields (`fields` says which)",
                    );
                }
                if bearer {
                    add(
                        op,
                        401,
                        "invalid_token",
                        "The bearer token is missing, malformed, expired or of an ended session",
                    );
                }
                if admin {
                    add(op, 403, "forbidden", "The caller is not an administrator");
                }
                if has_params && !path.starts_with("/docs") {
                    add(op, 404, "not_found", "No such resource");
                }
                if json_body || path == "/auth/me" {
                    add(
                        op,
                        429,
                        "rate_limited",
                        "A rate limit was hit; `Retry-After` says when to retry",
                    );
                }
                add(
                    op,
                    431,
                    "headers_too_large",
                    "Request headers over the limit",
                );
                add(
                    op,
                    500,
                    "internal",
                    "A bug; the body carries an error id, never internals",
                );
                if !path.starts_with("/ui/") && !path.starts_with("/docs") && path != "/healthz" {
                    add(
                        op,
                        503,
                        "unavailable",
                        "The database is unreachable or overloaded; `Retry-After` says when to retry",
                    );
                }
                add_examples(op);
            }
        }
    }
}

/// Adds the error response `status` of `op` with `code`, or names `code` in the one the handler
/// declared.
fn add(op: &mut Operation, status: u16, code: &str, why: &str) {
    let listed = format!("`{code}`");
    match op.responses.responses.get_mut(&status.to_string()) {
        Some(RefOr::T(existing)) if !existing.description.contains(&listed) => {
            existing.description = format!("{}; {listed}: {why}", existing.description);
        }
        Some(_) => {}
        None => insert_json_response(op, status, format!("{listed}: {why}"), "Error", None),
    }
}

/// A JSON response of the component schema `schema`.
fn insert_json_response(
    op: &mut Operation,
    status: u16,
    description: String,
    schema: &str,
    example: Option<serde_json::Value>,
) {
    let content = ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            schema,
        ))))
        .example(example)
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    op.responses
        .responses
        .insert(status.to_string(), RefOr::T(response));
}

/// For every error response of `op`, an example of each code its description names.
fn add_examples(op: &mut Operation) {
    let errors = every_error();
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let description = response.description.clone();
        let Some(RefOr::T(content)) = response.content.get_mut("application/json") else {
            continue;
        };
        for e in &errors {
            if !description.contains(&format!("`{}`", e.code())) {
                continue;
            }
            let mut body = serde_json::json!({ "error": e.code(), "message": e.message() });
            if let ApiError::ValidationFailed(fields) = e {
                body["fields"] = serde_json::json!(fields);
            }
            content.examples.insert(
                e.code().to_owned(),
                RefOr::T(ExampleBuilder::new().value(Some(body)).build()),
            );
        }
    }
}

/// The errors every OAuth endpoint may give, in RFC 6749's shape.
fn add_oauth_errors(op: &mut Operation) {
    let cases: [(u16, &str, &str); 5] = [
        (
            400,
            "invalid_request",
            "A parameter is missing, repeated or malformed, or the body is not form-encoded",
        ),
        (
            401,
            "invalid_client",
            "Client authentication failed (`WWW-Authenticate: Basic`)",
        ),
        (413, "invalid_request", "The body is over 16 KiB"),
        (
            429,
            "temporarily_unavailable",
            "A rate limit was hit; `Retry-After` says when to retry",
        ),
        (
            503,
            "temporarily_unavailable",
            "The database is unreachable or overloaded",
        ),
    ];
    for (status, code, why) in cases {
        if !op.responses.responses.contains_key(&status.to_string()) {
            let example = serde_json::json!({ "error": code, "error_description": why });
            insert_json_response(
                op,
                status,
                format!("`{code}`: {why}"),
                "OAuthError",
                Some(example),
            );
        }
    }
    add(
        op,
        431,
        "headers_too_large",
        "Request headers over the limit",
    );
    add(
        op,
        500,
        "internal",
        "A bug; the body carries an error id, never internals",
    );
    add_examples(op);
}

/// The document as JSON, rendered once.
pub(crate) fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.to_json().unwrap_or_else(|_| String::from("{}"))
    })
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        document(),
    )
        .into_response()
}

/// Swagger UI's configuration: the document at `/openapi.json`.
fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                utoipa_swagger_ui::Config::from("/openapi.json")
                    .try_it_out_enabled(true)
                    .display_operation_id(false),
            )
        })
        .clone()
}

/// The page's security headers: its own scripts and styles only (Swagger UI sets inline
/// styles on elements, hence `style-src 'unsafe-inline'`), requests to this origin only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
                        frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn swagger_file(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, swagger_config()) {
        Ok(Some(found)) => {
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, found.content_type)],
                found.bytes.into_owned(),
            )
                .into_response();
            if found.gzpipped {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            super::ui::with_page_headers(r, DOCS_CSP, "public, max-age=300")
        }
        Ok(None) => ApiError::NotFound.into_response(),
        Err(e) => ApiError::internal(&format!("swagger ui: {e}")).into_response(),
    }
}

/// `GET /docs`: to `/docs/`, so that the page's relative asset links resolve under it.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 308, description = "To `/docs/`", headers(("Location" = String)))))]
pub(crate) async fn docs_redirect() -> Response {
    axum::response::Redirect::permanent("/docs/").into_response()
}

/// `GET /docs/`.
#[utoipa::path(get, path = "/docs/", tag = "operations",
    responses((status = 200, description = "The interactive reference of this document (Swagger UI, served from the binary)", content_type = "text/html")))]
pub(crate) async fn docs() -> Response {
    swagger_file("index.html")
}

/// `GET /docs/{file}`: the page's scripts, styles and images.
#[utoipa::path(get, path = "/docs/{file}", tag = "operations",
    params(("file" = String, Path, description = "An asset of the page", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The asset", content(
            ("text/css"), ("text/javascript"), ("application/javascript"), ("text/html"),
            ("image/png"), ("application/json"), ("text/markdown"), ("application/octet-stream")
        )),
        (status = 404, description = "`not_found`: no such asset", body = ApiErrorBody),
    ))]
pub(crate) async fn docs_file(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}
