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
