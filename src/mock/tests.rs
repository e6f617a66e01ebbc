//! End-to-end tests of the mock over real HTTP on 127.0.0.1:0.

use std::time::Duration;

use reqwest::{header, Client, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

use super::{serve, Fault, MockDingTalk, MockSettings};

const CALLBACK: &str = "http://app.test/_dinggate/callback";

struct Running {
    base: String,
    mock: MockDingTalk,
    client: Client,
    _shutdown: oneshot::Sender<()>,
}

async fn start() -> Running {
    start_with(MockSettings::default()).await
}

async fn start_with(settings: MockSettings) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mock = MockDingTalk::new(settings);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, mock.clone(), async {
        let _ = rx.await;
    }));
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Running {
        base,
        mock,
        client,
        _shutdown: tx,
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn authorize_url(&self, scope: &str, extra: &[(&str, &str)]) -> String {
        let mut url = Url::parse(&self.url("/oauth2/auth")).unwrap();
        url.query_pairs_mut()
            .append_pair("redirect_uri", CALLBACK)
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.mock.settings().client_id)
            .append_pair("scope", scope)
            .append_pair("state", "st-1")
            .append_pair("prompt", "consent")
            .extend_pairs(extra);
        url.into()
    }

    async fn get(&self, url: &str) -> Response {
        self.client.get(url).send().await.unwrap()
    }

    /// Logs `userid` in through the authorize endpoint and returns the code from the redirect.
    async fn login(&self, userid: &str, scope: &str) -> String {
        let resp = self
            .get(&self.authorize_url(scope, &[("mock_user", userid)]))
            .await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        query_value(&location(&resp), "code").expect("code in redirect")
    }

    async fn post_json(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn exchange(&self, code: &str) -> Response {
        let settings = self.mock.settings();
        self.post_json(
            "/v1.0/oauth2/userAccessToken",
            json!({
                "clientId": settings.client_id,
                "clientSecret": settings.client_secret,
                "code": code,
                "grantType": "authorization_code",
            }),
        )
        .await
    }

    async fn user_token(&self, userid: &str, scope: &str) -> Value {
        let code = self.login(userid, scope).await;
        let resp = self.exchange(&code).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }

    async fn me(&self, token: &str) -> Response {
        self.client
            .get(self.url("/v1.0/contact/users/me"))
            .header("x-acs-dingtalk-access-token", token)
            .send()
            .await
            .unwrap()
    }

    async fn app_token(&self) -> String {
        let settings = self.mock.settings();
        let resp = self
            .post_json(
                "/v1.0/oauth2/accessToken",
                json!({"appKey": settings.client_id, "appSecret": settings.client_secret}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["expireIn"], 7200);
        body["accessToken"].as_str().unwrap().to_owned()
    }

    /// A legacy call; asserts the HTTP 200 every oapi answer has.
    async fn oapi(&self, path: &str, token: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(self.url(path))
            .query(&[("access_token", token)])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.json().await.unwrap()
    }
}

fn location(resp: &Response) -> String {
    resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

fn query_value(url: &str, key: &str) -> Option<String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn api_error(resp: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["requestid"].as_str().is_some_and(|r| r.len() == 36));
    body
}

fn assert_oapi_ok(body: &Value) {
    assert_eq!(body["errcode"], 0, "{body}");
    assert_eq!(body["errmsg"], "ok");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
}

fn assert_auth_error(body: &Value, sub_code: &str) {
    assert_eq!(body["errcode"], 88, "{body}");
    assert_eq!(body["sub_code"], sub_code);
    assert!(body["request_id"].as_str().is_some());
}

#[tokio::test]
async fn authorize_page_lists_the_seeded_users() {
    let r = start().await;
    let resp = r.get(&r.authorize_url("openid corpid", &[])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let html = resp.text().await.unwrap();
    for needle in [
        "张三",
        "zhangsan",
        "研发部 › 平台组",
        "示例科技有限公司",
        "陈晓明",
        "Alice 外部",
        "远景咨询有限公司",
        "孙七",
        "账号未激活",
        "拒绝授权",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    // Seven people can log in, 王五 through either of two organizations; the inactive one cannot.
    assert_eq!(html.matches("以此身份登录").count(), 8);
    assert!(
        html.contains("mock_user=wangwu&amp;mock_corp=dingcorp00000002")
            || html.contains("mock_user=wangwu&mock_corp=dingcorp00000002")
    );
    assert!(html.contains("mock_user=zhangsan"));
    assert!(!html.contains("mock_user=sunqi"));
    assert!(!html.contains("<script"));
}

#[tokio::test]
async fn authorize_rejects_bad_requests_with_a_page() {
    let r = start().await;
    let client_id = r.mock.settings().client_id.clone();
    let cases: Vec<(String, StatusCode)> = vec![
        (
            r.authorize_url("openid", &[])
                .replace(&client_id, "unknown-app"),
            StatusCode::BAD_REQUEST,
        ),
        (
            r.url("/oauth2/auth?response_type=code&client_id=dingmockclientid0001&scope=openid"),
            StatusCode::BAD_REQUEST,
        ),
        (
            r.authorize_url("openid", &[])
                .replace("response_type=code", "response_type=token"),
            StatusCode::BAD_REQUEST,
        ),
        (r.authorize_url("corpid", &[]), StatusCode::BAD_REQUEST),
        (
            r.authorize_url("openid", &[("mock_user", "nobody")]),
            StatusCode::BAD_REQUEST,
        ),
        (
            r.authorize_url("openid", &[("mock_user", "sunqi")]),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (url, status) in cases {
        let resp = r.get(&url).await;
        assert_eq!(resp.status(), status, "{url}");
        assert!(resp.headers().get(header::LOCATION).is_none());
        assert!(resp.text().await.unwrap().contains("<!doctype html>"));
    }
    assert_eq!(r.mock.call_count("/oauth2/auth"), 6);
}

#[tokio::test]
async fn approval_redirects_with_code_authcode_and_state() {
    let r = start().await;
    let state = "a b&c=d/é?#";
    let mut url = Url::parse(&r.url("/oauth2/auth")).unwrap();
    url.query_pairs_mut()
        .append_pair("redirect_uri", "http://app.test/cb?keep=1")
        .append_pair("response_type", "code")
        .append_pair("client_id", "dingmockclientid0001")
        .append_pair("scope", "openid")
        .append_pair("state", state)
        .append_pair("prompt", "consent")
        .append_pair("mock_user", "lisi");
    let resp = r.get(url.as_str()).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let target = location(&resp);
    assert!(
        target.starts_with("http://app.test/cb?keep=1&code="),
        "{target}"
    );
    let code = query_value(&target, "code").unwrap();
    assert_eq!(
        query_value(&target, "authCode").as_deref(),
        Some(code.as_str())
    );
    assert_eq!(query_value(&target, "state").as_deref(), Some(state));
    assert_eq!(query_value(&target, "keep").as_deref(), Some("1"));
    assert!(code.len() >= 16);

    let refuse = r
        .get(&r.authorize_url("openid", &[("mock_refuse", "1")]))
        .await;
    assert_eq!(refuse.status(), StatusCode::FOUND);
    let target = location(&refuse);
    assert_eq!(
        query_value(&target, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_value(&target, "state").as_deref(), Some("st-1"));
    assert!(query_value(&target, "code").is_none());
}

#[tokio::test]
async fn codes_are_single_use_and_expire() {
    let r = start().await;
    let code = r.login("zhangsan", "openid").await;
    let first = r.exchange(&code).await;
    assert_eq!(first.status(), StatusCode::OK);
    let body: Value = first.json().await.unwrap();
    assert!(body["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["refreshToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["expireIn"], 7200);

    api_error(
        r.exchange(&code).await,
        StatusCode::BAD_REQUEST,
        "invalidAuthCode",
    )
    .await;

    let code = r.login("zhangsan", "openid").await;
    r.mock.advance_clock(r.mock.settings().code_ttl);
    api_error(
        r.exchange(&code).await,
        StatusCode::BAD_REQUEST,
        "invalidAuthCode",
    )
    .await;

    api_error(
        r.exchange("never-issued").await,
        StatusCode::BAD_REQUEST,
        "invalidAuthCode",
    )
    .await;
    assert_eq!(r.mock.call_count("/v1.0/oauth2/userAccessToken"), 4);
}

#[tokio::test]
async fn token_endpoint_errors_have_the_new_api_shape() {
    let r = start().await;
    let code = r.login("zhangsan", "openid").await;
    let wrong_secret = r
        .post_json(
            "/v1.0/oauth2/userAccessToken",
            json!({"clientId": "dingmockclientid0001", "clientSecret": "nope",
                   "code": code, "grantType": "authorization_code"}),
        )
        .await;
    let body = api_error(
        wrong_secret,
        StatusCode::BAD_REQUEST,
        "invalidClientIdOrSecret",
    )
    .await;
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    // The code was not consumed by the rejected call.
    assert_eq!(r.exchange(&code).await.status(), StatusCode::OK);

    let empty = r
        .client
        .post(r.url("/v1.0/oauth2/userAccessToken"))
        .send()
        .await
        .unwrap();
    api_error(empty, StatusCode::BAD_REQUEST, "Missingbody").await;

    let no_client = r
        .post_json(
            "/v1.0/oauth2/userAccessToken",
            json!({"grantType": "authorization_code"}),
        )
        .await;
    api_error(no_client, StatusCode::BAD_REQUEST, "MissingclientId").await;

    let wrong_app = r
        .post_json(
            "/v1.0/oauth2/accessToken",
            json!({"appKey": "x", "appSecret": "y"}),
        )
        .await;
    api_error(
        wrong_app,
        StatusCode::BAD_REQUEST,
        "invalidClientIdOrSecret",
    )
    .await;

    let unknown = r.get(&r.url("/v1.0/contact/nothing")).await;
    api_error(unknown, StatusCode::NOT_FOUND, "InvalidAction.NotFound").await;
}

#[tokio::test]
async fn refresh_token_grant_issues_new_tokens() {
    let r = start().await;
    let tokens = r.user_token("chenxiaoming", "openid corpid").await;
    let settings = r.mock.settings();
    let refreshed = r
        .post_json(
            "/v1.0/oauth2/userAccessToken",
            json!({"clientId": settings.client_id, "clientSecret": settings.client_secret,
                   "grantType": "refresh_token", "refreshToken": tokens["refreshToken"]}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let body: Value = refreshed.json().await.unwrap();
    assert_ne!(body["accessToken"], tokens["accessToken"]);
    assert_eq!(body["corpId"], "dingcorp00000001");
    let me: Value = r
        .me(body["accessToken"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["nick"], "陈晓明");
}

#[tokio::test]
async fn contact_profile_accepts_the_header_only() {
    let r = start().await;
    let tokens = r.user_token("zhangsan", "openid").await;
    let token = tokens["accessToken"].as_str().unwrap();

    let resp = r.me(token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["nick"], "张三");
    assert_eq!(me["unionId"], "dRZsWj0C9vFiiP2iSmwuA8AiEiE");
    assert_eq!(me["openId"], "Kq3TfNzWb7Hx0LmYcR2vPgQiEiE");
    assert_eq!(me["email"], "zhangsan@example.com");
    assert_eq!(me["mobile"], "13800000001");
    assert_eq!(me["stateCode"], "86");
    assert_eq!(me["visitor"], false);
    let avatar = me["avatarUrl"].as_str().unwrap();
    assert_eq!(avatar, format!("{}/__mock/avatar/zhangsan.svg", r.base));
    let svg = r.get(avatar).await;
    assert_eq!(svg.status(), StatusCode::OK);
    assert_eq!(svg.headers()[header::CONTENT_TYPE], "image/svg+xml");

    let by_union = r
        .client
        .get(r.url("/v1.0/contact/users/dRZsWj0C9vFiiP2iSmwuA8AiEiE"))
        .header("x-acs-dingtalk-access-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_union.json::<Value>().await.unwrap(), me);

    let other = r
        .client
        .get(r.url("/v1.0/contact/users/hY7pLq2XsNc4VbT9mKfJ0wGiEiE"))
        .header("x-acs-dingtalk-access-token", token)
        .send()
        .await
        .unwrap();
    api_error(
        other,
        StatusCode::FORBIDDEN,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied",
    )
    .await;

    let in_query = r
        .get(&r.url(&format!("/v1.0/contact/users/me?access_token={token}")))
        .await;
    api_error(
        in_query,
        StatusCode::BAD_REQUEST,
        "AuthenticationFailed.MissingParameter",
    )
    .await;
    let bearer = r
        .client
        .get(r.url("/v1.0/contact/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    api_error(
        bearer,
        StatusCode::BAD_REQUEST,
        "AuthenticationFailed.MissingParameter",
    )
    .await;

    api_error(
        r.me("bogus").await,
        StatusCode::BAD_REQUEST,
        "InvalidAuthentication",
    )
    .await;
    let app_token = r.app_token().await;
    api_error(
        r.me(&app_token).await,
        StatusCode::BAD_REQUEST,
        "InvalidAuthentication",
    )
    .await;

    r.mock.advance_clock(r.mock.settings().token_ttl);
    api_error(
        r.me(token).await,
        StatusCode::BAD_REQUEST,
        "InvalidAuthentication",
    )
    .await;
}

#[tokio::test]
async fn users_without_email_have_no_email_key() {
    let r = start().await;
    let tokens = r.user_token("wangwu", "openid").await;
    let me: Value = r
        .me(tokens["accessToken"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["nick"], "王五");
    assert!(me.get("email").is_none());
}

#[tokio::test]
async fn corp_id_only_with_corpid_scope_and_it_is_the_users_corp() {
    let r = start().await;
    let plain = r.user_token("zhangsan", "openid").await;
    assert!(plain.get("corpId").is_none(), "{plain}");

    let with_corp = r.user_token("zhangsan", "openid corpid").await;
    assert_eq!(with_corp["corpId"], "dingcorp00000001");

    let outsider = r.user_token("alice.partner", "openid corpid").await;
    assert_eq!(outsider["corpId"], "dingcorp00000002");
    let me: Value = r
        .me(outsider["accessToken"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["nick"], "Alice 外部");

    r.mock.remove_user("lisi");
    let departed = r.user_token("lisi", "openid corpid").await;
    assert!(departed.get("corpId").is_none(), "{departed}");
}

#[tokio::test]
async fn app_tokens_are_shared_and_expire() {
    let r = start().await;
    let first = r.app_token().await;
    assert_eq!(r.app_token().await, first);

    let settings = r.mock.settings();
    let legacy: Value = r
        .get(&r.url(&format!(
            "/gettoken?appkey={}&appsecret={}",
            settings.client_id, settings.client_secret
        )))
        .await
        .json()
        .await
        .unwrap();
    assert_oapi_ok(&legacy);
    assert_eq!(legacy["access_token"], first.as_str());
    assert_eq!(legacy["expires_in"], 7200);

    let bad: Value = r
        .get(&r.url("/gettoken?appkey=dingmockclientid0001&appsecret=wrong"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bad["errcode"], 40096);
    let missing: Value = r.get(&r.url("/gettoken")).await.json().await.unwrap();
    assert_eq!(missing["errcode"], 40035);

    r.mock.advance_clock(settings.token_ttl);
    let body = r
        .oapi("/topapi/user/getbyunionid", &first, json!({"unionid": "x"}))
        .await;
    assert_auth_error(&body, "40014");
    assert_ne!(r.app_token().await, first);
}

#[tokio::test]
async fn oapi_lookups_use_the_envelope() {
    let r = start().await;
    let token = r.app_token().await;

    let body = r
        .oapi(
            "/topapi/user/getbyunionid",
            &token,
            json!({"unionid": "dRZsWj0C9vFiiP2iSmwuA8AiEiE"}),
        )
        .await;
    assert_oapi_ok(&body);
    assert_eq!(
        body["result"],
        json!({"contact_type": 0, "userid": "zhangsan"})
    );

    let body = r
        .oapi(
            "/topapi/v2/user/get",
            &token,
            json!({"userid": "zhangsan", "language": "zh_CN"}),
        )
        .await;
    assert_oapi_ok(&body);
    let user = &body["result"];
    assert_eq!(user["userid"], "zhangsan");
    assert_eq!(user["unionid"], "dRZsWj0C9vFiiP2iSmwuA8AiEiE");
    assert_eq!(user["name"], "张三");
    assert_eq!(user["title"], "平台架构师");
    assert_eq!(user["org_email"], "zhangsan@example-tech.cn");
    assert_eq!(user["job_number"], "0001");
    assert_eq!(user["dept_id_list"], json!([101]));
    assert_eq!(
        user["leader_in_dept"],
        json!([{"dept_id": 101, "leader": false}])
    );
    assert_eq!(user["admin"], true);
    assert_eq!(user["boss"], false);
    assert_eq!(user["active"], true);

    let lisi = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "lisi"}))
        .await;
    assert_eq!(
        lisi["result"]["leader_in_dept"],
        json!([{"dept_id": 102, "leader": true}])
    );
    let boss = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "zhaoliu"}))
        .await;
    assert_eq!(boss["result"]["boss"], true);
    assert!(boss["result"].get("email").is_some());
    let wangwu = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "wangwu"}))
        .await;
    assert!(wangwu["result"].get("email").is_none());

    let body = r
        .oapi(
            "/topapi/v2/department/listparentbyuser",
            &token,
            json!({"userid": "chenxiaoming"}),
        )
        .await;
    assert_oapi_ok(&body);
    assert_eq!(
        body["result"]["parent_list"],
        json!([{"parent_dept_id_list": [101, 100, 1]}, {"parent_dept_id_list": [300, 1]}])
    );

    let missing = r.oapi("/topapi/v2/user/get", &token, json!({})).await;
    assert_eq!(missing["errcode"], 40035);
    let unknown = r.oapi("/topapi/v2/user/nothing", &token, json!({})).await;
    assert_eq!(unknown["errcode"], 22);
}

#[tokio::test]
async fn oapi_auth_failures_are_errcode_88() {
    let r = start().await;
    let body = json!({"userid": "zhangsan"});
    assert_auth_error(
        &r.oapi("/topapi/v2/user/get", "bogus", body.clone()).await,
        "40014",
    );

    let user_token = r.user_token("zhangsan", "openid").await;
    let as_user = r
        .oapi(
            "/topapi/v2/user/get",
            user_token["accessToken"].as_str().unwrap(),
            body.clone(),
        )
        .await;
    assert_auth_error(&as_user, "40014");

    // The header is not a token transport on oapi.
    let app_token = r.app_token().await;
    let header_only: Value = r
        .client
        .post(r.url("/topapi/v2/user/get"))
        .header("x-acs-dingtalk-access-token", &app_token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_auth_error(&header_only, "40000");
    let msg = header_only["errmsg"].as_str().unwrap();
    assert!(msg.contains("subcode=40000"), "{msg}");
}

#[tokio::test]
async fn removed_and_outside_users_are_not_found() {
    let r = start().await;
    let token = r.app_token().await;
    let outsider = r
        .oapi(
            "/topapi/user/getbyunionid",
            &token,
            json!({"unionid": "Cs6WnH0tLx4QmZ8bVr2KpNjiEiE"}),
        )
        .await;
    assert_eq!(outsider["errcode"], 60121);

    let lisi = json!({"unionid": "hY7pLq2XsNc4VbT9mKfJ0wGiEiE"});
    assert_oapi_ok(
        &r.oapi("/topapi/user/getbyunionid", &token, lisi.clone())
            .await,
    );
    r.mock.remove_user("lisi");
    let after = r.oapi("/topapi/user/getbyunionid", &token, lisi).await;
    assert_eq!(after["errcode"], 60121);
    let detail = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "lisi"}))
        .await;
    assert_eq!(detail["errcode"], 60121);
    let parents = r
        .oapi(
            "/topapi/v2/department/listparentbyuser",
            &token,
            json!({"userid": "lisi"}),
        )
        .await;
    assert_eq!(parents["errcode"], 60121);
}

#[tokio::test]
async fn jsapi_codes_work_once_and_only_for_active_members() {
    let r = start().await;
    let token = r.app_token().await;
    let code = r.mock.issue_jsapi_code("zhangsan").unwrap();
    let body = r
        .oapi("/topapi/v2/user/getuserinfo", &token, json!({"code": code}))
        .await;
    assert_oapi_ok(&body);
    let info = &body["result"];
    assert_eq!(info["userid"], "zhangsan");
    assert_eq!(info["unionid"], "dRZsWj0C9vFiiP2iSmwuA8AiEiE");
    assert_eq!(info["name"], "张三");
    assert_eq!(info["sys"], true);
    assert_eq!(info["sys_level"], 1);
    assert!(info["device_id"].as_str().is_some());

    let again = r
        .oapi("/topapi/v2/user/getuserinfo", &token, json!({"code": code}))
        .await;
    assert_eq!(again["errcode"], 40078);
    assert_eq!(again["errmsg"], "不存在的临时授权码");

    let oauth_code = r.login("zhangsan", "openid").await;
    let wrong_kind = r
        .oapi(
            "/topapi/v2/user/getuserinfo",
            &token,
            json!({"code": oauth_code}),
        )
        .await;
    assert_eq!(wrong_kind["errcode"], 40078);

    let boss_code = r.mock.issue_jsapi_code("zhaoliu").unwrap();
    let boss = r
        .oapi(
            "/topapi/v2/user/getuserinfo",
            &token,
            json!({"code": boss_code}),
        )
        .await;
    assert_eq!(boss["result"]["sys_level"], 100);
    assert_eq!(boss["result"]["sys"], false);

    let late = r.mock.issue_jsapi_code("lisi").unwrap();
    r.mock.advance_clock(Duration::from_secs(5 * 60));
    let token = r.app_token().await;
    let expired = r
        .oapi("/topapi/v2/user/getuserinfo", &token, json!({"code": late}))
        .await;
    assert_eq!(expired["errcode"], 40078);

    assert!(r.mock.issue_jsapi_code("sunqi").is_none());
    assert!(r.mock.issue_jsapi_code("alice.partner").is_none());
    assert!(r.mock.issue_jsapi_code("nobody").is_none());
}

#[tokio::test]
async fn faults_fire_the_requested_number_of_times() {
    let r = start().await;
    r.mock
        .inject_fault("/v1.0/oauth2/accessToken", Fault::QpsLimit, 2);
    let settings = r.mock.settings();
    let body = json!({"appKey": settings.client_id, "appSecret": settings.client_secret});
    for _ in 0..2 {
        let resp = r.post_json("/v1.0/oauth2/accessToken", body.clone()).await;
        api_error(
            resp,
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
        )
        .await;
    }
    let token = r.app_token().await;

    r.mock
        .inject_fault("/topapi/user/getbyunionid", Fault::InvalidToken, 1);
    let query = json!({"unionid": "dRZsWj0C9vFiiP2iSmwuA8AiEiE"});
    let faulted = r
        .oapi("/topapi/user/getbyunionid", &token, query.clone())
        .await;
    assert_auth_error(&faulted, "40014");
    assert_oapi_ok(&r.oapi("/topapi/user/getbyunionid", &token, query).await);

    r.mock
        .inject_fault("/v1.0/contact/users/me", Fault::PermissionDenied, 1);
    let denied = api_error(
        r.me("whatever").await,
        StatusCode::FORBIDDEN,
        "Forbidden.AccessDenied.AccessTokenPermissionDenied",
    )
    .await;
    assert_eq!(
        denied["accessdenieddetail"]["requiredScopes"],
        json!(["Contact.User.Read"])
    );

    r.mock.inject_fault("/gettoken", Fault::NonJson, 1);
    let html = r.get(&r.url("/gettoken")).await.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&html).is_err());

    r.mock.inject_fault("/gettoken", Fault::IpBan, 1);
    let ban: Value = r.get(&r.url("/gettoken")).await.json().await.unwrap();
    assert_eq!(ban["punish"], "deny");

    r.mock.inject_fault("/gettoken", Fault::Hang, 1);
    let hung = r
        .client
        .get(r.url("/gettoken"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()));
    let after: Value = r.get(&r.url("/gettoken")).await.json().await.unwrap();
    assert_eq!(after["errcode"], 40035, "the hang was consumed");

    r.mock.inject_fault("/gettoken", Fault::ServerError, 5);
    r.mock.inject_fault("/gettoken", Fault::ServerError, 0);
    assert_eq!(r.get(&r.url("/gettoken")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_surface_mirrors_the_rust_methods() {
    let r = start().await;
    let resp = r
        .post_json(
            "/__mock/faults",
            json!({"path": "/gettoken", "fault": "server_error", "times": 1}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        r.get(&r.url("/gettoken")).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(r.get(&r.url("/gettoken")).await.status(), StatusCode::OK);
    let bad_fault = r
        .post_json(
            "/__mock/faults",
            json!({"path": "/gettoken", "fault": "meteor"}),
        )
        .await;
    assert_eq!(bad_fault.status(), StatusCode::BAD_REQUEST);

    let sunqi = r.authorize_url("openid", &[("mock_user", "sunqi")]);
    assert_eq!(r.get(&sunqi).await.status(), StatusCode::FORBIDDEN);
    let resp = r
        .post_json("/__mock/users/sunqi", json!({"active": true}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(r.get(&sunqi).await.status(), StatusCode::FOUND);
    r.mock.set_user_active("sunqi", false);
    assert_eq!(r.get(&sunqi).await.status(), StatusCode::FORBIDDEN);

    let resp = r
        .post_json("/__mock/users/wangwu", json!({"removed": true}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let token = r.app_token().await;
    let gone = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "wangwu"}))
        .await;
    assert_eq!(gone["errcode"], 60121);
    let unknown = r
        .post_json("/__mock/users/nobody", json!({"active": true}))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let neither = r.post_json("/__mock/users/lisi", json!({})).await;
    assert_eq!(neither.status(), StatusCode::BAD_REQUEST);

    let code: Value = r
        .get(&r.url("/__mock/jsapi_code?userid=lisi&corpId=dingcorp00000001"))
        .await
        .json()
        .await
        .unwrap();
    let info = r
        .oapi(
            "/topapi/v2/user/getuserinfo",
            &token,
            json!({"code": code["code"]}),
        )
        .await;
    assert_eq!(info["result"]["userid"], "lisi");
    let other_corp = r
        .get(&r.url("/__mock/jsapi_code?userid=lisi&corpId=dingcorp00000002"))
        .await;
    assert_eq!(other_corp.status(), StatusCode::BAD_REQUEST);
    let inactive = r.get(&r.url("/__mock/jsapi_code?userid=sunqi")).await;
    assert_eq!(inactive.status(), StatusCode::NOT_FOUND);

    let resp = r
        .post_json("/__mock/clock", json!({"advance_seconds": 7200}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let expired = r
        .oapi("/topapi/v2/user/get", &token, json!({"userid": "lisi"}))
        .await;
    assert_auth_error(&expired, "40014");

    let calls: Value = r.get(&r.url("/__mock/calls")).await.json().await.unwrap();
    let calls = calls.as_array().unwrap();
    assert!(calls
        .iter()
        .all(|c| !c["path"].as_str().unwrap().starts_with("/__mock/")));
    assert_eq!(calls[0]["method"], "GET");
    assert_eq!(calls[0]["path"], "/gettoken");
    assert!(calls[0]["at_unix_ms"].as_u64().unwrap() > 0);
    assert_eq!(calls.len(), r.mock.calls().len());
}

#[tokio::test]
async fn calls_are_recorded_without_query() {
    let r = start().await;
    r.get(&r.url("/gettoken?appkey=a&appsecret=b")).await;
    r.get(&r.authorize_url("openid", &[])).await;
    let calls = r.mock.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].method, http::Method::GET);
    assert_eq!(calls[0].path, "/gettoken");
    assert_eq!(calls[1].path, "/oauth2/auth");
    assert!(calls[0].at <= calls[1].at);
    assert_eq!(r.mock.call_count("/gettoken"), 1);
    assert_eq!(r.mock.call_count("/v1.0/oauth2/userAccessToken"), 0);
}

#[tokio::test]
async fn jsapi_codes_are_refused_with_error_code_3_to_pages_outside_the_registered_domain() {
    let r = start_with(MockSettings {
        homepage_domains: vec!["gw.example.com".to_owned()],
        ..MockSettings::default()
    })
    .await;
    let ask = |page: &str| {
        r.url(&format!(
            "/__mock/jsapi_code?api=v2&userid=lisi&clientId=dingmockclientid0001&url={}",
            urlencoding(page)
        ))
    };
    let ok = r
        .get(&ask("https://GW.example.com/_dinggate/inapp?rd=%2F"))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    for page in ["https://evil.example.com/_dinggate/inapp", "not a url", ""] {
        let refused: Value = r.get(&ask(page)).await.json().await.unwrap();
        assert_eq!(refused["errorCode"], "3", "{page}");
    }
    let seen: Vec<(String, String)> = r
        .mock
        .jsapi_requests()
        .into_iter()
        .map(|j| (j.api, j.outcome))
        .collect();
    assert_eq!(seen[0], ("v2".to_owned(), "code".to_owned()));
    assert_eq!(seen[1], ("v2".to_owned(), "3".to_owned()));
    assert_eq!(seen.len(), 4);
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn only_a_registered_redirect_url_is_sent_back_to() {
    let r = start_with(MockSettings {
        redirect_urls: vec![CALLBACK.to_owned()],
        ..MockSettings::default()
    })
    .await;
    let ok = r
        .get(&r.authorize_url("openid", &[("mock_user", "zhangsan")]))
        .await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    assert!(ok.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .starts_with(CALLBACK));

    let registered = Url::parse(CALLBACK).unwrap();
    let mut other_port = registered.clone();
    other_port.set_port(Some(8443)).unwrap();
    let mut http = registered.clone();
    http.set_scheme(if registered.scheme() == "https" {
        "http"
    } else {
        "https"
    })
    .unwrap();
    let mut other_path = registered.clone();
    other_path.set_path("/elsewhere");
    for wrong in [other_port, http, other_path] {
        let mut url = Url::parse(&r.authorize_url("openid", &[("mock_user", "zhangsan")])).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "redirect_uri" {
                    wrong.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let resp = r.get(url.as_str()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{wrong}");
        assert!(resp.headers().get(header::LOCATION).is_none(), "{wrong}");
        let page = resp.text().await.unwrap();
        assert!(page.contains("重定向URL"), "{page}");
        assert!(
            page.contains(wrong.as_str()),
            "the page shows what was sent: {page}"
        );
    }
}

#[tokio::test]
async fn jsapi_stand_in_script_is_served_on_the_cdn_path() {
    let r = start().await;
    let resp = r
        .get(&r.url("/dingding/dingtalk-jsapi/3.0.25/dingtalk.open.js"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/javascript; charset=utf-8"
    );
    let js = resp.text().await.unwrap();
    assert!(js.contains("runtime: { permission: { requestAuthCode"));
    assert!(
        js.contains("if (false)"),
        "3.0.x builds have no dd.requestAuthCode"
    );
    assert!(
        js.contains("\"zhangsan\""),
        "default user is the first active member"
    );
    let current = r
        .get(&r.url("/dingding/dingtalk-jsapi/3.2.9/dingtalk.open.js"))
        .await;
    assert!(current.text().await.unwrap().contains("if (true)"));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let r = start().await;
    for url in [
        r.url("/gettoken"),
        r.url("/v1.0/unknown"),
        r.authorize_url("openid", &[]),
        r.url("/topapi/unknown"),
    ] {
        let resp = r.get(&url).await;
        assert!(resp.headers().contains_key("x-acs-request-id"), "{url}");
    }
    let legacy: Value = r.get(&r.url("/topapi/unknown")).await.json().await.unwrap();
    let a = legacy["request_id"].as_str().unwrap().to_owned();
    let legacy: Value = r.get(&r.url("/topapi/unknown")).await.json().await.unwrap();
    assert_ne!(legacy["request_id"].as_str().unwrap(), a);
}
