//! The engine's promises on the target side and across runs (issue 10): short target reads
//! are refused, the guard measures what the job links over a rolling window, approvals of
//! stale or dry-run plans are refused, creates whose answer was lost are adopted, and
//! correlation keys follow one rule in full and incremental runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::source::{Applied, Capabilities, Descriptor, Page, PageRequest};
use idsync_core::*;

fn person(anchor: &str) -> Account {
    let mut a = Account::new(anchor, format!("user{anchor}"));
    a.email = Some(format!("user{anchor}@example.com"));
    a
}

fn people(n: usize) -> Vec<Account> {
    (0..n).map(|i| person(&format!("{i:05}"))).collect()
}

struct World {
    clock: Arc<ManualClock>,
    source: Arc<MemoryAdapter>,
    target: Arc<MemoryAdapter>,
    engine: Engine,
    job: Job,
}

fn world(source: Vec<Account>, target: Vec<Account>) -> World {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock.clone()));
    let source = Arc::new(MemoryAdapter::with_data("src", vec![], source));
    let target = Arc::new(MemoryAdapter::with_data("tgt", vec![], target));
    let engine = Engine::new(store).with_clock(clock.clone());
    let job = Job::new("job-x", source.clone(), target.clone());
    World {
        clock,
        source,
        target,
        engine,
        job,
    }
}

#[tokio::test]
async fn a_short_or_empty_target_listing_is_refused_before_planning() {
    let w = world(people(100), vec![]);
    let r = w.engine.run(&w.job).await.unwrap();
    assert_eq!(r.counts.applied, 100);

    // 20 linked accounts vanish from the target's listing (say, an ACL change).
    w.target
        .edit(|d| d.accounts.retain(|a, _| a.as_str() >= "00020"))
        .unwrap();
    let e = w.engine.run(&w.job).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incomplete, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("job-x") && msg.contains("target"), "{msg}");
    assert!(msg.contains("20 of the 100 linked accounts"), "{msg}");
    assert_eq!(
        w.target.snapshot().unwrap().accounts.len(),
        80,
        "nothing re-created"
    );

    // An empty listing while links exist.
    w.target.edit(|d| d.accounts.clear()).unwrap();
    let e = w.engine.run(&w.job).await.unwrap_err();
    assert!(e.to_string().contains("listed no accounts"), "{e}");
    assert!(w.target.snapshot().unwrap().accounts.is_empty());
}

#[tokio::test]
async fn a_few_missing_targets_are_recreated_and_counted_by_the_guard() {
    let w = world(people(100), vec![]);
    w.engine.run(&w.job).await.unwrap();
    w.target
        .edit(|d| {
            d.accounts.remove(&Anchor::from("00007"));
        })
        .unwrap();
    // 1 of 100 is within the default 5%: the link is dropped and the account created again.
    let plan = w.engine.plan(&w.job).await.unwrap();
    assert_eq!(plan.count(OpKind::CreateAccount), 1);
    assert_eq!(plan.stale_links.len(), 1);
    // The guard counts it: with a limit of 0 destructive ops it stops the plan.
    let mut job = w.job.clone();
    job.guard.destructive_accounts = Threshold::new(Some(0), None);
    job.guard.window = Duration::ZERO;
    let e = w.engine.run(&job).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Incomplete, "{e}");
}

#[tokio::test]
async fn the_guard_percentage_is_of_what_the_job_links_not_of_the_whole_target() {
    // The target holds 10,000 accounts of others; this job links 400.
    let others: Vec<Account> = (0..10_000)
        .map(|i| person(&format!("other{i:05}")))
        .collect();
    let w = world(people(400), others);
    let r = w.engine.run(&w.job).await.unwrap();
    assert_eq!(r.counts.applied, 400);
    // 399 of its 400 leave the source: 3.8% of the target, 99.75% of what it links.
    w.source
        .edit(|d| d.accounts.retain(|a, _| a.as_str() == "00000"))
        .unwrap();
    let r = w.engine.run(&w.job).await.unwrap();
    assert_eq!(r.status, RunStatus::NeedsApproval, "{:?}", r.guard);
    assert!(
        r.guard.reasons.iter().any(|m| m.contains("399 of 400")),
        "{:?}",
        r.guard.reasons
    );
    assert_eq!(
        w.target
            .snapshot()
            .unwrap()
            .accounts
            .values()
            .filter(|a| a.status == Status::Disabled)
            .count(),
        0
    );
}

#[tokio::test]
async fn runs_under_the_threshold_cannot_add_up_past_it_within_the_window() {
    let w = world(people(400), vec![]);
    w.engine.run(&w.job).await.unwrap();
    w.engine.run_changes(&w.job).await.unwrap(); // takes the cursor
    // 15 leave (3.75% of 400): applied.
    w.source
        .edit(|d| {
            for i in 0..15 {
                d.accounts.remove(&Anchor::from(format!("{i:05}")));
            }
        })
        .unwrap();
    let r = w.engine.run_changes(&w.job).await.unwrap();
    assert_eq!(r.counts.by_op.get(&OpKind::DisableAccount), Some(&15));
    // 15 more an hour later: 30 in the window (7.5%) stops it.
    w.clock.advance(chrono::Duration::seconds(3600));
    w.source
        .edit(|d| {
            for i in 15..30 {
                d.accounts.remove(&Anchor::from(format!("{i:05}")));
            }
        })
        .unwrap();
    let r = w.engine.run_changes(&w.job).await.unwrap();
    assert_eq!(r.status, RunStatus::NeedsApproval, "{:?}", r);
    assert!(
        r.guard.reasons.iter().any(|m| m.contains("last 24 h")),
        "{:?}",
        r.guard.reasons
    );
    // A day later the first 15 are outside the window: the next run goes through.
    w.clock.advance(chrono::Duration::seconds(24 * 3600));
    let r = w.engine.run_changes(&w.job).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.guard);
    assert_eq!(r.counts.by_op.get(&OpKind::DisableAccount), Some(&15));
}

#[tokio::test]
async fn stale_and_dry_run_plans_cannot_be_approved() {
    let w = world(people(100), vec![]);
    w.engine.run(&w.job).await.unwrap();
    w.source
        .edit(|d| d.accounts.retain(|a, _| a.as_str() < "00050"))
        .unwrap();

    // A dry run that the guard would stop leaves a record that cannot be approved.
    let dry = w.engine.plan(&w.job).await.unwrap();
    assert!(dry.guard.stopped);
    let e = w.engine.approve(&w.job, &dry.run_id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("dry run"), "{e}");

    // A stopped run, approved two hours later: too old.
    let r = w.engine.run(&w.job).await.unwrap();
    assert_eq!(r.status, RunStatus::NeedsApproval);
    w.clock.advance(chrono::Duration::seconds(2 * 3600));
    let e = w.engine.approve(&w.job, &r.run_id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("run the job again"), "{e}");

    // A fresh one, after which the source changed: refused.
    let r = w.engine.run(&w.job).await.unwrap();
    w.source
        .edit(|d| {
            d.accounts.insert(Anchor::from("99999"), person("99999"));
        })
        .unwrap();
    let e = w.engine.approve(&w.job, &r.run_id).await.unwrap_err();
    assert!(e.to_string().contains("source changed"), "{e}");

    // A fresh one, whose target was changed by someone else meanwhile: refused.
    let r = w.engine.run(&w.job).await.unwrap();
    w.target
        .edit(|d| {
            if let Some(a) = d.accounts.get_mut(&Anchor::from("00070")) {
                a.status = Status::Disabled;
            }
        })
        .unwrap();
    let e = w.engine.approve(&w.job, &r.run_id).await.unwrap_err();
    assert!(e.to_string().contains("target changed"), "{e}");

    // A fresh one, approved at once: applied.
    let r = w.engine.run(&w.job).await.unwrap();
    let done = w.engine.approve(&w.job, &r.run_id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert!(done.counts.approved);
}

/// A sink that applies a create and then loses the answer (a reset after the write).
#[derive(Debug)]
struct LosesAnswer {
    inner: MemoryAdapter,
    lost: AtomicUsize,
}

#[async_trait]
impl Source for LosesAnswer {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.inner.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.inner.accounts(page).await
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
}

#[async_trait]
impl Sink for LosesAnswer {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let applied = self.inner.apply(op).await?;
        if op.is_create() && self.lost.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "connection reset after write",
            ));
        }
        Ok(applied)
    }
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_for_sinks_that_assign_anchors_or_not() {
    for assigning in [false, true] {
        let mut inner = MemoryAdapter::new("tgt");
        if assigning {
            inner = inner.assigning_anchors();
        }
        let sink = Arc::new(LosesAnswer {
            inner,
            lost: AtomicUsize::new(0),
        });
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let source = Arc::new(MemoryAdapter::with_data("src", vec![], vec![person("a1")]));
        let engine = Engine::new(store.clone());
        let job = Job::new("lost", source, sink.clone());
        let r = engine.run(&job).await.unwrap();
        assert_eq!(r.counts.failed, 1, "assigning {assigning}");
        let open = store.open_intents("lost").await.unwrap();
        assert_eq!(open.len(), 1, "assigning {assigning}");
        assert_eq!(open[0].state, JournalState::Unknown);
        // The rerun looks the entity up first and adopts it.
        let r = engine.run(&job).await.unwrap();
        assert_eq!(r.counts.failed, 0, "assigning {assigning}: {r:?}");
        assert_eq!(
            r.counts.by_op.get(&OpKind::CreateAccount),
            None,
            "assigning {assigning}"
        );
        assert_eq!(
            sink.inner.snapshot().unwrap().accounts.len(),
            1,
            "assigning {assigning}: exactly one entity"
        );
        let links = engine.links("lost", EntityKind::Account).await.unwrap();
        assert_eq!(links.len(), 1, "assigning {assigning}: exactly one link");
        assert!(store.open_intents("lost").await.unwrap().is_empty());
        assert!(engine.plan(&job).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn non_ascii_keys_correlate_the_same_in_full_and_incremental_runs() {
    let mut t1 = Account::new("t1", "someone");
    t1.email = Some("ärger@example.com".into());
    let t2 = Account::new("t2", "ｚｈａｎｇ");
    let target = vec![t1, t2];
    let mut s1 = Account::new("s1", "other");
    s1.email = Some("  Ärger@Example.COM ".into());
    let s2 = Account::new("s2", "ＺＨＡＮＧ");
    let source = vec![s1, s2];
    let links = |plan: &Plan| {
        let mut v: Vec<(String, String)> = plan
            .links
            .iter()
            .map(|l| (l.source.as_str().to_owned(), l.target.as_str().to_owned()))
            .collect();
        v.sort();
        v
    };
    let want = vec![
        ("s1".to_owned(), "t1".to_owned()),
        ("s2".to_owned(), "t2".to_owned()),
    ];
    let mut full = world(source.clone(), target.clone());
    full.job.correlation = vec!["email".into(), "username".into()];
    let plan = full.engine.plan(&full.job).await.unwrap();
    assert_eq!(links(&plan), want, "full run");
    assert_eq!(plan.count(OpKind::CreateAccount), 0);

    let mut inc = world(vec![], target);
    inc.job.correlation = vec!["email".into(), "username".into()];
    let cs = ChangeSet {
        account_upserts: source,
        complete: true,
        ..ChangeSet::default()
    };
    let plan = inc.engine.plan_changes(&inc.job, cs, None).await.unwrap();
    assert_eq!(links(&plan), want, "incremental run");
    assert_eq!(plan.count(OpKind::CreateAccount), 0);
}
