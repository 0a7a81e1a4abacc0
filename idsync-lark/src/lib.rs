#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod callback;
mod client;
pub mod config;
mod crypto;
mod error;
pub mod event;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;
mod sink;
mod source;

pub use callback::{LarkEvents, callback_router};
pub use config::{Brand, Connection, EventKeys, EventsConfig, LarkConfig, UserIdType};
pub use sink::LarkSink;
pub use source::{LarkEventLog, LarkSource, Target};

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "lark";

/// A source for a config: reads the referenced secrets (the CLI's entry point).
pub fn source_from_config(cfg: &LarkConfig) -> idsync_core::Result<LarkSource> {
    LarkSource::new(cfg.resolve()?)
}

/// A sink for a config: reads the referenced secrets (the CLI's entry point).
pub fn sink_from_config(cfg: &LarkConfig) -> idsync_core::Result<LarkSink> {
    LarkSink::new(cfg.resolve()?)
}

/// A source for a config whose `events` table is set, with the event endpoint feeding its
/// changes: serve the router at the request URL configured in the developer console.
pub fn source_with_events(cfg: &LarkConfig) -> idsync_core::Result<(LarkSource, axum::Router)> {
    let conn = cfg.resolve()?;
    let keys = conn.events.clone().ok_or_else(no_events_table)?;
    let log = std::sync::Arc::new(LarkEventLog::new(keys.event_log_capacity));
    source_for(conn, &keys, log)
}

/// [`source_with_events`] recording into `events` instead of an in-memory log: a store's
/// durable inbox ([`idsync_http::StoreEventLog`]) for `idsync serve`, so that an event is
/// in the store before Lark is told `success` and a replay is refused after a restart.
pub fn source_with_inbox(
    cfg: &LarkConfig,
    events: std::sync::Arc<LarkEvents>,
) -> idsync_core::Result<(LarkSource, axum::Router)> {
    let conn = cfg.resolve()?;
    let keys = conn.events.clone().ok_or_else(no_events_table)?;
    source_for(conn, &keys, events)
}

fn no_events_table() -> idsync_core::Error {
    idsync_core::Error::config(
        "lark: changes need an [events] table (verification_token_env, encrypt_key_env)",
    )
}

fn source_for(
    conn: Connection,
    keys: &EventKeys,
    events: std::sync::Arc<LarkEvents>,
) -> idsync_core::Result<(LarkSource, axum::Router)> {
    let router = callback_router(keys, conn.user_id_type, events.clone())?;
    Ok((LarkSource::with_events(conn, events)?, router))
}
