//! The upstream URI of a forwarded request, from parts of the upstream URL parsed once at startup.

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// An upstream base URL split into the parts a request URI is built from.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    scheme: Scheme,
    authority: Authority,
    /// The URL's path without its trailing `/` (empty for `http://host:port/`).
    path: String,
}

impl UpstreamBase {
    /// Splits an http(s) URL with a host (validated config guarantees both).
    pub fn new(url: &url::Url) -> Result<Self, http::Error> {
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => Authority::try_from(format!("{host}:{p}"))?,
            None => Authority::try_from(host)?,
        };
        Ok(Self {
            scheme: Scheme::try_from(url.scheme())?,
            authority,
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The upstream URI: base path + the normalized (authorized) `path` + the original query.
    /// When nothing changes the request's own path and query (no base path, normalization left
    /// the path as sent), they are reused as they are: no copy, no allocation.
    pub fn uri(&self, path: &str, original: &Uri) -> Result<Uri, http::Error> {
        let reuse = original
            .path_and_query()
            .filter(|pq| self.path.is_empty() && pq.path() == path);
        let path_and_query = match reuse {
            Some(pq) => pq.clone(),
            None => {
                let query = original.query();
                let mut out = String::with_capacity(
                    self.path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
                );
                out.push_str(&self.path);
                out.push_str(path);
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
                PathAndQuery::from_maybe_shared(Bytes::from(out))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(base: &str, path: &str, original: &str) -> String {
        let base = UpstreamBase::new(&url::Url::parse(base).unwrap()).unwrap();
        base.uri(path, &original.parse().unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn joins_base_path_and_keeps_query() {
        assert_eq!(
            uri(
                "http://127.0.0.1:8080/base/",
                "/a/b",
                "/a/./b?x=1&y=%E4%B8%AD"
            ),
            "http://127.0.0.1:8080/base/a/b?x=1&y=%E4%B8%AD"
        );
        assert_eq!(uri("http://app.internal", "/", "/"), "http://app.internal/");
        assert_eq!(
            uri("https://[::1]:8443", "/x", "/x?q"),
            "https://[::1]:8443/x?q"
        );
    }

    #[test]
    fn the_normalized_path_is_forwarded_never_the_raw_one() {
        assert_eq!(
            uri("http://up:1", "/admin", "/public/../admin?a=1"),
            "http://up:1/admin?a=1"
        );
        assert_eq!(uri("http://up:1", "/a%2Fb", "/a%2fb"), "http://up:1/a%2Fb");
        // Unchanged: reused as sent.
        assert_eq!(uri("http://up:1", "/a/b", "/a/b?c"), "http://up:1/a/b?c");
    }
}
