//! Progress bars for `run` and `approve`: a spinner while both sides are read, a bar while
//! the plan is applied. Hidden when stdout is not a terminal.
//!
//! The engine has no progress callback, so the bars are fed from the outside: the source
//! and sink are wrapped in [`CountingSource`] / [`CountingSink`] (entities read), and the
//! store in [`CountingStore`] (one op record per applied or failed op).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::source::{Applied, Capabilities, ChangeSet, Descriptor, Op, Page, PageRequest};
use idsync_core::store::{AuditEntry, FeedEntry, JournalEntry, Link, OpRecord, RunRecord};
use idsync_core::{Account, Anchor, EntityKind, Hub, Org, Result, Sink, Source, Store, SyncCursor};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

#[derive(Debug, Default)]
struct Counts {
    source_orgs: AtomicU64,
    source_accounts: AtomicU64,
    target_orgs: AtomicU64,
    target_accounts: AtomicU64,
}

/// The bars of one command.
#[derive(Clone)]
pub struct Meter {
    multi: MultiProgress,
    read: ProgressBar,
    apply: ProgressBar,
    counts: Arc<Counts>,
    visible: bool,
}

impl fmt::Debug for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meter")
            .field("visible", &self.visible)
            .finish_non_exhaustive()
    }
}

/// Which side of a job an adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The job's source.
    Source,
    /// The job's sink.
    Target,
}

impl Meter {
    /// Bars drawn on stderr when `visible`, else nothing at all.
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        // Bars start hidden and join the multi-bar (and so become visible) when started;
        // the wrappers hold clones, which share the bar's state.
        let read = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        read.set_style(
            ProgressStyle::with_template("{spinner} reading  {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let apply = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        apply.set_style(
            ProgressStyle::with_template(
                "{spinner} applying [{bar:40}] {pos}/{len} ops ({rate}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", s.per_sec());
                },
            )
            .progress_chars("=> "),
        );
        Meter {
            multi,
            read,
            apply,
            counts: Arc::new(Counts::default()),
            visible,
        }
    }

    /// A meter that shows nothing.
    pub fn hidden() -> Self {
        Meter::new(false)
    }

    /// Whether the bars are drawn.
    pub fn visible(&self) -> bool {
        self.visible
    }

    /// Start the reading spinner.
    pub fn start_reading(&self) {
        if !self.visible {
            return;
        }
        let pb = self.multi.add(self.read.clone());
        pb.enable_steady_tick(Duration::from_millis(100));
        self.update_read();
    }

    fn update_read(&self) {
        let c = &self.counts;
        self.read.set_message(format!(
            "source {} orgs, {} accounts · target {} orgs, {} accounts",
            c.source_orgs.load(Ordering::Relaxed),
            c.source_accounts.load(Ordering::Relaxed),
            c.target_orgs.load(Ordering::Relaxed),
            c.target_accounts.load(Ordering::Relaxed),
        ));
    }

    fn count_read(&self, side: Side, kind: EntityKind, n: usize) {
        let c = &self.counts;
        let counter = match (side, kind) {
            (Side::Source, EntityKind::Org) => &c.source_orgs,
            (Side::Source, EntityKind::Account) => &c.source_accounts,
            (Side::Target, EntityKind::Org) => &c.target_orgs,
            (Side::Target, EntityKind::Account) => &c.target_accounts,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.update_read();
    }

    /// Stop the reading spinner.
    pub fn finish_reading(&self) {
        self.read.finish_and_clear();
    }

    /// Start the apply bar for `ops` operations.
    pub fn start_applying(&self, ops: usize) {
        self.apply.set_length(ops as u64);
        self.apply.set_position(0);
        if !self.visible {
            return;
        }
        let pb = self.multi.add(self.apply.clone());
        pb.enable_steady_tick(Duration::from_millis(100));
    }

    fn count_applied(&self) {
        self.apply.inc(1);
    }

    /// Stop the apply bar.
    pub fn finish_applying(&self) {
        self.apply.finish_and_clear();
    }
}

/// A source that counts what it lists.
#[derive(Debug)]
pub struct CountingSource {
    inner: Arc<dyn Source>,
    side: Side,
    meter: Meter,
}

impl CountingSource {
    /// Wrap a source.
    pub fn wrap(inner: Arc<dyn Source>, side: Side, meter: Meter) -> Arc<dyn Source> {
        Arc::new(CountingSource { inner, side, meter })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Source for CountingSource {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        let p = self.inner.orgs(page).await?;
        self.meter
            .count_read(self.side, EntityKind::Org, p.items.len());
        Ok(p)
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let p = self.inner.accounts(page).await?;
        self.meter
            .count_read(self.side, EntityKind::Account, p.items.len());
        Ok(p)
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.inner.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.inner.account(anchor).await
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.inner.find_accounts(field, value).await
    }
    async fn current_cursor(&self) -> Result<SyncCursor> {
        self.inner.current_cursor().await
    }
    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.inner.changes(since).await
    }
}

/// A sink that counts what it lists (its applies are counted by [`CountingStore`]).
#[derive(Debug)]
pub struct CountingSink {
    inner: Arc<dyn Sink>,
    meter: Meter,
}

impl CountingSink {
    /// Wrap a sink.
    pub fn wrap(inner: Arc<dyn Sink>, meter: Meter) -> Arc<dyn Sink> {
        Arc::new(CountingSink { inner, meter })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Source for CountingSink {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        let p = self.inner.orgs(page).await?;
        self.meter
            .count_read(Side::Target, EntityKind::Org, p.items.len());
        Ok(p)
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let p = self.inner.accounts(page).await?;
        self.meter
            .count_read(Side::Target, EntityKind::Account, p.items.len());
        Ok(p)
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.inner.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.inner.account(anchor).await
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.inner.find_accounts(field, value).await
    }
    async fn current_cursor(&self) -> Result<SyncCursor> {
        self.inner.current_cursor().await
    }
    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.inner.changes(since).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for CountingSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.inner.apply(op).await
    }
    fn as_hub(&self) -> Option<&Hub> {
        self.inner.as_hub()
    }
}

/// A store that ticks the apply bar once per op record.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    meter: Meter,
}

impl CountingStore {
    /// Wrap a store. Give the wrapped store to both the engine and the hub: the engine
    /// writes hub ops in one transaction only when both hold the same store.
    pub fn wrap(inner: Arc<dyn Store>, meter: Meter) -> Arc<dyn Store> {
        Arc::new(CountingStore { inner, meter })
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for CountingStore {
    async fn hub_orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.inner.hub_orgs(page).await
    }
    async fn hub_accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.inner.hub_accounts(page).await
    }
    async fn hub_org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.inner.hub_org(anchor).await
    }
    async fn hub_account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.inner.hub_account(anchor).await
    }
    async fn hub_apply(&self, op: &Op, record: Option<&OpRecord>) -> Result<Applied> {
        let r = self.inner.hub_apply(op, record).await;
        if record.is_some_and(|r| r.journal.is_some()) {
            self.meter.count_applied();
        }
        r
    }
    async fn links(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Link>> {
        self.inner.links(job, kind, page).await
    }
    async fn shadow(&self, job: &str, kind: EntityKind, page: PageRequest) -> Result<Page<Value>> {
        self.inner.shadow(job, kind, page).await
    }
    async fn cursor(&self, job: &str) -> Result<Option<SyncCursor>> {
        self.inner.cursor(job).await
    }
    async fn commit_cursor(
        &self,
        job: &str,
        expected: Option<&SyncCursor>,
        cursor: &SyncCursor,
    ) -> Result<()> {
        self.inner.commit_cursor(job, expected, cursor).await
    }
    async fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.inner.put_run(run).await
    }
    async fn run(&self, id: &str) -> Result<Option<RunRecord>> {
        self.inner.run(id).await
    }
    async fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.inner.runs(job, limit).await
    }
    async fn journal_intent(&self, entry: &JournalEntry) -> Result<()> {
        self.inner.journal_intent(entry).await
    }
    async fn record(&self, record: &OpRecord) -> Result<()> {
        let r = self.inner.record(record).await;
        if record.journal.is_some() {
            self.meter.count_applied();
        }
        r
    }
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>> {
        self.inner.journal(run_id).await
    }
    async fn open_intents(&self, job: &str) -> Result<Vec<JournalEntry>> {
        self.inner.open_intents(job).await
    }
    async fn audit(&self, kind: EntityKind, anchor: &Anchor) -> Result<Vec<AuditEntry>> {
        self.inner.audit(kind, anchor).await
    }
    async fn feed(&self, since: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        self.inner.feed(since, limit).await
    }
    async fn acquire_lease(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.inner.acquire_lease(job, holder, ttl).await
    }
    async fn release_lease(&self, job: &str, holder: &str) -> Result<()> {
        self.inner.release_lease(job, holder).await
    }
}
