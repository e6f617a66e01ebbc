//! Two gateways sharing one real Redis (`store.url`): sign-outs reach the other replica within a second, a consumed login state is refused everywhere, and a Redis outage keeps people signed in and catches up afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dinggate::demo::Stack;
use reqwest::header::{ACCEPT, COOKIE};
use reqwest::{Client, StatusCode};

const USER_TOKEN_PATH: &str = "/v1.0/oauth2/userAccessToken";

/// A `redis-server` of the test's own on a free port, stopped on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// `None` when redis-server is not installed, unless REQUIRE_REDIS is set (CI sets it, so
    /// there these tests cannot pass without running).
    fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("REQUIRE_REDIS").is_none(),
                "REQUIRE_REDIS is set but redis-server is not installed"
            );
            eprintln!("skipped: redis-server is not installed");
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.run();
        Some(redis)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pong() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway of a two-replica fleet: the shared signing key, issuer and store.
async fn replica(redis: &Redis) -> Stack {
    stack(&format!(
        r#"
session:
  signing_key: "fleet-key-0123456789abcdef0123456789abcdef"
  issuer: "https://gate.example.test"
store:
  url: "{}"
  timeout: 300ms
"#,
        redis.url()
    ))
    .await
}

async fn status(stack: &Stack, cookie: &str) -> StatusCode {
    Client::new()
        .get(format!("{}/x", stack.url()))
        .header(ACCEPT, "application/json")
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
}

async fn sign_out(stack: &Stack, cookie: &str) {
    let r = Client::new()
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Waits until `stack` answers `want` for `cookie`; returns how long it took.
async fn until_status(stack: &Stack, cookie: &str, want: StatusCode, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if status(stack, cookie).await == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both replicas follow the store (their first load is done).
async fn following(stacks: &[&Stack]) {
    for s in stacks {
        let start = Instant::now();
        while s.live.load().store.as_ref().unwrap().health().is_err() || !connected(s) {
            assert!(start.elapsed() < Duration::from_secs(10), "not following");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The subscription is set up right after the connection is: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn connected(stack: &Stack) -> bool {
    stack
        .live
        .load()
        .metrics
        .encode(false)
        .contains("dinggate_store_up 1")
}

#[tokio::test]
async fn a_sign_out_on_one_replica_is_refused_on_the_other_within_a_second() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    following(&[&a, &b]).await;
    let cookie = session_cookie(&a, "/", "zhangsan").await;
    assert_eq!(
        status(&b, &cookie).await,
        StatusCode::OK,
        "one fleet: B honours A's session"
    );
    let other = session_cookie(&a, "/", "lisi").await;
    sign_out(&a, &cookie).await;
    assert_eq!(status(&a, &cookie).await, StatusCode::UNAUTHORIZED);
    let took = until_status(
        &b,
        &cookie,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    eprintln!("B refused the signed-out session after {took:?}");
    assert_eq!(
        status(&b, &other).await,
        StatusCode::OK,
        "only that session ended"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_login_state_consumed_on_one_replica_is_refused_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    following(&[&a, &b]).await;
    let captured = CapturedCallback::capture(&a, "wangwu").await;
    let replay_on_b = captured.url.replacen(&a.url(), &b.url(), 1);
    assert_eq!(captured.send_to(&captured.url).await, StatusCode::FOUND);
    let replay = captured.send_to(&replay_on_b).await;
    assert_eq!(replay, StatusCode::FORBIDDEN, "replayed on another replica");
    assert_eq!(
        b.mock.call_count(USER_TOKEN_PATH),
        0,
        "before any DingTalk call"
    );
    assert!(b
        .live
        .load()
        .metrics
        .encode(false)
        .contains(r#"dinggate_logins_total{outcome="replayed_state"} 1"#));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_redis_down_people_stay_signed_in_logins_work_and_sign_outs_catch_up() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    following(&[&a, &b]).await;
    let cookie = session_cookie(&a, "/", "zhangsan").await;
    assert_eq!(status(&b, &cookie).await, StatusCode::OK);
    // Signed out before the outage: Redis held it, and will lose it when it restarts empty.
    let early = session_cookie(&a, "/", "chenxiaoming").await;
    sign_out(&a, &early).await;
    until_status(&b, &early, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;

    redis.stop();
    // Signed-in people keep working on both, without waiting for Redis.
    let start = Instant::now();
    assert_eq!(status(&a, &cookie).await, StatusCode::OK);
    assert_eq!(status(&b, &cookie).await, StatusCode::OK);
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    // Logins work with this replica's own replay protection.
    let fresh = session_cookie(&b, "/", "lisi").await;
    assert_eq!(status(&b, &fresh).await, StatusCode::OK);
    // A sign-out holds at once where it was made…
    sign_out(&a, &cookie).await;
    assert_eq!(status(&a, &cookie).await, StatusCode::UNAUTHORIZED);
    // …and the outage is visible.
    let metrics = a.live.load().metrics.encode(false);
    assert!(metrics.contains("dinggate_store_up 0"), "{metrics}");
    let (_, report) = dinggate::admin::readiness(&a.live.load()).await;
    let detail = report["checks"]["store"]["detail"].as_str().unwrap();
    assert!(detail.contains("redis unreachable"), "{detail}");
    assert_eq!(
        report["ready"], true,
        "the replica stays in service: {report}"
    );

    // Redis returns (empty: it kept nothing): A sends what it kept, B learns it.
    redis.run();
    let took = until_status(
        &b,
        &cookie,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(15),
    )
    .await;
    eprintln!("B refused the session signed out during the outage {took:?} after Redis returned");
    assert_eq!(status(&b, &fresh).await, StatusCode::OK);
    // A replica started now learns both sign-outs: the others wrote back what they hold.
    let c = replica(&redis).await;
    until_status(
        &c,
        &early,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(10),
    )
    .await;
    until_status(
        &c,
        &cookie,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status(&c, &fresh).await, StatusCode::OK);
    c.stop().await;
    let start = Instant::now();
    while !connected(&a) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "A reports Redis back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
