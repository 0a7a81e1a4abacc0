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

pub use callback::callback_router;
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
    let keys = conn.events.clone().ok_or_else(|| {
        idsync_core::Error::config(
            "lark: changes need an [events] table (verification_token_env, encrypt_key_env)",
        )
    })?;
    let log = std::sync::Arc::new(LarkEventLog::new(keys.event_log_capacity));
    let router = callback_router(&keys, conn.user_id_type, log.clone())?;
    Ok((LarkSource::with_events(conn, log)?, router))
}
