//! Engine behaviour on the memory adapter and the memory hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use idsync_core::engine::OpState;
use idsync_core::source::collect_accounts;
use idsync_core::*;

fn org(a: &str, p: Option<&str>, name: &str) -> Org {
    Org::new(a, p.map(Anchor::from), name)
}

fn person(a: &str, user: &str, orgs: &[&str]) -> Account {
    let mut acc = Account::new(a, user);
    acc.display_name = Some(user.to_uppercase());
    acc.email = Some(format!("{user}@example.com"));
    acc.employee_id = Some(format!("E{a}"));
    acc.orgs = orgs.iter().map(|o| Anchor::from(*o)).collect();
    acc
}

fn sample() -> (Vec<Org>, Vec<Account>) {
    let orgs = vec![
        org("root", None, "公司"),
        org("rd", Some("root"), "研发中心"),
        org("be", Some("rd"), "后端组"),
        org("fe", Some("rd"), "前端组"),
        org("hr", Some("root"), "人力资源"),
    ];
    let mut accounts = vec![
        person("1", "zhangsan", &["be"]),
        person("2", "lisi", &["fe", "hr"]),
        person("3", "alice", &["hr"]),
        person("4", "bob", &["root"]),
    ];
    accounts[0].manager = Some("4".into());
    accounts[1].manager = Some("1".into());
    (orgs, accounts)
}

struct Setup {
    source: Arc<MemoryAdapter>,
    store: Arc<dyn Store>,
    engine: Engine,
    job: Job,
}

fn setup_with(sink: impl Into<Target>, store: Arc<dyn Store>) -> Setup {
    let (orgs, accounts) = sample();
    let source = Arc::new(MemoryAdapter::with_data("src", orgs, accounts));
    let engine = Engine::new(store.clone());
    let job = Job::new("test", source.clone(), sink).with_guard(Guard::off());
    Setup {
        source,
        store,
        engine,
        job,
    }
}

fn hub_setup() -> Setup {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    setup_with(hub, store)
}

#[tokio::test]
async fn first_run_creates_second_run_is_empty() {
    let s = hub_setup();
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::CreateOrg),
        Some(&5)
    );
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::CreateAccount),
        Some(&4)
    );
    // managers are created first and carried by the creates: no follow-up ops
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::UpdateAccount),
        None
    );
    let hub_acc = s.store.hub_account(&"1".into()).await.unwrap().unwrap();
    assert_eq!(hub_acc.manager, Some("4".into()));
    let lisi = s.store.hub_account(&"2".into()).await.unwrap().unwrap();
    assert_eq!(lisi.orgs, vec![Anchor::from("fe"), Anchor::from("hr")]);
    let plan = s.engine.plan(&s.job).await.unwrap();
    assert!(plan.is_empty(), "second plan: {plan:#?}");
    // the journal and the audit trail have every op
    let journal = s.store.journal(&r.run_id).await.unwrap();
    assert_eq!(journal.len(), r.counts.applied);
    assert!(journal.iter().all(|j| j.state == JournalState::Done));
    let trail = s
        .store
        .audit(EntityKind::Account, &"1".into())
        .await
        .unwrap();
    assert_eq!(
        trail.first().unwrap().op,
        idsync_core::OpKind::CreateAccount
    );
    assert!(trail.first().unwrap().after.is_some());
}

#[tokio::test]
async fn plan_is_ordered_and_serializable() {
    let s = hub_setup();
    let plan = s.engine.plan(&s.job).await.unwrap();
    let names: Vec<&str> = plan.ops.iter().map(|p| p.op.name()).collect();
    let first_account = names.iter().position(|n| n.ends_with("_account")).unwrap();
    assert!(names[..first_account].iter().all(|n| *n == "create_org"));
    // parent before child
    let pos = |a: &str| {
        plan.ops
            .iter()
            .position(|p| p.op.anchor().as_str() == a && p.op.name() == "create_org")
            .unwrap()
    };
    assert!(pos("root") < pos("rd") && pos("rd") < pos("be"));
    let json = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    // a second plan of the same input is identical apart from run id and time
    let again = s.engine.plan(&s.job).await.unwrap();
    assert_eq!(
        serde_json::to_value(&again.ops).unwrap(),
        serde_json::to_value(&plan.ops).unwrap()
    );
}

#[tokio::test]
async fn rename_and_move_are_update_and_move_never_delete_create() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    s.source
        .edit(|d| {
            d.orgs.get_mut(&Anchor::from("be")).unwrap().name = "服务端组".into();
            d.orgs.get_mut(&Anchor::from("fe")).unwrap().parent = Some("hr".into());
            let z = d.accounts.get_mut(&Anchor::from("1")).unwrap();
            z.title = Some("Engineer".into());
            z.orgs = vec!["fe".into()];
        })
        .unwrap();
    let plan = s.engine.plan(&s.job).await.unwrap();
    let names: Vec<&str> = plan.ops.iter().map(|p| p.op.name()).collect();
    assert_eq!(
        names,
        vec!["update_org", "move_org", "update_account"],
        "{plan:#?}"
    );
    match &plan.ops[2].op {
        Op::UpdateAccount { changes, .. } => {
            let keys: Vec<&String> = changes.keys().collect();
            assert_eq!(keys, vec!["orgs", "title"], "only changed fields");
        }
        other => panic!("{other:?}"),
    }
    let r = s.engine.apply(&s.job, &plan).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    let fe = s.store.hub_org(&"fe".into()).await.unwrap().unwrap();
    assert_eq!(fe.parent, Some("hr".into()));
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
}

#[tokio::test]
async fn removed_accounts_are_disabled_by_default_and_deleted_on_request() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    s.source
        .edit(|d| {
            d.accounts.remove(&Anchor::from("3"));
        })
        .unwrap();
    let plan = s.engine.plan(&s.job).await.unwrap();
    assert_eq!(plan.ops.len(), 1);
    assert_eq!(plan.ops[0].op, Op::DisableAccount { anchor: "3".into() });
    s.engine.apply(&s.job, &plan).await.unwrap();
    let alice = s.store.hub_account(&"3".into()).await.unwrap().unwrap();
    assert_eq!(alice.status, Status::Disabled);
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
    // with the delete policy the disabled account goes
    let job = s.job.clone().with_deletion(DeletionPolicy::Delete);
    let r = s.engine.run(&job).await.unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::DeleteAccount),
        Some(&1)
    );
    assert!(s.store.hub_account(&"3".into()).await.unwrap().is_none());
}

#[tokio::test]
async fn guard_stops_mass_disable_and_approval_applies_it() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    s.source
        .edit(|d| {
            d.accounts.remove(&Anchor::from("2"));
            d.accounts.remove(&Anchor::from("3"));
        })
        .unwrap();
    let job = s.job.clone().with_guard(Guard::default());
    let r = s.engine.run(&job).await.unwrap();
    assert_eq!(r.status, RunStatus::NeedsApproval);
    assert!(r.guard.reasons[0].contains("50.0%"), "{:?}", r.guard);
    // nothing applied
    let lisi = s.store.hub_account(&"2".into()).await.unwrap().unwrap();
    assert_eq!(lisi.status, Status::Active);
    let run = s.store.run(&r.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::NeedsApproval);
    let approved = s.engine.approve(&job, &r.run_id).await.unwrap();
    assert_eq!(
        approved
            .counts
            .by_op
            .get(&idsync_core::OpKind::DisableAccount),
        Some(&2)
    );
    let lisi = s.store.hub_account(&"2".into()).await.unwrap().unwrap();
    assert_eq!(lisi.status, Status::Disabled);
}

#[test]
fn default_guard_thresholds() {
    let g = Guard::default();
    assert_eq!(g.destructive_accounts.max_count, Some(500));
    assert_eq!(g.destructive_accounts.max_percent, Some(5.0));
}

/// A source whose account listing fails after the first page.
#[derive(Debug)]
struct Flaky {
    inner: MemoryAdapter,
    fault: Fault,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The second page fails with a transport error.
    Reset,
    /// The listing is empty.
    Empty,
    /// The adapter panics on the second page.
    Panic,
}

#[async_trait]
impl Source for Flaky {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: false,
            ..self.inner.capabilities()
        }
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.inner.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        match (self.fault, page.token.is_some()) {
            (Fault::Empty, _) => return Ok(Page::last(vec![])),
            (Fault::Reset, true) => {
                return Err(Error::new(ErrorKind::Unavailable, "connection reset"));
            }
            #[allow(clippy::panic)]
            (Fault::Panic, true) => panic!("an adapter bug"),
            (_, false) => {}
        }
        let mut p = self.inner.accounts(PageRequest::sized(1)).await?;
        p.next = p.next.or(Some(PageToken("x".into())));
        Ok(p)
    }

    async fn org(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Org>> {
        self.inner.org(anchor).await
    }

    async fn account(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Account>> {
        self.inner.account(anchor).await
    }

    async fn find_accounts(
        &self,
        field: &str,
        value: &str,
    ) -> idsync_core::Result<Vec<idsync_core::Account>> {
        self.inner.find_accounts(field, value).await
    }
}

// Two workers: the source is listed by a task of its own beside the planner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_empty_read_never_disables_anyone() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    let (orgs, accounts) = sample();
    for fault in [Fault::Reset, Fault::Empty, Fault::Panic] {
        let flaky = Arc::new(Flaky {
            inner: MemoryAdapter::with_data("src", orgs.clone(), accounts.clone()),
            fault,
        });
        let mut job = s.job.clone();
        job.source = flaky;
        let err = s.engine.run(&job).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Incomplete, "{fault:?}: {err}");
        if let Fault::Panic = fault {
            assert!(err.to_string().contains("stopped before its end"), "{err}");
        }
        let all = collect_accounts(&Hub::new(s.store.clone())).await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|a| a.status == Status::Active), "{fault:?}");
    }
    let failed = s.store.runs(Some("test"), 10).await.unwrap();
    assert!(failed.iter().any(|r| r.status == RunStatus::Failed));
}

#[test]
fn plans_outside_a_tokio_runtime() {
    // Without a runtime the listings are read inline instead of by tasks of their own.
    let s = hub_setup();
    let plan = futures::executor::block_on(s.engine.plan(&s.job)).unwrap();
    assert_eq!(plan.count(idsync_core::OpKind::CreateAccount), 4);
    assert_eq!(plan.count(idsync_core::OpKind::CreateOrg), 5);
}

#[tokio::test]
async fn correlation_links_unique_matches_and_reports_ambiguity() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // The target already has people, created by hand, with other anchors.
    let mut t1 = person("T1", "zhangsan", &[]);
    t1.employee_id = Some("E1".into());
    let mut t2 = person("T2", "x", &[]);
    t2.email = Some("ALICE@example.com".into());
    t2.employee_id = None;
    let mut t3 = person("T3", "y", &[]);
    t3.email = Some("alice@example.com ".into());
    t3.employee_id = None;
    let target = Arc::new(MemoryAdapter::with_data("tgt", vec![], vec![t1, t2, t3]));
    let source = Arc::new(MemoryAdapter::with_data(
        "src",
        vec![],
        vec![person("1", "zhangsan", &[]), person("3", "alice", &[])],
    ));
    let mut job = Job::new("corr", source, target.clone()).with_guard(Guard::off());
    job.sync_orgs = false;
    let engine = Engine::new(store);
    let plan = engine.plan(&job).await.unwrap();
    assert_eq!(plan.links.len(), 1);
    assert_eq!(plan.links[0].target.as_str(), "T1");
    assert_eq!(plan.conflicts.len(), 1, "{plan:#?}");
    assert_eq!(plan.conflicts[0].source.as_str(), "3");
    assert_eq!(plan.conflicts[0].candidates.len(), 2);
    assert!(
        plan.ops
            .iter()
            .all(|p| p.source.as_ref().unwrap().as_str() != "3")
    );
    let r = engine.apply(&job, &plan).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    let links = engine.links("corr", EntityKind::Account).await.unwrap();
    assert_eq!(links.len(), 1);
    // T2/T3 untouched (not ours), no duplicate of zhangsan
    let all = collect_accounts(target.as_ref()).await.unwrap();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn mapping_owns_only_its_fields() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let target = Arc::new(MemoryAdapter::with_data("tgt", vec![], vec![]));
    let (_, accounts) = sample();
    let source = Arc::new(MemoryAdapter::with_data("src", vec![], accounts));
    let mapping = Mapping {
        accounts: mapping::EntityMapping::rules(vec![
            FieldRule::copy("username", "username"),
            FieldRule::template("email", "{username}@corp.example"),
        ]),
        ..Mapping::identity()
    };
    let mut job = Job::new("own", source, target.clone())
        .with_guard(Guard::off())
        .with_mapping(mapping);
    job.sync_orgs = false;
    let engine = Engine::new(store);
    engine.run(&job).await.unwrap();
    // someone else sets a title in the target: not ours, never compared or overwritten
    target
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("1")).unwrap().title = Some("CTO".into());
        })
        .unwrap();
    assert!(engine.plan(&job).await.unwrap().is_empty());
    let a = target.account(&"1".into()).await.unwrap().unwrap();
    assert_eq!(a.email.as_deref(), Some("zhangsan@corp.example"));
    assert_eq!(a.display_name, None);
}

#[tokio::test]
async fn sinks_that_assign_anchors_get_pending_references_resolved() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let target = Arc::new(MemoryAdapter::new("tgt").assigning_anchors());
    let s = setup_with(target.clone(), store);
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let snap = target.snapshot().unwrap();
    let be = snap.orgs.values().find(|o| o.name == "后端组").unwrap();
    let rd = snap.orgs.values().find(|o| o.name == "研发中心").unwrap();
    assert_eq!(be.parent.as_ref(), Some(&rd.anchor));
    assert!(be.anchor.as_str().starts_with("mo"));
    let z = snap
        .accounts
        .values()
        .find(|a| a.username == "zhangsan")
        .unwrap();
    let bob = snap
        .accounts
        .values()
        .find(|a| a.username == "bob")
        .unwrap();
    assert_eq!(z.manager.as_ref(), Some(&bob.anchor));
    assert_eq!(z.orgs, vec![be.anchor.clone()]);
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
}

/// A sink that fails every op on one anchor.
#[derive(Debug)]
struct Refusing {
    inner: MemoryAdapter,
    refuse: &'static str,
    calls: AtomicUsize,
}

#[async_trait]
impl Source for Refusing {
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

    async fn org(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Org>> {
        self.inner.org(anchor).await
    }

    async fn account(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Account>> {
        self.inner.account(anchor).await
    }

    async fn find_accounts(
        &self,
        field: &str,
        value: &str,
    ) -> idsync_core::Result<Vec<idsync_core::Account>> {
        self.inner.find_accounts(field, value).await
    }
}

#[async_trait]
impl Sink for Refusing {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if op.anchor().as_str() == self.refuse {
            return Err(Error::new(ErrorKind::PermissionDenied, "no").with_provider_code("60011"));
        }
        self.inner.apply(op).await
    }
}

#[tokio::test]
async fn a_failed_op_skips_its_dependents_only() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sink = Arc::new(Refusing {
        inner: MemoryAdapter::new("tgt"),
        refuse: "rd",
        calls: AtomicUsize::new(0),
    });
    let s = setup_with(sink.clone(), store);
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.status, RunStatus::PartiallyFailed);
    let failed: Vec<&OpOutcome> = r.failures().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].error.as_ref().unwrap().provider_code.as_deref(),
        Some("60011")
    );
    let skipped: Vec<_> = r
        .outcomes
        .iter()
        .filter(|o| o.state == OpState::Skipped)
        .collect();
    // be, fe (children of rd), and the accounts in be/fe, and updates of those
    assert!(
        skipped
            .iter()
            .any(|o| o.source.as_ref().unwrap().as_str() == "be")
    );
    assert!(
        skipped
            .iter()
            .any(|o| o.source.as_ref().unwrap().as_str() == "1")
    );
    // unrelated: hr and alice went through
    let snap = sink.inner.snapshot().unwrap();
    assert!(snap.orgs.contains_key(&Anchor::from("hr")));
    assert!(snap.accounts.contains_key(&Anchor::from("3")));
    assert!(!snap.accounts.contains_key(&Anchor::from("1")));
}

#[tokio::test]
async fn incremental_runs_touch_only_changes_and_commit_the_cursor_after_success() {
    let s = hub_setup();
    let first = s.engine.run_changes(&s.job).await.unwrap(); // no cursor: full
    assert!(first.cursor_committed);
    let c1 = s.store.cursor("test").await.unwrap().unwrap();
    s.source
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("3")).unwrap().title = Some("HRBP".into());
            d.accounts.remove(&Anchor::from("4"));
            d.accounts
                .insert("5".into(), person("5", "wangwu", &["be"]));
            d.orgs.insert("qa".into(), org("qa", Some("rd"), "测试组"));
        })
        .unwrap();
    let plan = s
        .engine
        .plan_changes(
            &s.job,
            s.source.changes(&c1).await.unwrap(),
            Some(c1.clone()),
        )
        .await
        .unwrap();
    assert!(plan.incremental);
    let names: Vec<&str> = plan.ops.iter().map(|p| p.op.name()).collect();
    assert_eq!(
        names,
        vec![
            "create_org",
            "create_account",
            "update_account",
            "disable_account"
        ],
        "{plan:#?}"
    );
    assert_eq!(plan.read["source_accounts"], 2);
    let r = s.engine.run_changes(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    assert!(r.cursor_committed);
    assert_ne!(s.store.cursor("test").await.unwrap().unwrap(), c1);
    assert_eq!(
        s.store
            .hub_account(&"4".into())
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Disabled
    );
    assert!(s.store.hub_account(&"5".into()).await.unwrap().is_some());
    // nothing new: empty
    let again = s.engine.run_changes(&s.job).await.unwrap();
    assert_eq!(again.counts.planned, 0);
    // and a full plan agrees
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
}

#[tokio::test]
async fn incremental_failure_keeps_the_cursor() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sink = Arc::new(Refusing {
        inner: MemoryAdapter::new("tgt"),
        refuse: "6",
        calls: AtomicUsize::new(0),
    });
    let s = setup_with(sink, store);
    s.engine.run_changes(&s.job).await.unwrap();
    let c1 = s.store.cursor("test").await.unwrap();
    s.source
        .edit(|d| {
            d.accounts
                .insert("6".into(), person("6", "zhaoliu", &["be"]));
        })
        .unwrap();
    let r = s.engine.run_changes(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 1);
    assert!(!r.cursor_committed);
    assert_eq!(s.store.cursor("test").await.unwrap(), c1);
}

#[tokio::test]
async fn unreadable_sinks_are_diffed_against_the_shadow_copy() {
    #[derive(Debug)]
    struct PushOnly(MemoryAdapter);
    #[async_trait]
    impl Source for PushOnly {
        fn describe(&self) -> Descriptor {
            Descriptor::new("push", "t")
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                readable: false,
                changes: false,
                ..Capabilities::read_write()
            }
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn orgs(&self, _: PageRequest) -> Result<Page<Org>> {
            Err(Error::unsupported("push only"))
        }
        async fn accounts(&self, _: PageRequest) -> Result<Page<Account>> {
            Err(Error::unsupported("push only"))
        }

        async fn org(
            &self,
            anchor: &idsync_core::Anchor,
        ) -> idsync_core::Result<Option<idsync_core::Org>> {
            self.0.org(anchor).await
        }

        async fn account(
            &self,
            anchor: &idsync_core::Anchor,
        ) -> idsync_core::Result<Option<idsync_core::Account>> {
            self.0.account(anchor).await
        }

        async fn find_accounts(
            &self,
            field: &str,
            value: &str,
        ) -> idsync_core::Result<Vec<idsync_core::Account>> {
            self.0.find_accounts(field, value).await
        }
    }
    #[async_trait]
    impl Sink for PushOnly {
        async fn apply(&self, op: &Op) -> Result<Applied> {
            self.0.apply(op).await
        }
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sink = Arc::new(PushOnly(MemoryAdapter::new("p")));
    let s = setup_with(sink.clone(), store);
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
    s.source
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("2")).unwrap().title = Some("PM".into());
        })
        .unwrap();
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::UpdateAccount),
        Some(&1)
    );
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
    assert_eq!(
        sink.0
            .account(&"2".into())
            .await
            .unwrap()
            .unwrap()
            .title
            .as_deref(),
        Some("PM")
    );
}

#[tokio::test]
async fn bad_org_trees_are_rejected_naming_the_anchors() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let source = Arc::new(MemoryAdapter::with_data(
        "src",
        vec![org("a", Some("b"), "A"), org("b", Some("a"), "B")],
        vec![],
    ));
    let job = Job::new("cyc", source, hub);
    let err = Engine::new(store).plan(&job).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(
        err.to_string().contains("a -> b") || err.to_string().contains("b -> a"),
        "{err}"
    );
}

#[tokio::test]
async fn upsert_one_account_goes_through_the_same_path() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    let r = s
        .engine
        .upsert_account(&s.job, person("9", "jit", &["hr"]))
        .await
        .unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::CreateAccount),
        Some(&1)
    );
    let jit = s.store.hub_account(&"9".into()).await.unwrap().unwrap();
    assert_eq!(jit.orgs, vec![Anchor::from("hr")]);
    // the same again is a no-op
    let r = s
        .engine
        .upsert_account(&s.job, person("9", "jit", &["hr"]))
        .await
        .unwrap();
    assert_eq!(r.counts.planned, 0);
}

#[tokio::test]
async fn hub_is_an_incremental_source_for_outbound_jobs() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    let hub = Arc::new(Hub::new(s.store.clone()));
    let app = Arc::new(MemoryAdapter::new("app"));
    let out = Job::new("hub-to-app", hub, app.clone()).with_guard(Guard::off());
    s.engine.run_changes(&out).await.unwrap();
    assert_eq!(app.snapshot().unwrap().accounts.len(), 4);
    s.source
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("3")).unwrap().phone = Some("+86 138".into());
        })
        .unwrap();
    s.engine.run(&s.job).await.unwrap();
    let r = s.engine.run_changes(&out).await.unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::UpdateAccount),
        Some(&1),
        "{r:#?}"
    );
    assert_eq!(
        app.account(&"3".into())
            .await
            .unwrap()
            .unwrap()
            .phone
            .as_deref(),
        Some("+86 138")
    );
}

#[tokio::test]
async fn manager_cycles_are_closed_by_a_follow_up_update() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let target = Arc::new(MemoryAdapter::new("tgt").assigning_anchors());
    let mut a = person("a", "ann", &[]);
    let mut b = person("b", "ben", &[]);
    a.manager = Some("b".into());
    b.manager = Some("a".into());
    let mut c = person("c", "cat", &[]);
    c.manager = Some("a".into());
    let source = Arc::new(MemoryAdapter::with_data("src", vec![], vec![a, b, c]));
    let mut job = Job::new("cycle", source, target.clone()).with_guard(Guard::off());
    job.sync_orgs = false;
    let engine = Engine::new(store);
    let r = engine.run(&job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::CreateAccount),
        Some(&3)
    );
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::UpdateAccount),
        Some(&2)
    );
    let snap = target.snapshot().unwrap();
    let by_user = |u: &str| {
        snap.accounts
            .values()
            .find(|x| x.username == u)
            .unwrap()
            .clone()
    };
    let (ann, ben, cat) = (by_user("ann"), by_user("ben"), by_user("cat"));
    assert_eq!(ann.manager.as_ref(), Some(&ben.anchor));
    assert_eq!(ben.manager.as_ref(), Some(&ann.anchor));
    assert_eq!(cat.manager.as_ref(), Some(&ann.anchor));
    assert!(engine.plan(&job).await.unwrap().is_empty());
}

#[tokio::test]
async fn engine_futures_are_send_and_spawnable() {
    let s = hub_setup();
    let engine = s.engine.clone();
    let job = s.job.clone();
    let handle = tokio::spawn(async move { engine.run(&job).await });
    let report = handle.await.unwrap().unwrap();
    assert_eq!(report.counts.failed, 0);
    let engine = s.engine.clone();
    let job = s.job.clone();
    let r = tokio::spawn(async move { engine.run_changes(&job).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.counts.planned, 0);
}

#[tokio::test]
async fn sinks_that_cannot_disable_keep_leavers_with_a_warning() {
    #[derive(Debug)]
    struct NoDisable(MemoryAdapter);
    #[async_trait]
    impl Source for NoDisable {
        fn describe(&self) -> Descriptor {
            self.0.describe()
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                disable: false,
                ..self.0.capabilities()
            }
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn orgs(&self, p: PageRequest) -> Result<Page<Org>> {
            self.0.orgs(p).await
        }
        async fn accounts(&self, p: PageRequest) -> Result<Page<Account>> {
            self.0.accounts(p).await
        }

        async fn org(
            &self,
            anchor: &idsync_core::Anchor,
        ) -> idsync_core::Result<Option<idsync_core::Org>> {
            self.0.org(anchor).await
        }

        async fn account(
            &self,
            anchor: &idsync_core::Anchor,
        ) -> idsync_core::Result<Option<idsync_core::Account>> {
            self.0.account(anchor).await
        }

        async fn find_accounts(
            &self,
            field: &str,
            value: &str,
        ) -> idsync_core::Result<Vec<idsync_core::Account>> {
            self.0.find_accounts(field, value).await
        }
    }
    #[async_trait]
    impl Sink for NoDisable {
        async fn apply(&self, op: &Op) -> Result<Applied> {
            self.0.apply(op).await
        }
    }
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sink = Arc::new(NoDisable(MemoryAdapter::new("t")));
    let s = setup_with(sink.clone(), store);
    s.engine.run(&s.job).await.unwrap();
    s.source
        .edit(|d| {
            d.accounts.remove(&Anchor::from("3"));
        })
        .unwrap();
    let plan = s.engine.plan(&s.job).await.unwrap();
    assert!(plan.ops.is_empty(), "{plan:#?}");
    assert!(plan.warnings.iter().any(|w| w.contains("cannot disable")));
    let job = s
        .job
        .clone()
        .with_deletion(DeletionPolicy::DisableThenDelete {
            retention: std::time::Duration::from_secs(3600),
        });
    let plan = s.engine.plan(&job).await.unwrap();
    assert_eq!(plan.count(idsync_core::OpKind::DeleteAccount), 1);
}

#[tokio::test]
async fn disable_then_delete_after_the_retention() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::with_clock(clock.clone()));
    let hub = Arc::new(Hub::new(store.clone()));
    let mut s = setup_with(hub, store);
    s.engine = s.engine.clone().with_clock(clock.clone());
    let job = s
        .job
        .clone()
        .with_deletion(DeletionPolicy::DisableThenDelete {
            retention: std::time::Duration::from_secs(30 * 86_400),
        });
    s.engine.run(&job).await.unwrap();
    s.source
        .edit(|d| {
            d.accounts.remove(&Anchor::from("3"));
        })
        .unwrap();
    let r = s.engine.run(&job).await.unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::DisableAccount),
        Some(&1)
    );
    clock.advance(chrono::Duration::days(29));
    assert!(
        s.engine.plan(&job).await.unwrap().is_empty(),
        "kept during the retention"
    );
    clock.advance(chrono::Duration::days(2));
    let r = s.engine.run(&job).await.unwrap();
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::DeleteAccount),
        Some(&1)
    );
    assert!(s.store.hub_account(&"3".into()).await.unwrap().is_none());
}

/// A sink whose first create of one anchor "crashes" after writing (the answer is lost),
/// like a process killed between the sink's write and the store's record.
#[derive(Debug)]
struct LosesFirstAnswer {
    inner: MemoryAdapter,
    lose: &'static str,
    lost: AtomicUsize,
}

#[async_trait]
impl Source for LosesFirstAnswer {
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

    async fn org(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Org>> {
        self.inner.org(anchor).await
    }

    async fn account(
        &self,
        anchor: &idsync_core::Anchor,
    ) -> idsync_core::Result<Option<idsync_core::Account>> {
        self.inner.account(anchor).await
    }

    async fn find_accounts(
        &self,
        field: &str,
        value: &str,
    ) -> idsync_core::Result<Vec<idsync_core::Account>> {
        self.inner.find_accounts(field, value).await
    }
}

#[async_trait]
impl Sink for LosesFirstAnswer {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let applied = self.inner.apply(op).await?;
        if op.is_create()
            && op.anchor().as_str() == self.lose
            && self.lost.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "connection reset after write",
            ));
        }
        Ok(applied)
    }
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_on_rerun_and_intents_close() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let sink = Arc::new(LosesFirstAnswer {
        inner: MemoryAdapter::new("t"),
        lose: "3",
        lost: AtomicUsize::new(0),
    });
    let mut s = setup_with(sink.clone(), store);
    s.job.correlation = vec![]; // no rule would find it: only the journal can
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 1);
    // The create whose answer was lost is journaled as unknown (open), not as failed...
    let open = s.store.open_intents("test").await.unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].state, JournalState::Unknown);
    // ...and a crash may have left an intent for the same entity as well.
    let intent = JournalEntry {
        run_id: "crashed-run".into(),
        op_index: 0,
        op: Op::CreateAccount {
            account: person("3", "alice", &["hr"]),
        },
        source_anchor: Some("3".into()),
        target_anchor: None,
        state: JournalState::Intent,
        error: None,
        at: chrono::Utc::now(),
    };
    s.store
        .put_run(&RunRecord {
            id: "crashed-run".into(),
            job: "test".into(),
            status: RunStatus::Running,
            started_at: chrono::Utc::now(),
            finished_at: None,
            plan: None,
            summary: None,
        })
        .await
        .unwrap();
    s.store.journal_intent(&intent).await.unwrap();
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    assert_eq!(
        r.counts.by_op.get(&idsync_core::OpKind::CreateAccount),
        None,
        "adopted before planning, not created again"
    );
    let links = s.engine.links("test", EntityKind::Account).await.unwrap();
    assert_eq!(links.iter().filter(|l| l.source.as_str() == "3").count(), 1);
    let snap = sink.inner.snapshot().unwrap();
    assert_eq!(
        snap.accounts
            .values()
            .filter(|a| a.username == "alice")
            .count(),
        1
    );
    assert!(
        s.store.open_intents("test").await.unwrap().is_empty(),
        "superseded intents closed"
    );
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_progress_hook_follows_every_op_to_the_end() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Progress>::new()));
    for hub in [true, false] {
        seen.lock().unwrap().clear();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let sink: Target = if hub {
            Arc::new(Hub::new(store.clone())).into()
        } else {
            Arc::new(MemoryAdapter::new("target")).into()
        };
        let mut s = setup_with(sink, store);
        let log = seen.clone();
        s.job = s.job.with_progress(move |p| log.lock().unwrap().push(p));
        let r = s.engine.run(&s.job).await.unwrap();
        assert_eq!(r.counts.applied, 9, "hub {hub}: {r:#?}");
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty(), "hub {hub}: the hook was called");
        assert!(
            seen.windows(2).all(|w| w[0].done <= w[1].done),
            "hub {hub}: progress never goes back: {seen:?}"
        );
        assert_eq!(
            seen.last().copied(),
            Some(Progress {
                done: 9,
                failed: 0,
                total: 9
            }),
            "hub {hub}"
        );
        if !hub {
            // one call per op for other sinks
            assert_eq!(seen.len(), 9);
        }
    }
}

#[tokio::test]
async fn a_renamed_source_anchor_keeps_its_target_and_link() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    // WeCom's NewUserID: zhangsan's userid "1" becomes "1x"; lisi's manager follows
    let mut renamed = person("1x", "zhangsan001", &["be"]);
    renamed.employee_id = Some("E1".into());
    renamed.manager = Some("4".into());
    s.source
        .edit(|d| {
            d.accounts.remove(&Anchor::from("1"));
            d.accounts.insert("1x".into(), renamed.clone());
            d.accounts.get_mut(&Anchor::from("2")).unwrap().manager = Some("1x".into());
        })
        .unwrap();
    let lisi = s.source.account(&"2".into()).await.unwrap().unwrap();
    let cs = ChangeSet {
        account_upserts: vec![renamed, lisi],
        account_renames: vec![Rename {
            from: "1".into(),
            to: "1x".into(),
        }],
        complete: true,
        ..ChangeSet::default()
    };
    let plan = s.engine.plan_changes(&s.job, cs, None).await.unwrap();
    let ops: Vec<(&str, &str)> = plan
        .ops
        .iter()
        .map(|p| (p.op.name(), p.op.anchor().as_str()))
        .collect();
    // one update of the same hub account (the username), no create, no delete
    assert_eq!(ops, vec![("update_account", "1")], "{plan:#?}");
    assert_eq!(plan.links.len(), 1);
    assert_eq!(plan.links[0].source.as_str(), "1x");
    assert_eq!(plan.links[0].target.as_str(), "1");
    assert_eq!(plan.stale_links.len(), 1);
    assert_eq!(plan.stale_links[0].source.as_str(), "1");
    let r = s.engine.apply(&s.job, &plan).await.unwrap();
    assert_eq!(r.counts.failed, 0, "{r:#?}");
    let hub = s.store.hub_account(&"1".into()).await.unwrap().unwrap();
    assert_eq!(hub.username, "zhangsan001");
    assert_eq!(hub.status, Status::Active);
    let links = s.engine.links("test", EntityKind::Account).await.unwrap();
    let of = |src: &str| links.iter().find(|l| l.source.as_str() == src);
    assert_eq!(of("1x").map(|l| l.target.as_str()), Some("1"));
    assert!(of("1").is_none(), "{links:#?}");
    assert_eq!(links.len(), 4);
    // a full plan agrees: nothing to create, disable or delete
    let full = s.engine.plan(&s.job).await.unwrap();
    assert!(full.is_empty(), "{full:#?}");
}

/// A large change set (a bulk import) reads the target once, indexed, instead of one
/// lookup per account: the plan is the one the lookups would give — correlation by key
/// (case and spaces aside), creates only for the unmatched.
#[tokio::test]
async fn a_large_change_set_correlates_against_the_whole_target_like_lookups_do() {
    let existing: Vec<Account> = (0..1200)
        .map(|i| {
            let mut a = Account::new(format!("t{i}"), format!("p{i}"));
            a.email = Some(format!("p{i}@corp.example"));
            a
        })
        .collect();
    let incoming = |n: usize, new: usize| -> Vec<Account> {
        (0..n)
            .map(|i| {
                let mut a = Account::new(format!("h{i}"), format!("p{i}"));
                a.email = Some(format!(" P{i}@Corp.Example"));
                a
            })
            .chain((0..new).map(|i| {
                let mut a = Account::new(format!("n{i}"), format!("new{i}"));
                a.email = Some(format!("new{i}@corp.example"));
                a
            }))
            .collect()
    };
    for (n, new) in [(1200, 10), (5, 2)] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let target = Arc::new(MemoryAdapter::with_data("app", vec![], existing.clone()));
        let job = Job::new("bulk", Arc::new(MemoryAdapter::new("unused")), target)
            .with_correlation(vec!["email".into()])
            .with_guard(Guard::off());
        let engine = Engine::new(store);
        let cs = ChangeSet {
            account_upserts: incoming(n, new),
            complete: true,
            ..ChangeSet::default()
        };
        let plan = engine.plan_changes(&job, cs, None).await.unwrap();
        let creates: Vec<&str> = plan
            .ops
            .iter()
            .filter(|p| p.op.name() == "create_account")
            .map(|p| p.op.anchor().as_str())
            .collect();
        assert_eq!(creates.len(), new, "{n}: {creates:?}");
        assert!(creates.iter().all(|a| a.starts_with('n')), "{creates:?}");
        // correlated links are planned; a create's link is made when it is applied
        assert_eq!(plan.links.len(), n, "{n}");
        let l = plan
            .links
            .iter()
            .find(|l| l.source.as_str() == "h3")
            .unwrap();
        assert_eq!(l.target.as_str(), "t3");
        assert!(plan.conflicts.is_empty(), "{:#?}", plan.conflicts);
    }
}

#[path = "engine/distribution.rs"]
mod distribution;

/// A sink like a SCIM app: it keeps no org `order`, no attributes and no `title`, and reads
/// an account's orgs back in its own (sorted) order; its capabilities say so, or, with
/// `honest: false`, claim to keep everything.
#[derive(Debug)]
struct Forgetful {
    inner: MemoryAdapter,
    honest: bool,
}

impl Forgetful {
    fn forget_org(mut o: Org) -> Org {
        o.order = None;
        o.attrs.clear();
        o
    }

    fn forget_account(mut a: Account) -> Account {
        a.title = None;
        a.attrs.clear();
        a.orgs.sort();
        a
    }
}

#[async_trait]
impl Source for Forgetful {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if self.honest {
            c.org_fields = Some(vec!["name".into(), "parent".into()]);
            c.account_fields = Some(
                <Account as Entity>::typed_fields()
                    .iter()
                    .filter(|f| **f != "title")
                    .map(|f| (*f).to_owned())
                    .collect(),
            );
            c.ordered_orgs = false;
        }
        c
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        let p = self.inner.orgs(page).await?;
        Ok(Page {
            items: p.items.into_iter().map(Forgetful::forget_org).collect(),
            next: p.next,
        })
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        let p = self.inner.accounts(page).await?;
        Ok(Page {
            items: p.items.into_iter().map(Forgetful::forget_account).collect(),
            next: p.next,
        })
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        Ok(self.inner.org(anchor).await?.map(Forgetful::forget_org))
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        Ok(self
            .inner
            .account(anchor)
            .await?
            .map(Forgetful::forget_account))
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        Ok(self
            .inner
            .find_accounts(field, value)
            .await?
            .into_iter()
            .map(Forgetful::forget_account)
            .collect())
    }
}

#[async_trait]
impl Sink for Forgetful {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.inner.apply(op).await
    }
}

/// A source with org orders, attributes, titles and an account whose primary org does not
/// sort first.
fn forgetful_setup(honest: bool) -> Result<Setup> {
    let sink = Arc::new(Forgetful {
        inner: MemoryAdapter::new("tgt"),
        honest,
    });
    let s = setup_with(sink as Arc<dyn Sink>, Arc::new(MemoryStore::new()));
    s.source.edit(|d| {
        for (i, o) in d.orgs.values_mut().enumerate() {
            o.order = Some(i as i64 + 1);
            o.attrs
                .insert("cost_center".into(), serde_json::json!("CC1"));
        }
        for a in d.accounts.values_mut() {
            a.title = Some("Engineer".into());
            a.attrs.insert("badge".into(), serde_json::json!("B1"));
            if a.anchor.as_str() == "2" {
                // primary first: hr does not sort first
                a.orgs = vec!["hr".into(), "fe".into()];
            }
        }
    })?;
    Ok(s)
}

#[tokio::test]
async fn fields_the_sink_does_not_hold_and_org_order_of_a_set_sink_are_not_diffed() {
    let s = forgetful_setup(true).unwrap();
    let r = s.engine.run(&s.job).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let plan = s.engine.plan(&s.job).await.unwrap();
    assert!(plan.is_empty(), "second plan: {plan:#?}");

    // the primary org changes, the set does not: nothing to do for this sink
    s.source
        .edit(|d| {
            d.accounts.get_mut(&Anchor::from("2")).unwrap().orgs = vec!["fe".into(), "hr".into()]
        })
        .unwrap();
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());

    // the set changes: one update of the orgs, and of nothing the sink cannot hold
    s.source
        .edit(|d| {
            let lisi = d.accounts.get_mut(&Anchor::from("2")).unwrap();
            lisi.orgs = vec!["fe".into()];
            lisi.title = Some("Lead".into());
            d.orgs.get_mut(&Anchor::from("be")).unwrap().order = Some(99);
        })
        .unwrap();
    let plan = s.engine.plan(&s.job).await.unwrap();
    assert_eq!(plan.ops.len(), 1, "{plan:#?}");
    match &plan.ops[0].op {
        Op::UpdateAccount { changes, .. } => {
            let keys: Vec<&String> = changes.keys().collect();
            assert_eq!(keys, vec!["orgs"], "{plan:#?}");
            assert_eq!(changes["orgs"], serde_json::json!(["fe"]));
        }
        other => panic!("{other:?}"),
    }
    let r = s.engine.apply(&s.job, &plan).await.unwrap();
    assert_eq!(r.counts.failed, 0);
    assert!(s.engine.plan(&s.job).await.unwrap().is_empty());
}

/// The same sink without the declaration: every run plans the same updates again (what
/// the capabilities prevent).
#[tokio::test]
async fn a_sink_claiming_to_hold_everything_never_converges() {
    let s = forgetful_setup(false).unwrap();
    s.engine.run(&s.job).await.unwrap();
    let plan = s.engine.plan(&s.job).await.unwrap();
    let names: Vec<&str> = plan.ops.iter().map(|p| p.op.name()).collect();
    assert!(names.contains(&"update_org"), "{plan:#?}");
    assert!(names.contains(&"update_account"), "{plan:#?}");
}

/// The `anchor` correlation rule: a job whose accounts have the anchors of hub accounts
/// made by another job links them instead of creating them again.
#[tokio::test]
async fn the_anchor_rule_correlates_with_hub_accounts_of_another_job() {
    let s = hub_setup();
    s.engine.run(&s.job).await.unwrap();
    let (orgs, mut accounts) = sample();
    accounts[0].title = Some("Lead".into());
    let other = Arc::new(MemoryAdapter::with_data("other", orgs, accounts));
    let hub = Arc::new(Hub::new(s.store.clone()));
    let job = Job::new("other", other, hub)
        .with_guard(Guard::off())
        .with_correlation(vec!["anchor".into()]);
    let plan = s.engine.plan(&job).await.unwrap();
    let names: Vec<&str> = plan
        .ops
        .iter()
        .filter(|p| matches!(p.op, Op::CreateAccount { .. } | Op::UpdateAccount { .. }))
        .map(|p| p.op.name())
        .collect();
    assert_eq!(names, vec!["update_account"], "{plan:#?}");
    let account_links = plan
        .links
        .iter()
        .filter(|l| l.kind == EntityKind::Account && l.source == l.target)
        .count();
    assert_eq!(account_links, 4, "{plan:#?}");
}
