//! Adversarial: connection limits (idle timeout, connection cap, HTTP/2 streams) and login rate limits.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dinggate::demo::Stack;
use dinggate::server::{serve_http, ServerLimits};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::header::{ACCEPT, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{self, HTML};

const USER_ACCESS_TOKEN: &str = "/v1.0/oauth2/userAccessToken";

/// A session cookie for `lisi`, minted directly (raw clients cannot run the login).
fn session_token(stack: &Stack) -> String {
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
    stack.state.sessions.mint(&id, stack.state.clock.now())
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns its head and body.
async fn read_response(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            return (head, buf[end + 4..end + 4 + len].to_vec());
        }
    }
}

/// Waits for the server to close `tcp`; returns how long that took.
async fn time_to_close(tcp: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(within, tcp.read(&mut byte))
        .await
        .unwrap_or_else(|_| panic!("connection still open after {within:?}"))
        .unwrap_or(0);
    assert_eq!(n, 0, "no data expected, only the close");
    started.elapsed()
}

fn healthz(stack: &Stack) -> String {
    format!(
        "GET /_dinggate/healthz HTTP/1.1\r\nHost: {}\r\n\r\n",
        stack.gateway
    )
}

#[tokio::test]
async fn h2c_client_that_answers_pings_is_sent_goaway_after_idle_timeout() {
    let stack = common::stack("server:\n  idle_timeout: 1s\n").await;
    let tcp = TcpStream::connect(stack.gateway).await.unwrap();
    // The attacker's client: HTTP/2 with prior knowledge, pinging (and answering pings) all
    // the time, so only a request-level idle timer can end the connection.
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/_dinggate/healthz", stack.gateway))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let idle_from = Instant::now();

    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle HTTP/2 connection is closed after idle_timeout");
    ended
        .unwrap()
        .expect("closed gracefully (GOAWAY), not reset");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "not before idle_timeout: {idle:?}"
    );
    assert!(sender.is_closed() || sender.ready().await.is_err());
    stack.stop().await;
}

#[tokio::test]
async fn http1_keepalive_connection_is_closed_after_idle_timeout() {
    let stack = common::stack("server:\n  idle_timeout: 1s\n  header_read_timeout: 10s\n").await;
    let mut tcp = TcpStream::connect(stack.gateway).await.unwrap();
    tcp.write_all(healthz(&stack).as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    let took = time_to_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900),
        "not before idle_timeout: {took:?}"
    );
    stack.stop().await;
}

/// hyper's HTTP/1 header_read_timeout also runs while a keep-alive connection waits for its
/// next request head (checked here rather than assumed): an idle HTTP/1 connection lives at
/// most min(idle_timeout, header_read_timeout).
#[tokio::test]
async fn http1_header_read_timeout_also_bounds_the_keepalive_wait() {
    let stack = common::stack("server:\n  idle_timeout: 1h\n  header_read_timeout: 1s\n").await;
    let mut tcp = TcpStream::connect(stack.gateway).await.unwrap();
    tcp.write_all(healthz(&stack).as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut tcp).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    time_to_close(&mut tcp, Duration::from_secs(5)).await;
    stack.stop().await;
}

/// An upstream whose response body trickles out over `chunks * every`.
async fn trickling_upstream(chunks: usize, every: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = move |_req: Request<hyper::body::Incoming>, _peer| async move {
        let stream = futures_util::stream::unfold(0usize, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(every).await;
            let frame = Frame::data(Bytes::from(format!("chunk {i}\n")));
            Some((Ok::<_, Infallible>(frame), i + 1))
        });
        Ok::<_, Infallible>(Response::new(StreamBody::new(Box::pin(stream))))
    };
    tokio::spawn(serve_http(
        listener,
        ServerLimits::default(),
        handler,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn streaming_response_longer_than_idle_timeout_is_not_cut() {
    let upstream = trickling_upstream(5, Duration::from_millis(500)).await;
    let stack = common::stack(&format!(
        "upstream: \"http://{upstream}\"\nserver:\n  idle_timeout: 1s\n"
    ))
    .await;
    let token = session_token(&stack);
    let expected: String = (0..5).map(|i| format!("chunk {i}\n")).collect();

    // HTTP/1.1 (chunked, 2.5 s with nothing but the body moving).
    let started = Instant::now();
    let body = common::browser()
        .get(format!("{}/stream", stack.url()))
        .header("cookie", format!("_dinggate={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .expect("the whole body arrives");
    assert_eq!(body, expected);
    assert!(started.elapsed() >= Duration::from_secs(2));

    // HTTP/2: the same stream on an h2c connection.
    let tcp = TcpStream::connect(stack.gateway).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/stream", stack.gateway))
        .header("cookie", format!("_dinggate={token}"))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("h2 body not cut");
    assert_eq!(body.to_bytes(), expected.as_bytes());
    stack.stop().await;
}

#[tokio::test]
async fn websocket_tunnel_outlives_idle_timeout() {
    let stack = common::stack("server:\n  idle_timeout: 1s\n").await;
    let token = session_token(&stack);
    let mut tcp = TcpStream::connect(stack.gateway).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: _dinggate={token}\r\n\r\n",
        stack.gateway
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tcp.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut got))
        .await
        .expect("echo after idle_timeout")
        .unwrap();
    assert_eq!(&got, b"still here");
    stack.stop().await;
}

#[tokio::test]
async fn max_connections_holds_new_connections_until_one_closes() {
    let stack = common::stack("server:\n  max_connections: 2\n").await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(stack.gateway).await.unwrap();
        tcp.write_all(healthz(&stack).as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut tcp).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        open.push(tcp);
    }
    // The third connection completes in the kernel backlog, but is not served...
    let mut third = TcpStream::connect(stack.gateway).await.unwrap();
    third.write_all(healthz(&stack).as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(700), third.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "the N+1th connection must wait while N are open"
    );
    // ...until one of the others closes.
    drop(open.pop());
    let (head, body) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third))
        .await
        .expect("served once a slot frees");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
    stack.stop().await;
}

/// Reads HTTP/2 frames until the server's first SETTINGS frame; returns its parameters.
async fn server_settings(tcp: &mut TcpStream) -> Vec<(u16, u32)> {
    loop {
        let mut header = [0u8; 9];
        tcp.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        // Type 0x4 = SETTINGS, flag 0x1 = ACK (an ACK carries no parameters).
        if header[3] == 0x4 && header[4] & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|p| {
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                    )
                })
                .collect();
        }
    }
}

#[tokio::test]
async fn h2_settings_advertise_max_concurrent_streams() {
    let stack =
        common::stack("server:\n  max_concurrent_streams: 7\n  header_read_timeout: 1s\n").await;
    let mut tcp = TcpStream::connect(stack.gateway).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
    let settings = tokio::time::timeout(Duration::from_secs(5), server_settings(&mut tcp))
        .await
        .expect("server SETTINGS");
    // 0x3 = SETTINGS_MAX_CONCURRENT_STREAMS.
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
    stack.stop().await;
}

/// A cookie-keeping client whose connections come from `ip` (any 127.0.0.0/8 address works
/// on Linux loopback).
fn client_from(ip: &str) -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

const LOGIN_LIMIT: &str = r#"
rate_limit:
  enabled: true
  login:
    per_second: 0.01
    burst: 3
"#;

#[tokio::test]
async fn login_rate_limit_answers_429_per_client_address() {
    let stack = common::stack(LOGIN_LIMIT).await;
    let start = format!("{}/_dinggate/start?rd=/", stack.url());
    let a = client_from("127.0.0.1");
    for _ in 0..3 {
        let r = a.get(&start).header(ACCEPT, HTML).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND);
    }
    let r = a.get(&start).header(ACCEPT, HTML).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    assert!(r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/html")));
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Too many sign-in attempts"));

    // API clients get JSON, and every login endpoint shares the bucket.
    for path in [
        "/_dinggate/callback?state=x&code=y",
        "/_dinggate/sign_in",
        "/_dinggate/inapp",
    ] {
        let r = common::get_json(&a, &format!("{}{path}", stack.url())).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(r.headers().contains_key(RETRY_AFTER));
        let json: serde_json::Value = r.json().await.unwrap();
        assert_eq!(json["error"], "rate_limited");
    }
    let r = a
        .post(format!("{}/_dinggate/inapp/callback", stack.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Protected pages and health checks are not login requests.
    let r = common::get_json(&a, &format!("{}/_dinggate/healthz", stack.url())).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Another address is unaffected.
    let b = client_from("127.0.0.2");
    let r = b.get(&start).header(ACCEPT, HTML).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    stack.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_address_it_appended_is_limited() {
    let stack = common::stack(&format!("{LOGIN_LIMIT}trusted_proxies: [127.0.0.1]\n")).await;
    let start = format!("{}/_dinggate/start?rd=/", stack.url());
    let proxy = client_from("127.0.0.1");
    // The client controls everything left of the proxy's entry; rotating it changes nothing.
    for i in 0..4 {
        let r = proxy
            .get(&start)
            .header(ACCEPT, HTML)
            .header("x-forwarded-for", format!("10.9.9.{i}, 203.0.113.7"))
            .send()
            .await
            .unwrap();
        let want = if i < 3 {
            StatusCode::FOUND
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(r.status(), want, "request {i}");
    }
    // A different real client behind the same proxy has its own bucket.
    let r = proxy
        .get(&start)
        .header(ACCEPT, HTML)
        .header("x-forwarded-for", "203.0.113.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    // IPv6 clients are counted per /64.
    for i in 0..4 {
        let r = proxy
            .get(&start)
            .header(ACCEPT, HTML)
            .header("x-forwarded-for", format!("2001:db8:1:2::{i:x}"))
            .send()
            .await
            .unwrap();
        let want = if i < 3 {
            StatusCode::FOUND
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(r.status(), want, "IPv6 request {i}");
    }
    // An entry that is not an address is refused, not replaced by the proxy's own address.
    let r = proxy
        .get(&start)
        .header(ACCEPT, HTML)
        .header("x-forwarded-for", "203.0.113.9, unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    stack.stop().await;
}

/// Starts a login from `client` and comes back with a made-up code; returns the callback status.
async fn start_and_forge_callback(stack: &Stack, client: &Client, n: usize) -> StatusCode {
    let start = format!("{}/_dinggate/start?rd=/", stack.url());
    let r = client
        .get(&start)
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::FOUND {
        return r.status();
    }
    let authorize = url::Url::parse(&common::location(&r)).unwrap();
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state in the authorize URL");
    let callback = format!(
        "{}/_dinggate/callback?state={state}&authCode=madeup{n:04}&code=madeup{n:04}",
        stack.url()
    );
    let r = client
        .get(&callback)
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    r.status()
}

#[tokio::test]
async fn one_address_makes_at_most_its_burst_of_dingtalk_calls() {
    let stack = common::stack(
        "rate_limit:\n  enabled: true\n  login:\n    per_second: 0.01\n    burst: 4\n",
    )
    .await;
    let client = client_from("127.0.0.1");
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(start_and_forge_callback(&stack, &client, n).await);
    }
    // start + callback take two tokens: two made-up codes reach DingTalk, then 429.
    assert_eq!(stack.mock.call_count(USER_ACCESS_TOKEN), 2, "{statuses:?}");
    assert_eq!(&statuses[..2], &[StatusCode::BAD_REQUEST; 2]);
    assert!(statuses[2..]
        .iter()
        .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    stack.stop().await;
}

#[tokio::test]
async fn callback_burst_from_many_addresses_is_capped_gateway_wide() {
    let stack = common::stack(
        "rate_limit:\n  enabled: true\n  code_exchange:\n    per_second: 0.01\n    burst: 3\n",
    )
    .await;
    let mut statuses = Vec::new();
    for n in 0..8 {
        let client = client_from(&format!("127.0.0.{}", 10 + n));
        statuses.push(start_and_forge_callback(&stack, &client, n).await);
    }
    assert_eq!(stack.mock.call_count(USER_ACCESS_TOKEN), 3, "{statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        5,
        "{statuses:?}"
    );

    // A forged state costs nothing, so it cannot spend the shared budget either.
    let calls = stack.mock.call_count(USER_ACCESS_TOKEN);
    let r = client_from("127.0.0.50")
        .get(format!(
            "{}/_dinggate/callback?state=forged&code=madeup",
            stack.url()
        ))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(stack.mock.call_count(USER_ACCESS_TOKEN), calls);
    stack.stop().await;
}
