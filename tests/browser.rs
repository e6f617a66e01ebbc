//! Real-browser tests: headless Chromium logs in through the gateway and the mock DingTalk by
//! clicking, completes the in-client (免登) flow with the JSAPI stand-in, and uses the sign-in
//! page. Needs Chromium and chromedriver; run with `cargo test --features browser-tests --test browser`.
#![cfg(feature = "browser-tests")]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use dinggate::demo::Stack;
use serde_json::Value;
use webdriver::{Browser, Options};

/// How long a flow may take from one page to the next (generous: CI machines are slow).
const STEP: Duration = Duration::from_secs(20);

/// What the Android DingTalk client sends.
const DINGTALK_UA: &str = "Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36 AliApp(DingTalk/7.6.0) DingTalk(7.6.0)";

fn mock_login_page(stack: &Stack) -> String {
    format!("http://{}/oauth2/auth?", stack.mock_addr)
}

/// A DingTalk client too old for `requestAuthCodeV2` (needs 7.0.45 on Android).
const OLD_DINGTALK_UA: &str = "Mozilla/5.0 (Linux; Android 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80 Mobile Safari/537.36 AliApp(DingTalk/6.5.10) DingTalk(6.5.10)";

/// Extra YAML pointing the gateway's JSAPI script at the mock's stand-in for `userid` (the
/// current build, with `dd.requestAuthCode`). `{mock}` is replaced by the mock's host:port when
/// the stack starts.
fn jsapi_yaml(userid: &str) -> String {
    format!("dingtalk:\n  jsapi_url: \"http://{{mock}}/dingtalk.open.js?userid={userid}\"\n")
}

/// Like [`jsapi_yaml`], with the stand-in of the CDN build `version` (3.0.x: no `dd.requestAuthCode`).
fn jsapi_yaml_version(userid: &str, version: &str) -> String {
    format!(
        "dingtalk:\n  jsapi_url: \"http://{{mock}}/dingding/dingtalk-jsapi/{version}/dingtalk.open.js?userid={userid}\"\n"
    )
}

/// The API and outcome of each code request the JSAPI stand-in made.
fn jsapi_requests(stack: &Stack) -> Vec<(String, String)> {
    stack
        .mock
        .jsapi_requests()
        .into_iter()
        .map(|r| (r.api, r.outcome))
        .collect()
}

fn pair(api: &str, outcome: &str) -> (String, String) {
    (api.to_owned(), outcome.to_owned())
}

/// Opens `target` with `user_agent` and waits for the upstream page as 李四.
async fn in_client_login_as_lisi(stack: &Stack, user_agent: &str) {
    let browser = Browser::start(Options {
        user_agent: Some(user_agent.to_owned()),
        ..Options::default()
    })
    .await;
    let target = format!("{}/inapp-target", stack.url());
    browser.goto(&target).await;
    browser
        .wait_for("the upstream page as 李四", STEP, |url, source| {
            url == target && source.contains("你好，李四")
        })
        .await;
    assert_session_cookies(&browser).await;
    assert_eq!(stack.mock.call_count("/oauth2/auth"), 0, "no QR login");
    browser.quit().await;
}

fn cookie<'a>(cookies: &'a [Value], name: &str) -> Option<&'a Value> {
    cookies.iter().find(|c| c["name"] == name)
}

/// The session cookie is HttpOnly, SameSite=Lax, host-wide, not Secure on plain http, and no
/// login-state cookie is left behind.
async fn assert_session_cookies(browser: &Browser) {
    let cookies = browser.cookies().await;
    let session = cookie(&cookies, "_dinggate")
        .unwrap_or_else(|| panic!("no _dinggate cookie in {cookies:#?}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");
    assert_eq!(session["path"], "/", "{session}");
    assert_eq!(session["secure"], false, "plain-http gateway: {session}");
    let leftovers: Vec<&Value> = cookies
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("_dinggate_csrf_"))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "login state cookies left: {leftovers:#?}"
    );
}

/// On the mock login page, clicks the approve button of 张三.
async fn approve_as_zhangsan(browser: &Browser) {
    let source = browser.source().await;
    assert!(source.contains("张三"), "the mock lists 张三");
    // The mock's approve link is this same authorize URL plus `mock_user=<userid>` at the end.
    let button = browser
        .find(r#"li a.btn[href$="mock_user=zhangsan"]"#)
        .await;
    assert_eq!(browser.text(&button).await, "以此身份登录");
    browser.click(&button).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_login_by_clicking_lands_on_the_upstream_page() {
    let stack = common::stack("").await;
    let browser = Browser::start(Options::default()).await;
    let target = format!("{}/some/page?x=1", stack.url());

    browser.goto(&target).await;
    let login = mock_login_page(&stack);
    browser
        .wait_for("the mock DingTalk login page", STEP, |url, _| {
            url.starts_with(&login)
        })
        .await;
    approve_as_zhangsan(&browser).await;
    browser
        .wait_for("the upstream page as 张三", STEP, |url, source| {
            url == target && source.contains("你好，张三")
        })
        .await;
    assert_session_cookies(&browser).await;
    browser.screenshot("demo-upstream-page").await;

    // Gateway error pages share the look and carry a request id.
    browser
        .goto(&format!("{}/_dinggate/no-such-endpoint", stack.url()))
        .await;
    let source = browser.source().await;
    assert!(
        source.contains("Not found") && source.contains("request id"),
        "{source}"
    );
    browser.screenshot("gateway-error-page").await;

    // The cookie works for the next navigation without any login hop.
    let dingtalk_calls = stack.mock.calls().len();
    let other = format!("{}/another", stack.url());
    browser.goto(&other).await;
    assert_eq!(browser.url().await, other);
    assert!(browser.source().await.contains("你好，张三"));
    assert_eq!(stack.mock.calls().len(), dingtalk_calls, "no second login");

    // Signing out: a GET only shows the confirmation page; its button POSTs the form from the
    // gateway's own origin (the browser sends Origin), and the old session is over.
    browser
        .goto(&format!(
            "{}/_dinggate/sign_out?rd=%2Fafter-sign-out",
            stack.url()
        ))
        .await;
    browser
        .find(r#"button.btn[name="everywhere"][value="1"]"#)
        .await;
    browser.assert_no_csp_violation().await;
    browser.screenshot("sign-out-confirmation").await;
    browser.goto(&other).await;
    assert!(
        browser.source().await.contains("你好，张三"),
        "showing the page signed nobody out"
    );
    browser
        .goto(&format!(
            "{}/_dinggate/sign_out?rd=%2Fafter-sign-out",
            stack.url()
        ))
        .await;
    let button = browser
        .find(r#"button.btn[name="everywhere"][value="0"]"#)
        .await;
    browser.click(&button).await;
    browser
        .wait_for(
            "the login page after signing out and returning to rd",
            STEP,
            |url, _| url.starts_with(&login),
        )
        .await;

    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_dingtalk_the_login_needs_no_click() {
    let stack = common::stack(&jsapi_yaml("lisi")).await;
    let browser = Browser::start(Options {
        user_agent: Some(DINGTALK_UA.to_owned()),
        ..Options::default()
    })
    .await;
    let target = format!("{}/inapp-target", stack.url());

    browser.goto(&target).await;
    browser
        .wait_for("the upstream page as 李四", STEP, |url, source| {
            url == target && source.contains("你好，李四")
        })
        .await;
    assert_session_cookies(&browser).await;
    assert_eq!(
        stack.mock.call_count("/topapi/v2/user/getuserinfo"),
        1,
        "one login-free code was exchanged"
    );
    assert_eq!(
        stack.mock.call_count("/oauth2/auth"),
        0,
        "the QR login was never shown"
    );
    assert_eq!(
        jsapi_requests(&stack),
        [pair("v2", "code")],
        "a current script on a current client: dd.requestAuthCode"
    );
    browser.screenshot("inapp-upstream-page").await;

    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_0_x_script_logs_in_with_the_older_api() {
    let stack = common::stack(&jsapi_yaml_version("lisi", "3.0.25")).await;
    in_client_login_as_lisi(&stack, DINGTALK_UA).await;
    assert_eq!(jsapi_requests(&stack), [pair("v1", "code")]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_old_for_v2_logs_in_with_the_older_api() {
    let stack = common::stack(&jsapi_yaml("lisi")).await;
    in_client_login_as_lisi(&stack, OLD_DINGTALK_UA).await;
    assert_eq!(
        jsapi_requests(&stack),
        [pair("v1", "code")],
        "the client's version rules V2 out before it is tried"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_outside_the_registered_login_free_address_says_so_and_falls_back_to_the_qr() {
    let settings = dinggate::mock::MockSettings {
        homepage_domains: vec!["app.example.com".to_owned()],
        ..Default::default()
    };
    let stack = Stack::start_with(0, &jsapi_yaml("lisi"), settings)
        .await
        .unwrap();
    let browser = Browser::start(Options {
        user_agent: Some(DINGTALK_UA.to_owned()),
        ..Options::default()
    })
    .await;
    let target = format!("{}/inapp-target", stack.url());
    browser.goto(&target).await;
    browser
        .wait_for("the login-free address message", STEP, |_, source| {
            source.contains("端内免登地址")
                && !source.contains(r#"id="dg-fallback-domain" class="muted" hidden"#)
        })
        .await;
    browser.screenshot("inapp-page-unregistered-domain").await;
    let login = mock_login_page(&stack);
    browser
        .wait_for("the fallback to the QR login", STEP, |url, _| {
            url.starts_with(&login)
        })
        .await;
    assert_eq!(
        jsapi_requests(&stack),
        [pair("v2", "3"), pair("v1", "3")],
        "both APIs asked, both refused with errorCode 3"
    );
    assert_eq!(stack.mock.call_count("/topapi/v2/user/getuserinfo"), 0);
    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_dingtalk_without_a_code_falls_back_to_the_qr_login() {
    // 孙七 never activated their account: the JSAPI stand-in gets no code for them.
    let stack = common::stack(&jsapi_yaml("sunqi")).await;
    let browser = Browser::start(Options {
        user_agent: Some(DINGTALK_UA.to_owned()),
        ..Options::default()
    })
    .await;
    let target = format!("{}/inapp-target?y=2", stack.url());

    browser.goto(&target).await;
    let login = mock_login_page(&stack);
    browser
        .wait_for("the fallback to the QR login", STEP, |url, _| {
            url.starts_with(&login)
        })
        .await;
    assert_eq!(stack.mock.call_count("/topapi/v2/user/getuserinfo"), 0);
    approve_as_zhangsan(&browser).await;
    browser
        .wait_for("the upstream page as 张三", STEP, |url, source| {
            url == target && source.contains("你好，张三")
        })
        .await;
    assert_session_cookies(&browser).await;

    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_qr_code_signs_in_end_to_end() {
    // The mock serves a DTFrameLogin stand-in: its frame is the mock's authorize page, and an
    // approval there reaches the sign-in page as DTFrameLogin's result, like a scan.
    let stack = common::stack(
        "login_page: true\ndingtalk:\n  qr_script_url: \"http://{mock}/dingding/h5-dingtalk-login/0.21.0/ddlogin.js\"\n",
    )
    .await;
    let browser = Browser::start(Options::default()).await;
    let target = format!("{}/qr/target?z=1", stack.url());
    browser.goto(&target).await;
    let sign_in = format!("{}/_dinggate/sign_in?rd=", stack.url());
    browser
        .wait_for("the sign-in page with the QR frame", STEP, |url, source| {
            url.starts_with(&sign_in) && source.contains("<iframe")
        })
        .await;
    let frame = browser.find("#dg-qr-frame iframe").await;
    browser.enter_frame(&frame).await;
    let approve = browser
        .find(r#"li a.btn[href$="mock_user=zhangsan"]"#)
        .await;
    browser.click(&approve).await;
    browser.leave_frames().await;
    browser
        .wait_for("the upstream page as 张三", STEP, |url, source| {
            url == target && source.contains("你好，张三")
        })
        .await;
    assert_session_cookies(&browser).await;
    browser.assert_no_csp_violation().await;
    assert_eq!(
        stack.mock.call_count("/v1.0/oauth2/userAccessToken"),
        1,
        "the frame's code went through the normal callback"
    );
    browser.quit().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_page_leads_to_dingtalk() {
    let stack = common::stack("login_page: true\nui:\n  app_name: \"示例应用 Demo\"\n").await;
    let browser = Browser::start(Options {
        accept_language: Some("zh-CN,zh".to_owned()),
        ..Options::default()
    })
    .await;
    let target = format!("{}/some/page?x=1", stack.url());

    browser.goto(&target).await;
    let sign_in = format!("{}/_dinggate/sign_in?rd=", stack.url());
    browser
        .wait_for("the sign-in page", STEP, |url, _| url.starts_with(&sign_in))
        .await;
    assert_eq!(
        common::param(&browser.url().await, "rd").as_deref(),
        Some("/some/page?x=1")
    );
    let source = browser.source().await;
    assert!(source.contains("示例应用 Demo"), "app name shown");
    let button = browser.find("a#dg-login").await;
    assert!(browser.displayed(&button).await);
    assert_eq!(browser.text(&button).await, "使用钉钉登录");
    browser.screenshot("sign-in-page").await;

    browser.click(&button).await;
    let login = mock_login_page(&stack);
    browser
        .wait_for("the mock DingTalk login page", STEP, |url, _| {
            url.starts_with(&login)
        })
        .await;
    approve_as_zhangsan(&browser).await;
    browser
        .wait_for("the upstream page as 张三", STEP, |url, source| {
            url == target && source.contains("你好，张三")
        })
        .await;
    assert_session_cookies(&browser).await;

    // Signed in, the sign-in page offers "continue" and "switch account"; switching posts the
    // sign-out form from the gateway's origin and comes back to a sign-in page that logs in.
    let again = format!("{}/_dinggate/sign_in?rd=%2Fsome%2Fpage", stack.url());
    browser.goto(&again).await;
    let source = browser.source().await;
    assert!(source.contains("您已以“张三”的身份登录"), "{source}");
    let cont = browser.find("a#dg-continue").await;
    assert_eq!(browser.text(&cont).await, "继续");
    let switch = browser.find("button#dg-switch").await;
    browser.screenshot("sign-in-page-signed-in").await;
    browser.assert_no_csp_violation().await;
    browser.click(&switch).await;
    browser
        .wait_for("the sign-in page, signed out", STEP, |url, source| {
            url == again && source.contains("dg-login")
        })
        .await;
    browser.goto(&target).await;
    browser
        .wait_for("the login again", STEP, |url, _| url.starts_with(&sign_in))
        .await;

    browser.quit().await;
    stack.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The page scripts on their own: src/pages.rs pages served by a small test server with a
// scripted callback, so every branch of the in-client protocol and of the QR hand-off runs in
// the browser independently of the gateway's wiring.
// ---------------------------------------------------------------------------------------------

mod page_server {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use dinggate::body::GatewayBody;
    use dinggate::pages::{self, Branding, InAppPage, Lang, QrLogin, SignInPage};
    use dinggate::server::{serve_http, ServerLimits};
    use http::{header, HeaderValue, Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use serde_json::{json, Value};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    /// How long the in-app page waits for a code in these tests.
    pub const CODE_TIMEOUT_MS: u32 = 1500;

    struct Shared {
        addr: SocketAddr,
        /// Where the JSAPI stand-in lives (the mock DingTalk).
        mock: SocketAddr,
        corp_id: String,
        client_id: String,
        /// Every POST to `/callback/{scenario}`: `{"scenario", "body"}`.
        posts: Mutex<Vec<Value>>,
    }

    /// Serves `pages::in_app` and `pages::sign_in` with scripted collaborators.
    pub struct PageServer {
        shared: Arc<Shared>,
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    impl PageServer {
        pub async fn start(mock: SocketAddr, corp_id: &str, client_id: &str) -> PageServer {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let shared = Arc::new(Shared {
                addr: listener.local_addr().unwrap(),
                mock,
                corp_id: corp_id.to_owned(),
                client_id: client_id.to_owned(),
                posts: Mutex::new(Vec::new()),
            });
            let (shutdown, mut rx) = watch::channel(false);
            let handler_state = shared.clone();
            let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
                let shared = handler_state.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            };
            let task = tokio::spawn(serve_http(
                listener,
                ServerLimits::default(),
                handler,
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            ));
            PageServer {
                shared,
                shutdown,
                task,
            }
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.shared.addr)
        }

        /// The bodies posted to the callback in `scenario`, oldest first.
        pub fn posts(&self, scenario: &str) -> Vec<Value> {
            self.shared
                .posts
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p["scenario"] == scenario)
                .map(|p| p["body"].clone())
                .collect()
        }

        pub async fn stop(self) {
            let _ = self.shutdown.send(true);
            let _ = self.task.await;
        }
    }

    fn page(status: StatusCode, content_type: &'static str, body: String) -> Response<GatewayBody> {
        let mut resp = Response::new(GatewayBody::from(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }

    fn html(title: &str) -> Response<GatewayBody> {
        page(
            StatusCode::OK,
            "text/html; charset=utf-8",
            format!("<!doctype html><title>{title}</title><h1>{title}</h1>"),
        )
    }

    /// A `dd` whose `requestAuthCode` never answers.
    const HANGING_JSAPI: &str = "window.dd = { ready: function (f) { setTimeout(f, 0); }, \
        requestAuthCode: function () { return new Promise(function () {}); } };";

    /// A JSAPI built like the real CDN file (UMD): with an AMD `define` present it registers a
    /// module instead of setting `window.dd`.
    const UMD_JSAPI: &str = r#"(function (root, factory) {
  if (typeof define === "function" && define.amd) { define([], factory); } else { root.dd = factory(); }
})(this, function () {
  return {
    ready: function (f) { setTimeout(f, 0); },
    requestAuthCode: function () { return Promise.resolve({ code: "umd-code" }); }
  };
});"#;

    /// Stand-in for `ddlogin.js`: `DTFrameLogin` records its parameters on `<body data-login>`
    /// and renders a "scan" button that reports a scan whose redirect URL is `target(login)`.
    fn fake_ddlogin(target: &str) -> String {
        format!(
            r#"window.DTFrameLogin = function (frame, login, onSuccess, onError) {{
  document.body.setAttribute("data-login", JSON.stringify(login));
  var box = document.getElementById(frame.id);
  var b = document.createElement("button");
  b.id = "fake-scan";
  b.textContent = "QR";
  b.onclick = function () {{ onSuccess({{ redirectUrl: {target}, authCode: "abc", state: login.state }}); }};
  box.appendChild(b);
}};"#
        )
    }

    async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<GatewayBody> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["inapp", scenario] => {
                let jsapi = match *scenario {
                    "no-dd" => "/missing/dingtalk.open.js".to_owned(),
                    "hang" => "/hang/dingtalk.open.js".to_owned(),
                    "umd" => "/umd/dingtalk.open.js".to_owned(),
                    _ => format!("http://{}/dingtalk.open.js?userid=lisi", shared.mock),
                };
                let callback = format!("/callback/{scenario}");
                pages::in_app(&InAppPage {
                    branding: Branding {
                        app_name: "示例应用",
                        logo_url: None,
                    },
                    lang: Lang::Zh,
                    jsapi_url: &jsapi,
                    corp_id: &shared.corp_id,
                    client_id: &shared.client_id,
                    state: "s1",
                    callback_url: &callback,
                    fallback_url: "/fallback",
                    timeout_ms: CODE_TIMEOUT_MS,
                    request_id: "0123456789abcdef",
                })
            }
            ["hang", "dingtalk.open.js"] => page(
                StatusCode::OK,
                "application/javascript",
                HANGING_JSAPI.to_owned(),
            ),
            ["umd", "dingtalk.open.js"] => page(
                StatusCode::OK,
                "application/javascript",
                UMD_JSAPI.to_owned(),
            ),
            ["callback", scenario] => {
                let scenario = scenario.to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = {
                    let mut posts = shared.posts.lock().unwrap();
                    posts.push(json!({ "scenario": scenario, "body": body }));
                    posts.iter().filter(|p| p["scenario"] == scenario).count()
                };
                let answer = match (scenario.as_str(), n) {
                    ("ok" | "umd", _) | ("retry", 2) => json!({ "redirect": "/done" }),
                    ("retry", 1) => json!({ "retry": true, "state": "s2" }),
                    ("retry-twice", n) => json!({ "retry": true, "state": format!("s{}", n + 1) }),
                    ("evil", _) => json!({ "redirect": "javascript:alert(1)" }),
                    _ => {
                        return page(
                            StatusCode::BAD_GATEWAY,
                            "application/json",
                            json!({ "error": "dingtalk_error" }).to_string(),
                        )
                    }
                };
                page(StatusCode::OK, "application/json", answer.to_string())
            }
            ["signin", scenario] => {
                let script = format!("/qr/{scenario}/ddlogin.js");
                let redirect_uri = format!("http://{}/qr-callback", shared.addr);
                pages::sign_in(&SignInPage {
                    branding: Branding {
                        app_name: "示例应用",
                        logo_url: None,
                    },
                    lang: Lang::Zh,
                    start_url: "/start-button",
                    qr: Some(QrLogin {
                        script_url: &script,
                        client_id: &shared.client_id,
                        redirect_uri: &redirect_uri,
                        scope: "openid corpid",
                        state: "qr-state",
                        corp_id: Some(&shared.corp_id),
                        exclusive_corp_id: None,
                        login_origin: "https://login.dingtalk.com",
                    }),
                    signed_in: None,
                    request_id: "0123456789abcdef",
                })
            }
            ["qr", scenario, "ddlogin.js"] => {
                let target = match *scenario {
                    "good" => {
                        r#"decodeURIComponent(login.redirect_uri) + "?code=abc&authCode=abc&state=" + login.state"#
                    }
                    "other-origin" => r#""http://evil.example/qr-callback?code=abc""#,
                    "other-path" => r#"location.origin + "/elsewhere?code=abc""#,
                    _ => return page(StatusCode::NOT_FOUND, "text/plain", "missing".to_owned()),
                };
                page(
                    StatusCode::OK,
                    "application/javascript",
                    fake_ddlogin(target),
                )
            }
            ["forbidden"] => pages::forbidden(&pages::Forbidden {
                lang: Lang::Zh,
                app_name: "示例应用",
                user_name: "王五",
                reason_en: "This page is only open to people in the department “财务部” or a department below it.",
                reason_zh: "此页面仅对以下人员开放：部门“财务部”及其下级部门的成员。",
                sign_out_url: "/_dinggate/sign_out",
                request_id: "0123456789abcdef",
            }),
            ["done"] => html("done"),
            ["fallback"] => html("fallback"),
            ["qr-callback"] => html("qr callback"),
            ["start-button"] => html("start"),
            _ => page(StatusCode::NOT_FOUND, "text/plain", "not found".to_owned()),
        }
    }
}

use page_server::{PageServer, CODE_TIMEOUT_MS};

async fn page_server() -> (Stack, PageServer) {
    let stack = common::stack("").await;
    let settings = stack.mock.settings();
    let server =
        PageServer::start(stack.mock_addr, settings.org.corp_id(), &settings.client_id).await;
    (stack, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_page_follows_the_callback_protocol() {
    let (stack, server) = page_server().await;
    let browser = Browser::start(Options {
        user_agent: Some(DINGTALK_UA.to_owned()),
        ..Options::default()
    })
    .await;
    let done = server.url("/done");
    let fallback = server.url("/fallback");

    // A code from the JSAPI is posted with the state; `{"redirect"}` is followed.
    browser.goto(&server.url("/inapp/ok")).await;
    browser.wait_for("/done", STEP, |url, _| url == done).await;
    browser.assert_no_csp_violation().await;
    let posts = server.posts("ok");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["state"], "s1");
    assert!(posts[0]["code"].as_str().is_some_and(|c| !c.is_empty()));

    // `{"retry"}` once: a new code, posted with the new state.
    browser.goto(&server.url("/inapp/retry")).await;
    browser
        .wait_for("/done after one retry", STEP, |url, _| url == done)
        .await;
    let posts = server.posts("retry");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[1]["state"], "s2");
    assert_ne!(
        posts[0]["code"], posts[1]["code"],
        "the retry uses a new code"
    );

    // Only one retry: the second `{"retry"}` falls back.
    browser.goto(&server.url("/inapp/retry-twice")).await;
    browser
        .wait_for("the fallback after two retries", STEP, |url, _| {
            url == fallback
        })
        .await;
    assert_eq!(server.posts("retry-twice").len(), 2);

    // An error answer, or a redirect to a non-http URL, falls back.
    for scenario in ["error", "evil"] {
        browser
            .goto(&server.url(&format!("/inapp/{scenario}")))
            .await;
        browser
            .wait_for(scenario, STEP, |url, _| url == fallback)
            .await;
        assert_eq!(server.posts(scenario).len(), 1, "{scenario}");
    }

    // No JSAPI at all falls back without posting.
    browser.goto(&server.url("/inapp/no-dd")).await;
    browser
        .wait_for("the fallback without dd", STEP, |url, _| url == fallback)
        .await;
    assert!(server.posts("no-dd").is_empty());

    // A JSAPI that never answers: the spinner, then the fallback message after the timeout.
    let started = std::time::Instant::now();
    browser.goto(&server.url("/inapp/hang")).await;
    let working = browser.find("#dg-working").await;
    assert!(browser.displayed(&working).await);
    assert!(browser.text(&working).await.contains("正在登录"));
    browser.screenshot("inapp-page-waiting").await;
    browser
        .wait_for("the fallback message", STEP, |_, source| {
            source.contains(r#"<div id="dg-fallback">"#)
        })
        .await;
    browser.screenshot("inapp-page-fallback").await;
    assert!(started.elapsed() >= Duration::from_millis(CODE_TIMEOUT_MS.into()));
    browser
        .wait_for("the fallback after the timeout", STEP, |url, _| {
            url == fallback
        })
        .await;
    assert!(server.posts("hang").is_empty());

    // A container that injects an AMD `define` must not swallow the UMD JSAPI (dingtalk-api.md
    // §7.1). The injection stays for the rest of this session, so this runs last.
    browser
        .inject_on_new_document(
            "window.define = function () { window.amdModules = (window.amdModules || 0) + 1; }; \
             window.define.amd = {};",
        )
        .await;
    browser.goto(&server.url("/inapp/umd")).await;
    browser
        .wait_for("/done with an AMD loader present", STEP, |url, _| {
            url == done
        })
        .await;
    let posts = server.posts("umd");
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["code"], "umd-code");

    browser.quit().await;
    server.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_page_hands_a_scan_only_to_the_callback() {
    let (stack, server) = page_server().await;
    let browser = Browser::start(Options::default()).await;

    // The QR script loads: DTFrameLogin gets the encoded callback and the corp, and a scan
    // navigates to the callback.
    browser.goto(&server.url("/signin/good")).await;
    let scan = browser.find("#dg-qr-frame #fake-scan").await;
    let source = browser.source().await;
    let login_attr = source
        .split("data-login=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("DTFrameLogin was called");
    let login: Value =
        serde_json::from_str(&login_attr.replace("&quot;", "\"").replace("&amp;", "&")).unwrap();
    let callback = server.url("/qr-callback");
    // DTFrameLogin wants `redirect_uri` already encoded (encodeURIComponent).
    let encoded: String = url::form_urlencoded::byte_serialize(callback.as_bytes()).collect();
    assert_eq!(login["redirect_uri"], encoded);
    assert_eq!(login["scope"], "openid corpid");
    assert_eq!(login["corpId"], stack.mock.settings().org.corp_id());
    assert_eq!(login["state"], "qr-state");
    assert_eq!(login["response_type"], "code");
    assert_eq!(login["prompt"], "consent");
    browser.screenshot("sign-in-page-with-qr").await;
    browser.assert_no_csp_violation().await;
    browser.click(&scan).await;
    browser
        .wait_for("the callback", STEP, |url, _| {
            url.starts_with(&format!("{callback}?code=abc"))
        })
        .await;

    // A scan result pointing anywhere but the callback is ignored.
    for scenario in ["other-origin", "other-path"] {
        let page = server.url(&format!("/signin/{scenario}"));
        browser.goto(&page).await;
        let scan = browser.find("#fake-scan").await;
        browser.click(&scan).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(browser.url().await, page, "{scenario}");
    }

    // Without the QR script the QR area disappears and the button still works.
    browser.goto(&server.url("/signin/missing")).await;
    browser
        .wait_for("the QR area to hide", STEP, |_, source| {
            source.contains(r#"id="dg-qr" aria-live="polite" hidden"#)
        })
        .await;
    let button = browser.find("#dg-login").await;
    assert_eq!(browser.text(&button).await, "使用钉钉登录");
    browser.screenshot("sign-in-page-without-qr").await;
    browser.click(&button).await;
    let start = server.url("/start-button");
    browser
        .wait_for("the start URL", STEP, |url, _| url == start)
        .await;

    // The 403 page shares the look: who, which rule, and a way out.
    browser.goto(&server.url("/forbidden")).await;
    let sign_out = browser.find(r#"a.btn[href="/_dinggate/sign_out"]"#).await;
    assert!(browser.displayed(&sign_out).await);
    let source = browser.source().await;
    assert!(source.contains("王五") && source.contains("财务部"));
    browser.screenshot("forbidden-page").await;
    browser.assert_no_csp_violation().await;

    browser.quit().await;
    server.stop().await;
    stack.stop().await;
}
