//! The mock's mutable state: live org, issued codes and tokens with their expiry, queued faults and the call log.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::org::Org;
use super::wire::random_token;
use super::{Fault, RecordedCall};

/// Refresh tokens live 30 days (per the DingTalk docs).
const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// In-client (免登) codes live 5 minutes (per the DingTalk docs).
pub(super) const JSAPI_CODE_TTL: Duration = Duration::from_secs(5 * 60);

/// Calls kept in the log; older ones are dropped so a long-running demo stays bounded.
pub(super) const MAX_RECORDED_CALLS: usize = 10_000;

/// What an OAuth authorization code, a user token or a refresh token stands for.
#[derive(Debug, Clone)]
pub(super) struct UserGrant {
    pub userid: String,
    /// The authorize `scope` contained `corpid`, so token responses carry `corpId`.
    pub with_corp: bool,
    /// The organization picked on the authorize page (for people in several); `None`: the
    /// person's own `corp_id`.
    pub picked_corp: Option<String>,
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Everything that changes while the mock runs. Guarded by one mutex, never held across an await.
#[derive(Debug)]
pub(super) struct State {
    pub org: Org,
    pub clock_offset: Duration,
    pub calls: VecDeque<RecordedCall>,
    pub jsapi_requests: Vec<super::JsapiRequest>,
    pub faults: HashMap<String, (Fault, u32)>,
    auth_codes: HashMap<String, Expiring<UserGrant>>,
    user_tokens: HashMap<String, Expiring<UserGrant>>,
    refresh_tokens: HashMap<String, Expiring<UserGrant>>,
    jsapi_codes: HashMap<String, Expiring<String>>,
    app_token: Option<Expiring<String>>,
}

impl State {
    pub(super) fn new(org: Org) -> State {
        State {
            org,
            clock_offset: Duration::ZERO,
            calls: VecDeque::new(),
            jsapi_requests: Vec::new(),
            faults: HashMap::new(),
            auth_codes: HashMap::new(),
            user_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            jsapi_codes: HashMap::new(),
            app_token: None,
        }
    }

    /// The mock clock: real monotonic time plus everything `advance_clock` added.
    pub(super) fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    pub(super) fn record(&mut self, call: RecordedCall) {
        if self.calls.len() >= MAX_RECORDED_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }

    /// Consumes one pending fault for `path`, if any.
    pub(super) fn take_fault(&mut self, path: &str) -> Option<Fault> {
        let entry = self.faults.get_mut(path)?;
        let fault = entry.0;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            self.faults.remove(path);
        }
        Some(fault)
    }

    pub(super) fn mint_auth_code(&mut self, grant: UserGrant, ttl: Duration) -> String {
        let now = self.now();
        mint(&mut self.auth_codes, grant, now, ttl)
    }

    /// Single use: the code is gone after this call whether or not it was still valid.
    pub(super) fn take_auth_code(&mut self, code: &str) -> Option<UserGrant> {
        let now = self.now();
        take(&mut self.auth_codes, code, now)
    }

    /// Issues a user access token and a refresh token for `grant`.
    pub(super) fn mint_user_tokens(&mut self, grant: UserGrant, ttl: Duration) -> (String, String) {
        let now = self.now();
        let access = mint(&mut self.user_tokens, grant.clone(), now, ttl);
        let refresh = mint(&mut self.refresh_tokens, grant, now, REFRESH_TTL);
        (access, refresh)
    }

    pub(super) fn user_token(&self, token: &str) -> Option<&UserGrant> {
        let now = self.now();
        self.user_tokens
            .get(token)
            .filter(|e| e.live(now))
            .map(|e| &e.value)
    }

    /// Refresh tokens stay usable until they expire: DingTalk does not document rotation.
    pub(super) fn refresh_grant(&self, token: &str) -> Option<UserGrant> {
        let now = self.now();
        self.refresh_tokens
            .get(token)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    /// The internal-app token: the same value while it is valid (each fetch extends it), a new one after expiry.
    pub(super) fn fetch_app_token(&mut self, ttl: Duration) -> String {
        let now = self.now();
        let token = match &self.app_token {
            Some(current) if current.live(now) => current.value.clone(),
            _ => random_token(),
        };
        self.app_token = Some(Expiring {
            value: token.clone(),
            expires_at: now + ttl,
        });
        token
    }

    pub(super) fn app_token_valid(&self, token: &str) -> bool {
        let now = self.now();
        self.app_token
            .as_ref()
            .is_some_and(|t| t.live(now) && t.value == token)
    }

    pub(super) fn mint_jsapi_code(&mut self, userid: &str) -> String {
        let now = self.now();
        mint(
            &mut self.jsapi_codes,
            userid.to_owned(),
            now,
            JSAPI_CODE_TTL,
        )
    }

    /// Single use, like [`State::take_auth_code`].
    pub(super) fn take_jsapi_code(&mut self, code: &str) -> Option<String> {
        let now = self.now();
        take(&mut self.jsapi_codes, code, now)
    }
}

fn mint<T>(
    store: &mut HashMap<String, Expiring<T>>,
    value: T,
    now: Instant,
    ttl: Duration,
) -> String {
    store.retain(|_, e| e.live(now));
    let key = random_token();
    store.insert(
        key.clone(),
        Expiring {
            value,
            expires_at: now + ttl,
        },
    );
    key
}

fn take<T>(store: &mut HashMap<String, Expiring<T>>, key: &str, now: Instant) -> Option<T> {
    store.remove(key).filter(|e| e.live(now)).map(|e| e.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> UserGrant {
        UserGrant {
            userid: "zhangsan".into(),
            with_corp: true,
            picked_corp: None,
        }
    }

    #[test]
    fn codes_are_single_use_and_expire() {
        let mut state = State::new(Org::default_org());
        let code = state.mint_auth_code(grant(), Duration::from_secs(300));
        assert!(state.take_auth_code(&code).is_some());
        assert!(state.take_auth_code(&code).is_none());

        let code = state.mint_auth_code(grant(), Duration::from_secs(300));
        state.clock_offset += Duration::from_secs(300);
        assert!(state.take_auth_code(&code).is_none());
    }

    #[test]
    fn app_token_is_stable_until_it_expires() {
        let mut state = State::new(Org::default_org());
        let ttl = Duration::from_secs(7200);
        let first = state.fetch_app_token(ttl);
        state.clock_offset += Duration::from_secs(7000);
        assert_eq!(state.fetch_app_token(ttl), first);
        // The second fetch extended validity by another full ttl.
        state.clock_offset += Duration::from_secs(7000);
        assert!(state.app_token_valid(&first));
        state.clock_offset += Duration::from_secs(300);
        assert!(!state.app_token_valid(&first));
        assert_ne!(state.fetch_app_token(ttl), first);
    }

    #[test]
    fn faults_count_down() {
        let mut state = State::new(Org::default_org());
        state.faults.insert("/x".into(), (Fault::QpsLimit, 2));
        assert_eq!(state.take_fault("/x"), Some(Fault::QpsLimit));
        assert_eq!(state.take_fault("/x"), Some(Fault::QpsLimit));
        assert_eq!(state.take_fault("/x"), None);
    }
}
