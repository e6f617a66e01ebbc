//! OAuth `state`: one short-lived, signed, HttpOnly cookie per login flow, checked before any code is used.
//!
//! Each login gets a random 256-bit `state`. The browser keeps a cookie named after the first
//! characters of that state whose value is `iat.rd.mac`, where `mac` = HMAC-SHA256 over the
//! *full* state, `iat` and the return URL. The state itself is never stored, so a leaked cookie
//! value is useless without the state, and a state is useless without the cookie (login CSRF).
//! Several tabs can log in at once; the number of flows per browser is capped so the cookies can
//! never push requests over header limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::session::cookie::cookie_names;

type HmacSha256 = Hmac<Sha256>;

/// Length of a state string: 32 random bytes, base64url without padding.
const STATE_LEN: usize = 43;
/// How many characters of the state name its cookie (96 bits: collisions are not a concern).
const NAME_CHARS: usize = 16;
/// Upper bound on remembered (consumed) states before the oldest are forgotten.
const MAX_CONSUMED: usize = 100_000;

/// Why a callback's state was refused. Every variant means: no DingTalk call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// No `state` parameter, or not one we could have issued.
    #[error("the callback has no valid state parameter")]
    Missing,
    /// No login cookie for this state (another browser, cookies blocked, or already used).
    #[error(
        "no login cookie matches the state (different browser, cookies blocked, or already used)"
    )]
    NoCookie,
    /// The cookie exists but its signature does not match this state.
    #[error("the login cookie does not match the state")]
    Mismatch,
    /// The login took longer than the configured login timeout.
    #[error("the login attempt expired")]
    Expired,
    /// This state was already used once.
    #[error("the state was already used")]
    Replayed,
}

/// Settings for login-state cookies.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSettings {
    /// Cookie name prefix, e.g. `_dinggate_csrf_`.
    pub cookie_prefix: String,
    /// Cookie `Path` (the gateway prefix followed by `/`), so the cookies only go to gateway endpoints.
    pub cookie_path: String,
    /// `Secure` attribute.
    pub secure: bool,
    /// How long a login may take.
    pub ttl: Duration,
    /// Maximum simultaneous login flows per browser.
    pub max_flows: usize,
}

/// A login that has just been started.
#[derive(Debug)]
pub struct NewFlow {
    /// The `state` to send to DingTalk.
    pub state: String,
    /// The cookie binding it to this browser.
    pub cookie: Cookie<'static>,
    /// Removal cookies for the oldest flows when the browser already has the maximum.
    pub evicted: Vec<Cookie<'static>>,
}

/// A state that checked out.
#[derive(Debug)]
pub struct FinishedFlow {
    /// The validated return URL stored at start.
    pub return_to: String,
    /// The removal cookie for this flow's state cookie.
    pub clear: Cookie<'static>,
}

/// Issues and checks login states. Holds the HMAC key and the set of used states.
pub struct LoginStates {
    key: [u8; 32],
    settings: StateSettings,
    consumed: Mutex<HashMap<[u8; 32], i64>>,
}

impl std::fmt::Debug for LoginStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginStates")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LoginStates {
    /// `secret` is the session signing key; a purpose-specific key is derived from it so a
    /// state MAC can never be confused with a session signature.
    pub fn new(secret: &[u8], settings: StateSettings) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(b"dinggate login state v1");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            key,
            settings,
            consumed: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &StateSettings {
        &self.settings
    }

    /// Whether `name` is one of our login-state cookies.
    pub fn is_state_cookie(&self, name: &str) -> bool {
        name.starts_with(&self.settings.cookie_prefix)
    }

    /// Starts a flow that will return to `return_to` (already validated), evicting the oldest
    /// flows in `headers` beyond the per-browser limit. `now` is in microseconds: flows started
    /// in the same second must still be ordered, so the oldest is the one evicted.
    pub fn begin(&self, headers: &HeaderMap, return_to: &str, now: i64) -> NewFlow {
        let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let rd = URL_SAFE_NO_PAD.encode(return_to.as_bytes());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&state, now, &rd));
        let cookie = self.cookie(
            format!("{}{}", self.settings.cookie_prefix, &state[..NAME_CHARS]),
            format!("{now}.{rd}.{mac}"),
            Some(self.settings.ttl),
        );

        let mut existing: Vec<(i64, String)> = cookie_names(headers)
            .filter(|(name, _)| self.is_state_cookie(name))
            .map(|(name, value)| (issued_at(value).unwrap_or(i64::MIN), name.to_owned()))
            .collect();
        existing.sort();
        existing.dedup_by(|a, b| a.1 == b.1);
        let excess = (existing.len() + 1).saturating_sub(self.settings.max_flows);
        let evicted = existing
            .into_iter()
            .take(excess)
            .map(|(_, name)| self.cookie(name, String::new(), None))
            .collect();
        NewFlow {
            state,
            cookie,
            evicted,
        }
    }

    /// Checks `state` against the browser's cookies and consumes it (`now` in microseconds).
    pub fn finish(
        &self,
        headers: &HeaderMap,
        state: &str,
        now: i64,
    ) -> Result<FinishedFlow, StateError> {
        if state.len() != STATE_LEN
            || !state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(StateError::Missing);
        }
        let name = format!("{}{}", self.settings.cookie_prefix, &state[..NAME_CHARS]);
        let clear = self.cookie(name.clone(), String::new(), None);
        let value = cookie_names(headers)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or(StateError::NoCookie)?;

        let mut parts = value.splitn(3, '.');
        let (Some(iat), Some(rd), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StateError::Mismatch);
        };
        let iat: i64 = iat.parse().map_err(|_| StateError::Mismatch)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| StateError::Mismatch)?;
        let mut expected =
            HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        expected.update(&mac_input(state, iat, rd));
        // verify_slice compares in constant time.
        expected
            .verify_slice(&mac)
            .map_err(|_| StateError::Mismatch)?;

        let ttl = i64::try_from(self.settings.ttl.as_micros()).unwrap_or(i64::MAX);
        // Up to a minute of clock skew between replicas is tolerated.
        if now < iat.saturating_sub(60_000_000) || now > iat.saturating_add(ttl) {
            return Err(StateError::Expired);
        }
        let return_to = URL_SAFE_NO_PAD
            .decode(rd)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(StateError::Mismatch)?;

        self.consume(state, iat.saturating_add(ttl), now)?;
        Ok(FinishedFlow { return_to, clear })
    }

    /// The removal cookie for the flow named by `state`, when it looks like one of ours.
    pub fn clear_cookie_for(&self, state: &str) -> Option<Cookie<'static>> {
        (state.len() == STATE_LEN && state.is_ascii()).then(|| {
            self.cookie(
                format!("{}{}", self.settings.cookie_prefix, &state[..NAME_CHARS]),
                String::new(),
                None,
            )
        })
    }

    fn consume(&self, state: &str, expires: i64, now: i64) -> Result<(), StateError> {
        let digest: [u8; 32] = Sha256::digest(state.as_bytes()).into();
        // A poisoned lock only means another request panicked mid-insert; the map is still valid.
        let mut used = self.consumed.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() >= MAX_CONSUMED {
            used.retain(|_, exp| *exp >= now);
            while used.len() >= MAX_CONSUMED {
                let Some(oldest) = used.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
                    break;
                };
                used.remove(&oldest);
            }
        }
        if used.insert(digest, expires).is_some() {
            return Err(StateError::Replayed);
        }
        Ok(())
    }

    fn mac(&self, state: &str, iat: i64, rd: &str) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&mac_input(state, iat, rd));
        mac.finalize().into_bytes().into()
    }

    fn cookie(&self, name: String, value: String, max_age: Option<Duration>) -> Cookie<'static> {
        let max_age = max_age
            .map(|d| cookie::time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(600)))
            .unwrap_or(cookie::time::Duration::ZERO);
        Cookie::build((name, value))
            .path(self.settings.cookie_path.clone())
            .http_only(true)
            // Lax is required: the callback is a top-level cross-site GET from DingTalk.
            .same_site(SameSite::Lax)
            .secure(self.settings.secure)
            .max_age(max_age)
            .build()
    }
}

fn mac_input(state: &str, iat: i64, rd: &str) -> Vec<u8> {
    format!("{state}|{iat}|{rd}").into_bytes()
}

fn issued_at(value: &str) -> Option<i64> {
    value.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// One second in microseconds.
    const S: i64 = 1_000_000;

    fn states(max_flows: usize) -> LoginStates {
        LoginStates::new(
            b"0123456789abcdef0123456789abcdef",
            StateSettings {
                cookie_prefix: "_dg_csrf_".into(),
                cookie_path: "/_dinggate/".into(),
                secure: true,
                ttl: Duration::from_secs(600),
                max_flows,
            },
        )
    }

    fn jar(cookies: &[&Cookie<'_>]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let line = cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ");
        h.insert(http::header::COOKIE, HeaderValue::from_str(&line).unwrap());
        h
    }

    #[test]
    fn round_trip_returns_the_url_and_is_single_use() {
        let s = states(4);
        let flow = s.begin(&HeaderMap::new(), "/app?x=1", 1000 * S);
        assert_eq!(flow.state.len(), STATE_LEN);
        assert!(flow.cookie.http_only().unwrap_or(false));
        assert_eq!(flow.cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(flow.cookie.path(), Some("/_dinggate/"));
        let h = jar(&[&flow.cookie]);
        let done = s.finish(&h, &flow.state, 1010 * S).expect("valid");
        assert_eq!(done.return_to, "/app?x=1");
        assert_eq!(done.clear.max_age(), Some(cookie::time::Duration::ZERO));
        assert_eq!(
            s.finish(&h, &flow.state, 1011 * S).unwrap_err(),
            StateError::Replayed
        );
    }

    #[test]
    fn wrong_missing_expired_states_fail() {
        let s = states(4);
        let a = s.begin(&HeaderMap::new(), "/a", 1000 * S);
        let b = s.begin(&HeaderMap::new(), "/b", 1000 * S);
        let h = jar(&[&a.cookie]);
        assert_eq!(s.finish(&h, "", 1000 * S).unwrap_err(), StateError::Missing);
        assert_eq!(
            s.finish(&h, "../../etc", 1000 * S).unwrap_err(),
            StateError::Missing
        );
        assert_eq!(
            s.finish(&h, &b.state, 1000 * S).unwrap_err(),
            StateError::NoCookie
        );
        // Same cookie name prefix but a different state: the MAC must not verify.
        let forged = format!("{}{}", &a.state[..NAME_CHARS], &b.state[NAME_CHARS..]);
        assert_eq!(
            s.finish(&h, &forged, 1000 * S).unwrap_err(),
            StateError::Mismatch
        );
        assert_eq!(
            s.finish(&h, &a.state, (1000 + 601) * S).unwrap_err(),
            StateError::Expired
        );
    }

    #[test]
    fn tampered_return_url_fails() {
        let s = states(4);
        let a = s.begin(&HeaderMap::new(), "/a", 1000 * S);
        let mut parts: Vec<&str> = a.cookie.value().split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode("https://evil.example");
        parts[1] = &evil;
        let forged = Cookie::new(a.cookie.name().to_owned(), parts.join("."));
        assert_eq!(
            s.finish(&jar(&[&forged]), &a.state, 1000 * S).unwrap_err(),
            StateError::Mismatch
        );
    }

    #[test]
    fn parallel_flows_all_finish_and_oldest_is_evicted_past_the_cap() {
        let s = states(3);
        let f1 = s.begin(&HeaderMap::new(), "/1", 1000 * S);
        let f2 = s.begin(&jar(&[&f1.cookie]), "/2", 1001 * S);
        let f3 = s.begin(&jar(&[&f1.cookie, &f2.cookie]), "/3", 1002 * S);
        assert!(f2.evicted.is_empty() && f3.evicted.is_empty());
        let all = jar(&[&f1.cookie, &f2.cookie, &f3.cookie]);
        let f4 = s.begin(&all, "/4", 1003 * S);
        assert_eq!(f4.evicted.len(), 1);
        assert_eq!(f4.evicted[0].name(), f1.cookie.name());
        // In any order, each of the live flows completes.
        let all4 = jar(&[&f2.cookie, &f3.cookie, &f4.cookie]);
        assert_eq!(
            s.finish(&all4, &f3.state, 1004 * S).unwrap().return_to,
            "/3"
        );
        assert_eq!(
            s.finish(&all4, &f2.state, 1004 * S).unwrap().return_to,
            "/2"
        );
        assert_eq!(
            s.finish(&all4, &f4.state, 1004 * S).unwrap().return_to,
            "/4"
        );
    }

    #[test]
    fn cookie_stays_small_even_with_a_long_return_url() {
        let s = states(4);
        let long = format!("/{}", "a".repeat(1023));
        let f = s.begin(&HeaderMap::new(), &long, 1000 * S);
        let len = f.cookie.name().len() + f.cookie.value().len();
        assert!(len < 1500, "state cookie is {len} bytes");
    }
}
