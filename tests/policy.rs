//! End to end: routes, per-route policies, public paths and path-normalization tricks.

mod common;

use common::*;
use dinggate::demo::Stack;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, HOST};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
routes:
  - path_prefix: /
    public: ["/public/", "/healthz"]
  - path_prefix: /admin
    allow: { admins: true }
  - path_prefix: /rd
    allow: { departments: [100] }
    deny: { users: [lisi] }
  - path_prefix: /finance
    allow: { departments: [300] }
  - host: hr.example.test
    path_prefix: /
    allow: { users: [zhaoliu] }
"#;

#[tokio::test]
async fn policy_matrix_by_department_subtree_admin_user_and_deny() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    let url = |p: &str| format!("{}{p}", stack.url());
    let cases: &[(&str, &[(&str, StatusCode)])] = &[
        // 研发部 (100) and its sub-departments 平台组 (101) and 前端组 (102); lisi is denied by name.
        (
            "/rd/x",
            &[
                ("zhangsan", StatusCode::OK),
                ("chenxiaoming", StatusCode::OK),
                ("lisi", StatusCode::FORBIDDEN),
                ("wangwu", StatusCode::FORBIDDEN),
                // 赵六 sits in the root department, above 研发部, not below it.
                ("zhaoliu", StatusCode::FORBIDDEN),
            ],
        ),
        (
            "/admin/users",
            &[
                ("zhangsan", StatusCode::OK),
                ("lisi", StatusCode::FORBIDDEN),
                ("zhaoliu", StatusCode::FORBIDDEN),
            ],
        ),
        (
            "/finance",
            &[
                ("chenxiaoming", StatusCode::OK),
                ("zhangsan", StatusCode::FORBIDDEN),
            ],
        ),
        // A route without rules: any member of the corp.
        (
            "/anything",
            &[("wangwu", StatusCode::OK), ("lisi", StatusCode::OK)],
        ),
    ];
    for (user, client) in login_all(
        &stack,
        &["zhangsan", "lisi", "wangwu", "zhaoliu", "chenxiaoming"],
    )
    .await
    {
        for (path, expectations) in cases {
            for (who, want) in expectations.iter() {
                if *who != user {
                    continue;
                }
                let r = get_json(&client, &url(path)).await;
                assert_eq!(r.status(), *want, "{user} on {path}");
            }
        }
    }
    stack.stop().await;
}

async fn login_all<'a>(stack: &Stack, users: &[&'a str]) -> Vec<(&'a str, reqwest::Client)> {
    let mut out = Vec::new();
    for u in users {
        out.push((*u, logged_in(stack, u).await));
    }
    out
}

#[tokio::test]
async fn host_routes_win_for_their_host() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    let zhaoliu = logged_in(&stack, "zhaoliu").await;
    let zhangsan = logged_in(&stack, "zhangsan").await;
    let hr = |c: &reqwest::Client| {
        c.get(format!("{}/admin/x", stack.url()))
            .header(HOST, "HR.Example.test:8443")
            .header(ACCEPT, "application/json")
            .send()
    };
    assert_eq!(hr(&zhaoliu).await.unwrap().status(), StatusCode::OK);
    // On hr.example.test the admin route does not apply: the host route decides.
    assert_eq!(hr(&zhangsan).await.unwrap().status(), StatusCode::FORBIDDEN);
    stack.stop().await;
}

#[tokio::test]
async fn the_403_names_the_user_and_the_rule_and_offers_sign_out() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    let client = logged_in(&stack, "lisi").await;
    let r = get_html(&client, &format!("{}/rd/plan", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = r.text().await.unwrap();
    assert!(page.contains("李四"), "{page}");
    assert!(
        page.contains("This page is closed to the account lisi"),
        "{page}"
    );
    assert!(
        !page.contains("deny.users"),
        "config syntax stays in the log: {page}"
    );
    assert!(page.contains("/_dinggate/sign_out"), "{page}");
    // The link is a GET: it shows the confirmation page and ends nothing by itself.
    let r = get_html(&client, &format!("{}/_dinggate/sign_out", stack.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(&r).is_empty());
    assert!(r.text().await.unwrap().contains("everywhere"));
    let r = get_html(&client, &format!("{}/rd/plan", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "still signed in");

    let r = get_json(&client, &format!("{}/admin", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("allow.admins"));
    stack.stop().await;
}

#[tokio::test]
async fn public_paths_skip_login_but_never_pass_identity_headers() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    let anon = browser();
    let mut spoof = HeaderMap::new();
    spoof.insert("x-forwarded-user", HeaderValue::from_static("attacker"));
    spoof.insert("X_DingTalk_UserId", HeaderValue::from_static("attacker"));
    let r = anon
        .get(format!("{}/public/app.css", stack.url()))
        .headers(spoof.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert!(!echoed["headers"].to_string().contains("attacker"));
    assert!(echoed["headers"].get("x-forwarded-user").is_none());

    // Even with a session, a public path gets no identity headers.
    let client = logged_in(&stack, "zhangsan").await;
    let r = client
        .get(format!("{}/public/x", stack.url()))
        .headers(spoof)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert!(echoed["headers"].get("x-forwarded-user").is_none());
    assert!(!echoed["headers"].to_string().contains("attacker"));

    // `/publicity` is not under `/public/`.
    let r = get_json(&anon, &format!("{}/publicity", stack.url())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    stack.stop().await;
}

/// Sends a raw HTTP/1.1 request line (clients normalize `..` before sending) and returns the
/// status and body.
async fn raw_get(stack: &Stack, target: &str, cookie: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: _dinggate={c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{cookie}Connection: close\r\n\r\n",
        stack.gateway
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn normalization_tricks_cannot_reach_a_protected_prefix_through_a_public_one() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    // Anonymous: every spelling of /admin through /public/ is treated as /admin (401), never public.
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E%2Fadmin",
        "//admin",
        "/public/./../admin/",
        "/public//../../admin",
    ] {
        let (status, _) = raw_get(&stack, target, None).await;
        assert_eq!(status, 401, "{target} must need a login");
    }
    // Ambiguous spellings are refused outright.
    for target in [
        "/public/..;/admin",
        "/public/%5c..%5cadmin",
        "/public/%00/x",
    ] {
        let (status, _) = raw_get(&stack, target, None).await;
        assert_eq!(status, 400, "{target}");
    }

    // Signed in as someone who may not enter /admin: the forwarded path is the authorized path.
    let wangwu = stack.state.sessions.mint(
        &dinggate::identity::Identity {
            union_id: "u-wangwu".into(),
            name: "王五".into(),
            avatar: None,
            email: None,
            corp_id: Some(stack.mock.settings().org.corp_id().to_owned()),
            open_id: None,
            enterprise: Some(dinggate::identity::Enterprise {
                user_id: "wangwu".into(),
                departments: vec![200],
                department_tree: vec![1, 200],
                admin: false,
                title: None,
            }),
        },
        stack.state.clock.now(),
    );
    let (status, _) = raw_get(&stack, "/public/../admin/x", Some(&wangwu)).await;
    assert_eq!(status, 403);
    // `/admin%2F..` is `/` once decoded: allowed, and `/` is what the upstream receives.
    let (status, body) = raw_get(&stack, "/admin%2F..", Some(&wangwu)).await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/");
    // /ADMIN is /admin to an upstream that ignores case: the admin policy decides it too.
    let (status, _) = raw_get(&stack, "/ADMIN/x", Some(&wangwu)).await;
    assert_eq!(status, 403);
    // Routing stays exact: a spelling no reading takes to /admin is forwarded as it is.
    let (status, body) = raw_get(&stack, "/ADMINS/x", Some(&wangwu)).await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/ADMINS/x");
    // The dot-segment spelling is forwarded in its resolved form.
    let (status, body) = raw_get(&stack, "/public/x/../y", Some(&wangwu)).await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["path"], "/public/y");
    stack.stop().await;
}

#[tokio::test]
async fn a_request_that_matches_no_route_is_404_not_proxied() {
    let stack = stack("routes:\n  - path_prefix: /app\n").await;
    let client = logged_in_to(&stack, "/app").await;
    let r = get_json(&client, &format!("{}/app/x", stack.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get_json(&client, &format!("{}/other", stack.url())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get_json(&client, &format!("{}/application", stack.url())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    stack.stop().await;
}

async fn logged_in_to(stack: &Stack, path: &str) -> reqwest::Client {
    let client = browser();
    let r = login(stack, &client, path, "zhangsan").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    client
}

#[tokio::test]
async fn routes_without_the_directory_cannot_use_department_rules() {
    let err = Stack::start(
        0,
        "dingtalk:\n  directory: false\nroutes:\n  - path_prefix: /x\n    allow: { departments: [100] }\n",
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("routes[0]"), "{err}");
}

#[tokio::test]
async fn a_host_route_logs_in_on_public_url_and_comes_back_to_its_host() {
    let stack = stack(&format!("{NAMED_HOSTS}{ROUTES}")).await;
    let port = stack.gateway.port();
    let client = browser();
    let page = format!("http://hr.example.test:{port}/page?x=1");
    let r = get_html(&client, &page).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let start = location(&r);
    let enc: String = url::form_urlencoded::byte_serialize(page.as_bytes()).collect();
    assert_eq!(
        start,
        format!("http://gate.example.test:{port}/_dinggate/start?rd={enc}")
    );
    let r = get_html(&client, &start).await;
    let callback = approve(&client, &location(&r), "zhaoliu").await;
    assert!(callback.starts_with(&format!(
        "http://gate.example.test:{port}/_dinggate/callback?"
    )));
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), page);
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("_dinggate=") && c.contains("Domain=example.test")));
    let r = get_json(&client, &format!("http://hr.example.test:{port}/echo")).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the shared cookie works on the route's host"
    );

    // Someone the host route does not admit.
    let other = browser();
    let r = login(&stack, &other, "/", "zhangsan").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = get_json(&other, &format!("http://hr.example.test:{port}/echo")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    stack.stop().await;
}

#[tokio::test]
async fn a_host_route_that_could_never_log_in_is_a_config_error() {
    let err = Stack::start(0, "routes:\n  - host: hr.example.test\n")
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("routes[0].host"), "{text}");
    assert!(text.contains("cookie_domain"), "{text}");
}
