//! Login rate limits: a token bucket per client address on the login endpoints, one global bucket on DingTalk code exchanges.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{RateBucket, RateLimitConfig};

/// How often stale per-address buckets are dropped, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Drop stale buckets early when more than this many addresses are tracked...
const PRUNE_ABOVE: usize = 65_536;
/// ...but scan at most this often, so many live addresses cannot make every check a full scan.
const PRUNE_EARLY_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, the global code-exchange cap being hit is logged as a warning.
const BUSY_WARN_EVERY: Duration = Duration::from_secs(60);

/// A request refused by a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded ({scope}); retry in {}s", .retry_after.as_secs())]
pub struct Throttled {
    /// Which limit refused.
    pub scope: Scope,
    /// When the next request would be admitted (whole seconds, at least 1).
    pub retry_after: Duration,
}

/// Which rate limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `rate_limit.login`: this client address started or completed too many logins.
    ClientLogins,
    /// `rate_limit.code_exchange`: the whole gateway is at its DingTalk code-exchange budget.
    CodeExchanges,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::ClientLogins => "rate_limit.login, per client address",
            Scope::CodeExchanges => "rate_limit.code_exchange, whole gateway",
        })
    }
}

/// The key a client's login requests are counted under: an IPv4 address, or the /64 network
/// of an IPv6 address (one subscriber usually holds a whole /64, so per-address keys would
/// let one client rotate through 2^64 buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl ClientKey {
    /// The key of an address.
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The gateway's login rate limiters, built once from `rate_limit`.
pub struct RateLimits {
    per_client: Option<DefaultKeyedRateLimiter<ClientKey>>,
    exchanges: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    origin: Instant,
    /// Milliseconds after `origin` of the last prune.
    last_prune_ms: AtomicU64,
    /// Milliseconds after `origin` (plus one, 0 = never) of the last size-triggered prune.
    last_early_prune_ms: AtomicU64,
    /// Milliseconds after `origin` (plus one, 0 = never) of the last "at capacity" warning.
    last_busy_warn_ms: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_client", &self.per_client.is_some())
            .field("exchanges", &self.exchanges.is_some())
            .finish()
    }
}

fn quota(bucket: &RateBucket) -> Quota {
    let period = Duration::from_secs_f64(1.0 / bucket.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(bucket.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl RateLimits {
    /// Limiters for the validated settings (none at all when `enabled` is false).
    pub fn new(config: &RateLimitConfig) -> Self {
        let on = config.enabled;
        Self {
            per_client: on.then(|| DefaultKeyedRateLimiter::keyed(quota(&config.login))),
            exchanges: on.then(|| DefaultDirectRateLimiter::direct(quota(&config.code_exchange))),
            clock: DefaultClock::default(),
            origin: Instant::now(),
            last_prune_ms: AtomicU64::new(0),
            last_early_prune_ms: AtomicU64::new(0),
            last_busy_warn_ms: AtomicU64::new(0),
        }
    }

    /// Takes one token from the client's bucket (login start or callback).
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Throttled> {
        let Some(limiter) = &self.per_client else {
            return Ok(());
        };
        let result = limiter.check_key(&ClientKey::of(ip));
        self.maybe_prune(limiter);
        result.map_err(|not_until| Throttled {
            scope: Scope::ClientLogins,
            retry_after: whole_seconds(not_until.wait_time_from(self.clock.now())),
        })
    }

    /// Takes one token from the gateway-wide DingTalk code-exchange budget.
    pub fn check_exchange(&self) -> Result<(), Throttled> {
        let Some(limiter) = &self.exchanges else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            if self.due(&self.last_busy_warn_ms, BUSY_WARN_EVERY) {
                tracing::warn!("rate_limit.code_exchange reached: logins are being asked to retry (a login burst, or someone replaying made-up codes from many addresses)");
            }
            Throttled {
                scope: Scope::CodeExchanges,
                retry_after: whole_seconds(not_until.wait_time_from(self.clock.now())),
            }
        })
    }

    /// How many client addresses currently have a bucket (stale ones are pruned over time).
    pub fn tracked_clients(&self) -> usize {
        self.per_client.as_ref().map_or(0, |l| l.len())
    }

    /// Bounds memory: buckets that have refilled completely are indistinguishable from new ones
    /// and are dropped every `PRUNE_EVERY`, or sooner when many addresses are tracked.
    fn maybe_prune(&self, limiter: &DefaultKeyedRateLimiter<ClientKey>) {
        let early = || {
            limiter.len() > PRUNE_ABOVE && self.due(&self.last_early_prune_ms, PRUNE_EARLY_EVERY)
        };
        if self.due(&self.last_prune_ms, PRUNE_EVERY) || early() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// True (for exactly one caller) when `every` has passed since `stamp` was last claimed.
    fn due(&self, stamp: &AtomicU64, every: Duration) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = stamp.load(Ordering::Relaxed);
        let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && stamp
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// `Retry-After` is in whole seconds: round up, and never say 0.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            ClientKey::of(mapped),
            ClientKey::of("192.0.2.7".parse().unwrap())
        );
    }

    fn limits(per_second: f64, burst: u32) -> RateLimits {
        RateLimits::new(&RateLimitConfig {
            enabled: true,
            login: RateBucket { per_second, burst },
            code_exchange: RateBucket { per_second, burst },
        })
    }

    #[test]
    fn bucket_admits_the_burst_then_refuses_with_a_retry_time() {
        let l = limits(0.1, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            l.check_client(ip).unwrap();
        }
        let t = l.check_client(ip).unwrap_err();
        assert_eq!(t.scope, Scope::ClientLogins);
        assert!(
            t.retry_after >= Duration::from_secs(1) && t.retry_after <= Duration::from_secs(10)
        );
        l.check_client("192.0.2.2".parse().unwrap())
            .expect("another address has its own bucket");
        for _ in 0..3 {
            l.check_exchange().unwrap();
        }
        assert_eq!(l.check_exchange().unwrap_err().scope, Scope::CodeExchanges);
    }

    #[test]
    fn disabled_never_refuses() {
        let l = RateLimits::new(&RateLimitConfig {
            enabled: false,
            login: RateBucket {
                per_second: 0.001,
                burst: 1,
            },
            code_exchange: RateBucket {
                per_second: 0.001,
                burst: 1,
            },
        });
        for _ in 0..100 {
            l.check_client("192.0.2.1".parse().unwrap()).unwrap();
            l.check_exchange().unwrap();
        }
    }

    #[test]
    fn stale_buckets_are_pruned_so_memory_stays_bounded() {
        // Buckets refill in 10 µs, so every address but the latest few is stale at once.
        let l = limits(100_000.0, 1);
        for i in 0..(PRUNE_ABOVE as u32 + 10_000) {
            l.check_client(IpAddr::from(i.to_be_bytes())).unwrap();
        }
        std::thread::sleep(PRUNE_EARLY_EVERY + Duration::from_millis(50));
        l.check_client(IpAddr::from([255, 0, 0, 1])).unwrap();
        assert!(
            l.tracked_clients() <= PRUNE_ABOVE,
            "{} addresses tracked",
            l.tracked_clients()
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            whole_seconds(Duration::from_millis(1001)),
            Duration::from_secs(2)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
