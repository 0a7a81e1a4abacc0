//! The memory adapter passes the suite wrapped in each layer of `idsync_core::layers`, in
//! the recommended stack, and with injected throttling and failures inside the retry layer.
//! Time is paused (tokio `test-util`): backoff and rate-limit waits cost nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use idsync_conformance::{ChaosLayer, Fault, Harness, run_all};
use idsync_core::layers::{
    ConcurrencyLimitLayer, RateLimitLayer, RetryBudget, RetryLayer, Stack, TimeoutLayer,
    TracingLayer,
};
use idsync_core::{Account, ErrorKind, Layer, MemoryAdapter, Org, RateLimit, Result, Sink, Source};

struct Layered {
    name: &'static str,
    layer: Arc<dyn Layer>,
    assign: bool,
}

#[async_trait]
impl Harness for Layered {
    fn name(&self) -> String {
        format!("memory + {}", self.name)
    }

    async fn seed(&self, orgs: Vec<Org>, accounts: Vec<Account>) -> Result<Arc<dyn Sink>> {
        let mut m = MemoryAdapter::with_data("conformance", orgs, accounts);
        if self.assign {
            m = m.assigning_anchors().with_max_page_size(3);
        }
        Ok(self.layer.layer_sink(Arc::new(m)))
    }

    async fn bad_credentials(&self) -> Option<Arc<dyn Source>> {
        let bad = ChaosLayer::always(Fault::Fail(ErrorKind::Unauthenticated))
            .layer_source(Arc::new(MemoryAdapter::new("bad")));
        Some(self.layer.layer_source(bad))
    }

    async fn throttled(&self) -> Option<Arc<dyn Source>> {
        // Asked to come back in an hour: longer than any retry layer waits, so the error
        // leaves the stack still temporary.
        let throttled = ChaosLayer::always(Fault::Throttle(Duration::from_secs(3600)))
            .layer_source(Arc::new(MemoryAdapter::new("throttled")));
        Some(self.layer.layer_source(throttled))
    }
}

async fn suite(name: &'static str, make: impl Fn() -> Arc<dyn Layer>) {
    for assign in [false, true] {
        let h = Layered {
            name,
            layer: make(),
            assign,
        };
        let report = run_all(&h).await;
        println!("{report}");
        report.assert_passed();
        assert!(report.skipped_cases().is_empty(), "{report}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry() {
    suite("retry", || Arc::new(RetryLayer::new())).await;
}

#[tokio::test(start_paused = true)]
async fn rate_limit() {
    let limit = RateLimit {
        requests: 20,
        per: Duration::from_secs(1),
    };
    let started = tokio::time::Instant::now();
    suite("rate limit", || Arc::new(RateLimitLayer::new(limit))).await;
    // The suite makes hundreds of calls: at 20 per second, (paused) time had to pass.
    assert!(
        started.elapsed() > Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit() {
    suite("concurrency limit", || {
        Arc::new(ConcurrencyLimitLayer::new(2))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn timeout() {
    suite("timeout", || {
        Arc::new(TimeoutLayer::new(Duration::from_secs(5)))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn tracing() {
    suite("tracing", || Arc::new(TracingLayer::new())).await;
}

fn recommended_stack() -> Stack {
    Stack::new()
        .push(TimeoutLayer::new(Duration::from_secs(30)))
        .push(RateLimitLayer::new(RateLimit {
            requests: 100,
            per: Duration::from_secs(1),
        }))
        .push(RetryLayer::new())
        .push(ConcurrencyLimitLayer::new(4))
        .push(TracingLayer::new())
}

#[tokio::test(start_paused = true)]
async fn recommended_stack_passes() {
    suite("recommended stack", || Arc::new(recommended_stack())).await;
}

#[tokio::test(start_paused = true)]
async fn chaos_inside_retry() {
    let chaos = ChaosLayer::new()
        .every(3, Fault::Throttle(Duration::from_millis(100)))
        .every(5, Fault::Refuse)
        .every(7, Fault::LoseResponse);
    let probe = chaos.clone();
    suite("chaos inside retry", move || {
        Arc::new(
            Stack::new().push(chaos.clone()).push(
                RetryLayer::new()
                    .with_max_attempts(8)
                    .with_budget(RetryBudget::unlimited()),
            ),
        )
    })
    .await;
    println!(
        "chaos inside retry: {} faults injected and absorbed",
        probe.injected()
    );
    // Faults really were injected (and absorbed).
    assert!(
        probe.injected() > 100,
        "only {} faults injected",
        probe.injected()
    );
}

#[tokio::test(start_paused = true)]
async fn chaos_inside_the_recommended_stack() {
    let chaos = ChaosLayer::new()
        .every(4, Fault::Throttle(Duration::from_millis(250)))
        .every(9, Fault::LoseResponse);
    let probe = chaos.clone();
    suite("chaos inside the recommended stack", move || {
        Arc::new(
            Stack::new()
                .push(chaos.clone())
                .push_arc(Arc::new(recommended_stack())),
        )
    })
    .await;
    assert!(
        probe.injected() > 50,
        "only {} faults injected",
        probe.injected()
    );
}

#[tokio::test(start_paused = true)]
async fn chaos_without_retry_fails_the_suite() {
    // The same faults without the retry layer: the suite must notice.
    let h = Layered {
        name: "chaos without retry",
        layer: Arc::new(ChaosLayer::new().every(5, Fault::Refuse)),
        assign: false,
    };
    let report = run_all(&h).await;
    assert!(!report.passed(), "{report}");
    assert!(report.failed_cases().len() >= 3, "{report}");
}
