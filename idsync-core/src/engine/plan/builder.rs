//! The plan under construction: ops with their phases and pending references, links,
//! stale links, conflicts and warnings; [`Builder::finish`] puts them in a stable order.

use std::collections::BTreeMap;

use super::{Conflict, PendingRef, Plan, PlannedOp};
use crate::engine::{GuardVerdict, Job};
use crate::model::{Anchor, EntityKind};
use crate::source::Op;
use crate::store::Link;

pub(super) struct Builder {
    pub(super) ops: Vec<PlannedOp>,
    pub(super) links: Vec<Link>,
    pub(super) stale: Vec<Link>,
    pub(super) conflicts: Vec<Conflict>,
    pub(super) warnings: BTreeMap<String, usize>,
}

impl Builder {
    pub(super) fn new() -> Self {
        Builder {
            ops: Vec::new(),
            links: Vec::new(),
            stale: Vec::new(),
            conflicts: Vec::new(),
            warnings: BTreeMap::new(),
        }
    }

    pub(super) fn push(
        &mut self,
        phase: u32,
        op: Op,
        source: Option<Anchor>,
        pending: Vec<PendingRef>,
    ) -> usize {
        let id = self.ops.len();
        let mut deps: Vec<usize> = pending.iter().map(|p| p.op).collect();
        deps.sort_unstable();
        deps.dedup();
        self.ops.push(PlannedOp {
            id,
            phase,
            op,
            source,
            deps,
            pending,
        });
        id
    }

    pub(super) fn warn(&mut self, what: impl Into<String>) {
        *self.warnings.entry(what.into()).or_insert(0) += 1;
    }

    pub(super) fn conflict(
        &mut self,
        kind: EntityKind,
        source: &Anchor,
        candidates: Vec<Anchor>,
        rule: &str,
    ) {
        let message = format!(
            "{kind} {source} matches {} target entities by {rule} ({}); not linked",
            candidates.len(),
            candidates
                .iter()
                .map(Anchor::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.conflicts.push(Conflict {
            kind,
            source: source.clone(),
            candidates,
            rule: rule.to_owned(),
            message,
        });
    }

    /// Sort ops into a stable order and renumber them.
    pub(super) fn finish(
        mut self,
        job: &Job,
        run_id: &str,
        incremental: bool,
        read: BTreeMap<String, usize>,
    ) -> Plan {
        // In place (a plan of a million creates is large): the old id breaks ties, so the
        // order is total and the same on every run.
        let mut ops = std::mem::take(&mut self.ops);
        ops.sort_unstable_by(|x, y| {
            x.phase
                .cmp(&y.phase)
                .then_with(|| x.op.name().cmp(y.op.name())) // by name: the order plans always had
                .then_with(|| x.op.anchor().cmp(y.op.anchor()))
                .then_with(|| x.source.cmp(&y.source))
                .then_with(|| x.id.cmp(&y.id))
        });
        let mut new_id = vec![0usize; ops.len()];
        for (new, p) in ops.iter().enumerate() {
            if let Some(slot) = new_id.get_mut(p.id) {
                *slot = new;
            }
        }
        for (new, p) in ops.iter_mut().enumerate() {
            p.id = new;
            for d in &mut p.deps {
                *d = new_id.get(*d).copied().unwrap_or(*d);
            }
            p.deps.sort_unstable();
            for r in &mut p.pending {
                r.op = new_id.get(r.op).copied().unwrap_or(r.op);
            }
        }
        self.links
            .sort_by(|a, b| (a.kind, &a.source).cmp(&(b.kind, &b.source)));
        self.stale
            .sort_by(|a, b| (a.kind, &a.source).cmp(&(b.kind, &b.source)));
        self.conflicts
            .sort_by(|a, b| (a.kind, &a.source).cmp(&(b.kind, &b.source)));
        Plan {
            job: job.name.clone(),
            run_id: run_id.to_owned(),
            created_at: chrono::Utc::now(),
            incremental,
            ops,
            links: self.links,
            stale_links: self.stale,
            conflicts: self.conflicts,
            warnings: self
                .warnings
                .into_iter()
                .map(|(w, n)| if n > 1 { format!("{w} ({n} times)") } else { w })
                .collect(),
            read,
            guard: GuardVerdict::default(),
            cursor: None,
            cursor_from: None,
        }
    }
}
