//! Route policies: who may use a route (corp, users, departments with their subtrees, admins, denials).

use std::fmt;

use serde::Serialize;

use crate::identity::{Enterprise, Identity};

/// How many entries of a list a denial message names before it says "… (N more)".
const LIST_IN_MESSAGE: usize = 10;

/// A set of conditions; a person matches the rule when ANY condition matches them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// People by enterprise userid or by unionId (compared exactly, case-sensitive).
    pub users: Vec<String>,
    /// Department ids; each covers the department and every department below it.
    pub departments: Vec<u64>,
    /// Organization administrators.
    pub admins: bool,
}

impl Rule {
    /// No condition at all.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.departments.is_empty() && !self.admins
    }

    /// Uses a condition that only the organization directory can answer (departments, admins).
    ///
    /// `users` does not count: a unionId is known without the directory. A userid is not, so
    /// without directory look-ups users must be listed by unionId.
    pub fn needs_directory(&self) -> bool {
        !self.departments.is_empty() || self.admins
    }

    /// The conditions of this rule that match `id`, in config syntax (`users [lisi]`,
    /// `departments [300]`, `admins`); empty when none matches. Directory conditions never
    /// match an identity without enterprise data.
    fn matches(&self, id: &Identity) -> Vec<String> {
        let mut hits = Vec::new();
        let users: Vec<&str> = self
            .users
            .iter()
            .filter(|u| **u == id.union_id || id.user_id() == Some(u.as_str()))
            .map(String::as_str)
            .collect();
        if !users.is_empty() {
            hits.push(format!("users {}", list(&users)));
        }
        if let Some(ent) = &id.enterprise {
            let depts: Vec<u64> = self
                .departments
                .iter()
                .copied()
                .filter(|d| in_tree(ent, *d))
                .collect();
            if !depts.is_empty() {
                hits.push(format!("departments {}", list(&depts)));
            }
            if self.admins && ent.admin {
                hits.push("admins".to_owned());
            }
        }
        hits
    }

    /// Every condition in config syntax, `; `-separated, each prefixed with `section.`.
    fn conditions(&self, section: &str) -> String {
        let mut parts = Vec::new();
        if !self.users.is_empty() {
            parts.push(format!("{section}.users {}", list(&self.users)));
        }
        if !self.departments.is_empty() {
            parts.push(format!("{section}.departments {}", list(&self.departments)));
        }
        if self.admins {
            parts.push(format!("{section}.admins"));
        }
        parts.join("; ")
    }

    /// The conditions in words, joined with ", or ".
    fn in_words(&self) -> String {
        let mut parts = Vec::new();
        match self.users.as_slice() {
            [] => {}
            [one] => parts.push(format!("user {one}")),
            many => parts.push(format!("one of the users {}", many.join(", "))),
        }
        match self.departments.as_slice() {
            [] => {}
            [one] => parts.push(format!("in department {one} or below")),
            many => parts.push(format!(
                "in one of the departments {} or below",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        if self.admins {
            parts.push("an organization administrator".to_owned());
        }
        parts.join(", or ")
    }
}

impl Rule {
    /// The conditions of this rule that match `id` (directory conditions only with enterprise
    /// data), as a rule of their own.
    fn matching(&self, id: &Identity) -> Rule {
        let ent = id.enterprise.as_ref();
        Rule {
            users: self
                .users
                .iter()
                .filter(|u| **u == id.union_id || id.user_id() == Some(u.as_str()))
                .cloned()
                .collect(),
            departments: self
                .departments
                .iter()
                .copied()
                .filter(|d| ent.is_some_and(|e| in_tree(e, *d)))
                .collect(),
            admins: self.admins && ent.is_some_and(|e| e.admin),
        }
    }

    /// The people this rule describes, in plain words (English, Chinese), e.g. "people in the
    /// department 研发部 or a department below it, or organization administrators". Long lists
    /// are shortened like the log text.
    fn plain_words(&self, department_name: &dyn Fn(u64) -> Option<String>) -> (String, String) {
        let (mut en, mut zh) = (Vec::new(), Vec::new());
        if !self.departments.is_empty() {
            let names: Vec<(String, String)> = self
                .departments
                .iter()
                .map(|d| match department_name(*d) {
                    Some(name) => (format!("“{name}”"), format!("“{name}”")),
                    None => (format!("number {d}"), format!("（编号 {d}）")),
                })
                .collect();
            let en_names: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
            let zh_names: Vec<&str> = names.iter().map(|n| n.1.as_str()).collect();
            if names.len() == 1 {
                en.push(format!(
                    "people in the department {} or a department below it",
                    en_names[0]
                ));
            } else {
                en.push(format!(
                    "people in one of the departments {} or a department below them",
                    shortened(&en_names, ", ", " and ")
                ));
            }
            zh.push(format!(
                "部门{}及其下级部门的成员",
                shortened(&zh_names, "、", "、")
            ));
        }
        if self.admins {
            en.push("organization administrators".to_owned());
            zh.push("组织管理员".to_owned());
        }
        if !self.users.is_empty() {
            let users: Vec<&str> = self.users.iter().map(String::as_str).collect();
            let (label_en, label_zh) = if users.len() == 1 {
                ("the account", "账号")
            } else {
                ("the accounts", "账号")
            };
            en.push(format!("{label_en} {}", shortened(&users, ", ", " and ")));
            zh.push(format!("{label_zh} {}", shortened(&users, "、", "、")));
        }
        (en.join(", or "), zh.join("；"))
    }
}

/// `a, b and c`, at most [`LIST_IN_MESSAGE`] entries, then "… (N more)".
fn shortened(items: &[&str], sep: &str, last_sep: &str) -> String {
    let shown = &items[..items.len().min(LIST_IN_MESSAGE)];
    let more = items.len() - shown.len();
    match shown {
        _ if more > 0 => format!("{} … (+{more})", shown.join(sep)),
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{}{last_sep}{last}", init.join(sep)),
    }
}

fn in_tree(ent: &Enterprise, dept: u64) -> bool {
    // department_tree is documented as sorted, but a session minted by an older version might
    // not be; a linear scan of a few dozen ids costs nothing and cannot be fooled by order.
    ent.department_tree.contains(&dept) || ent.departments.contains(&dept)
}

/// `[a, b, c]`, shortened to the first [`LIST_IN_MESSAGE`] entries.
fn list<T: fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(LIST_IN_MESSAGE)
        .map(ToString::to_string)
        .collect();
    let more = items.len().saturating_sub(LIST_IN_MESSAGE);
    if more > 0 {
        format!("[{}, … ({more} more)]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The corpId the user must have signed in through; `None` = any organization, or none
    /// (only possible when the gateway runs with `allow_any_corp`).
    pub corp: Option<String>,
    /// Who is let in; an empty rule lets in every member of `corp`.
    pub allow: Rule,
    /// Who is kept out even when `allow` matches them.
    pub deny: Rule,
}

/// The outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "snake_case")]
pub enum Decision {
    /// The request may proceed.
    Allow,
    /// The request is refused (403).
    Deny(DenyReason),
}

/// Why a signed-in user was refused. The strings name rules in config syntax, which reads the
/// same in every language; [`DenyReason::explain`] wraps them in sentences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenyReason {
    /// The user did not sign in through the required organization (or through none).
    WrongCorp {
        /// The required corpId.
        required: String,
    },
    /// A deny condition matched, e.g. `deny.departments [300]` (only the matching entries).
    Denied {
        /// The matching deny condition(s), `; `-separated.
        rule: String,
    },
    /// No allow condition matched; `needs` lists them all, e.g.
    /// `allow.users [lisi]; allow.departments [100]; allow.admins`.
    NotAllowed {
        /// Every allow condition, `; `-separated (long lists shortened).
        needs: String,
    },
    /// The decision depends on directory data (departments, admin) that the session lacks.
    NeedsDirectory,
}

impl DenyReason {
    /// Sentences naming the rule in config syntax, for the log line and API (JSON) answers:
    /// (English, Chinese). People get [`Policy::explain_to`] instead. Plain text; escape before
    /// putting it into HTML.
    pub fn explain(&self) -> (String, String) {
        let (mut en, mut zh) = match self {
            DenyReason::WrongCorp { required } => (
                format!("This application is only open to members of the organization {required}, and you did not sign in as one of them."),
                format!("此应用仅对组织 {required} 的成员开放，您当前登录的身份不属于该组织。"),
            ),
            DenyReason::Denied { rule } => (
                format!("Access is refused by the rule {rule}, which matches you."),
                format!("规则 {rule} 与您匹配，因此拒绝访问。"),
            ),
            DenyReason::NotAllowed { needs } => (
                format!("Access requires one of: {needs}."),
                format!("访问需要满足以下任一条件：{needs}。"),
            ),
            DenyReason::NeedsDirectory => (
                "This rule depends on your organization directory details (departments or administrator status), which this session does not carry. Sign out and sign in again; if that does not help, contact the administrator of this gateway.".to_owned(),
                "此规则需要组织通讯录信息（部门或管理员身份），当前会话中没有这些信息。请退出后重新登录；如仍无法访问，请联系网关管理员。".to_owned(),
            ),
        };
        let names_departments = match self {
            DenyReason::Denied { rule } => rule.contains(".departments"),
            DenyReason::NotAllowed { needs } => needs.contains(".departments"),
            DenyReason::WrongCorp { .. } | DenyReason::NeedsDirectory => false,
        };
        if names_departments {
            en.push_str(" A department includes every department below it.");
            zh.push_str("部门包含其所有下级部门。");
        }
        (en, zh)
    }
}

impl fmt::Display for DenyReason {
    /// The English explanation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain().0)
    }
}

impl Policy {
    /// Every member of `corp` (or, with `None`, everyone signed in), nobody denied.
    pub fn members_of(corp: Option<String>) -> Policy {
        Policy {
            corp,
            allow: Rule::default(),
            deny: Rule::default(),
        }
    }

    /// Decides whether `id` may use the route. In order, each failing closed:
    /// 1. `corp`, when set, must equal `id.corp_id` (a missing corp_id never matches);
    /// 2. `deny` overrides everything: a matching deny condition refuses. If `deny` has a
    ///    directory condition (departments, admins) and `id` has no enterprise data, the answer
    ///    is unknown and the user is refused with [`DenyReason::NeedsDirectory`];
    /// 3. an empty `allow` lets in anyone left; otherwise any matching allow condition does.
    ///    Users match by unionId or enterprise userid; departments match the user's
    ///    `department_tree` (direct departments and all their ancestors). When nothing matches,
    ///    the reason is [`DenyReason::NeedsDirectory`] if `id` lacks enterprise data and `allow`
    ///    has a directory condition that might have matched, else [`DenyReason::NotAllowed`].
    pub fn evaluate(&self, id: &Identity) -> Decision {
        if let Some(required) = &self.corp {
            if id.corp_id.as_deref() != Some(required.as_str()) {
                return Decision::Deny(DenyReason::WrongCorp {
                    required: required.clone(),
                });
            }
        }
        let denied = self.deny.matches(id);
        if !denied.is_empty() {
            let rule = denied
                .iter()
                .map(|c| format!("deny.{c}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Decision::Deny(DenyReason::Denied { rule });
        }
        if id.enterprise.is_none() && self.deny.needs_directory() {
            return Decision::Deny(DenyReason::NeedsDirectory);
        }
        if self.allow.is_empty() || !self.allow.matches(id).is_empty() {
            return Decision::Allow;
        }
        if id.enterprise.is_none() && self.allow.needs_directory() {
            return Decision::Deny(DenyReason::NeedsDirectory);
        }
        Decision::Deny(DenyReason::NotAllowed {
            needs: self.allow.conditions("allow"),
        })
    }

    /// The policy in words, for `dinggate check`, e.g. "members of corp dingcorp who are: user
    /// lisi, or in department 100 or below, or an organization administrator; except: in
    /// department 300 or below".
    pub fn describe(&self) -> String {
        let mut s = match &self.corp {
            Some(corp) => format!("members of corp {corp}"),
            None => "anyone signed in with DingTalk (any organization)".to_owned(),
        };
        if !self.allow.is_empty() {
            s.push_str(" who are: ");
            s.push_str(&self.allow.in_words());
        }
        if !self.deny.is_empty() {
            s.push_str("; except: ");
            s.push_str(&self.deny.in_words());
        }
        s
    }

    /// Uses departments or admins anywhere, so it only works with enterprise directory look-ups.
    pub fn needs_directory(&self) -> bool {
        self.allow.needs_directory() || self.deny.needs_directory()
    }

    /// Why `id` was refused (`reason`, from [`Policy::evaluate`]), in plain words for the 403
    /// page: (English, Chinese). Names people and departments, never config syntax (that stays in
    /// [`DenyReason`]'s text for the log line). `department_name` gives a department's name
    /// where it is known; otherwise the department is named by its number.
    pub fn explain_to(
        &self,
        id: &Identity,
        reason: &DenyReason,
        department_name: &dyn Fn(u64) -> Option<String>,
    ) -> (String, String) {
        match reason {
            DenyReason::WrongCorp { .. } => (
                "This application is only open to members of its organization, and the DingTalk account you signed in with is not one of them.".to_owned(),
                "此应用仅对其所属组织的成员开放，您登录所用的钉钉账号不属于该组织。".to_owned(),
            ),
            DenyReason::Denied { .. } => {
                let matched = self.deny.matching(id);
                let (en, zh) = matched.plain_words(department_name);
                (
                    format!("This page is closed to {en}, and that includes you."),
                    format!("此页面不对以下人员开放：{zh}。您属于其中。"),
                )
            }
            DenyReason::NotAllowed { .. } => {
                let (en, zh) = self.allow.plain_words(department_name);
                (
                    format!("This page is only open to {en}."),
                    format!("此页面仅对以下人员开放：{zh}。"),
                )
            }
            DenyReason::NeedsDirectory => reason.explain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORP: &str = "dingcorp";

    /// A member of CORP; `depts` direct departments, `tree` their ancestry (plus themselves).
    fn member(union_id: &str, user_id: &str, depts: &[u64], tree: &[u64], admin: bool) -> Identity {
        Identity {
            union_id: union_id.to_owned(),
            name: "测试".to_owned(),
            avatar: None,
            email: None,
            corp_id: Some(CORP.to_owned()),
            open_id: None,
            enterprise: Some(Enterprise {
                user_id: user_id.to_owned(),
                departments: depts.to_vec(),
                department_tree: tree.to_vec(),
                admin,
                title: None,
            }),
        }
    }

    fn without_directory(union_id: &str) -> Identity {
        Identity {
            enterprise: None,
            ..member(union_id, "unused", &[], &[], false)
        }
    }

    fn policy(allow: Rule, deny: Rule) -> Policy {
        Policy {
            corp: Some(CORP.to_owned()),
            allow,
            deny,
        }
    }

    fn users(u: &[&str]) -> Rule {
        Rule {
            users: u.iter().map(|s| (*s).to_owned()).collect(),
            ..Rule::default()
        }
    }

    fn depts(d: &[u64]) -> Rule {
        Rule {
            departments: d.to_vec(),
            ..Rule::default()
        }
    }

    fn admins() -> Rule {
        Rule {
            admins: true,
            ..Rule::default()
        }
    }

    fn reason(d: Decision) -> DenyReason {
        match d {
            Decision::Deny(r) => r,
            Decision::Allow => panic!("expected a denial"),
        }
    }

    // Org: 1 (root) > 100 (研发) > 110 (后端) > 111; 1 > 300 (外包) > 310.
    fn zhangsan() -> Identity {
        member("union-zs", "zhangsan", &[111], &[1, 100, 110, 111], false)
    }
    fn lisi() -> Identity {
        member("union-ls", "lisi", &[300], &[1, 300], false)
    }
    fn wangwu() -> Identity {
        member(
            "union-ww",
            "wangwu",
            &[310, 110],
            &[1, 100, 110, 300, 310],
            true,
        )
    }
    fn boss() -> Identity {
        member("union-boss", "boss", &[1], &[1], true)
    }

    #[test]
    fn empty_policy_admits_every_member_of_the_corp() {
        let p = Policy::members_of(Some(CORP.to_owned()));
        for id in [zhangsan(), lisi(), boss(), without_directory("union-x")] {
            assert_eq!(p.evaluate(&id), Decision::Allow, "{}", id.union_id);
        }
        assert!(!p.needs_directory());
    }

    #[test]
    fn corp_is_checked_first_and_fails_closed() {
        let p = Policy::members_of(Some(CORP.to_owned()));
        let mut outsider = zhangsan();
        outsider.corp_id = Some("othercorp".to_owned());
        let want = DenyReason::WrongCorp {
            required: CORP.to_owned(),
        };
        assert_eq!(reason(p.evaluate(&outsider)), want);
        outsider.corp_id = None;
        assert_eq!(reason(p.evaluate(&outsider)), want);
        // Even a user explicitly allowed by name must come through the right corp.
        let named = policy(users(&["zhangsan"]), Rule::default());
        assert_eq!(reason(named.evaluate(&outsider)), want);
        // No corp required: any corp, or none.
        let open = Policy::members_of(None);
        assert_eq!(open.evaluate(&outsider), Decision::Allow);
    }

    #[test]
    fn departments_include_their_subtree() {
        let p = policy(depts(&[100]), Rule::default());
        assert_eq!(p.evaluate(&zhangsan()), Decision::Allow, "111 is below 100");
        assert_eq!(p.evaluate(&wangwu()), Decision::Allow, "110 is below 100");
        assert_eq!(
            reason(p.evaluate(&lisi())),
            DenyReason::NotAllowed {
                needs: "allow.departments [100]".to_owned()
            }
        );
        // The root department admits everyone whose tree reaches it; a leaf admits only itself.
        assert_eq!(
            policy(depts(&[1]), Rule::default()).evaluate(&lisi()),
            Decision::Allow
        );
        let leaf = policy(depts(&[111]), Rule::default());
        assert_eq!(leaf.evaluate(&zhangsan()), Decision::Allow);
        assert!(matches!(leaf.evaluate(&wangwu()), Decision::Deny(_)));
        // Parents never match through children: being in 100 does not put you in 110.
        let mut only_100 = zhangsan();
        if let Some(e) = only_100.enterprise.as_mut() {
            e.departments = vec![100];
            e.department_tree = vec![1, 100];
        }
        assert!(matches!(
            policy(depts(&[110]), Rule::default()).evaluate(&only_100),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn users_match_by_userid_or_union_id() {
        let p = policy(users(&["zhangsan", "union-ls"]), Rule::default());
        assert_eq!(p.evaluate(&zhangsan()), Decision::Allow, "by userid");
        assert_eq!(p.evaluate(&lisi()), Decision::Allow, "by unionId");
        assert!(matches!(p.evaluate(&wangwu()), Decision::Deny(_)));
        // Exact and case-sensitive.
        let p = policy(users(&["ZhangSan", "zhangsan "]), Rule::default());
        assert!(matches!(p.evaluate(&zhangsan()), Decision::Deny(_)));
        // Without the directory, only the unionId is known.
        let p = policy(users(&["union-zs"]), Rule::default());
        assert_eq!(p.evaluate(&without_directory("union-zs")), Decision::Allow);
        let p = policy(users(&["zhangsan"]), Rule::default());
        assert_eq!(
            reason(p.evaluate(&without_directory("union-zs"))),
            DenyReason::NotAllowed {
                needs: "allow.users [zhangsan]".to_owned()
            }
        );
    }

    #[test]
    fn admins_condition() {
        let p = policy(admins(), Rule::default());
        assert_eq!(p.evaluate(&boss()), Decision::Allow);
        assert_eq!(
            reason(p.evaluate(&zhangsan())),
            DenyReason::NotAllowed {
                needs: "allow.admins".to_owned()
            }
        );
    }

    #[test]
    fn any_allow_condition_suffices() {
        let allow = Rule {
            users: vec!["lisi".to_owned()],
            departments: vec![110],
            admins: true,
        };
        let p = policy(allow, Rule::default());
        assert_eq!(p.evaluate(&lisi()), Decision::Allow);
        assert_eq!(p.evaluate(&zhangsan()), Decision::Allow);
        assert_eq!(p.evaluate(&boss()), Decision::Allow);
        let stranger = member("union-s", "s", &[310], &[1, 300, 310], false);
        assert_eq!(
            reason(p.evaluate(&stranger)),
            DenyReason::NotAllowed {
                needs: "allow.users [lisi]; allow.departments [110]; allow.admins".to_owned()
            }
        );
    }

    #[test]
    fn deny_beats_allow() {
        // wangwu is in 110 (allowed) and in 310, below the denied 300.
        let p = policy(depts(&[100]), depts(&[300]));
        assert_eq!(p.evaluate(&zhangsan()), Decision::Allow);
        assert_eq!(
            reason(p.evaluate(&wangwu())),
            DenyReason::Denied {
                rule: "deny.departments [300]".to_owned()
            }
        );
        // Named explicitly in allow, still denied.
        let p = policy(users(&["wangwu"]), users(&["union-ww"]));
        assert_eq!(
            reason(p.evaluate(&wangwu())),
            DenyReason::Denied {
                rule: "deny.users [union-ww]".to_owned()
            }
        );
        // Deny with an empty allow: everyone in the corp except the denied.
        let p = policy(Rule::default(), admins());
        assert_eq!(p.evaluate(&zhangsan()), Decision::Allow);
        assert_eq!(
            reason(p.evaluate(&boss())),
            DenyReason::Denied {
                rule: "deny.admins".to_owned()
            }
        );
        // Several matching deny conditions are all named, and only the matching entries.
        let deny = Rule {
            users: vec!["wangwu".to_owned(), "lisi".to_owned()],
            departments: vec![300, 999],
            admins: true,
        };
        assert_eq!(
            reason(policy(Rule::default(), deny).evaluate(&wangwu())),
            DenyReason::Denied {
                rule: "deny.users [wangwu]; deny.departments [300]; deny.admins".to_owned()
            }
        );
    }

    #[test]
    fn missing_directory_data_fails_closed() {
        let no_dir = without_directory("union-zs");
        // Allow by department: cannot be answered.
        assert_eq!(
            reason(policy(depts(&[100]), Rule::default()).evaluate(&no_dir)),
            DenyReason::NeedsDirectory
        );
        assert_eq!(
            reason(policy(admins(), Rule::default()).evaluate(&no_dir)),
            DenyReason::NeedsDirectory
        );
        // Deny by department: might have matched, so refused even though allow is empty.
        assert_eq!(
            reason(policy(Rule::default(), depts(&[300])).evaluate(&no_dir)),
            DenyReason::NeedsDirectory
        );
        assert_eq!(
            reason(policy(users(&["union-zs"]), admins()).evaluate(&no_dir)),
            DenyReason::NeedsDirectory
        );
        // A unionId match in allow works without the directory when deny needs none.
        assert_eq!(
            policy(
                Rule {
                    users: vec!["union-zs".to_owned()],
                    departments: vec![100],
                    admins: false
                },
                users(&["someone"])
            )
            .evaluate(&no_dir),
            Decision::Allow
        );
        // A deny by unionId still applies without the directory.
        assert_eq!(
            reason(policy(Rule::default(), users(&["union-zs"])).evaluate(&no_dir)),
            DenyReason::Denied {
                rule: "deny.users [union-zs]".to_owned()
            }
        );
    }

    #[test]
    fn needs_directory_reflects_departments_and_admins() {
        assert!(!policy(users(&["a"]), users(&["b"])).needs_directory());
        assert!(policy(depts(&[1]), Rule::default()).needs_directory());
        assert!(policy(Rule::default(), admins()).needs_directory());
        assert!(policy(Rule::default(), depts(&[2])).needs_directory());
    }

    #[test]
    fn describe_in_words() {
        let allow = Rule {
            users: vec!["lisi".to_owned()],
            departments: vec![100],
            admins: true,
        };
        assert_eq!(
            policy(allow, depts(&[300])).describe(),
            "members of corp dingcorp who are: user lisi, or in department 100 or below, or an organization administrator; except: in department 300 or below"
        );
        assert_eq!(
            Policy::members_of(Some(CORP.to_owned())).describe(),
            "members of corp dingcorp"
        );
        assert_eq!(
            Policy {
                corp: None,
                allow: Rule {
                    users: vec!["a".to_owned(), "b".to_owned()],
                    departments: vec![1, 2],
                    admins: false
                },
                deny: admins(),
            }
            .describe(),
            "anyone signed in with DingTalk (any organization) who are: one of the users a, b, or in one of the departments 1, 2 or below; except: an organization administrator"
        );
    }

    #[test]
    fn explanations_name_the_rule_in_both_languages() {
        let (en, zh) = DenyReason::Denied {
            rule: "deny.departments [300]".to_owned(),
        }
        .explain();
        assert!(
            en.contains("deny.departments [300]") && en.contains("below it"),
            "{en}"
        );
        assert!(
            zh.contains("deny.departments [300]") && zh.contains("下级部门"),
            "{zh}"
        );
        let (en, zh) = DenyReason::NotAllowed {
            needs: "allow.users [lisi]".to_owned(),
        }
        .explain();
        assert_eq!(en, "Access requires one of: allow.users [lisi].");
        assert_eq!(zh, "访问需要满足以下任一条件：allow.users [lisi]。");
        let (en, zh) = DenyReason::WrongCorp {
            required: CORP.to_owned(),
        }
        .explain();
        assert!(en.contains(CORP) && zh.contains(CORP));
        let (en, zh) = DenyReason::NeedsDirectory.explain();
        assert!(en.contains("sign in again") && zh.contains("重新登录"));
        assert_eq!(DenyReason::NeedsDirectory.to_string(), en);
    }

    #[test]
    fn explanations_for_people_use_plain_words_and_department_names() {
        let names = |d: u64| (d == 300).then(|| "外包部".to_owned());
        let p = policy(
            Rule {
                users: vec!["boss".to_owned()],
                departments: vec![100, 300],
                admins: true,
            },
            depts(&[310]),
        );
        let id = zhangsan();
        let mut outsider = lisi();
        let ent = outsider.enterprise.as_mut().unwrap();
        (ent.departments, ent.department_tree) = (vec![200], vec![1, 200]);
        let (en, zh) = p.explain_to(&outsider, &reason(p.evaluate(&outsider)), &names);
        assert_eq!(
            en,
            "This page is only open to people in one of the departments number 100 and “外包部” or a department below them, or organization administrators, or the account boss."
        );
        assert_eq!(
            zh,
            "此页面仅对以下人员开放：部门（编号 100）、“外包部”及其下级部门的成员；组织管理员；账号 boss。"
        );
        // A deny names only the matching condition, with its name.
        let denied = wangwu();
        let (en, zh) = p.explain_to(&denied, &reason(p.evaluate(&denied)), &|d| {
            (d == 310).then(|| "外包二组".to_owned())
        });
        assert_eq!(
            en,
            "This page is closed to people in the department “外包二组” or a department below it, and that includes you."
        );
        assert_eq!(
            zh,
            "此页面不对以下人员开放：部门“外包二组”及其下级部门的成员。您属于其中。"
        );
        for (en, zh) in [
            p.explain_to(&outsider, &reason(p.evaluate(&outsider)), &names),
            p.explain_to(&denied, &reason(p.evaluate(&denied)), &names),
        ] {
            for syntax in ["allow.", "deny.", "[", "]"] {
                assert!(!en.contains(syntax) && !zh.contains(syntax), "{en} / {zh}");
            }
        }
        assert_eq!(p.evaluate(&id), Decision::Allow);
        let mut other = id.clone();
        other.corp_id = Some("x".to_owned());
        let (en, _) = p.explain_to(&other, &reason(p.evaluate(&other)), &names);
        assert!(
            en.contains("members of its organization") && !en.contains(CORP),
            "{en}"
        );
    }

    #[test]
    fn long_lists_are_shortened_in_messages() {
        let many: Vec<String> = (0..25).map(|i| format!("u{i}")).collect();
        let p = policy(
            Rule {
                users: many,
                ..Rule::default()
            },
            Rule::default(),
        );
        let DenyReason::NotAllowed { needs } = reason(p.evaluate(&zhangsan())) else {
            panic!("expected NotAllowed");
        };
        assert!(needs.contains("u9, … (15 more)]"), "{needs}");
        assert!(!needs.contains("u10"), "{needs}");
    }

    #[test]
    fn decisions_serialize_for_json_errors() {
        let d = Decision::Deny(DenyReason::Denied {
            rule: "deny.admins".to_owned(),
        });
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"decision": "deny", "reason": {"kind": "denied", "rule": "deny.admins"}})
        );
        assert_eq!(
            serde_json::to_value(Decision::Allow).unwrap(),
            serde_json::json!({"decision": "allow"})
        );
        assert_eq!(
            serde_json::to_value(DenyReason::NeedsDirectory).unwrap(),
            serde_json::json!({"kind": "needs_directory"})
        );
    }
}
