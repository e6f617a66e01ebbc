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
    /// Membership details from the organization's directory (present when the corp is configured
    /// and enterprise look-ups are on).
    pub enterprise: Option<Enterprise>,
}

/// What the organization's directory says about a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enterprise {
    /// The enterprise userid (unique within the corp).
    pub user_id: String,
    /// Departments the user is directly in.
    pub departments: Vec<u64>,
    /// Every department the user is in or below, i.e. the direct ones plus all their ancestors
    /// (sorted, no duplicates). "Department X and everything under it" matches when X is here.
    pub department_tree: Vec<u64>,
    /// Organization administrator.
    pub admin: bool,
    /// Job title, when set.
    pub title: Option<String>,
}

impl Identity {
    /// The enterprise userid, when known.
    pub fn user_id(&self) -> Option<&str> {
        self.enterprise.as_ref().map(|e| e.user_id.as_str())
    }
}
