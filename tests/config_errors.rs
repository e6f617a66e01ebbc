//! The real binary's `check` and `run` on bad configuration: no secret echoed, one error per root problem, env variables named, placeholders refused, host names in `listen`, plain-http warning.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Recognisable, never part of any message; too short to be a key and not a file.
const CANARY: &str = "Zq9CanaryXv";

/// Every secret of the configuration, as (YAML section, key, environment variable).
const SECRETS: &[(&str, &str, &str)] = &[
    (
        "dingtalk",
        "client_secret",
        "DINGGATE_DINGTALK__CLIENT_SECRET",
    ),
    (
        "dingtalk",
        "client_secret_file",
        "DINGGATE_DINGTALK__CLIENT_SECRET_FILE",
    ),
    ("session", "signing_key", "DINGGATE_SESSION__SIGNING_KEY"),
    (
        "session",
        "signing_key_file",
        "DINGGATE_SESSION__SIGNING_KEY_FILE",
    ),
    (
        "session",
        "previous_signing_keys",
        "DINGGATE_SESSION__PREVIOUS_SIGNING_KEYS",
    ),
];

const KEY: &str = "0123456789abcdef0123456789abcdef";

use common::dinggate;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dinggate-cfgerr-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A valid configuration without the secret `section.key`, plus `extra` lines in that section.
fn config(section: &str, key: &str, extra: &str) -> String {
    let mut dingtalk = "  client_id: dingabc123\n  corp_id: dingcorp00000001\n".to_owned();
    let mut session = String::new();
    if !(section == "dingtalk" && key.starts_with("client_secret")) {
        dingtalk.push_str("  client_secret: app-secret\n");
    }
    if !(section == "session" && key.starts_with("signing_key")) {
        session.push_str(&format!("  signing_key: \"{KEY}\"\n"));
    }
    match section {
        "dingtalk" => dingtalk.push_str(extra),
        _ => session.push_str(extra),
    }
    format!(
        "public_url: https://gate.example.com\nupstream: http://127.0.0.1:8080\ndingtalk:\n{dingtalk}session:\n{session}"
    )
}

fn check(path: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = dinggate();
    c.args(["check", "--config"]).arg(path);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_canary(what: &str, out: &Output) {
    let all = text(out);
    assert!(
        !all.to_ascii_lowercase()
            .contains(&CANARY.to_ascii_lowercase()),
        "{what} echoes the secret:\n{all}"
    );
}

#[test]
fn check_never_prints_a_secret_given_inline_by_env_or_by_file() {
    let d = dir("canary");
    let long = format!("{CANARY}-changeme-{}", "x".repeat(40));
    let inline = [
        CANARY.to_owned(),
        format!("\"{long}\""),
        format!("[{CANARY}]"),
        format!("[[{CANARY}]]"),
        format!("{{a: {CANARY}}}"),
        format!("{{{CANARY}: 1}}"),
        format!("\"{CANARY}"),
        format!("[{CANARY}"),
        format!("!!int {CANARY}"),
        format!("!!binary {CANARY}"),
    ];
    let env = [
        CANARY.to_owned(),
        long.clone(),
        format!("[{CANARY}]"),
        format!("[[{CANARY}]]"),
        format!("{{a={CANARY}}}"),
        format!("[{CANARY}"),
        format!("\"{CANARY}"),
        format!("{CANARY},{long}"),
    ];
    let secret_file = d.join("secret");
    std::fs::write(&secret_file, format!("{CANARY}\n")).unwrap();
    for (i, (section, key, var)) in SECRETS.iter().enumerate() {
        for (j, form) in inline.iter().enumerate() {
            let path = d.join(format!("inline-{i}-{j}.yaml"));
            std::fs::write(&path, config(section, key, &format!("  {key}: {form}\n"))).unwrap();
            assert_no_canary(&format!("{section}.{key}: {form}"), &check(&path, &[]));
        }
        let path = d.join(format!("env-{i}.yaml"));
        // The secret's section is given without it; the environment supplies it.
        std::fs::write(&path, config(section, key, "")).unwrap();
        for form in &env {
            assert_no_canary(&format!("{var}={form}"), &check(&path, &[(var, form)]));
        }
        if key.ends_with("_file") {
            let out = check(&path, &[(var, secret_file.to_str().unwrap())]);
            assert_no_canary(&format!("{var} → file with the secret"), &out);
        }
    }
}

#[test]
fn a_missing_secret_or_a_bad_upstream_is_reported_once() {
    let d = dir("followon");
    let routes = "routes:\n  - path_prefix: /\n  - path_prefix: /admin\n    allow: {admins: true}\n  - path_prefix: /b\n";
    let path = d.join("missing-secret.yaml");
    std::fs::write(
        &path,
        format!("{}{routes}", config("dingtalk", "client_secret", "")),
    )
    .unwrap();
    let out = check(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("1 configuration problem(s)"), "{stderr}");
    assert!(
        stderr.contains("dingtalk.client_secret: missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("dingtalk.directory"), "{stderr}");

    let path = d.join("bad-upstream.yaml");
    std::fs::write(
        &path,
        format!("{}{routes}", config("", "", "")).replace("http://127.0.0.1:8080", "not-a-url"),
    )
    .unwrap();
    let out = check(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 configuration problem(s)"), "{stderr}");
    assert!(stderr.contains("upstream: not an http(s) URL"), "{stderr}");
    assert!(!stderr.contains("missing"), "{stderr}");
}

#[test]
fn environment_typos_and_type_errors_are_named_in_words() {
    let d = dir("env");
    let path = d.join("ok.yaml");
    std::fs::write(&path, config("", "", "")).unwrap();
    let out = check(
        &path,
        &[
            ("DINGGATE_SESSION__LIFETIM", "12h"),
            ("DINGGATE_SESSION__LOGIN_TIMEOUT", "soon"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("DINGGATE_SESSION__LIFETIM: unknown key")
            && stderr.contains("from the environment, key session.lifetim"),
        "{stderr}"
    );
    assert!(
        stderr.contains("DINGGATE_SESSION__LOGIN_TIMEOUT: not a duration"),
        "{stderr}"
    );

    let path = d.join("list.yaml");
    std::fs::write(
        &path,
        config("", "", "").replace("public_url:", "log:\n  level: [info, debug]\npublic_url:"),
    )
    .unwrap();
    let out = check(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "log.level: expected a single value (text, a number or true/false), found a list"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("untagged"), "{stderr}");
}

#[test]
fn lists_of_keys_and_hosts_come_comma_separated_from_the_environment() {
    let d = dir("lists");
    let path = d.join("ok.yaml");
    std::fs::write(&path, config("", "", "")).unwrap();
    let out = check(
        &path,
        &[
            (
                "DINGGATE_SESSION__PREVIOUS_SIGNING_KEYS",
                &format!("{},{}", "a".repeat(32), "b".repeat(32)),
            ),
            (
                "DINGGATE_REDIRECT_ALLOWLIST",
                "app.example.com, .example.org",
            ),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("- app.example.com") && stdout.contains("- .example.org"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("<redacted>").count(), 4, "{stdout}");
    assert!(!stdout.contains(&"a".repeat(32)), "{stdout}");
}

#[test]
fn shipped_placeholders_are_refused_by_name() {
    let out = dinggate()
        .args(["check", "--config", "gateway.yaml"])
        .env("DINGGATE_DINGTALK__CLIENT_SECRET", "app-secret-from-env")
        .env("DINGGATE_SESSION__SIGNING_KEY", "k".repeat(48))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 configuration problem(s)"), "{stderr}");
    assert!(
        stderr.contains("dingtalk.client_id: \"your-app-key\" is a placeholder"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dingtalk.corp_id: \"your-corp-id\" is a placeholder"),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_plain_http_off_this_machine() {
    let d = dir("http");
    let path = d.join("http.yaml");
    std::fs::write(
        &path,
        config("", "", "").replace("https://gate.example.com", "http://gate.example.com"),
    )
    .unwrap();
    let out = check(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: public_url: plain http://") && stderr.contains("Secure"),
        "{stderr}"
    );
    let path = d.join("local.yaml");
    std::fs::write(
        &path,
        config("", "", "").replace("https://gate.example.com", "http://localhost:4180"),
    )
    .unwrap();
    let out = check(&path, &[]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning: public_url"));
}

/// `run` with `listen: localhost:<port>` serves there, and logs the plain-http warning at WARN.
#[test]
fn run_listens_on_a_host_name_and_logs_the_http_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir("run");
    let path = d.join("run.yaml");
    std::fs::write(
        &path,
        config("", "", "")
            .replace("https://gate.example.com", "http://gate.example.com")
            .replace(
                "public_url:",
                &format!("listen: localhost:{port}\npublic_url:"),
            ),
    )
    .unwrap();
    let mut child = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("dinggate started"))
    {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let reached = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(log.contains("dinggate started"), "{log}");
    assert!(reached, "nothing listens on 127.0.0.1:{port}\n{log}");
    assert!(
        log.contains("WARN") && log.contains("plain http://"),
        "{log}"
    );
}
