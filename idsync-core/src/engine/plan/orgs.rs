//! The org planner: source orgs parent-first, linked or correlated by place and name,
//! updates of owned fields, moves, creates with pending parents, deletes child-first; then
//! a sealed lookup table the account planner asks where each source org went.

use std::collections::{HashMap, HashSet};

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::builder::Builder;
use super::{MAX_DEPTH, ORG_CREATE, ORG_DELETE, ORG_MOVE, ORG_UPDATE, PendingRef};
use crate::engine::index::Interner;
use crate::engine::{DeletionPolicy, Job};
use crate::error::Result;
use crate::model::{Anchor, Entity, EntityKind, Org};
use crate::source::{Op, Patch};
use crate::store::Link;

/// Where a source org ends up in the target.
#[derive(Debug, Clone)]
pub(super) enum OrgRef {
    Target(Anchor),
    Pending(usize, u32), // op id, depth of the pending chain
    Unresolved,
}

pub(super) fn sync_orgs(job: &Job) -> bool {
    job.sync_orgs && job.source.capabilities().orgs && job.target.capabilities().orgs
}

/// Owned org fields that the target holds ([`Capabilities::org_fields`]), split into typed
/// fields, parent ownership, and all-attrs. A field the target cannot hold is not diffed:
/// it would read back different on every run.
///
/// [`Capabilities::org_fields`]: crate::source::Capabilities::org_fields
pub(super) fn org_fields(job: &Job) -> (Vec<String>, bool, bool) {
    let mut owned = job.mapping.orgs.owned_fields::<Org>();
    let caps = job.target.capabilities();
    owned.retain(|f| caps.holds_org_field(f));
    let parent = owned.iter().any(|f| f == "parent");
    let all_attrs = owned.iter().any(|f| f == "attrs.*");
    owned.retain(|f| f != "parent" && f != "attrs.*");
    (owned, parent, all_attrs)
}

pub(super) fn org_patch(src: &Org, tgt: &Org, fields: &[String], all_attrs: bool) -> Patch {
    let mut patch = Patch::new();
    for f in fields {
        let v = src.get(f);
        if v != tgt.get(f) {
            patch.insert(f.clone(), v);
        }
    }
    if all_attrs {
        for (k, v) in &src.attrs {
            if tgt.attrs.get(k) != Some(v) {
                patch.insert(format!("attrs.{k}"), v.clone());
            }
        }
        for k in tgt.attrs.keys() {
            if !src.attrs.contains_key(k) {
                patch.insert(format!("attrs.{k}"), Value::Null);
            }
        }
    }
    patch
}

/// Parent-first order of orgs (ties by anchor); orgs whose parent is not in the set come
/// first.
pub(super) fn topo_orgs(orgs: Vec<Org>) -> Vec<Org> {
    let mut by_parent: HashMap<Option<Anchor>, Vec<Org>> = HashMap::new();
    let anchors: HashSet<Anchor> = orgs.iter().map(|o| o.anchor.clone()).collect();
    for o in orgs {
        let key = o.parent.clone().filter(|p| anchors.contains(p));
        by_parent.entry(key).or_default().push(o);
    }
    for v in by_parent.values_mut() {
        v.sort_by(|a, b| a.anchor.cmp(&b.anchor));
    }
    let mut out = Vec::with_capacity(anchors.len());
    let mut queue: std::collections::VecDeque<Org> =
        by_parent.remove(&None).unwrap_or_default().into();
    while let Some(o) = queue.pop_front() {
        if let Some(children) = by_parent.remove(&Some(o.anchor.clone())) {
            queue.extend(children);
        }
        out.push(o);
    }
    out
}

pub(super) struct OrgPlanner<'a> {
    pub(super) links: &'a FxHashMap<Anchor, Anchor>,
    pub(super) res: FxHashMap<Anchor, OrgRef>,
    /// After planning ([`seal`](Self::seal)): where each source org went, by interned
    /// anchor, for the account planner's lookups (one per membership).
    pub(super) sealed: Interner,
    pub(super) places: Vec<Place>,
    pub(super) targets: Vec<Anchor>,
}

/// Where a source org went, in the sealed table.
#[derive(Clone, Copy)]
pub(super) enum Place {
    /// The target org with the same anchor.
    Same,
    /// A target org with another anchor (an index into `OrgPlanner::targets`).
    Target(usize),
    /// Created by this op of the plan.
    Pending(usize),
    Unplaced,
}

/// Where a source org is, borrowed.
pub(super) enum Lookup<'a> {
    /// The target org with the same anchor.
    Same,
    Target(&'a Anchor),
    Pending(usize),
    Unplaced,
}

impl OrgPlanner<'_> {
    /// Build the lookup table of every linked or planned source org.
    pub(super) fn seal(&mut self) {
        let mut ids = Interner::default();
        let mut places: Vec<Place> = Vec::new();
        let mut targets: Vec<Anchor> = Vec::new();
        let linked = self
            .links
            .iter()
            .filter(|(src, _)| !self.res.contains_key(*src))
            .map(|(src, t)| (src, OrgRef::Target(t.clone())));
        let planned = self.res.iter().map(|(src, r)| (src, r.clone()));
        for (src, r) in linked.chain(planned) {
            let Some(id) = ids.intern_at(Interner::hash(src.as_str()), src.as_str()) else {
                continue;
            };
            let place = match r {
                OrgRef::Target(t) if t == *src => Place::Same,
                OrgRef::Target(t) => {
                    targets.push(t);
                    Place::Target(targets.len() - 1)
                }
                OrgRef::Pending(op, _) => Place::Pending(op),
                OrgRef::Unresolved => Place::Unplaced,
            };
            let i = id as usize;
            if places.len() <= i {
                places.resize(i + 1, Place::Unplaced);
            }
            places[i] = place;
        }
        self.sealed = ids;
        self.places = places;
        self.targets = targets;
    }

    /// Warm the lookups of a batch of org references (see [`Interner`]).
    pub(super) fn warm<'b>(&self, refs: impl Iterator<Item = &'b Anchor> + Clone) {
        for o in refs.clone() {
            self.sealed.peek(Interner::hash(o.as_str()));
        }
        for o in refs {
            self.sealed.touch(Interner::hash(o.as_str()));
        }
    }

    pub(super) fn lookup(&self, src: &Anchor) -> Lookup<'_> {
        let place = self
            .sealed
            .get(src.as_str())
            .and_then(|id| self.places.get(id as usize));
        match place {
            Some(Place::Same) => Lookup::Same,
            Some(Place::Target(i)) => self
                .targets
                .get(*i)
                .map_or(Lookup::Unplaced, Lookup::Target),
            Some(Place::Pending(op)) => Lookup::Pending(*op),
            Some(Place::Unplaced) | None => Lookup::Unplaced,
        }
    }

    pub(super) fn resolve(&self, src: &Anchor) -> Option<OrgRef> {
        if let Some(r) = self.res.get(src) {
            return Some(r.clone());
        }
        self.links.get(src).map(|t| OrgRef::Target(t.clone()))
    }
}

/// Plan orgs. `full`: the source list is complete (deletions are detected).
pub(super) fn plan_orgs<'a>(
    b: &mut Builder,
    job: &Job,
    source: Vec<Org>,
    target: &[Org],
    links: &'a FxHashMap<Anchor, Anchor>,
    full: bool,
    explicit_deletes: &[Anchor],
) -> OrgPlanner<'a> {
    let (fields, own_parent, all_attrs) = org_fields(job);
    let by_anchor: HashMap<&Anchor, &Org> = target.iter().map(|o| (&o.anchor, o)).collect();
    let linked_targets: HashSet<&Anchor> = links.values().collect();
    // Candidates for correlation: unlinked target orgs by (parent, lowercase name).
    let mut by_place: HashMap<(Option<Anchor>, String), Vec<Anchor>> = HashMap::new();
    for o in target {
        if !linked_targets.contains(&o.anchor) {
            by_place
                .entry((o.parent.clone(), o.name.trim().to_lowercase()))
                .or_default()
                .push(o.anchor.clone());
        }
    }
    let mut claimed: HashSet<Anchor> = HashSet::new();
    let mut planner = OrgPlanner {
        links,
        res: FxHashMap::default(),
        sealed: Interner::default(),
        places: Vec::new(),
        targets: Vec::new(),
    };
    let source_anchors: HashSet<Anchor> = source.iter().map(|o| o.anchor.clone()).collect();
    // depth in the new tree, for move ordering
    let mut new_depth: HashMap<Anchor, u32> = HashMap::new();
    for org in topo_orgs(source) {
        let parent_ref = match &org.parent {
            None => None,
            Some(p) => match planner.resolve(p) {
                Some(r) => Some(r),
                None => {
                    b.warn(format!(
                        "org {} has parent {} which is neither in the source nor linked; synced as a root",
                        org.anchor, p
                    ));
                    None
                }
            },
        };
        let depth = org
            .parent
            .as_ref()
            .and_then(|p| new_depth.get(p))
            .map(|d| (d + 1).min(MAX_DEPTH))
            .unwrap_or(0);
        new_depth.insert(org.anchor.clone(), depth);
        if matches!(parent_ref, Some(OrgRef::Unresolved)) {
            b.warn(format!(
                "org {} skipped: its parent could not be placed",
                org.anchor
            ));
            planner.res.insert(org.anchor.clone(), OrgRef::Unresolved);
            continue;
        }
        // 1. link
        let mut target_anchor = links
            .get(&org.anchor)
            .filter(|t| by_anchor.contains_key(t))
            .cloned();
        if target_anchor.is_none()
            && let Some(stale) = links.get(&org.anchor)
        {
            b.stale.push(Link {
                kind: EntityKind::Org,
                source: org.anchor.clone(),
                target: stale.clone(),
            });
        }
        // 2. correlation by place and name
        if target_anchor.is_none() {
            let parent_target = match &parent_ref {
                None => Some(None),
                Some(OrgRef::Target(t)) => Some(Some(t.clone())),
                _ => None,
            };
            if let Some(pt) = parent_target
                && let Some(cands) = by_place.get(&(pt, org.name.trim().to_lowercase()))
            {
                let free: Vec<Anchor> = cands
                    .iter()
                    .filter(|c| !claimed.contains(*c))
                    .cloned()
                    .collect();
                if free.len() == 1 {
                    let t = free[0].clone();
                    claimed.insert(t.clone());
                    b.links.push(Link {
                        kind: EntityKind::Org,
                        source: org.anchor.clone(),
                        target: t.clone(),
                    });
                    target_anchor = Some(t);
                } else if free.len() > 1 {
                    b.conflict(EntityKind::Org, &org.anchor, free, "parent and name");
                    planner.res.insert(org.anchor.clone(), OrgRef::Unresolved);
                    continue;
                }
            }
        }
        match target_anchor {
            Some(t) => {
                let Some(tgt) = by_anchor.get(&t) else {
                    continue;
                };
                let patch = org_patch(&org, tgt, &fields, all_attrs);
                if !patch.is_empty() {
                    b.push(
                        ORG_UPDATE,
                        Op::UpdateOrg {
                            anchor: t.clone(),
                            changes: patch,
                        },
                        Some(org.anchor.clone()),
                        vec![],
                    );
                }
                if own_parent {
                    let (want, pending) = match &parent_ref {
                        None => (None, vec![]),
                        Some(OrgRef::Target(p)) => (Some(p.clone()), vec![]),
                        Some(OrgRef::Pending(op, _)) => (
                            org.parent.clone(),
                            vec![PendingRef {
                                field: "parent".into(),
                                index: 0,
                                op: *op,
                            }],
                        ),
                        Some(OrgRef::Unresolved) => continue,
                    };
                    if !pending.is_empty() || want != tgt.parent {
                        b.push(
                            ORG_MOVE + depth,
                            Op::MoveOrg {
                                anchor: t.clone(),
                                parent: want,
                            },
                            Some(org.anchor.clone()),
                            pending,
                        );
                    }
                }
                planner.res.insert(org.anchor.clone(), OrgRef::Target(t));
            }
            None => {
                let mut new = org.clone();
                let mut pending = vec![];
                let mut chain = 0;
                match &parent_ref {
                    None => new.parent = None,
                    Some(OrgRef::Target(p)) => new.parent = Some(p.clone()),
                    Some(OrgRef::Pending(op, d)) => {
                        pending.push(PendingRef {
                            field: "parent".into(),
                            index: 0,
                            op: *op,
                        });
                        chain = d + 1;
                    }
                    Some(OrgRef::Unresolved) => continue,
                }
                let chain = chain.min(MAX_DEPTH);
                let id = b.push(
                    ORG_CREATE + chain,
                    Op::CreateOrg { org: new },
                    Some(org.anchor.clone()),
                    pending,
                );
                planner
                    .res
                    .insert(org.anchor.clone(), OrgRef::Pending(id, chain));
            }
        }
    }
    // Deletions.
    let deleting = matches!(job.deletion, DeletionPolicy::Delete);
    let mut gone: Vec<(Anchor, Anchor)> = Vec::new();
    if full {
        for (s, t) in links {
            if !source_anchors.contains(s) {
                if by_anchor.contains_key(t) {
                    gone.push((s.clone(), t.clone()));
                } else {
                    b.stale.push(Link {
                        kind: EntityKind::Org,
                        source: s.clone(),
                        target: t.clone(),
                    });
                }
            }
        }
    } else {
        for s in explicit_deletes {
            if let Some(t) = links.get(s)
                && by_anchor.contains_key(t)
            {
                gone.push((s.clone(), t.clone()));
            }
        }
    }
    if deleting {
        // depth in the target tree, deepest first
        let depth_of = |a: &Anchor| -> u32 {
            let mut d = 0u32;
            let mut cur = by_anchor.get(a).and_then(|o| o.parent.as_ref());
            while let Some(p) = cur {
                d += 1;
                if d >= MAX_DEPTH {
                    break;
                }
                cur = by_anchor.get(p).and_then(|o| o.parent.as_ref());
            }
            d
        };
        for (s, t) in gone {
            let d = depth_of(&t);
            b.push(
                ORG_DELETE + (MAX_DEPTH - d),
                Op::DeleteOrg { anchor: t },
                Some(s),
                vec![],
            );
        }
    }
    planner.seal();
    planner
}

pub(super) fn map_orgs(job: &Job, orgs: Vec<Org>) -> Result<Vec<Org>> {
    let mut out = Vec::with_capacity(orgs.len());
    for o in orgs {
        if let Some(m) = job.mapping.map_org(&o)? {
            out.push(m);
        }
    }
    Ok(out)
}
