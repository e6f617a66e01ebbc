//! The real `dinggate` binary under signals: SIGHUP reloads the gateway's configuration (other commands log it and keep serving); SIGTERM turns readiness 503, then drains and exits 0.

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
                && l.contains("no configuration to reload")
        })
        .count();
    assert_eq!(warned, 2, "one WARN line per SIGHUP:\n{out}");
    out
}

/// `GET path` on an open keep-alive connection: the status, after reading the whole response.
fn keepalive_get(s: &mut TcpStream, port: u16, path: &str) -> u16 {
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("the connection stays open");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// The admin listener's `/metrics`.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_reloads_the_configuration_and_a_broken_file_keeps_the_running_one() {
    let (port, admin, up) = (free_port(), free_port(), free_port());
    let mut upstream = dinggate()
        .args(["demo-upstream", "--listen", &format!("127.0.0.1:{up}")])
        .spawn()
        .unwrap();
    wait_for("the upstream", || status(up, "/echo") == Some(200));
    let dir = std::env::temp_dir().join(format!("dinggate-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    let config = |routes: &str, extra: &str| {
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://127.0.0.1:{up}\ndingtalk: {{client_id: x, client_secret: y, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\nadmin: {{listen: 127.0.0.1:{admin}}}\nserver: {{workers: 2}}\nlog: {{access: false}}\nroutes:\n  - {{name: api, path_prefix: /api, public: [/api/]}}\n  - {{name: slow, path_prefix: /slow, public: [/slow]}}\n{routes}{extra}"
        )
    };
    std::fs::write(&path, config("", "")).unwrap();
    let mut child = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for("the gateway", || status(port, "/api/x") == Some(200));
    assert_eq!(status(port, "/reports/q3"), Some(404), "no such route yet");
    let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(keepalive_get(&mut open, port, "/api/a"), 200);
    // A request in flight during the reload finishes on the configuration it started with.
    let slow = std::thread::spawn(move || status(port, "/slow?ms=1500"));
    std::thread::sleep(Duration::from_millis(300));

    // A route is added; `server.workers` changes too, which only a restart applies.
    std::fs::write(
        &path,
        config(
            "  - {name: reports, path_prefix: /reports, public: [/reports/]}\n",
            "",
        )
        .replace("workers: 2", "workers: 3"),
    )
    .unwrap();
    send(&child, "HUP");
    wait_for("the new route", || status(port, "/reports/q3") == Some(200));
    assert_eq!(
        keepalive_get(&mut open, port, "/reports/q4"),
        200,
        "same connection, new route"
    );
    assert_eq!(keepalive_get(&mut open, port, "/api/b"), 200);
    assert_eq!(
        slow.join().unwrap(),
        Some(200),
        "the request in flight finished"
    );
    let metrics = scrape(admin);
    assert!(
        metrics.contains(r#"dinggate_config_reloads_total{result="success"} 1"#),
        "{metrics}"
    );

    // A broken file: every problem is logged, the running configuration stays.
    std::fs::write(
        &path,
        config("", "")
            .replace(
                &format!("upstream: http://127.0.0.1:{up}"),
                "upstream: ftp://127.0.0.1",
            )
            .replace("0123456789abcdef0123456789abcdef", "tiny-key-x"),
    )
    .unwrap();
    send(&child, "HUP");
    wait_for("the failed reload", || {
        scrape(admin).contains(r#"dinggate_config_reloads_total{result="failure"} 1"#)
    });
    assert_eq!(
        status(port, "/reports/q3"),
        Some(200),
        "still the reloaded config"
    );
    assert_eq!(keepalive_get(&mut open, port, "/reports/q5"), 200);
    assert!(scrape(admin).contains("dinggate_config_last_reload_successful 0"));

    send(&child, "TERM");
    let code = child.wait().unwrap();
    let out = output(&mut child);
    upstream.kill().unwrap();
    let _ = upstream.wait();
    assert!(code.success(), "{code}:\n{out}");
    let line = |needles: &[&str]| out.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(line(&["INFO", "configuration reloaded"]), "{out}");
    assert!(
        line(&["WARN", "server.workers", "only a restart applies it"]),
        "{out}"
    );
    assert!(
        line(&["ERROR", "configuration reload failed", "upstream"]),
        "{out}"
    );
    assert!(
        line(&[
            "ERROR",
            "configuration reload failed",
            "session.signing_key"
        ]),
        "{out}"
    );
    assert!(!out.contains("tiny-key-x"), "a secret in the log:\n{out}");
    assert!(out.contains("dinggate stopped"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn with_a_watch_interval_a_changed_file_is_reloaded_without_a_signal() {
    let (port, up) = (free_port(), free_port());
    let mut upstream = dinggate()
        .args(["demo-upstream", "--listen", &format!("127.0.0.1:{up}")])
        .spawn()
        .unwrap();
    wait_for("the upstream", || status(up, "/echo") == Some(200));
    let dir = std::env::temp_dir().join(format!("dinggate-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    let config = |routes: &str| {
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://127.0.0.1:{up}\ndingtalk: {{client_id: x, client_secret: y, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\nreload: {{watch_interval: 1s}}\nlog: {{access: false}}\nroutes:\n  - {{name: api, path_prefix: /api, public: [/api/]}}\n{routes}"
        )
    };
    std::fs::write(&path, config("")).unwrap();
    let mut child = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for("the gateway", || status(port, "/api/x") == Some(200));
    assert_eq!(status(port, "/reports/q3"), Some(404));
    // Written the way Kubernetes updates a mounted ConfigMap: a new file renamed over the old.
    let next = dir.join("gateway.yaml.new");
    std::fs::write(
        &next,
        config("  - {name: reports, path_prefix: /reports, public: [/reports/]}\n"),
    )
    .unwrap();
    std::fs::rename(&next, &path).unwrap();
    wait_for("the watched change", || {
        status(port, "/reports/q3") == Some(200)
    });
    send(&child, "TERM");
    let code = child.wait().unwrap();
    let out = output(&mut child);
    upstream.kill().unwrap();
    let _ = upstream.wait();
    assert!(code.success(), "{code}:\n{out}");
    let reloads = out
        .lines()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    assert_eq!(reloads, 1, "one reload for one change:\n{out}");
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
