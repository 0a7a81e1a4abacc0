//! Anchor-free views of a directory, so that a sink that assigns its own anchors can be
//! compared with the fixture it was seeded with.
//!
//! Orgs are identified by their *name path* (root to leaf), accounts by username;
//! references (`orgs`, `manager`, `parent`) are rendered as paths and usernames.

use std::collections::{BTreeMap, HashMap};

use idsync_core::{Account, Anchor, Org, Status};

/// An org's path of names from its root, e.g. `["总公司", "研发中心"]`.
pub type OrgPath = Vec<String>;

/// The account fields the suite compares (all of them unless a harness narrows it).
pub const ACCOUNT_FIELDS: &[&str] = &[
    "display_name",
    "email",
    "phone",
    "employee_id",
    "title",
    "status",
    "orgs",
    "manager",
];

/// One account, anchor-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    /// Display name.
    pub display_name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Employee id.
    pub employee_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Status.
    pub status: Status,
    /// Org paths, primary first (`None` for a dangling reference).
    pub orgs: Vec<Option<OrgPath>>,
    /// The manager's username (`Some(None)`: a dangling reference).
    pub manager: Option<Option<String>>,
}

/// A directory seen by content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// Org paths, with the anchor each has on this side.
    pub orgs: BTreeMap<OrgPath, Anchor>,
    /// Accounts by username.
    pub accounts: BTreeMap<String, AccountView>,
    /// Account anchors by username.
    pub account_anchors: BTreeMap<String, Anchor>,
    /// Problems found while building the view (duplicate paths or usernames, cycles).
    pub problems: Vec<String>,
}

fn path_of(anchor: &Anchor, by_anchor: &HashMap<&Anchor, &Org>) -> Option<OrgPath> {
    let mut names = Vec::new();
    let mut cur = by_anchor.get(anchor).copied();
    while let Some(o) = cur {
        names.push(o.name.clone());
        if names.len() > by_anchor.len() {
            return None; // a cycle
        }
        cur = match &o.parent {
            Some(p) => Some(by_anchor.get(p).copied()?),
            None => None,
        };
    }
    if names.is_empty() {
        return None;
    }
    names.reverse();
    Some(names)
}

impl Content {
    /// Build the view of these entities.
    pub fn of(orgs: &[Org], accounts: &[Account]) -> Content {
        let by_anchor: HashMap<&Anchor, &Org> = orgs.iter().map(|o| (&o.anchor, o)).collect();
        let user_of: HashMap<&Anchor, &str> = accounts
            .iter()
            .map(|a| (&a.anchor, a.username.as_str()))
            .collect();
        let mut c = Content::default();
        for o in orgs {
            match path_of(&o.anchor, &by_anchor) {
                Some(p) => {
                    if c.orgs.insert(p.clone(), o.anchor.clone()).is_some() {
                        c.problems
                            .push(format!("two orgs at path {}", show_path(&p)));
                    }
                }
                None => c.problems.push(format!(
                    "org {} ({:?}) has a dangling or cyclic parent",
                    o.anchor, o.name
                )),
            }
        }
        for a in accounts {
            let view = AccountView {
                display_name: a.display_name.clone(),
                email: a.email.clone(),
                phone: a.phone.clone(),
                employee_id: a.employee_id.clone(),
                title: a.title.clone(),
                status: a.status,
                orgs: a.orgs.iter().map(|o| path_of(o, &by_anchor)).collect(),
                manager: a
                    .manager
                    .as_ref()
                    .map(|m| user_of.get(m).map(|u| (*u).to_owned())),
            };
            if c.accounts.insert(a.username.clone(), view).is_some() {
                c.problems
                    .push(format!("two accounts with username {:?}", a.username));
            }
            c.account_anchors
                .insert(a.username.clone(), a.anchor.clone());
        }
        c
    }

    /// The same view with every account's orgs sorted and deduplicated: how an adapter that
    /// keeps memberships as a set ([`Capabilities::ordered_orgs`] `false`) is compared.
    ///
    /// [`Capabilities::ordered_orgs`]: idsync_core::Capabilities::ordered_orgs
    pub fn orgs_as_sets(&self) -> Content {
        let mut c = self.clone();
        for a in c.accounts.values_mut() {
            a.orgs.sort();
            a.orgs.dedup();
        }
        c
    }

    /// The anchor of the org at `path`.
    pub fn org_anchor(&self, path: &[&str]) -> Option<&Anchor> {
        let p: OrgPath = path.iter().map(|s| (*s).to_owned()).collect();
        self.orgs.get(&p)
    }

    /// Differences between `self` (what was found) and `expected`, comparing only the
    /// given account fields (see [`ACCOUNT_FIELDS`]); `compare_orgs: false` ignores the
    /// org tree and account memberships. Empty when equal.
    pub fn diff(&self, expected: &Content, fields: &[&str], compare_orgs: bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("found: {p}"))
            .collect();
        if compare_orgs {
            for p in expected.orgs.keys() {
                if !self.orgs.contains_key(p) {
                    out.push(format!("missing org {}", show_path(p)));
                }
            }
            for p in self.orgs.keys() {
                if !expected.orgs.contains_key(p) {
                    out.push(format!("unexpected org {}", show_path(p)));
                }
            }
        }
        for (u, want) in &expected.accounts {
            let Some(got) = self.accounts.get(u) else {
                out.push(format!("missing account {u:?}"));
                continue;
            };
            let mut field = |name: &str, g: String, w: String| {
                if fields.contains(&name) && g != w {
                    out.push(format!(
                        "account {u:?} field {name}: found {g}, expected {w}"
                    ));
                }
            };
            field(
                "display_name",
                show(&got.display_name),
                show(&want.display_name),
            );
            field("email", show(&got.email), show(&want.email));
            field("phone", show(&got.phone), show(&want.phone));
            field(
                "employee_id",
                show(&got.employee_id),
                show(&want.employee_id),
            );
            field("title", show(&got.title), show(&want.title));
            field(
                "status",
                got.status.as_str().to_owned(),
                want.status.as_str().to_owned(),
            );
            if compare_orgs {
                field("orgs", show_orgs(&got.orgs), show_orgs(&want.orgs));
            }
            field(
                "manager",
                format!("{:?}", got.manager),
                format!("{:?}", want.manager),
            );
        }
        for u in self.accounts.keys() {
            if !expected.accounts.contains_key(u) {
                out.push(format!("unexpected account {u:?}"));
            }
        }
        out
    }
}

fn show(v: &Option<String>) -> String {
    format!("{v:?}")
}

/// A path as `a / b / c`.
pub fn show_path(p: &[String]) -> String {
    p.join(" / ")
}

fn show_orgs(orgs: &[Option<OrgPath>]) -> String {
    let parts: Vec<String> = orgs
        .iter()
        .map(|o| match o {
            Some(p) => format!("[{}]", show_path(p)),
            None => "[dangling]".to_owned(),
        })
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fixture;

    #[test]
    fn equal_content_with_other_anchors_has_no_diff() {
        let fx = Fixture::org_chart(7, 10);
        let renamed: Vec<Org> = fx
            .orgs
            .iter()
            .map(|o| {
                let mut o = o.clone();
                o.anchor = format!("x{}", o.anchor).into();
                o.parent = o.parent.map(|p| format!("x{p}").into());
                o
            })
            .collect();
        let accounts: Vec<Account> = fx
            .accounts
            .iter()
            .map(|a| {
                let mut a = a.clone();
                a.anchor = format!("y{}", a.anchor).into();
                a.orgs = a.orgs.iter().map(|o| format!("x{o}").into()).collect();
                a.manager = a.manager.map(|m| format!("y{m}").into());
                a
            })
            .collect();
        let want = Content::of(&fx.orgs, &fx.accounts);
        let got = Content::of(&renamed, &accounts);
        assert!(got.diff(&want, ACCOUNT_FIELDS, true).is_empty());

        let mut changed = accounts;
        changed[3].title = Some("other".into());
        changed[4].orgs.reverse();
        let d = Content::of(&renamed, &changed).diff(&want, ACCOUNT_FIELDS, true);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("title"));
    }
}
