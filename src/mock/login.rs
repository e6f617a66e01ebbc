//! `GET /oauth2/auth`: validates the authorize request like login.dingtalk.com, shows the account picker, redirects back with a code.

use http::StatusCode;
use url::Url;

use super::org::{Org, User, ROOT_DEPARTMENT};
use super::pages::{self, LoginPage, LoginRow, Standing};
use super::state::UserGrant;
use super::wire::{self, Resp};
use super::{MockDingTalk, MockRequest};

/// Query parameters that steer the mock itself; they are never part of a real authorize URL.
const MOCK_USER: &str = "mock_user";
const MOCK_REFUSE: &str = "mock_refuse";
/// With `mock_user`: the organization the person picks (for people in several).
const MOCK_CORP: &str = "mock_corp";
/// The authorize page runs inside the `DTFrameLogin` stand-in's iframe: answers are messages to
/// the embedding page instead of redirects.
const MOCK_FRAME: &str = "mock_frame";

/// An authorize request that passed validation.
struct AuthorizeRequest {
    redirect_uri: Url,
    scope: String,
    with_corp: bool,
    state: Option<String>,
    /// `exclusiveLogin=true&exclusiveCorpId=…`: only that organization's accounts may log in.
    exclusive_corp: Option<String>,
}

impl AuthorizeRequest {
    fn parse(
        req: &MockRequest,
        client_id: &str,
        registered: &[String],
    ) -> Result<AuthorizeRequest, String> {
        if req.query("client_id") != Some(client_id) {
            return Err("无效的应用：client_id 不存在或未开通钉钉登录。".into());
        }
        let redirect = req
            .query_non_empty("redirect_uri")
            .ok_or("缺少参数 redirect_uri。")?;
        let redirect_uri = Url::parse(redirect)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or("redirect_uri 不是有效的 http(s) 地址。")?;
        if !registered.is_empty() && !is_registered(&redirect_uri, registered) {
            // DingTalk's page shows the mismatch and goes nowhere: nothing is sent back.
            return Err(format!(
                "redirect_uri 与应用登记的重定向URL(回调域名)不一致 / redirect_uri does not match the app's registered redirect URL: sent {}, registered {}。",
                without_query(&redirect_uri),
                registered.join(", ")
            ));
        }
        if req.query("response_type") != Some("code") {
            return Err("response_type 必须为 code。".into());
        }
        let scope = req.query_non_empty("scope").ok_or("缺少参数 scope。")?;
        let tokens: Vec<&str> = scope.split_whitespace().collect();
        if !tokens.contains(&"openid") {
            return Err("scope 必须包含 openid。".into());
        }
        // Only `consent` is documented; tolerate its absence, reject anything else.
        if req.query("prompt").is_some_and(|p| p != "consent") {
            return Err("prompt 只支持 consent。".into());
        }
        // dingtalk-api.md §2: exclusiveCorpId counts only with exclusiveLogin=true.
        let exclusive_corp = (req.query("exclusiveLogin") == Some("true"))
            .then(|| req.query_non_empty("exclusiveCorpId").map(str::to_owned))
            .flatten();
        Ok(AuthorizeRequest {
            redirect_uri,
            scope: tokens.join(" "),
            with_corp: tokens.contains(&"corpid"),
            state: req.query("state").map(str::to_owned),
            exclusive_corp,
        })
    }

    /// `redirect_uri` with `pairs` and then `state` appended to its query (joined with `&` if it has one).
    fn callback(&self, pairs: &[(&str, &str)]) -> String {
        let mut url = self.redirect_uri.clone();
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in pairs {
                query.append_pair(key, value);
            }
            if let Some(state) = &self.state {
                query.append_pair("state", state);
            }
        }
        url.into()
    }
}

pub(super) fn authorize(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let settings = mock.settings();
    let request = match AuthorizeRequest::parse(req, &settings.client_id, &settings.redirect_urls) {
        Ok(request) => request,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let framed = req.query(MOCK_FRAME).is_some();
    if req.query(MOCK_REFUSE).is_some() {
        if framed {
            return frame_answer(&request, serde_json::json!({"error": "用户取消了登录"}));
        }
        return wire::redirect(&request.callback(&[("error", "access_denied")]));
    }
    let Some(userid) = req.query(MOCK_USER) else {
        return account_picker(mock, &request, req);
    };
    let resp = approve(
        mock,
        &request,
        userid,
        req.query_non_empty(MOCK_CORP),
        req.query_non_empty("corpId"),
    );
    if !framed || resp.status() != StatusCode::FOUND {
        return resp;
    }
    // In the frame: the redirect the approval made becomes DTFrameLogin's result.
    let redirect = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let code = Url::parse(&redirect)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "authCode")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    frame_answer(
        &request,
        serde_json::json!({"redirectUrl": redirect, "authCode": code, "state": request.state}),
    )
}

/// The frame's answer: `message` posted to the embedding page (the redirect URL's origin).
fn frame_answer(request: &AuthorizeRequest, mut message: serde_json::Value) -> Resp {
    message["source"] = "dinggate-mock-login".into();
    let origin = request.redirect_uri.origin().ascii_serialization();
    let nonce = wire::new_api_request_id();
    let mut resp = wire::html(
        StatusCode::OK,
        pages::frame_result(&origin, &message, &nonce),
    );
    if let Ok(csp) =
        http::HeaderValue::from_str(&format!("default-src 'none'; script-src 'nonce-{nonce}'"))
    {
        resp.headers_mut().insert("content-security-policy", csp);
    }
    resp
}

/// `url` without query or fragment.
fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// Whether `redirect_uri` (without its query) is one of the registered URLs (scheme, host, port
/// and path as registered; `url` normalizes case and default ports on both sides).
fn is_registered(redirect_uri: &Url, registered: &[String]) -> bool {
    let sent = without_query(redirect_uri);
    registered
        .iter()
        .filter_map(|r| Url::parse(r).ok())
        .any(|r| without_query(&r) == sent)
}

/// Approves the login of `userid`; someone in several organizations logs in through `picked`,
/// else the one `preselect` (the authorize request's `corpId`) names if they belong to it, else
/// their own.
fn approve(
    mock: &MockDingTalk,
    request: &AuthorizeRequest,
    userid: &str,
    picked: Option<&str>,
    preselect: Option<&str>,
) -> Resp {
    let code = {
        let mut state = mock.state();
        let Some(user) = state.org.user(userid) else {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("未知的模拟用户：{userid}"),
            );
        };
        if !user.active {
            return error_page(
                StatusCode::FORBIDDEN,
                &format!("账号「{}」尚未激活，无法扫码登录。", user.name),
            );
        }
        if let Some(exclusive) = &request.exclusive_corp {
            if user.corp_id.as_deref() != Some(exclusive.as_str()) {
                return error_page(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "账号「{}」不是组织 {exclusive} 的专属账号，无法在此登录。",
                        user.name
                    ),
                );
            }
        }
        let belongs =
            |c: &str| user.corp_id.as_deref() == Some(c) || user.also_in.iter().any(|a| a == c);
        let picked_corp = match (picked, preselect) {
            (Some(c), _) if !belongs(c) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    &format!("账号「{}」不属于组织 {c}。", user.name),
                );
            }
            (Some(c), _) => Some(c.to_owned()),
            (None, Some(c)) if belongs(c) => Some(c.to_owned()),
            (None, _) => None,
        };
        let grant = UserGrant {
            userid: user.userid.clone(),
            with_corp: request.with_corp,
            picked_corp: picked_corp.filter(|_| request.with_corp),
        };
        state.mint_auth_code(grant, mock.settings().code_ttl)
    };
    // DingTalk sends the code twice, as `code` and `authCode` (observed on the wire).
    wire::redirect(&request.callback(&[("code", &code), ("authCode", &code)]))
}

fn account_picker(mock: &MockDingTalk, request: &AuthorizeRequest, req: &MockRequest) -> Resp {
    let org = mock.org();
    let mut rows = Vec::new();
    for user in org.users() {
        let standing = if user.active {
            Standing::Active
        } else {
            Standing::Inactive
        };
        rows.push(LoginRow {
            name: user.name.clone(),
            userid: user.userid.clone(),
            departments: department_text(&org, user),
            corp: corp_text(&org, user),
            standing,
            approve_href: self_link(req, &[(MOCK_USER, &user.userid)]),
        });
        // Someone in several organizations picks one (only asked for with the `corpid` scope).
        if request.with_corp {
            for other in &user.also_in {
                rows.push(LoginRow {
                    name: user.name.clone(),
                    userid: user.userid.clone(),
                    departments: String::new(),
                    corp: org
                        .corp_by_id(other)
                        .map_or_else(|| other.clone(), |c| c.name.clone()),
                    standing,
                    approve_href: self_link(req, &[(MOCK_USER, &user.userid), (MOCK_CORP, other)]),
                });
            }
        }
    }
    let page = LoginPage {
        client_id: mock.settings().client_id.clone(),
        scope: request.scope.clone(),
        rows,
        refuse_href: self_link(req, &[(MOCK_REFUSE, "1")]),
    };
    wire::html(StatusCode::OK, pages::login_page(&page))
}

/// This same authorize URL (relative), with the mock's own parameters replaced by `pairs`.
fn self_link(req: &MockRequest, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &req.query {
        if k != MOCK_USER && k != MOCK_REFUSE && k != MOCK_CORP {
            query.append_pair(k, v);
        }
    }
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!("/oauth2/auth?{}", query.finish())
}

/// "研发部 › 平台组；财务部": each department as its path below the root.
fn department_text(org: &Org, user: &User) -> String {
    if user.departments.is_empty() {
        return "无部门".to_owned();
    }
    user.departments
        .iter()
        .map(|&dept| {
            let mut chain = org.parent_chain(dept);
            if chain.len() > 1 {
                chain.retain(|&id| id != ROOT_DEPARTMENT);
            }
            chain
                .iter()
                .rev()
                .filter_map(|&id| org.department(id).map(|d| d.name.as_str()))
                .collect::<Vec<_>>()
                .join(" › ")
        })
        .collect::<Vec<_>>()
        .join("；")
}

fn corp_text(org: &Org, user: &User) -> String {
    match user.corp_id.as_deref() {
        Some(corp_id) => org
            .corp_by_id(corp_id)
            .map_or_else(|| corp_id.to_owned(), |c| c.name.clone()),
        None => "未加入任何组织".to_owned(),
    }
}

/// An HTML error page in login.dingtalk.com's place.
pub(super) fn error_page(status: StatusCode, message: &str) -> Resp {
    wire::html(status, pages::error_page(message))
}

pub(super) fn method_not_allowed() -> Resp {
    error_page(StatusCode::METHOD_NOT_ALLOWED, "请使用 GET 打开登录页。")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn department_text_shows_paths_below_the_root() {
        let org = Org::default_org();
        let chen = org.user("chenxiaoming").unwrap();
        assert_eq!(department_text(&org, chen), "研发部 › 平台组；财务部");
        let boss = org.user("zhaoliu").unwrap();
        assert_eq!(department_text(&org, boss), "示例科技");
        let alice = org.user("alice.partner").unwrap();
        assert_eq!(department_text(&org, alice), "无部门");
        assert_eq!(corp_text(&org, alice), "远景咨询有限公司");
    }
}
