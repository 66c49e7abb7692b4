//! The HTTP front end: every route on one screen, the error model, extractors and handlers.

mod account;
mod admin;
mod cookies;
pub mod error;
mod extract;
mod oauth;
mod openapi;
mod recovery;
mod track;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::auth::Auth;

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The use cases.
    pub auth: Auth,
    /// Becomes `true` at the first shutdown signal.
    draining: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    /// The state of a server around `auth`.
    pub fn new(auth: Auth) -> AppState {
        AppState {
            auth,
            draining: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Marks the node as shutting down: `/readyz` answers 503 from now on, so that a load
    /// balancer drains it, and long polls answer at once.
    pub fn begin_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Completes once shutdown has begun.
    pub(crate) async fn drained(&self) {
        let _ = self.draining.subscribe().wait_for(|d| *d).await;
    }
}

/// Largest request body (API.md: 16 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest single header value (a bearer token is far smaller).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest total of all header names and values.
pub const MAX_HEADERS_TOTAL_BYTES: usize = 32 * 1024;
/// Most headers in one request.
pub const MAX_HEADER_COUNT: usize = 100;

/// The whole HTTP API.
pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let routes = Router::new()
        .route("/auth/register", post(account::register))
        .route("/auth/login", post(account::login))
        .route("/auth/refresh", post(account::refresh))
        .route("/auth/logout", post(account::logout))
        .route("/auth/me", get(account::me).patch(account::update_me))
        .route("/auth/password", post(account::change_password))
        .route("/auth/sessions", get(account::sessions))
        .route("/auth/sessions/{id}", delete(account::end_session))
        .route("/auth/email/verify", post(recovery::verify_email))
        .route(
            "/auth/email/verify/resend",
            post(recovery::resend_verification),
        )
        .route("/auth/password/forgot", post(recovery::forgot_password))
        .route("/auth/password/reset", post(recovery::reset_password))
        .route("/auth/email/change", post(recovery::change_email))
        .route(
            "/auth/email/change/confirm",
            post(recovery::confirm_email_change),
        )
        .route(
            "/auth/mfa/totp",
            post(recovery::start_totp).delete(recovery::disable_totp),
        )
        .route("/auth/mfa/totp/confirm", post(recovery::confirm_totp))
        .route("/auth/mfa/verify", post(recovery::verify_mfa))
        .route(
            "/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/admin/users/{id}",
            get(admin::get_user)
                .patch(admin::patch_user)
                .delete(admin::delete_user),
        )
        .route(
            "/admin/users/{id}/sessions",
            get(admin::user_sessions).delete(admin::end_user_sessions),
        )
        .route("/admin/users/{id}/mfa", delete(recovery::admin_reset_mfa))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/keys", get(admin::list_keys))
        .route("/admin/keys/rotate", post(admin::rotate_keys))
        .route("/admin/keys/{kid}/revoke", post(admin::revoke_key))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_redirect))
        .route("/docs/", get(openapi::docs))
        .route("/docs/{file}", get(openapi::docs_file))
        .merge(oauth::routes())
        .merge(ui::routes())
        // Counts and times every routed request by its route template.
        .route_layer(track::TrackLayer)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(middleware::from_fn(limit_headers));
    // Outside the limits, so that a browser can read their errors too.
    let routes = match cors(&state.auth.config().cors) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a request handler panicked").into_response()
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // The path only: query strings may carry tokens.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// CORS for `cors.allowed_origins`, or `None` (no CORS header at all) when there are none.
/// Exact origins only; `Access-Control-Allow-Credentials` goes to those alone, with the
/// methods and headers the API uses (`x-csrf-token` for the cookie transport).
fn cors(config: &crate::config::CorsConfig) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};
    if config.allowed_origins.is_empty() {
        return None;
    }
    let allowed: Arc<Vec<HeaderValue>> = Arc::new(
        config
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    );
    let credentials = allowed.clone();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed.iter().cloned()))
            .allow_credentials(AllowCredentials::predicate(move |origin, _| {
                credentials.contains(origin)
            }))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-csrf-token"),
            ])
            .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
            .max_age(CORS_MAX_AGE),
    )
}

/// Unknown routes and methods: 404 `not_found` in the contract's format.
async fn not_found(method: axum::http::Method) -> Response {
    track::unmatched(&method, 404);
    let mut response = ApiError::NotFound.into_response();
    response.extensions_mut().insert(Unrouted);
    response
}

/// A known path with a method it does not have: 405, with the `Allow` header that axum's
/// method router adds to the fallback's answer (RFC 9110).
async fn method_not_allowed(method: axum::http::Method) -> Response {
    track::unmatched(&method, 405);
    let mut response = ApiError::MethodNotAllowed.into_response();
    response.extensions_mut().insert(Unrouted);
    response
}

/// Marks (in its extensions, never on the wire) a response that no route gave: the path or
/// the method is unknown. Tests use it to list the router's routes.
#[derive(Debug, Clone, Copy)]
pub struct Unrouted;

/// The OpenAPI document of [`router`] (what `GET /openapi.json` serves).
pub fn openapi_document() -> &'static str {
    openapi::document()
}

/// 503 `unavailable` for a request that takes longer than `request_timeout` (reading a slow
/// body included), whether the client is too slow or the server is overloaded.
async fn request_timeout(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    match tokio::time::timeout(state.auth.config().request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            track::unmatched(&method, 503);
            tracing::warn!("request timed out");
            ApiError::Unavailable(1).into_response()
        }
    }
}

/// 431 for oversized headers, before any handler (or token parser) sees them.
async fn limit_headers(req: Request, next: Next) -> Response {
    let too_large = || {
        track::unmatched(req.method(), 431);
        ApiError::HeadersTooLarge.into_response()
    };
    if req.headers().len() > MAX_HEADER_COUNT {
        return too_large();
    }
    let mut total = 0;
    for (name, value) in req.headers() {
        let len = value.len();
        total += name.as_str().len() + len;
        if len > MAX_HEADER_BYTES || total > MAX_HEADERS_TOTAL_BYTES {
            return too_large();
        }
    }
    next.run(req).await
}

/// The public keys (next, active, retiring), with an `ETag`. Cacheable for
/// [`oauth::METADATA_MAX_AGE`] at most and never more than half of
/// `signing.rotation.publish_ahead`, so that a verifier caching it for its `max-age` holds the
/// next key before it signs.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses(
        (status = 200, description = "`{\"keys\": [JWK…]}`: the next, active and retiring public keys (empty with HS256). `Cache-Control: public, max-age` and a strong `ETag`", content_type = "application/json", body = Object,
            example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "alg": "EdDSA", "use": "sig"}]})),
        (status = 304, description = "Not modified (`If-None-Match`)"),
    ))]
async fn jwks(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let half_ahead = state.auth.config().signing.publish_ahead.as_secs() / 2;
    let max_age = oauth::METADATA_MAX_AGE.min(half_ahead);
    oauth::cacheable_json(&headers, state.auth.keys().jwks_json().to_owned(), max_age)
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", content_type = "application/json", body = Object, example = json!({"status": "ok"}))))]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Each dependency's state, and 200 only when the node can serve: the database answers, the
/// signing keys are loaded, and no shutdown has begun (503 from the first signal, so a load
/// balancer drains the node). Redis, when configured, is reported but never makes a node
/// unready: without it, limits fall back to the node's memory (fail open), so it is
/// `degraded`.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready (`status` is `ready`, or `degraded` when Redis is configured but down, so limits hold per node, or when the last SMTP delivery failed, so mail is delayed)", content_type = "application/json", body = Object,
            example = json!({"status": "ready", "checks": {"database": "ok", "signing_keys": "ok", "signing_kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "email": "ok", "redis": "not_configured"}, "rate_limits": "memory"})),
        (status = 503, description = "`unavailable`: the database does not answer, or the node is shutting down (`status`: `draining`)", content_type = "application/json", body = Object,
            example = json!({"status": "draining", "checks": {"database": "ok", "signing_keys": "ok", "signing_kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "email": "not_configured", "redis": "not_configured"}, "rate_limits": "memory", "error": "unavailable", "message": "Shutting down; retry on another node"})),
    ))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let database = state.auth.store().ping().await;
    // The ring in use always holds its signer (a node without one never starts); the
    // check names it, so an operator sees which key each node signs with mid-rotation.
    let signing_kid = state
        .auth
        .keys()
        .signing_kid()
        .unwrap_or("HS256")
        .to_owned();
    let redis = state.auth.limits().check_redis().await;
    let email = state.auth.mail_health();
    let draining = state.is_draining();
    let ready = database && !draining;
    let status = match (ready, draining, redis, email) {
        (false, true, _, _) => "draining",
        (false, false, _, _) => "unavailable",
        (true, _, Some(false), _) | (true, _, _, Some(false)) => "degraded",
        (true, _, _, _) => "ready",
    };
    let mut checks = serde_json::json!({
        "database": if database { "ok" } else { "down" },
        "signing_keys": "ok",
        "signing_kid": signing_kid,
    });
    // Mail is delayed, never lost, while the SMTP server fails: degraded, still ready.
    checks["email"] = match email {
        None => serde_json::Value::from("not_configured"),
        Some(true) => "ok".into(),
        Some(false) => "failing".into(),
    };
    checks["redis"] = match redis {
        None => serde_json::Value::from("not_configured"),
        Some(true) => "ok".into(),
        Some(false) => "down".into(),
    };
    let rate_limits = match redis {
        None => "memory",
        Some(true) => "redis",
        Some(false) => "memory (redis unreachable: limits are per node)",
    };
    let mut body = serde_json::json!({
        "status": status,
        "checks": checks,
        "rate_limits": rate_limits,
    });
    if !ready {
        // The error table's shape too, so a client that only knows it still understands.
        body["error"] = "unavailable".into();
        body["message"] = if draining {
            "Shutting down; retry on another node"
        } else {
            "The database does not answer; retry later"
        }
        .into();
    }
    let code = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (code, axum::Json(body)).into_response();
    if !ready {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Prometheus text format. Open to loopback clients that came straight to Keygate (no
/// `X-Forwarded-For` or `Forwarded` header: a reverse proxy on the same host is not a local
/// scraper), to addresses in `metrics.allowed_networks`, and to `Authorization: Bearer
/// <metrics.token>` (compared in constant time); 404 `not_found` to anyone else, so the
/// endpoint's existence is not advertised.
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 404, description = "`not_found`: not from loopback or `metrics.allowed_networks`, and without `metrics.token`", body = openapi::ApiErrorBody),
    ))]
async fn metrics(
    State(state): State<Arc<AppState>>,
    extract::Client(client): extract::Client,
    headers: axum::http::HeaderMap,
) -> Response {
    let config = &state.auth.config().metrics;
    let ip = client
        .ip
        .as_deref()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    let proxied =
        headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED);
    let local = ip.is_some_and(|ip| ip.is_loopback()) && !proxied;
    let listed = ip.is_some_and(|ip| config.allowed_networks.iter().any(|n| n.contains(&ip)));
    let bearer = config.token.as_ref().is_some_and(|token| {
        use secrecy::ExposeSecret as _;
        use subtle::ConstantTimeEq as _;
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes()))
            })
    });
    if !(local || listed || bearer) {
        return ApiError::NotFound.into_response();
    }
    state.auth.record_gauges();
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::metrics::render(),
    )
        .into_response()
}
