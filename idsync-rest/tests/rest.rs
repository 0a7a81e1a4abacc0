//! idsync-rest against a real json-server 0.17.4 (HR data set, pagination styles, writes,
//! the conformance suite with layers) and a small axum server for the styles json-server
//! does not offer (cursor in the body, next URL in the body), auth and bad input.
//!
//! json-server is started through `scripts/services/json-server.sh`: the shared HR
//! instance is `JSON_SERVER_URL` when set (scripts/test.sh), else one this binary starts;
//! tests that write start their own instance. A server that cannot start fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod rest {
    pub mod axum_server;
    pub mod conformance;
    pub mod hr;
    pub mod server;
}
