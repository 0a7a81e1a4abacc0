//! Planning cost: 1,000,000 accounts in 50,000 orgs, already synced, with 1% of the
//! accounts changed, 0.1% of the accounts moved to another org and 0.1% of the orgs moved.
//!
//! `cargo bench -p idsync-core --bench plan` (set `IDSYNC_BENCH_ACCOUNTS` for another size).
//! Time per plan comes from criterion. Peak memory of one plan is measured separately,
//! by counting: the bench's global allocator (mimalloc, as in the `idsync` binary, behind
//! a counter) adds up the bytes allocated and freed while one plan runs and reports the
//! highest net sum, per account. RSS is no measure here: the allocator hands memory freed
//! while the data was built to the plan without the RSS rising.

// The counting allocator is the one unsafe part; every library crate forbids unsafe code.
#![allow(unsafe_code, clippy::expect_used, missing_docs)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

/// mimalloc, counting while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since counting started, and its highest value.
static NET: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Relaxed) {
        let now = NET.fetch_add(delta, Relaxed) + delta;
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to mimalloc; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let (mut src_orgs, mut src_accounts) = (orgs, accounts);
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
    let links = [
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
    ];
    let source = Arc::new(MemoryAdapter::with_data("source", src_orgs, src_accounts));
    let store = Arc::new(MemoryStore::new());
    rt.block_on(async {
        for (kind, anchors) in links {
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup(&rt);

    // Peak memory of one plan (the plan it returns included), counted.
    NET.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let t = Instant::now();
    let plan = rt.block_on(s.engine.plan(&s.job)).expect("plan");
    let took = t.elapsed();
    COUNTING.store(false, Relaxed);
    let peak = PEAK.load(Relaxed).max(0) as u64;
    let summary = plan.summary();
    eprintln!(
        "one plan (counting allocations): {took:.2?}; ops {:?}; peak heap {:.1} MiB = {} bytes per account",
        summary.ops,
        peak as f64 / 1_048_576.0,
        peak / s.n as u64
    );
    drop(plan);

    // The floor: only reading both sides through the memory adapters.
    let t = Instant::now();
    let read = rt.block_on(async {
        let mut n = 0usize;
        for side in [s.job.source.clone(), s.job.target.to_source()] {
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
