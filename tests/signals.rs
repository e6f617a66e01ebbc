//! The real `dinggate` binary under SIGHUP: logged at WARN, no reload, still serving.

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
