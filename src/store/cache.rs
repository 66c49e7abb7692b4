//! A short-lived cache of the two reads on every bearer-authenticated request: "is this
//! session live?" and "who is this user?".
//!
//! Entries live [`CACHE_TTL`] at most, measured on the server's [`Clock`] (so tests cross it
//! by advancing a manual clock), and a revocation made by another node is seen within that
//! time (docs/ARCHITECTURE.md). Every write through this `Store` that could change an answer
//! drops the affected entries, so on the node that made the change it is seen at once.
//!
//! A read that raced such a write must not put its older answer back: each map has an epoch,
//! bumped (under the map's lock) by every drop; a reader takes the epoch before its query and
//! its answer is stored only if no drop happened in between.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::UserRecord;
use crate::clock::{Clock, SystemClock};
use crate::domain::{SessionId, UserId};

/// How long a cached answer may be used. Bounds how late another node sees a revocation.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// Entries per map at most; a full map is emptied (cheap, and refilled by the next reads).
const MAX_ENTRIES: usize = 50_000;

/// A live session: its owner, its absolute end, and when this was read.
type LiveSession = (UserId, Option<OffsetDateTime>, OffsetDateTime);

/// The epoch of one map, taken by a reader before its query (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) struct Epoch(u64);

/// One map and its epoch, under one lock.
#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, V>,
    epoch: u64,
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries {
            map: HashMap::new(),
            epoch: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Entries<K, V> {
    /// Stores `value` unless a drop happened since `seen`.
    fn insert_if_current(&mut self, seen: Epoch, key: K, value: V) {
        if self.epoch != seen.0 {
            return;
        }
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, value);
    }

    fn forget(&mut self, key: Option<&K>) {
        self.epoch = self.epoch.wrapping_add(1);
        match key {
            Some(key) => {
                self.map.remove(key);
            }
            None => self.map.clear(),
        }
    }
}

pub(super) struct ReadCache {
    clock: Arc<dyn Clock>,
    sessions: Mutex<Entries<SessionId, LiveSession>>,
    users: Mutex<Entries<UserId, (UserRecord, OffsetDateTime)>>,
    /// Lets a unit test stop a read between its query and its insert.
    #[cfg(test)]
    pub(super) hold: crate::testing::HoldPoint,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache").finish_non_exhaustive()
    }
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache::new(Arc::new(SystemClock))
    }
}

/// Whether an entry read at `at` may still be used at `now` (a clock that went back counts as
/// stale).
fn fresh(at: OffsetDateTime, now: OffsetDateTime) -> bool {
    let age = now - at;
    !age.is_negative() && age < CACHE_TTL
}

impl ReadCache {
    pub(super) fn new(clock: Arc<dyn Clock>) -> ReadCache {
        ReadCache {
            clock,
            sessions: Mutex::default(),
            users: Mutex::default(),
            #[cfg(test)]
            hold: Default::default(),
        }
    }

    /// `Some(true)` when the session is known live for `user` at `now`; `None` when unknown.
    pub(super) fn session_live(
        &self,
        id: SessionId,
        user: UserId,
        now: OffsetDateTime,
    ) -> Option<bool> {
        let entries = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, expires_at, at) = entries.map.get(&id)?;
        (fresh(*at, self.clock.now()) && *owner == user && expires_at.is_none_or(|end| end > now))
            .then_some(true)
    }

    /// The sessions' epoch: take it before reading a session from the database.
    pub(super) fn session_epoch(&self) -> Epoch {
        Epoch(
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .epoch,
        )
    }

    /// Remembers a session read as live after `seen` was taken.
    pub(super) fn remember_live(
        &self,
        seen: Epoch,
        id: SessionId,
        user: UserId,
        expires_at: Option<OffsetDateTime>,
    ) {
        let now = self.clock.now();
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert_if_current(seen, id, (user, expires_at, now));
    }

    pub(super) fn user(&self, id: UserId) -> Option<UserRecord> {
        let entries = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let (user, at) = entries.map.get(&id)?;
        fresh(*at, self.clock.now()).then(|| user.clone())
    }

    /// The users' epoch: take it before reading a user from the database.
    pub(super) fn user_epoch(&self) -> Epoch {
        Epoch(self.users.lock().unwrap_or_else(|e| e.into_inner()).epoch)
    }

    /// Remembers a user read after `seen` was taken.
    pub(super) fn remember_user(&self, seen: Epoch, user: &UserRecord) {
        let now = self.clock.now();
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert_if_current(seen, user.id, (user.clone(), now));
    }

    pub(super) fn forget_session(&self, id: SessionId) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(Some(&id));
    }

    /// After a change to many sessions at once (rare: logout everywhere, password change…).
    pub(super) fn forget_all_sessions(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(None);
    }

    pub(super) fn forget_user(&self, id: UserId) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(Some(&id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn an_entry_expires_after_the_ttl_on_the_injected_clock() {
        let clock = Arc::new(ManualClock::new());
        let cache = ReadCache::new(clock.clone());
        let (id, user) = (SessionId::new(), UserId::new());
        let now = clock.now();
        cache.remember_live(cache.session_epoch(), id, user, None);
        assert_eq!(cache.session_live(id, user, now), Some(true));
        clock.advance(CACHE_TTL - Duration::from_millis(1));
        assert_eq!(cache.session_live(id, user, now), Some(true));
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            cache.session_live(id, user, now),
            None,
            "expired at the TTL"
        );
    }

    #[test]
    fn an_answer_read_before_a_drop_is_not_stored_after_it() {
        let cache = ReadCache::default();
        let (id, other, user) = (SessionId::new(), SessionId::new(), UserId::new());
        let now = OffsetDateTime::now_utc();
        let seen = cache.session_epoch();
        cache.forget_session(other);
        cache.remember_live(seen, id, user, None);
        assert_eq!(cache.session_live(id, user, now), None);
        cache.remember_live(cache.session_epoch(), id, user, None);
        assert_eq!(cache.session_live(id, user, now), Some(true));
    }
}
