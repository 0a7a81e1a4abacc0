//! Two-way distribution through the hub: inbound jobs write the spokes' changes into the
//! hub, outbound jobs read the hub's change feed and take them to every other spoke.
//!
//! A [`Distribution`] holds the jobs of one hub and runs them in the order that makes a
//! change travel in one pass: the inbound change sets first, then every outbound job whose
//! position in the feed is behind the feed's head. An outbound job's cursor is a feed
//! sequence number, so each run reads only the feed entries after it and the hub entities
//! they name (no listing of the hub); a job whose cursor is at the head is not run at all.
//!
//! Loops stop by themselves: an outbound write that comes back from its spoke as an inbound
//! event maps to what the hub already holds, an unchanged entity produces no op, so the hub
//! does not change and the feed does not move. With a [`FieldAuthority`] each hub field has
//! one owning inbound job; other jobs' changes of it are refused and reported.
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::engine::Distribution;
//! use idsync_core::{Account, Engine, Guard, Hub, Job, MemoryAdapter, MemoryStore, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let hub = Arc::new(Hub::new(store.clone()));
//! let hr = Arc::new(MemoryAdapter::with_data("hr", vec![], vec![Account::new("u1", "alice")]));
//! let app = Arc::new(MemoryAdapter::new("app"));
//! let d = Distribution::new(Engine::new(store))
//!     .with_job(Job::new("hr-in", hr.clone(), hub.clone()).with_guard(Guard::off()))?
//!     .with_job(Job::new("app-out", hub, app.clone()).with_guard(Guard::off()))?;
//!
//! let first = d.cycle().await; // hr -> hub -> app
//! assert_eq!(first.applied(), 2);
//! assert_eq!(app.snapshot()?.accounts.len(), 1);
//! let again = d.cycle().await; // nothing moved: the outbound job is not even run
//! assert!(again.is_quiet(), "{again:?}");
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use serde::Serialize;

use super::apply::{ErrorInfo, Report};
use super::{Engine, Job};
use crate::authority::FieldAuthority;
use crate::error::{Error, Result};
use crate::hub;
use crate::source::ChangeSet;

/// How one job of a distribution pass ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum JobOutcome {
    /// It ran (the report says how; a guard stop is a report with status `needs_approval`).
    Ran(Box<Report>),
    /// Not run: an outbound job whose feed position is already the feed's head.
    UpToDate,
    /// It failed before or while planning (a read failed, the source is unreachable, ...).
    Failed(ErrorInfo),
}

/// One job's part of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    /// The job.
    pub job: String,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: JobOutcome,
}

impl JobRun {
    /// The report, when the job ran.
    pub fn report(&self) -> Option<&Report> {
        match &self.outcome {
            JobOutcome::Ran(r) => Some(r),
            _ => None,
        }
    }
}

/// What a pass did: the inbound runs, then the outbound runs, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DistributionReport {
    /// Inbound jobs (spoke -> hub).
    pub inbound: Vec<JobRun>,
    /// Outbound jobs (hub -> spoke).
    pub outbound: Vec<JobRun>,
}

impl DistributionReport {
    fn runs(&self) -> impl DoubleEndedIterator<Item = &JobRun> {
        self.inbound.iter().chain(&self.outbound)
    }

    fn reports(&self) -> impl Iterator<Item = &Report> {
        self.runs().filter_map(JobRun::report)
    }

    /// Ops planned over every job.
    pub fn planned(&self) -> usize {
        self.reports().map(|r| r.counts.planned).sum()
    }

    /// Ops applied over every job.
    pub fn applied(&self) -> usize {
        self.reports().map(|r| r.counts.applied).sum()
    }

    /// Field changes refused by field authority, over every job.
    pub fn refused_fields(&self) -> usize {
        self.reports().map(|r| r.counts.refused_fields).sum()
    }

    /// No job planned an op and none failed: the hub and the spokes agree.
    pub fn is_quiet(&self) -> bool {
        self.planned() == 0 && self.failed().next().is_none()
    }

    /// The jobs that failed, or whose run did not end as `succeeded`.
    pub fn failed(&self) -> impl Iterator<Item = &JobRun> {
        self.runs().filter(|r| match &r.outcome {
            JobOutcome::Ran(rep) => rep.status != crate::store::RunStatus::Succeeded,
            JobOutcome::UpToDate => false,
            JobOutcome::Failed(_) => true,
        })
    }

    /// A job's part, by name (its latest, when it ran twice).
    pub fn job(&self, name: &str) -> Option<&JobRun> {
        self.runs().rev().find(|r| r.job == name)
    }
}

/// The jobs of one hub, run so that a change in any spoke reaches every other spoke.
///
/// * An **inbound** job writes into the hub ([`Target::Hub`](super::Target::Hub)); it runs
///   incrementally ([`Engine::run_changes`]: from its stored cursor, a full run the first
///   time or when the cursor is stale).
/// * An **outbound** job reads the hub (its source is a [`Hub`](crate::Hub), possibly
///   wrapped in layers); it runs from its feed position, and only when the feed moved past it.
///
/// The methods run the jobs one after the other and never stop at a failed job: each job's
/// outcome is in the [`DistributionReport`]. A scheduler that runs jobs under leases uses
/// [`outbound_due`](Self::outbound_due) and runs them itself.
#[derive(Debug, Clone)]
pub struct Distribution {
    engine: Engine,
    inbound: Vec<Job>,
    outbound: Vec<Job>,
    authority: Option<Arc<FieldAuthority>>,
}

impl Distribution {
    /// No jobs yet.
    pub fn new(engine: Engine) -> Self {
        Distribution {
            engine,
            inbound: Vec::new(),
            outbound: Vec::new(),
            authority: None,
        }
    }

    /// Add a job: inbound when it writes into the hub, outbound when it reads from the
    /// hub. A job that does neither (point to point), or both, or whose name is taken, is a
    /// `ConfigInvalid` error.
    pub fn with_job(mut self, mut job: Job) -> Result<Self> {
        if self.job(&job.name).is_some() {
            return Err(Error::config(format!(
                "distribution: two jobs are named {:?}",
                job.name
            )));
        }
        let writes_hub = job.target.hub().is_some();
        let reads_hub = job.source.describe().provider == hub::PROVIDER;
        match (writes_hub, reads_hub) {
            (true, false) => {
                if job.authority.is_none() {
                    job.authority = self.authority.clone();
                }
                self.inbound.push(job);
            }
            (false, true) => self.outbound.push(job),
            (true, true) => {
                return Err(Error::config(format!(
                    "distribution: job {} reads from and writes into the hub",
                    job.name
                )));
            }
            (false, false) => {
                return Err(Error::config(format!(
                    "distribution: job {} neither writes into nor reads from the hub (a \
                     point-to-point job is run on its own)",
                    job.name
                )));
            }
        }
        Ok(self)
    }

    /// Give the hub's fields their owners (see [`FieldAuthority`]): every inbound job
    /// (added before or after, unless it has an authority of its own) is subject to it.
    /// Every owner must be an inbound job added before this call; a field owned by an
    /// outbound or unknown job is a `ConfigInvalid` error.
    pub fn with_authority(mut self, authority: FieldAuthority) -> Result<Self> {
        let names: Vec<&str> = self.inbound.iter().map(|j| j.name.as_str()).collect();
        authority.validate(Some(&names)).map_err(|e| {
            Error::config(format!(
                "{} (owners are the inbound jobs of the distribution)",
                e.message()
            ))
        })?;
        let a = Arc::new(authority);
        for j in &mut self.inbound {
            if j.authority.is_none() {
                j.authority = Some(a.clone());
            }
        }
        self.authority = Some(a);
        Ok(self)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The inbound jobs, in the order added.
    pub fn inbound(&self) -> &[Job] {
        &self.inbound
    }

    /// The outbound jobs, in the order added.
    pub fn outbound(&self) -> &[Job] {
        &self.outbound
    }

    /// A job by name.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.inbound
            .iter()
            .chain(&self.outbound)
            .find(|j| j.name == name)
    }

    /// The outbound jobs the feed moved past: no stored cursor yet, or a cursor behind the
    /// hub's current position. One cursor read per job, nothing else.
    pub async fn outbound_due(&self) -> Result<Vec<&Job>> {
        let mut due = Vec::new();
        for j in &self.outbound {
            let stored = self.engine.store().cursor(&j.name).await?;
            let head = j.source.current_cursor().await?;
            if stored.as_ref() != Some(&head) {
                due.push(j);
            }
        }
        Ok(due)
    }

    /// Run every outbound job the feed moved past ([`outbound_due`](Self::outbound_due)),
    /// each from its own feed position.
    pub async fn distribute(&self) -> DistributionReport {
        let mut report = DistributionReport::default();
        self.distribute_into(&mut report).await;
        report
    }

    async fn distribute_into(&self, report: &mut DistributionReport) {
        for j in &self.outbound {
            let due = async {
                let stored = self.engine.store().cursor(&j.name).await?;
                let head = j.source.current_cursor().await?;
                Ok::<_, Error>(stored.as_ref() != Some(&head))
            };
            let outcome = match due.await {
                Ok(false) => JobOutcome::UpToDate,
                Ok(true) => ran(self.engine.run_changes(j).await),
                Err(e) => JobOutcome::Failed(ErrorInfo::from(&e)),
            };
            report.outbound.push(JobRun {
                job: j.name.clone(),
                outcome,
            });
        }
    }

    /// One pass: every inbound job's changes into the hub, then [`distribute`](Self::distribute).
    pub async fn cycle(&self) -> DistributionReport {
        let mut report = DistributionReport::default();
        for j in &self.inbound {
            report.inbound.push(JobRun {
                job: j.name.clone(),
                outcome: ran(self.engine.run_changes(j).await),
            });
        }
        self.distribute_into(&mut report).await;
        report
    }

    /// One inbound job's changes (e.g. after its events arrived), then
    /// [`distribute`](Self::distribute). An unknown or outbound job name is an error.
    pub async fn run_inbound(&self, name: &str) -> Result<DistributionReport> {
        let job = self.inbound_job(name)?;
        let mut report = DistributionReport::default();
        report.inbound.push(JobRun {
            job: job.name.clone(),
            outcome: ran(self.engine.run_changes(job).await),
        });
        self.distribute_into(&mut report).await;
        Ok(report)
    }

    /// A change set for an inbound job that did not come from its source's cursor (a bulk
    /// import, a login), planned and applied like [`Engine::plan_changes`]; then
    /// [`distribute`](Self::distribute). The job's cursor is not touched.
    pub async fn apply_changes(
        &self,
        name: &str,
        changes: ChangeSet,
    ) -> Result<DistributionReport> {
        let job = self.inbound_job(name)?;
        let mut changes = changes;
        changes.cursor = None;
        let result = async {
            let plan = self.engine.plan_changes(job, changes, None).await?;
            if plan.guard.stopped {
                return Ok(Report::guarded(&plan));
            }
            self.engine.apply(job, &plan).await
        }
        .await;
        let mut report = DistributionReport::default();
        report.inbound.push(JobRun {
            job: job.name.clone(),
            outcome: ran(result),
        });
        self.distribute_into(&mut report).await;
        Ok(report)
    }

    fn inbound_job(&self, name: &str) -> Result<&Job> {
        self.inbound.iter().find(|j| j.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inbound.iter().map(|j| j.name.as_str()).collect();
            Error::config(format!(
                "distribution: no inbound job {name:?} (inbound jobs: {})",
                names.join(", ")
            ))
        })
    }
}

fn ran(r: Result<Report>) -> JobOutcome {
    match r {
        Ok(rep) => JobOutcome::Ran(Box::new(rep)),
        Err(e) => JobOutcome::Failed(ErrorInfo::from(&e)),
    }
}
