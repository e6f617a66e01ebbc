//! The real `dinggate run` with several workers: each has its own listening socket (the
//! configured backlog), every one serves and forwards, and SIGTERM stops them all.

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

/// The status line and body of `GET path` on a new connection, or `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out))
}

fn wait_for(child: &mut Child, port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, path).map(|r| r.0) != Some(200) {
        if let Some(code) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("exited before serving ({code}):\n{err}");
        }
        assert!(Instant::now() < deadline, "not serving {path} on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The backlogs of the sockets listening on `port` (`ss` shows a listener's backlog as Send-Q).
fn listen_backlogs(port: u16) -> Vec<u32> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect()
}

#[test]
fn every_worker_serves_and_forwards_and_sigterm_stops_them_all() {
    let upstream_port = free_port();
    let mut upstream = dinggate()
        .args([
            "demo-upstream",
            "--listen",
            &format!("127.0.0.1:{upstream_port}"),
        ])
        .spawn()
        .unwrap();
    wait_for(&mut upstream, upstream_port, "/echo");

    let port = free_port();
    let dir = std::env::temp_dir().join(format!("dinggate-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: http://127.0.0.1:{port}\nupstream: http://127.0.0.1:{upstream_port}\ndingtalk: {{client_id: dingworkers, client_secret: s3cr3t-value-for-tests, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\nserver: {{workers: 3, listen_backlog: 777}}\nroutes:\n  - path_prefix: /\n    public: [/echo]\n"
        ),
    )
    .unwrap();
    let mut gateway = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for(&mut gateway, port, "/_dinggate/healthz");

    assert_eq!(
        listen_backlogs(port),
        [777, 777, 777],
        "one listening socket per worker, each with the configured backlog"
    );
    // A second gateway on the same port is refused, not let in beside the first through
    // SO_REUSEPORT (the kernel would split the traffic between them).
    let second = dinggate()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr).to_string()
        + &String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("cannot listen on"), "{said}");
    assert_eq!(
        listen_backlogs(port).len(),
        3,
        "still the first gateway's sockets only"
    );
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gateway.id()))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap())
        .collect();
    for worker in ["dinggate-w1", "dinggate-w2"] {
        assert!(
            threads.iter().any(|t| t.trim() == worker),
            "{worker} in {threads:?}"
        );
    }
    // The kernel spreads new connections over the three sockets: every one of many connections,
    // whichever worker takes it, is forwarded over that worker's own upstream pool.
    for i in 0..90 {
        let (status, body) = get(port, &format!("/echo?n={i}")).expect("answered");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("n={i}")), "{body}");
    }

    assert!(Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let code = loop {
        if let Some(code) = gateway.try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop every worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    gateway
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    gateway
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(code.success(), "{code}:\n{out}");
    assert!(out.contains("workers=3"), "{out}");
    assert!(out.contains("dinggate stopped"), "{out}");
    assert!(
        listen_backlogs(port).is_empty(),
        "every listening socket closed"
    );
    let _ = upstream.kill();
    let _ = upstream.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}
