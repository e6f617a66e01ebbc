//! End to end: https upstreams (verification, server_name, mTLS, insecure_skip_verify, upgrades) against a TLS upstream with certificates made at test time.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use dinggate::demo::Stack;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A test CA, a server certificate it issued for `localhost` and `app.internal`, a client
/// certificate it issued, and the PEM files of all of them in a temporary directory.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    server: (Vec<rustls::pki_types::CertificateDer<'static>>, String),
    client_ca: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("dinggate-tls-e2e-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "dinggate test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "app.internal".to_owned()])
                .unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params =
            CertificateParams::new(vec!["gateway.internal".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            server: (
                vec![server_cert.der().clone(), ca.der().clone()],
                server_key.serialize_pem(),
            ),
            client_ca: ca.der().clone(),
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki.write("client.pem", &client_cert.pem());
        pki.write("client.key", &client_key.serialize_pem());
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts the demo upstream (echo, upgrades) behind TLS; with `require_client_cert`, only
    /// clients presenting a certificate issued by the test CA get through the handshake.
    async fn upstream(&self, require_client_cert: bool) -> SocketAddr {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.client_ca.clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = rustls::pki_types::PrivateKeyDer::try_from(
            rustls::pki_types::pem::PemObject::from_pem_slice(self.server.1.as_bytes())
                .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| {
                    k.secret_pkcs8_der().to_vec()
                })
                .unwrap(),
        )
        .unwrap();
        let config = builder
            .with_single_cert(self.server.0.clone(), key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        dinggate::demo::upstream_handler(req, peer)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Everything the gateway logs while the guard lives (this test's thread only).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// A stack whose only route goes to `upstream` with `tls` (YAML lines under `tls:`).
async fn stack_to(upstream: &str, tls: &str) -> Stack {
    let tls = if tls.is_empty() {
        String::new()
    } else {
        let lines: String = tls.lines().map(|l| format!("      {l}\n")).collect();
        format!("    tls:\n{lines}")
    };
    stack(&format!(
        "routes:\n  - name: secure-app\n    upstream: \"{upstream}\"\n{tls}"
    ))
    .await
}

async fn status_through(stack: &Stack) -> StatusCode {
    let client = logged_in(stack, "lisi").await;
    get_json(&client, &format!("{}/echo", stack.url()))
        .await
        .status()
}

#[tokio::test]
async fn a_trusted_https_upstream_gets_the_request_with_identity_headers() {
    let pki = Pki::new("trusted");
    let addr = pki.upstream(false).await;
    let stack = stack_to(
        &format!("https://localhost:{}", addr.port()),
        &format!("ca_file: {}", pki.path("ca.pem")),
    )
    .await;
    let client = logged_in(&stack, "lisi").await;
    let echoed = echo(
        &client,
        &format!("{}/echo/x?y=1", stack.url()),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(echoed["path"], "/echo/x");
    assert_eq!(echoed["query"], "y=1");
    let union_id = stack
        .mock
        .settings()
        .org
        .user("lisi")
        .unwrap()
        .union_id
        .clone();
    assert_eq!(header(&echoed, "x-forwarded-user"), Some(union_id.as_str()));
    assert_eq!(
        header(&echoed, "x-dingtalk-name"),
        Some("%E6%9D%8E%E5%9B%9B")
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_unknown_issuer_is_a_502_with_a_hint_naming_the_route_and_ca_file() {
    let pki = Pki::new("unknown-issuer");
    let addr = pki.upstream(false).await;
    let log = Log::default();
    let _guard = log.capture();
    // No ca_file: the system roots do not know the test CA.
    let stack = stack_to(&format!("https://localhost:{}", addr.port()), "").await;
    assert_eq!(status_through(&stack).await, StatusCode::BAD_GATEWAY);
    let text = log.text();
    assert!(
        text.contains("route `secure-app`") && text.contains("`localhost`"),
        "{text}"
    );
    assert!(text.contains("set tls.ca_file"), "{text}");
    stack.stop().await;
}

#[tokio::test]
async fn server_name_is_what_is_verified() {
    let pki = Pki::new("server-name");
    let addr = pki.upstream(false).await;
    let ca = format!("ca_file: {}", pki.path("ca.pem"));

    // By IP: the certificate names no IP, so server_name says which name to verify.
    let by_ip = format!("https://127.0.0.1:{}", addr.port());
    let stack = stack_to(&by_ip, &format!("{ca}\nserver_name: app.internal")).await;
    assert_eq!(status_through(&stack).await, StatusCode::OK);
    stack.stop().await;

    let log = Log::default();
    let _guard = log.capture();
    let stack = stack_to(
        &format!("https://localhost:{}", addr.port()),
        &format!("{ca}\nserver_name: other.internal"),
    )
    .await;
    assert_eq!(status_through(&stack).await, StatusCode::BAD_GATEWAY);
    let text = log.text();
    assert!(
        text.contains("not valid for `other.internal`") && text.contains("tls.server_name"),
        "{text}"
    );
    stack.stop().await;

    // By IP without server_name: the IP is verified, and the certificate does not cover it.
    let stack = stack_to(&by_ip, &ca).await;
    assert_eq!(status_through(&stack).await, StatusCode::BAD_GATEWAY);
    stack.stop().await;
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_gets_one_only_when_configured() {
    let pki = Pki::new("mtls");
    let addr = pki.upstream(true).await;
    let upstream = format!("https://localhost:{}", addr.port());
    let ca = format!("ca_file: {}", pki.path("ca.pem"));

    let log = Log::default();
    let guard = log.capture();
    let stack = stack_to(&upstream, &ca).await;
    assert_eq!(status_through(&stack).await, StatusCode::BAD_GATEWAY);
    let text = log.text();
    assert!(
        text.contains("route `secure-app`") && text.contains("set tls.cert_file and tls.key_file"),
        "{text}"
    );
    stack.stop().await;
    drop(guard);

    let stack = stack_to(
        &upstream,
        &format!(
            "{ca}\ncert_file: {}\nkey_file: {}",
            pki.path("client.pem"),
            pki.path("client.key")
        ),
    )
    .await;
    assert_eq!(status_through(&stack).await, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn insecure_skip_verify_connects_and_is_warned_about_at_startup() {
    let pki = Pki::new("insecure");
    let addr = pki.upstream(false).await;
    let log = Log::default();
    let _guard = log.capture();
    let stack = stack_to(
        &format!("https://127.0.0.1:{}", addr.port()),
        "insecure_skip_verify: true",
    )
    .await;
    let text = log.text();
    assert!(
        text.contains("WARN")
            && text.contains("insecure_skip_verify")
            && text.contains("secure-app"),
        "{text}"
    );
    assert_eq!(status_through(&stack).await, StatusCode::OK);
    assert!(stack
        .state
        .config
        .routes
        .describe()
        .contains("NOT verified"));
    stack.stop().await;
}

#[tokio::test]
async fn the_top_level_upstream_takes_upstream_tls() {
    let pki = Pki::new("top-level");
    let addr = pki.upstream(false).await;
    let stack = stack(&format!(
        "upstream: \"https://127.0.0.1:{}\"\nupstream_tls:\n  ca_file: {}\n  server_name: app.internal\n",
        addr.port(),
        pki.path("ca.pem")
    ))
    .await;
    assert_eq!(status_through(&stack).await, StatusCode::OK);
    stack.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_are_bridged_to_an_https_upstream() {
    let pki = Pki::new("upgrade");
    let addr = pki.upstream(false).await;
    let stack = stack_to(
        &format!("https://localhost:{}", addr.port()),
        &format!("ca_file: {}", pki.path("ca.pem")),
    )
    .await;
    let org = stack.mock.settings().org.clone();
    let id = dinggate::identity::Identity {
        union_id: org.user("lisi").unwrap().union_id.clone(),
        name: "李四".into(),
        avatar: None,
        email: None,
        corp_id: Some(org.corp_id().to_owned()),
        open_id: None,
        enterprise: None,
    };
    let token = stack.state.sessions.mint(&id, stack.state.clock.now());
    let mut tcp = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: _dinggate={token}\r\n\r\n",
        stack.gateway
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all("ping 你好".as_bytes()).await.unwrap();
    let mut got = vec![0u8; "ping 你好".len()];
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_exact(&mut got))
        .await
        .expect("echo within 5 s")
        .unwrap();
    assert_eq!(got, "ping 你好".as_bytes());
    stack.stop().await;
}

#[tokio::test]
async fn tls_on_an_http_upstream_is_refused_by_config() {
    let err = Stack::start(
        0,
        "routes:\n  - upstream: \"http://127.0.0.1:1\"\n    tls:\n      insecure_skip_verify: true\n",
    )
    .await
    .err()
    .expect("refused");
    let text = format!("{err:?}");
    assert!(text.contains("routes[0].tls"), "{text}");
}

#[test]
fn check_shows_unverified_routes_and_names_every_tls_problem() {
    let pki = Pki::new("check");
    pki.write(
        "gateway.yaml",
        r#"
public_url: https://gate.example.com
upstream: https://127.0.0.1:8443
dingtalk:
  client_id: dingabc
  client_secret: s3cret
  corp_id: dingcorp
session:
  signing_key: "0123456789abcdef0123456789abcdef"
"#,
    );
    let check = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dinggate"));
        for (k, _) in std::env::vars() {
            if k.starts_with("DINGGATE_") {
                c.env_remove(k);
            }
        }
        let out = c
            .args(["check", "--config", &pki.path("gateway.yaml")])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check(&[("DINGGATE_UPSTREAM_TLS__INSECURE_SKIP_VERIFY", "true")]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("WARNING: certificate NOT verified (insecure_skip_verify)"),
        "{stderr}"
    );
    // An https upstream without ca_file needs the system roots: none found → refused.
    let (ok, stderr) = check(&[
        ("SSL_CERT_FILE", "/nonexistent/bundle.pem"),
        ("SSL_CERT_DIR", "/nonexistent/certs"),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("upstream: no system CA certificates were found"),
        "{stderr}"
    );
    let (ok, stderr) = check(&[
        ("DINGGATE_UPSTREAM_TLS__CA_FILE", "/nonexistent/ca.pem"),
        ("DINGGATE_UPSTREAM_TLS__CERT_FILE", &pki.path("ca.pem")),
    ]);
    assert!(!ok);
    assert!(
        // A value from the environment is reported under its variable's name.
        stderr.contains("DINGGATE_UPSTREAM_TLS__CA_FILE: cannot read /nonexistent/ca.pem")
            && stderr.contains("(from the environment, key upstream_tls.ca_file)")
            && stderr.contains("upstream_tls.key_file: missing"),
        "{stderr}"
    );
}
