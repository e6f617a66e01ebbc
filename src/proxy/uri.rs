//! The upstream request target and `Host` of a forwarded request, from the upstream URL parsed
//! once at startup.

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri};

/// An upstream base URL split into the parts a request is built from.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    /// `host[:port]` of the URL (the port only when it is not the scheme's default).
    host: HeaderValue,
    /// The URL's path without its trailing `/` (empty for `http://host:port/`).
    path: String,
}

impl UpstreamBase {
    /// Splits an http(s) URL with a host (validated config guarantees both).
    pub fn new(url: &url::Url) -> Result<Self, http::Error> {
        let host = url.host_str().unwrap_or_default();
        let host = match url.port() {
            Some(p) => HeaderValue::try_from(format!("{host}:{p}"))?,
            None => HeaderValue::try_from(host)?,
        };
        Ok(Self {
            host,
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` an upstream gets when the client's is not passed on: the URL's authority.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target in origin form (RFC 9112 §3.2.1, what an HTTP/1.1 origin server
    /// expects): base path + the normalized (authorized) `path` + the original query.
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
        Ok(Uri::from(path_and_query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Host` and target, as they would be written on the wire.
    fn uri(base: &str, path: &str, original: &str) -> String {
        let base = UpstreamBase::new(&url::Url::parse(base).unwrap()).unwrap();
        let target = base.uri(path, &original.parse().unwrap()).unwrap();
        format!("{}{target}", base.host().to_str().unwrap())
    }

    #[test]
    fn joins_base_path_and_keeps_query() {
        assert_eq!(
            uri(
                "http://127.0.0.1:8080/base/",
                "/a/b",
                "/a/./b?x=1&y=%E4%B8%AD"
            ),
            "127.0.0.1:8080/base/a/b?x=1&y=%E4%B8%AD"
        );
        assert_eq!(uri("http://app.internal", "/", "/"), "app.internal/");
        assert_eq!(uri("https://app.internal:443", "/", "/"), "app.internal/");
        assert_eq!(uri("https://[::1]:8443", "/x", "/x?q"), "[::1]:8443/x?q");
    }

    #[test]
    fn the_normalized_path_is_forwarded_never_the_raw_one() {
        assert_eq!(
            uri("http://up:1", "/admin", "/public/../admin?a=1"),
            "up:1/admin?a=1"
        );
        assert_eq!(uri("http://up:1", "/a%2Fb", "/a%2fb"), "up:1/a%2Fb");
        // Unchanged: reused as sent.
        assert_eq!(uri("http://up:1", "/a/b", "/a/b?c"), "up:1/a/b?c");
    }
}
