//! The legacy API (oapi.dingtalk.com): `gettoken` and the `topapi` look-ups, all answering HTTP 200 with `errcode`.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::org::User;
use super::wire::{self, random_token, Resp};
use super::{api, present, BodyError, MockDingTalk, MockRequest};

const NOT_FOUND: i64 = 60121;

#[derive(Deserialize)]
struct UnionIdBody {
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct UserIdBody {
    userid: Option<String>,
}

#[derive(Deserialize)]
struct CodeBody {
    code: Option<String>,
}

fn missing(param: &str) -> Resp {
    wire::oapi_error(40035, &format!("缺少参数 {param}"))
}

fn user_not_found() -> Resp {
    wire::oapi_error(NOT_FOUND, "找不到该用户")
}

/// Why a `topapi` request was turned away before its handler ran.
enum Rejection {
    BlankToken,
    InvalidToken,
    InvalidBody,
}

impl Rejection {
    fn into_response(self) -> Resp {
        match self {
            // Observed: a blank token is sub_code 40000; an unknown or expired one 40014.
            Rejection::BlankToken => wire::oapi_auth_error("40000", "access_token is blank"),
            Rejection::InvalidToken => wire::oapi_auth_error("40014", "不合法的access_token"),
            Rejection::InvalidBody => wire::oapi_error(400002, "无效的参数"),
        }
    }
}

/// Checks `?access_token=` (the header is ignored, as on oapi) and parses the JSON body (empty = `{}`).
fn authorized_body<T: DeserializeOwned>(
    mock: &MockDingTalk,
    req: &MockRequest,
) -> Result<T, Rejection> {
    let token = req
        .query_non_empty("access_token")
        .ok_or(Rejection::BlankToken)?;
    if !mock.state().app_token_valid(token) {
        return Err(Rejection::InvalidToken);
    }
    match req.json::<T>() {
        Ok(body) => Ok(body),
        Err(BodyError::Empty) => {
            serde_json::from_value(json!({})).map_err(|_| Rejection::InvalidBody)
        }
        Err(BodyError::Invalid) => Err(Rejection::InvalidBody),
    }
}

/// `GET /gettoken?appkey=&appsecret=`: the same app token as `/v1.0/oauth2/accessToken`; errors are not wrapped in 88.
pub(super) fn gettoken(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let (Some(app_key), Some(app_secret)) = (
        req.query_non_empty("appkey"),
        req.query_non_empty("appsecret"),
    ) else {
        return missing("appkey/appsecret");
    };
    let settings = mock.settings();
    if app_key != settings.client_id || app_secret != settings.client_secret {
        return wire::oapi_error(40096, "不合法的appKey或appSecret");
    }
    let token = mock.state().fetch_app_token(settings.token_ttl);
    let mut fields = Map::new();
    fields.insert("access_token".into(), Value::from(token));
    fields.insert(
        "expires_in".into(),
        Value::from(settings.token_ttl.as_secs()),
    );
    wire::oapi_ok_fields(fields)
}

/// `POST /topapi/user/getbyunionid {unionid}`: only current members of the org's corp are found.
pub(super) fn get_by_unionid(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: UnionIdBody = match authorized_body(mock, req) {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(union_id) = present(body.unionid) else {
        return missing("unionid");
    };
    let state = mock.state();
    match state.org.member_by_union_id(&union_id) {
        Some(user) => wire::oapi_ok(json!({"contact_type": 0, "userid": user.userid})),
        None => user_not_found(),
    }
}

/// `POST /topapi/v2/user/get {userid, language?}`: the member's details.
pub(super) fn user_get(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: UserIdBody = match authorized_body(mock, req) {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(userid) = present(body.userid) else {
        return missing("userid");
    };
    let state = mock.state();
    match state.org.member(&userid) {
        Some(user) => wire::oapi_ok(Value::Object(user_detail(user, req.host.as_deref()))),
        None => user_not_found(),
    }
}

fn user_detail(user: &User, host: Option<&str>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("userid".into(), Value::from(user.userid.as_str()));
    out.insert("unionid".into(), Value::from(user.union_id.as_str()));
    out.insert("name".into(), Value::from(user.name.as_str()));
    out.insert(
        "avatar".into(),
        Value::from(api::avatar_url(user, host).unwrap_or_default()),
    );
    out.insert("state_code".into(), Value::from("86"));
    let optional = [
        ("mobile", &user.mobile),
        ("title", &user.title),
        ("job_number", &user.job_number),
        ("email", &user.email),
        ("org_email", &user.org_email),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            out.insert(key.into(), Value::from(value.as_str()));
        }
    }
    out.insert("hide_mobile".into(), Value::from(false));
    out.insert("dept_id_list".into(), json!(user.departments));
    out.insert(
        "dept_order_list".into(),
        user.departments
            .iter()
            .map(|d| json!({"dept_id": d, "order": 0}))
            .collect(),
    );
    out.insert(
        "leader_in_dept".into(),
        user.departments
            .iter()
            .map(|d| json!({"dept_id": d, "leader": user.leader_in.contains(d)}))
            .collect(),
    );
    out.insert("role_list".into(), json!([]));
    out.insert("active".into(), Value::from(user.active));
    out.insert("admin".into(), Value::from(user.admin));
    out.insert("boss".into(), Value::from(user.boss));
    out.insert("senior".into(), Value::from(false));
    out.insert("real_authed".into(), Value::from(user.active));
    out.insert("exclusive_account".into(), Value::from(false));
    out
}

/// `POST /topapi/v2/department/listparentbyuser {userid}`: one chain `[own, ..., 1]` per department.
pub(super) fn list_parent_by_user(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: UserIdBody = match authorized_body(mock, req) {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(userid) = present(body.userid) else {
        return missing("userid");
    };
    let state = mock.state();
    let Some(user) = state.org.member(&userid) else {
        return user_not_found();
    };
    let parent_list: Vec<Value> = user
        .departments
        .iter()
        .map(|&dept| json!({"parent_dept_id_list": state.org.parent_chain(dept)}))
        .collect();
    wire::oapi_ok(json!({"parent_list": parent_list}))
}

#[derive(Deserialize)]
struct DeptBody {
    dept_id: Option<u64>,
}

/// `POST /topapi/v2/department/get {dept_id}`: the department's id, name and parent; errcode
/// 60003 when there is none.
pub(super) fn department_get(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: DeptBody = match authorized_body(mock, req) {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(id) = body.dept_id else {
        return missing("dept_id");
    };
    let state = mock.state();
    let Some(dept) = state.org.department(id) else {
        return wire::oapi_error(60003, "部门不存在");
    };
    wire::oapi_ok(json!({
        "dept_id": dept.id,
        "name": dept.name,
        "parent_id": dept.parent,
        "order": 0,
        "auto_add_user": false,
        "create_dept_group": false,
    }))
}

/// `POST /topapi/v2/user/getuserinfo {code}`: exchanges an in-client (免登) code, single use.
pub(super) fn get_user_info(mock: &MockDingTalk, req: &MockRequest) -> Resp {
    let body: CodeBody = match authorized_body(mock, req) {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(code) = present(body.code) else {
        return missing("code");
    };
    let mut state = mock.state();
    let Some(userid) = state.take_jsapi_code(&code) else {
        return wire::oapi_error(40078, "不存在的临时授权码");
    };
    let Some(user) = state.org.member(&userid) else {
        return user_not_found();
    };
    let sys_level = if user.admin {
        1
    } else if user.boss {
        100
    } else {
        0
    };
    wire::oapi_ok(json!({
        "userid": user.userid,
        "unionid": user.union_id,
        "name": user.name,
        "device_id": random_token(),
        "sys": user.admin,
        "sys_level": sys_level,
    }))
}

/// errcode 22: oapi's answer to a path it does not know.
pub(super) fn unknown_api() -> Resp {
    wire::oapi_error(22, "不合法ApiName")
}
