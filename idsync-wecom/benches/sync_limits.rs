//! Benchmark: a full inbound sync of a fake WeCom corp (10,000 members in 200 departments by
//! default) into a hub, with the fake limiting every API to WeCom's documented per-corp
//! limit of 10,000 calls per minute (fixed wall-clock minutes, `45009` until the minute
//! ends).
//!
//! It reports, per API path, the calls made, the throttled answers and the achieved rate as
//! a share of the limit, plus the engine report's failures (throttled answers that reached
//! the report; the goal is none). Not run by `cargo test`:
//!
//! ```text
//! cargo bench -p idsync-wecom --bench sync_limits
//! IDSYNC_BENCH_USERS=2000 IDSYNC_BENCH_DEPTS=40 cargo bench -p idsync-wecom --bench sync_limits
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer};
use idsync_core::{Engine, Hub, Job, MemoryStore, Source, Store};
use idsync_wecom::WeComSource;
use idsync_wecom::fake::{FakeConfig, FakeWeCom};

/// WeCom: 10,000 calls per API per minute per corp.
const LIMIT_PER_MINUTE: f64 = 10_000.0;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> idsync_core::Result<()> {
    let users = env_usize("IDSYNC_BENCH_USERS", 10_000);
    let depts = env_usize("IDSYNC_BENCH_DEPTS", 200);
    let fake = FakeWeCom::start(FakeConfig {
        limit: Some(10_000),
        window: Duration::from_secs(60),
        ..FakeConfig::default()
    })
    .await?;
    fake.seed(depts, users);
    let multi = fake
        .users()
        .iter()
        .filter(|u| u.department.len() > 1)
        .count();
    println!(
        "fake corp: {users} members ({multi} in two departments) in {depts} departments; \
         10,000 calls per API per minute"
    );

    // per_minute 10,000 per API, 4 calls in flight, user/list_id pages of 10,000 rows
    let conn = fake.connection();
    let stack = Stack::new()
        .push(TimeoutLayer::new(Duration::from_secs(120)))
        .push(RateLimitLayer::from_capabilities())
        .push(RetryLayer::new().with_max_attempts(6));
    let source: Arc<dyn Source> = stack.source(Arc::new(WeComSource::new(conn)?));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let job = Job::new("bench-wecom-to-hub", source, hub);

    fake.reset_stats();
    let started = Instant::now();
    let report = engine.run(&job).await?;
    let wall = started.elapsed();

    let stats = fake.stats();
    let total = stats.total();
    println!(
        "run: {} in {:.1} s — applied {}, failed {}, skipped {}",
        report.status.as_str(),
        wall.as_secs_f64(),
        report.counts.applied,
        report.counts.failed,
        report.counts.skipped
    );
    let throttled_in_report = report
        .failures()
        .filter(|f| {
            f.error
                .as_ref()
                .is_some_and(|e| e.message.contains("45009") || e.message.contains("freq"))
        })
        .count();
    // At 10,000 calls per sliding minute, n calls of one API need at least
    // floor((n - 1) / 10,000) minutes between the first and the last; the achieved span
    // against that minimum is the share of the limit used (paths within one window need
    // no waiting at all).
    println!(
        "{:<24} {:>7} {:>9} {:>9} {:>13} {:>9}",
        "API path", "calls", "throttled", "span s", "min span s", "of limit"
    );
    for (path, p) in &stats.paths {
        let span = match (p.first, p.last) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        };
        let windows = p.calls.saturating_sub(1) / LIMIT_PER_MINUTE as u64;
        let min_span = windows as f64 * 60.0;
        let share = if windows == 0 {
            "one window".to_owned()
        } else {
            format!("{:.1}%", min_span / span.as_secs_f64() * 100.0)
        };
        println!(
            "{:<24} {:>7} {:>9} {:>9.1} {:>13.1} {:>9}",
            path,
            p.calls,
            p.throttled,
            span.as_secs_f64(),
            min_span,
            share
        );
    }
    println!(
        "all APIs: {} calls in {:.1} s = {:.0} calls/min; throttled answers at the fake: {}; \
         throttled errors in the report: {}",
        total.calls,
        wall.as_secs_f64(),
        total.calls as f64 / wall.as_secs_f64() * 60.0,
        total.throttled,
        throttled_in_report
    );
    assert_eq!(report.counts.failed, 0, "the run failed somewhere");
    Ok(())
}
