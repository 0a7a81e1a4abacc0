//! The crate's one integration test binary: the conformance suite against the fake Lark
//! (as source and as sink, with layers), the source under token expiry and throttling,
//! the sink's Lark specifics, and the event endpoint (in memory and over a SQLite store's
//! durable inbox).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "lark/common.rs"]
mod common;
#[path = "lark/conformance.rs"]
mod conformance;
#[path = "lark/events.rs"]
mod events;
#[path = "lark/inbox.rs"]
mod inbox;
#[path = "lark/sink.rs"]
mod sink;
#[path = "lark/source.rs"]
mod source;
