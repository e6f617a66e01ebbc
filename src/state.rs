//! The shared state: built from a validated `Config` at startup and again at each reload, held in one swappable `Live`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::dingtalk::{ClientSettings, DingTalkClient, Endpoints, RetryPolicy, Sharing};
use crate::directory::Directory;
use crate::identity::Identity;
use crate::login::redirect::RedirectPolicy;
use crate::login::state::{LoginStates, StateSettings};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::forward::{Upstream, UpstreamBuildError};
use crate::ratelimit::RateLimits;
use crate::repeats::Repeats;
use crate::session::cache::SessionCache;
use crate::session::cookie::{
    session_cookie, set_cookie_line_len, CookieSettings, MAX_SET_COOKIE_LINE,
};
use crate::session::jwt::{KeyRing, SessionCodec, SessionError};
use crate::session::revocation::{MemoryRevocations, Revocations};
use crate::store::RedisStore;
use crate::tls_server::ServerTls;

/// Wall-clock seconds with a test-adjustable offset (tests move time instead of sleeping).
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    /// Seconds since the Unix epoch, plus the offset.
    pub fn now(&self) -> i64 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        secs.saturating_add(self.offset.load(Ordering::Relaxed))
    }

    /// Microseconds since the Unix epoch, plus the offset (orders events within one second).
    pub fn now_micros(&self) -> i64 {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        micros.saturating_add(
            self.offset
                .load(Ordering::Relaxed)
                .saturating_mul(1_000_000),
        )
    }

    /// Moves the clock forward by `secs` (tests only; production never calls it).
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

/// A time with as many digits as any the gateway will see (year 2286), for the size check.
const LARGEST_NOW: i64 = 9_999_999_999;

/// Everything a request needs, shared behind one `Arc`. One configuration's state: a reload
/// builds the next one with [`AppState::rebuild`], which hands over the `Arc` parts that outlive
/// a configuration (sign-outs, consumed login states, metrics, readiness, clock, TLS).
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Mints and verifies session JWTs.
    pub sessions: SessionCodec,
    /// Session cookie attributes.
    pub cookies: CookieSettings,
    /// Ended sessions (sign-out, sign-out everywhere). Kept across reloads.
    pub revocations: Arc<Revocations>,
    /// Tokens verified before: token → verified session.
    pub session_cache: SessionCache,
    /// Login `state` cookies and the consumed ones. Kept across reloads that keep their key
    /// and settings.
    pub login_states: Arc<LoginStates>,
    /// Return-URL validation.
    pub redirects: RedirectPolicy,
    /// DingTalk API client (one reqwest client and the app token inside). Kept across reloads
    /// that keep the `dingtalk:` settings.
    pub dingtalk: DingTalkClient,
    /// Organization directory, when look-ups are on (kept with the DingTalk client).
    pub directory: Option<Arc<Directory>>,
    /// Forwarding: pooled upstream clients, upstream URLs and header rules.
    pub upstream: Upstream,
    /// Login rate limits (per client address, and DingTalk code exchanges overall). Kept across
    /// reloads that keep `rate_limit:`.
    pub limits: Arc<RateLimits>,
    /// Time source. Kept across reloads.
    pub clock: Arc<Clock>,
    /// Prometheus series (the admin listener's `/metrics`). Kept across reloads.
    pub metrics: Arc<Metrics>,
    /// This configuration's per-route request series.
    pub route_metrics: RouteMetrics,
    /// Whether the gateway is serving and not shutting down (`/readyz`). Kept across reloads.
    pub readiness: Arc<Readiness>,
    /// Repeated failures, summarized in the log (`log.repeat_interval`). Kept across reloads.
    pub repeats: Arc<Repeats>,
    /// TLS termination of the public listener (`tls:`). Kept across reloads (the certificate
    /// files are watched on their own).
    pub tls: Option<ServerTls>,
    /// The store shared with the other replicas (`store.url`), if any. Kept across reloads.
    pub store: Option<Arc<RedisStore>>,
}

/// The state in service, swapped whole by a configuration reload: each request loads the
/// current one once and keeps it to its end, so a request never sees half of two
/// configurations, and a replaced state (its upstream pools) lives until its last request ends.
#[derive(Clone)]
pub struct Live(Arc<ArcSwap<AppState>>);

impl Live {
    /// Puts `state` in service.
    pub fn new(state: Arc<AppState>) -> Self {
        Live(Arc::new(ArcSwap::new(state)))
    }

    /// The state in service now.
    pub fn load(&self) -> Arc<AppState> {
        self.0.load_full()
    }

    /// Puts `state` in service for every request from now on.
    pub fn store(&self, state: Arc<AppState>) {
        self.0.store(state);
    }
}

impl From<Arc<AppState>> for Live {
    fn from(state: Arc<AppState>) -> Self {
        Live::new(state)
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Live")
            .field(&self.0.load().config.hash())
            .finish()
    }
}

/// The process's own share of readiness: set when the listeners serve, cleared when shutdown
/// begins (before accepting stops, so load balancers take the replica out first).
#[derive(Debug, Default)]
pub struct Readiness {
    serving: AtomicBool,
    draining: AtomicBool,
    /// Why the last configuration reload failed; `None` when it succeeded or none was tried.
    reload_failure: std::sync::Mutex<Option<String>>,
}

impl Readiness {
    /// The public listener is accepting.
    pub fn serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on.
    pub fn draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the listener serves.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A configuration reload succeeded (`None`) or failed for `problems`. A failed reload
    /// leaves the running configuration in service, so it is reported, not a reason to take the
    /// replica out.
    pub fn reloaded(&self, problems: Option<String>) {
        *self
            .reload_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problems;
    }

    /// Why the last configuration reload failed, if it did.
    pub fn reload_failure(&self) -> Option<String> {
        self.reload_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the shared state could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The session key ring was refused.
    #[error("session keys: {0}")]
    Keys(#[source] SessionError),
    /// Even a session within every identity limit would not fit in a browser cookie.
    #[error("a session cookie for the largest identity the gateway accepts would be {bytes} bytes, and browsers keep at most {max}: shorten session.cookie_domain, session.cookie_name, public_url (the issuer) or session.audience")]
    SessionCookieTooLarge {
        /// Length of that `Set-Cookie` line.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The TLS/HTTP client for DingTalk could not be built.
    #[error("cannot build the DingTalk HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The certificate or key of `tls:` could not be loaded.
    #[error("tls: {0}")]
    Tls(#[source] crate::tls_server::CertError),
    /// The upstream clients could not be built.
    #[error(transparent)]
    Upstream(#[from] UpstreamBuildError),
    /// The shared store's client could not be set up.
    #[error("store: {0}")]
    Store(#[source] crate::store::StoreError),
}

impl AppState {
    /// Builds the state at startup; with [`AppState::rebuild`], the only place clients and keys
    /// are created.
    pub fn build(config: Config) -> Result<AppState, BuildError> {
        Self::assemble(config, None)
    }

    /// Builds the state of a reloaded `config` from this one: the same checks as
    /// [`AppState::build`], new keys, routes, upstream pools and session cache, and this state's
    /// long-lived parts handed over (sign-outs, consumed login states, metrics, readiness, clock,
    /// TLS; the DingTalk client with its app token and directory cache, and the rate limiters
    /// with their buckets, while their settings are unchanged).
    pub fn rebuild(&self, config: Config) -> Result<AppState, BuildError> {
        Self::assemble(config, Some(self))
    }

    fn assemble(config: Config, old: Option<&AppState>) -> Result<AppState, BuildError> {
        let ring = KeyRing::new(
            config.session.signing_key.expose().clone(),
            config
                .session
                .previous_signing_keys
                .iter()
                .map(|k| k.expose().clone())
                .collect(),
        )
        .map_err(BuildError::Keys)?;
        let sessions = SessionCodec::new(
            ring,
            config.session.issuer.clone(),
            config.session.audience.clone(),
            config.session.lifetime,
        );
        let cookies = CookieSettings {
            name: config.session.cookie_name.clone(),
            domain: config.session.cookie_domain.clone(),
            secure: config.session.cookie_secure,
            lifetime: config.session.lifetime,
        };
        // Every identity is cut or refused to fit `identity::limits`; prove here, once, that the
        // largest one still fits in a cookie, so no configuration can loop people through login.
        let largest = sessions.mint(&Identity::largest(), LARGEST_NOW);
        let bytes = set_cookie_line_len(&session_cookie(&cookies, &largest));
        if bytes >= MAX_SET_COOKIE_LINE {
            return Err(BuildError::SessionCookieTooLarge {
                bytes,
                max: MAX_SET_COOKIE_LINE,
            });
        }
        let state_settings = StateSettings {
            cookie_prefix: config.session.state_cookie_prefix(),
            cookie_path: format!("{}/", config.prefix),
            secure: config.session.cookie_secure,
            ttl: config.session.login_timeout,
            max_flows: config.session.max_login_flows,
        };
        // Consumed states stay consumed across a reload. A new signing key starts afresh: no
        // state signed with the old one verifies any more, so none can be replayed.
        let login_states = match old {
            Some(o)
                if o.config.session.signing_key == config.session.signing_key
                    && *o.login_states.settings() == state_settings =>
            {
                o.login_states.clone()
            }
            _ => Arc::new(LoginStates::new(
                config.session.signing_key.expose(),
                state_settings,
            )),
        };
        let redirects = RedirectPolicy::new(&config.public_url, config.redirect_allowlist.clone());
        let metrics = match old {
            Some(o) => o.metrics.clone(),
            None => {
                let metrics = Metrics::new(
                    config.server.workers,
                    env!("CARGO_PKG_VERSION"),
                    env!("BUILD_GIT_COMMIT"),
                );
                metrics.config_loaded(&config.hash());
                Arc::new(metrics)
            }
        };
        let route_metrics = metrics.routes(config.routes.routes().iter().map(|r| r.name.as_str()));
        for route in config.routes.insecure() {
            tracing::warn!(
                route = %route.name,
                upstream = %route.upstream,
                "tls.insecure_skip_verify is on: the upstream's certificate is NOT verified, so anyone on the network path can impersonate it; use tls.ca_file instead outside a lab"
            );
        }
        let upstream = Upstream::new(&config).map_err(BuildError::Upstream)?;
        let session_cache = SessionCache::new(config.session.cache_entries);
        let limits = match old {
            Some(o) if o.config.rate_limit == config.rate_limit => o.limits.clone(),
            _ => Arc::new(RateLimits::new(&config.rate_limit)),
        };
        // The rest outlives a configuration (`reload` keeps their settings as they were at start).
        let (store, revocations, clock, readiness, repeats, tls) = match old {
            Some(o) => (
                o.store.clone(),
                o.revocations.clone(),
                o.clock.clone(),
                o.readiness.clone(),
                o.repeats.clone(),
                o.tls.clone(),
            ),
            None => {
                let store = config
                    .store
                    .as_ref()
                    .map(|s| RedisStore::new(s, metrics.store_up.clone()).map(Arc::new))
                    .transpose()
                    .map_err(BuildError::Store)?;
                let capacity = config.session.max_revocations;
                let revocations = match &store {
                    Some(store) => Revocations::Shared {
                        local: MemoryRevocations::new(capacity),
                        store: store.clone(),
                    },
                    None => Revocations::memory(capacity),
                };
                (
                    store,
                    Arc::new(revocations),
                    Arc::default(),
                    Arc::default(),
                    Arc::new(Repeats::new(config.log.repeat_interval)),
                    config
                        .tls
                        .as_ref()
                        .map(|t| ServerTls::load(&t.cert_file, &t.key_file))
                        .transpose()
                        .map_err(BuildError::Tls)?,
                )
            }
        };
        let (dingtalk, directory) = match old {
            Some(o) if o.config.dingtalk == config.dingtalk => {
                (o.dingtalk.clone(), o.directory.clone())
            }
            _ => {
                let dingtalk = dingtalk_client(&config, &metrics, store.clone())?;
                let directory = config.dingtalk.directory.then(|| {
                    Arc::new(Directory::new(
                        dingtalk.clone(),
                        i64::try_from(config.dingtalk.directory_cache_ttl.as_secs())
                            .unwrap_or(i64::MAX),
                    ))
                });
                (dingtalk, directory)
            }
        };
        Ok(AppState {
            config,
            sessions,
            cookies,
            revocations,
            session_cache,
            login_states,
            redirects,
            dingtalk,
            directory,
            upstream,
            limits,
            clock,
            metrics,
            route_metrics,
            readiness,
            repeats,
            tls,
            store,
        })
    }
}

/// The DingTalk client of `config`: one reqwest client, counting into `metrics`, sharing its
/// budget, app token and directory answers through `store` when there is one.
fn dingtalk_client(
    config: &Config,
    metrics: &Metrics,
    store: Option<Arc<RedisStore>>,
) -> Result<DingTalkClient, BuildError> {
    let http = reqwest::Client::builder()
        .timeout(config.dingtalk.timeout)
        .connect_timeout(config.dingtalk.timeout)
        .user_agent(concat!("dinggate/", env!("CARGO_PKG_VERSION")))
        // DingTalk never redirects API calls; following one could leak the token header.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(BuildError::HttpClient)?;
    Ok(DingTalkClient::shared(
        ClientSettings {
            endpoints: Endpoints {
                login: config.dingtalk.login_url.clone(),
                api: config.dingtalk.api_url.clone(),
                oapi: config.dingtalk.oapi_url.clone(),
            },
            client_id: config.dingtalk.client_id.clone(),
            client_secret: config.dingtalk.client_secret.expose().clone(),
            timeout: config.dingtalk.timeout,
            retry: RetryPolicy {
                max_retries: 2,
                base_delay: std::time::Duration::from_secs(1),
            },
            exclusive_corp_id: config.dingtalk.exclusive_corp_id.clone(),
            metrics: metrics.dingtalk.clone(),
        },
        http,
        Sharing {
            call_budget: config.dingtalk.call_budget,
            store,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str, domain: &str, audience: &str) -> Config {
        Config::from_yaml_str(&format!(
            r#"
public_url: https://{host}
upstream: http://127.0.0.1:8080
dingtalk:
  client_id: dingabc
  client_secret: s3cret
  corp_id: dingcorp
session:
  signing_key: "0123456789abcdef0123456789abcdef"
  cookie_domain: {domain}
  audience: {audience}
"#
        ))
        .unwrap()
    }

    #[test]
    fn refuses_settings_that_leave_no_room_for_the_largest_session() {
        AppState::build(config("gate.example.com", "example.com", "dinggate")).unwrap();
        let label = "a".repeat(60);
        let domain = format!("{label}.{label}.{label}.example.com");
        let host = format!("gate.{domain}");
        // Long but plausible: fits.
        AppState::build(config(&host, &domain, "dinggate")).unwrap();
        let err = AppState::build(config(&host, &domain, &"a".repeat(300))).unwrap_err();
        assert!(
            matches!(err, BuildError::SessionCookieTooLarge { bytes, max: 4096 } if bytes >= 4096),
            "{err}"
        );
        assert!(err.to_string().contains("session.cookie_domain"), "{err}");
    }
}
