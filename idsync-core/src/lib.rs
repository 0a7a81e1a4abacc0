//! # idsync-core
//!
//! The heart of idsync: the model ([`Org`], [`Account`], [`Anchor`]), the [`Source`] and
//! [`Sink`] traits every provider implements, one [`Error`] type that says whether to retry,
//! the engine (map, correlate, plan, guard, apply), layers (retry, rate limit, concurrency
//! limit, timeout) that wrap any adapter, the [`Store`] trait with an in-memory store, and
//! an in-memory adapter.
//!
//! ```
//! use std::sync::Arc;
//! use idsync_core::{Account, Engine, Hub, Job, MemoryAdapter, MemoryStore, Org, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> idsync_core::Result<()> {
//! // A source with one department and one person.
//! let mut alice = Account::new("u1", "alice");
//! alice.orgs = vec!["d1".into()];
//! let source = Arc::new(MemoryAdapter::with_data(
//!     "hr",
//!     vec![Org::new("d1", None, "研发中心")],
//!     vec![alice],
//! ));
//! // The hub lives in a store; an inbound job writes into it.
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let hub = Arc::new(Hub::new(store.clone()));
//! let engine = Engine::new(store);
//! let job = Job::new("hr-to-hub", source, hub);
//!
//! let report = engine.run(&job).await?;
//! assert_eq!(report.counts.applied, 2); // one org, one account
//! let again = engine.run(&job).await?;
//! assert_eq!(again.counts.planned, 0); // nothing changed, nothing to do
//! # Ok(())
//! # }
//! ```
//!
//! ## Two-way distribution and field authority
//!
//! Inbound jobs write their spoke's changes into the hub; outbound jobs read the hub's
//! change feed ([`Hub`] is an incremental source whose cursor is a feed sequence number) and
//! take the changes to the other spokes. [`Distribution`] runs the jobs of one hub in that
//! order — the inbound change sets, then each outbound job the feed moved past — so a change
//! made in AD reaches DingTalk in one pass, and one made in DingTalk reaches AD. Loops stop
//! by themselves: a write an outbound job made comes back from its spoke as a change that
//! maps to what the hub already holds, and an unchanged entity produces no op.
//!
//! A [`FieldAuthority`] gives each hub field one owning inbound job
//! ([`Job::with_authority`], or [`Distribution::with_authority`] for all of them). A change
//! of an owned field by another job is taken out of its op and reported
//! ([`Report::refused`], [`ReportCounts::refused_fields`], an `authority_refused` audit
//! entry). Fields without an owner behave as before: every job whose mapping writes a
//! field may change it.
//!
//! | piece | what |
//! |---|---|
//! | [`model`] | anchors, orgs, accounts, validation |
//! | [`source`] | `Source`, `Sink`, pages, ops, change sets, capabilities |
//! | [`engine`] | jobs, plans, the guard, apply, reports, incremental runs; [`Distribution`] |
//! | [`authority`] | [`FieldAuthority`]: which job owns which hub field |
//! | [`mapping`] | rename, constant, template, transforms, scoping |
//! | [`layers`] | retry, rate limit, concurrency limit, timeout, tracing; [`layers::Stack`] |
//! | [`store`] | the `Store` trait; [`MemoryStore`] |
//! | [`lease`] | [`JobLease`]: a job's lease, renewed while a run goes, and its fence |
//! | [`MemoryAdapter`] | an in-memory source and sink |
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod authority;
pub mod clock;
pub mod directory;
pub mod engine;
pub mod error;
pub mod hub;
pub mod layers;
pub mod lease;
pub mod mapping;
pub mod memory;
pub mod memory_store;
pub mod model;
pub mod op;
pub mod secret;
pub mod source;
pub mod store;

/// `async_trait`, for the impls [`forward_source!`] writes in other crates.
#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
pub use authority::{FieldAuthority, Refusal};
pub use clock::{Clock, ManualClock, SystemClock};
pub use directory::Directory;
pub use engine::{
    DeletionPolicy, Distribution, Engine, Guard, Job, OpOutcome, Plan, PlannedOp, Progress,
    ProgressHook, Report, ReportCounts, Target, Threshold,
};
pub use error::{Error, ErrorKind, ErrorStatus, Result};
pub use hub::Hub;
pub use layers::Layer;
pub use lease::JobLease;
pub use mapping::{FieldRule, Mapping, Scope, Transform};
pub use memory::MemoryAdapter;
pub use memory_store::MemoryStore;
pub use model::{
    Account, Anchor, Attrs, Entity, EntityKind, Org, Status, correlation_key, key_matches,
};
pub use source::{
    Applied, Capabilities, ChangeSet, Descriptor, Op, OpKind, Page, PageRequest, PageToken, Patch,
    RateLimit, Rename, Sink, Source, SourceExt, SyncCursor,
};
pub use store::{
    AuditAction, AuditEntry, FeedEntry, Fence, HUB_KEY_FIELDS, HubWrite, InboxEvent, InboxPush,
    InboxTarget, JournalEntry, JournalState, Lease, Link, LinkChange, OpRecord, RunRecord,
    RunStatus, ShadowChange, Store, is_lease_lost, lease_lost,
};
