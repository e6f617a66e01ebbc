//! Folded readings of a canonical path: the other paths a common upstream may take it to mean.

/// A set of ways an upstream may read a path more loosely than its exact spelling.
///
/// The gateway forwards exactly the canonical path ([`crate::proxy::path::normalize_path`]), but
/// the upstream decides what that path names: Express and ASP.NET/IIS match routes without regard
/// to ASCII case; Servlet containers and Spring drop `;parameters` from each segment; Windows
/// servers drop trailing dots and spaces from each segment. So `/ADMIN`, `/admin;x`, `/admin%3Bx`
/// and `/admin.` can all be `/admin` to some upstream, and a gateway that cannot know which one
/// it fronts must authorize a request under every reading: [`fold`] computes one, [`readings`]
/// all of them, and [`is_fixed_point`] / [`affected_by`] tell without allocating when there is
/// nothing to do (the common case). Any upstream applies some subset of these folds;
/// [`Fold::subsets`] lists all 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fold(u8);

impl Fold {
    /// The exact spelling.
    pub const EXACT: Fold = Fold(0);
    /// ASCII letters compared without case (Express by default, ASP.NET/IIS, Spring with
    /// case-insensitive matching). Percent-escapes keep their (upper-case) hex digits.
    pub const CASE: Fold = Fold(1);
    /// Each segment ends at its first `;` or `%3B` (Servlet containers, Spring, Jetty).
    pub const PARAMS: Fold = Fold(2);
    /// Trailing `.` and `%20` are dropped from each segment (Windows: IIS, ASP.NET, Kestrel on
    /// Windows file systems), and from its name before any `;parameters` too, so that the folds
    /// commute (`a.;x` reads as `a;x`, and as `a` with [`Fold::PARAMS`]).
    pub const TRAILING: Fold = Fold(4);
    /// All three.
    pub const ALL: Fold = Fold(7);

    /// Every subset of [`Fold::ALL`], [`Fold::EXACT`] first.
    pub fn subsets() -> impl Iterator<Item = Fold> {
        (0..8).map(Fold)
    }

    /// Whether every fold in `other` is in `self`.
    pub fn contains(self, other: Fold) -> bool {
        self.0 & other.0 == other.0
    }

    /// A dense index in `0..8`, for per-subset tables.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::ops::BitOr for Fold {
    type Output = Fold;
    fn bitor(self, rhs: Fold) -> Fold {
        Fold(self.0 | rhs.0)
    }
}

/// The reading of canonical `path` by an upstream that applies the folds in `how`.
///
/// Per segment, a segment being `name` and optional `;parameters` (from the first `;` or `%3B`):
/// drop trailing `.` and `%20` from both parts ([`Fold::TRAILING`]), drop the parameters
/// ([`Fold::PARAMS`]), lower-case ASCII letters outside percent-escapes ([`Fold::CASE`]). Each
/// fold works on every segment alike and they commute. A segment that becomes empty is dropped (upstreams merge `//`); if it was the
/// last one, the result keeps a trailing slash (`/a/%20` reads as `/a/`).
///
/// For a canonical path the result is canonical too (a fixed point of `normalize_path`, so
/// never `//` nor a `.`/`..` segment: `normalize_path` refuses segments made only of dots and
/// spaces), and folding is idempotent. Any composition of folds, in any order, is again one of
/// the [`readings`], so listing the 8 subsets covers every upstream that applies these rules.
pub fn fold(path: &str, how: Fold) -> String {
    let mut out = String::with_capacity(path.len());
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut segments = body.split('/').peekable();
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let (mut name, mut params) = split_params(segment);
        if how.contains(Fold::TRAILING) {
            name = without_trailing_dots_and_spaces(name);
            params = without_trailing_dots_and_spaces(params);
        }
        if how.contains(Fold::PARAMS) {
            params = "";
        }
        if name.is_empty() && params.is_empty() {
            trailing_slash = segments.peek().is_none();
            continue;
        }
        out.push('/');
        for part in [name, params] {
            if how.contains(Fold::CASE) {
                push_lowercase(&mut out, part);
            } else {
                out.push_str(part);
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// Every distinct reading of canonical `path` ([`fold`] under each of the 8 subsets), the exact
/// path first. At most 8 entries; exactly `[path]` when [`is_fixed_point`].
pub fn readings(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(8);
    for how in Fold::subsets() {
        let r = fold(path, how);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Whether canonical `path` reads the same under every fold (no ASCII upper-case letter outside
/// an escape, no `;` or `%3B`, no segment or segment name ending in `.` or `%20`), i.e.
/// `fold(path, how) == path` for every `how`. Scans once and never allocates.
pub fn is_fixed_point(path: &str) -> bool {
    affected_by(path) == Fold::EXACT
}

/// The folds that can change canonical `path` (an over-approximation: a fold not in the result
/// leaves it unchanged, so `fold(path, how) == fold(path, how ∩ affected_by(path))`). Scans once
/// and never allocates; a path with an empty inner segment (not canonical) is affected by all.
pub fn affected_by(path: &str) -> Fold {
    let b = path.as_bytes();
    let is_params = |i: usize| {
        b.get(i) == Some(&b';')
            || b.get(i..i + 3)
                .is_some_and(|e| e.eq_ignore_ascii_case(b"%3B"))
    };
    // Where a segment's name or the segment itself ends: trailing dots and spaces go there.
    let name_ends = |i: usize| i == b.len() || b[i] == b'/' || is_params(i);
    let mut found = Fold::EXACT;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'A'..=b'Z' => found = found | Fold::CASE,
            b'.' if name_ends(i + 1) => found = found | Fold::TRAILING,
            b'/' if i > 0 && b[i - 1] == b'/' => return Fold::ALL,
            b'%' => {
                if is_params(i) {
                    found = found | Fold::PARAMS;
                } else if b.get(i + 1..i + 3) == Some(b"20".as_slice()) && name_ends(i + 3) {
                    found = found | Fold::TRAILING;
                }
                i += 3;
                continue;
            }
            _ if is_params(i) => found = found | Fold::PARAMS,
            _ => {}
        }
        i += 1;
    }
    found
}

/// `segment` split before its first `;` or `%3B` (the second part is empty without one).
fn split_params(segment: &str) -> (&str, &str) {
    let b = segment.as_bytes();
    let cut = (0..b.len()).find(|&i| {
        b[i] == b';'
            || (b[i] == b'%'
                && b.get(i + 1..i + 3)
                    .is_some_and(|e| e.eq_ignore_ascii_case(b"3B")))
    });
    segment.split_at(cut.unwrap_or(segment.len()))
}

fn without_trailing_dots_and_spaces(mut segment: &str) -> &str {
    loop {
        if let Some(s) = segment.strip_suffix('.') {
            segment = s;
        } else if let Some(s) = segment.strip_suffix("%20") {
            segment = s;
        } else {
            return segment;
        }
    }
}

fn push_lowercase(out: &mut String, segment: &str) {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if c == '%' {
            // The escape's hex digits are not letters of the path: canonical form keeps them
            // upper-case, and so must the reading.
            out.extend(chars.by_ref().take(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::path::normalize_path;
    use proptest::prelude::*;

    fn all(path: &str) -> Vec<String> {
        readings(path)
    }

    #[test]
    fn each_fold_on_its_own() {
        for (path, how, want) in [
            ("/ADMIN", Fold::CASE, "/admin"),
            ("/Admin/X%C3%A9", Fold::CASE, "/admin/x%C3%A9"),
            ("/a%3Bb", Fold::CASE, "/a%3Bb"),
            ("/admin;x", Fold::PARAMS, "/admin"),
            ("/admin%3Bx/y", Fold::PARAMS, "/admin/y"),
            ("/admin%3bx", Fold::PARAMS, "/admin"),
            ("/a;x/b;y/", Fold::PARAMS, "/a/b/"),
            ("/;x/admin", Fold::PARAMS, "/admin"),
            ("/a/;x", Fold::PARAMS, "/a/"),
            ("/a.%20;x.", Fold::TRAILING, "/a;x"),
            ("/%20;x", Fold::TRAILING, "/;x"),
            ("/admin.", Fold::TRAILING, "/admin"),
            ("/admin.%20./x", Fold::TRAILING, "/admin/x"),
            ("/admin%20", Fold::TRAILING, "/admin"),
            ("/a/%20", Fold::TRAILING, "/a/"),
            ("/%20/a", Fold::TRAILING, "/a"),
            ("/x.y", Fold::TRAILING, "/x.y"),
            ("/.x.", Fold::TRAILING, "/.x"),
            ("/", Fold::ALL, "/"),
            ("/a/", Fold::ALL, "/a/"),
            ("/A.;B/", Fold::ALL, "/a/"),
            ("/Admin%20;x", Fold::ALL, "/admin"),
            ("/aDmIn;x", Fold::ALL, "/admin"),
        ] {
            assert_eq!(fold(path, how), want, "fold({path:?}, {how:?})");
        }
    }

    #[test]
    fn order_of_params_and_trailing_does_not_matter_for_the_set() {
        // Trailing dots go from the name as well as from the parameters, so dropping them
        // before or after the parameters gives the same reading.
        assert_eq!(fold("/a.;b.", Fold::TRAILING), "/a;b");
        for (first, then) in [
            (Fold::TRAILING, Fold::PARAMS),
            (Fold::PARAMS, Fold::TRAILING),
        ] {
            assert_eq!(fold(&fold("/%20/a.;b.", first), then), "/a");
        }
        assert_eq!(all("/a.;b."), ["/a.;b.", "/a.", "/a;b", "/a"]);
    }

    #[test]
    fn readings_are_deduplicated_exact_first() {
        assert_eq!(all("/admin"), ["/admin"]);
        assert_eq!(all("/ADMIN"), ["/ADMIN", "/admin"]);
        assert_eq!(
            all("/Admin.;x"),
            [
                "/Admin.;x",
                "/admin.;x",
                "/Admin.",
                "/admin.",
                "/Admin;x",
                "/admin;x",
                "/Admin",
                "/admin"
            ]
        );
    }

    #[test]
    fn fixed_points() {
        for p in [
            "/",
            "/admin",
            "/a/b/",
            "/x.y/z",
            "/%E4%B8%AD",
            "/a%20b",
            "/.x",
            "/a-_~",
        ] {
            assert!(is_fixed_point(p), "{p}");
            assert_eq!(all(p), [p]);
        }
        for p in [
            "/Admin", "/a;b", "/a%3Bb", "/a%3bb", "/a.", "/a./b", "/a%20", "/a%20/b",
        ] {
            assert!(!is_fixed_point(p), "{p}");
            assert!(all(p).len() > 1, "{p}");
        }
        // Not canonical, and not a fixed point either.
        assert!(!is_fixed_point("//a"));
        for (p, want) in [
            ("/Admin", Fold::CASE),
            ("/a%3Bb", Fold::PARAMS),
            ("/a.;b", Fold::PARAMS | Fold::TRAILING),
            ("/a%20%3Bb", Fold::PARAMS | Fold::TRAILING),
            ("/A./b%20", Fold::CASE | Fold::TRAILING),
            ("/%E4%B8%AD/x.y", Fold::EXACT),
        ] {
            assert_eq!(affected_by(p), want, "{p}");
        }
    }

    /// Pieces that exercise the folds and normalization together.
    const PIECES: &[&str] = &[
        "/",
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "a",
        "B",
        "Zz",
        "%41",
        "%20",
        " ",
        "%25",
        "%3B",
        "%3b",
        ";",
        "=",
        "~",
        "中",
        "%E4%B8%AD",
        "é",
        "?",
        "%23",
        "+",
        "@",
        ":",
        "x",
        "%252e",
        "..;",
        ".;",
        "A.",
        "b. ",
        "%5C",
        "%00",
    ];

    fn raw_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..14)
            .prop_map(|pieces| format!("/{}", pieces.concat()))
    }

    fn canonical() -> impl Strategy<Value = String> {
        raw_path().prop_filter_map("refused by normalize_path", |raw| normalize_path(&raw).ok())
    }

    fn subset() -> impl Strategy<Value = Fold> {
        (0u8..8).prop_map(Fold)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn folding_is_idempotent_and_stays_canonical(p in canonical(), how in subset()) {
            let once = fold(&p, how);
            prop_assert_eq!(&fold(&once, how), &once);
            prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
            prop_assert!(!once.contains("//"), "{} from {}", once, p);
            prop_assert!(
                !once.split('/').any(|s| s == "." || s == ".."),
                "{} from {}", once, p
            );
        }

        #[test]
        fn full_folding_reaches_a_fixed_point(p in canonical()) {
            let folded = fold(&p, Fold::ALL);
            prop_assert!(is_fixed_point(&folded), "{}", folded);
            for how in Fold::subsets() {
                prop_assert_eq!(fold(&folded, how), folded.clone());
            }
        }

        #[test]
        fn folds_that_do_not_affect_a_path_change_nothing(p in canonical(), how in subset()) {
            let affected = affected_by(&p);
            prop_assert_eq!(fold(&p, how), fold(&p, Fold(how.0 & affected.0)), "{:?}", affected);
        }

        #[test]
        fn a_fixed_point_has_no_other_reading(p in canonical()) {
            let fixed = is_fixed_point(&p);
            prop_assert_eq!(fixed, fold(&p, Fold::ALL) == p, "{}", p);
            if fixed {
                prop_assert_eq!(readings(&p), vec![p.clone()]);
            }
        }

        #[test]
        fn readings_are_closed_under_composition(p in canonical(), a in subset(), b in subset()) {
            let all = readings(&p);
            prop_assert_eq!(&all[0], &p);
            prop_assert!(all.len() <= 8);
            let twice = fold(&fold(&p, a), b);
            prop_assert!(all.contains(&twice), "{} via {:?} then {:?} = {} not in {:?}", p, a, b, twice, all);
        }
    }
}
