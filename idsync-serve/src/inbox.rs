//! The durable event inbox: provider events are verified by their callback router, then
//! written to the store **before** the provider hears `success`; a change-set job reads
//! them and commits its position only after their ops are applied.
//!
//! ```text
//!  provider --signed push--> callback router --verify--> Inbox (store) --> "success"
//!                                                            |
//!  scheduler (on_events, debounced) --> Engine::run_changes --+--> ops applied --> cursor committed
//! ```
//!
//! * The log itself is [`idsync_http::StoreEventLog`] (the provider crates' sources read
//!   any [`Events`] log); an [`Inbox`] adds what the service needs around it: a wake-up for
//!   `on_events` jobs, counters, the lag, and trimming what a job has consumed.
//! * The job's position is its engine cursor (`"<stream>#<seq>"`), which
//!   [`Engine::run_changes`](idsync_core::Engine::run_changes) commits only after every op
//!   of the change set succeeded. A crash between applying and committing makes the next
//!   run read the same events again; re-reading an entity that is already up to date plans
//!   no op, so every event is applied exactly once.
//! * Replay protection (nonces, with the provider's window) is claimed in the same store
//!   transaction as the event, so a replay is refused across restarts and by every worker
//!   sharing the store.
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{MemoryStore, Store};
//! use idsync_serve::{inbox::Inbox, ops::Metrics};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let inbox = Inbox::new(store, "dingtalk:corp1", Metrics::new());
//! // what the callback router records into and the DingTalk source reads from:
//! let log = inbox.events::<idsync_dingtalk_target::Target>();
//! # mod idsync_dingtalk_target {
//! #     #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
//! #     pub struct Target(pub String);
//! #     impl idsync_http::EventKey for Target {
//! #         fn to_key(&self) -> String { self.0.clone() }
//! #         fn from_key(k: &str) -> Option<Self> { Some(Target(k.to_owned())) }
//! #     }
//! # }
//! # let _ = log;
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use idsync_core::{Result, Store, SyncCursor};
use idsync_http::{Batch, EventKey, Events, Incoming, StoreEventLog};
use tokio::sync::Notify;

use crate::ops::Metrics;

/// One stream of the store's inbox, as the service uses it.
#[derive(Clone)]
pub struct Inbox {
    store: Arc<dyn Store>,
    stream: String,
    notify: Arc<Notify>,
    metrics: Metrics,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// The inbox `stream` of `store` (one per provider instance, e.g. `dingtalk:corp1`).
    pub fn new(store: Arc<dyn Store>, stream: impl Into<String>, metrics: Metrics) -> Self {
        Inbox {
            store,
            stream: stream.into(),
            notify: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The event log callback routers record into and sources read from: the store's log
    /// of this stream, waking [`notified`](Self::notified) waiters and counting each event
    /// (`idsync_inbox_events_total`).
    pub fn events<T>(&self) -> Arc<InboxLog<T>>
    where
        T: EventKey + Ord + Clone + Send + Sync + fmt::Debug + 'static,
    {
        Arc::new(InboxLog {
            log: StoreEventLog::new(self.store.clone(), self.stream.clone()),
            inbox: self.clone(),
        })
    }

    /// Resolves when an event was recorded through this process (after the call).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The newest sequence number of the stream.
    pub async fn head(&self) -> Result<u64> {
        self.store.inbox_head(&self.stream).await
    }

    /// The position a cursor of this stream names (0 for none or another log's cursor).
    pub fn position(&self, cursor: Option<&SyncCursor>) -> u64 {
        let log: StoreEventLog<()> = StoreEventLog::new(self.store.clone(), self.stream.clone());
        cursor.and_then(|c| log.position(c)).unwrap_or(0)
    }

    /// Events recorded and not consumed by the job whose committed cursor is `cursor`;
    /// sets the `idsync_inbox_lag` gauge.
    pub async fn lag(&self, cursor: Option<&SyncCursor>) -> Result<u64> {
        let lag = self.head().await?.saturating_sub(self.position(cursor));
        self.metrics
            .set("idsync_inbox_lag", &[("stream", &self.stream)], lag as f64);
        Ok(lag)
    }

    /// Forget what the job consumed (its committed cursor) and expired replay keys.
    pub async fn trim(&self, consumed: &SyncCursor, now: DateTime<Utc>) -> Result<u64> {
        let log: StoreEventLog<()> = StoreEventLog::new(self.store.clone(), self.stream.clone());
        log.trim(consumed, now).await
    }
}

/// The store's event log of one stream, waking the inbox's waiters on every recorded
/// event ([`Inbox::events`]).
pub struct InboxLog<T> {
    log: StoreEventLog<T>,
    inbox: Inbox,
}

impl<T> fmt::Debug for InboxLog<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxLog")
            .field("stream", &self.inbox.stream)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<T> Events<T> for InboxLog<T>
where
    T: EventKey + Ord + Clone + Send + Sync + fmt::Debug + 'static,
{
    async fn record(&self, event: Incoming<T>) -> Result<bool> {
        let stream = self.inbox.stream.as_str();
        let r = self.log.record(event).await;
        let outcome = match &r {
            Ok(true) => "recorded",
            Ok(false) => "replay",
            Err(_) => "error",
        };
        self.inbox.metrics.inc(
            "idsync_inbox_events_total",
            &[("stream", stream), ("outcome", outcome)],
            1,
        );
        if matches!(r, Ok(true)) {
            self.inbox.notify.notify_waiters();
            self.inbox.notify.notify_one();
        }
        r
    }

    async fn current(&self) -> Result<SyncCursor> {
        self.log.current().await
    }

    async fn since(&self, since: &SyncCursor) -> Result<Batch<T>> {
        self.log.since(since).await
    }
}
