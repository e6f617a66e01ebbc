//! End to end: the upstream connection pool, against an upstream that counts its connections.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream has seen.
#[derive(Default, Debug)]
struct Seen {
    connections: usize,
    /// Connections the gateway closed (the upstream read end-of-stream).
    closed_by_gateway: usize,
    /// Request paths, in order.
    requests: Vec<String>,
}

/// A raw HTTP/1.1 upstream; what it does depends on the request path:
/// `/chunked` answers chunked, `/wait` answers after 200 ms, `/close` answers and then closes the connection without saying
/// so, `/swallow` reads the request and closes without answering, `/big` sends a 4 MB body,
/// anything else answers `ok` with a length and keeps the connection.
async fn upstream() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            shared.lock().unwrap().connections += 1;
            tokio::spawn(serve(conn, shared.clone()));
        }
    });
    (port, seen)
}

async fn serve(mut conn: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) if buf.is_empty() => {
                    seen.lock().unwrap().closed_by_gateway += 1;
                    return;
                }
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + length);
        let path = head.split(' ').nth(1).unwrap().to_owned();
        seen.lock().unwrap().requests.push(path.clone());
        if path == "/wait" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let answer: Vec<u8> = match path.as_str() {
            "/swallow" => return,
            "/chunked" => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    .to_vec()
            }
            "/big" => {
                let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n".to_vec();
                big.resize(big.len() + 4 * 1024 * 1024, b'x');
                big
            }
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        };
        if conn.write_all(&answer).await.is_err() {
            return;
        }
        if path == "/close" {
            return;
        }
    }
}

/// The demo stack with its gateway forwarding to the scripted upstream on `port`.
async fn gateway_to(port: u16, extra_yaml: &str) -> dinggate::demo::Stack {
    stack(&format!(
        "upstream: \"http://127.0.0.1:{port}\"\n{extra_yaml}"
    ))
    .await
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, String) {
    let r = client.get(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn one_upstream_connection_serves_a_run_of_requests() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "").await;
    let client = logged_in(&stack, "lisi").await;
    for path in ["/", "/chunked"].repeat(10) {
        let got = get(&client, format!("{}{path}", stack.url())).await;
        assert_eq!(got, (StatusCode::OK, "ok".to_owned()), "{path}");
    }
    let (connections, requests) = {
        let seen = seen.lock().unwrap();
        (seen.connections, seen.requests.len())
    };
    assert_eq!(requests, 20);
    assert_eq!(
        connections, 1,
        "length-delimited and chunked answers both return the connection"
    );
    stack.stop().await;
}

#[tokio::test]
async fn max_idle_zero_closes_every_upstream_connection_after_its_request() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "upstream_max_idle_per_host: 0\n").await;
    let client = logged_in(&stack, "lisi").await;
    for _ in 0..5 {
        assert_eq!(
            get(&client, format!("{}/", stack.url())).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(seen.lock().unwrap().connections, 5);
    stack.stop().await;
}

#[tokio::test]
async fn connections_idle_longer_than_upstream_idle_timeout_are_closed_not_reused() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "upstream_idle_timeout: 300ms\n").await;
    let client = logged_in(&stack, "lisi").await;
    assert_eq!(
        get(&client, format!("{}/", stack.url())).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&client, format!("{}/", stack.url())).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (connections, closed) = {
        let seen = seen.lock().unwrap();
        (seen.connections, seen.closed_by_gateway)
    };
    assert_eq!(
        (connections, closed),
        (2, 1),
        "the expired connection is closed by the gateway and a new one opened"
    );
    // Within the timeout the connection is reused.
    assert_eq!(
        get(&client, format!("{}/", stack.url())).await.0,
        StatusCode::OK
    );
    assert_eq!(seen.lock().unwrap().connections, 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_connection_left_at_the_bottom_of_a_busy_pool_still_ages_out() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "upstream_idle_timeout: 300ms\n").await;
    let client = logged_in(&stack, "lisi").await;
    // Two at once: two connections, both pooled.
    let url = format!("{}/wait", stack.url());
    let (a, b) = tokio::join!(get(&client, url.clone()), get(&client, url));
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(seen.lock().unwrap().connections, 2);
    // One at a time: the top connection is reused and stays fresh; the other only ages.
    for _ in 0..8 {
        assert_eq!(
            get(&client, format!("{}/", stack.url())).await.0,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (connections, closed) = {
        let seen = seen.lock().unwrap();
        (seen.connections, seen.closed_by_gateway)
    };
    assert_eq!((connections, closed), (2, 1));
    stack.stop().await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "").await;
    let client = logged_in(&stack, "lisi").await;
    for _ in 0..5 {
        let got = get(&client, format!("{}/close", stack.url())).await;
        assert_eq!(got, (StatusCode::OK, "ok".to_owned()));
        // Long enough for the connection's task to read the upstream's FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.lock().unwrap().connections, 5);
    stack.stop().await;
}

#[tokio::test]
async fn a_request_the_upstream_may_have_read_is_never_sent_twice() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "").await;
    let client = logged_in(&stack, "lisi").await;
    // A pooled connection first, so the POST goes over a reused one.
    assert_eq!(
        get(&client, format!("{}/", stack.url())).await.0,
        StatusCode::OK
    );
    let r = client
        .post(format!("{}/swallow", stack.url()))
        .body("transfer 100 yuan")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = seen.lock().unwrap().requests.clone();
    assert_eq!(
        requests.iter().filter(|p| *p == "/swallow").count(),
        1,
        "a request that was written is not retried: {requests:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_connection_with_an_unread_body_is_never_reused() {
    let (port, seen) = upstream().await;
    let stack = gateway_to(port, "").await;
    let client = logged_in(&stack, "lisi").await;
    let r = client
        .get(format!("{}/big", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The client goes away after the head: the rest of the body is still on that upstream
    // connection, and a request sent on it would read those bytes as its answer.
    drop(r);
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = logged_in(&stack, "lisi").await;
    for _ in 0..3 {
        let got = get(&client, format!("{}/", stack.url())).await;
        assert_eq!(got, (StatusCode::OK, "ok".to_owned()));
    }
    assert_eq!(seen.lock().unwrap().connections, 2);
    stack.stop().await;
}
