//! idsync-serve end to end, in one test binary: access and operations over HTTP (plain
//! and TLS), schedules with guard pauses, the durable inbox behind a signed DingTalk
//! callback, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod serve {
    pub(crate) mod common;
    mod http;
    mod inbox;
    mod jobs;
    mod shutdown;
}
