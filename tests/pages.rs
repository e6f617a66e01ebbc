//! End to end: what a person sees — userinfo, sign-in and sign-out pages, the 403 page, DingTalk failures, the demo's routes.

mod common;

use common::*;
use dinggate::demo::{demo_users, DEMO_ROUTES};
use dinggate::mock::Fault;
use reqwest::header::{HeaderMap, ACCEPT, ACCEPT_LANGUAGE, ORIGIN};
use reqwest::StatusCode;

const TOKEN_PATH: &str = "/v1.0/oauth2/userAccessToken";

fn decoded(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

#[tokio::test]
async fn userinfo_returns_everything_the_identity_headers_carry() {
    let stack = stack("").await;
    let client = logged_in(&stack, "chenxiaoming").await;
    let info: serde_json::Value = get_json(&client, &format!("{}/_dinggate/userinfo", stack.url()))
        .await
        .json()
        .await
        .unwrap();
    let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
    for (field, header_name) in [
        ("union_id", "x-dingtalk-unionid"),
        ("name", "x-dingtalk-name"),
        ("corp_id", "x-dingtalk-corpid"),
        ("user_id", "x-dingtalk-userid"),
        ("title", "x-dingtalk-title"),
        ("email", "x-auth-request-email"),
    ] {
        let sent = header(&echoed, header_name).map(decoded);
        assert_eq!(
            info[field].as_str().map(str::to_owned),
            sent,
            "{field}: {info}"
        );
    }
    assert_eq!(info["user_id"], "chenxiaoming");
    assert_eq!(info["title"], "财务系统工程师");
    assert_eq!(info["departments"], serde_json::json!([101, 300]));
    assert_eq!(
        header(&echoed, "x-dingtalk-departments"),
        Some("101,300"),
        "{echoed}"
    );
    let text = info.to_string().to_ascii_lowercase();
    assert!(!text.contains("token"), "never a DingTalk token: {info}");
    stack.stop().await;
}

#[tokio::test]
async fn the_signed_out_page_follows_accept_language_and_says_what_happened() {
    let stack = stack("ui:\n  app_name: 报销系统\n").await;
    for (lang, everywhere, first, second, needle) in [
        (
            "zh-CN,zh;q=0.9,en;q=0.8",
            "0",
            "您已退出登录",
            "You are signed out",
            "在此浏览器中退出",
        ),
        (
            "en-US,en;q=0.9",
            "0",
            "You are signed out",
            "您已退出登录",
            "in this browser",
        ),
        (
            "zh-CN",
            "1",
            "您已退出登录",
            "You are signed out",
            "所有登录过的浏览器和设备",
        ),
        (
            "en",
            "1",
            "You are signed out",
            "您已退出登录",
            "in every browser",
        ),
    ] {
        let client = logged_in(&stack, "zhangsan").await;
        let r = client
            .post(format!("{}/_dinggate/sign_out", stack.url()))
            .header(ORIGIN, stack.url())
            .header(ACCEPT, HTML)
            .header(ACCEPT_LANGUAGE, lang)
            .form(&[("everywhere", everywhere)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page = r.text().await.unwrap();
        let (a, b) = (page.find(first).unwrap(), page.find(second).unwrap());
        assert!(a < b, "{lang}: {first} before {second}: {page}");
        assert!(page.contains(needle), "{lang}: {needle} in {page}");
        assert!(
            page.contains("DingTalk itself") && page.contains("钉钉本身仍保持登录"),
            "{page}"
        );
        assert!(page.contains(" · 报销系统</title>"), "{page}");
        assert!(page.contains("<footer>报销系统 · 200 · "), "{page}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_sign_in_page_offers_continue_and_switch_account_when_signed_in() {
    let stack = stack("").await;
    let url = |p: &str| format!("{}{p}", stack.url());

    // Not signed in: the login, and the app name once in the title.
    let fresh = browser();
    let r = get_html(&fresh, &url("/_dinggate/sign_in?rd=%2Fwiki")).await;
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"id="dg-login""#), "{page}");
    assert!(page.contains("<title>Sign in · dinggate</title>"), "{page}");

    let client = logged_in(&stack, "lisi").await;
    let r = client
        .get(url("/_dinggate/sign_in?rd=%2Fwiki"))
        .header(ACCEPT, HTML)
        .header(ACCEPT_LANGUAGE, "zh-CN")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty(), "no login is started");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    let page = r.text().await.unwrap();
    assert!(page.contains("您已以“李四”的身份登录"), "{page}");
    assert!(!page.contains(r#"id="dg-login""#), "{page}");
    assert!(page.contains(r#"id="dg-continue" href="/wiki""#), "{page}");
    let then = "/_dinggate/sign_in?rd=%2Fwiki";
    assert!(
        page.contains(&format!(
            r#"<form method="post" action="/_dinggate/sign_out"><input type="hidden" name="rd" value="{then}">"#
        )),
        "{page}"
    );

    // "Switch account" posts that form: signed out, back on the sign-in page, which now logs in.
    let r = client
        .post(url("/_dinggate/sign_out"))
        .header(ORIGIN, stack.url())
        .form(&[("rd", then)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), then);
    let page = get_html(&client, &url(then)).await.text().await.unwrap();
    assert!(page.contains(r#"id="dg-login""#), "{page}");
    let r = get_html(&client, &url("/wiki")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "signed out");
    stack.stop().await;
}

#[tokio::test]
async fn the_403_page_speaks_plain_words_and_the_app_name() {
    let stack = stack(&format!("{DEMO_ROUTES}ui:\n  app_name: Wiki\n")).await;
    let wangwu = logged_in(&stack, "wangwu").await;
    let r = wangwu
        .get(format!("{}/finance/report", stack.url()))
        .header(ACCEPT, HTML)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("王五"), "{page}");
    assert!(
        page.contains(
            "This page is only open to people in the department “财务部” or a department below it."
        ),
        "{page}"
    );
    assert!(
        page.contains("此页面仅对以下人员开放：部门“财务部”及其下级部门的成员。"),
        "{page}"
    );
    for syntax in ["allow.", "departments [", "Reason (route"] {
        assert!(!page.contains(syntax), "{syntax} in {page}");
    }
    assert!(
        page.contains("<title>Access denied · Wiki</title>"),
        "{page}"
    );
    assert!(page.contains("<footer>Wiki · 403 · request id"), "{page}");

    let r = get_html(&wangwu, &format!("{}/admin/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("organization administrators"), "{page}");
    // The name is looked up once, then cached.
    let r = get_html(&wangwu, &format!("{}/finance/", stack.url())).await;
    assert!(r.text().await.unwrap().contains("“财务部”"));
    assert_eq!(stack.mock.call_count("/topapi/v2/department/get"), 1);

    // Everyone else's pages: the name in the title and footer too.
    let page = get_html(&wangwu, &format!("{}/_dinggate/nope", stack.url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>Not found · Wiki</title>"), "{page}");
    assert!(page.contains("<footer>Wiki · 404 · "), "{page}");
    stack.stop().await;

    // When DingTalk cannot name the department, the page names it by number: still no syntax.
    let failing = common::stack(DEMO_ROUTES).await;
    let wangwu = logged_in(&failing, "wangwu").await;
    failing
        .mock
        .inject_fault("/topapi/v2/department/get", Fault::PermissionDenied, 1);
    let r = get_html(&wangwu, &format!("{}/finance/", failing.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("people in the department number 300 or a department below it"),
        "{page}"
    );
    assert!(
        page.contains("部门（编号 300）及其下级部门的成员"),
        "{page}"
    );
    failing.stop().await;
}

#[tokio::test]
async fn dingtalk_failures_say_which_kind() {
    // Nothing listens on port 1: the code exchange cannot connect.
    let down = stack("dingtalk:\n  api_url: \"http://127.0.0.1:1\"\n").await;
    let r = login(&down, &browser(), "/", "zhangsan").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let page = r.text().await.unwrap();
    assert!(page.contains("DingTalk could not be reached"), "{page}");
    assert!(page.contains("could not connect to DingTalk"), "{page}");
    assert!(!page.contains("DingTalk answered"), "{page}");
    down.stop().await;

    let stack = stack("dingtalk:\n  timeout: 300ms\n").await;
    stack.mock.inject_fault(TOKEN_PATH, Fault::Hang, 1);
    let r = login(&stack, &browser(), "/", "zhangsan").await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let page = r.text().await.unwrap();
    assert!(page.contains("did not answer in time"), "{page}");

    stack.mock.inject_fault(TOKEN_PATH, Fault::ServerError, 1);
    let r = login(&stack, &browser(), "/", "zhangsan").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let page = r.text().await.unwrap();
    assert!(page.contains("DingTalk answered, but refused"), "{page}");
    assert!(!page.contains("could not connect"), "{page}");

    // Throttled beyond the retries (the first try and two retries): busy, come back shortly.
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::QpsLimit, 3);
    let r = login(&stack, &browser(), "/", "zhangsan").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    let page = r.text().await.unwrap();
    assert!(page.contains("DingTalk is busy"), "{page}");
    assert!(page.contains("Wait a few seconds"), "{page}");
    assert!(!page.contains("DingTalk answered, but refused"), "{page}");
    stack.stop().await;
}

#[tokio::test]
async fn a_revalidation_dingtalk_throttles_asks_to_wait_a_few_seconds() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    stack.state.clock.advance(16 * 60);
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::QpsLimit, 3);
    let r = get_json(&client, &format!("{}/echo", stack.url())).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "dingtalk_busy");
    // A few seconds later DingTalk answers again and the same session goes on.
    let r = get_json(&client, &format!("{}/echo", stack.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn the_demo_routes_show_policy_to_each_user() {
    let stack = stack(DEMO_ROUTES).await;
    let org = &stack.mock.settings().org;
    let table = demo_users(org, stack.state.config.routes.routes());
    let line = |userid: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(userid))
            .unwrap_or_else(|| panic!("{userid} in {table}"))
            .to_owned()
    };
    assert!(
        table.lines().next().unwrap().contains("may open"),
        "{table}"
    );
    assert!(line("zhangsan").ends_with(" /, /admin"), "{table}");
    assert!(line("zhangsan").contains("平台组"), "{table}");
    assert!(line("qianduoduo").ends_with(" /, /finance"), "{table}");
    assert!(line("qianduoduo").contains("财务部"), "{table}");
    assert!(line("wangwu").ends_with(" /"), "{table}");
    assert!(
        line("sunqi").ends_with("nothing (inactive: cannot log in)"),
        "{table}"
    );
    assert!(
        line("alice.partner").contains("nothing (outsider"),
        "{table}"
    );
    assert!(table.lines().all(|l| !l.ends_with(' ')), "{table}");

    // What the table says is what the gateway does.
    for (userid, path, status) in [
        ("zhangsan", "/admin/", StatusCode::OK),
        ("zhangsan", "/finance/", StatusCode::FORBIDDEN),
        ("qianduoduo", "/finance/", StatusCode::OK),
        ("qianduoduo", "/admin/", StatusCode::FORBIDDEN),
    ] {
        let client = logged_in(&stack, userid).await;
        let r = get_html(&client, &format!("{}{path}", stack.url())).await;
        assert_eq!(r.status(), status, "{userid} {path}");
        if status == StatusCode::OK {
            assert!(
                r.text().await.unwrap().contains("/finance/"),
                "demo app links the rules"
            );
        }
    }
    stack.stop().await;
}
