//! End to end: directory look-ups at login, enterprise headers, session re-validation and maximum age.

mod common;

use common::*;
use dinggate::mock::Fault;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

#[tokio::test]
async fn login_adds_userid_departments_and_title_from_the_directory() {
    let stack = stack("").await;
    // 陈晓明 is in two departments; the header lists the direct ones.
    let client = logged_in(&stack, "chenxiaoming").await;
    let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
    let org = stack.mock.settings().org.clone();
    let user = org.user("chenxiaoming").unwrap();
    assert_eq!(header(&echoed, "x-dingtalk-userid"), Some("chenxiaoming"));
    let mut want: Vec<u64> = user.departments.clone();
    want.sort_unstable();
    let want = want
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        header(&echoed, "x-dingtalk-departments"),
        Some(want.as_str())
    );
    let name = header(&echoed, "x-dingtalk-name").unwrap();
    assert_eq!(
        percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .unwrap(),
        user.name
    );
    if let Some(title) = &user.title {
        let got = header(&echoed, "x-dingtalk-title").unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(got)
                .decode_utf8()
                .unwrap(),
            *title
        );
    }
    for api in [
        "/topapi/user/getbyunionid",
        "/topapi/v2/user/get",
        "/topapi/v2/department/listparentbyuser",
    ] {
        assert_eq!(stack.mock.call_count(api), 1, "{api}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn inactive_and_removed_people_cannot_log_in() {
    let stack = stack("").await;
    stack.mock.remove_user("wangwu");
    let client = browser();
    let r = login(&stack, &client, "/", "wangwu").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("not a member of the organization"));

    // The mock refuses inactive users on its login page, like DingTalk; deactivate after the
    // approval instead, so the gateway's own directory check is what refuses.
    let client = browser();
    let authorize = begin_login(&stack, &client, "/").await;
    let callback = approve(&client, &authorize, "lisi").await;
    stack.mock.set_user_active("lisi", false);
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("not active"));
    stack.stop().await;
}

#[tokio::test]
async fn a_removed_member_is_refused_at_the_next_revalidation() {
    let stack = stack("session:\n  revalidate_after: 15m\n").await;
    let client = logged_in(&stack, "zhangsan").await;
    let url = format!("{}/echo", stack.url());
    assert_eq!(get_json(&client, &url).await.status(), StatusCode::OK);

    stack.mock.remove_user("zhangsan");
    // Within revalidate_after the session is trusted as it is.
    stack.state.clock.advance(10 * 60);
    assert_eq!(get_json(&client, &url).await.status(), StatusCode::OK);
    // Past it, the directory is asked again and the person is gone.
    stack.state.clock.advance(6 * 60);
    let r = get_json(&client, &url).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("_dinggate=;") && c.contains("Max-Age=0")));
    // The cookie was cleared: the next request is simply unauthenticated.
    assert_eq!(
        get_json(&client, &url).await.status(),
        StatusCode::UNAUTHORIZED
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_userid_given_to_someone_else_does_not_revalidate_the_old_session() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let url = format!("{}/echo", stack.url());
    assert_eq!(get_json(&client, &url).await.status(), StatusCode::OK);
    // 李四 left; their userid now belongs to another account.
    stack
        .mock
        .reassign_user_id("lisi", "union-someone-else-0001");
    stack.state.clock.advance(16 * 60);
    let r = get_json(&client, &url).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the unionId under that userid is not the session's: asked by unionId, not a member"
    );
    assert_eq!(stack.mock.call_count("/topapi/user/getbyunionid"), 2);
    stack.stop().await;
}

#[tokio::test]
async fn revalidation_refreshes_the_cookie_and_keeps_the_session() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let url = format!("{}/echo", stack.url());
    let lookups = stack.mock.call_count("/topapi/v2/user/get");
    stack.state.clock.advance(16 * 60);
    let r = get_json(&client, &url).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        cookie_value(&r, "_dinggate").is_some(),
        "re-minted cookie is set"
    );
    assert_eq!(stack.mock.call_count("/topapi/v2/user/get"), lookups + 1);
    assert_eq!(
        stack.mock.call_count("/topapi/user/getbyunionid"),
        1,
        "re-validation looks the person up by the userid in the session, not by unionId again"
    );
    // Fresh again: no further look-ups for the next requests.
    assert_eq!(get_json(&client, &url).await.status(), StatusCode::OK);
    assert_eq!(stack.mock.call_count("/topapi/v2/user/get"), lookups + 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_dingtalk_outage_during_revalidation_fails_closed_unless_within_grace() {
    // An outage: a proxy's HTML error page instead of DingTalk's JSON (a "system busy" answer
    // is DingTalk throttling instead: 503, see tests/pages.rs).
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let url = format!("{}/echo", stack.url());
    stack.state.clock.advance(16 * 60);
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::NonJson, 5);
    let r = get_json(&client, &url).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "revalidation_failed");
    stack.stop().await;

    let stack = stack_with("session:\n  revalidate_grace: 1h\n").await;
    let client = logged_in(&stack, "lisi").await;
    stack.state.clock.advance(16 * 60);
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::NonJson, 5);
    assert_eq!(
        get_json(&client, &url_of(&stack)).await.status(),
        StatusCode::OK
    );
    // Beyond the grace period it fails closed again.
    stack.state.clock.advance(60 * 60);
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::NonJson, 5);
    assert_eq!(
        get_json(&client, &url_of(&stack)).await.status(),
        StatusCode::BAD_GATEWAY
    );
    stack.stop().await;
}

async fn stack_with(yaml: &str) -> dinggate::demo::Stack {
    stack(yaml).await
}

fn url_of(stack: &dinggate::demo::Stack) -> String {
    format!("{}/echo", stack.url())
}

#[tokio::test]
async fn max_lifetime_forces_a_fresh_login_even_for_an_active_session() {
    let stack = stack("session:\n  lifetime: 8h\n  max_lifetime: 9h\n").await;
    let client = logged_in(&stack, "lisi").await;
    let url = url_of(&stack);
    stack.state.clock.advance(7 * 3600);
    assert_eq!(get_json(&client, &url).await.status(), StatusCode::OK);
    stack.state.clock.advance(150 * 60);
    assert_eq!(
        get_json(&client, &url).await.status(),
        StatusCode::UNAUTHORIZED,
        "9.5 h after login: a fresh login is required"
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_session_cookie_stays_small_for_a_member_of_many_departments() {
    // An org where one person is in 40 departments, each 3 levels deep.
    let mut yaml = String::from(
        "corp: {corp_id: dingcorpbig, name: 大公司}\ndepartments:\n  - {id: 1, name: 根}\n",
    );
    let mut depts = Vec::new();
    for i in 0..40u64 {
        let a = 1000 + i * 10;
        yaml.push_str(&format!(
            "  - {{id: {a}, name: 部门{i}, parent: 1}}\n  - {{id: {}, name: 小组{i}, parent: {a}}}\n",
            a + 1
        ));
        depts.push((a + 1).to_string());
    }
    yaml.push_str(&format!(
        "users:\n  - {{userid: many, name: 多部门的一个很长的名字, union_id: unionmany0123456789abc, open_id: openmany0123456789, email: many.departments@example.com, title: 高级工程师, departments: [{}]}}\n",
        depts.join(", ")
    ));
    let org = match dinggate::mock::Org::from_yaml_str(&yaml) {
        Ok(org) => org,
        Err(e) => panic!("test org: {e}"),
    };
    let settings = dinggate::mock::MockSettings {
        org,
        ..Default::default()
    };
    let stack = dinggate::demo::Stack::start_with(0, "", settings)
        .await
        .unwrap();
    let client = browser();
    let r = login(&stack, &client, "/", "many").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let line = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("_dinggate="))
        .unwrap();
    println!("session cookie for 40 departments: {} bytes", line.len());
    assert!(line.len() < 2048, "cookie is {} bytes", line.len());
    stack.stop().await;
}

#[tokio::test]
async fn concurrent_logins_share_one_app_token_and_an_invalid_token_is_refetched_once() {
    let stack = stack("").await;
    let users = ["zhangsan", "lisi", "wangwu", "zhaoliu", "chenxiaoming"];
    let logins = (0..20).map(|i| {
        let stack = &stack;
        async move {
            let client = browser();
            let r = login(stack, &client, "/", users[i % users.len()]).await;
            assert_eq!(r.status(), StatusCode::FOUND);
        }
    });
    futures_util::future::join_all(logins).await;
    assert_eq!(stack.mock.call_count("/v1.0/oauth2/accessToken"), 1);

    // DingTalk says the cached token is invalid: one refetch, one retry, and the login succeeds.
    stack.state.clock.advance(3600); // past the directory cache
    stack
        .mock
        .inject_fault("/topapi/user/getbyunionid", Fault::InvalidToken, 1);
    let r = login(&stack, &browser(), "/", "lisi").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(stack.mock.call_count("/v1.0/oauth2/accessToken"), 2);
    stack.stop().await;
}

#[tokio::test]
async fn an_app_token_without_expire_in_is_kept_for_the_documented_two_hours() {
    let settings = dinggate::mock::MockSettings {
        omit_app_token_expiry: true,
        ..Default::default()
    };
    let stack = dinggate::demo::Stack::start_with(0, "", settings)
        .await
        .unwrap();
    for user in ["zhangsan", "lisi", "wangwu"] {
        let r = login(&stack, &browser(), "/", user).await;
        assert_eq!(r.status(), StatusCode::FOUND, "{user}");
    }
    assert_eq!(
        stack.mock.call_count("/v1.0/oauth2/accessToken"),
        1,
        "a token without expireIn is reused, not fetched for every call"
    );
    stack.stop().await;
}

#[tokio::test]
async fn qps_limit_errors_are_retried_and_directory_answers_are_cached() {
    let stack = stack("").await;
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::QpsLimit, 1);
    let r = login(&stack, &browser(), "/", "zhaoliu").await;
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "one 90018 is absorbed by a retry"
    );
    assert_eq!(stack.mock.call_count("/topapi/v2/user/get"), 2);

    // A second login of the same person within the cache TTL asks the directory nothing.
    let r = login(&stack, &browser(), "/", "zhaoliu").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(stack.mock.call_count("/topapi/v2/user/get"), 2);
    assert_eq!(stack.mock.call_count("/topapi/user/getbyunionid"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_burst_of_requests_due_for_revalidation_makes_one_set_of_lookups() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let before = stack.mock.call_count("/topapi/v2/user/get");
    stack.state.clock.advance(16 * 60);
    let url = url_of(&stack);
    let burst = (0..30).map(|_| get_json(&client, &url));
    for r in futures_util::future::join_all(burst).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        stack.mock.call_count("/topapi/v2/user/get"),
        before + 1,
        "30 concurrent re-validations share one directory look-up"
    );
    assert_eq!(stack.mock.call_count("/topapi/user/getbyunionid"), 1);
    stack.stop().await;
}
