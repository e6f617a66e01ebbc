//! The per-request pipeline and the single place where errors become responses.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use cookie::Cookie;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use hyper::body::Incoming;
use serde_json::json;

use crate::authz::{Decision, DenyReason};
use crate::body::GatewayBody;
use crate::config::routes::{Resolution, Route};
use crate::dingtalk::DingTalkError;
use crate::host::{self, HostError, HostPort};
use crate::identity::Identity;
use crate::login::flow::{self, append_cookies, LoginError, LoginFailure};
use crate::login::sign_out::{self, CrossSite, SignOutError};
use crate::login::state::StateError;
use crate::metrics::{LoginOutcome, RouteKey, UpstreamFailure};
use crate::pages::{self, Lang, Page};
use crate::proxy::forward::{forward, Identified, Target, UpstreamError};
use crate::proxy::headers::wants_html;
use crate::proxy::names::{
    X_FORWARDED_HOST, X_FORWARDED_METHOD, X_FORWARDED_URI, X_LOGIN_URL, X_ORIGINAL_URI,
    X_REQUEST_ID,
};
use crate::proxy::path::{normalize_path, PathError};
use crate::proxy::pool::PoolError;
use crate::ratelimit::Throttled;
use crate::repeats::Kind;
use crate::session::cache::VerifiedSession;
use crate::session::cookie::clear_cookie;
use crate::session::lookup::{session_of, verify_cookies, LookupError, Session};
use crate::session::revocation::RevocationError;
use crate::sessions;
use crate::state::AppState;
use crate::telemetry::{ErrorChain, RequestId};
use crate::trusted::{client_ip, BadForwardedFor};
use tracing::Instrument;

/// Everything that can go wrong while serving a request, by boundary.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No valid session on a protected route.
    #[error("no valid session")]
    Unauthenticated,
    /// No valid session, for a request the forward-auth caller names (return there after login).
    #[error("no valid session")]
    UnauthenticatedAt {
        /// The original URL (relative path and query, or absolute on another host).
        url: String,
        /// Whether the original request was a browser navigation (redirect to the login rather
        /// than 401 JSON): the forward-auth subrequest's own method is not the original one.
        navigation: bool,
    },
    /// The host is missing on HTTP/1.1, duplicated, contradictory or not a valid
    /// `host [ ":" port ]` (see [`crate::host`]).
    #[error("unacceptable host: {what}")]
    BadHost {
        /// Which value, and what is wrong with it.
        what: &'static str,
        /// The parser's reason, when the value did not parse.
        #[source]
        cause: Option<HostError>,
    },
    /// The forward-auth request does not name the original request usably: its URI, host or
    /// method header is missing, repeated, contradictory or malformed.
    #[error("unusable forward-auth request: {0}")]
    BadForwarded(&'static str),
    /// The path cannot be normalized safely.
    #[error("unacceptable request path: {0}")]
    BadPath(#[source] PathError),
    /// No route matches the host and path.
    #[error("no route matches the request")]
    NoRoute,
    /// Signed in, but the route's policy does not admit this person.
    #[error("{name} is not allowed on route {route}: {reason}")]
    Forbidden {
        /// Display name of the signed-in person.
        name: String,
        /// The route that refused.
        route: String,
        /// Which rule refused (config syntax, for the log).
        reason: DenyReason,
        /// The refusal in plain words for the person (English, Chinese): [`Policy::explain_to`].
        ///
        /// [`Policy::explain_to`]: crate::authz::Policy::explain_to
        explained: Box<(String, String)>,
    },
    /// A path under the gateway prefix that does not exist.
    #[error("no such gateway endpoint")]
    NotFound,
    /// A gateway endpoint called with the wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The login flow failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The upstream failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A due session re-validation could not reach DingTalk (and the grace period is over).
    #[error("session re-validation failed")]
    Revalidation(#[source] Box<DingTalkError>),
    /// Whether the session was signed out could not be checked (fail closed).
    #[error("session revocations could not be checked")]
    Revocation(#[source] RevocationError),
    /// A state-changing POST without proof that it came from the gateway's own page.
    #[error(transparent)]
    CrossSite(#[from] CrossSite),
    /// The sign-out failed.
    #[error(transparent)]
    SignOut(#[from] SignOutError),
    /// This client address made too many login requests (`rate_limit.login`).
    #[error("login rate limit")]
    RateLimited(#[source] Throttled),
    /// A trusted proxy's `X-Forwarded-For` entry is not an address.
    #[error("unusable client address")]
    BadClientAddress(#[source] BadForwardedFor),
}

/// Facts about the request that shape its error response.
#[derive(Debug)]
pub struct RequestContext {
    /// The worker serving it (picks its upstream connection pool).
    pub worker: usize,
    /// Random id shown on error pages and in logs.
    pub request_id: RequestId,
    /// A browser navigation (HTML page) rather than an API call.
    pub wants_html: bool,
    /// The request's URI as received (a cheap clone: its bytes are shared with the request).
    pub uri: Uri,
    /// The language pages are shown in first.
    pub lang: Lang,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client behind a trusted proxy (`trusted_proxies`), when the peer is one and its
    /// `X-Forwarded-For` names one; `None` when the peer is the client (or it is unreadable).
    pub client: Option<IpAddr>,
    /// The `Host` header as received (a cheap clone), for the access line.
    pub host: Option<HeaderValue>,
}

impl RequestContext {
    /// Path and query to come back to after login (relative): the request target as received.
    /// Only a target without a path (authority-form) has none; `/` then only names where to
    /// return after a login — it never decides access (routing and policies use the
    /// normalized path, which such a request does not have) and is validated like any `rd`.
    pub fn return_to(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
}

/// Serves one request. Never fails: every error is a response.
pub async fn handle(
    app: Arc<AppState>,
    worker: usize,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let ctx = RequestContext {
        worker,
        request_id: request_id(&app, req.headers(), peer),
        wants_html: wants_html(req.headers(), req.method()),
        lang: pages::negotiate_lang(req.headers()),
        uri: req.uri().clone(),
        peer,
        client: app
            .config
            .trusted_proxies
            .trusts(peer.ip())
            .then(|| client_ip(req.headers(), peer, &app.config.trusted_proxies).ok())
            .flatten()
            .filter(|ip| *ip != peer.ip()),
        // Only the access line shows it: no header look-up when that line is not written.
        host: (app.config.log.access && tracing::enabled!(tracing::Level::INFO))
            .then(|| req.headers().get(http::header::HOST).cloned())
            .flatten(),
    };
    let mut access = Access::default();
    let in_flight = InFlight::start(&app, worker);
    let (result, cookies) = match dispatch(&app, req, peer, &ctx, &mut access).await {
        Ok(resp) => (Ok(resp), Vec::new()),
        Err(Failure { error, cookies }) => (Err(error), cookies),
    };
    let (mut resp, error) = match result {
        Ok(resp) => (resp, None),
        Err(error) => {
            let resp = error_response(&app, &error, &ctx);
            if first_of_its_kind(&app, &error, resp.status(), &access) {
                log_error(&error, resp.status(), &ctx);
            }
            (resp, Some(error))
        }
    };
    append_cookies(&mut resp, &cookies);
    resp.headers_mut()
        .insert(X_REQUEST_ID, ctx.request_id.header().clone());
    drop(in_flight);
    count(
        &app,
        &ctx,
        &method,
        resp.status(),
        started,
        &access,
        error.as_ref(),
    );
    if !app.config.log.access {
        return Ok(resp);
    }
    let bytes = http_body::Body::size_hint(resp.body()).exact();
    log_access(
        &method,
        // Only the path is logged: query strings carry OAuth codes and states.
        ctx.uri.path(),
        resp.status(),
        bytes,
        started,
        &ctx,
        &access,
        error.as_ref(),
    );
    Ok(resp)
}

/// The request's id: a trusted proxy's `X-Request-Id` (`trusted_proxies`) when it has one that
/// looks like an id, else a new random one. A client's own is never adopted: it could make its
/// requests look like someone else's in the logs.
fn request_id(app: &AppState, headers: &http::HeaderMap, peer: SocketAddr) -> RequestId {
    // The peer first: without trusted proxies there is no header look-up at all.
    app.config
        .trusted_proxies
        .trusts(peer.ip())
        .then(|| headers.get(X_REQUEST_ID).and_then(RequestId::adopt))
        .flatten()
        .unwrap_or_else(RequestId::random)
}

/// The span of a request's slow work (logins, re-validations): its log lines carry the
/// request's id. The proxy fast path opens none (its lines name the id themselves).
fn request_span(id: &RequestId) -> tracing::Span {
    tracing::info_span!("request", request_id = %id)
}

/// One request in `dinggate_requests_in_flight`, from its head until its response head.
struct InFlight<'a>(&'a AppState, usize);

impl<'a> InFlight<'a> {
    fn start(app: &'a AppState, worker: usize) -> Self {
        app.metrics.in_flight(worker, 1);
        InFlight(app, worker)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.metrics.in_flight(self.1, -1);
    }
}

/// Counts the request in the metrics: by route (or the gateway's own endpoints), method and
/// status class, and the refusing route of a policy denial.
fn count(
    app: &AppState,
    ctx: &RequestContext,
    method: &Method,
    status: StatusCode,
    started: Instant,
    access: &Access<'_>,
    error: Option<&GatewayError>,
) {
    let key = match (access.route, access.gateway) {
        (Some(route), _) => RouteKey::Route(route.index),
        (None, true) => RouteKey::Gateway,
        (None, false) => RouteKey::None,
    };
    app.route_metrics
        .request(ctx.worker, key, method, status, started.elapsed());
    if let Some(GatewayError::Forbidden { route, .. }) = error {
        app.metrics.denial(route);
    }
}

/// What the access line says about a request beyond its method, path and status, recorded while
/// the request is served. Values are moved in, never copied, so recording allocates nothing;
/// everything is formatted only if the line is written.
#[derive(Debug, Default)]
struct Access<'a> {
    /// Who the request belonged to, once a session was verified.
    user: Option<Arc<VerifiedSession>>,
    /// The route the request matched.
    route: Option<&'a Route>,
    /// The request was for one of the gateway's own endpoints (login, sign-out, health, …).
    gateway: bool,
    /// Whether the route let it through (a refusal is read from the error).
    decision: Option<Admitted>,
    /// Forward-auth: the original request, as the proxy in front named it.
    original: Option<Original>,
    /// How long the upstream took to its response head, when the request was forwarded.
    upstream: Option<std::time::Duration>,
}

/// How a route let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// Every guarding route's policy admitted the signed-in person.
    Allow,
    /// The path is public: no sign-in needed.
    Public,
}

/// The original request of a forward-auth check, for the access line.
#[derive(Debug)]
struct Original {
    /// `X-Forwarded-Method`, when the proxy sent it.
    method: Option<Method>,
    /// The host the route was chosen by (`X-Forwarded-Host`, else the subrequest's `Host`).
    host: Option<HostPort>,
    /// The canonical path the route and policy decided on (never the query).
    path: String,
}

/// Writes the access line: one `info` line per request. Fields without a value are left out
/// (no session: no `union_id`; not forward-auth: no `original_*`). When `info` is filtered out
/// nothing is formatted or allocated: tracing evaluates the field values only for an enabled line.
#[allow(clippy::too_many_arguments)]
fn log_access(
    method: &Method,
    path: &str,
    status: StatusCode,
    bytes: Option<u64>,
    started: Instant,
    ctx: &RequestContext,
    access: &Access<'_>,
    error: Option<&GatewayError>,
) {
    // `display` is in scope inside tracing's macros.
    let denied = match error {
        Some(GatewayError::Forbidden { route, reason, .. }) => Some((route.as_str(), reason)),
        _ => None,
    };
    let decision = match (denied, access.decision) {
        (Some(_), _) => Some("deny"),
        (None, Some(Admitted::Allow)) => Some("allow"),
        (None, Some(Admitted::Public)) => Some("public"),
        (None, None) => None,
    };
    let user = access.user.as_deref().map(|s| &s.identity);
    let original = access.original.as_ref();
    tracing::info!(
        %method,
        %path,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        upstream_ms = access.upstream.map(|d| d.as_millis() as u64),
        bytes,
        host = ctx.host.as_ref().and_then(|h| h.to_str().ok()).map(display),
        peer = %ctx.peer.ip(),
        client = ctx.client.map(display),
        request_id = %ctx.request_id,
        union_id = user.map(|u| display(&u.union_id)),
        user_id = user.and_then(Identity::user_id).map(display),
        route = access.route.map(|r| display(&r.name)),
        decision = decision.map(display),
        denied_by = denied.map(|(route, _)| display(route)),
        rule = denied.map(|(_, reason)| display(RuleText(reason))),
        original_method = original.and_then(|o| o.method.as_ref()).map(display),
        original_host = original.and_then(|o| o.host.as_ref()).map(display),
        original_path = original.map(|o| display(&o.path)),
        "request"
    );
}

/// The rule that refused, in configuration terms, for operators (the 403 page explains it in
/// sentences instead).
struct RuleText<'a>(&'a DenyReason);

impl std::fmt::Display for RuleText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            DenyReason::WrongCorp { required } => write!(f, "corp {required}"),
            DenyReason::Denied { rule } => f.write_str(rule),
            DenyReason::NotAllowed { needs } => write!(f, "none of {needs}"),
            DenyReason::NeedsDirectory => f.write_str("needs directory data (dingtalk.directory)"),
        }
    }
}

/// An error plus cookies that must be set on its response.
struct Failure {
    error: GatewayError,
    cookies: Vec<Cookie<'static>>,
}

impl<E: Into<GatewayError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            error: e.into(),
            cookies: Vec::new(),
        }
    }
}

impl From<LoginFailure> for Failure {
    fn from(f: LoginFailure) -> Self {
        Failure {
            error: GatewayError::Login(f.error),
            cookies: f.cookies,
        }
    }
}

async fn dispatch<'a>(
    app: &'a AppState,
    req: Request<Incoming>,
    peer: SocketAddr,
    ctx: &RequestContext,
    access: &mut Access<'a>,
) -> Result<Response<GatewayBody>, Failure> {
    // One canonical path for everything below: the reserved-prefix check, route matching,
    // the policy and the forwarded URI (so what is authorized is exactly what is forwarded).
    let path = normalize_path(req.uri().path()).map_err(GatewayError::BadPath)?;
    let prefix = app.config.prefix.as_str();
    let reserved = path
        .strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .map(str::to_owned);
    let Some(endpoint) = reserved else {
        return protected(app, req, peer, &path, ctx, access).await;
    };
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    access.gateway = true;
    if endpoint == "/auth" && get {
        return forward_auth(app, &req, ctx, access).await;
    }
    // Boxed: the login and sign-out futures (DingTalk calls inside) are several KB, and inline
    // they would size every request's future, the proxy path's included (6.2 KB before).
    // The request's span: DingTalk and directory log lines of a login are tied to its id.
    Box::pin(endpoint_request(app, req, peer, &endpoint, ctx, access))
        .instrument(request_span(&ctx.request_id))
        .await
}

/// The gateway's own endpoints under the prefix, except forward-auth.
async fn endpoint_request<'a>(
    app: &'a AppState,
    req: Request<Incoming>,
    peer: SocketAddr,
    endpoint: &str,
    ctx: &RequestContext,
    access: &mut Access<'a>,
) -> Result<Response<GatewayBody>, Failure> {
    if is_login_endpoint(endpoint) {
        // Before any state or DingTalk work: each start or callback may cost a DingTalk call.
        let ip = client_ip(req.headers(), peer, &app.config.trusted_proxies)
            .map_err(GatewayError::BadClientAddress)?;
        if let Err(throttled) = app.limits.check_client(ip) {
            if matches!(endpoint, "/callback" | "/inapp/callback") {
                app.metrics.login(LoginOutcome::RateLimited);
            }
            return Err(GatewayError::RateLimited(throttled).into());
        }
    }
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let query = req.uri().query();
    match endpoint {
        "/healthz" if get => Ok(pages::text(StatusCode::OK, "ok\n")),
        // The public twin of the admin listener's /readyz, without details and without the
        // DingTalk check: anyone can call it, and it must not make the gateway call DingTalk.
        "/readyz" if get => Ok(if app.readiness.is_draining() {
            pages::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        } else {
            pages::text(StatusCode::OK, "ok\n")
        }),
        "/jwks.json" if get => match &app.config.assertion {
            Some(assertion) => Ok(pages::jwks(assertion.keys.jwks())),
            None => Err(GatewayError::NotFound.into()),
        },
        "/start" if get => Ok(flow::start(app, query, req.headers())?),
        "/sign_in" if get => {
            // Only chooses which page to show: when the sessions cannot be checked, the plain
            // sign-in page is the safe one.
            let signed_in = verify_cookies(app, req.headers(), app.clock.now())
                .await
                .ok()
                .and_then(|v| v.best)
                .map(|s| s.identity.name.clone());
            Ok(flow::sign_in(
                app,
                query,
                req.headers(),
                signed_in.as_deref(),
                &ctx.request_id.to_string(),
            )?)
        }
        "/inapp" if get => Ok(flow::inapp_page(
            app,
            query,
            req.headers(),
            &ctx.request_id.to_string(),
        )?),
        "/callback" if get => Ok(login(
            app,
            flow::callback(app, query, req.headers(), client_address(ctx)).await,
        )?),
        "/inapp/callback" if req.method() == Method::POST => {
            same_origin(app, &req)?;
            let (parts, body) = req.into_parts();
            Ok(login(
                app,
                flow::inapp_callback(app, &parts.headers, client_address(ctx), body).await,
            )?)
        }
        "/sessions" if get || req.method() == Method::POST => {
            let mut clear = Vec::new();
            let Some(session) = session(app, req.headers(), ctx, &mut clear).await? else {
                return Err(Failure {
                    error: GatewayError::Unauthenticated,
                    cookies: clear,
                });
            };
            let claims = &session.current.claims;
            let mut resp = if get {
                sessions::page(
                    app,
                    claims,
                    req.headers(),
                    client_address(ctx),
                    ctx.wants_html,
                    ctx.lang,
                    &ctx.request_id.to_string(),
                )
                .await
            } else {
                same_origin(app, &req)?;
                let (parts, body) = req.into_parts();
                let form = sign_out::read_body(body).await?;
                sessions::end(
                    app,
                    claims,
                    &parts.headers,
                    client_address(ctx),
                    &form,
                    ctx.wants_html,
                )
                .await?
            };
            append_cookies(&mut resp, session.refreshed.as_slice());
            access.user = Some(session.current);
            Ok(resp)
        }
        "/sign_out" if get => Ok(sign_out::confirm_page(
            app,
            query,
            ctx.lang,
            &ctx.request_id.to_string(),
        )?),
        "/sign_out" if req.method() == Method::POST => {
            same_origin(app, &req)?;
            let query = query.map(str::to_owned);
            let (parts, body) = req.into_parts();
            let form = sign_out::read_form(app, query.as_deref(), body).await?;
            Ok(sign_out::sign_out(
                app,
                &form,
                &parts.headers,
                ctx.lang,
                &ctx.request_id.to_string(),
            )
            .await?)
        }
        "/userinfo" if get => {
            let mut clear = Vec::new();
            let Some(session) = session(app, req.headers(), ctx, &mut clear).await? else {
                return Err(Failure {
                    error: GatewayError::Unauthenticated,
                    cookies: clear,
                });
            };
            let mut resp = userinfo(session.identity());
            append_cookies(&mut resp, session.refreshed.as_slice());
            access.user = Some(session.current);
            Ok(resp)
        }
        "/healthz" | "/readyz" | "/start" | "/sign_in" | "/callback" | "/sign_out"
        | "/userinfo" | "/auth" | "/inapp" | "/inapp/callback" | "/jwks.json" | "/sessions" => {
            Err(GatewayError::MethodNotAllowed.into())
        }
        _ => Err(GatewayError::NotFound.into()),
    }
}

/// Refuses a state-changing POST that a browser did not send from the gateway's own origin
/// (public_url's, or this request's host).
fn same_origin<B>(app: &AppState, req: &Request<B>) -> Result<(), GatewayError> {
    let host = effective_host(req)?;
    let host = host.as_ref().map(|h| h.parsed.to_string());
    sign_out::check_same_origin(&app.config.public_url, host.as_deref(), req.headers())?;
    Ok(())
}

/// The endpoints that start or complete a login, limited per client address.
/// Counts a finished login (a callback) in `dinggate_logins_total`.
fn login(
    app: &AppState,
    result: Result<Response<GatewayBody>, LoginFailure>,
) -> Result<Response<GatewayBody>, LoginFailure> {
    app.metrics.login(match &result {
        Ok(_) => LoginOutcome::Success,
        Err(failure) => failure.error.outcome(),
    });
    result
}

/// The client's address: behind a trusted proxy the one it names, else the TCP peer's.
fn client_address(ctx: &RequestContext) -> std::net::IpAddr {
    ctx.client.unwrap_or(ctx.peer.ip())
}

fn is_login_endpoint(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "/start" | "/sign_in" | "/inapp" | "/callback" | "/inapp/callback"
    )
}

/// The request's host: the value as received (sent upstream unchanged) and its parsed form.
struct RequestHost {
    raw: HeaderValue,
    parsed: HostPort,
}

fn bad_host(what: &'static str) -> GatewayError {
    GatewayError::BadHost { what, cause: None }
}

/// The request's one host. The authority of an absolute-form target (HTTP/2 `:authority`) and
/// the `Host` header must agree when both are present (RFC 9112 §3.2: one `Host`, and an
/// absolute-form target's authority is authoritative): the same value is used to pick the route
/// and sent upstream, so a request can never be authorized for one host and served as another.
/// The value must be a strict `host [ ":" port ]` ([`host::parse_authority`]): no userinfo,
/// spaces, slashes, extra colons or empty port. An HTTP/1.1 request without any host is refused
/// (RFC 9112 §3.2); HTTP/1.0 may omit it and then only matches routes without a host.
fn effective_host<B>(req: &Request<B>) -> Result<Option<RequestHost>, GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad_host("more than one Host header"));
    }
    let host_header = match host_header {
        Some(h) => Some(
            h.to_str()
                .map_err(|_| bad_host("the Host header is not visible ASCII"))?,
        ),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    let chosen = match (authority, host_header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            return Err(bad_host(
                "the request target's authority and the Host header differ",
            ))
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) if req.version() == http::Version::HTTP_11 => {
            return Err(bad_host("an HTTP/1.1 request without a Host header"))
        }
        (None, None) => return Ok(None),
    };
    let parsed = host::parse_authority(chosen).map_err(|e| GatewayError::BadHost {
        what: "the request's host is not a valid host[:port]",
        cause: Some(e),
    })?;
    let raw = HeaderValue::from_str(chosen).map_err(|_| bad_host("unusable host"))?;
    Ok(Some(RequestHost { raw, parsed }))
}

/// From a trusted proxy (`trusted_proxies`), the `X-Forwarded-Host` is passed upstream as
/// the original host: it must then be one valid `host[:port]` naming the same host the route is
/// chosen by (ports may differ: proxies often drop them), or an upstream that picks the app by
/// `X-Forwarded-Host` would serve another host than the one authorized.
fn check_trusted_forwarded_host(
    headers: &HeaderMap,
    routed: Option<&HostPort>,
) -> Result<(), GatewayError> {
    let repeated = bad_host("more than one X-Forwarded-Host");
    let Some(value) = single(headers, X_FORWARDED_HOST, repeated)? else {
        return Ok(());
    };
    let text = value
        .to_str()
        .map_err(|_| bad_host("X-Forwarded-Host is not visible ASCII"))?;
    let forwarded = host::parse_authority(text).map_err(|e| GatewayError::BadHost {
        what: "X-Forwarded-Host is not a valid host[:port]",
        cause: Some(e),
    })?;
    if routed.map(|r| &r.host) != Some(&forwarded.host) {
        return Err(bad_host("X-Forwarded-Host names another host than Host"));
    }
    Ok(())
}

/// Everything outside the gateway prefix: route, public paths, session, policy, forward.
async fn protected<'a>(
    app: &'a AppState,
    req: Request<Incoming>,
    peer: SocketAddr,
    path: &str,
    ctx: &RequestContext,
    access: &mut Access<'a>,
) -> Result<Response<GatewayBody>, Failure> {
    let host = effective_host(&req)?;
    if app.config.trusted_proxies.trusts(peer.ip()) {
        check_trusted_forwarded_host(req.headers(), host.as_ref().map(|h| &h.parsed))?;
    }
    let host_name = host
        .as_ref()
        .filter(|_| app.config.routes.uses_hosts())
        .map(|h| h.parsed.host.canonical());
    let Some(resolution) = app.config.routes.resolve(host_name.as_deref(), path) else {
        return Err(GatewayError::NoRoute.into());
    };
    access.route = Some(resolution.route);
    // Routing and forwarding use the exact path; authorization holds under every reading of it.
    let target = Target {
        route: resolution.route,
        path,
        host: host.as_ref().map(|h| &h.raw),
    };
    if resolution.public {
        access.decision = Some(Admitted::Public);
        // Identity headers are still stripped inside `forward`; none are added.
        return Ok(forward_timed(app, ctx, access, req, peer, None, target).await?);
    }
    let mut clear = Vec::new();
    let Some(session) = session(app, req.headers(), ctx, &mut clear).await? else {
        // `public_url` always has a host (config validation), already in canonical form: the
        // `url` crate lower-cases names and writes addresses as `host::Host` does.
        let public_host = app.config.public_url.host_str().unwrap_or_default();
        let foreign = host
            .as_ref()
            .filter(|h| h.parsed.host.canonical() != public_host);
        if let Some(h) = foreign {
            if !(ctx.wants_html && wants_inapp(app, req.headers())) {
                // Logins complete on public_url (where the callback is registered); come back
                // to this host afterwards.
                let scheme = app.config.public_url.scheme();
                let back = format!("{scheme}://{}{}", h.parsed, ctx.return_to());
                return Err(Failure {
                    error: GatewayError::UnauthenticatedAt {
                        url: back,
                        navigation: ctx.wants_html,
                    },
                    cookies: clear,
                });
            }
        }
        if ctx.wants_html && wants_inapp(app, req.headers()) {
            // The page is served under the gateway prefix, where the login-state cookies are
            // visible, so the per-browser flow limit applies to it as well.
            let rd = app
                .redirects
                .validate(ctx.return_to())
                .unwrap_or_else(|_| "/".to_owned());
            let rd: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
            let mut resp = pages::redirect(&format!("{}/inapp?rd={rd}", app.config.prefix));
            append_cookies(&mut resp, &clear);
            return Ok(resp);
        }
        return Err(Failure {
            error: GatewayError::Unauthenticated,
            cookies: clear,
        });
    };
    let session = authorize(app, &resolution, session, access).await?;
    let assertion = assertion(app, target.route, &session.current);
    let identity = Identified {
        values: &session.current.headers,
        assertion: assertion.as_ref().map(|(name, value)| (*name, value)),
    };
    let forwarded = forward_timed(app, ctx, access, req, peer, Some(identity), target).await;
    access.user = Some(session.current);
    let mut resp = forwarded?;
    append_cookies(&mut resp, session.refreshed.as_slice());
    Ok(resp)
}

/// [`forward`], timed into `dinggate_upstream_duration_seconds` (to the response head) or
/// counted in `dinggate_upstream_errors_total` by cause.
async fn forward_timed(
    app: &AppState,
    ctx: &RequestContext,
    access: &mut Access<'_>,
    req: Request<Incoming>,
    peer: SocketAddr,
    identity: Option<Identified<'_>>,
    target: Target<'_>,
) -> Result<Response<GatewayBody>, UpstreamError> {
    let route = RouteKey::Route(target.route.index);
    let sent = Instant::now();
    let result = forward(
        &app.upstream,
        ctx.worker,
        req,
        peer,
        identity,
        ctx.request_id.header(),
        target,
    )
    .await;
    let cause = match &result {
        Ok(_) => {
            let took = sent.elapsed();
            app.route_metrics.upstream(ctx.worker, route, took);
            access.upstream = Some(took);
            return result;
        }
        Err(UpstreamError::Unreachable(PoolError::Connect(_))) => UpstreamFailure::Connect,
        Err(UpstreamError::Unreachable(PoolError::Request(_))) => UpstreamFailure::Protocol,
        Err(UpstreamError::Timeout(_)) => UpstreamFailure::Timeout,
        Err(UpstreamError::Tls(_)) => UpstreamFailure::Tls,
        // Not the upstream's failure: the request could not be turned into one.
        Err(UpstreamError::BadUri(_)) => return result,
    };
    app.route_metrics.upstream_error(route, cause);
    result
}

/// The one authorization decision of proxy and forward-auth mode: every route that the path
/// matches under any reading ([`Resolution::guards`]) must admit the session. A refusal names
/// the refusing route, says in plain words who may enter (department names from the directory,
/// where it knows them) and still carries a re-issued session cookie. A refused person is
/// recorded in `access` (the session is consumed); an admitted one is the caller's to record.
async fn authorize(
    app: &AppState,
    resolution: &Resolution<'_>,
    session: Session,
    access: &mut Access<'_>,
) -> Result<Session, Failure> {
    for route in resolution.guards() {
        if let Decision::Deny(reason) = route.policy.evaluate(session.identity()) {
            let named = match &reason {
                DenyReason::NotAllowed { .. } => route.policy.allow.departments.as_slice(),
                DenyReason::Denied { .. } => route.policy.deny.departments.as_slice(),
                DenyReason::WrongCorp { .. } | DenyReason::NeedsDirectory => &[],
            };
            let names = match &app.directory {
                // Boxed: only a refusal looks names up; the future would size every request's.
                Some(dir) if !named.is_empty() => {
                    Box::pin(dir.department_names(named, app.clock.now())).await
                }
                _ => Default::default(),
            };
            let explained = route
                .policy
                .explain_to(session.identity(), &reason, &|d| names.get(&d).cloned());
            let failure = Failure {
                error: GatewayError::Forbidden {
                    name: session.identity().name.clone(),
                    route: route.name.clone(),
                    reason,
                    explained: Box::new(explained),
                },
                cookies: session.refreshed.into_iter().collect(),
            };
            access.user = Some(session.current);
            return Err(failure);
        }
    }
    access.decision = Some(Admitted::Allow);
    Ok(session)
}

/// Whether an unauthenticated navigation should get the login-free page: inside the DingTalk
/// client (the same User-Agent test dingtalk-jsapi uses), with a corp to log into.
fn wants_inapp(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.dingtalk.inapp_login
        && app.config.dingtalk.corp_id.is_some()
        && headers.get(header::USER_AGENT).is_some_and(|v| {
            // Bytes, not text: a User-Agent with non-ASCII bytes (device names) still counts.
            v.as_bytes()
                .windows(b"dingtalk".len())
                .any(|w| w.eq_ignore_ascii_case(b"dingtalk"))
        })
}

/// The request's session, with lookup failures turned into gateway failures (an ended session
/// also clears its cookie).
async fn session(
    app: &AppState,
    headers: &HeaderMap,
    ctx: &RequestContext,
    clear: &mut Vec<Cookie<'static>>,
) -> Result<Option<Session>, Failure> {
    session_of(app, headers, clear, || request_span(&ctx.request_id))
        .await
        .map_err(|e| match e {
            LookupError::Revocation(e) => GatewayError::Revocation(e).into(),
            LookupError::Revalidation(e) => GatewayError::Revalidation(e).into(),
            LookupError::Ended(e) => Failure {
                error: GatewayError::Login(e),
                cookies: vec![clear_cookie(&app.cookies, &app.cookies.name)],
            },
        })
}

/// The caller's identity as JSON: everything the identity headers carry (unionId, name, email,
/// corp, and with directory data the enterprise userid, direct departments and title), plus
/// avatar and openId; `null` where unknown. Never a DingTalk token.
fn userinfo(id: &Identity) -> Response<GatewayBody> {
    let ent = id.enterprise.as_ref();
    pages::json(
        StatusCode::OK,
        &json!({
            "union_id": id.union_id,
            "name": id.name,
            "email": id.email,
            "avatar": id.avatar,
            "corp_id": id.corp_id,
            "open_id": id.open_id,
            "user_id": ent.map(|e| e.user_id.as_str()),
            "departments": ent.map(|e| e.departments.as_slice()),
            "title": ent.and_then(|e| e.title.as_deref()),
        }),
    )
}

/// The original request, as the proxy in front describes it to the forward-auth endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedRequest {
    /// Path and query as the application will see them, with every raw byte >= 0x80
    /// percent-encoded (`%XX`, upper-case hex, UTF-8 bytes as sent).
    pub uri: String,
    /// The canonical path of `uri` ([`normalize_path`]): what routes and policies decide on.
    pub path: String,
    /// `X-Forwarded-Host`, validated; `None` when the proxy sends none (nginx: the subrequest's
    /// own `Host` is the original one).
    pub host: Option<HostPort>,
    /// `X-Forwarded-Method`; `None` when the proxy sends none (nginx by default).
    pub method: Option<Method>,
}

/// Reads the original request from the forward-auth headers. Nothing is defaulted: the URI must
/// come in exactly one `X-Forwarded-Uri` or `X-Original-URI` (both may be sent if they are
/// byte-identical), without control characters, spaces or `#`; raw bytes >= 0x80 are
/// percent-encoded *before* normalization, so `/admin/é` is decided as `/admin/%C3%A9`, the path
/// the application receives. `X-Forwarded-Host` and `X-Forwarded-Method` are optional, but when
/// present must occur once and be a valid `host[:port]` / method token.
pub fn forwarded_request(headers: &HeaderMap) -> Result<ForwardedRequest, GatewayError> {
    let mut uris = headers
        .get_all(X_FORWARDED_URI)
        .iter()
        .chain(headers.get_all(X_ORIGINAL_URI).iter());
    let uri = uris.next().ok_or(GatewayError::BadForwarded(
        "no X-Forwarded-Uri or X-Original-URI header",
    ))?;
    if uris.any(|other| other.as_bytes() != uri.as_bytes())
        || headers.get_all(X_FORWARDED_URI).iter().nth(1).is_some()
        || headers.get_all(X_ORIGINAL_URI).iter().nth(1).is_some()
    {
        return Err(GatewayError::BadForwarded(
            "the original URI is given more than once",
        ));
    }
    let uri = encode_forwarded_uri(uri.as_bytes())?;
    let path_end = uri.find('?').unwrap_or(uri.len());
    let path = normalize_path(&uri[..path_end]).map_err(GatewayError::BadPath)?;

    let repeated_host = bad_host("more than one X-Forwarded-Host");
    let host = match single(headers, X_FORWARDED_HOST, repeated_host)? {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| bad_host("X-Forwarded-Host is not visible ASCII"))?;
            Some(
                host::parse_authority(text).map_err(|e| GatewayError::BadHost {
                    what: "X-Forwarded-Host is not a valid host[:port]",
                    cause: Some(e),
                })?,
            )
        }
    };
    let repeated_method = GatewayError::BadForwarded("more than one X-Forwarded-Method");
    let method = single(headers, X_FORWARDED_METHOD, repeated_method)?
        .map(|v| Method::from_bytes(v.as_bytes()))
        .transpose()
        .map_err(|_| GatewayError::BadForwarded("X-Forwarded-Method is not a method"))?;
    Ok(ForwardedRequest {
        uri,
        path,
        host,
        method,
    })
}

/// The one value of header `name`: `None` if absent, `Err(repeated)` if sent more than once.
fn single(
    headers: &HeaderMap,
    name: HeaderName,
    repeated: GatewayError,
) -> Result<Option<&HeaderValue>, GatewayError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(repeated);
    }
    Ok(first)
}

/// A forwarded request-target with raw bytes >= 0x80 percent-encoded; controls (< 0x20, 0x7F),
/// space and `#` refused (none can be in a request line an application would accept).
fn encode_forwarded_uri(raw: &[u8]) -> Result<String, GatewayError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        match b {
            0x00..=0x1F | 0x7F => {
                return Err(GatewayError::BadForwarded(
                    "control character in the original URI",
                ))
            }
            b' ' | b'#' => {
                return Err(GatewayError::BadForwarded("space or # in the original URI"))
            }
            0x80.. => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0F)]));
            }
            _ => out.push(char::from(b)),
        }
    }
    Ok(out)
}

/// `GET {prefix}/auth`: the forward-auth check for nginx `auth_request`, Traefik `forwardAuth`
/// and Caddy `forward_auth`. The proxy names the original request in `X-Forwarded-Uri`
/// (Traefik, Caddy) or `X-Original-URI` (nginx), optionally `X-Forwarded-Host` and
/// `X-Forwarded-Method` (see [`forwarded_request`]; anything unusable is a 400, never a
/// default); the same routes and policies as in proxy mode decide. 200 carries every configured
/// identity header — empty when unknown, so a proxy that copies them overwrites any client-sent
/// copy; 401 without a session (a browser navigation — by the original method — is sent to the
/// login with the original URL); 403 when the policy refuses.
///
/// A client calling this endpoint directly with forged headers only learns about its own access.
async fn forward_auth<'a>(
    app: &'a AppState,
    req: &Request<Incoming>,
    ctx: &RequestContext,
    access: &mut Access<'a>,
) -> Result<Response<GatewayBody>, Failure> {
    let ForwardedRequest {
        uri,
        path,
        host,
        method,
    } = forwarded_request(req.headers())?;
    let host = match host {
        Some(h) => Some(h),
        None => effective_host(req)?.map(|h| h.parsed),
    };
    let host_name = host.as_ref().map(|h| h.host.canonical());
    let resolution = app.config.routes.resolve(host_name.as_deref(), &path);
    drop(host_name);
    let original = access.original.insert(Original { method, host, path });
    let Some(resolution) = resolution else {
        return Err(GatewayError::NoRoute.into());
    };
    access.route = Some(resolution.route);
    let mut resp = pages::text(StatusCode::OK, "ok\n");
    if resolution.public {
        access.decision = Some(Admitted::Public);
        clear_identity(resp.headers_mut(), &app.config);
        return Ok(resp);
    }
    let mut clear = Vec::new();
    let Some(session) = session(app, req.headers(), ctx, &mut clear).await? else {
        // Without X-Forwarded-Method (nginx) the subrequest's own method stands in: it only
        // chooses between a login redirect and 401 JSON, both of which refuse.
        let method = original.method.as_ref().unwrap_or(req.method());
        return Err(Failure {
            error: GatewayError::UnauthenticatedAt {
                navigation: wants_html(req.headers(), method),
                url: uri,
            },
            cookies: clear,
        });
    };
    let session = authorize(app, &resolution, session, access).await?;
    clear_identity(resp.headers_mut(), &app.config);
    session.current.headers.apply(resp.headers_mut());
    if let Some((name, value)) = assertion(app, resolution.route, &session.current) {
        resp.headers_mut().insert(name.clone(), value);
    }
    append_cookies(&mut resp, session.refreshed.as_slice());
    access.user = Some(session.current);
    Ok(resp)
}

/// Sets every configured identity header (and the assertion header) to an empty value: proxies
/// that copy them from the forward-auth answer then overwrite whatever the client sent.
fn clear_identity(headers: &mut HeaderMap, config: &crate::config::Config) {
    let assertion = config.assertion.as_ref().map(|a| &a.header);
    for name in config.headers.names().chain(assertion) {
        headers.insert(name.clone(), HeaderValue::from_static(""));
    }
}

/// The signed identity assertion `route` sends upstream for `session` (header and value), when
/// assertions are on and the route has one: minted at most once per half lifetime per session
/// and route, never on every request.
fn assertion<'a>(
    app: &'a AppState,
    route: &Route,
    session: &VerifiedSession,
) -> Option<(&'a HeaderName, HeaderValue)> {
    let config = app.config.assertion.as_ref()?;
    let audience = route.assertion.as_deref()?;
    let now = app.clock.now();
    let value = session.assertion(route.index, now, || {
        let lifetime = i64::try_from(config.lifetime.as_secs()).unwrap_or(i64::MAX);
        config.keys.sign(
            &session.identity,
            &app.config.public_origin(),
            audience,
            now,
            lifetime,
            session.usable_until,
        )
    })?;
    Some((&config.header, value))
}

/// HTTP status for an error. Client faults are 4xx, DingTalk/upstream faults 502/504.
pub fn status_of(error: &GatewayError) -> StatusCode {
    match error {
        GatewayError::Unauthenticated | GatewayError::UnauthenticatedAt { .. } => {
            StatusCode::UNAUTHORIZED
        }
        GatewayError::NotFound | GatewayError::NoRoute => StatusCode::NOT_FOUND,
        GatewayError::BadPath(_)
        | GatewayError::BadHost { .. }
        | GatewayError::BadForwarded(_)
        | GatewayError::BadClientAddress(_) => StatusCode::BAD_REQUEST,
        GatewayError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
        GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        GatewayError::Login(e) => match e {
            LoginError::BadQuery(_)
            | LoginError::BadReturnUrl(_)
            | LoginError::BadCode(_)
            | LoginError::CodeRejected(_) => StatusCode::BAD_REQUEST,
            LoginError::State(_)
            | LoginError::Refused(_)
            | LoginError::NotInOrganization { .. }
            | LoginError::Inactive { .. }
            | LoginError::TooLarge(_) => StatusCode::FORBIDDEN,
            LoginError::SessionTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            LoginError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            LoginError::DingTalk(d) if d.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            LoginError::DingTalk(d) if d.is_throttled() => StatusCode::SERVICE_UNAVAILABLE,
            LoginError::DingTalk(_) => StatusCode::BAD_GATEWAY,
        },
        GatewayError::CrossSite(_) => StatusCode::FORBIDDEN,
        GatewayError::SignOut(e) => match e {
            SignOutError::BadForm(_) | SignOutError::BadReturnUrl(_) => StatusCode::BAD_REQUEST,
            SignOutError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            SignOutError::UnknownSession => StatusCode::NOT_FOUND,
        },
        GatewayError::Revocation(_) => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::Revalidation(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::Revalidation(e) if e.is_throttled() => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::Revalidation(_) => StatusCode::BAD_GATEWAY,
        GatewayError::Upstream(e) => match e {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Unreachable(_) | UpstreamError::Tls(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::BadUri(_) => StatusCode::BAD_REQUEST,
        },
    }
}

/// The one error → response mapping. Pages say what happened and what to do, never why in
/// internal detail (that goes to the log).
pub fn error_response(
    app: &AppState,
    error: &GatewayError,
    ctx: &RequestContext,
) -> Response<GatewayBody> {
    let mut resp = error_page(app, error, ctx);
    if let Some(t) = throttled(error) {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(t.retry_after.as_secs()),
        );
    } else if dingtalk_busy(error) {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(DINGTALK_BUSY_RETRY_AFTER_SECS),
        );
    }
    resp
}

/// What a browser is told to wait when DingTalk throttles the gateway: DingTalk's limits are
/// per second, so a few seconds later the same request usually goes through.
const DINGTALK_BUSY_RETRY_AFTER_SECS: u64 = 5;

/// DingTalk refused the gateway's calls for rate (beyond the retries) or blocked it.
fn dingtalk_busy(error: &GatewayError) -> bool {
    match error {
        GatewayError::Login(LoginError::DingTalk(d)) | GatewayError::Revalidation(d) => {
            d.is_throttled()
        }
        _ => false,
    }
}

/// The rate limit that refused a request, if one did.
fn throttled(error: &GatewayError) -> Option<&Throttled> {
    match error {
        GatewayError::RateLimited(t) | GatewayError::Login(LoginError::Busy(t)) => Some(t),
        _ => None,
    }
}

fn error_page(app: &AppState, error: &GatewayError, ctx: &RequestContext) -> Response<GatewayBody> {
    let status = status_of(error);
    let request_id = ctx.request_id.to_string();
    let start = format!("{}/start", app.config.prefix);
    let (start_here, navigation) = match error {
        GatewayError::UnauthenticatedAt { url, navigation } => (login_url(app, url), *navigation),
        _ => (login_url(app, ctx.return_to()), ctx.wants_html),
    };

    if let GatewayError::Unauthenticated | GatewayError::UnauthenticatedAt { .. } = error {
        if navigation {
            return pages::redirect(&start_here);
        }
        let mut resp = pages::json(
            status,
            &json!({
                "error": "unauthenticated",
                "message": "sign in with DingTalk first",
                "login_url": start_here,
                "request_id": ctx.request_id.to_string(),
            }),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Cookie realm=\"dinggate\""),
        );
        // For proxies that cannot read JSON (nginx `auth_request_set`): where to send the user.
        if let Ok(v) = HeaderValue::from_str(&start_here) {
            resp.headers_mut().insert(X_LOGIN_URL, v);
        }
        return resp;
    }

    if let GatewayError::Forbidden {
        name,
        route,
        reason,
        explained,
    } = error
    {
        if !ctx.wants_html {
            return pages::json(
                status,
                &json!({ "error": "forbidden", "route": route, "message": reason.explain().0, "request_id": ctx.request_id.to_string() }),
            );
        }
        let sign_out = format!("{}/sign_out", app.config.prefix);
        return pages::forbidden(&pages::Forbidden {
            lang: ctx.lang,
            app_name: &app.config.ui.app_name,
            user_name: name,
            reason_en: &explained.0,
            reason_zh: &explained.1,
            sign_out_url: &sign_out,
            request_id: &request_id,
        });
    }

    let (code, title, title_zh, message, message_zh) = describe(error);
    if !ctx.wants_html {
        return pages::json(
            status,
            &json!({ "error": code, "message": message, "request_id": ctx.request_id.to_string() }),
        );
    }
    let retry: &[(&str, &str)] = &[("Sign in again · 重新登录", start.as_str())];
    // The raw request target may be `//other.host/…`: a link to it would leave the site.
    let reload_to = app
        .redirects
        .validate(ctx.return_to())
        .unwrap_or_else(|_| "/".to_owned());
    let reload: &[(&str, &str)] = &[("Reload · 重新加载", reload_to.as_str())];
    let actions = match error {
        GatewayError::Login(_) => retry,
        GatewayError::Revalidation(_)
        | GatewayError::Upstream(_)
        | GatewayError::Revocation(_)
        | GatewayError::SignOut(SignOutError::Store(_)) => reload,
        GatewayError::NotFound
        | GatewayError::NoRoute
        | GatewayError::BadPath(_)
        | GatewayError::BadHost { .. }
        | GatewayError::BadForwarded(_)
        | GatewayError::BadClientAddress(_)
        | GatewayError::RateLimited(_)
        | GatewayError::Forbidden { .. }
        | GatewayError::MethodNotAllowed
        | GatewayError::Unauthenticated
        | GatewayError::UnauthenticatedAt { .. }
        | GatewayError::CrossSite(_)
        | GatewayError::SignOut(
            SignOutError::BadForm(_) | SignOutError::BadReturnUrl(_) | SignOutError::UnknownSession,
        ) => &[],
    };
    let personal;
    let (message, message_zh) = match error {
        // Somebody in several organizations picked another one on DingTalk's page.
        GatewayError::Login(LoginError::NotInOrganization {
            name,
            corp: Some(picked),
        }) if !name.is_empty()
            && app
                .config
                .dingtalk
                .corp_id
                .as_deref()
                .is_some_and(|expected| expected != picked) =>
        {
            let expected = app.config.dingtalk.corp_id.as_deref().unwrap_or_default();
            personal = (
                format!("You signed in as “{name}” through organization {picked}: that account is not a member of the organization {app_name} belongs to ({expected}). If you are a member of {expected} too, sign in again and choose that organization on DingTalk's page.", app_name = app.config.ui.app_name),
                format!("您以“{name}”通过组织 {picked} 登录：该账号不是 {app_name} 所属组织（{expected}）的成员。如果您也是 {expected} 的成员，请重新登录，并在钉钉页面上选择该组织。", app_name = app.config.ui.app_name),
            );
            (personal.0.as_str(), personal.1.as_str())
        }
        GatewayError::Login(LoginError::NotInOrganization { name, .. }) if !name.is_empty() => {
            personal = (
                format!("You signed in as “{name}”, but this account is not a member of the organization this application belongs to. Sign in with your company account."),
                format!("您以“{name}”登录，但该账号不属于此应用所在的组织。请使用公司账号登录。"),
            );
            (personal.0.as_str(), personal.1.as_str())
        }
        _ => (message, message_zh),
    };
    pages::html_lang(
        status,
        &Page {
            title,
            title_zh,
            message,
            message_zh,
            actions,
            request_id: &request_id,
            app_name: &app.config.ui.app_name,
        },
        ctx.lang,
    )
}

/// Where an unauthenticated browser is sent: `{prefix}/start?rd=` (or `{prefix}/sign_in?rd=`
/// with `login_page`). The return URL must pass the same validation `/start` applies; when the
/// full path and query do not (say, a query carrying `//`), the path alone is used, and failing
/// that `/`, so the user still gets through the login.
fn login_url(app: &AppState, return_to: &str) -> String {
    let endpoint = if app.config.login_page {
        "sign_in"
    } else {
        "start"
    };
    if return_to.starts_with("http://") || return_to.starts_with("https://") {
        // Another host: log in on public_url and come back there if it is allowed.
        let rd = app
            .redirects
            .validate(return_to)
            .unwrap_or_else(|_| "/".to_owned());
        let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        return format!(
            "{}{}/{endpoint}?rd={encoded}",
            app.config.public_origin(),
            app.config.prefix
        );
    }
    let path = return_to.split(['?', '#']).next().unwrap_or("/");
    let rd = [return_to, path]
        .into_iter()
        .find(|candidate| app.redirects.validate(candidate).is_ok())
        .unwrap_or("/");
    let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    format!("{}/{endpoint}?rd={encoded}", app.config.prefix)
}

/// Machine code, titles and messages (English, Chinese) for an error.
fn describe(
    error: &GatewayError,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
) {
    match error {
        GatewayError::Unauthenticated | GatewayError::UnauthenticatedAt { .. } => ("unauthenticated", "Sign-in required", "需要登录", "Sign in with DingTalk first.", "请先使用钉钉登录。"),
        GatewayError::BadPath(_) => ("bad_path", "Bad request", "请求无效", "The request path is not acceptable (encoded control characters, backslashes or ambiguous segments).", "请求路径不被接受（包含编码的控制字符、反斜杠或有歧义的路径段）。"),
        GatewayError::BadHost { .. } => ("bad_host", "Bad request", "请求无效", "The request's host name is missing, ambiguous or malformed.", "请求中的主机名缺失、有歧义或格式错误。"),
        GatewayError::BadForwarded(_) => ("bad_forwarded_request", "Bad request", "请求无效", "The proxy in front of this gateway did not describe the original request usably.", "网关前面的代理未能正确描述原始请求。"),
        GatewayError::BadClientAddress(_) => ("bad_client_address", "Bad request", "请求无效", "The proxy in front of this gateway did not say which address the request came from.", "网关前面的代理没有提供请求的来源地址。"),
        GatewayError::RateLimited(_) => ("rate_limited", "Too many sign-in attempts", "登录尝试过于频繁", "Too many sign-in attempts came from your network. Wait a moment, then try again.", "来自您所在网络的登录尝试过多，请稍候再试。"),
        GatewayError::NoRoute => ("not_found", "Not found", "未找到", "No application is configured for this address.", "此地址没有配置任何应用。"),
        GatewayError::Forbidden { .. } => ("forbidden", "Access denied", "无权访问", "You are signed in, but this application's access rules do not include you.", "您已登录，但此应用的访问规则不包括您。"),
        GatewayError::NotFound => ("not_found", "Not found", "未找到", "There is no such page on this gateway.", "网关上没有这个页面。"),
        GatewayError::MethodNotAllowed => ("method_not_allowed", "Method not allowed", "不支持的请求方法", "This gateway endpoint does not accept that method.", "此网关地址不接受该请求方法。"),
        GatewayError::Login(e) => match e {
            LoginError::BadQuery(_) => ("bad_request", "Bad request", "请求无效", "The login request was malformed. Start the sign-in again.", "登录请求格式错误，请重新登录。"),
            LoginError::BadReturnUrl(_) => ("bad_return_url", "Return address not allowed", "返回地址不被允许", "The page you were sent back to is not allowed by this gateway. Start from the application's own address.", "登录后的返回地址不被此网关允许，请从应用本身的地址开始访问。"),
            LoginError::State(StateError::Expired) => ("login_expired", "Sign-in took too long", "登录超时", "The sign-in attempt expired. Please sign in again.", "本次登录已过期，请重新登录。"),
            LoginError::State(_) => ("invalid_state", "Sign-in could not be verified", "无法验证登录请求", "This sign-in response does not belong to a sign-in started in this browser (it may have been used already, or cookies are blocked). Please sign in again.", "该登录回调不属于本浏览器发起的登录（可能已被使用或浏览器禁用了 Cookie），请重新登录。"),
            LoginError::Refused(_) => ("login_refused", "Sign-in was not completed", "登录未完成", "DingTalk reports that the sign-in was cancelled or not authorized.", "钉钉返回登录已取消或未授权。"),
            LoginError::BadCode(_) => ("bad_code", "Invalid sign-in response", "登录回调无效", "The response from DingTalk was incomplete. Please sign in again.", "钉钉返回的登录信息不完整，请重新登录。"),
            LoginError::CodeRejected(_) => ("code_rejected", "Sign-in expired", "登录凭证已失效", "DingTalk did not accept the sign-in code (it expires quickly and works once). Please sign in again.", "钉钉未接受此登录凭证（凭证很快过期且只能使用一次），请重新登录。"),
            LoginError::Inactive { .. } => ("account_inactive", "Account not active", "账号未激活", "This DingTalk account is not active in the organization. Ask your administrator to activate it.", "该钉钉账号在组织中未激活，请联系管理员。"),
            LoginError::NotInOrganization { .. } => ("not_in_organization", "Account not in this organization", "账号不属于此组织", "This DingTalk account is not a member of the organization.", "该钉钉账号不属于此组织。"),
            LoginError::TooLarge(_) => ("profile_too_large", "Your directory entry is too large", "您的通讯录信息过大", "Your DingTalk account has an id or a list of departments longer than this gateway can keep in a session, so it cannot sign you in. Tell the administrator of this gateway (quote the request id).", "您的钉钉账号 ID 或所在部门列表超出了本网关会话可保存的长度，因此无法登录。请联系网关管理员并提供请求编号。"),
            LoginError::SessionTooLarge { .. } => ("session_too_large", "Session cannot be stored", "无法保存会话", "Sign-in with DingTalk worked, but the session cookie would be larger than browsers keep. The administrator of this gateway should shorten session.cookie_domain, session.cookie_name, public_url or session.audience (quote the request id).", "钉钉登录成功，但会话 Cookie 超出浏览器允许的大小。请网关管理员缩短 session.cookie_domain、session.cookie_name、public_url 或 session.audience（请提供请求编号）。"),
            LoginError::Busy(_) => ("login_busy", "Too many sign-ins right now", "当前登录人数过多", "Many people are signing in at this moment. Wait a few seconds, then sign in again.", "此刻登录的人数过多，请稍等几秒后重新登录。"),
            LoginError::DingTalk(d) if d.is_timeout() => ("dingtalk_timeout", "DingTalk did not respond", "钉钉未响应", "DingTalk did not answer in time. Please try again in a moment; if it keeps happening, tell the administrator (quote the request id).", "钉钉未能及时响应，请稍后重试；如持续出现，请联系管理员并提供请求编号。"),
            LoginError::DingTalk(d) if d.is_throttled() => ("dingtalk_busy", "DingTalk is busy", "钉钉繁忙", "DingTalk is limiting how fast this gateway may call it. Wait a few seconds, then try again.", "钉钉正在限制本网关的调用频率，请稍等几秒后重试。"),
            LoginError::DingTalk(d) if d.is_unreachable() => ("dingtalk_unreachable", "DingTalk could not be reached", "无法连接钉钉", "The gateway could not connect to DingTalk (the network or DingTalk is down). Please try again in a moment; if it keeps happening, tell the administrator (quote the request id).", "网关无法连接到钉钉（网络或钉钉服务故障），请稍后重试；如持续出现，请联系管理员并提供请求编号。"),
            LoginError::DingTalk(_) => ("dingtalk_error", "Sign-in with DingTalk failed", "钉钉登录失败", "DingTalk answered, but refused the gateway's request. Please try again; if it keeps happening, tell the administrator (quote the request id) — the gateway log says what to fix.", "钉钉有响应，但拒绝了网关的请求，请重试；如持续出现，请联系管理员并提供请求编号，网关日志中有处理建议。"),
        },
        GatewayError::CrossSite(_) => ("cross_site", "Request refused", "请求被拒绝", "This request did not come from the gateway's own page. To sign out, open the sign-out page and use its button.", "此请求并非来自网关自身的页面。如需退出登录，请打开退出登录页面并点击按钮。"),
        GatewayError::SignOut(e) => match e {
            SignOutError::BadForm(_) => ("bad_request", "Bad request", "请求无效", "The sign-out request was malformed.", "退出登录请求格式错误。"),
            SignOutError::BadReturnUrl(_) => ("bad_return_url", "Return address not allowed", "返回地址不被允许", "The page you were sent back to is not allowed by this gateway.", "返回地址不被此网关允许。"),
            SignOutError::Store(_) => ("session_store_unavailable", "Sign-out could not be completed", "无法完成退出登录", "The gateway could not record the sign-out just now. Try again shortly.", "网关暂时无法记录退出登录，请稍后重试。"),
            SignOutError::UnknownSession => ("unknown_session", "No such session", "没有这个会话", "None of your active sessions has this id; it may have ended already. Reload the sessions page.", "您的有效会话中没有这个编号，它可能已经结束。请重新加载会话页面。"),
        },
        GatewayError::Revocation(_) => ("session_store_unavailable", "Your session could not be checked", "无法检查您的会话", "The gateway could not check your session just now. Try again shortly.", "网关暂时无法检查您的会话，请稍后重试。"),
        GatewayError::Revalidation(d) if d.is_timeout() => ("revalidation_failed", "Your access could not be confirmed", "无法确认您的访问权限", "The gateway re-checks your membership with DingTalk regularly, and DingTalk did not answer in time just now. Try again shortly.", "网关会定期向钉钉确认您的成员身份，但钉钉暂时未能及时响应，请稍后重试。"),
        GatewayError::Revalidation(d) if d.is_throttled() => ("dingtalk_busy", "DingTalk is busy", "钉钉繁忙", "The gateway re-checks your membership with DingTalk regularly, and DingTalk is limiting how fast it may call just now. Wait a few seconds, then try again.", "网关会定期向钉钉确认您的成员身份，但钉钉此刻正在限制调用频率，请稍等几秒后重试。"),
        GatewayError::Revalidation(d) if d.is_unreachable() => ("revalidation_failed", "Your access could not be confirmed", "无法确认您的访问权限", "The gateway re-checks your membership with DingTalk regularly, and could not connect to DingTalk just now. Try again shortly.", "网关会定期向钉钉确认您的成员身份，但暂时无法连接钉钉，请稍后重试。"),
        GatewayError::Revalidation(_) => ("revalidation_failed", "Your access could not be confirmed", "无法确认您的访问权限", "The gateway re-checks your membership with DingTalk regularly, and DingTalk answered with an error just now. Try again shortly; if it keeps happening, tell the administrator (quote the request id).", "网关会定期向钉钉确认您的成员身份，但钉钉刚才返回了错误，请稍后重试；如持续出现，请联系管理员并提供请求编号。"),
        GatewayError::Upstream(e) => match e {
            UpstreamError::Timeout(_) => ("upstream_timeout", "The application is too slow", "应用响应超时", "The application behind this gateway did not answer in time. Try again shortly.", "网关后面的应用未能及时响应，请稍后重试。"),
            UpstreamError::Unreachable(_) | UpstreamError::Tls(_) => ("upstream_unavailable", "The application is unavailable", "应用暂不可用", "The application behind this gateway cannot be reached right now. Try again shortly.", "目前无法连接网关后面的应用，请稍后重试。"),
            UpstreamError::BadUri(_) => ("bad_request", "Bad request", "请求无效", "The request address could not be forwarded.", "该请求地址无法转发。"),
        },
    }
}

/// Logs an error once, with its full cause chain. Levels follow who has to act: no session or a
/// rate-limited login is normal traffic (debug); any other client fault is info, without an
/// operator hint (a scanner must not flood the log with advice); faults of DingTalk, the upstream
/// or the gateway (5xx) are errors, with what the operator should check.
fn log_error(error: &GatewayError, status: StatusCode, ctx: &RequestContext) {
    let chain = ErrorChain(error);
    if status.is_server_error() {
        let hint = operator_hint(error);
        tracing::error!(
            request_id = %ctx.request_id,
            status = status.as_u16(),
            error = %chain,
            hint = hint.as_deref().map(tracing::field::display),
            "request failed"
        );
    } else if is_routine(error) {
        tracing::debug!(request_id = %ctx.request_id, status = status.as_u16(), error = %chain, "request refused");
    } else {
        tracing::info!(request_id = %ctx.request_id, status = status.as_u16(), error = %chain, "request refused");
    }
}

/// Whether a failure's line is written: refusals always; a server-side failure (an outage fails
/// every request the same way) only when it is the first of its kind, the rest being counted
/// into the summaries of [`crate::repeats`].
fn first_of_its_kind(
    app: &AppState,
    error: &GatewayError,
    status: StatusCode,
    access: &Access<'_>,
) -> bool {
    if !status.is_server_error() {
        return true;
    }
    let kind = Kind {
        route: match (access.route, access.gateway) {
            (Some(route), _) => route.name.clone(),
            (None, true) => crate::metrics::GATEWAY_ROUTE.to_owned(),
            (None, false) => crate::metrics::NO_ROUTE.to_owned(),
        },
        cause: failure_cause(error),
    };
    app.repeats.first(kind, std::time::Instant::now())
}

/// What failed, in a few words: with the route, what makes two failures "the same" for the
/// log's summaries (never a value from the request).
fn failure_cause(error: &GatewayError) -> String {
    let dingtalk = |d: &DingTalkError| {
        let (result, code) = crate::metrics::dingtalk_result(&Err(d));
        format!("DingTalk {} {result} {code}", d.api().name())
            .trim_end()
            .to_owned()
    };
    match error {
        GatewayError::Upstream(UpstreamError::Unreachable(PoolError::Connect(_))) => {
            "upstream connect".to_owned()
        }
        GatewayError::Upstream(UpstreamError::Unreachable(PoolError::Request(_))) => {
            "upstream request".to_owned()
        }
        GatewayError::Upstream(UpstreamError::Timeout(_)) => "upstream timeout".to_owned(),
        GatewayError::Upstream(UpstreamError::Tls(_)) => "upstream tls".to_owned(),
        GatewayError::Upstream(UpstreamError::BadUri(_)) => "upstream uri".to_owned(),
        GatewayError::Login(LoginError::DingTalk(d)) | GatewayError::Revalidation(d) => dingtalk(d),
        GatewayError::Login(LoginError::CodeRejected(d)) => dingtalk(d),
        other => {
            // The variant's name: `Login(SessionTooLarge { .. })` → `Login`.
            let debug = format!("{other:?}");
            debug
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or("gateway")
                .to_owned()
        }
    }
}

/// Refusals that are part of normal traffic: not worth an info line of their own (the access
/// line already records the status).
fn is_routine(error: &GatewayError) -> bool {
    matches!(
        error,
        GatewayError::Unauthenticated
            | GatewayError::UnauthenticatedAt { .. }
            | GatewayError::RateLimited(_)
            // The limiter itself warns, at most once a minute, when the global budget runs out.
            | GatewayError::Login(LoginError::Busy(_))
    )
}

/// What the operator should check, for faults that are the operator's to fix.
fn operator_hint(error: &GatewayError) -> Option<String> {
    match error {
        GatewayError::Login(LoginError::DingTalk(d)) | GatewayError::Revalidation(d) => {
            Some(d.operator_hint())
        }
        GatewayError::Login(LoginError::SessionTooLarge { .. }) => Some(
            "shorten session.cookie_domain, session.cookie_name, public_url (issuer) or session.audience".to_owned(),
        ),
        GatewayError::Upstream(UpstreamError::Unreachable(_)) => {
            Some("check that the upstream is running and reachable at `upstream`".to_owned())
        }
        GatewayError::Upstream(UpstreamError::Tls(f)) => {
            Some(match crate::proxy::tls::handshake_error(&f.source) {
                Some(tls) => crate::proxy::tls::hint(tls, &f.route, &f.name),
                None => format!(
                    "route `{}`: the TLS handshake with `{}` failed: check the route's tls settings",
                    f.route, f.name
                ),
            })
        }
        GatewayError::Upstream(UpstreamError::Timeout(_)) => {
            Some("the upstream is slow: check it, or raise `upstream_timeout`".to_owned())
        }
        GatewayError::Unauthenticated
        | GatewayError::UnauthenticatedAt { .. }
        | GatewayError::BadHost { .. }
        | GatewayError::BadForwarded(_)
        | GatewayError::BadPath(_)
        | GatewayError::NoRoute
        | GatewayError::Forbidden { .. }
        | GatewayError::NotFound
        | GatewayError::MethodNotAllowed
        | GatewayError::Login(_)
        | GatewayError::Upstream(UpstreamError::BadUri(_))
        | GatewayError::RateLimited(_)
        | GatewayError::BadClientAddress(_)
        | GatewayError::Revocation(_)
        | GatewayError::CrossSite(_)
        | GatewayError::SignOut(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::DingTalkError;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ctx() -> RequestContext {
        RequestContext {
            worker: 0,
            request_id: RequestId::from_u64(0x0123_4567_89ab_cdef),
            wants_html: false,
            uri: Uri::from_static("/"),
            lang: Lang::Zh,
            peer: "192.0.2.1:50000".parse().unwrap(),
            client: None,
            host: None,
        }
    }

    /// What `f` logs, at every level, through the subscriber `dinggate run` installs.
    fn captured(format: crate::config::LogFormat, f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = crate::telemetry::subscriber(
            format,
            tracing_subscriber::EnvFilter::new("trace"),
            false,
            move || writer.clone(),
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// What `log_error` writes for `error`, at every level, in the text format.
    fn logged(error: GatewayError) -> String {
        captured(crate::config::LogFormat::Text, || {
            log_error(&error, status_of(&error), &ctx());
        })
    }

    /// A route table with the routes `admin`, `/` and `app`, for access lines that name them.
    fn named_routes() -> crate::config::routes::RouteTable {
        crate::Config::from_yaml_str(
            "public_url: https://gate.example.com\nupstream: http://127.0.0.1:8080\ndingtalk: {client_id: dingabc, client_secret: s3cret, corp_id: dingcorp}\nsession: {signing_key: \"0123456789abcdef0123456789abcdef\"}\nroutes:\n  - {name: admin, path_prefix: /admin}\n  - {name: app, path_prefix: /app}\n  - {name: /, path_prefix: /}\n",
        )
        .expect("valid")
        .routes
    }

    fn route<'a>(table: &'a crate::config::routes::RouteTable, name: &str) -> &'a Route {
        table
            .routes()
            .iter()
            .find(|r| r.name == name)
            .expect("route")
    }

    /// The JSON access line for a request that ended with `error` (or succeeded).
    fn access_json(access: &Access<'_>, error: Option<GatewayError>) -> serde_json::Value {
        let status = error.as_ref().map_or(StatusCode::OK, status_of);
        let text = captured(crate::config::LogFormat::Json, || {
            log_access(
                &Method::GET,
                "/_dinggate/auth",
                status,
                // A body of known length, except on error answers (unknown here).
                error.is_none().then_some(42),
                Instant::now(),
                &ctx(),
                access,
                error.as_ref(),
            );
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (key, value) in line.as_object().unwrap() {
            assert!(
                value.as_str() != Some("") && !value.is_object() && !value.is_array(),
                "{key} in {text}"
            );
        }
        line
    }

    fn identity(union_id: &str, user_id: Option<&str>) -> Arc<VerifiedSession> {
        let claims = crate::session::jwt::SessionClaims {
            iss: "https://gw".into(),
            aud: "dinggate".into(),
            sub: union_id.into(),
            sid: "sid".into(),
            iat: 0,
            exp: 1,
            auth_time: 0,
            name: "张三".into(),
            avatar: None,
            email: None,
            corp_id: Some("dingcorp".into()),
            open_id: None,
            uid: user_id.map(str::to_owned),
            depts: vec![100],
            dtree: vec![1],
            adm: false,
            title: None,
        };
        let names = crate::config::IdentityHeaders {
            user: None,
            email: None,
            preferred_username: None,
            union_id: None,
            name: None,
            corp_id: None,
            user_id: None,
            departments: None,
            title: None,
            strip_extra: Vec::new(),
        };
        Arc::new(VerifiedSession::new(claims, &names, i64::MAX))
    }

    #[test]
    fn access_line_names_the_user_route_decision_and_original_request() {
        let table = named_routes();
        let access = Access {
            user: Some(identity("unionzhangsan", Some("zhangsan"))),
            route: Some(route(&table, "admin")),
            gateway: false,
            decision: Some(Admitted::Allow),
            original: Some(Original {
                method: Some(Method::POST),
                host: Some(host::parse_authority("HR.example.test:8443").unwrap()),
                path: "/admin/x".into(),
            }),
            upstream: Some(std::time::Duration::from_millis(7)),
        };
        let line = access_json(&access, None);
        let want = json!({
            "level": "INFO", "message": "request", "method": "GET", "path": "/_dinggate/auth",
            "status": 200, "upstream_ms": 7, "bytes": 42, "peer": "192.0.2.1",
            "request_id": "0123456789abcdef", "union_id": "unionzhangsan",
            "user_id": "zhangsan", "route": "admin", "decision": "allow",
            "original_method": "POST", "original_host": "hr.example.test:8443",
            "original_path": "/admin/x",
        });
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&line[key], value, "{key} in {line}");
        }
        // Display names are personal data: ids are enough to find the person.
        assert!(!line.to_string().contains("张三"), "{line}");
    }

    #[test]
    fn access_line_leaves_out_what_is_unknown() {
        // No session, proxy mode: no user, no original request, no decision.
        let line = access_json(&Access::default(), Some(GatewayError::Unauthenticated));
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "level",
                "message",
                "method",
                "ms",
                "path",
                "peer",
                "request_id",
                "status",
                "timestamp"
            ]
        );
        // Signed in without directory data, through nginx (no X-Forwarded-Method or host).
        let table = named_routes();
        let access = Access {
            user: Some(identity("unionzhangsan", None)),
            route: Some(route(&table, "/")),
            gateway: false,
            decision: Some(Admitted::Public),
            original: Some(Original {
                method: None,
                host: None,
                path: "/".into(),
            }),
            upstream: None,
        };
        let line = access_json(&access, None);
        assert_eq!(line["union_id"], "unionzhangsan");
        assert_eq!(line["decision"], "public");
        for absent in ["user_id", "original_method", "original_host", "rule"] {
            assert!(line.get(absent).is_none(), "{absent} in {line}");
        }
    }

    #[test]
    fn access_line_of_a_refusal_names_the_refusing_route_and_rule() {
        let table = named_routes();
        let access = Access {
            user: Some(identity("unionzhangsan", Some("zhangsan"))),
            route: Some(route(&table, "app")),
            gateway: false,
            decision: None,
            original: None,
            upstream: None,
        };
        let error = GatewayError::Forbidden {
            name: "张三".into(),
            route: "admin".into(),
            reason: DenyReason::NotAllowed {
                needs: "allow.departments [200]".into(),
            },
            explained: Box::new(("Only 研发部 may enter.".into(), "仅限 研发部。".into())),
        };
        let line = access_json(&access, Some(error));
        assert_eq!(line["status"], 403);
        assert_eq!(line["route"], "app");
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["denied_by"], "admin");
        assert_eq!(line["rule"], "none of allow.departments [200]");
        assert_eq!(line["user_id"], "zhangsan");
    }

    #[test]
    fn access_line_in_text_is_one_escaped_line() {
        let access = Access {
            user: Some(identity("u\n1\u{1b}", Some("zhang\nsan"))),
            ..Access::default()
        };
        let text = captured(crate::config::LogFormat::Text, || {
            log_access(
                &Method::GET,
                "/x",
                StatusCode::OK,
                None,
                Instant::now(),
                &ctx(),
                &access,
                None,
            );
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(" request method=GET path=/x status=200 ms="),
            "{text}"
        );
        assert!(
            text.contains(" union_id=u\\n1\\u{1b} user_id=zhang\\nsan"),
            "{text}"
        );
    }

    #[test]
    fn a_server_error_without_a_hint_logs_no_hint_field() {
        let e = GatewayError::Revocation(RevocationError::Unavailable {
            backend: "redis",
            source: std::io::Error::other("connection refused"),
        });
        assert!(operator_hint(&e).is_none());
        let line = logged(e);
        assert!(line.contains(" ERROR "), "{line}");
        assert!(
            line.contains(
                "error=session revocations could not be checked: the redis revocation store is unavailable: connection refused"
            ),
            "{line}"
        );
        assert!(!line.contains("hint"), "{line}");
    }

    fn api_error(code: &str) -> Box<DingTalkError> {
        Box::new(DingTalkError::Api {
            api: crate::dingtalk::api::Api::UserAccessToken,
            status: 400,
            code: code.into(),
            message: "the code is invalid".into(),
            request_id: None,
            required_scopes: Vec::new(),
        })
    }

    #[test]
    fn made_up_code_is_info_without_the_operator_hint() {
        let e = api_error("invalidAuthCode");
        assert!(e.is_bad_code());
        let hint = e.operator_hint();
        let line = logged(GatewayError::Login(LoginError::CodeRejected(e)));
        assert!(line.contains(" INFO "), "{line}");
        assert!(!line.contains(&hint) && !line.contains("hint"), "{line}");
    }

    #[test]
    fn no_session_and_rate_limits_are_debug() {
        use crate::ratelimit::{Scope, Throttled};
        let t = Throttled {
            scope: Scope::ClientLogins,
            retry_after: std::time::Duration::from_secs(3),
        };
        for e in [
            GatewayError::Unauthenticated,
            GatewayError::RateLimited(t),
            GatewayError::Login(LoginError::Busy(Throttled {
                scope: Scope::CodeExchanges,
                ..t
            })),
        ] {
            let line = logged(e);
            assert!(line.contains(" DEBUG "), "{line}");
        }
    }

    #[test]
    fn client_faults_are_info_and_real_faults_error_with_hint() {
        for e in [
            GatewayError::NotFound,
            bad_host("more than one Host header"),
            GatewayError::Login(LoginError::BadReturnUrl(
                crate::login::redirect::RedirectError::NotAllowed("scheme-relative"),
            )),
            GatewayError::Login(LoginError::BadCode("no authCode in the callback")),
        ] {
            let line = logged(e);
            assert!(line.contains(" INFO ") && !line.contains("hint"), "{line}");
        }
        // A configuration error at DingTalk (wrong secret) is the operator's to fix.
        let e = api_error("invalidClientIdOrSecret");
        assert!(!e.is_bad_code());
        let line = logged(GatewayError::Login(LoginError::DingTalk(e)));
        assert!(line.contains(" ERROR ") && line.contains("hint="), "{line}");
    }

    fn headers(pairs: &[(HeaderName, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn fwd(pairs: &[(HeaderName, &[u8])]) -> Result<ForwardedRequest, GatewayError> {
        forwarded_request(&headers(pairs))
    }

    #[test]
    fn forwarded_uri_is_read_from_either_header_and_raw_bytes_are_encoded() {
        let r = fwd(&[(X_ORIGINAL_URI, b"/admin/x?a=1")]).unwrap();
        assert_eq!(
            (r.uri.as_str(), r.path.as_str()),
            ("/admin/x?a=1", "/admin/x")
        );
        assert_eq!((r.host, r.method), (None, None));
        let r = fwd(&[(X_FORWARDED_URI, "/admin/é".as_bytes())]).unwrap();
        assert_eq!(
            (r.uri.as_str(), r.path.as_str()),
            ("/admin/%C3%A9", "/admin/%C3%A9")
        );
        let r = fwd(&[(X_ORIGINAL_URI, "/admin?x=é".as_bytes())]).unwrap();
        assert_eq!(
            (r.uri.as_str(), r.path.as_str()),
            ("/admin?x=%C3%A9", "/admin")
        );
        // Not UTF-8 at all: encoded byte for byte; normalization then refuses it.
        assert!(matches!(
            fwd(&[(X_ORIGINAL_URI, b"/admin/\xff")]),
            Err(GatewayError::BadPath(PathError::BadEncoding))
        ));
        // Both headers, identical: fine.
        let r = fwd(&[(X_ORIGINAL_URI, b"/a"), (X_FORWARDED_URI, b"/a")]).unwrap();
        assert_eq!(r.path, "/a");
        // The path is normalized: dot segments cannot hide /admin.
        assert_eq!(
            fwd(&[(X_ORIGINAL_URI, b"/public/../admin")]).unwrap().path,
            "/admin"
        );
    }

    #[test]
    fn unusable_forwarded_uris_are_refused_never_defaulted() {
        for pairs in [
            &[][..],
            &[(X_ORIGINAL_URI, &b"/a"[..]), (X_ORIGINAL_URI, b"/a")][..],
            &[(X_FORWARDED_URI, &b"/a"[..]), (X_FORWARDED_URI, b"/b")][..],
            &[(X_ORIGINAL_URI, &b"/a"[..]), (X_FORWARDED_URI, b"/admin")][..],
            // Tab is the one control a header value can carry (HTTP refuses the others).
            &[(X_ORIGINAL_URI, &b"/a\tb"[..])][..],
            &[(X_ORIGINAL_URI, &b"/a b"[..])][..],
            &[(X_ORIGINAL_URI, &b"/a#frag"[..])][..],
        ] {
            assert!(
                matches!(fwd(pairs), Err(GatewayError::BadForwarded(_))),
                "{pairs:?}"
            );
        }
        for uri in [&b""[..], b"admin", b"*", b"http://h/admin", b"/a%00"] {
            assert!(
                matches!(fwd(&[(X_ORIGINAL_URI, uri)]), Err(GatewayError::BadPath(_))),
                "{uri:?}"
            );
        }
    }

    #[test]
    fn forwarded_host_and_method_are_validated_when_present() {
        let r = fwd(&[
            (X_FORWARDED_URI, b"/"),
            (X_FORWARDED_HOST, b"HR.example.test:8443"),
            (X_FORWARDED_METHOD, b"POST"),
        ])
        .unwrap();
        assert_eq!(r.host.unwrap().to_string(), "hr.example.test:8443");
        assert_eq!(r.method, Some(Method::POST));
        for host in [
            &b"hr.example.test:1@other"[..],
            b"a b",
            b"a.b, c.d",
            b"a.b:",
            b"a.b::1",
            b"a\\b",
            b"\xc3\xa9.example",
            b"",
        ] {
            assert!(
                matches!(
                    fwd(&[(X_FORWARDED_URI, b"/"), (X_FORWARDED_HOST, host)]),
                    Err(GatewayError::BadHost { .. })
                ),
                "{host:?}"
            );
        }
        assert!(matches!(
            fwd(&[
                (X_FORWARDED_URI, b"/"),
                (X_FORWARDED_HOST, b"a.b"),
                (X_FORWARDED_HOST, b"a.b")
            ]),
            Err(GatewayError::BadHost { .. })
        ));
        for method in [&b""[..], b"GE T", b"GET\"", b"G\xc3\xa9T"] {
            assert!(
                matches!(
                    fwd(&[(X_FORWARDED_URI, b"/"), (X_FORWARDED_METHOD, method)]),
                    Err(GatewayError::BadForwarded(_))
                ),
                "{method:?}"
            );
        }
        assert!(matches!(
            fwd(&[
                (X_FORWARDED_URI, b"/"),
                (X_FORWARDED_METHOD, b"GET"),
                (X_FORWARDED_METHOD, b"GET")
            ]),
            Err(GatewayError::BadForwarded(_))
        ));
    }

    #[test]
    fn a_trusted_forwarded_host_must_name_the_routed_host() {
        let routed = host::parse_authority("app.example.com:8443").unwrap();
        let check = |xfh: &[&[u8]]| {
            let pairs: Vec<(HeaderName, &[u8])> =
                xfh.iter().map(|v| (X_FORWARDED_HOST, *v)).collect();
            check_trusted_forwarded_host(&headers(&pairs), Some(&routed))
        };
        assert!(check(&[]).is_ok());
        assert!(check(&[b"app.example.com"]).is_ok());
        assert!(check(&[b"APP.example.com.:443"]).is_ok());
        for bad in [
            &[&b"other.example.com"[..]][..],
            &[b"app.example.com:1@other"],
            &[b"app.example.com, other"],
            &[b"app.example.com", b"app.example.com"],
        ] {
            assert!(
                matches!(check(bad), Err(GatewayError::BadHost { .. })),
                "{bad:?}"
            );
        }
        assert!(
            check_trusted_forwarded_host(&headers(&[(X_FORWARDED_HOST, b"a.example")]), None)
                .is_err()
        );
    }

    #[test]
    fn every_new_refusal_is_a_400() {
        for e in [
            GatewayError::BadForwarded("x"),
            bad_host("x"),
            GatewayError::BadHost {
                what: "x",
                cause: Some(HostError::Userinfo),
            },
        ] {
            assert_eq!(status_of(&e), StatusCode::BAD_REQUEST);
        }
    }
}
