//! Abuse resistance: per-IP rate limits (governor's GCRA) and lockout-free brute-force
//! defence (exponential back-off per account and per (account, IP) pair).
//!
//! State lives in `kv::Kv`: process memory, or Redis so that every node enforces one budget,
//! falling back to memory while Redis is unreachable. Time comes from the injected clock.
//!
//! The brute-force policy (docs/ARCHITECTURE.md, "Abuse resistance"):
//! - every failed login counts against the account and against the (account, IP) pair;
//! - after `rate_limits.failed_logins` failures within its period, each further failure
//!   doubles a wait (1 s, 2 s, 4 s, … capped at the period) before the next attempt;
//! - the pair's wait applies to that IP only, and a successful login clears it;
//! - the account's wait does not apply from an IP that logged in to the account successfully
//!   in the last 30 days, so an attacker spraying the account from elsewhere slows himself
//!   but never locks its owner out.

mod kv;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::clock::{Clock, to_millis};
use crate::config::{Config, Rate};

pub(crate) use kv::Kv;

/// The endpoints with a per-IP limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /auth/login`
    Login,
    /// `POST /auth/register`
    Register,
    /// `POST /auth/refresh`
    Refresh,
    /// `POST /auth/password`
    Password,
    /// `POST /oauth/token`
    Token,
}

impl Action {
    /// The name used in keys, logs and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::Register => "register",
            Action::Refresh => "refresh",
            Action::Password => "password",
            Action::Token => "token",
        }
    }
}

/// Governor measures time from the moment a limiter is made. This clock's first reading (taken
/// by `RateLimiter::new`) is the Unix epoch and every later one is nanoseconds since it, so the
/// state a limiter stores is absolute and means the same on every node sharing Redis.
#[derive(Clone)]
struct EpochClock {
    clock: Arc<dyn Clock>,
    started: Arc<AtomicBool>,
}

impl EpochClock {
    fn new(clock: Arc<dyn Clock>) -> Self {
        EpochClock {
            clock,
            started: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl governor::clock::Clock for EpochClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        if !self.started.swap(true, Ordering::SeqCst) {
            return Nanos::from(0u64);
        }
        let nanos = self.clock.now().unix_timestamp_nanos();
        Nanos::from(u64::try_from(nanos).unwrap_or(0))
    }
}

/// Governor's state (the theoretical arrival time of the next cell) kept in the [`Kv`].
struct KvState {
    kv: Arc<Kv>,
    prefix: String,
    ttl: Duration,
}

impl StateStore for KvState {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = format!("{}{key}", self.prefix);
        for _ in 0..8 {
            let old = self.kv.get(&key);
            let tat = old
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Nanos::from);
            let (outcome, next) = f(tat)?;
            if self
                .kv
                .compare_and_set(&key, old.as_deref(), &next.as_u64().to_string(), self.ttl)
            {
                return Ok(outcome);
            }
        }
        // Sustained contention on one key: decide on the last reading rather than spin.
        let tat = self
            .kv
            .get(&key)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Nanos::from);
        f(tat).map(|(outcome, _)| outcome)
    }
}

type Limiter = RateLimiter<String, KvState, EpochClock, NoOpMiddleware<Nanos>>;

fn limiter(rate: Rate, prefix: String, kv: &Arc<Kv>, clock: &Arc<dyn Clock>) -> Limiter {
    let per_cell = (rate.period / rate.count).max(Duration::from_nanos(1));
    let burst = std::num::NonZeroU32::new(rate.count).unwrap_or(std::num::NonZeroU32::MIN);
    let quota = Quota::with_period(per_cell)
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::new(
        quota,
        KvState {
            kv: kv.clone(),
            prefix,
            ttl: rate.period + Duration::from_secs(1),
        },
        EpochClock::new(clock.clone()),
    )
}

/// Back-off state of failed logins for one key: `failures:first_failure_ms:next_allowed_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Backoff {
    failures: u32,
    first_ms: i64,
    next_ms: i64,
}

impl Backoff {
    fn parse(s: &str) -> Option<Backoff> {
        let mut parts = s.split(':');
        Some(Backoff {
            failures: parts.next()?.parse().ok()?,
            first_ms: parts.next()?.parse().ok()?,
            next_ms: parts.next()?.parse().ok()?,
        })
    }

    fn render(self) -> String {
        format!("{}:{}:{}", self.failures, self.first_ms, self.next_ms)
    }

    /// The state after one more failure at `now_ms` under `rate`.
    fn after_failure(self, now_ms: i64, rate: Rate) -> Backoff {
        let period_ms = i64::try_from(rate.period.as_millis()).unwrap_or(i64::MAX);
        let mut b = if now_ms.saturating_sub(self.first_ms) > period_ms {
            Backoff {
                failures: 0,
                first_ms: now_ms,
                next_ms: 0,
            }
        } else {
            self
        };
        b.failures = b.failures.saturating_add(1);
        if b.failures >= rate.count {
            let doublings = (b.failures - rate.count).min(40);
            let wait_ms = 1000i64.saturating_mul(1i64 << doublings).min(period_ms);
            b.next_ms = now_ms.saturating_add(wait_ms);
        }
        b
    }
}

/// How long an IP stays "known good" for an account after a successful login.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rate limits and brute-force defence for one server.
pub struct Limits {
    enabled: bool,
    kv: Arc<Kv>,
    login: Limiter,
    register: Limiter,
    refresh: Limiter,
    password: Limiter,
    token: Limiter,
    failed_logins: Rate,
    prefix: String,
    clock: Arc<dyn Clock>,
    /// (action, ip) → when a denial was last audited, so a flood writes one row a minute.
    audited: Mutex<std::collections::HashMap<String, i64>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("enabled", &self.enabled)
            .field("redis", &self.kv.is_remote())
            .finish_non_exhaustive()
    }
}

/// A denial: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, at least 1.
    pub fn seconds(self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

impl Limits {
    /// Builds the limiters; Redis is connected lazily (an unreachable Redis is not an error).
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Limits, String> {
        let kv = Arc::new(Kv::new(config.redis_url.as_ref(), clock.clone())?);
        let r = &config.rate_limits;
        let p = &config.redis_key_prefix;
        Ok(Limits {
            enabled: r.enabled,
            login: limiter(r.login, format!("{p}rl:login:"), &kv, &clock),
            register: limiter(r.register, format!("{p}rl:register:"), &kv, &clock),
            refresh: limiter(r.refresh, format!("{p}rl:refresh:"), &kv, &clock),
            password: limiter(r.password, format!("{p}rl:password:"), &kv, &clock),
            token: limiter(r.token, format!("{p}rl:token:"), &kv, &clock),
            prefix: p.clone(),
            failed_logins: r.failed_logins,
            kv,
            clock,
            audited: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Runs `work` where it may block: on the blocking pool when Redis is in use.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Limits) -> T + Send + 'static,
    ) -> T {
        if self.kv.is_remote() {
            let this = self.clone();
            match tokio::task::spawn_blocking(move || work(&this)).await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        } else {
            work(self)
        }
    }

    fn limiter(&self, action: Action) -> &Limiter {
        match action {
            Action::Login => &self.login,
            Action::Register => &self.register,
            Action::Refresh => &self.refresh,
            Action::Password => &self.password,
            Action::Token => &self.token,
        }
    }

    /// Takes one request of `action` from `ip`'s budget.
    pub async fn check_ip(
        self: &Arc<Self>,
        action: Action,
        ip: Option<&str>,
    ) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        let key = ip.unwrap_or("unknown").to_owned();
        self.run(move |this| {
            let limiter = this.limiter(action);
            limiter
                .check_key(&key)
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(limiter.clock().now())))
        })
        .await
    }

    /// Whether a login to `account` from `ip` must wait (checked before the password).
    pub async fn check_login(
        self: &Arc<Self>,
        account: &str,
        ip: Option<&str>,
    ) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        let (pair, acct, good) = keys(&self.prefix, account, ip);
        self.run(move |this| {
            let now = to_millis(this.clock.now());
            let wait = |key: &str| {
                this.kv
                    .get(key)
                    .as_deref()
                    .and_then(Backoff::parse)
                    .map(|b| b.next_ms - now)
                    .filter(|ms| *ms > 0)
            };
            let waited =
                wait(&pair).or_else(|| wait(&acct).filter(|_| this.kv.get(&good).is_none()));
            match waited {
                Some(ms) => Err(RetryAfter(Duration::from_millis(
                    u64::try_from(ms).unwrap_or(0),
                ))),
                None => Ok(()),
            }
        })
        .await
    }

    /// Counts a failed login against the account and the pair.
    pub async fn login_failed(self: &Arc<Self>, account: &str, ip: Option<&str>) {
        if !self.enabled {
            return;
        }
        let (pair, acct, _) = keys(&self.prefix, account, ip);
        self.run(move |this| {
            this.bump(&pair);
            this.bump(&acct);
        })
        .await;
    }

    /// Clears the pair's back-off and remembers the IP as the owner's.
    pub async fn login_succeeded(self: &Arc<Self>, account: &str, ip: Option<&str>) {
        if !self.enabled {
            return;
        }
        let (pair, _, good) = keys(&self.prefix, account, ip);
        self.run(move |this| {
            this.kv.delete(&pair);
            let old = this.kv.get(&good);
            this.kv
                .compare_and_set(&good, old.as_deref(), "1", KNOWN_GOOD_FOR);
        })
        .await;
    }

    fn bump(&self, key: &str) {
        let rate = self.failed_logins;
        let ttl = rate.period * 2;
        for _ in 0..8 {
            let now = to_millis(self.clock.now());
            let old = self.kv.get(key);
            let state = old.as_deref().and_then(Backoff::parse).unwrap_or_default();
            let next = state.after_failure(now, rate).render();
            if self.kv.compare_and_set(key, old.as_deref(), &next, ttl) {
                return;
            }
        }
    }

    /// Whether a denial of `action` from `ip` should be written to the audit log now (at most
    /// once a minute per pair, so a flood does not become a flood of writes).
    pub fn should_audit(&self, action: Action, ip: Option<&str>) -> bool {
        let now = to_millis(self.clock.now());
        let key = format!("{}:{}", action.name(), ip.unwrap_or("unknown"));
        let mut seen = self.audited.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, at| now - *at < 60_000);
        }
        match seen.get(&key) {
            Some(at) if now - *at < 60_000 => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }

    /// Redis configured but failing: limits are per node for now.
    pub fn degraded(&self) -> bool {
        self.kv.degraded()
    }

    /// `Some(reachable)` when Redis is configured. Blocks briefly: call off the runtime.
    pub async fn check_redis(self: &Arc<Self>) -> Option<bool> {
        self.run(|this| this.kv.check_redis()).await
    }

    /// Drops expired in-memory state.
    pub fn sweep(&self) {
        self.kv.sweep();
    }
}

/// Keys for (account, IP), account, and "IP known good for account". The account is the
/// normalised login (email or username) as typed, so unknown accounts are treated alike.
fn keys(prefix: &str, account: &str, ip: Option<&str>) -> (String, String, String) {
    let ip = ip.unwrap_or("unknown");
    (
        format!("{prefix}fl:pair:{account}:{ip}"),
        format!("{prefix}fl:acct:{account}"),
        format!("{prefix}fl:good:{account}:{ip}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_allowance_and_doubles() {
        let rate = Rate {
            count: 3,
            period: Duration::from_secs(900),
        };
        let mut b = Backoff::default();
        let now = 1_000_000;
        for _ in 0..2 {
            b = b.after_failure(now, rate);
            assert_eq!(b.next_ms, 0, "free attempts");
        }
        b = b.after_failure(now, rate);
        assert_eq!(b.next_ms - now, 1_000);
        b = b.after_failure(now, rate);
        assert_eq!(b.next_ms - now, 2_000);
        b = b.after_failure(now, rate);
        assert_eq!(b.next_ms - now, 4_000);
        for _ in 0..30 {
            b = b.after_failure(now, rate);
        }
        assert_eq!(b.next_ms - now, 900_000, "capped at the period");
        let later = now + 901_000;
        let fresh = b.after_failure(later, rate);
        assert_eq!(
            (fresh.failures, fresh.next_ms),
            (1, 0),
            "a new period starts over"
        );
        assert_eq!(Backoff::parse(&b.render()), Some(b));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_secs(3)).seconds(), 3);
        assert_eq!(RetryAfter(Duration::from_millis(3001)).seconds(), 4);
    }
}
