//! One changed account applied incrementally into a SQLite hub of a million accounts: the
//! engine time of `Engine::run_changes` end to end (read the change set, look up links and
//! the target, plan, guard, apply with journal and audit, commit the cursor). See the root
//! `BENCHMARKS.md`.
//!
//! The source hands out each round's change set as an event feed would; the engine reads
//! nothing else of it. `cargo bench -p idsync-store --bench incremental_1m` (release
//! profile).
//! `IDSYNC_BENCH_ACCOUNTS` sets the hub's size (default 1,000,000), `IDSYNC_BENCH_ROUNDS`
//! the number of timed incremental runs (default 30).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use idsync_core::source::{Capabilities, Descriptor, Page, PageRequest};
use idsync_core::{
    Account, Anchor, ChangeSet, Engine, Guard, Hub, Job, MemoryAdapter, Org, Result, Source, Store,
    SyncCursor,
};
use idsync_store::SqliteStore;

/// The bench's source: the full listing from a memory adapter, and the change set of the
/// next round handed out as a provider's event feed would (the memory adapter's own change
/// log diffs its whole directory on every edit, which is no part of the engine's time).
#[derive(Debug)]
struct Events {
    all: MemoryAdapter,
    next: Mutex<(u64, Vec<Account>)>,
}

#[async_trait]
impl Source for Events {
    fn describe(&self) -> Descriptor {
        Descriptor::new("events", "bench")
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            changes: true,
            ..self.all.capabilities()
        }
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.all.orgs(page).await
    }
    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.all.accounts(page).await
    }
    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.all.org(anchor).await
    }
    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.all.account(anchor).await
    }
    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.all.find_accounts(field, value).await
    }
    async fn current_cursor(&self) -> Result<SyncCursor> {
        let n = self.next.lock().map(|g| g.0).unwrap_or(0);
        Ok(SyncCursor(n.to_string()))
    }
    async fn changes(&self, _since: &SyncCursor) -> Result<ChangeSet> {
        let (n, upserts) = {
            let mut g = self
                .next
                .lock()
                .map_err(|_| idsync_core::Error::unexpected("poisoned"))?;
            (g.0, std::mem::take(&mut g.1))
        };
        Ok(ChangeSet {
            account_upserts: upserts,
            cursor: Some(SyncCursor(n.to_string())),
            complete: true,
            ..ChangeSet::default()
        })
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> idsync_core::Result<()> {
    let n = env("IDSYNC_BENCH_ACCOUNTS", 1_000_000);
    let rounds = env("IDSYNC_BENCH_ROUNDS", 30);
    let dir = tempfile::tempdir().map_err(|e| idsync_core::Error::unexpected(e.to_string()))?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("hub.db")).await?);
    let (orgs, accounts) = idsync_core::directory::sample_directory(n, 99);
    let source = Arc::new(Events {
        all: MemoryAdapter::with_data("hr", orgs, accounts),
        next: Mutex::new((0, Vec::new())),
    });
    let engine = Engine::new(store.clone());
    let job = Job::new("bench", source.clone(), Arc::new(Hub::new(store.clone())))
        .with_guard(Guard::off());

    let t = Instant::now();
    let full = engine.run(&job).await?;
    println!(
        "hub:                {} accounts, {} ops applied by the first full run in {:.1} s",
        n,
        full.counts.applied,
        t.elapsed().as_secs_f64()
    );
    // Takes the cursor (an empty change set).
    engine.run_changes(&job).await?;

    let mut times: Vec<Duration> = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let anchor = Anchor::from(format!("p{:06}", (r * 7919) % n));
        let mut changed = source
            .all
            .account(&anchor)
            .await?
            .ok_or_else(|| idsync_core::Error::unexpected("no such account"))?;
        changed.title = Some(format!("title {r}"));
        if let Ok(mut g) = source.next.lock() {
            *g = (r as u64 + 1, vec![changed]);
        }
        let t = Instant::now();
        let report = engine.run_changes(&job).await?;
        times.push(t.elapsed());
        assert_eq!(report.counts.applied, 1, "one update applied: {report:?}");
        assert!(report.cursor_committed);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "incremental:        {rounds} runs of one changed account: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(times[rounds / 2]),
        ms(times[0]),
        ms(times[rounds - 1])
    );
    Ok(())
}
