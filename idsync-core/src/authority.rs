//! Field authority: each hub field has one owning source.
//!
//! When several inbound jobs write into one hub (AD and DingTalk both feeding it), a
//! [`FieldAuthority`] names, per hub field, the one job allowed to change it. A job that
//! plans to change a field another job owns does not get that change: the field is taken
//! out of the op (an op left with nothing is dropped), and the refusal is reported — in the
//! plan ([`Plan::refused`](crate::Plan::refused)), in the report
//! ([`Report::refused`](crate::Report::refused) and
//! [`ReportCounts::refused_fields`](crate::ReportCounts::refused_fields)) and as an audit
//! entry ([`REFUSED_AUDIT`]) per refused entity. Nothing is dropped silently.
//!
//! * Fields without an owner keep the engine's usual behaviour: every job whose mapping
//!   writes them may change them (attribute-level ownership by mapping still applies).
//! * Creates are not refused: a new hub entity gets every field its first writer maps; the
//!   owner's next run brings its own values.
//! * An org move is a write of `parent`; enabling or disabling an account a write of
//!   `status`. Deletes are governed by each job's deletion policy, not by field authority.
//! * Field authority applies to jobs whose target is the hub; elsewhere it is ignored.
//!
//! ```
//! use idsync_core::{EntityKind, FieldAuthority};
//!
//! let mut authority = FieldAuthority::new();
//! authority.set(EntityKind::Account, "display_name", "ad-to-hub").unwrap();
//! authority.set(EntityKind::Account, "attrs.cost_center", "hr-to-hub").unwrap();
//! authority.set(EntityKind::Org, "name", "ad-to-hub").unwrap();
//! assert_eq!(authority.owner(EntityKind::Account, "display_name"), Some("ad-to-hub"));
//! assert!(authority.may_write(EntityKind::Account, "title", "dingtalk-to-hub")); // unowned
//! assert!(!authority.may_write(EntityKind::Org, "name", "dingtalk-to-hub"));
//! assert!(authority.set(EntityKind::Account, "nickname", "x").is_err()); // not a field
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ACCOUNT_FIELDS, ATTR_PREFIX, Anchor, EntityKind, ORG_FIELDS};

/// The name of the audit action written for each entity whose change was refused.
pub const REFUSED_AUDIT: &str = "authority_refused";

/// Hub field → the name of the one job allowed to change it, per entity kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldAuthority {
    /// Account fields (`display_name`, `orgs`, `status`, `attrs.NAME`, ...).
    #[serde(default)]
    pub accounts: BTreeMap<String, String>,
    /// Org fields (`name`, `parent`, `order`, `attrs.NAME`).
    #[serde(default)]
    pub orgs: BTreeMap<String, String>,
}

impl FieldAuthority {
    /// No owners: every field keeps the engine's usual behaviour.
    pub fn new() -> Self {
        FieldAuthority::default()
    }

    /// True when no field has an owner.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.orgs.is_empty()
    }

    /// Make `job` the owner of `field`. A name that is not a field of `kind` is a
    /// `ConfigInvalid` error naming the fields there are.
    pub fn set(&mut self, kind: EntityKind, field: &str, job: impl Into<String>) -> Result<()> {
        check_field(kind, field)?;
        let job = job.into();
        if job.trim().is_empty() {
            return Err(Error::config(format!(
                "field authority: {kind} field {field:?} has an empty owner"
            )));
        }
        self.map_mut(kind).insert(field.to_owned(), job);
        Ok(())
    }

    /// Check every field name, and (when `jobs` is given) that every owner is one of them.
    pub fn validate(&self, jobs: Option<&[&str]>) -> Result<()> {
        for kind in [EntityKind::Account, EntityKind::Org] {
            for (field, job) in self.map(kind) {
                check_field(kind, field)?;
                if let Some(jobs) = jobs
                    && !jobs.contains(&job.as_str())
                {
                    return Err(Error::config(format!(
                        "field authority: {kind} field {field:?} is owned by {job:?}, which is \
                         not a job (jobs: {})",
                        jobs.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The owner of a field, if it has one. `attrs.NAME` falls back to an owner of
    /// `attrs.*` (every attribute without an owner of its own).
    pub fn owner(&self, kind: EntityKind, field: &str) -> Option<&str> {
        let m = self.map(kind);
        m.get(field)
            .or_else(|| {
                field
                    .strip_prefix(ATTR_PREFIX)
                    .and_then(|_| m.get(&format!("{ATTR_PREFIX}*")))
            })
            .map(String::as_str)
    }

    /// Whether `job` may change `field`: it owns it, or nobody does.
    pub fn may_write(&self, kind: EntityKind, field: &str, job: &str) -> bool {
        self.owner(kind, field).is_none_or(|o| o == job)
    }

    fn map(&self, kind: EntityKind) -> &BTreeMap<String, String> {
        match kind {
            EntityKind::Account => &self.accounts,
            EntityKind::Org => &self.orgs,
        }
    }

    fn map_mut(&mut self, kind: EntityKind) -> &mut BTreeMap<String, String> {
        match kind {
            EntityKind::Account => &mut self.accounts,
            EntityKind::Org => &mut self.orgs,
        }
    }
}

/// Whether `field` names a field of `kind`: a typed field, `attrs.NAME`, or `attrs.*`.
pub fn is_authority_field(kind: EntityKind, field: &str) -> bool {
    let typed = match kind {
        EntityKind::Account => ACCOUNT_FIELDS,
        EntityKind::Org => ORG_FIELDS,
    };
    typed.contains(&field)
        || field
            .strip_prefix(ATTR_PREFIX)
            .is_some_and(|a| !a.is_empty())
}

fn check_field(kind: EntityKind, field: &str) -> Result<()> {
    if is_authority_field(kind, field) {
        return Ok(());
    }
    let typed = match kind {
        EntityKind::Account => ACCOUNT_FIELDS,
        EntityKind::Org => ORG_FIELDS,
    };
    Err(Error::config(format!(
        "field authority: {field:?} is not an {kind} field (one of {}, attrs.NAME or attrs.*)",
        typed.join(", ")
    )))
}

/// Changes a job planned for one hub entity that field authority did not let through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Org or account.
    pub kind: EntityKind,
    /// The hub entity.
    pub anchor: Anchor,
    /// The source entity the change came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Anchor>,
    /// Each refused field with its owner.
    pub fields: BTreeMap<String, String>,
    /// The values the job wanted to write, by field.
    pub values: BTreeMap<String, serde_json::Value>,
}

impl Refusal {
    /// One line for logs and warnings: `account u1: display_name (owned by ad-to-hub)`.
    pub fn describe(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(f, o)| format!("{f} (owned by {o})"))
            .collect();
        format!("{} {}: {}", self.kind, self.anchor, fields.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_attr_fallback_and_validation() {
        let mut a = FieldAuthority::new();
        assert!(a.is_empty());
        a.set(EntityKind::Account, "attrs.*", "hr").unwrap();
        a.set(EntityKind::Account, "attrs.site", "ad").unwrap();
        assert_eq!(a.owner(EntityKind::Account, "attrs.site"), Some("ad"));
        assert_eq!(a.owner(EntityKind::Account, "attrs.cost"), Some("hr"));
        assert_eq!(a.owner(EntityKind::Account, "title"), None);
        assert!(a.may_write(EntityKind::Account, "title", "anyone"));
        let e = a.set(EntityKind::Org, "email", "ad").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ConfigInvalid);
        assert!(e.message().contains("name, parent, order"), "{e}");
        assert!(a.set(EntityKind::Org, "name", " ").is_err());
        assert!(a.validate(Some(&["hr", "ad"])).is_ok());
        let e = a.validate(Some(&["ad"])).unwrap_err();
        assert!(e.message().contains("\"hr\", which is not a job"), "{e}");
    }
}
