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

//!
//! An attempt is counted *before* its password is checked (a reservation) and given back if
//! the password was right, so attempts in flight count against the budget: however many
//! arrive at once, at most `failed_logins.count` of them reach the hasher before the wait
//! starts. When the state cannot be updated (sustained contention on one key) the attempt is
//! refused, never waved through.
//!
//! Clients are keyed by IPv4 address, or by their IPv6 network (`rate_limits.ipv6_prefix`,
//! /64 by default: one subscriber's allocation is one budget); an IPv4-mapped IPv6 address is
//! its IPv4 address.

mod kv;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::clock::{Clock, to_millis};
use crate::config::{Config, Rate};

use kv::{Kv, Redis};

/// Limiter entries kept in memory per kind of state (client budgets; failed-login state): a
/// bound on memory (~100 bytes an entry) that a flood of new keys cannot raise.
pub const MEMORY_MAX_ENTRIES: u64 = 200_000;

/// How many times an update of one key is retried against concurrent writers before the
/// request is refused.
const CAS_ATTEMPTS: usize = 16;

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
    /// `PATCH /auth/me` (it answers whether a username is taken: limited like registration)
    Profile,
    /// The mail endpoints (verification, password reset, email change) and the second-factor
    /// step: per IP like `rate_limits.password`, and mail also per address
    /// ([`Limits::check_address`]).
    Email,
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
            Action::Profile => "profile",
            Action::Email => "email",
        }
    }
}

/// A governor clock that reads the injected clock as nanoseconds since the Unix epoch, and
/// whose first reading (the limiter's start, taken by `RateLimiter::new`) is the epoch itself,
/// so the state governor computes is absolute and means the same on every node.
#[derive(Clone)]
struct EpochClock {
    now: Nanos,
    started: std::rc::Rc<std::cell::Cell<bool>>,
}

impl governor::clock::Clock for EpochClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        if self.started.replace(true) {
            self.now
        } else {
            Nanos::from(0u64)
        }
    }
}

/// One decision's state: the value read from the store, and the value governor wants stored.
struct Snapshot {
    read: Option<Nanos>,
    next: std::cell::Cell<Option<Nanos>>,
}

impl StateStore for Snapshot {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let (outcome, next) = f(self.read)?;
        self.next.set(Some(next));
        Ok(outcome)
    }
}

/// How far ahead of this node's clock a stored limiter state may be and still count. A state
/// further ahead was written by a clock that has since gone back (an NTP step, a node whose
/// clock is ahead by more than this): it is dropped, or every client counted recently would
/// wait out the whole jump (found by `suite::faults`: an hour back, an hour of 429s). Nodes'
/// clocks within this of each other share budgets exactly; the default leeway is the same.
const CLOCK_STEP_MARGIN: Duration = Duration::from_secs(30);

/// A GCRA budget (governor's algorithm) whose state lives in the [`Kv`] under one key per
/// client: read, decide, compare-and-set, retried when another request got there first.
struct Budget {
    quota: Quota,
    per_cell: Duration,
    ttl: Duration,
    prefix: String,
    /// The furthest ahead of now a state can legitimately be: the whole budget's worth,
    /// plus [`CLOCK_STEP_MARGIN`], in nanoseconds.
    max_ahead: u64,
}

impl Budget {
    fn new(rate: Rate, prefix: String) -> Budget {
        let per_cell = (rate.period / rate.count).max(Duration::from_nanos(1));
        let burst = std::num::NonZeroU32::new(rate.count).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = Quota::with_period(per_cell)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(burst);
        Budget {
            quota,
            per_cell,
            ttl: rate.period + Duration::from_secs(1),
            prefix,
            max_ahead: u64::try_from((rate.period + CLOCK_STEP_MARGIN).as_nanos())
                .unwrap_or(u64::MAX),
        }
    }

    /// Governor's decision on the state `read` at `now`: the state to store, or the wait.
    fn decide(&self, read: Option<Nanos>, now: Nanos) -> Result<Nanos, RetryAfter> {
        let snapshot = Snapshot {
            read,
            next: std::cell::Cell::new(None),
        };
        let clock = EpochClock {
            now,
            started: Default::default(),
        };
        let limiter: RateLimiter<NotKeyed, _, _, NoOpMiddleware<Nanos>> =
            RateLimiter::new(self.quota, snapshot, clock);
        match limiter.check() {
            Ok(()) => {
                let next = limiter.into_state_store().next.get();
                next.ok_or(RetryAfter(self.per_cell))
            }
            Err(not_until) => Err(RetryAfter(not_until.wait_time_from(now))),
        }
    }

    async fn take(&self, kv: &Kv, clock: &dyn Clock, client: &str) -> Result<(), RetryAfter> {
        let key = format!("{}{client}", self.prefix);
        for _ in 0..CAS_ATTEMPTS {
            let now = Nanos::from(u64::try_from(clock.now().unix_timestamp_nanos()).unwrap_or(0));
            let old = kv.get(&key).await;
            let read = old
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|at| *at <= now.as_u64().saturating_add(self.max_ahead));
            let next = self.decide(read.map(Nanos::from), now)?;
            if kv
                .compare_and_set(&key, old.as_deref(), &next.as_u64().to_string(), self.ttl)
                .await
            {
                return Ok(());
            }
        }
        // Sustained contention on one client's key: refuse rather than let it through.
        Err(RetryAfter(self.per_cell))
    }
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

    /// The state as it counts at `now_ms`: one written by a clock that has since gone back
    /// by more than [`CLOCK_STEP_MARGIN`] (its first failure that far in the future, or a wait
    /// longer than any `rate` gives) starts over.
    fn seen_at(self, now_ms: i64, rate: Rate) -> Backoff {
        let margin = i64::try_from(CLOCK_STEP_MARGIN.as_millis()).unwrap_or(i64::MAX);
        let period_ms = i64::try_from(rate.period.as_millis()).unwrap_or(i64::MAX);
        if self.first_ms > now_ms.saturating_add(margin)
            || self.next_ms > now_ms.saturating_add(period_ms).saturating_add(margin)
        {
            Backoff::default()
        } else {
            self
        }
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

    /// The state with one counted failure given back.
    fn without_one(self) -> Backoff {
        Backoff {
            failures: self.failures.saturating_sub(1),
            ..self
        }
    }
}

/// How long an IP stays "known good" for an account after a successful login.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rate limits and brute-force defence for one server.
pub struct Limits {
    enabled: bool,
    redis: Option<Arc<Redis>>,
    /// Per-client budgets.
    clients: Kv,
    /// Failed-login back-off and known-good addresses: kept apart from the client budgets so
    /// that a flood of new client addresses cannot push an account's state out of memory.
    accounts: Kv,
    login: Budget,
    register: Budget,
    refresh: Budget,
    password: Budget,
    token: Budget,
    profile: Budget,
    email: Budget,
    address: Budget,
    failed_logins: Rate,
    ipv6_prefix: u8,
    prefix: String,
    clock: Arc<dyn Clock>,
    /// (action, client) whose denial was audited in the last minute, so a flood writes one
    /// row a minute.
    audited: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("enabled", &self.enabled)
            .field("redis", &self.redis.is_some())
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

/// A login attempt counted against its account and (account, client) pair before the
/// password is checked. [`Limits::login_succeeded`] gives it back; dropping it keeps it
/// counted (a failure).
#[derive(Debug)]
#[must_use = "a reservation is given back on success with Limits::login_succeeded"]
pub struct Attempt {
    pair: Reserved,
    account: Reserved,
    good: String,
}

/// One key's reservation: the state before it and the state it wrote.
#[derive(Debug)]
struct Reserved {
    key: String,
    before: Option<Backoff>,
    after: Backoff,
}

impl Limits {
    /// Builds the limiters; Redis is connected lazily (an unreachable Redis is not an error).
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Limits, String> {
        Self::with_capacity(config, clock, MEMORY_MAX_ENTRIES)
    }

    fn with_capacity(
        config: &Config,
        clock: Arc<dyn Clock>,
        capacity: u64,
    ) -> Result<Limits, String> {
        let redis = match config.redis_url.as_ref() {
            None => None,
            Some(url) => Some(Arc::new(
                Redis::new(url).map_err(|e| format!("invalid redis_url: {:?}", e.kind()))?,
            )),
        };
        let r = &config.rate_limits;
        let p = &config.redis_key_prefix;
        Ok(Limits {
            enabled: r.enabled,
            clients: Kv::new(redis.clone(), clock.clone(), capacity),
            accounts: Kv::new(redis.clone(), clock.clone(), capacity),
            redis,
            login: Budget::new(r.login, format!("{p}rl:login:")),
            register: Budget::new(r.register, format!("{p}rl:register:")),
            refresh: Budget::new(r.refresh, format!("{p}rl:refresh:")),
            password: Budget::new(r.password, format!("{p}rl:password:")),
            token: Budget::new(r.token, format!("{p}rl:token:")),
            profile: Budget::new(r.register, format!("{p}rl:profile:")),
            email: Budget::new(r.password, format!("{p}rl:email:")),
            address: Budget::new(r.password, format!("{p}rl:address:")),
            failed_logins: r.failed_logins,
            ipv6_prefix: r.ipv6_prefix,
            prefix: p.clone(),
            clock,
            audited: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        })
    }

    fn budget(&self, action: Action) -> &Budget {
        match action {
            Action::Login => &self.login,
            Action::Register => &self.register,
            Action::Refresh => &self.refresh,
            Action::Password => &self.password,
            Action::Token => &self.token,
            Action::Profile => &self.profile,
            Action::Email => &self.email,
        }
    }

    /// Takes one message from the budget of a recipient address (normalised): however many
    /// clients ask, an address gets at most `rate_limits.password` mails.
    pub async fn check_address(&self, address: &str) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        self.address
            .take(&self.accounts, &*self.clock, address)
            .await
    }

    /// The key a client's budgets are kept under: its IPv4 address, or its IPv6 network of
    /// `rate_limits.ipv6_prefix` bits (an IPv4-mapped IPv6 address is the IPv4 address).
    pub fn client_key(&self, ip: Option<&str>) -> String {
        client_key(ip, self.ipv6_prefix)
    }

    /// Takes one request of `action` from the client's budget.
    pub async fn check_ip(&self, action: Action, ip: Option<&str>) -> Result<(), RetryAfter> {
        if !self.enabled {
            return Ok(());
        }
        let client = self.client_key(ip);
        self.budget(action)
            .take(&self.clients, &*self.clock, &client)
            .await
    }

    /// Reserves one login attempt on `account` (the account's id, or the canonical form of an
    /// identifier that names no account) from `ip`, before its password is checked: refused
    /// while the pair, or the account from an address not known good for it, is in back-off.
    pub async fn begin_login(
        &self,
        account: &str,
        ip: Option<&str>,
    ) -> Result<Option<Attempt>, RetryAfter> {
        if !self.enabled {
            return Ok(None);
        }
        let client = self.client_key(ip);
        let p = &self.prefix;
        let good = format!("{p}fl:good:{account}:{client}");
        let known_good = self.accounts.get(&good).await.is_some();
        let pair_key = format!("{p}fl:pair:{account}:{client}");
        let account = self
            .reserve(format!("{p}fl:acct:{account}"), !known_good)
            .await?;
        let pair = match self.reserve(pair_key, true).await {
            Ok(pair) => pair,
            Err(wait) => {
                self.give_back(&account).await;
                return Err(wait);
            }
        };
        Ok(Some(Attempt {
            pair,
            account,
            good,
        }))
    }

    /// The password was right: the attempt is given back, the pair's back-off cleared, and
    /// the address remembered as the account owner's.
    pub async fn login_succeeded(&self, attempt: Option<Attempt>) {
        let Some(attempt) = attempt else { return };
        self.give_back(&attempt.account).await;
        self.accounts.delete(&attempt.pair.key).await;
        let old = self.accounts.get(&attempt.good).await;
        self.accounts
            .compare_and_set(&attempt.good, old.as_deref(), "1", KNOWN_GOOD_FOR)
            .await;
    }

    /// The attempt never tested a password (the hasher was busy, the database failed): it is
    /// given back whole.
    pub async fn login_abandoned(&self, attempt: Option<Attempt>) {
        let Some(attempt) = attempt else { return };
        self.give_back(&attempt.account).await;
        self.give_back(&attempt.pair).await;
    }

    /// Counts one attempt on `key` unless it is in back-off (`honour_wait`).
    async fn reserve(&self, key: String, honour_wait: bool) -> Result<Reserved, RetryAfter> {
        let rate = self.failed_logins;
        for _ in 0..CAS_ATTEMPTS {
            let now = to_millis(self.clock.now());
            let old = self.accounts.get(&key).await;
            let before = old.as_deref().and_then(Backoff::parse);
            let state = before.unwrap_or_default().seen_at(now, rate);
            if honour_wait && state.next_ms > now {
                let ms = u64::try_from(state.next_ms - now).unwrap_or(0);
                return Err(RetryAfter(Duration::from_millis(ms)));
            }
            let after = state.after_failure(now, rate);
            if self
                .accounts
                .compare_and_set(&key, old.as_deref(), &after.render(), rate.period * 2)
                .await
            {
                return Ok(Reserved { key, before, after });
            }
        }
        Err(RetryAfter(Duration::from_secs(1)))
    }

    /// Undoes a reservation: the state before it if nothing has changed since, otherwise one
    /// failure fewer (a wait set meanwhile by others stands).
    async fn give_back(&self, r: &Reserved) {
        for _ in 0..CAS_ATTEMPTS {
            let old = self.accounts.get(&r.key).await;
            let Some(current) = old.as_deref().and_then(Backoff::parse) else {
                return;
            };
            let done = if current == r.after {
                match r.before {
                    Some(before) => {
                        self.accounts
                            .compare_and_set(
                                &r.key,
                                old.as_deref(),
                                &before.render(),
                                self.failed_logins.period * 2,
                            )
                            .await
                    }
                    None => {
                        self.accounts.delete(&r.key).await;
                        true
                    }
                }
            } else {
                self.accounts
                    .compare_and_set(
                        &r.key,
                        old.as_deref(),
                        &current.without_one().render(),
                        self.failed_logins.period * 2,
                    )
                    .await
            };
            if done {
                return;
            }
        }
    }

    /// Whether a denial of `action` from `ip` should be written to the audit log now (at most
    /// once a minute per client and action, so a flood does not become a flood of writes).
    pub fn should_audit(&self, action: Action, ip: Option<&str>) -> bool {
        let key = format!("{}:{}", action.name(), self.client_key(ip));
        self.audited.entry(key).or_insert(()).is_fresh()
    }

    /// Redis configured but failing: limits are per node for now.
    pub fn degraded(&self) -> bool {
        kv::redis_degraded(self.redis.as_deref())
    }

    /// `Some(reachable)` when Redis is configured (waits at most Redis's timeout).
    pub async fn check_redis(&self) -> Option<bool> {
        kv::check_redis(self.redis.as_deref()).await
    }

    /// Drops expired in-memory state.
    pub fn sweep(&self) {
        self.clients.sweep();
        self.accounts.sweep();
    }
}

/// See [`Limits::client_key`]. An absent or unparsable address is one shared client.
pub(crate) fn client_key(ip: Option<&str>, ipv6_prefix: u8) -> String {
    let Some(ip) = ip.and_then(|ip| ip.parse::<IpAddr>().ok()) else {
        return "unknown".to_owned();
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match ipnet::Ipv6Net::new(v6, ipv6_prefix) {
            Ok(net) => net.trunc().to_string(),
            Err(_) => v6.to_string(),
        },
    }
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
    fn clients_are_keyed_by_ipv4_address_or_ipv6_network() {
        assert_eq!(client_key(Some("192.0.2.7"), 64), "192.0.2.7");
        assert_eq!(client_key(Some("::ffff:192.0.2.7"), 64), "192.0.2.7");
        assert_eq!(
            client_key(Some("2001:db8:1:2:aaaa::1"), 64),
            client_key(Some("2001:db8:1:2:ffff:1:2:3"), 64),
            "one /64, one budget"
        );
        assert_eq!(
            client_key(Some("2001:db8:1:2:aaaa::1"), 64),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            client_key(Some("2001:db8:1:2::1"), 64),
            client_key(Some("2001:db8:1:3::1"), 64)
        );
        assert_eq!(client_key(Some("2001:db8:1:2::1"), 48), "2001:db8:1::/48");
        assert_eq!(client_key(Some("2001:db8::1"), 128), "2001:db8::1/128");
        assert_eq!(client_key(None, 64), "unknown");
        assert_eq!(client_key(Some("garbage"), 64), "unknown");
    }

    fn make(extra: &str, capacity: u64) -> (Arc<crate::clock::ManualClock>, Limits) {
        let clock = Arc::new(crate::clock::ManualClock::new());
        let config = Config::from_toml(&format!("database_url = \"sqlite::memory:\"\n{extra}"))
            .expect("config");
        let limits = Limits::with_capacity(&config, clock.clone(), capacity).expect("limits");
        (clock, limits)
    }

    #[tokio::test]
    async fn a_flood_of_new_clients_neither_unlimits_newcomers_nor_frees_a_tracked_account() {
        let (_clock, limits) = make(
            "rate_limits.login = \"2/1m\"\nrate_limits.failed_logins = \"2/15m\"",
            1_000,
        );
        // An account in back-off.
        for _ in 0..2 {
            let attempt = limits.begin_login("acct-1", Some("198.51.100.1")).await;
            drop(attempt.expect("allowed"));
        }
        assert!(
            limits
                .begin_login("acct-1", Some("198.51.100.2"))
                .await
                .is_err()
        );
        // Ten times the bound of distinct clients, each taking from its budget.
        for i in 0..10_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            assert!(limits.check_ip(Action::Login, Some(&ip)).await.is_ok());
        }
        assert!(limits.clients.memory().len() <= 1_000, "bounded");
        // A new client is tracked and limited as ever.
        let newcomer = Some("203.0.113.50");
        assert!(limits.check_ip(Action::Login, newcomer).await.is_ok());
        assert!(limits.check_ip(Action::Login, newcomer).await.is_ok());
        assert!(limits.check_ip(Action::Login, newcomer).await.is_err());
        // The account is still in back-off.
        assert!(
            limits
                .begin_login("acct-1", Some("198.51.100.3"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn attempts_in_flight_count_and_a_success_gives_its_attempt_back() {
        let (_clock, limits) = make("rate_limits.failed_logins = \"3/15m\"", 1_000);
        let ip = Some("198.51.100.1");
        // Three reservations held at once (passwords still being checked): the fourth waits.
        let a = limits.begin_login("acct", ip).await.expect("1");
        let b = limits.begin_login("acct", ip).await.expect("2");
        let c = limits.begin_login("acct", ip).await.expect("3");
        assert!(limits.begin_login("acct", ip).await.is_err(), "4th refused");
        // One of them was right: the pair is cleared and the account gets its attempt back.
        limits.login_succeeded(c).await;
        drop((a, b));
        assert!(limits.begin_login("acct", ip).await.is_ok());
        // An abandoned attempt (hasher busy) is given back whole.
        let (_clock, limits) = make("rate_limits.failed_logins = \"1/15m\"", 1_000);
        let a = limits.begin_login("acct", ip).await.expect("1");
        limits.login_abandoned(a).await;
        assert!(limits.begin_login("acct", ip).await.is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).seconds(), 1);
        assert_eq!(RetryAfter(Duration::from_secs(3)).seconds(), 3);
        assert_eq!(RetryAfter(Duration::from_millis(3001)).seconds(), 4);
    }
}
