//! Two gateways sharing one real Redis (`store.url`): sign-outs reach the other replica within a second, a consumed login state is refused everywhere, and a Redis outage keeps people signed in and catches up afterwards.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dinggate::demo::Stack;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use reqwest::header::{ACCEPT, COOKIE};
use reqwest::{Client, StatusCode};

const USER_TOKEN_PATH: &str = "/v1.0/oauth2/userAccessToken";

/// A `redis-server` of the test's own on a free port, stopped on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments (TLS, ACL users).
    args: Vec<String>,
    /// Whether clients must speak TLS (then readiness is the port being open).
    tls: bool,
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
            args: Vec::new(),
            tls: false,
        };
        redis.run();
        Some(redis)
    }

    /// Like [`Redis::start`], serving TLS only (certificate for `localhost` from `pki`), with an
    /// ACL user `gate` (password `s3cret`) that may touch only `dinggate:*` keys and channels.
    fn start_tls(pki: &Pki) -> Option<Redis> {
        let mut redis = Redis::start()?;
        redis.stop();
        redis.tls = true;
        redis.args = [
            "--port",
            "0",
            "--tls-port",
            &redis.port.to_string(),
            "--tls-cert-file",
            &pki.path("server.pem"),
            "--tls-key-file",
            &pki.path("server.key"),
            "--tls-ca-cert-file",
            &pki.path("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--user",
            "gate",
            "on",
            ">s3cret",
            "~dinggate:*",
            "&dinggate:*",
            "+@all",
            "-@dangerous",
        ]
        .map(str::to_owned)
        .to_vec();
        redis.run();
        Some(redis)
    }

    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        if self.args.is_empty() {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
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
        if self.tls {
            return true;
        }
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

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// A browser (cookie jar, `User-Agent: ua`) signed in as `userid`: started on `first`,
/// finished on `last`.
async fn signed_in(a: &Stack, first: &Stack, last: &Stack, userid: &str, ua: &str) -> Client {
    let client = Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(ua)
        .build()
        .unwrap();
    let r = get_html(
        &client,
        &format!("{}/_dinggate/start?rd=/", first.local_url()),
    )
    .await;
    let callback = approve(&client, &location(&r), userid).await;
    let r = get_html(&client, &on(last, a, &callback)).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login as {userid}");
    client
}

/// The sessions list as `client` sees it on `stack` (JSON).
async fn sessions_of(client: &Client, stack: &Stack) -> serde_json::Value {
    let r = get_json(client, &format!("{}/_dinggate/sessions", stack.local_url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Posts the sessions form `end=<what>` from the gateway's own page; the status.
async fn end_session(client: &Client, stack: &Stack, what: &str) -> StatusCode {
    client
        .post(format!("{}/_dinggate/sessions", stack.local_url()))
        .header("origin", stack.url())
        .header(ACCEPT, "application/json")
        .form(&[("end", what)])
        .send()
        .await
        .unwrap()
        .status()
}

async fn status_of(client: &Client, stack: &Stack) -> StatusCode {
    get_json(client, &format!("{}/x", stack.local_url()))
        .await
        .status()
}

async fn until_client_status(client: &Client, stack: &Stack, want: StatusCode) -> Duration {
    let start = Instant::now();
    while status_of(client, stack).await != want {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not {want} within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn the_sessions_page_lists_a_persons_sessions_and_ends_one_on_every_replica() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    let laptop = signed_in(&a, &a, &a, "zhangsan", "curl/8.5.0").await;
    let phone = signed_in(&a, &b, &b, "zhangsan", FIREFOX).await;
    let other = signed_in(&a, &a, &b, "lisi", FIREFOX).await;

    // Both of zhangsan's sessions, on either replica; never lisi's.
    let list = sessions_of(&laptop, &b).await;
    assert_eq!(list["shared"], true);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    let phone_row = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(phone_row["device"], "Firefox on Linux");
    assert_eq!(phone_row["address"], "127.0.0.1");
    assert!(phone_row["last_seen"].as_i64() >= phone_row["signed_in_at"].as_i64());
    let this = sessions.iter().find(|s| s["current"] == true).unwrap();
    assert_eq!(this["device"], "curl");
    let phone_sid = phone_row["sid"].as_str().unwrap().to_owned();

    // Someone else cannot end it, a page of another site cannot either.
    assert_eq!(
        end_session(&other, &a, &phone_sid).await,
        StatusCode::NOT_FOUND
    );
    let cross_site = laptop
        .post(format!("{}/_dinggate/sessions", a.local_url()))
        .header("origin", "https://evil.example")
        .form(&[("end", phone_sid.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(&phone, &b).await, StatusCode::OK);

    // The owner ends it on A: refused on B within a second; the laptop goes on.
    assert_eq!(end_session(&laptop, &a, &phone_sid).await, StatusCode::OK);
    let took = until_client_status(&phone, &b, StatusCode::UNAUTHORIZED).await;
    eprintln!("B refused the ended session after {took:?}");
    assert_eq!(status_of(&laptop, &b).await, StatusCode::OK);
    assert_eq!(status_of(&other, &b).await, StatusCode::OK);
    let list = sessions_of(&laptop, &a).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");

    // The page itself: a row per session, "this browser" marked, one form per row.
    let page = laptop
        .get(format!("{}/_dinggate/sessions", a.local_url()))
        .header(ACCEPT, HTML)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // Personal and with buttons: never cached, never framed (clickjacking), and the POSTs it
    // sends carry the gateway's Origin.
    let h = page.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(h["referrer-policy"], "same-origin");
    let json = get_json(&laptop, &format!("{}/_dinggate/sessions", a.local_url())).await;
    assert_eq!(json.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("This browser"), "{html}");
    assert_eq!(html.matches("name=\"end\"").count(), 2, "one row + end all");

    // End all: this browser is signed out too, everywhere.
    assert_eq!(end_session(&laptop, &a, "all").await, StatusCode::OK);
    until_client_status(&laptop, &b, StatusCode::UNAUTHORIZED).await;
    assert_eq!(status_of(&other, &a).await, StatusCode::OK);
    // Without a session there is no list.
    let anonymous = get_json(&browser(), &format!("{}/_dinggate/sessions", a.local_url())).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn last_seen_is_noted_at_most_every_five_minutes() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    let laptop = signed_in(&a, &a, &a, "zhangsan", FIREFOX).await;
    let first = sessions_of(&laptop, &a).await["sessions"][0].clone();
    assert_eq!(first["last_seen"], first["signed_in_at"]);
    for _ in 0..3 {
        assert_eq!(status_of(&laptop, &a).await, StatusCode::OK);
    }
    a.state.clock.advance(301);
    assert_eq!(status_of(&laptop, &a).await, StatusCode::OK);
    let start = Instant::now();
    loop {
        let seen = sessions_of(&laptop, &b).await["sessions"][0]["last_seen"]
            .as_i64()
            .unwrap();
        if seen >= first["signed_in_at"].as_i64().unwrap() + 300 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "last seen not noted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn with_the_memory_store_the_sessions_page_shows_and_ends_this_browsers_session() {
    let a = stack("").await;
    let laptop = signed_in(&a, &a, &a, "zhangsan", FIREFOX).await;
    let list = sessions_of(&laptop, &a).await;
    assert_eq!(list["shared"], false);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["current"], true);
    let sid = sessions[0]["sid"].as_str().unwrap().to_owned();
    assert_eq!(
        end_session(&laptop, &a, "not-a-session").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(end_session(&laptop, &a, &sid).await, StatusCode::OK);
    assert_eq!(status_of(&laptop, &a).await, StatusCode::UNAUTHORIZED);
    a.stop().await;
}

/// A configuration file for `dinggate sessions` naming `redis` (and, if given, nothing else
/// the gateways need: the command only talks to the store).
fn admin_config(dir: &std::path::Path, store: Option<&Redis>) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    let store = store
        .map(|r| format!("store:\n  url: \"{}\"\n", r.url()))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            r#"
public_url: "https://gate.example.test"
upstream: "http://127.0.0.1:9"
dingtalk:
  client_id: "dingadmin"
  client_secret: "admin-secret"
  corp_id: "dingcorp"
session:
  signing_key: "fleet-key-0123456789abcdef0123456789abcdef"
{store}"#
        ),
    )
    .unwrap();
    path
}

/// A fresh directory of this test process for `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dinggate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sessions_command(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    dinggate()
        .arg("sessions")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("dinggate runs")
}

#[tokio::test]
async fn dinggate_sessions_lists_and_revokes_a_person_on_every_replica() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, "").await;
    let laptop = signed_in(&a, &a, &a, "zhangsan", FIREFOX).await;
    let phone = signed_in(&a, &b, &b, "zhangsan", "curl/8.5.0").await;
    let other = signed_in(&a, &a, &a, "lisi", FIREFOX).await;
    let dir = scratch("revoke");
    let config = admin_config(&dir, Some(&redis));

    let out = sessions_command(&config, &["list", "--user", "zhangsan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 active session(s)"), "{text}");
    assert!(
        text.contains("Firefox on Linux") && text.contains("curl"),
        "{text}"
    );
    let union_id = a
        .mock
        .settings()
        .org
        .user("zhangsan")
        .unwrap()
        .union_id
        .clone();
    let by_union_id = sessions_command(&config, &["list", "--user", &union_id]);
    assert!(String::from_utf8_lossy(&by_union_id.stdout).contains("2 active session(s)"));

    let out = sessions_command(&config, &["revoke", "--user", "zhangsan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&union_id) && text.contains("(2 recorded)"),
        "{text}"
    );
    for (client, stack) in [(&laptop, &a), (&laptop, &b), (&phone, &a), (&phone, &b)] {
        until_client_status(client, stack, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(status_of(&other, &b).await, StatusCode::OK, "only zhangsan");
    let out = sessions_command(&config, &["list", "--user", "zhangsan"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 active session(s)"));
    // Signing in again afterwards works (from the next second on: cut-offs are whole seconds,
    // and a login in the same second as the revocation is counted as before it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = signed_in(&a, &b, &a, "zhangsan", FIREFOX).await;
    assert_eq!(status_of(&again, &b).await, StatusCode::OK);
    b.stop().await;
    a.stop().await;
}

#[test]
fn dinggate_sessions_without_a_store_says_why_and_fails() {
    let dir = scratch("nostore");
    let config = admin_config(&dir, None);
    let out = sessions_command(&config, &["revoke", "--user", "zhangsan"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.url is not set"), "{err}");
}

const KEY_1: &str = "rotation-key-one-0123456789abcdef0123456789";
const KEY_2: &str = "rotation-key-two-0123456789abcdef0123456789";

fn keys(redis: &Redis, signing: &str, previous: &[&str]) -> String {
    format!(
        "store:\n  url: \"{}\"\n  timeout: 300ms\nsession:\n  signing_key: \"{signing}\"\n  previous_signing_keys: {previous:?}\n",
        redis.url()
    )
}

#[tokio::test]
async fn a_session_key_rotation_rolls_out_across_replicas_without_signing_anyone_out() {
    let Some(redis) = Redis::start() else { return };
    let (a, b) = fleet(&redis, &keys(&redis, KEY_1, &[])).await;
    let old = signed_in(&a, &b, &b, "zhangsan", FIREFOX).await;

    // Why step 1 exists: a replica that switched first mints sessions the others cannot check.
    a.reload(&keys(&redis, KEY_2, &[KEY_1])).unwrap();
    let early = signed_in(&a, &a, &a, "lisi", FIREFOX).await;
    assert_eq!(status_of(&early, &b).await, StatusCode::UNAUTHORIZED);
    a.reload(&keys(&redis, KEY_1, &[])).unwrap();

    // Step 1, on every replica: the new key verifies but does not sign yet.
    for r in [&a, &b] {
        r.reload(&keys(&redis, KEY_1, &[KEY_2])).unwrap();
    }
    // Step 2, one replica after the other: whichever signs, every replica verifies.
    a.reload(&keys(&redis, KEY_2, &[KEY_1])).unwrap();
    let new = signed_in(&a, &a, &a, "wangwu", FIREFOX).await;
    for r in [&a, &b] {
        assert_eq!(status_of(&new, r).await, StatusCode::OK);
        assert_eq!(status_of(&old, r).await, StatusCode::OK);
    }
    b.reload(&keys(&redis, KEY_2, &[KEY_1])).unwrap();
    let newer = signed_in(&a, &b, &b, "chenxiaoming", FIREFOX).await;
    for r in [&a, &b] {
        for client in [&old, &new, &newer] {
            assert_eq!(status_of(client, r).await, StatusCode::OK);
        }
    }
    // Step 3 (after session.lifetime): the old key goes; its sessions end everywhere.
    for r in [&a, &b] {
        r.reload(&keys(&redis, KEY_2, &[])).unwrap();
        assert_eq!(status_of(&old, r).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&newer, r).await, StatusCode::OK);
    }
    b.stop().await;
    a.stop().await;
}

/// A test CA and a server certificate for `localhost`, as files.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = scratch(&format!("pki-{tag}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("dinggate store test CA {tag}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

#[tokio::test]
async fn a_fleet_shares_through_a_tls_redis_with_a_least_privilege_acl_user() {
    let pki = Pki::new("ok");
    let Some(redis) = Redis::start_tls(&pki) else {
        return;
    };
    let store = format!(
        "store:\n  url: \"rediss://gate:s3cret@localhost:{}/0\"\n  timeout: 1s\n  ca_file: \"{}\"\n",
        redis.port,
        pki.path("ca.pem")
    );
    let a = stack(&store).await;
    let b = a.replica("").await.unwrap();
    following(&[&a, &b]).await;
    // Everything shared goes through the TLS connection under the restricted user: a login
    // (state claim, app token, directory, budget, session record) across replicas, the list,
    // and a sign-out reaching the other replica.
    let laptop = signed_in(&a, &a, &b, "zhangsan", FIREFOX).await;
    let phone = signed_in(&a, &b, &a, "zhangsan", FIREFOX).await;
    assert_eq!(
        sessions_of(&laptop, &b).await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(a.mock.call_count(APP_TOKEN_PATH), 1);
    assert_eq!(end_session(&laptop, &a, "all").await, StatusCode::OK);
    until_client_status(&phone, &b, StatusCode::UNAUTHORIZED).await;
    assert!(connected(&a) && connected(&b));
    b.stop().await;
    a.stop().await;

    // A server whose certificate another CA signed is not talked to.
    let other = Pki::new("other");
    let wrong = store.replace(&pki.path("ca.pem"), &other.path("ca.pem"));
    let c = stack(&wrong).await;
    let start = Instant::now();
    while c.live.load().store.as_ref().unwrap().health().is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "connected anyway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, report) = dinggate::admin::readiness(&c.live.load()).await;
    let detail = report["checks"]["store"]["detail"].as_str().unwrap();
    assert!(detail.contains("redis unreachable"), "{detail}");
    c.stop().await;
}
