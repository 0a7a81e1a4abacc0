//! [`RateLimitLayer`]: a token bucket, fair under concurrency.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Call, Layer, layered};
use crate::error::Result;
use crate::source::{Applied, Op, RateLimit, Sink, Source};

/// A token bucket: `requests` tokens per `per`, holding at most `requests` (the burst).
///
/// Waiters are served first come, first served: the bucket sits behind a `tokio` mutex,
/// which is FIFO, and the waiter at the head sleeps while holding it.
pub struct TokenBucket {
    capacity: f64,
    per_token: Duration,
    state: Mutex<BucketState>,
}

struct BucketState {
    tokens: f64,
    last: Option<Instant>,
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("capacity", &self.capacity)
            .field("per_token", &self.per_token)
            .finish_non_exhaustive()
    }
}

impl TokenBucket {
    /// A full bucket for this limit (a limit of 0 requests counts as 1).
    pub fn new(limit: RateLimit) -> Self {
        let requests = limit.requests.max(1);
        TokenBucket {
            capacity: f64::from(requests),
            per_token: limit.per / requests,
            state: Mutex::new(BucketState {
                tokens: f64::from(requests),
                last: None,
            }),
        }
    }

    /// Wait for a token and take it.
    pub async fn acquire(&self) {
        let mut s = self.state.lock().await;
        loop {
            let now = Instant::now();
            if let Some(last) = s.last {
                let elapsed = now.saturating_duration_since(last);
                if !self.per_token.is_zero() {
                    s.tokens = (s.tokens + elapsed.as_secs_f64() / self.per_token.as_secs_f64())
                        .min(self.capacity);
                } else {
                    s.tokens = self.capacity;
                }
            }
            s.last = Some(now);
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                return;
            }
            let wait = self.per_token.mul_f64((1.0 - s.tokens).clamp(0.0, 1.0));
            tokio::time::sleep(wait.max(Duration::from_nanos(1))).await;
        }
    }
}

/// Limits the request rate of what it wraps with a [`TokenBucket`]. Every call (one page,
/// one lookup, one apply) takes a token.
///
/// [`RateLimitLayer::new`] shares one bucket among everything the layer wraps (a source and
/// a sink of one tenant share the tenant's quota). [`RateLimitLayer::from_capabilities`]
/// (the default) gives each wrapped adapter its own bucket from its
/// [`Capabilities::rate_limit`](crate::Capabilities::rate_limit), and no limit when it has
/// none.
#[derive(Debug, Clone, Default)]
pub struct RateLimitLayer {
    shared: Option<Arc<TokenBucket>>,
}

impl RateLimitLayer {
    /// One bucket for `limit`, shared by everything this layer wraps.
    pub fn new(limit: RateLimit) -> Self {
        RateLimitLayer {
            shared: Some(Arc::new(TokenBucket::new(limit))),
        }
    }

    /// Each wrapped adapter limited by its own `capabilities().rate_limit`.
    pub fn from_capabilities() -> Self {
        RateLimitLayer { shared: None }
    }

    fn bucket(&self, caps: Option<RateLimit>) -> Option<Arc<TokenBucket>> {
        self.shared
            .clone()
            .or_else(|| caps.map(|l| Arc::new(TokenBucket::new(l))))
    }
}

impl Layer for RateLimitLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        let bucket = self.bucket(inner.capabilities().rate_limit);
        Arc::new(RateLimiter { inner, bucket })
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        let bucket = self.bucket(inner.capabilities().rate_limit);
        Arc::new(RateLimiter { inner, bucket })
    }
}

/// A source or sink wrapped by [`RateLimitLayer`].
pub struct RateLimiter<S: ?Sized> {
    inner: Arc<S>,
    bucket: Option<Arc<TokenBucket>>,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for RateLimiter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("inner", &self.inner)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl<S: ?Sized> RateLimiter<S> {
    async fn around<'a, T, F, Fut>(&'a self, _call: Call<'a>, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        if let Some(b) = &self.bucket {
            b.acquire().await;
        }
        f().await
    }
}

impl<S: ?Sized + Sink> RateLimiter<S> {
    async fn around_apply(&self, op: &Op) -> Result<Applied> {
        self.around(Call::write(op), || self.inner.apply(op)).await
    }
}

layered!(RateLimiter);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testing::Scripted;
    use crate::memory::MemoryAdapter;
    use crate::source::PageRequest;

    fn limit(requests: u32, secs: u64) -> RateLimit {
        RateLimit {
            requests,
            per: Duration::from_secs(secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces() {
        let s = RateLimitLayer::new(limit(2, 1)).layer_source(Arc::new(MemoryAdapter::new("m")));
        let t0 = Instant::now();
        let mut at = Vec::new();
        for _ in 0..6 {
            s.check().await.unwrap();
            at.push(t0.elapsed().as_millis());
        }
        // Burst of 2, then one every 500 ms.
        assert_eq!(at, vec![0, 0, 500, 1000, 1500, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn defaults_come_from_capabilities() {
        let mut inner = Scripted::new(MemoryAdapter::new("m"));
        inner.rate_limit = Some(limit(1, 2));
        let s = RateLimitLayer::default().layer_source(Arc::new(inner));
        let t0 = Instant::now();
        for _ in 0..3 {
            s.orgs(PageRequest::first()).await.unwrap();
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
        // Without a documented limit there is none.
        let free = RateLimitLayer::default().layer_source(Arc::new(MemoryAdapter::new("m")));
        let t0 = Instant::now();
        for _ in 0..100 {
            free.check().await.unwrap();
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let layer = RateLimitLayer::new(limit(1, 1));
        let s = layer.layer_source(Arc::new(MemoryAdapter::new("m")));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                s.check().await.unwrap();
                order.lock().unwrap().push(i);
            }));
            // Let task i queue up before task i + 1 starts.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn one_layer_shares_its_bucket() {
        let layer = RateLimitLayer::new(limit(1, 1));
        let a = layer.layer_source(Arc::new(MemoryAdapter::new("a")));
        let b = layer.layer_sink(Arc::new(MemoryAdapter::new("b")));
        let t0 = Instant::now();
        a.check().await.unwrap();
        b.check().await.unwrap();
        a.check().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
