//! The idsync hub as a running service.
//!
//! Every HTTP part is a plain [`axum::Router`] a library user can mount in their own
//! service; `idsync serve` mounts them all. The parts (issue #14):
//!
//! | module | what |
//! |---|---|
//! | [`inbox`] | the durable event inbox: provider events in the store before `success` |
//! | [`schedule`] | `every` / `cron` / `on_events` / `full_every` per job; guard stops pause |
//! | [`auth`] | bearer tokens (SHA-256 hashes, scopes); [`auth::require`] for API routers |
//! | [`ops`] | `/healthz`, `/readyz`, Prometheus `/metrics`, the [`ops::Metrics`] registry |
//! | [`feed`] | the change feed for apps and paged snapshots that hand out its cursor |
//! | [`import`] | the bulk import API: JSON or NDJSON, per-record errors, `Idempotency-Key` |
//! | [`server`] | the listener (plain or TLS), the routers mounted, the job runners, graceful shutdown |
//!
//! ```no_run
//! use std::sync::Arc;
//! use idsync_core::{Hub, Job, MemoryAdapter, MemoryStore, Store};
//! use idsync_serve::auth::{hash_token, Scope, TokenEntry, Tokens};
//! use idsync_serve::schedule::{Recurrence, Schedule};
//! use idsync_serve::server::{ServeJob, ServeOptions, Server};
//!
//! # #[tokio::main] async fn main() -> idsync_core::Result<()> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let hr = Arc::new(MemoryAdapter::new("hr"));
//! let job = Job::new("hr-to-hub", hr, Arc::new(Hub::new(store.clone())));
//! let schedule = Schedule { every: Some(Recurrence::every("15m")?), ..Schedule::default() };
//! let server = Server::new(store, ServeOptions::default())
//!     .tokens(Tokens::new(vec![TokenEntry::new("ops", hash_token("s3cret"), vec![Scope::Read])]))
//!     .job(ServeJob::new(job, schedule));
//! let bound = server.bind().await?;
//! bound.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! What apps use: [`feed`] serves the hub's change feed (`GET /api/v1/changes`, an opaque
//! cursor, tombstones kept for a retention, `410` with a resync hint once a cursor
//! expired) and paged snapshots (`GET /api/v1/accounts`, `/api/v1/orgs`) that hand out
//! the feed cursor to continue from; [`import`] takes bulk imports
//! (`POST /api/v1/import/{job}`, JSON or NDJSON, validated per record, planned and guarded
//! like any run, idempotent under an `Idempotency-Key`). Both are plain routers over a
//! [`Store`](idsync_core::Store) without authentication of their own: mount them
//! behind [`auth::require`] (scope `read` for the feed and snapshots, `import` for
//! imports).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]
// idsync_core::Error is large; every fallible fn here passes it through.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod feed;
pub mod import;
pub mod inbox;
pub mod ops;
pub mod schedule;
pub mod server;
mod tls;
