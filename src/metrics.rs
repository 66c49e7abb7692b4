//! Prometheus metrics through the `metrics` facade: the series Keygate records, and the
//! recorder that renders them for `GET /metrics` (no second listener).
//!
//! The recorder is process-wide (the facade has one global recorder): [`install`] puts
//! Keygate's in place once; every server of the process records into it and renders it. An
//! embedding application that installed a recorder of its own keeps it, and Keygate's
//! `/metrics` then answers with nothing but `keygate_build_info`.
//!
//! Every label value is a fixed code from Keygate's own source (outcomes, reasons, actions,
//! route templates), never text from a request, so the number of series is bounded.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request durations' bucket bounds, seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Password hashes' bucket bounds, seconds (argon2id with the defaults takes ≈ 25 ms).
const HASH_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// Group-commit batch sizes' bucket bounds, operations.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs Keygate's recorder as the process's (once; later calls return the same handle).
/// `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("keygate_http_request_duration_seconds".to_owned()),
                    DURATION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("keygate_password_hash_seconds".to_owned()),
                        HASH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("keygate_group_commit_batch_size".to_owned()),
                        BATCH_BUCKETS,
                    )
                });
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed: /metrics shows build info only");
                    return None;
                }
            };
            describe();
            gauge!("keygate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// `# HELP` lines.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "keygate_logins_total",
        "Password logins by outcome (success, invalid_credentials, account_disabled, throttled, mfa_required, mfa_failed, email_not_verified)."
    );
    describe_counter!(
        "keygate_refreshes_total",
        "Refresh-token exchanges by outcome (success, grace, reuse_detected, invalid, expired)."
    );
    describe_counter!(
        "keygate_http_requests_total",
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        "keygate_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to its response head, by method and route template."
    );
    describe_gauge!(
        "keygate_password_hash_queue_depth",
        "Password hashes waiting for a hashing thread."
    );
    describe_histogram!(
        "keygate_password_hash_seconds",
        metrics::Unit::Seconds,
        "Time a hashing thread spent on one password hash or verification."
    );
    describe_gauge!(
        "keygate_db_pool_connections",
        "Database connections by pool and state (idle, in_use)."
    );
    describe_counter!(
        "keygate_rate_limited_total",
        "Requests refused by a rate limit or the failed-login back-off, by action."
    );
    describe_counter!(
        "keygate_sessions_revoked_total",
        "Sessions ended before their time, by reason."
    );
    describe_histogram!(
        "keygate_group_commit_batch_size",
        "Operations committed together by one SQLite group commit."
    );
    describe_gauge!("keygate_build_info", "Always 1; the version is the label.");
}

/// A login ended with `outcome`.
pub(crate) fn login(outcome: &'static str) {
    counter!("keygate_logins_total", "outcome" => outcome).increment(1);
}

/// A refresh ended with `outcome`.
pub(crate) fn refresh(outcome: &'static str) {
    counter!("keygate_refreshes_total", "outcome" => outcome).increment(1);
}

/// A request was refused by the limit of `action`.
pub(crate) fn rate_limited(action: &'static str) {
    counter!("keygate_rate_limited_total", "action" => action).increment(1);
}

/// `count` sessions ended for `reason`.
pub(crate) fn sessions_revoked(reason: &str, count: u64) {
    if count > 0 {
        counter!("keygate_sessions_revoked_total", "reason" => reason.to_owned()).increment(count);
    }
}

/// One group commit ran `size` operations.
pub(crate) fn group_commit(size: usize) {
    histogram!("keygate_group_commit_batch_size").record(size as f64);
}

/// One password hash or verification took `took` on a hashing thread.
pub(crate) fn password_hash(took: Duration) {
    histogram!("keygate_password_hash_seconds").record(took.as_secs_f64());
}

/// Values read when scraped rather than recorded as they change.
pub(crate) fn password_hash_queue_depth(depth: usize) {
    gauge!("keygate_password_hash_queue_depth").set(depth as f64);
}

/// One pool's connections (`pool` is `main`, or `read`/`write` on SQLite).
pub(crate) fn db_pool(pool: &'static str, size: u32, idle: usize) {
    let idle = idle as f64;
    gauge!("keygate_db_pool_connections", "pool" => pool, "state" => "idle").set(idle);
    gauge!("keygate_db_pool_connections", "pool" => pool, "state" => "in_use")
        .set((f64::from(size) - idle).max(0.0));
}

/// One HTTP request answered.
///
/// On the hot path: each runtime thread keeps the handles of the series it has used (by route
/// template, then method and status), so a request costs two atomic updates and a lookup in a
/// small thread-local map: no label allocation, no shared lock, no registry hashing.
/// `took` is `None` for requests no handler ran (they are counted, not timed).
pub(crate) fn http_request(method: &'static str, route: &str, status: u16, took: Option<Duration>) {
    HTTP_SERIES.with_borrow_mut(|cache| {
        let series = match cache.get_mut(route) {
            Some(series) => series,
            None => cache.entry(route.into()).or_default(),
        };
        let (count, time) = series.get(route, method, status);
        count.increment(1);
        if let Some(took) = took {
            time.record(took.as_secs_f64());
        }
    });
}

thread_local! {
    /// This thread's handles of the HTTP series, by route template.
    static HTTP_SERIES: std::cell::RefCell<std::collections::HashMap<Box<str>, RouteSeries>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// One route's series handles.
#[derive(Default)]
struct RouteSeries {
    /// `keygate_http_requests_total` by method and status.
    counts: Vec<(&'static str, u16, metrics::Counter)>,
    /// `keygate_http_request_duration_seconds` by method.
    times: Vec<(&'static str, metrics::Histogram)>,
}

impl RouteSeries {
    fn get(
        &mut self,
        route: &str,
        method: &'static str,
        status: u16,
    ) -> (&metrics::Counter, &metrics::Histogram) {
        let count = match self
            .counts
            .iter()
            .position(|(m, s, _)| *m == method && *s == status)
        {
            Some(i) => i,
            None => {
                let counter = counter!(
                    "keygate_http_requests_total",
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status_label(status),
                );
                self.counts.push((method, status, counter));
                self.counts.len() - 1
            }
        };
        let time = match self.times.iter().position(|(m, _)| *m == method) {
            Some(i) => i,
            None => {
                let histogram = histogram!(
                    "keygate_http_request_duration_seconds",
                    "method" => method,
                    "route" => route.to_owned(),
                );
                self.times.push((method, histogram));
                self.times.len() - 1
            }
        };
        (&self.counts[count].2, &self.times[time].1)
    }
}

/// The method as a fixed label: a client can send any token as a method.
pub(crate) fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The status code as a static string (no allocation for the common ones).
fn status_label(status: u16) -> metrics::SharedString {
    let known = match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        503 => "503",
        _ => return metrics::SharedString::from(status.to_string()),
    };
    metrics::SharedString::const_str(known)
}

/// Renders every series, running the recorder's upkeep first.
pub(crate) fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => format!(
            "# TYPE keygate_build_info gauge\nkeygate_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// Drains histogram samples that no scrape collected (bounded memory without scrapes).
pub(crate) fn upkeep() {
    if let Some(handle) = install() {
        handle.run_upkeep();
    }
}
