//! The real binary's log, at its most verbose, never contains codes, tokens, cookies or secrets,
//! and reads well for people and log pipelines alike.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use dinggate::mock::{MockDingTalk, MockSettings};
use reqwest::StatusCode;

const SIGNING_KEY: &str = "log-test-signing-key-0123456789abcdef-XYZ";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary with a mock DingTalk (`settings`) and an echo upstream; `extra_yaml` is
/// appended to its config. Dropping it stops the binary and the mock.
struct Running {
    base: String,
    log: std::path::PathBuf,
    mock: MockDingTalk,
    _child: Kill,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

async fn run_binary(settings: MockSettings, name: &str, extra_yaml: &str) -> Running {
    run_binary_with_env(settings, name, extra_yaml, &[]).await
}

/// [`run_binary`], with `env` set for the binary (e.g. `DINGGATE_LOG__FORMAT=json`).
async fn run_binary_with_env(
    settings: MockSettings,
    name: &str,
    extra_yaml: &str,
    env: &[(&str, &str)],
) -> Running {
    let client_secret = settings.client_secret.clone();
    let client_id = settings.client_id.clone();
    let corp = settings.org.corp_id().to_owned();
    let mock = MockDingTalk::new(settings);
    let mock_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock_addr = mock_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dinggate::mock::serve(mock_listener, mock.clone(), async {
        let _ = stopped.await;
    }));
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(dinggate::server::serve_http(
        upstream,
        dinggate::server::ServerLimits::default(),
        dinggate::demo::upstream_handler,
        std::future::pending(),
    ));

    let dir = std::env::temp_dir().join(format!("dinggate-logs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    let log = dir.join("gateway.log");
    let client = browser();
    // A port that was free a moment ago can be taken by another test's listener before the
    // binary binds it: then the binary exits, and the port answers for someone else. Only a
    // running binary whose own health check answers counts; otherwise try another port.
    for _attempt in 0..5 {
        let port = free_port();
        std::fs::write(
            &config,
            format!(
                r#"listen: "127.0.0.1:{port}"
public_url: "http://127.0.0.1:{port}"
upstream: "http://{upstream_addr}"
dingtalk:
  client_id: "{client_id}"
  client_secret: "{client_secret}"
  corp_id: "{corp}"
  login_url: "http://{mock_addr}"
  api_url: "http://{mock_addr}"
  oapi_url: "http://{mock_addr}"
session:
  signing_key: "{SIGNING_KEY}"
log:
  level: "trace"
{extra_yaml}"#
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dinggate"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Kill(child);
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if child.0.try_wait().unwrap().is_some() {
                break;
            }
            let healthy = client
                .get(format!("{base}/_dinggate/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if healthy && child.0.try_wait().unwrap().is_none() {
                return Running {
                    base,
                    log,
                    mock,
                    _child: child,
                    _stop: stop,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("dinggate did not start (log: {})", log.display());
}

#[tokio::test]
async fn debug_logs_never_contain_codes_tokens_cookies_or_secrets() {
    let settings = MockSettings::default();
    let client_secret = settings.client_secret.clone();
    let running = run_binary(settings, "secrets", "").await;
    let (base, mock) = (running.base.clone(), running.mock.clone());
    let client = browser();

    // A failed login (DingTalk refuses the profile) and a successful one, then a proxied request.
    mock.inject_fault(
        "/v1.0/contact/users/me",
        dinggate::mock::Fault::PermissionDenied,
        1,
    );
    let mut secrets = vec![client_secret.clone(), SIGNING_KEY.to_owned()];
    for expect in [StatusCode::BAD_GATEWAY, StatusCode::FOUND] {
        let r = get_html(&client, &format!("{base}/_dinggate/start?rd=%2F")).await;
        let state = param(&location(&r), "state").unwrap();
        let callback = approve(&client, &location(&r), "zhangsan").await;
        secrets.push(param(&callback, "code").unwrap());
        secrets.push(state);
        let r = get_html(&client, &callback).await;
        assert_eq!(r.status(), expect);
        if let Some(session) = cookie_value(&r, "_dinggate") {
            // Any 24-character slice of the JWT (header, payload or signature) must not appear.
            let sig = session.rsplit('.').next().unwrap().to_owned();
            secrets.push(sig);
            secrets.push(session);
        }
    }
    let r = client
        .get(format!("{base}/echo?q=1"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = running.log_text();
    assert!(
        text.contains("login succeeded"),
        "the log was captured:\n{text}"
    );
    assert!(
        text.contains("Contact.User.Read"),
        "the failure was logged with its hint"
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret value ({} chars) appears in the log",
            secret.len()
        );
    }
}

/// A nickname that tries to forge a log line: newline, a fake timestamp and event, carriage
/// return and a terminal escape.
const FORGING_NICK: &str =
    "Mallory\n2026-01-01T00:00:00.000000Z  INFO login succeeded union_id=forged\r\u{1b}[2K";

#[tokio::test]
async fn a_nickname_cannot_forge_log_lines() {
    let yaml_nick = serde_json::to_string(FORGING_NICK).unwrap();
    let yaml = dinggate::mock::org::DEFAULT_ORG_YAML.to_owned()
        + &format!(
            "\n  - userid: mallory\n    name: {yaml_nick}\n    union_id: unionmallory0123456789ab\n    open_id: openmallory0123456789\n    departments: [100]\n"
        );
    let settings = MockSettings {
        org: dinggate::mock::Org::from_yaml_str(&yaml).unwrap(),
        ..Default::default()
    };
    // Nobody is allowed on `/`: the refusal logs the person's name.
    let running = run_binary(
        settings,
        "forge",
        "routes:\n  - path_prefix: /\n    allow: { users: [nobody] }\n",
    )
    .await;
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", running.base)).await;
    let callback = approve(&client, &location(&r), "mallory").await;
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = get_html(&client, &format!("{}/", running.base)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = running.log_text();
    assert!(
        text.contains("Mallory\\n2026-01-01T00:00:00.000000Z  INFO login succeeded union_id=forged\\r\\u{1b}[2K"),
        "the name is logged, escaped:\n{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text}");
    // One line per event: every line starts with the gateway's own timestamp, so none is forged.
    for line in text.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "forged line: {line}"
        );
        assert!(
            line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
            "a line that is not an event: {line:?}"
        );
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("login succeeded"))
            .count(),
        2,
        "the real login event and the escaped name in the refusal:\n{text}"
    );
}

/// The access line (`"message": "request"`) whose field `key` is `value`.
fn access_line<'a>(
    lines: &'a [serde_json::Map<String, serde_json::Value>],
    key: &str,
    value: &str,
) -> &'a serde_json::Map<String, serde_json::Value> {
    lines
        .iter()
        .find(|l| l["message"] == "request" && l.get(key).and_then(|v| v.as_str()) == Some(value))
        .unwrap_or_else(|| panic!("no access line with {key}={value}"))
}

#[tokio::test]
async fn json_logs_are_flat_complete_and_free_of_debug_text() {
    let running = run_binary_with_env(
        MockSettings::default(),
        "json",
        "routes:\n  - path_prefix: /admin\n    allow: { users: [nobody] }\n  - path_prefix: /\n",
        &[
            ("DINGGATE_LOG__FORMAT", "json"),
            // The gateway's own events at every level; its dependencies' debug chatter (hyper's
            // connection pool, in their words) is not what this test is about.
            ("DINGGATE_LOG__LEVEL", "dinggate=trace,info"),
            ("DINGGATE_DINGTALK__DIRECTORY", "true"),
        ],
    )
    .await;
    let base = running.base.clone();
    let authority = base.trim_start_matches("http://").to_owned();

    // Someone from another organization: refused, and the refusal names their corp.
    let stranger = browser();
    let r = get_html(&stranger, &format!("{base}/_dinggate/start?rd=%2F")).await;
    let callback = approve(&stranger, &location(&r), "alice.partner").await;
    assert_eq!(
        get_html(&stranger, &callback).await.status(),
        StatusCode::FORBIDDEN
    );
    // A server error whose cause has no operator hint is not needed: the login failure below
    // has one, and `hint` must then be present and non-empty.
    running.mock.inject_fault(
        "/v1.0/contact/users/me",
        dinggate::mock::Fault::PermissionDenied,
        1,
    );
    let r = get_html(&stranger, &format!("{base}/_dinggate/start?rd=%2F")).await;
    let callback = approve(&stranger, &location(&r), "zhangsan").await;
    assert_eq!(
        get_html(&stranger, &callback).await.status(),
        StatusCode::BAD_GATEWAY
    );

    let client = browser();
    let r = get_html(&client, &format!("{base}/_dinggate/start?rd=%2F")).await;
    let callback = approve(&client, &location(&r), "zhangsan").await;
    assert_eq!(
        get_html(&client, &callback).await.status(),
        StatusCode::FOUND
    );
    let me: serde_json::Value = get_json(&client, &format!("{base}/_dinggate/userinfo"))
        .await
        .json()
        .await
        .unwrap();
    let union_id = me["union_id"].as_str().unwrap().to_owned();

    // Proxy mode: allowed, refused, and without a session.
    let r = get_json(&client, &format!("{base}/echo/proxied?q=1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get_json(&client, &format!("{base}/admin/proxied")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = get_json(&browser(), &format!("{base}/echo/anonymous")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Forward-auth mode: the proxy in front names the original request.
    let r = client
        .get(format!("{base}/_dinggate/auth"))
        .header("x-forwarded-uri", "/admin/original?code=not-logged")
        .header("x-forwarded-method", "POST")
        .header("x-forwarded-host", &authority)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .get(format!("{base}/_dinggate/auth"))
        .header("x-original-uri", "/echo/original")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = running.log_text();
    assert!(
        !text.contains("Some(") && !text.contains("None"),
        "debug text:\n{text}"
    );
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(object)) => object,
            other => panic!("not a JSON object ({other:?}): {line}"),
        })
        .collect();
    assert!(lines.len() > 10, "{text}");
    for line in &lines {
        for key in ["timestamp", "level", "message"] {
            assert!(line.contains_key(key), "no {key}: {line:?}");
        }
        for (key, value) in line {
            assert!(
                !value.is_object() && !value.is_array(),
                "{key} is nested: {line:?}"
            );
            assert!(value.as_str() != Some(""), "{key} is empty: {line:?}");
        }
    }

    let refused = lines
        .iter()
        .find(|l| l["message"] == "request refused" && l["status"] == 403)
        .expect("the stranger's refusal is logged");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("through organization dingcorp00000002, not the configured one"),
        "{refused:?}"
    );
    let failed = lines
        .iter()
        .find(|l| l["message"] == "request failed")
        .expect("the failed login is logged");
    assert!(failed["hint"]
        .as_str()
        .unwrap()
        .contains("Contact.User.Read"));

    // A login's DingTalk calls are logged inside its request's span: each line carries the
    // request id of the callback that caused it, as a top-level key.
    let calls: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "DingTalk call")
        .collect();
    assert!(calls.len() >= 3, "{text}");
    for call in &calls {
        let id = call["request_id"]
            .as_str()
            .expect("request_id on a DingTalk line");
        assert!(call.get("span").is_none(), "{call:?}");
        let callback = lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line with {id}:\n{text}"));
        assert_eq!(callback["path"], "/_dinggate/callback", "{callback:?}");
    }

    let allowed = access_line(&lines, "path", "/echo/proxied");
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["host"], authority.as_str());
    assert_eq!(allowed["peer"], "127.0.0.1");
    assert!(
        allowed.get("client").is_none(),
        "no trusted proxy: {allowed:?}"
    );
    assert!(allowed["upstream_ms"].is_u64(), "{allowed:?}");
    assert!(
        allowed["bytes"].as_u64().is_some_and(|b| b > 0),
        "{allowed:?}"
    );
    assert!(
        allowed["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 16),
        "{allowed:?}"
    );
    assert_eq!(allowed["union_id"], union_id.as_str());
    assert_eq!(allowed["user_id"], "zhangsan");
    assert_eq!(allowed["route"], "/");
    assert_eq!(allowed["decision"], "allow");
    let denied = access_line(&lines, "path", "/admin/proxied");
    assert_eq!(denied["user_id"], "zhangsan");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["denied_by"], "/admin");
    assert_eq!(denied["rule"], "none of allow.users [nobody]");
    let anonymous = access_line(&lines, "path", "/echo/anonymous");
    assert_eq!(anonymous["status"], 401);
    assert!(anonymous.get("upstream_ms").is_none(), "{anonymous:?}");
    assert!(anonymous.get("union_id").is_none(), "{anonymous:?}");

    let checked = access_line(&lines, "original_path", "/admin/original");
    assert_eq!(checked["path"], "/_dinggate/auth");
    assert_eq!(checked["original_method"], "POST");
    assert_eq!(checked["original_host"], authority.as_str());
    assert_eq!(checked["union_id"], union_id.as_str());
    assert_eq!(checked["decision"], "deny");
    let checked = access_line(&lines, "original_path", "/echo/original");
    assert_eq!(checked["status"], 200);
    assert_eq!(checked["user_id"], "zhangsan");
    assert!(checked.get("original_method").is_none(), "{checked:?}");
    assert!(!text.contains("not-logged"), "queries are never logged");
    // Display names are personal data; ids identify the person.
    let name = me["name"].as_str().unwrap();
    assert!(
        !lines.iter().filter(|l| l["message"] == "request").any(|l| l
            .values()
            .any(|v| v.as_str().is_some_and(|s| s.contains(name)))),
        "{text}"
    );
}

#[tokio::test]
async fn an_in_client_refusal_is_logged_for_the_operator_and_nothing_else_is_trusted() {
    let running = run_binary(MockSettings::default(), "inapp-error", "").await;
    let client = browser();
    // What the in-client page sends when the client refused the code with errorCode 3.
    let r = get_html(
        &client,
        &format!("{}/_dinggate/start?rd=%2Fx&inapp_error=3", running.base),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND, "still the QR login");
    assert!(location(&r).contains("/oauth2/auth?"));
    // Not a short token: ignored, never logged.
    let r = get_html(
        &client,
        &format!(
            "{}/_dinggate/start?rd=%2F&inapp_error=%0Aforged%20line",
            running.base
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = running.log_text();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("in-client login (免登) failed"))
        .collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(
        warned[0].contains("error_code=\"3\"") || warned[0].contains("error_code=3"),
        "{}",
        warned[0]
    );
    assert!(
        warned[0].contains("端内免登地址") && warned[0].contains("127.0.0.1"),
        "says what to register, and the host: {}",
        warned[0]
    );
    assert!(!text.contains("forged"), "{text}");
}

#[tokio::test]
async fn an_ip_allow_list_refusal_names_the_address_dingtalk_saw_and_a_person_outside_the_visible_range_is_not_a_member(
) {
    let running = run_binary(MockSettings::default(), "operator-faults", "").await;
    // Legacy form (60020) on the directory look-up, new-API form on the profile call.
    for path in ["/topapi/user/getbyunionid", "/v1.0/contact/users/me"] {
        running
            .mock
            .inject_fault(path, dinggate::mock::Fault::IpNotWhitelisted, 1);
        let client = browser();
        let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", running.base)).await;
        let callback = approve(&client, &location(&r), "zhangsan").await;
        let r = get_html(&client, &callback).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{path}");
        let page = r.text().await.unwrap();
        assert!(page.contains("DingTalk answered, but refused"), "{page}");
        assert!(
            !page.contains(dinggate::mock::IP_NOT_WHITELISTED_ADDRESS),
            "the page shows no infrastructure detail"
        );
    }
    // 50002: outside the app's visible range is "not in the organization", not a DingTalk fault.
    running.mock.inject_fault(
        "/topapi/user/getbyunionid",
        dinggate::mock::Fault::OutsideVisibleRange,
        1,
    );
    let client = browser();
    let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", running.base)).await;
    let callback = approve(&client, &location(&r), "lisi").await;
    let r = get_html(&client, &callback).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("not a member of the organization"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let text = running.log_text();
    let hints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("服务器出口IP"))
        .collect();
    assert_eq!(hints.len(), 2, "{text}");
    for l in hints {
        assert!(
            l.contains(&format!(
                "DingTalk refuses calls from {}",
                dinggate::mock::IP_NOT_WHITELISTED_ADDRESS
            )),
            "{l}"
        );
    }
}

#[tokio::test]
async fn a_missing_directory_permission_fails_the_login_with_a_page_and_names_the_permission_in_the_log(
) {
    let running = run_binary(MockSettings::default(), "permission", "").await;
    for (path, permission) in [
        ("/topapi/v2/user/get", "qyapi_get_member"),
        (
            "/topapi/v2/department/listparentbyuser",
            "qyapi_get_department_list",
        ),
    ] {
        running
            .mock
            .inject_fault(path, dinggate::mock::Fault::PermissionDenied, 1);
        let client = browser();
        let r = get_html(&client, &format!("{}/_dinggate/start?rd=%2F", running.base)).await;
        let callback = approve(&client, &location(&r), "zhaoliu").await;
        let r = get_html(&client, &callback).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{path}");
        let page = r.text().await.unwrap();
        assert!(page.contains("DingTalk answered, but refused"), "{page}");
        assert!(
            !page.contains(permission),
            "the page does not list app internals"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = running.log_text();
        assert!(
            text.lines()
                .any(|l| l.contains("权限管理") && l.contains(permission)),
            "{permission} named in the log:\n{text}"
        );
    }
}

/// Behind a trusted proxy the access line names the client it reported and the peer; with
/// `log.access: false` there is no access line, while refusals and failures are still logged.
#[tokio::test]
async fn the_access_line_names_peer_and_client_and_can_be_switched_off() {
    let running = run_binary_with_env(
        MockSettings::default(),
        "access-on",
        "routes:\n  - path_prefix: /\n    public: [/open]\n",
        &[
            ("DINGGATE_LOG__FORMAT", "json"),
            ("DINGGATE_LOG__LEVEL", "info"),
            ("DINGGATE_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let r = reqwest::Client::new()
        .get(format!("{}/open/x", running.base))
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
        .header("x-request-id", "edge-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = running.log_text();
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let line = access_line(&lines, "path", "/open/x");
    assert_eq!(line["client"], "203.0.113.9", "{line:?}");
    assert_eq!(line["peer"], "127.0.0.1", "{line:?}");
    assert_eq!(line["request_id"], "edge-7f3a", "{line:?}");
    assert_eq!(line["decision"], "public", "{line:?}");
    drop(running);

    let running = run_binary_with_env(
        MockSettings::default(),
        "access-off",
        "routes:\n  - path_prefix: /\n    public: [/open]\n",
        &[
            ("DINGGATE_LOG__FORMAT", "json"),
            ("DINGGATE_LOG__LEVEL", "info"),
            ("DINGGATE_LOG__ACCESS", "false"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("{}/open/x", running.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = client
        .get(format!("{}/_dinggate/nope", running.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = running.log_text();
    assert!(
        !text.contains(r#""message":"request""#),
        "an access line with log.access false:\n{text}"
    );
    assert!(text.contains("request refused"), "{text}");
}

/// An outage under load: every request to a dead upstream fails the same way. One ERROR line in
/// full (with its hint), then one summary line per interval with the count; every failure is
/// accounted for, and the number of lines stays small whatever the load.
#[tokio::test]
async fn an_outage_under_load_writes_a_bounded_number_of_lines() {
    let running = run_binary_with_env(
        MockSettings::default(),
        "outage",
        "routes:\n  - name: dead\n    path_prefix: /dead\n    upstream: http://127.0.0.1:9\n    public: [/dead]\n  - path_prefix: /\n",
        &[
            ("DINGGATE_LOG__FORMAT", "json"),
            ("DINGGATE_LOG__LEVEL", "info"),
            ("DINGGATE_LOG__ACCESS", "false"),
            ("DINGGATE_LOG__REPEAT_INTERVAL", "1s"),
        ],
    )
    .await;
    const REQUESTS: u64 = 3000;
    let client = reqwest::Client::new();
    let url = format!("{}/dead/x", running.base);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < REQUESTS {
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
                i += 32;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    // Long enough for the last interval's summary.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = running.log_text();
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let full: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "request failed")
        .collect();
    assert_eq!(full.len(), 1, "one failure in full:\n{text}");
    assert!(full[0]["hint"].as_str().is_some_and(|h| !h.is_empty()));
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("more like this in the last"))
        })
        .collect();
    let counted: u64 = summaries
        .iter()
        .map(|l| {
            assert_eq!(l["route"], "dead", "{l:?}");
            assert_eq!(l["cause"], "upstream connect", "{l:?}");
            assert_eq!(l["level"], "ERROR", "{l:?}");
            l["count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(
        1 + counted,
        REQUESTS,
        "every failure accounted for:\n{text}"
    );
    // One summary per interval at most (plus one for a partial interval).
    let bound = took.as_secs() + 3;
    assert!(
        (summaries.len() as u64) <= bound,
        "{} summaries for {took:?}:\n{text}",
        summaries.len()
    );
    assert!(lines.len() < 40, "{} lines:\n{text}", lines.len());
}
