//! `dinggate doctor`: an online preflight of a config against DingTalk and the gateway's own URL.
//!
//! Every probe is chosen so that "not found" and "not allowed" answers differ, and none reads a
//! real person: the look-ups ask for a userid and a unionId that cannot exist.

use std::time::{Duration, SystemTime};

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use url::Url;

use crate::config::Config;
use crate::dingtalk::client::join;
use crate::dingtalk::reported_address;

/// A userid / unionId no organization has: the directory probes must answer "not found".
const PROBE_ID: &str = "dinggate-doctor-probe-0000";
/// Clock difference to DingTalk beyond which sessions and codes misbehave.
const MAX_SKEW: Duration = Duration::from_secs(30);

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// In place.
    Pass,
    /// Wrong: the line says what to fix.
    Fail,
    /// Cannot be checked from here (or nothing to check): says when it will be.
    Info,
}

/// One line of the report, in English and Chinese.
#[derive(Debug, Clone)]
pub struct Line {
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub en: String,
    /// 中文。
    pub zh: String,
}

/// Everything `doctor` found.
#[derive(Debug, Default)]
pub struct Report {
    /// One per check, in the order they ran.
    pub lines: Vec<Line>,
}

impl Report {
    /// True when nothing failed (`doctor` exits 0).
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.status != Status::Fail)
    }

    /// The report as printed: per line a mark, the English text and the Chinese one.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let mark = match l.status {
                Status::Pass => "✔",
                Status::Fail => "✘",
                Status::Info => "ℹ",
            };
            out.push_str(&format!("{mark} {}\n  {}\n", l.en, l.zh));
        }
        let (fails, total) = (
            self.lines
                .iter()
                .filter(|l| l.status == Status::Fail)
                .count(),
            self.lines.len(),
        );
        out.push_str(&if fails == 0 {
            "Everything needed is in place. / 所需配置均已就绪。\n".to_owned()
        } else {
            format!("{fails} of {total} checks failed. / {total} 项检查中有 {fails} 项未通过。\n")
        });
        out
    }

    fn push(&mut self, status: Status, en: impl Into<String>, zh: impl Into<String>) {
        self.lines.push(Line {
            status,
            en: en.into(),
            zh: zh.into(),
        });
    }
}

/// A DingTalk answer, reduced to what the checks look at.
struct Answer {
    status: StatusCode,
    date: Option<SystemTime>,
    body: Value,
}

impl Answer {
    async fn read(resp: Response) -> Answer {
        let status = resp.status();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let body = resp.json().await.unwrap_or(Value::Null);
        Answer { status, date, body }
    }

    /// New API `code` or legacy `errcode`, as text ("" when neither).
    fn code(&self) -> String {
        match (&self.body["code"], &self.body["errcode"]) {
            (Value::String(c), _) => c.clone(),
            (_, Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    fn message(&self) -> String {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        text(&self.body["message"])
            .or_else(|| text(&self.body["errmsg"]))
            .unwrap_or_default()
    }

    /// The egress address DingTalk reports when it refuses the caller's IP.
    fn refused_ip(&self) -> Option<Option<String>> {
        let code = self.code();
        (code == "60020" || code == "Forbidden.AccessDenied.IpNotInWhiteList")
            .then(|| reported_address(&self.message()))
    }
}

/// Runs every check for `config` and reports them; never panics, every failure is a line.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    let dt = &config.dingtalk;
    let http = match Client::builder()
        .timeout(dt.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Status::Fail,
                format!("cannot build an HTTP client: {e}"),
                format!("无法创建 HTTP 客户端：{e}"),
            );
            return report;
        }
    };
    let post = |url: Url, body: Value| http.post(url).json(&body).send();

    // 1. Credentials: the app token.
    let token_url = join(&dt.api_url, "v1.0/oauth2/accessToken");
    let answer = match post(
        token_url.clone(),
        json!({"appKey": dt.client_id, "appSecret": dt.client_secret.expose()}),
    )
    .await
    {
        Ok(resp) => Some(Answer::read(resp).await),
        Err(e) => {
            report.push(
                Status::Fail,
                format!("Cannot reach DingTalk at {token_url}: {e}. Fix: check DNS, firewall and proxy for egress to dingtalk.api_url."),
                format!("无法连接钉钉 {token_url}：{e}。处理：检查本机到 dingtalk.api_url 的 DNS、防火墙和代理。"),
            );
            None
        }
    };
    let mut token = None;
    let mut date = None;
    let mut ip_checked = false;
    if let Some(a) = &answer {
        date = a.date;
        match (a.body["accessToken"].as_str(), a.refused_ip()) {
            (Some(t), _) if a.status.is_success() => {
                token = Some(t.to_owned());
                report.push(
                    Status::Pass,
                    format!("App credentials: client_id {} and its secret get an app token.", dt.client_id),
                    format!("应用凭证正确：client_id {} 及其密钥可以获取应用 access token。", dt.client_id),
                );
            }
            (_, Some(ip)) => {
                ip_checked = true;
                ip_refused(&mut report, ip.as_deref());
            }
            _ if a.code() == "invalidClientIdOrSecret" => {
                credentials_refused(&mut report, &http, config).await;
            }
            _ => report.push(
                Status::Fail,
                format!("App token refused: HTTP {} {} {}. Fix: check dingtalk.client_id / client_secret and that dingtalk.api_url points at DingTalk.", a.status.as_u16(), a.code(), a.message()),
                format!("获取应用 access token 失败：HTTP {} {} {}。处理：检查 dingtalk.client_id / client_secret，以及 dingtalk.api_url 是否指向钉钉。", a.status.as_u16(), a.code(), a.message()),
            ),
        }
    }

    // 2 and 3. IP allow-list and directory permissions, with calls that must say "not found".
    if let Some(token) = &token {
        let legacy = |api: &str| {
            let mut url = join(&dt.oapi_url, api);
            url.query_pairs_mut().append_pair("access_token", token);
            url
        };
        let mut probes: Vec<(&str, &str, &str, Value)> = vec![(
            "topapi/user/getbyunionid",
            "qyapi_get_member",
            "成员信息读权限",
            json!({"unionid": PROBE_ID}),
        )];
        if dt.directory {
            probes.push((
                "topapi/v2/user/get",
                "qyapi_get_member",
                "成员信息读权限",
                json!({"userid": PROBE_ID}),
            ));
            probes.push((
                "topapi/v2/department/listparentbyuser",
                "qyapi_get_department_list",
                "通讯录部门信息读权限",
                json!({"userid": PROBE_ID}),
            ));
        }
        for (api, permission, permission_zh, body) in probes {
            let a = match post(legacy(api), body).await {
                Ok(resp) => Answer::read(resp).await,
                Err(e) => {
                    report.push(
                        Status::Fail,
                        format!("Cannot reach DingTalk's {api}: {e}. Fix: check egress to dingtalk.oapi_url."),
                        format!("无法调用钉钉接口 {api}：{e}。处理：检查本机到 dingtalk.oapi_url 的网络。"),
                    );
                    continue;
                }
            };
            if let Some(ip) = a.refused_ip() {
                if !ip_checked {
                    ip_checked = true;
                    ip_refused(&mut report, ip.as_deref());
                }
                continue;
            }
            if !ip_checked {
                ip_checked = true;
                report.push(
                    Status::Pass,
                    "IP allow-list: DingTalk accepts calls from this machine's address.",
                    "IP 白名单：钉钉接受本机地址发出的调用。",
                );
            }
            match a.code().as_str() {
                // 60121: no such user (dingtalk-api.md §4) — the call itself was allowed.
                "60121" => report.push(
                    Status::Pass,
                    format!("Permission {permission} ({api}): granted."),
                    format!("权限 {permission_zh}（{permission}，{api}）：已开通。"),
                ),
                "60011" | "88" => report.push(
                    Status::Fail,
                    format!("Permission {permission} ({api}) is missing: DingTalk said {} {}. Fix: developer console → the app → 权限管理 → add {permission_zh} ({permission}), then publish a new version.", a.code(), a.message()),
                    format!("缺少权限 {permission_zh}（{permission}，{api}）：钉钉返回 {} {}。处理：开发者后台 → 应用 → 权限管理 → 申请 {permission_zh}，然后发布新版本。", a.code(), a.message()),
                ),
                "0" => report.push(
                    Status::Pass,
                    format!("Permission {permission} ({api}): granted."),
                    format!("权限 {permission_zh}（{permission}，{api}）：已开通。"),
                ),
                other => report.push(
                    Status::Fail,
                    format!("{api} answered HTTP {} {other} {}. Fix: check the app's permissions ({permission}) in the developer console.", a.status.as_u16(), a.message()),
                    format!("{api} 返回 HTTP {} {other} {}。处理：在开发者后台检查应用权限（{permission_zh}）。", a.status.as_u16(), a.message()),
                ),
            }
        }
    }
    report.push(
        Status::Info,
        "Permission Contact.User.Read (通讯录个人信息读权限, read at every scan login with the person's own token) cannot be probed without a person: the first scan login checks it; a missing one is logged with this name.",
        "权限 Contact.User.Read（通讯录个人信息读权限，扫码登录时用登录者本人的 token 读取）无法在无人登录时检测：首次扫码登录时检查，缺少时日志会写明该权限名。",
    );

    // 4. The organization.
    match &dt.corp_id {
        Some(corp) => corp_check(&mut report, &http, config, corp).await,
        None => report.push(
            Status::Info,
            "corp_id is not set: people of any organization pass the scan login unless allow_any_corp is false; in-client login and the directory need it.",
            "未设置 corp_id：扫码登录不限制组织；端内免登和通讯录功能需要它。",
        ),
    }

    // 5. What to register, and whether public_url reaches this gateway.
    let callback = config.callback_url();
    report.push(
        Status::Info,
        format!("Register exactly {callback} as the redirect URL (developer console → 安全设置 → 重定向URL(回调域名))."),
        format!("请将 {callback} 原样登记为重定向URL（开发者后台 → 安全设置 → 重定向URL(回调域名)）。"),
    );
    if dt.inapp_login && dt.corp_id.is_some() {
        let host = config.public_url.host_str().unwrap_or_default();
        report.push(
            Status::Info,
            format!("For the in-client login register {host} as the login-free address (安全设置 → 端内免登地址) and the app's homepage on it."),
            format!("端内免登：请将 {host} 登记为端内免登地址（安全设置 → 端内免登地址），并将应用首页设在该域名下。"),
        );
    }
    health_check(&mut report, &http, config).await;

    // 6. The clock.
    match date {
        Some(theirs) => {
            let ours = SystemTime::now();
            let (skew, ahead) = match ours.duration_since(theirs) {
                Ok(d) => (d, true),
                Err(e) => (e.duration(), false),
            };
            let secs = skew.as_secs();
            if skew > MAX_SKEW {
                let (en, zh) = if ahead {
                    ("ahead of", "快")
                } else {
                    ("behind", "慢")
                };
                report.push(
                    Status::Fail,
                    format!("Clock: this machine is {secs} s {en} DingTalk. Fix: synchronize the clock (chrony / systemd-timesyncd / NTP); sessions and login codes are time-bound."),
                    format!("时钟：本机比钉钉{zh} {secs} 秒。处理：同步系统时钟（chrony / systemd-timesyncd / NTP），会话和登录凭证都有时效。"),
                );
            } else {
                report.push(
                    Status::Pass,
                    format!(
                        "Clock: {secs} s from DingTalk's (up to {} s is fine).",
                        MAX_SKEW.as_secs()
                    ),
                    format!(
                        "时钟：与钉钉相差 {secs} 秒（{} 秒以内即可）。",
                        MAX_SKEW.as_secs()
                    ),
                );
            }
        }
        None => report.push(
            Status::Info,
            "Clock: DingTalk's answer had no Date header to compare with.",
            "时钟：钉钉的响应没有 Date 头，无法比较。",
        ),
    }
    report
}

fn ip_refused(report: &mut Report, ip: Option<&str>) {
    let ip = ip.unwrap_or("(not stated)");
    report.push(
        Status::Fail,
        format!("IP allow-list: DingTalk refuses calls from this machine; it sees the address {ip}. Fix: developer console → the app → 安全设置 → 服务器出口IP: add {ip}."),
        format!("IP 白名单：钉钉拒绝本机的调用，钉钉看到的地址是 {ip}。处理：开发者后台 → 应用 → 安全设置 → 服务器出口IP，添加 {ip}。"),
    );
}

/// DingTalk says only "client id or secret"; the login page tells whether it knows the id.
async fn credentials_refused(report: &mut Report, http: &Client, config: &Config) {
    let dt = &config.dingtalk;
    let mut page = join(&dt.login_url, "oauth2/auth");
    page.query_pairs_mut()
        .append_pair("redirect_uri", &config.callback_url())
        .append_pair("response_type", "code")
        .append_pair("client_id", &dt.client_id)
        .append_pair("scope", "openid")
        .append_pair("prompt", "consent");
    let id_known = match http.get(page).send().await {
        Ok(r) => Some(!r.status().is_client_error()),
        Err(_) => None,
    };
    let (en, zh) = match id_known {
        Some(false) => (
            format!("App credentials: DingTalk does not know client_id {}. Fix: copy the Client ID (AppKey) from the developer console → the app → 凭证与基础信息 into dingtalk.client_id.", dt.client_id),
            format!("应用凭证错误：钉钉不认识 client_id {}。处理：从开发者后台 → 应用 → 凭证与基础信息 复制 Client ID（AppKey）到 dingtalk.client_id。", dt.client_id),
        ),
        Some(true) => (
            format!("App credentials: client_id {} exists, but the secret is wrong. Fix: copy the Client Secret (AppSecret) from the developer console → 凭证与基础信息 into dingtalk.client_secret (or its environment variable).", dt.client_id),
            format!("应用凭证错误：client_id {} 存在，但密钥不对。处理：从开发者后台 → 凭证与基础信息 复制 Client Secret（AppSecret）到 dingtalk.client_secret（或对应的环境变量）。", dt.client_id),
        ),
        None => (
            "App credentials: DingTalk refused client_id + client_secret (invalidClientIdOrSecret) and the login page could not be reached to tell which. Fix: copy both again from 凭证与基础信息.".to_owned(),
            "应用凭证错误：钉钉拒绝了 client_id + client_secret（invalidClientIdOrSecret），且无法访问登录页判断是哪一个。处理：从凭证与基础信息重新复制两者。".to_owned(),
        ),
    };
    report.push(Status::Fail, en, zh);
}

/// An internal app gets a token for its own organization only.
async fn corp_check(report: &mut Report, http: &Client, config: &Config, corp: &str) {
    let dt = &config.dingtalk;
    let url = join(&dt.api_url, &format!("v1.0/oauth2/{corp}/token"));
    let body = json!({
        "client_id": dt.client_id,
        "client_secret": dt.client_secret.expose(),
        "grant_type": "client_credentials",
    });
    match http.post(url).json(&body).send().await {
        Ok(resp) => {
            let a = Answer::read(resp).await;
            if a.status.is_success() && a.body["access_token"].is_string() {
                report.push(
                    Status::Pass,
                    format!("Organization: the app belongs to corp_id {corp}."),
                    format!("组织：应用属于 corp_id {corp}。"),
                );
            } else if a.code() == "invalid.client" || a.code() == "invalidClientIdOrSecret" {
                report.push(
                    Status::Info,
                    "Organization: not checked, the app credentials are wrong (see above).",
                    "组织：应用凭证错误，未检查（见上）。",
                );
            } else {
                report.push(
                    Status::Fail,
                    format!("Organization: corp_id {corp} is not the organization this app belongs to (DingTalk: HTTP {} {}). Fix: copy the CorpId from the developer console's home page into dingtalk.corp_id.", a.status.as_u16(), a.code()),
                    format!("组织：corp_id {corp} 不是该应用所属的组织（钉钉返回 HTTP {} {}）。处理：从开发者后台首页复制 CorpId 到 dingtalk.corp_id。", a.status.as_u16(), a.code()),
                );
            }
        }
        Err(e) => report.push(
            Status::Fail,
            format!("Organization: cannot reach DingTalk to check corp_id: {e}."),
            format!("组织：无法连接钉钉检查 corp_id：{e}。"),
        ),
    }
}

/// `public_url` must lead to this gateway: DNS, TLS and the load balancer all on the way.
async fn health_check(report: &mut Report, http: &Client, config: &Config) {
    let url = join(
        &config.public_url,
        &format!("{}/healthz", config.prefix.trim_start_matches('/')),
    );
    match http.get(url.clone()).send().await {
        Ok(r) if r.status() == StatusCode::OK => report.push(
            Status::Pass,
            format!("public_url: {url} answers from this machine (DNS, TLS and the load balancer lead to a gateway)."),
            format!("public_url：本机可以访问 {url}（DNS、TLS 和负载均衡均可到达网关）。"),
        ),
        Ok(r) => report.push(
            Status::Fail,
            format!("public_url: {url} answered HTTP {} instead of 200. Fix: the load balancer or proxy in front must pass {} to the gateway.", r.status().as_u16(), config.prefix),
            format!("public_url：{url} 返回 HTTP {}，而不是 200。处理：前面的负载均衡或代理需要把 {} 转发给网关。", r.status().as_u16(), config.prefix),
        ),
        Err(e) => {
            let why = error_chain(&e);
            report.push(
                Status::Fail,
                format!("public_url: {url} cannot be reached from this machine: {why}. Fix: start the gateway, and check DNS, the TLS certificate and the load balancer for this URL."),
                format!("public_url：本机无法访问 {url}：{why}。处理：启动网关，并检查该地址的 DNS、TLS 证书和负载均衡。"),
            );
        }
    }
}

/// `e` with its causes ("error sending request: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
