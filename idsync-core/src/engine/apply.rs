//! Applying a plan: phases in order, bounded concurrency inside a phase, dependencies
//! respected, every op journaled with its link, shadow and audit records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Progress;
use super::plan::{Plan, PlannedOp};
use super::{Engine, GuardVerdict, Job, Target};
use crate::authority::{REFUSED_AUDIT, Refusal};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Anchor, Entity, EntityKind};
use crate::source::{Applied, Capabilities, Op, OpKind};
use crate::store::{
    AuditEntry, HubWrite, JournalEntry, JournalState, LinkChange, OpRecord, RunRecord, RunStatus,
    ShadowChange, is_lease_lost,
};

/// An error as reported (errors themselves are not cloneable or serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The kind.
    pub kind: ErrorKind,
    /// The full message, with provider, code and context.
    pub message: String,
    /// The provider's own code.
    pub provider_code: Option<String>,
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        ErrorInfo {
            kind: e.kind(),
            message: e.to_string(),
            provider_code: e.provider_code().map(str::to_owned),
        }
    }
}

/// How one op ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Applied.
    Applied,
    /// The sink refused it or it failed.
    Failed,
    /// Not attempted: an op it depends on did not succeed.
    Skipped,
}

/// The outcome of one op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// The op's id in the plan.
    pub id: usize,
    /// The op's kind.
    pub op: OpKind,
    /// The target anchor (for creates: the anchor the sink assigned).
    pub anchor: Option<Anchor>,
    /// The source entity.
    pub source: Option<Anchor>,
    /// How it ended.
    pub state: OpState,
    /// The error, when it failed.
    pub error: Option<ErrorInfo>,
}

/// Counts of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReportCounts {
    /// Ops in the plan.
    pub planned: usize,
    /// Ops applied.
    pub applied: usize,
    /// Ops failed.
    pub failed: usize,
    /// Ops skipped because a dependency failed.
    pub skipped: usize,
    /// Links written without an op.
    pub linked: usize,
    /// Ambiguous correlations.
    pub conflicts: usize,
    /// Field changes refused because another job owns the field
    /// ([`FieldAuthority`](crate::FieldAuthority)); [`Report::refused`] names them.
    #[serde(default)]
    pub refused_fields: usize,
    /// Applied ops by kind.
    pub by_op: BTreeMap<OpKind, usize>,
    /// The plan was stopped by the guard and approved (the guard's rolling window does not
    /// count an approved run's ops against later runs).
    #[serde(default)]
    pub approved: bool,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// How it ended.
    pub status: RunStatus,
    /// Counts.
    pub counts: ReportCounts,
    /// Every op with its outcome, in plan order.
    pub outcomes: Vec<OpOutcome>,
    /// The guard's verdict.
    pub guard: GuardVerdict,
    /// Conflicts from planning.
    pub conflicts: Vec<super::Conflict>,
    /// Warnings from planning.
    pub warnings: Vec<String>,
    /// Changes field authority refused, per entity, with each field's owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    /// Whether the source cursor was committed.
    pub cursor_committed: bool,
    /// Set when the run stopped because the job's lease was lost (another worker took it
    /// over, see [`Job::with_fence`]): the [`lease_lost`](crate::store::lease_lost) error.
    /// The status is then `failed`; ops not attempted are `skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<ErrorInfo>,
}

impl Report {
    /// The report of a plan the guard stopped: status `needs_approval`, nothing applied.
    pub fn guarded(plan: &Plan) -> Report {
        Report {
            run_id: plan.run_id.clone(),
            job: plan.job.clone(),
            status: RunStatus::NeedsApproval,
            counts: ReportCounts {
                planned: plan.ops.len(),
                conflicts: plan.conflicts.len(),
                refused_fields: plan.refused_fields(),
                ..ReportCounts::default()
            },
            outcomes: Vec::new(),
            guard: plan.guard.clone(),
            conflicts: plan.conflicts.clone(),
            warnings: plan.warnings.clone(),
            refused: plan.refused.clone(),
            cursor_committed: false,
            lease_lost: None,
        }
    }

    /// The outcomes that failed.
    pub fn failures(&self) -> impl Iterator<Item = &OpOutcome> {
        self.outcomes.iter().filter(|o| o.state == OpState::Failed)
    }
}

/// Ops per store call when the sink is the hub of the engine's own store.
const HUB_BATCH: usize = 1_000;

/// Put created anchors into an op's pending references.
fn resolve(p: &PlannedOp, created: &HashMap<usize, Anchor>) -> Result<Op> {
    let mut op = p.op.clone();
    for r in &p.pending {
        let anchor = created.get(&r.op).cloned().ok_or_else(|| {
            Error::unexpected(format!(
                "op {} needs the anchor created by op {}, which has none",
                p.id, r.op
            ))
        })?;
        match (&mut op, r.field.as_str()) {
            (Op::CreateOrg { org }, "parent") => org.parent = Some(anchor),
            (Op::MoveOrg { parent, .. }, "parent") => *parent = Some(anchor),
            (Op::CreateAccount { account }, f) => account.set_ref(f, r.index, anchor),
            (Op::UpdateAccount { anchor: a, .. }, "anchor") => *a = anchor,
            (Op::UpdateAccount { changes, .. }, "manager") => {
                changes.insert("manager".into(), Value::String(anchor.into_string()));
            }
            (Op::UpdateAccount { changes, .. }, "orgs") => {
                if let Some(Value::Array(items)) = changes.get_mut("orgs")
                    && let Some(slot) = items.get_mut(r.index)
                {
                    *slot = Value::String(anchor.into_string());
                }
            }
            (op, f) => {
                return Err(Error::unexpected(format!(
                    "op {} ({}) has a pending reference in field {f} that cannot be resolved",
                    p.id,
                    op.name()
                )));
            }
        }
    }
    Ok(op)
}

/// The shadow change of an applied op (for sinks that cannot be read).
fn shadow_change(op: &Op, anchor: &Anchor) -> Option<ShadowChange> {
    match op {
        Op::CreateOrg { org } => {
            let mut o = org.clone();
            o.anchor = anchor.clone();
            serde_json::to_value(o)
                .ok()
                .map(|entity| ShadowChange::Put {
                    anchor: anchor.clone(),
                    entity,
                })
        }
        Op::CreateAccount { account } => {
            let mut a = account.clone();
            a.anchor = anchor.clone();
            serde_json::to_value(a)
                .ok()
                .map(|entity| ShadowChange::Put {
                    anchor: anchor.clone(),
                    entity,
                })
        }
        Op::DeleteOrg { .. } | Op::DeleteAccount { .. } => Some(ShadowChange::Remove {
            anchor: anchor.clone(),
        }),
        _ => None, // updates: written from the full entity after the patch, below
    }
}

struct Outcome {
    state: OpState,
    anchor: Option<Anchor>,
    error: Option<Error>,
}

impl Outcome {
    fn failed(e: Error) -> Outcome {
        Outcome {
            state: OpState::Failed,
            anchor: None,
            error: Some(e),
        }
    }

    fn applied(anchor: Anchor) -> Outcome {
        Outcome {
            state: OpState::Applied,
            anchor: Some(anchor),
            error: None,
        }
    }

    fn skipped() -> Outcome {
        Outcome {
            state: OpState::Skipped,
            anchor: None,
            error: None,
        }
    }
}

/// Whether a write that failed with `e` may still have been applied by the sink: the
/// transport failed (a timeout, a reset, a 5xx) after the request could have gone out.
/// Throttling answers, refusals and errors marked [`not_sent`](crate::layers::not_sent)
/// say it was not.
pub(crate) fn outcome_unknown(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Unexpected)
        && !crate::layers::was_not_sent(e)
}

/// An op ready to go: its pending references resolved, the sink able to take it.
struct Ready<'a> {
    p: &'a PlannedOp,
    op: Op,
    caps: Capabilities,
    run_id: &'a str,
}

impl<'a> Ready<'a> {
    fn new(
        job: &Job,
        plan: &'a Plan,
        p: &'a PlannedOp,
        created: &HashMap<usize, Anchor>,
    ) -> Result<Ready<'a>> {
        let op = resolve(p, created)?;
        let caps = job.target.capabilities();
        if !caps.supports(&op) {
            return Err(Error::unsupported(format!(
                "sink {} does not take {}",
                job.target.describe().provider,
                op.name()
            )));
        }
        Ok(Ready {
            p,
            op,
            caps,
            run_id: &plan.run_id,
        })
    }

    /// The op's journal entry in `state`.
    fn journal(
        &self,
        engine: &Engine,
        state: JournalState,
        target: Option<&Anchor>,
        error: Option<&Error>,
    ) -> JournalEntry {
        JournalEntry {
            run_id: self.run_id.to_owned(),
            op_index: self.p.id,
            op: self.op.clone(),
            source_anchor: self.p.source.clone(),
            target_anchor: target.cloned(),
            state,
            error: error.map(|e| e.to_string()),
            at: engine.clock.now(),
        }
    }

    /// The record of the op ended in `state` at `anchor`: journal entry, and when it was
    /// applied its link, shadow copy and audit entry. For the hub, which fills the audit
    /// entry's before and after itself, those are left out (`audit_values` false).
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        engine: &Engine,
        job: &Job,
        anchor: &Anchor,
        state: JournalState,
        error: Option<&Error>,
        shadow_entities: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
        audit_values: bool,
    ) -> OpRecord {
        let op = &self.op;
        let kind = op.entity();
        let ok = state == JournalState::Done;
        let link = match (op, &self.p.source) {
            (Op::CreateOrg { .. } | Op::CreateAccount { .. }, Some(s)) => Some(LinkChange::Put {
                source: s.clone(),
                target: anchor.clone(),
            }),
            (Op::DeleteOrg { .. } | Op::DeleteAccount { .. }, Some(s)) => {
                Some(LinkChange::Remove { source: s.clone() })
            }
            _ => None,
        };
        let audit = ok.then(|| {
            let (before, after) = if !audit_values {
                (None, None)
            } else {
                match op {
                    Op::CreateOrg { org } => (None, serde_json::to_value(org).ok()),
                    Op::CreateAccount { account } => (None, serde_json::to_value(account).ok()),
                    Op::UpdateOrg { changes, .. } | Op::UpdateAccount { changes, .. } => {
                        (None, serde_json::to_value(changes).ok())
                    }
                    Op::MoveOrg { parent, .. } => {
                        (None, Some(serde_json::json!({ "parent": parent })))
                    }
                    Op::DisableAccount { .. } => {
                        (None, Some(serde_json::json!({ "status": "disabled" })))
                    }
                    Op::EnableAccount { .. } => {
                        (None, Some(serde_json::json!({ "status": "active" })))
                    }
                    Op::DeleteOrg { .. } | Op::DeleteAccount { .. } => (None, None),
                }
            };
            AuditEntry {
                run_id: self.run_id.to_owned(),
                job: job.name.clone(),
                kind,
                anchor: anchor.clone(),
                op: op.kind().into(),
                before,
                after,
                at: engine.clock.now(),
            }
        });
        OpRecord {
            job: job.name.clone(),
            kind,
            journal: Some(self.journal(engine, state, Some(anchor), error)),
            link: if ok { link } else { None },
            shadow: if ok && !self.caps.readable {
                next_shadow(shadow_entities, kind, op, anchor)
            } else {
                None
            },
            audit,
        }
    }

    /// After the sink (or hub) refused the op: adopt what a crashed earlier run created
    /// for the same source entity, else journal the failure.
    async fn settle_error(
        &self,
        engine: &Engine,
        job: &Job,
        e: Error,
        shadow_entities: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
    ) -> Outcome {
        let op = &self.op;
        if is_lease_lost(&e) {
            // Nothing can be written under a lost lease, not even the failure.
            return Outcome::failed(e);
        }
        if e.kind() == ErrorKind::AlreadyExists && op.is_create() && !self.caps.assigns_anchors {
            let proposed = op.anchor().clone();
            match super::plan::crashed_create(engine, &job.name, self.p.source.as_ref(), &proposed)
                .await
            {
                Ok(true) => {
                    let rec = self.record(
                        engine,
                        job,
                        &proposed,
                        JournalState::Done,
                        None,
                        shadow_entities,
                        true,
                    );
                    return match engine.store.record(&rec).await {
                        Ok(()) => Outcome::applied(proposed),
                        Err(e2) => Outcome::failed(e2),
                    };
                }
                Ok(false) => {}
                Err(e2) => return Outcome::failed(e2),
            }
        }
        let anchor = op.anchor().clone();
        // A create whose request may have reached the sink is not a failure yet: the next
        // run looks for what it may have created before it plans anything.
        let state = if op.is_create() && outcome_unknown(&e) {
            JournalState::Unknown
        } else {
            JournalState::Failed
        };
        let rec = self.record(engine, job, &anchor, state, Some(&e), shadow_entities, true);
        match engine.store.record(&rec).await {
            // The failure could not be journaled because the lease is gone: that stops the
            // run, so it is the op's error (with the sink's answer kept as context).
            Err(e2) if is_lease_lost(&e2) => {
                Outcome::failed(e2.with_context("op_error", e.to_string()))
            }
            Err(e2) => {
                tracing::warn!(error = %e2, "could not journal a failed op");
                Outcome::failed(e)
            }
            Ok(()) => Outcome::failed(e),
        }
    }
}

/// One op to a sink other than the engine's own hub: intent, apply, record.
async fn apply_one(
    engine: &Engine,
    job: &Job,
    plan: &Plan,
    p: &PlannedOp,
    created: &HashMap<usize, Anchor>,
    shadow_entities: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
) -> Outcome {
    let ready = match Ready::new(job, plan, p, created) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    // The intent finds ops a crash left between the sink's write and the store's record.
    let intent = ready.journal(engine, JournalState::Intent, None, None);
    if let Err(e) = engine.store.journal_intent(&intent).await {
        return Outcome::failed(e);
    }
    let Target::Sink(sink) = &job.target else {
        return Outcome::failed(Error::unexpected("an op for the hub reached the sink path"));
    };
    match sink.apply(&ready.op).await {
        Ok(applied) => {
            let anchor = applied.anchor.unwrap_or_else(|| ready.op.anchor().clone());
            let rec = ready.record(
                engine,
                job,
                &anchor,
                JournalState::Done,
                None,
                shadow_entities,
                true,
            );
            match engine.store.record(&rec).await {
                Ok(()) => Outcome::applied(anchor),
                // Applied at the sink but not recorded: report it; the next run
                // correlates the entity again instead of duplicating it.
                Err(e) => Outcome {
                    state: OpState::Failed,
                    anchor: Some(anchor),
                    error: Some(e),
                },
            }
        }
        Err(e) => ready.settle_error(engine, job, e, shadow_entities).await,
    }
}

/// A chunk of hub ops made ready: outcomes known without writing (skipped, unresolvable),
/// the ops to write and their writes.
struct HubChunk<'a> {
    early: Vec<(usize, Outcome)>,
    ready: Vec<Ready<'a>>,
    writes: Vec<HubWrite>,
}

/// Make ops `ids` (of one phase, so independent of each other) ready for the engine's own
/// hub: each op with its record in one write. The hub needs no intents: nothing can fall
/// between its write and its record.
fn prepare_hub_chunk<'a>(
    engine: &Engine,
    job: &Job,
    plan: &'a Plan,
    ids: &[usize],
    states: &HashMap<usize, OpState>,
    created: &HashMap<usize, Anchor>,
    shadow_entities: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
) -> HubChunk<'a> {
    let mut chunk = HubChunk {
        early: Vec::new(),
        ready: Vec::with_capacity(ids.len()),
        writes: Vec::with_capacity(ids.len()),
    };
    for &k in ids {
        let p = &plan.ops[k];
        if p.deps
            .iter()
            .any(|d| states.get(d) != Some(&OpState::Applied))
        {
            chunk.early.push((p.id, Outcome::skipped()));
            continue;
        }
        match Ready::new(job, plan, p, created) {
            Ok(r) => {
                let anchor = r.op.anchor().clone();
                let rec = r.record(
                    engine,
                    job,
                    &anchor,
                    JournalState::Done,
                    None,
                    shadow_entities,
                    false,
                );
                chunk.writes.push(HubWrite {
                    op: r.op.clone(),
                    record: Some(rec),
                });
                chunk.ready.push(r);
            }
            Err(e) => chunk.early.push((p.id, Outcome::failed(e))),
        }
    }
    chunk
}

/// The outcomes of a written chunk, from the store's answers.
async fn finish_hub_chunk(
    engine: &Engine,
    job: &Job,
    early: Vec<(usize, Outcome)>,
    ready: Vec<Ready<'_>>,
    answers: Vec<Result<Applied>>,
    shadow_entities: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
) -> Vec<(usize, Outcome)> {
    let mut out = early;
    let asked = ready.len();
    let mut answers = answers.into_iter();
    for r in ready {
        let answer = answers.next().unwrap_or_else(|| {
            Err(Error::unexpected(format!(
                "the store answered fewer than the {asked} writes it was given"
            )))
        });
        let o = match answer {
            Ok(applied) => {
                Outcome::applied(applied.anchor.unwrap_or_else(|| r.op.anchor().clone()))
            }
            Err(e) => r.settle_error(engine, job, e, shadow_entities).await,
        };
        out.push((r.p.id, o));
    }
    out
}

/// The shadow change of an op, keeping the run's copy of shadow entities current.
fn next_shadow(
    shadow: &Mutex<HashMap<(EntityKind, Anchor), Value>>,
    kind: EntityKind,
    op: &Op,
    anchor: &Anchor,
) -> Option<ShadowChange> {
    let mut map = shadow.lock().ok()?;
    let change = match shadow_change(op, anchor) {
        Some(c) => c,
        None => {
            // update-like op: patch the full entity
            let base = map.get(&(kind, anchor.clone()))?.clone();
            let entity = patched_entity(kind, base, op)?;
            ShadowChange::Put {
                anchor: anchor.clone(),
                entity,
            }
        }
    };
    match &change {
        ShadowChange::Put { entity, .. } => {
            map.insert((kind, anchor.clone()), entity.clone());
        }
        ShadowChange::Remove { .. } => {
            map.remove(&(kind, anchor.clone()));
        }
    }
    Some(change)
}

fn same_store(
    a: &std::sync::Arc<dyn crate::store::Store>,
    b: &std::sync::Arc<dyn crate::store::Store>,
) -> bool {
    std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
}

/// The full entity after an update-like op, for shadow copies.
fn patched_entity(kind: EntityKind, base: Value, op: &Op) -> Option<Value> {
    fn patch<E: Entity + serde::Serialize + serde::de::DeserializeOwned>(
        base: Value,
        op: &Op,
    ) -> Option<Value> {
        let mut e: E = serde_json::from_value(base).ok()?;
        match op {
            Op::UpdateOrg { changes, .. } | Op::UpdateAccount { changes, .. } => {
                for (f, v) in changes {
                    e.set(f, v.clone()).ok()?;
                }
            }
            Op::MoveOrg { parent, .. } => {
                let v = parent
                    .as_ref()
                    .map(|p| Value::String(p.as_str().to_owned()))
                    .unwrap_or(Value::Null);
                e.set("parent", v).ok()?;
            }
            Op::DisableAccount { .. } => e.set("status", Value::from("disabled")).ok()?,
            Op::EnableAccount { .. } => e.set("status", Value::from("active")).ok()?,
            _ => return None,
        }
        serde_json::to_value(e).ok()
    }
    match kind {
        EntityKind::Org => patch::<crate::model::Org>(base, op),
        EntityKind::Account => patch::<crate::model::Account>(base, op),
    }
}

async fn load_shadow(
    engine: &Engine,
    job: &Job,
    plan: &Plan,
) -> Result<HashMap<(EntityKind, Anchor), Value>> {
    let mut out = HashMap::new();
    if job.target.capabilities().readable {
        return Ok(out);
    }
    let wanted: std::collections::HashSet<(EntityKind, Anchor)> = plan
        .ops
        .iter()
        .filter(|p| !p.op.is_create())
        .map(|p| (p.op.entity(), p.op.anchor().clone()))
        .collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    for kind in [EntityKind::Org, EntityKind::Account] {
        let mut req = crate::source::PageRequest::sized(1000);
        loop {
            let page = engine.store.shadow(&job.name, kind, req.clone()).await?;
            for v in page.items {
                let anchor = v
                    .get("anchor")
                    .and_then(Value::as_str)
                    .map(Anchor::from)
                    .unwrap_or_default();
                if wanted.contains(&(kind, anchor.clone())) {
                    out.insert((kind, anchor), v);
                }
            }
            match page.next {
                Some(t) => req.token = Some(t),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Intents left open by crashed earlier runs of this job are settled by a run that
/// succeeded: it re-read both sides and adopted or redid what they had started.
async fn close_superseded_intents(engine: &Engine, job: &Job, plan: &Plan) -> Result<()> {
    for e in engine.store.open_intents(&job.name).await? {
        if e.run_id == plan.run_id {
            continue;
        }
        let kind = e.op.entity();
        let entry = JournalEntry {
            state: JournalState::Skipped,
            error: Some(format!("superseded by run {}", plan.run_id)),
            at: engine.clock.now(),
            ..e
        };
        engine
            .store
            .record(&OpRecord {
                job: job.name.clone(),
                kind,
                journal: Some(entry),
                link: None,
                shadow: None,
                audit: None,
            })
            .await?;
    }
    Ok(())
}

/// One audit entry per entity whose changes field authority refused: `before` names each
/// field's owner, `after` the values this job wanted.
async fn audit_refusals(engine: &Engine, job: &Job, plan: &Plan) -> Result<()> {
    for r in &plan.refused {
        tracing::warn!(job = %job.name, refused = %r.describe(), "field authority refused a change");
        let audit = AuditEntry {
            run_id: plan.run_id.clone(),
            job: job.name.clone(),
            kind: r.kind,
            anchor: r.anchor.clone(),
            op: REFUSED_AUDIT.into(),
            before: serde_json::to_value(&r.fields).ok(),
            after: serde_json::to_value(&r.values).ok(),
            at: engine.clock.now(),
        };
        engine
            .store
            .record(&OpRecord {
                job: job.name.clone(),
                kind: r.kind,
                journal: None,
                link: None,
                shadow: None,
                audit: Some(audit),
            })
            .await?;
    }
    Ok(())
}

pub(crate) async fn apply_plan(engine: &Engine, job: &Job, plan: &Plan) -> Result<Report> {
    // The hub of the engine's own store takes a phase's ops in large batches, each op
    // still all-or-nothing with its record.
    let hub_path = match job.target.hub() {
        Some(h) if same_store(h.store(), &engine.store) => true,
        Some(_) => {
            return Err(Error::config(format!(
                "job {} writes into the hub of another store than the engine's; build the \
                 engine on the hub's store",
                job.name
            )));
        }
        None => false,
    };
    // Under a lease every write goes through the fenced handle (runs are not fenced).
    let fenced;
    let engine = match &job.fence {
        Some(f) if f.job != job.name => {
            return Err(Error::config(format!(
                "job {}: its fence is for job {}",
                job.name, f.job
            )));
        }
        Some(f) => {
            fenced = Engine {
                store: engine.store.fenced(f.clone()),
                clock: engine.clock.clone(),
            };
            &fenced
        }
        None => engine,
    };
    // The lease-lost error that stopped the run, if one did.
    let mut lost: Option<Error> = None;
    let mut run = RunRecord {
        id: plan.run_id.clone(),
        job: job.name.clone(),
        status: RunStatus::Running,
        started_at: plan.created_at,
        finished_at: None,
        plan: None,
        summary: Some(serde_json::to_value(plan.summary())?),
    };
    engine.store.put_run(&run).await?;

    // Links of correlations that need no op, and stale links.
    let mut linked = 0usize;
    let link_records = plan
        .links
        .iter()
        .map(|l| {
            (
                l.kind,
                LinkChange::Put {
                    source: l.source.clone(),
                    target: l.target.clone(),
                },
            )
        })
        .chain(plan.stale_links.iter().map(|l| {
            (
                l.kind,
                LinkChange::Remove {
                    source: l.source.clone(),
                },
            )
        }));
    for (kind, link) in link_records {
        let put = matches!(link, LinkChange::Put { .. });
        let written = engine
            .store
            .record(&OpRecord {
                job: job.name.clone(),
                kind,
                journal: None,
                link: Some(link),
                shadow: None,
                audit: None,
            })
            .await;
        match written {
            Ok(()) => linked += usize::from(put),
            Err(e) if is_lease_lost(&e) => {
                lost = Some(e);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if lost.is_none()
        && let Err(e) = audit_refusals(engine, job, plan).await
    {
        if !is_lease_lost(&e) {
            return Err(e);
        }
        lost = Some(e);
    }
    let shadow_entities = Mutex::new(load_shadow(engine, job, plan).await?);

    let mut created: HashMap<usize, Anchor> = HashMap::new();
    let mut states: HashMap<usize, OpState> = HashMap::new();
    let mut outcomes: Vec<OpOutcome> = Vec::with_capacity(plan.ops.len());
    let mut progress = Progress {
        total: plan.ops.len(),
        ..Progress::default()
    };
    let mut i = 0;
    while i < plan.ops.len() && lost.is_none() {
        let phase = plan.ops[i].phase;
        let mut j = i;
        while j < plan.ops.len() && plan.ops[j].phase == phase {
            j += 1;
        }
        let ended =
            |id: usize, o: Outcome, outcomes: &mut Vec<OpOutcome>, progress: &mut Progress| {
                progress.done += 1;
                if o.state == OpState::Failed {
                    progress.failed += 1;
                }
                let p = &plan.ops[id];
                outcomes.push(OpOutcome {
                    id,
                    op: p.op.kind(),
                    anchor: o
                        .anchor
                        .or_else(|| (!p.op.is_create()).then(|| p.op.anchor().clone())),
                    source: p.source.clone(),
                    state: o.state,
                    error: o.error.as_ref().map(ErrorInfo::from),
                });
            };
        // Results of this phase; `states` and `created` change only between phases (an
        // op depends only on ops of earlier phases).
        let mut phase_results: Vec<(usize, OpState, Option<Anchor>)> = Vec::new();
        if hub_path {
            // While the store writes one chunk, the next is made ready.
            let ids: Vec<usize> = (i..j).collect();
            let chunks: Vec<&[usize]> = ids.chunks(HUB_BATCH).collect();
            let prepare = |c: &[usize]| {
                prepare_hub_chunk(engine, job, plan, c, &states, &created, &shadow_entities)
            };
            let mut next = chunks.first().map(|c| prepare(c));
            let mut n = 0;
            while let Some(chunk) = next.take() {
                n += 1;
                let write = engine.store.hub_apply_batch(chunk.writes);
                let ahead = async { chunks.get(n).map(|c| prepare(c)) };
                // `join` polls the write first: it is queued before the next chunk is built.
                let (answers, prepared) = futures::future::join(write, ahead).await;
                next = prepared;
                let results = finish_hub_chunk(
                    engine,
                    job,
                    chunk.early,
                    chunk.ready,
                    answers,
                    &shadow_entities,
                )
                .await;
                for (id, o) in results {
                    if lost.is_none()
                        && let Some(e) = o.error.as_ref().filter(|e| is_lease_lost(e))
                    {
                        lost = Some(e.clone_lossy());
                    }
                    phase_results.push((id, o.state, o.anchor.clone()));
                    ended(id, o, &mut outcomes, &mut progress);
                }
                if let Some(h) = &job.progress {
                    h.call(progress);
                }
                if lost.is_some() {
                    break; // the chunk made ready ahead is not written
                }
            }
        } else {
            let created_ref = &created;
            let states_ref = &states;
            let shadow_ref = &shadow_entities;
            // Set once an op finds the lease lost: ops not yet started are not sent.
            let stop = AtomicBool::new(false);
            let stop_ref = &stop;
            // Indices, not `&PlannedOp`s, go through the stream: a closure over a borrowed
            // item makes the future not `Send` (higher-ranked lifetime), and engines run in
            // spawned tasks.
            let mut results = stream::iter(i..j)
                .map(|k| async move {
                    let p = &plan.ops[k];
                    if stop_ref.load(Ordering::Acquire)
                        || p.deps
                            .iter()
                            .any(|d| states_ref.get(d) != Some(&OpState::Applied))
                    {
                        return (p.id, Outcome::skipped());
                    }
                    (
                        p.id,
                        apply_one(engine, job, plan, p, created_ref, shadow_ref).await,
                    )
                })
                .buffer_unordered(job.concurrency.max(1));
            while let Some((id, o)) = results.next().await {
                if let Some(e) = o.error.as_ref().filter(|e| is_lease_lost(e)) {
                    stop.store(true, Ordering::Release);
                    if lost.is_none() {
                        lost = Some(e.clone_lossy());
                    }
                }
                phase_results.push((id, o.state, o.anchor.clone()));
                ended(id, o, &mut outcomes, &mut progress);
                if let Some(h) = &job.progress {
                    h.call(progress);
                }
            }
        }
        for (id, state, anchor) in phase_results {
            states.insert(id, state);
            if state == OpState::Applied
                && let Some(a) = anchor
            {
                created.insert(id, a);
            }
        }
        i = j;
    }
    if lost.is_some() {
        // Ops never attempted after the lease was lost.
        let ended: std::collections::HashSet<usize> = outcomes.iter().map(|o| o.id).collect();
        for p in plan.ops.iter().filter(|p| !ended.contains(&p.id)) {
            outcomes.push(OpOutcome {
                id: p.id,
                op: p.op.kind(),
                anchor: (!p.op.is_create()).then(|| p.op.anchor().clone()),
                source: p.source.clone(),
                state: OpState::Skipped,
                error: None,
            });
        }
    }
    outcomes.sort_by_key(|o| o.id);
    let mut counts = ReportCounts {
        planned: plan.ops.len(),
        linked,
        approved: plan.guard.stopped,
        conflicts: plan.conflicts.len(),
        refused_fields: plan.refused_fields(),
        ..ReportCounts::default()
    };
    for o in &outcomes {
        match o.state {
            OpState::Applied => {
                counts.applied += 1;
                *counts.by_op.entry(o.op).or_insert(0) += 1;
            }
            OpState::Failed => counts.failed += 1,
            OpState::Skipped => counts.skipped += 1,
        }
    }
    let ok = counts.failed == 0 && counts.skipped == 0 && lost.is_none();
    if ok {
        close_superseded_intents(engine, job, plan).await?;
    }
    // The cursor moves only after everything succeeded.
    let mut cursor_committed = false;
    if ok && let Some(c) = &plan.cursor {
        engine
            .store
            .commit_cursor(&job.name, plan.cursor_from.as_ref(), c)
            .await?;
        cursor_committed = true;
    }
    run.status = if lost.is_some() {
        RunStatus::Failed
    } else if ok {
        RunStatus::Succeeded
    } else {
        RunStatus::PartiallyFailed
    };
    run.finished_at = Some(engine.clock.now());
    run.summary = Some(match &lost {
        Some(e) => serde_json::json!({ "counts": counts, "error": e.to_string() }),
        None => serde_json::to_value(&counts)?,
    });
    engine.store.put_run(&run).await?;
    Ok(Report {
        run_id: plan.run_id.clone(),
        job: job.name.clone(),
        status: run.status,
        counts,
        outcomes,
        guard: plan.guard.clone(),
        conflicts: plan.conflicts.clone(),
        warnings: plan.warnings.clone(),
        refused: plan.refused.clone(),
        cursor_committed,
        lease_lost: lost.as_ref().map(ErrorInfo::from),
    })
}
