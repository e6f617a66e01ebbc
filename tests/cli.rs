//! The `dinggate` binary: `check` on the shipped gateway.yaml, env overrides, and config errors.

mod common;

use common::dinggate;
use std::process::Command;

#[test]
fn shipped_gateway_yaml_validates_with_secrets_from_env() {
    let out = dinggate()
        .args(["check", "--config", "gateway.yaml"])
        .env("DINGGATE_DINGTALK__CLIENT_SECRET", "app-secret-from-env")
        .env("DINGGATE_SESSION__SIGNING_KEY", "k".repeat(48))
        .env("DINGGATE_SESSION__LIFETIME", "12h")
        .env("DINGGATE_DINGTALK__CLIENT_ID", "12345")
        // The shipped ids are placeholders, refused on their own (tests/config_errors.rs).
        .env("DINGGATE_DINGTALK__CORP_ID", "dingcorp00000001")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stderr}");
    assert!(
        stdout.contains("lifetime: 12h"),
        "env override applied:\n{stdout}"
    );
    assert!(
        stdout.contains("client_id: '12345'") || stdout.contains("client_id: \"12345\""),
        "numeric env value read as a string:\n{stdout}"
    );
    assert!(
        !stdout.contains("app-secret-from-env"),
        "secret printed:\n{stdout}"
    );
    assert!(!stdout.contains(&"k".repeat(48)), "signing key printed");
    assert!(stdout.contains("<redacted>"));
    assert!(stderr.contains("https://gate.example.com/_dinggate/callback"));
}

#[test]
fn shipped_gateway_yaml_without_secrets_names_what_is_missing() {
    let out = dinggate()
        .args(["check", "--config", "gateway.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dingtalk.client_secret: missing"),
        "{stderr}"
    );
    assert!(stderr.contains("session.signing_key: missing"), "{stderr}");
    assert!(
        stderr.contains("dingtalk.client_id: \"your-app-key\" is a placeholder"),
        "{stderr}"
    );
}

#[test]
fn bad_config_reports_every_problem_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("dinggate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "public_url: https://gate.example.com\nupstream: not-a-url\nupstreem: http://typo\ndingtalk:\n  client_id: x\n  client_secret: y\n  corp_id: c\nsession:\n  signing_key: short\n",
    )
    .unwrap();
    let out = dinggate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upstream: not an http(s) URL"), "{stderr}");
    assert!(stderr.contains("upstreem: unknown key"), "{stderr}");
    assert!(
        stderr.contains("session.signing_key: too short"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short\n") || stderr.contains("too short"),
        "value not echoed"
    );

    let out = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "run refuses a bad config too");

    let out = dinggate()
        .args(["check", "--config", "/nonexistent/dinggate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn check_describes_every_route_and_its_rules_in_words() {
    let dir = std::env::temp_dir().join(format!("dinggate-cli-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("routes.yaml");
    std::fs::write(
        &path,
        r#"public_url: https://gate.example.com
upstream: http://127.0.0.1:8080
dingtalk: {client_id: x, client_secret: y, corp_id: dingcorp}
session: {signing_key: "0123456789abcdef0123456789abcdef"}
routes:
  - path_prefix: /
    public: [/static/]
  - name: finance
    path_prefix: /finance
    allow: {departments: [300], users: [lisi]}
    deny: {users: [wangwu]}
"#,
    )
    .unwrap();
    let out = dinggate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 route(s)"), "{stderr}");
    assert!(stderr.contains("finance"), "{stderr}");
    assert!(stderr.contains("department 300 or below"), "{stderr}");
    assert!(stderr.contains("except"), "{stderr}");
    assert!(stderr.contains("public (no sign-in"), "{stderr}");
}

#[test]
fn check_refuses_settings_that_leave_no_room_for_a_session_and_bad_strip_extra() {
    let base = |c: &mut Command| {
        c.args(["check", "--config", "gateway.yaml"])
            .env("DINGGATE_DINGTALK__CLIENT_SECRET", "app-secret-from-env")
            .env("DINGGATE_SESSION__SIGNING_KEY", "k".repeat(48))
            .env("DINGGATE_DINGTALK__CLIENT_ID", "dingabc123")
            .env("DINGGATE_DINGTALK__CORP_ID", "dingcorp00000001");
    };
    let mut c = dinggate();
    base(&mut c);
    let out = c
        .env("DINGGATE_SESSION__AUDIENCE", "a".repeat(600))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("browsers keep at most 4096") && stderr.contains("session.audience"),
        "{stderr}"
    );

    let mut c = dinggate();
    base(&mut c);
    let out = c
        .env(
            "DINGGATE_HEADERS__STRIP_EXTRA",
            "[X-Tenant, X-Internal-*, \"*\"]",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("headers.strip_extra[2]"), "{stderr}");
    assert!(
        !stderr.contains("strip_extra[0]") && !stderr.contains("strip_extra[1]"),
        "{stderr}"
    );
}

#[test]
fn version_names_the_release_and_the_commit() {
    let out = dinggate().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected_prefix = format!("dinggate {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected_prefix), "{text}");
    let commit = text
        .trim()
        .trim_start_matches(&expected_prefix)
        .trim_end_matches(')');
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
}
