//! [`ConcurrencyLimitLayer`]: at most `n` calls in flight.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Call, Layer, layered};
use crate::error::{Error, Result};
use crate::source::{Applied, Op, Sink, Source};

/// Lets at most `n` calls run at once through everything this layer wraps (the permits
/// are shared by all adapters wrapped by one layer value). Waiters get permits in FIFO
/// order (tokio's semaphore is fair).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl ConcurrencyLimitLayer {
    /// At most `n` calls at once (at least 1).
    pub fn new(n: usize) -> Self {
        let max = n.max(1);
        ConcurrencyLimitLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl Layer for ConcurrencyLimitLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        Arc::new(ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
            max: self.max,
        })
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(ConcurrencyLimit {
            inner,
            permits: self.permits.clone(),
            max: self.max,
        })
    }
}

/// A source or sink wrapped by [`ConcurrencyLimitLayer`].
pub struct ConcurrencyLimit<S: ?Sized> {
    inner: Arc<S>,
    permits: Arc<Semaphore>,
    max: usize,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized> ConcurrencyLimit<S> {
    async fn around<'a, T, F, Fut>(&'a self, _call: Call<'a>, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unexpected("concurrency limit: semaphore closed"))?;
        f().await
    }
}

impl<S: ?Sized + Sink> ConcurrencyLimit<S> {
    async fn around_apply(&self, op: &Op) -> Result<Applied> {
        self.around(Call::write(op), || self.inner.apply(op)).await
    }
}

layered!(ConcurrencyLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testing::Scripted;
    use crate::memory::MemoryAdapter;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn at_most_n_in_flight() {
        let mut inner = Scripted::new(MemoryAdapter::new("m"));
        inner.delay = Some(Duration::from_secs(1));
        let inner = Arc::new(inner);
        let s = ConcurrencyLimitLayer::new(3).layer_source(inner.clone());
        let t0 = Instant::now();
        let calls = (0..10).map(|_| {
            let s = s.clone();
            async move { s.check().await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(inner.max_in_flight.load(Ordering::SeqCst), 3);
        assert_eq!(inner.calls(), 10);
        // ceil(10 / 3) rounds of 1 s
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
    }
}
