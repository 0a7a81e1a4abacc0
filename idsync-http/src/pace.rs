//! Per-path pacing: at most `requests` calls of one API path in any `per` window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A request budget: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed in one window.
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

impl Limit {
    /// `requests` per second.
    pub const fn per_second(requests: u32) -> Self {
        Limit {
            requests,
            per: Duration::from_secs(1),
        }
    }

    /// `requests` per minute.
    pub const fn per_minute(requests: u32) -> Self {
        Limit {
            requests,
            per: Duration::from_secs(60),
        }
    }
}

/// Per-path sliding-window pacing (the way DingTalk and WeCom count their per-API limits).
///
/// A request's slot is timed from when its *answer* came back, an upper bound of when the
/// server counted it; so the next request, sent at least one window later, reaches the
/// server at least one window after it whatever the network jitter. Waiters of one path are
/// served first come, first served.
#[derive(Debug)]
pub struct Pacer {
    default: Option<Limit>,
    overrides: HashMap<String, Limit>,
    paths: std::sync::Mutex<HashMap<String, Arc<PathWindow>>>,
}

#[derive(Debug)]
struct PathWindow {
    limit: Limit,
    queue: Mutex<()>,
    slots: std::sync::Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    /// (id, time, answered): send time while in flight, answer time once answered.
    entries: Vec<(u64, Instant, bool)>,
}

/// A taken slot; dropping it marks the request answered (or failed).
#[derive(Debug)]
pub struct Ticket {
    window: Option<Arc<PathWindow>>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(window) = &self.window else { return };
        let now = Instant::now();
        let mut slots = lock_std(&window.slots);
        if let Some(e) = slots.entries.iter_mut().find(|(id, _, _)| *id == self.id) {
            e.1 = now;
            e.2 = true;
        }
    }
}

pub(crate) fn lock_std<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pacer {
    /// A pacer applying `default` to every path (`None`: unpaced) and `overrides` to the
    /// paths named there.
    pub fn new(
        default: Option<Limit>,
        overrides: impl IntoIterator<Item = (String, Limit)>,
    ) -> Self {
        Pacer {
            default,
            overrides: overrides.into_iter().collect(),
            paths: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The limit of `path`, if any.
    pub fn limit(&self, path: &str) -> Option<Limit> {
        self.overrides.get(path).copied().or(self.default)
    }

    /// Waits until a request to `path` fits in its window; hold the ticket until the
    /// answer is read.
    pub async fn wait(&self, path: &str) -> Ticket {
        let Some(limit) = self.limit(path) else {
            return Ticket {
                window: None,
                id: 0,
            };
        };
        let window = lock_std(&self.paths)
            .entry(path.to_owned())
            .or_insert_with(|| {
                Arc::new(PathWindow {
                    limit,
                    queue: Mutex::new(()),
                    slots: std::sync::Mutex::new(Slots::default()),
                })
            })
            .clone();
        let _turn = window.queue.lock().await;
        let per = window.limit.per;
        let max = usize::try_from(window.limit.requests.max(1)).unwrap_or(usize::MAX);
        loop {
            let now = Instant::now();
            let sleep_until = {
                let mut slots = lock_std(&window.slots);
                slots
                    .entries
                    .retain(|(_, t, answered)| !*answered || now.duration_since(*t) < per);
                if slots.entries.len() < max {
                    slots.next_id += 1;
                    let id = slots.next_id;
                    slots.entries.push((id, now, false));
                    return Ticket {
                        window: Some(window.clone()),
                        id,
                    };
                }
                slots
                    .entries
                    .iter()
                    .filter(|(_, _, answered)| *answered)
                    .map(|(_, t, _)| *t + per)
                    .min()
                    // all in flight: look again shortly
                    .unwrap_or(now + Duration::from_millis(5))
            };
            tokio::time::sleep_until(sleep_until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keeps_to_the_window_per_path() {
        let p = Pacer::new(
            Some(Limit::per_second(2)),
            [("/slow".to_owned(), Limit::per_second(1))],
        );
        let start = Instant::now();
        for _ in 0..4 {
            drop(p.wait("/a").await);
        }
        // 4 calls at 2 per second: the 3rd waits for the 1st's window to end
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        drop(p.wait("/b").await);
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "other paths are not held up"
        );
        drop(p.wait("/slow").await);
        drop(p.wait("/slow").await);
        assert!(start.elapsed() >= Duration::from_secs(1));
        let unpaced = Pacer::new(None, []);
        let start = Instant::now();
        for _ in 0..100 {
            drop(unpaced.wait("/a").await);
        }
        assert!(start.elapsed() < Duration::from_millis(10));
    }
}
