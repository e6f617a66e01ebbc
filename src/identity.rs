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

/// Upper bounds on every field taken from DingTalk, in bytes of the field's JSON-escaped UTF-8
/// (what the session token carries: `"` and `\` count 2, control characters 2 or 6). Chosen so
/// that a session cookie for an identity with every field at its limit stays under 4,096 bytes
/// with room for the cookie name, `Domain`, issuer and audience (checked at startup by
/// `AppState::build`, and in the unit tests of `session::jwt`).
///
/// Identifiers that rules match on (unionId, userid, corpId) are never cut — a cut id could
/// name somebody else — so a longer one refuses the login. Values that would be wrong when cut
/// (openId, e-mail, avatar URL) are dropped. Display text (name, title) is cut on a character
/// boundary. Department lists are never cut (a cut list could drop the department a `deny` rule
/// names): a person whose departments do not fit is refused with a clear page.
pub mod limits {
    /// unionId (DingTalk's are 27–28 characters).
    pub const UNION_ID: usize = 64;
    /// Enterprise userid (DingTalk allows 64 characters).
    pub const USER_ID: usize = 96;
    /// corpId (DingTalk's are `ding` + 32 hex).
    pub const CORP_ID: usize = 64;
    /// openId (dropped when longer).
    pub const OPEN_ID: usize = 64;
    /// Display name (cut when longer; 64 Chinese characters fit).
    pub const NAME: usize = 192;
    /// Job title (cut when longer).
    pub const TITLE: usize = 192;
    /// E-mail address (dropped when longer).
    pub const EMAIL: usize = 128;
    /// Avatar URL (dropped when longer).
    pub const AVATAR: usize = 256;
    /// All department ids, direct and ancestors, each once, written in decimal with one
    /// separator each: about 120 ids of DingTalk's usual 9 digits, at least 57 of the longest.
    pub const DEPARTMENT_BYTES: usize = 1200;
}

/// Why an identity cannot be carried in a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// An identifier is longer than its limit (ids are never cut).
    #[error("DingTalk returned a {field} of {len} bytes; at most {max} are accepted")]
    Identifier {
        /// Which identifier (`unionId`, `userid`, `corpId`).
        field: &'static str,
        /// Its JSON-escaped length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The department ids (direct and ancestors) take more than [`limits::DEPARTMENT_BYTES`].
    #[error("the directory lists {count} departments (direct and parent departments, {bytes} bytes of ids); at most {max} bytes fit in a session")]
    Departments {
        /// How many distinct department ids.
        count: usize,
        /// Their size in the session, in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// Bytes `c` takes inside a JSON string as serde_json writes it.
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        '\u{0}'..='\u{1f}' => 6,
        c => c.len_utf8(),
    }
}

/// Bytes `s` takes inside a JSON string (without the quotes).
pub fn json_len(s: &str) -> usize {
    s.chars().map(json_char_len).sum()
}

/// The longest prefix of `s`, cut on a character boundary, whose [`json_len`] is at most `max`.
pub fn cut(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += json_char_len(c);
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// `v` when its [`json_len`] is within `max`, else `None`.
pub fn drop_if_longer(v: Option<String>, max: usize) -> Option<String> {
    v.filter(|s| json_len(s) <= max)
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn check_id(field: &'static str, v: &str, max: usize) -> Result<(), LimitError> {
    let len = json_len(v);
    if len > max {
        return Err(LimitError::Identifier { field, len, max });
    }
    Ok(())
}

impl Identity {
    /// The identity with every field within [`limits`]: display text cut, optional values that
    /// would be wrong when cut dropped; over-long identifiers or department lists refuse.
    pub fn within_limits(mut self) -> Result<Identity, LimitError> {
        check_id("unionId", &self.union_id, limits::UNION_ID)?;
        if let Some(corp) = &self.corp_id {
            check_id("corpId", corp, limits::CORP_ID)?;
        }
        let cut_len = cut(&self.name, limits::NAME).len();
        self.name.truncate(cut_len);
        self.open_id = drop_if_longer(self.open_id.take(), limits::OPEN_ID);
        self.email = drop_if_longer(self.email.take(), limits::EMAIL);
        self.avatar = drop_if_longer(self.avatar.take(), limits::AVATAR);
        if let Some(e) = &mut self.enterprise {
            check_id("userid", &e.user_id, limits::USER_ID)?;
            if let Some(title) = &mut e.title {
                let cut_len = cut(title, limits::TITLE).len();
                title.truncate(cut_len);
            }
            let mut all: Vec<u64> = e
                .departments
                .iter()
                .chain(&e.department_tree)
                .copied()
                .collect();
            all.sort_unstable();
            all.dedup();
            let bytes: usize = all.iter().map(|d| decimal_len(*d) + 1).sum();
            if bytes > limits::DEPARTMENT_BYTES {
                return Err(LimitError::Departments {
                    count: all.len(),
                    bytes,
                    max: limits::DEPARTMENT_BYTES,
                });
            }
        }
        Ok(self)
    }

    /// The largest identity [`Identity::within_limits`] lets through: every string at its
    /// limit and the department ids filling [`limits::DEPARTMENT_BYTES`] with 20-digit ids.
    /// Startup mints it to prove that every session cookie fits.
    pub fn largest() -> Identity {
        let text = |n: usize| "x".repeat(n);
        let per_id = decimal_len(u64::MAX) + 1;
        let count = (limits::DEPARTMENT_BYTES / per_id) as u64;
        // Sorted, like the directory's lists.
        let departments: Vec<u64> = (u64::MAX - count + 1..=u64::MAX).collect();
        Identity {
            union_id: text(limits::UNION_ID),
            name: text(limits::NAME),
            avatar: Some(text(limits::AVATAR)),
            email: Some(text(limits::EMAIL)),
            corp_id: Some(text(limits::CORP_ID)),
            open_id: Some(text(limits::OPEN_ID)),
            enterprise: Some(Enterprise {
                user_id: text(limits::USER_ID),
                // Half direct, half ancestors: the token carries both lists.
                departments: departments[..departments.len() / 2].to_vec(),
                department_tree: departments,
                admin: true,
                title: Some(text(limits::TITLE)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_char_boundaries_and_json_escapes() {
        assert_eq!(cut("张三李四", 7), "张三");
        assert_eq!(cut("张三李四", 6), "张三");
        assert_eq!(cut("张三李四", 5), "张");
        assert_eq!(cut("ab\"c", 3), "ab");
        assert_eq!(cut("a\u{1}b", 6), "a");
        assert_eq!(cut("a\u{1}b", 7), "a\u{1}");
        assert_eq!(cut("🎉🎉", 4), "🎉");
        assert_eq!(cut("short", 100), "short");
        for s in ["x\"y\\z\n\u{0}\u{1f}é张🎉", "\u{8}\u{c}\r\t\u{7f}"] {
            assert_eq!(json_len(s), serde_json::to_string(s).unwrap().len() - 2);
        }
    }

    fn member(title: &str, departments: Vec<u64>, tree: Vec<u64>) -> Identity {
        Identity {
            union_id: "u".into(),
            name: "张".repeat(100),
            avatar: Some(format!("https://a/{}", "p".repeat(300))),
            email: Some("e@example.com".into()),
            corp_id: Some("dingcorp".into()),
            open_id: Some("o".repeat(65)),
            enterprise: Some(Enterprise {
                user_id: "zhangsan".into(),
                departments,
                department_tree: tree,
                admin: false,
                title: Some(title.into()),
            }),
        }
    }

    #[test]
    fn text_is_cut_and_wrong_when_cut_values_are_dropped() {
        let id = member(&"工".repeat(3000), vec![1], vec![1])
            .within_limits()
            .unwrap();
        assert_eq!(id.name, "张".repeat(64));
        let title = id.enterprise.as_ref().unwrap().title.as_deref().unwrap();
        assert_eq!(title, "工".repeat(64));
        assert_eq!(id.avatar, None);
        assert_eq!(id.open_id, None);
        assert_eq!(id.email.as_deref(), Some("e@example.com"));
    }

    #[test]
    fn long_identifiers_and_department_lists_refuse() {
        let mut id = member("t", vec![], vec![]);
        id.union_id = "u".repeat(65);
        assert!(matches!(
            id.within_limits(),
            Err(LimitError::Identifier {
                field: "unionId",
                ..
            })
        ));
        let mut id = member("t", vec![], vec![]);
        id.enterprise.as_mut().unwrap().user_id = "u".repeat(97);
        assert!(matches!(
            id.within_limits(),
            Err(LimitError::Identifier {
                field: "userid",
                ..
            })
        ));
        let mut id = member("t", vec![], vec![]);
        id.corp_id = Some("c".repeat(65));
        assert!(matches!(
            id.within_limits(),
            Err(LimitError::Identifier {
                field: "corpId",
                ..
            })
        ));
        // 120 nine-digit ids fit exactly; one more does not.
        let ids: Vec<u64> = (0..120).map(|i| 100_000_000 + i).collect();
        assert!(member("t", ids[..3].to_vec(), ids.clone())
            .within_limits()
            .is_ok());
        let mut more = ids.clone();
        more.push(999_999_999);
        assert_eq!(
            member("t", vec![5], more).within_limits(),
            Err(LimitError::Departments {
                count: 122,
                bytes: 1212,
                max: 1200
            })
        );
    }

    #[test]
    fn the_largest_identity_is_within_limits() {
        let big = Identity::largest();
        assert_eq!(big.clone().within_limits(), Ok(big));
    }
}
