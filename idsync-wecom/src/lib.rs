#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod callback;
mod client;
pub mod config;
pub mod crypto;
mod error;
pub mod event;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;
mod sink;
mod source;

pub use callback::{WeComEvents, callback_router};
pub use config::{CallbackConfig, CallbackKeys, Connection, WeComConfig};
pub use crypto::CallbackCrypto;
pub use sink::WeComSink;
pub use source::{Target, WeComEventLog, WeComSource};

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "wecom";

/// A source for a config: reads the referenced secrets (the CLI's entry point).
pub fn source_from_config(cfg: &WeComConfig) -> idsync_core::Result<WeComSource> {
    WeComSource::new(cfg.resolve()?)
}

/// A sink for a config: reads the referenced secrets (the CLI's entry point).
pub fn sink_from_config(cfg: &WeComConfig) -> idsync_core::Result<WeComSink> {
    WeComSink::new(cfg.resolve()?)
}

/// A source for a config whose `callback` table is set, with the callback endpoint feeding
/// its changes: serve the router at the URL configured in WeCom (接收事件服务器).
pub fn source_with_callbacks(
    cfg: &WeComConfig,
) -> idsync_core::Result<(WeComSource, axum::Router)> {
    let conn = cfg.resolve()?;
    let keys = conn.callback.clone().ok_or_else(no_callback_table)?;
    let log = std::sync::Arc::new(WeComEventLog::new(keys.event_log_capacity));
    let router = callback_router(&keys, &conn.corp_id, log.clone())?;
    Ok((WeComSource::with_events(conn, log)?, router))
}

/// [`source_with_callbacks`] recording into `events` instead of an in-memory log: a store's
/// durable inbox ([`idsync_http::StoreEventLog`]) for `idsync serve`, so that an event is
/// in the store before WeCom is told `success` and a replay is refused after a restart.
pub fn source_with_inbox(
    cfg: &WeComConfig,
    events: std::sync::Arc<WeComEvents>,
) -> idsync_core::Result<(WeComSource, axum::Router)> {
    let conn = cfg.resolve()?;
    let keys = conn.callback.clone().ok_or_else(no_callback_table)?;
    let router = callback_router(&keys, &conn.corp_id, events.clone())?;
    Ok((WeComSource::with_events(conn, events)?, router))
}

fn no_callback_table() -> idsync_core::Error {
    idsync_core::Error::config("wecom: changes need a [callback] table (token_env / aes_key_env)")
}
