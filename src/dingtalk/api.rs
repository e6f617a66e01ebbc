//! The DingTalk calls the gateway makes: one typed name per call, with its path (relative to its
//! base URL), its wire family and the config key of that base URL.

use std::fmt;

/// The wire conventions of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `api.dingtalk.com`: HTTP status + `{code, message, requestid}`.
    New,
    /// `oapi.dingtalk.com`: HTTP 200 + `errcode`.
    Legacy,
}

/// One DingTalk call; [`super::DingTalkError`] names the call that failed with it, and its
/// `Display` is the call's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST {api}/v1.0/oauth2/userAccessToken`: scan-login code → user token.
    UserAccessToken,
    /// `GET {api}/v1.0/contact/users/me`: the token owner's profile.
    CurrentUser,
    /// `POST {api}/v1.0/oauth2/accessToken`: the app token.
    AppToken,
    /// `POST {oapi}/topapi/user/getbyunionid`: unionId → userid.
    UserIdByUnionId,
    /// `POST {oapi}/topapi/v2/user/get`: userid → details.
    UserDetail,
    /// `POST {oapi}/topapi/v2/department/listparentbyuser`: userid → department chains.
    DepartmentChains,
    /// `POST {oapi}/topapi/v2/user/getuserinfo`: in-client (免登) code → user.
    InAppUser,
    /// `POST {oapi}/topapi/v2/department/get`: department id → name (and more).
    Department,
}

impl Api {
    /// Every call the gateway makes.
    pub const ALL: [Api; 8] = [
        Api::UserAccessToken,
        Api::CurrentUser,
        Api::AppToken,
        Api::UserIdByUnionId,
        Api::UserDetail,
        Api::DepartmentChains,
        Api::InAppUser,
        Api::Department,
    ];

    /// A short stable name, the `api` label of the DingTalk metrics.
    pub fn name(self) -> &'static str {
        match self {
            Api::UserAccessToken => "user_access_token",
            Api::CurrentUser => "current_user",
            Api::AppToken => "app_token",
            Api::UserIdByUnionId => "user_id_by_union_id",
            Api::UserDetail => "user_detail",
            Api::DepartmentChains => "department_chains",
            Api::InAppUser => "in_app_user",
            Api::Department => "department",
        }
    }

    /// The call's path relative to its base URL.
    pub fn path(self) -> &'static str {
        match self {
            Api::UserAccessToken => "v1.0/oauth2/userAccessToken",
            Api::CurrentUser => "v1.0/contact/users/me",
            Api::AppToken => "v1.0/oauth2/accessToken",
            Api::UserIdByUnionId => "topapi/user/getbyunionid",
            Api::UserDetail => "topapi/v2/user/get",
            Api::DepartmentChains => "topapi/v2/department/listparentbyuser",
            Api::InAppUser => "topapi/v2/user/getuserinfo",
            Api::Department => "topapi/v2/department/get",
        }
    }

    /// Which wire conventions the call follows.
    pub fn family(self) -> Family {
        match self {
            Api::UserAccessToken | Api::CurrentUser | Api::AppToken => Family::New,
            Api::UserIdByUnionId
            | Api::UserDetail
            | Api::DepartmentChains
            | Api::InAppUser
            | Api::Department => Family::Legacy,
        }
    }

    /// The config key holding the call's base URL (for operator hints).
    pub fn url_key(self) -> &'static str {
        match self.family() {
            Family::New => "dingtalk.api_url",
            Family::Legacy => "dingtalk.oapi_url",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}
