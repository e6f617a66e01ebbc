//! Adversarial: spellings of a path that an upstream reads as another path (case, `;params`,
//! trailing dots and spaces) cannot sidestep that path's rules, in proxy and forward-auth mode.

use dinggate::demo::Stack;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// `/` for every member (with a public `/static/`); `/admin`, and `/static/reports` inside the
/// public part, for 张三 only.
const ROUTES: &str = r#"
routes:
  - name: site
    path_prefix: /
    public: ["/static/", "/healthz"]
  - name: admin
    path_prefix: /admin
    allow: { users: [zhangsan] }
  - name: reports
    path_prefix: /static/reports
    allow: { users: [zhangsan] }
"#;

/// Spellings of `/admin` (or below it) that some common upstream reads as `/admin`, with the
/// exact canonical path the gateway forwards for each.
const ADMIN_SPELLINGS: &[(&str, &str)] = &[
    ("/ADMIN", "/ADMIN"),
    ("/Admin/x", "/Admin/x"),
    ("/admin.", "/admin."),
    ("/admin%2e", "/admin."),
    ("/admin%2E/x", "/admin./x"),
    ("/ADMIN../x", "/ADMIN../x"),
    ("/admin%3Bx", "/admin%3Bx"),
    ("/admin%3bx/y", "/admin%3Bx/y"),
    ("/admin%20", "/admin%20"),
    ("/admin.%20/x", "/admin.%20/x"),
    ("/aDmIn;x", "/aDmIn;x"),
    ("/Admin%2E%3Bv=1/x", "/Admin.%3Bv=1/x"),
    ("/;x/admin", "/;x/admin"),
    ("/%20/ADMIN/", "/%20/ADMIN/"),
];

/// Sends one raw HTTP/1.1 GET (so the target reaches the gateway byte for byte) and returns the
/// status and the body.
async fn raw_get(stack: &Stack, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{extra}Connection: close\r\n\r\n",
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

/// The `Cookie` header of a session for `userid`, obtained through the real login.
async fn session_of(stack: &Stack, userid: &str) -> String {
    let client = browser();
    let r = login(stack, &client, "/", userid).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login as {userid}");
    let name = &stack.state.cookies.name;
    let value = cookie_value(&r, name).expect("session cookie");
    format!("{name}={value}")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn every_reading_of_admin_is_refused_to_a_member_refused_on_admin() {
    let stack = stack(ROUTES).await;
    let lisi = session_of(&stack, "lisi").await;
    let zhangsan = session_of(&stack, "zhangsan").await;
    let as_lisi = [("Cookie", lisi.as_str())];
    let as_zhangsan = [("Cookie", zhangsan.as_str())];

    // The baseline: 李四 may use the site but not /admin; 张三 may use both.
    let (status, _) = raw_get(&stack, "/admin", &as_lisi).await;
    assert_eq!(status, 403);
    let (status, _) = raw_get(&stack, "/x", &as_lisi).await;
    assert_eq!(status, 200);

    for (target, forwarded) in ADMIN_SPELLINGS {
        let (status, body) = raw_get(&stack, target, &as_lisi).await;
        assert_eq!(status, 403, "{target} must be refused to 李四: {body}");
        // The gateway answered, naming the route that refused; nothing reached the upstream
        // (the echo would have answered 200 with the path it saw).
        let body = json(&body);
        assert_eq!(body["error"], "forbidden", "{target}");
        assert_eq!(body["route"], "admin", "{target}");
        assert!(body.get("path").is_none(), "{target}: {body}");

        let (status, body) = raw_get(&stack, target, &as_zhangsan).await;
        assert_eq!(status, 200, "{target} is open to 张三: {body}");
        assert_eq!(
            json(&body)["path"],
            *forwarded,
            "{target} is forwarded exactly as normalized"
        );
    }

    // Paths that only look alike stay on the site's rules.
    for target in [
        "/administrator",
        "/administrator.",
        "/ADMINS",
        "/x/admin",
        "/adm%20in",
    ] {
        let (status, body) = raw_get(&stack, target, &as_lisi).await;
        assert_eq!(status, 200, "{target}: {body}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_403_names_the_refusing_route() {
    // The HTML page speaks plain words to the person; the JSON answer names route and rule.
    let stack = stack(ROUTES).await;
    let lisi = session_of(&stack, "lisi").await;
    for (accept, needles) in [
        (HTML, &["This page is only open to the account"][..]),
        (
            "application/json",
            &[r#""route":"admin""#, "allow.users"][..],
        ),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
        let req = format!(
            "GET /ADMIN HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nCookie: {lisi}\r\nConnection: close\r\n\r\n",
            stack.gateway
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.unwrap();
        let page = String::from_utf8_lossy(&out);
        assert!(page.starts_with("HTTP/1.1 403"), "{page}");
        for needle in needles {
            assert!(page.contains(needle), "{needle} in {page}");
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_path_is_public_only_if_every_reading_is_public() {
    let stack = stack(ROUTES).await;
    for (target, want) in [
        ("/static/x", 200),
        ("/static/app.js", 200),
        ("/static/X.", 200),
        ("/static/x;v=1", 200),
        ("/healthz", 200),
        // An upstream that ignores case, `;params` or trailing dots serves /static/ here, but an
        // exact one does not: such spellings need a session, like any other protected path.
        ("/STATIC/x", 401),
        ("/Static/x", 401),
        ("/static./x", 401),
        ("/static%2e/x", 401),
        ("/static%20/x", 401),
        ("/static;x/y", 401),
        ("/static%3Bx/y", 401),
        ("/healthz.", 401),
        ("/HEALTHZ", 401),
        // Exactly, these are below the public /static/; read as /static/reports, they are not.
        ("/static/reports", 401),
        ("/static/REPORTS/x", 401),
        ("/static/Reports", 401),
        ("/static/reports./x", 401),
        ("/static/reports%20", 401),
        ("/static/reports%3Bv=1/x", 401),
        ("/static/;x/reports", 401),
    ] {
        let (status, body) = raw_get(&stack, target, &[]).await;
        assert_eq!(status, want, "{target}: {body}");
    }
    // Signed in, the reports route's policy decides them.
    let lisi = session_of(&stack, "lisi").await;
    let zhangsan = session_of(&stack, "zhangsan").await;
    for target in ["/static/REPORTS/x", "/static/reports%3Bv=1/x"] {
        let (status, body) = raw_get(&stack, target, &[("Cookie", lisi.as_str())]).await;
        assert_eq!(status, 403, "{target}: {body}");
        assert_eq!(json(&body)["route"], "reports", "{target}");
        let (status, body) = raw_get(&stack, target, &[("Cookie", zhangsan.as_str())]).await;
        assert_eq!(status, 200, "{target}: {body}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn segments_that_may_read_as_dot_segments_are_refused() {
    let stack = stack(ROUTES).await;
    let zhangsan = session_of(&stack, "zhangsan").await;
    for target in [
        "/static/.../admin",
        "/static/..%20/admin",
        "/static/.%20./admin",
        "/static/%2e%2e%20/admin",
        "/static/...;x/admin",
    ] {
        let (status, body) = raw_get(&stack, target, &[]).await;
        assert_eq!(status, 400, "{target}: {body}");
        let (status, _) = raw_get(&stack, target, &[("Cookie", zhangsan.as_str())]).await;
        assert_eq!(status, 400, "{target} signed in");
    }
    stack.stop().await;
}

#[tokio::test]
async fn forward_auth_decides_the_same_way() {
    let stack = stack(ROUTES).await;
    let lisi = session_of(&stack, "lisi").await;
    let zhangsan = session_of(&stack, "zhangsan").await;
    let auth = "/_dinggate/auth";
    for header in ["X-Original-URI", "X-Forwarded-Uri"] {
        for (target, _) in ADMIN_SPELLINGS {
            let (status, body) =
                raw_get(&stack, auth, &[(header, target), ("Cookie", lisi.as_str())]).await;
            assert_eq!(status, 403, "{header}: {target}: {body}");
            assert_eq!(json(&body)["route"], "admin", "{target}");
            let (status, body) = raw_get(
                &stack,
                auth,
                &[(header, target), ("Cookie", zhangsan.as_str())],
            )
            .await;
            assert_eq!(status, 200, "{header}: {target} for 张三: {body}");
        }
    }
    for (target, want) in [
        ("/static/x", 200),
        ("/static/x.", 200),
        ("/STATIC/x", 401),
        ("/static./x", 401),
        ("/static%3Bx/y", 401),
        ("/static/REPORTS", 401),
        ("/static/.../admin", 400),
    ] {
        let (status, body) = raw_get(&stack, auth, &[("X-Original-URI", target)]).await;
        assert_eq!(status, want, "{target}: {body}");
    }
    stack.stop().await;
}
