//! 100,000 accounts in one `POST /api/v1/import/{job}`, end to end into a SQLite hub (see
//! the root `BENCHMARKS.md`).
//!
//! `cargo bench -p idsync-serve --bench import_100k` (release profile). The import router
//! is served on 127.0.0.1 and called over HTTP with one NDJSON body; the time is from the
//! first byte sent to the answer (parse, validate, plan, guard, apply into a SQLite file).
//! `IDSYNC_BENCH_ACCOUNTS` changes the number of accounts (default 100,000, in 100 orgs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::Instant;

use idsync_core::{Engine, Guard, Hub, Store};
use idsync_serve::import::{self, ImportConfig};
use idsync_store::SqliteStore;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("IDSYNC_BENCH_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("hub.db")).await.unwrap());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store.clone());
    let job = import::import_job("bench-import", hub).with_guard(Guard::off());
    let router = import::router(engine, vec![job], ImportConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (orgs, accounts) = idsync_core::directory::sample_directory(n, 9);
    let mut body = String::with_capacity(n * 256);
    for o in &orgs {
        let mut v = serde_json::to_value(o).unwrap();
        v["type"] = "org".into();
        body.push_str(&v.to_string());
        body.push('\n');
    }
    for a in &accounts {
        let mut v = serde_json::to_value(a).unwrap();
        v["type"] = "account".into();
        body.push_str(&v.to_string());
        body.push('\n');
    }
    let records = orgs.len() + accounts.len();
    println!(
        "records:            {records} ({} orgs, {} accounts)",
        orgs.len(),
        accounts.len()
    );
    println!(
        "body:               {:.1} MiB NDJSON",
        body.len() as f64 / (1024.0 * 1024.0)
    );
    let url = format!("http://{addr}/api/v1/import/bench-import");
    let client = reqwest::Client::new();

    let t0 = Instant::now();
    let r = client
        .post(&url)
        .header("Idempotency-Key", "bench-1")
        .header("Content-Type", "application/x-ndjson")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let answer: serde_json::Value = r.json().await.unwrap();
    let first = t0.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["counts"]["applied"], records,
        "every record applied: {answer}"
    );
    println!(
        "import (end to end): {:.2} s  ({:.0} records/s)",
        first.as_secs_f64(),
        records as f64 / first.as_secs_f64()
    );

    let t1 = Instant::now();
    let r = client
        .post(&url)
        .header("Idempotency-Key", "bench-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("idempotent-replayed").unwrap(), "true");
    r.bytes().await.unwrap();
    println!("replay (same key):  {:.3} s", t1.elapsed().as_secs_f64());

    let t2 = Instant::now();
    let r = client.post(&url).body(body).send().await.unwrap();
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(again["counts"]["planned"], 0, "{again}");
    println!(
        "again (no key, no change): {:.2} s",
        t2.elapsed().as_secs_f64()
    );
    let file = std::fs::metadata(dir.path().join("hub.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "hub file:           {:.1} MiB",
        file as f64 / (1024.0 * 1024.0)
    );
}
