//! Benchmark: a full inbound sync of a fake Lark tenant (10,000 users in 200 departments by
//! default) into a hub, with the fake limiting the app to Lark's documented 50 contact
//! calls per second (HTTP 429, `99991400` beyond it).
//!
//! It reports the calls made, the throttled answers and the achieved rate as a share of
//! the limit, plus the throttled errors that reached the engine report (the goal is
//! none). Not run by `cargo test`:
//!
//! ```text
//! cargo bench -p idsync-lark --bench sync_limit
//! IDSYNC_BENCH_USERS=2000 IDSYNC_BENCH_DEPTS=40 cargo bench -p idsync-lark --bench sync_limit
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer};
use idsync_core::{Engine, Hub, Job, MemoryStore, Source, Store};
use idsync_lark::LarkSource;
use idsync_lark::fake::{FakeConfig, FakeLark, FakeUser};

/// Lark: 50 contact calls per second per app.
const LIMIT_PER_SECOND: f64 = 50.0;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> idsync_core::Result<()> {
    let users = env_usize("IDSYNC_BENCH_USERS", 10_000);
    let n_depts = env_usize("IDSYNC_BENCH_DEPTS", 200);
    let fake = FakeLark::start(FakeConfig::default()).await?;
    let mut depts: Vec<String> = Vec::new();
    for i in 0..n_depts {
        let parent = if i < 10 {
            "0".to_owned()
        } else {
            depts[(i - 10) / 5].clone()
        };
        depts.push(fake.add_dept(&parent, &format!("部门 {i:03}")));
    }
    let mut multi = 0;
    for i in 0..users {
        let d = i % n_depts.max(1);
        let mut ds = vec![depts[d].clone()];
        if i % 7 == 0 && n_depts > 1 {
            ds.push(depts[(d + 1) % n_depts].clone());
            multi += 1;
        }
        let mut u = FakeUser::new(format!("user{i:05}"), format!("用户{i}"), &ds);
        u.email = Some(format!("user{i:05}@fake.example"));
        fake.with_state(|s| s.put_user(u));
    }
    println!(
        "fake tenant: {users} users ({multi} in two departments) in {n_depts} departments; \
         {LIMIT_PER_SECOND} contact calls per second per app"
    );
    let stack = Stack::new()
        .push(TimeoutLayer::new(Duration::from_secs(120)))
        .push(RateLimitLayer::from_capabilities())
        .push(RetryLayer::new().with_max_attempts(6));
    let source: Arc<dyn Source> = stack.source(Arc::new(LarkSource::new(fake.connection())?));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let job = Job::new("bench-lark-to-hub", source, hub);

    let before = fake.stats().total();
    let started = Instant::now();
    let report = engine.run(&job).await?;
    let wall = started.elapsed();
    let total = fake.stats().total();
    let calls = total.calls - before.calls;
    let throttled = total.throttled - before.throttled;
    let throttled_in_report = report
        .failures()
        .filter(|f| {
            f.error
                .as_ref()
                .is_some_and(|e| e.message.contains("99991400") || e.message.contains("frequency"))
        })
        .count();
    println!(
        "run: {} in {:.1} s — applied {}, failed {}, skipped {}",
        report.status.as_str(),
        wall.as_secs_f64(),
        report.counts.applied,
        report.counts.failed,
        report.counts.skipped
    );
    // n calls at 50 per sliding second need at least floor((n - 1) / 50) seconds from the
    // first to the last; that minimum against the achieved span is the share of the limit.
    let span = match (total.first, total.last) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    let min_span = (calls.saturating_sub(1) / LIMIT_PER_SECOND as u64) as f64;
    println!(
        "contact calls: {calls} over {:.1} s (at the limit at least {min_span:.1} s): {:.1}% of the limit; \
         {:.1} calls/s; throttled answers at the fake: {throttled}; throttled errors in the report: {throttled_in_report}; tokens fetched: {}",
        span.as_secs_f64(),
        min_span / span.as_secs_f64().max(f64::EPSILON) * 100.0,
        calls as f64 / span.as_secs_f64().max(f64::EPSILON),
        fake.stats().tokens_issued,
    );
    assert_eq!(report.counts.failed, 0, "the run failed somewhere");
    Ok(())
}
