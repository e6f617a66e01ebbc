//! The DingTalk client's public calls (scan login, profile, directory, in-client login) and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::json;
use url::Url;

use super::api::Api;
use super::budget::Budget;
use super::error::{code, effective_legacy_code, DingTalkError};
use super::token::TokenCache;
use super::transport::{decode, result, Call};
use super::types::{
    ContactUser, InAppUser, RawDepartment, RawParentList, RawUnionIdLookup, RawUserToken,
    UserDetail, UserToken,
};
use crate::metrics::DingTalkMetrics;
use crate::store::{RedisStore, Sealer};

pub(crate) use super::transport::join;

/// Base URLs of the three DingTalk hosts. A base may carry a path prefix (useful behind a proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Scan-login pages, default `https://login.dingtalk.com`.
    pub login: Url,
    /// New API, default `https://api.dingtalk.com`.
    pub api: Url,
    /// Legacy API, default `https://oapi.dingtalk.com`.
    pub oapi: Url,
}

impl Endpoints {
    /// All three bases at one URL (the mock DingTalk serves every path on one listener).
    pub fn single(base: Url) -> Self {
        Self {
            login: base.clone(),
            api: base.clone(),
            oapi: base,
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        fn parse(s: &str) -> Url {
            Url::parse(s).expect("constant URL is valid")
        }
        Self {
            login: parse("https://login.dingtalk.com"),
            api: parse("https://api.dingtalk.com"),
            oapi: parse("https://oapi.dingtalk.com"),
        }
    }
}

/// How QPS-limited calls are retried: up to `max_retries` more attempts, sleeping
/// `base_delay * 2^n` plus up to 50 % jitter before retry `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// Sleep before the first retry; doubles for each further one.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    /// Two retries starting at one second (DingTalk's QPS window is one second).
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_secs(1),
        }
    }
}

/// Everything the client needs besides the shared HTTP client. `Debug` never shows the secret.
#[derive(Clone)]
pub struct ClientSettings {
    /// Where the three DingTalk hosts are.
    pub endpoints: Endpoints,
    /// The app's Client ID (AppKey).
    pub client_id: String,
    /// The app's Client Secret (AppSecret).
    pub client_secret: String,
    /// Upper bound for each request attempt, from sending to the last body byte.
    pub timeout: Duration,
    /// Back-off for QPS-limited answers.
    pub retry: RetryPolicy,
    /// With exclusive accounts (专属钉钉): the organization whose login page the scan login opens.
    pub exclusive_corp_id: Option<String>,
    /// Where calls, token refreshes and directory look-ups are counted.
    pub metrics: DingTalkMetrics,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("endpoints", &self.endpoints)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Scan-login query values: everything but RFC 3986 unreserved characters is percent-encoded,
/// so a space is `%20` (which both form and non-form decoders read as a space).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The DingTalk API client. Cheap to clone (shares one HTTP client and one app-token cache).

#[derive(Clone)]
pub struct DingTalkClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) settings: ClientSettings,
    pub(super) http: reqwest::Client,
    pub(super) token: TokenCache,
    pub(super) budget: Budget,
    pub(super) fleet: Option<Fleet>,
}

/// What a client shares with the other replicas of its fleet.
#[derive(Debug, Clone, Default)]
pub struct Sharing {
    /// Calls per second per API for the whole fleet (`dingtalk.call_budget`; 0 = no budget).
    pub call_budget: u32,
    /// The store the replicas share (`store.url`): with it the budget, the app token and
    /// directory answers are fleet-wide; without it, this replica's own.
    pub store: Option<Arc<RedisStore>>,
}

/// The store, and how this client's values are sealed and named in it.
pub(crate) struct Fleet {
    pub(crate) store: Arc<RedisStore>,
    /// Keyed by the app secret: only replicas of this app read and write these values.
    pub(crate) sealer: Sealer,
    /// The app's Client ID, in every key: two apps can share one Redis.
    pub(crate) scope: String,
}

impl fmt::Debug for DingTalkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DingTalkClient")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl DingTalkClient {
    /// Builds the client around the process-wide HTTP client, alone (no budget, nothing shared).
    pub fn new(settings: ClientSettings, http: reqwest::Client) -> Self {
        Self::shared(settings, http, Sharing::default())
    }

    /// Builds the client as one replica of a fleet: paced by `sharing.call_budget`, and sharing
    /// its app token, budget and directory answers through `sharing.store` when there is one.
    pub fn shared(settings: ClientSettings, http: reqwest::Client, sharing: Sharing) -> Self {
        let fleet = sharing.store.map(|store| Fleet {
            store,
            sealer: Sealer::new(
                settings.client_secret.as_bytes(),
                settings.client_id.as_bytes(),
            ),
            scope: settings.client_id.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                settings,
                http,
                token: TokenCache::default(),
                budget: Budget::new(sharing.call_budget),
                fleet,
            }),
        }
    }

    /// The store this client shares values through, with their sealer and key scope.
    pub(crate) fn fleet(&self) -> Option<&Fleet> {
        self.inner.fleet.as_ref()
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The scan-login authorize URL (`{login}/oauth2/auth`) with `redirect_uri`, `response_type=code`,
    /// `client_id`, `scope` (`openid corpid` when `corp_id` is given, else `openid`), `state`,
    /// `prompt=consent` and, when given, `corpId` (pre-selects the organization). Values are
    /// percent-encoded; spaces as `%20`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, corp_id: Option<&str>) -> Url {
        let settings = &self.inner.settings;
        let mut url = join(&settings.endpoints.login, "oauth2/auth");
        let scope = if corp_id.is_some() {
            "openid corpid"
        } else {
            "openid"
        };
        let mut pairs = vec![
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("client_id", settings.client_id.as_str()),
            ("scope", scope),
            ("state", state),
            ("prompt", "consent"),
        ];
        if let Some(corp) = corp_id {
            pairs.push(("corpId", corp));
        }
        // dingtalk-api.md §2: with exclusiveLogin=true, exclusiveCorpId jumps straight to that
        // organization's exclusive-account login page.
        if let Some(exclusive) = &settings.exclusive_corp_id {
            pairs.push(("exclusiveLogin", "true"));
            pairs.push(("exclusiveCorpId", exclusive));
        }
        let mut query = url.query().unwrap_or_default().to_owned();
        for (key, value) in pairs {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(key);
            query.push('=');
            query.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        url.set_query(Some(&query));
        url
    }

    /// Exchanges a scan-login code for a user token. Never retried on timeout (codes are single-use);
    /// retried on QPS limits. A refused code is an error with [`DingTalkError::is_bad_code`].
    pub async fn exchange_code(&self, code: &str) -> Result<UserToken, DingTalkError> {
        let settings = &self.inner.settings;
        let body = json!({
            "clientId": settings.client_id,
            "clientSecret": settings.client_secret,
            "code": code,
            "grantType": "authorization_code",
        });
        let answer = self
            .execute(&Call {
                api: Api::UserAccessToken,
                method: Method::POST,
                url: join(&settings.endpoints.api, Api::UserAccessToken.path()),
                body: Some(&body),
                user_token: None,
            })
            .await?;
        let raw: RawUserToken = decode(Api::UserAccessToken, answer.status, answer.body)?;
        Ok(UserToken::new(raw.access_token, raw.corp_id, raw.expire_in))
    }

    /// The profile of the user who owns `token` (`unionId` required).
    pub async fn current_user(&self, token: &UserToken) -> Result<ContactUser, DingTalkError> {
        let answer = self
            .execute(&Call {
                api: Api::CurrentUser,
                method: Method::GET,
                url: join(&self.inner.settings.endpoints.api, Api::CurrentUser.path()),
                body: None,
                user_token: Some(token.secret()),
            })
            .await?;
        decode(Api::CurrentUser, answer.status, answer.body)
    }

    /// The enterprise userid for a unionId; `Ok(None)` when the person is not an employee of the
    /// organization (errcode 60121, or an external contact).
    pub async fn user_id_by_union_id(
        &self,
        union_id: &str,
    ) -> Result<Option<String>, DingTalkError> {
        let body = json!({ "unionid": union_id });
        let answer = match self.oapi(Api::UserIdByUnionId, &body).await {
            Ok(answer) => answer,
            // 60121: no such employee; 50002: outside the app's visible range (可使用范围).
            // Either way this person is not a member the app may see: "not in the organization",
            // never a DingTalk fault.
            Err(err) if err.is_not_member() => return Ok(None),
            Err(err) => return Err(err),
        };
        let found: RawUnionIdLookup = result(Api::UserIdByUnionId, answer)?;
        if found.contact_type != 0 {
            tracing::debug!(
                contact_type = found.contact_type,
                "unionId belongs to an external contact, not an employee"
            );
            return Ok(None);
        }
        Ok(Some(found.userid))
    }

    /// Details of an organization member (errcode 60121 when there is no such user).
    pub async fn user_detail(&self, userid: &str) -> Result<UserDetail, DingTalkError> {
        let body = json!({ "userid": userid, "language": "zh_CN" });
        let answer = self.oapi(Api::UserDetail, &body).await?;
        result(Api::UserDetail, answer)
    }

    /// Every ancestor chain of the user's departments, each from the user's own department up
    /// to the root (`1`).
    pub async fn department_chains(&self, userid: &str) -> Result<Vec<Vec<u64>>, DingTalkError> {
        let body = json!({ "userid": userid });
        let answer = self.oapi(Api::DepartmentChains, &body).await?;
        let list: RawParentList = result(Api::DepartmentChains, answer)?;
        Ok(list
            .parent_list
            .into_iter()
            .map(|chain| chain.parent_dept_id_list)
            .collect())
    }

    /// The name of a department; `Ok(None)` when there is no such department (errcode 60003).
    pub async fn department_name(&self, dept_id: u64) -> Result<Option<String>, DingTalkError> {
        let body = json!({ "dept_id": dept_id, "language": "zh_CN" });
        let answer = match self.oapi(Api::Department, &body).await {
            Ok(answer) => answer,
            Err(DingTalkError::Legacy {
                errcode, sub_code, ..
            }) if effective_legacy_code(errcode, sub_code.as_deref())
                == code::NO_SUCH_DEPARTMENT =>
            {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        let dept: RawDepartment = result(Api::Department, answer)?;
        Ok(Some(dept.name))
    }

    /// The user behind an in-client (免登) JSAPI code. Never retried on timeout (single-use code);
    /// an invalid, used or expired code is errcode 40078 ([`DingTalkError::is_bad_code`]).
    pub async fn inapp_user(&self, jsapi_code: &str) -> Result<InAppUser, DingTalkError> {
        let body = json!({ "code": jsapi_code });
        let answer = self.oapi(Api::InAppUser, &body).await?;
        result(Api::InAppUser, answer)
    }
}

// Wire-level tests with canned answers: the exact requests sent, and answer shapes the mock
// never produces (lenient types, wrong shapes, token rotation in the query). Behaviour against
// the project's mock DingTalk and its faults is in `mock_tests.rs`.
#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use tokio::net::TcpListener;

    use std::sync::Mutex;

    use super::super::transport::backoff;
    use super::*;
    use crate::server::{serve_http, ServerLimits};
    use serde_json::Value;

    const SECRET: &str = "client-secret-value";

    #[derive(Clone)]
    struct Canned {
        status: u16,
        body: String,
        content_type: &'static str,
        delay: Duration,
    }

    fn reply(status: u16, body: Value) -> Canned {
        Canned {
            status,
            body: body.to_string(),
            content_type: "application/json;charset=utf-8",
            delay: Duration::ZERO,
        }
    }

    fn ok(body: Value) -> Canned {
        reply(200, body)
    }

    fn delayed(canned: Canned, delay: Duration) -> Canned {
        Canned { delay, ..canned }
    }

    fn app_token_reply(token: &str) -> Canned {
        ok(json!({ "accessToken": token, "expireIn": 7200 }))
    }

    fn legacy_ok(result: Value) -> Canned {
        ok(json!({ "errcode": 0, "errmsg": "ok", "request_id": "rid-ok", "result": result }))
    }

    fn token_rejected() -> Canned {
        ok(json!({
            "errcode": 88, "sub_code": "40014", "sub_msg": "不合法的access_token",
            "errmsg": "ding talk error[subcode=40014,submsg=不合法的access_token]",
            "request_id": "16l4ew3d47pdp"
        }))
    }

    fn qps_limited() -> Canned {
        ok(
            json!({ "errcode": 90018, "errmsg": "当前应用调用该接口超过限流值", "request_id": "rid-qps" }),
        )
    }

    #[derive(Debug, Clone)]
    struct Recorded {
        query: Option<String>,
        token_header: Option<String>,
        body: Value,
    }

    #[derive(Default)]
    struct MockState {
        replies: Mutex<HashMap<String, VecDeque<Canned>>>,
        log: Mutex<HashMap<String, Vec<Recorded>>>,
    }

    /// A canned-response server: each path answers its replies in order, repeating the last one.
    struct Mock {
        base: Url,
        state: Arc<MockState>,
    }

    impl Mock {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(MockState::default());
            let shared = state.clone();
            let handler = move |req: http::Request<Incoming>, _peer: SocketAddr| {
                let state = shared.clone();
                async move { Ok::<_, Infallible>(answer(&state, req).await) }
            };
            tokio::spawn(serve_http(
                listener,
                ServerLimits::default(),
                handler,
                std::future::pending(),
            ));
            Self {
                base: Url::parse(&format!("http://{addr}")).unwrap(),
                state,
            }
        }

        fn on(&self, api: Api, replies: Vec<Canned>) {
            self.state
                .replies
                .lock()
                .unwrap()
                .insert(format!("/{api}"), replies.into());
        }

        fn requests(&self, api: Api) -> Vec<Recorded> {
            let log = self.state.log.lock().unwrap();
            log.get(&format!("/{api}")).cloned().unwrap_or_default()
        }

        fn calls(&self, api: Api) -> usize {
            self.requests(api).len()
        }

        fn settings(&self, timeout: Duration) -> ClientSettings {
            ClientSettings {
                endpoints: Endpoints::single(self.base.clone()),
                client_id: "ding-client-id".to_owned(),
                client_secret: SECRET.to_owned(),
                timeout,
                retry: RetryPolicy {
                    max_retries: 2,
                    base_delay: Duration::from_millis(5),
                },
                exclusive_corp_id: None,
                metrics: Default::default(),
            }
        }

        fn client(&self) -> DingTalkClient {
            DingTalkClient::new(self.settings(Duration::from_secs(5)), http_client())
        }
    }

    fn http_client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn answer(
        state: &MockState,
        req: http::Request<Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().map(str::to_owned);
        let token_header = req
            .headers()
            .get("x-acs-dingtalk-access-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        state
            .log
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(Recorded {
                query,
                token_header,
                body,
            });
        let canned = {
            let mut replies = state.replies.lock().unwrap();
            match replies.get_mut(&path) {
                Some(queue) if queue.len() > 1 => queue.pop_front(),
                Some(queue) => queue.front().cloned(),
                None => None,
            }
        }
        .unwrap_or_else(|| reply(404, json!({ "code": "NotFound", "message": path })));
        if !canned.delay.is_zero() {
            tokio::time::sleep(canned.delay).await;
        }
        http::Response::builder()
            .status(canned.status)
            .header("content-type", canned.content_type)
            .body(Full::new(Bytes::from(canned.body)))
            .unwrap()
    }

    fn profile() -> Value {
        json!({
            "nick": "张三", "unionId": "union-zhangsan", "openId": "open-1",
            "avatarUrl": "https://static.example.com/a.png", "email": "zhangsan@example.com",
            "stateCode": "86", "visitor": false
        })
    }

    #[test]
    fn authorize_url_carries_every_parameter_encoded() {
        let settings = ClientSettings {
            endpoints: Endpoints::default(),
            client_id: "dingabc".into(),
            client_secret: SECRET.into(),
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            exclusive_corp_id: None,
            metrics: Default::default(),
        };
        let client = DingTalkClient::new(settings.clone(), http_client());
        let redirect = "https://gw.example.com/_dinggate/callback?x=1&y=a b";
        let url = client.authorize_url(redirect, "st-1/+=", Some("dingcorp"));
        assert!(url
            .as_str()
            .starts_with("https://login.dingtalk.com/oauth2/auth?"));
        let query = url.query().unwrap();
        assert!(query.contains("scope=openid%20corpid"), "{query}");
        assert!(query.contains(
            "redirect_uri=https%3A%2F%2Fgw.example.com%2F_dinggate%2Fcallback%3Fx%3D1%26y%3Da%20b"
        ));
        assert!(query.contains("state=st-1%2F%2B%3D"), "{query}");
        let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let expected: HashMap<String, String> = [
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("client_id", "dingabc"),
            ("scope", "openid corpid"),
            ("state", "st-1/+="),
            ("prompt", "consent"),
            ("corpId", "dingcorp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(pairs, expected);

        let url = client.authorize_url("https://gw.example.com/cb", "s", None);
        let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["scope"], "openid");
        assert!(!pairs.contains_key("corpId"));
        assert!(url.query().unwrap().contains("scope=openid&"));

        let mut prefixed = settings;
        prefixed.endpoints.login = Url::parse("http://127.0.0.1:9/mock/").unwrap();
        let url = DingTalkClient::new(prefixed, http_client()).authorize_url("x", "s", None);
        assert_eq!(url.path(), "/mock/oauth2/auth");
    }

    #[tokio::test]
    async fn exchanges_code_and_reads_profile() {
        let mock = Mock::start().await;
        mock.on(
            Api::UserAccessToken,
            vec![ok(json!({
                "accessToken": "user-token-1", "refreshToken": "refresh-1",
                "expireIn": 7200, "corpId": "dingcorp"
            }))],
        );
        mock.on(Api::CurrentUser, vec![ok(profile())]);
        let client = mock.client();

        let token = client.exchange_code("the-auth-code").await.unwrap();
        assert_eq!(token.corp_id.as_deref(), Some("dingcorp"));
        assert_eq!(token.expire_in, 7200);
        assert!(!format!("{token:?}").contains("user-token-1"));
        let sent = &mock.requests(Api::UserAccessToken)[0].body;
        assert_eq!(
            sent,
            &json!({
                "clientId": "ding-client-id", "clientSecret": SECRET,
                "code": "the-auth-code", "grantType": "authorization_code"
            })
        );

        let user = client.current_user(&token).await.unwrap();
        assert_eq!(user.union_id, "union-zhangsan");
        assert_eq!(user.nick, "张三");
        assert_eq!(user.open_id.as_deref(), Some("open-1"));
        assert_eq!(
            user.avatar_url.as_deref(),
            Some("https://static.example.com/a.png")
        );
        assert_eq!(user.email.as_deref(), Some("zhangsan@example.com"));
        assert_eq!(user.mobile, None);
        let me = &mock.requests(Api::CurrentUser)[0];
        assert_eq!(me.token_header.as_deref(), Some("user-token-1"));
        assert_eq!(me.query, None);
    }

    #[tokio::test]
    async fn profile_without_union_id_is_a_decode_error() {
        let mock = Mock::start().await;
        mock.on(Api::CurrentUser, vec![ok(json!({ "nick": "张三" }))]);
        let err = mock
            .client()
            .current_user(&UserToken::new("t", None, 7200))
            .await
            .unwrap_err();
        match &err {
            DingTalkError::Decode {
                api: which,
                status,
                detail,
            } => {
                assert_eq!(*which, Api::CurrentUser);
                assert_eq!(*status, 200);
                assert!(detail.contains("unionId"), "{detail}");
            }
            other => panic!("expected Decode, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn token_response_of_the_wrong_shape_does_not_leak_its_values() {
        let mock = Mock::start().await;
        mock.on(
            Api::UserAccessToken,
            vec![ok(
                json!({ "accessToken": ["leaky-token"], "expireIn": 7200 }),
            )],
        );
        let err = mock.client().exchange_code("code-1").await.unwrap_err();
        assert!(matches!(err, DingTalkError::Decode { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("leaky-token"));
    }

    #[tokio::test]
    async fn new_api_errors_keep_code_message_and_request_id() {
        let mock = Mock::start().await;
        mock.on(
            Api::CurrentUser,
            vec![reply(
                400,
                json!({ "code": "InvalidAuthentication", "message": "不合法的access_token", "requestid": "REQ-1" }),
            )],
        );
        let err = mock
            .client()
            .current_user(&UserToken::new("user-token-x", None, 7200))
            .await
            .unwrap_err();
        match &err {
            DingTalkError::Api {
                status,
                code,
                message,
                request_id,
                ..
            } => {
                assert_eq!(*status, 400);
                assert_eq!(code, "InvalidAuthentication");
                assert_eq!(message, "不合法的access_token");
                assert_eq!(request_id.as_deref(), Some("REQ-1"));
            }
            other => panic!("expected Api, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("HTTP 400")
                && text.contains("REQ-1")
                && text.contains("InvalidAuthentication")
        );
        assert!(!text.contains("user-token-x"));
        assert!(!err.is_bad_code() && !err.is_timeout());
        assert!(err
            .operator_hint()
            .contains("dingtalk.client_id / client_secret"));
    }

    #[tokio::test]
    async fn exchange_errors_tell_config_problems_from_bad_codes() {
        let mock = Mock::start().await;
        mock.on(
            Api::UserAccessToken,
            vec![
                reply(
                    400,
                    json!({ "Code": "invalidClientIdOrSecret", "Message": "无效的clientId或者clientSecret", "RequestId": "R-2" }),
                ),
                reply(400, json!({ "code": "invalidAuthCode", "message": "code expired", "requestid": "R-3" })),
            ],
        );
        let client = mock.client();
        let config = client.exchange_code("secret-code-1").await.unwrap_err();
        assert!(
            matches!(&config, DingTalkError::Api { code, request_id, .. }
            if code == "invalidClientIdOrSecret" && request_id.as_deref() == Some("R-2"))
        );
        assert!(!config.is_bad_code());
        assert!(config
            .operator_hint()
            .contains("dingtalk.client_id / client_secret"));

        let bad = client.exchange_code("secret-code-2").await.unwrap_err();
        assert!(bad.is_bad_code(), "{bad:?}");
        assert!(bad.operator_hint().contains("redirect URL"));
        for err in [&config, &bad] {
            let text = format!("{err} {err:?} {}", err.operator_hint());
            assert!(
                !text.contains("secret-code") && !text.contains(SECRET),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn legacy_auth_error_is_parsed_from_sub_code_and_retried_once() {
        let mock = Mock::start().await;
        mock.on(Api::AppToken, vec![app_token_reply("app-token-1")]);
        mock.on(Api::UserDetail, vec![token_rejected()]);
        let err = mock.client().user_detail("zhangsan").await.unwrap_err();
        match &err {
            DingTalkError::Legacy {
                api: which,
                errcode,
                sub_code,
                message,
                request_id,
            } => {
                assert_eq!(*which, Api::UserDetail);
                assert_eq!(*errcode, 88);
                assert_eq!(sub_code.as_deref(), Some("40014"));
                assert_eq!(message, "不合法的access_token");
                assert_eq!(request_id.as_deref(), Some("16l4ew3d47pdp"));
            }
            other => panic!("expected Legacy, got {other:?}"),
        }
        // One refetch and one retry, not a loop.
        assert_eq!(mock.calls(Api::AppToken), 2);
        assert_eq!(mock.calls(Api::UserDetail), 2);
        assert!(!format!("{err} {err:?}").contains("app-token-1"));
    }

    #[tokio::test]
    async fn rejected_app_token_is_refetched_and_the_call_retried() {
        let mock = Mock::start().await;
        mock.on(
            Api::AppToken,
            vec![
                app_token_reply("app-token-1"),
                app_token_reply("app-token-2"),
            ],
        );
        mock.on(
            Api::UserIdByUnionId,
            vec![
                token_rejected(),
                legacy_ok(json!({ "contact_type": 0, "userid": "zhangsan" })),
            ],
        );
        let client = mock.client();
        assert_eq!(
            client.user_id_by_union_id("union-zhangsan").await.unwrap(),
            Some("zhangsan".to_owned())
        );
        let sent = mock.requests(Api::UserIdByUnionId);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].query.as_deref(), Some("access_token=app-token-1"));
        assert_eq!(sent[1].query.as_deref(), Some("access_token=app-token-2"));
        assert_eq!(sent[1].body, json!({ "unionid": "union-zhangsan" }));
        assert_eq!(mock.calls(Api::AppToken), 2);

        client.user_id_by_union_id("union-zhangsan").await.unwrap();
        assert_eq!(mock.calls(Api::AppToken), 2, "the new token is cached");
        assert_eq!(
            mock.requests(Api::UserIdByUnionId)[2].query.as_deref(),
            Some("access_token=app-token-2")
        );
    }

    #[tokio::test]
    async fn rate_limits_are_retried_then_succeed() {
        let mock = Mock::start().await;
        mock.on(Api::AppToken, vec![app_token_reply("app-token-1")]);
        mock.on(
            Api::UserIdByUnionId,
            vec![
                qps_limited(),
                ok(json!({ "errcode": "90018", "errmsg": "limited" })),
                legacy_ok(json!({ "contact_type": "0", "userid": "lisi" })),
            ],
        );
        mock.on(
            Api::CurrentUser,
            vec![
                reply(403, json!({ "code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "message": "qps" })),
                ok(profile()),
            ],
        );
        let client = mock.client();
        assert_eq!(
            client.user_id_by_union_id("u").await.unwrap(),
            Some("lisi".to_owned())
        );
        assert_eq!(mock.calls(Api::UserIdByUnionId), 3);
        let user = client
            .current_user(&UserToken::new("t", None, 1))
            .await
            .unwrap();
        assert_eq!(user.nick, "张三");
        assert_eq!(mock.calls(Api::CurrentUser), 2);
    }

    #[tokio::test]
    async fn unreachable_host_is_a_transport_error_without_the_token() {
        let mock = Mock::start().await;
        mock.on(Api::AppToken, vec![app_token_reply("app-token-1")]);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut settings = mock.settings(Duration::from_secs(2));
        settings.endpoints.oapi = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = DingTalkClient::new(settings, http_client())
            .user_detail("zhangsan")
            .await
            .unwrap_err();
        assert!(matches!(err, DingTalkError::Transport { .. }), "{err:?}");
        let mut text = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(!text.contains("app-token-1"), "{text}");
        assert!(err.operator_hint().contains("dingtalk.oapi_url"));
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failed_fetch_share_its_error() {
        let mock = Mock::start().await;
        mock.on(
            Api::AppToken,
            vec![
                delayed(
                    reply(
                        400,
                        json!({ "code": "invalidClientIdOrSecret", "message": "bad" }),
                    ),
                    Duration::from_millis(100),
                ),
                app_token_reply("app-token-1"),
            ],
        );
        let client = mock.client();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.app_token().await })
            })
            .collect();
        for result in futures_util::future::join_all(tasks).await {
            let err = result.unwrap().unwrap_err();
            assert!(
                matches!(&err, DingTalkError::Api { code, .. } if code == "invalidClientIdOrSecret")
            );
        }
        assert_eq!(mock.calls(Api::AppToken), 1);
        // A caller arriving after the failure tries again.
        assert_eq!(client.app_token().await.unwrap().secret(), "app-token-1");
        assert_eq!(mock.calls(Api::AppToken), 2);
    }

    #[tokio::test]
    async fn enterprise_lookups_parse() {
        let mock = Mock::start().await;
        mock.on(Api::AppToken, vec![app_token_reply("app-token-1")]);
        mock.on(
            Api::UserDetail,
            vec![legacy_ok(json!({
                "userid": "zhangsan", "unionid": "union-zhangsan", "name": "张三", "title": "工程师",
                "dept_id_list": [2, "3"], "admin": false, "boss": false, "active": true,
                "org_email": "zs@corp.example.com", "job_number": "007",
                "leader_in_dept": [{ "dept_id": 2, "leader": true }],
                "role_list": [{ "id": 1, "name": "主管理员", "group_name": "默认" }]
            }))],
        );
        mock.on(
            Api::DepartmentChains,
            vec![legacy_ok(json!({
                "parent_list": [{ "parent_dept_id_list": [3, 2, 1] }, { "parent_dept_id_list": [5, 1] }]
            }))],
        );
        mock.on(
            Api::InAppUser,
            vec![
                legacy_ok(json!({
                    "userid": "zhangsan", "unionid": "union-zhangsan", "name": "张三",
                    "device_id": "d", "sys": true, "sys_level": 1
                })),
                ok(json!({ "errcode": 40078, "errmsg": "不存在的临时授权码", "request_id": "r" })),
            ],
        );
        mock.on(
            Api::UserIdByUnionId,
            vec![
                ok(json!({ "errcode": 60121, "errmsg": "找不到该用户", "request_id": "r" })),
                legacy_ok(json!({ "contact_type": 1, "userid": "external-1" })),
            ],
        );
        mock.on(
            Api::Department,
            vec![
                legacy_ok(json!({ "dept_id": 300, "name": "财务部", "parent_id": 1 })),
                ok(json!({ "errcode": 60003, "errmsg": "部门不存在", "request_id": "r" })),
                ok(json!({ "errcode": 60011, "errmsg": "没有调用该接口的权限", "request_id": "r" })),
            ],
        );
        let client = mock.client();

        let detail = client.user_detail("zhangsan").await.unwrap();
        assert_eq!(detail.name, "张三");
        assert_eq!(detail.dept_id_list, vec![2, 3]);
        assert_eq!(detail.org_email.as_deref(), Some("zs@corp.example.com"));
        assert!(detail.active && !detail.admin);
        assert_eq!(detail.role_list[0].name, "主管理员");
        assert_eq!(
            mock.requests(Api::UserDetail)[0].body,
            json!({ "userid": "zhangsan", "language": "zh_CN" })
        );

        let chains = client.department_chains("zhangsan").await.unwrap();
        assert_eq!(chains, vec![vec![3, 2, 1], vec![5, 1]]);

        let name = client.department_name(300).await.unwrap();
        assert_eq!(name.as_deref(), Some("财务部"));
        assert_eq!(
            mock.requests(Api::Department)[0].body,
            json!({ "dept_id": 300, "language": "zh_CN" })
        );
        assert_eq!(client.department_name(999).await.unwrap(), None);
        assert!(
            client.department_name(300).await.is_err(),
            "other errors are errors"
        );

        let user = client.inapp_user("jsapi-code-1").await.unwrap();
        assert_eq!(
            (user.userid.as_str(), user.unionid.as_str()),
            ("zhangsan", "union-zhangsan")
        );
        assert!(user.sys);
        assert_eq!(user.sys_level, 1);
        assert_eq!(
            mock.requests(Api::InAppUser)[0].body,
            json!({ "code": "jsapi-code-1" })
        );
        let err = client.inapp_user("jsapi-code-2").await.unwrap_err();
        assert!(err.is_bad_code(), "{err:?}");
        assert!(!err.to_string().contains("jsapi-code-2"));

        assert_eq!(client.user_id_by_union_id("nobody").await.unwrap(), None);
        assert_eq!(client.user_id_by_union_id("external").await.unwrap(), None);
        assert_eq!(mock.calls(Api::AppToken), 1);
    }

    #[test]
    fn debug_output_has_no_secret() {
        let settings = ClientSettings {
            endpoints: Endpoints::default(),
            client_id: "dingabc".into(),
            client_secret: SECRET.into(),
            timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            exclusive_corp_id: None,
            metrics: Default::default(),
        };
        let client = DingTalkClient::new(settings.clone(), http_client());
        let text = format!("{settings:?} {client:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("dingabc"));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let policy = RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(100),
        };
        for retry in 0..3 {
            let delay = backoff(policy, retry);
            let floor = Duration::from_millis(100 << retry);
            assert!(
                delay >= floor && delay <= floor + floor / 2,
                "{retry}: {delay:?}"
            );
        }
    }
}
