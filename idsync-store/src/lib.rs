//! # idsync-store
//!
//! The [`Store`] of idsync on **SQLite** (one file; the embedded default) and
//! **PostgreSQL** (several workers share it), with the same behaviour as the in-memory
//! [`MemoryStore`](idsync_core::MemoryStore): the hub directory, links, shadow copies, sync
//! cursors, runs and their journal, audit entries, the ordered change feed and job leases.
//!
//! * **Atomic**: [`Store::record`] and [`Store::hub_apply`] with a record write the hub
//!   entity, the feed entry, the link, the shadow copy, the journal entry and the audit entry
//!   in one transaction: after a crash either all of them are there or none.
//! * **Same rules as the in-memory hub**: `hub_apply` loads the rows an op touches into a
//!   small [`Directory`](idsync_core::Directory) and applies the op there, so creates keep
//!   the proposed anchor, a taken anchor is `AlreadyExists`, parents and orgs must exist, an
//!   org with children or members is not deleted and moves that would make a cycle are
//!   refused, exactly as in memory.
//! * **Batched**: [`Store::hub_apply_batch`] (what the engine uses for a phase of hub ops,
//!   a thousand at a time) answers each write as `hub_apply` would. A batch is one
//!   transaction, and a run of creates in it becomes multi-row `INSERT`s for entities,
//!   memberships, feed, links, journal and audit (if any create of the run would fail, the
//!   run is undone and its writes go one by one, each in a savepoint, so each gets its own
//!   answer): 100,000 creates into a SQLite hub take about 5 s on two cores
//!   (BENCHMARKS.md); PostgreSQL takes the same path.
//! * **Fenced leases**: [`Store::acquire_lease`] is judged by the database's own clock
//!   and hands out a fencing token; a [`Store::fenced`] handle checks the lease inside each
//!   write transaction, so a worker that lost its lease writes nothing more (see
//!   [Leases and fencing](idsync_core::Store#leases-and-fencing)).
//! * **Lookups by correlation key are indexed**: [`Store::hub_find_accounts`] is one query
//!   on the table `hub_keys (field, key, anchor)` joined to the accounts, whatever the
//!   hub's size. The keys (fields of [`HUB_KEY_FIELDS`](idsync_core::HUB_KEY_FIELDS), under
//!   [`correlation_key`](idsync_core::correlation_key), computed in Rust) are written by
//!   every write of a hub account in its own transaction, multi-row in batches; a hub made
//!   before the index gets its keys when it is opened (in pages, resumable, safe with
//!   several processes opening at once).
//! * **Versioned migrations** per backend (`migrations/sqlite`, `migrations/postgres`),
//!   applied on open.
//! * the store suite every store passes (memory, SQLite, PostgreSQL) is
//!   `idsync_conformance::store`.
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{Account, Engine, Hub, Job, MemoryAdapter, Org, Store};
//! use idsync_store::SqliteStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| idsync_core::Error::unexpected(e.to_string()))?;
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("hub.db")).await?);
//!
//! let mut alice = Account::new("u1", "alice");
//! alice.orgs = vec!["d1".into()];
//! let source = Arc::new(MemoryAdapter::with_data(
//!     "hr",
//!     vec![Org::new("d1", None, "研发中心")],
//!     vec![alice],
//! ));
//! // The engine and the hub share the store: each op and its records commit together.
//! let hub = Arc::new(Hub::new(store.clone()));
//! let engine = Engine::new(store.clone());
//! let job = Job::new("hr-to-hub", source, hub);
//!
//! assert_eq!(engine.run(&job).await?.counts.applied, 2);
//! assert_eq!(engine.run(&job).await?.counts.planned, 0);
//! assert!(store.hub_account(&"u1".into()).await?.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! | type | where | when |
//! |---|---|---|
//! | [`SqliteStore`] | a file (WAL) or memory | one process: the CLI, an embedded service |
//! | [`PgStore`] | a PostgreSQL database | several workers; leases keep a job on one at a time |
//! | [`open`] | either, from a URL | configuration files |
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

#[cfg(test)]
mod keys_tests;
mod pg;
mod sql;
mod sqlite;
mod util;

use std::sync::Arc;

use idsync_core::{Result, Store};

pub use pg::PgStore;
pub use sqlite::SqliteStore;

/// Open a store from a URL:
///
/// * `postgres://...` or `postgresql://...`: [`PgStore::connect`];
/// * `sqlite::memory:`: [`SqliteStore::open_in_memory`];
/// * `sqlite://PATH`, `sqlite:PATH`, or a plain path: [`SqliteStore::open`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::connect(url).await?));
    }
    if url == "sqlite::memory:" {
        return Ok(Arc::new(SqliteStore::open_in_memory().await?));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    Ok(Arc::new(SqliteStore::open(path).await?))
}
