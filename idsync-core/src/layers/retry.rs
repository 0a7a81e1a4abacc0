//! [`RetryLayer`]: retry temporary errors with exponential backoff and full jitter.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Call, Layer, layered, was_not_sent};
use crate::error::{ErrorKind, Result};
use crate::source::{Applied, Op, Sink, Source};

/// A retry budget shared by everything one [`RetryLayer`] wraps, so that a struggling
/// provider is not hammered by retries (after `tower`'s budget): each successful first
/// attempt deposits `ratio` tokens (up to `max`), each retry withdraws one; besides, a
/// reserve of `min_per_sec` retries per second is always available.
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: f64,
    reserve_cap: f64,
    max: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    balance: f64,
    reserve: f64,
    refilled: Option<Instant>,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for RetryBudget {
    /// 20 % extra requests as retries, at least 10 retries per second.
    fn default() -> Self {
        RetryBudget::new(0.2, 10.0, 1000.0)
    }
}

impl RetryBudget {
    /// A budget: `ratio` retries earned per request, `min_per_sec` retries per second
    /// always allowed, at most `max` retries saved up.
    pub fn new(ratio: f64, min_per_sec: f64, max: f64) -> Self {
        let min_per_sec = min_per_sec.max(0.0);
        // The reserve holds at least one retry when there is any reserve at all.
        let reserve_cap = if min_per_sec > 0.0 {
            min_per_sec.max(1.0)
        } else {
            0.0
        };
        RetryBudget {
            ratio: ratio.max(0.0),
            min_per_sec,
            reserve_cap,
            max: max.max(0.0),
            state: Mutex::new(BudgetState {
                balance: 0.0,
                reserve: reserve_cap,
                refilled: None,
            }),
        }
    }

    /// No limit at all.
    pub fn unlimited() -> Self {
        RetryBudget::new(0.0, f64::MAX, 0.0)
    }

    fn deposit(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.balance = (s.balance + self.ratio).min(self.max);
        }
    }

    /// Take one retry from the budget; false when it is spent.
    fn withdraw(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        let now = Instant::now();
        if let Some(last) = s.refilled {
            let secs = now.saturating_duration_since(last).as_secs_f64();
            s.reserve = (s.reserve + secs * self.min_per_sec).min(self.reserve_cap);
        }
        s.refilled = Some(now);
        if s.reserve >= 1.0 {
            s.reserve -= 1.0;
            true
        } else if s.balance >= 1.0 {
            s.balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct Policy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: bool,
    max_retry_after: Duration,
}

/// Retries calls that fail with a temporary error ([`Error::is_temporary`]).
///
/// * Exponential backoff with full jitter: before retry `n` it sleeps a random time in
///   `[0, min(max_backoff, initial_backoff × multiplier^(n-1))]`, but never less than the
///   error's `retry_after`. A `retry_after` longer than `max_retry_after` is not waited
///   for: the error is returned as is (still temporary), for a scheduler to come back later.
/// * At most `max_attempts` attempts (first one included), within a shared
///   [`RetryBudget`]. An error still temporary after that is returned **persistent**, with
///   the number of attempts in its context.
/// * Reads (`orgs`, `accounts`, lookups, `changes`) are retried one call at a time: one
///   page of a listing, not the whole listing.
/// * Writes are retried when the op is idempotent ([`Op::is_idempotent`]: everything but
///   creates). A create is retried only when the error proves the request was never
///   applied: a `RateLimited` answer (the provider refused it) or an error marked
///   [`not_sent`](super::not_sent) (e.g. connection refused). A timeout or a 5xx on a
///   create is not retried: the entity may exist; the engine's next run correlates it.
/// * A delete retried after an attempt whose outcome is unknown (a lost response) that
///   now finds the entity gone counts as done.
///
/// Sleeps go through `tokio::time::sleep`, so tests can pause time.
///
/// [`Error::is_temporary`]: crate::Error::is_temporary
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Policy,
    budget: Arc<RetryBudget>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        RetryLayer::new()
    }
}

impl RetryLayer {
    /// 4 attempts, backoff 200 ms doubling up to 30 s with full jitter, `retry_after` up to
    /// 5 minutes, the default budget.
    pub fn new() -> Self {
        RetryLayer {
            policy: Policy {
                max_attempts: 4,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: true,
                max_retry_after: Duration::from_secs(300),
            },
            budget: Arc::new(RetryBudget::default()),
        }
    }

    /// Attempts in all, the first included (at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.policy.max_attempts = n.max(1);
        self
    }

    /// The first backoff and the largest.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.policy.initial_backoff = initial;
        self.policy.max_backoff = max.max(initial);
        self
    }

    /// The backoff growth factor (at least 1).
    pub fn with_multiplier(mut self, m: f64) -> Self {
        self.policy.multiplier = m.max(1.0);
        self
    }

    /// Full jitter on (default) or off (sleep exactly the backoff).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.policy.jitter = jitter;
        self
    }

    /// The longest `retry_after` the layer waits for.
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.policy.max_retry_after = d;
        self
    }

    /// The retry budget, shared by everything this layer wraps.
    pub fn with_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    fn wrap<S: ?Sized>(&self, inner: Arc<S>) -> Retry<S> {
        Retry {
            inner,
            policy: self.policy.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl Layer for RetryLayer {
    fn layer_source(&self, inner: Arc<dyn Source>) -> Arc<dyn Source> {
        Arc::new(self.wrap(inner))
    }

    fn layer_sink(&self, inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(self.wrap(inner))
    }
}

/// A source or sink wrapped by [`RetryLayer`].
pub struct Retry<S: ?Sized> {
    inner: Arc<S>,
    policy: Policy,
    budget: Arc<RetryBudget>,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("max_attempts", &self.policy.max_attempts)
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized> Retry<S> {
    fn backoff(&self, retry: u32) -> Duration {
        let p = &self.policy;
        let exp = p.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
        let cap = (p.initial_backoff.as_secs_f64() * exp).min(p.max_backoff.as_secs_f64());
        let secs = if p.jitter {
            cap * rand::random::<f64>()
        } else {
            cap
        };
        Duration::from_secs_f64(secs.max(0.0))
    }

    async fn around<'a, T, F, Fut>(&'a self, call: Call<'a>, f: F) -> Result<T>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
    {
        let mut attempt = 1u32;
        loop {
            let err = match f().await {
                Ok(v) => {
                    if attempt == 1 {
                        self.budget.deposit();
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            if !err.is_temporary() {
                return Err(err);
            }
            let never_applied = err.kind() == ErrorKind::RateLimited || was_not_sent(&err);
            if let Some(op) = call.op
                && !op.is_idempotent()
                && !never_applied
            {
                return Err(err);
            }
            if attempt >= self.policy.max_attempts {
                return Err(err
                    .persistent()
                    .with_context("attempts", attempt.to_string()));
            }
            let mut delay = self.backoff(attempt);
            if let Some(after) = err.retry_after() {
                if after > self.policy.max_retry_after {
                    return Err(err);
                }
                delay = delay.max(after);
            }
            if !self.budget.withdraw() {
                return Err(err
                    .persistent()
                    .with_context("attempts", attempt.to_string())
                    .with_context("retry_budget", "exhausted"));
            }
            tracing::debug!(
                operation = call.name,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl<S: ?Sized + Sink> Retry<S> {
    async fn around_apply(&self, op: &Op) -> Result<Applied> {
        let maybe_applied = AtomicBool::new(false);
        let is_delete = matches!(op, Op::DeleteOrg { .. } | Op::DeleteAccount { .. });
        self.around(Call::write(op), || async {
            match self.inner.apply(op).await {
                Err(e)
                    if is_delete
                        && e.kind() == ErrorKind::NotFound
                        && maybe_applied.load(Ordering::SeqCst) =>
                {
                    Ok(Applied::with_anchor(op.anchor().clone()))
                }
                Err(e) => {
                    if e.kind() != ErrorKind::RateLimited && !was_not_sent(&e) {
                        maybe_applied.store(true, Ordering::SeqCst);
                    }
                    Err(e)
                }
                ok => ok,
            }
        })
        .await
    }
}

layered!(Retry);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorStatus};
    use crate::layers::not_sent;
    use crate::layers::testing::Scripted;
    use crate::memory::MemoryAdapter;
    use crate::model::{Account, Org};
    use crate::source::{PageRequest, SourceExt};
    use futures::TryStreamExt;

    fn unavailable() -> Error {
        Error::new(ErrorKind::Unavailable, "503")
    }

    fn throttled(after: u64) -> Error {
        Error::new(ErrorKind::RateLimited, "429").with_retry_after(Duration::from_secs(after))
    }

    fn layer() -> RetryLayer {
        RetryLayer::new()
            .with_jitter(false)
            .with_backoff(Duration::from_secs(1), Duration::from_secs(8))
            .with_max_attempts(4)
    }

    fn data() -> MemoryAdapter {
        let accounts = (0..5)
            .map(|i| Account::new(format!("u{i}"), format!("user{i}")))
            .collect();
        MemoryAdapter::with_data("m", vec![Org::new("r", None, "R")], accounts)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_temporary_errors_with_exponential_backoff() {
        let inner = Arc::new(Scripted::new(data()).failing(vec![unavailable(), unavailable()]));
        let s = layer().layer_source(inner.clone());
        let t0 = Instant::now();
        let page = s.accounts(PageRequest::first()).await.unwrap();
        assert_eq!(page.items.len(), 5);
        assert_eq!(inner.calls(), 3);
        // 1 s, then 2 s
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_stays_within_the_cap() {
        let l = RetryLayer::new().with_backoff(Duration::from_secs(1), Duration::from_secs(4));
        let r = l.wrap(Arc::new(data()));
        let mut distinct = std::collections::BTreeSet::new();
        for retry in 1..=6 {
            for _ in 0..50 {
                let d = r.backoff(retry);
                let cap = Duration::from_secs(1 << (retry - 1).min(2));
                assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
                distinct.insert(d.as_nanos());
            }
        }
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after() {
        let inner = Arc::new(Scripted::new(data()).failing(vec![throttled(7)]));
        let s = layer().layer_source(inner.clone());
        let t0 = Instant::now();
        s.orgs(PageRequest::first()).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn too_long_retry_after_is_returned_at_once() {
        let inner = Arc::new(Scripted::new(data()).failing(vec![throttled(3600)]));
        let s = layer().layer_source(inner.clone());
        let e = s.orgs(PageRequest::first()).await.unwrap_err();
        assert_eq!(e.status(), ErrorStatus::Temporary);
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let inner = Arc::new(
            Scripted::new(data()).failing(vec![Error::new(ErrorKind::Unauthenticated, "401")]),
        );
        let s = layer().layer_source(inner.clone());
        let e = s.check().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert_eq!(e.status(), ErrorStatus::Permanent);
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_as_persistent() {
        let inner =
            Arc::new(Scripted::new(data()).failing((0..10).map(|_| unavailable()).collect()));
        let s = layer().layer_source(inner.clone());
        let t0 = Instant::now();
        let e = s.accounts(PageRequest::first()).await.unwrap_err();
        assert_eq!(e.status(), ErrorStatus::Persistent);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.context().iter().any(|(k, v)| k == "attempts" && v == "4"));
        assert_eq!(inner.calls(), 4);
        assert_eq!(t0.elapsed(), Duration::from_secs(1 + 2 + 4));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_one_page_not_the_whole_listing() {
        let inner = Arc::new(Scripted::new(data().with_max_page_size(2)).failing(Vec::new()));
        let s = layer().layer_source(inner.clone());
        let mut stream = s.account_stream(Some(2));
        let mut got = Vec::new();
        got.push(stream.try_next().await.unwrap().unwrap());
        got.push(stream.try_next().await.unwrap().unwrap());
        // The second page fails once.
        inner.errors.lock().unwrap().push_back(unavailable());
        while let Some(a) = stream.try_next().await.unwrap() {
            got.push(a);
        }
        assert_eq!(got.len(), 5);
        let log = inner.log();
        assert_eq!(
            log,
            vec![
                "accounts:None".to_owned(),
                "accounts:Some(PageToken(\"u1\"))".to_owned(),
                "accounts:Some(PageToken(\"u1\"))".to_owned(),
                "accounts:Some(PageToken(\"u3\"))".to_owned(),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn creates_are_retried_only_when_never_sent() {
        let create = Op::CreateAccount {
            account: Account::new("new", "new"),
        };
        // A lost response (5xx) on a create: not retried, stays temporary.
        let inner = Arc::new(Scripted::new(data()).failing(vec![unavailable()]));
        let s = layer().layer_sink(inner.clone());
        let e = s.apply(&create).await.unwrap_err();
        assert_eq!(e.status(), ErrorStatus::Temporary);
        assert_eq!(inner.calls(), 1);
        // Throttled, then refused before sending: both retried.
        let inner = Arc::new(
            Scripted::new(data()).failing(vec![throttled(1), not_sent(unavailable().temporary())]),
        );
        let s = layer().layer_sink(inner.clone());
        s.apply(&create).await.unwrap();
        assert_eq!(inner.calls(), 3);
        assert!(inner.inner.snapshot().unwrap().accounts.contains_key("new"));
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_writes_are_retried_and_lost_deletes_count_as_done() {
        let mut inner = Scripted::new(data()).failing(vec![unavailable()]);
        inner.fail_after_apply = true;
        let inner = Arc::new(inner);
        let s = layer().layer_sink(inner.clone());
        let applied = s
            .apply(&Op::DeleteAccount {
                anchor: "u1".into(),
            })
            .await
            .unwrap();
        assert_eq!(applied.anchor.unwrap().as_str(), "u1");
        assert_eq!(inner.calls(), 2);
        // A delete of something that never existed is still NotFound.
        let e = s
            .apply(&Op::DeleteAccount {
                anchor: "nobody".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_stops_retry_storms() {
        let inner =
            Arc::new(Scripted::new(data()).failing((0..10).map(|_| unavailable()).collect()));
        let s = layer()
            .with_max_attempts(10)
            .with_budget(RetryBudget::new(0.0, 0.5, 0.0))
            .layer_source(inner.clone());
        let e = s.check().await.unwrap_err();
        assert_eq!(e.status(), ErrorStatus::Persistent);
        assert!(e.context().iter().any(|(k, _)| k == "retry_budget"));
        // The reserve holds one retry and refills at 0.5 per second: after the first
        // retry's 1 s backoff only half a retry is back.
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_earn_retries() {
        // No reserve; each successful request earns half a retry.
        let inner = Arc::new(Scripted::new(data()));
        let s = layer()
            .with_budget(RetryBudget::new(0.5, 0.0, 10.0))
            .layer_source(inner.clone());
        for _ in 0..4 {
            s.check().await.unwrap();
        }
        // Two retries earned: a call failing three times is retried twice, then refused.
        inner
            .errors
            .lock()
            .unwrap()
            .extend((0..3).map(|_| unavailable()));
        let e = s.check().await.unwrap_err();
        assert!(e.context().iter().any(|(k, _)| k == "retry_budget"));
        assert_eq!(inner.calls(), 4 + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_without_reserve_allows_no_retry() {
        let inner = Arc::new(Scripted::new(data()).failing(vec![unavailable()]));
        let s = layer()
            .with_budget(RetryBudget::new(0.0, 0.0, 0.0))
            .layer_source(inner.clone());
        let e = s.check().await.unwrap_err();
        assert_eq!(e.status(), ErrorStatus::Persistent);
        assert_eq!(inner.calls(), 1);
    }
}
