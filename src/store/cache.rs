//! A short-lived cache of the two reads on every bearer-authenticated request: "is this
//! session live?" and "who is this user?".
//!
//! Entries live [`CACHE_TTL`] at most, so a revocation made by another node is seen within that
//! time (docs/ARCHITECTURE.md). Every write through this `Store` that could change an answer
//! drops the affected entries first, so on the node that made the change it is seen at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::UserRecord;
use crate::domain::{SessionId, UserId};

/// How long a cached answer may be used. Bounds how late another node sees a revocation.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// Entries per map at most; a full map is emptied (cheap, and refilled by the next reads).
const MAX_ENTRIES: usize = 50_000;

/// A live session: its owner, its absolute end, and when this was read.
type LiveSession = (UserId, Option<OffsetDateTime>, Instant);

#[derive(Debug, Default)]
pub(super) struct ReadCache {
    sessions: Mutex<HashMap<SessionId, LiveSession>>,
    users: Mutex<HashMap<UserId, (UserRecord, Instant)>>,
}

impl ReadCache {
    /// `Some(true)` when the session is known live for `user` at `now`; `None` when unknown.
    pub(super) fn session_live(
        &self,
        id: SessionId,
        user: UserId,
        now: OffsetDateTime,
    ) -> Option<bool> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (owner, expires_at, at) = map.get(&id)?;
        (at.elapsed() < CACHE_TTL && *owner == user && expires_at.is_none_or(|end| end > now))
            .then_some(true)
    }

    pub(super) fn remember_live(
        &self,
        id: SessionId,
        user: UserId,
        expires_at: Option<OffsetDateTime>,
    ) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(id, (user, expires_at, Instant::now()));
    }

    pub(super) fn user(&self, id: UserId) -> Option<UserRecord> {
        let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let (user, at) = map.get(&id)?;
        (at.elapsed() < CACHE_TTL).then(|| user.clone())
    }

    pub(super) fn remember_user(&self, user: &UserRecord) {
        let mut map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(user.id, (user.clone(), Instant::now()));
    }

    pub(super) fn forget_session(&self, id: SessionId) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// After a change to many sessions at once (rare: logout everywhere, password change…).
    pub(super) fn forget_all_sessions(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(super) fn forget_user(&self, id: UserId) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
