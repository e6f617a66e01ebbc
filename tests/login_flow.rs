//! End to end: scan login through the real gateway, the mock DingTalk and the echo upstream.

mod common;

use common::*;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, COOKIE};
use reqwest::StatusCode;

const TOKEN_PATH: &str = "/v1.0/oauth2/userAccessToken";

#[tokio::test]
async fn full_login_reaches_the_upstream_with_identity_headers() {
    let stack = stack("").await;
    let client = browser();

    let r = get_html(
        &client,
        &format!("{}/hello/world?x=1&y=%E4%B8%AD", stack.url()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        location(&r),
        "/_dinggate/start?rd=%2Fhello%2Fworld%3Fx%3D1%26y%3D%25E4%25B8%25AD"
    );

    let r = get_html(&client, &absolute(&stack, &location(&r))).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let state_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("_dinggate_csrf_"))
        .expect("a state cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/_dinggate/",
        "Max-Age=600",
    ] {
        assert!(
            state_cookie.contains(attr),
            "{attr} missing in {state_cookie}"
        );
    }
    let authorize = location(&r);
    assert!(authorize.starts_with(&format!("http://{}/oauth2/auth?", stack.mock_addr)));
    let corp = stack.mock.settings().org.corp_id().to_owned();
    assert_eq!(param(&authorize, "response_type").as_deref(), Some("code"));
    assert_eq!(param(&authorize, "scope").as_deref(), Some("openid corpid"));
    assert_eq!(param(&authorize, "prompt").as_deref(), Some("consent"));
    assert_eq!(param(&authorize, "corpId"), Some(corp.clone()));
    assert_eq!(
        param(&authorize, "client_id"),
        Some(stack.mock.settings().client_id.clone())
    );
    assert_eq!(
        param(&authorize, "redirect_uri"),
        Some(format!("{}/_dinggate/callback", stack.url()))
    );
    assert!(param(&authorize, "state").is_some_and(|s| s.len() == 43));

    let callback = approve(&client, &authorize, ZHANGSAN).await;
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", r.text().await.unwrap());
    assert_eq!(location(&r), "/hello/world?x=1&y=%E4%B8%AD");
    let session_value = cookie_value(&r, "_dinggate").expect("session cookie value");
    let cookies = set_cookies(&r);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("_dinggate="))
        .expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=28800"] {
        assert!(session.contains(attr), "{attr} missing in {session}");
    }
    assert!(
        !session.contains("Secure"),
        "plain-http public_url: no Secure"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("_dinggate_csrf_") && c.contains("Max-Age=0")),
        "state cookie cleared: {cookies:?}"
    );

    let mut extra = HeaderMap::new();
    // An explicit Cookie header replaces the jar's, so it carries the session too.
    extra.insert(
        COOKIE,
        HeaderValue::from_str(&format!(
            "app_pref=dark; _dinggate={session_value}; theme=1"
        ))
        .unwrap(),
    );
    let echoed = echo(&client, &format!("{}/echo/x?q=1", stack.url()), extra).await;
    let user = stack.mock.settings().org.user(ZHANGSAN).unwrap().clone();
    assert_eq!(
        header(&echoed, "x-forwarded-user"),
        Some(user.union_id.as_str())
    );
    assert_eq!(
        header(&echoed, "x-dingtalk-unionid"),
        Some(user.union_id.as_str())
    );
    assert_eq!(header(&echoed, "x-dingtalk-corpid"), Some(corp.as_str()));
    let encoded_name = header(&echoed, "x-dingtalk-name").unwrap();
    assert!(encoded_name.is_ascii());
    assert_eq!(
        percent_encoding::percent_decode_str(encoded_name)
            .decode_utf8()
            .unwrap(),
        user.name
    );
    assert_eq!(
        header(&echoed, "x-forwarded-preferred-username"),
        Some(encoded_name)
    );
    assert_eq!(header(&echoed, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&echoed, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echoed["path"], "/echo/x");
    assert_eq!(echoed["query"], "q=1");
    // The app's own cookie survives; the gateway's never reaches the upstream.
    let cookie_values = echoed["headers"]["cookie"].to_string();
    assert!(
        cookie_values.contains("app_pref=dark; theme=1"),
        "{cookie_values}"
    );
    assert!(!cookie_values.contains("_dinggate"), "{cookie_values}");

    let info: serde_json::Value = client
        .get(format!("{}/_dinggate/userinfo", stack.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["union_id"], user.union_id.as_str());
    assert_eq!(info["name"], user.name.as_str());
    assert!(!info.to_string().contains("accessToken"));
    stack.stop().await;
}

const ZHANGSAN: &str = "zhangsan";
const LISI: &str = "lisi";
const WANGWU: &str = "wangwu";
const OUTSIDER: &str = "alice.partner";

#[tokio::test]
async fn bad_missing_and_replayed_state_are_refused_before_any_token_exchange() {
    let stack = stack("").await;
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    let callback = approve(&client, &authorize, ZHANGSAN).await;
    let code = param(&callback, "code").unwrap();
    let cb = format!("{}/_dinggate/callback", stack.url());

    // Missing state, garbage state, and a well-formed state this browser never started.
    let forged_state = "A".repeat(43);
    for url in [
        format!("{cb}?code={code}&authCode={code}"),
        format!("{cb}?code={code}&state=garbage"),
        format!("{cb}?code={code}&state={forged_state}"),
    ] {
        let r = get_html(&client, &url).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
    }
    // The right state from another browser (no state cookie there): login CSRF.
    let other = browser();
    let r = get_html(&other, &callback).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        stack.mock.call_count(TOKEN_PATH),
        0,
        "no exchange on a bad state"
    );

    // The real callback works once...
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 1);
    // ...and a replay is refused without another exchange.
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 1);
    stack.stop().await;
}

#[tokio::test]
async fn replay_with_a_captured_state_cookie_is_refused() {
    let stack = stack("").await;
    // A client without a cookie jar, so the test controls exactly which cookies are sent.
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = raw
        .get(format!("{}/_dinggate/start?rd=/", stack.url()))
        .send()
        .await
        .unwrap();
    let state_cookie = set_cookies(&r)[0].split(';').next().unwrap().to_owned();
    let callback = approve(&raw, &location(&r), WANGWU).await;
    let send = || {
        raw.get(&callback)
            .header(ACCEPT, HTML)
            .header(COOKIE, &state_cookie)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::FOUND);
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 1);
    stack.stop().await;
}

#[tokio::test]
async fn three_interleaved_logins_in_one_browser_all_succeed() {
    let stack = stack("").await;
    let client = browser();
    let mut callbacks = Vec::new();
    for path in ["/one", "/two?x=2", "/three"] {
        let authorize = begin_login(&stack, &client, path).await;
        callbacks.push((path, approve(&client, &authorize, LISI).await));
    }
    for i in [1, 0, 2] {
        let (path, cb) = &callbacks[i];
        let r = get_html(&client, cb).await;
        assert_eq!(r.status(), StatusCode::FOUND, "tab {path}");
        assert_eq!(&location(&r), path);
    }
    stack.stop().await;
}

#[tokio::test]
async fn too_many_parallel_logins_evict_the_oldest_not_the_newest() {
    let stack = stack("session:\n  max_login_flows: 2\n").await;
    let client = browser();
    let a = begin_login(&stack, &client, "/a").await;
    let b = begin_login(&stack, &client, "/b").await;
    let c = begin_login(&stack, &client, "/c").await;
    let cb_a = approve(&client, &a, LISI).await;
    let cb_b = approve(&client, &b, LISI).await;
    let cb_c = approve(&client, &c, LISI).await;
    assert_eq!(
        get_html(&client, &cb_a).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(location(&get_html(&client, &cb_c).await), "/c");
    assert_eq!(location(&get_html(&client, &cb_b).await), "/b");
    stack.stop().await;
}

#[tokio::test]
async fn a_reused_code_fails_and_the_user_is_told_to_sign_in_again() {
    let stack = stack("").await;
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    let first = approve(&client, &authorize, ZHANGSAN).await;
    assert_eq!(get_html(&client, &first).await.status(), StatusCode::FOUND);
    let used_code = param(&first, "code").unwrap();

    // A fresh, valid state carrying the already-used code.
    let authorize = start_login(&stack, &client, "/").await;
    let fresh = approve(&client, &authorize, ZHANGSAN).await;
    let state = param(&fresh, "state").unwrap();
    let replayed = format!(
        "{}/_dinggate/callback?code={used_code}&authCode={used_code}&state={state}",
        stack.url()
    );
    let r = get_html(&client, &replayed).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("Please sign in again"), "{page}");
    assert!(!page.contains(&used_code), "the code is never echoed");
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 2);
    stack.stop().await;
}

#[tokio::test]
async fn differing_auth_code_and_code_are_rejected() {
    let stack = stack("").await;
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    let cb = approve(&client, &authorize, ZHANGSAN).await;
    let tampered = cb.replacen("code=", "code=x", 1);
    let r = get_html(&client, &tampered).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 0);
    stack.stop().await;
}

#[tokio::test]
async fn dingtalk_error_parameter_fails_the_login() {
    let stack = stack("").await;
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    let state = param(&authorize, "state").unwrap();
    let r = get_html(
        &client,
        &format!(
            "{}/_dinggate/callback?error=access_denied&state={state}",
            stack.url()
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("cancelled"));
    assert_eq!(stack.mock.call_count(TOKEN_PATH), 0);
    stack.stop().await;
}

#[tokio::test]
async fn an_account_of_another_organization_is_refused() {
    let stack = stack("").await;
    let client = browser();
    let r = login(&stack, &client, "/", OUTSIDER).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookies(&r).iter().all(|c| !c.starts_with("_dinggate=")));
    let page = r.text().await.unwrap();
    assert!(page.contains("not a member of the organization"), "{page}");
    assert!(
        page.contains("dingcorp00000001"),
        "names the expected organization: {page}"
    );
    // And no session came out of it.
    let r = get_html(&client, &format!("{}/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn any_corp_mode_lets_the_outsider_in() {
    let settings = dinggate::mock::MockSettings::default();
    let stack = dinggate::demo::Stack::start_with(
        0,
        "dingtalk:\n  corp_id: \"\"\n  allow_any_corp: true\n",
        settings,
    )
    .await
    .expect("the extra YAML overrides the generated corp_id");
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    assert_eq!(param(&authorize, "scope").as_deref(), Some("openid"));
    assert!(param(&authorize, "corpId").is_none());
    let cb = approve(&client, &authorize, OUTSIDER).await;
    assert_eq!(get_html(&client, &cb).await.status(), StatusCode::FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn expired_tampered_and_foreign_sessions_are_like_no_session() {
    let stack = stack("").await;
    let client = logged_in(&stack, ZHANGSAN).await;
    let ok = client
        .get(format!("{}/echo", stack.url()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // Minted without directory data: the gateway completes it from the directory on first use.
    let org = stack.mock.settings().org.clone();
    let id = dinggate::identity::Identity {
        union_id: org.user(ZHANGSAN).unwrap().union_id.clone(),
        name: "张三".into(),
        avatar: None,
        email: None,
        corp_id: Some(org.corp_id().to_owned()),
        open_id: None,
        enterprise: None,
    };
    let now = stack.state.clock.now();
    let expired = stack.state.sessions.mint(&id, now - 9 * 3600);
    let valid = stack.state.sessions.mint(&id, now);
    let mut tampered = valid.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = valid[..valid.len() - 5].to_owned();

    let fresh = browser();
    for token in [&expired, &tampered, &truncated, &"not.a.jwt".to_owned()] {
        let r = fresh
            .get(format!("{}/page", stack.url()))
            .header(ACCEPT, HTML)
            .header(COOKIE, format!("_dinggate={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FOUND,
            "token {token:.20} must not pass"
        );
        assert!(location(&r).starts_with("/_dinggate/start?rd="));
    }
    let r = fresh
        .get(format!("{}/page", stack.url()))
        .header(ACCEPT, HTML)
        .header(COOKIE, format!("_dinggate={valid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "control: a valid token passes");

    // The session of the first client expires as the clock moves past the lifetime.
    stack.state.clock.advance(8 * 3600 + 1);
    let r = get_html(&client, &format!("{}/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn api_requests_without_a_session_get_401_json() {
    let stack = stack("").await;
    let client = browser();
    let r = client
        .get(format!("{}/api/items", stack.url()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["login_url"], "/_dinggate/start?rd=%2Fapi%2Fitems");

    for req in [
        client
            .post(format!("{}/form", stack.url()))
            .header(ACCEPT, HTML),
        client
            .get(format!("{}/x", stack.url()))
            .header(ACCEPT, HTML)
            .header("X-Requested-With", "XMLHttpRequest"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    stack.stop().await;
}

#[tokio::test]
async fn deep_links_that_fail_return_url_checks_fall_back_to_their_path() {
    let stack = stack("").await;
    let client = browser();
    let cases = [
        (
            "/report?next=https%3A%2F%2Fexample.org%2F",
            "/_dinggate/start?rd=%2Freport",
        ),
        (
            &*format!("/big?{}", "a".repeat(2000)),
            "/_dinggate/start?rd=%2Fbig",
        ),
    ];
    for (path, want) in cases {
        let r = get_html(&client, &format!("{}{path}", stack.url())).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(location(&r), want, "for {path:.40}");
    }
    // A path that is itself unsafe as a redirect target (`//host`) falls back to `/`.
    let r = client
        .get(format!("{}//evil.example/x", stack.url()))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/_dinggate/start?rd=%2F");
    stack.stop().await;
}

#[tokio::test]
async fn bad_return_urls_are_refused_at_start() {
    let stack = stack("").await;
    let client = browser();
    for rd in [
        "https://evil.example/",
        "//evil.example",
        "/%2f%2fevil.example",
        "javascript:alert(1)",
    ] {
        let enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let r = get_html(
            &client,
            &format!("{}/_dinggate/start?rd={enc}", stack.url()),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "rd={rd}");
        assert!(set_cookies(&r).is_empty(), "no state for a refused rd");
    }
    stack.stop().await;
}

#[tokio::test]
async fn sign_out_clears_the_session() {
    let stack = stack("").await;
    let client = logged_in(&stack, ZHANGSAN).await;
    let r = client
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("_dinggate=;") && c.contains("Max-Age=0")));
    let r = get_html(&client, &format!("{}/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND, "signed out");

    // A GET only shows the confirmation page; its form posts back with the validated rd.
    let client = logged_in(&stack, ZHANGSAN).await;
    let r = get_html(
        &client,
        &format!("{}/_dinggate/sign_out?rd=%2Fbye", stack.url()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty(), "a GET changes nothing");
    let page = r.text().await.unwrap();
    assert!(
        page.contains(r#"<form method="post" action="/_dinggate/sign_out">"#),
        "{page}"
    );
    assert!(page.contains(r#"name="rd" value="/bye""#), "{page}");
    let r = get_html(&client, &format!("{}/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::OK, "still signed in after the GET");

    let r = client
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .form(&[("rd", "/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/bye");
    let r = get_html(
        &client,
        &format!(
            "{}/_dinggate/sign_out?rd=https%3A%2F%2Fevil.example",
            stack.url()
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .form(&[("rd", "https://evil.example")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    stack.stop().await;
}

#[tokio::test]
async fn dingtalk_failures_give_an_actionable_page_not_a_hang() {
    let stack = stack("dingtalk:\n  timeout: 300ms\n").await;
    use dinggate::mock::Fault;

    stack
        .mock
        .inject_fault("/v1.0/contact/users/me", Fault::PermissionDenied, 1);
    let client = browser();
    let r = login(&stack, &client, "/", ZHANGSAN).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let page = r.text().await.unwrap();
    assert!(page.contains("request id"), "{page}");
    assert!(page.contains("Sign in again"), "{page}");

    stack.mock.inject_fault(TOKEN_PATH, Fault::Hang, 1);
    let client = browser();
    let started = std::time::Instant::now();
    let r = login(&stack, &client, "/", ZHANGSAN).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    for fault in [Fault::NonJson, Fault::ServerError, Fault::IpBan] {
        stack.mock.inject_fault(TOKEN_PATH, fault, 1);
        let client = browser();
        let r = login(&stack, &client, "/", ZHANGSAN).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    }
    // After the faults, logins work again.
    logged_in(&stack, ZHANGSAN).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_callback_url_dingtalk_does_not_know_stops_at_dingtalk_with_both_urls_shown() {
    // Registered as users see it behind a TLS-terminating load balancer, while the gateway's
    // public_url still says http: DingTalk refuses the authorize request and never comes back.
    let port = free_port();
    let registered = format!("https://127.0.0.1:{port}/_dinggate/callback");
    let settings = dinggate::mock::MockSettings {
        redirect_urls: vec![registered.clone()],
        ..Default::default()
    };
    let stack = dinggate::demo::Stack::start_with(port, "", settings)
        .await
        .unwrap();
    assert_eq!(stack.url(), format!("http://127.0.0.1:{port}"));
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = get_html(&client, &location(&r)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none(), "never sent back");
    let page = r.text().await.unwrap();
    assert!(page.contains("重定向URL"), "{page}");
    assert!(
        page.contains(&format!("http://127.0.0.1:{port}/_dinggate/callback"))
            && page.contains(&registered),
        "the operator sees what was sent and what is registered: {page}"
    );
    assert_eq!(stack.mock.call_count("/v1.0/oauth2/userAccessToken"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn exclusive_accounts_log_in_through_their_organizations_page() {
    let stack = stack("dingtalk:\n  exclusive_corp_id: dingcorp00000001\n").await;
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", stack.url())).await;
    let authorize = location(&r);
    assert!(
        authorize.contains("exclusiveLogin=true&exclusiveCorpId=dingcorp00000001"),
        "{authorize}"
    );
    // An account of another organization cannot log in on that page.
    let r = get_html(&client, &format!("{authorize}&mock_user=alice.partner")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("专属账号"));
    // The organization's own account can.
    let callback = approve(&client, &authorize, ZHANGSAN).await;
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(cookie_value(&r, "_dinggate").is_some());

    // The sign-in page's embedded QR code asks for the same page.
    let page = get_html(
        &browser(),
        &format!("{}/_dinggate/sign_in?rd=%2F", stack.url()),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        page.contains(r#""exclusiveLogin":"true","exclusiveCorpId":"dingcorp00000001""#)
            || page.contains(r#""exclusiveCorpId":"dingcorp00000001","exclusiveLogin":"true""#),
        "{page}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_person_in_two_organizations_is_preselected_and_the_wrong_pick_is_explained() {
    let stack = stack("").await;
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", stack.url())).await;
    let authorize = location(&r);
    assert!(authorize.contains("corpId=dingcorp00000001"), "{authorize}");
    // 王五 works for two organizations; the picker offers both.
    let picker = get_html(&client, &authorize).await.text().await.unwrap();
    assert_eq!(picker.matches("mock_user=wangwu").count(), 2, "{picker}");
    assert!(picker.contains("mock_corp=dingcorp00000002"));

    // Picking the other one: refused, with both organizations named.
    let r = get_html(
        &client,
        &format!("{authorize}&mock_user=wangwu&mock_corp=dingcorp00000002"),
    )
    .await;
    let r = get_html(&client, &location(&r)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("through organization dingcorp00000002")
            && page.contains("belongs to (dingcorp00000001)")
            && page.contains("choose that organization"),
        "{page}"
    );

    // Without an explicit pick, the corpId the gateway sends preselects its organization.
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", stack.url())).await;
    let callback = approve(&client, &location(&r), "wangwu").await;
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(cookie_value(&r, "_dinggate").is_some());
    stack.stop().await;
}
