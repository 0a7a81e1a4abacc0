//! Planning: correlate and diff the two sides into an ordered, serializable [`Plan`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use rustc_hash::{FxHashMap, FxHashSet};

use super::index::{AccField, Interner, NONE, Names, attr_hashes, field_hash, field_str, key_hash};
use super::{DeletionPolicy, Engine, GuardVerdict, Job};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Account, Anchor, Entity, EntityKind, Org, ProblemKind, Status};
use crate::source::{ChangeSet, Op, PageRequest, Patch, Source, SourceExt, SyncCursor};
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
        // In place (a plan of a million creates is large): the old id breaks ties, so the
        // order is total and the same on every run.
        let mut ops = std::mem::take(&mut self.ops);
        ops.sort_unstable_by(|x, y| {
            x.phase
                .cmp(&y.phase)
                .then_with(|| x.op.name().cmp(y.op.name()))
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

fn shadow_stream<T: serde::de::DeserializeOwned + Send + 'static>(
    engine: &Engine,
    job: &str,
    kind: EntityKind,
) -> BoxStream<'static, Result<T>> {
    let store = engine.store.clone();
    let job = job.to_owned();
    crate::source::paged(
        Some(1000),
        move |req| {
            let store = store.clone();
            let job = job.clone();
            async move { store.shadow(&job, kind, req).await }
        },
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

/// The target's accounts (the sink's listing, or the shadow copies of a sink that cannot
/// be read), as a stream that owns what it reads from.
fn target_accounts(engine: &Engine, job: &Job) -> BoxStream<'static, Result<Account>> {
    if job.sink.capabilities().readable {
        owned_accounts(job.sink.clone(), job.page_size)
    } else {
        shadow_stream(engine, &job.name, EntityKind::Account)
    }
}

/// All accounts of a source, as a stream that owns the source (`'static`, so that a task
/// of its own can read it).
fn owned_accounts<S: Source + ?Sized + 'static>(
    src: Arc<S>,
    page_size: Option<usize>,
) -> BoxStream<'static, Result<Account>> {
    crate::source::paged(
        page_size,
        move |req| {
            let src = src.clone();
            async move { src.accounts(req).await }
        },
        "accounts",
    )
}

/// The accounts a planner takes at once: enough for the lookups of a batch to overlap.
const BATCH: usize = 256;

/// A stream of items as batches of up to [`BATCH`].
fn batches<T: Send + 'static>(s: BoxStream<'_, Result<T>>) -> BoxStream<'_, Result<Vec<T>>> {
    s.try_chunks(BATCH).map_err(|e| e.1).boxed()
}

/// What a read-ahead task sends.
enum Ahead<T> {
    Batch(Vec<T>),
    Failed(Error),
    End,
}

/// Aborts the read-ahead task when the planner stops early (an error, a dropped future).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the planner hands back items it is done with: to the read-ahead task, which
/// frees them on its own core (freeing is a good part of a million accounts' cost, and
/// an allocator frees fastest on the thread that allocated).
struct Spent<T>(Option<tokio::sync::mpsc::UnboundedSender<Vec<T>>>);

impl<T> Spent<T> {
    fn give(&self, items: Vec<T>) {
        if let Some(tx) = &self.0 {
            // Once the task has ended, the items are freed here.
            let _ = tx.send(items);
        }
    }
}

/// Batches of a listing read by a task of their own, a few batches ahead of the planner,
/// so that reading (the provider's I/O, decoding, copying) and planning use two cores;
/// the task also frees what the planner hands back through [`Spent`].
/// The listing counts as complete only when the task says it ended: a task that stops
/// otherwise (a panic in an adapter, the runtime shutting down) is an incomplete read.
/// Outside a tokio runtime the listing is read inline.
fn read_ahead<T: Send + 'static>(
    listing: BoxStream<'static, Result<T>>,
) -> (BoxStream<'static, Result<Vec<T>>>, Spent<T>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return (batches(listing), Spent(None));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Ahead<T>>(4);
    let (spent_tx, mut spent_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<T>>();
    let task = rt.spawn(async move {
        let mut s = batches(listing);
        loop {
            while let Ok(items) = spent_rx.try_recv() {
                drop(items);
            }
            let msg = match s.next().await {
                Some(Ok(batch)) => Ahead::Batch(batch),
                Some(Err(e)) => Ahead::Failed(e),
                None => Ahead::End,
            };
            let last = !matches!(msg, Ahead::Batch(_));
            // Free what comes back while waiting for room in the channel.
            let permit = loop {
                tokio::select! {
                    biased;
                    permit = tx.reserve() => break permit,
                    Some(items) = spent_rx.recv() => drop(items),
                }
            };
            match permit {
                Ok(permit) => permit.send(msg),
                Err(_) => return,
            }
            if last {
                return;
            }
        }
    });
    let state = (rx, AbortOnDrop(task), false);
    let stream = futures::stream::unfold(state, |(mut rx, task, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Ahead::Batch(b)) => Some((Ok(b), (rx, task, false))),
            Some(Ahead::Failed(e)) => Some((Err(e), (rx, task, true))),
            Some(Ahead::End) => None,
            None => Some((
                Err(Error::new(
                    ErrorKind::Incomplete,
                    "the listing stopped before its end (its reading task ended)",
                )),
                (rx, task, true),
            )),
        }
    })
    .boxed();
    (stream, Spent(Some(spent_tx)))
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
    res: FxHashMap<Anchor, OrgRef>,
    /// After planning ([`seal`](Self::seal)): where each source org went, by interned
    /// anchor, for the account planner's lookups (one per membership).
    sealed: Interner,
    places: Vec<Place>,
    targets: Vec<Anchor>,
}

/// Where a source org went, in the sealed table.
#[derive(Clone, Copy)]
enum Place {
    /// The target org with the same anchor.
    Same,
    /// A target org with another anchor (an index into `OrgPlanner::targets`).
    Target(usize),
    /// Created by this op of the plan.
    Pending(usize),
    Unplaced,
}

/// Where a source org is, borrowed.
enum Lookup<'a> {
    /// The target org with the same anchor.
    Same,
    Target(&'a Anchor),
    Pending(usize),
    Unplaced,
}

impl OrgPlanner<'_> {
    /// Build the lookup table of every linked or planned source org.
    fn seal(&mut self) {
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
    fn warm<'b>(&self, refs: impl Iterator<Item = &'b Anchor> + Clone) {
        for o in refs.clone() {
            self.sealed.peek(Interner::hash(o.as_str()));
        }
        for o in refs {
            self.sealed.touch(Interner::hash(o.as_str()));
        }
    }

    fn lookup(&self, src: &Anchor) -> Lookup<'_> {
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

/// A target account in the index (its field hashes live in `AccPlanner::hashes`).
struct TEntry {
    /// The target's anchor id.
    id: u32,
    /// Attribute hashes, when the mapping owns all attributes.
    attrs: Box<[(u32, u64)]>,
    status: Status,
    linked: bool,
    claimed: bool,
}

/// What the planner knows of one anchor id (as a source anchor and as a target anchor).
#[derive(Clone, Copy)]
struct IdState {
    /// As a source: the linked target's id, or [`NONE`].
    link: u32,
    /// As a target: its entry in the index, or [`NONE`].
    slot: u32,
    /// As a source: listed in this run.
    seen: bool,
    /// As a target: a link of this job points to it.
    link_target: bool,
}

const FRESH: IdState = IdState {
    link: NONE,
    slot: NONE,
    seen: false,
    link_target: false,
};

/// A source account that needs an op or a link.
struct Work {
    /// The source anchor's id.
    sid: u32,
    /// The linked target's anchor id.
    target: Option<u32>,
    /// The mapped account, references translated to the target where known.
    acc: Account,
    /// Org references to orgs created by this plan.
    pending: Vec<PendingRef>,
    /// The source anchor of a manager not linked (yet).
    manager: Option<Anchor>,
}

/// Plans accounts. Anchors of both sides are interned ([`Interner`]); links, the target
/// index and the seen marks are flat tables indexed by anchor id, and a target account
/// is kept as a row of field hashes, never as a record.
struct AccPlanner<'a> {
    job: &'a Job,
    fields: Vec<AccField>,
    all_attrs: bool,
    own_status: bool,
    names: Names,
    ids: Interner,
    state: Vec<IdState>,
    /// Links in `state`.
    n_links: usize,
    entries: Vec<TEntry>,
    /// `stride` hashes per entry: one per owned field, then one correlation key per rule
    /// (0: none).
    hashes: Vec<u64>,
    stride: usize,
    /// Correlation key -> the newest (entry, rule) slot with it (unlinked targets only);
    /// older slots with the same key are chained through `key_next`.
    keys: FxHashMap<u64, u32>,
    key_next: Vec<u32>,
    /// the correlation rules, parsed
    rules: Vec<Option<AccField>>,
    /// Source accounts that need an op or a link.
    work: Vec<Work>,
    source_count: usize,
}

fn too_many() -> Error {
    Error::invalid_data("more than 4,294,967,294 distinct account anchors in one plan")
}

impl<'a> AccPlanner<'a> {
    fn new(job: &'a Job, with_orgs: bool) -> Self {
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
        let rules: Vec<Option<AccField>> =
            job.correlation.iter().map(|r| AccField::parse(r)).collect();
        AccPlanner {
            job,
            stride: fields.len() + rules.len(),
            fields,
            all_attrs,
            own_status,
            names: Names::default(),
            ids: Interner::default(),
            state: Vec::new(),
            n_links: 0,
            entries: Vec::new(),
            hashes: Vec::new(),
            keys: FxHashMap::default(),
            key_next: Vec::new(),
            rules,
            work: Vec::new(),
            source_count: 0,
        }
    }

    /// Hash a batch of anchors and warm their table slots (see [`Interner`]); 0 for none.
    fn warm<'b>(&self, anchors: impl Iterator<Item = Option<&'b str>>) -> Vec<u64> {
        anchors
            .map(|a| match a {
                Some(a) => {
                    let h = Interner::hash(a);
                    self.ids.peek(h);
                    h
                }
                None => 0,
            })
            .collect()
    }

    /// The id of an anchor (hash `h`), interned.
    fn intern_at(&mut self, h: u64, a: &str) -> Result<u32> {
        let id = self.ids.intern_at(h, a).ok_or_else(too_many)?;
        if id as usize >= self.state.len() {
            self.state.resize(id as usize + 1, FRESH);
        }
        Ok(id)
    }

    fn st(&self, id: u32) -> IdState {
        self.state.get(id as usize).copied().unwrap_or(FRESH)
    }

    fn st_mut(&mut self, id: u32) -> Option<&mut IdState> {
        self.state.get_mut(id as usize)
    }

    fn anchor(&self, id: u32) -> Anchor {
        Anchor::new(self.ids.resolve(id))
    }

    /// The target linked to a source anchor.
    fn link_of(&self, source: &Anchor) -> Option<u32> {
        self.link_of_at(Interner::hash(source.as_str()), source)
    }

    /// [`link_of`](Self::link_of) with the anchor's hash computed.
    fn link_of_at(&self, h: u64, source: &Anchor) -> Option<u32> {
        let id = self.ids.get_at(h, source.as_str())?;
        Some(self.st(id).link).filter(|t| *t != NONE)
    }

    /// The target linked to a source anchor, as an anchor.
    fn linked_target(&self, source: &Anchor) -> Option<Anchor> {
        self.link_of(source).map(|t| self.anchor(t))
    }

    fn set_link(&mut self, source: u32, target: u32) {
        if let Some(t) = self.st_mut(target) {
            t.link_target = true;
        }
        let Some(s) = self.st_mut(source) else { return };
        let had = s.link != NONE;
        s.link = target;
        match (had, target != NONE) {
            (false, true) => self.n_links += 1,
            (true, false) => self.n_links -= 1,
            _ => {}
        }
    }

    /// Make room in the index for `n` more target accounts.
    fn reserve_targets(&mut self, n: usize) {
        self.entries.reserve(n);
        self.hashes.reserve(n.saturating_mul(self.stride));
    }

    /// Whether a target account is in the index.
    fn has_target(&self, t: &Anchor) -> bool {
        self.ids
            .get(t.as_str())
            .is_some_and(|id| self.st(id).slot != NONE)
    }

    fn entry(&self, target: u32) -> Option<(&TEntry, &[u64])> {
        let slot = self.st(target).slot;
        let e = self.entries.get(slot as usize)?;
        let at = slot as usize * self.stride;
        Some((e, self.hashes.get(at..at + self.stride)?))
    }

    /// Load this job's account links from the store.
    async fn load_links(&mut self, engine: &Engine) -> Result<()> {
        let mut req = PageRequest::sized(10_000);
        loop {
            let page = engine
                .store
                .links(&self.job.name, EntityKind::Account, req.clone())
                .await?;
            for chunk in page.items.chunks(BATCH) {
                let hs = self.warm(chunk.iter().map(|l| Some(l.source.as_str())));
                let ht = self.warm(
                    chunk
                        .iter()
                        .map(|l| (l.target != l.source).then_some(l.target.as_str())),
                );
                for ((l, hs), ht) in chunk.iter().zip(hs).zip(ht) {
                    let s = self.intern_at(hs, l.source.as_str())?;
                    let t = match l.target == l.source {
                        true => s,
                        false => self.intern_at(ht, l.target.as_str())?,
                    };
                    self.set_link(s, t);
                }
            }
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// Index one target account (its fingerprint and correlation keys, not the record).
    fn add_target(&mut self, a: &Account) -> Result<()> {
        self.add_target_at(Interner::hash(a.anchor.as_str()), a)
    }

    /// Index a batch of target accounts.
    fn add_targets(&mut self, batch: &[Account]) -> Result<()> {
        let hs = self.warm(batch.iter().map(|a| Some(a.anchor.as_str())));
        for (a, h) in batch.iter().zip(hs) {
            self.add_target_at(h, a)?;
        }
        Ok(())
    }

    /// [`add_target`](Self::add_target) with the anchor's hash computed.
    fn add_target_at(&mut self, h: u64, a: &Account) -> Result<()> {
        let id = self.intern_at(h, a.anchor.as_str())?;
        let slot = match self.st(id).slot {
            NONE => {
                let slot = u32::try_from(self.entries.len()).map_err(|_| too_many())?;
                self.entries.push(TEntry {
                    id,
                    attrs: Box::new([]),
                    status: a.status,
                    linked: false,
                    claimed: false,
                });
                self.hashes.resize(self.hashes.len() + self.stride, 0);
                if let Some(s) = self.st_mut(id) {
                    s.slot = slot;
                }
                slot
            }
            // Listed twice: the later listing wins.
            slot => slot,
        };
        let at = slot as usize * self.stride;
        let row = self
            .hashes
            .get_mut(at..at + self.stride)
            .ok_or_else(|| Error::unexpected("planner index out of step"))?;
        let nf = self.fields.len();
        for (h, f) in row.iter_mut().zip(&self.fields) {
            *h = field_hash(a, f);
        }
        // Correlation keys serve unlinked targets only; a link's target keeps none.
        let link_target = self.state.get(id as usize).is_some_and(|s| s.link_target);
        for (i, (h, rule)) in row[nf..].iter_mut().zip(&self.rules).enumerate() {
            *h = rule
                .as_ref()
                .filter(|_| !link_target)
                .and_then(|r| field_str(a, r))
                .and_then(|v| key_hash(i, v))
                .unwrap_or(0);
        }
        let attrs = if self.all_attrs {
            attr_hashes(a, &mut self.names)
        } else {
            Box::new([])
        };
        if let Some(e) = self.entries.get_mut(slot as usize) {
            e.attrs = attrs;
            e.status = a.status;
        }
        Ok(())
    }

    /// After the targets are indexed: mark linked ones, and index correlation keys of the
    /// others.
    fn mark_links(&mut self) {
        for i in 0..self.state.len() {
            let t = self.state[i].link;
            if t == NONE {
                continue;
            }
            let slot = self.st(t).slot;
            if let Some(e) = self.entries.get_mut(slot as usize) {
                e.linked = true;
            }
        }
        let nf = self.fields.len();
        let nr = self.rules.len();
        self.keys.clear();
        self.key_next = vec![NONE; self.entries.len() * nr];
        for (slot, e) in self.entries.iter().enumerate() {
            if e.linked {
                continue;
            }
            let row = &self.hashes[slot * self.stride + nf..(slot + 1) * self.stride];
            for (rule, k) in row.iter().enumerate() {
                if *k != 0 {
                    let ks = (slot * nr + rule) as u32;
                    let older = self.keys.insert(*k, ks).unwrap_or(NONE);
                    self.key_next[ks as usize] = older;
                }
            }
        }
    }

    /// Unlinked, unclaimed targets whose correlation key `k` (of `rule`) matches, in
    /// anchor order.
    fn candidates(&self, k: u64) -> Vec<u32> {
        let nr = self.rules.len().max(1);
        let mut out = Vec::new();
        let mut ks = self.keys.get(&k).copied().unwrap_or(NONE);
        while ks != NONE {
            let slot = ks as usize / nr;
            if let Some(e) = self.entries.get(slot)
                && !e.linked
                && !e.claimed
                && !out.contains(&e.id)
            {
                out.push(e.id);
            }
            ks = self.key_next.get(ks as usize).copied().unwrap_or(NONE);
        }
        out.sort_by(|a, b| self.ids.resolve(*a).cmp(self.ids.resolve(*b)));
        out
    }

    /// Translate a mapped source account's org references into target anchors (`hm`:
    /// the hash of its manager's anchor).
    fn translate(
        &self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        a: &mut Account,
        hm: u64,
    ) -> (Vec<PendingRef>, Option<Anchor>) {
        let mut pending = Vec::new();
        if with_orgs {
            // In place: most references translate to an equal or already-linked anchor.
            let mut kept = 0usize;
            let anchor = &a.anchor;
            a.orgs.retain_mut(|o| match orgs.lookup(o) {
                Lookup::Same => {
                    kept += 1;
                    true
                }
                Lookup::Target(t) => {
                    *o = t.clone();
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
        if let Some(m) = &a.manager {
            match self.link_of_at(hm, m) {
                Some(t) => {
                    let t = self.ids.resolve(t);
                    if t != m.as_str() {
                        a.manager = Some(Anchor::new(t));
                    }
                }
                None => unresolved = a.manager.take(),
            }
        }
        (pending, unresolved)
    }

    fn differs(&self, a: &Account, t: u32) -> bool {
        let Some((entry, row)) = self.entry(t) else {
            return true;
        };
        if self
            .fields
            .iter()
            .zip(row)
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

    /// Observe a batch of mapped source accounts; the accounts that need nothing are
    /// given back.
    fn observe_batch(
        &mut self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        batch: Vec<Account>,
    ) -> Result<Vec<Account>> {
        let ha = self.warm(batch.iter().map(|a| Some(a.anchor.as_str())));
        let hm = self.warm(batch.iter().map(|a| a.manager.as_ref().map(Anchor::as_str)));
        if with_orgs {
            orgs.warm(batch.iter().flat_map(|a| &a.orgs));
        }
        let mut spent = Vec::with_capacity(batch.len());
        for ((a, ha), hm) in batch.into_iter().zip(ha).zip(hm) {
            spent.extend(self.observe(b, orgs, with_orgs, a, (ha, hm))?);
        }
        Ok(spent)
    }

    /// Observe one mapped source account (`(ha, hm)`: the hashes of its anchor and its
    /// manager's); the account comes back when it needs nothing.
    fn observe(
        &mut self,
        b: &mut Builder,
        orgs: &OrgPlanner<'_>,
        with_orgs: bool,
        mut mapped: Account,
        (ha, hm): (u64, u64),
    ) -> Result<Option<Account>> {
        self.source_count += 1;
        if mapped.anchor.is_empty() {
            return Err(Error::invalid_data(format!(
                "source account {:?} has an empty anchor",
                mapped.username
            )));
        }
        let sid = self.intern_at(ha, mapped.anchor.as_str())?;
        let st = self.st(sid);
        if st.seen {
            return Err(Error::invalid_data(format!(
                "source account anchor {} appears more than once",
                mapped.anchor
            ))
            .with_context("anchor", mapped.anchor.as_str()));
        }
        if let Some(s) = self.st_mut(sid) {
            s.seen = true;
        }
        let (pending, manager) = self.translate(b, orgs, with_orgs, &mut mapped, hm);
        let acc = mapped;
        let target = match st.link {
            NONE => None,
            t if self.st(t).slot != NONE => {
                if pending.is_empty() && manager.is_none() && !self.differs(&acc, t) {
                    return Ok(Some(acc));
                }
                Some(t)
            }
            t => {
                b.stale.push(Link {
                    kind: EntityKind::Account,
                    source: acc.anchor.clone(),
                    target: self.anchor(t),
                });
                self.set_link(sid, NONE);
                None
            }
        };
        self.work.push(Work {
            sid,
            target,
            acc,
            pending,
            manager,
        });
        Ok(None)
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
        let mut matches: Vec<Option<u32>> = vec![None; self.work.len()];
        let mut claims: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
        let mut skip: FxHashSet<usize> = FxHashSet::default();
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
                let free = self.candidates(k);
                if free.len() == 1 {
                    claims.entry(free[0]).or_default().push(i);
                    matches[i] = Some(free[0]);
                    break;
                } else if free.len() > 1 {
                    let free = free.into_iter().map(|t| self.anchor(t)).collect();
                    b.conflict(EntityKind::Account, &acc.anchor, free, rule);
                    skip.insert(i);
                    break;
                }
            }
        }
        let mut claims: Vec<(u32, Vec<usize>)> = claims.into_iter().collect();
        claims.sort_by(|x, y| self.ids.resolve(x.0).cmp(self.ids.resolve(y.0)));
        for (t, who) in &claims {
            if who.len() > 1 {
                for i in who {
                    let src = self.work[*i].acc.anchor.clone();
                    b.conflict(
                        EntityKind::Account,
                        &src,
                        vec![self.anchor(*t)],
                        "several source accounts match one target",
                    );
                    skip.insert(*i);
                    matches[*i] = None;
                }
            } else {
                let slot = self.st(*t).slot;
                if let Some(e) = self.entries.get_mut(slot as usize) {
                    e.claimed = true;
                }
            }
        }
        // Targets: linked, or correlated now (their links count from here on).
        let mut targets: Vec<Option<u32>> = Vec::with_capacity(self.work.len());
        let mut new_links: Vec<(u32, u32)> = Vec::new();
        for (i, (w, matched)) in self.work.iter().zip(&matches).enumerate() {
            if skip.contains(&i) {
                targets.push(None);
                continue;
            }
            let target = w.target.or(*matched);
            if w.target.is_none()
                && let Some(tg) = target
            {
                new_links.push((w.sid, tg));
            }
            targets.push(target);
        }
        for (source, target) in new_links {
            self.set_link(source, target);
        }
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
                let manager_op = create_of(&self.ids, &m).and_then(|c| created[c]);
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
        // Deletions: linked targets whose source is gone.
        let mut gone: Vec<(Anchor, Anchor, Status)> = Vec::new();
        if full {
            for (s, st) in self.state.iter().enumerate() {
                if st.link == NONE || st.seen {
                    continue;
                }
                let source = self.anchor(s as u32);
                let target = self.anchor(st.link);
                match self.entries.get(self.st(st.link).slot as usize) {
                    Some(e) => gone.push((source, target, e.status)),
                    None => b.stale.push(Link {
                        kind: EntityKind::Account,
                        source,
                        target,
                    }),
                }
            }
            if self.job.authoritative {
                for e in &self.entries {
                    if !e.linked && !e.claimed {
                        gone.push((Anchor::default(), self.anchor(e.id), e.status));
                    }
                }
            }
        } else {
            for (s, status) in explicit_deletes {
                if let Some(t) = self.linked_target(s)
                    && let Some(st) = status
                {
                    gone.push((s.clone(), t, *st));
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
    let mut ap = AccPlanner::new(job, with_orgs);
    ap.load_links(engine).await?;
    // Most targets are linked: size the index once instead of growing it step by step.
    ap.reserve_targets(ap.n_links);
    {
        let (mut t, spent) = read_ahead(target_accounts(engine, job));
        while let Some(batch) = t
            .try_next()
            .await
            .map_err(|e| read_err("target", "accounts", e))?
        {
            ap.add_targets(&batch)?;
            spent.give(batch);
        }
    }
    ap.mark_links();
    let target_count = ap.entries.len();
    read.insert("target_accounts".to_owned(), target_count);
    {
        let listing = owned_accounts(job.source.clone(), job.page_size);
        let (mut s, spent) = read_ahead(listing);
        while let Some(batch) = s
            .try_next()
            .await
            .map_err(|e| read_err("source", "accounts", e))?
        {
            let mut mapped = Vec::with_capacity(batch.len());
            for a in batch {
                match job.mapping.map_account_owned(a)? {
                    Some(m) => mapped.push(m),
                    None => ap.source_count += 1,
                }
            }
            spent.give(ap.observe_batch(&mut b, &orgs, with_orgs, mapped)?);
        }
    }
    read.insert("source_accounts".to_owned(), ap.source_count);
    if ap.source_count == 0 && ap.n_links > 0 && !job.allow_empty_source {
        return Err(Error::new(
            ErrorKind::Incomplete,
            format!(
                "the source listed no accounts, but {} accounts are linked to it; refusing to treat that as 'everyone left'",
                ap.n_links
            ),
        ));
    }
    let links_count = ap.n_links;
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
    let mut ap = AccPlanner::new(job, with_orgs);
    ap.load_links(engine).await?;
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
        let status = match ap.linked_target(s) {
            Some(t) => {
                let found = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?;
                let status = found.as_ref().map(|a| a.status);
                if let Some(a) = &found {
                    ap.add_target(a)?;
                }
                status
            }
            None => None,
        };
        explicit_deletes.push((s.clone(), status));
    }
    for m in &mapped_upserts {
        if let Some(t) = ap.linked_target(&m.anchor) {
            if !ap.has_target(&t)
                && let Some(a) = fetch(t)
                    .await
                    .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(&a)?;
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
                for a in &found {
                    if !ap.has_target(&a.anchor) {
                        ap.add_target(a)?;
                    }
                }
            }
        }
        // A manager linked to a target is translated by `translate`; make sure that target
        // counts as known.
        if let Some(mg) = &m.manager
            && let Some(t) = ap.linked_target(mg)
            && !ap.has_target(&t)
        {
            if let Some(a) = fetch(t)
                .await
                .map_err(|e| read_err("target", "accounts", e))?
            {
                ap.add_target(&a)?;
            }
        }
    }
    ap.mark_links();
    read.insert("source_accounts".to_owned(), mapped_upserts.len());
    read.insert("target_accounts".to_owned(), ap.entries.len());
    ap.observe_batch(&mut b, &orgs, with_orgs, mapped_upserts)?;
    let total = ap.n_links.max(ap.entries.len());
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
