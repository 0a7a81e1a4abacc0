//! # idsync-conformance
//!
//! The shared test suite every idsync adapter and every layer must pass, and in [`store`]
//! the one every `Store` (memory, SQLite, PostgreSQL) must pass.
//!
//! **The suite is destructive**: it creates, changes, moves, disables and deletes entities
//! in the namespaces a [`Harness`] hands it. Point it only at fresh, isolated namespaces
//! (a random OU, a test tenant's random root department, a temporary file).
//! **It is not API-stable**: cases are added and tightened as adapters teach us things.
//!
//! An adapter crate implements [`Harness`] in its tests and calls [`run_all`]:
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use idsync_conformance::{Harness, run_all};
//! use idsync_core::{Account, MemoryAdapter, Org, Result, Sink};
//!
//! struct Memory;
//!
//! #[async_trait]
//! impl Harness for Memory {
//!     fn name(&self) -> String {
//!         "memory".into()
//!     }
//!     async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
//!         Ok(Arc::new(MemoryAdapter::with_data("conformance", orgs, accounts)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let report = run_all(&Memory).await;
//! assert!(report.passed(), "{report}");
//! // or: report.assert_passed();
//! # }
//! ```
//!
//! [`run_all`] never panics; it returns a [`SuiteReport`] saying which cases passed,
//! which were skipped (and why) and which failed (and why). [`SuiteReport::assert_passed`]
//! panics with the readable summary, for use in `#[tokio::test]`s. Single cases can be run
//! with [`run_case`] by name (see [`CASES`]).
//!
//! ## Cases
//!
//! Cases are skipped by the sink's [`Capabilities`], never by
//! provider name. A harness may also skip cases by name through [`Options::skip`], with a
//! reason that shows in the report.
//!
//! | case | what |
//! |---|---|
//! | `listing` | the full listing equals the seeded fixture (org chart, Chinese and English names) |
//! | `page_boundaries` | page size 1, exact multiples of the page size, one more than a multiple |
//! | `empty` | an empty namespace lists nothing |
//! | `unicode` | Chinese, emoji, right-to-left, combining marks, full-width names |
//! | `deep_tree` | a chain of orgs [`Options::deep_tree_depth`] (20) levels deep |
//! | `multi_org` | an account in several orgs, the first one primary |
//! | `engine_into_sink` | engine run memory → adapter creates the fixture; a second run plans nothing |
//! | `moves_and_renames` | rename = `update_org`, re-parent = `move_org`, never delete + create; anchors survive |
//! | `deletions` | an account removed at the source is disabled in the sink (default policy) |
//! | `engine_from_source` | engine run adapter → memory copies the fixture; a second run plans nothing |
//! | `cursor_resume` | `current_cursor`, then changes through the sink, then `changes(cursor)` reports exactly those |
//! | `bad_credentials` | a source with wrong credentials fails with a permanent `Unauthenticated` / `PermissionDenied` |
//! | `throttled` | a throttled source fails with a temporary `RateLimited` |
//! | `missing_entity` | update / disable of a missing anchor fails with `NotFound` |
//! | `lookups` | `org`, `account` and `find_accounts` find single entities (trimmed, case-folded values), answer `None` / nothing for missing ones, and list no pages ([`Harness::listing_reads`]) |
//! | `page_replay` | a page token read twice gives the same page (the retry layer re-reads pages) |
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

mod cases;
pub mod chaos;
mod content;
mod fixture;
pub mod store;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, EntityKind, Op, Org, Result, Sink, Source,
};

pub use cases::CASES;
pub use chaos::{ChaosLayer, Fault, provider_stack};
pub use content::{ACCOUNT_FIELDS, AccountView, Content, OrgPath, show_path};
pub use fixture::{Fixture, account, account_anchor, org_anchor};

/// What an adapter's test provides to the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A name for reports, e.g. `"ldap (slapd 2.6)"`.
    fn name(&self) -> String;

    /// A fresh, isolated namespace (random OU / tenant root / file) holding exactly this
    /// data, returned as a readable sink. Orgs come parents first. Adapters that assign
    /// their own anchors may do so: the suite compares by content (org name paths,
    /// usernames), never by anchor equality with the fixture.
    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>>;

    /// Remove a namespace made by [`seed`](Self::seed). Called once per seeded namespace
    /// after each case, whatever its outcome. The default does nothing.
    async fn cleanup(&self, sink: Arc<dyn Sink>) -> Result<()> {
        let _ = sink;
        Ok(())
    }

    /// A source whose credentials are wrong: the suite expects a permanent
    /// `Unauthenticated` or `PermissionDenied` error from `check()` or the first page.
    /// `None` (the default) skips the case.
    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        None
    }

    /// A source that is being throttled right now: the suite expects a temporary
    /// `RateLimited` error from the first page. `None` (the default) skips the case.
    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        None
    }

    /// Change a namespace "from outside", for change detection (`cursor_resume`). The
    /// default applies the op through the sink itself; a harness whose provider records
    /// changes differently for API writes can go another way (an admin API, a file edit).
    async fn mutate(&self, sink: &Arc<dyn Sink>, op: &Op) -> Result<Applied> {
        sink.apply(op).await
    }

    /// How many listing pages (orgs and accounts) the provider behind the seeded namespaces
    /// has served so far — a fake server's request counter, a proxy's count of searches, the
    /// memory adapter's page counter. The `lookups` case checks that single-entity lookups
    /// (`org`, `account`, `find_accounts`) list nothing; `None` (the default) leaves that
    /// check out (the lookups are still checked for what they return).
    fn listing_reads(&self) -> Option<u64> {
        None
    }

    /// An anchor in this adapter's format that names no entity (for `missing_entity`).
    /// The default is a random string, fine for adapters whose anchors are free-form.
    fn missing_anchor(&self, kind: EntityKind) -> Anchor {
        let n: u64 = rand::random();
        Anchor::from(format!("idsync-missing-{}-{n:016x}", kind.as_str()))
    }

    /// Tuning for providers with limits.
    fn options(&self) -> Options {
        Options::default()
    }
}

/// Tuning a harness can ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Depth of the `deep_tree` case (20).
    pub deep_tree_depth: usize,
    /// Account fields compared (default: [`ACCOUNT_FIELDS`], all of them). Narrow it only
    /// for fields the provider cannot store, and say so in the adapter's docs.
    pub account_fields: Vec<&'static str>,
    /// Page sizes the `page_boundaries` case uses (default 1, 2, 3), capped at the
    /// adapter's `max_page_size`.
    pub page_sizes: Vec<usize>,
    /// Cases to skip, with the reason shown in the report.
    pub skip: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            deep_tree_depth: 20,
            account_fields: ACCOUNT_FIELDS.to_vec(),
            page_sizes: vec![1, 2, 3],
            skip: Vec::new(),
        }
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It did not apply to this adapter; the reason.
    Skipped(String),
    /// It failed; what went wrong.
    Failed(String),
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name (see [`CASES`]).
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub elapsed: Duration,
}

/// What [`run_all`] found.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The harness's name.
    pub harness: String,
    /// The capabilities the suite went by.
    pub capabilities: Option<Capabilities>,
    /// Every case, in order.
    pub cases: Vec<CaseReport>,
}

impl SuiteReport {
    /// True when no case failed.
    pub fn passed(&self) -> bool {
        !self
            .cases
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// Names of the cases that passed.
    pub fn passed_cases(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Passed))
    }

    /// Names of the cases that were skipped.
    pub fn skipped_cases(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// Names of the cases that failed.
    pub fn failed_cases(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Failed(_)))
    }

    fn with(&self, f: impl Fn(&Outcome) -> bool) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| f(&c.outcome))
            .map(|c| c.name)
            .collect()
    }

    /// Panic with the readable summary if any case failed (test support).
    #[allow(clippy::panic)]
    pub fn assert_passed(&self) {
        if !self.passed() {
            panic!("conformance suite failed\n{self}");
        }
    }
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance {}: {} passed, {} skipped, {} failed",
            self.harness,
            self.passed_cases().len(),
            self.skipped_cases().len(),
            self.failed_cases().len()
        )?;
        for c in &self.cases {
            match &c.outcome {
                Outcome::Passed => writeln!(f, "  ok      {} ({:?})", c.name, c.elapsed)?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {}: {why}", c.name)?,
                Outcome::Failed(why) => {
                    writeln!(f, "  FAILED  {}:", c.name)?;
                    for line in why.lines() {
                        writeln!(f, "          {line}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a case function gets: the harness, the sink's capabilities and options, and a
/// record of the namespaces seeded (cleaned up after the case).
pub struct Ctx<'a> {
    /// The harness.
    pub harness: &'a dyn Harness,
    /// The capabilities of the harness's sinks.
    pub caps: Capabilities,
    /// The harness's options.
    pub options: Options,
    seeded: Mutex<Vec<Arc<dyn Sink>>>,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("harness", &self.harness.name())
            .field("caps", &self.caps)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// Learn the capabilities by seeding (and cleaning up) an empty namespace.
    pub async fn new(harness: &'a dyn Harness) -> Result<Ctx<'a>> {
        let probe = harness.seed(Vec::new(), Vec::new()).await?;
        let caps = probe.capabilities();
        harness.cleanup(probe).await?;
        Ok(Ctx {
            harness,
            caps,
            options: harness.options(),
            seeded: Mutex::new(Vec::new()),
        })
    }

    /// Seed a namespace with a fixture (its orgs dropped when the adapter has no orgs),
    /// remembering it for cleanup.
    pub async fn seed(&self, fx: &Fixture) -> Result<Arc<dyn Sink>> {
        let fx = self.fit(fx);
        let sink = self.harness.seed(fx.orgs, fx.accounts).await?;
        if let Ok(mut s) = self.seeded.lock() {
            s.push(sink.clone());
        }
        Ok(sink)
    }

    /// The fixture as this adapter can hold it.
    pub fn fit(&self, fx: &Fixture) -> Fixture {
        if self.caps.orgs {
            fx.clone()
        } else {
            fx.clone().without_orgs()
        }
    }

    /// Clean up every namespace seeded so far.
    pub async fn cleanup(&self) -> Result<()> {
        let sinks: Vec<Arc<dyn Sink>> = match self.seeded.lock() {
            Ok(mut s) => s.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        let mut first_err = None;
        for s in sinks {
            if let Err(e) = self.harness.cleanup(s).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Run one case by name (see [`CASES`]), cleaning up what it seeded.
pub async fn run_case(cx: &Ctx<'_>, name: &'static str) -> CaseReport {
    let started = Instant::now();
    let skipped: Option<String> = cx
        .options
        .skip
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| why.clone());
    let outcome = if let Some(why) = skipped {
        Outcome::Skipped(format!("skipped by the harness: {why}"))
    } else {
        let r = cases::run(cx, name).await;
        let cleaned = cx.cleanup().await;
        match (r, cleaned) {
            (Ok(cases::Verdict::Passed), Ok(())) => Outcome::Passed,
            (Ok(cases::Verdict::Skipped(why)), Ok(())) => Outcome::Skipped(why),
            (Err(f), _) => Outcome::Failed(f.0),
            (Ok(_), Err(e)) => Outcome::Failed(format!("cleanup failed: {e}")),
        }
    };
    CaseReport {
        name,
        outcome,
        elapsed: started.elapsed(),
    }
}

/// Run every case against the harness. Never panics; see [`SuiteReport::assert_passed`].
pub async fn run_all(harness: &dyn Harness) -> SuiteReport {
    let mut report = SuiteReport {
        harness: harness.name(),
        capabilities: None,
        cases: Vec::new(),
    };
    let cx = match Ctx::new(harness).await {
        Ok(cx) => cx,
        Err(e) => {
            report.cases.push(CaseReport {
                name: "seed_empty",
                outcome: Outcome::Failed(format!("could not seed an empty namespace: {e}")),
                elapsed: Duration::ZERO,
            });
            return report;
        }
    };
    report.capabilities = Some(cx.caps.clone());
    for name in CASES {
        report.cases.push(run_case(&cx, name).await);
    }
    report
}
