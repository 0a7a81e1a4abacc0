//! Progress bars for `run` and `approve`: a spinner while both sides are read, a bar while
//! the plan is applied. Hidden when stdout is not a terminal.
//!
//! The read spinner is fed by wrapping the source and sink in [`CountingSource`] /
//! [`CountingSink`] (entities read); the apply bar by the job's progress hook
//! ([`Meter::applied`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::source::{Applied, Capabilities, ChangeSet, Descriptor, Op, Page, PageRequest};
use idsync_core::{Account, Anchor, EntityKind, Org, Result, Sink, Source, SyncCursor};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

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

    /// Follow the engine's progress (a job's progress hook).
    pub fn applied(&self, done: usize) {
        self.apply.set_position(done as u64);
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

/// A sink that counts what it lists (its applies are followed by the progress hook).
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

    /// Wrap a job's target: a sink is counted; the hub is written by the engine with its
    /// records and stays as it is.
    pub fn wrap_target(target: idsync_core::Target, meter: Meter) -> idsync_core::Target {
        match target {
            idsync_core::Target::Sink(s) => idsync_core::Target::Sink(CountingSink::wrap(s, meter)),
            hub => hub,
        }
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
}
