//! # idsync-scim
//!
//! A SCIM 2.0 service provider (RFC 7643 / RFC 7644) over the idsync hub: apps and
//! identity providers (Microsoft Entra ID, Okta) push Users and Groups into the hub.
//!
//! * [`ScimServer::router`] is an axum [`Router`](axum::Router) with `/Users`, `/Groups`,
//!   `/ServiceProviderConfig`, `/Schemas`, `/ResourceTypes` and `/.search`.
//! * **Every write goes through the engine**: one change set per request, planned and
//!   applied by [`idsync_core::Engine`] under the job `scim-<client>` whose sink is the
//!   hub, so it is journaled, audited and guarded like any sync.
//! * Users are hub accounts, Groups are hub orgs (flat; `members` are the accounts whose
//!   orgs contain the group); see [`resource`] for the attribute mapping.
//! * Filters (the whole RFC 7644 §3.4.2.2 grammar, [`filter`]), `startIndex`/`count`
//!   paging in id order, `sortBy`/`sortOrder`, `attributes`/`excludedAttributes`.
//!   **Cost**: a page without a filter or `sortBy` is read by position; a User filter that
//!   pins `userName`, `employeeNumber` or `id` with `eq` (alone, in an `and`, or on both
//!   sides of an `or`) reads its candidates through the hub's index, also in `/.search`;
//!   any other User filter (`externalId`, `emails`, `co`, `pr`, `not` ...) and `sortBy`
//!   read every hub account, so on a big hub they cost about a full listing.
//! * PATCH `add`/`remove`/`replace` with paths, value-path filters and the quirks of
//!   Entra ID and Okta ([`patch`]); PUT; DELETE (by default the account is disabled and the
//!   resource is gone: [`DeletePolicy`]).
//! * `meta.version` weak ETags; `If-Match` with a stale version → 412; `userName` taken →
//!   409 `uniqueness`; every error in the SCIM error schema with its `scimType`
//!   ([`ScimError`]); bodies over [`ServerConfig::max_body_bytes`] → 413.
//! * Bearer tokens: only their SHA-256 is configured ([`hash_token`]).
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{Engine, MemoryStore, Store};
//! use idsync_scim::{ScimServer, ServerConfig, hash_token};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let engine = Engine::new(store);
//! // The config holds the hash of the client's token, never the token.
//! let cfg = ServerConfig::new("https://idsync.example/scim/v2").with_client("entra", "s3cret");
//! assert_eq!(cfg.clients[0].token_sha256, hash_token("s3cret"));
//! let server = ScimServer::new(engine, cfg)?;
//! // Serve it under its base path, e.g. with axum::serve.
//! let app = axum::Router::new().nest("/scim/v2", server.router());
//! # let _ = app;
//! # Ok::<(), idsync_core::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod client;
pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod server;

pub use client::{
    AuthConfig, BreakerConfig, GroupMode, MatchBy, ScimClient, SecretRef, TargetConfig,
};
pub use error::{ScimError, ScimResult};
pub use server::{ClientConfig, DeletePolicy, ScimServer, ServerConfig, hash_token};
