//! A minimal W3C WebDriver client driving headless Chromium through `chromedriver`, for tests/browser.rs.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// Debian's Chromium binary.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long `chromedriver` may take to start listening.
const DRIVER_START: Duration = Duration::from_secs(20);

const INSTALL_HINT: &str =
    "the browser tests need Chromium and its WebDriver: on Debian/Ubuntu run \
     `apt-get install -y chromium chromium-driver` (as root), or run the plain `cargo test` \
     without `--features browser-tests`";

/// A WebDriver command that failed.
#[derive(Debug)]
pub struct WebDriverError {
    /// The command, e.g. `POST /session/{id}/element`.
    pub command: String,
    /// HTTP status, 0 when the request itself failed.
    pub status: u16,
    /// WebDriver error code (`no such element`, ...) or the transport error.
    pub error: String,
    /// WebDriver's message.
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {}: {}",
            self.command, self.status, self.error, self.message
        )
    }
}

/// How the browser presents itself.
#[derive(Default, Clone)]
pub struct Options {
    /// Replaces Chromium's User-Agent.
    pub user_agent: Option<String>,
    /// `Accept-Language`, e.g. `zh-CN,zh`.
    pub accept_language: Option<String>,
}

/// An element found on the page.
pub struct Element {
    id: String,
    selector: String,
}

/// One headless Chromium session behind its own `chromedriver`. Dropping it ends the session,
/// kills the driver and removes the browser profile.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    closed: bool,
    driver: Child,
    profile: PathBuf,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts `chromedriver` on a free port and opens a fresh headless Chromium session.
    /// Panics, saying how to install them, when Chromium or chromedriver is missing.
    pub async fn start(options: Options) -> Browser {
        assert!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} not found: {INSTALL_HINT}"
        );
        let driver_bin = find_in_path("chromedriver")
            .unwrap_or_else(|| panic!("chromedriver not found in PATH: {INSTALL_HINT}"));

        let profile = std::env::temp_dir().join(format!(
            "dinggate-chromium-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let port = free_port();
        let log = std::fs::File::create(profile.join("chromedriver.log")).expect("driver log");
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e}: {INSTALL_HINT}", driver_bin.display())
            });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("HTTP client");
        let mut browser = Browser {
            http,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            closed: true,
            driver,
            profile,
        };
        browser.wait_for_driver().await;

        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1100,900".to_owned(),
            format!(
                "--user-data-dir={}",
                browser.profile.join("chromium").display()
            ),
        ];
        if let Some(ua) = &options.user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        let mut chrome = json!({ "binary": CHROMIUM, "args": args });
        if let Some(lang) = &options.accept_language {
            chrome["prefs"] = json!({ "intl.accept_languages": lang });
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
                    "goog:chromeOptions": chrome,
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let created = browser
            .command(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Chromium through chromedriver: {e}\n{}\n{INSTALL_HINT}",
                    browser.driver_log()
                )
            });
        browser.session = created["sessionId"]
            .as_str()
            .expect("new session has an id")
            .to_owned();
        browser.closed = false;
        browser
    }

    async fn wait_for_driver(&mut self) {
        let deadline = Instant::now() + DRIVER_START;
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}): {}\n{INSTALL_HINT}",
                    self.driver_log()
                );
            }
            if let Ok(status) = self.command(reqwest::Method::GET, "/status", None).await {
                if status["ready"].as_bool() == Some(true) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready within {DRIVER_START:?}: {}",
                self.driver_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.profile.join("chromedriver.log"))
            .map(|log| {
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            })
            .unwrap_or_default()
    }

    /// Sends one WebDriver command and returns its `value`.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let command = format!("{method} {path}");
        let fail = |status: u16, error: String, message: String| WebDriverError {
            command: command.clone(),
            status,
            error,
            message,
        };
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| fail(0, "transport".into(), e.to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| fail(status, "bad response".into(), e.to_string()))?;
        let value = body.get("value").cloned().unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(fail(
                status,
                value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                value["message"].as_str().unwrap_or("").to_owned(),
            ))
        }
    }

    async fn session_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let full = format!("/session/{}{path}", self.session);
        match self.command(method, &full, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver command failed: {e}"),
        }
    }

    /// Navigates to `url` and waits for the page load (redirects included).
    pub async fn goto(&self, url: &str) {
        self.session_command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let v = self
            .session_command(reqwest::Method::GET, "/url", None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The current DOM serialized as HTML.
    pub async fn source(&self) -> String {
        let v = self
            .session_command(reqwest::Method::GET, "/source", None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching the CSS `selector`, if any.
    pub async fn try_find(&self, selector: &str) -> Option<Element> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({ "using": "css selector", "value": selector });
        match self.command(reqwest::Method::POST, &path, Some(body)).await {
            Ok(v) => Some(Element {
                id: v[ELEMENT_KEY].as_str()?.to_owned(),
                selector: selector.to_owned(),
            }),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver command failed: {e}"),
        }
    }

    /// The first element matching the CSS `selector`; panics (showing the page) when there is none.
    pub async fn find(&self, selector: &str) -> Element {
        match self.try_find(selector).await {
            Some(el) => el,
            None => panic!(
                "no element matches {selector:?} on {}\n{}",
                self.url().await,
                excerpt(&self.source().await)
            ),
        }
    }

    /// Clicks `element` like a user would (scrolls it into view first).
    pub async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.id);
        self.session_command(reqwest::Method::POST, &path, None)
            .await;
    }

    /// Makes `frame` (an `<iframe>` element) the context of the following commands.
    pub async fn enter_frame(&self, frame: &Element) {
        self.session_command(
            reqwest::Method::POST,
            "/frame",
            Some(json!({ "id": { ELEMENT_KEY: frame.id } })),
        )
        .await;
    }

    /// Back to the top-level document.
    pub async fn leave_frames(&self) {
        self.session_command(reqwest::Method::POST, "/frame", Some(json!({ "id": null })))
            .await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let path = format!("/element/{}/text", element.id);
        let v = self
            .session_command(reqwest::Method::GET, &path, None)
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("no text for {}", element.selector))
            .to_owned()
    }

    /// Whether `element` is displayed.
    pub async fn displayed(&self, element: &Element) -> bool {
        let path = format!("/element/{}/displayed", element.id);
        let v = self
            .session_command(reqwest::Method::GET, &path, None)
            .await;
        v.as_bool() == Some(true)
    }

    /// The cookies visible to the current page, HttpOnly ones included.
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self
            .session_command(reqwest::Method::GET, "/cookie", None)
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Runs `js` at the start of every document this session loads from now on, before the
    /// page's own scripts (Chromium DevTools `Page.addScriptToEvaluateOnNewDocument`).
    pub async fn inject_on_new_document(&self, js: &str) {
        let params = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": { "source": js },
        });
        self.session_command(reqwest::Method::POST, "/goog/cdp/execute", Some(params))
            .await;
    }

    /// Console messages logged since the last call (`{"level","message"}`), via chromedriver's
    /// log endpoint.
    pub async fn console(&self) -> Vec<Value> {
        let v = self
            .session_command(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "browser" })),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Panics if the console reported a Content-Security-Policy violation since the last call.
    pub async fn assert_no_csp_violation(&self) {
        let violations: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|m| {
                m["message"]
                    .as_str()
                    .is_some_and(|t| t.contains("Content Security Policy"))
            })
            .collect();
        assert!(violations.is_empty(), "CSP violations: {violations:#?}");
    }

    /// Saves a PNG screenshot as `<dir>/<name>.png` and returns its path; the directory is
    /// `$DINGGATE_SCREENSHOTS` or `<temp>/dinggate-browser`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .session_command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        let dir = std::env::var_os("DINGGATE_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("dinggate-browser"));
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Polls the current URL and page source until `done(url, source)` holds; panics after
    /// `timeout` with what the browser shows.
    pub async fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let (url, source) = (self.url().await, self.source().await);
            if done(&url, &source) {
                return;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("failure").await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the browser is at {url} \
                     (screenshot {})\n{}",
                    shot.display(),
                    excerpt(&source)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (closes Chromium); the driver is stopped on drop.
    pub async fn quit(mut self) {
        if !self.closed {
            let path = format!("/session/{}", self.session);
            let _ = self.command(reqwest::Method::DELETE, &path, None).await;
            self.closed = true;
        }
    }

    /// `DELETE /session/{id}` over a plain blocking socket, usable from `Drop` during a panic.
    fn delete_session_blocking(&self) {
        let Some(addr) = self.base.strip_prefix("http://") else {
            return;
        };
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            self.delete_session_blocking();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The start of a page's text for failure messages.
fn excerpt(source: &str) -> String {
    const MAX: usize = 3000;
    match source.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &source[..i]),
        None => source.to_owned(),
    }
}
