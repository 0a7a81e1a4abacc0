//! Schedules and triggers: when a job runs.
//!
//! Per job:
//!
//! * `every = "15m"` or `cron = "*/15 * * * *"`: an incremental run on that schedule (a
//!   full run when the source reports no changes). Cron expressions have the standard five
//!   fields (minute hour day-of-month month day-of-week, UTC); six fields put seconds first.
//! * `on_events = true`: an incremental run shortly after events arrive in the job's
//!   inbox, debounced (`debounce`, 2 s by default: a burst makes one run, not one per
//!   event). Events recorded by another `serve` process on the same store are noticed by
//!   polling the inbox head (`poll`, 1 s).
//! * `full_every = "24h"` (or `full_cron`): a full run on a slower schedule, to catch what
//!   events missed.
//!
//! A guard stop pauses the job: the scheduler does not run it again until the stopped run
//! is approved (`idsync approve RUN`). The paused state is derived from the run records
//! (the job's newest run has status `needs_approval`), so it survives restarts, every
//! worker sharing the store sees it, and `approve` resumes the job without telling the
//! service. A manual `idsync run` that passes the guard resumes it too.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use idsync_core::{Error, Result};

/// Parse a duration: a number and a unit, `ms`, `s`, `m`, `h`, `d` (`"15m"`, `"1h30m"`,
/// `"500ms"`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let bad = || {
        Error::config(format!(
            "bad duration {text:?}: use a number and a unit (500ms, 30s, 15m, 2h, 1d), e.g. \"1h30m\""
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

/// When something recurs: a fixed interval or a cron expression.
#[derive(Debug, Clone)]
pub enum Recurrence {
    /// Every so long, counted from the end of the previous run.
    Every(Duration),
    /// At the times a cron expression names (UTC).
    Cron(Box<cron::Schedule>, String),
}

impl Recurrence {
    /// An interval, from text such as `"15m"`.
    pub fn every(text: &str) -> Result<Self> {
        Ok(Recurrence::Every(parse_duration(text)?))
    }

    /// A cron expression: five standard fields, or six with seconds first.
    pub fn cron(expr: &str) -> Result<Self> {
        let fields = expr.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expr}"),
            6 => expr.to_owned(),
            _ => {
                return Err(Error::config(format!(
                    "bad cron expression {expr:?}: five fields (minute hour day-of-month month day-of-week)"
                )));
            }
        };
        let s = cron::Schedule::from_str(&full)
            .map_err(|e| Error::config(format!("bad cron expression {expr:?}: {e}")))?;
        Ok(Recurrence::Cron(Box::new(s), expr.to_owned()))
    }

    /// The next time after `last` (the end of the previous run, or the start).
    pub fn next_after(&self, last: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Recurrence::Every(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| last.checked_add_signed(d)),
            Recurrence::Cron(s, _) => s.after(&last).next(),
        }
    }
}

/// When one job runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Incremental runs (full when the source reports no changes).
    pub every: Option<Recurrence>,
    /// Full runs.
    pub full_every: Option<Recurrence>,
    /// An incremental run shortly after events arrive.
    pub on_events: bool,
    /// How long to wait after an event for more before running.
    pub debounce: Duration,
    /// How often to look at the inbox head for events another process recorded.
    pub poll: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            every: None,
            full_every: None,
            on_events: false,
            debounce: Duration::from_secs(2),
            poll: Duration::from_secs(1),
        }
    }
}

impl Schedule {
    /// Whether anything ever triggers the job.
    pub fn is_empty(&self) -> bool {
        self.every.is_none() && self.full_every.is_none() && !self.on_events
    }
}

/// The kind of run a trigger asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// `Engine::run_changes` (a full run without a cursor or changes).
    Incremental,
    /// `Engine::run`.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration(" 2d ").unwrap(),
            Duration::from_secs(172_800)
        );
        for bad in ["", "15", "m", "15x", "0s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_five_fields_utc() {
        let r = Recurrence::cron("*/15 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            r.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 15, 0).unwrap())
        );
        let daily = Recurrence::cron("30 2 * * *").unwrap();
        assert_eq!(
            daily.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 3, 2, 30, 0).unwrap())
        );
        assert!(Recurrence::cron("* * *").is_err());
        assert!(Recurrence::cron("61 * * * *").is_err());
        let e = Recurrence::every("10s").unwrap();
        assert_eq!(e.next_after(t), Some(t + chrono::Duration::seconds(10)));
    }
}
