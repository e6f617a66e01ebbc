//! TLS termination on the public listener through the real gateway: HTTP/1.1 and HTTP/2 over TLS with certificates made at test time, reload on SIGHUP (a broken renewal keeps the old certificate), the plain-HTTP redirect listener, and configuration errors.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use reqwest::{StatusCode, Version};

/// A CA and a server certificate for `localhost` and 127.0.0.1 that it signed, as PEM.
struct Issued {
    ca: String,
    chain: String,
    key: String,
}

fn issue(name: &str) -> Issued {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("dinggate test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    Issued {
        ca: ca.pem(),
        chain: format!("{}{}", cert.pem(), ca.pem()),
        key: key.serialize_pem(),
    }
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dinggate-tls-term-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn install(dir: &Path, issued: &Issued) {
    std::fs::write(dir.join("tls.crt"), &issued.chain).unwrap();
    std::fs::write(dir.join("tls.key"), &issued.key).unwrap();
}

/// A client that trusts only `ca` and resolves `localhost` to 127.0.0.1:`port`.
fn client(ca: &str, port: u16, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test]
async fn http1_and_http2_over_tls_reach_the_gateway_and_plain_http_does_not() {
    let d = dir("inproc");
    let issued = issue("a");
    install(&d, &issued);
    let stack = common::stack(&format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        d.join("tls.crt").display(),
        d.join("tls.key").display()
    ))
    .await;
    let port = stack.gateway.port();
    let url = format!("https://localhost:{port}/_dinggate/healthz");
    let h2 = client(&issued.ca, port, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2, "ALPN h2");
    let h1 = client(&issued.ca, port, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.version(), Version::HTTP_11);
    // TLS 1.2 is still accepted (rustls has no TLS 1.0/1.1 at all).
    let tls12 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(issued.ca.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(
        tls12.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    // A whole login through TLS, and a proxied request with identity headers.
    let (status, _) = {
        let r = client(&issued.ca, port, false)
            .get(format!("https://localhost:{port}/echo"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (r.status(), r.version())
    };
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no session: sign in first"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/_dinggate/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the CA is refused by its own verification.
    let other = issue("b");
    assert!(client(&other.ca, port, false)
        .get(&url)
        .send()
        .await
        .is_err());
    stack.stop().await;
    std::fs::remove_dir_all(&d).unwrap();
}

fn output(child: &mut Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn sighup(child: &Child) {
    assert!(std::process::Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
}

/// Waits until `ok` holds, for at most 10 s.
async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_a_renewed_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let d = dir("reload");
    let (port, plain) = (free_port(), free_port());
    let first = issue("first");
    install(&d, &first);
    let config = d.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\npublic_url: https://localhost:{port}\nupstream: http://127.0.0.1:9\ndingtalk: {{client_id: x, client_secret: y, corp_id: dingcorp}}\nsession: {{signing_key: \"0123456789abcdef0123456789abcdef\"}}\ntls:\n  cert_file: {}\n  key_file: {}\n  redirect_http: 127.0.0.1:{plain}\nserver: {{shutdown_timeout: 5s}}\n",
            d.join("tls.crt").display(),
            d.join("tls.key").display()
        ),
    )
    .unwrap();
    let mut child = common::dinggate()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{port}/_dinggate/healthz");
    let trusts_first = client(&first.ca, port, false);
    eventually("serving the first certificate", async || {
        trusts_first.get(&url).send().await.is_ok()
    })
    .await;

    // The plain-HTTP listener sends browsers to https, for our hosts only.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("http://127.0.0.1:{plain}/wiki/a?b=c"))
        .header("host", format!("localhost:{plain}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{port}/wiki/a?b=c").as_str()
    );
    let r = http
        .get(format!("http://127.0.0.1:{plain}/x"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());

    // Renewed in place (as certbot and cert-manager do), then SIGHUP.
    let second = issue("second");
    install(&d, &second);
    sighup(&child);
    // Fresh clients: a connection opened before keeps the certificate it was opened with.
    eventually("serving the renewed certificate", async || {
        client(&second.ca, port, false)
            .get(&url)
            .send()
            .await
            .is_ok()
    })
    .await;
    assert!(client(&first.ca, port, false)
        .get(&url)
        .send()
        .await
        .is_err());
    // The connection opened before the renewal still works.
    assert_eq!(
        trusts_first.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );

    // A broken renewal (a key that belongs to another certificate) keeps the current one.
    let third = issue("third");
    std::fs::write(d.join("tls.key"), &third.key).unwrap();
    sighup(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client(&second.ca, port, false)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    drop(trusts_first);
    assert!(std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let code = child.wait().unwrap();
    let out = output(&mut child);
    assert!(code.success(), "{code}: {out}");
    assert!(out.contains("TLS certificate reloaded"), "{out}");
    assert!(out.contains("TLS certificate not reloaded"), "{out}");
    assert!(out.contains("does not fit the certificate"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn check_names_every_tls_problem() {
    let d = dir("check");
    let issued = issue("a");
    install(&d, &issued);
    let other = issue("b");
    std::fs::write(d.join("other.key"), &other.key).unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate").unwrap();
    let base = "listen: 127.0.0.1:4180\npublic_url: https://localhost\nupstream: http://127.0.0.1:9\ndingtalk: {client_id: x, client_secret: y, corp_id: dingcorp}\nsession: {signing_key: \"0123456789abcdef0123456789abcdef\"}\n";
    let cases = [
        (
            format!("tls:\n  cert_file: {}\n", d.join("tls.crt").display()),
            "tls.key_file: missing",
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                d.join("tls.crt").display(),
                d.join("other.key").display()
            ),
            "does not fit the certificate",
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                d.join("garbage.pem").display(),
                d.join("tls.key").display()
            ),
            "no PEM certificate",
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: /nonexistent/tls.key\n",
                d.join("tls.crt").display()
            ),
            "cannot read /nonexistent/tls.key",
        ),
        (
            "tls:\n  redirect_http: 127.0.0.1:8080\n".to_owned(),
            "tls.redirect_http: needs tls.cert_file",
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n  redirect_http: 127.0.0.1:4180\n",
                d.join("tls.crt").display(),
                d.join("tls.key").display()
            ),
            "tls.redirect_http: must listen on another port",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let path = d.join(format!("case{i}.yaml"));
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let out = common::dinggate()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "case {i} passed:\n{text}");
        assert!(text.contains(want), "case {i}: {want:?} not in\n{text}");
    }
    // And the good pair passes, with a warning for an http public_url.
    let path = d.join("good.yaml");
    std::fs::write(
        &path,
        format!(
            "{}tls:\n  cert_file: {}\n  key_file: {}\n",
            base.replace("https://localhost", "http://localhost"),
            d.join("tls.crt").display(),
            d.join("tls.key").display()
        ),
    )
    .unwrap();
    let out = common::dinggate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("is http while the gateway terminates TLS"),
        "{text}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
