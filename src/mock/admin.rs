//! The mock's control surface under `/__mock/` (faults, users, calls, clock, JSAPI codes, avatars) and the JSAPI stand-in script.

use std::time::{Duration, UNIX_EPOCH};

use http::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::{self, Resp};
use super::{pages, Fault, MockDingTalk, MockRequest, ADMIN_PREFIX};

/// Any GET path ending like this serves the JSAPI stand-in, so the real CDN path shape works on the mock's base URL.
pub(super) const JSAPI_SCRIPT_SUFFIX: &str = "/dingtalk.open.js";
/// The embedded-QR script `ddlogin.js`, wherever its path puts it (the CDN's is versioned).
pub(super) const QR_SCRIPT_SUFFIX: &str = "/ddlogin.js";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    path: String,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    active: Option<bool>,
    removed: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_seconds: u64,
}

fn reply(status: StatusCode, body: Value) -> Resp {
    let mut resp = wire::json(status, &body, &wire::new_api_request_id());
    // The JSAPI stand-in runs on the gateway's origin and fetches codes from here.
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

fn ok() -> Resp {
    reply(StatusCode::OK, json!({"ok": true}))
}

fn fail(status: StatusCode, message: &str) -> Resp {
    reply(status, json!({"error": message}))
}

fn parse<T: serde::de::DeserializeOwned>(req: &MockRequest) -> Result<T, String> {
    serde_json::from_slice(&req.body).map_err(|err| format!("invalid JSON body: {err}"))
}

pub(super) fn route(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let rest = &req.path[ADMIN_PREFIX.len()..];
    match (&req.method, rest) {
        (&Method::POST, "faults") => inject_fault(mock, req),
        (&Method::DELETE, "faults") => {
            mock.state().faults.clear();
            ok()
        }
        (&Method::GET, "calls") => calls(mock),
        (&Method::GET, "jsapi_code") => jsapi_code(mock, req),
        (&Method::POST, "clock") => advance_clock(mock, req),
        (&Method::POST, _) if rest.starts_with("users/") => {
            update_user(mock, req, &rest["users/".len()..])
        }
        (&Method::GET, _) if rest.starts_with("avatar/") => avatar(mock, &rest["avatar/".len()..]),
        _ => fail(StatusCode::NOT_FOUND, "no such mock endpoint"),
    }
}

/// `POST /__mock/faults {"path","fault","times"?}` (times defaults to 1, 0 clears).
fn inject_fault(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: FaultRequest = match parse(req) {
        Ok(body) => body,
        Err(message) => return fail(StatusCode::BAD_REQUEST, &message),
    };
    if !body.path.starts_with('/') || body.path.starts_with(ADMIN_PREFIX) {
        return fail(
            StatusCode::BAD_REQUEST,
            "path must start with / and not be a /__mock/ path",
        );
    }
    mock.inject_fault(&body.path, body.fault, body.times);
    ok()
}

/// `GET /__mock/calls`: `[{"method","path","at_unix_ms"}]`, oldest first.
fn calls(mock: &MockDingTalk) -> Resp {
    let list: Vec<Value> = mock
        .calls()
        .into_iter()
        .map(|call| {
            let at = call
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            json!({"method": call.method.as_str(), "path": call.path, "at_unix_ms": at})
        })
        .collect();
    reply(StatusCode::OK, Value::Array(list))
}

/// `GET /__mock/jsapi_code?userid=&url=[&api=][&corpId=][&clientId=]`: what the client answers
/// a code request from the page at `url` with (`api`: `v2` for `dd.requestAuthCode`, else `v1`).
fn jsapi_code(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let resp = jsapi_answer(mock, req);
    let outcome = match resp.status() {
        StatusCode::OK => "code".to_owned(),
        _ => jsapi_error_code(&resp),
    };
    mock.state().jsapi_requests.push(super::JsapiRequest {
        api: req.query_non_empty("api").unwrap_or("v1").to_owned(),
        page_url: req.query_non_empty("url").unwrap_or_default().to_owned(),
        outcome,
    });
    resp
}

/// The `errorCode` an error answer of [`jsapi_answer`] carries.
fn jsapi_error_code(resp: &Resp) -> String {
    resp.extensions()
        .get::<JsapiErrorCode>()
        .map_or_else(|| resp.status().as_u16().to_string(), |c| c.0.to_owned())
}

/// Marks a stand-in answer with the client's `errorCode`, for [`super::JsapiRequest`].
#[derive(Clone, Copy)]
struct JsapiErrorCode(&'static str);

fn jsapi_refusal(error: &str, code: &'static str) -> Resp {
    let mut resp = reply(
        StatusCode::BAD_REQUEST,
        json!({"error": error, "errorCode": code}),
    );
    resp.extensions_mut().insert(JsapiErrorCode(code));
    resp
}

fn jsapi_answer(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let Some(userid) = req.query_non_empty("userid") else {
        return fail(StatusCode::BAD_REQUEST, "userid is required");
    };
    let settings = mock.settings();
    if !settings.homepage_domains.is_empty() {
        let host = req
            .query_non_empty("url")
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let registered = host.is_some_and(|h| {
            settings
                .homepage_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&h))
        });
        if !registered {
            // What DingTalk reports when no app of the corp is registered for the page.
            return jsapi_refusal(
                "the page's domain is not the app's registered login-free address",
                "3",
            );
        }
    }
    if req
        .query_non_empty("corpId")
        .is_some_and(|c| c != settings.org.corp().corp_id)
    {
        // errorCode 3: no micro-app for this page in that corp (what the real client reports).
        return jsapi_refusal("corpId does not match the mock's corp", "3");
    }
    if req
        .query_non_empty("clientId")
        .is_some_and(|c| c != settings.client_id)
    {
        return jsapi_refusal("clientId does not match the mock's app", "3");
    }
    match mock.issue_jsapi_code(userid) {
        Some(code) => reply(StatusCode::OK, json!({"code": code})),
        None => fail(
            StatusCode::NOT_FOUND,
            "no active member of the corp with this userid",
        ),
    }
}

/// `POST /__mock/clock {"advance_seconds": N}`.
fn advance_clock(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: ClockRequest = match parse(req) {
        Ok(body) => body,
        Err(message) => return fail(StatusCode::BAD_REQUEST, &message),
    };
    mock.advance_clock(Duration::from_secs(body.advance_seconds));
    ok()
}

/// `POST /__mock/users/{userid}` with `{"active": bool}` or `{"removed": true}`.
fn update_user(mock: &MockDingTalk, req: &MockRequest, raw_userid: &str) -> Resp {
    let Ok(userid) = percent_encoding::percent_decode_str(raw_userid).decode_utf8() else {
        return fail(StatusCode::BAD_REQUEST, "userid is not UTF-8");
    };
    let body: UserUpdate = match parse(req) {
        Ok(body) => body,
        Err(message) => return fail(StatusCode::BAD_REQUEST, &message),
    };
    let mut state = mock.state();
    if state.org.user(&userid).is_none() {
        return fail(StatusCode::NOT_FOUND, "unknown userid");
    }
    match (body.active, body.removed) {
        (Some(active), None) => {
            state.org.set_active(&userid, active);
        }
        (None, Some(true)) => {
            state.org.remove_from_corp(&userid);
        }
        _ => {
            return fail(
                StatusCode::BAD_REQUEST,
                "send exactly one of {\"active\": bool} or {\"removed\": true}",
            )
        }
    }
    ok()
}

/// `GET /__mock/avatar/{userid}.svg`: the generated avatar.
fn avatar(mock: &MockDingTalk, file: &str) -> Resp {
    let Some(raw_userid) = file.strip_suffix(".svg") else {
        return fail(StatusCode::NOT_FOUND, "no such avatar");
    };
    let userid = percent_encoding::percent_decode_str(raw_userid).decode_utf8_lossy();
    let state = mock.state();
    match state.org.user(&userid) {
        Some(user) => wire::raw(
            StatusCode::OK,
            "image/svg+xml",
            pages::avatar_svg(&user.name),
        ),
        None => fail(StatusCode::NOT_FOUND, "no such avatar"),
    }
}

/// The `ddlogin.js` stand-in (`window.DTFrameLogin`).
pub(super) fn qr_script() -> Resp {
    let mut resp = wire::raw(
        StatusCode::OK,
        "application/javascript; charset=utf-8",
        pages::QR_SCRIPT.to_owned(),
    );
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

/// The JSAPI stand-in at `path`; its default user is the first active member of the corp. A
/// versioned CDN path (`/dingding/dingtalk-jsapi/<version>/dingtalk.open.js`) older than 3.0.31
/// serves the variant without `dd.requestAuthCode`, as those builds are; any other path serves
/// the current one with both APIs.
pub(super) fn jsapi_script(mock: &MockDingTalk, path: &str) -> Resp {
    let org = mock.org();
    let default_user = org
        .users()
        .iter()
        .find(|u| u.active && org.is_member(u))
        .map_or("", |u| u.userid.as_str());
    let mut resp = wire::raw(
        StatusCode::OK,
        "application/javascript; charset=utf-8",
        pages::jsapi_script(default_user, has_request_auth_code(path)),
    );
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

/// Whether the dingtalk-jsapi build at `path` has `dd.requestAuthCode`: the npm releases have it
/// from 3.0.31 on (`api/union/requestAuthCode.js`; 3.0.28 and older do not).
fn has_request_auth_code(path: &str) -> bool {
    let version = path
        .strip_suffix(JSAPI_SCRIPT_SUFFIX)
        .and_then(|p| p.rsplit('/').next())
        .map(|v| {
            v.split('.')
                .map(|n| n.parse::<u32>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
    match version {
        Some(v) if v.len() == 3 => v >= vec![3, 0, 31],
        _ => true,
    }
}

#[cfg(test)]
mod jsapi_variant_tests {
    use super::has_request_auth_code;

    #[test]
    fn builds_before_3_0_31_lack_dd_request_auth_code() {
        for (path, has) in [
            ("/dingding/dingtalk-jsapi/3.0.25/dingtalk.open.js", false),
            ("/dingding/dingtalk-jsapi/2.10.3/dingtalk.open.js", false),
            ("/dingding/dingtalk-jsapi/3.0.31/dingtalk.open.js", true),
            ("/dingding/dingtalk-jsapi/3.2.9/dingtalk.open.js", true),
            ("/dingtalk.open.js", true),
        ] {
            assert_eq!(has_request_auth_code(path), has, "{path}");
        }
    }
}
