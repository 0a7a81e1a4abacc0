//! Helpers shared by the test modules.

use std::time::Duration;

use idsync_conformance::{ChaosLayer, Fault};
use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer, TracingLayer};

/// The recommended stack, inside out: (chaos throttling every n-th call,) timeout, rate
/// limit from the adapter's capabilities, retry, tracing.
pub(crate) fn stack(chaos_every: Option<u64>) -> Stack {
    let mut s = Stack::new();
    if let Some(n) = chaos_every {
        s = s.push(ChaosLayer::new().every(n, Fault::Throttle(Duration::from_millis(10))));
    }
    s.push(TimeoutLayer::new(Duration::from_secs(30)))
        .push(RateLimitLayer::from_capabilities())
        .push(
            RetryLayer::new()
                .with_max_attempts(8)
                .with_backoff(Duration::from_millis(10), Duration::from_millis(500))
                .with_max_retry_after(Duration::from_secs(2)),
        )
        .push(TracingLayer::new())
}

/// Serves `router` on 127.0.0.1; its URL.
pub(crate) async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the callback server must listen");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}/")
}
