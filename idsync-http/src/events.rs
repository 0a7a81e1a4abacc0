//! The in-memory event log that callbacks and event streams feed and a source's
//! `changes` reads.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use idsync_core::SyncCursor;

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
}
