//! The organization the mock DingTalk pretends to host: corp, department tree and users, seeded from YAML and validated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in organization (`src/mock/default_org.yaml`).
pub const DEFAULT_ORG_YAML: &str = include_str!("default_org.yaml");

/// Id of the root department; DingTalk fixes it to `1`.
pub const ROOT_DEPARTMENT: u64 = 1;

/// Why an organization file was rejected. Every variant names the offending item.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The file could not be read.
    #[error("cannot read org file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML or does not have the expected shape.
    #[error("org YAML does not parse{}", location_suffix(*.line, *.column))]
    Parse {
        /// 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// 1-based column of the problem, when the parser knows it.
        column: Option<usize>,
        #[source]
        source: yaml_serde::Error,
    },
    /// A required text field is empty.
    #[error("{what} must not be empty")]
    Empty { what: String },
    /// Two corps share an id.
    #[error("corp id {corp_id:?} is declared more than once")]
    DuplicateCorp { corp_id: String },
    /// Two departments share an id.
    #[error("department {id} is declared more than once")]
    DuplicateDepartment { id: u64 },
    /// There is no department 1.
    #[error("the root department (id 1) is missing")]
    MissingRoot,
    /// Department 1 names a parent.
    #[error("the root department (id 1) cannot have a parent")]
    RootWithParent,
    /// A department other than the root has no parent.
    #[error("department {id} has no parent; only department 1 may be the root")]
    MissingParent { id: u64 },
    /// A department names a parent that is not declared.
    #[error("department {id} names unknown parent department {parent}")]
    UnknownParent { id: u64, parent: u64 },
    /// Following parents from this department never reaches the root.
    #[error("department {id} is part of a parent cycle")]
    DepartmentCycle { id: u64 },
    /// Two users share a userid.
    #[error("user {userid:?} is declared more than once")]
    DuplicateUser { userid: String },
    /// Two users share a unionId or an openId.
    #[error("{field} {value:?} is used by both {first:?} and {second:?}")]
    DuplicateId {
        field: &'static str,
        value: String,
        first: String,
        second: String,
    },
    /// A user names a corp that is neither the org's corp nor one of `other_corps`.
    #[error("user {userid:?} names unknown corp {corp_id:?} (declare it under other_corps)")]
    UnknownCorp { userid: String, corp_id: String },
    /// A member of the org is in no department.
    #[error("user {userid:?} must belong to at least one department")]
    NoDepartment { userid: String },
    /// A user names a department that is not declared.
    #[error("user {userid:?} names unknown department {dept}")]
    UnknownDepartment { userid: String, dept: u64 },
    /// A user leads a department they are not a member of.
    #[error("user {userid:?} leads department {dept} without being a member of it")]
    LeaderNotMember { userid: String, dept: u64 },
    /// A user from another corp is given departments, leadership or admin/boss flags in this org.
    #[error("user {userid:?} belongs to another corp ({corp_id}) and cannot have departments, leadership, admin or boss here")]
    OutsiderWithRole { userid: String, corp_id: String },
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

/// A DingTalk organization (企业).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corp {
    /// The corpId, e.g. `dingcorp00000001`.
    pub corp_id: String,
    /// Display name, e.g. `示例科技有限公司`.
    pub name: String,
}

/// A department of the org's corp.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Department {
    /// Department id; the root is `1`.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Parent department id; `None` only for the root.
    #[serde(default)]
    pub parent: Option<u64>,
}

/// A DingTalk person as the mock knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Enterprise user id (only meaningful inside `corp_id`).
    pub userid: String,
    /// Display name (`nick` / `name`).
    pub name: String,
    /// The stable cross-app id of the person.
    pub union_id: String,
    /// The app-scoped id.
    pub open_id: String,
    /// The corp the person belongs to; `None` once they have left every org (see `MockDingTalk::remove_user`).
    pub corp_id: Option<String>,
    /// Other organizations the same account belongs to (picked on the authorize page when the
    /// scope has `corpid`); never the org's own corp unless it is `corp_id`.
    pub also_in: Vec<String>,
    /// Departments the user is a member of (empty outside the org's corp).
    pub departments: Vec<u64>,
    /// Departments (a subset of `departments`) the user leads.
    pub leader_in: Vec<u64>,
    /// Job title.
    pub title: Option<String>,
    /// Employee number.
    pub job_number: Option<String>,
    /// Personal e-mail.
    pub email: Option<String>,
    /// Enterprise mailbox.
    pub org_email: Option<String>,
    /// Mobile number (country code 86 implied).
    pub mobile: Option<String>,
    /// Avatar URL; when absent the mock serves a generated one.
    pub avatar: Option<String>,
    /// Organization administrator.
    pub admin: bool,
    /// Organization "boss".
    pub boss: bool,
    /// Whether the account has been activated; inactive accounts cannot log in.
    pub active: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    corp: Corp,
    #[serde(default)]
    app: AppRegistration,
    #[serde(default)]
    other_corps: Vec<Corp>,
    departments: Vec<Department>,
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    userid: String,
    name: String,
    union_id: String,
    open_id: String,
    #[serde(default)]
    corp_id: Option<String>,
    #[serde(default)]
    also_in: Vec<String>,
    #[serde(default)]
    departments: Vec<u64>,
    #[serde(default)]
    leader_in: Vec<u64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    job_number: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    org_email: Option<String>,
    #[serde(default)]
    mobile: Option<String>,
    #[serde(default)]
    avatar: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    boss: bool,
    #[serde(default = "default_true")]
    active: bool,
}

fn default_true() -> bool {
    true
}

/// A validated organization: one corp with a department tree rooted at `1`, its users, and people from other corps.
///
/// Invariants (checked by the constructors): unique corp ids, department ids, userids, unionIds and openIds;
/// every department reaches the root; every member of the corp is in at least one declared department and
/// leads only departments they belong to; people from other corps have no role in this one.
#[derive(Debug, Clone)]
pub struct Org {
    corp: Corp,
    app: AppRegistration,
    other_corps: Vec<Corp>,
    departments: BTreeMap<u64, Department>,
    users: Vec<User>,
}

/// The app's registrations in the developer console (`app:` in the org YAML).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// 安全设置 → 重定向URL(回调域名): the only `redirect_uri`s the authorize page accepts.
    #[serde(default)]
    pub redirect_urls: Vec<String>,
    /// 端内免登地址 / homepage: hosts whose pages may request in-client codes.
    #[serde(default)]
    pub homepage_domains: Vec<String>,
}

/// Rows as indented text columns, each padded to the widest cell's display width (the last
/// column is not padded, lines carry no trailing spaces).
pub fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    use unicode_width::UnicodeWidthStr;
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let mut out = String::new();
    for row in rows {
        out.push(' ');
        for (i, cell) in row.iter().enumerate() {
            out.push(' ');
            out.push_str(cell);
            if i + 1 < N {
                out.push_str(&" ".repeat(widths[i] - cell.width()));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

impl Org {
    /// The built-in organization (示例科技有限公司).
    pub fn default_org() -> Org {
        match Org::from_yaml_str(DEFAULT_ORG_YAML) {
            Ok(org) => org,
            // The embedded file is covered by a unit test; reaching this is a build defect, not input.
            Err(err) => panic!("built-in default_org.yaml is invalid: {err}"),
        }
    }

    /// Reads and validates an organization file.
    pub fn from_yaml_file(path: &Path) -> Result<Org, OrgError> {
        let text = std::fs::read_to_string(path).map_err(|source| OrgError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Org::from_yaml_str(&text)
    }

    /// Parses and validates an organization from YAML text.
    pub fn from_yaml_str(text: &str) -> Result<Org, OrgError> {
        let raw: RawOrg = yaml_serde::from_str(text).map_err(|source| {
            let location = source.location();
            OrgError::Parse {
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                source,
            }
        })?;
        Org::validate(raw)
    }

    fn validate(raw: RawOrg) -> Result<Org, OrgError> {
        let mut corp_ids = HashSet::new();
        for corp in std::iter::once(&raw.corp).chain(&raw.other_corps) {
            non_empty(&corp.corp_id, || "a corp_id".to_owned())?;
            non_empty(&corp.name, || format!("the name of corp {}", corp.corp_id))?;
            if !corp_ids.insert(corp.corp_id.clone()) {
                return Err(OrgError::DuplicateCorp {
                    corp_id: corp.corp_id.clone(),
                });
            }
        }
        let departments = validate_departments(raw.departments)?;
        let mut users: Vec<User> = Vec::with_capacity(raw.users.len());
        let mut union_ids: HashMap<String, String> = HashMap::new();
        let mut open_ids: HashMap<String, String> = HashMap::new();
        for raw_user in raw.users {
            let user = validate_user(raw_user, &raw.corp, &corp_ids, &departments)?;
            if users.iter().any(|u| u.userid == user.userid) {
                return Err(OrgError::DuplicateUser {
                    userid: user.userid,
                });
            }
            claim_id("unionId", &mut union_ids, &user.union_id, &user.userid)?;
            claim_id("openId", &mut open_ids, &user.open_id, &user.userid)?;
            users.push(user);
        }
        Ok(Org {
            corp: raw.corp,
            app: raw.app,
            other_corps: raw.other_corps,
            departments,
            users,
        })
    }

    /// What the developer console registers for the app (the org YAML's `app:`).
    pub fn app(&self) -> &AppRegistration {
        &self.app
    }

    /// The org's own corp.
    pub fn corp(&self) -> &Corp {
        &self.corp
    }

    /// The org's own corpId (what the gateway's `dingtalk.corp_id` must be).
    pub fn corp_id(&self) -> &str {
        &self.corp.corp_id
    }

    /// One line per person for terminal output: userid, name, department and status, in columns
    /// aligned by display width (a Chinese character takes two terminal cells).
    pub fn describe_users(&self) -> String {
        let rows: Vec<[String; 3]> = self
            .users
            .iter()
            .map(|u| [u.userid.clone(), u.name.clone(), self.status_of(u)])
            .collect();
        columns(&rows)
    }

    /// A member's first department's name, or why the person cannot log in.
    pub fn status_of(&self, u: &User) -> String {
        if !self.is_member(u) {
            let corp = u
                .corp_id
                .as_deref()
                .and_then(|c| self.corp_by_id(c))
                .map(|c| c.name.as_str())
                .unwrap_or("no organization");
            format!("outsider ({corp}): refused")
        } else if !u.active {
            "inactive: cannot log in".to_owned()
        } else {
            u.departments
                .first()
                .and_then(|d| self.department(*d))
                .map(|d| d.name.clone())
                .unwrap_or_else(|| "-".to_owned())
        }
    }

    /// The corp with this id, the org's own or one of the others.
    pub fn corp_by_id(&self, corp_id: &str) -> Option<&Corp> {
        std::iter::once(&self.corp)
            .chain(&self.other_corps)
            .find(|c| c.corp_id == corp_id)
    }

    /// All departments, ordered by id.
    pub fn departments(&self) -> impl Iterator<Item = &Department> {
        self.departments.values()
    }

    /// The department with this id.
    pub fn department(&self, id: u64) -> Option<&Department> {
        self.departments.get(&id)
    }

    /// All people, in file order, including those from other corps and those who left.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The person with this userid, whatever their corp.
    pub fn user(&self, userid: &str) -> Option<&User> {
        self.users.iter().find(|u| u.userid == userid)
    }

    /// A current member of the org's corp with this userid.
    pub fn member(&self, userid: &str) -> Option<&User> {
        self.user(userid).filter(|u| self.is_member(u))
    }

    /// A current member of the org's corp with this unionId.
    pub fn member_by_union_id(&self, union_id: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.union_id == union_id && self.is_member(u))
    }

    /// Whether `user` currently belongs to the org's corp.
    pub fn is_member(&self, user: &User) -> bool {
        user.corp_id.as_deref() == Some(self.corp.corp_id.as_str())
    }

    /// Department ids from `dept` up to the root, both included (`[dept, parent, ..., 1]`).
    pub fn parent_chain(&self, dept: u64) -> Vec<u64> {
        let mut chain = Vec::new();
        let mut current = Some(dept);
        while let Some(id) = current {
            // Validation guarantees termination; the bound only guards against future edits of that code.
            if chain.len() > self.departments.len() {
                break;
            }
            chain.push(id);
            current = self.departments.get(&id).and_then(|d| d.parent);
        }
        chain
    }

    pub(crate) fn set_active(&mut self, userid: &str, active: bool) -> bool {
        match self.users.iter_mut().find(|u| u.userid == userid) {
            Some(user) => {
                user.active = active;
                true
            }
            None => false,
        }
    }

    /// The userid now belongs to another DingTalk account (`union_id`), as when an administrator
    /// reuses a userid after someone left.
    pub(crate) fn set_union_id(&mut self, userid: &str, union_id: &str) -> bool {
        match self.users.iter_mut().find(|u| u.userid == userid) {
            Some(user) => {
                user.union_id = union_id.to_owned();
                true
            }
            None => false,
        }
    }

    /// The person leaves the org's corp: no departments, roles or corp any more.
    pub(crate) fn remove_from_corp(&mut self, userid: &str) -> bool {
        let corp_id = self.corp.corp_id.clone();
        match self.users.iter_mut().find(|u| u.userid == userid) {
            Some(user) => {
                if user.corp_id.as_deref() == Some(corp_id.as_str()) {
                    user.corp_id = None;
                    user.departments.clear();
                    user.leader_in.clear();
                    user.admin = false;
                    user.boss = false;
                }
                true
            }
            None => false,
        }
    }
}

fn non_empty(value: &str, what: impl FnOnce() -> String) -> Result<(), OrgError> {
    if value.trim().is_empty() {
        Err(OrgError::Empty { what: what() })
    } else {
        Ok(())
    }
}

fn claim_id(
    field: &'static str,
    seen: &mut HashMap<String, String>,
    value: &str,
    userid: &str,
) -> Result<(), OrgError> {
    if let Some(first) = seen.get(value) {
        return Err(OrgError::DuplicateId {
            field,
            value: value.to_owned(),
            first: first.clone(),
            second: userid.to_owned(),
        });
    }
    seen.insert(value.to_owned(), userid.to_owned());
    Ok(())
}

fn validate_departments(list: Vec<Department>) -> Result<BTreeMap<u64, Department>, OrgError> {
    let mut departments = BTreeMap::new();
    for dept in list {
        non_empty(&dept.name, || format!("the name of department {}", dept.id))?;
        let id = dept.id;
        if departments.insert(id, dept).is_some() {
            return Err(OrgError::DuplicateDepartment { id });
        }
    }
    match departments.get(&ROOT_DEPARTMENT) {
        None => return Err(OrgError::MissingRoot),
        Some(root) if root.parent.is_some() => return Err(OrgError::RootWithParent),
        Some(_) => {}
    }
    for dept in departments.values() {
        if dept.id == ROOT_DEPARTMENT {
            continue;
        }
        let parent = dept.parent.ok_or(OrgError::MissingParent { id: dept.id })?;
        if !departments.contains_key(&parent) {
            return Err(OrgError::UnknownParent {
                id: dept.id,
                parent,
            });
        }
    }
    for dept in departments.values() {
        let mut current = dept.id;
        let mut steps = 0;
        while current != ROOT_DEPARTMENT {
            steps += 1;
            if steps > departments.len() {
                return Err(OrgError::DepartmentCycle { id: dept.id });
            }
            current = departments
                .get(&current)
                .and_then(|d| d.parent)
                .unwrap_or(ROOT_DEPARTMENT);
        }
    }
    Ok(departments)
}

fn validate_user(
    raw: RawUser,
    corp: &Corp,
    corp_ids: &HashSet<String>,
    departments: &BTreeMap<u64, Department>,
) -> Result<User, OrgError> {
    non_empty(&raw.userid, || "a userid".to_owned())?;
    non_empty(&raw.name, || format!("the name of user {:?}", raw.userid))?;
    non_empty(&raw.union_id, || {
        format!("the union_id of user {:?}", raw.userid)
    })?;
    non_empty(&raw.open_id, || {
        format!("the open_id of user {:?}", raw.userid)
    })?;
    let corp_id = raw.corp_id.unwrap_or_else(|| corp.corp_id.clone());
    if !corp_ids.contains(&corp_id) {
        return Err(OrgError::UnknownCorp {
            userid: raw.userid,
            corp_id,
        });
    }
    if corp_id == corp.corp_id {
        if raw.departments.is_empty() {
            return Err(OrgError::NoDepartment { userid: raw.userid });
        }
        if let Some(&dept) = raw
            .departments
            .iter()
            .find(|d| !departments.contains_key(d))
        {
            return Err(OrgError::UnknownDepartment {
                userid: raw.userid,
                dept,
            });
        }
        if let Some(&dept) = raw.leader_in.iter().find(|d| !raw.departments.contains(d)) {
            return Err(OrgError::LeaderNotMember {
                userid: raw.userid,
                dept,
            });
        }
    } else if !raw.departments.is_empty() || !raw.leader_in.is_empty() || raw.admin || raw.boss {
        return Err(OrgError::OutsiderWithRole {
            userid: raw.userid,
            corp_id,
        });
    }
    if let Some(unknown) = raw.also_in.iter().find(|c| !corp_ids.contains(*c)) {
        return Err(OrgError::UnknownCorp {
            userid: raw.userid,
            corp_id: unknown.clone(),
        });
    }
    let mut dept_ids = raw.departments;
    dedup_keep_order(&mut dept_ids);
    let mut leader_in = raw.leader_in;
    dedup_keep_order(&mut leader_in);
    Ok(User {
        userid: raw.userid,
        name: raw.name,
        union_id: raw.union_id,
        open_id: raw.open_id,
        also_in: raw.also_in.into_iter().filter(|c| *c != corp_id).collect(),
        corp_id: Some(corp_id),
        departments: dept_ids,
        leader_in,
        title: raw.title,
        job_number: raw.job_number,
        email: raw.email,
        org_email: raw.org_email,
        mobile: raw.mobile,
        avatar: raw.avatar,
        admin: raw.admin,
        boss: raw.boss,
        active: raw.active,
    })
}

fn dedup_keep_order(ids: &mut Vec<u64>) {
    let mut seen = HashSet::new();
    ids.retain(|id| seen.insert(*id));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
corp: {corp_id: c1, name: 一号公司}
other_corps: [{corp_id: c2, name: 二号公司}]
departments:
  - {id: 1, name: 根}
  - {id: 10, name: 甲, parent: 1}
  - {id: 11, name: 乙, parent: 10}
users:
  - {userid: u1, name: 用户一, union_id: un1, open_id: op1, departments: [11, 1], leader_in: [11]}
  - {userid: x1, name: Outsider, union_id: un2, open_id: op2, corp_id: c2}
";

    fn err(yaml: &str) -> OrgError {
        match Org::from_yaml_str(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e,
        }
    }

    #[test]
    fn user_list_columns_align_by_display_width() {
        use unicode_width::UnicodeWidthStr;
        let text = Org::default_org().describe_users();
        let org = Org::default_org();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), org.users().len(), "{text}");
        // Name and status start at the same terminal cell on every line, CJK names or not.
        let starts: Vec<(usize, usize)> = lines
            .iter()
            .zip(org.users())
            .map(|(line, u)| {
                let name = line.find(&u.name).unwrap();
                let status = line.rfind(&org.status_of(u)).unwrap();
                (line[..name].width(), line[..status].width())
            })
            .collect();
        assert!(
            starts.windows(2).all(|w| w[0] == w[1]),
            "{starts:?}\n{text}"
        );
        assert!(
            text.contains("张三") && text.contains("Alice 外部"),
            "{text}"
        );
    }

    #[test]
    fn default_org_is_valid_and_has_the_promised_people() {
        let org = Org::default_org();
        assert_eq!(org.corp().corp_id, "dingcorp00000001");
        assert_eq!(org.corp().name, "示例科技有限公司");
        let members: Vec<&User> = org.users().iter().filter(|u| org.is_member(u)).collect();
        assert!(members.iter().filter(|u| u.active).count() >= 6);
        assert_eq!(members.iter().filter(|u| !u.active).count(), 1);
        let outsiders: Vec<&User> = org.users().iter().filter(|u| !org.is_member(u)).collect();
        assert_eq!(outsiders.len(), 1);
        assert_eq!(outsiders[0].corp_id.as_deref(), Some("dingcorp00000002"));
        assert!(org.users().iter().any(|u| u.email.is_none()));
        assert!(org.users().iter().any(|u| u.departments.len() >= 2));
        assert_eq!(org.member("zhangsan").map(|u| u.admin), Some(true));
    }

    #[test]
    fn parent_chain_goes_up_to_the_root() {
        let org = Org::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(org.parent_chain(11), vec![11, 10, 1]);
        assert_eq!(org.parent_chain(1), vec![1]);
        assert!(org.member("x1").is_none());
        assert_eq!(
            org.user("x1").and_then(|u| u.corp_id.clone()),
            Some("c2".into())
        );
    }

    #[test]
    fn remove_from_corp_strips_membership() {
        let mut org = Org::from_yaml_str(MINIMAL).unwrap();
        assert!(org.remove_from_corp("u1"));
        assert!(org.member("u1").is_none());
        assert!(org.member_by_union_id("un1").is_none());
        assert!(org.user("u1").unwrap().departments.is_empty());
        assert!(!org.remove_from_corp("nobody"));
    }

    #[test]
    fn parse_errors_carry_a_location() {
        let e = err("corp: {corp_id: c1, name: x}\ndepartments: [\n  {id: one}\n]\nusers: []\n");
        match &e {
            OrgError::Parse { line, .. } => assert_eq!(*line, Some(3)),
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = err("corp: {corp_id: c1, name: x}\ndepartments: []\nusers: []\nextra: 1\n");
        assert!(matches!(e, OrgError::Parse { .. }), "{e:?}");
    }

    #[test]
    fn structural_errors_name_the_problem() {
        let dup_user = MINIMAL.replace("userid: x1", "userid: u1");
        assert!(matches!(err(&dup_user), OrgError::DuplicateUser { userid } if userid == "u1"));

        let dup_union = MINIMAL.replace("union_id: un2", "union_id: un1");
        let e = err(&dup_union);
        assert!(
            matches!(
                &e,
                OrgError::DuplicateId {
                    field: "unionId",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"u1\"") && e.to_string().contains("\"x1\""));

        let dup_dept = MINIMAL.replace("{id: 11, name: 乙", "{id: 10, name: 乙");
        assert!(matches!(
            err(&dup_dept),
            OrgError::DuplicateDepartment { id: 10 }
        ));

        let unknown_dept = MINIMAL.replace("departments: [11, 1]", "departments: [12]");
        let e = err(&unknown_dept);
        assert!(
            matches!(&e, OrgError::UnknownDepartment { dept: 12, .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "user \"u1\" names unknown department 12");

        let unknown_parent = MINIMAL.replace("parent: 10}", "parent: 99}");
        assert!(matches!(
            err(&unknown_parent),
            OrgError::UnknownParent { id: 11, parent: 99 }
        ));

        let cycle = MINIMAL.replace(
            "{id: 10, name: 甲, parent: 1}",
            "{id: 10, name: 甲, parent: 11}",
        );
        assert!(matches!(err(&cycle), OrgError::DepartmentCycle { .. }));

        let no_root = MINIMAL.replace("{id: 1, name: 根}", "{id: 2, name: 根}");
        assert!(matches!(err(&no_root), OrgError::MissingRoot));

        let leader = MINIMAL.replace("leader_in: [11]", "leader_in: [10]");
        assert!(matches!(
            err(&leader),
            OrgError::LeaderNotMember { dept: 10, .. }
        ));

        let corp = MINIMAL.replace("corp_id: c2}", "corp_id: c3}");
        assert!(matches!(err(&corp), OrgError::UnknownCorp { corp_id, .. } if corp_id == "c3"));

        let outsider = MINIMAL.replace("corp_id: c2}", "corp_id: c2, admin: true}");
        assert!(matches!(err(&outsider), OrgError::OutsiderWithRole { .. }));

        let no_dept = MINIMAL.replace(", departments: [11, 1], leader_in: [11]", "");
        assert!(matches!(err(&no_dept), OrgError::NoDepartment { .. }));

        let empty = MINIMAL.replace("name: 用户一", "name: ''");
        assert!(matches!(err(&empty), OrgError::Empty { .. }));
    }

    #[test]
    fn file_errors_name_the_path() {
        let e = Org::from_yaml_file(Path::new("/nonexistent/org.yaml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/org.yaml"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
