//! Benchmark: a full inbound sync of a fake DingTalk tenant (10,000 people in 200
//! departments by default) into a hub, with the fake limiting every API to 20 requests per
//! second as standard DingTalk orgs do.
//!
//! It reports, per API path, the calls made, the throttled answers and the achieved rate as
//! a share of the 20 QPS limit, plus the engine report's failures (throttled answers that
//! reached the report). Not run by `cargo test`:
//!
//! ```text
//! cargo bench -p idsync-dingtalk --bench sync_20qps
//! IDSYNC_BENCH_USERS=2000 IDSYNC_BENCH_DEPTS=40 cargo bench -p idsync-dingtalk --bench sync_20qps
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer};
use idsync_core::{Engine, Hub, Job, MemoryStore, Source, Store};
use idsync_dingtalk::DingTalkSource;
use idsync_dingtalk::fake::{FakeConfig, FakeDingTalk};

const LIMIT: f64 = 20.0;

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
    let fake = FakeDingTalk::start(FakeConfig {
        qps: Some(20),
        ..FakeConfig::default()
    })
    .await?;
    fake.seed(depts, users);
    let multi = fake
        .users()
        .iter()
        .filter(|u| u.dept_id_list.len() > 1)
        .count();
    println!(
        "fake tenant: {users} people ({multi} in two departments) in {depts} departments; 20 QPS per API"
    );

    let cfg = fake.client_config(); // qps 20 per API, page size 100
    // The client paces each API; the core layers retry whatever still gets throttled.
    let stack = Stack::new()
        .push(TimeoutLayer::new(Duration::from_secs(60)))
        .push(RateLimitLayer::from_capabilities())
        .push(RetryLayer::new().with_max_attempts(6));
    let source: Arc<dyn Source> = stack.source(Arc::new(DingTalkSource::new(cfg)?));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hub = Arc::new(Hub::new(store.clone()));
    let engine = Engine::new(store);
    let job = Job::new("bench-dingtalk-to-hub", source, hub);

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
                .is_some_and(|e| e.message.contains("90018") || e.message.contains("过多"))
        })
        .count();
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "API path", "calls", "throttled", "span s", "req/s", "of 20"
    );
    for (path, p) in &stats.paths {
        let span = match (p.first, p.last) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        };
        // n calls spread over a span cover n-1 intervals
        let rate = if span.is_zero() {
            0.0
        } else {
            (p.calls.saturating_sub(1)) as f64 / span.as_secs_f64()
        };
        println!(
            "{:<34} {:>7} {:>9} {:>9.1} {:>9.2} {:>7.1}%",
            path,
            p.calls,
            p.throttled,
            span.as_secs_f64(),
            rate,
            rate / LIMIT * 100.0
        );
    }
    println!(
        "all APIs: {} calls in {:.1} s = {:.2} req/s; throttled answers at the fake: {}; \
         throttled errors in the report: {}",
        total.calls,
        wall.as_secs_f64(),
        total.calls as f64 / wall.as_secs_f64(),
        total.throttled,
        throttled_in_report
    );
    assert_eq!(report.counts.failed, 0, "the run failed somewhere");
    Ok(())
}
