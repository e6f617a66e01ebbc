//! The session cookie: every attribute of the cookies the gateway sets, and reading cookies back.

use std::time::Duration;

use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use cookie::{Cookie, SameSite};
use http::header::COOKIE;
use http::HeaderMap;

/// Attributes shared by the gateway's cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    /// Cookie name of the session cookie.
    pub name: String,
    /// `Domain` attribute; `None` makes a host-only cookie (the safer default).
    pub domain: Option<String>,
    /// Whether to set `Secure`. Only turn off for local plain-HTTP use.
    pub secure: bool,
    /// `Max-Age` of the session cookie; should equal the session token lifetime.
    pub lifetime: Duration,
}

/// The session cookie carrying `token`: `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` when
/// configured, `Domain` when configured, `Max-Age` = lifetime.
///
/// Serialise with `to_string()`; the value is written as given (session tokens are base64url).
pub fn session_cookie(s: &CookieSettings, token: &str) -> Cookie<'static> {
    let mut c = with_attributes(Cookie::new(s.name.clone(), token.to_owned()), s);
    c.set_max_age(CookieDuration::seconds(
        i64::try_from(s.lifetime.as_secs()).unwrap_or(i64::MAX),
    ));
    c
}

/// Longest `Set-Cookie` line (`Set-Cookie: ` and the cookie with every attribute) the gateway
/// sends. Browsers keep cookies up to 4,096 bytes (RFC 6265 §6.1, name + value); staying under
/// it with the attributes included leaves no browser-dependent corner.
pub const MAX_SET_COOKIE_LINE: usize = 4096;

/// Length of the `Set-Cookie` line that carries `c`, as the gateway writes it.
pub fn set_cookie_line_len(c: &Cookie<'_>) -> usize {
    "Set-Cookie: ".len() + c.encoded().to_string().len()
}

/// A cookie that deletes cookie `name` (which may be another of the gateway's cookies, such as
/// the login state cookie): the same `Path`/`Domain`/`Secure`/`HttpOnly`/`SameSite` as when it
/// was set (browsers match deletions on name, domain and path), an empty value, `Max-Age=0` and an
/// `Expires` in 1970 for old clients.
pub fn clear_cookie(s: &CookieSettings, name: &str) -> Cookie<'static> {
    let mut c = with_attributes(Cookie::new(name.to_owned(), ""), s);
    c.set_max_age(CookieDuration::ZERO);
    c.set_expires(OffsetDateTime::UNIX_EPOCH);
    c
}

fn with_attributes(mut c: Cookie<'static>, s: &CookieSettings) -> Cookie<'static> {
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    c.set_secure(s.secure);
    if let Some(domain) = &s.domain {
        c.set_domain(domain.clone());
    }
    c
}

/// The value of the first cookie called `name` (exact, case-sensitive), across all `Cookie`
/// headers in order. Values are returned as sent (no unquoting or decoding).
///
/// Headers that are not UTF-8 are skipped; nothing here panics. The scan is linear and
/// allocation-free; its cost is bounded by the server's request-head limit.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookie_names(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// All `(name, value)` pairs from all `Cookie` headers, in order (RFC 6265 §5.4 syntax:
/// `name=value` separated by `;`, optional whitespace trimmed). Pairs without `=` or with an
/// empty name, and headers that are not UTF-8, are skipped.
pub fn cookie_names<'a>(headers: &'a HeaderMap) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim_matches([' ', '\t']);
            (!name.is_empty()).then(|| (name, value.trim_matches([' ', '\t'])))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn settings(secure: bool, domain: Option<&str>) -> CookieSettings {
        CookieSettings {
            name: "_dinggate".into(),
            domain: domain.map(str::to_owned),
            secure,
            lifetime: Duration::from_secs(8 * 3600),
        }
    }

    fn attrs(c: &Cookie<'_>) -> Vec<String> {
        let s = c.to_string();
        let mut parts: Vec<String> = s.split("; ").map(str::to_owned).collect();
        parts.sort();
        parts
    }

    #[test]
    fn session_cookie_secure_host_only() {
        let c = session_cookie(&settings(true, None), "a.b.c");
        assert_eq!(
            attrs(&c),
            [
                "HttpOnly",
                "Max-Age=28800",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "_dinggate=a.b.c"
            ]
        );
    }

    #[test]
    fn session_cookie_insecure_with_domain() {
        let c = session_cookie(&settings(false, Some("example.com")), "tok");
        let a = attrs(&c);
        assert!(!a.iter().any(|p| p == "Secure"), "{a:?}");
        assert!(a.contains(&"Domain=example.com".to_owned()), "{a:?}");
        assert!(a.contains(&"HttpOnly".to_owned()));
        assert!(a.contains(&"SameSite=Lax".to_owned()));
        assert!(a.contains(&"Path=/".to_owned()));
    }

    #[test]
    fn clear_cookie_matches_attributes() {
        let c = clear_cookie(&settings(true, Some("example.com")), "_dinggate_state");
        let a = attrs(&c);
        assert!(a.contains(&"_dinggate_state=".to_owned()), "{a:?}");
        assert!(a.contains(&"Max-Age=0".to_owned()), "{a:?}");
        assert!(
            a.iter().any(|p| p.starts_with("Expires=Thu, 01 Jan 1970")),
            "{a:?}"
        );
        for want in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Domain=example.com",
        ] {
            assert!(a.contains(&want.to_owned()), "{want} missing in {a:?}");
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn find_across_headers() {
        let h = headers(&[b"a=1; b=2", b"_dinggate=tok.en.x ;c=3", b"_dinggate=second"]);
        assert_eq!(find_cookie(&h, "_dinggate"), Some("tok.en.x"));
        assert_eq!(find_cookie(&h, "c"), Some("3"));
        assert_eq!(find_cookie(&h, "a"), Some("1"));
        assert_eq!(find_cookie(&h, "_DINGGATE"), None);
        assert_eq!(find_cookie(&h, "missing"), None);
        assert_eq!(find_cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn pairs_in_order_and_odd_input() {
        let h = headers(&[
            b"a=1;;  b = 2 ; noequals; =empty; c==x=; d=",
            b"bad=\xff\xfe; x=1",
            b"e=\"quoted\"",
        ]);
        let pairs: Vec<(&str, &str)> = cookie_names(&h).collect();
        assert_eq!(
            pairs,
            [
                ("a", "1"),
                ("b", "2"),
                ("c", "=x="),
                ("d", ""),
                ("e", "\"quoted\"")
            ]
        );
        assert_eq!(find_cookie(&h, "x"), None, "non-UTF-8 header skipped whole");
    }
}
