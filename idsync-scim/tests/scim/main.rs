//! idsync-scim's integration tests, in one binary:
//!
//! * [`scim2_tester`]: scim2-tester 0.5.2 against idsync's server, every check SUCCESS;
//! * [`server`]: what scim2-tester does not cover, and one test per Entra / Okta quirk;
//! * [`client`]: the client sink against a real scim2-server 0.8.3 (conformance suite with
//!   Groups, round trips, group provisioning by PATCH in batches).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod common;

mod client;
mod scim2_tester;
mod server;
