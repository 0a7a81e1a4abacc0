//! [`ChaosLayer`]: a test-only layer that injects throttling and failures, to check that
//! the retry layer (and whatever else wraps it) still makes the suite pass.
//!
//! Faults are deterministic: "every n-th call" per wrapped adapter, counted over all
//! methods. Creates only receive faults that prove the request never reached the provider
//! ([`Fault::Throttle`], [`Fault::Refuse`]); idempotent writes also receive
//! [`Fault::LoseResponse`] (applied, but the answer is lost).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idsync_conformance::{ChaosLayer, Fault};
//! use idsync_core::{Layer, MemoryAdapter, Sink};
//!
//! let chaos = ChaosLayer::new()
//!     .every(3, Fault::Throttle(Duration::from_millis(50)))
//!     .every(7, Fault::LoseResponse);
//! let sink: Arc<dyn Sink> = chaos.layer_sink(Arc::new(MemoryAdapter::new("m")));
//! # let _ = sink;
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use idsync_core::layers::not_sent;
use idsync_core::{
    Account, Anchor, Applied, Capabilities, ChangeSet, Descriptor, Error, ErrorKind, Layer, Op,
    Org, Page, PageRequest, Result, Sink, Source, SyncCursor,
};

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `RateLimited`, temporary, with this `retry_after`; the call never reaches the inner
    /// adapter.
    Throttle(Duration),
    /// `Unavailable`, temporary, before the inner call (connection refused); marked
    /// [`not_sent`], so the retry layer retries it even
    /// for creates.
    Refuse,
    /// `Unavailable`, temporary, after the inner call ran (the response was lost). Not
    /// injected into creates.
    LoseResponse,
    /// A permanent error of this kind before the inner call (e.g. `Unauthenticated` for a
    /// bad-credentials harness).
    Fail(ErrorKind),
}

impl Fault {
    fn error(self, what: &str) -> Error {
        match self {
            Fault::Throttle(after) => {
                Error::new(ErrorKind::RateLimited, format!("chaos: {what} throttled"))
                    .temporary()
                    .with_retry_after(after)
                    .with_provider_code("429")
            }
            Fault::Refuse => not_sent(
                Error::new(ErrorKind::Unavailable, format!("chaos: {what} refused")).temporary(),
            ),
            Fault::LoseResponse => Error::new(
                ErrorKind::Unavailable,
                format!("chaos: {what} response lost"),
            )
            .temporary(),
            Fault::Fail(kind) => {
                Error::new(kind, format!("chaos: {what} failed ({kind})")).permanent()
            }
        }
    }
}

/// Injects [`Fault`]s into the adapters it wraps. Test support only.
#[derive(Debug, Clone, Default)]
pub struct ChaosLayer {
    rules: Arc<Vec<(u64, Fault)>>,
    injected: Arc<AtomicU64>,
}

impl ChaosLayer {
    /// No faults yet.
    pub fn new() -> Self {
        ChaosLayer::default()
    }

    /// Inject `fault` on every `n`-th call (1: every call). Earlier rules win when several
    /// match one call.
    pub fn every(self, n: u64, fault: Fault) -> Self {
        let mut rules: Vec<(u64, Fault)> = self.rules.as_ref().clone();
        rules.push((n.max(1), fault));
        ChaosLayer {
            rules: Arc::new(rules),
            injected: self.injected,
        }
    }

    /// Inject `fault` on every call.
    pub fn always(fault: Fault) -> Self {
        ChaosLayer::new().every(1, fault)
    }

    fn wrap<S: ?Sized>(&self, inner: Arc<S>) -> Chaos<S> {
        Chaos {
            inner,
            rules: self.rules.clone(),
            calls: AtomicU64::new(0),
            injected: self.injected.clone(),
        }
    }

    /// How many faults this layer (all adapters it wrapped) injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl Layer for ChaosLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        Arc::new(self.wrap(inner))
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(self.wrap(inner))
    }
}

/// A source or sink wrapped by [`ChaosLayer`].
pub struct Chaos<S: ?Sized> {
    inner: Arc<S>,
    rules: Arc<Vec<(u64, Fault)>>,
    calls: AtomicU64,
    injected: Arc<AtomicU64>,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for Chaos<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("rules", &self.rules)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S: ?Sized> Chaos<S> {
    fn next_fault(&self, create: bool) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let f = self
            .rules
            .iter()
            .filter(|(every, f)| {
                n % every == 0 && !(create && matches!(f, Fault::LoseResponse | Fault::Fail(_)))
            })
            .map(|(_, f)| *f)
            .next();
        if f.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        f
    }

    async fn call<T, F>(&self, what: &str, create: bool, f: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        match self.next_fault(create) {
            None => f.await,
            Some(Fault::LoseResponse) => {
                let _ = f.await;
                Err(Fault::LoseResponse.error(what))
            }
            Some(fault) => Err(fault.error(what)),
        }
    }
}

use std::future::Future;

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: ?Sized + Source> Source for Chaos<S> {
    fn describe(&self) -> Descriptor {
        self.inner.describe()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn check(&self) -> Result<()> {
        self.call("check", false, self.inner.check()).await
    }

    async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
        self.call("orgs", false, self.inner.orgs(page)).await
    }

    async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
        self.call("accounts", false, self.inner.accounts(page))
            .await
    }

    async fn org(&self, anchor: &Anchor) -> Result<Option<Org>> {
        self.call("org", false, self.inner.org(anchor)).await
    }

    async fn account(&self, anchor: &Anchor) -> Result<Option<Account>> {
        self.call("account", false, self.inner.account(anchor))
            .await
    }

    async fn find_accounts(&self, field: &str, value: &str) -> Result<Vec<Account>> {
        self.call(
            "find_accounts",
            false,
            self.inner.find_accounts(field, value),
        )
        .await
    }

    async fn current_cursor(&self) -> Result<SyncCursor> {
        self.call("current_cursor", false, self.inner.current_cursor())
            .await
    }

    async fn changes(&self, since: &SyncCursor) -> Result<ChangeSet> {
        self.call("changes", false, self.inner.changes(since)).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for Chaos<dyn Sink> {
    async fn apply(&self, op: &Op) -> Result<Applied> {
        self.call(op.name(), op.is_create(), self.inner.apply(op))
            .await
    }
}

/// The layer stack a provider runs the suite under against its fake, inside out: when
/// `chaos_every` is set, a [`ChaosLayer`] throttling every n-th call (so the retry layer
/// must absorb it); then a 30 s timeout, the rate limit the adapter declares, retries with
/// short backoffs (8 attempts, at most 2 s of `retry_after`), and tracing. The order is the
/// recommended one (timeout and rate limit inside retry).
pub fn provider_stack(chaos_every: Option<u64>) -> idsync_core::layers::Stack {
    use idsync_core::layers::{RateLimitLayer, RetryLayer, Stack, TimeoutLayer, TracingLayer};
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
