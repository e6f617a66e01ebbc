//! End to end: configuration reloads under traffic (a route added, a policy changed, signing keys rotated, a broken file refused), through the real gateway.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dinggate::demo::Stack;
use dinggate::reload::ReloadError;
use reqwest::header::{ACCEPT, COOKIE};
use reqwest::{Client, StatusCode};

/// One request of the background traffic: when it started and ended, and its status (or the
/// transport error).
#[derive(Debug)]
struct Sample {
    started: Instant,
    ended: Instant,
    status: Result<u16, String>,
}

/// Clients requesting one URL in a loop until [`Traffic::finish`].
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

/// `tasks` loops of `GET url` with `cookie` (sent by hand: nothing the responses set is kept,
/// so every request carries the same session), each over its own keep-alive connection.
fn traffic(url: String, cookie: Option<String>, tasks: usize) -> Traffic {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..tasks)
        .map(|_| {
            let (url, cookie, stop) = (url.clone(), cookie.clone(), stop.clone());
            tokio::spawn(async move {
                let client = Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let mut req = client.get(&url).header(ACCEPT, "application/json");
                    if let Some(c) = &cookie {
                        req = req.header(COOKIE, c);
                    }
                    let status = match req.send().await {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            r.bytes().await.map(|_| code).map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    samples.push(Sample {
                        started,
                        ended: Instant::now(),
                        status,
                    });
                }
                samples
            })
        })
        .collect();
    Traffic { stop, tasks }
}

impl Traffic {
    async fn finish(self) -> Vec<Sample> {
        // Let some requests through first, whatever the scheduling.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// Requests that ended before `at` answered `before`; requests that started after `after`
/// answered `after_status`; none failed, and each side saw some.
fn assert_switched(
    samples: &[Sample],
    at: Instant,
    before: u16,
    after: Instant,
    after_status: u16,
) {
    let errors: Vec<_> = samples.iter().filter(|s| s.status.is_err()).collect();
    assert!(errors.is_empty(), "transport errors: {errors:?}");
    let early: Vec<_> = samples.iter().filter(|s| s.ended < at).collect();
    let late: Vec<_> = samples.iter().filter(|s| s.started > after).collect();
    assert!(
        !early.is_empty() && !late.is_empty(),
        "traffic on both sides"
    );
    for s in &early {
        assert_eq!(s.status, Ok(before), "before the reload: {s:?}");
    }
    for s in &late {
        assert_eq!(s.status, Ok(after_status), "after the reload: {s:?}");
    }
    // In between, only the two answers.
    for s in samples {
        let code = s.status.clone().unwrap();
        assert!(code == before || code == after_status, "{s:?}");
    }
}

async fn get_status(url: &str, cookie: &str) -> StatusCode {
    Client::new()
        .get(url)
        .header(ACCEPT, "application/json")
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
}

fn metrics(stack: &Stack) -> String {
    stack.live.load().metrics.encode(false)
}

const USER_TOKEN_PATH: &str = "/v1.0/oauth2/userAccessToken";
const APP_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";

const ONE_ROUTE: &str = r#"
routes:
  - name: app
    path_prefix: /app
"#;

const TWO_ROUTES: &str = r#"
routes:
  - name: app
    path_prefix: /app
  - name: reports
    path_prefix: /reports
server:
  workers: 3
"#;

#[tokio::test]
async fn a_route_added_by_reload_serves_the_next_requests_while_traffic_flows() {
    let stack = stack(ONE_ROUTE).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let url = |p: &str| format!("{}{p}", stack.url());
    assert_eq!(
        get_status(&url("/reports/q3"), &cookie).await,
        StatusCode::NOT_FOUND,
        "no such route yet"
    );
    let load = traffic(url("/app/x"), Some(cookie.clone()), 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hash = stack.live.load().config.hash();
    let reloaded = stack.reload(TWO_ROUTES).expect("reload");
    assert_eq!(reloaded.previous_hash, hash);
    assert_ne!(reloaded.hash, hash);
    // `server.workers` changed in the file, but the running threads stay as they are.
    assert_eq!(reloaded.needs_restart, vec!["server.workers"]);
    assert_eq!(
        stack.live.load().config.server.workers,
        stack.state.config.server.workers
    );
    assert_eq!(
        get_status(&url("/reports/q3"), &cookie).await,
        StatusCode::OK,
        "the new route serves"
    );
    let samples = load.finish().await;
    assert!(samples.len() > 20, "{} requests", samples.len());
    for s in &samples {
        assert_eq!(s.status, Ok(200), "{s:?}");
    }
    let text = metrics(&stack);
    for line in [
        r#"dinggate_requests_total{route="reports",method="GET",status="2xx"} 1"#.to_owned(),
        r#"dinggate_config_reloads_total{result="success"} 1"#.to_owned(),
        "dinggate_config_last_reload_successful 1".to_owned(),
        format!(r#"dinggate_config_info{{hash="{}"}} 1"#, reloaded.hash),
    ] {
        assert!(text.contains(&line), "{line} missing in\n{text}");
    }
    // The route kept its counts across the reload (one series, counting on).
    let app = text
        .lines()
        .find(|l| {
            l.starts_with(r#"dinggate_requests_total{route="app",method="GET",status="2xx"}"#)
        })
        .expect("app series");
    let counted: usize = app.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= samples.len(), "{counted} < {}", samples.len());
    stack.stop().await;
}

#[tokio::test]
async fn a_policy_changed_by_reload_applies_to_the_next_request_on_an_open_connection() {
    let stack = stack("routes:\n  - name: app\n    path_prefix: /\n").await;
    let lisi = session_cookie(&stack, "/", "lisi").await;
    let zhangsan = session_cookie(&stack, "/", "zhangsan").await;
    let url = format!("{}/x", stack.url());
    let load = traffic(url.clone(), Some(lisi.clone()), 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Instant::now();
    stack
        .reload("routes:\n  - name: app\n    path_prefix: /\n    deny: { users: [lisi] }\n")
        .expect("reload");
    let after = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = load.finish().await;
    assert_switched(&samples, before, 200, after, 403);
    assert_eq!(get_status(&url, &zhangsan).await, StatusCode::OK);
    assert!(metrics(&stack).contains(r#"dinggate_policy_denials_total{route="app"}"#));
    stack.stop().await;
}

const KEY_1: &str = "key-one-0123456789abcdef0123456789abcdef";
const KEY_2: &str = "key-two-0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn signing_keys_rotate_by_reload_and_old_sessions_verify_until_their_key_is_removed() {
    let with_keys = |current: &str, previous: &[&str]| {
        format!(
            "session:\n  signing_key: \"{current}\"\n  previous_signing_keys: [{}]\n",
            previous
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let stack = stack(&with_keys(KEY_1, &[])).await;
    let url = format!("{}/x", stack.url());
    let old = session_cookie(&stack, "/", "zhangsan").await;
    assert_eq!(get_status(&url, &old).await, StatusCode::OK);

    // Step 1 of a rotation: the new key signs, the old one still verifies.
    let load = traffic(url.clone(), Some(old.clone()), 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stack.reload(&with_keys(KEY_2, &[KEY_1])).expect("reload");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;
    assert!(samples.len() > 20);
    for s in &samples {
        assert_eq!(s.status, Ok(200), "the old session works throughout: {s:?}");
    }
    let new = session_cookie(&stack, "/", "lisi").await;
    assert_eq!(get_status(&url, &new).await, StatusCode::OK);

    // Step 2: the old key is removed. Sessions it signed end at once (the verified-session
    // cache must not keep them alive); sessions the new key signed go on.
    let load = traffic(url.clone(), Some(old.clone()), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = Instant::now();
    stack.reload(&with_keys(KEY_2, &[])).expect("reload");
    let after = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;
    assert_switched(&samples, before, 200, after, 401);
    assert_eq!(get_status(&url, &new).await, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn a_broken_reload_keeps_the_running_configuration_and_names_every_problem() {
    let stack = stack(ONE_ROUTE).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let hash = stack.live.load().config.hash();
    let load = traffic(format!("{}/app/x", stack.url()), Some(cookie.clone()), 8);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = stack
        .reload(
            r#"
upstream: "ftp://127.0.0.1:1"
session:
  signing_key: "tiny-key-x"
routes:
  - name: app
    path_prefix: app
"#,
        )
        .expect_err("a broken file is refused");
    let problems = err.problems().join("\n");
    for key in ["upstream", "session.signing_key", "routes[0].path_prefix"] {
        assert!(
            problems.lines().any(|l| l.starts_with(key)),
            "{key} not named in:\n{problems}"
        );
    }
    assert!(
        !problems.contains("tiny-key-x"),
        "no secret in the problems:\n{problems}"
    );
    let samples = load.finish().await;
    for s in &samples {
        assert_eq!(s.status, Ok(200), "{s:?}");
    }
    assert_eq!(stack.live.load().config.hash(), hash, "nothing changed");
    let text = metrics(&stack);
    assert!(text.contains(r#"dinggate_config_reloads_total{result="failure"} 1"#));
    assert!(text.contains("dinggate_config_last_reload_successful 0"));
    assert!(text.contains(&format!(r#"dinggate_config_info{{hash="{hash}"}} 1"#)));
    let (ready, report) = dinggate::admin::readiness(&stack.live.load()).await;
    assert!(
        ready,
        "a failed reload does not take the replica out: {report}"
    );
    let detail = report["checks"]["config"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("last reload failed") && detail.contains("session.signing_key"),
        "{detail}"
    );

    // A file that validates but whose state cannot be built is refused the same way (what
    // `dinggate check` refuses too): here no session would fit in a cookie.
    let audience = "a".repeat(4000);
    let err = stack
        .reload(&format!("session:\n  audience: {audience}\n"))
        .map(|r| r.hash)
        .expect_err("refused");
    assert!(matches!(err, ReloadError::Build(_)), "{err}");
    assert_eq!(stack.live.load().config.hash(), hash, "nothing changed");

    // Fixing the file and reloading again clears the report.
    stack.reload(TWO_ROUTES).expect("reload");
    let (_, report) = dinggate::admin::readiness(&stack.live.load()).await;
    let detail = report["checks"]["config"]["detail"].as_str().unwrap();
    assert!(!detail.contains("failed"), "{detail}");
    assert!(metrics(&stack).contains("dinggate_config_last_reload_successful 1"));
    stack.stop().await;
}

#[tokio::test]
async fn sign_outs_and_consumed_login_states_survive_a_reload() {
    let stack = stack("").await;
    let url = format!("{}/x", stack.url());
    // A session signed out before the reload stays signed out after it.
    let cookie = session_cookie(&stack, "/", "zhangsan").await;
    assert_eq!(get_status(&url, &cookie).await, StatusCode::OK);
    let r = Client::new()
        .post(format!("{}/_dinggate/sign_out", stack.url()))
        .header("origin", stack.url())
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(get_status(&url, &cookie).await, StatusCode::UNAUTHORIZED);

    // A callback consumed before the reload cannot be replayed after it (a client without a
    // cookie jar, so the captured state cookie is sent again).
    let captured = CapturedCallback::capture(&stack, "lisi").await;
    assert_eq!(captured.send_to(&captured.url).await, StatusCode::FOUND);
    let exchanges = stack.mock.call_count(USER_TOKEN_PATH);

    stack.reload("log:\n  access: false\n").expect("reload");
    assert_eq!(get_status(&url, &cookie).await, StatusCode::UNAUTHORIZED);
    assert_eq!(captured.send_to(&captured.url).await, StatusCode::FORBIDDEN);
    assert_eq!(
        stack.mock.call_count(USER_TOKEN_PATH),
        exchanges,
        "no exchange"
    );
    assert!(metrics(&stack).contains(r#"dinggate_logins_total{outcome="replayed_state"} 1"#));
    stack.stop().await;
}

#[tokio::test]
async fn the_dingtalk_app_token_is_kept_while_the_dingtalk_settings_are_unchanged() {
    let directory = "dingtalk:\n  directory: true\n";
    let stack = stack(directory).await;
    session_cookie(&stack, "/", "zhangsan").await;
    assert_eq!(stack.mock.call_count(APP_TOKEN_PATH), 1);
    // Another part of the file changes: the client, its app token and directory cache stay.
    stack
        .reload(&format!(
            "{directory}routes:\n  - name: app\n    path_prefix: /\n"
        ))
        .expect("reload");
    session_cookie(&stack, "/", "lisi").await;
    assert_eq!(stack.mock.call_count(APP_TOKEN_PATH), 1, "token kept");
    // A changed `dingtalk:` section (here the timeout; as well a rotated secret) gets a new
    // client, which fetches its own token.
    stack
        .reload("dingtalk:\n  directory: true\n  timeout: 4s\n")
        .expect("reload");
    session_cookie(&stack, "/", "wangwu").await;
    assert_eq!(
        stack.mock.call_count(APP_TOKEN_PATH),
        2,
        "new client, new token"
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_watch_reloads_a_changed_configuration_once_and_a_broken_one_is_reported_once() {
    let stack = Arc::new(stack(ONE_ROUTE).await);
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    let url = format!("{}/reports/q3", stack.url());
    let file = Arc::new(std::sync::Mutex::new(ONE_ROUTE.to_owned()));
    let watch = {
        let (stack, file) = (stack.clone(), file.clone());
        tokio::spawn(dinggate::reload::watch(
            stack.live.clone(),
            Duration::from_millis(50),
            move || stack.config_with(&file.lock().unwrap()),
        ))
    };
    let count = |result: &str| {
        let line = format!(r#"dinggate_config_reloads_total{{result="{result}"}} "#);
        metrics(&stack)
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|n| n.parse::<u32>().unwrap()))
            .unwrap_or(0)
    };
    let settle = || tokio::time::sleep(Duration::from_millis(400));

    settle().await;
    assert_eq!(
        (count("success"), count("failure")),
        (0, 0),
        "nothing changed"
    );
    assert_eq!(get_status(&url, &cookie).await, StatusCode::NOT_FOUND);

    // A changed file is reloaded once, not at every look (it also changes `server.workers`,
    // which stays as it runs and must not make every look a reload).
    *file.lock().unwrap() = TWO_ROUTES.to_owned();
    settle().await;
    assert_eq!(get_status(&url, &cookie).await, StatusCode::OK);
    assert_eq!((count("success"), count("failure")), (1, 0));

    // A broken file is reported once, however many looks see it.
    *file.lock().unwrap() = "routes:\n  - path_prefix: nope\n".to_owned();
    settle().await;
    assert_eq!((count("success"), count("failure")), (1, 1));
    assert_eq!(get_status(&url, &cookie).await, StatusCode::OK);
    let (_, report) = dinggate::admin::readiness(&stack.live.load()).await;
    assert!(
        report.to_string().contains("last reload failed"),
        "{report}"
    );

    // Back to what is in service: no reload, and the failure report is cleared.
    *file.lock().unwrap() = TWO_ROUTES.to_owned();
    settle().await;
    assert_eq!((count("success"), count("failure")), (1, 1));
    let (_, report) = dinggate::admin::readiness(&stack.live.load()).await;
    assert!(!report.to_string().contains("failed"), "{report}");

    // A rotated secret alone is a change.
    *file.lock().unwrap() = format!("{TWO_ROUTES}session:\n  signing_key: \"{KEY_2}\"\n");
    settle().await;
    assert_eq!((count("success"), count("failure")), (2, 1));
    watch.abort();
    let _ = watch.await;
    Arc::into_inner(stack).expect("one owner").stop().await;
}

#[tokio::test]
async fn the_watch_never_loads_a_file_caught_half_written() {
    // What a look finds while the file is being written: valid YAML, cut before the `deny:`
    // rule. Loading it, even briefly, would let lisi in.
    const WHOLE: &str = "routes:\n  - name: app\n    path_prefix: /\n    deny: { users: [lisi] }\n";
    const CUT: &str = "routes:\n  - name: app\n    path_prefix: /\n";
    const NEXT: &str = "routes:\n  - name: app\n    path_prefix: /\n    deny: { users: [lisi] }\n  - name: reports\n    path_prefix: /reports\n";
    let stack = Arc::new(stack(WHOLE).await);
    // lisi signs in (the route's policy is checked on each request, not at login).
    let lisi = session_cookie(&stack, "/", "lisi").await;
    let load = traffic(format!("{}/x", stack.url()), Some(lisi), 4);
    let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let (stack, looks) = (stack.clone(), looks.clone());
        tokio::spawn(dinggate::reload::watch(
            stack.live.clone(),
            Duration::from_millis(50),
            move || {
                // Looks 1-2: the file in service; 3: caught half-written; 4 on: the new file.
                let extra = match looks.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => WHOLE,
                    2 => CUT,
                    _ => NEXT,
                };
                stack.config_with(extra)
            },
        ))
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(looks.load(Ordering::SeqCst) >= 6);
    watch.abort();
    let _ = watch.await;
    let samples = load.finish().await;
    for s in &samples {
        assert_eq!(s.status, Ok(403), "lisi is never let in: {s:?}");
    }
    let text = metrics(&stack);
    assert!(
        text.contains(r#"dinggate_config_reloads_total{result="success"} 1"#),
        "one reload, to the whole new file:\n{text}"
    );
    assert_eq!(stack.live.load().config.routes.routes().len(), 2);
    Arc::into_inner(stack).expect("one owner").stop().await;
}

#[tokio::test]
async fn a_replaced_state_is_freed_when_its_last_request_ends() {
    const A: &str =
        "routes:\n  - { name: app, path_prefix: /app }\n  - { name: slow, path_prefix: /slow }\n";
    const B: &str = "routes:\n  - { name: app, path_prefix: /app }\n  - { name: slow, path_prefix: /slow }\n  - { name: reports, path_prefix: /reports }\n";
    let stack = stack(A).await;
    let cookie = session_cookie(&stack, "/app/", "zhangsan").await;
    stack.reload(B).expect("reload");
    let replaced = Arc::downgrade(&stack.live.load());
    // A slow request holds the state it started with…
    let slow = {
        let (url, cookie) = (format!("{}/slow?ms=800", stack.url()), cookie.clone());
        tokio::spawn(async move { get_status(&url, &cookie).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stack.reload(A).expect("reload");
    for _ in 0..20 {
        let status = get_status(&format!("{}/app/x", stack.url()), &cookie).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        replaced.upgrade().is_some(),
        "still serving the slow request"
    );
    // …and frees it (and its upstream pools) when it ends: reloads do not pile up states.
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(replaced.upgrade().is_none(), "the replaced state is gone");
    stack.stop().await;
}
