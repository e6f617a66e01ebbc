//! The app-token cache: one token per client, refreshed single-flight before it expires.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::api::Api;
use super::budget::unix_now;
use super::client::{DingTalkClient, Fleet};
use super::error::DingTalkError;
use super::transport::{decode, join, Call};
use super::types::{AppToken, RawAppToken};

/// How long before DingTalk's stated expiry the cached app token is replaced.
const APP_TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// The app-token cache. `state` is only locked briefly (never across an await); `refresh`
/// is held while one caller fetches, which makes concurrent refreshes single-flight.
#[derive(Default)]
pub(super) struct TokenCache {
    state: Mutex<TokenState>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct TokenState {
    token: Option<AppToken>,
    /// Bumped after every fetch attempt, so waiters can tell a fetch finished while they queued.
    generation: u64,
    last_error: Option<DingTalkError>,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The app token's lifetime DingTalk documents (`expireIn` 7200).
const DOCUMENTED_APP_TOKEN_SECS: u64 = 7200;

pub(super) fn fresh(token: &Option<AppToken>, now: Instant) -> Option<AppToken> {
    token.as_ref().filter(|t| now < expires_at(t)).cloned()
}

fn expires_at(token: &AppToken) -> Instant {
    let life = Duration::from_secs(token.expire_in);
    // Short-lived tokens (tests, odd tenants) keep half their life rather than none.
    let margin = APP_TOKEN_MARGIN.min(life / 2);
    token.fetched_at() + (life - margin)
}

impl DingTalkClient {
    /// The app token, from the cache while it has more than a margin (5 min, or half its life
    /// when shorter) left. Concurrent callers share one fetch; callers that queued behind a
    /// failed fetch get its error instead of each trying again.
    pub async fn app_token(&self) -> Result<AppToken, DingTalkError> {
        let cache = &self.inner.token;
        let seen = {
            let state = cache.lock();
            if let Some(token) = fresh(&state.token, Instant::now()) {
                return Ok(token);
            }
            state.generation
        };
        let _flight = cache.refresh.lock().await;
        {
            let state = cache.lock();
            if let Some(token) = fresh(&state.token, Instant::now()) {
                return Ok(token);
            }
            if state.generation != seen {
                if let Some(err) = &state.last_error {
                    return Err(err.clone());
                }
            }
        }
        let result = match self.fleet() {
            Some(fleet) => self.fleet_app_token(fleet).await,
            None => self.fetch_app_token().await,
        };
        let mut state = cache.lock();
        state.generation = state.generation.wrapping_add(1);
        match &result {
            Ok(token) => {
                state.token = Some(token.clone());
                state.last_error = None;
            }
            Err(err) => state.last_error = Some(err.clone()),
        }
        result
    }

    /// The fleet's app token from the store, or fetched here for the whole fleet (one replica
    /// at a time) and stored until its refresh is due.
    async fn fleet_app_token(&self, fleet: &Fleet) -> Result<AppToken, DingTalkError> {
        let (shared, _) = fleet
            .get_or_fetch(
                &token_name(fleet),
                self.inner.settings.timeout,
                |t: &SharedToken| unix_now() < t.refresh_at,
                async {
                    let token = self.fetch_app_token().await?;
                    let now = unix_now();
                    let life = token.expire_in;
                    let keep = life - APP_TOKEN_MARGIN.as_secs().min(life / 2);
                    let shared = SharedToken {
                        token: token.secret().to_owned(),
                        expires_at: now.saturating_add_unsigned(life),
                        refresh_at: now.saturating_add_unsigned(keep),
                    };
                    Ok::<_, DingTalkError>((shared, Duration::from_secs(keep)))
                },
            )
            .await?;
        let left = u64::try_from(shared.expires_at.saturating_sub(unix_now())).unwrap_or(0);
        Ok(AppToken::new(shared.token, left, Instant::now()))
    }

    /// Fetches a new app token from DingTalk (counted in `dinggate_dingtalk_app_token_refreshes_total`).
    pub(super) async fn fetch_app_token(&self) -> Result<AppToken, DingTalkError> {
        let result = self.request_app_token().await;
        self.inner.settings.metrics.token_refresh(result.is_ok());
        result
    }

    async fn request_app_token(&self) -> Result<AppToken, DingTalkError> {
        let settings = &self.inner.settings;
        let body = json!({
            "appKey": settings.client_id,
            "appSecret": settings.client_secret,
        });
        let answer = self
            .execute(&Call {
                api: Api::AppToken,
                method: Method::POST,
                url: join(&settings.endpoints.api, Api::AppToken.path()),
                body: Some(&body),
                user_token: None,
            })
            .await?;
        let raw: RawAppToken = decode(Api::AppToken, answer.status, answer.body)?;
        // A missing or zero `expireIn` would make every call fetch a new token: DingTalk
        // documents 7200 s for app tokens, so that is what such a token is kept for.
        let expire_in = match raw.expire_in {
            0 => {
                tracing::debug!(
                    "the app token came without expireIn; keeping it for DingTalk's documented 7200 s"
                );
                DOCUMENTED_APP_TOKEN_SECS
            }
            n => n,
        };
        tracing::debug!(expire_in, "fetched a DingTalk app token");
        Ok(AppToken::new(raw.access_token, expire_in, Instant::now()))
    }

    /// Drops `stale` from the cache, and from the store, unless a newer token already replaced it.
    pub(super) async fn invalidate_app_token(&self, stale: &AppToken) {
        {
            let mut state = self.inner.token.lock();
            if state.token.as_ref().is_some_and(|t| t.same_token(stale)) {
                state.token = None;
            }
        }
        if let Some(fleet) = self.fleet() {
            let name = token_name(fleet);
            let shared: Option<SharedToken> = fleet.get(&name).await;
            if shared.is_some_and(|s| s.token == stale.secret()) {
                fleet.forget(&name).await;
            }
        }
    }
}

/// The app token as the replicas share it (sealed in the store).
#[derive(Serialize, Deserialize)]
struct SharedToken {
    token: String,
    /// Unix seconds.
    expires_at: i64,
    /// Unix seconds: from then on, the next replica that needs it fetches a new one.
    refresh_at: i64,
}

fn token_name(fleet: &Fleet) -> String {
    format!("apptoken:{}", fleet.scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_token_is_replaced_before_it_expires() {
        let now = Instant::now();
        let long = AppToken::new("a".into(), 7200, now);
        assert_eq!(expires_at(&long), now + Duration::from_secs(6900));
        let short = AppToken::new("a".into(), 10, now);
        assert_eq!(expires_at(&short), now + Duration::from_secs(5));
        assert!(fresh(&Some(AppToken::new("a".into(), 0, now)), now).is_none());
    }
}
