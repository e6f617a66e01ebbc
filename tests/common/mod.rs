//! Shared end-to-end helpers: a running stack and a cookie-keeping client that follows redirects by hand.
#![allow(dead_code)]

use dinggate::demo::Stack;
use reqwest::header::{HeaderMap, ACCEPT, LOCATION};
use reqwest::{Client, Response, StatusCode};

pub const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The real `dinggate` binary, run from the project root, without the `DINGGATE_*` overrides a
/// developer's environment may carry (tests must not inherit them).
pub fn dinggate() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dinggate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DINGGATE_") {
            c.env_remove(k);
        }
    }
    c
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts mock + upstream + gateway with `extra_yaml` appended to the generated config.
pub async fn stack(extra_yaml: &str) -> Stack {
    Stack::start(0, extra_yaml).await.expect("stack starts")
}

/// A browser-like client: keeps cookies, does not follow redirects (tests inspect each hop).
///
/// The test host names `gate.example.test` and `hr.example.test` resolve to 127.0.0.1, for
/// stacks whose `public_url` and host routes use real names (cookie domains need them).
pub fn browser() -> Client {
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve("gate.example.test", loopback)
        .resolve("hr.example.test", loopback)
        .build()
        .unwrap()
}

/// Extra YAML that gives the stack a real host name for `public_url` and a cookie domain that
/// also covers `hr.example.test`, so host routes on that name can log in.
pub const NAMED_HOSTS: &str = r#"
public_url: "http://gate.example.test:{gateway_port}"
redirect_allowlist: [".example.test:{gateway_port}"]
session:
  cookie_domain: example.test
"#;

pub fn location(resp: &Response) -> String {
    resp.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {} response", resp.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Resolves a possibly relative Location against the gateway.
pub fn absolute(stack: &Stack, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_owned()
    } else {
        format!("{}{loc}", stack.url())
    }
}

pub async fn get_html(client: &Client, url: &str) -> Response {
    client.get(url).header(ACCEPT, HTML).send().await.unwrap()
}

/// Starts a login for `path` and returns the DingTalk authorize URL the gateway sent us to.
pub async fn begin_login(stack: &Stack, client: &Client, path: &str) -> String {
    let r = get_html(client, &format!("{}{path}", stack.url())).await;
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "unauthenticated navigation redirects"
    );
    let start = absolute(stack, &location(&r));
    let r = get_html(client, &start).await;
    assert_eq!(r.status(), StatusCode::FOUND, "start redirects to DingTalk");
    location(&r)
}

/// Starts a login directly at `/_dinggate/start` (works with or without a session).
pub async fn start_login(stack: &Stack, client: &Client, rd: &str) -> String {
    let enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let r = get_html(client, &format!("{}/_dinggate/start?rd={enc}", stack.url())).await;
    assert_eq!(r.status(), StatusCode::FOUND, "start redirects to DingTalk");
    location(&r)
}

/// The value of the `name` cookie set by a response.
pub fn cookie_value(resp: &Response, name: &str) -> Option<String> {
    set_cookies(resp).iter().find_map(|c| {
        let pair = c.split(';').next()?;
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| v.to_owned())
    })
}

/// Approves the authorize URL as `userid` at the mock and returns the callback URL it redirects to.
pub async fn approve(client: &Client, authorize_url: &str, userid: &str) -> String {
    let r = get_html(client, &format!("{authorize_url}&mock_user={userid}")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "mock approves {userid}");
    location(&r)
}

/// Full login as `userid` starting at `path`; returns the final response of the callback.
pub async fn login(stack: &Stack, client: &Client, path: &str, userid: &str) -> Response {
    let authorize = begin_login(stack, client, path).await;
    let callback = approve(client, &authorize, userid).await;
    get_html(client, &callback).await
}

/// Logs in and asserts success (302 back to `path`).
pub async fn logged_in(stack: &Stack, userid: &str) -> Client {
    let client = browser();
    let r = login(stack, &client, "/", userid).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login as {userid} succeeds");
    assert_eq!(location(&r), "/");
    client
}

/// GETs `url` as an API client would (`Accept: application/json`).
pub async fn get_json(client: &Client, url: &str) -> Response {
    client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

/// GETs an echo URL with JSON accepted and returns the echoed request.
pub async fn echo(client: &Client, url: &str, headers: HeaderMap) -> serde_json::Value {
    let r = client
        .get(url)
        .header(ACCEPT, "application/json")
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "echo through the gateway");
    r.json().await.unwrap()
}

/// The single value of an echoed header, if present.
pub fn header<'a>(echoed: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    let values = echoed["headers"].get(name)?.as_array()?;
    assert_eq!(values.len(), 1, "header {name} appears once: {values:?}");
    values[0].as_str()
}

/// Every Set-Cookie line of a response.
pub fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A query parameter of a URL.
pub fn param(url: &str, name: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).unwrap();
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Logs `userid` in through `path` and returns the session as a `Cookie` header value.
pub async fn session_cookie(stack: &Stack, path: &str, userid: &str) -> String {
    let client = browser();
    let r = login(stack, &client, path, userid).await;
    assert_eq!(r.status(), StatusCode::FOUND, "login as {userid}");
    let name = &stack.state.config.session.cookie_name;
    let value = cookie_value(&r, name).expect("session cookie");
    format!("{name}={value}")
}

/// A login callback as a replaying attacker captures it: approved at the mock, with the state
/// cookie it needs, sent only when the test says so (by a client without a cookie jar).
pub struct CapturedCallback {
    client: Client,
    /// The callback URL (on the gateway that started the login).
    pub url: String,
    state_cookie: String,
}

impl CapturedCallback {
    /// Starts a login on `stack` and approves it as `userid`.
    pub async fn capture(stack: &Stack, userid: &str) -> CapturedCallback {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = client
            .get(format!("{}/_dinggate/start?rd=/", stack.url()))
            .send()
            .await
            .unwrap();
        let state_cookie = set_cookies(&r)[0].split(';').next().unwrap().to_owned();
        let url = approve(&client, &location(&r), userid).await;
        CapturedCallback {
            client,
            url,
            state_cookie,
        }
    }

    /// Sends the callback, with its state cookie, to `url` (the captured one or a twin on
    /// another gateway) and returns the status.
    pub async fn send_to(&self, url: &str) -> StatusCode {
        self.client
            .get(url)
            .header(ACCEPT, HTML)
            .header(reqwest::header::COOKIE, &self.state_cookie)
            .send()
            .await
            .unwrap()
            .status()
    }
}
