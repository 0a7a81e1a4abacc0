//! The engine: read → map → correlate → plan → guard → apply, for full and incremental
//! runs, in either direction.
//!
//! * A [`Job`] is `(source, sink, mapping, policy)`.
//! * [`Engine::plan`] reads both sides completely (a failed or short read aborts before
//!   anything is planned), maps, correlates (links first, then ordered rules; only a unique
//!   match links), and produces a serializable [`Plan`] in a stable order.
//! * The [`Guard`] stops plans that would disable or delete too much: they are stored as
//!   "needs approval" and nothing is applied until [`Engine::approve`].
//! * [`Engine::apply`] applies with bounded concurrency; an op waits for the ops it depends
//!   on, every op is journaled, a failed op does not stop unrelated ops. Into the hub of the
//!   engine's own store the ops of a phase go in batches ([`Store::hub_apply_batch`]); a
//!   job's [`ProgressHook`] ([`Job::with_progress`]) follows the apply.
//! * [`Engine::run_changes`] takes a source's change set through the same path and commits
//!   the cursor only after every op succeeded.
//! * Planning scales to millions of accounts: the target side is kept as a row of field
//!   hashes per account under interned anchor ids (about 200 bytes per account), and inside
//!   a tokio runtime each listing is read by a task of its own, a few batches ahead of the
//!   planner (outside one, inline). A listing task that stops without reaching the end is
//!   an incomplete read like any other. Planning allocates and frees a lot: services that
//!   plan large directories do well with mimalloc or jemalloc as the global allocator (the
//!   `idsync` binary uses mimalloc; BENCHMARKS.md has both figures).

mod apply;
mod distribution;
mod index;
mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authority::FieldAuthority;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::hub::Hub;
use crate::mapping::Mapping;
use crate::model::{Account, Org};
use crate::source::{ChangeSet, Op, OpKind, Sink, Source, SyncCursor};
use crate::store::{Fence, Link, RunRecord, RunStatus, Store};

pub use apply::{ErrorInfo, OpOutcome, OpState, Report, ReportCounts};
pub use distribution::{Distribution, DistributionReport, JobOutcome, JobRun};
pub use plan::{Conflict, PendingRef, Plan, PlannedOp};

/// What happens to target entities whose source entity is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum DeletionPolicy {
    /// Disable accounts; keep orgs (the default).
    #[default]
    Disable,
    /// Delete accounts, then orgs (child-first).
    Delete,
    /// Leave them alone.
    Ignore,
    /// Disable accounts now; delete them (and then empty orgs) once they have been disabled
    /// by this job for longer than `retention`.
    DisableThenDelete {
        /// How long a disabled account is kept.
        #[serde(with = "humantime_secs")]
        retention: Duration,
    },
}

mod humantime_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A limit on one kind of operation: at most `max_count` ops, and at most `max_percent`
/// percent of the entities of that kind **this job links** (the entities it can harm; for
/// an authoritative job, every target entity). `None` means no limit of that form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Threshold {
    /// Absolute maximum.
    pub max_count: Option<usize>,
    /// Maximum as a percentage of the entities the job links (0–100).
    pub max_percent: Option<f64>,
}

impl Threshold {
    /// A threshold.
    pub fn new(max_count: Option<usize>, max_percent: Option<f64>) -> Self {
        Threshold {
            max_count,
            max_percent,
        }
    }

    /// `Some(why)` when `count` of `base` crosses this threshold.
    pub fn crossed(&self, count: usize, base: usize) -> Option<String> {
        if let Some(max) = self.max_count
            && count > max
        {
            return Some(format!("{count} > {max}"));
        }
        if let Some(pct) = self.max_percent
            && count > 0
        {
            let share = if base == 0 {
                100.0
            } else {
                count as f64 * 100.0 / base as f64
            };
            if share > pct {
                return Some(format!("{count} of {base} ({share:.1}% > {pct}%)"));
            }
        }
        None
    }
}

/// Safety thresholds. By default a run that would disable or delete more than 5% of the
/// accounts the job links, or more than 500, stops as "needs approval"; so does a series of
/// runs that adds up past that within 24 hours. Linked entities missing from a target
/// listing count as harm too (they would be created again), and past the same threshold
/// the run fails before anything is planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guard {
    /// Disables and deletes of accounts together (and linked accounts missing from the
    /// target).
    pub destructive_accounts: Threshold,
    /// Deletes of orgs (and linked orgs missing from the target).
    pub org_deletes: Threshold,
    /// Further per-op thresholds, by op kind.
    #[serde(default)]
    pub per_op: BTreeMap<OpKind, Threshold>,
    /// The rolling window over which the runs of a job add up (default 24 h; zero: each
    /// run on its own).
    #[serde(default = "default_window", with = "humantime_secs")]
    pub window: Duration,
    /// How old a stopped plan may be when it is approved (default 1 h).
    #[serde(default = "default_approval_age", with = "humantime_secs")]
    pub approval_max_age: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_approval_age() -> Duration {
    Duration::from_secs(3600)
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            destructive_accounts: Threshold::new(Some(500), Some(5.0)),
            org_deletes: Threshold::new(Some(100), Some(5.0)),
            per_op: BTreeMap::new(),
            window: default_window(),
            approval_max_age: default_approval_age(),
        }
    }
}

impl Guard {
    /// No thresholds at all (tests, or jobs that are reviewed otherwise).
    pub fn off() -> Self {
        Guard {
            destructive_accounts: Threshold::default(),
            org_deletes: Threshold::default(),
            per_op: BTreeMap::new(),
            window: Duration::ZERO,
            approval_max_age: default_approval_age(),
        }
    }
}

/// The guard's verdict on a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GuardVerdict {
    /// True: the plan needs approval before it is applied.
    pub stopped: bool,
    /// Which thresholds were crossed.
    pub reasons: Vec<String>,
}

/// Where a job writes. The engine chooses its write path from this, explicitly:
///
/// * [`Target::Hub`]: the hub directory of the engine's own store. Each op is written
///   together with its journal, link and audit records in one store transaction (and the
///   ops of a phase in batches). A hub is not a [`Sink`]: it cannot be wrapped in layers or
///   written op by op without its records.
/// * [`Target::Sink`]: any other sink, written through [`Sink::apply`], each op journaled
///   as an intent first.
///
/// `Job::new` takes either (`Arc<Hub>` or any `Arc<impl Sink>` / `Arc<dyn Sink>`).
#[derive(Debug, Clone)]
pub enum Target {
    /// The hub of the engine's store.
    Hub(Arc<Hub>),
    /// Any other sink.
    Sink(Arc<dyn Sink>),
}

impl Target {
    /// The target as something to read (its listings, lookups and capabilities).
    pub fn as_source(&self) -> &dyn Source {
        match self {
            Target::Hub(h) => h.as_ref(),
            Target::Sink(s) => s.as_ref(),
        }
    }

    /// The same, owned (for listings read by a task of their own).
    pub fn to_source(&self) -> Arc<dyn Source> {
        match self {
            Target::Hub(h) => h.clone(),
            Target::Sink(s) => s.clone(),
        }
    }

    /// What the target can do.
    pub fn capabilities(&self) -> crate::source::Capabilities {
        self.as_source().capabilities()
    }

    /// Provider and instance of the target.
    pub fn describe(&self) -> crate::source::Descriptor {
        self.as_source().describe()
    }

    /// The hub, when the job writes into one.
    pub fn hub(&self) -> Option<&Hub> {
        match self {
            Target::Hub(h) => Some(h),
            Target::Sink(_) => None,
        }
    }
}

impl From<Arc<Hub>> for Target {
    fn from(h: Arc<Hub>) -> Self {
        Target::Hub(h)
    }
}

impl From<Hub> for Target {
    fn from(h: Hub) -> Self {
        Target::Hub(Arc::new(h))
    }
}

impl<S: Sink + 'static> From<Arc<S>> for Target {
    fn from(s: Arc<S>) -> Self {
        Target::Sink(s)
    }
}

impl From<Arc<dyn Sink>> for Target {
    fn from(s: Arc<dyn Sink>) -> Self {
        Target::Sink(s)
    }
}

/// One synchronization job: where from, where to, how.
#[derive(Debug, Clone)]
pub struct Job {
    /// A unique, stable name: links, cursors and runs are kept under it.
    pub name: String,
    /// Where entities come from.
    pub source: Arc<dyn Source>,
    /// Where they go: the hub, or another sink.
    pub target: Target,
    /// How they are mapped; the mapping's fields are the fields this job owns.
    pub mapping: Mapping,
    /// Correlation rules for accounts, tried in order: account field names whose values
    /// are compared trimmed and case-insensitively (e.g. `employee_id`, `email`, `username`).
    pub correlation: Vec<String>,
    /// What happens to entities whose source is gone.
    pub deletion: DeletionPolicy,
    /// Safety thresholds.
    pub guard: Guard,
    /// Ops applied at once. Not used when the sink is the hub of the engine's own store:
    /// that hub takes the ops of a phase in batches of a thousand, each batch in one store
    /// call ([`Store::hub_apply_batch`]).
    pub concurrency: usize,
    /// Page size asked of both sides.
    pub page_size: Option<usize>,
    /// Also disable/delete target entities this job never linked (the job is the only
    /// authority over the target). Off by default: entities created by others are left alone.
    pub authoritative: bool,
    /// Allow a full run whose source lists no accounts at all while the target holds
    /// accounts linked to it. Off by default: an empty answer is treated as a failed read.
    pub allow_empty_source: bool,
    /// Allow a full run whose target lists no entities at all while this job holds links
    /// to it (they are then created again). Off by default: an empty target listing is
    /// treated as a failed read.
    pub allow_empty_target: bool,
    /// Sync the org tree (when both sides have one).
    pub sync_orgs: bool,
    /// Called as ops end while a plan is applied.
    pub progress: Option<ProgressHook>,
    /// The fence of the job's lease ([`JobLease::fence`](crate::JobLease::fence)): when set,
    /// every write of an apply goes through [`Store::fenced`], so a worker that lost the
    /// lease stops at its next op (the report's [`Report::lease_lost`]).
    pub fence: Option<Fence>,
    /// Who owns which hub field ([`FieldAuthority`]): when the job writes into the hub,
    /// its changes of fields another job owns are refused and reported. `None` (the
    /// default): every field the mapping writes may change.
    pub authority: Option<Arc<FieldAuthority>>,
}

/// How far an apply has come: given to a job's [`ProgressHook`] each time ops end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Ops that ended so far (applied, failed or skipped).
    pub done: usize,
    /// Of those, failed.
    pub failed: usize,
    /// Ops in the plan.
    pub total: usize,
}

/// A callback that follows an apply (progress bars, logs, tests that stop a run mid-way).
/// It runs on the applying task: keep it short.
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressHook {
    /// A hook calling `f`.
    pub fn new(f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        ProgressHook(Arc::new(f))
    }

    pub(crate) fn call(&self, p: Progress) {
        (self.0)(p)
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl Job {
    /// A job with the defaults: identity mapping, correlation by employee id, email, then
    /// username, disable on deletion, default guard, concurrency 8.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn Source>,
        target: impl Into<Target>,
    ) -> Self {
        Job {
            name: name.into(),
            source,
            target: target.into(),
            mapping: Mapping::identity(),
            correlation: vec!["employee_id".into(), "email".into(), "username".into()],
            deletion: DeletionPolicy::default(),
            guard: Guard::default(),
            concurrency: 8,
            page_size: None,
            authoritative: false,
            allow_empty_source: false,
            allow_empty_target: false,
            sync_orgs: true,
            progress: None,
            fence: None,
            authority: None,
        }
    }

    /// Set the mapping.
    pub fn with_mapping(mut self, mapping: Mapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// Set the deletion policy.
    pub fn with_deletion(mut self, policy: DeletionPolicy) -> Self {
        self.deletion = policy;
        self
    }

    /// Set the guard.
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    /// Set the correlation rules.
    pub fn with_correlation(mut self, fields: Vec<String>) -> Self {
        self.correlation = fields;
        self
    }

    /// Set the apply concurrency (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Follow applies with `f` (see [`Progress`]).
    pub fn with_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook::new(f));
        self
    }

    /// Apply under a lease: every write checks `fence` in its transaction (see
    /// [Leases and fencing](crate::Store#leases-and-fencing)).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// Subject the job's hub writes to field authority (see [`FieldAuthority`]).
    pub fn with_authority(mut self, authority: Arc<FieldAuthority>) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Set the page size.
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = Some(n.max(1));
        self
    }
}

/// Runs jobs against a store.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Engine {
    /// An engine on `store` with the system clock.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Engine {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// Use another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn new_run_id(&self, job: &Job) -> String {
        let n: u32 = rand::random();
        format!(
            "{}-{}-{:08x}",
            job.name,
            self.clock.now().format("%Y%m%dT%H%M%S%3f"),
            n
        )
    }

    /// A dry run: read both sides and plan, without applying. The plan is recorded as a run
    /// with status `planned`, with the guard's verdict in its summary; such a record can
    /// be shown but never approved (only a run stopped by the guard can be).
    pub async fn plan(&self, job: &Job) -> Result<Plan> {
        self.plan_full(job, true).await
    }

    /// Plan what [`run`](Self::run) would apply, without applying it: for a caller that
    /// applies the plan itself ([`apply`](Self::apply)) after showing it. Unlike a dry run,
    /// earlier runs' open creates are resolved first, and a plan the guard stops is
    /// recorded as waiting for approval.
    pub async fn plan_run(&self, job: &Job) -> Result<Plan> {
        self.plan_full(job, false).await
    }

    /// Plan what [`run_changes`](Self::run_changes) would apply (see
    /// [`plan_run`](Self::plan_run)).
    pub async fn plan_next_changes(&self, job: &Job) -> Result<Plan> {
        self.next_changes(job, false).await
    }

    async fn plan_full(&self, job: &Job, dry: bool) -> Result<Plan> {
        let run_id = self.new_run_id(job);
        let started = self.clock.now();
        let planned = async {
            // A dry run writes nothing: it shows such creates, the real run adopts them.
            if !dry {
                self.resolve_open_creates(job).await?;
            }
            // Take the source's cursor before reading, so that changes made during the
            // read are seen by the next incremental run.
            let cursor = if job.source.capabilities().changes {
                Some(job.source.current_cursor().await?)
            } else {
                None
            };
            let cursor_from = self.store.cursor(&job.name).await?;
            let mut plan = plan::plan_full(self, job, &run_id).await?;
            plan.cursor = cursor;
            plan.cursor_from = cursor_from;
            Ok(plan)
        };
        let mut plan = match planned.await {
            Ok(p) => p,
            Err(e) => {
                self.fail_run(job, &run_id, started, &e).await;
                return Err(e);
            }
        };
        plan.created_at = started;
        self.record_plan(job, &plan, dry).await?;
        Ok(plan)
    }

    /// Creates of earlier runs whose outcome is open (a crash, or an answer lost in
    /// transit) are looked up at the sink first and adopted when found, so that no plan
    /// creates them again.
    async fn resolve_open_creates(&self, job: &Job) -> Result<()> {
        if job.target.hub().is_some() || !job.target.capabilities().readable {
            return Ok(());
        }
        let n = plan::resolve_open_creates(self, job).await?;
        if n > 0 {
            tracing::info!(job = %job.name, adopted = n, "adopted entities whose create answer was lost");
        }
        Ok(())
    }

    async fn fail_run(
        &self,
        job: &Job,
        run_id: &str,
        started: chrono::DateTime<chrono::Utc>,
        e: &Error,
    ) {
        let rec = RunRecord {
            id: run_id.to_owned(),
            job: job.name.clone(),
            status: RunStatus::Failed,
            started_at: started,
            finished_at: Some(self.clock.now()),
            plan: None,
            summary: Some(serde_json::json!({ "error": e.to_string() })),
        };
        // Best effort: the read error is what the caller needs to see.
        let _ = self.store.put_run(&rec).await;
    }

    async fn record_plan(&self, job: &Job, plan: &Plan, dry: bool) -> Result<()> {
        let status = if plan.guard.stopped && !dry {
            RunStatus::NeedsApproval
        } else {
            RunStatus::Planned
        };
        let rec = RunRecord {
            id: plan.run_id.clone(),
            job: job.name.clone(),
            status,
            started_at: plan.created_at,
            finished_at: if plan.guard.stopped {
                Some(self.clock.now())
            } else {
                None
            },
            // The whole plan is kept only when the guard stopped it (to review, and to
            // approve unless it was a dry run); otherwise the journal holds every op, and
            // a million-op plan is not copied into the run.
            plan: if plan.guard.stopped {
                Some(serde_json::to_value(plan)?)
            } else {
                None
            },
            summary: Some(serde_json::to_value(plan.summary())?),
        };
        self.store.put_run(&rec).await
    }

    /// Plan, then apply unless the guard stops the plan. A guarded plan returns a report
    /// with status `needs_approval` and applies nothing.
    pub async fn run(&self, job: &Job) -> Result<Report> {
        let plan = self.plan_full(job, false).await?;
        if plan.guard.stopped {
            return Ok(Report::guarded(&plan));
        }
        self.apply(job, &plan).await
    }

    /// Apply a plan (one that passed the guard, or was approved).
    pub async fn apply(&self, job: &Job, plan: &Plan) -> Result<Report> {
        if plan.guard.stopped {
            let approved = self
                .store
                .run(&plan.run_id)
                .await?
                .is_some_and(|r| r.status == RunStatus::Approved);
            if !approved {
                return Err(Error::new(
                    ErrorKind::NeedsApproval,
                    format!(
                        "run {} crossed the guard ({}); approve it first",
                        plan.run_id,
                        plan.guard.reasons.join("; ")
                    ),
                ));
            }
        }
        apply::apply_plan(self, job, plan).await
    }

    /// Approve a run stopped by the guard and apply its stored plan.
    ///
    /// Refused (`Conflict`, saying to run the job again for a fresh plan) when the run was a
    /// dry run, when the plan is older than the guard's `approval_max_age`, when the source's
    /// cursor moved since the plan was made, or when a target entity the plan disables or
    /// deletes is no longer as the plan found it.
    pub async fn approve(&self, job: &Job, run_id: &str) -> Result<Report> {
        let mut run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no run {run_id}")))?;
        if run.job != job.name {
            return Err(Error::config(format!(
                "run {run_id} belongs to job {}, not {}",
                run.job, job.name
            )));
        }
        let replan = "run the job again to get a fresh plan, and approve that one";
        if run.status == RunStatus::Planned {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "run {run_id} was a dry run (a plan only) and cannot be approved; {replan}"
                ),
            ));
        }
        if run.status != RunStatus::NeedsApproval && run.status != RunStatus::Approved {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "run {run_id} is {}, not waiting for approval",
                    run.status.as_str()
                ),
            ));
        }
        let plan: Plan = serde_json::from_value(
            run.plan
                .clone()
                .ok_or_else(|| Error::unexpected(format!("run {run_id} has no stored plan")))?,
        )?;
        self.check_still_current(job, &plan).await.map_err(|why| {
            Error::new(
                ErrorKind::Conflict,
                format!("run {run_id} cannot be approved: {why}; {replan}"),
            )
        })?;
        run.status = RunStatus::Approved;
        self.store.put_run(&run).await?;
        self.apply(job, &plan).await
    }

    /// Why a stored plan no longer describes the world (`Err(why)`), if it does not.
    async fn check_still_current(&self, job: &Job, plan: &Plan) -> std::result::Result<(), String> {
        let age = self.clock.now() - plan.created_at;
        let max =
            chrono::Duration::from_std(job.guard.approval_max_age).unwrap_or(chrono::Duration::MAX);
        if age > max {
            return Err(format!(
                "it was planned {} min ago, longer than the {} min a plan may wait",
                age.num_minutes(),
                max.num_minutes()
            ));
        }
        if let Some(planned) = &plan.cursor
            && job.source.capabilities().changes
        {
            let now = job
                .source
                .current_cursor()
                .await
                .map_err(|e| format!("the source's position could not be read ({e})"))?;
            if &now != planned {
                return Err("the source changed since it was planned".to_owned());
            }
        }
        if !job.target.capabilities().readable {
            return Ok(());
        }
        let target = job.target.as_source();
        for p in &plan.ops {
            let gone = |e: crate::Error| format!("the target could not be read ({e})");
            let moved = match &p.op {
                Op::DisableAccount { anchor } => target
                    .account(anchor)
                    .await
                    .map_err(gone)?
                    .is_none_or(|a| a.status != crate::model::Status::Active),
                Op::DeleteAccount { anchor } => {
                    target.account(anchor).await.map_err(gone)?.is_none()
                }
                Op::DeleteOrg { anchor } => target.org(anchor).await.map_err(gone)?.is_none(),
                _ => false,
            };
            if moved {
                return Err(format!(
                    "the target changed since it was planned ({} {} is no longer as planned)",
                    p.op.entity(),
                    p.op.anchor()
                ));
            }
        }
        Ok(())
    }

    /// Incremental run: apply what changed at the source since the stored cursor, through
    /// the same correlate / plan / apply path, on the changed entities only. Without a
    /// stored cursor, or when the source says the cursor is stale, this is a full run.
    pub async fn run_changes(&self, job: &Job) -> Result<Report> {
        let plan = self.next_changes(job, false).await?;
        if plan.guard.stopped {
            return Ok(Report::guarded(&plan));
        }
        self.apply(job, &plan).await
    }

    /// A dry run of [`run_changes`](Self::run_changes): the plan it would apply now (the
    /// source's changes since the stored cursor, or a full plan when there is no cursor or
    /// it is stale), recorded as `planned` and never approvable.
    pub async fn plan_run_changes(&self, job: &Job) -> Result<Plan> {
        self.next_changes(job, true).await
    }

    async fn next_changes(&self, job: &Job, dry: bool) -> Result<Plan> {
        if !job.source.capabilities().changes {
            return Err(Error::unsupported(format!(
                "source {} cannot report changes",
                job.source.describe().provider
            )));
        }
        let Some(since) = self.store.cursor(&job.name).await? else {
            tracing::info!(job = %job.name, "no stored cursor yet: a full run");
            return self.plan_full(job, dry).await;
        };
        let cs = job.source.changes(&since).await?;
        if !cs.complete {
            tracing::warn!(job = %job.name, "change cursor is stale; running a full sync");
            return self.plan_full(job, dry).await;
        }
        self.changes_plan(job, cs, Some(since), dry).await
    }

    /// Plan a change set (as [`run_changes`](Self::run_changes) does), without applying.
    /// A plan the guard stops is recorded as waiting for approval.
    pub async fn plan_changes(
        &self,
        job: &Job,
        changes: ChangeSet,
        since: Option<SyncCursor>,
    ) -> Result<Plan> {
        self.changes_plan(job, changes, since, false).await
    }

    async fn changes_plan(
        &self,
        job: &Job,
        changes: ChangeSet,
        since: Option<SyncCursor>,
        dry: bool,
    ) -> Result<Plan> {
        let run_id = self.new_run_id(job);
        let started = self.clock.now();
        let cursor = changes.cursor.clone();
        let planned = async {
            if !dry {
                self.resolve_open_creates(job).await?;
            }
            plan::plan_changes(self, job, &run_id, changes).await
        };
        let mut plan = match planned.await {
            Ok(p) => p,
            Err(e) => {
                self.fail_run(job, &run_id, started, &e).await;
                return Err(e);
            }
        };
        plan.created_at = started;
        plan.cursor = cursor;
        plan.cursor_from = since;
        self.record_plan(job, &plan, dry).await?;
        Ok(plan)
    }

    /// Create or update one account at once (e.g. a just-in-time login), through the same
    /// correlate / plan / apply path.
    pub async fn upsert_account(&self, job: &Job, account: Account) -> Result<Report> {
        let cs = ChangeSet {
            account_upserts: vec![account],
            complete: true,
            ..ChangeSet::default()
        };
        let plan = self.plan_changes(job, cs, None).await?;
        if plan.guard.stopped {
            return Ok(Report::guarded(&plan));
        }
        self.apply(job, &plan).await
    }

    /// Create or update one org at once.
    pub async fn upsert_org(&self, job: &Job, org: Org) -> Result<Report> {
        let cs = ChangeSet {
            org_upserts: vec![org],
            complete: true,
            ..ChangeSet::default()
        };
        let plan = self.plan_changes(job, cs, None).await?;
        self.apply(job, &plan).await
    }

    /// The links of a job (tests and diagnostics).
    pub async fn links(&self, job: &str, kind: crate::model::EntityKind) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        let mut req = crate::source::PageRequest::sized(10_000);
        loop {
            let page = self.store.links(job, kind, req.clone()).await?;
            out.extend(page.items);
            match page.next {
                Some(t) => req.token = Some(t),
                None => return Ok(out),
            }
        }
    }
}
