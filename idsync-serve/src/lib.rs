//! The idsync hub as a running service.
//!
//! Every HTTP part is a plain [`axum::Router`] a library user can mount in their own
//! service; `idsync serve` mounts them all. The modules are filled in by the serve issue
//! (#14): the durable event inbox, schedules and triggers, the change feed and snapshots
//! for apps, the bulk import API, access tokens, health and metrics.
//!
//! What apps use: [`feed`] serves the hub's change feed (`GET /api/v1/changes`, an opaque
//! cursor, tombstones kept for a retention, `410` with a resync hint once a cursor
//! expired) and paged snapshots (`GET /api/v1/accounts`, `/api/v1/orgs`) that hand out
//! the feed cursor to continue from; [`import`] takes bulk imports
//! (`POST /api/v1/import/{job}`, JSON or NDJSON, validated per record, planned and guarded
//! like any run, idempotent under an `Idempotency-Key`). Both are plain routers over a
//! [`Store`](idsync_core::Store) without authentication of their own: `idsync serve` mounts
//! them behind its token layer (scope `read` for the feed and snapshots, `import` for
//! imports).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod feed;
pub mod import;
