//! The new API (`/v1.0/...`, api.dingtalk.com): user and app tokens, and the contact profile of the token's owner.
//!
//! Error codes DingTalk documents or was observed to send are used as is. Where nothing is known the mock
//! picks a code in the same style and says so: `Missing<param>` for absent required fields (the API
//! gateway's pattern, observed as `Missingbody`), `invalidAuthCode` / `invalidRefreshToken` /
//! `unsupportedGrantType` for `userAccessToken` (undocumented; clients must treat any 4xx as "restart login").

use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::org::User;
use super::state::UserGrant;
use super::wire::{self, Resp};
use super::{present, BodyError, MockDingTalk, MockRequest};

/// `/v1.0/contact/users/{unionId}`.
pub(super) const CONTACT_USERS_PREFIX: &str = "/v1.0/contact/users/";

const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserTokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    code: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppTokenRequest {
    app_key: Option<String>,
    app_secret: Option<String>,
}

fn bad_request(code: &str, message: &str) -> Resp {
    wire::api_error(StatusCode::BAD_REQUEST, code, message)
}

fn missing(param: &str) -> Resp {
    bad_request(
        &format!("Missing{param}"),
        &format!("{param} is mandatory for this action."),
    )
}

fn body_error(err: BodyError) -> Resp {
    match err {
        BodyError::Empty => missing("body"),
        BodyError::Invalid => bad_request("InvalidParameter", "请求体不是合法的JSON对象"),
    }
}

/// Whether `path` is `/v1.0/oauth2/{corpId}/token`.
pub(super) fn is_corp_token_path(path: &str) -> bool {
    path.strip_prefix("/v1.0/oauth2/")
        .and_then(|rest| rest.strip_suffix("/token"))
        .is_some_and(|corp| !corp.is_empty() && !corp.contains('/'))
}

#[derive(Deserialize)]
struct CorpTokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
}

/// `POST /v1.0/oauth2/{corpId}/token` (snake_case): an internal app's token for its own corp.
/// Wrong credentials → 400 `invalid.client`; a corp the app does not belong to → 500
/// `unknownError` (what DingTalk answered a bogus corpId, dingtalk-api.md §5).
pub(super) fn corp_token(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let corp = req
        .path
        .trim_start_matches("/v1.0/oauth2/")
        .trim_end_matches("/token");
    let body: CorpTokenRequest = match req.json() {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    if body.grant_type.as_deref() != Some("client_credentials") {
        return bad_request(
            "unsupported.grant.type",
            "grant_type 必须为 client_credentials",
        );
    }
    let settings = mock.settings();
    if body.client_id.as_deref() != Some(settings.client_id.as_str())
        || body.client_secret.as_deref() != Some(settings.client_secret.as_str())
    {
        return bad_request("invalid.client", "无效的client_id或client_secret");
    }
    if corp != settings.org.corp_id() {
        return wire::api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknownError",
            "unknownError",
        );
    }
    let token = mock.state().fetch_app_token(settings.token_ttl);
    wire::json(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": settings.token_ttl.as_secs()}),
        &wire::new_api_request_id(),
    )
}

fn invalid_client() -> Resp {
    bad_request("invalidClientIdOrSecret", "无效的clientId或者clientSecret")
}

/// `POST /v1.0/oauth2/userAccessToken`: exchanges an authorization code (single use) or a refresh token.
pub(super) fn user_access_token(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: UserTokenRequest = match req.json() {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let Some(client_id) = present(body.client_id) else {
        return missing("clientId");
    };
    let Some(grant_type) = present(body.grant_type) else {
        return missing("grantType");
    };
    let settings = mock.settings();
    if client_id != settings.client_id
        || body.client_secret.as_deref() != Some(&settings.client_secret)
    {
        return invalid_client();
    }
    let mut state = mock.state();
    let grant = match grant_type.as_str() {
        "authorization_code" => {
            match present(body.code).and_then(|code| state.take_auth_code(&code)) {
                Some(grant) => grant,
                None => return bad_request("invalidAuthCode", "不合法的临时授权码"),
            }
        }
        "refresh_token" => {
            match present(body.refresh_token).and_then(|t| state.refresh_grant(&t)) {
                Some(grant) => grant,
                None => return bad_request("invalidRefreshToken", "不合法的refreshToken"),
            }
        }
        _ => return bad_request("unsupportedGrantType", "不支持的grantType"),
    };
    // The org the user picked at login is their current corp; someone who left every org has none.
    let corp_id = grant
        .with_corp
        .then(|| {
            let user = state.org.user(&grant.userid)?;
            // Someone who left every org has none, whatever they picked before.
            user.corp_id.as_ref()?;
            grant.picked_corp.clone().or_else(|| user.corp_id.clone())
        })
        .flatten();
    let (access_token, refresh_token) = state.mint_user_tokens(grant, settings.token_ttl);
    drop(state);
    let mut out = json!({
        "accessToken": access_token,
        "refreshToken": refresh_token,
        "expireIn": settings.token_ttl.as_secs(),
    });
    if let Some(corp_id) = corp_id {
        out["corpId"] = Value::from(corp_id);
    }
    wire::api_ok(out)
}

/// `POST /v1.0/oauth2/accessToken`: the internal app's token (the same one while it is valid).
pub(super) fn app_access_token(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: AppTokenRequest = match req.json() {
        Ok(body) => body,
        Err(err) => return body_error(err),
    };
    let Some(app_key) = present(body.app_key) else {
        return missing("appKey");
    };
    let Some(app_secret) = present(body.app_secret) else {
        return missing("appSecret");
    };
    let settings = mock.settings();
    if app_key != settings.client_id || app_secret != settings.client_secret {
        return invalid_client();
    }
    let token = mock.state().fetch_app_token(settings.token_ttl);
    if settings.omit_app_token_expiry {
        return wire::api_ok(json!({ "accessToken": token }));
    }
    wire::api_ok(json!({"accessToken": token, "expireIn": settings.token_ttl.as_secs()}))
}

/// `GET /v1.0/contact/users/{unionId}` with the user token in the header only; `me` or the owner's own unionId.
pub(super) fn contact_user(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let union_id = &req.path[CONTACT_USERS_PREFIX.len()..];
    if union_id.is_empty() || union_id.contains('/') {
        return not_found();
    }
    let Some(token) = req.header(TOKEN_HEADER) else {
        return bad_request(
            "AuthenticationFailed.MissingParameter",
            "缺少参数：x-acs-dingtalk-access-token",
        );
    };
    let state = mock.state();
    let Some(user) = state
        .user_token(token)
        .and_then(|grant: &UserGrant| state.org.user(&grant.userid))
    else {
        return wire::api_invalid_token();
    };
    if union_id != "me" && union_id != user.union_id {
        // Undocumented: a personal token reading someone else. The mock refuses like a missing permission.
        return wire::api_error(
            StatusCode::FORBIDDEN,
            "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "个人授权的access_token只能查询本人信息",
        );
    }
    wire::api_ok(Value::Object(profile(user, req.host.as_deref())))
}

fn profile(user: &User, host: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("nick".into(), Value::from(user.name.as_str()));
    out.insert("unionId".into(), Value::from(user.union_id.as_str()));
    out.insert("openId".into(), Value::from(user.open_id.as_str()));
    if let Some(avatar) = avatar_url(user, host) {
        out.insert("avatarUrl".into(), Value::from(avatar));
    }
    if let Some(email) = &user.email {
        out.insert("email".into(), Value::from(email.as_str()));
    }
    if let Some(mobile) = &user.mobile {
        out.insert("mobile".into(), Value::from(mobile.as_str()));
        out.insert("stateCode".into(), Value::from("86"));
    }
    out.insert("visitor".into(), Value::from(false));
    out
}

/// The configured avatar, or the mock's generated one on the address the client used to reach it.
pub(super) fn avatar_url(user: &User, host: Option<&str>) -> Option<String> {
    if let Some(avatar) = &user.avatar {
        return Some(avatar.clone());
    }
    let host = host.filter(|h| h.chars().all(|c| c.is_ascii_graphic()) && !h.contains('/'))?;
    let userid =
        percent_encoding::utf8_percent_encode(&user.userid, percent_encoding::NON_ALPHANUMERIC);
    Some(format!("http://{host}/__mock/avatar/{userid}.svg"))
}

/// `404 InvalidAction.NotFound`, as api.dingtalk.com answers an unknown path or method.
pub(super) fn not_found() -> Resp {
    wire::api_error(
        StatusCode::NOT_FOUND,
        "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method.",
    )
}
