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

/// Deletions of cookie `name` for every scope the gateway can name: host-only, and the
/// configured `Domain` when there is one (a browser keeps both as different cookies).
pub fn clear_cookie_everywhere(s: &CookieSettings, name: &str) -> Vec<Cookie<'static>> {
    let host_only = CookieSettings {
        domain: None,
        ..s.clone()
    };
    let mut out = vec![clear_cookie(&host_only, name)];
    if s.domain.is_some() {
        out.push(clear_cookie(s, name));
    }
    out
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

/// One `name=value` pair of a `Cookie` header, as raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePair<'a> {
    /// The name, optional whitespace trimmed. For a pair without `=`, the whole pair (as most
    /// server frameworks read it).
    pub name: &'a [u8],
    /// The value as sent (no unquoting or decoding), optional whitespace trimmed; empty for a
    /// pair without `=`.
    pub value: &'a [u8],
    /// The whole pair, trimmed, byte-for-byte (what is forwarded when the pair is kept).
    pub raw: &'a [u8],
}

/// THE Cookie-header tokenizer: every non-empty pair of every `Cookie` header, in order
/// (RFC 6265 §5.4: pairs separated by `;`, space and tab trimmed). Works on bytes, so a header
/// that is not UTF-8 hides nothing; nothing here panics or allocates.
///
/// The session lookup and the stripping of the gateway's cookies before forwarding both use
/// it, so every cookie the gateway reads is a cookie it strips.
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = CookiePair<'_>> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| Semicolons(v.as_bytes()))
        .map(trim_ows)
        .filter(|raw| !raw.is_empty())
        .map(|raw| match memchr::memchr(b'=', raw) {
            Some(i) => CookiePair {
                name: trim_ows(&raw[..i]),
                value: trim_ows(&raw[i + 1..]),
                raw,
            },
            None => CookiePair {
                name: raw,
                value: b"",
                raw,
            },
        })
}

/// The `;`-separated pieces of a header value. `memchr` rather than a byte-by-byte split: a
/// session cookie is most of a request head and is scanned on every request.
struct Semicolons<'a>(&'a [u8]);

impl<'a> Iterator for Semicolons<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        match memchr::memchr(b';', self.0) {
            Some(i) => {
                let piece = &self.0[..i];
                self.0 = &self.0[i + 1..];
                Some(piece)
            }
            None => Some(std::mem::take(&mut self.0)),
        }
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The values of every cookie called `name` (exact, case-sensitive), in order, as sent.
/// Values that are not UTF-8 are yielded as `None` (present, but unusable), so callers can
/// count every copy.
pub fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = Option<&'a str>> + 'a {
    cookie_pairs(headers)
        .filter(move |p| p.name == name.as_bytes())
        .map(|p| std::str::from_utf8(p.value).ok())
}

/// The value of the first usable cookie called `name` (exact, case-sensitive), across all
/// `Cookie` headers in order. Values are returned as sent (no unquoting or decoding).
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    cookie_values(headers, name).flatten().next()
}

/// All `(name, value)` pairs from all `Cookie` headers that have `=`, a non-empty name and are
/// UTF-8, in order (from [`cookie_pairs`]).
pub fn cookie_names(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    cookie_pairs(headers)
        .filter(|p| p.raw.len() > p.name.len() && !p.name.is_empty())
        .filter_map(|p| {
            Some((
                std::str::from_utf8(p.name).ok()?,
                std::str::from_utf8(p.value).ok()?,
            ))
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
                ("x", "1"),
                ("e", "\"quoted\"")
            ]
        );
        assert_eq!(
            find_cookie(&h, "x"),
            Some("1"),
            "a non-UTF-8 pair does not hide its neighbours"
        );
        let bad: Vec<Option<&str>> = cookie_values(&h, "bad").collect();
        assert_eq!(bad, [None], "an unusable copy is still counted");
        let noeq = cookie_pairs(&h).find(|p| p.raw == b"noequals").unwrap();
        assert_eq!((noeq.name, noeq.value), (&b"noequals"[..], &b""[..]));
    }

    #[test]
    fn every_copy_of_a_name_in_order() {
        let h = headers(&[b"_dinggate=bad; _dinggate=good", b"x=1; _dinggate=\xff"]);
        let v: Vec<Option<&str>> = cookie_values(&h, "_dinggate").collect();
        assert_eq!(v, [Some("bad"), Some("good"), None]);
        assert_eq!(find_cookie(&h, "_dinggate"), Some("bad"));
    }

    #[test]
    fn strip_sees_our_cookie_in_a_non_utf8_header() {
        let mut h = headers(&[b"n=\xff; _dinggate=t; m=1"]);
        assert_eq!(find_cookie(&h, "_dinggate"), Some("t"));
        crate::proxy::headers::strip_cookies(&mut h, |n| n == "_dinggate");
        assert_eq!(h.get(COOKIE).unwrap().as_bytes(), b"n=\xff; m=1");
        assert_eq!(find_cookie(&h, "_dinggate"), None);
    }

    #[test]
    fn clearing_everywhere_names_host_only_and_domain() {
        let only = clear_cookie_everywhere(&settings(true, None), "_dinggate");
        assert_eq!(only.len(), 1);
        assert!(only[0].domain().is_none());
        let both = clear_cookie_everywhere(&settings(true, Some("example.com")), "_dinggate");
        assert_eq!(both.len(), 2);
        assert!(both[0].domain().is_none());
        assert_eq!(both[1].domain(), Some("example.com"));
        assert!(both
            .iter()
            .all(|c| c.max_age() == Some(CookieDuration::ZERO)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn header_map(values: &[Vec<u8>]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for v in values {
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(COOKIE, v);
                }
            }
            h
        }

        proptest! {
            #[test]
            fn tokenizer_never_panics_and_pairs_are_trimmed(
                values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4)
            ) {
                let h = header_map(&values);
                for p in cookie_pairs(&h) {
                    prop_assert!(!p.raw.is_empty());
                    prop_assert!(!p.raw.contains(&b';'));
                    prop_assert!(!p.name.contains(&b'='));
                    for part in [p.name, p.value, p.raw] {
                        prop_assert!(!part.starts_with(b" ") && !part.ends_with(b" "));
                        prop_assert!(!part.starts_with(b"\t") && !part.ends_with(b"\t"));
                    }
                }
                let _ = find_cookie(&h, "_dinggate");
                let _ = cookie_names(&h).count();
            }

            #[test]
            fn strip_removes_every_pair_the_tokenizer_reads_as_ours(
                values in proptest::collection::vec(
                    proptest::collection::vec(
                        proptest::sample::select(vec![
                            &b"_dinggate"[..], b"_dinggate_csrf_1", b"=", b";", b" ", b"\t",
                            b"a", b"tok.en", b"\xff", b"\xe4\xb8", b"\"", b",", b"_DINGGATE",
                        ]),
                        0..12,
                    ).prop_map(|parts| parts.concat()),
                    0..4,
                )
            ) {
                let ours = |n: &str| n == "_dinggate" || n.starts_with("_dinggate_csrf_");
                let mut h = header_map(&values);
                let before: Vec<Vec<u8>> = cookie_pairs(&h)
                    .filter(|p| !std::str::from_utf8(p.name).is_ok_and(ours))
                    .map(|p| p.raw.to_vec())
                    .collect();
                crate::proxy::headers::strip_cookies(&mut h, ours);
                prop_assert!(h.get_all(COOKIE).iter().count() <= 1);
                for p in cookie_pairs(&h) {
                    prop_assert!(!std::str::from_utf8(p.name).is_ok_and(ours), "{:?}", p);
                }
                prop_assert!(find_cookie(&h, "_dinggate").is_none());
                prop_assert_eq!(cookie_values(&h, "_dinggate").count(), 0);
                let after: Vec<Vec<u8>> = cookie_pairs(&h).map(|p| p.raw.to_vec()).collect();
                prop_assert_eq!(after, before, "everything else kept, in order");
            }
        }
    }
}
