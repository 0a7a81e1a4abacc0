//! Mapping source entities to the target's shape: renames, constants, templates, simple
//! transforms and a scoping filter.
//!
//! A mapping **owns** the target fields it writes. The engine compares and writes only
//! those fields (attribute-level authority): a job that maps `email` and `display_name`
//! never touches `title`, whoever else writes it.
//!
//! ```
//! use idsync_core::{Account, Entity, FieldRule, Mapping, Scope, Transform};
//! use idsync_core::mapping::EntityMapping;
//!
//! let accounts = EntityMapping::rules(vec![
//!     FieldRule::copy("username", "username")
//!         .with(Transform::Trim)
//!         .with(Transform::Lowercase),
//!     FieldRule::template("email", "{username}@example.com")
//!         .with(Transform::Trim)
//!         .with(Transform::Lowercase),
//!     FieldRule::constant("attrs.source", "hr"),
//! ])
//! .scoped(Scope::not_equals("attrs.type", "contractor"));
//! let mapping = Mapping { accounts, ..Mapping::identity() };
//!
//! let a = Account::new("u1", "Alice");
//! let mapped = mapping.map_account(&a).unwrap().unwrap();
//! assert_eq!(mapped.username, "alice");
//! assert_eq!(mapped.email.as_deref(), Some("alice@example.com"));
//! assert_eq!(mapped.get("attrs.source"), "hr");
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{ATTR_PREFIX, Account, Entity, Org};

/// A string transform applied to a mapped value (strings only; other values pass through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Trim white space at both ends.
    Trim,
    /// Lowercase.
    Lowercase,
    /// Uppercase.
    Uppercase,
    /// An empty string becomes "absent" (null).
    EmptyAsNull,
    /// Replace every occurrence of `from` by `to`.
    Replace {
        /// What to replace.
        from: String,
        /// The replacement.
        to: String,
    },
}

impl Transform {
    fn apply(&self, v: Value) -> Value {
        match (self, v) {
            (Transform::Trim, Value::String(s)) => Value::String(s.trim().to_owned()),
            (Transform::Lowercase, Value::String(s)) => Value::String(s.to_lowercase()),
            (Transform::Uppercase, Value::String(s)) => Value::String(s.to_uppercase()),
            (Transform::EmptyAsNull, Value::String(s)) if s.is_empty() => Value::Null,
            (Transform::Replace { from, to }, Value::String(s)) if !from.is_empty() => {
                Value::String(s.replace(from.as_str(), to))
            }
            (_, v) => v,
        }
    }
}

/// How one target field gets its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldRule {
    /// The target field (`"email"`, `"attrs.cost_center"`).
    pub to: String,
    /// Where the value comes from.
    pub value: ValueSource,
    /// Transforms applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
}

/// Where a mapped value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// A source field, renamed.
    Field(String),
    /// A constant.
    Constant(Value),
    /// A template: `{field}` is replaced by the source field's value (`{{` and `}}` are
    /// literal braces). A template whose fields are all absent yields null.
    Template(String),
}

impl FieldRule {
    /// Copy source field `from` into target field `to`.
    pub fn copy(to: impl Into<String>, from: impl Into<String>) -> Self {
        FieldRule {
            to: to.into(),
            value: ValueSource::Field(from.into()),
            transforms: Vec::new(),
        }
    }

    /// A constant value.
    pub fn constant(to: impl Into<String>, value: impl Into<Value>) -> Self {
        FieldRule {
            to: to.into(),
            value: ValueSource::Constant(value.into()),
            transforms: Vec::new(),
        }
    }

    /// A template such as `"{username}@example.com"`.
    pub fn template(to: impl Into<String>, template: impl Into<String>) -> Self {
        FieldRule {
            to: to.into(),
            value: ValueSource::Template(template.into()),
            transforms: Vec::new(),
        }
    }

    /// Add a transform.
    pub fn with(mut self, t: Transform) -> Self {
        self.transforms.push(t);
        self
    }

    fn eval<E: Entity>(&self, src: &E) -> Result<Value> {
        let v = match &self.value {
            ValueSource::Field(f) => src.get(f),
            ValueSource::Constant(c) => c.clone(),
            ValueSource::Template(t) => render(t, src)?,
        };
        Ok(self.transforms.iter().fold(v, |v, t| t.apply(v)))
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(value_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

fn render<E: Entity>(template: &str, src: &E) -> Result<Value> {
    let mut out = String::new();
    let mut any_present = false;
    let mut any_field = false;
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if matches!(chars.peek(), Some((_, '{'))) => {
                chars.next();
                out.push('{');
            }
            '}' if matches!(chars.peek(), Some((_, '}'))) => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest = &template[i + 1..];
                let end = rest.find('}').ok_or_else(|| {
                    Error::config(format!("template {template:?}: unclosed '{{' at byte {i}"))
                })?;
                let name = rest[..end].trim();
                any_field = true;
                if let Some(text) = value_text(&src.get(name)) {
                    any_present = true;
                    out.push_str(&text);
                }
                // Skip to just past the closing brace, by byte position (a name with
                // non-ASCII letters has more bytes than chars).
                let close = i + 1 + end;
                while chars.next_if(|(j, _)| *j <= close).is_some() {}
            }
            '}' => {
                return Err(Error::config(format!(
                    "template {template:?}: unmatched '}}' at byte {i}"
                )));
            }
            c => out.push(c),
        }
    }
    if any_field && !any_present {
        return Ok(Value::Null);
    }
    Ok(Value::String(out))
}

/// Which source entities a job handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// The field equals the value (strings compared as text).
    Equals {
        /// Field name.
        field: String,
        /// Value.
        value: Value,
    },
    /// The field differs from the value.
    NotEquals {
        /// Field name.
        field: String,
        /// Value.
        value: Value,
    },
    /// The field is present and not empty.
    Present {
        /// Field name.
        field: String,
    },
    /// The field (a string) starts with the prefix.
    StartsWith {
        /// Field name.
        field: String,
        /// Prefix.
        prefix: String,
    },
    /// Some value of the field (or of the list field) is one of these.
    In {
        /// Field name.
        field: String,
        /// Accepted values.
        values: Vec<Value>,
    },
    /// All of these.
    All(Vec<Scope>),
    /// Any of these.
    Any(Vec<Scope>),
    /// Not this.
    Not(Box<Scope>),
}

impl Scope {
    /// `field == value`.
    pub fn equals(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Scope::Equals {
            field: field.into(),
            value: value.into(),
        }
    }

    /// `field != value`.
    pub fn not_equals(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Scope::NotEquals {
            field: field.into(),
            value: value.into(),
        }
    }

    /// Whether an entity is in scope.
    pub fn matches<E: Entity>(&self, e: &E) -> bool {
        match self {
            Scope::Equals { field, value } => e.get(field) == *value,
            Scope::NotEquals { field, value } => e.get(field) != *value,
            Scope::Present { field } => match e.get(field) {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            },
            Scope::StartsWith { field, prefix } => e
                .get(field)
                .as_str()
                .is_some_and(|s| s.starts_with(prefix.as_str())),
            Scope::In { field, values } => match e.get(field) {
                Value::Array(items) => items.iter().any(|i| values.contains(i)),
                v => values.contains(&v),
            },
            Scope::All(v) => v.iter().all(|s| s.matches(e)),
            Scope::Any(v) => v.iter().any(|s| s.matches(e)),
            Scope::Not(s) => !s.matches(e),
        }
    }
}

/// The mapping of one entity kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityMapping {
    /// `None`: identity — every typed field and every attribute is copied and owned.
    /// `Some(rules)`: only these target fields are written and owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<FieldRule>>,
    /// Only source entities matching this are handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

impl EntityMapping {
    /// Identity: copy and own everything.
    pub fn identity() -> Self {
        EntityMapping {
            rules: None,
            scope: None,
        }
    }

    /// Only these rules.
    pub fn rules(rules: Vec<FieldRule>) -> Self {
        EntityMapping {
            rules: Some(rules),
            scope: None,
        }
    }

    /// Restrict to a scope.
    pub fn scoped(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The target fields this mapping owns, in a stable order; `"attrs.*"` stands for every
    /// attribute (identity mappings).
    pub fn owned_fields<E: Entity>(&self) -> Vec<String> {
        match &self.rules {
            None => E::typed_fields()
                .iter()
                .map(|f| (*f).to_owned())
                .chain(std::iter::once(format!("{ATTR_PREFIX}*")))
                .collect(),
            Some(rules) => {
                let mut v: Vec<String> = Vec::new();
                for r in rules {
                    if !v.contains(&r.to) {
                        v.push(r.to.clone());
                    }
                }
                v
            }
        }
    }

    /// Like [`map`](Self::map), taking the entity by value: identity mappings return it
    /// without a copy.
    pub fn map_owned<E: Entity + Default>(&self, src: E) -> Result<Option<E>> {
        if self.rules.is_none() {
            if let Some(scope) = &self.scope
                && !scope.matches(&src)
            {
                return Ok(None);
            }
            return Ok(Some(src));
        }
        self.map(&src)
    }

    /// Map one entity; `Ok(None)` when it is out of scope. The result keeps the source's
    /// anchor and references (the engine translates references to the target's anchors).
    pub fn map<E: Entity + Default>(&self, src: &E) -> Result<Option<E>> {
        if let Some(scope) = &self.scope
            && !scope.matches(src)
        {
            return Ok(None);
        }
        let Some(rules) = &self.rules else {
            return Ok(Some(src.clone()));
        };
        let mut out = E::default();
        out.set_anchor(src.anchor().clone());
        for r in rules {
            let v = r.eval(src)?;
            out.set(&r.to, v).map_err(|e| {
                Error::config(format!("mapping rule for {:?}: {}", r.to, e.message()))
                    .with_context("anchor", src.anchor().as_str())
            })?;
        }
        Ok(Some(out))
    }
}

/// The mapping of a job: accounts and orgs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    /// Accounts.
    pub accounts: EntityMapping,
    /// Orgs.
    pub orgs: EntityMapping,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping::identity()
    }
}

impl Mapping {
    /// Copy and own everything.
    pub fn identity() -> Self {
        Mapping {
            accounts: EntityMapping::identity(),
            orgs: EntityMapping::identity(),
        }
    }

    /// Map an account; `Ok(None)` when out of scope.
    pub fn map_account(&self, a: &Account) -> Result<Option<Account>> {
        self.accounts.map(a)
    }

    /// Map an account taken by value (no copy for identity mappings).
    pub fn map_account_owned(&self, a: Account) -> Result<Option<Account>> {
        self.accounts.map_owned(a)
    }

    /// Map an org; `Ok(None)` when out of scope.
    pub fn map_org(&self, o: &Org) -> Result<Option<Org>> {
        self.orgs.map(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_transforms_and_scope() {
        let mut a = Account::new("u1", "Zhang.San");
        a.display_name = Some("  张三 ".into());
        a.attrs.insert("type".into(), Value::from("staff"));
        let m = EntityMapping::rules(vec![
            FieldRule::copy("username", "username").with(Transform::Lowercase),
            FieldRule::copy("display_name", "display_name").with(Transform::Trim),
            FieldRule::template("email", "{username}@corp.example").with(Transform::Lowercase),
            FieldRule::template("attrs.label", "{{{display_name}}}"),
            FieldRule::template("title", "{title}"),
            FieldRule::constant("attrs.src", "hr"),
        ])
        .scoped(Scope::equals("attrs.type", "staff"));
        let out = m.map(&a).unwrap().unwrap();
        assert_eq!(out.username, "zhang.san");
        assert_eq!(out.display_name.as_deref(), Some("张三"));
        assert_eq!(out.email.as_deref(), Some("zhang.san@corp.example"));
        assert_eq!(out.get("attrs.label"), Value::from("{  张三 }"));
        assert_eq!(out.title, None, "a template of absent fields is absent");
        assert_eq!(out.get("attrs.src"), Value::from("hr"));
        assert!(
            out.get("attrs.type").is_null(),
            "unmapped fields are not copied"
        );
        assert_eq!(
            m.owned_fields::<Account>(),
            vec![
                "username",
                "display_name",
                "email",
                "attrs.label",
                "title",
                "attrs.src"
            ]
        );
        a.attrs.insert("type".into(), Value::from("contractor"));
        assert!(m.map(&a).unwrap().is_none());
    }

    #[test]
    fn template_placeholders_with_non_ascii_names_keep_the_text_after_them() {
        let mut a = Account::new("u1", "zhangsan");
        a.attrs.insert("部门".into(), Value::from("研发"));
        a.attrs.insert("工号".into(), Value::from("E7"));
        let v = render("{attrs.部门}-{attrs.工号}/{username}!", &a).unwrap();
        assert_eq!(v, Value::from("研发-E7/zhangsan!"));
    }

    #[test]
    fn bad_template_is_a_config_error() {
        let m = EntityMapping::rules(vec![FieldRule::template("email", "{username@x")]);
        let err = m.map(&Account::new("u", "u")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ConfigInvalid);
    }
}
