//! Configuration: strict raw structs read by figment (YAML, then `DINGGATE_*` env) → one validated `Config`.

pub mod raw;
pub mod routes;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Yaml};
use figment::Figment;
use http::HeaderName;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::login::redirect::HostPattern;
use crate::proxy::headers::StripRule;
use crate::proxy::tls::RawTls;
use crate::server::ServerLimits;
use crate::trusted::TrustedProxies;
pub use raw::ConfigIssue;
use raw::{parse_bool, ser_display, string_list, unknown_keys, Text, Unknown};
use routes::{validate_routes, RawRoute, RouteDefaults, RouteTable};

/// The shortest accepted session signing key, in bytes (HS256 wants at least the hash size).
pub const MIN_KEY_BYTES: usize = 32;

/// A value that must never be printed: Debug and Serialize show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; call only where it is used, never to log.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration. Built once at startup; nothing reads raw strings or env after that.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Address the public listener binds.
    pub listen: SocketAddr,
    /// The externally visible base URL of the gateway (scheme, host, optional port; no path).
    #[serde(serialize_with = "ser_display")]
    pub public_url: Url,
    /// Path prefix of the gateway's own endpoints, e.g. `/_dinggate`.
    pub prefix: String,
    /// Upstream connection settings (and the default upstream of routes).
    pub upstream: UpstreamConfig,
    /// Which upstream and policy each request gets.
    #[serde(serialize_with = "ser_routes")]
    pub routes: RouteTable,
    /// Hosts that absolute return URLs may point to (besides `public_url`'s own).
    #[serde(rename = "redirect_allowlist")]
    pub redirect_allowlist_raw: Vec<String>,
    /// Parsed form of `redirect_allowlist_raw`.
    #[serde(skip)]
    pub redirect_allowlist: Vec<HostPattern>,
    /// The proxies in front of the gateway: only their `X-Forwarded-*` and `X-Request-Id` are
    /// believed, and the client address is read through them.
    #[serde(serialize_with = "ser_trusted")]
    pub trusted_proxies: TrustedProxies,
    /// DingTalk application settings.
    pub dingtalk: DingTalkConfig,
    /// Session cookie and JWT settings.
    pub session: SessionConfig,
    /// Names of the identity headers sent upstream.
    pub headers: IdentityHeaders,
    /// Connection limits of the public listener.
    pub server: ServerConfig,
    /// Rate limits of the login endpoints and of DingTalk code exchanges.
    pub rate_limit: RateLimitConfig,
    /// Logging.
    pub log: LogConfig,
    /// TLS termination on the public listener (`None`: plain HTTP).
    pub tls: Option<ServerTlsConfig>,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: AdminConfig,
    /// What `/readyz` requires beyond a loaded configuration and a serving listener.
    pub readiness: ReadinessConfig,
    /// How configuration changes are picked up besides SIGHUP.
    pub reload: ReloadConfig,
    /// Signed identity assertions for upstreams (`None`: off).
    pub assertion: Option<AssertionConfig>,
    /// The state shared by replicas (`None`: this process's memory).
    pub store: Option<StoreConfig>,
    /// Send unauthenticated browsers to the sign-in page instead of straight to DingTalk.
    pub login_page: bool,
    /// Branding of the gateway's pages.
    pub ui: UiConfig,
    /// Settings that work but deserve attention (`check` prints them, `run` logs them at WARN).
    #[serde(skip)]
    pub warnings: Vec<ConfigIssue>,
}

/// Branding of the sign-in and error pages.
#[derive(Debug, Clone, Serialize)]
pub struct UiConfig {
    /// Name of the application shown on the sign-in page.
    pub app_name: String,
    /// Logo shown on the sign-in page.
    #[serde(serialize_with = "ser_opt_display")]
    pub logo_url: Option<Url>,
}

/// The upstream application.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    /// Default upstream base URL (routes may name their own); its path, if any, is prefixed to
    /// every forwarded path.
    #[serde(serialize_with = "ser_opt_display")]
    pub url: Option<Url>,
    /// Time allowed for the upstream to start answering (response head); then 504.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Time allowed to establish the TCP connection; then 502.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Forward the client's `Host` header (true) or use the upstream's authority (false).
    pub pass_host_header: bool,
    /// Most idle keep-alive connections kept per upstream origin and worker; more are closed.
    pub max_idle_per_host: usize,
    /// How long an idle upstream connection may be reused; older ones are closed.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
}

/// DingTalk application credentials and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DingTalkConfig {
    /// AppKey / Client ID of the enterprise internal app.
    pub client_id: String,
    /// AppSecret / Client Secret.
    pub client_secret: Secret<String>,
    /// The organization whose members may log in; `None` only with `allow_any_corp`.
    pub corp_id: Option<String>,
    /// An organization with exclusive accounts (专属钉钉): the scan login goes straight to its
    /// login page (`exclusiveLogin=true&exclusiveCorpId=…`).
    pub exclusive_corp_id: Option<String>,
    /// Explicitly opened to every DingTalk account (no corp restriction).
    pub allow_any_corp: bool,
    /// Base URL of the login (authorize) host.
    #[serde(serialize_with = "ser_display")]
    pub login_url: Url,
    /// Base URL of the new API host.
    #[serde(serialize_with = "ser_display")]
    pub api_url: Url,
    /// Base URL of the legacy oapi host.
    #[serde(serialize_with = "ser_display")]
    pub oapi_url: Url,
    /// Timeout of each DingTalk API call.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Look up userid, active flag and departments in the organization's directory at login
    /// and re-validation (needs the corp and the 成员信息读权限 permission).
    pub directory: bool,
    /// How long directory answers are cached.
    #[serde(serialize_with = "ser_duration")]
    pub directory_cache_ttl: Duration,
    /// Calls per second to each DingTalk API for the whole fleet (every replica sharing
    /// `store.url`; this replica alone without one); 0 = calls are not paced.
    pub call_budget: u32,
    /// Serve the login-free (免登) page to browsers inside the DingTalk client.
    pub inapp_login: bool,
    /// The DingTalk JSAPI script the in-client page loads.
    #[serde(serialize_with = "ser_display")]
    pub jsapi_url: Url,
    /// The DTFrameLogin script the sign-in page loads for the embedded QR code.
    #[serde(serialize_with = "ser_display")]
    pub qr_script_url: Url,
}

/// Session cookie and JWT settings.
#[derive(Debug, Clone, Serialize)]
pub struct SessionConfig {
    /// Session cookie name; login-state cookies use it as prefix (see [`SessionConfig::state_cookie_prefix`]).
    pub cookie_name: String,
    /// Optional cookie Domain attribute.
    pub cookie_domain: Option<String>,
    /// Whether cookies carry `Secure` (derived: false only when `public_url` is plain http).
    pub cookie_secure: bool,
    /// Session lifetime.
    #[serde(serialize_with = "ser_duration")]
    pub lifetime: Duration,
    /// HS256 key that signs new sessions.
    pub signing_key: Secret<Vec<u8>>,
    /// Older keys that still verify (rotation).
    pub previous_signing_keys: Vec<Secret<Vec<u8>>>,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// How many logins may be in flight at once in one browser (one state cookie each).
    pub max_login_flows: usize,
    /// How long a login may take between start and callback.
    #[serde(serialize_with = "ser_duration")]
    pub login_timeout: Duration,
    /// Sessions older than this are re-checked against the directory before being honoured.
    #[serde(serialize_with = "ser_duration")]
    pub revalidate_after: Duration,
    /// While DingTalk is unreachable, keep honouring a session for this long past
    /// `revalidate_after` (0 = fail closed at once).
    #[serde(serialize_with = "ser_duration")]
    pub revalidate_grace: Duration,
    /// A fresh DingTalk login is required after this long, however active the session.
    #[serde(serialize_with = "ser_duration")]
    pub max_lifetime: Duration,
    /// Most sign-out records (revoked sessions plus per-person cut-offs) kept in memory; when a
    /// new one does not fit after pruning, every session is ended (fail closed).
    pub max_revocations: usize,
    /// Most verified sessions kept in memory, so that a token is verified once and not on
    /// every request (0 = verify every request).
    pub cache_entries: usize,
}

impl SessionConfig {
    /// Name prefix of the login-state cookies: `{cookie_name}_csrf_`. Those cookies are scoped
    /// to the gateway prefix, which a `__Host-` cookie may not be, so `__Host-` becomes
    /// `__Secure-` for them (still Secure-only, but allowed a Path).
    pub fn state_cookie_prefix(&self) -> String {
        match self.cookie_name.strip_prefix("__Host-") {
            Some(rest) => format!("__Secure-{rest}_csrf_"),
            None => format!("{}_csrf_", self.cookie_name),
        }
    }
}

/// Names of the identity headers the upstream receives; `None` = not sent.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityHeaders {
    /// unionId (oauth2-proxy: `X-Forwarded-User`).
    #[serde(serialize_with = "ser_opt_header")]
    pub user: Option<HeaderName>,
    /// E-mail, when known.
    #[serde(serialize_with = "ser_opt_header")]
    pub email: Option<HeaderName>,
    /// Display name (oauth2-proxy: `X-Forwarded-Preferred-Username`).
    #[serde(serialize_with = "ser_opt_header")]
    pub preferred_username: Option<HeaderName>,
    /// unionId.
    #[serde(serialize_with = "ser_opt_header")]
    pub union_id: Option<HeaderName>,
    /// Display name.
    #[serde(serialize_with = "ser_opt_header")]
    pub name: Option<HeaderName>,
    /// Organization id.
    #[serde(serialize_with = "ser_opt_header")]
    pub corp_id: Option<HeaderName>,
    /// Enterprise userid (directory look-ups).
    #[serde(serialize_with = "ser_opt_header")]
    pub user_id: Option<HeaderName>,
    /// Comma-separated ids of the departments the user is directly in.
    #[serde(serialize_with = "ser_opt_header")]
    pub departments: Option<HeaderName>,
    /// Job title.
    #[serde(serialize_with = "ser_opt_header")]
    pub title: Option<HeaderName>,
    /// More header names (or `Name-*` prefixes) to strip from every forwarded request, on top of
    /// the built-in list (`crate::proxy::names::STRIPPED_NAMES` / `STRIPPED_PREFIXES`).
    #[serde(serialize_with = "ser_strip_rules")]
    pub strip_extra: Vec<StripRule>,
}

fn ser_strip_rules<S: serde::Serializer>(rules: &[StripRule], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(rules.iter().map(ToString::to_string))
}

impl IdentityHeaders {
    /// Every configured identity header name (used to strip client copies).
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.user,
            &self.email,
            &self.preferred_username,
            &self.union_id,
            &self.name,
            &self.corp_id,
            &self.user_id,
            &self.departments,
            &self.title,
        ]
        .into_iter()
        .flatten()
    }
}

/// Limits of the public listener.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Time a client has to send a request head.
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// Largest accepted request head, in bytes.
    pub max_header_bytes: usize,
    /// Drain time on shutdown.
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM, how long `/readyz` answers 503 while the gateway still accepts, so load
    /// balancers stop sending before accepting stops.
    #[serde(serialize_with = "ser_duration")]
    pub shutdown_delay: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; at the cap, accepting pauses.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Length of the kernel's queue of connections not yet accepted (`listen(2)` backlog).
    pub listen_backlog: u32,
    /// Worker threads, each with its own event loop and listening socket (`SO_REUSEPORT`);
    /// `auto` (the default) is the number of CPUs the process may run on.
    pub workers: usize,
}

/// Rate limits of the login flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitConfig {
    /// Whether the limits below apply at all.
    pub enabled: bool,
    /// Per client address (IPv4 address, IPv6 /64): login starts and callbacks.
    pub login: RateBucket,
    /// Whole gateway: authorization codes sent to DingTalk (keep below DingTalk's per-app quota).
    pub code_exchange: RateBucket,
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateBucket {
    /// Tokens added per second (may be fractional, e.g. 0.5).
    pub per_second: f64,
    /// Bucket size: requests admitted at once after a quiet period.
    pub burst: u32,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `dinggate=debug,info`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Write the access line (one per request).
    pub access: bool,
    /// Repeated failures of one kind (route and cause): the first is logged in full, the rest
    /// as one count per interval. Zero: every one in full.
    #[serde(serialize_with = "ser_duration")]
    pub repeat_interval: Duration,
}

/// The default of `log.repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// TLS termination: the certificate and key the public listener serves, and an optional
/// plain-HTTP listener that redirects to https.
#[derive(Debug, Clone, Serialize)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first (certbot's `fullchain.pem`, cert-manager's `tls.crt`).
    pub cert_file: PathBuf,
    /// PEM private key (`privkey.pem`, `tls.key`).
    pub key_file: PathBuf,
    /// Where a plain-HTTP listener answers every request with a redirect to https.
    #[serde(serialize_with = "ser_opt_display")]
    pub redirect_http: Option<SocketAddr>,
}

/// The admin listener (off unless `admin.listen` is set).
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; never on the public listener.
    #[serde(serialize_with = "ser_opt_display")]
    pub listen: Option<SocketAddr>,
}

/// Signed identity assertions: a short-lived JWT per session and route, signed with an
/// asymmetric key, for upstreams that verify instead of trusting headers.
#[derive(Debug, Clone, Serialize)]
pub struct AssertionConfig {
    /// PEM private key (P-256 for ES256, or Ed25519 for EdDSA) that signs.
    pub signing_key_file: PathBuf,
    /// More PEM keys (public or private) whose public keys the JWKS publishes: the next key
    /// before it signs, the previous one until the assertions it signed have expired.
    pub publish_key_files: Vec<PathBuf>,
    /// The request header that carries the assertion (client copies are always removed).
    #[serde(serialize_with = "ser_display")]
    pub header: HeaderName,
    /// How long an assertion is valid (`exp - iat`); it is reused for half of that.
    #[serde(serialize_with = "ser_duration")]
    pub lifetime: Duration,
    /// The loaded keys.
    #[serde(skip)]
    pub keys: crate::assertion::AssertionKeys,
}

/// A shared store: Redis or Valkey.
#[derive(Debug, Clone, Serialize)]
pub struct StoreConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS).
    #[serde(serialize_with = "ser_store_url")]
    pub url: Secret<String>,
    /// Longest wait for any one Redis command; the request path never waits for Redis at all.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// The CA bundle a `rediss://` server's certificate is verified with (default: the
    /// system's trust store).
    pub ca_file: Option<PathBuf>,
    /// `ca_file`'s PEM text, read and checked at load.
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
}

/// The store URL without its password.
fn ser_store_url<S: Serializer>(url: &Secret<String>, s: S) -> Result<S::Ok, S::Error> {
    match Url::parse(url.expose()) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("<redacted>"));
            }
            s.collect_str(&u)
        }
        Err(_) => s.serialize_str("<redacted>"),
    }
}

/// The default of `assertion.header`.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-dingtalk-assertion";

/// Configuration reloads (SIGHUP always reloads).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadConfig {
    /// How often the configuration file, the environment and the secret files are re-read and
    /// compared with the configuration in service; a change is reloaded as on SIGHUP. Zero: off.
    #[serde(serialize_with = "ser_duration")]
    pub watch_interval: Duration,
}

/// What `/readyz` checks.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessConfig {
    /// Also require a usable DingTalk app token (fetched or cached).
    pub check_dingtalk: bool,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or a value of the wrong type.
    #[error("{}", format_figment(.0))]
    Parse(#[source] Box<figment::Error>),
    /// Every validation problem, all at once.
    #[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// The validation issues (empty for read/parse errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Invalid(issues) => issues,
            ConfigError::Read { .. } | ConfigError::Parse(_) => &[],
        }
    }
}

fn format_figment(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| {
            let problem = describe_kind(&e.kind);
            let from_env = e.metadata.as_ref().is_some_and(is_env_metadata);
            match (e.path.is_empty(), from_env) {
                (true, _) => format!("configuration error: {problem}"),
                (false, true) => format!(
                    "{}: {problem} (from the environment, key {})",
                    env_var_name(&e.path),
                    e.path.join(".")
                ),
                (false, false) => format!("{}: {problem}", e.path.join(".")),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The same errors (paths, sources) with every value dropped from their descriptions, so that
/// neither Display nor Debug of a [`ConfigError::Parse`] (nor its source) can show a secret.
fn without_values(err: figment::Error) -> figment::Error {
    let clean: Vec<figment::Error> = err
        .into_iter()
        .map(|e| {
            let mut clean =
                figment::Error::from(figment::error::Kind::Message(describe_kind(&e.kind)));
            clean.path = e.path;
            clean.metadata = e.metadata;
            clean.profile = e.profile;
            clean
        })
        .collect();
    // `a.chain(b)` puts `b` first: chain from the last error back to keep the order.
    let mut out: Option<figment::Error> = None;
    for e in clean.into_iter().rev() {
        out = Some(match out {
            None => e,
            Some(later) => later.chain(e),
        });
    }
    out.unwrap_or_else(|| figment::Error::from("invalid configuration".to_owned()))
}

/// A parse problem in words, without the offending value: the value may be a secret (a key
/// given where a list was expected), and the key path already says where to look.
fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {}, found {}", expected_kind(expected), actual_kind(actual))
        }
        Kind::InvalidLength(_, expected) => format!("wrong number of entries, expected {expected}"),
        Kind::UnknownVariant(_, expected) | Kind::UnknownField(_, expected) => {
            format!("not one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => format!("`{field}` is missing"),
        Kind::DuplicateField(field) => format!("`{field}` is given twice"),
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => "number out of range".to_owned(),
        Kind::Unsupported(actual) => format!("{} is not supported here", actual_kind(actual)),
        Kind::UnsupportedKey(actual, _) => {
            format!("{} cannot be used as a key", actual_kind(actual))
        }
        // Messages come from the YAML parser (syntax errors with a line and column, no values)
        // or from serde's untagged enums (route lists), whose wording names a Rust type.
        Kind::Message(m) => match m.strip_prefix("data did not match any variant of untagged enum ") {
            Some("Scalar") => {
                "expected a single value (text, a number or true/false), found a list or a map"
                    .to_owned()
            }
            Some("OneOrMany") => {
                "expected a value or a list of values (text, numbers or true/false), found a map or a nested list"
                    .to_owned()
            }
            Some(_) => "not in the expected form (see gateway.yaml)".to_owned(),
            None => without_quoted(m),
        },
    }
}

/// `m` with every "quoted" and `quoted` part replaced by `…`: the YAML parser quotes the
/// values it complains about (`invalid value: string "…", expected an integer`).
fn without_quoted(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut open: Option<char> = None;
    let mut escaped = false;
    for ch in m.chars() {
        match open {
            None if ch == '"' || ch == '`' => {
                open = Some(ch);
                out.push(ch);
                out.push('…');
            }
            None => out.push(ch),
            Some(_) if escaped => escaped = false,
            Some('"') if ch == '\\' => escaped = true,
            Some(q) if ch == q => {
                open = None;
                out.push(ch);
            }
            Some(_) => {}
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

/// serde's description of what was expected, without Rust type names.
fn expected_kind(expected: &str) -> &str {
    match expected {
        e if e.starts_with("struct ") || e == "a map" => "a section of keys",
        "a sequence" => "a list",
        "a string" => "text",
        e => e,
    }
}

/// What kind of value was found, never the value itself.
fn actual_kind(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "true/false",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Seq => "a list",
        Actual::Map => "a map",
        Actual::NewtypeStruct
        | Actual::Enum
        | Actual::UnitVariant
        | Actual::NewtypeVariant
        | Actual::TupleVariant
        | Actual::StructVariant
        | Actual::Other(_) => "a value of another kind",
    }
}

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "DINGGATE_";

/// Whether a value came from the `DINGGATE_*` environment provider (figment names it so).
fn is_env_metadata(md: &figment::Metadata) -> bool {
    md.source.is_none() && md.name.ends_with("environment variable(s)")
}

/// The variable that sets the key at `path`, e.g. `DINGGATE_SESSION__LIFETIME`.
fn env_var_name<S: AsRef<str>>(path: &[S]) -> String {
    let keys: Vec<String> = path
        .iter()
        .map(|k| k.as_ref().to_ascii_uppercase())
        .collect();
    format!("{ENV_PREFIX}{}", keys.join("__"))
}

/// Names the environment variable in issues whose value came from the environment, so that a
/// typo in a variable is not reported as a YAML key the file does not have.
fn attribute_env(figment: &Figment, issues: &mut [ConfigIssue]) {
    for issue in issues {
        // Indexed keys (`routes[1].upstream`) are not figment paths; lists from the environment
        // are rare and the key still names the place.
        if issue.key.contains('[') || issue.key.is_empty() {
            continue;
        }
        if figment
            .find_metadata(&issue.key)
            .is_some_and(is_env_metadata)
        {
            let path: Vec<&str> = issue.key.split('.').collect();
            issue.problem = format!(
                "{} (from the environment, key {})",
                issue.problem, issue.key
            );
            issue.key = env_var_name(&path);
        }
    }
}

impl Config {
    /// Loads `path` (YAML) and then `DINGGATE_*` env overrides (`__` separates nesting levels).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
        let figment = Figment::new()
            .merge(Yaml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::from_figment(figment)
    }

    /// Validates a YAML document without reading the environment (tests, embedded defaults).
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Yaml::string(yaml)))
    }

    /// Extracts and validates from any figment.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(without_values(e))))?;
        raw.validate().map_err(|mut issues| {
            attribute_env(&figment, &mut issues);
            ConfigError::Invalid(issues)
        })
    }

    /// The callback URL to register in the DingTalk developer console.
    pub fn callback_url(&self) -> String {
        format!("{}{}/callback", self.public_origin(), self.prefix)
    }

    /// `public_url` without a trailing slash.
    pub fn public_origin(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// A short hash of the effective configuration, to tell replicas' configurations apart
    /// (`dinggate_config_info`). Secrets are not part of it: they serialize redacted.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        sha2::Sha256::digest(&json)[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A digest of the whole effective configuration, secrets included: tells whether two loads
    /// differ (the reload watch), never shown anywhere.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        digest.update(serde_json::to_vec(self).unwrap_or_default());
        let secrets = [
            self.dingtalk.client_secret.expose().as_bytes(),
            self.session.signing_key.expose().as_slice(),
        ]
        .into_iter()
        .chain(
            self.session
                .previous_signing_keys
                .iter()
                .map(|k| k.expose().as_slice()),
        );
        for secret in secrets {
            // Length-prefixed, so that two lists of secrets cannot hash alike.
            digest.update((secret.len() as u64).to_be_bytes());
            digest.update(secret);
        }
        if let Some(store) = &self.store {
            digest.update(store.url.expose().as_bytes());
            if let Some(pem) = &store.ca_pem {
                digest.update(pem);
            }
        }
        // The assertion keys are read from files whose paths may stay the same.
        if let Some(assertion) = &self.assertion {
            digest.update(assertion.keys.digest);
        }
        digest.finalize().into()
    }

    /// The effective configuration as YAML, secrets redacted.
    pub fn redacted_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// `assertion:` read but not yet checked against the identity headers.
struct PendingAssertion {
    signing_key_file: PathBuf,
    publish_key_files: Vec<PathBuf>,
    header: Option<HeaderName>,
    lifetime: Duration,
}

impl PendingAssertion {
    /// `None` when `assertion.signing_key_file` is not set (the feature is off); the other keys
    /// are still checked, and published keys without a signing key are refused.
    fn read(c: &mut Check, raw: RawAssertion) -> Option<PendingAssertion> {
        let header = c.header("assertion.header", raw.header, DEFAULT_ASSERTION_HEADER);
        if header.is_none() && !c.issues.iter().any(|i| i.key == "assertion.header") {
            c.issue("assertion.header", "must not be empty");
        }
        let lifetime = c.duration_within(
            "assertion.lifetime",
            raw.lifetime,
            Duration::from_secs(300),
            (Duration::from_secs(30), Duration::from_secs(3600)),
        );
        let publish_key_files: Vec<PathBuf> = raw
            .publish_key_files
            .unwrap_or_default()
            .into_iter()
            .map(|p| PathBuf::from(p.trim()))
            .collect();
        let signing = raw
            .signing_key_file
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let Some(signing_key_file) = signing else {
            if !publish_key_files.is_empty() {
                c.issue(
                    "assertion.publish_key_files",
                    "set, but assertion.signing_key_file is not: assertions are off",
                );
            }
            return None;
        };
        Some(PendingAssertion {
            signing_key_file,
            publish_key_files,
            header,
            lifetime,
        })
    }

    /// Loads the keys (each problem named under its key) and checks that the header is none
    /// of the identity headers.
    fn finish(self, c: &mut Check, headers: &IdentityHeaders) -> Option<AssertionConfig> {
        let header = self.header?;
        if headers.names().any(|n| *n == header) {
            c.issue(
                "assertion.header",
                format!("{header} is already an identity header (headers:); use another name"),
            );
            return None;
        }
        match crate::assertion::AssertionKeys::load(&self.signing_key_file, &self.publish_key_files)
        {
            Ok(keys) => Some(AssertionConfig {
                signing_key_file: self.signing_key_file,
                publish_key_files: self.publish_key_files,
                header,
                lifetime: self.lifetime,
                keys,
            }),
            Err(problems) => {
                for p in problems {
                    let key = match self.publish_key_files.iter().position(|f| *f == p.path) {
                        Some(i) if p.path != self.signing_key_file => {
                            format!("assertion.publish_key_files[{i}]")
                        }
                        _ => "assertion.signing_key_file".to_owned(),
                    };
                    c.issue(&key, p.to_string());
                }
                None
            }
        }
    }
}

/// `tls:`: both files or neither; the pair must load (so `check` reports a bad certificate, not
/// the first handshake), and `public_url` should then be https.
fn server_tls(
    c: &mut Check,
    raw: RawServerTls,
    listen: Option<SocketAddr>,
    public_url: Option<&Url>,
) -> Option<ServerTlsConfig> {
    let clean = |v: Text| v.0.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let (cert, key) = (clean(raw.cert_file), clean(raw.key_file));
    let redirect = clean(raw.redirect_http);
    let (cert_file, key_file) = match (cert, key) {
        (None, None) => {
            if redirect.is_some() {
                c.issue(
                    "tls.redirect_http",
                    "needs tls.cert_file and tls.key_file (it redirects to the https listener)",
                );
            }
            return None;
        }
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (Some(_), None) => {
            c.issue(
                "tls.key_file",
                "missing: tls.cert_file needs its private key",
            );
            return None;
        }
        (None, Some(_)) => {
            c.issue(
                "tls.cert_file",
                "missing: tls.key_file needs its certificate",
            );
            return None;
        }
    };
    if let Err(e) = crate::tls_server::ServerTls::load(&cert_file, &key_file) {
        c.issue("tls", e.to_string());
    }
    if public_url.is_some_and(|u| u.scheme() != "https") {
        c.warn(
            "public_url",
            "is http while the gateway terminates TLS (tls:): browsers are sent to http URLs and session cookies lose Secure; write https://",
        );
    }
    let redirect_http = redirect.and_then(|raw| listen_addr(c, "tls.redirect_http", &raw));
    if let (Some(r), Some(l)) = (redirect_http, listen) {
        if r.port() == l.port() {
            c.issue(
                "tls.redirect_http",
                "must listen on another port than `listen` (the https listener)",
            );
        }
    }
    Some(ServerTlsConfig {
        cert_file,
        key_file,
        redirect_http,
    })
}

fn ser_trusted<S: Serializer>(t: &TrustedProxies, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.nets().iter().map(ToString::to_string))
}

/// `trusted_proxies`, or the deprecated `trust_forwarded_headers` (true = every peer, with the
/// old meaning: the peer's own `X-Forwarded-For` entry is the client).
fn trusted_proxies(c: &mut Check, list: Option<Vec<String>>, deprecated: Text) -> TrustedProxies {
    let old = c.boolean("trust_forwarded_headers", deprecated.clone(), false);
    if deprecated.is_some() {
        if list.is_some() {
            c.issue(
                "trust_forwarded_headers",
                "set together with trusted_proxies: remove it (trusted_proxies replaces it)",
            );
        } else {
            c.warn(
                "trust_forwarded_headers",
                if old {
                    "deprecated: trusts every peer; write trusted_proxies: [the addresses or ranges of your proxies] (or [0.0.0.0/0, \"::/0\"] for the same meaning)"
                } else {
                    "deprecated: remove it (no trusted_proxies is the same)"
                },
            );
        }
    }
    let Some(list) = list else {
        return if old {
            TrustedProxies::everyone()
        } else {
            TrustedProxies::default()
        };
    };
    let mut nets = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        match TrustedProxies::parse_entry(entry) {
            Ok(net) => nets.push(net),
            Err(e) => c.issue(&format!("trusted_proxies[{i}]"), e),
        }
    }
    let trusted = TrustedProxies::new(nets);
    if trusted.trusts_everyone() {
        c.warn(
            "trusted_proxies",
            "trusts every address: any client that reaches the gateway directly can choose its X-Forwarded-* headers, request id and logged address; list only your proxies",
        );
    }
    trusted
}

fn ser_routes<S: Serializer>(t: &RouteTable, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.routes())
}

fn ser_opt_display<T: fmt::Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_str(""),
    }
}

fn ser_opt_header<S: Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(h.as_str()),
        None => s.serialize_str(""),
    }
}

// ---- raw layer -------------------------------------------------------------------------------
//
// Every leaf is optional and scalars are read leniently as strings, so that one bad value does
// not hide the others: the validator below reports all problems at once. Unknown keys land in
// `unknown` (a typo must be an error, not silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    listen: Text,
    public_url: Text,
    prefix: Text,
    upstream: Text,
    upstream_tls: Option<RawTls>,
    upstream_timeout: Text,
    upstream_connect_timeout: Text,
    pass_host_header: Text,
    upstream_max_idle_per_host: Text,
    upstream_idle_timeout: Text,
    #[serde(deserialize_with = "string_list")]
    redirect_allowlist: Option<Vec<String>>,
    trust_forwarded_headers: Text,
    #[serde(deserialize_with = "string_list")]
    trusted_proxies: Option<Vec<String>>,
    dingtalk: RawDingTalk,
    session: RawSession,
    headers: RawHeaders,
    server: RawServer,
    rate_limit: RawRateLimit,
    log: RawLog,
    tls: RawServerTls,
    admin: RawAdmin,
    readiness: RawReadiness,
    reload: RawReload,
    assertion: RawAssertion,
    store: RawStore,
    login_page: Text,
    ui: RawUi,
    routes: Option<Vec<RawRoute>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUi {
    app_name: Text,
    logo_url: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDingTalk {
    client_id: Text,
    client_secret: Text,
    client_secret_file: Text,
    corp_id: Text,
    exclusive_corp_id: Text,
    allow_any_corp: Text,
    login_url: Text,
    api_url: Text,
    oapi_url: Text,
    timeout: Text,
    directory: Text,
    directory_cache_ttl: Text,
    call_budget: Text,
    inapp_login: Text,
    jsapi_url: Text,
    qr_script_url: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSession {
    cookie_name: Text,
    cookie_domain: Text,
    lifetime: Text,
    signing_key: Text,
    signing_key_file: Text,
    #[serde(deserialize_with = "string_list")]
    previous_signing_keys: Option<Vec<String>>,
    issuer: Text,
    audience: Text,
    max_login_flows: Text,
    login_timeout: Text,
    revalidate_after: Text,
    revalidate_grace: Text,
    max_lifetime: Text,
    max_revocations: Text,
    cache_entries: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHeaders {
    user: Text,
    email: Text,
    preferred_username: Text,
    union_id: Text,
    name: Text,
    corp_id: Text,
    user_id: Text,
    departments: Text,
    title: Text,
    #[serde(deserialize_with = "string_list")]
    strip_extra: Option<Vec<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServer {
    header_read_timeout: Text,
    max_header_bytes: Text,
    shutdown_timeout: Text,
    shutdown_delay: Text,
    idle_timeout: Text,
    max_connections: Text,
    max_concurrent_streams: Text,
    listen_backlog: Text,
    workers: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRateLimit {
    enabled: Text,
    login: RawBucket,
    code_exchange: RawBucket,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawBucket {
    per_second: Text,
    burst: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

impl RawBucket {
    fn validate(self, c: &mut Check, key: &str, default: RateBucket) -> RateBucket {
        c.unknown(key, &self.unknown);
        let per_second = match self.per_second.as_deref().map(str::trim) {
            None => default.per_second,
            Some(s) => match s.parse::<f64>() {
                Ok(n) if n.is_finite() && (0.001..=100_000.0).contains(&n) => n,
                _ => {
                    c.issue(
                        &format!("{key}.per_second"),
                        "must be a number from 0.001 to 100000 (tokens added per second)",
                    );
                    default.per_second
                }
            },
        };
        let burst = c.number(
            &format!("{key}.burst"),
            self.burst,
            default.burst as usize,
            (1, 100_000),
        ) as u32;
        RateBucket { per_second, burst }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServerTls {
    cert_file: Text,
    key_file: Text,
    redirect_http: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAdmin {
    listen: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawStore {
    url: Text,
    timeout: Text,
    ca_file: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAssertion {
    signing_key_file: Text,
    #[serde(deserialize_with = "string_list")]
    publish_key_files: Option<Vec<String>>,
    header: Text,
    lifetime: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawReload {
    watch_interval: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawReadiness {
    check_dingtalk: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLog {
    level: Text,
    format: Text,
    access: Text,
    repeat_interval: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Collects problems while turning raw values into typed ones.
#[derive(Default)]
struct Check {
    issues: Vec<ConfigIssue>,
    warnings: Vec<ConfigIssue>,
}

/// Substrings (compared ignoring case) that mark a value copied from an example instead of the
/// developer console: `your-app-key`, `changeme`, `<corp-id>`, `app.example`.
const PLACEHOLDER_MARKS: &[&str] = &[
    "your-",
    "your_",
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replace_me",
    "placeholder",
    "example",
    "<",
    ">",
];

/// The placeholder mark `value` contains, if any.
///
/// With `dingtalk_id`, a value of the form real DingTalk ids have (`ding` followed by letters
/// and digits: client ids and corpIds alike) is never a placeholder, whatever it contains.
fn placeholder_mark(value: &str, dingtalk_id: bool) -> Option<&'static str> {
    if dingtalk_id
        && value.len() > 4
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
        && value[..4].eq_ignore_ascii_case("ding")
    {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    PLACEHOLDER_MARKS
        .iter()
        .copied()
        .find(|mark| lower.contains(mark))
}

impl Check {
    fn warn(&mut self, key: &str, problem: impl Into<String>) {
        self.warnings.push(ConfigIssue {
            key: key.to_owned(),
            problem: problem.into(),
        });
    }

    /// Refuses a DingTalk id that is an obvious placeholder (the value is shown: ids are not secret).
    fn id_placeholder(&mut self, key: &str, value: &str, what: &str) {
        if let Some(mark) = placeholder_mark(value, true) {
            self.issue(
                key,
                format!("{value:?} is a placeholder (contains `{mark}`): set {what} (it starts with `ding`)"),
            );
        }
    }

    /// Refuses a secret that is an obvious placeholder, without showing it.
    fn secret_placeholder(&mut self, key: &str, value: &str) {
        if let Some(mark) = placeholder_mark(value, false) {
            self.issue(
                key,
                format!("is a placeholder (contains `{mark}`): set the real value"),
            );
        }
    }

    fn issue(&mut self, key: &str, problem: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.to_owned(),
            problem: problem.into(),
        });
    }

    fn unknown(&mut self, section: &str, unknown: &Unknown) {
        self.issues.extend(unknown_keys(section, unknown));
    }

    fn required(&mut self, key: &str, v: impl Into<Option<String>>) -> Option<String> {
        let v: Option<String> = v.into();
        match v.map(|s| s.trim().to_owned()) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.issue(key, "missing");
                None
            }
        }
    }

    fn duration(&mut self, key: &str, v: impl Into<Option<String>>, default: Duration) -> Duration {
        let v: Option<String> = v.into();
        let Some(s) = v else { return default };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.issue(key, "must be greater than zero");
                default
            }
            Err(e) => {
                self.issue(
                    key,
                    format!("not a duration like `30s`, `5m` or `8h` ({e})"),
                );
                default
            }
        }
    }

    /// A duration within `range` (both ends included).
    /// A duration that may be zero (`0s`, the default), at most `max`.
    fn delay(&mut self, key: &str, v: impl Into<Option<String>>, max: Duration) -> Duration {
        let v: Option<String> = v.into();
        let Some(s) = v else { return Duration::ZERO };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d <= max => d,
            Ok(_) => {
                self.issue(
                    key,
                    format!("must be at most {}", humantime::format_duration(max)),
                );
                Duration::ZERO
            }
            Err(e) => {
                self.issue(key, format!("not a duration like `0s`, `5s` or `1m` ({e})"));
                Duration::ZERO
            }
        }
    }

    fn duration_within(
        &mut self,
        key: &str,
        v: impl Into<Option<String>>,
        default: Duration,
        range: (Duration, Duration),
    ) -> Duration {
        let v: Option<String> = v.into();
        let d = self.duration(key, v, default);
        if d < range.0 || d > range.1 {
            self.issue(
                key,
                format!(
                    "must be from {} to {}",
                    humantime::format_duration(range.0),
                    humantime::format_duration(range.1)
                ),
            );
            return default;
        }
        d
    }

    fn duration_or_zero(
        &mut self,
        key: &str,
        v: impl Into<Option<String>>,
        default: Duration,
    ) -> Duration {
        let v: Option<String> = v.into();
        let Some(s) = v else { return default };
        if s.trim() == "0" {
            return Duration::ZERO;
        }
        match humantime::parse_duration(s.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.issue(key, format!("not a duration like `0`, `30s` or `1h` ({e})"));
                default
            }
        }
    }

    fn boolean(&mut self, key: &str, v: impl Into<Option<String>>, default: bool) -> bool {
        let v: Option<String> = v.into();
        match parse_bool(v.as_deref()) {
            Ok(b) => b.unwrap_or(default),
            Err(problem) => {
                self.issue(key, problem);
                default
            }
        }
    }

    fn number(
        &mut self,
        key: &str,
        v: impl Into<Option<String>>,
        default: usize,
        range: (usize, usize),
    ) -> usize {
        let v: Option<String> = v.into();
        let Some(s) = v else { return default };
        match s.trim().parse::<usize>() {
            Ok(n) if n >= range.0 && n <= range.1 => n,
            _ => {
                self.issue(
                    key,
                    format!("must be a whole number from {} to {}", range.0, range.1),
                );
                default
            }
        }
    }

    fn http_url(
        &mut self,
        key: &str,
        v: impl Into<Option<String>>,
        default: Option<&str>,
    ) -> Option<Url> {
        let v: Option<String> = v.into();
        let s = match (v, default) {
            (Some(s), _) => s,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                self.issue(key, "missing");
                return None;
            }
        };
        match Url::parse(s.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    self.issue(key, "must not contain credentials");
                    None
                } else if u.query().is_some() || u.fragment().is_some() {
                    self.issue(key, "must not have a query or fragment");
                    None
                } else {
                    Some(u)
                }
            }
            _ => {
                self.issue(key, "not an http(s) URL");
                None
            }
        }
    }

    /// An http(s) URL of a script or image: a query is fine (CDNs version with one), credentials
    /// and fragments are not.
    fn asset_url(&mut self, key: &str, v: impl Into<Option<String>>, default: &str) -> Option<Url> {
        let v: Option<String> = v.into();
        let s = v.unwrap_or_else(|| default.to_owned());
        match Url::parse(s.trim()) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.fragment().is_none() =>
            {
                Some(u)
            }
            _ => {
                self.issue(key, "not an http(s) URL (without credentials or #fragment)");
                None
            }
        }
    }

    /// A secret given inline or through a `*_file` path (exactly one of them).
    fn secret(
        &mut self,
        key: &str,
        inline: impl Into<Option<String>>,
        file: impl Into<Option<String>>,
    ) -> Option<String> {
        let inline: Option<String> = inline.into();
        let file: Option<String> = file.into();
        match (
            inline.filter(|s| !s.is_empty()),
            file.filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                self.issue(key, format!("set either {key} or {key}_file, not both"));
                None
            }
            (Some(s), None) => Some(s),
            (None, Some(path)) => match std::fs::read_to_string(path.trim()) {
                // A trailing newline is almost always an editor artefact, not part of the secret.
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    // The path is not repeated: a secret put here by mistake must not be printed.
                    self.issue(&format!("{key}_file"), format!("cannot read the file: {e}"));
                    None
                }
            },
            (None, None) => {
                self.issue(
                    key,
                    format!("missing (set {key} or {key}_file, or the env var)"),
                );
                None
            }
        }
    }

    fn header(
        &mut self,
        key: &str,
        v: impl Into<Option<String>>,
        default: &str,
    ) -> Option<HeaderName> {
        let v: Option<String> = v.into();
        let s = v.unwrap_or_else(|| default.to_owned());
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        match HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.issue(key, "not a valid HTTP header name");
                None
            }
        }
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Vec<ConfigIssue>> {
        let mut c = Check::default();
        c.unknown("", &self.unknown);
        c.unknown("dingtalk", &self.dingtalk.unknown);
        c.unknown("session", &self.session.unknown);
        c.unknown("headers", &self.headers.unknown);
        c.unknown("server", &self.server.unknown);
        c.unknown("log", &self.log.unknown);
        c.unknown("admin", &self.admin.unknown);
        c.unknown("tls", &self.tls.unknown);
        c.unknown("readiness", &self.readiness.unknown);
        c.unknown("reload", &self.reload.unknown);
        c.unknown("assertion", &self.assertion.unknown);
        c.unknown("store", &self.store.unknown);
        c.unknown("rate_limit", &self.rate_limit.unknown);
        c.unknown("ui", &self.ui.unknown);

        let listen = listen_addr(
            &mut c,
            "listen",
            self.listen
                .as_deref()
                .map(str::trim)
                .unwrap_or("127.0.0.1:4180"),
        );

        let public_url = c.http_url("public_url", self.public_url, None);
        if let Some(u) = &public_url {
            if u.path() != "/" {
                c.issue(
                    "public_url",
                    "must not have a path (the gateway owns the whole origin)",
                );
            }
            // The WHATWG parser accepts hosts that requests could never name (the gateway
            // checks every request's host with the strict parser): refuse them here too.
            match crate::host::parse_host(u.host_str().unwrap_or_default()) {
                Err(e) => c.issue("public_url", format!("its host is not acceptable: {e}")),
                Ok(host) if u.scheme() == "http" && !is_loopback(&host) => c.warn(
                    "public_url",
                    "plain http:// on a host other than this machine: cookies go without Secure and sessions travel readable over the network; use https:// (TLS at a proxy in front) outside local trials",
                ),
                Ok(_) => {}
            }
        }

        let prefix = self.prefix.0.unwrap_or_else(|| "/_dinggate".to_owned());
        let prefix = prefix.trim().trim_end_matches('/').to_owned();
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || !prefix[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            || prefix.contains("//")
            || prefix.contains("..")
        {
            c.issue(
                "prefix",
                "must be a path like /_dinggate (letters, digits, - _ . /)",
            );
        }

        // A missing upstream is only a problem when no route names its own; the route check
        // below reports it then.
        let upstream_given = self.upstream.is_some();
        let upstream_url = match self.upstream.0 {
            Some(u) => c.http_url("upstream", Some(u), None),
            None => None,
        };
        let upstream_tls = self.upstream_tls.and_then(|raw| {
            let tls = raw.validate("upstream_tls", &mut c.issues);
            match &upstream_url {
                Some(u) if u.scheme() != "https" => {
                    c.issue(
                        "upstream_tls",
                        format!("set, but upstream ({u}) is http: TLS settings apply to https upstreams only; use https:// or remove upstream_tls"),
                    );
                    None
                }
                None if !upstream_given => {
                    c.issue(
                        "upstream_tls",
                        "set without `upstream`: it applies to the top-level upstream (routes have their own `tls`)",
                    );
                    None
                }
                _ => tls,
            }
        });
        let upstream_timeout = c.duration(
            "upstream_timeout",
            self.upstream_timeout,
            Duration::from_secs(30),
        );
        let connect_timeout = c.duration(
            "upstream_connect_timeout",
            self.upstream_connect_timeout,
            Duration::from_secs(5),
        );
        let pass_host_header = c.boolean("pass_host_header", self.pass_host_header, true);
        // Generous: every client connection of a busy gateway may have a request upstream at
        // once, and a connection the pool cannot keep is closed and reopened on the next request.
        let max_idle_per_host = c.number(
            "upstream_max_idle_per_host",
            self.upstream_max_idle_per_host,
            1024,
            (0, 65_536),
        );
        let idle_timeout = c.duration_within(
            "upstream_idle_timeout",
            self.upstream_idle_timeout,
            Duration::from_secs(90),
            (Duration::from_millis(1), Duration::from_secs(3600)),
        );

        let mut allowlist = Vec::new();
        let allowlist_raw = self.redirect_allowlist.unwrap_or_default();
        for (i, entry) in allowlist_raw.iter().enumerate() {
            match HostPattern::parse(entry.trim()) {
                Ok(p) => allowlist.push(p),
                Err(e) => c.issue(&format!("redirect_allowlist[{i}]"), e),
            }
        }
        let trusted_proxies =
            trusted_proxies(&mut c, self.trusted_proxies, self.trust_forwarded_headers);

        let (dingtalk, facts) = self.dingtalk.validate(&mut c);
        let session = self.session.validate(&mut c, public_url.as_ref());
        let headers = self.headers.validate(&mut c);

        // The defaults are the accept loop's own (one source for both).
        let defaults = ServerLimits::default();
        let server = ServerConfig {
            header_read_timeout: c.duration(
                "server.header_read_timeout",
                self.server.header_read_timeout,
                defaults.header_read_timeout,
            ),
            max_header_bytes: c.number(
                "server.max_header_bytes",
                self.server.max_header_bytes,
                defaults.max_header_bytes,
                (8 * 1024, 1024 * 1024),
            ),
            shutdown_timeout: c.duration(
                "server.shutdown_timeout",
                self.server.shutdown_timeout,
                defaults.shutdown_timeout,
            ),
            shutdown_delay: c.delay(
                "server.shutdown_delay",
                self.server.shutdown_delay,
                Duration::from_secs(600),
            ),
            idle_timeout: c.duration_within(
                "server.idle_timeout",
                self.server.idle_timeout,
                defaults.idle_timeout,
                (Duration::from_secs(1), Duration::from_secs(24 * 3600)),
            ),
            max_connections: c.number(
                "server.max_connections",
                self.server.max_connections,
                defaults.max_connections,
                (1, 1_000_000),
            ),
            max_concurrent_streams: c.number(
                "server.max_concurrent_streams",
                self.server.max_concurrent_streams,
                usize::try_from(defaults.max_concurrent_streams).unwrap_or(100),
                (1, 1000),
            ) as u32,
            // nginx uses 511; a burst of new connections beyond the backlog waits for SYN
            // retransmits (a second or more). Linux caps it at net.core.somaxconn.
            listen_backlog: c.number(
                "server.listen_backlog",
                self.server.listen_backlog,
                1024,
                (1, 65_535),
            ) as u32,
            // `available_parallelism` follows the CPU affinity mask (taskset, cpusets) and cgroup
            // CPU quotas, so a container limited to 2 CPUs gets 2 workers.
            workers: match self.server.workers.as_deref().map(str::trim) {
                None | Some("auto") => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if (1..=1024).contains(&n) => n,
                    _ => {
                        c.issue(
                            "server.workers",
                            "must be `auto` or a whole number from 1 to 1024",
                        );
                        1
                    }
                },
            },
        };

        let rate_limit = RateLimitConfig {
            enabled: c.boolean("rate_limit.enabled", self.rate_limit.enabled, true),
            login: self.rate_limit.login.validate(
                &mut c,
                "rate_limit.login",
                RateBucket {
                    per_second: 5.0,
                    burst: 50,
                },
            ),
            code_exchange: self.rate_limit.code_exchange.validate(
                &mut c,
                "rate_limit.code_exchange",
                RateBucket {
                    per_second: 10.0,
                    burst: 10,
                },
            ),
        };

        let level = self.log.level.0.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            c.issue(
                "log.level",
                "not a log filter like `info` or `dinggate=debug,info`",
            );
        }
        let access = c.boolean("log.access", self.log.access, true);
        let repeat_interval = match self.log.repeat_interval.0 {
            None => DEFAULT_REPEAT_INTERVAL,
            raw => c.delay("log.repeat_interval", raw, Duration::from_secs(3600)),
        };
        let format = match self.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                c.issue("log.format", "must be `text` or `json`");
                LogFormat::Text
            }
        };

        let login_page = c.boolean("login_page", self.login_page, false);
        let app_name = self
            .ui
            .app_name
            .0
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "dinggate".to_owned());
        let logo_url = match self.ui.logo_url.0.filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(u) => c.asset_url("ui.logo_url", Some(u), ""),
        };
        let ui = UiConfig { app_name, logo_url };

        let assertion = PendingAssertion::read(&mut c, self.assertion);
        let assertion_key_set = assertion.is_some();
        let routes = validate_routes(
            self.routes,
            &RouteDefaults {
                upstream: upstream_url.as_ref(),
                upstream_invalid: upstream_given && upstream_url.is_none(),
                upstream_tls: upstream_tls.as_ref(),
                // Known even when another dingtalk key is wrong, so that no route check below
                // reports a follow-on of that (e.g. a missing secret).
                corp: facts.corp_id.as_deref(),
                gateway_prefix: &prefix,
                assertion_key: assertion_key_set,
            },
            &mut c.issues,
        );
        // A route for another host than public_url's logs in on public_url (where the callback
        // is registered) and must get the session back: the cookie has to cover both hosts, and
        // the return URL on the other host has to be allowed.
        if let (Some(public), Some(sess)) = (public_url.as_ref(), session.as_ref()) {
            let public_host = public.host_str().unwrap_or_default().to_ascii_lowercase();
            let policy = crate::login::redirect::RedirectPolicy::new(public, allowlist.clone());
            for (i, route) in routes.iter().enumerate() {
                let Some(host) = route.host.as_deref() else {
                    continue;
                };
                if host == public_host {
                    continue;
                }
                let covered = sess.cookie_domain.as_deref().is_some_and(|d| {
                    let d = d.trim_start_matches('.').to_ascii_lowercase();
                    host == d || host.ends_with(&format!(".{d}"))
                });
                // Served by the same listener, so reached on public_url's port.
                let port = public.port().map(|p| format!(":{p}")).unwrap_or_default();
                let allowed = policy
                    .validate(&format!("{}://{host}{port}/", public.scheme()))
                    .is_ok();
                if !covered || !allowed {
                    c.issue(
                        &format!("routes[{i}].host"),
                        format!("{host} is not public_url's host: logins happen on public_url, so set session.cookie_domain to a domain covering both and list {host} (or a parent) in redirect_allowlist"),
                    );
                }
            }
        }
        for (i, route) in routes.iter().enumerate() {
            if route.policy.needs_directory() && !facts.directory {
                c.issue(
                    &format!("routes[{i}]"),
                    "department and admin rules need dingtalk.directory: true (and dingtalk.corp_id)",
                );
            }
        }

        let admin = AdminConfig {
            listen: match self.admin.listen.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(raw) => listen_addr(&mut c, "admin.listen", raw),
            },
        };
        if let (Some(a), Some(l)) = (admin.listen, listen) {
            let overlaps = a.ip() == l.ip() || a.ip().is_unspecified() || l.ip().is_unspecified();
            if a.port() == l.port() && overlaps {
                c.issue(
                    "admin.listen",
                    "must not be the public listener's address (listen): metrics and readiness are for the operator only",
                );
            }
        }
        let tls = server_tls(&mut c, self.tls, listen, public_url.as_ref());
        let readiness = ReadinessConfig {
            check_dingtalk: c.boolean(
                "readiness.check_dingtalk",
                self.readiness.check_dingtalk,
                false,
            ),
        };

        let watch_interval = c.delay(
            "reload.watch_interval",
            self.reload.watch_interval,
            Duration::from_secs(3600),
        );
        if !watch_interval.is_zero() && watch_interval < Duration::from_secs(1) {
            c.issue(
                "reload.watch_interval",
                "must be 0s (off) or at least 1s: each look reads and validates every file",
            );
        }

        let assertion = assertion.and_then(|a| a.finish(&mut c, &headers));
        let store_timeout = c.duration_within(
            "store.timeout",
            self.store.timeout,
            Duration::from_secs(1),
            (Duration::from_millis(50), Duration::from_secs(30)),
        );
        let store = match self.store.url.as_deref().map(str::trim) {
            None | Some("") | Some("memory") => None,
            Some(url) => match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some() => {
                    let ca_file = self
                        .store
                        .ca_file
                        .as_deref()
                        .map(str::trim)
                        .filter(|f| !f.is_empty());
                    let ca_pem = match ca_file {
                        None => None,
                        Some(_) if u.scheme() != "rediss" => {
                            c.issue(
                                "store.ca_file",
                                "only with a rediss:// store.url (TLS); a redis:// connection is not encrypted",
                            );
                            None
                        }
                        Some(f) => match crate::proxy::tls::ca_bundle(Path::new(f)).and_then(|_| {
                            std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"))
                        }) {
                            Ok(pem) => Some(pem),
                            Err(e) => {
                                c.issue("store.ca_file", e);
                                None
                            }
                        },
                    };
                    match redis::Client::open(url) {
                        Ok(_) => Some(StoreConfig {
                            url: Secret::new(url.to_owned()),
                            timeout: store_timeout,
                            ca_file: ca_file.map(PathBuf::from),
                            ca_pem,
                        }),
                        Err(e) => {
                            c.issue(
                                "store.url",
                                format!("not a usable Redis URL ({:?})", e.kind()),
                            );
                            None
                        }
                    }
                }
                // Never echo the URL: it may hold a password.
                _ => {
                    c.issue(
                        "store.url",
                        "must be `memory` or a redis://host:port/db or rediss://host:port/db URL",
                    );
                    None
                }
            },
        };

        match (listen, public_url, dingtalk, session) {
            (Some(listen), Some(public_url), Some(dingtalk), Some(session))
                if c.issues.is_empty() =>
            {
                Ok(Config {
                    listen,
                    public_url,
                    prefix,
                    upstream: UpstreamConfig {
                        url: upstream_url,
                        timeout: upstream_timeout,
                        connect_timeout,
                        pass_host_header,
                        max_idle_per_host,
                        idle_timeout,
                    },
                    routes: RouteTable::new(routes),
                    redirect_allowlist_raw: allowlist_raw,
                    redirect_allowlist: allowlist,
                    trusted_proxies,
                    dingtalk,
                    session,
                    headers,
                    server,
                    rate_limit,
                    log: LogConfig {
                        level,
                        format,
                        access,
                        repeat_interval,
                    },
                    tls,
                    admin,
                    readiness,
                    reload: ReloadConfig { watch_interval },
                    assertion,
                    store,
                    login_page,
                    ui,
                    warnings: c.warnings,
                })
            }
            _ => Err(c.issues),
        }
    }
}

/// `listen`: an address, or a host name resolved now (at load time). A name with several
/// addresses binds one of them: the first IPv4 address, else the first one, and a warning names
/// the others (write an address to choose).
fn listen_addr(c: &mut Check, key: &str, raw: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    const FORM: &str =
        "not an address like 127.0.0.1:4180, 0.0.0.0:4180, [::]:4180 or localhost:4180";
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        return Some(addr);
    }
    let name = match crate::host::parse_authority(raw) {
        Ok(crate::host::HostPort {
            host: crate::host::Host::Name(name),
            port: Some(port),
        }) => (name, port),
        _ => {
            c.issue(key, FORM);
            return None;
        }
    };
    let addrs: Vec<SocketAddr> = match (name.0.as_str(), name.1).to_socket_addrs() {
        Ok(addrs) => {
            let mut unique: Vec<SocketAddr> = Vec::new();
            for a in addrs {
                if !unique.contains(&a) {
                    unique.push(a);
                }
            }
            unique
        }
        Err(e) => {
            c.issue(key, format!("cannot resolve {}: {e}", name.0));
            return None;
        }
    };
    let Some(chosen) = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
    else {
        c.issue(key, format!("{} resolves to no address", name.0));
        return None;
    };
    if addrs.iter().any(|a| *a != chosen) {
        let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        c.warn(
            key,
            format!(
                "{} resolves to {}; listening on {chosen} only (write an address to choose)",
                name.0,
                all.join(", ")
            ),
        );
    }
    Some(chosen)
}

/// Whether `host` is this machine: `localhost`, `*.localhost`, 127.0.0.0/8 or `[::1]`.
fn is_loopback(host: &crate::host::Host) -> bool {
    match host {
        crate::host::Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
        crate::host::Host::Ipv4(a) => a.is_loopback(),
        crate::host::Host::Ipv6(a) => a.is_loopback(),
    }
}

/// What the rest of the validation needs from `dingtalk`, known even when another of its keys
/// is wrong.
struct DingTalkFacts {
    corp_id: Option<String>,
    directory: bool,
}

impl RawDingTalk {
    fn validate(self, c: &mut Check) -> (Option<DingTalkConfig>, DingTalkFacts) {
        let client_id = c.required("dingtalk.client_id", self.client_id);
        if let Some(id) = &client_id {
            c.id_placeholder(
                "dingtalk.client_id",
                id,
                "the app's Client ID (AppKey) from the developer console",
            );
        }
        let client_secret = c.secret(
            "dingtalk.client_secret",
            self.client_secret,
            self.client_secret_file,
        );
        if let Some(secret) = &client_secret {
            c.secret_placeholder("dingtalk.client_secret", secret);
        }
        let corp_id = self
            .corp_id
            .0
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let exclusive_corp_id = self
            .exclusive_corp_id
            .0
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(corp) = &exclusive_corp_id {
            if corp.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
                c.issue(
                    "dingtalk.exclusive_corp_id",
                    "must be one corpId (no spaces)",
                );
            }
        }
        if let Some(corp) = &corp_id {
            c.id_placeholder("dingtalk.corp_id", corp, "the organization's corpId");
        }
        let allow_any_corp = c.boolean("dingtalk.allow_any_corp", self.allow_any_corp, false);
        if corp_id.is_none() && !allow_any_corp {
            c.issue(
                "dingtalk.corp_id",
                "missing: set the organization's corpId, or set dingtalk.allow_any_corp: true to let any DingTalk account in",
            );
        }
        if corp_id.is_some() && allow_any_corp {
            c.issue(
                "dingtalk.allow_any_corp",
                "cannot be true when dingtalk.corp_id is set",
            );
        }
        let login_url = c.http_url(
            "dingtalk.login_url",
            self.login_url,
            Some("https://login.dingtalk.com"),
        );
        let api_url = c.http_url(
            "dingtalk.api_url",
            self.api_url,
            Some("https://api.dingtalk.com"),
        );
        let oapi_url = c.http_url(
            "dingtalk.oapi_url",
            self.oapi_url,
            Some("https://oapi.dingtalk.com"),
        );
        let timeout = c.duration("dingtalk.timeout", self.timeout, Duration::from_secs(10));
        let directory = c.boolean("dingtalk.directory", self.directory, corp_id.is_some());
        if directory && corp_id.is_none() {
            c.issue(
                "dingtalk.directory",
                "needs dingtalk.corp_id (the directory belongs to one organization)",
            );
        }
        let directory_cache_ttl = c.duration_or_zero(
            "dingtalk.directory_cache_ttl",
            self.directory_cache_ttl,
            Duration::from_secs(300),
        );
        // DingTalk's default per-app limit is 20 calls/s per API (dingtalk-api.md); an app
        // granted more can say so.
        let call_budget = c.number("dingtalk.call_budget", self.call_budget, 20, (0, 10_000));
        let inapp_login = c.boolean("dingtalk.inapp_login", self.inapp_login, true);
        let jsapi_url = c.asset_url(
            "dingtalk.jsapi_url",
            self.jsapi_url,
            // 3.2.9, the current npm release (2026-05): the first builds with
            // `dd.requestAuthCode` (V2, the code bound to our client id) are 3.0.31+, so the
            // 3.0.25 that most pages load never offers it; 3.2.9 is served on this CDN path too
            // (dingtalk-api.md §7.1). The page still falls back to V1 for older clients.
            "https://g.alicdn.com/dingding/dingtalk-jsapi/3.2.9/dingtalk.open.js",
        );
        let qr_script_url = c.asset_url(
            "dingtalk.qr_script_url",
            self.qr_script_url,
            "https://g.alicdn.com/dingding/h5-dingtalk-login/0.21.0/ddlogin.js",
        );
        let facts = DingTalkFacts {
            corp_id: corp_id.clone(),
            directory,
        };
        let config = (|| {
            Some(DingTalkConfig {
                client_id: client_id?,
                client_secret: Secret::new(client_secret?),
                corp_id,
                exclusive_corp_id,
                allow_any_corp,
                login_url: login_url?,
                api_url: api_url?,
                oapi_url: oapi_url?,
                timeout,
                directory,
                directory_cache_ttl,
                call_budget: u32::try_from(call_budget).unwrap_or(u32::MAX),
                inapp_login,
                jsapi_url: jsapi_url?,
                qr_script_url: qr_script_url?,
            })
        })();
        (config, facts)
    }
}

impl RawSession {
    fn validate(self, c: &mut Check, public_url: Option<&Url>) -> Option<SessionConfig> {
        let cookie_name = self.cookie_name.0.unwrap_or_else(|| "_dinggate".to_owned());
        let cookie_name = cookie_name.trim().to_owned();
        // RFC 6265 cookie-name is an RFC 7230 token; we are stricter to keep names predictable.
        if cookie_name.is_empty()
            || cookie_name.len() > 64
            || !cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            c.issue(
                "session.cookie_name",
                "must be 1-64 characters of letters, digits, `_`, `-` or `.`",
            );
        }
        let cookie_domain = self
            .cookie_domain
            .0
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(d) = &cookie_domain {
            // The one host parser decides; a cookie's Domain must be a name (browsers refuse an
            // address there), written without a trailing dot.
            let bare = d.strip_prefix('.').unwrap_or(d);
            let name = match crate::host::parse_host(bare) {
                Ok(crate::host::Host::Name(n)) if !bare.ends_with('.') => Some(n),
                _ => None,
            };
            if let Some(bare) = name {
                if let Some(host) = public_url.and_then(Url::host_str) {
                    let host = host.to_ascii_lowercase();
                    if host != bare && !host.ends_with(&format!(".{bare}")) {
                        c.issue(
                            "session.cookie_domain",
                            format!(
                            "browsers will reject it: public_url host {host} is not inside {bare}"
                        ),
                        );
                    }
                }
            } else {
                c.issue("session.cookie_domain", "not a domain name");
            }
        }
        let lifetime = c.duration(
            "session.lifetime",
            self.lifetime,
            Duration::from_secs(8 * 3600),
        );
        let key = c.secret(
            "session.signing_key",
            self.signing_key,
            self.signing_key_file,
        );
        if let Some(k) = &key {
            c.secret_placeholder("session.signing_key", k);
        }
        let key = key.and_then(|k| {
            if k.len() < MIN_KEY_BYTES {
                c.issue(
                    "session.signing_key",
                    format!("too short: {} bytes, need at least {MIN_KEY_BYTES} (try `openssl rand -base64 48`)", k.len()),
                );
                None
            } else {
                Some(Secret::new(k.into_bytes()))
            }
        });
        let mut previous = Vec::new();
        for (i, k) in self
            .previous_signing_keys
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("session.previous_signing_keys[{i}]");
            c.secret_placeholder(&at, &k);
            if k.len() < MIN_KEY_BYTES {
                c.issue(
                    &at,
                    format!("too short: need at least {MIN_KEY_BYTES} bytes"),
                );
            } else {
                previous.push(Secret::new(k.into_bytes()));
            }
        }
        let issuer = self
            .issuer
            .0
            .filter(|s| !s.trim().is_empty())
            .or_else(|| public_url.map(|u| u.as_str().trim_end_matches('/').to_owned()))
            .unwrap_or_default();
        let audience = self
            .audience
            .0
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "dinggate".to_owned());
        let max_login_flows = c.number("session.max_login_flows", self.max_login_flows, 4, (1, 10));
        let login_timeout = c.duration(
            "session.login_timeout",
            self.login_timeout,
            Duration::from_secs(600),
        );
        let revalidate_after = c.duration(
            "session.revalidate_after",
            self.revalidate_after,
            Duration::from_secs(15 * 60),
        );
        let revalidate_grace = c.duration_or_zero(
            "session.revalidate_grace",
            self.revalidate_grace,
            Duration::ZERO,
        );
        let max_lifetime = c.duration(
            "session.max_lifetime",
            self.max_lifetime,
            Duration::from_secs(7 * 24 * 3600),
        );
        let max_revocations = c.number(
            "session.max_revocations",
            self.max_revocations,
            100_000,
            (1, 10_000_000),
        );
        let cache_entries = c.number(
            "session.cache_entries",
            self.cache_entries,
            10_000,
            (0, 10_000_000),
        );
        if max_lifetime < lifetime {
            c.issue(
                "session.max_lifetime",
                "must not be shorter than session.lifetime",
            );
        }
        let cookie_secure = public_url.is_none_or(|u| u.scheme() == "https");
        // RFC 6265bis cookie prefixes: browsers drop a `__Host-` cookie that is not Secure, has a
        // Domain or a Path other than `/`, and a `__Secure-` cookie that is not Secure.
        if cookie_name.starts_with("__Host-") && (!cookie_secure || cookie_domain.is_some()) {
            c.issue(
                "session.cookie_name",
                "a __Host- cookie needs an https public_url and no session.cookie_domain",
            );
        }
        if cookie_name.starts_with("__Secure-") && !cookie_secure {
            c.issue(
                "session.cookie_name",
                "a __Secure- cookie needs an https public_url",
            );
        }
        Some(SessionConfig {
            cookie_name,
            cookie_domain,
            cookie_secure,
            lifetime,
            signing_key: key?,
            previous_signing_keys: previous,
            issuer,
            audience,
            max_login_flows,
            login_timeout,
            revalidate_after,
            revalidate_grace,
            max_lifetime,
            max_revocations,
            cache_entries,
        })
    }
}

impl RawHeaders {
    fn validate(self, c: &mut Check) -> IdentityHeaders {
        IdentityHeaders {
            user: c.header("headers.user", self.user, "X-Forwarded-User"),
            email: c.header("headers.email", self.email, "X-Forwarded-Email"),
            preferred_username: c.header(
                "headers.preferred_username",
                self.preferred_username,
                "X-Forwarded-Preferred-Username",
            ),
            union_id: c.header("headers.union_id", self.union_id, "X-DingTalk-UnionId"),
            name: c.header("headers.name", self.name, "X-DingTalk-Name"),
            corp_id: c.header("headers.corp_id", self.corp_id, "X-DingTalk-CorpId"),
            user_id: c.header("headers.user_id", self.user_id, "X-DingTalk-UserId"),
            departments: c.header(
                "headers.departments",
                self.departments,
                "X-DingTalk-Departments",
            ),
            title: c.header("headers.title", self.title, "X-DingTalk-Title"),
            strip_extra: self
                .strip_extra
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, raw)| match StripRule::parse(raw) {
                    Ok(rule) => Some(rule),
                    Err(e) => {
                        c.issue(
                            &format!("headers.strip_extra[{i}]"),
                            format!("{raw:?}: {e}"),
                        );
                        None
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
public_url: https://gate.example.com
upstream: http://127.0.0.1:8080
dingtalk:
  client_id: dingabc
  client_secret: s3cret
  corp_id: dingcorp
session:
  signing_key: "0123456789abcdef0123456789abcdef"
"#;

    fn issues(yaml: &str) -> Vec<String> {
        match Config::from_yaml_str(yaml) {
            Ok(_) => vec![],
            Err(e) => e.issues().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn upstream_tls_is_checked_against_the_upstream_and_its_files_all_at_once() {
        let without_upstream = MINIMAL.replace("upstream: http://127.0.0.1:8080\n", "");
        let got = issues(&format!(
            "{without_upstream}upstream_tls:\n  insecure_skip_verify: true\nroutes:\n  - upstream: https://10.0.0.1\n"
        ));
        assert!(
            got.iter()
                .any(|i| i.starts_with("upstream_tls: set without `upstream`")),
            "{got:#?}"
        );
        let got = issues(&format!(
            "{MINIMAL}upstream_tls:\n  ca_file: /nonexistent/ca.pem\n  server_name: app.internal\n"
        ));
        assert!(
            got.iter()
                .any(|i| i.starts_with("upstream_tls.ca_file: cannot read /nonexistent/ca.pem")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|i| i
                .starts_with("upstream_tls: set, but upstream (http://127.0.0.1:8080/) is http")),
            "{got:#?}"
        );
        let https = MINIMAL.replace("http://127.0.0.1:8080", "https://127.0.0.1:8443");
        let got = issues(&format!(
            "{https}upstream_tls:\n  insecure_skip_verify: true\nroutes:\n  - path_prefix: /a\n  - path_prefix: /b\n    upstream: http://10.0.0.2\n    tls:\n      server_name: b.internal\n  - path_prefix: /c\n    upstream: https://10.0.0.3\n    tls:\n      cert_file: /nonexistent/c.pem\n      key_file: /nonexistent/c.key\n"
        ));
        for want in [
            "routes[1].tls: set, but the upstream (http://10.0.0.2/) is http",
            "routes[2].tls.cert_file: cannot read /nonexistent/c.pem",
            "routes[2].tls.key_file: cannot read /nonexistent/c.key",
        ] {
            assert!(got.iter().any(|i| i.starts_with(want)), "{want}: {got:#?}");
        }
        assert_eq!(got.len(), 3, "{got:#?}");
    }

    #[test]
    fn routes_on_the_top_level_upstream_share_upstream_tls_and_one_origin_shares_a_pool() {
        let https = MINIMAL.replace("http://127.0.0.1:8080", "https://127.0.0.1:8443");
        let cfg = Config::from_yaml_str(&format!(
            "{https}upstream_tls:\n  insecure_skip_verify: true\nroutes:\n  - path_prefix: /a\n  - path_prefix: /b\n    upstream: https://10.0.0.2\n    tls:\n      insecure_skip_verify: true\n  - path_prefix: /c\n    upstream: http://10.0.0.3\n  - path_prefix: /d\n    upstream: https://127.0.0.1:8443/d/\n    tls:\n      insecure_skip_verify: true\n  - path_prefix: /e\n    upstream: https://127.0.0.1:8443\n    tls:\n      insecure_skip_verify: true\n      server_name: e.internal\n  - path_prefix: /f\n    upstream: http://10.0.0.3:80/f\n"
        ))
        .unwrap();
        let routes = cfg.routes.routes();
        assert!(
            routes[0]
                .tls
                .as_ref()
                .unwrap()
                .settings
                .insecure_skip_verify
        );
        assert!(routes[2].tls.is_none());
        let pools: Vec<usize> = routes.iter().map(|r| r.pool).collect();
        assert_eq!(
            pools,
            [0, 1, 2, 0, 3, 2],
            "same origin and TLS settings, same pool"
        );
        assert_eq!(cfg.routes.pools().len(), 4);
        assert_eq!(cfg.routes.pools()[3].path_prefix, "/e");
        assert_eq!(cfg.routes.insecure().count(), 4);
        assert!(cfg.routes.describe().contains("NOT verified"));
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:4180");
        assert_eq!(c.prefix, "/_dinggate");
        assert_eq!(c.session.cookie_name, "_dinggate");
        assert!(c.session.cookie_secure);
        assert_eq!(c.session.lifetime, Duration::from_secs(8 * 3600));
        assert_eq!(c.session.issuer, "https://gate.example.com");
        assert_eq!(c.dingtalk.login_url.as_str(), "https://login.dingtalk.com/");
        assert_eq!(
            c.callback_url(),
            "https://gate.example.com/_dinggate/callback"
        );
        assert_eq!(
            c.headers.user.as_ref().map(HeaderName::as_str),
            Some("x-forwarded-user")
        );
    }

    #[test]
    fn plain_http_public_url_turns_secure_off() {
        let c = Config::from_yaml_str(&MINIMAL.replace("https://gate", "http://gate")).unwrap();
        assert!(!c.session.cookie_secure);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let yaml = r#"
public_url: gate.example.com
upstream: ftp://x
upsteam: http://typo
dingtalk:
  client_secret: s
  corp_idd: x
session:
  signing_key: short
  lifetime: forever
log:
  format: xml
"#;
        let got = issues(yaml);
        for want in [
            "public_url: not an http(s) URL",
            "upstream: not an http(s) URL",
            "upsteam: unknown key",
            "dingtalk.client_id: missing",
            "dingtalk.corp_idd: unknown key",
            "dingtalk.corp_id: missing",
            "session.signing_key: too short: 5 bytes",
            "session.lifetime: not a duration",
            "log.format: must be",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "expected an issue starting with {want:?}, got {got:#?}"
            );
        }
    }

    #[test]
    fn secret_from_file_and_both_forms_conflict() {
        let dir = std::env::temp_dir().join(format!("dinggate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "abcdefghijklmnopqrstuvwxyz0123456789\n").unwrap();
        let yaml = MINIMAL.replace(
            "signing_key: \"0123456789abcdef0123456789abcdef\"",
            &format!("signing_key_file: {}", key.display()),
        );
        let c = Config::from_yaml_str(&yaml).expect("valid");
        assert_eq!(
            c.session.signing_key.expose().as_slice(),
            b"abcdefghijklmnopqrstuvwxyz0123456789"
        );

        let both = yaml.replace(
            "signing_key_file",
            "signing_key: \"0123456789abcdef0123456789abcdef\"\n  signing_key_file",
        );
        assert!(
            issues(&both).iter().any(|i| i.contains("not both")),
            "{:?}",
            issues(&both)
        );

        let missing = MINIMAL
            .replace("\"0123456789abcdef0123456789abcdef\"", "\"\"")
            .replace(
                "signing_key:",
                "signing_key_file: /nonexistent/dinggate-key\n  x_unused:",
            );
        let got = issues(&missing);
        assert!(
            got.iter()
                .any(|i| i.starts_with("session.signing_key_file: cannot read")),
            "{got:?}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_output() {
        let c = Config::from_yaml_str(MINIMAL).unwrap();
        let out = c.redacted_yaml();
        assert!(!out.contains("s3cret"));
        assert!(!out.contains("0123456789abcdef"));
        assert!(out.contains("<redacted>"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn cookie_prefixes_are_checked_and_state_cookies_stay_valid() {
        let host = MINIMAL.replace(
            "signing_key:",
            "cookie_name: __Host-dinggate\n  signing_key:",
        );
        let c = Config::from_yaml_str(&host).unwrap();
        assert_eq!(c.session.state_cookie_prefix(), "__Secure-dinggate_csrf_");
        assert_eq!(
            Config::from_yaml_str(MINIMAL)
                .unwrap()
                .session
                .state_cookie_prefix(),
            "_dinggate_csrf_"
        );
        let plain_http = host.replace("https://gate", "http://gate");
        assert!(issues(&plain_http)
            .iter()
            .any(|i| i.starts_with("session.cookie_name: a __Host- cookie")));
        let with_domain =
            host.replace("signing_key:", "cookie_domain: example.com\n  signing_key:");
        assert!(issues(&with_domain)
            .iter()
            .any(|i| i.starts_with("session.cookie_name: a __Host- cookie")));
    }

    #[test]
    fn corp_is_required_unless_explicitly_opened() {
        let open = MINIMAL.replace("corp_id: dingcorp", "allow_any_corp: true");
        let c = Config::from_yaml_str(&open).unwrap();
        assert!(c.dingtalk.corp_id.is_none());
        let neither = MINIMAL.replace("corp_id: dingcorp", "timeout: 5s");
        assert!(issues(&neither)
            .iter()
            .any(|i| i.starts_with("dingtalk.corp_id: missing")));
    }

    #[test]
    fn public_url_host_must_pass_the_strict_host_parser() {
        for (url, ok) in [
            ("https://gate.example.com", true),
            ("http://127.0.0.1:4180", true),
            ("http://[::1]:4180", true),
            ("https://a!b.example.com", false),
            ("https://a$b.example.com", false),
        ] {
            let yaml = MINIMAL.replace("https://gate.example.com", url);
            let found = issues(&yaml)
                .iter()
                .any(|i| i.starts_with("public_url: its host is not acceptable"));
            assert_eq!(found, !ok, "{url}: {:?}", issues(&yaml));
        }
    }

    #[test]
    fn bad_header_name_and_cookie_domain() {
        let yaml = format!("{MINIMAL}headers:\n  user: \"Bad Header\"\n");
        assert!(issues(&yaml)
            .iter()
            .any(|i| i.starts_with("headers.user: not a valid")));
        let yaml = MINIMAL.replace("signing_key:", "cookie_domain: other.org\n  signing_key:");
        assert!(issues(&yaml)
            .iter()
            .any(|i| i.starts_with("session.cookie_domain: browsers will reject")));
        // The shared host parser decides what a domain is: no userinfo, addresses, numeric last
        // labels or trailing dots.
        for bad in [
            "gate.example.com@evil",
            "127.0.0.1",
            "example.123",
            "example.com.",
            ".",
        ] {
            let yaml = MINIMAL.replace(
                "signing_key:",
                &format!("cookie_domain: \"{bad}\"\n  signing_key:"),
            );
            assert!(
                issues(&yaml)
                    .iter()
                    .any(|i| i == "session.cookie_domain: not a domain name"),
                "{bad}: {:?}",
                issues(&yaml)
            );
        }
    }

    #[test]
    fn fast_path_settings_defaults_ranges_and_auto_workers() {
        let c = Config::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(c.session.cache_entries, 10_000);
        assert_eq!(c.server.listen_backlog, 1024);
        assert_eq!(c.upstream.max_idle_per_host, 1024);
        assert_eq!(c.upstream.idle_timeout, Duration::from_secs(90));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            c.server.workers, cpus,
            "auto = the CPUs this process may use"
        );

        let set = format!(
            "{MINIMAL}upstream_max_idle_per_host: 0\nupstream_idle_timeout: 2s\nserver:\n  workers: 3\n  listen_backlog: 511\n"
        )
        .replace("signing_key:", "cache_entries: 0\n  signing_key:");
        let c = Config::from_yaml_str(&set).unwrap();
        assert_eq!(
            (
                c.session.cache_entries,
                c.server.workers,
                c.server.listen_backlog,
                c.upstream.max_idle_per_host,
                c.upstream.idle_timeout.as_secs()
            ),
            (0, 3, 511, 0, 2)
        );
        let c = Config::from_yaml_str(&format!("{MINIMAL}server:\n  workers: auto\n")).unwrap();
        assert_eq!(c.server.workers, cpus);

        let bad = format!(
            "{MINIMAL}upstream_max_idle_per_host: lots\nupstream_idle_timeout: 2h\nserver:\n  workers: 0\n  listen_backlog: 0\n"
        )
        .replace("signing_key:", "cache_entries: -1\n  signing_key:");
        let found = issues(&bad);
        for want in [
            "session.cache_entries: must be a whole number from 0 to 10000000",
            "server.workers: must be `auto` or a whole number from 1 to 1024",
            "server.listen_backlog: must be a whole number from 1 to 65535",
            "upstream_max_idle_per_host: must be a whole number from 0 to 65536",
            "upstream_idle_timeout: must be from 1ms to 1h",
        ] {
            assert!(
                found.iter().any(|i| i.starts_with(want)),
                "{want}: {found:?}"
            );
        }
        for workers in ["1025", "many", "-2", "1.5"] {
            let found = issues(&format!("{MINIMAL}server:\n  workers: \"{workers}\"\n"));
            assert!(
                found.iter().any(|i| i.starts_with("server.workers:")),
                "{workers}: {found:?}"
            );
        }
    }

    #[test]
    fn max_revocations_default_and_range() {
        let c = Config::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(c.session.max_revocations, 100_000);
        for bad in ["0", "-1", "lots", "10000001"] {
            let yaml = MINIMAL.replace(
                "signing_key:",
                &format!("max_revocations: \"{bad}\"\n  signing_key:"),
            );
            assert!(
                issues(&yaml)
                    .iter()
                    .any(|i| i.starts_with("session.max_revocations: must be a whole number")),
                "{bad}: {:?}",
                issues(&yaml)
            );
        }
        let yaml = MINIMAL.replace("signing_key:", "max_revocations: 5\n  signing_key:");
        assert_eq!(
            Config::from_yaml_str(&yaml)
                .unwrap()
                .session
                .max_revocations,
            5
        );
    }

    #[test]
    fn strip_extra_is_validated_and_defaults_to_empty() {
        let c = Config::from_yaml_str(MINIMAL).unwrap();
        assert!(c.headers.strip_extra.is_empty());
        let yaml = format!("{MINIMAL}headers:\n  strip_extra: [\"X_Tenant\", \"X-Internal-*\"]\n");
        let c = Config::from_yaml_str(&yaml).unwrap();
        assert_eq!(
            c.headers.strip_extra,
            [
                StripRule::Exact("x-tenant".into()),
                StripRule::Prefix("x-internal-".into())
            ]
        );
        let yaml = format!(
            "{MINIMAL}headers:\n  strip_extra: [\"ok\", \"Bad Name\", \"*\", \"X-*-Y\", \"Host\"]\n"
        );
        let found = issues(&yaml);
        for (i, what) in [
            (1, "not a valid"),
            (2, "bare `*`"),
            (3, "only allowed as the last"),
            (4, "Host"),
        ] {
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(&format!("headers.strip_extra[{i}]:"))
                        && f.contains(what)),
                "{i} {what}: {found:?}"
            );
        }
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn yaml_type_error_names_the_key() {
        let err = Config::from_yaml_str(&format!("{MINIMAL}redirect_allowlist: 5\n")).unwrap_err();
        assert!(err.to_string().contains("redirect_allowlist"), "{err}");
    }

    #[test]
    fn limits_have_documented_defaults() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        // A later issue holds 10,000 idle keep-alive connections: the cap must allow that.
        assert!(c.server.max_connections >= 10_000);
        assert_eq!(c.server.max_connections, 16_384);
        assert_eq!(c.server.max_concurrent_streams, 100);
        assert!(c.rate_limit.enabled);
        assert_eq!(
            c.rate_limit.login,
            RateBucket {
                per_second: 5.0,
                burst: 50
            }
        );
        let ex = c.rate_limit.code_exchange;
        assert!(
            ex.per_second + f64::from(ex.burst) <= 20.0,
            "stays within DingTalk's 20 calls/s per API"
        );
    }

    #[test]
    fn limits_are_read_from_yaml() {
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}server:\n  idle_timeout: 5m\n  max_connections: 20000\n  max_concurrent_streams: 32\nrate_limit:\n  enabled: false\n  login:\n    per_second: 0.5\n    burst: 3\n  code_exchange:\n    per_second: 2\n    burst: 4\n"
        ))
        .expect("valid");
        assert_eq!(c.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.server.max_connections, 20_000);
        assert_eq!(c.server.max_concurrent_streams, 32);
        assert!(!c.rate_limit.enabled);
        assert_eq!(c.rate_limit.login.per_second, 0.5);
        assert_eq!(c.rate_limit.login.burst, 3);
        assert_eq!(c.rate_limit.code_exchange.per_second, 2.0);
        assert_eq!(c.rate_limit.code_exchange.burst, 4);
    }

    #[test]
    fn trusted_proxies_replace_the_boolean_which_still_works_with_a_warning() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert!(!c.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}trusted_proxies: [10.0.0.0/8, 192.0.2.7, \"fd00::/8\"]\n"
        ))
        .expect("valid");
        assert!(c.trusted_proxies.trusts("10.9.8.7".parse().unwrap()));
        assert!(c.trusted_proxies.trusts("192.0.2.7".parse().unwrap()));
        assert!(!c.trusted_proxies.trusts("192.0.2.8".parse().unwrap()));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(
            c.redacted_yaml().contains("- 10.0.0.0/8"),
            "{}",
            c.redacted_yaml()
        );

        let c = Config::from_yaml_str(&format!("{MINIMAL}trust_forwarded_headers: true\n"))
            .expect("valid");
        assert!(c.trusted_proxies.trusts_everyone());
        assert!(
            c.warnings
                .iter()
                .any(|w| w.key == "trust_forwarded_headers" && w.problem.contains("deprecated")),
            "{:?}",
            c.warnings
        );
        let c = Config::from_yaml_str(&format!("{MINIMAL}trusted_proxies: [0.0.0.0/0]\n"))
            .expect("valid");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.key == "trusted_proxies" && w.problem.contains("every address")),
            "{:?}",
            c.warnings
        );

        let got = issues(&format!(
            "{MINIMAL}trust_forwarded_headers: true\ntrusted_proxies: [10.0.0.0/8, 10.1.2.3/8, proxy.internal]\n"
        ));
        for key in [
            "trust_forwarded_headers: set together with trusted_proxies",
            "trusted_proxies[1]: 10.1.2.3/8 has bits set",
            "trusted_proxies[2]: \"proxy.internal\" is not an IP address",
        ] {
            assert!(got.iter().any(|i| i.starts_with(key)), "{key}: {got:#?}");
        }
    }

    #[test]
    fn admin_readiness_and_shutdown_delay() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert_eq!(c.admin.listen, None, "the admin listener is off by default");
        assert!(!c.readiness.check_dingtalk);
        assert_eq!(c.server.shutdown_delay, Duration::ZERO);
        assert_eq!(c.log.repeat_interval, Duration::from_secs(10));
        assert!(c.log.access);
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}log:\n  repeat_interval: 0s\n  access: false\n"
        ))
        .expect("valid");
        assert_eq!(c.log.repeat_interval, Duration::ZERO);
        assert!(!c.log.access);
        let got = issues(&format!(
            "{MINIMAL}log:\n  repeat_interval: 2h\n  access: sometimes\n"
        ));
        assert!(
            got.iter()
                .any(|i| i.starts_with("log.repeat_interval: must be at most 1h")),
            "{got:#?}"
        );
        assert!(got.iter().any(|i| i.starts_with("log.access")), "{got:#?}");
        assert_eq!(
            c.server.max_header_bytes,
            crate::server::ServerLimits::default().max_header_bytes,
            "one source for the default"
        );
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}admin:\n  listen: 127.0.0.1:9090\nreadiness:\n  check_dingtalk: true\nserver:\n  shutdown_delay: 5s\n"
        ))
        .expect("valid");
        assert_eq!(c.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(c.readiness.check_dingtalk);
        assert_eq!(c.server.shutdown_delay, Duration::from_secs(5));
        let got = issues(&format!(
            "{MINIMAL}listen: 0.0.0.0:4180\nadmin:\n  listen: 127.0.0.1:4180\n  lsiten: x\nreadiness:\n  check_dingtalk: sometimes\nserver:\n  shutdown_delay: 1h\n"
        ));
        for key in [
            "admin.listen: must not be the public listener's address",
            "admin.lsiten",
            "readiness.check_dingtalk",
            "server.shutdown_delay: must be at most 10m",
        ] {
            assert!(got.iter().any(|i| i.starts_with(key)), "{key}: {got:#?}");
        }
        let got = issues(&format!("{MINIMAL}admin:\n  listen: nowhere\n"));
        assert!(
            got.iter().any(|i| i.starts_with("admin.listen: ")),
            "{got:#?}"
        );
    }

    #[test]
    fn reload_watch_interval_is_off_by_default_and_checked() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert_eq!(c.reload.watch_interval, Duration::ZERO);
        let c = Config::from_yaml_str(&format!("{MINIMAL}reload:\n  watch_interval: 30s\n"))
            .expect("valid");
        assert_eq!(c.reload.watch_interval, Duration::from_secs(30));
        for (value, problem) in [
            (
                "500ms",
                "reload.watch_interval: must be 0s (off) or at least 1s",
            ),
            ("2h", "reload.watch_interval: must be at most 1h"),
            ("often", "reload.watch_interval: not a duration"),
        ] {
            let got = issues(&format!(
                "{MINIMAL}reload:\n  watch_interval: {value}\n  wacth: 1s\n"
            ));
            assert!(
                got.iter().any(|i| i.starts_with(problem)),
                "{value}: {got:#?}"
            );
            assert!(
                got.iter().any(|i| i.starts_with("reload.wacth")),
                "{got:#?}"
            );
        }
    }

    #[test]
    fn assertion_keys_header_and_lifetime_are_checked_all_at_once() {
        let dir =
            std::env::temp_dir().join(format!("dinggate-cfg-assertion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert!(c.assertion.is_none(), "off by default");
        assert!(c.routes.routes()[0].assertion.is_none());
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: {}\n",
            key.display()
        ))
        .expect("valid");
        let a = c.assertion.as_ref().unwrap();
        assert_eq!(a.header, "x-dingtalk-assertion");
        assert_eq!(a.lifetime, Duration::from_secs(300));
        assert_eq!(
            c.routes.routes()[0].assertion.as_deref(),
            Some("default"),
            "the implicit route signs when a key is set"
        );
        let got = issues(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: {}\n  publish_key_files: [{}/missing.pem]\n  header: X-Forwarded-User\n  lifetime: 2h\n  sign: x\n",
            key.display(),
            dir.display()
        ));
        for want in [
            "assertion.header: x-forwarded-user is already an identity header",
            "assertion.lifetime: must be from 30s to 1h",
            "assertion.sign",
        ] {
            assert!(got.iter().any(|i| i.starts_with(want)), "{want}: {got:#?}");
        }
        let got = issues(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: {}/missing.pem\n  publish_key_files: [{}/also-missing.pem]\n",
            dir.display(),
            dir.display()
        ));
        for want in [
            "assertion.signing_key_file: ",
            "assertion.publish_key_files[0]: ",
        ] {
            assert!(got.iter().any(|i| i.starts_with(want)), "{want}: {got:#?}");
        }
        // Off: the defaults may be written out (gateway.yaml does), wrong values are still
        // wrong, and published keys without a signing key are a mistake.
        Config::from_yaml_str(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: \"\"\n  header: X-DingTalk-Assertion\n  lifetime: 5m\n  publish_key_files: []\n"
        ))
        .expect("valid");
        let got = issues(&format!(
            "{MINIMAL}assertion:\n  lifetime: 1s\n  header: \"bad header\"\n  publish_key_files: [a.pem]\n"
        ));
        for want in [
            "assertion.lifetime: must be from 30s",
            "assertion.header: not a valid",
            "assertion.publish_key_files: set, but",
        ] {
            assert!(got.iter().any(|i| i.starts_with(want)), "{want}: {got:#?}");
        }
        // A new key in the same file is a different configuration to the reload watch.
        let before = Config::from_yaml_str(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: {}\n",
            key.display()
        ))
        .unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        let after = Config::from_yaml_str(&format!(
            "{MINIMAL}assertion:\n  signing_key_file: {}\n",
            key.display()
        ))
        .unwrap();
        assert_eq!(before.hash(), after.hash());
        assert_ne!(before.fingerprint(), after.fingerprint());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_store_ca_file_needs_tls_and_a_readable_certificate() {
        let got = issues(&format!(
            "{MINIMAL}store:\n  url: redis://redis.internal:6379/0\n  ca_file: /etc/ssl/certs/ca-certificates.crt\n"
        ));
        assert!(
            got.iter()
                .any(|i| i.starts_with("store.ca_file: only with a rediss://")),
            "{got:#?}"
        );
        let got = issues(&format!(
            "{MINIMAL}store:\n  url: rediss://redis.internal:6380/0\n  ca_file: /nonexistent/ca.pem\n"
        ));
        assert!(
            got.iter()
                .any(|i| i.starts_with("store.ca_file: cannot read /nonexistent/ca.pem")),
            "{got:#?}"
        );
    }

    #[test]
    fn the_store_is_memory_or_a_redis_url_and_its_password_is_never_shown() {
        let c = Config::from_yaml_str(MINIMAL).expect("valid");
        assert!(c.store.is_none(), "memory by default");
        let c = Config::from_yaml_str(&format!("{MINIMAL}store:\n  url: memory\n")).unwrap();
        assert!(c.store.is_none());
        let c = Config::from_yaml_str(&format!(
            "{MINIMAL}store:\n  url: rediss://gateway:s3cr3t-pw@redis.internal:6380/2\n  timeout: 250ms\n"
        ))
        .expect("valid");
        let store = c.store.as_ref().unwrap();
        assert_eq!(store.timeout, Duration::from_millis(250));
        let shown = c.redacted_yaml();
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(
            shown.contains("rediss://gateway:%3Credacted%3E@redis.internal:6380/2"),
            "{shown}"
        );
        for (url, want) in [
            (
                "http://redis.internal",
                "store.url: must be `memory` or a redis://",
            ),
            ("redis://", "store.url: must be `memory` or a redis://"),
            ("nonsense", "store.url: must be `memory` or a redis://"),
        ] {
            let got = issues(&format!(
                "{MINIMAL}store:\n  url: \"{url}\"\n  timeout: 1h\n  typo: 1\n"
            ));
            assert!(got.iter().any(|i| i.starts_with(want)), "{url}: {got:#?}");
            assert!(
                got.iter()
                    .any(|i| i.starts_with("store.timeout: must be from 50ms to 30s")),
                "{got:#?}"
            );
            assert!(got.iter().any(|i| i.starts_with("store.typo")), "{got:#?}");
        }
        let got = issues(&format!(
            "{MINIMAL}store:\n  url: \"redis://u:hunter2@[::1\"\n"
        ));
        assert!(got.iter().all(|i| !i.contains("hunter2")), "{got:#?}");
    }

    #[test]
    fn the_fingerprint_follows_secrets_the_hash_does_not() {
        let a = Config::from_yaml_str(MINIMAL).expect("valid");
        let b = Config::from_yaml_str(&MINIMAL.replace("0123456789abcdef", "fedcba9876543210"))
            .expect("valid");
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.hash(), b.hash(), "the hash leaves secrets out");
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn bad_limits_are_named_all_at_once() {
        let cases: &[(&str, &str)] = &[
            ("server:\n  idle_timeout: 0s\n", "server.idle_timeout"),
            ("server:\n  idle_timeout: -5s\n", "server.idle_timeout"),
            ("server:\n  idle_timeout: 500ms\n", "server.idle_timeout"),
            ("server:\n  idle_timeout: 400d\n", "server.idle_timeout"),
            ("server:\n  max_connections: 0\n", "server.max_connections"),
            ("server:\n  max_connections: -1\n", "server.max_connections"),
            (
                "server:\n  max_connections: 99999999999\n",
                "server.max_connections",
            ),
            (
                "server:\n  max_connections: lots\n",
                "server.max_connections",
            ),
            (
                "server:\n  max_concurrent_streams: 0\n",
                "server.max_concurrent_streams",
            ),
            (
                "server:\n  max_concurrent_streams: 5000\n",
                "server.max_concurrent_streams",
            ),
            ("rate_limit:\n  enabled: maybe\n", "rate_limit.enabled"),
            (
                "rate_limit:\n  login:\n    per_second: 0\n",
                "rate_limit.login.per_second",
            ),
            (
                "rate_limit:\n  login:\n    per_second: -3\n",
                "rate_limit.login.per_second",
            ),
            (
                "rate_limit:\n  login:\n    per_second: NaN\n",
                "rate_limit.login.per_second",
            ),
            (
                "rate_limit:\n  login:\n    per_second: 1e9\n",
                "rate_limit.login.per_second",
            ),
            (
                "rate_limit:\n  login:\n    burst: 0\n",
                "rate_limit.login.burst",
            ),
            (
                "rate_limit:\n  login:\n    burst: 1000000000\n",
                "rate_limit.login.burst",
            ),
            (
                "rate_limit:\n  code_exchange:\n    per_second: inf\n",
                "rate_limit.code_exchange.per_second",
            ),
            (
                "rate_limit:\n  code_exchange:\n    burst: -2\n",
                "rate_limit.code_exchange.burst",
            ),
            (
                "rate_limit:\n  login:\n    rate: 5\n",
                "rate_limit.login.rate",
            ),
            ("rate_limit:\n  per_ip: 5\n", "rate_limit.per_ip"),
        ];
        for (yaml, key) in cases {
            let found = issues(&format!("{MINIMAL}{yaml}"));
            assert!(
                found.iter().any(|i| i.starts_with(&format!("{key}: "))),
                "{yaml:?} should name {key}: {found:?}"
            );
        }
        let found = issues(&format!(
            "{MINIMAL}server:\n  idle_timeout: 0s\n  max_connections: 0\nrate_limit:\n  login:\n    burst: 0\n"
        ));
        assert_eq!(found.len(), 3, "all at once: {found:?}");
    }

    /// Runs `f` on `base` with the given `DINGGATE_*` variables set (figment's Jail serialises
    /// access to the process environment and restores it).
    #[allow(clippy::result_large_err)] // the closure type is figment::Jail's
    fn with_env(base: &str, vars: &[(&str, &str)], f: impl FnOnce(Figment)) {
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            f(Figment::new()
                .merge(Yaml::string(base))
                .merge(Env::prefixed(ENV_PREFIX).split("__")));
            Ok(())
        });
    }

    /// Recognisable, never part of any message; too short to be a key and not a file.
    const CANARY: &str = "Zq9CanaryXv";

    /// Every secret key of the configuration: (section, key).
    const SECRET_KEYS: &[(&str, &str)] = &[
        ("dingtalk", "client_secret"),
        ("dingtalk", "client_secret_file"),
        ("session", "signing_key"),
        ("session", "signing_key_file"),
        ("session", "previous_signing_keys"),
    ];

    /// MINIMAL with `section.key` set to `value` (a YAML fragment written after `key: `).
    fn with_secret(section: &str, key: &str, value: &str) -> String {
        let mut dingtalk = "  client_id: dingabc\n  corp_id: dingcorp\n".to_owned();
        let mut session = String::new();
        if !(section == "dingtalk" && key.starts_with("client_secret")) {
            dingtalk.push_str("  client_secret: s3cret\n");
        }
        if !(section == "session" && key.starts_with("signing_key")) {
            session.push_str("  signing_key: \"0123456789abcdef0123456789abcdef\"\n");
        }
        let line = format!("  {key}: {value}\n");
        match section {
            "dingtalk" => dingtalk.push_str(&line),
            _ => session.push_str(&line),
        }
        format!(
            "public_url: https://gate.example.com\nupstream: http://127.0.0.1:8080\ndingtalk:\n{dingtalk}session:\n{session}"
        )
    }

    /// Every wrong (or merely unacceptable) way of writing a secret inline.
    fn inline_forms() -> Vec<String> {
        let long = format!("{CANARY}-changeme-{}", "x".repeat(40));
        vec![
            format!("{CANARY}"),
            format!("\"{CANARY}\""),
            format!("\"{long}\""),
            format!("[{CANARY}]"),
            format!("[\"{CANARY}\", other]"),
            format!("[[{CANARY}]]"),
            format!("[{{a: {CANARY}}}]"),
            format!("{{a: {CANARY}}}"),
            format!("{{{CANARY}: 1}}"),
            format!("\"{CANARY},{long}\""),
            "12345678901234567890123456789012345678901234567890".to_owned(),
            // Broken YAML around the value.
            format!("\"{CANARY}"),
            format!("'{CANARY}"),
            format!("[{CANARY}"),
            format!("{{a: {CANARY}"),
            format!("{CANARY}: x"),
            format!("&a {CANARY}\n  other: *b"),
            format!("!!binary {CANARY}"),
            format!("!!int {CANARY}"),
            format!("!custom {CANARY}"),
        ]
    }

    fn assert_no_canary(what: &str, text: &str) {
        assert!(
            !text
                .to_ascii_lowercase()
                .contains(&CANARY.to_ascii_lowercase())
                && !text.contains("12345678901234567890"),
            "{what} echoes the secret:\n{text}"
        );
    }

    #[test]
    fn no_config_error_echoes_an_inline_secret() {
        for (section, key) in SECRET_KEYS {
            for form in inline_forms() {
                let yaml = with_secret(section, key, &form);
                let what = format!("{section}.{key}: {form}");
                match Config::from_yaml_str(&yaml) {
                    // A plain text client secret is valid; then nothing printable shows it.
                    Ok(c) => assert_no_canary(&what, &format!("{}{c:?}", c.redacted_yaml())),
                    Err(e) => {
                        assert_no_canary(&what, &e.to_string());
                        assert_no_canary(&what, &format!("{e:?}"));
                    }
                }
            }
        }
    }

    #[test]
    fn no_config_error_echoes_a_secret_from_the_environment() {
        let env_forms = [
            CANARY.to_owned(),
            format!("[{CANARY}]"),
            format!("[[{CANARY}]]"),
            format!("{{a={CANARY}}}"),
            format!("[{CANARY}"),
            format!("{{{CANARY}"),
            format!("\"{CANARY}"),
            format!("{CANARY},{CANARY}-changeme-{}", "x".repeat(40)),
            "12345678901234567890123456789012345678901234567890".to_owned(),
        ];
        for (section, key) in SECRET_KEYS {
            for form in &env_forms {
                let var = env_var_name(&[section, key]);
                let base =
                    with_secret(section, "unused_here", "1").replace("  unused_here: 1\n", "");
                with_env(&base, &[(&var, form)], |figment| {
                    let what = format!("{var}={form}");
                    match Config::from_figment(figment) {
                        Ok(c) => assert_no_canary(&what, &format!("{}{c:?}", c.redacted_yaml())),
                        Err(e) => {
                            assert_no_canary(&what, &e.to_string());
                            assert_no_canary(&what, &format!("{e:?}"));
                        }
                    }
                });
            }
        }
    }

    #[test]
    fn no_config_error_echoes_a_secret_read_from_a_file() {
        let dir = std::env::temp_dir().join(format!("dinggate-canary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, content) in [
            CANARY.to_owned(),
            format!("{CANARY}-changeme-{}", "x".repeat(40)),
            format!("{CANARY}\n"),
        ]
        .iter()
        .enumerate()
        {
            let path = dir.join(format!("secret{i}"));
            std::fs::write(&path, content).unwrap();
            for (section, key) in SECRET_KEYS.iter().filter(|(_, k)| k.ends_with("_file")) {
                let yaml = with_secret(section, key, &format!("\"{}\"", path.display()));
                let what = format!("{section}.{key} → {content:?}");
                match Config::from_yaml_str(&yaml) {
                    // A short client secret is not ours to judge; the signing key is too short.
                    Ok(c) => assert!(*key == "client_secret_file" && i != 1, "{what}: {c:?}"),
                    Err(e) => assert_no_canary(&what, &e.to_string()),
                }
            }
        }
        // A secret put where a path belongs is not printed as "cannot read <path>".
        for (section, key) in SECRET_KEYS.iter().filter(|(_, k)| k.ends_with("_file")) {
            let err = Config::from_yaml_str(&with_secret(section, key, CANARY)).unwrap_err();
            assert!(err.to_string().contains("cannot read the file"), "{err}");
            assert_no_canary(key, &err.to_string());
        }
    }

    #[test]
    fn type_errors_are_sentences_without_rust_names() {
        for (yaml, want) in [
            (
                format!("{MINIMAL}log:\n  level: [info]\n"),
                "log.level: expected a single value (text, a number or true/false), found a list",
            ),
            (
                format!("{MINIMAL}redirect_allowlist: {{a: b}}\n"),
                "redirect_allowlist: expected a list, or text of comma-separated entries, found a map",
            ),
            (
                format!("{MINIMAL}routes:\n  - allow: {{users: {{a: b}}}}\n"),
                "routes.0.allow.users: expected a value or a list of values",
            ),
        ] {
            let err = Config::from_yaml_str(&yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in:\n{err}");
            assert!(!err.contains("untagged") && !err.contains("Scalar"), "{err}");
        }
    }

    #[test]
    fn lists_accept_comma_separated_text() {
        let k1 = "a".repeat(32);
        let k2 = "b".repeat(40);
        let yaml = format!(
            "{MINIMAL}redirect_allowlist: \"app.example.com, .example.org\"\nheaders:\n  strip_extra: X-Tenant,X-Internal-*\n"
        )
        .replace(
            "session:\n",
            &format!("session:\n  previous_signing_keys: \"{k1},{k2}\"\n"),
        );
        let c = Config::from_yaml_str(&yaml).expect("valid");
        assert_eq!(
            c.redirect_allowlist_raw,
            ["app.example.com", ".example.org"]
        );
        assert_eq!(c.headers.strip_extra.len(), 2);
        let keys: Vec<&[u8]> = c
            .session
            .previous_signing_keys
            .iter()
            .map(|k| k.expose().as_slice())
            .collect();
        assert_eq!(keys, [k1.as_bytes(), k2.as_bytes()]);
        // From the environment, comma-separated and in flow syntax alike.
        for value in [format!("{k1},{k2}"), format!("[{k1}, {k2}]")] {
            with_env(
                MINIMAL,
                &[("DINGGATE_SESSION__PREVIOUS_SIGNING_KEYS", &value)],
                |figment| {
                    let c = Config::from_figment(figment).expect("valid");
                    assert_eq!(c.session.previous_signing_keys.len(), 2, "{value}");
                },
            );
        }
    }

    #[test]
    fn environment_problems_name_the_variable() {
        // A type error (found while reading) names the variable too, in words.
        with_env(MINIMAL, &[("DINGGATE_LOG", "[x]")], |figment| {
            let err = Config::from_figment(figment).unwrap_err().to_string();
            assert!(
                err.contains(
                    "DINGGATE_LOG: expected a section of keys, found a list (from the environment, key log)"
                ),
                "{err}"
            );
        });
        let vars = [
            ("DINGGATE_SESSION__LIFETIM", "12h"),
            ("DINGGATE_SESSION__LOGIN_TIMEOUT", "soon"),
        ];
        with_env(MINIMAL, &vars, |figment| {
            let err = Config::from_figment(figment).unwrap_err();
            let got: Vec<String> = err.issues().iter().map(ToString::to_string).collect();
            assert!(
                got.iter()
                    .any(|i| i.starts_with("DINGGATE_SESSION__LIFETIM: unknown key")
                        && i.contains("from the environment")),
                "{got:#?}"
            );
            assert!(
                got.iter().any(|i| i
                    .starts_with("DINGGATE_SESSION__LOGIN_TIMEOUT: not a duration")
                    && i.contains("from the environment")),
                "{got:#?}"
            );
        });
        // The same typo in the file is reported as the key.
        let got = issues(&MINIMAL.replace("session:\n", "session:\n  lifetim: 12h\n"));
        assert!(
            got.iter().any(
                |i| i.starts_with("session.lifetim: unknown key") && !i.contains("environment")
            ),
            "{got:#?}"
        );
    }

    #[test]
    fn a_wrong_dingtalk_key_or_upstream_has_no_follow_on_errors() {
        let directory_rule =
            "routes:\n  - path_prefix: /\n  - path_prefix: /admin\n    allow: {admins: true}\n";
        let missing_secret =
            format!("{MINIMAL}{directory_rule}").replace("  client_secret: s3cret\n", "");
        let got = issues(&missing_secret);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("dingtalk.client_secret: missing"),
            "{got:#?}"
        );
        // Without a directory the rule is still refused.
        let no_directory = format!("{MINIMAL}{directory_rule}")
            .replace("corp_id: dingcorp", "corp_id: dingcorp\n  directory: false");
        assert!(issues(&no_directory)
            .iter()
            .any(|i| i.starts_with("routes[1]: department and admin rules")));

        let routes = "routes:\n  - path_prefix: /\n  - path_prefix: /a\n  - path_prefix: /b\n";
        for yaml in [
            MINIMAL.replace("http://127.0.0.1:8080", "not-a-url"),
            format!(
                "{}{routes}",
                MINIMAL.replace("http://127.0.0.1:8080", "not-a-url")
            ),
        ] {
            let got = issues(&yaml);
            assert_eq!(got.len(), 1, "{got:#?}");
            assert!(
                got[0].starts_with("upstream: not an http(s) URL"),
                "{got:#?}"
            );
        }
        // Without any upstream, each route without one is still named.
        let none = format!(
            "{}{routes}",
            MINIMAL.replace("upstream: http://127.0.0.1:8080\n", "")
        );
        assert_eq!(issues(&none).len(), 3, "{:#?}", issues(&none));
    }

    #[test]
    fn placeholders_are_refused_and_real_ids_never_are() {
        for (from, to, key) in [
            (
                "client_id: dingabc",
                "client_id: your-app-key",
                "dingtalk.client_id",
            ),
            (
                "client_id: dingabc",
                "client_id: \"<client id>\"",
                "dingtalk.client_id",
            ),
            (
                "client_id: dingabc",
                "client_id: CHANGEME",
                "dingtalk.client_id",
            ),
            (
                "corp_id: dingcorp",
                "corp_id: your-corp-id",
                "dingtalk.corp_id",
            ),
            (
                "corp_id: dingcorp",
                "corp_id: ding-example",
                "dingtalk.corp_id",
            ),
            (
                "client_secret: s3cret",
                "client_secret: your_app_secret",
                "dingtalk.client_secret",
            ),
            (
                "signing_key: \"0123456789abcdef0123456789abcdef\"",
                "signing_key: change-me-to-a-random-key-of-32-bytes",
                "session.signing_key",
            ),
        ] {
            let got = issues(&MINIMAL.replace(from, to));
            assert!(
                got.iter()
                    .any(|i| i.starts_with(&format!("{key}: ")) && i.contains("placeholder")),
                "{to}: {got:#?}"
            );
        }
        // Not ASCII at byte 4: judged, not sliced through a character.
        assert_eq!(placeholder_mark("din中文-example", true), Some("example"));
        let secret = issues(&MINIMAL.replace("s3cret", "your_app_secret"));
        assert!(
            !secret.iter().any(|i| i.contains("your_app_secret")),
            "{secret:?}"
        );
        // Real ids are `ding` + letters and digits: never placeholders, whatever they spell.
        for id in [
            "dingexample0a1b2c",
            "dingYOURxCHANGEME",
            "ding8f3e1a7b2c9d0e45",
        ] {
            let yaml = MINIMAL
                .replace("client_id: dingabc", &format!("client_id: {id}"))
                .replace("corp_id: dingcorp", &format!("corp_id: {id}"));
            assert!(issues(&yaml).is_empty(), "{id}: {:?}", issues(&yaml));
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_of_the_dingtalk_form_are_never_placeholders(rest in "[a-zA-Z0-9]{1,40}") {
            let id = format!("ding{rest}");
            proptest::prop_assert_eq!(placeholder_mark(&id, true), None);
        }

        #[test]
        fn any_text_is_judged_without_panicking(value in "\\PC{0,12}", id: bool) {
            let _ = placeholder_mark(&value, id);
            let _ = without_quoted(&value);
        }
    }

    #[test]
    fn listen_accepts_addresses_and_host_names() {
        let with =
            |l: &str| MINIMAL.replace("public_url:", &format!("listen: \"{l}\"\npublic_url:"));
        for (l, want) in [
            ("0.0.0.0:4180", "0.0.0.0:4180"),
            ("[::1]:4180", "[::1]:4180"),
            ("127.0.0.1:9", "127.0.0.1:9"),
        ] {
            let c = Config::from_yaml_str(&with(l)).expect(l);
            assert_eq!(c.listen.to_string(), want);
        }
        let c = Config::from_yaml_str(&with("localhost:4180")).expect("localhost resolves");
        assert!(
            c.listen.ip().is_loopback() && c.listen.port() == 4180,
            "{}",
            c.listen
        );
        // Several addresses: IPv4 first, and a warning names them all.
        if c.warnings.iter().any(|w| w.key == "listen") {
            assert!(c.listen.is_ipv4());
        }
        for bad in [
            "localhost",
            "4180",
            "host name:1",
            "localhost:0",
            "a@b:1",
            "no-such-host.invalid:4180",
        ] {
            let got = issues(&with(bad));
            assert!(
                got.iter().any(|i| i.starts_with("listen: ")),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn plain_http_public_url_off_loopback_warns() {
        for (url, warns) in [
            ("https://gate.example.com", false),
            ("http://gate.example.com", true),
            ("http://10.0.0.5:4180", true),
            ("http://127.0.0.1:4180", false),
            ("http://localhost:4180", false),
            ("http://app.localhost:4180", false),
            ("http://[::1]:4180", false),
        ] {
            let c = Config::from_yaml_str(&MINIMAL.replace("https://gate.example.com", url))
                .expect(url);
            assert_eq!(
                c.warnings
                    .iter()
                    .any(|w| w.key == "public_url" && w.problem.contains("Secure")),
                warns,
                "{url}: {:?}",
                c.warnings
            );
        }
    }
}
