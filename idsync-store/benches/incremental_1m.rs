//! One changed account applied incrementally into a SQLite hub of a million accounts: the
//! engine time of `Engine::run_changes` end to end (read the change set, look up links and
//! the target, plan, guard, apply with journal and audit, commit the cursor). See the root
//! `BENCHMARKS.md`.
//!
//! `cargo bench -p idsync-store --bench incremental_1m` (release profile).
//! `IDSYNC_BENCH_ACCOUNTS` sets the hub's size (default 1,000,000), `IDSYNC_BENCH_ROUNDS`
//! the number of timed incremental runs (default 30).

use std::sync::Arc;
use std::time::{Duration, Instant};

use idsync_core::{Anchor, Engine, Guard, Hub, Job, MemoryAdapter, Store};
use idsync_store::SqliteStore;

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
    let source = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
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
        source.edit(|d| {
            if let Some(a) = d.accounts.get_mut(&anchor) {
                a.title = Some(format!("title {r}"));
            }
        })?;
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
