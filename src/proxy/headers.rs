//! Pure header operations for proxied requests: hop-by-hop removal, identity-header protection,
//! cookie stripping, forwarding headers and request classification.

use std::collections::HashSet;
use std::net::IpAddr;

use http::header::{
    ACCEPT, CONNECTION, COOKIE, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::config::IdentityHeaders;
use crate::identity::Identity;
use crate::proxy::names::{
    HTTP2_SETTINGS, KEEP_ALIVE, PROXY_CONNECTION, SEC_FETCH_DEST, SEC_FETCH_MODE, STRIPPED_NAMES,
    STRIPPED_PREFIXES, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUESTED_WITH,
};
use crate::session::cookie::cookie_pairs;

/// Header names that are connection-specific by definition (RFC 9110 §7.6.1, RFC 9112, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection` that clients still send, and h2c's
/// `HTTP2-Settings`, which only means something on the connection it was sent on).
/// `Trailer` is deliberately absent: it announces end-to-end trailer fields (gRPC-web needs them).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    HTTP2_SETTINGS,
];

/// Removes hop-by-hop headers before forwarding: the fixed list above and every header named in
/// any `Connection` header (RFC 9110 §7.6.1).
///
/// Call [`is_upgrade_request`] first if upgrades are to be bridged: this removes `Connection` and
/// `Upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(comma_tokens)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Comma-separated tokens of a header value, trimmed; non-UTF-8 values yield nothing.
fn comma_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    std::str::from_utf8(v.as_bytes())
        .unwrap_or("")
        .split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .filter(|t| !t.is_empty())
}

/// The canonical form used to compare header names: ASCII-lowercase with `_` turned into `-`.
///
/// Many upstream stacks (CGI/WSGI, PHP, nginx with `underscores_in_headers`) read `X_User` and
/// `X-User` as the same header, so protection must treat them as the same name.
pub fn normalize_header_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// One entry of a strip list: an exact header name or a name prefix, both in the form
/// [`normalize_header_name`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripRule {
    /// Strip this name (`X-Internal-User`).
    Exact(String),
    /// Strip every name starting with this (`X-Internal-*`).
    Prefix(String),
}

/// Why a `headers.strip_extra` entry was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripRuleError {
    /// Empty, or a bare `*` (which would strip every header).
    #[error("empty, or a bare `*` (that would strip every header)")]
    Empty,
    /// Not an HTTP header name (RFC 9110 token), ignoring one trailing `*`.
    #[error("not a valid HTTP header name (a trailing `*` makes it a prefix)")]
    Invalid,
    /// A `*` that is not the last character.
    #[error("`*` is only allowed as the last character (a prefix)")]
    InnerWildcard,
    /// It would strip `Host`, `Content-Length` or `Transfer-Encoding`, which the gateway needs
    /// to forward the request.
    #[error("would strip Host, Content-Length or Transfer-Encoding, which forwarding needs")]
    Essential,
}

/// Names that `strip_extra` may not remove: the request could not be forwarded intact.
const ESSENTIAL: &[&str] = &["host", "content-length", "transfer-encoding"];

impl StripRule {
    /// Parses `X-Name` (exact) or `X-Prefix-*` (prefix); case and `_`/`-` do not matter.
    pub fn parse(s: &str) -> Result<StripRule, StripRuleError> {
        let s = s.trim();
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.is_empty() {
            return Err(StripRuleError::Empty);
        }
        if body.contains('*') {
            return Err(StripRuleError::InnerWildcard);
        }
        if HeaderName::from_bytes(body.as_bytes()).is_err() {
            return Err(StripRuleError::Invalid);
        }
        let norm = normalize_header_name(body);
        let rule = if prefix {
            StripRule::Prefix(norm)
        } else {
            StripRule::Exact(norm)
        };
        if ESSENTIAL.iter().any(|e| rule.matches(e)) {
            return Err(StripRuleError::Essential);
        }
        Ok(rule)
    }

    /// Whether the (normalized) `name` falls under this rule.
    fn matches(&self, name: &str) -> bool {
        match self {
            StripRule::Exact(n) => n == name,
            StripRule::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl std::fmt::Display for StripRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StripRule::Exact(n) => f.write_str(n),
            StripRule::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The set of header names that only the gateway may send upstream.
#[derive(Debug, Clone)]
pub struct ProtectedHeaders {
    names: HashSet<String>,
    prefixes: Vec<String>,
    /// The first two bytes (normalized) of every name and prefix: a name starting otherwise
    /// (`accept`, `user-agent`, `sec-fetch-mode`, ...) is not protected, decided without hashing.
    /// `None` when some entry is shorter than two bytes (`strip_extra: ["x*"]`).
    heads: Option<Vec<[u8; 2]>>,
}

/// The first two bytes of `name` as [`normalize_header_name`] writes them, if it has two.
fn head(name: &str) -> Option<[u8; 2]> {
    let norm = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    match name.as_bytes() {
        [a, b, ..] => Some([norm(*a), norm(*b)]),
        _ => None,
    }
}

impl ProtectedHeaders {
    /// Builds the set from the configured identity header names and `headers.strip_extra`.
    /// The built-in lists ([`STRIPPED_NAMES`], [`STRIPPED_PREFIXES`]) are always included.
    /// All comparisons use [`normalize_header_name`].
    pub fn new<'a>(identity: impl IntoIterator<Item = &'a str>, extra: &[StripRule]) -> Self {
        let mut names: HashSet<String> = identity
            .into_iter()
            .map(normalize_header_name)
            .chain(STRIPPED_NAMES.iter().map(|n| n.as_str().to_owned()))
            .collect();
        let mut prefixes: Vec<String> = STRIPPED_PREFIXES.iter().map(|p| (*p).to_owned()).collect();
        for rule in extra {
            match rule {
                StripRule::Exact(n) => {
                    names.insert(n.clone());
                }
                StripRule::Prefix(p) => prefixes.push(p.clone()),
            }
        }
        let heads = names
            .iter()
            .chain(&prefixes)
            .map(|n| head(n))
            .collect::<Option<Vec<[u8; 2]>>>()
            .map(|mut heads| {
                heads.sort_unstable();
                heads.dedup();
                heads
            });
        Self {
            names,
            prefixes,
            heads,
        }
    }

    /// Whether `name` (any case, `_` or `-`) is protected.
    pub fn is_protected(&self, name: &str) -> bool {
        // A name whose first two bytes start no protected name or prefix is not protected.
        if let (Some(heads), Some(h)) = (&self.heads, head(name)) {
            if !heads.contains(&h) {
                return false;
            }
        }
        // Names parsed by hyper are already lower case, so only `_` forces a copy.
        let n: std::borrow::Cow<'_, str> =
            if name.bytes().any(|b| b == b'_' || b.is_ascii_uppercase()) {
                normalize_header_name(name).into()
            } else {
                name.into()
            };
        self.names.contains(n.as_ref()) || self.prefixes.iter().any(|p| n.starts_with(p.as_str()))
    }
}

/// Removes every client-sent copy of a protected header, whatever its spelling, and returns how
/// many header lines were removed.
pub fn strip_protected(headers: &mut HeaderMap, protected: &ProtectedHeaders) -> usize {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| protected.is_protected(name.as_str()))
        .cloned()
        .collect();
    doomed
        .into_iter()
        .map(|name| match headers.entry(name) {
            http::header::Entry::Occupied(e) => e.remove_entry_mult().1.count(),
            http::header::Entry::Vacant(_) => 0,
        })
        .sum()
}

/// Removes the gateway's own cookies (`is_ours(name)`) from the request.
///
/// Pairs come from [`cookie_pairs`], the same tokenizer the session lookup reads, so every
/// cookie the gateway reads is a cookie it strips; a name that is not UTF-8 is never one of
/// ours (our names are ASCII), and a header that is not UTF-8 is tokenized like any other.
/// All `Cookie` headers (HTTP/2 clients may send one per cookie) are merged into a single header,
/// as RFC 9113 §8.2.3 requires before forwarding to HTTP/1.1, with the remaining `name=value`
/// pairs kept byte-for-byte and in order. The header is removed when nothing remains. A single
/// header from which nothing is dropped is left untouched.
pub fn strip_cookies(headers: &mut HeaderMap, is_ours: impl Fn(&str) -> bool) {
    let count = headers.get_all(COOKIE).iter().count();
    let mut dropped = false;
    let mut kept: Vec<&[u8]> = Vec::new();
    for pair in cookie_pairs(headers) {
        if std::str::from_utf8(pair.name).is_ok_and(&is_ours) {
            dropped = true;
        } else {
            kept.push(pair.raw);
        }
    }
    if count == 0 || (count == 1 && !dropped) {
        return;
    }
    let merged = (!kept.is_empty()).then(|| kept.join(&b"; "[..]));
    headers.remove(COOKIE);
    // The pairs come from valid header values and "; " is valid, so this cannot fail; if it ever
    // did, dropping the header is the safe outcome (our cookies must not pass).
    if let Some(Ok(v)) = merged.map(HeaderValue::from_maybe_shared) {
        headers.insert(COOKIE, v);
    }
}

/// Bytes escaped in identity header values: controls (incl. tab and DEL) and `%`. Non-ASCII is
/// always escaped by `utf8_percent_encode`.
const IDENTITY_VALUE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Encodes an identity value (e.g. a Chinese display name) for an HTTP header.
///
/// Non-ASCII (as UTF-8), control characters, `%`, and leading/trailing spaces (which HTTP parsers
/// would trim) are percent-encoded; other printable ASCII is kept, so `decodeURIComponent` or
/// `urllib.parse.unquote` on the upstream side returns the original string. `+` is kept as is
/// (neither decoder turns it into a space).
pub fn identity_header_value(value: &str) -> HeaderValue {
    let inner = value.trim_matches(' ');
    let lead = value.len() - value.trim_start_matches(' ').len();
    let trail = if inner.is_empty() {
        0
    } else {
        value.len() - value.trim_end_matches(' ').len()
    };
    let mut out = String::with_capacity(value.len() + 8);
    out.push_str(&"%20".repeat(lead));
    out.extend(utf8_percent_encode(inner, IDENTITY_VALUE_ESCAPES));
    out.push_str(&"%20".repeat(trail));
    // Every byte is now visible ASCII or an inner space, which HeaderValue accepts.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The identity headers of one signed-in person, encoded once (when the session is verified)
/// and inserted as they are on every request of the session: a clone of a `HeaderValue` only
/// bumps a reference count.
#[derive(Debug, Clone, Default)]
pub struct IdentityValues(Vec<(HeaderName, HeaderValue)>);

impl IdentityValues {
    /// The configured identity headers for `id`, values encoded by [`identity_header_value`].
    /// Headers whose value is unknown (no e-mail, no directory data) are left out.
    pub fn new(names: &IdentityHeaders, id: &Identity) -> Self {
        let mut out = Vec::with_capacity(9);
        let mut set = |name: &Option<HeaderName>, value: Option<&str>| {
            if let (Some(name), Some(value)) = (name, value) {
                out.push((name.clone(), identity_header_value(value)));
            }
        };
        set(&names.user, Some(&id.union_id));
        set(&names.email, id.email.as_deref());
        set(&names.preferred_username, Some(&id.name));
        set(&names.union_id, Some(&id.union_id));
        set(&names.name, Some(&id.name));
        set(&names.corp_id, id.corp_id.as_deref());
        if let Some(e) = &id.enterprise {
            set(&names.user_id, Some(&e.user_id));
            let departments = e
                .departments
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            set(&names.departments, Some(&departments));
            set(&names.title, e.title.as_deref());
        }
        Self(out)
    }

    /// How many headers [`IdentityValues::apply`] sets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets these headers on `headers`, replacing any value there (call after client copies
    /// were stripped).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Sets `X-Forwarded-For` (the client address), `X-Forwarded-Proto` and, when known,
/// `X-Forwarded-Host`, replacing any existing value.
///
/// Call after [`strip_protected`], so that every `X-Forwarded-*` header upstream sees is the
/// gateway's own. `proto` is `http` or `https` (the scheme of `public_url`).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // The value cannot be invalid (digits, hex, `.` and `:`); if it ever were, no address is
    // sent rather than an empty or made-up one (the client's copy was stripped already).
    match ip_header_value(client_ip) {
        Some(v) => headers.insert(X_FORWARDED_FOR, v),
        None => headers.remove(X_FORWARDED_FOR),
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// An address as a header value; IPv4 without the formatting machinery (it is on every
/// proxied request: `to_string` cost about 2,700 instructions).
fn ip_header_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut out = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&out[..len]).ok()
}

/// Whether an unauthenticated request is a browser navigation that should be redirected to the
/// login page (`true`), rather than answered with 401 (`false`).
///
/// Requires all of: `GET` or `HEAD`; no `X-Requested-With: XMLHttpRequest`; `Sec-Fetch-Mode`
/// absent or `navigate`; `Sec-Fetch-Dest` absent or `document`/`iframe`/`frame`; and an `Accept`
/// header listing `text/html` or `application/xhtml+xml` with a non-zero quality. So `curl`
/// (`Accept: */*`), `fetch()` and `Accept: application/json` clients get a 401.
pub fn wants_html(headers: &HeaderMap, method: &Method) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    let header_is = |name: HeaderName, pred: &dyn Fn(&str) -> bool| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().map(|s| pred(s.trim())).unwrap_or(true))
    };
    if header_is(X_REQUESTED_WITH, &|s| {
        s.eq_ignore_ascii_case("xmlhttprequest")
    }) {
        return false;
    }
    if header_is(SEC_FETCH_MODE, &|s| !s.eq_ignore_ascii_case("navigate")) {
        return false;
    }
    if header_is(SEC_FETCH_DEST, &|s| {
        !["document", "iframe", "frame"]
            .iter()
            .any(|d| s.eq_ignore_ascii_case(d))
    }) {
        return false;
    }
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(accepts_html)
}

/// Whether one `Accept` member is `text/html` or `application/xhtml+xml` with `q` > 0.
fn accepts_html(member: &str) -> bool {
    let mut parts = member.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("text/html")
        && !media.eq_ignore_ascii_case("application/xhtml+xml")
    {
        return false;
    }
    for param in parts {
        if let Some((k, v)) = param.split_once('=') {
            if k.trim().eq_ignore_ascii_case("q") {
                return v.trim().parse::<f32>().is_ok_and(|q| q > 0.0);
            }
        }
    }
    true
}

/// For an HTTP/1.1 WebSocket upgrade (`Connection` lists `upgrade`, `Upgrade: websocket`),
/// returns the `Upgrade` value. Call before [`remove_hop_by_hop`].
///
/// Only WebSocket is bridged: after a 101 the connection becomes a raw tunnel that no per-request
/// check sees again, and other protocols (h2c above all) would carry new requests through it.
/// Any other `Upgrade` is dropped as a hop-by-hop header and the request forwarded plainly.
pub fn is_upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(comma_tokens)
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    headers
        .get(UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_fixed_list_and_connection_listed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "Another-Hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic xxx"),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ("x-secret-hop", "1"),
            ("another-hop", "2"),
            ("accept", "text/html"),
            ("cookie", "a=b"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        // `Trailer` is end-to-end: it announces trailer fields the recipient needs.
        assert_eq!(left, ["accept", "cookie", "trailer"]);
    }

    #[test]
    fn hop_by_hop_ignores_garbage_tokens() {
        let mut h = map(&[("connection", " , bad header name ,,"), ("x-a", "1")]);
        remove_hop_by_hop(&mut h);
        assert!(h.contains_key("x-a"));
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn normalize_names() {
        assert_eq!(
            normalize_header_name("X_Forwarded_User"),
            "x-forwarded-user"
        );
        assert_eq!(normalize_header_name("Remote-USER"), "remote-user");
    }

    #[test]
    fn protected_names_and_builtin_prefixes() {
        let p = ProtectedHeaders::new(["X-Auth-Request-User", "remote_user"], &[]);
        for n in [
            "x-auth-request-user",
            "X_AUTH_REQUEST_USER",
            "Remote-User",
            "REMOTE_USER",
            "X-DingTalk-UnionId",
            "x_dingtalk_name",
            "X-Forwarded-For",
            "X_Forwarded_User",
            "Forwarded",
            "X-Real-IP",
            "x_real_ip",
        ] {
            assert!(p.is_protected(n), "{n} should be protected");
        }
        for n in [
            "x-auth-request",
            "remote-user-agent",
            "accept",
            "x-dingtalkish",
            "forwarded-x",
        ] {
            assert!(!p.is_protected(n), "{n} should not be protected");
        }
    }

    #[test]
    fn default_strip_list_other_products_and_overrides() {
        let p = ProtectedHeaders::new(std::iter::empty(), &[]);
        for n in [
            "Remote-User",
            "remote_user",
            "X-Remote-User",
            "X_AUTH_REQUEST_EMAIL",
            "x-auth-request-groups",
            "X-Original-URL",
            "x_rewrite_url",
            "X-Original-URI",
            "True-Client-IP",
            "X-Client-IP",
            "Client-IP",
            "X-User",
            "X-Email",
            "Remote-Groups",
            "X-Authenticated-User",
            "X-Auth-User",
            "CF-Connecting-IP",
            "Fastly-Client-IP",
            "X-Cluster-Client-IP",
            "X-Original-Host",
            "X-Forwarded-Server",
            "X-Forwarded-Groups",
            "X-Pomerium-Jwt-Assertion",
            "Cf-Access-Authenticated-User-Email",
            "X-Amzn-Oidc-Identity",
            "X-Goog-Authenticated-User-Email",
            "X-MS-CLIENT-PRINCIPAL-NAME",
            "X-Vouch-User",
        ] {
            assert!(p.is_protected(n), "{n} should be stripped by default");
        }
        // Deliberately kept: the gateway decides nothing by method, and APIs use these.
        for n in [
            "X-HTTP-Method-Override",
            "X-HTTP-Method",
            "X-Method-Override",
            "User-Agent",
            "Authorization",
            "X-Request-Id",
            "X-Userinfo-Extra",
            "X-Users",
        ] {
            assert!(!p.is_protected(n), "{n} should pass");
        }
    }

    #[test]
    fn strip_rule_parsing() {
        assert_eq!(
            StripRule::parse(" X_Internal_User "),
            Ok(StripRule::Exact("x-internal-user".into()))
        );
        assert_eq!(
            StripRule::parse("X-Internal-*"),
            Ok(StripRule::Prefix("x-internal-".into()))
        );
        assert_eq!(StripRule::parse("*"), Err(StripRuleError::Empty));
        assert_eq!(StripRule::parse(""), Err(StripRuleError::Empty));
        assert_eq!(
            StripRule::parse("X-*-User"),
            Err(StripRuleError::InnerWildcard)
        );
        assert_eq!(
            StripRule::parse("X-A**"),
            Err(StripRuleError::InnerWildcard)
        );
        assert_eq!(StripRule::parse("Bad Name"), Err(StripRuleError::Invalid));
        assert_eq!(StripRule::parse("X-Na:me"), Err(StripRuleError::Invalid));
        assert_eq!(StripRule::parse("Host"), Err(StripRuleError::Essential));
        assert_eq!(
            StripRule::parse("content_length"),
            Err(StripRuleError::Essential)
        );
        assert_eq!(
            StripRule::parse("Transfer-*"),
            Err(StripRuleError::Essential)
        );
        assert_eq!(
            StripRule::parse("X-Internal-*").unwrap().to_string(),
            "x-internal-*"
        );
    }

    #[test]
    fn strip_extra_exact_and_prefix() {
        let extra = [
            StripRule::parse("X-Tenant").unwrap(),
            StripRule::parse("X-Internal-*").unwrap(),
        ];
        let p = ProtectedHeaders::new(std::iter::empty(), &extra);
        for n in ["x-tenant", "X_TENANT", "X-Internal-User", "x_internal_role"] {
            assert!(p.is_protected(n), "{n}");
        }
        for n in ["x-tenants", "x-internal", "x-tenant-id"] {
            assert!(!p.is_protected(n), "{n}");
        }
    }

    #[test]
    fn one_byte_rules_are_never_skipped_by_the_two_byte_filter() {
        let extra = [
            StripRule::parse("Y*").unwrap(),
            StripRule::parse("q").unwrap(),
        ];
        let p = ProtectedHeaders::new(std::iter::empty(), &extra);
        for n in ["y", "yes", "Y-Anything", "y_user", "q", "Q"] {
            assert!(p.is_protected(n), "{n}");
        }
        for n in ["qq", "accept", "x"] {
            assert!(!p.is_protected(n), "{n}");
        }
        // Without short rules the filter applies, and still protects every spelling.
        let p = ProtectedHeaders::new(["X-Team-Lead"], &[]);
        for n in [
            "x-team-lead",
            "X_TEAM_LEAD",
            "x_Forwarded_User",
            "remote-user",
            "cf-access-jwt-assertion",
        ] {
            assert!(p.is_protected(n), "{n}");
        }
        for n in ["accept", "cookie", "referer", "x", ""] {
            assert!(!p.is_protected(n), "{n}");
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// Every protected name the property draws from: built-in, default list, configured
        /// identity names and `strip_extra` (exact and prefix).
        fn protected_bases() -> Vec<String> {
            let mut v: Vec<String> = STRIPPED_NAMES
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect();
            v.extend(STRIPPED_PREFIXES.iter().map(|p| format!("{p}tail")));
            v.extend(IDENTITY.iter().map(|n| (*n).to_owned()));
            v.push("x-tenant".into());
            v.push("x-internal-anything".into());
            v
        }

        const IDENTITY: &[&str] = &["X-Forwarded-User", "X-Company-Login", "Employee_Id"];

        fn protected() -> ProtectedHeaders {
            ProtectedHeaders::new(
                IDENTITY.iter().copied(),
                &[
                    StripRule::parse("X-Tenant").unwrap(),
                    StripRule::parse("x_internal_*").unwrap(),
                ],
            )
        }

        /// Re-spells `name`: each letter in either case, each `-` as `-` or `_`.
        fn respell(name: String) -> impl Strategy<Value = String> {
            let n = name.len();
            proptest::collection::vec(any::<(bool, bool)>(), n).prop_map(move |flips| {
                name.chars()
                    .zip(flips)
                    .map(|(c, (upper, underscore))| match c {
                        '-' | '_' if underscore => '_',
                        '-' | '_' => '-',
                        c if upper => c.to_ascii_uppercase(),
                        c => c.to_ascii_lowercase(),
                    })
                    .collect()
            })
        }

        fn any_protected_spelling() -> impl Strategy<Value = String> {
            proptest::sample::select(protected_bases()).prop_flat_map(respell)
        }

        fn unprotected_name() -> impl Strategy<Value = String> {
            "[a-zA-Z][a-zA-Z0-9_-]{0,24}"
                .prop_filter("not protected", |n| !protected().is_protected(n))
        }

        proptest! {
            #[test]
            fn no_protected_header_survives_and_others_all_do(
                bad in proptest::collection::vec(any_protected_spelling(), 1..8),
                good in proptest::collection::vec(unprotected_name(), 0..8),
            ) {
                let p = protected();
                let mut h = HeaderMap::new();
                for n in bad.iter().chain(&good) {
                    h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("v"));
                }
                strip_protected(&mut h, &p);
                for n in &bad {
                    prop_assert!(!h.contains_key(n.as_str()), "{} survived", n);
                }
                for n in &good {
                    prop_assert!(h.contains_key(n.as_str()), "{} was stripped", n);
                }
                // Nothing left is protected under any spelling.
                prop_assert!(h.keys().all(|k| !p.is_protected(k.as_str())));
            }
        }
    }

    #[test]
    fn strip_protected_every_spelling() {
        let p = ProtectedHeaders::new(["X-Forwarded-User", "X-Auth-Email"], &[]);
        // HeaderName lower-cases on parse; underscores survive as distinct names.
        let mut h = map(&[
            ("X_Forwarded_User", "mallory"),
            ("x-forwarded-user", "mallory"),
            ("X-FORWARDED-USER", "mallory"),
            ("x_auth_email", "m@evil"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("x-dingtalk-unionid", "forged"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("accept", "*/*"),
            ("x-other", "kept"),
        ]);
        let removed = strip_protected(&mut h, &p);
        assert_eq!(removed, 8);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-other"]);
        assert_eq!(strip_protected(&mut h, &p), 0);
    }

    fn cookie_values(h: &HeaderMap) -> Vec<&str> {
        h.get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn strip_cookies_single_header() {
        let mut h = map(&[("cookie", "a=1; _dinggate=tok; b=\"x y\";c=3")]);
        strip_cookies(&mut h, |n| n == "_dinggate");
        assert_eq!(cookie_values(&h), ["a=1; b=\"x y\"; c=3"]);
    }

    #[test]
    fn strip_cookies_across_headers_merges_in_order() {
        let mut h = map(&[
            ("cookie", "a=1"),
            ("cookie", "_dinggate=tok"),
            ("cookie", "b=2; _dinggate_state=s"),
            ("cookie", "c==weird=; d"),
        ]);
        strip_cookies(&mut h, |n| n == "_dinggate" || n.starts_with("_dinggate_"));
        assert_eq!(cookie_values(&h), ["a=1; b=2; c==weird=; d"]);
    }

    #[test]
    fn strip_cookies_removes_header_when_empty() {
        let mut h = map(&[("cookie", "_dinggate=tok"), ("cookie", " _dinggate=old ; ")]);
        strip_cookies(&mut h, |n| n == "_dinggate");
        assert!(!h.contains_key(COOKIE));
    }

    #[test]
    fn strip_cookies_untouched_when_not_ours() {
        let mut h = map(&[("cookie", "a=1;b=2")]);
        strip_cookies(&mut h, |n| n == "_dinggate");
        assert_eq!(cookie_values(&h), ["a=1;b=2"]);
        let mut empty = HeaderMap::new();
        strip_cookies(&mut empty, |_| true);
        assert!(empty.is_empty());
    }

    #[test]
    fn strip_cookies_keeps_non_utf8_pairs() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_bytes(b"n=\xe4\xb8; _dinggate=t; m=\xff").unwrap(),
        );
        strip_cookies(&mut h, |n| n == "_dinggate");
        assert_eq!(h.get(COOKIE).unwrap().as_bytes(), b"n=\xe4\xb8; m=\xff");
    }

    #[test]
    fn identity_value_round_trips_chinese() {
        for original in [
            "张三",
            "Zhang San",
            "李四 (Li Si) 100%",
            "a+b=c&d",
            "tab\there\nnewline",
            " padded ",
            "   ",
            "",
            "émoji 🎉",
        ] {
            let v = identity_header_value(original);
            let s = v.to_str().expect("visible ASCII");
            assert!(s.bytes().all(|b| (0x20..0x7f).contains(&b)));
            assert!(!s.starts_with(' ') && !s.ends_with(' '));
            let back = percent_decode_str(s).decode_utf8().unwrap();
            assert_eq!(back, original);
        }
        assert_eq!(
            identity_header_value("张三").to_str().unwrap(),
            "%E5%BC%A0%E4%B8%89"
        );
        assert_eq!(
            identity_header_value("Zhang San").to_str().unwrap(),
            "Zhang San"
        );
        assert_eq!(identity_header_value("50%").to_str().unwrap(), "50%25");
    }

    #[test]
    fn forwarded_headers_set_and_replaced() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-host", "evil")]);
        let host = HeaderValue::from_static("app.example.com");
        set_forwarded(&mut h, "10.1.2.3".parse().unwrap(), "https", Some(&host));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "app.example.com");

        set_forwarded(&mut h, "2001:db8::1".parse().unwrap(), "http", None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn ipv4_addresses_are_written_as_std_writes_them() {
        for ip in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [1, 20, 200, 9],
        ] {
            let ip = IpAddr::from(ip);
            assert_eq!(ip_header_value(ip).unwrap(), ip.to_string().as_str());
        }
        let v6: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_header_value(v6).unwrap(), v6.to_string().as_str());
    }

    const CHROME_NAV: &[(&str, &str)] = &[
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8",
        ),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];

    #[test]
    fn wants_html_browser_navigation() {
        assert!(wants_html(&map(CHROME_NAV), &Method::GET));
        assert!(wants_html(&map(CHROME_NAV), &Method::HEAD));
        // Older browsers without fetch metadata.
        assert!(wants_html(
            &map(&[("accept", "text/html, application/xhtml+xml, */*")]),
            &Method::GET
        ));
        assert!(wants_html(
            &map(&[
                ("accept", "application/xhtml+xml"),
                ("sec-fetch-dest", "iframe")
            ]),
            &Method::GET
        ));
    }

    #[test]
    fn wants_html_api_and_xhr() {
        assert!(!wants_html(&map(CHROME_NAV), &Method::POST));
        assert!(!wants_html(
            &map(&[("accept", "application/json")]),
            &Method::GET
        ));
        assert!(!wants_html(&map(&[("accept", "*/*")]), &Method::GET));
        assert!(!wants_html(&HeaderMap::new(), &Method::GET));
        assert!(!wants_html(
            &map(&[("accept", "text/html;q=0")]),
            &Method::GET
        ));
        assert!(!wants_html(
            &map(&[("accept", "text/html; q=0.0")]),
            &Method::GET
        ));
        assert!(wants_html(
            &map(&[("accept", "text/html; q=0.1")]),
            &Method::GET
        ));

        let mut xhr = map(CHROME_NAV);
        xhr.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!wants_html(&xhr, &Method::GET));

        for mode in ["cors", "no-cors", "same-origin", "websocket"] {
            let mut h = map(CHROME_NAV);
            h.insert("sec-fetch-mode", HeaderValue::from_static(mode));
            assert!(!wants_html(&h, &Method::GET), "{mode}");
        }
        for dest in ["empty", "image", "script", "style"] {
            let mut h = map(CHROME_NAV);
            h.insert("sec-fetch-dest", HeaderValue::from_static(dest));
            assert!(!wants_html(&h, &Method::GET), "{dest}");
        }
    }

    #[test]
    fn upgrade_detection() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            is_upgrade_request(&ws),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(is_upgrade_request(&map(&[("upgrade", "websocket")])), None);
        assert_eq!(is_upgrade_request(&map(&[("connection", "upgrade")])), None);
        assert_eq!(
            is_upgrade_request(&map(&[("connection", "close"), ("upgrade", "h2c")])),
            None
        );
        // Only WebSocket is bridged; h2c would tunnel unchecked requests.
        assert_eq!(
            is_upgrade_request(&map(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c")
            ])),
            None
        );
        assert!(
            is_upgrade_request(&map(&[("connection", "upgrade"), ("upgrade", "WebSocket")]))
                .is_some()
        );
    }

    #[test]
    fn identity_headers_are_encoded_and_optional_ones_skipped() {
        use crate::proxy::names::*;
        let names = IdentityHeaders {
            user: Some(X_FORWARDED_USER),
            email: Some(X_FORWARDED_EMAIL),
            preferred_username: None,
            union_id: Some(X_DINGTALK_UNIONID),
            name: Some(X_DINGTALK_NAME),
            corp_id: Some(X_DINGTALK_CORPID),
            user_id: Some(X_DINGTALK_USERID),
            departments: Some(X_DINGTALK_DEPARTMENTS),
            title: Some(X_DINGTALK_TITLE),
            strip_extra: Vec::new(),
        };
        let id = Identity {
            union_id: "u123".into(),
            name: "张三".into(),
            avatar: None,
            email: None,
            corp_id: Some("dingcorp".into()),
            open_id: None,
            enterprise: None,
        };
        let mut h = HeaderMap::new();
        IdentityValues::new(&names, &id).apply(&mut h);
        assert_eq!(h[X_FORWARDED_USER], "u123");
        assert_eq!(h[X_DINGTALK_NAME], "%E5%BC%A0%E4%B8%89");
        assert_eq!(h[X_DINGTALK_CORPID], "dingcorp");
        assert!(h.get(X_FORWARDED_EMAIL).is_none());
        assert!(
            h.get(X_DINGTALK_USERID).is_none(),
            "no directory data, no userid"
        );
        assert_eq!(h.len(), 4);

        let id = Identity {
            enterprise: Some(crate::identity::Enterprise {
                user_id: "zhangsan".into(),
                departments: vec![101, 300],
                department_tree: vec![1, 100, 101, 300],
                admin: true,
                title: Some("工程师".into()),
            }),
            ..id
        };
        IdentityValues::new(&names, &id).apply(&mut h);
        assert_eq!(h[X_DINGTALK_USERID], "zhangsan");
        assert_eq!(h[X_DINGTALK_DEPARTMENTS], "101,300");
        assert_eq!(h[X_DINGTALK_TITLE], "%E5%B7%A5%E7%A8%8B%E5%B8%88");
    }
}
