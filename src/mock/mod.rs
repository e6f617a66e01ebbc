//! A fake DingTalk on one base URL (login page, `/v1.0` API, legacy oapi, admin surface) for tests and the demo.
//!
//! Point the gateway's `login`, `api` and `oapi` base URLs at the address [`serve`] listens on.
//! Paths, JSON names and error shapes follow `shared/dingtalk-api.md`; where DingTalk's behaviour is
//! undocumented the handler says which choice the mock made.

mod admin;
mod api;
mod faults;
mod login;
mod oapi;
pub mod org;
mod pages;
mod state;
mod wire;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use org::{Corp, Department, Org, OrgError, User};

use crate::server::{serve_http, ServerLimits};
use state::State;
use wire::{Family, Resp};

/// Prefix of the mock's own control endpoints (never part of DingTalk's surface, never recorded).
pub const ADMIN_PREFIX: &str = "/__mock/";

/// Largest request body the mock reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How the mock is configured.
#[derive(Clone)]
pub struct MockSettings {
    /// The one app the mock knows: its AppKey / Client ID.
    pub client_id: String,
    /// The app's AppSecret / Client Secret.
    pub client_secret: String,
    /// The seeded organization.
    pub org: Org,
    /// Lifetime of OAuth authorization codes.
    pub code_ttl: Duration,
    /// Lifetime of user and app access tokens (`expireIn`).
    pub token_ttl: Duration,
    /// Answer app-token requests without `expireIn` (a shape some DingTalk answers have).
    pub omit_app_token_expiry: bool,
    /// The app's registered redirect URLs (安全设置 → 重定向URL): an authorize request with any
    /// other `redirect_uri` (compared without its query) gets DingTalk's error page and is never
    /// sent back. Empty: every `redirect_uri` is accepted ([`crate::demo::Stack`] registers
    /// the gateway's callback). The org YAML's `app.redirect_urls` fills it when empty.
    pub redirect_urls: Vec<String>,
    /// Host names registered as the app's login-free address (端内免登地址 / homepage): an
    /// in-client code request from a page on any other host fails with `errorCode` 3, as in
    /// DingTalk. Empty: every page is accepted ([`crate::demo::Stack`] registers the gateway's).
    pub homepage_domains: Vec<String>,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            client_id: "dingmockclientid0001".to_owned(),
            client_secret: "mock-client-secret-0123456789abcdef".to_owned(),
            org: Org::default_org(),
            code_ttl: Duration::from_secs(5 * 60),
            token_ttl: Duration::from_secs(7200),
            homepage_domains: Vec::new(),
            redirect_urls: Vec::new(),
            omit_app_token_expiry: false,
        }
    }
}

impl fmt::Debug for MockSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("corp_id", &self.org.corp().corp_id)
            .field("users", &self.org.users().len())
            .field("code_ttl", &self.code_ttl)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// A failure the mock can be told to produce instead of the normal answer (see [`MockDingTalk::inject_fault`]).
///
/// The shape follows the path's API family: `/v1.0/...` answers like api.dingtalk.com, `/oauth2/auth`
/// with an HTML page, everything else like oapi.dingtalk.com. Serialized in snake_case (`"qps_limit"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// New API: 403 `Forbidden.AccessDenied.AccessTokenPermissionDenied` with
    /// `accessdenieddetail.requiredScopes = ["Contact.User.Read"]`; oapi: errcode 60011.
    PermissionDenied,
    /// New API: 403 `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`; oapi: errcode 90018.
    QpsLimit,
    /// HTTP 500 with a JSON error body of the family's shape.
    ServerError,
    /// HTTP 200 with an HTML body (what an IP ban or an intermediary error page looks like).
    NonJson,
    /// HTTP 200 with `{"status":1111,"wait":5,"source":"x5","punish":"deny","uuid":...}`.
    IpBan,
    /// No answer for two minutes (then a 504), so any sane client timeout fires first.
    Hang,
    /// New API: 400 `InvalidAuthentication`; oapi: errcode 88 with `sub_code` `"40014"`.
    InvalidToken,
    /// The caller's address is not on the app's IP allow-list: new API 403
    /// `Forbidden.AccessDenied.IpNotInWhiteList`; oapi errcode 60020. Both name the address
    /// DingTalk saw ([`IP_NOT_WHITELISTED_ADDRESS`]).
    IpNotWhitelisted,
    /// oapi errcode 50002: the person is outside the app's visible range (可使用范围); the new
    /// API has no such answer, so there it is a 403 `Forbidden.AccessDenied.AccessTokenPermissionDenied`.
    OutsideVisibleRange,
    /// oapi errcode 22 (an API path DingTalk does not know), with a `sub_msg`; the new API
    /// answers 404 `InvalidAction.NotFound`.
    UnknownApi,
}

/// The egress address the [`Fault::IpNotWhitelisted`] answers report.
pub const IP_NOT_WHITELISTED_ADDRESS: &str = "203.0.113.7";

/// One request the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// When it arrived: wall-clock time plus any [`MockDingTalk::advance_clock`] offset.
    pub at: SystemTime,
}

/// One in-client code request of the JSAPI stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsapiRequest {
    /// `v2` (`dd.requestAuthCode`) or `v1` (`dd.runtime.permission.requestAuthCode`).
    pub api: String,
    /// The page the code was requested from.
    pub page_url: String,
    /// `code`, or the `errorCode` the client reported.
    pub outcome: String,
}

/// The fake DingTalk. Cheap to clone; clones share all state.
#[derive(Clone)]
pub struct MockDingTalk {
    inner: Arc<Inner>,
}

struct Inner {
    settings: MockSettings,
    state: Mutex<State>,
}

impl fmt::Debug for MockDingTalk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockDingTalk")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl MockDingTalk {
    /// A mock with fresh state (no codes, tokens, faults or recorded calls).
    pub fn new(mut settings: MockSettings) -> Self {
        if settings.redirect_urls.is_empty() {
            settings.redirect_urls = settings.org.app().redirect_urls.clone();
        }
        if settings.homepage_domains.is_empty() {
            settings.homepage_domains = settings.org.app().homepage_domains.clone();
        }
        let state = State::new(settings.org.clone());
        MockDingTalk {
            inner: Arc::new(Inner {
                settings,
                state: Mutex::new(state),
            }),
        }
    }

    /// The settings the mock was built with (the org as seeded, before any runtime change).
    pub fn settings(&self) -> &MockSettings {
        &self.inner.settings
    }

    /// The organization as it is now (after `set_user_active` / `remove_user`).
    pub fn org(&self) -> Org {
        self.state().org.clone()
    }

    /// Answers one request exactly as the HTTP server would. Never fails: every problem is a response.
    ///
    /// The call is recorded (unless it is under [`ADMIN_PREFIX`]) and a pending fault for its path is
    /// consumed before anything else happens.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let family = Family::of(&path);
        if !path.starts_with(ADMIN_PREFIX) {
            let fault = {
                let mut state = self.state();
                let at = SystemTime::now() + state.clock_offset;
                state.record(RecordedCall {
                    method: parts.method.clone(),
                    path: path.clone(),
                    at,
                });
                state.take_fault(&path)
            };
            if let Some(fault) = fault {
                return faults::respond(fault, family).await;
            }
        }
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return body_too_large(family),
        };
        let req = MockRequest::new(parts, path, body);
        self.route(&req)
    }

    fn route(&self, req: &MockRequest) -> Resp {
        let path = req.path.as_str();
        match (&req.method, path) {
            (&Method::GET, "/oauth2/auth") => login::authorize(self, req),
            (&Method::POST, "/v1.0/oauth2/userAccessToken") => api::user_access_token(self, req),
            (&Method::POST, "/v1.0/oauth2/accessToken") => api::app_access_token(self, req),
            (&Method::POST, _) if api::is_corp_token_path(path) => api::corp_token(self, req),
            (&Method::GET, _) if path.starts_with(api::CONTACT_USERS_PREFIX) => {
                api::contact_user(self, req)
            }
            (&Method::GET, "/gettoken") => oapi::gettoken(self, req),
            (&Method::POST, "/topapi/user/getbyunionid") => oapi::get_by_unionid(self, req),
            (&Method::POST, "/topapi/v2/user/get") => oapi::user_get(self, req),
            (&Method::POST, "/topapi/v2/department/listparentbyuser") => {
                oapi::list_parent_by_user(self, req)
            }
            (&Method::POST, "/topapi/v2/user/getuserinfo") => oapi::get_user_info(self, req),
            (&Method::POST, "/topapi/v2/department/get") => oapi::department_get(self, req),
            (&Method::GET, _) if path.ends_with(admin::QR_SCRIPT_SUFFIX) => admin::qr_script(),
            (&Method::GET, _) if path.ends_with(admin::JSAPI_SCRIPT_SUFFIX) => {
                admin::jsapi_script(self, path)
            }
            _ if path.starts_with(ADMIN_PREFIX) => admin::route(self, req),
            _ => match Family::of(path) {
                Family::NewApi => api::not_found(),
                Family::LoginPage => login::method_not_allowed(),
                Family::Legacy => oapi::unknown_api(),
            },
        }
    }

    /// Every request received so far, oldest first (admin requests excluded; at most the last 10 000).
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state().calls.iter().cloned().collect()
    }

    /// How many recorded requests had exactly this path (no query), e.g. `/v1.0/oauth2/userAccessToken`.
    pub fn call_count(&self, path: &str) -> usize {
        self.state().calls.iter().filter(|c| c.path == path).count()
    }

    /// Moves the mock clock forward: codes and tokens expire as if `by` had passed.
    pub fn advance_clock(&self, by: Duration) {
        self.state().clock_offset += by;
    }

    /// The next `times` requests to `path` (exact, no query) fail with `fault`; `times == 0` clears it.
    /// A new injection for the same path replaces the pending one.
    pub fn inject_fault(&self, path: &str, fault: Fault, times: u32) {
        let mut state = self.state();
        if times == 0 {
            state.faults.remove(path);
        } else {
            state.faults.insert(path.to_owned(), (fault, times));
        }
    }

    /// Activates or deactivates an account; an inactive account is listed on the login page but cannot log in.
    /// Unknown userids are ignored.
    pub fn set_user_active(&self, userid: &str, active: bool) {
        self.state().org.set_active(userid, active);
    }

    /// The user leaves the org: from now on the oapi look-ups answer 60121 for them, and their logins carry
    /// no `corpId`. They keep their DingTalk account, so scan login and `/v1.0/contact/users/me` still work.
    /// Unknown userids are ignored.
    pub fn remove_user(&self, userid: &str) {
        self.state().org.remove_from_corp(userid);
    }

    /// Gives `userid` to another DingTalk account (`union_id`): the person who had it is no
    /// longer in the organization under any userid.
    pub fn reassign_user_id(&self, userid: &str, union_id: &str) {
        self.state().org.set_union_id(userid, union_id);
    }

    /// A scan-login authorization code for `userid`, as the authorize page's approval would
    /// issue it (`with_corp`: the scope had `corpid`). `None` for an unknown or inactive user.
    pub fn issue_auth_code(&self, userid: &str, with_corp: bool) -> Option<String> {
        let mut state = self.state();
        let eligible = state.org.user(userid).is_some_and(|u| u.active);
        let grant = state::UserGrant {
            userid: userid.to_owned(),
            with_corp,
            picked_corp: None,
        };
        eligible.then(|| state.mint_auth_code(grant, self.inner.settings.code_ttl))
    }

    /// An in-client (免登) code for `topapi/v2/user/getuserinfo`, as `dd.requestAuthCode` would return it
    /// (5 minutes, single use). `None` unless the user is an active member of the org's corp.
    pub fn issue_jsapi_code(&self, userid: &str) -> Option<String> {
        let mut state = self.state();
        let eligible = state.org.member(userid).is_some_and(|u| u.active);
        eligible.then(|| state.mint_jsapi_code(userid))
    }

    /// Every in-client code request the JSAPI stand-in made, oldest first.
    pub fn jsapi_requests(&self) -> Vec<JsapiRequest> {
        self.state().jsapi_requests.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters for a fake.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `mock` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, mock: MockDingTalk, shutdown: impl Future<Output = ()>) {
    let limits = ServerLimits {
        // Hung requests (Fault::Hang) must not hold up shutdown for long.
        shutdown_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let handler = move |req: Request<hyper::body::Incoming>, _peer| {
        let mock = mock.clone();
        async move {
            let mut resp = mock.handle(req).await;
            // DingTalk's servers keep good time; the mock's clock is the one tests move
            // (`advance_clock`), and `dinggate doctor` reads it from here.
            let now = SystemTime::now() + mock.state().clock_offset;
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
                resp.headers_mut().insert(http::header::DATE, date);
            }
            Ok::<_, Infallible>(resp)
        }
    };
    serve_http(listener, limits, handler, shutdown).await;
}

fn body_too_large(family: Family) -> Resp {
    match family {
        Family::NewApi => wire::api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "request body is too large",
        ),
        Family::LoginPage => login::error_page(StatusCode::PAYLOAD_TOO_LARGE, "请求过大。"),
        Family::Legacy => wire::oapi_error(400002, "请求体过大"),
    }
}

/// A fully read request, as the handlers see it.
struct MockRequest {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    host: Option<String>,
    body: Bytes,
}

/// Why a JSON body could not be used.
enum BodyError {
    Empty,
    Invalid,
}

impl MockRequest {
    fn new(parts: http::request::Parts, path: String, body: Bytes) -> MockRequest {
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        MockRequest {
            method: parts.method,
            path,
            query,
            headers: parts.headers,
            host,
            body,
        }
    }

    /// The first value of a query parameter.
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-blank value of a query parameter.
    fn query_non_empty(&self, name: &str) -> Option<&str> {
        self.query(name).filter(|v| !v.trim().is_empty())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
    }

    fn json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(BodyError::Empty);
        }
        serde_json::from_slice(&self.body).map_err(|_| BodyError::Invalid)
    }
}

/// `Some(s)` unless the value is absent or blank.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}
