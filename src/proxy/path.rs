//! Request-path canonicalization: the one form of a path that is both authorized and forwarded.
//!
//! Authorizing one spelling of a path and forwarding another is the classic way around a
//! path-based access rule (`/public/../admin`, `/admin%2F..`, `//admin`, `/static/..;/admin`).
//! [`normalize_path`] therefore turns every spelling into a single canonical string, and the
//! gateway both matches routes against it and forwards exactly it. Anything whose meaning could
//! differ between this gateway and the upstream is refused instead of guessed at.

/// The longest request path accepted, in bytes, before and after canonicalization.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why a request path was refused (the request should be answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (for example `*` or an empty path).
    #[error("the request path is not absolute")]
    NotAbsolute,
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded
    /// (overlong forms such as `%C0%AF` included).
    #[error("the request path has an invalid percent-encoding or is not UTF-8")]
    BadEncoding,
    /// A control character (NUL, CR, LF, DEL, C1 controls …), raw or percent-encoded.
    #[error("the request path contains a control character")]
    ControlCharacter,
    /// A backslash, raw or percent-encoded.
    #[error("the request path contains a backslash")]
    Backslash,
    /// A segment that some servers read as a dot segment and others as a name: one made only of
    /// dots and spaces (with at least one dot) before any `;` parameters, other than a plain `.`
    /// or `..` — `..;`, `.;jsessionid=x`, `...`, `.. `, `. .` (see [`crate::proxy::fold`]).
    #[error("the request path contains an ambiguous dot segment")]
    AmbiguousSegment,
    /// Longer than [`MAX_PATH_BYTES`], before or after canonicalization.
    #[error("the request path is too long")]
    TooLong,
}

/// The canonical form of a request path (percent-encoded, without the query).
///
/// Steps, in order:
/// 1. Percent-escapes are decoded exactly once, `%2F` and `%2E` included, so `/admin%2F..` and
///    `/%2e%2e/` are resolved like `/admin/..` and `/../`. The decoded bytes must be UTF-8
///    (overlong forms are not UTF-8), without control characters or backslashes.
/// 2. Empty segments (duplicate slashes) and `.` segments are dropped; `..` removes the previous
///    segment and never climbs above the root. A path ending in `/`, `.` or `..` keeps a
///    trailing slash (RFC 3986 §5.2.4), so `/a/b/` stays `/a/b/` and `/a/b/..` becomes `/a/`.
/// 3. Each segment is re-encoded: unreserved characters (`A-Z a-z 0-9 - . _ ~`) are always
///    literal; `! $ & ' ( ) * + , ; = : @` stay as they arrived (literal or `%XX`, because
///    RFC 3986 §2.2 makes the two spellings different URIs); everything else — space, `%`,
///    `"`, `#`, `<`, `>`, `?`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}` and all non-ASCII (as UTF-8
///    bytes) — becomes `%XX` with upper-case hex.
///
/// The result always starts with `/`, is a valid `http::uri::PathAndQuery`, is no longer than
/// [`MAX_PATH_BYTES`], and is a fixed point: `normalize_path(&normalize_path(p)?) == normalize_path(p)`.
/// Case is preserved; matching on the result is case-sensitive.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode(raw.as_bytes())?;
    let text = std::str::from_utf8(&decoded.bytes).map_err(|_| PathError::BadEncoding)?;
    // Controls are checked on characters, not bytes, so that the C1 range (U+0080–U+009F, which
    // some consoles and log viewers interpret) is caught as well as ASCII controls.
    if text.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    // IIS, ASP.NET and several other stacks treat `\` as a path separator and resolve
    // `\..\` against it; Unix servers treat it as an ordinary character. No single
    // interpretation is safe for every upstream, so the path is refused.
    if decoded.bytes.contains(&b'\\') {
        return Err(PathError::Backslash);
    }

    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut trailing_slash;
    let mut start = 1;
    loop {
        let end = decoded.bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(decoded.bytes.len(), |i| start + i);
        let segment = &decoded.bytes[start..end];
        match segment {
            b"" | b"." => trailing_slash = true,
            b".." => {
                stack.pop();
                trailing_slash = true;
            }
            // Servlet containers strip `;params` before resolving dot segments, so to them
            // `/static/..;/admin` is `/admin` while to everyone else it is below `/static`.
            // Windows servers drop trailing dots and spaces, so `.. ` or `...` may become `..`
            // or nothing. No reading of such a segment is safe for every upstream.
            _ if is_dot_like(segment) => {
                return Err(PathError::AmbiguousSegment);
            }
            _ => {
                stack.push((start, end));
                trailing_slash = false;
            }
        }
        if end == decoded.bytes.len() {
            break;
        }
        start = end + 1;
    }

    let mut out = String::with_capacity(raw.len() + 8);
    for &(s, e) in &stack {
        out.push('/');
        for i in s..e {
            push_encoded(&mut out, decoded.bytes[i], decoded.was_escaped[i]);
        }
    }
    if stack.is_empty() || trailing_slash {
        out.push('/');
    }
    if out.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// Whether a decoded segment (not `.` or `..`) is made only of dots and spaces, with at least
/// one dot, before its first `;`.
fn is_dot_like(segment: &[u8]) -> bool {
    let head = segment
        .iter()
        .position(|&b| b == b';')
        .map_or(segment, |i| &segment[..i]);
    head.contains(&b'.') && head.iter().all(|&b| b == b'.' || b == b' ')
}

/// Decoded bytes, each with whether it arrived as a `%XX` escape.
struct Decoded {
    bytes: Vec<u8>,
    was_escaped: Vec<bool>,
}

fn decode(raw: &[u8]) -> Result<Decoded, PathError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut was_escaped = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hi = raw.get(i + 1).and_then(|&b| hex_value(b));
            let lo = raw.get(i + 2).and_then(|&b| hex_value(b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEncoding);
            };
            bytes.push((hi << 4) | lo);
            was_escaped.push(true);
            i += 3;
        } else {
            bytes.push(raw[i]);
            was_escaped.push(false);
            i += 1;
        }
    }
    Ok(Decoded { bytes, was_escaped })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8, was_escaped: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let literal = match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => true,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':'
        | b'@' => !was_escaped,
        _ => false,
    };
    if literal {
        out.push(char::from(b));
    } else {
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(raw: &str) -> Result<String, PathError> {
        normalize_path(raw)
    }

    fn ok(raw: &str) -> String {
        n(raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        for (raw, want) in [
            ("/", "/"),
            ("/public/../admin", "/admin"),
            ("//admin", "/admin"),
            ("///admin//x", "/admin/x"),
            ("/a/./b//c/", "/a/b/c/"),
            ("/../../etc", "/etc"),
            ("/..", "/"),
            ("/.", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../", "/a/"),
            ("/a/..", "/"),
            ("/a/../../b/./c/..", "/b/"),
            ("/a/", "/a/"),
            ("/a", "/a"),
            ("/a..b/.x/x.", "/a..b/.x/x."),
        ] {
            assert_eq!(ok(raw), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn encoded_slashes_and_dots_are_resolved_like_plain_ones() {
        for (raw, want) in [
            ("/admin%2F..", "/"),
            ("/admin%2f..%2f", "/"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/%2e%2e/", "/"),
            ("/%2E%2E/%2e%2E/etc", "/etc"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/a%2Fb", "/a/b"),
            ("/%2F%2Fadmin", "/admin"),
            ("/%2e/admin", "/admin"),
        ] {
            assert_eq!(ok(raw), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn decoding_happens_exactly_once() {
        // `%252e` is the text `%2e`, not a dot: it must survive as `%252e`.
        assert_eq!(ok("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(ok("/a%252Fb"), "/a%252Fb");
        assert_eq!(ok("/100%25"), "/100%25");
    }

    #[test]
    fn reencoding_is_canonical() {
        assert_eq!(ok("/%E4%B8%AD%E6%96%87"), "/%E4%B8%AD%E6%96%87");
        assert_eq!(ok("/%e4%b8%ad%e6%96%87"), "/%E4%B8%AD%E6%96%87");
        assert_eq!(ok("/中文"), "/%E4%B8%AD%E6%96%87");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a b"), "/a%20b");
        assert_eq!(ok("/%41%7e%2D%5f"), "/A~-_");
        for (raw, want) in [
            ("/%3F", "/%3F"),
            ("/%23", "/%23"),
            (
                "/%22%3C%3E%5B%5D%5E%60%7B%7C%7D",
                "/%22%3C%3E%5B%5D%5E%60%7B%7C%7D",
            ),
            ("/a?b#c", "/a%3Fb%23c"),
        ] {
            assert_eq!(ok(raw), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn reserved_characters_keep_their_spelling() {
        assert_eq!(ok("/a;b=c,d:e@f!$&'()*+"), "/a;b=c,d:e@f!$&'()*+");
        assert_eq!(ok("/a%3Bb%3dc%2B"), "/a%3Bb%3Dc%2B");
        assert_ne!(ok("/a;b"), ok("/a%3Bb"));
    }

    #[test]
    fn case_is_preserved() {
        assert_eq!(ok("/ADMIN"), "/ADMIN");
        assert_eq!(ok("/Admin/X"), "/Admin/X");
        assert_ne!(ok("/ADMIN"), ok("/admin"));
    }

    #[test]
    fn bad_input_is_refused() {
        for (raw, want) in [
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
            ("%2Fadmin", PathError::NotAbsolute),
            ("/%00", PathError::ControlCharacter),
            ("/a%0d%0aSet-Cookie:x", PathError::ControlCharacter),
            ("/a%0A", PathError::ControlCharacter),
            ("/a%09b", PathError::ControlCharacter),
            ("/a%7F", PathError::ControlCharacter),
            ("/a%C2%85", PathError::ControlCharacter),
            ("/a\nb", PathError::ControlCharacter),
            ("/%ZZ", PathError::BadEncoding),
            ("/%", PathError::BadEncoding),
            ("/%4", PathError::BadEncoding),
            ("/a%G1", PathError::BadEncoding),
            ("/%C0%AF", PathError::BadEncoding),
            ("/%C0%AE%C0%AE/admin", PathError::BadEncoding),
            ("/%E0%80%AF", PathError::BadEncoding),
            ("/%FF", PathError::BadEncoding),
            ("/%E4%B8", PathError::BadEncoding),
            ("/%ED%A0%80", PathError::BadEncoding),
            ("/a\\b", PathError::Backslash),
            ("/public%5C..%5Cadmin", PathError::Backslash),
            ("/public%5c", PathError::Backslash),
            ("/static/..;/admin", PathError::AmbiguousSegment),
            ("/static/.;/admin", PathError::AmbiguousSegment),
            ("/static/..%3B/admin", PathError::AmbiguousSegment),
            ("/static/%2e%2e;x/admin", PathError::AmbiguousSegment),
            ("/...", PathError::AmbiguousSegment),
            ("/a/.../b", PathError::AmbiguousSegment),
            ("/a/..%20/b", PathError::AmbiguousSegment),
            ("/a/.%20", PathError::AmbiguousSegment),
            ("/a/%2e%20%2e;x", PathError::AmbiguousSegment),
            ("/a/...;x/b", PathError::AmbiguousSegment),
        ] {
            assert_eq!(n(raw), Err(want), "normalize({raw:?})");
        }
        // Parameters on ordinary segments are fine.
        assert_eq!(ok("/app;jsessionid=1/x"), "/app;jsessionid=1/x");
        assert_eq!(ok("/a.;b"), "/a.;b");
        // Dots with other characters, or spaces alone, are names.
        assert_eq!(ok("/a..b/.x/x./x. /%20"), "/a..b/.x/x./x.%20/%20");
        assert_eq!(ok("/;x/a"), "/;x/a");
    }

    #[test]
    fn length_is_bounded_before_and_after() {
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert_eq!(ok(&long).len(), MAX_PATH_BYTES);
        let too_long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(n(&too_long), Err(PathError::TooLong));
        // Short enough as received, too long once spaces become `%20`.
        let grows = format!("/{}", " ".repeat(MAX_PATH_BYTES / 2));
        assert_eq!(n(&grows), Err(PathError::TooLong));
        // Long as received, short once resolved: refused anyway, the bound is on input too.
        let dots = format!("/a{}", "/.".repeat(MAX_PATH_BYTES));
        assert_eq!(n(&dots), Err(PathError::TooLong));
    }

    /// Pieces that exercise every normalization step and their interplay.
    const PIECES: &[&str] = &[
        "/",
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "a",
        "B",
        "%41",
        "%20",
        " ",
        "%25",
        "%3B",
        ";",
        "=",
        "%3d",
        "~",
        "%7e",
        "中",
        "%E4%B8%AD",
        "%C3",
        "%A9",
        "?",
        "#",
        "%23",
        "%3F",
        "+",
        "@",
        ":",
        "%",
        "%5C",
        "%00",
        "..;",
        "x",
        "%252e",
        "%252F",
        "é",
        "[",
        "%5b",
        "...",
        ". ",
    ];

    fn pieced() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..14)
            .prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    fn check_canonical(raw: &str) -> Result<(), TestCaseError> {
        let Ok(once) = normalize_path(raw) else {
            return Ok(());
        };
        prop_assert_eq!(normalize_path(&once), Ok(once.clone()), "raw {:?}", raw);
        prop_assert!(once.starts_with('/'), "{:?}", once);
        prop_assert!(!once.contains("//"), "{:?} from {:?}", once, raw);
        prop_assert!(once.len() <= MAX_PATH_BYTES);
        prop_assert!(
            !once
                .split('/')
                .any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e")),
            "{:?} from {:?}",
            once,
            raw
        );
        let escapes: Vec<&str> = once
            .match_indices('%')
            .map(|(i, _)| &once[i + 1..i + 3])
            .collect();
        prop_assert!(
            !escapes
                .iter()
                .any(|e| e.eq_ignore_ascii_case("2F") || e.eq_ignore_ascii_case("5C"))
                && !once.contains('\\'),
            "{:?} has an encoded separator",
            once
        );
        prop_assert!(
            once.parse::<http::uri::PathAndQuery>()
                .is_ok_and(|pq| pq.path() == once && pq.query().is_none()),
            "{:?} is not a plain URI path",
            once
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn output_is_a_fixed_point_and_a_valid_uri_path(raw in pieced()) {
            check_canonical(&raw)?;
        }

        #[test]
        fn any_text_is_refused_or_canonical(raw in "/\\PC{0,40}") {
            check_canonical(&raw)?;
        }
    }

    #[test]
    fn fixed_point_on_the_named_examples() {
        for raw in [
            "/public/../admin",
            "/admin%2F..",
            "//admin",
            "/a/./b//c/",
            "/../../etc",
            "/%E4%B8%AD%E6%96%87",
            "/a%20b",
            "/ADMIN",
            "/a%3Bb;c",
        ] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "from {raw:?}");
        }
    }
}
