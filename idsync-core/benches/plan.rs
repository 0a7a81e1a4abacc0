//! Planning cost: 1,000,000 accounts in 50,000 orgs, already synced, with 1% of the
//! accounts changed, 0.1% of the accounts moved to another org and 0.1% of the orgs moved.
//!
//! `cargo bench -p idsync-core --bench plan` (set `IDSYNC_BENCH_ACCOUNTS` for another size).
//! Time per plan comes from criterion; peak memory of one plan is measured separately:
//! the process's peak RSS is reset (`/proc/self/clear_refs` = 5) after the data is built,
//! and the rise of `VmHWM` over the RSS before planning is reported per account.

#![allow(clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use futures::StreamExt;
use idsync_core::SourceExt;
use idsync_core::store::{LinkChange, OpRecord};
use idsync_core::{
    Account, Anchor, Engine, EntityKind, Guard, Job, MemoryAdapter, MemoryStore, Org, Store,
};

fn accounts_n() -> usize {
    std::env::var("IDSYNC_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn data(n: usize, n_orgs: usize) -> (Vec<Org>, Vec<Account>) {
    let mut orgs = Vec::with_capacity(n_orgs);
    orgs.push(Org::new("o0", None, "Company"));
    for i in 1..n_orgs {
        // a tree with fan-out 8
        let parent = format!("o{}", (i - 1) / 8);
        let mut o = Org::new(
            format!("o{i}"),
            Some(Anchor::from(parent)),
            format!("部门 {i}"),
        );
        o.order = Some(i as i64);
        orgs.push(o);
    }
    let mut accounts = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = Account::new(format!("u{i:07}"), format!("user{i}"));
        a.display_name = Some(format!("用户 {i}"));
        a.email = Some(format!("user{i}@example.com"));
        a.employee_id = Some(format!("E{i:07}"));
        a.phone = Some(format!("+86 138 {:08}", i));
        a.title = Some("Engineer".to_owned());
        a.orgs = vec![Anchor::from(format!("o{}", i % n_orgs))];
        if i > 0 {
            a.manager = Some(Anchor::from(format!("u{:07}", i / 10)));
        }
        accounts.push(a);
    }
    (orgs, accounts)
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Setup {
    engine: Engine,
    job: Job,
    n: usize,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    let n = accounts_n();
    let n_orgs = (n / 20).max(10);
    let t0 = Instant::now();
    let (orgs, accounts) = data(n, n_orgs);
    let target = Arc::new(MemoryAdapter::with_data(
        "target",
        orgs.clone(),
        accounts.clone(),
    ));
    // The source: 1% changed, 0.1% of accounts moved, 0.1% of orgs moved.
    let mut src_orgs = orgs;
    let mut src_accounts = accounts;
    for (i, a) in src_accounts.iter_mut().enumerate() {
        if i % 100 == 7 {
            a.title = Some("Senior Engineer".to_owned());
        }
        if i % 1000 == 3 {
            a.orgs = vec![Anchor::from(format!("o{}", (i + 1) % n_orgs))];
        }
    }
    for (i, o) in src_orgs.iter_mut().enumerate() {
        if i > 8 && i % 1000 == 9 {
            o.parent = Some(Anchor::from("o1"));
        }
    }
    let source = Arc::new(MemoryAdapter::with_data(
        "source",
        src_orgs.clone(),
        src_accounts.clone(),
    ));
    let store = Arc::new(MemoryStore::new());
    rt.block_on(async {
        for (kind, anchors) in [
            (
                EntityKind::Org,
                src_orgs
                    .iter()
                    .map(|o| o.anchor.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                EntityKind::Account,
                src_accounts
                    .iter()
                    .map(|a| a.anchor.clone())
                    .collect::<Vec<_>>(),
            ),
        ] {
            for a in anchors {
                store
                    .record(&OpRecord {
                        job: "bench".into(),
                        kind,
                        journal: None,
                        link: Some(LinkChange::Put {
                            source: a.clone(),
                            target: a,
                        }),
                        shadow: None,
                        audit: None,
                    })
                    .await
                    .expect("link");
            }
        }
    });
    drop((src_orgs, src_accounts));
    let engine = Engine::new(store);
    let job = Job::new("bench", source, target)
        .with_guard(Guard::off())
        .with_page_size(500);
    eprintln!(
        "setup of {n} accounts / {n_orgs} orgs: {:.1?}",
        t0.elapsed()
    );
    Setup { engine, job, n }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup(&rt);

    // The floor: only reading both sides through the memory adapters.
    let t = Instant::now();
    let read = rt.block_on(async {
        let mut n = 0usize;
        for side in [
            s.job.source.clone(),
            s.job.sink.clone() as Arc<dyn idsync_core::Source>,
        ] {
            let mut st = side.account_stream(Some(500));
            while let Some(a) = st.next().await {
                a.expect("read");
                n += 1;
            }
        }
        n
    });
    eprintln!(
        "reading both sides only ({read} accounts): {:.2?}",
        t.elapsed()
    );

    // Peak memory of one plan.
    let before = rss_kib("VmRSS:").unwrap_or(0);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let plan = rt.block_on(s.engine.plan(&s.job)).expect("plan");
    let took = t.elapsed();
    let peak = rss_kib("VmHWM:").unwrap_or(0);
    let summary = plan.summary();
    let rise = peak.saturating_sub(before) * 1024;
    eprintln!(
        "one plan: {took:.2?}; ops {:?}; peak RSS rise {:.1} MiB = {} bytes per account",
        summary.ops,
        rise as f64 / 1_048_576.0,
        rise / s.n as u64
    );
    drop(plan);

    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    g.bench_function(format!("{}_accounts_1pct_changed", s.n), |b| {
        b.iter(|| rt.block_on(s.engine.plan(&s.job)).expect("plan"))
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
