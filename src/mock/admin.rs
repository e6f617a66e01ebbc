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

/// `GET /__mock/jsapi_code?userid=[&corpId=][&clientId=]`: what `dd.requestAuthCode` returns in the client.
fn jsapi_code(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let Some(userid) = req.query_non_empty("userid") else {
        return fail(StatusCode::BAD_REQUEST, "userid is required");
    };
    let settings = mock.settings();
    if req
        .query_non_empty("corpId")
        .is_some_and(|c| c != settings.org.corp().corp_id)
    {
        // errorCode 3: no micro-app for this page in that corp (what the real client reports).
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "corpId does not match the mock's corp", "errorCode": "3"}),
        );
    }
    if req
        .query_non_empty("clientId")
        .is_some_and(|c| c != settings.client_id)
    {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "clientId does not match the mock's app", "errorCode": "3"}),
        );
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

/// The JSAPI stand-in; its default user is the first active member of the corp.
pub(super) fn jsapi_script(mock: &MockDingTalk) -> Resp {
    let org = mock.org();
    let default_user = org
        .users()
        .iter()
        .find(|u| u.active && org.is_member(u))
        .map_or("", |u| u.userid.as_str());
    let mut resp = wire::raw(
        StatusCode::OK,
        "application/javascript; charset=utf-8",
        pages::jsapi_script(default_user),
    );
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}
