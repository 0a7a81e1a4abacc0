//! Conversions shared by both backends: names of enums in the database, times, errors.

use chrono::{DateTime, Utc};
use idsync_core::{EntityKind, Error, ErrorKind, JournalState, Result, RunStatus};

/// Microseconds since the epoch.
pub(crate) fn to_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Back from microseconds since the epoch.
pub(crate) fn from_us(us: i64) -> Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .ok_or_else(|| Error::invalid_data(format!("store: timestamp {us} out of range")))
}

pub(crate) fn kind_str(k: EntityKind) -> &'static str {
    k.as_str()
}

pub(crate) fn parse_kind(s: &str) -> Result<EntityKind> {
    match s {
        "org" => Ok(EntityKind::Org),
        "account" => Ok(EntityKind::Account),
        _ => Err(Error::invalid_data(format!(
            "store: unknown entity kind {s:?}"
        ))),
    }
}

pub(crate) fn state_str(s: JournalState) -> &'static str {
    match s {
        JournalState::Intent => "intent",
        JournalState::Done => "done",
        JournalState::Failed => "failed",
        JournalState::Skipped => "skipped",
        JournalState::Unknown => "unknown",
    }
}

pub(crate) fn parse_state(s: &str) -> Result<JournalState> {
    match s {
        "intent" => Ok(JournalState::Intent),
        "done" => Ok(JournalState::Done),
        "failed" => Ok(JournalState::Failed),
        "skipped" => Ok(JournalState::Skipped),
        "unknown" => Ok(JournalState::Unknown),
        _ => Err(Error::invalid_data(format!(
            "store: unknown journal state {s:?}"
        ))),
    }
}

pub(crate) fn parse_status(s: &str) -> Result<RunStatus> {
    Ok(match s {
        "planned" => RunStatus::Planned,
        "needs_approval" => RunStatus::NeedsApproval,
        "approved" => RunStatus::Approved,
        "running" => RunStatus::Running,
        "succeeded" => RunStatus::Succeeded,
        "partially_failed" => RunStatus::PartiallyFailed,
        "failed" => RunStatus::Failed,
        _ => {
            return Err(Error::invalid_data(format!(
                "store: unknown run status {s:?}"
            )));
        }
    })
}

/// `usize` to a database integer.
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A database integer to `usize`.
pub(crate) fn to_usize(n: i64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::invalid_data(format!("store: {n} is not an index")))
}

/// Convert a sqlx error once, keeping the database's code and the source chain.
///
/// Unique violations become `AlreadyExists`; busy/locked databases, pool timeouts, I/O
/// errors, PostgreSQL serialization failures and deadlocks are temporary. sqlx errors do
/// not carry connection passwords, so the message is kept.
pub(crate) fn db_err(provider: &'static str, e: sqlx::Error) -> Error {
    let (kind, temporary, code) = match &e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned());
            let c = code.as_deref().unwrap_or("");
            if d.message().starts_with("idsync: ") && d.message().ends_with("exists already") {
                (ErrorKind::AlreadyExists, false, code)
            } else if d.message().starts_with("idsync: ") && d.message().ends_with("does not exist")
            {
                (ErrorKind::NotFound, false, code)
            } else if d.is_unique_violation() {
                (ErrorKind::AlreadyExists, false, code)
            } else if matches!(c, "5" | "6" | "261" | "517" | "40001" | "40P01" | "55P03") {
                (ErrorKind::Unavailable, true, code)
            } else {
                (ErrorKind::Unexpected, false, code)
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            (ErrorKind::Unavailable, true, None)
        }
        _ => (ErrorKind::Unexpected, false, None),
    };
    let mut err = Error::new(kind, format!("{provider} store: {e}")).with_provider(provider);
    if temporary {
        err = err.temporary();
    }
    if let Some(c) = code {
        err = err.with_provider_code(c);
    }
    err.with_source(e)
}

/// The page size asked for, as the in-memory store computes it.
pub(crate) fn page_size(req: &idsync_core::PageRequest) -> usize {
    req.size
        .unwrap_or(idsync_core::directory::DEFAULT_PAGE_SIZE)
        .max(1)
}

/// Build a page from up to `size + 1` rows keyed by their ordering column: the extra row
/// only says that there is a next page.
pub(crate) fn make_page<T>(mut rows: Vec<(String, T)>, size: usize) -> idsync_core::Page<T> {
    let more = rows.len() > size;
    rows.truncate(size);
    let next = if more {
        rows.last().map(|(k, _)| idsync_core::PageToken(k.clone()))
    } else {
        None
    };
    idsync_core::Page {
        items: rows.into_iter().map(|(_, v)| v).collect(),
        next,
    }
}
