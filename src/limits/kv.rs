//! Where limiter state lives: process memory, or Redis shared by every node with memory as
//! the fallback while Redis is unreachable (fail open to per-node limits, never to no limits).
//!
//! The one primitive is compare-and-set with a time-to-live, which is all governor's GCRA and
//! the failed-login back-off need to stay correct when several nodes update one key.
//!
//! Memory is bounded: each [`MemoryKv`] holds at most a fixed number of entries (a `moka`
//! cache with least-recently-used eviction, expired entries going first). A full store still
//! admits and limits every new key; what an attacker who floods it with new keys can do is make
//! it forget the keys touched least recently, never stop tracking the ones in use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret as _, SecretString};

use crate::clock::{Clock, to_millis};

/// How long Redis is left alone after a failure before it is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest one Redis operation may take: a limiter must never hold a request up for long.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// One stored value: the text, when it expires on the injected clock, and its time-to-live
/// (the cache drops it after that long in real time; reads check the injected clock).
#[derive(Clone)]
struct Entry {
    value: Arc<str>,
    expires_ms: i64,
    ttl: Duration,
}

/// Entries expire after their own time-to-live.
struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Process-memory store of at most `capacity` entries. Every operation is O(1) and locks only
/// the key it touches. Expiry follows the injected clock.
pub(crate) struct MemoryKv {
    cache: moka::sync::Cache<String, Entry>,
    clock: Arc<dyn Clock>,
}

impl MemoryKv {
    pub(crate) fn new(clock: Arc<dyn Clock>, capacity: u64) -> Self {
        MemoryKv {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                // LRU admits every new key (TinyLFU could refuse one, which would leave that
                // key unlimited) and evicts the least recently touched; expired entries are
                // removed before anything live is evicted.
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(PerEntryTtl)
                .build(),
            clock,
        }
    }

    fn now_ms(&self) -> i64 {
        to_millis(self.clock.now())
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let now = self.now_ms();
        self.cache
            .get(key)
            .filter(|e| e.expires_ms > now)
            .map(|e| e.value.to_string())
    }

    pub(crate) fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> bool {
        let now = self.now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let mut done = false;
        self.cache.entry_by_ref(key).and_compute_with(|current| {
            let current = current
                .as_ref()
                .map(moka::Entry::value)
                .filter(|e| e.expires_ms > now)
                .map(|e| &*e.value);
            if current != old {
                return Op::Nop;
            }
            done = true;
            Op::Put(Entry {
                value: Arc::from(new),
                expires_ms: now.saturating_add(ttl_ms),
                ttl: ttl.max(Duration::from_millis(1)),
            })
        });
        done
    }

    pub(crate) fn delete(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Runs the cache's pending maintenance (expiry, eviction) now.
    pub(crate) fn sweep(&self) {
        self.cache.run_pending_tasks();
    }

    /// Entries held (after pending maintenance).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// `SET key new PX ttl` only if the key holds `old` (`""` standing for "absent").
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Redis over one multiplexed asynchronous connection that reconnects by itself; every call
/// is bounded by [`REDIS_TIMEOUT`]. After a failure the callers use memory for
/// [`REDIS_RETRY_AFTER`], so a slow or dead Redis costs at most one timeout per window.
pub(crate) struct Redis {
    conn: ConnectionManager,
    cas: redis::Script,
    /// Set while Redis is failing; cleared by the next success.
    degraded: AtomicBool,
    /// Until when (milliseconds since `started`) Redis is left alone.
    retry_at_ms: AtomicU64,
    started: Instant,
}

impl Redis {
    /// Connects lazily: an unreachable Redis is not an error at start-up.
    pub(crate) fn new(url: &SecretString) -> Result<Redis, redis::RedisError> {
        let client = redis::Client::open(url.expose_secret())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        Ok(Redis {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            cas: redis::Script::new(CAS_SCRIPT),
            degraded: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis may be tried now (not inside the window after a failure).
    fn usable(&self) -> bool {
        self.elapsed_ms() >= self.retry_at_ms.load(Ordering::Relaxed)
    }

    /// Runs one command with the timeout and records the outcome.
    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        self.outcome(result)
    }

    fn outcome<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match result {
            Ok(Ok(v)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is back: rate limits are shared across nodes again");
                }
                Some(v)
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("{:?}", e.kind()),
                    _ => "timed out".to_owned(),
                };
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %why, "redis unreachable: rate limits fall back to this node's memory");
                }
                let retry = self.elapsed_ms().saturating_add(
                    u64::try_from(REDIS_RETRY_AFTER.as_millis()).unwrap_or(u64::MAX),
                );
                self.retry_at_ms.store(retry, Ordering::Relaxed);
                None
            }
        }
    }

    async fn get(&self, key: &str) -> Option<Option<String>> {
        self.call(redis::cmd("GET").arg(key)).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> Option<bool> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let mut invocation = self.cas.key(key);
        invocation.arg(old.unwrap_or("")).arg(new).arg(ttl_ms);
        let result =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        self.outcome(result).map(|done| done == 1)
    }

    async fn delete(&self, key: &str) -> Option<()> {
        self.call::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(|_| ())
    }

    /// Pings now, whatever the retry window says (readiness).
    async fn ping(&self) -> bool {
        self.call::<String>(&redis::cmd("PING")).await.is_some()
    }
}

/// The store one kind of limiter state uses: Redis when configured and answering (shared by
/// every `Kv` of the process), this store's own bounded memory otherwise.
pub(crate) struct Kv {
    redis: Option<Arc<Redis>>,
    memory: MemoryKv,
}

impl Kv {
    pub(crate) fn new(redis: Option<Arc<Redis>>, clock: Arc<dyn Clock>, capacity: u64) -> Kv {
        Kv {
            redis,
            memory: MemoryKv::new(clock, capacity),
        }
    }

    fn redis(&self) -> Option<&Redis> {
        self.redis.as_deref().filter(|r| r.usable())
    }

    pub(crate) async fn get(&self, key: &str) -> Option<String> {
        if let Some(redis) = self.redis()
            && let Some(v) = redis.get(key).await
        {
            return v;
        }
        self.memory.get(key)
    }

    pub(crate) async fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> bool {
        if let Some(redis) = self.redis()
            && let Some(done) = redis.compare_and_set(key, old, new, ttl).await
        {
            return done;
        }
        self.memory.compare_and_set(key, old, new, ttl)
    }

    pub(crate) async fn delete(&self, key: &str) {
        if let Some(redis) = self.redis()
            && redis.delete(key).await.is_some()
        {
            return;
        }
        self.memory.delete(key);
    }

    pub(crate) fn sweep(&self) {
        self.memory.sweep();
    }

    #[cfg(test)]
    pub(crate) fn memory(&self) -> &MemoryKv {
        &self.memory
    }
}

/// Redis state for readiness: `None` when not configured.
pub(crate) async fn check_redis(redis: Option<&Redis>) -> Option<bool> {
    Some(redis?.ping().await)
}

/// Whether Redis is configured but failing (limits are then per node).
pub(crate) fn redis_degraded(redis: Option<&Redis>) -> bool {
    redis.is_some_and(|r| r.degraded.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn memory_compare_and_set_and_expiry() {
        let clock = Arc::new(ManualClock::new());
        let kv = MemoryKv::new(clock.clone(), 100);
        assert!(kv.compare_and_set("k", None, "1", Duration::from_secs(10)));
        assert!(
            !kv.compare_and_set("k", None, "2", Duration::from_secs(10)),
            "not absent any more"
        );
        assert!(kv.compare_and_set("k", Some("1"), "2", Duration::from_secs(10)));
        assert_eq!(kv.get("k").as_deref(), Some("2"));
        clock.advance(Duration::from_secs(11));
        assert_eq!(kv.get("k"), None, "expired");
        assert!(kv.compare_and_set("k", None, "3", Duration::from_secs(10)));
        kv.delete("k");
        assert_eq!(kv.get("k"), None);
    }

    #[test]
    fn a_full_memory_store_keeps_tracking_new_keys_and_stays_bounded() {
        let clock = Arc::new(ManualClock::new());
        let kv = MemoryKv::new(clock, 1_000);
        let ttl = Duration::from_secs(60);
        assert!(kv.compare_and_set("tracked", None, "1", ttl));
        for i in 0..20_000 {
            assert!(kv.compare_and_set(&format!("flood:{i}"), None, "1", ttl));
            if i % 100 == 0 {
                // The tracked key is in use (updated), so it is never the least recent.
                let current = kv.get("tracked").expect("still tracked");
                let next = (current.parse::<u32>().expect("number") + 1).to_string();
                assert!(kv.compare_and_set("tracked", Some(&current), &next, ttl));
            }
        }
        assert!(kv.len() <= 1_000, "bounded: {} entries", kv.len());
        // A key never seen before is stored (and so limited), not waved through.
        assert!(kv.compare_and_set("newcomer", None, "1", ttl));
        assert!(
            !kv.compare_and_set("newcomer", None, "1", ttl),
            "the newcomer's state was kept"
        );
        assert_eq!(kv.get("newcomer").as_deref(), Some("1"));
        assert_eq!(kv.get("tracked").as_deref(), Some("201"));
    }
}
