//! Planning: correlate and diff the two sides into an ordered, serializable [`Plan`].

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use rustc_hash::{FxHashMap, FxHashSet};

use super::index::{AccField, Names, attr_hashes, field_hash, field_str, key_hash};
use super::{DeletionPolicy, Engine, GuardVerdict, Job};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, Entity, EntityKind, Org, ProblemKind, Status};
use crate::source::{ChangeSet, Op, PageRequest, Patch, SourceExt, SyncCursor};
use crate::store::{JournalState, Link};

// Phases: ops of a phase run concurrently; a phase starts when the previous one ended.
pub(crate) const ORG_CREATE: u32 = 0; // + depth of the pending chain
pub(crate) const ORG_UPDATE: u32 = 1000;
pub(crate) const ORG_MOVE: u32 = 1001; // + depth in the new tree
pub(crate) const ACC_CREATE: u32 = 2000; // + depth of the manager chain
const MAX_MANAGER_DEPTH: u32 = 500;
pub(crate) const ACC_UPDATE: u32 = 2600;
pub(crate) const ACC_MANAGER: u32 = 2601;
pub(crate) const ACC_STATUS: u32 = 2602;
pub(crate) const ACC_DELETE: u32 = 3000;
pub(crate) const ORG_DELETE: u32 = 4000; // + (999 - depth): deepest first
const MAX_DEPTH: u32 = 998;

/// A reference inside an op to an entity created by another op of the same plan; the
/// engine fills in the created anchor before sending the op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRef {
    /// `"parent"`, `"orgs"`, `"manager"`, or `"anchor"` (the op's own target).
    pub field: String,
    /// Position in a list field.
    pub index: usize,
    /// The op whose created anchor goes here.
    pub op: usize,
}

/// One planned operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedOp {
    /// Index in the plan.
    pub id: usize,
    /// Ops of one phase run concurrently, phases in order.
    pub phase: u32,
    /// The operation (pending references hold the source anchor until resolved).
    pub op: Op,
    /// The source entity it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Anchor>,
    /// Ops that must succeed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<usize>,
    /// References filled from other ops' results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingRef>,
}

/// An entity the engine would not guess about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Org or account.
    pub kind: EntityKind,
    /// The source entity.
    pub source: Anchor,
    /// The target candidates.
    pub candidates: Vec<Anchor>,
    /// The correlation rule that matched more than once.
    pub rule: String,
    /// Explanation.
    pub message: String,
}

/// What a run will do. Serializable, with a stable order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The job.
    pub job: String,
    /// The run this plan belongs to.
    pub run_id: String,
    /// When it was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// `true` for an incremental (change-set) plan.
    pub incremental: bool,
    /// The operations, ordered by phase.
    pub ops: Vec<PlannedOp>,
    /// Correlations that need no operation, only a link.
    pub links: Vec<Link>,
    /// Links whose target no longer exists (forgotten on apply).
    pub stale_links: Vec<Link>,
    /// Ambiguous correlations: nothing is done for these.
    pub conflicts: Vec<Conflict>,
    /// Things worth reading (dropped references and the like), aggregated.
    pub warnings: Vec<String>,
    /// Entities read: source orgs, source accounts, target orgs, target accounts.
    pub read: BTreeMap<String, usize>,
    /// The guard's verdict.
    pub guard: GuardVerdict,
    /// The source cursor to commit after a fully successful apply.
    pub cursor: Option<SyncCursor>,
    /// The cursor that was stored when the plan was made (optimistic check).
    pub cursor_from: Option<SyncCursor>,
}

/// Counts of a plan, by op name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlanSummary {
    /// Ops by name.
    pub ops: BTreeMap<String, usize>,
    /// New links without an op.
    pub links: usize,
    /// Conflicts.
    pub conflicts: usize,
    /// Guard stopped it.
    pub needs_approval: bool,
}

impl Plan {
    /// True when the plan does nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.links.is_empty() && self.stale_links.is_empty()
    }

    /// Counts by op name.
    pub fn summary(&self) -> PlanSummary {
        let mut ops = BTreeMap::new();
        for p in &self.ops {
            *ops.entry(p.op.name().to_owned()).or_insert(0) += 1;
        }
        PlanSummary {
            ops,
            links: self.links.len(),
            conflicts: self.conflicts.len(),
            needs_approval: self.guard.stopped,
        }
    }

    /// Number of ops named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.ops.iter().filter(|p| p.op.name() == name).count()
    }
}

/// Where a source org ends up in the target.
#[derive(Debug, Clone)]
enum OrgRef {
    Target(Anchor),
    Pending(usize, u32), // op id, depth of the pending chain
    Unresolved,
}

struct Builder {
    ops: Vec<PlannedOp>,
    links: Vec<Link>,
    stale: Vec<Link>,
    conflicts: Vec<Conflict>,
    warnings: BTreeMap<String, usize>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            ops: Vec::new(),
            links: Vec::new(),
            stale: Vec::new(),
            conflicts: Vec::new(),
            warnings: BTreeMap::new(),
        }
    }

    fn push(
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

    fn warn(&mut self, what: impl Into<String>) {
        *self.warnings.entry(what.into()).or_insert(0) += 1;
    }

    fn conflict(&mut self, kind: EntityKind, source: &Anchor, candidates: Vec<Anchor>, rule: &str) {
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
    fn finish(
        mut self,
        job: &Job,
        run_id: &str,
        incremental: bool,
        read: BTreeMap<String, usize>,
    ) -> Plan {
        let mut order: Vec<usize> = (0..self.ops.len()).collect();
        order.sort_by(|a, b| {
            let (x, y) = (&self.ops[*a], &self.ops[*b]);
            x.phase
                .cmp(&y.phase)
                .then_with(|| x.op.name().cmp(y.op.name()))
                .then_with(|| x.op.anchor().cmp(y.op.anchor()))
                .then_with(|| x.source.cmp(&y.source))
        });
        let mut new_id = vec![0usize; self.ops.len()];
        for (new, old) in order.iter().enumerate() {
            new_id[*old] = new;
        }
        let mut old_ops: Vec<Option<PlannedOp>> = self.ops.drain(..).map(Some).collect();
        let mut ops = Vec::with_capacity(old_ops.len());
        for old in order {
            if let Some(mut p) = old_ops[old].take() {
                p.id = new_id[old];
                for d in &mut p.deps {
                    *d = new_id[*d];
                }
                p.deps.sort_unstable();
                for r in &mut p.pending {
                    r.op = new_id[r.op];
                }
                ops.push(p);
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

async fn load_links<V>(
    engine: &Engine,
    job: &str,
    kind: EntityKind,
    value: impl Fn(Anchor) -> V,
) -> Result<FxHashMap<Anchor, V>> {
    let mut out = FxHashMap::default();
    let mut req = PageRequest::sized(10_000);
    loop {
        let page = engine.store.links(job, kind, req.clone()).await?;
        out.extend(page.items.into_iter().map(|l| (l.source, value(l.target))));
        match page.next {
            Some(t) => req.token = Some(t),
            None => return Ok(out),
        }
    }
}

fn shadow_stream<'a, T: serde::de::DeserializeOwned + Send + 'a>(
    engine: &'a Engine,
    job: &'a str,
    kind: EntityKind,
) -> BoxStream<'a, Result<T>> {
    crate::source::paged(
        Some(1000),
        move |req| engine.store.shadow(job, kind, req),
        "shadow",
    )
    .and_then(|v| async move { serde_json::from_value::<T>(v).map_err(Error::from) })
    .boxed()
}

fn target_orgs<'a>(engine: &'a Engine, job: &'a Job) -> BoxStream<'a, Result<Org>> {
    if job.sink.capabilities().readable {
        job.sink.org_stream(job.page_size)
    } else {
        shadow_stream(engine, &job.name, EntityKind::Org)
    }
}

fn target_accounts<'a>(engine: &'a Engine, job: &'a Job) -> BoxStream<'a, Result<Account>> {
    if job.sink.capabilities().readable {
        job.sink.account_stream(job.page_size)
    } else {
        shadow_stream(engine, &job.name, EntityKind::Account)
    }
}

fn read_err(side: &str, what: &str, e: Error) -> Error {
    let status = e.status();
    // Transport trouble means the listing ended early; bad data, bad credentials and the
    // like keep their kind.
    let kind = match e.kind() {
        ErrorKind::Unavailable | ErrorKind::RateLimited | ErrorKind::Unexpected => {
            ErrorKind::Incomplete
        }
        k => k,
    };
    Error::new(
        kind,
        format!("reading {what} from the {side} failed; nothing was planned: {e}"),
    )
    .with_status(status)
    .with_source(e)
}

fn sync_orgs(job: &Job) -> bool {
    job.sync_orgs && job.source.capabilities().orgs && job.sink.capabilities().orgs
}

/// Owned org fields, split into typed fields, parent ownership, and all-attrs.
fn org_fields(job: &Job) -> (Vec<String>, bool, bool) {
    let mut owned = job.mapping.orgs.owned_fields::<Org>();
    let parent = owned.iter().any(|f| f == "parent");
    let all_attrs = owned.iter().any(|f| f == "attrs.*");
    owned.retain(|f| f != "parent" && f != "attrs.*");
    (owned, parent, all_attrs)
}

fn org_patch(src: &Org, tgt: &Org, fields: &[String], all_attrs: bool) -> Patch {
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
fn topo_orgs(orgs: Vec<Org>) -> Vec<Org> {
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

struct OrgPlanner<'a> {
    links: &'a FxHashMap<Anchor, Anchor>,
    res: HashMap<Anchor, OrgRef>,
}

/// Where a source org is, borrowed.
enum Lookup<'a> {
    Target(&'a Anchor),
    Pending(usize),
    Unplaced,
}

impl OrgPlanner<'_> {
    fn lookup(&self, src: &Anchor) -> Lookup<'_> {
        match self.res.get(src) {
            Some(OrgRef::Target(t)) => Lookup::Target(t),
            Some(OrgRef::Pending(op, _)) => Lookup::Pending(*op),
            Some(OrgRef::Unresolved) => Lookup::Unplaced,
            None => match self.links.get(src) {
                Some(t) => Lookup::Target(t),
                None => Lookup::Unplaced,
            },
        }
    }

    fn resolve(&self, src: &Anchor) -> Option<OrgRef> {
        if let Some(r) = self.res.get(src) {
            return Some(r.clone());
        }
        self.links.get(src).map(|t| OrgRef::Target(t.clone()))
    }
}

/// Plan orgs. `full`: the source list is complete (deletions are detected).
fn plan_orgs<'a>(
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
        res: HashMap::new(),
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
    planner
}

/// A target account in the index.
struct TEntry {
    /// One hash per owned field, then one correlation key hash per rule (0: none).
    hashes: Box<[u64]>,
    /// Attribute hashes, when the mapping owns all attributes.
    attrs: Box<[(u32, u64)]>,
    status: Status,
    linked: bool,
    claimed: bool,
}

/// A source account that needs an op or a link.
struct Work {
    /// The linked target.
    target: Option<Anchor>,
    /// The mapped account, references translated to the target where known.
    acc: Account,
    /// Org references to orgs created by this plan.
    pending: Vec<PendingRef>,
    /// The source anchor of a manager not linked (yet).
    manager: Option<Anchor>,
}

struct AccPlanner<'a> {
    job: &'a Job,
    fields: Vec<AccField>,
    all_attrs: bool,
    own_status: bool,
    names: Names,
    /// source -> (target, seen in this run)
    links: FxHashMap<Anchor, (Anchor, bool)>,
    index: FxHashMap<Anchor, TEntry>,
    /// correlation key -> target anchors (unlinked targets only)
    keys: FxHashMap<u64, Vec<Anchor>>,
    /// unlinked source anchors seen (linked ones are marked in `links`)
    seen: FxHashSet<Anchor>,
    /// the correlation rules, parsed
    rules: Vec<Option<AccField>>,
    /// Source accounts that need an op or a link.
    work: Vec<Work>,
    source_count: usize,
}

impl<'a> AccPlanner<'a> {
    fn new(job: &'a Job, links: FxHashMap<Anchor, (Anchor, bool)>, with_orgs: bool) -> Self {
        let owned = job.mapping.accounts.owned_fields::<Account>();
        let mut fields = Vec::new();
        let mut all_attrs = false;
        let mut own_status = false;
        for f in &owned {
            match AccField::parse(f) {
                Some(AccField::AllAttrs) => all_attrs = true,
                Some(AccField::Orgs) if !with_orgs => {}
                Some(AccField::Status) => {
                    own_status = true;
                    fields.push(AccField::Status);
                }
                Some(af) => fields.push(af),
                None => {}
            }
        }
        AccPlanner {
            job,
            fields,
            all_attrs,
            own_status,
            names: Names::default(),
            links,
            index: FxHashMap::default(),
            keys: FxHashMap::default(),
            seen: FxHashSet::default(),
            rules: job.correlation.iter().map(|r| AccField::parse(r)).collect(),
            work: Vec::new(),
            source_count: 0,
        }
    }

    /// Index one target account (its fingerprint and correlation keys, not the record).
    fn add_target(&mut self, a: Account) {
        let nf = self.fields.len();
        let mut hashes = Vec::with_capacity(nf + self.rules.len());
        hashes.extend(self.fields.iter().map(|f| field_hash(&a, f)));
        for (i, rule) in self.rules.iter().enumerate() {
            let k = rule
                .as_ref()
                .and_then(|r| field_str(&a, r))
                .and_then(|v| key_hash(i, v));
            hashes.push(k.unwrap_or(0));
        }
        let attrs = if self.all_attrs {
            attr_hashes(&a, &mut self.names)
        } else {
            Box::new([])
        };
        self.index.insert(
            a.anchor,
            TEntry {
                hashes: hashes.into_boxed_slice(),
                attrs,
                status: a.status,
                linked: false,
                claimed: false,
            },
        );
    }

    /// After the targets are indexed: mark linked ones, and index correlation keys of the
    /// others.
    fn mark_links(&mut self) {
        for (t, _) in self.links.values() {
            if let Some(e) = self.index.get_mut(t) {
                e.linked = true;
            }
        }
        let nf = self.fields.len();
        self.keys.clear();
        for (anchor, e) in &self.index {
            if e.linked {
                continue;
            }
            for k in &e.hashes[nf..] {
                if *k != 0 {
                    let v = self.keys.entry(*k).or_default();
                    if !v.contains(anchor) {
                        v.push(anchor.clone());
                    }
                }
            }
        }
    }

    /// Translate a mapped source account's org references into target anchors.
    fn translate(
        &self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        mut a: Account,
    ) -> (Account, Vec<PendingRef>, Option<Anchor>) {
        let mut pending = Vec::new();
        if with_orgs {
            // In place: most references translate to an equal or already-linked anchor.
            let mut kept = 0usize;
            let anchor = &a.anchor;
            a.orgs.retain_mut(|o| match orgs.lookup(o) {
                Lookup::Target(t) => {
                    if t != o {
                        *o = t.clone();
                    }
                    kept += 1;
                    true
                }
                Lookup::Pending(op) => {
                    pending.push(PendingRef {
                        field: "orgs".into(),
                        index: kept,
                        op,
                    });
                    kept += 1;
                    true
                }
                Lookup::Unplaced => {
                    b.warn(format!(
                        "account {anchor} is in org {o} which is not synced; that membership is left out"
                    ));
                    false
                }
            });
        } else {
            a.orgs.clear();
        }
        // Manager: linked managers translate now; others are resolved after correlation.
        let mut unresolved = None;
        let linked_manager = a
            .manager
            .as_ref()
            .map(|m| self.links.get(m).map(|(t, _)| t));
        match linked_manager {
            Some(Some(t)) if a.manager.as_ref() != Some(t) => a.manager = Some(t.clone()),
            Some(Some(_)) | None => {}
            Some(None) => unresolved = a.manager.take(),
        }
        (a, pending, unresolved)
    }

    fn differs(&self, a: &Account, t: &Anchor) -> bool {
        let Some(entry) = self.index.get(t) else {
            return true;
        };
        if self
            .fields
            .iter()
            .zip(entry.hashes.iter())
            .any(|(f, h)| field_hash(a, f) != *h)
        {
            return true;
        }
        if self.all_attrs {
            if a.attrs.len() != entry.attrs.len() {
                return true;
            }
            let mut mine: Vec<(u32, u64)> = Vec::with_capacity(a.attrs.len());
            for (k, v) in &a.attrs {
                match self.names.get(k) {
                    Some(id) => mine.push((id, super::index::hash_value(v))),
                    None => return true,
                }
            }
            mine.sort_unstable();
            return mine[..] != entry.attrs[..];
        }
        false
    }

    fn observe(
        &mut self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        mapped: Account,
    ) -> Result<()> {
        self.source_count += 1;
        if mapped.anchor.is_empty() {
            return Err(Error::invalid_data(format!(
                "source account {:?} has an empty anchor",
                mapped.username
            )));
        }
        let duplicate = || {
            Error::invalid_data(format!(
                "source account anchor {} appears more than once",
                mapped.anchor
            ))
            .with_context("anchor", mapped.anchor.as_str())
        };
        let linked = match self.links.get_mut(&mapped.anchor) {
            Some((_, true)) => return Err(duplicate()),
            Some((t, seen)) => {
                *seen = true;
                Some(t.clone())
            }
            None => {
                if !self.seen.insert(mapped.anchor.clone()) {
                    return Err(duplicate());
                }
                None
            }
        };
        let (acc, pending, manager) = self.translate(b, orgs, with_orgs, mapped);
        let target = match linked {
            Some(t) if self.index.contains_key(&t) => {
                if pending.is_empty() && manager.is_none() && !self.differs(&acc, &t) {
                    return Ok(());
                }
                Some(t)
            }
            Some(t) => {
                b.stale.push(Link {
                    kind: EntityKind::Account,
                    source: acc.anchor.clone(),
                    target: t,
                });
                self.links.remove(&acc.anchor);
                None
            }
            None => None,
        };
        self.work.push(Work {
            target,
            acc,
            pending,
            manager,
        });
        Ok(())
    }

    /// Correlate, diff and plan every observed account; then deletions.
    async fn finish(
        mut self,
        b: &mut Builder,
        engine: &Engine,
        full: bool,
        explicit_deletes: &[(Anchor, Option<Status>)],
    ) -> Result<()> {
        self.work.sort_by(|x, y| x.acc.anchor.cmp(&y.acc.anchor));
        // Correlate unlinked accounts: first compute each one's match.
        let mut matches: Vec<Option<Anchor>> = vec![None; self.work.len()];
        let mut claims: HashMap<Anchor, Vec<usize>> = HashMap::new();
        let mut skip: HashSet<usize> = HashSet::new();
        for (i, w) in self.work.iter().enumerate() {
            let acc = &w.acc;
            if w.target.is_some() {
                continue;
            }
            for (ri, rule) in self.job.correlation.iter().enumerate() {
                let Some(v) = acc.get(rule).as_str().map(str::to_owned) else {
                    continue;
                };
                let Some(k) = key_hash(ri, &v) else { continue };
                let Some(cands) = self.keys.get(&k) else {
                    continue;
                };
                let free: Vec<Anchor> = cands
                    .iter()
                    .filter(|c| self.index.get(*c).is_some_and(|e| !e.linked && !e.claimed))
                    .cloned()
                    .collect();
                if free.len() == 1 {
                    claims.entry(free[0].clone()).or_default().push(i);
                    matches[i] = Some(free[0].clone());
                    break;
                } else if free.len() > 1 {
                    b.conflict(EntityKind::Account, &acc.anchor, free, rule);
                    skip.insert(i);
                    break;
                }
            }
        }
        for (t, who) in &claims {
            if who.len() > 1 {
                for i in who {
                    let src = self.work[*i].acc.anchor.clone();
                    b.conflict(
                        EntityKind::Account,
                        &src,
                        vec![t.clone()],
                        "several source accounts match one target",
                    );
                    skip.insert(*i);
                    matches[*i] = None;
                }
            } else if let Some(e) = self.index.get_mut(t) {
                e.claimed = true;
            }
        }
        // Targets: linked, or correlated now (their links count from here on).
        let mut targets: Vec<Option<Anchor>> = Vec::with_capacity(self.work.len());
        for (i, w) in self.work.iter().enumerate() {
            if skip.contains(&i) {
                targets.push(None);
                continue;
            }
            let target = w.target.clone().or_else(|| matches[i].clone());
            if w.target.is_none()
                && let Some(tg) = &target
            {
                self.links.insert(w.acc.anchor.clone(), (tg.clone(), true));
            }
            targets.push(target);
        }
        // Creates, managers before the people they manage, so that a create can carry
        // its manager. Manager cycles (and chains deeper than the phase range) get the
        // manager in a follow-up op.
        let manager_owned = self.fields.contains(&AccField::Manager);
        let to_create: HashMap<Anchor, usize> = self
            .work
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i) && targets[*i].is_none())
            .map(|(i, w)| (w.acc.anchor.clone(), i))
            .collect();
        // (phase depth, manager set by a follow-up op)
        let mut depth: HashMap<usize, (u32, bool)> = HashMap::new();
        let mut starts: Vec<usize> = to_create.values().copied().collect();
        starts.sort_unstable();
        for start in starts {
            let mut chain: Vec<usize> = Vec::new();
            let mut cur = Some(start);
            // depth of the node after the chain's last one, if known
            let mut next: Option<u32> = None;
            while let Some(i) = cur {
                if let Some((d, _)) = depth.get(&i) {
                    next = Some(*d);
                    break;
                }
                if let Some(k) = chain.iter().position(|c| *c == i) {
                    // chain[k..] is a cycle: created first, managers set afterwards
                    for c in chain.drain(k..) {
                        depth.insert(c, (0, true));
                    }
                    next = Some(0);
                    break;
                }
                chain.push(i);
                cur = self.work[i]
                    .manager
                    .as_ref()
                    .filter(|m| !self.links.contains_key(*m))
                    .and_then(|m| to_create.get(m).copied());
            }
            for c in chain.into_iter().rev() {
                let entry = match next {
                    None => (0, false),
                    Some(d) if d < MAX_MANAGER_DEPTH => (d + 1, false),
                    Some(_) => (0, true),
                };
                depth.insert(c, entry);
                next = Some(entry.0);
            }
        }
        let mut order: Vec<usize> = to_create.values().copied().collect();
        order.sort_by_key(|i| (depth.get(i).map(|d| d.0).unwrap_or(0), *i));
        let mut created: HashMap<Anchor, usize> = HashMap::new();
        let mut followup: HashSet<Anchor> = HashSet::new();
        for i in order {
            let w = &self.work[i];
            let mut new = w.acc.clone();
            let (d, late) = depth.get(&i).copied().unwrap_or((0, false));
            let mut pending = w.pending.clone();
            if !self.own_status {
                new.status = Status::Active;
            }
            if let Some(m) = &w.manager
                && manager_owned
            {
                if let Some((t, _)) = self.links.get(m) {
                    new.manager = Some(t.clone());
                } else if let (Some(op), false) = (created.get(m), late) {
                    new.manager = Some(m.clone());
                    pending.push(PendingRef {
                        field: "manager".into(),
                        index: 0,
                        op: *op,
                    });
                } else if to_create.contains_key(m) {
                    followup.insert(w.acc.anchor.clone());
                }
            }
            if !manager_owned {
                new.manager = None;
            }
            let id = b.push(
                ACC_CREATE + d,
                Op::CreateAccount { account: new },
                Some(w.acc.anchor.clone()),
                pending,
            );
            created.insert(w.acc.anchor.clone(), id);
        }
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
                if let Some((t, _)) = self.links.get(&m) {
                    acc.manager = Some(t.clone());
                } else if let Some(op) = created.get(&m) {
                    mgr_pending = Some(PendingRef {
                        field: "manager".into(),
                        index: 0,
                        op: *op,
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
            match &targets[i] {
                None => {
                    // created above; a follow-up op sets a manager in a cycle
                    if manager_owned
                        && acc.manager.is_some()
                        && followup.contains(&acc.anchor)
                        && let Some(own) = created.get(&acc.anchor)
                    {
                        let mut pend = vec![PendingRef {
                            field: "anchor".into(),
                            index: 0,
                            op: *own,
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
                Some(t) => {
                    let Some(entry) = self.index.get(t) else {
                        continue;
                    };
                    let src_attrs: Box<[(u32, u64)]> = if self.all_attrs {
                        attr_hashes(&acc, &mut self.names)
                    } else {
                        Box::new([])
                    };
                    let mut patch = Patch::new();
                    for (fi, f) in self.fields.iter().enumerate() {
                        if *f == AccField::Status {
                            continue;
                        }
                        let h = field_hash(&acc, f);
                        if entry.hashes.get(fi) != Some(&h)
                            || (*f == AccField::Manager && mgr_pending.is_some())
                        {
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
                            Status::Active => Op::EnableAccount { anchor: t.clone() },
                            Status::Disabled => Op::DisableAccount { anchor: t.clone() },
                        };
                        b.push(ACC_STATUS, op, Some(acc.anchor.clone()), vec![]);
                    }
                }
            }
        }
        // Deletions: linked targets whose source is gone.
        let mut gone: Vec<(Anchor, Anchor, Status)> = Vec::new();
        if full {
            for (s, (t, seen)) in &self.links {
                if !*seen {
                    match self.index.get(t) {
                        Some(e) => gone.push((s.clone(), t.clone(), e.status)),
                        None => b.stale.push(Link {
                            kind: EntityKind::Account,
                            source: s.clone(),
                            target: t.clone(),
                        }),
                    }
                }
            }
            if self.job.authoritative {
                for (t, e) in &self.index {
                    if !e.linked && !e.claimed {
                        gone.push((Anchor::default(), t.clone(), e.status));
                    }
                }
            }
        } else {
            for (s, status) in explicit_deletes {
                if let Some((t, _)) = self.links.get(s)
                    && let Some(st) = status
                {
                    gone.push((s.clone(), t.clone(), *st));
                }
            }
        }
        gone.sort();
        let can_disable = self.job.sink.capabilities().disable;
        let can_delete = self.job.sink.capabilities().delete;
        let mut policy = self.job.deletion;
        if !can_disable && !gone.is_empty() {
            match policy {
                DeletionPolicy::Disable => {
                    b.warn(format!(
                        "the sink cannot disable accounts; {} accounts gone from the source are left as they are (use the delete policy to remove them)",
                        gone.len()
                    ));
                    policy = DeletionPolicy::Ignore;
                }
                DeletionPolicy::DisableThenDelete { .. } if can_delete => {
                    b.warn(
                        "the sink cannot disable accounts; accounts gone from the source are deleted at once",
                    );
                    policy = DeletionPolicy::Delete;
                }
                _ => {}
            }
        }
        for (s, t, status) in gone {
            let src = (!s.is_empty()).then_some(s);
            match policy {
                DeletionPolicy::Ignore => {}
                DeletionPolicy::Disable => {
                    if status == Status::Active {
                        b.push(ACC_STATUS, Op::DisableAccount { anchor: t }, src, vec![]);
                    }
                }
                DeletionPolicy::Delete => {
                    b.push(ACC_DELETE, Op::DeleteAccount { anchor: t }, src, vec![]);
                }
                DeletionPolicy::DisableThenDelete { retention } => {
                    if status == Status::Active {
                        b.push(ACC_STATUS, Op::DisableAccount { anchor: t }, src, vec![]);
                    } else if disabled_longer_than(engine, &self.job.name, &t, retention).await? {
                        b.push(ACC_DELETE, Op::DeleteAccount { anchor: t }, src, vec![]);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether this job disabled the account more than `retention` ago (per the audit trail).
async fn disabled_longer_than(
    engine: &Engine,
    job: &str,
    target: &Anchor,
    retention: std::time::Duration,
) -> Result<bool> {
    let trail = engine.store.audit(EntityKind::Account, target).await?;
    let last_disable = trail
        .iter()
        .rev()
        .find(|a| a.job == job && a.op == "disable_account");
    let Some(entry) = last_disable else {
        return Ok(false);
    };
    let retention = chrono::Duration::from_std(retention)
        .map_err(|_| Error::config("retention out of range"))?;
    Ok(engine.clock.now() - entry.at > retention)
}

fn apply_guard(job: &Job, plan: &mut Plan, target_accounts: usize, target_orgs: usize) {
    let mut reasons = Vec::new();
    let destructive = plan.count("disable_account") + plan.count("delete_account");
    if let Some(r) = job
        .guard
        .destructive_accounts
        .crossed(destructive, target_accounts)
    {
        reasons.push(format!("accounts disabled or deleted: {r}"));
    }
    if let Some(r) = job
        .guard
        .org_deletes
        .crossed(plan.count("delete_org"), target_orgs)
    {
        reasons.push(format!("orgs deleted: {r}"));
    }
    for (name, th) in &job.guard.per_op {
        let total = if name.ends_with("_org") {
            target_orgs
        } else {
            target_accounts
        };
        if let Some(r) = th.crossed(plan.count(name), total) {
            reasons.push(format!("{name}: {r}"));
        }
    }
    plan.guard = GuardVerdict {
        stopped: !reasons.is_empty(),
        reasons,
    };
}

fn map_orgs(job: &Job, orgs: Vec<Org>) -> Result<Vec<Org>> {
    let mut out = Vec::with_capacity(orgs.len());
    for o in orgs {
        if let Some(m) = job.mapping.map_org(&o)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// Plan a full run: read both sides completely, then diff.
pub(crate) async fn plan_full(engine: &Engine, job: &Job, run_id: &str) -> Result<Plan> {
    let with_orgs = sync_orgs(job);
    let org_links = load_links(engine, &job.name, EntityKind::Org, |t| t).await?;
    let acc_links = load_links(engine, &job.name, EntityKind::Account, |t| (t, false)).await?;
    let mut b = Builder::new();
    let mut read = BTreeMap::new();

    // Orgs: few enough to hold whole.
    let (source_orgs, target_orgs) = if with_orgs {
        let s: Vec<Org> = job
            .source
            .org_stream(job.page_size)
            .try_collect()
            .await
            .map_err(|e| read_err("source", "orgs", e))?;
        let t: Vec<Org> = target_orgs(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "orgs", e))?;
        (s, t)
    } else {
        (Vec::new(), Vec::new())
    };
    read.insert("source_orgs".to_owned(), source_orgs.len());
    read.insert("target_orgs".to_owned(), target_orgs.len());
    let source_orgs = map_orgs(job, source_orgs)?;
    let problems: Vec<_> = crate::model::check(&source_orgs, &[])
        .into_iter()
        .filter(|p| p.kind != ProblemKind::UnknownManager)
        .collect();
    crate::model::problems_to_result(&problems)?;
    if with_orgs && source_orgs.is_empty() && !org_links.is_empty() && !job.allow_empty_source {
        return Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "the source listed no orgs, but {} orgs are linked to it; refusing to treat that as 'all deleted'",
                org_links.len()
            ),
        ));
    }
    let target_org_count = target_orgs.len();
    let orgs = plan_orgs(
        &mut b,
        job,
        source_orgs,
        &target_orgs,
        &org_links,
        true,
        &[],
    );
    drop(target_orgs);

    // Accounts: the target is indexed by fingerprints, the source streamed.
    let mut ap = AccPlanner::new(job, acc_links, with_orgs);
    {
        let mut t = target_accounts(engine, job);
        while let Some(a) = t
            .try_next()
            .await
            .map_err(|e| read_err("target", "accounts", e))?
        {
            ap.add_target(a);
        }
    }
    ap.mark_links();
    let target_count = ap.index.len();
    read.insert("target_accounts".to_owned(), target_count);
    {
        let mut s = job.source.account_stream(job.page_size);
        while let Some(a) = s
            .try_next()
            .await
            .map_err(|e| read_err("source", "accounts", e))?
        {
            if let Some(m) = job.mapping.map_account_owned(a)? {
                ap.observe(&mut b, &orgs, with_orgs, m)?;
            } else {
                ap.source_count += 1;
            }
        }
    }
    read.insert("source_accounts".to_owned(), ap.source_count);
    if ap.source_count == 0 && !ap.links.is_empty() && !job.allow_empty_source {
        return Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "the source listed no accounts, but {} accounts are linked to it; refusing to treat that as 'everyone left'",
                ap.links.len()
            ),
        ));
    }
    let links_count = ap.links.len();
    ap.finish(&mut b, engine, true, &[]).await?;
    let mut plan = b.finish(job, run_id, false, read);
    apply_guard(
        job,
        &mut plan,
        target_count.max(links_count),
        target_org_count,
    );
    Ok(plan)
}

/// Plan a change set: only the changed entities are read on the target side.
pub(crate) async fn plan_changes(
    engine: &Engine,
    job: &Job,
    run_id: &str,
    cs: ChangeSet,
) -> Result<Plan> {
    let with_orgs = sync_orgs(job);
    let org_links = load_links(engine, &job.name, EntityKind::Org, |t| t).await?;
    let acc_links = load_links(engine, &job.name, EntityKind::Account, |t| (t, false)).await?;
    let mut b = Builder::new();
    let mut read = BTreeMap::new();
    let touches_orgs = with_orgs && (!cs.org_upserts.is_empty() || !cs.org_deletes.is_empty());
    let target_orgs: Vec<Org> = if touches_orgs {
        target_orgs(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "orgs", e))?
    } else {
        Vec::new()
    };
    read.insert("source_orgs".to_owned(), cs.org_upserts.len());
    read.insert("target_orgs".to_owned(), target_orgs.len());
    let source_orgs = if with_orgs {
        map_orgs(job, cs.org_upserts)?
    } else {
        Vec::new()
    };
    let orgs = plan_orgs(
        &mut b,
        job,
        source_orgs,
        &target_orgs,
        &org_links,
        false,
        &cs.org_deletes,
    );

    // Target accounts: the linked ones of the changed entities, plus correlation
    // candidates of unlinked ones.
    let mut ap = AccPlanner::new(job, acc_links, with_orgs);
    let readable = job.sink.capabilities().readable;
    let mut shadow: Option<HashMap<Anchor, Account>> = None;
    if !readable {
        let all: Vec<Account> = target_accounts(engine, job)
            .try_collect()
            .await
            .map_err(|e| read_err("target", "accounts", e))?;
        shadow = Some(all.into_iter().map(|a| (a.anchor.clone(), a)).collect());
    }
    let fetch = |t: Anchor| {
        let shadow = &shadow;
        async move {
            match shadow {
                Some(s) => Ok(s.get(&t).cloned()),
                None => job.sink.account(&t).await,
            }
        }
    };
    let mut mapped_upserts = Vec::new();
    for a in cs.account_upserts {
        if let Some(m) = job.mapping.map_account(&a)? {
            mapped_upserts.push(m);
        }
    }
    let mut explicit_deletes = Vec::new();
    for s in &cs.account_deletes {
        let status = match ap.links.get(s) {
            Some((t, _)) => {
                let t = t.clone();
                let found = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?;
                let status = found.as_ref().map(|a| a.status);
                if let Some(a) = found {
                    ap.add_target(a);
                }
                status
            }
            None => None,
        };
        explicit_deletes.push((s.clone(), status));
    }
    for m in &mapped_upserts {
        if let Some((t, _)) = ap.links.get(&m.anchor) {
            let t = t.clone();
            if !ap.index.contains_key(&t)
                && let Some(a) = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(a);
            }
        } else {
            for rule in &job.correlation {
                let Some(v) = m.get(rule).as_str().map(str::to_owned) else {
                    continue;
                };
                if v.trim().is_empty() {
                    continue;
                }
                let found = match &shadow {
                    Some(s) => s
                        .values()
                        .filter(|a| {
                            a.get(rule)
                                .as_str()
                                .is_some_and(|x| x.trim().eq_ignore_ascii_case(v.trim()))
                        })
                        .cloned()
                        .collect(),
                    None => job
                        .sink
                        .find_accounts(rule, &v)
                        .await
                        .map_err(|e| read_err("target", "accounts", e))?,
                };
                for a in found {
                    if !ap.index.contains_key(&a.anchor) {
                        ap.add_target(a);
                    }
                }
            }
        }
        // A manager linked to a target is translated by `translate`; make sure that target
        // counts as known.
        if let Some(mg) = &m.manager
            && let Some((t, _)) = ap.links.get(mg)
            && !ap.index.contains_key(t)
        {
            let t = t.clone();
            if let Some(a) = fetch(t)
                .await
                .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(a);
            }
        }
    }
    ap.mark_links();
    read.insert("source_accounts".to_owned(), mapped_upserts.len());
    read.insert("target_accounts".to_owned(), ap.index.len());
    for m in mapped_upserts {
        ap.observe(&mut b, &orgs, with_orgs, m)?;
    }
    let total = ap.links.len().max(ap.index.len());
    ap.finish(&mut b, engine, false, &explicit_deletes).await?;
    let mut plan = b.finish(job, run_id, true, read);
    apply_guard(
        job,
        &mut plan,
        total,
        org_links.len().max(target_orgs.len()),
    );
    Ok(plan)
}

/// Intents of earlier crashed runs of this job that created `proposed` for `source`.
pub(crate) async fn crashed_create(
    engine: &Engine,
    job: &str,
    source: Option<&Anchor>,
    proposed: &Anchor,
) -> Result<bool> {
    let open = engine.store.open_intents(job).await?;
    Ok(open.iter().any(|e| {
        e.state == JournalState::Intent
            && e.op.is_create()
            && e.op.anchor() == proposed
            && e.source_anchor.as_ref() == source
    }))
}
