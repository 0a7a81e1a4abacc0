//! 100,000 creates through `Engine::run` into a SQLite hub (see the root `BENCHMARKS.md`).
//!
//! `cargo bench -p idsync-store --bench hub_creates` (release profile). Set
//! `IDSYNC_BENCH_ACCOUNTS` to change the number of accounts (default 99,900 accounts in
//! 100 orgs: 100,000 creates), and `IDSYNC_BENCH_STORE=postgres` to measure a fresh
//! PostgreSQL database instead of a SQLite file (the server of `IDSYNC_TEST_PG_URL` /
//! `DATABASE_URL`, else one started by `scripts/services/postgres.sh`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use idsync_core::{Engine, Guard, Hub, Job, MemoryAdapter, Store};
use idsync_store::SqliteStore;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> idsync_core::Result<()> {
    let n: usize = std::env::var("IDSYNC_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(99_900);
    let dir = tempfile::tempdir().map_err(|e| idsync_core::Error::unexpected(e.to_string()))?;
    let postgres = std::env::var("IDSYNC_BENCH_STORE").is_ok_and(|v| v == "postgres");
    let store: Arc<dyn Store> = if postgres {
        idsync_store::open(&common::fresh_pg_database("idsync_bench").await).await?
    } else {
        Arc::new(SqliteStore::open(dir.path().join("hub.db")).await?)
    };
    println!(
        "store:              {}",
        if postgres { "postgres" } else { "sqlite file" }
    );
    let (orgs, accounts) = idsync_core::directory::sample_directory(n, 9);
    let total = orgs.len() + accounts.len();
    let source = Arc::new(MemoryAdapter::with_data("hr", orgs, accounts));
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let job = Job::new("bench", source, hub).with_guard(Guard::off());

    let t0 = Instant::now();
    let plan = engine.plan(&job).await?;
    let planned = t0.elapsed();
    let t1 = Instant::now();
    let report = engine.apply(&job, &plan).await?;
    let applied = t1.elapsed();
    assert_eq!(report.counts.applied, total, "every create applied");
    let t2 = Instant::now();
    let again = engine.run(&job).await?;
    let noop = t2.elapsed();
    assert_eq!(again.counts.planned, 0);
    let file = std::fs::metadata(dir.path().join("hub.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("creates:            {total}");
    println!("plan (read+diff):   {:.2} s", planned.as_secs_f64());
    println!(
        "apply:              {:.2} s  ({:.0} ops/s)",
        applied.as_secs_f64(),
        total as f64 / applied.as_secs_f64()
    );
    println!(
        "first run total:    {:.2} s",
        (planned + applied).as_secs_f64()
    );
    println!("second run (no-op): {:.2} s", noop.as_secs_f64());
    if !postgres {
        println!("database file:      {:.1} MiB", file as f64 / 1048576.0);
    }
    Ok(())
}
