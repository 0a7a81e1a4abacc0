//! The child process of the crash-safety test (`tests/crash.rs`): applies a plan of
//! 10,000 creates from a memory source into a SQLite-backed target, to be killed with
//! SIGKILL at random points, and verifies that a rerun converged.
//!
//! ```text
//! idsync-store-crashtest run    --mode hub|sink --dir DIR [--accounts N] [--orgs-per-root M]
//! idsync-store-crashtest verify --mode hub|sink --dir DIR [--accounts N] [--orgs-per-root M]
//! idsync-store-crashtest check  --mode hub|sink --dir DIR [--max-unlinked K] ...
//! ```
//!
//! * `hub`: the engine's store is `DIR/store.db` and the sink is the hub over the same
//!   store, so each op commits with its journal, link and audit in one transaction.
//! * `sink`: the engine's store is `DIR/store.db`; the sink is a hub over a second file
//!   `DIR/sink.db` that assigns its own random anchors to created entities (like a SaaS
//!   API). An op is applied at the sink and then recorded in the store: a kill between the
//!   two leaves an unlinked entity that the rerun must correlate instead of duplicating.
//!
//! `run` prints `planned N` once the plan is stored, `progress D` each time ops have ended
//! (the engine's progress hook: after every op for the sink, after every batch of up to
//! 1,000 for the hub; the test kills the process after a chosen `D`), and
//! `done applied=A failed=F`; it exits 0 when nothing failed. `verify` exits 0 when the
//! target holds every source entity exactly once with the right content, every link
//! points at the right entity, and a further plan is empty; otherwise it prints what is
//! wrong and exits 1. `check` is the invariant that must hold after any kill: no entity
//! twice in the target, every link points at the right entity, every op journaled as done
//! is in the target and linked, and (hub mode) no target entity without its link; in sink
//! mode at most `--max-unlinked` entities (created by ops killed before they were recorded)
//! are still unlinked.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use idsync_core::source::collect_accounts;
use idsync_core::source::collect_orgs;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, Descriptor, Engine, EntityKind, Error, Guard, Hub, Job,
    MemoryAdapter, Op, Org, Page, PageRequest, Result, Sink, Source, Store, Target,
};
use idsync_store::SqliteStore;

#[derive(Debug, Clone)]
struct Args {
    cmd: String,
    mode: String,
    dir: PathBuf,
    accounts: usize,
    orgs_per_root: usize,
    max_unlinked: usize,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it
        .next()
        .ok_or_else(|| Error::config("usage: run|verify --mode M --dir D"))?;
    let mut a = Args {
        cmd,
        mode: "hub".into(),
        dir: PathBuf::from("."),
        accounts: 9_900,
        orgs_per_root: 9,
        max_unlinked: 0,
    };
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| Error::config(format!("{flag} needs a value")))?;
        let num = || {
            v.parse::<usize>()
                .map_err(|_| Error::config(format!("{flag}: not a number")))
        };
        match flag.as_str() {
            "--mode" => a.mode = v.clone(),
            "--dir" => a.dir = PathBuf::from(&v),
            "--accounts" => a.accounts = num()?,
            "--orgs-per-root" => a.orgs_per_root = num()?,
            "--max-unlinked" => a.max_unlinked = num()?,
            _ => return Err(Error::config(format!("unknown flag {flag}"))),
        }
    }
    Ok(a)
}

/// A hub over another store that assigns its own anchors to created entities.
#[derive(Debug)]
struct AssigningSink {
    hub: Hub,
}

#[async_trait]
impl Source for AssigningSink {
    fn describe(&self) -> Descriptor {
        Descriptor::new("assigning", "sink.db")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            assigns_anchors: true,
            changes: false,
            ..Capabilities::read_write()
        }
    }

    async fn check(&self) -> Result<()> {
        self.hub.check().await
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.hub.orgs(page).await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.hub.accounts(page).await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.hub.org(anchor).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.hub.account(anchor).await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.hub.find_accounts(field, value).await
    }
}

#[async_trait]
impl Sink for AssigningSink {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        let fresh = || Anchor::from(format!("t{:016x}", rand::random::<u64>()));
        let op = match op {
            Op::CreateOrg { org } => {
                let mut org = org.clone();
                org.anchor = fresh();
                Op::CreateOrg { org }
            }
            Op::CreateAccount { account } => {
                let mut account = account.clone();
                account.anchor = fresh();
                Op::CreateAccount { account }
            }
            other => other.clone(),
        };
        self.hub.store().hub_apply(&op, None).await
    }
}

struct Setup {
    engine: Engine,
    job: Job,
    target_store: Arc<dyn Store>,
    orgs: Vec<Org>,
    accounts: Vec<Account>,
}

async fn setup(a: &Args) -> Result<Setup> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(a.dir.join("store.db")).await?);
    let (orgs, accounts) = idsync_core::directory::sample_directory(a.accounts, a.orgs_per_root);
    let source = Arc::new(MemoryAdapter::with_data(
        "hr",
        orgs.clone(),
        accounts.clone(),
    ));
    let (sink, target_store): (Target, Arc<dyn Store>) = match a.mode.as_str() {
        "hub" => (Arc::new(Hub::new(store.clone())).into(), store.clone()),
        "sink" => {
            let other: Arc<dyn Store> = Arc::new(SqliteStore::open(a.dir.join("sink.db")).await?);
            (
                Arc::new(AssigningSink {
                    hub: Hub::new(other.clone()),
                })
                .into(),
                other,
            )
        }
        m => return Err(Error::config(format!("unknown mode {m}"))),
    };
    let job = Job::new("crash", source, sink)
        .with_guard(Guard::off())
        .with_correlation(vec!["employee_id".into()]);
    Ok(Setup {
        engine: Engine::new(store),
        job,
        target_store,
        orgs,
        accounts,
    })
}

async fn run(a: &Args) -> Result<bool> {
    let mut s = setup(a).await?;
    // The test kills this process once it has seen enough of these lines.
    s.job = s.job.with_progress(|p| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "progress {}", p.done);
        let _ = out.flush();
    });
    let plan = s.engine.plan(&s.job).await?;
    println!("planned {}", plan.ops.len());
    let _ = std::io::stdout().flush();
    let report = s.engine.apply(&s.job, &plan).await?;
    println!(
        "done applied={} failed={} skipped={} linked={}",
        report.counts.applied, report.counts.failed, report.counts.skipped, report.counts.linked
    );
    for f in report.failures().take(5) {
        println!("failure: {:?}", f.error);
    }
    Ok(report.counts.failed == 0 && report.counts.skipped == 0)
}

async fn verify(a: &Args, full: bool) -> Result<Vec<String>> {
    let s = setup(a).await?;
    let mut problems = Vec::new();
    let target_orgs = collect_orgs(&Hub::new(s.target_store.clone())).await?;
    let target_accounts = collect_accounts(&Hub::new(s.target_store.clone())).await?;
    if full && target_orgs.len() != s.orgs.len() {
        problems.push(format!(
            "target has {} orgs, source {}",
            target_orgs.len(),
            s.orgs.len()
        ));
    }
    if full && target_accounts.len() != s.accounts.len() {
        problems.push(format!(
            "target has {} accounts, source {}",
            target_accounts.len(),
            s.accounts.len()
        ));
    }
    // No duplicates: each employee id once.
    let mut by_emp: BTreeMap<String, Vec<&Account>> = BTreeMap::new();
    for t in &target_accounts {
        by_emp
            .entry(t.employee_id.clone().unwrap_or_default())
            .or_default()
            .push(t);
    }
    for (e, v) in &by_emp {
        if v.len() > 1 {
            problems.push(format!("employee {e} is in the target {} times", v.len()));
        }
    }
    let mut by_place: BTreeMap<(Option<Anchor>, String), usize> = BTreeMap::new();
    for o in &target_orgs {
        *by_place
            .entry((o.parent.clone(), o.name.clone()))
            .or_default() += 1;
    }
    for ((p, n), c) in &by_place {
        if *c > 1 {
            problems.push(format!("org {n:?} under {p:?} is in the target {c} times"));
        }
    }
    let org_links: HashMap<Anchor, Anchor> = s
        .engine
        .links("crash", EntityKind::Org)
        .await?
        .into_iter()
        .map(|l| (l.source, l.target))
        .collect();
    let acc_links: HashMap<Anchor, Anchor> = s
        .engine
        .links("crash", EntityKind::Account)
        .await?
        .into_iter()
        .map(|l| (l.source, l.target))
        .collect();
    let t_orgs: HashMap<&Anchor, &Org> = target_orgs.iter().map(|o| (&o.anchor, o)).collect();
    let t_accs: HashMap<&Anchor, &Account> =
        target_accounts.iter().map(|o| (&o.anchor, o)).collect();
    if full && (org_links.len() != s.orgs.len() || acc_links.len() != s.accounts.len()) {
        problems.push(format!(
            "links: {} orgs and {} accounts, want {} and {}",
            org_links.len(),
            acc_links.len(),
            s.orgs.len(),
            s.accounts.len()
        ));
    }
    // Links point at existing, matching entities, never two at one.
    let mut targets = std::collections::HashSet::new();
    for t in org_links.values().chain(acc_links.values()) {
        if !targets.insert(t) {
            problems.push(format!("two links point at {t}"));
        }
    }
    let unlinked = target_orgs.len() + target_accounts.len()
        - targets.len().min(target_orgs.len() + target_accounts.len());
    if !full && unlinked > a.max_unlinked {
        problems.push(format!(
            "{unlinked} target entities have no link (at most {})",
            a.max_unlinked
        ));
    }
    for o in &s.orgs {
        let Some(target) = org_links.get(&o.anchor) else {
            if full {
                problems.push(format!("org {} has no link", o.anchor));
            }
            continue;
        };
        let Some(t) = t_orgs.get(target) else {
            problems.push(format!(
                "org {} is linked to a missing org {target}",
                o.anchor
            ));
            continue;
        };
        let want_parent = o.parent.as_ref().and_then(|p| org_links.get(p));
        if t.name != o.name || t.parent.as_ref() != want_parent {
            problems.push(format!(
                "org {} linked to a different org {}",
                o.anchor, t.anchor
            ));
        }
    }
    for a in &s.accounts {
        let Some(target) = acc_links.get(&a.anchor) else {
            if full {
                problems.push(format!("account {} has no link", a.anchor));
            }
            continue;
        };
        let Some(t) = t_accs.get(target) else {
            problems.push(format!(
                "account {} is linked to a missing account {target}",
                a.anchor
            ));
            continue;
        };
        let want_orgs: Vec<Option<&Anchor>> = a.orgs.iter().map(|o| org_links.get(o)).collect();
        let got_orgs: Vec<Option<&Anchor>> = t.orgs.iter().map(Some).collect();
        if t.employee_id != a.employee_id || t.username != a.username || want_orgs != got_orgs {
            problems.push(format!(
                "account {} linked to a different account {}",
                a.anchor, t.anchor
            ));
        }
    }
    // No lost op: everything journaled as done is linked (and so, above, in the target).
    let store = s.engine.store();
    for run in store.runs(Some("crash"), 10_000).await? {
        for j in store.journal(&run.id).await? {
            if j.state != idsync_core::JournalState::Done {
                continue;
            }
            let links = match j.op.entity() {
                EntityKind::Org => &org_links,
                EntityKind::Account => &acc_links,
            };
            let linked = j.source_anchor.as_ref().and_then(|s| links.get(s));
            if linked != j.target_anchor.as_ref() {
                problems.push(format!(
                    "op {} of run {} is done but its link is {linked:?}",
                    j.op_index, run.id
                ));
            }
        }
    }
    if full {
        let plan = s.engine.plan(&s.job).await?;
        if !plan.ops.is_empty() {
            problems.push(format!("a further run plans {} ops", plan.ops.len()));
        }
    }
    problems.truncate(20);
    Ok(problems)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let code = match parse_args() {
        Err(e) => {
            eprintln!("{e}");
            2
        }
        Ok(a) => match a.cmd.as_str() {
            "run" => match run(&a).await {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(e) => {
                    eprintln!("run failed: {e}");
                    1
                }
            },
            "verify" | "check" => match verify(&a, a.cmd == "verify").await {
                Ok(p) if p.is_empty() => {
                    println!(
                        "{}",
                        if a.cmd == "verify" {
                            "converged"
                        } else {
                            "consistent"
                        }
                    );
                    0
                }
                Ok(p) => {
                    for x in p {
                        println!("problem: {x}");
                    }
                    1
                }
                Err(e) => {
                    eprintln!("verify failed: {e}");
                    1
                }
            },
            c => {
                eprintln!("unknown command {c}");
                2
            }
        },
    };
    std::process::exit(code);
}
