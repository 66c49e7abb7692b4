//! Where limiter state lives: process memory, or Redis shared by every node with memory as
//! the fallback while Redis is unreachable (fail open, never fail closed).
//!
//! The one primitive is compare-and-set with a time-to-live, which is all governor's GCRA and
//! the failed-login back-off need to stay correct when several nodes update one key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};

use crate::clock::{Clock, to_millis};

/// Entries kept in memory at most; beyond it expired entries are dropped, and if that is not
/// enough new keys are not tracked (failing open rather than growing without bound).
const MEMORY_MAX_ENTRIES: usize = 200_000;

/// How long Redis is left alone after a failure before it is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Timeouts for one Redis operation: a limiter must never hold a request up for long.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Process-memory store. Expiry follows the injected clock.
pub(crate) struct MemoryKv {
    map: Mutex<HashMap<String, (String, i64)>>,
    clock: Arc<dyn Clock>,
}

impl MemoryKv {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryKv {
            map: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn now_ms(&self) -> i64 {
        to_millis(self.clock.now())
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let now = self.now_ms();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone())
    }

    pub(crate) fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> bool {
        let now = self.now_ms();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let current = map
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.as_str());
        if current != old {
            return false;
        }
        if !map.contains_key(key) && map.len() >= MEMORY_MAX_ENTRIES {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MEMORY_MAX_ENTRIES {
                tracing::warn!(
                    "rate-limit memory full: new keys are not tracked until entries expire"
                );
                return true;
            }
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        map.insert(key.to_owned(), (new.to_owned(), now.saturating_add(ttl_ms)));
        true
    }

    pub(crate) fn delete(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Drops expired entries (called by the periodic purge).
    pub(crate) fn sweep(&self) {
        let now = self.now_ms();
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, exp)| *exp > now);
    }
}

/// Redis over one synchronous connection, re-opened after any failure. Callers run on the
/// blocking pool.
struct RedisKv {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    cas: redis::Script,
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

impl RedisKv {
    fn new(url: &SecretString) -> Result<RedisKv, redis::RedisError> {
        Ok(RedisKv {
            client: redis::Client::open(url.expose_secret())?,
            conn: Mutex::new(None),
            cas: redis::Script::new(CAS_SCRIPT),
        })
    }

    fn with_conn<T>(
        &self,
        op: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let conn = self.client.get_connection_with_timeout(REDIS_TIMEOUT)?;
            conn.set_read_timeout(Some(REDIS_TIMEOUT))?;
            conn.set_write_timeout(Some(REDIS_TIMEOUT))?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no connection",
            )));
        };
        let result = op(conn);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn get(&self, key: &str) -> redis::RedisResult<Option<String>> {
        self.with_conn(|c| redis::cmd("GET").arg(key).query(c))
    }

    fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.with_conn(|c| {
            let done: i64 = self
                .cas
                .key(key)
                .arg(old.unwrap_or(""))
                .arg(new)
                .arg(ttl_ms)
                .invoke(c)?;
            Ok(done == 1)
        })
    }

    fn delete(&self, key: &str) -> redis::RedisResult<()> {
        self.with_conn(|c| redis::cmd("DEL").arg(key).query(c))
    }

    fn ping(&self) -> bool {
        self.with_conn(|c| redis::cmd("PING").query::<String>(c))
            .is_ok()
    }
}

/// The store the limiters use: Redis when configured and answering, memory otherwise.
pub(crate) struct Kv {
    redis: Option<RedisKv>,
    memory: MemoryKv,
    /// Set while Redis is failing; cleared by the next success.
    degraded: AtomicBool,
    retry_at: Mutex<Option<Instant>>,
}

impl Kv {
    pub(crate) fn new(
        redis_url: Option<&SecretString>,
        clock: Arc<dyn Clock>,
    ) -> Result<Kv, String> {
        let redis = match redis_url {
            None => None,
            Some(url) => {
                Some(RedisKv::new(url).map_err(|e| format!("invalid redis_url: {:?}", e.kind()))?)
            }
        };
        Ok(Kv {
            redis,
            memory: MemoryKv::new(clock),
            degraded: AtomicBool::new(false),
            retry_at: Mutex::new(None),
        })
    }

    /// Whether operations may block on the network (then run them on the blocking pool).
    pub(crate) fn is_remote(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis is configured but failing (limits are then per node).
    pub(crate) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn redis(&self) -> Option<&RedisKv> {
        let redis = self.redis.as_ref()?;
        let retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        match *retry_at {
            Some(at) if Instant::now() < at => None,
            _ => Some(redis),
        }
    }

    fn outcome<T>(&self, result: redis::RedisResult<T>) -> Option<T> {
        match result {
            Ok(v) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is back: rate limits are shared across nodes again");
                }
                Some(v)
            }
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %format!("{:?}", e.kind()), "redis unreachable: rate limits fall back to this node's memory");
                }
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + REDIS_RETRY_AFTER);
                None
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        if let Some(redis) = self.redis()
            && let Some(v) = self.outcome(redis.get(key))
        {
            return v;
        }
        self.memory.get(key)
    }

    pub(crate) fn compare_and_set(
        &self,
        key: &str,
        old: Option<&str>,
        new: &str,
        ttl: Duration,
    ) -> bool {
        if let Some(redis) = self.redis()
            && let Some(done) = self.outcome(redis.compare_and_set(key, old, new, ttl))
        {
            return done;
        }
        self.memory.compare_and_set(key, old, new, ttl)
    }

    pub(crate) fn delete(&self, key: &str) {
        if let Some(redis) = self.redis()
            && self.outcome(redis.delete(key)).is_some()
        {
            return;
        }
        self.memory.delete(key);
    }

    /// Checks Redis now (readiness); `None` when Redis is not configured.
    pub(crate) fn check_redis(&self) -> Option<bool> {
        let redis = self.redis.as_ref()?;
        let ok = self.outcome(
            redis
                .ping()
                .then_some(())
                .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "ping failed"))),
        );
        Some(ok.is_some())
    }

    pub(crate) fn sweep(&self) {
        self.memory.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn memory_compare_and_set_and_expiry() {
        let clock = Arc::new(ManualClock::new());
        let kv = MemoryKv::new(clock.clone());
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
}
