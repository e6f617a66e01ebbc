//! `dinggate demo`: mock DingTalk + a demo upstream + the gateway on loopback, wired together.
//! The same `Stack` is what the end-to-end tests start.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use figment::providers::{Format, Yaml};
use figment::Figment;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::mock::{self, MockDingTalk, MockSettings};
use crate::pages::escape_html;
use crate::reload::{ReloadError, Reloaded};
use crate::server::{serve_http, ServerLimits};
use crate::state::{AppState, BuildError, Live};

/// Largest body the demo upstream echoes back.
const ECHO_LIMIT: usize = 1024 * 1024;

/// Why the demo stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A listener could not be bound.
    #[error("cannot bind a loopback port: {0}")]
    Bind(#[source] std::io::Error),
    /// The generated configuration was refused (a bug, or bad `extra_yaml`).
    #[error("demo configuration: {0}")]
    Config(#[source] ConfigError),
    /// The gateway state could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A running mock DingTalk, demo upstream and gateway.
pub struct Stack {
    /// Where the gateway listens.
    pub gateway: SocketAddr,
    /// Where the mock DingTalk listens (login, api and oapi base URL).
    pub mock_addr: SocketAddr,
    /// Where the demo upstream listens.
    pub upstream: SocketAddr,
    /// Handle to the mock, to inspect calls or inject faults.
    pub mock: MockDingTalk,
    /// The gateway's state at start (tests move its clock, which reloads keep).
    pub state: Arc<AppState>,
    /// The state in service; [`Stack::reload`] replaces it.
    pub live: Live,
    /// The generated configuration (with its signing key), which reloads start from.
    base_yaml: String,
    /// The `extra_yaml` the stack started with (replicas start from it too).
    extra_yaml: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    /// Starts all three on loopback. `gateway_port` 0 picks a free port (a busy port also falls
    /// back to a free one). `extra_yaml` is merged over the generated config, e.g. to change a
    /// timeout; `{mock}` in it stands for the mock's `host:port`, `{gateway_port}` for the
    /// gateway's port.
    pub async fn start(gateway_port: u16, extra_yaml: &str) -> Result<Stack, StackError> {
        Self::start_with(gateway_port, extra_yaml, MockSettings::default()).await
    }

    /// Like [`Stack::start`] with explicit mock settings.
    pub async fn start_with(
        gateway_port: u16,
        extra_yaml: &str,
        mut settings: MockSettings,
    ) -> Result<Stack, StackError> {
        let mock_listener = bind(0).await?;
        let upstream_listener = bind(0).await?;
        let gateway_listener = match bind(gateway_port).await {
            Ok(l) => l,
            Err(_) if gateway_port != 0 => bind(0).await?,
            Err(e) => return Err(e),
        };
        let addr = |l: &TcpListener| l.local_addr().map_err(StackError::Bind);
        let (mock_addr, upstream, gateway) = (
            addr(&mock_listener)?,
            addr(&upstream_listener)?,
            addr(&gateway_listener)?,
        );

        let corp = settings.org.corp_id().to_owned();
        let yaml = format!(
            r#"
listen: "{gateway}"
public_url: "http://{gateway}"
upstream: "http://{upstream}"
dingtalk:
  client_id: "{client_id}"
  client_secret: "{client_secret}"
  corp_id: "{corp}"
  login_url: "http://{mock_addr}"
  api_url: "http://{mock_addr}"
  oapi_url: "http://{mock_addr}"
  timeout: 5s
session:
  signing_key: "{key}"
# Everything runs on loopback, so every client shares one address; tests that exercise the
# limits turn them on in `extra_yaml`.
rate_limit:
  enabled: false
"#,
            client_id = settings.client_id,
            client_secret = settings.client_secret,
            key = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
        );
        let config = stack_config(&yaml, extra_yaml, mock_addr, gateway.port())
            .map_err(StackError::Config)?;
        let state = Arc::new(AppState::build(config)?);
        let live = Live::new(state.clone());
        if settings.redirect_urls.is_empty() && settings.org.app().redirect_urls.is_empty() {
            settings.redirect_urls = vec![state.config.callback_url()];
        }
        if settings.homepage_domains.is_empty() && settings.org.app().homepage_domains.is_empty() {
            // As an operator registers it: the gateway's own host is the app's login-free address.
            settings.homepage_domains = state
                .config
                .public_url
                .host_str()
                .map(str::to_owned)
                .into_iter()
                .collect();
        }
        let mock = MockDingTalk::new(settings);

        let (shutdown, rx) = watch::channel(false);
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let tasks = vec![
            tokio::spawn(mock::serve(mock_listener, mock.clone(), stop(rx.clone()))),
            tokio::spawn(serve_http(
                upstream_listener,
                ServerLimits::default(),
                upstream_handler,
                stop(rx.clone()),
            )),
            tokio::spawn(crate::serve(gateway_listener, live.clone(), stop(rx))),
        ];
        Ok(Stack {
            gateway,
            mock_addr,
            upstream,
            mock,
            state,
            live,
            base_yaml: yaml,
            extra_yaml: extra_yaml.to_owned(),
            shutdown,
            tasks,
        })
    }

    /// Starts a second gateway of the same fleet on a free loopback port: the same generated
    /// configuration (signing key, `public_url`, mock DingTalk and upstream) with `extra_yaml`
    /// merged over the original stack's, and a state of its own (caches, app token, store
    /// connection), as another replica behind one load balancer has. [`Stack::stop`] on the
    /// replica stops only its gateway.
    pub async fn replica(&self, extra_yaml: &str) -> Result<Stack, StackError> {
        let listener = bind(0).await?;
        let gateway = listener.local_addr().map_err(StackError::Bind)?;
        let extra = format!("{}\n{extra_yaml}", self.extra_yaml);
        let config = stack_config(
            &self.base_yaml,
            &format!("{extra}\nlisten: \"{gateway}\""),
            self.mock_addr,
            self.gateway.port(),
        )
        .map_err(StackError::Config)?;
        let state = Arc::new(AppState::build(config)?);
        let live = Live::new(state.clone());
        let (shutdown, mut rx) = watch::channel(false);
        let tasks = vec![tokio::spawn(crate::serve(
            listener,
            live.clone(),
            async move {
                let _ = rx.wait_for(|v| *v).await;
            },
        ))];
        Ok(Stack {
            gateway,
            mock_addr: self.mock_addr,
            upstream: self.upstream,
            mock: self.mock.clone(),
            state,
            live,
            base_yaml: self.base_yaml.clone(),
            extra_yaml: extra,
            shutdown,
            tasks,
        })
    }

    /// This gateway's own address as a URL (`http://127.0.0.1:port`); differs from
    /// [`Stack::url`] on a [`Stack::replica`], whose `public_url` is the fleet's.
    pub fn local_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    /// The gateway's public URL (`public_url`), e.g. `http://127.0.0.1:4180`.
    pub fn url(&self) -> String {
        self.state.config.public_origin()
    }

    /// Reloads the gateway's configuration as SIGHUP does, with `extra_yaml` (same placeholders
    /// as in [`Stack::start`]) merged over the generated configuration instead of the one it
    /// started with.
    pub fn reload(&self, extra_yaml: &str) -> Result<Reloaded, ReloadError> {
        crate::reload::reload(&self.live, || self.config_with(extra_yaml))
    }

    /// The stack's generated configuration with `extra_yaml` merged over it (as in
    /// [`Stack::reload`]), e.g. for a [`crate::reload::watch`] to find.
    pub fn config_with(&self, extra_yaml: &str) -> Result<Config, ConfigError> {
        stack_config(
            &self.base_yaml,
            extra_yaml,
            self.mock_addr,
            self.gateway.port(),
        )
    }

    /// Stops all three servers and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The stack's configuration: `yaml` with `extra_yaml` merged over it.
fn stack_config(
    yaml: &str,
    extra_yaml: &str,
    mock_addr: SocketAddr,
    gateway_port: u16,
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new().merge(Yaml::string(yaml));
    if !extra_yaml.trim().is_empty() {
        let extra = extra_yaml
            .replace("{mock}", &mock_addr.to_string())
            .replace("{gateway_port}", &gateway_port.to_string());
        figment = figment.merge(Yaml::string(&extra));
    }
    Config::from_figment(figment)
}

async fn bind(port: u16) -> Result<TcpListener, StackError> {
    crate::server::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)), 1024)
        .map_err(StackError::Bind)
}

/// The demo's route table (only `dinggate demo`; the tests' stack has one open route): the
/// whole site for every member, an admins-only path and a department path, so a newcomer meets
/// the 403 page and a department rule.
pub const DEMO_ROUTES: &str = r#"
routes:
  - name: site
    path_prefix: /
  - name: admin
    path_prefix: /admin
    allow: { admins: true }
  - name: finance
    path_prefix: /finance
    allow: { departments: [300] }
"#;

/// Runs the demo until Ctrl-C.
pub async fn run() -> anyhow::Result<()> {
    let stack = Stack::start(4180, DEMO_ROUTES).await?;
    let org = &stack.mock.settings().org;
    let routes = stack.state.config.routes.routes();
    let users = demo_users(org, routes);
    let mut rules: String = routes
        .iter()
        .map(|r| format!("  {:<9} {}\n", r.path_prefix, r.policy.describe()))
        .collect();
    let legend = department_legend(org, routes);
    if !legend.is_empty() {
        rules.push_str(&format!("  ({legend})\n"));
    }
    println!(
        "\ndinggate demo is running (all on loopback):\n\n  open      {url}/\n  gateway   {url}  (health: {url}/_dinggate/healthz)\n  DingTalk  http://{mock}  (mock; callback registered for {url}/_dinggate/callback)\n  upstream  http://{up}  (demo app showing the identity headers it receives)\n\nRoutes:\n{rules}\nOn the mock login page, pick one of these users:\n{users}\nTry {url}/admin/ and {url}/finance/ as different users to see the 403 page.\nPress Ctrl-C to stop.\n",
        url = stack.url(),
        mock = stack.mock_addr,
        up = stack.upstream,
    );
    tokio::signal::ctrl_c().await?;
    stack.stop().await;
    Ok(())
}

/// One line per mock user: userid, name, department (or why they cannot log in) and the route
/// prefixes they may open, decided by the routes' real policies.
pub fn demo_users(org: &mock::Org, routes: &[crate::config::routes::Route]) -> String {
    let mut rows = vec![[
        "userid".to_owned(),
        "name".to_owned(),
        "department".to_owned(),
        "may open".to_owned(),
    ]];
    rows.extend(org.users().iter().map(|u| {
        let department = u
            .departments
            .first()
            .and_then(|d| org.department(*d))
            .map_or_else(|| "-".to_owned(), |d| d.name.clone());
        let may_open = if org.is_member(u) && u.active {
            let id = demo_identity(org, u);
            routes
                .iter()
                .filter(|r| r.policy.evaluate(&id) == crate::authz::Decision::Allow)
                .map(|r| r.path_prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            format!("nothing ({})", org.status_of(u))
        };
        [u.userid.clone(), u.name.clone(), department, may_open]
    }));
    mock::org::columns(&rows)
}

/// The departments a route table names, `id = name` as the org calls them.
fn department_legend(org: &mock::Org, routes: &[crate::config::routes::Route]) -> String {
    let mut ids: Vec<u64> = routes
        .iter()
        .flat_map(|r| {
            r.policy
                .allow
                .departments
                .iter()
                .chain(&r.policy.deny.departments)
        })
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .filter_map(|id| {
            org.department(*id)
                .map(|d| format!("department {id} = {}", d.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The identity the gateway would mint for a member of the mock org (with directory data).
fn demo_identity(org: &mock::Org, u: &mock::org::User) -> crate::identity::Identity {
    let mut tree: Vec<u64> = u
        .departments
        .iter()
        .flat_map(|d| org.parent_chain(*d))
        .collect();
    tree.sort_unstable();
    tree.dedup();
    crate::identity::Identity {
        union_id: u.union_id.clone(),
        name: u.name.clone(),
        avatar: None,
        email: u.email.clone(),
        corp_id: Some(
            u.corp_id
                .clone()
                .unwrap_or_else(|| org.corp_id().to_owned()),
        ),
        open_id: Some(u.open_id.clone()),
        enterprise: Some(crate::identity::Enterprise {
            user_id: u.userid.clone(),
            departments: u.departments.clone(),
            department_tree: tree,
            admin: u.admin,
            title: u.title.clone(),
        }),
    }
}

/// The demo upstream. `GET /` (HTML) shows the identity headers it received; any request with
/// `Accept: application/json` or under `/echo` gets method, path, headers and body back as
/// JSON; `/slow?ms=N` waits first (timeouts); `Upgrade: websocket` switches protocols and echoes
/// the raw bytes back (enough to prove the gateway's tunnel; no WebSocket framing).
pub async fn upstream_handler(
    mut req: Request<Incoming>,
    _peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(ms) = req
        .uri()
        .path()
        .strip_prefix("/slow")
        .and(query_ms(req.uri().query()))
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let (mut r, mut w) = tokio::io::split(&mut io);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return Ok(resp);
    }

    let wants_json = req.uri().path().starts_with("/echo")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = entry {
            values.push(
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
    }
    if wants_json {
        let body = match Limited::new(body, ECHO_LIMIT).collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => "<body too large or broken>".to_owned(),
        };
        let json = serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": body,
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }
    Ok(identity_page(&parts.headers))
}

fn query_ms(query: Option<&str>) -> Option<u64> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "ms")
        .and_then(|(_, v)| v.parse().ok())
}

fn identity_page(headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let rows: String = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-"))
        .map(|(n, v)| {
            let raw = String::from_utf8_lossy(v.as_bytes());
            let decoded = percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy();
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                escape_html(n.as_str()),
                escape_html(&raw),
                escape_html(&decoded)
            )
        })
        .collect();
    let name = headers
        .get("x-dingtalk-name")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "(unknown)".to_owned());
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Demo app</title>
<style>body{{font-family:system-ui,"PingFang SC",sans-serif;margin:40px;color:#1f2329}}table{{border-collapse:collapse}}td{{border:1px solid #dee0e3;padding:6px 10px}}</style>
</head><body><h1>你好，{name}</h1>
<p>This page is served by the demo upstream. Everything below arrived as request headers set by dinggate
(the raw value is percent-encoded UTF-8; the last column is decoded).</p>
<table><tr><td><b>header</b></td><td><b>raw value</b></td><td><b>decoded</b></td></tr>{rows}</table>
<p>Try: <a href="/admin/">/admin/</a> (organization administrators) · <a href="/finance/">/finance/</a> (财务部) — in <code>dinggate demo</code> only</p>
<p><a href="/_dinggate/userinfo">/_dinggate/userinfo</a> · <a href="/_dinggate/sign_out">sign out / 退出登录</a></p>
</body></html>"#,
        name = escape_html(&name),
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
