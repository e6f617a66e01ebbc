//! The real `dinggate` binary under signals: SIGHUP is logged at WARN (no reload, still serving); SIGTERM turns readiness 503, then drains and exits 0.

mod common;

use common::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary with its output captured.
fn dinggate() -> Command {
    let mut c = common::dinggate();
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The status code of `GET path`, or `None` when nothing answers.
fn status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn send(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Everything the child printed (it has exited).
fn output(child: &mut Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Starts `cmd`, waits until `path` answers `want`, sends SIGHUP twice and checks that the
/// process still runs and answers, then stops it with SIGTERM and returns what it printed.
fn survives_sighup(mut cmd: Command, port: u16, path: &str, want: u16) -> String {
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(port, path) != Some(want) {
        if let Some(code) = child.try_wait().unwrap() {
            panic!("exited before serving ({code}):\n{}", output(&mut child));
        }
        assert!(Instant::now() < deadline, "not serving {path} on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..2 {
        send(&child, "HUP");
        std::thread::sleep(Duration::from_millis(300));
        if let Some(code) = child.try_wait().unwrap() {
            panic!("SIGHUP ended the process ({code}):\n{}", output(&mut child));
        }
        assert_eq!(status(port, path), Some(want), "not serving after SIGHUP");
    }
    send(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(40);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("SIGTERM did not stop it:\n{}", output(&mut child));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = output(&mut child);
    assert!(code.success(), "{code} after SIGTERM:\n{out}");
    let warned = out
        .lines()
        .filter(|l| {
            l.contains("WARN")
                && l.contains("SIGHUP received")
                && l.contains("reload is not supported")
                && l.contains("restart dinggate to apply changes")
        })
        .count();
    assert_eq!(warned, 2, "one WARN line per SIGHUP:\n{out}");
    out
}

#[test]
fn sighup_is_logged_and_the_gateway_keeps_serving() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dinggate-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://127.0.0.1:9\ndingtalk: {{client_id: x, client_secret: y, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\n"
        ),
    )
    .unwrap();
    let mut cmd = dinggate();
    cmd.args(["run", "--config"]).arg(&path);
    let out = survives_sighup(cmd, port, "/_dinggate/healthz", 200);
    assert!(out.contains("dinggate stopped"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sighup_does_not_stop_the_mock_dingtalk_or_the_demo_upstream() {
    let port = free_port();
    let mut cmd = dinggate();
    cmd.args(["mock-dingtalk", "--listen", &format!("127.0.0.1:{port}")]);
    survives_sighup(cmd, port, "/", 200);

    let port = free_port();
    let mut cmd = dinggate();
    cmd.args(["demo-upstream", "--listen", &format!("127.0.0.1:{port}")]);
    survives_sighup(cmd, port, "/echo", 200);
}

/// The whole response to `GET path` (status line, headers and body), read until the server
/// closes the connection.
fn get_all(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// SIGTERM, in order: the admin listener's `/readyz` turns 503 while the gateway still accepts
/// (`server.shutdown_delay`, so load balancers stop sending first), then accepting stops, the
/// request in flight finishes, and the process exits 0.
#[test]
fn sigterm_turns_readiness_503_first_then_drains_and_exits_0() {
    let (port, admin, up) = (free_port(), free_port(), free_port());
    let mut upstream = dinggate()
        .args(["demo-upstream", "--listen", &format!("127.0.0.1:{up}")])
        .spawn()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("dinggate-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://127.0.0.1:{up}\ndingtalk: {{client_id: x, client_secret: y, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\nadmin: {{listen: \"127.0.0.1:{admin}\"}}\nserver: {{shutdown_delay: 1500ms, shutdown_timeout: 20s}}\nroutes:\n  - path_prefix: /\n    public: [/slow]\n"
        ),
    )
    .unwrap();
    let mut child = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(admin, "/readyz") != Some(200) || status(up, "/echo") != Some(200) {
        if let Some(code) = child.try_wait().unwrap() {
            panic!("exited before serving ({code}):\n{}", output(&mut child));
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status(admin, "/healthz"), Some(200));
    assert_eq!(status(port, "/_dinggate/readyz"), Some(200));

    let slow = std::thread::spawn(move || get_all(port, "/slow?ms=3000"));
    std::thread::sleep(Duration::from_millis(300));
    send(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    // Within the delay: not ready, still alive, still accepting.
    assert_eq!(status(admin, "/readyz"), Some(503));
    assert_eq!(status(admin, "/healthz"), Some(200));
    assert_eq!(status(port, "/_dinggate/readyz"), Some(503));
    assert_eq!(status(port, "/_dinggate/healthz"), Some(200));
    // After it: no longer accepting, while the slow request is still running.
    std::thread::sleep(Duration::from_millis(1700));
    assert_eq!(status(port, "/_dinggate/healthz"), None, "still accepting");
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the slow request finished"
    );

    let answer = slow.join().unwrap().expect("the slow request was answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = output(&mut child);
    assert!(code.success(), "{code}:\n{out}");
    assert!(out.contains("readiness is 503"), "{out}");
    assert!(out.contains("dinggate stopped"), "{out}");
    upstream.kill().unwrap();
    let _ = upstream.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}
