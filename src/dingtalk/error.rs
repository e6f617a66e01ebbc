//! The one error type of the DingTalk boundary, with the operator-facing advice for each failure.

use std::sync::Arc;

use super::api::Api;

/// Why a DingTalk call failed. Every variant names the call (`api`, one of [`api`]'s constants).
///
/// Display text carries the call, HTTP status, DingTalk's code and message and the request id,
/// never a token, code or secret. The enum is `Clone` (the transport error sits behind an `Arc`)
/// so that callers waiting on the same app-token fetch can all receive its failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DingTalkError {
    /// No complete response within `dingtalk.timeout`.
    #[error("DingTalk {api}: no response within the configured timeout")]
    Timeout { api: Api },

    /// Connection, TLS or protocol failure before a response arrived.
    #[error("DingTalk {api}: request failed")]
    Transport {
        api: Api,
        #[source]
        source: Arc<reqwest::Error>,
    },

    /// A new-API (`api.dingtalk.com`) error: HTTP 4xx/5xx with `{code, message, requestid}`.
    #[error(
        "DingTalk {api}: HTTP {status} {code}: {message} (request id {})",
        show(.request_id)
    )]
    Api {
        api: Api,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// `accessdenieddetail.requiredScopes` on permission errors.
        required_scopes: Vec<String>,
    },

    /// A legacy (`oapi.dingtalk.com`) error: `errcode != 0`, the real reason possibly in `sub_code`.
    #[error(
        "DingTalk {api}: errcode {errcode}{}: {message} (request id {})",
        sub(.sub_code),
        show(.request_id)
    )]
    Legacy {
        api: Api,
        errcode: i64,
        sub_code: Option<String>,
        message: String,
        request_id: Option<String>,
    },

    /// Still rate limited (QPS/QPM codes) after all retries: a few seconds later it usually works.
    #[error("DingTalk {api}: rate limited: {detail}")]
    RateLimited { api: Api, detail: String },

    /// IP-banned (`punish: deny`), or a non-JSON body (a ban page, a proxy, an outage).
    #[error("DingTalk {api}: throttled or blocked: {detail}")]
    Throttled { api: Api, detail: String },
    /// The call budget (`dingtalk.call_budget`) had no slot for this call within
    /// `dingtalk.timeout`: the call was not made.
    #[error("DingTalk {api}: not called: the call budget ({per_second}/s) has no slot within dingtalk.timeout")]
    OverBudget { api: Api, per_second: u32 },

    /// JSON of the wrong shape (missing or mistyped fields). `detail` never quotes field values.
    #[error("DingTalk {api}: unexpected response (HTTP {status}): {detail}")]
    Decode {
        api: Api,
        status: u16,
        detail: String,
    },
}

/// The legacy (`oapi`) error codes the gateway acts on (dingtalk-api.md §8), by name.
pub mod code {
    /// DingTalk is busy; retried like a rate limit.
    pub const BUSY: i64 = -1;
    /// Unknown API path.
    pub const NO_SUCH_API: i64 = 22;
    /// The access token is not valid.
    pub const INVALID_TOKEN: i64 = 40014;
    /// The access token has expired.
    pub const TOKEN_EXPIRED: i64 = 42001;
    /// The credential is not valid.
    pub const INVALID_CREDENTIAL: i64 = 40001;
    /// Wrong appKey or appSecret at `gettoken`.
    pub const BAD_APP_CREDENTIALS: i64 = 40096;
    /// Wrong corpid or corpsecret.
    pub const BAD_CORP_CREDENTIALS: i64 = 40089;
    /// The in-client (免登) code does not exist (invalid, expired or used).
    pub const NO_SUCH_AUTH_CODE: i64 = 40078;
    /// The app lacks the permission for this API.
    pub const NO_PERMISSION: i64 = 60011;
    /// The caller's IP is not on the app's allow-list.
    pub const IP_NOT_ALLOWED: i64 = 60020;
    /// No such department.
    pub const NO_SUCH_DEPARTMENT: i64 = 60003;
    /// No such employee.
    pub const NO_SUCH_USER: i64 = 60121;
    /// The person is outside the app's visible range (可使用范围).
    pub const OUTSIDE_VISIBLE_RANGE: i64 = 50002;
    /// Per-app QPS limit.
    pub const QPS_LIMIT: i64 = 90018;
    /// Per-app QPS limit (older code).
    pub const QPS_LIMIT_OLD: i64 = 90002;
    /// Per-minute, per-day and per-API call limits.
    pub const CALL_LIMITS: [i64; 3] = [90005, 90006, 90019];
    /// The organization's monthly call quota is used up.
    pub const MONTHLY_QUOTA: i64 = 90020;
    /// Malformed requests (missing or invalid parameters).
    pub const MALFORMED: [i64; 5] = [40000, 41001, 40035, 400002, 33012];
}

fn show(request_id: &Option<String>) -> &str {
    request_id.as_deref().unwrap_or("none")
}

fn sub(sub_code: &Option<String>) -> String {
    match sub_code {
        Some(code) => format!(" sub_code {code}"),
        None => String::new(),
    }
}

/// New-API codes that mean "too many requests; wait and retry".
fn is_rate_limit_code(code: &str) -> bool {
    code.starts_with("Forbidden.AccessDenied.QpsLimit")
        || code.starts_with("Forbidden.AccessDenied.QpmLimit")
        || code.eq_ignore_ascii_case("qps.exceed.limit")
        || code.eq_ignore_ascii_case("request.overlimit")
}

/// New-API codes caused by the app's configuration rather than by the user.
fn is_config_code(code: &str) -> bool {
    code.starts_with("Forbidden.AccessDenied.")
        || code.eq_ignore_ascii_case("invalidClientIdOrSecret")
        || code == "invalid.client"
        || code == "unauthorized.client"
        || code == "unsupported.grant.type"
        || code.starts_with("AuthenticationFailed.")
}

/// The legacy code that decides the outcome: a numeric `sub_code` wins over `errcode`
/// (auth failures arrive as errcode 88 with the reason in `sub_code`).
pub(super) fn effective_legacy_code(errcode: i64, sub_code: Option<&str>) -> i64 {
    sub_code
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|c| *c != 0)
        .unwrap_or(errcode)
}

impl DingTalkError {
    /// The call that failed.
    pub fn api(&self) -> Api {
        match self {
            Self::Timeout { api }
            | Self::Transport { api, .. }
            | Self::Api { api, .. }
            | Self::Legacy { api, .. }
            | Self::RateLimited { api, .. }
            | Self::Throttled { api, .. }
            | Self::OverBudget { api, .. }
            | Self::Decode { api, .. } => *api,
        }
    }

    /// True when DingTalk did not answer in time (the gateway answers 504 rather than 502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// True when DingTalk is rate-limiting the app beyond the retries: the user should wait a
    /// few seconds, not report a fault. (A ban or a non-JSON answer is not this: it lasts.)
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::OverBudget { .. })
    }

    /// True when no answer arrived at all: the connection, TLS or HTTP exchange failed (DingTalk,
    /// or the network to it, is unreachable), as opposed to an answer that says no.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }

    /// True when the user's login code was bad, used or expired and the login should simply restart:
    /// any new-API 4xx on `userAccessToken` that is not a configuration or rate-limit problem,
    /// or legacy errcode 40078 (nonexistent temporary auth code).
    pub fn is_bad_code(&self) -> bool {
        match self {
            Self::Api {
                api, status, code, ..
            } => {
                *api == Api::UserAccessToken
                    && (400..500).contains(status)
                    && !is_config_code(code)
                    && !is_rate_limit_code(code)
            }
            Self::Legacy {
                errcode, sub_code, ..
            } => effective_legacy_code(*errcode, sub_code.as_deref()) == code::NO_SUCH_AUTH_CODE,
            _ => false,
        }
    }

    /// True when DingTalk says the person is not (visibly) a member of the organization:
    /// legacy 60121 (user not found) or 50002 (outside the app's visible range).
    pub fn is_not_member(&self) -> bool {
        match self {
            Self::Legacy {
                errcode, sub_code, ..
            } => matches!(
                effective_legacy_code(*errcode, sub_code.as_deref()),
                code::NO_SUCH_USER | code::OUTSIDE_VISIBLE_RANGE
            ),
            _ => false,
        }
    }

    /// QPS-limit answers that are worth retrying after a back-off.
    pub(super) fn is_rate_limited(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => *status == 429 || is_rate_limit_code(code),
            Self::Legacy {
                errcode, sub_code, ..
            } => matches!(
                effective_legacy_code(*errcode, sub_code.as_deref()),
                code::QPS_LIMIT | code::QPS_LIMIT_OLD | code::BUSY
            ),
            _ => false,
        }
    }

    /// DingTalk rejected the app token (invalid or expired): drop the cache, refetch, retry once.
    pub(super) fn is_app_token_rejected(&self) -> bool {
        match self {
            Self::Api { code, .. } => code == "InvalidAuthentication",
            Self::Legacy {
                errcode, sub_code, ..
            } => matches!(
                effective_legacy_code(*errcode, sub_code.as_deref()),
                code::INVALID_TOKEN | code::TOKEN_EXPIRED
            ),
            _ => false,
        }
    }

    /// One actionable sentence for the operator log: what to check or change, and where.
    pub fn operator_hint(&self) -> String {
        let url_key = self.api().url_key();
        match self {
            Self::Timeout { .. } => format!(
                "DingTalk did not answer in time: check egress from the gateway to the host in {url_key} \
                 (DNS, firewall, proxy) and raise dingtalk.timeout if the network is slow"
            ),
            Self::Transport { .. } => format!(
                "could not talk to DingTalk: check egress from the gateway to the host in {url_key} \
                 (DNS, firewall, proxy, TLS trust store)"
            ),
            Self::RateLimited { .. } => "DingTalk's per-app limit (20 requests/s per API) was exceeded beyond \
                 the retries: spread logins out (rate_limit.code_exchange), raise dingtalk.directory_cache_ttl, \
                 and check for other clients or replicas sharing the app"
                .to_owned(),
            Self::Throttled { .. } => "DingTalk is rate-limiting or blocking this gateway (20 requests/s per app \
                 and API; an IP that sends 10,000 requests in 20 s is banned for 5 minutes): spread logins out, \
                 check for other clients sharing the app or egress IP, and retry later"
                .to_owned(),
            Self::OverBudget { per_second, .. } => format!(
                "more calls to this DingTalk API were due than dingtalk.call_budget ({per_second}/s for the whole fleet) \
                 allows within dingtalk.timeout: raise dingtalk.directory_cache_ttl, lower rate_limit.code_exchange, \
                 or raise dingtalk.call_budget if DingTalk granted the app a higher limit"
            ),
            Self::Decode { .. } => format!(
                "DingTalk answered with an unexpected response: check that {url_key} points at DingTalk \
                 (or the mock) and not at a proxy or captive portal"
            ),
            Self::Api {
                api,
                status,
                code,
                required_scopes,
                message,
                ..
            } => {
                if code == "Forbidden.AccessDenied.IpNotInWhiteList" {
                    return ip_hint(message);
                }
                api_hint(*api, *status, code, required_scopes, url_key)
            }
            Self::Legacy {
                api,
                errcode,
                sub_code,
                message,
                ..
            } => match effective_legacy_code(*errcode, sub_code.as_deref()) {
                code::IP_NOT_ALLOWED => ip_hint(message),
                code => legacy_hint(*api, code),
            },
        }
    }
}

/// What to do about DingTalk's IP allow-list refusal, naming the address it saw when it says.
fn ip_hint(message: &str) -> String {
    match reported_address(message) {
        Some(ip) => format!(
            "DingTalk refuses calls from {ip}: add {ip} to the app's server egress IPs in the developer \
             console (安全设置 → 服务器出口IP)"
        ),
        None => "add the gateway's egress IP to the app's server IP whitelist in the developer console \
                 (安全设置 → 服务器出口IP)"
            .to_owned(),
    }
}

/// The first IPv4 or IPv6 address in a DingTalk message (it writes `request ip=…`).
pub fn reported_address(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .find(|t| t.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned)
}

const CREDENTIALS: &str =
    "check dingtalk.client_id / client_secret (the app's Client ID and Client Secret \
     in the DingTalk developer console)";

fn api_hint(api: Api, status: u16, code: &str, scopes: &[String], url_key: &str) -> String {
    if code == "Forbidden.AccessDenied.AccessTokenPermissionDenied" {
        return if scopes.is_empty() {
            format!("grant the permission required by {api} to the app in the developer console (权限管理)")
        } else {
            format!(
                "grant the permission {} to the app in the developer console (权限管理)",
                scopes.join(", ")
            )
        };
    }
    if code == "Forbidden.AccessDenied.ApiCountLimitForOrg" {
        return "the organization's monthly DingTalk API quota is used up; upgrade the edition or wait for \
                the next month"
            .to_owned();
    }
    if is_rate_limit_code(code) {
        return "DingTalk rate limit hit: spread logins out and check for other clients sharing the app"
            .to_owned();
    }
    if code.eq_ignore_ascii_case("invalidClientIdOrSecret")
        || code == "invalid.client"
        || code == "unauthorized.client"
    {
        return CREDENTIALS.to_owned();
    }
    if code == "InvalidAuthentication" {
        return if api == Api::CurrentUser {
            format!("DingTalk rejected the user's token; the user must log in again. If every login fails, {CREDENTIALS}")
        } else {
            format!("DingTalk rejected the access token; {CREDENTIALS}")
        };
    }
    if code == "accesstoken.expired" {
        return "the user's DingTalk token expired; the user must log in again".to_owned();
    }
    if code.starts_with("AuthenticationFailed.") {
        return format!("the request was missing its credentials; check that {url_key} points at the DingTalk API host");
    }
    if api == Api::UserAccessToken && (400..500).contains(&status) {
        return format!(
            "DingTalk refused the login code (used, expired, or issued for another app): the user must log in \
             again. If every login fails, check that the gateway's callback URL is registered as a redirect URL \
             of the app (developer console → 安全设置 → 重定向URL) and {CREDENTIALS}"
        );
    }
    if status >= 500 {
        return "DingTalk reported a server error; retry later".to_owned();
    }
    format!("DingTalk refused {api} with code {code}; see the DingTalk error-code documentation")
}

fn legacy_hint(api: Api, errcode: i64) -> String {
    match errcode {
        code::INVALID_TOKEN | code::TOKEN_EXPIRED | code::INVALID_CREDENTIAL => format!("DingTalk rejected the app token even after a refetch; {CREDENTIALS}"),
        code::BAD_APP_CREDENTIALS | code::BAD_CORP_CREDENTIALS => CREDENTIALS.to_owned(),
        code::NO_SUCH_AUTH_CODE => "the in-app login code is invalid, expired or already used (or a scan-login code was sent \
                  to the in-app endpoint): the user must retry"
            .to_owned(),
        code::NO_PERMISSION => format!(
            "grant the permission {} to the app in the developer console (权限管理)",
            legacy_permission(api)
        ),
        code::NO_SUCH_USER => "the user is not a member of the organization (or not visible to the app)".to_owned(),
        code::OUTSIDE_VISIBLE_RANGE => "the user is outside the app's visible range (可使用范围); widen it in the developer console \
                  if they should get in"
            .to_owned(),
        c if [code::QPS_LIMIT, code::QPS_LIMIT_OLD, code::BUSY].contains(&c)
            || code::CALL_LIMITS.contains(&c) =>
        {
            "DingTalk rate limit hit: spread logins out and check for other clients sharing the app".to_owned()
        }
        code::MONTHLY_QUOTA => "the organization's monthly DingTalk API quota is used up".to_owned(),
        code::NO_SUCH_API => "DingTalk does not know this API path: check that dingtalk.oapi_url is the oapi host".to_owned(),
        c if code::MALFORMED.contains(&c) => {
            format!("DingTalk rejected the {api} request as malformed; this is a gateway bug, please report it")
        }
        _ => format!("DingTalk refused {api} with errcode {errcode}; see the DingTalk error-code documentation"),
    }
}

fn legacy_permission(api: Api) -> &'static str {
    match api {
        Api::DepartmentChains => "通讯录部门信息读权限 (qyapi_get_department_list)",
        Api::InAppUser => "企业员工身份 (qyapi_base)",
        _ => "成员信息读权限 (qyapi_get_member)",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refused_address_is_found_in_either_message_form() {
        assert_eq!(
            reported_address("访问ip不在白名单之中,请参考FAQ:https://x/faq,request ip=203.0.113.7 appKey(dingabc)").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            reported_address("ip 2001:db8::1 is not in white list").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(reported_address("no address here: 12"), None);
    }

    use super::*;

    fn legacy(errcode: i64, sub_code: Option<&str>) -> DingTalkError {
        DingTalkError::Legacy {
            api: Api::UserDetail,
            errcode,
            sub_code: sub_code.map(str::to_owned),
            message: "m".into(),
            request_id: Some("rid-1".into()),
        }
    }

    fn new_api(api: Api, status: u16, code: &str) -> DingTalkError {
        DingTalkError::Api {
            api,
            status,
            code: code.into(),
            message: "msg".into(),
            request_id: None,
            required_scopes: vec![],
        }
    }

    #[test]
    fn sub_code_wins_over_errcode() {
        assert_eq!(effective_legacy_code(88, Some("40014")), 40014);
        assert_eq!(effective_legacy_code(88, Some("")), 88);
        assert_eq!(effective_legacy_code(88, Some("isv.x")), 88);
        assert_eq!(effective_legacy_code(42001, None), 42001);
        assert!(legacy(88, Some("40014")).is_app_token_rejected());
        assert!(legacy(42001, None).is_app_token_rejected());
        assert!(!legacy(88, Some("60011")).is_app_token_rejected());
        assert!(legacy(88, Some("90018")).is_rate_limited());
        assert!(legacy(-1, None).is_rate_limited());
        assert!(!legacy(90020, None).is_rate_limited());
    }

    #[test]
    fn bad_code_classification() {
        assert!(new_api(Api::UserAccessToken, 400, "InvalidAuthCode").is_bad_code());
        assert!(!new_api(Api::UserAccessToken, 400, "invalidClientIdOrSecret").is_bad_code());
        assert!(!new_api(
            Api::UserAccessToken,
            403,
            "Forbidden.AccessDenied.QpsLimitForApi"
        )
        .is_bad_code());
        assert!(!new_api(Api::UserAccessToken, 500, "server.error").is_bad_code());
        assert!(!new_api(Api::CurrentUser, 400, "InvalidAuthentication").is_bad_code());
        assert!(legacy(40078, None).is_bad_code());
        assert!(!legacy(60121, None).is_bad_code());
        assert!(legacy(60121, None).is_not_member());
    }

    #[test]
    fn display_has_code_message_and_request_id() {
        let text = legacy(88, Some("40014")).to_string();
        assert_eq!(
            text,
            "DingTalk topapi/v2/user/get: errcode 88 sub_code 40014: m (request id rid-1)"
        );
        let text = new_api(Api::CurrentUser, 400, "InvalidAuthentication").to_string();
        assert_eq!(
            text,
            "DingTalk v1.0/contact/users/me: HTTP 400 InvalidAuthentication: msg (request id none)"
        );
    }

    #[test]
    fn hints_point_at_the_fix() {
        assert!(new_api(Api::AppToken, 400, "invalidClientIdOrSecret")
            .operator_hint()
            .contains("dingtalk.client_id / client_secret"));
        assert!(legacy(60020, None).operator_hint().contains("whitelist"));
        assert!(legacy(88, Some("60011"))
            .operator_hint()
            .contains("qyapi_get_member"));
        assert!(new_api(Api::UserAccessToken, 400, "whatever")
            .operator_hint()
            .contains("redirect URL"));
        let timeout = DingTalkError::Timeout {
            api: Api::DepartmentChains,
        };
        assert!(timeout.operator_hint().contains("dingtalk.oapi_url"));
        assert!(timeout.operator_hint().contains("dingtalk.timeout"));
    }
}
