//! Account creates, managers before the people they manage so that a create can carry its
//! manager; manager cycles (and chains deeper than the phase range) get the manager in a
//! follow-up op.

use rustc_hash::FxHashMap;

use super::accounts::AccPlanner;
use super::builder::Builder;
use super::correlate::Matched;
use super::{ACC_CREATE, MAX_MANAGER_DEPTH, PendingRef};
use crate::engine::index::{AccField, Interner};
use crate::model::{Anchor, Status};
use crate::source::Op;

/// The creates planned, by index in the planner's work list.
pub(super) struct Creates {
    /// The mapping owns the manager field.
    pub(super) manager_owned: bool,
    /// Source anchor id -> index in the work list, of the accounts to create.
    pub(super) to_create: FxHashMap<u32, usize>,
    /// Each account's create op.
    pub(super) created: Vec<Option<usize>>,
    /// Whether a follow-up op sets its manager.
    pub(super) followup: Vec<bool>,
}

impl Creates {
    /// The work-list index of the create of the source account `m`, if it is created.
    pub(super) fn create_of(&self, ids: &Interner, m: &Anchor) -> Option<usize> {
        ids.get(m.as_str())
            .and_then(|id| self.to_create.get(&id).copied())
    }
}

impl AccPlanner<'_> {
    /// Plan the creates of the accounts correlation found no target for.
    pub(super) fn plan_creates(&mut self, b: &mut Builder, m: &Matched) -> Creates {
        let Matched { skip, targets, .. } = m;
        // Creates, managers before the people they manage, so that a create can carry
        // its manager. Manager cycles (and chains deeper than the phase range) get the
        // manager in a follow-up op.
        let manager_owned = self.fields.contains(&AccField::Manager);
        // Source anchor id -> index in `work`, of the accounts to create.
        let to_create: FxHashMap<u32, usize> = self
            .work
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i) && targets[*i].is_none())
            .map(|(i, w)| (w.sid, i))
            .collect();
        let create_of = |ids: &Interner, m: &Anchor| {
            ids.get(m.as_str())
                .and_then(|id| to_create.get(&id).copied())
        };
        // By index in `work`: (phase depth, manager set by a follow-up op)
        let mut depth: Vec<Option<(u32, bool)>> = vec![None; self.work.len()];
        let mut starts: Vec<usize> = to_create.values().copied().collect();
        starts.sort_unstable();
        for start in starts.iter().copied() {
            let mut chain: Vec<usize> = Vec::new();
            let mut cur = Some(start);
            // depth of the node after the chain's last one, if known
            let mut next: Option<u32> = None;
            while let Some(i) = cur {
                if let Some((d, _)) = depth[i] {
                    next = Some(d);
                    break;
                }
                if let Some(k) = chain.iter().position(|c| *c == i) {
                    // chain[k..] is a cycle: created first, managers set afterwards
                    for c in chain.drain(k..) {
                        depth[c] = Some((0, true));
                    }
                    next = Some(0);
                    break;
                }
                chain.push(i);
                cur = self.work[i]
                    .manager
                    .as_ref()
                    .filter(|m| self.link_of(m).is_none())
                    .and_then(|m| create_of(&self.ids, m));
            }
            for c in chain.into_iter().rev() {
                let entry = match next {
                    None => (0, false),
                    Some(d) if d < MAX_MANAGER_DEPTH => (d + 1, false),
                    Some(_) => (0, true),
                };
                depth[c] = Some(entry);
                next = Some(entry.0);
            }
        }
        let mut order = starts;
        order.sort_by_key(|i| (depth[*i].map(|d| d.0).unwrap_or(0), *i));
        // Most accounts that need anything need one op: size the plan once.
        b.ops.reserve(self.work.len());
        // By index in `work`: its create op, and whether a follow-up op sets its manager.
        let mut created: Vec<Option<usize>> = vec![None; self.work.len()];
        let mut followup: Vec<bool> = vec![false; self.work.len()];
        for i in order {
            let (d, late) = depth[i].unwrap_or((0, false));
            let manager = self.work[i].manager.clone();
            let linked_manager = manager.as_ref().and_then(|m| self.linked_target(m));
            let manager_create = manager.as_ref().and_then(|m| create_of(&self.ids, m));
            let w = &mut self.work[i];
            // The create takes the account; `work` keeps its anchor for what follows.
            let mut new = std::mem::take(&mut w.acc);
            w.acc.anchor = new.anchor.clone();
            let mut pending = w.pending.clone();
            if !self.own_status {
                new.status = Status::Active;
            }
            if let Some(m) = manager
                && manager_owned
            {
                let manager_op = manager_create.and_then(|c| created[c]);
                if let Some(t) = linked_manager {
                    new.manager = Some(t);
                } else if let (Some(op), false) = (manager_op, late) {
                    new.manager = Some(m);
                    pending.push(PendingRef {
                        field: "manager".into(),
                        index: 0,
                        op,
                    });
                } else if manager_create.is_some() {
                    followup[i] = true;
                }
            }
            if !manager_owned {
                new.manager = None;
            }
            let source = new.anchor.clone();
            created[i] = Some(b.push(
                ACC_CREATE + d,
                Op::CreateAccount { account: new },
                Some(source),
                pending,
            ));
        }
        Creates {
            manager_owned,
            to_create,
            created,
            followup,
        }
    }
}
