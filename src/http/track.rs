//! The HTTP metrics: `keygate_http_requests_total{method,route,status}` and
//! `keygate_http_request_duration_seconds{method,route}`, by route template
//! (`/admin/users/{id}`), never a raw path (which would make a series per id).
//!
//! A route layer rather than a middleware around the router: there the route template is
//! known, and it costs no allocation (no boxed future, no cloned service, nothing put in the
//! response's extensions): the future only wraps the handler's. Requests no route takes are
//! recorded where they are answered, as `route="unmatched"`: unknown paths and methods (404),
//! oversized headers (431) and timeouts (503).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;

/// Wraps every route (`Router::route_layer`).
#[derive(Debug, Clone, Copy)]
pub(super) struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

/// One route's handler, counted and timed.
#[derive(Debug, Clone)]
pub(super) struct Track<S> {
    inner: S,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = crate::metrics::method_label(req.method().as_str());
        Tracked {
            inner: self.inner.call(req),
            started: Instant::now(),
            method,
            route,
        }
    }
}

/// The handler's future; records when it completes (a dropped one, cut by the request
/// timeout, is recorded by the timeout as unmatched).
#[derive(Debug)]
pub(super) struct Tracked<F> {
    inner: F,
    started: Instant,
    method: &'static str,
    route: Option<MatchedPath>,
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let output = std::task::ready!(Pin::new(&mut this.inner).poll(cx));
        if let Ok(response) = &output {
            let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
            crate::metrics::http_request(
                this.method,
                route,
                response.status().as_u16(),
                Some(this.started.elapsed()),
            );
        }
        Poll::Ready(output)
    }
}

/// A request no route answered.
pub(super) fn unmatched(method: &Method, status: u16) {
    crate::metrics::http_request(
        crate::metrics::method_label(method.as_str()),
        "unmatched",
        status,
        None,
    );
}
