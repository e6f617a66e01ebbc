//! Protected routes: the `routes:` config (raw and validated) and host/path route matching.

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::authz::{Policy, Rule};
use crate::config::raw::{parse_bool, ser_display, unknown_keys, ConfigIssue, Text, Unknown};
use crate::host::{self, HostError};
use crate::proxy::fold::{affected_by, fold, Fold};
use crate::proxy::path::normalize_path;
use crate::proxy::tls::{RawTls, TlsSettings, UpstreamTls};

/// One entry of `routes:` as written in `gateway.yaml`, before validation.
///
/// ```yaml
/// routes:
///   # Everything not matched below: any member of the organization.
///   - name: wiki
///     path_prefix: /
///     upstream: http://127.0.0.1:3000
///     public: [/healthz, /static/]     # no sign-in; "/static/" covers everything below it
///   # /admin and everything below it, on any host without a route of its own.
///   - name: admin
///     path_prefix: /admin
///     upstream: http://127.0.0.1:3001  # optional: defaults to the top-level `upstream`
///     allow:                           # any one condition suffices
///       departments: [100]             # department 100 and every department below it
///       users: ["lisi", "unionid-of-zhaoliu"]   # userid or unionId (quote numeric ids)
///       admins: true                   # organization administrators
///     deny:                            # overrides allow
///       departments: [300]
///   # A whole host (hostname only: no scheme, no port). Routes for the request's host are
///   # tried before host-less ones, so this one also owns hr.example.com/admin.
///   - host: hr.example.com
///     upstream: http://10.0.0.5:8080
///     allow:
///       users: ["wangwu"]
/// ```
///
/// A route with an https `upstream` may add a `tls:` block (`ca_file`, `server_name`,
/// `cert_file` + `key_file`, `insecure_skip_verify`; see [`RawTls`]); without one the
/// certificate is verified against the system roots for the URL's host. `tls` on an http
/// upstream is an error.
///
/// Every key is optional: `path_prefix` defaults to `/`, `upstream` to the top-level one (with
/// `upstream_tls`; a route's own https `upstream` takes only its own `tls`),
/// `allow.corp` to `dingtalk.corp_id`; a route without `allow` admits every member of the corp.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    name: Text,
    host: Text,
    path_prefix: Text,
    upstream: Text,
    tls: Option<RawTls>,
    public: Option<OneOrMany>,
    allow: RawRule,
    deny: RawRule,
    assertion: Text,
    assertion_audience: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

/// `allow:` or `deny:` of a route, before validation. `corp` is accepted only under `allow`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRule {
    users: Option<OneOrMany>,
    departments: Option<OneOrMany>,
    admins: Text,
    corp: Text,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A YAML scalar, kept as written so that validation can say what is wrong with it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::UInt(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A list, or a single value standing for a list of one (`users: lisi`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Scalar>),
    One(Scalar),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<Scalar> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) => vec![s],
        }
    }
}

/// What `validate_routes` falls back to.
#[derive(Debug, Clone, Copy)]
pub struct RouteDefaults<'a> {
    /// The top-level `upstream`, if configured.
    pub upstream: Option<&'a Url>,
    /// The top-level `upstream` is set but invalid (already reported): routes that would fall
    /// back to it add no follow-on "missing" issue.
    pub upstream_invalid: bool,
    /// The top-level `upstream_tls`, for routes that use the top-level `upstream`.
    pub upstream_tls: Option<&'a UpstreamTls>,
    /// `dingtalk.corp_id` (`None` only with `allow_any_corp`).
    pub corp: Option<&'a str>,
    /// The gateway's own prefix, e.g. `/_dinggate` (no trailing slash); routes may not go there.
    pub gateway_prefix: &'a str,
    /// `assertion.signing_key_file` is set: routes may carry signed identity assertions, and the
    /// implicit route (no `routes:`) does.
    pub assertion_key: bool,
}

/// A validated route.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// The configured name, or one derived from host and prefix (`app.example.com/admin`, `/admin`).
    pub name: String,
    /// Canonical host this route is limited to ([`crate::host::Host::canonical`]); `None` = any host.
    pub host: Option<String>,
    /// Canonical path prefix (see [`normalize_path`]); `/` or without a trailing slash.
    pub path_prefix: String,
    /// Where matching requests are forwarded.
    #[serde(serialize_with = "ser_display")]
    pub upstream: Url,
    /// TLS settings of an https `upstream` (`None` for http ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Which upstream connection pool serves this route: routes with the same upstream origin
    /// and TLS settings share one (see [`RouteTable::pools`]).
    #[serde(skip)]
    pub pool: usize,
    /// Position in the table ([`RouteTable::routes`]), for per-route data built at startup.
    #[serde(skip)]
    pub index: usize,
    /// Canonical path prefixes inside `path_prefix` that need no sign-in.
    pub public: Vec<String>,
    /// Who may use the route.
    pub policy: Policy,
    /// The audience (`aud`) of the signed identity assertion its requests carry; `None`: no
    /// assertion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion: Option<String>,
}

impl Route {
    /// Whether the canonical `path` needs no sign-in: it equals a `public` entry or lies below it
    /// on a `/` boundary (`/health` covers `/health` and `/health/x`, not `/healthz`); an entry
    /// ending in `/` covers only what starts with it (`/static/` does not cover `/static`).
    pub fn is_public(&self, path: &str) -> bool {
        self.public.iter().any(|p| public_covers(p, path))
    }
}

fn public_covers(entry: &str, path: &str) -> bool {
    if entry.ends_with('/') {
        return path.starts_with(entry);
    }
    // Only `/` is a boundary here (unlike route prefixes, see `prefix_covers`): widening what is
    // public must never happen through a spelling the upstream might read differently.
    path.strip_prefix(entry)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether route prefix `prefix` covers canonical `path` on a segment boundary.
fn prefix_covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    // `;` also ends a segment here: servlet containers strip `;params` from each segment, so to
    // them `/admin;x/secret` is `/admin/secret`. Sending it to the `/admin` route (with its
    // policy) rather than a shorter, possibly laxer one keeps such upstreams safe.
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with(';'))
}

/// The routes, ready for matching.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Indexes into `routes`, most specific first: longer prefix, then host-specific.
    order: Vec<usize>,
    /// The distinct folded spellings of every route's prefix and public entries, computed once:
    /// a reading of the path under `fold` is compared with `views[view_of[fold.index()]]`, so
    /// routes compare folded with folded (`path_prefix: /Admin` owns `/admin` for an upstream
    /// that ignores case). A single view means every prefix and entry reads only as itself.
    views: Vec<FoldedRoutes>,
    view_of: [usize; 8],
    /// The folds that change some prefix or public entry ([`affected_by`]).
    affecting: Fold,
}

/// Every route's `path_prefix` and `public` entries under one [`Fold`], by route index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FoldedRoutes {
    prefixes: Vec<String>,
    public: Vec<Vec<String>>,
}

/// Where a request goes and who must admit it ([`RouteTable::resolve`]).
#[derive(Debug)]
pub struct Resolution<'a> {
    /// The route the exact canonical path matches: its upstream receives that exact path.
    pub route: &'a Route,
    /// No sign-in needed: the path is public under every reading of it.
    pub public: bool,
    /// Other routes that some reading of the path matches; their policies must admit the request
    /// as well. Empty (and not allocated) when the path has no reading but itself.
    pub also: Vec<&'a Route>,
}

impl<'a> Resolution<'a> {
    /// Every route whose policy must admit the request: [`Resolution::route`] first.
    pub fn guards(&self) -> impl Iterator<Item = &'a Route> + '_ {
        std::iter::once(self.route).chain(self.also.iter().copied())
    }
}

impl RouteTable {
    /// Builds the table; `routes` keep their order for [`RouteTable::routes`] and `describe`.
    pub fn new(mut routes: Vec<Route>) -> Self {
        // One connection pool per upstream origin and TLS setting, shared by the routes on it.
        let mut pools: Vec<usize> = Vec::new();
        for i in 0..routes.len() {
            routes[i].index = i;
            let same = |p: &usize| {
                let (a, b) = (&routes[*p], &routes[i]);
                a.upstream.origin() == b.upstream.origin()
                    && a.tls.as_ref().map(|t| &t.settings) == b.tls.as_ref().map(|t| &t.settings)
            };
            routes[i].pool = match pools.iter().position(same) {
                Some(p) => p,
                None => {
                    pools.push(i);
                    pools.len() - 1
                }
            };
        }
        let mut order: Vec<usize> = (0..routes.len()).collect();
        // Host-specific routes are tried first (as nginx picks the server block before the
        // location), then the longest prefix within each group.
        order.sort_by_key(|&i| {
            (
                routes[i].host.is_none(),
                std::cmp::Reverse(routes[i].path_prefix.len()),
            )
        });
        let mut views: Vec<FoldedRoutes> = Vec::new();
        let mut view_of = [0; 8];
        for how in Fold::subsets() {
            let view = FoldedRoutes {
                prefixes: routes.iter().map(|r| fold(&r.path_prefix, how)).collect(),
                public: routes
                    .iter()
                    .map(|r| r.public.iter().map(|p| fold(p, how)).collect())
                    .collect(),
            };
            view_of[how.index()] = match views.iter().position(|v| *v == view) {
                Some(i) => i,
                None => {
                    views.push(view);
                    views.len() - 1
                }
            };
        }
        let affecting = routes
            .iter()
            .flat_map(|r| std::iter::once(&r.path_prefix).chain(&r.public))
            .fold(Fold::EXACT, |acc, p| acc | affected_by(p));
        RouteTable {
            routes,
            order,
            views,
            view_of,
            affecting,
        }
    }

    /// The routes in configuration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether any route is limited to a host: if none is, [`RouteTable::resolve`] decides the
    /// same for every host, and callers need not work out the request's canonical host name.
    pub fn uses_hosts(&self) -> bool {
        self.routes.iter().any(|r| r.host.is_some())
    }

    /// The first route of each upstream connection pool, indexed by [`Route::pool`]: its
    /// upstream origin and TLS settings are the pool's.
    pub fn pools(&self) -> Vec<&Route> {
        let mut out: Vec<&Route> = Vec::new();
        for r in &self.routes {
            if r.pool == out.len() {
                out.push(r);
            }
        }
        out
    }

    /// Routes whose upstream certificate is not verified (`tls.insecure_skip_verify`).
    pub fn insecure(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(|r| {
            r.tls
                .as_ref()
                .is_some_and(|t| t.settings.insecure_skip_verify)
        })
    }

    /// The route for a request, or `None` (→ 404).
    ///
    /// `host` is the request's canonical host ([`crate::host::Host::canonical`] of the validated `Host`
    /// header, URI authority or `X-Forwarded-Host`: lower-case, no port, no trailing dot); the
    /// gateway refuses a request whose host does not parse, so no raw value ever gets here.
    /// `path` must be canonical ([`normalize_path`]). Routes whose host equals the request's are tried first,
    /// then routes without a host; within each group the longest `path_prefix` covering the path wins (on
    /// segment boundaries: `/admin` covers `/admin`, `/admin/`, `/admin/x` and `/admin;p`, never
    /// `/administrator`; `/` covers everything), and on equal prefixes a route with a host beats
    /// one without.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find_index(host, path).map(|i| &self.routes[i])
    }

    fn find_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let r = &self.routes[i];
            host_matches(r, host) && prefix_covers(&r.path_prefix, path)
        })
    }

    /// The route for a request ([`RouteTable::find`] on the exact canonical `path`), whether the
    /// path is public, and every route whose policy must admit it.
    ///
    /// Upstreams read paths more loosely than the gateway matches them (see
    /// [`crate::proxy::fold`]): `/ADMIN`, `/admin;x`, `/admin%3Bx`, `/admin.` and `/admin%20` are
    /// `/admin` to some of them. So the path is also matched under each of its readings — each
    /// compared with route prefixes and public entries folded the same way — and:
    /// - every route some reading matches is in [`Resolution::guards`] (all must admit);
    /// - the path is public only if every reading matches a route and is public on it.
    ///
    /// The host is never folded. A path that reads only as itself, with every prefix and entry
    /// the same (the common case), costs one route look-up and no allocation.
    pub fn resolve(&self, host: Option<&str>, path: &str) -> Option<Resolution<'_>> {
        let exact = self.find_index(host, path)?;
        let route = &self.routes[exact];
        let mut public = route.is_public(path);
        let mut also: Vec<&Route> = Vec::new();
        // Only folds that change the path or some prefix or entry can match anything new.
        let relevant = affected_by(path) | self.affecting;
        if relevant == Fold::EXACT {
            return Some(Resolution {
                route,
                public,
                also,
            });
        }
        let mut seen: Vec<(usize, String)> = Vec::with_capacity(8);
        for how in Fold::subsets().filter(|how| relevant.contains(*how)) {
            let view = self.view_of[how.index()];
            let reading = fold(path, how);
            if seen.iter().any(|(v, r)| *v == view && *r == reading) {
                continue;
            }
            let folded = &self.views[view];
            // The most specific match under this reading (host-specific first, then the longest
            // folded prefix); equal ones all count, so that no tie picks the laxer policy.
            let covering = |i: &usize| {
                host_matches(&self.routes[*i], host)
                    && prefix_covers(&folded.prefixes[*i], &reading)
            };
            let rank = |i: usize| {
                (
                    self.routes[i].host.is_none(),
                    std::cmp::Reverse(folded.prefixes[i].len()),
                )
            };
            let best = (0..self.routes.len()).filter(covering).map(rank).min();
            let Some(best) = best else {
                public = false;
                seen.push((view, reading));
                continue;
            };
            for i in (0..self.routes.len())
                .filter(covering)
                .filter(|&i| rank(i) == best)
            {
                if !folded.public[i].iter().any(|e| public_covers(e, &reading)) {
                    public = false;
                }
                let r = &self.routes[i];
                if i != exact && !also.iter().any(|seen| std::ptr::eq(*seen, r)) {
                    also.push(r);
                }
            }
            seen.push((view, reading));
        }
        Some(Resolution {
            route,
            public,
            also,
        })
    }

    /// Every route and its rules in words, for `dinggate check`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} route(s); routes for the request's host are tried first, then host-less ones; within each, the longest matching path_prefix wins:\n",
            self.routes.len()
        );
        for r in &self.routes {
            let host = r.host.as_deref().unwrap_or("any host");
            out.push_str(&format!(
                "  {}: {host}, paths {} → {}\n",
                r.name,
                describe_prefix(&r.path_prefix),
                r.upstream
            ));
            if let Some(tls) = &r.tls {
                out.push_str(&format!("    tls: {}\n", tls.describe(&r.upstream)));
            }
            out.push_str(&format!("    allowed: {}\n", r.policy.describe()));
            if !r.public.is_empty() {
                out.push_str(&format!(
                    "    public (no sign-in, identity headers still stripped): {}\n",
                    r.public.join(", ")
                ));
            }
        }
        out
    }
}

fn describe_prefix(prefix: &str) -> String {
    if prefix == "/" {
        "/ and everything below".to_owned()
    } else {
        format!("{prefix} and below")
    }
}

/// Whether `route` applies to requests for `host` (canonical, see [`RouteTable::find`]).
fn host_matches(route: &Route, host: Option<&str>) -> bool {
    match (&route.host, host) {
        (None, _) => true,
        (Some(want), Some(got)) => want == got,
        (Some(_), None) => false,
    }
}

/// Validates `routes:`; every problem goes to `issues` (keys like `routes[2].path_prefix`).
///
/// Without `routes:` the result is one route, `/` on any host, to `defaults.upstream` for every
/// member of `defaults.corp`. The returned routes are meaningful only if no issue was added.
pub fn validate_routes(
    raw: Option<Vec<RawRoute>>,
    defaults: &RouteDefaults<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<Route> {
    let mut issue = |key: String, problem: String| issues.push(ConfigIssue { key, problem });
    // The system roots are loaded once, by the first https upstream without a `ca_file`.
    let mut system = None;
    let Some(raw) = raw else {
        let Some(upstream) = defaults.upstream else {
            if !defaults.upstream_invalid {
                issue(
                    "upstream".to_owned(),
                    "missing: set `upstream`, or list `routes` that each have one".to_owned(),
                );
            }
            return Vec::new();
        };
        // `upstream_tls` on an http `upstream` is reported with the top-level keys.
        let tls = match (upstream.scheme(), defaults.upstream_tls) {
            ("https", Some(tls)) => Some(tls.clone()),
            ("https", None) => system_tls(&mut system, || "upstream".to_owned(), &mut issue),
            _ => None,
        };
        return vec![Route {
            name: "default".to_owned(),
            host: None,
            path_prefix: "/".to_owned(),
            upstream: upstream.clone(),
            tls,
            pool: 0,
            index: 0,
            public: Vec::new(),
            policy: Policy::members_of(defaults.corp.map(str::to_owned)),
            assertion: defaults.assertion_key.then(|| "default".to_owned()),
        }];
    };
    if raw.is_empty() {
        issue(
            "routes".to_owned(),
            "is empty: list at least one route, or remove `routes` to send everything to `upstream`"
                .to_owned(),
        );
        return Vec::new();
    }

    let mut routes = Vec::with_capacity(raw.len());
    let mut seen_place: BTreeMap<(Option<String>, String), usize> = BTreeMap::new();
    let mut seen_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen_folded: BTreeMap<(Option<String>, String), usize> = BTreeMap::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        for found in unknown_keys(&format!("routes[{i}]"), &r.unknown) {
            issue(found.key, found.problem);
        }

        // `None` = invalid (reported); `Some(None)` = any host.
        let host = match r.host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            None => Some(None),
            Some(h) => match parse_host(h) {
                Ok(h) => Some(Some(h)),
                Err(problem) => {
                    issue(key("host"), problem);
                    None
                }
            },
        };

        let path_prefix = match r.path_prefix.as_deref().map(str::trim) {
            None | Some("") => Some("/".to_owned()),
            Some(p) => match canonical_path(p) {
                Err(problem) => {
                    issue(key("path_prefix"), problem);
                    None
                }
                Ok(n) if n != "/" && n.ends_with('/') => {
                    issue(
                        key("path_prefix"),
                        format!(
                            "write it without the trailing slash ({}): a prefix covers the path itself and everything below it",
                            n.trim_end_matches('/')
                        ),
                    );
                    None
                }
                Ok(n) if prefix_covers(defaults.gateway_prefix, &n) => {
                    issue(
                        key("path_prefix"),
                        format!(
                            "is inside the gateway's own prefix {}; requests there never reach a route",
                            defaults.gateway_prefix
                        ),
                    );
                    None
                }
                Ok(n) => Some(n),
            },
        };

        let own_upstream = r
            .upstream
            .as_deref()
            .map(str::trim)
            .is_some_and(|u| !u.is_empty());
        let upstream = match r
            .upstream
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            Some(u) => match parse_upstream(u) {
                Ok(u) => Some(u),
                Err(problem) => {
                    issue(key("upstream"), problem.to_owned());
                    None
                }
            },
            None => match defaults.upstream {
                Some(u) => Some(u.clone()),
                None if defaults.upstream_invalid => None,
                None => {
                    issue(
                        key("upstream"),
                        "missing, and there is no top-level `upstream` to fall back to".to_owned(),
                    );
                    None
                }
            },
        };

        // `None` = invalid (reported); `Some(None)` = an http upstream, no TLS.
        let tls = {
            let mut tls_issues = Vec::new();
            let own = r.tls.map(|t| t.validate(&key("tls"), &mut tls_issues));
            let valid = tls_issues.is_empty();
            for i in tls_issues {
                issue(i.key, i.problem);
            }
            match (&upstream, own) {
                (_, Some(_)) if !valid => None,
                (None, _) => None,
                (Some(u), own) if u.scheme() != "https" => {
                    if own.is_some() {
                        issue(
                            key("tls"),
                            format!("set, but the upstream ({u}) is http: TLS settings apply to https upstreams only; use https:// or remove tls"),
                        );
                        None
                    } else {
                        Some(None)
                    }
                }
                (Some(_), Some(own)) => Some(own),
                (Some(_), None) => match defaults.upstream_tls.filter(|_| !own_upstream) {
                    Some(inherited) => Some(Some(inherited.clone())),
                    None => system_tls(&mut system, || key("upstream"), &mut issue).map(Some),
                },
            }
        };

        let mut public = Vec::new();
        for (j, entry) in r
            .public
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let k = key(&format!("public[{j}]"));
            let Scalar::Str(entry) = entry else {
                issue(k, "must be a path like /healthz".to_owned());
                continue;
            };
            match canonical_path(entry.trim()) {
                Err(problem) => issue(k, problem),
                Ok(n) => {
                    if let Some(prefix) = &path_prefix {
                        if !public_covers(&format!("{}/", prefix.trim_end_matches('/')), &n)
                            && n != *prefix
                        {
                            issue(k, format!("is outside this route's path_prefix {prefix}"));
                            continue;
                        }
                    }
                    if prefix_covers(defaults.gateway_prefix, &n) {
                        issue(
                            k,
                            format!(
                                "is inside the gateway's own prefix {}",
                                defaults.gateway_prefix
                            ),
                        );
                        continue;
                    }
                    public.push(n);
                }
            }
        }

        let allow = validate_rule(r.allow, &key("allow"), &mut issue);
        let deny = validate_rule(r.deny, &key("deny"), &mut issue);
        if deny.corp.is_some() {
            issue(
                key("deny.corp"),
                "not allowed: a corp can only be required (allow.corp), not denied".to_owned(),
            );
        }
        let corp = match (allow.corp, defaults.corp) {
            (Some(route), Some(global)) if route != global => {
                issue(
                    key("allow.corp"),
                    format!("differs from dingtalk.corp_id ({global}): people can only sign in through that organization, so nobody could use this route"),
                );
                None
            }
            (route, global) => route.or_else(|| global.map(str::to_owned)),
        };

        let (Some(host), Some(path_prefix), Some(upstream), Some(tls)) =
            (host, path_prefix, upstream, tls)
        else {
            continue;
        };
        let place = (host.clone(), path_prefix.clone());
        if let Some(first) = seen_place.get(&place) {
            issue(
                key("path_prefix"),
                format!("routes[{first}] already has the same host and path_prefix"),
            );
            continue;
        }
        seen_place.insert(place, i);
        // Two spellings of one place (`/Admin` and `/admin`, `/app` and `/app.`) are one place to
        // an upstream that ignores case, `;parameters` or trailing dots: which policy was meant
        // would be a guess, so the operator must choose one spelling.
        let folded_place = (host.clone(), fold(&path_prefix, Fold::ALL));
        if let Some(&first) = seen_folded.get(&folded_place) {
            issue(
                key("path_prefix"),
                format!(
                    "reads the same as routes[{first}].path_prefix to upstreams that ignore case, `;parameters` or trailing dots and spaces ({}); use one spelling",
                    folded_place.1
                ),
            );
            continue;
        }
        seen_folded.insert(folded_place, i);

        let name = match r.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) if n.chars().count() > 64 || n.chars().any(char::is_control) => {
                issue(
                    key("name"),
                    "must be at most 64 characters, without control characters".to_owned(),
                );
                continue;
            }
            Some(n) => n.to_owned(),
            None => format!("{}{}", host.as_deref().unwrap_or(""), path_prefix),
        };
        if let Some(first) = seen_name.get(&name) {
            issue(key("name"), format!("routes[{first}] has the same name"));
            continue;
        }
        seen_name.insert(name.clone(), i);
        let assertion = match parse_bool(r.assertion.as_deref()) {
            Err(problem) => {
                issue(key("assertion"), problem.to_owned());
                continue;
            }
            Ok(Some(true)) if !defaults.assertion_key => {
                issue(
                    key("assertion"),
                    "needs assertion.signing_key_file: the key that signs the assertions"
                        .to_owned(),
                );
                continue;
            }
            Ok(Some(true)) => {
                let audience = r
                    .assertion_audience
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty());
                match audience {
                    Some(a) if a.chars().count() > 128 || a.chars().any(char::is_control) => {
                        issue(
                            key("assertion_audience"),
                            "must be at most 128 characters, without control characters".to_owned(),
                        );
                        continue;
                    }
                    Some(a) => Some(a.to_owned()),
                    None => Some(name.clone()),
                }
            }
            Ok(_) => {
                if r.assertion_audience
                    .as_deref()
                    .is_some_and(|a| !a.trim().is_empty())
                {
                    issue(
                        key("assertion_audience"),
                        "set, but this route has no assertion (assertion: true)".to_owned(),
                    );
                    continue;
                }
                None
            }
        };

        routes.push(Route {
            name,
            host,
            path_prefix,
            upstream,
            tls,
            pool: 0,
            index: 0,
            public,
            policy: Policy {
                corp,
                allow: allow.rule,
                deny: deny.rule,
            },
            assertion,
        });
    }
    routes
}

/// The TLS of an https upstream without settings of its own (system roots, the URL's host),
/// built on first use; a failure is reported once, under the key `key()` names.
fn system_tls(
    cell: &mut Option<Option<UpstreamTls>>,
    key: impl FnOnce() -> String,
    issue: &mut impl FnMut(String, String),
) -> Option<UpstreamTls> {
    cell.get_or_insert_with(|| {
        let settings = TlsSettings::default();
        match crate::proxy::tls::client_config(&settings) {
            Ok(config) => Some(UpstreamTls {
                settings,
                config: std::sync::Arc::new(config),
            }),
            Err(problems) => {
                let key = key();
                for (_, problem) in problems {
                    issue(key.clone(), problem);
                }
                None
            }
        }
    })
    .clone()
}

struct CheckedRule {
    rule: Rule,
    corp: Option<String>,
}

fn validate_rule(
    raw: RawRule,
    section: &str,
    issue: &mut impl FnMut(String, String),
) -> CheckedRule {
    for found in unknown_keys(section, &raw.unknown) {
        issue(found.key, found.problem);
    }
    let mut rule = Rule::default();
    for (j, u) in raw
        .users
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let key = format!("{section}.users[{j}]");
        match u {
            Scalar::Str(s) => {
                let s = s.trim();
                if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
                    issue(
                        key,
                        "must be a userid or unionId (1-128 characters)".to_owned(),
                    );
                } else {
                    rule.users.push(s.to_owned());
                }
            }
            // Numeric userids are common; YAML gives them as integers (leading zeros kept: YAML
            // 1.2 reads `0123` as a string).
            Scalar::Int(n) => rule.users.push(n.to_string()),
            Scalar::UInt(n) => rule.users.push(n.to_string()),
            other @ (Scalar::Float(_) | Scalar::Bool(_)) => {
                issue(key, format!("must be a userid or unionId, not {other}"));
            }
        }
    }
    for (j, d) in raw
        .departments
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let id = match &d {
            Scalar::UInt(n) => Some(*n),
            Scalar::Int(n) => u64::try_from(*n).ok(),
            Scalar::Str(s) => s.trim().parse::<u64>().ok(),
            Scalar::Float(_) | Scalar::Bool(_) => None,
        };
        match id {
            Some(n) if n > 0 => rule.departments.push(n),
            _ => issue(
                format!("{section}.departments[{j}]"),
                format!("must be a department id (a positive whole number, e.g. 1 for the whole organization), not {d}"),
            ),
        }
    }
    rule.admins = match parse_bool(raw.admins.as_deref()) {
        Ok(b) => b.unwrap_or(false),
        Err(problem) => {
            issue(format!("{section}.admins"), problem.to_owned());
            false
        }
    };
    let corp = raw
        .corp
        .0
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    CheckedRule { rule, corp }
}

/// The canonical form of a configured path, or why it is not acceptable. Spellings that differ
/// only in percent-encoding (`/中文` vs `/%E4%B8%AD%E6%96%87`) are accepted and canonicalized;
/// anything that normalization would restructure (`//`, `.`, `..`) must be written out.
fn canonical_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err("must start with /".to_owned());
    }
    let n = normalize_path(p).map_err(|e| e.to_string().replace("the request path", "it"))?;
    if percent_decode_str(&n).decode_utf8_lossy() != percent_decode_str(p).decode_utf8_lossy() {
        return Err(format!("write it in normalized form: {n}"));
    }
    Ok(n)
}

/// A route's host: a canonical host without a port ([`crate::host::parse_host`]), or why the
/// value is not one. The common mistakes get a message of their own.
fn parse_host(h: &str) -> Result<String, String> {
    if h.contains("://") {
        return Err("must be a hostname only, without a scheme (e.g. app.example.com)".to_owned());
    }
    if h.contains('/') {
        return Err("must be a hostname only, without a path (use path_prefix)".to_owned());
    }
    if !h.starts_with('[') && h.contains(':') || h.contains("]:") {
        return Err("must be a hostname without a port".to_owned());
    }
    if h.contains('*') {
        return Err("wildcards are not supported: give each host its own route".to_owned());
    }
    if !h.is_ascii() {
        return Err("use the ASCII (punycode, xn--…) form of the hostname".to_owned());
    }
    match host::parse_host(h) {
        Ok(host) => Ok(host.canonical().into_owned()),
        Err(HostError::NumericName) => Err(
            "not a valid hostname: the last label is numeric but the whole is not an IPv4 address"
                .to_owned(),
        ),
        Err(_) => Err("not a valid hostname".to_owned()),
    }
}

/// An upstream base URL: http(s), with a host, no credentials, query or fragment.
fn parse_upstream(u: &str) -> Result<Url, &'static str> {
    match Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            if !url.username().is_empty() || url.password().is_some() {
                Err("must not contain credentials")
            } else if url.query().is_some() || url.fragment().is_some() {
                Err("must not have a query or fragment")
            } else {
                Ok(url)
            }
        }
        _ => Err("not an http(s) URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use figment::providers::{Format, Yaml};
    use figment::Figment;

    #[derive(Deserialize)]
    struct Doc {
        routes: Option<Vec<RawRoute>>,
    }

    fn default_upstream() -> Url {
        Url::parse("http://127.0.0.1:8080").unwrap()
    }

    fn run_with(
        yaml: &str,
        upstream: Option<&Url>,
        corp: Option<&str>,
    ) -> (Vec<Route>, Vec<String>) {
        let doc: Doc = Figment::new()
            .merge(Yaml::string(yaml))
            .extract()
            .unwrap_or_else(|e| panic!("yaml: {e}"));
        let defaults = RouteDefaults {
            upstream,
            upstream_invalid: false,
            upstream_tls: None,
            corp,
            gateway_prefix: "/_dinggate",
            // Routes may ask for assertions only in YAML that says so (see the assertion test).
            assertion_key: yaml.contains("assertion: true"),
        };
        let mut issues = Vec::new();
        let routes = validate_routes(doc.routes, &defaults, &mut issues);
        (routes, issues.iter().map(ToString::to_string).collect())
    }

    fn run(yaml: &str) -> (Vec<Route>, Vec<String>) {
        run_with(yaml, Some(&default_upstream()), Some("dingcorp"))
    }

    fn valid(yaml: &str) -> RouteTable {
        let (routes, issues) = run(yaml);
        assert!(issues.is_empty(), "unexpected issues: {issues:#?}");
        RouteTable::new(routes)
    }

    fn assert_issue(issues: &[String], want: &str) {
        assert!(
            issues.iter().any(|i| i.starts_with(want)),
            "expected an issue starting with {want:?}, got {issues:#?}"
        );
    }

    fn route(name: &str, host: Option<&str>, prefix: &str) -> Route {
        Route {
            name: name.to_owned(),
            host: host.map(str::to_owned),
            path_prefix: prefix.to_owned(),
            upstream: default_upstream(),
            tls: None,
            pool: 0,
            index: 0,
            public: Vec::new(),
            policy: Policy::members_of(Some("dingcorp".to_owned())),
            assertion: None,
        }
    }

    #[test]
    fn assertion_routes_have_an_audience_and_need_the_key() {
        let (routes, issues) = run(
            "routes:\n  - { name: app, path_prefix: /app, assertion: true }\n  - { name: hr, path_prefix: /hr, assertion: true, assertion_audience: hr-app }\n  - { name: plain, path_prefix: /plain, assertion: false }\n",
        );
        assert!(issues.is_empty(), "{issues:#?}");
        let audiences: Vec<_> = routes.iter().map(|r| r.assertion.as_deref()).collect();
        assert_eq!(audiences, vec![Some("app"), Some("hr-app"), None]);
        let (_, issues) = run(
            "routes:\n  - { path_prefix: /a, assertion: yes please }\n  - { path_prefix: /b, assertion_audience: x }\n",
        );
        assert_issue(&issues, "routes[0].assertion: ");
        assert_issue(
            &issues,
            "routes[1].assertion_audience: set, but this route has no assertion",
        );
        // Without assertion.signing_key_file (the YAML does not say `assertion: true`).
        let (_, issues) = run("routes:\n  - { path_prefix: /a, assertion: \"true\" }\n");
        assert_issue(
            &issues,
            "routes[0].assertion: needs assertion.signing_key_file",
        );
    }

    fn found<'a>(t: &'a RouteTable, host: Option<&str>, path: &str) -> Option<&'a str> {
        t.find(host, path).map(|r| r.name.as_str())
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = RouteTable::new(vec![
            route("root", None, "/"),
            route("admin", None, "/admin"),
            route("admin-api", None, "/admin/api"),
        ]);
        for (path, want) in [
            ("/", "root"),
            ("/x", "root"),
            ("/admin", "admin"),
            ("/admin/", "admin"),
            ("/admin/x", "admin"),
            ("/admin;jsessionid=1/x", "admin"),
            ("/administrator", "root"),
            ("/admin-x", "root"),
            ("/admin/api", "admin-api"),
            ("/admin/api/v1", "admin-api"),
            ("/admin/apis", "admin"),
            ("/ADMIN", "root"),
        ] {
            assert_eq!(found(&t, None, path), Some(want), "path {path}");
        }
    }

    #[test]
    fn no_match_is_none() {
        let t = RouteTable::new(vec![route("admin", None, "/admin")]);
        assert_eq!(found(&t, None, "/"), None);
        assert_eq!(found(&t, None, "/administrator"), None);
        let t = RouteTable::new(vec![route("app", Some("app.example.com"), "/")]);
        assert_eq!(found(&t, Some("other.example.com"), "/"), None);
        assert_eq!(
            found(&t, None, "/"),
            None,
            "no Host cannot match a host route"
        );
        assert!(RouteTable::new(Vec::new()).find(None, "/").is_none());
    }

    #[test]
    fn hosts_match_case_insensitively_without_port() {
        let t = RouteTable::new(vec![
            route("any", None, "/"),
            route("app", Some("app.example.com"), "/"),
            route("app-admin", Some("app.example.com"), "/admin"),
            route("admin", None, "/admin"),
        ]);
        // The gateway hands `find` the canonical host of the validated authority.
        for (authority, path, want) in [
            ("app.example.com", "/", "app"),
            ("APP.Example.COM:8443", "/x", "app"),
            ("app.example.com.", "/x", "app"),
            ("other.example.com", "/x", "any"),
            ("app.example.com.evil.com", "/x", "any"),
            ("[::1]:4180", "/x", "any"),
            ("app.example.com", "/admin/x", "app-admin"),
            ("other.example.com", "/admin/x", "admin"),
        ] {
            let host = crate::host::parse_authority(authority).unwrap().host;
            assert_eq!(
                found(&t, Some(&host.canonical()), path),
                Some(want),
                "{authority} {path}"
            );
        }
        // Userinfo is no longer skipped over: such an authority never reaches `find`.
        assert!(crate::host::parse_authority("user@app.example.com:80").is_err());
        assert!(crate::host::parse_authority("hr.example.com:1@other").is_err());
        assert_eq!(found(&t, None, "/admin"), Some("admin"));
    }

    #[test]
    fn route_hosts_use_the_shared_host_parser() {
        let (routes, issues) = run(r#"
routes:
  - host: App.Example.COM.
  - host: 10.0.0.5
  - host: "[::1]"
"#);
        assert!(issues.is_empty(), "{issues:?}");
        let hosts: Vec<_> = routes.iter().map(|r| r.host.as_deref().unwrap()).collect();
        assert_eq!(hosts, ["app.example.com", "10.0.0.5", "[::1]"]);
        let (_, issues) = run(r#"
routes:
  - host: app.123
  - host: 1.2.3
  - host: "a b.example.com"
  - host: "user@app.example.com"
  - host: "[::1]:80"
"#);
        for want in [
            "routes[0].host: not a valid hostname: the last label is numeric",
            "routes[1].host: not a valid hostname: the last label is numeric",
            "routes[2].host: not a valid hostname",
            "routes[3].host: not a valid hostname",
            "routes[4].host: must be a hostname without a port",
        ] {
            assert_issue(&issues, want);
        }
        assert_eq!(issues.len(), 5, "{issues:#?}");
    }

    #[test]
    fn matching_host_routes_win_then_the_longest_prefix() {
        let t = RouteTable::new(vec![
            route("app", Some("app.example.com"), "/"),
            route("admin", None, "/admin"),
            route("app-api", Some("app.example.com"), "/api"),
        ]);
        assert_eq!(found(&t, Some("app.example.com"), "/admin"), Some("app"));
        assert_eq!(
            found(&t, Some("app.example.com"), "/api/x"),
            Some("app-api")
        );
        assert_eq!(
            found(&t, Some("other.example.com"), "/admin/x"),
            Some("admin")
        );
        assert_eq!(found(&t, Some("other.example.com"), "/x"), None);
        // Insertion order must not matter for ties.
        for routes in [
            vec![
                route("hostless", None, "/a"),
                route("hosted", Some("h"), "/a"),
            ],
            vec![
                route("hosted", Some("h"), "/a"),
                route("hostless", None, "/a"),
            ],
        ] {
            let t = RouteTable::new(routes);
            assert_eq!(found(&t, Some("h"), "/a/b"), Some("hosted"));
            assert_eq!(found(&t, Some("x"), "/a/b"), Some("hostless"));
        }
    }

    #[test]
    fn public_paths() {
        let mut r = route("r", None, "/");
        r.public = vec![
            "/healthz".to_owned(),
            "/static/".to_owned(),
            "/api/ping".to_owned(),
        ];
        for (path, want) in [
            ("/healthz", true),
            ("/healthz/", true),
            ("/healthz/deep", true),
            ("/healthzz", false),
            ("/healthz;x", false),
            ("/static/", true),
            ("/static/app.js", true),
            ("/static", false),
            ("/staticfoo", false),
            ("/api/ping", true),
            ("/api", false),
            ("/api/pingx", false),
            ("/", false),
            ("/HEALTHZ", false),
        ] {
            assert_eq!(r.is_public(path), want, "{path}");
        }
    }

    #[test]
    fn normalized_tricks_cannot_reach_a_protected_prefix() {
        let t = valid(
            r#"
routes:
  - name: site
    public: [/public/]
  - name: admin
    path_prefix: /admin
    allow: { users: [lisi] }
"#,
        );
        for raw in [
            "/public/../admin",
            "/admin%2F..",
            "//admin",
            "/public/%2e%2e/admin/x",
            "/public%2F..%2Fadmin",
        ] {
            let path = normalize_path(raw).unwrap();
            let r = t.find(Some("gate.example.com"), &path).unwrap();
            if path.starts_with("/admin") {
                assert_eq!(r.name, "admin", "{raw} → {path}");
            }
            assert!(!r.is_public(&path), "{raw} → {path} must not be public");
        }
        // Routing is exact: /ADMIN goes to the site's upstream; but the admin policy guards it
        // (an upstream may ignore case), and it is not public.
        let r = t.find(None, "/ADMIN").unwrap();
        assert_eq!(r.name, "site");
        let res = t.resolve(None, "/ADMIN").unwrap();
        assert_eq!(res.route.name, "site");
        assert!(!res.public);
        assert_eq!(
            res.also.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["admin"]
        );
    }

    /// Exact route name, public, and the names of the other guarding routes.
    fn resolved(t: &RouteTable, host: Option<&str>, path: &str) -> (String, bool, Vec<String>) {
        let r = t
            .resolve(host, path)
            .unwrap_or_else(|| panic!("{path}: no route"));
        let also = r.also.iter().map(|r| r.name.clone()).collect();
        (r.route.name.clone(), r.public, also)
    }

    #[test]
    fn every_reading_of_the_path_is_guarded() {
        let t = valid(
            r#"
routes:
  - name: site
    public: [/static/, /healthz]
  - name: admin
    path_prefix: /admin
    allow: { users: [lisi] }
"#,
        );
        assert_eq!(
            t.views.len(),
            1,
            "every prefix and entry reads only as itself"
        );
        for path in [
            "/ADMIN",
            "/Admin/x",
            "/admin.",
            "/admin.%20./x",
            "/admin%20",
            "/admin%3Bx",
            "/admin%3Bx/y",
            "/aDmIn;x",
            "/ADMIN/",
            "/;x/admin",
        ] {
            let (route, public, also) = resolved(&t, None, path);
            assert_eq!(
                (route.as_str(), public, also),
                ("site", false, vec!["admin".to_owned()]),
                "{path}"
            );
            assert_eq!(
                found(&t, None, path),
                Some("site"),
                "{path}: routed exactly"
            );
        }
        for (path, route) in [
            ("/admin", "admin"),
            ("/admin;x", "admin"),
            ("/admin/X", "admin"),
            ("/x", "site"),
            ("/administrator", "site"),
            ("/administrator.", "site"),
            ("/ADMINISTRATOR", "site"),
            ("/x/admin", "site"),
        ] {
            let (got, _, also) = resolved(&t, None, path);
            assert_eq!(
                (got.as_str(), also),
                (route, Vec::<String>::new()),
                "{path}"
            );
        }
        // The host is not folded, and only routes for the request's host are candidates.
        assert_eq!(
            resolved(&t, Some("GATE.example.com:8443"), "/ADMIN").2,
            ["admin"]
        );
    }

    #[test]
    fn a_path_is_public_only_under_every_reading() {
        let t = valid(
            r#"
routes:
  - name: site
    public: [/static/, /healthz]
  - name: admin
    path_prefix: /admin
    allow: { users: [lisi] }
"#,
        );
        for (path, want) in [
            ("/static/x", true),
            ("/static/X", true),
            ("/static/x.", true),
            ("/static/x;v=1", true),
            ("/healthz", true),
            ("/healthz/", true),
            // The exact path is not public: no reading can make it so.
            ("/STATIC/x", false),
            ("/Static/x", false),
            ("/static./x", false),
            ("/static%20/x", false),
            ("/static;x/y", false),
            ("/healthz.", false),
            ("/HEALTHZ", false),
            ("/healthz%3Bx", false),
        ] {
            assert_eq!(resolved(&t, None, path).1, want, "{path}");
        }
    }

    #[test]
    fn prefixes_and_entries_compare_folded_with_folded() {
        let t = valid(
            r#"
routes:
  - name: site
    public: [/Pub/]
  - name: admin
    path_prefix: /Admin
    allow: { users: [lisi] }
  - name: hr
    host: hr.example.com
    path_prefix: /App
"#,
        );
        assert!(t.views.len() > 1);
        assert_eq!(t.affecting, Fold::CASE);
        assert_eq!(
            resolved(&t, None, "/Admin/x"),
            ("admin".into(), false, vec![])
        );
        for path in ["/admin", "/admin/x", "/ADMIN", "/admin."] {
            assert_eq!(
                resolved(&t, None, path),
                ("site".into(), false, vec!["admin".into()]),
                "{path}"
            );
        }
        assert_eq!(resolved(&t, None, "/x"), ("site".into(), false, vec![]));
        // Public: `/Pub/x` is public exactly and under every reading; `/pub/x` is not exact.
        assert!(resolved(&t, None, "/Pub/x").1);
        assert!(!resolved(&t, None, "/pub/x").1);
        // Host routes stay with their host: on it, `/app` goes to the host-less route exactly,
        // and `/App`'s policy guards it too; on another host that route is no candidate.
        assert_eq!(
            resolved(&t, Some("hr.example.com"), "/App/x"),
            ("hr".into(), false, vec![])
        );
        assert_eq!(
            resolved(&t, Some("hr.example.com"), "/app"),
            ("site".into(), false, vec!["hr".into()])
        );
        assert_eq!(resolved(&t, Some("other"), "/app").2, Vec::<String>::new());
    }

    mod readings {
        use super::*;
        use crate::proxy::fold::readings;
        use proptest::prelude::*;

        const PIECES: &[&str] = &[
            "/", "admin", "ADMIN", "Admin", "api", "API", "static", "Static", "reports", ".",
            "%2e", "%20", ";x", "%3Bx", "%3bv=1", "x", "..", "%2f",
        ];

        fn table() -> RouteTable {
            let mut site = route("site", None, "/");
            site.public = vec!["/static/".to_owned(), "/healthz".to_owned()];
            RouteTable::new(vec![
                site,
                route("admin", None, "/admin"),
                route("admin-api", None, "/admin/api"),
                route("reports", None, "/static/reports"),
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// The security property itself: whatever reading an upstream applies, the route it
            /// lands on guards the request, and nothing is public that some reading is not.
            #[test]
            fn every_reading_lands_on_a_guard(
                pieces in prop::collection::vec(prop::sample::select(PIECES), 0..10)
            ) {
                let raw = format!("/{}", pieces.concat());
                let Ok(path) = normalize_path(&raw) else {
                    return Ok(());
                };
                let t = table();
                let res = t.resolve(None, &path).expect("/ covers everything");
                prop_assert_eq!(&res.route.name, &t.find(None, &path).unwrap().name);
                let guards: Vec<&str> = res.guards().map(|r| r.name.as_str()).collect();
                for reading in readings(&path) {
                    let r = t.find(None, &reading).expect("/ covers everything");
                    prop_assert!(
                        guards.contains(&r.name.as_str()),
                        "{} read as {} lands on {}, guards {:?}", path, reading, r.name, guards
                    );
                    if res.public {
                        prop_assert!(r.is_public(&reading), "{} public, {} is not", path, reading);
                    }
                }
            }
        }
    }

    #[test]
    fn ties_under_a_reading_all_guard() {
        // Not possible through validation (see below), but the table must not pick one.
        let t = RouteTable::new(vec![
            route("root", None, "/"),
            route("lower", None, "/admin"),
            route("upper", None, "/ADMIN"),
        ]);
        let (_, _, also) = resolved(&t, None, "/Admin");
        assert_eq!(also, ["lower", "upper"]);
    }

    #[test]
    fn prefixes_equal_under_folding_are_refused() {
        let (_, issues) = run(r#"
routes:
  - path_prefix: /admin
  - path_prefix: /Admin
  - path_prefix: /admin.
  - host: a.example.com
    path_prefix: /Admin
  - path_prefix: /app%3Bv
  - path_prefix: /app
"#);
        assert_issue(
            &issues,
            "routes[1].path_prefix: reads the same as routes[0].path_prefix to upstreams that ignore case",
        );
        assert_issue(
            &issues,
            "routes[2].path_prefix: reads the same as routes[0]",
        );
        assert_issue(
            &issues,
            "routes[5].path_prefix: reads the same as routes[4]",
        );
        assert_eq!(
            issues.len(),
            3,
            "another host is another place: {issues:#?}"
        );
    }

    #[test]
    fn no_routes_means_one_default_route() {
        let (routes, issues) = run("{}");
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!((r.path_prefix.as_str(), r.host.as_deref()), ("/", None));
        assert_eq!(r.upstream, default_upstream());
        assert_eq!(r.policy, Policy::members_of(Some("dingcorp".to_owned())));

        let (routes, issues) = run_with("{}", None, Some("dingcorp"));
        assert!(routes.is_empty());
        assert_issue(&issues, "upstream: missing");
        let (_, issues) = run("routes: []");
        assert_issue(&issues, "routes: is empty");
    }

    #[test]
    fn full_route_is_read() {
        let (routes, issues) = run_with(
            r#"
routes:
  - name: 管理后台
    host: Admin.Example.com.
    path_prefix: /admin
    upstream: http://10.0.0.2:9000/base
    public: [/admin/health, /admin/static/]
    allow:
      users: ["0123", lisi, 0456, 789]
      departments: [100, "200"]
      admins: true
      corp: dingcorp
    deny:
      users: zhangsan
      departments: 300
      admins: "false"
  - path_prefix: /中文
  - host: hr.example.com
"#,
            None,
            None,
        );
        assert!(issues.iter().all(|i| i.starts_with("routes[1].upstream") || i.starts_with("routes[2].upstream")), "{issues:#?}");
        assert_eq!(issues.len(), 2, "{issues:#?}");
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(r.name, "管理后台");
        assert_eq!(r.host.as_deref(), Some("admin.example.com"));
        assert_eq!(r.upstream.as_str(), "http://10.0.0.2:9000/base");
        assert_eq!(r.public, ["/admin/health", "/admin/static/"]);
        assert_eq!(r.policy.corp.as_deref(), Some("dingcorp"));
        assert_eq!(r.policy.allow.users, ["0123", "lisi", "0456", "789"]);
        assert_eq!(r.policy.allow.departments, [100, 200]);
        assert!(r.policy.allow.admins);
        assert_eq!(r.policy.deny.users, ["zhangsan"]);
        assert_eq!(r.policy.deny.departments, [300]);
        assert!(!r.policy.deny.admins);

        let (routes, issues) = run(r#"
routes:
  - path_prefix: /中文
  - host: hr.example.com
  - host: hr.example.com
    path_prefix: /x
"#);
        assert!(issues.is_empty(), "{issues:#?}");
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["/%E4%B8%AD%E6%96%87", "hr.example.com/", "hr.example.com/x"]
        );
        assert_eq!(
            routes[0].upstream,
            default_upstream(),
            "falls back to the top-level upstream"
        );
        assert_eq!(
            routes[1].policy.corp.as_deref(),
            Some("dingcorp"),
            "corp defaults to dingtalk.corp_id"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let (_, issues) = run(r#"
routes:
  - path_prefix: admin
    upstrem: http://typo
  - path_prefix: /a//b
    upstream: ftp://x
  - path_prefix: /admin/
    host: https://app.example.com
  - path_prefix: /_dinggate/x
    host: "app.example.com:8443"
  - path_prefix: /docs
    public: [/docs/../x, /other, /docs%00, 5]
    allow:
      departments: [0, -1, abc, 1.5]
      users: [1.5, true, ""]
      admins: maybe
      groups: [x]
    deny:
      corp: dingcorp
      admin: true
  - path_prefix: /docs
  - path_prefix: /dup-host
    host: "*.example.com"
  - name: docs-again
    path_prefix: /%2e%2e/etc
  - name: n
    path_prefix: /n1
    allow: { corp: othercorp }
  - name: n
    path_prefix: /n2
  - path_prefix: /bad%ZZ
  - host: 例子.中国
  - host: -bad-.example.com
"#);
        for want in [
            "routes[0].path_prefix: must start with /",
            "routes[0].upstrem: unknown key",
            "routes[1].path_prefix: write it in normalized form: /a/b",
            "routes[1].upstream: not an http(s) URL",
            "routes[2].path_prefix: write it without the trailing slash (/admin)",
            "routes[2].host: must be a hostname only, without a scheme",
            "routes[3].path_prefix: is inside the gateway's own prefix /_dinggate",
            "routes[3].host: must be a hostname without a port",
            "routes[4].public[0]: write it in normalized form: /x",
            "routes[4].public[1]: is outside this route's path_prefix /docs",
            "routes[4].public[2]: it contains a control character",
            "routes[4].public[3]: must be a path",
            "routes[4].allow.departments[0]: must be a department id",
            "routes[4].allow.departments[1]: must be a department id",
            "routes[4].allow.departments[2]: must be a department id",
            "routes[4].allow.departments[3]: must be a department id",
            "routes[4].allow.users[0]: must be a userid or unionId",
            "routes[4].allow.users[1]: must be a userid or unionId",
            "routes[4].allow.users[2]: must be a userid or unionId",
            "routes[4].allow.admins: must be true or false",
            "routes[4].allow.groups: unknown key",
            "routes[4].deny.admin: unknown key",
            "routes[4].deny.corp: not allowed",
            "routes[5].path_prefix: routes[4] already has the same host and path_prefix",
            "routes[6].host: wildcards are not supported",
            "routes[7].path_prefix: write it in normalized form: /etc",
            "routes[8].allow.corp: differs from dingtalk.corp_id (dingcorp)",
            "routes[9].name: routes[8] has the same name",
            "routes[10].path_prefix: it has an invalid percent-encoding",
            "routes[11].host: use the ASCII (punycode",
            "routes[12].host: not a valid hostname",
        ] {
            assert_issue(&issues, want);
        }
        assert_eq!(issues.len(), 31, "{issues:#?}");
    }

    #[test]
    fn public_must_stay_inside_the_prefix_and_out_of_the_gateway() {
        let (routes, issues) = run(r#"
routes:
  - path_prefix: /app
    public: [/app, /app/, /app/x/, /application]
  - public: [/_dinggate/healthz, /_dinggate]
"#);
        assert_issue(
            &issues,
            "routes[0].public[3]: is outside this route's path_prefix /app",
        );
        assert_issue(
            &issues,
            "routes[1].public[0]: is inside the gateway's own prefix",
        );
        assert_issue(
            &issues,
            "routes[1].public[1]: is inside the gateway's own prefix",
        );
        assert_eq!(issues.len(), 3, "{issues:#?}");
        assert_eq!(routes[0].public, ["/app", "/app/", "/app/x/"]);
    }

    #[test]
    fn any_corp_gateway_may_require_a_corp_per_route() {
        let (routes, issues) = run_with(
            r#"
routes:
  - path_prefix: /open
  - path_prefix: /corp
    allow: { corp: dingcorp }
"#,
            Some(&default_upstream()),
            None,
        );
        assert!(issues.is_empty(), "{issues:#?}");
        assert_eq!(routes[0].policy.corp, None);
        assert_eq!(routes[1].policy.corp.as_deref(), Some("dingcorp"));
    }

    #[test]
    fn describe_lists_routes_and_rules() {
        let t = valid(
            r#"
routes:
  - name: wiki
    public: [/healthz, /static/]
  - name: admin
    host: admin.example.com
    path_prefix: /admin
    upstream: http://127.0.0.1:3001
    allow:
      users: [lisi]
      departments: [100]
      admins: true
    deny:
      departments: [300]
"#,
        );
        let d = t.describe();
        let want = "2 route(s); routes for the request's host are tried first, then host-less ones; within each, the longest matching path_prefix wins:
  wiki: any host, paths / and everything below → http://127.0.0.1:8080/
    allowed: members of corp dingcorp
    public (no sign-in, identity headers still stripped): /healthz, /static/
  admin: admin.example.com, paths /admin and below → http://127.0.0.1:3001/
    allowed: members of corp dingcorp who are: user lisi, or in department 100 or below, or an organization administrator; except: in department 300 or below
";
        assert_eq!(d, want);
        assert!(t.routes()[1].policy.needs_directory());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let source = include_str!("routes.rs");
        let yaml: String = source
            .lines()
            .map(str::trim_start)
            .skip_while(|l| *l != "/// ```yaml")
            .skip(1)
            .take_while(|l| *l != "/// ```")
            .map(|l| format!("{}\n", l.strip_prefix("/// ").unwrap_or("")))
            .collect();
        assert!(yaml.starts_with("routes:"), "{yaml}");
        let t = valid(&yaml);
        let names: Vec<&str> = t.routes().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["wiki", "admin", "hr.example.com/"]);
        assert_eq!(found(&t, Some("gate"), "/admin/users"), Some("admin"));
        // The host route owns its whole host, /admin included.
        assert_eq!(
            found(&t, Some("hr.example.com"), "/admin"),
            Some("hr.example.com/")
        );
        assert_eq!(
            found(&t, Some("hr.example.com"), "/x"),
            Some("hr.example.com/")
        );
        assert!(t.routes()[0].is_public("/static/app.css"));
    }

    #[test]
    fn routes_serialize_for_effective_config_output() {
        let t = valid("routes:\n  - name: x\n    path_prefix: /x\n");
        let v = serde_json::to_value(t.routes()).unwrap();
        assert_eq!(v[0]["upstream"], "http://127.0.0.1:8080/");
        assert_eq!(v[0]["path_prefix"], "/x");
        assert_eq!(v[0]["policy"]["corp"], "dingcorp");
    }
}
