//! The one home for non-standard header names the gateway reads, writes or strips.

use http::HeaderName;

/// `X-Forwarded-For`: the client address chain (set by the gateway).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used (set by the gateway).
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Request-Id`: the request's id (adopted from a trusted proxy or generated; sent upstream
/// and back to the client).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-Host`: the host the client asked for (set by the gateway; read in forward-auth).
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Uri`: the original request target (Traefik, Caddy forward-auth).
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
/// `X-Forwarded-Method`: the original method (Traefik, Caddy forward-auth).
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// `X-Original-URI`: the original request target (nginx `auth_request`). Read by forward-auth,
/// stripped from forwarded requests.
pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
/// `X-Real-IP`: the client address as nginx reports it (always stripped).
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Login-URL`: where a 401 tells a proxy to send the user.
pub const X_LOGIN_URL: HeaderName = HeaderName::from_static("x-login-url");
/// `X-Requested-With`: `XMLHttpRequest` marks a script request (never redirected to login).
pub const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
/// `Sec-Fetch-Mode` (Fetch Metadata).
pub const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
/// `Sec-Fetch-Dest` (Fetch Metadata).
pub const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
/// `Sec-Fetch-Site` (Fetch Metadata).
pub const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
/// `Keep-Alive` (hop-by-hop, RFC 9112 appendix C.2.2).
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (hop-by-hop, non-standard but still sent).
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `HTTP2-Settings` (hop-by-hop, h2c upgrade).
pub const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// DingTalk API: the user access token header (the only place DingTalk accepts it).
pub const X_ACS_DINGTALK_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-acs-dingtalk-access-token");
/// DingTalk API: the request id DingTalk returns (quoted in operator hints).
pub const X_ACS_REQUEST_ID: HeaderName = HeaderName::from_static("x-acs-request-id");

/// Default identity header: unionId (oauth2-proxy's name).
pub const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
/// Default identity header: e-mail (oauth2-proxy's name).
pub const X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
/// Default identity header: display name (oauth2-proxy's name).
pub const X_FORWARDED_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-forwarded-preferred-username");
/// Default identity header: unionId.
pub const X_DINGTALK_UNIONID: HeaderName = HeaderName::from_static("x-dingtalk-unionid");
/// Default identity header: display name.
pub const X_DINGTALK_NAME: HeaderName = HeaderName::from_static("x-dingtalk-name");
/// Default identity header: corpId.
pub const X_DINGTALK_CORPID: HeaderName = HeaderName::from_static("x-dingtalk-corpid");
/// Default identity header: enterprise userid.
pub const X_DINGTALK_USERID: HeaderName = HeaderName::from_static("x-dingtalk-userid");
/// Default identity header: direct department ids.
pub const X_DINGTALK_DEPARTMENTS: HeaderName = HeaderName::from_static("x-dingtalk-departments");
/// Default identity header: job title.
pub const X_DINGTALK_TITLE: HeaderName = HeaderName::from_static("x-dingtalk-title");

/// Name prefixes no client may send upstream, whatever the configuration (lower case, `-`):
/// the gateway's own families, and the identity-header families of other authentication
/// products that an application migrated from them may still trust.
pub const STRIPPED_PREFIXES: &[&str] = &[
    // The gateway's own identity headers and every forwarding header (the gateway sets the
    // ones it vouches for; X-Forwarded-Server/-Prefix/-Groups/-Port included).
    "x-dingtalk-",
    "x-forwarded-",
    // oauth2-proxy (`X-Auth-Request-User`, `-Email`, `-Groups`, `-Access-Token`, ...).
    "x-auth-request-",
    // Pomerium (`X-Pomerium-Jwt-Assertion`, `X-Pomerium-Claim-*`).
    "x-pomerium-",
    // Vouch Proxy (`X-Vouch-User`, `X-Vouch-IdP-*`).
    "x-vouch-",
    // Cloudflare Access (`Cf-Access-Authenticated-User-Email`, `Cf-Access-Jwt-Assertion`).
    "cf-access-",
    // AWS ALB OIDC (`X-Amzn-Oidc-Identity`, `-Data`, `-Accesstoken`).
    "x-amzn-oidc-",
    // Google IAP (`X-Goog-Authenticated-User-Email`, `-Id`).
    "x-goog-authenticated-user-",
    // Azure App Service authentication (`X-MS-Client-Principal`, `-Name`, `-Id`, `-Idp`).
    "x-ms-client-principal",
];

/// Exact names no client may send upstream, whatever the configuration: identity headers of
/// other products, client-address headers (the gateway's `X-Forwarded-For` is the only address
/// it vouches for) and path/host overrides that some frameworks honour over the request line.
pub static STRIPPED_NAMES: [HeaderName; 25] = [
    // RFC 7239: the gateway does not send it, so any copy is the client's.
    HeaderName::from_static("forwarded"),
    // Identity (Apache `REMOTE_USER` convention, Authelia, Kong, generic).
    HeaderName::from_static("remote-user"),
    HeaderName::from_static("remote-email"),
    HeaderName::from_static("remote-groups"),
    HeaderName::from_static("remote-name"),
    HeaderName::from_static("x-remote-user"),
    HeaderName::from_static("x-remote-email"),
    HeaderName::from_static("x-remote-groups"),
    HeaderName::from_static("x-remote-name"),
    HeaderName::from_static("x-user"),
    HeaderName::from_static("x-email"),
    HeaderName::from_static("x-authenticated-user"),
    HeaderName::from_static("x-authenticated-userid"),
    HeaderName::from_static("x-auth-user"),
    // Client address (rate limits, audit logs and IP allow-lists in apps read these).
    X_REAL_IP,
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("fastly-client-ip"),
    // Path and host overrides (IIS/ASP.NET, Symfony, Zend/Laminas, nginx auth_request).
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    X_ORIGINAL_URI,
    HeaderName::from_static("x-original-host"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripped_lists_are_normalized() {
        for n in &STRIPPED_NAMES {
            assert!(!n.as_str().contains('_'), "{n}");
            assert!(
                !STRIPPED_PREFIXES.iter().any(|p| n.as_str().starts_with(p)),
                "{n} is already covered by a prefix"
            );
        }
        for p in STRIPPED_PREFIXES {
            assert_eq!(*p, p.to_ascii_lowercase());
            assert!(!p.contains('_'));
        }
    }
}
