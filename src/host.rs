//! The one host parser: RFC 3986 `host [ ":" port ]`, strictly, for requests, routes and config.
//!
//! Every place that reads a host — the `Host` header, HTTP/2 `:authority`, an absolute-form
//! request target, `X-Forwarded-Host`, route `host:`, `redirect_allowlist`,
//! `session.cookie_domain` — goes through [`parse_authority`] or [`parse_host`], so they can
//! never disagree about what a host is.
//!
//! Accepted forms:
//! - a reg-name: dot-separated labels of ASCII letters, digits, `-` and `_` (1–63 bytes each, no
//!   leading or trailing `-`), at most 253 bytes, optionally one trailing dot (dropped). `_` is
//!   allowed because internal DNS names use it (`_` is not a hostname character under RFC 1123,
//!   but it is a valid reg-name and DNS label). The last label must not look like a number
//!   (all digits, or `0x` + hex): WHATWG URL parsers treat such a name as an IPv4 address
//!   (`a.123`, `1.2.3`, `0x7f.1`), so it is accepted only as a strict dotted-quad;
//! - an IPv4 dotted-quad (four decimal octets, no leading zeros);
//! - an IPv6 address in brackets (no zone id, no IPvFuture).
//!
//! Refused: userinfo (`@`), whitespace, control characters, non-ASCII (use the `xn--` form),
//! `/`, `\`, `%`, more than one `:` outside brackets, an empty port, port 0 or above 65535,
//! and anything else outside the forms above. The canonical form is lower-case.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest reg-name accepted, in bytes (without a trailing dot), as for DNS.
pub const MAX_NAME_BYTES: usize = 253;

/// The longest authority (`host:port`) accepted, in bytes.
pub const MAX_AUTHORITY_BYTES: usize = 300;

/// A validated host, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A lower-case reg-name without a trailing dot.
    Name(String),
    /// A dotted-quad IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// The canonical text: the lower-case name, the dotted-quad, or `[v6]` (RFC 5952 form).
    /// Borrowed for names, so matching a request's name against a route costs no allocation.
    pub fn canonical(&self) -> Cow<'_, str> {
        match self {
            Host::Name(n) => Cow::Borrowed(n),
            other => Cow::Owned(other.to_string()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// A validated `host [ ":" port ]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host, canonical.
    pub host: Host,
    /// The explicit port, if one was given (1..=65535).
    pub port: Option<u16>,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Why a value is not an acceptable host. `Display` never echoes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing (or only a port) was given.
    #[error("the host is empty")]
    Empty,
    /// Longer than [`MAX_AUTHORITY_BYTES`] (or a name longer than [`MAX_NAME_BYTES`]).
    #[error("the host is too long")]
    TooLong,
    /// Contains `@` (user information).
    #[error("the host contains user information (@)")]
    Userinfo,
    /// Contains whitespace or a control character.
    #[error("the host contains whitespace or a control character")]
    Whitespace,
    /// Contains a byte outside ASCII.
    #[error("the host is not ASCII (use the xn-- form)")]
    NonAscii,
    /// Contains `/`, `\`, `?` or `#`.
    #[error("the host contains a path or URL delimiter")]
    Delimiter,
    /// More than one `:` outside brackets.
    #[error("the host contains more than one colon")]
    ExtraColon,
    /// An empty port, a port that is not 1–5 digits, or port 0 / above 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// A malformed bracketed IPv6 literal (zone ids and IPvFuture included).
    #[error("not a valid bracketed IPv6 address")]
    BadIpv6,
    /// A label that is empty, too long, starts or ends with `-`, or has another character.
    #[error("not a valid host name")]
    BadName,
    /// The last label looks like a number but the whole is not a dotted-quad IPv4 address.
    #[error("a host name's last label must not be numeric (not a valid IPv4 address either)")]
    NumericName,
}

/// Parses `host [ ":" port ]` (a `Host` header, an `:authority`, an `X-Forwarded-Host`).
pub fn parse_authority(s: &str) -> Result<HostPort, HostError> {
    if s.len() > MAX_AUTHORITY_BYTES {
        return Err(HostError::TooLong);
    }
    check_chars(s)?;
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or(HostError::BadIpv6)?;
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(HostError::BadIpv6),
            },
        }
    } else {
        match s.split_once(':') {
            None => (s, None),
            Some((_, port)) if port.contains(':') => return Err(HostError::ExtraColon),
            Some((host, port)) => (host, Some(port)),
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok(HostPort {
        host: parse_host(host)?,
        port,
    })
}

/// Parses a host without a port (a route `host:`, a cookie domain, an allow-list name).
pub fn parse_host(s: &str) -> Result<Host, HostError> {
    if s.len() > MAX_AUTHORITY_BYTES {
        return Err(HostError::TooLong);
    }
    check_chars(s)?;
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        // std's parser refuses zone ids (`%eth0`) and IPvFuture (`v1.x`); only hex, `:` and an
        // embedded dotted-quad are accepted.
        return inner
            .parse::<Ipv6Addr>()
            .map(Host::Ipv6)
            .map_err(|_| HostError::BadIpv6);
    }
    if s.contains(':') {
        return Err(HostError::ExtraColon);
    }
    if s.contains([']', '%']) {
        return Err(HostError::BadName);
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err(if s.is_empty() {
            HostError::Empty
        } else {
            HostError::BadName
        });
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(HostError::TooLong);
    }
    if !name.split('.').all(valid_label) {
        return Err(HostError::BadName);
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if looks_numeric(last) {
        return name
            .parse::<Ipv4Addr>()
            .map(Host::Ipv4)
            .map_err(|_| HostError::NumericName);
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

fn check_chars(s: &str) -> Result<(), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    for b in s.bytes() {
        match b {
            b'@' => return Err(HostError::Userinfo),
            b'/' | b'\\' | b'?' | b'#' => return Err(HostError::Delimiter),
            0x00..=0x20 | 0x7F => return Err(HostError::Whitespace),
            0x80.. => return Err(HostError::NonAscii),
            _ => {}
        }
    }
    Ok(())
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort),
        Ok(port) => Ok(port),
    }
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether WHATWG's "ends in a number" check would treat this last label as an IPv4 part.
fn looks_numeric(label: &str) -> bool {
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> String {
        parse_authority(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    #[test]
    fn accepted_forms_and_their_canonical_text() {
        for (input, want) in [
            ("app.example.com", "app.example.com"),
            ("APP.Example.COM:8443", "app.example.com:8443"),
            ("app.example.com.", "app.example.com"),
            ("app.example.com.:80", "app.example.com:80"),
            ("localhost", "localhost"),
            ("_svc.internal", "_svc.internal"),
            ("a1.b-2.c3", "a1.b-2.c3"),
            ("10.0.0.5", "10.0.0.5"),
            ("10.0.0.5:3000", "10.0.0.5:3000"),
            ("[::1]", "[::1]"),
            ("[::1]:4180", "[::1]:4180"),
            ("[2001:DB8::0:1]:443", "[2001:db8::1]:443"),
            ("[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]"),
            ("a.b:65535", "a.b:65535"),
            ("a.b:1", "a.b:1"),
            ("x.0xg", "x.0xg"),
        ] {
            assert_eq!(ok(input), want, "{input}");
        }
        assert_eq!(
            parse_authority("Hr.Example.Test:1").unwrap(),
            HostPort {
                host: Host::Name("hr.example.test".into()),
                port: Some(1)
            }
        );
        assert_eq!(
            parse_host("127.0.0.1").unwrap(),
            Host::Ipv4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn refused_forms_say_why() {
        use HostError::*;
        for (input, want) in [
            ("", Empty),
            (":80", Empty),
            ("hr.example.test:1@other", Userinfo),
            ("user@app.example.com", Userinfo),
            ("app.example.com ", Whitespace),
            ("app example.com", Whitespace),
            ("app.example.com\t", Whitespace),
            ("app\x7f.com", Whitespace),
            ("app.example.com/x", Delimiter),
            ("app.example.com\\x", Delimiter),
            ("app.example.com?", Delimiter),
            ("app.example.com#", Delimiter),
            ("例子.中国", NonAscii),
            ("a.b::80", ExtraColon),
            ("a.b:80:81", ExtraColon),
            ("::1", ExtraColon),
            ("a.b:", BadPort),
            ("a.b:0", BadPort),
            ("a.b:65536", BadPort),
            ("a.b:+80", BadPort),
            ("a.b:080800", BadPort),
            ("a.b:http", BadPort),
            ("[::1", BadIpv6),
            ("[::1]x", BadIpv6),
            ("[::1]:", BadPort),
            ("[fe80::1%25eth0]", BadIpv6),
            ("[v1.x]", BadIpv6),
            ("[1.2.3.4]", BadIpv6),
            ("a..b", BadName),
            (".a.b", BadName),
            ("a.b..", BadName),
            (".", BadName),
            ("-a.b", BadName),
            ("a-.b", BadName),
            ("a*.b", BadName),
            ("*.example.com", BadName),
            ("a%2eb", BadName),
            ("a]b", BadName),
            ("a.123", NumericName),
            ("1.2.3", NumericName),
            ("0x7f.1", NumericName),
            ("a.0x1f", NumericName),
            ("a.0x", NumericName),
            ("01.2.3.4", NumericName),
            ("256.1.1.1", NumericName),
            ("1.2.3.4.5", NumericName),
        ] {
            assert_eq!(parse_authority(input), Err(want), "{input:?}");
        }
        let long = format!("{}.com", "a.".repeat(130));
        assert_eq!(parse_host(&long), Err(TooLong));
        assert_eq!(parse_host(&format!("{}.com", "a".repeat(64))), Err(BadName));
        assert_eq!(parse_host("a.b:80"), Err(ExtraColon));
    }

    #[test]
    fn canonical_borrows_names() {
        let h = parse_host("Example.COM").unwrap();
        assert!(matches!(h.canonical(), Cow::Borrowed("example.com")));
        assert_eq!(parse_host("[::1]").unwrap().canonical(), "[::1]");
    }

    /// Strings built from the characters that matter to host parsing, plus anything at all.
    fn hostish() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex(r"[a-zA-Z0-9._:@/\\\[\] %x-]{0,40}").unwrap(),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_and_accepted_values_round_trip(s in hostish()) {
            if let Ok(hp) = parse_authority(&s) {
                let text = hp.to_string();
                prop_assert!(!text.contains(['@', '/', '\\', ' ']), "{text:?}");
                prop_assert_eq!(parse_authority(&text), Ok(hp.clone()));
                prop_assert_eq!(text.to_ascii_lowercase(), text.clone());
                prop_assert!(!s.contains('@') && !s.contains(' '));
            }
            if let Ok(h) = parse_host(&s) {
                prop_assert_eq!(parse_host(&h.to_string()), Ok(h));
            }
        }

        #[test]
        fn userinfo_extra_colons_and_empty_ports_are_always_refused(
            name in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            user in "[a-z0-9:.]{0,10}",
            port in 1u16..,
        ) {
            for bad in [
                format!("{user}@{name}"),
                format!("{name}:{port}@{name}"),
                format!("{name}::{port}"),
                format!("{name}:{port}:{port}"),
                format!("{name}:"),
                "[::1]:".to_owned(),
            ] {
                prop_assert!(parse_authority(&bad).is_err(), "{:?} accepted", bad);
            }
        }
    }
}
