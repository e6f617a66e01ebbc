//! Adversarial: the request's edges — Host / `:authority` / absolute-form targets, and the
//! headers a forward-auth proxy uses to name the original request.

use crate::common::*;
use dinggate::demo::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
routes:
  - path_prefix: /
    public: ["/public/"]
  - path_prefix: /admin
    allow: { admins: true }
  - host: hr.example.test
    path_prefix: /
    allow: { users: [zhaoliu] }
"#;

async fn named_stack() -> Stack {
    stack(&format!("{NAMED_HOSTS}{ROUTES}")).await
}

/// A session for 王五: a member (admitted on `/`), not an admin (refused on `/admin`), not
/// zhaoliu (refused on hr.example.test).
fn wangwu(stack: &Stack) -> String {
    stack.state.sessions.mint(
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
    )
}

/// Writes `head` (request line and headers, without the final blank line) on a fresh
/// connection and returns the status and body.
async fn raw(stack: &Stack, head: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(b"Accept: application/json\r\nConnection: close\r\n\r\n");
    tcp.write_all(&req).await.unwrap();
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

fn assert_refused_by_gateway(status: u16, body: &str, code: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert!(body.contains(code), "{what}: {body}");
    // The echo upstream answers with the request it saw; a gateway error page never has it.
    assert!(
        !body.contains("\"headers\""),
        "{what} reached the upstream: {body}"
    );
}

#[tokio::test]
async fn malformed_hosts_are_refused_and_never_forwarded() {
    let stack = named_stack().await;
    let port = stack.gateway.port();
    let cookie = format!("Cookie: _dinggate={}\r\n", wangwu(&stack));
    let get = |target: &str, host: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{cookie}").into_bytes()
    };

    // Baseline: a member gets through on the gateway's host, and hr.example.test refuses them.
    let (status, body) = raw(&stack, &get("/echo", &format!("gate.example.test:{port}"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"headers\""), "{body}");
    let (status, _) = raw(&stack, &get("/echo", &format!("HR.example.test.:{port}"))).await;
    assert_eq!(status, 403);

    for host in [
        // Routed as `other` (the host-less route) before, while the raw value went upstream.
        "hr.example.test:1@other".to_owned(),
        format!("hr.example.test:{port}@gate.example.test"),
        format!("wangwu@gate.example.test:{port}"),
        format!("hr.example.test x:{port}"),
        format!("hr.example.test\\x:{port}"),
        format!("hr.example.test::{port}"),
        format!("hr.example.test:{port}:{port}"),
        "hr.example.test:".to_owned(),
        "hr.example.test:0".to_owned(),
        "hr.example.test:65536".to_owned(),
        "hr.example.test/x".to_owned(),
        "hr.example.123".to_owned(),
        "[::1".to_owned(),
    ] {
        let (status, body) = raw(&stack, &get("/echo", &host)).await;
        assert_refused_by_gateway(status, &body, "bad_host", &host);
    }
    // Raw non-ASCII in Host.
    let mut head = b"GET /echo HTTP/1.1\r\nHost: h\xc3\xa9.example.test\r\n".to_vec();
    head.extend_from_slice(cookie.as_bytes());
    let (status, body) = raw(&stack, &head).await;
    assert_refused_by_gateway(status, &body, "bad_host", "non-ASCII host");

    // Absolute-form target with userinfo (and a Host that agrees with it).
    let authority = format!("wangwu@gate.example.test:{port}");
    let (status, body) = raw(
        &stack,
        &get(&format!("http://{authority}/echo"), &authority),
    )
    .await;
    assert_refused_by_gateway(status, &body, "bad_host", "absolute-form userinfo");
    // Without a Host header too (the authority alone names the host).
    let head = format!("GET http://{authority}/echo HTTP/1.1\r\n{cookie}");
    let (status, body) = raw(&stack, head.as_bytes()).await;
    assert_refused_by_gateway(status, &body, "bad_host", "absolute-form userinfo, no Host");

    // HTTP/1.1 requires a Host; HTTP/1.0 may omit it and gets host-less routes only.
    let head = format!("GET /echo HTTP/1.1\r\n{cookie}");
    let (status, body) = raw(&stack, head.as_bytes()).await;
    assert_refused_by_gateway(status, &body, "bad_host", "HTTP/1.1 without Host");
    let head = format!("GET /echo HTTP/1.0\r\n{cookie}");
    let (status, _) = raw(&stack, head.as_bytes()).await;
    assert_eq!(status, 200);
    stack.stop().await;
}

#[tokio::test]
async fn malformed_h2_authority_is_refused_and_never_forwarded() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let stack = named_stack().await;
    let port = stack.gateway.port();
    let token = wangwu(&stack);
    let tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [
        (format!("gate.example.test:{port}"), 200),
        (format!("hr.example.test:{port}"), 403),
        ("hr.example.test:1@other".to_owned(), 400),
        (format!("wangwu@gate.example.test:{port}"), 400),
        ("hr.example.test:".to_owned(), 400),
        (format!("hr.example.123:{port}"), 400),
    ] {
        let req = http::Request::get(format!("http://{authority}/echo"))
            .header("accept", "application/json")
            .header("cookie", format!("_dinggate={token}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        if want == 400 {
            assert_refused_by_gateway(status, &body, "bad_host", &authority);
        } else {
            assert_eq!(status, want, "{authority}: {body}");
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn forward_auth_decides_on_the_path_the_app_sees_and_refuses_what_it_cannot_read() {
    let stack = named_stack().await;
    let port = stack.gateway.port();
    let cookie = format!("Cookie: _dinggate={}\r\n", wangwu(&stack));
    let auth = |extra: &[u8]| {
        let mut head =
            format!("GET /_dinggate/auth HTTP/1.1\r\nHost: gate.example.test:{port}\r\n{cookie}")
                .into_bytes();
        head.extend_from_slice(extra);
        head
    };

    // Baseline: the member may use `/`, not `/admin`.
    let (status, _) = raw(&stack, &auth(b"X-Original-URI: /x\r\n")).await;
    assert_eq!(status, 200);
    let (status, _) = raw(&stack, &auth(b"X-Original-URI: /admin\r\n")).await;
    assert_eq!(status, 403);

    // Raw UTF-8 bytes, as nginx passes `$request_uri`: decided as the app will see them.
    for uri in [
        "/admin?x=é",
        "/admin/é",
        "/admin/é?x=é",
        "/ADMIN/../admin/é",
    ] {
        for name in ["X-Original-URI", "X-Forwarded-Uri"] {
            let (status, body) = raw(&stack, &auth(format!("{name}: {uri}\r\n").as_bytes())).await;
            assert_eq!(status, 403, "{name}: {uri}: {body}");
        }
    }
    // With the Traefik/Caddy set of headers, too.
    let (status, _) = raw(
        &stack,
        &auth(
            format!(
                "X-Forwarded-Uri: /admin/é\r\nX-Forwarded-Host: gate.example.test:{port}\r\nX-Forwarded-Method: GET\r\n"
            )
            .as_bytes(),
        ),
    )
    .await;
    assert_eq!(status, 403);

    for (what, extra, code) in [
        ("missing URI", &b""[..], "bad_forwarded_request"),
        (
            "duplicated URI",
            b"X-Original-URI: /x\r\nX-Original-URI: /x\r\n",
            "bad_forwarded_request",
        ),
        (
            "URI headers disagreeing",
            b"X-Original-URI: /x\r\nX-Forwarded-Uri: /admin\r\n",
            "bad_forwarded_request",
        ),
        (
            "control character",
            b"X-Original-URI: /admin\t/x\r\n",
            "bad_forwarded_request",
        ),
        (
            "space",
            b"X-Original-URI: /admin x\r\n",
            "bad_forwarded_request",
        ),
        ("not a path", b"X-Original-URI: admin\r\n", "bad_path"),
        (
            "invalid UTF-8",
            b"X-Original-URI: /admin/\xff\r\n",
            "bad_path",
        ),
        (
            "X-Forwarded-Host with userinfo",
            b"X-Original-URI: /x\r\nX-Forwarded-Host: hr.example.test:1@other\r\n",
            "bad_host",
        ),
        (
            "X-Forwarded-Host with a space",
            b"X-Original-URI: /x\r\nX-Forwarded-Host: gate.example.test x\r\n",
            "bad_host",
        ),
        (
            "X-Forwarded-Host list",
            b"X-Original-URI: /x\r\nX-Forwarded-Host: a.example, b.example\r\n",
            "bad_host",
        ),
        (
            "X-Forwarded-Host twice",
            b"X-Original-URI: /x\r\nX-Forwarded-Host: a.example\r\nX-Forwarded-Host: a.example\r\n",
            "bad_host",
        ),
        (
            "X-Forwarded-Host not ASCII",
            b"X-Original-URI: /x\r\nX-Forwarded-Host: h\xc3\xa9.example\r\n",
            "bad_host",
        ),
        (
            "X-Forwarded-Method not a token",
            b"X-Original-URI: /x\r\nX-Forwarded-Method: G(ET\r\n",
            "bad_forwarded_request",
        ),
        (
            "X-Forwarded-Method empty",
            b"X-Original-URI: /x\r\nX-Forwarded-Method: \r\n",
            "bad_forwarded_request",
        ),
    ] {
        let (status, body) = raw(&stack, &auth(extra)).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains(code), "{what}: {body}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn forward_auth_sends_only_original_navigations_to_the_login() {
    let stack = named_stack().await;
    let auth = format!("{}/_dinggate/auth", stack.url());
    let anon = browser();
    let ask = |method: Option<&'static str>| {
        let mut req = anon
            .get(&auth)
            .header("accept", HTML)
            .header("x-forwarded-uri", "/x?y=1");
        if let Some(m) = method {
            req = req.header("x-forwarded-method", m);
        }
        req.send()
    };
    // Without X-Forwarded-Method (nginx), and with GET: a browser navigation → login redirect.
    for method in [None, Some("GET")] {
        let r = ask(method).await.unwrap();
        assert_eq!(r.status(), 302, "{method:?}");
        assert_eq!(location(&r), "/_dinggate/start?rd=%2Fx%3Fy%3D1");
    }
    // A POST (or any non-GET) original is never a navigation to redirect: 401 with the login URL.
    for method in ["POST", "DELETE", "PROPFIND"] {
        let r = ask(Some(method)).await.unwrap();
        assert_eq!(r.status(), 401, "{method}");
        assert_eq!(
            r.headers()["x-login-url"],
            "/_dinggate/start?rd=%2Fx%3Fy%3D1"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    // Raw non-ASCII in the original URI comes back percent-encoded in the login URL.
    let r = anon
        .get(&auth)
        .header("accept", HTML)
        .header(
            "x-original-uri",
            reqwest::header::HeaderValue::from_bytes("/wiki/中文?q=é".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        location(&r),
        "/_dinggate/start?rd=%2Fwiki%2F%25E4%25B8%25AD%25E6%2596%2587%3Fq%3D%25C3%25A9"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_host_must_name_the_routed_host() {
    let stack = stack(&format!(
        "{NAMED_HOSTS}{ROUTES}trust_forwarded_headers: true\n"
    ))
    .await;
    let port = stack.gateway.port();
    let cookie = format!("Cookie: _dinggate={}\r\n", wangwu(&stack));
    let get = |xfh: &str| {
        format!("GET /echo HTTP/1.1\r\nHost: gate.example.test:{port}\r\n{xfh}{cookie}")
            .into_bytes()
    };
    // Same host (the proxy dropped the port): forwarded as the proxy saw it.
    let (status, body) = raw(&stack, &get("X-Forwarded-Host: gate.example.test\r\n")).await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        header(&echoed, "x-forwarded-host"),
        Some("gate.example.test")
    );
    // Routed by Host as gate.example.test, but the upstream would be told hr.example.test.
    for xfh in [
        "X-Forwarded-Host: hr.example.test\r\n",
        "X-Forwarded-Host: gate.example.test:1@hr.example.test\r\n",
        "X-Forwarded-Host: gate.example.test, hr.example.test\r\n",
        "X-Forwarded-Host: gate.example.test\r\nX-Forwarded-Host: gate.example.test\r\n",
    ] {
        let (status, body) = raw(&stack, &get(xfh)).await;
        assert_refused_by_gateway(status, &body, "bad_host", xfh);
    }
    stack.stop().await;
}
