//! The verified-session cache: a session token verified once is not verified again until it expires.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderValue;

use crate::config::IdentityHeaders;
use crate::identity::Identity;
use crate::proxy::headers::IdentityValues;
use crate::session::jwt::SessionClaims;

/// A session token that verified (signature, issuer, audience, expiry, `max_lifetime`), with
/// everything the fast path needs from it made once: the identity and its encoded headers.
#[derive(Debug)]
pub struct VerifiedSession {
    /// The token's claims.
    pub claims: SessionClaims,
    /// Who the session belongs to.
    pub identity: Identity,
    /// The identity headers for upstreams and forward-auth answers.
    pub headers: IdentityValues,
    /// The token is refused from this time on (Unix seconds): its `exp`, or the end of the
    /// login's `max_lifetime`, whichever comes first.
    pub usable_until: i64,
    /// The revocation generation at which this session was last found not revoked
    /// ([`crate::session::revocation::Revocations::generation`]).
    checked: AtomicU64,
    /// Signed identity assertions minted for this session: (route index, renew at, value).
    assertions: Mutex<Vec<(usize, i64, HeaderValue)>>,
    /// When a use of this session was last noted for the sessions list (Unix seconds; 0 = not
    /// yet).
    noted: AtomicI64,
}

/// A generation no store reaches: "never checked".
const UNCHECKED: u64 = u64::MAX;

impl VerifiedSession {
    /// Wraps verified `claims`; `max_lifetime_secs` is `session.max_lifetime`.
    pub fn new(claims: SessionClaims, names: &IdentityHeaders, max_lifetime_secs: i64) -> Self {
        let identity = claims.identity();
        let headers = IdentityValues::new(names, &identity);
        // Accepted while `age <= max_lifetime`, i.e. until `auth_time + max_lifetime + 1`.
        let lifetime_end = claims
            .auth_time
            .saturating_add(max_lifetime_secs)
            .saturating_add(1);
        Self {
            usable_until: claims.exp.min(lifetime_end),
            claims,
            identity,
            headers,
            checked: AtomicU64::new(UNCHECKED),
            assertions: Mutex::new(Vec::new()),
            noted: AtomicI64::new(0),
        }
    }

    /// True at most once per `every` seconds of use: whether a use at `now` should be noted.
    /// The first use only starts the clock (the login itself recorded the session), so a
    /// session verified anew for each request (no cache) never causes a write.
    pub fn use_due(&self, now: i64, every: i64) -> bool {
        let last = self.noted.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every {
            return false;
        }
        self.noted
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && last != 0
    }

    /// The signed assertion of this session for route `route`: the one minted before while
    /// `now` is in the first half of its lifetime, else a new one from `mint` (value and
    /// expiry). Minting happens under the session's lock, so concurrent requests of one
    /// session sign once.
    pub fn assertion(
        &self,
        route: usize,
        now: i64,
        mint: impl FnOnce() -> Option<(HeaderValue, i64)>,
    ) -> Option<HeaderValue> {
        let mut minted = self.assertions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, value)) = minted
            .iter()
            .find(|(r, renew_at, _)| *r == route && now < *renew_at)
        {
            return Some(value.clone());
        }
        let (value, exp) = mint()?;
        minted.retain(|(r, ..)| *r != route);
        minted.push((route, now + (exp - now) / 2, value.clone()));
        Some(value)
    }

    /// Whether it was found not revoked at `generation`.
    pub fn checked_at(&self, generation: u64) -> bool {
        self.checked.load(Ordering::Relaxed) == generation
    }

    /// Records that it was found not revoked at `generation`.
    pub fn mark_checked(&self, generation: u64) {
        self.checked.store(generation, Ordering::Relaxed);
    }
}

/// Token → verified session, bounded (`session.cache_entries`; 0 turns it off).
///
/// Keys are whole tokens compared in full, so a hit is exactly a token that verified before;
/// only tokens that verified are inserted, so nobody can fill the cache without valid sessions.
/// A hit is used only before its `usable_until`; revocations are still checked on every hit
/// (cheaply: only when a revocation was added since the last check). Signing keys are fixed for
/// the life of the process; anything that changes them must clear the cache.
pub struct SessionCache {
    entries: Option<quick_cache::sync::Cache<Box<str>, Arc<VerifiedSession>>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.entries.as_ref().map(|c| c.len()))
            .finish()
    }
}

impl SessionCache {
    /// A cache of at most `capacity` sessions (none at all for 0).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The session of `token` if it verified before and is still usable at `now`.
    pub fn get(&self, token: &str, now: i64) -> Option<Arc<VerifiedSession>> {
        let entries = self.entries.as_ref()?;
        let hit = entries.get(token)?;
        if now < hit.usable_until {
            return Some(hit);
        }
        entries.remove(token);
        None
    }

    /// Remembers that `token` verified as `session`.
    pub fn insert(&self, token: &str, session: Arc<VerifiedSession>) {
        if let Some(entries) = &self.entries {
            entries.insert(token.into(), session);
        }
    }

    /// Forgets `token` (revoked, or re-validated into a new token).
    pub fn remove(&self, token: &str) {
        if let Some(entries) = &self.entries {
            entries.remove(token);
        }
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |c| c.len())
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
