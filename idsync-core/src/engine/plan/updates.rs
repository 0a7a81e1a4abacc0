//! Updates of linked and correlated accounts (the owned fields that differ, by their
//! hashes), managers resolved once links, correlations and creates are known, new links,
//! status changes; and the follow-up op that sets a manager inside a cycle of creates.

use std::collections::HashMap;

use serde_json::Value;

use super::accounts::{AccPlanner, Work};
use super::builder::Builder;
use super::correlate::Matched;
use super::creates::Creates;
use super::{ACC_MANAGER, ACC_STATUS, ACC_UPDATE, PendingRef};
use crate::engine::index::{AccField, attr_hashes, field_hash};
use crate::model::{Entity, EntityKind, Status};
use crate::source::{Op, Patch};
use crate::store::Link;

impl AccPlanner<'_> {
    /// Plan the updates, links and status changes of every account in the work list.
    pub(super) fn plan_updates(&mut self, b: &mut Builder, m: &Matched, c: &Creates) {
        let Matched {
            matches,
            skip,
            targets,
        } = m;
        let Creates {
            manager_owned,
            created,
            followup,
            ..
        } = c;
        let manager_owned = *manager_owned;
        let work = std::mem::take(&mut self.work);
        for (i, w) in work.into_iter().enumerate() {
            let Work {
                mut acc,
                pending,
                manager,
                ..
            } = w;
            if skip.contains(&i) {
                continue;
            }
            // Resolve the manager now that links, correlations and creates are known.
            let mut mgr_pending: Option<PendingRef> = None;
            if let Some(m) = manager {
                let manager_op = c.create_of(&self.ids, &m).and_then(|c| created[c]);
                if let Some(t) = self.linked_target(&m) {
                    acc.manager = Some(t);
                } else if let Some(op) = manager_op {
                    mgr_pending = Some(PendingRef {
                        field: "manager".into(),
                        index: 0,
                        op,
                    });
                    acc.manager = Some(m.clone());
                } else {
                    if manager_owned {
                        b.warn(format!(
                            "account {} has manager {} who is not synced; the manager is left out",
                            acc.anchor, m
                        ));
                    }
                    acc.manager = None;
                }
            }
            match targets[i] {
                None => {
                    // created above; a follow-up op sets a manager in a cycle
                    if manager_owned
                        && acc.manager.is_some()
                        && followup[i]
                        && let Some(own) = created[i]
                    {
                        let mut pend = vec![PendingRef {
                            field: "anchor".into(),
                            index: 0,
                            op: own,
                        }];
                        pend.extend(mgr_pending);
                        let mut changes = Patch::new();
                        changes.insert("manager".into(), acc.get("manager"));
                        b.push(
                            ACC_MANAGER,
                            Op::UpdateAccount {
                                anchor: acc.anchor.clone(),
                                changes,
                            },
                            Some(acc.anchor.clone()),
                            pend,
                        );
                    }
                }
                Some(tid) => {
                    let src_attrs: Box<[(u32, u64)]> = if self.all_attrs {
                        attr_hashes(&acc, &mut self.names)
                    } else {
                        Box::new([])
                    };
                    let Some((entry, row)) = self.entry(tid) else {
                        continue;
                    };
                    let t = self.anchor(tid);
                    let mut patch = Patch::new();
                    for (f, th) in self.fields.iter().zip(row) {
                        if *f == AccField::Status {
                            continue;
                        }
                        let h = field_hash(&acc, f);
                        if *th != h || (*f == AccField::Manager && mgr_pending.is_some()) {
                            patch.insert(f.name(), acc.get(&f.name()));
                        }
                    }
                    if self.all_attrs && src_attrs != entry.attrs {
                        let tgt: HashMap<u32, u64> = entry.attrs.iter().copied().collect();
                        let src: HashMap<u32, u64> = src_attrs.iter().copied().collect();
                        for (id, h) in &src {
                            if tgt.get(id) != Some(h) {
                                let name = self.names.name(*id).to_owned();
                                let v = acc.attrs.get(&name).cloned().unwrap_or(Value::Null);
                                patch.insert(format!("attrs.{name}"), v);
                            }
                        }
                        for id in tgt.keys() {
                            if !src.contains_key(id) {
                                patch
                                    .insert(format!("attrs.{}", self.names.name(*id)), Value::Null);
                            }
                        }
                    }
                    if !patch.is_empty() {
                        let mut pend: Vec<PendingRef> = pending
                            .iter()
                            .filter(|p| p.field == "orgs")
                            .cloned()
                            .collect();
                        pend.extend(mgr_pending);
                        let phase = if pend.iter().any(|p| p.field == "manager") {
                            ACC_MANAGER
                        } else {
                            ACC_UPDATE
                        };
                        b.push(
                            phase,
                            Op::UpdateAccount {
                                anchor: t.clone(),
                                changes: patch,
                            },
                            Some(acc.anchor.clone()),
                            pend,
                        );
                    }
                    if matches[i].is_some() {
                        b.links.push(Link {
                            kind: EntityKind::Account,
                            source: acc.anchor.clone(),
                            target: t.clone(),
                        });
                    }
                    if self.own_status && acc.status != entry.status {
                        let op = match acc.status {
                            Status::Active => Op::EnableAccount { anchor: t },
                            Status::Disabled => Op::DisableAccount { anchor: t },
                        };
                        b.push(ACC_STATUS, op, Some(acc.anchor.clone()), vec![]);
                    }
                }
            }
        }
    }
}
