//! The DingTalk call budget (`dingtalk.call_budget`): every API's calls are paced so that all replicas together stay under DingTalk's per-app limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::api::Api;
use super::client::DingTalkClient;
use super::error::DingTalkError;

/// One second and 5 %: calls are spaced 5 % wider than the budget, because DingTalk counts
/// arrivals and network jitter can bring two calls closer together than they were sent.
const SPACING_NANOS: u64 = 1_050_000_000;
/// Least time between two log lines about waits for one API.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The pacing state of one client.
pub(super) struct Budget {
    /// Calls per second per API (0 = no budget).
    pub(super) per_second: u32,
    interval: Duration,
    /// The next free slot per API when this replica paces alone (no store, or the store is
    /// unreachable).
    local: Mutex<HashMap<Api, Instant>>,
    reported: Mutex<HashMap<Api, Instant>>,
}

impl Budget {
    pub(super) fn new(per_second: u32) -> Budget {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => Duration::from_nanos(SPACING_NANOS / u64::from(n)),
        };
        Budget {
            per_second,
            interval,
            local: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves this replica's next slot for `api`: the wait, or `None` when it is further
    /// away than `max_wait` (nothing reserved).
    fn reserve_locally(&self, api: Api, max_wait: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let next = local.get(&api).copied().unwrap_or(now).max(now);
        let wait = next - now;
        if wait > max_wait {
            return None;
        }
        local.insert(api, next + self.interval);
        Some(wait)
    }

    /// Whether a wait for `api` should be logged now (at most one line per API and interval).
    fn report_due(&self, api: Api) -> bool {
        let now = Instant::now();
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        match reported.get(&api) {
            Some(at) if now.duration_since(*at) < REPORT_EVERY => false,
            _ => {
                reported.insert(api, now);
                true
            }
        }
    }
}

impl DingTalkClient {
    /// Waits for `api`'s next slot in the budget (fleet-wide through the store, else this
    /// replica's own), or refuses the call when the slot is more than `dingtalk.timeout` away.
    pub(super) async fn admit(&self, api: Api) -> Result<(), DingTalkError> {
        let budget = &self.inner.budget;
        if budget.per_second == 0 {
            return Ok(());
        }
        let max_wait = self.inner.settings.timeout;
        let fleet = match &self.inner.fleet {
            Some(fleet) => fleet
                .store
                .pace(
                    &format!("budget:{}:{}", fleet.scope, api.name()),
                    budget.interval,
                    max_wait,
                    unix_now(),
                )
                .await
                // The store logs its own outage; meanwhile each replica paces alone.
                .ok(),
            None => None,
        };
        let shared = fleet.is_some();
        let reserved = match fleet {
            Some(reserved) => reserved,
            None => budget.reserve_locally(api, max_wait),
        };
        let metrics = &self.inner.settings.metrics;
        let Some(wait) = reserved else {
            metrics.budget_refusal(api);
            return Err(DingTalkError::OverBudget {
                api,
                per_second: budget.per_second,
            });
        };
        if !wait.is_zero() {
            metrics.budget_wait(api, wait);
            if budget.report_due(api) {
                tracing::info!(
                    api = %api,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    budget_per_second = budget.per_second,
                    fleet_wide = shared,
                    "DingTalk calls are waiting for the call budget (dingtalk.call_budget); more like this in the next 10 s are only counted in dinggate_dingtalk_budget_waits_total"
                );
            }
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// Unix seconds, for the store's outage reports.
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_slots_are_spaced_and_refused_beyond_the_longest_wait() {
        let budget = Budget::new(10);
        let max = Duration::from_millis(300);
        let waits: Vec<_> = (0..4)
            .map(|_| budget.reserve_locally(Api::AppToken, max))
            .collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::ZERO),
                Some(Duration::from_millis(105)),
                Some(Duration::from_millis(210)),
                None
            ]
        );
        assert_eq!(
            budget.reserve_locally(Api::UserAccessToken, max),
            Some(Duration::ZERO),
            "each API has its own budget"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            budget.reserve_locally(Api::AppToken, max),
            Some(Duration::ZERO)
        );
    }
}
