//! What apps use of idsync-serve: the change feed and snapshots, the bulk import API.
//! Each router is served on 127.0.0.1:0 and called over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apps {
    pub(crate) mod common;
    mod feed;
    mod import;
}
