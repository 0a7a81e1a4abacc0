//! [`TimeoutLayer`]: a deadline per call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Call, Layer, layered};
use crate::error::{Error, ErrorKind, Result};
use crate::source::{Applied, Op, Sink, Source};

/// Fails a call (one page, one lookup, one apply) that takes longer than the deadline,
/// with a temporary `Unavailable` error. Put it inside [`RetryLayer`](super::RetryLayer)
/// so that each attempt gets its own deadline. A timed-out create is *not* retried by the
/// retry layer: the provider may have applied it.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// A deadline of `after` per call.
    pub fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl Layer for TimeoutLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        Arc::new(Timeout {
            inner,
            after: self.after,
        })
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(Timeout {
            inner,
            after: self.after,
        })
    }
}

/// A source or sink wrapped by [`TimeoutLayer`].
pub struct Timeout<S: ?Sized> {
    inner: Arc<S>,
    after: Duration,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("after", &self.after)
            .finish()
    }
}

impl<S: ?Sized> Timeout<S> {
    async fn around<'a, T, F, Fut>(&'a self, call: Call<'a>, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        match tokio::time::timeout(self.after, f()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("{} timed out after {:?}", call.name, self.after),
            )
            .temporary()
            .with_operation(call.name)
            .with_context("timeout", format!("{:?}", self.after))),
        }
    }
}

impl<S: ?Sized + Sink> Timeout<S> {
    async fn around_apply(&self, op: &Op) -> Result<Applied> {
        self.around(Call::write(op), || self.inner.apply(op)).await
    }
}

layered!(Timeout);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::RetryLayer;
    use crate::layers::testing::Scripted;
    use crate::memory::MemoryAdapter;
    use crate::model::Account;
    use crate::source::PageRequest;
    use tokio::time::Instant;

    fn slow(secs: u64) -> Arc<Scripted> {
        let mut s = Scripted::new(MemoryAdapter::new("m"));
        s.delay = Some(Duration::from_secs(secs));
        Arc::new(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_a_temporary_unavailable() {
        let s = TimeoutLayer::new(Duration::from_secs(2)).layer_source(slow(10));
        let t0 = Instant::now();
        let e = s.accounts(PageRequest::first()).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        assert_eq!(e.operation(), Some("accounts"));
        // A fast call passes.
        let fast = TimeoutLayer::new(Duration::from_secs(2)).layer_source(slow(1));
        fast.accounts(PageRequest::first()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn inside_retry_each_attempt_has_its_own_deadline() {
        let inner = slow(3);
        let timeout: Arc<dyn Source> =
            TimeoutLayer::new(Duration::from_secs(1)).layer_source(inner.clone());
        let s = RetryLayer::new()
            .with_jitter(false)
            .with_backoff(Duration::from_secs(1), Duration::from_secs(1))
            .with_max_attempts(3)
            .layer_source(timeout);
        let t0 = Instant::now();
        let e = s.check().await.unwrap_err();
        assert_eq!(e.status(), crate::ErrorStatus::Persistent);
        assert_eq!(inner.calls(), 3);
        // 3 attempts of 1 s, 2 backoffs of 1 s
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        // A timed-out create is not retried.
        let inner = slow(3);
        let timeout: Arc<dyn Sink> =
            TimeoutLayer::new(Duration::from_secs(1)).layer_sink(inner.clone());
        let s = RetryLayer::new().layer_sink(timeout);
        let e = s
            .apply(&Op::CreateAccount {
                account: Account::new("x", "x"),
            })
            .await
            .unwrap_err();
        assert!(e.is_temporary());
        assert_eq!(inner.calls(), 1);
    }
}
