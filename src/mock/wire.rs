//! DingTalk's response shapes: new-API JSON and errors, legacy oapi envelopes, HTML pages, redirects, request ids.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SERVER};
use http::{Response, StatusCode};
use http_body_util::Full;
use rand::Rng;
use serde_json::{json, Map, Value};

/// Every response the mock produces.
pub(super) type Resp = Response<Full<Bytes>>;

const JSON_TYPE: &str = "application/json;charset=utf-8";
const REQUEST_ID_HEADER: &str = "x-acs-request-id";

/// The API family a path belongs to; it decides how errors (and injected faults) look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    /// `/v1.0/...` on api.dingtalk.com: HTTP status + `{"code","message","requestid"}`.
    NewApi,
    /// `/oauth2/auth` on login.dingtalk.com: HTML pages.
    LoginPage,
    /// Everything else (oapi.dingtalk.com): HTTP 200 + `{"errcode","errmsg","request_id"}`.
    Legacy,
}

impl Family {
    pub(super) fn of(path: &str) -> Family {
        if path.starts_with("/v1.0/") {
            Family::NewApi
        } else if path == "/oauth2/auth" {
            Family::LoginPage
        } else {
            Family::Legacy
        }
    }
}

/// A new-API style request id, e.g. `01A08FE7-3091-7139-9302-DA896FC48A29`.
pub(super) fn new_api_request_id() -> String {
    let mut rng = rand::rng();
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        rng.random::<u32>(),
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u16>(),
        rng.random::<u64>() & 0xFFFF_FFFF_FFFF
    )
}

/// A legacy-style request id, e.g. `16l4ew3d47pdp`.
pub(super) fn legacy_request_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..13)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// A fresh opaque credential (code or token): 32 lowercase hex digits.
pub(super) fn random_token() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

fn base(status: StatusCode, content_type: &'static str, request_id: &str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(SERVER, HeaderValue::from_static("DingTalk/1.0.0"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    resp
}

/// A JSON body with the given status; `request_id` goes into the `x-acs-request-id` header.
pub(super) fn json(status: StatusCode, body: &Value, request_id: &str) -> Resp {
    base(
        status,
        JSON_TYPE,
        request_id,
        Bytes::from(body.to_string().into_bytes()),
    )
}

/// New API success: HTTP 200, the object itself.
pub(super) fn api_ok(body: Value) -> Resp {
    json(StatusCode::OK, &body, &new_api_request_id())
}

/// New API error: `{"code","message","requestid"}` plus `extra` keys.
pub(super) fn api_error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: Map<String, Value>,
) -> Resp {
    let request_id = new_api_request_id();
    let mut body = Map::new();
    body.insert("code".into(), Value::from(code));
    body.insert("message".into(), Value::from(message));
    body.insert("requestid".into(), Value::from(request_id.as_str()));
    body.extend(extra);
    json(status, &Value::Object(body), &request_id)
}

/// New API error: `{"code","message","requestid"}`.
pub(super) fn api_error(status: StatusCode, code: &str, message: &str) -> Resp {
    api_error_with(status, code, message, Map::new())
}

/// `400 InvalidAuthentication`: the access token is unknown or expired.
pub(super) fn api_invalid_token() -> Resp {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidAuthentication",
        "不合法的access_token",
    )
}

/// Legacy success: `{"errcode":0,"errmsg":"ok",<fields>,"request_id"}` with HTTP 200.
pub(super) fn oapi_ok_fields(fields: Map<String, Value>) -> Resp {
    let request_id = legacy_request_id();
    let mut body = Map::new();
    body.insert("errcode".into(), Value::from(0));
    body.insert("errmsg".into(), Value::from("ok"));
    body.extend(fields);
    body.insert("request_id".into(), Value::from(request_id.as_str()));
    json(StatusCode::OK, &Value::Object(body), &request_id)
}

/// Legacy success with a `result` object.
pub(super) fn oapi_ok(result: Value) -> Resp {
    let mut fields = Map::new();
    fields.insert("result".into(), result);
    oapi_ok_fields(fields)
}

/// Legacy error with HTTP 200: `{"errcode","errmsg","request_id"}`.
pub(super) fn oapi_error(errcode: i64, errmsg: &str) -> Resp {
    oapi_error_status(StatusCode::OK, errcode, errmsg)
}

/// Legacy error body with an explicit HTTP status (only server errors use anything but 200).
pub(super) fn oapi_error_status(status: StatusCode, errcode: i64, errmsg: &str) -> Resp {
    let request_id = legacy_request_id();
    json(
        status,
        &json!({"errcode": errcode, "errmsg": errmsg, "request_id": request_id}),
        &request_id,
    )
}

/// Legacy authentication failure: errcode 88 with the real reason in the string `sub_code`.
pub(super) fn oapi_auth_error(sub_code: &str, sub_msg: &str) -> Resp {
    let request_id = legacy_request_id();
    json(
        StatusCode::OK,
        &json!({
            "errcode": 88,
            "sub_code": sub_code,
            "sub_msg": sub_msg,
            "errmsg": format!("ding talk error[subcode={sub_code},submsg={sub_msg}]"),
            "request_id": request_id,
        }),
        &request_id,
    )
}

/// An HTML page (UTF-8) that loads nothing from elsewhere.
pub(super) fn html(status: StatusCode, page: String) -> Resp {
    let mut resp = base(
        status,
        "text/html; charset=utf-8",
        &new_api_request_id(),
        Bytes::from(page.into_bytes()),
    );
    resp.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    resp
}

/// Any other body with an explicit content type (scripts, SVG).
pub(super) fn raw(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    base(
        status,
        content_type,
        &new_api_request_id(),
        Bytes::from(body.into_bytes()),
    )
}

/// `302 Found` to `location`, which must already be a serialized absolute URL.
pub(super) fn redirect(location: &str) -> Resp {
    let mut resp = base(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        &new_api_request_id(),
        Bytes::new(),
    );
    match HeaderValue::from_str(location) {
        Ok(value) => {
            resp.headers_mut().insert(LOCATION, value);
            resp
        }
        // `url::Url` serializes to ASCII without control characters, so this is unreachable in practice.
        Err(_) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "redirect target is not a valid header".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_have_the_dingtalk_shapes() {
        let id = new_api_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, new_api_request_id());
        let id = legacy_request_id();
        assert_eq!(id.len(), 13);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn family_follows_the_host_split() {
        assert_eq!(Family::of("/v1.0/oauth2/accessToken"), Family::NewApi);
        assert_eq!(Family::of("/oauth2/auth"), Family::LoginPage);
        assert_eq!(Family::of("/topapi/v2/user/get"), Family::Legacy);
        assert_eq!(Family::of("/gettoken"), Family::Legacy);
    }
}
