//! [`Directory`]: an in-memory org tree and account set that applies [`Op`]s with the
//! checks a real directory makes. It backs the memory adapter and the memory hub.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, Entity, Org, Status};
use crate::source::{Applied, Op, Page, PageRequest, PageToken};

/// Default page size of in-memory listings.
pub const DEFAULT_PAGE_SIZE: usize = 500;

/// What an applied op changed: the entity before and after (`None` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The anchor written.
    pub anchor: Anchor,
    /// The entity before (JSON).
    pub before: Option<Value>,
    /// The entity after (JSON).
    pub after: Option<Value>,
}

/// An in-memory directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    /// Orgs by anchor.
    pub orgs: BTreeMap<Anchor, Org>,
    /// Accounts by anchor.
    pub accounts: BTreeMap<Anchor, Account>,
}

fn page_of<T: Clone>(map: &BTreeMap<Anchor, T>, req: &PageRequest) -> Page<T> {
    let size = req.size.unwrap_or(DEFAULT_PAGE_SIZE).max(1);
    let start = match &req.token {
        Some(t) => Bound::Excluded(Anchor::new(t.0.clone())),
        None => Bound::Unbounded,
    };
    let mut items = Vec::with_capacity(size.min(map.len()));
    let mut last = None;
    let mut more = false;
    for (k, v) in map.range((start, Bound::Unbounded)) {
        if items.len() == size {
            more = true;
            break;
        }
        items.push(v.clone());
        last = Some(k);
    }
    Page {
        items,
        next: if more {
            last.map(|k| PageToken(k.as_str().to_owned()))
        } else {
            None
        },
    }
}

fn to_json<T: Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Directory::default()
    }

    /// A directory holding these entities (later duplicates win).
    pub fn from_parts(orgs: Vec<Org>, accounts: Vec<Account>) -> Self {
        Directory {
            orgs: orgs.into_iter().map(|o| (o.anchor.clone(), o)).collect(),
            accounts: accounts
                .into_iter()
                .map(|a| (a.anchor.clone(), a))
                .collect(),
        }
    }

    /// One page of orgs, ordered by anchor; the token is the last anchor served.
    pub fn org_page(&self, req: &PageRequest) -> Page<Org> {
        page_of(&self.orgs, req)
    }

    /// One page of accounts, ordered by anchor.
    pub fn account_page(&self, req: &PageRequest) -> Page<Account> {
        page_of(&self.accounts, req)
    }

    fn is_descendant(&self, candidate: &Anchor, of: &Anchor) -> bool {
        let mut cur = Some(candidate);
        let mut steps = 0usize;
        while let Some(c) = cur {
            if c == of {
                return true;
            }
            steps += 1;
            if steps > self.orgs.len() {
                return true; // already cyclic: refuse
            }
            cur = self.orgs.get(c).and_then(|o| o.parent.as_ref());
        }
        false
    }

    fn need_org(&self, anchor: &Anchor) -> Result<()> {
        if self.orgs.contains_key(anchor) {
            Ok(())
        } else {
            Err(Error::not_found(format!("org {anchor} does not exist"))
                .with_context("anchor", anchor.as_str()))
        }
    }

    /// Apply an op. `new_anchor` is called for creates when the directory assigns anchors
    /// itself; otherwise the proposed anchor is kept.
    pub fn apply(
        &mut self,
        op: &Op,
        new_anchor: Option<&mut dyn FnMut() -> Anchor>,
    ) -> Result<(Applied, Change)> {
        match op {
            Op::CreateOrg { org } => {
                let mut org = org.clone();
                if let Some(f) = new_anchor {
                    org.anchor = f();
                }
                if org.anchor.is_empty() {
                    return Err(Error::invalid_data("org with an empty anchor"));
                }
                if self.orgs.contains_key(&org.anchor) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("org {} exists already", org.anchor),
                    )
                    .with_context("anchor", org.anchor.as_str()));
                }
                if let Some(p) = &org.parent {
                    self.need_org(p)?;
                }
                let anchor = org.anchor.clone();
                let after = to_json(&org);
                self.orgs.insert(anchor.clone(), org);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor,
                        before: None,
                        after,
                    },
                ))
            }
            Op::UpdateOrg { anchor, changes } => {
                let org = self.orgs.get(anchor).ok_or_else(|| {
                    Error::not_found(format!("org {anchor} does not exist"))
                        .with_context("anchor", anchor.as_str())
                })?;
                let before = to_json(org);
                let mut next = org.clone();
                for (f, v) in changes {
                    if f == "parent" {
                        return Err(Error::invalid_data(
                            "update_org cannot change the parent; use move_org",
                        ));
                    }
                    next.set(f, v.clone())?;
                }
                let after = to_json(&next);
                self.orgs.insert(anchor.clone(), next);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before,
                        after,
                    },
                ))
            }
            Op::MoveOrg { anchor, parent } => {
                self.need_org(anchor)?;
                if let Some(p) = parent {
                    self.need_org(p)?;
                    if self.is_descendant(p, anchor) {
                        return Err(Error::invalid_data(format!(
                            "moving org {anchor} under {p} would make a cycle"
                        ))
                        .with_context("anchor", anchor.as_str()));
                    }
                }
                let org = self
                    .orgs
                    .get_mut(anchor)
                    .ok_or_else(|| Error::not_found(format!("org {anchor} does not exist")))?;
                let before = to_json(org);
                org.parent = parent.clone();
                let after = to_json(org);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before,
                        after,
                    },
                ))
            }
            Op::DeleteOrg { anchor } => {
                self.need_org(anchor)?;
                if let Some(child) = self
                    .orgs
                    .values()
                    .find(|o| o.parent.as_ref() == Some(anchor))
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("org {anchor} still has child org {}", child.anchor),
                    )
                    .with_context("anchor", anchor.as_str()));
                }
                if let Some(member) = self.accounts.values().find(|a| a.orgs.contains(anchor)) {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("org {anchor} still has member {}", member.anchor),
                    )
                    .with_context("anchor", anchor.as_str()));
                }
                let before = self.orgs.remove(anchor).and_then(|o| to_json(&o));
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before,
                        after: None,
                    },
                ))
            }
            Op::CreateAccount { account } => {
                let mut account = account.clone();
                if let Some(f) = new_anchor {
                    account.anchor = f();
                }
                if account.anchor.is_empty() {
                    return Err(Error::invalid_data("account with an empty anchor"));
                }
                if self.accounts.contains_key(&account.anchor) {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("account {} exists already", account.anchor),
                    )
                    .with_context("anchor", account.anchor.as_str()));
                }
                for o in &account.orgs {
                    self.need_org(o)?;
                }
                let anchor = account.anchor.clone();
                let after = to_json(&account);
                self.accounts.insert(anchor.clone(), account);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor,
                        before: None,
                        after,
                    },
                ))
            }
            Op::UpdateAccount { anchor, changes } => {
                if let Some(Value::Array(orgs)) = changes.get("orgs") {
                    for o in orgs {
                        if let Some(s) = o.as_str() {
                            self.need_org(&Anchor::from(s))?;
                        }
                    }
                }
                let acc = self.accounts.get(anchor).ok_or_else(|| {
                    Error::not_found(format!("account {anchor} does not exist"))
                        .with_context("anchor", anchor.as_str())
                })?;
                let before = to_json(acc);
                let mut next = acc.clone();
                for (f, v) in changes {
                    next.set(f, v.clone())?;
                }
                let after = to_json(&next);
                self.accounts.insert(anchor.clone(), next);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before,
                        after,
                    },
                ))
            }
            Op::DisableAccount { anchor } | Op::EnableAccount { anchor } => {
                let acc = self.accounts.get_mut(anchor).ok_or_else(|| {
                    Error::not_found(format!("account {anchor} does not exist"))
                        .with_context("anchor", anchor.as_str())
                })?;
                let before = to_json(acc);
                acc.status = if matches!(op, Op::DisableAccount { .. }) {
                    Status::Disabled
                } else {
                    Status::Active
                };
                let after = to_json(acc);
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before,
                        after,
                    },
                ))
            }
            Op::DeleteAccount { anchor } => {
                let acc = self.accounts.remove(anchor).ok_or_else(|| {
                    Error::not_found(format!("account {anchor} does not exist"))
                        .with_context("anchor", anchor.as_str())
                })?;
                Ok((
                    Applied::with_anchor(anchor.clone()),
                    Change {
                        anchor: anchor.clone(),
                        before: to_json(&acc),
                        after: None,
                    },
                ))
            }
        }
    }
}

/// A generated directory for benchmarks, load and crash tests: 10 roots with `per_root` children each, and `n`
/// accounts (`p000000`…, with employee id, email and display name) spread over the children
/// (over `r0` when there are none).
pub fn sample_directory(n: usize, per_root: usize) -> (Vec<Org>, Vec<Account>) {
    let mut orgs = Vec::new();
    let mut leaves = Vec::new();
    for r in 0..10 {
        let root = format!("r{r}");
        orgs.push(Org::new(root.as_str(), None, format!("Division {r}")));
        for c in 0..per_root {
            let leaf = format!("r{r}-c{c}");
            orgs.push(Org::new(
                leaf.as_str(),
                Some(root.as_str().into()),
                format!("Team {r}.{c}"),
            ));
            leaves.push(leaf);
        }
    }
    let accounts = (0..n)
        .map(|i| {
            let mut a = Account::new(format!("p{i:06}"), format!("user{i}"));
            a.employee_id = Some(format!("E{i:06}"));
            a.email = Some(format!("user{i}@example.com"));
            a.display_name = Some(format!("User {i}"));
            let leaf = leaves
                .get(i % leaves.len().max(1))
                .cloned()
                .unwrap_or_else(|| "r0".into());
            a.orgs = vec![leaf.into()];
            a
        })
        .collect();
    (orgs, accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_checks_like_a_directory() {
        let mut d = Directory::new();
        let root = Org::new("r", None, "Root");
        d.apply(&Op::CreateOrg { org: root.clone() }, None).unwrap();
        let err = d.apply(&Op::CreateOrg { org: root }, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let child = Org::new("c", Some("r".into()), "Child");
        d.apply(&Op::CreateOrg { org: child }, None).unwrap();
        let err = d
            .apply(
                &Op::MoveOrg {
                    anchor: "r".into(),
                    parent: Some("c".into()),
                },
                None,
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let mut u = Account::new("u", "u");
        u.orgs = vec!["c".into()];
        d.apply(&Op::CreateAccount { account: u }, None).unwrap();
        let err = d
            .apply(&Op::DeleteOrg { anchor: "c".into() }, None)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let err = d
            .apply(&Op::DisableAccount { anchor: "x".into() }, None)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let mut n = 0;
        let mut gen_anchor = || {
            n += 1;
            Anchor::from(format!("gen{n}"))
        };
        let (applied, _) = d
            .apply(
                &Op::CreateOrg {
                    org: Org::new("ignored", None, "X"),
                },
                Some(&mut gen_anchor),
            )
            .unwrap();
        assert_eq!(applied.anchor.unwrap().as_str(), "gen1");
    }

    #[test]
    fn pages_by_anchor() {
        let orgs = (0..7)
            .map(|i| Org::new(format!("o{i}"), None, "x"))
            .collect();
        let d = Directory::from_parts(orgs, vec![]);
        let mut req = PageRequest::sized(3);
        let mut seen = Vec::new();
        loop {
            let p = d.org_page(&req);
            seen.extend(p.items.into_iter().map(|o| o.anchor));
            match p.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        let exact = Directory::from_parts(
            (0..6)
                .map(|i| Org::new(format!("o{i}"), None, "x"))
                .collect(),
            vec![],
        );
        let p1 = exact.org_page(&PageRequest::sized(3));
        let p2 = exact.org_page(&PageRequest {
            token: p1.next.clone(),
            size: Some(3),
        });
        assert!(p1.next.is_some());
        assert!(
            p2.next.is_none(),
            "an exact multiple ends without an empty page"
        );
    }
}
