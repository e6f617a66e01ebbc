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

/// Two replicas of one fleet: one mock DingTalk, one upstream, one `public_url` (A's address,
/// standing in for the load balancer), one Redis; `extra` is merged over both.
async fn fleet(redis: &Redis, extra: &str) -> (Stack, Stack) {
    let a = stack(&format!(
        "store:\n  url: \"{}\"\n  timeout: 300ms\n{extra}",
        redis.url()
    ))
    .await;
    let b = a.replica("").await.expect("replica starts");
    following(&[&a, &b]).await;
    (a, b)
}

/// `url`, as the load balancer would have sent it to `to` instead.
fn on(to: &Stack, from: &Stack, url: &str) -> String {
    url.replacen(&from.local_url(), &to.local_url(), 1)
}

fn logins(stack: &Stack) -> String {
    let metrics = stack.live.load().metrics.encode(false);
    metrics
        .lines()
        .find(|l| l.starts_with(r#"dinggate_logins_total{outcome="success"}"#))
        .unwrap_or("none")
        .to_owned()
}

#[tokio::test]
async fn a_login_started_on_one_replica_finishes_on_the_other() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    let client = browser();
    let authorize = begin_login(&a, &client, "/report?q=1").await;
    let callback = approve(&client, &authorize, "zhangsan").await;
    assert!(callback.starts_with(&a.local_url()), "{callback}");
    let r = get_html(&client, &on(&b, &a, &callback)).await;
    assert_eq!(r.status(), StatusCode::FOUND, "B finishes A's login");
    assert_eq!(location(&r), "/report?q=1");
    assert!(logins(&b).ends_with(" 1"), "{}", logins(&b));
    assert_eq!(logins(&a), "none", "A only started it");
    let echoed = echo(
        &client,
        &format!("{}/report", a.local_url()),
        Default::default(),
    )
    .await;
    assert_eq!(header(&echoed, "x-dingtalk-userid"), Some("zhangsan"));
    // The state is spent fleet-wide: the same callback now fails on A too.
    let again = get_html(&client, &callback).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    b.stop().await;
    a.stop().await;
}

const APP_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";
const USER_DETAIL_PATH: &str = "/topapi/v2/user/get";
const MEMBERS: [&str; 4] = ["zhangsan", "lisi", "wangwu", "chenxiaoming"];

/// A whole login as `userid` in a fresh browser: started on `first`, finished on `last` (the
/// load balancer may send the callback to any replica); the callback's status.
async fn login_across(a: &Stack, first: &Stack, last: &Stack, userid: &str) -> StatusCode {
    let client = browser();
    let r = get_html(
        &client,
        &format!("{}/_dinggate/start?rd=/", first.local_url()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND, "start redirects to DingTalk");
    let callback = approve(&client, &location(&r), userid).await;
    get_html(&client, &on(last, a, &callback)).await.status()
}

/// `n` logins at once, started and finished on the replicas in turn (`fleet` may be one gateway).
async fn burst(fleet: &[&Stack], n: usize) -> Vec<StatusCode> {
    let a = fleet[0];
    let logins = (0..n).map(|i| {
        let first = fleet[i % fleet.len()];
        let last = fleet[(i + 1) % fleet.len()];
        login_across(a, first, last, MEMBERS[i % MEMBERS.len()])
    });
    futures_util::future::join_all(logins).await
}

fn metric(stack: &Stack, series: &str) -> f64 {
    let metrics = stack.live.load().metrics.encode(false);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn thirty_concurrent_logins_across_the_fleet_make_one_app_token_fetch() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    let results = burst(&[&a, &b], 30).await;
    assert!(
        results.iter().all(|s| *s == StatusCode::FOUND),
        "{results:?}"
    );
    assert_eq!(
        a.mock.call_count(APP_TOKEN_PATH),
        1,
        "one fetch for the fleet"
    );
    let fetched = |s: &Stack| {
        metric(
            s,
            r#"dinggate_dingtalk_app_token_refreshes_total{result="ok"}"#,
        )
    };
    assert_eq!(fetched(&a) + fetched(&b), 1.0);
    // The token is sealed in Redis: the key exists, and its value is not the token.
    let stored = redis_cli(&redis, &["KEYS", "dinggate:apptoken:*"]);
    assert_eq!(stored.lines().count(), 1, "{stored}");
    let value = redis_cli(&redis, &["GET", stored.trim()]);
    assert!(!value.contains("app-token"), "sealed: {value}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_directory_answer_is_fetched_once_for_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    assert_eq!(
        login_across(&a, &a, &a, "zhangsan").await,
        StatusCode::FOUND
    );
    assert_eq!(a.mock.call_count(USER_DETAIL_PATH), 1);
    assert_eq!(
        login_across(&a, &b, &b, "zhangsan").await,
        StatusCode::FOUND
    );
    assert_eq!(
        a.mock.call_count(USER_DETAIL_PATH),
        1,
        "B used A's answer from the store"
    );
    assert_eq!(
        metric(&b, r#"dinggate_directory_lookups_total{result="shared"}"#),
        1.0
    );
    // An answer written by someone who does not hold the app secret is not believed.
    for key in redis_cli(&redis, &["KEYS", "dinggate:dir:*"]).lines() {
        redis_cli(&redis, &["SET", key, "forged"]);
    }
    let c = a.replica("").await.unwrap();
    following(&[&c]).await;
    assert_eq!(
        login_across(&a, &c, &c, "zhangsan").await,
        StatusCode::FOUND
    );
    assert_eq!(
        a.mock.call_count(USER_DETAIL_PATH),
        2,
        "asked DingTalk again"
    );
    c.stop().await;
    b.stop().await;
    a.stop().await;
}

/// Logins in a burst across `fleet` with `dingtalk.call_budget: 5`: every one succeeds, and
/// in no second did the mock receive more than 5 calls to any one API.
async fn burst_within_budget(fleet: &[&Stack]) {
    let started = Instant::now();
    let results = burst(fleet, 12).await;
    assert!(
        results.iter().all(|s| *s == StatusCode::FOUND),
        "{results:?}"
    );
    let calls = fleet[0].mock.calls();
    let mut busiest = 0;
    for path in [USER_TOKEN_PATH, "/v1.0/contact/users/me"] {
        let mut at: Vec<_> = calls
            .iter()
            .filter(|c| c.path == path)
            .map(|c| c.at)
            .collect();
        assert_eq!(at.len(), 12, "{path}");
        at.sort();
        for (i, t) in at.iter().enumerate() {
            let window = at[i..]
                .iter()
                .take_while(|u| u.duration_since(*t).unwrap() < Duration::from_secs(1))
                .count();
            assert!(window <= 5, "{window} calls to {path} within one second");
            busiest = busiest.max(window);
        }
    }
    assert_eq!(busiest, 5, "the burst used the whole budget");
    assert!(started.elapsed() >= Duration::from_secs(2), "paced");
    let waited: f64 = fleet
        .iter()
        .map(|s| {
            metric(
                s,
                r#"dinggate_dingtalk_budget_waits_total{api="user_access_token"}"#,
            )
        })
        .sum();
    assert!(waited >= 6.0, "{waited} waits counted");
}

const BUDGET_5: &str = "dingtalk:\n  call_budget: 5\n";

#[tokio::test]
async fn a_burst_of_logins_across_the_fleet_stays_within_the_call_budget() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, BUDGET_5).await;
    burst_within_budget(&[&a, &b]).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn one_replica_without_a_store_keeps_its_own_call_budget() {
    let a = stack(BUDGET_5).await;
    burst_within_budget(&[&a]).await;
    a.stop().await;
}

#[tokio::test]
async fn a_call_the_budget_cannot_fit_within_the_timeout_gets_an_actionable_503() {
    let a = stack("dingtalk:\n  call_budget: 1\n  timeout: 1s\n").await;
    let results = burst(&[&a], 3).await;
    let busy = results
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(busy, 2, "{results:?}");
    assert!(results.contains(&StatusCode::FOUND));
    assert_eq!(
        a.mock.call_count(USER_TOKEN_PATH),
        1,
        "refused calls are not made"
    );
    assert_eq!(
        metric(
            &a,
            r#"dinggate_dingtalk_budget_refusals_total{api="user_access_token"}"#
        ),
        2.0
    );
    a.stop().await;
}

/// Runs `redis-cli` against the test's Redis; its output.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn when_the_replica_fetching_the_token_fails_another_takes_over_at_once() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    a.mock
        .inject_fault(APP_TOKEN_PATH, dinggate::mock::Fault::ServerError, 1);
    let started = Instant::now();
    let results = burst(&[&a, &b], 2).await;
    let took = started.elapsed();
    assert!(results.contains(&StatusCode::FOUND), "{results:?}");
    assert!(
        results.contains(&StatusCode::BAD_GATEWAY),
        "the failed fetch's login: {results:?}"
    );
    assert_eq!(a.mock.call_count(APP_TOKEN_PATH), 2);
    // The other replica took the lock when it was released, instead of waiting out
    // dingtalk.timeout (5 s) for a token that was never coming.
    assert!(took < Duration::from_secs(4), "{took:?}");
    b.stop().await;
    a.stop().await;
}
