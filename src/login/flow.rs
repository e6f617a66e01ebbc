//! The scan-login flow: `/start` (state + redirect to DingTalk), `/callback` (verify, exchange, mint), the in-client login.

use crate::metrics::LoginOutcome;
use cookie::Cookie;
use http::{header, HeaderMap, HeaderValue, Response};

use crate::body::GatewayBody;
use crate::dingtalk::DingTalkError;
use crate::directory::Membership;
use crate::identity::{cut, drop_if_longer, limits, Identity, LimitError};
use crate::login::redirect::RedirectError;
use crate::login::state::{NewFlow, StateError};
use crate::pages;
use crate::ratelimit::Throttled;
use crate::session::cookie::{session_cookie, set_cookie_line_len, MAX_SET_COOKIE_LINE};
use crate::session::jwt::SessionClaims;
use crate::state::AppState;

/// Longest query string a login endpoint reads; anything longer is refused unparsed.
pub const MAX_QUERY_LEN: usize = 4096;
/// Longest authorization code accepted (DingTalk's are 32 hex characters).
const MAX_CODE_LEN: usize = 256;

/// Why a login step failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The query string is too long or repeats a parameter.
    #[error("malformed login request: {0}")]
    BadQuery(&'static str),
    /// The return URL is not allowed.
    #[error("return URL refused: {0}")]
    BadReturnUrl(#[source] RedirectError),
    /// The state did not check out; no DingTalk call was made.
    #[error("login state refused: {0}")]
    State(#[source] StateError),
    /// DingTalk sent the user back with `error=`.
    #[error("DingTalk reported the login as not completed ({0})")]
    Refused(String),
    /// No `authCode`/`code`, or two different ones.
    #[error("authorization code missing or ambiguous: {0}")]
    BadCode(&'static str),
    /// DingTalk rejected the code (expired, reused): the user should start again.
    #[error("DingTalk rejected the authorization code")]
    CodeRejected(#[source] Box<DingTalkError>),
    /// The account is not a member of the configured organization.
    #[error(
        "account {} logged in through organization {}, not the configured one",
        or_unknown(.name),
        .corp.as_deref().unwrap_or("(none)")
    )]
    NotInOrganization {
        /// Display name of the account (shown to the user, who owns it).
        name: String,
        /// The corp DingTalk returned, if any.
        corp: Option<String>,
    },
    /// The account exists in the organization but is not active.
    #[error("account {name} is not active in the organization")]
    Inactive {
        /// Display name of the account.
        name: String,
    },
    /// DingTalk failed (outage, timeout, misconfiguration).
    #[error("DingTalk call failed")]
    DingTalk(#[source] Box<DingTalkError>),
    /// The person's DingTalk data cannot be carried in a session (an over-long id, or more
    /// departments than fit); see [`crate::identity::limits`].
    #[error("the DingTalk identity exceeds the session limits")]
    TooLarge(#[source] LimitError),
    /// The session cookie would exceed what browsers keep, whatever the identity: the
    /// configuration (cookie name, cookie domain, issuer, audience) leaves no room.
    #[error(
        "the session cookie would be {bytes} bytes; browsers keep at most {MAX_SET_COOKIE_LINE}"
    )]
    SessionTooLarge {
        /// Length of the `Set-Cookie` line.
        bytes: usize,
    },
    /// The gateway-wide DingTalk code-exchange budget (`rate_limit.code_exchange`) is spent;
    /// the code was not sent to DingTalk.
    #[error("too many logins at once")]
    Busy(#[source] Throttled),
}

/// `name`, or `(unknown)` when DingTalk gave none (the in-client flow refuses before it has one).
fn or_unknown(name: &str) -> &str {
    if name.is_empty() {
        "(unknown)"
    } else {
        name
    }
}

impl LoginError {
    /// The `outcome` label of `dinggate_logins_total` for a login that ended with this error.
    pub fn outcome(&self) -> LoginOutcome {
        match self {
            LoginError::BadQuery(_) | LoginError::BadReturnUrl(_) | LoginError::BadCode(_) => {
                LoginOutcome::BadRequest
            }
            LoginError::State(StateError::Replayed) => LoginOutcome::ReplayedState,
            LoginError::State(
                StateError::Missing
                | StateError::NoCookie
                | StateError::Mismatch
                | StateError::Expired,
            ) => LoginOutcome::BadState,
            LoginError::Refused(_) => LoginOutcome::Refused,
            LoginError::CodeRejected(_) => LoginOutcome::CodeRejected,
            LoginError::NotInOrganization { .. } | LoginError::Inactive { .. } => {
                LoginOutcome::NotInOrganization
            }
            LoginError::DingTalk(_) => LoginOutcome::DingTalkError,
            LoginError::TooLarge(_) | LoginError::SessionTooLarge { .. } => {
                LoginOutcome::GatewayError
            }
            LoginError::Busy(_) => LoginOutcome::RateLimited,
        }
    }
}

/// A failed login step plus cookies that must still be set on the error response.
#[derive(Debug)]
pub struct LoginFailure {
    /// What went wrong.
    pub error: LoginError,
    /// Cookies to set anyway (e.g. clearing a used state cookie).
    pub cookies: Vec<Cookie<'static>>,
}

impl From<LoginError> for LoginFailure {
    fn from(error: LoginError) -> Self {
        LoginFailure {
            error,
            cookies: Vec::new(),
        }
    }
}

/// Reads the named parameters from a query string, refusing oversized queries and repeated
/// parameters (parameter pollution: which copy wins differs between parsers).
pub fn query_params<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Result<[Option<String>; N], LoginError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_LEN {
        return Err(LoginError::BadQuery("query string too long"));
    }
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == k) {
            if out[i].is_some() {
                return Err(LoginError::BadQuery("a parameter is repeated"));
            }
            out[i] = Some(v.into_owned());
        }
    }
    Ok(out)
}

fn append_cookie(resp: &mut Response<GatewayBody>, c: &Cookie<'_>) {
    if let Ok(v) = HeaderValue::from_str(&c.encoded().to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets a new flow's state cookie and removes the flows it evicted.
fn attach_flow(resp: &mut Response<GatewayBody>, flow: &NewFlow) {
    append_cookie(resp, &flow.cookie);
    append_cookies(resp, &flow.evicted);
}

/// Appends `Set-Cookie` headers for `cookies` (used for error responses too).
pub fn append_cookies(resp: &mut Response<GatewayBody>, cookies: &[Cookie<'static>]) {
    for c in cookies {
        append_cookie(resp, c);
    }
}

/// The validated `rd` parameter of `query`, `None` when absent or empty.
pub fn return_url(app: &AppState, query: Option<&str>) -> Result<Option<String>, LoginError> {
    let [rd] = query_params(query, ["rd"])?;
    app.redirects
        .validate_optional(rd.as_deref())
        .map_err(LoginError::BadReturnUrl)
}

/// `GET {prefix}/start?rd=`: remember where to return, bind a state to this browser, go to DingTalk.
pub fn start(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<GatewayBody>, LoginFailure> {
    let return_to = return_url(app, query)?.unwrap_or_else(|| "/".to_owned());
    let [inapp_error] = query_params(query, ["inapp_error"])?;
    if let Some(code) = inapp_error {
        log_inapp_failure(app, &code);
    }
    let flow = app
        .login_states
        .begin(headers, &return_to, app.clock.now_micros());
    let url = app.dingtalk.authorize_url(
        &app.config.callback_url(),
        &flow.state,
        app.config.dingtalk.corp_id.as_deref(),
    );
    let mut resp = pages::redirect(url.as_str());
    attach_flow(&mut resp, &flow);
    Ok(resp)
}

/// The in-client page fell back to the QR login because the client refused a code: tell the
/// operator what DingTalk's `errorCode` means. The code is only logged, and only when it is a
/// short token (the parameter is not trusted for anything; login rate limits bound the lines).
fn log_inapp_failure(app: &AppState, code: &str) {
    let token = !code.is_empty()
        && code.len() <= 16
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !token {
        return;
    }
    let host = app.config.public_url.host_str().unwrap_or_default();
    let hint = match code {
        "3" => format!(
            "DingTalk found no app of organization {} for this page's address: in the DingTalk developer console add `{host}` to the app's login-free address (安全设置 → 端内免登地址) and set the app's homepage (应用首页地址) on this gateway, and check dingtalk.corp_id",
            app.config.dingtalk.corp_id.as_deref().unwrap_or("(none)")
        ),
        _ => "check dingtalk.client_id and dingtalk.corp_id against the app in the DingTalk developer console; clients older than 7.0.45 (mobile) / 7.0.50 (PC) use the older API, which matches the app by the page's address".to_owned(),
    };
    tracing::warn!(
        error_code = code,
        hint = %hint,
        "in-client login (免登) failed: the DingTalk client refused a login-free code, the user was sent to the QR login"
    );
}

/// `GET {prefix}/callback`: the state is checked before the code is looked at, so a forged or
/// replayed callback never causes a DingTalk call.
pub async fn callback(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    address: std::net::IpAddr,
) -> Result<Response<GatewayBody>, LoginFailure> {
    let [state, auth_code, code, error] =
        query_params(query, ["state", "authCode", "code", "error"])?;
    let state = state.unwrap_or_default();
    let flow = app
        .login_states
        .finish(headers, &state, app.clock.now_micros())
        .map_err(|e| LoginFailure {
            error: LoginError::State(e),
            // A used or mismatching state cookie is worthless; drop it so it does not count
            // against the per-browser flow limit.
            cookies: app
                .login_states
                .clear_cookie_for(&state)
                .into_iter()
                .collect(),
        })?;
    let fail = |error: LoginError| LoginFailure {
        error,
        cookies: vec![flow.clear.clone()],
    };
    claim_everywhere(app, &state)
        .await
        .map_err(|e| fail(LoginError::State(e)))?;
    if let Some(err) = error {
        let err: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "_-. ".contains(*c))
            .take(64)
            .collect();
        return Err(fail(LoginError::Refused(err)));
    }
    let code = match (auth_code, code) {
        (Some(a), Some(c)) if a != c => {
            return Err(fail(LoginError::BadCode("authCode and code differ")))
        }
        (Some(a), _) => a,
        (None, Some(c)) => c,
        (None, None) => return Err(fail(LoginError::BadCode("no authCode in the callback"))),
    };
    if code.is_empty() || code.len() > MAX_CODE_LEN || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(LoginError::BadCode(
            "the authorization code is malformed",
        )));
    }

    // Charged only once the state has checked out, so forged callbacks cannot spend the budget.
    app.limits
        .check_exchange()
        .map_err(|t| fail(LoginError::Busy(t)))?;
    let token = app.dingtalk.exchange_code(&code).await.map_err(|e| {
        fail(if e.is_bad_code() {
            LoginError::CodeRejected(Box::new(e))
        } else {
            LoginError::DingTalk(Box::new(e))
        })
    })?;
    let user = app
        .dingtalk
        .current_user(&token)
        .await
        .map_err(|e| fail(LoginError::DingTalk(Box::new(e))))?;

    if let Some(corp) = &app.config.dingtalk.corp_id {
        // Fail closed: a missing corpId (scope without `corpid`) is not a match either.
        if token.corp_id.as_deref() != Some(corp.as_str()) {
            return Err(fail(LoginError::NotInOrganization {
                name: cut(&user.nick, limits::NAME).to_owned(),
                corp: token.corp_id.clone(),
            }));
        }
    }

    // Limits (and cuts) are applied by `with_membership`, before anything is minted.
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let identity = Identity {
        union_id: user.union_id,
        name: user.nick,
        avatar: non_empty(user.avatar_url),
        email: non_empty(user.email),
        corp_id: token.corp_id.clone(),
        open_id: non_empty(user.open_id),
        enterprise: None,
    };
    let identity = with_membership(app, identity, Lookup::UnionId)
        .await
        .map_err(fail)?;
    let (session, claims) = new_session_cookie(app, &identity).map_err(fail)?;
    crate::sessions::record_login(app, &claims, headers, address).await;
    tracing::info!(
        union_id = %identity.union_id,
        corp_id = identity.corp_id.as_deref().unwrap_or("-"),
        "login succeeded"
    );
    let mut resp = pages::redirect(&flow.return_to);
    append_cookie(&mut resp, &session);
    append_cookie(&mut resp, &flow.clear);
    Ok(resp)
}

/// `GET {prefix}/inapp?rd=`: the login-free (免登) page an unauthenticated navigation inside the
/// DingTalk client is sent to. A fresh state bound to a cookie; the page asks the client for a
/// code and posts it back to `/inapp/callback`.
pub fn inapp_page(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Response<GatewayBody>, LoginFailure> {
    let Some(corp) = app.config.dingtalk.corp_id.as_deref() else {
        return Err(LoginError::BadQuery("in-client login needs dingtalk.corp_id").into());
    };
    let return_to = return_url(app, query)?.unwrap_or_else(|| "/".to_owned());
    let flow = app
        .login_states
        .begin(headers, &return_to, app.clock.now_micros());
    let fallback = start_url(app, &return_to);
    let callback = format!("{}/inapp/callback", app.config.prefix);
    let mut resp = pages::in_app(&pages::InAppPage {
        branding: branding(app),
        lang: pages::negotiate_lang(headers),
        jsapi_url: app.config.dingtalk.jsapi_url.as_str(),
        corp_id: corp,
        client_id: &app.config.dingtalk.client_id,
        state: &flow.state,
        callback_url: &callback,
        fallback_url: &fallback,
        timeout_ms: 8_000,
        request_id,
    });
    attach_flow(&mut resp, &flow);
    Ok(resp)
}

/// `GET {prefix}/sign_in?rd=`: the sign-in page with a DingTalk button and the embedded QR code;
/// for a browser already signed in as `signed_in_as` (a display name), "continue" to `rd` and
/// "switch account" (a sign-out form that comes back here) instead, and no login is started.
pub fn sign_in(
    app: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
    signed_in_as: Option<&str>,
    request_id: &str,
) -> Result<Response<GatewayBody>, LoginFailure> {
    let return_to = return_url(app, query)?.unwrap_or_else(|| "/".to_owned());
    if let Some(name) = signed_in_as {
        let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        let then = format!("{}/sign_in?rd={encoded}", app.config.prefix);
        let action = format!("{}/sign_out", app.config.prefix);
        return Ok(pages::sign_in(&pages::SignInPage {
            branding: branding(app),
            lang: pages::negotiate_lang(headers),
            start_url: "",
            qr: None,
            signed_in: Some(pages::SignedIn {
                name,
                continue_url: &return_to,
                sign_out_action: &action,
                then: &then,
            }),
            request_id,
        }));
    }
    // The embedded QR code completes through the normal callback, so it needs its own state.
    let flow = app
        .login_states
        .begin(headers, &return_to, app.clock.now_micros());
    let callback = app.config.callback_url();
    let corp = app.config.dingtalk.corp_id.as_deref();
    let scope = if corp.is_some() {
        "openid corpid"
    } else {
        "openid"
    };
    let start = start_url(app, &return_to);
    let login_origin = app.config.dingtalk.login_url.origin().ascii_serialization();
    let mut resp = pages::sign_in(&pages::SignInPage {
        branding: branding(app),
        lang: pages::negotiate_lang(headers),
        start_url: &start,
        qr: Some(pages::QrLogin {
            script_url: app.config.dingtalk.qr_script_url.as_str(),
            client_id: &app.config.dingtalk.client_id,
            redirect_uri: &callback,
            scope,
            state: &flow.state,
            corp_id: corp,
            exclusive_corp_id: app.config.dingtalk.exclusive_corp_id.as_deref(),
            login_origin: &login_origin,
        }),
        signed_in: None,
        request_id,
    });
    attach_flow(&mut resp, &flow);
    Ok(resp)
}

fn branding(app: &AppState) -> pages::Branding<'_> {
    pages::Branding {
        app_name: &app.config.ui.app_name,
        logo_url: app.config.ui.logo_url.as_ref().map(|u| u.as_str()),
    }
}

/// `{prefix}/start?rd=<return_to>` (`return_to` already validated).
pub fn start_url(app: &AppState, return_to: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
    format!("{}/start?rd={encoded}", app.config.prefix)
}

/// Largest in-client callback body read (it carries a code and a state).
const MAX_INAPP_BODY: usize = 4096;
/// Time allowed to receive that body.
const INAPP_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The JSON the in-client page posts.
#[derive(Debug, serde::Deserialize)]
struct InAppPost {
    code: String,
    state: String,
}

/// `POST {prefix}/inapp/callback` with `{"code","state"}` from the login-free (免登) page.
///
/// Answers JSON: `{"redirect": url}` with the session cookie on success; `409 {"retry": true,
/// "state": new}` when DingTalk says the code is invalid (the page asks for a new code once);
/// errors otherwise (the page then falls back to the QR login).
pub async fn inapp_callback(
    app: &AppState,
    headers: &HeaderMap,
    address: std::net::IpAddr,
    body: hyper::body::Incoming,
) -> Result<Response<GatewayBody>, LoginFailure> {
    use http_body_util::BodyExt;
    // Bounded in size and in time: a client announcing more than it sends must not hold the
    // handler open.
    let read = http_body_util::Limited::new(body, MAX_INAPP_BODY).collect();
    let bytes = tokio::time::timeout(INAPP_BODY_TIMEOUT, read)
        .await
        .map_err(|_| LoginError::BadQuery("request body not received in time"))?
        .map_err(|_| LoginError::BadQuery("request body too large or unreadable"))?
        .to_bytes();
    let post: InAppPost = serde_json::from_slice(&bytes)
        .map_err(|_| LoginError::BadQuery("expected JSON {\"code\", \"state\"}"))?;
    let flow = app
        .login_states
        .finish(headers, &post.state, app.clock.now_micros())
        .map_err(|e| LoginFailure {
            error: LoginError::State(e),
            cookies: app
                .login_states
                .clear_cookie_for(&post.state)
                .into_iter()
                .collect(),
        })?;
    let fail = |error: LoginError| LoginFailure {
        error,
        cookies: vec![flow.clear.clone()],
    };
    claim_everywhere(app, &post.state)
        .await
        .map_err(|e| fail(LoginError::State(e)))?;
    // Checked before DingTalk is called, like the state: nothing malformed leaves the gateway.
    if post.code.is_empty()
        || post.code.len() > MAX_CODE_LEN
        || !post.code.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(fail(LoginError::BadCode("the in-client code is malformed")));
    }
    app.limits
        .check_exchange()
        .map_err(|t| fail(LoginError::Busy(t)))?;
    let user = match app.dingtalk.inapp_user(&post.code).await {
        Ok(user) => user,
        Err(e) if e.is_bad_code() => {
            // 40078: expired, reused or not an in-client code. One retry with a fresh code and
            // a fresh state; the page falls back to the QR login if that fails too.
            tracing::info!(error = %e, "in-client code refused; asking the page to retry");
            let retry = app
                .login_states
                .begin(headers, &flow.return_to, app.clock.now_micros());
            let mut resp = pages::json(
                http::StatusCode::CONFLICT,
                &serde_json::json!({ "retry": true, "state": retry.state }),
            );
            append_cookie(&mut resp, &flow.clear);
            attach_flow(&mut resp, &retry);
            return Ok(resp);
        }
        Err(e) if e.is_not_member() => {
            return Err(fail(LoginError::NotInOrganization {
                name: String::new(),
                corp: None,
            }))
        }
        Err(e) => return Err(fail(LoginError::DingTalk(Box::new(e)))),
    };
    let Some(corp) = app.config.dingtalk.corp_id.clone() else {
        // The page is only served with a corp configured; a stray POST without one is refused.
        return Err(fail(LoginError::NotInOrganization {
            name: cut(&user.name, limits::NAME).to_owned(),
            corp: None,
        }));
    };
    let identity = Identity {
        union_id: user.unionid,
        name: user.name,
        avatar: None,
        email: None,
        corp_id: Some(corp),
        open_id: None,
        enterprise: Some(crate::identity::Enterprise {
            user_id: user.userid,
            departments: Vec::new(),
            department_tree: Vec::new(),
            admin: user.sys,
            title: None,
        }),
    };
    let identity = with_membership(app, identity, Lookup::UserId)
        .await
        .map_err(fail)?;
    let (session, claims) = new_session_cookie(app, &identity).map_err(fail)?;
    crate::sessions::record_login(app, &claims, headers, address).await;
    tracing::info!(union_id = %identity.union_id, "in-client login succeeded");
    let mut resp = pages::json(
        http::StatusCode::OK,
        &serde_json::json!({ "redirect": flow.return_to }),
    );
    append_cookie(&mut resp, &session);
    append_cookie(&mut resp, &flow.clear);
    Ok(resp)
}

/// Mints a session for `identity` and wraps it in the session cookie, refusing (instead of
/// setting a cookie the browser would drop, which loops the person through login) when the
/// `Set-Cookie` line would not fit.
fn new_session_cookie(
    app: &AppState,
    identity: &Identity,
) -> Result<(Cookie<'static>, SessionClaims), LoginError> {
    let (jwt, claims) = app.sessions.mint_with_claims(identity, app.clock.now());
    let cookie = session_cookie(&app.cookies, &jwt);
    fits(&cookie)?;
    Ok((cookie, claims))
}

/// `Ok` when `cookie`'s `Set-Cookie` line is shorter than [`MAX_SET_COOKIE_LINE`].
fn fits(cookie: &Cookie<'_>) -> Result<(), LoginError> {
    let bytes = set_cookie_line_len(cookie);
    if bytes >= MAX_SET_COOKIE_LINE {
        return Err(LoginError::SessionTooLarge { bytes });
    }
    Ok(())
}

/// Which key the directory is asked with.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// By the identity's unionId (scan login).
    UnionId,
    /// By the enterprise userid the identity carries (in-client login, re-validation): one
    /// DingTalk call fewer than by unionId. Trusted only when DingTalk reports the same unionId
    /// for that userid; otherwise (the userid was changed or given to someone else, or the
    /// person is not an active member under it) the answer comes from the unionId look-up.
    UserId,
}

/// Adds the organization's directory data to `identity` when look-ups are on; refuses people
/// who are not (or no longer) active members. The result is always within
/// [`crate::identity::limits`] (display text cut, over-long ids or department lists refused with
/// [`LoginError::TooLarge`]), so whatever is minted from it fits in a session cookie.
pub async fn with_membership(
    app: &AppState,
    identity: Identity,
    by: Lookup,
) -> Result<Identity, LoginError> {
    let mut identity = identity.within_limits().map_err(LoginError::TooLarge)?;
    let Some(directory) = &app.directory else {
        return Ok(identity);
    };
    let now = app.clock.now();
    let answer = match (by, identity.enterprise.as_ref()) {
        (Lookup::UserId, Some(e)) => match directory.by_user_id(&e.user_id, now).await {
            Ok(Membership::Member(m))
                if m.union_id.as_deref() == Some(identity.union_id.as_str()) =>
            {
                Ok(Membership::Member(m))
            }
            Ok(_) => directory.by_union_id(&identity.union_id, now).await,
            Err(e) => Err(e),
        },
        _ => directory.by_union_id(&identity.union_id, now).await,
    };
    match answer.map_err(|e| LoginError::DingTalk(Box::new(e)))? {
        Membership::NotMember => Err(LoginError::NotInOrganization {
            name: identity.name,
            corp: identity.corp_id,
        }),
        Membership::Inactive => Err(LoginError::Inactive {
            name: identity.name,
        }),
        Membership::Member(m) => {
            if !m.name.trim().is_empty() {
                identity.name = m.name;
            }
            identity.avatar = identity.avatar.or(drop_if_longer(m.avatar, limits::AVATAR));
            identity.email = identity.email.or(drop_if_longer(m.email, limits::EMAIL));
            identity.enterprise = Some(m.enterprise);
            identity.within_limits().map_err(LoginError::TooLarge)
        }
    }
}

/// A state some other replica consumed is a replay here too: with a shared store, each state is
/// claimed there once (by a digest; the state itself is never stored). While the store is
/// unreachable, this replica's own record is the protection (the store logs the outage).
async fn claim_everywhere(app: &AppState, state: &str) -> Result<(), StateError> {
    use sha2::Digest;
    let Some(store) = &app.store else {
        return Ok(());
    };
    let key: String = sha2::Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ttl = app.login_states.settings().ttl;
    match store.claim_once(&key, ttl, app.clock.now()).await {
        Ok(true) | Err(_) => Ok(()),
        Ok(false) => Err(StateError::Replayed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_in_organization_reads_as_text_not_rust_debug() {
        let wrong = LoginError::NotInOrganization {
            name: "张三".into(),
            corp: Some("dingcorp00000002".into()),
        };
        assert_eq!(
            wrong.to_string(),
            "account 张三 logged in through organization dingcorp00000002, not the configured one"
        );
        let none = LoginError::NotInOrganization {
            name: String::new(),
            corp: None,
        };
        assert_eq!(
            none.to_string(),
            "account (unknown) logged in through organization (none), not the configured one"
        );
    }

    #[test]
    fn a_cookie_that_would_not_fit_is_refused_not_set() {
        let settings = crate::session::cookie::CookieSettings {
            name: "_dinggate".into(),
            domain: None,
            secure: true,
            lifetime: std::time::Duration::from_secs(3600),
        };
        let fitting = session_cookie(&settings, &"a".repeat(3900));
        assert!(fits(&fitting).is_ok());
        let big = session_cookie(&settings, &"a".repeat(4096));
        assert!(matches!(
            fits(&big),
            Err(LoginError::SessionTooLarge { bytes }) if bytes > 4096
        ));
    }

    #[test]
    fn query_params_reads_decodes_and_refuses_repeats() {
        let [a, b] = query_params(Some("a=%E5%BC%A0&b=2&c=3"), ["a", "b"]).unwrap();
        assert_eq!(a.as_deref(), Some("张"));
        assert_eq!(b.as_deref(), Some("2"));
        assert!(matches!(
            query_params(Some("a=1&a=2"), ["a"]),
            Err(LoginError::BadQuery(_))
        ));
        let long = "a=".to_owned() + &"x".repeat(MAX_QUERY_LEN);
        assert!(matches!(
            query_params(Some(&long), ["a"]),
            Err(LoginError::BadQuery(_))
        ));
        let [none] = query_params(None, ["a"]).unwrap();
        assert!(none.is_none());
    }
}
