//! The plan under construction: ops with their phases and pending references, links,
//! stale links, conflicts and warnings; [`Builder::finish`] puts them in a stable order.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Conflict, PendingRef, Plan, PlannedOp};
use crate::authority::{FieldAuthority, Refusal};
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
        let planned = ops.len();
        let refused = match (&job.authority, job.target.hub()) {
            (Some(a), Some(_)) if !a.is_empty() => refuse_unowned(&mut ops, a, &job.name),
            _ => Vec::new(),
        };
        ops.sort_unstable_by(|x, y| {
            x.phase
                .cmp(&y.phase)
                .then_with(|| x.op.name().cmp(y.op.name())) // by name: the order plans always had
                .then_with(|| x.op.anchor().cmp(y.op.anchor()))
                .then_with(|| x.source.cmp(&y.source))
                .then_with(|| x.id.cmp(&y.id))
        });
        let mut new_id = vec![usize::MAX; planned];
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
            // (Only creates are depended on, and field authority never drops one.)
            p.deps.retain(|d| *d != usize::MAX);
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
            refused,
            guard: GuardVerdict::default(),
            cursor: None,
            cursor_from: None,
        }
    }
}

/// Take out of `ops` every change of a hub field another job owns (an op left with nothing
/// to change is dropped), and say what was taken, one [`Refusal`] per entity in anchor
/// order. Creates, deletes and the follow-up update of a create are left alone.
fn refuse_unowned(ops: &mut Vec<PlannedOp>, a: &FieldAuthority, job: &str) -> Vec<Refusal> {
    let mut by_entity: BTreeMap<(EntityKind, Anchor), Refusal> = BTreeMap::new();
    ops.retain_mut(|p| {
        if p.pending.iter().any(|r| r.field == "anchor") {
            return true;
        }
        let kind = p.op.entity();
        let mut fields = BTreeMap::new();
        let mut values = BTreeMap::new();
        let mut refuse = |field: &str, value: Value| match a.owner(kind, field) {
            Some(owner) if owner != job => {
                fields.insert(field.to_owned(), owner.to_owned());
                values.insert(field.to_owned(), value);
                true
            }
            _ => false,
        };
        let keep = match &mut p.op {
            Op::UpdateAccount { changes, .. } | Op::UpdateOrg { changes, .. } => {
                changes.retain(|f, v| !refuse(f, v.clone()));
                !changes.is_empty()
            }
            Op::MoveOrg { parent, .. } => {
                let v = parent
                    .as_ref()
                    .map_or(Value::Null, |p| Value::from(p.as_str()));
                !refuse("parent", v)
            }
            Op::EnableAccount { .. } => !refuse("status", Value::from("active")),
            Op::DisableAccount { .. } => !refuse("status", Value::from("disabled")),
            _ => true,
        };
        if fields.is_empty() {
            return keep;
        }
        // References into refused fields go with them.
        p.pending.retain(|r| !fields.contains_key(&r.field));
        p.deps = p.pending.iter().map(|r| r.op).collect();
        p.deps.sort_unstable();
        p.deps.dedup();
        let r = by_entity
            .entry((kind, p.op.anchor().clone()))
            .or_insert_with(|| Refusal {
                kind,
                anchor: p.op.anchor().clone(),
                source: p.source.clone(),
                fields: BTreeMap::new(),
                values: BTreeMap::new(),
            });
        r.fields.extend(fields);
        r.values.extend(values);
        keep
    });
    by_entity.into_values().collect()
}
