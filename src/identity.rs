//! The signed-in user as the gateway knows them, independent of how they logged in.

use serde::{Deserialize, Serialize};

/// Who a request belongs to. Built from DingTalk at login and carried in the session JWT.
///
/// `union_id` is the stable subject: unique per person within one DingTalk developer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// DingTalk unionId (the JWT `sub`).
    pub union_id: String,
    /// Display name (`nick`), may contain Chinese characters.
    pub name: String,
    /// Avatar URL, when DingTalk returned one.
    pub avatar: Option<String>,
    /// E-mail address, when DingTalk returned one.
    pub email: Option<String>,
    /// The organization the user logged in through (present when the scope included `corpid`).
    pub corp_id: Option<String>,
    /// DingTalk openId (app-scoped id), when returned.
    pub open_id: Option<String>,
}
