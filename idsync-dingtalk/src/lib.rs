#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(unreachable_pub, missing_debug_implementations)]

pub mod callback;
mod client;
pub mod config;
pub mod crypto;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;
mod sink;
mod source;
pub mod stream;

pub use callback::{EventLog, callback_router};
pub use config::{CallbackConfig, DingTalkConfig, StreamConfig};
pub use crypto::CallbackCrypto;
pub use sink::DingTalkSink;
pub use source::DingTalkSource;
pub use stream::{StreamClient, StreamHandle, StreamStats};

/// The provider name in descriptors and errors.
pub const PROVIDER: &str = "dingtalk";

/// A source for a config whose `callback` table is set, with the callback endpoint
/// recording into `events` (a store's durable inbox, [`idsync_http::StoreEventLog`], for
/// `idsync serve`; or an in-memory [`EventLog`]) and the source's changes reading them:
/// serve the router at the callback URL registered with DingTalk. Reads the secrets the
/// config references (the app secret, the callback's token and EncodingAESKey).
pub fn source_with_inbox(
    cfg: &DingTalkConfig,
    events: std::sync::Arc<callback::DingTalkEvents>,
) -> idsync_core::Result<(DingTalkSource, axum::Router)> {
    let mut cfg = cfg.clone();
    cfg.read_secrets()?;
    let cb = cfg.callback.clone().ok_or_else(|| {
        idsync_core::Error::config(
            "dingtalk: changes need a [callback] table (token_env / aes_key_env)",
        )
    })?;
    let router = callback_router(&cb, &cfg.app_key, events.clone())?;
    Ok((DingTalkSource::with_events(cfg, events)?, router))
}
