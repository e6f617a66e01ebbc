//! Forwarding to the upstream: pooled client, streamed bodies, identity headers, timeouts, upgrades.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

use crate::body::GatewayBody;
use crate::config::{IdentityHeaders, UpstreamConfig};
use crate::identity::Identity;
use crate::proxy::headers::{
    identity_header_value, is_upgrade_request, remove_hop_by_hop, set_forwarded, strip_cookies,
    strip_protected,
};
use crate::proxy::names::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::proxy::tls::UpstreamTls;
use crate::routes::Route;
use crate::state::AppState;

/// A pooled HTTP/1 client to upstreams (http, or https with one TLS setting).
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Every pooled upstream client, indexed by [`Route::client`]: one per distinct TLS setting.
pub struct UpstreamClients(Vec<UpstreamClient>);

impl UpstreamClients {
    /// The client of `route`.
    pub fn of(&self, route: &Route) -> &UpstreamClient {
        // `RouteTable::new` numbers the clients, and `build` makes one for each number.
        &self.0[route.client]
    }
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, DNS failure or a broken response.
    #[error("upstream unreachable or failed")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// No response head within the configured timeout.
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake with an https upstream failed (untrusted or wrong certificate,
    /// refused client certificate, ...).
    #[error(transparent)]
    Tls(Box<TlsFailure>),
    /// The forwarded URI could not be built from the request.
    #[error("cannot build the upstream URI")]
    BadUri(#[source] http::Error),
}

/// A failed TLS handshake with the upstream of a route.
#[derive(Debug, thiserror::Error)]
#[error(
    "TLS handshake with the upstream of route `{route}` failed (certificate checked for `{name}`)"
)]
pub struct TlsFailure {
    /// The route's name.
    pub route: String,
    /// The name the certificate was checked for (SNI).
    pub name: String,
    /// The connection error, with the rustls error inside.
    #[source]
    pub source: hyper_util::client::legacy::Error,
}

/// Builds the pooled upstream clients (once, at startup): `tls[i]` configures client `i`;
/// `None` (http upstreams) gets a TLS config that trusts nothing.
pub fn build_upstream_clients(
    cfg: &UpstreamConfig,
    tls: Vec<Option<UpstreamTls>>,
) -> Result<UpstreamClients, rustls::Error> {
    let mut clients = Vec::with_capacity(tls.len());
    for tls in tls {
        let (tls_config, server_name) = match tls {
            Some(t) => (t.config, t.settings.server_name),
            None => (Arc::new(crate::proxy::tls::plain_config()?), None),
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        // Validation parsed the name already; a failure here would be a bug, refused all the same.
        let resolver: Arc<dyn ResolveServerName + Send + Sync> = match server_name {
            Some(name) => Arc::new(FixedServerNameResolver::new(
                ServerName::try_from(name)
                    .map_err(|e| rustls::Error::General(format!("server_name: {e}")))?,
            )),
            None => Arc::new(DefaultServerNameResolver::default()),
        };
        let connector = HttpsConnector::new(http, tls_config, false, resolver);
        clients.push(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(64)
                .build(connector),
        );
    }
    Ok(UpstreamClients(clients))
}

/// Sets the configured identity headers for `id` (after client copies were stripped).
pub fn apply_identity(headers: &mut HeaderMap, names: &IdentityHeaders, id: &Identity) {
    let mut set = |name: &Option<HeaderName>, value: Option<&str>| {
        if let (Some(name), Some(value)) = (name, value) {
            headers.insert(name.clone(), identity_header_value(value));
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
}

/// The upstream URI: upstream base path + the normalized (authorized) path + the original query.
pub fn upstream_uri(base: &url::Url, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let base_path = base.path().trim_end_matches('/');
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let authority = match base.port() {
        Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
        None => base.host_str().unwrap_or_default().to_owned(),
    };
    Uri::builder()
        .scheme(base.scheme())
        .authority(authority)
        .path_and_query(format!("{base_path}{path_and_query}"))
        .build()
}

/// Where a request goes: the route (its upstream and TLS) and the path that was authorized.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The route whose upstream receives the request.
    pub route: &'a Route,
    /// The normalized path (exactly the one the policy was checked against).
    pub path: &'a str,
    /// The request's host (the one the route was chosen by), sent as `Host` (with
    /// `pass_host_header`) and `X-Forwarded-Host`.
    pub host: Option<&'a HeaderValue>,
}

/// Forwards a request (with identity headers when `identity` is given) and returns the
/// upstream's response, streamed.
pub async fn forward(
    app: &AppState,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    identity: Option<&Identity>,
    target: Target<'_>,
) -> Result<Response<GatewayBody>, UpstreamError> {
    let upgrade = is_upgrade_request(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let uri = upstream_uri(&target.route.upstream, target.path, req.uri().query())
        .map_err(UpstreamError::BadUri)?;
    let original_host = target.host.cloned();

    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    let client_forwarded = app
        .config
        .trust_forwarded_headers
        .then(|| ClientForwarded::take(headers));
    remove_hop_by_hop(headers);
    strip_protected(headers, &app.protected);
    strip_cookies(headers, |name| app.is_own_cookie(name));
    set_forwarded(
        headers,
        peer.ip(),
        app.config.public_url.scheme(),
        original_host.as_ref(),
    );
    if let Some(prev) = client_forwarded {
        prev.merge_into(headers);
    }
    if let Some(id) = identity {
        apply_identity(headers, &app.config.headers, id);
    }
    headers.remove(header::HOST);
    if app.config.upstream.pass_host_header {
        if let Some(host) = original_host {
            headers.insert(header::HOST, host);
        }
    }
    if let Some(proto) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, proto.clone());
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, body);

    let timeout = app.config.upstream.timeout;
    let client = app.upstream.of(target.route);
    let mut resp = match tokio::time::timeout(timeout, client.request(out)).await {
        Err(_) => return Err(UpstreamError::Timeout(timeout)),
        Ok(Err(e)) => return Err(classify(e, target.route)),
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(error = %e, "upgraded connection closed with error");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, GatewayBody::empty()));
        }
    }

    let (mut parts, body) = resp.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, GatewayBody::Upstream(body)))
}

/// A failed upstream request: a TLS handshake failure names the route and the verified name.
fn classify(error: hyper_util::client::legacy::Error, route: &Route) -> UpstreamError {
    match &route.tls {
        Some(tls) if crate::proxy::tls::handshake_error(&error).is_some() => {
            UpstreamError::Tls(Box::new(TlsFailure {
                route: route.name.clone(),
                name: tls.verified_name(&route.upstream).to_owned(),
                source: error,
            }))
        }
        _ => UpstreamError::Unreachable(error),
    }
}

/// The client's own `X-Forwarded-*` values, kept only when `trust_forwarded_headers` is on.
struct ClientForwarded {
    xff: Option<HeaderValue>,
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl ClientForwarded {
    fn take(headers: &HeaderMap) -> Self {
        let get = |name: HeaderName| headers.get(name).cloned();
        Self {
            xff: get(X_FORWARDED_FOR),
            proto: get(X_FORWARDED_PROTO),
            host: get(X_FORWARDED_HOST),
        }
    }

    /// Prepends the trusted chain to our X-Forwarded-For and restores proto/host as the
    /// trusted proxy saw them.
    fn merge_into(self, headers: &mut HeaderMap) {
        if let (Some(prev), Some(ours)) = (self.xff, headers.get(X_FORWARDED_FOR)) {
            // Joined as bytes: a chain with non-ASCII bytes is kept as sent, never emptied
            // (an empty first entry would make the upstream misread who the client is).
            let joined = [prev.as_bytes(), b", ", ours.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        if let Some(p) = self.proto {
            headers.insert(X_FORWARDED_PROTO, p);
        }
        if let Some(h) = self.host {
            headers.insert(X_FORWARDED_HOST, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_forwarded_for_chain_is_kept_byte_for_byte() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        ClientForwarded {
            xff: Some(HeaderValue::from_bytes(b"1.2.3.4, \xff").unwrap()),
            proto: None,
            host: None,
        }
        .merge_into(&mut headers);
        assert_eq!(
            headers["x-forwarded-for"].as_bytes(),
            b"1.2.3.4, \xff, 10.0.0.1"
        );
    }

    #[test]
    fn upstream_uri_joins_base_path_and_keeps_query() {
        let base = url::Url::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(
            upstream_uri(&base, "/a/b", Some("x=1&y=%E4%B8%AD"))
                .unwrap()
                .to_string(),
            "http://127.0.0.1:8080/base/a/b?x=1&y=%E4%B8%AD"
        );
        let base = url::Url::parse("http://app.internal").unwrap();
        assert_eq!(
            upstream_uri(&base, "/", None).unwrap().to_string(),
            "http://app.internal/"
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
        apply_identity(&mut h, &names, &id);
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
        apply_identity(&mut h, &names, &id);
        assert_eq!(h[X_DINGTALK_USERID], "zhangsan");
        assert_eq!(h[X_DINGTALK_DEPARTMENTS], "101,300");
        assert_eq!(h[X_DINGTALK_TITLE], "%E5%B7%A5%E7%A8%8B%E5%B8%88");
    }
}
