//! End to end: the login-free (免登) flow inside the DingTalk client, at the HTTP level.
//! (tests/browser.rs runs the same flow in a real browser with the JSAPI stand-in.)

mod common;

use common::*;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;

const DINGTALK_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AliApp(DingTalk/7.6.0) Language/zh-CN";

/// A fresh login state bound to `client`'s cookie jar, taken from the scan-login start.
async fn fresh_state(stack: &dinggate::demo::Stack, client: &reqwest::Client, rd: &str) -> String {
    param(&start_login(stack, client, rd).await, "state").unwrap()
}

async fn post(
    stack: &dinggate::demo::Stack,
    client: &reqwest::Client,
    code: &str,
    state: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/_dinggate/inapp/callback", stack.url()))
        .header("origin", stack.url())
        .json(&serde_json::json!({ "code": code, "state": state }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_in_client_code_logs_the_member_in() {
    let stack = stack("").await;
    let client = browser();
    let state = fresh_state(&stack, &client, "/inapp-target?x=1").await;
    let code = stack.mock.issue_jsapi_code("lisi").unwrap();
    let r = post(&stack, &client, &code, &state).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(cookie_value(&r, "_dinggate").is_some());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["redirect"], "/inapp-target?x=1");
    assert_eq!(stack.mock.call_count("/topapi/v2/user/getuserinfo"), 1);
    assert_eq!(
        stack.mock.call_count("/topapi/user/getbyunionid"),
        0,
        "the userid is known: no unionId look-up"
    );

    let echoed = echo(
        &client,
        &format!("{}/echo", stack.url()),
        Default::default(),
    )
    .await;
    assert_eq!(header(&echoed, "x-dingtalk-userid"), Some("lisi"));
    let union_id = stack
        .mock
        .settings()
        .org
        .user("lisi")
        .unwrap()
        .union_id
        .clone();
    assert_eq!(header(&echoed, "x-forwarded-user"), Some(union_id.as_str()));
    stack.stop().await;
}

#[tokio::test]
async fn a_bad_code_gets_one_retry_with_a_fresh_state() {
    let stack = stack("").await;
    let client = browser();
    let state = fresh_state(&stack, &client, "/x").await;
    let r = post(&stack, &client, "not-a-real-code", &state).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["retry"], true);
    let retry_state = body["state"].as_str().unwrap().to_owned();
    assert_ne!(retry_state, state);

    // The old state is spent; the new one works with a good code and keeps the return URL.
    let code = stack.mock.issue_jsapi_code("zhangsan").unwrap();
    assert_eq!(
        post(&stack, &client, &code, &state).await.status(),
        StatusCode::FORBIDDEN
    );
    let code = stack.mock.issue_jsapi_code("zhangsan").unwrap();
    let r = post(&stack, &client, &code, &retry_state).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["redirect"], "/x");
    stack.stop().await;
}

#[tokio::test]
async fn a_scan_login_code_is_not_an_in_client_code() {
    let stack = stack("").await;
    let client = browser();
    let authorize = start_login(&stack, &client, "/").await;
    let callback = approve(&client, &authorize, "lisi").await;
    let oauth_code = param(&callback, "code").unwrap();
    let state = fresh_state(&stack, &client, "/").await;
    let r = post(&stack, &client, &oauth_code, &state).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "40078 → retry, never a session"
    );
    assert!(cookie_value(&r, "_dinggate").is_none());
    stack.stop().await;
}

#[tokio::test]
async fn in_client_posts_without_a_valid_state_are_refused_before_dingtalk_is_called() {
    let stack = stack("").await;
    let client = browser();
    let code = stack.mock.issue_jsapi_code("lisi").unwrap();
    for state in ["", "garbage", &"A".repeat(43)] {
        let r = post(&stack, &client, &code, state).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "state {state:?}");
    }
    let r = client
        .post(format!("{}/_dinggate/inapp/callback", stack.url()))
        .header("origin", stack.url())
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stack.mock.call_count("/topapi/v2/user/getuserinfo"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_departed_member_cannot_log_in_from_the_client() {
    let stack = stack("").await;
    let client = browser();
    let state = fresh_state(&stack, &client, "/").await;
    let code = stack.mock.issue_jsapi_code("wangwu").unwrap();
    stack.mock.remove_user("wangwu");
    let r = post(&stack, &client, &code, &state).await;
    assert!(
        r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::CONFLICT,
        "refused: {}",
        r.status()
    );
    assert!(cookie_value(&r, "_dinggate").is_none());
    stack.stop().await;
}

#[tokio::test]
async fn a_dingtalk_browser_without_a_session_gets_the_in_client_page() {
    let stack = stack("").await;
    let client = browser();
    let r = client
        .get(format!("{}/inapp-target", stack.url()))
        .header(ACCEPT, HTML)
        .header("user-agent", DINGTALK_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/_dinggate/inapp?rd=%2Finapp-target");
    let r = client
        .get(format!("{}{}", stack.url(), location(&r)))
        .header(ACCEPT, HTML)
        .header("user-agent", DINGTALK_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let state_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("_dinggate_csrf_"));
    assert!(
        state_cookie.is_some(),
        "the page's state is bound to a cookie"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("requestAuthCode"), "{page}");
    assert!(page.contains("/_dinggate/inapp/callback"));
    assert!(page.contains(&stack.mock.settings().org.corp_id().to_owned()));
    assert!(
        page.contains("g.alicdn.com/dingding/dingtalk-jsapi"),
        "default JSAPI URL"
    );

    // Reloading the page many times never piles up more state cookies than the flow limit.
    let mut live = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = client
            .get(format!("{}/_dinggate/inapp?rd=%2F", stack.url()))
            .header(ACCEPT, HTML)
            .header("user-agent", DINGTALK_UA)
            .send()
            .await
            .unwrap();
        for c in set_cookies(&r) {
            let name = c.split('=').next().unwrap().to_owned();
            if c.contains("Max-Age=0") {
                live.remove(&name);
            } else if name.starts_with("_dinggate_csrf_") {
                live.insert(name);
            }
        }
    }
    assert!(live.len() <= 4, "{} state cookies alive", live.len());

    // Outside DingTalk the same request is the ordinary redirect to the scan login.
    let r = get_html(&client, &format!("{}/inapp-target", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(location(&r).starts_with("/_dinggate/start?"));
    stack.stop().await;
}
