//! Event logs: what provider callbacks and event streams feed and a source's `changes`
//! reads, behind one trait, [`Events`].
//!
//! * [`EventLog`]: in memory, bounded (tests, library users, one-shot processes). A
//!   restart loses it; cursors from before a restart are reported stale.
//! * [`StoreEventLog`]: the durable inbox of a [`Store`] (`idsync serve`). A callback
//!   records an event in the store, with its replay keys, **before** it acknowledges it to
//!   the provider; cursors survive restarts, and a job's cursor (committed by the engine
//!   only after the change set is applied) is its position in the inbox.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use idsync_core::{Error, InboxPush, InboxTarget, Result, Store, SyncCursor};

/// A verified provider event on its way into an event log ([`Events::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<T> {
    /// Replay keys (a nonce, an event id): the event is refused when one of them was
    /// recorded within `window` before `at`.
    pub keys: Vec<String>,
    /// How long the keys are kept (the provider's replay window).
    pub window: Duration,
    /// When it was received (the receiver's clock).
    pub at: DateTime<Utc>,
    /// The provider's event type.
    pub event_type: String,
    /// The entities it names, with "deleted" (may be empty: only the keys are kept).
    pub targets: Vec<(T, bool)>,
}

/// Where verified events go and where a source's `changes` reads them: the in-memory
/// [`EventLog`] or the store-backed [`StoreEventLog`].
#[async_trait]
pub trait Events<T>: Send + Sync + fmt::Debug {
    /// Records one event unless it is a replay (then `Ok(false)`, nothing recorded). Once
    /// this returned `Ok(true)` the event is as durable as the log: only then may the
    /// provider be told `success`.
    async fn record(&self, event: Incoming<T>) -> Result<bool>;
    /// The cursor after the last recorded event.
    async fn current(&self) -> Result<SyncCursor>;
    /// The entities changed after `since`, each once (see [`Batch`]).
    async fn since(&self, since: &SyncCursor) -> Result<Batch<T>>;
}

/// How a log's entity type is written into a store inbox (and read back).
pub trait EventKey: Sized {
    /// The entity as a string, e.g. `user:alice`.
    fn to_key(&self) -> String;
    /// Back from [`to_key`](Self::to_key); `None` for a string it never wrote.
    fn from_key(key: &str) -> Option<Self>;
}

/// One recorded event: what it names and whether it says the entity is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<T> {
    /// Position in the log.
    pub seq: u64,
    /// The provider's event type, e.g. `user_add_org`.
    pub event_type: String,
    /// The entity.
    pub target: T,
    /// The event says the entity is gone (a hint: sources re-read before deleting).
    pub deleted: bool,
}

/// The entities changed since a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    /// Each changed entity once (in the order of its last event), with "deleted" from its
    /// last event.
    pub targets: Vec<(T, bool)>,
    /// The cursor after the last event.
    pub cursor: SyncCursor,
    /// False when the given cursor is from another log or older than what is kept: the
    /// caller must do a full read.
    pub complete: bool,
}

/// An in-memory, bounded, ordered log of directory events, `T` naming the entity (a user
/// or department id).
///
/// Cursors are `"<epoch>:<seq>"`; the epoch is random per log, so a cursor from another
/// process (or from before a restart) is reported as stale (`complete: false`), as is a
/// cursor older than the oldest event kept. Event ids given to
/// [`push_once`](EventLog::push_once) are remembered (bounded) so that a redelivered event
/// is recorded once.
#[derive(Debug)]
pub struct EventLog<T> {
    epoch: String,
    capacity: usize,
    inner: Mutex<LogInner<T>>,
}

#[derive(Debug)]
struct LogInner<T> {
    events: VecDeque<Event<T>>,
    /// The seq of the last event ever recorded.
    last: u64,
    ids: HashSet<String>,
    id_order: VecDeque<String>,
    /// Replay keys of [`Events::record`] → until when they are kept.
    keys: HashMap<String, DateTime<Utc>>,
}

impl<T: Clone + Ord> EventLog<T> {
    /// An empty log keeping at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let mut r = [0u8; 6];
        rand::Rng::fill(&mut rand::rng(), &mut r);
        EventLog {
            epoch: r.iter().map(|b| format!("{b:02x}")).collect(),
            capacity: capacity.max(1),
            inner: Mutex::new(LogInner {
                events: VecDeque::new(),
                last: 0,
                ids: HashSet::new(),
                id_order: VecDeque::new(),
                keys: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner<T>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one event.
    pub fn push(&self, event_type: &str, target: T, deleted: bool) {
        let mut g = self.lock();
        self.push_locked(&mut g, event_type, target, deleted);
    }

    fn push_locked(&self, g: &mut LogInner<T>, event_type: &str, target: T, deleted: bool) {
        g.last += 1;
        let seq = g.last;
        g.events.push_back(Event {
            seq,
            event_type: event_type.to_owned(),
            target,
            deleted,
        });
        while g.events.len() > self.capacity {
            g.events.pop_front();
        }
    }

    /// Records the targets of the event `event_id` unless that id was recorded already
    /// (a redelivery). Returns false for a duplicate.
    pub fn push_once(
        &self,
        event_id: &str,
        event_type: &str,
        targets: impl IntoIterator<Item = (T, bool)>,
    ) -> bool {
        let mut g = self.lock();
        if !event_id.is_empty() {
            if g.ids.contains(event_id) {
                return false;
            }
            g.ids.insert(event_id.to_owned());
            g.id_order.push_back(event_id.to_owned());
            while g.id_order.len() > self.capacity {
                if let Some(old) = g.id_order.pop_front() {
                    g.ids.remove(&old);
                }
            }
        }
        for (t, d) in targets {
            self.push_locked(&mut g, event_type, t, d);
        }
        true
    }

    /// The cursor after the last recorded event.
    pub fn current(&self) -> SyncCursor {
        SyncCursor(format!("{}:{}", self.epoch, self.lock().last))
    }

    /// Number of events kept.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// True when no event is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the events kept.
    pub fn events(&self) -> Vec<Event<T>> {
        self.lock().events.iter().cloned().collect()
    }

    /// The entities changed after `since`, each once.
    pub fn since(&self, since: &SyncCursor) -> Batch<T> {
        let g = self.lock();
        let current = SyncCursor(format!("{}:{}", self.epoch, g.last));
        let parsed = since
            .0
            .split_once(':')
            .filter(|(e, _)| *e == self.epoch)
            .and_then(|(_, s)| s.parse::<u64>().ok());
        let oldest_kept = g.events.front().map(|e| e.seq).unwrap_or(g.last + 1);
        let Some(from) = parsed.filter(|s| *s <= g.last && s + 1 >= oldest_kept) else {
            return Batch {
                targets: Vec::new(),
                cursor: current,
                complete: false,
            };
        };
        let mut last: BTreeMap<T, (u64, bool)> = BTreeMap::new();
        for e in g.events.iter().filter(|e| e.seq > from) {
            last.insert(e.target.clone(), (e.seq, e.deleted));
        }
        let mut targets: Vec<(u64, T, bool)> =
            last.into_iter().map(|(t, (s, d))| (s, t, d)).collect();
        targets.sort();
        Batch {
            targets: targets.into_iter().map(|(_, t, d)| (t, d)).collect(),
            cursor: current,
            complete: true,
        }
    }
}

#[async_trait]
impl<T: Clone + Ord + Send + Sync + fmt::Debug> Events<T> for EventLog<T> {
    async fn record(&self, event: Incoming<T>) -> Result<bool> {
        let until = chrono::Duration::from_std(event.window)
            .ok()
            .and_then(|w| event.at.checked_add_signed(w))
            .ok_or_else(|| Error::config("event log: replay window out of range"))?;
        let mut g = self.lock();
        g.keys.retain(|_, u| *u > event.at);
        if event.keys.iter().any(|k| g.keys.contains_key(k)) {
            return Ok(false);
        }
        for k in event.keys {
            g.keys.insert(k, until);
        }
        for (t, d) in event.targets {
            self.push_locked(&mut g, &event.event_type, t, d);
        }
        Ok(true)
    }

    async fn current(&self) -> Result<SyncCursor> {
        Ok(EventLog::current(self))
    }

    async fn since(&self, since: &SyncCursor) -> Result<Batch<T>> {
        Ok(EventLog::since(self, since))
    }
}

/// Events read per [`StoreEventLog::since`] call unless set otherwise: a larger backlog is
/// taken in several change sets, each committed on its own.
pub const STORE_BATCH: usize = 5_000;

/// An event log in a [`Store`]'s durable inbox, one `stream` per provider instance.
///
/// Cursors are `"<stream>#<seq>"` and survive restarts; a cursor of another stream (or of
/// an in-memory log) is stale (`complete: false`: the caller does a full read). Each call
/// of [`since`](Events::since) reads at most [`STORE_BATCH`] events and answers the cursor
/// after the last one read, so a job moves through a backlog in steps.
///
/// The events a job has consumed stay in the store until [`trim`](Self::trim) removes them
/// (a stream has one consuming job: the one whose source reads it).
pub struct StoreEventLog<T> {
    store: Arc<dyn Store>,
    stream: String,
    batch: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for StoreEventLog<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreEventLog")
            .field("stream", &self.stream)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<T> StoreEventLog<T> {
    /// The inbox `stream` of `store`.
    pub fn new(store: Arc<dyn Store>, stream: impl Into<String>) -> Self {
        StoreEventLog {
            store,
            stream: stream.into(),
            batch: STORE_BATCH,
            _t: PhantomData,
        }
    }

    /// Read at most `n` events per change set.
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The position a cursor of this log names (`None` for another log's cursor).
    pub fn position(&self, cursor: &SyncCursor) -> Option<u64> {
        cursor
            .0
            .rsplit_once('#')
            .filter(|(s, _)| *s == self.stream)
            .and_then(|(_, n)| n.parse().ok())
    }

    /// The cursor of position `seq`.
    pub fn cursor_at(&self, seq: u64) -> SyncCursor {
        SyncCursor(format!("{}#{seq}", self.stream))
    }

    /// Forget the events up to the position of `consumed` (a committed cursor of this log)
    /// and the replay keys whose window ended before `now`. Returns how many events went.
    pub async fn trim(&self, consumed: &SyncCursor, now: DateTime<Utc>) -> Result<u64> {
        match self.position(consumed) {
            Some(upto) => self.store.inbox_trim(&self.stream, upto, now).await,
            None => Ok(0),
        }
    }
}

#[async_trait]
impl<T: EventKey + Ord + Clone + Send + Sync + fmt::Debug> Events<T> for StoreEventLog<T> {
    async fn record(&self, event: Incoming<T>) -> Result<bool> {
        let push = InboxPush {
            stream: self.stream.clone(),
            keys: event.keys,
            window: event.window,
            event_type: event.event_type,
            targets: event
                .targets
                .iter()
                .map(|(t, deleted)| InboxTarget {
                    target: t.to_key(),
                    deleted: *deleted,
                })
                .collect(),
            at: event.at,
        };
        Ok(self
            .store
            .inbox_push(&push)
            .await
            .map_err(|e| e.with_context("inbox", self.stream.clone()))?
            .is_some())
    }

    async fn current(&self) -> Result<SyncCursor> {
        Ok(self.cursor_at(self.store.inbox_head(&self.stream).await?))
    }

    async fn since(&self, since: &SyncCursor) -> Result<Batch<T>> {
        let head = self.store.inbox_head(&self.stream).await?;
        let Some(from) = self.position(since).filter(|s| *s <= head) else {
            return Ok(Batch {
                targets: Vec::new(),
                cursor: self.cursor_at(head),
                complete: false,
            });
        };
        let events = self
            .store
            .inbox_since(&self.stream, from, self.batch)
            .await?;
        let to = events.last().map_or(from, |e| e.seq);
        let mut last: BTreeMap<T, (u64, bool)> = BTreeMap::new();
        for e in &events {
            for t in &e.targets {
                match T::from_key(&t.target) {
                    Some(target) => {
                        last.insert(target, (e.seq, t.deleted));
                    }
                    None => tracing::warn!(
                        stream = %self.stream,
                        seq = e.seq,
                        target = %t.target,
                        "inbox entry names no entity this log knows; skipped"
                    ),
                }
            }
        }
        let mut targets: Vec<(u64, T, bool)> =
            last.into_iter().map(|(t, (s, d))| (s, t, d)).collect();
        targets.sort();
        Ok(Batch {
            targets: targets.into_iter().map(|(_, t, d)| (t, d)).collect(),
            cursor: self.cursor_at(to),
            complete: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_coalescing_and_staleness() {
        let log: EventLog<String> = EventLog::new(3);
        let start = log.current();
        log.push("add", "a".into(), false);
        log.push("modify", "a".into(), false);
        log.push("add", "b".into(), false);
        let b = log.since(&start);
        assert!(b.complete);
        assert_eq!(b.targets.len(), 2, "coalesced by entity");
        let mid = b.cursor;
        log.push("leave", "a".into(), true);
        let b2 = log.since(&mid);
        assert_eq!(b2.targets, vec![("a".to_owned(), true)]);
        assert!(!log.since(&start).complete, "older than what is kept");
        assert!(!log.since(&SyncCursor("other:1".into())).complete);
        assert!(log.since(&log.current()).targets.is_empty());
    }

    #[test]
    fn redeliveries_are_recorded_once() {
        let log: EventLog<i64> = EventLog::new(10);
        let start = log.current();
        assert!(log.push_once("e1", "dept_create", [(5, false)]));
        assert!(!log.push_once("e1", "dept_create", [(5, false)]));
        assert!(log.push_once("", "dept_create", [(6, false)]));
        assert_eq!(log.len(), 2);
        assert_eq!(log.since(&start).targets, vec![(5, false), (6, false)]);
    }

    impl EventKey for String {
        fn to_key(&self) -> String {
            self.clone()
        }
        fn from_key(key: &str) -> Option<Self> {
            Some(key.to_owned())
        }
    }

    fn incoming(key: &str, at: DateTime<Utc>, targets: &[&str]) -> Incoming<String> {
        Incoming {
            keys: vec![key.to_owned()],
            window: Duration::from_secs(60),
            at,
            event_type: "user_add_org".into(),
            targets: targets.iter().map(|t| ((*t).to_owned(), false)).collect(),
        }
    }

    #[tokio::test]
    async fn memory_log_refuses_replay_keys_within_the_window() {
        let log: EventLog<String> = EventLog::new(10);
        let t0 = Utc::now();
        let start = Events::current(&log).await.unwrap();
        assert!(log.record(incoming("n1", t0, &["a"])).await.unwrap());
        assert!(!log.record(incoming("n1", t0, &["b"])).await.unwrap());
        let later = t0 + chrono::Duration::seconds(61);
        assert!(log.record(incoming("n1", later, &["c"])).await.unwrap());
        let b = Events::since(&log, &start).await.unwrap();
        assert_eq!(b.targets, vec![("a".into(), false), ("c".into(), false)]);
    }

    #[tokio::test]
    async fn store_log_survives_a_new_handle_and_reads_in_steps() {
        let store: Arc<dyn Store> = Arc::new(idsync_core::MemoryStore::new());
        let t0 = Utc::now();
        let log: StoreEventLog<String> = StoreEventLog::new(store.clone(), "dt:x").with_batch(2);
        let start = Events::current(&log).await.unwrap();
        assert_eq!(start.0, "dt:x#0");
        assert!(log.record(incoming("n1", t0, &["a", "b"])).await.unwrap());
        assert!(log.record(incoming("n2", t0, &["a"])).await.unwrap());
        assert!(log.record(incoming("n3", t0, &["c"])).await.unwrap());
        // A restart: a new handle on the same store refuses the replay, keeps the events.
        let log: StoreEventLog<String> = StoreEventLog::new(store, "dt:x").with_batch(2);
        assert!(!log.record(incoming("n2", t0, &["z"])).await.unwrap());
        let b1 = Events::since(&log, &start).await.unwrap();
        assert!(b1.complete);
        assert_eq!(b1.targets, vec![("b".into(), false), ("a".into(), false)]);
        assert_eq!(b1.cursor.0, "dt:x#2");
        let b2 = Events::since(&log, &b1.cursor).await.unwrap();
        assert_eq!(b2.targets, vec![("c".into(), false)]);
        let b3 = Events::since(&log, &b2.cursor).await.unwrap();
        assert!(b3.complete && b3.targets.is_empty());
        assert_eq!(b3.cursor, b2.cursor);
        assert!(
            !Events::since(&log, &SyncCursor("other#1".into()))
                .await
                .unwrap()
                .complete
        );
        assert!(
            !Events::since(&log, &SyncCursor("dt:x#99".into()))
                .await
                .unwrap()
                .complete
        );
        assert_eq!(log.trim(&b1.cursor, t0).await.unwrap(), 2);
        assert_eq!(
            Events::since(&log, &b1.cursor).await.unwrap().targets.len(),
            1
        );
    }
}
