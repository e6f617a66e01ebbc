//! Return-URL (`rd`) validation: decides whether a post-login / post-logout redirect target is safe.
//!
//! The policy is deliberately stricter than a browser needs: a value is accepted only if the raw
//! string *and every percent-decoded form of it* (several rounds) pass the same checks, so that a
//! later decoding step (an upstream app, a second redirect hop, a proxy that normalises paths)
//! cannot turn an accepted value into an open redirect.

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode;
use url::{Host, Origin, Position, Url};

use crate::host::{self, Host as ParsedHost, HostError, HostPort};

/// One allow-list entry for absolute return URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host (lower-case DNS name or dotted-quad IPv4 address).
    ///
    /// `port: None` means "the scheme's default port only"; `Some(p)` means exactly port `p`.
    Exact { host: String, port: Option<u16> },
    /// Any host strictly below this domain: `".example.com"` matches `sub.example.com` and
    /// `a.b.example.com`, but not `example.com` itself. `suffix` always starts with `.`.
    ///
    /// `port` has the same meaning as for [`HostPattern::Exact`].
    Suffix { suffix: String, port: Option<u16> },
}

impl HostPattern {
    /// Parses `"app.example.com"`, `"app.example.com:8443"`, `".example.com"` (subdomains only)
    /// or `"*.example.com"` (same as `".example.com"`; the bare domain is *not* included).
    ///
    /// Rejects schemes, paths, userinfo, IPv6, any-port wildcards (`:*`), non-ASCII (use the
    /// `xn--` form), malformed labels, numeric-looking non-IP hosts and single-label suffixes
    /// such as `".com"`. The host is read by the one host parser ([`crate::host`]), so a name is
    /// valid here exactly when it is valid as a route host (one trailing dot is dropped; a
    /// numeric last label is accepted only as a whole dotted-quad). The error message is meant
    /// for the operator and echoes the pattern.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        if s.is_empty() {
            return Err("empty host pattern".to_owned());
        }
        if !s.is_ascii() {
            return Err(format!(
                "host pattern {s:?} is not ASCII; write internationalised names in their xn-- form"
            ));
        }
        if s.contains("://") || s.contains(['/', '?', '#', '@', '\\']) {
            return Err(format!(
                "host pattern {s:?} must be a host name with an optional :port (no scheme, path or user)"
            ));
        }
        if s.contains(['[', ']']) {
            return Err(format!(
                "host pattern {s:?}: IPv6 addresses are not supported in the allow-list"
            ));
        }
        if s.ends_with(":*") {
            return Err(format!(
                "host pattern {s:?}: any-port wildcards (:*) are not supported; list each port"
            ));
        }
        let (subdomains, rest) = match s.strip_prefix("*.").or_else(|| s.strip_prefix('.')) {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let HostPort { host, port } = host::parse_authority(rest).map_err(|e| match e {
            HostError::BadPort => format!("host pattern {s:?}: invalid port"),
            e => format!(
                "host pattern {s:?} is not a valid host name ({e}; labels of a-z, 0-9, '-', '_'; \
                 no empty labels; last label not numeric unless the whole is an IPv4 address)"
            ),
        })?;
        match (subdomains, host) {
            (true, ParsedHost::Name(domain)) => {
                if !domain.contains('.') {
                    return Err(format!(
                        "host pattern {s:?}: a subdomain pattern needs at least two labels (\".example.com\")"
                    ));
                }
                Ok(HostPattern::Suffix {
                    suffix: format!(".{domain}"),
                    port,
                })
            }
            (true, _) => Err(format!(
                "host pattern {s:?}: a subdomain pattern needs a domain name, not an address"
            )),
            (false, ParsedHost::Name(host)) => Ok(HostPattern::Exact { host, port }),
            (false, ParsedHost::Ipv4(ip)) => Ok(HostPattern::Exact {
                host: ip.to_string(),
                port,
            }),
            (false, ParsedHost::Ipv6(_)) => Err(format!(
                "host pattern {s:?}: IPv6 addresses are not supported in the allow-list"
            )),
        }
    }

    /// Whether a parsed URL host and its explicit port (`None` = scheme default) match.
    fn matches(&self, host: &Host<&str>, explicit_port: Option<u16>) -> bool {
        let (pattern_port, host_ok) = match (self, host) {
            (HostPattern::Exact { host: want, port }, Host::Domain(d)) => (port, *d == want),
            (HostPattern::Exact { host: want, port }, Host::Ipv4(ip)) => {
                (port, ip.to_string() == *want)
            }
            (HostPattern::Suffix { suffix, port }, Host::Domain(d)) => (
                port,
                d.len() > suffix.len()
                    && d.ends_with(suffix.as_str())
                    && matches!(host::parse_host(d), Ok(ParsedHost::Name(ref n)) if n == d),
            ),
            _ => return false,
        };
        host_ok && *pattern_port == explicit_port
    }
}

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, port) = match self {
            HostPattern::Exact { host, port } => (host, port),
            HostPattern::Suffix { suffix, port } => (suffix, port),
        };
        match port {
            Some(p) => write!(f, "{name}:{p}"),
            None => f.write_str(name),
        }
    }
}

/// Why a return URL was refused. `Display` never includes the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// No value was given.
    #[error("return URL is empty")]
    Empty,
    /// Longer than [`RedirectPolicy::MAX_LEN`] bytes.
    #[error("return URL is too long")]
    TooLong,
    /// Well-formed enough to inspect, but unsafe or not on the allow-list.
    #[error("return URL not allowed: {0}")]
    NotAllowed(&'static str),
    /// An absolute URL the WHATWG parser refuses.
    #[error("return URL is not a valid URL")]
    Unparsable(#[source] url::ParseError),
}

/// Validates return URLs against the gateway's own origin and an operator allow-list.
#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    public_origin: Origin,
    allowlist: Vec<HostPattern>,
}

/// How many rounds of percent-decoding are inspected. A value that still changes after this many
/// rounds is refused: no legitimate return URL is encoded five times over.
const MAX_DECODE_ROUNDS: usize = 4;

/// Path segments starting with one of these schemes (followed by `:`) are refused: they are how
/// `/https://evil`, `/javascript:…` and friends turn into redirects once something strips the
/// leading slash or joins paths naively.
const SCHEME_LIKE_SEGMENTS: &[&str] = &[
    "http",
    "https",
    "javascript",
    "vbscript",
    "data",
    "file",
    "ftp",
    "ws",
    "wss",
    "blob",
];

/// Characters that render or are normalised (NFKC, IDNA) like `/` or `\`: refused anywhere in a
/// decoded form.
const SLASH_LOOKALIKES: &[char] = &[
    '\u{2044}', // ⁄ fraction slash
    '\u{2215}', // ∕ division slash
    '\u{2216}', // ∖ set minus
    '\u{29F5}', // ⧵ reverse solidus operator
    '\u{29F8}', // ⧸ big solidus
    '\u{29F9}', // ⧹ big reverse solidus
    '\u{FE68}', // ﹨ small reverse solidus
    '\u{FF0F}', // ／ fullwidth solidus
    '\u{FF3C}', // ＼ fullwidth reverse solidus
];

/// CJK marks that look like a slash stroke. They occur inside ordinary Japanese words (ー), so
/// they are only refused at the start of a path segment, where mod_auth_openidc's list shows
/// them used as `/〱evil.com`.
const SEGMENT_START_LOOKALIKES: &[char] = &[
    '\u{3031}', // 〱
    '\u{3033}', // 〳
    '\u{3034}', // 〴
    '\u{3035}', // 〵
    '\u{309D}', // ゝ
    '\u{30FC}', // ー
    '\u{FF70}', // ｰ
];

/// Invisible formatting characters (zero-width, bidi controls, BOM) that can hide what a URL
/// says; refused anywhere in a decoded form.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

impl RedirectPolicy {
    /// Upper bound on the raw value, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// `public_url` is the gateway's external URL: absolute return URLs with exactly its origin
    /// (scheme, host, port) are allowed in addition to the hosts on `allowlist`.
    pub fn new(public_url: &Url, allowlist: Vec<HostPattern>) -> Self {
        Self {
            public_origin: public_url.origin(),
            allowlist,
        }
    }

    /// [`RedirectPolicy::validate`] for an optional parameter: absent or empty is `None`.
    pub fn validate_optional(&self, raw: Option<&str>) -> Result<Option<String>, RedirectError> {
        match raw {
            None | Some("") => Ok(None),
            Some(rd) => self.validate(rd).map(Some),
        }
    }

    /// Checks `raw` (the `rd` value after the single decoding that query-string parsing does)
    /// and returns the URL to redirect to.
    ///
    /// Accepted are relative paths starting with exactly one `/`, returned unchanged, and absolute
    /// `http`/`https` URLs whose host is the public origin or on the allow-list, returned in
    /// WHATWG-normalised form. Everything else — protocol-relative `//`, backslashes, whitespace,
    /// control characters, raw non-ASCII, userinfo, other schemes, dot segments, scheme-like path
    /// segments, look-alike slashes, and `//` anywhere after the authority (so a query parameter
    /// carrying another URL, e.g. `?next=https%3A%2F%2F…`, is refused too) — is refused, in the
    /// raw value and in each of up to four percent-decoded forms.
    pub fn validate(&self, raw: &str) -> Result<String, RedirectError> {
        if raw.is_empty() {
            return Err(RedirectError::Empty);
        }
        if raw.len() > Self::MAX_LEN {
            return Err(RedirectError::TooLong);
        }
        let accepted = self.check_form(raw, true)?;

        let mut current = raw.as_bytes().to_vec();
        for round in 0..=MAX_DECODE_ROUNDS {
            let decoded: Vec<u8> = percent_decode(&current).collect();
            if decoded == current {
                return Ok(accepted);
            }
            if round == MAX_DECODE_ROUNDS {
                break;
            }
            // Overlong and truncated sequences (`%c0%af`) have been decoded as `/` by some
            // servers; a return URL that is not UTF-8 once decoded is refused outright.
            let text = std::str::from_utf8(&decoded)
                .map_err(|_| RedirectError::NotAllowed("not valid UTF-8 after percent-decoding"))?;
            self.check_form(text, false)?;
            current = decoded;
        }
        Err(RedirectError::NotAllowed(
            "too many layers of percent-encoding",
        ))
    }

    /// Checks one form (raw or decoded); for the raw form returns the URL to redirect to.
    fn check_form(&self, s: &str, raw: bool) -> Result<String, RedirectError> {
        if raw {
            check_raw_chars(s)?;
        } else {
            check_decoded_chars(s)?;
        }
        if s.starts_with('/') {
            check_relative(s)?;
            Ok(s.to_owned())
        } else if starts_with_ignore_case(s, "https://") || starts_with_ignore_case(s, "http://") {
            self.check_absolute(s)
        } else {
            Err(RedirectError::NotAllowed(
                "neither a relative path nor an http(s) URL",
            ))
        }
    }

    fn check_absolute(&self, s: &str) -> Result<String, RedirectError> {
        let after_scheme = s
            .find("://")
            .map(|i| &s[i + 3..])
            .ok_or(RedirectError::NotAllowed("malformed absolute URL"))?;
        // Backslashes are refused before we get here, so the WHATWG authority ends at the first
        // of `/?#`; inspect it as written, before the parser decodes or drops anything.
        let authority_len = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(authority_len);
        if authority.contains('@') {
            return Err(RedirectError::NotAllowed("user information in URL"));
        }
        if authority.contains('%') {
            return Err(RedirectError::NotAllowed("percent-encoded host"));
        }
        if authority.is_empty() {
            return Err(RedirectError::NotAllowed("missing host"));
        }

        let url = Url::parse(s).map_err(RedirectError::Unparsable)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RedirectError::NotAllowed("scheme is not http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectError::NotAllowed("user information in URL"));
        }
        let host = url
            .host()
            .ok_or(RedirectError::NotAllowed("missing host"))?;
        let own_origin = url.origin() == self.public_origin;
        if !own_origin && !self.allowlist.iter().any(|p| p.matches(&host, url.port())) {
            return Err(RedirectError::NotAllowed("host is not on the allow-list"));
        }

        if rest.starts_with('/') {
            check_relative(rest)?;
        }
        // The parser may have normalised the path (e.g. resolved `%2e` segments); the result
        // must still be acceptable on its own.
        let normalized_rest = &url[Position::BeforePath..];
        if normalized_rest.starts_with('/') {
            check_relative(normalized_rest)?;
        }
        Ok(url.into())
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The raw value must be visible ASCII: browsers strip or reinterpret whitespace, control
/// characters and backslashes, and raw non-ASCII can hide look-alike characters.
fn check_raw_chars(s: &str) -> Result<(), RedirectError> {
    for b in s.bytes() {
        match b {
            b'\\' => return Err(RedirectError::NotAllowed("backslash")),
            0x00..=0x20 | 0x7F => {
                return Err(RedirectError::NotAllowed("whitespace or control character"))
            }
            0x80..=0xFF => return Err(RedirectError::NotAllowed("non-ASCII character")),
            b'"' | b'<' | b'>' | b'`' => {
                return Err(RedirectError::NotAllowed(
                    "character that is not allowed in a URL",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decoded forms may contain spaces and encoded non-ASCII text (`%E4%B8%AD` is fine), but no
/// control or invisible characters, backslashes or slash look-alikes.
fn check_decoded_chars(s: &str) -> Result<(), RedirectError> {
    for c in s.chars() {
        if c.is_control() {
            return Err(RedirectError::NotAllowed(
                "control character after percent-decoding",
            ));
        }
        if c == '\\' {
            return Err(RedirectError::NotAllowed(
                "backslash after percent-decoding",
            ));
        }
        if is_invisible_format(c) {
            return Err(RedirectError::NotAllowed(
                "invisible formatting character after percent-decoding",
            ));
        }
        if SLASH_LOOKALIKES.contains(&c) {
            return Err(RedirectError::NotAllowed("look-alike slash"));
        }
    }
    Ok(())
}

/// Checks a value starting with `/`: exactly one leading slash, a path without empty, dot,
/// whitespace-led, look-alike-led or scheme-like segments, and no `//` (or `/./`, `/ /`) anywhere,
/// query and fragment included.
fn check_relative(s: &str) -> Result<(), RedirectError> {
    let rest = s
        .strip_prefix('/')
        .ok_or(RedirectError::NotAllowed("not a relative path"))?;
    if rest.starts_with(['/', '\\']) {
        return Err(RedirectError::NotAllowed(
            "protocol-relative URL (// or /\\)",
        ));
    }
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..path_end];
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        check_segment(segment, is_last)?;
    }
    if has_slash_pair(s) {
        // Like oauth2-proxy, `//` is refused in the query and fragment too: `/redirect?url=//evil`
        // hands an attacker URL to any redirecting endpoint of the upstream app. Checked on every
        // decoded form, so an encoded `%2F%2F` in a query parameter is refused as well.
        return Err(RedirectError::NotAllowed(
            "// in the query or fragment (embedded URL)",
        ));
    }
    Ok(())
}

/// Whether `s` contains `/`, then only whitespace or one or two dots, then another `/`.
fn has_slash_pair(s: &str) -> bool {
    s.match_indices('/').any(|(i, _)| {
        let after = &s[i + 1..];
        let after_ws = after.trim_start_matches(char::is_whitespace);
        let after_dots = after
            .strip_prefix("..")
            .or_else(|| after.strip_prefix('.'))
            .unwrap_or(after);
        after_ws.starts_with('/') || after_dots.starts_with('/')
    })
}

fn check_segment(segment: &str, is_last: bool) -> Result<(), RedirectError> {
    // A trailing slash (`/a/`) leaves one empty last segment; any other empty segment is `//`.
    if segment.is_empty() {
        return if is_last {
            Ok(())
        } else {
            Err(RedirectError::NotAllowed("empty path segment (//)"))
        };
    }
    if segment == "." || segment == ".." {
        return Err(RedirectError::NotAllowed("dot segment in path"));
    }
    let first = segment.chars().next();
    if first.is_some_and(char::is_whitespace) {
        return Err(RedirectError::NotAllowed(
            "path segment starts with whitespace",
        ));
    }
    if first.is_some_and(|c| SEGMENT_START_LOOKALIKES.contains(&c)) {
        return Err(RedirectError::NotAllowed("look-alike slash"));
    }
    if let Some((scheme, _)) = segment.split_once(':') {
        if SCHEME_LIKE_SEGMENTS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(scheme.trim()))
        {
            return Err(RedirectError::NotAllowed(
                "path segment looks like a URL scheme",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn public() -> Url {
        Url::parse("https://gate.example.com").expect("static URL")
    }

    fn policy(allow: &[&str]) -> RedirectPolicy {
        let list = allow
            .iter()
            .map(|p| HostPattern::parse(p).expect("valid pattern"))
            .collect();
        RedirectPolicy::new(&public(), list)
    }

    fn ok(p: &RedirectPolicy, s: &str) -> String {
        match p.validate(s) {
            Ok(v) => v,
            Err(e) => panic!("{s:?} should be accepted, got {e}"),
        }
    }

    fn rejected(p: &RedirectPolicy, s: &str) -> RedirectError {
        match p.validate(s) {
            Ok(v) => panic!("{s:?} should be rejected, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn host_pattern_parse_forms() {
        assert_eq!(
            HostPattern::parse("App.Example.com").unwrap(),
            HostPattern::Exact {
                host: "app.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            HostPattern::parse("app.example.com:8443").unwrap(),
            HostPattern::Exact {
                host: "app.example.com".into(),
                port: Some(8443)
            }
        );
        assert_eq!(
            HostPattern::parse(".example.com").unwrap(),
            HostPattern::Suffix {
                suffix: ".example.com".into(),
                port: None
            }
        );
        assert_eq!(
            HostPattern::parse("*.example.com:8080").unwrap(),
            HostPattern::Suffix {
                suffix: ".example.com".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            HostPattern::parse("10.0.0.5:3000").unwrap(),
            HostPattern::Exact {
                host: "10.0.0.5".into(),
                port: Some(3000)
            }
        );
        // The shared host parser drops one trailing dot, as it does for route hosts.
        assert_eq!(
            HostPattern::parse("App.Example.com.:8443").unwrap(),
            HostPattern::Exact {
                host: "app.example.com".into(),
                port: Some(8443)
            }
        );
        assert_eq!(
            HostPattern::parse("localhost").unwrap().to_string(),
            "localhost"
        );
        assert_eq!(
            HostPattern::parse("*.example.com:8080")
                .unwrap()
                .to_string(),
            ".example.com:8080"
        );
    }

    #[test]
    fn host_pattern_rejects_garbage() {
        for bad in [
            "",
            "https://app.example.com",
            "app.example.com/path",
            "user@app.example.com",
            "app.example.com:",
            "app.example.com:0",
            "app.example.com:65536",
            "app.example.com:80a",
            "app.example.com:*",
            ".com",
            "*.com",
            ".",
            "*",
            "app..example.com",
            "-app.example.com",
            "app .example.com",
            "例子.com",
            "[::1]:8080",
            "1.2.3",
            "app.123",
            "a.0x1f",
            "0x7f.1",
            "a.b.c.300",
            "*.1.2.3.4",
        ] {
            let err = HostPattern::parse(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad:?} gave an empty message");
        }
    }

    #[test]
    fn relative_paths_accepted_unchanged() {
        let p = policy(&[]);
        for s in [
            "/",
            "/app",
            "/app/",
            "/app/page?x=1&y=a%20b#frag",
            "/docs/%E4%B8%AD%E6%96%87",
            "/a/b/c?next=/x",
            "/search?q=a+b&tag=c/d",
            "/wiki/Special:Search",
            "/%E3%82%B3%E3%83%BC%E3%83%92%E3%83%BC", // コーヒー: ー inside a word is fine
            "/a?discount=50%25off",
            "/file.txt",
            "/.well-known/x",
            "/~user/",
            "/a;b=c/d",
            "/#/spa/route",
            "/?",
        ] {
            assert_eq!(ok(&p, s), s);
        }
    }

    #[test]
    fn absolute_urls_to_own_origin_and_allowlist() {
        let p = policy(&["app.example.com", ".corp.example", "ports.example:8443"]);
        assert_eq!(
            ok(&p, "https://gate.example.com/x"),
            "https://gate.example.com/x"
        );
        assert_eq!(
            ok(&p, "HTTPS://Gate.Example.com:443/x?y=1#z"),
            "https://gate.example.com/x?y=1#z"
        );
        assert_eq!(
            ok(&p, "https://app.example.com"),
            "https://app.example.com/"
        );
        assert_eq!(
            ok(&p, "http://app.example.com/x"),
            "http://app.example.com/x"
        );
        assert_eq!(
            ok(&p, "https://sub.corp.example/"),
            "https://sub.corp.example/"
        );
        assert_eq!(
            ok(&p, "https://a.b.corp.example/p"),
            "https://a.b.corp.example/p"
        );
        assert_eq!(
            ok(&p, "https://ports.example:8443/p"),
            "https://ports.example:8443/p"
        );
    }

    #[test]
    fn absolute_urls_outside_policy_rejected() {
        let p = policy(&["app.example.com", ".corp.example", "ports.example:8443"]);
        for s in [
            "http://gate.example.com/x",      // scheme differs from the public origin
            "https://gate.example.com:8443/", // port differs
            "https://corp.example/",          // suffix excludes the bare domain
            "https://evilcorp.example/",
            "https://app.example.com.evil.com/",
            "https://app.example.com:444/",
            "https://ports.example/",
            "https://ports.example:8444/",
            "https://evil.com/",
            "https://app.example.com@evil.com/",
            "https://evil.com@app.example.com/",
            "https://@app.example.com/",
            "https://user:pw@gate.example.com/",
            "https://app%2eexample.com/",
            "https://gate.example.com./x",
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://[::1]/",
            "https:/app.example.com/",
            "https:app.example.com",
            "ftp://app.example.com/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "app.example.com/x",
            "https://app.example.com//evil.com",
            "https://app.example.com/https://evil.com",
            "https://app.example.com/%2f%2fevil.com",
            "https://app.example.com/./x",
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn public_url_may_be_an_ip_for_local_use() {
        let p = RedirectPolicy::new(&Url::parse("http://127.0.0.1:4180/").unwrap(), vec![]);
        assert_eq!(
            ok(&p, "http://127.0.0.1:4180/app"),
            "http://127.0.0.1:4180/app"
        );
        rejected(&p, "http://127.0.0.1:4181/app");
        rejected(&p, "http://127.0.0.2:4180/app");
    }

    #[test]
    fn ip_pattern_matches_canonical_forms_only_when_listed() {
        let p = policy(&["10.0.0.5:3000"]);
        assert_eq!(ok(&p, "http://10.0.0.5:3000/"), "http://10.0.0.5:3000/");
        // A numeric spelling is normalised to the listed address and returned normalised.
        assert_eq!(ok(&p, "http://167772165:3000/"), "http://10.0.0.5:3000/");
        rejected(&p, "http://10.0.0.5/");
    }

    #[test]
    fn protocol_relative_and_backslash_tricks() {
        let p = policy(&[]);
        for s in [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "\\/evil.com",
            "/%2f%2fevil.com",
            "/%2F/evil.com",
            "/%5cevil.com",
            "/%5Cevil.com",
            "/%252f%252fevil.com",
            "/%25252f%25252fevil.com",
            "/.//evil.com",
            "/./\\evil.com",
            "/..//evil.com",
            "/%2e%2e//evil.com",
            "/a/../..//evil.com",
            "/a//b",
            "/?url=//evil.com",
            "/redirect?url=https://evil.com",
            "/redirect?url=https%3A%2F%2Fevil.com",
            "/a#//evil.com",
            "/a?x=/ /evil.com",
            "/a?x=/../evil.com",
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn whitespace_and_controls_raw_and_encoded() {
        let p = policy(&[]);
        for s in [
            "/\t/evil.com",
            "/ /evil.com",
            "/\n/evil.com",
            "/\r/evil.com",
            "/\u{0b}/evil.com",
            " /x",
            "/x ",
            "/%09/evil.com",
            "/%0a/evil.com",
            "/%0d%0aSet-Cookie:x=y",
            "/%20/evil.com",
            "/%E3%80%80/evil.com", // ideographic space
            "/%00",
            "/x%7f",
            "/%C2%85x",            // NEL (C1 control)
            "/%E2%80%AEmoc.live",  // right-to-left override
            "/%E2%80%8B/evil.com", // zero-width space
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn lookalikes_and_non_ascii() {
        let p = policy(&[]);
        for s in [
            "/〱evil.com",
            "/〵evil.com",
            "/ゝevil.com",
            "/ーevil.com",
            "/ｰevil.com",
            "/%E3%80%B1evil.com",
            "/%EF%BC%8F%EF%BC%8Fevil.com", // fullwidth solidus
            "/%E2%88%95evil.com",          // division slash
            "/中文",                       // raw non-ASCII (must be percent-encoded)
            "/%c0%af%c0%afevil.com",       // overlong '/'
            "/%ff",
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn schemes_hidden_in_paths() {
        let p = policy(&[]);
        for s in [
            "/http://evil.com",
            "/https:evil.com",
            "/HTTPS:/evil.com",
            "/javascript:alert(1)",
            "/a/javascript:alert(1)",
            "/%68%74%74%70%3a%2f%2fevil.com",
            "%68%74%74%70%3a%2f%2fevil.com",
            "/data:text/html,x",
            "/%6a%61%76%61%73%63%72%69%70%74%3aalert(1)",
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn odd_characters_and_shapes() {
        let p = policy(&[]);
        for s in [
            "/<script>",
            "/\"onmouseover=",
            "/`x`",
            "?next=/x",
            "#/x",
            "x",
            ".evil.com",
            "evil.com",
            "@evil.com",
        ] {
            rejected(&p, s);
        }
    }

    #[test]
    fn length_and_empty() {
        let p = policy(&[]);
        assert_eq!(p.validate(""), Err(RedirectError::Empty));
        let long = format!("/{}", "a".repeat(RedirectPolicy::MAX_LEN));
        assert_eq!(p.validate(&long), Err(RedirectError::TooLong));
        let max = format!("/{}", "a".repeat(RedirectPolicy::MAX_LEN - 1));
        assert_eq!(ok(&p, &max), max);
    }

    #[test]
    fn deep_encoding_refused() {
        let p = policy(&[]);
        // Four rounds of decoding are inspected; a fifth layer is refused outright.
        assert_eq!(ok(&p, "/a%25252541"), "/a%25252541");
        assert_eq!(
            p.validate("/a%2525252541"),
            Err(RedirectError::NotAllowed(
                "too many layers of percent-encoding"
            ))
        );
    }

    #[test]
    fn display_never_echoes_input() {
        let p = policy(&[]);
        let secret = "/%0aSECRET-MARKER";
        let err = rejected(&p, secret);
        assert!(!err.to_string().contains("SECRET"));
        let err = rejected(&p, "https://SECRET-MARKER.evil/");
        assert!(!err.to_string().to_lowercase().contains("secret"));
        let err = rejected(&p, "https://exa mple.com/SECRET");
        assert!(!err.to_string().contains("SECRET"));
        let err = rejected(&p, "https://[zz]/SECRET");
        assert!(!format!("{err} {err:?}").contains("SECRET"));
    }

    /// Pieces of absolute and relative URLs, chosen to confuse host extraction.
    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop::sample::select(vec![
            "https://",
            "http://",
            "HTTPS://",
            "//",
            "/",
            "\\\\",
            "https:/",
            "https:",
            "",
            "/\\",
            "https:\\\\",
        ]);
        let user = prop::sample::select(vec![
            "",
            "user@",
            "app.example.com@",
            "a:b@",
            "%40",
            "gate.example.com:443@",
            "@",
        ]);
        let host = prop::sample::select(vec![
            "app.example.com",
            "evil.com",
            "x.corp.example.com",
            "corp.example.com",
            "gate.example.com",
            "10.0.0.5",
            "167772165",
            "0x0a000005",
            "[::1]",
            "app.example.com.",
            "APP.example.com",
            "app.example.com%2eevil.com",
            "evil.com\\@app.example.com",
            "xn--n3h.corp.example.com",
            "a.b.corp.example.com",
            "evilcorp.example.com",
            "x.corp.example.com.evil.com",
            "app.example.com\u{3002}evil.com",
            "ａｐｐ.example.com",
            "app.example.com\t",
            "x_y.corp.example.com",
            "1.corp.example.com",
        ]);
        let port = prop::sample::select(vec![
            "", ":3000", ":8443", ":443", ":", ":0", ":65536", ":80", ":08443",
        ]);
        let rest = prop::sample::select(vec![
            "",
            "/",
            "/x",
            "//evil.com",
            "/\\evil.com",
            "?q=1",
            "#f",
            "/%2e%2e/",
            "@evil.com",
            "/a?next=//evil.com",
            ";x",
            "%2f%2fevil.com",
        ]);
        prop_oneof![
            4 => (scheme, user, host, port, rest)
                .prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}")),
            1 => proptest::string::string_regex(r"(https?:)?[/\\]{0,3}[a-z0-9.:@%/\\\[\]-]{0,30}")
                .unwrap(),
        ]
    }

    /// Where a browser on the gateway's own page goes for `location`, by the `url` crate's
    /// (WHATWG) reading, and whether that is allowed: public_url's origin or an allow-list entry.
    fn lands_on_allowed_host(location: &str) -> bool {
        let base = Url::parse("https://gate.example.com/page").unwrap();
        let Ok(u) = base.join(location) else {
            return false;
        };
        let host = u.host_str().unwrap_or_default();
        let port = u.port();
        (u.scheme() == "https" && host == "gate.example.com" && port.is_none())
            || (host == "app.example.com" && port.is_none())
            || (host.ends_with(".corp.example.com") && port == Some(8443))
            || (host == "10.0.0.5" && port == Some(3000))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn accepted_return_urls_land_on_an_allowed_host(raw in url_like()) {
            let p = RedirectPolicy::new(
                &Url::parse("https://gate.example.com").unwrap(),
                ["app.example.com", ".corp.example.com:8443", "10.0.0.5:3000"]
                    .iter()
                    .map(|s| HostPattern::parse(s).unwrap())
                    .collect(),
            );
            if let Ok(accepted) = p.validate(&raw) {
                prop_assert!(lands_on_allowed_host(&accepted), "{raw:?} -> {accepted:?}");
                prop_assert!(lands_on_allowed_host(&raw), "{raw:?} read raw");
            }
        }
    }
}
