//! Ended sessions: revoked session ids and per-person sign-out cut-offs, behind one small interface.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::store::{Record, RedisStore};

/// Why the revocation store could not answer. The request is refused (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The backend could not be reached or answered garbage (a shared store; the in-memory
    /// backend never fails).
    #[error("the {backend} revocation store is unavailable")]
    Unavailable {
        /// Which backend failed.
        backend: &'static str,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Where revocations live. An enum over backends rather than a trait object: the hot-path call
/// (`is_revoked`) is a plain `match` whose future lives inside the request's own future, so
/// there is no boxing (no allocation) per request, while each method stays `async` for a shared
/// store (Redis) that a later backend adds as another variant.
#[derive(Debug)]
pub enum Revocations {
    /// One process's memory: right for a single replica; lost on restart.
    Memory(MemoryRevocations),
    /// Shared by the replicas through Redis: this replica's copy, which every check reads (the
    /// request path never waits for Redis), kept in step by [`Revocations::follow`].
    Shared {
        /// This replica's copy.
        local: MemoryRevocations,
        /// The store every replica writes its sign-outs to and follows.
        store: Arc<RedisStore>,
    },
}

/// How often a replica reloads every sign-out from the shared store, besides following the
/// channel (a message lost on a broken connection is picked up by the next load).
pub const RESYNC_EVERY: Duration = Duration::from_secs(60);

impl Revocations {
    /// An in-memory store holding at most `capacity` records.
    pub fn memory(capacity: usize) -> Self {
        Revocations::Memory(MemoryRevocations::new(capacity))
    }

    /// A number that changes whenever a revocation is added: a session found not revoked at
    /// generation `g` is still not revoked while the generation is `g` (records only go away
    /// once no token they name can be valid). Read it before `is_revoked`, so a revocation that
    /// races with the check changes it and the next request checks again.
    pub fn generation(&self) -> u64 {
        self.local().generation.load(Ordering::Acquire)
    }

    fn local(&self) -> &MemoryRevocations {
        match self {
            Revocations::Memory(m) | Revocations::Shared { local: m, .. } => m,
        }
    }

    /// Keeps this replica's copy in step with the shared store (until the task is dropped);
    /// returns at once for the in-memory store. `now` is the gateway's clock.
    pub async fn follow(&self, now: impl Fn() -> i64) {
        let Revocations::Shared { local, store } = self else {
            return;
        };
        store
            .follow(
                RESYNC_EVERY,
                &now,
                || local.records(now()),
                |record| local.apply(&record, now()),
            )
            .await;
    }

    /// Whether the session `sid` of person `sub`, authenticated at `auth_time`, has ended.
    pub async fn is_revoked(
        &self,
        sid: &str,
        sub: &str,
        auth_time: i64,
    ) -> Result<bool, RevocationError> {
        Ok(self.local().is_revoked(sid, sub, auth_time))
    }

    /// Ends session `sid`; the record is kept until `until` (Unix seconds), the latest time a
    /// token carrying `sid` could still be valid.
    pub async fn revoke_session(
        &self,
        sid: &str,
        until: i64,
        now: i64,
    ) -> Result<(), RevocationError> {
        self.local().insert(Key::Session(sid), until, now);
        self.share(
            Record::Session {
                sid: sid.to_owned(),
                until,
            },
            now,
        )
        .await;
        Ok(())
    }

    /// Ends every session of person `sub` authenticated at or before `cutoff`; the record is
    /// kept until `until`, after which no such session can be valid (`max_lifetime`).
    pub async fn revoke_person(
        &self,
        sub: &str,
        cutoff: i64,
        until: i64,
        now: i64,
    ) -> Result<(), RevocationError> {
        self.local().insert(Key::Person(sub, cutoff), until, now);
        self.share(
            Record::Person {
                sub: sub.to_owned(),
                cutoff,
                until,
            },
            now,
        )
        .await;
        Ok(())
    }

    /// Tells the other replicas. The sign-out already holds here; when Redis is away it is
    /// sent once Redis is back (the store logs the outage once).
    async fn share(&self, record: Record, now: i64) {
        if let Revocations::Shared { store, .. } = self {
            let _ = store.publish(&record, now).await;
        }
    }
}

fn record_until(record: &Record) -> i64 {
    match record {
        Record::Session { until, .. } | Record::Person { until, .. } => *until,
    }
}

enum Key<'a> {
    Session(&'a str),
    Person(&'a str, i64),
}

/// Revocations in this process's memory, bounded by a capacity.
///
/// Records expire at their `until` and are pruned when a record is added (at most once per
/// [`PRUNE_EVERY_SECS`], and always before the capacity is declared full). When a record does
/// not fit even after pruning, the store fails closed: it ends every session authenticated up
/// to that second (a global cut-off; everyone signs in again) and drops all records, which that
/// cut-off now covers. A revocation is therefore never lost; memory stays bounded.
#[derive(Debug)]
pub struct MemoryRevocations {
    capacity: usize,
    inner: RwLock<Inner>,
    /// Bumped after every added record (see [`Revocations::generation`]).
    generation: AtomicU64,
}

/// How often adding a record also sweeps expired ones, in seconds.
pub const PRUNE_EVERY_SECS: i64 = 60;

#[derive(Debug, Default)]
struct Inner {
    /// Revoked sid → keep until.
    sessions: HashMap<String, i64>,
    /// unionId → (cut-off, keep until).
    people: HashMap<String, (i64, i64)>,
    /// Sessions authenticated at or before this are ended (set when the store overflowed).
    everyone_before: Option<i64>,
    next_prune: i64,
}

impl Inner {
    fn len(&self) -> usize {
        self.sessions.len() + self.people.len()
    }

    fn prune(&mut self, now: i64) {
        self.sessions.retain(|_, until| *until > now);
        self.people.retain(|_, (_, until)| *until > now);
        self.next_prune = now.saturating_add(PRUNE_EVERY_SECS);
    }
}

impl MemoryRevocations {
    /// An empty store for at most `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: RwLock::new(Inner::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// How many records are held (sessions plus people).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // un-revokes anything, so a poisoned lock is still read.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn is_revoked(&self, sid: &str, sub: &str, auth_time: i64) -> bool {
        let inner = self.read();
        inner.everyone_before.is_some_and(|t| auth_time <= t)
            || inner.sessions.contains_key(sid)
            || inner
                .people
                .get(sub)
                .is_some_and(|(cutoff, _)| auth_time <= *cutoff)
    }

    /// Every record that still matters at `now`, to hand to the shared store.
    fn records(&self, now: i64) -> Vec<Record> {
        let inner = self.read();
        let sessions = inner
            .sessions
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(sid, until)| Record::Session {
                sid: sid.clone(),
                until: *until,
            });
        let people = inner
            .people
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(sub, (cutoff, until))| Record::Person {
                sub: sub.clone(),
                cutoff: *cutoff,
                until: *until,
            });
        sessions.chain(people).collect()
    }

    /// Adds a record another replica made; one this copy holds already changes nothing (the
    /// generation stays, so cached sessions need no new check).
    fn apply(&self, record: &Record, now: i64) {
        let known = {
            let inner = self.read();
            match record {
                Record::Session { sid, until } => {
                    inner.sessions.get(sid).is_some_and(|u| u >= until)
                }
                Record::Person { sub, cutoff, until } => inner
                    .people
                    .get(sub)
                    .is_some_and(|(c, u)| c >= cutoff && u >= until),
            }
        };
        if known || record_until(record) <= now {
            return;
        }
        match record {
            Record::Session { sid, until } => self.insert(Key::Session(sid), *until, now),
            Record::Person { sub, cutoff, until } => {
                self.insert(Key::Person(sub, *cutoff), *until, now)
            }
        }
    }

    fn insert(&self, key: Key<'_>, until: i64, now: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.record(&mut inner, key, until, now);
        // Still under the write lock: whoever reads the new generation then sees the record.
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn record(&self, inner: &mut Inner, key: Key<'_>, until: i64, now: i64) {
        if now >= inner.next_prune {
            inner.prune(now);
        }
        let present = match key {
            Key::Session(sid) => inner.sessions.contains_key(sid),
            Key::Person(sub, _) => inner.people.contains_key(sub),
        };
        if !present && inner.len() >= self.capacity {
            inner.prune(now);
            if inner.len() >= self.capacity {
                tracing::error!(
                    capacity = self.capacity,
                    "revocation store full: ending every current session (raise session.max_revocations)"
                );
                inner.sessions.clear();
                inner.people.clear();
                inner.everyone_before = Some(now);
                return;
            }
        }
        match key {
            Key::Session(sid) => {
                let e = inner.sessions.entry(sid.to_owned()).or_insert(until);
                *e = (*e).max(until);
            }
            Key::Person(sub, cutoff) => {
                let e = inner
                    .people
                    .entry(sub.to_owned())
                    .or_insert((cutoff, until));
                *e = (e.0.max(cutoff), e.1.max(until));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn revoked_session_until_it_expires() {
        let r = Revocations::memory(10);
        block(async {
            assert!(!r.is_revoked("s1", "u1", NOW - 10).await.unwrap());
            r.revoke_session("s1", NOW + 100, NOW).await.unwrap();
            assert!(r.is_revoked("s1", "u1", NOW - 10).await.unwrap());
            assert!(!r.is_revoked("s2", "u1", NOW - 10).await.unwrap());
            // An earlier `until` never shortens a record.
            r.revoke_session("s1", NOW + 1, NOW).await.unwrap();
            let Revocations::Memory(m) = &r else {
                unreachable!()
            };
            m.insert(
                Key::Session("other"),
                NOW + 500,
                NOW + 100 + PRUNE_EVERY_SECS,
            );
            assert!(!m.is_revoked("s1", "u1", NOW - 10), "pruned after until");
            assert_eq!(m.len(), 1);
        });
    }

    #[test]
    fn person_cutoff_covers_earlier_sessions_only() {
        let r = Revocations::memory(10);
        block(async {
            r.revoke_person("u1", NOW, NOW + 1000, NOW).await.unwrap();
            assert!(r.is_revoked("a", "u1", NOW - 5).await.unwrap());
            assert!(r.is_revoked("a", "u1", NOW).await.unwrap(), "same second");
            assert!(!r.is_revoked("a", "u1", NOW + 1).await.unwrap());
            assert!(!r.is_revoked("a", "u2", NOW - 5).await.unwrap());
            // A later cut-off moves forward; an earlier one does not move it back.
            r.revoke_person("u1", NOW + 50, NOW + 1000, NOW)
                .await
                .unwrap();
            r.revoke_person("u1", NOW + 10, NOW + 1000, NOW)
                .await
                .unwrap();
            assert!(r.is_revoked("a", "u1", NOW + 40).await.unwrap());
        });
    }

    #[test]
    fn full_store_fails_closed_for_everyone_then_recovers() {
        let Revocations::Memory(m) = Revocations::memory(2) else {
            unreachable!()
        };
        m.insert(Key::Session("a"), NOW + 100, NOW);
        m.insert(Key::Session("b"), NOW + 100, NOW);
        assert_eq!(m.len(), 2);
        // Re-revoking a present record needs no room.
        m.insert(Key::Session("a"), NOW + 200, NOW);
        assert_eq!(m.len(), 2);
        assert!(!m.is_revoked("x", "u", NOW - 1));
        m.insert(Key::Person("u", NOW), NOW + 100, NOW);
        assert!(
            m.is_empty(),
            "records dropped, covered by the global cut-off"
        );
        for sid in ["a", "b", "x"] {
            assert!(m.is_revoked(sid, "anyone", NOW), "{sid}");
        }
        assert!(!m.is_revoked("new", "anyone", NOW + 1), "later logins work");
        // Expired records make room before the store counts as full.
        m.insert(Key::Session("c"), NOW + 10, NOW + 1);
        m.insert(Key::Session("d"), NOW + 10, NOW + 1);
        m.insert(Key::Session("e"), NOW + 100, NOW + 20);
        assert!(m.is_revoked("e", "u", NOW + 5) && !m.is_revoked("c", "u", NOW + 5));
        assert!(!m.is_revoked("new", "anyone", NOW + 2));
    }
}
