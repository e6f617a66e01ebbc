//! End to end: what the upstream receives, streaming, upgrades, and upstream failures.

mod common;

use common::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let stack = stack("").await;
    let client = logged_in(&stack, "zhangsan").await;
    let union_id = stack
        .mock
        .settings()
        .org
        .user("zhangsan")
        .unwrap()
        .union_id
        .clone();

    let mut spoof = HeaderMap::new();
    for name in [
        "X-Forwarded-User",
        "X_Forwarded_User",
        "X-Forwarded-Email",
        "x_forwarded_email",
        "X-Forwarded-Preferred-Username",
        "X-DingTalk-UnionId",
        "X_DINGTALK_NAME",
        "x-dingtalk-corpid",
        "X-DingTalk-UserId",
        "X-DingTalk-Departments",
        "X-Forwarded-For",
        "X-Forwarded-Host",
    ] {
        spoof.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("attacker"),
        );
    }
    // Lower-case duplicate of an already added name, sent as a second line.
    spoof.append("x-forwarded-user", HeaderValue::from_static("attacker2"));

    let echoed = echo(&client, &format!("{}/echo", stack.url()), spoof).await;
    let all = echoed["headers"].to_string();
    assert!(
        !all.contains("attacker"),
        "a spoofed value got through: {all}"
    );
    assert_eq!(header(&echoed, "x-forwarded-user"), Some(union_id.as_str()));
    assert_eq!(header(&echoed, "x-forwarded-for"), Some("127.0.0.1"));
    assert!(echoed["headers"].get("x_forwarded_user").is_none());
    assert_eq!(header(&echoed, "x-dingtalk-userid"), Some("zhangsan"));
    assert!(echoed["headers"].get("x-dingtalk-departments").is_some());
    stack.stop().await;
}

#[tokio::test]
async fn method_body_path_and_query_are_preserved_and_bodies_stream() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let body = "名字=张三&".repeat(20_000);
    let r = client
        .put(format!("{}/echo/a%20b/c?x=1&x=2&y=%E4%B8%AD", stack.url()))
        .header(ACCEPT, "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echoed: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/echo/a%20b/c");
    assert_eq!(echoed["query"], "x=1&x=2&y=%E4%B8%AD");
    assert_eq!(echoed["body"].as_str().unwrap().len(), body.len());
    assert_eq!(echoed["body"], body.as_str());
    stack.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let mut h = HeaderMap::new();
    h.insert("connection", HeaderValue::from_static("x-secret-hop"));
    h.insert("x-secret-hop", HeaderValue::from_static("1"));
    h.insert(
        "proxy-authorization",
        HeaderValue::from_static("Basic Zm9vOmJhcg=="),
    );
    h.insert("te", HeaderValue::from_static("trailers"));
    h.insert("x-kept", HeaderValue::from_static("yes"));
    let echoed = echo(&client, &format!("{}/echo", stack.url()), h).await;
    for gone in ["x-secret-hop", "proxy-authorization", "te"] {
        assert!(echoed["headers"].get(gone).is_none(), "{gone} forwarded");
    }
    assert_eq!(header(&echoed, "x-kept"), Some("yes"));
    stack.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let stack = stack("upstream_timeout: 300ms\n").await;
    let client = logged_in(&stack, "lisi").await;

    let r = get_html(&client, &format!("{}/slow?ms=3000", stack.url())).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(r.text().await.unwrap().contains("did not answer in time"));
    let r = client
        .get(format!("{}/slow?ms=3000", stack.url()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    stack.stop().await;

    // An upstream port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let stack = stack_with_upstream(port).await;
    let client = logged_in(&stack, "lisi").await;
    let r = get_html(&client, &format!("{}/", stack.url())).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.text().await.unwrap().contains("cannot be reached"));
    stack.stop().await;
}

async fn stack_with_upstream(port: u16) -> dinggate::demo::Stack {
    stack(&format!("upstream: \"http://127.0.0.1:{port}\"\n")).await
}

#[tokio::test]
async fn upgrades_are_bridged_after_101() {
    let stack = stack("").await;
    // A raw TCP client speaks the upgrade, so mint its session directly.
    let org = stack.mock.settings().org.clone();
    let id = dinggate::identity::Identity {
        union_id: org.user("lisi").unwrap().union_id.clone(),
        name: "李四".into(),
        avatar: None,
        email: None,
        corp_id: Some(org.corp_id().to_owned()),
        open_id: None,
        enterprise: None,
    };
    let token = stack.state.sessions.mint(&id, stack.state.clock.now());

    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: _dinggate={token}\r\n\r\n",
        stack.gateway
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    tcp.write_all("ping 你好".as_bytes()).await.unwrap();
    let mut got = vec![0u8; "ping 你好".len()];
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_exact(&mut got))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(got, "ping 你好".as_bytes());
    stack.stop().await;
}

#[tokio::test]
async fn h2c_and_other_upgrades_are_not_tunnelled() {
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let mut h = HeaderMap::new();
    h.insert(
        "connection",
        HeaderValue::from_static("Upgrade, HTTP2-Settings"),
    );
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    h.insert(
        "http2-settings",
        HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
    );
    let echoed = echo(&client, &format!("{}/echo", stack.url()), h).await;
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(echoed["headers"].get(gone).is_none(), "{gone} forwarded");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_request_cannot_be_routed_by_one_host_and_served_as_another() {
    let stack = stack(&format!(
        "{NAMED_HOSTS}routes:\n  - path_prefix: /\n  - host: hr.example.test\n    allow: {{ users: [zhaoliu] }}\n"
    ))
    .await;
    let token = {
        let org = stack.mock.settings().org.clone();
        let u = org.user("wangwu").unwrap();
        stack.state.sessions.mint(
            &dinggate::identity::Identity {
                union_id: u.union_id.clone(),
                name: u.name.clone(),
                avatar: None,
                email: None,
                corp_id: Some(org.corp_id().to_owned()),
                open_id: None,
                enterprise: None,
            },
            stack.state.clock.now(),
        )
    };
    let send = |target: &str, host: &str| {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nCookie: _dinggate={token}\r\nConnection: close\r\n\r\n"
        );
        let addr = stack.gateway;
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            tcp.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    assert!(send("/x", "hr.example.test")
        .await
        .starts_with("HTTP/1.1 403"));
    // Absolute-form target naming another host, Host naming the protected one: refused.
    let r = send("http://other.example/x", "hr.example.test").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // Consistent absolute form is fine, and the upstream sees the host the route was chosen by.
    let r = send("http://other.example/echo", "other.example").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains(r#""host":["other.example"]"#), "{r}");
    assert!(r.contains(r#""x-forwarded-host":["other.example"]"#), "{r}");
    stack.stop().await;
}

#[tokio::test]
async fn health_needs_no_session_and_unknown_gateway_paths_are_404() {
    let stack = stack("").await;
    let client = browser();
    let r = client
        .get(format!("{}/_dinggate/healthz", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = get_html(&client, &format!("{}/_dinggate/nope", stack.url())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client
        .delete(format!("{}/_dinggate/start", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // `/_dinggateX` is not under the prefix: it is a protected app path.
    let r = get_html(&client, &format!("{}/_dinggatex", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn forward_auth_applies_routes_and_policies_to_the_request_the_proxy_names() {
    let stack = stack(&format!(
        "{NAMED_HOSTS}routes:\n  - path_prefix: /\n    public: [/public/]\n  - path_prefix: /admin\n    allow: {{ admins: true }}\n  - host: hr.example.test\n    allow: {{ users: [zhaoliu] }}\n"
    ))
    .await;
    let auth = format!("{}/_dinggate/auth", stack.url());
    let ask = |c: &reqwest::Client, pairs: &[(&str, &str)]| {
        let mut req = c.get(&auth);
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let anon = browser();
    let r = ask(&anon, &[("x-forwarded-uri", "/x?a=1&b=2")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // nginx reads the login URL from a header (its error_page cannot encode `rd` itself).
    assert_eq!(
        r.headers()["x-login-url"],
        "/_dinggate/start?rd=%2Fx%3Fa%3D1%26b%3D2"
    );
    // Traefik and Caddy pass the browser's Accept: send it to the login, back to the original URL.
    let r = ask(&anon, &[("x-forwarded-uri", "/x?y=1"), ("accept", HTML)])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/_dinggate/start?rd=%2Fx%3Fy%3D1");
    // Public paths need no session, and every identity header comes back empty.
    let r = ask(&anon, &[("x-forwarded-uri", "/public/app.css")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-forwarded-user"], "");

    let zhangsan = logged_in(&stack, "zhangsan").await;
    let r = ask(&zhangsan, &[("x-forwarded-uri", "/admin/users")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let user = stack.mock.settings().org.user("zhangsan").unwrap().clone();
    assert_eq!(r.headers()["x-forwarded-user"], user.union_id.as_str());
    assert_eq!(r.headers()["x-dingtalk-userid"], "zhangsan");

    let wangwu = logged_in(&stack, "wangwu").await;
    for pairs in [
        &[("x-forwarded-uri", "/admin/x")][..],
        &[("x-original-uri", "/public/../admin")][..],
        &[
            ("x-forwarded-host", "hr.example.test"),
            ("x-forwarded-uri", "/"),
        ][..],
    ] {
        let r = ask(&wangwu, pairs).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{pairs:?}");
    }
    let r = ask(&wangwu, &[("x-forwarded-uri", "/docs")]).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // 王五 has no e-mail: the header is still there, empty, so a proxy overwrites client copies.
    assert_eq!(r.headers()["x-forwarded-email"], "");
    assert_eq!(r.headers()["x-dingtalk-userid"], "wangwu");
    stack.stop().await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let stack = stack("").await;
    let client = browser();
    let r = client
        .get(format!("{}/", stack.url()))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        // hyper may close the connection instead of answering; either way nothing is served.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    stack.stop().await;
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let stack = stack("server:\n  header_read_timeout: 500ms\n").await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for sent in [
        &b""[..],
        &b"PRI * HTTP/2.0\r\n"[..],
        &preface[..],
        &b"GET / HTTP/1.1\r\nHo"[..],
    ] {
        let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection after {:?} still open after 5 s",
            String::from_utf8_lossy(sent)
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_upstream_gets_the_clients_host_or_its_own_authority() {
    // Default (`pass_host_header: true`): the host the client asked for, as oauth2-proxy does.
    let stack = stack("").await;
    let client = logged_in(&stack, "lisi").await;
    let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
    assert_eq!(
        header(&echoed, "host"),
        Some(stack.gateway.to_string().as_str())
    );
    stack.stop().await;

    // `false`: the upstream URL's own host and port, one Host header, whatever the client sent.
    let stack = common::stack("pass_host_header: false\n").await;
    let client = logged_in(&stack, "lisi").await;
    let echoed = echo(&client, &format!("{}/echo", stack.url()), HeaderMap::new()).await;
    assert_eq!(
        header(&echoed, "host"),
        Some(stack.upstream.to_string().as_str())
    );
    stack.stop().await;
}
