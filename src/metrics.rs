//! Prometheus metrics: every series the gateway exports, registered once at startup and encoded for the admin listener's `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::dingtalk::api::Api;
use crate::dingtalk::DingTalkError;

/// Request-duration buckets (seconds): 1 ms … 30 s, the range between a cached proxy hit and
/// the upstream timeout.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// The same bounds in microseconds, for the request path (integer compares only).
const DURATION_BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// The method label: the common methods by name, everything else as `OTHER`, so a client
/// cannot create series with made-up methods.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];
/// The status label: the class only.
const STATUSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `route` of requests to the gateway's own endpoints (login, callback, sign-out, health).
pub const GATEWAY_ROUTE: &str = "_gateway";
/// `route` of requests no route matched (refused before routing, or outside every route).
pub const NO_ROUTE: &str = "_none";

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn status_index(status: StatusCode) -> usize {
    usize::from((status.as_u16() / 100).clamp(1, 5) - 1)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    route: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DingTalkLabels {
    api: &'static str,
    result: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    hash: String,
}

/// A histogram's cells: one count per bucket (the last is `+Inf`) and the sum in microseconds.
#[derive(Default)]
struct HistogramCells {
    buckets: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl HistogramCells {
    fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = DURATION_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// Chooses one of a route's histograms.
type Pick = fn(&RouteCells) -> &HistogramCells;

/// One worker's cells for one route. Each worker writes only its own cells, and the alignment
/// keeps two workers' cells off one cache line (with shared counters, two workers at 256
/// connections spent measurable time bouncing them); a scrape adds the workers up.
#[derive(Default)]
#[repr(align(128))]
struct RouteCells {
    /// `[method][status]`.
    requests: [[AtomicU64; STATUSES.len()]; METHODS.len()],
    duration: HistogramCells,
    upstream: HistogramCells,
}

/// One worker's in-flight count, alone on its cache line.
#[derive(Default)]
#[repr(align(128))]
struct InFlightCell(AtomicI64);

/// One route name's series: a cell set per worker.
struct Row {
    name: String,
    cells: Box<[Arc<RouteCells>]>,
}

/// The process's per-route request series, summed over the workers at scrape time. Rows are
/// kept by route name for the life of the process: a reload that keeps a route keeps its
/// counters (they never go back), and a route a reload removed keeps its last values.
struct RequestSeries {
    workers: usize,
    rows: Mutex<Vec<Row>>,
    in_flight: Box<[InFlightCell]>,
}

impl std::fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSeries")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl RequestSeries {
    /// The cells of route `name`, one per worker, created on first use.
    fn row(&self, name: &str) -> Box<[Arc<RouteCells>]> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = rows.iter().find(|r| r.name == name) {
            return row.cells.clone();
        }
        let cells: Box<[Arc<RouteCells>]> = (0..self.workers).map(|_| Arc::default()).collect();
        rows.push(Row {
            name: name.to_owned(),
            cells: cells.clone(),
        });
        cells
    }
}

fn route_total(row: &Row, m: usize, s: usize) -> u64 {
    row.cells
        .iter()
        .map(|c| c.requests[m][s].load(Ordering::Relaxed))
        .sum()
}

fn histogram(row: &Row, which: Pick) -> (f64, u64, Vec<(f64, u64)>) {
    let mut counts = [0u64; DURATION_BUCKETS_US.len() + 1];
    let mut sum_us = 0u64;
    for cells in row.cells.iter() {
        let h = which(cells);
        for (c, b) in counts.iter_mut().zip(&h.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        sum_us = sum_us.wrapping_add(h.sum_us.load(Ordering::Relaxed));
    }
    let buckets = DURATION_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts)
        .collect();
    (sum_us as f64 / 1e6, counts.iter().sum(), buckets)
}

impl Collector for RequestSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut family = encoder.encode_descriptor(
                "requests",
                "Requests served, by route, method and status class",
                None,
                MetricType::Counter,
            )?;
            for row in rows.iter() {
                for (m, method) in METHODS.iter().enumerate() {
                    for (s, status) in STATUSES.iter().enumerate() {
                        // Only combinations seen: a counter that was ever non-zero stays so,
                        // so no series disappears between scrapes.
                        let total = route_total(row, m, s);
                        if total == 0 {
                            continue;
                        }
                        let labels = RequestLabels {
                            route: row.name.clone(),
                            method,
                            status,
                        };
                        family
                            .encode_family(&labels)?
                            .encode_counter::<RequestLabels, u64, f64>(&total, None)?;
                    }
                }
            }
        }
        let histograms: [(&str, &str, Pick); 2] = [
            (
                "request_duration",
                "Time from the request head to the response head, by route",
                |c| &c.duration,
            ),
            (
                "upstream_duration",
                "Time from sending a request upstream to its response head, by route",
                |c| &c.upstream,
            ),
        ];
        for (name, help, which) in histograms {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for row in rows.iter() {
                let (sum, count, buckets) = histogram(row, which);
                let labels = RouteLabel {
                    route: row.name.clone(),
                };
                family
                    .encode_family(&labels)?
                    .encode_histogram::<RouteLabel>(sum, count, &buckets, None)?;
            }
        }
        let in_flight: i64 = self
            .in_flight
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum();
        encoder
            .encode_descriptor(
                "requests_in_flight",
                "Requests being served (request head read, response head not yet sent)",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&in_flight)?;
        Ok(())
    }
}

/// `dinggate_config_info{hash}`: the configuration in service, replaced at each reload.
#[derive(Debug, Default)]
struct ConfigInfo(Mutex<String>);

impl Collector for ConfigInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hash = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        encoder
            .encode_descriptor(
                "config",
                "Hash of the configuration in service (secrets excluded): tells replicas' configurations apart",
                None,
                MetricType::Info,
            )?
            .encode_info(&ConfigLabels { hash })
    }
}

/// One configuration's view of the request series: each route's cells by route index (then
/// [`GATEWAY_ROUTE`]'s and [`NO_ROUTE`]'s), for each worker. Built with the state, so a reload
/// with other routes gets a table of its own; the request path only indexes into it.
pub struct RouteMetrics {
    /// Route names by index, then [`GATEWAY_ROUTE`] and [`NO_ROUTE`].
    names: Box<[String]>,
    /// `[worker][route]`.
    cells: Box<[Box<[Arc<RouteCells>]>]>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("routes", &self.names)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    /// The cells of `route` on `worker` (an index past the table counts under [`NO_ROUTE`],
    /// a worker past the count under the last worker: never a panic).
    fn cells(&self, worker: usize, route: RouteKey) -> &RouteCells {
        let w = &self.cells[worker.min(self.cells.len() - 1)];
        &w[self.index(route)]
    }

    fn index(&self, route: RouteKey) -> usize {
        let n = self.names.len();
        match route {
            RouteKey::Route(i) if i + 2 < n => i,
            RouteKey::Route(_) | RouteKey::None => n - 1,
            RouteKey::Gateway => n - 2,
        }
    }

    /// Counts one served request and how long it took to its response head.
    pub fn request(
        &self,
        worker: usize,
        route: RouteKey,
        method: &Method,
        status: StatusCode,
        took: Duration,
    ) {
        let cells = self.cells(worker, route);
        cells.requests[method_index(method)][status_index(status)].fetch_add(1, Ordering::Relaxed);
        cells.duration.observe(took);
    }

    /// Records the time the upstream took to answer a request of `route` (response head).
    pub fn upstream(&self, worker: usize, route: RouteKey, took: Duration) {
        self.cells(worker, route).upstream.observe(took);
    }

    /// Counts a request the upstream of `route` did not answer.
    pub fn upstream_error(&self, route: RouteKey, cause: UpstreamFailure) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                route: self.names[self.index(route)].clone(),
                cause: cause.label(),
            })
            .inc();
    }
}

/// Which of the gateway's routes (or pseudo-routes) a request is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKey {
    /// A configured route, by [`crate::config::routes::Route::index`].
    Route(usize),
    /// The gateway's own endpoints ([`GATEWAY_ROUTE`]).
    Gateway,
    /// No route ([`NO_ROUTE`]).
    None,
}

/// Why a request to the upstream failed, as the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection within `upstream_connect_timeout`, or refused / unreachable.
    Connect,
    /// No response head within `upstream_timeout`.
    Timeout,
    /// The TLS handshake with an https upstream failed.
    Tls,
    /// The connection failed after the request was sent (reset, closed, malformed answer).
    Protocol,
}

impl UpstreamFailure {
    fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Protocol => "protocol",
        }
    }
}

/// How a login attempt ended, as the `outcome` label of `dinggate_logins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A session was issued.
    Success,
    /// A missing, forged, mismatched or expired login state (or no state cookie).
    BadState,
    /// A state that was used once already.
    ReplayedState,
    /// The person is not in the configured organization (or not active there).
    NotInOrganization,
    /// DingTalk rejected the code (expired, used).
    CodeRejected,
    /// The person cancelled at DingTalk, or DingTalk sent an error back.
    Refused,
    /// A malformed callback or login request (bad query, bad return URL, no code).
    BadRequest,
    /// DingTalk failed (outage, timeout, configuration); the code label of
    /// `dinggate_dingtalk_requests_total` says which error.
    DingTalkError,
    /// The per-address login rate limit or the gateway-wide code budget refused it.
    RateLimited,
    /// The gateway could not issue a session (identity too large for a cookie).
    GatewayError,
}

impl LoginOutcome {
    fn label(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::BadState => "bad_state",
            LoginOutcome::ReplayedState => "replayed_state",
            LoginOutcome::NotInOrganization => "not_in_organization",
            LoginOutcome::CodeRejected => "code_rejected",
            LoginOutcome::Refused => "refused",
            LoginOutcome::BadRequest => "bad_request",
            LoginOutcome::DingTalkError => "dingtalk_error",
            LoginOutcome::RateLimited => "rate_limited",
            LoginOutcome::GatewayError => "gateway_error",
        }
    }
}

/// How a due session re-validation ended, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revalidation {
    /// The directory still knows the person: the session was re-minted.
    Renewed,
    /// DingTalk failed, but within `revalidate_grace`: the session was kept.
    KeptInGrace,
    /// DingTalk failed after the grace period: the request was refused.
    Failed,
    /// The person left the organization or was deactivated: the session ended.
    Ended,
}

impl Revalidation {
    fn label(self) -> &'static str {
        match self {
            Revalidation::Renewed => "renewed",
            Revalidation::KeptInGrace => "kept_in_grace",
            Revalidation::Failed => "failed",
            Revalidation::Ended => "ended",
        }
    }
}

/// The DingTalk client's series (calls, app-token refreshes, directory cache). Cheap to clone:
/// clones count into the same series.
#[derive(Clone)]
pub struct DingTalkMetrics {
    calls: Family<DingTalkLabels, Counter>,
    seconds: Family<ApiLabel, Histogram, fn() -> Histogram>,
    token_refreshes: Family<ResultLabels, Counter>,
    directory: Family<ResultLabels, Counter>,
    budget_waits: Family<ApiLabel, Counter>,
    budget_wait_seconds: Family<ApiLabel, Counter<f64>>,
    budget_refusals: Family<ApiLabel, Counter>,
}

impl Default for DingTalkMetrics {
    fn default() -> Self {
        let metrics = Self {
            calls: Family::default(),
            seconds: Family::new_with_constructor(duration_histogram),
            token_refreshes: Family::default(),
            directory: Family::default(),
            budget_waits: Family::default(),
            budget_wait_seconds: Family::default(),
            budget_refusals: Family::default(),
        };
        // Exported at 0 from the start, so `increase()` and alerts see the first wait or
        // refusal (a series that appears with its first event has no earlier sample).
        for api in Api::ALL {
            let label = ApiLabel { api: api.name() };
            drop(metrics.budget_waits.get_or_create(&label));
            drop(metrics.budget_wait_seconds.get_or_create(&label));
            drop(metrics.budget_refusals.get_or_create(&label));
        }
        metrics
    }
}

impl std::fmt::Debug for DingTalkMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DingTalkMetrics")
    }
}

/// The `result` and `code` labels of one DingTalk answer. Codes come from DingTalk (a finite,
/// documented set); anything that does not look like one is counted as `other`, so an odd
/// answer cannot grow the series without bound.
pub fn dingtalk_result(result: &Result<(), &DingTalkError>) -> (&'static str, String) {
    fn bounded(code: &str) -> String {
        let plain = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if plain {
            code.to_owned()
        } else {
            "other".to_owned()
        }
    }
    match result {
        Ok(()) => ("ok", String::new()),
        Err(DingTalkError::Timeout { .. }) => ("timeout", String::new()),
        Err(DingTalkError::Transport { .. }) => ("transport", String::new()),
        Err(DingTalkError::Api { code, .. }) => ("error", bounded(code)),
        Err(DingTalkError::Legacy { errcode, .. }) => ("error", errcode.to_string()),
        Err(DingTalkError::RateLimited { .. }) => ("rate_limited", String::new()),
        Err(DingTalkError::Throttled { .. }) => ("throttled", String::new()),
        Err(DingTalkError::Decode { .. }) => ("decode", String::new()),
        Err(DingTalkError::OverBudget { .. }) => ("over_budget", String::new()),
    }
}

impl DingTalkMetrics {
    /// Counts one HTTP attempt to DingTalk (retries are attempts of their own) and its latency.
    pub fn call(&self, api: Api, result: Result<(), &DingTalkError>, elapsed: Duration) {
        let (outcome, code) = dingtalk_result(&result);
        self.calls
            .get_or_create(&DingTalkLabels {
                api: api.name(),
                result: outcome,
                code,
            })
            .inc();
        self.seconds
            .get_or_create(&ApiLabel { api: api.name() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one app-token fetch.
    pub fn token_refresh(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.token_refreshes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one directory look-up: answered from this replica's cache (`hit`), from the
    /// store shared with the other replicas (`shared`) or from DingTalk (`miss`).
    pub fn directory(&self, result: &'static str) {
        self.directory.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts one call that waited `wait` for the DingTalk call budget.
    pub fn budget_wait(&self, api: Api, wait: Duration) {
        let label = ApiLabel { api: api.name() };
        self.budget_waits.get_or_create(&label).inc();
        self.budget_wait_seconds
            .get_or_create(&label)
            .inc_by(wait.as_secs_f64());
    }

    /// Counts one call refused because the budget had no slot within the call's timeout.
    pub fn budget_refusal(&self, api: Api) {
        self.budget_refusals
            .get_or_create(&ApiLabel { api: api.name() })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dingtalk_requests",
            "HTTP attempts to DingTalk's APIs by API, result (ok, error, timeout, transport, rate_limited, throttled, decode) and DingTalk error code",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "dingtalk_request_duration",
            "Latency of HTTP attempts to DingTalk's APIs",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register(
            "dingtalk_app_token_refreshes",
            "App access-token fetches by result",
            self.token_refreshes.clone(),
        );
        registry.register(
            "directory_lookups",
            "Directory look-ups by result: hit (this replica's cache), shared (the store's) or miss (asked DingTalk)",
            self.directory.clone(),
        );
        registry.register(
            "dingtalk_budget_waits",
            "DingTalk calls that waited for the call budget (dingtalk.call_budget), by API",
            self.budget_waits.clone(),
        );
        registry.register_with_unit(
            "dingtalk_budget_wait",
            "Time DingTalk calls spent waiting for the call budget, by API",
            Unit::Seconds,
            self.budget_wait_seconds.clone(),
        );
        registry.register(
            "dingtalk_budget_refusals",
            "DingTalk calls not made because the call budget had no slot within dingtalk.timeout, by API",
            self.budget_refusals.clone(),
        );
    }
}

/// Every series the gateway exports. Built once per process (it holds the registry) and kept
/// across configuration reloads; the request path touches only its own worker's cells.
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestSeries>,
    /// Client connections open on the public listener.
    pub connections: Gauge,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    logins: Family<OutcomeLabels, Counter>,
    revalidations: Family<ResultLabels, Counter>,
    denials: Family<RouteLabel, Counter>,
    config: Arc<ConfigInfo>,
    reloads: Family<ResultLabels, Counter>,
    last_reload_ok: Gauge,
    /// 1 while the shared store answers (always 1 without one).
    pub store_up: Gauge,
    /// The DingTalk client's series.
    pub dingtalk: DingTalkMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every series under the `dinggate_` prefix; request series are kept for each of
    /// `workers` worker threads (see [`Metrics::routes`]).
    pub fn new(workers: usize, version: &'static str, commit: &'static str) -> Self {
        let workers = workers.max(1);
        let requests = Arc::new(RequestSeries {
            workers,
            rows: Mutex::new(Vec::new()),
            in_flight: (0..workers).map(|_| InFlightCell::default()).collect(),
        });
        let config = Arc::new(ConfigInfo::default());
        let last_reload_ok = Gauge::default();
        last_reload_ok.set(1);
        let mut metrics = Metrics {
            requests: requests.clone(),
            connections: Gauge::default(),
            upstream_errors: Family::default(),
            logins: Family::default(),
            revalidations: Family::default(),
            denials: Family::default(),
            config: config.clone(),
            reloads: Family::default(),
            last_reload_ok,
            store_up: Gauge::default(),
            dingtalk: DingTalkMetrics::default(),
            registry: Registry::with_prefix("dinggate"),
        };
        // Both results exist from the start (at 0), so an alert on failures has a series to
        // watch before the first reload.
        for result in ["success", "failure"] {
            let _ = metrics.reloads.get_or_create(&ResultLabels { result });
        }
        let registry = &mut metrics.registry;
        registry.register(
            "build",
            "The running dinggate's version and git commit",
            Info::new(BuildLabels { version, commit }),
        );
        registry.register_collector(Box::new(config));
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result: success (swapped in) or failure (the running configuration stayed)",
            metrics.reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 when the last configuration reload succeeded (or none was tried), 0 after a failed one",
            metrics.last_reload_ok.clone(),
        );
        metrics.store_up.set(1);
        registry.register(
            "store_up",
            "1 while the shared store (store.url) answers, 0 while it is unreachable; always 1 without one",
            metrics.store_up.clone(),
        );
        registry.register_collector(Box::new(requests));
        registry.register(
            "client_connections",
            "Client connections open on the public listener",
            metrics.connections.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests the upstream did not answer, by route and cause (connect, timeout, tls, protocol)",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "logins",
            "Login attempts by outcome",
            metrics.logins.clone(),
        );
        registry.register(
            "revalidations",
            "Due session re-validations against the directory, by result",
            metrics.revalidations.clone(),
        );
        registry.register(
            "policy_denials",
            "Signed-in requests a route's policy refused (403), by the refusing route",
            metrics.denials.clone(),
        );
        metrics.dingtalk.register(registry);
        metrics
    }

    /// The request series of a configuration with `routes` (by index), plus [`GATEWAY_ROUTE`]
    /// and [`NO_ROUTE`]. A route name seen before counts on where it left off.
    pub fn routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) -> RouteMetrics {
        let names: Box<[String]> = routes
            .into_iter()
            .chain([GATEWAY_ROUTE, NO_ROUTE])
            .map(str::to_owned)
            .collect();
        let rows: Vec<Box<[Arc<RouteCells>]>> =
            names.iter().map(|n| self.requests.row(n)).collect();
        let cells = (0..self.requests.workers)
            .map(|w| rows.iter().map(|row| row[w].clone()).collect())
            .collect();
        RouteMetrics {
            names,
            cells,
            upstream_errors: self.upstream_errors.clone(),
        }
    }

    /// The configuration with `hash` is now in service (`dinggate_config_info`).
    pub fn config_loaded(&self, hash: &str) {
        *self.config.0.lock().unwrap_or_else(|e| e.into_inner()) = hash.to_owned();
    }

    /// Counts a configuration reload and whether it was swapped in.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.last_reload_ok.set(i64::from(ok));
    }

    /// A request of `worker` started (`+1`) or reached its response head (`-1`).
    pub fn in_flight(&self, worker: usize, delta: i64) {
        let cells = &self.requests.in_flight;
        cells[worker.min(cells.len() - 1)]
            .0
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a login attempt's outcome.
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts a due re-validation's result.
    pub fn revalidation(&self, result: Revalidation) {
        self.revalidations
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Counts a policy refusal by `route` (the route whose policy refused).
    pub fn denial(&self, route: &str) {
        self.denials
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .inc();
    }

    /// The registry in the Prometheus text format 0.0.4 (what `promtool` and every scraper
    /// read), or OpenMetrics 1.0 when `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        let m = Metrics::new(2, "0.1.0", "abc");
        m.config_loaded("h");
        m
    }

    #[test]
    fn classes_are_bounded() {
        assert_eq!(method_index(&Method::from_bytes(b"BREW").unwrap()), 7);
        assert_eq!(status_index(StatusCode::from_u16(599).unwrap()), 4);
        assert_eq!(status_index(StatusCode::SWITCHING_PROTOCOLS), 0);
    }

    #[test]
    fn requests_are_counted_under_their_route_and_classes() {
        let m = metrics();
        let r = m.routes(["/admin", "/"]);
        let d = Duration::from_millis(3);
        r.request(0, RouteKey::Route(0), &Method::GET, StatusCode::OK, d);
        r.request(
            1,
            RouteKey::Route(0),
            &Method::GET,
            StatusCode::NO_CONTENT,
            d,
        );
        r.request(
            0,
            RouteKey::Route(1),
            &Method::from_bytes(b"PROPFIND").unwrap(),
            StatusCode::NOT_FOUND,
            d,
        );
        r.request(1, RouteKey::Gateway, &Method::GET, StatusCode::FOUND, d);
        r.request(0, RouteKey::None, &Method::POST, StatusCode::BAD_REQUEST, d);
        // An index past the table (a route added after start) or a worker past the count is
        // never a panic.
        r.request(7, RouteKey::Route(99), &Method::GET, StatusCode::OK, d);
        m.in_flight(0, 1);
        m.in_flight(1, 1);
        m.in_flight(1, -1);
        let text = m.encode(false);
        for line in [
            r#"dinggate_requests_total{route="/admin",method="GET",status="2xx"} 2"#,
            r#"dinggate_requests_total{route="/",method="OTHER",status="4xx"} 1"#,
            r#"dinggate_requests_total{route="_gateway",method="GET",status="3xx"} 1"#,
            r#"dinggate_requests_total{route="_none",method="POST",status="4xx"} 1"#,
            r#"dinggate_requests_total{route="_none",method="GET",status="2xx"} 1"#,
            r#"dinggate_request_duration_seconds_count{route="/admin"} 2"#,
            r#"dinggate_request_duration_seconds_bucket{route="/admin",le="0.0025"} 0"#,
            r#"dinggate_request_duration_seconds_bucket{route="/admin",le="0.005"} 2"#,
            r#"dinggate_request_duration_seconds_bucket{route="/admin",le="+Inf"} 2"#,
            r#"dinggate_request_duration_seconds_sum{route="/admin"} 0.006"#,
            "dinggate_requests_in_flight 1",
            r#"dinggate_build_info{version="0.1.0",commit="abc"} 1"#,
            r#"dinggate_config_info{hash="h"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("PROPFIND"));
    }

    #[test]
    fn a_reload_keeps_each_routes_counts_and_names_the_new_config() {
        let m = metrics();
        let d = Duration::from_millis(1);
        let before = m.routes(["app", "old"]);
        before.request(0, RouteKey::Route(0), &Method::GET, StatusCode::OK, d);
        before.request(1, RouteKey::Route(1), &Method::GET, StatusCode::OK, d);
        // The new table moves `app` to another index and drops `old`.
        let after = m.routes(["new", "app"]);
        after.request(1, RouteKey::Route(1), &Method::GET, StatusCode::OK, d);
        after.request(0, RouteKey::Route(0), &Method::GET, StatusCode::OK, d);
        // A request still in flight on the old configuration counts where it belongs.
        before.request(0, RouteKey::Route(0), &Method::GET, StatusCode::OK, d);
        after.upstream_error(RouteKey::Route(1), UpstreamFailure::Connect);
        m.config_loaded("h2");
        m.reload(true);
        m.reload(false);
        let text = m.encode(false);
        for line in [
            r#"dinggate_requests_total{route="app",method="GET",status="2xx"} 3"#,
            r#"dinggate_requests_total{route="old",method="GET",status="2xx"} 1"#,
            r#"dinggate_requests_total{route="new",method="GET",status="2xx"} 1"#,
            r#"dinggate_upstream_errors_total{route="app",cause="connect"} 1"#,
            r#"dinggate_config_info{hash="h2"} 1"#,
            r#"dinggate_config_reloads_total{result="success"} 1"#,
            r#"dinggate_config_reloads_total{result="failure"} 1"#,
            "dinggate_config_last_reload_successful 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(
            !text.contains(r#"hash="h""#),
            "the old hash is gone:\n{text}"
        );
        assert_eq!(
            text.matches(r#"route="app",le="+Inf""#).count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn dingtalk_codes_that_do_not_look_like_codes_are_other() {
        let err = DingTalkError::Api {
            api: Api::CurrentUser,
            status: 400,
            code: "bad code with spaces".into(),
            message: String::new(),
            request_id: None,
            required_scopes: Vec::new(),
        };
        assert_eq!(dingtalk_result(&Err(&err)), ("error", "other".to_owned()));
        let err = DingTalkError::Legacy {
            api: Api::UserDetail,
            errcode: 60020,
            sub_code: None,
            message: String::new(),
            request_id: None,
        };
        assert_eq!(dingtalk_result(&Err(&err)), ("error", "60020".to_owned()));
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let m = metrics();
        assert!(m.encode(true).ends_with("# EOF\n"));
        assert!(!m.encode(false).contains("# EOF"));
    }
}
