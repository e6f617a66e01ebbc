//! `dinggate doctor` (the real binary) against the mock DingTalk and a running gateway: a correct
//! setup passes, and each fault an operator meets is reported with its fix.

mod common;

use std::time::Duration;

use common::*;
use dinggate::demo::Stack;
use dinggate::mock::Fault;

/// What to change in the config the doctor is given (the running stack stays correct).
#[derive(Default)]
struct Setup<'a> {
    client_id: Option<&'a str>,
    client_secret: Option<&'a str>,
    corp_id: Option<&'a str>,
    public_url: Option<String>,
}

/// Runs `dinggate doctor` on a config for `stack` changed by `setup`: exit success and output.
async fn doctor(stack: &Stack, setup: Setup<'_>) -> (bool, String) {
    let settings = stack.mock.settings();
    let mock = format!("http://{}", stack.mock_addr);
    let yaml = format!(
        "public_url: \"{public_url}\"\nupstream: \"http://{upstream}\"\ndingtalk:\n  client_id: \"{id}\"\n  client_secret: \"{secret}\"\n  corp_id: \"{corp}\"\n  login_url: \"{mock}\"\n  api_url: \"{mock}\"\n  oapi_url: \"{mock}\"\n  timeout: 5s\nsession:\n  signing_key: \"doctor-test-signing-key-0123456789abcdef\"\n",
        public_url = setup.public_url.unwrap_or_else(|| stack.url()),
        upstream = stack.upstream,
        id = setup.client_id.unwrap_or(&settings.client_id),
        secret = setup.client_secret.unwrap_or(&settings.client_secret),
        corp = setup.corp_id.unwrap_or(settings.org.corp_id()),
    );
    let dir = std::env::temp_dir().join(format!(
        "dinggate-doctor-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = tokio::process::Command::from(dinggate());
    cmd.arg("doctor").arg("--config").arg(&path);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("doctor finishes")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

/// The report line (with its Chinese line) that starts with `mark` and contains `text`.
fn line<'a>(report: &'a str, mark: &str, text: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(mark) && l.contains(text))
        .unwrap_or_else(|| panic!("no `{mark}` line with `{text}` in:\n{report}"))
}

#[tokio::test]
async fn a_correct_setup_passes_every_check_and_says_what_to_register() {
    let stack = stack("").await;
    let (ok, report) = doctor(&stack, Setup::default()).await;
    eprintln!("{report}");
    assert!(ok, "{report}");
    assert!(!report.contains('✘'), "{report}");
    line(&report, "✔", "App credentials");
    line(&report, "✔", "IP allow-list");
    line(&report, "✔", "qyapi_get_member (topapi/v2/user/get)");
    line(&report, "✔", "qyapi_get_department_list");
    line(
        &report,
        "✔",
        "Organization: the app belongs to corp_id dingcorp00000001",
    );
    line(&report, "✔", "public_url");
    line(&report, "✔", "Clock");
    let register = line(&report, "ℹ", "redirect URL");
    assert!(
        register.contains(&format!(
            "Register exactly {}/_dinggate/callback ",
            stack.url()
        )),
        "{register}"
    );
    line(&report, "ℹ", "login-free address");
    assert!(report.contains("应用凭证正确"), "Chinese too:\n{report}");
    // The probes asked for ids nobody has: no real person was read.
    let users: Vec<String> = stack
        .mock
        .calls()
        .into_iter()
        .map(|c| c.path)
        .filter(|p| p.contains("user"))
        .collect();
    assert!(!users.is_empty());
    assert!(!report.contains("zhangsan") && !report.contains("lisi"));
    stack.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_and_a_wrong_client_id_are_told_apart() {
    let stack = stack("").await;
    let (ok, report) = doctor(
        &stack,
        Setup {
            client_secret: Some("not-the-secret-0123456789abcdef"),
            ..Setup::default()
        },
    )
    .await;
    assert!(!ok);
    let l = line(&report, "✘", "App credentials");
    assert!(l.contains("exists, but the secret is wrong"), "{l}");
    assert!(
        !report.contains("not-the-secret"),
        "the secret is never printed:\n{report}"
    );

    let (ok, report) = doctor(
        &stack,
        Setup {
            client_id: Some("dingnosuchapp0000000"),
            ..Setup::default()
        },
    )
    .await;
    assert!(!ok);
    let l = line(&report, "✘", "App credentials");
    assert!(
        l.contains("does not know client_id dingnosuchapp0000000"),
        "{l}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_egress_address_outside_the_allow_list_is_printed() {
    let stack = stack("").await;
    stack
        .mock
        .inject_fault("/topapi/user/getbyunionid", Fault::IpNotWhitelisted, 1);
    let (ok, report) = doctor(&stack, Setup::default()).await;
    assert!(!ok);
    let l = line(&report, "✘", "IP allow-list");
    assert!(
        l.contains(dinggate::mock::IP_NOT_WHITELISTED_ADDRESS) && l.contains("服务器出口IP"),
        "{l}"
    );
    // The token itself can be refused too (new-API form).
    stack
        .mock
        .inject_fault("/v1.0/oauth2/accessToken", Fault::IpNotWhitelisted, 1);
    let (ok, report) = doctor(&stack, Setup::default()).await;
    assert!(!ok);
    line(&report, "✘", dinggate::mock::IP_NOT_WHITELISTED_ADDRESS);
    stack.stop().await;
}

#[tokio::test]
async fn each_missing_directory_permission_is_named() {
    let stack = stack("").await;
    stack
        .mock
        .inject_fault("/topapi/v2/user/get", Fault::PermissionDenied, 1);
    let (ok, report) = doctor(&stack, Setup::default()).await;
    assert!(!ok);
    let l = line(
        &report,
        "✘",
        "Permission qyapi_get_member (topapi/v2/user/get) is missing",
    );
    assert!(l.contains("权限管理"), "{l}");
    line(&report, "✔", "qyapi_get_department_list");

    stack.mock.inject_fault(
        "/topapi/v2/department/listparentbyuser",
        Fault::PermissionDenied,
        1,
    );
    let (ok, report) = doctor(&stack, Setup::default()).await;
    assert!(!ok);
    line(&report, "✘", "Permission qyapi_get_department_list");
    stack.stop().await;
}

#[tokio::test]
async fn a_corp_id_of_another_organization_is_refused() {
    let stack = stack("").await;
    let (ok, report) = doctor(
        &stack,
        Setup {
            corp_id: Some("dingcorp00000002"),
            ..Setup::default()
        },
    )
    .await;
    assert!(!ok);
    let l = line(
        &report,
        "✘",
        "Organization: corp_id dingcorp00000002 is not",
    );
    assert!(l.contains("CorpId"), "{l}");
    stack.stop().await;
}

#[tokio::test]
async fn a_public_url_that_does_not_reach_the_gateway_fails() {
    let stack = stack("").await;
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (ok, report) = doctor(
        &stack,
        Setup {
            public_url: Some(nowhere.clone()),
            ..Setup::default()
        },
    )
    .await;
    assert!(!ok);
    let l = line(&report, "✘", "public_url");
    assert!(
        l.contains(&format!("{nowhere}/_dinggate/healthz cannot be reached")),
        "{l}"
    );
    // The URL to register follows public_url: what DingTalk must know is what the config says.
    line(&report, "ℹ", &format!("{nowhere}/_dinggate/callback"));
    stack.stop().await;
}

#[tokio::test]
async fn a_clock_far_from_dingtalks_fails() {
    let stack = stack("").await;
    stack.mock.advance_clock(Duration::from_secs(300));
    let (ok, report) = doctor(&stack, Setup::default()).await;
    assert!(!ok);
    let l = line(&report, "✘", "Clock");
    assert!(l.contains("behind DingTalk"), "{l}");
    stack.stop().await;
}
