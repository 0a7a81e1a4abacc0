//! The suite must fail adapters with typical bugs: each broken adapter below is caught by
//! the case named next to it (and the report says why).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::Arc;

use async_trait::async_trait;
use idsync_conformance::{Harness, Outcome, run_all};
use idsync_core::{
    Account, Anchor, Applied, Capabilities, ChangeSet, Descriptor, Error, ErrorKind, MemoryAdapter,
    Op, Org, Page, PageRequest, PageToken, Result, Sink, Source, SyncCursor,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    /// The next-page token points one item back: items are listed twice.
    OverlappingPages,
    /// A full page after the first is taken for the last one.
    StopsAtFullPage,
    /// Non-ASCII characters in display names are dropped.
    AsciiOnly,
    /// Account updates are acknowledged but not stored.
    IgnoresUpdates,
    /// A missing anchor is reported as a temporary outage.
    MissingIsUnavailable,
    /// `changes()` reports every account, changed or not.
    ChangesReportEverything,
}

#[derive(Debug)]
struct Broken {
    inner: MemoryAdapter,
    bug: Bug,
}

fn fix_account(bug: Bug, mut a: Account) -> Account {
    if bug == Bug::AsciiOnly {
        a.display_name = a
            .display_name
            .map(|d| d.chars().filter(char::is_ascii).collect());
    }
    a
}

#[async_trait]
impl Source for Broken {
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
        self.inner.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let first = page.token.is_none();
        let mut p = self.inner.accounts(page).await?;
        match self.bug {
            Bug::OverlappingPages if p.next.is_some() && p.items.len() >= 2 => {
                let back = &p.items[p.items.len() - 2];
                p.next = Some(PageToken(back.anchor.to_string()));
            }
            Bug::OverlappingPages if p.next.is_some() => {
                // page size 1: repeat the item forever
                p.next = Some(PageToken(
                    format!("{}", p.items[0].anchor).replace('a', "\u{0}"),
                ));
            }
            Bug::StopsAtFullPage if !first => p.next = None,
            _ => {}
        }
        p.items = p
            .items
            .into_iter()
            .map(|a| fix_account(self.bug, a))
            .collect();
        Ok(p)
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.inner.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        Ok(self
            .inner
            .account(anchor)
            .await?
            .map(|a| fix_account(self.bug, a)))
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.inner.find_accounts(field, value).await
    }
    async fn current_cursor(&self) -> Result<SyncCursor> {
        self.inner.current_cursor().await
    }
    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        let mut cs = self.inner.changes(since).await?;
        if self.bug == Bug::ChangesReportEverything {
            cs.account_upserts = idsync_core::source::collect_accounts(&self.inner).await?;
        }
        Ok(cs)
    }
}

#[async_trait]
impl Sink for Broken {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        match (self.bug, op) {
            (Bug::IgnoresUpdates, Op::UpdateAccount { anchor, .. }) => {
                Ok(Applied::with_anchor(anchor.clone()))
            }
            (Bug::MissingIsUnavailable, _) => self.inner.apply(op).await.map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::new(ErrorKind::Unavailable, "try later")
                } else {
                    e
                }
            }),
            _ => self.inner.apply(op).await,
        }
    }
}

struct BrokenHarness(Bug);

#[async_trait]
impl Harness for BrokenHarness {
    fn name(&self) -> String {
        format!("{:?}", self.0)
    }
    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(Broken {
            inner: MemoryAdapter::with_data("broken", orgs, accounts),
            bug: self.0,
        }))
    }
}

async fn expect_caught(bug: Bug, case: &str) {
    let report = run_all(&BrokenHarness(bug)).await;
    assert!(!report.passed(), "{bug:?} was not caught:\n{report}");
    let c = report.cases.iter().find(|c| c.name == case).unwrap();
    assert!(
        matches!(c.outcome, Outcome::Failed(_)),
        "{bug:?} should fail {case}:\n{report}"
    );
    println!("{report}");
}

#[tokio::test]
async fn overlapping_pages_are_caught() {
    expect_caught(Bug::OverlappingPages, "page_boundaries").await;
}

#[tokio::test]
async fn stopping_at_a_full_page_is_caught() {
    expect_caught(Bug::StopsAtFullPage, "page_boundaries").await;
}

#[tokio::test]
async fn mangled_unicode_is_caught() {
    expect_caught(Bug::AsciiOnly, "unicode").await;
}

#[tokio::test]
async fn ignored_updates_are_caught() {
    expect_caught(Bug::IgnoresUpdates, "moves_and_renames").await;
    expect_caught(Bug::IgnoresUpdates, "cursor_resume").await;
}

#[tokio::test]
async fn misclassified_missing_entities_are_caught() {
    expect_caught(Bug::MissingIsUnavailable, "missing_entity").await;
}

#[tokio::test]
async fn over_reporting_changes_is_caught() {
    expect_caught(Bug::ChangesReportEverything, "cursor_resume").await;
}
