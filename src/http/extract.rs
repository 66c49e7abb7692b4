//! Extractors that reject in the contract's format.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Principal, TokenProblem};
use crate::domain::ClientInfo;

/// A JSON request body (API.md: 415 if not JSON, 413 over the limit, 400 malformed or of the
/// wrong shape). Parsed through `serde_json::Value` first, whose recursion limit (128) bounds
/// nesting even inside fields the target type ignores.
#[derive(Debug, Clone)]
pub(crate) struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (is_json, bytes) = read_body(req, state).await?;
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(Json)
    }
}

/// Whether the request says it is JSON, and its body within the body limit.
async fn read_body<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> Result<(bool, axum::body::Bytes), ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("Could not read the request body")
            }
        })?;
    Ok((is_json, bytes))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| ApiError::BadRequest("Malformed JSON"))?;
    // Every body is an object: serde would also fill a struct from an array of its fields in
    // order (`[null, null]`), which is not what the contract accepts.
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "JSON of the wrong shape: expected an object",
        ));
    }
    serde_json::from_value(value).map_err(|_| {
        ApiError::BadRequest("JSON of the wrong shape: expected an object with string fields")
    })
}

/// The bearer token of the `Authorization` header, if any. A header that is present but not
/// `Bearer <token>` is an invalid token, never treated as anonymous.
pub(crate) fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = ApiError::InvalidToken(TokenProblem::Invalid);
    let value = value.to_str().map_err(|_| invalid.clone())?;
    let (scheme, token) = value.split_once(' ').ok_or(invalid.clone())?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(invalid);
    }
    Ok(Some(token.trim()))
}

/// An authenticated caller (401 otherwise).
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub Principal);

impl FromRequestParts<Arc<AppState>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let principal = state.auth.authenticate(token).await?;
        Ok(AuthUser(principal))
    }
}

/// An authenticated caller whose account currently holds the `admin` role (403 otherwise).
/// The role is read from the account, not the token, so removing it takes effect at once.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub Principal);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let AuthUser(principal) = AuthUser::from_request_parts(parts, state).await?;
        let user = state.auth.me(&principal).await?;
        if user.is_active && user.roles.iter().any(|r| r == crate::auth::ADMIN_ROLE) {
            Ok(Admin(principal))
        } else {
            Err(ApiError::Forbidden("This requires the admin role"))
        }
    }
}

/// The raw bearer token, unverified (for logout, which verifies it itself).
#[derive(Debug, Clone)]
pub(crate) struct MaybeBearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeBearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(MaybeBearer(bearer(parts)?.map(str::to_owned)))
    }
}

/// The longest user agent kept on a session.
const MAX_USER_AGENT: usize = 512;

/// Client IP and user agent. The IP is the socket peer, or, when the peer is one of
/// `trusted_proxies`, the nearest address in `X-Forwarded-For` that is not a trusted proxy.
#[derive(Debug, Clone)]
pub(crate) struct Client(pub ClientInfo);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let trusted = &state.auth.config().trusted_proxies;
        let ip = client_ip(
            peer,
            Some(forwarded.as_str()).filter(|f| !f.is_empty()),
            trusted,
        );
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Client(ClientInfo {
            ip: ip.map(|ip| ip.to_string()),
            user_agent,
        }))
    }
}

/// The client's address: `peer` unless `peer` is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
/// were written by the client and prove nothing). An IPv4-mapped IPv6 address (what a
/// dual-stack listener sees for an IPv4 peer) is taken as the IPv4 address it maps.
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(list) = forwarded_for else {
        return Some(peer);
    };
    let mut client = peer;
    for entry in list.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// A JSON body that may be absent: an empty body gives `T::default()`. A present body must be
/// JSON (415 otherwise) and well-formed (400).
#[derive(Debug, Clone)]
pub(crate) struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let (is_json, bytes) = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // An untrusted peer's header changes nothing.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted),
            Some(ip("203.0.113.9"))
        );
        // Behind the proxy: the right-most untrusted entry; spoofed entries to its left are ignored.
        assert_eq!(
            client_ip(
                Some(ip("10.0.0.2")),
                Some("6.6.6.6, 198.51.100.7, 10.0.0.9"),
                &trusted
            ),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), None, &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), Some("garbage"), &trusted),
            Some(ip("10.0.0.2"))
        );
        assert_eq!(
            client_ip(Some(ip("127.0.0.1")), Some("1.2.3.4"), &[]),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(client_ip(None, Some("1.2.3.4"), &trusted), None);
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address_for_proxies_and_limits() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A dual-stack listener sees the IPv4 proxy as ::ffff:10.0.0.2: still trusted.
        assert_eq!(
            client_ip(Some(ip("::ffff:10.0.0.2")), Some("198.51.100.7"), &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(Some(ip("::ffff:203.0.113.9")), None, &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), Some("::ffff:198.51.100.7"), &trusted),
            Some(ip("198.51.100.7"))
        );
    }
}
