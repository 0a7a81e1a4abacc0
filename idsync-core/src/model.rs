//! The model: [`Anchor`], [`Org`], [`Account`] and their attributes.
//!
//! Fields are also reachable by name (`"display_name"`, `"attrs.cost_center"`), which is
//! what mappings, diffs and update operations use: see [`Entity`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The provider-native, immutable id of an entity: LDAP `entryUUID`, AD `objectGUID`,
/// DingTalk `userid` / `dept_id`, a CSV key column. Never a DN, a name or an email.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Anchor(String);

impl Anchor {
    /// An anchor from any string. Empty anchors are caught by [`validate`].
    pub fn new(s: impl Into<String>) -> Self {
        Anchor(s.into())
    }

    /// The anchor as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The anchor as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Anchor {
    fn from(s: &str) -> Self {
        Anchor(s.to_owned())
    }
}

impl From<String> for Anchor {
    fn from(s: String) -> Self {
        Anchor(s)
    }
}

impl From<&String> for Anchor {
    fn from(s: &String) -> Self {
        Anchor(s.clone())
    }
}

impl AsRef<str> for Anchor {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Anchor {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Attributes beyond the typed fields: string keys, JSON-like values, ordered.
pub type Attrs = BTreeMap<String, Value>;

/// Orgs or accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A department / OU.
    Org,
    /// A person.
    Account,
}

impl EntityKind {
    /// `"org"` or `"account"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Org => "org",
            EntityKind::Account => "account",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node of the organization tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Org {
    /// Immutable provider id.
    pub anchor: Anchor,
    /// The parent org; `None` for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Anchor>,
    /// Display name.
    pub name: String,
    /// Sort order among siblings (smaller first), if the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// Further attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: Attrs,
}

impl Org {
    /// A new org.
    pub fn new(anchor: impl Into<Anchor>, parent: Option<Anchor>, name: impl Into<String>) -> Self {
        Org {
            anchor: anchor.into(),
            parent,
            name: name.into(),
            order: None,
            attrs: Attrs::new(),
        }
    }
}

/// Whether an account may sign in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Active.
    #[default]
    Active,
    /// Disabled (left, suspended, or not yet started).
    Disabled,
}

impl Status {
    /// `"active"` or `"disabled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
        }
    }
}

/// A person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Account {
    /// Immutable provider id.
    pub anchor: Anchor,
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Employee number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_id: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Departments; the first is the primary one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<Anchor>,
    /// The manager's account anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<Anchor>,
    /// Active or disabled.
    #[serde(default)]
    pub status: Status,
    /// Further attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: Attrs,
}

impl Account {
    /// A new active account with only anchor and username.
    pub fn new(anchor: impl Into<Anchor>, username: impl Into<String>) -> Self {
        Account {
            anchor: anchor.into(),
            username: username.into(),
            ..Account::default()
        }
    }
}

/// The typed account fields, by name.
pub const ACCOUNT_FIELDS: &[&str] = &[
    "username",
    "display_name",
    "email",
    "phone",
    "employee_id",
    "title",
    "orgs",
    "manager",
    "status",
];

/// The typed org fields, by name.
pub const ORG_FIELDS: &[&str] = &["name", "parent", "order"];

/// Prefix of attribute field names: `attrs.cost_center`.
pub const ATTR_PREFIX: &str = "attrs.";

/// Named access to an entity's fields, used by mappings, diffs and patches.
///
/// A missing optional value reads as `Value::Null`; writing `Null` clears it.
pub trait Entity: Clone + Send + Sync + 'static {
    /// Org or account.
    const KIND: EntityKind;
    /// The anchor.
    fn anchor(&self) -> &Anchor;
    /// Replace the anchor.
    fn set_anchor(&mut self, anchor: Anchor);
    /// Read a field by name (`"email"`, `"attrs.x"`). Unknown names read as `Null`.
    fn get(&self, field: &str) -> Value;
    /// Write a field by name.
    fn set(&mut self, field: &str, value: Value) -> Result<()>;
    /// The names of the typed fields.
    fn typed_fields() -> &'static [&'static str];
    /// The attribute map.
    fn attrs(&self) -> &Attrs;
    /// Anchors this entity refers to: (field, index, anchor). Index is the position in a list field.
    fn refs(&self) -> Vec<(&'static str, usize, &Anchor)>;
    /// Replace the anchor a reference points to.
    fn set_ref(&mut self, field: &str, index: usize, anchor: Anchor);
}

fn opt_str(v: &Option<String>) -> Value {
    v.as_ref()
        .map(|s| Value::String(s.clone()))
        .unwrap_or(Value::Null)
}

fn opt_anchor(v: &Option<Anchor>) -> Value {
    v.as_ref()
        .map(|s| Value::String(s.0.clone()))
        .unwrap_or(Value::Null)
}

fn to_opt_string(field: &str, v: Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(Error::invalid_data(format!(
            "field {field}: expected a string, got {other}"
        ))),
    }
}

fn to_string_req(field: &str, v: Value) -> Result<String> {
    Ok(to_opt_string(field, v)?.unwrap_or_default())
}

fn to_anchor_list(field: &str, v: Value) -> Result<Vec<Anchor>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|i| to_string_req(field, i).map(Anchor))
            .collect(),
        Value::String(s) => Ok(vec![Anchor(s)]),
        other => Err(Error::invalid_data(format!(
            "field {field}: expected a list of anchors, got {other}"
        ))),
    }
}

fn set_attr(attrs: &mut Attrs, name: &str, v: Value) {
    if v.is_null() {
        attrs.remove(name);
    } else {
        attrs.insert(name.to_owned(), v);
    }
}

impl Entity for Account {
    const KIND: EntityKind = EntityKind::Account;

    fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    fn set_anchor(&mut self, anchor: Anchor) {
        self.anchor = anchor;
    }

    fn get(&self, field: &str) -> Value {
        match field {
            "anchor" => Value::String(self.anchor.0.clone()),
            "username" => Value::String(self.username.clone()),
            "display_name" => opt_str(&self.display_name),
            "email" => opt_str(&self.email),
            "phone" => opt_str(&self.phone),
            "employee_id" => opt_str(&self.employee_id),
            "title" => opt_str(&self.title),
            "orgs" => Value::Array(
                self.orgs
                    .iter()
                    .map(|a| Value::String(a.0.clone()))
                    .collect(),
            ),
            "manager" => opt_anchor(&self.manager),
            "status" => Value::String(self.status.as_str().to_owned()),
            other => other
                .strip_prefix(ATTR_PREFIX)
                .and_then(|a| self.attrs.get(a).cloned())
                .unwrap_or(Value::Null),
        }
    }

    fn set(&mut self, field: &str, value: Value) -> Result<()> {
        match field {
            "anchor" => self.anchor = Anchor(to_string_req(field, value)?),
            "username" => self.username = to_string_req(field, value)?,
            "display_name" => self.display_name = to_opt_string(field, value)?,
            "email" => self.email = to_opt_string(field, value)?,
            "phone" => self.phone = to_opt_string(field, value)?,
            "employee_id" => self.employee_id = to_opt_string(field, value)?,
            "title" => self.title = to_opt_string(field, value)?,
            "orgs" => self.orgs = to_anchor_list(field, value)?,
            "manager" => self.manager = to_opt_string(field, value)?.map(Anchor),
            "status" => {
                self.status = match &value {
                    Value::String(s) if s.eq_ignore_ascii_case("active") => Status::Active,
                    Value::String(s) if s.eq_ignore_ascii_case("disabled") => Status::Disabled,
                    Value::Bool(true) => Status::Active,
                    Value::Bool(false) => Status::Disabled,
                    Value::Null => Status::Active,
                    other => {
                        return Err(Error::invalid_data(format!(
                            "field status: expected \"active\" or \"disabled\", got {other}"
                        )));
                    }
                }
            }
            other => match other.strip_prefix(ATTR_PREFIX) {
                Some(a) if !a.is_empty() => set_attr(&mut self.attrs, a, value),
                _ => {
                    return Err(Error::invalid_data(format!(
                        "unknown account field {other:?}"
                    )));
                }
            },
        }
        Ok(())
    }

    fn typed_fields() -> &'static [&'static str] {
        ACCOUNT_FIELDS
    }

    fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    fn refs(&self) -> Vec<(&'static str, usize, &Anchor)> {
        let mut out: Vec<(&'static str, usize, &Anchor)> = self
            .orgs
            .iter()
            .enumerate()
            .map(|(i, a)| ("orgs", i, a))
            .collect();
        if let Some(m) = &self.manager {
            out.push(("manager", 0, m));
        }
        out
    }

    fn set_ref(&mut self, field: &str, index: usize, anchor: Anchor) {
        match field {
            "orgs" => {
                if let Some(slot) = self.orgs.get_mut(index) {
                    *slot = anchor;
                }
            }
            "manager" => self.manager = Some(anchor),
            _ => {}
        }
    }
}

impl Entity for Org {
    const KIND: EntityKind = EntityKind::Org;

    fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    fn set_anchor(&mut self, anchor: Anchor) {
        self.anchor = anchor;
    }

    fn get(&self, field: &str) -> Value {
        match field {
            "anchor" => Value::String(self.anchor.0.clone()),
            "name" => Value::String(self.name.clone()),
            "parent" => opt_anchor(&self.parent),
            "order" => self.order.map(Value::from).unwrap_or(Value::Null),
            other => other
                .strip_prefix(ATTR_PREFIX)
                .and_then(|a| self.attrs.get(a).cloned())
                .unwrap_or(Value::Null),
        }
    }

    fn set(&mut self, field: &str, value: Value) -> Result<()> {
        match field {
            "anchor" => self.anchor = Anchor(to_string_req(field, value)?),
            "name" => self.name = to_string_req(field, value)?,
            "parent" => self.parent = to_opt_string(field, value)?.map(Anchor),
            "order" => {
                self.order = match value {
                    Value::Null => None,
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) if s.trim().is_empty() => None,
                    Value::String(s) => Some(s.trim().parse::<i64>().map_err(|_| {
                        Error::invalid_data(format!("field order: {s:?} is not an integer"))
                    })?),
                    other => {
                        return Err(Error::invalid_data(format!(
                            "field order: expected an integer, got {other}"
                        )));
                    }
                }
            }
            other => match other.strip_prefix(ATTR_PREFIX) {
                Some(a) if !a.is_empty() => set_attr(&mut self.attrs, a, value),
                _ => return Err(Error::invalid_data(format!("unknown org field {other:?}"))),
            },
        }
        Ok(())
    }

    fn typed_fields() -> &'static [&'static str] {
        ORG_FIELDS
    }

    fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    fn refs(&self) -> Vec<(&'static str, usize, &Anchor)> {
        self.parent.iter().map(|p| ("parent", 0, p)).collect()
    }

    fn set_ref(&mut self, field: &str, _index: usize, anchor: Anchor) {
        if field == "parent" {
            self.parent = Some(anchor);
        }
    }
}

/// The one rule by which correlation values compare, everywhere (the planner's index,
/// incremental runs, shadow copies, adapters' `find_accounts`): surrounding whitespace is
/// trimmed and letters are compared by their Unicode lowercase (`Ärger@Example.com` and
/// `ärger@example.com` are one key; full-width `ＡＢＣ` matches `ａｂｃ`, not `abc`).
/// `None` for a blank value: it correlates with nothing.
pub fn correlation_key(value: &str) -> Option<std::borrow::Cow<'_, str>> {
    let t = value.trim();
    if t.is_empty() {
        return None;
    }
    if t.bytes().any(|b| b.is_ascii_uppercase()) || !t.is_ascii() {
        Some(std::borrow::Cow::Owned(t.to_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(t))
    }
}

/// Whether `field` of `entity` has the correlation key of `value` ([`correlation_key`]).
pub fn key_matches<E: Entity>(entity: &E, field: &str, value: &str) -> bool {
    let Some(want) = correlation_key(value) else {
        return false;
    };
    match entity.get(field) {
        Value::String(s) => correlation_key(&s).is_some_and(|k| k == want),
        _ => false,
    }
}

/// One problem found by [`validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Org or account.
    pub entity: EntityKind,
    /// The anchors involved (for a cycle: every org on it, in order).
    pub anchors: Vec<Anchor>,
    /// A readable explanation naming the anchors.
    pub message: String,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An empty anchor (key).
    EmptyAnchor,
    /// Two entities share an anchor.
    DuplicateAnchor,
    /// An org whose parent does not exist, or an account in an org that does not exist.
    Orphan,
    /// Orgs whose parent chain loops.
    Cycle,
    /// An account whose manager does not exist.
    UnknownManager,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Check an org tree and its accounts: empty or duplicate anchors, orphans, cycles, unknown
/// managers. Returns every problem found, in a stable order.
pub fn check(orgs: &[Org], accounts: &[Account]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut org_ids: HashMap<&str, usize> = HashMap::with_capacity(orgs.len());
    for (i, o) in orgs.iter().enumerate() {
        if o.anchor.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::EmptyAnchor,
                entity: EntityKind::Org,
                anchors: vec![],
                message: format!("org #{} ({:?}) has an empty anchor", i + 1, o.name),
            });
            continue;
        }
        if org_ids.insert(o.anchor.as_str(), i).is_some() {
            problems.push(Problem {
                kind: ProblemKind::DuplicateAnchor,
                entity: EntityKind::Org,
                anchors: vec![o.anchor.clone()],
                message: format!("org anchor {} appears more than once", o.anchor),
            });
        }
    }
    for o in orgs {
        if let Some(p) = &o.parent
            && !org_ids.contains_key(p.as_str())
        {
            problems.push(Problem {
                kind: ProblemKind::Orphan,
                entity: EntityKind::Org,
                anchors: vec![o.anchor.clone(), p.clone()],
                message: format!("org {} has parent {} which does not exist", o.anchor, p),
            });
        }
    }
    // Cycles: walk up from each org; colour nodes done once their chain is known acyclic.
    let mut done: HashSet<&str> = HashSet::with_capacity(orgs.len());
    let mut reported: HashSet<&str> = HashSet::new();
    for o in orgs {
        let mut path: Vec<&str> = Vec::new();
        let mut on_path: HashSet<&str> = HashSet::new();
        let mut cur = Some(o.anchor.as_str());
        while let Some(a) = cur {
            if done.contains(a) {
                break;
            }
            if !on_path.insert(a) {
                // a is on the current path: the cycle is path[pos..]
                let pos = path.iter().position(|x| *x == a).unwrap_or(0);
                let cycle: Vec<&str> = path[pos..].to_vec();
                if !cycle.iter().any(|c| reported.contains(c)) {
                    reported.extend(cycle.iter().copied());
                    problems.push(Problem {
                        kind: ProblemKind::Cycle,
                        entity: EntityKind::Org,
                        anchors: cycle.iter().map(|c| Anchor::from(*c)).collect(),
                        message: format!("org parent chain loops: {} -> {}", cycle.join(" -> "), a),
                    });
                }
                break;
            }
            path.push(a);
            cur = org_ids
                .get(a)
                .and_then(|i| orgs[*i].parent.as_ref())
                .map(Anchor::as_str);
        }
        done.extend(path);
    }
    let mut acc_ids: HashSet<&str> = HashSet::with_capacity(accounts.len());
    for (i, a) in accounts.iter().enumerate() {
        if a.anchor.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::EmptyAnchor,
                entity: EntityKind::Account,
                anchors: vec![],
                message: format!("account #{} ({:?}) has an empty anchor", i + 1, a.username),
            });
        } else if !acc_ids.insert(a.anchor.as_str()) {
            problems.push(Problem {
                kind: ProblemKind::DuplicateAnchor,
                entity: EntityKind::Account,
                anchors: vec![a.anchor.clone()],
                message: format!("account anchor {} appears more than once", a.anchor),
            });
        }
    }
    for a in accounts {
        for o in &a.orgs {
            if !org_ids.contains_key(o.as_str()) {
                problems.push(Problem {
                    kind: ProblemKind::Orphan,
                    entity: EntityKind::Account,
                    anchors: vec![a.anchor.clone(), o.clone()],
                    message: format!("account {} is in org {} which does not exist", a.anchor, o),
                });
            }
        }
        if let Some(m) = &a.manager
            && !acc_ids.contains(m.as_str())
        {
            problems.push(Problem {
                kind: ProblemKind::UnknownManager,
                entity: EntityKind::Account,
                anchors: vec![a.anchor.clone(), m.clone()],
                message: format!("account {} has manager {} who does not exist", a.anchor, m),
            });
        }
    }
    problems
}

/// Like [`check`], but turns problems into one [`Error`] of kind `InvalidData` whose message
/// lists them (at most 20, then a count).
pub fn validate(orgs: &[Org], accounts: &[Account]) -> Result<()> {
    let problems = check(orgs, accounts);
    problems_to_result(&problems)
}

/// Turn a list of problems into `Ok` (none) or one error listing them.
pub fn problems_to_result(problems: &[Problem]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} problem(s) in the input: ", problems.len());
    for (i, p) in problems.iter().take(20).enumerate() {
        if i > 0 {
            msg.push_str("; ");
        }
        msg.push_str(&p.message);
    }
    if problems.len() > 20 {
        msg.push_str(&format!("; and {} more", problems.len() - 20));
    }
    let mut e = Error::invalid_data(msg);
    if let Some(a) = problems[0].anchors.first() {
        e = e.with_context("anchor", a.as_str());
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(a: &str, p: Option<&str>) -> Org {
        Org::new(a, p.map(Anchor::from), a.to_uppercase())
    }

    #[test]
    fn field_access_round_trips() {
        let mut a = Account::new("u1", "zhang.san");
        a.set("display_name", Value::from("张三")).unwrap();
        a.set("orgs", serde_json::json!(["d1", "d2"])).unwrap();
        a.set("attrs.cost_center", Value::from("CC-9")).unwrap();
        a.set("status", Value::from("disabled")).unwrap();
        assert_eq!(a.get("display_name"), Value::from("张三"));
        assert_eq!(a.orgs, vec![Anchor::from("d1"), Anchor::from("d2")]);
        assert_eq!(a.get("attrs.cost_center"), Value::from("CC-9"));
        assert_eq!(a.status, Status::Disabled);
        a.set("attrs.cost_center", Value::Null).unwrap();
        assert!(a.attrs.is_empty());
        assert!(a.set("nonsense", Value::Null).is_err());
        let mut o = org("d1", None);
        o.set("order", Value::from("7")).unwrap();
        assert_eq!(o.order, Some(7));
        assert!(o.set("order", Value::from("x")).is_err());
    }

    #[test]
    fn finds_cycles_orphans_duplicates_and_empty_keys() {
        let orgs = vec![
            org("root", None),
            org("a", Some("b")),
            org("b", Some("c")),
            org("c", Some("a")),
            org("lost", Some("nowhere")),
            org("root", None),
            org("", None),
        ];
        let mut acc = Account::new("u1", "x");
        acc.orgs = vec!["missing".into()];
        acc.manager = Some("ghost".into());
        let accounts = vec![acc.clone(), acc, Account::new("", "y")];
        let problems = check(&orgs, &accounts);
        let kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
        assert!(kinds.contains(&ProblemKind::Cycle));
        let cycle = problems
            .iter()
            .find(|p| p.kind == ProblemKind::Cycle)
            .unwrap();
        assert_eq!(cycle.anchors.len(), 3);
        assert!(cycle.message.contains('a') && cycle.message.contains('b'));
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::Orphan && p.message.contains("nowhere"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::DuplicateAnchor && p.anchors[0].as_str() == "root")
        );
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::DuplicateAnchor && p.anchors[0].as_str() == "u1")
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == ProblemKind::EmptyAnchor)
                .count(),
            2
        );
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::UnknownManager && p.message.contains("ghost"))
        );
        let err = validate(&orgs, &accounts).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidData);
    }

    #[test]
    fn valid_tree_passes() {
        let orgs = vec![org("r", None), org("a", Some("r")), org("b", Some("a"))];
        let mut u = Account::new("u", "u");
        u.orgs = vec!["b".into()];
        assert!(validate(&orgs, &[u]).is_ok());
    }
}
