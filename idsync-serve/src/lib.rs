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
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]
// idsync_core::Error is large; every fallible fn here passes it through.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod inbox;
pub mod ops;
pub mod schedule;
pub mod server;
mod tls;
