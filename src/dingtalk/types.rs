//! What the DingTalk calls return, parsed leniently where DingTalk's wire disagrees with its docs.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use tokio::time::Instant;

/// A user access token from `userAccessToken` (scan login). Good for reading the profile once;
/// the gateway discards it afterwards. `Debug` never shows the token.
#[derive(Clone)]
pub struct UserToken {
    access_token: String,
    /// The organization the user picked at login (present when the scope included `corpid`).
    pub corp_id: Option<String>,
    /// Lifetime in seconds as reported by DingTalk.
    pub expire_in: u64,
}

impl UserToken {
    /// Wraps a token obtained elsewhere (tests, refresh flows).
    pub fn new(access_token: impl Into<String>, corp_id: Option<String>, expire_in: u64) -> Self {
        Self {
            access_token: access_token.into(),
            corp_id,
            expire_in,
        }
    }

    pub(super) fn secret(&self) -> &str {
        &self.access_token
    }
}

impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserToken")
            .field("access_token", &"<redacted>")
            .field("corp_id", &self.corp_id)
            .field("expire_in", &self.expire_in)
            .finish()
    }
}

/// The application's own access token (for every oapi call). `Debug` never shows the token.
#[derive(Clone)]
pub struct AppToken {
    token: Arc<str>,
    /// Lifetime in seconds as reported by DingTalk (7200 in production).
    pub expire_in: u64,
    fetched_at: Instant,
}

impl AppToken {
    pub(super) fn new(token: String, expire_in: u64, fetched_at: Instant) -> Self {
        Self {
            token: token.into(),
            expire_in,
            fetched_at,
        }
    }

    pub(super) fn secret(&self) -> &str {
        &self.token
    }

    /// When the gateway received this token.
    pub fn fetched_at(&self) -> Instant {
        self.fetched_at
    }

    pub(super) fn same_token(&self, other: &AppToken) -> bool {
        self.token == other.token
    }
}

impl fmt::Debug for AppToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppToken")
            .field("token", &"<redacted>")
            .field("expire_in", &self.expire_in)
            .finish()
    }
}

/// Wire shape of `userAccessToken`'s answer; the refresh token is deliberately not kept.
#[derive(Deserialize)]
pub(super) struct RawUserToken {
    #[serde(rename = "accessToken", deserialize_with = "lenient::string")]
    pub access_token: String,
    #[serde(rename = "corpId", default, deserialize_with = "lenient::opt_string")]
    pub corp_id: Option<String>,
    #[serde(
        rename = "expireIn",
        default,
        deserialize_with = "lenient::u64_or_zero"
    )]
    pub expire_in: u64,
}

/// Wire shape of `oauth2/accessToken`'s answer.
#[derive(Deserialize)]
pub(super) struct RawAppToken {
    #[serde(rename = "accessToken", deserialize_with = "lenient::string")]
    pub access_token: String,
    #[serde(
        rename = "expireIn",
        default,
        deserialize_with = "lenient::u64_or_zero"
    )]
    pub expire_in: u64,
}

/// The logged-in user's profile from `GET /v1.0/contact/users/me`.
///
/// `union_id` is required and non-empty (it becomes the session subject); everything else is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactUser {
    #[serde(deserialize_with = "lenient::string")]
    pub union_id: String,
    /// Nickname; empty when DingTalk omits it.
    #[serde(default, deserialize_with = "lenient::string_or_empty")]
    pub nick: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub open_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub avatar_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub email: Option<String>,
    /// Only with the `Contact.User.mobile` permission.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub mobile: Option<String>,
    /// Country calling code of `mobile`, e.g. `86`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub state_code: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub login_email: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub visitor: bool,
}

/// `leader_in_dept` entry of [`UserDetail`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeptLeader {
    #[serde(deserialize_with = "lenient::u64")]
    pub dept_id: u64,
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub leader: bool,
}

/// `role_list` entry of [`UserDetail`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Role {
    #[serde(default, deserialize_with = "lenient::u64_or_zero")]
    pub id: u64,
    #[serde(default, deserialize_with = "lenient::string_or_empty")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::string_or_empty")]
    pub group_name: String,
}

/// An organization member from `topapi/v2/user/get`. `userid` is required and non-empty;
/// numbers and booleans are accepted as strings too, absent lists are empty, absent flags false.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserDetail {
    #[serde(deserialize_with = "lenient::string")]
    pub userid: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub unionid: Option<String>,
    #[serde(default, deserialize_with = "lenient::string_or_empty")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub avatar: Option<String>,
    /// Job title.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub email: Option<String>,
    /// Enterprise mailbox, when enabled.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub org_email: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub job_number: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub manager_userid: Option<String>,
    /// Departments the user belongs to directly (not their ancestors).
    #[serde(default, deserialize_with = "lenient::u64_list")]
    pub dept_id_list: Vec<u64>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub leader_in_dept: Vec<DeptLeader>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub role_list: Vec<Role>,
    /// Organization administrator.
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub admin: bool,
    /// The organization's "boss".
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub boss: bool,
    /// Executive mode.
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub senior: bool,
    /// Has activated DingTalk.
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub active: bool,
    /// A dedicated (专属) account.
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub exclusive_account: bool,
}

/// The user behind an in-client (免登) code, from `topapi/v2/user/getuserinfo`.
/// `userid` and `unionid` are required and non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InAppUser {
    #[serde(deserialize_with = "lenient::string")]
    pub userid: String,
    #[serde(deserialize_with = "lenient::string")]
    pub unionid: String,
    #[serde(default, deserialize_with = "lenient::string_or_empty")]
    pub name: String,
    /// Organization administrator.
    #[serde(default, deserialize_with = "lenient::bool_or_false")]
    pub sys: bool,
    /// 1 primary admin, 2 sub-admin, 100 boss, 0 other.
    #[serde(default, deserialize_with = "lenient::i64_or_zero")]
    pub sys_level: i64,
    /// For dedicated accounts: the linked account's unionid (meaning not documented).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub associated_unionid: Option<String>,
}

/// `result` of `topapi/user/getbyunionid`.
#[derive(Deserialize)]
pub(super) struct RawUnionIdLookup {
    #[serde(deserialize_with = "lenient::string")]
    pub userid: String,
    /// 0 = employee, 1 = external contact.
    #[serde(default, deserialize_with = "lenient::i64_or_zero")]
    pub contact_type: i64,
}

/// `result` of `topapi/v2/department/get` (only the field the gateway uses).
#[derive(Deserialize)]
pub(super) struct RawDepartment {
    pub name: String,
}

/// `result` of `topapi/v2/department/listparentbyuser`.
#[derive(Deserialize)]
pub(super) struct RawParentList {
    #[serde(default, deserialize_with = "lenient::list")]
    pub parent_list: Vec<RawParentChain>,
}

#[derive(Deserialize)]
pub(super) struct RawParentChain {
    #[serde(default, deserialize_with = "lenient::u64_list")]
    pub parent_dept_id_list: Vec<u64>,
}

/// Turns a serde error into text that names the problem but never quotes the offending value
/// (it could be a token or personal data).
pub(super) fn describe_decode_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    for kind in [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ] {
        if text.starts_with(kind) {
            // serde formats these as "<kind>: <the value>, expected <our type>"; keep only our side.
            return match text.rfind(", expected ") {
                Some(at) => format!("{kind}{}", &text[at..]),
                None => kind.to_owned(),
            };
        }
    }
    text
}

/// Field deserializers that accept the type variations DingTalk is known to send.
mod lenient {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn as_u64(v: &Value) -> Option<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn as_i64(v: &Value) -> Option<i64> {
        match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn as_string(v: Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A string (or a number, rendered); must be non-empty.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match as_string(Value::deserialize(d)?) {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(D::Error::custom(
                "expected a non-empty string, got an empty one",
            )),
            None => Err(D::Error::custom("expected a string")),
        }
    }

    /// Like `string` but null or absent means empty.
    pub fn string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(opt_string(d)?.unwrap_or_default())
    }

    /// A string; null or `""` is `None`.
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => match as_string(v) {
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => Ok(Some(s)),
                None => Err(D::Error::custom("expected a string")),
            },
        }
    }

    /// A non-negative integer, as a number or a numeric string.
    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        as_u64(&Value::deserialize(d)?)
            .ok_or_else(|| D::Error::custom("expected a non-negative integer"))
    }

    /// Like `u64`, null meaning 0.
    pub fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(0),
            v => as_u64(&v).ok_or_else(|| D::Error::custom("expected a non-negative integer")),
        }
    }

    /// An integer as a number or a numeric string, null meaning 0.
    pub fn i64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(0),
            v => as_i64(&v).ok_or_else(|| D::Error::custom("expected an integer")),
        }
    }

    /// A boolean; also `"true"`/`"false"`, `0`/`1` and `"0"`/`"1"`; null meaning false.
    pub fn bool_or_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "1" => Ok(true),
            Value::String(s) if s == "false" || s == "0" || s.is_empty() => Ok(false),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            _ => Err(D::Error::custom("expected a boolean")),
        }
    }

    /// An array of non-negative integers (numbers or numeric strings); null meaning empty.
    pub fn u64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    as_u64(v)
                        .ok_or_else(|| D::Error::custom("expected a list of non-negative integers"))
                })
                .collect(),
            _ => Err(D::Error::custom("expected a list of non-negative integers")),
        }
    }

    /// An array of `T`; null meaning empty.
    pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_detail_accepts_numbers_as_strings() {
        let detail: UserDetail = serde_json::from_value(json!({
            "userid": "zhangsan", "unionid": "u1", "name": "张三", "title": "",
            "dept_id_list": ["2", 3], "admin": "true", "boss": 0, "active": true,
            "leader_in_dept": [{"dept_id": "2", "leader": "false"}, {"dept_id": 3, "leader": true}],
            "role_list": null, "hired_date": 1597573616828u64, "extension": "{}"
        }))
        .unwrap();
        assert_eq!(detail.dept_id_list, vec![2, 3]);
        assert!(detail.admin && !detail.boss && detail.active && !detail.senior);
        assert_eq!(detail.title, None);
        assert_eq!(detail.name, "张三");
        assert_eq!(
            detail.leader_in_dept,
            vec![
                DeptLeader {
                    dept_id: 2,
                    leader: false
                },
                DeptLeader {
                    dept_id: 3,
                    leader: true
                }
            ]
        );
        assert!(detail.role_list.is_empty());
    }

    #[test]
    fn required_ids_must_be_present_and_non_empty() {
        let missing = serde_json::from_value::<UserDetail>(json!({"name": "x"})).unwrap_err();
        assert!(describe_decode_error(&missing).contains("missing field `userid`"));
        assert!(
            serde_json::from_value::<InAppUser>(json!({"userid": "a", "unionid": ""})).is_err()
        );
        assert!(
            serde_json::from_value::<ContactUser>(json!({"unionId": "  ", "nick": "n"})).is_err()
        );
        assert!(serde_json::from_value::<UserDetail>(
            json!({"userid": "a", "dept_id_list": ["x"]})
        )
        .is_err());
    }

    #[test]
    fn decode_errors_never_quote_values() {
        let err = serde_json::from_str::<Vec<u8>>(r#"["sekrit-token-value"]"#).unwrap_err();
        let text = describe_decode_error(&err);
        assert!(!text.contains("sekrit"), "{text}");
        assert!(text.starts_with("invalid type, expected u8"), "{text}");
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let user = UserToken::new("user-secret-token", Some("corp1".into()), 7200);
        let app = AppToken::new("app-secret-token".into(), 7200, Instant::now());
        let text = format!("{user:?} {app:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("corp1"));
    }
}
