//! Operations through the real gateway: the admin listener's Prometheus metrics (checked by a real parser), readiness, and the Grafana dashboard's queries against what is exported.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use common::{logged_in, stack};
use dinggate::mock::Fault;
use dinggate::AppState;
use reqwest::StatusCode;
use serde_json::Value;

/// Starts the admin listener for `state` on a free loopback port.
async fn admin(state: Arc<AppState>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(dinggate::admin::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

async fn metrics(admin: SocketAddr) -> String {
    let resp = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    resp.text().await.unwrap()
}

/// The value of the sample written exactly as `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Signs in, uses a route, is refused by one, and fails one login: every kind of series has
/// samples afterwards.
async fn traffic(stack: &dinggate::demo::Stack) {
    let client = logged_in(stack, "zhangsan").await;
    let ok = client
        .get(format!("{}/echo", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let denied = client
        .get(format!("{}/admin/x", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    // A callback with a state nobody issued.
    let bad = reqwest::get(format!(
        "{}/_dinggate/callback?code=x&state=forged",
        stack.url()
    ))
    .await
    .unwrap();
    assert!(bad.status().is_client_error());
    // An upstream that is not there.
    let dead = client
        .get(format!("{}/dead/x", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), StatusCode::BAD_GATEWAY);
    // A session due for re-validation.
    stack.state.clock.advance(120);
    let again = client
        .get(format!("{}/echo", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

const ROUTES: &str = r#"
dingtalk:
  directory: true
session:
  revalidate_after: 1m
routes:
  - name: admin
    path_prefix: /admin
    allow: { users: [nobody] }
  - name: dead
    path_prefix: /dead
    upstream: http://127.0.0.1:9
  - name: app
    path_prefix: /
"#;

#[tokio::test]
async fn metrics_count_requests_logins_and_dingtalk_calls_by_bounded_labels() {
    let stack = stack(ROUTES).await;
    let admin = admin(stack.state.clone()).await;
    traffic(&stack).await;
    let text = metrics(admin).await;
    let expect = |series: &str, at_least: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= at_least, "{series} = {v}, want ≥ {at_least}");
    };
    expect(
        r#"dinggate_requests_total{route="app",method="GET",status="2xx"}"#,
        1.0,
    );
    expect(
        r#"dinggate_requests_total{route="admin",method="GET",status="4xx"}"#,
        1.0,
    );
    expect(
        r#"dinggate_requests_total{route="_gateway",method="GET",status="3xx"}"#,
        1.0,
    );
    expect(r#"dinggate_policy_denials_total{route="admin"}"#, 1.0);
    expect(r#"dinggate_revalidations_total{result="renewed"}"#, 1.0);
    expect(
        r#"dinggate_upstream_errors_total{route="dead",cause="connect"}"#,
        1.0,
    );
    expect(r#"dinggate_logins_total{outcome="success"}"#, 1.0);
    expect(r#"dinggate_logins_total{outcome="bad_state"}"#, 1.0);
    expect(
        r#"dinggate_dingtalk_requests_total{api="user_access_token",result="ok",code=""}"#,
        1.0,
    );
    expect(
        r#"dinggate_dingtalk_app_token_refreshes_total{result="ok"}"#,
        1.0,
    );
    expect(r#"dinggate_directory_lookups_total{result="miss"}"#, 1.0);
    expect(
        r#"dinggate_request_duration_seconds_count{route="app"}"#,
        1.0,
    );
    expect(
        r#"dinggate_upstream_duration_seconds_count{route="app"}"#,
        1.0,
    );
    expect(
        r#"dinggate_upstream_duration_seconds_bucket{route="app",le="+Inf"}"#,
        1.0,
    );
    expect("dinggate_client_connections", 0.0);
    assert!(
        text.contains(&format!(
            "dinggate_build_info{{version=\"{}\",commit=",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // No user id, union id, path or query in any label.
    for secret in ["zhangsan", "/echo", "/admin/x", "forged", "state="] {
        assert!(
            !text.contains(secret),
            "{secret} appears in the metrics:\n{text}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn dingtalk_errors_are_counted_by_code_and_upstream_failures_by_cause() {
    let stack = stack(
        "routes:\n  - name: dead\n    path_prefix: /dead\n    upstream: http://127.0.0.1:9\n  - name: app\n    path_prefix: /\n",
    )
    .await;
    let admin = admin(stack.state.clone()).await;
    let client = logged_in(&stack, "zhangsan").await;
    let resp = client
        .get(format!("{}/dead/x", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    stack
        .mock
        .inject_fault("/v1.0/contact/users/me", Fault::PermissionDenied, 1);
    let login = common::login(&stack, &common::browser(), "/", "lisi").await;
    assert!(login.status().is_server_error(), "{}", login.status());
    let text = metrics(admin).await;
    assert_eq!(
        sample(
            &text,
            r#"dinggate_upstream_errors_total{route="dead",cause="connect"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"dinggate_dingtalk_requests_total{api="current_user",result="error",code="Forbidden.AccessDenied.AccessTokenPermissionDenied"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"dinggate_logins_total{outcome="dingtalk_error"}"#),
        Some(1.0),
        "{text}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn openmetrics_is_served_to_scrapers_that_ask_for_it() {
    let stack = stack("").await;
    let admin = admin(stack.state.clone()).await;
    let resp = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(resp.text().await.unwrap().ends_with("# EOF\n"));
    stack.stop().await;
}

/// `promtool check metrics` (Debian's prometheus package) on what the gateway exports after
/// traffic: the exposition parses and follows Prometheus' naming rules. CI installs promtool
/// and sets `REQUIRE_PROMTOOL=1`; elsewhere the test says it skipped.
#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Ok(promtool) = which("promtool") else {
        assert!(
            std::env::var_os("REQUIRE_PROMTOOL").is_none(),
            "REQUIRE_PROMTOOL is set but promtool is not installed"
        );
        eprintln!("promtool not installed: skipped (apt-get install prometheus)");
        return;
    };
    let stack = stack(ROUTES).await;
    let admin = admin(stack.state.clone()).await;
    traffic(&stack).await;
    let text = metrics(admin).await;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stack.stop().await;
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .ok_or(())
}

/// Every metric name the dashboard's queries use is one the gateway exports (by its `# TYPE`
/// line, with the series suffixes of its type), so the dashboard cannot rot.
#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let stack = stack(ROUTES).await;
    let admin = admin(stack.state.clone()).await;
    traffic(&stack).await;
    let text = metrics(admin).await;
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        exported.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/dinggate.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("dinggate_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.insert(name);
        }
    }
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which the gateway does not export"
    );
    // And the dashboard covers what the issue asks for.
    for needed in [
        "dinggate_requests_total",
        "dinggate_request_duration_seconds_bucket",
        "dinggate_upstream_duration_seconds_bucket",
        "dinggate_logins_total",
        "dinggate_dingtalk_requests_total",
        "dinggate_revalidations_total",
        "dinggate_config_reloads_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    stack.stop().await;
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn readiness_says_what_is_ready_and_checks_dingtalk_when_asked() {
    let stack = stack("readiness: { check_dingtalk: true }\n").await;
    let first = admin(stack.state.clone()).await;
    let ready = reqwest::get(format!("http://{first}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    for check in ["config", "keys", "listener", "shutdown", "dingtalk"] {
        assert_eq!(body["checks"][check]["ok"], true, "{check}: {body}");
    }

    // A fresh gateway whose DingTalk refuses the app token is alive but not ready.
    let broken = common::stack("readiness: { check_dingtalk: true }\n").await;
    broken
        .mock
        .inject_fault("/v1.0/oauth2/accessToken", Fault::IpNotWhitelisted, 1);
    let second = admin(broken.state.clone()).await;
    let resp = reqwest::get(format!("http://{second}/readyz"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["dingtalk"]["ok"], false);
    let detail = body["checks"]["dingtalk"]["detail"].as_str().unwrap();
    assert!(detail.contains("IpNotInWhiteList"), "{detail}");
    assert!(
        !detail.contains(
            &broken
                .state
                .config
                .dingtalk
                .client_secret
                .expose()
                .to_string()
        ),
        "{detail}"
    );
    let alive = reqwest::get(format!("http://{second}/healthz"))
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK);
    // Once DingTalk answers again, so does readiness.
    let resp = reqwest::get(format!("http://{second}/readyz"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Shutdown: both readiness endpoints say 503 first, liveness stays 200.
    stack.state.readiness.draining();
    let admin_ready = reqwest::get(format!("http://{first}/readyz"))
        .await
        .unwrap();
    assert_eq!(admin_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let public = reqwest::get(format!("{}/_dinggate/readyz", stack.url()))
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::SERVICE_UNAVAILABLE);
    let public = reqwest::get(format!("{}/_dinggate/healthz", stack.url()))
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    broken.stop().await;
    stack.stop().await;
}

#[tokio::test]
async fn the_admin_listener_serves_nothing_else() {
    let stack = stack("").await;
    let admin = admin(stack.state.clone()).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{admin}/_dinggate/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = client
        .post(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // And the public listener does not serve the metrics.
    let resp = client
        .get(format!("{}/_dinggate/metrics", stack.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    stack.stop().await;
}

/// GETs `/echo` with `headers`, returning the response's `X-Request-Id` and the echoed request.
async fn echo_with(
    stack: &dinggate::demo::Stack,
    client: &reqwest::Client,
    headers: &[(&str, &str)],
) -> (String, Value) {
    let mut req = client
        .get(format!("{}/echo", stack.url()))
        .header("accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    (id, resp.json().await.unwrap())
}

fn is_generated(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn request_ids_and_forwarded_headers_are_taken_from_trusted_proxies_only() {
    // The test client connects from 127.0.0.1: trusted here ...
    let trusted = stack("trusted_proxies: [127.0.0.0/8]\n").await;
    let client = logged_in(&trusted, "zhangsan").await;
    let (id, echoed) = echo_with(
        &trusted,
        &client,
        &[
            ("x-request-id", "3f2c1a9e-7d4b-4c11-9a55-0b8e2f6d1c3a"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(id, "3f2c1a9e-7d4b-4c11-9a55-0b8e2f6d1c3a");
    assert_eq!(common::header(&echoed, "x-request-id"), Some(id.as_str()));
    // W3C trace context passes through untouched, so the upstream's spans join the caller's.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, traced) = echo_with(
        &trusted,
        &client,
        &[
            ("traceparent", traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(common::header(&traced, "traceparent"), Some(traceparent));
    assert_eq!(
        common::header(&traced, "tracestate"),
        Some("congo=t61rcWkgMzE")
    );
    assert_eq!(
        common::header(&echoed, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    // A trusted proxy's id that is not an id (markup, spaces, too long) is replaced.
    for odd in ["<script>alert(1)</script>", "a b", &"x".repeat(129)] {
        let (id, echoed) = echo_with(&trusted, &client, &[("x-request-id", odd)]).await;
        assert!(is_generated(&id), "{odd:?} → {id}");
        assert_eq!(common::header(&echoed, "x-request-id"), Some(id.as_str()));
    }
    // Error answers carry the same id in the header and in the body.
    let resp = client
        .get(format!("{}/_dinggate/nope", trusted.url()))
        .header("accept", "application/json")
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["request_id"], "req-42");
    trusted.stop().await;

    // ... and not here: the same headers from an untrusted peer are ignored.
    let untrusted = stack("trusted_proxies: [192.0.2.0/24]\n").await;
    let client = logged_in(&untrusted, "zhangsan").await;
    let (id, echoed) = echo_with(
        &untrusted,
        &client,
        &[
            ("x-request-id", "3f2c1a9e-7d4b-4c11-9a55-0b8e2f6d1c3a"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert!(is_generated(&id), "{id}");
    assert_eq!(common::header(&echoed, "x-request-id"), Some(id.as_str()));
    assert_eq!(
        common::header(&echoed, "x-forwarded-for"),
        Some("127.0.0.1")
    );
    assert_ne!(
        common::header(&echoed, "x-forwarded-host"),
        Some("evil.example")
    );
    // Without trusted_proxies at all, the same.
    untrusted.stop().await;
    let none = stack("").await;
    let client = logged_in(&none, "zhangsan").await;
    let (id, echoed) = echo_with(&none, &client, &[("x-request-id", "mine")]).await;
    assert!(is_generated(&id), "{id}");
    assert_eq!(common::header(&echoed, "x-request-id"), Some(id.as_str()));
    none.stop().await;
}
