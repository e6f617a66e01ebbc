//! The DingTalk calls the gateway makes, by name: each name is also the call's path relative to
//! its base URL, and is what [`super::DingTalkError`]'s `api` field carries.

/// `POST {api}/v1.0/oauth2/userAccessToken`: scan-login code → user token.
pub const USER_ACCESS_TOKEN: &str = "v1.0/oauth2/userAccessToken";
/// `GET {api}/v1.0/contact/users/me`: the token owner's profile.
pub const CURRENT_USER: &str = "v1.0/contact/users/me";
/// `POST {api}/v1.0/oauth2/accessToken`: the app token.
pub const APP_TOKEN: &str = "v1.0/oauth2/accessToken";
/// `POST {oapi}/topapi/user/getbyunionid`: unionId → userid.
pub const USER_ID_BY_UNION_ID: &str = "topapi/user/getbyunionid";
/// `POST {oapi}/topapi/v2/user/get`: userid → details.
pub const USER_DETAIL: &str = "topapi/v2/user/get";
/// `POST {oapi}/topapi/v2/department/listparentbyuser`: userid → department chains.
pub const DEPARTMENT_CHAINS: &str = "topapi/v2/department/listparentbyuser";
/// `POST {oapi}/topapi/v2/user/getuserinfo`: in-client (免登) code → user.
pub const IN_APP_USER: &str = "topapi/v2/user/getuserinfo";
/// `POST {oapi}/topapi/v2/department/get`: department id → name (and more).
pub const DEPARTMENT: &str = "topapi/v2/department/get";

/// The config key holding the base URL of `api` (for operator hints).
pub fn url_key(api: &str) -> &'static str {
    if api.starts_with("topapi/") {
        "dingtalk.oapi_url"
    } else {
        "dingtalk.api_url"
    }
}
