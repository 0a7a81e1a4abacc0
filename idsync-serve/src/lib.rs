//! The idsync hub as a running service.
//!
//! Every HTTP part is a plain [`axum::Router`] a library user can mount in their own
//! service; `idsync serve` mounts them all. The modules are filled in by the serve issue
//! (#14): the durable event inbox, schedules and triggers, the change feed and snapshots
//! for apps, the bulk import API, access tokens, health and metrics.
