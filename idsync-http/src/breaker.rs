//! A circuit breaker for one target (a SCIM app, a webhook endpoint): when most of the
//! recent operations failed, the target is quarantined for a cool-down and further
//! operations fail fast with a temporary [`ErrorKind::Unavailable`] that carries the time
//! left as its `retry_after`.
//!
//! ```
//! use idsync_http::breaker::{Breaker, BreakerConfig};
//!
//! let b = Breaker::new(BreakerConfig { window: 4, failure_ratio: 0.75, cooldown_secs: 60 });
//! for ok in [true, false, false, false] {
//!     b.record(ok);
//! }
//! let e = b.check("webhook", "https://hooks.example/idsync").unwrap_err();
//! assert!(e.is_temporary());
//! assert!(e.retry_after().is_some());
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use idsync_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// The circuit breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// How many recent operations are looked at.
    pub window: usize,
    /// The share of them (0–1) that must have failed to open the breaker.
    pub failure_ratio: f64,
    /// How long the target stays quarantined, in seconds.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            failure_ratio: 0.8,
            cooldown_secs: 60,
        }
    }
}

#[derive(Debug)]
struct State {
    recent: VecDeque<bool>,
    open_until: Option<Instant>,
}

/// The breaker of one target. Thread-safe; record every operation's health with
/// [`record`](Breaker::record) and ask [`check`](Breaker::check) before each one.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            state: Mutex::new(State {
                recent: VecDeque::new(),
                open_until: None,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // the state is a window of booleans: a panic elsewhere leaves it usable
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the target stays quarantined, when it is (`None`: closed). A cool-down
    /// that has passed closes the breaker with an empty window.
    pub fn open_for(&self) -> Option<Duration> {
        let mut s = self.lock();
        let until = s.open_until?;
        let now = Instant::now();
        if now < until {
            return Some(until - now);
        }
        s.open_until = None;
        s.recent.clear();
        None
    }

    /// `Ok` when the breaker is closed; else the temporary `Unavailable` error of
    /// `provider` naming `target` (a URL without secrets), with the cool-down left as
    /// `retry_after`.
    pub fn check(&self, provider: &str, target: &str) -> Result<()> {
        match self.open_for() {
            None => Ok(()),
            Some(left) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("{provider}: target {target} quarantined: most recent operations failed"),
            )
            .with_provider(provider)
            .with_retry_after(left)
            .temporary()),
        }
    }

    /// Records one operation's health; true when this record opened the breaker.
    pub fn record(&self, ok: bool) -> bool {
        let mut s = self.lock();
        let window = self.cfg.window.max(1);
        s.recent.push_back(ok);
        while s.recent.len() > window {
            s.recent.pop_front();
        }
        let failed = s.recent.iter().filter(|x| !**x).count();
        if s.open_until.is_none()
            && s.recent.len() >= window
            && failed as f64 >= self.cfg.failure_ratio * window as f64
        {
            s.open_until = Some(Instant::now() + Duration::from_secs(self.cfg.cooldown_secs));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_when_most_operations_fail() {
        let b = Breaker::new(BreakerConfig {
            window: 4,
            failure_ratio: 0.75,
            cooldown_secs: 60,
        });
        assert!(!b.record(true));
        assert!(!b.record(false));
        assert!(!b.record(false));
        assert!(
            b.check("scim", "https://app.example").is_ok(),
            "3 of 4 not seen yet"
        );
        assert!(b.record(false), "the 4th record opens it");
        let e = b.check("scim", "https://app.example").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
        assert!(
            e.retry_after()
                .is_some_and(|d| d <= Duration::from_secs(60))
        );
        assert!(e.message().contains("https://app.example"), "{e}");
    }

    #[test]
    fn the_breaker_closes_after_the_cooldown() {
        let b = Breaker::new(BreakerConfig {
            window: 2,
            failure_ratio: 0.5,
            cooldown_secs: 0,
        });
        b.record(false);
        assert!(b.record(false));
        // a cool-down of 0 s has passed at once: closed, with an empty window
        assert!(b.check("webhook", "x").is_ok());
        assert!(!b.record(true));
        assert!(b.check("webhook", "x").is_ok());
    }
}
