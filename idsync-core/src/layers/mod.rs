//! Layers wrap any [`Source`] or [`Sink`] from the outside, as `tower` layers wrap
//! services: retry, rate limit, concurrency limit, timeout, tracing. Adapters contain no
//! retry loops.
//!
//! | layer | what |
//! |---|---|
//! | [`RetryLayer`] | retries temporary errors with exponential backoff and full jitter, honours `retry_after`, a retry budget; marks errors that outlive the retries persistent |
//! | [`RateLimitLayer`] | a FIFO-fair token bucket; defaults from [`Capabilities::rate_limit`](crate::Capabilities::rate_limit) |
//! | [`ConcurrencyLimitLayer`] | at most `n` calls in flight |
//! | [`TimeoutLayer`] | a deadline per call; a timeout is a temporary `Unavailable` |
//! | [`TracingLayer`] | a span per call; provider and operation on every error |
//!
//! Every layer wraps *one call*: one page of a listing (`orgs` / `accounts`), one lookup,
//! one `apply`. A retried listing therefore resumes at the page that failed, not at the
//! start.
//!
//! ## Order
//!
//! [`Stack`] applies layers inside out: the first one pushed sits next to the adapter.
//! The recommended order, inside out:
//!
//! 1. [`TimeoutLayer`] — inside retry, so each *attempt* has its own deadline and a
//!    timed-out attempt is retried;
//! 2. [`RateLimitLayer`] — inside retry, so every attempt, retries included, takes a token;
//! 3. [`RetryLayer`];
//! 4. [`ConcurrencyLimitLayer`] — outside retry bounds the calls in flight, backoff
//!    included (put it inside retry to free permits while backing off);
//! 5. [`TracingLayer`] — outermost, one span per logical call, and every error that
//!    leaves the stack names its provider and operation.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use idsync_core::layers::{
//!     ConcurrencyLimitLayer, RateLimitLayer, RetryLayer, Stack, TimeoutLayer, TracingLayer,
//! };
//! use idsync_core::{MemoryAdapter, RateLimit, Sink, SourceExt};
//! use futures::TryStreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let stack = Stack::new()
//!     .push(TimeoutLayer::new(Duration::from_secs(30)))
//!     .push(RateLimitLayer::new(RateLimit { requests: 20, per: Duration::from_secs(1) }))
//!     .push(RetryLayer::new().with_max_attempts(5))
//!     .push(ConcurrencyLimitLayer::new(8))
//!     .push(TracingLayer::new());
//! let sink: Arc<dyn Sink> = stack.sink(Arc::new(MemoryAdapter::new("example")));
//! let accounts: Vec<_> = sink.account_stream(None).try_collect().await?;
//! assert!(accounts.is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use crate::error::Error;
use crate::source::{Op, Sink, Source};

mod concurrency;
mod rate_limit;
mod retry;
mod timeout;
mod trace;

pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use rate_limit::{RateLimitLayer, RateLimiter, TokenBucket};
pub use retry::{Retry, RetryBudget, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
pub use trace::{Traced, TracingLayer};

/// Wraps sources and sinks.
pub trait Layer: Send + Sync + fmt::Debug {
    /// Wrap a source.
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source>;
    /// Wrap a sink.
    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink>;
}

/// Several layers, applied inside out: the first pushed wraps the adapter, the last
/// pushed is outermost.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    layers: Vec<Arc<dyn Layer>>,
}

impl Stack {
    /// No layers.
    pub fn new() -> Self {
        Stack::default()
    }

    /// Add a layer around the ones pushed before.
    pub fn push(mut self, layer: impl Layer + 'static) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Add a shared layer around the ones pushed before.
    pub fn push_arc(mut self, layer: Arc<dyn Layer>) -> Self {
        self.layers.push(layer);
        self
    }
}

impl Layer for Stack {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        self.layers
            .iter()
            .fold(inner, |acc, layer| layer.layer_source(acc))
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        self.layers
            .iter()
            .fold(inner, |acc, layer| layer.layer_sink(acc))
    }
}

impl Stack {
    /// Wrap a source in every layer.
    pub fn source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        self.layer_source(inner)
    }

    /// Wrap a sink in every layer.
    pub fn sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        self.layer_sink(inner)
    }
}

/// Context key set on errors of requests that provably never reached the provider
/// (connection refused, a request rejected before sending). [`RetryLayer`] retries creates
/// only on such errors and on `RateLimited` answers.
pub const REQUEST_NOT_SENT: &str = "request_sent";

/// Mark an error as "the request never reached the provider" (see [`REQUEST_NOT_SENT`]).
/// Adapters use this for connection failures before any byte was written.
pub fn not_sent(e: Error) -> Error {
    e.with_context(REQUEST_NOT_SENT, "no")
}

/// Whether an error was marked with [`not_sent`].
pub fn was_not_sent(e: &Error) -> bool {
    e.context()
        .iter()
        .any(|(k, v)| k == REQUEST_NOT_SENT && v == "no")
}

/// One call through a layer: its operation name and, for writes, the op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// `"orgs"`, `"accounts"`, `"check"`, ... or the op's name for writes.
    pub(crate) name: &'static str,
    /// The op of an `apply`.
    pub(crate) op: Option<&'a Op>,
}

impl<'a> Call<'a> {
    pub(crate) fn read(name: &'static str) -> Self {
        Call { name, op: None }
    }

    pub(crate) fn write(op: &'a Op) -> Self {
        Call {
            name: op.name(),
            op: Some(op),
        }
    }
}

/// Implement `Source` for `$ty<S>` and `Sink` for `$ty<dyn Sink>` by sending every call
/// through the type's `around(call, f)` method. `apply` goes through `around_apply`.
macro_rules! layered {
    ($ty:ident) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<S: ?Sized + $crate::source::Source> $crate::source::Source for $ty<S> {
            fn describe(&self) -> $crate::source::Descriptor {
                self.inner.describe()
            }

            fn capabilities(&self) -> $crate::source::Capabilities {
                self.inner.capabilities()
            }

            async fn check(&self) -> $crate::error::Result<()> {
                self.around($crate::layers::Call::read("check"), || self.inner.check())
                    .await
            }

            async fn orgs(
                &self,
                page: $crate::source::PageRequest,
            ) -> $crate::error::Result<$crate::source::Page<$crate::model::Org>> {
                self.around($crate::layers::Call::read("orgs"), || {
                    self.inner.orgs(page.clone())
                })
                .await
            }

            async fn accounts(
                &self,
                page: $crate::source::PageRequest,
            ) -> $crate::error::Result<$crate::source::Page<$crate::model::Account>> {
                self.around($crate::layers::Call::read("accounts"), || {
                    self.inner.accounts(page.clone())
                })
                .await
            }

            async fn org(
                &self,
                anchor: &$crate::model::Anchor,
            ) -> $crate::error::Result<Option<$crate::model::Org>> {
                self.around($crate::layers::Call::read("org"), || self.inner.org(anchor))
                    .await
            }

            async fn account(
                &self,
                anchor: &$crate::model::Anchor,
            ) -> $crate::error::Result<Option<$crate::model::Account>> {
                self.around($crate::layers::Call::read("account"), || {
                    self.inner.account(anchor)
                })
                .await
            }

            async fn find_accounts(
                &self,
                field: &str,
                value: &str,
            ) -> $crate::error::Result<Vec<$crate::model::Account>> {
                self.around($crate::layers::Call::read("find_accounts"), || {
                    self.inner.find_accounts(field, value)
                })
                .await
            }

            async fn current_cursor(&self) -> $crate::error::Result<$crate::source::SyncCursor> {
                self.around($crate::layers::Call::read("current_cursor"), || {
                    self.inner.current_cursor()
                })
                .await
            }

            async fn changes(
                &self,
                since: &$crate::source::SyncCursor,
            ) -> $crate::error::Result<$crate::source::ChangeSet> {
                self.around($crate::layers::Call::read("changes"), || {
                    self.inner.changes(since)
                })
                .await
            }
        }

        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl $crate::source::Sink for $ty<dyn $crate::source::Sink> {
            async fn apply(
                &self,
                op: &$crate::source::Op,
            ) -> $crate::error::Result<$crate::source::Applied> {
                self.around_apply(op).await
            }
        }
    };
}

pub(crate) use layered;

/// Implements [`Source`] for a type by forwarding every method to one of its fields, a
/// source of its own (the pattern of provider sinks that wrap the provider's source);
/// `capabilities` comes from a method of the type, since a sink declares what it can
/// write. Every trait method is forwarded (`clippy::missing_trait_methods` is denied), so a
/// method added to [`Source`] cannot fall back to its default here.
///
/// ```
/// use idsync_core::{Applied, Capabilities, MemoryAdapter, Op, Result, Sink, Source};
///
/// #[derive(Debug)]
/// struct ReadOnlyish {
///     source: MemoryAdapter,
/// }
///
/// impl ReadOnlyish {
///     fn sink_capabilities(&self) -> Capabilities {
///         Capabilities { delete: false, ..self.source.capabilities() }
///     }
/// }
///
/// idsync_core::forward_source!(ReadOnlyish, source, ReadOnlyish::sink_capabilities);
///
/// #[async_trait::async_trait]
/// impl Sink for ReadOnlyish {
///     async fn apply(&self, op: &Op) -> Result<Applied> {
///         self.source.apply(op).await
///     }
/// }
///
/// let s = ReadOnlyish { source: MemoryAdapter::new("x") };
/// assert_eq!(s.describe().instance, "x");
/// assert!(!s.capabilities().delete);
/// ```
#[macro_export]
macro_rules! forward_source {
    ($ty:ty, $field:ident, $capabilities:path) => {
        #[$crate::__async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl $crate::source::Source for $ty {
            fn describe(&self) -> $crate::source::Descriptor {
                $crate::source::Source::describe(&self.$field)
            }

            fn capabilities(&self) -> $crate::source::Capabilities {
                $capabilities(self)
            }

            async fn check(&self) -> $crate::error::Result<()> {
                $crate::source::Source::check(&self.$field).await
            }

            async fn orgs(
                &self,
                page: $crate::source::PageRequest,
            ) -> $crate::error::Result<$crate::source::Page<$crate::model::Org>> {
                $crate::source::Source::orgs(&self.$field, page).await
            }

            async fn accounts(
                &self,
                page: $crate::source::PageRequest,
            ) -> $crate::error::Result<$crate::source::Page<$crate::model::Account>> {
                $crate::source::Source::accounts(&self.$field, page).await
            }

            async fn org(
                &self,
                anchor: &$crate::model::Anchor,
            ) -> $crate::error::Result<Option<$crate::model::Org>> {
                $crate::source::Source::org(&self.$field, anchor).await
            }

            async fn account(
                &self,
                anchor: &$crate::model::Anchor,
            ) -> $crate::error::Result<Option<$crate::model::Account>> {
                $crate::source::Source::account(&self.$field, anchor).await
            }

            async fn find_accounts(
                &self,
                field: &str,
                value: &str,
            ) -> $crate::error::Result<Vec<$crate::model::Account>> {
                $crate::source::Source::find_accounts(&self.$field, field, value).await
            }

            async fn current_cursor(&self) -> $crate::error::Result<$crate::source::SyncCursor> {
                $crate::source::Source::current_cursor(&self.$field).await
            }

            async fn changes(
                &self,
                since: &$crate::source::SyncCursor,
            ) -> $crate::error::Result<$crate::source::ChangeSet> {
                $crate::source::Source::changes(&self.$field, since).await
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted adapter for layer tests: a memory adapter that fails or stalls on
    //! command and counts calls.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use crate::error::{Error, Result};
    use crate::memory::MemoryAdapter;
    use crate::model::{Account, Org};
    use crate::source::{
        Applied, Capabilities, Descriptor, Op, Page, PageRequest, RateLimit, Sink, Source,
    };

    /// Fails with the queued errors first (one per call), then serves the memory adapter.
    #[derive(Debug)]
    pub(crate) struct Scripted {
        pub(crate) inner: MemoryAdapter,
        pub(crate) errors: Mutex<VecDeque<Error>>,
        pub(crate) calls: AtomicUsize,
        /// Calls by "method token": e.g. `"accounts:None"`, `"accounts:Some(..)"`.
        pub(crate) log: Mutex<Vec<String>>,
        pub(crate) delay: Option<Duration>,
        pub(crate) in_flight: AtomicUsize,
        pub(crate) max_in_flight: AtomicUsize,
        pub(crate) rate_limit: Option<RateLimit>,
        /// Apply the op before failing with the queued error (a lost response).
        pub(crate) fail_after_apply: bool,
    }

    impl Scripted {
        pub(crate) fn new(inner: MemoryAdapter) -> Self {
            Scripted {
                inner,
                errors: Mutex::new(VecDeque::new()),
                calls: AtomicUsize::new(0),
                log: Mutex::new(Vec::new()),
                delay: None,
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                rate_limit: None,
                fail_after_apply: false,
            }
        }

        pub(crate) fn failing(self, errors: Vec<Error>) -> Self {
            if let Ok(mut e) = self.errors.lock() {
                e.extend(errors);
            }
            self
        }

        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub(crate) fn log(&self) -> Vec<String> {
            self.log.lock().map(|l| l.clone()).unwrap_or_default()
        }

        async fn enter(&self, what: String) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut l) = self.log.lock() {
                l.push(what);
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let next = self.errors.lock().ok().and_then(|mut e| e.pop_front());
            match next {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Source for Scripted {
        fn describe(&self) -> Descriptor {
            Descriptor::new("scripted", "test")
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities {
                rate_limit: self.rate_limit,
                ..self.inner.capabilities()
            }
        }

        async fn check(&self) -> Result<()> {
            self.enter("check".into()).await
        }

        async fn orgs(&self, page: PageRequest) -> Result<Page<Org>> {
            self.enter(format!("orgs:{:?}", page.token)).await?;
            self.inner.orgs(page).await
        }

        async fn accounts(&self, page: PageRequest) -> Result<Page<Account>> {
            self.enter(format!("accounts:{:?}", page.token)).await?;
            self.inner.accounts(page).await
        }

        async fn org(&self, anchor: &crate::Anchor) -> crate::Result<Option<crate::Org>> {
            self.inner.org(anchor).await
        }

        async fn account(&self, anchor: &crate::Anchor) -> crate::Result<Option<crate::Account>> {
            self.inner.account(anchor).await
        }

        async fn find_accounts(
            &self,
            field: &str,
            value: &str,
        ) -> crate::Result<Vec<crate::Account>> {
            self.inner.find_accounts(field, value).await
        }
    }

    #[async_trait]
    impl Sink for Scripted {
        async fn apply(&self, op: &Op) -> Result<Applied> {
            if self.fail_after_apply {
                let r = self.inner.apply(op).await;
                self.enter(op.name().into()).await?;
                return r;
            }
            self.enter(op.name().into()).await?;
            self.inner.apply(op).await
        }
    }
}
